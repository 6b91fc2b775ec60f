//! `chute-bench fastfile`: FastFile mode against the raw parallel-GET baseline
//! on the same server in the same run. Each measurement gets a fresh
//! `chute mount` child process (so no page cache carries over and its peak
//! RSS is its own; its disk cache, when it has one, in a new directory), read with plain `read(2)` calls of 1 MiB, as `dd bs=1M` or
//! a data loader would:
//!
//! 1. one reader, the 1 GiB object;
//! 2. 8 readers over the 40 × 25 MiB objects (reader k takes objects k, k+8, ...);
//! 3. one reader through the 2,000 × 256 KiB objects in listing order, also
//!    against chute's own File-mode download of the same prefix;
//! 4. random 256 KiB reads over the 1 GiB object (one reader);
//! 5. time to first byte after `open` (cold), against one raw GET's;
//! 6. mount start-up time, `find` and `ls -lR` over a 100,000-object prefix,
//!    against a raw listing of it.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use chute_download::{download, DownloadOptions};
use chute_s3::{ListOptions, ObjectStore};
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use crate::product::MountChild;
use crate::report::{median_duration, Measure, Series, Table};
use crate::target::{baseline, upload_objects, BenchTarget, Conn, Dataset};

/// Objects in the listing dataset (measurement 6).
const LISTING_OBJECTS: usize = 100_000;
/// Random reads in measurement 4.
const RANDOM_READS: usize = 2_000;
const RANDOM_READ: usize = 256 << 10;
const MAX_MEMORY: &str = "1GiB";

pub async fn run(t: &BenchTarget) -> anyhow::Result<()> {
    let conn = t.connect().await?;
    let client = &conn.client;
    let chute = t.chute.path()?;
    let tmp = std::env::temp_dir();
    let mount = |source: &str| MountChild::start(&chute, source, &mount_flags(t), &tmp);
    let mut table = Table::new("FastFile mode (chute mount) vs raw parallel GETs");
    let mut notes = Vec::new();
    let mut peaks = Vec::new();
    for d in t.datasets() {
        let objects = t.objects(client, d).await?;
        let expected: u64 = objects.iter().map(|o| o.size).sum();
        let paths: Vec<String> = objects
            .iter()
            .map(|o| o.key[d.prefix(&t.prefix).len()..].to_owned())
            .collect();
        let mut base = Series::default();
        // (row label, series) in table order.
        let mut rows: Vec<(&str, Series)> = Vec::new();
        let series = |rows: &mut Vec<(&'static str, Series)>, label: &'static str, m: Measure| {
            let i = match rows.iter().position(|(l, _)| *l == label) {
                Some(i) => i,
                None => {
                    rows.push((label, Series::default()));
                    rows.len() - 1
                }
            };
            rows[i].1.push(d.label(), label, m);
        };
        let (mut raw_randoms, mut ttfbs, mut raw_ttfbs) =
            (Series::default(), Vec::new(), Vec::new());
        for _ in 0..t.runs() {
            base.push(
                d.label(),
                "raw parallel GETs",
                baseline(t, &conn, &objects).await?,
            );
            match d {
                Dataset::Large => {
                    let m = mount(&t.uri(d))?;
                    let p = m.path().join(&paths[0]);
                    let r = tokio::task::spawn_blocking(move || read_files(&[p])).await??;
                    anyhow::ensure!(r.bytes == expected, "read {} of {expected} bytes", r.bytes);
                    peak(&mut peaks, "1 reader, 1 GiB", m.stop()?);
                    series(&mut rows, "(1) chute mount, 1 reader", r);

                    let m = mount(&t.uri(d))?;
                    let p = m.path().join(&paths[0]);
                    let size = expected;
                    let r = tokio::task::spawn_blocking(move || random_reads(&p, size)).await??;
                    peak(&mut peaks, "random 256 KiB reads", m.stop()?);
                    series(&mut rows, "(4) random 256 KiB reads", r);
                    // The same reads as raw GETs take half a minute: once is enough.
                    if raw_randoms.runs() == 0 {
                        raw_randoms.push(
                            d.label(),
                            "(4) as raw GETs one at a time",
                            raw_random(t, &conn, &objects[0].key, size).await?,
                        );
                    }

                    let m = mount(&t.uri(d))?;
                    let p = m.path().join(&paths[0]);
                    ttfbs.push(tokio::task::spawn_blocking(move || first_byte(&p)).await??);
                    m.stop()?;
                    raw_ttfbs.push(raw_first_byte(t, &conn, &objects[0].key).await?);
                }
                Dataset::Medium => {
                    let m = mount(&t.uri(d))?;
                    let root = m.path().to_path_buf();
                    let paths = paths.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        let files: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
                        parallel_readers(&files, 8)
                    })
                    .await??;
                    anyhow::ensure!(r.bytes == expected, "read {} of {expected} bytes", r.bytes);
                    peak(&mut peaks, "8 readers, 40 × 25 MiB", m.stop()?);
                    series(&mut rows, "(2) chute mount, 8 readers", r);
                }
                Dataset::Small => {
                    let m = mount(&t.uri(d))?;
                    let root = m.path().to_path_buf();
                    let files: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
                    let r = tokio::task::spawn_blocking(move || read_files(&files)).await??;
                    anyhow::ensure!(r.bytes == expected, "read {} of {expected} bytes", r.bytes);
                    peak(&mut peaks, "1 reader, 2,000 × 256 KiB", m.stop()?);
                    series(&mut rows, "(3) chute mount, 1 reader in order", r);
                    let dl = file_mode(t, client, d, &objects).await?;
                    series(&mut rows, "chute download (File mode)", dl);
                }
            }
        }
        table.row(d.label(), "raw parallel GETs", &base, &base);
        for (label, s) in &rows {
            table.row(d.label(), label, s, &base);
        }
        let find = |label: &str| {
            rows.iter()
                .find(|(l, _)| *l == label)
                .map(|(_, s)| s.clone())
        };
        if let Some(r) = find("(4) random 256 KiB reads") {
            notes.push(format!(
                "(4) random 256 KiB reads: {:.0} MB/s through the mount vs {:.0} MB/s for the same reads as raw ranged GETs one at a time ({:.2} ×)",
                r.median(),
                raw_randoms.median(),
                r.ratio(&raw_randoms)
            ));
        }
        if !ttfbs.is_empty() {
            let (ttfb, raw) = (median_duration(&mut ttfbs), median_duration(&mut raw_ttfbs));
            notes.push(format!(
                "(5) time to first byte after open(), cold: {:.1} ms through the mount vs {:.1} ms for a raw GET ({:.2} ×)",
                ttfb.as_secs_f64() * 1e3,
                raw.as_secs_f64() * 1e3,
                ttfb.as_secs_f64() / raw.as_secs_f64().max(1e-9)
            ));
        }
        if let (Some(r), Some(dl)) = (
            find("(3) chute mount, 1 reader in order"),
            find("chute download (File mode)"),
        ) {
            notes.push(format!(
                "(3) one reader in listing order: {:.0} MB/s = {:.2} × chute's own File-mode download of the prefix ({:.0} MB/s)",
                r.median(),
                r.ratio(&dl),
                dl.median()
            ));
        }
    }
    let listing = listing_bench(t, &conn, &mount).await?;
    table.print();
    println!();
    for n in notes {
        println!("{n}");
    }
    println!("{listing}");
    println!(
        "\nPeak RSS of the chute mount process, highest of the runs (--max-memory {MAX_MEMORY}):\n"
    );
    println!("| workload | peak RSS |");
    println!("|---|---:|");
    for (w, kb) in peaks {
        println!("| {w} | {:.0} MiB |", kb as f64 / 1024.0);
    }
    Ok(())
}

/// Reads the files one after the other, in order, with 1 MiB reads.
fn read_files(files: &[PathBuf]) -> anyhow::Result<Measure> {
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(Measure {
        bytes,
        secs: t.elapsed().as_secs_f64(),
    })
}

fn parallel_readers(files: &[PathBuf], readers: usize) -> anyhow::Result<Measure> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<Measure>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..readers)
            .map(|k| {
                let mine: Vec<PathBuf> = files.iter().skip(k).step_by(readers).cloned().collect();
                s.spawn(move || read_files(&mine))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reader panicked")))
            })
            .collect()
    });
    let mut bytes = 0;
    for r in results {
        bytes += r?.bytes;
    }
    Ok(Measure {
        bytes,
        secs: t.elapsed().as_secs_f64(),
    })
}

fn offsets(size: u64) -> Vec<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..RANDOM_READS)
        .map(|_| rng.gen_range(0..size - RANDOM_READ as u64))
        .collect()
}

fn random_reads(path: &Path, size: u64) -> anyhow::Result<Measure> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; RANDOM_READ];
    let t = Instant::now();
    let mut bytes = 0;
    for off in offsets(size) {
        f.read_exact_at(&mut buf, off)?;
        bytes += RANDOM_READ as u64;
    }
    Ok(Measure {
        bytes,
        secs: t.elapsed().as_secs_f64(),
    })
}

async fn raw_random(t: &BenchTarget, conn: &Conn, key: &str, size: u64) -> anyhow::Result<Measure> {
    let start = Instant::now();
    let mut bytes = 0;
    for off in offsets(size) {
        let resp = conn
            .store
            .get_range(&t.bucket, key, off..off + RANDOM_READ as u64, None)
            .await?;
        let mut body = resp.body;
        while let Some(c) = body.next().await {
            bytes += c?.len() as u64;
        }
    }
    Ok(Measure {
        bytes,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn first_byte(path: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut b = [0u8; 4096];
    let n = f.read(&mut b)?;
    anyhow::ensure!(n > 0, "empty read");
    Ok(t.elapsed())
}

async fn raw_first_byte(t: &BenchTarget, conn: &Conn, key: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let resp = conn.store.get_range(&t.bucket, key, 0..4096, None).await?;
    let mut body = resp.body;
    let _ = body.next().await;
    Ok(start.elapsed())
}

async fn file_mode(
    t: &BenchTarget,
    client: &chute_s3::Client,
    d: Dataset,
    objects: &[chute_s3::ObjectMeta],
) -> anyhow::Result<Measure> {
    let plan = t.plan(d, objects);
    let dest = tempfile::tempdir()?;
    let opts = DownloadOptions {
        progress: false,
        resume: false,
        ..DownloadOptions::default()
    };
    let started = Instant::now();
    download(client, &plan, &dest.path().join("dl"), &opts).await?;
    Ok(Measure {
        bytes: objects.iter().map(|o| o.size).sum(),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Measurement 6 on `<prefix>listing/`, uploaded here the first time.
async fn listing_bench(
    t: &BenchTarget,
    conn: &Conn,
    mount: &dyn Fn(&str) -> anyhow::Result<MountChild>,
) -> anyhow::Result<String> {
    let client = &conn.client;
    let prefix = format!("{}listing/", t.prefix);
    let key = |i: usize| format!("{prefix}d{:03}/f{i:06}.bin", i / 1000);
    let listed = client
        .list(&t.bucket, &prefix, &ListOptions::default())
        .await?;
    if listed.len() != LISTING_OBJECTS {
        let started = Instant::now();
        let keys = (0..LISTING_OBJECTS).map(key).collect();
        upload_objects(&t.s3_config(), &t.bucket, keys, 64, |_| {
            bytes::Bytes::from_static(b"x")
        })
        .await?;
        println!(
            "listing: uploaded {LISTING_OBJECTS} objects in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let t0 = Instant::now();
    let n = client
        .list(&t.bucket, &prefix, &ListOptions::default())
        .await?
        .len();
    let raw_list = t0.elapsed();
    anyhow::ensure!(n == LISTING_OBJECTS, "listing has {n} objects");
    let m = mount(&format!("s3://{}/{prefix}", t.bucket))?;
    let ready = m.ready_in;
    let root = m.path().to_path_buf();
    let (find, find_n, ls) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let t = Instant::now();
        let out = Command::new("find").arg(&root).output()?;
        let find = t.elapsed();
        let find_n = out.stdout.iter().filter(|&&b| b == b'\n').count();
        let t = Instant::now();
        let out = Command::new("ls").arg("-lR").arg(&root).output()?;
        anyhow::ensure!(out.status.success(), "ls -lR failed");
        Ok((find, find_n, t.elapsed()))
    })
    .await??;
    m.stop()?;
    anyhow::ensure!(find_n == LISTING_OBJECTS + 101, "find saw {find_n} entries");
    Ok(format!(
        "(6) {LISTING_OBJECTS}-object prefix: raw LIST {:.2} s; chute mount ready in {:.2} s (listing included); \
         find {:.2} s; ls -lR {:.2} s",
        raw_list.as_secs_f64(),
        ready.as_secs_f64(),
        find.as_secs_f64(),
        ls.as_secs_f64()
    ))
}

/// `chute mount` flags of every measurement: the memory budget the figures
/// are quoted at, no periodic stats lines, and the target's endpoint.
fn mount_flags(t: &BenchTarget) -> Vec<String> {
    let mut f = vec![
        "--max-memory".to_owned(),
        MAX_MEMORY.to_owned(),
        "--stats-interval".to_owned(),
        "0".to_owned(),
    ];
    f.extend(t.chute_flags());
    f
}

/// Keeps the highest peak RSS seen for a workload.
fn peak(peaks: &mut Vec<(&'static str, u64)>, workload: &'static str, kib: u64) {
    match peaks.iter_mut().find(|(w, _)| *w == workload) {
        Some((_, p)) => *p = (*p).max(kib),
        None => peaks.push((workload, kib)),
    }
}
