//! C2SP signed notes with Ed25519 keys: key names, key IDs, verifier-key strings, signing, and
//! opening a note that may carry several signatures (cosignatures) of which one known key must
//! verify and unknown ones are ignored.
//!
//! Only the Ed25519 signature type (0x01) is supported. Keys come in as bytes or strings; this
//! module draws no randomness (callers pass seeds) and reads no files.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

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

/// The C2SP signature type byte for Ed25519.
const ALG_ED25519: u8 = 0x01;

/// The most signatures a note may carry. C2SP asks verifiers to accept at least 16; the Go
/// reference stops at 100, and so do we, which bounds the work an untrusted note can cause.
pub const MAX_SIGNATURES: usize = 100;

/// What starts every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";

const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Whether `name` is a valid key name: non-empty, no Unicode spaces, no '+'. Control
/// characters are refused too, since a note may not contain them.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::BadKeyName(name.to_owned()))
    }
}

/// The C2SP key ID: the first four bytes, big-endian, of
/// SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key).
pub fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Parses the 8 lowercase hex digits of a key ID.
fn parse_key_id(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Decodes `base64(0x01 ‖ 32 bytes)`, the key encoding of both key strings.
fn decode_typed_key(s: &str) -> Result<[u8; 32], NoteError> {
    let bytes = BASE64
        .decode(s)
        .map_err(|_| NoteError::MalformedKey("key is not valid base64".into()))?;
    match bytes.split_first() {
        Some((&ALG_ED25519, key)) => key
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 key has 32 bytes".into())),
        Some(_) => Err(NoteError::MalformedKey("unknown signature type".into())),
        None => Err(NoteError::MalformedKey("empty key".into())),
    }
}

fn encode_typed_key(key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(ALG_ED25519);
    bytes.extend_from_slice(key);
    BASE64.encode(bytes)
}

/// A note signing key (Ed25519) with its key name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

/// A note verifier key (Ed25519) with its key name and key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

/// A note whose signature by at least one known key verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Names of the known keys whose signatures verified.
    pub verified_by: Vec<String>,
}

// The seed stays out of debug output so that a logged signer never leaks it.
impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer for `name` from a 32-byte Ed25519 seed (the caller draws the randomness).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id: key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.
    pub fn from_private_key_string(s: &str) -> Result<NoteSigner, NoteError> {
        let rest = s
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or_else(|| NoteError::MalformedKey("expected PRIVATE+KEY+ prefix".into()))?;
        // Names hold no '+', so the first two '+' end the name and the key ID; the base64 after
        // them may contain '+' itself.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected PRIVATE+KEY+<name>+<key id>+<key>".into(),
            ));
        };
        check_key_name(name)?;
        let id = parse_key_id(id).ok_or_else(|| {
            NoteError::MalformedKey("key ID is not 8 lowercase hex digits".into())
        })?;
        let signer = NoteSigner::from_seed(name, decode_typed_key(key)?)?;
        if signer.key_id != id {
            return Err(NoteError::MalformedKey(
                "key ID does not match the key".into(),
            ));
        }
        Ok(signer)
    }

    /// The private key string form (for key files; never logged).
    pub fn to_private_key_string(&self) -> String {
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_typed_key(self.key.as_bytes())
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) and returns the whole signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let mut note = String::with_capacity(text.len() + 120);
        note.push_str(text);
        note.push('\n');
        note.push_str(&self.signature_line(text));
        Ok(note)
    }

    /// A bare Ed25519 signature of `message`, for the Standard Webhooks `v1a` signature of
    /// alerts. Refused for a message holding a newline: every note text ends in one, so no
    /// such signature can ever pass for a note's.
    pub fn sign_newline_free(&self, message: &[u8]) -> Option<[u8; 64]> {
        if message.contains(&b'\n') {
            return None;
        }
        Some(self.key.sign(message).to_bytes())
    }

    /// The 32-byte Ed25519 seed, for deriving the node's separate cosigner key
    /// (`cosignature::CosignatureSigner::derived_from`); never leaves the crate.
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `— <name> base64(key id ‖ signature)\n` over `text`.
    fn signature_line(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut bytes = Vec::with_capacity(4 + 64);
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }
}

impl NoteVerifier {
    /// Parses a C2SP verifier key string `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected <name>+<key id>+<key>".into(),
            ));
        };
        check_key_name(name)?;
        let id = parse_key_id(id).ok_or_else(|| {
            NoteError::MalformedKey("key ID is not 8 lowercase hex digits".into())
        })?;
        let key = VerifyingKey::from_bytes(&decode_typed_key(key)?)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key".into()))?;
        // A small-order key would accept signatures anyone can forge.
        if key.is_weak() {
            return Err(NoteError::MalformedKey("weak Ed25519 public key".into()));
        }
        if key_id(name, &key) != id {
            return Err(NoteError::MalformedKey(
                "key ID does not match the key".into(),
            ));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: id,
            key,
        })
    }

    /// The C2SP verifier key string.
    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn to_vkey_string(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_typed_key(self.key.as_bytes())
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.key
            .verify_strict(text.as_bytes(), &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

fn malformed(why: &str) -> NoteError {
    NoteError::Malformed(why.to_owned())
}

/// A note text: non-empty, ending in a newline, without control characters but newlines.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(malformed("text must end with a newline"));
    }
    check_no_controls(text)
}

fn check_no_controls(s: &str) -> Result<(), NoteError> {
    if s.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(malformed("control character other than newline"));
    }
    Ok(())
}

/// One parsed signature line.
struct SignatureLine<'a> {
    name: &'a str,
    key_id: u32,
    signature: Vec<u8>,
    /// The line as it appeared, with its newline, for re-emitting it unchanged.
    line: &'a str,
}

/// A note split into its text and its well-formed signature lines (nothing verified yet).
struct ParsedNote<'a> {
    text: &'a str,
    signatures: Vec<SignatureLine<'a>>,
}

fn parse_note(note: &str) -> Result<ParsedNote<'_>, NoteError> {
    check_no_controls(note)?;
    // The text ends at the last blank line; signature lines hold no blank line.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| malformed("no blank line before the signatures"))?;
    let text = &note[..=split];
    let block = &note[split + 2..];
    if block.is_empty() {
        return Err(malformed("no signature lines"));
    }
    if !block.ends_with('\n') {
        return Err(malformed("signature block must end with a newline"));
    }
    let mut signatures = Vec::new();
    for line in block.split_inclusive('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        signatures.push(parse_signature_line(line)?);
    }
    Ok(ParsedNote { text, signatures })
}

fn parse_signature_line(line: &str) -> Result<SignatureLine<'_>, NoteError> {
    let body = line
        .strip_suffix('\n')
        .and_then(|l| l.strip_prefix(SIG_PREFIX))
        .ok_or_else(|| malformed("signature line must start with an em dash and a space"))?;
    let (name, b64) = body
        .split_once(' ')
        .ok_or_else(|| malformed("signature line needs a key name and a signature"))?;
    if !is_valid_key_name(name) {
        return Err(malformed("invalid key name in signature line"));
    }
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| malformed("signature is not valid base64"))?;
    // A key ID and at least one byte of signature.
    if bytes.len() < 5 {
        return Err(malformed("signature too short"));
    }
    let (id, signature) = bytes.split_at(4);
    Ok(SignatureLine {
        name,
        key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        signature: signature.to_vec(),
        line,
    })
}

/// The verifier for a signature's key name and ID, if the key is known. Two different keys
/// under one name and ID cannot both be trusted, so that is refused rather than guessed.
fn known_key<'v>(
    verifiers: &'v [NoteVerifier],
    name: &str,
    key_id: u32,
) -> Result<Option<&'v NoteVerifier>, NoteError> {
    let mut found: Option<&NoteVerifier> = None;
    for v in verifiers
        .iter()
        .filter(|v| v.name == name && v.key_id == key_id)
    {
        match found {
            Some(f) if f.key != v.key => {
                return Err(NoteError::MalformedKey(format!(
                    "ambiguous key {name}+{key_id:08x}"
                )));
            }
            Some(_) => {}
            None => found = Some(v),
        }
    }
    Ok(found)
}

/// One signature line, unverified: key name, key ID, signature bytes after the key ID.
pub(crate) type RawSignature<'a> = (&'a str, u32, Vec<u8>);

/// A note's text and its signature lines, nothing verified: for `cosignature`, whose
/// signatures use another key ID scheme.
pub(crate) fn split_signatures(note: &str) -> Result<(&str, Vec<RawSignature<'_>>), NoteError> {
    let parsed = parse_note(note)?;
    let sigs = parsed
        .signatures
        .into_iter()
        .map(|s| (s.name, s.key_id, s.signature))
        .collect();
    Ok((parsed.text, sigs))
}

/// The key name and key ID of each signature line of `note`, in order (none verified): who
/// claims to have signed it, for saying so when no trusted key did.
pub fn signers(note: &str) -> Result<Vec<(String, u32)>, NoteError> {
    Ok(parse_note(note)?
        .signatures
        .iter()
        .map(|sig| (sig.name.to_owned(), sig.key_id))
        .collect())
}

/// Opens a signed note: at least one signature by a key in `verifiers` must verify; a signature
/// by a known key that does not verify is an error; signatures by unknown keys are ignored.
pub fn open(note: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let parsed = parse_note(note)?;
    let mut verified_by: Vec<String> = Vec::new();
    for sig in &parsed.signatures {
        let Some(verifier) = known_key(verifiers, sig.name, sig.key_id)? else {
            continue;
        };
        if !verifier.verifies(parsed.text, &sig.signature) {
            return Err(NoteError::BadSignature {
                name: sig.name.to_owned(),
            });
        }
        if !verified_by.iter().any(|n| n == sig.name) {
            verified_by.push(sig.name.to_owned());
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::UnverifiedNote);
    }
    Ok(OpenedNote {
        text: parsed.text.to_owned(),
        verified_by,
    })
}

/// Adds a signature by `signer` to an already signed note (cosigning), returning the new note.
///
/// The existing signatures are kept as they are (they are not verified here: the caller opens
/// the note first if it cares), except one by the same key, which the new one replaces.
pub fn add_signature(note: &str, signer: &NoteSigner) -> Result<String, NoteError> {
    let parsed = parse_note(note)?;
    let kept: Vec<&SignatureLine<'_>> = parsed
        .signatures
        .iter()
        .filter(|s| !(s.name == signer.name && s.key_id == signer.key_id))
        .collect();
    if kept.len() >= MAX_SIGNATURES {
        return Err(malformed("too many signatures"));
    }
    let mut out = String::with_capacity(note.len() + 120);
    out.push_str(parsed.text);
    out.push('\n');
    for s in kept {
        out.push_str(s.line);
    }
    out.push_str(&signer.signature_line(parsed.text));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(is_valid_key_name("PeterNeumann"));
        for bad in [
            "",
            "a b",
            "a+b",
            "a\tb",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{7f}b",
        ] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
            assert_eq!(
                NoteSigner::from_seed(bad, [7; 32]).map(|_| ()),
                Err(NoteError::BadKeyName(bad.to_owned()))
            );
        }
    }

    #[test]
    fn text_must_end_in_newline_and_hold_no_controls() {
        let s = NoteSigner::from_seed("k", [1; 32]).unwrap();
        assert!(s.sign("").is_err());
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("tab\there\n").is_err());
        assert!(s.sign("cr\r\n").is_err());
        assert!(s.sign("ok\n\nblank lines are fine\n").is_ok());
    }

    #[test]
    fn debug_hides_the_seed() {
        let s = NoteSigner::from_seed("k", [0xab; 32]).unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("NoteSigner"));
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }
    #[test]
    fn two_keys_under_one_name_and_id_are_ambiguous() {
        let a = NoteSigner::from_seed("k", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("k", [2; 32]).unwrap();
        // Forge a key-ID collision, which the parser would never let through.
        let mut colliding = b.verifier();
        colliding.key_id = a.key_id;
        let signed = a.sign("text\n").unwrap();
        assert!(matches!(
            open(&signed, &[a.verifier(), colliding.clone()]),
            Err(NoteError::MalformedKey(_))
        ));
        // The same key listed twice is not ambiguous.
        assert!(open(&signed, &[a.verifier(), a.verifier()]).is_ok());
        // A colliding key alone is a known key whose signature fails.
        assert_eq!(
            open(&signed, &[colliding]),
            Err(NoteError::BadSignature { name: "k".into() })
        );
    }
}
