//! `evident export`: streams matching events to a file or stdout in constant memory. NDJSON
//! (the self-verifying bundle) and CSV come from the server as a stream; JSON is built here
//! as one array from the server's JSON pages. A regular file is written under a temporary
//! name and renamed only when complete, so an interrupted export never looks like a finished
//! one; a symlink is followed (the link stays, its target gets the export) and an existing
//! FIFO, device or socket is written through, never replaced. `--out -` is stdout.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::query::{FilterArgs, pages};
use crate::output::{bytes_progress, usage};
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The self-verifying bundle (`evident verify --export` checks it offline).
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON array of events, each with its hash and seal.
    Json,
    /// OCSF 1.5.0 records, one per line (NDJSON); see docs/SIEM-MAPPINGS.md.
    Ocsf,
    /// Elastic Common Schema documents, one per line (NDJSON).
    Ecs,
    /// ArcSight CEF, one line per event.
    Cef,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    pub format: ExportFormat,
    /// Write to this file instead of stdout (`-`: stdout). A regular file is replaced
    /// atomically once the export is complete; a symlink's target gets the export (the link
    /// stays); an existing FIFO or device is written to as it is.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// asc or desc (csv, json, ocsf, ecs, cef; the NDJSON bundle is always ascending)
    /// [default: asc].
    #[arg(long)]
    pub order: Option<String>,
    /// Export at most this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// ndjson only: include a consistency proof from this older log size (the size of a
    /// checkpoint the recipient already holds), so that `evident verify --export FILE
    /// --checkpoint OLD` can tie the export to it.
    #[arg(long, value_name = "SIZE")]
    pub consistency_from: Option<u64>,
}

/// JSON page size when building a JSON export.
const JSON_PAGE: u64 = 1000;
/// Copy buffer for streamed exports.
const COPY_BUFFER: usize = 64 * 1024;

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if args.format == ExportFormat::Ndjson && args.order.as_deref() == Some("desc") {
        return Err(usage(
            "--order desc: the NDJSON bundle is always in ascending order",
        ));
    }
    if args.limit == Some(0) {
        return Err(usage("--limit must be at least 1"));
    }
    if args.consistency_from.is_some() && args.format != ExportFormat::Ndjson {
        return Err(usage(
            "--consistency-from applies to --format ndjson only (the self-verifying bundle)",
        ));
    }
    // Timeouts apply between reads: a long export is fine as long as bytes keep coming.
    let client = ApiClient::new(&args.client)?;
    let bar = bytes_progress(None, "exporting");
    let out = super::out_file(args.out.as_deref());
    let result = match out {
        Some(path) => export_to_path(&client, &args, path, &bar),
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let rows = export_to(&client, &args, &mut out, &bar)?;
            out.flush()?;
            Ok(rows)
        }
    };
    bar.finish_and_clear();
    let rows = result?;
    if let Some(path) = out {
        // Every event is one line: no field may hold a control character, and the context
        // is canonical JSON, which escapes them.
        let what = match args.format {
            ExportFormat::Ndjson => format!(
                "{rows} lines (ndjson bundle: header, {} events, trailer)",
                rows.saturating_sub(2)
            ),
            ExportFormat::Csv => format!(
                "{rows} lines (csv: header row and {} events)",
                rows.saturating_sub(1)
            ),
            ExportFormat::Json => format!("{rows} events (json)"),
            ExportFormat::Ocsf | ExportFormat::Ecs | ExportFormat::Cef => {
                format!("{rows} events ({})", format_name(args.format))
            }
        };
        eprintln_quiet(&format!("exported {what} to {}", path.display()));
    }
    Ok(())
}

fn format_name(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Ndjson => "ndjson",
        ExportFormat::Csv => "csv",
        ExportFormat::Json => "json",
        ExportFormat::Ocsf => "ocsf",
        ExportFormat::Ecs => "ecs",
        ExportFormat::Cef => "cef",
    }
}

fn eprintln_quiet(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Most symlinks followed from `--out` to the file written (as the kernel's `ELOOP` limit).
const MAX_SYMLINKS: usize = 40;

/// Where `--out PATH` really writes: `PATH` with every symlink followed (also a dangling
/// one: its target is created), so that the link itself is kept.
fn resolve_out_path(path: &Path) -> anyhow::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)
                    .with_context(|| format!("cannot read the symlink {}", current.display()))?;
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    anyhow::bail!(
        "--out {}: more than {MAX_SYMLINKS} levels of symlinks",
        path.display()
    )
}

/// Writes the export to `path`: through an existing FIFO, device or socket as it is, to a
/// regular file (new or existing, behind symlinks or not) by an atomic rename.
fn export_to_path(
    client: &ApiClient,
    args: &ExportArgs,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let target = resolve_out_path(path)?;
    match std::fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => anyhow::bail!("--out {}: is a directory", path.display()),
        Ok(meta) if !meta.is_file() => {
            // A FIFO, a character or block device, a socket: what the user wants is the
            // bytes written into it; replacing it by a regular file would break it.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("cannot open {} for writing", path.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let rows = export_to(client, args, &mut writer, bar)?;
            writer
                .flush()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(rows)
        }
        _ => export_to_file(client, args, &target, bar),
    }
}

/// Writes the export to the regular file `path` under a temporary name beside it, synced,
/// then renamed over `path`.
fn export_to_file(
    client: &ApiClient,
    args: &ExportArgs,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".evident-export-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut writer = std::io::BufWriter::new(tmp);
    let rows = export_to(client, args, &mut writer, bar)?;
    let tmp = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows)
}

/// Writes the export to `out`; returns the number of lines (ndjson, csv, ocsf, ecs, cef: one
/// per event) or events (json) written.
fn export_to(
    client: &ApiClient,
    args: &ExportArgs,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut params = args.filter.params();
    if let Some(order) = &args.order {
        params.push(("order", order.clone()));
    }
    match args.format {
        ExportFormat::Ndjson
        | ExportFormat::Csv
        | ExportFormat::Ocsf
        | ExportFormat::Ecs
        | ExportFormat::Cef => {
            params.push(("format", format_name(args.format).to_owned()));
            if let Some(limit) = args.limit {
                params.push(("limit", limit.to_string()));
            }
            if let Some(size) = args.consistency_from {
                params.push(("consistency_from", size.to_string()));
            }
            let mut response = client.get("api/v1/audit-log", &params)?;
            copy_counting_lines(&mut response, out, bar)
        }
        ExportFormat::Json => {
            if args.order.is_none() {
                params.push(("order", "asc".to_owned()));
            }
            let page = args.limit.map_or(JSON_PAGE, |l| l.min(JSON_PAGE));
            params.push(("limit", page.to_string()));
            write_json_array(client, params, args.limit, out, bar)
        }
    }
}

fn copy_counting_lines(
    from: &mut dyn Read,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut lines = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("the export stream broke off: the output is incomplete"));
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk).context("writing the export")?;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bar.inc(n as u64);
        bar.set_message(format!("{lines} lines"));
    }
    Ok(lines)
}

fn write_json_array(
    client: &ApiClient,
    params: Vec<(&'static str, String)>,
    limit: Option<u64>,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut count = 0u64;
    let max = limit.unwrap_or(u64::MAX);
    out.write_all(b"[")?;
    let mut written = 1u64;
    pages(client, params, None, true, &mut |page| {
        for event in page.events.iter() {
            if count == max {
                break;
            }
            let text = event.get();
            let sep: &[u8] = if count == 0 { b"\n" } else { b",\n" };
            out.write_all(sep)?;
            out.write_all(text.as_bytes())?;
            written += (sep.len() + text.len()) as u64;
            count += 1;
        }
        bar.set_position(written);
        bar.set_message(format!("{count} events"));
        Ok(if count == max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    out.write_all(if count == 0 { b"]\n" } else { b"\n]\n" })?;
    Ok(count)
}
