//! Single-stream GET throughput of a 256 MiB object over loopback, through the AWS SDK.
//!
//! Ignored by default because it moves half a gigabyte through a temp directory; run
//! it optimised to get meaningful numbers:
//!
//! ```text
//! cargo test -p chute-serve --release --test throughput -- --ignored --nocapture
//! ```
//!
//! It prints the figures and asserts only correctness, never speed.

mod common;

use std::time::Instant;

use common::{pattern, quoted_md5, Harness, BUCKET};

const SIZE: usize = 256 * 1024 * 1024;
const RUNS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "moves 256 MiB; run with --release -- --ignored --nocapture"]
async fn single_stream_get_throughput() {
    let h = Harness::start().await;
    let data = pattern(SIZE, 42);
    h.write_direct("big.bin", &data);

    // The first look at a file hashes it; report that cost separately from serving.
    let started = Instant::now();
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("big.bin")
        .send()
        .await
        .expect("HEAD");
    let hash_secs = started.elapsed().as_secs_f64();
    assert_eq!(head.e_tag(), Some(quoted_md5(&data).as_str()));
    println!(
        "first HEAD (computes the MD5 ETag of 256 MiB): {:.3} s, {:.0} MB/s",
        hash_secs,
        SIZE as f64 / hash_secs / 1e6
    );

    let mut best = 0f64;
    for run in 1..=RUNS {
        let started = Instant::now();
        let mut out = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key("big.bin")
            .send()
            .await
            .expect("GET");
        let mut offset = 0usize;
        while let Some(chunk) = out.body.try_next().await.expect("body chunk") {
            // Compare as we go rather than buffering 256 MiB a second time.
            assert_eq!(
                &data[offset..offset + chunk.len()],
                &chunk[..],
                "at {offset}"
            );
            offset += chunk.len();
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(offset, SIZE);
        let mbps = SIZE as f64 / secs / 1e6;
        best = best.max(mbps);
        println!("GET run {run}: 256 MiB in {secs:.3} s = {mbps:.0} MB/s");
    }
    println!("best single-stream GET: {best:.0} MB/s");
    h.server.shutdown().await;
}
