//! The library on its own, over a local directory store: the path defence with
//! plans that bypass the planner, streamed writes on both of their paths, MD5
//! verification against a store that corrupts bodies, and cleanup when the
//! download future is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chute_download::{download, DownloadError, DownloadOptions};
use chute_plan::Classify;
use chute_plan::{Plan, PlannedObject};
use chute_s3::{Client, LocalStore, RetryPolicy};
use chute_testkit::data::pattern;
use chute_testkit::harness::local_client;
use chute_testkit::{FaultStore, MemStore, Op, StoreFault, StoreRule};
use sha2::Digest;

fn md5_hex(d: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(d))
}

/// A local directory with `files`, and a plan naming them by `paths`.
fn source(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, bytes) in files {
        let p = dir.path().join(key);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
    dir
}

fn object(key: &str, path: &str, size: usize, etag: Option<String>) -> PlannedObject {
    PlannedObject::new(
        "".into(),
        key,
        size as u64,
        etag.map(chute_plan::ETag::from),
        path,
    )
}

fn quiet() -> DownloadOptions {
    DownloadOptions {
        progress: false,
        ..DownloadOptions::default()
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).expect("under").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn escaping_paths_in_a_hand_built_plan_are_skipped() {
    let bytes = pattern(1000, 1);
    let src = source(&[("a.bin", bytes.clone())]);
    let client = local_client(src.path(), RetryPolicy::default());
    let mut plan = Plan::default();
    for path in [
        "../../etc/x",
        "../escape.bin",
        "sub/../../x",
        "/abs.bin",
        "./dot.bin",
        ".chute-tmp/0.part",
        "ok/a.bin",
    ] {
        plan.objects.push(object("a.bin", path, bytes.len(), None));
    }
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("one").join("two").join("dest");
    let s = download(&client, &plan, &dest, &quiet())
        .await
        .expect("download");
    assert_eq!(s.objects, 1);
    assert_eq!(s.skipped_unsafe, 6);
    assert_eq!(
        files_under(work.path()),
        vec![
            PathBuf::from("one/two/.dest.chute-state"),
            PathBuf::from("one/two/dest/ok/a.bin")
        ]
    );
    assert_eq!(std::fs::read(dest.join("ok/a.bin")).expect("read"), bytes);
}

/// Streamed objects (ranged parts, and one object too big to hold in memory)
/// written in many small batches land byte for byte at their offsets, whether
/// the batches are written on the async workers (the default) or on the
/// blocking pool (where a download moves once the page cache is slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_batches_land_at_their_offsets_on_workers_and_on_the_pool() {
    // Not periodic, so a batch written at a wrong offset cannot match.
    let files = [
        ("parts.bin", pattern(5 * 1024 * 1024 + 12_345, 1)),
        ("streamed.bin", pattern(700_001, 2)),
        ("empty.bin", Vec::new()),
    ];
    let src = source(&files);
    let client = local_client(src.path(), RetryPolicy::default());
    let plan = Plan {
        objects: files
            .iter()
            .map(|(k, d)| object(k, k, d.len(), None))
            .collect(),
        ..Plan::default()
    };
    for write_on_workers in [true, false] {
        let work = tempfile::tempdir().expect("tempdir");
        let dest = work.path().join("d");
        let opts = DownloadOptions {
            part_size: 1 << 20,
            small_object: 64 << 10,
            write_buffer: 4096,
            write_on_workers,
            ..quiet()
        };
        let s = download(&client, &plan, &dest, &opts)
            .await
            .expect("download");
        assert_eq!(s.objects, 3);
        for (k, d) in &files {
            let got = std::fs::read(dest.join(k)).expect("read");
            assert!(
                got == *d,
                "{k} differs (write_on_workers: {write_on_workers})"
            );
        }
    }
}

#[tokio::test]
async fn a_symlink_inside_dest_is_not_followed() {
    let bytes = pattern(10, 2);
    let src = source(&[("a.bin", bytes.clone())]);
    let client = local_client(src.path(), RetryPolicy::default());
    let outside = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), dest.join("link")).expect("symlink");
    let plan = Plan {
        objects: vec![object("a.bin", "link/a.bin", bytes.len(), None)],
        ..Plan::default()
    };
    let err = download(&client, &plan, &dest, &quiet())
        .await
        .expect_err("refused");
    assert!(err.is_usage(), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).expect("read").count(), 0);
}

/// `files` in memory with the given ETags (quoted, as S3 gives them), behind
/// a fault store whose `n`th GET has the first byte of its body XORed with
/// `corrupt(n)` (none where it says `None`); the memory store counts the GETs.
fn tampering(
    files: &[(&str, Vec<u8>)],
    etags: Vec<(String, String)>,
    corrupt: fn(usize) -> Option<u8>,
) -> (Client, Arc<MemStore>) {
    let mem = Arc::new(MemStore::new());
    for (key, bytes) in files {
        match etags.iter().find(|(k, _)| k == key) {
            Some((_, e)) => mem.put_with_etag("", key, bytes.clone(), &format!("\"{e}\"")),
            None => {
                mem.put("", key, bytes.clone());
            }
        }
    }
    let faults = FaultStore::new(mem.clone());
    // One rule per GET, in order: each GET uses up the first one left.
    for n in 0..64 {
        let fault = match corrupt(n) {
            Some(xor) => StoreFault::Corrupt { xor },
            None => StoreFault::Delay {
                duration: Duration::ZERO,
            },
        };
        faults.push(StoreRule::new(fault).op(Op::Get));
    }
    (Client::new(Arc::new(faults), RetryPolicy::default()), mem)
}

#[tokio::test]
async fn a_corrupted_transfer_is_caught_by_the_md5_and_fetched_again() {
    let bytes = pattern(200_000, 3);
    let etag = md5_hex(&bytes);
    let (client, store) = tampering(
        &[("a.bin", bytes.clone())],
        vec![("a.bin".into(), etag.clone())],
        |n| (n == 0).then_some(0x40),
    );
    let plan = Plan {
        objects: vec![object(
            "a.bin",
            "a.bin",
            bytes.len(),
            Some(format!("\"{etag}\"")),
        )],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    download(&client, &plan, &dest, &quiet())
        .await
        .expect("download");
    assert_eq!(store.counts().get, 2);
    assert_eq!(std::fs::read(dest.join("a.bin")).expect("read"), bytes);
}

#[tokio::test]
async fn bytes_that_differ_on_every_transfer_fail_verification_and_leave_nothing() {
    let bytes = pattern(50_000, 4);
    let etag = md5_hex(&bytes);
    let (client, _store) = tampering(
        &[("a.bin", bytes.clone())],
        vec![("a.bin".into(), etag.clone())],
        |n| Some(1 << (n % 8)),
    );
    let plan = Plan {
        objects: vec![object("a.bin", "a.bin", bytes.len(), Some(etag))],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    let err = download(&client, &plan, &dest, &quiet())
        .await
        .expect_err("verification fails");
    assert!(matches!(err, DownloadError::Verify { .. }), "{err}");
    assert!(err.is_source());
    assert!(files_under(&dest).is_empty(), "{:?}", files_under(&dest));
}

#[tokio::test]
async fn etags_that_are_not_md5_digests_are_tolerated() {
    // As with SSE-KMS: 32 hex digits that are not the MD5 of the content.
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("f{i}.bin"), pattern(3000 + i, i as u64)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
    let etags: Vec<(String, String)> = files
        .iter()
        .map(|(k, _)| (k.clone(), md5_hex(k.as_bytes())))
        .collect();
    let (client, store) = tampering(&refs, etags.clone(), |_| None);
    let plan = Plan {
        objects: files
            .iter()
            .zip(&etags)
            .map(|((k, d), (_, e))| object(k, k, d.len(), Some(e.clone())))
            .collect(),
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    let opts = DownloadOptions {
        concurrency: 1,
        ..quiet()
    };
    let s = download(&client, &plan, &dest, &opts)
        .await
        .expect("download");
    assert_eq!(s.objects, 6);
    for (k, d) in &files {
        assert_eq!(&std::fs::read(dest.join(k)).expect("read"), d);
    }
    // Two GETs each for the first three objects, then MD5 checks stop.
    assert_eq!(store.counts().get, 3 * 2 + 3);
}

/// `files` in memory behind a store whose bodies crawl (a pause before each
/// MiB), so a download can be caught mid-way.
fn slow(files: &[(&str, Vec<u8>)]) -> Client {
    let mem = Arc::new(MemStore::new().with_chunk_size(1 << 20));
    for (key, bytes) in files {
        mem.put("", key, bytes.clone());
    }
    let faults = FaultStore::new(mem);
    faults.push(
        StoreRule::new(StoreFault::SlowBody {
            pause: Duration::from_millis(400),
        })
        .op(Op::Get)
        .always(),
    );
    Client::new(Arc::new(faults), RetryPolicy::default())
}

#[tokio::test]
async fn dropping_the_download_removes_its_temporary_files() {
    let big = pattern(6 << 20, 9);
    let client = slow(&[("big.bin", big.clone()), ("small.bin", pattern(10, 1))]);
    let meta = client.head("", "big.bin").await.expect("head");
    let plan = Plan {
        objects: vec![
            object("big.bin", "big.bin", big.len(), meta.etag),
            object("small.bin", "small.bin", 10, None),
        ],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    let opts = DownloadOptions {
        part_size: 1 << 20,
        ..quiet()
    };
    let part = dest.join(".chute-tmp").join("0.part");
    tokio::select! {
        r = download(&client, &plan, &dest, &opts) => panic!("finished too early: {r:?}"),
        () = async {
            while !part.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } => {}
    }
    // Let aborted tasks and their last file-system jobs finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dest.join(".chute-tmp").exists());
    assert!(!dest.join("big.bin").exists());
    // And a rerun completes it.
    let s = download(&client, &plan, &dest, &opts).await.expect("rerun");
    assert!(s.objects >= 1);
    assert_eq!(
        sha2::Sha256::digest(std::fs::read(dest.join("big.bin")).expect("read")),
        sha2::Sha256::digest(&big)
    );
}

/// A client of the local directory `src` that runs `hook` before each GET is
/// answered: another process changing DEST while the download runs.
fn hooked(src: &Path, hook: impl Fn(&str) + Send + Sync + 'static) -> Client {
    let store = FaultStore::new(Arc::new(LocalStore::new(src).expect("store"))).on_get(hook);
    Client::new(Arc::new(store), RetryPolicy::default())
}

/// Every entry directly in `dir`, as names.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pages of `path` in the page cache that are dirty or under writeback
/// (`cachestat(2)`, Linux 6.5); `None` where the kernel lacks it.
fn unsynced_pages(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: nix::libc::c_long = 451;
    let file = std::fs::File::open(path).expect("open");
    let range = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: both pointers are to live, properly laid out structs.
    let rc = unsafe {
        nix::libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0,
        )
    };
    (rc == 0).then_some(st.dirty + st.writeback)
}

/// A scratch directory on a disk file system (the target directory), where
/// dirty pages mean something, unlike on a tmpfs.
fn disk_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir in the target directory")
}

/// Recorded state entries, by path.
fn recorded(state: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(state).expect("state file");
    text.lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["p"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_recorded_complete_only_once_its_data_is_on_disk() {
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("d{}/f{i}.bin", i % 3),
                pattern(20_000 + i * 7_001, i as u64),
            )
        })
        .chain([("big.bin".to_owned(), pattern(3 << 20, 99))])
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
    let src = source(&refs);
    let client = local_client(src.path(), RetryPolicy::default());
    let mut plan = Plan::default();
    for (k, d) in &files {
        let etag = client.head("", k).await.expect("head").etag;
        plan.objects.push(object(k, k, d.len(), etag));
    }
    let work = disk_tempdir();
    let dest = work.path().join("d");
    let opts = DownloadOptions {
        part_size: 1 << 20,
        ..quiet()
    };
    let s = download(&client, &plan, &dest, &opts)
        .await
        .expect("download");
    assert_eq!(s.objects, files.len());
    let paths = recorded(&work.path().join(".d.chute-state"));
    assert_eq!(paths.len(), files.len(), "every file recorded");
    for p in &paths {
        match unsynced_pages(&dest.join(p)) {
            Some(n) => assert_eq!(n, 0, "{p} is recorded complete but not on disk yet"),
            None => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cachestat(2) is missing (Linux < 6.5): cannot check durability"
                );
                eprintln!("note: no cachestat(2) here; durability not checked");
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_download_into_the_same_dest_is_refused_at_once() {
    let big = pattern(3 << 20, 5);
    let client = slow(&[("big.bin", big.clone())]);
    let plan = Plan {
        objects: vec![object("big.bin", "big.bin", big.len(), None)],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    // No resume state: the lock must not depend on it.
    let opts = DownloadOptions {
        part_size: 1 << 20,
        resume: false,
        ..quiet()
    };
    let first = {
        let (client, plan, dest, opts) = (client.clone(), plan.clone(), dest.clone(), opts.clone());
        tokio::spawn(async move { download(&client, &plan, &dest, &opts).await })
    };
    while names_in(&dest.join(".chute-tmp")).is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        download(&client, &plan, &dest, &opts),
    )
    .await
    .expect("the second download must fail at once, not wait or run");
    let err = second.expect_err("refused");
    assert!(err.is_usage(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&dest.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "names the holder: {msg}"
    );
    let s = first
        .await
        .expect("join")
        .expect("the first download goes on");
    assert_eq!(s.objects, 1);
    assert_eq!(std::fs::read(dest.join("big.bin")).expect("read"), big);
}

#[tokio::test]
async fn a_temporary_file_replaced_midway_is_never_published() {
    let bytes = pattern(300_000, 6);
    let src = source(&[("a.bin", bytes.clone())]);
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    let tmp = dest.join(".chute-tmp");
    let size = bytes.len();
    // Another writer swaps every temporary file for its own of the same size.
    let client = hooked(src.path(), move |_| {
        for name in names_in(&tmp) {
            let p = tmp.join(name);
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, vec![b'X'; size]).expect("write");
        }
    });
    let plan = Plan {
        objects: vec![object("a.bin", "a.bin", size, None)],
        ..Plan::default()
    };
    // Streamed to its temporary file (not held in memory).
    let opts = DownloadOptions {
        small_object: 1024,
        ..quiet()
    };
    let result = download(&client, &plan, &dest, &opts).await;
    if let Ok(got) = std::fs::read(dest.join("a.bin")) {
        assert!(got == bytes, "a file chute did not verify was published");
    }
    let err = result.expect_err("the swap is detected");
    assert!(err.to_string().contains(".chute-tmp"), "{err}");
}

#[tokio::test]
async fn a_symlinked_state_file_is_not_followed() {
    let bytes = pattern(1000, 7);
    let src = source(&[("a.bin", bytes.clone())]);
    let client = local_client(src.path(), RetryPolicy::default());
    let etag = client.head("", "a.bin").await.expect("head").etag;
    let plan = Plan {
        objects: vec![object("a.bin", "a.bin", bytes.len(), etag)],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let victim = work.path().join("precious.txt");
    std::fs::write(&victim, b"precious").expect("write");
    let dest = work.path().join("d");
    std::os::unix::fs::symlink(&victim, work.path().join(".d.chute-state")).expect("symlink");
    let s = download(&client, &plan, &dest, &quiet())
        .await
        .expect("download (without resume)");
    assert_eq!(s.objects, 1);
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    assert_eq!(std::fs::read(dest.join("a.bin")).expect("read"), bytes);
    // An explicit state file that is a link is not followed either.
    let opts = DownloadOptions {
        state_file: Some(work.path().join(".d.chute-state")),
        ..quiet()
    };
    download(&client, &plan, &dest, &opts)
        .await
        .expect("download (without resume)");
    assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
}

#[tokio::test]
async fn a_symlink_planted_while_the_download_runs_is_not_followed() {
    let bytes = pattern(2000, 8);
    let src = source(&[("a.bin", bytes.clone())]);
    let outside = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    std::fs::create_dir(&dest).expect("mkdir");
    // After the paths were checked, `sub` (not there yet) becomes a link.
    let (link, target) = (dest.join("sub"), outside.path().to_path_buf());
    let client = hooked(src.path(), move |_| {
        let _ = std::os::unix::fs::symlink(&target, &link);
    });
    let plan = Plan {
        objects: vec![object("a.bin", "sub/deeper/a.bin", bytes.len(), None)],
        ..Plan::default()
    };
    let err = download(&client, &plan, &dest, &quiet())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(err.is_usage(), "{err}");
    assert!(
        names_in(outside.path()).is_empty(),
        "written outside DEST: {:?}",
        names_in(outside.path())
    );
}

#[tokio::test]
async fn a_refused_download_creates_nothing() {
    let src = source(&[("a.bin", pattern(10, 9))]);
    let client = local_client(src.path(), RetryPolicy::default());
    // More than any disk: refused by the space check.
    let plan = Plan {
        objects: vec![object("a.bin", "a.bin", 1 << 60, Some("\"e\"".into()))],
        ..Plan::default()
    };
    let work = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("x").join("y").join("d");
    let err = download(&client, &plan, &dest, &quiet())
        .await
        .expect_err("refused");
    assert!(matches!(err, DownloadError::NotEnoughSpace { .. }), "{err}");
    assert!(
        names_in(work.path()).is_empty(),
        "{:?}",
        names_in(work.path())
    );

    // A bad destination: a link where a directory is needed.
    let outside = tempfile::tempdir().expect("tempdir");
    let dest = work.path().join("d");
    std::fs::create_dir(&dest).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), dest.join("link")).expect("symlink");
    let plan = Plan {
        objects: vec![object("a.bin", "link/a.bin", 10, Some("\"e\"".into()))],
        ..Plan::default()
    };
    let err = download(&client, &plan, &dest, &quiet())
        .await
        .expect_err("refused");
    assert!(err.is_usage(), "{err}");
    assert_eq!(names_in(work.path()), ["d"]);
    assert_eq!(names_in(&dest), ["link"]);
}
