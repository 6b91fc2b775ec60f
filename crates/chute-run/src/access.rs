//! Per-channel credentials for `chute run`: a channel may read with its own
//! assumed role and session tags (`RoleArn` and `SessionTags` in the channel's
//! JSON, `role-arn=` and `session-tag=` in `--channel`), on top of the job's
//! (`--role-arn`, `--session-tag`, or `CHUTE_ROLE_ARN` / `CHUTE_SESSION_TAGS`).
//! One bucket policy keyed on `aws:PrincipalTag` then separates the channels of
//! different tenants in one job.
//!
//! A channel's tags are added to the job's; a key given in both takes the
//! channel's value. A channel's role replaces the job's.

use std::borrow::Cow;

use chute_channel::SourceOptions;
use chute_s3::AssumeRole;
use serde_json::{Map, Value};

/// What a channel adds to the job's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelAccess {
    /// `RoleArn`: the role this channel reads with.
    pub role_arn: Option<String>,
    /// `SessionTags`: `[{"Key": "tenant", "Value": "alpha"}]`.
    pub session_tags: Vec<(String, String)>,
}

/// The channel fields this module reads.
pub(crate) const FIELDS: &[&str] = &["RoleArn", "SessionTags"];

/// Reads `RoleArn` and `SessionTags` of a channel object; errors are
/// `(field, problem)`.
pub(crate) fn parse(obj: &Map<String, Value>) -> Result<ChannelAccess, (String, String)> {
    let role_arn = match obj.get("RoleArn") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err((
                "RoleArn".into(),
                "must be a role ARN string such as \"arn:aws:iam::123456789012:role/reader\""
                    .into(),
            ))
        }
    };
    let shape = || {
        (
            "SessionTags".to_owned(),
            "must be a list such as [{\"Key\": \"tenant\", \"Value\": \"alpha\"}]".to_owned(),
        )
    };
    let session_tags = match obj.get("SessionTags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => {
            let mut tags = Vec::with_capacity(list.len());
            for (i, tag) in list.iter().enumerate() {
                let field = |name: &str| tag.get(name).and_then(Value::as_str);
                let (Some(key), Some(value)) = (field("Key"), field("Value")) else {
                    return Err(shape());
                };
                if key.contains('=') {
                    return Err((
                        format!("SessionTags[{i}].Key"),
                        format!("'{key}' contains '=', which a tag key cannot"),
                    ));
                }
                let tag = chute_s3::parse_session_tag(&format!("{key}={value}"))
                    .map_err(|p| (format!("SessionTags[{i}]"), p))?;
                tags.push(tag);
            }
            tags
        }
        Some(_) => return Err(shape()),
    };
    Ok(ChannelAccess {
        role_arn,
        session_tags,
    })
}

impl ChannelAccess {
    /// The job's source options with this channel's role and tags applied.
    ///
    /// # Errors
    ///
    /// Session tags with no role to assume, in the channel or the job.
    pub fn source_options<'a>(
        &self,
        job: &'a SourceOptions,
    ) -> Result<Cow<'a, SourceOptions>, String> {
        if *self == ChannelAccess::default() {
            return Ok(Cow::Borrowed(job));
        }
        let base = job.s3.assume_role.clone().unwrap_or_default();
        let role_arn = match (&self.role_arn, base.role_arn.is_empty()) {
            (Some(arn), _) => arn.clone(),
            (None, false) => base.role_arn.clone(),
            (None, true) => {
                return Err(
                    "SessionTags need a role to assume: give the channel a RoleArn \
                            (role-arn= with --channel) or the job --role-arn / CHUTE_ROLE_ARN"
                        .into(),
                )
            }
        };
        let mut session_tags: Vec<(String, String)> = base
            .session_tags
            .iter()
            .filter(|(k, _)| {
                !self
                    .session_tags
                    .iter()
                    .any(|(own, _)| own.eq_ignore_ascii_case(k))
            })
            .cloned()
            .collect();
        session_tags.extend(self.session_tags.iter().cloned());
        let mut opts = job.clone();
        opts.s3.assume_role = Some(AssumeRole {
            role_arn,
            session_tags,
            ..base
        });
        Ok(Cow::Owned(opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test objects are objects"),
        }
    }

    #[test]
    fn channel_fields_parse() {
        let a = parse(&obj(serde_json::json!({
            "RoleArn": "arn:aws:iam::1:role/r",
            "SessionTags": [{"Key": "tenant", "Value": "alpha"}]
        })))
        .expect("valid");
        assert_eq!(a.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        assert_eq!(a.session_tags, vec![("tenant".into(), "alpha".into())]);
        let (field, _) =
            parse(&obj(serde_json::json!({"SessionTags": {"tenant": "a"}}))).unwrap_err();
        assert_eq!(field, "SessionTags");
        let (field, p) = parse(&obj(
            serde_json::json!({"SessionTags": [{"Key": "a;b", "Value": "x"}]}),
        ))
        .unwrap_err();
        assert_eq!(field, "SessionTags[0]");
        assert!(p.contains("';'"), "{p}");
    }

    #[test]
    fn channel_tags_add_to_the_jobs() {
        let mut job = SourceOptions::default();
        job.s3.assume_role = Some(AssumeRole {
            role_arn: "arn:aws:iam::1:role/job".into(),
            session_tags: vec![
                ("project".into(), "p".into()),
                ("tenant".into(), "job".into()),
            ],
            sts_endpoint_url: Some("http://127.0.0.1:1".into()),
            ..AssumeRole::default()
        });
        let channel = ChannelAccess {
            role_arn: None,
            session_tags: vec![("Tenant".into(), "alpha".into())],
        };
        let opts = channel.source_options(&job).expect("role from the job");
        let role = opts.s3.assume_role.as_ref().expect("a role");
        assert_eq!(role.role_arn, "arn:aws:iam::1:role/job");
        assert_eq!(
            role.session_tags,
            vec![
                ("project".into(), "p".into()),
                ("Tenant".into(), "alpha".into())
            ]
        );
        assert_eq!(role.sts_endpoint_url.as_deref(), Some("http://127.0.0.1:1"));

        assert!(matches!(
            ChannelAccess::default().source_options(&job),
            Ok(Cow::Borrowed(_))
        ));
        let e = channel
            .source_options(&SourceOptions::default())
            .unwrap_err();
        assert!(e.contains("RoleArn") && e.contains("--role-arn"), "{e}");
    }
}
