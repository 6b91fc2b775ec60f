//! `chute download` end to end: a real `chute serve` child, the real binary, a
//! real file system (and size-limited tmpfs mounts), every file compared by
//! SHA-256 with its source.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// Every regular file under `root` (hidden ones included) as relative path →
/// (size, SHA-256). Anything that is not a file or directory fails the test.
fn tree(root: &Path) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(path);
            } else {
                assert!(ft.is_file(), "unexpected entry {}", path.display());
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                let data = std::fs::read(&path).expect("read");
                out.insert(rel, (data.len() as u64, sha256(&data)));
            }
        }
    }
    out
}

/// Objects with nested prefixes, empty objects and awkward names; returns their
/// keys relative to `prefix`.
fn put_tree(srv: &Serve, prefix: &str, seed: u64) -> Vec<String> {
    let mut rels = Vec::new();
    let names = [
        "a b.bin",
        "plus+1.bin",
        "50%.bin",
        "k=v&x.bin",
        "#1.bin",
        "ñandú ü.bin",
        "empty.bin",
        "semi;colon,comma.bin",
    ];
    for i in 0..48usize {
        let name = names[i % names.len()];
        let rel = format!("d{}/sub{}/{i}-{name}", i % 4, i % 3);
        let size = match (name, i % 5) {
            ("empty.bin", _) => 0,
            (_, 0) => 3 * MIB + i * 1000,
            (_, 1) => 1 + i,
            _ => 10_000 + i * 4_099,
        };
        srv.put(&format!("{prefix}{rel}"), &pattern(size, seed + i as u64));
        rels.push(rel);
    }
    srv.put(&format!("{prefix}top-level.txt"), b"hello\n");
    srv.put(&format!("{prefix}zero"), b"");
    rels.push("top-level.txt".into());
    rels.push("zero".into());
    rels
}

fn s3(prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}")
}

fn download(srv: &Serve, source: &str, dest: &Path) -> Command {
    let mut cmd = srv.chute("download");
    cmd.arg(source).arg(dest);
    cmd
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// The one error line of a failed run.
fn error_line(out: &Output) -> String {
    let err = stderr(out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("chute: error"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line in: {err}");
    errors[0].to_owned()
}

fn state_file(dest: &Path) -> PathBuf {
    let name = dest.file_name().expect("name").to_string_lossy();
    dest.with_file_name(format!(".{name}.chute-state"))
}

#[test]
fn tree_downloads_identical_with_a_300_mib_object() {
    let srv = Serve::start();
    put_tree(&srv, "set/", 1);
    srv.put("set/big/300mib.bin", &pattern(300 * MIB, 99));
    srv.put("set-not-mine/x.bin", b"outside the prefix");
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("train");
    let out = run(&mut download(&srv, &s3("set/"), &dest));
    let err = ok(&out);
    let want = tree(&srv.path_of("set"));
    assert_eq!(want.len(), 51);
    assert_eq!(
        tree(&dest),
        want,
        "names, sizes and SHA-256 match the source"
    );
    let summary = err.lines().last().unwrap_or_default();
    assert!(
        summary.contains("downloaded 51 objects")
            && summary.contains("MB/s")
            && summary.contains("skipped 0 already complete, 0 unsafe keys"),
        "{summary}"
    );
    // The resume state lives beside DEST, not in it; no temporary files remain.
    assert!(state_file(&dest).is_file());
    assert!(!dest.join(".chute-tmp").exists());
    let names: Vec<String> = std::fs::read_dir(work.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn killed_mid_download_then_rerun_completes_and_second_rerun_fetches_nothing() {
    let srv = Serve::start();
    let rels = put_tree(&srv, "k/", 7);
    srv.put("k/zz-big.bin", &pattern(300 * MIB, 5));
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    let big_tmp_size = 300 * MIB as u64;
    // Slowed down (few requests, small parts) so that even a busy machine
    // sees the big object in flight.
    let mut child = download(&srv, &s3("k/"), &dest)
        .args(["--concurrency", "2", "--part-size-mib", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // The big object's temporary file is preallocated to its full size as its
    // transfer starts: kill the process while that file is in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught = false;
    while Instant::now() < deadline {
        let in_flight = std::fs::read_dir(dest.join(".chute-tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().map(|m| m.len()).ok() == Some(big_tmp_size));
        if in_flight {
            caught = true;
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(caught, "the 300 MiB object was never seen in flight");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(
        !dest.join("zz-big.bin").exists(),
        "the big file is not under its final name before it is complete"
    );
    assert!(dest.join(".chute-tmp").exists(), "the kill left leftovers");
    // Every file that is under its final name is whole.
    let want = tree(&srv.path_of("k"));
    for (rel, got) in tree(&dest) {
        if !rel.starts_with(".chute-tmp/") {
            assert_eq!(Some(&got), want.get(&rel), "{rel} is whole");
        }
    }

    let out = run(&mut download(&srv, &s3("k/"), &dest));
    let err = ok(&out);
    assert_eq!(tree(&dest), want, "the rerun completes the tree");
    assert!(err.contains("downloaded"), "{err}");

    let out = run(&mut download(&srv, &s3("k/"), &dest));
    let err = ok(&out);
    let summary = err.lines().last().unwrap_or_default().to_owned();
    assert!(
        summary.contains("nothing to download: 0 objects, 0 bytes")
            && summary.contains(&format!("skipped {} already complete", rels.len() + 1)),
        "{summary}"
    );
    assert_eq!(tree(&dest), want);

    // A file changed at the source (new ETag) is fetched again, alone.
    srv.put("k/top-level.txt", b"changed\n");
    let out = run(&mut download(&srv, &s3("k/"), &dest));
    let summary = ok(&out).lines().last().unwrap_or_default().to_owned();
    assert!(summary.contains("downloaded 1 objects"), "{summary}");
    assert_eq!(tree(&dest), tree(&srv.path_of("k")));
}

#[test]
fn three_shards_are_disjoint_and_cover_the_prefix() {
    let srv = Serve::start();
    put_tree(&srv, "s/", 3);
    let work = tempfile::tempdir().expect("tempdir");
    let want = tree(&srv.path_of("s"));
    let mut union = BTreeMap::new();
    for i in 0..3 {
        let dest = work.path().join(format!("host{i}"));
        let out = run(download(&srv, &s3("s/"), &dest).args([
            "--shard-index",
            &i.to_string(),
            "--shard-count",
            "3",
        ]));
        ok(&out);
        let got = tree(&dest);
        assert!(got.len() >= want.len() / 3, "shard {i}: {}", got.len());
        for (rel, v) in got {
            assert_eq!(Some(&v), want.get(&rel), "{rel}");
            assert!(
                union.insert(rel.clone(), v).is_none(),
                "{rel} in two shards"
            );
        }
    }
    assert_eq!(union, want);
}

#[test]
fn manifest_and_augmented_manifest_sources() {
    let srv = Serve::start();
    srv.put("m/x/1.bin", &pattern(2 * MIB + 3, 1));
    srv.put("m/x/2.bin", &pattern(1000, 2));
    srv.put("m/y/0.bin", b"");
    srv.put("m/y/not-named.bin", b"not in the manifest");
    srv.put(
        "manifests/m.json",
        format!(r#"[{{"prefix": "s3://{BUCKET}/m/"}}, "x/2.bin", "x/1.bin", "y/0.bin"]"#)
            .as_bytes(),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("manifest");
    let out = run(srv
        .chute("download")
        .args(["--manifest", &format!("s3://{BUCKET}/manifests/m.json")])
        .arg(&dest));
    ok(&out);
    let src = tree(&srv.path_of("m"));
    let got = tree(&dest);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["x/1.bin", "x/2.bin", "y/0.bin"]
    );
    for (rel, v) in &got {
        assert_eq!(Some(v), src.get(rel), "{rel}");
    }

    srv.put(
        "manifests/aug.jsonl",
        format!(
            "{{\"source-ref\": \"s3://{BUCKET}/m/x/1.bin\", \"label\": 1}}\n\
             {{\"source-ref\": \"s3://{BUCKET}/m/y/0.bin\", \"label\": 0}}\n"
        )
        .as_bytes(),
    );
    let dest = work.path().join("augmented");
    let out = run(srv
        .chute("download")
        .args([
            "--augmented-manifest",
            &format!("s3://{BUCKET}/manifests/aug.jsonl"),
            "--attribute-names",
            "source-ref,label",
        ])
        .arg(&dest));
    ok(&out);
    let got = tree(&dest);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["m/x/1.bin", "m/y/0.bin"]
    );
    assert_eq!(got["m/x/1.bin"], src["x/1.bin"]);
    assert_eq!(got["m/y/0.bin"], src["y/0.bin"]);
}

#[test]
fn unsafe_keys_never_leave_dest() {
    let srv = Serve::start();
    srv.put("ok/a.bin", &pattern(5000, 1));
    // s3s-fs cannot store such keys; a manifest can still name them.
    srv.put(
        "manifests/evil.jsonl",
        format!(
            "{{\"source-ref\": \"s3://{BUCKET}/ok/a.bin\"}}\n\
             {{\"source-ref\": \"s3://{BUCKET}/../../etc/x\"}}\n\
             {{\"source-ref\": \"s3://{BUCKET}/ok/../../../x\"}}\n\
             {{\"source-ref\": \"s3://{BUCKET}//abs\"}}\n"
        )
        .as_bytes(),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("a").join("b").join("dest");
    let out = run(srv
        .chute("download")
        .args([
            "--augmented-manifest",
            &format!("s3://{BUCKET}/manifests/evil.jsonl"),
            "--attribute-names",
            "source-ref",
        ])
        .arg(&dest));
    let err = ok(&out);
    assert!(
        err.contains("../../etc/x"),
        "the warning names the key: {err}"
    );
    let summary = err.lines().last().unwrap_or_default();
    assert!(
        summary.contains("downloaded 1 objects") && summary.contains("3 unsafe keys"),
        "{summary}"
    );
    // Only DEST's file and the state file exist anywhere in the work tree.
    let all = tree(work.path());
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        ["a/b/.dest.chute-state", "a/b/dest/ok/a.bin"]
    );
}

#[test]
fn bad_destinations_and_sources_exit_with_the_documented_codes() {
    let srv = Serve::start();
    srv.put("p/a.bin", b"abc");
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = run(&mut download(&srv, &s3("p/"), &file));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("a-file"));

    let out = run(chute()
        .args(["download", "s3://data/p/"])
        .arg(work.path().join("d"))
        .arg("--endpoint-url")
        .arg(format!("http://127.0.0.1:{}", dead_port())));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let out = run(srv.chute("download").arg(work.path().join("d")));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("SOURCE and DEST"));
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop; `None`
/// when this environment does not allow mounting.
struct Tmpfs {
    _parent: tempfile::TempDir,
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs {
                _parent: parent,
                dir,
            }),
            _ => {
                eprintln!("note: cannot mount a tmpfs here (not root?); skipping this test");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn too_small_destination_is_refused_up_front_with_both_numbers() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let srv = Serve::start();
    for i in 0..6 {
        srv.put(&format!("big/{i}.bin"), &pattern(2 * MIB, i));
    }
    let dest = fs.dir.join("dest");
    let out = run(&mut download(&srv, &s3("big/"), &dest));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    let needed = 12 * MIB;
    assert!(
        line.contains(&format!("({needed} bytes)")) && line.contains("free"),
        "{line}"
    );
    let free = nix_free(&fs.dir);
    assert!(line.contains(&format!("({free} bytes)")), "{line} / {free}");
    assert!(!dest.exists(), "a refused download creates nothing");
    assert!(tree(&fs.dir).is_empty(), "not even the resume state");
}

/// Free bytes of a file system as `df` reports them.
fn nix_free(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .expect("stat -f");
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("number"));
    it.next().expect("blocks") * it.next().expect("block size")
}

#[test]
fn destination_filling_up_midway_leaves_no_partial_file() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let srv = Serve::start();
    // Small objects (one write), a medium one streamed, and large ones in
    // parts: together twice what the file system holds.
    for i in 0..12 {
        srv.put(&format!("fill/small-{i:02}.bin"), &pattern(300_000, i));
    }
    srv.put("fill/medium.bin", &pattern(MIB + MIB / 2, 50));
    for i in 0..3 {
        srv.put(&format!("fill/large-{i}.bin"), &pattern(4 * MIB, 60 + i));
    }
    let dest = fs.dir.join("dest");
    let out = run(download(&srv, &s3("fill/"), &dest).args([
        "--no-space-check",
        "--part-size-mib",
        "1",
        "--concurrency",
        "4",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(line.contains("is full"), "{line}");
    let src = tree(&srv.path_of("fill"));
    let got = tree(&dest);
    assert!(got.len() < src.len(), "some objects did not fit");
    for (rel, v) in &got {
        assert!(!rel.starts_with(".chute-tmp"), "temporary file left: {rel}");
        assert_eq!(Some(v), src.get(rel), "{rel} under its final name is whole");
    }
    assert!(!dest.join(".chute-tmp").exists());
}

#[test]
fn faults_through_the_proxy_still_give_an_identical_tree() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};

    let srv = Serve::start();
    put_tree(&srv, "f/", 11);
    srv.put("f/big/9mib.bin", &pattern(9 * MIB + 17, 3));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    proxy.push(
        FaultRule::new(FaultKind::ServiceUnavailable)
            .method("GET")
            .path_contains("/f/")
            .times(25),
    );
    proxy.push(
        FaultRule::new(FaultKind::CutBody {
            after_body_bytes: 100_000,
        })
        .method("GET")
        .times(10),
    );
    proxy.push(FaultRule::new(FaultKind::Reset).method("GET").times(3));
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    let out = run(chute().args(["download", &s3("f/")]).arg(&dest).args([
        "--endpoint-url",
        &proxy.endpoint_url(),
        "--part-size-mib",
        "1",
    ]));
    let err = ok(&out);
    assert_eq!(tree(&dest), tree(&srv.path_of("f")));
    let faults = proxy.stats().faults;
    assert_eq!(faults.service_unavailable, 25);
    assert_eq!(faults.cut_body, 10);
    assert!(faults.reset >= 1);
    let summary = err.lines().last().unwrap_or_default();
    assert!(summary.contains("retries"), "{summary}");
}

#[test]
fn a_second_download_into_the_same_dest_fails_at_once_naming_the_first() {
    use chute_testkit::proxy::{FaultKind, FaultProxy, FaultRule};

    let srv = Serve::start();
    srv.put("two/a.bin", &pattern(2 * MIB, 1));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = srv
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let proxy = rt.block_on(FaultProxy::start(upstream)).expect("proxy");
    // The first download's GETs hang, so it is still running when the second
    // one starts.
    proxy.push(
        FaultRule::new(FaultKind::Stall {
            after_body_bytes: 0,
            duration: Duration::from_secs(60),
        })
        .method("GET")
        .path_contains("/two/a.bin")
        .times(1000),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    let mut first = chute()
        .args(["download", &s3("two/")])
        .arg(&dest)
        .args(["--endpoint-url", &proxy.endpoint_url(), "--no-resume"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dest.join(".chute-tmp").exists() {
        assert!(
            Instant::now() < deadline,
            "the first download never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = run(download(&srv, &s3("two/"), &dest).arg("--no-resume"));
    let took = started.elapsed();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(first.id().to_string())
        .status();
    let _ = first.wait();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(line.contains(&dest.display().to_string()), "{line}");
    assert!(line.contains(&format!("pid {}", first.id())), "{line}");
    assert!(
        took < Duration::from_secs(30),
        "refused at once, took {took:?}"
    );
    assert!(!dest.join("a.bin").exists());
}

#[test]
fn a_bad_destination_is_refused_without_creating_anything() {
    let srv = Serve::start();
    srv.put("bad/link/a.bin", b"abc");
    let work = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), dest.join("link")).expect("symlink");
    let out = run(&mut download(&srv, &s3("bad/"), &dest));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        error_line(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(work.path()), ["dest"], "no resume state left behind");
    assert_eq!(names(&dest), ["link"]);
    assert!(names(outside.path()).is_empty());
}
