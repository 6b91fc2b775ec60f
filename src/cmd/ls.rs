//! `chute ls`: the plan a host would get, for people checking a manifest or a
//! shard before a job, and for scripts.

use std::io::Write;
use std::process::ExitCode;

use chute_channel::{distribute, resolve};
use chute_plan::Plan;

use crate::cli::LsArgs;
use crate::options::{channel_source, distribution, source_options};

pub async fn run(args: LsArgs) -> anyhow::Result<ExitCode> {
    let source = channel_source(args.source.as_deref(), &args.src)?;
    let (dist, hosts) = distribution(&args.src)?;
    let opts = source_options(&args.src);
    let channel = resolve(&source, &opts).await?;
    let total = channel.plan.objects.len();
    for s in &channel.plan.skipped {
        tracing::warn!(key = %s.key, "skipped key: {}", s.reason);
    }
    let plan = distribute(channel.plan, dist, &hosts);
    print_plan(&plan)?;
    let shard_note = if plan.objects.len() == total {
        String::new()
    } else {
        format!(
            " (shard {} of {} by {}: {} of {} objects)",
            hosts.index,
            hosts.count(),
            hosts.source,
            plan.objects.len(),
            total
        )
    };
    eprintln!(
        "{} objects, {} bytes{}; {} keys skipped",
        plan.objects.len(),
        plan.total_bytes(),
        shard_note,
        plan.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Plan) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let res = (|| {
        for o in &plan.objects {
            writeln!(out, "{}\t{}", o.size, o.path())?;
        }
        out.flush()
    })();
    match res {
        // `chute ls | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
