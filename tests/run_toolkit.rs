//! `chute run` as the runtime of a SageMaker-built training image: the
//! `sagemaker-training` toolkit from PyPI (the entry point of every SageMaker
//! framework image) is the command, given a whole CreateTrainingJob request with
//! hyperparameters, File, FastFile and Pipe channels, an output path and a
//! checkpoint location, all on a real S3 endpoint. The user script it starts
//! checks its arguments and environment, hashes its inputs and writes a model,
//! output data and checkpoints; the test checks what reached S3 byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chute_testkit::need;
use common::*;
use serde_json::{json, Value};

/// The user's training script, started by the toolkit as `python train.py ARGS`.
/// argv[1:] must be the hyperparameters as `--name value`; it writes every
/// input's SHA-256 into the model, plus output data and a checkpoint.
const USER_SCRIPT: &str = r#"
import hashlib, json, os, sys

def fail(msg):
    raise RuntimeError("user script check failed: " + msg)

args = sys.argv[1:]
if args != ["--epochs", "2", "--learning-rate", "0.5"]:
    fail("arguments %r" % (args,))
env = os.environ
base = env["SAGEMAKER_BASE_DIR"]
for name, want in [
    ("SM_MODEL_DIR", base + "/model"),
    ("SM_OUTPUT_DATA_DIR", base + "/output/data"),
    ("SM_CHANNEL_TRAIN", base + "/input/data/train"),
    ("TRAINING_JOB_NAME", "toolkit-job"),
    ("MY_SETTING", "from-the-request"),
]:
    if env.get(name) != want:
        fail("%s=%r, want %r" % (name, env.get(name), want))
if json.loads(env["SM_HPS"]) != {"epochs": 2, "learning-rate": 0.5}:
    fail("SM_HPS=%r" % env["SM_HPS"])
if int(env["SM_NUM_CPUS"]) < 1:
    fail("SM_NUM_CPUS=%r" % env["SM_NUM_CPUS"])

# CheckpointConfig.LocalPath, by default <base>/checkpoints as /opt/ml/checkpoints.
ckpt_dir = os.path.join(base, "checkpoints")
resumed = sorted(os.listdir(ckpt_dir))

def tree_hashes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out

inputs = {
    "train": tree_hashes(env["SM_CHANNEL_TRAIN"]),
    "images": tree_hashes(env["SM_CHANNEL_IMAGES"]),
    "records": hashlib.sha256(open(env["SM_CHANNEL_RECORDS"] + "_0", "rb").read()).hexdigest(),
}
model = env["SM_MODEL_DIR"]
os.makedirs(os.path.join(model, "sub"), exist_ok=True)
with open(os.path.join(model, "inputs.json"), "w") as f:
    json.dump({"inputs": inputs, "resumed": resumed}, f, sort_keys=True)
with open(os.path.join(model, "sub", "weights.bin"), "wb") as f:
    f.write(bytes(range(256)) * 4096)
open(os.path.join(model, "empty"), "wb").close()
with open(os.path.join(env["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w") as f:
    f.write('{"loss": 0.25}\n')
tmp = os.path.join(ckpt_dir, ".epoch-2.ckpt.partial")
with open(tmp, "wb") as f:
    f.write(b"checkpoint after epoch 2\n" * 1000)
os.rename(tmp, os.path.join(ckpt_dir, "epoch-2.ckpt"))
if env.get("FAIL_AT_END") == "1":
    raise ValueError("the loss diverged at step 1234")
"#;

struct Job {
    srv: Serve,
    tmp: tempfile::TempDir,
    python: PathBuf,
    train: BTreeMap<String, Vec<u8>>,
    images: BTreeMap<String, Vec<u8>>,
    records: Vec<u8>,
}

impl Job {
    fn new(python: PathBuf) -> Job {
        let srv = Serve::start();
        let mut train = BTreeMap::new();
        for (i, name) in ["a.csv", "dir/b.csv", "empty.csv"].iter().enumerate() {
            let data = if name.starts_with("empty") {
                Vec::new()
            } else {
                pattern(50_000 + i * 777, 10 + i as u64)
            };
            srv.put(&format!("train/{name}"), &data);
            train.insert(name.to_string(), data);
        }
        let mut images = BTreeMap::new();
        for i in 0..4 {
            let name = format!("img-{i}.bin");
            let data = pattern(300_000 + i * 13, 20 + i as u64);
            srv.put(&format!("images/{name}"), &data);
            images.insert(name, data);
        }
        let mut records = Vec::new();
        for i in 0..3 {
            let data = pattern(40_000 + i * 5, 30 + i as u64);
            srv.put(&format!("records/r{i}"), &data);
            records.extend_from_slice(&data);
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let code = tmp.path().join("code");
        std::fs::create_dir_all(&code).expect("code dir");
        std::fs::write(code.join("train.py"), USER_SCRIPT).expect("script");
        Job {
            srv,
            tmp,
            python,
            train,
            images,
            records,
        }
    }

    fn request(&self) -> Value {
        let channel = |name: &str, mode: &str| {
            json!({
                "ChannelName": name,
                "InputMode": mode,
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": format!("s3://{BUCKET}/{name}/"),
                    "S3DataDistributionType": "FullyReplicated"
                }}
            })
        };
        json!({
            "TrainingJobName": "toolkit-job",
            "RoleArn": "arn:aws:iam::123456789012:role/not-used-here",
            "AlgorithmSpecification": {
                "TrainingImage": "example.com/trainer:latest",
                "TrainingInputMode": "File"
            },
            "HyperParameters": {
                "sagemaker_program": "train.py",
                "sagemaker_submit_directory": self.tmp.path().join("code").to_string_lossy(),
                "epochs": "2",
                "learning-rate": "0.5"
            },
            "InputDataConfig": [
                channel("train", "File"),
                channel("images", "FastFile"),
                channel("records", "Pipe")
            ],
            "OutputDataConfig": {"S3OutputPath": format!("s3://{BUCKET}/output")},
            "CheckpointConfig": {"S3Uri": format!("s3://{BUCKET}/checkpoints/toolkit-job")},
            "ResourceConfig": {
                "InstanceType": "ml.m5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 10
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
            "Environment": {"MY_SETTING": "from-the-request"},
            "Tags": [{"Key": "team", "Value": "ml"}]
        })
    }

    /// One job run with a fresh base directory; returns chute's output and the
    /// base directory.
    fn run(&self, attempt: &str, extra_env: &[(&str, &str)]) -> (Output, PathBuf) {
        let base = self.tmp.path().join(attempt);
        let request = self.tmp.path().join(format!("{attempt}-request.json"));
        std::fs::write(&request, self.request().to_string()).expect("request");
        let venv_bin = self
            .python
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut cmd = self.srv.chute("run");
        for (k, _) in std::env::vars() {
            if k.starts_with("SM_") || k == "SAGEMAKER_BASE_DIR" {
                cmd.env_remove(k);
            }
        }
        // The toolkit's own S3 calls (none in this job) must stay on loopback too.
        cmd.env("AWS_ENDPOINT_URL", &self.srv.endpoint)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    venv_bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .envs(extra_env.iter().copied())
            .arg("--input-config")
            .arg(&request)
            .arg("--base-dir")
            .arg(&base)
            .args(["--", "train"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (cmd.output().expect("run chute"), base)
    }

    fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.srv.path_of(key)).ok()
    }
}

fn logs(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

/// Unpacks a .tar.gz with the system's `tar` into a fresh directory.
fn untar(archive: &[u8], tmp: &Path, name: &str) -> BTreeMap<String, Vec<u8>> {
    let file = tmp.join(format!("{name}.tar.gz"));
    std::fs::write(&file, archive).expect("write archive");
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(st.success(), "{name}.tar.gz is not a valid gzip'd tar");
    files_under(&dir)
}

fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("rel")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn hashes(files: &BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        files
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(sha256(v))))
            .collect(),
    )
}

#[test]
fn the_sagemaker_toolkit_runs_a_whole_training_job_and_its_outputs_reach_s3() {
    let Some(python) = need::python(
        "the_sagemaker_toolkit_runs_a_whole_training_job",
        &["sagemaker_training", "boto3"],
    ) else {
        return;
    };
    if !need::fuse("the_sagemaker_toolkit_runs_a_whole_training_job") {
        return;
    }
    let job = Job::new(python);
    // A checkpoint from an earlier, interrupted attempt.
    let old_ckpt = b"checkpoint after epoch 1\n".repeat(500);
    job.srv
        .put("checkpoints/toolkit-job/epoch-1.ckpt", &old_ckpt);

    let (out, _base) = job.run("first", &[]);
    let text = logs(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Tags") || text.contains("RoleArn"),
        "the unused request fields are not named in a warning: {text}"
    );

    let model_gz = job
        .object("output/toolkit-job/output/model.tar.gz")
        .unwrap_or_else(|| panic!("no model.tar.gz in S3: {text}"));
    let model = untar(&model_gz, job.tmp.path(), "model-1");
    let manifest: Value =
        serde_json::from_slice(model.get("inputs.json").expect("inputs.json in the model"))
            .expect("json");
    assert_eq!(manifest["inputs"]["train"], hashes(&job.train), "{text}");
    assert_eq!(manifest["inputs"]["images"], hashes(&job.images), "{text}");
    assert_eq!(manifest["inputs"]["records"], json!(sha256(&job.records)));
    assert_eq!(manifest["resumed"], json!(["epoch-1.ckpt"]), "{text}");
    let weights: Vec<u8> = (0..=255u8).collect::<Vec<u8>>().repeat(4096);
    assert_eq!(model.get("sub/weights.bin"), Some(&weights));
    assert_eq!(model.get("empty").map(Vec::len), Some(0));

    let output_gz = job
        .object("output/toolkit-job/output/output.tar.gz")
        .unwrap_or_else(|| panic!("no output.tar.gz in S3: {text}"));
    let output = untar(&output_gz, job.tmp.path(), "output-1");
    assert_eq!(
        output.get("metrics.json").map(Vec::as_slice),
        Some(&b"{\"loss\": 0.25}\n"[..])
    );

    // Checkpoints: the new one uploaded, the old one kept, no partial file.
    assert_eq!(
        job.object("checkpoints/toolkit-job/epoch-2.ckpt"),
        Some(b"checkpoint after epoch 2\n".repeat(1000)),
        "{text}"
    );
    assert_eq!(
        job.object("checkpoints/toolkit-job/epoch-1.ckpt"),
        Some(old_ckpt)
    );
    assert!(job
        .object("checkpoints/toolkit-job/.epoch-2.ckpt.partial")
        .is_none());

    // A second attempt with the same checkpoint URI starts with both.
    let (out, _) = job.run("second", &[]);
    let text = logs(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let model = untar(
        &job.object("output/toolkit-job/output/model.tar.gz")
            .expect("model"),
        job.tmp.path(),
        "model-2",
    );
    let manifest: Value = serde_json::from_slice(&model["inputs.json"]).expect("json");
    assert_eq!(
        manifest["resumed"],
        json!(["epoch-1.ckpt", "epoch-2.ckpt"]),
        "{text}"
    );
}

#[test]
fn a_script_that_raises_fails_the_job_with_its_reason_and_uploads_no_model() {
    let Some(python) = need::python(
        "a_script_that_raises_fails_the_job",
        &["sagemaker_training", "boto3"],
    ) else {
        return;
    };
    if !need::fuse("a_script_that_raises_fails_the_job") {
        return;
    }
    let job = Job::new(python);
    let (out, base) = job.run("failing", &[("FAIL_AT_END", "1")]);
    let text = logs(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    // The toolkit writes its reason (the user script's exit and command line) to
    // output/failure; the script's own traceback went to stderr.
    let failure = std::fs::read_to_string(base.join("output/failure")).expect("failure file");
    let first = failure
        .lines()
        .find(|l| !l.trim().is_empty())
        .expect("a non-empty failure file")
        .trim()
        .to_owned();
    let err = stderr(&out);
    assert!(err.contains("the loss diverged at step 1234"), "{text}");
    // The reason is the last thing chute run prints.
    let tail: String = err
        .lines()
        .rev()
        .take(failure.lines().count() + 2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        tail.contains(&first),
        "the failure reason {first:?} is not at the end: {text}"
    );
    assert!(
        job.object("output/toolkit-job/output/model.tar.gz")
            .is_none(),
        "a failed job uploaded a model: {text}"
    );
}
