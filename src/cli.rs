//! The command line: every command, flag and default (doc/CONFIGURATION.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use chute_pipe::RecordWrapper;
use clap::builder::PossibleValue;
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod s3;
pub use s3::S3Args;

#[derive(Debug, Parser)]
#[command(
    name = "chute",
    version = crate::VERSION,
    about = "Give a training job its S3 data as files: FastFile mounts, Pipe FIFOs or File downloads"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log filter in RUST_LOG syntax (also CHUTE_LOG), e.g. `info,chute_s3=debug`.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Log line format (also CHUTE_LOG_FORMAT).
    #[arg(long, global = true, value_enum, env = "CHUTE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while the command runs
    /// (also CHUTE_METRICS_ADDR), e.g. 127.0.0.1:9464.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "CHUTE_METRICS_ADDR"
    )]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the channel plan: `<size>\t<relative path>` per object, in plan order.
    Ls(LsArgs),
    /// Serve a local directory as an S3 endpoint (each sub-directory is a bucket).
    Serve(ServeArgs),
    /// Run the main job end to end on an embedded server with a sample dataset.
    Demo(DemoArgs),
    /// Pipe mode: stream the channel into DIR/NAME_0, DIR/NAME_1, ... (one FIFO per epoch).
    Pipe(PipeArgs),
    /// File mode: download the channel (or this host's shard) into a directory.
    Download(DownloadArgs),
    /// Container entrypoint: bring the job's channels up, run CMD, tear them down.
    Run(RunArgs),
    /// FastFile mode: mount the channel read-only at MOUNTPOINT (FUSE), streaming on demand.
    Mount(crate::cmd::mount::MountArgs),
    /// Unmount a `chute mount` mount point.
    Unmount(crate::cmd::mount::UnmountArgs),
    /// Mount a FUSE connection at MOUNTPOINT for CMD to serve as /dev/fd/N (no privilege needed by CMD).
    MountHelper(crate::cmd::mount_helper::MountHelperArgs),
    /// Print a shell completion script (bash or fish) for chute.
    #[command(hide = true)]
    Completions(crate::cmd::completions::CompletionsArgs),
    /// Print chute's man page (roff), e.g. `chute man > /usr/share/man/man1/chute.1`.
    #[command(hide = true)]
    Man,
}

/// Options every command that reads a source takes.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    #[command(flatten)]
    pub s3: S3Args,
    /// Read the object list from a SageMaker manifest file instead of listing a prefix.
    #[arg(long, value_name = "URI", conflicts_with = "augmented_manifest")]
    pub manifest: Option<String>,
    /// Read the object list from a SageMaker augmented manifest (JSON lines).
    #[arg(long, value_name = "URI", requires = "attribute_names")]
    pub augmented_manifest: Option<String>,
    /// Attributes to take from each augmented-manifest line (`-ref` ones name objects).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub attribute_names: Vec<String>,
    #[command(flatten)]
    pub hosts: HostArgs,
    /// FullyReplicated or ShardedByS3Key. Default: ShardedByS3Key when --shard-count
    /// is given, else FullyReplicated. ShardedByS3Key without the flags takes the
    /// hosts from resourceconfig.json, SM_HOSTS, Kubernetes or Slurm variables.
    #[arg(long, value_name = "TYPE")]
    pub distribution: Option<String>,
}

/// Which host this is: the flags that come first in host discovery.
#[derive(Debug, Args, Clone, Default)]
pub struct HostArgs {
    /// This host's shard (0-based); with --shard-count.
    #[arg(long, value_name = "I", requires = "shard_count")]
    pub shard_index: Option<usize>,
    /// Number of shards (hosts), 1 to 65536; with --shard-index.
    #[arg(long, value_name = "N", requires = "shard_index")]
    pub shard_count: Option<usize>,
    /// resourceconfig.json to take the host list from (default, when it exists:
    /// <input-dir>/config/resourceconfig.json for chute run, else
    /// /opt/ml/input/config/resourceconfig.json); also CHUTE_RESOURCE_CONFIG.
    #[arg(long, value_name = "FILE", env = "CHUTE_RESOURCE_CONFIG")]
    pub resource_config: Option<PathBuf>,
}

impl HostArgs {
    /// `--shard-index` and `--shard-count`, when both are given.
    pub fn shard_flags(&self) -> Option<(usize, usize)> {
        self.shard_index.zip(self.shard_count)
    }
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// s3://bucket/prefix or file:///abs/dir (omit with --manifest).
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    #[command(flatten)]
    pub src: SourceArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory to serve; each sub-directory is a bucket.
    pub root: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: SocketAddr,
    /// Access key clients must sign with.
    #[arg(long, env = "CHUTE_SERVE_ACCESS_KEY", hide_env_values = true)]
    pub access_key: String,
    /// Secret key clients must sign with.
    #[arg(long, env = "CHUTE_SERVE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the generated dataset here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Number of sample objects, 1 to 100000.
    #[arg(long, default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=100_000).map(|n| n as usize))]
    pub objects: usize,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chute download s3://bucket/train/ /opt/ml/input/data/train\n  chute download --manifest s3://bucket/train.manifest ./train --shard-index 0 --shard-count 4"
)]
pub struct DownloadArgs {
    /// SOURCE (s3://bucket/prefix or file:///abs/dir; omit it with a manifest) and DEST.
    #[arg(num_args = 1..=2, required = true, value_names = ["SOURCE", "DEST"])]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub src: SourceArgs,
    /// GET requests in flight, 1 to 4096.
    #[arg(long, value_name = "N", value_parser = concurrency_range(),
          default_value_t = chute_download::DownloadOptions::default().concurrency)]
    pub concurrency: usize,
    /// Objects larger than this are fetched as parallel ranged parts of about
    /// this size, in MiB, 1 to 5120.
    #[arg(long, value_name = "MIB", value_parser = part_size_mib_range(),
          default_value_t = chute_download::DownloadOptions::default().part_size >> 20)]
    pub part_size_mib: u64,
    /// Skip the free-space check made before the download starts.
    #[arg(long)]
    pub no_space_check: bool,
    /// Sync every file to disk before renaming it into place (power-loss safety).
    #[arg(long)]
    pub fsync: bool,
    /// Resume state file (default: DEST's parent/.<DEST name>.chute-state).
    #[arg(long, value_name = "FILE", conflicts_with = "no_resume")]
    pub state_file: Option<PathBuf>,
    /// Neither read nor write resume state: fetch every object.
    #[arg(long)]
    pub no_resume: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Skip the MD5 check of objects fetched in one GET (sizes are still checked).
    #[arg(long)]
    pub no_verify_md5: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chute run --input-config /opt/ml/input-data-config.json -- python train.py\n  chute run --channel train=s3://bucket/train/,mode=FastFile --channel val=s3://bucket/val/ -- ./train.sh"
)]
pub struct RunArgs {
    /// The job's InputDataConfig: the JSON list of channels, as CreateTrainingJob takes it.
    #[arg(long, value_name = "FILE", env = "CHUTE_INPUT_CONFIG")]
    pub input_config: Option<PathBuf>,
    /// A channel on the command line: NAME=URI[,mode=..,distribution=..,type=..,
    /// attribute=..,record-wrapper=..,compression=..,shuffle-seed=..,content-type=..].
    /// URI is s3://bucket/prefix, file:///abs/dir, or /abs/dir (a FileSystemDataSource).
    #[arg(long = "channel", value_name = "NAME=URI,...")]
    pub channels: Vec<String>,
    /// Default input mode (TrainingInputMode) for channels that name none: File, FastFile or Pipe.
    #[arg(long, value_name = "MODE", env = "CHUTE_INPUT_MODE")]
    pub input_mode: Option<String>,
    /// The SageMaker base directory: input/, model/, output/data/, output/intermediate/
    /// and checkpoints/ live under it.
    #[arg(
        long,
        value_name = "DIR",
        env = "SAGEMAKER_BASE_DIR",
        default_value = "/opt/ml"
    )]
    pub base_dir: PathBuf,
    /// Where channels (data/) and config files (config/) go (default <base-dir>/input).
    #[arg(long, value_name = "DIR", env = "CHUTE_INPUT_DIR")]
    pub input_dir: Option<PathBuf>,
    /// The job's name (TrainingJobName); default: chute-<UTC date>-<time>.
    #[arg(long, value_name = "NAME", env = "CHUTE_JOB_NAME")]
    pub job_name: Option<String>,
    /// Hyperparameters: a JSON object (HyperParameters), e.g. {"epochs": "10"}.
    #[arg(long, value_name = "FILE", env = "CHUTE_HYPERPARAMETERS")]
    pub hyperparameters: Option<PathBuf>,
    /// One hyperparameter, KEY=VALUE (repeatable; wins over --hyperparameters and the request).
    #[arg(long, value_name = "KEY=VALUE")]
    pub hp: Vec<String>,
    /// Where the model and output data go after a successful command (OutputDataConfig.S3OutputPath).
    #[arg(long, value_name = "S3URI", env = "CHUTE_OUTPUT_PATH")]
    pub output_path: Option<String>,
    /// Checkpoints: s3://bucket/prefix[,local=PATH] (CheckpointConfig; local default <base-dir>/checkpoints).
    #[arg(long, value_name = "S3URI[,local=PATH]", env = "CHUTE_CHECKPOINT")]
    pub checkpoint: Option<String>,
    /// Longest the command may run, in seconds (StoppingCondition.MaxRuntimeInSeconds).
    #[arg(long, value_name = "SECS", env = "CHUTE_MAX_RUNTIME")]
    pub max_runtime: Option<u64>,
    #[command(flatten)]
    pub hosts: HostArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Seconds the command has to exit after chute run sends it SIGTERM (run time
    /// out, failed channel) before its process group is killed; SageMaker gives 120.
    #[arg(
        long,
        value_name = "SECS",
        env = "CHUTE_STOP_GRACE",
        default_value_t = 120
    )]
    pub stop_grace: u64,
    /// The training command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  chute pipe s3://bucket/train/ --dir /opt/ml/input/data --channel train --epochs 3\n  chute pipe --augmented-manifest s3://bucket/train.jsonl --attribute-names source-ref,label \\\n      --dir /opt/ml/input/data --channel train --record-wrapper recordio"
)]
pub struct PipeArgs {
    /// s3://bucket/prefix or file:///abs/dir (omit with --manifest / --augmented-manifest).
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    #[command(flatten)]
    pub src: SourceArgs,
    /// Directory for the FIFOs (created if missing), e.g. /opt/ml/input/data.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Channel name: the FIFOs are DIR/NAME_0, DIR/NAME_1, ...
    #[arg(long, value_name = "NAME")]
    pub channel: String,
    /// Number of epochs (default: until SIGINT/SIGTERM).
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// Wrap each object (or augmented-manifest attribute) in a record.
    #[arg(long, ignore_case = true, default_value = "none", value_parser = record_wrapper())]
    pub record_wrapper: RecordWrapper,
    /// Shuffle the whole channel with this seed at the start of every epoch (before sharding).
    #[arg(long, value_name = "S")]
    pub shuffle_seed: Option<u64>,
    /// Objects are gzip (CompressionType Gzip): stream them decompressed.
    #[arg(long)]
    pub gunzip: bool,
    /// Read-ahead budget, 1MiB to 1TiB, e.g. 512M (default: 1/8 of memory, 64 MiB to 256 MiB).
    #[arg(long, value_name = "BYTES", value_parser = crate::options::pipe_max_memory)]
    pub max_memory: Option<u64>,
    /// GET requests in flight, 1 to 4096 (default 64).
    #[arg(long, value_name = "N", value_parser = concurrency_range())]
    pub concurrency: Option<usize>,
    /// Objects larger than this are fetched as parallel ranged parts of this
    /// size, in MiB, 1 to 5120 (default 32; at most an eighth of --max-memory).
    #[arg(long, value_name = "MIB", value_parser = part_size_mib_range())]
    pub part_size_mib: Option<u64>,
}

/// `--record-wrapper`: Pipe mode's `RecordWrapper`, spelled as on the command
/// line (any case).
fn record_wrapper() -> impl clap::builder::TypedValueParser<Value = RecordWrapper> {
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("none").help("Objects back to back"),
        PossibleValue::new("recordio").help("MXNet RecordIO: one record per object"),
    ])
    // The parser checked the value, ignoring case, but hands it on as given.
    .map(|v| {
        if v.eq_ignore_ascii_case("recordio") {
            RecordWrapper::RecordIo
        } else {
            RecordWrapper::None
        }
    })
}

/// Requests in flight: enough for any link, few enough that a typo cannot ask
/// for millions of sockets.
fn concurrency_range() -> impl clap::builder::TypedValueParser<Value = usize> {
    clap::value_parser!(u64).range(1..=4096).map(|n| n as usize)
}

/// Part sizes in MiB: up to 5 GiB, S3's largest part.
fn part_size_mib_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=5120)
}
