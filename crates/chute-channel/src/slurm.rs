//! Slurm host lists: `SLURM_JOB_NODELIST` is written in Slurm's compressed form
//! (`node[01-04,07],gpu-[1-2]`, `rack[1-2]-n[1-3]`); expanded, it is the list of
//! host names the job's nodes resolve by.

/// The most names one list may expand to: a bound on memory, far above any
/// cluster (and above what one environment string can carry anyway).
pub const MAX_NODES: usize = 100_000;

/// Expands a Slurm host list, keeping Slurm's order (left to right, ranges in
/// the order written). Numbers keep the width of the range's first bound
/// (`[01-10]` gives `01` .. `10`; `[8-10]` gives `8`, `9`, `10`).
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top(list)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            match rest.find('[') {
                None => {
                    names.iter_mut().for_each(|n| n.push_str(rest));
                    rest = "";
                }
                Some(open) => {
                    let literal = &rest[..open];
                    let close = rest[open..]
                        .find(']')
                        .map(|c| open + c)
                        .ok_or_else(|| format!("'{item}' has '[' without ']'"))?;
                    let values = expand_ranges(&rest[open + 1..close])
                        .map_err(|e| format!("'{item}': {e}"))?;
                    let mut next = Vec::with_capacity(names.len().saturating_mul(values.len()));
                    for n in &names {
                        for v in &values {
                            if next.len() + out.len() >= MAX_NODES {
                                return Err(format!("expands to more than {MAX_NODES} names"));
                            }
                            next.push(format!("{n}{literal}{v}"));
                        }
                    }
                    names = next;
                    rest = &rest[close + 1..];
                }
            }
        }
        if names.iter().any(|n| n.contains(']')) {
            return Err(format!("'{item}' has ']' without '['"));
        }
        out.extend(names);
        if out.len() > MAX_NODES {
            return Err(format!("expands to more than {MAX_NODES} names"));
        }
    }
    if out.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(out)
}

/// Splits on the commas that are not inside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => {
                if depth > 0 {
                    return Err(format!("'{list}' has nested brackets"));
                }
                depth += 1;
            }
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// `01-04,07` into `01`, `02`, `03`, `04`, `07`.
fn expand_ranges(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(format!("'{part}' is not a number or a range such as 01-04"));
        }
        let width = lo.len();
        let (a, b): (u64, u64) = match (lo.parse(), hi.parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Err(format!("'{part}' is out of range")),
        };
        if b < a {
            return Err(format!("'{part}' runs backwards"));
        }
        if b - a >= MAX_NODES as u64 || out.len() + (b - a) as usize >= MAX_NODES {
            return Err(format!("expands to more than {MAX_NODES} names"));
        }
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_slurm_lists() {
        let x = |s: &str| expand_nodelist(s).unwrap();
        assert_eq!(x("node01"), ["node01"]);
        assert_eq!(
            x("node[01-04,07]"),
            ["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!(x("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(x("n[008-010]"), ["n008", "n009", "n010"]);
        assert_eq!(
            x("gpu-[1-2],login1,cpu[3]"),
            ["gpu-1", "gpu-2", "login1", "cpu3"]
        );
        assert_eq!(
            x("rack[1-2]-n[1-2].ib"),
            ["rack1-n1.ib", "rack1-n2.ib", "rack2-n1.ib", "rack2-n2.ib"]
        );
        for bad in [
            "n[1-",
            "n[a-b]",
            "n[3-1]",
            "n]1",
            "",
            "n[[1]]",
            "n[0-99999999]",
        ] {
            assert!(expand_nodelist(bad).is_err(), "{bad}");
        }
    }
}
