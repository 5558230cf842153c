//! The k-of-n witness policy: a checkpoint counts as witnessed when at least `k` of the
//! listed witnesses cosigned it (distinct witnesses, each signature verified). Used by
//! `evident verify --witnesses-required` and the node's witness status.

use evident_core::cosignature::{
    CosignatureError, CosignatureVerifier, VerifiedCosignature, verified_cosignatures,
};

/// Why a checkpoint does not meet the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Fewer than `required` listed witnesses cosigned it.
    #[error(
        "{} of the {required} required cosignatures verified (from {listed} listed witness key(s){})",
        verified.len(),
        if verified.is_empty() { String::new() } else { format!(": {}", verified.join(", ")) }
    )]
    NotEnough {
        /// The names of the witnesses whose cosignatures verified.
        verified: Vec<String>,
        required: usize,
        listed: usize,
    },
    /// A line under a listed witness's name and key ID does not verify (forged or damaged).
    #[error(transparent)]
    Bad(#[from] CosignatureError),
}

/// The verified cosignatures of `note` by `witnesses` when at least `required` distinct
/// ones verify, else why not.
pub fn check_policy(
    note: &str,
    witnesses: &[CosignatureVerifier],
    required: usize,
) -> Result<Vec<VerifiedCosignature>, PolicyError> {
    let verified = verified_cosignatures(note, witnesses)?;
    if verified.len() < required {
        return Err(PolicyError::NotEnough {
            verified: verified.into_iter().map(|c| c.name).collect(),
            required,
            listed: witnesses.len(),
        });
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_core::cosignature::CosignatureSigner;
    use evident_core::{Checkpoint, Hash, NoteSigner};

    #[test]
    fn policy_counts_distinct_listed_witnesses_only() {
        let log = NoteSigner::from_seed("log.example", [1; 32]).unwrap();
        let note = Checkpoint {
            origin: "log.example".into(),
            size: 5,
            root: Hash([3; 32]),
            extensions: vec![],
        }
        .sign(&log)
        .unwrap();
        let w: Vec<CosignatureSigner> = (0..3)
            .map(|i| CosignatureSigner::from_seed(&format!("w{i}"), [10 + i; 32]).unwrap())
            .collect();
        let stranger = CosignatureSigner::from_seed("stranger", [99; 32]).unwrap();
        let listed: Vec<_> = w.iter().map(CosignatureSigner::verifier).collect();
        // w0 twice and an unlisted witness: still one.
        let mut cosigned = note.clone();
        for line in [
            w[0].cosign_note(&note, 10).unwrap(),
            w[0].cosign_note(&note, 11).unwrap(),
            stranger.cosign_note(&note, 12).unwrap(),
        ] {
            cosigned.push_str(&line);
        }
        let err = check_policy(&cosigned, &listed, 2).unwrap_err();
        assert_eq!(
            err,
            PolicyError::NotEnough {
                verified: vec!["w0".into()],
                required: 2,
                listed: 3
            }
        );
        assert!(err.to_string().starts_with("1 of the 2 required"), "{err}");
        cosigned.push_str(&w[2].cosign_note(&note, 13).unwrap());
        assert_eq!(check_policy(&cosigned, &listed, 2).unwrap().len(), 2);
        assert!(check_policy(&note, &listed, 1).is_err());
    }
}
