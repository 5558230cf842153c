//! Alert latency: a real `evident serve` with one webhook endpoint pointing at a receiver in
//! this process (a bare HTTP/1.1 listener on loopback that answers 204 and notes when each
//! alert arrived). One CRITICAL event at a time is appended; the time from sending the append
//! to the arrival of its signed webhook (an upper bound of commit → received) is recorded.

use crate::server::Server;
use crate::stats::Latencies;
use anyhow::{Context as _, anyhow, bail};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Latency of alert delivery, and of the appends that raised them.
pub struct AlertLatency {
    pub samples: usize,
    pub delivered: Latencies,
    pub append: Latencies,
}

/// Reads one request; returns the alert's entry seq from the body.
fn read_alert(stream: &mut std::net::TcpStream) -> Option<u64> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value["data"]["seq"].as_u64()
}

pub(crate) fn receiver() -> anyhow::Result<(u16, mpsc::Receiver<(u64, Instant)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen for webhooks")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                while let Some(seq) = read_alert(&mut stream) {
                    let _ = tx.send((seq, Instant::now()));
                }
            });
        }
    });
    Ok((port, rx))
}

pub async fn run(evident: &Path, work: &Path, samples: usize) -> anyhow::Result<AlertLatency> {
    let (port, arrivals) = receiver()?;
    let config = work.join("alerts.toml");
    std::fs::write(
        &config,
        format!(
            "[[alerts.webhooks]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nrules = [\"builtin.critical\"]\n"
        ),
    )?;
    let server = Server::start_with_config(evident, work, &config)?;
    let key = server.create_key(evident)?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/events", server.base_url);
    let body = serde_json::json!({
        "actor": {"id": "bench", "kind": "user"},
        "action": "canary.tripped",
        "target": {"kind": "secret", "id": "canary-1"},
        "outcome": "failure",
        "severity": "critical",
    })
    .to_string();
    let mut early: HashMap<u64, Instant> = HashMap::new();
    let (mut delivered, mut append) = (Vec::new(), Vec::new());
    for _ in 0..samples + 5 {
        let sent = Instant::now();
        let answer = http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let acked = Instant::now();
        if answer.status().as_u16() != 201 {
            bail!("append answered {}", answer.status());
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
        let seq = value["receipts"][0]["seq"]
            .as_u64()
            .ok_or_else(|| anyhow!("no seq in the append answer"))?;
        let arrived = loop {
            if let Some(at) = early.remove(&seq) {
                break at;
            }
            let (s, at) = arrivals
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| anyhow!("the alert for entry {seq} did not arrive within 10 s"))?;
            if s == seq {
                break at;
            }
            early.insert(s, at);
        };
        // The first few warm up connections and the checkpoint path.
        if seq >= 5 {
            delivered.push(arrived.saturating_duration_since(sent));
            append.push(acked.saturating_duration_since(sent));
        }
    }
    server.stop(Duration::from_secs(30))?;
    Ok(AlertLatency {
        samples: delivered.len(),
        delivered: Latencies::of(delivered),
        append: Latencies::of(append),
    })
}
