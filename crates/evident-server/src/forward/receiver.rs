//! The receiving side's check of forwarded entries (`evident verify --syslog`): reads the
//! RFC 5424 lines a receiver wrote (rsyslog's file output, one message per line), and
//! checks, per node, each entry's hash and seal coordinates against its payload, the hash
//! chain between consecutive entries, the signed checkpoint records and, where every entry
//! from seq 0 up to a checkpoint's size arrived, that checkpoint's Merkle root; it reports
//! what is missing as seq ranges, found through each message's `prev`. Pure: lines in,
//! report out; reading the file is the caller's.

use super::rfc5424::{APP_NAME, CHECKPOINT_SD_ID, ENTRY_SD_ID};
use base64::Engine as _;
use evident_core::chain::{GENESIS_PREV_HASH, recompute_hash};
use evident_core::checkpoint::Checkpoint;
use evident_core::event::Event;
use evident_core::{CompactRange, Hash, NoteVerifier};
use std::collections::{BTreeMap, BTreeSet};

/// One structured-data element: its SD-ID and parameters, values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(String, String)>,
}

impl SdElement {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An RFC 5424 message split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage<'a> {
    pub priority: u16,
    pub timestamp: &'a str,
    pub hostname: &'a str,
    pub app_name: &'a str,
    pub procid: &'a str,
    pub msgid: &'a str,
    pub structured_data: Vec<SdElement>,
    pub msg: &'a str,
}

/// Parses one RFC 5424 message (a line without its newline); `Err` says what is wrong.
pub fn parse_message(line: &str) -> Result<SyslogMessage<'_>, String> {
    let rest = line.strip_prefix('<').ok_or("does not start with <PRI>")?;
    let (pri, rest) = rest.split_once('>').ok_or("<PRI> is not closed")?;
    let priority: u16 = pri
        .parse()
        .map_err(|_| format!("PRI {pri:?} is not a number"))?;
    let rest = rest
        .strip_prefix("1 ")
        .ok_or("VERSION is not 1 (not an RFC 5424 message)")?;
    let mut fields = rest.splitn(6, ' ');
    let mut next = |what: &str| fields.next().ok_or_else(|| format!("{what} is missing"));
    let timestamp = next("TIMESTAMP")?;
    let hostname = next("HOSTNAME")?;
    let app_name = next("APP-NAME")?;
    let procid = next("PROCID")?;
    let msgid = next("MSGID")?;
    let rest = fields.next().unwrap_or("");
    let (structured_data, rest) = parse_structured_data(rest)?;
    let msg = rest.strip_prefix(' ').unwrap_or(rest);
    Ok(SyslogMessage {
        priority,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

/// Parses STRUCTURED-DATA (`-` or one or more `[ID name="value" …]`); returns the elements
/// and what follows them.
fn parse_structured_data(text: &str) -> Result<(Vec<SdElement>, &str), String> {
    if let Some(rest) = text.strip_prefix('-') {
        return Ok((Vec::new(), rest));
    }
    let mut elements = Vec::new();
    let mut rest = text;
    while let Some(inner) = rest.strip_prefix('[') {
        let id_end = inner
            .find([' ', ']'])
            .ok_or("an SD-ELEMENT is not closed")?;
        let id = &inner[..id_end];
        let mut params = Vec::new();
        let mut cursor = &inner[id_end..];
        loop {
            if let Some(after) = cursor.strip_prefix(']') {
                rest = after;
                break;
            }
            let after_space = cursor
                .strip_prefix(' ')
                .ok_or_else(|| format!("in [{id}: expected a space or ]"))?;
            let (name, after_name) = after_space
                .split_once("=\"")
                .ok_or_else(|| format!("in [{id}: a parameter without =\"value\""))?;
            let mut value = String::new();
            let mut chars = after_name.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped @ ('"' | '\\' | ']'))) => value.push(escaped),
                        // RFC 5424: a backslash before any other character is itself.
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => value.push('\\'),
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    other => value.push(other),
                }
            }
            let end = end.ok_or_else(|| format!("in [{id}: the value of {name} is not closed"))?;
            params.push((name.to_owned(), value));
            cursor = &after_name[end..];
        }
        elements.push(SdElement {
            id: id.to_owned(),
            params,
        });
    }
    if elements.is_empty() {
        return Err("STRUCTURED-DATA is neither - nor [..]".to_owned());
    }
    Ok((elements, rest))
}

/// A problem that makes the received messages fail verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line of the file, when one line is at fault.
    pub line: Option<u64>,
    pub node: String,
    pub message: String,
}

/// What is missing of one node: seqs `from..=to` (inclusive) were not received although a
/// later message's `prev` says an entry in that range, `to`, was forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// The verdict on one node's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: String,
    pub entries: u64,
    pub duplicates: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Entries whose hash was recomputed from their predecessor's (the chain link checked).
    pub chain_checked: u64,
    /// Entries with a truncated payload (coordinates kept, hash not recomputable).
    pub truncated: u64,
    pub checkpoints: u64,
    /// The largest verified checkpoint size.
    pub newest_checkpoint: Option<u64>,
    /// Checkpoint roots rebuilt from the received leaves and found equal.
    pub roots_checked: u64,
    /// Received entries at or beyond the newest checkpoint's size (not covered yet).
    pub uncovered: u64,
    pub gaps: Vec<Gap>,
}

/// The verdict on a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogReport {
    pub nodes: Vec<NodeReport>,
    pub findings: Vec<Finding>,
    /// Lines that are not Evident's messages (other programs' logs): skipped.
    pub other_lines: u64,
}

impl SyslogReport {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty() && self.nodes.iter().all(|n| n.gaps.is_empty())
    }
}

#[derive(Debug)]
struct ReceivedEntry {
    hash: Hash,
    seal: Hash,
    /// The payload's event, while its predecessor's hash is not known.
    event: Option<Event>,
    line: u64,
}

#[derive(Debug, Default)]
struct NodeLog {
    entries: BTreeMap<u64, ReceivedEntry>,
    /// Every `prev` stated.
    prevs: BTreeSet<u64>,
    /// Verified checkpoints: size → root.
    checkpoints: BTreeMap<u64, Hash>,
    duplicates: u64,
    chain_checked: u64,
    truncated: u64,
}

/// Takes lines one by one ([`Self::push_line`]), then judges them ([`Self::finish`]).
pub struct SyslogVerifier {
    verifiers: Vec<NoteVerifier>,
    nodes: BTreeMap<String, NodeLog>,
    findings: Vec<Finding>,
    other_lines: u64,
    lines: u64,
    buf: Vec<u8>,
}

fn hex_hash(value: Option<&str>, name: &str) -> Result<Hash, String> {
    let text = value.ok_or_else(|| format!("the {name} coordinate is missing"))?;
    Hash::from_hex(text).map_err(|_| format!("{name} {text:?} is not 64 hex digits"))
}

fn seq_param(value: Option<&str>, name: &str) -> Result<u64, String> {
    let text = value.ok_or_else(|| format!("the {name} coordinate is missing"))?;
    text.parse()
        .map_err(|_| format!("{name} {text:?} is not a sequence number"))
}

fn prev_param(value: Option<&str>) -> Result<Option<u64>, String> {
    match value {
        None => Err("the prev coordinate is missing".to_owned()),
        Some("-") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("prev {text:?} is not a sequence number")),
    }
}

impl SyslogVerifier {
    /// Checkpoint records are checked with `verifiers` (one per node whose log is expected).
    pub fn new(verifiers: Vec<NoteVerifier>) -> SyslogVerifier {
        SyslogVerifier {
            verifiers,
            nodes: BTreeMap::new(),
            findings: Vec::new(),
            other_lines: 0,
            lines: 0,
            buf: Vec::new(),
        }
    }

    fn finding(&mut self, line: u64, node: &str, message: String) {
        self.findings.push(Finding {
            line: Some(line),
            node: node.to_owned(),
            message,
        });
    }

    /// Takes the next line of the file (without its newline).
    pub fn push_line(&mut self, line: &str) {
        self.lines += 1;
        let n = self.lines;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Ok(message) = parse_message(line) else {
            self.other_lines += 1;
            return;
        };
        if message.app_name != APP_NAME {
            self.other_lines += 1;
            return;
        }
        if let Some(sd) = message.structured_data.iter().find(|e| e.id == ENTRY_SD_ID) {
            let node = sd.param("node").unwrap_or(message.hostname).to_owned();
            if let Err(problem) = self.push_entry(sd, message.msg, &node, n) {
                self.finding(n, &node, problem);
            }
        } else if let Some(sd) = message
            .structured_data
            .iter()
            .find(|e| e.id == CHECKPOINT_SD_ID)
        {
            let node = sd.param("node").unwrap_or(message.hostname).to_owned();
            if let Err(problem) = self.push_checkpoint(sd, message.msg, &node) {
                self.finding(n, &node, problem);
            }
        } else {
            self.other_lines += 1;
        }
    }

    fn push_entry(&mut self, sd: &SdElement, msg: &str, node: &str, n: u64) -> Result<(), String> {
        let seq = seq_param(sd.param("seq"), "seq")?;
        let hash = hex_hash(sd.param("hash"), "hash")?;
        let seal = hex_hash(sd.param("seal"), "seal")?;
        let leaf = seq_param(sd.param("leaf"), "leaf")?;
        if leaf != seq {
            return Err(format!("entry {seq}: leaf {leaf} is not its seq"));
        }
        let prev = prev_param(sd.param("prev"))?;
        if let Some(prev) = prev {
            if prev >= seq {
                return Err(format!("entry {seq}: prev {prev} is not before it"));
            }
        }
        let truncated = sd.param("truncated").is_some();
        // The payload's own coordinates (json format) must be the structured data's.
        let event = if !truncated && sd.param("format") == Some("json") {
            let value: serde_json::Value = serde_json::from_str(msg)
                .map_err(|e| format!("entry {seq}: the payload is not JSON ({e})"))?;
            let serde_json::Value::Object(mut obj) = value else {
                return Err(format!("entry {seq}: the payload is not a JSON object"));
            };
            let payload_hash = obj.remove("hash");
            let payload_seal = obj.remove("seal");
            if payload_hash.as_ref().and_then(|v| v.as_str()) != Some(hash.to_hex().as_str())
                || payload_seal.as_ref().and_then(|v| v.as_str()) != Some(seal.to_hex().as_str())
            {
                return Err(format!(
                    "entry {seq}: the payload's hash or seal differs from the structured data's"
                ));
            }
            let event = Event::from_json(&serde_json::Value::Object(obj))
                .map_err(|e| format!("entry {seq}: the payload's event: {e}"))?;
            if event.seq != seq || event.node_id != node {
                return Err(format!(
                    "entry {seq}: the payload is entry {} of node {:?}",
                    event.seq, event.node_id
                ));
            }
            Some(event)
        } else {
            None
        };
        if let Some(event) = &event {
            self.follow_rotation(event)?;
        }
        let log = self.nodes.entry(node.to_owned()).or_default();
        if truncated {
            log.truncated += 1;
        }
        if let Some(prev) = prev {
            log.prevs.insert(prev);
        }
        if let Some(known) = log.entries.get(&seq) {
            if known.hash != hash || known.seal != seal {
                return Err(format!(
                    "entry {seq} arrived twice with different hashes (lines {} and {n})",
                    known.line
                ));
            }
            log.duplicates += 1;
            return Ok(());
        }
        log.entries.insert(
            seq,
            ReceivedEntry {
                hash,
                seal,
                event,
                line: n,
            },
        );
        // Check this entry's chain link, and its successor's, as soon as both are known.
        for seq in [seq, seq + 1] {
            check_link(log, seq, &mut self.buf)?;
        }
        Ok(())
    }

    /// A signing-key rotation event (docs/FORMAT.md §18) must be signed by the old key it
    /// names; when that key is one given, the new key verifies checkpoint records from now on.
    fn follow_rotation(&mut self, event: &Event) -> Result<(), String> {
        let refused = |e: evident_core::rotation::RotationError| {
            format!("entry {}: signing-key rotation refused: {e}", event.seq)
        };
        let Some(rotation) =
            evident_core::rotation::SigningRotation::from_event(event).map_err(refused)?
        else {
            return Ok(());
        };
        rotation.check().map_err(refused)?;
        if self.verifiers.contains(&rotation.old) && !self.verifiers.contains(&rotation.new) {
            self.verifiers.push(rotation.new);
        }
        Ok(())
    }

    fn push_checkpoint(&mut self, sd: &SdElement, msg: &str, node: &str) -> Result<(), String> {
        let size = seq_param(sd.param("size"), "size")?;
        let prev = prev_param(sd.param("prev"))?;
        if sd.param("truncated").is_some() {
            return Err(format!(
                "checkpoint record of size {size} is truncated: raise the receiver's and the destination's max message size"
            ));
        }
        let value: serde_json::Value = serde_json::from_str(msg).map_err(|e| {
            format!("checkpoint record of size {size}: the payload is not JSON ({e})")
        })?;
        let note = value
            .get("checkpoint")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("checkpoint record of size {size}: no \"checkpoint\" note"))?;
        let mut opened = None;
        let mut last_error = "no public key was given".to_owned();
        for verifier in &self.verifiers {
            match Checkpoint::open(note, verifier) {
                Ok(checkpoint) => {
                    opened = Some(checkpoint);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let checkpoint = opened.ok_or_else(|| {
            format!("checkpoint record of size {size}: its signature does not verify with the given public key(s): {last_error}")
        })?;
        let root_text = sd.param("root").unwrap_or_default();
        if checkpoint.size != size
            || base64::engine::general_purpose::STANDARD.encode(checkpoint.root.0) != root_text
        {
            return Err(format!(
                "checkpoint record of size {size}: the structured data's size or root differs from the signed note's"
            ));
        }
        let log = self.nodes.entry(node.to_owned()).or_default();
        if let Some(prev) = prev {
            log.prevs.insert(prev);
        }
        if let Some(root) = log.checkpoints.get(&size) {
            if *root != checkpoint.root {
                return Err(format!(
                    "two signed checkpoints of size {size} with different roots: the log forked"
                ));
            }
        }
        log.checkpoints.insert(size, checkpoint.root);
        Ok(())
    }

    /// Judges everything pushed.
    pub fn finish(mut self) -> SyslogReport {
        let mut nodes = Vec::new();
        let node_names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in node_names {
            let Some(log) = self.nodes.remove(&name) else {
                continue;
            };
            let (report, findings) = judge(&name, log);
            self.findings.extend(findings);
            nodes.push(report);
        }
        SyslogReport {
            nodes,
            findings: self.findings,
            other_lines: self.other_lines,
        }
    }
}

/// Checks entry `seq`'s hash against its payload and its predecessor's hash when both are
/// known, then forgets the payload.
fn check_link(log: &mut NodeLog, seq: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    let prev_hash = if seq == 0 {
        GENESIS_PREV_HASH
    } else {
        match log.entries.get(&(seq - 1)) {
            Some(prev) => prev.hash,
            None => return Ok(()),
        }
    };
    let Some(entry) = log.entries.get_mut(&seq) else {
        return Ok(());
    };
    let Some(event) = entry.event.take() else {
        return Ok(());
    };
    let recomputed = recompute_hash(&prev_hash, &event, buf);
    if recomputed != entry.hash {
        return Err(format!(
            "entry {seq}: its hash is not SHA-256 of its predecessor's hash and its content (altered or reordered)"
        ));
    }
    log.chain_checked += 1;
    Ok(())
}

fn judge(name: &str, log: NodeLog) -> (NodeReport, Vec<Finding>) {
    let mut findings = Vec::new();
    // Gaps: every stated prev that did not arrive, widened down to the last received entry
    // before it.
    let received: BTreeSet<u64> = log.entries.keys().copied().collect();
    let mut gaps: Vec<Gap> = Vec::new();
    for &prev in &log.prevs {
        if received.contains(&prev) {
            continue;
        }
        let from = received.range(..prev).next_back().map_or(0, |s| s + 1);
        match gaps.last_mut() {
            Some(last) if last.from == from => last.to = last.to.max(prev),
            _ => gaps.push(Gap { from, to: prev }),
        }
    }
    // Roots: rebuild the tree from the received leaves while they are dense from seq 0.
    let mut roots_checked = 0;
    if log.entries.contains_key(&0) {
        let mut tree = CompactRange::new();
        let mut completed = Vec::new();
        let mut sizes = log.checkpoints.iter().peekable();
        for (expected, (&seq, entry)) in (0u64..).zip(log.entries.iter()) {
            if seq != expected {
                break;
            }
            while let Some(&(&size, root)) = sizes.peek() {
                if size > tree.size() {
                    break;
                }
                if size == tree.size() {
                    if tree.root() != *root {
                        findings.push(Finding {
                            line: None,
                            node: name.to_owned(),
                            message: format!(
                                "the signed checkpoint of size {size} does not match the entries received (its root differs)"
                            ),
                        });
                    } else {
                        roots_checked += 1;
                    }
                }
                sizes.next();
            }
            completed.clear();
            tree.append_leaf(
                evident_core::merkle::entry_leaf_hash(&entry.hash, &entry.seal),
                &mut completed,
            );
        }
        if let Some(&(&size, root)) = sizes.peek() {
            if size == tree.size() {
                if tree.root() != *root {
                    findings.push(Finding {
                        line: None,
                        node: name.to_owned(),
                        message: format!(
                            "the signed checkpoint of size {size} does not match the entries received (its root differs)"
                        ),
                    });
                } else {
                    roots_checked += 1;
                }
            }
        }
    }
    let newest_checkpoint = log.checkpoints.keys().next_back().copied();
    let uncovered = match newest_checkpoint {
        Some(size) => log.entries.range(size..).count() as u64,
        None => log.entries.len() as u64,
    };
    let report = NodeReport {
        node: name.to_owned(),
        entries: log.entries.len() as u64,
        duplicates: log.duplicates,
        first_seq: log.entries.keys().next().copied(),
        last_seq: log.entries.keys().next_back().copied(),
        chain_checked: log.chain_checked,
        truncated: log.truncated,
        checkpoints: log.checkpoints.len() as u64,
        newest_checkpoint,
        roots_checked,
        uncovered,
        gaps,
    };
    (report, findings)
}
