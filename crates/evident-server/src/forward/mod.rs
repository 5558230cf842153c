//! Syslog forwarding: each configured destination is one [`Forwarder`], a consumer of the
//! committed log on its own durable cursor (`crate::consumers`), sending the entries its
//! filter selects as RFC 5424 messages (`rfc5424.rs`) over one transport (`udp.rs`,
//! `tcp.rs`, `tls.rs`, each behind [`SyslogTransport`]), with signed checkpoint records
//! between them so that the receiver can verify what it got (`receiver.rs`).
//!
//! Delivery is at least once: every message carries its seq, the cursor only moves past an
//! entry once it is done, and a destination that fails is retried from the cursor with
//! backoff. Over TCP and TLS, which acknowledge nothing to the sender's application, an
//! entry counts as done once the connection it was written on stayed open for
//! `confirm_after_ms` after the write; when the connection drops, everything not yet done is
//! sent again on the next one (so duplicates follow a reconnect, and only then).

pub mod receiver;
pub mod rfc5424;
pub mod tcp;
pub mod tls;
pub mod udp;

use crate::consumers::{Consumer, ConsumerContext, ConsumerSettings, DeliveryError};
use base64::Engine as _;
use evident_core::SealedEntry;
use evident_core::event::Severity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use rfc5424::Facility;

/// How long a connection (and a TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block before the connection is given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest message over UDP: rsyslog's default `maxMessageSize` (8 KiB), which stays
/// within one datagram.
pub const DEFAULT_UDP_MAX_MESSAGE_BYTES: usize = 8192;
/// Default largest message over TCP and TLS (the documented maximum frame): large enough for
/// any entry (a context holds at most 16 KiB of canonical JSON, its export line more with
/// escaping); receivers must accept it (rsyslog: `maxMessageSize="64k"`).
pub const DEFAULT_STREAM_MAX_MESSAGE_BYTES: usize = 65536;
/// Largest message a UDP destination may be configured with (the largest UDP payload).
pub const MAX_UDP_MESSAGE_BYTES: usize = 65507;
/// Largest message a TCP or TLS destination may be configured with.
pub const MAX_STREAM_MESSAGE_BYTES: usize = 1 << 20;

/// The `[forward]` section: where committed entries are forwarded. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Syslog destinations (`[[forward.syslog]]`), each with its own cursor.
    pub syslog: Vec<SyslogDestination>,
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransportKind {
    /// RFC 5426, one message per datagram.
    Udp,
    /// Plain TCP with octet-counting framing.
    Tcp,
    /// RFC 5425: TLS with octet-counting framing.
    Tls,
}

impl SyslogTransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransportKind::Udp => "udp",
            SyslogTransportKind::Tcp => "tcp",
            SyslogTransportKind::Tls => "tls",
        }
    }
}

/// The MSG of each forwarded entry. One place to add a format: here and [`payload`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The entry's line of the export bundle without run markers: the event JSON with its
    /// `hash` and `seal` (what `evident verify --syslog` recomputes the hash chain from).
    #[default]
    Json,
    /// OCSF, ECS or CEF (`crate::formats`, mappings in docs/SIEM-MAPPINGS.md); the receiver
    /// checks their coordinates and finds gaps, but cannot recompute hashes from them.
    Ocsf,
    Ecs,
    Cef,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Ocsf => "ocsf",
            PayloadFormat::Ecs => "ecs",
            PayloadFormat::Cef => "cef",
        }
    }
}

/// The payload of `entry` (recorded by node `node_id`) in `format`: one line, no newline.
pub fn payload(format: PayloadFormat, entry: &SealedEntry, node_id: &str) -> String {
    use crate::formats::{SiemFormat, render};
    match format {
        PayloadFormat::Ocsf => render(SiemFormat::Ocsf, entry, node_id),
        PayloadFormat::Ecs => render(SiemFormat::Ecs, entry, node_id),
        PayloadFormat::Cef => render(SiemFormat::Cef, entry, node_id),
        PayloadFormat::Json => {
            let mut line = evident_core::export::entry_line(&evident_core::export::ExportEntry {
                entry: entry.clone(),
                run_start: None,
                run_end: None,
            });
            if line.ends_with('\n') {
                line.pop();
            }
            line
        }
    }
}

/// One syslog destination (`[[forward.syslog]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogDestination {
    /// Unique among the destinations and stable: its cursor is kept under this name.
    pub name: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: SyslogTransportKind,
    /// The receiver, `host:port`.
    pub address: String,
    /// The MSG of each entry: `json` (default), `ocsf`, `ecs` or `cef`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Syslog facility keyword (`local0`, the default, … `local7`, `auth`, …) or 0 to 23.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// Only entries of at least this severity (default `debug`: all).
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Only entries whose action starts with one of these (default: every action).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Only entries of these tenants (default: every tenant).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// TLS: PEM file of the CA(s) the receiver's certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: the name the receiver's certificate must carry (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// TLS: PEM client certificate chain presented to the receiver (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// TLS: PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Largest message, in bytes (default 8192 over UDP, 65536 over TCP and TLS): a longer
    /// one is cut by the truncation rule (header and structured data kept whole).
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// A checkpoint record is sent at each new checkpoint and, when none was, at least this
    /// often (default 60 s).
    #[serde(default = "default_checkpoint_every_ms")]
    pub checkpoint_every_ms: u64,
    /// TCP and TLS: an entry is done once its connection stayed open this long after it was
    /// written (default 1000 ms); see the module docs.
    #[serde(default = "default_confirm_after_ms")]
    pub confirm_after_ms: u64,
    /// A lag incident (one `evident.consumer.lagging` warning event, then one
    /// `evident.consumer.caught_up`) starts when the oldest entry not delivered is older than
    /// this many seconds (default 300)…
    #[serde(default = "default_lag_warn_seconds")]
    pub lag_warn_seconds: u64,
    /// …or when more entries than this wait (default 100000).
    #[serde(default = "default_lag_warn_events")]
    pub lag_warn_events: u64,
}

fn default_facility() -> String {
    Facility::default().name().to_owned()
}
fn default_checkpoint_every_ms() -> u64 {
    60_000
}
fn default_confirm_after_ms() -> u64 {
    1000
}
fn default_lag_warn_seconds() -> u64 {
    300
}
fn default_lag_warn_events() -> u64 {
    100_000
}

/// A destination's setting that does not make sense (`forward.syslog[i].field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("forward.syslog[{index}].{field}: {problem}")]
pub struct DestinationError {
    pub index: usize,
    pub field: &'static str,
    pub problem: String,
}

/// What a destination's filter keeps: parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFilter {
    pub min_severity: Severity,
    pub action_prefixes: Vec<String>,
    pub tenants: Vec<String>,
}

impl EntryFilter {
    pub fn keeps(&self, entry: &SealedEntry) -> bool {
        let event = &entry.event;
        event.severity >= self.min_severity
            && (self.action_prefixes.is_empty()
                || self
                    .action_prefixes
                    .iter()
                    .any(|prefix| event.action.starts_with(prefix.as_str())))
            && (self.tenants.is_empty() || self.tenants.contains(&event.tenant))
    }
}

impl SyslogDestination {
    /// The largest message this destination sends.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.unwrap_or(match self.transport {
            SyslogTransportKind::Udp => DEFAULT_UDP_MAX_MESSAGE_BYTES,
            _ => DEFAULT_STREAM_MAX_MESSAGE_BYTES,
        })
    }

    pub fn facility(&self) -> Result<Facility, String> {
        Facility::parse(&self.facility)
    }

    pub fn filter(&self) -> Result<EntryFilter, (&'static str, String)> {
        let min_severity = match &self.min_severity {
            None => Severity::Debug,
            Some(name) => Severity::parse(name).ok_or_else(|| {
                (
                    "min_severity",
                    format!("{name:?} is not a severity (debug, info, notice, warning, error, critical, alert, emergency)"),
                )
            })?,
        };
        for prefix in &self.actions {
            if prefix.is_empty() {
                return Err(("actions", "an action prefix may not be empty".to_owned()));
            }
        }
        for tenant in &self.tenants {
            evident_core::event::validate_tenant(tenant)
                .map_err(|e| ("tenants", format!("{tenant:?}: {}", e.problem)))?;
        }
        Ok(EntryFilter {
            min_severity,
            action_prefixes: self.actions.clone(),
            tenants: self.tenants.clone(),
        })
    }

    fn check(&self, index: usize) -> Result<(), DestinationError> {
        let bad = |field: &'static str, problem: String| DestinationError {
            index,
            field,
            problem,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || self.name.len() > 64
        {
            return Err(bad(
                "name",
                format!(
                    "{:?} must be 1 to 64 characters of [A-Za-z0-9_.-]",
                    self.name
                ),
            ));
        }
        if host_and_port(&self.address).is_none() {
            return Err(bad(
                "address",
                format!("{:?} is not host:port", self.address),
            ));
        }
        self.facility().map_err(|p| bad("facility", p))?;
        self.filter().map_err(|(field, p)| bad(field, p))?;
        let max = self.max_message_bytes();
        let limit = match self.transport {
            SyslogTransportKind::Udp => MAX_UDP_MESSAGE_BYTES,
            _ => MAX_STREAM_MESSAGE_BYTES,
        };
        if !(rfc5424::MIN_MESSAGE_BYTES..=limit).contains(&max) {
            return Err(bad(
                "max_message_bytes",
                format!(
                    "{max} must be between {} and {limit} for {}",
                    rfc5424::MIN_MESSAGE_BYTES,
                    self.transport.as_str()
                ),
            ));
        }
        if self.checkpoint_every_ms == 0 {
            return Err(bad(
                "checkpoint_every_ms",
                "must be greater than 0".to_owned(),
            ));
        }
        let tls_only = [
            ("ca_file", self.ca_file.is_some()),
            ("server_name", self.server_name.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
        ];
        match self.transport {
            SyslogTransportKind::Tls => {
                if self.ca_file.is_none() {
                    return Err(bad(
                        "ca_file",
                        "a tls destination needs the CA file (PEM) that signed the receiver's certificate".to_owned(),
                    ));
                }
                if self.client_cert.is_some() != self.client_key.is_some() {
                    return Err(bad(
                        if self.client_cert.is_some() {
                            "client_key"
                        } else {
                            "client_cert"
                        },
                        "give both client_cert and client_key, or neither".to_owned(),
                    ));
                }
            }
            other => {
                if let Some((field, _)) = tls_only.iter().find(|(_, set)| *set) {
                    return Err(bad(
                        field,
                        format!("only a tls destination takes it, not {}", other.as_str()),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ForwardConfig {
    /// The destinations of `EVIDENT_FORWARD_SYSLOG`: a TOML array of inline tables with the
    /// keys of `[[forward.syslog]]`, e.g. `[{ name = "siem", transport = "tcp", address = "siem:601" }]`.
    pub fn parse_syslog_list(text: &str) -> Result<Vec<SyslogDestination>, String> {
        #[derive(Deserialize)]
        struct List {
            syslog: Vec<SyslogDestination>,
        }
        toml::from_str::<List>(&format!("syslog = {text}"))
            .map(|list| list.syslog)
            .map_err(|e| format!("not a TOML array of destinations: {}", e.message()))
    }

    /// Checks every destination; the first problem found names the destination and field.
    pub fn validate(&self) -> Result<(), DestinationError> {
        for (index, destination) in self.syslog.iter().enumerate() {
            destination.check(index)?;
            if self.syslog[..index]
                .iter()
                .any(|other| other.name == destination.name)
            {
                return Err(DestinationError {
                    index,
                    field: "name",
                    problem: format!("{:?} names another destination too", destination.name),
                });
            }
        }
        Ok(())
    }
}

/// `host:port` split, the host without IPv6 brackets; `None` unless the port is a number.
pub fn host_and_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

/// The host of `host:port` (what a TLS server name defaults to).
pub fn host_of(address: &str) -> &str {
    host_and_port(address).map_or(address, |(host, _)| host)
}

/// The first address `address` resolves to.
pub async fn resolve(address: &str) -> Result<std::net::SocketAddr, TransportError> {
    let mut found = tokio::net::lookup_host(address)
        .await
        .map_err(TransportError::Io)?;
    found
        .next()
        .ok_or_else(|| TransportError::Resolve(address.to_owned()))
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{0} resolves to no address")]
    Resolve(String),
    #[error("the receiver closed the connection")]
    Closed,
}

/// One way to a receiver. Messages are whole RFC 5424 messages; framing is the transport's.
pub trait SyslogTransport: Send {
    /// Sends `messages` in order, connecting first when not connected. On an error the
    /// connection is dropped (the next send opens a new one).
    fn send(
        &mut self,
        messages: &[Vec<u8>],
    ) -> impl std::future::Future<Output = Result<(), TransportError>> + Send;
    /// False only when the open connection is known to be closed by the receiver (true
    /// with no connection open, and always for UDP).
    fn is_alive(&mut self) -> bool;
    /// Drops the connection.
    fn reset(&mut self);
    /// Whether an open connection is what tells that messages arrived (TCP, TLS), or nothing
    /// does (UDP).
    fn confirms_by_connection(&self) -> bool;
}

/// The transport a destination names.
pub enum Transport {
    Udp(udp::UdpTransport),
    Tcp(tcp::TcpTransport),
    Tls(Box<tls::TlsTransport>),
}

impl Transport {
    pub fn new(destination: &SyslogDestination) -> Result<Transport, tls::TlsSetupError> {
        Ok(match destination.transport {
            SyslogTransportKind::Udp => {
                Transport::Udp(udp::UdpTransport::new(destination.address.clone()))
            }
            SyslogTransportKind::Tcp => {
                Transport::Tcp(tcp::TcpTransport::new(destination.address.clone()))
            }
            SyslogTransportKind::Tls => {
                Transport::Tls(Box::new(tls::TlsTransport::new(destination)?))
            }
        })
    }
}

impl SyslogTransport for Transport {
    async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), TransportError> {
        match self {
            Transport::Udp(t) => t.send(messages).await,
            Transport::Tcp(t) => t.send(messages).await,
            Transport::Tls(t) => t.send(messages).await,
        }
    }
    fn is_alive(&mut self) -> bool {
        match self {
            Transport::Udp(t) => t.is_alive(),
            Transport::Tcp(t) => t.is_alive(),
            Transport::Tls(t) => t.is_alive(),
        }
    }
    fn reset(&mut self) {
        match self {
            Transport::Udp(t) => t.reset(),
            Transport::Tcp(t) => t.reset(),
            Transport::Tls(t) => t.reset(),
        }
    }
    fn confirms_by_connection(&self) -> bool {
        match self {
            Transport::Udp(t) => t.confirms_by_connection(),
            Transport::Tcp(t) => t.confirms_by_connection(),
            Transport::Tls(t) => t.confirms_by_connection(),
        }
    }
}

// ---- the consumer ----

/// Most entries written but not yet done on one connection (read ahead of the runner's
/// batch, so that waiting `confirm_after_ms` does not cap throughput).
pub const MAX_IN_FLIGHT: u64 = 100_000;
/// Entries per runner batch and per read-ahead chunk.
pub const BATCH_MAX: usize = 2000;
/// How long confirmed entries may wait to be handed back together (see
/// `Forwarder::ready_to_confirm`).
pub const CONFIRM_GATHER: Duration = Duration::from_millis(200);
/// How often a forwarder waiting for confirmations looks for newly committed entries.
const POLL_COMMITTED: Duration = Duration::from_millis(50);

/// What a forwarder did since the node started (shown on `GET /api/v1/forwarders`).
#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub truncated: AtomicU64,
    pub checkpoint_records: AtomicU64,
    pub connections: AtomicU64,
    pub connected: AtomicBool,
    /// Size of the newest checkpoint a record was sent for (+1; 0: none).
    pub last_checkpoint_size: AtomicU64,
}

/// One destination's description and counters.
#[derive(Debug, Clone)]
pub struct ForwarderInfo {
    pub destination: SyslogDestination,
    pub stats: Arc<ForwarderStats>,
}

/// The node's forwarders, by name (kept in the [`crate::AppState`]).
#[derive(Debug, Default)]
pub struct Forwarders {
    all: Mutex<BTreeMap<String, ForwarderInfo>>,
}

impl Forwarders {
    fn register(&self, info: ForwarderInfo) {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(info.destination.name.clone(), info);
    }

    pub fn all(&self) -> Vec<ForwarderInfo> {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// What a forwarder saves with its cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SavedForwarder {
    /// The last entry forwarded below the cursor (the `prev` of the next one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<u64>,
    /// The cursor itself (so that a checkpoint record can be sent before the first delivery).
    #[serde(default)]
    next: u64,
}

/// A chunk written on the open connection, not yet done.
#[derive(Debug, Clone, Copy)]
struct Pending {
    start: u64,
    end: u64,
    /// The last entry forwarded before `start`, and before `end`.
    prev_before: Option<u64>,
    prev: Option<u64>,
    written_at: tokio::time::Instant,
}

/// One syslog destination as a consumer of the log.
pub struct Forwarder {
    destination: SyslogDestination,
    filter: EntryFilter,
    facility: Facility,
    max_bytes: usize,
    confirm_after: Duration,
    transport: Transport,
    stats: Arc<ForwarderStats>,
    metrics: Arc<crate::metrics::Metrics>,
    saved: SavedForwarder,
    /// On the open connection: the next seq not written yet, and the last forwarded entry
    /// written.
    written: Option<(u64, Option<u64>)>,
    pending: VecDeque<Pending>,
    /// On the open connection: the checkpoint size a record went out for, and when.
    record_sent: Option<(u64, tokio::time::Instant)>,
}

impl Forwarder {
    /// A forwarder for a checked destination (see [`ForwardConfig::validate`]).
    pub fn new(
        destination: SyslogDestination,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Forwarder, DestinationError> {
        let bad = |field: &'static str, problem: String| DestinationError {
            index: 0,
            field,
            problem,
        };
        let filter = destination.filter().map_err(|(f, p)| bad(f, p))?;
        let facility = destination.facility().map_err(|p| bad("facility", p))?;
        let transport = Transport::new(&destination).map_err(|e| match e {
            tls::TlsSetupError::Invalid { field, problem } => bad(field, problem),
        })?;
        Ok(Forwarder {
            filter,
            facility,
            max_bytes: destination.max_message_bytes(),
            confirm_after: Duration::from_millis(destination.confirm_after_ms),
            transport,
            stats: Arc::new(ForwarderStats::default()),
            metrics,
            saved: SavedForwarder::default(),
            written: None,
            pending: VecDeque::new(),
            record_sent: None,
            destination,
        })
    }

    pub fn stats(&self) -> Arc<ForwarderStats> {
        self.stats.clone()
    }

    fn labels(&self) -> crate::metrics::ForwarderLabels {
        crate::metrics::ForwarderLabels {
            name: self.destination.name.clone(),
            transport: self.destination.transport.as_str().to_owned(),
        }
    }

    /// The connection dropped: what was written on it and not done goes out again.
    fn connection_lost(&mut self) {
        self.transport.reset();
        self.written = None;
        self.pending.clear();
        self.record_sent = None;
        self.stats.connected.store(false, Ordering::Relaxed);
    }

    async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), DeliveryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let fresh = self.written.is_none() && self.pending.is_empty();
        if let Err(e) = self.transport.send(messages).await {
            self.connection_lost();
            return Err(DeliveryError::destination(format!(
                "syslog {} {}: {e}",
                self.destination.transport.as_str(),
                self.destination.address
            )));
        }
        if fresh && !self.stats.connected.swap(true, Ordering::Relaxed) {
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .forwarder_connections
                .get_or_create(&self.labels())
                .inc();
        }
        let bytes: u64 = messages.iter().map(|m| m.len() as u64).sum();
        self.stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        let labels = self.labels();
        self.metrics
            .forwarder_messages
            .get_or_create(&labels)
            .inc_by(messages.len() as u64);
        self.metrics
            .forwarder_bytes
            .get_or_create(&labels)
            .inc_by(bytes);
        Ok(())
    }

    /// Writes the entries of `chunk` the filter keeps (all of `chunk` is from `written`).
    async fn write_chunk(
        &mut self,
        chunk: &[SealedEntry],
        mut prev: Option<u64>,
    ) -> Result<(u64, Option<u64>), DeliveryError> {
        let prev_before = prev;
        let mut messages = Vec::new();
        let mut truncated = 0u64;
        for entry in chunk {
            if !self.filter.keeps(entry) {
                continue;
            }
            let body = payload(self.destination.format, entry, &entry.event.node_id);
            let (message, cut) = rfc5424::entry_message(
                entry,
                prev,
                self.facility,
                self.destination.format.as_str(),
                &body,
                self.max_bytes,
            );
            truncated += u64::from(cut);
            messages.push(message);
            prev = Some(entry.event.seq);
        }
        self.send(&messages).await?;
        if truncated > 0 {
            self.stats.truncated.fetch_add(truncated, Ordering::Relaxed);
            self.metrics
                .forwarder_truncated
                .get_or_create(&self.labels())
                .inc_by(truncated);
        }
        let end = chunk.last().map_or(0, |e| e.event.seq + 1);
        self.pending.push_back(Pending {
            start: chunk.first().map_or(end, |e| e.event.seq),
            end,
            prev_before,
            prev,
            written_at: tokio::time::Instant::now(),
        });
        self.written = Some((end, prev));
        Ok((end, prev))
    }

    /// Sends a checkpoint record when one is due: every entry below the newest checkpoint's
    /// size is written (or done), and no record of that size went out on this connection, or
    /// the last one is `checkpoint_every_ms` old.
    async fn checkpoint_record(
        &mut self,
        ctx: &ConsumerContext,
        next: u64,
        prev: Option<u64>,
    ) -> Result<(), DeliveryError> {
        let Some(latest) = ctx.latest_checkpoint() else {
            return Ok(());
        };
        if latest.size > next || latest.size == 0 {
            return Ok(());
        }
        let every = Duration::from_millis(self.destination.checkpoint_every_ms);
        let due = match self.record_sent {
            Some((size, at)) => size != latest.size || at.elapsed() >= every,
            None => true,
        };
        if !due {
            return Ok(());
        }
        let root = base64::engine::general_purpose::STANDARD.encode(latest.root.0);
        let record = rfc5424::CheckpointRecord {
            node_id: ctx.node_id(),
            created_at: latest.created_at,
            size: latest.size,
            root_base64: &root,
            note: &latest.signed_note,
            prev,
        };
        let message = rfc5424::checkpoint_message(&record, self.facility, self.max_bytes);
        self.send(&[message]).await?;
        self.record_sent = Some((latest.size, tokio::time::Instant::now()));
        self.stats
            .checkpoint_records
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_checkpoint_size
            .store(latest.size + 1, Ordering::Relaxed);
        self.metrics
            .forwarder_checkpoint_records
            .get_or_create(&self.labels())
            .inc();
        Ok(())
    }

    /// Reads up to [`BATCH_MAX`] committed entries from `from` (none when they were pruned:
    /// the runner's own read then skips them).
    async fn read_ahead(
        ctx: &ConsumerContext,
        from: u64,
        size: u64,
    ) -> Result<Vec<SealedEntry>, DeliveryError> {
        match ctx.read(from, size, BATCH_MAX).await {
            Ok(crate::consumers::Read::Entries(entries)) => Ok(entries),
            Ok(crate::consumers::Read::Pruned { .. }) => Ok(Vec::new()),
            Err(e) => Err(DeliveryError::destination(format!(
                "reading the log from {from}: {e}"
            ))),
        }
    }
}

impl Consumer for Forwarder {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn name(&self) -> &str {
        &self.destination.name
    }

    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        self.saved = match state {
            None => SavedForwarder::default(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                DeliveryError::destination(format!(
                    "the saved state of forwarder {:?} does not parse: {e}",
                    self.destination.name
                ))
            })?,
        };
        Ok(())
    }

    fn save_state(&self) -> Option<String> {
        serde_json::to_string(&self.saved).ok()
    }

    fn tick_every(&self) -> Duration {
        Duration::from_millis(self.destination.checkpoint_every_ms).min(Duration::from_secs(5))
    }

    async fn tick(&mut self, ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        if self.written.is_some() && !self.transport.is_alive() {
            self.connection_lost();
        }
        let (next, prev) = self.written.unwrap_or((self.saved.next, self.saved.prev));
        self.checkpoint_record(ctx, next, prev).await
    }

    async fn deliver(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        let Some(first) = batch.first().map(|e| e.event.seq) else {
            return Ok(0);
        };
        let batch_end = first + batch.len() as u64;
        if self.written.is_some() && !self.transport.is_alive() {
            self.connection_lost();
        }
        let (mut next, mut prev) = match self.written {
            Some((next, prev)) if next >= first => (next, prev),
            _ => {
                self.pending.clear();
                (first, self.saved.prev)
            }
        };
        if next < batch_end {
            let from = usize::try_from(next - first).unwrap_or(0);
            (next, prev) = self.write_chunk(&batch[from..], prev).await?;
        }
        if !self.transport.confirms_by_connection() {
            // UDP: handed to the kernel is all there is.
            self.checkpoint_record(ctx, next, prev).await?;
            self.pending.clear();
            self.saved = SavedForwarder {
                prev: self.written.map_or(self.saved.prev, |w| w.1),
                next: batch_end.max(next),
            };
            return Ok(batch.len());
        }
        // TCP, TLS: keep writing what is committed (reading ahead of the batch) until the
        // oldest chunk is confirmed, then hand back what is done.
        loop {
            let size = ctx.log_size();
            while next < size && next - first < MAX_IN_FLIGHT {
                let chunk = Self::read_ahead(ctx, next, size).await?;
                if chunk.is_empty() {
                    break;
                }
                (next, prev) = self.write_chunk(&chunk, prev).await?;
            }
            self.checkpoint_record(ctx, next, prev).await?;
            if !self.transport.is_alive() {
                self.connection_lost();
                return Err(DeliveryError::destination(format!(
                    "syslog {} {}: the receiver closed the connection",
                    self.destination.transport.as_str(),
                    self.destination.address
                )));
            }
            if self.ready_to_confirm(batch_end, next) {
                if let Some((end, prev)) = self.confirm(batch, first, batch_end) {
                    self.saved = SavedForwarder { prev, next: end };
                    return Ok(usize::try_from(end - first).unwrap_or(0));
                }
            }
            if self.pending.is_empty() {
                return Ok(0);
            }
            tokio::time::sleep_until(self.wake_at(tokio::time::Instant::now())).await;
        }
    }
}

impl Forwarder {
    /// Whether to hand back what is confirmed now: the whole batch (or everything written)
    /// is, or the oldest chunk has been confirmed for [`CONFIRM_GATHER`]. Handing back less
    /// would make the runner read its whole next batch again for a few entries.
    fn ready_to_confirm(&self, batch_end: u64, next: u64) -> bool {
        let now = tokio::time::Instant::now();
        let Some(front) = self.pending.front() else {
            return false;
        };
        let due = front.written_at + self.confirm_after;
        if now < due {
            return false;
        }
        if now >= due + CONFIRM_GATHER {
            return true;
        }
        let confirmable = self
            .pending
            .iter()
            .take_while(|c| now >= c.written_at + self.confirm_after)
            .last()
            .map_or(front.end, |c| c.end);
        confirmable >= batch_end || confirmable >= next
    }

    /// When the delivery loop should look again: when the next pending chunk becomes
    /// confirmable, when the oldest one has gathered for [`CONFIRM_GATHER`], or after
    /// [`POLL_COMMITTED`] to write what was committed meanwhile, whichever is first, and
    /// always after `now`: a wake-up already past would turn the wait into a busy loop.
    fn wake_at(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let mut wake = now + POLL_COMMITTED;
        if let Some(front) = self.pending.front() {
            wake = wake.min(front.written_at + self.confirm_after + CONFIRM_GATHER);
        }
        if let Some(next_due) = self
            .pending
            .iter()
            .map(|c| c.written_at + self.confirm_after)
            .find(|due| *due > now)
        {
            wake = wake.min(next_due);
        }
        wake.max(now + Duration::from_millis(1))
    }

    /// Takes the chunks written `confirm_after` ago off the pending list, up to the batch's
    /// end (a chunk reaching past it is split there); returns the new cursor and the last
    /// entry forwarded below it, or `None` when nothing is confirmed yet.
    fn confirm(
        &mut self,
        batch: &[SealedEntry],
        first: u64,
        batch_end: u64,
    ) -> Option<(u64, Option<u64>)> {
        let now = tokio::time::Instant::now();
        let mut done = None;
        while let Some(chunk) = self.pending.front_mut() {
            if now < chunk.written_at + self.confirm_after {
                break;
            }
            if chunk.end <= batch_end {
                done = Some((chunk.end, chunk.prev));
                self.pending.pop_front();
                continue;
            }
            if chunk.start < batch_end {
                let from = usize::try_from(chunk.start.saturating_sub(first)).unwrap_or(0);
                let prev_at = batch
                    .get(from..)
                    .unwrap_or_default()
                    .iter()
                    .rev()
                    .find(|e| self.filter.keeps(e))
                    .map(|e| e.event.seq)
                    .or(chunk.prev_before);
                chunk.start = batch_end;
                chunk.prev_before = prev_at;
                done = Some((batch_end, prev_at));
            }
            break;
        }
        done
    }
}

/// The consumer kind of forwarders.
pub const KIND: &str = "forwarder";

/// How the runner drives a forwarder: larger batches than the default, a short first retry
/// (the runner waits that long when a delivery is not done yet), the destination's lag
/// thresholds.
pub fn settings(destination: &SyslogDestination) -> ConsumerSettings {
    ConsumerSettings {
        batch_max: BATCH_MAX,
        backoff_min: Duration::from_millis(20),
        lag_warn_seconds: Some(destination.lag_warn_seconds),
        lag_warn_events: Some(destination.lag_warn_events),
        ..ConsumerSettings::default()
    }
}

/// Starts one forwarder per configured destination; a destination that cannot be set up
/// (unreadable CA file, …) is logged and skipped (the configuration was checked at start).
pub fn spawn_all(state: &crate::AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let config = state.node().config();
    let mut tasks = Vec::new();
    for destination in &config.forward.syslog {
        match Forwarder::new(destination.clone(), state.node().metrics().clone()) {
            Ok(forwarder) => {
                state.forwarders().register(ForwarderInfo {
                    destination: destination.clone(),
                    stats: forwarder.stats(),
                });
                tasks.push(crate::consumers::spawn(
                    state,
                    forwarder,
                    settings(destination),
                ));
            }
            Err(e) => {
                tracing::error!(destination = %destination.name, error = %e, "cannot start syslog forwarding");
            }
        }
    }
    tasks
}

#[cfg(test)]
mod tests;
