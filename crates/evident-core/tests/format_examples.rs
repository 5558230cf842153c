//! Keeps `docs/FORMAT.md` honest: every value of its worked example is parsed out of the
//! document (fenced blocks tagged ` name=…`) and recomputed, once with the crate and, where
//! the document gives the algorithm, once more from the document's own description with plain
//! SHA-256 / HMAC, so that the document, the code and a third-party reading agree byte for
//! byte. On a mismatch the test prints every disagreeing block with the computed value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::chain::{GENESIS_PREV_HASH, SealKey, SealedEntry};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::Event;
use evident_core::export::{self, ExportEntry, ExportHeader, RunEnd, RunStart};
use evident_core::hash::Hash;
use evident_core::merkle::{self, CompactRange, NodeId};
use evident_core::note::{NoteSigner, NoteVerifier};
use evident_core::verify::{Anchor, StreamVerifier};
use evident_core::{canonical, event};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

fn doc_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Fenced blocks whose info string carries ` name=NAME`: name → (language, content).
fn named_blocks(doc: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("").to_owned();
        let name = words.find_map(|w| w.strip_prefix("name="));
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        if let Some(name) = name {
            assert!(
                out.insert(name.to_owned(), (lang, body)).is_none(),
                "block {name} appears twice"
            );
        }
    }
    out
}

/// Hex with whitespace and `# comments` ignored.
fn hex_of(body: &str) -> Vec<u8> {
    let digits: String = body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("bad hex {digits:?}: {e}"))
}

/// The document's blocks and the comparisons made against them.
struct Doc {
    blocks: BTreeMap<String, (String, String)>,
    mismatches: Vec<String>,
    checked: usize,
}

impl Doc {
    fn body(&self, name: &str) -> &str {
        match self.blocks.get(name) {
            Some((_, body)) => body,
            None => panic!("docs/FORMAT.md has no block name={name}"),
        }
    }

    fn hex(&self, name: &str) -> Vec<u8> {
        hex_of(self.body(name))
    }

    fn expect_hex(&mut self, name: &str, computed: &[u8], shown: impl FnOnce() -> String) {
        self.checked += 1;
        let ok = self.blocks.get(name).map(|(_, b)| hex_of(b)) == Some(computed.to_vec());
        if !ok {
            self.mismatches.push(format!(
                "block name={name} should be:\n{}\n(end of block {name})",
                shown()
            ));
        }
    }

    fn expect_hash(&mut self, name: &str, computed: &Hash) {
        self.expect_hex(name, &computed.0, || computed.to_hex());
    }

    fn expect_hashes(&mut self, name: &str, computed: &[Hash]) {
        let bytes: Vec<u8> = computed.iter().flat_map(|h| h.0).collect();
        self.expect_hex(name, &bytes, || {
            computed
                .iter()
                .map(Hash::to_hex)
                .collect::<Vec<_>>()
                .join("\n")
        });
    }

    fn expect_text(&mut self, name: &str, computed: &str) {
        self.checked += 1;
        let ok = self.blocks.get(name).map(|(_, b)| b.as_str()) == Some(computed);
        if !ok {
            self.mismatches.push(format!(
                "block name={name} should be:\n{computed}(end of block {name})"
            ));
        }
    }
}

/// The canonical bytes laid out field by field, as the document shows them.
fn annotated_canonical(e: &Event) -> String {
    let mut rows: Vec<(Vec<u8>, String)> = Vec::new();
    let str_field = |s: &str| {
        let mut b = (s.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(s.as_bytes());
        b
    };
    let version = e.entry_version();
    rows.push((
        canonical::entry_magic(e).to_vec(),
        format!("magic \"evident/entry/v{version}\" 0x00"),
    ));
    rows.push((e.seq.to_be_bytes().to_vec(), format!("seq = {}", e.seq)));
    rows.push((e.id.as_bytes().to_vec(), format!("id = {}", e.id)));
    rows.push((
        e.recorded_at.to_be_bytes().to_vec(),
        format!("recorded_at = {} ms", e.recorded_at),
    ));
    match e.occurred_at {
        None => rows.push((vec![0], "occurred_at absent".into())),
        Some(t) => {
            let mut b = vec![1];
            b.extend_from_slice(&t.to_be_bytes());
            rows.push((b, format!("occurred_at present, {t} ms")));
        }
    }
    for (name, value) in [
        ("node_id", e.node_id.as_str()),
        ("tenant", e.tenant.as_str()),
        ("actor.id", e.actor.id.as_str()),
        ("actor.kind", e.actor.kind.as_str()),
    ] {
        rows.push((str_field(value), format!("{name} = {value:?}")));
    }
    match e.actor.ip {
        None => rows.push((vec![0], "actor.ip absent".into())),
        Some(IpAddr::V4(v4)) => {
            let mut b = vec![4];
            b.extend_from_slice(&v4.octets());
            rows.push((b, format!("actor.ip = IPv4 {v4}")));
        }
        Some(IpAddr::V6(v6)) => {
            let mut b = vec![6];
            b.extend_from_slice(&v6.octets());
            rows.push((b, format!("actor.ip = IPv6 {v6}")));
        }
    }
    match &e.actor.user_agent {
        None => rows.push((vec![0], "actor.user_agent absent".into())),
        Some(ua) => {
            let mut b = vec![1];
            b.extend(str_field(ua));
            rows.push((b, format!("actor.user_agent present, {ua:?}")));
        }
    }
    for (name, value) in [
        ("action", e.action.as_str()),
        ("target.kind", e.target.kind.as_str()),
        ("target.id", e.target.id.as_str()),
        ("outcome", e.outcome.as_str()),
        ("severity", e.severity.as_str()),
        ("context", e.context.as_str()),
    ] {
        rows.push((str_field(value), format!("{name} = {value:?}")));
    }
    if let Some(by) = &e.appended_by {
        rows.push((str_field(by), format!("appended_by = {by:?}")));
    }
    let mut out = String::new();
    for (bytes, note) in rows {
        // Long fields wrap at 32 bytes; the note goes on the first line.
        for (i, chunk) in bytes.chunks(32).enumerate() {
            let h = hex::encode(chunk);
            if i == 0 {
                out.push_str(&format!("{h:<64}  # {note}\n"));
            } else {
                out.push_str(&format!("{h}\n"));
            }
        }
    }
    out
}

/// SHA-256 over the concatenation of `parts`, written out independently of the crate.
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[test]
fn the_worked_example_in_format_md_is_what_the_code_computes() {
    let text = doc_text();
    let mut doc = Doc {
        blocks: named_blocks(&text),
        mismatches: Vec::new(),
        checked: 0,
    };

    // Fixed inputs, as published.
    let secret = doc.hex("seal-secret");
    assert_eq!(secret, (0x00u8..=0x1f).collect::<Vec<u8>>());
    let seed: [u8; 32] = doc.hex("ed25519-seed").try_into().unwrap();
    assert_eq!(seed.to_vec(), (0x20u8..=0x3f).collect::<Vec<u8>>());
    let key_name = doc.body("key-name").trim().to_owned();
    let key = SealKey::new(&secret).unwrap();
    let signer = NoteSigner::from_seed(&key_name, seed).unwrap();
    let verifier = signer.verifier();
    doc.expect_text("vkey", &format!("{}\n", verifier.to_vkey_string()));
    // The three entries.
    let mut entries: Vec<SealedEntry> = Vec::new();
    let mut prev = GENESIS_PREV_HASH;
    let mut completed: Vec<(NodeId, Hash)> = Vec::new();
    let mut tree = CompactRange::new();
    let mut roots = vec![tree.root()];
    for i in 0..3 {
        let value: serde_json::Value =
            serde_json::from_str(doc.body(&format!("entry{i}-event"))).unwrap();
        let event = Event::from_json(&value).unwrap();
        assert_eq!(event.seq, i);
        let bytes = canonical::encode(&event);
        doc.expect_hex(&format!("entry{i}-canonical"), &bytes, || {
            annotated_canonical(&event)
        });

        let hash = Hash(sha256(&[&prev.0, &bytes]));
        assert_eq!(hash, evident_core::chain::entry_hash(&prev, &bytes));
        doc.expect_hash(&format!("entry{i}-hash"), &hash);

        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
        mac.update(&hash.0);
        let seal = Hash(mac.finalize().into_bytes().into());
        assert_eq!(seal, key.seal(&hash));
        doc.expect_hash(&format!("entry{i}-seal"), &seal);

        let entry = SealedEntry { event, hash, seal };
        let leaf = Hash(sha256(&[&[0x00], &hash.0, &seal.0]));
        assert_eq!(leaf, entry.leaf_hash());
        doc.expect_hash(&format!("entry{i}-leaf"), &leaf);

        tree.append_leaf(leaf, &mut completed);
        roots.push(tree.root());
        prev = hash;
        entries.push(entry);
    }
    let leaves: Vec<Hash> = entries.iter().map(SealedEntry::leaf_hash).collect();
    let nodes: HashMap<NodeId, Hash> = completed.iter().copied().collect();

    // The tree, from the RFC 9162 definition.
    let node = |l: &Hash, r: &Hash| Hash(sha256(&[&[0x01], &l.0, &r.0]));
    let n01 = node(&leaves[0], &leaves[1]);
    assert_eq!(nodes[&NodeId { level: 1, index: 0 }], n01);
    doc.expect_hash("node-1-0", &n01);
    let root3 = node(&n01, &leaves[2]);
    assert_eq!(roots[3], root3);
    assert_eq!(roots[2], n01);
    assert_eq!(roots[1], leaves[0]);
    assert_eq!(roots[0], Hash(sha256(&[])));
    doc.expect_hash("root-0", &roots[0]);
    doc.expect_hash("root-3", &root3);

    // The signed checkpoint (Ed25519 signatures are deterministic).
    let checkpoint = Checkpoint {
        origin: key_name.clone(),
        size: 3,
        root: root3,
        extensions: vec![],
    };
    doc.expect_text("checkpoint-3-body", &checkpoint.to_text());
    let signed = checkpoint.sign(&signer).unwrap();
    doc.expect_text("checkpoint-3", &signed);

    // Proofs, assembled from stored nodes as a server does, and checked.
    let fetch = |ids: &[NodeId]| -> Vec<Hash> { ids.iter().map(|id| nodes[id]).collect() };
    let plan = merkle::inclusion_plan(0, 3).unwrap();
    let inclusion = plan.assemble(&fetch(plan.nodes())).unwrap();
    assert_eq!(inclusion, vec![leaves[1], leaves[2]]);
    doc.expect_hashes("inclusion-0-3", &inclusion);

    let plan = merkle::inclusion_plan(2, 3).unwrap();
    let inclusion = plan.assemble(&fetch(plan.nodes())).unwrap();
    assert_eq!(inclusion, vec![n01]);
    doc.expect_hashes("inclusion-2-3", &inclusion);

    let plan = merkle::consistency_plan(2, 3).unwrap();
    let consistency = plan.assemble(&fetch(plan.nodes())).unwrap();
    assert_eq!(consistency, vec![leaves[2]]);
    doc.expect_hashes("consistency-2-3", &consistency);
    let plan = merkle::consistency_plan(1, 3).unwrap();
    let consistency = plan.assemble(&fetch(plan.nodes())).unwrap();
    assert_eq!(consistency, vec![leaves[1], leaves[2]]);
    doc.expect_hashes("consistency-1-3", &consistency);

    // The streaming verifier accepts the example log with its checkpoint.
    let mut v = StreamVerifier::new(Anchor::genesis(), Some(key.clone()), Some("node-a".into()));
    v.trust_signed_checkpoint(&signed, &verifier).unwrap();
    for e in &entries {
        v.push(e).unwrap();
    }
    let report = v.finish().unwrap();
    assert_eq!(
        (report.size, report.root, report.checkpoints_checked),
        (3, root3, 1)
    );

    // The sparse export of entries 0 and 2.
    let header = ExportHeader {
        node_id: "node-a".to_owned(),
        checkpoint: signed.clone(),
        query: r#"{"ip":"::/0"}"#.to_owned(),
        exported_at: event::parse_rfc3339("2026-03-14T10:00:00.000Z").unwrap(),
    };
    let mut bundle = export::signed_header_line(&header, None, &signer).unwrap();
    bundle.push_str(&export::entry_line(&ExportEntry {
        entry: entries[0].clone(),
        run_start: Some(RunStart {
            prev_hash: GENESIS_PREV_HASH,
            left: vec![],
        }),
        run_end: Some(RunEnd {
            right: vec![leaves[1], leaves[2]],
        }),
    }));
    bundle.push_str(&export::entry_line(&ExportEntry {
        entry: entries[2].clone(),
        run_start: Some(RunStart {
            prev_hash: entries[1].hash,
            left: vec![n01],
        }),
        run_end: Some(RunEnd { right: vec![] }),
    }));
    bundle.push_str(&export::trailer_line(2, 2));
    assert_eq!(export::run_nodes(0, 1, 3).1.len(), 2);
    assert_eq!(
        export::run_nodes(2, 3, 3).0,
        vec![NodeId { level: 1, index: 0 }]
    );
    doc.expect_text("export-sparse", &bundle);

    // Entry 3, in entry encoding version 2, after the three version-1 entries: the log of
    // size 4 holds both versions.
    let value: serde_json::Value = serde_json::from_str(doc.body("entry3-event")).unwrap();
    let event = Event::from_json(&value).unwrap();
    assert_eq!((event.seq, event.entry_version()), (3, 2));
    let bytes = canonical::encode(&event);
    assert_eq!(&bytes[..17], b"evident/entry/v2\0");
    doc.expect_hex("entry3-canonical", &bytes, || annotated_canonical(&event));
    let hash = Hash(sha256(&[&entries[2].hash.0, &bytes]));
    doc.expect_hash("entry3-hash", &hash);
    let seal = key.seal(&hash);
    doc.expect_hash("entry3-seal", &seal);
    let entry3 = SealedEntry { event, hash, seal };
    let leaf3 = Hash(sha256(&[&[0x00], &hash.0, &seal.0]));
    assert_eq!(leaf3, entry3.leaf_hash());
    doc.expect_hash("entry3-leaf", &leaf3);
    let root4 = node(&n01, &node(&leaves[2], &leaf3));
    let mut tree4 = tree.clone();
    tree4.append_leaf(leaf3, &mut Vec::new());
    assert_eq!(tree4.root(), root4);
    doc.expect_hash("root-4", &root4);
    let checkpoint4 = Checkpoint {
        origin: key_name.clone(),
        size: 4,
        root: root4,
        extensions: vec![],
    }
    .sign(&signer)
    .unwrap();
    let mut v = StreamVerifier::new(Anchor::genesis(), Some(key.clone()), Some("node-a".into()));
    v.trust_signed_checkpoint(&checkpoint4, &verifier).unwrap();
    for e in entries.iter().chain([&entry3]) {
        v.push(e).unwrap();
    }
    assert_eq!(v.finish().unwrap().root, root4);

    assert!(
        doc.mismatches.is_empty(),
        "docs/FORMAT.md disagrees with the code in {} of {} values:\n\n{}",
        doc.mismatches.len(),
        doc.checked,
        doc.mismatches.join("\n\n")
    );

    // The document's values, read back as a third party would use them.
    assert_eq!(
        NoteVerifier::parse(doc.body("vkey").trim()).unwrap(),
        verifier
    );
    // Key ID = first 4 bytes of SHA-256(name ‖ 0x0a ‖ 0x01 ‖ public key).
    let vkey = doc.body("vkey").trim().to_owned();
    let public: Vec<u8> = {
        use base64::Engine as _;
        let typed = base64::engine::general_purpose::STANDARD
            .decode(vkey.rsplit('+').next().unwrap())
            .unwrap();
        assert_eq!(typed[0], 0x01);
        typed[1..].to_vec()
    };
    let id = sha256(&[key_name.as_bytes(), b"\n", &[0x01], &public]);
    assert_eq!(format!("{:08x}", verifier.key_id()), hex::encode(&id[..4]));

    assert_eq!(
        Checkpoint::open(doc.body("checkpoint-3"), &verifier).unwrap(),
        checkpoint
    );
    let shown: Vec<Hash> = doc
        .hex("inclusion-0-3")
        .chunks(32)
        .map(|c| Hash(c.try_into().unwrap()))
        .collect();
    merkle::verify_inclusion(&leaves[0], 0, 3, &shown, &root3).unwrap();
    let shown: Vec<Hash> = doc
        .hex("consistency-1-3")
        .chunks(32)
        .map(|c| Hash(c.try_into().unwrap()))
        .collect();
    merkle::verify_consistency(1, &roots[1], 3, &root3, &shown).unwrap();
    let report =
        export::verify_export(doc.body("export-sparse").as_bytes(), verifier.clone(), None)
            .unwrap();
    assert_eq!(
        (report.entries, report.runs, report.checkpoint_size),
        (2, 2, 3)
    );
}

#[test]
fn the_documented_limits_are_the_code_limits() {
    let doc = Doc {
        blocks: named_blocks(&doc_text()),
        mismatches: Vec::new(),
        checked: 0,
    };
    let limits: BTreeMap<&str, &str> = doc
        .body("limits")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let expect = [
        ("MAX_ACTION_BYTES", event::MAX_ACTION_BYTES.to_string()),
        ("MAX_STRING_BYTES", event::MAX_STRING_BYTES.to_string()),
        ("MAX_NAME_BYTES", event::MAX_NAME_BYTES.to_string()),
        ("MAX_CONTEXT_BYTES", event::MAX_CONTEXT_BYTES.to_string()),
        ("MAX_CONTEXT_DEPTH", event::MAX_CONTEXT_DEPTH.to_string()),
        ("MAX_SAFE_INTEGER", event::MAX_SAFE_INTEGER.to_string()),
        ("MIN_TIMESTAMP", event::MIN_TIMESTAMP.to_string()),
        ("MAX_TIMESTAMP", event::MAX_TIMESTAMP.to_string()),
        (
            "MIN_SEAL_SECRET_BYTES",
            evident_core::chain::MIN_SEAL_SECRET_BYTES.to_string(),
        ),
        (
            "MAX_SIGNATURES",
            evident_core::note::MAX_SIGNATURES.to_string(),
        ),
        ("MAX_LINE_BYTES", export::MAX_LINE_BYTES.to_string()),
    ];
    assert_eq!(limits.len(), expect.len(), "{limits:?}");
    for (name, value) in expect {
        assert_eq!(limits.get(name).copied(), Some(value.as_str()), "{name}");
    }
    assert_eq!(
        doc.body("entry-magic").trim(),
        hex::encode(canonical::ENTRY_MAGIC_V1)
    );
    assert_eq!(
        doc.body("entry-magic-v2").trim(),
        hex::encode(canonical::ENTRY_MAGIC_V2)
    );
    assert_eq!(doc.body("export-format").trim(), export::FORMAT);
    // Every violation kind is documented.
    let kinds = doc.body("violation-kinds");
    for kind in evident_core::verify::Violation::KINDS {
        assert!(
            kinds.lines().any(|l| l.trim() == kind),
            "kind {kind} not listed"
        );
    }
    assert_eq!(
        kinds.lines().filter(|l| !l.trim().is_empty()).count(),
        evident_core::verify::Violation::KINDS.len()
    );
}

#[test]
fn the_key_rotation_example_is_what_the_code_computes() {
    use evident_core::rotation::{SigningRotation, rotation_statement, seal_key_id};
    let text = doc_text();
    let mut doc = Doc {
        blocks: named_blocks(&text),
        mismatches: Vec::new(),
        checked: 0,
    };
    let key_name = doc.body("key-name").trim().to_owned();
    let old_seed: [u8; 32] = doc.hex("ed25519-seed").try_into().unwrap();
    let new_seed: [u8; 32] = (0x40u8..=0x5f).collect::<Vec<u8>>().try_into().unwrap();
    let old = NoteSigner::from_seed(&key_name, old_seed).unwrap();
    let new = NoteSigner::from_seed(&key_name, new_seed).unwrap();
    let rotation = SigningRotation::sign(&old, &new.verifier(), 5, 1_774_083_600_000).unwrap();
    doc.expect_text(
        "rotation-example-statement",
        &rotation_statement(&key_name, &old.verifier(), &new.verifier(), 5),
    );
    doc.expect_text(
        "rotation-example-context",
        &format!(
            "{}\n",
            evident_core::canonical::canonical_json(&rotation.to_context())
        ),
    );
    let secret = doc.hex("seal-secret");
    doc.expect_text(
        "seal-key-id-example",
        &format!("{}\n", seal_key_id(&SealKey::new(&secret).unwrap())),
    );
    assert!(rotation.check().is_ok());
    assert_eq!(doc.checked, 3);
    assert!(doc.mismatches.is_empty(), "{}", doc.mismatches.join("\n\n"));
}
