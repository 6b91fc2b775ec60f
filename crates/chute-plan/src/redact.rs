//! Hiding credentials in URIs and endpoint URLs before chute shows them.
//!
//! chute echoes the URIs and endpoints it was given in its messages and logs, so
//! that an error says what failed. Users paste URLs, though: a presigned URL carries
//! its signature, credential and session token in the query string, and an
//! endpoint may carry `user:password@`. Every echo goes through [`redact_uri`],
//! which keeps what identifies the target (scheme, host, path, parameter names) and
//! hides the rest; text that may quote URLs chute did not format itself (a
//! dependency's log line) goes through [`redact_text`].

use std::borrow::Cow;

/// What replaces a hidden part.
const HIDDEN: &str = "***";

/// `uri` with any `user:password@` replaced by `***@` and, except in `s3://` and
/// `file://` URIs (where `?` is part of a key or a file name), every query value
/// replaced by `***`.
///
/// ```
/// use chute_plan::redact::redact_uri;
/// assert_eq!(
///     redact_uri("https://u:p@host:9000/b/k?X-Amz-Signature=abc&x-id=GetObject"),
///     "https://***@host:9000/b/k?X-Amz-Signature=***&x-id=***"
/// );
/// assert_eq!(redact_uri("s3://bucket/odd?key"), "s3://bucket/odd?key");
/// ```
#[must_use]
pub fn redact_uri(uri: &str) -> Cow<'_, str> {
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let userinfo = authority.rfind('@');
    let keeps_query =
        scheme.is_some_and(|s| s.eq_ignore_ascii_case("s3") || s.eq_ignore_ascii_case("file"));
    let query = if keeps_query {
        None
    } else {
        split_query(after)
    };
    if userinfo.is_none() && query.is_none() {
        return Cow::Borrowed(uri);
    }

    let mut out = String::with_capacity(uri.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    match userinfo {
        Some(at) => {
            out.push_str(HIDDEN);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match query {
        None => out.push_str(after),
        Some((path, query, fragment)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                out.push_str(name);
                if pair.len() > name.len() {
                    out.push('=');
                    out.push_str(HIDDEN);
                }
            }
            out.push_str(fragment);
        }
    }
    Cow::Owned(out)
}

/// `text` with every `scheme://...` URL in it passed through [`redact_uri`]. A URL
/// ends at whitespace, a quote, a backslash or an angle bracket, which is how URLs
/// appear in messages, `Debug` output and JSON.
#[must_use]
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let start = text[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = text[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '<' | '>' | '`'))
            .map_or(text.len(), |i| sep + i);
        if let Cow::Owned(clean) = redact_uri(&text[start..end]) {
            out.push_str(&text[copied..start]);
            out.push_str(&clean);
            copied = end;
        }
        search = end.max(sep + 3);
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `path?query#fragment` as (path, query, `#fragment`), when there is a query.
fn split_query(s: &str) -> Option<(&str, &str, &str)> {
    let (path, query) = s.split_once('?')?;
    let (query, fragment) = match query.find('#') {
        Some(at) => query.split_at(at),
        None => (query, ""),
    };
    Some((path, query, fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(
            redact_uri("http://user:pa%40ss@127.0.0.1:9000"),
            "http://***@127.0.0.1:9000"
        );
        assert_eq!(
            redact_uri(
                "https://b.s3.amazonaws.com/k.bin?X-Amz-Credential=AKIA%2F&X-Amz-Signature=0123#f"
            ),
            "https://b.s3.amazonaws.com/k.bin?X-Amz-Credential=***&X-Amz-Signature=***#f"
        );
        assert_eq!(redact_uri("user:secret@host/x?sig=1"), "***@host/x?sig=***");
        assert_eq!(redact_uri("http://h/?flag"), "http://h/?flag");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        assert_eq!(
            redact_text(r#"Endpoint: Some("http://u:pw@127.0.0.1:1/?sig=1"), region: x"#),
            r#"Endpoint: Some("http://***@127.0.0.1:1/?sig=***"), region: x"#
        );
        assert_eq!(
            redact_text("a https://h/k?X-Amz-Signature=ab b https://h2/?t=c"),
            "a https://h/k?X-Amz-Signature=*** b https://h2/?t=***"
        );
        let plain = "no urls, just s3://bucket/key and text";
        assert!(matches!(redact_text(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn uris_without_credentials_are_unchanged() {
        for uri in [
            "http://127.0.0.1:9000",
            "https://s3.us-east-1.amazonaws.com/bucket/key",
            "s3://bucket/prefix/with?question",
            "s3://bucket/a@b",
            "file:///data/dir?x=1",
            "",
        ] {
            assert!(
                matches!(redact_uri(uri), Cow::Borrowed(u) if u == uri),
                "{uri}"
            );
        }
    }
}
