//! End to end, through the real binary: TLS on the listener. `--tls-self-signed` serves
//! HTTPS that reqwest (rustls) and curl accept with the generated certificate and refuse
//! without it; HSTS is sent; PEM files given as flags work; the CLI talks to a TLS server with
//! `--ca-cert`; plain HTTP off loopback is refused unless explicitly allowed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event};
use std::process::Command;

/// curl, or a failure saying how to install it.
fn curl() -> Command {
    let found = Command::new("curl").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "these tests drive a real curl; install it: apt-get install curl"
    );
    Command::new("curl")
}

#[test]
fn self_signed_tls_serves_reqwest_curl_and_the_cli() {
    let node = Node::new();
    let server = Server::start_tls_self_signed(&node);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let cert = server.ca_cert.clone().unwrap();
    assert!(cert.exists());

    // reqwest with rustls, trusting only the generated certificate.
    let api = server.api(&node.owner_key);
    api.append(&event("alice", "auth.login")).unwrap();
    let resp = server
        .client()
        .get(format!("{}/api/v1/healthz", server.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let hsts = resp.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");
    // A client that does not trust the certificate cannot connect.
    let err = common::http_client()
        .get(format!("{}/api/v1/healthz", server.url))
        .send()
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.url.replacen("https://", "http://", 1);
    let answer = common::http_client()
        .get(format!("{plain}/api/v1/healthz"))
        .send();
    assert!(answer.is_err(), "{answer:?}");

    // curl with the certificate, then without.
    let out = curl()
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--include",
            "--cacert",
        ])
        .arg(&cert)
        .args(["-H", &format!("Authorization: Bearer {}", node.owner_key)])
        .arg(format!("{}/api/v1/audit-log?actor=alice", server.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("strict-transport-security: max-age="),
        "{text}"
    );
    assert!(text.contains("\"actor\":{\"id\":\"alice\""), "{text}");
    let out = curl()
        .args(["--silent", "--show-error"])
        .arg(format!("{}/api/v1/healthz", server.url))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl must refuse the unknown certificate"
    );

    // The CLI, with --ca-cert (added by the harness) and with EVIDENT_CA_CERT.
    server
        .cli(
            &node.owner_key,
            &[
                "append", "--actor", "bob", "--action", "x.y", "--target", "node:n1",
            ],
        )
        .ok();
    let out = common::evident()
        .args([
            "query",
            "--json",
            "--url",
            &server.url,
            "--key",
            &node.owner_key,
        ])
        .env("EVIDENT_CA_CERT", &cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bob"));
    // Without it, the CLI refuses the certificate.
    let out = common::run(&["checkpoint", "--url", &server.url, "--key", &node.owner_key]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
}

#[test]
fn pem_files_from_flags_and_plain_http_only_on_loopback() {
    // A certificate made by one node's --tls-self-signed, handed to another as PEM files.
    let first = Node::new();
    let mut generator = Server::start_tls_self_signed(&first);
    generator.stop();
    let cert = first.file("server-cert.pem");
    let key = first.file("server-key.pem");
    std::fs::copy(first.dir.join("tls/cert.pem"), &cert).unwrap();
    std::fs::copy(first.dir.join("tls/key.pem"), &key).unwrap();

    let node = Node::new();
    let server = Server::start_with(
        &node.dir,
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Some(cert.clone()),
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    server
        .api(&node.owner_key)
        .append(&event("a", "b.c"))
        .unwrap();
    assert!(
        !node.dir.join("tls").exists(),
        "no certificate should be generated"
    );
    drop(server);

    // Plain HTTP on a non-loopback address: refused, with the way out named.
    let out = common::run(&[
        "serve",
        "--data-dir",
        node.dir_str(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("--allow-plain-http") && out.stderr.contains("--tls-self-signed"),
        "{}",
        out.stderr
    );
    // Explicitly allowed, it serves.
    let server = Server::start_with(
        &node.dir,
        &[("EVIDENT_LISTEN", "0.0.0.0:0")],
        &["--listen", "0.0.0.0:0", "--allow-plain-http"],
        None,
    );
    assert!(server.url.starts_with("http://0.0.0.0:"), "{}", server.url);
    let local = server.url.replacen("0.0.0.0", "127.0.0.1", 1);
    let answer = common::Api {
        url: local,
        ..server.api(&node.owner_key)
    }
    .get("/api/v1/checkpoint");
    assert_eq!(answer.status, 200);
}
