//! `chute run` as SageMaker shapes a training container: the base directory, the
//! config files and every variable the `sagemaker-training` toolkit derives from
//! them, checked against the toolkit itself (installed in a virtualenv, found by
//! `chute_testkit::need::python`); a stale `resourceconfig.json`; a host list too
//! large for one environment variable; and a real SageMaker job, where
//! `chute run -- CMD` must leave everything as it is.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use chute_testkit::need;
use common::*;
use serde_json::{json, Value};

/// `chute run` against `srv`, with none of our own SM_*/SAGEMAKER_* variables.
fn chute_run(srv: &Serve) -> Command {
    let mut cmd = srv.chute("run");
    for (k, _) in std::env::vars() {
        if k.starts_with("SM_")
            || k.starts_with("SAGEMAKER_")
            || k.starts_with("SLURM")
            || k == "TRAINING_JOB_NAME"
        {
            cmd.env_remove(k);
        }
    }
    for k in [
        "NODE_RANK",
        "NNODES",
        "PET_NODE_RANK",
        "PET_NNODES",
        "CHUTE_SUBDOMAIN",
    ] {
        cmd.env_remove(k);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn logs(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

fn write_json(path: &Path, v: &Value) {
    write_file(
        path,
        serde_json::to_string_pretty(v).expect("json").as_bytes(),
    );
}

/// Run by `chute run` with the toolkit's Python: computes
/// `Environment().to_env_vars()` from the files chute wrote and compares it with
/// what chute exported, writing the differences to argv[1].
///
/// Excluded from the comparison, each for a reason:
/// - SM_NUM_CPUS (and `num_cpus` inside SM_TRAINING_ENV): the toolkit counts every
///   CPU of the machine (`multiprocessing.cpu_count()`); chute counts the CPUs its
///   affinity and cgroup quota allow, as the issue asks. Checked here against
///   the same rule computed in Python instead.
///
/// Not excluded: SM_NUM_GPUS and SM_NUM_NEURONS are the toolkit's own
/// `nvidia-smi` / `neuron-ls` counts (both 0 where neither tool exists).
const COMPARE: &str = r#"
import json, math, os, re, sys
out_path = sys.argv[1]
chute = {k: v for k, v in os.environ.items() if k.startswith("SM_")}
base = os.environ["SAGEMAKER_BASE_DIR"]
with open(sys.argv[2], "w") as f:
    for d in ["input", "input/config", "input/data", "model", "output/data", "output/intermediate"]:
        if os.path.isdir(os.path.join(base, d)):
            f.write(d + "\n")
    if os.path.isdir(sys.argv[3]):
        f.write("checkpoints\n")
    f.write("%s|%s\n" % (os.environ.get("TRAINING_JOB_NAME"), os.environ.get("MY_SETTING")))

def allowed_cpus():
    n = len(os.sched_getaffinity(0))
    quota = None
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, ctrl, rel = line.split(":", 2)
        if ctrl == "":
            d = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
            while d.startswith("/sys/fs/cgroup"):
                try:
                    q, p = open(os.path.join(d, "cpu.max")).read().split()
                    if q != "max":
                        c = math.ceil(int(q) / int(p))
                        quota = c if quota is None else min(quota, c)
                except (OSError, ValueError):
                    pass
                if d == "/sys/fs/cgroup":
                    break
                d = os.path.dirname(d)
    return max(1, min(n, quota)) if quota else n

from sagemaker_training import environment
env = environment.Environment()
toolkit = env.to_env_vars()

problems = []
if chute.get("SM_NUM_CPUS") != str(allowed_cpus()):
    problems.append("SM_NUM_CPUS %r, expected %d" % (chute.get("SM_NUM_CPUS"), allowed_cpus()))
excluded = {"SM_NUM_CPUS"}
def normalise(key, value):
    if key == "SM_TRAINING_ENV":
        v = json.loads(value)
        v.pop("num_cpus", None)
        return json.dumps(v, sort_keys=True)
    return value
for key in sorted(set(toolkit) | set(chute)):
    if key in excluded:
        continue
    t = toolkit.get(key)
    c = chute.get(key)
    if t is None:
        problems.append("%s: set by chute (%r), not by the toolkit" % (key, c))
    elif c is None:
        problems.append("%s: missing; the toolkit sets %r" % (key, t))
    elif normalise(key, t) != normalise(key, c):
        problems.append("%s: chute %r, toolkit %r" % (key, c, t))
json.dump({"problems": problems, "compared": len(toolkit), "chute": chute, "toolkit": toolkit},
          open(out_path, "w"), indent=1, sort_keys=True)
sys.exit(1 if problems else 0)
"#;

#[test]
fn toolkit_computes_the_environment_chute_exports() {
    let test = "toolkit_computes_the_environment_chute_exports";
    let Some(python) = need::python(test, &["sagemaker_training"]) else {
        return;
    };
    let srv = Serve::start();
    srv.put("ds/train/a.bin", &pattern(1000, 1));
    srv.put("ds/train/b/c.bin", &pattern(10, 2));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("opt/ml");
    let fs_dir = tmp.path().join("efs");
    write_file(&fs_dir.join("x.txt"), b"x");
    let ckpt = tmp.path().join("ckpt-local");
    let request = json!({
        "TrainingJobName": "env-check-1",
        "RoleArn": "arn:aws:iam::123456789012:role/unused",
        "AlgorithmSpecification": {"TrainingImage": "unused", "TrainingInputMode": "File"},
        "HyperParameters": {
            "epochs": "10",
            "lr": "1e-5",
            "ratio": "0.00001",
            "big": "123456789012345678901234567890",
            "flag": "true",
            "nothing": "null",
            "name": "plain text, not JSON",
            "quoted": "\"a 'quoted' string\"",
            "model-config": "{\"depth\": 3, \"act\": \"relu\", \"sizes\": [1, 2.5]}",
            "x": "1",
            "sagemaker_program": "\"train.py\"",
            "sagemaker_submit_directory": "\"s3://data/code/source.tar.gz\"",
            "sagemaker_container_log_level": "20",
            "sagemaker_mpi_enabled": "true",
            "sagemaker_region": "\"us-east-1\"",
            "_tuning_objective_metric": "\"loss\""
        },
        "InputDataConfig": [
            {"ChannelName": "train", "ContentType": "application/x-image",
             "DataSource": {"S3DataSource": {"S3Uri": "s3://data/ds/train/"}}},
            {"ChannelName": "efs.data-1",
             "DataSource": {"FileSystemDataSource": {"DirectoryPath": fs_dir.to_string_lossy()}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://data/out"},
        "CheckpointConfig": {"S3Uri": "s3://data/ckpt/", "LocalPath": ckpt.to_string_lossy()},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "Environment": {
            "MY_SETTING": "from the request",
            "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main"
        }
    });
    let req_path = tmp.path().join("request.json");
    write_json(&req_path, &request);
    let result = tmp.path().join("compare.json");
    let dirs = tmp.path().join("dirs.txt");
    // Python directly: a shell would drop the variables whose names are not
    // shell identifiers (SM_CHANNEL_EFS.DATA-1, SM_HP_MODEL-CONFIG).
    let mut cmd = chute_run(&srv);
    cmd.env("SAGEMAKER_BASE_DIR", &base)
        .arg("--input-config")
        .arg(&req_path)
        .arg("--")
        .arg(&python)
        .args(["-c", COMPARE])
        .arg(&result)
        .arg(&dirs)
        .arg(&ckpt);
    let out = run(&mut cmd);
    let report: Value = std::fs::read(&result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    assert_eq!(
        out.status.code(),
        Some(0),
        "differences: {:#}\n{}",
        report["problems"],
        logs(&out)
    );
    assert!(report["compared"].as_u64().unwrap_or(0) >= 40, "{report:#}");
    let err = stderr(&out);
    assert!(
        err.contains("ignoring fields chute does not use: RoleArn, ResourceConfig.VolumeSizeInGB"),
        "{err}"
    );
    assert_eq!(err.matches("ignoring fields").count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(&dirs).expect("dirs"),
        "input\ninput/config\ninput/data\nmodel\noutput/data\noutput/intermediate\ncheckpoints\n\
         env-check-1|from the request\n"
    );
    // The files as SageMaker writes them: string hyperparameters, one instance group.
    let config = base.join("input/config");
    let hps: Value =
        serde_json::from_slice(&std::fs::read(config.join("hyperparameters.json")).expect("hps"))
            .expect("hps json");
    assert_eq!(hps, request["HyperParameters"]);
    let chute = &report["chute"];
    assert_eq!(
        chute["SM_USER_ARGS"],
        json!(
            r#"["--big","123456789012345678901234567890","--epochs","10","--flag","True","--lr","1e-05","--model-config","act=relu,depth=3,sizes=[1, 2.5]","--name","plain text, not JSON","--nothing","","--quoted","a 'quoted' string","--ratio","1e-05","-x","1"]"#
        )
    );
    assert_eq!(chute["SM_MODULE_NAME"], "train");
    assert_eq!(chute["SM_CURRENT_INSTANCE_TYPE"], "ml.m5.xlarge");
    assert_eq!(chute["SM_CHANNELS"], r#"["efs.data-1","train"]"#);
}

#[test]
fn inside_a_sagemaker_job_the_command_runs_unchanged() {
    let srv = Serve::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("opt/ml");
    let config = base.join("input/config");
    // What SageMaker writes before it starts the container.
    let files = [
        (
            "inputdataconfig.json",
            r#"{"train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}}"#,
        ),
        (
            "resourceconfig.json",
            r#"{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"}"#,
        ),
        ("hyperparameters.json", r#"{"epochs": "3"}"#),
    ];
    for (name, text) in files {
        write_file(&config.join(name), text.as_bytes());
    }
    let seen = tmp.path().join("env.txt");
    let mut cmd = chute_run(&srv);
    cmd.env("SAGEMAKER_BASE_DIR", &base).args([
        "--",
        "sh",
        "-c",
        &format!("env > {}", seen.display()),
    ]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
    let env = std::fs::read_to_string(&seen).expect("env");
    for var in [
        "SM_CHANNELS",
        "SM_HOSTS",
        "SM_TRAINING_ENV",
        "TRAINING_JOB_NAME",
    ] {
        assert!(
            !env.contains(&format!("\n{var}=")) && !env.starts_with(&format!("{var}=")),
            "{var} set:\n{env}"
        );
    }
    for (name, text) in files {
        assert_eq!(
            std::fs::read_to_string(config.join(name)).expect("file"),
            text,
            "{name}"
        );
    }
    let names: Vec<String> = std::fs::read_dir(&config)
        .expect("config")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!base.join("input/data").exists() && !base.join("model").exists());
}

/// Runs one host of a two-host job (Kubernetes Indexed Job variables) in `base`
/// with a sharded File channel; returns SM_CURRENT_HOST and the files it got.
fn k8s_host(srv: &Serve, base: &Path, index: usize, script: &str) -> Output {
    let mut cmd = chute_run(srv);
    cmd.env("SAGEMAKER_BASE_DIR", base)
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env("CHUTE_SHARD_COUNT", "2")
        .args([
            "--channel",
            "train=s3://data/ds/,distribution=ShardedByS3Key",
            "--",
            "sh",
            "-c",
            script,
        ]);
    run(&mut cmd)
}

#[test]
fn a_resourceconfig_left_by_a_killed_run_does_not_pick_the_shard() {
    let srv = Serve::start();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        srv.put(&format!("ds/{name}"), &pattern(100, i as u64));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // One base directory, as on a shared file system or after a restart.
    let base = tmp.path().join("opt/ml");
    // Host 0's chute run is killed with SIGKILL: nothing is cleaned up.
    let out = k8s_host(&srv, &base, 0, "kill -KILL $PPID; sleep 1");
    assert_ne!(out.status.code(), Some(0), "{}", logs(&out));
    let rc = base.join("input/config/resourceconfig.json");
    assert!(rc.exists(), "the killed run left no resourceconfig.json");
    // Host 1 then runs in the same directory: its own identity wins.
    let seen = tmp.path().join("seen.txt");
    let out = k8s_host(
        &srv,
        &base,
        1,
        &format!(
            "echo \"$SM_CURRENT_HOST\" > {0}; ls \"$SM_CHANNEL_TRAIN\" >> {0}",
            seen.display()
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", logs(&out));
    // (The killed run's own downloads, a and c, are still in the shared data
    // directory: SIGKILL leaves everything behind.)
    let seen = std::fs::read_to_string(&seen).expect("seen");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "host-1", "{}", logs(&out));
    assert!(lines.contains(&"b") && lines.contains(&"d"), "{seen}");
    assert!(
        stderr(&out).contains("host 1 of 2 (host-1)"),
        "{}",
        logs(&out)
    );
}

#[test]
fn a_host_list_too_long_for_one_variable_is_refused_before_the_command() {
    let srv = Serve::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let hosts: Vec<String> = (0..12_000).map(|i| format!("algo-{i}")).collect();
    let rc = tmp.path().join("rc.json");
    write_json(&rc, &json!({"current_host": "algo-7", "hosts": hosts}));
    let marker = tmp.path().join("started");
    let mut cmd = chute_run(&srv);
    cmd.env("SAGEMAKER_BASE_DIR", tmp.path().join("opt/ml"))
        .arg("--resource-config")
        .arg(&rc)
        .args(["--", "touch"])
        .arg(&marker);
    let out = run(&mut cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", logs(&out));
    assert!(
        err.contains("SM_HOSTS would be") && err.contains("131072 bytes"),
        "{err}"
    );
    assert!(!marker.exists());
}
