//! `chute bench download`: File mode against the raw parallel-GET baseline and
//! the downloaders users compare it with — s5cmd and `aws s3 sync` — on the
//! same server, into the same disk, in the same run. Each tool (chute too) runs
//! as a process with its own defaults (what a user gets), into a fresh
//! directory, after a `sync` so that one tool's write-back does not slow the
//! next; the time is the process's whole run, listing included, as a user
//! would time it, and the bytes it wrote are checked.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use super::{baseline, BenchTarget, Dataset, Measure, Table};

pub async fn run(t: &BenchTarget) -> anyhow::Result<()> {
    let client = t.client().await?;
    let endpoint = t
        .s3_config()
        .effective_endpoint()
        .context("chute bench download needs --endpoint-url (or AWS_ENDPOINT_URL)")?;
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
        let objects = t.objects(&client, d).await?;
        let expected: u64 = objects.iter().map(|o| o.size).sum();
        let base = baseline(t, &client, &objects).await?;
        table.row(d.label(), "raw parallel GETs", base, base);

        let src = t.uri(d);
        // chute runs as a process too, listing included, timed like the others.
        let dest = work.path().join(format!("chute-{}", d.name()));
        let exe = std::env::current_exe().context("cannot find the chute binary")?;
        let chute = timed(
            Command::new(exe).args(["download", &src]).arg(&dest).args([
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
        )?;
        table.row(d.label(), "chute download", chute, base);

        let s5 = work.path().join(format!("s5cmd-{}", d.name()));
        let s5cmd = timed(
            Command::new("s5cmd")
                .args(["--endpoint-url", &endpoint, "cp"])
                .arg(format!("{src}*"))
                .arg(format!("{}/", s5.display())),
            &s5,
            expected,
        );
        let aws_dest = work.path().join(format!("aws-{}", d.name()));
        let aws = timed(
            Command::new("aws")
                .args(["s3", "sync", &src])
                .arg(&aws_dest)
                .args([
                    "--endpoint-url",
                    &endpoint,
                    "--region",
                    &region,
                    "--only-show-errors",
                ]),
            &aws_dest,
            expected,
        );
        for (name, m) in [("s5cmd cp", &s5cmd), ("aws s3 sync", &aws)] {
            match m {
                Ok(m) => table.row(d.label(), name, *m, base),
                Err(e) => println!("  {:<16} {name:<24} not measured: {e:#}", d.label()),
            }
        }
        ratios.push((d, chute, s5cmd.ok(), aws.ok()));
    }
    table.print();
    println!("\n| dataset | chute ÷ s5cmd | chute ÷ aws s3 sync |");
    println!("|---|---:|---:|");
    let ratio = |c: &Measure, other: Option<Measure>| {
        other.map_or("n/a".to_owned(), |o| {
            format!("{:.2} ×", c.mb_s() / o.mb_s().max(1e-9))
        })
    };
    for (d, c, s5, aws) in &ratios {
        println!(
            "| {} | {} | {} |",
            Dataset::label(*d),
            ratio(c, *s5),
            ratio(c, *aws)
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
    let checked = check_tree(dest, expected);
    remove(dest);
    checked.map(|()| m)
}

/// The files under `dest` add up to the dataset.
fn check_tree(dest: &Path, expected: u64) -> anyhow::Result<()> {
    let mut total = 0u64;
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    anyhow::ensure!(
        total == expected,
        "{} holds {total} bytes, the dataset {expected}",
        dest.display()
    );
    Ok(())
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}
