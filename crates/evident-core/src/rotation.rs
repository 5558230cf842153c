//! Key rotation, pure: the signing-key rotation statement a node's old key signs, the
//! [`KeyChain`] a verifier pinned to an old key follows to trust the keys it rotated to, and the
//! seal-key epochs ([`SealEpochs`]) a walk checks each entry's seal with (docs/FORMAT.md §18).
//!
//! Both rotations are ordinary log entries with reserved actions, so every entry ever written
//! keeps its bytes, hash and seal; the node refuses those actions from clients.

use crate::chain::SealKey;
use crate::event::{Event, Millis};
use crate::hash::Hash;
use crate::note::{self, NoteSigner, NoteVerifier};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The reserved action of a signing-key rotation event.
pub const SIGNING_ROTATION_ACTION: &str = "evident.signing_key.rotated";
/// The reserved action of a seal-key rotation event.
pub const SEAL_ROTATION_ACTION: &str = "evident.seal.rotated";
/// First line of the rotation statement (and the `statement` member of the event's context).
pub const ROTATION_STATEMENT: &str = "evident-key-rotation/v1";
/// The message whose HMAC under a seal secret names that secret (its key id).
const SEAL_KEY_ID_LABEL: &str = "evident-seal-key-id/v1";
/// The actions only the node itself may write.
pub const RESERVED_ACTION_PREFIX: &str = "evident.";

/// Why a rotation event is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("malformed rotation event: {0}")]
    Malformed(String),
    #[error("the rotation statement is not signed by the old key {old_key} it names: {problem}")]
    NotSignedByOldKey { old_key: String, problem: String },
    #[error("bad seal-key rotation: {0}")]
    Seal(String),
}

fn malformed(why: impl Into<String>) -> RotationError {
    RotationError::Malformed(why.into())
}

/// The exact bytes the old key signs (docs/FORMAT.md §18): five lines, each ending in `\n`.
pub fn rotation_statement(
    origin: &str,
    old: &NoteVerifier,
    new: &NoteVerifier,
    seq: u64,
) -> String {
    format!(
        "{ROTATION_STATEMENT}\n{origin}\nold {}\nnew {}\nseq {seq}\n",
        old.to_vkey_string(),
        new.to_vkey_string()
    )
}

/// A signing-key rotation as its event records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRotation {
    pub origin: String,
    pub old: NoteVerifier,
    pub new: NoteVerifier,
    /// The rotation event's own sequence number.
    pub seq: u64,
    /// Until when (exclusive) the old key still signs beside the new one.
    pub transition_ends_at: Millis,
    /// The old key's C2SP signature over the statement: base64(key id ‖ Ed25519 signature).
    pub signature: String,
}

impl SigningRotation {
    /// The rotation from `old` (the node's current key) to `new`, for the entry `seq`.
    pub fn sign(
        old: &NoteSigner,
        new: &NoteVerifier,
        seq: u64,
        transition_ends_at: Millis,
    ) -> Result<SigningRotation, RotationError> {
        let origin = old.name().to_owned();
        if new.name() != origin {
            return Err(malformed(format!(
                "the new key is named {:?}, the old one {origin:?}: a key keeps the log's origin",
                new.name()
            )));
        }
        if new.key_id() == old.key_id() {
            return Err(malformed("the new key has the old key's id"));
        }
        let statement = rotation_statement(&origin, &old.verifier(), new, seq);
        let signed = old
            .sign(&statement)
            .map_err(|e| malformed(format!("cannot sign the statement: {e}")))?;
        let signature = signed
            .rsplit_once(' ')
            .map(|(_, sig)| sig.trim_end().to_owned())
            .ok_or_else(|| malformed("signed note without a signature"))?;
        Ok(SigningRotation {
            origin,
            old: old.verifier(),
            new: new.clone(),
            seq,
            transition_ends_at,
            signature,
        })
    }

    /// The context of the rotation event.
    pub fn to_context(&self) -> Value {
        json!({
            "statement": ROTATION_STATEMENT,
            "origin": self.origin,
            "old_key": self.old.to_vkey_string(),
            "new_key": self.new.to_vkey_string(),
            "transition_ends_at": self.transition_ends_at,
            "signature": self.signature,
        })
    }

    /// The rotation `event` records, if it is a signing-key rotation event (`None` for any
    /// other action); its form is checked, its signature is not ([`Self::check`]).
    pub fn from_event(event: &Event) -> Result<Option<SigningRotation>, RotationError> {
        if event.action != SIGNING_ROTATION_ACTION {
            return Ok(None);
        }
        let context: Value = serde_json::from_str(event.context.as_str())
            .map_err(|e| malformed(format!("context: {e}")))?;
        let obj = context
            .as_object()
            .ok_or_else(|| malformed("context is not an object"))?;
        let text = |name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(format!("context.{name}: expected a string")))
        };
        const MEMBERS: [&str; 6] = [
            "new_key",
            "old_key",
            "origin",
            "signature",
            "statement",
            "transition_ends_at",
        ];
        if let Some(extra) = obj.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(malformed(format!(
                "context.{extra}: not a member of a rotation"
            )));
        }
        if text("statement")? != ROTATION_STATEMENT {
            return Err(malformed(format!(
                "context.statement: expected {ROTATION_STATEMENT:?}"
            )));
        }
        let key = |name: &str| {
            NoteVerifier::parse(text(name)?).map_err(|e| malformed(format!("context.{name}: {e}")))
        };
        let old = key("old_key")?;
        let new = key("new_key")?;
        let origin = text("origin")?.to_owned();
        if old.name() != origin || new.name() != origin {
            return Err(malformed(
                "the old and new keys must both be named for the origin",
            ));
        }
        if old.key_id() == new.key_id() {
            return Err(malformed("the new key has the old key's id"));
        }
        let transition_ends_at = obj
            .get("transition_ends_at")
            .and_then(Value::as_i64)
            .ok_or_else(|| malformed("context.transition_ends_at: expected an integer"))?;
        Ok(Some(SigningRotation {
            origin,
            old,
            new,
            seq: event.seq,
            transition_ends_at,
            signature: text("signature")?.to_owned(),
        }))
    }

    /// Checks the old key's signature over the statement for this event's sequence number.
    pub fn check(&self) -> Result<(), RotationError> {
        let statement = rotation_statement(&self.origin, &self.old, &self.new, self.seq);
        let note = format!(
            "{statement}\n\u{2014} {} {}\n",
            self.old.name(),
            self.signature
        );
        note::open(&note, std::slice::from_ref(&self.old))
            .map(|_| ())
            .map_err(|e| RotationError::NotSignedByOldKey {
                old_key: format!("{}+{:08x}", self.old.name(), self.old.key_id()),
                problem: e.to_string(),
            })
    }
}

/// The signing keys a verifier trusts: the one it was given (pinned) and every key a verified
/// rotation from a trusted key named, in the order learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChain {
    trusted: Vec<NoteVerifier>,
}

impl KeyChain {
    pub fn new(pinned: NoteVerifier) -> KeyChain {
        KeyChain {
            trusted: vec![pinned],
        }
    }

    /// Every trusted key, the pinned one first.
    pub fn trusted(&self) -> &[NoteVerifier] {
        &self.trusted
    }

    /// The pinned key.
    pub fn pinned(&self) -> &NoteVerifier {
        &self.trusted[0]
    }

    fn trusts(&self, key: &NoteVerifier) -> bool {
        self.trusted.iter().any(|k| k == key)
    }

    /// Follows `event` if it is a signing-key rotation: it must be well formed and signed by
    /// the old key it names (else the error); when that old key is trusted, the new key is
    /// trusted from now on and returned. A valid rotation from a key this chain does not
    /// trust (a verifier pinned to a later key reading an earlier rotation) teaches nothing.
    pub fn follow(&mut self, event: &Event) -> Result<Option<NoteVerifier>, RotationError> {
        let Some(rotation) = SigningRotation::from_event(event)? else {
            return Ok(None);
        };
        self.follow_rotation(&rotation)
    }

    /// [`Self::follow`] for a rotation already read from its event: it must be signed by the
    /// old key it names (else the error); when it names the pinned key's origin and its old
    /// key is trusted, the new key is trusted from now on and returned. A statement signed by
    /// a key this chain does not trust (a forged rotation: anyone can sign one with a key of
    /// their own) teaches nothing.
    pub fn follow_rotation(
        &mut self,
        rotation: &SigningRotation,
    ) -> Result<Option<NoteVerifier>, RotationError> {
        rotation.check()?;
        if rotation.origin != self.pinned().name()
            || !self.trusts(&rotation.old)
            || self.trusts(&rotation.new)
        {
            return Ok(None);
        }
        self.trusted.push(rotation.new.clone());
        Ok(Some(rotation.new.clone()))
    }

    /// Follows every rotation of `events` (read from the log itself, e.g. its
    /// `evident.key.rotated` events as a peer serves them), in any order: each pass follows
    /// what the keys trusted so far allow, until a pass learns nothing. Returns the keys
    /// learned, in order, and the events that are not valid rotations (malformed, or not
    /// signed by the old key they name) with why; those teach nothing.
    pub fn follow_all(&mut self, events: &[Event]) -> FollowReport {
        let mut report = FollowReport::default();
        let mut pending: Vec<SigningRotation> = Vec::new();
        for event in events {
            match SigningRotation::from_event(event) {
                Ok(Some(rotation)) => match rotation.check() {
                    Ok(()) => pending.push(rotation),
                    Err(e) => report.refused.push((event.seq, e)),
                },
                Ok(None) => {}
                Err(e) => report.refused.push((event.seq, e)),
            }
        }
        loop {
            let before = report.learned.len();
            pending.retain(|rotation| match self.follow_rotation(rotation) {
                Ok(Some(key)) => {
                    report.learned.push(key);
                    false
                }
                // Checked above; `None`: not (yet) from a trusted key.
                Ok(None) | Err(_) => true,
            });
            if report.learned.len() == before {
                return report;
            }
        }
    }
}

/// What [`KeyChain::follow_all`] did with a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowReport {
    /// The keys trusted from now on, in the order learned.
    pub learned: Vec<NoteVerifier>,
    /// The sequence number of each event that is no valid rotation, and why.
    pub refused: Vec<(u64, RotationError)>,
}

/// The id a seal secret is named by in rotation events: the first 8 bytes, in lowercase hex,
/// of HMAC-SHA256(secret, SHA-256("evident-seal-key-id/v1")). It reveals nothing of the
/// secret and tells which secret sealed an epoch.
pub fn seal_key_id(key: &SealKey) -> String {
    let label = Hash(Sha256::digest(SEAL_KEY_ID_LABEL.as_bytes()).into());
    hex::encode(&key.seal(&label).0[..8])
}

/// One seal-key epoch: the secret that seals entries from `first_seq` until the next epoch.
#[derive(Debug, Clone)]
pub struct SealEpoch {
    /// 1 for the node's first secret, then 2, 3, …
    pub epoch: u32,
    pub first_seq: u64,
    pub key: SealKey,
}

/// A seal-key rotation as its event records it: the epoch starting right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRotation {
    pub epoch: u32,
    pub first_seq: u64,
    pub key_id: String,
}

impl SealRotation {
    /// The context of the rotation event.
    pub fn to_context(&self) -> Value {
        json!({ "epoch": self.epoch, "first_seq": self.first_seq, "key_id": self.key_id })
    }

    /// The rotation `event` records, if it is a seal-key rotation event.
    pub fn from_event(event: &Event) -> Result<Option<SealRotation>, RotationError> {
        if event.action != SEAL_ROTATION_ACTION {
            return Ok(None);
        }
        let context: Value = serde_json::from_str(event.context.as_str())
            .map_err(|e| malformed(format!("context: {e}")))?;
        if let Some(extra) = context.as_object().and_then(|o| {
            o.keys()
                .find(|k| !["epoch", "first_seq", "key_id"].contains(&k.as_str()))
        }) {
            return Err(malformed(format!(
                "context.{extra}: not a member of a seal rotation"
            )));
        }
        let epoch = context
            .get("epoch")
            .and_then(Value::as_u64)
            .and_then(|e| u32::try_from(e).ok())
            .filter(|e| *e >= 2)
            .ok_or_else(|| malformed("context.epoch: expected an integer of at least 2"))?;
        let first_seq = context
            .get("first_seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("context.first_seq: expected an integer"))?;
        if Some(first_seq) != event.seq.checked_add(1) {
            return Err(malformed(format!(
                "context.first_seq is {first_seq}, but the epoch starts right after the \
                 rotation event, at {}",
                event.seq.saturating_add(1)
            )));
        }
        let key_id = context
            .get("key_id")
            .and_then(Value::as_str)
            .filter(|k| k.len() == 16 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| malformed("context.key_id: expected 16 lowercase hex digits"))?
            .to_owned();
        Ok(Some(SealRotation {
            epoch,
            first_seq,
            key_id,
        }))
    }
}

/// The seal secrets of a log, one per epoch, oldest first. Epochs whose every entry retention
/// has pruned may be missing from the front; a walk never needs them.
#[derive(Debug, Clone)]
pub struct SealEpochs {
    epochs: Vec<SealEpoch>,
}

impl SealEpochs {
    /// A log that never rotated its seal key: epoch 1 from entry 0.
    pub fn single(key: SealKey) -> SealEpochs {
        SealEpochs {
            epochs: vec![SealEpoch {
                epoch: 1,
                first_seq: 0,
                key,
            }],
        }
    }

    /// Epochs in ascending order of both number and first entry, at least one.
    pub fn new(epochs: Vec<SealEpoch>) -> Result<SealEpochs, RotationError> {
        if epochs.is_empty() {
            return Err(RotationError::Seal("no seal secret".into()));
        }
        for pair in epochs.windows(2) {
            if pair[1].epoch != pair[0].epoch + 1 || pair[1].first_seq <= pair[0].first_seq {
                return Err(RotationError::Seal(format!(
                    "seal epochs out of order: epoch {} from entry {} after epoch {} from {}",
                    pair[1].epoch, pair[1].first_seq, pair[0].epoch, pair[0].first_seq
                )));
            }
        }
        Ok(SealEpochs { epochs })
    }

    pub fn epochs(&self) -> &[SealEpoch] {
        &self.epochs
    }

    /// The newest epoch, whose secret seals new entries.
    pub fn current(&self) -> &SealEpoch {
        // `new` and `single` never build an empty list.
        &self.epochs[self.epochs.len() - 1]
    }

    /// The epoch entry `seq` was sealed in, unless its secret was discarded.
    pub fn epoch_for(&self, seq: u64) -> Option<&SealEpoch> {
        let at = self.epochs.partition_point(|e| e.first_seq <= seq);
        if at == 0 {
            // Before the oldest epoch kept: only right for the first epoch.
            return self.epochs.first().filter(|e| e.epoch == 1);
        }
        self.epochs.get(at - 1)
    }

    /// Checks `seal` of entry `seq` with its epoch's secret.
    pub fn check(&self, seq: u64, hash: &Hash, seal: &Hash) -> bool {
        self.epoch_for(seq).is_some_and(|e| e.key.check(hash, seal))
    }

    /// Holds `event` to the epochs: a seal rotation event must open exactly an epoch these
    /// secrets know (same first entry, same key id), and the entry before an epoch's first
    /// must be the event that opened it.
    pub fn check_boundary(&self, event: &Event) -> Result<(), RotationError> {
        let next = event.seq.saturating_add(1);
        match SealRotation::from_event(event)? {
            Some(rotation) => {
                let Some(epoch) = self.epochs.iter().find(|e| e.epoch == rotation.epoch) else {
                    return Err(RotationError::Seal(format!(
                        "entry {} opens seal epoch {}, whose secret is not among the node's \
                         seal keys",
                        event.seq, rotation.epoch
                    )));
                };
                if epoch.first_seq != rotation.first_seq {
                    return Err(RotationError::Seal(format!(
                        "entry {} opens seal epoch {} at entry {}, but the node's seal keys \
                         start it at entry {}",
                        event.seq, rotation.epoch, rotation.first_seq, epoch.first_seq
                    )));
                }
                let id = seal_key_id(&epoch.key);
                if id != rotation.key_id {
                    return Err(RotationError::Seal(format!(
                        "entry {} names seal key {} for epoch {}, but that epoch's secret is \
                         {id}",
                        event.seq, rotation.key_id, rotation.epoch
                    )));
                }
                Ok(())
            }
            None => match self
                .epochs
                .iter()
                .find(|e| e.first_seq == next && e.epoch > 1)
            {
                Some(epoch) => Err(RotationError::Seal(format!(
                    "the node's seal keys start epoch {} at entry {next}, but entry {} is not \
                     the rotation event that opens it",
                    epoch.epoch, event.seq
                ))),
                None => Ok(()),
            },
        }
    }

    /// The epochs a log whose entries below `kept_from` were pruned still needs: every epoch
    /// holding an entry from `kept_from − 1` on (the retention anchor, the last pruned entry,
    /// is still checked with its epoch's secret). The others' secrets can be destroyed.
    pub fn needed_from(&self, kept_from: u64) -> Vec<u32> {
        let anchor = kept_from.saturating_sub(1);
        self.epochs
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.epochs
                    .get(i + 1)
                    .is_none_or(|next| next.first_seq > anchor)
            })
            .map(|(_, e)| e.epoch)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, ActorKind, Context, Outcome, Severity, Target};

    const ORIGIN: &str = "evident/node-2";

    fn key(seed: u8) -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, [seed; 32]).unwrap()
    }

    /// The stored event of `rotation` at its sequence number.
    fn event(rotation: &SigningRotation) -> Event {
        Event {
            seq: rotation.seq,
            id: uuid::Uuid::nil(),
            recorded_at: 1_700_000_000_000,
            occurred_at: None,
            node_id: "node-2".into(),
            tenant: "default".into(),
            actor: Actor {
                id: "evident".into(),
                kind: ActorKind::System,
                ip: None,
                user_agent: None,
            },
            action: SIGNING_ROTATION_ACTION.into(),
            target: Target {
                kind: "signing_key".into(),
                id: "k".into(),
            },
            outcome: Outcome::Success,
            severity: Severity::Notice,
            context: Context::from_value(&rotation.to_context()).unwrap(),
            appended_by: Some("system".into()),
        }
    }

    #[test]
    fn a_chain_follows_genuine_rotations_in_any_order_and_no_forged_one() {
        let (a, b, c) = (key(1), key(2), key(3));
        let ab = SigningRotation::sign(&a, &b.verifier(), 5, 0).unwrap();
        let bc = SigningRotation::sign(&b, &c.verifier(), 9, 0).unwrap();
        let mut chain = KeyChain::new(a.verifier());
        // Newest first: the second pass follows b → c once a → b taught b.
        let report = chain.follow_all(&[event(&bc), event(&ab)]);
        assert_eq!(report.learned, vec![b.verifier(), c.verifier()]);
        assert!(report.refused.is_empty());
        assert_eq!(chain.trusted(), &[a.verifier(), b.verifier(), c.verifier()]);
        // Again: nothing new.
        assert!(
            chain
                .follow_all(&[event(&ab), event(&bc)])
                .learned
                .is_empty()
        );
    }

    #[test]
    fn a_rotation_not_signed_by_a_trusted_key_extends_nothing() {
        let (a, mallory, m2) = (key(1), key(6), key(7));
        let mut chain = KeyChain::new(a.verifier());
        // Signed by the key it names as old, but that key is not trusted.
        let own = SigningRotation::sign(&mallory, &m2.verifier(), 4, 0).unwrap();
        // Names the trusted key as old, signed by another: refused, and why.
        let mut claimed = SigningRotation::sign(&mallory, &m2.verifier(), 5, 0).unwrap();
        claimed.old = a.verifier();
        // Another origin's rotation from a key of that origin.
        let other_origin = NoteSigner::from_seed("evident/node-9", [1; 32]).unwrap();
        let other = SigningRotation::sign(
            &other_origin,
            &NoteSigner::from_seed("evident/node-9", [2; 32])
                .unwrap()
                .verifier(),
            6,
            0,
        )
        .unwrap();
        let report = chain.follow_all(&[event(&own), event(&claimed), event(&other)]);
        assert!(report.learned.is_empty(), "{report:?}");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(report.refused[0].0, 5);
        assert!(matches!(
            report.refused[0].1,
            RotationError::NotSignedByOldKey { .. }
        ));
        assert_eq!(chain.trusted(), &[a.verifier()]);
        // The statement binds its sequence number: moved to another, it no longer verifies.
        let mut moved = SigningRotation::sign(&a, &m2.verifier(), 7, 0).unwrap();
        moved.seq = 8;
        assert!(chain.follow_rotation(&moved).is_err());
        assert_eq!(chain.trusted(), &[a.verifier()]);
    }
}
