//! C2SP tlog-checkpoint: the origin, tree size and root hash a node signs as a signed note.

use crate::hash::Hash;
use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// A log checkpoint (tree head).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Optional extension lines, in order, without their newlines.
    pub extensions: Vec<String>,
}

/// Errors from parsing or opening a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("checkpoint signature: {0}")]
    Note(#[from] NoteError),
    #[error("checkpoint origin {origin:?} does not match key name {key_name:?}")]
    OriginMismatch { origin: String, key_name: String },
}

impl Checkpoint {
    /// The checkpoint body (the note text), ending in a newline.
    pub fn to_text(&self) -> String {
        todo!()
    }
    /// Parses a checkpoint body.
    pub fn parse(_text: &str) -> Result<Checkpoint, CheckpointError> {
        todo!()
    }
    /// Signs the checkpoint; the signer's key name must equal the origin.
    pub fn sign(&self, _signer: &NoteSigner) -> Result<String, CheckpointError> {
        todo!()
    }
    /// Verifies a signed checkpoint against `verifier` (whose name must equal the origin)
    /// and parses it.
    pub fn open(_signed_note: &str, _verifier: &NoteVerifier) -> Result<Checkpoint, CheckpointError> {
        todo!()
    }
}
