//! End to end, through the real binary: access hardening as a user meets it. A burst of bad
//! keys blocks only bad keys and records one event however concurrent; forwarding headers
//! count only from trusted proxies; one address cannot take every connection and the header
//! limit holds at its documented size; refusals never name another tenant; a rotation keeps
//! the old key a day and cannot lock its caller out; the data directory is private; `export
//! --out` writes through FIFOs, devices and symlinks; CLI tables show bidi and control
//! characters escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Answer, Node, Server, event};
use serde_json::{Value, json};

/// POSTs `body` as JSON to `path` with `key`.
fn post_json(server: &Server, key: &str, path: &str, body: &Value) -> Answer {
    let resp = server
        .client()
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    Answer {
        status,
        body: resp.bytes().unwrap().to_vec(),
    }
}

#[test]
fn query_and_key_tables_show_bidi_and_control_characters_escaped() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let mut spoof = event("alice\u{202e}nimda\u{202c}", "auth.login");
    spoof["target"] = json!({"kind": "file", "id": "a\u{2066}b\u{2069}\u{200f}"});
    spoof["actor"]["ip"] = json!(null);
    api.append(&spoof).unwrap();
    let shown = server.cli(&node.owner_key, &["query"]).ok();
    assert!(
        shown.stdout.contains(r"alice\u{202e}nimda\u{202c} (user)"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(r"file:a\u{2066}b\u{2069}\u{200f}"),
        "{}",
        shown.stdout
    );
    for c in shown.stdout.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{2000}'..='\u{206f}').contains(&c)),
            "{c:?} reached the terminal raw:\n{}",
            shown.stdout
        );
    }
    // The same for a key label in `keys list`.
    let created = post_json(
        &server,
        &node.owner_key,
        "/api/v1/keys",
        &json!({"role": "readonly", "label": "ops\u{202e}tpyrc"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let listed = server.cli(&node.owner_key, &["keys", "list"]).ok();
    assert!(
        listed.stdout.contains(r"ops\u{202e}tpyrc"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains('\u{202e}'), "{}", listed.stdout);
}

/// `evident export --out OUT` against `server`, run in `cwd`.
fn export_to(server: &Server, key: &str, out: &str, cwd: &std::path::Path) -> common::Run {
    let output = common::evident()
        .args(["export", "--out", out, "--url", &server.url, "--key", key])
        .current_dir(cwd)
        .output()
        .unwrap();
    common::Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Asserts that `text` is a whole NDJSON export bundle of `events` events.
#[track_caller]
fn assert_bundle(text: &str, events: usize) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events + 2, "{text}");
    assert!(lines[0].contains("evident-export/"), "{text}");
}

#[test]
fn export_out_writes_through_fifos_devices_and_symlinks_and_dash_is_stdout() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    for i in 0..3 {
        api.append(&event("alice", &format!("export.through{i}")))
            .unwrap();
    }
    let dir = node.file("out");
    std::fs::create_dir_all(&dir).unwrap();
    let key = node.owner_key.as_str();

    // A FIFO: the reader on the other end gets the export, and the FIFO stays a FIFO.
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    export_to(&server, key, fifo.to_str().unwrap(), &dir).ok();
    let through_fifo = reader.join().unwrap();
    assert_bundle(&through_fifo, 3 + 1);
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // A symlink to a regular file: the link stays a link, its target holds the export, and
    // the target was replaced by a rename (a new inode), not rewritten in place.
    let target = dir.join("target.ndjson");
    std::fs::write(&target, "old contents\n").unwrap();
    let old_inode = std::fs::metadata(&target).unwrap().ino();
    let link = dir.join("link.ndjson");
    std::os::unix::fs::symlink("target.ndjson", &link).unwrap();
    export_to(&server, key, "link.ndjson", &dir).ok();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert_bundle(&written, 3 + 2);
    assert_ne!(std::fs::metadata(&target).unwrap().ino(), old_inode);

    // A symlink to a character device (/dev/null): written through, both left as they are.
    let null_link = dir.join("null");
    std::os::unix::fs::symlink("/dev/null", &null_link).unwrap();
    export_to(&server, key, null_link.to_str().unwrap(), &dir).ok();
    assert!(
        std::fs::symlink_metadata(&null_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );

    // `-` is standard output; no file named `-` appears.
    let out = export_to(&server, key, "-", &dir).ok();
    assert_bundle(&out.stdout, 3 + 4);
    assert!(!dir.join("-").exists());

    // A regular file is still replaced atomically: no temporary file is left behind.
    let plain = dir.join("plain.ndjson");
    export_to(&server, key, plain.to_str().unwrap(), &dir).ok();
    assert_bundle(&std::fs::read_to_string(&plain).unwrap(), 3 + 5);
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".evident-export-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The permission bits of `path`.
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The data directory's entries that must be private, with the mode each must have.
const PRIVATE: &[(&str, u32)] = &[
    ("", 0o700),
    ("keys", 0o700),
    ("node.toml", 0o600),
    ("evident.lock", 0o600),
    ("evident.db", 0o600),
    ("evident.db-wal", 0o600),
    ("evident.db-shm", 0o600),
    ("keys/checkpoint.key", 0o600),
    ("keys/seal.key", 0o600),
];

#[test]
fn the_data_directory_is_private_from_creation_and_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::embedded();
    let mut server = Server::start(&node);
    server
        .api(&node.owner_key)
        .append(&event("alice", "modes.checked"))
        .unwrap();
    // While the server runs the WAL and shared-memory files exist: everything is private.
    for (name, mode) in PRIVATE {
        assert_eq!(mode_of(&node.dir.join(name)), *mode, "{name:?} on creation");
    }
    server.stop();

    // Someone loosens every entry; the next start tightens them back and says so.
    for (name, mode) in PRIVATE {
        let path = node.dir.join(name);
        if path.exists() {
            let loose = if *mode == 0o700 { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        }
    }
    server.restart();
    server
        .api(&node.owner_key)
        .append(&event("alice", "modes.tightened"))
        .unwrap();
    for (name, mode) in PRIVATE {
        assert_eq!(
            mode_of(&node.dir.join(name)),
            *mode,
            "{name:?} after a restart"
        );
    }
    let log = server.server_log();
    assert!(log.contains("tightened the permissions"), "{log}");
}

/// Milliseconds since the epoch of an RFC 3339 timestamp the server wrote.
fn millis_of(rfc3339: &Value) -> i64 {
    evident_core::event::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap()
}

#[test]
fn rotation_without_a_body_keeps_the_old_key_a_day_and_cannot_lock_the_caller_out() {
    let node = Node::new();
    let server = Server::start(&node);
    let owner = node.owner_key.as_str();
    let created = post_json(&server, owner, "/api/v1/keys", &json!({"role": "writer"}));
    assert_eq!(created.status, 201, "{}", created.text());
    let writer = created.json()["key"].as_str().unwrap().to_owned();
    let writer_id = &writer[..16];

    // No body: the old key keeps working for 24 hours.
    let before = evident_server::now_ms();
    let resp = server
        .client()
        .post(format!("{}/api/v1/keys/{writer_id}/rotate", server.url))
        .bearer_auth(owner)
        .send()
        .unwrap();
    let after = evident_server::now_ms();
    assert_eq!(resp.status().as_u16(), 201);
    let rotated: Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    let expires = millis_of(&rotated["replaced"]["expires_at"]);
    let day = 24 * 3600 * 1000;
    assert!((before + day..=after + day).contains(&expires), "{rotated}");
    assert_eq!(rotated["replaced"]["status"], "expiring");
    server
        .api(&writer)
        .append(&event("a", "still.works"))
        .unwrap();
    // The body may still say otherwise.
    let new_writer = rotated["key"].as_str().unwrap().to_owned();
    let answer = post_json(
        &server,
        owner,
        &format!("/api/v1/keys/{}/rotate", &new_writer[..16]),
        &json!({"grace_seconds": 0}),
    );
    assert_eq!(answer.status, 201, "{}", answer.text());
    server
        .api(&new_writer)
        .append(&event("a", "ended"))
        .unwrap_err()
        .assert_error(401, "unauthorized", None);

    // Rotating the key the request is made with, grace 0: refused unless confirmed, and
    // nothing changed.
    let own = &owner[..16];
    let refused = post_json(
        &server,
        owner,
        &format!("/api/v1/keys/{own}/rotate"),
        &json!({"grace_seconds": 0}),
    );
    let body = refused.assert_error(400, "invalid_body", Some("grace_seconds"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("confirm_own_key"),
        "{body}"
    );
    let keys = server.api(owner).get("/api/v1/keys").json();
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let me = keys.iter().find(|k| k["id"] == own).unwrap();
    assert_eq!(me["status"], "active", "{me}");
    // The CLI says the same, and how to confirm.
    let cli = server
        .cli(owner, &["keys", "rotate", own, "--grace", "0"])
        .code(1);
    assert!(cli.stderr.contains("confirm_own_key"), "{}", cli.stderr);
    assert_eq!(server.api(owner).get("/api/v1/keys").status, 200);

    // Without a body, rotating one's own key keeps it a day too.
    let resp = server
        .client()
        .post(format!("{}/api/v1/keys/{own}/rotate", server.url))
        .bearer_auth(owner)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let rotated: Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    assert!(millis_of(&rotated["replaced"]["expires_at"]) >= before + day);
    assert_eq!(server.api(owner).get("/api/v1/keys").status, 200);
    let second_owner = rotated["key"].as_str().unwrap().to_owned();

    // Confirmed, through the CLI: the calling key stops at once, the new one works.
    let out = server
        .cli(
            &second_owner,
            &[
                "keys",
                "rotate",
                &second_owner[..16],
                "--grace",
                "0",
                "--confirm-own-key",
            ],
        )
        .ok();
    let third_owner = out.stdout.lines().last().unwrap().to_owned();
    assert!(third_owner.starts_with("evk_"), "{}", out.stdout);
    assert_eq!(server.api(&second_owner).get("/api/v1/keys").status, 401);
    assert_eq!(server.api(&third_owner).get("/api/v1/keys").status, 200);
}

#[test]
fn refusals_never_name_the_tenant_that_owns_an_entry_or_a_key() {
    let node = Node::new();
    let acme_admin = common::create_key(&node.dir, "admin", &["--tenant", "acme"]);
    let acme_reader = common::create_key(&node.dir, "readonly", &["--tenant", "acme"]);
    let globex_writer = common::create_key(&node.dir, "writer", &["--tenant", "globex"]);
    let initech_writer = common::create_key(&node.dir, "writer", &["--tenant", "initech"]);
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_AUTH_FAILURE_LIMIT", "1000")]);
    let owner = server.api(&node.owner_key);
    let seq_of = |key: &str| server.api(key).append(&event("someone", "a.b")).unwrap()[0].0;
    let globex_seq = seq_of(&globex_writer);
    let initech_seq = seq_of(&initech_writer);
    owner.wait_checkpoint(2);
    let acme = server.api(&acme_reader);

    // Another tenant's entry: the same 403 whoever owns it, naming neither owner.
    let answers: Vec<Value> = [globex_seq, initech_seq]
        .iter()
        .map(|seq| {
            acme.get(&format!("/api/v1/proof/inclusion?seq={seq}"))
                .assert_error(403, "forbidden", Some("seq"))
        })
        .collect();
    let message = |v: &Value, seq: &str| {
        v["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&format!("entry {seq} "), "entry N ")
    };
    assert_eq!(
        message(&answers[0], &globex_seq.to_string()),
        message(&answers[1], &initech_seq.to_string())
    );
    // Another tenant's key: the same 404 as a key that does not exist, for every key route.
    let unknown = "evk_0000000000ff";
    for action in ["revoke", "rotate"] {
        let texts: Vec<String> = [&globex_writer[..16], &initech_writer[..16], unknown]
            .iter()
            .map(|id| {
                let answer = post_json(
                    &server,
                    &acme_admin,
                    &format!("/api/v1/keys/{id}/{action}"),
                    &json!({}),
                );
                let body = answer.assert_error(404, "not_found", None);
                body.to_string().replace(id, "ID")
            })
            .collect();
        assert_eq!(texts[0], texts[1], "{action}");
        assert_eq!(texts[0], texts[2], "{action}");
    }
    // Nothing happened to those keys.
    let keys = owner.get("/api/v1/keys").json();
    for key in [&globex_writer, &initech_writer] {
        let record = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == key[..16])
            .unwrap();
        assert_eq!(record["status"], "active", "{record}");
    }
    // The refusals were recorded in acme's log, which acme's keys read: with the entry and
    // key asked for, never their owners' tenants.
    let seen = acme.all_entries();
    let attempts: Vec<&Value> = seen
        .iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == "evident.access.cross_tenant")
        .collect();
    assert_eq!(attempts.len(), 2 + 6, "{attempts:#?}");
    let text = serde_json::to_string(&seen.iter().map(|(_, _, e)| e).collect::<Vec<_>>()).unwrap();
    for other in ["globex", "initech"] {
        assert!(!text.contains(other), "acme's log names {other}: {text}");
    }
}

/// Sends `n` GETs of `path` at once, each on its own connection, with the key `key_for(i)`;
/// returns the statuses.
fn concurrent_gets(
    server: &Server,
    path: &str,
    n: usize,
    key_for: impl Fn(usize) -> Option<String> + Sync,
) -> Vec<u16> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barrier = &barrier;
                let key = key_for(i);
                scope.spawn(move || {
                    let http = common::http_client();
                    let mut req = http.get(format!("{}{path}", server.url));
                    if let Some(key) = key {
                        req = req.header("authorization", key);
                    }
                    barrier.wait();
                    req.send().unwrap().status().as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The self-audit events of `entries` with `action`.
fn with_action<'a>(entries: &'a [(u64, String, Value)], action: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == action)
        .collect()
}

#[test]
fn a_burst_of_bad_keys_blocks_only_bad_keys_and_records_one_event() {
    let node = Node::new();
    let writer = common::create_key(&node.dir, "writer", &[]);
    let reader = common::create_key(&node.dir, "readonly", &[]);
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_AUTH_FAILURE_LIMIT", "5"),
            ("EVIDENT_AUTH_FAILURE_WINDOW_MS", "600000"),
            ("EVIDENT_AUTH_BLOCK_MS", "600000"),
        ],
    );
    // 100 failures at once: missing, malformed and unknown keys.
    let statuses = concurrent_gets(&server, "/api/v1/checkpoint", 100, |i| match i % 3 {
        0 => None,
        1 => Some("Basic Zm9vOmJhcg==".to_owned()),
        _ => Some(format!(
            "Bearer evk_00000000000{}_{}",
            i % 10,
            "A".repeat(43)
        )),
    });
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let blocked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((refused, blocked), (4, 96), "{statuses:?}");

    // The address is blocked for requests without a valid key only: its valid keys work.
    let owner = server.api(&node.owner_key);
    assert_eq!(owner.get("/api/v1/checkpoint").status, 200);
    server
        .api(&writer)
        .append(&event("alice", "still.served"))
        .unwrap();
    assert_eq!(server.api(&reader).get("/api/v1/checkpoint").status, 200);
    let again = server.api("evk_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    again
        .get("/api/v1/checkpoint")
        .assert_error(429, "too_many_failures", None);

    // A valid key refused again and again: only its refused requests are blocked.
    let statuses = concurrent_gets(&server, "/api/v1/audit-log", 50, |_| {
        Some(format!("Bearer {writer}"))
    });
    let forbidden = statuses.iter().filter(|s| **s == 403).count();
    let blocked = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((forbidden, blocked), (4, 46), "{statuses:?}");
    server
        .api(&writer)
        .append(&event("alice", "writer.still.appends"))
        .unwrap();
    assert_eq!(server.api(&reader).get("/api/v1/audit-log").status, 200);

    // Exactly the documented events: 4 failures and one burst event per burst.
    let all = owner.all_entries();
    let failures: usize = [
        "evident.auth.missing_key",
        "evident.auth.malformed_key",
        "evident.auth.unknown_key",
    ]
    .iter()
    .map(|a| with_action(&all, a).len())
    .sum();
    assert_eq!(failures, 4);
    let bursts = with_action(&all, "evident.auth.brute_force");
    assert_eq!(bursts.len(), 1, "{bursts:#?}");
    assert_eq!(
        bursts[0]["target"],
        json!({"kind": "address", "id": "127.0.0.1"})
    );
    assert_eq!(bursts[0]["severity"], "critical");
    assert_eq!(with_action(&all, "evident.access.forbidden").len(), 4);
    let key_bursts = with_action(&all, "evident.access.forbidden_burst");
    assert_eq!(key_bursts.len(), 1, "{key_bursts:#?}");
    assert_eq!(
        key_bursts[0]["target"],
        json!({"kind": "api_key", "id": &writer[..16]})
    );
    assert_eq!(key_bursts[0]["actor"]["id"], &writer[..16]);
    assert_eq!(key_bursts[0]["severity"], "critical");
}

/// A GET of `path` from local address `from`, with `key` and extra headers; the status.
fn get_from(server: &Server, from: &str, path: &str, key: &str, headers: &[(&str, &str)]) -> u16 {
    let http = reqwest::blocking::Client::builder()
        .local_address(Some(from.parse().unwrap()))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = http.get(format!("{}{path}", server.url)).bearer_auth(key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().unwrap().status().as_u16()
}

/// A key of valid shape that no server issued, numbered.
fn bogus_key(n: usize) -> String {
    format!("evk_{n:012x}_{}", "A".repeat(43))
}

#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let limits = [
        ("EVIDENT_AUTH_FAILURE_LIMIT", "3"),
        ("EVIDENT_AUTH_FAILURE_WINDOW_MS", "600000"),
        ("EVIDENT_AUTH_BLOCK_MS", "600000"),
    ];
    // By default the headers are ignored: a client cannot pick the address it is counted
    // and recorded under.
    let node = Node::new();
    let server = Server::start_with_env(&node.dir, &limits);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let spoof = format!("198.51.100.{i}");
        let forwarded = format!("for=198.51.100.{}", i + 100);
        statuses.push(get_from(
            &server,
            "127.0.0.1",
            "/api/v1/checkpoint",
            &bogus_key(i),
            &[("x-forwarded-for", &spoof), ("forwarded", &forwarded)],
        ));
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    let all = server.api(&node.owner_key).all_entries();
    for e in with_action(&all, "evident.auth.unknown_key") {
        assert_eq!(e["actor"]["ip"], "127.0.0.1", "{e}");
    }
    let bursts = with_action(&all, "evident.auth.brute_force");
    assert_eq!(bursts[0]["target"]["id"], "127.0.0.1");
    drop(server);

    // With 127.0.0.1 trusted: the right-most untrusted address of the chain counts.
    let node = Node::new();
    let reader = common::create_key(&node.dir, "readonly", &[]);
    let server = Server::start_with(
        &node.dir,
        &limits,
        &["--trusted-proxies", "127.0.0.1/32,10.0.0.0/8"],
        None,
    );
    let chain = "203.0.113.66, 198.51.100.9, 10.1.2.3";
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(get_from(
            &server,
            "127.0.0.1",
            "/api/v1/checkpoint",
            &bogus_key(i),
            &[("x-forwarded-for", chain)],
        ));
    }
    assert_eq!(statuses, [401, 401, 429]);
    // The client blocked is 198.51.100.9: another client behind the same proxy is not, and
    // neither is the proxy's own address.
    let other = get_from(
        &server,
        "127.0.0.1",
        "/api/v1/checkpoint",
        &bogus_key(9),
        &[("forwarded", "for=\"[2001:db8::7]:443\", for=10.0.0.1")],
    );
    assert_eq!(other, 401);
    assert_eq!(
        get_from(
            &server,
            "127.0.0.1",
            "/api/v1/checkpoint",
            &bogus_key(10),
            &[]
        ),
        401
    );
    // A peer outside the trusted networks: its headers are ignored again.
    assert_eq!(
        get_from(
            &server,
            "127.0.0.2",
            "/api/v1/checkpoint",
            &bogus_key(11),
            &[("x-forwarded-for", "198.51.100.9")],
        ),
        401
    );
    // A valid key through the proxy: its last use records the client.
    assert_eq!(
        get_from(
            &server,
            "127.0.0.1",
            "/api/v1/checkpoint",
            &reader,
            &[("x-forwarded-for", "192.0.2.44")],
        ),
        200
    );

    let all = server.api(&node.owner_key).all_entries();
    let ips: Vec<&Value> = with_action(&all, "evident.auth.unknown_key")
        .iter()
        .map(|e| &e["actor"]["ip"])
        .collect();
    assert_eq!(
        ips,
        [
            "198.51.100.9",
            "198.51.100.9",
            "2001:db8::7",
            "127.0.0.1",
            "127.0.0.2"
        ],
        "{all:#?}"
    );
    let bursts = with_action(&all, "evident.auth.brute_force");
    assert_eq!(bursts.len(), 1);
    assert_eq!(
        bursts[0]["target"],
        json!({"kind": "address", "id": "198.51.100.9"})
    );
    assert_eq!(bursts[0]["actor"]["ip"], "198.51.100.9");
    let keys = server.api(&node.owner_key).get("/api/v1/keys").json();
    let used = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == reader[..16])
        .unwrap()
        .clone();
    assert_eq!(used["last_used_ip"], "192.0.2.44", "{used}");
}

/// The server's address.
fn addr_of(server: &Server) -> std::net::SocketAddr {
    server.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Reads what the server sends until it closes the connection; the bytes and whether it
/// closed (within 30 s).
fn read_answer(stream: &mut std::net::TcpStream) -> (Vec<u8>, bool) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (out, false),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// A GET of /api/v1/healthz whose head, in the usual form, is exactly `total` bytes.
fn head_of_size(total: usize) -> Vec<u8> {
    let start = b"GET /api/v1/healthz HTTP/1.1\r\nHost: evident\r\nConnection: close\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.extend(std::iter::repeat_n(b'a', total - start.len() - end.len()));
    head.extend_from_slice(end);
    assert_eq!(head.len(), total);
    head
}

/// Sends `head` and returns the whole answer as text.
fn answer_to(target: std::net::SocketAddr, head: &[u8]) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(target).unwrap();
    let _ = s.write_all(head);
    let (bytes, closed) = read_answer(&mut s);
    assert!(closed, "the connection stayed open");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_header_limit_is_enforced_at_the_documented_size() {
    // The default, 65536 bytes, as README documents it.
    let node = Node::new();
    let server = Server::start(&node);
    let target = addr_of(&server);
    for (size, status) in [
        (65_535, "200"),
        (65_536, "200"),
        (65_537, "431"),
        (65_600, "431"),
        (80_000, "431"),
    ] {
        let answer = answer_to(target, &head_of_size(size));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "a head of {size} bytes: {answer}"
        );
        if status == "431" {
            assert!(answer.contains(r#""code":"headers_too_large""#), "{answer}");
            assert!(answer.contains(&size.to_string()), "{answer}");
        }
    }
    drop(server);
    // A configured limit is enforced at its value too.
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_MAX_HEADER_BYTES", "10000")]);
    let target = addr_of(&server);
    assert!(answer_to(target, &head_of_size(10_000)).starts_with("HTTP/1.1 200"));
    assert!(answer_to(target, &head_of_size(10_001)).starts_with("HTTP/1.1 431"));
    // The request line counts: a long query string past the limit too.
    let mut head = b"GET /api/v1/healthz?".to_vec();
    head.extend(std::iter::repeat_n(b'q', 10_000));
    head.extend_from_slice(b" HTTP/1.1\r\nHost: evident\r\n\r\n");
    assert!(answer_to(target, &head).starts_with("HTTP/1.1 431"));
}

#[test]
fn one_address_cannot_take_every_connection_slot() {
    use std::io::Write;
    let node = Node::new();
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_MAX_CONNECTIONS", "20"),
            ("EVIDENT_MAX_CONNECTIONS_PER_IP", "5"),
        ],
    );
    let target = addr_of(&server);
    // Five connections from 127.0.0.1, each stalled in its request head.
    let mut held: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(target).unwrap();
            s.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: ev")
                .unwrap();
            s
        })
        .collect();
    // The sixth from the same address is answered 429 and closed…
    let mut sixth = std::net::TcpStream::connect(target).unwrap();
    let (bytes, closed) = read_answer(&mut sixth);
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed && text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains(r#""code":"too_many_connections""#), "{text}");
    // …while another address is served.
    let other = reqwest::blocking::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let answer = other
        .get(format!("{}/api/v1/checkpoint", server.url))
        .bearer_auth(&node.owner_key)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // Once one of the five closes, 127.0.0.1 gets a slot again.
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = common::http_client()
            .get(format!("{}/api/v1/healthz", server.url))
            .send()
            .unwrap();
        if answer.status().as_u16() == 200 {
            break;
        }
        assert_eq!(answer.status().as_u16(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(held);

    // A trusted proxy carries many clients: the cap does not apply to it.
    let server = {
        drop(server);
        Server::start_with_env(
            &node.dir,
            &[
                ("EVIDENT_MAX_CONNECTIONS_PER_IP", "2"),
                ("EVIDENT_TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )
    };
    let target = addr_of(&server);
    let _held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(target).unwrap();
            s.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: ev")
                .unwrap();
            s
        })
        .collect();
    let answer = answer_to(
        target,
        b"GET /api/v1/healthz HTTP/1.1\r\nHost: evident\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
