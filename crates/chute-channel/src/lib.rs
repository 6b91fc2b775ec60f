//! Turns what a user wrote about a channel (a source URI or a manifest, S3
//! options, a distribution) into what a mode needs: a [`Client`] that can read
//! the data and the [`Plan`] of objects this host gets.
//!
//! This is the one place where the S3 layer and the pure planning logic meet; the
//! modes take its output and never list or parse manifests themselves.

use std::sync::Arc;

use chute_plan::{
    augmented_objects, check_rel_path, parse_augmented_manifest, parse_manifest, plan_from_entries,
    plan_from_listing, AugmentedRecord, Distribution, Hosts, ManifestError, ObjectInfo, Plan,
    S3Url, Skipped, SourceUri, UriError,
};
use chute_s3::{
    Client, ErrorClass, ListOptions, LocalStore, ObjectStore, RetryPolicy, S3Config, S3Store,
    StoreError,
};
use futures::{StreamExt, TryStreamExt};

/// HEAD requests in flight while sizing the objects a manifest names.
const HEAD_CONCURRENCY: usize = 64;

/// How to reach the data and how hard to try.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub s3: S3Config,
    pub retry: RetryPolicy,
    pub list: ListOptions,
}

/// Where a channel's object list comes from.
#[derive(Debug, Clone)]
pub enum ChannelSource {
    /// List a prefix (`S3Prefix`), or walk a local directory.
    Prefix(SourceUri),
    /// A SageMaker `ManifestFile` at this URI.
    Manifest(String),
    /// A SageMaker `AugmentedManifestFile` at this URI, with its attribute names.
    AugmentedManifest {
        uri: String,
        attribute_names: Vec<String>,
    },
}

/// A resolved channel.
pub struct Channel {
    pub client: Client,
    /// The whole channel, before sharding.
    pub plan: Plan,
    /// For augmented manifests: the records, for Pipe mode to stream.
    pub records: Option<Vec<AugmentedRecord>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error("manifest {uri}: {source}")]
    Manifest {
        uri: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl ChannelError {
    /// Whether the fault is in what the user wrote (exit 2) rather than in
    /// reaching the data (exit 3).
    pub fn is_usage(&self) -> bool {
        match self {
            ChannelError::Uri(_) | ChannelError::Manifest { .. } | ChannelError::Usage(_) => true,
            ChannelError::Store(e) => e.class() == ErrorClass::Usage,
            ChannelError::Io { .. } => false,
        }
    }
}

/// A client for S3 with these options.
pub async fn s3_client(opts: &SourceOptions) -> Result<Client, ChannelError> {
    let store = S3Store::new(&opts.s3).await?;
    Ok(Client::new(Arc::new(store), opts.retry.clone()))
}

/// A client for a source, and the bucket and prefix to use with it. Local
/// sources become a store rooted at the directory, with an empty bucket and prefix.
pub async fn client_for(
    uri: &SourceUri,
    opts: &SourceOptions,
) -> Result<(Client, String, String), ChannelError> {
    match uri {
        SourceUri::S3 { bucket, prefix } => {
            Ok((s3_client(opts).await?, bucket.clone(), prefix.clone()))
        }
        SourceUri::Local { root } => {
            let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root.clone())?);
            Ok((
                Client::new(store, opts.retry.clone()),
                String::new(),
                String::new(),
            ))
        }
    }
}

/// Reads a small file named by an `s3://` or `file://` URI (a manifest).
async fn read_uri(uri: &str, opts: &SourceOptions) -> Result<Vec<u8>, ChannelError> {
    if let Some(path) = uri.strip_prefix("file://") {
        return tokio::fs::read(path)
            .await
            .map_err(|source| ChannelError::Io {
                path: path.to_owned(),
                source,
            });
    }
    let url = S3Url::parse(uri)?;
    let client = s3_client(opts).await?;
    Ok(client.get_object(&url.bucket, &url.key).await?.to_vec())
}

/// Plans objects named by a manifest: HEADs each (in order, many at a time) for
/// its size and version. Entries whose path is unsafe are skipped up front, so
/// no request is spent on them and an impossible key cannot fail the channel.
async fn plan_named(client: &Client, items: Vec<(S3Url, String)>) -> Result<Plan, ChannelError> {
    let mut skipped = Vec::new();
    let items: Vec<_> = items
        .into_iter()
        .filter(|(url, path)| match check_rel_path(path) {
            Err(reason) => {
                skipped.push(Skipped {
                    key: url.key.clone(),
                    reason,
                });
                false
            }
            Ok(_) => true,
        })
        .collect();
    let entries: Vec<(ObjectInfo, String)> = futures::stream::iter(items)
        .map(|(url, path)| async move {
            // A folder entry names a directory, not an object to size.
            let (size, etag) = if path.ends_with('/') {
                (0, None)
            } else {
                let meta = client.head(&url.bucket, &url.key).await?;
                (meta.size, meta.etag)
            };
            Ok::<_, ChannelError>((
                ObjectInfo {
                    bucket: url.bucket,
                    key: url.key,
                    size,
                    etag,
                },
                path,
            ))
        })
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    let mut plan = plan_from_entries(entries);
    plan.skipped.extend(skipped);
    Ok(plan)
}

/// Lists or reads the channel's object list and plans it (all hosts' objects).
pub async fn resolve(
    source: &ChannelSource,
    opts: &SourceOptions,
) -> Result<Channel, ChannelError> {
    match source {
        ChannelSource::Prefix(uri) => {
            let (client, bucket, prefix) = client_for(uri, opts).await?;
            let listed = client.list(&bucket, &prefix, &opts.list).await?;
            let infos = listed
                .into_iter()
                .map(|m| ObjectInfo {
                    bucket: bucket.clone(),
                    key: m.key,
                    size: m.size,
                    etag: m.etag,
                })
                .collect();
            Ok(Channel {
                client,
                plan: plan_from_listing(&prefix, infos),
                records: None,
            })
        }
        ChannelSource::Manifest(uri) => {
            let bytes = read_uri(uri, opts).await?;
            let manifest = parse_manifest(&bytes).map_err(|source| ChannelError::Manifest {
                uri: uri.clone(),
                source,
            })?;
            let client = s3_client(opts).await?;
            let items = manifest
                .entries
                .into_iter()
                .map(|e| {
                    (
                        S3Url {
                            bucket: manifest.bucket.clone(),
                            key: e.key,
                        },
                        e.rel,
                    )
                })
                .collect();
            let plan = plan_named(&client, items).await?;
            Ok(Channel {
                client,
                plan,
                records: None,
            })
        }
        ChannelSource::AugmentedManifest {
            uri,
            attribute_names,
        } => {
            let bytes = read_uri(uri, opts).await?;
            let records = parse_augmented_manifest(&bytes, attribute_names).map_err(|source| {
                ChannelError::Manifest {
                    uri: uri.clone(),
                    source,
                }
            })?;
            let client = s3_client(opts).await?;
            let items = augmented_objects(&records)
                .into_iter()
                .map(|url| {
                    let path = url.key.clone();
                    (url, path)
                })
                .collect();
            let plan = plan_named(&client, items).await?;
            Ok(Channel {
                client,
                plan,
                records: Some(records),
            })
        }
    }
}

/// This host's part of a plan.
pub fn distribute(plan: Plan, distribution: Distribution, hosts: &Hosts) -> Plan {
    match distribution {
        Distribution::FullyReplicated => plan,
        Distribution::ShardedByS3Key => plan.shard(&hosts.shard()),
    }
}
