//! `chute-bench shuffle`: the pattern of a PyTorch `DataLoader` — N worker
//! processes reading every file of the channel whole, in a seeded shuffled order,
//! epoch after epoch — against FastFile (`chute mount` with its defaults), File
//! mode (`chute download`, then the same reads from the local disk) and raw
//! parallel GETs of the same objects, in one run against one server.
//!
//! Each tool starts from a dropped page cache (`echo 3 > drop_caches`), and each
//! mode gets one more epoch after dropping it again: by then a real dataset no
//! longer fits in memory, and what matters is where the bytes come from.
//!
//! The workers are this binary re-executed (`shuffle-worker`), kept for the
//! whole run of one tool like `persistent_workers=True`, and told over stdin to
//! run an epoch: worker k reads positions k, k+N, ... of the epoch's permutation
//! (a seeded shuffle of the sorted file list, seeded by (seed, epoch); the same
//! for every tool). Each file's size and its first and last 8 bytes are checked.
//! GETs come from the server's own request counters (Garage's metrics endpoint);
//! peak RSS from the kernel (`VmHWM`, reset before each epoch).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use chute_s3::{ListOptions, ObjectMeta};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::product::{
    can_drop_page_cache, drop_page_cache, has_disk_cache, reset_peak_rss, run_measured,
    server_gets, MountChild,
};
use crate::target::{connect, object_bytes, raw_gets, upload_objects, ChuteBin};

/// Seed of the dataset's bytes (distinct from the standard datasets').
const DATA_SEED: u64 = 0x5_4F_FE;

#[derive(Debug, clap::Args, Clone)]
pub struct ShuffleArgs {
    /// S3 endpoint to measure (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Bucket for the dataset (must exist); the dataset is uploaded the first time.
    #[arg(long)]
    pub bucket: String,
    /// Key prefix of the bench datasets, ending in '/'.
    #[arg(long, default_value = "chute-bench/")]
    pub prefix: String,
    /// Objects in the dataset.
    #[arg(long, default_value_t = 4000)]
    pub count: usize,
    /// Size of each object, in KiB.
    #[arg(long, default_value_t = 128)]
    pub size_kib: usize,
    /// Directories the objects are spread over.
    #[arg(long, default_value_t = 40)]
    pub dirs: usize,
    /// Reader processes.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Epochs before the page cache is dropped (then one more after it).
    #[arg(long, default_value_t = 2)]
    pub epochs: u64,
    /// Shuffle seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// GETs in flight for the raw baseline.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Prometheus endpoint with the server's request counters (Garage's admin
    /// API); GETs read "n/a" when it cannot be read.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:3903/metrics"
    )]
    pub metrics_url: String,
    /// Directory for File mode's download and FastFile's disk cache (the same
    /// disk for both; not tmpfs, whose pages a cache drop cannot drop).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// An extra `chute mount` argument (repeatable), e.g. --mount-arg=--prefetch=off.
    #[arg(long = "mount-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub mount_args: Vec<String>,
    #[command(flatten)]
    pub chute: ChuteBin,
}

/// `shuffle-worker`: one reader process.
#[derive(Debug, clap::Args, Clone)]
pub struct WorkerArgs {
    /// The channel's root directory (a mount or a download).
    #[arg(long)]
    pub root: PathBuf,
    /// The file list: `<relative path>\t<size>\t<first 8 bytes hex>\t<last 8 bytes hex>` lines.
    #[arg(long)]
    pub list: PathBuf,
    /// This worker's index.
    #[arg(long)]
    pub index: usize,
    #[arg(long)]
    pub workers: usize,
    #[arg(long)]
    pub seed: u64,
}

/// One file of the dataset as the workers check it.
struct Entry {
    path: String,
    size: u64,
    head: [u8; 8],
    tail: [u8; 8],
}

/// The files of one epoch in the order they are read: a seeded shuffle of the
/// list, the same for every tool.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch.wrapping_add(1),
    );
    order.shuffle(&mut rng);
    order
}

/// Worker k's share of an epoch: positions k, k+N, ... of the order, as a
/// data loader hands batches to its workers in turn.
fn share(order: &[usize], k: usize, workers: usize) -> Vec<usize> {
    order
        .iter()
        .skip(k)
        .step_by(workers.max(1))
        .copied()
        .collect()
}

fn read_list(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let hex8 = |s: &str| -> anyhow::Result<[u8; 8]> {
        let v = u64::from_str_radix(s, 16).with_context(|| format!("bad hex {s:?}"))?;
        Ok(v.to_be_bytes())
    };
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            anyhow::ensure!(f.len() == 4, "bad list line {l:?}");
            Ok(Entry {
                path: f[0].to_owned(),
                size: f[1].parse()?,
                head: hex8(f[2])?,
                tail: hex8(f[3])?,
            })
        })
        .collect()
}

fn list_line(path: &str, data: &[u8]) -> String {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_be_bytes(w)
    };
    let n = data.len();
    format!(
        "{path}\t{n}\t{:016x}\t{:016x}\n",
        word(&data[..n.min(8)]),
        word(&data[n.saturating_sub(8)..])
    )
}

/// The worker process: reads an epoch number per stdin line, reads its share
/// of that epoch, answers `ok <files> <bytes>` (or `err <why>`) on stdout.
pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let list = read_list(&args.list)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    for line in stdin.lock().lines() {
        let epoch: u64 = line?.trim().parse().context("bad epoch line")?;
        let order = epoch_order(list.len(), args.seed, epoch);
        let answer = match read_share(
            &args.root,
            &list,
            &share(&order, args.index, args.workers),
            &mut buf,
        ) {
            Ok((files, bytes)) => format!("ok {files} {bytes}"),
            Err(e) => format!("err {}", format!("{e:#}").replace('\n', " ")),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// Reads each file whole, as `open(path, "rb").read()` does, and checks it.
fn read_share(
    root: &Path,
    list: &[Entry],
    mine: &[usize],
    buf: &mut Vec<u8>,
) -> anyhow::Result<(usize, u64)> {
    let mut bytes = 0;
    for &i in mine {
        let e = &list[i];
        let path = root.join(&e.path);
        buf.clear();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(buf))
            .with_context(|| format!("reading {}", path.display()))?;
        let n = buf.len();
        anyhow::ensure!(
            n as u64 == e.size
                && buf[..n.min(8)] == e.head[..n.min(8)]
                && buf[n.saturating_sub(8)..] == e.tail[..n.min(8)],
            "{} holds the wrong bytes ({n} of {} read)",
            path.display(),
            e.size
        );
        bytes += n as u64;
    }
    Ok((mine.len(), bytes))
}

/// The worker processes of one tool.
struct Workers {
    procs: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Workers {
    fn start(root: &Path, list: &Path, n: usize, seed: u64) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("cannot find chute-bench to start workers")?;
        let mut procs = Vec::new();
        for k in 0..n.max(1) {
            let mut child = Command::new(&exe)
                .arg("shuffle-worker")
                .arg("--root")
                .arg(root)
                .arg("--list")
                .arg(list)
                .args(["--index", &k.to_string()])
                .args(["--workers", &n.max(1).to_string()])
                .args(["--seed", &seed.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start a worker")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
            procs.push((child, stdin, stdout));
        }
        Ok(Workers { procs })
    }

    /// Runs one epoch on every worker at once; returns (seconds, files, bytes).
    fn epoch(&mut self, epoch: u64) -> anyhow::Result<(f64, usize, u64)> {
        let started = Instant::now();
        for (_, stdin, _) in &mut self.procs {
            writeln!(stdin, "{epoch}")?;
            stdin.flush()?;
        }
        let (mut files, mut bytes) = (0, 0);
        for (_, _, stdout) in &mut self.procs {
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["ok", n, b] => {
                    files += n.parse::<usize>()?;
                    bytes += b.parse::<u64>()?;
                }
                _ => anyhow::bail!("a worker failed: {}", line.trim()),
            }
        }
        Ok((started.elapsed().as_secs_f64(), files, bytes))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (mut child, stdin, _) in self.procs.drain(..) {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// One line of the report.
struct Row {
    tool: &'static str,
    phase: String,
    secs: f64,
    files: usize,
    bytes: u64,
    gets: Option<u64>,
    peak_rss_kib: Option<u64>,
}

impl Row {
    fn print(&self) {
        let rate = |x: f64| x / self.secs.max(1e-9);
        println!(
            "| {} | {} | {:.3} | {} | {} | {} | {} |",
            self.tool,
            self.phase,
            self.secs,
            if self.files > 0 {
                format!("{:.0}", rate(self.files as f64))
            } else {
                "".into()
            },
            if self.bytes > 0 {
                format!("{:.0}", rate(self.bytes as f64) / 1e6)
            } else {
                "".into()
            },
            self.gets.map_or("n/a".into(), |g| g.to_string()),
            self.peak_rss_kib
                .map_or(String::new(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
        );
    }
}

/// Counts the server's GETs between two points.
struct GetCounter<'a> {
    url: &'a str,
    last: Option<u64>,
}

impl GetCounter<'_> {
    fn new(url: &str) -> GetCounter<'_> {
        GetCounter {
            url,
            last: server_gets(Some(url)),
        }
    }

    /// GETs since the last call.
    fn delta(&mut self) -> Option<u64> {
        let now = server_gets(Some(self.url));
        let d = now.zip(self.last).map(|(n, l)| n.saturating_sub(l));
        self.last = now;
        d
    }
}

pub async fn run(args: &ShuffleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.count > 0 && args.size_kib > 0 && args.dirs > 0 && args.workers > 0,
        "--count, --size-kib, --dirs and --workers must be at least 1"
    );
    let chute = args.chute.path()?;
    let cfg = chute_s3::S3Config {
        endpoint_url: args.endpoint_url.clone(),
        region: args.region.clone(),
        ..chute_s3::S3Config::default()
    };
    let conn = connect(&cfg).await?;
    let size = args.size_kib << 10;
    let prefix = format!(
        "{}shuffle-{}x{}k-{}d/",
        args.prefix, args.count, args.size_kib, args.dirs
    );
    let uri = format!("s3://{}/{prefix}", args.bucket);
    let objects = dataset(args, &cfg, &conn.client, &prefix, size).await?;
    let total: u64 = objects.iter().map(|o| o.size).sum();

    let work = match &args.work_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("cannot create the work directory")?;
    let list = work.path().join("files.tsv");
    let mut text = String::new();
    for o in &objects {
        let rel = &o.key[prefix.len()..];
        text.push_str(&list_line(
            rel,
            &object_bytes(DATA_SEED, index_of(rel)?, size),
        ));
    }
    std::fs::write(&list, text)?;

    let drops = can_drop_page_cache();
    let drop = || -> anyhow::Result<()> {
        if drops {
            drop_page_cache()?;
        }
        Ok(())
    };
    let mut gets = GetCounter::new(&args.metrics_url);
    println!(
        "shuffle: {uri}: {} objects of {} KiB in {} directories ({:.0} MB), {} worker processes, seed {}, {} epochs{}; chute {}",
        objects.len(),
        args.size_kib,
        args.dirs,
        total as f64 / 1e6,
        args.workers,
        args.seed,
        args.epochs,
        if drops { " + 1 after a page-cache drop" } else { "" },
        chute.display()
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before the run: {}", load.trim());
    }
    if !drops {
        println!("note: cannot write /proc/sys/vm/drop_caches (not root): no cache drops, no after-drop epoch");
    }
    if gets.last.is_none() {
        println!(
            "note: no server metrics at {}: GETs not counted",
            args.metrics_url
        );
    }
    let mut rows = Vec::new();

    // (c) The baseline: every object in one GET, `concurrency` in flight.
    drop()?;
    gets.delta();
    let m = raw_gets(
        &conn.store,
        &args.bucket,
        &objects,
        size as u64,
        args.concurrency,
    )
    .await?;
    rows.push(Row {
        tool: "raw parallel GETs",
        phase: format!("one pass, {} in flight", args.concurrency),
        secs: m.secs,
        files: objects.len(),
        bytes: m.bytes,
        gets: gets.delta(),
        peak_rss_kib: None,
    });
    eprintln!("raw GETs: {:.2}s", m.secs);

    // (b) File mode: download, then the epochs from the local disk.
    drop()?;
    gets.delta();
    let dest = work.path().join("download");
    let mut cmd = Command::new(&chute);
    cmd.arg("download")
        .arg(&uri)
        .arg(&dest)
        .args(["--no-progress", "--no-resume", "--log", "warn"])
        .args(endpoint_flags(args))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let dl = tokio::task::spawn_blocking(move || run_measured(&mut cmd)).await??;
    anyhow::ensure!(dl.status.success(), "chute download failed: {}", dl.status);
    rows.push(Row {
        tool: "File mode",
        phase: "chute download".into(),
        secs: dl.secs,
        files: objects.len(),
        bytes: total,
        gets: gets.delta(),
        peak_rss_kib: Some(dl.peak_rss_kib),
    });
    eprintln!("chute download: {:.2}s", dl.secs);
    let file_epochs = epochs(
        args,
        "File mode",
        &dest,
        &list,
        &mut gets,
        None,
        drops.then_some(&drop),
    )?;
    std::fs::remove_dir_all(&dest).ok();

    // (a) FastFile: chute mount with its defaults (the disk cache in a fresh
    // directory, so no earlier run's cache is reused).
    drop()?;
    gets.delta();
    let mut mount_args: Vec<String> = endpoint_flags(args);
    mount_args.extend(args.mount_args.iter().cloned());
    println!(
        "FastFile: chute mount {uri} MOUNTPOINT {}{}",
        mount_args.join(" "),
        if has_disk_cache(&chute) {
            "--cache-dir <new directory in the work directory>"
        } else {
            "(this chute has no disk cache)"
        }
    );
    let m = {
        let (chute, uri, a) = (chute.clone(), uri.clone(), mount_args.clone());
        let cache_in = work.path().to_path_buf();
        tokio::task::spawn_blocking(move || MountChild::start(&chute, &uri, &a, &cache_in))
            .await??
    };
    rows.push(Row {
        tool: "FastFile",
        phase: "chute mount ready".into(),
        secs: m.ready_in.as_secs_f64(),
        files: 0,
        bytes: 0,
        gets: gets.delta(),
        peak_rss_kib: Some(m.peak_rss_kib()),
    });
    let ready = m.ready_in.as_secs_f64();
    let pid = m.pid();
    let root = m.path().to_path_buf();
    let ff_epochs = epochs(
        args,
        "FastFile",
        &root,
        &list,
        &mut gets,
        pid,
        drops.then_some(&drop),
    );
    let log = tokio::task::spawn_blocking(move || m.stop_with_log()).await?;
    let ff_epochs = ff_epochs?;
    let log = log?;

    println!(
        "\n| tool | phase | seconds | files/s | MB/s | GETs | peak RSS of chute |\n|---|---|---:|---:|---:|---:|---:|"
    );
    let (at_download, at_mount) = (2, rows.len());
    for r in rows[..at_download].iter().chain(&file_epochs) {
        r.print();
    }
    for r in rows[at_download..at_mount].iter().chain(&ff_epochs) {
        r.print();
    }
    for line in log
        .lines()
        .filter(|l| l.contains("passthrough") && !l.contains("unmounted"))
    {
        println!("chute mount log: {}", line.trim());
    }
    if let Some(summary) = log.lines().rev().find(|l| l.contains("unmounted")) {
        println!("\nchute mount's own summary: {}", summary.trim());
    }

    // The targets of issue 13, as ratios to File mode in this run.
    let secs = |e: &[Row], i: usize| e.get(i).map(|r| r.secs);
    println!("\n| target | FastFile | File mode | ratio | goal |\n|---|---:|---:|---:|---|");
    if let (Some(ff0), Some(f0)) = (secs(&ff_epochs, 0), secs(&file_epochs, 0)) {
        let ff = ready + ff0;
        let file = dl.secs + f0;
        println!(
            "| epoch 0 (FastFile mount + epoch vs File download + epoch) | {ff:.3} s | {file:.3} s | {:.2}× | ≥ 1.2× {} |",
            file / ff,
            verdict(file / ff >= 1.2)
        );
    }
    if let (Some(ff1), Some(f1)) = (secs(&ff_epochs, 1), secs(&file_epochs, 1)) {
        println!(
            "| epoch 1 speed | {ff1:.3} s | {f1:.3} s | {:.2}× | ≥ 0.8× {} |",
            f1 / ff1,
            verdict(f1 / ff1 >= 0.8)
        );
    }
    if drops {
        let last = args.epochs as usize;
        if let (Some(ffd), Some(fd)) = (ff_epochs.get(last), file_epochs.get(last)) {
            let zero = ffd.gets == Some(0);
            println!(
                "| after the drop (speed; FastFile GETs) | {:.3} s, {} GETs | {:.3} s | {:.2}× | ≥ 0.8×, 0 GETs {} |",
                ffd.secs,
                ffd.gets.map_or("n/a".into(), |g| g.to_string()),
                fd.secs,
                fd.secs / ffd.secs,
                verdict(fd.secs / ffd.secs >= 0.8 && zero)
            );
        }
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met {
        "(met)"
    } else {
        "(missed)"
    }
}

fn endpoint_flags(args: &ShuffleArgs) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(e) = &args.endpoint_url {
        f.extend(["--endpoint-url".into(), e.clone()]);
    }
    if let Some(r) = &args.region {
        f.extend(["--region".into(), r.clone()]);
    }
    f
}

/// The epochs of one tool: `args.epochs` back to back, then (when the page
/// cache can be dropped) one after a drop. `pid` is the chute process serving
/// `root`, whose peak RSS is reset before and read after each epoch.
fn epochs(
    args: &ShuffleArgs,
    tool: &'static str,
    root: &Path,
    list: &Path,
    gets: &mut GetCounter<'_>,
    pid: Option<u32>,
    drop: Option<&dyn Fn() -> anyhow::Result<()>>,
) -> anyhow::Result<Vec<Row>> {
    let mut workers = Workers::start(root, list, args.workers, args.seed)?;
    let mut out = Vec::new();
    let total = args.epochs + u64::from(drop.is_some());
    for epoch in 0..total {
        let after_drop = epoch == args.epochs;
        if let (true, Some(drop)) = (after_drop, drop) {
            drop()?;
        }
        if let Some(pid) = pid {
            reset_peak_rss(pid);
        }
        gets.delta();
        let (secs, files, bytes) = workers.epoch(epoch)?;
        let phase = if after_drop {
            format!("epoch {epoch}, after the drop")
        } else {
            format!("epoch {epoch}")
        };
        eprintln!("{}: {phase}: {secs:.2}s", root.display());
        out.push(Row {
            tool,
            phase,
            secs,
            files,
            bytes,
            gets: gets.delta(),
            peak_rss_kib: pid.map(crate::product::peak_rss_kib),
        });
    }
    Ok(out)
}

/// The index an object was made with, from its name (`dNNN/fIIIII.bin`).
fn index_of(rel: &str) -> anyhow::Result<usize> {
    rel.rsplit_once("/f")
        .and_then(|(_, name)| name.strip_suffix(".bin"))
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("{rel} is not a name the bench made"))
}

/// The dataset's objects, uploaded first if they are not all there.
async fn dataset(
    args: &ShuffleArgs,
    cfg: &chute_s3::S3Config,
    client: &chute_s3::Client,
    prefix: &str,
    size: usize,
) -> anyhow::Result<Vec<ObjectMeta>> {
    let key = |i: usize| format!("{prefix}d{:03}/f{i:05}.bin", i % args.dirs);
    let listed = client
        .list(&args.bucket, prefix, &ListOptions::default())
        .await?;
    let ready = listed.len() == args.count && listed.iter().all(|o| o.size == size as u64);
    if !ready {
        let started = Instant::now();
        let keys = (0..args.count).map(key).collect();
        upload_objects(cfg, &args.bucket, keys, 32, |i| {
            object_bytes(DATA_SEED, i, size)
        })
        .await?;
        println!(
            "uploaded {} objects to s3://{}/{prefix} in {:.1}s",
            args.count,
            args.bucket,
            started.elapsed().as_secs_f64()
        );
    }
    let mut objects = client
        .list(&args.bucket, prefix, &ListOptions::default())
        .await?;
    anyhow::ensure!(
        objects.len() == args.count,
        "s3://{}/{prefix} holds {} objects, {} expected",
        args.bucket,
        objects.len(),
        args.count
    );
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_reads_every_file_once_split_across_workers() {
        let n = 1003;
        let order = epoch_order(n, 7, 0);
        assert_ne!(order, epoch_order(n, 7, 1), "each epoch has its own order");
        assert_eq!(order, epoch_order(n, 7, 0), "the order is seeded");
        let mut seen: Vec<usize> = (0..8).flat_map(|k| share(&order, k, 8)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn the_worker_checks_sizes_and_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut list = String::new();
        for (i, len) in [0usize, 5, 8, 100].iter().enumerate() {
            let data = object_bytes(DATA_SEED, i, *len);
            std::fs::write(dir.path().join(format!("f{i}")), &data).expect("write");
            list.push_str(&list_line(&format!("f{i}"), &data));
        }
        let lp = dir.path().join("list");
        std::fs::write(&lp, &list).expect("write list");
        let entries = read_list(&lp).expect("list");
        let mut buf = Vec::new();
        let all: Vec<usize> = (0..entries.len()).collect();
        assert_eq!(
            read_share(dir.path(), &entries, &all, &mut buf).expect("read"),
            (4, 113)
        );
        // One byte changed at the end of the last file: refused.
        let mut bad = object_bytes(DATA_SEED, 3, 100).to_vec();
        bad[99] ^= 1;
        std::fs::write(dir.path().join("f3"), bad).expect("write");
        let err = read_share(dir.path(), &entries, &all, &mut buf).expect_err("bad bytes");
        assert!(format!("{err:#}").contains("f3"), "{err:#}");
    }
}
