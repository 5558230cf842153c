//! `evident query`: the filters of `GET /api/v1/audit-log` as flags, shown as a table, or as
//! a JSON array with `--json`; `--all` follows the cursor to the end in constant memory. The
//! filter flags are shared with `evident export`. Values go to the server as typed: it
//! validates them and names the parameter at fault.

use crate::client::{ApiClient, ClientArgs};
use crate::output::Table;
use clap::Args;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::Write;
use std::ops::ControlFlow;

/// Filters of the audit log (every one narrows the result).
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Recorded at or after this time (RFC 3339, or milliseconds since the epoch).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Recorded within this span before now, instead of --from: a number and a unit s, m,
    /// h, d or w (30d, 2h).
    #[arg(long, value_name = "SPAN", conflicts_with = "from")]
    pub since: Option<String>,
    /// Recorded before this time.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Actor id.
    #[arg(long)]
    pub actor: Option<String>,
    /// Actor kind: user, service, api_key or system.
    #[arg(long, value_name = "KIND")]
    pub actor_kind: Option<String>,
    /// Action name, or a prefix such as `config.*`.
    #[arg(long)]
    pub action: Option<String>,
    /// Target as KIND:ID, or a bare id matching any kind.
    #[arg(long)]
    pub target: Option<String>,
    /// Source IP address or CIDR network.
    #[arg(long, value_name = "IP[/LEN]")]
    pub ip: Option<String>,
    /// Tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Node id.
    #[arg(long)]
    pub node: Option<String>,
    /// Minimum severity.
    #[arg(long)]
    pub severity: Option<String>,
    /// success, failure or denied.
    #[arg(long)]
    pub outcome: Option<String>,
}

impl FilterArgs {
    /// The query parameters these filters make.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let fields = [
            ("from", &self.from),
            ("since", &self.since),
            ("to", &self.to),
            ("actor", &self.actor),
            ("actor_kind", &self.actor_kind),
            ("action", &self.action),
            ("target", &self.target),
            ("ip", &self.ip),
            ("tenant", &self.tenant),
            ("node", &self.node),
            ("severity", &self.severity),
            ("outcome", &self.outcome),
        ];
        fields
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
            .collect()
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Events per page (server maximum 1000) [server default: 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Continue after this cursor (printed at the end of a page when more match).
    #[arg(long)]
    pub cursor: Option<String>,
    /// asc (oldest first) or desc (newest first) [server default: desc].
    #[arg(long)]
    pub order: Option<String>,
    /// Follow the cursor to the last page.
    #[arg(long)]
    pub all: bool,
    /// Print a JSON array of events (each with its hash and seal) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One page, as the server sends it.
#[derive(Debug, serde::Deserialize)]
pub struct Page {
    /// Each event exactly as the server wrote it (its key order kept).
    pub events: Vec<Box<RawValue>>,
    pub next_cursor: Option<String>,
}

/// Pages through the audit log: `visit` gets each page and may stop the walk; stops after
/// the first page unless `all`. Returns the cursor of the next page, if one was not fetched.
pub fn pages(
    client: &ApiClient,
    mut params: Vec<(&'static str, String)>,
    mut cursor: Option<String>,
    all: bool,
    visit: &mut dyn FnMut(Page) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<Option<String>> {
    let base_len = params.len();
    loop {
        params.truncate(base_len);
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let page: Page = client.get_json("api/v1/audit-log", &params)?;
        let next = page.next_cursor.clone();
        if visit(page)?.is_break() {
            return Ok(next);
        }
        match next {
            Some(next) if all => cursor = Some(next),
            other => return Ok(other),
        }
    }
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_str().unwrap_or("")
}

const HEADERS: [&str; 11] = [
    "SEQ",
    "RECORDED",
    "OCCURRED",
    "TENANT",
    "ACTOR",
    "ACTION",
    "TARGET",
    "OUTCOME",
    "SEVERITY",
    "IP",
    "APPENDED BY",
];

fn row(event: &Value) -> Vec<String> {
    let actor = format!(
        "{} ({})",
        text(event, &["actor", "id"]),
        text(event, &["actor", "kind"])
    );
    let target = format!(
        "{}:{}",
        text(event, &["target", "kind"]),
        text(event, &["target", "id"])
    );
    vec![
        event["seq"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        text(event, &["recorded_at"]).to_owned(),
        // When the client says it happened; "-" when it did not say.
        match text(event, &["occurred_at"]) {
            "" => "-".to_owned(),
            at => at.to_owned(),
        },
        text(event, &["tenant"]).to_owned(),
        actor,
        text(event, &["action"]).to_owned(),
        target,
        text(event, &["outcome"]).to_owned(),
        text(event, &["severity"]).to_owned(),
        text(event, &["actor", "ip"]).to_owned(),
        // Absent on entries of encoding version 1, stored before it was recorded.
        text(event, &["appended_by"]).to_owned(),
    ]
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let mut params = args.filter.params();
    if let Some(limit) = args.limit {
        params.push(("limit", limit.to_string()));
    }
    if let Some(order) = &args.order {
        params.push(("order", order.clone()));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let next = if args.json {
        write!(out, "[")?;
        let next = pages(&client, params, args.cursor, args.all, &mut |page| {
            for event in &page.events {
                write!(out, "{}\n  ", if count == 0 { "" } else { "," })?;
                out.write_all(event.get().as_bytes())?;
                count += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        writeln!(out, "{}]", if count == 0 { "" } else { "\n" })?;
        next
    } else {
        let mut table: Option<Table> = None;
        pages(&client, params, args.cursor, args.all, &mut |page| {
            let rows = page
                .events
                .iter()
                .map(|raw| serde_json::from_str::<Value>(raw.get()).map(|event| row(&event)))
                .collect::<Result<Vec<_>, _>>()?;
            if table.is_none() {
                let t = Table::new(HEADERS.to_vec(), &rows);
                t.write_header(&mut out)?;
                table = Some(t);
            }
            if let Some(t) = &table {
                for r in &rows {
                    t.write_row(&mut out, r)?;
                }
            }
            count += rows.len() as u64;
            out.flush()?;
            Ok(ControlFlow::Continue(()))
        })?
    };
    out.flush()?;
    let mut err = std::io::stderr().lock();
    let events = if count == 1 { "event" } else { "events" };
    if let Some(cursor) = next {
        writeln!(
            err,
            "{count} {events} shown; more match: add --cursor {cursor} (or --all)"
        )?;
    } else if !args.json {
        writeln!(err, "{count} {events}")?;
    }
    Ok(())
}
