//! `evident proof inclusion|consistency`: fetches a Merkle proof and checks it here, with the
//! core's RFC 9162 verifiers, against a checkpoint signed by the node's key. The server's
//! word is never taken: a root counts only once a signature (or a proof to a signed root)
//! backs it.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::checkpoint::{
    fetch_checkpoint, fetch_public_key, load_verifier, open_checkpoint, read_checkpoint_file,
};
use crate::output::{VerificationFailed, usage};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use evident_core::merkle;
use evident_core::{Checkpoint, Hash, NoteVerifier};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Prove that entry SEQ is in the log (of the latest checkpoint's size, or --size).
    Inclusion(InclusionArgs),
    /// Prove that the log of size FROM is a prefix of the log of size TO.
    Consistency(ConsistencyArgs),
}

/// The public key to check signatures with.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The node's public key (verifier key string or a file holding it). Without it the key
    /// is fetched from the same server, which proves consistency with that server only.
    #[arg(long, value_name = "VKEY_OR_FILE")]
    pub public_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct InclusionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Sequence number of the entry.
    #[arg(long)]
    pub seq: u64,
    /// Tree size to prove against [default: the latest checkpoint's].
    #[arg(long)]
    pub size: Option<u64>,
    /// Check this proof (the JSON of `GET /api/v1/proof/inclusion`, e.g. the `proof` of an
    /// event in a webhook alert) instead of fetching one; with --public-key and a proof that
    /// carries its checkpoint, nothing is asked of any server.
    #[arg(long, value_name = "FILE")]
    pub proof_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConsistencyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The older tree size [default: the size of --checkpoint].
    #[arg(long, required_unless_present = "checkpoint")]
    pub from: Option<u64>,
    /// The newer tree size [default: the latest checkpoint's].
    #[arg(long)]
    pub to: Option<u64>,
    /// An older signed checkpoint you hold (e.g. kept outside the server): the proof must
    /// extend exactly its root.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
struct InclusionProof {
    seq: u64,
    size: u64,
    leaf_hash: Hash,
    hash: Hash,
    seal: Hash,
    proof: Vec<Hash>,
    root: Hash,
    checkpoint: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct ConsistencyProof {
    from: u64,
    to: u64,
    from_root: Hash,
    to_root: Hash,
    proof: Vec<Hash>,
    from_checkpoint: Option<String>,
    to_checkpoint: Option<String>,
}

pub fn run(command: ProofCommand) -> anyhow::Result<()> {
    match command {
        ProofCommand::Inclusion(args) => inclusion(args),
        ProofCommand::Consistency(args) => consistency(args),
    }
}

/// The verifier, and a note for the output saying where it came from.
fn trusted_key(trust: &TrustArgs, client: &ApiClient) -> anyhow::Result<(NoteVerifier, String)> {
    match &trust.public_key {
        Some(arg) => Ok((load_verifier(arg)?, "pinned with --public-key".to_owned())),
        None => Ok((
            fetch_public_key(client)?,
            "fetched from the server; pass --public-key to pin it".to_owned(),
        )),
    }
}

fn failed(message: String) -> anyhow::Error {
    VerificationFailed(format!("FAILED: {message}")).into()
}

fn fetch_consistency(
    client: &ApiClient,
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<ConsistencyProof> {
    let mut query = vec![("from", from.to_string())];
    if let Some(to) = to {
        query.push(("to", to.to_string()));
    }
    client
        .get_json("api/v1/proof/consistency", &query)
        .context("fetching the consistency proof")
}

/// Ties `root` at `size` to a signed checkpoint: the one of that size, or the latest one
/// through a consistency proof. Returns a description of the signed checkpoint.
fn tie_to_signed_root(
    client: &ApiClient,
    verifier: &NoteVerifier,
    size: u64,
    root: &Hash,
    exact: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(note) = exact {
        let cp = open_checkpoint(note, verifier)?;
        if cp.size != size || cp.root != *root {
            return Err(failed(format!(
                "the server's checkpoint (size {}, root {}) does not match the proof's root {root} at size {size}",
                cp.size, cp.root
            )));
        }
        return Ok(format!("checkpoint {} of size {}", cp.origin, cp.size));
    }
    let latest: Checkpoint = open_checkpoint(&fetch_checkpoint(client)?, verifier)?;
    if latest.size == size {
        if latest.root != *root {
            return Err(failed(format!(
                "the signed checkpoint of size {size} has root {}, the proof {root}",
                latest.root
            )));
        }
        return Ok(format!(
            "checkpoint {} of size {}",
            latest.origin, latest.size
        ));
    }
    if latest.size < size {
        return Err(failed(format!(
            "no signed checkpoint covers size {size} (latest is {})",
            latest.size
        )));
    }
    let link = fetch_consistency(client, size, Some(latest.size))?;
    merkle::verify_consistency(size, root, latest.size, &latest.root, &link.proof).map_err(
        |e| {
            failed(format!(
                "the root at size {size} is not a prefix of the signed checkpoint of size {}: {e}",
                latest.size
            ))
        },
    )?;
    Ok(format!(
        "checkpoint {} of size {} (through a consistency proof from size {size})",
        latest.origin, latest.size
    ))
}

fn inclusion(args: InclusionArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let (verifier, key_note) = trusted_key(&args.trust, &client)?;
    let mut query = vec![("seq", args.seq.to_string())];
    if let Some(size) = args.size {
        query.push(("size", size.to_string()));
    }
    let p: InclusionProof = match &args.proof_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --proof-file {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!("--proof-file {}: not an inclusion proof", path.display())
            })?
        }
        None => client
            .get_json("api/v1/proof/inclusion", &query)
            .context("fetching the inclusion proof")?,
    };
    if p.seq != args.seq || args.size.is_some_and(|s| s != p.size) {
        return Err(failed(format!(
            "asked for entry {} at {}, the server answered entry {} at size {}",
            args.seq,
            size_asked(args.size),
            p.seq,
            p.size
        )));
    }
    let mut leaf_data = [0u8; 64];
    leaf_data[..32].copy_from_slice(p.hash.as_bytes());
    leaf_data[32..].copy_from_slice(p.seal.as_bytes());
    let leaf = merkle::leaf_hash(&leaf_data);
    if leaf != p.leaf_hash {
        return Err(failed(format!(
            "the leaf hash {} is not the leaf of entry hash {} and seal {}",
            p.leaf_hash, p.hash, p.seal
        )));
    }
    merkle::verify_inclusion(&leaf, p.seq, p.size, &p.proof, &p.root).map_err(|e| {
        failed(format!(
            "entry {} is not proven in the tree of size {}: {e}",
            p.seq, p.size
        ))
    })?;
    let signed = tie_to_signed_root(&client, &verifier, p.size, &p.root, p.checkpoint.as_deref())?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OK: entry {} is included in the log of size {}",
        p.seq, p.size
    )?;
    writeln!(out, "  entry hash: {}", p.hash)?;
    writeln!(out, "  seal:       {}", p.seal)?;
    writeln!(out, "  root:       {}", p.root)?;
    writeln!(out, "  proof:      {} hashes", p.proof.len())?;
    writeln!(out, "  signed by:  {signed}")?;
    writeln!(
        out,
        "  public key: {} ({key_note})",
        verifier.to_vkey_string()
    )?;
    Ok(())
}

fn consistency(args: ConsistencyArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let (verifier, key_note) = trusted_key(&args.trust, &client)?;
    let held = match &args.checkpoint {
        Some(path) => {
            let cp = open_checkpoint(&read_checkpoint_file(path)?, &verifier)
                .with_context(|| format!("checkpoint file {}", path.display()))?;
            if args.from.is_some_and(|f| f != cp.size) {
                return Err(usage(format!(
                    "--from {} differs from the size {} of --checkpoint; give one or make them agree",
                    args.from.unwrap_or_default(),
                    cp.size
                )));
            }
            Some(cp)
        }
        None => None,
    };
    let from = match (&held, args.from) {
        (Some(cp), _) => cp.size,
        (None, Some(from)) => from,
        (None, None) => return Err(usage("give --from or --checkpoint")),
    };
    let p = fetch_consistency(&client, from, args.to)?;
    if p.from != from || args.to.is_some_and(|t| t != p.to) {
        return Err(failed(format!(
            "asked for sizes {from} to {}, the server answered {} to {}",
            args.to
                .map_or_else(|| "the latest".to_owned(), |t| t.to_string()),
            p.from,
            p.to
        )));
    }
    // The old root is the one we trust when we hold it; the server's is checked against it.
    let (old_root, old_source) = match &held {
        Some(cp) => {
            if cp.root != p.from_root {
                return Err(failed(format!(
                    "the log's root at size {from} is {}, but your checkpoint says {}: history was rewritten",
                    p.from_root, cp.root
                )));
            }
            (cp.root, "your checkpoint file".to_owned())
        }
        None => match &p.from_checkpoint {
            Some(note) => {
                let cp = open_checkpoint(note, &verifier)?;
                if cp.size != from || cp.root != p.from_root {
                    return Err(failed(format!(
                        "the server's checkpoint of size {} does not match its root {} at size {from}",
                        cp.size, p.from_root
                    )));
                }
                (
                    cp.root,
                    format!("checkpoint {} of size {}", cp.origin, cp.size),
                )
            }
            None => (
                p.from_root,
                "unsigned: no checkpoint of exactly that size; pass --checkpoint".to_owned(),
            ),
        },
    };
    merkle::verify_consistency(from, &old_root, p.to, &p.to_root, &p.proof).map_err(|e| {
        failed(format!(
            "the log of size {from} is not a prefix of the log of size {}: {e}",
            p.to
        ))
    })?;
    let new_source = tie_to_signed_root(
        &client,
        &verifier,
        p.to,
        &p.to_root,
        p.to_checkpoint.as_deref(),
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OK: the log of size {from} is a prefix of the log of size {}",
        p.to
    )?;
    writeln!(out, "  old root:   {old_root} ({old_source})")?;
    writeln!(out, "  new root:   {} (signed by {new_source})", p.to_root)?;
    writeln!(out, "  proof:      {} hashes", p.proof.len())?;
    writeln!(
        out,
        "  public key: {} ({key_note})",
        verifier.to_vkey_string()
    )?;
    Ok(())
}

/// The size a request asked for, in words (no `Some(…)` in messages).
fn size_asked(size: Option<u64>) -> String {
    size.map_or_else(|| "the latest size".to_owned(), |s| format!("size {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_asked_read_as_words_not_debug_output() {
        assert_eq!(size_asked(Some(52)), "size 52");
        assert_eq!(size_asked(None), "the latest size");
    }
}
