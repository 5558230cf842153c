//! Crash harness, through the real binary. (1) SIGKILL the server at random moments under
//! concurrent load, many cycles: after each restart every acknowledged event is there with
//! its hash, sequence numbers are dense, the log verifies, and appends resume right after what
//! survived. (2) Power-loss style: copy the data directory file by file while appends run,
//! without stopping the server; every copy must recover to a verifying prefix of the log that
//! includes every event acknowledged before the copy began. (3) Torn writes: the WAL of a
//! killed node cut anywhere, or its tail overwritten with garbage, recovers to a verifying
//! prefix of what was acknowledged.
//!
//! Why the copy is taken database file first, then its WAL: SQLite changes the main file only
//! when it checkpoints, copying frames that the WAL keeps holding until the WAL is reset, and
//! a reset happens only after a complete checkpoint, when the next write starts. Copying
//! `evident.db` first and `evident.db-wal` after therefore gives a consistent database unless
//! a reset falls between the two copies: pages the main file lacks (or holds half-written,
//! copied mid-checkpoint) are all still in the WAL copy, and a WAL copied mid-append ends in a
//! torn frame that SQLite's frame checksums cut off at the last whole commit, a prefix. The
//! other order is worse: a checkpoint between the copies puts newer pages in the main file
//! than in the WAL copy, a mix of two states. A real power loss is kinder than either, since
//! SQLite orders its own writes with fsync (WAL synced before the main file is written, main
//! file synced before the WAL is reset). The `-shm` index is copied too, as `cp` would, and is
//! harmless: the first connection to open a database rebuilds it from the WAL. A copy that
//! straddled a reset is told by the WAL header's checkpoint number and salts changing while it
//! was taken, and retaken, as a careful backup script would do.
//! docs/THREAT-MODEL.md says what this shows and what it does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Api, Node, Server, assert_dense, event};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), seeded per run and printed so that a
/// failing run can be replayed with `EVIDENT_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("EVIDENT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("crash harness seed: EVIDENT_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Writers appending singles and small batches until stopped or the server goes away;
/// every receipt they got is in `acked`.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u64, String)>>>,
    writers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(api: &Api, writers: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers = (0..writers)
            .map(|w| {
                let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
                let actor = format!("{tag}-w{w}");
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let body = match i % 4 {
                            3 => json!([
                                event(&actor, "load.batch"),
                                event(&actor, "load.batch"),
                                event(&actor, "load.batch")
                            ]),
                            _ => event(&actor, "load.single"),
                        };
                        i += 1;
                        match api.append(&body) {
                            Ok(receipts) => acked.lock().unwrap().extend(receipts),
                            // The server is gone: this request was not acknowledged.
                            Err(answer) if answer.status == 0 => break,
                            Err(answer) => panic!("refused: {} {}", answer.status, answer.text()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            writers,
        }
    }

    fn acked_so_far(&self) -> Vec<(u64, String)> {
        self.acked.lock().unwrap().clone()
    }

    /// Stops the writers and returns every receipt they got.
    fn finish(self) -> Vec<(u64, String)> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.writers {
            w.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Checks the log `api` serves: dense, and holding every entry of `acknowledged` unchanged.
/// Returns its size.
#[track_caller]
fn assert_log_holds(api: &Api, acknowledged: &HashMap<u64, String>, what: &str) -> u64 {
    let entries = api.all_entries();
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
    assert_dense(&mut seqs);
    let stored: HashMap<u64, String> = entries.into_iter().map(|(s, h, _)| (s, h)).collect();
    for (seq, hash) in acknowledged {
        assert_eq!(
            stored.get(seq),
            Some(hash),
            "{what}: acknowledged entry {seq} lost or changed"
        );
    }
    stored.len() as u64
}

#[track_caller]
fn assert_verifies_online(api: &Api, size: u64, what: &str) {
    let answer = api.get("/api/v1/verify");
    assert_eq!(answer.status, 200, "{what}: {}", answer.text());
    let report = answer.json();
    assert_eq!(report["ok"], true, "{what}: {report}");
    assert_eq!(report["entries"], size, "{what}: {report}");
}

#[test]
fn sigkill_at_random_moments_under_load_loses_no_acknowledged_event() {
    const CYCLES: usize = 50;
    const WRITERS: usize = 4;
    let mut rng = Rng::from_env();
    let node = Node::new();
    let mut server = Server::start(&node);
    let mut acknowledged: HashMap<u64, String> = HashMap::new();
    let mut killed_mid_request = 0;

    for cycle in 0..CYCLES {
        let api = server.api(&node.owner_key);
        let load = Load::start(&api, WRITERS, &format!("c{cycle}"));
        // Somewhere from right after start-up to 300 ms into the load; a few cycles kill
        // before the first append is answered.
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        server.kill();
        let acked = load.finish();
        if !acked.is_empty() {
            killed_mid_request += 1;
        }
        for (seq, hash) in acked {
            assert!(
                acknowledged.insert(seq, hash).is_none(),
                "cycle {cycle}: seq {seq} acknowledged twice"
            );
        }

        server.restart();
        let api = server.api(&node.owner_key);
        let what = format!("cycle {cycle}");
        let size = assert_log_holds(&api, &acknowledged, &what);
        assert_verifies_online(&api, size, &what);
        // The offline verifier too, now and then (it is a process of its own).
        if cycle % 10 == 9 {
            node.verify().ok();
        }
        // The restarted server appends after what survived (and after the self-audit
        // event of the verification); the next cycle's density check shows no gap.
        let next = api
            .append(&event("after-restart", "restart.check"))
            .unwrap();
        assert!(
            next[0].0 >= size,
            "{what}: an append reused seq {}",
            next[0].0
        );
        acknowledged.insert(next[0].0, next[0].1.clone());
    }
    assert!(
        killed_mid_request >= CYCLES / 2,
        "only {killed_mid_request} of {CYCLES} kills came under load"
    );
    assert!(acknowledged.len() > CYCLES * 10, "too little load");
    server.kill();
    let out = node.verify().ok();
    assert!(out.stdout.starts_with("OK"), "{}", out.stdout);
}

/// The WAL's generation: its checkpoint sequence number and salts (header bytes 12..24),
/// which change when SQLite resets the WAL and starts writing it from the beginning again.
fn wal_generation(wal: &Path) -> Option<[u8; 12]> {
    let bytes = std::fs::read(wal).ok()?;
    bytes.get(12..24)?.try_into().ok()
}

/// Copies the data directory the way a file-by-file copy of a live system would: the
/// database first, then its WAL, then everything else, each file read while it may change.
/// Returns whether the copy straddled a WAL reset (the one case this order cannot make
/// consistent; see the module documentation), which a careful backup script would detect the
/// same way and retake.
fn copy_live(from: &Path, to: &Path) -> bool {
    let live = from.join("evident.db-wal");
    let before = wal_generation(&live);
    copy_files(from, to);
    let copied = wal_generation(&to.join("evident.db-wal"));
    before != copied || copied != wal_generation(&live)
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let rank = |name: &str| match name {
        "evident.db" => 0,
        "evident.db-wal" => 1,
        _ => 2,
    };
    names.sort_by_key(|n| rank(n));
    for name in names {
        let (src, dst) = (from.join(&name), to.join(&name));
        if src.is_dir() {
            copy_files(&src, &dst);
        } else {
            // A file can vanish between listing and copying (the -shm or a temporary file).
            let _ = std::fs::copy(&src, &dst);
        }
    }
}

#[test]
fn a_copy_taken_mid_write_recovers_to_a_verifying_prefix_with_every_acknowledged_event() {
    const COPIES: usize = 8;
    let node = Node::new();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let load = Load::start(&api, 4, "copy");
    // Copy i was taken when `before[i]` events were acknowledged.
    let mut before: Vec<HashMap<u64, String>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..COPIES {
        // Let some appends land between copies.
        let want = (i + 1) * 40;
        while load.acked_so_far().len() < want {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let dir = node.tmp.path().join(format!("copy-{i}"));
        let mut acked: HashMap<u64, String>;
        let mut attempts = 0;
        loop {
            acked = load.acked_so_far().into_iter().collect();
            let _ = std::fs::remove_dir_all(&dir);
            if !copy_live(&node.dir, &dir) {
                break;
            }
            attempts += 1;
            assert!(attempts < 5, "every copy straddled a WAL reset");
        }
        before.push(acked);
    }
    let all = load.finish();
    server.kill();
    assert!(all.len() >= COPIES * 40);

    for (i, acked) in before.iter().enumerate() {
        let dir = node.tmp.path().join(format!("copy-{i}"));
        let what = format!("copy {i}");
        // Offline, the copy verifies as it is...
        let out = common::run(&["verify", "--data-dir", dir.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{what}: {}\n{}", out.stdout, out.stderr);
        // ...and a server started on it recovers it, holding every event acknowledged
        // before the copy began, and carries on from there.
        let copy = Server::start_with_env(&dir, &[]);
        let api = copy.api(&node.owner_key);
        let size = assert_log_holds(&api, acked, &what);
        assert!(size >= acked.len() as u64);
        assert_verifies_online(&api, size, &what);
        let next = api.append(&event("after-copy", "copy.check")).unwrap();
        let mut with_next = acked.clone();
        with_next.insert(next[0].0, next[0].1.clone());
        assert_log_holds(&api, &with_next, &what);
    }
}

#[test]
fn a_torn_wal_recovers_to_a_verifying_prefix_of_the_log() {
    let mut rng = Rng::from_env();
    let node = Node::new();
    let mut server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for i in 0..40 {
        let body = json!([
            event("torn", &format!("torn.step{i}")),
            event("torn", "torn.pair")
        ]);
        acked.extend(api.append(&body).unwrap());
    }
    // Killed: the WAL holds every commit, none of it checkpointed into the main file.
    server.kill();
    let wal = node.dir.join("evident.db-wal");
    let len = std::fs::metadata(&wal).expect("a WAL after SIGKILL").len();

    // Cut the WAL anywhere (a write that stopped mid-frame), or leave its length and fill
    // its tail with garbage (sectors that never reached the disk).
    let mut damages: Vec<(u64, bool)> = vec![(len / 4, false), (len / 2, false), (len - 1, false)];
    for _ in 0..4 {
        damages.push((rng.below(len), false));
    }
    damages.push((len - len / 3, true));
    for (i, (at, garbage)) in damages.into_iter().enumerate() {
        let what = format!("WAL damaged at byte {at} of {len} (garbage tail: {garbage})");
        let dir = node.tmp.path().join(format!("torn-{i}"));
        copy_files(&node.dir, &dir);
        let copy_wal = dir.join("evident.db-wal");
        if garbage {
            let mut bytes = std::fs::read(&copy_wal).unwrap();
            for b in &mut bytes[at as usize..] {
                *b = 0xab;
            }
            std::fs::write(&copy_wal, bytes).unwrap();
        } else {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&copy_wal)
                .unwrap();
            file.set_len(at).unwrap();
        }
        let out = common::run(&["verify", "--data-dir", dir.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{what}: {}\n{}", out.stdout, out.stderr);
        // A prefix: whatever survived is exactly what was acknowledged, from seq 0 on.
        let copy = Server::start_with_env(&dir, &[]);
        let api = copy.api(&node.owner_key);
        let entries = api.all_entries();
        let mut seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
        assert_dense(&mut seqs);
        let acked_by_seq: HashMap<u64, &String> = acked.iter().map(|(s, h)| (*s, h)).collect();
        for (seq, hash, _) in &entries {
            assert_eq!(
                acked_by_seq.get(seq).copied(),
                Some(hash),
                "{what}: entry {seq} is not what was acknowledged"
            );
        }
        if !garbage && at <= len / 2 {
            assert!(entries.len() < acked.len(), "{what}: the cut lost nothing");
        }
        if at == len - 1 {
            // Only the last commit (one request of two events) can be torn off.
            assert!(
                entries.len() + 2 >= acked.len(),
                "{what}: more than the last commit lost"
            );
        }
        eprintln!(
            "{what}: {} of {} entries survive",
            entries.len(),
            acked.len()
        );
        assert_verifies_online(&api, entries.len() as u64, &what);
        // Lost entries the node had already verified (and signed) cannot be told from a tail
        // deleted behind its back: going on would sign a second history, so it refuses
        // writes and names the first lost entry. A cut that lost nothing it verified is
        // written on.
        let verified = verified_size(&dir);
        if (entries.len() as u64) < verified {
            let refused = api.append(&event("after-torn", "torn.check")).unwrap_err();
            let body = refused.assert_error(503, "read_only", None);
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("truncated at entry {}", entries.len())),
                "{what}: {message}"
            );
        } else {
            api.append(&event("after-torn", "torn.check")).unwrap();
        }
    }
}

/// The last point the node in `dir` verified (`state/signed-state.json`).
fn verified_size(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("state").join("signed-state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["verified"]["next_seq"].as_u64().unwrap_or(0)
}
