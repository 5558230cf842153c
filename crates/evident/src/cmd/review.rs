//! `evident review four-eyes`: a four-eyes rule's report from a running server
//! (`GET /api/v1/reviews/four-eyes`), as a table, as JSON (`--json`), or saved as the signed
//! report bundle (`--out FILE`) that `evident verify --export FILE` checks offline.

use crate::client::{ApiClient, ClientArgs};
use crate::output::{Table, escape_for_terminal};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Every event a four-eyes rule covers in a window, paired with its confirmation:
    /// confirmed, late, wrong_role, self_confirmed, pending or overdue, and the
    /// confirmations that confirm nothing.
    FourEyes(FourEyesArgs),
}

#[derive(Debug, Args)]
pub struct FourEyesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The rule's name (a `[[four_eyes]]` table of the server's configuration).
    #[arg(long)]
    pub rule: String,
    /// Confirmed events recorded at or after this time (RFC 3339 or epoch milliseconds).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// …and before this time.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "out")]
    pub json: bool,
    /// Save the signed report bundle to this file, or write it to standard output with `-`
    /// (verify it with `evident verify --export FILE --public-key KEY`).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(command: ReviewCommand) -> anyhow::Result<()> {
    match command {
        ReviewCommand::FourEyes(args) => four_eyes(args),
    }
}

fn four_eyes(args: FourEyesArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let mut query = vec![("rule", args.rule.clone())];
    query.extend(args.from.clone().map(|v| ("from", v)));
    query.extend(args.to.clone().map(|v| ("to", v)));
    const PATH: &str = "api/v1/reviews/four-eyes";
    if let Some(out) = &args.out {
        query.push(("format", "bundle".to_owned()));
        let body = client
            .get(PATH, &query)?
            .bytes()
            .context("reading the report bundle")?;
        match super::out_file(Some(out)) {
            Some(out) => {
                write_atomically(out, &body)?;
                eprintln!(
                    "saved the signed four-eyes report of rule {:?} to {}",
                    args.rule,
                    out.display()
                );
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&body)?;
                stdout.flush()?;
            }
        }
        return Ok(());
    }
    let report: Value = client.get_json(PATH, &query)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    print_report(&report, &mut stdout)?;
    Ok(())
}

/// Writes `bytes` to `path` under a temporary name first, so that an interrupted write
/// never looks like a finished report.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The report as a table of pairs and one of rejected confirmations, with the totals.
pub fn print_report(report: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    // Table cells are escaped by the table; the heading line here.
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let shown = |v: &Value| escape_for_terminal(v.as_str().unwrap_or("-"));
    let num = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    let actor = |v: &Value| {
        let role = v["actor_role"]
            .as_str()
            .map_or(String::new(), |r| format!(" ({r})"));
        format!("{}{role}", v["actor_id"].as_str().unwrap_or("-"))
    };
    writeln!(
        out,
        "four-eyes rule {}: {} confirmed by {} within {} ms{}; as of {}",
        shown(&report["rule"]["name"]),
        shown(&report["rule"]["confirmed"]["action"]),
        shown(&report["rule"]["confirmation"]["action"]),
        num(&report["rule"]["within_ms"]),
        if report["rule"]["require_different_role"] == Value::Bool(true) {
            ", different roles required"
        } else {
            ""
        },
        shown(&report["as_of"]),
    )?;
    let rows: Vec<Vec<String>> = report["pairs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let c = &p["confirmation"];
            vec![
                text(&p["status"]),
                num(&p["confirmed"]["seq"]),
                text(&p["confirmed"]["recorded_at"]),
                actor(&p["confirmed"]),
                if c.is_null() {
                    "-".to_owned()
                } else {
                    num(&c["seq"])
                },
                if c.is_null() {
                    "-".to_owned()
                } else {
                    actor(c)
                },
                if c.is_null() {
                    "-".to_owned()
                } else {
                    text(&c["recorded_at"])
                },
            ]
        })
        .collect();
    let table = Table::new(
        vec![
            "STATUS",
            "SEQ",
            "RECORDED_AT",
            "ACTOR",
            "CONFIRMED_BY_SEQ",
            "CONFIRMED_BY",
            "CONFIRMED_AT",
        ],
        &rows,
    );
    table.write_header(out)?;
    for row in &rows {
        table.write_row(out, row)?;
    }
    let rejected: Vec<Vec<String>> = report["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["reason"]),
                num(&r["confirmation"]["seq"]),
                actor(&r["confirmation"]),
                text(&r["problem"]),
            ]
        })
        .collect();
    if !rejected.is_empty() {
        writeln!(out, "\nconfirmations that confirm nothing:")?;
        let table = Table::new(vec!["REASON", "SEQ", "ACTOR", "PROBLEM"], &rejected);
        table.write_header(out)?;
        for row in &rejected {
            table.write_row(out, row)?;
        }
    }
    let s = &report["summary"];
    writeln!(
        out,
        "\n{} confirmed, {} late, {} wrong_role, {} self_confirmed, {} pending, {} overdue, {} rejected",
        num(&s["confirmed"]),
        num(&s["late"]),
        num(&s["wrong_role"]),
        num(&s["self_confirmed"]),
        num(&s["pending"]),
        num(&s["overdue"]),
        num(&s["rejected"]),
    )
}
