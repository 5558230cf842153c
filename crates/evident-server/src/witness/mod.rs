//! Witnessing between cluster peers (C2SP tlog-witness and tlog-cosignature): this node
//! cosigns its peers' checkpoints (`cosigner.rs`, behind `POST /api/v1/witness/add-checkpoint`),
//! submits its own checkpoints to every peer and keeps the cosignatures they return
//! (`submitter.rs`, a consumer of kind `witness`), states the k-of-n policy (`policy.rs`,
//! `[witness]` in the configuration), and follows each peer's signing-key rotations
//! (`peer_keys.rs`). Its own cosigner key is [`node_cosigner`]: derived from the node's
//! original signing key, the same across its rotations.

pub mod cosigner;
pub mod peer_keys;
pub mod policy;
pub mod submitter;

pub use cosigner::{WitnessError, add_checkpoint, node_cosigner};
pub use peer_keys::PeerKeys;
pub use policy::{PolicyError, check_policy};
pub use submitter::spawn_all;

use evident_core::cosignature::CosignatureVerifier;
use serde::{Deserialize, Serialize};

/// The alert-raising event a witness writes when a peer presents a fork or a rollback. Its
/// `evident.integrity.` prefix puts it under the built-in integrity alert rule.
pub const CONFLICT_ACTION: &str = "evident.integrity.witness_conflict";

/// `[witness]`: which witnesses' cosignatures count and how many a checkpoint needs. Off by
/// default (`policy_k = 0`: no cosignature required).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WitnessConfig {
    /// How many valid cosignatures, by distinct witnesses of `keys`, a checkpoint needs.
    pub policy_k: usize,
    /// The witnesses that count: cosigner verifier keys (`<name>+<key id>+<base64(0x04 ‖
    /// key)>`, as each node's `GET /api/v1/witness` shows as `cosigner_key`).
    pub keys: Vec<String>,
}

/// A `[witness]` setting that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WitnessConfigError {
    pub field: String,
    pub message: String,
}

impl WitnessConfig {
    /// Whether a policy is set (at least one cosignature required).
    pub fn enabled(&self) -> bool {
        self.policy_k > 0
    }

    /// The listed witnesses' keys; the first that does not parse is named.
    pub fn verifiers(&self) -> Result<Vec<CosignatureVerifier>, WitnessConfigError> {
        let mut out: Vec<CosignatureVerifier> = Vec::with_capacity(self.keys.len());
        for (i, key) in self.keys.iter().enumerate() {
            let verifier = CosignatureVerifier::parse(key).map_err(|e| WitnessConfigError {
                field: format!("witness.keys[{i}]"),
                message: format!("not a cosignature/v1 verifier key: {e}"),
            })?;
            if out.iter().any(|v| v.name() == verifier.name()) {
                return Err(WitnessConfigError {
                    field: format!("witness.keys[{i}]"),
                    message: format!("witness {:?} is listed twice", verifier.name()),
                });
            }
            out.push(verifier);
        }
        Ok(out)
    }

    /// Checks the table: every key parses, names are distinct, `policy_k` at most the keys.
    pub fn validate(&self) -> Result<(), WitnessConfigError> {
        let verifiers = self.verifiers()?;
        if self.policy_k > verifiers.len() {
            return Err(WitnessConfigError {
                field: "witness.policy_k".into(),
                message: format!(
                    "requires {} cosignatures but only {} witness key(s) are listed in witness.keys",
                    self.policy_k,
                    verifiers.len()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_core::cosignature::CosignatureSigner;

    fn key(name: &str, seed: u8) -> String {
        CosignatureSigner::from_seed(name, [seed; 32])
            .unwrap()
            .verifier()
            .to_vkey_string()
    }

    #[test]
    fn witness_table_is_off_by_default_and_names_the_bad_field() {
        let off = WitnessConfig::default();
        assert!(!off.enabled());
        assert_eq!(off.validate(), Ok(()));
        let text = format!(
            "policy_k = 2\nkeys = [\"{}\", \"{}\"]\n",
            key("a/witness", 1),
            key("b/witness", 2)
        );
        let two: WitnessConfig = toml::from_str(&text).unwrap();
        assert!(two.enabled());
        assert_eq!(two.validate(), Ok(()));
        let mut too_many = two.clone();
        too_many.policy_k = 3;
        assert_eq!(too_many.validate().unwrap_err().field, "witness.policy_k");
        let mut bad = two.clone();
        bad.keys[1] = "nonsense".into();
        assert_eq!(bad.validate().unwrap_err().field, "witness.keys[1]");
        let mut twice = two;
        twice.keys[1] = key("a/witness", 3);
        assert_eq!(twice.validate().unwrap_err().field, "witness.keys[1]");
        assert!(toml::from_str::<WitnessConfig>("policy = \"2-of-3\"").is_err());
    }
}
