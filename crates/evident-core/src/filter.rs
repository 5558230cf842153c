//! Event filters: the query parameters of `GET /api/v1/audit-log` parsed into one value, and
//! the one rule deciding whether an event matches them. The server parses queries with it (the
//! stores then run the same filter in SQL) and the export verifier checks every entry of a
//! filtered export against the filter its signed header states. Pure: text in, verdicts out.

use crate::event::{self, ActorKind, Event, Millis, Outcome, Severity};
use std::net::IpAddr;

/// The query parameters that narrow which events match, in the order they are documented.
pub const FILTER_PARAMS: [&str; 13] = [
    "from",
    "to",
    "occurred_from",
    "occurred_to",
    "actor",
    "actor_kind",
    "action",
    "target",
    "ip",
    "tenant",
    "node",
    "severity",
    "outcome",
];

/// How an action filter matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    Exact(String),
    /// Matches the prefix itself and every action below it: `config` matches `config` and
    /// `config.threshold.changed` (the API spells it `config.*`).
    Prefix(String),
}

/// An IP address or CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFilter {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// What a filter keeps. Every field narrows; `None` means no constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// recorded_at >= from (ms).
    pub from: Option<Millis>,
    /// recorded_at < to (ms).
    pub to: Option<Millis>,
    /// occurred_at >= occurred_from (ms). An event that states no occurred_at never matches
    /// an occurred_at bound: when it happened is unknown, so it is not known to be in range.
    pub occurred_from: Option<Millis>,
    /// occurred_at < occurred_to (ms); as `occurred_from`, never an event without occurred_at.
    pub occurred_to: Option<Millis>,
    pub actor: Option<String>,
    pub actor_kind: Option<ActorKind>,
    pub action: Option<ActionFilter>,
    /// `kind:id` (split at the first `:`), or a bare id matching any kind.
    pub target: Option<String>,
    pub ip: Option<IpFilter>,
    pub tenant: Option<String>,
    pub node: Option<String>,
    /// Minimum severity.
    pub severity: Option<Severity>,
    pub outcome: Option<Outcome>,
}

/// A parameter value that is not one the filter understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {problem}")]
pub struct FilterError {
    /// The query parameter at fault.
    pub param: String,
    pub problem: String,
}

impl FilterError {
    fn new(param: &str, problem: impl Into<String>) -> FilterError {
        FilterError {
            param: param.to_owned(),
            problem: problem.into(),
        }
    }
}

impl EventFilter {
    /// The filter the query parameters describe. `value_of(name)` gives a parameter's value
    /// (`None` when absent or empty); only the names of [`FILTER_PARAMS`] are asked for.
    pub fn from_params<'a>(
        value_of: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<EventFilter, FilterError> {
        fn parse<T>(
            value: Option<&str>,
            param: &str,
            f: impl FnOnce(&str) -> Result<T, String>,
        ) -> Result<Option<T>, FilterError> {
            value
                .map(|v| f(v).map_err(|p| FilterError::new(param, p)))
                .transpose()
        }
        let timestamp = |v: &str| event::parse_timestamp(v).map_err(|e| e.problem);
        let name = |check: fn(&str) -> Result<(), event::ValidationError>| {
            move |v: &str| check(v).map(|()| v.to_owned()).map_err(|e| e.problem)
        };
        let filter = EventFilter {
            from: parse(value_of("from"), "from", timestamp)?,
            to: parse(value_of("to"), "to", timestamp)?,
            occurred_from: parse(value_of("occurred_from"), "occurred_from", timestamp)?,
            occurred_to: parse(value_of("occurred_to"), "occurred_to", timestamp)?,
            actor: value_of("actor").map(str::to_owned),
            actor_kind: parse(value_of("actor_kind"), "actor_kind", |v| {
                ActorKind::from_name(v)
                    .ok_or_else(|| "expected user, service, api_key or system".to_owned())
            })?,
            action: parse(value_of("action"), "action", parse_action)?,
            target: value_of("target").map(str::to_owned),
            ip: parse(value_of("ip"), "ip", parse_ip_filter)?,
            tenant: parse(value_of("tenant"), "tenant", name(event::validate_tenant))?,
            node: parse(value_of("node"), "node", name(event::validate_node_id))?,
            severity: parse(value_of("severity"), "severity", |v| {
                Severity::parse(v).ok_or_else(|| {
                    "expected debug, info, notice, warning, error, critical, alert or emergency"
                        .to_owned()
                })
            })?,
            outcome: parse(value_of("outcome"), "outcome", |v| {
                Outcome::from_name(v)
                    .ok_or_else(|| "expected success, failure or denied".to_owned())
            })?,
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if from > to {
                return Err(FilterError::new("to", "`to` is before `from`"));
            }
        }
        if let (Some(from), Some(to)) = (filter.occurred_from, filter.occurred_to) {
            if from > to {
                return Err(FilterError::new(
                    "occurred_to",
                    "`occurred_to` is before `occurred_from`",
                ));
            }
        }
        Ok(filter)
    }

    /// Whether the filter keeps every event (no parameter narrows it).
    pub fn is_unfiltered(&self) -> bool {
        *self == EventFilter::default()
    }

    /// Whether `event` matches every constraint of the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.first_mismatch(event).is_none()
    }

    /// The first parameter (in [`FILTER_PARAMS`] order) that `event` does not match.
    pub fn first_mismatch(&self, event: &Event) -> Option<&'static str> {
        let fails = |c: Option<bool>| c == Some(false);
        if fails(self.from.map(|from| event.recorded_at >= from)) {
            return Some("from");
        }
        if fails(self.to.map(|to| event.recorded_at < to)) {
            return Some("to");
        }
        if fails(
            self.occurred_from
                .map(|from| event.occurred_at.is_some_and(|at| at >= from)),
        ) {
            return Some("occurred_from");
        }
        if fails(
            self.occurred_to
                .map(|to| event.occurred_at.is_some_and(|at| at < to)),
        ) {
            return Some("occurred_to");
        }
        if fails(self.actor.as_ref().map(|a| *a == event.actor.id)) {
            return Some("actor");
        }
        if fails(self.actor_kind.map(|k| k == event.actor.kind)) {
            return Some("actor_kind");
        }
        if fails(self.action.as_ref().map(|a| a.matches(&event.action))) {
            return Some("action");
        }
        if fails(self.target.as_ref().map(|t| target_matches(t, event))) {
            return Some("target");
        }
        if fails(
            self.ip
                .map(|ip| event.actor.ip.is_some_and(|a| ip.contains(a))),
        ) {
            return Some("ip");
        }
        if fails(self.tenant.as_ref().map(|t| *t == event.tenant)) {
            return Some("tenant");
        }
        if fails(self.node.as_ref().map(|n| *n == event.node_id)) {
            return Some("node");
        }
        if fails(self.severity.map(|min| event.severity >= min)) {
            return Some("severity");
        }
        if fails(self.outcome.map(|o| o == event.outcome)) {
            return Some("outcome");
        }
        None
    }
}

impl ActionFilter {
    pub fn matches(&self, action: &str) -> bool {
        match self {
            ActionFilter::Exact(a) => a == action,
            ActionFilter::Prefix(p) => {
                p.is_empty()
                    || action
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            }
        }
    }
}

impl IpFilter {
    /// Whether `addr` lies in the network. Both are compared as IPv6, an IPv4 address as its
    /// IPv4-mapped form (`::ffff:a.b.c.d`), as the stores hold them: `::ffff:0:0/96` holds
    /// every IPv4 address and `::/0` every address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (net, bits) = mapped(self.addr, self.prefix_len);
        let (value, _) = mapped(addr, 0);
        let host_mask = u128::MAX.checked_shr(bits).unwrap_or(0);
        value & !host_mask == net & !host_mask
    }
}

/// An address as 128 bits and a prefix length counted on them.
fn mapped(addr: IpAddr, prefix_len: u8) -> (u128, u32) {
    match addr {
        IpAddr::V4(v4) => (
            u128::from_be_bytes(v4.to_ipv6_mapped().octets()),
            96 + u32::from(prefix_len),
        ),
        IpAddr::V6(v6) => (u128::from_be_bytes(v6.octets()), u32::from(prefix_len)),
    }
}

fn target_matches(target: &str, event: &Event) -> bool {
    match target.split_once(':') {
        Some((kind, id)) => event.target.kind == kind && event.target.id == id,
        None => event.target.id == target,
    }
}

/// `config.*` (the prefix and everything below it) or an exact action name.
pub fn parse_action(text: &str) -> Result<ActionFilter, String> {
    match text.strip_suffix(".*") {
        Some(prefix) => event::validate_action(prefix)
            .map(|()| ActionFilter::Prefix(prefix.to_owned()))
            .map_err(|e| e.problem),
        None => event::validate_action(text)
            .map(|()| ActionFilter::Exact(text.to_owned()))
            .map_err(|e| e.problem),
    }
}

/// An address (`10.1.2.3`, `2001:db8::1`) or a CIDR network (`10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_ip_filter(text: &str) -> Result<IpFilter, String> {
    parse_network(text, |addr| addr)
        .map(|(addr, prefix_len)| IpFilter { addr, prefix_len })
        .map_err(|e| match e {
            NetworkSyntax::NotAnAddress => {
                format!("\"{text}\" is not an IP address or CIDR network")
            }
            NetworkSyntax::PrefixOutOfRange { max } => {
                format!("\"{text}\": prefix length must be 0 to {max}")
            }
        })
}

/// Why a text is not `address[/prefix]`; each caller words it for its own context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkSyntax {
    /// The part before any `/` is not an IPv4 or IPv6 address.
    NotAnAddress,
    /// The prefix length is not a number from 0 to `max` (32 for IPv4, 128 for IPv6).
    PrefixOutOfRange { max: u8 },
}

/// The one reading of `address[/prefix]` (the `ip` filter, `trusted_proxies`): the address,
/// passed through `normalize` before its family decides the longest prefix, and the prefix
/// length, the whole address when there is none. Nothing is masked: callers decide that.
pub fn parse_network(
    text: &str,
    normalize: impl FnOnce(IpAddr) -> IpAddr,
) -> Result<(IpAddr, u8), NetworkSyntax> {
    let (addr_text, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| NetworkSyntax::NotAnAddress)?;
    let addr = normalize(addr);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or(NetworkSyntax::PrefixOutOfRange { max })?,
    };
    Ok((addr, prefix_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&'static str, &'static str)]) -> Result<EventFilter, FilterError> {
        EventFilter::from_params(|name| {
            pairs
                .iter()
                .find(|(n, v)| *n == name && !v.is_empty())
                .map(|(_, v)| *v)
        })
    }

    #[test]
    fn parses_each_parameter_and_names_a_bad_one() {
        let f = params(&[
            ("from", "2026-03-14T09:00:00Z"),
            ("action", "config.*"),
            ("ip", "10.0.0.0/8"),
            ("severity", "warn"),
        ])
        .unwrap();
        assert_eq!(f.from, Some(1_773_478_800_000));
        assert_eq!(f.action, Some(ActionFilter::Prefix("config".into())));
        assert_eq!(f.ip.unwrap().prefix_len, 8);
        assert_eq!(f.severity, Some(Severity::Warning));
        assert!(!f.is_unfiltered());
        assert!(params(&[]).unwrap().is_unfiltered());

        for (pairs, param) in [
            (&[("ip", "10.0.0.0/33")][..], "ip"),
            (&[("actor_kind", "robot")][..], "actor_kind"),
            (
                &[
                    ("from", "2026-03-14T10:00:00Z"),
                    ("to", "2026-03-14T09:00:00Z"),
                ][..],
                "to",
            ),
            (
                &[
                    ("occurred_from", "2026-03-14T10:00:00Z"),
                    ("occurred_to", "2026-03-14T09:00:00Z"),
                ][..],
                "occurred_to",
            ),
            (&[("occurred_from", "yesterday")][..], "occurred_from"),
            (&[("action", "*")][..], "action"),
            (&[("tenant", "a b")][..], "tenant"),
        ] {
            assert_eq!(params(pairs).unwrap_err().param, param, "{pairs:?}");
        }
    }

    #[test]
    fn occurred_bounds_never_match_an_event_without_occurred_at() {
        let f = params(&[("occurred_from", "1000"), ("occurred_to", "2000")]).unwrap();
        let event = |occurred_at: Option<Millis>| {
            let input = event::EventInput::from_json(&serde_json::json!({
                "actor": {"id": "a", "kind": "user"},
                "action": "x",
                "target": {"kind": "k", "id": "i"},
                "outcome": "success",
                "severity": "info",
                "tenant": "default",
            }))
            .unwrap();
            let input = event::EventInput {
                occurred_at,
                ..input
            };
            Event::new(0, uuid::Uuid::nil(), 5, "n".into(), "system".into(), input)
        };
        assert!(f.matches(&event(Some(1000))));
        assert!(f.matches(&event(Some(1999))));
        assert_eq!(f.first_mismatch(&event(Some(999))), Some("occurred_from"));
        assert_eq!(f.first_mismatch(&event(Some(2000))), Some("occurred_to"));
        assert_eq!(f.first_mismatch(&event(None)), Some("occurred_from"));
        let only_to = params(&[("occurred_to", "2000")]).unwrap();
        assert_eq!(only_to.first_mismatch(&event(None)), Some("occurred_to"));
        // Recorded-time bounds are not occurred-time bounds.
        assert!(params(&[("from", "1")]).unwrap().matches(&event(None)));
    }

    #[test]
    fn ip_networks_compare_ipv4_as_mapped() {
        let ip = |s: &str| parse_ip_filter(s).unwrap();
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(ip("10.0.0.0/8").contains(v4));
        assert!(!ip("11.0.0.0/8").contains(v4));
        assert!(ip("0.0.0.0/0").contains(v4));
        assert!(!ip("0.0.0.0/0").contains(v6));
        assert!(ip("::ffff:0:0/96").contains(v4));
        assert!(ip("::/0").contains(v4) && ip("::/0").contains(v6));
        assert!(ip("2001:db8::/32").contains(v6));
        assert!(!ip("2001:db8::/32").contains(v4));
    }

    #[test]
    fn action_prefixes_match_whole_segments() {
        let p = ActionFilter::Prefix("config".into());
        assert!(p.matches("config") && p.matches("config.threshold.changed"));
        assert!(!p.matches("configx") && !p.matches("conf"));
        assert!(ActionFilter::Exact("a.b".into()).matches("a.b"));
        assert!(!ActionFilter::Exact("a.b".into()).matches("a.b.c"));
    }
}
