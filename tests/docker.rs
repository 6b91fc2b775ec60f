//! What can be checked of docker/ without Docker: the Dockerfile builds with the
//! workspace's own cargo command, the compose and Kubernetes files parse and say
//! what they must, their InputDataConfig files pass `chute run`'s validation, and
//! the compose example (dataset, config, training script) runs end to end under
//! `chute run` against `chute serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(docker_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn dockerfile_builds_with_the_workspace_cargo_command() {
    let dockerfile = read("Dockerfile");
    let cargo_runs: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RUN "))
        .filter(|l| l.contains("cargo"))
        .collect();
    assert_eq!(
        cargo_runs,
        ["cargo build --release --locked --bin chute"],
        "the Dockerfile's build step changed: update this test and what it runs"
    );
    // The same cargo, on this checkout: the lock file must be current for
    // --locked, and the package must have the `chute` binary the image copies.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("host triple");
    // Offline, and for this platform only: the test never reaches the network,
    // and other platforms' dependencies need not be downloaded here.
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata --locked failed (Cargo.lock out of date?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let has_bin = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["name"] == "chute")
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .any(|t| t["name"] == "chute" && t["kind"][0] == "bin");
    assert!(has_bin, "no bin target `chute` in package `chute`");
    assert!(dockerfile.contains("COPY --from=build /src/target/release/chute /usr/local/bin/chute"));
    assert!(
        dockerfile.contains("FROM rust:1-"),
        "the build stage needs a Rust 1.x image"
    );
    let runtime = dockerfile
        .split("AS runtime")
        .nth(1)
        .expect("a stage named runtime");
    assert!(runtime.contains("fuse3"), "the runtime image needs fuse3");
    assert!(runtime.contains(r#"ENTRYPOINT ["chute", "run", "--"]"#));
    let ignore = read("Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

/// Both YAML files as JSON, when Python's yaml module is there; `None` otherwise.
fn yaml_docs(rel: &str) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys\ntry:\n    import yaml\nexcept ImportError:\n    print('NO_YAML'); sys.exit(0)\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(docker_dir().join(rel))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{rel} does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim() == "NO_YAML" {
        eprintln!("python3 has no yaml module: checking {rel} as text only");
        return None;
    }
    Some(serde_json::from_str(&text).expect("JSON from python"))
}

#[test]
fn compose_and_kubernetes_files_say_what_they_must() {
    let compose = read("compose.yaml");
    let k8s = read("k8s/indexed-job.yaml");
    for (name, text) in [("compose.yaml", &compose), ("k8s/indexed-job.yaml", &k8s)] {
        assert!(!text.contains('\t'), "{name}: YAML must not contain tabs");
    }
    for needle in [
        "dxflrs/garage:",
        "/dev/fuse",
        "SYS_ADMIN",
        "CHUTE_INPUT_CONFIG",
        "MinIO",
    ] {
        assert!(compose.contains(needle), "compose.yaml lacks {needle}");
    }
    for needle in [
        "completionMode: Indexed",
        "CHUTE_SHARD_COUNT",
        "JOB_COMPLETION_INDEX",
    ] {
        assert!(k8s.contains(needle), "indexed-job.yaml lacks {needle}");
    }
    if let Some(docs) = yaml_docs("compose.yaml") {
        let services = &docs[0]["services"];
        for s in ["garage", "upload", "trainer"] {
            assert!(services[s].is_object(), "compose.yaml: no service {s}");
        }
        let trainer = &services["trainer"];
        assert_eq!(trainer["devices"][0], "/dev/fuse");
        assert_eq!(trainer["cap_add"][0], "SYS_ADMIN");
        assert_eq!(trainer["build"]["dockerfile"], "docker/Dockerfile");
        assert_eq!(trainer["build"]["target"], "runtime");
        assert_eq!(
            trainer["environment"]["CHUTE_INPUT_CONFIG"],
            "/opt/ml/code/input-data-config.json"
        );
        assert_eq!(trainer["volumes"][0], "./example:/opt/ml/code:ro");
        // The keys the uploader and trainer sign with are the ones Garage creates.
        let garage = &services["garage"]["environment"];
        assert_eq!(
            garage["GARAGE_DEFAULT_ACCESS_KEY"],
            trainer["environment"]["AWS_ACCESS_KEY_ID"]
        );
        assert_eq!(
            garage["GARAGE_DEFAULT_SECRET_KEY"],
            trainer["environment"]["AWS_SECRET_ACCESS_KEY"]
        );
        assert_eq!(
            services["upload"]["depends_on"]["garage"]["condition"],
            "service_healthy"
        );
    }
    if let Some(docs) = yaml_docs("k8s/indexed-job.yaml") {
        let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        let container = &spec["template"]["spec"]["containers"][0];
        let shard_count = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "CHUTE_SHARD_COUNT")
            .expect("CHUTE_SHARD_COUNT")["value"]
            .clone();
        assert_eq!(
            shard_count,
            Value::String(spec["completions"].to_string()),
            "CHUTE_SHARD_COUNT must equal completions"
        );
    }
}

/// The CreateTrainingJob request embedded in the Kubernetes ConfigMap (a `|` block).
fn configmap_json(k8s: &str) -> String {
    let mut lines = k8s.lines().skip_while(|l| !l.contains("request.json: |"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("---"))
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_configs_pass_validation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let k8s_cfg = tmp.path().join("k8s-input.json");
    write_file(
        &k8s_cfg,
        configmap_json(&read("k8s/indexed-job.yaml")).as_bytes(),
    );
    let endpoint = format!("http://127.0.0.1:{}", dead_port());
    for cfg in [docker_dir().join("example/input-data-config.json"), k8s_cfg] {
        let out = run(chute()
            .args(["run", "--endpoint-url", &endpoint])
            .arg("--input-config")
            .arg(&cfg)
            .arg("--input-dir")
            .arg(tmp.path().join("in"))
            .env("JOB_COMPLETION_INDEX", "1")
            .env("CHUTE_SHARD_COUNT", "4")
            .args(["--", "true"]));
        // Valid: it gets as far as listing the (unreachable) endpoint, exit 3.
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}: {}",
            cfg.display(),
            stderr(&out)
        );
        assert!(stderr(&out).contains("channel '"), "{}", stderr(&out));
    }
}

#[test]
fn compose_example_runs_under_chute_run() {
    let srv = Serve::start();
    let bucket = srv.root.path().join("datasets");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let made = Command::new("sh")
        .arg(docker_dir().join("example/make-dataset.sh"))
        .arg(&bucket)
        .status()
        .expect("sh");
    assert!(made.success());
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("opt/ml/input");
    let out = run(srv
        .chute("run")
        .env(
            "CHUTE_INPUT_CONFIG",
            docker_dir().join("example/input-data-config.json"),
        )
        .arg("--input-dir")
        .arg(&input)
        .arg("--")
        .arg("sh")
        .arg(docker_dir().join("example/train.sh")));
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    assert!(
        text.contains("train (File, this host's shard): 16 files"),
        "{text}"
    );
    assert!(
        text.contains("images (FastFile, read on demand): 7 files"),
        "{text}"
    );
    assert!(text.contains("records (Pipe, RecordIO) epoch 1:"), "{text}");
    assert!(text.contains("training done"), "{text}");
}

/// The Dockerfile's `docker run` example ends in the command the container runs
/// (after the image name, `chute`): it must be a program the runtime image
/// (debian slim plus fuse3) has, so the example works as printed.
#[test]
fn dockerfile_example_command_runs_in_that_image() {
    let dockerfile = read("Dockerfile");
    let example: Vec<&str> = dockerfile
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .skip_while(|l| !l.starts_with("docker run"))
        .take_while(|l| !l.is_empty())
        .collect();
    let last = example.last().expect("a docker run example");
    let command = last
        .strip_prefix("chute ")
        .unwrap_or_else(|| panic!("the example's last line starts with the image: {last}"));
    let program = command.split_whitespace().next().expect("a command");
    // What debian:bookworm-slim ships (dash, coreutils, findutils, grep).
    let in_image = [
        "sh", "bash", "ls", "cat", "head", "find", "du", "grep", "true",
    ];
    assert!(
        in_image.contains(&program),
        "the example runs '{program}', which the runtime image lacks"
    );
    let joined = example.join(" ");
    assert!(
        joined.contains("--security-opt apparmor=unconfined"),
        "{joined}"
    );
    assert!(!dockerfile.contains("apparmor:unconfined"));
}

#[test]
fn kubernetes_example_uses_a_service_account_and_scratch_input() {
    let k8s = read("k8s/indexed-job.yaml");
    let live: Vec<&str> = k8s
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !live
            .iter()
            .any(|l| l.contains("secretRef") || l.contains("AWS_SECRET_ACCESS_KEY")),
        "credentials come from the service account, not a Secret"
    );
    for needle in [
        "kind: ServiceAccount",
        "eks.amazonaws.com/role-arn",
        "serviceAccountName: chute-trainer",
        "emptyDir",
        "mountPath: /opt/ml/input",
        "appArmorProfile: {type: Unconfined}",
        "CHUTE_METRICS_ADDR",
    ] {
        assert!(k8s.contains(needle), "indexed-job.yaml lacks {needle}");
    }
    if let Some(docs) = yaml_docs("k8s/indexed-job.yaml") {
        let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "chute-trainer");
        let volumes = pod["volumes"].as_array().expect("volumes");
        let input = volumes
            .iter()
            .find(|v| v["name"] == "input")
            .expect("input volume");
        assert!(input["emptyDir"].is_object(), "{input}");
        let sa = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .expect("a ServiceAccount");
        assert_eq!(sa["metadata"]["name"], "chute-trainer");
    }
}
