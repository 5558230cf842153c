//! RFC 5424 syslog messages for forwarded entries and checkpoint records: the header mapping,
//! the structured data carrying each entry's integrity coordinates (escaped as RFC 5424
//! section 6.3.3 requires), the size limit with its truncation rule, and RFC 5425 octet
//! counting. Pure: values in, bytes out; the reading side is in `receiver.rs`.
//!
//! An entry becomes
//! ```text
//! <PRI>1 RECORDED_AT NODE_ID evident - ACTION [evident@32473 seq="…" node="…" tenant="…" hash="…" seal="…" leaf="…" prev="…" format="json"] PAYLOAD
//! ```
//! and a checkpoint record
//! ```text
//! <PRI>1 CREATED_AT NODE_ID evident - evident.checkpoint [evident-checkpoint@32473 node="…" size="…" root="…" prev="…"] {"checkpoint":"<signed note>"}
//! ```
//! `prev` is the seq of the entry this destination forwarded before this message (`-` for
//! none), so that a receiver finds what it misses even behind a filter: every `prev` it did
//! not receive is a gap.
//! A message longer than the destination's maximum keeps its header and structured data
//! whole: its PAYLOAD is cut at a UTF-8 character boundary so that the message fits, and the
//! structured data gains `truncated="<payload bytes before the cut>"`.

use evident_core::SealedEntry;
use evident_core::event::{Millis, Severity, format_rfc3339_millis};

/// Private enterprise number in the SD-IDs: 32473 is the number RFC 5612 reserves for
/// documentation and examples, since Evident has none of its own.
pub const ENTERPRISE_NUMBER: u32 = 32473;
/// SD-ID of an entry's integrity coordinates.
pub const ENTRY_SD_ID: &str = "evident@32473";
/// SD-ID of a checkpoint record.
pub const CHECKPOINT_SD_ID: &str = "evident-checkpoint@32473";
/// APP-NAME of every message.
pub const APP_NAME: &str = "evident";
/// MSGID of a checkpoint record.
pub const CHECKPOINT_MSGID: &str = "evident.checkpoint";
/// Longest MSGID RFC 5424 allows.
pub const MAX_MSGID_BYTES: usize = 32;
/// Smallest message every RFC 5426 receiver takes, and the smallest maximum a destination
/// may be configured with (the header and structured data of an entry always fit in it).
pub const MIN_MESSAGE_BYTES: usize = 480;

/// The syslog facility (RFC 5424 section 6.2.1), by keyword or number 0 to 23.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITY_NAMES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Facility {
    /// `local0` to `local7`, `auth`, … (the keywords of RFC 5424 table 1, as rsyslog names
    /// them) or the number 0 to 23.
    pub fn parse(text: &str) -> Result<Facility, String> {
        if let Some(n) = FACILITY_NAMES.iter().position(|name| *name == text) {
            return Ok(Facility(n as u8));
        }
        match text.parse::<u8>() {
            Ok(n) if n < 24 => Ok(Facility(n)),
            _ => Err(format!(
                "{text:?} is not a syslog facility (one of {} or 0 to 23)",
                FACILITY_NAMES.join(", ")
            )),
        }
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        FACILITY_NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("local0")
    }
}

impl Default for Facility {
    /// `local0`: the first facility free for local use.
    fn default() -> Self {
        Facility(16)
    }
}

/// The PRI value: facility × 8 + severity code.
pub fn priority(facility: Facility, severity: Severity) -> u16 {
    u16::from(facility.code()) * 8 + u16::from(severity.syslog_code())
}

/// Appends `value` as an RFC 5424 PARAM-VALUE: `"`, `\` and `]` get a backslash before them.
pub fn push_param_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The MSGID for `action`: printable US-ASCII only (any other character becomes `_`), at
/// most 32 of them; the full action is in the payload.
pub fn msgid(action: &str) -> String {
    let id: String = action
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_MSGID_BYTES)
        .collect();
    if id.is_empty() { "-".to_owned() } else { id }
}

/// HOSTNAME: printable US-ASCII, at most 255 (node ids are names of `[A-Za-z0-9_.:-]`).
fn hostname(node_id: &str) -> String {
    let name: String = node_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".to_owned()
    } else {
        name
    }
}

fn header(
    out: &mut String,
    facility: Facility,
    severity: Severity,
    at: Millis,
    node_id: &str,
    msgid: &str,
) {
    out.push('<');
    out.push_str(&priority(facility, severity).to_string());
    out.push_str(">1 ");
    out.push_str(&format_rfc3339_millis(at));
    out.push(' ');
    out.push_str(&hostname(node_id));
    out.push(' ');
    out.push_str(APP_NAME);
    out.push_str(" - ");
    out.push_str(msgid);
    out.push(' ');
}

fn param(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    push_param_value(out, value);
    out.push('"');
}

/// One entry as a syslog message of at most `max_bytes` (see the module docs for the
/// truncation rule); `payload` is the MSG in the destination's format and `format` its name.
/// Also says whether the payload was cut.
pub fn entry_message(
    entry: &SealedEntry,
    prev: Option<u64>,
    facility: Facility,
    format: &str,
    payload: &str,
    max_bytes: usize,
) -> (Vec<u8>, bool) {
    let event = &entry.event;
    let mut head = String::with_capacity(320);
    header(
        &mut head,
        facility,
        event.severity,
        event.recorded_at,
        &event.node_id,
        &msgid(&event.action),
    );
    head.push('[');
    head.push_str(ENTRY_SD_ID);
    param(&mut head, "seq", &event.seq.to_string());
    param(&mut head, "node", &event.node_id);
    param(&mut head, "tenant", &event.tenant);
    param(&mut head, "hash", &entry.hash.to_hex());
    param(&mut head, "seal", &entry.seal.to_hex());
    // Every entry is one leaf of the node's tree, at the index of its sequence number.
    param(&mut head, "leaf", &event.seq.to_string());
    param(&mut head, "prev", &prev_text(prev));
    param(&mut head, "format", format);
    finish(head, payload, max_bytes)
}

fn prev_text(prev: Option<u64>) -> String {
    prev.map_or_else(|| "-".to_owned(), |seq| seq.to_string())
}

/// The facts a checkpoint record states.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRecord<'a> {
    pub node_id: &'a str,
    pub created_at: Millis,
    pub size: u64,
    /// The root hash, base64 as in the note.
    pub root_base64: &'a str,
    /// The signed checkpoint note.
    pub note: &'a str,
    /// The last entry forwarded before the record.
    pub prev: Option<u64>,
}

/// A checkpoint record (see the module docs).
pub fn checkpoint_message(
    record: &CheckpointRecord<'_>,
    facility: Facility,
    max_bytes: usize,
) -> Vec<u8> {
    let mut head = String::with_capacity(200);
    header(
        &mut head,
        facility,
        Severity::Info,
        record.created_at,
        record.node_id,
        CHECKPOINT_MSGID,
    );
    head.push('[');
    head.push_str(CHECKPOINT_SD_ID);
    param(&mut head, "node", record.node_id);
    param(&mut head, "size", &record.size.to_string());
    param(&mut head, "root", record.root_base64);
    param(&mut head, "prev", &prev_text(record.prev));
    let payload = serde_json::json!({ "checkpoint": record.note }).to_string();
    finish(head, &payload, max_bytes).0
}

/// Closes the structured data of `head` and adds the payload, cut to fit `max_bytes`.
fn finish(mut head: String, payload: &str, max_bytes: usize) -> (Vec<u8>, bool) {
    // "] " + payload.
    if head.len() + 2 + payload.len() <= max_bytes {
        head.push_str("] ");
        head.push_str(payload);
        return (head.into_bytes(), false);
    }
    param(&mut head, "truncated", &payload.len().to_string());
    head.push_str("] ");
    let room = max_bytes.saturating_sub(head.len());
    let mut cut = room.min(payload.len());
    while cut > 0 && !payload.is_char_boundary(cut) {
        cut -= 1;
    }
    head.push_str(payload.get(..cut).unwrap_or(""));
    (head.into_bytes(), true)
}

/// RFC 5425 / RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(message.len() + 8);
    frame.extend_from_slice(message.len().to_string().as_bytes());
    frame.push(b' ');
    frame.extend_from_slice(message);
    frame
}
