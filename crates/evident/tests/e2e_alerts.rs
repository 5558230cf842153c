//! Alerts end to end: the real server delivers signed webhooks to a real HTTP receiver on
//! loopback (Python's http.server), which checks every signature and timestamp with the
//! independent `standardwebhooks` package (PyPI; installed by scripts/test.sh into
//! target/webhooks-venv). Built-in CRITICAL rule, threshold rules (once per window; the
//! brute-force self-audit event), rules made over the API, retries after 500 and while the
//! receiver is down, SIGKILL of Evident, stable webhook-ids, and the payload's inclusion
//! proof checked offline by `evident proof inclusion --proof-file`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event, run};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver: verifies the `v1` signature with standardwebhooks and the `v1a` one
/// (Ed25519, the node's key pinned from its verifier key string) with `cryptography`, answers
/// 500 while `fail` exists, and logs one JSON line per request (verified or not) to `log`.
const RECEIVER: &str = r#"
import base64, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks import Webhook
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
secret, port, logpath, failpath, vkey = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
hook = Webhook(secret)
raw = base64.b64decode(vkey.split("+", 2)[2])[1:]
whpk = "whpk_" + base64.b64encode(raw).decode()
node_key = Ed25519PublicKey.from_public_bytes(raw)
def v1a_ok(headers, body):
    content = ("%s.%s.%s" % (headers.get("webhook-id"), headers.get("webhook-timestamp"), body)).encode()
    sigs = [s[4:] for s in headers.get("webhook-signature", "").split(" ") if s.startswith("v1a,")]
    if not sigs:
        return "no v1a signature"
    try:
        node_key.verify(base64.b64decode(sigs[0]), content)
        return True
    except Exception as e:
        return "v1a: " + repr(e)
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        failing = os.path.exists(failpath)
        try:
            hook.verify(body, headers)
            verified = v1a_ok(headers, body)
        except Exception as e:
            verified = str(e)
        status = 500 if failing else (204 if verified is True else 400)
        with open(logpath, "a") as f:
            f.write(json.dumps({"id": headers.get("webhook-id"), "timestamp": headers.get("webhook-timestamp"),
                                "received": time.time(), "verified": verified, "status": status, "whpk": whpk,
                                "body": body}) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = HTTPServer(("127.0.0.1", port), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("EVIDENT_TEST_WEBHOOKS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/webhooks-venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import standardwebhooks, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the webhook receiver needs Python with the `standardwebhooks` and `cryptography` packages in \
         target/webhooks-venv: run scripts/test.sh, or `python3 -m venv target/webhooks-venv && \
         target/webhooks-venv/bin/pip install standardwebhooks==1.1.0 cryptography==48.0.0`"
    );
    venv
}

struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
    fail: PathBuf,
    script: PathBuf,
    vkey: String,
}

impl Receiver {
    fn start(dir: &Path, port: u16, vkey: &str) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let (log, fail) = (dir.join("received.jsonl"), dir.join("fail"));
        let mut child = Command::new(python())
            .args([
                script.to_str().unwrap(),
                SECRET,
                &port.to_string(),
                log.to_str().unwrap(),
                fail.to_str().unwrap(),
                vkey,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("receiver port");
        Receiver {
            child,
            port,
            log,
            fail,
            script,
            vkey: vkey.to_owned(),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        let dir = self.script.parent().unwrap().to_owned();
        let port = self.port;
        let next = Receiver::start(&dir, port, &self.vkey.clone());
        *self = next;
    }

    /// Every request received so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The verified, accepted deliveries (body parsed).
    fn delivered(&self) -> Vec<(String, Value)> {
        self.requests()
            .into_iter()
            .filter(|r| r["status"] == 204)
            .map(|r| {
                assert_eq!(r["verified"], true, "{r}");
                (
                    r["id"].as_str().unwrap().to_owned(),
                    serde_json::from_str(r["body"].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    /// Waits until a delivery of rule `rule` for entry `seq` arrived; returns it.
    fn wait_for(&self, rule: &str, seq: u64) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self
                .delivered()
                .into_iter()
                .find(|(_, b)| b["data"]["rule"]["name"] == rule && b["data"]["seq"] == seq)
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {rule} alert for entry {seq}; received: {:#?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, rule: &str) -> usize {
        let mut ids: Vec<String> = self
            .delivered()
            .into_iter()
            .filter(|(_, b)| b["data"]["rule"]["name"] == rule)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn critical(actor: &str, action: &str) -> Value {
    let mut e = event(actor, action);
    e["severity"] = json!("critical");
    e
}

fn failed_login(actor: &str) -> Value {
    let mut e = event(actor, "auth.login");
    e["outcome"] = json!("failure");
    e
}

/// Appends a CRITICAL marker and waits for its alert: every entry before it has been
/// through the rules by then (the endpoint delivers in order).
fn settle(server: &Server, key: &str, receiver: &Receiver, name: &str) -> u64 {
    let (seq, _) = server.api(key).append(&critical("marker", name)).unwrap()[0].clone();
    receiver.wait_for("builtin.critical", seq);
    seq
}

#[test]
fn alerts_reach_a_real_receiver_signed_proven_once_per_window_and_across_restarts() {
    let node = Node::new();
    let work = tempfile::tempdir().unwrap();
    let public_key = node.public_key();
    let mut receiver = Receiver::start(work.path(), 0, &public_key);
    let config = work.path().join("evident.toml");
    std::fs::write(
        &config,
        format!(
            r#"
auth_failure_limit = 2
auth_block_ms = 300

[[alerts.rules]]
name = "failed-logins"
action = "auth.login"
outcome = "failure"
threshold = {{ count = 3, within_ms = 600000, per = "actor" }}

[[alerts.rules]]
name = "repeated-brute-force"
action = "evident.auth.brute_force"
threshold = {{ count = 2, within_ms = 600000, per = "ip" }}

[[alerts.webhooks]]
name = "ops"
url = "http://127.0.0.1:{}/hook"
secret = "{SECRET}"
sign_ed25519 = true
retry_min_ms = 100
retry_max_ms = 400
summary_every_ms = 1000

# Nothing listens on port 1: refused at once, disabled after failing for 300 ms.
[[alerts.webhooks]]
name = "dead"
url = "http://127.0.0.1:1/hook"
secret = "{SECRET}"
rules = ["builtin.critical"]
retry_min_ms = 50
retry_max_ms = 100
disable_after_ms = 300
"#,
            receiver.port
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let mut server = Server::start_with(&node.dir, &[], &["--config", &config_arg], None);
    let key = node.owner_key.clone();
    let api = server.api(&key);

    // A CRITICAL event: delivered, signed (checked by the receiver), its proof verifies
    // offline against the signed checkpoint it carries.
    let (seq, hash) = api.append(&critical("alice", "canary.tripped")).unwrap()[0].clone();
    let (id, body) = receiver.wait_for("builtin.critical", seq);
    assert_eq!(body["type"], "evident.alert");
    let data = &body["data"];
    assert_eq!(data["hash"], hash);
    assert_eq!(data["events"][0]["event"]["action"], "canary.tripped");
    assert_eq!(data["events"][0]["seq"], seq);
    let proof = &data["events"][0]["proof"];
    assert_eq!(proof["hash"], hash);
    assert_eq!(proof["checkpoint"], data["checkpoint"]);
    let proof_file = work.path().join("proof.json");
    std::fs::write(&proof_file, proof.to_string()).unwrap();
    let out = run(&[
        "proof",
        "inclusion",
        "--seq",
        &seq.to_string(),
        "--proof-file",
        proof_file.to_str().unwrap(),
        "--public-key",
        &public_key,
        "--url",
        "http://127.0.0.1:9", // never asked: the proof carries its checkpoint
    ])
    .ok();
    assert!(
        out.stdout.contains(&format!("OK: entry {seq} is included")),
        "{}",
        out.stdout
    );
    // A tampered proof fails.
    let mut bad = proof.clone();
    bad["hash"] = data["events"][0]["proof"]["root"].clone();
    std::fs::write(&proof_file, bad.to_string()).unwrap();
    let failed = run(&[
        "proof",
        "inclusion",
        "--seq",
        &seq.to_string(),
        "--proof-file",
        proof_file.to_str().unwrap(),
        "--public-key",
        &public_key,
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert_ne!(failed.code, Some(0), "{}", failed.stdout);
    // The webhook-timestamp is the time of sending.
    let request = receiver
        .requests()
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    let sent: f64 = request["timestamp"].as_str().unwrap().parse().unwrap();
    assert!((request["received"].as_f64().unwrap() - sent).abs() < 300.0);

    // Threshold: 5 failed logins by alice, 2 by bob: one alert (at alice's third).
    let mut seqs = Vec::new();
    for actor in ["alice", "bob", "alice", "alice", "bob", "alice", "alice"] {
        seqs.push(api.append(&failed_login(actor)).unwrap()[0].0);
    }
    settle(&server, &key, &receiver, "after.logins");
    assert_eq!(receiver.count("failed-logins"), 1);
    let (_, fired) = receiver.wait_for("failed-logins", seqs[3]);
    let window: Vec<u64> = fired["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(window, vec![seqs[0], seqs[2], seqs[3]]);
    assert_eq!(fired["data"]["window"]["key"], "alice");

    // Brute force: three bursts of bad keys from 127.0.0.1, three CRITICAL brute-force
    // events; the threshold rule over them fires once (at the second).
    let anonymous = common::Api {
        http: server.client(),
        url: server.url.clone(),
        key: Some("evk_bad_key_000000000000".to_owned()),
    };
    for _ in 0..3 {
        let mut statuses = Vec::new();
        for _ in 0..2 {
            statuses.push(anonymous.get("/api/v1/audit-log").status);
        }
        assert_eq!(statuses, [401, 429]);
        std::thread::sleep(Duration::from_millis(400));
    }
    settle(&server, &key, &receiver, "after.brute_force");
    let brute: Vec<u64> = api
        .all_entries()
        .into_iter()
        .filter(|(_, _, e)| e["action"] == "evident.auth.brute_force")
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(brute.len(), 3);
    assert_eq!(receiver.count("repeated-brute-force"), 1);
    receiver.wait_for("repeated-brute-force", brute[1]);
    for seq in &brute {
        receiver.wait_for("builtin.critical", *seq);
    }

    // Rules over the API: owners add one (stored, logged), config rules cannot be deleted.
    let http = server.client();
    let added = http
        .post(format!("{}/api/v1/alerts/rules", server.url))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(json!({"name": "deploys", "action_prefix": "deploy."}).to_string())
        .send()
        .unwrap();
    assert_eq!(added.status(), 201);
    let refused = http
        .delete(format!("{}/api/v1/alerts/rules/failed-logins", server.url))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 409);
    let (deploy, _) = api.append(&event("carol", "deploy.start")).unwrap()[0].clone();
    receiver.wait_for("deploys", deploy);

    // The receiver answers 500: retried with the same webhook-id until it accepts.
    std::fs::write(&receiver.fail, "").unwrap();
    let (retried, _) = api.append(&critical("dave", "canary.tripped")).unwrap()[0].clone();
    let retried_id = wait_until(|| {
        let failures: Vec<Value> = receiver
            .requests()
            .into_iter()
            .filter(|r| r["status"] == 500 && r["verified"] == true)
            .collect();
        (failures.len() >= 2).then(|| failures[0]["id"].as_str().unwrap().to_owned())
    });
    std::fs::remove_file(&receiver.fail).unwrap();
    let (id, _) = receiver.wait_for("builtin.critical", retried);
    assert_eq!(id, retried_id);

    // The receiver is down, and Evident is SIGKILLed while the alert waits: after both
    // come back, the alert is delivered (same id as any attempt before the kill).
    receiver.stop();
    let (waiting, _) = api.append(&critical("erin", "canary.tripped")).unwrap()[0].clone();
    wait_until(|| {
        let status = server.api(&key).get("/api/v1/webhooks").json();
        (endpoint(&status, "ops")["failed"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    server.kill();
    server.restart();
    receiver.restart();
    receiver.wait_for("builtin.critical", waiting);
    // The threshold windows came through the SIGKILL with the cursor: alice's window (10
    // minutes, fired) is still open, so three more failures raise nothing; a lost window
    // would have fired again at the third.
    let api = server.api(&key);
    for _ in 0..3 {
        api.append(&failed_login("alice")).unwrap();
    }
    settle(&server, &key, &receiver, "after.restart");
    assert_eq!(receiver.count("failed-logins"), 1);
    assert_eq!(receiver.count("repeated-brute-force"), 1);
    // The API-made rule survived the restart.
    let listed = server.api(&key).get("/api/v1/alerts/rules").json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"]["name"] == "deploys" && r["source"] == "api"),
        "{listed}"
    );
    let actions: Vec<String> = server
        .api(&key)
        .all_entries()
        .into_iter()
        .map(|(_, _, e)| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(actions.iter().any(|a| a == "evident.alerts.rule_created"));
    assert!(actions.iter().any(|a| a == "evident.webhook.failing"));
    assert!(actions.iter().any(|a| a == "evident.webhook.recovered"));
    let summaries: Vec<Value> = server
        .api(&key)
        .all_entries()
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == "evident.webhook.summary")
        .collect();
    assert!(
        summaries
            .iter()
            .any(|e| e["context"]["delivered"].as_u64().unwrap() > 0),
        "{summaries:?}"
    );

    // At-least-once, no more: one webhook-id per (rule, entry), every copy of an id the
    // same body, every request signed correctly.
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let mut ids_by_alert: BTreeMap<(String, u64), String> = BTreeMap::new();
    for (id, body) in receiver.delivered() {
        if let Some(before) = by_id.get(&id) {
            assert_eq!(before, &body, "two bodies for {id}");
        }
        let alert = (
            body["data"]["rule"]["name"].as_str().unwrap().to_owned(),
            body["data"]["seq"].as_u64().unwrap(),
        );
        if let Some(other) = ids_by_alert.insert(alert.clone(), id.clone()) {
            assert_eq!(other, id, "two ids for {alert:?}");
        }
        by_id.insert(id, body);
    }
    for r in receiver.requests() {
        assert_eq!(r["verified"], true, "{r}");
    }
    let status = server.api(&key).get("/api/v1/webhooks").json();
    let ops = endpoint(&status, "ops");
    assert!(ops["cursor"]["next_seq"].as_u64().unwrap() > waiting);
    assert_eq!(ops["public_key"], receiver.requests()[0]["whpk"]);
    assert_eq!(ops["disabled_at"], Value::Null);

    // The endpoint nobody answers was disabled, with one event, and an owner enables it.
    let dead = endpoint(&status, "dead");
    assert!(dead["disabled_at"].is_i64(), "{dead}");
    // (Its counts are since the restart; the disabled state came through it.)
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "evident.webhook.disabled")
            .count(),
        1,
        "{actions:?}"
    );
    let enabled = server
        .client()
        .post(format!("{}/api/v1/webhooks/dead/enable", server.url))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(enabled.status(), 200);
    let enabled: Value = serde_json::from_slice(&enabled.bytes().unwrap()).unwrap();
    assert_eq!(endpoint(&enabled, "dead")["name"], "dead");
    wait_until(|| {
        let status = server.api(&key).get("/api/v1/webhooks").json();
        endpoint(&status, "dead")["disabled_at"]
            .is_null()
            .then_some(())
    });
}

fn endpoint<'a>(status: &'a Value, name: &str) -> &'a Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {status}"))
}

/// Polls `f` until it returns `Some` (30 s at most).
fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Receiver {
    /// The distinct deliveries of rule `rule` (by webhook-id), waiting for the first.
    fn wait_for_rule(&self, rule: &str) -> Vec<Value> {
        wait_until(|| {
            let mut seen = BTreeMap::new();
            for (id, body) in self.delivered() {
                if body["data"]["rule"]["name"] == rule {
                    seen.insert(id, body);
                }
            }
            (!seen.is_empty()).then(|| seen.into_values().collect())
        })
    }
}

#[test]
fn dead_man_and_read_only_alert_once_per_incident() {
    // Embedded: the read-only switch is provoked by editing the SQLite file.
    let node = Node::embedded();
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(work.path(), 0, &node.public_key());
    let config = work.path().join("evident.toml");
    std::fs::write(
        &config,
        format!(
            r#"
checkpoint_every_ms = 600000
[alerts]
dead_man_after_ms = 300
[[alerts.webhooks]]
name = "pager"
url = "http://127.0.0.1:{}/hook"
secret = "{SECRET}"
sign_ed25519 = true
rules = ["builtin.dead_man", "builtin.read_only"]
"#,
            receiver.port
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    // The harness's EVIDENT_CHECKPOINT_EVERY_MS would override the file: set it back.
    let server = Server::start_with(
        &node.dir,
        &[("EVIDENT_CHECKPOINT_EVERY_MS", "600000")],
        &["--config", &config_arg],
        None,
    );
    let api = server.api(&node.owner_key);
    // A signed checkpoint, then entries that no checkpoint covers for longer than 300 ms.
    assert_eq!(api.get("/api/v1/checkpoint").status, 200);
    let size = api.checkpoint_size();
    api.append(&event("alice", "note.written")).unwrap();
    let alerts = receiver.wait_for_rule("builtin.dead_man");
    assert_eq!(alerts[0]["data"]["condition"]["checkpoint_size"], size);
    assert_eq!(alerts[0]["data"]["events"], json!([]));
    // More entries, the same stuck checkpoint: still one alert once a later one is in.
    api.append(&event("bob", "note.written")).unwrap();

    // Damage: an edited row, found by an on-demand verification: the node turns read-only
    // and the alert says what was found.
    let db = common::attacker_db(&node.dir);
    db.execute_batch("UPDATE events SET actor_kind = 'wizard' WHERE seq = 0")
        .unwrap();
    drop(db);
    let verify = api.get("/api/v1/verify");
    assert_eq!(verify.json()["ok"], false, "{}", verify.text());
    let read_only = receiver.wait_for_rule("builtin.read_only");
    assert_eq!(read_only.len(), 1);
    let condition = &read_only[0]["data"]["condition"];
    assert!(condition["kind"].is_string(), "{condition}");
    // Both incidents stay one alert each (the ticks run every second; two more pass here).
    let ready = wait_until(|| {
        let status = api.get("/api/v1/webhooks").json();
        let attempts = endpoint(&status, "pager")["attempts"].as_u64().unwrap();
        (attempts >= 2).then_some(status)
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(receiver.wait_for_rule("builtin.dead_man").len(), 1);
    assert_eq!(receiver.wait_for_rule("builtin.read_only").len(), 1);
    assert_eq!(endpoint(&ready, "pager")["failed"], 0);
    for r in receiver.requests() {
        assert_eq!(r["verified"], true, "{r}");
    }
}
