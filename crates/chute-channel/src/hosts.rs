//! Which host this is: the discovery order of doc/SEMANTICS.md (flags,
//! `resourceconfig.json`, `SM_*`, Kubernetes, Slurm, PyTorchJob-style ranks,
//! single host), the one behaviour of every command and of `chute run`; each
//! caller says where its default `resourceconfig.json` is.
//!
//! Host names are the ones the platform resolves, so that `torchrun`, MPI or NCCL
//! can use `SM_HOSTS` across nodes:
//! - Kubernetes Indexed Job: pod `i` is `<job>-<i>.<subdomain>`, the DNS name a
//!   headless Service named `<subdomain>` gives it (the Job sets
//!   `spec.template.spec.subdomain`; chute reads the Service name from
//!   `CHUTE_SUBDOMAIN` and `<job>` from the pod's hostname, `<job>-<i>`);
//! - Slurm: `SLURM_JOB_NODELIST` expanded, this node being `SLURMD_NODENAME`;
//! - PyTorchJob: `MASTER_ADDR` is rank 0; when it is `<job>-master-0`, rank `r`
//!   is `<job>-worker-<r-1>` (the names the training operator's Services give).
//!
//! Every host derives the same list from what all hosts share, and takes its
//! place in the sorted list as its shard, so the hosts of a job always split the
//! data between them. Generated names (`host-<i>`) are a last resort, with a
//! warning.
//!
//! A `resourceconfig.json` that chute wrote carries `chute_run_id`; found later
//! (left by a run killed with SIGKILL, or by another host sharing the input
//! directory) it is never taken for the user's. A user's file that contradicts
//! the platform's own identity (another host count or another current host) is
//! an error naming both, since either one would give this host a wrong shard.
//!
//! A half-configured environment (say `JOB_COMPLETION_INDEX` without
//! `CHUTE_SHARD_COUNT`) is an error only when some channel is sharded: that is
//! the case where a wrong guess would make hosts read overlapping shards. When
//! every channel is replicated the host list only feeds `SM_HOSTS` and
//! `resourceconfig.json`, and a job in an Indexed Job that shards nothing must
//! not fail for a variable Kubernetes sets on its own; it runs as one host, with
//! a warning.

use std::path::{Path, PathBuf};

use chute_plan::{discover_hosts, HostError, HostSource, Hosts};

use chute_plan::{Classify, ErrorClass};

use crate::slurm;

/// The single host's name when no host list is found and this machine's name
/// does not resolve: tools that wait for every host to resolve (the SageMaker
/// toolkit does, before it starts the user's script) must not wait forever.
const SINGLE_HOST_FALLBACK: &str = "localhost";

/// A generated name, `host-<i>` zero-padded to a common width so that bytewise
/// order is index order (as chute-plan names hosts from an index and a count).
fn indexed_host_name(index: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len();
    format!("host-{index:0width$}")
}

/// The field that marks a `resourceconfig.json` as written by chute.
pub const CHUTE_MARKER: &str = "chute_run_id";

/// The hosts, and the resource config text they came from (to copy into
/// `<input-dir>/config` verbatim, keeping fields chute does not use).
#[derive(Debug, Clone)]
pub struct FoundHosts {
    /// This host and its peers.
    pub hosts: Hosts,
    /// The content of the user's resource config, when that file was used.
    pub resource_config_text: Option<String>,
    /// The file the hosts came from, when one was used.
    pub resource_config_path: Option<PathBuf>,
    /// Where the list came from, for the log.
    pub origin: String,
}

/// Why the hosts could not be determined; every case is in what the user or
/// the platform configured (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// The flags or the environment describe no valid host list.
    #[error(transparent)]
    Hosts(#[from] HostError),
    /// The resource config named by the caller cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadResourceConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The resource config is not a valid host list.
    #[error("{}: {source}", path.display())]
    InvalidResourceConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: HostError,
    },
    /// The resource config and the platform describe different jobs.
    #[error("{0}")]
    Contradiction(String),
}

impl Classify for HostsError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Usage
    }
}

/// The `chute_run_id` of a resource config chute wrote, if this is one.
pub fn chute_written(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(match v.get(CHUTE_MARKER)? {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Finds the hosts. `resource_config` is the file the user named;
/// `default_resource_config` is read when it exists (and chute did not write
/// it). `sharded` tells whether any channel needs the hosts.
pub fn find(
    flags: Option<(usize, usize)>,
    resource_config: Option<&Path>,
    default_resource_config: &Path,
    sharded: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FoundHosts, HostsError> {
    if flags.is_some() {
        let hosts = discover_hosts(flags, None, env)?;
        return Ok(found(
            hosts,
            None,
            None,
            "--shard-index/--shard-count".into(),
        ));
    }
    let (path, text) = match resource_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| HostsError::ReadResourceConfig {
                    path: path.to_owned(),
                    source,
                })?;
            (Some(path.to_owned()), Some(text))
        }
        None => {
            let default = default_resource_config.to_path_buf();
            match std::fs::read_to_string(&default) {
                Ok(text) => match chute_written(&text) {
                    Some(id) => {
                        tracing::info!(
                            "{} was written by an earlier chute run ({CHUTE_MARKER} {id}); it is \
                             not this job's and is replaced",
                            default.display()
                        );
                        (None, None)
                    }
                    None => (Some(default), Some(text)),
                },
                Err(_) => (None, None),
            }
        }
    };
    if let (Some(path), Some(text)) = (path, text) {
        let hosts = discover_hosts(None, Some(&text), env)
            // Name the file: "resourceconfig.json is invalid" alone does not say which.
            .map_err(|source| HostsError::InvalidResourceConfig {
                path: path.clone(),
                source,
            })?;
        if let Ok(Some(platform)) = from_platform(env) {
            check_agrees(&path, &hosts, &platform)?;
        }
        let origin = path.display().to_string();
        log_found(&hosts, &origin);
        return Ok(found(hosts, Some(text), Some(path), origin));
    }
    match from_platform(env) {
        Ok(Some(p)) => {
            if p.generated {
                tracing::warn!(
                    "host names {} are generated and do not resolve: {}",
                    abbreviated(&p.hosts.hosts),
                    p.hint
                );
            }
            log_found(&p.hosts, &p.origin);
            Ok(found(p.hosts, None, None, p.origin))
        }
        Ok(None) => Ok(found(single(), None, None, "single host".into())),
        Err(e) if !sharded => {
            tracing::warn!("{e}; no channel is ShardedByS3Key, so this runs as a single host");
            Ok(found(single(), None, None, "single host".into()))
        }
        Err(e) => Err(e.into()),
    }
}

fn found(hosts: Hosts, text: Option<String>, path: Option<PathBuf>, origin: String) -> FoundHosts {
    FoundHosts {
        hosts,
        resource_config_text: text,
        resource_config_path: path,
        origin,
    }
}

/// One host, named as the machine is when that name resolves (a container's
/// hostname does, through its /etc/hosts), so that `SM_HOSTS` names a host that
/// the command can reach.
fn single() -> Hosts {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_owned())
        .ok()
        .filter(|n| !n.is_empty() && resolves(n))
        .unwrap_or_else(|| SINGLE_HOST_FALLBACK.to_owned());
    Hosts {
        hosts: vec![name.clone()],
        current: name,
        index: 0,
        source: HostSource::Single,
    }
}

fn resolves(name: &str) -> bool {
    // One look-up at start-up, through the system's resolver (/etc/hosts first).
    use std::net::ToSocketAddrs;
    (name, 0u16)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
}

fn log_found(hosts: &Hosts, origin: &str) {
    if hosts.hosts.len() > 1 {
        tracing::info!(
            "host {} of {} ({}), from {origin}",
            hosts.index,
            hosts.hosts.len(),
            hosts.current,
        );
    }
}

fn abbreviated(hosts: &[String]) -> String {
    match hosts {
        [] => "[]".into(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} .. {last}"),
    }
}

/// What the platform says about the hosts.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The hosts, sorted, with this host's place.
    pub hosts: Hosts,
    /// Whether the names were made up (they do not resolve).
    pub generated: bool,
    /// The variables they came from.
    pub origin: String,
    /// How to get real names, when `generated`.
    pub hint: &'static str,
}

/// The hosts the environment describes (`SM_*`, Kubernetes, Slurm, PyTorchJob),
/// or `None` when it describes none.
pub fn from_platform(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Platform>, HostError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let hosts = discover_hosts(None, None, env)?;
    let platform = match hosts.source {
        HostSource::SageMakerEnv => Platform {
            hosts,
            generated: false,
            origin: "SM_CURRENT_HOST/SM_HOSTS".into(),
            hint: "",
        },
        HostSource::KubernetesIndexedJob => {
            let count = hosts.hosts.len();
            match kubernetes_names(hosts.index, count, &var) {
                Some(names) => named(names, hosts.index, "JOB_COMPLETION_INDEX, CHUTE_SHARD_COUNT, CHUTE_SUBDOMAIN and the pod's hostname"),
                None => Platform {
                    hosts,
                    generated: true,
                    origin: "JOB_COMPLETION_INDEX/CHUTE_SHARD_COUNT".into(),
                    hint: "put the Job's pods under a headless Service (spec.template.spec.subdomain) \
                           and set CHUTE_SUBDOMAIN to its name, as docker/k8s/indexed-job.yaml does",
                },
            }
        }
        HostSource::Slurm => match var("SLURM_JOB_NODELIST").or_else(|| var("SLURM_NODELIST")) {
            Some(list) => {
                let names =
                    slurm::expand_nodelist(&list).map_err(|reason| HostError::BadHostList {
                        source_name: "SLURM_JOB_NODELIST",
                        reason,
                    })?;
                if names.len() != hosts.hosts.len() {
                    return Err(HostError::BadHostList {
                        source_name: "SLURM_JOB_NODELIST",
                        reason: format!(
                            "'{list}' names {} nodes but SLURM_NNODES is {}",
                            names.len(),
                            hosts.hosts.len()
                        ),
                    });
                }
                let index = match var("SLURMD_NODENAME") {
                    Some(me) => names.iter().position(|n| *n == me).ok_or_else(|| {
                        HostError::BadHostList {
                            source_name: "SLURMD_NODENAME",
                            reason: format!(
                                "this node '{me}' is not in SLURM_JOB_NODELIST '{list}'"
                            ),
                        }
                    })?,
                    // SLURM_NODEID is this node's place in the list.
                    None => hosts.index,
                };
                named(names, index, "SLURM_JOB_NODELIST and SLURMD_NODENAME")
            }
            None => Platform {
                hosts,
                generated: true,
                origin: "SLURM_NODEID/SLURM_NNODES".into(),
                hint: "SLURM_JOB_NODELIST is not set; run under sbatch/srun",
            },
        },
        HostSource::Single => match torch_ranks(&var)? {
            Some(p) => p,
            None => return Ok(None),
        },
        // discover_hosts() without flags or a file returns neither.
        HostSource::Flags | HostSource::ResourceConfig => return Ok(None),
    };
    Ok(Some(platform))
}

/// `names` in platform order, this host being `names[index]`: sorted, with this
/// host's place in the sorted list.
fn named(mut names: Vec<String>, index: usize, origin: &str) -> Platform {
    let current = names[index].clone();
    names.sort();
    let index = names.iter().position(|n| *n == current).unwrap_or(0);
    let source = match origin {
        o if o.starts_with("SLURM") => HostSource::Slurm,
        _ => HostSource::KubernetesIndexedJob,
    };
    Platform {
        hosts: Hosts {
            hosts: names,
            current,
            index,
            source,
        },
        generated: false,
        origin: origin.to_owned(),
        hint: "",
    }
}

/// The pods' DNS names under the Job's headless Service, when the pod's
/// hostname and `CHUTE_SUBDOMAIN` give them.
fn kubernetes_names(
    index: usize,
    count: usize,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let subdomain = var("CHUTE_SUBDOMAIN")?;
    let subdomain = subdomain.trim_matches('.');
    let hostname = var("HOSTNAME").or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
    })?;
    let job = kubernetes_job_name(&hostname, index)?;
    Some(
        (0..count)
            .map(|i| format!("{job}-{i}.{subdomain}"))
            .collect(),
    )
}

/// `<job>` from an Indexed Job pod's hostname, `<job>-<index>` (or its pod name,
/// `<job>-<index>-<suffix>`, where the hostname was not set from the index).
pub fn kubernetes_job_name(hostname: &str, index: usize) -> Option<String> {
    let hostname = hostname.split('.').next().unwrap_or(hostname);
    let tail = format!("-{index}");
    if let Some(job) = hostname.strip_suffix(&tail) {
        return (!job.is_empty()).then(|| job.to_owned());
    }
    let (rest, suffix) = hostname.rsplit_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let job = rest.strip_suffix(&tail)?;
    (!job.is_empty()).then(|| job.to_owned())
}

/// PyTorchJob-style ranks: `NODE_RANK`/`NNODES` (or the `PET_` forms torchrun
/// reads) with `MASTER_ADDR` as rank 0.
fn torch_ranks(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Platform>, HostError> {
    let pair = |rank: &'static str, count: &'static str| match (var(rank), var(count)) {
        (Some(r), Some(c)) => Ok(Some((rank, r, count, c))),
        (Some(_), None) => Err(HostError::HalfSet {
            set: rank,
            missing: count,
            hint: "set both (the number of nodes and this node's rank) or neither",
        }),
        (None, Some(_)) => Err(HostError::HalfSet {
            set: count,
            missing: rank,
            hint: "set both (the number of nodes and this node's rank) or neither",
        }),
        (None, None) => Ok(None),
    };
    let found = match pair("NODE_RANK", "NNODES")? {
        Some(p) => Some(p),
        None => pair("PET_NODE_RANK", "PET_NNODES")?,
    };
    let Some((rank_var, rank, count_var, count)) = found else {
        return Ok(None);
    };
    let bad = |var: &'static str, value: &str, expected: &'static str| HostError::BadValue {
        var,
        value: value.to_owned(),
        expected,
    };
    let rank_n: usize = rank
        .trim()
        .parse()
        .map_err(|_| bad(rank_var, &rank, "expected a non-negative integer"))?;
    // torchrun accepts a range MIN:MAX; only a fixed size says how to shard.
    let count_n: usize = match count.trim().split_once(':') {
        Some((lo, hi)) if lo == hi => lo.parse().ok(),
        Some(_) => None,
        None => count.trim().parse().ok(),
    }
    .filter(|n| *n >= 1)
    .ok_or_else(|| {
        bad(
            count_var,
            &count,
            "expected a number of nodes (at least 1), not a range",
        )
    })?;
    if rank_n >= count_n {
        return Err(HostError::BadIndex {
            index_var: rank_var,
            index: rank_n,
            count_var,
            count: count_n,
            problem: format!("the rank must be between 0 and {}", count_n - 1),
        });
    }
    let master = var("MASTER_ADDR").or_else(|| var("PET_MASTER_ADDR"));
    let origin = format!("{rank_var}/{count_var} and MASTER_ADDR");
    if let Some(job) = master.as_deref().and_then(|m| m.strip_suffix("-master-0")) {
        let names: Vec<String> = (0..count_n)
            .map(|r| match r {
                0 => format!("{job}-master-0"),
                r => format!("{job}-worker-{}", r - 1),
            })
            .collect();
        let mut p = named(names, rank_n, &origin);
        p.origin = origin;
        return Ok(Some(p));
    }
    let names: Vec<String> = (0..count_n)
        .map(|r| match (&master, r) {
            (Some(m), 0) => m.clone(),
            _ => indexed_host_name(r, count_n),
        })
        .collect();
    let mut p = named(names, rank_n, &origin);
    p.generated = count_n > 1;
    p.hint = "only MASTER_ADDR names a host; in a Kubeflow PyTorchJob it is <job>-master-0 \
              and the workers' names follow from it";
    Ok(Some(p))
}

/// A user's resource config must describe the same job as the platform.
fn check_agrees(path: &Path, file: &Hosts, platform: &Platform) -> Result<(), HostsError> {
    let p = &platform.hosts;
    let says = |h: &Hosts| {
        format!(
            "{} host(s), this one '{}' (shard {})",
            h.hosts.len(),
            h.current,
            h.index
        )
    };
    let differs = file.hosts.len() != p.hosts.len()
        || if platform.generated {
            file.index != p.index
        } else {
            file.current != p.current
        };
    if differs {
        return Err(HostsError::Contradiction(format!(
            "{} says {} but {} says {}: one of them is stale; remove or fix the file (chute \
             writes its own from the environment when there is none)",
            path.display(),
            says(file),
            platform.origin,
            says(p)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `chute run` keeps its config files under an input directory.
    struct TestLayout {
        config_dir: PathBuf,
    }

    impl TestLayout {
        fn new(input_dir: &Path) -> TestLayout {
            TestLayout {
                config_dir: input_dir.join("config"),
            }
        }

        fn resource_config_file(&self) -> PathBuf {
            self.config_dir.join("resourceconfig.json")
        }
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn platform(vars: &[(&str, &str)]) -> Platform {
        from_platform(&env(vars)).unwrap().unwrap()
    }

    #[test]
    fn default_file_and_half_set_env() {
        let dir = tempfile::tempdir().unwrap();
        let layout = TestLayout::new(dir.path());
        let half = [("JOB_COMPLETION_INDEX", "1")];
        // Replicated only: a warning and one host.
        let h = find(
            None,
            None,
            &layout.resource_config_file(),
            false,
            &env(&half),
        )
        .unwrap();
        assert_eq!(h.hosts.hosts, [single().current]);
        // Sharded: the error.
        let e = find(
            None,
            None,
            &layout.resource_config_file(),
            true,
            &env(&half),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CHUTE_SHARD_COUNT"), "{e}");
        // The default resourceconfig.json wins over the environment.
        std::fs::create_dir_all(&layout.config_dir).unwrap();
        std::fs::write(
            layout.resource_config_file(),
            r#"{"current_host":"algo-2","hosts":["algo-2","algo-1"]}"#,
        )
        .unwrap();
        let h = find(
            None,
            None,
            &layout.resource_config_file(),
            true,
            &env(&half),
        )
        .unwrap();
        assert_eq!(h.hosts.index, 1);
        assert_eq!(h.hosts.source, HostSource::ResourceConfig);
        std::fs::write(layout.resource_config_file(), "{").unwrap();
        let e = find(None, None, &layout.resource_config_file(), false, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resourceconfig.json: resourceconfig.json is invalid"),
            "{e}"
        );
        let e = find(
            None,
            Some(&dir.path().join("nope.json")),
            &layout.resource_config_file(),
            false,
            &env(&[]),
        )
        .unwrap_err();
        assert!(matches!(e, HostsError::ReadResourceConfig { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    #[test]
    fn a_file_chute_wrote_is_not_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let layout = TestLayout::new(dir.path());
        std::fs::create_dir_all(&layout.config_dir).unwrap();
        // Left by host 0's run (or a run killed with SIGKILL) in this directory.
        std::fs::write(
            layout.resource_config_file(),
            r#"{"current_host":"host-0","hosts":["host-0","host-1"],"chute_run_id":"x-1-2"}"#,
        )
        .unwrap();
        let vars = [("JOB_COMPLETION_INDEX", "1"), ("CHUTE_SHARD_COUNT", "2")];
        let h = find(
            None,
            None,
            &layout.resource_config_file(),
            true,
            &env(&vars),
        )
        .unwrap();
        assert_eq!((h.hosts.current.as_str(), h.hosts.index), ("host-1", 1));
        assert!(h.resource_config_text.is_none());
        // Alone, it is ignored too: one host.
        let h = find(None, None, &layout.resource_config_file(), true, &env(&[])).unwrap();
        assert_eq!(h.hosts.hosts, [single().current]);
    }

    #[test]
    fn a_users_file_that_contradicts_the_platform_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = TestLayout::new(dir.path());
        std::fs::create_dir_all(&layout.config_dir).unwrap();
        std::fs::write(
            layout.resource_config_file(),
            r#"{"current_host":"algo-1","hosts":["algo-1","algo-2"]}"#,
        )
        .unwrap();
        let cases: [&[(&str, &str)]; 3] = [
            &[
                ("SM_CURRENT_HOST", "algo-2"),
                ("SM_HOSTS", r#"["algo-1","algo-2"]"#),
            ],
            &[("JOB_COMPLETION_INDEX", "1"), ("CHUTE_SHARD_COUNT", "2")],
            &[("SLURM_NODEID", "0"), ("SLURM_NNODES", "3")],
        ];
        for vars in cases {
            let e = find(None, None, &layout.resource_config_file(), true, &env(vars))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("resourceconfig.json says 2 host(s), this one 'algo-1'")
                    && e.contains(" but "),
                "{vars:?}: {e}"
            );
        }
        // Agreeing: fine.
        let ok = [
            ("SM_CURRENT_HOST", "algo-1"),
            ("SM_HOSTS", r#"["algo-2","algo-1"]"#),
        ];
        assert_eq!(
            find(None, None, &layout.resource_config_file(), true, &env(&ok))
                .unwrap()
                .hosts
                .index,
            0
        );
        let ok = [("JOB_COMPLETION_INDEX", "0"), ("CHUTE_SHARD_COUNT", "2")];
        assert_eq!(
            find(None, None, &layout.resource_config_file(), true, &env(&ok))
                .unwrap()
                .hosts
                .current,
            "algo-1"
        );
    }

    #[test]
    fn kubernetes_indexed_job_dns_names() {
        for (hostname, index, want) in [
            ("train-3", 3, Some("train")),
            ("my-job-12", 12, Some("my-job")),
            ("my-job-2-x7k2p", 2, Some("my-job")),
            ("train-3.sub.ns.svc.cluster.local", 3, Some("train")),
            ("train-4", 3, None),
            ("-3", 3, None),
        ] {
            assert_eq!(
                kubernetes_job_name(hostname, index).as_deref(),
                want,
                "{hostname}"
            );
        }
        let p = platform(&[
            ("JOB_COMPLETION_INDEX", "2"),
            ("CHUTE_SHARD_COUNT", "11"),
            ("HOSTNAME", "train-2"),
            ("CHUTE_SUBDOMAIN", "train-hosts"),
        ]);
        assert!(!p.generated);
        assert_eq!(p.hosts.current, "train-2.train-hosts");
        assert_eq!(p.hosts.hosts.len(), 11);
        assert_eq!(p.hosts.hosts[0], "train-0.train-hosts");
        // Sorted: train-10 comes before train-2; every pod sorts the same way.
        assert_eq!(p.hosts.hosts[2], "train-10.train-hosts");
        assert_eq!(p.hosts.hosts[p.hosts.index], "train-2.train-hosts");
        // Without the Service's name: generated names, and a hint.
        let p = platform(&[
            ("JOB_COMPLETION_INDEX", "1"),
            ("CHUTE_SHARD_COUNT", "2"),
            ("HOSTNAME", "train-1"),
        ]);
        assert!(p.generated && p.hint.contains("CHUTE_SUBDOMAIN"));
        assert_eq!(p.hosts.current, "host-1");
    }

    #[test]
    fn slurm_nodelist() {
        let p = platform(&[
            ("SLURM_NODEID", "1"),
            ("SLURM_NNODES", "5"),
            ("SLURM_JOB_NODELIST", "node[01-04,07]"),
            ("SLURMD_NODENAME", "node07"),
        ]);
        assert!(!p.generated);
        assert_eq!(
            p.hosts.hosts,
            ["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!((p.hosts.current.as_str(), p.hosts.index), ("node07", 4));
        // Without SLURMD_NODENAME, SLURM_NODEID is the place in the list.
        let p = platform(&[
            ("SLURM_NODEID", "1"),
            ("SLURM_NNODES", "3"),
            ("SLURM_JOB_NODELIST", "gpu[9-10],a1"),
        ]);
        assert_eq!(p.hosts.hosts, ["a1", "gpu10", "gpu9"]);
        assert_eq!(p.hosts.current, "gpu10");
        let bad = |vars: &[(&str, &str)]| from_platform(&env(vars)).unwrap_err().to_string();
        let e = bad(&[
            ("SLURM_NODEID", "0"),
            ("SLURM_NNODES", "2"),
            ("SLURM_JOB_NODELIST", "n[1-3]"),
        ]);
        assert!(e.contains("names 3 nodes but SLURM_NNODES is 2"), "{e}");
        let e = bad(&[
            ("SLURM_NODEID", "0"),
            ("SLURM_NNODES", "2"),
            ("SLURM_JOB_NODELIST", "n[1-2]"),
            ("SLURMD_NODENAME", "login"),
        ]);
        assert!(e.contains("'login' is not in SLURM_JOB_NODELIST"), "{e}");
        let p = platform(&[("SLURM_NODEID", "1"), ("SLURM_NNODES", "2")]);
        assert!(p.generated);
        assert_eq!(p.hosts.current, "host-1");
    }

    #[test]
    fn pytorchjob_ranks() {
        let p = platform(&[
            ("NODE_RANK", "2"),
            ("NNODES", "3"),
            ("MASTER_ADDR", "bert-master-0"),
        ]);
        assert!(!p.generated);
        assert_eq!(
            p.hosts.hosts,
            ["bert-master-0", "bert-worker-0", "bert-worker-1"]
        );
        assert_eq!(
            (p.hosts.current.as_str(), p.hosts.index),
            ("bert-worker-1", 2)
        );
        let p = platform(&[
            ("PET_NODE_RANK", "0"),
            ("PET_NNODES", "2:2"),
            ("PET_MASTER_ADDR", "10.0.0.5"),
        ]);
        assert!(p.generated);
        assert_eq!(p.hosts.current, "10.0.0.5");
        assert_eq!(p.hosts.hosts, ["10.0.0.5", "host-1"]);
        let bad = |vars: &[(&str, &str)]| from_platform(&env(vars)).unwrap_err().to_string();
        assert!(bad(&[("NODE_RANK", "0")]).contains("NNODES is not"));
        assert!(bad(&[("NODE_RANK", "2"), ("NNODES", "2")]).contains("between 0 and 1"));
        assert!(bad(&[("PET_NODE_RANK", "0"), ("PET_NNODES", "1:4")]).contains("not a range"));
        assert!(from_platform(&env(&[])).unwrap().is_none());
    }
}
