//! The cluster rows (issue 14): three real `evident serve` nodes on loopback with mTLS
//! (certificates from `evident cluster ca init` / `cert issue`), each witnessing the others.
//! Measures the witness round trip (`POST /api/v1/witness/add-checkpoint` as a peer over an
//! established mTLS connection: parse, signature check, durable compare-and-swap of the
//! witnessed head, cosignature) and the first page of the audit log read cluster-wide
//! (`scope=cluster`: fan-out to both peers and merge) against the same node's local first page,
//! interleaved in one run.

use crate::server::Server;
use crate::stats::Latencies;
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the cluster phase measured.
pub struct ClusterResult {
    pub events_per_node: u64,
    pub witness: Latencies,
    pub local_page: Latencies,
    pub cluster_page: Latencies,
    pub samples: usize,
}

fn evident_cli(evident: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut cmd = Command::new(evident);
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EVIDENT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.envs(envs.iter().copied());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run evident {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "evident {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// An async mTLS client trusting the cluster CA and presenting `identity` (cert + key PEM).
fn mtls(ca: &Path, identity: &Path) -> anyhow::Result<reqwest::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca)?)?;
    let id = reqwest::Identity::from_pem(&std::fs::read(identity)?)?;
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .tls_certs_only(certs)
        .identity(id)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Issues a certificate for `id` under `ca_dir`; returns its directory and a PEM identity.
fn issue(evident: &Path, pki: &Path, id: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = pki.join(id);
    let ca = pki.join("ca");
    evident_cli(
        evident,
        &[
            "cluster",
            "cert",
            "issue",
            "--node-id",
            id,
            "--ca",
            &ca.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
        &[],
    )?;
    let mut pem = std::fs::read(out.join("node.pem"))?;
    pem.extend(std::fs::read(out.join("node.key"))?);
    let identity = out.join("identity.pem");
    std::fs::write(&identity, pem)?;
    Ok((out, identity))
}

async fn get_ok(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<bytes::Bytes> {
    let response = client.get(url).bearer_auth(key).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

pub async fn run(
    evident: &Path,
    work: &Path,
    events_per_node: u64,
    samples: usize,
) -> anyhow::Result<ClusterResult> {
    let pki = work.join("pki");
    evident_cli(
        evident,
        &[
            "cluster",
            "ca",
            "init",
            "--out",
            &pki.join("ca").to_string_lossy(),
        ],
        &[],
    )?;
    let ca_cert = pki.join("ca").join("ca.pem");
    let ports = free_ports(3)?;
    let mut dirs = Vec::new();
    let mut owner_keys = Vec::new();
    let mut log_keys = Vec::new();
    let mut certs = Vec::new();
    for i in 1..=3 {
        let node = format!("node-{i}");
        let dir = work.join(&node);
        let data = dir.join("data");
        let created = evident_cli(
            evident,
            &[
                "keys",
                "create",
                "--init",
                "--data-dir",
                &data.to_string_lossy(),
                "--role",
                "owner",
            ],
            &[("EVIDENT_NODE_ID", &node)],
        )?;
        let key = created
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with("evk_"))
            .context("no key printed by evident keys create")?
            .to_owned();
        owner_keys.push(key);
        log_keys.push(
            evident_cli(
                evident,
                &["public-key", "--data-dir", &data.to_string_lossy()],
                &[],
            )?
            .trim()
            .to_owned(),
        );
        certs.push(issue(evident, &pki, &node)?);
        dirs.push(dir);
    }
    let (_, operator) = issue(evident, &pki, "operator")?;
    let mut servers = Vec::new();
    for i in 0..3 {
        let mut config = format!(
            "node_id = \"node-{}\"\n[cluster]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            i + 1,
            ca_cert,
            certs[i].0.join("node.pem"),
            certs[i].0.join("node.key"),
        );
        for j in (0..3).filter(|j| *j != i) {
            config.push_str(&format!(
                "[[cluster.peers]]\nnode_id = \"node-{}\"\nurl = \"https://127.0.0.1:{}\"\npublic_key = \"{}\"\n",
                j + 1,
                ports[j],
                log_keys[j]
            ));
        }
        let file = dirs[i].join("cluster.toml");
        std::fs::write(&file, config)?;
        let listen = format!("127.0.0.1:{}", ports[i]);
        servers.push(Server::start_on(
            evident,
            &dirs[i],
            &listen,
            None,
            &["--config", &file.to_string_lossy()],
            &[],
        )?);
    }
    let client = mtls(&ca_cert, &operator)?;
    // The same amount of history on every node.
    let batch: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "actor": {"kind": "user", "id": format!("user-{}", i % 50)},
                "action": "doc.read", "outcome": "success", "severity": "info",
                "target": {"kind": "doc", "id": format!("doc-{i}")},
            })
        })
        .collect();
    let body = serde_json::to_vec(&batch)?;
    for (server, key) in servers.iter().zip(&owner_keys) {
        for _ in 0..events_per_node.div_ceil(1000) {
            let response = client
                .post(format!("{}/api/v1/events", server.base_url))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            if response.status().as_u16() != 201 {
                bail!("append: {}", response.text().await?);
            }
        }
    }
    // Let the checkpoints settle and the submitters catch up before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Witness round trip: node-1's latest checkpoint submitted to node-2 as node-1, from
    // the size node-2 witnessed (learned from its first 409, if any).
    let as_node1 = mtls(&ca_cert, &certs[0].1)?;
    let checkpoint = String::from_utf8(
        get_ok(
            &client,
            &format!("{}/api/v1/checkpoint", servers[0].base_url),
            &owner_keys[0],
        )
        .await?
        .to_vec(),
    )?;
    let size: u64 = checkpoint
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .context("the checkpoint has no size line")?;
    let witness_url = format!("{}/api/v1/witness/add-checkpoint", servers[1].base_url);
    let mut witness = Vec::with_capacity(samples);
    let mut old = size;
    for i in 0..samples + 5 {
        let sent = Instant::now();
        let response = as_node1
            .post(&witness_url)
            .body(format!("old {old}\n\n{checkpoint}"))
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let took = sent.elapsed();
        match status {
            200 if text.starts_with('\u{2014}') => {
                if i >= 5 {
                    witness.push(took);
                }
            }
            409 => {
                old = text.trim().parse().context("409 without a size")?;
            }
            _ => bail!("add-checkpoint answered {status}: {text}"),
        }
    }

    // First page, local against cluster-wide, interleaved on node-1.
    let mut local = Vec::with_capacity(samples);
    let mut merged = Vec::with_capacity(samples);
    let base = &servers[0].base_url;
    for i in 0..samples + 5 {
        for (scope, out) in [("", &mut local), ("&scope=cluster", &mut merged)] {
            let sent = Instant::now();
            let body = get_ok(
                &client,
                &format!("{base}/api/v1/audit-log?limit=100{scope}"),
                &owner_keys[0],
            )
            .await?;
            let took = sent.elapsed();
            let page: serde_json::Value = serde_json::from_slice(&body)?;
            let n = page["events"].as_array().map_or(0, Vec::len);
            if n != 100 {
                bail!("a first page{scope} held {n} events, not 100");
            }
            if !scope.is_empty() {
                let ok = page["nodes"].as_array().is_some_and(|nodes| {
                    nodes.len() == 3 && nodes.iter().all(|n| n["status"] == "ok")
                });
                if !ok {
                    bail!(
                        "a cluster page did not hear from every node: {}",
                        page["nodes"]
                    );
                }
            }
            if i >= 5 {
                out.push(took);
            }
        }
    }
    for server in servers {
        server.stop(Duration::from_secs(30))?;
    }
    Ok(ClusterResult {
        events_per_node,
        witness: Latencies::of(witness),
        local_page: Latencies::of(local),
        cluster_page: Latencies::of(merged),
        samples,
    })
}
