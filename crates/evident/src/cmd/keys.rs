//! `evident keys create|list|rotate|revoke`: API key management, in one of two ways.
//!
//! Online (a key is given with `--key` or EVIDENT_KEY, and no `--data-dir`): through the
//! server's `/api/v1/keys` routes, with the caller's role and tenant checked and every change
//! recorded in the log by the server. Offline (`--data-dir`, or no key): straight on a data
//! directory through the server library's key functions (safe while a server runs: the
//! database arbitrates). Whoever can write the data directory holds the node's secrets, so
//! the offline form is the operator's bootstrap and break-glass path and is not recorded in
//! the log; the online form is, by the server. A new key's secret is printed once, alone on
//! the last line.

use crate::client::{ApiClient, ClientArgs};
use crate::cmd::serve::config_from;
use anyhow::Context as _;
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use evident_core::event::format_rfc3339_millis;
use evident_server::auth::{self, Role};
use evident_server::node::NodeError;
use evident_server::{Node, NodeFiles};
use evident_store::{KeyRecord, Store};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once, alone on the last line (with --init, on a data
    /// directory that is not a node yet, creates the node first).
    Create(CreateArgs),
    /// List keys (never their secrets).
    List(ListArgs),
    /// Replace a key by a new one with the same role, tenant and label; the old one keeps
    /// working for the grace period.
    Rotate(RotateArgs),
    /// Revoke a key at once.
    Revoke(RevokeArgs),
    /// Rotate the node's checkpoint signing key (Ed25519): the rotation is recorded in the
    /// log, signed by the old key; both keys sign for the transition period, then the new
    /// one alone. Offline: stop the server first, start it again afterwards.
    RotateSigning(RotateSigningArgs),
    /// Rotate the node's seal secret: a new seal-key epoch starts after the rotation event.
    /// Offline: stop the server first, start it again afterwards.
    RotateSeal(RotateSealArgs),
}

/// The data directory of a stopped node.
#[derive(Debug, Args)]
pub struct OfflineDirArgs {
    /// Data directory [default: ./evident-data, or EVIDENT_DATA_DIR, or the config file's].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (for the data directory and storage).
    #[arg(long, value_name = "FILE", env = "EVIDENT_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RotateSigningArgs {
    #[command(flatten)]
    pub dir: OfflineDirArgs,
    /// How long the old key keeps signing beside the new one (`7d`, `12h`, `30m`, `90s`,
    /// `0` to retire it at once). Verifiers holding only the old key follow the rotation
    /// event in the log either way.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub transition: String,
}

#[derive(Debug, Args)]
pub struct RotateSealArgs {
    #[command(flatten)]
    pub dir: OfflineDirArgs,
}

/// Which data directory (offline), or which server (online).
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Data directory [default: ./evident-data, or EVIDENT_DATA_DIR, or the config file's].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (for the data directory and, on first use, the node id).
    #[arg(long, value_name = "FILE", env = "EVIDENT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl DataDirArgs {
    /// Online when a key is given and no data directory or config file is.
    fn online(&self) -> bool {
        self.client.key.is_some() && self.data_dir.is_none() && self.config.is_none()
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// What the key may do: owner and admin everything, readonly read and export, writer
    /// append only.
    #[arg(long, value_parser = PossibleValuesParser::new(["owner", "admin", "readonly", "writer"]))]
    pub role: String,
    /// Restrict the key to one tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A note saying what the key is for.
    #[arg(long)]
    pub label: Option<String>,
    /// Create a new node in the data directory when it is not one yet. Without it, a
    /// directory that is not an Evident node (a typo in the path) is refused.
    #[arg(long)]
    pub init: bool,
    /// Node id, used only when `--init` creates the data directory [default: node-1].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// Id of the key to rotate (`evk_` and 12 hex digits).
    pub id: String,
    /// Seconds the old key keeps working (0: it stops at once).
    #[arg(long, value_name = "SECS", default_value_t = evident_server::http::DEFAULT_GRACE_SECONDS)]
    pub grace: u64,
    /// Online, rotating the key given with --key: allow --grace 0 (the key stops with this
    /// command; only its output holds the new key).
    #[arg(long)]
    pub confirm_own_key: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub dir: DataDirArgs,
    /// Id of the key to revoke (`evk_` and 12 hex digits).
    pub id: String,
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => create(args),
        KeysCommand::List(args) => list(args),
        KeysCommand::Rotate(args) => rotate(args),
        KeysCommand::Revoke(args) => revoke(args),
        KeysCommand::RotateSigning(args) => rotate_signing(args),
        KeysCommand::RotateSeal(args) => rotate_seal(args),
    }
}

/// `7d`, `12h`, `30m`, `90s`, `250ms` or `0`, in milliseconds.
fn parse_duration_ms(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--transition {text:?}: expected a number and a unit, e.g. 7d, 12h, 30m, 90s"
            )
        })?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--transition {text:?}: the number is too large"))?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--transition {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"),
    };
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| anyhow::anyhow!("--transition {text:?}: too long"))
}

/// Starts the stopped node of `dir` for a rotation (its lock held: refused while a server
/// runs on it).
fn open_stopped_node(dir: &OfflineDirArgs) -> anyhow::Result<Node> {
    let config = config_from(dir.config.as_deref(), dir.data_dir.clone(), None)?;
    let data_dir = config.data_dir.clone();
    match NodeFiles::open_readonly(&data_dir) {
        Ok(_) => {}
        Err(NodeError::NotInitialized { .. }) => anyhow::bail!(
            "{} is not an Evident data directory (no node file in it); check the path",
            data_dir.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening data directory {}", data_dir.display()));
        }
    }
    match Node::open(config) {
        Ok(node) => Ok(node),
        Err(e @ NodeError::Locked { .. }) => Err(anyhow::anyhow!(
            "{e}\nstop the server first: a key is rotated on a stopped node, then the server is \
             started again"
        )),
        Err(e) => Err(e).with_context(|| format!("opening {}", data_dir.display())),
    }
}

fn rotate_signing(args: RotateSigningArgs) -> anyhow::Result<()> {
    let transition = parse_duration_ms(&args.transition)?;
    let node = open_stopped_node(&args.dir)?;
    let now = evident_server::now_ms();
    let outcome = evident_server::keyring::rotate_signing(&node, transition, now);
    node.shutdown();
    let rotated = outcome.context("rotating the signing key")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rotated the signing key: recorded as entry {} (evident.signing_key.rotated), signed by the old key",
        rotated.seq
    )?;
    writeln!(out, "  old key: {}", rotated.old_key)?;
    writeln!(
        out,
        "  both keys sign until {}; then the old key is retired",
        format_rfc3339_millis(rotated.transition_ends_at)
    )?;
    writeln!(
        out,
        "Verifiers holding the old key follow the rotation event; give new verifiers the new key:"
    )?;
    writeln!(out, "{}", rotated.new_key)?;
    Ok(())
}

fn rotate_seal(args: RotateSealArgs) -> anyhow::Result<()> {
    let node = open_stopped_node(&args.dir)?;
    let outcome = evident_server::keyring::rotate_seal(&node);
    node.shutdown();
    let rotated = outcome.context("rotating the seal key")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rotated the seal key: recorded as entry {} (evident.seal.rotated); seal epoch {} \
         (key id {}) seals the entries from {} on",
        rotated.seq,
        rotated.epoch,
        rotated.key_id,
        rotated.seq + 1
    )?;
    if !rotated.discarded.is_empty() {
        writeln!(
            out,
            "  discarded the secrets of seal epoch(s) {:?}: retention pruned all their entries",
            rotated.discarded
        )?;
    }
    Ok(())
}

/// Opens an existing data directory's store, read-write for keys, without locking it.
fn open_existing(dir: &DataDirArgs) -> anyhow::Result<(NodeFiles, Arc<dyn Store>)> {
    let config = config_from(dir.config.as_deref(), dir.data_dir.clone(), None)?;
    let files = NodeFiles::open_readonly(&config.data_dir)
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let store = files
        .open_store()
        .with_context(|| format!("opening the database in {}", config.data_dir.display()))?;
    Ok((files, store))
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    if args.dir.online() {
        return create_online(args);
    }
    let role: Role = args.role.parse()?;
    let config = config_from(
        args.dir.config.as_deref(),
        args.dir.data_dir.clone(),
        args.node_id.clone(),
    )?;
    let dir = config.data_dir.clone();
    let files = match NodeFiles::open_readonly(&dir) {
        Ok(files) => files,
        Err(NodeError::NotInitialized { .. }) if args.init => Node::init(&config)
            .with_context(|| format!("creating data directory {}", dir.display()))?,
        Err(NodeError::NotInitialized { .. }) => anyhow::bail!(
            "{} is not an Evident data directory (no node file in it); check the path, or \
             pass --init to create a new node there",
            dir.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("opening data directory {}", dir.display()));
        }
    };
    let store = files
        .open_store()
        .with_context(|| format!("opening the database in {}", dir.display()))?;
    let (secret, record) = auth::create_key(
        &*store,
        role,
        args.tenant,
        args.label,
        evident_server::now_ms(),
    )
    .context("creating the key")?;
    let place = format!("node {} in {}", files.node_id(), files.data_dir().display());
    print_new_key(
        &record.id,
        &record.role,
        record.tenant.as_deref(),
        record.label.as_deref(),
        &secret,
        &place,
    )
}

fn print_new_key(
    id: &str,
    role: &str,
    tenant: Option<&str>,
    label: Option<&str>,
    secret: &str,
    place: &str,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created API key {id} (role {role}, tenant {}, label {}) for {place}",
        tenant.unwrap_or("any"),
        label.unwrap_or("-"),
    )?;
    writeln!(
        out,
        "The key is shown only now; store it safely. Send it as `Authorization: Bearer <key>` or set EVIDENT_KEY."
    )?;
    writeln!(out, "{secret}")?;
    out.flush()?;
    Ok(())
}

fn status(record: &KeyRecord, now: i64) -> String {
    match (record.revoked_at, record.expires_at) {
        (Some(at), _) => format!("revoked {}", format_rfc3339_millis(at)),
        (None, Some(at)) if at <= now => format!("expired {}", format_rfc3339_millis(at)),
        (None, Some(at)) => format!("expires {}", format_rfc3339_millis(at)),
        (None, None) => "active".to_owned(),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn list_online(args: &ListArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.dir.client)?;
    let answer: Value = client.get_json("api/v1/keys", &[])?;
    let keys = answer["keys"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &keys)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                text(&k["id"]).unwrap_or_default(),
                text(&k["role"]).unwrap_or_default(),
                text(&k["tenant"]).unwrap_or_else(|| "any".to_owned()),
                text(&k["label"]).unwrap_or_default(),
                text(&k["created_at"]).unwrap_or_default(),
                match (text(&k["status"]).as_deref(), text(&k["expires_at"])) {
                    (Some("expiring"), Some(at)) => format!("expires {at}"),
                    (Some(status), _) => status.to_owned(),
                    (None, _) => String::new(),
                },
                match (text(&k["last_used_at"]), text(&k["last_used_ip"])) {
                    (Some(at), Some(ip)) => format!("{at} from {ip}"),
                    (Some(at), None) => at,
                    _ => "never".to_owned(),
                },
            ]
        })
        .collect();
    write_table(&rows)
}

fn write_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let table = crate::output::Table::new(
        vec![
            "ID",
            "ROLE",
            "TENANT",
            "LABEL",
            "CREATED",
            "STATUS",
            "LAST USED",
        ],
        rows,
    );
    table.write_header(&mut out)?;
    for row in rows {
        table.write_row(&mut out, row)?;
    }
    Ok(())
}

fn create_online(args: CreateArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.dir.client)?;
    let body = json!({"role": args.role, "tenant": args.tenant, "label": args.label});
    let answer: Value = client.post(
        "api/v1/keys",
        "application/json",
        serde_json::to_vec(&body)?,
    )?;
    print_new_key_json(&answer, &client)
}

fn print_new_key_json(answer: &Value, client: &ApiClient) -> anyhow::Result<()> {
    let record = &answer["record"];
    let secret = answer["key"]
        .as_str()
        .context("the server's answer holds no key")?;
    let place = client
        .url("", &[])
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    print_new_key(
        record["id"].as_str().unwrap_or_default(),
        record["role"].as_str().unwrap_or_default(),
        record["tenant"].as_str(),
        record["label"].as_str(),
        secret,
        &place,
    )
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    if args.dir.online() {
        return list_online(&args);
    }
    let (_, store) = open_existing(&args.dir)?;
    let keys = store.keys().context("reading the keys")?;
    let now = evident_server::now_ms();
    let mut out = std::io::stdout().lock();
    if args.json {
        let items: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "id": k.id,
                    "role": k.role,
                    "tenant": k.tenant,
                    "label": k.label,
                    "created_at": format_rfc3339_millis(k.created_at),
                    "revoked_at": k.revoked_at.map(format_rfc3339_millis),
                    "expires_at": k.expires_at.map(format_rfc3339_millis),
                    "last_used_at": k.last_used_at.map(format_rfc3339_millis),
                    "last_used_ip": k.last_used_ip,
                    "status": status(k, now),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &items)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.role.clone(),
                k.tenant.clone().unwrap_or_else(|| "any".to_owned()),
                k.label.clone().unwrap_or_default(),
                format_rfc3339_millis(k.created_at),
                status(k, now),
                match (&k.last_used_at, &k.last_used_ip) {
                    (Some(at), Some(ip)) => format!("{} from {ip}", format_rfc3339_millis(*at)),
                    (Some(at), None) => format_rfc3339_millis(*at),
                    _ => "never".to_owned(),
                },
            ]
        })
        .collect();
    drop(out);
    write_table(&rows)
}

fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    if args.dir.online() {
        let client = ApiClient::new(&args.dir.client)?;
        let body = json!({"grace_seconds": args.grace, "confirm_own_key": args.confirm_own_key});
        let answer: Value = client.post(
            &format!("api/v1/keys/{}/rotate", args.id),
            "application/json",
            serde_json::to_vec(&body)?,
        )?;
        print_grace(&args)?;
        return print_new_key_json(&answer, &client);
    }
    let (files, store) = open_existing(&args.dir)?;
    let grace_ms = i64::try_from(args.grace.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (secret, record) = auth::rotate_key(&*store, &args.id, grace_ms, evident_server::now_ms())
        .with_context(|| format!("rotating key {}", args.id))?;
    print_grace(&args)?;
    let place = format!("node {} in {}", files.node_id(), files.data_dir().display());
    print_new_key(
        &record.id,
        &record.role,
        record.tenant.as_deref(),
        record.label.as_deref(),
        &secret,
        &place,
    )
}

fn print_grace(args: &RotateArgs) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    if args.grace == 0 {
        writeln!(err, "key {} stopped working now", args.id)?;
    } else {
        writeln!(
            err,
            "key {} keeps working for {} more seconds",
            args.id, args.grace
        )?;
    }
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    if args.dir.online() {
        let client = ApiClient::new(&args.dir.client)?;
        let answer: Value = client.post(
            &format!("api/v1/keys/{}/revoke", args.id),
            "application/json",
            Vec::new(),
        )?;
        writeln!(
            std::io::stdout().lock(),
            "revoked API key {} (role {})",
            answer["id"].as_str().unwrap_or(&args.id),
            answer["role"].as_str().unwrap_or("?")
        )?;
        return Ok(());
    }
    let (_, store) = open_existing(&args.dir)?;
    let record = auth::revoke_key(&*store, &args.id, evident_server::now_ms())
        .with_context(|| format!("revoking key {}", args.id))?;
    writeln!(
        std::io::stdout().lock(),
        "revoked API key {} (role {})",
        record.id,
        record.role
    )?;
    Ok(())
}
