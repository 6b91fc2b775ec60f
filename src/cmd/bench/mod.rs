//! `chute bench`: throughput of each mode against a given endpoint, always side
//! by side with a baseline measured in the same run — raw parallel ranged GETs of
//! the same objects from the same server — and reported as a ratio.
//!
//! Run it against a server that is not the bottleneck (Garage or MinIO; see
//! `benches/garage.sh`). `chute bench prepare` uploads the standard datasets once;
//! each mode's bench then reads them.

mod download;
mod fastfile;
mod pipe;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use chute_s3::{Client, ListOptions, ObjectMeta, RetryPolicy, S3Config, S3Store};
use clap::{Args, Subcommand};
use futures::{StreamExt, TryStreamExt};

use crate::exit::UsageError;

/// The standard datasets: one large object, medium objects, many small ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataset {
    /// 1 object of 1 GiB.
    Large,
    /// 40 objects of 25 MiB.
    Medium,
    /// 2,000 objects of 256 KiB.
    Small,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Large, Dataset::Medium, Dataset::Small];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Large => "large",
            Dataset::Medium => "medium",
            Dataset::Small => "small",
        }
    }

    /// Human description for tables.
    pub fn label(self) -> &'static str {
        match self {
            Dataset::Large => "1 × 1 GiB",
            Dataset::Medium => "40 × 25 MiB",
            Dataset::Small => "2,000 × 256 KiB",
        }
    }

    pub fn shape(self) -> (usize, usize) {
        match self {
            Dataset::Large => (1, 1 << 30),
            Dataset::Medium => (40, 25 << 20),
            Dataset::Small => (2000, 256 << 10),
        }
    }

    /// Key prefix of the dataset under the bench prefix, ending in '/'.
    pub fn prefix(self, base: &str) -> String {
        format!("{base}{}/", self.name())
    }

    pub fn key(self, base: &str, i: usize) -> String {
        match self {
            Dataset::Large => format!("{}object.bin", self.prefix(base)),
            _ => format!("{}obj-{i:05}.bin", self.prefix(base)),
        }
    }
}

/// Where the datasets live and how to reach them; shared by every bench.
#[derive(Debug, Args, Clone)]
pub struct BenchTarget {
    /// S3 endpoint to measure (also AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Bucket holding the datasets (must exist).
    #[arg(long)]
    pub bucket: String,
    /// Key prefix of the datasets, ending in '/'.
    #[arg(long, default_value = "chute-bench/")]
    pub prefix: String,
    /// Datasets to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub datasets: Vec<Dataset>,
    /// GETs in flight for the raw baseline.
    #[arg(long, default_value_t = 64)]
    pub baseline_concurrency: usize,
    /// Part size of the raw baseline's ranged GETs, in MiB.
    #[arg(long, default_value_t = 8)]
    pub baseline_part_mib: u64,
    /// Times each measurement is repeated, alternating with the baseline; the
    /// tables report medians (a loopback server on a small machine varies by
    /// ±20% from one run to the next).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: usize,
}

impl BenchTarget {
    /// Runs per measurement (at least one).
    pub fn runs(&self) -> usize {
        self.runs.max(1)
    }

    pub fn datasets(&self) -> Vec<Dataset> {
        if self.datasets.is_empty() {
            Dataset::ALL.to_vec()
        } else {
            self.datasets.clone()
        }
    }

    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            ..S3Config::default()
        }
    }

    /// The channel plan of a dataset's (already listed and checked) objects, as
    /// a mode would get it from listing the dataset's prefix.
    pub fn plan(&self, d: Dataset, objects: &[ObjectMeta]) -> chute_plan::Plan {
        let infos = objects
            .iter()
            .map(|o| chute_plan::ObjectInfo {
                bucket: self.bucket.clone(),
                key: o.key.clone(),
                size: o.size,
                etag: o.etag.clone(),
            })
            .collect();
        chute_plan::plan_from_listing(&d.prefix(&self.prefix), infos)
    }

    /// `s3://bucket/prefix/` of a dataset.
    pub fn uri(&self, d: Dataset) -> String {
        format!("s3://{}/{}", self.bucket, d.prefix(&self.prefix))
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let store = S3Store::new(&self.s3_config()).await?;
        Ok(Client::new(Arc::new(store), RetryPolicy::default()))
    }

    /// The objects of a dataset, checked to be what `prepare` uploads.
    pub async fn objects(&self, client: &Client, d: Dataset) -> anyhow::Result<Vec<ObjectMeta>> {
        let objects = client
            .list(
                &self.bucket,
                &d.prefix(&self.prefix),
                &ListOptions::default(),
            )
            .await?;
        let (count, size) = d.shape();
        if objects.len() != count || objects.iter().any(|o| o.size != size as u64) {
            return Err(UsageError(format!(
                "dataset {} at {} is not prepared ({} objects found, {count} of {size} bytes expected): run `chute bench prepare` first",
                d.name(),
                self.uri(d),
                objects.len()
            ))
            .into());
        }
        Ok(objects)
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Upload the standard datasets to the target bucket.
    Prepare(BenchTarget),
    /// Only the raw parallel-GET baseline.
    Baseline(BenchTarget),
    /// Pipe mode: a reader draining the FIFO, and time to first byte.
    Pipe(pipe::PipeBench),
    /// File mode: chute download vs s5cmd vs `aws s3 sync`, into the same disk.
    Download(BenchTarget),
    /// FastFile mode: chute mount read by 1 and 8 readers, in listing order, at
    /// random; time to first byte; find / ls -lR over 100,000 objects.
    Fastfile(BenchTarget),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        BenchCommand::Prepare(t) => prepare(&t).await?,
        BenchCommand::Pipe(t) => pipe::run(&t).await?,
        BenchCommand::Download(t) => download::run(&t).await?,
        BenchCommand::Fastfile(t) => fastfile::run(&t).await?,
        BenchCommand::Baseline(t) => {
            let client = t.client().await?;
            let mut table = Table::new("raw parallel GETs");
            for d in t.datasets() {
                let objects = t.objects(&client, d).await?;
                let mut m = Series::default();
                for _ in 0..t.runs() {
                    m.push(d, "baseline", baseline(&t, &client, &objects).await?);
                }
                table.row(d.label(), "baseline", &m, &m);
            }
            table.print();
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Deterministic object contents (fast to make, different per object).
pub fn object_bytes(d: Dataset, i: usize, size: usize) -> Bytes {
    let mut data = vec![0u8; size];
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ d as u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(data)
}

async fn prepare(t: &BenchTarget) -> anyhow::Result<()> {
    let store = S3Store::new(&t.s3_config()).await?;
    let client = t.client().await?;
    for d in t.datasets() {
        if t.objects(&client, d).await.is_ok() {
            println!("{}: already prepared at {}", d.name(), t.uri(d));
            continue;
        }
        let (count, size) = d.shape();
        let started = Instant::now();
        futures::stream::iter(0..count)
            .map(|i| {
                let store = &store;
                async move {
                    let key = d.key(&t.prefix, i);
                    store
                        .put_object(&t.bucket, &key, object_bytes(d, i, size))
                        .await
                        .with_context(|| format!("uploading {key}"))
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        println!(
            "{}: uploaded {count} objects to {} in {:.1}s",
            d.name(),
            t.uri(d),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Bytes moved and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub bytes: u64,
    pub secs: f64,
}

impl Measure {
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs.max(1e-9) / 1e6
    }
}

/// The baseline: every object fetched with raw ranged GETs (one attempt each,
/// no pinning, no retries, bodies drained and dropped), `baseline_concurrency`
/// in flight. Nothing a client could do with the same server is much faster.
pub async fn baseline(
    t: &BenchTarget,
    client: &Client,
    objects: &[ObjectMeta],
) -> anyhow::Result<Measure> {
    let part = t.baseline_part_mib.max(1) << 20;
    let mut ranges = Vec::new();
    for o in objects {
        let mut start = 0;
        while start < o.size {
            let end = (start + part).min(o.size);
            ranges.push((o.key.clone(), start..end));
            start = end;
        }
    }
    let store = client.store().clone();
    let started = Instant::now();
    let bytes = futures::stream::iter(ranges)
        .map(|(key, range)| {
            let store = store.clone();
            let bucket = t.bucket.clone();
            async move {
                let resp = store.get_range(&bucket, &key, range, None).await?;
                let mut n = 0u64;
                let mut body = resp.body;
                while let Some(chunk) = body.next().await {
                    n += chunk?.len() as u64;
                }
                Ok::<u64, anyhow::Error>(n)
            }
        })
        .buffer_unordered(t.baseline_concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    Ok(Measure {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// One measurement repeated: each run is printed as it ends, the median is
/// what the tables report, with the spread beside it.
#[derive(Debug, Clone, Default)]
pub struct Series(Vec<Measure>);

impl Series {
    pub fn push(&mut self, d: Dataset, what: &str, m: Measure) {
        println!(
            "  {:<16} {what:<34} run {}: {:>6.0} MB/s ({:.2} s)",
            d.label(),
            self.0.len() + 1,
            m.mb_s(),
            m.secs
        );
        self.0.push(m);
    }

    fn rates(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.0.iter().map(Measure::mb_s).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    /// Median MB/s.
    pub fn median(&self) -> f64 {
        median_of(self.rates())
    }

    /// Median seconds of one run.
    pub fn median_secs(&self) -> f64 {
        let mut s: Vec<f64> = self.0.iter().map(|m| m.secs).collect();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    }

    pub fn spread(&self) -> (f64, f64) {
        let r = self.rates();
        (
            r.first().copied().unwrap_or(0.0),
            r.last().copied().unwrap_or(0.0),
        )
    }

    /// How this series compares with another. Runs made in pairs (the same
    /// count, run i of each made back to back) are compared pair by pair and
    /// the median of those ratios taken: the machine's speed drifts between
    /// pairs more than within one. Otherwise, the ratio of the medians.
    pub fn ratio(&self, other: &Series) -> f64 {
        if self.0.len() == other.0.len() && !self.0.is_empty() {
            return median_of(
                self.0
                    .iter()
                    .zip(&other.0)
                    .map(|(a, b)| a.mb_s() / b.mb_s().max(1e-9))
                    .collect(),
            );
        }
        self.median() / other.median().max(1e-9)
    }

    pub fn runs(&self) -> usize {
        self.0.len()
    }
}

/// The median (the mean of the middle two for an even count; 0 for none).
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of some durations (the upper middle one for an even count).
pub fn median_duration(v: &mut [std::time::Duration]) -> std::time::Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A result table: one row per (dataset, tool), medians over the runs, with
/// the ratio to the baseline (see [`Series::ratio`]).
pub struct Table {
    title: String,
    rows: Vec<(String, String, Series, Series)>,
}

impl Table {
    pub fn new(title: &str) -> Table {
        Table {
            title: title.to_owned(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, dataset: &str, tool: &str, m: &Series, baseline: &Series) {
        self.rows.push((
            dataset.to_owned(),
            tool.to_owned(),
            m.clone(),
            baseline.clone(),
        ));
    }

    /// Markdown, ready for the README.
    pub fn print(&self) {
        println!("\n{}\n", self.title);
        println!(
            "| dataset | tool | MB/s (median) | min–max | runs | seconds (median) | × baseline |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (d, tool, m, b) in &self.rows {
            let (lo, hi) = m.spread();
            println!(
                "| {d} | {tool} | {:.0} | {lo:.0}–{hi:.0} | {} | {:.2} | {:.2} |",
                m.median(),
                m.runs(),
                m.median_secs(),
                m.ratio(b)
            );
        }
    }
}
