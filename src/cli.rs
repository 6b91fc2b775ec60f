//! The command line, as DESIGN.md fixes it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "chute",
    version,
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
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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
}

/// Options every command that reads a source takes.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Custom S3 endpoint (MinIO, Garage, `chute serve`); also AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: the AWS region chain, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (bucket in the path); on by default with a custom endpoint.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub force_path_style: Option<bool>,
    /// Read the object list from a SageMaker manifest file instead of listing a prefix.
    #[arg(long, value_name = "URI", conflicts_with = "augmented_manifest")]
    pub manifest: Option<String>,
    /// Read the object list from a SageMaker augmented manifest (JSON lines).
    #[arg(long, value_name = "URI", requires = "attribute_names")]
    pub augmented_manifest: Option<String>,
    /// Attributes to take from each augmented-manifest line (`-ref` ones name objects).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub attribute_names: Vec<String>,
    /// This host's shard (0-based); with --shard-count.
    #[arg(long, value_name = "I", requires = "shard_count")]
    pub shard_index: Option<usize>,
    /// Number of shards (hosts); with --shard-index.
    #[arg(long, value_name = "N", requires = "shard_index")]
    pub shard_count: Option<usize>,
    /// FullyReplicated or ShardedByS3Key. Default: ShardedByS3Key when --shard-count
    /// is given, else FullyReplicated. ShardedByS3Key without the flags takes the
    /// hosts from resourceconfig.json, SM_HOSTS, Kubernetes or Slurm variables.
    #[arg(long, value_name = "TYPE")]
    pub distribution: Option<String>,
    /// resourceconfig.json to take the host list from
    /// (default /opt/ml/input/config/resourceconfig.json when it exists).
    #[arg(long, value_name = "FILE")]
    pub resource_config: Option<PathBuf>,
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
    /// Number of sample objects.
    #[arg(long, default_value_t = 300)]
    pub objects: usize,
}
