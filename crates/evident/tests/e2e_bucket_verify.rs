//! End to end: a real server publishes its log to a local directory (the same objects as a
//! bucket; `aws s3 sync` of one gives such a copy), `evident verify --dir` checks it, a
//! third-party reader written here from the C2SP tlog-tiles spec alone (not using Evident's
//! tiles module) proves an entry's inclusion from the tiles, and every kind of tampering
//! (a changed tile, a deleted entry bundle, a replaced digest, a rolled-back checkpoint, a
//! fork signed with the node's own key) is found with the object and seq named.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, run};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

fn append(api: &common::Api, n: usize, actor: &str) {
    let events: Vec<Value> = (0..n)
        .map(|i| common::event(actor, &format!("bucket.step{i}")))
        .collect();
    let answer = api
        .post_raw(
            "application/json",
            serde_json::to_vec(&json!(events)).unwrap(),
        )
        .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.text());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `evident verify --dir` of `dir`: (ok, stdout, stderr).
fn verify(dir: &Path, public_key: &str, trusted: Option<&Path>) -> (bool, String, String) {
    let mut args = vec![
        "verify",
        "--dir",
        dir.to_str().unwrap(),
        "--public-key",
        public_key,
    ];
    if let Some(t) = trusted {
        args.extend(["--checkpoint", t.to_str().unwrap()]);
    }
    let out = run(&args);
    (out.code == Some(0), out.stdout.clone(), out.stderr.clone())
}

fn assert_fails(dir: &Path, key: &str, trusted: Option<&Path>, object: &str, seq: &str) {
    let (ok, stdout, stderr) = verify(dir, key, trusted);
    assert!(!ok, "tampering with {object} was not found: {stdout}");
    assert!(
        stderr.contains(&format!("FAILED at seq {seq}: {object}")),
        "expected {object} at seq {seq} to be named: {stderr}"
    );
}

// ---- A third-party tile reader, straight from C2SP tlog-tiles and RFC 6962. ----

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn spec_path(level: &str, n: u64, width: u64) -> String {
    let mut s = format!("{:03}", n % 1000);
    let mut rest = n / 1000;
    while rest > 0 {
        s = format!("x{:03}/{s}", rest % 1000);
        rest /= 1000;
    }
    if width < 256 {
        format!("tile/{level}/{s}.p/{width}")
    } else {
        format!("tile/{level}/{s}")
    }
}

struct TileReader {
    dir: PathBuf,
    size: u64,
}

impl TileReader {
    /// The hash of node `index` at tree level `8 * tile_level`, read from its tile.
    fn tile_hash(&self, tile_level: u32, index: u64) -> [u8; 32] {
        let count = self.size >> (8 * tile_level);
        let tile = index / 256;
        let width = if (tile + 1) * 256 <= count {
            256
        } else {
            count % 256
        };
        let bytes = std::fs::read(
            self.dir
                .join(spec_path(&tile_level.to_string(), tile, width)),
        )
        .unwrap();
        let at = (index % 256) as usize * 32;
        bytes[at..at + 32].try_into().unwrap()
    }

    /// MTH(D[a..b]) from the tiles.
    fn subtree(&self, a: u64, b: u64) -> [u8; 32] {
        let n = b - a;
        if n.is_power_of_two() && n.trailing_zeros() % 8 == 0 && a % n == 0 {
            return self.tile_hash(n.trailing_zeros() / 8, a / n);
        }
        let k = if n.is_power_of_two() {
            n / 2
        } else {
            1 << (63 - n.leading_zeros())
        };
        sha(&[&[1], &self.subtree(a, a + k), &self.subtree(a + k, b)])
    }

    /// RFC 6962 PATH(m, D[a..b]).
    fn path(&self, m: u64, a: u64, b: u64) -> Vec<[u8; 32]> {
        let n = b - a;
        if n == 1 {
            return vec![];
        }
        let k = if n.is_power_of_two() {
            n / 2
        } else {
            1 << (63 - n.leading_zeros())
        };
        if m < k {
            let mut p = self.path(m, a, a + k);
            p.push(self.subtree(a + k, b));
            p
        } else {
            let mut p = self.path(m - k, a + k, b);
            p.push(self.subtree(a, a + k));
            p
        }
    }
}

/// RFC 9162 §2.1.3.2 inclusion verification.
fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: [u8; 32],
    proof: &[[u8; 32]],
    root: [u8; 32],
) -> bool {
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            r = sha(&[&[1], p, &r]);
            while f % 2 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = sha(&[&[1], &r, p]);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == root
}

fn third_party_inclusion(dir: &Path, index: u64) {
    use base64::Engine as _;
    let checkpoint = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let mut lines = checkpoint.lines();
    lines.next().unwrap();
    let size: u64 = lines.next().unwrap().parse().unwrap();
    let root: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(lines.next().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let reader = TileReader {
        dir: dir.to_owned(),
        size,
    };
    // The leaf from the entry bundle: uint16 length-prefixed entries, leaf = SHA-256(0 || entry).
    let tile = index / 256;
    let width = if (tile + 1) * 256 <= size {
        256
    } else {
        size % 256
    };
    let bundle = std::fs::read(dir.join(spec_path("entries", tile, width))).unwrap();
    let mut rest = &bundle[..];
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        entries.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    assert_eq!(entries.len() as u64, width);
    let leaf = sha(&[&[0], entries[(index % 256) as usize]]);
    assert_eq!(
        leaf,
        reader.tile_hash(0, index),
        "entry bundle and level-0 tile agree"
    );
    let proof = reader.path(index, 0, size);
    assert!(
        verify_inclusion(index, size, leaf, &proof, root),
        "inclusion of {index} in {size} from the tiles alone"
    );
}

#[test]
fn a_published_directory_verifies_and_every_tampering_is_named() {
    let node = Node::new();
    let bucket = node.file("bucket");
    let config = node.file("publish.toml");
    std::fs::write(
        &config,
        format!(
            "[publish]\ntarget = \"file://{}\"\nperiod = \"1s\"\n",
            bucket.display()
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &node.dir,
        &[],
        &["--config", config.to_str().unwrap()],
        None,
    );
    let key = node.owner_key.clone();
    let api = server.api(&key);
    for burst in 0..2 {
        append(&api, 300, &format!("burst{burst}"));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let out = server.cli(&key, &["publish", "--wait", "60"]).ok();
    assert!(out.stdout.contains("published"), "{}", out.stdout);
    let older_checkpoint = std::fs::read(bucket.join("checkpoint")).unwrap();
    append(&api, 400, "burst2");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let out = server.cli(&key, &["publish", "--wait", "60"]).ok();
    assert!(out.stdout.contains("published"), "{}", out.stdout);
    drop(server);

    let public_key = node.public_key();
    let (ok, stdout, stderr) = verify(&bucket, &public_key, None);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("OK") && stdout.contains("1000 entries"),
        "{stdout}"
    );
    let trusted = node.file("trusted.checkpoint");
    std::fs::copy(bucket.join("checkpoint"), &trusted).unwrap();
    let (ok, stdout, stderr) = verify(&bucket, &public_key, Some(&trusted));
    assert!(ok && stdout.contains("trusted"), "{stdout}{stderr}");
    for index in [0, 255, 256, 600, 999] {
        third_party_inclusion(&bucket, index);
    }
    let mut digests: Vec<String> = std::fs::read_dir(bucket.join("digests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    digests.sort();
    assert!(digests.len() >= 3, "{digests:?}");

    let fresh = |name: &str| {
        let dir = node.file(name);
        copy_dir(&bucket, &dir);
        dir
    };
    // A changed hash tile: hash 5 of level-0 tile 1 is seq 261.
    let dir = fresh("t-tile");
    let path = dir.join("tile/0/001");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5 * 32] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_fails(&dir, &public_key, None, "tile/0/001", "261");
    // A changed entry in a bundle: named as the bundle, at the entry.
    let dir = fresh("t-entry");
    let path = dir.join("tile/entries/002");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[66 * 3 + 10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_fails(&dir, &public_key, None, "tile/entries/002", "515");
    // A superseded partial tile left behind (a crash before its deletion) must agree with
    // the tile that replaced it.
    let dir = fresh("t-stale");
    let mut stale = std::fs::read(dir.join("tile/0/001")).unwrap()[..32 * 7].to_vec();
    std::fs::create_dir_all(dir.join("tile/0/001.p")).unwrap();
    std::fs::write(dir.join("tile/0/001.p/7"), &stale).unwrap();
    let (ok, stdout, stderr) = verify(&dir, &public_key, None);
    assert!(ok, "{stdout}{stderr}");
    stale[32] ^= 1;
    std::fs::write(dir.join("tile/0/001.p/7"), &stale).unwrap();
    assert_fails(&dir, &public_key, None, "tile/0/001.p/7", "256");
    // A deleted entry bundle.
    let dir = fresh("t-bundle");
    std::fs::remove_file(dir.join("tile/entries/001")).unwrap();
    assert_fails(&dir, &public_key, None, "tile/entries/001", "256");
    // A digest replaced by another (validly signed) one.
    let dir = fresh("t-digest");
    std::fs::copy(
        dir.join("digests").join(&digests[0]),
        dir.join("digests").join(&digests[1]),
    )
    .unwrap();
    let (ok, _, stderr) = verify(&dir, &public_key, None);
    assert!(
        !ok && stderr.contains(&format!("digests/{}", digests[1])),
        "{stderr}"
    );
    // A digest edited: its signature no longer verifies.
    let dir = fresh("t-digest-edit");
    let path = dir.join("digests").join(&digests[1]);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("seqs ", "seqs 1", 1);
    std::fs::write(&path, edited).unwrap();
    let (ok, _, stderr) = verify(&dir, &public_key, None);
    assert!(
        !ok && stderr.contains(&format!("digests/{}", digests[1])),
        "{stderr}"
    );
    // The checkpoint rolled back to an older one: the newer digests give it away, and a
    // trusted checkpoint held elsewhere does too.
    let dir = fresh("t-rollback");
    std::fs::write(dir.join("checkpoint"), &older_checkpoint).unwrap();
    let (ok, _, stderr) = verify(&dir, &public_key, None);
    assert!(!ok && stderr.contains("rolled back"), "{stderr}");
    let older_size = String::from_utf8(older_checkpoint.clone()).unwrap();
    let older_size = older_size.lines().nth(1).unwrap();
    assert_fails(&dir, &public_key, Some(&trusted), "checkpoint", older_size);
    // A fork signed with the node's own key (a node restored from a backup that went on
    // differently): every object consistent with the new checkpoint, but not with the
    // trusted checkpoint or the digests.
    let dir = fresh("t-fork");
    let signer = evident_core::NoteSigner::from_private_key_string(
        std::fs::read_to_string(node.dir.join("keys/checkpoint.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    write_fork(&dir, &signer, 999);
    assert_fails(
        &dir,
        &public_key,
        Some(&trusted),
        "the trusted checkpoint",
        "999",
    );
    let (ok, _, stderr) = verify(&dir, &public_key, None);
    assert!(
        !ok && stderr.contains("digests/") && stderr.contains("fork"),
        "{stderr}"
    );
}

/// Rewrites `dir` as another history: the entry at `seq` changed, every tile recomputed, the
/// checkpoint re-signed. Uses the core's tiles module: this is the writer's side.
fn write_fork(dir: &Path, signer: &evident_core::NoteSigner, seq: u64) {
    use evident_core::tiles::{self, TileRebuilder};
    let checkpoint = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let size: u64 = checkpoint.lines().nth(1).unwrap().parse().unwrap();
    let mut rebuilder = TileRebuilder::new();
    let mut written = Vec::new();
    for bundle in tiles::entry_bundles(size) {
        let path = dir.join(bundle.path());
        let mut entries =
            tiles::parse_evident_entry_bundle(&std::fs::read(&path).unwrap(), bundle.width)
                .unwrap();
        let (first, _) = bundle.leaf_range();
        if (first..first + bundle.width).contains(&seq) {
            entries[(seq - first) as usize].0 = evident_core::Hash::digest(b"fork");
            let mut bytes = Vec::new();
            for (h, s) in &entries {
                bytes.extend_from_slice(&64u16.to_be_bytes());
                bytes.extend_from_slice(&tiles::entry_data(h, s));
            }
            std::fs::write(&path, bytes).unwrap();
        }
        for (h, s) in &entries {
            written.extend(rebuilder.push_entry(h, s));
        }
    }
    written.extend(rebuilder.partial_tiles());
    for (tile, hashes) in written {
        std::fs::write(dir.join(tile.path()), tiles::hash_tile(&hashes)).unwrap();
    }
    let forked = evident_core::Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root: rebuilder.root(),
        extensions: vec![],
    };
    std::fs::write(dir.join("checkpoint"), forked.sign(signer).unwrap()).unwrap();
}

/// Online: the same verifier over S3 (a real SeaweedFS), with the standard AWS variables.
#[test]
fn a_live_bucket_verifies_online_and_a_changed_tile_is_named() {
    let s3 = evident_tests3::S3Server::start().unwrap();
    let node = Node::new();
    let config = node.file("publish.toml");
    std::fs::write(
        &config,
        format!(
            "[publish]\ntarget = \"{}\"\nendpoint = \"{}\"\nperiod = \"1s\"\n",
            s3.target("v"),
            s3.endpoint()
        ),
    )
    .unwrap();
    let env = s3.aws_env();
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(
        &node.dir,
        &envs,
        &["--config", config.to_str().unwrap()],
        None,
    );
    let key = node.owner_key.clone();
    append(&server.api(&key), 300, "online");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let out = server.cli(&key, &["publish", "--wait", "60"]).ok();
    assert!(out.stdout.contains("published"), "{}", out.stdout);
    drop(server);
    let public_key = node.public_key();
    let verify_online = || {
        let output = common::evident()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "verify",
                "--bucket",
                &s3.target("v"),
                "--endpoint",
                &s3.endpoint(),
                "--public-key",
                &public_key,
            ])
            .output()
            .unwrap();
        common::Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    let out = verify_online();
    assert!(
        out.code == Some(0) && out.stdout.contains("300 entries"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let mut tile = s3.get("v/tile/0/001.p/44").unwrap().unwrap();
    tile[32 * 3] ^= 0x80;
    s3.put("v/tile/0/001.p/44", &tile).unwrap();
    let out = verify_online();
    assert!(
        out.code == Some(1) && out.stderr.contains("FAILED at seq 259: tile/0/001.p/44"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}
