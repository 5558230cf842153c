//! The CLI does not surprise, through the real binary: a mistyped data directory is refused,
//! never turned into a new node with fresh keys; `serve` checks its listen address before it
//! creates anything; man pages and shell completions are generated from the command tree;
//! progress bars are drawn on a terminal only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event, run};

/// Commands that need an existing node refuse a directory that is not one, name it, say
/// what to do, and leave nothing behind; `keys create --init` creates the node.
#[test]
fn a_directory_that_is_not_a_node_is_refused_unless_init_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("evident-dta");
    let typo_str = typo.to_str().unwrap();

    let out = run(&["keys", "create", "--data-dir", typo_str, "--role", "owner"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(typo_str),
        "names the path: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--init"),
        "says what to do: {}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("evk_"),
        "no key printed: {}",
        out.stdout
    );
    assert!(!typo.exists(), "nothing created at {typo_str}");

    for args in [
        vec!["verify", "--data-dir", typo_str],
        vec!["prune", "--data-dir", typo_str, "--retention-days", "365"],
        vec!["keys", "list", "--data-dir", typo_str],
    ] {
        let out = run(&args);
        assert_ne!(out.code, Some(0), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains(typo_str) && out.stderr.contains("not an"),
            "{args:?} names the directory and the problem: {}",
            out.stderr
        );
        assert!(!typo.exists(), "{args:?} created {typo_str}");
    }

    let out = run(&[
        "keys",
        "create",
        "--init",
        "--data-dir",
        typo_str,
        "--role",
        "owner",
    ])
    .ok();
    assert!(out.stdout.lines().last().unwrap().starts_with("evk_"));
    // Now it is a node: no --init needed, and the same node (not a second one) answers.
    let again = run(&["keys", "create", "--data-dir", typo_str, "--role", "writer"]).ok();
    let node_of = |s: &str| {
        s.lines()
            .next()
            .and_then(|l| l.split(" for node ").nth(1))
            .map(str::to_owned)
    };
    assert!(node_of(&out.stdout).is_some(), "{}", out.stdout);
    assert_eq!(node_of(&out.stdout), node_of(&again.stdout));
    let listed = run(&["keys", "list", "--data-dir", typo_str, "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}

/// `serve` on an address that is taken fails before it creates the data directory.
#[test]
fn serve_checks_the_listen_address_before_creating_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new-node");
    let out = run(&[
        "serve",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(&addr),
        "names the address: {}",
        out.stderr
    );
    assert!(
        !dir.exists(),
        "serve created {} before binding",
        dir.display()
    );
    // An existing node is untouched by the failed start and still verifies.
    let node = Node::new();
    let out = run(&["serve", "--data-dir", node.dir_str(), "--listen", &addr]);
    assert_ne!(out.code, Some(0));
    node.verify().ok();
}

/// `--since 2s` on query and export (and `since=` on the API) means "recorded within the
/// last 2 s"; an export states the absolute `from` it meant and verifies; bad spans and
/// `since` with `from` are refused naming the field.
#[test]
fn since_selects_a_span_before_now_on_query_export_and_the_api() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    api.append(&event("old-actor", "auth.login")).unwrap();
    // Recorded at least 4 s before the query below: outside a 2 s span.
    std::thread::sleep(std::time::Duration::from_secs(4));
    api.append(&event("new-actor", "auth.login")).unwrap();

    let shown = server
        .cli(&node.owner_key, &["query", "--since", "2s", "--json"])
        .ok();
    let events: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let actors: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"]["id"].as_str())
        .filter(|a| a.ends_with("-actor"))
        .collect();
    assert_eq!(actors, ["new-actor"], "{}", shown.stdout);
    let all = server
        .cli(&node.owner_key, &["query", "--since", "1h", "--json"])
        .ok();
    assert!(all.stdout.contains("old-actor") && all.stdout.contains("new-actor"));

    // An export's signed header states the absolute `from`, and the bundle verifies.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("since.ndjson");
    server
        .export(&node.owner_key, "ndjson", &bundle, &["--since", "1h"])
        .ok();
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&bundle)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let query = &header["query"];
    assert!(query.get("since").is_none(), "{header}");
    let from: i64 = query["from"].as_str().unwrap().parse().unwrap();
    let recorded_now = evident_server::now_ms();
    assert!(
        (recorded_now - 3_700_000..=recorded_now - 3_500_000).contains(&from),
        "{from}"
    );
    run(&[
        "verify",
        "--export",
        bundle.to_str().unwrap(),
        "--public-key",
        &node.public_key(),
    ])
    .ok();

    // Refused, naming the field: a bad span, since with from (API), since with --from (CLI).
    api.get("/api/v1/audit-log?since=2x")
        .assert_error(400, "invalid_parameter", Some("since"));
    api.get("/api/v1/audit-log?since=2h&from=0").assert_error(
        400,
        "invalid_parameter",
        Some("since"),
    );
    let out = server.cli(&node.owner_key, &["query", "--since", "2h", "--from", "0"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--since") && out.stderr.contains("--from"),
        "{}",
        out.stderr
    );
}

/// `--out -` is standard output for every command that has `--out`, never a file named `-`.
#[test]
fn out_dash_is_standard_output_everywhere() {
    let node = Node::new();
    let server = Server::start(&node);
    server
        .api(&node.owner_key)
        .append(&event("alice", "auth.login"))
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let in_cwd = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--url", &server.url, "--key", &node.owner_key]);
        let out = common::evident()
            .current_dir(cwd.path())
            .args(&all)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let note = in_cwd(&["checkpoint", "--out", "-"]);
    assert!(note.contains("\n\n\u{2014} "), "a signed note: {note}");
    let key = in_cwd(&["public-key", "--out", "-"]);
    assert_eq!(key.trim(), node.public_key());
    let csv = in_cwd(&["export", "--format", "csv", "--out", "-"]);
    assert!(
        csv.lines().count() >= 2 && csv.contains("auth.login"),
        "{csv}"
    );
    assert!(
        !cwd.path().join("-").exists(),
        "a file named - was written instead of standard output"
    );
}

/// Man pages and completions come from the command tree: a page per subcommand, named as
/// `man` looks them up, and completion scripts that offer the subcommands and their flags.
#[test]
fn man_pages_and_shell_completions_are_generated_from_the_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    run(&["man", "--out", dir.to_str().unwrap()]).ok();
    for page in [
        "evident.1",
        "evident-serve.1",
        "evident-verify.1",
        "evident-keys-create.1",
        "evident-proof-inclusion.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff: {text:.200}"
        );
    }
    let top = std::fs::read_to_string(dir.join("evident.1")).unwrap();
    for sub in ["serve", "verify", "export", "keys", "prune", "completions"] {
        assert!(top.contains(sub), "evident.1 lists {sub}");
    }
    let create = std::fs::read_to_string(dir.join("evident-keys-create.1")).unwrap();
    assert!(
        create.contains("init") && create.contains("role"),
        "{create:.400}"
    );

    let bash = run(&["completions", "bash"]).ok().stdout;
    assert!(
        bash.contains("complete ") && bash.contains("_evident"),
        "{bash:.300}"
    );
    for word in ["serve", "verify", "--data-dir", "--since", "--init"] {
        assert!(bash.contains(word), "bash completion offers {word}");
    }
    let zsh = run(&["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef evident"), "{zsh:.100}");
    let fish = run(&["completions", "fish"]).ok().stdout;
    assert!(fish.contains("complete -c evident"), "{fish:.200}");
    run(&["completions", "tcsh"]).code(2);
}

/// TLS mistakes are told as what to do, in one line, with no log line from the TLS stack.
#[test]
fn tls_mistakes_say_what_to_do_once() {
    let node = Node::new();
    let tls = Server::start_tls_self_signed(&node);
    let other = Node::new();
    let plain = Server::start(&other);
    let attempt = |url: &str| {
        let out = run(&["query", "--url", url, "--key", &node.owner_key]);
        assert_eq!(out.code, Some(1), "{url}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{url}: one line, no log lines: {}",
            out.stderr
        );
        lines[0].to_owned()
    };
    let unknown_ca = attempt(&tls.url);
    assert!(unknown_ca.contains("pass --ca-cert FILE"), "{unknown_ca}");
    let http_to_tls = attempt(&tls.url.replacen("https://", "http://", 1));
    assert!(
        http_to_tls.contains(&format!("use {}", tls.url)),
        "{http_to_tls}"
    );
    let https_to_plain = attempt(&plain.url.replacen("http://", "https://", 1));
    assert!(
        https_to_plain.contains(&format!("use {}", plain.url)),
        "{https_to_plain}"
    );
    // With the CA it works.
    tls.cli(&node.owner_key, &["query"]).ok();
}

/// occurred_at (when the client says it happened) is shown next to recorded_at in query
/// tables, and is the last CSV column (empty when the client did not say).
#[test]
fn occurred_at_is_shown_in_tables_and_csv() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let mut early = event("early-actor", "auth.login");
    early["occurred_at"] = serde_json::json!("2026-03-14T09:00:00Z");
    api.append(&early).unwrap();
    api.append(&event("now-actor", "auth.login")).unwrap();

    let table = server
        .cli(&node.owner_key, &["query", "--action", "auth.login"])
        .ok()
        .stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("RECORDED") && header.contains("OCCURRED"),
        "{table}"
    );
    let early_row = table.lines().find(|l| l.contains("early-actor")).unwrap();
    assert!(
        early_row.contains("2026-03-14T09:00:00.000Z"),
        "{early_row}"
    );
    let now_row = table.lines().find(|l| l.contains("now-actor")).unwrap();
    assert!(!now_row.contains("2026-03-14"), "{now_row}");

    let tmp = tempfile::tempdir().unwrap();
    let csv_file = tmp.path().join("out.csv");
    server
        .export(
            &node.owner_key,
            "csv",
            &csv_file,
            &["--action", "auth.login"],
        )
        .ok();
    let mut reader = csv::Reader::from_path(&csv_file).unwrap();
    let header = reader.headers().unwrap().clone();
    assert_eq!(header.iter().next_back(), Some("occurred_at"), "{header:?}");
    let at = header.len() - 1;
    let actor = header.iter().position(|h| h == "actor").unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let by_actor = |name: &str| rows.iter().find(|r| &r[actor] == name).unwrap().clone();
    assert_eq!(&by_actor("early-actor")[at], "2026-03-14T09:00:00.000Z");
    assert_eq!(&by_actor("now-actor")[at], "");
}

/// occurred_at is filterable through the real binary and the API: `--occurred-from` /
/// `--occurred-to` (and `occurred_from` / `occurred_to` on the API) select exactly the events
/// whose client-stated time lies in the span, never one that states none; `--occurred-since`
/// is relative to now; an export's signed header states the bounds it was cut with and
/// verifies; bad values are refused naming the field.
#[test]
fn occurred_at_filters_select_exactly_the_matching_events_on_the_cli_and_the_api() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let recent = evident_server::now_ms() - 30 * 60_000;
    let times = [
        (
            "before-actor",
            Some(serde_json::json!("2026-03-14T08:59:59.999Z")),
        ),
        (
            "start-actor",
            Some(serde_json::json!("2026-03-14T09:00:00Z")),
        ),
        (
            "inside-actor",
            Some(serde_json::json!(1_773_480_000_000i64)),
        ),
        ("end-actor", Some(serde_json::json!("2026-03-14T10:00:00Z"))),
        ("recent-actor", Some(serde_json::json!(recent))),
        ("unstated-actor", None),
    ];
    let batch: Vec<serde_json::Value> = times
        .iter()
        .map(|(actor, at)| {
            let mut e = event(actor, "auth.login");
            if let Some(at) = at {
                e["occurred_at"] = at.clone();
            }
            e
        })
        .collect();
    api.append(&serde_json::Value::Array(batch)).unwrap();
    let actors = |events: &serde_json::Value| -> Vec<String> {
        let mut out: Vec<String> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["actor"]["id"].as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    };
    let cli_actors = |args: &[&str]| {
        let mut all = vec!["query", "--all", "--json"];
        all.extend_from_slice(args);
        let out = server.cli(&node.owner_key, &all).ok();
        actors(&serde_json::from_str(&out.stdout).unwrap())
    };
    let span = [
        "--occurred-from",
        "2026-03-14T09:00:00Z",
        "--occurred-to",
        "2026-03-14T10:00:00Z",
    ];
    assert_eq!(cli_actors(&span), ["inside-actor", "start-actor"]);
    assert_eq!(
        cli_actors(&["--occurred-from", "2026-03-14T10:00:00Z"]),
        ["end-actor", "recent-actor"]
    );
    assert_eq!(
        cli_actors(&["--occurred-to", "1773478800000"]),
        ["before-actor"]
    );
    assert_eq!(cli_actors(&["--occurred-since", "1h"]), ["recent-actor"]);
    // The node's own events (and any without occurred_at) match no occurred bound at all.
    assert_eq!(cli_actors(&["--occurred-from", "0"]).len(), 5);

    let page = api
        .get("/api/v1/audit-log?occurred_from=2026-03-14T09:00:00Z&occurred_to=1773482400000")
        .json();
    assert_eq!(actors(&page["events"]), ["inside-actor", "start-actor"]);
    let page = api.get("/api/v1/audit-log?occurred_since=1h").json();
    assert_eq!(actors(&page["events"]), ["recent-actor"]);

    // The export's signed header states the bounds; the bundle holds exactly the matches
    // and verifies offline.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("occurred.ndjson");
    server
        .export(&node.owner_key, "ndjson", &bundle, &span)
        .ok();
    let text = std::fs::read_to_string(&bundle).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        header["query"]["occurred_from"], "2026-03-14T09:00:00Z",
        "{header}"
    );
    assert_eq!(header["query"]["occurred_to"], "2026-03-14T10:00:00Z");
    let exported: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("seq").is_some())
        .collect();
    assert_eq!(
        actors(&serde_json::Value::Array(exported)),
        ["inside-actor", "start-actor"],
        "{text}"
    );
    // The verdict states the filter the signed header holds, occurred bounds included.
    let verdict = common::verify_export(&bundle, &node.public_key()).ok();
    assert!(
        verdict.stdout.contains(
            "occurred_from=2026-03-14T09:00:00.000Z occurred_to=2026-03-14T10:00:00.000Z"
        ),
        "{}",
        verdict.stdout
    );
    let since_bundle = tmp.path().join("since.ndjson");
    server
        .export(
            &node.owner_key,
            "ndjson",
            &since_bundle,
            &["--occurred-since", "1h"],
        )
        .ok();
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&since_bundle)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(header["query"].get("occurred_since").is_none(), "{header}");
    let from: i64 = header["query"]["occurred_from"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(from <= recent && from > recent - 31 * 60_000, "{from}");
    common::verify_export(&since_bundle, &node.public_key()).ok();

    // Refused, naming the field.
    api.get("/api/v1/audit-log?occurred_from=yesterday")
        .assert_error(400, "invalid_parameter", Some("occurred_from"));
    api.get(
        "/api/v1/audit-log?occurred_from=2026-03-14T10:00:00Z&occurred_to=2026-03-14T09:00:00Z",
    )
    .assert_error(400, "invalid_parameter", Some("occurred_to"));
    api.get("/api/v1/audit-log?occurred_since=1h&occurred_from=0")
        .assert_error(400, "invalid_parameter", Some("occurred_since"));
    let out = server.cli(
        &node.owner_key,
        &["query", "--occurred-since", "2h", "--occurred-from", "0"],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

/// The usage of offline verification names only what it needs; progress is drawn for a
/// person at a terminal only (online verification's too), so piped output carries none.
#[test]
fn verify_usage_names_what_each_form_needs_and_piped_runs_draw_no_progress() {
    let help = run(&["verify", "--help"]).ok().stdout;
    let usage: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Usage:"))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let export = usage
        .iter()
        .find(|l| l.contains("--export FILE"))
        .unwrap_or_else(|| panic!("a usage line for --export: {usage:?}"));
    assert!(export.contains("--public-key VKEY"), "{export}");
    for online_only in ["--url", "--key", "--timeout", "--ca-cert"] {
        assert!(
            !export.contains(online_only),
            "{export} names {online_only}"
        );
    }
    assert!(
        usage.iter().any(|l| l.contains("--data-dir DIR")),
        "{usage:?}"
    );

    let node = Node::new();
    let server = Server::start(&node);
    let mut stdin = String::new();
    for i in 0..30 {
        stdin.push_str(&event(&format!("a{i}"), "auth.login").to_string());
        stdin.push('\n');
    }
    let out = common::run_with_stdin(
        &[
            "append",
            "--stdin",
            "--batch-size",
            "7",
            "--url",
            &server.url,
            "--key",
            &node.owner_key,
        ],
        stdin.as_bytes(),
    )
    .ok();
    assert_eq!(out.stdout.lines().count(), 30, "{}", out.stdout);
    assert_eq!(out.stderr, "", "nothing but receipts when piped");

    // Online verification: piped, the verdict alone; on a terminal (a real pseudo-terminal,
    // through util-linux `script`), a progress bar fed by the server's streamed progress,
    // then the same verdict.
    let piped = server.cli(&node.owner_key, &["verify"]).ok();
    assert!(
        piped.stdout.starts_with("OK: log intact"),
        "{}",
        piped.stdout
    );
    assert_eq!(piped.stderr, "", "no progress when piped");
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_script,
        "this test runs `evident verify` on a pseudo-terminal with util-linux `script`: \
         apt-get install bsdutils (Debian) or util-linux"
    );
    let command = format!(
        "{} verify --url {} --key {}",
        common::bin(),
        server.url,
        node.owner_key
    );
    let tty = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("verifying on the server"),
        "no progress bar: {shown:?}"
    );
    assert!(shown.contains("OK: log intact"), "{shown:?}");

    // The API's streamed form: progress lines, then the answer; a bad format is refused.
    let api = server.api(&node.owner_key);
    let streamed = api.get("/api/v1/verify?format=ndjson");
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let lines: Vec<serde_json::Value> = streamed
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, progress) = lines.split_last().unwrap();
    assert!(!progress.is_empty(), "{lines:?}");
    let total = progress[0]["progress"]["total"].as_u64().unwrap();
    assert!(total >= 30, "{lines:?}");
    for p in progress {
        assert!(p["progress"]["checked"].as_u64().unwrap() <= total, "{p}");
    }
    assert_eq!(last["ok"], true, "{last}");
    assert!(last["entries"].as_u64().unwrap() >= total, "{last}");
    api.get("/api/v1/verify?format=xml")
        .assert_error(400, "invalid_parameter", Some("format"));
}

/// Runs `command` (a shell command line) on a real pseudo-terminal (util-linux `script`),
/// returning what the terminal showed and whether it succeeded.
fn on_a_terminal(command: &str) -> (bool, String) {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_script,
        "this test runs the CLI on a pseudo-terminal with util-linux `script`: \
         apt-get install bsdutils (Debian) or util-linux"
    );
    let tty = std::process::Command::new("script")
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    (
        tty.status.success(),
        String::from_utf8_lossy(&tty.stdout).into_owned(),
    )
}

/// `append --stdin` and `migrate` draw a progress bar for a person at a terminal, and none
/// when their output is piped.
#[test]
fn append_stdin_and_migrate_draw_progress_on_a_terminal_only() {
    let node = Node::new();
    let mut server = Server::start(&node);
    let input = node.file("events.ndjson");
    let mut lines = String::new();
    for i in 0..40 {
        lines.push_str(&event(&format!("t{i}"), "auth.login").to_string());
        lines.push('\n');
    }
    std::fs::write(&input, &lines).unwrap();
    let (ok, shown) = on_a_terminal(&format!(
        "{} append --stdin --batch-size 5 --url {} --key {} < {}",
        common::bin(),
        server.url,
        node.owner_key,
        input.display()
    ));
    assert!(ok, "{shown}");
    assert!(shown.contains("appending"), "no progress bar: {shown:?}");
    assert_eq!(
        shown.matches("seq=").count(),
        40,
        "a receipt per event: {shown:?}"
    );
    server.stop();

    // Piped: no bar.
    let piped_to = node.file("piped-copy");
    let piped = run(&[
        "migrate",
        "--from",
        node.dir_str(),
        "--to",
        piped_to.to_str().unwrap(),
    ])
    .ok();
    assert!(!piped.stderr.contains("copying"), "{}", piped.stderr);
    // On a terminal: the bar over the entries copied, then the same summary.
    let moved = node.file("moved");
    let (ok, shown) = on_a_terminal(&format!(
        "{} migrate --from {} --to {}",
        common::bin(),
        node.dir_str(),
        moved.display()
    ));
    assert!(ok, "{shown}");
    assert!(shown.contains("copying"), "no progress bar: {shown:?}");
    run(&["verify", "--data-dir", moved.to_str().unwrap()]).ok();
}
