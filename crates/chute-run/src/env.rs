//! The environment a SageMaker training image expects: every variable the
//! `sagemaker-training` toolkit's `Environment.to_env_vars()` produces, computed
//! the way the toolkit computes it from the files in `<input-dir>/config`
//! (`resourceconfig.json`, `inputdataconfig.json`, `hyperparameters.json`) and
//! the process environment, so that a script started by the toolkit and one
//! started directly see the same values.
//!
//! The toolkit's quirks are kept on purpose, since scripts read these strings:
//! hyperparameters pass through `json.loads` (see [`crate::pyjson`]); names
//! that SageMaker reserves (`sagemaker_*`) are split off into `SM_FRAMEWORK_PARAMS`;
//! `SM_MODULE_NAME` is `None` when no program is named; `SM_OUTPUT_DATA_DIR` and
//! the other paths have no trailing slash.
//!
//! Where the toolkit asks a tool (`nvidia-smi`, `neuron-ls`) or counts every CPU
//! of the machine, chute looks at what the container is given: the
//! `/dev/nvidia<N>` devices, the Neuron devices' core counts in sysfs, and the
//! CPUs its cgroup and affinity allow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::container::Layout;
use crate::pyjson::{self, PyValue};

/// Hyperparameters the toolkit reserves (`params.SAGEMAKER_HYPERPARAMETERS`);
/// they, and every name starting with `sagemaker_`, are not the script's.
const RESERVED_HPS: &[&str] = &[
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
];

/// Framework parameters that put the current instance group into the
/// distribution when `sagemaker_distribution_instance_groups` is not given.
const DISTRIBUTION_FLAGS: &[&str] = &[
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
];

/// The toolkit's default instance group name.
pub const DEFAULT_GROUP: &str = "homogeneousCluster";
/// `logging.INFO`, the toolkit's default log level.
const LOG_LEVEL_INFO: i32 = 20;

/// What the machine gives the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// `SM_NUM_CPUS`.
    pub cpus: usize,
    /// `SM_NUM_GPUS`.
    pub gpus: usize,
    /// `SM_NUM_NEURONS` (Neuron cores), before the instance-type rule.
    pub neuron_cores: usize,
}

impl Devices {
    /// Looks at this machine.
    pub fn detect() -> Devices {
        Devices {
            cpus: cpu_count(),
            gpus: gpu_count(Path::new("/dev")),
            neuron_cores: neuron_core_count(Path::new("/sys/class/neuron_device")),
        }
    }
}

/// What the toolkit computes from.
pub struct Inputs<'a> {
    /// Where things are.
    pub layout: &'a Layout,
    /// `resourceconfig.json` as it is on disk, parsed.
    pub resource_config: &'a PyValue,
    /// `inputdataconfig.json` as it is on disk, parsed.
    pub input_data_config: &'a PyValue,
    /// `hyperparameters.json`: name to string value.
    pub hyperparameters: &'a BTreeMap<String, String>,
    /// The environment the command will have (chute's own, the variables chute
    /// sets before these, and the request's `Environment`).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The devices.
    pub devices: Devices,
}

/// The `SM_*` variables of `Environment.to_env_vars()`, sorted by name.
pub fn toolkit_env(i: &Inputs<'_>) -> Vec<(String, String)> {
    let layout = i.layout;
    let rc = i.resource_config;
    let path = |p: &Path| PyValue::str(p.to_string_lossy());
    let hps = Hyperparameters::read(i.hyperparameters);
    let fp = PyValue::Dict(hps.framework_params());
    let cluster = Cluster::new(rc, &fp);
    let program = Program::new(i, &hps);
    let num_neurons = match &cluster.instance_type {
        PyValue::Str(t) if t.contains("trn2.48xlarge") => 64,
        _ => i.devices.neuron_cores,
    };
    let opt_env = |name: &str| (i.env)(name).map(PyValue::Str).unwrap_or(PyValue::Null);
    let channels: Vec<(String, PyValue)> = match i.input_data_config {
        PyValue::Dict(items) => items
            .iter()
            .map(|(name, _)| (name.clone(), path(&layout.channel_dir(name))))
            .collect(),
        _ => Vec::new(),
    };
    let mut channel_names: Vec<String> = channels.iter().map(|(n, _)| n.clone()).collect();
    channel_names.sort();
    let is_hetero = PyValue::Bool(cluster.groups_config.len() > 1);
    let hps_dict = PyValue::Dict(hps.user.clone());
    let Cluster {
        hosts,
        current_host,
        instance_type,
        group,
        network_interface,
        topology,
        current_group_hosts,
        instance_groups,
        instance_groups_dict,
        distribution_groups,
        ..
    } = cluster.clone();

    let training_env = training_env(i, &cluster, &program, &hps, &fp, &channels, num_neurons);
    let mut vars: Vec<(String, PyValue)> = vec![
        ("hosts".into(), hosts),
        ("network_interface_name".into(), network_interface),
        ("hps".into(), hps_dict),
        ("user_entry_point".into(), program.user_entry_point),
        ("framework_params".into(), fp),
        ("resource_config".into(), rc.clone()),
        ("input_data_config".into(), i.input_data_config.clone()),
        ("output_data_dir".into(), path(&layout.output_data_dir)),
        ("channels".into(), PyValue::str_list(&channel_names)),
        ("current_host".into(), current_host),
        ("current_instance_type".into(), instance_type),
        ("current_instance_group".into(), group),
        ("current_instance_group_hosts".into(), current_group_hosts),
        ("instance_groups".into(), instance_groups),
        ("instance_groups_dict".into(), instance_groups_dict),
        ("distribution_instance_groups".into(), distribution_groups),
        ("is_hetero".into(), is_hetero),
        ("module_name".into(), PyValue::Str(program.module_name)),
        ("log_level".into(), program.log_level),
        (
            "framework_module".into(),
            opt_env("SAGEMAKER_TRAINING_MODULE"),
        ),
        ("input_dir".into(), path(&layout.input_dir)),
        ("input_config_dir".into(), path(&layout.config_dir)),
        ("output_dir".into(), path(&layout.output_dir)),
        ("num_cpus".into(), PyValue::int(i.devices.cpus as i128)),
        ("num_gpus".into(), PyValue::int(i.devices.gpus as i128)),
        ("num_neurons".into(), PyValue::int(num_neurons as i128)),
        ("model_dir".into(), path(&layout.model_dir)),
        ("module_dir".into(), PyValue::Str(program.module_dir)),
        ("training_env".into(), training_env),
        ("user_args".into(), PyValue::str_list(&cmd_args(&hps.user))),
        (
            "output_intermediate_dir".into(),
            path(&layout.output_intermediate_dir),
        ),
    ];
    if topology.truthy() {
        vars.push(("topology".into(), topology));
    }
    for (name, dir) in channels {
        vars.push((format!("channel_{name}"), dir));
    }
    for (k, v) in hps.user {
        vars.push((format!("hp_{k}"), v));
    }
    // A later key replaces an earlier one, as in the toolkit's dict.
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        out.insert(format!("SM_{}", k.to_uppercase()), v.env_value());
    }
    out.into_iter().collect()
}

/// `read_hyperparameters()`: each value through `json.loads`, kept as is if
/// that fails; split into the script's and SageMaker's own.
struct Hyperparameters {
    /// The script's, in name order.
    user: Vec<(String, PyValue)>,
    /// Reserved names and every `sagemaker_*` one.
    sagemaker: Vec<(String, PyValue)>,
}

impl Hyperparameters {
    fn read(hyperparameters: &BTreeMap<String, String>) -> Hyperparameters {
        let (sagemaker, user) = hyperparameters
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    pyjson::loads(v).unwrap_or_else(|| PyValue::str(v)),
                )
            })
            .partition(|(k, _): &(String, PyValue)| {
                RESERVED_HPS.contains(&k.as_str()) || k.starts_with("sagemaker_")
            });
        Hyperparameters { user, sagemaker }
    }

    /// SageMaker's own that are not reserved: `SM_FRAMEWORK_PARAMS`.
    fn framework_params(&self) -> Vec<(String, PyValue)> {
        self.sagemaker
            .iter()
            .filter(|(k, _)| !RESERVED_HPS.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    fn sagemaker(&self, name: &str) -> Option<&PyValue> {
        self.sagemaker
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// The hosts and instance groups of `resourceconfig.json`, and which of them
/// take part in distributed training.
#[derive(Clone)]
struct Cluster {
    hosts: PyValue,
    current_host: PyValue,
    instance_type: PyValue,
    group: PyValue,
    network_interface: PyValue,
    topology: PyValue,
    groups_config: Vec<PyValue>,
    current_group_hosts: PyValue,
    instance_groups: PyValue,
    instance_groups_dict: PyValue,
    distribution_groups: PyValue,
    distribution_hosts: PyValue,
    master: PyValue,
}

impl Cluster {
    fn new(rc: &PyValue, fp: &PyValue) -> Cluster {
        let get_or = |key: &str, default: PyValue| rc.get(key).cloned().unwrap_or(default);
        // SageMaker lists hosts sorted and doc/SEMANTICS.md promises a sorted
        // SM_HOSTS; a user's file in another order is sorted here (the toolkit
        // would not).
        let hosts = match get_or("hosts", PyValue::List(Vec::new())) {
            PyValue::List(mut l) if l.iter().all(|h| matches!(h, PyValue::Str(_))) => {
                l.sort_by_key(PyValue::py_str);
                PyValue::List(l)
            }
            other => other,
        };
        let group = get_or("current_group_name", PyValue::str(DEFAULT_GROUP));
        let groups_config: Vec<PyValue> = match rc.get("instance_groups") {
            Some(PyValue::List(g)) => g.clone(),
            _ => Vec::new(),
        };
        let current_group_hosts = groups_config
            .iter()
            .find(|g| group_name(g) == group)
            .map(group_hosts)
            .unwrap_or(PyValue::List(Vec::new()));
        let instance_groups = PyValue::List(groups_config.iter().map(group_name).collect());
        let instance_groups_dict = PyValue::Dict(
            groups_config
                .iter()
                .map(|g| (group_name(g).py_str(), g.clone()))
                .collect(),
        );
        let distribution_groups = fp
            .get("sagemaker_distribution_instance_groups")
            .cloned()
            .unwrap_or_else(|| {
                let on = DISTRIBUTION_FLAGS
                    .iter()
                    .any(|f| fp.get(f).is_some_and(PyValue::truthy));
                PyValue::List(if on { vec![group.clone()] } else { Vec::new() })
            });
        let distribution_hosts = distribution_hosts(&hosts, &groups_config, &distribution_groups);
        let first = |v: &PyValue| match v {
            PyValue::List(l) => l.first().cloned(),
            _ => None,
        };
        let master = first(&distribution_hosts)
            .or_else(|| first(&hosts))
            .unwrap_or(PyValue::Null);
        Cluster {
            hosts,
            current_host: get_or("current_host", PyValue::Null),
            instance_type: get_or("current_instance_type", PyValue::str("local")),
            group,
            network_interface: get_or("network_interface_name", PyValue::str("eth0")),
            topology: get_or("topology", PyValue::List(Vec::new())),
            groups_config,
            current_group_hosts,
            instance_groups,
            instance_groups_dict,
            distribution_groups,
            distribution_hosts,
            master,
        }
    }
}

fn group_name(g: &PyValue) -> PyValue {
    g.get("instance_group_name")
        .cloned()
        .unwrap_or(PyValue::Null)
}

fn group_hosts(g: &PyValue) -> PyValue {
    g.get("hosts").cloned().unwrap_or(PyValue::List(Vec::new()))
}

/// The hosts of the instance groups chosen for distribution (all hosts when
/// the config has no groups).
fn distribution_hosts(hosts: &PyValue, groups: &[PyValue], chosen: &PyValue) -> PyValue {
    if groups.is_empty() {
        return hosts.clone();
    }
    let is_chosen = |name: &PyValue| match chosen {
        PyValue::List(l) => l.contains(name),
        PyValue::Str(s) => matches!(name, PyValue::Str(n) if s.contains(n.as_str())),
        _ => false,
    };
    let mut out = Vec::new();
    for g in groups {
        if is_chosen(&group_name(g)) {
            if let PyValue::List(h) = group_hosts(g) {
                out.extend(h);
            }
        }
    }
    PyValue::List(out)
}

/// The user's program: `SAGEMAKER_PROGRAM` or the `sagemaker_program`
/// hyperparameter, where it lives and how loudly it logs.
struct Program {
    module_name: String,
    user_entry_point: PyValue,
    module_dir: String,
    log_level: PyValue,
}

impl Program {
    fn new(i: &Inputs<'_>, hps: &Hyperparameters) -> Program {
        let program_env = (i.env)("SAGEMAKER_PROGRAM");
        let module_name_raw = match &program_env {
            Some(p) => p.clone(),
            None => hps
                .sagemaker("sagemaker_program")
                .unwrap_or(&PyValue::Null)
                .py_str(),
        };
        let module_name = module_name_raw
            .strip_suffix(".py")
            .unwrap_or(&module_name_raw)
            .to_owned();
        let user_entry_point = match program_env.filter(|p| !p.is_empty()) {
            Some(p) => PyValue::Str(p),
            None => hps
                .sagemaker("sagemaker_program")
                .cloned()
                .unwrap_or(PyValue::Null),
        };
        let module_dir = hps
            .sagemaker("sagemaker_submit_directory")
            .map(PyValue::py_str)
            .unwrap_or_else(|| i.layout.code_dir.to_string_lossy().into_owned());
        let log_level = hps
            .sagemaker("sagemaker_container_log_level")
            .cloned()
            .unwrap_or(PyValue::int(LOG_LEVEL_INFO));
        Program {
            module_name,
            user_entry_point,
            module_dir,
            log_level,
        }
    }
}

/// `SM_TRAINING_ENV`: the toolkit's whole `Environment` as one JSON object.
fn training_env(
    i: &Inputs<'_>,
    cluster: &Cluster,
    program: &Program,
    hps: &Hyperparameters,
    fp: &PyValue,
    channels: &[(String, PyValue)],
    num_neurons: usize,
) -> PyValue {
    let layout = i.layout;
    let path = |p: &Path| PyValue::str(p.to_string_lossy());
    let opt_env = |name: &str| (i.env)(name).map(PyValue::Str).unwrap_or(PyValue::Null);
    // The toolkit reads SM_HP_MP_PARAMETERS from the environment chute gives it,
    // where an `mp_parameters` hyperparameter has put it.
    let mp_parameters = hps
        .user
        .iter()
        .rev()
        .find(|(k, _)| k.to_uppercase() == "MP_PARAMETERS")
        .map(|(_, v)| v.env_value())
        .or_else(|| (i.env)("SM_HP_MP_PARAMETERS"));
    let modelparallel = match mp_parameters {
        None => PyValue::Null,
        Some(s) if s.is_empty() => PyValue::str(""),
        Some(s) => PyValue::Bool(s != "{}"),
    };
    let path_var = (i.env)("PATH").unwrap_or_default();
    let installed = |tool: &str| PyValue::Bool(on_path(&path_var, tool));
    let c = cluster;
    PyValue::Dict(vec![
        ("additional_framework_parameters".into(), fp.clone()),
        (
            "channel_input_dirs".into(),
            PyValue::Dict(channels.to_vec()),
        ),
        ("current_host".into(), c.current_host.clone()),
        ("current_instance_group".into(), c.group.clone()),
        (
            "current_instance_group_hosts".into(),
            c.current_group_hosts.clone(),
        ),
        ("current_instance_type".into(), c.instance_type.clone()),
        ("distribution_hosts".into(), c.distribution_hosts.clone()),
        (
            "distribution_instance_groups".into(),
            c.distribution_groups.clone(),
        ),
        (
            "framework_module".into(),
            opt_env("SAGEMAKER_TRAINING_MODULE"),
        ),
        ("hosts".into(), c.hosts.clone()),
        ("hyperparameters".into(), PyValue::Dict(hps.user.clone())),
        ("input_config_dir".into(), path(&layout.config_dir)),
        ("input_data_config".into(), i.input_data_config.clone()),
        ("input_dir".into(), path(&layout.input_dir)),
        ("instance_groups".into(), c.instance_groups.clone()),
        (
            "instance_groups_dict".into(),
            c.instance_groups_dict.clone(),
        ),
        ("is_hetero".into(), PyValue::Bool(c.groups_config.len() > 1)),
        (
            "is_master".into(),
            PyValue::Bool(c.current_host == c.master),
        ),
        ("is_modelparallel_enabled".into(), modelparallel),
        ("is_smddpmprun_installed".into(), installed("smddpmprun")),
        ("is_smddprun_installed".into(), installed("smddprun")),
        ("job_name".into(), opt_env("TRAINING_JOB_NAME")),
        ("log_level".into(), program.log_level.clone()),
        ("master_hostname".into(), c.master.clone()),
        ("model_dir".into(), path(&layout.model_dir)),
        ("module_dir".into(), PyValue::str(&program.module_dir)),
        ("module_name".into(), PyValue::str(&program.module_name)),
        ("network_interface_name".into(), c.network_interface.clone()),
        ("num_cpus".into(), PyValue::int(i.devices.cpus as i128)),
        ("num_gpus".into(), PyValue::int(i.devices.gpus as i128)),
        ("num_neurons".into(), PyValue::int(num_neurons as i128)),
        ("output_data_dir".into(), path(&layout.output_data_dir)),
        ("output_dir".into(), path(&layout.output_dir)),
        (
            "output_intermediate_dir".into(),
            path(&layout.output_intermediate_dir),
        ),
        ("resource_config".into(), i.resource_config.clone()),
        ("topology".into(), c.topology.clone()),
        ("user_entry_point".into(), program.user_entry_point.clone()),
    ])
}

/// `mapping.to_cmd_args(hyperparameters)`: `--name value` pairs in key order
/// (`-n` for one-letter names), dicts as `k=v,k=v`.
pub fn cmd_args(hps: &[(String, PyValue)]) -> Vec<String> {
    let mut sorted: Vec<&(String, PyValue)> = hps.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (k, v) in sorted {
        out.push(match k.chars().count() {
            0 => String::new(),
            1 => format!("-{k}"),
            _ => format!("--{k}"),
        });
        out.push(match v {
            PyValue::Dict(items) => {
                let mut items: Vec<&(String, PyValue)> = items.iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                items
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.py_str()))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            PyValue::Null => String::new(),
            other => other.py_str(),
        });
    }
    out
}

/// Whether `tool` is an executable file in one of `path`'s directories
/// (`which tool`).
fn on_path(path: &str, tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').filter(|d| !d.is_empty()).any(|d| {
        std::fs::metadata(Path::new(d).join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// GPUs: the `/dev/nvidia<N>` device nodes the container was given (a
/// container sees only the GPUs it may use; `nvidiactl`, `nvidia-uvm` and the
/// like are not GPUs).
pub fn gpu_count(dev: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Neuron cores: the sum of `core_count` of the Neuron devices the driver lists.
pub fn neuron_core_count(class_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("core_count")).ok())
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .sum()
}

/// CPUs this process may use: the CPUs in its affinity mask (a cpuset limits
/// it), and no more than its cgroup's CPU quota (`cpu.max`, rounded up).
pub fn cpu_count() -> usize {
    let affinity = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| cpu_list_len(l.trim()))
        })
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let quota = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|cg| cgroup_quota(&cg, Path::new("/sys/fs/cgroup")));
    match quota {
        Some(q) => affinity.min(q).max(1),
        None => affinity,
    }
}

/// The number of CPUs in a list such as `0-3,8,10-11`.
pub fn cpu_list_len(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(p.trim().parse::<usize>().is_ok()),
        })
        .sum()
}

/// The tightest CPU quota on the way from this process's cgroup up to the root,
/// in whole CPUs (rounded up): cgroup v2 `cpu.max`, else v1
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
pub fn cgroup_quota(proc_cgroup: &str, root: &Path) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut take = |q: Option<usize>| {
        if let Some(q) = q {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = rel.trim_start_matches('/');
        if controllers.is_empty() {
            for dir in ancestors(&root.join(rel), root) {
                take(
                    std::fs::read_to_string(dir.join("cpu.max"))
                        .ok()
                        .and_then(|s| parse_cpu_max(&s)),
                );
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            for mount in ["cpu,cpuacct", "cpu", "cpuacct,cpu"] {
                let base = root.join(mount);
                for dir in ancestors(&base.join(rel), &base) {
                    let read = |f: &str| {
                        std::fs::read_to_string(dir.join(f))
                            .ok()
                            .and_then(|s| s.trim().parse::<i64>().ok())
                    };
                    if let (Some(q), Some(p)) =
                        (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
                    {
                        if q > 0 && p > 0 {
                            take(Some(((q + p - 1) / p) as usize));
                        }
                    }
                }
            }
        }
    }
    best
}

fn ancestors(dir: &Path, root: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

/// `cpu.max`: `max 100000` (no quota) or `<quota> <period>`.
fn parse_cpu_max(s: &str) -> Option<usize> {
    let mut it = s.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next().unwrap_or("100000").parse().ok()?;
    (period > 0 && quota > 0).then(|| quota.div_ceil(period) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "nvidia0",
            "nvidia1",
            "nvidia12",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps",
            "null",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(gpu_count(dir.path()), 3);
        assert_eq!(gpu_count(&dir.path().join("none")), 0);
        let sys = dir.path().join("neuron_device");
        for (d, n) in [("neuron0", "2"), ("neuron1", "8\n")] {
            std::fs::create_dir_all(sys.join(d)).unwrap();
            std::fs::write(sys.join(d).join("core_count"), n).unwrap();
        }
        assert_eq!(neuron_core_count(&sys), 10);
        assert_eq!(cpu_list_len("0-3,8,10-11"), 7);
        assert_eq!(cpu_list_len("0"), 1);
    }

    #[test]
    fn cgroup_quotas() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // v2: the tightest limit on the path wins, rounded up.
        std::fs::create_dir_all(r.join("kubepods/pod1/ctr")).unwrap();
        std::fs::write(r.join("kubepods/cpu.max"), "400000 100000\n").unwrap();
        std::fs::write(r.join("kubepods/pod1/cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(r.join("kubepods/pod1/ctr/cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cgroup_quota("0::/kubepods/pod1/ctr\n", r), Some(2));
        assert_eq!(cgroup_quota("0::/\n", r), None);
        // v1.
        std::fs::create_dir_all(r.join("cpu,cpuacct/docker/abc")).unwrap();
        std::fs::write(r.join("cpu,cpuacct/docker/abc/cpu.cfs_quota_us"), "300000").unwrap();
        std::fs::write(r.join("cpu,cpuacct/docker/abc/cpu.cfs_period_us"), "100000").unwrap();
        assert_eq!(cgroup_quota("4:cpu,cpuacct:/docker/abc\n", r), Some(3));
        assert!(cpu_count() >= 1);
    }

    #[test]
    fn command_line_arguments_as_the_toolkit_builds_them() {
        let hps: Vec<(String, PyValue)> = [
            ("epochs", "10"),
            ("lr", "1e-5"),
            ("b", "true"),
            ("opt", r#"{"z": 1, "a": "x"}"#),
            ("name", "plain text"),
            ("n", "null"),
        ]
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                pyjson::loads(v).unwrap_or_else(|| PyValue::str(*v)),
            )
        })
        .collect();
        assert_eq!(
            cmd_args(&hps),
            [
                "-b",
                "True",
                "--epochs",
                "10",
                "--lr",
                "1e-05",
                "-n",
                "",
                "--name",
                "plain text",
                "--opt",
                "a=x,z=1"
            ]
        );
    }
}
