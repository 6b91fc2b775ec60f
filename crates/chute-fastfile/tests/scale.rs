//! A large plan through a real FUSE mount: 200k objects in 180 directories of
//! 1000 and one flat directory of 20k, listed with `find` and checked with
//! `stat`, next to two real objects read back byte for byte. The generated
//! objects exist only in the plan: metadata never touches S3, which is what
//! this checks (a lookup or readdir that reached the server would fail).
//! Memory per object is measured by the crate's `scale_tests` unit tests.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use chute_plan::{plan_from_listing, ObjectInfo};
use chute_testkit::harness::BUCKET;
use common::{fast_policy, fuse_available, pattern, sha256, test_options, Env, Mounted, PREFIX};

const OBJECTS: u64 = 200_000;
const IN_SHARDS: u64 = OBJECTS / 10 * 9;

fn generated_key(i: u64) -> String {
    if i < IN_SHARDS {
        format!("{PREFIX}train/shard-{:05}/sample-{i:07}.jpg", i / 1000)
    } else {
        format!("{PREFIX}flat/sample-{:07}.jpg", i - IN_SHARDS)
    }
}

fn lines(out: &[u8]) -> Vec<&str> {
    std::str::from_utf8(out)
        .expect("utf-8 output")
        .lines()
        .collect()
}

#[test]
fn find_and_stat_a_200k_object_mount() {
    if !fuse_available() {
        return;
    }
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
        (0..OBJECTS)
            .map(|i| ObjectInfo {
                bucket: BUCKET.into(),
                key: generated_key(i),
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
    .expect("mount 200k objects");
    let m = Mounted {
        mount: Some(mount),
        dir: mp,
    };

    // Every file and directory, through readdir and lookup.
    let out = Command::new("find")
        .arg(m.path())
        .output()
        .expect("run find");
    assert!(out.status.success(), "find failed: {:?}", out);
    let found = lines(&out.stdout);
    // The root, train/, real/, flat/ and the shards.
    let dirs = 4 + IN_SHARDS / 1000;
    assert_eq!(found.len() as u64, OBJECTS + 2 + dirs);
    let files = Command::new("find")
        .arg(m.join("flat"))
        .args(["-type", "f"])
        .output()
        .expect("run find");
    assert_eq!(lines(&files.stdout).len() as u64, OBJECTS - IN_SHARDS);

    for i in [0, 1, 999, 1000, IN_SHARDS - 1, IN_SHARDS, OBJECTS - 1] {
        let rel = &generated_key(i)[PREFIX.len()..];
        let meta = std::fs::metadata(m.join(rel)).expect(rel);
        assert!(meta.is_file(), "{rel}");
        assert_eq!(meta.size(), 1000 + i % 5000, "{rel}");
        assert_eq!(meta.mode() & 0o777, 0o444, "{rel}");
    }
    let shard = std::fs::metadata(m.join("train/shard-00007")).expect("shard dir");
    assert!(shard.is_dir());
    assert_eq!(shard.nlink(), 2);
    let train = std::fs::metadata(m.join("train")).expect("train");
    assert_eq!(train.nlink(), 2 + IN_SHARDS / 1000);
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
