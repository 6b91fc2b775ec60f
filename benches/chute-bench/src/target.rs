//! What every mode bench shares: where the datasets live ([`BenchTarget`]), the
//! standard datasets ([`Dataset`]) and their uploader (`prepare`), the `chute`
//! binary under test, and the baseline every figure is compared with — raw
//! parallel ranged GETs of the same objects from the same server, one request
//! deep (no retries, no pinning), straight on the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use chute_s3::{
    Client, ListOptions, ObjectMeta, ObjectStore, RetryPolicy, S3Config, S3Store, Writer,
};
use clap::Args;
use futures::{StreamExt, TryStreamExt};

use crate::report::{Measure, Series, Table};

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

/// The `chute` binary the benches run, as a user would.
#[derive(Debug, Args, Clone)]
pub struct ChuteBin {
    /// The `chute` binary to measure (default: target/release/chute, else the
    /// `chute` next to this binary).
    #[arg(long = "chute", env = "CHUTE_BIN", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl ChuteBin {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.path {
            anyhow::ensure!(
                p.is_file(),
                "--chute {} is not a file: build it with `cargo build --release -p chute`",
                p.display()
            );
            return Ok(p.clone());
        }
        let default = PathBuf::from("target/release/chute");
        if default.is_file() {
            return Ok(default);
        }
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("chute")))
            .filter(|p| p.is_file());
        sibling.context(
            "no chute binary found (target/release/chute, or next to chute-bench): \
             build it with `cargo build --release -p chute`, or give --chute PATH (CHUTE_BIN)",
        )
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
    #[command(flatten)]
    pub chute: ChuteBin,
}

/// A connection to the target: the retrying client the modes use, and the bare
/// store the baseline sends its requests to.
pub struct Conn {
    pub client: Client,
    pub store: Arc<S3Store>,
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

    /// `--endpoint-url` / `--region` as flags for a `chute` command.
    pub fn chute_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(e) = &self.endpoint_url {
            f.extend(["--endpoint-url".into(), e.clone()]);
        }
        if let Some(r) = &self.region {
            f.extend(["--region".into(), r.clone()]);
        }
        f
    }

    /// The channel plan of a dataset's (already listed and checked) objects, as
    /// a mode would get it from listing the dataset's prefix.
    pub fn plan(&self, d: Dataset, objects: &[ObjectMeta]) -> chute_plan::Plan {
        plan_of(&self.bucket, &d.prefix(&self.prefix), objects)
    }

    /// `s3://bucket/prefix/` of a dataset.
    pub fn uri(&self, d: Dataset) -> String {
        format!("s3://{}/{}", self.bucket, d.prefix(&self.prefix))
    }

    pub async fn connect(&self) -> anyhow::Result<Conn> {
        connect(&self.s3_config()).await
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
            anyhow::bail!(
                "dataset {} at {} is not prepared ({} objects found, {count} of {size} bytes expected): run `chute-bench prepare` first",
                d.name(),
                self.uri(d),
                objects.len()
            );
        }
        Ok(objects)
    }
}

pub async fn connect(cfg: &S3Config) -> anyhow::Result<Conn> {
    let store = Arc::new(S3Store::new(cfg).await?);
    let client = Client::new(store.clone(), RetryPolicy::default());
    Ok(Conn { client, store })
}

/// The plan a mode gets from listing `prefix`, built from objects already listed.
pub fn plan_of(bucket: &str, prefix: &str, objects: &[ObjectMeta]) -> chute_plan::Plan {
    let infos = objects
        .iter()
        .map(|o| chute_plan::ObjectInfo {
            bucket: bucket.to_owned(),
            key: o.key.clone(),
            size: o.size,
            etag: o.etag.clone(),
        })
        .collect();
    chute_plan::plan_from_listing(prefix, infos)
}

/// `chute-bench baseline`: only the raw parallel-GET baseline.
pub async fn run_baseline(t: &BenchTarget) -> anyhow::Result<()> {
    let conn = t.connect().await?;
    let mut table = Table::new("raw parallel GETs");
    for d in t.datasets() {
        let objects = t.objects(&conn.client, d).await?;
        let mut m = Series::default();
        for _ in 0..t.runs() {
            m.push(d.label(), "baseline", baseline(t, &conn, &objects).await?);
        }
        table.row(d.label(), "baseline", &m, &m);
    }
    table.print();
    Ok(())
}

/// Deterministic object contents (fast to make, different per object).
pub fn object_bytes(seed: u64, i: usize, size: usize) -> Bytes {
    let mut data = vec![0u8; size];
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(data)
}

/// Uploads `(key, bytes)` pairs with single PUTs, `concurrency` at a time,
/// through chute's retrying writer (the product never writes to a source).
pub async fn upload_objects<F>(
    cfg: &S3Config,
    bucket: &str,
    keys: Vec<String>,
    concurrency: usize,
    body: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> Bytes,
{
    let writer = Writer::s3(cfg, RetryPolicy::default()).await?;
    let body = &body;
    let writer = &writer;
    futures::stream::iter(keys.into_iter().enumerate())
        .map(|(i, key)| async move {
            writer
                .put_object(bucket, &key, body(i), None)
                .await
                .with_context(|| format!("uploading {key}"))
                .map(drop)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// `chute-bench prepare`: uploads the standard datasets that are not there yet.
pub async fn prepare(t: &BenchTarget) -> anyhow::Result<()> {
    let conn = t.connect().await?;
    for d in t.datasets() {
        if t.objects(&conn.client, d).await.is_ok() {
            println!("{}: already prepared at {}", d.name(), t.uri(d));
            continue;
        }
        let (count, size) = d.shape();
        let started = Instant::now();
        let keys = (0..count).map(|i| d.key(&t.prefix, i)).collect();
        upload_objects(&t.s3_config(), &t.bucket, keys, 16, |i| {
            object_bytes(d as u64, i, size)
        })
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

/// The baseline: every object fetched with raw ranged GETs (one attempt each,
/// no pinning, no retries, bodies drained and dropped), `baseline_concurrency`
/// in flight. Nothing a client could do with the same server is much faster.
pub async fn baseline(
    t: &BenchTarget,
    conn: &Conn,
    objects: &[ObjectMeta],
) -> anyhow::Result<Measure> {
    raw_gets(
        &conn.store,
        &t.bucket,
        objects,
        t.baseline_part_mib.max(1) << 20,
        t.baseline_concurrency,
    )
    .await
}

/// Every object of `objects` fetched as raw ranged GETs of at most `part` bytes,
/// `concurrency` in flight.
pub async fn raw_gets(
    store: &Arc<S3Store>,
    bucket: &str,
    objects: &[ObjectMeta],
    part: u64,
    concurrency: usize,
) -> anyhow::Result<Measure> {
    let mut ranges = Vec::new();
    for o in objects {
        let mut start = 0;
        while start < o.size {
            let end = (start + part).min(o.size);
            ranges.push((o.key.clone(), start..end));
            start = end;
        }
    }
    let started = Instant::now();
    let bytes = futures::stream::iter(ranges)
        .map(|(key, range)| async move {
            let resp = store.get_range(bucket, &key, range, None).await?;
            let mut n = 0u64;
            let mut body = resp.body;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            Ok::<u64, anyhow::Error>(n)
        })
        .buffer_unordered(concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    Ok(Measure {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uploader and the raw-GET baseline against a real `chute serve` on
    /// loopback: every byte uploaded comes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_then_raw_gets_against_chute_serve() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("bench")).expect("bucket dir");
        let (ak, sk) = ("bench-test", "bench-test-secret");
        let server = chute_serve::Server::start(chute_serve::ServeConfig {
            root: root.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            access_key: ak.into(),
            secret_key: sk.into(),
        })
        .await
        .expect("serve");
        let cfg = S3Config {
            endpoint_url: Some(server.endpoint_url()),
            region: Some("us-east-1".into()),
            access_key: Some(ak.into()),
            secret_key: Some(sk.into()),
            ..S3Config::default()
        };
        let sizes = [0usize, 1, 5000, 70_000];
        let keys = (0..sizes.len()).map(|i| format!("p/o{i}.bin")).collect();
        upload_objects(&cfg, "bench", keys, 4, |i| object_bytes(3, i, sizes[i]))
            .await
            .expect("upload");
        for (i, size) in sizes.iter().enumerate() {
            let on_disk =
                std::fs::read(root.path().join(format!("bench/p/o{i}.bin"))).expect("read");
            assert!(on_disk == object_bytes(3, i, *size), "object {i} differs");
        }
        let conn = connect(&cfg).await.expect("connect");
        let objects = conn
            .client
            .list("bench", "p/", &ListOptions::default())
            .await
            .expect("list");
        assert_eq!(objects.len(), sizes.len());
        // Parts smaller than the largest object: it is fetched in ranges.
        let m = raw_gets(&conn.store, "bench", &objects, 16 << 10, 3)
            .await
            .expect("raw GETs");
        assert_eq!(m.bytes, sizes.iter().sum::<usize>() as u64);
        let plan = plan_of("bench", "p/", &objects);
        assert_eq!(plan.objects.len(), sizes.len());
        server.shutdown().await;
    }
}
