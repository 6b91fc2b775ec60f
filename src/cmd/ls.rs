//! `chute ls`: the plan a host would get, for people checking a manifest or a
//! shard before a job, and for scripts.

use std::io::Write;
use std::process::ExitCode;

use chute_channel::open;
use chute_plan::Plan;

use crate::cli::LsArgs;
use crate::options::channel_request;

pub async fn run(args: LsArgs) -> anyhow::Result<ExitCode> {
    let channel = open(channel_request(args.source.as_deref(), &args.src, None)?).await?;
    let total = channel.plan.objects.len();
    let hosts = channel.hosts.clone();
    let (_, plan) = channel.into_host_plan();
    print_plan(&plan)?;
    let shard_note = if plan.objects.len() == total {
        String::new()
    } else {
        format!(
            " (shard {} of {} by {}: {} of {} objects)",
            hosts.index,
            hosts.hosts.len(),
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
