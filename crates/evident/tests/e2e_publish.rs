//! End to end, through the real binary and a real S3-compatible server (SeaweedFS, started by
//! `evident-tests3` on free loopback ports): the publisher writes the log as tiles, per-period
//! bundles, CSVs and digests, and the checkpoint; a crash in the middle of a publication and
//! a bucket outage leave the bucket as an uninterrupted run would, with no object overwritten,
//! and appends go on meanwhile.
//!
//! Periods: the tests set `period = "1s"` (a period length dividing a day; production uses the
//! default `1d`) and append in bursts more than a second apart, so that a few thousand events
//! fall into several periods; which period an entry is in follows from its `recorded_at`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, run};
use evident_tests3::S3Server;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A node config publishing to `prefix` of the harness's bucket.
fn publish_config(node: &Node, s3: &S3Server, prefix: &str) -> std::path::PathBuf {
    let path = node.file(&format!("publish-{prefix}.toml"));
    std::fs::write(
        &path,
        format!(
            "[publish]\ntarget = \"{}\"\nendpoint = \"{}\"\nperiod = \"1s\"\n",
            s3.target(prefix),
            s3.endpoint()
        ),
    )
    .unwrap();
    path
}

fn start(node: &Node, s3: &S3Server, config: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let env = s3.aws_env();
    let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    envs.extend_from_slice(extra);
    Server::start_with(
        &node.dir,
        &envs,
        &["--config", config.to_str().unwrap()],
        None,
    )
}

/// Appends `n` events in requests of at most 1000.
fn append(api: &common::Api, n: usize, actor: &str) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        let events: Vec<Value> = (0..batch)
            .map(|i| common::event(actor, &format!("publish.step{i}")))
            .collect();
        let answer = api
            .post_raw(
                "application/json",
                serde_json::to_vec(&json!(events)).unwrap(),
            )
            .unwrap();
        assert_eq!(answer.status, 201, "{}", answer.text());
        left -= batch;
    }
}

/// `POST /api/v1/publish?wait=…` with `key`: (status, body).
fn publish(server: &Server, key: &str, wait: u64) -> (u16, Value) {
    let answer = server
        .client()
        .post(format!("{}/api/v1/publish?wait={wait}", server.url))
        .bearer_auth(key)
        .send()
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.bytes().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Every object under `prefix`: key (less the prefix) → bytes.
fn contents(s3: &S3Server, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    s3.list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| {
            let bytes = s3.get(&o.key).unwrap().unwrap_or_else(|| {
                panic!(
                    "{} listed, but not there: {:?}",
                    o.key,
                    s3.versions(&o.key).unwrap()
                )
            });
            (o.key.strip_prefix(prefix).unwrap().to_owned(), bytes)
        })
        .collect()
}

/// The size and root of a signed checkpoint note.
fn checkpoint_of(note: &[u8]) -> (u64, Vec<u8>) {
    let text = std::str::from_utf8(note).unwrap();
    let mut lines = text.lines();
    lines.next().unwrap();
    let size = lines.next().unwrap().parse().unwrap();
    let root = lines.next().unwrap().to_owned();
    (size, root.into_bytes())
}

/// Checks the bucket copy against its checkpoint: the level-0 tiles hash up to the root the
/// checkpoint signs (a reader of the C2SP layout written from the spec), and every period
/// bundle verifies offline with the node's public key.
fn check_copy(objects: &BTreeMap<String, Vec<u8>>, node: &Node, dir: &std::path::Path) {
    check_copy_min(objects, node, dir, 3)
}

/// [`check_copy`], with at least `periods` period bundles.
fn check_copy_min(
    objects: &BTreeMap<String, Vec<u8>>,
    node: &Node,
    dir: &std::path::Path,
    periods: usize,
) {
    let (size, root_b64) = checkpoint_of(&objects["checkpoint"]);
    let mut leaves = Vec::new();
    let mut index = 0u64;
    while (leaves.len() as u64) < size {
        let full = tile_path("0", index, 256);
        let width = (size - index * 256).min(256);
        let key = if width == 256 {
            full
        } else {
            tile_path("0", index, width)
        };
        let tile = objects
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is missing for size {size}"));
        assert_eq!(tile.len() as u64, width * 32, "{key}");
        leaves.extend(tile.chunks(32).map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            evident_core::Hash(h)
        }));
        index += 1;
    }
    let mut range = evident_core::merkle::CompactRange::new();
    let mut done = Vec::new();
    for leaf in leaves {
        range.append_leaf(leaf, &mut done);
    }
    let root = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(range.root().0)
    };
    assert_eq!(
        root.as_bytes(),
        &root_b64[..],
        "tiles do not hash to the checkpoint's root"
    );
    let public_key = node.public_key();
    // The whole copy with the bucket verifier: every tile, bundle, digest and the checkpoint.
    let out = run(&[
        "verify",
        "--dir",
        dir.to_str().unwrap(),
        "--public-key",
        &public_key,
    ])
    .ok();
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let bundles: Vec<&String> = objects.keys().filter(|k| k.ends_with(".ndjson")).collect();
    assert!(bundles.len() >= periods, "periods: {bundles:?}");
    for key in bundles {
        let file = dir.join(key);
        let out = run(&[
            "verify",
            "--export",
            file.to_str().unwrap(),
            "--public-key",
            &public_key,
        ])
        .ok();
        assert!(out.stdout.contains("OK"), "{key}: {}", out.stdout);
    }
}

/// `tile/<level>/<N>[.p/<W>]` as C2SP spells it (3-digit groups, `x` before all but the last).
fn tile_path(level: &str, index: u64, width: u64) -> String {
    let mut groups = vec![];
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    groups.reverse();
    let last = groups.len() - 1;
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect();
    let mut path = format!("tile/{level}/{}", parts.join("/"));
    if width < 256 {
        path.push_str(&format!(".p/{width}"));
    }
    path
}

#[test]
fn publishes_survives_a_crash_and_an_outage_and_never_overwrites() {
    let mut s3 = S3Server::start().unwrap();
    let node = Node::new();
    let key = node.owner_key.clone();
    let config = publish_config(&node, &s3, "a");
    let mut server = start(&node, &s3, &config, &[]);
    let api = server.api(&key);
    for burst in 0..3 {
        append(&api, 700, &format!("burst{burst}"));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // The last period closes once its end is two seconds past (none is recorded after it).
    std::thread::sleep(std::time::Duration::from_millis(2000));
    // On demand, through the CLI.
    let out = server.cli(&key, &["publish", "--wait", "60"]).ok();
    assert!(out.stdout.contains("published"), "{}", out.stdout);
    let first = contents(&s3, "a/");
    let (published, _) = checkpoint_of(&first["checkpoint"]);
    assert!(published >= 2100, "{published}");
    let copy = node.file("copy-1");
    assert!(s3.download("a/", &copy).unwrap() > 10);
    check_copy(&first, &node, &copy);
    // Online, from the bucket itself.
    let mut verify = common::evident();
    verify.args([
        "verify",
        "--bucket",
        &s3.target("a"),
        "--endpoint",
        &s3.endpoint(),
        "--public-key",
        &node.public_key(),
    ]);
    for (k, v) in s3.aws_env() {
        verify.env(k, v);
    }
    let out = verify.output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Status and metrics.
    let status = api.get("/api/v1/publisher").json();
    assert_eq!(status["configured"], true, "{status}");
    assert_eq!(status["publish"]["published_size"], published, "{status}");
    assert!(status["publish"]["objects_written"].as_u64().unwrap() as usize >= first.len() - 1);
    let metrics = api.get("/metrics").text();
    assert!(
        metrics.contains("evident_consumer_position{kind=\"publisher\""),
        "{metrics}"
    );
    // Only an owner key publishes on demand.
    let admin = common::create_key(&node.dir, "admin", &[]);
    let (status, body) = publish(&server, &admin, 0);
    assert_eq!(status, 403, "{body}");

    // A crash in the middle of a publication, twice, then a clean run.
    let etags: BTreeMap<String, String> = s3
        .list("a/")
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.etag))
        .collect();
    append(&api, 600, "burst3");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    append(&api, 600, "burst4");
    server.stop();
    for crash_after in ["3", "9"] {
        let mut crashing = start(
            &node,
            &s3,
            &config,
            &[("EVIDENT_TEST_PUBLISH_CRASH_AFTER", crash_after)],
        );
        let (status, _) = publish(&crashing, &key, 0);
        assert!(status == 202 || status == 200);
        let code = crashing.wait_exit(std::time::Duration::from_secs(60));
        assert_ne!(
            code,
            Some(0),
            "the publisher was to abort after {crash_after} objects"
        );
    }
    let server = start(&node, &s3, &config, &[]);
    let (status, body) = publish(&server, &key, 120);
    assert_eq!(status, 200, "{body}");
    let after = contents(&s3, "a/");
    let (size, _) = checkpoint_of(&after["checkpoint"]);
    assert!(size >= published + 1200, "{size}");
    let copy = node.file("copy-2");
    s3.download("a/", &copy).unwrap();
    check_copy(&after, &node, &copy);
    // Nothing written before was changed; only the checkpoint object has several versions,
    // and the superseded partial tiles are gone.
    for (key, etag) in &etags {
        if key.contains(".p/") || key.ends_with("/checkpoint") {
            continue;
        }
        let now = s3.list(key).unwrap();
        assert_eq!(now.first().map(|o| &o.etag), Some(etag), "{key} changed");
    }
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for v in s3.versions("a/").unwrap() {
        if !v.delete_marker {
            *versions.entry(v.key).or_default() += 1;
        }
    }
    for (key, count) in &versions {
        if key != "a/checkpoint" {
            assert_eq!(*count, 1, "{key} was written {count} times");
        }
    }
    let partials: Vec<&String> = after.keys().filter(|k| k.contains(".p/")).collect();
    assert!(
        partials.len() <= 4,
        "only the partial tiles of size {size}: {partials:?}"
    );

    // The same log published in one go, uninterrupted, to another prefix: the same objects.
    drop(server);
    let fresh = publish_config(&node, &s3, "b");
    let server = start(&node, &s3, &fresh, &[]);
    let (status, body) = publish(&server, &key, 120);
    assert_eq!(status, 200, "{body}");
    let reference = contents(&s3, "b/");
    for (key, bytes) in &after {
        if key.contains(".p/") || key == "checkpoint" {
            continue;
        }
        assert_eq!(
            reference.get(key),
            Some(bytes),
            "{key} differs from an uninterrupted run"
        );
    }

    // The bucket unreachable for a while: appends go on, publishing catches up after.
    s3.stop();
    let api = server.api(&key);
    append(&api, 300, "outage");
    let (status, body) = publish(&server, &key, 3);
    assert_eq!(status, 202, "{body}");
    let target = body["target_size"].as_u64().unwrap();
    s3.resume().unwrap();
    let (status, body) = publish(&server, &key, 120);
    assert_eq!(status, 200, "{body}");
    let (size, _) = checkpoint_of(&s3.get("b/checkpoint").unwrap().unwrap());
    assert!(size >= target, "{size} < {target}");
}

/// Retention and the archive: a node that publishes prunes only what the bucket holds in full
/// entry bundles; afterwards a pruned entry's 410 names the bucket object that archives it,
/// the node's log verifies from its anchor, and the bucket still holds and proves the whole
/// history.
#[test]
fn pruning_keeps_what_is_not_archived_and_points_to_the_archive() {
    const DAY_MS: i64 = 86_400_000;
    let s3 = S3Server::start().unwrap();
    let node = Node::new();
    let key = node.owner_key.clone();
    let config = publish_config(&node, &s3, "r");
    let mut server = start(&node, &s3, &config, &[]);
    let api = server.api(&key);
    append(&api, 600, "old");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(std::time::Duration::from_millis(3000));
    append(&api, 10, "new");
    let (status, body) = publish(&server, &key, 60);
    assert_eq!(status, 200, "{body}");
    server.stop();

    let env = s3.aws_env();
    let prune = |extra: &[&str]| {
        let mut cmd = common::evident();
        cmd.args([
            "prune",
            "--data-dir",
            node.dir_str(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(extra)
        .env("EVIDENT_TEST_NOW", (cutoff + 365 * DAY_MS).to_string());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // 600 old entries, but only the first two full bundles (512 entries) are archived whole.
    let out = prune(&[]);
    assert!(out.contains("pruned entries 0 to 511"), "{out}");
    let verified = node.verify().ok();
    assert!(
        verified.stdout.contains("OK: log intact"),
        "{}",
        verified.stdout
    );

    let server = start(&node, &s3, &config, &[]);
    let api = server.api(&key);
    let gone = api.get("/api/v1/proof/inclusion?seq=3");
    let body = gone.assert_error(410, "pruned", Some("seq"));
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("archived in s3://evident-archive/r/tile/entries/000"),
        "{message}"
    );
    // The bucket holds the pruned entries and still proves the whole log.
    let (status, body) = publish(&server, &key, 60);
    assert_eq!(status, 200, "{body}");
    let objects = contents(&s3, "r/");
    // Entry 3 is in the archive: its hash and seal, as the period's bundle lists them, are the
    // fourth record (uint16 length 64, then hash ‖ seal) of the first entry bundle.
    let tile = &objects["tile/entries/000"];
    assert_eq!(tile.len(), 256 * 66);
    let record = &tile[3 * 66..4 * 66];
    assert_eq!(&record[..2], &[0, 64]);
    let line = objects
        .iter()
        .filter(|(k, _)| k.ends_with(".ndjson"))
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|l| l.contains("\"seq\":3,"))
        .expect("entry 3 in a period bundle");
    let entry: Value = serde_json::from_str(&line).unwrap();
    let hex: String = record[2..].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        format!(
            "{}{}",
            entry["hash"].as_str().unwrap(),
            entry["seal"].as_str().unwrap()
        )
    );
    let copy = node.file("pruned-copy");
    s3.download("r/", &copy).unwrap();
    check_copy_min(&objects, &node, &copy, 1);
}
