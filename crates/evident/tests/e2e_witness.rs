//! Witnessing across three real nodes on loopback with mTLS (C2SP tlog-witness and
//! tlog-cosignature): each node's checkpoints collect its peers' cosignatures, which this test
//! checks with its own implementation of the spec (and the node signature with a verifier that
//! ignores unknown lines); a node restored from an older copy of its data directory that
//! appends another history is refused by its peers (409 with the size they know), which
//! record it and alert; and `evident verify` with a 2-of-3 policy refuses its new checkpoints.
//! Across a node's signing-key rotation (transition over), its peers follow the rotation and
//! keep cosigning, and its own cosigner key, and so every `[witness].keys`, stays the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::cluster::{Cluster, Extra, identity_of, start_cluster_on};
use common::{Node, event, mtls_client, run};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFLICT: &str = "evident.integrity.witness_conflict";

/// Polls `f` until it answers, for up to 30 s.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A C2SP verifier key `<name>+<hex key id>+<base64(type ‖ 32-byte key)>`, taken apart by
/// hand: the name, the key ID, the type byte and the Ed25519 key.
fn parse_vkey(vkey: &str) -> (String, [u8; 4], u8, VerifyingKey) {
    let mut parts = vkey.trim().splitn(3, '+');
    let (name, id, key) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let id: [u8; 4] = u32::from_str_radix(id, 16).unwrap().to_be_bytes();
    let bytes = BASE64.decode(key).unwrap();
    let key = VerifyingKey::from_bytes(&bytes[1..].try_into().unwrap()).unwrap();
    (name.to_owned(), id, bytes[0], key)
}

/// The C2SP key ID: SHA-256(name ‖ 0x0A ‖ type ‖ key)[:4].
fn key_id(name: &str, alg: u8, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(key.as_bytes());
    h.finalize()[..4].try_into().unwrap()
}

/// A signed note split into its text (ending in a newline) and (name, decoded signature)
/// signature lines.
fn split_note(note: &str) -> (String, Vec<(String, Vec<u8>)>) {
    let (text, sigs) = note.split_once("\n\n").unwrap();
    let lines = sigs
        .lines()
        .map(|line| {
            let rest = line.strip_prefix("\u{2014} ").unwrap();
            let (name, b64) = rest.split_once(' ').unwrap();
            (name.to_owned(), BASE64.decode(b64).unwrap())
        })
        .collect();
    (format!("{text}\n"), lines)
}

/// An older verifier's view (C2SP signed-note): the note verifies when the log key's
/// Ed25519 signature line does; every other line (cosignatures included) is ignored.
fn note_verifies(note: &str, log_vkey: &str) -> bool {
    let (name, id, alg, key) = parse_vkey(log_vkey);
    assert_eq!((alg, key_id(&name, 0x01, &key)), (0x01, id));
    let (text, sigs) = split_note(note);
    sigs.iter().any(|(n, sig)| {
        n == &name
            && sig.len() == 68
            && sig[..4] == id
            && key
                .verify_strict(
                    text.as_bytes(),
                    &Signature::from_bytes(&sig[4..].try_into().unwrap()),
                )
                .is_ok()
    })
}

/// C2SP tlog-cosignature, written from the spec: the timestamp of the `cosignature/v1` line
/// of witness `witness_vkey` in `note` that verifies, if there is one. The line's bytes are
/// key ID (SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4]) ‖ u64 big-endian timestamp ‖ Ed25519
/// signature over "cosignature/v1\ntime <timestamp>\n" ‖ the checkpoint text.
fn cosignature_time(note: &str, witness_vkey: &str) -> Option<u64> {
    let (name, id, alg, key) = parse_vkey(witness_vkey);
    assert_eq!(alg, 0x04, "a cosignature/v1 key has type 0x04");
    assert_eq!(key_id(&name, 0x04, &key), id);
    let (text, sigs) = split_note(note);
    sigs.iter().find_map(|(n, sig)| {
        if n != &name || sig.len() != 4 + 8 + 64 || sig[..4] != id {
            return None;
        }
        let timestamp = u64::from_be_bytes(sig[4..12].try_into().unwrap());
        let message = format!("cosignature/v1\ntime {timestamp}\n{text}");
        let signature = Signature::from_bytes(&sig[12..].try_into().unwrap());
        key.verify_strict(message.as_bytes(), &signature)
            .ok()
            .map(|()| timestamp)
    })
}

/// A webhook receiver on loopback: keeps every request body, answers 200.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { port, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// HTTP/1.1 requests on one connection, until it closes.
fn serve(stream: std::net::TcpStream, kept: &Mutex<Vec<String>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn witness_status(cluster: &Cluster, i: usize) -> Value {
    let answer = cluster.servers[i]
        .api(&cluster.nodes[i].owner_key)
        .get("/api/v1/witness");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

fn checkpoint_note(cluster: &Cluster, i: usize) -> String {
    let answer = cluster.servers[i]
        .api(&cluster.nodes[i].owner_key)
        .get("/api/v1/checkpoint");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}

fn size_of(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// Waits until node `i`'s latest checkpoint covers its whole log and meets the policy.
fn wait_witnessed(cluster: &Cluster, i: usize) -> String {
    let api = cluster.servers[i].api(&cluster.nodes[i].owner_key);
    wait_until(
        "a checkpoint of the whole log cosigned by two peers",
        || {
            let size = api.size() as u64;
            let status = witness_status(cluster, i);
            let note = checkpoint_note(cluster, i);
            (status["policy_met"] == true
                && size_of(&note) >= size
                && status["checkpoint_size"] == size_of(&note))
            .then_some(note)
        },
    )
}

/// The entries of node `i` with `action`.
fn entries_with(cluster: &Cluster, i: usize, action: &str) -> Vec<Value> {
    cluster.servers[i]
        .api(&cluster.nodes[i].owner_key)
        .all_entries()
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == action)
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn verify_with_policy(
    note_file: &Path,
    public_key: &str,
    witnesses: &[String],
    k: &str,
) -> common::Run {
    let mut args = vec![
        "verify",
        "--checkpoint",
        note_file.to_str().unwrap(),
        "--public-key",
        public_key,
        "--witnesses-required",
        k,
        "--witness-key",
    ];
    args.extend(witnesses.iter().map(String::as_str));
    run(&args)
}

#[test]
fn peers_cosign_checkpoints_and_refuse_a_restored_node_that_forks() {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::embedded_with_env(&[("EVIDENT_NODE_ID", &format!("node-{i}"))]))
        .collect();
    let log_keys: Vec<String> = nodes.iter().map(Node::public_key).collect();
    let witness_keys: Vec<String> = nodes
        .iter()
        .map(|n| {
            run(&["public-key", "--data-dir", n.dir_str(), "--witness"])
                .ok()
                .stdout
                .trim()
                .to_owned()
        })
        .collect();
    let receiver = Receiver::start();
    let keys_list = witness_keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tables = |_: usize| {
        format!(
            "[witness]\npolicy_k = 2\nkeys = [{keys_list}]\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nrules = [\"builtin.integrity\"]\n\
             retry_min_ms = 100\nretry_max_ms = 400\n",
            receiver.port
        )
    };
    let mut cluster = start_cluster_on(
        nodes,
        &Extra {
            top: &|_| "checkpoint_every_ms = 200\n".to_owned(),
            tables: &tables,
        },
    );
    let api1 = cluster.servers[0].api(&cluster.nodes[0].owner_key);
    let status = witness_status(&cluster, 0);
    assert_eq!(status["cosigner_key"], witness_keys[0].as_str());

    // Cosignatures are collected: node-1's checkpoint carries node-2's and node-3's, which
    // verify by the spec, and the note still verifies for a reader ignoring them.
    for i in 0..3 {
        api1.append(&event(&format!("alice-{i}"), "doc.read"))
            .unwrap();
    }
    let note = wait_witnessed(&cluster, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (i, key) in witness_keys.iter().enumerate().skip(1) {
        let time = cosignature_time(&note, key)
            .unwrap_or_else(|| panic!("no valid cosignature by node-{}:\n{note}", i + 1));
        assert!(
            time <= now && now - time < 600,
            "timestamp {time}, now {now}"
        );
    }
    assert_eq!(
        cosignature_time(&note, &witness_keys[0]),
        None,
        "a node does not witness itself"
    );
    assert!(note_verifies(&note, &log_keys[0]), "{note}");
    let tampered = note.replacen("\n\n", "\nextension\n\n", 1);
    assert_eq!(cosignature_time(&tampered, &witness_keys[1]), None);
    let first = cluster.nodes[0].file("first.cp");
    std::fs::write(&first, &note).unwrap();
    // The project's own verifiers: the data directory checked against the cosigned note, and
    // the 2-of-3 policy met (3 of 3 is not: a node does not cosign its own checkpoint).
    run(&[
        "verify",
        "--data-dir",
        cluster.nodes[0].dir_str(),
        "--checkpoint",
        first.to_str().unwrap(),
    ])
    .ok();
    let ok = verify_with_policy(&first, &log_keys[0], &witness_keys, "2").ok();
    assert!(
        ok.stdout
            .contains("2 valid cosignature(s) of the 2 required"),
        "{}",
        ok.stdout
    );
    let three = verify_with_policy(&first, &log_keys[0], &witness_keys, "3").code(1);
    assert!(
        three
            .stderr
            .contains("2 of the 3 required cosignatures verified"),
        "{}",
        three.stderr
    );

    // An older copy of node-1's data directory.
    let old_size = size_of(&note);
    cluster.servers[0].stop();
    let backup = cluster.nodes[0].file("backup");
    copy_dir(&cluster.nodes[0].dir, &backup);
    cluster.servers[0].restart();
    for i in 0..12 {
        api1.append(&event(&format!("bob-{i}"), "doc.read"))
            .unwrap();
    }
    let witnessed = size_of(&wait_witnessed(&cluster, 0));
    for peer in 1..3 {
        let seen = witness_status(&cluster, peer);
        let head = seen["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == "node-1")
            .cloned()
            .unwrap();
        assert_eq!(head["size"], witnessed, "{seen}");
    }

    // node-1 restored from the copy appends another history.
    cluster.servers[0].stop();
    std::fs::remove_dir_all(&cluster.nodes[0].dir).unwrap();
    copy_dir(&backup, &cluster.nodes[0].dir);
    cluster.servers[0].restart();
    api1.append(&event("mallory", "doc.rewrite")).unwrap();
    api1.append(&event("mallory", "doc.rewrite")).unwrap();
    let size = api1.size() as u64;
    api1.wait_checkpoint(size);
    let forked = checkpoint_note(&cluster, 0);
    assert!(
        size_of(&forked) < witnessed,
        "the restored log must stay below what was witnessed"
    );

    // Submitted as node-1 would (its certificate, the size it last had cosigned): 409 with
    // the size the witness knows, as text/x.tlog.size.
    let as_node1 = mtls_client(&cluster.pki.ca_cert(), &identity_of(&cluster.certs[0]));
    let answer = as_node1
        .post(format!(
            "{}/api/v1/witness/add-checkpoint",
            cluster.servers[1].url
        ))
        .body(format!("old {old_size}\n\n{forked}"))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 409);
    assert_eq!(answer.headers()["content-type"], "text/x.tlog.size");
    assert_eq!(answer.text().unwrap(), format!("{witnessed}\n"));
    // An operator certificate (no peer) may not submit at all.
    let operator = mtls_client(&cluster.pki.ca_cert(), &cluster.operator);
    let answer = operator
        .post(format!(
            "{}/api/v1/witness/add-checkpoint",
            cluster.servers[1].url
        ))
        .body(format!("old {old_size}\n\n{forked}"))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);

    // Both peers refused node-1's own submissions too, recorded the conflict in their logs
    // and alerted through the built-in integrity rule; neither moved its head.
    for peer in 1..3 {
        let conflicts = wait_until("the peer's conflict record", || {
            let found = entries_with(&cluster, peer, CONFLICT);
            (!found.is_empty()).then_some(found)
        });
        let record = &conflicts[0];
        assert_eq!(record["target"]["id"], "node-1", "{record}");
        assert_eq!(record["context"]["witnessed_size"], witnessed, "{record}");
        let seen = witness_status(&cluster, peer);
        let head = seen["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == "node-1")
            .cloned()
            .unwrap();
        assert_eq!(head["size"], witnessed, "{seen}");
    }
    wait_until("the integrity alerts of both peers", || {
        let alerts: Vec<String> = receiver
            .bodies()
            .into_iter()
            .filter(|b| b.contains("builtin.integrity") && b.contains(CONFLICT))
            .collect();
        (alerts.iter().any(|b| b.contains("node-2")) && alerts.iter().any(|b| b.contains("node-3")))
            .then_some(())
    });
    // node-1 says why its submitter is stuck.
    let consumers = api1.get("/api/v1/consumers").json();
    let submitter = consumers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"] == "witness:node-2" || (c["kind"] == "witness" && c["name"] == "node-2")
        })
        .cloned()
        .unwrap_or_else(|| panic!("{consumers}"));
    assert!(
        submitter
            .to_string()
            .contains("larger than this node's checkpoint"),
        "{submitter}"
    );

    // The 2-of-3 policy refuses node-1's new checkpoint, naming how many verified.
    let forked = checkpoint_note(&cluster, 0);
    assert_eq!(witness_status(&cluster, 0)["policy_met"], false);
    let file = cluster.nodes[0].file("forked.cp");
    std::fs::write(&file, &forked).unwrap();
    let refused = verify_with_policy(&file, &log_keys[0], &witness_keys, "2").code(1);
    assert!(
        refused.stderr.contains("witness policy")
            && refused
                .stderr
                .contains("0 of the 2 required cosignatures verified"),
        "{}",
        refused.stderr
    );
    // …while the other nodes' checkpoints still meet it.
    let node2 = wait_witnessed(&cluster, 1);
    let file2 = cluster.nodes[1].file("node2.cp");
    std::fs::write(&file2, &node2).unwrap();
    verify_with_policy(&file2, &log_keys[1], &witness_keys, "2").ok();

    // A policy that cannot be met, a key that is no cosigner key, a witness given twice:
    // refused up front, naming the flag.
    let more = verify_with_policy(&file2, &log_keys[1], &witness_keys, "4").code(2);
    assert!(
        more.stderr.contains("--witnesses-required 4"),
        "{}",
        more.stderr
    );
    let node_key = [log_keys[1].clone()];
    let wrong = verify_with_policy(&file2, &log_keys[1], &node_key, "1").code(2);
    assert!(
        wrong.stderr.contains("is not a cosigner key"),
        "{}",
        wrong.stderr
    );
    let twice = [witness_keys[1].clone(), witness_keys[1].clone()];
    let dup = verify_with_policy(&file2, &log_keys[1], &twice, "1").code(2);
    assert!(dup.stderr.contains("given twice"), "{}", dup.stderr);
}

/// `evident public-key --witness` of a data directory.
fn witness_key_of(node: &Node) -> String {
    run(&["public-key", "--data-dir", node.dir_str(), "--witness"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

/// What witness `peer` reports of node `of` (`node-<of + 1>`).
fn witnessed_of(cluster: &Cluster, peer: usize, of: usize) -> Value {
    let seen = witness_status(cluster, peer);
    seen["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == format!("node-{}", of + 1).as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{seen}"))
}

/// The signature lines of `note` under the key name `origin`.
fn log_signatures(note: &str, origin: &str) -> usize {
    split_note(note)
        .1
        .iter()
        .filter(|(name, _)| name == origin)
        .count()
}

#[test]
fn witnessing_keeps_working_across_a_signing_key_rotation() {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::embedded_with_env(&[("EVIDENT_NODE_ID", &format!("node-{i}"))]))
        .collect();
    let original: Vec<String> = nodes.iter().map(Node::public_key).collect();
    let witness_keys: Vec<String> = nodes.iter().map(witness_key_of).collect();
    let keys_list = witness_keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tables = |_: usize| format!("[witness]\npolicy_k = 2\nkeys = [{keys_list}]\n");
    let mut cluster = start_cluster_on(
        nodes,
        &Extra {
            top: &|_| "checkpoint_every_ms = 200\n".to_owned(),
            tables: &tables,
        },
    );
    let apis: Vec<_> = (0..3)
        .map(|i| cluster.servers[i].api(&cluster.nodes[i].owner_key))
        .collect();
    for (i, api) in apis.iter().enumerate() {
        api.append(&event(&format!("before-{i}"), "doc.read"))
            .unwrap();
    }
    for i in 0..3 {
        wait_witnessed(&cluster, i);
    }
    assert_eq!(witness_status(&cluster, 1)["cosigner_key"], witness_keys[1]);

    // node-2 rotates its signing key and retires the old one at once.
    cluster.servers[1].stop();
    let config = cluster.nodes[1].file("cluster.toml");
    let out = run(&[
        "keys",
        "rotate-signing",
        "--transition",
        "0",
        "--data-dir",
        cluster.nodes[1].dir_str(),
        "--config",
        config.to_str().unwrap(),
    ])
    .ok()
    .stdout;
    let rotated = cluster.nodes[1].public_key();
    assert_ne!(rotated, original[1]);
    assert!(out.contains(&rotated), "{out}");
    // Its witness identity did not change, offline nor online.
    assert_eq!(witness_key_of(&cluster.nodes[1]), witness_keys[1]);
    cluster.servers[1].restart();
    assert_eq!(witness_status(&cluster, 1)["cosigner_key"], witness_keys[1]);

    // node-2's new checkpoints, signed by the new key alone, are cosigned by both peers,
    // whose configuration still names only its original key.
    for i in 0..3 {
        apis[1]
            .append(&event(&format!("after-{i}"), "doc.read"))
            .unwrap();
    }
    let note2 = wait_witnessed(&cluster, 1);
    let origin = original[1].split('+').next().unwrap();
    assert_eq!(log_signatures(&note2, origin), 1, "{note2}");
    assert!(note_verifies(&note2, &rotated), "{note2}");
    assert!(!note_verifies(&note2, &original[1]), "{note2}");
    for peer in [0, 2] {
        assert!(
            cosignature_time(&note2, &witness_keys[peer]).is_some(),
            "no cosignature by node-{}:\n{note2}",
            peer + 1
        );
        let seen = witnessed_of(&cluster, peer, 1);
        assert_eq!(seen["size"], size_of(&note2), "{seen}");
        assert_eq!(
            seen["trusted_keys"],
            serde_json::json!([original[1], rotated]),
            "{seen}"
        );
    }
    // Submitted again as node-2 would: cosigned (200), not refused (403).
    let as_node2 = mtls_client(&cluster.pki.ca_cert(), &identity_of(&cluster.certs[1]));
    for peer in [0, 2] {
        let answer = as_node2
            .post(format!(
                "{}/api/v1/witness/add-checkpoint",
                cluster.servers[peer].url
            ))
            .body(format!("old {}\n\n{note2}", size_of(&note2)))
            .send()
            .unwrap();
        let status = answer.status().as_u16();
        let lines = answer.text().unwrap();
        assert_eq!(status, 200, "{lines}");
        let cosigned = format!("{note2}{lines}");
        assert!(cosignature_time(&cosigned, &witness_keys[peer]).is_some());
    }

    // node-2 still witnesses the others under its unchanged key: their new checkpoints
    // carry its cosignature, counted by their unchanged [witness].keys.
    for i in [0, 2] {
        apis[i]
            .append(&event(&format!("others-{i}"), "doc.read"))
            .unwrap();
        let note = wait_witnessed(&cluster, i);
        assert!(
            cosignature_time(&note, &witness_keys[1]).is_some(),
            "node-{} lacks node-2's cosignature:\n{note}",
            i + 1
        );
        let counted = witness_status(&cluster, i)["cosignatures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["witness"] == format!("{origin}/witness").as_str() && c["counted"] == true);
        assert!(counted, "{}", witness_status(&cluster, i));
    }

    // A restarted witness knows only the configured key again, and learns the rotation anew.
    cluster.servers[2].stop();
    cluster.servers[2].restart();
    assert_eq!(
        witnessed_of(&cluster, 2, 1)["trusted_keys"],
        serde_json::json!([original[1]])
    );
    apis[1].append(&event("after-restart", "doc.read")).unwrap();
    let latest = wait_witnessed(&cluster, 1);
    assert!(size_of(&latest) > size_of(&note2));
    assert!(
        cosignature_time(&latest, &witness_keys[2]).is_some(),
        "{latest}"
    );

    // Nobody saw a conflict.
    for peer in 0..3 {
        assert!(entries_with(&cluster, peer, CONFLICT).is_empty());
    }

    // `evident verify` with the 2-of-3 policy accepts node-2's new checkpoint, pinned to the
    // key that signs it; the original key alone does not open it (a lone checkpoint carries
    // no rotation to follow).
    let file = cluster.nodes[1].file("rotated.cp");
    std::fs::write(&file, &latest).unwrap();
    let ok = verify_with_policy(&file, &rotated, &witness_keys, "2").ok();
    assert!(
        ok.stdout
            .contains("2 valid cosignature(s) of the 2 required"),
        "{}",
        ok.stdout
    );
    verify_with_policy(&file, &original[1], &witness_keys, "2").code(1);

    // A cluster read follows the rotation too: node-1, restarted (trusting only node-2's
    // configured key), reads node-2's part as ok, checked against the key it learns.
    cluster.servers[0].stop();
    cluster.servers[0].restart();
    assert_eq!(
        witnessed_of(&cluster, 0, 1)["trusted_keys"],
        serde_json::json!([original[1]])
    );
    let answer = apis[0].get("/api/v1/audit-log?scope=cluster&order=asc&action=doc.read");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let page = answer.json();
    let node2 = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-2")
        .cloned()
        .unwrap();
    assert_eq!(node2["status"], "ok", "{page}");
    let from_node2: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node_id"] == "node-2")
        .map(|e| e["actor"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        from_node2,
        ["before-1", "after-0", "after-1", "after-2", "after-restart"],
        "{page}"
    );
    assert_eq!(
        witnessed_of(&cluster, 0, 1)["trusted_keys"],
        serde_json::json!([original[1], rotated])
    );
}
