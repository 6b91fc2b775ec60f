//! SageMaker manifest files: the object list of a channel given explicitly instead of
//! by listing a prefix.
//!
//! - `ManifestFile`: a JSON array whose entry 0 is `{"prefix": "s3://bucket/prefix/"}`
//!   and whose other entries are keys relative to that prefix. An object's full key
//!   is the prefix followed by the entry (plain concatenation, as SageMaker does); its
//!   relative path under the channel root is the entry itself.
//! - `AugmentedManifestFile`: JSON Lines, one object per line; the channel's
//!   `AttributeNames` select fields in order. An attribute whose name ends in `-ref`
//!   holds an `s3://bucket/key` URL to an object; the others are inline values.
//!
//! Manifests are written by people, so errors point at the entry or line at fault.
//! An entry that would escape the prefix is an error rather than a skipped key: it
//! is a mistake in a file the user controls, not an accident of a bucket's contents.
//! Entries that are safe but cannot be materialised (a `.` segment, an over-long
//! name) pass through and are skipped by the plan like listed keys.

use serde_json::Value;

use crate::uri::{S3Url, SourceUri, UriError};

/// A parsed `ManifestFile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Bucket of the prefix.
    pub bucket: String,
    /// The key prefix, exactly as written after the bucket.
    pub prefix: String,
    /// The entries, in file order.
    pub entries: Vec<ManifestEntry>,
}

/// One object named by a `ManifestFile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The full key: prefix followed by `rel`.
    pub key: String,
    /// The entry as written: the key relative to the prefix, and the object's
    /// relative path in the channel.
    pub rel: String,
}

/// One line of an `AugmentedManifestFile`, restricted to the requested attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AugmentedRecord {
    /// Line number in the file, from 1.
    pub line: usize,
    /// The requested attributes, in `AttributeNames` order.
    pub fields: Vec<AugmentedField>,
}

/// One attribute of an augmented-manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AugmentedField {
    /// A `-ref` attribute: an object to fetch.
    Ref {
        /// The attribute name.
        attribute: String,
        /// The object.
        url: S3Url,
    },
    /// Any other attribute: its value, inline.
    Value {
        /// The attribute name.
        attribute: String,
        /// The value as compact JSON (object keys sorted).
        json: String,
    },
}

impl AugmentedField {
    /// The attribute name.
    pub fn attribute(&self) -> &str {
        match self {
            AugmentedField::Ref { attribute, .. } | AugmentedField::Value { attribute, .. } => {
                attribute
            }
        }
    }
}

/// What is wrong with a manifest; every message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file is not JSON.
    #[error("manifest is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// The manifest file is JSON but not an array.
    #[error(
        "manifest must be a JSON array [{{\"prefix\": \"s3://bucket/prefix/\"}}, \"key\", ...], \
         found {found}"
    )]
    NotAnArray {
        /// The JSON type found.
        found: &'static str,
    },
    /// Entry 0 is absent or not a prefix object.
    #[error("entry 0 must be {{\"prefix\": \"s3://bucket/prefix/\"}}, found {found}")]
    MissingPrefix {
        /// What entry 0 is instead.
        found: String,
    },
    /// Entry 0's prefix is not an S3 URI.
    #[error("entry 0: invalid prefix: {0}")]
    InvalidPrefix(UriError),
    /// An entry after 0 is not a string.
    #[error("entry {index}: expected a string key, found {found}")]
    NotAString {
        /// Position in the array.
        index: usize,
        /// The JSON type found.
        found: &'static str,
    },
    /// An entry is the empty string.
    #[error("entry {index} (\"\"): the key is empty; remove the entry")]
    EmptyEntry {
        /// Position in the array.
        index: usize,
    },
    /// An entry starts with `/`, or has an empty or `..` segment.
    #[error("entry {index} ({entry:?}): key escapes the manifest prefix")]
    EscapesPrefix {
        /// Position in the array.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// No `AttributeNames` for an augmented manifest.
    #[error(
        "an AugmentedManifestFile channel needs AttributeNames, e.g. \
         [\"source-ref\", \"class\"]; none were given"
    )]
    NoAttributeNames,
    /// A line of an augmented manifest is not JSON.
    #[error("line {line}: not valid JSON (column {column}): {message}")]
    LineJson {
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A line of an augmented manifest is JSON but not an object.
    #[error("line {line}: expected a JSON object, found {found}")]
    LineNotAnObject {
        /// Line, from 1.
        line: usize,
        /// The JSON type found.
        found: &'static str,
    },
    /// A requested attribute is absent from a line.
    #[error("line {line}: attribute '{attribute}' is missing")]
    MissingAttribute {
        /// Line, from 1.
        line: usize,
        /// The attribute.
        attribute: String,
    },
    /// A `-ref` attribute is not an `s3://bucket/key` string.
    #[error("line {line}: attribute '{attribute}' must be an s3://bucket/key string, {problem}")]
    BadRef {
        /// Line, from 1.
        line: usize,
        /// The attribute.
        attribute: String,
        /// What was found instead.
        problem: String,
    },
}

/// The JSON type of a value, for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// serde_json puts " at line L column C" at the end of its messages; the position is
/// reported separately, so it is cut from the text.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// Editors on some platforms start UTF-8 files with a byte-order mark, which is not
/// JSON; it carries no meaning, so it is dropped.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Parses a `ManifestFile`.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let value: Value =
        serde_json::from_slice(strip_bom(bytes)).map_err(|e| ManifestError::Json {
            line: e.line(),
            column: e.column(),
            message: json_message(&e),
        })?;
    let Value::Array(items) = value else {
        return Err(ManifestError::NotAnArray {
            found: json_type(&value),
        });
    };
    let mut items = items.into_iter();
    let (bucket, prefix) = parse_prefix_entry(items.next())?;

    let mut entries = Vec::with_capacity(items.len());
    for (index, item) in (1..).zip(items) {
        let Value::String(rel) = item else {
            return Err(ManifestError::NotAString {
                index,
                found: json_type(&item),
            });
        };
        check_entry(index, &rel)?;
        entries.push(ManifestEntry {
            key: format!("{prefix}{rel}"),
            rel,
        });
    }
    Ok(Manifest {
        bucket,
        prefix,
        entries,
    })
}

fn parse_prefix_entry(first: Option<Value>) -> Result<(String, String), ManifestError> {
    let missing = |found: String| Err(ManifestError::MissingPrefix { found });
    let Some(first) = first else {
        return missing("an empty array".to_owned());
    };
    let Value::Object(map) = &first else {
        return missing(format!("a {}", json_type(&first)));
    };
    let Some(prefix) = map.get("prefix") else {
        return missing("an object without \"prefix\"".to_owned());
    };
    let Value::String(prefix) = prefix else {
        return missing(format!("a \"prefix\" that is a {}", json_type(prefix)));
    };
    match SourceUri::parse(prefix) {
        Ok(SourceUri::S3 { bucket, prefix }) => Ok((bucket, prefix)),
        Ok(SourceUri::Local { .. }) => {
            Err(ManifestError::InvalidPrefix(UriError::UnsupportedScheme {
                input: prefix.clone(),
                scheme: "file".to_owned(),
                hint: "a manifest prefix must be s3://bucket/prefix/".to_owned(),
            }))
        }
        Err(e) => Err(ManifestError::InvalidPrefix(e)),
    }
}

fn check_entry(index: usize, rel: &str) -> Result<(), ManifestError> {
    if rel.is_empty() {
        return Err(ManifestError::EmptyEntry { index });
    }
    let escapes = || ManifestError::EscapesPrefix {
        index,
        entry: rel.to_owned(),
    };
    if rel.starts_with('/') {
        return Err(escapes());
    }
    let body = rel.strip_suffix('/').unwrap_or(rel);
    if body
        .split('/')
        .any(|segment| segment.is_empty() || segment == "..")
    {
        return Err(escapes());
    }
    Ok(())
}

/// Parses an `AugmentedManifestFile`, keeping the attributes in `attribute_names`,
/// in that order. Blank lines are ignored; line numbers count them.
pub fn parse_augmented_manifest(
    bytes: &[u8],
    attribute_names: &[String],
) -> Result<Vec<AugmentedRecord>, ManifestError> {
    if attribute_names.is_empty() {
        return Err(ManifestError::NoAttributeNames);
    }
    let mut records = Vec::new();
    for (line, text) in (1..).zip(strip_bom(bytes).split(|&b| b == b'\n')) {
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = serde_json::from_slice(text).map_err(|e| ManifestError::LineJson {
            line,
            column: e.column(),
            message: json_message(&e),
        })?;
        let Value::Object(map) = value else {
            return Err(ManifestError::LineNotAnObject {
                line,
                found: json_type(&value),
            });
        };
        let mut fields = Vec::with_capacity(attribute_names.len());
        for attribute in attribute_names {
            let Some(value) = map.get(attribute) else {
                return Err(ManifestError::MissingAttribute {
                    line,
                    attribute: attribute.clone(),
                });
            };
            fields.push(field(line, attribute, value)?);
        }
        records.push(AugmentedRecord { line, fields });
    }
    Ok(records)
}

fn field(line: usize, attribute: &str, value: &Value) -> Result<AugmentedField, ManifestError> {
    if !attribute.ends_with("-ref") {
        return Ok(AugmentedField::Value {
            attribute: attribute.to_owned(),
            json: value.to_string(),
        });
    }
    let bad = |problem: String| ManifestError::BadRef {
        line,
        attribute: attribute.to_owned(),
        problem,
    };
    let Value::String(url) = value else {
        return Err(bad(format!("found {}", json_type(value))));
    };
    let url = S3Url::parse(url).map_err(|e| bad(format!("found {url:?} ({e})")))?;
    Ok(AugmentedField::Ref {
        attribute: attribute.to_owned(),
        url,
    })
}

/// The objects referenced by `-ref` attributes, in record order then attribute
/// order, for File and FastFile modes.
///
/// Such an object appears in the channel at its full key (the bucket left out) as
/// its relative path: augmented manifests carry no common prefix to strip, and the
/// last segment alone would make `a/img.jpg` and `b/img.jpg` collide. Objects from
/// different buckets with the same key do collide; the plan keeps the first.
pub fn augmented_objects(records: &[AugmentedRecord]) -> Vec<S3Url> {
    records
        .iter()
        .flat_map(|r| &r.fields)
        .filter_map(|f| match f {
            AugmentedField::Ref { url, .. } => Some(url.clone()),
            AugmentedField::Value { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &str) -> String {
        parse_manifest(bytes.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn manifest_file() {
        let m = parse_manifest(
            br#"[{"prefix": "s3://bucket/some/prefix/"},
                 "relative/path/to/custdata-1",
                 "custdata-2",
                 "dir/"]"#,
        )
        .unwrap();
        assert_eq!(m.bucket, "bucket");
        assert_eq!(m.prefix, "some/prefix/");
        assert_eq!(
            m.entries,
            [
                ManifestEntry {
                    key: "some/prefix/relative/path/to/custdata-1".into(),
                    rel: "relative/path/to/custdata-1".into()
                },
                ManifestEntry {
                    key: "some/prefix/custdata-2".into(),
                    rel: "custdata-2".into()
                },
                ManifestEntry {
                    key: "some/prefix/dir/".into(),
                    rel: "dir/".into()
                },
            ]
        );
    }

    #[test]
    fn manifest_prefix_forms() {
        // Concatenation, as SageMaker does, even without a trailing '/'.
        let m = parse_manifest(br#"[{"prefix": "s3://b/img"}, "1.jpg"]"#).unwrap();
        assert_eq!(m.entries[0].key, "img1.jpg");
        assert_eq!(m.entries[0].rel, "1.jpg");
        // Whole bucket; no entries is an empty channel, not an error.
        let m = parse_manifest("\u{feff}[{\"prefix\": \"s3://b\"}]".as_bytes()).unwrap();
        assert_eq!((m.prefix.as_str(), m.entries.len()), ("", 0));
        // Safe-but-odd entries pass through for the plan to skip.
        let m = parse_manifest(br#"[{"prefix": "s3://b/"}, "a/./b"]"#).unwrap();
        assert_eq!(m.entries[0].rel, "a/./b");
    }

    #[test]
    fn manifest_errors() {
        let e = err("[{\"prefix\": \"s3://b/\"},\n \"a\" \"b\"]");
        assert!(
            e.starts_with("manifest is not valid JSON (line 2, column 6): expected"),
            "{e}"
        );
        assert_eq!(
            err(r#"{"prefix": "s3://b/"}"#),
            "manifest must be a JSON array [{\"prefix\": \"s3://bucket/prefix/\"}, \"key\", ...], found object"
        );
        assert_eq!(
            err("[]"),
            "entry 0 must be {\"prefix\": \"s3://bucket/prefix/\"}, found an empty array"
        );
        assert_eq!(
            err(r#"["a", "b"]"#),
            "entry 0 must be {\"prefix\": \"s3://bucket/prefix/\"}, found a string"
        );
        assert_eq!(
            err(r#"[{"Prefix": "s3://b/"}]"#),
            "entry 0 must be {\"prefix\": \"s3://bucket/prefix/\"}, found an object without \"prefix\""
        );
        assert_eq!(
            err(r#"[{"prefix": 3}]"#),
            "entry 0 must be {\"prefix\": \"s3://bucket/prefix/\"}, found a \"prefix\" that is a number"
        );
        let e = err(r#"[{"prefix": "https://b/x/"}]"#);
        assert!(
            e.starts_with("entry 0: invalid prefix: 'https://b/x/'"),
            "{e}"
        );
        let e = err(r#"[{"prefix": "file:///x/"}]"#);
        assert!(e.contains("s3://bucket/prefix/"), "{e}");

        let mut many = String::from(r#"[{"prefix": "s3://b/"}"#);
        for i in 1..17 {
            many.push_str(&format!(", \"k{i}\""));
        }
        many.push_str(", 5]");
        assert_eq!(err(&many), "entry 17: expected a string key, found number");

        assert_eq!(
            err(r#"[{"prefix": "s3://b/"}, "a", "b", "c", "d", "../x"]"#),
            "entry 5 (\"../x\"): key escapes the manifest prefix"
        );
        for bad in ["/abs", "a//b", "a/../../b", "..", "/"] {
            let e = err(&format!(r#"[{{"prefix": "s3://b/"}}, "{bad}"]"#));
            assert_eq!(
                e,
                format!("entry 1 ({bad:?}): key escapes the manifest prefix")
            );
        }
        assert_eq!(
            err(r#"[{"prefix": "s3://b/"}, ""]"#),
            "entry 1 (\"\"): the key is empty; remove the entry"
        );
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn augmented_manifest() {
        let text = concat!(
            "{\"source-ref\": \"s3://b/img/1.jpg\", \"class\": 3, \"meta\": {\"z\": 1, \"a\": [true, null]}}\n",
            "\r\n",
            "{\"source-ref\": \"s3://c/img/2.jpg\", \"class\": \"dog\", \"extra\": 0}\r\n",
        );
        let records =
            parse_augmented_manifest(text.as_bytes(), &names(&["class", "source-ref"])).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 1);
        assert_eq!(records[1].line, 3);
        assert_eq!(
            records[0].fields,
            [
                AugmentedField::Value {
                    attribute: "class".into(),
                    json: "3".into()
                },
                AugmentedField::Ref {
                    attribute: "source-ref".into(),
                    url: S3Url::parse("s3://b/img/1.jpg").unwrap()
                },
            ]
        );
        assert_eq!(records[1].fields[0].attribute(), "class");
        assert_eq!(
            records[1].fields[0],
            AugmentedField::Value {
                attribute: "class".into(),
                json: "\"dog\"".into()
            }
        );
        let meta = parse_augmented_manifest(text.as_bytes(), &names(&["meta"])).unwrap_err();
        assert_eq!(meta.to_string(), "line 3: attribute 'meta' is missing");
        let only_first =
            parse_augmented_manifest(text.lines().next().unwrap().as_bytes(), &names(&["meta"]))
                .unwrap();
        assert_eq!(
            only_first[0].fields[0],
            AugmentedField::Value {
                attribute: "meta".into(),
                json: r#"{"a":[true,null],"z":1}"#.into()
            }
        );
        assert_eq!(
            augmented_objects(&records),
            [
                S3Url::parse("s3://b/img/1.jpg").unwrap(),
                S3Url::parse("s3://c/img/2.jpg").unwrap()
            ]
        );
        assert!(parse_augmented_manifest(b"\n\n", &names(&["a"]))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn augmented_manifest_errors() {
        let parse = |text: &str, attrs: &[&str]| {
            parse_augmented_manifest(text.as_bytes(), &names(attrs))
                .unwrap_err()
                .to_string()
        };
        assert!(parse("{}", &[]).contains("needs AttributeNames"));
        let mut text = String::new();
        for _ in 0..11 {
            text.push_str("{\"source-ref\": \"s3://b/k\"}\n");
        }
        text.push_str("{\"class\": 1}\n");
        assert_eq!(
            parse(&text, &["source-ref"]),
            "line 12: attribute 'source-ref' is missing"
        );
        let e = parse("{\"a\": 1}\n{\"a\": 1,}\n", &["a"]);
        assert!(e.starts_with("line 2: not valid JSON (column 9):"), "{e}");
        assert_eq!(
            parse("[1]", &["a"]),
            "line 1: expected a JSON object, found array"
        );
        assert_eq!(
            parse("{\"image-ref\": 7}", &["image-ref"]),
            "line 1: attribute 'image-ref' must be an s3://bucket/key string, found number"
        );
        let e = parse("{\"image-ref\": \"https://x/y\"}", &["image-ref"]);
        assert!(
            e.starts_with(
                "line 1: attribute 'image-ref' must be an s3://bucket/key string, found \"https://x/y\""
            ),
            "{e}"
        );
        let e = parse("{\"image-ref\": \"s3://b/\"}", &["image-ref"]);
        assert!(e.contains("names no object"), "{e}");
    }
}
