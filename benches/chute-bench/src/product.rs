//! The product under test, run as a user runs it: `chute mount` / `download` /
//! `pipe` child processes of the `chute` binary, with what the benches read off
//! them (readiness, peak RSS, the unmount summary), and the host-side chores
//! between measurements (sync, page-cache drops, the server's request counters).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A `chute mount` child process (foreground mode) for one measurement.
pub struct MountChild {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its disk cache, new for each mount so that no measurement finds the
    /// bytes of an earlier one there (`None`: a chute without a disk cache).
    _cache: Option<tempfile::TempDir>,
    /// From spawning the process to its "ready" line.
    pub ready_in: Duration,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl MountChild {
    /// Mounts `source` on a fresh temporary directory with `args` added to
    /// `chute mount`, its disk cache (when it has one and `args` say nothing
    /// of it) in a fresh directory under `cache_in`; returns once the mount is
    /// ready.
    pub fn start(
        chute: &Path,
        source: &str,
        args: &[String],
        cache_in: &Path,
    ) -> anyhow::Result<MountChild> {
        let dir = tempfile::tempdir().context("cannot create a mount point")?;
        let mut cmd = Command::new(chute);
        cmd.arg("mount").arg(source).arg(dir.path()).args(args);
        let own_cache = !args
            .iter()
            .any(|a| a.starts_with("--cache-dir") || a == "--no-cache");
        let cache = if own_cache && has_disk_cache(chute) {
            let c = tempfile::tempdir_in(cache_in).context("cannot create a cache directory")?;
            cmd.arg("--cache-dir").arg(c.path());
            Some(c)
        } else {
            None
        };
        let started = Instant::now();
        let mut child = cmd
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} mount", chute.display()))?;
        let out = child.stdout.take().context("no stdout")?;
        // The summary printed at unmount is on stderr; keep all of it.
        let err = child.stderr.take().context("no stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            s
        });
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let ready_in = started.elapsed();
        let mut m = MountChild {
            child: Some(child),
            dir,
            _cache: cache,
            ready_in,
            stderr: Some(stderr),
        };
        if !line.starts_with("chute mount:") {
            let log = m.finish().unwrap_or_default();
            anyhow::bail!("chute mount failed: {line}{log}");
        }
        Ok(m)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak RSS so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.pid().map_or(0, peak_rss_kib)
    }

    /// Unmounts (SIGTERM); returns the process's peak RSS in KiB.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        let hwm = self.peak_rss_kib();
        self.finish()?;
        Ok(hwm)
    }

    /// Unmounts (SIGTERM) and returns what the process printed on stderr (the
    /// unmount summary is its last line).
    pub fn stop_with_log(mut self) -> anyhow::Result<String> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok(String::new());
        };
        terminate(child.id());
        let st = child.wait()?;
        let log = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        anyhow::ensure!(st.success(), "chute mount exited with {st}: {log}");
        Ok(log)
    }
}

impl Drop for MountChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(c.id());
            let _ = c.wait();
        }
    }
}

/// Whether this `chute mount` keeps a disk cache by default (it then has
/// `--no-cache`); asked once per binary.
pub fn has_disk_cache(chute: &Path) -> bool {
    static ASKED: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut asked) = ASKED.lock() else {
        return false;
    };
    if let Some((_, yes)) = asked.iter().find(|(p, _)| p == chute) {
        return *yes;
    }
    let yes = Command::new(chute)
        .args(["mount", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-cache"));
    asked.push((chute.to_path_buf(), yes));
    yes
}

fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Peak RSS (`VmHWM`) of a live process, in KiB; 0 if it cannot be read.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets a live process's peak RSS to its current RSS (`clear_refs` 5), so
/// that the next reading is the peak of what follows. False when the kernel
/// or our privileges do not allow it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/clear_refs"))
        .and_then(|mut f| f.write_all(b"5"))
        .is_ok()
}

/// A finished child: its exit status, wall time and peak RSS.
pub struct Finished {
    pub status: ExitStatus,
    pub secs: f64,
    pub peak_rss_kib: u64,
}

/// Runs `cmd` to completion, timing it and taking its peak RSS from the kernel's
/// accounting of the reaped child (`wait4`).
pub fn run_measured(cmd: &mut Command) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let child = cmd
        .env_remove("AWS_CA_BUNDLE")
        .spawn()
        .with_context(|| format!("cannot run {:?} (is it installed?)", cmd.get_program()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are valid for the call.
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    anyhow::ensure!(
        r == pid,
        "waiting for {:?}: {}",
        cmd.get_program(),
        std::io::Error::last_os_error()
    );
    // The child was reaped above; `child` must not wait again.
    std::mem::forget(child);
    Ok(Finished {
        status: ExitStatus::from_raw(status),
        secs: started.elapsed().as_secs_f64(),
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

pub fn sync_disks() {
    nix::unistd::sync();
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: the next read of any file comes
/// from the disk (or the network). Needs root.
pub fn drop_page_cache() -> anyhow::Result<()> {
    sync_disks();
    std::fs::write("/proc/sys/vm/drop_caches", b"3")
        .context("cannot drop the page cache (echo 3 > /proc/sys/vm/drop_caches needs root)")
}

/// Whether [`drop_page_cache`] can work here.
pub fn can_drop_page_cache() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok()
}

/// Drops the files under `dest` from the page cache (written back first, as
/// only clean pages can be dropped), so that the memory they held is free,
/// and recently used, for the next tool.
pub fn evict(dest: &Path) {
    sync_disks();
    for (path, _) in files(dest).unwrap_or_default() {
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = nix::fcntl::posix_fadvise(
                &f,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// Every file under `dest`, with its size.
pub fn files(dest: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    Ok(out)
}

/// The server's count of GetObject requests, read from a Prometheus metrics
/// endpoint (Garage's admin API serves one: `http://127.0.0.1:3903/metrics`).
/// `None` when there is none to read.
pub fn server_gets(metrics_url: Option<&str>) -> Option<u64> {
    let body = http_get(metrics_url?).ok()?;
    let mut total = None;
    for line in body.lines() {
        if line.starts_with("api_s3_request_counter{") && line.contains("\"GetObject\"") {
            let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
            *total.get_or_insert(0) += v as u64;
        }
    }
    // A server that has served no GET yet has no such line.
    Some(total.unwrap_or(0))
}

/// A plain HTTP/1.0 GET of a loopback `http://host:port/path` URL.
fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("metrics URL must be http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("bad HTTP response")?;
    anyhow::ensure!(
        head.contains(" 200 "),
        "metrics: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_gets_adds_up_the_get_counters() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let body = "# HELP x\napi_s3_request_counter{api_endpoint=\"GetObject\"} 12\n\
                        api_s3_request_counter{api_endpoint=\"ListObjectsV2\"} 3\n\
                        api_s3_request_counter{api_endpoint=\"GetObject\",x=\"y\"} 30\n";
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}"
            );
        });
        let url = format!("http://{addr}/metrics");
        assert_eq!(server_gets(Some(&url)), Some(42));
        server.join().expect("server thread");
        assert_eq!(server_gets(None), None);
    }
}
