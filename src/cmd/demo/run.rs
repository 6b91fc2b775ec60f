//! The last section of `chute demo`: `chute run` over the demo dataset with one
//! File, one FastFile and one Pipe channel, and a tiny training script that
//! hashes what it sees; the hashes are then checked against the source files.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chute_channel::SourceOptions;
use chute_run::RunOptions;
use sha2::{Digest, Sha256};

/// Where `chute demo` serves its dataset (bucket `demo`, prefix `datasets/images/`).
const DATASET: &str = "demo/datasets/images";

/// The training script: hashes every file of the File and FastFile channels and
/// the first epoch of the Pipe channel, as a real script would read them.
const SCRIPT: &str = r#"set -eu
out=$1
(cd "$SM_CHANNEL_TRAIN" && find . -type f -exec sha256sum {} +) > "$out/train.sha256"
(cd "$SM_CHANNEL_VALIDATION" && find . -type f -exec sha256sum {} +) > "$out/validation.sha256"
sha256sum < "$SM_INPUT_DIR/data/labels_0" > "$out/labels.sha256"
echo "  [train.sh] host $SM_CURRENT_HOST of $SM_HOSTS, channels $SM_CHANNELS:"
echo "  [train.sh]   train: $(wc -l < "$out/train.sha256") files read from $SM_CHANNEL_TRAIN (File)"
echo "  [train.sh]   validation: $(wc -l < "$out/validation.sha256") files read from $SM_CHANNEL_VALIDATION (FastFile)"
echo "  [train.sh]   labels: epoch 0 read from $SM_INPUT_DIR/data/labels_0 (Pipe)"
"#;

pub async fn section(root: &Path, opts: &SourceOptions) -> anyhow::Result<()> {
    println!("\n-- run: chute run with File, FastFile and Pipe channels and a training script --");
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let input_dir = work.path().join("opt/ml/input");
    let out = work.path().join("out");
    std::fs::create_dir_all(&out)?;
    let channels = [
        ("train", "File"),
        ("validation", "FastFile"),
        ("labels", "Pipe"),
    ];
    let channel_flags = channels
        .iter()
        .map(|(name, mode)| format!("{name}=s3://{DATASET}/{name}/,mode={mode}"))
        .collect();
    for (name, mode) in channels {
        println!("  --channel {name}=s3://{DATASET}/{name}/,mode={mode}");
    }
    let command: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "train.sh".into(),
        out.clone().into(),
    ];
    let started = Instant::now();
    let code = chute_run::run(RunOptions {
        input_config: None,
        channel_flags,
        input_mode: None,
        base_dir: work.path().join("opt/ml"),
        input_dir: Some(input_dir.clone()),
        job: chute_run::JobFlags::default(),
        resource_config: None,
        shard_flags: None,
        source: opts.clone(),
        command,
        stop_grace: std::time::Duration::from_secs(10),
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(code == 0, "the training script exited with {code}");

    let source = root.join(DATASET);
    let mut checked = 0usize;
    for name in ["train", "validation"] {
        let listed = std::fs::read_to_string(out.join(format!("{name}.sha256")))?;
        let mut seen = BTreeMap::new();
        for line in listed.lines() {
            let (hash, path) = line
                .split_once("  ./")
                .with_context(|| format!("unexpected sha256sum line {line:?}"))?;
            seen.insert(path.to_owned(), hash.to_owned());
        }
        let want = hash_tree(&source.join(name))?;
        anyhow::ensure!(
            seen == want,
            "channel {name}: the script saw {} files, the source has {}, or bytes differ",
            seen.len(),
            want.len()
        );
        checked += seen.len();
    }
    // The Pipe channel is the objects back to back, in key (bytewise) order.
    let mut labels: Vec<_> = std::fs::read_dir(source.join("labels"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    labels.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    let mut concat = Sha256::new();
    for p in &labels {
        concat.update(std::fs::read(p)?);
    }
    let piped = std::fs::read_to_string(out.join("labels.sha256"))?;
    anyhow::ensure!(
        piped.split_whitespace().next() == Some(hex::encode(concat.finalize()).as_str()),
        "channel labels: the Pipe epoch differs from the objects in key order"
    );
    let left = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&*input_dir.to_string_lossy()));
    anyhow::ensure!(
        !left,
        "a mount under {} was left behind",
        input_dir.display()
    );
    println!(
        "chute run: script exited 0 after {secs:.2}s; {checked} files and {} piped objects match \
         the source (SHA-256); mount and FIFOs torn down",
        labels.len()
    );
    Ok(())
}

/// `{relative path: sha256}` of every file under `dir`.
fn hash_tree(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir)?.to_string_lossy().into_owned();
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&path)?)));
            }
        }
    }
    Ok(out)
}
