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
//! Both are read as streams ([`ManifestParser`], [`AugmentedParser`]): bytes go
//! in as they arrive, entries come out as soon as they are complete, and only
//! the entry being read is held, never the whole file or a JSON tree of it. An
//! entry longer than [`MAX_MANIFEST_ENTRY`] (a `ManifestFile` entry is one key,
//! and S3 keys are at most 1,024 bytes) or a line longer than
//! [`MAX_AUGMENTED_LINE`] is an error, so memory per entry stays bounded
//! whatever the file holds.
//!
//! Manifests are written by people, so errors point at the entry or line at fault.
//! An entry that would escape the prefix is an error rather than a skipped key: it
//! is a mistake in a file the user controls, not an accident of a bucket's contents.
//! Entries that are safe but cannot be materialised (a `.` segment, an over-long
//! name) pass through and are skipped by the plan like listed keys.

use serde_json::Value;

use crate::uri::{S3Url, SourceUri, UriError};

/// Longest `ManifestFile` entry accepted, in bytes of JSON. An S3 key is at
/// most 1,024 bytes; the margin covers `\uXXXX` escapes and entry 0.
pub const MAX_MANIFEST_ENTRY: usize = 64 << 10;

/// Longest `AugmentedManifestFile` line accepted, in bytes. Lines carry labels
/// and metadata inline; a line this long is a file that is not JSON Lines.
pub const MAX_AUGMENTED_LINE: usize = 8 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

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
    /// A `ManifestFile` entry longer than [`MAX_MANIFEST_ENTRY`].
    #[error(
        "entry {index} is longer than {limit} bytes: a manifest entry is one S3 key \
         (at most 1024 bytes); is this a ManifestFile?"
    )]
    EntryTooLong {
        /// Position in the array.
        index: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// An augmented-manifest line longer than [`MAX_AUGMENTED_LINE`].
    #[error(
        "line {line} is longer than {limit} bytes: an AugmentedManifestFile has one \
         JSON object per line (JSON Lines); is this one?"
    )]
    LineTooLong {
        /// Line, from 1.
        line: usize,
        /// The limit, in bytes.
        limit: usize,
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

/// Editors on some platforms start UTF-8 files with a byte-order mark, which is
/// not JSON; it carries no meaning, so it is dropped. Holds back the first bytes
/// of a stream until it can tell.
#[derive(Debug, Default)]
struct BomSkipper {
    held: Vec<u8>,
    done: bool,
}

impl BomSkipper {
    /// The bytes to parse from `bytes`: all of them once the start is settled.
    fn pass<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.done {
            return bytes.into();
        }
        self.held.extend_from_slice(bytes);
        let n = self.held.len().min(BOM.len());
        if self.held[..n] != BOM[..n] {
            self.done = true;
            return std::mem::take(&mut self.held).into();
        }
        if self.held.len() < BOM.len() {
            return Vec::new().into();
        }
        self.done = true;
        let rest = self.held.split_off(BOM.len());
        self.held.clear();
        rest.into()
    }

    /// What is still held at the end of the stream (a file shorter than a BOM).
    fn rest(&mut self) -> Vec<u8> {
        self.done = true;
        std::mem::take(&mut self.held)
    }
}

/// Line and column (from 1, in bytes) of the next byte of a stream.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: usize,
    column: usize,
}

impl Position {
    fn start() -> Position {
        Position { line: 1, column: 1 }
    }

    fn advance(&mut self, b: u8) {
        if b == b'\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
    }

    /// The absolute position of serde_json's (line, column) inside a value
    /// that starts here.
    fn offset(self, line: usize, column: usize) -> Position {
        if line <= 1 {
            Position {
                line: self.line,
                column: self.column + column.saturating_sub(1),
            }
        } else {
            Position {
                line: self.line + line - 1,
                column,
            }
        }
    }
}

/// Where the parser is in the top-level array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before `[`.
    Start,
    /// After `[` or `,`: a value (or, right after `[`, `]`) comes next.
    BeforeValue,
    /// Inside a value.
    InValue,
    /// After a value: `,` or `]` comes next.
    AfterValue,
    /// After `]`: only whitespace may follow.
    Done,
}

/// Finds where each top-level value of a value string or container ends.
#[derive(Debug, Clone, Copy, Default)]
struct ValueScanner {
    /// Nesting depth of `[`/`{`; 0 for a scalar.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The value is a bare scalar (number, `true`, ...), ended by a delimiter.
    bare: bool,
}

impl ValueScanner {
    fn begin(first: u8) -> ValueScanner {
        let mut scan = ValueScanner::default();
        match first {
            b'"' => scan.in_string = true,
            b'[' | b'{' => scan.depth = 1,
            _ => scan.bare = true,
        }
        scan
    }

    /// Consumes the byte after the first; `true` once the value is complete
    /// with this byte. Bare scalars are complete *before* their delimiter,
    /// which the caller checks with [`ValueScanner::ends_bare`].
    fn step(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                return self.depth == 0;
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'[' | b'{' => self.depth += 1,
            b']' | b'}' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }

    fn ends_bare(b: u8) -> bool {
        matches!(b, b',' | b']' | b' ' | b'\t' | b'\r' | b'\n')
    }
}

/// A streaming parser of `ManifestFile`s: feed it the file's bytes in pieces
/// of any size; it hands out each entry once it is complete.
#[derive(Debug)]
pub struct ManifestParser {
    bom: BomSkipper,
    state: ArrayState,
    pos: Position,
    /// Bytes of the value being read, and where it started.
    value: Vec<u8>,
    value_at: Position,
    scan: ValueScanner,
    /// Position of the next value in the array.
    index: usize,
    /// Bucket and key prefix, from entry 0.
    prefix: Option<(String, String)>,
}

impl Default for ManifestParser {
    fn default() -> Self {
        ManifestParser::new()
    }
}

impl ManifestParser {
    /// A parser at the start of a file.
    pub fn new() -> ManifestParser {
        ManifestParser {
            bom: BomSkipper::default(),
            state: ArrayState::Start,
            pos: Position::start(),
            value: Vec::new(),
            value_at: Position::start(),
            scan: ValueScanner::default(),
            index: 0,
            prefix: None,
        }
    }

    /// The bucket of the manifest's prefix, once entry 0 has been read.
    pub fn bucket(&self) -> Option<&str> {
        self.prefix.as_ref().map(|(b, _)| b.as_str())
    }

    /// The key prefix as written after the bucket, once entry 0 has been read.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_ref().map(|(_, p)| p.as_str())
    }

    /// Parses the next bytes of the file, appending the entries they complete
    /// to `out`.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<ManifestEntry>,
    ) -> Result<(), ManifestError> {
        let bytes = self.bom.pass(bytes);
        for &b in bytes.iter() {
            self.byte(b, out)?;
            self.pos.advance(b);
        }
        Ok(())
    }

    /// Ends the file: an error unless the array was closed and had entry 0
    /// (after which [`ManifestParser::bucket`] and [`ManifestParser::prefix`]
    /// are known).
    pub fn finish(&mut self, out: &mut Vec<ManifestEntry>) -> Result<(), ManifestError> {
        let rest = self.bom.rest();
        for b in rest {
            self.byte(b, out)?;
            self.pos.advance(b);
        }
        if self.state == ArrayState::InValue && self.scan.bare {
            self.end_value(out)?;
            self.state = ArrayState::AfterValue;
        }
        if self.state != ArrayState::Done {
            let message = match self.state {
                ArrayState::Start => "EOF while parsing a value",
                _ => "EOF while parsing a list",
            };
            return Err(self.syntax(message));
        }
        if self.prefix.is_none() {
            return Err(ManifestError::MissingPrefix {
                found: "an empty array".to_owned(),
            });
        }
        Ok(())
    }

    fn syntax(&self, message: &str) -> ManifestError {
        ManifestError::Json {
            line: self.pos.line,
            column: self.pos.column,
            message: message.to_owned(),
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<ManifestEntry>) -> Result<(), ManifestError> {
        let space = matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        match self.state {
            ArrayState::Start if space => {}
            ArrayState::Start => {
                if b != b'[' {
                    return Err(match top_level_type(b) {
                        Some(found) => ManifestError::NotAnArray { found },
                        None => self.syntax("expected value"),
                    });
                }
                self.state = ArrayState::BeforeValue;
            }
            ArrayState::BeforeValue if space => {}
            ArrayState::BeforeValue if b == b']' => {
                if self.index > 0 {
                    return Err(self.syntax("trailing comma"));
                }
                self.state = ArrayState::Done;
            }
            ArrayState::BeforeValue => {
                self.value.clear();
                self.value.push(b);
                self.value_at = self.pos;
                self.scan = ValueScanner::begin(b);
                self.state = ArrayState::InValue;
            }
            ArrayState::InValue => {
                if self.scan.bare && ValueScanner::ends_bare(b) {
                    self.end_value(out)?;
                    self.state = ArrayState::AfterValue;
                    return self.byte(b, out);
                }
                self.value.push(b);
                if self.value.len() > MAX_MANIFEST_ENTRY {
                    return Err(ManifestError::EntryTooLong {
                        index: self.index,
                        limit: MAX_MANIFEST_ENTRY,
                    });
                }
                if !self.scan.bare && self.scan.step(b) {
                    self.end_value(out)?;
                    self.state = ArrayState::AfterValue;
                }
            }
            ArrayState::AfterValue if space => {}
            ArrayState::AfterValue => match b {
                b',' => self.state = ArrayState::BeforeValue,
                b']' => self.state = ArrayState::Done,
                _ => return Err(self.syntax("expected `,` or `]`")),
            },
            ArrayState::Done if space => {}
            ArrayState::Done => return Err(self.syntax("trailing characters")),
        }
        Ok(())
    }

    /// Parses the value just read as entry `index`.
    fn end_value(&mut self, out: &mut Vec<ManifestEntry>) -> Result<(), ManifestError> {
        let value: Value = serde_json::from_slice(&self.value).map_err(|e| {
            let at = self.value_at.offset(e.line(), e.column());
            ManifestError::Json {
                line: at.line,
                column: at.column,
                message: json_message(&e),
            }
        })?;
        self.value.clear();
        let index = self.index;
        self.index += 1;
        let Some((_, prefix)) = &self.prefix else {
            self.prefix = Some(parse_prefix_entry(Some(value))?);
            return Ok(());
        };
        let Value::String(rel) = value else {
            return Err(ManifestError::NotAString {
                index,
                found: json_type(&value),
            });
        };
        check_entry(index, &rel)?;
        out.push(ManifestEntry {
            key: format!("{prefix}{rel}"),
            rel,
        });
        Ok(())
    }
}

/// The JSON type a top-level value starting with `b` has, if it can be told.
fn top_level_type(b: u8) -> Option<&'static str> {
    match b {
        b'{' => Some("object"),
        b'"' => Some("string"),
        b'-' | b'0'..=b'9' => Some("number"),
        b't' | b'f' => Some("boolean"),
        b'n' => Some("null"),
        _ => None,
    }
}

/// Parses a whole `ManifestFile` held in memory (see [`ManifestParser`] for
/// files read as they arrive).
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let mut parser = ManifestParser::new();
    let mut entries = Vec::new();
    parser.feed(bytes, &mut entries)?;
    parser.finish(&mut entries)?;
    let (bucket, prefix) = parser.prefix.take().unwrap_or_default();
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

/// A streaming parser of `AugmentedManifestFile`s (JSON Lines): feed it the
/// file's bytes in pieces of any size; it hands out each record once its line
/// is complete. Blank lines are ignored; line numbers count them.
#[derive(Debug)]
pub struct AugmentedParser {
    attribute_names: Vec<String>,
    bom: BomSkipper,
    /// The line being read, without its newline.
    line: Vec<u8>,
    /// Its number, from 1.
    line_no: usize,
}

impl AugmentedParser {
    /// A parser keeping `attribute_names`, in that order; at least one.
    pub fn new(attribute_names: &[String]) -> Result<AugmentedParser, ManifestError> {
        if attribute_names.is_empty() {
            return Err(ManifestError::NoAttributeNames);
        }
        Ok(AugmentedParser {
            attribute_names: attribute_names.to_vec(),
            bom: BomSkipper::default(),
            line: Vec::new(),
            line_no: 1,
        })
    }

    /// Parses the next bytes of the file, appending the records they complete
    /// to `out`.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<AugmentedRecord>,
    ) -> Result<(), ManifestError> {
        let bytes = self.bom.pass(bytes);
        self.take(&bytes, out)
    }

    /// Ends the file, parsing a last line that has no newline.
    pub fn finish(&mut self, out: &mut Vec<AugmentedRecord>) -> Result<(), ManifestError> {
        let rest = self.bom.rest();
        self.take(&rest, out)?;
        self.end_line(out)
    }

    fn take(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<AugmentedRecord>,
    ) -> Result<(), ManifestError> {
        while !bytes.is_empty() {
            let (part, newline) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            if self.line.len() + part.len() > MAX_AUGMENTED_LINE {
                return Err(ManifestError::LineTooLong {
                    line: self.line_no,
                    limit: MAX_AUGMENTED_LINE,
                });
            }
            self.line.extend_from_slice(part);
            bytes = &bytes[part.len()..];
            if newline {
                bytes = &bytes[1..];
                self.end_line(out)?;
                self.line_no += 1;
            }
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<AugmentedRecord>) -> Result<(), ManifestError> {
        let text = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            out.push(parse_line(self.line_no, text, &self.attribute_names)?);
        }
        self.line.clear();
        // A long line's buffer is not kept for the short ones after it.
        if self.line.capacity() > 64 << 10 {
            self.line.shrink_to(64 << 10);
        }
        Ok(())
    }
}

/// Parses a whole `AugmentedManifestFile` held in memory (see
/// [`AugmentedParser`] for files read as they arrive), keeping the attributes
/// in `attribute_names`, in that order.
pub fn parse_augmented_manifest(
    bytes: &[u8],
    attribute_names: &[String],
) -> Result<Vec<AugmentedRecord>, ManifestError> {
    let mut parser = AugmentedParser::new(attribute_names)?;
    let mut records = Vec::new();
    parser.feed(bytes, &mut records)?;
    parser.finish(&mut records)?;
    Ok(records)
}

fn parse_line(
    line: usize,
    text: &[u8],
    attribute_names: &[String],
) -> Result<AugmentedRecord, ManifestError> {
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
    Ok(AugmentedRecord { line, fields })
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

    /// Feeds `bytes` in pieces split at `cut` (and then one byte at a time
    /// past it), as a network read would hand them over.
    fn feed_split(bytes: &[u8], cut: usize) -> Result<Manifest, ManifestError> {
        let mut parser = ManifestParser::new();
        let mut entries = Vec::new();
        let cut = cut.min(bytes.len());
        parser.feed(&bytes[..cut], &mut entries)?;
        for b in &bytes[cut..] {
            parser.feed(std::slice::from_ref(b), &mut entries)?;
        }
        parser.finish(&mut entries)?;
        Ok(Manifest {
            bucket: parser.bucket().unwrap_or_default().to_owned(),
            prefix: parser.prefix().unwrap_or_default().to_owned(),
            entries,
        })
    }

    #[test]
    fn manifest_streams_in_pieces_of_any_size() {
        let text = "\u{feff}[ {\"prefix\": \"s3://b/p/\", \"x\": [1, {\"]\": \"[\"}]},\n\
                    \"a\\\"b\", \"c\\\\\" ,\"d/\",\"\\u00e9\"\r\n]\n";
        let whole = parse_manifest(text.as_bytes()).unwrap();
        assert_eq!(whole.bucket, "b");
        assert_eq!(
            whole
                .entries
                .iter()
                .map(|e| e.rel.as_str())
                .collect::<Vec<_>>(),
            ["a\"b", "c\\", "d/", "é"]
        );
        for cut in 0..=text.len() {
            assert_eq!(
                feed_split(text.as_bytes(), cut).unwrap(),
                whole,
                "cut {cut}"
            );
        }
        // Errors are the same however the bytes arrive.
        let bad = "[{\"prefix\": \"s3://b/\"},\n \"a\" \"b\"]";
        let want = parse_manifest(bad.as_bytes()).unwrap_err();
        for cut in 0..=bad.len() {
            assert_eq!(
                feed_split(bad.as_bytes(), cut).unwrap_err(),
                want,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn manifest_syntax_errors_point_at_the_byte() {
        assert_eq!(
            err("[{\"prefix\": \"s3://b/\"}, \"a\",]"),
            "manifest is not valid JSON (line 1, column 29): trailing comma"
        );
        assert_eq!(
            err("[{\"prefix\": \"s3://b/\"}, \"a\"] x"),
            "manifest is not valid JSON (line 1, column 30): trailing characters"
        );
        assert_eq!(
            err("[{\"prefix\": \"s3://b/\"}, \"a\""),
            "manifest is not valid JSON (line 1, column 28): EOF while parsing a list"
        );
        assert!(err("").starts_with("manifest is not valid JSON (line 1, column 1): EOF"));
        let e = err("[{\"prefix\": \"s3://b/\"},\n  tru]");
        assert!(
            e.starts_with("manifest is not valid JSON (line 2, column"),
            "{e}"
        );
        assert_eq!(
            err("[{\"prefix\": \"s3://b/\"}, true]"),
            "entry 1: expected a string key, found boolean"
        );
        assert_eq!(
            err("\"s3://b/\""),
            "manifest must be a JSON array [{\"prefix\": \"s3://bucket/prefix/\"}, \"key\", ...], found string"
        );
    }

    #[test]
    fn manifest_entries_are_bounded() {
        let ok = "k".repeat(MAX_MANIFEST_ENTRY - 2);
        let m = parse_manifest(format!(r#"[{{"prefix": "s3://b/"}}, "{ok}"]"#).as_bytes()).unwrap();
        assert_eq!(m.entries[0].rel.len(), MAX_MANIFEST_ENTRY - 2);
        let long = "k".repeat(MAX_MANIFEST_ENTRY);
        assert_eq!(
            err(&format!(r#"[{{"prefix": "s3://b/"}}, "a", "{long}"]"#)),
            "entry 2 is longer than 65536 bytes: a manifest entry is one S3 key \
             (at most 1024 bytes); is this a ManifestFile?"
        );
        // A value that never ends is cut off at the bound too, whatever follows.
        let mut parser = ManifestParser::new();
        let mut out = Vec::new();
        parser
            .feed(b"[{\"prefix\": \"s3://b/\"}, [", &mut out)
            .unwrap();
        let chunk = vec![b'['; 4096];
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = parser.feed(&chunk, &mut out) {
                failed = Some(e);
                break;
            }
        }
        assert_eq!(
            failed,
            Some(ManifestError::EntryTooLong {
                index: 1,
                limit: MAX_MANIFEST_ENTRY
            })
        );
    }

    #[test]
    fn augmented_manifest_streams_and_bounds_lines() {
        let text = "\u{feff}{\"source-ref\": \"s3://b/1\", \"l\": 1}\r\n\n{\"source-ref\": \"s3://b/2\", \"l\": [2]}";
        let attrs = names(&["source-ref", "l"]);
        let whole = parse_augmented_manifest(text.as_bytes(), &attrs).unwrap();
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].line, 3);
        for cut in 0..=text.len() {
            let mut parser = AugmentedParser::new(&attrs).unwrap();
            let mut out = Vec::new();
            parser.feed(&text.as_bytes()[..cut], &mut out).unwrap();
            for b in &text.as_bytes()[cut..] {
                parser.feed(std::slice::from_ref(b), &mut out).unwrap();
            }
            parser.finish(&mut out).unwrap();
            assert_eq!(out, whole, "cut {cut}");
        }

        let mut parser = AugmentedParser::new(&attrs).unwrap();
        let mut out = Vec::new();
        parser
            .feed(b"{\"source-ref\": \"s3://b/1\", \"l\": 1}\n", &mut out)
            .unwrap();
        assert_eq!(
            out.len(),
            1,
            "a record is handed out as soon as its line ends"
        );
        let chunk = vec![b' '; 1 << 20];
        let mut failed = None;
        for _ in 0..10 {
            if let Err(e) = parser.feed(&chunk, &mut out) {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("an endless line is refused");
        assert_eq!(
            e.to_string(),
            "line 2 is longer than 8388608 bytes: an AugmentedManifestFile has one \
             JSON object per line (JSON Lines); is this one?"
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
