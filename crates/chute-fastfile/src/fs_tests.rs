//! [`FastFs`] called directly, without FUSE: a file system built from a plan
//! over the testkit's in-memory store (wrapped in its fault store), so the
//! read path, read-ahead, cross-file prefetch, ESTALE and EIO are checked
//! byte for byte and GET by GET on any machine, `/dev/fuse` or not. The same
//! behaviour through a real mount over a real `chute serve` is checked by
//! `tests/read.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chute_s3::Client;
use chute_testkit::data::{pattern, sha256};
use chute_testkit::harness::{fast_policy, plan_of};
use chute_testkit::{FaultStore, MemStore, StoreFault, StoreRule};

use crate::cache::BLOCK;
use crate::fs::{FastFs, Kind, ReadOutcome};
use crate::tree::ROOT;
use crate::{MountOptions, Prefetch};

const BUCKET: &str = "bkt";
const PREFIX: &str = "data/";
/// What a reader's read() asks per call (the kernel's usual FUSE read size).
const READ: u32 = 128 << 10;

type Errno = i32;

/// A file system over `mem` (behind a fault store the test can program),
/// built the way a mount builds it, minus the mount.
struct Fixture {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore<MemStore>>,
    fs: FastFs,
}

fn options(prefetch: Prefetch) -> MountOptions {
    MountOptions {
        max_memory: 128 << 20,
        stats_interval: None,
        prefetch: Some(prefetch),
        ..MountOptions::default()
    }
}

/// `files` (paths under the prefix) in the store, listed and built into a
/// file system; the store's counts start from zero after the listing.
async fn fixture(files: &[(&str, &[u8])], opts: MountOptions) -> Fixture {
    let mem = Arc::new(MemStore::new());
    mem.create_bucket(BUCKET);
    for (path, data) in files {
        mem.put(BUCKET, &format!("{PREFIX}{path}"), data.to_vec());
    }
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let client = Client::new(faults.clone(), fast_policy());
    let plan = plan_of(&client, BUCKET, PREFIX).await;
    let fs = FastFs::build(plan, client, &opts, tokio::runtime::Handle::current())
        .expect("build the file system");
    mem.reset_counts();
    Fixture { mem, faults, fs }
}

impl Fixture {
    /// The inode of `path`, walked from the root as the kernel does.
    fn ino(&self, path: &str) -> Result<u64, Errno> {
        let mut ino = ROOT;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            ino = self.fs.lookup(ino, name.as_bytes())?.ino;
        }
        Ok(ino)
    }

    fn open(&self, path: &str) -> Result<u64, Errno> {
        self.fs.open(self.ino(path)?, libc::O_RDONLY)
    }

    async fn read(&self, fh: u64, off: u64, size: u32) -> Result<Bytes, Errno> {
        match self.fs.read(fh, off, size) {
            ReadOutcome::Now(r) => r,
            ReadOutcome::Later(f) => f.await,
        }
    }

    /// The whole file in `chunk`-sized reads from the start, as `cat` reads.
    async fn read_all(&self, path: &str, chunk: u32) -> Result<Vec<u8>, Errno> {
        let fh = self.open(path)?;
        let mut out = Vec::new();
        loop {
            let got = self.read(fh, out.len() as u64, chunk).await;
            match got {
                Ok(b) if b.is_empty() => break,
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    self.fs.release(fh);
                    return Err(e);
                }
            }
        }
        self.fs.release(fh);
        Ok(out)
    }

    /// GETs of one object so far: (count, largest range, bytes).
    fn gets(&self, path: &str) -> (usize, u64, u64) {
        let gets = self.mem.gets_of(&format!("{PREFIX}{path}"));
        let largest = gets.iter().map(|g| g.range.end - g.range.start).max();
        let bytes = gets.iter().map(|g| g.range.end - g.range.start).sum();
        (gets.len(), largest.unwrap_or(0), bytes)
    }
}

/// Waits (generously) until `done`; the fetches run on the runtime's workers.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn slice(data: &[u8], off: u64, len: u64) -> &[u8] {
    let start = (off as usize).min(data.len());
    let end = (off.saturating_add(len) as usize).min(data.len());
    &data[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_random_and_block_crossing_reads_are_exact() {
    let size = 3 * BLOCK as usize + 12_345;
    let data = pattern(size, 1);
    let f = fixture(&[("a.bin", &data)], options(Prefetch::Ahead)).await;

    for chunk in [READ, 4096, 1 << 20] {
        let got = f.read_all("a.bin", chunk).await.expect("read a.bin");
        assert_eq!(sha256(&got), sha256(&data), "in reads of {chunk}");
    }

    // Reads on and across block boundaries, at the end and past it, on a
    // handle that only ever jumps around.
    let fh = f.open("a.bin").expect("open");
    let size = size as u64;
    let mut cases: Vec<(u64, u32)> = vec![
        (BLOCK - 1, 2),
        (BLOCK - 1, 1),
        (BLOCK, 1),
        (2 * BLOCK - 10, BLOCK as u32 + 20),
        (1, 3 * BLOCK as u32),
        (size - 1, 1),
        (size - 5, 100),
        (size, 10),
        (size + 100, 10),
    ];
    let mut x: u64 = 0x5eed;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cases.push((x % size, 1 + (x >> 40) as u32 % (600 << 10)));
    }
    for (off, len) in cases {
        let got = f.read(fh, off, len).await.expect("read");
        assert!(
            got[..] == *slice(&data, off, u64::from(len)),
            "read of {len} at {off}"
        );
    }
    f.fs.release(fh);
}

/// Reads that come with no open (the page-cache read path): the reading task
/// stands for the handle, so two readers interleaving on one file each keep
/// their own sequential read-ahead, and every byte is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_an_open_are_exact_and_each_reader_reads_ahead() {
    // Far enough apart that one handle shared by both would see only jumps.
    let size = 32usize << 20;
    let data = pattern(size, 7);
    let f = fixture(
        &[("big.bin", &data), ("d/x", b"x")],
        options(Prefetch::Ahead),
    )
    .await;
    let ino = f.ino("big.bin").expect("lookup");
    let read = |pid: u32, off: u64, len: u32| {
        let outcome = f.fs.read_unopened(ino, pid, off, len);
        async move {
            match outcome {
                ReadOutcome::Now(r) => r,
                ReadOutcome::Later(fut) => fut.await,
            }
        }
    };
    // Two readers, one from the start and one from the middle, in turns.
    let half = size as u64 / 2;
    let (mut a, mut b) = (0u64, half);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while a < half || b < size as u64 {
        if a < half {
            let d = read(1, a, READ).await.expect("reader 1");
            a += d.len() as u64;
            got_a.extend_from_slice(&d);
        }
        if b < size as u64 {
            let d = read(2, b, READ).await.expect("reader 2");
            b += d.len() as u64;
            got_b.extend_from_slice(&d);
        }
    }
    assert!(got_a[..] == data[..size / 2] && got_b[..] == data[size / 2..]);
    let (gets, largest, bytes) = f.gets("big.bin");
    assert!(
        largest >= 1 << 20 && (gets as u64) * 4 <= size as u64 / BLOCK,
        "both readers read ahead: {gets} GETs, the largest {largest} bytes"
    );
    // Reader 1's read-ahead may run into blocks reader 2 consumed (and the
    // memory cache let go); nothing else is fetched twice.
    assert!(
        bytes >= size as u64 && bytes <= size as u64 + (8 << 20),
        "{bytes} bytes fetched"
    );

    // Random reads, on and across block boundaries, past the end.
    for (off, len) in [
        (BLOCK - 1, 2),
        (3 * BLOCK - 7, BLOCK as u32 + 9),
        (size as u64 - 3, 100),
    ] {
        let got = read(3, off, len).await.expect("random read");
        assert!(
            got[..] == *slice(&data, off, u64::from(len)),
            "{len} at {off}"
        );
    }
    assert!(read(3, size as u64 + 1, 10)
        .await
        .expect("past the end")
        .is_empty());
    let dir = f.ino("d").expect("lookup d");
    assert!(matches!(
        f.fs.read_unopened(dir, 1, 0, 10),
        ReadOutcome::Now(Err(libc::EISDIR))
    ));
    assert!(matches!(
        f.fs.read_unopened(9_999_999, 1, 0, 10),
        ReadOutcome::Now(Err(libc::ENOENT))
    ));
    assert_eq!(f.fs.check_open(ino, libc::O_WRONLY), Err(libc::EROFS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_files_read_as_empty_without_a_get() {
    let f = fixture(&[("empty", b""), ("one", b"x")], options(Prefetch::Ahead)).await;
    let attr = f.fs.lookup(ROOT, b"empty").expect("lookup");
    assert_eq!((attr.kind, attr.size), (Kind::File, 0));
    let fh = f.open("empty").expect("open");
    assert!(f.read(fh, 0, READ).await.expect("read").is_empty());
    assert!(f.read(fh, 100, READ).await.expect("read").is_empty());
    f.fs.release(fh);
    assert_eq!(f.read_all("one", READ).await.expect("one"), b"x");
    assert_eq!(f.gets("empty").0, 0, "nothing to fetch for an empty file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_go_out_as_fewer_larger_gets() {
    let size = 16usize << 20;
    let data = pattern(size, 2);
    let blocks = size as u64 / BLOCK;

    // Without read-ahead every block is a GET of its own.
    let off = fixture(&[("big.bin", &data)], options(Prefetch::Off)).await;
    let got = off.read_all("big.bin", READ).await.expect("read");
    assert_eq!(sha256(&got), sha256(&data));
    let (n_off, largest_off, bytes_off) = off.gets("big.bin");
    assert_eq!(n_off as u64, blocks, "one GET per block");
    assert_eq!(largest_off, BLOCK);
    assert_eq!(bytes_off, size as u64, "no byte fetched twice");

    // With it, a sequential reader's blocks are asked for ahead, in larger GETs.
    let ahead = fixture(&[("big.bin", &data)], options(Prefetch::Ahead)).await;
    let got = ahead.read_all("big.bin", READ).await.expect("read");
    assert_eq!(sha256(&got), sha256(&data));
    let (n_ahead, largest_ahead, bytes_ahead) = ahead.gets("big.bin");
    assert!(
        n_ahead * 4 <= n_off,
        "read-ahead: {n_ahead} GETs, without: {n_off}"
    );
    assert!(
        largest_ahead >= 1 << 20,
        "the largest read-ahead GET is {largest_ahead} bytes"
    );
    assert_eq!(bytes_ahead, size as u64, "no byte fetched twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_file_prefetches_the_next_in_listing_order() {
    let a = pattern(600_000, 3);
    let b = pattern(500_000, 4);
    let c = pattern(400_000, 5);
    let files: [(&str, &[u8]); 3] = [("a.bin", &a), ("b.bin", &b), ("c.bin", &c)];

    let f = fixture(&files, options(Prefetch::Ahead)).await;
    assert_eq!(f.read_all("a.bin", READ).await.expect("a"), a);
    // b is fetched before anyone opens it.
    wait_for("b.bin to be prefetched", || {
        f.gets("b.bin").2 >= b.len() as u64
    })
    .await;
    let (before, _, _) = f.gets("b.bin");
    assert_eq!(f.read_all("b.bin", READ).await.expect("b"), b);
    assert_eq!(
        f.gets("b.bin").0,
        before,
        "b.bin was served from the prefetch, with no GET of its own"
    );
    assert_eq!(f.read_all("c.bin", READ).await.expect("c"), c);

    // Without read-ahead nothing is fetched that was not asked for.
    let off = fixture(&files, options(Prefetch::Off)).await;
    assert_eq!(off.read_all("a.bin", READ).await.expect("a"), a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(off.gets("b.bin").0, 0);
    assert_eq!(off.mem.counts().get_bytes, a.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_after_listing_reads_as_estale() {
    let v1 = pattern(700_000, 6);
    let steady = pattern(300_000, 7);
    let f = fixture(
        &[
            ("replaced.bin", &v1),
            ("retagged.bin", &v1),
            ("steady.bin", &steady),
        ],
        options(Prefetch::Ahead),
    )
    .await;

    // Same size, other bytes: only the ETag tells.
    f.mem.put(BUCKET, "data/replaced.bin", pattern(700_000, 66));
    assert_eq!(f.read_all("replaced.bin", READ).await, Err(libc::ESTALE));
    // And it stays stale, at once.
    let fh = f.open("replaced.bin").expect("open");
    assert!(matches!(
        f.fs.read(fh, 0, READ),
        ReadOutcome::Now(Err(libc::ESTALE))
    ));
    f.fs.release(fh);

    // The fault store's version: GETs see another ETag than the listing did.
    f.faults.push(
        StoreRule::get(
            "data/retagged.bin",
            StoreFault::ChangeEtag {
                etag: "\"v2\"".into(),
            },
        )
        .always(),
    );
    assert_eq!(f.read_all("retagged.bin", READ).await, Err(libc::ESTALE));

    // Other objects are not affected.
    assert_eq!(
        f.read_all("steady.bin", READ).await.expect("steady"),
        steady
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_within_the_retries_give_exact_bytes_and_beyond_them_eio() {
    let data = pattern(2 * BLOCK as usize + 77, 8);
    let f = fixture(
        &[
            ("flaky.bin", &data),
            ("cut.bin", &data),
            ("down.bin", &data),
            ("denied.bin", &data),
        ],
        options(Prefetch::Ahead),
    )
    .await;
    let attempts = u64::from(fast_policy().max_attempts);

    // Fewer failures than attempts, and bodies cut short: retried, resumed.
    f.faults
        .push(StoreRule::get("data/flaky.bin", StoreFault::Retryable).times(attempts - 1));
    f.faults.push(
        StoreRule::get(
            "data/cut.bin",
            StoreFault::CutBody {
                after_bytes: 100_000,
            },
        )
        .times(3),
    );
    assert_eq!(f.read_all("flaky.bin", READ).await.expect("flaky"), data);
    assert_eq!(f.read_all("cut.bin", READ).await.expect("cut"), data);

    // Every attempt failing: EIO once the retries are spent.
    f.faults
        .push(StoreRule::get("data/down.bin", StoreFault::Retryable).always());
    let fired = f.faults.fired();
    assert_eq!(f.read_all("down.bin", READ).await, Err(libc::EIO));
    assert!(
        f.faults.fired() - fired >= attempts,
        "the read was retried {} times before EIO",
        f.faults.fired() - fired
    );
    assert_eq!(f.gets("down.bin").0, 0, "no faulted GET reached the store");

    // An error no retry can fix: EIO at once.
    f.faults
        .push(StoreRule::get("data/denied.bin", StoreFault::Fatal).always());
    assert_eq!(f.read_all("denied.bin", READ).await, Err(libc::EIO));

    // A failure is not kept: once the store recovers (and the read-ahead the
    // failed reads started has given up too) the file reads again.
    f.faults.clear();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f.read_all("down.bin", READ).await {
            Ok(got) => {
                assert_eq!(sha256(&got), sha256(&data));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "down.bin still fails: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_readdir_and_attributes_come_from_the_listing() {
    let f = fixture(
        &[
            ("top.bin", b"top"),
            ("dir/b.bin", b"bee"),
            ("dir/a.bin", b"a"),
            ("dir/sub/c.bin", b"sea!"),
        ],
        MountOptions {
            file_mode: 0o440,
            dir_mode: 0o550,
            ..options(Prefetch::Ahead)
        },
    )
    .await;
    let root = f.fs.attr(ROOT).expect("root");
    assert_eq!((root.kind, root.perm), (Kind::Dir, 0o550));
    let dir = f.fs.lookup(ROOT, b"dir").expect("dir");
    assert_eq!(dir.kind, Kind::Dir);
    assert_eq!(dir.nlink, 3, "a directory with one sub-directory");
    let b = f.fs.lookup(dir.ino, b"b.bin").expect("b");
    assert_eq!((b.kind, b.size, b.perm, b.nlink), (Kind::File, 3, 0o440, 1));
    assert_eq!(f.fs.attr(b.ino).expect("attr").size, 3);
    let c = f.ino("dir/sub/c.bin").expect("c");
    assert_eq!(f.fs.attr(c).expect("attr").size, 4);

    assert_eq!(f.fs.lookup(ROOT, b"missing").err(), Some(libc::ENOENT));
    assert_eq!(f.fs.lookup(b.ino, b"x").err(), Some(libc::ENOTDIR));
    assert_eq!(f.fs.lookup(999_999, b"x").err(), Some(libc::ENOENT));
    assert_eq!(f.fs.attr(999_999).err(), Some(libc::ENOENT));

    let names = |ino: u64, from: u64| -> Vec<(u64, String, Kind)> {
        f.fs.readdir(ino, from)
            .expect("readdir")
            .map(|(next, e)| (next, e.name.to_owned(), e.kind))
            .collect()
    };
    let listed = names(dir.ino, 0);
    let just_names: Vec<&str> = listed.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(just_names, [".", "..", "a.bin", "b.bin", "sub"]);
    assert_eq!(listed[4].2, Kind::Dir);
    // Each entry's offset resumes after it.
    let (next, _, _) = &listed[2];
    let rest: Vec<String> = names(dir.ino, *next)
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(rest, ["b.bin", "sub"]);
    assert!(names(dir.ino, 5).is_empty());
    assert_eq!(f.fs.readdir(b.ino, 0).err(), Some(libc::ENOTDIR));
    let parent: Vec<_> = f.fs.readdir(dir.ino, 1).expect("readdir").collect();
    assert_eq!(parent[0].1.ino, ROOT, "'..' of dir is the root");

    // Read-only: any write access is EROFS; directories are not files.
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_RDONLY | libc::O_APPEND,
    ] {
        assert_eq!(
            f.fs.open(b.ino, flags).err(),
            Some(libc::EROFS),
            "{flags:#o}"
        );
    }
    assert_eq!(f.fs.open(dir.ino, libc::O_RDONLY).err(), Some(libc::EISDIR));
    assert!(matches!(
        f.fs.read(12_345, 0, 10),
        ReadOutcome::Now(Err(libc::EBADF))
    ));
    assert_eq!(f.read_all("dir/sub/c.bin", READ).await.expect("c"), b"sea!");
    assert_eq!(f.mem.counts().list, 0, "no listing after the build");
}
