//! `evident verify`, three ways, each deciding nothing itself:
//! - `--data-dir DIR`: the local store, read-only, seals checked with the node's secret,
//!   through the server library's `verify_store` (the same walk as `GET /api/v1/verify`);
//! - `--url/--key` (default): asks a running server (`GET /api/v1/verify`);
//! - `--export FILE --public-key KEY [--checkpoint FILE]`: offline, streaming the file
//!   through the core's `ExportVerifier` in constant memory.
//!
//! Intact: a summary on stdout, exit 0. Otherwise `FAILED at seq N: reason` on stderr
//! (or the line, for an export), exit 1.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::checkpoint::{load_verifier, read_checkpoint_file};
use crate::output::{VerificationFailed, bytes_progress, count_progress};
use anyhow::Context as _;
use clap::Args;
use evident_core::Checkpoint;
use evident_core::export::{ExportError, ExportReport, ExportVerifier};
use evident_server::verification::{self, Problem, VerifyOutcome};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Verify the log in this local data directory (read-only; seals are checked with the
    /// node's secret). Works while a server runs on it.
    #[arg(long, value_name = "DIR", conflicts_with = "export")]
    pub data_dir: Option<PathBuf>,
    /// Verify an NDJSON export bundle offline.
    #[arg(
        long,
        value_name = "FILE",
        requires = "public_key",
        conflicts_with = "from"
    )]
    pub export: Option<PathBuf>,
    /// The node's public key (verifier key string, or a file holding it), for --export.
    #[arg(long, value_name = "VKEY_OR_FILE", requires = "export")]
    pub public_key: Option<String>,
    /// A signed checkpoint held elsewhere, for --export: an export of an older, smaller log
    /// than this checkpoint is reported as truncation or rollback.
    #[arg(long, value_name = "FILE", requires = "export")]
    pub checkpoint: Option<PathBuf>,
    /// Start at this sequence number (trusting the stored state just before it).
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        return verify_data_dir(dir, args.from);
    }
    if let Some(file) = &args.export {
        let key = args.public_key.as_deref().unwrap_or_default();
        return verify_export(file, key, args.checkpoint.as_deref());
    }
    verify_online(&args.client, args.from)
}

/// The message of a problem without the "entry N: " the core puts first, since the verdict
/// line already names the entry.
fn reason(message: &str, seq: Option<u64>) -> String {
    match seq {
        Some(seq) => message
            .strip_prefix(&format!("entry {seq}: "))
            .unwrap_or(message)
            .to_owned(),
        None => message.to_owned(),
    }
}

fn failed_at(seq: Option<u64>, message: &str, checked: u64) -> anyhow::Error {
    let verdict = match seq {
        Some(seq) => format!("FAILED at seq {seq}: {}", reason(message, Some(seq))),
        None => format!("FAILED: {message}"),
    };
    VerificationFailed(format!("{verdict}\n({checked} entries before it verified)")).into()
}

fn verify_data_dir(dir: &Path, from: Option<u64>) -> anyhow::Result<()> {
    let files = evident_server::NodeFiles::open_readonly(dir)
        .with_context(|| format!("opening data directory {}", dir.display()))?;
    let store = files
        .open_store()
        .with_context(|| format!("opening the database in {}", dir.display()))?;
    // Only for the progress bar: a head that cannot be read is for the walk to judge.
    let total = store
        .load_head()
        .ok()
        .map(|head| head.next_seq.saturating_sub(from.unwrap_or(0)));
    let bar = count_progress(total, "verifying");
    let outcome = verification::verify_store_with_progress(
        &*store,
        files.seal_key(),
        &files.verifier(),
        files.node_id(),
        from,
        &mut |n| bar.set_position(n),
    );
    bar.finish_and_clear();
    match outcome.with_context(|| format!("verifying {}", dir.display()))? {
        VerifyOutcome::Intact(report) => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "OK: log intact: {} entries{} of node {}, seals checked, {} signed checkpoint(s) matched",
                report.entries,
                span(report.first_seq, report.size),
                files.node_id(),
                report.checkpoints_checked
            )?;
            writeln!(out, "  size {} root {}", report.size, report.root)?;
            if let Ok(Some(anchor)) = store.prune_anchor() {
                writeln!(
                    out,
                    "  started from the retention anchor: entries below {} were pruned \
                     (anchor hash {}, checkpoint of size {})",
                    anchor.below_seq, anchor.hash, anchor.checkpoint_size
                )?;
            }
            Ok(())
        }
        VerifyOutcome::Broken {
            problem,
            entries_checked,
        } => Err(broken(&problem, entries_checked)),
    }
}

fn broken(problem: &Problem, checked: u64) -> anyhow::Error {
    failed_at(problem.seq(), &problem.to_string(), checked)
}

fn span(first: Option<u64>, size: u64) -> String {
    match first {
        Some(first) if size > first => format!(" (seq {first} to {})", size - 1),
        _ => String::new(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct VerifyResponse {
    ok: bool,
    entries: u64,
    first_seq: Option<u64>,
    size: Option<u64>,
    root: Option<String>,
    checkpoints_checked: Option<u64>,
    violation: Option<ViolationJson>,
}

#[derive(Debug, serde::Deserialize)]
struct ViolationJson {
    kind: String,
    seq: Option<u64>,
    message: String,
}

fn verify_online(client_args: &ClientArgs, from: Option<u64>) -> anyhow::Result<()> {
    // The server answers only when the whole walk is done: no read timeout.
    let client = ApiClient::with_timeout(client_args, None)?;
    let query: Vec<(&str, String)> = from.map(|f| ("from", f.to_string())).into_iter().collect();
    let answer: VerifyResponse = client
        .get_json("api/v1/verify", &query)
        .context("asking the server to verify its log")?;
    if answer.ok {
        let size = answer.size.unwrap_or(0);
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "OK: log intact (verified by the server at {}): {} entries{}, seals checked, {} signed checkpoint(s) matched",
            client_args.url,
            answer.entries,
            span(answer.first_seq, size),
            answer.checkpoints_checked.unwrap_or(0)
        )?;
        writeln!(
            out,
            "  size {size} root {}",
            answer.root.as_deref().unwrap_or("?")
        )?;
        return Ok(());
    }
    match answer.violation {
        Some(v) => Err(failed_at(
            v.seq,
            &format!("{} [{}]", v.message, v.kind),
            answer.entries,
        )),
        None => Err(VerificationFailed(
            "FAILED: the server reports a problem but does not say which".to_owned(),
        )
        .into()),
    }
}

/// Bytes read from an export file at a time.
const READ_BUFFER: usize = 256 * 1024;

fn verify_export(file: &Path, public_key: &str, checkpoint: Option<&Path>) -> anyhow::Result<()> {
    let verifier = load_verifier(public_key)?;
    let trusted = checkpoint.map(read_checkpoint_file).transpose()?;
    // Only for a hint; a checkpoint that does not open is for the verifier to report.
    let trusted_size = trusted
        .as_deref()
        .and_then(|note| Checkpoint::open(note, &verifier).ok())
        .map(|cp| cp.size);
    let opened = std::fs::File::open(file)
        .with_context(|| format!("cannot open export {}", file.display()))?;
    let total = opened.metadata().ok().map(|m| m.len());
    let bar = bytes_progress(total, "verifying");
    let result = check_export_stream(
        opened,
        ExportVerifier::new(verifier.clone(), trusted.clone()),
        trusted_size,
        &mut |n| bar.inc(n),
    );
    bar.finish_and_clear();
    let report = result.with_context(|| format!("reading export {}", file.display()))??;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OK: export intact: {} entries in {} run(s){}, tied to a checkpoint of size {} signed by {}",
        report.entries,
        report.runs,
        match (report.first_seq, report.last_seq) {
            (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
            _ => String::new(),
        },
        report.checkpoint_size,
        verifier.name()
    )?;
    if trusted.is_some() {
        writeln!(
            out,
            "  consistent with your checkpoint: no truncation or rollback"
        )?;
    }
    Ok(())
}

/// Feeds `input` to `verifier` in fixed-size chunks (the core cuts lines and bounds their
/// length, so memory stays constant whatever the file holds). The outer error is an I/O
/// failure; the inner one the verdict on a bad export. `trusted_size` is the size of the
/// user's checkpoint, for the hint when the export cannot be tied to it.
fn check_export_stream(
    mut input: impl Read,
    mut verifier: ExportVerifier,
    trusted_size: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<anyhow::Result<ExportReport>> {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        progress(n as u64);
        if let Err(e) = verifier.push_bytes(buf.get(..n).unwrap_or_default()) {
            return Ok(Err(export_failure(e, trusted_size)));
        }
    }
    Ok(verifier
        .finish()
        .map_err(|e| export_failure(e, trusted_size)))
}

fn export_failure(error: ExportError, trusted_size: Option<u64>) -> anyhow::Error {
    let verdict = match &error {
        ExportError::Violation { line, violation } => match violation.seq() {
            Some(seq) => format!(
                "FAILED at seq {seq} (line {line}): {}",
                reason(&violation.to_string(), Some(seq))
            ),
            None => format!("FAILED at line {line}: {violation}"),
        },
        ExportError::Malformed { line, problem } => format!("FAILED at line {line}: {problem}"),
        ExportError::Truncated(what) => format!("FAILED: the export is truncated: {what}"),
        ExportError::Unprovable { line, problem } => {
            // Say how to get an export that can be checked: the exporter passes the size.
            let hint = trusted_size.map_or_else(String::new, |size| {
                format!(
                    "\n(`evident export --format ndjson --consistency-from {size}` makes an export that carries this proof)"
                )
            });
            format!(
                "FAILED at line {line}: cannot check the export against your checkpoint: {problem}{hint}"
            )
        }
    };
    VerificationFailed(verdict).into()
}
