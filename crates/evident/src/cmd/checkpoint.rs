//! `evident checkpoint` (the latest signed checkpoint) and `evident public-key` (the key that
//! verifies it), plus the reading of public keys and checkpoints that `verify` and `proof`
//! share. What is trusted comes from the user where possible: a key passed with
//! `--public-key` pins the server's identity.

use crate::client::{ApiClient, ClientArgs};
use anyhow::Context as _;
use clap::Args;
use evident_core::{Checkpoint, NoteVerifier};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Write the signed checkpoint to this file instead of stdout (`-`: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Check the signature against this public key (a verifier key string, or a file holding
    /// one) before printing or saving.
    #[arg(long, value_name = "VKEY_OR_FILE")]
    pub public_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct PublicKeyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read the key from this data directory instead of asking a server.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the key to this file instead of stdout (`-`: stdout).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The node's witness (cosigner) key instead, for `[witness].keys` and
    /// `evident verify --witness-key`.
    #[arg(long)]
    pub witness: bool,
}

#[derive(serde::Deserialize)]
struct WitnessStatus {
    cosigner_key: String,
}

/// A verifier key given as the key string itself or as a file that holds it.
pub fn load_verifier(arg: &str) -> anyhow::Result<NoteVerifier> {
    let path = Path::new(arg);
    let (text, source) = if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read public key file {}", path.display()))?;
        (text, format!("public key file {}", path.display()))
    } else {
        (arg.to_owned(), "--public-key".to_owned())
    };
    NoteVerifier::parse(text.trim()).with_context(|| {
        format!("{source} is not a verifier key (expected <name>+<key id>+<base64 key>)")
    })
}

/// Reads a signed checkpoint note from a file.
pub fn read_checkpoint_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint file {}", path.display()))
}

/// Fetches the latest signed checkpoint.
pub fn fetch_checkpoint(client: &ApiClient) -> anyhow::Result<String> {
    client
        .get_text("api/v1/checkpoint")
        .context("fetching the checkpoint")
}

/// Fetches the server's public key.
pub fn fetch_public_key(client: &ApiClient) -> anyhow::Result<NoteVerifier> {
    let text = client
        .get_text("api/v1/public-key")
        .context("fetching the public key")?;
    NoteVerifier::parse(text.trim()).context("the server's public key does not parse")
}

/// Opens `note` with `verifier`, with a message that says what failed.
pub fn open_checkpoint(note: &str, verifier: &NoteVerifier) -> anyhow::Result<Checkpoint> {
    Checkpoint::open(note, verifier).with_context(|| {
        format!(
            "the checkpoint does not verify with key {}",
            verifier.to_vkey_string()
        )
    })
}

fn write_output(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

pub fn run(args: CheckpointArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let note = fetch_checkpoint(&client)?;
    let summary = match &args.public_key {
        Some(key) => {
            let verifier = load_verifier(key)?;
            let cp = open_checkpoint(&note, &verifier)?;
            format!(
                "checkpoint verified: origin {}, size {}, root {}",
                cp.origin, cp.size, cp.root
            )
        }
        None => {
            let body = note.split("\n\n").next().unwrap_or_default();
            let cp =
                Checkpoint::parse(&format!("{body}\n")).context("the checkpoint does not parse")?;
            format!(
                "checkpoint (signature not checked; pass --public-key): origin {}, size {}, root {}",
                cp.origin, cp.size, cp.root
            )
        }
    };
    let out = super::out_file(args.out.as_deref());
    write_output(out, &note)?;
    if let Some(path) = out {
        let _ = writeln!(
            std::io::stderr(),
            "{summary}\nwritten to {}",
            path.display()
        );
    }
    Ok(())
}

pub fn run_public_key(args: PublicKeyArgs) -> anyhow::Result<()> {
    if args.witness {
        let key = match &args.data_dir {
            Some(dir) => {
                let files = evident_server::NodeFiles::open_readonly(dir)
                    .with_context(|| format!("reading the node identity in {}", dir.display()))?;
                evident_server::witness::node_cosigner(&files)
                    .context("deriving the witness key")?
                    .verifier()
                    .to_vkey_string()
            }
            None => {
                let status: WitnessStatus = ApiClient::new(&args.client)?
                    .get_json("api/v1/witness", &[])
                    .context("fetching the witness key")?;
                status.cosigner_key
            }
        };
        return write_output(super::out_file(args.out.as_deref()), &format!("{key}\n"));
    }
    let verifier = match &args.data_dir {
        Some(dir) => evident_server::NodeFiles::open_readonly(dir)
            .with_context(|| format!("reading the node identity in {}", dir.display()))?
            .verifier(),
        None => fetch_public_key(&ApiClient::new(&args.client)?)?,
    };
    write_output(
        super::out_file(args.out.as_deref()),
        &format!("{}\n", verifier.to_vkey_string()),
    )
}
