//! What the training command sees besides its data: the container-side config
//! files under `<input-dir>/config` and the `SM_*` environment variables, shaped
//! exactly as SageMaker and its training toolkit shape them, so that an image
//! built for SageMaker runs unchanged.
//!
//! The toolkit renders every non-string value with
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)` and
//! strings as they are; [`toolkit_json`] reproduces that byte for byte (serde_json
//! alone would keep non-ASCII characters raw, and key order depends on its
//! features), so a script comparing `SM_INPUT_DATA_CONFIG` with what the toolkit
//! would have set sees the same string.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chute_plan::Hosts;
use serde_json::{Map, Value};

use crate::config::ChannelSpec;

/// Where things live: `--base-dir` (SageMaker's `/opt/ml`) and `--input-dir`
/// (`<base-dir>/input` unless given).
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<base-dir>`, absolute.
    pub base_dir: PathBuf,
    /// `<input-dir>`, absolute.
    pub input_dir: PathBuf,
    /// `<input-dir>/data`.
    pub data_dir: PathBuf,
    /// `<input-dir>/config`.
    pub config_dir: PathBuf,
    /// `<base-dir>/code`: the toolkit's default `SM_MODULE_DIR`.
    pub code_dir: PathBuf,
    /// `<base-dir>/model`: uploaded as the model after a successful command.
    pub model_dir: PathBuf,
    /// `<base-dir>/output`: `failure` and `success` go here.
    pub output_dir: PathBuf,
    /// `<base-dir>/output/data`: uploaded as `output.tar.gz`.
    pub output_data_dir: PathBuf,
    /// `<base-dir>/output/intermediate`.
    pub output_intermediate_dir: PathBuf,
}

impl Layout {
    /// The layout with `input_dir` as given and the base directory its parent
    /// (or itself when it has none), made absolute against the current directory
    /// (the command may change directory; the paths it is given must not move).
    pub fn new(input_dir: &Path) -> std::io::Result<Layout> {
        let input_dir = std::path::absolute(input_dir)?;
        let base = input_dir.parent().unwrap_or(&input_dir).to_owned();
        Layout::under(&base, Some(&input_dir))
    }

    /// The layout under `base_dir`, with `input_dir` (default `<base-dir>/input`).
    pub fn under(base_dir: &Path, input_dir: Option<&Path>) -> std::io::Result<Layout> {
        let base_dir = std::path::absolute(base_dir)?;
        let input_dir = match input_dir {
            Some(d) => std::path::absolute(d)?,
            None => base_dir.join("input"),
        };
        let output_dir = base_dir.join("output");
        Ok(Layout {
            data_dir: input_dir.join("data"),
            config_dir: input_dir.join("config"),
            input_dir,
            code_dir: base_dir.join("code"),
            model_dir: base_dir.join("model"),
            output_data_dir: output_dir.join("data"),
            output_intermediate_dir: output_dir.join("intermediate"),
            output_dir,
            base_dir,
        })
    }

    /// The directories that exist before the command starts, in creation order.
    pub fn directories(&self) -> [&Path; 7] {
        [
            &self.base_dir,
            &self.input_dir,
            &self.config_dir,
            &self.data_dir,
            &self.model_dir,
            &self.output_data_dir,
            &self.output_intermediate_dir,
        ]
    }

    /// `<input-dir>/config/hyperparameters.json`.
    pub fn hyperparameters_file(&self) -> PathBuf {
        self.config_dir.join("hyperparameters.json")
    }

    /// `<input-dir>/data/<channel>`.
    pub fn channel_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// `<input-dir>/config/inputdataconfig.json`.
    pub fn input_data_config_file(&self) -> PathBuf {
        self.config_dir.join("inputdataconfig.json")
    }

    /// `<input-dir>/config/resourceconfig.json`.
    pub fn resource_config_file(&self) -> PathBuf {
        self.config_dir.join("resourceconfig.json")
    }
}

/// The container-side `inputdataconfig.json`:
/// `{"<channel>": {"TrainingInputMode", "S3DistributionType", "RecordWrapperType",
/// "ContentType" (only when given)}}`.
pub fn input_data_config(channels: &[ChannelSpec]) -> Value {
    let mut out = Map::new();
    for c in channels {
        let mut entry = Map::new();
        entry.insert("TrainingInputMode".into(), c.mode.as_str().into());
        entry.insert(
            "S3DistributionType".into(),
            c.distribution().as_str().into(),
        );
        entry.insert("RecordWrapperType".into(), c.record_wrapper.as_str().into());
        if let Some(ct) = &c.content_type {
            entry.insert("ContentType".into(), ct.clone().into());
        }
        out.insert(c.name.clone(), Value::Object(entry));
    }
    Value::Object(out)
}

/// `resourceconfig.json` as SageMaker writes it for a one-group job, for the
/// hosts found, plus [`crate::hosts::CHUTE_MARKER`] naming this run, so that a
/// later run never takes the file for the user's.
pub fn resource_config(hosts: &Hosts, instance_type: &str, interface: &str) -> Value {
    let mut sorted = hosts.hosts.clone();
    sorted.sort();
    let sorted = Value::Array(sorted.into_iter().map(Value::String).collect());
    let mut group = Map::new();
    group.insert(
        "instance_group_name".into(),
        crate::env::DEFAULT_GROUP.into(),
    );
    group.insert("instance_type".into(), instance_type.into());
    group.insert("hosts".into(), sorted.clone());
    let mut out = Map::new();
    out.insert("current_host".into(), hosts.current.clone().into());
    out.insert("current_instance_type".into(), instance_type.into());
    out.insert(
        "current_group_name".into(),
        crate::env::DEFAULT_GROUP.into(),
    );
    out.insert("hosts".into(), sorted);
    out.insert(
        "instance_groups".into(),
        Value::Array(vec![Value::Object(group)]),
    );
    out.insert("network_interface_name".into(), interface.into());
    out.insert(
        crate::hosts::CHUTE_MARKER.into(),
        crate::hosts::run_id().into(),
    );
    Value::Object(out)
}

/// The interface of the default route (`/proc/net/route`), the one peers reach
/// this host through; `eth0`, SageMaker's name, when there is none.
pub fn network_interface() -> String {
    std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| default_route_interface(&table))
        .unwrap_or_else(|| "eth0".into())
}

fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let iface = cols.next()?;
        (cols.next()? == "00000000").then(|| iface.to_owned())
    })
}

/// `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.
pub fn toolkit_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => crate::pyjson::dump_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Python sorts str keys by code point, which for UTF-8 is byte order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                crate::pyjson::dump_str(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees half a file under the final name.
/// Nothing is written through a symbolic link: the directory is opened without
/// following one, the temporary file is created exclusively in it, and the rename
/// replaces a link at `path` rather than writing where it points.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use nix::fcntl::{openat, renameat, OFlag};
    use nix::sys::stat::Mode;

    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let tmp = format!(
        ".{}.chute-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    let dirfd = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let result = (|| {
        let fd = openat(
            &dirfd,
            tmp.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(contents)?;
        f.sync_all()?;
        renameat(&dirfd, tmp.as_str(), &dirfd, name)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(
            &dirfd,
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_channel_json;
    use crate::config::InputMode;
    use chute_plan::HostSource;
    use serde_json::json;

    #[test]
    fn toolkit_json_matches_python() {
        // Expected strings are what CPython's json.dumps prints for these values.
        let v = json!({"b": [1, "x"], "a": {"z": null, "y": true}, "é": "ü\u{1F600}\"\\\n\u{7f}"});
        assert_eq!(
            toolkit_json(&v),
            r#"{"a":{"y":true,"z":null},"b":[1,"x"],"\u00e9":"\u00fc\ud83d\ude00\"\\\n\u007f"}"#
        );
    }

    #[test]
    fn files_and_env() {
        let ch = |v: Value| parse_channel_json(&v, InputMode::File).unwrap();
        let channels = vec![
            ch(json!({"ChannelName": "train", "InputMode": "FastFile",
                "DataSource": {"S3DataSource": {"S3Uri": "s3://b/p", "S3DataDistributionType": "ShardedByS3Key"}}})),
            ch(json!({"ChannelName": "my-val.1", "ContentType": "text/csv",
                "DataSource": {"FileSystemDataSource": {"DirectoryPath": "/"}}})),
        ];
        let idc = input_data_config(&channels);
        assert_eq!(
            toolkit_json(&idc),
            r#"{"my-val.1":{"ContentType":"text/csv","RecordWrapperType":"None","S3DistributionType":"FullyReplicated","TrainingInputMode":"File"},"train":{"RecordWrapperType":"None","S3DistributionType":"ShardedByS3Key","TrainingInputMode":"FastFile"}}"#
        );
        let hosts = Hosts {
            hosts: vec!["algo-2".into(), "algo-1".into()],
            current: "algo-2".into(),
            index: 1,
            source: HostSource::ResourceConfig,
        };
        let rc = toolkit_json(&resource_config(&hosts, "ml.m5.large", "eth0"));
        let want = format!(
            r#"{{"chute_run_id":"{}","current_group_name":"homogeneousCluster","current_host":"algo-2","current_instance_type":"ml.m5.large","hosts":["algo-1","algo-2"],"instance_groups":[{{"hosts":["algo-1","algo-2"],"instance_group_name":"homogeneousCluster","instance_type":"ml.m5.large"}}],"network_interface_name":"eth0"}}"#,
            crate::hosts::run_id()
        );
        assert_eq!(rc, want);
        assert_eq!(
            default_route_interface(
                "Iface\tDestination\tGateway\nlo\t0000007F\t0\nens5\t00000000\t0101A8C0\n"
            )
            .as_deref(),
            Some("ens5")
        );
        let layout = Layout::new(Path::new("/opt/ml/input")).unwrap();
        let rc_value = crate::pyjson::loads(&rc).unwrap();
        let idc_value = crate::pyjson::loads(&toolkit_json(&idc)).unwrap();
        let env = crate::env::toolkit_env(&crate::env::Inputs {
            layout: &layout,
            resource_config: &rc_value,
            input_data_config: &idc_value,
            hyperparameters: &Default::default(),
            env: &|_| None,
            devices: crate::env::Devices {
                cpus: 1,
                gpus: 0,
                neuron_cores: 0,
            },
        });
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("SM_CHANNELS"), r#"["my-val.1","train"]"#);
        assert_eq!(get("SM_CHANNEL_MY-VAL.1"), "/opt/ml/input/data/my-val.1");
        assert_eq!(get("SM_CHANNEL_TRAIN"), "/opt/ml/input/data/train");
        assert_eq!(get("SM_HOSTS"), r#"["algo-1","algo-2"]"#);
        assert_eq!(get("SM_CURRENT_HOST"), "algo-2");
        assert_eq!(get("SM_INPUT_DIR"), "/opt/ml/input");
        assert_eq!(get("SM_INPUT_CONFIG_DIR"), "/opt/ml/input/config");
        assert_eq!(get("SM_INPUT_DATA_CONFIG"), toolkit_json(&idc));
    }

    #[test]
    fn atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"[1]").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"[1]");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        // A link planted at the final name is replaced, not written through.
        let p = dir.path().join("x.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(!std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        // A link planted at the temporary name makes the write fail, untouched.
        let q = dir.path().join("y.json");
        let tmp = dir
            .path()
            .join(format!(".y.json.chute-{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_atomic(&q, b"{}").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // A directory that is a link is refused.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        assert!(write_atomic(&linked.join("z.json"), b"{}").is_err());
        assert!(!real.join("z.json").exists());
    }
}
