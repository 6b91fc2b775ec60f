//! The channels of a job: the `InputDataConfig` list of CreateTrainingJob (and the
//! `--channel` shorthand), parsed and checked completely before any data moves.
//!
//! The JSON is walked by hand rather than through serde derives so that every
//! complaint can name the channel and the field at fault (`channel 'train':
//! DataSource.S3DataSource.S3Uri: ...`) and say how to fix it. Unknown fields are
//! errors, as they are for the API: a misspelt `InputMod` silently falling back to
//! the default mode would deliver the data in a way the script does not expect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chute_channel::ChannelSource;
pub use chute_channel::{check_channel_name, MAX_CHANNEL_NAME};
use chute_plan::{Distribution, S3Url, SourceUri};
use serde_json::{Map, Value};

use crate::request::JobFlags;

/// The API's limit on channels per job.
pub const MAX_CHANNELS: usize = 20;

/// How a channel is delivered (`InputMode` / `TrainingInputMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputMode {
    /// Downloaded in full before the command starts.
    File,
    /// A read-only FUSE mount, streamed on demand.
    FastFile,
    /// One FIFO per epoch.
    Pipe,
}

impl InputMode {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InputMode::File => "File",
            InputMode::FastFile => "FastFile",
            InputMode::Pipe => "Pipe",
        }
    }

    /// Parses the API spelling (case-sensitive, as the API is).
    pub fn parse(s: &str) -> Option<InputMode> {
        match s {
            "File" => Some(InputMode::File),
            "FastFile" => Some(InputMode::FastFile),
            "Pipe" => Some(InputMode::Pipe),
            _ => None,
        }
    }
}

impl fmt::Display for InputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RecordWrapperType`: Pipe mode's own.
pub use chute_pipe::RecordWrapper;

/// `CompressionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Objects as they are.
    #[default]
    None,
    /// Objects are gzip files, decompressed on the way (Pipe mode).
    Gzip,
}

/// `S3DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3DataType {
    /// Every object under the prefix.
    #[default]
    S3Prefix,
    /// The objects a manifest file names.
    ManifestFile,
    /// The records of an augmented manifest (JSON lines).
    AugmentedManifestFile,
}

/// Where a channel's data is.
#[derive(Debug, Clone)]
pub enum ChannelData {
    /// `DataSource.S3DataSource` (or a `file://` directory given with `--channel`).
    S3 {
        /// `S3Uri` as written.
        uri: String,
        /// `S3DataType`.
        data_type: S3DataType,
        /// `S3DataDistributionType`.
        distribution: Distribution,
        /// What to list or read.
        source: ChannelSource,
    },
    /// `DataSource.FileSystemDataSource`: a directory that is already mounted.
    FileSystem {
        /// `DirectoryPath`.
        directory: PathBuf,
        /// `FileSystemAccessMode` is `ro`.
        read_only: bool,
    },
}

/// One validated channel.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    /// `ChannelName`.
    pub name: String,
    /// `DataSource`.
    pub data: ChannelData,
    /// `InputMode`, or the job's default.
    pub mode: InputMode,
    /// `RecordWrapperType`.
    pub record_wrapper: RecordWrapper,
    /// `CompressionType`.
    pub compression: Compression,
    /// `ShuffleConfig.Seed`.
    pub shuffle_seed: Option<u64>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `RoleArn` and `SessionTags`: this channel's own credentials.
    pub access: crate::access::ChannelAccess,
}

impl ChannelSpec {
    /// The distribution the container-side config reports: file-system channels
    /// are the same directory on every host.
    pub fn distribution(&self) -> Distribution {
        match &self.data {
            ChannelData::S3 { distribution, .. } => *distribution,
            ChannelData::FileSystem { .. } => Distribution::FullyReplicated,
        }
    }
}

/// A configuration chute refuses, naming the file, channel and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read --input-config {path}: {source}; check the path and its permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not JSON.
    #[error("--input-config {path} is not valid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message, with line and column.
        message: String,
    },
    /// The JSON is not a list of channels.
    #[error("{origin}: {problem}")]
    Shape {
        /// The file or flag.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// One field of one channel is wrong.
    #[error("{channel}: {field}: {problem}")]
    Field {
        /// `channel 'train'`, or `channel #3` when it has no usable name.
        channel: String,
        /// The field path, e.g. `DataSource.S3DataSource.S3Uri`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A `--channel` value cannot be parsed.
    #[error("--channel '{arg}': {problem}")]
    Flag {
        /// The value as given.
        arg: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Two channels clash.
    #[error("{0}")]
    Conflict(String),
    /// `--input-mode` is not a mode.
    #[error("--input-mode '{0}' is not an input mode: use File, FastFile or Pipe")]
    DefaultMode(String),
    /// A field of the request outside `InputDataConfig` is wrong.
    #[error("{origin}: {field}: {problem}")]
    Request {
        /// `--input-config FILE`.
        origin: String,
        /// The field path, e.g. `OutputDataConfig.S3OutputPath`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A job flag (`--job-name`, `--hp`, `--output-path`, ...) is wrong.
    #[error("{flag}: {problem}")]
    JobFlag {
        /// The flag, with its value when that helps.
        flag: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Where a channel's definition came from; decides whether local `file://`
/// sources are allowed (only on the command line, for quick use: the API's
/// `S3Uri` is always `s3://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    ConfigFile,
    Flag,
}

/// The whole job: its channels and the rest of a CreateTrainingJob request
/// (or the flags that stand for it). See [`crate::request`].
#[derive(Debug, Clone, Default)]
pub struct JobConfig {
    /// Channels in the order given (config file first, then `--channel` flags).
    pub channels: Vec<ChannelSpec>,
    /// `TrainingJobName` / `--job-name`, or a generated `chute-<UTC time>` name.
    pub job_name: String,
    /// Whether `job_name` was generated because none was given.
    pub job_name_generated: bool,
    /// `HyperParameters`, `--hyperparameters FILE` and `--hp KEY=VALUE`, merged in
    /// that order (later wins); every value a string, as the API takes them.
    pub hyperparameters: BTreeMap<String, String>,
    /// `OutputDataConfig` / `--output-path`.
    pub output: Option<OutputConfig>,
    /// `CheckpointConfig` / `--checkpoint`.
    pub checkpoint: Option<CheckpointConfig>,
    /// `ResourceConfig.InstanceType` (`current_instance_type` in
    /// resourceconfig.json; `local` when not given, as the toolkit's default).
    pub instance_type: Option<String>,
    /// `ResourceConfig.InstanceCount`: checked against the hosts found.
    pub instance_count: Option<u32>,
    /// `StoppingCondition.MaxRuntimeInSeconds` / `--max-runtime`.
    pub max_runtime: Option<Duration>,
    /// `Environment`: exported to the command (after chute's own variables, so
    /// a value here wins, as the request's Environment does on SageMaker).
    pub environment: BTreeMap<String, String>,
}

/// Where the model and output data go after a successful command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// `S3OutputPath`: `s3://bucket/prefix`; artifacts go under `<path>/<job>/output/`.
    pub s3_output_path: String,
    /// `CompressionType`.
    pub compression: OutputCompression,
}

/// `OutputDataConfig.CompressionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputCompression {
    /// `GZIP` (the default): `model.tar.gz` and `output.tar.gz`.
    #[default]
    Gzip,
    /// `NONE`: the files as they are, under `<job>/output/model/`.
    None,
}

/// Checkpoints: synced between `local_path` and `s3_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// `S3Uri`: `s3://bucket/prefix`.
    pub s3_uri: String,
    /// `LocalPath`, absolute (default `<base-dir>/checkpoints`).
    pub local_path: PathBuf,
}

/// Reads and validates the whole job: the `--input-config` file (if any) and the
/// `--channel` flags, with `default_mode` (`--input-mode`) for channels that name
/// none. Returns the first problem found.
pub fn load(
    input_config: Option<&Path>,
    channel_flags: &[String],
    default_mode: Option<&str>,
) -> Result<JobConfig, ConfigError> {
    load_job(
        input_config,
        channel_flags,
        default_mode,
        &JobFlags::default(),
        Path::new(crate::request::DEFAULT_BASE_DIR),
    )
}

/// Reads and validates the whole job: channels as [`load`] does, and the rest of
/// the request (when `--input-config` is a whole CreateTrainingJob request) with
/// the job `flags` on top. `base_dir` gives the default checkpoint directory.
pub fn load_job(
    input_config: Option<&Path>,
    channel_flags: &[String],
    default_mode: Option<&str>,
    flags: &JobFlags,
    base_dir: &Path,
) -> Result<JobConfig, ConfigError> {
    let mut request = None;
    let flag_mode = match default_mode {
        Some(m) => Some(InputMode::parse(m).ok_or_else(|| ConfigError::DefaultMode(m.to_owned()))?),
        None => None,
    };
    let mut channels = Vec::new();
    let mut file_mode = None;
    if let Some(path) = input_config {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value: Value = serde_json::from_slice(&text).map_err(|e| ConfigError::Json {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let origin = format!("--input-config {}", path.display());
        if let Value::Object(obj) = &value {
            request = Some((origin.clone(), obj.clone()));
        }
        let (list, mode) = split_top_level(&origin, value)?;
        file_mode = mode;
        let default = flag_mode.or(file_mode).unwrap_or(InputMode::File);
        for (i, item) in list.into_iter().enumerate() {
            channels.push(parse_channel(i, &item, default, Origin::ConfigFile)?);
        }
    }
    let default = flag_mode.or(file_mode).unwrap_or(InputMode::File);
    for (i, arg) in channel_flags.iter().enumerate() {
        let value = flag_to_json(arg)?;
        let spec = parse_channel(channels.len() + i, &value, default, Origin::Flag).map_err(
            |e| match e {
                ConfigError::Field { field, problem, .. } => ConfigError::Flag {
                    arg: arg.clone(),
                    problem: format!("{field}: {problem}"),
                },
                other => other,
            },
        )?;
        channels.push(spec);
    }
    check_job(&channels)?;
    let mut job = JobConfig {
        channels,
        ..JobConfig::default()
    };
    let request = request.as_ref().map(|(o, r)| (o.as_str(), r));
    crate::request::apply(&mut job, request, flags, base_dir)?;
    Ok(job)
}

/// Validates one channel given as JSON (a CreateTrainingJob `Channel`).
pub fn parse_channel_json(value: &Value, default: InputMode) -> Result<ChannelSpec, ConfigError> {
    parse_channel(0, value, default, Origin::ConfigFile)
}

/// The list of channels, and the top-level `TrainingInputMode` when the file is a
/// whole CreateTrainingJob request rather than just its `InputDataConfig`.
fn split_top_level(
    origin: &str,
    value: Value,
) -> Result<(Vec<Value>, Option<InputMode>), ConfigError> {
    let shape = |problem: &str| ConfigError::Shape {
        origin: origin.to_owned(),
        problem: problem.to_owned(),
    };
    match value {
        Value::Array(list) => Ok((list, None)),
        Value::Object(mut obj) => {
            let list = match obj.remove("InputDataConfig") {
                Some(Value::Array(list)) => list,
                _ => {
                    return Err(shape(
                        "expected the InputDataConfig list of CreateTrainingJob: a JSON array \
                         of channels such as [{\"ChannelName\": \"train\", \"DataSource\": \
                         {\"S3DataSource\": {\"S3Uri\": \"s3://bucket/prefix/\"}}}] (or a \
                         CreateTrainingJob request object with an InputDataConfig array)",
                    ))
                }
            };
            let mode = match obj
                .get("AlgorithmSpecification")
                .and_then(|a| a.get("TrainingInputMode"))
                .or_else(|| obj.get("TrainingInputMode"))
            {
                None => None,
                Some(Value::String(s)) => Some(InputMode::parse(s).ok_or_else(|| {
                    shape(&format!(
                        "TrainingInputMode '{s}' is not an input mode: use File, FastFile or Pipe"
                    ))
                })?),
                Some(_) => return Err(shape("TrainingInputMode must be a string")),
            };
            Ok((list, mode))
        }
        _ => Err(shape(
            "expected a JSON array of channels (the InputDataConfig list of CreateTrainingJob)",
        )),
    }
}

const CHANNEL_FIELDS: &[&str] = &[
    "ChannelName",
    "DataSource",
    "InputMode",
    "RecordWrapperType",
    "CompressionType",
    "ShuffleConfig",
    "ContentType",
];
const S3_FIELDS: &[&str] = &[
    "S3Uri",
    "S3DataType",
    "S3DataDistributionType",
    "AttributeNames",
    "InstanceGroupNames",
];
const FS_FIELDS: &[&str] = &[
    "DirectoryPath",
    "FileSystemType",
    "FileSystemAccessMode",
    "FileSystemId",
];

/// Validates one channel. `index` is 0-based; messages count from 1.
fn parse_channel(
    index: usize,
    value: &Value,
    default: InputMode,
    origin: Origin,
) -> Result<ChannelSpec, ConfigError> {
    let (obj, name) = channel_name(index, value)?;
    let label = format!("channel '{name}'");
    let err = |(field, problem): (String, String)| ConfigError::Field {
        channel: label.clone(),
        field,
        problem,
    };
    let known = [CHANNEL_FIELDS, crate::access::FIELDS].concat();
    check_fields(obj, &known, "").map_err(err)?;
    let access = crate::access::parse(obj).map_err(err)?;
    let delivery = delivery(obj, default).map_err(err)?;
    let data = data_source(obj, origin).map_err(err)?;
    check_combination(&name, &delivery, &data).map_err(err)?;
    let Delivery {
        mode,
        record_wrapper,
        compression,
        shuffle_seed,
        content_type,
    } = delivery;
    Ok(ChannelSpec {
        name,
        data,
        mode,
        record_wrapper,
        compression,
        shuffle_seed,
        content_type,
        access,
    })
}

/// The channel's object and its valid `ChannelName`; errors name the channel
/// by its position.
fn channel_name(index: usize, value: &Value) -> Result<(&Map<String, Value>, String), ConfigError> {
    let bad = |field: &str, problem: String| ConfigError::Field {
        channel: format!("channel #{}", index + 1),
        field: field.to_owned(),
        problem,
    };
    let Value::Object(obj) = value else {
        return Err(bad(
            "(channel)",
            "expected a JSON object with ChannelName and DataSource".into(),
        ));
    };
    let name = match obj.get("ChannelName") {
        None => {
            return Err(bad(
                "ChannelName",
                "missing: every channel needs a name, e.g. \"ChannelName\": \"train\"".into(),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("ChannelName", "must be a string".into())),
    };
    check_channel_name(&name).map_err(|problem| bad("ChannelName", problem.to_string()))?;
    Ok((obj, name))
}

/// How a channel is delivered: everything but its name and data source.
struct Delivery {
    mode: InputMode,
    record_wrapper: RecordWrapper,
    compression: Compression,
    shuffle_seed: Option<u64>,
    content_type: Option<String>,
}

/// A field at fault and what is wrong with it.
type FieldProblem = (String, String);

fn field_problem(field: &str) -> impl Fn(String) -> FieldProblem + '_ {
    move |problem| (field.to_owned(), problem)
}

/// `InputMode`, `RecordWrapperType`, `CompressionType`, `ShuffleConfig` and
/// `ContentType`, each checked on its own.
fn delivery(obj: &Map<String, Value>, default: InputMode) -> Result<Delivery, FieldProblem> {
    let mode = match opt_str(obj, "InputMode").map_err(field_problem("InputMode"))? {
        None => default,
        Some(m) => InputMode::parse(m).ok_or_else(|| {
            field_problem("InputMode")(format!(
                "unknown value '{m}': use File, FastFile or Pipe (case-sensitive)"
            ))
        })?,
    };
    let record_wrapper = match opt_str(obj, "RecordWrapperType")
        .map_err(field_problem("RecordWrapperType"))?
    {
        None => RecordWrapper::None,
        Some(v) => RecordWrapper::from_api(v).ok_or_else(|| {
            field_problem("RecordWrapperType")(format!("unknown value '{v}': use None or RecordIO"))
        })?,
    };
    let compression =
        match opt_str(obj, "CompressionType").map_err(field_problem("CompressionType"))? {
            None | Some("None") => Compression::None,
            Some("Gzip") => Compression::Gzip,
            Some(v) => {
                return Err(field_problem("CompressionType")(format!(
                    "unknown value '{v}': use None or Gzip"
                )))
            }
        };
    let shuffle_seed = match obj.get("ShuffleConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(sc)) => {
            check_fields(sc, &["Seed"], "ShuffleConfig.")?;
            Some(parse_seed(sc.get("Seed")).map_err(field_problem("ShuffleConfig.Seed"))?)
        }
        Some(_) => {
            return Err(field_problem("ShuffleConfig")(
                "must be an object such as {\"Seed\": 1234}".into(),
            ))
        }
    };
    let content_type = opt_str(obj, "ContentType")
        .map_err(field_problem("ContentType"))?
        .map(str::to_owned);
    Ok(Delivery {
        mode,
        record_wrapper,
        compression,
        shuffle_seed,
        content_type,
    })
}

/// `DataSource`: S3 or a file system.
fn data_source(obj: &Map<String, Value>, origin: Origin) -> Result<ChannelData, FieldProblem> {
    match obj.get("DataSource") {
        None | Some(Value::Null) => Err(field_problem("DataSource")(
            "missing: give DataSource.S3DataSource {\"S3Uri\": \"s3://bucket/prefix/\"} or \
             DataSource.FileSystemDataSource {\"DirectoryPath\": \"/mnt/data\"}"
                .into(),
        )),
        Some(Value::Object(ds)) => parse_data_source(ds, origin),
        Some(_) => Err(field_problem("DataSource")("must be an object".into())),
    }
}

/// What the fields allow only together: wrapping and decompression are Pipe
/// mode's, and a file-system channel is a directory used in place.
fn check_combination(
    name: &str,
    delivery: &Delivery,
    data: &ChannelData,
) -> Result<(), FieldProblem> {
    let mode = delivery.mode;
    if delivery.record_wrapper == RecordWrapper::RecordIo && mode != InputMode::Pipe {
        return Err(field_problem("RecordWrapperType")(format!(
            "RecordIO wraps objects for Pipe mode; this channel's InputMode is {mode}: \
             set \"InputMode\": \"Pipe\" or leave RecordWrapperType unset"
        )));
    }
    if delivery.compression == Compression::Gzip && mode != InputMode::Pipe {
        return Err(field_problem("CompressionType")(format!(
            "Gzip is decompressed on the way in Pipe mode only; this channel's InputMode \
             is {mode}: set \"InputMode\": \"Pipe\" or leave CompressionType unset"
        )));
    }
    if let ChannelData::FileSystem { .. } = data {
        if mode == InputMode::Pipe {
            return Err(field_problem("InputMode")(
                "a FileSystemDataSource channel is a directory, not a stream: set \
                 \"InputMode\": \"File\" on this channel"
                    .into(),
            ));
        }
        if delivery.shuffle_seed.is_some() {
            return Err(field_problem("ShuffleConfig")(
                "a FileSystemDataSource channel is used in place and cannot be shuffled: \
                 remove ShuffleConfig"
                    .into(),
            ));
        }
    }
    if delivery.shuffle_seed.is_some() && mode != InputMode::Pipe {
        tracing::warn!(
            channel = %name,
            "ShuffleConfig only changes the order of Pipe-mode channels; this {mode} channel is \
             delivered (and sharded) by key order"
        );
    }
    Ok(())
}

fn check_fields(
    obj: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), (String, String)> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            return Err((
                format!("{prefix}{key}"),
                format!("unknown field (valid fields here: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("must be a string, got {other}")),
    }
}

/// `Seed` is a `long` in the API; negative values are taken as their 64-bit two's
/// complement so that every API-valid seed gives a distinct permutation.
fn parse_seed(value: Option<&Value>) -> Result<u64, String> {
    match value {
        None | Some(Value::Null) => Err("missing: give an integer, e.g. {\"Seed\": 1234}".into()),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if let Some(i) = n.as_i64() {
                Ok(i as u64)
            } else {
                Err(format!("{n} is not an integer: give a whole number"))
            }
        }
        Some(other) => Err(format!("must be an integer, got {other}")),
    }
}

fn parse_data_source(
    ds: &Map<String, Value>,
    origin: Origin,
) -> Result<ChannelData, (String, String)> {
    check_fields(ds, &["S3DataSource", "FileSystemDataSource"], "DataSource.")?;
    match (ds.get("S3DataSource"), ds.get("FileSystemDataSource")) {
        (Some(_), Some(_)) => Err((
            "DataSource".into(),
            "has both S3DataSource and FileSystemDataSource: give exactly one".into(),
        )),
        (None, None) => Err((
            "DataSource".into(),
            "is empty: give S3DataSource {\"S3Uri\": \"s3://bucket/prefix/\"} or \
             FileSystemDataSource {\"DirectoryPath\": \"/mnt/data\"}"
                .into(),
        )),
        (Some(Value::Object(s3)), None) => parse_s3(s3, origin),
        (Some(_), None) => Err(("DataSource.S3DataSource".into(), "must be an object".into())),
        (None, Some(Value::Object(fs))) => parse_fs(fs),
        (None, Some(_)) => Err((
            "DataSource.FileSystemDataSource".into(),
            "must be an object".into(),
        )),
    }
}

fn parse_s3(s3: &Map<String, Value>, origin: Origin) -> Result<ChannelData, (String, String)> {
    const P: &str = "DataSource.S3DataSource.";
    let f = |name: &str| format!("{P}{name}");
    check_fields(s3, S3_FIELDS, P)?;
    let uri = match opt_str(s3, "S3Uri").map_err(|p| (f("S3Uri"), p))? {
        Some(u) => u.to_owned(),
        None => {
            return Err((
                f("S3Uri"),
                "missing: give the data's location, e.g. \"S3Uri\": \"s3://bucket/prefix/\"".into(),
            ))
        }
    };
    let data_type = match opt_str(s3, "S3DataType").map_err(|p| (f("S3DataType"), p))? {
        None | Some("S3Prefix") => S3DataType::S3Prefix,
        Some("ManifestFile") => S3DataType::ManifestFile,
        Some("AugmentedManifestFile") => S3DataType::AugmentedManifestFile,
        Some(v) => {
            return Err((
                f("S3DataType"),
                format!("unknown value '{v}': use S3Prefix, ManifestFile or AugmentedManifestFile"),
            ))
        }
    };
    let distribution = match opt_str(s3, "S3DataDistributionType")
        .map_err(|p| (f("S3DataDistributionType"), p))?
    {
        None => Distribution::FullyReplicated,
        Some(v) => v
            .parse::<Distribution>()
            .map_err(|e| (f("S3DataDistributionType"), e.to_string()))?,
    };
    let attribute_names = match s3.get("AttributeNames") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err((
                    f("AttributeNames"),
                    format!("every attribute name must be a non-empty string, got {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err((
                f("AttributeNames"),
                "must be a list of strings, e.g. [\"source-ref\", \"class\"]".into(),
            ))
        }
    };
    if s3.contains_key("InstanceGroupNames") {
        tracing::warn!(
            "{P}InstanceGroupNames is ignored: chute has no instance groups; every host \
             considers every channel"
        );
    }

    let is_local = uri.starts_with("file://");
    let allowed = uri.starts_with("s3://") || (is_local && origin == Origin::Flag);
    if !allowed {
        let fix = if is_local {
            "the API's S3Uri is always s3://; for a local directory use \
             DataSource.FileSystemDataSource {\"DirectoryPath\": \"/abs/dir\"}"
        } else {
            "write s3://bucket/prefix"
        };
        return Err((f("S3Uri"), format!("'{uri}' is not an s3:// URI: {fix}")));
    }
    let source = match data_type {
        S3DataType::S3Prefix => {
            if !attribute_names.is_empty() {
                return Err(attributes_only_augmented(&f("AttributeNames")));
            }
            ChannelSource::Prefix(SourceUri::parse(&uri).map_err(|e| (f("S3Uri"), e.to_string()))?)
        }
        S3DataType::ManifestFile => {
            if !attribute_names.is_empty() {
                return Err(attributes_only_augmented(&f("AttributeNames")));
            }
            check_object_url(&uri).map_err(|p| (f("S3Uri"), p))?;
            ChannelSource::Manifest(uri.clone())
        }
        S3DataType::AugmentedManifestFile => {
            if attribute_names.is_empty() {
                return Err((
                    f("AttributeNames"),
                    "an AugmentedManifestFile channel needs the attributes to read from each \
                     line, e.g. \"AttributeNames\": [\"source-ref\", \"class\"]"
                        .into(),
                ));
            }
            check_object_url(&uri).map_err(|p| (f("S3Uri"), p))?;
            ChannelSource::AugmentedManifest {
                uri: uri.clone(),
                attribute_names,
            }
        }
    };
    Ok(ChannelData::S3 {
        uri,
        data_type,
        distribution,
        source,
    })
}

fn attributes_only_augmented(field: &str) -> (String, String) {
    (
        field.to_owned(),
        "AttributeNames is only used with \"S3DataType\": \"AugmentedManifestFile\": remove it \
         or change S3DataType"
            .into(),
    )
}

/// A manifest is one object: `s3://bucket/key` or a `file:///abs/file`.
fn check_object_url(uri: &str) -> Result<(), String> {
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "'{uri}' is not an absolute file: write file:///abs/file"
            ));
        }
        return Ok(());
    }
    S3Url::parse(uri).map(|_| ()).map_err(|e| e.to_string())
}

fn parse_fs(fs: &Map<String, Value>) -> Result<ChannelData, (String, String)> {
    const P: &str = "DataSource.FileSystemDataSource.";
    let f = |name: &str| format!("{P}{name}");
    check_fields(fs, FS_FIELDS, P)?;
    let directory =
        match opt_str(fs, "DirectoryPath").map_err(|p| (f("DirectoryPath"), p))? {
            Some(d) => PathBuf::from(d),
            None => return Err((
                f("DirectoryPath"),
                "missing: give the mounted directory, e.g. \"DirectoryPath\": \"/mnt/efs/train\""
                    .into(),
            )),
        };
    if !directory.is_absolute() {
        return Err((
            f("DirectoryPath"),
            format!("'{}' is not an absolute path", directory.display()),
        ));
    }
    match std::fs::metadata(&directory) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err((
                f("DirectoryPath"),
                format!("'{}' is not a directory", directory.display()),
            ))
        }
        Err(e) => {
            return Err((
                f("DirectoryPath"),
                format!(
                    "'{}' cannot be used: {e}; mount the file system there before chute run",
                    directory.display()
                ),
            ))
        }
    }
    match opt_str(fs, "FileSystemType").map_err(|p| (f("FileSystemType"), p))? {
        None | Some("EFS") | Some("FSxLustre") => {}
        Some(v) => {
            return Err((
                f("FileSystemType"),
                format!("unknown value '{v}': use EFS or FSxLustre"),
            ))
        }
    }
    let read_only =
        match opt_str(fs, "FileSystemAccessMode").map_err(|p| (f("FileSystemAccessMode"), p))? {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(v) => {
                return Err((
                    f("FileSystemAccessMode"),
                    format!("unknown value '{v}': use rw or ro"),
                ))
            }
        };
    opt_str(fs, "FileSystemId").map_err(|p| (f("FileSystemId"), p))?;
    Ok(ChannelData::FileSystem {
        directory,
        read_only,
    })
}

/// Checks what no single channel can: the count, unique names, and names that
/// would collide in the environment or in the data directory.
fn check_job(channels: &[ChannelSpec]) -> Result<(), ConfigError> {
    if channels.len() > MAX_CHANNELS {
        return Err(ConfigError::Conflict(format!(
            "{} channels given; a job has at most {MAX_CHANNELS}",
            channels.len()
        )));
    }
    let mut names = HashSet::new();
    let mut env_names: HashMap<String, &str> = HashMap::new();
    for c in channels {
        if !names.insert(c.name.as_str()) {
            return Err(ConfigError::Field {
                channel: format!("channel '{}'", c.name),
                field: "ChannelName".into(),
                problem: "duplicate channel: each ChannelName may appear once".into(),
            });
        }
        let upper = c.name.to_ascii_uppercase();
        if let Some(other) = env_names.insert(upper.clone(), &c.name) {
            return Err(ConfigError::Field {
                channel: format!("channel '{}'", c.name),
                field: "ChannelName".into(),
                problem: format!(
                    "channels '{other}' and '{}' would both set SM_CHANNEL_{upper}: rename one",
                    c.name
                ),
            });
        }
    }
    // A Pipe channel owns the names `<name>_<epoch>` in the data directory.
    for p in channels.iter().filter(|c| c.mode == InputMode::Pipe) {
        let prefix = format!("{}_", p.name);
        if let Some(other) = channels.iter().find(|c| {
            c.name
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        }) {
            return Err(ConfigError::Field {
                channel: format!("channel '{}'", other.name),
                field: "ChannelName".into(),
                problem: format!(
                    "clashes with the FIFOs of Pipe channel '{}' ({}_0, {}_1, ...): rename one",
                    p.name, p.name, p.name
                ),
            });
        }
    }
    Ok(())
}

/// Turns `NAME=URI[,key=value]...` into the JSON of a CreateTrainingJob channel,
/// so that flags and files share one validator.
///
/// `URI` is `s3://...`, `file:///abs/dir` (local mode through the chosen input
/// mode) or an absolute path (a `FileSystemDataSource`: the directory is linked).
/// Keys: `mode`, `distribution`, `type`, `attribute` (repeatable),
/// `record-wrapper`, `compression`, `shuffle-seed`, `content-type`; the API field
/// names (`InputMode`, `S3DataDistributionType`, ...) work too.
fn flag_to_json(arg: &str) -> Result<Value, ConfigError> {
    let bad = |problem: String| ConfigError::Flag {
        arg: arg.to_owned(),
        problem,
    };
    let mut parts = arg.split(',');
    let head = parts.next().unwrap_or_default();
    let Some((name, uri)) = head.split_once('=') else {
        return Err(bad(
            "expected NAME=URI[,key=value...], e.g. train=s3://bucket/prefix/,mode=FastFile".into(),
        ));
    };
    if uri.is_empty() {
        return Err(bad(format!("channel '{name}' has no URI after '='")));
    }
    let mut channel = Map::new();
    let mut s3 = Map::new();
    let mut attributes = Vec::new();
    let mut session_tags = Vec::new();
    channel.insert("ChannelName".into(), Value::String(name.to_owned()));
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(format!(
                "'{part}' is not key=value (URIs containing ',' cannot be given with --channel; \
                 use --input-config)"
            )));
        };
        let v = Value::String(value.to_owned());
        match key {
            "mode" | "InputMode" => {
                channel.insert("InputMode".into(), v);
            }
            "distribution" | "S3DataDistributionType" => {
                s3.insert("S3DataDistributionType".into(), v);
            }
            "type" | "S3DataType" => {
                s3.insert("S3DataType".into(), v);
            }
            "attribute" | "AttributeNames" => attributes.push(v),
            "record-wrapper" | "RecordWrapperType" => {
                channel.insert("RecordWrapperType".into(), v);
            }
            "compression" | "CompressionType" => {
                channel.insert("CompressionType".into(), v);
            }
            "content-type" | "ContentType" => {
                channel.insert("ContentType".into(), v);
            }
            "role-arn" | "RoleArn" => {
                channel.insert("RoleArn".into(), v);
            }
            "session-tag" | "SessionTag" => {
                let (k, v) = chute_s3::parse_session_tag(value).map_err(bad)?;
                session_tags.push(serde_json::json!({"Key": k, "Value": v}));
            }
            "shuffle-seed" | "Seed" => {
                let seed: i128 = value
                    .parse()
                    .map_err(|_| bad(format!("shuffle-seed '{value}' is not an integer")))?;
                let n = if seed < 0 {
                    i64::try_from(seed).map(Value::from)
                } else {
                    u64::try_from(seed).map(Value::from)
                }
                .map_err(|_| bad(format!("shuffle-seed '{value}' does not fit in 64 bits")))?;
                let mut sc = Map::new();
                sc.insert("Seed".into(), n);
                channel.insert("ShuffleConfig".into(), Value::Object(sc));
            }
            _ => {
                return Err(bad(format!(
                    "unknown key '{key}': use mode, distribution, type, attribute, \
                     record-wrapper, compression, shuffle-seed, content-type, role-arn or session-tag"
                )))
            }
        }
    }
    if !attributes.is_empty() {
        s3.insert("AttributeNames".into(), Value::Array(attributes));
    }
    if !session_tags.is_empty() {
        channel.insert("SessionTags".into(), Value::Array(session_tags));
    }
    let mut ds = Map::new();
    if uri.starts_with('/') {
        if !s3.is_empty() {
            return Err(bad(format!(
                "'{uri}' is a local directory used in place (FileSystemDataSource): \
                 distribution, type and attribute do not apply"
            )));
        }
        let mut fs = Map::new();
        fs.insert("DirectoryPath".into(), Value::String(uri.to_owned()));
        ds.insert("FileSystemDataSource".into(), Value::Object(fs));
    } else {
        s3.insert("S3Uri".into(), Value::String(uri.to_owned()));
        ds.insert("S3DataSource".into(), Value::Object(s3));
    }
    channel.insert("DataSource".into(), Value::Object(ds));
    Ok(Value::Object(channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<ChannelSpec, String> {
        parse_channel_json(&v, InputMode::File).map_err(|e| e.to_string())
    }

    #[test]
    fn full_channel() {
        let c = one(json!({
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {
                "S3Uri": "s3://b/p/", "S3DataType": "S3Prefix",
                "S3DataDistributionType": "ShardedByS3Key"}},
            "InputMode": "Pipe", "RecordWrapperType": "RecordIO",
            "CompressionType": "Gzip", "ShuffleConfig": {"Seed": -1},
            "ContentType": "application/x-recordio"
        }))
        .unwrap();
        assert_eq!(c.name, "train");
        assert_eq!(c.mode, InputMode::Pipe);
        assert_eq!(c.record_wrapper, RecordWrapper::RecordIo);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.shuffle_seed, Some(u64::MAX));
        assert_eq!(c.distribution(), Distribution::ShardedByS3Key);
        assert_eq!(c.content_type.as_deref(), Some("application/x-recordio"));
        match c.data {
            ChannelData::S3 {
                source: ChannelSource::Prefix(SourceUri::S3 { bucket, prefix }),
                ..
            } => assert_eq!((bucket.as_str(), prefix.as_str()), ("b", "p/")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = one(json!({"ChannelName": "a.b-c_9",
            "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}}))
        .unwrap();
        assert_eq!(c.mode, InputMode::File);
        assert_eq!(c.record_wrapper, RecordWrapper::None);
        assert_eq!(c.distribution(), Distribution::FullyReplicated);
        let c = parse_channel_json(
            &json!({"ChannelName": "x", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}}),
            InputMode::FastFile,
        )
        .unwrap();
        assert_eq!(c.mode, InputMode::FastFile);
    }

    #[test]
    fn errors_name_channel_and_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}, "InputMode": "Stream"}),
                "channel 't': InputMode: unknown value 'Stream'",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "https://b/p"}}}),
                "channel 't': DataSource.S3DataSource.S3Uri: 'https://b/p' is not an s3:// URI",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "file:///x"}}}),
                "channel 't': DataSource.S3DataSource.S3Uri: 'file:///x' is not an s3:// URI",
            ),
            (json!({"ChannelName": "t"}), "channel 't': DataSource: missing"),
            (json!({"DataSource": {}}), "channel #1: ChannelName: missing"),
            (
                json!({"ChannelName": "a b", "DataSource": {}}),
                "channel #1: ChannelName: 'a b' contains ' '",
            ),
            (
                json!({"ChannelName": "x".repeat(65), "DataSource": {}}),
                "channel #1: ChannelName: '",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {}}),
                "channel 't': DataSource: is empty",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}, "InputMod": "File"}),
                "channel 't': InputMod: unknown field",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b", "S3DataDistributionType": "Sharded"}}}),
                "channel 't': DataSource.S3DataSource.S3DataDistributionType: unknown S3DataDistributionType 'Sharded'",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/m", "S3DataType": "AugmentedManifestFile"}}}),
                "channel 't': DataSource.S3DataSource.AttributeNames: an AugmentedManifestFile channel needs",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}, "RecordWrapperType": "RecordIO"}),
                "channel 't': RecordWrapperType: RecordIO wraps objects for Pipe mode",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}, "CompressionType": "Gzip", "InputMode": "FastFile"}),
                "channel 't': CompressionType: Gzip",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"FileSystemDataSource": {"DirectoryPath": "/nonexistent/chute"}}}),
                "channel 't': DataSource.FileSystemDataSource.DirectoryPath: '/nonexistent/chute' cannot be used",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"FileSystemDataSource": {"DirectoryPath": "/"}}, "InputMode": "Pipe"}),
                "channel 't': InputMode: a FileSystemDataSource channel",
            ),
            (
                json!({"ChannelName": "t", "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}, "ShuffleConfig": {"Seed": "x"}}),
                "channel 't': ShuffleConfig.Seed: must be an integer",
            ),
        ];
        for (v, want) in cases {
            let got = one(v.clone()).unwrap_err();
            assert!(got.starts_with(want), "{v}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn job_level_checks() {
        let dir = tempfile::tempdir().unwrap();
        let write = |v: Value| {
            let p = dir.path().join("c.json");
            std::fs::write(&p, v.to_string()).unwrap();
            p
        };
        let ch = |n: &str| json!({"ChannelName": n, "DataSource": {"S3DataSource": {"S3Uri": "s3://b"}}});
        let p = write(json!([ch("train"), ch("train")]));
        let e = load(Some(&p), &[], None).unwrap_err().to_string();
        assert!(
            e.starts_with("channel 'train': ChannelName: duplicate"),
            "{e}"
        );
        let p = write(json!([ch("train"), ch("TRAIN")]));
        let e = load(Some(&p), &[], None).unwrap_err().to_string();
        assert!(e.contains("SM_CHANNEL_TRAIN"), "{e}");
        let many: Vec<Value> = (0..21).map(|i| ch(&format!("c{i}"))).collect();
        let p = write(Value::Array(many));
        let e = load(Some(&p), &[], None).unwrap_err().to_string();
        assert!(e.contains("at most 20"), "{e}");
        let p = write(json!([ch("t"), ch("t_0")]));
        let e = load(Some(&p), &[], Some("Pipe")).unwrap_err().to_string();
        assert!(e.starts_with("channel 't_0': ChannelName: clashes"), "{e}");
        // A whole CreateTrainingJob request works too, with its default mode.
        let p = write(
            json!({"AlgorithmSpecification": {"TrainingInputMode": "FastFile"},
            "InputDataConfig": [ch("t")]}),
        );
        let job = load(Some(&p), &[], None).unwrap();
        assert_eq!(job.channels[0].mode, InputMode::FastFile);
        // ... and --input-mode wins over it.
        let job = load(Some(&p), &[], Some("Pipe")).unwrap();
        assert_eq!(job.channels[0].mode, InputMode::Pipe);
        let p = write(json!({"channels": []}));
        let e = load(Some(&p), &[], None).unwrap_err().to_string();
        assert!(e.contains("InputDataConfig"), "{e}");
        std::fs::write(&p, "[{").unwrap();
        let e = load(Some(&p), &[], None).unwrap_err().to_string();
        assert!(
            e.contains("is not valid JSON") && e.contains("line 1"),
            "{e}"
        );
        let e = load(Some(&dir.path().join("missing.json")), &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read --input-config"), "{e}");
        let e = load(None, &[], Some("file")).unwrap_err().to_string();
        assert!(e.contains("--input-mode 'file'"), "{e}");
    }

    #[test]
    fn channel_flags() {
        let job = load(
            None,
            &[
                "train=s3://b/p/,mode=FastFile,distribution=ShardedByS3Key".into(),
                "local=file:///tmp,mode=Pipe,record-wrapper=RecordIO,shuffle-seed=7".into(),
                "efs=/".into(),
                "aug=s3://b/m.json,type=AugmentedManifestFile,attribute=source-ref,attribute=label"
                    .into(),
            ],
            None,
        )
        .unwrap();
        let c = &job.channels;
        assert_eq!(c[0].mode, InputMode::FastFile);
        assert_eq!(c[0].distribution(), Distribution::ShardedByS3Key);
        assert!(matches!(
            c[1].data,
            ChannelData::S3 {
                source: ChannelSource::Prefix(SourceUri::Local { .. }),
                ..
            }
        ));
        assert_eq!(c[1].shuffle_seed, Some(7));
        assert!(matches!(c[2].data, ChannelData::FileSystem { .. }));
        match &c[3].data {
            ChannelData::S3 {
                source:
                    ChannelSource::AugmentedManifest {
                        attribute_names, ..
                    },
                ..
            } => assert_eq!(attribute_names, &["source-ref", "label"]),
            other => panic!("{other:?}"),
        }
        let e = load(None, &["train".into()], None).unwrap_err().to_string();
        assert!(e.starts_with("--channel 'train': expected NAME=URI"), "{e}");
        let e = load(None, &["t=s3://b,mode=Fast".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--channel 't=s3://b,mode=Fast': InputMode: unknown value 'Fast'"),
            "{e}"
        );
        let e = load(None, &["t=s3://b,speed=1".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key 'speed'"), "{e}");
    }
}
