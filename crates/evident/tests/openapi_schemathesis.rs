//! The OpenAPI document against the real server: schemathesis (PyPI) generates requests for
//! every operation the served document lists, positive and negative, and checks every answer
//! with all its checks (status codes, content types, schemas, headers, auth, stateful links).
//! Key rotation and revocation run against spare keys of their own (schemathesis.toml
//! parameter overrides), and a hook keeps the run's owner key from being revoked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, create_key, event};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The schemathesis version scripts/test.sh installs (into target/schemathesis-venv).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Test cases per operation and phase; with `MAX_TIME_SECONDS` this bounds the run.
const MAX_EXAMPLES: &str = "40";
/// schemathesis' own time budget for the whole run (its fuzzing and stateful phases stop then).
const MAX_TIME_SECONDS: &str = "150";
/// Past this the process is killed and the test fails: schemathesis itself must have hung.
const HARD_TIMEOUT: Duration = Duration::from_secs(420);

/// The schemathesis executable: `EVIDENT_SCHEMATHESIS`, else the venv scripts/test.sh makes,
/// else `schemathesis` on the PATH.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("EVIDENT_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/schemathesis-venv/bin/schemathesis");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("schemathesis")
}

/// Fails (never skips) when schemathesis cannot be run, saying how to install it.
fn check_installed(exe: &Path) {
    let version = Command::new(exe).arg("--version").output();
    let install = format!(
        "schemathesis is needed by this test and was not found at {}: run scripts/test.sh \
         (it installs it), or `python3 -m venv target/schemathesis-venv && \
         target/schemathesis-venv/bin/pip install schemathesis=={SCHEMATHESIS_VERSION}`, or set \
         EVIDENT_SCHEMATHESIS to its path",
        exe.display()
    );
    match version {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(SCHEMATHESIS_VERSION),
                "schemathesis {SCHEMATHESIS_VERSION} expected, found {text:?}: {install}"
            );
        }
        _ => panic!("{install}"),
    }
}

/// The id (`evk_` and 12 hex digits) of a whole key.
fn key_id(key: &str) -> String {
    key[..16].to_owned()
}

/// How many operations (path × method) the document lists.
fn operation_count(doc: &Value) -> usize {
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count())
        .sum()
}

/// The summary numbers schemathesis prints: (selected, total, tested).
fn summary(report: &str) -> Option<(usize, usize, usize)> {
    let number_after = |label: &str| -> Option<&str> {
        let start = report.find(label)? + label.len();
        Some(report[start..].lines().next()?.trim())
    };
    let selected = number_after("Selected:")?;
    let (selected, total) = selected.split_once('/')?;
    let tested = number_after("Tested:")?;
    Some((
        selected.trim().parse().ok()?,
        total.trim().parse().ok()?,
        tested.parse().ok()?,
    ))
}

#[test]
fn schemathesis_finds_no_failure_in_any_operation() {
    let exe = schemathesis();
    check_installed(&exe);

    let node = Node::embedded();
    // Spare keys: one to revoke, one to rotate (and any other route taking a key id).
    let revoke_spare = key_id(&create_key(
        &node.dir,
        "readonly",
        &["--label", "revoke-me"],
    ));
    let rotate_spare = key_id(&create_key(&node.dir, "writer", &["--label", "rotate-me"]));
    // A fuzzer sends thousands of requests with bad keys from one address: that is what the
    // brute-force limiter exists to stop, so it is raised out of the way for this run.
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_AUTH_FAILURE_LIMIT", "1000000000")]);
    let api = server.api(&node.owner_key);
    let batch: Vec<Value> = (0..12)
        .map(|i| event(&format!("u{i}"), "auth.login"))
        .collect();
    api.append(&Value::Array(batch)).expect("seed events");
    api.wait_checkpoint(12);

    let answer = api.get("/api/v1/openapi.json");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let doc = answer.json();
    let operations = operation_count(&doc);
    assert!(
        operations >= 16,
        "only {operations} operations in the document"
    );

    let work = node.file("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let schema = work.join("openapi.json");
    std::fs::write(&schema, answer.body.as_slice()).unwrap();
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "# Every route with a key id in its path works on the rotation spare, revocation\n\
             # on its own spare: both exist, so these operations reach their success paths.\n\
             # Every check, for every operation (set here: a check named on the command line\n\
             # would override the one exception below).\n\
             [checks]\n\
             enabled = true\n\n\
             [parameters]\n\
             \"path.id\" = \"{rotate_spare}\"\n\n\
             [[operations]]\n\
             include-path-regex = \"/revoke$\"\n\
             parameters = {{ \"path.id\" = \"{revoke_spare}\" }}\n\n\
             # The one check left out, for the audit log and its histogram: their parameters\n\
             # depend on one another (`to` may not be before `from`, `cursor` is for\n\
             # format=json pages only, `consistency_from` for format=ndjson only, ndjson is\n\
             # ascending only, a json page holds at most 1000), which OpenAPI cannot state\n\
             # per parameter, so a request valid parameter by parameter is rightly refused\n\
             # with a 400. Every other check still runs on them, negative_data_rejection\n\
             # included.\n\
             [[operations]]\n\
             include-path-regex = \"^/api/v1/audit-log(/histogram)?$\"\n\
             checks.positive_data_acceptance.enabled = false\n"
        ),
    )
    .unwrap();
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");

    let mut cmd = Command::new(&exe);
    cmd.current_dir(&work)
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "evident_hooks")
        .env("EVIDENT_ST_PROTECTED_KEY_IDS", key_id(&node.owner_key))
        .env("EVIDENT_ST_SPARE_KEY_ID", &rotate_spare)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(&schema)
        .args(["--url", &server.url])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", node.owner_key),
        ])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--max-time", MAX_TIME_SECONDS])
        .args(["--workers", "1"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .args(["--output-truncate", "false"]);
    if let Ok(seed) = std::env::var("EVIDENT_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out_path = work.join("report.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis still running after {HARD_TIMEOUT:?}; its output:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found failures (exit {status}):\n{report}\n--- server log ---\n{}",
        server.server_log()
    );
    assert_eq!(
        summary(&report),
        Some((operations, operations, operations)),
        "schemathesis must test every operation of the document:\n{report}"
    );
    assert!(
        !report.contains("returned only 401/403"),
        "some operations were never authorized (the run's key was lost?):\n{report}"
    );
    // The owner key the run used still works, and the spares were really used.
    assert_eq!(api.get("/api/v1/keys").status, 200);
    let keys = api.get("/api/v1/keys").json();
    let status_of = |id: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .map(|k| k["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        status_of(&revoke_spare).as_deref(),
        Some("revoked"),
        "{keys}"
    );
    assert_ne!(
        status_of(&rotate_spare).as_deref(),
        Some("active"),
        "{keys}"
    );
}
