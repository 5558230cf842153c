//! `evident export`: streams matching events to a file or stdout in constant memory. NDJSON
//! (the self-verifying bundle) and CSV come from the server as a stream; JSON is built here
//! as one array from the server's JSON pages. A regular file is written under a temporary
//! name and renamed only when complete, so an interrupted export never looks like a finished
//! one; a symlink is followed (the link stays, its target gets the export) and an existing
//! FIFO, device or socket is written through, never replaced. `--out -` is stdout.
//! `--cluster`: the cluster bundle (ndjson: every node's own bundle, see docs/FORMAT.md) or
//! the merged JSON array, with each node's status reported on stderr.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::query::{ClusterTally, FilterArgs, pages};
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
    /// Export the whole cluster through this node (which must have `[cluster]`): ndjson
    /// gives the cluster bundle (each node's own self-verifying bundle, checked by `evident
    /// verify --export FILE --node-key NODE=KEY ...`), json the events of every node merged
    /// by (recorded_at, node, seq). A node that does not answer within the peer timeout is
    /// left out and named on stderr (and, in the bundle, in its header).
    #[arg(long)]
    pub cluster: bool,
    /// With --cluster (ndjson): include in NODE's part a consistency proof from SIZE (the
    /// size of a checkpoint of NODE you hold), so that `evident verify --export FILE
    /// --checkpoint OLD --node-key ...` can tie that part to it; repeat for other nodes.
    #[arg(long, value_name = "NODE=SIZE", requires = "cluster")]
    pub node_consistency_from: Vec<String>,
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
    if args.cluster && !matches!(args.format, ExportFormat::Ndjson | ExportFormat::Json) {
        return Err(usage(format!(
            "--cluster exports --format ndjson (the cluster bundle) or json; not {}",
            format_name(args.format)
        )));
    }
    if args.cluster && args.consistency_from.is_some() {
        return Err(usage(
            "--consistency-from: sizes are per node in a cluster; give --node-consistency-from NODE=SIZE for each node",
        ));
    }
    if !args.node_consistency_from.is_empty() && args.format != ExportFormat::Ndjson {
        return Err(usage(
            "--node-consistency-from applies to --format ndjson only (the cluster bundle)",
        ));
    }
    for pair in &args.node_consistency_from {
        let well_formed = pair
            .split_once('=')
            .is_some_and(|(node, size)| !node.is_empty() && size.parse::<u64>().is_ok());
        if !well_formed {
            return Err(usage(format!(
                "--node-consistency-from {pair:?}: expected NODE=SIZE (e.g. node-2=120)"
            )));
        }
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
            let exported = export_to(&client, &args, &mut out, &bar)?;
            out.flush()?;
            Ok(exported)
        }
    };
    bar.finish_and_clear();
    let (rows, nodes) = result?;
    if let Some(path) = out {
        // Every event is one line: no field may hold a control character, and the context
        // is canonical JSON, which escapes them.
        let what = match args.format {
            ExportFormat::Ndjson if args.cluster => {
                format!("{rows} lines (cluster bundle: header, each node's bundle, end line)")
            }
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
    if !nodes.is_empty() {
        eprintln_quiet(nodes.trim_end());
    }
    Ok(())
}

/// What was exported: lines or events written, and (`--cluster`) one line per node saying
/// what it contributed.
type Exported = (u64, String);

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
) -> anyhow::Result<Exported> {
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
            let exported = export_to(client, args, &mut writer, bar)?;
            writer
                .flush()
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(exported)
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
) -> anyhow::Result<Exported> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".evident-export-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut writer = std::io::BufWriter::new(tmp);
    let exported = export_to(client, args, &mut writer, bar)?;
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
    Ok(exported)
}

/// Writes the export to `out`; returns the number of lines (ndjson, csv, ocsf, ecs, cef: one
/// per event) or events (json) written, and with `--cluster` the nodes' statuses.
fn export_to(
    client: &ApiClient,
    args: &ExportArgs,
    out: &mut dyn Write,
    bar: &ProgressBar,
) -> anyhow::Result<Exported> {
    let mut params = args.filter.params();
    if let Some(order) = &args.order {
        params.push(("order", order.clone()));
    }
    if args.cluster {
        params.push(("scope", "cluster".to_owned()));
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
            if !args.node_consistency_from.is_empty() {
                let pairs: Vec<String> = args
                    .node_consistency_from
                    .iter()
                    .map(|pair| pair.replacen('=', ":", 1))
                    .collect();
                params.push(("consistency_from", pairs.join(",")));
            }
            let mut response = client.get("api/v1/audit-log", &params)?;
            let mut first_line = Vec::new();
            let lines = copy_counting_lines(&mut response, out, bar, &mut first_line)?;
            let nodes = if args.cluster {
                cluster_bundle_nodes(&first_line)
            } else {
                String::new()
            };
            Ok((lines, nodes))
        }
        ExportFormat::Json => {
            if args.order.is_none() {
                params.push(("order", "asc".to_owned()));
            }
            let page = args.limit.map_or(JSON_PAGE, |l| l.min(JSON_PAGE));
            params.push(("limit", page.to_string()));
            let mut tally = ClusterTally::default();
            let events = write_json_array(client, params, args.limit, out, bar, &mut tally)?;
            let mut nodes = Vec::new();
            tally.report(&mut nodes)?;
            Ok((events, String::from_utf8_lossy(&nodes).into_owned()))
        }
    }
}

/// The longest first line kept for [`cluster_bundle_nodes`].
const MAX_HEADER_KEPT: usize = 1 << 20;

/// Copies the stream, counting lines; keeps its first line (up to 1 MiB) in `first_line`.
fn copy_counting_lines(
    from: &mut dyn Read,
    out: &mut dyn Write,
    bar: &ProgressBar,
    first_line: &mut Vec<u8>,
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
        if lines == 0 && first_line.len() < MAX_HEADER_KEPT {
            let end = chunk
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(chunk.len());
            first_line.extend_from_slice(chunk.get(..end).unwrap_or_default());
        }
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bar.inc(n as u64);
        bar.set_message(format!("{lines} lines"));
    }
    Ok(lines)
}

/// One line per node of a cluster bundle's header: what it contributed, or why not.
fn cluster_bundle_nodes(header_line: &[u8]) -> String {
    let Ok(header) =
        serde_json::from_slice::<evident_core::cluster_export::ClusterHeader>(header_line)
    else {
        return "the cluster bundle's header could not be read back; `evident verify --export` will say more".to_owned();
    };
    let mut text = String::new();
    for node in &header.nodes {
        if node.status == "ok" {
            text.push_str(&format!(
                "node {}: ok, its bundle is part {} of the file\n",
                node.node,
                header
                    .nodes
                    .iter()
                    .filter(|n| n.status == "ok")
                    .position(|n| n.node == node.node)
                    .map_or(0, |i| i + 1)
            ));
        } else {
            text.push_str(&format!(
                "node {}: {}: {}; its events are NOT in the bundle\n",
                node.node,
                node.status.replace('_', " ").to_uppercase(),
                crate::cmd::query::without_node(&node.node, node.message.as_deref())
            ));
        }
    }
    text
}

fn write_json_array(
    client: &ApiClient,
    params: Vec<(&'static str, String)>,
    limit: Option<u64>,
    out: &mut dyn Write,
    bar: &ProgressBar,
    tally: &mut ClusterTally,
) -> anyhow::Result<u64> {
    let mut count = 0u64;
    let max = limit.unwrap_or(u64::MAX);
    out.write_all(b"[")?;
    let mut written = 1u64;
    pages(client, params, None, true, &mut |page| {
        tally.add(&page);
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
