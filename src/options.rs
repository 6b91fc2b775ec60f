//! From command-line arguments to a resolved channel plan for this host.

use anyhow::Context;
use chute_channel::{ChannelSource, SourceOptions};
use chute_plan::{discover_hosts, Distribution, Hosts, SourceUri};
use chute_s3::S3Config;

use crate::cli::SourceArgs;
use crate::exit::UsageError;

const DEFAULT_RESOURCE_CONFIG: &str = "/opt/ml/input/config/resourceconfig.json";

pub fn source_options(args: &SourceArgs) -> SourceOptions {
    SourceOptions {
        s3: S3Config {
            endpoint_url: args.endpoint_url.clone(),
            region: args.region.clone(),
            force_path_style: args.force_path_style,
            ..S3Config::default()
        },
        ..SourceOptions::default()
    }
}

/// The channel source from SOURCE and the manifest flags: exactly one of them.
pub fn channel_source(source: Option<&str>, args: &SourceArgs) -> anyhow::Result<ChannelSource> {
    let manifest = args.manifest.as_deref();
    let augmented = args.augmented_manifest.as_deref();
    match (source, manifest, augmented) {
        (Some(s), None, None) => Ok(ChannelSource::Prefix(SourceUri::parse(s)?)),
        (None, Some(m), None) => Ok(ChannelSource::Manifest(m.to_owned())),
        (None, None, Some(a)) => Ok(ChannelSource::AugmentedManifest {
            uri: a.to_owned(),
            attribute_names: args.attribute_names.clone(),
        }),
        (None, None, None) => Err(UsageError(
            "no source given: pass s3://bucket/prefix, file:///abs/dir, --manifest URI or --augmented-manifest URI".into(),
        )
        .into()),
        _ => Err(UsageError(
            "give either SOURCE or a manifest (--manifest / --augmented-manifest), not both: a manifest names its own objects".into(),
        )
        .into()),
    }
}

/// How the channel is distributed and, when sharded, which host this is.
pub fn distribution(args: &SourceArgs) -> anyhow::Result<(Distribution, Hosts)> {
    let distribution = match &args.distribution {
        Some(d) => d.parse::<Distribution>()?,
        None if args.shard_count.is_some() => Distribution::ShardedByS3Key,
        None => Distribution::FullyReplicated,
    };
    let flags = args.shard_index.zip(args.shard_count);
    if distribution == Distribution::FullyReplicated && flags.is_none() {
        // Host discovery only decides shards; a replicated channel needs none, and
        // must not fail on a half-configured environment it does not use.
        return Ok((distribution, discover_hosts(None, None, &|_| None)?));
    }
    let resource_config = match &args.resource_config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --resource-config {}", path.display()))
                .map_err(|e| UsageError(format!("{e:#}")))?,
        ),
        None => std::fs::read_to_string(DEFAULT_RESOURCE_CONFIG).ok(),
    };
    let hosts = discover_hosts(flags, resource_config.as_deref(), &|name| {
        std::env::var(name).ok()
    })?;
    Ok((distribution, hosts))
}
