//! A cluster of three real nodes on loopback with mTLS: certificates made by `evident
//! cluster ca init` / `cert issue`, clients without a cluster certificate refused at the TLS
//! handshake, and a peer's certificate giving only the `peer` role (read, never append);
//! `scope=cluster` reads merged across the nodes, with a stopped and a killed node named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::cluster::{Pki, identity_of, start_cluster};
use common::{Node, Server, event, mtls_client, run, tls_client};
use std::path::Path;

/// The self-audit action of a refused (403) request.
const FORBIDDEN: &str = "evident.access.forbidden";
/// The self-audit action of an export.
const EXPORTED: &str = "evident.log.exported";

#[test]
fn cluster_nodes_speak_mtls_only_and_a_peer_may_read_but_not_append() {
    let cluster = start_cluster();
    let node1 = &cluster.servers[0];

    // An operator's cluster certificate opens the connection; the API key still decides.
    let owner = node1.api(&cluster.nodes[0].owner_key);
    owner.append(&event("alice", "login")).unwrap();
    let anonymous = common::Api {
        http: mtls_client(&cluster.pki.ca_cert(), &cluster.operator),
        url: node1.url.clone(),
        key: None,
    };
    anonymous
        .get("/api/v1/audit-log")
        .assert_error(401, "unauthorized", None);

    // No client certificate: the handshake fails, no HTTP answer at all.
    let no_cert = tls_client(&cluster.pki.ca_cert());
    let refused = no_cert.get(format!("{}/api/v1/healthz", node1.url)).send();
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    // A certificate from another CA is refused the same way.
    let stranger = Pki::new();
    let (_, stranger_identity) = stranger.issue("node-2");
    let foreign = mtls_client(&cluster.pki.ca_cert(), &stranger_identity)
        .get(format!("{}/api/v1/healthz", node1.url))
        .send();
    assert!(foreign.is_err(), "a foreign certificate got {foreign:?}");

    // node-2's certificate: the peer role, reading without a key, nothing else.
    let peer = common::Api {
        http: mtls_client(&cluster.pki.ca_cert(), &identity_of(&cluster.certs[1])),
        url: node1.url.clone(),
        key: None,
    };
    let read = peer.all_entries();
    assert!(
        read.iter().any(|(_, _, e)| e.to_string().contains("alice")),
        "the peer does not see the node's events"
    );
    let append = peer
        .post_raw(
            "application/json",
            serde_json::to_vec(&event("mallory", "forged")).unwrap(),
        )
        .unwrap();
    append.assert_error(403, "forbidden", None);
    assert!(append.text().contains("peer"), "{}", append.text());
    peer.get("/api/v1/keys")
        .assert_error(403, "forbidden", None);
    peer.get("/api/v1/alerts/rules")
        .assert_error(403, "forbidden", None);
    // The refusal is in the log, attributed to the peer.
    let entries = owner.all_entries();
    assert!(
        entries
            .iter()
            .any(|(_, _, e)| e.to_string().contains(FORBIDDEN)
                && e.to_string().contains("peer:node-2")),
        "no recorded refusal of the peer"
    );
}

/// (recorded_at, node, seq) of an entry, the cluster order.
fn cluster_key(e: &serde_json::Value) -> (String, String, u64) {
    (
        e["recorded_at"].as_str().unwrap().to_owned(),
        e["node_id"].as_str().unwrap().to_owned(),
        e["seq"].as_u64().unwrap(),
    )
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn cluster_query_merges_every_node_and_names_a_stopped_one() {
    let mut cluster = start_cluster();
    let apis: Vec<_> = (0..3)
        .map(|i| cluster.servers[i].api(&cluster.nodes[i].owner_key))
        .collect();
    // Interleaved appends across the nodes, and one event outside the filter.
    for round in 0..3 {
        for (i, api) in apis.iter().enumerate() {
            if round <= i {
                api.append(&event(&format!("u{i}-{round}"), "test.step"))
                    .unwrap();
            }
        }
    }
    apis[0].append(&event("other", "noise")).unwrap();
    let mut expected: Vec<_> = apis
        .iter()
        .flat_map(|api| api.all_entries())
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == "test.step")
        .map(|e| cluster_key(&e))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 6);

    // Paged two at a time from node-1: every node's entries once, in cluster order.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path =
            "/api/v1/audit-log?scope=cluster&order=asc&limit=2&action=test.step".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let answer = apis[0].get(&path);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let page = answer.json();
        let nodes = page["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{page}");
        for node in nodes {
            assert_eq!(node["status"], "ok", "{page}");
            assert!(
                node["checkpoint"]
                    .as_str()
                    .is_some_and(|c| c.contains("evident/node-")),
                "{node}"
            );
        }
        got.extend(page["events"].as_array().unwrap().iter().map(cluster_key));
        pages += 1;
        assert!(pages < 10, "paging does not end");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, expected);
    // Newest first works the same way.
    let desc = apis[1].get("/api/v1/audit-log?scope=cluster&limit=6&action=test.step");
    let mut newest: Vec<_> = desc.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(cluster_key)
        .collect();
    newest.reverse();
    assert_eq!(newest, expected);

    // node-3 stopped (SIGSTOP): the answer still comes, naming it timed out.
    let pid = cluster.servers[2].pid();
    signal(pid, "-STOP");
    let started = std::time::Instant::now();
    let answer = apis[0].get("/api/v1/audit-log?scope=cluster&order=asc&action=test.step");
    let waited = started.elapsed();
    signal(pid, "-CONT");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let page = answer.json();
    let status_of = |page: &serde_json::Value, node: &str| {
        page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| n["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(status_of(&page, "node-3"), "timed_out", "{page}");
    assert_eq!(status_of(&page, "node-2"), "ok", "{page}");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the answer waited {waited:?} for a stopped node (timeout 1.5 s)"
    );
    let from: std::collections::BTreeSet<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(from, ["node-1".to_owned(), "node-2".to_owned()].into());
    // Resuming later picks up node-3 from its start.
    let resume = page["resume_cursor"].as_str().unwrap().to_owned();
    let later = apis[0].get(&format!(
        "/api/v1/audit-log?scope=cluster&order=asc&action=test.step&cursor={resume}"
    ));
    let later = later.json();
    let node3: Vec<_> = later["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node_id"] == "node-3")
        .count()
        .to_string()
        .into_bytes();
    assert_eq!(node3, b"3", "{later}");

    // node-3 killed: unreachable.
    cluster.servers[2].kill();
    let page = apis[0]
        .get("/api/v1/audit-log?scope=cluster&action=test.step")
        .json();
    assert_eq!(status_of(&page, "node-3"), "unreachable", "{page}");

    // A node without [cluster] says so.
    let single = Node::new();
    let server = Server::start(&single);
    server
        .api(&single.owner_key)
        .get("/api/v1/audit-log?scope=cluster")
        .assert_error(400, "invalid_parameter", Some("scope"));
}

/// `evident ARGS` against `server` with `key` (the helper adds the client certificate).
fn cli(server: &Server, key: &str, args: &[&str]) -> common::Run {
    server.cli(key, args)
}

/// The (recorded_at, node, seq) keys of a JSON array of events.
fn keys_of(json: &str) -> Vec<(String, String, u64)> {
    let events: serde_json::Value = serde_json::from_str(json).unwrap();
    events.as_array().unwrap().iter().map(cluster_key).collect()
}

#[test]
fn cluster_cli_query_export_and_bundle_verification_name_each_node() {
    let mut cluster = start_cluster();
    let apis: Vec<_> = (0..3)
        .map(|i| cluster.servers[i].api(&cluster.nodes[i].owner_key))
        .collect();
    for round in 0..3 {
        for (i, api) in apis.iter().enumerate() {
            api.append(&event(&format!("u{i}-{round}"), "test.step"))
                .unwrap();
        }
    }
    let mut expected: Vec<_> = apis
        .iter()
        .flat_map(|api| api.all_entries())
        .map(|(_, _, e)| e)
        .filter(|e| e["action"] == "test.step")
        .map(|e| cluster_key(&e))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 9);
    let key1 = cluster.nodes[0].owner_key.clone();
    let node1 = &cluster.servers[0];

    // Two events a page, through the whole cluster: each node's events once, in order.
    let paged = cli(
        node1,
        &key1,
        &[
            "query",
            "--cluster",
            "--all",
            "--json",
            "--limit",
            "2",
            "--order",
            "asc",
            "--action",
            "test.step",
        ],
    )
    .ok();
    assert_eq!(keys_of(&paged.stdout), expected, "{}", paged.stderr);
    for n in 1..=3 {
        assert!(
            paged
                .stderr
                .contains(&format!("node node-{n}: ok, 3 events shown")),
            "{}",
            paged.stderr
        );
    }
    // One page at a time with the printed cursor gives the same.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec![
            "query",
            "--cluster",
            "--json",
            "--limit",
            "4",
            "--order",
            "asc",
            "--action",
            "test.step",
        ];
        if let Some(c) = &cursor {
            args.extend_from_slice(&["--cursor", c]);
        }
        let page = cli(node1, &key1, &args).ok();
        got.extend(keys_of(&page.stdout));
        cursor = page
            .stderr
            .split("add --cursor ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned());
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(got, expected);
    // Without a client certificate the CLI is refused at the handshake.
    let no_cert = run(&[
        "query",
        "--cluster",
        "--url",
        &node1.url,
        "--key",
        &key1,
        "--ca-cert",
        cluster.pki.ca_cert().to_str().unwrap(),
    ]);
    assert_eq!(no_cert.code, Some(1), "{}", no_cert.stderr);
    assert!(no_cert.stdout.is_empty(), "{}", no_cert.stdout);
    assert!(
        no_cert.stderr.contains("refused the TLS handshake")
            && no_cert.stderr.contains("--client-cert"),
        "{}",
        no_cert.stderr
    );
    // The table has a NODE column.
    let table = cli(
        node1,
        &key1,
        &["query", "--cluster", "--action", "test.step"],
    )
    .ok();
    assert!(table.stdout.starts_with("NODE"), "{}", table.stdout);
    // The merged JSON export.
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("merged.json");
    node1
        .export(
            &key1,
            "json",
            &merged,
            &["--cluster", "--action", "test.step"],
        )
        .ok();
    assert_eq!(
        keys_of(&std::fs::read_to_string(&merged).unwrap()),
        expected
    );

    // The cluster bundle: every node's part, each verified with its own pinned key.
    // A checkpoint of node-2 kept elsewhere before the export.
    let kept = dir.path().join("node-2.checkpoint");
    cluster.servers[1].keep_checkpoint(
        &cluster.nodes[1].owner_key,
        &kept,
        &cluster.nodes[1].public_key(),
    );
    let bundle = dir.path().join("cluster.ndjson");
    let exported = node1.export(&key1, "ndjson", &bundle, &["--cluster"]).ok();
    assert!(
        exported.stderr.contains("node node-3: ok"),
        "{}",
        exported.stderr
    );
    let pins: Vec<String> = (0..3)
        .map(|i| format!("node-{}={}", i + 1, cluster.nodes[i].public_key()))
        .collect();
    let verify = |file: &Path, pins: &[String]| {
        let mut args = vec!["verify", "--export", file.to_str().unwrap()];
        for pin in pins {
            args.extend_from_slice(&["--node-key", pin]);
        }
        run(&args)
    };
    let ok = verify(&bundle, &pins).ok();
    // The kept checkpoint goes to node-2, whose part must be consistent with it.
    let mut with_checkpoint = vec![
        "verify",
        "--export",
        bundle.to_str().unwrap(),
        "--checkpoint",
        kept.to_str().unwrap(),
    ];
    for pin in &pins {
        with_checkpoint.extend_from_slice(&["--node-key", pin]);
    }
    // Without a proof from the kept size, node-2's part cannot be tied to it, and says so.
    let unprovable = run(&with_checkpoint).code(1);
    assert!(
        unprovable.stderr.contains(
            "node node-2: FAILED at line 1: cannot check the export against your checkpoint"
        ),
        "{}",
        unprovable.stderr
    );
    let kept_size = common::saved_checkpoint_size(&kept);
    let proven = dir.path().join("proven.ndjson");
    node1
        .export(
            &key1,
            "ndjson",
            &proven,
            &[
                "--cluster",
                "--node-consistency-from",
                &format!("node-2={kept_size}"),
            ],
        )
        .ok();
    with_checkpoint[2] = proven.to_str().unwrap();
    let consistent = run(&with_checkpoint).ok();
    let node2_verdict = consistent.stdout.split("node node-2:").nth(1).unwrap();
    let node2_verdict = node2_verdict.split("node node-3:").next().unwrap();
    assert!(
        node2_verdict.contains("consistent with your checkpoint"),
        "{}",
        consistent.stdout
    );
    assert_eq!(
        consistent
            .stdout
            .matches("consistent with your checkpoint")
            .count(),
        1
    );
    // The export is in the exporting node's log, and each peer's, attributed to node-1.
    let recorded = |api: &common::Api, who: &str| {
        api.all_entries()
            .iter()
            .any(|(_, _, e)| e["action"] == EXPORTED && e.to_string().contains(who))
    };
    assert!(recorded(&apis[0], "\"scope\":\"cluster\""));
    assert!(recorded(&apis[1], "peer:node-1"));
    assert!(
        ok.stdout.contains("cluster export intact: 3 node part(s)"),
        "{}",
        ok.stdout
    );
    for n in 1..=3 {
        assert!(
            ok.stdout.contains(&format!("node node-{n}: OK")),
            "{}",
            ok.stdout
        );
    }
    // The bundle holds every event of every node, each part as its node signed it.
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(text.matches("\"test.step\"").count(), 9, "{text}");
    // A node left unpinned is not verified; a single --public-key is refused.
    let unpinned = verify(&bundle, &pins[..2]).code(1);
    assert!(
        unpinned
            .stderr
            .contains("node node-3: FAILED: no key pinned"),
        "{}",
        unpinned.stderr
    );
    let single = run(&[
        "verify",
        "--export",
        bundle.to_str().unwrap(),
        "--public-key",
        &cluster.nodes[0].public_key(),
    ]);
    assert_eq!(single.code, Some(2), "{}", single.stderr);
    // Another node's key pinned for node-2: its part fails, named.
    let mut swapped = pins.clone();
    swapped[1] = format!("node-2={}", cluster.nodes[2].public_key());
    let wrong = verify(&bundle, &swapped).code(1);
    assert!(
        wrong.stderr.contains("node(s) node-2 do not verify"),
        "{}",
        wrong.stderr
    );

    // One event of node-2 changed in the file: node-2's part fails, the others still verify.
    let tampered = dir.path().join("tampered.ndjson");
    let mut in_node2 = false;
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("{\"cluster_part\":") {
                in_node2 = line.contains("\"node-2\"");
            }
            if in_node2 && !changed && line.contains("\"u1-1\"") {
                changed = true;
                return line.replace("\"u1-1\"", "\"u1-9\"");
            }
            line.to_owned()
        })
        .collect();
    assert!(changed);
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let failed = verify(&tampered, &pins).code(1);
    assert!(
        failed.stderr.contains("node(s) node-2 do not verify"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("node node-2: FAILED at seq"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("node node-1: OK"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("node node-3: OK"),
        "{}",
        failed.stderr
    );
    // node-2's part removed altogether (and its header entry kept): named missing.
    let removed = dir.path().join("removed.ndjson");
    let mut skipping = false;
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            if line.starts_with("{\"cluster_part\":") || line.starts_with("{\"cluster_end\":") {
                skipping = line.contains("\"node-2\"");
            }
            !skipping
        })
        .map(|line| {
            if line.starts_with("{\"cluster_end\":") {
                "{\"cluster_end\":{\"parts\":2}}"
            } else {
                line
            }
        })
        .collect();
    std::fs::write(&removed, kept.join("\n") + "\n").unwrap();
    let missing = verify(&removed, &pins).code(1);
    assert!(
        missing.stderr.contains("node node-2: MISSING"),
        "{}",
        missing.stderr
    );

    // node-3 stopped: query and export answer within the timeout, naming it.
    let pid = cluster.servers[2].pid();
    signal(pid, "-STOP");
    let started = std::time::Instant::now();
    let stopped = cli(
        node1,
        &key1,
        &[
            "query",
            "--cluster",
            "--all",
            "--json",
            "--order",
            "asc",
            "--action",
            "test.step",
        ],
    );
    let partial = dir.path().join("partial.ndjson");
    let partial_export = node1.export(&key1, "ndjson", &partial, &["--cluster"]);
    let waited = started.elapsed();
    signal(pid, "-CONT");
    let stopped = stopped.ok();
    partial_export.ok();
    assert!(
        stopped.stderr.contains("node node-3: TIMED OUT"),
        "{}",
        stopped.stderr
    );
    assert!(stopped.stderr.contains("--cursor "), "{}", stopped.stderr);
    let without3: Vec<_> = expected
        .iter()
        .filter(|k| k.1 != "node-3")
        .cloned()
        .collect();
    assert_eq!(keys_of(&stopped.stdout), without3);
    assert!(
        waited < std::time::Duration::from_secs(20),
        "two reads waited {waited:?} for a stopped node (timeout 1.5 s)"
    );
    let partial_verify = verify(&partial, &pins).code(1);
    assert!(
        partial_verify
            .stderr
            .contains("node node-3: MISSING: timed_out"),
        "{}",
        partial_verify.stderr
    );
    assert!(
        partial_verify.stderr.contains("node node-2: OK"),
        "{}",
        partial_verify.stderr
    );

    // node-3 killed: unreachable.
    cluster.servers[2].kill();
    let killed = cli(
        &cluster.servers[0],
        &key1,
        &["query", "--cluster", "--action", "test.step"],
    )
    .ok();
    assert!(
        killed.stderr.contains("node node-3: UNREACHABLE"),
        "{}",
        killed.stderr
    );
}
