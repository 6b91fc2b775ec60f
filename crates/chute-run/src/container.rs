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

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chute_plan::Hosts;
use serde_json::{Map, Value};

use crate::config::ChannelSpec;

/// Where things live under `--input-dir`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<input-dir>`, absolute.
    pub input_dir: PathBuf,
    /// `<input-dir>/data`.
    pub data_dir: PathBuf,
    /// `<input-dir>/config`.
    pub config_dir: PathBuf,
}

impl Layout {
    /// The layout under `input_dir`, made absolute against the current directory
    /// (the command may change directory; the paths it is given must not move).
    pub fn new(input_dir: &Path) -> std::io::Result<Layout> {
        let input_dir = std::path::absolute(input_dir)?;
        Ok(Layout {
            data_dir: input_dir.join("data"),
            config_dir: input_dir.join("config"),
            input_dir,
        })
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

/// `resourceconfig.json` as SageMaker writes it, for the hosts found.
pub fn resource_config(hosts: &Hosts) -> Value {
    let mut sorted = hosts.hosts.clone();
    sorted.sort();
    let mut out = Map::new();
    out.insert("current_host".into(), hosts.current.clone().into());
    out.insert(
        "hosts".into(),
        Value::Array(sorted.into_iter().map(Value::String).collect()),
    );
    out.insert("network_interface_name".into(), "eth0".into());
    Value::Object(out)
}

/// The `SM_*` variables, in a stable order.
pub fn sm_env(
    layout: &Layout,
    channels: &[ChannelSpec],
    hosts: &Hosts,
    input_data_config: &Value,
) -> Vec<(String, String)> {
    let mut names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let mut sorted_hosts = hosts.hosts.clone();
    sorted_hosts.sort();
    let mut env = vec![
        (
            "SM_CHANNELS".to_owned(),
            toolkit_json(&Value::Array(
                names
                    .iter()
                    .map(|n| Value::String((*n).to_owned()))
                    .collect(),
            )),
        ),
        (
            "SM_INPUT_DATA_CONFIG".to_owned(),
            toolkit_json(input_data_config),
        ),
        (
            "SM_HOSTS".to_owned(),
            toolkit_json(&Value::Array(
                sorted_hosts.into_iter().map(Value::String).collect(),
            )),
        ),
        ("SM_CURRENT_HOST".to_owned(), hosts.current.clone()),
        (
            "SM_INPUT_DIR".to_owned(),
            layout.input_dir.to_string_lossy().into_owned(),
        ),
        (
            "SM_INPUT_CONFIG_DIR".to_owned(),
            layout.config_dir.to_string_lossy().into_owned(),
        ),
    ];
    for name in names {
        env.push((
            format!("SM_CHANNEL_{}", name.to_ascii_uppercase()),
            layout.channel_dir(name).to_string_lossy().into_owned(),
        ));
    }
    env
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
        Value::String(s) => write_str(out, s),
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
                write_str(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Writes `contents` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees half a file under the final name.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.chute-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
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
        assert_eq!(
            toolkit_json(&resource_config(&hosts)),
            r#"{"current_host":"algo-2","hosts":["algo-1","algo-2"],"network_interface_name":"eth0"}"#
        );
        let layout = Layout::new(Path::new("/opt/ml/input")).unwrap();
        let env = sm_env(&layout, &channels, &hosts, &idc);
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
}
