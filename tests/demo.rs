//! `chute demo` runs end to end on a fresh machine with no AWS account.

mod common;

use common::*;

#[test]
fn demo_runs_and_verifies() {
    let out = run(chute().arg("demo"));
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    assert!(text.contains("every SHA-256 matches"), "{text}");
    assert!(text.contains("host 3:"), "{text}");
}
