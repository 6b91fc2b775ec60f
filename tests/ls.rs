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
