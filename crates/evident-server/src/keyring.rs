//! The node's key files over time (docs/FORMAT.md §18): the signing keys (the original
//! `keys/checkpoint.key` and each rotated one, recorded in `keys/signing-rotations.toml`) with
//! which of them sign now, and the seal secrets by epoch (`keys/seal.key`, then the epochs in
//! `keys/seal-epochs.toml`); and the two rotations, each written to the log as an event by a
//! started node before the files that make it take effect.

use crate::node::{
    KEYS_DIR, Node, NodeError, SEAL_KEY_FILE, io_err, random_bytes, read_seal_key, read_signer,
    write_private_file,
};
use crate::sequencer::SequencerError;
use evident_core::event::{
    Actor, ActorKind, Context, EventInput, Millis, Outcome, Severity, Target,
};
use evident_core::rotation::{
    SEAL_ROTATION_ACTION, SIGNING_ROTATION_ACTION, SealEpoch, SealEpochs, SealRotation,
    SigningRotation, seal_key_id,
};
use evident_core::{NoteSigner, NoteVerifier, SealKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The record of signing-key rotations, in the key directory.
pub const SIGNING_ROTATIONS_FILE: &str = "signing-rotations.toml";
/// The record of seal-key epochs after the first, in the key directory.
pub const SEAL_EPOCHS_FILE: &str = "seal-epochs.toml";

/// What can go wrong rotating a key.
#[derive(Debug, thiserror::Error)]
pub enum RotationFailed {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("appending the rotation event: {0}")]
    Append(#[from] SequencerError),
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SigningRotationsFile {
    #[serde(default, rename = "rotation")]
    rotations: Vec<SigningRotationRecord>,
}

/// One signing-key rotation as the key directory records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningRotationRecord {
    /// The new key's private key file, in the key directory.
    pub key_file: String,
    /// The new key's verifier key string.
    pub new_key: String,
    /// The rotation event's sequence number.
    pub seq: u64,
    pub rotated_at: Millis,
    /// Until when (exclusive) the previous key still signs beside the new one.
    pub transition_ends_at: Millis,
}

/// The node's signing keys, oldest first, and until when each one signs.
#[derive(Debug, Clone)]
pub struct SigningKeys {
    keys: Vec<NoteSigner>,
    verifiers: Vec<NoteVerifier>,
    /// For each key but the newest: when it stopped (or stops) signing.
    retired_at: Vec<Millis>,
    rotations: Vec<SigningRotationRecord>,
}

impl SigningKeys {
    /// A node that never rotated its signing key.
    pub fn single(signer: NoteSigner) -> SigningKeys {
        SigningKeys {
            verifiers: vec![signer.verifier()],
            keys: vec![signer],
            retired_at: Vec::new(),
            rotations: Vec::new(),
        }
    }

    /// Reads the rotated keys recorded in `keys_dir` after the original `signer`.
    pub fn load(keys_dir: &Path, original: NoteSigner) -> Result<SigningKeys, NodeError> {
        let mut keys = SigningKeys::single(original);
        let path = keys_dir.join(SIGNING_ROTATIONS_FILE);
        if !path.exists() {
            return Ok(keys);
        }
        let file: SigningRotationsFile = read_toml(&path)?;
        for record in file.rotations {
            let key_path = keys_dir.join(&record.key_file);
            let signer = read_signer(&key_path)?;
            if signer.verifier().to_vkey_string() != record.new_key
                || signer.name() != keys.newest().name()
            {
                return Err(NodeError::BadFile {
                    path: path.clone(),
                    problem: format!(
                        "{} does not hold the key {} the rotation at entry {} names (or is \
                         named for another origin)",
                        record.key_file, record.new_key, record.seq
                    ),
                });
            }
            keys.retired_at.push(record.transition_ends_at);
            keys.verifiers.push(signer.verifier());
            keys.keys.push(signer);
            keys.rotations.push(record);
        }
        Ok(keys)
    }

    /// The key that signs from now on (the newest).
    pub fn newest(&self) -> &NoteSigner {
        // Never empty: built from the original key.
        &self.keys[self.keys.len() - 1]
    }

    /// The node's first key, the one its identity (and PostgreSQL's node record) names.
    pub fn original(&self) -> &NoteSigner {
        &self.keys[0]
    }

    /// Every key's verifier, oldest first: what opens any checkpoint the node ever signed.
    pub fn verifiers(&self) -> &[NoteVerifier] {
        &self.verifiers
    }

    /// The keys that sign at `now`, oldest first: the newest, and the one before it while its
    /// rotation's transition lasts.
    pub fn active(&self, now: Millis) -> Vec<NoteSigner> {
        let last = self.keys.len() - 1;
        self.keys
            .iter()
            .enumerate()
            // A later rotation ends an earlier one's transition: at most two keys sign.
            .filter(|(i, _)| {
                *i == last
                    || (*i + 1 == last && self.retired_at.get(*i).is_some_and(|end| now < *end))
            })
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub fn rotations(&self) -> &[SigningRotationRecord] {
        &self.rotations
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SealEpochsFile {
    #[serde(default, rename = "epoch")]
    epochs: Vec<SealEpochRecord>,
}

/// One seal-key epoch after the first, as the key directory records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealEpochRecord {
    pub epoch: u32,
    pub first_seq: u64,
    pub key_file: String,
    pub key_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DiscardedFile {
    /// Epochs whose secret was destroyed once retention had pruned all their entries.
    #[serde(default)]
    discarded: Vec<u32>,
}

/// Reads the seal secrets of every epoch still kept: `keys/seal.key` (epoch 1, unless it was
/// discarded) and the epochs of `keys/seal-epochs.toml`.
pub fn load_seal_epochs(keys_dir: &Path) -> Result<SealEpochs, NodeError> {
    let path = keys_dir.join(SEAL_EPOCHS_FILE);
    let (records, discarded) = if path.exists() {
        let file: SealEpochsFile = read_toml(&path)?;
        let discarded: DiscardedFile = read_toml(&path)?;
        (file.epochs, discarded.discarded)
    } else {
        (Vec::new(), Vec::new())
    };
    let mut epochs = Vec::new();
    if !discarded.contains(&1) {
        epochs.push(SealEpoch {
            epoch: 1,
            first_seq: 0,
            key: read_seal_key(&keys_dir.join(SEAL_KEY_FILE))?,
        });
    }
    for record in records {
        if discarded.contains(&record.epoch) {
            continue;
        }
        let key_path = keys_dir.join(&record.key_file);
        let key = read_seal_key(&key_path)?;
        if seal_key_id(&key) != record.key_id {
            return Err(NodeError::BadFile {
                path: key_path,
                problem: format!(
                    "this is not the secret of seal epoch {} (key id {})",
                    record.epoch, record.key_id
                ),
            });
        }
        epochs.push(SealEpoch {
            epoch: record.epoch,
            first_seq: record.first_seq,
            key,
        });
    }
    SealEpochs::new(epochs).map_err(|e| NodeError::BadFile {
        path,
        problem: e.to_string(),
    })
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, NodeError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    toml::from_str(&text).map_err(|e| NodeError::BadFile {
        path: path.to_owned(),
        problem: e.message().to_owned(),
    })
}

fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), NodeError> {
    let text = toml::to_string(value).map_err(|e| NodeError::BadFile {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    write_private_file(path, &text)
}

/// The event a rotation is recorded as.
fn rotation_event(
    action: &str,
    target_kind: &str,
    target_id: &str,
    context: &serde_json::Value,
) -> Result<EventInput, RotationFailed> {
    Ok(EventInput {
        occurred_at: None,
        tenant: "default".to_owned(),
        actor: Actor {
            id: "evident".to_owned(),
            kind: ActorKind::System,
            ip: None,
            user_agent: None,
        },
        action: action.to_owned(),
        target: Target {
            kind: target_kind.to_owned(),
            id: target_id.to_owned(),
        },
        outcome: Outcome::Success,
        severity: Severity::Notice,
        context: Context::from_value(context)
            .map_err(|e| RotationFailed::Refused(format!("rotation event: {e}")))?,
    })
}

/// Appends `input`, which must become entry `seq` (nothing else appends on a node opened
/// for a rotation: it holds the data directory's lock).
fn append_at(node: &Node, seq: u64, input: EventInput) -> Result<(), RotationFailed> {
    let receipts = node.sequencer().append_blocking(vec![input])?;
    match receipts.first() {
        Some(r) if r.seq == seq => Ok(()),
        Some(r) => Err(RotationFailed::Refused(format!(
            "the rotation event became entry {} instead of {seq}: another writer appended \
             meanwhile; rotate again",
            r.seq
        ))),
        None => Err(RotationFailed::Refused(
            "the rotation event was not appended".into(),
        )),
    }
}

/// A signing-key rotation done.
#[derive(Debug, Clone)]
pub struct SigningRotated {
    pub seq: u64,
    pub old_key: String,
    pub new_key: String,
    pub transition_ends_at: Millis,
}

/// Rotates the node's signing key: a new Ed25519 key of the same origin is written to the key
/// directory, the rotation event (signed by the current key over the rotation statement) is
/// appended, then the rotation is recorded so that the next start signs with both keys until
/// `now + transition_ms`, and with the new key alone after that. `node` is the started node
/// (its lock held); stop it afterwards.
pub fn rotate_signing(
    node: &Node,
    transition_ms: Millis,
    now: Millis,
) -> Result<SigningRotated, RotationFailed> {
    let files = node.files();
    let keys_dir = files.data_dir().join(KEYS_DIR);
    let current = files.signing().newest().clone();
    let new = NoteSigner::from_seed(current.name(), random_bytes()?)
        .map_err(|e| RotationFailed::Refused(format!("cannot create a signing key: {e}")))?;
    let key_file = format!("checkpoint-{:08x}.key", new.key_id());
    write_private_file(
        &keys_dir.join(&key_file),
        &format!("{}\n", new.to_private_key_string()),
    )?;
    let seq = node.sequencer().size();
    let transition_ends_at = now.saturating_add(transition_ms);
    let rotation = SigningRotation::sign(&current, &new.verifier(), seq, transition_ends_at)
        .map_err(|e| RotationFailed::Refused(e.to_string()))?;
    let input = rotation_event(
        SIGNING_ROTATION_ACTION,
        "signing_key",
        &format!("{}+{:08x}", new.name(), new.key_id()),
        &rotation.to_context(),
    )?;
    append_at(node, seq, input)?;
    // Recorded last: until then the node signs as before, and a crash leaves only an event
    // naming a key nobody signs with, which a verifier follows harmlessly.
    let path = keys_dir.join(SIGNING_ROTATIONS_FILE);
    let mut file: SigningRotationsFile = if path.exists() {
        read_toml(&path)?
    } else {
        SigningRotationsFile::default()
    };
    file.rotations.push(SigningRotationRecord {
        key_file,
        new_key: new.verifier().to_vkey_string(),
        seq,
        rotated_at: now,
        transition_ends_at,
    });
    write_toml(&path, &file)?;
    Ok(SigningRotated {
        seq,
        old_key: current.verifier().to_vkey_string(),
        new_key: new.verifier().to_vkey_string(),
        transition_ends_at,
    })
}

/// A seal-key rotation done.
#[derive(Debug, Clone)]
pub struct SealRotated {
    pub seq: u64,
    pub epoch: u32,
    pub key_id: String,
    /// Epochs whose secret was destroyed because retention pruned every entry of them.
    pub discarded: Vec<u32>,
}

/// Rotates the node's seal secret: the new epoch's secret is written to the key directory,
/// the rotation event (sealed with the current secret, the last entry of its epoch) is
/// appended, then the epoch is recorded so that the next start seals with the new secret.
/// Secrets of epochs retention has pruned entirely are destroyed.
pub fn rotate_seal(node: &Node) -> Result<SealRotated, RotationFailed> {
    let files = node.files();
    let keys_dir = files.data_dir().join(KEYS_DIR);
    let current = files.seal_epochs().current();
    let epoch = current.epoch + 1;
    let secret: [u8; 32] = random_bytes()?;
    let key = SealKey::new(&secret).map_err(|e| RotationFailed::Refused(e.to_string()))?;
    let key_id = seal_key_id(&key);
    let key_file = format!("seal-{epoch}.key");
    write_private_file(
        &keys_dir.join(&key_file),
        &format!("{}\n", hex::encode(secret)),
    )?;
    let seq = node.sequencer().size();
    let rotation = SealRotation {
        epoch,
        first_seq: seq + 1,
        key_id: key_id.clone(),
    };
    let path = keys_dir.join(SEAL_EPOCHS_FILE);
    let mut file: SealEpochsFile = if path.exists() {
        read_toml(&path)?
    } else {
        SealEpochsFile::default()
    };
    let discarded: DiscardedFile = if path.exists() {
        read_toml(&path)?
    } else {
        DiscardedFile::default()
    };
    let input = rotation_event(
        SEAL_ROTATION_ACTION,
        "seal_key",
        &key_id,
        &rotation.to_context(),
    )?;
    append_at(node, seq, input)?;
    file.epochs.push(SealEpochRecord {
        epoch,
        first_seq: seq + 1,
        key_file,
        key_id: key_id.clone(),
    });
    write_epochs(&path, &file, &discarded)?;
    let discarded = discard_unneeded_seal_secrets(node)?;
    Ok(SealRotated {
        seq,
        epoch,
        key_id,
        discarded,
    })
}

fn write_epochs(
    path: &Path,
    file: &SealEpochsFile,
    discarded: &DiscardedFile,
) -> Result<(), NodeError> {
    #[derive(Serialize)]
    struct Both<'a> {
        discarded: &'a [u32],
        #[serde(rename = "epoch")]
        epochs: &'a [SealEpochRecord],
    }
    write_toml(
        path,
        &Both {
            discarded: &discarded.discarded,
            epochs: &file.epochs,
        },
    )
}

/// Finishes a seal-key rotation interrupted after its event was appended but before the
/// epoch was recorded: then the newest entry is a rotation event opening an epoch the key
/// directory does not list, and its secret file (written before the event) is there. Run at
/// every start, before anything is sealed, so that no entry after the event is sealed with
/// the old secret. Returns whether an epoch was recorded.
pub fn finish_interrupted_seal_rotation(
    keys_dir: &Path,
    seals: &SealEpochs,
    store: &dyn evident_store::Store,
) -> Result<bool, NodeError> {
    let newest = crate::scan::newest_entry(store).map_err(|e| NodeError::BadFile {
        path: keys_dir.join(SEAL_EPOCHS_FILE),
        problem: format!(
            "cannot read the newest entry to check for an interrupted seal-key rotation: {e}"
        ),
    })?;
    let Some(entry) = newest else {
        return Ok(false);
    };
    let Ok(Some(rotation)) = SealRotation::from_event(&entry.event) else {
        return Ok(false);
    };
    if seals.epochs().iter().any(|e| e.epoch == rotation.epoch)
        || rotation.epoch != seals.current().epoch + 1
    {
        return Ok(false);
    }
    let key_file = format!("seal-{}.key", rotation.epoch);
    let key_path = keys_dir.join(&key_file);
    let key = read_seal_key(&key_path)?;
    if seal_key_id(&key) != rotation.key_id {
        return Err(NodeError::BadFile {
            path: key_path,
            problem: format!(
                "entry {} opens seal epoch {} with key id {}, but this file holds another \
                 secret",
                entry.event.seq, rotation.epoch, rotation.key_id
            ),
        });
    }
    let path = keys_dir.join(SEAL_EPOCHS_FILE);
    let (mut file, discarded): (SealEpochsFile, DiscardedFile) = if path.exists() {
        (read_toml(&path)?, read_toml(&path)?)
    } else {
        (SealEpochsFile::default(), DiscardedFile::default())
    };
    file.epochs.push(SealEpochRecord {
        epoch: rotation.epoch,
        first_seq: rotation.first_seq,
        key_file,
        key_id: rotation.key_id,
    });
    write_epochs(&path, &file, &discarded)?;
    tracing::warn!(
        epoch = rotation.epoch,
        seq = entry.event.seq,
        "finished a seal-key rotation that was interrupted before it was recorded"
    );
    Ok(true)
}

/// Destroys the seal secrets no verification needs any more: those of epochs whose every
/// entry retention has pruned, with the retention anchor (the last pruned entry) in a later
/// epoch (docs/FORMAT.md §18). Returns the epochs discarded now.
pub fn discard_unneeded_seal_secrets(node: &Node) -> Result<Vec<u32>, RotationFailed> {
    let Some(anchor) = node
        .store()
        .prune_anchor()
        .map_err(|e| RotationFailed::Refused(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let keys_dir = node.files().data_dir().join(KEYS_DIR);
    let path = keys_dir.join(SEAL_EPOCHS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let epochs = load_seal_epochs(&keys_dir)?;
    let needed = epochs.needed_from(anchor.below_seq);
    let unneeded: Vec<u32> = epochs
        .epochs()
        .iter()
        .map(|e| e.epoch)
        .filter(|e| !needed.contains(e))
        .collect();
    if unneeded.is_empty() {
        return Ok(unneeded);
    }
    let file: SealEpochsFile = read_toml(&path)?;
    let mut discarded: DiscardedFile = read_toml(&path)?;
    discarded.discarded.extend(&unneeded);
    // Recorded before the files go: a crash in between leaves secrets nobody reads.
    write_epochs(&path, &file, &discarded)?;
    for epoch in &unneeded {
        let name = if *epoch == 1 {
            SEAL_KEY_FILE.to_owned()
        } else {
            match file.epochs.iter().find(|r| r.epoch == *epoch) {
                Some(r) => r.key_file.clone(),
                None => continue,
            }
        };
        let key_path = keys_dir.join(name);
        std::fs::remove_file(&key_path).map_err(io_err(&key_path))?;
    }
    Ok(unneeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::from_seed("evident/node-1", [seed; 32]).unwrap()
    }

    fn record(seed: u8, transition_ends_at: Millis) -> SigningRotationRecord {
        SigningRotationRecord {
            key_file: format!("checkpoint-{seed}.key"),
            new_key: signer(seed).verifier().to_vkey_string(),
            seq: u64::from(seed),
            rotated_at: 0,
            transition_ends_at,
        }
    }

    #[test]
    fn the_old_key_signs_until_its_transition_ends_and_a_later_rotation_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path();
        for seed in [2, 3] {
            write_private_file(
                &keys.join(format!("checkpoint-{seed}.key")),
                &signer(seed).to_private_key_string(),
            )
            .unwrap();
        }
        let ids = |active: Vec<NoteSigner>| -> Vec<u32> {
            active.iter().map(NoteSigner::key_id).collect()
        };
        write_toml(
            &keys.join(SIGNING_ROTATIONS_FILE),
            &SigningRotationsFile {
                rotations: vec![record(2, 1_000)],
            },
        )
        .unwrap();
        let one = SigningKeys::load(keys, signer(1)).unwrap();
        assert_eq!(
            ids(one.active(999)),
            vec![signer(1).key_id(), signer(2).key_id()]
        );
        assert_eq!(ids(one.active(1_000)), vec![signer(2).key_id()]);
        assert_eq!(one.verifiers().len(), 2);
        assert_eq!(one.original().key_id(), signer(1).key_id());

        // A second rotation, still inside the first one's transition: key 1 stops at once.
        write_toml(
            &keys.join(SIGNING_ROTATIONS_FILE),
            &SigningRotationsFile {
                rotations: vec![record(2, 1_000), record(3, 2_000)],
            },
        )
        .unwrap();
        let two = SigningKeys::load(keys, signer(1)).unwrap();
        assert_eq!(
            ids(two.active(500)),
            vec![signer(2).key_id(), signer(3).key_id()]
        );
        assert_eq!(ids(two.active(2_000)), vec![signer(3).key_id()]);

        // A key file that is not the recorded key is refused.
        std::fs::remove_file(keys.join("checkpoint-3.key")).unwrap();
        write_private_file(
            &keys.join("checkpoint-3.key"),
            &signer(9).to_private_key_string(),
        )
        .unwrap();
        assert!(SigningKeys::load(keys, signer(1)).is_err());
    }

    #[test]
    fn seal_epochs_are_read_back_and_a_wrong_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path();
        write_private_file(&keys.join(SEAL_KEY_FILE), &hex::encode([1u8; 32])).unwrap();
        write_private_file(&keys.join("seal-2.key"), &hex::encode([2u8; 32])).unwrap();
        let file = SealEpochsFile {
            epochs: vec![SealEpochRecord {
                epoch: 2,
                first_seq: 5,
                key_file: "seal-2.key".into(),
                key_id: seal_key_id(&SealKey::new(&[2u8; 32]).unwrap()),
            }],
        };
        let path = keys.join(SEAL_EPOCHS_FILE);
        write_epochs(&path, &file, &DiscardedFile::default()).unwrap();
        let epochs = load_seal_epochs(keys).unwrap();
        assert_eq!(epochs.current().epoch, 2);
        assert_eq!(epochs.epoch_for(4).map(|e| e.epoch), Some(1));
        // Epoch 1 discarded: its file may be gone.
        write_epochs(&path, &file, &DiscardedFile { discarded: vec![1] }).unwrap();
        std::fs::remove_file(keys.join(SEAL_KEY_FILE)).unwrap();
        let kept = load_seal_epochs(keys).unwrap();
        assert!(kept.epoch_for(4).is_none());
        // The wrong secret for an epoch is refused.
        std::fs::remove_file(keys.join("seal-2.key")).unwrap();
        write_private_file(&keys.join("seal-2.key"), &hex::encode([7u8; 32])).unwrap();
        assert!(load_seal_epochs(keys).is_err());
    }

    #[test]
    fn a_seal_rotation_interrupted_before_its_record_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::test_support::test_config(dir.path());
        let node = Node::open(config.clone()).unwrap();
        node.sequencer()
            .append_blocking(vec![
                EventInput::from_json(&crate::test_support::event_json("a", "user.login")).unwrap(),
            ])
            .unwrap();
        let rotated = rotate_seal(&node).unwrap();
        assert_eq!(rotated.epoch, 2);
        node.shutdown();
        drop(node);
        // The crash: the event is in the log, the epoch is not recorded.
        let keys = config.data_dir.join(KEYS_DIR);
        std::fs::remove_file(keys.join(SEAL_EPOCHS_FILE)).unwrap();
        let node = Node::open(config.clone()).unwrap();
        assert_eq!(node.files().seal_epochs().current().epoch, 2);
        node.sequencer()
            .append_blocking(vec![
                EventInput::from_json(&crate::test_support::event_json("b", "user.login")).unwrap(),
            ])
            .unwrap();
        let files = node.files();
        let outcome = crate::verification::verify_store(
            &**node.store(),
            files.seal_epochs(),
            files.verifiers(),
            files.node_id(),
            None,
        )
        .unwrap();
        assert!(outcome.is_intact(), "{outcome:?}");
        node.shutdown();
    }
}
