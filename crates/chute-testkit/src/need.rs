//! The real parts a test needs from the machine (a usable `/dev/fuse`, a Python
//! interpreter with given modules). Where one is missing a test may skip, saying
//! so loudly, on a developer's machine; under CI (`CI=true`) it fails instead, so
//! a green run never hides a test that checked nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// True under CI, where a missing real part is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn missing(test: &str, what: &str) {
    assert!(
        !in_ci(),
        "{test}: {what} (CI=true: a test that cannot run its real part fails)"
    );
    eprintln!("SKIPPED {test}: {what}");
}

/// Whether FUSE file systems can be mounted here (`/dev/fuse` opens read-write
/// and `fusermount3` is on the PATH).
pub fn fuse(test: &str) -> bool {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    let helper = Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !(dev && helper) {
        missing(test, "/dev/fuse or fusermount3 is not usable here");
        return false;
    }
    true
}

/// A Python 3 interpreter that can import every one of `modules`: the one named
/// by `CHUTE_TEST_PYTHON`, else the repository's CI virtualenv (`.venv-ci`),
/// else `python3` on the PATH.
pub fn python(test: &str, modules: &[&str]) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("CHUTE_TEST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-ci/bin/python");
    candidates.push(venv);
    candidates.push(PathBuf::from("python3"));
    let probe = modules
        .iter()
        .map(|m| format!("import {m}\n"))
        .collect::<String>();
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(python);
        }
    }
    missing(
        test,
        &format!(
            "no Python 3 that imports {modules:?} (set CHUTE_TEST_PYTHON, or run .ci/run \
             which makes .venv-ci)"
        ),
    );
    None
}
