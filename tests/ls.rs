//! `chute ls` end to end: a real `chute serve` child, the real binary, its
//! stdout, stderr and exit codes.

mod common;

use std::collections::BTreeSet;

use common::*;

/// Keys of the shared dataset, with their sizes.
fn dataset(srv: &Serve) -> Vec<(String, usize)> {
    let mut keys = Vec::new();
    let names = [
        "a b.bin",
        "plus+1.bin",
        "50%.bin",
        "k=v.bin",
        "#1.bin",
        "ñandú.bin",
        "zero.bin",
    ];
    for i in 0..60usize {
        let name = names[i % names.len()];
        let key = format!("train/{:02}/{i}-{name}", i % 6);
        let size = if name == "zero.bin" { 0 } else { 1 + i * 37 };
        srv.put(&key, &pattern(size, i as u64));
        keys.push((key, size));
    }
    srv.put("train/README", b"hello");
    keys.push(("train/README".into(), 5));
    srv.put("trainx/not-mine.bin", b"outside the prefix");
    keys.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    keys
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

#[test]
fn ls_prints_every_object_with_its_size() {
    let srv = Serve::start();
    let keys = dataset(&srv);
    let out = run(srv.chute("ls").arg(format!("s3://{BUCKET}/train/")));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let want: Vec<String> = keys
        .iter()
        .map(|(k, s)| format!("{s}\t{}", k.strip_prefix("train/").expect("prefix")))
        .collect();
    assert_eq!(lines(&stdout(&out)), want);
    let total: usize = keys.iter().map(|k| k.1).sum();
    assert!(
        stderr(&out).contains(&format!("{} objects, {total} bytes", keys.len())),
        "summary: {}",
        stderr(&out)
    );

    // A prefix without a trailing slash is a partial name: paths start after
    // the last '/', so "train" gives "train/00/...".
    let out = run(srv.chute("ls").arg(format!("s3://{BUCKET}/tra")));
    assert_eq!(out.status.code(), Some(0));
    let got = lines(&stdout(&out));
    assert_eq!(got.len(), keys.len() + 1);
    assert!(got.iter().any(|l| l.ends_with("\ttrain/README")));
    assert!(got.iter().any(|l| l.ends_with("\ttrainx/not-mine.bin")));
}

#[test]
fn ls_local_directory_matches_s3() {
    let srv = Serve::start();
    dataset(&srv);
    let s3 = run(srv.chute("ls").arg(format!("s3://{BUCKET}/train/")));
    let dir = srv.path_of("train");
    let local = run(chute().arg("ls").arg(format!("file://{}", dir.display())));
    assert_eq!(local.status.code(), Some(0), "{}", stderr(&local));
    assert_eq!(stdout(&local), stdout(&s3));
}

#[test]
fn ls_shards_are_disjoint_and_cover_the_prefix() {
    let srv = Serve::start();
    let keys = dataset(&srv);
    let mut union = BTreeSet::new();
    let mut sizes = Vec::new();
    for i in 0..3 {
        let out = run(srv.chute("ls").arg(format!("s3://{BUCKET}/train/")).args([
            "--shard-index",
            &i.to_string(),
            "--shard-count",
            "3",
        ]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let shard = lines(&stdout(&out));
        sizes.push(shard.len());
        for l in shard {
            assert!(union.insert(l.clone()), "{l} is in two shards");
        }
    }
    assert_eq!(union.len(), keys.len());
    assert!(sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1);

    // The same shards from the environment (Slurm), with ShardedByS3Key.
    let mut from_env = BTreeSet::new();
    for (i, size) in sizes.iter().enumerate() {
        let out = run(srv
            .chute("ls")
            .arg(format!("s3://{BUCKET}/train/"))
            .args(["--distribution", "ShardedByS3Key"])
            .env("SLURM_NODEID", i.to_string())
            .env("SLURM_NNODES", "3"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let shard = lines(&stdout(&out));
        assert_eq!(shard.len(), *size);
        from_env.extend(shard);
    }
    assert_eq!(from_env, union);
}

#[test]
fn ls_manifest_lists_named_objects_and_skips_unsafe_entries() {
    let srv = Serve::start();
    dataset(&srv);
    srv.put("other/x/1.bin", &pattern(100, 1));
    srv.put("other/x/2.bin", &pattern(200, 2));
    let long = "n".repeat(300);
    let manifest = format!(
        r#"[{{"prefix": "s3://{BUCKET}/other/"}}, "x/2.bin", "x/1.bin", "x/./1.bin", "x/{long}"]"#
    );
    srv.put("manifests/m.json", manifest.as_bytes());
    let out = run(srv
        .chute("ls")
        .args(["--manifest", &format!("s3://{BUCKET}/manifests/m.json")]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Manifest order is plan order.
    assert_eq!(lines(&stdout(&out)), vec!["200\tx/2.bin", "100\tx/1.bin"]);
    let err = stderr(&out);
    assert!(
        err.contains("x/./1.bin"),
        "warning names the skipped key: {err}"
    );
    assert!(err.contains("2 keys skipped"), "{err}");

    // The same manifest from a local file.
    let local = srv.root.path().join("m.json");
    std::fs::write(&local, &manifest).expect("write");
    let out = run(srv
        .chute("ls")
        .args(["--manifest", &format!("file://{}", local.display())]));
    assert_eq!(lines(&stdout(&out)), vec!["200\tx/2.bin", "100\tx/1.bin"]);

    // Augmented manifest: the -ref attribute names the objects.
    let aug = format!(
        "{{\"source-ref\": \"s3://{BUCKET}/other/x/1.bin\", \"label\": 3}}\n\
         {{\"source-ref\": \"s3://{BUCKET}/other/x/2.bin\", \"label\": 4}}\n"
    );
    srv.put("manifests/aug.jsonl", aug.as_bytes());
    let out = run(srv.chute("ls").args([
        "--augmented-manifest",
        &format!("s3://{BUCKET}/manifests/aug.jsonl"),
        "--attribute-names",
        "source-ref,label",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        lines(&stdout(&out)),
        vec!["100\tother/x/1.bin", "200\tother/x/2.bin"]
    );
}

#[test]
fn malformed_manifests_name_the_entry() {
    let srv = Serve::start();
    let cases: [(&str, &str); 5] = [
        (
            "bad.json",
            "[{\"prefix\": \"s3://data/p/\"}, \"a\",\n oops]",
        ),
        ("noprefix.json", "[\"a\", \"b\"]"),
        (
            "escape.json",
            "[{\"prefix\": \"s3://data/p/\"}, \"ok\", \"../../etc/passwd\"]",
        ),
        (
            "notstring.json",
            "[{\"prefix\": \"s3://data/p/\"}, \"ok\", 17]",
        ),
        ("notarray.json", "{\"prefix\": \"s3://data/p/\"}"),
    ];
    let expect = ["line 2", "entry 0", "entry 2", "entry 2", "array"];
    for ((name, body), want) in cases.iter().zip(expect) {
        srv.put(&format!("m/{name}"), body.as_bytes());
        let out = run(srv
            .chute("ls")
            .args(["--manifest", &format!("s3://{BUCKET}/m/{name}")]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(want), "{name}: expected '{want}' in: {err}");
        assert!(
            err.contains(name),
            "{name}: the message names the manifest: {err}"
        );
    }
}

/// The last line of stderr, and a check that the error is one line.
fn error_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("chute: error"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line in: {err}");
    errors[0].to_owned()
}

#[test]
fn bad_sources_exit_3_with_a_clear_message() {
    let srv = Serve::start();
    dataset(&srv);

    let port = dead_port();
    let out = run(chute()
        .args(["ls", "s3://data/train/", "--endpoint-url"])
        .arg(format!("http://127.0.0.1:{port}")));
    assert_eq!(out.status.code(), Some(3));
    let line = error_line(&out);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("endpoint"),
        "{line}"
    );

    let out = run(srv.chute("ls").arg("s3://no-such-bucket/x/"));
    assert_eq!(out.status.code(), Some(3));
    let line = error_line(&out);
    assert!(line.contains("no-such-bucket"), "{line}");

    let out = run(srv
        .chute("ls")
        .arg("s3://data/train/")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-42"));
    assert_eq!(out.status.code(), Some(3));
    let line = error_line(&out);
    assert!(
        line.contains("AWS_SECRET_ACCESS_KEY"),
        "says what to check: {line}"
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains("wrong-secret-value-42") && !all.contains(SECRET_KEY),
        "{all}"
    );
}

#[test]
fn malformed_uris_exit_2() {
    for bad in [
        "http://bucket/prefix",
        "s3://",
        "bucket/prefix",
        "s3://Bad_Bucket!/x",
        "file://relative/dir",
    ] {
        let out = run(chute().args(["ls", bad]));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let line = error_line(&out);
        assert!(line.len() > 20, "{bad}: {line}");
    }
    // Usage errors from the parser itself are exit 2 too.
    let out = run(chute().args(["ls", "s3://b/p", "--shard-index", "3", "--shard-count", "3"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Runs `cmd` for at most `secs` seconds; a command still running then is
/// killed and the test fails (a hang is a failure, not a wait). Its output is
/// read as it comes, so a chatty command never blocks on a full pipe.
fn run_within(cmd: &mut std::process::Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chute");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!(
                "still running after {secs} s; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A small local source, so these checks need no server.
fn local_source() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..5 {
        write_file(
            &dir.path().join(format!("d/{i}.bin")),
            &pattern(10 + i, i as u64),
        );
    }
    let uri = format!("file://{}", dir.path().join("d").display());
    (dir, uri)
}

#[test]
fn huge_shard_counts_exit_2_naming_the_limit() {
    let (_dir, uri) = local_source();
    for count in ["18446744073709551615", "1000000000000", "65537"] {
        let out = run_within(
            chute()
                .args(["ls", &uri, "--shard-index", "0", "--shard-count"])
                .arg(count),
            60,
        );
        assert_eq!(out.status.code(), Some(2), "{count}: {}", stderr(&out));
        let line = error_line(&out);
        assert!(
            line.contains("--shard-count") && line.contains(count) && line.contains("65536"),
            "{line}"
        );
    }
    // The same bound on counts from the environment, naming the variable.
    let out = run_within(
        chute()
            .args(["ls", &uri, "--distribution", "ShardedByS3Key"])
            .env("JOB_COMPLETION_INDEX", "3")
            .env("CHUTE_SHARD_COUNT", "1000000000000"),
        60,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("CHUTE_SHARD_COUNT=1000000000000") && line.contains("65536"),
        "{line}"
    );
    // The limit itself is fine, and costs nothing per host.
    let out = run_within(
        chute().args([
            "ls",
            &uri,
            "--shard-index",
            "65535",
            "--shard-count",
            "65536",
        ]),
        60,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let out = run_within(
        chute().args(["ls", &uri, "--shard-index", "3", "--shard-count", "65536"]),
        60,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&stdout(&out)), vec!["13\t3.bin"]);
}

#[test]
fn size_and_count_options_are_range_checked() {
    let (dir, uri) = local_source();
    let fifo_dir = dir.path().join("fifos");
    let pipe = |memory: &str| {
        let mut cmd = chute();
        cmd.args(["pipe", &uri, "--channel", "train", "--epochs", "1", "--dir"])
            .arg(&fifo_dir)
            .args(["--max-memory", memory]);
        cmd
    };
    for memory in ["2EiB", "2305843009213693952", "16EiB", "0", "512K"] {
        let out = run_within(&mut pipe(memory), 60);
        assert_eq!(out.status.code(), Some(2), "{memory}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--max-memory") && err.contains("1MiB to 1TiB"),
            "{memory}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = run_within(&mut pipe("lots"), 60);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a size"), "{}", stderr(&out));

    // chute mount checks its sizes before it mounts anything (no FUSE needed).
    let mp = dir.path().join("mp");
    std::fs::create_dir_all(&mp).expect("mount point");
    for (flag, value, range) in [
        ("--max-memory", "2EiB", "8MiB to 1TiB"),
        ("--max-memory", "4M", "8MiB to 1TiB"),
    ] {
        let out = run_within(
            chute().args(["mount", &uri]).arg(&mp).args([flag, value]),
            60,
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&out)
        );
        let line = error_line(&out);
        assert!(line.contains(flag) && line.contains(range), "{line}");
    }
    let out = run_within(
        chute()
            .args(["mount", &uri])
            .arg(&mp)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["--cache-size", "9EiB"]),
        60,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(error_line(&out).contains("--cache-size 9EiB is out of range"));

    // Counts and part sizes: the option and its range are named.
    let dest = dir.path().join("dest");
    for (flag, value) in [
        ("--part-size-mib", "18446744073709551615"),
        ("--part-size-mib", "0"),
        ("--concurrency", "0"),
        ("--concurrency", "100000000"),
    ] {
        let out = run_within(
            chute()
                .args(["download", &uri])
                .arg(&dest)
                .args([flag, value]),
            60,
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains(flag) && err.contains("1..="),
            "{flag} {value}: {err}"
        );
        assert!(
            !dest.exists(),
            "a refused download created {}",
            dest.display()
        );
    }
}

#[test]
fn manifests_with_absurd_entries_are_refused() {
    let srv = Serve::start();
    srv.put("x/1.bin", &pattern(100, 1));
    // One ManifestFile entry is one key: 100 kB is not a key.
    let long = "k".repeat(100_000);
    let manifest = format!(r#"[{{"prefix": "s3://{BUCKET}/x/"}}, "1.bin", "{long}"]"#);
    srv.put("m/long.json", manifest.as_bytes());
    let out = run_within(
        srv.chute("ls")
            .args(["--manifest", &format!("s3://{BUCKET}/m/long.json")]),
        120,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("m/long.json") && line.contains("entry 2 is longer than 65536 bytes"),
        "{line}"
    );

    // An augmented manifest whose line never ends (9 MiB without a newline).
    let mut aug = format!("{{\"source-ref\": \"s3://{BUCKET}/x/1.bin\", \"label\": 1}}\n");
    aug.push_str(&format!(
        "{{\"source-ref\": \"s3://{BUCKET}/x/1.bin\", \"label\": \"{}\"}}\n",
        "v".repeat(9 << 20)
    ));
    srv.put("m/aug.jsonl", aug.as_bytes());
    let out = run_within(
        srv.chute("ls").args([
            "--augmented-manifest",
            &format!("s3://{BUCKET}/m/aug.jsonl"),
            "--attribute-names",
            "source-ref,label",
        ]),
        120,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("m/aug.jsonl") && line.contains("line 2 is longer than 8388608 bytes"),
        "{line}"
    );
}

#[test]
fn large_manifests_stream_in_file_order() {
    let srv = Serve::start();
    for i in 0..40 {
        srv.put(&format!("big/{i:03}.bin"), &pattern(i, i as u64));
    }
    // 40 objects named over and over, in reverse: 800 entries, all HEADed.
    let mut manifest = format!(r#"[{{"prefix": "s3://{BUCKET}/big/"}}"#);
    let mut want = Vec::new();
    for round in 0..20 {
        for i in (0..40).rev() {
            manifest.push_str(&format!(",\n \"{i:03}.bin\""));
            if round == 0 {
                want.push(format!("{i}\t{i:03}.bin"));
            }
        }
    }
    manifest.push_str("\n]\n");
    srv.put("m/big.json", manifest.as_bytes());
    let out = run_within(
        srv.chute("ls")
            .args(["--manifest", &format!("s3://{BUCKET}/m/big.json")]),
        300,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Repeats of an entry collapse into the first; manifest order is plan order.
    assert_eq!(lines(&stdout(&out)), want);
}
