//! From command-line arguments to this host's channel request, and the one
//! parser and range check every size option goes through.

use std::path::Path;

use chute_channel::hosts::HostsError;
use chute_channel::{ChannelRequest, ChannelSource, SourceOptions};
use chute_plan::{discover_hosts, Distribution, Hosts, SourceUri};

use crate::cli::SourceArgs;
use crate::exit::UsageError;

/// Where SageMaker puts the job's hosts; read when it exists.
const DEFAULT_RESOURCE_CONFIG: &str = "/opt/ml/input/config/resourceconfig.json";

/// The channel request of a command's SOURCE and source flags; `name` is the
/// channel's, when the command has one.
pub fn channel_request(
    source: Option<&str>,
    args: &SourceArgs,
    name: Option<&str>,
) -> anyhow::Result<ChannelRequest> {
    let source = channel_source(source, args)?;
    let (distribution, hosts) = distribution(args)?;
    Ok(ChannelRequest {
        name: name.map(str::to_owned),
        source,
        options: source_options(args),
        distribution,
        hosts,
    })
}

fn source_options(args: &SourceArgs) -> SourceOptions {
    SourceOptions {
        s3: args.s3.s3_config(),
        ..SourceOptions::default()
    }
}

/// The channel source from SOURCE and the manifest flags: exactly one of them.
fn channel_source(source: Option<&str>, args: &SourceArgs) -> anyhow::Result<ChannelSource> {
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

/// How the channel is distributed and, when sharded, which host this is (host
/// discovery as `chute run` does it, with SageMaker's resource config path).
fn distribution(args: &SourceArgs) -> anyhow::Result<(Distribution, Hosts)> {
    let distribution = match &args.distribution {
        Some(d) => d.parse::<Distribution>()?,
        None if args.hosts.shard_count.is_some() => Distribution::ShardedByS3Key,
        None => Distribution::FullyReplicated,
    };
    let flags = args.hosts.shard_flags();
    if distribution == Distribution::FullyReplicated && flags.is_none() {
        // Host discovery only decides shards; a replicated channel needs none, and
        // must not fail on a half-configured environment it does not use.
        return Ok((distribution, discover_hosts(None, None, &|_| None)?));
    }
    let found = chute_channel::hosts::find(
        flags,
        args.hosts.resource_config.as_deref(),
        Path::new(DEFAULT_RESOURCE_CONFIG),
        true,
        &|name| std::env::var(name).ok(),
    )
    .map_err(|e| -> anyhow::Error {
        match e {
            HostsError::ReadResourceConfig { path, source } => UsageError(format!(
                "cannot read --resource-config {}: {source}",
                path.display()
            ))
            .into(),
            other => other.into(),
        }
    })?;
    Ok((distribution, found.hosts))
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const PIB: u64 = 1 << 50;

/// The sizes an option accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub min: u64,
    pub max: u64,
}

/// `chute pipe --max-memory`: Pipe mode works down to one part of 1 MiB.
pub const PIPE_MEMORY: SizeRange = SizeRange { min: MIB, max: TIB };
/// `chute mount --max-memory`: FastFile needs room for a few blocks per reader.
pub const MOUNT_MEMORY: SizeRange = SizeRange {
    min: 8 * MIB,
    max: TIB,
};
/// `chute mount --cache-size`: a disk budget.
pub const CACHE_SIZE: SizeRange = SizeRange { min: MIB, max: PIB };

/// A size the way people write it: `1048576`, `64k`, `512M`, `512MiB`, `2GB`,
/// `1.5G`. Units are binary multiples (sizes of memory and disk); `B`, `iB` are
/// optional. Whole bytes only.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.strip_suffix('b').unwrap_or(&unit) {
        "" => 1,
        "k" | "ki" => KIB,
        "m" | "mi" => MIB,
        "g" | "gi" => GIB,
        "t" | "ti" => TIB,
        "p" | "pi" => PIB,
        "e" | "ei" => 1 << 60,
        _ => {
            return Err(format!(
                "'{s}' is not a size: unknown unit '{unit}' (use bytes or a K, M, G or T suffix, e.g. 512MiB)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("'{s}' is not a size (for example 256MiB, 2GiB or 1048576)"))?;
    let bytes = value * mult as f64;
    // 2^64 is exactly representable; anything at or above it does not fit.
    if bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("'{s}' is too large for a size in bytes"));
    }
    Ok(bytes as u64)
}

/// Sizes for messages: exact multiples in the largest binary unit that fits.
pub fn format_size(bytes: u64) -> String {
    for (unit, mult) in [
        ("PiB", PIB),
        ("TiB", TIB),
        ("GiB", GIB),
        ("MiB", MIB),
        ("KiB", KIB),
    ] {
        if bytes >= mult && bytes % mult == 0 {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes} bytes")
}

/// Parses `s` and checks it against `range`; the error names `flag` and the
/// accepted range.
pub fn size_option(flag: &str, s: &str, range: SizeRange) -> Result<u64, UsageError> {
    let accepted = || {
        format!(
            "{flag} accepts {} to {}",
            format_size(range.min),
            format_size(range.max)
        )
    };
    let bytes = parse_size(s).map_err(|e| UsageError(format!("{flag}: {e}; {}", accepted())))?;
    if !(range.min..=range.max).contains(&bytes) {
        return Err(UsageError(format!(
            "{flag} {s} is out of range: {}",
            accepted()
        )));
    }
    Ok(bytes)
}

/// clap's value parser for `chute pipe --max-memory` (clap names the flag).
pub fn pipe_max_memory(s: &str) -> Result<u64, String> {
    size_option("--max-memory", s, PIPE_MEMORY).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(MIB));
        assert_eq!(parse_size("512M"), Ok(512 * MIB));
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("512mb"), Ok(512 * MIB));
        assert_eq!(parse_size("2g"), Ok(2 * GIB));
        assert_eq!(parse_size(" 1.5K "), Ok(1536));
        assert_eq!(parse_size("2 EiB"), Ok(2 << 60));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["12 parsecs", "", "lots", "1.2.3M", "-5M", "inf", "NaN"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("16EiB").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999999").is_err());
    }

    #[test]
    fn ranges_are_checked_and_named() {
        assert_eq!(
            size_option("--max-memory", "2M", PIPE_MEMORY).unwrap(),
            2 * MIB
        );
        assert_eq!(
            size_option("--max-memory", "1TiB", PIPE_MEMORY).unwrap(),
            TIB
        );
        let e = size_option("--max-memory", "2EiB", PIPE_MEMORY)
            .unwrap_err()
            .0;
        assert_eq!(
            e,
            "--max-memory 2EiB is out of range: --max-memory accepts 1MiB to 1TiB"
        );
        let e = size_option("--max-memory", "2305843009213693952", MOUNT_MEMORY)
            .unwrap_err()
            .0;
        assert!(e.contains("accepts 8MiB to 1TiB"), "{e}");
        let e = size_option("--max-memory", "4M", MOUNT_MEMORY)
            .unwrap_err()
            .0;
        assert!(e.contains("out of range"), "{e}");
        let e = size_option("--cache-size", "lots", CACHE_SIZE)
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("--cache-size: 'lots' is not a size") && e.contains("1MiB to 1PiB"),
            "{e}"
        );
        assert_eq!(format_size(1536), "1536 bytes");
        assert_eq!(format_size(3 * KIB), "3KiB");
    }
}
