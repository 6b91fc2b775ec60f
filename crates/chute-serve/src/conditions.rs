//! HTTP preconditions on reads, evaluated the way S3 does.
//!
//! The chute client pins every ranged read to the ETag it saw when listing
//! (`If-Match`), so a file replaced mid-epoch fails loudly with 412 instead of mixing
//! bytes of two versions. S3's documented precedence applies: a passing `If-Match`
//! overrides `If-Unmodified-Since`, and a failing `If-None-Match` check overrides
//! `If-Modified-Since`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use s3s::dto::{ETag, ETagCondition, Timestamp, TimestampFormat};
use s3s::{s3_error, S3Error, S3Result};

/// The conditional headers of a GET or HEAD.
pub(crate) struct Preconditions<'a> {
    pub(crate) if_match: Option<&'a ETagCondition>,
    pub(crate) if_none_match: Option<&'a ETagCondition>,
    pub(crate) if_modified_since: Option<&'a Timestamp>,
    pub(crate) if_unmodified_since: Option<&'a Timestamp>,
}

/// `Last-Modified` as sent on the wire. HTTP dates carry whole seconds, so comparing
/// a client's `If-Modified-Since` (copied from an earlier `Last-Modified`) against the
/// file's nanosecond mtime would always find the file "newer".
pub(crate) fn http_last_modified(modified: SystemTime) -> Timestamp {
    let secs = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))
}

impl Preconditions<'_> {
    /// `Ok` to go on serving; otherwise the 412 or 304 to answer with.
    pub(crate) fn check(&self, etag: &ETag, last_modified: &Timestamp) -> S3Result<()> {
        if let Some(cond) = self.if_match {
            if !matches_strong(cond, etag) {
                return Err(precondition_failed("If-Match", etag));
            }
        } else if let Some(since) = self.if_unmodified_since {
            if last_modified > since {
                return Err(precondition_failed("If-Unmodified-Since", etag));
            }
        }

        if let Some(cond) = self.if_none_match {
            if matches_weak(cond, etag) {
                return Err(not_modified(etag, last_modified));
            }
        } else if let Some(since) = self.if_modified_since {
            if last_modified <= since {
                return Err(not_modified(etag, last_modified));
            }
        }
        Ok(())
    }
}

fn matches_strong(cond: &ETagCondition, etag: &ETag) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(want) => want.strong_cmp(etag),
    }
}

fn matches_weak(cond: &ETagCondition, etag: &ETag) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(want) => want.weak_cmp(etag),
    }
}

fn precondition_failed(header: &str, etag: &ETag) -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold ({header}; the object's ETag is \"{}\")",
        etag.value()
    )
}

/// A 304 carries the validators, as S3 sends them, so a cache can refresh its entry.
fn not_modified(etag: &ETag, last_modified: &Timestamp) -> S3Error {
    let mut err = s3_error!(NotModified);
    // s3s only exposes the header map through the error itself, which also spares
    // this crate a direct dependency on `http` just to name the type.
    let mut headers = err.headers().cloned().unwrap_or_default();
    if let Ok(value) = etag.to_http_header() {
        headers.insert("etag", value);
    }
    let mut date = Vec::new();
    if last_modified
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
    {
        if let Ok(value) = String::from_utf8_lossy(&date).parse() {
            headers.insert("last-modified", value);
        }
    }
    err.set_headers(headers);
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn ts(secs: u64) -> Timestamp {
        Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn code(r: S3Result<()>) -> Option<S3ErrorCode> {
        r.err().map(|e| e.code().clone())
    }

    #[test]
    fn s3_precedence_rules() {
        let etag = ETag::Strong("abc".into());
        let other = ETagCondition::ETag(ETag::Strong("zzz".into()));
        let same = ETagCondition::ETag(ETag::Strong("abc".into()));
        let weak_same = ETagCondition::ETag(ETag::Weak("abc".into()));
        let modified = ts(1_000);
        let before = ts(500);
        let after = ts(2_000);
        let none = Preconditions {
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
        };
        assert!(none.check(&etag, &modified).is_ok());

        let p = |m, n, ms, us| Preconditions {
            if_match: m,
            if_none_match: n,
            if_modified_since: ms,
            if_unmodified_since: us,
        };
        assert_eq!(
            code(p(Some(&other), None, None, None).check(&etag, &modified)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        // If-Match uses the strong comparison.
        assert_eq!(
            code(p(Some(&weak_same), None, None, None).check(&etag, &modified)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        // A passing If-Match wins over a failing If-Unmodified-Since.
        assert!(p(Some(&same), None, None, Some(&before))
            .check(&etag, &modified)
            .is_ok());
        assert_eq!(
            code(p(None, None, None, Some(&before)).check(&etag, &modified)),
            Some(S3ErrorCode::PreconditionFailed)
        );
        assert_eq!(
            code(p(None, Some(&weak_same), None, None).check(&etag, &modified)),
            Some(S3ErrorCode::NotModified)
        );
        assert_eq!(
            code(p(None, Some(&ETagCondition::Any), None, None).check(&etag, &modified)),
            Some(S3ErrorCode::NotModified)
        );
        // A non-matching If-None-Match wins over If-Modified-Since.
        assert!(p(None, Some(&other), Some(&after), None)
            .check(&etag, &modified)
            .is_ok());
        assert_eq!(
            code(p(None, None, Some(&modified), None).check(&etag, &modified)),
            Some(S3ErrorCode::NotModified)
        );
        assert!(p(None, None, Some(&before), None)
            .check(&etag, &modified)
            .is_ok());
    }

    #[test]
    fn last_modified_is_truncated_to_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(http_last_modified(t), ts(1));
    }
}
