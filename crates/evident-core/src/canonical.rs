//! The canonical forms: the one binary encoding of an [`Event`] that the chain hashes, and the
//! RFC 8785 (JCS) canonical JSON text that a context object is held as. Validation lives in
//! [`crate::event`]; this module only writes bytes, and is specified byte for byte in
//! `docs/FORMAT.md`.
//!
//! # Entry encoding, version 1
//!
//! Every multi-byte integer is big-endian. A *string* is its UTF-8 byte length as a `u32`
//! followed by those bytes (no terminator). Fields follow one another with no padding:
//!
//! | # | field              | encoding                                                          |
//! |---|--------------------|-------------------------------------------------------------------|
//! | 0 | magic              | 17 bytes: ASCII `evident/entry/v1` (16 bytes) then `0x00`          |
//! | 1 | `seq`              | `u64`                                                             |
//! | 2 | `id`               | the UUID's 16 bytes (RFC 9562 byte order)                         |
//! | 3 | `recorded_at`      | `i64` milliseconds since 1970-01-01T00:00:00Z                     |
//! | 4 | `occurred_at`      | `0x00` when absent; `0x01` then `i64` milliseconds                |
//! | 5 | `node_id`          | string                                                            |
//! | 6 | `tenant`           | string                                                            |
//! | 7 | `actor.id`         | string                                                            |
//! | 8 | `actor.kind`       | string: `user`, `service`, `api_key` or `system`                  |
//! | 9 | `actor.ip`         | `0x00` absent; `0x04` then 4 octets; `0x06` then 16 octets        |
//! |10 | `actor.user_agent` | `0x00` when absent; `0x01` then string                            |
//! |11 | `action`           | string                                                            |
//! |12 | `target.kind`      | string                                                            |
//! |13 | `target.id`        | string                                                            |
//! |14 | `outcome`          | string: `success`, `failure` or `denied`                          |
//! |15 | `severity`         | string: `debug`, `info`, `notice`, `warning`, `error`, `critical`, `alert` or `emergency` |
//! |16 | `context`          | string: the RFC 8785 canonical JSON text of the context object    |
//!
//! # Entry encoding, version 2
//!
//! Version 1 with the magic `evident/entry/v2` (then `0x00`) and one more field at the end:
//!
//! | # | field              | encoding                                                          |
//! |---|--------------------|-------------------------------------------------------------------|
//! |17 | `appended_by`      | string: the id of the API key that appended the entry, or `system` |
//!
//! An event's version follows from [`Event::appended_by`]: `None` is an entry written before
//! key ids were recorded (version 1, kept and verified as it was stored), `Some` is version 2,
//! what every new entry is. Both versions are hashed by the same chain; a log may hold both.
//!
//! The magic separates this encoding from anything else hashed with SHA-256 and names its
//! version; a future layout changes the magic. Addresses are encoded as held: validation turns
//! an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into IPv4 before an event is stored, so such
//! an address never reaches the encoder from a valid event.
//!
//! # Context canonical JSON (RFC 8785)
//!
//! No whitespace; object members sorted by their names compared as UTF-16 code-unit sequences;
//! strings with `"` and `\` escaped, U+0008, U+0009, U+000A, U+000C, U+000D as `\b \t \n \f \r`,
//! the other code points below U+0020 as `\u00xx` (lowercase hex), and everything else as
//! literal UTF-8; numbers as ECMAScript's `Number.prototype.toString` of the IEEE 754 double.

use crate::event::Event;
use serde_json::Value;
use std::cmp::Ordering;
use std::net::IpAddr;

/// Leading bytes of a version-1 entry: domain separation and format version.
pub const ENTRY_MAGIC_V1: &[u8; 17] = b"evident/entry/v1\0";
/// Leading bytes of a version-2 entry (one that records which key appended it).
pub const ENTRY_MAGIC_V2: &[u8; 17] = b"evident/entry/v2\0";

/// The magic of the encoding version `event` is held in.
pub fn entry_magic(event: &Event) -> &'static [u8; 17] {
    match event.appended_by {
        None => ENTRY_MAGIC_V1,
        Some(_) => ENTRY_MAGIC_V2,
    }
}

/// Exact length in bytes of the canonical encoding of `event`.
pub fn encoded_len(event: &Event) -> usize {
    let string = |s: &str| 4 + s.len();
    let ip = match event.actor.ip {
        None => 1,
        Some(IpAddr::V4(_)) => 1 + 4,
        Some(IpAddr::V6(_)) => 1 + 16,
    };
    entry_magic(event).len()
        + 8
        + 16
        + 8
        + if event.occurred_at.is_some() { 9 } else { 1 }
        + string(&event.node_id)
        + string(&event.tenant)
        + string(&event.actor.id)
        + string(event.actor.kind.as_str())
        + ip
        + event
            .actor
            .user_agent
            .as_deref()
            .map_or(1, |ua| 1 + string(ua))
        + string(&event.action)
        + string(&event.target.kind)
        + string(&event.target.id)
        + string(event.outcome.as_str())
        + string(event.severity.as_str())
        + string(event.context.as_str())
        + event.appended_by.as_deref().map_or(0, string)
}

/// Appends the canonical bytes of `event` to `out`, reserving the exact room once.
pub fn encode_into(event: &Event, out: &mut Vec<u8>) {
    out.reserve(encoded_len(event));
    out.extend_from_slice(entry_magic(event));
    out.extend_from_slice(&event.seq.to_be_bytes());
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&event.recorded_at.to_be_bytes());
    match event.occurred_at {
        None => out.push(0x00),
        Some(ms) => {
            out.push(0x01);
            out.extend_from_slice(&ms.to_be_bytes());
        }
    }
    put_str(out, &event.node_id);
    put_str(out, &event.tenant);
    put_str(out, &event.actor.id);
    put_str(out, event.actor.kind.as_str());
    match event.actor.ip {
        None => out.push(0x00),
        Some(IpAddr::V4(v4)) => {
            out.push(0x04);
            out.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out.push(0x06);
            out.extend_from_slice(&v6.octets());
        }
    }
    match &event.actor.user_agent {
        None => out.push(0x00),
        Some(ua) => {
            out.push(0x01);
            put_str(out, ua);
        }
    }
    put_str(out, &event.action);
    put_str(out, &event.target.kind);
    put_str(out, &event.target.id);
    put_str(out, event.outcome.as_str());
    put_str(out, event.severity.as_str());
    put_str(out, event.context.as_str());
    if let Some(appended_by) = &event.appended_by {
        put_str(out, appended_by);
    }
}

/// The canonical bytes of `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(event, &mut out);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Validated fields are far below 4 GiB (the context is capped at 16 KiB); saturating keeps
    // this total for a hand-built event without a panic path.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The RFC 8785 canonical text of any JSON value.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical_json(value, &mut out);
    out
}

/// Appends the RFC 8785 canonical text of `value` to `out`.
pub fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| utf16_cmp(a.0, b.0));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
    }
}

/// RFC 8785 §3.2.3 member order: names compared as sequences of UTF-16 code units.
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Largest integer magnitude a double holds exactly (2^53 − 1).
const MAX_EXACT_INT: u64 = (1 << 53) - 1;

fn write_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write;
    // Integers a double holds exactly print as plain digits under ECMAScript rules (they are
    // below 1e21), so they skip the float path; larger ones are rounded to the nearest double
    // first, as JCS requires.
    if let Some(u) = n.as_u64() {
        if u <= MAX_EXACT_INT {
            let _ = write!(out, "{u}");
            return;
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_EXACT_INT {
            let _ = write!(out, "{i}");
            return;
        }
    }
    match n.as_f64() {
        Some(x) => write_es_number(x, out),
        // serde_json numbers are always finite; keep the writer total regardless.
        None => out.push_str("null"),
    }
}

/// Appends ECMAScript's `Number.prototype.toString(x)` (ECMA-262 §6.1.6.1.20), the number form
/// RFC 8785 prescribes. Non-finite values have no JSON form and are written as `null`; the
/// context validator refuses them before this is reached.
pub fn write_es_number(x: f64, out: &mut String) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    // ryu-js picks ECMAScript's digits (shortest, ties to even, which Rust's own `{:e}` does
    // not do) and lays them out as ECMAScript does.
    let mut buf = ryu_js::Buffer::new();
    out.push_str(buf.format_finite(x));
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `start..i` always falls on character boundaries.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(x: f64) -> String {
        let mut s = String::new();
        write_es_number(x, &mut s);
        s
    }

    #[test]
    fn rfc8785_appendix_b_numbers() {
        let table: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in table {
            assert_eq!(es(f64::from_bits(bits)), expected, "bits {bits:016x}");
        }
    }

    #[test]
    fn non_finite_numbers_have_no_json_form() {
        assert_eq!(es(f64::NAN), "null");
        assert_eq!(es(f64::INFINITY), "null");
    }

    #[test]
    fn rfc8785_section_3_2_2_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(canonical_json(&value), expected);
        // §3.2.4 gives the UTF-8 bytes of the same output.
        let rfc_324 = "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
             75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
             5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
             65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
             5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
             30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d";
        let bytes = hex::decode(rfc_324.replace(' ', "")).unwrap();
        assert_eq!(canonical_json(&value).as_bytes(), bytes.as_slice());
    }

    #[test]
    fn rfc8785_section_3_2_3_member_order() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
             \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canonical_json(&value), expected);
    }

    #[test]
    fn utf16_order_differs_from_code_point_order_above_the_bmp() {
        // U+1F600 is D83D DE00 in UTF-16, below U+FB33 there, though above it as a code point.
        assert_eq!(utf16_cmp("\u{1f600}", "\u{fb33}"), Ordering::Less);
        assert_eq!("\u{1f600}".cmp("\u{fb33}"), Ordering::Greater);
    }

    #[test]
    fn control_characters_escape_with_lowercase_hex() {
        let value = Value::String("\u{0}\u{1f}\u{7f}\u{8}\t\n\u{c}\r".to_owned());
        assert_eq!(
            canonical_json(&value),
            "\"\\u0000\\u001f\u{7f}\\b\\t\\n\\f\\r\""
        );
    }

    #[test]
    fn big_integers_are_rounded_to_doubles() {
        let value: Value =
            serde_json::from_str("[18446744073709551615, -9223372036854775808, 9007199254740993]")
                .unwrap();
        assert_eq!(
            canonical_json(&value),
            "[18446744073709552000,-9223372036854776000,9007199254740992]"
        );
    }

    proptest::proptest! {
        #[test]
        fn es_numbers_round_trip(bits in proptest::num::u64::ANY) {
            let x = f64::from_bits(bits);
            proptest::prop_assume!(x.is_finite());
            let text = es(x);
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back, if x == 0.0 { 0.0 } else { x });
            // A JSON parser reads the same double back, and canonicalizing it is stable.
            let value: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(canonical_json(&value), text);
        }
    }
}
