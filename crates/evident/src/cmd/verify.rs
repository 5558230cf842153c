//! `evident verify`, one way per kind of evidence, each deciding nothing itself:
//! - `--data-dir DIR`: the local store, read-only, seals checked with the node's secret,
//!   through the server library's `verify_store` (the same walk as `GET /api/v1/verify`);
//! - `--url/--key` (default): asks a running server (`GET /api/v1/verify`);
//! - `--export FILE --public-key KEY [--checkpoint FILE]`: offline, streaming the file
//!   through the core's `ExportVerifier` in constant memory; a four-eyes report bundle
//!   (recognised by its header) through the core's `verify_report`, which also recomputes
//!   the report from the entries it carries;
//! - `--export FILE --node-key NODE=KEY ...`: a cluster bundle (recognised by its header),
//!   every node's part through the same `ExportVerifier` with the key pinned for that node,
//!   by the core's `ClusterExportVerifier`, naming the node of any failure;
//! - `--syslog FILE --public-key KEY`: offline, what a syslog receiver wrote, through the
//!   server library's `forward::receiver`.
//!
//! Intact: a summary on stdout, exit 0. Otherwise `FAILED at seq N: reason` on stderr
//! (or the line, for an export), exit 1.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::checkpoint::{load_verifier, read_checkpoint_file};
use crate::output::{VerificationFailed, bytes_progress, count_progress};
use anyhow::Context as _;
use clap::Args;
use evident_core::Checkpoint;
use evident_core::export::{Completeness, ExportError, ExportReport, ExportVerifier};
use evident_core::filter::ActionFilter;
use evident_core::four_eyes::bundle as four_eyes_bundle;
use evident_server::verification::{self, Problem, VerifyOutcome};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("export_keys").args(["public_key", "node_key"]).multiple(true)))]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Verify the log in this local data directory (read-only; seals are checked with the
    /// node's secret). Works while a server runs on it.
    #[arg(long, value_name = "DIR", conflicts_with = "export")]
    pub data_dir: Option<PathBuf>,
    /// Verify an NDJSON export bundle, a four-eyes report bundle, or a cluster bundle
    /// (`evident export --cluster`, with --node-key for each node), offline.
    #[arg(
        long,
        value_name = "FILE",
        requires = "export_keys",
        conflicts_with = "from"
    )]
    pub export: Option<PathBuf>,
    /// Verify what a syslog receiver wrote (rsyslog's file output of the RFC 5424 lines the
    /// node forwarded): hashes and seals against the payloads, the hash chain, the signed
    /// checkpoint records and their roots; gaps are reported as seq ranges.
    #[arg(
        long,
        value_name = "FILE",
        requires = "public_key",
        conflicts_with_all = ["export", "data_dir", "from", "dir", "bucket"]
    )]
    pub syslog: Option<PathBuf>,
    /// The node's public key (verifier key string, or a file holding it), for --export,
    /// --syslog, --dir and --bucket.
    #[arg(long, value_name = "VKEY_OR_FILE")]
    pub public_key: Option<String>,
    /// For a cluster bundle: the key of one node as NODE=KEY (verifier key string, or a file
    /// holding it); repeat for every node. Each node's part must verify with its key; a node
    /// pinned here without a part, or a part of a node not pinned, fails the verification.
    /// The keys the bundle's header lists are never used.
    #[arg(long, value_name = "NODE=VKEY_OR_FILE")]
    pub node_key: Vec<String>,
    /// Verify a downloaded copy of a published bucket (e.g. `aws s3 sync s3://b/p DIR`):
    /// tiles, entry bundles, period bundles, digests and the checkpoint.
    #[arg(
        long,
        value_name = "DIR",
        requires = "public_key",
        conflicts_with_all = ["export", "data_dir", "bucket", "from"]
    )]
    pub dir: Option<PathBuf>,
    /// Verify a published bucket online (`s3://bucket/prefix`); credentials from the
    /// standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN variables.
    #[arg(
        long,
        value_name = "S3_URL",
        requires = "public_key",
        conflicts_with_all = ["export", "data_dir", "from"]
    )]
    pub bucket: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// A signed checkpoint held elsewhere (a file holding one signed note, or several one
    /// after another); repeatable. With --export, --data-dir or online: a log or export older
    /// or smaller than such a checkpoint is reported as truncation or rollback, one that
    /// disagrees with it as a fork (root_mismatch).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,
    /// Start at this sequence number (trusting the stored state just before it).
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    #[command(flatten)]
    pub witness: crate::cmd::verify_witness::WitnessArgs,
}

/// Where a `--bucket` lives and how to reach it.
#[derive(Debug, Args)]
pub struct S3Args {
    /// The S3 endpoint URL (e.g. http://127.0.0.1:8333); unset: AWS.
    #[arg(
        long,
        value_name = "URL",
        env = "AWS_ENDPOINT_URL",
        requires = "bucket"
    )]
    pub endpoint: Option<String>,
    /// The region requests are signed for (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1).
    #[arg(long, value_name = "REGION", requires = "bucket")]
    pub region: Option<String>,
    /// Virtual-hosted-style requests instead of path-style.
    #[arg(long, requires = "bucket")]
    pub virtual_hosted_style: bool,
    /// A PEM file of CA certificates to trust for the endpoint.
    #[arg(long, value_name = "FILE", requires = "bucket")]
    pub ca_file: Option<PathBuf>,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.syslog {
        return verify_syslog(file, args.public_key.as_deref().unwrap_or_default());
    }
    let policy = args.witness.policy()?;
    let trusted = read_trusted_checkpoints(&args.checkpoint)?;
    if args.public_key.is_some()
        && args.export.is_none()
        && args.dir.is_none()
        && args.bucket.is_none()
    {
        if let (Some(policy), false) = (&policy, trusted.is_empty()) {
            return verify_witnessed_checkpoints(&args, policy, &trusted);
        }
        anyhow::bail!(
            "--public-key is for --export, --syslog, --dir or --bucket (or, with a witness \
             policy, for checking --checkpoint files alone)"
        );
    }
    let mut witnessed = Vec::new();
    if let Some(policy) = &policy {
        for (i, note) in trusted.iter().enumerate() {
            witnessed.push(policy.check(note, &format!("--checkpoint note {}", i + 1))?);
        }
        let online = args.data_dir.is_none()
            && args.export.is_none()
            && args.dir.is_none()
            && args.bucket.is_none();
        if trusted.is_empty() && !online {
            anyhow::bail!(
                "--witnesses-required checks the server's checkpoint online, or the cosigned \
                 checkpoints given with --checkpoint FILE: give one"
            );
        }
    }
    let result = verify_by_kind(&args, &trusted);
    if result.is_ok() {
        let mut out = std::io::stdout().lock();
        for line in &witnessed {
            writeln!(out, "{line}")?;
        }
    }
    result?;
    if let Some(policy) = &policy {
        if args.data_dir.is_none()
            && args.export.is_none()
            && args.dir.is_none()
            && args.bucket.is_none()
        {
            let client = ApiClient::new(&args.client)?;
            let note = crate::cmd::checkpoint::fetch_checkpoint(&client)?;
            let key = crate::cmd::checkpoint::fetch_public_key(&client)?;
            crate::cmd::checkpoint::open_checkpoint(&note, &key)?;
            let line = policy.check(&note, &format!("the server's at {}", args.client.url))?;
            writeln!(std::io::stdout().lock(), "{line}")?;
        }
    }
    Ok(())
}

/// `--checkpoint FILE... --public-key KEY` with a witness policy and nothing else: each
/// checkpoint's signature by the node, then the policy.
fn verify_witnessed_checkpoints(
    args: &VerifyArgs,
    policy: &crate::cmd::verify_witness::Policy,
    trusted: &[String],
) -> anyhow::Result<()> {
    let verifier = load_verifier(args.public_key.as_deref().unwrap_or_default())?;
    let mut lines = Vec::new();
    for (i, note) in trusted.iter().enumerate() {
        Checkpoint::open(note, &verifier).map_err(|e| {
            VerificationFailed(format!(
                "FAILED: --checkpoint note {}: not signed by {}: {e}",
                i + 1,
                verifier.name()
            ))
        })?;
        lines.push(policy.check(note, &format!("--checkpoint note {}", i + 1))?);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OK: {} checkpoint(s) signed by {} and witnessed",
        trusted.len(),
        verifier.name()
    )?;
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The verification `args` asks for, by the kind of evidence.
fn verify_by_kind(args: &VerifyArgs, trusted: &[String]) -> anyhow::Result<()> {
    let trusted = trusted.to_vec();
    if args.dir.is_some() || args.bucket.is_some() {
        return verify_published(args, &trusted);
    }
    if let Some(dir) = &args.data_dir {
        return verify_data_dir(dir, args.from, &trusted);
    }
    if !args.node_key.is_empty() && args.export.is_none() {
        anyhow::bail!("--node-key is for --export FILE of a cluster bundle");
    }
    if let Some(file) = &args.export {
        if crate::cmd::verify_cluster::is_cluster_bundle(file)? {
            return crate::cmd::verify_cluster::run(
                file,
                &args.node_key,
                args.public_key.is_some(),
                &trusted,
            );
        }
        if !args.node_key.is_empty() {
            return Err(crate::output::usage(format!(
                "--node-key is for a cluster bundle; {} is a single node's export: give --public-key KEY",
                file.display()
            )));
        }
        let key = args.public_key.as_deref().unwrap_or_default();
        let trusted = match trusted.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => {
                return Err(anyhow::anyhow!(
                    "--export takes one trusted checkpoint (the newest you hold); got {}",
                    trusted.len()
                ));
            }
        };
        return verify_export(file, key, trusted);
    }
    verify_online(&args.client, args.from, &trusted)
}

/// `--dir` / `--bucket`: one verifier over the publisher's `Bucket` trait for both.
fn verify_published(args: &VerifyArgs, trusted: &[String]) -> anyhow::Result<()> {
    let verifier = load_verifier(args.public_key.as_deref().unwrap_or_default())?;
    let trusted = match trusted {
        [] => None,
        [one] => Some(
            Checkpoint::open(one, &verifier).map_err(|e| anyhow::anyhow!("--checkpoint: {e}"))?,
        ),
        _ => anyhow::bail!(
            "--dir and --bucket take one trusted checkpoint (the newest you hold); got {}",
            trusted.len()
        ),
    };
    let mut config = evident_server::publish::PublishConfig::default();
    if let Some(dir) = &args.dir {
        let dir = std::path::absolute(dir).with_context(|| format!("--dir {}", dir.display()))?;
        if !dir.is_dir() {
            anyhow::bail!("--dir {}: not a directory", dir.display());
        }
        config.target = Some(format!("file://{}", dir.display()));
    } else {
        config.target = args.bucket.clone();
        config.endpoint = args.s3.endpoint.clone();
        config.region = args.s3.region.clone();
        config.virtual_hosted_style = args.s3.virtual_hosted_style;
        config.ca_file = args.s3.ca_file.clone();
    }
    let bucket =
        evident_server::publish::StoreBucket::open(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::cmd::verify_bucket::run(&bucket, &verifier, trusted.as_ref())
}

/// The signed notes in the `--checkpoint` files: each file holds one or more, one after
/// another (a note ends with its signature lines; the next starts after a blank line or
/// directly).
fn read_trusted_checkpoints(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for file in files {
        let text = read_checkpoint_file(file)?;
        let before = notes.len();
        notes.extend(split_notes(&text));
        if notes.len() == before {
            anyhow::bail!("{}: holds no signed checkpoint", file.display());
        }
    }
    Ok(notes)
}

/// Splits text holding signed notes one after another: a note is its body lines, a blank
/// line and its signature lines (starting with an em dash).
fn split_notes(text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut current = String::new();
    let mut in_signatures = false;
    for line in text.split_inclusive('\n') {
        let is_signature = line.starts_with("\u{2014} ");
        if in_signatures && !is_signature {
            notes.push(std::mem::take(&mut current));
            in_signatures = false;
            if line.trim().is_empty() {
                continue;
            }
        }
        if is_signature && current.ends_with("\n\n") {
            in_signatures = true;
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        notes.push(current);
    }
    notes
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

fn verify_data_dir(dir: &Path, from: Option<u64>, trusted: &[String]) -> anyhow::Result<()> {
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
    let outcome = verification::verify_store_trusting(
        &*store,
        files.seal_epochs(),
        files.verifiers(),
        files.node_id(),
        from,
        trusted,
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
            if !trusted.is_empty() {
                writeln!(
                    out,
                    "  consistent with your {} checkpoint(s): no truncation, rollback or fork",
                    trusted.len()
                )?;
            }
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

fn verify_online(
    client_args: &ClientArgs,
    from: Option<u64>,
    trusted: &[String],
) -> anyhow::Result<()> {
    // The server answers only when the whole walk is done: no read timeout.
    let client = ApiClient::with_timeout(client_args, None)?;
    let mut query: Vec<(&str, String)> =
        from.map(|f| ("from", f.to_string())).into_iter().collect();
    let body = serde_json::json!({ "checkpoints": trusted });
    let answer: VerifyResponse = if crate::output::stderr_is_terminal() {
        // A person is watching: the server streams its progress, drawn as a bar.
        query.push(("format", "ndjson".to_owned()));
        let response = if trusted.is_empty() {
            client.get("api/v1/verify", &query)
        } else {
            client.post_json_streamed("api/v1/verify", &query, &body)
        }
        .context("asking the server to verify its log")?;
        read_streamed_verification(response).context("asking the server to verify its log")?
    } else if trusted.is_empty() {
        client
            .get_json("api/v1/verify", &query)
            .context("asking the server to verify its log")?
    } else {
        client
            .post_json_query("api/v1/verify", &query, &body)
            .context("asking the server to verify its log")?
    };
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

/// One line of a streamed verification (`format=ndjson`): progress, the answer, or an error.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum StreamedLine {
    Progress { progress: ProgressJson },
    Error { error: ErrorJson },
    Answer(VerifyResponse),
}

#[derive(Debug, serde::Deserialize)]
struct ProgressJson {
    checked: u64,
    total: u64,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorJson {
    code: String,
    message: String,
}

/// Reads a streamed verification, drawing its progress on the terminal, until its answer.
fn read_streamed_verification(
    response: reqwest::blocking::Response,
) -> anyhow::Result<VerifyResponse> {
    use std::io::BufRead as _;
    let mut bar: Option<indicatif::ProgressBar> = None;
    for line in std::io::BufReader::new(response).lines() {
        let line = line.context("reading the server's answer")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: StreamedLine = serde_json::from_str(&line)
            .with_context(|| format!("unexpected line in the server's answer: {line}"))?;
        match parsed {
            StreamedLine::Progress { progress } => {
                let bar = bar.get_or_insert_with(|| {
                    count_progress(Some(progress.total), "verifying on the server")
                });
                bar.set_length(progress.total.max(progress.checked));
                bar.set_position(progress.checked);
            }
            StreamedLine::Error { error } => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                anyhow::bail!("the server answered {}: {}", error.code, error.message);
            }
            StreamedLine::Answer(answer) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Ok(answer);
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    anyhow::bail!("the server's answer ended before the verification did")
}

/// Bytes read from an export file at a time.
const READ_BUFFER: usize = 256 * 1024;

fn verify_export(file: &Path, public_key: &str, trusted: Option<String>) -> anyhow::Result<()> {
    let verifier = load_verifier(public_key)?;
    if starts_as_report(file)? {
        return verify_four_eyes_report(file, verifier, trusted);
    }
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
    writeln!(
        out,
        "  key: {} (key id {:08x}), pinned by you with --public-key",
        verifier.name(),
        verifier.key_id()
    )?;
    for key in &report.rotated_to {
        writeln!(
            out,
            "  followed a signing-key rotation recorded in the export, signed by the key before it, to {key}"
        )?;
    }
    writeln!(out, "  {}", completeness_line(&report))?;
    if trusted.is_some() {
        writeln!(
            out,
            "  consistent with your checkpoint: no truncation or rollback"
        )?;
    }
    Ok(())
}

/// Whether `file` opens with a four-eyes report header (its canonical first member).
fn starts_as_report(file: &Path) -> anyhow::Result<bool> {
    let prefix = format!("{{\"format\":\"{}\"", four_eyes_bundle::FORMAT);
    let mut opened = std::fs::File::open(file)
        .with_context(|| format!("cannot open export {}", file.display()))?;
    let mut head = vec![0u8; prefix.len()];
    let mut got = 0;
    while got < head.len() {
        match opened.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }
    Ok(head.get(..got) == Some(prefix.as_bytes()))
}

/// A four-eyes report bundle: its signature, every entry's proof against its checkpoint, and
/// the report recomputed from those entries. The report is held in memory (its header is one
/// line holding the whole report).
fn verify_four_eyes_report(
    file: &Path,
    verifier: evident_core::NoteVerifier,
    trusted: Option<String>,
) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).with_context(|| format!("reading report {}", file.display()))?;
    let name = verifier.name().to_owned();
    let key_id = verifier.key_id();
    let verified = match four_eyes_bundle::verify_report(&bytes, verifier, trusted.clone()) {
        Ok(v) => v,
        Err(four_eyes_bundle::ReportError::Bundle(e)) => return Err(export_failure(e, None)),
        Err(e) => {
            return Err(VerificationFailed(format!("FAILED: {e} [{}]", e.kind())).into());
        }
    };
    let r = &verified.report;
    let s = &r.summary;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "OK: four-eyes report intact: rule {:?}, {} event(s) paired, {} entries each tied to a checkpoint of size {} signed by {name}",
        r.scope.rule.name,
        r.pairs.len(),
        verified.entries,
        verified.checkpoint_size,
    )?;
    writeln!(
        out,
        "  {} confirmed, {} late, {} wrong_role, {} self_confirmed, {} pending, {} overdue, {} rejected confirmation(s)",
        s.confirmed, s.late, s.wrong_role, s.self_confirmed, s.pending, s.overdue, s.rejected
    )?;
    writeln!(
        out,
        "  window: from {} to {}, as of {}, generated by node {}",
        r.scope.from.as_deref().unwrap_or("the start"),
        r.scope.to.as_deref().unwrap_or("the checkpoint"),
        r.scope.as_of,
        verified.node_id
    )?;
    writeln!(
        out,
        "  key: {name} (key id {key_id:08x}), pinned by you with --public-key"
    )?;
    writeln!(
        out,
        "  every pair recomputed from the entries; that no other confirmation exists rests on the node's signature"
    )?;
    if trusted.is_some() {
        writeln!(out, "  the report's checkpoint is your checkpoint")?;
    }
    Ok(())
}

/// What the export proves about entries not in it, in plain words.
pub(crate) fn completeness_line(report: &ExportReport) -> String {
    match report.completeness {
        Completeness::Range {
            first,
            last,
            cut_at_limit,
        } => {
            let below = if first > 0 {
                format!(
                    "; entries below {first} are not in it (pruned, or the file's start was cut: compare with a checkpoint or retention anchor you hold)"
                )
            } else {
                String::new()
            };
            if cut_at_limit {
                format!(
                    "complete: no filter, every entry from seq {first} to {last} (cut at its limit of {} entries; the log goes on to {}){below}",
                    report.entries,
                    report.checkpoint_size.saturating_sub(1)
                )
            } else {
                format!(
                    "complete: no filter, every entry from seq {first} to {last}, the end of the checkpoint's tree{below}"
                )
            }
        }
        Completeness::EmptyLog => {
            "complete: no filter, and the checkpoint's log is empty".to_owned()
        }
        Completeness::NotProvable => format!(
            "filter: {}; every entry matches it. Complete for the filter: not provable (entries outside the filter are not in the export, so one left out cannot be told from one that did not match)",
            filter_text(report)
        ),
    }
}

/// The header's filter and limit as `name=value` pairs.
fn filter_text(report: &ExportReport) -> String {
    let f = &report.query.filter;
    let time = |ms: i64| evident_core::event::format_rfc3339_millis(ms);
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = f.from {
        parts.push(format!("from={}", time(v)));
    }
    if let Some(v) = f.to {
        parts.push(format!("to={}", time(v)));
    }
    if let Some(v) = f.occurred_from {
        parts.push(format!("occurred_from={}", time(v)));
    }
    if let Some(v) = f.occurred_to {
        parts.push(format!("occurred_to={}", time(v)));
    }
    if let Some(v) = &f.actor {
        parts.push(format!("actor={v}"));
    }
    if let Some(v) = f.actor_kind {
        parts.push(format!("actor_kind={}", v.as_str()));
    }
    match &f.action {
        Some(ActionFilter::Exact(a)) => parts.push(format!("action={a}")),
        Some(ActionFilter::Prefix(p)) => parts.push(format!("action={p}.*")),
        None => {}
    }
    if let Some(v) = &f.target {
        parts.push(format!("target={v}"));
    }
    if let Some(v) = f.ip {
        parts.push(format!("ip={}/{}", v.addr, v.prefix_len));
    }
    if let Some(v) = &f.tenant {
        parts.push(format!("tenant={v}"));
    }
    if let Some(v) = &f.node {
        parts.push(format!("node={v}"));
    }
    if let Some(v) = f.severity {
        parts.push(format!("severity>={}", v.as_str()));
    }
    if let Some(v) = f.outcome {
        parts.push(format!("outcome={}", v.as_str()));
    }
    if let Some(v) = report.query.limit {
        parts.push(format!("limit={v}"));
    }
    parts.join(" ")
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

pub(crate) fn export_failure(error: ExportError, trusted_size: Option<u64>) -> anyhow::Error {
    let verdict = match &error {
        ExportError::Violation { line, violation } => match violation.seq() {
            Some(seq) => format!(
                "FAILED at seq {seq} (line {line}): {} [{}]",
                reason(&violation.to_string(), Some(seq)),
                violation.kind()
            ),
            None => format!("FAILED at line {line}: {violation} [{}]", violation.kind()),
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

/// `--syslog FILE`: reads the receiver's file line by line through the server library's
/// pure check (`forward::receiver`) and prints its verdict.
fn verify_syslog(file: &Path, public_key: &str) -> anyhow::Result<()> {
    use evident_server::forward::receiver::SyslogVerifier;
    use std::io::BufRead as _;
    let verifier = load_verifier(public_key)?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let mut check = SyslogVerifier::new(vec![verifier]);
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        check.push_line(&String::from_utf8_lossy(&line));
    }
    let report = check.finish();
    let mut summary = String::new();
    for node in &report.nodes {
        let span = match (node.first_seq, node.last_seq) {
            (Some(first), Some(last)) => format!(" (seqs {first}-{last})"),
            _ => String::new(),
        };
        summary.push_str(&format!(
            "  node {}: {} entries{span}, {} duplicate(s) dropped, hash chain checked for {}, {} signed checkpoint record(s){}, {} root(s) rebuilt from the received entries\n",
            node.node,
            node.entries,
            node.duplicates,
            node.chain_checked,
            node.checkpoints,
            node.newest_checkpoint
                .map_or_else(String::new, |size| format!(" (newest of size {size})")),
            node.roots_checked,
        ));
        if node.truncated > 0 {
            summary.push_str(&format!(
                "    {} entries arrived truncated (coordinates checked, hashes not recomputable)\n",
                node.truncated
            ));
        }
        if node.uncovered > 0 {
            summary.push_str(&format!(
                "    {} entries are not covered by a checkpoint record yet (verify again after the next one)\n",
                node.uncovered
            ));
        }
    }
    if report.is_ok() {
        if report.nodes.is_empty() {
            return Err(VerificationFailed(format!(
                "FAILED: {} holds no message forwarded by Evident ({} other lines)",
                file.display(),
                report.other_lines
            ))
            .into());
        }
        print!("OK: syslog messages verified\n{summary}");
        return Ok(());
    }
    let mut failure = String::from("FAILED: the syslog messages do not verify\n");
    for node in &report.nodes {
        if !node.gaps.is_empty() {
            let ranges: Vec<String> = node
                .gaps
                .iter()
                .map(|g| {
                    if g.from == g.to {
                        g.from.to_string()
                    } else {
                        format!("{}-{}", g.from, g.to)
                    }
                })
                .collect();
            failure.push_str(&format!(
                "  node {}: missing seqs {}\n",
                node.node,
                ranges.join(", ")
            ));
        }
    }
    for finding in &report.findings {
        match finding.line {
            Some(line) => failure.push_str(&format!(
                "  line {line} (node {}): {}\n",
                finding.node, finding.message
            )),
            None => failure.push_str(&format!("  node {}: {}\n", finding.node, finding.message)),
        }
    }
    failure.push_str(&summary);
    Err(VerificationFailed(failure.trim_end().to_owned()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_files_may_hold_several_notes() {
        let a = "o\n3\nAAAA\n\n\u{2014} o abc=\n";
        let b = "o\n5\nBBBB\n\n\u{2014} o def=\n\u{2014} w ghi=\n";
        assert_eq!(split_notes(a), vec![a.to_owned()]);
        assert_eq!(
            split_notes(&format!("{a}{b}")),
            vec![a.to_owned(), b.to_owned()]
        );
        assert_eq!(
            split_notes(&format!("{a}\n{b}\n")),
            vec![a.to_owned(), b.to_owned()]
        );
        assert!(split_notes("").is_empty());
    }
}
