//! `chute run`: the container entrypoint. All the work is in `chute-run`; this maps
//! the command line onto it and its outcome onto an exit code (the command's own,
//! or the contract's 2/3 when the job could not start).

use std::process::ExitCode;

use chute_channel::SourceOptions;
use chute_run::{JobFlags, RunOptions};

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        input_config: args.input_config,
        channel_flags: args.channels,
        input_mode: args.input_mode,
        base_dir: args.base_dir,
        input_dir: args.input_dir,
        job: JobFlags {
            job_name: args.job_name,
            hyperparameters_file: args.hyperparameters,
            hyperparameters: args.hp,
            output_path: args.output_path,
            checkpoint: args.checkpoint,
            max_runtime: args.max_runtime,
        },
        shard_flags: args.hosts.shard_flags(),
        resource_config: args.hosts.resource_config,
        source: SourceOptions {
            s3: args.s3.s3_config(),
            ..SourceOptions::default()
        },
        command: args.command,
        stop_grace: std::time::Duration::from_secs(args.stop_grace),
    };
    match chute_run::run(opts).await {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            let code = e.exit_code();
            eprintln!(
                "chute: error: {}",
                crate::exit::render(&anyhow::Error::new(e))
            );
            Ok(ExitCode::from(code))
        }
    }
}
