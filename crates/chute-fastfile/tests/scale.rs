//! A large plan through a real FUSE mount: 200k objects in 180 directories of
//! 1000 and one flat directory of 20k, listed with `find` and checked with
//! `stat`, next to two real objects read back byte for byte. The generated
//! objects exist only in the plan: metadata never touches S3, which is what
//! this checks (a lookup or readdir that reached the server would fail).
//! Memory per object is measured by the crate's `scale_tests` unit tests; the
//! ignored 10M-object run here (9000 directories and a flat one of 1M) prints
//! the process's memory once `find` has walked the whole mount:
//! `cargo test --release -p chute-fastfile --test scale -- --ignored --nocapture`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use chute_plan::{plan_from_listing, ObjectInfo};
use chute_testkit::harness::BUCKET;
use common::{fast_policy, fuse_available, pattern, sha256, test_options, Env, Mounted, PREFIX};

/// Nine tenths of the objects in `train/shard-NNNNN/` directories of 1000,
/// the rest in one flat directory.
fn generated_key(i: u64, objects: u64) -> String {
    let in_shards = objects / 10 * 9;
    if i < in_shards {
        format!("{PREFIX}train/shard-{:05}/sample-{i:07}.jpg", i / 1000)
    } else {
        format!("{PREFIX}flat/sample-{:07}.jpg", i - in_shards)
    }
}

/// Lines `cmd` prints, counted as they come (10M paths need not be held).
fn count_lines(cmd: &mut Command) -> u64 {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let mut lines = 0;
    let mut reader = BufReader::with_capacity(1 << 16, out);
    loop {
        let buf = reader.fill_buf().expect("read output");
        if buf.is_empty() {
            break;
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{cmd:?} failed: {status}");
    lines
}

#[test]
fn find_and_stat_a_200k_object_mount() {
    find_and_stat(200_000);
}

#[test]
#[ignore = "10M objects: about 4 GB and a few minutes; run with --release -- --ignored"]
fn find_and_stat_a_10m_object_mount() {
    find_and_stat(10_000_000);
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    for line in status.lines() {
        if line.starts_with("VmHWM") || line.starts_with("VmRSS") {
            println!("10M-object mount, after find: {line}");
        }
    }
}

fn find_and_stat(objects: u64) {
    if !fuse_available() {
        return;
    }
    let in_shards = objects / 10 * 9;
    let env = Env::start();
    let small = pattern(1000, 7);
    let big = pattern(3 << 20, 8);
    env.put("real/small.bin", &small);
    env.put("real/big.bin", &big);
    let client = env.client(&env.endpoint(), fast_policy());
    let mut plan = env.plan(&client);
    assert_eq!(plan.objects.len(), 2);
    let generated = plan_from_listing(
        PREFIX,
        (0..objects)
            .map(|i| ObjectInfo {
                bucket: BUCKET.into(),
                key: generated_key(i, objects),
                size: 1000 + i % 5000,
                etag: Some(format!("\"{i:032x}\"")),
            })
            .collect(),
    );
    plan.objects.extend(generated.objects);

    let mp = tempfile::tempdir().expect("mountpoint");
    let mount = chute_fastfile::mount(
        client,
        plan,
        mp.path(),
        test_options(),
        env.rt.handle().clone(),
    )
    .expect("mount the generated plan");
    let m = Mounted {
        mount: Some(mount),
        dir: mp,
    };

    // Every file and directory, through readdir and lookup.
    let found = count_lines(Command::new("find").arg(m.path()));
    // The root, train/, real/, flat/ and the shards.
    let dirs = 4 + in_shards / 1000;
    assert_eq!(found, objects + 2 + dirs);
    let flat = count_lines(
        Command::new("find")
            .arg(m.join("flat"))
            .args(["-type", "f"]),
    );
    assert_eq!(flat, objects - in_shards);

    for i in [0, 1, 999, 1000, in_shards - 1, in_shards, objects - 1] {
        let rel = &generated_key(i, objects)[PREFIX.len()..];
        let meta = std::fs::metadata(m.join(rel)).expect(rel);
        assert!(meta.is_file(), "{rel}");
        assert_eq!(meta.size(), 1000 + i % 5000, "{rel}");
        assert_eq!(meta.mode() & 0o777, 0o444, "{rel}");
    }
    let shard = std::fs::metadata(m.join("train/shard-00007")).expect("shard dir");
    assert!(shard.is_dir());
    assert_eq!(shard.nlink(), 2);
    let train = std::fs::metadata(m.join("train")).expect("train");
    assert_eq!(train.nlink(), 2 + in_shards / 1000);
    for missing in ["flat/sample-9999999.jpg", "train/shard-99999", "nope"] {
        let err = std::fs::metadata(m.join(missing)).expect_err(missing);
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{missing}");
    }

    // The real objects among them read back exactly.
    assert_eq!(
        sha256(&std::fs::read(m.join("real/small.bin")).expect("read small")),
        sha256(&small)
    );
    assert_eq!(
        sha256(&std::fs::read(m.join("real/big.bin")).expect("read big")),
        sha256(&big)
    );
    m.unmount();
}
