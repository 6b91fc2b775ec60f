//! The disk cache, the whole-channel prefetch and the read paths through a
//! real FUSE mount over a real `chute serve` endpoint: entries reused by a
//! later mount with no GETs, a changed object fetched anew, a cut entry never
//! served, every read path byte-exact, the size limit kept, the prefetch
//! fetching each object once. GETs are the S3 client's own count.

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chute_fastfile::{CacheOptions, MountOptions, Prefetch, ReadPath};
use common::*;

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

fn cache_opts(
    dir: &Path,
    size: Option<u64>,
    prefetch: Prefetch,
    read_path: ReadPath,
) -> MountOptions {
    MountOptions {
        cache: Some(CacheOptions {
            dir: dir.to_path_buf(),
            size,
        }),
        prefetch: Some(prefetch),
        read_path,
        ..test_options()
    }
}

/// Complete entries in a cache directory: (count, bytes, paths).
fn entries(dir: &Path) -> (usize, u64, Vec<PathBuf>) {
    let mut paths = Vec::new();
    let mut bytes = 0;
    let Ok(subs) = std::fs::read_dir(dir.join("v1")) else {
        return (0, 0, paths);
    };
    for sub in subs.flatten() {
        if sub.file_name() == "partial" {
            continue;
        }
        for e in std::fs::read_dir(sub.path())
            .expect("read cache subdir")
            .flatten()
        {
            bytes += e.metadata().expect("stat").len();
            paths.push(e.path());
        }
    }
    (paths.len(), bytes, paths)
}

/// Every byte in the cache directory, temporary files included.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Objects of several sizes (one spanning blocks and parts), written under the prefix.
fn dataset(env: &Env) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..12 {
        files.push((
            format!("d{}/f{i:02}.bin", i % 3),
            pattern(100_000 + i * 777, i as u64),
        ));
    }
    files.push(("big.bin".into(), pattern((3 << 20) + 4321, 99)));
    for (rel, data) in &files {
        env.put(rel, data);
    }
    files
}

fn check_all(m: &Mounted, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let got = read_all(&m.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        assert_eq!(sha256(&got), sha256(data), "{rel}");
    }
}

fn passthrough_expected() -> bool {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 9) && nix::unistd::geteuid().is_root()
}

#[test]
fn remount_reads_from_the_cache_with_no_gets() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let files = dataset(&env);
    let cache = tempfile::tempdir().expect("cache dir");
    // First mount: readers only, so the entries come from their own reads.
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::Off,
            ReadPath::Passthrough,
        ),
    );
    check_all(&m, &files);
    let first = m.unmount();
    assert!(first.get_requests > 0, "{first}");
    assert_eq!(
        entries(cache.path()).0,
        files.len(),
        "every object became an entry"
    );

    // Second mount, prefetch on: everything is on disk already.
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::All,
            ReadPath::PageCache,
        ),
    );
    check_all(&m, &files);
    let second = m.unmount();
    assert_eq!(second.get_requests, 0, "second mount: {second}");
}

#[test]
fn changed_object_is_fetched_anew_after_a_remount() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let mut files = dataset(&env);
    let cache = tempfile::tempdir().expect("cache dir");
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::Off,
            ReadPath::PageCache,
        ),
    );
    check_all(&m, &files);
    m.unmount();

    // Same size, other bytes: only the ETag tells.
    let changed = pattern(files[4].1.len(), 4444);
    env.put(&files[4].0, &changed);
    files[4].1 = changed;
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::Off,
            ReadPath::PageCache,
        ),
    );
    check_all(&m, &files);
    let s = m.unmount();
    assert_eq!(s.get_requests, 1, "only the changed object is fetched: {s}");
}

#[test]
fn cut_cache_entries_are_never_served() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let files = dataset(&env);
    let cache = tempfile::tempdir().expect("cache dir");
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::Off,
            ReadPath::Daemon,
        ),
    );
    check_all(&m, &files);
    m.unmount();

    // One entry cut before the next mount (found by its scan)...
    let (_, _, paths) = entries(cache.path());
    let cut = |p: &Path| {
        let len = std::fs::metadata(p).expect("stat").len();
        File::options()
            .write(true)
            .open(p)
            .expect("open entry")
            .set_len(len / 2)
            .expect("truncate");
    };
    cut(&paths[0]);
    // ...a temporary file a crashed mount left (pid 1 is alive: kept; a
    // dead pid's file is removed; neither is ever served)...
    let stray = cache.path().join("v1/partial/0123.999999999.0");
    std::fs::write(&stray, b"partial").expect("stray");
    for read_path in [ReadPath::PageCache, ReadPath::Passthrough] {
        let client = env.client(&env.endpoint(), fast_policy());
        let m = env.mount_with(
            client,
            cache_opts(cache.path(), Some(64 << 20), Prefetch::Off, read_path),
        );
        assert!(!stray.exists(), "a dead mount's temporary file is removed");
        // ...and, on the second round, one cut while mounted (found at open).
        if read_path == ReadPath::Passthrough {
            let (_, _, paths) = entries(cache.path());
            for p in paths.iter().take(2) {
                cut(p);
            }
        }
        check_all(&m, &files);
        let s = m.unmount();
        assert!(s.get_requests >= 1, "the cut entry was fetched again: {s}");
    }
    // The entries are whole again.
    let (n, bytes, _) = entries(cache.path());
    assert_eq!(n, files.len());
    assert_eq!(bytes, files.iter().map(|f| f.1.len() as u64).sum::<u64>());
}

#[test]
fn every_read_path_gives_exact_bytes_from_the_cache() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let files = dataset(&env);
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    let cache = tempfile::tempdir().expect("cache dir");
    let mount = |read_path| {
        let client = env.client(&env.endpoint(), fast_policy());
        env.mount_with(
            client,
            cache_opts(cache.path(), Some(64 << 20), Prefetch::All, read_path),
        )
    };
    let m = mount(ReadPath::PageCache);
    wait_for("the prefetch", || entries(cache.path()).0 == files.len());
    m.unmount();

    // The default: no open reaches chute, and a file read twice is read
    // through chute once (the second time from the kernel's page cache).
    let m = mount(ReadPath::PageCache);
    check_all(&m, &files);
    check_all(&m, &files);
    let s = m.unmount();
    assert_eq!(s.get_requests, 0, "{s}");
    assert_eq!(
        (s.opens, s.passthrough_opens),
        (files.len() as u64, 0),
        "one read stream per file: {s}"
    );
    assert_eq!(
        s.bytes_served, total,
        "the second pass never reached chute: {s}"
    );
    assert_eq!(s.bytes_disk, total, "every byte from the disk cache: {s}");

    let m = mount(ReadPath::Passthrough);
    check_all(&m, &files);
    // Again through the same handles' inodes, with two opens at once.
    let (rel, data) = &files[12];
    let a = read_all(&m.join(rel)).expect("a");
    let b = read_all(&m.join(rel)).expect("b");
    assert_eq!(sha256(&a), sha256(data));
    assert_eq!(sha256(&b), sha256(data));
    let s = m.unmount();
    assert_eq!(s.get_requests, 0, "{s}");
    if passthrough_expected() {
        assert!(
            s.passthrough_opens >= files.len() as u64,
            "passthrough used: {s}"
        );
        assert_eq!(s.bytes_disk, 0, "no read reached the daemon: {s}");
    } else {
        eprintln!(
            "NOTE: this kernel or user cannot use FUSE passthrough; checked the fallback only"
        );
    }

    // Forced fallback: the daemon reads the same entries.
    let m = mount(ReadPath::Daemon);
    check_all(&m, &files);
    let s = m.unmount();
    assert_eq!(s.get_requests, 0, "{s}");
    assert_eq!(s.passthrough_opens, 0, "{s}");
    assert_eq!(s.bytes_disk, total, "every byte from the disk cache: {s}");
}

#[test]
fn the_cache_stays_within_its_size() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let files = dataset(&env);
    let cache = tempfile::tempdir().expect("cache dir");
    let limit = 1_000_000;
    for round in 0..2 {
        let client = env.client(&env.endpoint(), fast_policy());
        let m = env.mount_with(
            client,
            cache_opts(
                cache.path(),
                Some(limit),
                Prefetch::All,
                ReadPath::PageCache,
            ),
        );
        check_all(&m, &files);
        assert!(
            dir_bytes(cache.path()) <= limit,
            "round {round} while mounted"
        );
        m.unmount();
        let used = dir_bytes(cache.path());
        assert!(used <= limit, "round {round}: {used} > {limit}");
        assert!(used > 0, "round {round}: something was cached");
    }
}

#[test]
fn background_prefetch_fetches_everything_once() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let files = dataset(&env);
    let cache = tempfile::tempdir().expect("cache dir");
    let client = env.client(&env.endpoint(), fast_policy());
    let mut opts = cache_opts(
        cache.path(),
        Some(64 << 20),
        Prefetch::All,
        ReadPath::PageCache,
    );
    // Parts of 1 MiB: the big object takes four GETs.
    opts.tuning.background_part_size = 1 << 20;
    let m = env.mount_with(client, opts);
    wait_for("the prefetch", || entries(cache.path()).0 == files.len());
    let before = m.mount.as_ref().expect("mounted").summary();
    assert_eq!(
        before.get_requests,
        12 + 4,
        "one GET per object or part: {before}"
    );
    check_all(&m, &files);
    let after = m.unmount();
    assert_eq!(
        after.get_requests, before.get_requests,
        "whole-file reads made no GETs: {after}"
    );
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    assert_eq!(after.bytes_background, total, "{after}");
}

#[test]
fn demand_reads_work_while_the_prefetch_runs() {
    if !fuse_available() {
        return;
    }
    let env = Env::start();
    let mut files = Vec::new();
    for i in 0..150u64 {
        files.push((
            format!("many/{i:03}.bin"),
            pattern(40_000 + (i as usize) * 13, i),
        ));
    }
    for (rel, data) in &files {
        env.put(rel, data);
    }
    let cache = tempfile::tempdir().expect("cache dir");
    let client = env.client(&env.endpoint(), fast_policy());
    let m = env.mount_with(
        client,
        cache_opts(
            cache.path(),
            Some(64 << 20),
            Prefetch::All,
            ReadPath::PageCache,
        ),
    );
    // Readers go backwards, against the prefetch's order.
    let rev: Vec<_> = files.iter().rev().cloned().collect();
    check_all(&m, &rev);
    let s = m.unmount();
    assert_eq!(s.errors, 0, "{s}");
    // Every object is fetched at most about once (a reader and the prefetch
    // may race for the same one).
    assert!(s.get_requests <= 2 * files.len() as u64, "{s}");
    assert_eq!(entries(cache.path()).0, files.len());
}
