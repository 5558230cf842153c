//! End to end, through the real binary: the access model. The role × route matrix is built
//! from the server's own OpenAPI document; tenant-scoped keys stay in their tenant on every
//! read path; every refusal, key change, export and verification is recorded in the log with
//! its fields; repeated failures from one address get 429 and exactly one critical event; key
//! rotation overlaps and revocation bites at once; no route or method changes a stored event;
//! no secret reaches the server's log; every response carries the security headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Answer, Api, Node, Server, create_key, event};
use evident_core::{Checkpoint, Hash, NoteVerifier, merkle};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A limit no test reaches, for the tests that are not about brute force.
const NO_LIMIT: (&str, &str) = ("EVIDENT_AUTH_FAILURE_LIMIT", "1000000");
/// The user agent the tests send, to find it in the recorded events.
const AGENT: &str = "e2e-security/1";

/// What each role may do, as the issue states it (the spec side of the matrix; the routes
/// come from the OpenAPI document).
fn role_allows(role: &str, permission: &str) -> bool {
    matches!(
        (role, permission),
        (_, "none")
            | ("owner", "owner" | "witness")
            | ("owner" | "admin", "append" | "read" | "manage_keys")
            | ("readonly", "read")
            | ("writer", "append")
    )
}

/// A raw request: method, URL, key, body; the answer with its headers.
fn send(
    http: &Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, HeaderMap, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req: RequestBuilder = http.request(method, url).header("user-agent", AGENT);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some((content_type, bytes)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().unwrap().to_vec())
}

/// Asserts the security headers every response must carry.
#[track_caller]
fn assert_security_headers(headers: &HeaderMap, what: &str, tls: bool) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("cache-control"), "no-store", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert!(
        get("content-security-policy").contains("frame-ancestors 'none'"),
        "{what}"
    );
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(
        headers.contains_key("strict-transport-security"),
        tls,
        "{what}"
    );
}

/// Every operation of the OpenAPI document: (method, path, x-evident-permission).
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let permission = op["x-evident-permission"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no x-evident-permission"));
            out.push((method.to_uppercase(), path.clone(), permission.to_owned()));
        }
    }
    assert!(out.len() >= 14, "too few operations: {out:?}");
    out
}

/// Every entry of the log (via the owner key), ascending.
fn entries(api: &Api) -> Vec<Value> {
    api.all_entries().into_iter().map(|(_, _, e)| e).collect()
}

/// The self-audit events with `action`.
fn audit(entries: &[Value], action: &str) -> Vec<Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// The key id (non-secret prefix) of a key.
fn id_of(key: &str) -> &str {
    &key[..16]
}

/// A key with a valid shape that no server issued.
const UNKNOWN_KEY: &str = "evk_00000000beef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn role_route_matrix_follows_the_openapi_document() {
    let node = Node::new();
    let admin = create_key(&node.dir, "admin", &[]);
    let readonly = create_key(&node.dir, "readonly", &[]);
    let writer = create_key(&node.dir, "writer", &[]);
    let server = Server::start_with_env(&node.dir, &[NO_LIMIT]);
    let owner = server.api(&node.owner_key);
    owner.append(&event("alice", "auth.login")).unwrap();
    owner.wait_checkpoint(1);
    let doc = owner.get("/api/v1/openapi.json").json();
    let http = common::http_client();

    let keys: [(&str, Option<&str>); 5] = [
        ("owner", Some(&node.owner_key)),
        ("admin", Some(&admin)),
        ("readonly", Some(&readonly)),
        ("writer", Some(&writer)),
        ("anonymous", None),
    ];
    let mut forbidden = 0;
    let mut missing = 0;
    for (method, path, permission) in operations(&doc) {
        // Path parameters name a key no one has; bodies are valid, so that only access
        // control can refuse.
        let concrete = path.replace("{id}", "evk_00000000cafe");
        let query = match path.as_str() {
            "/api/v1/proof/inclusion" => "?seq=0",
            "/api/v1/proof/consistency" => "?from=1",
            _ => "",
        };
        let url = format!("{}{concrete}{query}", server.url);
        for (role, key) in keys {
            let body = match (method.as_str(), path.as_str()) {
                ("POST", "/api/v1/events") => Some((
                    "application/json",
                    serde_json::to_vec(&event("matrix", "matrix.probe")).unwrap(),
                )),
                ("POST", "/api/v1/keys") => {
                    Some(("application/json", br#"{"role":"writer"}"#.to_vec()))
                }
                ("POST", _) => Some(("application/json", Vec::new())),
                _ => None,
            };
            let (status, headers, body) = send(&http, &method, &url, key, body);
            let what = format!(
                "{role} {method} {path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            assert_security_headers(&headers, &what, false);
            match key {
                None if permission != "none" => {
                    assert_eq!(status, 401, "{what}");
                    missing += 1;
                }
                _ if role_allows(role, &permission) => {
                    assert!(status != 401 && status != 403, "{what}");
                    assert!(status < 500, "{what}");
                }
                _ => {
                    assert_eq!(status, 403, "{what}");
                    let error: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(error["error"]["code"], "forbidden", "{what}");
                    forbidden += 1;
                }
            }
        }
    }
    // Unknown routes and methods carry the headers too.
    let (status, headers, _) = send(&http, "GET", &format!("{}/nowhere", server.url), None, None);
    assert_eq!(status, 404);
    assert_security_headers(&headers, "404", false);

    // Every refusal is in the log, once.
    let all = entries(&owner);
    assert_eq!(audit(&all, "evident.access.forbidden").len(), forbidden);
    assert_eq!(audit(&all, "evident.auth.missing_key").len(), missing);
    assert!(forbidden >= 10 && missing >= 10, "{forbidden} {missing}");
}

#[test]
fn tenant_scoped_keys_stay_in_their_tenant_on_every_read_path() {
    let node = Node::new();
    let acme_reader = create_key(&node.dir, "readonly", &["--tenant", "acme"]);
    let acme_writer = create_key(&node.dir, "writer", &["--tenant", "acme"]);
    let globex_writer = create_key(&node.dir, "writer", &["--tenant", "globex"]);
    let server = Server::start_with_env(&node.dir, &[NO_LIMIT]);
    let owner = server.api(&node.owner_key);
    let acme = server.api(&acme_reader);
    // The tenant is filled in from the key.
    server
        .api(&acme_writer)
        .append(&json!([
            event("acme-alice", "a.b"),
            event("acme-bob", "a.b")
        ]))
        .unwrap();
    let globex_seqs = server
        .api(&globex_writer)
        .append(&json!([event("globex-carol", "a.b")]))
        .unwrap();
    owner.wait_checkpoint(3);
    let globex_seq = globex_seqs[0].0;
    let only_acme = |text: &str, what: &str| {
        assert!(text.contains("acme-alice"), "{what}: {text}");
        assert!(!text.contains("globex-carol"), "{what} leaked: {text}");
    };

    // Query.
    let page = acme.get("/api/v1/audit-log");
    assert_eq!(page.status, 200);
    only_acme(&page.text(), "query");
    assert!(
        page.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "acme")
    );
    acme.get("/api/v1/audit-log?tenant=globex")
        .assert_error(403, "forbidden", Some("tenant"));
    // Exports, both formats.
    for format in ["ndjson", "csv"] {
        let export = acme.get(&format!("/api/v1/audit-log?format={format}"));
        assert_eq!(export.status, 200, "{}", export.text());
        only_acme(&export.text(), format);
        acme.get(&format!("/api/v1/audit-log?format={format}&tenant=globex"))
            .assert_error(403, "forbidden", Some("tenant"));
    }
    // The CLI export too, and it verifies offline.
    let file = node.file("acme.ndjson");
    server
        .cli(&acme_reader, &["export", "--out", file.to_str().unwrap()])
        .ok();
    only_acme(&std::fs::read_to_string(&file).unwrap(), "cli export");
    // Proofs: not for another tenant's entry.
    let refused = acme.get(&format!("/api/v1/proof/inclusion?seq={globex_seq}"));
    refused.assert_error(403, "forbidden", Some("seq"));
    assert!(!refused.text().contains("globex"), "{}", refused.text());
    let own = acme.get("/api/v1/proof/inclusion?seq=0");
    assert_eq!(own.status, 200, "{}", own.text());
    // Verify: the whole chain is checked, and the answer holds no event content.
    let verify = acme.get("/api/v1/verify");
    assert_eq!(verify.status, 200);
    assert_eq!(verify.json()["ok"], true);
    assert!(!verify.text().contains("globex"), "{}", verify.text());
    // Appends: not into another tenant.
    let mut other = event("acme-mallory", "a.b");
    other["tenant"] = json!("globex");
    server
        .api(&acme_writer)
        .append(&other)
        .unwrap_err()
        .assert_error(403, "forbidden", Some("tenant"));

    // Every cross-tenant attempt was recorded, in the key's own tenant, with its fields.
    let all = entries(&owner);
    let attempts = audit(&all, "evident.access.cross_tenant");
    assert_eq!(attempts.len(), 5, "{attempts:#?}");
    for e in &attempts {
        assert_eq!(e["tenant"], "acme", "{e}");
        assert_eq!(e["actor"]["kind"], "api_key", "{e}");
        assert_eq!(e["outcome"], "denied", "{e}");
        assert_eq!(e["actor"]["ip"], "127.0.0.1", "{e}");
        // A tenant the request named, or the entry asked for (never its owner's name).
        if e["target"]["kind"] == "entry" {
            assert_eq!(e["target"]["id"], globex_seq.to_string(), "{e}");
            assert!(!e.to_string().contains("globex"), "{e}");
        } else {
            assert_eq!(e["target"]["kind"], "tenant", "{e}");
            assert_eq!(e["target"]["id"], "globex", "{e}");
        }
        assert!(e["context"]["attempted"].is_string(), "{e}");
        assert!(e["context"]["path"].is_string(), "{e}");
    }
    assert!(
        attempts
            .iter()
            .any(|e| e["actor"]["id"] == id_of(&acme_writer))
    );
    // The acme reader sees its tenant's refusals, never globex's events.
    let acme_view = entries(&acme);
    assert!(acme_view.iter().all(|e| e["tenant"] == "acme"));
    assert!(acme_view.len() >= 2 + 5);
}

#[test]
fn self_audit_events_carry_actor_address_agent_action_and_target() {
    let node = Node::new();
    let admin = create_key(&node.dir, "admin", &[]);
    let writer = create_key(&node.dir, "writer", &[]);
    // Debug logging, to show that not even it writes a secret.
    let server = Server::start_with_env(&node.dir, &[NO_LIMIT, ("RUST_LOG", "debug")]);
    let http = common::http_client();
    let url = |path: &str| format!("{}{path}", server.url);
    let mut secrets = vec![node.owner_key.clone(), admin.clone(), writer.clone()];

    // Key management through the API.
    let (status, _, body) = send(
        &http,
        "POST",
        &url("/api/v1/keys"),
        Some(&admin),
        Some((
            "application/json",
            br#"{"role":"readonly","label":"auditor"}"#.to_vec(),
        )),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    let reader = created["key"].as_str().unwrap().to_owned();
    secrets.push(reader.clone());
    // At least 256 bits of randomness: 43 base64url characters after the visible prefix.
    assert_eq!(reader.len(), 16 + 1 + 43, "{reader}");
    assert_eq!(created["record"]["id"], id_of(&reader));
    // An admin may not make an owner.
    let (status, _, _) = send(
        &http,
        "POST",
        &url("/api/v1/keys"),
        Some(&admin),
        Some(("application/json", br#"{"role":"owner"}"#.to_vec())),
    );
    assert_eq!(status, 403);
    // Rotation through the CLI, online.
    let out = server
        .cli(
            &node.owner_key,
            &["keys", "rotate", id_of(&writer), "--grace", "600"],
        )
        .ok();
    let new_writer = out.stdout.lines().last().unwrap().to_owned();
    assert!(new_writer.starts_with("evk_"), "{}", out.stdout);
    secrets.push(new_writer.clone());
    // Revocation through the API.
    let (status, _, _) = send(
        &http,
        "POST",
        &url(&format!("/api/v1/keys/{}/revoke", id_of(&reader))),
        Some(&node.owner_key),
        None,
    );
    assert_eq!(status, 200);
    // Failures: missing, unknown, revoked key; a forbidden request.
    assert_eq!(
        send(&http, "GET", &url("/api/v1/checkpoint"), None, None).0,
        401
    );
    assert_eq!(
        send(
            &http,
            "GET",
            &url("/api/v1/checkpoint"),
            Some(UNKNOWN_KEY),
            None
        )
        .0,
        401
    );
    assert_eq!(
        send(
            &http,
            "GET",
            &url("/api/v1/checkpoint"),
            Some(&reader),
            None
        )
        .0,
        401
    );
    assert_eq!(
        send(
            &http,
            "GET",
            &url("/api/v1/audit-log"),
            Some(&new_writer),
            None
        )
        .0,
        403
    );
    // An export and a verification run.
    let (status, _, _) = send(
        &http,
        "GET",
        &url("/api/v1/audit-log?format=csv&actor=alice"),
        Some(&admin),
        None,
    );
    assert_eq!(status, 200);
    let (status, _, body) = send(&http, "GET", &url("/api/v1/verify"), Some(&admin), None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let owner = server.api(&node.owner_key);
    let all = entries(&owner);
    let one = |action: &str| {
        let found = audit(&all, action);
        assert_eq!(found.len(), 1, "{action}: {found:#?}");
        let e = found[0].clone();
        assert_eq!(e["actor"]["ip"], "127.0.0.1", "{e}");
        assert!(e["context"]["path"].is_string(), "{e}");
        assert!(e["context"]["method"].is_string(), "{e}");
        e
    };
    let e = one("evident.key.created");
    assert_eq!(e["actor"]["kind"], "api_key");
    assert_eq!(e["actor"]["id"], id_of(&admin));
    assert_eq!(e["actor"]["user_agent"], AGENT);
    assert_eq!(
        e["target"],
        json!({"kind": "api_key", "id": id_of(&reader)})
    );
    assert_eq!(e["context"]["new_role"], "readonly");
    assert_eq!(e["outcome"], "success");
    let e = one("evident.key.rotated");
    assert_eq!(e["actor"]["id"], id_of(&node.owner_key));
    assert!(
        e["actor"]["user_agent"]
            .as_str()
            .unwrap()
            .starts_with("evident-cli/")
    );
    assert_eq!(e["target"]["id"], id_of(&writer));
    assert_eq!(e["context"]["new_key_id"], id_of(&new_writer));
    let e = one("evident.key.revoked");
    assert_eq!(e["target"]["id"], id_of(&reader));
    let e = one("evident.auth.missing_key");
    assert_eq!(
        e["actor"],
        json!({"id": "anonymous", "kind": "system", "ip": "127.0.0.1", "user_agent": AGENT})
    );
    assert_eq!(
        e["target"],
        json!({"kind": "route", "id": "GET /api/v1/checkpoint"})
    );
    assert_eq!(e["outcome"], "denied");
    let e = one("evident.auth.unknown_key");
    assert_eq!(e["actor"]["kind"], "system");
    assert_eq!(e["context"]["presented_key_id"], id_of(UNKNOWN_KEY));
    let e = one("evident.auth.revoked_key");
    assert_eq!(e["context"]["presented_key_id"], id_of(&reader));
    let forbidden = audit(&all, "evident.access.forbidden");
    assert_eq!(forbidden.len(), 2, "{forbidden:#?}");
    let e = forbidden
        .iter()
        .find(|e| e["actor"]["id"] == id_of(&new_writer))
        .unwrap();
    assert_eq!(e["actor"]["kind"], "api_key");
    assert_eq!(
        e["target"],
        json!({"kind": "route", "id": "GET /api/v1/audit-log"})
    );
    assert!(
        forbidden
            .iter()
            .any(|e| e["actor"]["id"] == id_of(&admin) && e["target"]["kind"] == "api_key")
    );
    let e = one("evident.log.exported");
    assert_eq!(e["actor"]["id"], id_of(&admin));
    assert_eq!(e["context"]["format"], "csv");
    assert_eq!(e["context"]["query"]["actor"], "alice");
    let e = one("evident.log.verified");
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["context"]["ok"], true);

    // Secrets: never in the server's own log, even at debug level; never in a key list.
    let log = server.server_log();
    assert!(log.contains(id_of(&reader)), "the log should name key ids");
    for secret in &secrets {
        assert!(
            !log.contains(&secret[17..]),
            "secret in the server log:\n{log}"
        );
    }
    let list = server
        .cli(&node.owner_key, &["keys", "list", "--json"])
        .ok();
    for secret in &secrets {
        assert!(!list.stdout.contains(&secret[17..]), "{}", list.stdout);
    }
}

#[test]
fn rotation_overlaps_and_revocation_bites_at_once() {
    let node = Node::new();
    let server = Server::start_with_env(&node.dir, &[NO_LIMIT]);
    let http = common::http_client();
    let owner = server.api(&node.owner_key);
    // Created online with the CLI.
    let out = server
        .cli(
            &node.owner_key,
            &["keys", "create", "--role", "writer", "--label", "ingest"],
        )
        .ok();
    let old = out.stdout.lines().last().unwrap().to_owned();
    assert_eq!(out.stdout.matches(&old).count(), 1);
    server.api(&old).append(&event("a", "a.b")).unwrap();

    // Rotate with a 3-second overlap: both keys work.
    let (status, _, body) = send(
        &http,
        "POST",
        &format!("{}/api/v1/keys/{}/rotate", server.url, id_of(&old)),
        Some(&node.owner_key),
        Some(("application/json", br#"{"grace_seconds":3}"#.to_vec())),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let rotated: Value = serde_json::from_slice(&body).unwrap();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(id_of(&new), id_of(&old));
    assert_eq!(rotated["record"]["role"], "writer");
    assert_eq!(rotated["record"]["label"], "ingest");
    assert_eq!(rotated["replaced"]["status"], "expiring");
    server.api(&old).append(&event("b", "a.b")).unwrap();
    server.api(&new).append(&event("c", "a.b")).unwrap();
    // Then the old one stops by itself, the new one goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match server.api(&old).append(&event("d", "a.b")) {
            Ok(_) => {}
            Err(answer) => {
                answer.assert_error(401, "unauthorized", None);
                assert!(answer.text().contains("expired"), "{}", answer.text());
                break;
            }
        }
        assert!(Instant::now() < deadline, "the old key never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.api(&new).append(&event("e", "a.b")).unwrap();
    let expired = audit(&entries(&owner), "evident.auth.expired_key");
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0]["context"]["presented_key_id"], id_of(&old));
    assert_eq!(expired[0]["actor"]["ip"], "127.0.0.1");

    // Last use and source address are kept per key (and listed, never the secret).
    let list = owner.get("/api/v1/keys").json();
    let listed = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id_of(&new))
        .unwrap()
        .clone();
    assert_eq!(listed["last_used_ip"], "127.0.0.1", "{listed}");
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(!list.to_string().contains(&new[17..]));

    // Revocation (CLI, online) bites with the very next request.
    let out = server
        .cli(&node.owner_key, &["keys", "revoke", id_of(&new)])
        .ok();
    assert!(out.stdout.contains(id_of(&new)), "{}", out.stdout);
    server
        .api(&new)
        .append(&event("f", "a.b"))
        .unwrap_err()
        .assert_error(401, "unauthorized", None);
    // Revoking again is a conflict, not a success.
    let answer: Answer = {
        let (status, _, body) = send(
            &http,
            "POST",
            &format!("{}/api/v1/keys/{}/revoke", server.url, id_of(&new)),
            Some(&node.owner_key),
            None,
        );
        Answer { status, body }
    };
    answer.assert_error(409, "key_not_active", None);

    // After a clean stop, the last use is in the database too (offline list).
    let mut server = server;
    server.stop();
    let list = common::run(&["keys", "list", "--data-dir", node.dir_str(), "--json"]).ok();
    let keys: Value = serde_json::from_str(&list.stdout).unwrap();
    let stored = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id_of(&new))
        .unwrap();
    assert_eq!(stored["last_used_ip"], "127.0.0.1", "{stored}");
}

#[test]
fn repeated_failures_are_rate_limited_with_one_burst_event() {
    let node = Node::new();
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_AUTH_FAILURE_LIMIT", "5"),
            ("EVIDENT_AUTH_FAILURE_WINDOW_MS", "600000"),
            ("EVIDENT_AUTH_BLOCK_MS", "600000"),
        ],
    );
    let http = common::http_client();
    let url = format!("{}/api/v1/audit-log", server.url);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, headers, _) = send(&http, "GET", &url, Some(UNKNOWN_KEY), None);
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
            assert_security_headers(&headers, "429", false);
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..4], &[401; 4]);
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
    // While blocked, a valid key from that address keeps working (only requests without a
    // valid key are turned away).
    let (status, _, _) = send(&http, "GET", &url, Some(&node.owner_key), None);
    assert_eq!(status, 200);

    // Another address is not blocked: read the log from 127.0.0.2.
    let other = Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = Api {
        http: other,
        url: server.url.clone(),
        key: Some(node.owner_key.clone()),
    };
    let all = entries(&api);
    assert_eq!(audit(&all, "evident.auth.unknown_key").len(), 4);
    let bursts = audit(&all, "evident.auth.brute_force");
    assert_eq!(bursts.len(), 1, "{bursts:#?}");
    let burst = &bursts[0];
    assert_eq!(burst["severity"], "critical");
    assert_eq!(burst["outcome"], "denied");
    assert_eq!(burst["actor"]["ip"], "127.0.0.1");
    assert_eq!(
        burst["target"],
        json!({"kind": "address", "id": "127.0.0.1"})
    );
    assert_eq!(burst["context"]["failures"], 5);
    // Nothing else was recorded for the 26 refused requests.
    let recorded = all
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("evident."))
        .count();
    assert_eq!(recorded, 5);
}

/// The log's entries as (seq, hash, event) and its latest checkpoint.
fn snapshot(api: &Api) -> (BTreeMap<u64, (String, Value)>, String) {
    let entries = api
        .all_entries()
        .into_iter()
        .map(|(seq, hash, e)| (seq, (hash, e)))
        .collect();
    let checkpoint = api.get("/api/v1/checkpoint").text();
    (entries, checkpoint)
}

#[test]
fn no_route_or_method_changes_or_deletes_an_event() {
    let node = Node::new();
    let server = Server::start_with_env(&node.dir, &[NO_LIMIT]);
    let owner = server.api(&node.owner_key);
    for i in 0..5 {
        owner
            .append(&event(&format!("user{i}"), "config.changed"))
            .unwrap();
    }
    owner.wait_checkpoint(5);
    let (before, checkpoint_before) = snapshot(&owner);
    let vkey = owner.get("/api/v1/public-key").text();
    let verifier = NoteVerifier::parse(vkey.trim()).unwrap();
    let old = Checkpoint::open(&checkpoint_before, &verifier).unwrap();
    let doc = owner.get("/api/v1/openapi.json").json();
    let http = common::http_client();

    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let ids = [
        "evk_000000000000",
        "0",
        "..%2F..%2Fevents",
        "%00",
        "1%3B%20DROP%20TABLE%20events",
    ];
    let queries = [
        "",
        "?seq=0",
        "?seq=0&size=1&from=1&to=1",
        "?seq=-1&from=99999999999999999999",
        "?tenant=%27%20OR%201%3D1%20--&actor=x%22%29%3B%20DELETE%20FROM%20events%3B--",
        "?action=*&format=ndjson&limit=0",
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", Vec::new()),
        (
            "application/json",
            br#"{"seq":0,"hash":"00","action":"x.y","actor":{"id":"evil","kind":"user"}}"#
                .to_vec(),
        ),
        (
            "application/json",
            serde_json::to_vec(&json!([{"seq": 1, "delete": true}, {"op": "replace", "path": "/0/actor/id", "value": "x"}])).unwrap(),
        ),
        ("application/x-ndjson", b"DELETE FROM events;\n{\"seq\":0}\n".to_vec()),
        ("text/plain", b"UPDATE events SET actor_id='x'".to_vec()),
        ("application/json", br#"{"role":"owner","tenant":"../../x","grace_seconds":-1}"#.to_vec()),
    ];
    let mut paths: Vec<String> = Vec::new();
    for (path, _) in doc["paths"].as_object().unwrap() {
        if path.contains("{id}") {
            paths.extend(ids.iter().map(|id| path.replace("{id}", id)));
        } else {
            paths.push(path.clone());
        }
    }
    // Paths that would address one event, were there such routes.
    paths.extend(
        [
            "/api/v1/events/0",
            "/api/v1/audit-log/0",
            "/api/v1/events?seq=0",
        ]
        .map(str::to_owned),
    );
    let mut requests = 0;
    for path in &paths {
        for method in methods {
            for query in queries {
                let url = format!("{}{path}{query}", server.url);
                let sends_body = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
                // Every hostile body on POST; the first two on the other body methods.
                let take = match method {
                    "POST" => bodies.len(),
                    _ if sends_body => 2,
                    _ => 0,
                };
                let mut variants: Vec<Option<(&str, Vec<u8>)>> = bodies[..take]
                    .iter()
                    .map(|(ct, b)| Some((*ct, b.clone())))
                    .collect();
                if variants.is_empty() {
                    variants.push(None);
                }
                for body in variants {
                    let (status, _, text) = send(&http, method, &url, Some(&node.owner_key), body);
                    // Refused or read-only: nothing was created, nothing broke.
                    assert!(
                        status != 500 && status != 201,
                        "{method} {url}: {status} {}",
                        String::from_utf8_lossy(&text)
                    );
                    requests += 1;
                }
            }
        }
    }
    assert!(requests > 500, "{requests}");

    // Every entry that was there is there, byte for byte; whatever was added is self-audit.
    let (after, checkpoint_after) = snapshot(&owner);
    for (seq, entry) in &before {
        assert_eq!(after.get(seq), Some(entry), "entry {seq} changed");
    }
    for (seq, (_, e)) in after.range(before.len() as u64..) {
        let action = e["action"].as_str().unwrap();
        assert!(
            action.starts_with("evident."),
            "entry {seq} is not self-audit: {e}"
        );
    }
    // The old checkpoint is still served for its size, and the new one extends it.
    let new = Checkpoint::open(&checkpoint_after, &verifier).unwrap();
    assert!(new.size >= old.size);
    let proof = owner
        .get(&format!(
            "/api/v1/proof/consistency?from={}&to={}",
            old.size, new.size
        ))
        .json();
    assert_eq!(proof["from_checkpoint"], checkpoint_before.as_str());
    let hashes: Vec<Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    merkle::verify_consistency(old.size, &old.root, new.size, &new.root, &hashes).unwrap();
    assert_eq!(owner.get("/api/v1/verify").json()["ok"], true);
    // No CLI command edits or deletes either: the offline check of the directory agrees.
    drop(server);
    node.verify().ok();
}
