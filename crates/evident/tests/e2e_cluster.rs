//! A cluster of three real nodes on loopback with mTLS: certificates made by `evident
//! cluster ca init` / `cert issue`, clients without a cluster certificate refused at the TLS
//! handshake, and a peer's certificate giving only the `peer` role (read, never append).

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

fn start_cluster() -> Cluster {
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
            Server::start_cluster(&nodes[i].dir, &config, &pki.ca_cert(), &operator)
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
