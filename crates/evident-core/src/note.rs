//! C2SP signed notes with Ed25519 keys: key names, key IDs, verifier-key strings, signing, and
//! opening a note that may carry several signatures (cosignatures) of which one known key must
//! verify and unknown ones are ignored.

/// Errors from parsing, signing or verifying notes and keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed key: {0}")]
    MalformedKey(String),
    #[error("invalid key name {0:?}")]
    BadKeyName(String),
    #[error("signature by key {name} does not verify")]
    BadSignature { name: String },
    #[error("no signature by a known key")]
    UnverifiedNote,
}

/// A note signing key (Ed25519) with its key name.
#[derive(Clone)]
pub struct NoteSigner {}

/// A note verifier key (Ed25519) with its key name and key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {}

/// A note whose signature by at least one known key verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Names of the known keys whose signatures verified.
    pub verified_by: Vec<String>,
}

impl NoteSigner {
    /// A signer for `name` from a 32-byte Ed25519 seed (the caller draws the randomness).
    pub fn from_seed(_name: &str, _seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        todo!()
    }
    /// Parses `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.
    pub fn from_private_key_string(_s: &str) -> Result<NoteSigner, NoteError> {
        todo!()
    }
    /// The private key string form (for key files; never logged).
    pub fn to_private_key_string(&self) -> String {
        todo!()
    }
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn key_id(&self) -> u32 {
        todo!()
    }
    pub fn verifier(&self) -> NoteVerifier {
        todo!()
    }
    /// Signs `text` (which must end in a newline) and returns the whole signed note.
    pub fn sign(&self, _text: &str) -> Result<String, NoteError> {
        todo!()
    }
}

impl NoteVerifier {
    /// Parses a C2SP verifier key string `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(_vkey: &str) -> Result<NoteVerifier, NoteError> {
        todo!()
    }
    /// The C2SP verifier key string.
    pub fn to_vkey_string(&self) -> String {
        todo!()
    }
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn key_id(&self) -> u32 {
        todo!()
    }
}

/// Opens a signed note: at least one signature by a key in `verifiers` must verify; a signature
/// by a known key that does not verify is an error; signatures by unknown keys are ignored.
pub fn open(_note: &str, _verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    todo!()
}

/// Adds a signature by `signer` to an already signed note (cosigning), returning the new note.
pub fn add_signature(_note: &str, _signer: &NoteSigner) -> Result<String, NoteError> {
    todo!()
}
