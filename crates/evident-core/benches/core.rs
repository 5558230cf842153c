//! Integrity core costs: sealing one entry (`ChainHead::append`: encode, chain hash, HMAC seal,
//! Merkle append) and verifying entries (`StreamVerifier::push` with the seal checked), beside
//! raw SHA-256 over exactly the same canonical bytes, for a typical entry (~300 B canonical)
//! and a large one (~2 KiB of context). Throughput is in bytes of canonical encoding, so the
//! verification/raw ratio reads straight off the report. See BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evident_core::canonical;
use evident_core::chain::{ChainHead, SealKey, SealedEntry};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::EventInput;
use evident_core::note::NoteSigner;
use evident_core::verify::{Anchor, StreamVerifier};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::hint::black_box;
use uuid::Uuid;

/// Entries per measured iteration: enough that the tree's carries average out.
const BATCH: usize = 1024;
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
}

fn fixture(make: fn(usize) -> EventInput, key: &SealKey, signer: &NoteSigner) -> Fixture {
    let inputs: Vec<EventInput> = (0..BATCH).map(make).collect();
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

/// The verification/raw ratio measured robustly on a shared machine: the two passes alternate
/// (so both see the same background load) and the fastest of many rounds of each is kept
/// (contention only ever adds time).
fn interleaved_ratio(name: &str, f: &Fixture, key: &SealKey, checkpoint: &Checkpoint) {
    const ROUNDS: usize = 400;
    let (mut raw, mut verify) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..ROUNDS {
        let t = std::time::Instant::now();
        raw_pass(f);
        raw = raw.min(t.elapsed());
        let t = std::time::Instant::now();
        verify_pass(f, key, checkpoint);
        verify = verify.min(t.elapsed());
    }
    let mib_s = |d: std::time::Duration| f.bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    eprintln!(
        "core/{name} interleaved best of {ROUNDS}: raw SHA-256 {:.0} MiB/s ({:.0} ns/entry), \
         verify {:.0} MiB/s ({:.0} ns/entry), ratio verify/raw = {:.2}",
        mib_s(raw),
        raw.as_nanos() as f64 / BATCH as f64,
        mib_s(verify),
        verify.as_nanos() as f64 / BATCH as f64,
        raw.as_secs_f64() / verify.as_secs_f64()
    );
}

fn bench_core(c: &mut Criterion) {
    let key = SealKey::new(&[0x42; 32]).unwrap();
    let signer = NoteSigner::from_seed("bench.example/log", [0x24; 32]).unwrap();
    let verifier = signer.verifier();
    for (name, make) in [
        ("typical", typical_input as fn(usize) -> EventInput),
        ("large", large_input),
    ] {
        let f = fixture(make, &key, &signer);
        // Opened once: the signature check is per walk, not per entry.
        let checkpoint = Checkpoint::open(&f.checkpoint, &verifier).unwrap();
        interleaved_ratio(name, &f, &key, &checkpoint);
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
