//! C2SP tlog-cosignature (`cosignature/v1`, Ed25519) and the pure half of C2SP tlog-witness:
//! cosigner keys and key IDs (type byte 0x04), signing and verifying timestamped cosignatures
//! on checkpoints, the `add-checkpoint` request body, and the witness's accept/refuse decision.
//!
//! No I/O: the caller passes the clock (`timestamp`) and the witness's stored state.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::hash::Hash;
use crate::merkle::{self, MerkleError};
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// The C2SP signature type byte for Ed25519 `cosignature/v1`.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The most consistency proof lines an `add-checkpoint` body may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// The `Content-Type` of a 409 answer carrying the witness's known tree size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

const HEADER_LINE: &str = "cosignature/v1\n";
const SIG_PREFIX: &str = "\u{2014} ";
/// Domain separation for deriving a node's cosigner key from its checkpoint key.
const DERIVE_LABEL: &[u8] = b"evident cosigner key v1\n";

/// Errors from cosigner keys and cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    #[error("malformed cosigner key: {0}")]
    MalformedKey(String),
    #[error("invalid cosigner name {0:?}")]
    BadKeyName(String),
    #[error("cosignature timestamp {0} exceeds 2^63 - 1")]
    TimestampTooLarge(u64),
    #[error("cosignature by {name} does not verify")]
    BadCosignature { name: String },
    #[error("note: {0}")]
    Note(#[from] NoteError),
}

/// The cosignature/v1 key ID: SHA-256(name ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[:4].
pub fn cosigner_key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_COSIGNATURE_V1]);
    h.update(public_key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The message a cosigner signs: `cosignature/v1\ntime <secs>\n` then the checkpoint body.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("{HEADER_LINE}time {timestamp}\n{checkpoint_text}")
}

fn check_name(name: &str) -> Result<(), CosignatureError> {
    if note::is_valid_key_name(name) {
        Ok(())
    } else {
        Err(CosignatureError::BadKeyName(name.to_owned()))
    }
}

/// A witness's cosigning key (Ed25519, cosignature/v1) with its name.
#[derive(Clone)]
pub struct CosignatureSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

// The seed stays out of debug output.
impl fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosignatureSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl CosignatureSigner {
    /// A cosigner `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<CosignatureSigner, CosignatureError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(CosignatureSigner {
            name: name.to_owned(),
            key_id: cosigner_key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// The node's cosigner key, derived from its checkpoint key as
    /// SHA-256("evident cosigner key v1\n" ‖ seed): a distinct Ed25519 key (the spec asks that
    /// a cosigner key is used for nothing else), with no second secret to store or back up.
    /// Its name is the node's key name with `/witness` appended.
    pub fn derived_from(node: &NoteSigner) -> Result<CosignatureSigner, CosignatureError> {
        let mut h = Sha256::new();
        h.update(DERIVE_LABEL);
        h.update(node.seed());
        let seed: [u8; 32] = h.finalize().into();
        CosignatureSigner::from_seed(&format!("{}/witness", node.name()), seed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The signature line `— <name> base64(key id ‖ u64 timestamp ‖ signature)\n` cosigning
    /// the checkpoint body `checkpoint_text` (ending in a newline) at `timestamp`.
    pub fn cosign_text(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<String, CosignatureError> {
        if timestamp > i64::MAX as u64 {
            return Err(CosignatureError::TimestampTooLarge(timestamp));
        }
        if !checkpoint_text.ends_with('\n') {
            return Err(NoteError::Malformed("text must end with a newline".into()).into());
        }
        let signature = self
            .key
            .sign(signed_message(checkpoint_text, timestamp).as_bytes());
        let mut bytes = Vec::with_capacity(4 + 8 + 64);
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(bytes)
        ))
    }

    /// The cosignature line for a signed checkpoint note (its text, not its signatures).
    pub fn cosign_note(&self, note: &str, timestamp: u64) -> Result<String, CosignatureError> {
        let (text, _) = note::split_signatures(note)?;
        self.cosign_text(text, timestamp)
    }
}

/// A cosigner's public key: verifies its cosignature/v1 lines, ignores every other line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

/// A cosignature that verified: who and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCosignature {
    pub name: String,
    pub timestamp: u64,
}

impl CosignatureVerifier {
    /// Parses a vkey `<name>+<key id hex>+base64(0x04 ‖ 32-byte public key)`.
    pub fn parse(vkey: &str) -> Result<CosignatureVerifier, CosignatureError> {
        let bad = |why: &str| CosignatureError::MalformedKey(why.to_owned());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        check_name(name)?;
        if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("key ID is not 8 lowercase hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("key ID is not hex"))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| bad("key is not valid base64"))?;
        let raw: [u8; 32] = match bytes.split_first() {
            Some((&ALG_COSIGNATURE_V1, k)) => k
                .try_into()
                .map_err(|_| bad("an Ed25519 key has 32 bytes"))?,
            Some(_) => return Err(bad("signature type is not 0x04 (cosignature/v1)")),
            None => return Err(bad("empty key")),
        };
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(bad("weak Ed25519 public key"));
        }
        if cosigner_key_id(name, &key) != id {
            return Err(bad("key ID does not match the key"));
        }
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            key_id: id,
            key,
        })
    }

    pub fn to_vkey_string(&self) -> String {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(ALG_COSIGNATURE_V1);
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(bytes))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// This cosigner's cosignature in `note`: `Ok(None)` when it has none, an error when a
    /// line under its name and key ID does not verify, else the verified timestamp (the
    /// latest, if it cosigned more than once).
    pub fn verify(&self, note: &str) -> Result<Option<u64>, CosignatureError> {
        let (text, signatures) = note::split_signatures(note)?;
        let mut found = None;
        for (name, key_id, sig) in signatures {
            if name != self.name || key_id != self.key_id {
                continue;
            }
            let timestamp = self.verify_signature(text, &sig).ok_or_else(|| {
                CosignatureError::BadCosignature {
                    name: self.name.clone(),
                }
            })?;
            found = Some(found.map_or(timestamp, |t: u64| t.max(timestamp)));
        }
        Ok(found)
    }

    /// The timestamp of `sig` (u64 ‖ Ed25519 signature) if it verifies over `text`.
    fn verify_signature(&self, text: &str, sig: &[u8]) -> Option<u64> {
        let (ts, signature) = sig.split_first_chunk::<8>()?;
        let signature: [u8; 64] = signature.try_into().ok()?;
        let timestamp = u64::from_be_bytes(*ts);
        if timestamp > i64::MAX as u64 {
            return None;
        }
        self.key
            .verify_strict(
                signed_message(text, timestamp).as_bytes(),
                &Signature::from_bytes(&signature),
            )
            .ok()?;
        Some(timestamp)
    }
}

/// The cosigners among `verifiers` whose cosignature in `note` verifies (each counted once,
/// by name). A line by a known cosigner that does not verify is an error, like `note::open`.
pub fn verified_cosignatures(
    note: &str,
    verifiers: &[CosignatureVerifier],
) -> Result<Vec<VerifiedCosignature>, CosignatureError> {
    let mut out: Vec<VerifiedCosignature> = Vec::new();
    for v in verifiers {
        if out.iter().any(|c| c.name == v.name) {
            continue;
        }
        if let Some(timestamp) = v.verify(note)? {
            out.push(VerifiedCosignature {
                name: v.name.clone(),
                timestamp,
            });
        }
    }
    Ok(out)
}

/// Errors in an `add-checkpoint` request body (all 400 Bad Request in tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("add-checkpoint body: {0}")]
    Malformed(String),
}

fn malformed(why: &str) -> RequestError {
    RequestError::Malformed(why.to_owned())
}

/// An `add-checkpoint` request: `old <size>\n`, proof hashes one base64 per line, an empty
/// line, then the signed checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent (it may carry several signatures).
    pub checkpoint: String,
}

/// An ASCII decimal without sign or leading zeros ("0" itself allowed).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl AddCheckpointRequest {
    pub fn parse(body: &str) -> Result<AddCheckpointRequest, RequestError> {
        let (first, mut rest) = body
            .split_once('\n')
            .ok_or_else(|| malformed("no old size line"))?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or_else(|| malformed("first line must be `old <size>` in canonical decimal"))?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or_else(|| malformed("no empty line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(malformed("more than 63 consistency proof lines"));
            }
            let bytes = BASE64
                .decode(line)
                .map_err(|_| malformed("proof line is not base64"))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| malformed("proof line is not a 32-byte hash"))?;
            proof.push(Hash(hash));
        }
        if old_size == 0 && !proof.is_empty() {
            return Err(malformed("the proof must be empty when the old size is 0"));
        }
        if rest.is_empty() {
            return Err(malformed("no checkpoint"));
        }
        Ok(AddCheckpointRequest {
            old_size,
            proof,
            checkpoint: rest.to_owned(),
        })
    }

    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for h in &self.proof {
            body.push_str(&BASE64.encode(h.as_bytes()));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.checkpoint);
        body
    }
}

/// The body of a 409 answer: the known size in decimal and a newline.
pub fn size_body(size: u64) -> String {
    format!("{size}\n")
}

/// Parses a 409 answer body (`text/x.tlog.size`).
pub fn parse_size_body(body: &str) -> Option<u64> {
    body.strip_suffix('\n').and_then(parse_decimal)
}

/// What the witness knows of a log: its latest cosigned checkpoint's size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessedHead {
    pub size: u64,
    pub root: Hash,
}

/// Why a witness refuses an `add-checkpoint` (tlog-witness status in brackets; the mapping is
/// the HTTP layer's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// [403] No signature by the log's trusted key verifies (or a trusted one is bad).
    #[error("checkpoint signature: {0}")]
    Unsigned(CheckpointError),
    /// [400] The old size exceeds the checkpoint's size.
    #[error("old size {old} exceeds the checkpoint size {size}")]
    OldSizeTooLarge { old: u64, size: u64 },
    /// [409] The old size is not the size the witness last cosigned: a client out of date,
    /// or (when the checkpoint is smaller than what the witness knows) a rollback.
    #[error("old size {old} is not the witnessed size {known}")]
    SizeMismatch { old: u64, known: u64 },
    /// [409] Same size as the witnessed checkpoint but another root hash: a fork.
    #[error("checkpoint of size {known} has a different root than the witnessed one")]
    Fork { known: u64 },
    /// [422] The consistency proof from the witnessed checkpoint does not verify: a fork.
    #[error("consistency proof from size {old} does not verify: {source}")]
    Inconsistent { old: u64, source: MerkleError },
}

impl Refusal {
    /// The size to name in a 409 answer, for the refusals that carry one.
    pub fn known_size(&self) -> Option<u64> {
        match self {
            Refusal::SizeMismatch { known, .. } | Refusal::Fork { known } => Some(*known),
            _ => None,
        }
    }

    /// Whether this refusal is evidence of log misbehaviour (fork or rollback), rather than a
    /// client that is behind or a malformed request.
    pub fn is_misbehaviour(&self, checkpoint_size: Option<u64>) -> bool {
        match self {
            Refusal::Fork { .. } | Refusal::Inconsistent { .. } => true,
            Refusal::SizeMismatch { known, .. } => checkpoint_size.is_some_and(|s| s < *known),
            _ => false,
        }
    }
}

/// The witness decision of tlog-witness for `request` from the log whose trusted keys are
/// `log_keys` (its configured key and every key a verified signing-key rotation from a
/// trusted key named, docs/FORMAT.md §18: at least one of them must have signed, and every
/// one that signed must verify), given the `witnessed` head (None if never cosigned): the
/// checkpoint to record and cosign, or why not. The caller must run this and the update of
/// its record atomically.
pub fn check_add_checkpoint(
    request: &AddCheckpointRequest,
    log_keys: &[NoteVerifier],
    witnessed: Option<WitnessedHead>,
) -> Result<Checkpoint, Refusal> {
    let checkpoint =
        Checkpoint::open_any(&request.checkpoint, log_keys).map_err(Refusal::Unsigned)?;
    if request.old_size > checkpoint.size {
        return Err(Refusal::OldSizeTooLarge {
            old: request.old_size,
            size: checkpoint.size,
        });
    }
    let known = witnessed.map_or(0, |w| w.size);
    if request.old_size != known {
        return Err(Refusal::SizeMismatch {
            old: request.old_size,
            known,
        });
    }
    let Some(head) = witnessed.filter(|w| w.size > 0) else {
        return Ok(checkpoint);
    };
    if head.size == checkpoint.size {
        return if head.root == checkpoint.root {
            Ok(checkpoint)
        } else {
            Err(Refusal::Fork { known })
        };
    }
    merkle::verify_consistency(
        head.size,
        &head.root,
        checkpoint.size,
        &checkpoint.root,
        &request.proof,
    )
    .map_err(|source| Refusal::Inconsistent {
        old: head.size,
        source,
    })?;
    Ok(checkpoint)
}

/// Whether `note` carries a signature line under the name `origin` by a key none of
/// `trusted` is (the key IDs differ): a key the log may have rotated to, which a witness
/// can learn from the log's rotation events before it checks the note again. Nothing is
/// verified; a note that does not parse has no such line.
pub fn signed_by_untrusted_key(note: &str, origin: &str, trusted: &[NoteVerifier]) -> bool {
    note::signers(note).is_ok_and(|signers| {
        signers.iter().any(|(name, id)| {
            name == origin
                && !trusted
                    .iter()
                    .any(|k| k.name() == origin && k.key_id() == *id)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{CompactRange, leaf_hash};

    /// The example checkpoint of C2SP tlog-cosignature and its witness.example.com/w1 line.
    const SPEC_TEXT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    const SPEC_COSIG: &str = "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";

    fn log() -> NoteSigner {
        NoteSigner::from_seed("log.example", [7; 32]).unwrap()
    }

    fn witness() -> CosignatureSigner {
        CosignatureSigner::from_seed("witness.example/w1", [9; 32]).unwrap()
    }

    #[test]
    fn spec_example_line_decodes_to_the_spec_timestamp() {
        // The spec's example message uses `time 1679315147`; its example line carries it.
        let bytes = BASE64.decode(SPEC_COSIG).unwrap();
        assert_eq!(bytes.len(), 4 + 8 + 64);
        assert_eq!(
            u64::from_be_bytes(bytes[4..12].try_into().unwrap()),
            1679315147
        );
        assert_eq!(
            signed_message(SPEC_TEXT, 1679315147),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
    }

    #[test]
    fn cosignature_verifies_independently_of_this_module() {
        let w = witness();
        let line = w.cosign_text(SPEC_TEXT, 1679315147).unwrap();
        let b64 = line
            .strip_prefix("\u{2014} witness.example/w1 ")
            .and_then(|l| l.strip_suffix('\n'))
            .unwrap();
        let bytes = BASE64.decode(b64).unwrap();
        // Key ID by hand: SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4].
        let pk = SigningKey::from_bytes(&[9; 32]).verifying_key();
        let mut pre = b"witness.example/w1\n\x04".to_vec();
        pre.extend_from_slice(pk.as_bytes());
        assert_eq!(bytes[..4], Sha256::digest(&pre)[..4]);
        assert_eq!(bytes[4..12], 1679315147u64.to_be_bytes());
        let sig = Signature::from_bytes(&bytes[12..].try_into().unwrap());
        let msg = format!("cosignature/v1\ntime 1679315147\n{SPEC_TEXT}");
        pk.verify_strict(msg.as_bytes(), &sig).unwrap();
    }

    #[test]
    fn vkey_round_trips_and_refuses_note_keys() {
        let v = witness().verifier();
        let s = v.to_vkey_string();
        assert_eq!(CosignatureVerifier::parse(&s).unwrap(), v);
        // A checkpoint (0x01) key is not a cosigner key.
        let node_vkey = log().verifier().to_vkey_string();
        assert!(matches!(
            CosignatureVerifier::parse(&node_vkey),
            Err(CosignatureError::MalformedKey(_))
        ));
        let wrong_id = format!(
            "witness.example/w1+00000000+{}",
            s.rsplit('+').next().unwrap()
        );
        assert!(CosignatureVerifier::parse(&wrong_id).is_err());
    }

    #[test]
    fn cosigned_note_verifies_and_old_verifiers_ignore_the_cosignature() {
        let cp = Checkpoint {
            origin: "log.example".into(),
            size: 3,
            root: Hash([1; 32]),
            extensions: vec![],
        };
        let note = cp.sign(&log()).unwrap();
        let w = witness();
        let cosigned = format!("{note}{}", w.cosign_note(&note, 1_700_000_000).unwrap());
        // The log's own verifier still opens it (unknown signature ignored).
        assert_eq!(Checkpoint::open(&cosigned, &log().verifier()).unwrap(), cp);
        let found = verified_cosignatures(&cosigned, &[w.verifier()]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].timestamp, 1_700_000_000);
        // Not there without the line; a tampered timestamp is refused.
        assert!(
            verified_cosignatures(&note, &[w.verifier()])
                .unwrap()
                .is_empty()
        );
        let other = w.cosign_note(&note, 1_700_000_001).unwrap();
        let mut bytes = BASE64
            .decode(other.rsplit(' ').next().unwrap().trim())
            .unwrap();
        bytes[11] ^= 1;
        let forged = format!(
            "{note}\u{2014} witness.example/w1 {}\n",
            BASE64.encode(bytes)
        );
        assert!(matches!(
            verified_cosignatures(&forged, &[w.verifier()]),
            Err(CosignatureError::BadCosignature { .. })
        ));
        assert!(w.cosign_text("x\n", 1 << 63).is_err());
    }

    #[test]
    fn derived_cosigner_key_is_distinct_and_stable() {
        let a = CosignatureSigner::derived_from(&log()).unwrap();
        let b = CosignatureSigner::derived_from(&log()).unwrap();
        assert_eq!(a.verifier(), b.verifier());
        assert_eq!(a.name(), "log.example/witness");
        assert_ne!(
            a.verifier().key.to_bytes(),
            log().verifier().public_key_bytes()
        );
    }

    #[test]
    fn request_body_parses_the_spec_example_and_round_trips() {
        let body = "old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let req = AddCheckpointRequest::parse(body).unwrap();
        assert_eq!(req.old_size, 20852014);
        assert_eq!(req.proof.len(), 4);
        assert!(req.checkpoint.starts_with("example.com/behind-the-sofa\n"));
        assert_eq!(req.to_body(), body);
        for bad in [
            "old 01\n\nx\n",
            "old -1\n\nx\n",
            "new 1\n\nx\n",
            "old 1\nnot-base64!\n\nx\n",
            "old 1\nAAAA\n\nx\n",
            "old 1\n\n",
            "old 0\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\nx\n",
            "old 1\n",
        ] {
            assert!(AddCheckpointRequest::parse(bad).is_err(), "{bad:?}");
        }
        let many = format!(
            "old 1\n{}\nx\n",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64)
        );
        assert!(AddCheckpointRequest::parse(&many).is_err());
        assert_eq!(parse_size_body(&size_body(42)), Some(42));
        assert_eq!(parse_size_body("042\n"), None);
    }

    /// Signed checkpoints of a log of `n` leaves with leaf data from `tag`.
    fn head(n: u64, tag: u8) -> (String, Hash) {
        let mut range = CompactRange::new();
        let mut done = Vec::new();
        for i in 0..n {
            range.append_leaf(leaf_hash(&[tag, i as u8]), &mut done);
        }
        let cp = Checkpoint {
            origin: "log.example".into(),
            size: n,
            root: range.root(),
            extensions: vec![],
        };
        (cp.sign(&log()).unwrap(), cp.root)
    }

    #[test]
    fn witness_decision_follows_tlog_witness() {
        let key = [log().verifier()];
        let (note1, root1) = head(1, 0);
        let (note2, _) = head(2, 0);
        let req = |old, proof: Vec<Hash>, cp: &str| AddCheckpointRequest {
            old_size: old,
            proof,
            checkpoint: cp.to_owned(),
        };
        // First sight: old 0, no proof.
        assert_eq!(
            check_add_checkpoint(&req(0, vec![], &note1), &key, None)
                .unwrap()
                .size,
            1
        );
        let w1 = Some(WitnessedHead {
            size: 1,
            root: root1,
        });
        // Growing from 1 to 2: the proof is leaf 1's hash.
        let proof = vec![leaf_hash(&[0, 1])];
        assert_eq!(
            check_add_checkpoint(&req(1, proof.clone(), &note2), &key, w1)
                .unwrap()
                .size,
            2
        );
        // Stale client: 409 naming the known size.
        let stale = check_add_checkpoint(&req(0, vec![], &note2), &key, w1).unwrap_err();
        assert_eq!(stale.known_size(), Some(1));
        // A different history of size 2 does not verify from the witnessed size 1.
        let (fork2, _) = head(2, 5);
        let fork = check_add_checkpoint(&req(1, proof, &fork2), &key, w1).unwrap_err();
        assert!(matches!(fork, Refusal::Inconsistent { .. }));
        assert!(fork.is_misbehaviour(Some(2)));
        // Same size, other root: 409 fork.
        let (fork1, _) = head(1, 5);
        let same = check_add_checkpoint(&req(1, vec![], &fork1), &key, w1).unwrap_err();
        assert_eq!(same, Refusal::Fork { known: 1 });
        // Rollback: a smaller checkpoint is a size mismatch and misbehaviour.
        let w2 = Some(WitnessedHead {
            size: 2,
            root: Hash([0; 32]),
        });
        let back = check_add_checkpoint(&req(1, vec![], &note1), &key, w2).unwrap_err();
        assert_eq!(back.known_size(), Some(2));
        assert!(back.is_misbehaviour(Some(1)));
        // Old size above the checkpoint; unsigned by the trusted key.
        let big = check_add_checkpoint(&req(5, vec![], &note1), &key, None).unwrap_err();
        assert!(matches!(big, Refusal::OldSizeTooLarge { .. }));
        let stranger = [NoteSigner::from_seed("log.example", [8; 32])
            .unwrap()
            .verifier()];
        let unsigned = check_add_checkpoint(&req(0, vec![], &note1), &stranger, None).unwrap_err();
        assert!(matches!(unsigned, Refusal::Unsigned(_)));
        // The stranger's key is one the log may have rotated to; the log's own is trusted.
        assert!(signed_by_untrusted_key(&note1, "log.example", &stranger));
        assert!(!signed_by_untrusted_key(&note1, "log.example", &key));
        assert!(!signed_by_untrusted_key(&note1, "other.example", &stranger));
        assert!(!signed_by_untrusted_key(
            "not a note",
            "log.example",
            &stranger
        ));
    }

    #[test]
    fn witness_decision_accepts_any_trusted_key_of_the_log() {
        // After a rotation the log signs with its new key alone; a witness trusting the old
        // and the new key cosigns, one trusting only the old key refuses (403).
        let old = log();
        let new = NoteSigner::from_seed("log.example", [8; 32]).unwrap();
        let cp = Checkpoint {
            origin: "log.example".into(),
            size: 1,
            root: leaf_hash(&[0, 0]),
            extensions: vec![],
        };
        let by_new = AddCheckpointRequest {
            old_size: 0,
            proof: vec![],
            checkpoint: cp.sign(&new).unwrap(),
        };
        let both = [old.verifier(), new.verifier()];
        assert_eq!(check_add_checkpoint(&by_new, &both, None), Ok(cp.clone()));
        assert!(matches!(
            check_add_checkpoint(&by_new, &[old.verifier()], None),
            Err(Refusal::Unsigned(_))
        ));
        assert!(matches!(
            check_add_checkpoint(&by_new, &[], None),
            Err(Refusal::Unsigned(_))
        ));
        // During a transition both sign; either key alone suffices.
        let during = AddCheckpointRequest {
            checkpoint: cp.sign_all(&[old.clone(), new.clone()]).unwrap(),
            ..by_new
        };
        assert!(check_add_checkpoint(&during, &[old.verifier()], None).is_ok());
        assert!(check_add_checkpoint(&during, &both, None).is_ok());
    }
}
