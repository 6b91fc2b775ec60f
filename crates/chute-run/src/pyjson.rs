//! JSON values as Python's `json` module reads and writes them, for the
//! variables the `sagemaker-training` toolkit derives from hyperparameters.
//!
//! The toolkit passes every hyperparameter string through `json.loads` (keeping
//! the string when that fails), then renders values with `json.dumps(...,
//! sort_keys=True)` or `str()`. serde_json parses numbers into `f64`/`u64` and
//! prints floats its own way (`1e-5` where Python prints `1e-05`, `1e20` where
//! Python prints `1e+20`, big integers rounded), so the values are kept here as
//! Python keeps them: integers as their digits, floats as `f64` printed with
//! Python's `repr` rules, objects in insertion order.

use std::fmt::Write as _;

/// A value as `json.loads` returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    Null,
    /// `True` / `False`.
    Bool(bool),
    /// An `int`, as its canonical decimal digits (Python ints are unbounded).
    Int(String),
    /// A `float` (including `nan` and `inf`, which `json.loads` accepts).
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `list`.
    List(Vec<PyValue>),
    /// A `dict`, in insertion order (a repeated key keeps its first place and
    /// its last value, as a Python dict does).
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// A `str`.
    pub fn str(s: impl Into<String>) -> PyValue {
        PyValue::Str(s.into())
    }

    /// A list of `str`.
    pub fn str_list<S: AsRef<str>>(items: &[S]) -> PyValue {
        PyValue::List(items.iter().map(|s| PyValue::str(s.as_ref())).collect())
    }

    /// An `int`.
    pub fn int(n: impl Into<i128>) -> PyValue {
        PyValue::Int(n.into().to_string())
    }

    /// The value under `key`, when this is a dict that has it.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            PyValue::Null => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(d) => d.trim_start_matches('-') != "0",
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::List(l) => !l.is_empty(),
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// `json.dumps(self, sort_keys=True, separators=(",", ":"), ensure_ascii=True)`.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        dump(&mut out, self);
        out
    }

    /// `str(self)`.
    pub fn py_str(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            other => {
                let mut out = String::new();
                repr(&mut out, other);
                out
            }
        }
    }

    /// How the toolkit's `mapping.to_env_vars` renders a value: strings as they
    /// are, `None` as empty, everything else as compact sorted JSON.
    pub fn env_value(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            PyValue::Null => String::new(),
            other => other.dumps(),
        }
    }
}

/// `json.loads(text)`, or `None` where Python raises.
pub fn loads(text: &str) -> Option<PyValue> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// How deep a value may nest; Python's own limit is the recursion limit (~1000).
const MAX_DEPTH: usize = 512;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<PyValue> {
        match *self.s.get(self.i)? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(PyValue::Str),
            b'n' if self.eat("null") => Some(PyValue::Null),
            b't' if self.eat("true") => Some(PyValue::Bool(true)),
            b'f' if self.eat("false") => Some(PyValue::Bool(false)),
            b'N' if self.eat("NaN") => Some(PyValue::Float(f64::NAN)),
            b'I' if self.eat("Infinity") => Some(PyValue::Float(f64::INFINITY)),
            b'-' if self.eat("-Infinity") => Some(PyValue::Float(f64::NEG_INFINITY)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn nested(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn object(&mut self) -> Option<PyValue> {
        self.nested()?;
        self.i += 1;
        let mut items: Vec<(String, PyValue)> = Vec::new();
        self.ws();
        if self.eat("}") {
            self.depth -= 1;
            return Some(PyValue::Dict(items));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return None;
            }
            self.ws();
            let v = self.value()?;
            match items.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => items.push((key, v)),
            }
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                self.depth -= 1;
                return Some(PyValue::Dict(items));
            }
            return None;
        }
    }

    fn array(&mut self) -> Option<PyValue> {
        self.nested()?;
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            self.depth -= 1;
            return Some(PyValue::List(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                self.depth -= 1;
                return Some(PyValue::List(items));
            }
            return None;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.s.get(self.i)?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&u)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                match self.hex4()? {
                                    lo @ 0xDC00..0xE000 => char::from_u32(
                                        0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00),
                                    ),
                                    _ => {
                                        self.i = save;
                                        None
                                    }
                                }
                            } else {
                                char::from_u32(u)
                            };
                            // A lone surrogate is valid for Python but not a Rust
                            // char; such a value stays the plain string it was.
                            out.push(c?);
                        }
                        _ => return None,
                    }
                }
                // Control characters are invalid inside strings (strict mode).
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> Option<PyValue> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.s.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let int_end = self.i;
        let mut float = false;
        if self.s.get(self.i) == Some(&b'.') && matches!(self.s.get(self.i + 1), Some(b'0'..=b'9'))
        {
            float = true;
            self.i += 1;
            while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            let save = self.i;
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
                float = true;
                while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            } else {
                // Python's scanner stops before a bare `e`; the caller then sees
                // trailing text and fails, as json.loads does.
                self.i = save;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if float {
            return text.parse::<f64>().ok().map(PyValue::Float);
        }
        let digits = &self.s[start..int_end];
        let digits = std::str::from_utf8(digits).ok()?;
        // `-0` is the int 0.
        if digits == "-0" {
            return Some(PyValue::Int("0".into()));
        }
        // CPython refuses to convert more than 4300 digits.
        if digits.trim_start_matches('-').len() > 4300 {
            return None;
        }
        Some(PyValue::Int(digits.to_owned()))
    }
}

/// `float.__repr__`: the shortest digits that round-trip, in fixed notation
/// when the decimal exponent is in [-4, 16), else `d.ddde+XX`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `d.ddde<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    // `decpt`: the value is 0.DIGITS x 10^decpt.
    let decpt = exp + 1;
    let mut out = String::from(sign);
    if (-4 < decpt) && (decpt <= 16) {
        if decpt <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-decpt) as usize));
            out.push_str(&digits);
        } else {
            let d = decpt as usize;
            if digits.len() <= d {
                out.push_str(&digits);
                out.push_str(&"0".repeat(d - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..d]);
                out.push('.');
                out.push_str(&digits[d..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    out
}

fn dump(out: &mut String, v: &PyValue) {
    match v {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PyValue::Int(d) => out.push_str(d),
        PyValue::Float(f) => {
            if f.is_nan() {
                out.push_str("NaN")
            } else if f.is_infinite() {
                out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                out.push_str(&float_repr(*f))
            }
        }
        PyValue::Str(s) => dump_str(out, s),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump(out, item);
            }
            out.push(']');
        }
        PyValue::Dict(items) => {
            // Python sorts str keys by code point, which for UTF-8 is byte order.
            let mut sorted: Vec<&(String, PyValue)> = items.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                dump_str(out, k);
                out.push(':');
                dump(out, v);
            }
            out.push('}');
        }
    }
}

/// A JSON string as Python's `json.dumps` writes it: ASCII only, non-ASCII as
/// `\uXXXX` (surrogate pairs beyond the BMP).
pub(crate) fn dump_str(out: &mut String, s: &str) {
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
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// `repr()` of a value inside a container (`str()` of a list or dict).
fn repr(out: &mut String, v: &PyValue) {
    match v {
        PyValue::Null => out.push_str("None"),
        PyValue::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        PyValue::Int(d) => out.push_str(d),
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => repr_str(out, s),
        PyValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(out, item);
            }
            out.push(']');
        }
        PyValue::Dict(items) => {
            out.push('{');
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(out, k);
                out.push_str(": ");
                repr(out, v);
            }
            out.push('}');
        }
    }
}

/// `str.__repr__`, for the characters training arguments carry; characters
/// outside Latin-1 are taken as printable (Python escapes a few more).
fn repr_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) || c == '\u{ad}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        // Expected strings are CPython's repr() of the same values.
        for (f, want) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e300, "1.5e+300"),
            (-0.0, "-0.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (2.5e-7, "2.5e-07"),
            (123.456, "123.456"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn loads_like_python() {
        assert_eq!(loads("10"), Some(PyValue::Int("10".into())));
        assert_eq!(loads(" -0 "), Some(PyValue::Int("0".into())));
        assert_eq!(loads("01"), None);
        assert_eq!(loads("train.py"), None);
        assert_eq!(loads("\"train.py\""), Some(PyValue::str("train.py")));
        assert_eq!(loads("1e3").map(|v| v.dumps()).as_deref(), Some("1000.0"));
        assert_eq!(
            loads("1E400").map(|v| v.dumps()).as_deref(),
            Some("Infinity")
        );
        assert_eq!(
            loads("123456789012345678901234567890")
                .map(|v| v.dumps())
                .as_deref(),
            Some("123456789012345678901234567890")
        );
        let v = loads(r#"{"b": [1, 2.50, null, true], "a": {"x": "é"}, "b": 3}"#).unwrap();
        assert_eq!(v.dumps(), r#"{"a":{"x":"\u00e9"},"b":3}"#);
        assert_eq!(v.py_str(), r#"{'b': 3, 'a': {'x': 'é'}}"#);
        let v = loads(r#"["it's", "a\"b", 1.0, false, null]"#).unwrap();
        assert_eq!(v.py_str(), r#"["it's", 'a"b', 1.0, False, None]"#);
        assert_eq!(loads("[1,]"), None);
        assert_eq!(loads("\"a\tb\""), None);
        assert_eq!(
            loads("\"\\ud83d\\ude00\"").unwrap().dumps(),
            "\"\\ud83d\\ude00\""
        );
    }
}
