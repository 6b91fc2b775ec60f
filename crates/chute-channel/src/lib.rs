//! Turns what a user wrote about a channel (a source URI or a manifest, S3
//! options, a distribution) into what a mode needs: a [`Client`] that can read
//! the data and the [`Plan`] of objects this host gets.
//!
//! This is the one place where the S3 layer and the pure planning logic meet; the
//! modes take its output and never list or parse manifests themselves. Its front
//! door is [`open`]: a [`ChannelRequest`] in, this host's [`HostChannel`] out. It
//! also owns the rules every mode shares about channels: their names
//! ([`check_channel_name`]) and which host this is ([`hosts`]).

pub mod hosts;
mod name;
mod request;
mod slurm;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chute_plan::{
    check_rel_path, plan_from_entries, plan_from_listing, AugmentedField, AugmentedParser,
    AugmentedRecord, Distribution, ManifestEntry, ManifestError, ManifestParser, ObjectInfo, Plan,
    S3Url, Shard, Skipped, SourceUri, UriError,
};
use chute_s3::{
    Classify, Client, ErrorClass, ListOptions, LocalStore, ObjectStore, ReadLimits, ReadStream,
    RetryPolicy, S3Config, S3Store, StoreError,
};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

pub use name::{check_channel_name, ChannelNameError, MAX_CHANNEL_NAME};
pub use request::{open, ChannelRequest, HostChannel};

/// HEAD requests in flight while sizing the objects a manifest names.
const HEAD_CONCURRENCY: usize = 64;

/// Bytes read from a local manifest at a time.
const READ_CHUNK: usize = 64 << 10;

/// How to reach the data and how hard to try.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub s3: S3Config,
    pub retry: RetryPolicy,
    /// Throughput floor and total resumptions of each read.
    pub read_limits: ReadLimits,
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

impl Classify for ChannelError {
    /// What the user wrote (a URI, a manifest) is at fault, or reaching the data
    /// is; a manifest file that cannot be read counts as the source.
    fn class(&self) -> ErrorClass {
        match self {
            ChannelError::Uri(_) | ChannelError::Manifest { .. } | ChannelError::Usage(_) => {
                ErrorClass::Usage
            }
            ChannelError::Store(e) => e.class(),
            ChannelError::Io { .. } => ErrorClass::Source,
        }
    }
}

/// A client for S3 with these options.
pub async fn s3_client(opts: &SourceOptions) -> Result<Client, ChannelError> {
    let store = S3Store::new(&opts.s3).await?;
    Ok(Client::new(Arc::new(store), opts.retry.clone()).with_read_limits(opts.read_limits.clone()))
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
                Client::new(store, opts.retry.clone()).with_read_limits(opts.read_limits.clone()),
                String::new(),
                String::new(),
            ))
        }
    }
}

/// The bytes of a manifest named by an `s3://` or `file://` URI, as they
/// arrive: a manifest may be large, and is never held whole.
enum ManifestBytes {
    File { file: tokio::fs::File, path: String },
    S3(ReadStream),
}

impl ManifestBytes {
    async fn open(uri: &str, client: &Client) -> Result<ManifestBytes, ChannelError> {
        if let Some(path) = uri.strip_prefix("file://") {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|source| ChannelError::Io {
                    path: path.to_owned(),
                    source,
                })?;
            return Ok(ManifestBytes::File {
                file,
                path: path.to_owned(),
            });
        }
        let url = S3Url::parse(uri)?;
        let meta = client.head(&url.bucket, &url.key).await?;
        if meta.size == 0 {
            return Ok(ManifestBytes::S3(futures::stream::empty().boxed()));
        }
        Ok(ManifestBytes::S3(client.read(
            &url.bucket,
            &url.key,
            0..meta.size,
            meta.etag,
        )))
    }

    /// The next piece of the file; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, ChannelError> {
        match self {
            ManifestBytes::File { file, path } => {
                let mut buf = vec![0u8; READ_CHUNK];
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|source| ChannelError::Io {
                        path: path.clone(),
                        source,
                    })?;
                buf.truncate(n);
                Ok((n > 0).then(|| Bytes::from(buf)))
            }
            ManifestBytes::S3(stream) => Ok(stream.next().await.transpose()?),
        }
    }
}

/// A manifest's parser, whichever kind.
enum Parser {
    Plain(ManifestParser),
    Augmented(AugmentedParser),
}

/// What a manifest yields, in file order.
enum Named {
    /// An object to size, and its relative path in the channel.
    Object(S3Url, String),
    /// An augmented-manifest record, for Pipe mode.
    Record(AugmentedRecord),
}

/// A named thing once sized.
enum Sized {
    Entry(ObjectInfo, String),
    Skipped(Skipped),
    Record(AugmentedRecord),
}

impl Parser {
    /// Parses `bytes` (the end of the file when `None`) into `queue`.
    fn take(
        &mut self,
        bytes: Option<&[u8]>,
        queue: &mut VecDeque<Named>,
    ) -> Result<(), ManifestError> {
        match self {
            Parser::Plain(p) => {
                let mut entries: Vec<ManifestEntry> = Vec::new();
                match bytes {
                    Some(b) => p.feed(b, &mut entries)?,
                    None => p.finish(&mut entries)?,
                }
                let bucket = p.bucket().unwrap_or_default();
                queue.extend(entries.into_iter().map(|e| {
                    let url = S3Url {
                        bucket: bucket.to_owned(),
                        key: e.key,
                    };
                    Named::Object(url, e.rel)
                }));
            }
            Parser::Augmented(p) => {
                let mut records = Vec::new();
                match bytes {
                    Some(b) => p.feed(b, &mut records)?,
                    None => p.finish(&mut records)?,
                }
                for record in records {
                    // Such an object appears at its full key (see
                    // `chute_plan::augmented_objects`).
                    for f in &record.fields {
                        if let AugmentedField::Ref { url, .. } = f {
                            queue.push_back(Named::Object(url.clone(), url.key.clone()));
                        }
                    }
                    queue.push_back(Named::Record(record));
                }
            }
        }
        Ok(())
    }
}

/// Reads a manifest as it arrives and plans the objects it names: each is
/// HEADed for its size and version, many at a time and while the rest of the
/// file is still being read. Entries whose path is unsafe are skipped up
/// front, so no request is spent on them and an impossible key cannot fail the
/// channel. Returns the plan and, for an augmented manifest, its records.
async fn plan_manifest(
    client: &Client,
    uri: &str,
    bytes: ManifestBytes,
    parser: Parser,
) -> Result<(Plan, Vec<AugmentedRecord>), ChannelError> {
    let in_manifest = |source| ChannelError::Manifest {
        uri: uri.to_owned(),
        source,
    };
    let named = futures::stream::try_unfold(
        (bytes, parser, VecDeque::new(), false),
        move |(mut bytes, mut parser, mut queue, mut ended)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    return Ok(Some((item, (bytes, parser, queue, ended))));
                }
                if ended {
                    return Ok(None);
                }
                let chunk = bytes.next().await?;
                ended = chunk.is_none();
                parser
                    .take(chunk.as_deref(), &mut queue)
                    .map_err(in_manifest)?;
            }
        },
    );
    let sized: Vec<Sized> = named
        .map_ok(|item| async move {
            let (url, path) = match item {
                Named::Record(r) => return Ok(Sized::Record(r)),
                Named::Object(url, path) => (url, path),
            };
            if let Err(reason) = check_rel_path(&path) {
                return Ok(Sized::Skipped(Skipped {
                    key: url.key,
                    reason,
                }));
            }
            // A folder entry names a directory, not an object to size.
            let (size, etag) = if path.ends_with('/') {
                (0, None)
            } else {
                let meta = client.head(&url.bucket, &url.key).await?;
                (meta.size, meta.etag)
            };
            let info = ObjectInfo {
                bucket: url.bucket,
                key: url.key,
                size,
                etag,
            };
            Ok::<_, ChannelError>(Sized::Entry(info, path))
        })
        .try_buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut records = Vec::new();
    for s in sized {
        match s {
            Sized::Entry(info, path) => entries.push((info, path)),
            Sized::Skipped(s) => skipped.push(s),
            Sized::Record(r) => records.push(r),
        }
    }
    let mut plan = plan_from_entries(entries);
    plan.skipped.extend(skipped);
    Ok((plan, records))
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
            let client = s3_client(opts).await?;
            let bytes = ManifestBytes::open(uri, &client).await?;
            let parser = Parser::Plain(ManifestParser::new());
            let (plan, _) = plan_manifest(&client, uri, bytes, parser).await?;
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
            let parser =
                AugmentedParser::new(attribute_names).map_err(|source| ChannelError::Manifest {
                    uri: uri.clone(),
                    source,
                })?;
            let client = s3_client(opts).await?;
            let bytes = ManifestBytes::open(uri, &client).await?;
            let (plan, records) =
                plan_manifest(&client, uri, bytes, Parser::Augmented(parser)).await?;
            Ok(Channel {
                client,
                plan,
                records: Some(records),
            })
        }
    }
}

/// This host's part of a plan. `hosts` is a [`Hosts`](chute_plan::Hosts), a
/// [`JobHosts`](chute_plan::JobHosts) or the
/// [`Shard`] itself.
pub fn distribute(plan: Plan, distribution: Distribution, hosts: impl Into<Shard>) -> Plan {
    match distribution {
        Distribution::FullyReplicated => plan,
        Distribution::ShardedByS3Key => plan.shard(&hosts.into()),
    }
}
