//! The Standard Webhooks signature scheme (<https://www.standardwebhooks.com/>): the
//! `whsec_` secret, the signed content `<webhook-id>.<webhook-timestamp>.<body>`, the
//! `v1,<base64 HMAC-SHA256>` signature, and the stable message ids. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Prefix of a Standard Webhooks symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest secret bytes accepted (the specification: at least 24, at most 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// Most secret bytes accepted.
pub const MAX_SECRET_BYTES: usize = 64;
/// Prefix of a Standard Webhooks Ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// A decoded `whsec_` secret (its bytes never appear in debug output).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; the error says what is wrong (never the secret).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("expected {SECRET_PREFIX}<base64> (a Standard Webhooks secret)")
        })?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| format!("the part after {SECRET_PREFIX} is not base64: {e}"))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(format!(
                "{} bytes after decoding; {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} are needed",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes a key of any length.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(&signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The signed content of a message: `<id>.<timestamp>.<body>`.
pub fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The asymmetric signature `v1a,<base64 Ed25519>` with the node's key, or `None` when the
/// content holds a newline (a body is compact JSON, which never does).
pub fn sign_ed25519(
    signer: &evident_core::NoteSigner,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    let signature = signer.sign_newline_free(&signed_content(id, timestamp, body))?;
    Some(format!("v1a,{}", STANDARD.encode(signature)))
}

/// The node's key as a Standard Webhooks public key, `whpk_<base64>`.
pub fn public_key(verifier: &evident_core::NoteVerifier) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        STANDARD.encode(verifier.public_key_bytes())
    )
}

/// The stable `webhook-id` of the alert `rule` raised for `subject` (an entry's sequence
/// number, or a condition and when it began) on node `node_id`: the same for every retry and
/// after a restart, different for every other alert.
pub fn webhook_id(node_id: &str, subject: &str, rule: &str) -> String {
    let mut hash = Sha256::new();
    for part in ["evident-webhook", node_id, subject, rule] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    format!("msg_{}", hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn v1a_is_an_ed25519_signature_of_the_same_content() {
        let signer = evident_core::NoteSigner::from_seed("evident/node-1", [7u8; 32]).unwrap();
        let v1a = sign_ed25519(&signer, "msg_1", 1614265330, br#"{"a":1}"#).unwrap();
        let signature = STANDARD.decode(v1a.strip_prefix("v1a,").unwrap()).unwrap();
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&signer.verifier().public_key_bytes()).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        key.verify_strict(b"msg_1.1614265330.{\"a\":1}", &signature)
            .unwrap();
        assert!(sign_ed25519(&signer, "msg_1", 1, b"{\n}").is_none());
        assert!(public_key(&signer.verifier()).starts_with("whpk_"));
    }

    #[test]
    fn refuses_bad_secrets_and_ids_are_stable_and_distinct() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        // 23 bytes: below the specification's 24.
        assert!(Secret::parse("whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=").is_err());
        let a = webhook_id("node-1", "7", "r");
        assert_eq!(a, webhook_id("node-1", "7", "r"));
        assert_ne!(a, webhook_id("node-1", "8", "r"));
        assert_ne!(a, webhook_id("node-2", "7", "r"));
        assert_ne!(a, webhook_id("node-1", "7", "s"));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }
}
