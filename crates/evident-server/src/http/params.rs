//! Query-string parsing that refuses what it does not understand: unknown parameters,
//! repeated parameters and values that are not UTF-8 are 400s naming the parameter. An empty
//! value (`?actor=`) counts as absent, as HTML forms send every field.

use super::error::ApiError;
use evident_core::event::{MIN_TIMESTAMP, Millis};

/// A relative span as `since=` takes it, in milliseconds: a positive whole number and a
/// unit, `s`, `m`, `h`, `d` or `w` (`30d`, `2h`, `90m`).
pub fn parse_span(text: &str) -> Result<i64, String> {
    let problem = || {
        format!(
            "{text:?} is not a span of time: a positive whole number and a unit s, m, h, d or w \
             (e.g. 30d, 2h)"
        )
    };
    let Some(unit) = text.chars().last() else {
        return Err(problem());
    };
    let unit_ms: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 604_800_000,
        _ => return Err(problem()),
    };
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(problem());
    }
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| format!("{text:?} is longer than any log can be"))
}

/// The parameters of one request, checked against the names a route accepts.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(format!("bad percent-encoding in {raw:?}")),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} does not decode to UTF-8"))
}

impl Params {
    /// Parses `query`; every name must be in `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = part.split_once('=').unwrap_or((part, ""));
            let name =
                decode(raw_name).map_err(|m| ApiError::bad_request("invalid_parameter", m))?;
            let value = decode(raw_value).map_err(|m| ApiError::bad_param(&name, m))?;
            if !allowed.contains(&name.as_str()) {
                let message = if allowed.is_empty() {
                    format!("unknown query parameter {name:?}: this route takes none")
                } else {
                    format!(
                        "unknown query parameter {name:?}; expected one of: {}",
                        allowed.join(", ")
                    )
                };
                return Err(ApiError::bad_request("unknown_parameter", message).with_field(name));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::bad_param(
                    &name,
                    format!("query parameter {name:?} given more than once"),
                ));
            }
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Parses the value of `name` with `parse`; its error message is wrapped into a 400.
    pub fn parse_with<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| parse(v).map_err(|e| ApiError::bad_param(name, format!("{name}: {e}"))))
            .transpose()
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.parse_with(name, |v| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a non-negative integer"))
        })
    }

    /// Replaces `since=SPAN` with the `from` it means at `now` (epoch milliseconds, never
    /// before the epoch), so that everything downstream, an export's signed header
    /// included, sees an absolute time. `since` together with `from` is refused.
    pub fn resolve_since(mut self, now: Millis) -> Result<Params, ApiError> {
        let Some(span) = self.get("since") else {
            self.pairs.retain(|(n, _)| n != "since");
            return Ok(self);
        };
        if self.get("from").is_some() {
            return Err(ApiError::bad_param(
                "since",
                "give since or from, not both (since=30d means from 30 days ago)",
            ));
        }
        let span =
            parse_span(span).map_err(|e| ApiError::bad_param("since", format!("since: {e}")))?;
        let from = now.saturating_sub(span).max(MIN_TIMESTAMP);
        self.pairs.retain(|(n, _)| n != "since" && n != "from");
        self.pairs.push(("from".to_owned(), from.to_string()));
        Ok(self)
    }

    /// The names given, in order (for echoing a query).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_refuses_unknown_and_repeated_names() {
        let p = Params::parse(
            Some("actor=al%20ice&action=config.*&x=&ip=10.0.0.0%2F8"),
            &["actor", "action", "x", "ip"],
        )
        .unwrap();
        assert_eq!(p.get("actor"), Some("al ice"));
        assert_eq!(p.get("action"), Some("config.*"));
        assert_eq!(p.get("x"), None);
        assert_eq!(p.get("ip"), Some("10.0.0.0/8"));

        let e = Params::parse(Some("actr=x"), &["actor"]).unwrap_err();
        assert_eq!(e.detail.code, "unknown_parameter");
        assert_eq!(e.detail.field.as_deref(), Some("actr"));

        let e = Params::parse(Some("actor=a&actor=b"), &["actor"]).unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("actor"));

        let e = Params::parse(Some("actor=%ff"), &["actor"]).unwrap_err();
        assert!(e.detail.message.contains("UTF-8"), "{}", e.detail.message);
        let e = Params::parse(Some("actor=%zz"), &["actor"]).unwrap_err();
        assert!(e.detail.message.contains("percent"), "{}", e.detail.message);
    }

    #[test]
    fn since_becomes_the_from_it_means_and_is_checked() {
        assert_eq!(parse_span("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_span("2h"), Ok(7_200_000));
        assert_eq!(parse_span("90m"), Ok(5_400_000));
        assert_eq!(parse_span("1w"), Ok(604_800_000));
        assert_eq!(parse_span("15s"), Ok(15_000));
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-3d",
            "03d",
            "3.5h",
            "3 d",
            "30dd",
            "9999999999999999999w",
        ] {
            assert!(parse_span(bad).is_err(), "{bad:?} accepted");
        }
        let now = 1_764_000_000_000;
        let p = Params::parse(Some("since=2h&actor=a"), &["since", "from", "actor"])
            .unwrap()
            .resolve_since(now)
            .unwrap();
        assert_eq!(p.get("from"), Some((now - 7_200_000).to_string().as_str()));
        assert_eq!(p.get("since"), None);
        assert_eq!(p.get("actor"), Some("a"));
        // Longer than the log: from the epoch.
        let p = Params::parse(Some("since=100000w"), &["since"])
            .unwrap()
            .resolve_since(now)
            .unwrap();
        assert_eq!(p.get("from"), Some("0"));
        // Empty: absent.
        let p = Params::parse(Some("since="), &["since", "from"])
            .unwrap()
            .resolve_since(now)
            .unwrap();
        assert_eq!(p.get("from"), None);
        let e = Params::parse(Some("since=2h&from=5"), &["since", "from"])
            .unwrap()
            .resolve_since(now)
            .unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("since"));
        let e = Params::parse(Some("since=2x"), &["since", "from"])
            .unwrap()
            .resolve_since(now)
            .unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("since"));
        assert!(
            e.detail.message.contains("s, m, h, d or w"),
            "{}",
            e.detail.message
        );
    }

    #[test]
    fn numbers_are_checked() {
        let p = Params::parse(Some("limit=-1"), &["limit"]).unwrap();
        let e = p.u64("limit").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("limit"));
        let p = Params::parse(Some("limit=10"), &["limit"]).unwrap();
        assert_eq!(p.u64("limit").unwrap(), Some(10));
    }
}
