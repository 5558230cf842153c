//! Integrity core costs: sealing one entry (`ChainHead::append`: encode, chain hash, HMAC seal,
//! Merkle append) and verifying entries (`StreamVerifier::push` with the seal checked), beside
//! raw SHA-256 over exactly the same canonical bytes, for a typical entry (~300 B canonical)
//! and a large one (~2 KiB of context). Throughput is in bytes of canonical encoding, so the
//! verification/raw ratio reads straight off the report. Also the parallel verifier as the
//! server runs it (ranges anchored from stored node hashes and the predecessor's hash, one
//! thread per range, joined in order) on 2 threads, against single-threaded raw SHA-256 over
//! the same bytes. See BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evident_core::canonical;
use evident_core::chain::{ChainHead, SealKey, SealedEntry};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::EventInput;
use evident_core::hash::Hash;
use evident_core::merkle::{CompactRange, NodeId, subtree_ids};
use evident_core::note::NoteSigner;
use evident_core::verify::{
    Anchor, StreamVerifier, VerifyReport, range_for_checkpoint, split_ranges,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Entries per measured iteration: enough that the tree's carries average out.
const BATCH: usize = 1024;
/// Entries per iteration of the parallel measurement (typical entries; a quarter as many large
/// ones). Rounds are kept short (about 1.5 ms on 2 threads) so that some of them find both
/// cores free on a machine shared with other jobs; each round includes starting and joining
/// its threads (tens of microseconds), so the figure slightly understates a long log's.
const PAR_BATCH: usize = 4096;
/// Threads (ranges) of the parallel measurement.
const PAR_THREADS: usize = 2;
const NODE: &str = "nyc-edge-01";

fn typical_input(i: usize) -> EventInput {
    EventInput::from_json(&json!({
        "occurred_at": 1_773_478_800_000i64 + i as i64,
        "tenant": "acme",
        "actor": {"id": format!("alice.{i:06}@example.com"), "kind": "user",
                  "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        "action": "config.threshold.changed",
        "target": {"kind": "node", "id": "nyc-edge-01"},
        "outcome": "success",
        "severity": "notice",
        "context": {"old": 5, "new": 7, "reason": "raise after incident review"}
    }))
    .unwrap()
}

fn large_input(i: usize) -> EventInput {
    let rules: Vec<_> = (0..24)
        .map(|k| json!({"id": format!("rule-{k:03}"), "action": "allow", "port": 8000 + k, "cidr": "10.20.0.0/16"}))
        .collect();
    EventInput::from_json(&json!({
        "occurred_at": 1_773_478_800_000i64 + i as i64,
        "tenant": "acme",
        "actor": {"id": format!("svc-deployer-{i:06}"), "kind": "service", "ip": "2001:db8::7"},
        "action": "firewall.ruleset.replaced",
        "target": {"kind": "ruleset", "id": "edge-ingress"},
        "outcome": "success",
        "severity": "warning",
        "context": {"rules": rules, "ticket": "CHG-20260314-0042"}
    }))
    .unwrap()
}

struct Fixture {
    inputs: Vec<EventInput>,
    entries: Vec<SealedEntry>,
    canonical: Vec<Vec<u8>>,
    bytes: u64,
    checkpoint: String,
    /// Every Merkle node hash, as the store keeps them (anchors of the parallel verifier).
    nodes: HashMap<NodeId, Hash>,
}

fn fixture(
    make: fn(usize) -> EventInput,
    count: usize,
    key: &SealKey,
    signer: &NoteSigner,
) -> Fixture {
    let inputs: Vec<EventInput> = (0..count).map(make).collect();
    let mut head = ChainHead::genesis();
    let mut completed = Vec::new();
    let entries: Vec<SealedEntry> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            head.append(
                Uuid::from_u128(i as u128),
                1_773_478_800_000 + i as i64,
                NODE,
                "evk_0123456789ab",
                input.clone(),
                key,
                &mut completed,
            )
        })
        .collect();
    let canonical: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| canonical::encode(&e.event))
        .collect();
    let bytes = canonical.iter().map(|c| c.len() as u64).sum();
    let checkpoint = Checkpoint {
        origin: signer.name().to_owned(),
        size: head.tree.size(),
        root: head.tree.root(),
        extensions: vec![],
    }
    .sign(signer)
    .unwrap();
    Fixture {
        inputs,
        entries,
        canonical,
        bytes,
        checkpoint,
        nodes: completed.into_iter().collect(),
    }
}

fn raw_pass(f: &Fixture) {
    for bytes in &f.canonical {
        black_box(Sha256::digest(black_box(bytes)));
    }
}

fn verify_pass(f: &Fixture, key: &SealKey, checkpoint: &Checkpoint) {
    let mut v = StreamVerifier::new(Anchor::genesis(), Some(key.clone()), Some(NODE.to_owned()));
    v.trust_checkpoint(checkpoint.clone());
    for e in &f.entries {
        v.push(black_box(e)).unwrap();
    }
    black_box(v.finish().unwrap());
}

/// The state before entry `start`, rebuilt from stored data as the server does: the
/// predecessor's stored hash and the stored nodes of the compact range.
fn stored_anchor(f: &Fixture, start: u64) -> Anchor {
    let Some(prev) = start.checked_sub(1) else {
        return Anchor::genesis();
    };
    let hashes = subtree_ids(0, start).iter().map(|id| f.nodes[id]).collect();
    Anchor {
        next_seq: start,
        prev_hash: f.entries[prev as usize].hash,
        tree: CompactRange::from_parts(start, hashes).unwrap(),
    }
}

/// The parallel verifier: one range per thread, each anchored from stored data and checking
/// the checkpoints its walk reaches, then joined in order (each range must start in exactly
/// the state the previous one ended in).
fn parallel_pass(f: &Fixture, key: &SealKey, checkpoint: &Checkpoint, threads: usize) {
    let ranges = split_ranges(0..f.entries.len() as u64, threads);
    let last = ranges.len() - 1;
    let owner = range_for_checkpoint(&ranges, checkpoint.size).unwrap_or(last);
    let runs: Vec<(Anchor, Anchor, VerifyReport)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, range)| {
                let range = range.clone();
                scope.spawn(move || {
                    let anchor = stored_anchor(f, range.start);
                    let mut v = StreamVerifier::new(
                        anchor.clone(),
                        Some(key.clone()),
                        Some(NODE.to_owned()),
                    );
                    if i == owner {
                        v.trust_checkpoint(checkpoint.clone());
                    }
                    for e in &f.entries[range.start as usize..range.end as usize] {
                        v.push(black_box(e)).unwrap();
                    }
                    let end = v.position();
                    let report = if i == last {
                        v.finish().unwrap()
                    } else {
                        v.report_so_far()
                    };
                    (anchor, end, report)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for pair in runs.windows(2) {
        assert!(pair[1].0 == pair[0].1, "ranges do not join");
    }
    let checked: u64 = runs.iter().map(|r| r.2.checkpoints_checked).sum();
    assert_eq!(checked, 1);
    black_box(runs);
}

/// Raw single-threaded SHA-256, the single-threaded verifier and the parallel one, interleaved
/// over the same entries (best of `rounds` each).
fn interleaved_parallel(name: &str, f: &Fixture, key: &SealKey, checkpoint: &Checkpoint) {
    const ROUNDS: usize = 1000;
    let (mut raw, mut one, mut par) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        raw_pass(f);
        raw = raw.min(t.elapsed());
        let t = Instant::now();
        verify_pass(f, key, checkpoint);
        one = one.min(t.elapsed());
        let t = Instant::now();
        parallel_pass(f, key, checkpoint, PAR_THREADS);
        par = par.min(t.elapsed());
    }
    let n = f.entries.len() as f64;
    let mib_s = |d: Duration| f.bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    eprintln!(
        "core/{name} interleaved best of {ROUNDS}, {} entries: raw SHA-256 (1 thread) {:.0} MiB/s \
         ({:.0} ns/entry), verify 1 thread {:.0} MiB/s ({:.0} ns/entry, ratio {:.2}), verify \
         {PAR_THREADS} threads {:.0} MiB/s ({:.0} ns/entry, ratio {:.2})",
        f.entries.len(),
        mib_s(raw),
        raw.as_nanos() as f64 / n,
        mib_s(one),
        one.as_nanos() as f64 / n,
        raw.as_secs_f64() / one.as_secs_f64(),
        mib_s(par),
        par.as_nanos() as f64 / n,
        raw.as_secs_f64() / par.as_secs_f64(),
    );
}

/// Sequences every input of the fixture (`ChainHead::append`), the inputs cloned beforehand.
fn seal_pass(f: &Fixture, key: &SealKey) -> Duration {
    let inputs = f.inputs.clone();
    let mut completed = Vec::with_capacity(4 * inputs.len());
    let t = Instant::now();
    let mut head = ChainHead::genesis();
    for (i, input) in inputs.into_iter().enumerate() {
        black_box(head.append(
            Uuid::from_u128(i as u128),
            1_773_478_800_000 + i as i64,
            NODE,
            "evk_0123456789ab",
            input,
            key,
            &mut completed,
        ));
    }
    black_box((head, completed));
    t.elapsed()
}

/// The verification/raw ratio measured robustly on a shared machine: the passes alternate
/// (so all see the same background load) and the fastest of many rounds of each is kept
/// (contention only ever adds time). The sealing pass rides along for its per-entry cost.
fn interleaved_ratio(name: &str, f: &Fixture, key: &SealKey, checkpoint: &Checkpoint) {
    const ROUNDS: usize = 400;
    let (mut raw, mut verify, mut seal) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        raw_pass(f);
        raw = raw.min(t.elapsed());
        let t = Instant::now();
        verify_pass(f, key, checkpoint);
        verify = verify.min(t.elapsed());
        seal = seal.min(seal_pass(f, key));
    }
    let mib_s = |d: Duration| f.bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    eprintln!(
        "core/{name} interleaved best of {ROUNDS}: raw SHA-256 {:.0} MiB/s ({:.0} ns/entry), \
         verify {:.0} MiB/s ({:.0} ns/entry), ratio verify/raw = {:.2}; sealing {:.0} ns/entry",
        mib_s(raw),
        raw.as_nanos() as f64 / BATCH as f64,
        mib_s(verify),
        verify.as_nanos() as f64 / BATCH as f64,
        raw.as_secs_f64() / verify.as_secs_f64(),
        seal.as_nanos() as f64 / BATCH as f64,
    );
}

fn bench_core(c: &mut Criterion) {
    let key = SealKey::new(&[0x42; 32]).unwrap();
    let signer = NoteSigner::from_seed("bench.example/log", [0x24; 32]).unwrap();
    let verifier = signer.verifier();
    for (name, make, par_batch) in [
        (
            "typical",
            typical_input as fn(usize) -> EventInput,
            PAR_BATCH,
        ),
        ("large", large_input, PAR_BATCH / 4),
    ] {
        let f = fixture(make, BATCH, &key, &signer);
        // Opened once: the signature check is per walk, not per entry.
        let checkpoint = Checkpoint::open(&f.checkpoint, &verifier).unwrap();
        interleaved_ratio(name, &f, &key, &checkpoint);
        {
            let big = fixture(make, par_batch, &key, &signer);
            let checkpoint = Checkpoint::open(&big.checkpoint, &verifier).unwrap();
            interleaved_parallel(name, &big, &key, &checkpoint);
        }
        let mut group = c.benchmark_group(format!("core/{name}"));
        eprintln!(
            "core/{name}: {} entries, {} canonical bytes each on average",
            BATCH,
            f.bytes / BATCH as u64
        );

        group.throughput(Throughput::Bytes(f.bytes));
        group.bench_function("raw_sha256", |b| {
            b.iter(|| {
                for bytes in &f.canonical {
                    black_box(Sha256::digest(black_box(bytes)));
                }
            })
        });

        group.bench_function("verify_push", |b| {
            b.iter(|| {
                let mut v = StreamVerifier::new(
                    Anchor::genesis(),
                    Some(key.clone()),
                    Some(NODE.to_owned()),
                );
                v.trust_checkpoint(checkpoint.clone());
                for e in &f.entries {
                    v.push(black_box(e)).unwrap();
                }
                black_box(v.finish().unwrap())
            })
        });

        // Offline verification (no node secret): the same walk without the HMAC.
        group.bench_function("verify_push_no_seal", |b| {
            b.iter(|| {
                let mut v = StreamVerifier::new(Anchor::genesis(), None, Some(NODE.to_owned()));
                v.trust_checkpoint(checkpoint.clone());
                for e in &f.entries {
                    v.push(black_box(e)).unwrap();
                }
                black_box(v.finish().unwrap())
            })
        });

        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("seal_append", |b| {
            b.iter_batched(
                || f.inputs.clone(),
                |inputs| {
                    let mut head = ChainHead::genesis();
                    let mut completed = Vec::with_capacity(4 * BATCH);
                    for (i, input) in inputs.into_iter().enumerate() {
                        black_box(head.append(
                            Uuid::from_u128(i as u128),
                            1_773_478_800_000 + i as i64,
                            NODE,
                            "evk_0123456789ab",
                            input,
                            &key,
                            &mut completed,
                        ));
                    }
                    black_box((head, completed))
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
