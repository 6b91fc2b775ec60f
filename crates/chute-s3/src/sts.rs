//! Reading with an assumed role's credentials (STS AssumeRole), with session
//! tags: one bucket policy keyed on `aws:PrincipalTag` then separates tenants
//! that share a role. The SDK's provider calls AssumeRole with the credentials
//! the chain finds, and the client's identity cache calls it again shortly
//! before the temporary credentials expire, so long jobs never read with
//! expired ones.

use std::collections::HashSet;

use aws_config::sts::AssumeRoleProvider;
use aws_config::SdkConfig;

use crate::config::AssumeRole;
use crate::StoreError;

/// STS limits on session tags.
const MAX_TAGS: usize = 50;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;

/// `KEY=VALUE` as written on a command line or in a channel's configuration.
pub fn parse_session_tag(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| {
        format!("session tag '{s}' has no '=': write KEY=VALUE, e.g. tenant=alpha")
    })?;
    check_tag(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

fn check_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(format!(
            "session tag key '{key}' must be 1 to {MAX_KEY_CHARS} characters"
        ));
    }
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!(
            "session tag '{key}' has a value longer than {MAX_VALUE_CHARS} characters"
        ));
    }
    let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
    if let Some(bad) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Err(format!(
            "session tag '{key}={value}' contains '{bad}': STS accepts letters, digits, spaces and _ . : / = + - @"
        ));
    }
    Ok(())
}

/// Checks what STS would refuse, so a bad role or tag fails before any data moves.
pub(crate) fn validate(role: &AssumeRole) -> Result<(), StoreError> {
    if !role.role_arn.starts_with("arn:") || !role.role_arn.contains(":role/") {
        return Err(StoreError::Config(format!(
            "role ARN '{}' is not a role ARN: write arn:aws:iam::ACCOUNT:role/NAME",
            role.role_arn
        )));
    }
    if role.session_tags.len() > MAX_TAGS {
        return Err(StoreError::Config(format!(
            "{} session tags given; STS accepts at most {MAX_TAGS}",
            role.session_tags.len()
        )));
    }
    let mut seen = HashSet::new();
    for (key, value) in &role.session_tags {
        check_tag(key, value).map_err(StoreError::Config)?;
        // STS compares tag keys without regard to case.
        if !seen.insert(key.to_lowercase()) {
            return Err(StoreError::Config(format!(
                "session tag '{key}' is given twice; each key may appear once"
            )));
        }
    }
    Ok(())
}

/// A credentials provider that assumes `role` with the credentials of `base`.
pub(crate) async fn provider(role: &AssumeRole, base: &SdkConfig) -> AssumeRoleProvider {
    let mut sts = base.to_builder();
    if let Some(url) = &role.sts_endpoint_url {
        sts.set_endpoint_url(Some(url.clone()));
    }
    if base.region().is_none() {
        // STS answers every region at its global endpoint; a bucket's region may
        // still be unknown here (it is detected per bucket).
        sts.set_region(Some(aws_config::Region::new("us-east-1")));
    }
    let session_name = role.session_name.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("chute-{secs}")
    });
    let mut builder = AssumeRoleProvider::builder(role.role_arn.clone())
        .session_name(session_name)
        .configure(&sts.build());
    if !role.session_tags.is_empty() {
        builder = builder.tags(role.session_tags.iter().cloned());
    }
    if let Some(d) = role.duration {
        builder = builder.session_length(d);
    }
    builder.build().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_are_checked() {
        assert_eq!(
            parse_session_tag("tenant=alpha"),
            Ok(("tenant".into(), "alpha".into()))
        );
        assert_eq!(
            parse_session_tag("team=a=b"),
            Ok(("team".into(), "a=b".into()))
        );
        assert_eq!(
            parse_session_tag("empty="),
            Ok(("empty".into(), String::new()))
        );
        assert!(parse_session_tag("tenant")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(parse_session_tag("=x").unwrap_err().contains("1 to 128"));
        assert!(parse_session_tag("k=a;b").unwrap_err().contains("';'"));
        let long = format!("k={}", "v".repeat(257));
        assert!(parse_session_tag(&long).unwrap_err().contains("256"));
    }

    #[test]
    fn roles_are_checked() {
        let role = |arn: &str, tags: &[(&str, &str)]| AssumeRole {
            role_arn: arn.into(),
            session_tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..AssumeRole::default()
        };
        let ok = "arn:aws:iam::123456789012:role/reader";
        assert!(validate(&role(ok, &[("tenant", "a")])).is_ok());
        let e = validate(&role("reader", &[])).unwrap_err().to_string();
        assert!(
            e.contains("'reader'") && e.contains("arn:aws:iam::ACCOUNT:role/NAME"),
            "{e}"
        );
        let e = validate(&role(ok, &[("Tenant", "a"), ("tenant", "b")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        let r = AssumeRole {
            role_arn: ok.into(),
            session_tags: many,
            ..AssumeRole::default()
        };
        assert!(validate(&r).unwrap_err().to_string().contains("at most 50"));
    }
}
