//! `evident append`: one event from flags, or NDJSON events from stdin sent in batches.
//! The client checks only what it must to build a request; the server validates the events
//! and its error (naming the field and, for a batch, the event) is shown as it is.

use crate::client::{ApiClient, ApiFailure, ClientArgs};
use crate::output::usage;
use anyhow::Context as _;
use clap::Args;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::io::{BufRead, Write};

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read events from stdin instead, one JSON event object per line (NDJSON).
    #[arg(long)]
    pub stdin: bool,
    /// Events per request with --stdin (the server's limit is max_batch_events).
    #[arg(long, value_name = "N", default_value_t = 500, requires = "stdin")]
    pub batch_size: usize,
    /// Who acted: the actor id.
    #[arg(long, required_unless_present = "stdin", conflicts_with = "stdin")]
    pub actor: Option<String>,
    /// Actor kind: user, service, api_key or system.
    #[arg(long, value_name = "KIND", default_value = "user")]
    pub actor_kind: String,
    /// The action, a dotted name such as auth.login.failed.
    #[arg(long, required_unless_present = "stdin", conflicts_with = "stdin")]
    pub action: Option<String>,
    /// What the action was done to, as KIND:ID (e.g. node:nyc-edge-01).
    #[arg(
        long,
        value_name = "KIND:ID",
        required_unless_present = "stdin",
        conflicts_with = "stdin"
    )]
    pub target: Option<String>,
    /// success, failure or denied.
    #[arg(long, default_value = "success")]
    pub outcome: String,
    /// RFC 5424 severity: debug, info, notice, warning, error, critical, alert, emergency.
    #[arg(long, default_value = "info")]
    pub severity: String,
    /// The actor's source IP address.
    #[arg(long, conflicts_with = "stdin")]
    pub ip: Option<String>,
    /// The actor's user agent.
    #[arg(long, conflicts_with = "stdin")]
    pub user_agent: Option<String>,
    /// Tenant (workspace) of the event [server default: default].
    #[arg(long, conflicts_with = "stdin")]
    pub tenant: Option<String>,
    /// When the action happened, per the client: RFC 3339 or milliseconds since the epoch.
    #[arg(long, value_name = "TIME", conflicts_with = "stdin")]
    pub occurred_at: Option<String>,
    /// Free-form context, a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "stdin")]
    pub context: Option<String>,
    /// Print receipts as JSON objects, one per line.
    #[arg(long)]
    pub json: bool,
}

/// One receipt, as the server sends it.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Receipt {
    seq: u64,
    hash: String,
    recorded_at: String,
}

#[derive(Debug, serde::Deserialize)]
struct AppendResponse {
    receipts: Vec<Receipt>,
}

/// Largest request body built from stdin, well below the server's default limit.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

pub fn run(args: AppendArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let mut out = std::io::stdout().lock();
    if args.stdin {
        if args.batch_size == 0 {
            return Err(usage("--batch-size must be at least 1"));
        }
        let stdin = std::io::stdin().lock();
        return append_stream(&client, stdin, args.batch_size, args.json, &mut out);
    }
    let event = event_from_flags(&args)?;
    let body = serde_json::to_vec(&event).context("encoding the event")?;
    let response: AppendResponse = client.post("api/v1/events", "application/json", body)?;
    print_receipts(&mut out, &response.receipts, args.json)
}

fn event_from_flags(args: &AppendArgs) -> anyhow::Result<Value> {
    let (Some(actor), Some(action), Some(target)) = (&args.actor, &args.action, &args.target)
    else {
        return Err(usage("--actor, --action and --target are required"));
    };
    let Some((target_kind, target_id)) = target.split_once(':') else {
        return Err(usage(format!(
            "--target {target:?}: expected KIND:ID, e.g. node:nyc-edge-01"
        )));
    };
    let mut actor_json = Map::new();
    actor_json.insert("id".into(), Value::String(actor.clone()));
    actor_json.insert("kind".into(), Value::String(args.actor_kind.clone()));
    if let Some(ip) = &args.ip {
        actor_json.insert("ip".into(), Value::String(ip.clone()));
    }
    if let Some(agent) = &args.user_agent {
        actor_json.insert("user_agent".into(), Value::String(agent.clone()));
    }
    let mut event = Map::new();
    if let Some(at) = &args.occurred_at {
        // Milliseconds go as a number, anything else as text for the server to parse.
        let value = match at.parse::<i64>() {
            Ok(ms) => Value::from(ms),
            Err(_) => Value::String(at.clone()),
        };
        event.insert("occurred_at".into(), value);
    }
    if let Some(tenant) = &args.tenant {
        event.insert("tenant".into(), Value::String(tenant.clone()));
    }
    event.insert("actor".into(), Value::Object(actor_json));
    event.insert("action".into(), Value::String(action.clone()));
    let mut target_json = Map::new();
    target_json.insert("kind".into(), Value::String(target_kind.to_owned()));
    target_json.insert("id".into(), Value::String(target_id.to_owned()));
    event.insert("target".into(), Value::Object(target_json));
    event.insert("outcome".into(), Value::String(args.outcome.clone()));
    event.insert("severity".into(), Value::String(args.severity.clone()));
    if let Some(context) = &args.context {
        // Kept as the user's exact text (numbers untouched); only its syntax is checked here.
        let raw: Box<RawValue> = serde_json::from_str(context)
            .map_err(|e| usage(format!("--context is not valid JSON: {e}")))?;
        let value = serde_json::to_value(raw).context("--context")?;
        event.insert("context".into(), value);
    }
    Ok(Value::Object(event))
}

fn print_receipts(out: &mut dyn Write, receipts: &[Receipt], json: bool) -> anyhow::Result<()> {
    for receipt in receipts {
        if json {
            serde_json::to_writer(&mut *out, receipt)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "seq={} hash={} recorded_at={}",
                receipt.seq, receipt.hash, receipt.recorded_at
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Sends NDJSON from `input` in batches; stops at the first refused batch, saying which
/// input line was at fault and how much was appended before it.
fn append_stream(
    client: &ApiClient,
    mut input: impl BufRead,
    batch_size: usize,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut body: Vec<u8> = Vec::new();
    let mut lines_in_batch: Vec<u64> = Vec::new();
    let mut appended = 0u64;
    let mut line_no = 0u64;
    let mut line = Vec::new();
    let bar = crate::output::count_progress(None, "appending");
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("reading events from stdin")?;
        let at_end = n == 0;
        if !at_end {
            line_no += 1;
            let text = std::str::from_utf8(&line)
                .map_err(|e| anyhow::anyhow!("stdin line {line_no} is not valid UTF-8: {e}"))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                body.extend_from_slice(text.as_bytes());
                body.push(b'\n');
                lines_in_batch.push(line_no);
            }
        }
        let full = lines_in_batch.len() >= batch_size || body.len() >= MAX_BATCH_BYTES;
        if !lines_in_batch.is_empty() && (full || at_end) {
            let sent = std::mem::take(&mut body);
            let response: AppendResponse = client
                .post("api/v1/events", "application/x-ndjson", sent)
                .map_err(|e| batch_error(e, &lines_in_batch, appended))?;
            appended += response.receipts.len() as u64;
            bar.inc(response.receipts.len() as u64);
            bar.suspend(|| print_receipts(out, &response.receipts, json))?;
            lines_in_batch.clear();
        }
        if at_end {
            break;
        }
    }
    bar.finish_and_clear();
    if appended == 0 {
        return Err(anyhow::anyhow!("no event on stdin: nothing appended"));
    }
    Ok(())
}

fn batch_error(error: anyhow::Error, lines: &[u64], appended: u64) -> anyhow::Error {
    let first = lines.first().copied().unwrap_or(0);
    let at = error
        .downcast_ref::<ApiFailure>()
        .and_then(|f| f.index)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| lines.get(i).copied());
    let place = match at {
        Some(line) => format!("stdin line {line}"),
        None => format!("the batch starting at stdin line {first}"),
    };
    error.context(format!(
        "{place} was refused; nothing of this batch was stored ({appended} events from earlier batches were appended, their receipts printed above)"
    ))
}
