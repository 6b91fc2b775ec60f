//! Which objects each host of a multi-host job gets, and how a host learns its place
//! among the others.
//!
//! The sharding rule (`ShardedByS3Key`) is chute's own, stated so that users can
//! predict it: sort the channel's objects by key, bytewise (ties keep their original
//! order); the object at sorted position `i` belongs to shard `i mod N`; host `k`
//! (its position in the host list) gets shard `k`. Every object belongs to exactly
//! one shard and shard sizes differ by at most one. The rule only decides
//! membership: a host still sees its objects in plan order.
//!
//! The host list comes from the first source found, in this order: command-line
//! flags, `resourceconfig.json`, `SM_CURRENT_HOST` + `SM_HOSTS`,
//! `JOB_COMPLETION_INDEX` + `CHUTE_SHARD_COUNT` (Kubernetes Indexed Job),
//! `SLURM_NODEID` + `SLURM_NNODES`, else a single host. A source that is only half
//! present is an error rather than a silent fall-through: a host that wrongly
//! believes it is alone would read every object, and another host's shard twice.
//!
//! A job has at most [`MAX_HOSTS`] hosts, whatever the source says: counts come
//! from flags and environment variables, and a typo there must be an error, not
//! an attempt to name 10^12 hosts. Generated names (`host-<i>`) are built when
//! asked for ([`HostNames`]), never all at once up front.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most hosts (and so shards) a job may have. Far above any real cluster,
/// low enough that a per-host list or loop is never a hazard.
pub const MAX_HOSTS: usize = 65_536;

/// `S3DataDistributionType`: whether every host gets all objects or a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Distribution {
    /// Every host gets every object (the API default).
    #[default]
    FullyReplicated,
    /// Each host gets one shard, by the rule in this module's doc.
    ShardedByS3Key,
}

impl Distribution {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::FullyReplicated => "FullyReplicated",
            Distribution::ShardedByS3Key => "ShardedByS3Key",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `S3DataDistributionType` value that is not one of the API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown S3DataDistributionType '{value}': valid values are FullyReplicated \
     and ShardedByS3Key (case-sensitive)"
)]
pub struct DistributionError {
    /// The value given.
    pub value: String,
}

impl FromStr for Distribution {
    type Err = DistributionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "FullyReplicated" => Ok(Distribution::FullyReplicated),
            "ShardedByS3Key" => Ok(Distribution::ShardedByS3Key),
            _ => Err(DistributionError {
                value: s.to_owned(),
            }),
        }
    }
}

/// One shard out of `count`: the part of a channel one host reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This shard's number, `0..count`.
    pub index: usize,
    /// How many shards there are, at least 1.
    pub count: usize,
}

/// An impossible shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Zero shards.
    #[error("shard count must be at least 1, got 0")]
    ZeroCount,
    /// The index is not below the count.
    #[error(
        "shard index {index} is out of range for {count} shard(s): \
         the index must be between 0 and {}", count.saturating_sub(1)
    )]
    IndexOutOfRange {
        /// The index given.
        index: usize,
        /// The count given.
        count: usize,
    },
    /// More shards than [`MAX_HOSTS`].
    #[error("shard count {count} is too large: at most {MAX_HOSTS} shards (hosts) are supported")]
    TooMany {
        /// The count given.
        count: usize,
    },
}

impl Shard {
    /// Checks `1 <= count <= MAX_HOSTS` and `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::ZeroCount);
        }
        if count > MAX_HOSTS {
            return Err(ShardError::TooMany { count });
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The only shard of a single-host job: everything.
    pub fn single() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} of {}", self.index, self.count)
    }
}

/// The positions in `keys` of the objects that belong to `shard`, in ascending
/// (original) order. See the module doc for the rule.
///
/// The fields of [`Shard`] are public, so an unchecked value can arrive here: a
/// count of 0 is treated as 1 and an out-of-range index gets nothing, rather than
/// panicking.
pub fn shard_indices(keys: &[&str], shard: &Shard) -> Vec<usize> {
    let count = shard.count.max(1);
    if shard.index >= count {
        return Vec::new();
    }
    if count == 1 {
        return (0..keys.len()).collect();
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // `sort_by` is stable, which gives "ties by original position"; `str`
    // comparison is bytewise.
    order.sort_by(|&a, &b| keys[a].cmp(keys[b]));
    let mut mine: Vec<usize> = order.into_iter().skip(shard.index).step_by(count).collect();
    mine.sort_unstable();
    mine
}

/// Where the host list was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostSource {
    /// `--shard-index` / `--shard-count`.
    Flags,
    /// `resourceconfig.json`.
    ResourceConfig,
    /// `SM_CURRENT_HOST` + `SM_HOSTS`.
    SageMakerEnv,
    /// `JOB_COMPLETION_INDEX` + `CHUTE_SHARD_COUNT`.
    KubernetesIndexedJob,
    /// `SLURM_NODEID` + `SLURM_NNODES`.
    Slurm,
    /// Nothing found: one host.
    Single,
}

impl fmt::Display for HostSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostSource::Flags => "--shard-index/--shard-count",
            HostSource::ResourceConfig => "resourceconfig.json",
            HostSource::SageMakerEnv => "SM_CURRENT_HOST/SM_HOSTS",
            HostSource::KubernetesIndexedJob => "JOB_COMPLETION_INDEX/CHUTE_SHARD_COUNT",
            HostSource::Slurm => "SLURM_NODEID/SLURM_NNODES",
            HostSource::Single => "single host (no host list found)",
        })
    }
}

/// The hosts of the job and which one this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosts {
    /// All hosts, in shard order (host `k` gets shard `k`).
    pub hosts: Vec<String>,
    /// This host's name.
    pub current: String,
    /// This host's position in `hosts`.
    pub index: usize,
    /// Where this came from.
    pub source: HostSource,
}

impl Hosts {
    /// This host's shard.
    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            count: self.hosts.len().max(1),
        }
    }
}

/// The names of a job's hosts, in shard order (host `k` gets shard `k`).
///
/// Generated names are made when asked for, so a job of many hosts costs no
/// memory per host; a listed job holds the names it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNames {
    /// Names the platform gave (`resourceconfig.json`, `SM_HOSTS`, or the single
    /// host), sorted bytewise.
    Listed(Vec<String>),
    /// `count` generated names, `host-<i>` zero-padded to a common width (see
    /// [`indexed_host_name`]); their bytewise order is their index order.
    Indexed {
        /// How many hosts, `1..=MAX_HOSTS`.
        count: usize,
    },
}

impl HostNames {
    /// How many hosts.
    pub fn len(&self) -> usize {
        match self {
            HostNames::Listed(names) => names.len(),
            HostNames::Indexed { count } => *count,
        }
    }

    /// Whether there is no host (never the case for a discovered list).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of host `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Cow<'_, str>> {
        match self {
            HostNames::Listed(names) => names.get(i).map(|n| Cow::Borrowed(n.as_str())),
            HostNames::Indexed { count } => {
                (i < *count).then(|| Cow::Owned(indexed_host_name(i, *count)))
            }
        }
    }

    /// Every name, in shard order, each built as the iterator reaches it.
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, str>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Bytes of the compact JSON list (`["a","b"]`, as `SM_HOSTS` carries it),
    /// computed without building the list: a caller can check a size limit
    /// (one environment string holds at most 128 KiB on Linux) first.
    pub fn json_len(&self) -> usize {
        let names: usize = self.iter().map(|n| json_string_len(&n)).sum();
        // Brackets, and a comma between names.
        2 + names + self.len().saturating_sub(1)
    }

    /// The compact JSON list of the names, as `SM_HOSTS` carries it.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.json_len());
        out.push('[');
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Serialising a string to a String cannot fail.
            out.push_str(&serde_json::to_string(name.as_ref()).unwrap_or_default());
        }
        out.push(']');
        out
    }

    /// Every name, built: at most [`MAX_HOSTS`] strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(Cow::into_owned).collect()
    }
}

/// Bytes `name` takes as a JSON string, quotes included.
fn json_string_len(name: &str) -> usize {
    serde_json::to_string(name).map_or(0, |s| s.len())
}

impl Serialize for HostNames {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The hosts of the job and which one this is, with names built on demand
/// (see [`HostNames`]). [`Hosts`] is the same with every name built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobHosts {
    /// All hosts, in shard order.
    pub names: HostNames,
    /// This host's name.
    pub current: String,
    /// This host's position in `names`.
    pub index: usize,
    /// Where this came from.
    pub source: HostSource,
}

impl JobHosts {
    /// This host's shard.
    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            count: self.names.len().max(1),
        }
    }

    /// How many hosts.
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// The same hosts with every name built (at most [`MAX_HOSTS`]).
    pub fn into_hosts(self) -> Hosts {
        let hosts = match self.names {
            HostNames::Listed(names) => names,
            indexed @ HostNames::Indexed { .. } => indexed.to_vec(),
        };
        Hosts {
            hosts,
            current: self.current,
            index: self.index,
            source: self.source,
        }
    }
}

impl From<&Hosts> for Shard {
    fn from(h: &Hosts) -> Shard {
        h.shard()
    }
}

impl From<&JobHosts> for Shard {
    fn from(h: &JobHosts) -> Shard {
        h.shard()
    }
}

impl From<Hosts> for JobHosts {
    fn from(h: Hosts) -> JobHosts {
        JobHosts {
            names: HostNames::Listed(h.hosts),
            current: h.current,
            index: h.index,
            source: h.source,
        }
    }
}

/// The host list could not be determined. Each message names the variable or file
/// at fault and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// `--shard-index` / `--shard-count` out of range.
    #[error("--shard-index/--shard-count: {0}")]
    Flags(ShardError),
    /// `resourceconfig.json` is not what SageMaker writes.
    #[error(
        "resourceconfig.json is invalid: {reason}; expected \
         {{\"current_host\": \"algo-1\", \"hosts\": [\"algo-1\", \"algo-2\"]}}"
    )]
    ResourceConfig {
        /// What is wrong.
        reason: String,
    },
    /// A host list longer than [`MAX_HOSTS`].
    #[error("{source_name}: {count} hosts listed, but at most {MAX_HOSTS} hosts are supported")]
    TooManyHosts {
        /// The file or variables the list came from.
        source_name: &'static str,
        /// How many hosts were listed.
        count: usize,
    },
    /// A list of hosts is empty, repeats a name, or lacks the current host.
    #[error("{source_name}: {reason}")]
    BadHostList {
        /// The file or variables the list came from.
        source_name: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// One variable of a pair is set without its partner.
    #[error("{set} is set but {missing} is not: {hint}")]
    HalfSet {
        /// The variable that is set.
        set: &'static str,
        /// Its missing partner.
        missing: &'static str,
        /// How to fix it.
        hint: &'static str,
    },
    /// A variable's value cannot be parsed.
    #[error("{var}='{value}' is invalid: {expected}")]
    BadValue {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// An index/count pair from the environment is out of range.
    #[error("{index_var}={index} and {count_var}={count}: {problem}")]
    BadIndex {
        /// Name of the index variable.
        index_var: &'static str,
        /// Its value.
        index: usize,
        /// Name of the count variable.
        count_var: &'static str,
        /// Its value.
        count: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Name of the single host when no host list is found, as SageMaker names its
/// first host.
pub const SINGLE_HOST: &str = "algo-1";

const SM_HINT: &str = "set both (SM_HOSTS as a JSON list such as [\"algo-1\",\"algo-2\"], \
                       SM_CURRENT_HOST as one of them) or neither";
const K8S_HINT: &str = "in a Kubernetes Indexed Job set CHUTE_SHARD_COUNT to the Job's \
                        completions (or pass --shard-index/--shard-count)";
const K8S_INDEX_HINT: &str = "JOB_COMPLETION_INDEX is set by Kubernetes in Indexed Jobs; \
                              outside one, unset CHUTE_SHARD_COUNT or pass \
                              --shard-index/--shard-count";
const SLURM_HINT: &str = "run under srun (which sets both) or pass --shard-index/--shard-count";

/// Finds the host list and this host's place in it, with every host name built.
///
/// Same as [`discover_job_hosts`] followed by [`JobHosts::into_hosts`]: at most
/// [`MAX_HOSTS`] names. Prefer [`discover_job_hosts`], which builds generated
/// names only when they are asked for.
pub fn discover_hosts(
    flags: Option<(usize, usize)>,
    resource_config_json: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Hosts, HostError> {
    discover_job_hosts(flags, resource_config_json, env).map(JobHosts::into_hosts)
}

/// Finds the host list and this host's place in it. See the module doc for the
/// order of sources.
///
/// `flags` is `(index, count)`; `resource_config_json` the content of
/// `resourceconfig.json` when that file exists; `env` looks up environment
/// variables (an empty value counts as unset, since container runtimes often
/// define variables empty).
///
/// Hosts from a list (`resourceconfig.json`, `SM_HOSTS`) are sorted bytewise, so
/// every host derives the same order whatever order its copy of the list is in.
/// Hosts from an index and a count are named `host-<i>`, zero-padded to a common
/// width (`host-00` .. `host-10` for 11 hosts) so that the bytewise order of the
/// names is their index order: a list written out for a child process
/// (`SM_HOSTS`, `resourceconfig.json`) then gives the child the same index.
/// Either way there are at most [`MAX_HOSTS`] hosts.
pub fn discover_job_hosts(
    flags: Option<(usize, usize)>,
    resource_config_json: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JobHosts, HostError> {
    if let Some((index, count)) = flags {
        let shard = Shard::new(index, count).map_err(HostError::Flags)?;
        return Ok(indexed_hosts(shard, HostSource::Flags));
    }

    if let Some(json) = resource_config_json {
        return from_resource_config(json);
    }

    let var = |name: &str| env(name).filter(|v| !v.is_empty());

    match (var("SM_CURRENT_HOST"), var("SM_HOSTS")) {
        (Some(current), Some(hosts)) => return from_sm_env(current, &hosts),
        (Some(_), None) => return Err(half_set("SM_CURRENT_HOST", "SM_HOSTS", SM_HINT)),
        (None, Some(_)) => return Err(half_set("SM_HOSTS", "SM_CURRENT_HOST", SM_HINT)),
        (None, None) => {}
    }

    let pairs = [
        (
            "JOB_COMPLETION_INDEX",
            "CHUTE_SHARD_COUNT",
            HostSource::KubernetesIndexedJob,
            K8S_HINT,
            K8S_INDEX_HINT,
        ),
        (
            "SLURM_NODEID",
            "SLURM_NNODES",
            HostSource::Slurm,
            SLURM_HINT,
            SLURM_HINT,
        ),
    ];
    for (index_var, count_var, source, missing_count_hint, missing_index_hint) in pairs {
        match (var(index_var), var(count_var)) {
            (Some(index), Some(count)) => {
                let index = parse_int(index_var, &index)?;
                let count = parse_int(count_var, &count)?;
                let shard = Shard::new(index, count).map_err(|e| HostError::BadIndex {
                    index_var,
                    index,
                    count_var,
                    count,
                    problem: e.to_string(),
                })?;
                return Ok(indexed_hosts(shard, source));
            }
            (Some(_), None) => return Err(half_set(index_var, count_var, missing_count_hint)),
            (None, Some(_)) => return Err(half_set(count_var, index_var, missing_index_hint)),
            (None, None) => {}
        }
    }

    Ok(JobHosts {
        names: HostNames::Listed(vec![SINGLE_HOST.to_owned()]),
        current: SINGLE_HOST.to_owned(),
        index: 0,
        source: HostSource::Single,
    })
}

/// The name of host `index` among `count` hosts identified only by number.
pub fn indexed_host_name(index: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len();
    format!("host-{index:0width$}")
}

fn indexed_hosts(shard: Shard, source: HostSource) -> JobHosts {
    JobHosts {
        names: HostNames::Indexed { count: shard.count },
        current: indexed_host_name(shard.index, shard.count),
        index: shard.index,
        source,
    }
}

fn half_set(set: &'static str, missing: &'static str, hint: &'static str) -> HostError {
    HostError::HalfSet { set, missing, hint }
}

fn parse_int(var: &'static str, value: &str) -> Result<usize, HostError> {
    value.trim().parse().map_err(|_| HostError::BadValue {
        var,
        value: value.to_owned(),
        expected: "expected a non-negative integer",
    })
}

#[derive(Deserialize)]
struct ResourceConfig {
    current_host: String,
    hosts: Vec<String>,
}

fn from_resource_config(json: &str) -> Result<JobHosts, HostError> {
    let config: ResourceConfig =
        serde_json::from_str(json).map_err(|e| HostError::ResourceConfig {
            reason: e.to_string(),
        })?;
    host_list(
        "resourceconfig.json",
        config.current_host,
        config.hosts,
        HostSource::ResourceConfig,
    )
}

fn from_sm_env(current: String, hosts_json: &str) -> Result<JobHosts, HostError> {
    let hosts: Vec<String> = serde_json::from_str(hosts_json).map_err(|_| HostError::BadValue {
        var: "SM_HOSTS",
        value: hosts_json.to_owned(),
        expected: "expected a JSON list of host names such as [\"algo-1\",\"algo-2\"]",
    })?;
    host_list(
        "SM_CURRENT_HOST/SM_HOSTS",
        current,
        hosts,
        HostSource::SageMakerEnv,
    )
}

fn host_list(
    source_name: &'static str,
    current: String,
    mut hosts: Vec<String>,
    source: HostSource,
) -> Result<JobHosts, HostError> {
    let bad = |reason: String| HostError::BadHostList {
        source_name,
        reason,
    };
    if hosts.is_empty() {
        return Err(bad(
            "the host list is empty; list every host of the job".to_owned()
        ));
    }
    if hosts.len() > MAX_HOSTS {
        return Err(HostError::TooManyHosts {
            source_name,
            count: hosts.len(),
        });
    }
    let mut seen = HashSet::new();
    if let Some(dup) = hosts.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(bad(format!(
            "host '{dup}' is listed twice; each host must appear once"
        )));
    }
    hosts.sort();
    let Some(index) = hosts.iter().position(|h| *h == current) else {
        return Err(bad(format!(
            "the current host '{current}' is not in the host list {}; \
             the current host must be one of the hosts",
            brief_list(&hosts)
        )));
    };
    Ok(JobHosts {
        names: HostNames::Listed(hosts),
        current,
        index,
        source,
    })
}

/// A list for an error message: whole when short, else its first names and
/// its length, so a long list cannot flood a terminal or a log.
fn brief_list(hosts: &[String]) -> String {
    const SHOWN: usize = 8;
    if hosts.len() <= SHOWN {
        return format!("{hosts:?}");
    }
    let head: Vec<&String> = hosts.iter().take(SHOWN).collect();
    let open = format!("{head:?}");
    format!(
        "{}, ... ({} hosts)]",
        open.trim_end_matches(']'),
        hosts.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn keys(n: usize) -> Vec<String> {
        // A cheap deterministic mix of shared prefixes, varying depths and
        // repeated keys (ties), in an order that is not sorted.
        let mut state: u64 = 0x1234_5678;
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = state >> 33;
                match r % 5 {
                    0 => format!("train/{:04}.bin", r % 997),
                    1 => format!("train/sub/{}", r % 1000),
                    2 => format!("val/x{}", r % 50),
                    3 => format!("z{i}"),
                    _ => format!("a/{}/{}", r % 7, r),
                }
            })
            .collect()
    }

    #[test]
    fn distribution_parses_api_strings_only() {
        assert_eq!(
            "FullyReplicated".parse::<Distribution>().unwrap(),
            Distribution::FullyReplicated
        );
        assert_eq!(
            "ShardedByS3Key".parse::<Distribution>().unwrap(),
            Distribution::ShardedByS3Key
        );
        assert_eq!(Distribution::default(), Distribution::FullyReplicated);
        assert_eq!(Distribution::ShardedByS3Key.to_string(), "ShardedByS3Key");
        let err = "shardedbys3key"
            .parse::<Distribution>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'shardedbys3key'")
                && err.contains("FullyReplicated")
                && err.contains("ShardedByS3Key"),
            "{err}"
        );
    }

    #[test]
    fn shard_constructor_validates() {
        assert_eq!(Shard::new(0, 1), Ok(Shard::single()));
        assert_eq!(Shard::new(2, 3).unwrap().to_string(), "shard 2 of 3");
        assert_eq!(Shard::new(0, 0), Err(ShardError::ZeroCount));
        let err = Shard::new(3, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shard index 3 is out of range for 3 shard(s): the index must be between 0 and 2"
        );
    }

    #[test]
    fn shards_partition_the_list() {
        let owned = keys(1000);
        let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
        for count in 1..=8 {
            let mut owner = vec![usize::MAX; keys.len()];
            let mut sizes = Vec::new();
            for index in 0..count {
                let mine = shard_indices(&keys, &Shard::new(index, count).unwrap());
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "original order kept");
                for &i in &mine {
                    assert_eq!(owner[i], usize::MAX, "object {i} in two shards");
                    owner[i] = index;
                }
                sizes.push(mine.len());
            }
            assert!(owner.iter().all(|&o| o != usize::MAX), "every object owned");
            let (min, max) = (
                sizes.iter().min().copied().unwrap(),
                sizes.iter().max().copied().unwrap(),
            );
            assert!(max - min <= 1, "sizes {sizes:?}");
            assert_eq!(sizes.iter().sum::<usize>(), keys.len());
        }
    }

    #[test]
    fn shard_rule_is_sorted_position_mod_n() {
        let keys = ["d", "b", "a", "c", "b"];
        // Sorted: a(2) b(1) b(4) c(3) d(0); positions 0..5 -> shards 0 1 0 1 0 for N=2.
        assert_eq!(
            shard_indices(&keys, &Shard::new(0, 2).unwrap()),
            vec![0, 2, 4]
        );
        assert_eq!(shard_indices(&keys, &Shard::new(1, 2).unwrap()), vec![1, 3]);
        // Ties are broken by original position: swapping the two "b"s' roles.
        let keys = ["b", "b"];
        assert_eq!(shard_indices(&keys, &Shard::new(0, 2).unwrap()), vec![0]);
        assert_eq!(shard_indices(&keys, &Shard::new(1, 2).unwrap()), vec![1]);
        // More shards than objects: some shards are empty.
        assert_eq!(
            shard_indices(&["x"], &Shard::new(1, 3).unwrap()),
            Vec::<usize>::new()
        );
        // Unchecked shards do not panic.
        let bogus = Shard { index: 0, count: 0 };
        assert_eq!(shard_indices(&keys, &bogus), vec![0, 1]);
        let bogus = Shard { index: 5, count: 2 };
        assert!(shard_indices(&keys, &bogus).is_empty());
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn discover(
        flags: Option<(usize, usize)>,
        rc: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Hosts, HostError> {
        discover_hosts(flags, rc, &env_of(env))
    }

    #[test]
    fn flags_win() {
        let h = discover(
            Some((1, 3)),
            Some(r#"{"current_host":"algo-1","hosts":["algo-1"]}"#),
            &[("SM_CURRENT_HOST", "algo-1")],
        )
        .unwrap();
        assert_eq!(h.source, HostSource::Flags);
        assert_eq!(h.hosts, ["host-0", "host-1", "host-2"]);
        assert_eq!(h.current, "host-1");
        assert_eq!(h.index, 1);
        assert_eq!(h.shard(), Shard::new(1, 3).unwrap());

        let err = discover(Some((3, 3)), None, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("--shard-index/--shard-count: shard index 3"),
            "{err}"
        );
        assert!(discover(Some((0, 0)), None, &[]).is_err());
    }

    #[test]
    fn indexed_names_sort_in_index_order() {
        let h = discover(Some((2, 11)), None, &[]).unwrap();
        assert_eq!(h.hosts[0], "host-00");
        assert_eq!(h.hosts[10], "host-10");
        assert_eq!(h.current, "host-02");
        let mut sorted = h.hosts.clone();
        sorted.sort();
        assert_eq!(sorted, h.hosts);
        // Re-discovering from the list written out gives the same index.
        let json = serde_json::to_string(&h.hosts).unwrap();
        let again = discover(
            None,
            None,
            &[("SM_CURRENT_HOST", &h.current), ("SM_HOSTS", &json)],
        )
        .unwrap();
        assert_eq!(again.index, 2);
        assert_eq!(indexed_host_name(7, 8), "host-7");
        assert_eq!(indexed_host_name(0, 1), "host-0");
        assert_eq!(indexed_host_name(5, 101), "host-005");
    }

    #[test]
    fn resource_config() {
        let rc = r#"{"current_host": "algo-2", "hosts": ["algo-3", "algo-1", "algo-2"],
                    "network_interface_name": "eth0"}"#;
        let h = discover(None, Some(rc), &[("SM_CURRENT_HOST", "algo-1")]).unwrap();
        assert_eq!(h.source, HostSource::ResourceConfig);
        assert_eq!(h.hosts, ["algo-1", "algo-2", "algo-3"]);
        assert_eq!(h.index, 1);
        assert_eq!(h.current, "algo-2");

        let err = discover(
            None,
            Some(r#"{"current_host": "algo-9", "hosts": ["algo-1"]}"#),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "resourceconfig.json: the current host 'algo-9' is not in the host list"
            ),
            "{err}"
        );

        let err = discover(None, Some(r#"{"hosts": ["algo-1"]}"#), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resourceconfig.json is invalid") && err.contains("current_host"),
            "{err}"
        );
        let err = discover(None, Some("not json"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("resourceconfig.json is invalid"), "{err}");
        let err = discover(None, Some(r#"{"current_host":"a","hosts":[]}"#), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let err = discover(None, Some(r#"{"current_host":"a","hosts":["a","a"]}"#), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'a' is listed twice"), "{err}");
    }

    #[test]
    fn sagemaker_env() {
        let h = discover(
            None,
            None,
            &[
                ("SM_CURRENT_HOST", "algo-1"),
                ("SM_HOSTS", r#"["algo-2","algo-1"]"#),
                ("JOB_COMPLETION_INDEX", "1"),
                ("CHUTE_SHARD_COUNT", "2"),
            ],
        )
        .unwrap();
        assert_eq!(h.source, HostSource::SageMakerEnv);
        assert_eq!(h.hosts, ["algo-1", "algo-2"]);
        assert_eq!(h.index, 0);

        let err = discover(None, None, &[("SM_CURRENT_HOST", "algo-1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SM_CURRENT_HOST is set but SM_HOSTS is not")
                && err.contains("JSON list"),
            "{err}"
        );
        let err = discover(None, None, &[("SM_HOSTS", r#"["algo-1"]"#)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SM_HOSTS is set but SM_CURRENT_HOST is not"),
            "{err}"
        );
        let err = discover(
            None,
            None,
            &[("SM_CURRENT_HOST", "algo-1"), ("SM_HOSTS", "algo-1,algo-2")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("SM_HOSTS='algo-1,algo-2' is invalid") && err.contains("JSON list"),
            "{err}"
        );
        let err = discover(
            None,
            None,
            &[("SM_CURRENT_HOST", "algo-3"), ("SM_HOSTS", r#"["algo-1"]"#)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'algo-3' is not in the host list"), "{err}");
        // Empty values count as unset.
        let h = discover(None, None, &[("SM_CURRENT_HOST", ""), ("SM_HOSTS", "")]).unwrap();
        assert_eq!(h.source, HostSource::Single);
    }

    #[test]
    fn kubernetes_indexed_job() {
        let h = discover(
            None,
            None,
            &[
                ("JOB_COMPLETION_INDEX", "2"),
                ("CHUTE_SHARD_COUNT", "4"),
                ("SLURM_NODEID", "0"),
                ("SLURM_NNODES", "1"),
            ],
        )
        .unwrap();
        assert_eq!(h.source, HostSource::KubernetesIndexedJob);
        assert_eq!(h.shard(), Shard::new(2, 4).unwrap());
        assert_eq!(h.current, "host-2");

        let err = discover(None, None, &[("JOB_COMPLETION_INDEX", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("JOB_COMPLETION_INDEX is set but CHUTE_SHARD_COUNT is not")
                && err.contains("completions"),
            "{err}"
        );
        let err = discover(None, None, &[("CHUTE_SHARD_COUNT", "4")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CHUTE_SHARD_COUNT is set but JOB_COMPLETION_INDEX is not"),
            "{err}"
        );
        let err = discover(
            None,
            None,
            &[("JOB_COMPLETION_INDEX", "4"), ("CHUTE_SHARD_COUNT", "4")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "JOB_COMPLETION_INDEX=4 and CHUTE_SHARD_COUNT=4: shard index 4 is out of range"
            ),
            "{err}"
        );
        let err = discover(
            None,
            None,
            &[("JOB_COMPLETION_INDEX", "one"), ("CHUTE_SHARD_COUNT", "4")],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "JOB_COMPLETION_INDEX='one' is invalid: expected a non-negative integer"
        );
        let err = discover(
            None,
            None,
            &[("JOB_COMPLETION_INDEX", "0"), ("CHUTE_SHARD_COUNT", "0")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn slurm() {
        let h = discover(
            None,
            None,
            &[("SLURM_NODEID", "3"), ("SLURM_NNODES", " 4\n")],
        )
        .unwrap();
        assert_eq!(h.source, HostSource::Slurm);
        assert_eq!(h.index, 3);
        assert_eq!(h.hosts.len(), 4);
        let err = discover(None, None, &[("SLURM_NODEID", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SLURM_NODEID is set but SLURM_NNODES is not") && err.contains("srun"),
            "{err}"
        );
        let err = discover(None, None, &[("SLURM_NNODES", "2")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SLURM_NNODES is set but SLURM_NODEID is not"),
            "{err}"
        );
        let err = discover(None, None, &[("SLURM_NODEID", "-1"), ("SLURM_NNODES", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SLURM_NODEID='-1' is invalid"), "{err}");
    }

    #[test]
    fn counts_are_capped_with_the_limit_named() {
        for count in [usize::MAX, 1_000_000_000_000, MAX_HOSTS + 1] {
            let err = discover(Some((0, count)), None, &[])
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "--shard-index/--shard-count: shard count {count} is too large: \
                     at most 65536 shards (hosts) are supported"
                )
            );
        }
        let err = discover(
            None,
            None,
            &[
                ("JOB_COMPLETION_INDEX", "0"),
                ("CHUTE_SHARD_COUNT", "18446744073709551615"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("JOB_COMPLETION_INDEX=0 and CHUTE_SHARD_COUNT=18446744073709551615:")
                && err.contains("at most 65536"),
            "{err}"
        );
        let err = discover(
            None,
            None,
            &[("SLURM_NODEID", "7"), ("SLURM_NNODES", "1000000000000")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("SLURM_NODEID=7 and SLURM_NNODES=1000000000000:")
                && err.contains("at most 65536"),
            "{err}"
        );
        assert!(Shard::new(MAX_HOSTS - 1, MAX_HOSTS).is_ok());
    }

    #[test]
    fn generated_names_are_built_on_demand() {
        let h = discover_job_hosts(Some((65_535, MAX_HOSTS)), None, &|_| None).unwrap();
        assert_eq!(h.names, HostNames::Indexed { count: MAX_HOSTS });
        assert_eq!(h.count(), MAX_HOSTS);
        assert_eq!(h.current, "host-65535");
        assert_eq!(h.shard(), Shard::new(65_535, MAX_HOSTS).unwrap());
        assert_eq!(h.names.get(0).as_deref(), Some("host-00000"));
        assert_eq!(h.names.get(MAX_HOSTS), None);
        let mut it = h.names.iter().skip(9);
        assert_eq!(it.next().as_deref(), Some("host-00009"));

        let small = discover_job_hosts(Some((1, 3)), None, &|_| None).unwrap();
        assert_eq!(small.names.to_vec(), ["host-0", "host-1", "host-2"]);
        assert_eq!(small.names.to_json(), r#"["host-0","host-1","host-2"]"#);
        assert_eq!(
            serde_json::to_string(&small.names).unwrap(),
            small.names.to_json()
        );
        assert_eq!(small.names.json_len(), small.names.to_json().len());
        let hosts = small.clone().into_hosts();
        assert_eq!(hosts, discover(Some((1, 3)), None, &[]).unwrap());
        assert_eq!(JobHosts::from(hosts).names.to_vec(), small.names.to_vec());

        let listed = HostNames::Listed(vec!["a\"b".into(), "é".into()]);
        assert_eq!(listed.json_len(), listed.to_json().len());
        assert_eq!(
            listed.to_json(),
            serde_json::to_string(&listed.to_vec()).unwrap()
        );
        assert_eq!(HostNames::Listed(vec![]).to_json(), "[]");
        assert_eq!(HostNames::Listed(vec![]).json_len(), 2);
    }

    #[test]
    fn host_lists_are_capped() {
        let many: Vec<String> = (0..=MAX_HOSTS).map(|i| format!("h{i}")).collect();
        let json = serde_json::to_string(&many).unwrap();
        let err = discover(
            None,
            None,
            &[("SM_CURRENT_HOST", "h0"), ("SM_HOSTS", &json)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "SM_CURRENT_HOST/SM_HOSTS: 65537 hosts listed, but at most 65536 hosts are supported"
        );
        let rc = format!(r#"{{"current_host":"h0","hosts":{json}}}"#);
        let err = discover(None, Some(&rc), &[]).unwrap_err().to_string();
        assert!(err.contains("at most 65536 hosts"), "{err}");

        // A long list is shortened in messages.
        let some: Vec<String> = (0..100).map(|i| format!("h{i}")).collect();
        let json = serde_json::to_string(&some).unwrap();
        let err = discover(None, None, &[("SM_CURRENT_HOST", "x"), ("SM_HOSTS", &json)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"h0\", \"h1\""), "{err}");
        assert!(err.contains(", ... (100 hosts)]"), "{err}");
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn single_host_fallback() {
        let h = discover(None, None, &[("HOSTNAME", "x")]).unwrap();
        assert_eq!(
            h,
            Hosts {
                hosts: vec!["algo-1".into()],
                current: "algo-1".into(),
                index: 0,
                source: HostSource::Single,
            }
        );
        assert_eq!(h.shard(), Shard::single());
    }
}
