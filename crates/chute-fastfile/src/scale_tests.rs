//! What a mount costs per object, measured: a plan of realistic keys (thousands
//! of `train/shard-NNNNN/` directories plus one flat directory) is built into a
//! [`FastFs`] exactly as a mount builds it, and the bytes this thread holds are
//! counted by a counting allocator. The figure is the memory beyond the key
//! bytes themselves, per object: the plan while it lives, then the inode table
//! and the per-object state of the read path once the plan is consumed.
//!
//! Ten million objects take a while to generate, so that run is ignored by
//! default; run it with
//! `cargo test --release -p chute-fastfile --lib scale -- --ignored --nocapture`.
//! A 200k-object run checks the same bound on every test run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use chute_plan::{plan_from_listing, ETag, ObjectInfo, Plan, PlannedObject};
use chute_s3::Client;
use chute_testkit::harness::fast_policy;
use chute_testkit::MemStore;

use crate::fs::FastFs;
use crate::tree::ROOT;
use crate::{CacheOptions, MountOptions, Prefetch};

/// The bound of issue 13: metadata per object beyond its key bytes.
const MAX_BYTES_PER_OBJECT: f64 = 150.0;

/// Counts the bytes each thread has allocated and not freed, and their peak.
/// Per thread, so that tests running at the same time do not disturb the
/// count; everything measured here is built on the test's own thread.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only the
// thread-local counters are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Starts a new peak from the bytes live now.
fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

fn peak() -> isize {
    PEAK.with(Cell::get)
}

/// `objects` keys: 90 % in directories of 1000 (`train/shard-NNNNN/`), the rest
/// in one flat directory (`flat/`), under the prefix `data/`.
fn key(i: u64, objects: u64) -> String {
    let in_shards = objects / 10 * 9;
    if i < in_shards {
        format!("data/train/shard-{:05}/sample-{:07}.jpg", i / 1000, i)
    } else {
        format!("data/flat/sample-{:07}.jpg", i - in_shards)
    }
}

/// A plausible listed ETag: a quoted MD5 in hex, a multipart one now and then.
fn etag(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if i.is_multiple_of(16) {
        format!("\"{h:016x}{:016x}-{}\"", !h, 1 + i % 9)
    } else {
        format!("\"{h:016x}{:016x}\"", !h)
    }
}

/// The plan a listing of `objects` keys produces, built straight into its
/// final form (a listing of ten million keys would dominate the run).
fn plan(objects: u64) -> Plan {
    let bucket: Arc<str> = Arc::from("training-data");
    let objects = (0..objects)
        .map(|i| {
            let key = key(i, objects);
            let path = key["data/".len()..].to_owned();
            let etag = Some(ETag::from(etag(i)));
            PlannedObject::new(bucket.clone(), key, 100_000 + i % 1000, etag, &path)
        })
        .collect();
    Plan {
        objects,
        dirs: Vec::new(),
        skipped: Vec::new(),
    }
}

struct Figures {
    objects: u64,
    key_bytes: u64,
    /// The plan alone, beyond key bytes, per object.
    plan: f64,
    /// The built file system (inode table + read-path state), the plan gone.
    mounted: f64,
    /// The most held at once while building it, beyond key bytes, per object.
    build_peak: f64,
}

fn measure(objects: u64, cache: Option<&std::path::Path>) -> Figures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(Arc::new(MemStore::new()), fast_policy());
    let opts = MountOptions {
        max_memory: 64 << 20,
        stats_interval: None,
        prefetch: Some(Prefetch::Off),
        cache: cache.map(|dir| CacheOptions {
            dir: dir.to_path_buf(),
            size: Some(1 << 30),
        }),
        ..MountOptions::default()
    };

    let base = live();
    let plan = plan(objects);
    let key_bytes: u64 = plan.objects.iter().map(|o| o.key().len() as u64).sum();
    let per_object = |bytes: isize| (bytes as f64 - key_bytes as f64) / objects as f64;
    let plan_figure = per_object(live() - base);

    reset_peak();
    let fs = FastFs::build(plan, client, &opts, rt.handle().clone()).expect("build");
    let mounted = per_object(live() - base);
    let build_peak = per_object(peak() - base);

    // It answers: a file deep down and one in the flat directory.
    for path in [
        "train/shard-00001/sample-0001234.jpg".to_owned(),
        format!("flat/sample-{:07}", objects / 10 - 1) + ".jpg",
    ] {
        let mut ino = ROOT;
        for name in path.split('/') {
            ino = fs.lookup(ino, name.as_bytes()).expect(&path).ino;
        }
        assert!(fs.attr(ino).expect("attr").size >= 100_000);
    }
    drop(fs);
    Figures {
        objects,
        key_bytes,
        plan: plan_figure,
        mounted,
        build_peak,
    }
}

fn report(f: &Figures, what: &str) {
    println!(
        "{} objects ({what}), {:.1} key bytes/object: plan {:.1} B/object, \
         mounted (inode table + read-path state) {:.1} B/object, peak while building {:.1} B/object \
         (beyond key bytes; allocator overhead not counted)",
        f.objects,
        f.key_bytes as f64 / f.objects as f64,
        f.plan,
        f.mounted,
        f.build_peak,
    );
    assert!(
        f.mounted <= MAX_BYTES_PER_OBJECT,
        "{:.1} bytes per object once mounted",
        f.mounted
    );
    assert!(
        f.plan <= MAX_BYTES_PER_OBJECT,
        "{:.1} bytes per object in the plan",
        f.plan
    );
}

#[test]
fn metadata_per_object_200k() {
    report(&measure(200_000, None), "no disk cache");
    let dir = tempfile::tempdir().expect("tempdir");
    report(&measure(200_000, Some(dir.path())), "disk cache");
}

#[test]
#[ignore = "10M objects: a minute and ~3 GB; run with --release -- --ignored"]
fn metadata_per_object_10m() {
    report(&measure(10_000_000, None), "no disk cache");
    let dir = tempfile::tempdir().expect("tempdir");
    report(&measure(10_000_000, Some(dir.path())), "disk cache");
}

/// Planning a listing holds the listing and the plan at once: its peak, per
/// object beyond key bytes, for 1M listed keys.
#[test]
fn planning_peak_per_object() {
    let n = 1_000_000;
    let base = live();
    reset_peak();
    let listing: Vec<ObjectInfo> = (0..n)
        .map(|i| ObjectInfo {
            bucket: "training-data".into(),
            key: key(i, n),
            size: 1,
            etag: Some(etag(i)),
        })
        .collect();
    let key_bytes: u64 = listing.iter().map(|o| o.key.len() as u64).sum();
    let listed = live() - base;
    let plan = plan_from_listing("data/", listing);
    assert_eq!(plan.objects.len() as u64, n);
    let planned = live() - base;
    let per = |b: isize| (b as f64 - key_bytes as f64) / n as f64;
    println!(
        "{n} listed keys: listing {:.1} B/object, plan {:.1} B/object, peak while planning {:.1} B/object (beyond key bytes)",
        per(listed),
        per(planned),
        per(peak() - base),
    );
    assert!(per(planned) <= MAX_BYTES_PER_OBJECT);
}
