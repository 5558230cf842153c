//! ArcSight Common Event Format (CEF 0, as in "Implementing ArcSight CEF" rev. 25) lines:
//! `CEF:0|Evident|evident|version|signature id|name|severity|extension`, with the header
//! and extension escaping of the spec and the integrity coordinates in `cs1`…`cs6`.

use super::{Coordinates, EventClass, PRODUCT_VERSION};
use evident_core::SealedEntry;
use evident_core::event::Severity;
use std::fmt::Write as _;
use std::net::IpAddr;

/// CEF severity, 0 (lowest) to 10 (highest).
pub fn severity(severity: Severity) -> u8 {
    match severity {
        Severity::Debug => 0,
        Severity::Info => 1,
        Severity::Notice => 3,
        Severity::Warning => 5,
        Severity::Error => 7,
        Severity::Critical => 8,
        Severity::Alert => 9,
        Severity::Emergency => 10,
    }
}

/// Appends a header field: `\` and `|` escaped with a backslash. A line break has no escape
/// in a header field and would end the record, so it is written as a space.
pub fn push_header(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends an extension value: `\` and `=` escaped with a backslash, CR and LF as `\r` and
/// `\n` (a `|` needs no escape there).
pub fn push_value(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The line.
pub fn render(entry: &SealedEntry, node_id: &str) -> String {
    let e = &entry.event;
    let c = Coordinates::of(entry);
    let mut out = String::with_capacity(768);
    out.push_str("CEF:0|Evident|evident|");
    push_header(&mut out, PRODUCT_VERSION);
    out.push('|');
    push_header(&mut out, &e.action);
    out.push('|');
    push_header(&mut out, &format!("{} {}", e.action, e.outcome));
    out.push('|');
    // Writing to a String cannot fail.
    let _ = write!(out, "{}|", severity(e.severity));

    let mut first = true;
    let mut ext = |out: &mut String, key: &str, value: &str| {
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(key);
        out.push('=');
        push_value(out, value);
    };
    ext(&mut out, "rt", &e.recorded_at.to_string());
    if let Some(at) = e.occurred_at {
        ext(&mut out, "start", &at.to_string());
    }
    ext(&mut out, "externalId", &e.id.to_string());
    ext(&mut out, "dvchost", node_id);
    ext(&mut out, "cat", EventClass::of(&e.action).as_str());
    ext(&mut out, "act", &e.action);
    ext(&mut out, "outcome", e.outcome.as_str());
    ext(&mut out, "suser", &e.actor.id);
    match e.actor.ip {
        Some(IpAddr::V4(ip)) => ext(&mut out, "src", &ip.to_string()),
        Some(IpAddr::V6(ip)) => {
            ext(&mut out, "c6a2", &ip.to_string());
            ext(&mut out, "c6a2Label", "Source IPv6 Address");
        }
        None => {}
    }
    if let Some(agent) = &e.actor.user_agent {
        ext(&mut out, "requestClientApplication", agent);
    }
    if e.target.kind == "user" {
        ext(&mut out, "duser", &e.target.id);
    }
    ext(&mut out, "cs1", &c.seq.to_string());
    ext(&mut out, "cs1Label", "seq");
    ext(&mut out, "cs2", &c.node_id);
    ext(&mut out, "cs2Label", "node");
    ext(&mut out, "cs3", &c.entry_hash);
    ext(&mut out, "cs3Label", "entryHash");
    ext(&mut out, "cs4", &c.seal);
    ext(&mut out, "cs4Label", "seal");
    ext(&mut out, "cs5", &c.leaf_index.to_string());
    ext(&mut out, "cs5Label", "leafIndex");
    ext(&mut out, "cs6", &e.tenant);
    ext(&mut out, "cs6Label", "tenant");
    ext(
        &mut out,
        "flexString1",
        &format!("{}:{}", e.target.kind, e.target.id),
    );
    ext(&mut out, "flexString1Label", "target");
    if let Some(by) = &e.appended_by {
        ext(&mut out, "flexString2", by);
        ext(&mut out, "flexString2Label", "appendedBy");
    }
    ext(&mut out, "cn1", &e.seq.to_string());
    ext(&mut out, "cn1Label", "seq");
    ext(&mut out, "msg", e.context.as_str());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tests::entry;
    use evident_core::event::Outcome;

    #[test]
    fn header_and_extension_values_are_escaped() {
        let mut h = String::new();
        push_header(&mut h, "a|b\\c=d\ne");
        assert_eq!(h, "a\\|b\\\\c=d e");
        let mut v = String::new();
        push_value(&mut v, "a|b\\c=d\r\ne");
        assert_eq!(v, "a|b\\\\c\\=d\\r\\ne");
    }

    #[test]
    fn the_line_has_the_header_and_the_coordinates() {
        let entry = entry("auth.login", Outcome::Failure, Severity::Error);
        let line = render(&entry, "reporter-1");
        let version = PRODUCT_VERSION;
        assert!(
            line.starts_with(&format!(
                "CEF:0|Evident|evident|{version}|auth.login|auth.login failure|7|rt=1773478800123 "
            )),
            "{line}"
        );
        assert!(line.contains("suser=alice|x\\=y\\\\z "), "{line}");
        assert!(line.contains(&format!("cs3={} cs3Label=entryHash", entry.hash.to_hex())));
        assert!(
            line.contains("requestClientApplication=curl/8 (x\\=1\\ny) "),
            "{line}"
        );
    }
}
