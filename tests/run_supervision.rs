//! `chute run` supervising the training command: a channel that fails while the
//! command runs stops it (exit 3, the channel and object named, never a
//! cut-short epoch taken for a whole one), every catchable stop signal is
//! forwarded exactly once (also when `chute run` owns a terminal), the run time is
//! bounded by `--max-runtime`, and a command that ignores SIGTERM is killed with
//! its workers after the grace period.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chute_testkit::need;
use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;

fn logs(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("chute run did not exit within {timeout:?}: {}", logs(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn fifos_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_fifo()))
        .map(|e| e.path())
        .collect()
}

/// `chute run` against an endpoint, with a short grace period and no `SM_*`
/// variables of our own.
fn chute_run(endpoint: &str, input: &Path) -> Command {
    let mut cmd = chute();
    cmd.args(["run", "--endpoint-url", endpoint, "--stop-grace", "3"])
        .arg("--input-dir")
        .arg(input);
    for (k, _) in std::env::vars() {
        if k.starts_with("SM_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn proxy_for(srv: &Serve, rt: &tokio::runtime::Runtime) -> FaultProxy {
    let upstream: std::net::SocketAddr = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    rt.block_on(FaultProxy::start(upstream)).expect("proxy")
}

/// An object that cannot be read after part of it arrived: the reader never sees
/// EOF after a cut-short epoch, the script is stopped, and chute run exits 3
/// naming the channel and the object, whatever the script would have exited with.
#[test]
fn a_pipe_object_failing_mid_epoch_stops_the_command_and_exits_3() {
    let srv = Serve::start();
    let mut objects = Vec::new();
    for i in 0..8 {
        let data = pattern(256 * 1024 + i * 1000, 70 + i as u64);
        srv.put(&format!("train/obj-{i:02}"), &data);
        objects.push(data);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = proxy_for(&srv, &rt);
    // obj-05: its body is cut after 100 KiB, then every retry is refused.
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 100 * 1024,
        })
        .method("GET")
        .path_contains("obj-05")
        .times(1),
    );
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 403,
            code: "AccessDenied".into(),
        })
        .method("GET")
        .path_contains("obj-05")
        .times(10_000),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let out_file = tmp.path().join("epoch0");
    let marker = tmp.path().join("finished");
    // A script that would report success once the epoch ends.
    let script = format!(
        "cat \"$SM_CHANNEL_TRAIN\"_0 > '{}'; echo done > '{}'; exit 0",
        out_file.display(),
        marker.display()
    );
    let child = chute_run(&proxy.endpoint_url(), &input)
        .args(["--channel", "train=s3://data/train/,mode=Pipe"])
        .args(["--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let text = logs(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        stderr(&out).contains("'train'"),
        "channel not named: {text}"
    );
    assert!(stderr(&out).contains("obj-05"), "object not named: {text}");
    assert!(
        !marker.exists(),
        "the script saw the end of a cut-short epoch as a normal EOF: {text}"
    );
    // Whatever the reader got is whole objects in order, never part of obj-05.
    let got = std::fs::read(&out_file).unwrap_or_default();
    let mut whole = Vec::new();
    let mut boundaries = vec![0usize];
    for data in &objects[..5] {
        whole.extend_from_slice(data);
        boundaries.push(whole.len());
    }
    assert!(
        boundaries.contains(&got.len()),
        "the reader got {} bytes, not a whole number of objects ({boundaries:?}): {text}",
        got.len()
    );
    assert_eq!(sha256(&got), sha256(&whole[..got.len()]), "{text}");
    assert!(mounted_under(&input).is_empty());
    assert!(
        fifos_under(&input.join("data")).is_empty(),
        "FIFO left behind"
    );
    drop(proxy);
}

/// A FastFile mount that goes away under the command stops it: exit 3, the
/// channel named.
#[test]
fn a_fastfile_mount_that_dies_stops_the_command_and_exits_3() {
    if !need::fuse("a_fastfile_mount_that_dies_stops_the_command_and_exits_3") {
        return;
    }
    let srv = Serve::start();
    srv.put("images/a.bin", &pattern(10_000, 1));
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let marker = tmp.path().join("finished");
    // Unmount behind chute's back, then carry on as if nothing happened.
    let script = format!(
        "fusermount3 -u -z \"$SM_CHANNEL_IMAGES\" || umount -l \"$SM_CHANNEL_IMAGES\"; \
         sleep 60; echo done > '{}'",
        marker.display()
    );
    let child = chute_run(&srv.endpoint, &input)
        .args(["--channel", "images=s3://data/images/,mode=FastFile"])
        .args(["--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let text = logs(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(stderr(&out).contains("'images'"), "{text}");
    assert!(stderr(&out).contains("went away"), "{text}");
    assert!(!marker.exists(), "{text}");
    assert!(mounted_under(&input).is_empty());
}

/// SIGHUP and SIGQUIT no longer kill chute run and orphan the command: they are
/// forwarded, and the command's exit code is chute run's.
#[test]
fn sighup_and_sigquit_are_forwarded_to_the_command() {
    let srv = Serve::start();
    srv.put("train/a.bin", &pattern(1000, 3));
    for (sig, code) in [("HUP", 21), ("QUIT", 22)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("in");
        let marker = tmp.path().join("marker");
        let script = format!(
            "trap 'echo {sig} >> {m}; exit {code}' {sig}; echo ready > {m}; \
             while :; do sleep 0.1; done",
            m = marker.display()
        );
        let child = chute_run(&srv.endpoint, &input)
            .args(["--channel", "train=s3://data/train/,mode=FastFile"])
            .args(["--", "sh", "-c", &script])
            .spawn()
            .expect("spawn");
        wait_for("the script", Duration::from_secs(60), || {
            std::fs::read_to_string(&marker).is_ok_and(|s| s.contains("ready"))
        });
        signal(child.id(), sig);
        let out = wait_with_timeout(child, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(code), "SIG{sig}: {}", logs(&out));
        assert_eq!(
            std::fs::read_to_string(&marker).expect("marker"),
            format!("ready\n{sig}\n")
        );
        assert!(mounted_under(&input).is_empty(), "SIG{sig}: mount left");
    }
}

/// A command that ignores SIGTERM after a channel failure is killed, with the
/// workers it started, once the grace period is over.
#[test]
fn a_command_that_ignores_sigterm_is_killed_with_its_workers_after_the_grace_period() {
    let srv = Serve::start();
    srv.put("train/a.bin", &pattern(300_000, 5));
    srv.put("train/b.bin", &pattern(300_000, 6));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = proxy_for(&srv, &rt);
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 403,
            code: "AccessDenied".into(),
        })
        .method("GET")
        .path_contains("b.bin")
        .times(10_000),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("in");
    let pidfile = tmp.path().join("worker.pid");
    // The script and a background worker both ignore SIGTERM; the reader waits.
    let script = format!(
        "trap '' TERM; (trap '' TERM; echo $$ > /dev/null; sleep 300) & echo $! > '{}'; \
         cat \"$SM_CHANNEL_TRAIN\"_0 > /dev/null; sleep 300",
        pidfile.display()
    );
    let started = Instant::now();
    let child = chute_run(&proxy.endpoint_url(), &input)
        .args(["--channel", "train=s3://data/train/,mode=Pipe"])
        .args(["--", "sh", "-c", &script])
        .spawn()
        .expect("spawn");
    let out = wait_with_timeout(child, Duration::from_secs(90));
    let text = logs(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(stderr(&out).contains("b.bin"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(80),
        "the grace period was not enforced"
    );
    let worker: i32 = std::fs::read_to_string(&pidfile)
        .expect("worker pid")
        .trim()
        .parse()
        .expect("pid");
    wait_for("the worker to be gone", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{worker}")).exists()
            || std::fs::read_to_string(format!("/proc/{worker}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    assert!(
        fifos_under(&input.join("data")).is_empty(),
        "FIFO left behind"
    );
    drop(proxy);
}

/// With a terminal, as under `docker run -it`: a SIGINT sent to chute run alone
/// (`docker kill -s INT`) reaches the command; a Ctrl-C typed on the terminal
/// reaches it once, not twice.
#[test]
fn sigint_reaches_the_command_once_whether_typed_or_sent_under_a_terminal() {
    let Some(python) = need::python("sigint_reaches_the_command_once_under_a_terminal", &[]) else {
        return;
    };
    let srv = Serve::start();
    srv.put("train/a.bin", &pattern(1000, 3));
    for typed in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("in");
        let marker = tmp.path().join("marker");
        let script = format!(
            "n=0; trap 'n=$((n+1)); echo INT >> {m}' INT; echo ready > {m}; \
             while [ $n -lt 1 ]; do sleep 0.1; done; sleep 1; exit $((30+n))",
            m = marker.display()
        );
        // The driver gives chute run a pseudo-terminal as its controlling
        // terminal (chute is then its foreground group), waits for the script,
        // then either types Ctrl-C or signals chute's pid, and exits with
        // chute's exit code.
        let driver = r#"
import os, pty, sys, time, signal
marker, typed = sys.argv[1], sys.argv[2] == "1"
argv = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if "ready" in open(marker).read():
            break
    except OSError:
        pass
    try:
        os.read(fd, 65536)
    except OSError:
        pass
    time.sleep(0.05)
if typed:
    os.write(fd, b"\x03")
else:
    os.kill(pid, signal.SIGINT)
import select
while True:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            os.read(fd, 65536)
        except OSError:
            pass
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
"#;
        let run = chute_run(&srv.endpoint, &input);
        let mut cmd = Command::new(&python);
        cmd.arg("-c")
            .arg(driver)
            .arg(&marker)
            .arg(if typed { "1" } else { "0" })
            .arg(run.get_program());
        cmd.args(run.get_args());
        cmd.args(["--channel", "train=s3://data/train/,mode=File"])
            .args(["--", "sh", "-c", &script]);
        for (k, v) in run.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let out = wait_with_timeout(child, Duration::from_secs(90));
        assert_eq!(
            out.status.code(),
            Some(31),
            "typed={typed}: {} marker={:?}",
            logs(&out),
            std::fs::read_to_string(&marker)
        );
        assert_eq!(
            std::fs::read_to_string(&marker).expect("marker"),
            "ready\nINT\n",
            "typed={typed}"
        );
    }
}

/// `--max-runtime` (`StoppingCondition.MaxRuntimeInSeconds`): the command is sent
/// SIGTERM when its time is up, and killed with its group after the grace period
/// if it ignores it; the exit code is the command's.
#[test]
fn max_runtime_stops_the_command_then_kills_it_after_the_grace_period() {
    let srv = Serve::start();
    srv.put("train/a.bin", &pattern(1000, 3));
    for (script, code) in [
        // Saves its work on SIGTERM and exits, as SageMaker scripts are told to.
        ("trap 'exit 0' TERM; while :; do sleep 0.1; done", 0),
        // Ignores it: killed after --stop-grace.
        ("trap '' TERM; while :; do sleep 0.1; done", 128 + 9),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("in");
        let started = Instant::now();
        let child = chute_run(&srv.endpoint, &input)
            .args(["--max-runtime", "2"])
            .args(["--channel", "train=s3://data/train/,mode=File"])
            .args(["--", "sh", "-c", script])
            .spawn()
            .expect("spawn");
        let out = wait_with_timeout(child, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(code), "{script}: {}", logs(&out));
        assert!(
            stderr(&out).contains("MaxRuntimeInSeconds"),
            "{}",
            logs(&out)
        );
        assert!(started.elapsed() >= Duration::from_secs(2));
    }
}
