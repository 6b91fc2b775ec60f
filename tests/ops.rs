//! Operability end to end: what a container runtime or an operator sees of
//! chute. Logs collected through a pipe carry no terminal escape sequences;
//! settings a `ENTRYPOINT ["chute","run","--"]` image cannot pass as flags are
//! taken from the environment; `--metrics-addr` serves counters that move
//! while a download or a mount works.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const ESC: u8 = 0x1b;

/// Runs `cmd` with stderr sent to a file (as `docker logs` and Kubernetes
/// collect it) and returns that file's bytes and the exit code.
fn stderr_through_file(cmd: &mut std::process::Command, dir: &Path) -> (Option<i32>, Vec<u8>) {
    let path = dir.join("stderr.log");
    let file = File::create(&path).expect("log file");
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .expect("run chute");
    (status.code(), std::fs::read(&path).expect("read log file"))
}

fn assert_no_escapes(what: &str, log: &[u8]) {
    if let Some(at) = log.iter().position(|&b| b == ESC) {
        panic!(
            "{what}: ESC byte at offset {at} in a log written to a file:\n{}",
            String::from_utf8_lossy(log)
        );
    }
}

#[test]
fn logs_piped_to_a_file_have_no_escape_sequences() {
    let srv = Serve::start();
    srv.put("logs/a.bin", &pattern(300_000, 1));
    srv.put("logs/b.bin", &pattern(1_000, 2));
    let work = tempfile::tempdir().expect("tempdir");
    // A resume state file in a format chute does not know: a warning.
    let state = work.path().join("state");
    std::fs::write(&state, "not a chute state file\n").expect("state file");
    let dest = work.path().join("dest");

    // Debug level: span fields, targets and levels of every kind on one line.
    let (code, log) = stderr_through_file(
        srv.chute("download")
            .args(["--log", "debug"])
            .arg(format!("s3://{BUCKET}/logs/"))
            .arg(&dest)
            .arg("--state-file")
            .arg(&state),
        work.path(),
    );
    let text = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("WARN"), "expected a warning in:\n{text}");
    assert!(text.contains("DEBUG"), "expected debug lines in:\n{text}");
    assert_no_escapes("download with a warning", &log);

    // An error: the endpoint is down (exit 3), with retries logged on the way.
    let (code, log) = stderr_through_file(
        chute()
            .args(["download", "--endpoint-url", "http://127.0.0.1:1"])
            .args(["--log", "debug"])
            .arg(format!("s3://{BUCKET}/logs/"))
            .arg(work.path().join("dest2")),
        work.path(),
    );
    let text = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("error"), "expected an error in:\n{text}");
    assert_no_escapes("failed download", &log);
}

#[test]
fn log_format_from_the_environment() {
    let srv = Serve::start();
    srv.put("json/a.bin", &pattern(1_000, 3));
    let work = tempfile::tempdir().expect("tempdir");
    let state = work.path().join("state");
    std::fs::write(&state, "not a chute state file\n").expect("state file");
    let (code, log) = stderr_through_file(
        srv.chute("download")
            .env("CHUTE_LOG_FORMAT", "json")
            .arg(format!("s3://{BUCKET}/json/"))
            .arg(work.path().join("dest"))
            .arg("--state-file")
            .arg(&state),
        work.path(),
    );
    let text = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(code, Some(0), "{text}");
    let warnings: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v: &serde_json::Value| {
            v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("resume state"))
        })
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "the resume-state warning, as JSON, expected in:\n{text}"
    );
    assert_no_escapes("json logs", &log);

    // A bad value is a usage error naming the variable's flag.
    let out = run(chute()
        .env("CHUTE_LOG_FORMAT", "yaml")
        .args(["ls", "file:///nonexistent"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--log-format"), "{}", stderr(&out));
}

#[test]
fn chute_run_options_from_the_environment() {
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    write_file(&src.join("x.bin"), &pattern(10_000, 4));
    let input = work.path().join("custom-input");
    let resources = work.path().join("resources.json");
    std::fs::write(
        &resources,
        r#"{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}"#,
    )
    .expect("resourceconfig");
    let out = run(chute()
        .env("CHUTE_INPUT_DIR", &input)
        .env("CHUTE_JOB_NAME", "env-job")
        .env("CHUTE_RESOURCE_CONFIG", &resources)
        .env("CHUTE_MAX_RUNTIME", "600")
        .arg("run")
        .arg("--channel")
        .arg(format!("train=file://{}", src.display()))
        .args([
            "--",
            "sh",
            "-c",
            "echo \"$SM_INPUT_DIR|$TRAINING_JOB_NAME|$SM_CURRENT_HOST\"; cat \"$SM_CHANNEL_TRAIN/x.bin\" | wc -c",
        ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = stdout(&out);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{}|env-job|algo-1", input.display()).as_str()),
        "{stdout}"
    );
    assert_eq!(lines.next().map(str::trim), Some("10000"), "{stdout}");
    assert!(input.join("config/inputdataconfig.json").is_file());
}

// ---- metrics ----------------------------------------------------------------

/// A chute child whose stderr is read line by line (for the metrics address)
/// and kept (for failure messages).
struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(cmd: &mut Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chute");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let out = child.stdout.take().expect("stdout");
        for stream in [Box::new(err) as Box<dyn Read + Send>, Box::new(out)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Watched {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The first output line that `pick` accepts.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(v) = found {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("no {what} from chute; output:\n{}", self.seen.join("\n"));
    }

    /// The address the metrics listener bound (`--metrics-addr 127.0.0.1:0`).
    fn metrics_addr(&mut self) -> String {
        self.wait_for("metrics address", |line| {
            let at = line.find("serving metrics")?;
            let addr = line[at..].split("addr=").nth(1)?;
            Some(addr.split_whitespace().next()?.trim_matches('"').to_owned())
        })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn finish(mut self, sig: Option<&str>) -> (Option<i32>, String) {
        if let Some(sig) = sig {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(line);
        }
        (status.and_then(|s| s.code()), self.seen.join("\n"))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One `GET /metrics`: the status line and the body.
fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The Prometheus text format, parsed strictly: every sample's family has one
/// `# TYPE` line before it; label values are quoted; values are numbers.
/// Returns `name{labels}` -> value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("TYPE names a family");
            let kind = parts.next().expect("TYPE gives a type");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned()), "family typed twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap_or(series);
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), v);
    }
    samples
}

fn sample(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from {:#?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_move_during_a_download() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};

    let srv = Serve::start();
    for i in 0..4 {
        srv.put(&format!("m/fast{i}.bin"), &pattern(200_000, 10 + i));
    }
    srv.put("m/slow.bin", &pattern(50_000, 20));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    // Two throttled answers, then one object held back long enough to scrape
    // a download that is still running.
    proxy.push(
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .path_contains("fast0")
            .times(2),
    );
    proxy.push(
        FaultRule::new(FaultKind::Delay {
            duration: Duration::from_secs(8),
        })
        .method("GET")
        .path_contains("slow.bin")
        .times(1),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("train");
    let mut chute_dl = Watched::spawn(
        chute()
            .args(["download", "--endpoint-url", &proxy.endpoint_url()])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg(format!("s3://{BUCKET}/m/"))
            .arg(&dest),
    );
    let addr = chute_dl.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let during = loop {
        let (status, body) = scrape(&addr);
        assert_eq!(status, "HTTP/1.1 200 OK");
        let m = parse_exposition(&body);
        let fetched = m
            .get("chute_bytes_fetched_total{channel=\"train\"}")
            .copied()
            .unwrap_or(0.0);
        if fetched >= 800_000.0 {
            break m;
        }
        assert!(
            chute_dl.running() && Instant::now() < deadline,
            "no progress seen:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        chute_dl.running(),
        "the download was still waiting for slow.bin"
    );
    assert_eq!(
        sample(
            &during,
            "chute_s3_retries_total{channel=\"train\",cause=\"throttled\"}"
        ),
        2.0
    );
    assert!(
        sample(
            &during,
            "chute_s3_requests_total{channel=\"train\",op=\"get\"}"
        ) >= 6.0
    );
    assert!(
        sample(
            &during,
            "chute_s3_requests_total{channel=\"train\",op=\"list\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&during, "chute_s3_failures_total{channel=\"train\"}"),
        0.0
    );
    let (code, out) = chute_dl.finish(None);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        sha256(&std::fs::read(dest.join("slow.bin")).expect("slow.bin")),
        sha256(&pattern(50_000, 20))
    );
}

#[test]
fn metrics_of_a_mount_count_what_readers_read() {
    if !chute_testkit::need::fuse("tests/ops.rs metrics_of_a_mount") {
        return;
    }
    let srv = Serve::start();
    let data = pattern(3_000_000, 30);
    srv.put("mnt/a.bin", &data);
    srv.put("mnt/b.bin", &pattern(1_000, 31));
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().join("val");
    std::fs::create_dir(&mp).expect("mount point");
    let mut mount = Watched::spawn(
        srv.chute("mount")
            .arg(format!("s3://{BUCKET}/mnt/"))
            .arg(&mp)
            .args(["--metrics-addr", "127.0.0.1:0"]),
    );
    let addr = mount.metrics_addr();
    mount.wait_for("ready line", |l| {
        l.starts_with("chute mount:").then_some(())
    });
    let before = parse_exposition(&scrape(&addr).1);
    assert_eq!(
        sample(&before, "chute_bytes_served_total{channel=\"val\"}"),
        0.0
    );

    let read = std::fs::read(mp.join("a.bin")).expect("read through the mount");
    assert_eq!(sha256(&read), sha256(&data));
    let (status, body) = scrape(&addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let after = parse_exposition(&body);
    assert!(
        sample(&after, "chute_bytes_served_total{channel=\"val\"}") >= data.len() as f64,
        "{body}"
    );
    assert!(
        sample(&after, "chute_reads_total{channel=\"val\"}") > 0.0,
        "{body}"
    );
    assert!(
        sample(&after, "chute_bytes_fetched_total{channel=\"val\"}") >= data.len() as f64,
        "{body}"
    );
    assert!(
        sample(
            &after,
            "chute_s3_requests_total{channel=\"val\",op=\"get\"}"
        ) >= 1.0,
        "{body}"
    );
    let lookups = sample(&after, "chute_cache_hits_total{channel=\"val\"}")
        + sample(&after, "chute_cache_waits_total{channel=\"val\"}")
        + sample(&after, "chute_cache_misses_total{channel=\"val\"}");
    assert!(lookups > 0.0, "{body}");
    assert_eq!(sample(&after, "chute_errors_total{channel=\"val\"}"), 0.0);
    let (code, out) = mount.finish(Some("TERM"));
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn a_metrics_address_in_use_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(chute()
        .args(["--metrics-addr", &addr])
        .args(["ls", "file:///nonexistent-chute-dir"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics-addr"), "{}", stderr(&out));
}

// ---- mounts made by someone else ----------------------------------------------

/// Whether `p` is a mount point (its device differs from its parent's).
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        // ENOTCONN: a dead mount is still a mount.
        (Err(e), _) => e.raw_os_error() == Some(107),
        _ => false,
    }
}

/// Removes whatever is still mounted at `p` (a failed test's leftovers).
fn force_unmount(p: &Path) {
    if is_mount_point(p) {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// A dataset of a few objects under `prefix` and their hashes by relative path.
fn put_dataset(srv: &Serve, prefix: &str, seed: u64) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    for (i, size) in [0usize, 1, 70_000, 1_500_000].into_iter().enumerate() {
        let name = format!("d{}/f{i}.bin", i % 2);
        let data = pattern(size, seed + i as u64);
        srv.put(&format!("{prefix}{name}"), &data);
        want.insert(name, sha256(&data));
    }
    want
}

fn assert_serves(mp: &Path, want: &BTreeMap<String, String>) {
    for (name, hash) in want {
        let got = std::fs::read(mp.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&sha256(&got), hash, "{name} through the mount");
    }
}

#[test]
fn a_mount_on_a_passed_fuse_descriptor_serves_exact_bytes_without_privilege() {
    if !chute_testkit::need::fuse("tests/ops.rs passed descriptor") {
        return;
    }
    let srv = Serve::start();
    let want = put_dataset(&srv, "fd/", 40);
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = dir.path().join("train");
    std::fs::create_dir(&mp).expect("mount point");
    // The helper mounts; the server runs with every capability dropped, so it
    // could not mount anything itself.
    let mut helper = Watched::spawn(
        chute()
            .arg("mount-helper")
            .arg(&mp)
            .args(["--", "setpriv", "--inh-caps=-all", "--bounding-set=-all"])
            .arg(env!("CARGO_BIN_EXE_chute"))
            .args(["mount", &format!("s3://{BUCKET}/fd/"), "/dev/fd/{fd}"])
            .args(["--endpoint-url", &srv.endpoint]),
    );
    helper.wait_for("ready line", |l| {
        l.starts_with("chute mount:").then_some(())
    });
    assert!(is_mount_point(&mp));
    assert_serves(&mp, &want);
    // Read-only, as every chute mount.
    let err = std::fs::write(mp.join("new.bin"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
    let (code, out) = helper.finish(Some("TERM"));
    let gone = !is_mount_point(&mp);
    force_unmount(&mp);
    assert_eq!(code, Some(0), "{out}");
    assert!(gone, "the helper removes the mount when its command exits");
}

/// `mount -t fuse "CHUTE#SOURCE" MP -o OPTS`: what an fstab line of type `fuse`
/// runs (through `mount.fuse3`, which calls `CHUTE SOURCE MP -o OPTS`). The
/// binary is named by its path: mount gives its helpers a fixed `PATH`
/// (`/usr/local/bin:/usr/bin:...`), where the binary under test is not.
fn mount_fuse(source: &str, mp: &Path, opts: &str) -> std::process::Output {
    // `chute()`'s loopback-only environment, for the chute that mount starts.
    let env = chute();
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "fuse"])
        .arg(format!("{}#{source}", env!("CARGO_BIN_EXE_chute")))
        .arg(mp)
        .args(["-o", opts])
        .stdin(Stdio::null());
    for (k, v) in env.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run mount")
}

fn need_mount_fuse3(test: &str) -> bool {
    let there =
        Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists();
    if !there {
        assert!(
            !chute_testkit::need::in_ci(),
            "{test}: mount.fuse3 missing (CI=true)"
        );
        eprintln!("SKIPPED {test}: mount.fuse3 (fuse3) is not installed");
    }
    there
}

#[test]
fn mount_through_mount_fuse3_serves_exact_bytes_like_an_fstab_line() {
    let test = "tests/ops.rs mount -t fuse";
    if !chute_testkit::need::fuse(test) || !need_mount_fuse3(test) {
        return;
    }
    let srv = Serve::start();
    let want = put_dataset(&srv, "fstab/", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, source, extra) in [
        // A URI, generic options the helper passes on, and chute's own as -o.
        (
            "uri",
            format!("s3://{BUCKET}/fstab/"),
            "rw,nodev,nosuid,_netdev,x-systemd.automount",
        ),
        // Mountpoint's form: a bucket name and prefix=.
        ("bucket", BUCKET.to_owned(), "prefix=fstab/,noatime"),
        // mount.fuse3 mounts and runs chute with no capability on /dev/fd/N.
        (
            "dropped",
            format!("s3://{BUCKET}/fstab/"),
            "drop_privileges",
        ),
    ] {
        let mp = dir.path().join(name);
        std::fs::create_dir(&mp).expect("mount point");
        let log = dir.path().join(format!("{name}.log"));
        let opts = format!(
            "{extra},endpoint_url={},log_file={},stats_interval=0",
            srv.endpoint,
            log.display()
        );
        let out = mount_fuse(&source, &mp, &opts);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        if !out.status.success() {
            force_unmount(&mp);
            panic!(
                "{name}: mount failed ({:?}): {}{}\nlog: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log_text()
            );
        }
        assert!(is_mount_point(&mp), "{name}: mounted once mount returns");
        assert_serves(&mp, &want);
        let umount = Command::new("umount").arg(&mp).output().expect("umount");
        force_unmount(&mp);
        assert!(
            umount.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&umount.stderr)
        );
    }
}

#[test]
fn chute_run_serves_the_metrics_of_every_channel() {
    let srv = Serve::start();
    srv.put("run/train/a.bin", &pattern(300_000, 60));
    srv.put("run/val/b.bin", &pattern(20_000, 61));
    let work = tempfile::tempdir().expect("tempdir");
    let marker = work.path().join("scraped");
    // The command waits until the test has scraped, so the job is still running.
    let wait = format!("while [ ! -e '{}' ]; do sleep 0.1; done", marker.display());
    let mut job = Watched::spawn(
        srv.chute("run")
            .env("CHUTE_METRICS_ADDR", "127.0.0.1:0")
            .env("CHUTE_INPUT_DIR", work.path().join("input"))
            .arg("--channel")
            .arg(format!("train=s3://{BUCKET}/run/train/"))
            .arg("--channel")
            .arg(format!("val=s3://{BUCKET}/run/val/"))
            .args(["--", "sh", "-c", &wait]),
    );
    let addr = job.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = parse_exposition(&scrape(&addr).1);
        let done = |c: &str, n: f64| {
            m.get(&format!("chute_bytes_fetched_total{{channel=\"{c}\"}}"))
                .is_some_and(|&v| v >= n)
        };
        if done("train", 300_000.0) && done("val", 20_000.0) {
            break m;
        }
        assert!(job.running() && Instant::now() < deadline, "{m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(sample(&m, "chute_s3_requests_total{channel=\"train\",op=\"get\"}") >= 1.0);
    assert!(sample(&m, "chute_s3_requests_total{channel=\"val\",op=\"list\"}") >= 1.0);
    std::fs::write(&marker, b"").expect("marker");
    let (code, out) = job.finish(None);
    assert_eq!(code, Some(0), "{out}");
}

/// The other side of the ESC check: on a terminal (a pty from `script`) log
/// lines are coloured, unless `NO_COLOR` asks for none.
#[test]
fn colours_only_on_a_terminal_without_no_color() {
    let has_script = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_script {
        assert!(!chute_testkit::need::in_ci(), "script(1) missing (CI=true)");
        eprintln!("SKIPPED colours_only_on_a_terminal: script(1) is not installed");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let state = work.path().join("state");
    let src = work.path().join("src");
    write_file(&src.join("a.bin"), &pattern(1_000, 70));
    let on_tty = |no_color: Option<&str>| {
        // A fresh unknown state file each time: the warning to colour.
        std::fs::write(&state, "not a chute state file\n").expect("state file");
        let _ = std::fs::remove_dir_all(work.path().join("dest"));
        // No progress bar: it draws with escape sequences of its own.
        let line = format!(
            "{} download --no-progress file://{} {} --state-file {}",
            env!("CARGO_BIN_EXE_chute"),
            src.display(),
            work.path().join("dest").display(),
            state.display()
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null());
        match no_color {
            Some(v) => cmd.env("NO_COLOR", v),
            None => cmd.env_remove("NO_COLOR"),
        };
        let out = cmd.output().expect("run script");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("WARN"), "{text}");
        out.stdout
    };
    assert!(on_tty(None).contains(&ESC), "a terminal gets colours");
    assert_no_escapes("NO_COLOR=1 on a terminal", &on_tty(Some("1")));
}
