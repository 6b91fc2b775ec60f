//! End-to-end tests of `chute pipe`: the real binary streaming from a real
//! `chute serve` into real FIFOs, read as a training script reads them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CHANNEL: &str = "train";
const MIB: usize = 1 << 20;

/// A running `chute pipe`, its FIFO directory and its log.
struct Pipe {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Pipe {
    fn start(mut cmd: Command) -> Pipe {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().with_extension("log");
        let logf = std::fs::File::create(&log).expect("log file");
        cmd.args(["--channel", CHANNEL])
            .arg("--dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        let child = cmd.spawn().expect("spawn chute pipe");
        Pipe { child, dir, log }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn fifo(&self, epoch: u64) -> PathBuf {
        self.data_dir().join(format!("{CHANNEL}_{epoch}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the epoch's FIFO, as a training script polling for it would.
    fn wait_fifo(&mut self, epoch: u64) -> PathBuf {
        let path = self.fifo(epoch);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chute pipe exited ({status}) before {} appeared:\n{}",
                    path.display(),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} never appeared:\n{}",
                path.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        path
    }

    fn read_epoch(&mut self, epoch: u64) -> Vec<u8> {
        let path = self.wait_fifo(epoch);
        read_all(&path)
    }

    /// Waits for the process to end by itself.
    fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chute pipe did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.finish()
    }

    fn fifos_left(&self) -> Vec<String> {
        match std::fs::read_dir(self.data_dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("read FIFO");
    out
}

/// `chute pipe` against `srv` with these arguments.
fn pipe(srv: &Serve, args: &[&str]) -> Pipe {
    let mut cmd = srv.chute("pipe");
    cmd.args(args).env_remove("AWS_CA_BUNDLE");
    Pipe::start(cmd)
}

/// Writes objects under `prefix`; returns them by key (bytewise order).
fn put_all(srv: &Serve, prefix: &str, objects: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    objects
        .iter()
        .map(|(name, data)| {
            let key = format!("{prefix}{name}");
            srv.put(&key, data);
            (key, data.clone())
        })
        .collect()
}

fn concat<'a>(parts: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    parts.into_iter().flatten().copied().collect()
}

/// Parses RecordIO into payloads (continuation parts joined); panics on any
/// layout error.
fn parse_recordio(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut parts: Option<Vec<u8>> = None;
    while !data.is_empty() {
        assert!(data.len() >= 8, "truncated header");
        let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
        assert_eq!(magic, 0xced7_230a, "bad magic");
        let word = u32::from_le_bytes(data[4..8].try_into().unwrap());
        let (flag, len) = (word >> 29, (word & 0x1fff_ffff) as usize);
        let padded = len + (4 - len % 4) % 4;
        assert!(data.len() >= 8 + padded, "truncated payload");
        assert!(data[8 + len..8 + padded].iter().all(|&b| b == 0), "padding");
        let payload = &data[8..8 + len];
        match flag {
            0 => out.push(payload.to_vec()),
            1 => parts = Some(payload.to_vec()),
            2 => parts.as_mut().expect("middle").extend_from_slice(payload),
            3 => {
                let mut whole = parts.take().expect("end");
                whole.extend_from_slice(payload);
                out.push(whole);
            }
            f => panic!("bad flag {f}"),
        }
        data = &data[8 + padded..];
    }
    assert!(parts.is_none());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&input).expect("feed gzip");
    });
    let out = child.wait_with_output().expect("gzip output");
    feeder.join().expect("feeder");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn epochs_are_the_objects_in_plan_order_with_eof_between() {
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "ds/",
        &[
            ("b/nested/two.bin", pattern(300_000, 2)),
            ("a-first.bin", pattern(1_000, 1)),
            ("empty.bin", Vec::new()),
            ("large.bin", pattern(20 * MIB + 123, 3)),
            ("z/last.bin", pattern(4_097, 4)),
            ("c.bin", pattern(7, 5)),
        ],
    );
    let want = concat(objects.values());
    let mut p = pipe(&srv, &["s3://data/ds/", "--epochs", "3"]);
    for epoch in 0..3 {
        let path = p.wait_fifo(epoch);
        let meta = std::fs::metadata(&path).expect("stat FIFO");
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(
            !p.fifo(epoch + 1).exists(),
            "the next epoch's FIFO appeared before this one was read"
        );
        let got = read_all(&path);
        assert_eq!(got.len(), want.len(), "epoch {epoch}");
        assert_eq!(sha256(&got), sha256(&want), "epoch {epoch}");
    }
    let status = p.finish();
    assert!(status.success(), "{status}\n{}", p.log());
    assert!(
        p.fifos_left().is_empty(),
        "left behind: {:?}",
        p.fifos_left()
    );
    let log = p.log();
    assert!(log.contains("epoch 2 done"), "{log}");
}

#[test]
fn empty_channel_gives_empty_epochs() {
    let srv = Serve::start();
    srv.put("other/x", b"not in the channel");
    let mut p = pipe(&srv, &["s3://data/nothing/", "--epochs", "2"]);
    assert!(p.read_epoch(0).is_empty());
    assert!(p.read_epoch(1).is_empty());
    assert!(p.finish().success(), "{}", p.log());
}

#[test]
fn recordio_round_trips_in_rust_and_python() {
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "rec/",
        &[
            ("0-empty", Vec::new()),
            ("1-one", vec![0xce]),
            ("2-odd", pattern(4_099, 6)),
            // Longer than a fetch part (4 MiB, below): arrives as several parts.
            ("3-big", pattern(9 * MIB + 1, 7)),
            // Holds the magic number itself, which must not confuse a reader.
            ("4-magic", [0x0a, 0x23, 0xd7, 0xce].repeat(100)),
            ("5-four", pattern(4, 8)),
        ],
    );
    let mut p = pipe(
        &srv,
        &[
            "s3://data/rec/",
            "--epochs",
            "2",
            "--record-wrapper",
            "recordio",
            "--part-size-mib",
            "4",
        ],
    );
    let epoch0 = parse_recordio(&p.read_epoch(0));
    assert_eq!(epoch0.len(), objects.len());
    for (got, want) in epoch0.iter().zip(objects.values()) {
        assert_eq!(sha256(got), sha256(want));
    }
    // Epoch 1 is read by a Python training script.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipe_reader.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(p.data_dir().join(CHANNEL))
        .args(["2", "1"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = objects
        .values()
        .enumerate()
        .map(|(i, d)| format!("1 {i} {} {}", d.len(), sha256(d)))
        .collect();
    assert_eq!(lines, want);
    assert!(p.finish().success(), "{}", p.log());
}

#[test]
fn python_reader_reads_every_epoch() {
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "py/",
        &[
            ("a", pattern(10_000, 1)),
            ("b", Vec::new()),
            ("c", pattern(3, 2)),
        ],
    );
    let p = pipe(
        &srv,
        &[
            "s3://data/py/",
            "--epochs",
            "2",
            "--record-wrapper",
            "RecordIO",
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipe_reader.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(p.data_dir().join(CHANNEL))
        .arg("2")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: String = (0..2)
        .flat_map(|e| {
            objects
                .values()
                .enumerate()
                .map(move |(i, d)| format!("{e} {i} {} {}\n", d.len(), sha256(d)))
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

/// Which objects (by content) a RecordIO stream carried, in order.
fn order_of(stream: &[u8], by_hash: &BTreeMap<String, String>) -> Vec<String> {
    parse_recordio(stream)
        .iter()
        .map(|p| by_hash.get(&sha256(p)).cloned().expect("unknown record"))
        .collect()
}

#[test]
fn shuffle_is_reproducible_differs_per_epoch_and_shards_partition() {
    let srv = Serve::start();
    let names: Vec<String> = (0..40).map(|i| format!("s/{i:03}.bin")).collect();
    let mut by_hash = BTreeMap::new();
    for (i, key) in names.iter().enumerate() {
        let data = pattern(1_000 + i * 37, 100 + i as u64);
        by_hash.insert(sha256(&data), key.clone());
        srv.put(key, &data);
    }
    let base = [
        "s3://data/s/",
        "--epochs",
        "2",
        "--record-wrapper",
        "recordio",
        "--shuffle-seed",
        "7",
    ];
    // Two full runs and three hosts, all at once.
    let mut runs: Vec<Pipe> = (0..2).map(|_| pipe(&srv, &base)).collect();
    let mut hosts: Vec<Pipe> = (0..3)
        .map(|i| {
            let index = i.to_string();
            let mut args = base.to_vec();
            args.extend(["--shard-index", &index, "--shard-count", "3"]);
            pipe(&srv, &args)
        })
        .collect();
    let mut orders = Vec::new();
    for p in &mut runs {
        let e0 = order_of(&p.read_epoch(0), &by_hash);
        let e1 = order_of(&p.read_epoch(1), &by_hash);
        orders.push((e0, e1));
        assert!(p.finish().success(), "{}", p.log());
    }
    assert_eq!(orders[0], orders[1], "same seed, different order");
    let (e0, e1) = &orders[0];
    assert_ne!(e0, e1, "epochs 0 and 1 have the same order");
    let sorted: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(e0.iter().cloned().collect::<BTreeSet<_>>(), sorted);
    assert_eq!(e0.len(), names.len());
    // The order is the documented permutation of the key-sorted list.
    let perm = chute_plan::permutation(names.len(), 7, 1);
    let expected: Vec<String> = perm.iter().map(|&i| names[i].clone()).collect();
    assert_eq!(e1, &expected);

    for epoch in 0..2 {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for (i, h) in hosts.iter_mut().enumerate() {
            let got = order_of(&h.read_epoch(epoch), &by_hash);
            assert!(!got.is_empty(), "host {i} got nothing");
            total += got.len();
            seen.extend(got);
        }
        assert_eq!(total, names.len(), "epoch {epoch}: shards overlap");
        assert_eq!(
            seen, sorted,
            "epoch {epoch}: shards do not cover the dataset"
        );
    }
    for h in &mut hosts {
        assert!(h.finish().success(), "{}", h.log());
    }
}

#[test]
fn gunzip_streams_decompressed_objects() {
    let srv = Serve::start();
    let plain: Vec<Vec<u8>> = vec![
        pattern(2 * MIB + 5, 11),
        b"hello, training\n".repeat(10_000),
        pattern(100, 12),
    ];
    srv.put("gz/a.gz", &gzip(&plain[0]));
    srv.put("gz/b.gz", &gzip(&plain[1]));
    // Two gzip members back to back, as `cat x.gz y.gz` makes: one object.
    let mut multi = gzip(&plain[2][..40]);
    multi.extend(gzip(&plain[2][40..]));
    srv.put("gz/c.gz", &multi);
    let want = concat(&plain);

    let mut p = pipe(&srv, &["s3://data/gz/", "--epochs", "1", "--gunzip"]);
    assert_eq!(sha256(&p.read_epoch(0)), sha256(&want));
    assert!(p.finish().success(), "{}", p.log());

    let mut p = pipe(
        &srv,
        &[
            "s3://data/gz/",
            "--epochs",
            "1",
            "--gunzip",
            "--record-wrapper",
            "recordio",
        ],
    );
    let records = parse_recordio(&p.read_epoch(0));
    assert_eq!(records, plain);
    assert!(p.finish().success(), "{}", p.log());

    // An object that is not gzip: the epoch fails naming it, exit 2.
    srv.put("gz/d-not-gzip", b"plain text, not gzip");
    let mut p = pipe(&srv, &["s3://data/gz/", "--epochs", "2", "--gunzip"]);
    let got = p.read_epoch(0);
    assert_eq!(
        sha256(&got),
        sha256(&want),
        "the objects before it arrive whole"
    );
    let status = p.finish();
    assert_eq!(status.code(), Some(2), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("s3://data/gz/d-not-gzip") && log.contains("not valid gzip"),
        "{log}"
    );
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());
}

#[test]
fn augmented_manifest_streams_refs_and_values() {
    let srv = Serve::start();
    let imgs: Vec<Vec<u8>> = (0..4)
        .map(|i| pattern(5_000 + i * 999, 50 + i as u64))
        .collect();
    let mut lines = String::new();
    let mut want_records: Vec<Vec<u8>> = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        let key = format!("aug/img-{i}.bin");
        srv.put(&key, img);
        let label = match i {
            0 => "3".to_owned(),
            1 => r#"{"z":1,"a":[1,2]}"#.to_owned(),
            2 => r#""cat""#.to_owned(),
            _ => "0.5".to_owned(),
        };
        lines.push_str(&format!(
            "{{\"source-ref\": \"s3://data/{key}\", \"label\": {label}, \"ignored\": true}}\n"
        ));
        want_records.push(img.clone());
        // Values are compact JSON with sorted keys.
        let compact = if i == 1 {
            r#"{"a":[1,2],"z":1}"#.to_owned()
        } else {
            label
        };
        want_records.push(compact.into_bytes());
    }
    srv.put("manifests/train.jsonl", lines.as_bytes());
    let args = [
        "--augmented-manifest",
        "s3://data/manifests/train.jsonl",
        "--attribute-names",
        "source-ref,label",
        "--epochs",
        "1",
    ];
    let mut p = pipe(&srv, &args);
    assert_eq!(sha256(&p.read_epoch(0)), sha256(&concat(&want_records)));
    assert!(p.finish().success(), "{}", p.log());

    let mut with_rec = args.to_vec();
    with_rec.extend(["--record-wrapper", "recordio"]);
    let mut p = pipe(&srv, &with_rec);
    assert_eq!(parse_recordio(&p.read_epoch(0)), want_records);
    assert!(p.finish().success(), "{}", p.log());
}

#[test]
fn reader_closing_early_ends_the_epoch_and_the_next_follows() {
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "early/",
        &[
            ("a", pattern(6 * MIB, 21)),
            ("b", pattern(6 * MIB, 22)),
            ("c", pattern(6 * MIB, 23)),
        ],
    );
    let want = concat(objects.values());
    let mut p = pipe(&srv, &["s3://data/early/", "--epochs", "2"]);
    {
        let path = p.wait_fifo(0);
        let mut f = std::fs::File::open(&path).expect("open");
        let mut buf = vec![0u8; MIB];
        f.read_exact(&mut buf).expect("read 1 MiB");
        assert_eq!(buf[..], want[..MIB]);
    }
    let got = p.read_epoch(1);
    assert_eq!(sha256(&got), sha256(&want));
    let status = p.finish();
    assert!(status.success(), "{status}\n{}", p.log());
    let log = p.log();
    assert!(
        log.contains("closed") && log.contains("early") && log.contains("train_1 is next"),
        "{log}"
    );
}

#[test]
fn s3_faults_mid_stream_are_retried_byte_exact() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
    let srv = Serve::start();
    let objects = put_all(
        &srv,
        "faults/",
        &[
            ("a", pattern(3 * MIB, 31)),
            ("b", pattern(12 * MIB + 17, 32)),
            ("c", pattern(1_000, 33)),
        ],
    );
    let want = concat(objects.values());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream: std::net::SocketAddr = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    for rule in [
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 100_000,
        })
        .method("GET")
        .path_contains("faults/b")
        .times(3),
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .path_contains("faults/a")
            .times(2),
        FaultRule::new(FaultKind::Reset)
            .method("GET")
            .path_contains("faults/c")
            .times(1),
    ] {
        proxy.push(rule);
    }
    let mut cmd = chute();
    cmd.args(["pipe", "s3://data/faults/", "--epochs", "1"])
        .args(["--endpoint-url", &proxy.endpoint_url()]);
    let mut p = Pipe::start(cmd);
    assert_eq!(sha256(&p.read_epoch(0)), sha256(&want));
    assert!(p.finish().success(), "{}", p.log());
    assert!(proxy.stats().faults.total() >= 6, "{:?}", proxy.stats());
}

#[test]
fn missing_object_fails_the_epoch_naming_its_key() {
    let srv = Serve::start();
    let a = pattern(8 * MIB, 41);
    srv.put("m/a.bin", &a);
    srv.put("m/b.bin", &pattern(1_000, 42));
    srv.put(
        "manifests/m.json",
        br#"[{"prefix": "s3://data/m/"}, "a.bin", "b.bin"]"#,
    );
    // A small budget keeps the read-ahead from reaching b.bin before it is gone.
    let mut p = pipe(
        &srv,
        &[
            "--manifest",
            "s3://data/manifests/m.json",
            "--epochs",
            "2",
            "--max-memory",
            "1M",
        ],
    );
    let path = p.wait_fifo(0);
    std::fs::remove_file(srv.path_of("m/b.bin")).expect("delete b.bin");
    let got = read_all(&path);
    assert_eq!(sha256(&got), sha256(&a), "the reader gets a.bin, then EOF");
    let status = p.finish();
    assert_eq!(status.code(), Some(3), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("s3://data/m/b.bin") && log.contains("epoch 0 failed"),
        "{log}"
    );
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());

    // Missing before the start: found while planning, before any FIFO exists.
    let mut p = pipe(&srv, &["--manifest", "s3://data/manifests/m.json"]);
    let status = p.finish();
    assert_eq!(status.code(), Some(3), "{}", p.log());
    assert!(p.log().contains("m/b.bin"), "{}", p.log());
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());
}

#[test]
fn stop_removes_fifos_without_hanging_anyone() {
    let srv = Serve::start();
    srv.put("stop/a", &pattern(16 * MIB, 61));

    // No reader: chute waits quietly (one log line), and SIGTERM removes NAME_0.
    let mut p = pipe(&srv, &["s3://data/stop/"]);
    p.wait_fifo(0);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let status = p.terminate();
    assert!(status.success(), "{status}\n{}", p.log());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());
    assert_eq!(
        p.log().matches("waiting for a reader").count(),
        1,
        "{}",
        p.log()
    );

    // A reader that opened but stopped reading: chute is blocked writing to a
    // full pipe, and still stops at once; the reader drains and sees EOF.
    let mut p = pipe(&srv, &["s3://data/stop/"]);
    let path = p.wait_fifo(0);
    let mut f = std::fs::File::open(&path).expect("open");
    let mut first = vec![0u8; 4096];
    f.read_exact(&mut first).expect("first bytes");
    std::thread::sleep(Duration::from_millis(300));
    let status = p.terminate();
    assert!(status.success(), "{status}\n{}", p.log());
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).expect("drain to EOF");
    assert!(rest.len() < 16 * MIB);
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());
}

#[test]
fn bad_input_is_a_clear_usage_error() {
    let srv = Serve::start();
    let mut cmd = srv.chute("pipe");
    cmd.args(["s3://data/x/", "--dir", "/tmp", "--channel", "../escape"]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid channel name"),
        "{}",
        stderr(&out)
    );

    let mut cmd = srv.chute("pipe");
    cmd.args(["s3://data/x/", "--dir", "/tmp", "--channel", "t"])
        .args(["--max-memory", "lots"]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-memory"), "{}", stderr(&out));
}

/// Runs `pipe_reader.py --splice|--tee` on one epoch of many 100 KiB objects
/// streamed with a 2 MiB budget (so chute's buffers are freed and reused all the
/// time) and checks every byte that reached the reader's second pipe.
fn zero_copy_reader_gets_exact_bytes(how: &str) {
    let srv = Serve::start();
    let objects: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("{i:04}"), pattern(100 << 10, 900 + i as u64)))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = objects
        .iter()
        .map(|(k, d)| (k.as_str(), d.clone()))
        .collect();
    let objects = put_all(&srv, "zc/", &named);
    let want = concat(objects.values());
    let p = pipe(
        &srv,
        &["s3://data/zc/", "--epochs", "1", "--max-memory", "2M"],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipe_reader.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("--{how}"))
        .arg(p.data_dir().join(CHANNEL))
        .arg("1")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python {how} reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("0 {} {}", want.len(), sha256(&want)),
        "the {how} reader saw other bytes than the objects'"
    );
}

#[test]
fn splice_reader_gets_exact_bytes() {
    zero_copy_reader_gets_exact_bytes("splice");
}

#[test]
fn tee_reader_gets_exact_bytes() {
    zero_copy_reader_gets_exact_bytes("tee");
}

#[test]
fn an_object_failing_mid_stream_is_withheld_and_the_epoch_fails() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};
    let srv = Serve::start();
    let a = pattern(MIB + 3, 71);
    srv.put("fail/a", &a);
    srv.put("fail/b", &pattern(3 * MIB, 72));
    srv.put("fail/c", &pattern(1_000, 73));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream: std::net::SocketAddr = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("endpoint address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    // b's body is cut after 1 MiB, and the GET that would resume it is refused:
    // the object fails after part of it has arrived.
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: MIB as u64,
        })
        .method("GET")
        .path_contains("fail/b")
        .times(1),
    );
    proxy.push(
        FaultRule::new(FaultKind::Status {
            status: 403,
            code: "AccessDenied".into(),
        })
        .method("GET")
        .path_contains("fail/b")
        .times(1_000),
    );
    let mut cmd = chute();
    cmd.args(["pipe", "s3://data/fail/", "--epochs", "2"])
        .args(["--max-memory", "64M"])
        .args(["--endpoint-url", &proxy.endpoint_url()]);
    let mut p = Pipe::start(cmd);
    let got = p.read_epoch(0);
    assert_eq!(
        got.len(),
        a.len(),
        "the reader must get a whole and nothing of b:\n{}",
        p.log()
    );
    assert_eq!(sha256(&got), sha256(&a));
    let status = p.finish();
    assert_eq!(status.code(), Some(3), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("s3://data/fail/b") && log.contains("epoch 0 failed"),
        "{log}"
    );
    assert!(p.fifos_left().is_empty(), "{:?}", p.fifos_left());
}

/// Peak resident memory of a running process, from `/proc/PID/status`.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib << 10
}

#[test]
fn gunzip_recordio_memory_stays_within_the_budget() {
    let srv = Serve::start();
    // ~200 MiB that compresses to well under 1 MiB: one record after gunzip.
    let unit = pattern(4096, 81);
    let big: Vec<u8> = unit.repeat(50 * 1024);
    let small = pattern(5_000, 82);
    srv.put("gzmem/a.gz", &gzip(&big));
    srv.put("gzmem/b.gz", &gzip(&small));
    let mut p = pipe(
        &srv,
        &[
            "s3://data/gzmem/",
            "--epochs",
            "2",
            "--gunzip",
            "--record-wrapper",
            "recordio",
            "--max-memory",
            "16M",
        ],
    );
    let records = parse_recordio(&p.read_epoch(0));
    assert_eq!(records.len(), 2, "{}", p.log());
    assert_eq!(records[0].len(), big.len());
    assert!(records[0] == big, "the decompressed record differs");
    assert_eq!(records[1], small);
    // Still running: waiting for epoch 1's reader.
    p.wait_fifo(1);
    let peak = peak_rss(p.child.id());
    assert!(
        peak < 96 << 20,
        "chute pipe peaked at {} MiB with --max-memory 16M",
        peak >> 20
    );
    drop(records);
    let again = parse_recordio(&p.read_epoch(1));
    assert!(again.len() == 2 && again[0] == big && again[1] == small);
    assert!(p.finish().success(), "{}", p.log());
}
