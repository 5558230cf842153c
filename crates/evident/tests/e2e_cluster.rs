//! A cluster of three real nodes on loopback with mTLS: certificates made by `evident
//! cluster ca init` / `cert issue`, clients without a cluster certificate refused at the TLS
//! handshake, and a peer's certificate giving only the `peer` role (read, never append);
//! `scope=cluster` reads merged across the nodes, with a stopped and a killed node named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event, mtls_client, run, tls_client};
use std::path::{Path, PathBuf};

/// The self-audit action of a refused (403) request.
const FORBIDDEN: &str = "evident.access.forbidden";

/// The cluster's certificates in a temporary directory.
struct Pki {
    tmp: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            tmp: tempfile::tempdir().unwrap(),
        };
        run(&[
            "cluster",
            "ca",
            "init",
            "--out",
            pki.ca_dir().to_str().unwrap(),
        ])
        .ok();
        pki
    }

    fn ca_dir(&self) -> PathBuf {
        self.tmp.path().join("ca")
    }

    fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    /// Issues a certificate for `id`; returns its directory (node.pem, node.key) and a PEM
    /// file with both, for a test client presenting it.
    fn issue(&self, id: &str) -> (PathBuf, PathBuf) {
        let out = self.tmp.path().join(id);
        run(&[
            "cluster",
            "cert",
            "issue",
            "--node-id",
            id,
            "--ca",
            self.ca_dir().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
        let identity = out.join("identity.pem");
        let mut pem = std::fs::read(out.join("node.pem")).unwrap();
        pem.extend(std::fs::read(out.join("node.key")).unwrap());
        std::fs::write(&identity, pem).unwrap();
        (out, identity)
    }
}

/// Free loopback ports for the nodes (each node must know its peers' URLs up front).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Cluster {
    pki: Pki,
    nodes: Vec<Node>,
    servers: Vec<Server>,
    /// A client certificate of the cluster CA that names no peer (an operator's).
    operator: PathBuf,
    /// Each node's certificate directory.
    certs: Vec<PathBuf>,
}

fn config_toml(i: usize, ports: &[u16], certs: &[PathBuf], pki: &Pki, keys: &[String]) -> String {
    let mut text = format!(
        "node_id = \"node-{}\"\nlisten = \"127.0.0.1:{}\"\n[cluster]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\npeer_timeout_ms = 1500\n",
        i + 1,
        ports[i],
        pki.ca_cert(),
        certs[i].join("node.pem"),
        certs[i].join("node.key"),
    );
    for (j, port) in ports.iter().enumerate() {
        if j != i {
            text.push_str(&format!(
                "[[cluster.peers]]\nnode_id = \"node-{}\"\nurl = \"https://127.0.0.1:{port}\"\npublic_key = \"{}\"\n",
                j + 1,
                keys[j]
            ));
        }
    }
    text
}

/// The tests pick their ports before starting the nodes; one cluster starts at a time so
/// that they do not pick each other's.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start_cluster() -> Cluster {
    let _one_at_a_time = STARTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pki = Pki::new();
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::with_env(&[("EVIDENT_NODE_ID", &format!("node-{i}"))]))
        .collect();
    let certs: Vec<PathBuf> = (1..=3).map(|i| pki.issue(&format!("node-{i}")).0).collect();
    let (_, operator) = pki.issue("operator");
    let keys: Vec<String> = nodes.iter().map(Node::public_key).collect();
    let ports = free_ports(3);
    let servers = (0..3)
        .map(|i| {
            let config = nodes[i].file("cluster.toml");
            std::fs::write(&config, config_toml(i, &ports, &certs, &pki, &keys)).unwrap();
            let listen = format!("127.0.0.1:{}", ports[i]);
            Server::start_cluster(&nodes[i].dir, &config, &listen, &pki.ca_cert(), &operator)
        })
        .collect();
    Cluster {
        pki,
        nodes,
        servers,
        operator,
        certs,
    }
}

fn identity_of(dir: &Path) -> PathBuf {
    dir.join("identity.pem")
}

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
