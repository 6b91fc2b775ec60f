//! Which host this is, for `chute run`: the discovery order of DESIGN.md (flags,
//! `resourceconfig.json`, `SM_*`, Kubernetes, Slurm, single host) with the
//! resource config defaulting to `<input-dir>/config/resourceconfig.json`, where
//! SageMaker puts it.
//!
//! A half-configured environment (say `JOB_COMPLETION_INDEX` without
//! `CHUTE_SHARD_COUNT`) is an error only when some channel is sharded: that is
//! the case where a wrong guess would make hosts read overlapping shards. When
//! every channel is replicated the host list only feeds `SM_HOSTS` and
//! `resourceconfig.json`, and a job in an Indexed Job that shards nothing must
//! not fail for a variable Kubernetes sets on its own; it runs as one host, with
//! a warning.

use std::path::{Path, PathBuf};

use chute_plan::{discover_hosts, HostSource, Hosts};

use crate::container::Layout;
use crate::error::RunError;

/// The hosts, and the resource config text they came from (to copy into
/// `<input-dir>/config` verbatim, keeping fields chute does not use).
#[derive(Debug, Clone)]
pub struct FoundHosts {
    /// This host and its peers.
    pub hosts: Hosts,
    /// The content of `--resource-config`, when that file was used.
    pub resource_config_text: Option<String>,
    /// The file the hosts came from, when one was used.
    pub resource_config_path: Option<PathBuf>,
}

/// Finds the hosts. `sharded` tells whether any channel needs them.
pub fn find(
    flags: Option<(usize, usize)>,
    resource_config: Option<&Path>,
    layout: &Layout,
    sharded: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FoundHosts, RunError> {
    let (path, text) = match resource_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| RunError::ResourceConfig {
                    path: path.to_owned(),
                    source,
                })?;
            (Some(path.to_owned()), Some(text))
        }
        None => {
            let default = layout.resource_config_file();
            match std::fs::read_to_string(&default) {
                Ok(text) => (Some(default), Some(text)),
                Err(_) => (None, None),
            }
        }
    };
    let found = discover_hosts(flags, text.as_deref(), env).map_err(|e| match &path {
        // Name the file: "resourceconfig.json is invalid" alone does not say which.
        Some(p) if text.is_some() && flags.is_none() => {
            RunError::Usage(format!("{}: {e}", p.display()))
        }
        _ => RunError::Hosts(e),
    });
    let hosts = match found {
        Ok(h) => h,
        // A file is explicit: a broken one is always an error.
        Err(e) if !sharded && text.is_none() => {
            tracing::warn!(
                "{e}; no channel is ShardedByS3Key, so this runs as a single host \
                 (SM_HOSTS=[\"algo-1\"])"
            );
            discover_hosts(None, None, &|_| None)?
        }
        Err(e) => return Err(e),
    };
    if hosts.source != HostSource::Single {
        tracing::info!(
            "host {} of {} ({}), from {}",
            hosts.index,
            hosts.hosts.len(),
            hosts.current,
            hosts.source
        );
    }
    Ok(FoundHosts {
        hosts,
        resource_config_text: text,
        resource_config_path: path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_file_and_half_set_env() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        let half = [("JOB_COMPLETION_INDEX", "1")];
        // Replicated only: a warning and one host.
        let h = find(None, None, &layout, false, &env(&half)).unwrap();
        assert_eq!(h.hosts.hosts, ["algo-1"]);
        // Sharded: the error.
        let e = find(None, None, &layout, true, &env(&half))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CHUTE_SHARD_COUNT"), "{e}");
        // The default resourceconfig.json wins over the environment.
        std::fs::create_dir_all(&layout.config_dir).unwrap();
        std::fs::write(
            layout.resource_config_file(),
            r#"{"current_host":"algo-2","hosts":["algo-2","algo-1"]}"#,
        )
        .unwrap();
        let h = find(None, None, &layout, true, &env(&half)).unwrap();
        assert_eq!(h.hosts.index, 1);
        assert_eq!(h.hosts.source, HostSource::ResourceConfig);
        std::fs::write(layout.resource_config_file(), "{").unwrap();
        let e = find(None, None, &layout, false, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resourceconfig.json: resourceconfig.json is invalid"),
            "{e}"
        );
        let e = find(
            None,
            Some(&dir.path().join("nope.json")),
            &layout,
            false,
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cannot read --resource-config"), "{e}");
    }
}
