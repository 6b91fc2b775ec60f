//! Fault soak: every mode (`chute download`, `chute pipe` with a reader, `chute
//! mount` read with ordinary file reads) run again and again through the fault
//! proxy, each run under a fresh seeded schedule of 503 bursts, resets, cut bodies,
//! stalls, trickles and the odd refused object.
//!
//! Every run must end byte-exact (hashes compared with the source) or with a clean
//! error (exit 3 and a message naming an object; EIO for a mount reader); the chute
//! process's peak RSS must stay within a bound derived from its memory budget; and
//! nothing may be left behind (no mount, no FIFO, no temporary file). The soak is
//! bounded in time (`CHUTE_SOAK_SECS`, default 60) and in runs, and prints what it
//! did: faults injected, runs survived and failed cleanly, bytes checked.
//! `CHUTE_SOAK_SEED` replays a schedule.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
use common::*;

const MIB: usize = 1 << 20;
const PREFIX: &str = "soak/";
/// Runs are bounded by count as well as by time.
const MAX_RUNS: usize = 30;
/// The read-ahead budget given to `pipe` and `mount`.
const MAX_MEMORY_MIB: u64 = 32;
/// What a chute process needs beyond its budget: runtime, SDK, TLS tables, code.
const BASELINE_MIB: u64 = 64;
/// File mode has no memory flag: it holds at most `concurrency` parts in flight.
const DOWNLOAD_CONCURRENCY: u64 = 8;
const DOWNLOAD_PART_MIB: u64 = 1;
/// Longest one run may take before it counts as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(150);

/// The objects every run reads: an empty one, small ones, and some large enough to
/// be fetched in several ranged parts.
const SIZES: &[usize] = &[
    0,
    1_000,
    5 * 1024 + 3,
    64 * 1024 + 1,
    300_000,
    700_001,
    MIB + 17,
    5 * MIB / 2,
    3 * MIB + 5,
    4 * MIB - 1,
];

/// xorshift64*: a schedule generator that gives the same faults for a seed on
/// every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Download,
    Pipe,
    Mount,
}

/// How one run ended.
enum Outcome {
    /// Every byte delivered and checked.
    Exact,
    /// A documented failure that named an object.
    CleanError,
}

#[derive(Default)]
struct Tally {
    runs: BTreeMap<&'static str, (u32, u32)>,
    bytes_checked: u64,
    peak_rss: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn record(&mut self, mode: Mode, outcome: &Outcome, peak: u64) {
        let name = mode_name(mode);
        let entry = self.runs.entry(name).or_default();
        match outcome {
            Outcome::Exact => entry.0 += 1,
            Outcome::CleanError => entry.1 += 1,
        }
        let p = self.peak_rss.entry(name).or_default();
        *p = (*p).max(peak);
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Download => "download",
        Mode::Pipe => "pipe",
        Mode::Mount => "mount",
    }
}

/// The source: key (relative to the prefix) → bytes, in key order.
struct Dataset {
    objects: BTreeMap<String, Vec<u8>>,
}

impl Dataset {
    fn put(srv: &Serve, seed: u64) -> Dataset {
        let mut objects = BTreeMap::new();
        for (i, &size) in SIZES.iter().enumerate() {
            let name = if i % 3 == 0 {
                format!("d{}/obj-{i:02}.bin", i % 2)
            } else {
                format!("obj-{i:02}.bin")
            };
            let data = pattern(size, seed.wrapping_add(i as u64));
            srv.put(&format!("{PREFIX}{name}"), &data);
            objects.insert(name, data);
        }
        Dataset { objects }
    }

    /// Plan order: keys sorted bytewise, which a `BTreeMap<String, _>` iterates in.
    fn in_plan_order(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.objects.iter()
    }

    fn total(&self) -> usize {
        self.objects.values().map(Vec::len).sum()
    }
}

/// A fresh schedule of faults for one run, pushed onto the proxy.
fn schedule(rng: &mut Rng, proxy: &FaultProxy, data: &Dataset) -> String {
    let keys: Vec<&String> = data.objects.keys().collect();
    let mut described = String::new();
    let rules = rng.range(3, 6);
    for _ in 0..rules {
        // Most faults aim at one object; some at any GET, listings included.
        let target = (!rng.one_in(4)).then(|| {
            let key = keys[rng.range(0, keys.len() as u64 - 1) as usize];
            format!("{PREFIX}{key}")
        });
        let (kind, times) = match rng.range(0, 5) {
            0 => (FaultKind::ServiceUnavailable, rng.range(1, 6)),
            1 => (FaultKind::Reset, rng.range(1, 2)),
            2 => (
                FaultKind::CutBody {
                    after_body_bytes: rng.range(0, 512 * 1024),
                },
                rng.range(1, 3),
            ),
            3 => (
                FaultKind::Stall {
                    after_body_bytes: rng.range(0, 256 * 1024),
                    duration: Duration::from_millis(rng.range(500, 2000)),
                },
                1,
            ),
            _ => (
                FaultKind::Trickle {
                    after_body_bytes: rng.range(0, 256 * 1024),
                    step_bytes: rng.range(16, 64) * 1024,
                    pause: Duration::from_millis(rng.range(10, 30)),
                },
                rng.range(1, 2),
            ),
        };
        let _ = write!(described, "{kind:?} x{times} on {target:?}; ");
        let mut rule = FaultRule::new(kind).method("GET").times(times as usize);
        if let Some(t) = target {
            rule = rule.path_contains(t);
        }
        proxy.push(rule);
    }
    // Now and then an object S3 refuses outright: the run must fail cleanly.
    if rng.one_in(5) {
        let key = keys[rng.range(0, keys.len() as u64 - 1) as usize];
        let _ = write!(described, "AccessDenied on {key}");
        proxy.push(
            FaultRule::new(FaultKind::Status {
                status: 403,
                code: "AccessDenied".to_owned(),
            })
            .method("GET")
            .path_contains(format!("{PREFIX}{key}"))
            .times(1),
        );
    }
    described
}

/// Peak RSS of a live process (`VmHWM` in /proc/<pid>/status), in bytes.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reaps `child` once it exits, returning its exit code and its peak RSS: the
/// last `VmHWM` seen while it ran (a high-water mark, so the last sample is the
/// largest). Not `ru_maxrss`: Linux carries the forking test process's own
/// high-water mark into it. Panics if it runs past `deadline`.
fn wait_with_peak(child: &mut Child, deadline: Instant, what: &str) -> (Option<i32>, u64) {
    let pid = child.id();
    let mut peak = 0;
    loop {
        peak = peak.max(vm_hwm(pid));
        let mut status = 0;
        // SAFETY: plain FFI call with valid out-pointers; the pid is our child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe {
            libc::wait4(
                i32::try_from(pid).expect("pid"),
                &mut status,
                libc::WNOHANG,
                &mut usage,
            )
        };
        if reaped > 0 {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code, peak);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} (pid {pid}) did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn memory_bound(mode: Mode) -> u64 {
    let budget = match mode {
        Mode::Download => DOWNLOAD_CONCURRENCY * DOWNLOAD_PART_MIB * 2,
        Mode::Pipe | Mode::Mount => MAX_MEMORY_MIB,
    };
    (budget + BASELINE_MIB) << 20
}

fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// A failure message names an object of the channel (or its prefix, for a
/// listing that failed).
fn names_an_object(log: &str) -> bool {
    log.contains(&format!("s3://{BUCKET}/{PREFIX}"))
}

/// Every path below `root` whose name marks it as temporary.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".chute-tmp" || name.ends_with(".part") {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

fn run_download(endpoint: &str, data: &Dataset, tally: &mut Tally) -> (Outcome, u64) {
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    let log = work.path().join("download.log");
    let mut child = chute()
        .args(["download", &format!("s3://{BUCKET}/{PREFIX}")])
        .arg(&dest)
        .args([
            "--endpoint-url",
            endpoint,
            "--no-progress",
            "--no-space-check",
        ])
        .args(["--concurrency", &DOWNLOAD_CONCURRENCY.to_string()])
        .args(["--part-size-mib", &DOWNLOAD_PART_MIB.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn chute download");
    let (code, peak) = wait_with_peak(&mut child, Instant::now() + RUN_DEADLINE, "chute download");
    let log = std::fs::read_to_string(&log).unwrap_or_default();

    // Whatever the outcome, a file under its final name is whole.
    let mut present = 0;
    for (key, want) in data.in_plan_order() {
        let path = dest.join(key);
        if path.exists() {
            let got = read_file(&path).expect("read downloaded file");
            assert_eq!(sha256(&got), sha256(want), "{key} is not byte-exact\n{log}");
            tally.bytes_checked += got.len() as u64;
            present += 1;
        }
    }
    let leftovers = temp_files(&dest);
    assert!(
        leftovers.is_empty(),
        "temporary files left: {leftovers:?}\n{log}"
    );
    let outcome = match code {
        Some(0) => {
            assert_eq!(present, data.objects.len(), "a file is missing\n{log}");
            Outcome::Exact
        }
        Some(3) => {
            assert!(names_an_object(&log), "the error names no object:\n{log}");
            Outcome::CleanError
        }
        other => panic!("chute download exited {other:?}:\n{log}"),
    };
    (outcome, peak)
}

fn run_pipe(endpoint: &str, data: &Dataset, tally: &mut Tally) -> (Outcome, u64) {
    const EPOCHS: u64 = 2;
    let work = tempfile::tempdir().expect("tempdir");
    let fifo_dir = work.path().join("data");
    let log = work.path().join("pipe.log");
    let mut child = chute()
        .args(["pipe", &format!("s3://{BUCKET}/{PREFIX}")])
        .args(["--endpoint-url", endpoint, "--channel", "train"])
        .arg("--dir")
        .arg(&fifo_dir)
        .args(["--epochs", &EPOCHS.to_string()])
        .args(["--max-memory", &format!("{MAX_MEMORY_MIB}M")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn chute pipe");

    // The reader, as a training script: wait for each epoch's FIFO, read it to EOF.
    let (tx, rx) = mpsc::channel();
    let reader_dir = fifo_dir.clone();
    let pid = child.id();
    let reading = Arc::new(AtomicBool::new(false));
    let reader_busy = reading.clone();
    std::thread::spawn(move || {
        for epoch in 0..EPOCHS {
            let fifo = reader_dir.join(format!("train_{epoch}"));
            while !fifo.exists() {
                if is_gone(pid) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            reader_busy.store(true, Ordering::SeqCst);
            let got = read_file(&fifo);
            reader_busy.store(false, Ordering::SeqCst);
            if tx.send((epoch, got)).is_err() {
                return;
            }
        }
    });
    let (code, peak) = wait_with_peak(&mut child, Instant::now() + RUN_DEADLINE, "chute pipe");
    let log = std::fs::read_to_string(&log).unwrap_or_default();

    let whole: Vec<u8> = data.in_plan_order().flat_map(|(_, d)| d.clone()).collect();
    let mut epochs = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(got) => epochs.push(got),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    !reading.load(Ordering::SeqCst),
                    "chute pipe exited ({code:?}) and left its FIFO reader hanging\n{log}"
                );
                break;
            }
        }
    }
    let last_epoch = epochs.len();
    for (epoch, got) in epochs {
        let got = got.unwrap_or_else(|e| panic!("reading epoch {epoch}: {e}\n{log}"));
        tally.bytes_checked += got.len() as u64;
        if sha256(&got) == sha256(&whole) {
            continue;
        }
        // A failed epoch ends after whole objects only: never part of one.
        assert_ne!(
            code,
            Some(0),
            "epoch {epoch} is short yet chute pipe succeeded\n{log}"
        );
        let mut prefix_len = 0;
        let whole_objects = std::iter::once(0)
            .chain(data.in_plan_order().map(|(_, d)| {
                prefix_len += d.len();
                prefix_len
            }))
            .any(|len| len == got.len() && got[..] == whole[..len]);
        assert!(
            whole_objects,
            "epoch {epoch}: {} bytes that are not a run of whole objects\n{log}",
            got.len()
        );
    }
    let left: Vec<_> = std::fs::read_dir(&fifo_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "FIFOs left behind: {left:?}\n{log}");
    let outcome = match code {
        Some(0) => {
            assert_eq!(last_epoch as u64, EPOCHS, "an epoch was never read\n{log}");
            Outcome::Exact
        }
        Some(3) => {
            assert!(names_an_object(&log), "the error names no object:\n{log}");
            Outcome::CleanError
        }
        other => panic!("chute pipe exited {other:?}:\n{log}"),
    };
    (outcome, peak)
}

/// Whether the process has exited (reaped, or a zombie waiting to be).
fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn mounted(mp: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mp = mp.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*mp))
}

fn run_mount(endpoint: &str, data: &Dataset, tally: &mut Tally) -> (Outcome, u64) {
    let work = tempfile::tempdir().expect("tempdir");
    let mp = work.path().join("mnt");
    std::fs::create_dir(&mp).expect("mountpoint");
    let log = work.path().join("mount.log");
    let mut child = chute()
        .args(["mount", &format!("s3://{BUCKET}/{PREFIX}")])
        .arg(&mp)
        .args(["--endpoint-url", endpoint])
        .args(["--max-memory", &format!("{MAX_MEMORY_MIB}M")])
        .env("CHUTE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn chute mount");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let ready = rx.recv_timeout(Duration::from_secs(60));
    let ready = matches!(&ready, Ok(line) if line.starts_with("chute mount:"));

    let mut failed = Vec::new();
    if ready {
        for (key, want) in data.in_plan_order() {
            match read_file(&mp.join(key)) {
                Ok(got) => {
                    assert_eq!(
                        sha256(&got),
                        sha256(want),
                        "{key} read through the mount differs"
                    );
                    tally.bytes_checked += got.len() as u64;
                }
                // A read whose retries are exhausted fails with EIO, and only it.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => failed.push(key.clone()),
                Err(e) => panic!("reading {key} through the mount: {e}"),
            }
        }
    }
    let peak_live = vm_hwm(child.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let (code, peak) = wait_with_peak(&mut child, Instant::now() + RUN_DEADLINE, "chute mount");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let still_mounted = mounted(&mp);
    if still_mounted {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&mp)
            .status();
    }
    assert!(!still_mounted, "the mount outlived chute mount\n{log}");
    if !ready {
        // Mounting itself failed (the listing's retries ran out): a clean error.
        assert_eq!(
            code,
            Some(3),
            "chute mount neither mounted nor failed cleanly\n{log}"
        );
        assert!(names_an_object(&log), "the error names no object:\n{log}");
        return (Outcome::CleanError, peak.max(peak_live));
    }
    assert_eq!(
        code,
        Some(0),
        "chute mount did not stop cleanly on SIGTERM\n{log}"
    );
    for key in &failed {
        assert!(
            log.contains(key.as_str()),
            "the log does not name {key}, which failed:\n{log}"
        );
    }
    let outcome = if failed.is_empty() {
        Outcome::Exact
    } else {
        Outcome::CleanError
    };
    (outcome, peak.max(peak_live))
}

#[test]
fn every_mode_survives_seeded_faults() {
    let mount_ok = chute_testkit::need::fuse("tests/soak.rs mount runs");
    let seed = std::env::var("CHUTE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x50a6_u64);
    let budget = Duration::from_secs(
        std::env::var("CHUTE_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let srv = Serve::start();
    let data = Dataset::put(&srv, seed);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("serve address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    let endpoint = proxy.endpoint_url();

    let mut modes = vec![Mode::Download, Mode::Pipe];
    if mount_ok {
        modes.push(Mode::Mount);
    }
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut runs = 0;
    // Every mode runs at least once, however slow the machine.
    while runs < MAX_RUNS && (runs < modes.len() || start.elapsed() < budget) {
        let mode = modes[runs % modes.len()];
        let faults = schedule(&mut rng, &proxy, &data);
        let run_start = Instant::now();
        let (outcome, peak) = match mode {
            Mode::Download => run_download(&endpoint, &data, &mut tally),
            Mode::Pipe => run_pipe(&endpoint, &data, &mut tally),
            Mode::Mount => run_mount(&endpoint, &data, &mut tally),
        };
        proxy.clear();
        eprintln!(
            "soak run {runs} {}: {} in {:.1}s, peak RSS {:.1} MiB; faults: {faults}",
            mode_name(mode),
            match outcome {
                Outcome::Exact => "byte-exact",
                Outcome::CleanError => "clean error",
            },
            run_start.elapsed().as_secs_f64(),
            peak as f64 / MIB as f64,
        );
        assert!(
            peak <= memory_bound(mode),
            "{} run {runs}: peak RSS {peak} bytes is over the bound {}",
            mode_name(mode),
            memory_bound(mode)
        );
        tally.record(mode, &outcome, peak);
        runs += 1;
    }

    let stats = proxy.stats();
    let f = stats.faults;
    eprintln!(
        "soak summary (seed {seed:#x}, {:.0}s, dataset {} objects / {} bytes): {runs} runs; \
         faults injected {} (503 {}, status {}, reset {}, cut body {}, stall {}, trickle {}) \
         over {} requests; runs byte-exact / clean error: {}; bytes checked {}; peak RSS MiB: {}",
        start.elapsed().as_secs_f64(),
        data.objects.len(),
        data.total(),
        f.total(),
        f.service_unavailable,
        f.status,
        f.reset,
        f.cut_body,
        f.stall,
        f.trickle,
        stats.requests,
        tally
            .runs
            .iter()
            .map(|(m, (ok, err))| format!("{m} {ok}/{err}"))
            .collect::<Vec<_>>()
            .join(", "),
        tally.bytes_checked,
        tally
            .peak_rss
            .iter()
            .map(|(m, p)| format!("{m} {:.1}", *p as f64 / MIB as f64))
            .collect::<Vec<_>>()
            .join(", "),
    );
    assert!(f.total() > 0, "no fault was injected");
    let exact: u32 = tally.runs.values().map(|(ok, _)| ok).sum();
    assert!(exact > 0, "no run survived its faults");
}
