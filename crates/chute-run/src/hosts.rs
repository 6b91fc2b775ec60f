//! Which host this is, for `chute run`: [`chute_channel::hosts`] (the one
//! discovery of doc/SEMANTICS.md) with the resource config defaulting to
//! `<input-dir>/config/resourceconfig.json`, where SageMaker puts it, and the
//! identity this run writes into the `resourceconfig.json` it makes.

use std::path::Path;
use std::sync::OnceLock;

pub use chute_channel::hosts::{
    chute_written, from_platform, kubernetes_job_name, FoundHosts, HostsError, Platform,
    CHUTE_MARKER,
};

use crate::container::Layout;
use crate::error::RunError;

/// The identity of this `chute run` process: boot, pid and start time, unique
/// on a machine and across its reboots.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().chars().take(8).collect::<String>())
            .unwrap_or_else(|_| "noboot".into());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("{boot}-{}-{started}", std::process::id())
    })
}

/// Finds the hosts. `sharded` tells whether any channel needs them.
pub fn find(
    flags: Option<(usize, usize)>,
    resource_config: Option<&Path>,
    layout: &Layout,
    sharded: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FoundHosts, RunError> {
    chute_channel::hosts::find(
        flags,
        resource_config,
        &layout.resource_config_file(),
        sharded,
        env,
    )
    .map_err(|e| match e {
        HostsError::ReadResourceConfig { path, source } => {
            RunError::ResourceConfig { path, source }
        }
        other => RunError::Hosts(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_resource_config_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        let e = find(
            None,
            Some(&dir.path().join("nope.json")),
            &layout,
            false,
            &|_| None,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read --resource-config"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
