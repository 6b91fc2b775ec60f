//! `chute-bench download`: File mode against the raw parallel-GET baseline and
//! the downloaders users compare it with — s5cmd and `aws s3 sync` — on the
//! same server, into the same disk, in the same run. Each tool (chute too) runs
//! as a process with its own defaults (what a user gets), into a fresh
//! directory, after a `sync` so that one tool's write-back does not slow the
//! next; the time is the process's whole run, listing included, as a user
//! would time it, and the bytes it wrote are checked.
//!
//! Every tool starts from the same memory: what a run wrote is dropped from
//! the page cache before the next one (deleted, or evicted when the files stay).
//! On a virtual machine, page-cache pages that grow into memory the guest has
//! not touched lately are up to ten times slower to fill (measured with `dd`:
//! 1 GiB in 0.22 s of system time, then 2.3-2.5 s once the cache had grown
//! by 2 GiB), so without this each tool would pay for the ones before it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::product::{evict, files, sync_disks};
use crate::report::{Measure, Series, Table};
use crate::target::{baseline, BenchTarget, Dataset};

pub async fn run(t: &BenchTarget) -> anyhow::Result<()> {
    let conn = t.connect().await?;
    let endpoint = t
        .s3_config()
        .effective_endpoint()
        .context("chute-bench download needs --endpoint-url (or AWS_ENDPOINT_URL)")?;
    let region = t
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    println!("destination disk: {}", work.path().display());
    let mut table = Table::new("File mode: chute download vs s5cmd vs aws s3 sync");
    let mut ratios = Vec::new();
    for d in t.datasets() {
        let objects = t.objects(&conn.client, d).await?;
        let expected: u64 = objects.iter().map(|o| o.size).sum();
        let src = t.uri(d);
        // Each run writes into a directory of its own. With many files, they
        // are all removed only once the dataset is done: ext4 without a
        // journal (as on the machines measured here) will not reuse an inode
        // freed in the last minute (six, while its inode-table block is
        // dirty) and reads each such candidate on the way to a free one, so
        // creating 2,000 files soon after deleting 2,000 spends most of its
        // time searching (measured: 80 % of both chute's and s5cmd's system
        // time), a cost no user downloading into a fresh directory pays. Few
        // large files are removed at once instead.
        let work = tempfile::tempdir_in(work.path()).context("cannot create a directory")?;
        let keep_until_done = objects.len() > 100;
        let done_with = |dest: &Path| {
            if keep_until_done {
                evict(dest);
            } else {
                let _ = std::fs::remove_dir_all(dest);
            }
        };
        // Untimed: brings the dataset back into the server's page cache, which
        // may have let it go since the last dataset (the first timed run was
        // often the slowest for every tool).
        baseline(t, &conn, &objects).await?;
        let exe = t.chute.path()?;
        let (mut base, mut chute) = (Series::default(), Series::default());
        // s5cmd and aws: measured unless they fail (then said once, and skipped).
        let mut others = [
            ("s5cmd cp", Series::default(), None::<String>),
            ("aws s3 sync", Series::default(), None),
        ];
        for run in 0..t.runs() {
            base.push(
                d.label(),
                "raw parallel GETs",
                baseline(t, &conn, &objects).await?,
            );

            // chute runs as a process too, listing included, timed like the others.
            let dest = work.path().join(format!("chute-{}-{run}", d.name()));
            let m = timed(
                Command::new(&exe)
                    .args(["download", &src])
                    .arg(&dest)
                    .args([
                        "--endpoint-url",
                        &endpoint,
                        "--region",
                        &region,
                        "--no-progress",
                        "--no-resume",
                        "--log",
                        "warn",
                    ]),
                &dest,
                expected,
            );
            done_with(&dest);
            chute.push(d.label(), "chute download", m?);

            for (name, series, failed) in &mut others {
                if failed.is_some() {
                    continue;
                }
                let dest =
                    work.path()
                        .join(format!("{}-{}-{run}", name.replace(' ', "-"), d.name()));
                let mut cmd = match *name {
                    "s5cmd cp" => {
                        let mut c = Command::new("s5cmd");
                        c.args(["--endpoint-url", &endpoint, "cp"])
                            .arg(format!("{src}*"))
                            .arg(format!("{}/", dest.display()));
                        c
                    }
                    _ => {
                        let mut c = Command::new("aws");
                        c.args(["s3", "sync", &src]).arg(&dest).args([
                            "--endpoint-url",
                            &endpoint,
                            "--region",
                            &region,
                            "--only-show-errors",
                        ]);
                        c
                    }
                };
                let m = timed(&mut cmd, &dest, expected);
                done_with(&dest);
                match m {
                    Ok(m) => series.push(d.label(), name, m),
                    Err(e) => {
                        println!("  {:<16} {name:<34} not measured: {e:#}", d.label());
                        *failed = Some(format!("{e:#}"));
                    }
                }
            }
        }
        table.row(d.label(), "raw parallel GETs", &base, &base);
        table.row(d.label(), "chute download", &chute, &base);
        let measured = |i: usize| (others[i].1.runs() > 0).then(|| others[i].1.clone());
        let (s5cmd, aws) = (measured(0), measured(1));
        for (name, series, _) in &others {
            if series.runs() > 0 {
                table.row(d.label(), name, series, &base);
            }
        }
        ratios.push((d, chute, s5cmd, aws));
    }
    table.print();
    println!("\n| dataset | chute ÷ s5cmd | chute ÷ aws s3 sync |");
    println!("|---|---:|---:|");
    let ratio = |c: &Series, other: &Option<Series>| {
        other
            .as_ref()
            .map_or("n/a".to_owned(), |o| format!("{:.2} ×", c.ratio(o)))
    };
    for (d, c, s5, aws) in &ratios {
        println!(
            "| {} | {} | {} |",
            Dataset::label(*d),
            ratio(c, s5),
            ratio(c, aws)
        );
    }
    Ok(())
}

/// Runs an external downloader to completion and checks what it wrote.
fn timed(cmd: &mut Command, dest: &Path, expected: u64) -> anyhow::Result<Measure> {
    sync_disks();
    cmd.env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?} (is it installed?)", cmd.get_program()))?;
    let m = Measure {
        bytes: expected,
        secs: started.elapsed().as_secs_f64(),
    };
    anyhow::ensure!(status.success(), "{:?} failed: {status}", cmd.get_program());
    check_tree(dest, expected).map(|()| m)
}

/// The files under `dest` add up to the dataset.
fn check_tree(dest: &Path, expected: u64) -> anyhow::Result<()> {
    let total: u64 = files(dest)?.iter().map(|(_, len)| len).sum();
    anyhow::ensure!(
        total == expected,
        "{} holds {total} bytes, the dataset {expected}",
        dest.display()
    );
    Ok(())
}
