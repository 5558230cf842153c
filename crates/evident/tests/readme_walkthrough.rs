//! The README's walkthrough, run exactly as written, so that it cannot rot: every
//! ```` ```sh name=walkthrough ```` block of README.md, in order, becomes one bash script run
//! with `set -euo pipefail`, the `evident` binary under test first on PATH, a scratch TMPDIR
//! (the walkthrough's `mktemp -d` lands in it) and a free port in `EVIDENT_LISTEN`. It must
//! succeed, and its two tamper steps must fail verification with the verdicts the README
//! shows. The walkthrough's own trap stops its server; this test also kills the script's whole
//! process group afterwards, whatever happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The README, read at compile time: editing it rebuilds this test.
const README: &str = include_str!("../../../README.md");

/// The fence that opens a walkthrough block.
const FENCE: &str = "```sh name=walkthrough";

/// What the README says the walkthrough prints, and the run must print too: the intact
/// checks, then each tamper step refused. (Counts and sequence numbers are left out: the
/// node also logs its own audit events, which may shift them; the sequence numbers named by
/// the failures are checked against the walkthrough's files instead.)
const EXPECTED: [&str; 8] = [
    "OK: export intact:",
    "consistent with your checkpoint: no truncation or rollback",
    "OK: log intact:",
    "hash chain broken (stored hash does not match the recomputed one)",
    "verify refused it (exit code 1)",
    "refused: evident: events are append-only: UPDATE refused",
    "edited: the threshold change is now mallory's",
    "verify found it (exit code 1)",
];

/// A guard against a hung script (a server that never answers), not a speed requirement.
const HANG_GUARD: Duration = Duration::from_secs(600);

/// The walkthrough blocks of `markdown`, in order, joined into one script.
fn walkthrough(markdown: &str) -> (String, usize) {
    let mut script = String::new();
    let mut blocks = 0;
    let mut inside = false;
    for line in markdown.lines() {
        if inside {
            if line.trim_end() == "```" {
                inside = false;
                script.push('\n');
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim_end() == FENCE {
            inside = true;
            blocks += 1;
        }
    }
    assert!(!inside, "README.md: a walkthrough block is not closed");
    (script, blocks)
}

/// Fails with how to install `tool` when it is missing.
fn require(tool: &str, check: &[&str], install: &str) {
    let found = Command::new(tool)
        .args(check)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the README walkthrough needs `{tool}`, which is missing here: {install}"
    );
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    server_log: String,
    /// The walkthrough's own directory (its `mktemp -d`), kept until the outcome is dropped.
    workdir: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server.log ---\n{}",
            self.status, self.stdout, self.stderr, self.server_log
        )
    }
}

/// The directory the walkthrough's `mktemp -d` made under `scratch`.
fn workdir(scratch: &Path) -> Option<PathBuf> {
    std::fs::read_dir(scratch)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
}

/// Runs `script` once in a fresh scratch directory on a fresh port.
fn run_once(script: &str) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let script_path = tmp.path().join("walkthrough.sh");
    std::fs::write(&script_path, format!("set -euo pipefail\n{script}")).unwrap();
    let stdout_path = tmp.path().join("stdout.txt");
    let stderr_path = tmp.path().join("stderr.txt");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let bin = Path::new(env!("CARGO_BIN_EXE_evident"));
    let bin_dir = bin.parent().unwrap();
    let path = match std::env::var_os("PATH") {
        Some(old) => {
            let mut dirs = vec![bin_dir.to_owned()];
            dirs.extend(std::env::split_paths(&old));
            std::env::join_paths(dirs).unwrap()
        }
        None => bin_dir.as_os_str().to_owned(),
    };

    let mut cmd = Command::new("bash");
    cmd.arg("--noprofile")
        .arg("--norc")
        .arg(&script_path)
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("TMPDIR", &scratch)
        .env("EVIDENT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        // Its own process group, so that everything it started can be killed at once.
        .process_group(0);
    // No variable of the caller may change what the walkthrough does.
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("EVIDENT_") && text != "EVIDENT_LISTEN" {
            cmd.env_remove(&name);
        }
    }
    let mut child = cmd.spawn().expect("start bash");
    let group = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > HANG_GUARD {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever happened, nothing the script started outlives it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let hung = status.is_none();
    let status = match status {
        Some(status) => status,
        None => child.wait().unwrap(),
    };
    let workdir = workdir(&scratch);
    let server_log = workdir
        .as_ref()
        .and_then(|dir| std::fs::read_to_string(dir.join("server.log")).ok())
        .unwrap_or_default();
    let outcome = Outcome {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        server_log,
        workdir,
        _tmp: tmp,
    };
    assert!(
        !hung,
        "the walkthrough hung and was killed\n{}",
        outcome.describe()
    );
    outcome
}

#[test]
fn readme_walkthrough_runs_as_written() {
    require(
        "bash",
        &["--version"],
        "install bash (apt-get install bash)",
    );
    require(
        "curl",
        &["--version"],
        "install curl (apt-get install curl)",
    );
    require(
        "python3",
        &["-c", "import sqlite3"],
        "install Python 3 with its sqlite3 module (apt-get install python3)",
    );

    let (script, blocks) = walkthrough(README);
    assert!(
        blocks >= 5,
        "README.md should hold the walkthrough in `{FENCE}` blocks; found {blocks}"
    );
    for expected in EXPECTED {
        assert!(
            README.contains(expected),
            "README.md no longer shows {expected:?}: update the README or this test"
        );
    }

    // A port taken between choosing it and the server binding it is the only retry.
    let mut outcome = run_once(&script);
    for _ in 0..2 {
        if outcome.status.success() || !outcome.server_log.contains("Address already in use") {
            break;
        }
        outcome = run_once(&script);
    }

    assert!(
        outcome.status.success(),
        "the README walkthrough failed\n{}",
        outcome.describe()
    );
    let output = format!("{}{}", outcome.stdout, outcome.stderr);
    for expected in EXPECTED {
        assert!(
            output.contains(expected),
            "the walkthrough did not print {expected:?}\n{}",
            outcome.describe()
        );
    }
    // The failures name the entries that were edited: bob's event in the export (its seq
    // and line), the threshold change in the database.
    let dir = outcome
        .workdir
        .clone()
        .expect("the walkthrough's directory");
    let export = std::fs::read_to_string(dir.join("audit.ndjson")).unwrap();
    let (line, bob) = export
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(r#""actor":{"id":"bob""#))
        .expect("bob's event in the export");
    let seq = serde_json::from_str::<serde_json::Value>(bob).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let verdict = format!("FAILED at seq {seq} (line {}): hash chain broken", line + 1);
    assert!(
        output.contains(&verdict),
        "expected {verdict:?}\n{}",
        outcome.describe()
    );
    let db = rusqlite::Connection::open(dir.join("demo-data/evident.db")).unwrap();
    let edited: i64 = db
        .query_row(
            "SELECT seq FROM events WHERE actor_id = 'mallory'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let verdict = format!("FAILED at seq {edited}: hash chain broken");
    assert!(
        output.contains(&verdict),
        "expected {verdict:?}\n{}",
        outcome.describe()
    );

    // Each tamper step failed exactly once, as the README says.
    assert_eq!(
        output.matches("verify refused it (exit code 1)").count(),
        1,
        "{}",
        outcome.describe()
    );
    assert_eq!(
        output.matches("verify found it (exit code 1)").count(),
        1,
        "{}",
        outcome.describe()
    );
}

#[test]
fn walkthrough_blocks_are_found_in_order() {
    let markdown = "intro\n```sh name=walkthrough\necho one\n```\ntext\n```sh\necho skipped\n```\n```sh name=walkthrough\necho two\n```\n";
    let (script, blocks) = walkthrough(markdown);
    assert_eq!(blocks, 2);
    assert_eq!(script, "echo one\n\necho two\n\n");
}

/// Where `line` shows a hash cut short: a run of at least four hex digits next to an ellipsis
/// (`…` or `...`), as in `30f18c89…7059e5`.
fn cut_hash(line: &str) -> Option<&str> {
    let hex_run = |s: &str| s.len() >= 4 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for ellipsis in ["…", "..."] {
        let mut rest = line;
        while let Some(at) = rest.find(ellipsis) {
            let before = rest[..at]
                .rsplit(|c: char| !c.is_ascii_hexdigit())
                .next()
                .unwrap_or("");
            let after = rest[at + ellipsis.len()..]
                .split(|c: char| !c.is_ascii_hexdigit())
                .next()
                .unwrap_or("");
            if hex_run(before) || hex_run(after) {
                return Some(
                    &rest[at.saturating_sub(before.len())..at + ellipsis.len() + after.len()],
                );
            }
            rest = &rest[at + ellipsis.len()..];
        }
    }
    None
}

/// The README shows every hash whole (a reader compares them, copies them into commands,
/// and checks them against their own runs), in example output and in commands alike.
#[test]
fn readme_shows_every_hash_whole() {
    assert_eq!(
        cut_hash("\"hash\":\"30f18c89…7059e5\""),
        Some("30f18c89…7059e5")
    );
    assert_eq!(cut_hash("seal 83a773bf... here"), Some("83a773bf..."));
    assert_eq!(cut_hash("{…as in /consumers}"), None);
    assert_eq!(cut_hash("leaves `0 … n−1`"), None);
    let cut: Vec<String> = README
        .lines()
        .enumerate()
        .filter_map(|(n, line)| cut_hash(line).map(|c| format!("line {}: {c}", n + 1)))
        .collect();
    assert!(cut.is_empty(), "README.md shows hashes cut short: {cut:#?}");
}
