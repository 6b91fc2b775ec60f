//! `chute run`, the container entrypoint, end to end: a real `chute serve` child,
//! a real FUSE mount, real FIFOs and a Python training script
//! (`tests/run/train.py`) that checks what a SageMaker script relies on — every
//! `SM_*` variable, the config files and every channel's bytes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run/train.py");

/// `chute run` against `srv`, with every SM_* variable of our own environment
/// removed so that the script sees exactly what chute sets.
fn chute_run(srv: &Serve) -> Command {
    let mut cmd = srv.chute("run");
    for (k, _) in std::env::vars() {
        if k.starts_with("SM_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn code_and_logs(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out)),
    )
}

/// The objects of a prefix: key -> bytes.
type Objects = BTreeMap<String, Vec<u8>>;

fn put_all(srv: &Serve, prefix: &str, sizes: &[(&str, usize)], seed: u64) -> Objects {
    let mut out = Objects::new();
    for (i, (name, size)) in sizes.iter().enumerate() {
        let key = format!("{prefix}{name}");
        let data = pattern(*size, seed * 1000 + i as u64);
        srv.put(&key, &data);
        out.insert(key, data);
    }
    out
}

/// `{relative path: sha256}` of the objects whose position in bytewise key order
/// is `index` modulo `count` — doc/SEMANTICS.md's ShardedByS3Key rule, restated here.
fn shard_files(objects: &Objects, prefix: &str, index: usize, count: usize) -> Value {
    // BTreeMap<String, _> iterates in bytewise key order.
    let files: serde_json::Map<String, Value> = objects
        .iter()
        .enumerate()
        .filter(|(i, _)| i % count == index)
        .map(|(_, (k, v))| (k[prefix.len()..].to_owned(), Value::String(sha256(v))))
        .collect();
    Value::Object(files)
}

fn dir_files(root: &Path) -> Value {
    let mut files = serde_json::Map::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("rel").to_string_lossy();
                let data = std::fs::read(&path).expect("read");
                files.insert(rel.into_owned(), Value::String(sha256(&data)));
            }
        }
    }
    Value::Object(files)
}

/// Fails if anything of a channel is left under `input`: a mount (checked in
/// /proc/self/mountinfo), a FIFO, a link, a temporary file or directory.
fn assert_torn_down(input: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let needle = input.to_string_lossy();
    let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&*needle)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    let mut stack = vec![input.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("entry");
            let path = entry.path();
            let ft = entry.file_type().expect("file type");
            let name = entry.file_name().to_string_lossy().into_owned();
            use std::os::unix::fs::FileTypeExt;
            assert!(!ft.is_fifo(), "FIFO left behind: {}", path.display());
            assert!(!ft.is_symlink(), "link left behind: {}", path.display());
            assert!(
                !name.contains("tmp"),
                "temporary file left behind: {}",
                path.display()
            );
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
}

fn write_json(path: &Path, v: &Value) {
    write_file(
        path,
        serde_json::to_string_pretty(v).expect("json").as_bytes(),
    );
}

/// The InputDataConfig of the acceptance job: four channels, one of each kind.
struct FourChannels {
    srv: Serve,
    tmp: tempfile::TempDir,
    train: Objects,
    images: Objects,
    records: Objects,
    fs_dir: PathBuf,
}

impl FourChannels {
    fn new() -> FourChannels {
        let srv = Serve::start();
        let train = put_all(
            &srv,
            "train/",
            &[
                ("empty.bin", 0),
                ("one.bin", 1),
                ("page.bin", 4096),
                ("sub/dir/deep.bin", 100_000),
                ("mib.bin", 1 << 20),
                // Larger than a download part: fetched as parallel ranged parts.
                ("large.bin", 9 << 20),
                ("odd.bin", 777),
            ],
            1,
        );
        let images = put_all(
            &srv,
            "images/",
            &[
                ("cat/001.jpg", 70_000),
                ("cat/002.jpg", 0),
                ("dog/001.jpg", 3 << 20),
                ("labels.json", 321),
            ],
            2,
        );
        let records = put_all(
            &srv,
            "records/",
            &[
                ("r0", 0),
                ("r1", 1),
                ("r2", 3),
                ("r3", 1000),
                ("r4", 70_000),
                ("r5", 5),
                ("r6", 262_147),
            ],
            3,
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let fs_dir = tmp.path().join("efs/train-csv");
        write_file(&fs_dir.join("a.csv"), b"x,y\n1,2\n");
        write_file(&fs_dir.join("nested/b.csv"), &pattern(5000, 9));
        FourChannels {
            srv,
            tmp,
            train,
            images,
            records,
            fs_dir,
        }
    }

    fn input_dir(&self) -> PathBuf {
        self.tmp.path().join("opt/ml/input")
    }

    fn input_config(&self) -> Value {
        json!([
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {
                    "S3Uri": "s3://data/train/",
                    "S3DataType": "S3Prefix",
                    "S3DataDistributionType": "ShardedByS3Key"}},
                "InputMode": "File"
            },
            {
                "ChannelName": "images",
                "DataSource": {"S3DataSource": {
                    "S3Uri": "s3://data/images/",
                    "S3DataType": "S3Prefix",
                    "S3DataDistributionType": "FullyReplicated"}},
                "InputMode": "FastFile",
                "ContentType": "image/jpeg"
            },
            {
                "ChannelName": "records",
                "DataSource": {"S3DataSource": {
                    "S3Uri": "s3://data/records/",
                    "S3DataType": "S3Prefix"}},
                "InputMode": "Pipe",
                "RecordWrapperType": "RecordIO",
                "ShuffleConfig": {"Seed": 42}
            },
            {
                "ChannelName": "fs-data.v1",
                "DataSource": {"FileSystemDataSource": {
                    "DirectoryPath": self.fs_dir.to_string_lossy(),
                    "FileSystemType": "EFS",
                    "FileSystemAccessMode": "ro",
                    "FileSystemId": "fs-0123456789abcdef0"}},
                "ContentType": "text/csv"
            }
        ])
    }

    /// What train.py must see on host `algo-2` of two.
    fn expectation(&self) -> Value {
        let input = self.input_dir();
        let d = input.to_string_lossy();
        let idc = json!({
            "fs-data.v1": {"ContentType": "text/csv", "RecordWrapperType": "None",
                "S3DistributionType": "FullyReplicated", "TrainingInputMode": "File"},
            "images": {"ContentType": "image/jpeg", "RecordWrapperType": "None",
                "S3DistributionType": "FullyReplicated", "TrainingInputMode": "FastFile"},
            "records": {"RecordWrapperType": "RecordIO",
                "S3DistributionType": "FullyReplicated", "TrainingInputMode": "Pipe"},
            "train": {"RecordWrapperType": "None",
                "S3DistributionType": "ShardedByS3Key", "TrainingInputMode": "File"}
        });
        // Written out by hand: compact, sorted keys, as the SageMaker toolkit sets it.
        let idc_env = concat!(
            r#"{"fs-data.v1":{"ContentType":"text/csv","RecordWrapperType":"None","S3DistributionType":"FullyReplicated","TrainingInputMode":"File"},"#,
            r#""images":{"ContentType":"image/jpeg","RecordWrapperType":"None","S3DistributionType":"FullyReplicated","TrainingInputMode":"FastFile"},"#,
            r#""records":{"RecordWrapperType":"RecordIO","S3DistributionType":"FullyReplicated","TrainingInputMode":"Pipe"},"#,
            r#""train":{"RecordWrapperType":"None","S3DistributionType":"ShardedByS3Key","TrainingInputMode":"File"}}"#
        );
        let records: Vec<Value> = self
            .records
            .values()
            .map(|v| Value::String(sha256(v)))
            .collect();
        json!({
            "env": {
                "SM_CHANNELS": r#"["fs-data.v1","images","records","train"]"#,
                "SM_CHANNEL_FS-DATA.V1": format!("{d}/data/fs-data.v1"),
                "SM_CHANNEL_IMAGES": format!("{d}/data/images"),
                "SM_CHANNEL_RECORDS": format!("{d}/data/records"),
                "SM_CHANNEL_TRAIN": format!("{d}/data/train"),
                "SM_INPUT_DATA_CONFIG": idc_env,
                "SM_HOSTS": r#"["algo-1","algo-2"]"#,
                "SM_CURRENT_HOST": "algo-2",
                "SM_INPUT_DIR": d,
                "SM_INPUT_CONFIG_DIR": format!("{d}/config"),
            },
            "configs": {
                "inputdataconfig.json": idc,
                "resourceconfig.json": self.resource_config(),
            },
            "channels": {
                "train": {"kind": "dir", "files": shard_files(&self.train, "train/", 1, 2)},
                "images": {"kind": "dir", "mount": true,
                    "files": shard_files(&self.images, "images/", 0, 1)},
                "records": {"kind": "pipe", "records": records, "seed": 42, "epochs": 2},
                "fs-data.v1": {"kind": "dir", "files": dir_files(&self.fs_dir)},
            }
        })
    }

    fn resource_config(&self) -> Value {
        // Extra fields, as SageMaker writes them, must survive the copy.
        json!({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"],
               "network_interface_name": "eth0", "current_instance_type": "local"})
    }

    /// Writes the config files; returns `chute run ... -- python3 train.py EXPECT`.
    fn command(&self) -> Command {
        self.command_expecting(&self.expectation())
    }

    fn command_expecting(&self, expectation: &Value) -> Command {
        let cfg = self.tmp.path().join("input-data-config.json");
        let rc = self.tmp.path().join("resourceconfig.json");
        let expect = self.tmp.path().join("expect.json");
        write_json(&cfg, &self.input_config());
        write_json(&rc, &self.resource_config());
        write_json(&expect, expectation);
        let mut cmd = chute_run(&self.srv);
        cmd.arg("--input-config")
            .arg(&cfg)
            .arg("--resource-config")
            .arg(&rc)
            .arg("--input-dir")
            .arg(self.input_dir())
            .args(["--", "python3", SCRIPT])
            .arg(&expect);
        cmd
    }
}

#[test]
fn four_channels_byte_exact_and_the_scripts_exit_code() {
    let job = FourChannels::new();
    for code in ["0", "7"] {
        let out = run(job.command().arg(code));
        let (got, logs) = code_and_logs(&out);
        assert_eq!(got, Some(code.parse().unwrap()), "{logs}");
        assert!(stdout(&out).contains("every check passed"), "{logs}");
        assert_torn_down(&job.input_dir());
    }
    // The File channel stays, the container-side files too.
    let input = job.input_dir();
    // Host algo-2 of two gets positions 1, 3, 5 of the sorted keys: the 9 MiB
    // object (several download parts) among them; position 0 is another host's.
    assert!(input.join("data/train/large.bin").is_file());
    assert!(!input.join("data/train/empty.bin").exists());
    assert!(input.join("config/inputdataconfig.json").is_file());
    // The resourceconfig.json chute wrote goes, so that it cannot outrank the
    // environment of a later run.
    assert!(!input.join("config/resourceconfig.json").exists());
    assert!(
        !input.join("data/images").exists(),
        "mount point left behind"
    );
    assert!(!input.join("data/fs-data.v1").exists(), "link left behind");
}

#[test]
fn exit_codes_of_signals_and_missing_commands() {
    let srv = Serve::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let out = run(chute_run(&srv).arg("--input-dir").arg(&input).args([
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
    ]));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(128 + 9), "{logs}");
    let out = run(chute_run(&srv)
        .arg("--input-dir")
        .arg(&input)
        .args(["--", "/nonexistent/chute-test/train"]));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(127), "{logs}");
    assert!(
        stderr(&out).contains("cannot run '/nonexistent/chute-test/train'"),
        "{logs}"
    );
    // A resourceconfig.json already in <input-dir>/config (as SageMaker provides
    // it) is the host list, and is kept.
    let rc = input.join("config/resourceconfig.json");
    write_file(
        &rc,
        br#"{"current_host": "algo-2", "hosts": ["algo-2", "algo-1", "algo-3"]}"#,
    );
    let out = run(chute_run(&srv).arg("--input-dir").arg(&input).args([
        "--",
        "sh",
        "-c",
        r#"test "$SM_CURRENT_HOST" = algo-2 && test "$SM_HOSTS" = '["algo-1","algo-2","algo-3"]'"#,
    ]));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(0), "{logs}");
    assert!(rc.is_file());
    std::fs::remove_file(&rc).expect("rm");
    // No channels at all is a valid job.
    let out = run(chute_run(&srv).arg("--input-dir").arg(&input).args([
        "--",
        "sh",
        "-c",
        // One host, named so that it resolves (the toolkit waits until every
        // host in SM_HOSTS does).
        "test \"$SM_CHANNELS\" = '[]' && test \"$SM_HOSTS\" = \"[\\\"$SM_CURRENT_HOST\\\"]\" \
         && getent hosts \"$SM_CURRENT_HOST\" >/dev/null",
    ]));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(0), "{logs}");
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn sigterm_reaches_the_script_and_nothing_is_left_behind() {
    let job = FourChannels::new();
    let mut expect = job.expectation();
    // Read one epoch, then wait with records_1 served and the mount up.
    expect["channels"]["records"]["epochs"] = json!(1);
    let marker = job.tmp.path().join("marker");
    let child = job
        .command_expecting(&expect)
        .arg("wait")
        .arg(&marker)
        .spawn()
        .expect("spawn chute run");
    let read_marker = || std::fs::read_to_string(&marker).unwrap_or_default();
    wait_for("the script to be ready", Duration::from_secs(60), || {
        read_marker().contains("ready")
    });
    // Everything is up while the script runs.
    let data = job.input_dir().join("data");
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&*data.join("images").to_string_lossy()));
    wait_for("records_1", Duration::from_secs(10), || {
        data.join("records_1").exists()
    });
    signal(&child, "TERM");
    let out = child.wait_with_output().expect("wait");
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(42), "{logs}");
    assert_eq!(read_marker(), "ready\nSIGTERM\n", "{logs}");
    assert_torn_down(&job.input_dir());
}

#[test]
fn sigterm_during_setup_stops_before_the_command_and_cleans_up() {
    let srv = Serve::start();
    srv.put("fast/a.bin", &pattern(1000, 1));
    srv.put("slow/b.bin", &pattern(300_000, 2));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream: std::net::SocketAddr = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    // Every GET of the slow channel's object hangs for a minute.
    proxy.push(
        FaultRule::new(FaultKind::Delay {
            duration: Duration::from_secs(60),
        })
        .method("GET")
        .path_contains("slow/b.bin")
        .times(1000),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let marker = tmp.path().join("ran");
    let mut cmd = chute();
    cmd.args(["run", "--endpoint-url", &proxy.endpoint_url()])
        .arg("--input-dir")
        .arg(&input)
        .args(["--channel", "fast=s3://data/fast/,mode=FastFile"])
        .args(["--channel", "slow=s3://data/slow/,mode=File"])
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let mount = input.join("data/fast");
    wait_for("the FastFile mount", Duration::from_secs(30), || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&*mount.to_string_lossy())
    });
    wait_for(
        "the slow download to start",
        Duration::from_secs(30),
        || proxy.stats().faults.delay > 0,
    );
    signal(&child, "TERM");
    let out = child.wait_with_output().expect("wait");
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(128 + 15), "{logs}");
    assert!(stderr(&out).contains("interrupted by signal 15"), "{logs}");
    assert!(!marker.exists(), "the command ran: {logs}");
    assert!(!input.join("data/slow/b.bin").exists(), "{logs}");
    assert_torn_down(&input);
    drop(proxy);
}

#[test]
fn channel_setup_failure_stops_before_the_command_naming_the_channel() {
    let srv = Serve::start();
    srv.put("img/a.bin", &pattern(1000, 1));
    srv.put("train/b.bin", &pattern(1000, 2));
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    // A plain file where the File channel's directory must go.
    write_file(&input.join("data/train"), b"in the way");
    let marker = tmp.path().join("ran");
    let out = run(chute_run(&srv)
        .arg("--input-dir")
        .arg(&input)
        .args(["--channel", "img=s3://data/img/,mode=FastFile"])
        .args(["--channel", "train=s3://data/train/"])
        .arg("--")
        .arg("touch")
        .arg(&marker));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(2), "{logs}");
    assert!(stderr(&out).contains("channel 'train' (File)"), "{logs}");
    assert!(!marker.exists(), "{logs}");
    std::fs::remove_file(input.join("data/train")).expect("rm");
    assert_torn_down(&input);

    // A bucket that does not exist: exit 3, naming the channel, nothing mounted.
    let out = run(chute_run(&srv)
        .arg("--input-dir")
        .arg(&input)
        .args(["--channel", "img=s3://data/img/,mode=FastFile"])
        .args(["--channel", "gone=s3://no-such-bucket/x/"])
        .arg("--")
        .arg("touch")
        .arg(&marker));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(3), "{logs}");
    assert!(stderr(&out).contains("channel 'gone'"), "{logs}");
    assert!(!marker.exists(), "{logs}");
    assert_torn_down(&input);
}

/// Runs `chute run` for one host of a sharded job; returns the files it got in its
/// File and FastFile channels, and its `SM_CURRENT_HOST` / `SM_HOSTS`.
fn host_view(
    srv: &Serve,
    input: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Vec<String>, Vec<String>, String) {
    let listing = input.join("../fastfile-listing");
    let hostinfo = input.join("../hostinfo");
    let script = format!(
        "cd \"$SM_CHANNEL_LIVE\" && find . -type f | sort > {} && printf '%s %s' \"$SM_CURRENT_HOST\" \"$SM_HOSTS\" > {}",
        listing.display(),
        hostinfo.display()
    );
    let mut cmd = chute_run(srv);
    cmd.arg("--input-dir")
        .arg(input)
        .args([
            "--channel",
            "files=s3://data/ds/,distribution=ShardedByS3Key",
            "--channel",
            "live=s3://data/ds/,mode=FastFile,distribution=ShardedByS3Key",
        ])
        .args(extra)
        .args(["--", "sh", "-c", &script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(0), "{logs}");
    assert_torn_down(input);
    let downloaded = match dir_files(&input.join("data/files")) {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => unreachable!(),
    };
    let mounted = std::fs::read_to_string(&listing)
        .expect("listing")
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    (
        downloaded,
        mounted,
        std::fs::read_to_string(&hostinfo).expect("hostinfo"),
    )
}

#[test]
fn two_hosts_get_disjoint_shards_from_every_host_source() {
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "ds/",
        &[
            ("a/1", 10),
            ("a/2", 0),
            ("b", 20),
            ("c/x/y", 30),
            ("d", 40),
            ("e", 5),
            ("f", 1),
        ],
        4,
    );
    let all: Vec<String> = objects.keys().map(|k| k[3..].to_owned()).collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let rc = |current: &str| {
        let p = tmp.path().join(format!("rc-{current}.json"));
        write_json(
            &p,
            &json!({"current_host": current, "hosts": ["algo-1", "algo-2"]}),
        );
        p.to_string_lossy().into_owned()
    };
    let rc1 = rc("algo-1");
    let rc2 = rc("algo-2");
    type Host<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let sources: Vec<(&str, [Host; 2])> = vec![
        (
            "resourceconfig.json",
            [
                (
                    vec!["--resource-config", &rc1],
                    vec![],
                    r#"algo-1 ["algo-1","algo-2"]"#,
                ),
                (
                    vec!["--resource-config", &rc2],
                    vec![],
                    r#"algo-2 ["algo-1","algo-2"]"#,
                ),
            ],
        ),
        (
            "Kubernetes Indexed Job",
            [
                (
                    vec![],
                    vec![("JOB_COMPLETION_INDEX", "0"), ("CHUTE_SHARD_COUNT", "2")],
                    r#"host-0 ["host-0","host-1"]"#,
                ),
                (
                    vec![],
                    vec![("JOB_COMPLETION_INDEX", "1"), ("CHUTE_SHARD_COUNT", "2")],
                    r#"host-1 ["host-0","host-1"]"#,
                ),
            ],
        ),
        (
            "Slurm",
            [
                (
                    vec![],
                    vec![("SLURM_NODEID", "0"), ("SLURM_NNODES", "2")],
                    r#"host-0 ["host-0","host-1"]"#,
                ),
                (
                    vec![],
                    vec![("SLURM_NODEID", "1"), ("SLURM_NNODES", "2")],
                    r#"host-1 ["host-0","host-1"]"#,
                ),
            ],
        ),
    ];
    for (i, (source, hosts)) in sources.iter().enumerate() {
        let mut seen = Vec::new();
        for (k, (flags, env, want_hosts)) in hosts.iter().enumerate() {
            let input = tmp.path().join(format!("job{i}/host{k}/input"));
            let (downloaded, mounted, hostinfo) = host_view(&srv, &input, flags, env);
            assert_eq!(&hostinfo, want_hosts, "{source}");
            let want: Vec<String> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| j % 2 == k)
                .map(|(_, p)| p.clone())
                .collect();
            let mut downloaded_sorted = downloaded.clone();
            downloaded_sorted.sort();
            assert_eq!(downloaded_sorted, want, "{source}: host {k} File channel");
            assert_eq!(mounted, want, "{source}: host {k} FastFile channel");
            seen.extend(downloaded);
        }
        seen.sort();
        // Disjoint (no duplicates) and complete.
        assert_eq!(seen, all, "{source}: the shards' union is the dataset");
    }
}

#[test]
fn bad_configs_exit_2_naming_channel_and_field_before_any_data_moves() {
    let srv = Serve::start();
    srv.put("good/a.bin", &pattern(1000, 1));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream: std::net::SocketAddr = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    // Counting proxy: "before any data moves" means no request at all.
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    let good = json!({"ChannelName": "good",
        "DataSource": {"S3DataSource": {"S3Uri": "s3://data/good/"}}});
    let s3 = |uri: &str| json!({"S3DataSource": {"S3Uri": uri}});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown InputMode",
            json!([good, {"ChannelName": "bad", "DataSource": s3("s3://data/good/"), "InputMode": "Streaming"}]),
            "channel 'bad': InputMode: unknown value 'Streaming'",
        ),
        (
            "S3Uri not s3://",
            json!([good, {"ChannelName": "bad", "DataSource": s3("https://data.s3.amazonaws.com/good/")}]),
            "channel 'bad': DataSource.S3DataSource.S3Uri: 'https://data.s3.amazonaws.com/good/' is not an s3:// URI",
        ),
        (
            "duplicate channel",
            json!([good, good]),
            "channel 'good': ChannelName: duplicate channel",
        ),
        (
            "missing DataSource",
            json!([good, {"ChannelName": "bad", "InputMode": "File"}]),
            "channel 'bad': DataSource: missing",
        ),
        (
            "bad channel name",
            json!([good, {"ChannelName": "bad/name", "DataSource": s3("s3://data/good/")}]),
            "channel #2: ChannelName: 'bad/name' contains '/'",
        ),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let marker = tmp.path().join("ran");
    let try_config = |cfg: &Path| {
        let input = tmp.path().join("input");
        let mut cmd = chute();
        cmd.args(["run", "--endpoint-url", &proxy.endpoint_url()])
            .arg("--input-config")
            .arg(cfg)
            .arg("--input-dir")
            .arg(&input)
            .arg("--")
            .arg("touch")
            .arg(&marker);
        let out = run(&mut cmd);
        assert!(!marker.exists(), "the command ran");
        assert!(!input.exists(), "the input directory was written");
        out
    };
    for (what, config, want) in cases {
        let cfg = tmp.path().join("cfg.json");
        write_json(&cfg, &config);
        let out = try_config(&cfg);
        let (got, logs) = code_and_logs(&out);
        assert_eq!(got, Some(2), "{what}: {logs}");
        let err = stderr(&out);
        assert!(err.contains(want), "{what}: want {want:?} in {logs}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {logs}");
    }
    // Unreadable files: missing, not JSON, not a list.
    let missing = tmp.path().join("missing.json");
    let out = try_config(&missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("cannot read --input-config {}", missing.display())),
        "{}",
        stderr(&out)
    );
    let garbled = tmp.path().join("garbled.json");
    write_file(&garbled, b"[{\"ChannelName\": \"train\",");
    let out = try_config(&garbled);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not valid JSON"),
        "{}",
        stderr(&out)
    );
    let dir = tmp.path().join("a-directory.json");
    std::fs::create_dir(&dir).expect("mkdir");
    let out = try_config(&dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read --input-config"),
        "{}",
        stderr(&out)
    );
    let stats = proxy.stats();
    assert_eq!(
        stats.requests, 0,
        "requests reached the endpoint: {stats:?}"
    );
}

#[test]
fn manifest_and_augmented_manifest_channels() {
    let srv = Serve::start();
    let a = pattern(5000, 11);
    let b = pattern(70_001, 12);
    srv.put("m/a.bin", &a);
    srv.put("m/sub/b.bin", &b);
    srv.put("m/not-listed.bin", b"never read");
    srv.put(
        "manifests/train.manifest",
        br#"[{"prefix": "s3://data/m/"}, "a.bin", "sub/b.bin"]"#,
    );
    srv.put(
        "manifests/train.jsonl",
        b"{\"source-ref\": \"s3://data/m/a.bin\", \"label\": 3, \"extra\": 1}\n\
          {\"source-ref\": \"s3://data/m/sub/b.bin\", \"label\": {\"z\": 1, \"a\": \"dog\"}}\n",
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let cfg = tmp.path().join("cfg.json");
    write_json(
        &cfg,
        &json!([
            {"ChannelName": "listed",
             "DataSource": {"S3DataSource": {"S3Uri": "s3://data/manifests/train.manifest",
                                             "S3DataType": "ManifestFile"}}},
            {"ChannelName": "aug",
             "DataSource": {"S3DataSource": {"S3Uri": "s3://data/manifests/train.jsonl",
                                             "S3DataType": "AugmentedManifestFile",
                                             "AttributeNames": ["source-ref", "label"]}},
             "InputMode": "Pipe", "RecordWrapperType": "RecordIO"}
        ]),
    );
    let records = tmp.path().join("records.json");
    // Reads aug_0 as RecordIO and writes the SHA-256 of each record.
    let reader = format!(
        "import hashlib, json, struct\n\
         f = open('{}/data/aug_0', 'rb'); out = []\n\
         while True:\n\
         \x20   h = f.read(8)\n\
         \x20   if not h: break\n\
         \x20   magic, n = struct.unpack('<II', h); n &= (1 << 29) - 1\n\
         \x20   out.append(hashlib.sha256(f.read(n)).hexdigest()); f.read((4 - n % 4) % 4)\n\
         json.dump(out, open('{}', 'w'))\n",
        input.display(),
        records.display()
    );
    let out = run(chute_run(&srv)
        .arg("--input-config")
        .arg(&cfg)
        .arg("--input-dir")
        .arg(&input)
        .args(["--", "python3", "-c", &reader]));
    let (got, logs) = code_and_logs(&out);
    assert_eq!(got, Some(0), "{logs}");
    let listed = dir_files(&input.join("data/listed"));
    assert_eq!(
        listed,
        json!({"a.bin": sha256(&a), "sub/b.bin": sha256(&b)}),
        "{logs}"
    );
    let got: Value =
        serde_json::from_str(&std::fs::read_to_string(&records).expect("records")).unwrap();
    // One record per attribute, lines in file order; values as compact JSON.
    assert_eq!(
        got,
        json!([
            sha256(&a),
            sha256(b"3"),
            sha256(&b),
            sha256(br#"{"a":"dog","z":1}"#)
        ]),
        "{logs}"
    );
    assert_torn_down(&input);
}
