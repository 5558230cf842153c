//! The witness policy of `evident verify`: `--witness-key KEY...` (cosigner verifier keys,
//! or files holding them) and `--witnesses-required K`. A checkpoint passes with at least K
//! valid `cosignature/v1` cosignatures by distinct listed witnesses; the server library's
//! `witness::check_policy` decides.

use crate::output::VerificationFailed;
use anyhow::Context as _;
use clap::Args;
use evident_core::Checkpoint;
use evident_core::cosignature::CosignatureVerifier;
use evident_server::witness::check_policy;
use std::path::Path;

#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// A witness whose cosignatures count (its cosigner key `<name>+<key id>+<base64>`, as
    /// a node's `GET /api/v1/witness` shows it, or a file holding it); repeatable.
    #[arg(long, value_name = "KEY_OR_FILE", num_args = 1.., requires = "witnesses_required")]
    pub witness_key: Vec<String>,
    /// Refuse a checkpoint without this many valid cosignatures by distinct listed witnesses
    /// (k of n): the server's current one online, and every --checkpoint file.
    #[arg(long, value_name = "K", requires = "witness_key")]
    pub witnesses_required: Option<usize>,
}

/// A k-of-n witness policy from the command line.
pub struct Policy {
    witnesses: Vec<CosignatureVerifier>,
    required: usize,
}

impl WitnessArgs {
    /// The policy, if one was asked for.
    pub fn policy(&self) -> anyhow::Result<Option<Policy>> {
        let Some(required) = self.witnesses_required else {
            return Ok(None);
        };
        let mut witnesses: Vec<CosignatureVerifier> = Vec::new();
        for arg in &self.witness_key {
            let path = Path::new(arg);
            let text = if path.is_file() {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read witness key file {}", path.display()))?
            } else {
                arg.clone()
            };
            let key = CosignatureVerifier::parse(text.trim()).with_context(|| {
                format!("--witness-key {arg:?} is not a cosigner key (<name>+<key id>+<base64 of 0x04 and the key>)")
            })?;
            if witnesses.iter().any(|w| w.name() == key.name()) {
                anyhow::bail!("--witness-key: witness {:?} is given twice", key.name());
            }
            witnesses.push(key);
        }
        if required == 0 || required > witnesses.len() {
            anyhow::bail!(
                "--witnesses-required {required}: must be between 1 and the number of --witness-key given ({})",
                witnesses.len()
            );
        }
        Ok(Some(Policy {
            witnesses,
            required,
        }))
    }
}

impl Policy {
    /// Checks `note` (from `source`); the line to print when it passes.
    pub fn check(&self, note: &str, source: &str) -> anyhow::Result<String> {
        let size = note
            .split_once("\n\n")
            .and_then(|(text, _)| Checkpoint::parse(&format!("{text}\n")).ok())
            .map_or_else(|| "?".to_owned(), |c| c.size.to_string());
        match check_policy(note, &self.witnesses, self.required) {
            Ok(verified) => Ok(format!(
                "  witnessed: the checkpoint of size {size} ({source}) carries {} valid cosignature(s) of the {} required, by {}",
                verified.len(),
                self.required,
                verified
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => Err(VerificationFailed(format!(
                "FAILED: witness policy: the checkpoint of size {size} ({source}): {e}"
            ))
            .into()),
        }
    }
}
