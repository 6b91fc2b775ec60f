//! `chute mount` / `chute unmount` end to end: a real `chute serve` child, a
//! real FUSE mount by the `chute` binary, read with ordinary tools (ls, find,
//! stat, du, tar, Python), every byte checked against the source.
//!
//! Every mount lives on its own temporary directory and is unmounted by a
//! drop guard (SIGTERM, then SIGKILL and a lazy unmount), so a failing test
//! never leaves a mount behind.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

/// FUSE is this file's real part: missing, the tests skip loudly, or fail under CI.
fn fuse_available() -> bool {
    chute_testkit::need::fuse("tests/fastfile.rs")
}

/// Whether `p` is a mount point (its device differs from its parent's).
fn is_mounted(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        // ENOTCONN: a dead mount is still a mount.
        (Err(e), _) => e.raw_os_error() == Some(libc_enotconn()),
        _ => false,
    }
}

fn libc_enotconn() -> i32 {
    107
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn lazy_unmount(p: &Path) {
    if Command::new("umount")
        .arg("-l")
        .arg(p)
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(p)
            .stderr(Stdio::null())
            .status();
    }
}

/// A `chute mount --foreground` child and its mount point.
struct MountProc {
    child: Option<Child>,
    mp: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub ready_line: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl MountProc {
    /// Spawns `cmd` (a `chute mount ... MOUNTPOINT` command) and waits for its
    /// ready line.
    fn start(mut cmd: Command, mp: PathBuf, dir: Option<tempfile::TempDir>) -> MountProc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chute mount");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let mut p = MountProc {
            child: Some(child),
            mp,
            _dir: dir,
            ready_line: String::new(),
            stderr: Some(stderr),
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("chute mount:") => p.ready_line = line,
            other => {
                let (code, err) = p.stop_with("KILL");
                panic!("chute mount did not get ready: {other:?}; exit {code:?}; stderr: {err}");
            }
        }
        assert!(is_mounted(p.path()), "mounted after the ready line");
        p
    }

    fn path(&self) -> &Path {
        &self.mp
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Sends `sig`, waits for the exit; returns the exit code and stderr.
    fn stop_with(&mut self, sig: &str) -> (Option<i32>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        signal(child.id(), sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status.and_then(|s| s.code()), err)
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_with("TERM");
        }
        if is_mounted(&self.mp) {
            lazy_unmount(&self.mp);
        }
    }
}

fn mount_cmd(srv: &Serve, source: &str, mp: &Path, extra: &[&str]) -> Command {
    let mut cmd = srv.chute("mount");
    cmd.arg(source).arg(mp).args(extra).env("CHUTE_LOG", "info");
    cmd
}

/// A fresh mount point `<tempdir>/mnt`: the default disk cache then lives in
/// `<tempdir>/.chute-cache` and goes away with the test.
fn mountpoint() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("mountpoint");
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).expect("mkdir mnt");
    (dir, mp)
}

fn mount(srv: &Serve, source: &str, extra: &[&str]) -> MountProc {
    let (dir, mp) = mountpoint();
    let cmd = mount_cmd(srv, source, &mp, extra);
    MountProc::start(cmd, mp, Some(dir))
}

fn file_sha(p: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Every file under `root`: relative path → (size, sha256).
fn tree_of(root: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, file_sha(&p).expect("read"));
            }
        }
    }
    out
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn whole_tree_matches_the_source_with_ordinary_tools() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    let mut expect: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        srv.put(&format!("ds/{rel}"), &data);
        expect.insert(rel.to_owned(), (data.len() as u64, sha256(&data)));
    };
    put("big/300mib.bin", pattern(300 << 20, 1));
    put("empty.bin", Vec::new());
    put("a/b/c/deep-empty", Vec::new());
    put("a/b/c/deep.txt", b"deep".to_vec());
    put("names/sp ace & plus+ %.txt", b"odd".to_vec());
    put("names/ünï-çødé.txt", b"unicode".to_vec());
    for i in 0..1000u64 {
        let size = (i * 7919) % (64 << 10);
        put(
            &format!("small/{:02}/s{i:04}.bin", i % 10),
            pattern(size as usize, i + 10),
        );
    }
    let total: u64 = expect.values().map(|v| v.0).sum();
    let m = mount(&srv, "s3://data/ds/", &[]);
    let mp = m.path().to_path_buf();

    // Names, sizes and bytes, read with plain syscalls.
    let got = tree_of(&mp);
    assert_eq!(got.len(), expect.len());
    assert_eq!(got, expect);

    // ls -lR lists every file with its size.
    let ls = run_ok(Command::new("ls").arg("-lR").arg(&mp));
    assert!(ls.contains("314572800 "), "ls shows the 300 MiB size");
    assert!(ls.contains("deep-empty"));
    assert_eq!(
        ls.lines().filter(|l| l.starts_with('-')).count(),
        expect.len()
    );
    // find sees every file and directory.
    let find = run_ok(Command::new("find").arg(&mp).args(["-type", "f"]));
    assert_eq!(find.lines().count(), expect.len());
    let dirs = run_ok(Command::new("find").arg(&mp).args(["-type", "d"]));
    assert_eq!(dirs.lines().count(), 1 + 1 + 3 + 1 + 1 + 10);
    // stat: size, mode, read-only file system.
    let st = run_ok(
        Command::new("stat")
            .args(["-c", "%s %a %F"])
            .arg(mp.join("big/300mib.bin")),
    );
    assert_eq!(st.trim(), "314572800 444 regular file");
    let st = run_ok(
        Command::new("stat")
            .args(["-c", "%a %F"])
            .arg(mp.join("a/b")),
    );
    assert_eq!(st.trim(), "555 directory");
    // du: apparent sizes of every file.
    let du = run_ok(Command::new("du").args(["-ab"]).arg(&mp));
    for line in du.lines() {
        let (size, path) = line.split_once('\t').expect("du line");
        let rel = Path::new(path).strip_prefix(&mp).expect("under mp");
        if let Some((want, _)) = expect.get(&*rel.to_string_lossy()) {
            assert_eq!(size.parse::<u64>().expect("size"), *want, "du {path}");
        }
    }
    let du_files = run_ok(
        Command::new("du")
            .args(["-sb", "--apparent-size"])
            .arg(mp.join("small")),
    );
    let small_total: u64 = expect
        .iter()
        .filter(|(k, _)| k.starts_with("small/"))
        .map(|(_, v)| v.0)
        .sum();
    let du_small: u64 = du_files
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("du -s");
    assert!(du_small >= small_total, "du -sb {du_small} < {small_total}");
    // tar -c of the whole mount, extracted elsewhere, is the source again.
    let out = tempfile::tempdir().expect("tar out");
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -cf - -C \"$1\" . | tar -xf - -C \"$2\"")
        .arg("sh")
        .arg(&mp)
        .arg(out.path())
        .status()
        .expect("tar");
    assert!(status.success());
    assert_eq!(tree_of(out.path()), expect);
    // Python's os.walk and plain reads.
    let py = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import os,sys,hashlib\n\
                 n=0;b=0;h=hashlib.sha256()\n\
                 for d,ds,fs in os.walk(sys.argv[1]):\n\
                 \x20ds.sort()\n\
                 \x20for f in sorted(fs):\n\
                 \x20\x20p=os.path.join(d,f);n+=1;b+=os.path.getsize(p)\n\
                 \x20\x20h.update(open(p,'rb').read(100))\n\
                 print(n,b)",
            )
            .arg(&mp),
    );
    assert_eq!(py.trim(), format!("{} {}", expect.len(), total));
    // statfs answers; the mount is read-only.
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&*mp.to_string_lossy()))
        .expect("listed in /proc/mounts");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "chute", "{line}");
    assert!(fields[2].starts_with("fuse"), "{line}");
    assert!(fields[3].split(',').any(|o| o == "ro"), "{line}");
    run_ok(Command::new("df").arg(&mp));
    drop(m);
    assert!(!is_mounted(&mp));
}

#[test]
fn ownership_modes_xattrs_and_allow_other() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    srv.put("p/d/f.bin", b"x");
    let mut m = mount(
        &srv,
        "s3://data/p/",
        &[
            "--uid",
            "1234",
            "--gid",
            "2345",
            "--file-mode",
            "0640",
            "--dir-mode",
            "750",
            "--allow-other",
        ],
    );
    let st = run_ok(
        Command::new("stat")
            .args(["-c", "%u %g %a"])
            .arg(m.path().join("d/f.bin")),
    );
    assert_eq!(st.trim(), "1234 2345 640");
    let st = run_ok(
        Command::new("stat")
            .args(["-c", "%u %g %a"])
            .arg(m.path().join("d")),
    );
    assert_eq!(st.trim(), "1234 2345 750");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(mounts
        .lines()
        .any(|l| l.contains(&*m.path().to_string_lossy()) && l.contains("allow_other")));
    let py = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import os,sys,errno\n\
                 p=sys.argv[1]\n\
                 for f in (lambda: os.getxattr(p,'user.x'), lambda: os.listxattr(p)):\n\
                 \x20try: print('has', f())\n\
                 \x20except OSError as e: print(errno.errorcode[e.errno])\n\
                 s=os.statvfs(p); print(s.f_namemax)",
            )
            .arg(m.path().join("d/f.bin")),
    );
    // No extended attributes: "not supported", as on a file system without them.
    assert_eq!(py.trim(), "ENOTSUP\nENOTSUP\n255");
    let (code, err) = m.stop_with("INT");
    assert_eq!(code, Some(0), "SIGINT exits 0: {err}");
    assert!(err.contains("unmounted"), "{err}");
    assert!(!is_mounted(m.path()));
}

#[test]
fn bad_sources_exit_3_and_leave_no_mount() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    srv.put("p/f.bin", b"x");
    let (_dir, mp) = mountpoint();
    let mp = mp.as_path();
    let cases: Vec<(&str, Command)> = vec![
        ("no such bucket", {
            let mut c = srv.chute("mount");
            c.arg("s3://no-such-bucket/p/").arg(mp);
            c
        }),
        ("bad credentials", {
            let mut c = srv.chute("mount");
            c.arg("s3://data/p/")
                .arg(mp)
                .env("AWS_SECRET_ACCESS_KEY", "wrong-secret");
            c
        }),
        ("endpoint down", {
            let mut c = chute();
            c.arg("mount")
                .args([
                    "--endpoint-url",
                    &format!("http://127.0.0.1:{}", dead_port()),
                ])
                .arg("s3://data/p/")
                .arg(mp);
            c
        }),
    ];
    for (what, mut cmd) in cases {
        let t = Instant::now();
        let out = cmd.output().expect("run");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{what}: one error line: {err}");
        assert!(errors[0].starts_with("chute: error:"), "{what}: {err}");
        assert!(!is_mounted(mp), "{what}: no mount left");
        assert!(t.elapsed() < Duration::from_secs(30), "{what}: fails fast");
    }
    let out = srv
        .chute("mount")
        .arg("s3://data/p/")
        .arg(mp.join("missing"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"));
    // A daemon that cannot mount says why and fails.
    let out = srv
        .chute("mount")
        .arg("--daemon")
        .arg("s3://no-such-bucket/p/")
        .arg(mp)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-bucket"), "{}", stderr(&out));
    assert!(!is_mounted(mp));
    // Unmounting what is not mounted is a usage error.
    let out = chute().arg("unmount").arg(mp).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn sigterm_during_heavy_reads_unmounts_and_exits_0() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    for i in 0..4 {
        srv.put(&format!("h/f{i}.bin"), &pattern(32 << 20, i));
    }
    let mut m = mount(&srv, "s3://data/h/", &[]);
    let mp = m.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let p = mp.join(format!("f{i}.bin"));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut f) = std::fs::File::open(&p) else {
                        break;
                    };
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    let (code, err) = m.stop_with("TERM");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(code, Some(0), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(!is_mounted(&mp), "unmounted after SIGTERM");
    for r in readers {
        r.join().expect("reader ends");
    }
}

#[test]
fn daemon_returns_when_ready_and_unmount_ends_it() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    let data = pattern(5 << 20, 77);
    srv.put("d/x.bin", &data);
    let (_dir, mp) = mountpoint();
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            if is_mounted(&self.0) {
                lazy_unmount(&self.0);
            }
        }
    }
    let _guard = Guard(mp.clone());
    let out = srv
        .chute("mount")
        .arg("s3://data/d/")
        .arg(&mp)
        .arg("--daemon")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Ready means ready: no waiting here.
    assert!(is_mounted(&mp));
    let line = stdout(&out);
    let pid: u32 = line
        .rsplit("(pid ")
        .next()
        .and_then(|s| s.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("pid in {line:?}"));
    assert_eq!(file_sha(&mp.join("x.bin")).expect("read").1, sha256(&data));
    // A second mount on the same point is refused.
    let out = srv
        .chute("mount")
        .arg("s3://data/d/")
        .arg(&mp)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already a mount point"));
    let out = chute().arg("unmount").arg(&mp).output().expect("unmount");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!is_mounted(&mp));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "daemon {pid} exits after unmount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stale_mount_of_a_killed_process_is_cleared() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    let data = pattern(1 << 20, 5);
    srv.put("s/x.bin", &data);
    let (dir, mp) = mountpoint();
    let mut first = MountProc::start(mount_cmd(&srv, "s3://data/s/", &mp, &[]), mp.clone(), None);
    let (_, _) = first.stop_with("KILL");
    // A dead FUSE mount: statfs reaches the (gone) file system and fails.
    let out = Command::new("stat")
        .arg("-f")
        .arg(&mp)
        .output()
        .expect("stat -f");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not connected"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut second = MountProc::start(
        mount_cmd(&srv, "s3://data/s/", &mp, &[]),
        mp.clone(),
        Some(dir),
    );
    assert_eq!(
        file_sha(&second.path().join("x.bin")).expect("read").1,
        sha256(&data)
    );
    let (code, err) = second.stop_with("TERM");
    assert_eq!(code, Some(0));
    assert!(
        err.contains("stale"),
        "message about the stale mount: {err}"
    );
    assert!(!is_mounted(&mp));
}

#[test]
fn auto_unmount_leaves_no_mount_behind_a_killed_chute() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    let data = pattern(300_000, 6);
    srv.put("s/x.bin", &data);
    let (dir, mp) = mountpoint();
    let mut m = MountProc::start(
        mount_cmd(&srv, "s3://data/s/", &mp, &["--auto-unmount"]),
        mp.clone(),
        Some(dir),
    );
    assert_eq!(
        file_sha(&m.path().join("x.bin")).expect("read").1,
        sha256(&data)
    );
    m.stop_with("KILL");
    // fusermount3's watcher unmounts once the FUSE connection closes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(&mp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mp), "no mount left after SIGKILL");
}

#[test]
fn memory_stays_within_the_budget() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    // 2 GiB written in 4 MiB chunks, hashed on the way.
    let big = srv.path_of("m/big.bin");
    std::fs::create_dir_all(big.parent().expect("parent")).expect("mkdir");
    let mut f = std::fs::File::create(&big).expect("create");
    let mut h = Sha256::new();
    let chunk = 4 << 20;
    for i in 0..512u64 {
        let c = pattern(chunk, 1000 + i);
        h.update(&c);
        f.write_all(&c).expect("write");
    }
    drop(f);
    let big_sha = hex::encode(h.finalize());
    let mut small = BTreeMap::new();
    for i in 0..1000u64 {
        let d = pattern(((i * 104_729) % (200 << 10)) as usize, i);
        small.insert(format!("s{i:04}.bin"), sha256(&d));
        srv.put(&format!("m/small/s{i:04}.bin"), &d);
    }
    let m = mount(&srv, "s3://data/m/", &["--max-memory", "256MiB"]);
    let (n, sha) = file_sha(&m.path().join("big.bin")).expect("read big");
    assert_eq!(n, 2 << 30);
    assert_eq!(sha, big_sha);
    for (name, want) in &small {
        let (_, got) = file_sha(&m.path().join("small").join(name)).expect("small");
        assert_eq!(&got, want, "{name}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).expect("status");
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    let peak = hwm_kb * 1024;
    eprintln!(
        "{}",
        status
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("VmHWM"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut m = m;
    let (code, err) = m.stop_with("TERM");
    eprintln!(
        "peak RSS of chute mount: {:.1} MiB; {err}",
        peak as f64 / (1 << 20) as f64
    );
    assert_eq!(code, Some(0));
    assert!(peak < (256 + 64) << 20, "peak RSS {peak} bytes");
}

/// Entry files in a disk cache directory.
fn cache_entries(dir: &Path) -> usize {
    let Ok(subs) = std::fs::read_dir(dir.join("v1")) else {
        return 0;
    };
    subs.flatten()
        .filter(|s| s.file_name() != "partial")
        .map(|s| std::fs::read_dir(s.path()).map_or(0, |d| d.count()))
        .sum()
}

/// The `N GETs` and `P of O opens by passthrough` of the unmount summary.
fn summary_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("chute mount: unmounted"))
        .unwrap_or_else(|| panic!("no summary line in: {stderr}"));
    let number_before = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {line}"));
        line[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("number before {word} in {line}"))
    };
    let passthrough = {
        let at = line
            .find(" opens by passthrough")
            .expect("passthrough count");
        let words: Vec<&str> = line[..at].split_whitespace().collect();
        words[words.len() - 3].parse().expect("passthrough number")
    };
    (number_before(" GETs"), passthrough)
}

#[test]
fn disk_cache_by_default_is_reused_by_the_next_mount() {
    if !fuse_available() {
        return;
    }
    let srv = Serve::start();
    let mut want = BTreeMap::new();
    for i in 0..20u64 {
        let d = pattern(50_000 + (i as usize) * 1000, 300 + i);
        want.insert(format!("c/f{i:02}.bin"), sha256(&d));
        srv.put(&format!("cached/c/f{i:02}.bin"), &d);
    }
    let (dir, mp) = mountpoint();
    let cache = dir.path().join(".chute-cache");
    let read_all = |root: &Path| {
        for (rel, sha) in &want {
            assert_eq!(&file_sha(&root.join(rel)).expect("read").1, sha, "{rel}");
        }
    };
    // First mount: the default cache beside the mount point, filled by the prefetch.
    let mut m = MountProc::start(
        mount_cmd(&srv, "s3://data/cached/", &mp, &[]),
        mp.clone(),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while cache_entries(&cache) < want.len() {
        assert!(
            Instant::now() < deadline,
            "prefetch into {}",
            cache.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    read_all(&mp);
    let (code, err) = m.stop_with("TERM");
    assert_eq!(code, Some(0), "{err}");
    let (gets, _) = summary_counts(&err);
    assert_eq!(gets, want.len() as u64, "one GET per object: {err}");

    // Second mount: everything from the cache, no GET.
    let mut m = MountProc::start(
        mount_cmd(&srv, "s3://data/cached/", &mp, &[]),
        mp.clone(),
        None,
    );
    read_all(&mp);
    let (code, err) = m.stop_with("TERM");
    assert_eq!(code, Some(0), "{err}");
    let (gets, passthrough) = summary_counts(&err);
    assert_eq!(gets, 0, "{err}");
    eprintln!("passthrough opens on the second mount: {passthrough}");

    // Forced fallback: same bytes, no passthrough, no GET.
    let mut m = MountProc::start(
        mount_cmd(&srv, "s3://data/cached/", &mp, &["--no-passthrough"]),
        mp.clone(),
        None,
    );
    read_all(&mp);
    let (code, err) = m.stop_with("TERM");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(summary_counts(&err), (0, 0), "{err}");

    // --no-cache: no cache directory, GETs again.
    std::fs::remove_dir_all(&cache).expect("rm cache");
    let mut m = MountProc::start(
        mount_cmd(&srv, "s3://data/cached/", &mp, &["--no-cache"]),
        mp.clone(),
        Some(dir),
    );
    read_all(&mp);
    let (code, err) = m.stop_with("TERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(summary_counts(&err).0 >= want.len() as u64, "{err}");
    assert!(!cache.exists(), "--no-cache creates no cache directory");
}
