//! C2SP tlog-checkpoint: the origin, tree size and root hash a node signs as a signed note.
//!
//! Evident's origin is the log's key name, so the origin line follows the key-name rules
//! (non-empty, no spaces, no '+'); the body is parsed strictly so that a checkpoint has exactly
//! one text form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::hash::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

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

fn malformed(why: &str) -> CheckpointError {
    CheckpointError::Malformed(why.to_owned())
}

/// The tree size: ASCII decimal, no sign, no leading zeros except for "0" itself.
fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("tree size is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(malformed("tree size has a leading zero"));
    }
    s.parse()
        .map_err(|_| malformed("tree size does not fit in 64 bits"))
}

/// The root hash: canonical standard base64 of exactly 32 bytes.
fn parse_root(s: &str) -> Result<Hash, CheckpointError> {
    let bytes = BASE64
        .decode(s)
        .map_err(|_| malformed("root hash is not valid base64"))?;
    let root: [u8; 32] = bytes
        .try_into()
        .map_err(|_| malformed("root hash is not 32 bytes"))?;
    // The decoder already refuses non-canonical padding and trailing bits; this keeps the
    // one-text-form promise independent of its configuration.
    if BASE64.encode(root) != s {
        return Err(malformed("root hash is not canonical base64"));
    }
    Ok(Hash(root))
}

impl Checkpoint {
    /// The checkpoint body (the note text), ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.as_bytes())
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint body.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("text must end with a newline"))?;
        if text.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(malformed("control character other than newline"));
        }
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(malformed("needs origin, tree size and root hash lines"));
        };
        if !note::is_valid_key_name(origin) {
            return Err(malformed("origin must be non-empty, without spaces or '+'"));
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("empty line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint; the signer's key name must equal the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if signer.name() != self.origin {
            return Err(CheckpointError::OriginMismatch {
                origin: self.origin.clone(),
                key_name: signer.name().to_owned(),
            });
        }
        let text = self.to_text();
        // Never sign what would not read back as this very checkpoint (e.g. an extension
        // holding a newline).
        if Checkpoint::parse(&text).as_ref() != Ok(self) {
            return Err(malformed("checkpoint does not round-trip through its text"));
        }
        Ok(signer.sign(&text)?)
    }

    /// Verifies a signed checkpoint against `verifier` (whose name must equal the origin)
    /// and parses it.
    pub fn open(signed_note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::open_any(signed_note, std::slice::from_ref(verifier))
    }

    /// [`Self::open`] with several trusted keys of the log (its keys before and after a
    /// signing-key rotation, docs/FORMAT.md §18): at least one must have signed, every one
    /// that signed must verify, and the origin must be the name of a key that verified.
    pub fn open_any(
        signed_note: &str,
        verifiers: &[NoteVerifier],
    ) -> Result<Checkpoint, CheckpointError> {
        let opened = note::open(signed_note, verifiers)?;
        let origin = opened.text.split('\n').next().unwrap_or_default();
        if !opened.verified_by.iter().any(|name| name == origin) {
            return Err(CheckpointError::OriginMismatch {
                origin: origin.to_owned(),
                key_name: opened.verified_by.join(", "),
            });
        }
        Checkpoint::parse(&opened.text)
    }

    /// Signs the checkpoint with every key in `signers` (the node's keys during a signing-key
    /// rotation's transition, old key first): one note carrying one signature line each.
    pub fn sign_all(&self, signers: &[NoteSigner]) -> Result<String, CheckpointError> {
        let Some((first, rest)) = signers.split_first() else {
            return Err(malformed("no signing key"));
        };
        let mut note = self.sign(first)?;
        for signer in rest {
            if signer.name() != self.origin {
                return Err(CheckpointError::OriginMismatch {
                    origin: self.origin.clone(),
                    key_name: signer.name().to_owned(),
                });
            }
            note = note::add_signature(&note, signer)?;
        }
        Ok(note)
    }
}
