//! Key rotation through the real binary: a log that crossed a signing-key rotation (with a
//! transition, then a second one retiring the old key at once) and a seal-key rotation
//! verifies online, from its data directory, and offline from an export pinned to the
//! ORIGINAL key, which follows the rotation events; a tampered rotation event is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event, run, verify_export};
use evident_core::note::NoteSigner;
use serde_json::Value;

/// The signature lines of a signed note (key name and base64), in order.
fn signature_lines(note: &str) -> Vec<String> {
    note.lines()
        .filter(|l| l.starts_with('\u{2014}'))
        .map(str::to_owned)
        .collect()
}

fn latest_checkpoint(server: &Server, key: &str) -> String {
    let answer = server.api(key).get("/api/v1/checkpoint");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}

fn append(server: &Server, key: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        let receipts = server
            .api(key)
            .append(&event(&format!("user-{i}"), "user.login"))
            .unwrap();
        last = receipts[0].0;
    }
    last
}

/// Runs `evident keys <args> --data-dir DIR`; returns stdout.
fn keys(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", node.dir_str()]);
    run(&all).ok().stdout
}

#[test]
fn a_log_across_signing_and_seal_rotations_verifies_from_the_old_key() {
    let node = Node::new();
    let key = node.owner_key.clone();
    let original = node.public_key();
    let mut server = Server::start(&node);
    append(&server, &key, 3);
    // A rotation needs the node stopped, and says so.
    let refused = run(&["keys", "rotate-signing", "--data-dir", node.dir_str()]).code(1);
    assert!(
        refused.stderr.contains("stop the server"),
        "{}",
        refused.stderr
    );
    server.stop();

    // Signing key, with a transition: both keys sign afterwards.
    let out = keys(&node, &["rotate-signing", "--transition", "7d"]);
    let second = out.lines().last().unwrap().to_owned();
    assert_ne!(second, original);
    assert!(out.contains("evident.signing_key.rotated"), "{out}");
    assert_eq!(
        node.public_key(),
        second,
        "the node's key is now the new one"
    );
    // Seal key: a new epoch from the entry after the rotation event.
    let out = keys(&node, &["rotate-seal"]);
    assert!(out.contains("seal epoch 2"), "{out}");

    server.restart();
    let last = append(&server, &key, 3);
    server.api(&key).wait_checkpoint(last + 1);
    let during = latest_checkpoint(&server, &key);
    let lines = signature_lines(&during);
    assert_eq!(
        lines.len(),
        2,
        "both keys sign during the transition:\n{during}"
    );

    // A client cannot pass an event off as a rotation.
    let forged = server
        .api(&key)
        .append(&event("mallory", "evident.signing_key.rotated"))
        .unwrap_err();
    assert_eq!(forged.status, 400, "{}", forged.text());

    // Online and from the data directory: seals of both epochs, every stored checkpoint.
    server.cli(&key, &["verify"]).ok();
    let local = node.verify().ok();
    assert!(local.stdout.contains("seals checked"), "{}", local.stdout);

    // Offline, during the transition: an export verifies with either key.
    let export = node.file("during.ndjson");
    server.export(&key, "ndjson", &export, &[]).ok();
    verify_export(&export, &original).ok();
    verify_export(&export, &second).ok();

    // A second signing rotation that retires the old key at once.
    server.stop();
    let out = keys(&node, &["rotate-signing", "--transition", "0"]);
    let third = out.lines().last().unwrap().to_owned();
    server.restart();
    let last = append(&server, &key, 2);
    server.api(&key).wait_checkpoint(last + 1);
    let after = latest_checkpoint(&server, &key);
    let lines = signature_lines(&after);
    assert_eq!(
        lines.len(),
        1,
        "only the newest key signs after the transition:\n{after}"
    );

    // Pinned to the ORIGINAL key, the export verifies by following both rotation events.
    let export = node.file("after.ndjson");
    server.export(&key, "ndjson", &export, &[]).ok();
    let ok = verify_export(&export, &original).ok();
    assert!(ok.stdout.contains(&second), "{}", ok.stdout);
    assert!(ok.stdout.contains(&third), "{}", ok.stdout);
    verify_export(&export, &third).ok();
    server.cli(&key, &["verify"]).ok();
    node.verify().ok();

    // The rotated node moves to another data directory with every key and epoch.
    server.stop();
    let moved = node.file("moved");
    run(&[
        "migrate",
        "--from",
        node.dir_str(),
        "--to",
        moved.to_str().unwrap(),
    ])
    .ok();
    run(&["verify", "--data-dir", moved.to_str().unwrap()]).ok();
    server.restart();

    // Tampered: the first rotation event names another new key (a forged one of the same
    // origin). The export is refused at that event, for what it is.
    let text = std::fs::read_to_string(&export).unwrap();
    let origin = second.split('+').next().unwrap();
    let attacker = NoteSigner::from_seed(origin, [0x66; 32])
        .unwrap()
        .verifier()
        .to_vkey_string();
    let mut rotation_seq = None;
    let tampered: String = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            if rotation_seq.is_none() && value["action"] == "evident.signing_key.rotated" {
                rotation_seq = value["seq"].as_u64();
                assert!(line.contains(&second));
                return line.replacen(&second, &attacker, 1) + "\n";
            }
            format!("{line}\n")
        })
        .collect();
    std::fs::write(&export, tampered).unwrap();
    let refused = verify_export(&export, &original).code(1);
    assert!(
        refused.stderr.contains("bad_key_rotation")
            && refused
                .stderr
                .contains(&format!("FAILED at seq {}", rotation_seq.unwrap())),
        "{}",
        refused.stderr
    );
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[test]
fn an_old_seal_secret_is_kept_until_retention_pruned_its_epoch() {
    let node = Node::new();
    let key = node.owner_key.clone();
    let mut server = Server::start(&node);
    append(&server, &key, 3);
    server.stop();
    keys(&node, &["rotate-seal"]);
    server.restart();
    append(&server, &key, 2);
    server.stop();
    let seal_key = node.dir.join("keys").join("seal.key");
    assert!(seal_key.exists());
    // Everything so far is old: the rotation and two entries of epoch 2 fall out of the
    // window, the entries after the cutoff stay.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    server.restart();
    let last = append(&server, &key, 3);
    server.api(&key).wait_checkpoint(last + 1);
    server.stop();

    // A second rotation while epoch 1 is still stored keeps its secret.
    keys(&node, &["rotate-seal"]);
    assert!(seal_key.exists(), "epoch 1 still has entries");
    let out = common::evident()
        .args(["prune", "--data-dir", node.dir_str()])
        .env("EVIDENT_TEST_NOW", (cutoff + 366 * 86_400_000).to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("discarded the secrets of seal epoch(s) [1]"),
        "{stdout}"
    );
    assert!(
        !seal_key.exists(),
        "the first secret is destroyed once no entry needs it"
    );
    assert!(node.dir.join("keys").join("seal-2.key").exists());

    // The pruned log verifies from its anchor with the secrets kept, locally and online.
    let local = node.verify().ok();
    assert!(
        local.stdout.contains("retention anchor"),
        "{}",
        local.stdout
    );
    server.restart();
    append(&server, &key, 1);
    server.cli(&key, &["verify"]).ok();
}
