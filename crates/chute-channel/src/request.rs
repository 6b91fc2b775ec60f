//! The front door every mode comes through: a channel request (where the data
//! is, how to reach it, how it is distributed, which hosts share it) in, this
//! host's channel out. Resolving, warning about skipped keys and sharding happen
//! here once, in this order, for `chute ls`, `download`, `pipe`, `mount` and
//! every channel of `chute run`.

use chute_plan::{AugmentedRecord, Distribution, Hosts, Plan, Shard};
use chute_s3::Client;

use crate::{resolve, ChannelError, ChannelSource, SourceOptions};

/// One channel, as a command or a job describes it.
#[derive(Debug, Clone)]
pub struct ChannelRequest {
    /// The channel's name, for the log; `None` where a command has none.
    pub name: Option<String>,
    pub source: ChannelSource,
    pub options: SourceOptions,
    pub distribution: Distribution,
    /// The job's hosts and which one this is.
    pub hosts: Hosts,
}

/// A channel resolved for this host.
pub struct HostChannel {
    pub client: Client,
    /// Every host's objects (skipped keys already reported): Pipe mode shards
    /// it anew each epoch, after shuffling.
    pub plan: Plan,
    /// For augmented manifests: the records, for Pipe mode to stream.
    pub records: Option<Vec<AugmentedRecord>>,
    pub distribution: Distribution,
    pub hosts: Hosts,
}

/// Lists (or reads the manifest of) the channel and reports each skipped key
/// once, naming the channel when it has a name.
pub async fn open(request: ChannelRequest) -> Result<HostChannel, ChannelError> {
    let channel = resolve(&request.source, &request.options).await?;
    for s in &channel.plan.skipped {
        match &request.name {
            Some(name) => {
                tracing::warn!(channel = %name, key = %s.key, "skipped key: {}", s.reason)
            }
            None => tracing::warn!(key = %s.key, "skipped key: {}", s.reason),
        }
    }
    Ok(HostChannel {
        client: channel.client,
        plan: channel.plan,
        records: channel.records,
        distribution: request.distribution,
        hosts: request.hosts,
    })
}

impl HostChannel {
    /// This host's shard when the channel is sharded (`ShardedByS3Key`).
    pub fn shard(&self) -> Option<Shard> {
        match self.distribution {
            Distribution::ShardedByS3Key => Some(self.hosts.shard()),
            Distribution::FullyReplicated => None,
        }
    }

    /// The client and the objects this host gets: the whole plan, or its shard.
    pub fn into_host_plan(self) -> (Client, Plan) {
        let plan = crate::distribute(self.plan, self.distribution, &self.hosts);
        (self.client, plan)
    }
}
