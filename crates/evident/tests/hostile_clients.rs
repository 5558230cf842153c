//! End to end, through the real binary: slow and hostile clients. Slowloris connections (a
//! header byte a second) neither block other clients nor stay open past the header timeout;
//! huge request heads get 431; a body that stalls gets 408; an oversized body gets its 413
//! although the client is still sending; and every case of the bad-input
//! corpus (`tests/corpus/bad-input/manifest.json`) gets its expected status and error code,
//! stores nothing when refused, and comes out of a CSV export neutralized when it is a
//! spreadsheet formula stored as data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, event};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn addr(server: &Server) -> SocketAddr {
    server.url.strip_prefix("http://").unwrap().parse().unwrap()
}

/// Reads what the server sends until it closes the connection (or `limit` passes); returns
/// the bytes and whether the connection was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset by the server: closed too.
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn slowloris_connections_neither_block_others_nor_stay_open() {
    const SLOW: usize = 200;
    let node = Node::new();
    // All from one address: the per-address cap is lifted, this test is about the timeout.
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_HEADER_TIMEOUT_MS", "3000"),
            ("EVIDENT_MAX_CONNECTIONS_PER_IP", "512"),
        ],
    );
    let api = server.api(&node.owner_key);
    let target = addr(&server);

    // Many connections that each send their request head a byte at a time, one a second.
    let head =
        b"GET /api/v1/healthz HTTP/1.1\r\nHost: evident\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(target).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let mut streams: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut at = 0;
            let mut refused = 0;
            while !stop.load(Ordering::SeqCst) && at < head.len() {
                refused = 0;
                for s in &mut streams {
                    if s.write_all(&head[at..=at]).is_err() {
                        refused += 1;
                    }
                }
                at += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            refused
        })
    };

    // While they drip, other clients are served: appends, reads and health checks.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..10 {
        let receipts = api
            .append(&event("normal-client", &format!("during.slowloris{i}")))
            .unwrap_or_else(|a| panic!("append refused: {} {}", a.status, a.text()));
        assert_eq!(receipts[0].0, i);
        let answer = api.get("/api/v1/healthz");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(api.size(), 10);

    // The header timeout closes every one of them although each is still sending.
    let mut still_open = 0;
    let mut answered = Vec::new();
    for s in &mut slow {
        let (bytes, closed) = read_until_closed(s, Duration::from_secs(30));
        if !closed {
            still_open += 1;
        }
        if !bytes.is_empty() {
            answered.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    stop.store(true, Ordering::SeqCst);
    dripper.join().unwrap();
    assert_eq!(
        still_open, 0,
        "{still_open} of {SLOW} slowloris connections were not closed by the header timeout"
    );
    // None of them got its request served.
    assert!(
        answered.iter().all(|a| !a.contains(" 200 ")),
        "a slow request was served: {answered:?}"
    );
    // And the server is still fine.
    assert_eq!(api.get("/api/v1/healthz").status, 200);
}

#[test]
fn a_full_connection_table_frees_itself_and_the_next_client_is_served() {
    const LIMIT: usize = 20;
    let node = Node::new();
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_MAX_CONNECTIONS", "20"),
            ("EVIDENT_HEADER_TIMEOUT_MS", "2000"),
        ],
    );
    let api = server.api(&node.owner_key);
    // Connections enough to take every slot, each stalled in its request head.
    let target = addr(&server);
    let stalled: Vec<TcpStream> = (0..LIMIT)
        .map(|_| {
            let mut s = TcpStream::connect(target).unwrap();
            s.write_all(b"GET /api/v1/healthz HTTP/1.1\r\nHost: ev")
                .unwrap();
            s
        })
        .collect();
    // A client arriving now waits in the backlog, then is served once the header timeout
    // has freed the slots: it succeeds, and the stalled ones were closed.
    let receipts = api
        .append(&event("patient", "after.full.table"))
        .unwrap_or_else(|a| panic!("append refused: {} {}", a.status, a.text()));
    assert_eq!(receipts[0].0, 0);
    for mut s in stalled {
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(30));
        assert!(closed, "a stalled connection outlived the header timeout");
    }
}

/// Sends `head` on a fresh connection and returns the status line of the answer.
fn status_line(target: SocketAddr, head: &[u8]) -> String {
    let mut s = TcpStream::connect(target).unwrap();
    // The server may answer (and close) before it read everything: ignore write errors.
    let _ = s.write_all(head);
    let (bytes, _) = read_until_closed(&mut s, Duration::from_secs(30));
    String::from_utf8_lossy(&bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn huge_request_heads_get_431_and_a_stalled_body_gets_408() {
    let node = Node::new();
    let server = Server::start_with_env(
        &node.dir,
        &[
            ("EVIDENT_BODY_TIMEOUT_MS", "1000"),
            ("EVIDENT_MAX_BODY_BYTES", "65536"),
        ],
    );
    let api = server.api(&node.owner_key);
    let target = addr(&server);

    // One header of 1 MiB.
    let mut head = b"GET /api/v1/healthz HTTP/1.1\r\nHost: evident\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1 << 20));
    head.extend_from_slice(b"\r\n\r\n");
    let line = status_line(target, &head);
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    // Five hundred small headers.
    let mut head = b"GET /api/v1/healthz HTTP/1.1\r\nHost: evident\r\n".to_vec();
    for i in 0..500 {
        head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let line = status_line(target, &head);
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");
    // A long URL.
    let mut head = b"GET /api/v1/audit-log?actor=".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200_000));
    head.extend_from_slice(b" HTTP/1.1\r\nHost: evident\r\n\r\n");
    let line = status_line(target, &head);
    assert!(line.starts_with("HTTP/1.1 431"), "{line}");

    // An authenticated append whose body stops arriving: 408 with the JSON error.
    let mut s = TcpStream::connect(target).unwrap();
    let body = serde_json::to_vec(&event("alice", "never.finished")).unwrap();
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: evident\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        node.owner_key,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    let (bytes, _) = read_until_closed(&mut s, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");

    // An oversized body is refused by its declared length; the client, still sending, reads
    // the 413 (the server drains before closing rather than resetting the connection).
    for _ in 0..5 {
        let mut s = TcpStream::connect(target).unwrap();
        let body = vec![b'x'; 1 << 20];
        let head = format!(
            "POST /api/v1/events HTTP/1.1\r\nHost: evident\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            node.owner_key,
            body.len()
        );
        // Like an HTTP client busy sending: everything is written before the answer is read.
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body);
        let (bytes, _) = read_until_closed(&mut s, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains(r#""code":"body_too_large""#), "{text}");
    }

    // Nothing was stored, and normal requests still work.
    assert_eq!(api.size(), 0);
    api.append(&event("alice", "after.hostile")).unwrap();
    assert_eq!(api.size(), 1);
}

/// The corpus directory.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad-input")
}

/// The body a corpus case describes.
fn case_body(case: &Value) -> Vec<u8> {
    if let Some(body) = case["body"].as_str() {
        return body.as_bytes().to_vec();
    }
    if let Some(file) = case["file"].as_str() {
        let path = corpus_dir().join(file);
        return std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let g = &case["generate"];
    let times = g["times"].as_u64().unwrap() as usize;
    let mut out = g["prefix"].as_str().unwrap().as_bytes().to_vec();
    out.extend_from_slice(g["repeat"].as_str().unwrap().repeat(times).as_bytes());
    out.extend_from_slice(g["suffix"].as_str().unwrap().as_bytes());
    out
}

#[test]
fn the_bad_input_corpus_gets_the_expected_errors_and_stores_nothing() {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(corpus_dir().join("manifest.json")).expect("corpus manifest"),
    )
    .expect("manifest is JSON");
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "the corpus shrank");

    let node = Node::new();
    let server = Server::start_with_env(&node.dir, &[("EVIDENT_MAX_BODY_BYTES", "65536")]);
    let api = server.api(&node.owner_key);
    let mut size = 0usize;
    let mut failures = Vec::new();
    let mut stored_cells = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let content_type = case["content_type"].as_str().unwrap_or("application/json");
        let expected = case["status"].as_u64().unwrap() as u16;
        let answer = api.post_raw(content_type, case_body(case)).unwrap();
        if answer.status != expected {
            failures.push(format!(
                "{name}: status {} (expected {expected}): {}",
                answer.status,
                answer.text()
            ));
            continue;
        }
        if expected == 201 {
            size += common::receipts(&answer.json()).len();
            let csv = &case["csv"];
            stored_cells.push((
                name.to_owned(),
                csv["column"].as_str().unwrap().to_owned(),
                csv["cell"].as_str().unwrap().to_owned(),
            ));
            continue;
        }
        let body: Value = match serde_json::from_slice(&answer.body) {
            Ok(body) => body,
            Err(e) => {
                failures.push(format!("{name}: error body is not JSON ({e})"));
                continue;
            }
        };
        let error = &body["error"];
        if error["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{name}: no message: {body}"));
        }
        for key in ["code", "field"] {
            if let Some(want) = case[key].as_str() {
                if error[key] != want {
                    failures.push(format!("{name}: {key} {} (expected {want})", error[key]));
                }
            }
        }
        if let Some(index) = case["index"].as_u64() {
            if error["index"] != index {
                failures.push(format!(
                    "{name}: index {} (expected {index})",
                    error["index"]
                ));
            }
        }
        // A refused request stored nothing.
        let now = api.size();
        if now != size {
            failures.push(format!("{name}: the log grew from {size} to {now}"));
            size = now;
        }
    }
    assert!(
        failures.is_empty(),
        "corpus cases answered wrongly:\n{}",
        failures.join("\n")
    );

    // What was stored comes out of a CSV export with its formula neutralized.
    let file = node.file("corpus.csv");
    server
        .cli(
            &node.owner_key,
            &["export", "--format", "csv", "--out", file.to_str().unwrap()],
        )
        .ok();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    for (name, column, cell) in stored_cells {
        let col = header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("{name}: no CSV column {column}"));
        assert!(
            rows.iter().any(|r| r[col] == *cell),
            "{name}: no row with {column} = {cell:?} in\n{text}"
        );
        // No cell of the export starts with a formula character.
        for row in &rows {
            let value = &row[col];
            assert!(
                !value.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{name}: unneutralized cell {value:?}"
            );
        }
    }
    node.verify().ok();
}
