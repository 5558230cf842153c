//! The Standard Webhooks signature scheme (<https://www.standardwebhooks.com/>): the
//! `whsec_` secret, the signed content `<webhook-id>.<webhook-timestamp>.<body>`, the
//! `v1,<base64 HMAC-SHA256>` signature, and the stable message ids. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Prefix of a Standard Webhooks symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest secret bytes accepted.
pub const MIN_SECRET_BYTES: usize = 16;

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
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{} bytes after decoding; at least {MIN_SECRET_BYTES} are needed",
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
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
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
    fn refuses_bad_secrets_and_ids_are_stable_and_distinct() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        let a = webhook_id("node-1", "7", "r");
        assert_eq!(a, webhook_id("node-1", "7", "r"));
        assert_ne!(a, webhook_id("node-1", "8", "r"));
        assert_ne!(a, webhook_id("node-2", "7", "r"));
        assert_ne!(a, webhook_id("node-1", "7", "s"));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }
}
