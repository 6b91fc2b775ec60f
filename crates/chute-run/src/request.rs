//! The rest of a CreateTrainingJob request, beyond its channels: job name,
//! hyperparameters, output and checkpoint locations, resources, the stopping
//! condition and the environment, and the flags that stand for them without a
//! request file (`--job-name`, `--hyperparameters`, `--hp`, `--output-path`,
//! `--checkpoint`, `--max-runtime`). Flags win over the request.
//!
//! Users pass the requests they already send to SageMaker, so fields chute has no
//! use for (`RoleArn`, `VpcConfig`, `Tags`, ...) are not errors: they are named in
//! one warning. Fields chute uses are checked as the API checks them, each
//! complaint naming the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chute_plan::SourceUri;
use serde_json::{Map, Value};

use crate::config::{CheckpointConfig, ConfigError, JobConfig, OutputCompression, OutputConfig};

/// `--base-dir` when neither the flag nor `SAGEMAKER_BASE_DIR` is given.
pub const DEFAULT_BASE_DIR: &str = "/opt/ml";

/// The job flags of `chute run` (those that stand for request fields).
#[derive(Debug, Clone, Default)]
pub struct JobFlags {
    /// `--job-name`.
    pub job_name: Option<String>,
    /// `--hyperparameters FILE`: a JSON object.
    pub hyperparameters_file: Option<PathBuf>,
    /// `--hp KEY=VALUE`, in order.
    pub hyperparameters: Vec<String>,
    /// `--output-path s3://...`.
    pub output_path: Option<String>,
    /// `--checkpoint s3://...[,local=PATH]`.
    pub checkpoint: Option<String>,
    /// `--max-runtime SECS`.
    pub max_runtime: Option<u64>,
}

impl JobFlags {
    /// Whether no job flag was given.
    pub fn is_empty(&self) -> bool {
        self.job_name.is_none()
            && self.hyperparameters_file.is_none()
            && self.hyperparameters.is_empty()
            && self.output_path.is_none()
            && self.checkpoint.is_none()
            && self.max_runtime.is_none()
    }
}

/// Top-level request fields chute reads (the channel loader reads the first three).
const USED: &[&str] = &[
    "InputDataConfig",
    "AlgorithmSpecification",
    "TrainingInputMode",
    "TrainingJobName",
    "HyperParameters",
    "OutputDataConfig",
    "CheckpointConfig",
    "ResourceConfig",
    "StoppingCondition",
    "Environment",
];

/// Fills the non-channel fields of `job` from `request` (origin, object) and `flags`.
pub fn apply(
    job: &mut JobConfig,
    request: Option<(&str, &Map<String, Value>)>,
    flags: &JobFlags,
    base_dir: &Path,
) -> Result<(), ConfigError> {
    let default_checkpoint_dir = base_dir.join("checkpoints");
    if let Some((origin, req)) = request {
        let mut ignored: Vec<String> = req
            .keys()
            .filter(|k| !USED.contains(&k.as_str()))
            .cloned()
            .collect();
        from_request(job, origin, req, &default_checkpoint_dir, &mut ignored)?;
        if !ignored.is_empty() {
            tracing::warn!(
                "{origin}: ignoring fields chute does not use: {}",
                ignored.join(", ")
            );
        }
    }
    from_flags(job, flags, &default_checkpoint_dir)?;
    if job.job_name.is_empty() {
        job.job_name = generated_job_name(SystemTime::now());
        job.job_name_generated = true;
        tracing::info!(
            "no TrainingJobName or --job-name given: this job is named {} (give each \
             host of a multi-host job the same name with --job-name)",
            job.job_name
        );
    }
    Ok(())
}

fn from_request(
    job: &mut JobConfig,
    origin: &str,
    req: &Map<String, Value>,
    default_checkpoint_dir: &Path,
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let err = |(field, problem): FieldProblem| ConfigError::Request {
        origin: origin.to_owned(),
        field,
        problem,
    };
    if let Some(v) = present(req, "TrainingJobName") {
        let name = v
            .as_str()
            .ok_or_else(|| problem("TrainingJobName", "must be a string".into()))
            .map_err(err)?;
        check_job_name(name).map_err(|p| err(problem("TrainingJobName", p)))?;
        job.job_name = name.to_owned();
    }
    if let Some(v) = present(req, "HyperParameters") {
        job.hyperparameters =
            string_map(v, false).map_err(|p| err(problem("HyperParameters", p)))?;
    }
    if let Some(v) = present(req, "Environment") {
        let env = string_map(v, false).map_err(|p| err(problem("Environment", p)))?;
        for name in env.keys() {
            check_env_name(name).map_err(|p| err(problem(&format!("Environment.{name}"), p)))?;
        }
        job.environment = env;
    }
    if let Some(v) = present(req, "OutputDataConfig") {
        job.output = Some(output_config(v, ignored).map_err(err)?);
    }
    if let Some(v) = present(req, "CheckpointConfig") {
        job.checkpoint = Some(checkpoint_config(v, default_checkpoint_dir, ignored).map_err(err)?);
    }
    if let Some(v) = present(req, "ResourceConfig") {
        resource_config(job, v, ignored).map_err(err)?;
    }
    if let Some(v) = present(req, "StoppingCondition") {
        let o = object(v).map_err(|p| err(problem("StoppingCondition", p)))?;
        note_unused(o, "StoppingCondition", &["MaxRuntimeInSeconds"], ignored);
        if let Some(v) = present(o, "MaxRuntimeInSeconds") {
            let secs = v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                err(problem(
                    "StoppingCondition.MaxRuntimeInSeconds",
                    format!("{v} is not a whole number of seconds (at least 1)"),
                ))
            })?;
            job.max_runtime = Some(Duration::from_secs(secs));
        }
    }
    Ok(())
}

/// A request field at fault and what is wrong with it.
type FieldProblem = (String, String);

fn problem(field: &str, problem: String) -> FieldProblem {
    (field.to_owned(), problem)
}

/// `OutputDataConfig`: where the model and output data go, and how packed.
fn output_config(v: &Value, ignored: &mut Vec<String>) -> Result<OutputConfig, FieldProblem> {
    let o = object(v).map_err(|p| problem("OutputDataConfig", p))?;
    note_unused(
        o,
        "OutputDataConfig",
        &["S3OutputPath", "CompressionType"],
        ignored,
    );
    let path = match present(o, "S3OutputPath") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(problem(
                "OutputDataConfig.S3OutputPath",
                "must be a string".into(),
            ))
        }
        None => {
            return Err(problem(
                "OutputDataConfig.S3OutputPath",
                "missing: give where the model goes, e.g. \"S3OutputPath\": \
                 \"s3://bucket/output\""
                    .into(),
            ))
        }
    };
    check_s3_prefix(&path).map_err(|p| problem("OutputDataConfig.S3OutputPath", p))?;
    let compression = match present(o, "CompressionType") {
        None => OutputCompression::Gzip,
        Some(Value::String(s)) => {
            parse_compression(s).map_err(|p| problem("OutputDataConfig.CompressionType", p))?
        }
        Some(_) => {
            return Err(problem(
                "OutputDataConfig.CompressionType",
                "must be a string: GZIP or NONE".into(),
            ))
        }
    };
    Ok(OutputConfig {
        s3_output_path: path,
        compression,
    })
}

/// `CheckpointConfig`: where checkpoints are kept, in S3 and locally.
fn checkpoint_config(
    v: &Value,
    default_checkpoint_dir: &Path,
    ignored: &mut Vec<String>,
) -> Result<CheckpointConfig, FieldProblem> {
    let o = object(v).map_err(|p| problem("CheckpointConfig", p))?;
    note_unused(o, "CheckpointConfig", &["S3Uri", "LocalPath"], ignored);
    let uri = match present(o, "S3Uri") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(problem("CheckpointConfig.S3Uri", "must be a string".into())),
        None => {
            return Err(problem(
                "CheckpointConfig.S3Uri",
                "missing: give where checkpoints are kept, e.g. \"S3Uri\": \
                 \"s3://bucket/checkpoints/job\""
                    .into(),
            ))
        }
    };
    check_s3_prefix(&uri).map_err(|p| problem("CheckpointConfig.S3Uri", p))?;
    let local_path = match present(o, "LocalPath") {
        None => default_checkpoint_dir.to_owned(),
        Some(Value::String(s)) => {
            check_local_path(s).map_err(|p| problem("CheckpointConfig.LocalPath", p))?
        }
        Some(_) => {
            return Err(problem(
                "CheckpointConfig.LocalPath",
                "must be a string".into(),
            ))
        }
    };
    Ok(CheckpointConfig {
        s3_uri: uri,
        local_path,
    })
}

/// `ResourceConfig`: the instance type and count.
fn resource_config(
    job: &mut JobConfig,
    v: &Value,
    ignored: &mut Vec<String>,
) -> Result<(), FieldProblem> {
    let o = object(v).map_err(|p| problem("ResourceConfig", p))?;
    note_unused(
        o,
        "ResourceConfig",
        &["InstanceType", "InstanceCount"],
        ignored,
    );
    match present(o, "InstanceType") {
        None => {}
        Some(Value::String(s)) if !s.is_empty() => job.instance_type = Some(s.clone()),
        Some(_) => {
            return Err(problem(
                "ResourceConfig.InstanceType",
                "must be a non-empty string, e.g. \"ml.p4d.24xlarge\"".into(),
            ))
        }
    }
    if let Some(v) = present(o, "InstanceCount") {
        let n = v
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                problem(
                    "ResourceConfig.InstanceCount",
                    format!("{v} is not a whole number of instances (at least 1)"),
                )
            })?;
        job.instance_count = Some(n);
    }
    Ok(())
}

fn from_flags(
    job: &mut JobConfig,
    flags: &JobFlags,
    default_checkpoint_dir: &Path,
) -> Result<(), ConfigError> {
    let bad = |flag: String, problem: String| ConfigError::JobFlag { flag, problem };
    if let Some(name) = &flags.job_name {
        check_job_name(name).map_err(|p| bad(format!("--job-name '{name}'"), p))?;
        job.job_name = name.clone();
    }
    if let Some(path) = &flags.hyperparameters_file {
        let flag = format!("--hyperparameters {}", path.display());
        let text =
            std::fs::read(path).map_err(|e| bad(flag.clone(), format!("cannot read it: {e}")))?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| bad(flag.clone(), format!("not valid JSON: {e}")))?;
        // A file may hold what the SDK takes (numbers, lists): each non-string
        // value becomes its JSON text, as the SDK sends it.
        job.hyperparameters
            .extend(string_map(&value, true).map_err(|p| bad(flag, p))?);
    }
    for arg in &flags.hyperparameters {
        let Some((k, v)) = arg.split_once('=') else {
            return Err(bad(
                format!("--hp '{arg}'"),
                "expected KEY=VALUE, e.g. --hp epochs=10".into(),
            ));
        };
        if k.is_empty() {
            return Err(bad(format!("--hp '{arg}'"), "the key is empty".into()));
        }
        job.hyperparameters.insert(k.to_owned(), v.to_owned());
    }
    if let Some(path) = &flags.output_path {
        check_s3_prefix(path).map_err(|p| bad(format!("--output-path '{path}'"), p))?;
        let compression = job
            .output
            .as_ref()
            .map(|o| o.compression)
            .unwrap_or_default();
        job.output = Some(OutputConfig {
            s3_output_path: path.clone(),
            compression,
        });
    }
    if let Some(arg) = &flags.checkpoint {
        let flag = format!("--checkpoint '{arg}'");
        let mut parts = arg.split(',');
        let uri = parts.next().unwrap_or_default().to_owned();
        check_s3_prefix(&uri).map_err(|p| bad(flag.clone(), p))?;
        let mut local_path = default_checkpoint_dir.to_owned();
        for part in parts {
            match part.split_once('=') {
                Some(("local", p)) => {
                    local_path = check_local_path(p).map_err(|e| bad(flag.clone(), e))?;
                }
                _ => {
                    return Err(bad(
                        flag,
                        format!(
                            "'{part}' is not understood: write s3://bucket/prefix[,local=/abs/dir]"
                        ),
                    ))
                }
            }
        }
        job.checkpoint = Some(CheckpointConfig {
            s3_uri: uri,
            local_path,
        });
    }
    if let Some(secs) = flags.max_runtime {
        if secs == 0 {
            return Err(bad(
                "--max-runtime 0".into(),
                "give the longest the command may run, in seconds (at least 1)".into(),
            ));
        }
        job.max_runtime = Some(Duration::from_secs(secs));
    }
    Ok(())
}

/// A field that is there and not `null`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object().ok_or_else(|| "must be an object".to_owned())
}

fn note_unused(obj: &Map<String, Value>, prefix: &str, used: &[&str], ignored: &mut Vec<String>) {
    for key in obj.keys() {
        if !used.contains(&key.as_str()) {
            ignored.push(format!("{prefix}.{key}"));
        }
    }
}

/// A JSON object of strings. With `lenient`, other values become their JSON text.
fn string_map(v: &Value, lenient: bool) -> Result<BTreeMap<String, String>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "must be an object of strings, e.g. {\"epochs\": \"10\"}".to_owned())?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s.clone(),
            other if lenient => other.to_string(),
            other => {
                return Err(format!(
                    "'{k}' is {other}: every value must be a string, as the API takes them \
                     (write \"{k}\": \"{}\")",
                    other.to_string().replace('"', "\\\"")
                ))
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

/// The API's rule: 1 to 63 letters, digits and hyphens, starting and ending with
/// a letter or digit.
pub fn check_job_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid job name: use 1 to 63 letters, digits and hyphens, \
             starting and ending with a letter or digit"
        ))
    }
}

/// An environment variable name the command can receive.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid variable name: use letters, digits and '_', not \
             starting with a digit"
        ))
    }
}

fn check_s3_prefix(uri: &str) -> Result<(), String> {
    if !uri.starts_with("s3://") {
        return Err(format!(
            "'{uri}' is not an s3:// URI: write s3://bucket/prefix"
        ));
    }
    match SourceUri::parse(uri) {
        Ok(SourceUri::S3 { bucket, .. }) if !bucket.is_empty() => Ok(()),
        Ok(_) => Err(format!("'{uri}' has no bucket: write s3://bucket/prefix")),
        Err(e) => Err(e.to_string()),
    }
}

fn check_local_path(p: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "'{p}' is not an absolute path: write e.g. /opt/ml/checkpoints"
        ))
    }
}

fn parse_compression(s: &str) -> Result<OutputCompression, String> {
    match s {
        "GZIP" | "Gzip" | "gzip" => Ok(OutputCompression::Gzip),
        "NONE" | "None" | "none" => Ok(OutputCompression::None),
        other => Err(format!("unknown value '{other}': use GZIP or NONE")),
    }
}

/// `chute-YYYYMMDD-HHMMSS` (UTC), a valid job name.
pub fn generated_job_name(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "chute-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply_json(req: Value, flags: &JobFlags) -> Result<JobConfig, String> {
        let mut job = JobConfig::default();
        let obj = req.as_object().unwrap().clone();
        apply(
            &mut job,
            Some(("--input-config r.json", &obj)),
            flags,
            Path::new("/opt/ml"),
        )
        .map(|_| job)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_request() {
        let job = apply_json(
            json!({
                "TrainingJobName": "my-job-1",
                "RoleArn": "arn:aws:iam::1:role/x",
                "Tags": [],
                "HyperParameters": {"epochs": "10", "sagemaker_program": "\"train.py\""},
                "OutputDataConfig": {"S3OutputPath": "s3://b/out", "CompressionType": "NONE", "KmsKeyId": "k"},
                "CheckpointConfig": {"S3Uri": "s3://b/ckpt"},
                "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "Environment": {"FOO": "bar"}
            }),
            &JobFlags::default(),
        )
        .unwrap();
        assert_eq!(job.job_name, "my-job-1");
        assert!(!job.job_name_generated);
        assert_eq!(job.hyperparameters["epochs"], "10");
        assert_eq!(
            job.output,
            Some(OutputConfig {
                s3_output_path: "s3://b/out".into(),
                compression: OutputCompression::None
            })
        );
        assert_eq!(
            job.checkpoint,
            Some(CheckpointConfig {
                s3_uri: "s3://b/ckpt".into(),
                local_path: "/opt/ml/checkpoints".into()
            })
        );
        assert_eq!(job.instance_type.as_deref(), Some("ml.m5.xlarge"));
        assert_eq!(job.instance_count, Some(2));
        assert_eq!(job.max_runtime, Some(Duration::from_secs(3600)));
        assert_eq!(job.environment["FOO"], "bar");
    }

    #[test]
    fn flags_win_over_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let hp = dir.path().join("hp.json");
        std::fs::write(&hp, r#"{"lr": 0.1, "layers": [1, 2], "name": "x"}"#).unwrap();
        let flags = JobFlags {
            job_name: Some("other".into()),
            hyperparameters_file: Some(hp),
            hyperparameters: vec!["epochs=20".into(), "eq=a=b".into()],
            output_path: Some("s3://b/o2".into()),
            checkpoint: Some("s3://b/c2,local=/ckpt".into()),
            max_runtime: Some(5),
        };
        let job = apply_json(
            json!({"TrainingJobName": "j", "HyperParameters": {"epochs": "10"},
                   "OutputDataConfig": {"S3OutputPath": "s3://b/out", "CompressionType": "NONE"}}),
            &flags,
        )
        .unwrap();
        assert_eq!(job.job_name, "other");
        let hps: Vec<(&str, &str)> = job
            .hyperparameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            hps,
            [
                ("epochs", "20"),
                ("eq", "a=b"),
                ("layers", "[1,2]"),
                ("lr", "0.1"),
                ("name", "x")
            ]
        );
        let out = job.output.unwrap();
        assert_eq!(out.s3_output_path, "s3://b/o2");
        assert_eq!(out.compression, OutputCompression::None);
        assert_eq!(job.checkpoint.unwrap().local_path, PathBuf::from("/ckpt"));
        assert_eq!(job.max_runtime, Some(Duration::from_secs(5)));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"TrainingJobName": "bad_name"}), "--input-config r.json: TrainingJobName: 'bad_name' is not a valid job name"),
            (json!({"HyperParameters": {"epochs": 10}}), "--input-config r.json: HyperParameters: 'epochs' is 10: every value must be a string"),
            (json!({"OutputDataConfig": {}}), "--input-config r.json: OutputDataConfig.S3OutputPath: missing"),
            (json!({"OutputDataConfig": {"S3OutputPath": "https://x"}}), "--input-config r.json: OutputDataConfig.S3OutputPath: 'https://x' is not an s3:// URI"),
            (json!({"OutputDataConfig": {"S3OutputPath": "s3://b", "CompressionType": "ZIP"}}), "OutputDataConfig.CompressionType: unknown value 'ZIP'"),
            (json!({"CheckpointConfig": {"S3Uri": "s3://b/c", "LocalPath": "rel"}}), "CheckpointConfig.LocalPath: 'rel' is not an absolute path"),
            (json!({"ResourceConfig": {"InstanceCount": 0}}), "ResourceConfig.InstanceCount: 0 is not a whole number"),
            (json!({"StoppingCondition": {"MaxRuntimeInSeconds": -1}}), "StoppingCondition.MaxRuntimeInSeconds: -1 is not"),
            (json!({"Environment": {"A=B": "x"}}), "Environment.A=B: 'A=B' is not a valid variable name"),
        ];
        for (req, want) in cases {
            let e = apply_json(req.clone(), &JobFlags::default()).unwrap_err();
            assert!(e.contains(want), "{req}\n got: {e}\nwant: {want}");
        }
        let flag_cases = [
            (
                JobFlags {
                    hyperparameters: vec!["x".into()],
                    ..Default::default()
                },
                "--hp 'x': expected KEY=VALUE",
            ),
            (
                JobFlags {
                    checkpoint: Some("s3://b/c,remote=x".into()),
                    ..Default::default()
                },
                "--checkpoint 's3://b/c,remote=x': 'remote=x' is not understood",
            ),
            (
                JobFlags {
                    output_path: Some("/local".into()),
                    ..Default::default()
                },
                "--output-path '/local': '/local' is not an s3:// URI",
            ),
            (
                JobFlags {
                    max_runtime: Some(0),
                    ..Default::default()
                },
                "--max-runtime 0",
            ),
            (
                JobFlags {
                    job_name: Some("-x".into()),
                    ..Default::default()
                },
                "--job-name '-x'",
            ),
        ];
        for (flags, want) in flag_cases {
            let e = apply_json(json!({}), &flags).unwrap_err();
            assert!(e.starts_with(want), "got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn generated_names_are_valid_job_names() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_102_026); // 2026-12-01T05:13:46Z
        assert_eq!(generated_job_name(t), "chute-20261201-051346");
        check_job_name(&generated_job_name(SystemTime::now())).unwrap();
        let job = apply_json(json!({}), &JobFlags::default()).unwrap();
        assert!(job.job_name_generated && job.job_name.starts_with("chute-"));
    }
}
