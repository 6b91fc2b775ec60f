//! The Prometheus text exposition format (version 0.0.4): each family once,
//! with its `# HELP` and `# TYPE` lines, then one line per channel and label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{Family, Registry};

/// What a scrape of `registry` returns.
pub fn render(registry: &Registry) -> String {
    let mut families: BTreeMap<Family, Vec<String>> = BTreeMap::new();
    for (channel, samples) in registry.collect() {
        for s in samples {
            let mut line = String::from(s.family.name());
            line.push_str("{channel=\"");
            escape_into(&mut line, &channel);
            line.push('"');
            for (name, value) in &s.labels {
                let _ = write!(line, ",{name}=\"");
                escape_into(&mut line, value);
                line.push('"');
            }
            let _ = write!(line, "}} {}", s.value);
            families.entry(s.family).or_default().push(line);
        }
    }
    let mut out = String::new();
    for (family, lines) in families {
        let _ = writeln!(out, "# HELP {} {}", family.name(), family.help());
        let _ = writeln!(out, "# TYPE {} {}", family.name(), family.kind());
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Label values escape `\`, `"` and newlines, as the format requires.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Sample;

    #[test]
    fn families_are_grouped_across_channels_with_escaped_labels() {
        let reg = Registry::default();
        reg.add(
            "train",
            Arc::new(|out: &mut Vec<Sample>| {
                out.push(Sample::new(Family::BytesFetched, 10));
                out.push(Sample::new(Family::S3Requests, 2).with("op", "get"));
            }),
        );
        reg.add(
            "va\"l",
            Arc::new(|out: &mut Vec<Sample>| out.push(Sample::new(Family::BytesFetched, 7))),
        );
        let text = render(&reg);
        let expected = "\
# HELP chute_s3_requests_total S3 requests sent, by operation (get, head, list).
# TYPE chute_s3_requests_total counter
chute_s3_requests_total{channel=\"train\",op=\"get\"} 2
# HELP chute_bytes_fetched_total Bytes received from the object store.
# TYPE chute_bytes_fetched_total counter
chute_bytes_fetched_total{channel=\"train\"} 10
chute_bytes_fetched_total{channel=\"va\\\"l\"} 7
";
        assert_eq!(text, expected);
    }

    #[test]
    fn client_counters_cover_every_retry_cause() {
        let reg = Registry::default();
        reg.add_client("c", Arc::new(chute_s3::Stats::default()));
        let text = render(&reg);
        for cause in chute_s3::RetryCause::ALL {
            let line = format!(
                "chute_s3_retries_total{{channel=\"c\",cause=\"{}\"}} 0",
                cause.label()
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
