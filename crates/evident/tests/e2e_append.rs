//! End to end, through the real binary: many concurrent writers get dense, unique sequence
//! numbers, and a server killed with SIGKILL under load loses no acknowledged event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, assert_dense, event};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn concurrent_appends_get_dense_unique_seqs_and_the_log_verifies() {
    const THREADS: usize = 16;
    const REQUESTS: usize = 50;
    const BATCH: usize = 5;
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for r in 0..REQUESTS {
                    let actor = format!("client-{t}");
                    // Every fifth request is a batch.
                    let body = if r % 5 == 4 {
                        Value::Array(
                            (0..BATCH)
                                .map(|i| event(&actor, &format!("batch.item{i}")))
                                .collect(),
                        )
                    } else {
                        event(&actor, "single.append")
                    };
                    let receipts = api
                        .append(&body)
                        .unwrap_or_else(|a| panic!("append refused: {} {}", a.status, a.text()));
                    let expected = if body.is_array() { BATCH } else { 1 };
                    assert_eq!(receipts.len(), expected);
                    // A batch is committed as one: its receipts are consecutive.
                    for pair in receipts.windows(2) {
                        assert_eq!(pair[1].0, pair[0].0 + 1, "batch not contiguous");
                    }
                    got.extend(receipts);
                }
                got
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for h in handles {
        receipts.extend(h.join().unwrap());
    }
    let expected = THREADS * (REQUESTS / 5 * BATCH + REQUESTS * 4 / 5);
    assert_eq!(receipts.len(), expected);
    let mut seqs: Vec<u64> = receipts.iter().map(|r| r.0).collect();
    assert_dense(&mut seqs);

    // What the server returns matches every receipt, hash included.
    let stored: HashMap<u64, String> = api
        .all_entries()
        .into_iter()
        .map(|(seq, hash, _)| (seq, hash))
        .collect();
    assert_eq!(stored.len(), expected);
    for (seq, hash) in &receipts {
        assert_eq!(stored.get(seq), Some(hash), "entry {seq}");
    }

    // Offline, on the data directory, while the server runs.
    let out = node.verify().ok();
    assert!(
        out.stdout.contains(&format!("{expected} entries")),
        "{}",
        out.stdout
    );
    // And online.
    let out = server.cli(&node.owner_key, &["verify"]).ok();
    assert!(out.stdout.starts_with("OK"), "{}", out.stdout);
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    const CYCLES: usize = 3;
    const WRITERS: usize = 8;
    let node = Node::new();
    let mut server = Server::start(&node);
    // Every acknowledged receipt, over all cycles.
    let mut acknowledged: HashMap<u64, String> = HashMap::new();

    for cycle in 0..CYCLES {
        let api = server.api(&node.owner_key);
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api = api.clone();
                let stop = stop.clone();
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let actor = format!("c{cycle}-w{w}");
                        let body = if i % 4 == 3 {
                            json!([event(&actor, "load.batch"), event(&actor, "load.batch")])
                        } else {
                            event(&actor, "load.single")
                        };
                        i += 1;
                        match api.append(&body) {
                            Ok(receipts) => acked.lock().unwrap().extend(receipts),
                            // The server is gone (killed): no acknowledgement, stop.
                            Err(answer) if answer.status == 0 => break,
                            Err(answer) => {
                                panic!("refused: {} {}", answer.status, answer.text())
                            }
                        }
                    }
                })
            })
            .collect();

        // Let the load run, then kill the server in the middle of it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50 * (cycle as u64 + 1)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        let this_cycle = acked.lock().unwrap().clone();
        assert!(
            this_cycle.len() >= 100,
            "cycle {cycle}: too few appends before the kill"
        );
        for (seq, hash) in this_cycle {
            assert!(
                acknowledged.insert(seq, hash).is_none(),
                "seq {seq} acknowledged twice"
            );
        }

        // The directory verifies with the server down, then a restart recovers.
        node.verify().ok();
        server.restart();
        let api = server.api(&node.owner_key);
        let entries = api.all_entries();
        let mut seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
        assert_dense(&mut seqs);
        let stored: HashMap<u64, String> = entries.into_iter().map(|(s, h, _)| (s, h)).collect();
        for (seq, hash) in &acknowledged {
            assert_eq!(
                stored.get(seq),
                Some(hash),
                "cycle {cycle}: acknowledged entry {seq} lost or changed"
            );
        }
        // The restarted server appends right after what survived.
        let next = api
            .append(&event("after-restart", "restart.check"))
            .unwrap();
        assert_eq!(next[0].0, stored.len() as u64);
        acknowledged.insert(next[0].0, next[0].1.clone());
    }
    node.verify().ok();
    server.cli(&node.owner_key, &["verify"]).ok();
}
