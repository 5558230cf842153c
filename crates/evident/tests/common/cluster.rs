//! Three real nodes on loopback with mTLS, shared by the cluster and witness tests: the
//! cluster CA and node certificates made by `evident cluster ca init` / `cert issue`, each
//! node's config listing the other two as peers, and the servers started on ports picked up
//! front.

use super::{Node, Server, run};
use std::path::{Path, PathBuf};

/// The cluster's certificates in a temporary directory.
pub struct Pki {
    tmp: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
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

    pub fn ca_dir(&self) -> PathBuf {
        self.tmp.path().join("ca")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    /// Issues a certificate for `id`; returns its directory (node.pem, node.key) and a PEM
    /// file with both, for a test client presenting it.
    pub fn issue(&self, id: &str) -> (PathBuf, PathBuf) {
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
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub struct Cluster {
    pub pki: Pki,
    pub nodes: Vec<Node>,
    pub servers: Vec<Server>,
    /// A client certificate of the cluster CA that names no peer (an operator's).
    pub operator: PathBuf,
    /// Each node's certificate directory.
    pub certs: Vec<PathBuf>,
}

/// What a test adds to node `i`'s config: top-level settings (before `[cluster]`) and
/// tables (after it).
pub struct Extra<'a> {
    pub top: &'a dyn Fn(usize) -> String,
    pub tables: &'a dyn Fn(usize) -> String,
}

pub fn config_toml(
    i: usize,
    ports: &[u16],
    certs: &[PathBuf],
    pki: &Pki,
    keys: &[String],
    extra: &Extra,
) -> String {
    let mut text = format!(
        "node_id = \"node-{}\"\nlisten = \"127.0.0.1:{}\"\n{}[cluster]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\npeer_timeout_ms = 1500\n",
        i + 1,
        ports[i],
        (extra.top)(i),
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
    text.push_str(&(extra.tables)(i));
    text
}

/// The tests pick their ports before starting the nodes; one cluster starts at a time so
/// that they do not pick each other's.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three nodes on the backend under test, with no extra settings.
pub fn start_cluster() -> Cluster {
    let nodes = (1..=3)
        .map(|i| Node::with_env(&[("EVIDENT_NODE_ID", &format!("node-{i}"))]))
        .collect();
    start_cluster_on(
        nodes,
        &Extra {
            top: &|_| String::new(),
            tables: &|_| String::new(),
        },
    )
}

/// Starts `nodes` (node-1, node-2, node-3) as a cluster, each config with `extra`.
pub fn start_cluster_on(nodes: Vec<Node>, extra: &Extra) -> Cluster {
    let _one_at_a_time = STARTING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pki = Pki::new();
    let certs: Vec<PathBuf> = (1..=nodes.len())
        .map(|i| pki.issue(&format!("node-{i}")).0)
        .collect();
    let (_, operator) = pki.issue("operator");
    let keys: Vec<String> = nodes.iter().map(Node::public_key).collect();
    let ports = free_ports(nodes.len());
    let servers = (0..nodes.len())
        .map(|i| {
            let config = nodes[i].file("cluster.toml");
            std::fs::write(&config, config_toml(i, &ports, &certs, &pki, &keys, extra)).unwrap();
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

/// The PEM file with a node's certificate and key, in its certificate directory.
pub fn identity_of(dir: &Path) -> PathBuf {
    dir.join("identity.pem")
}
