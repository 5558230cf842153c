//! The synthetic workload: realistic, varied audit events written straight to JSON text, and the
//! filter values the query benchmark asks for. Deterministic (a seeded SplitMix64), so two runs
//! load the same log shape. Owns the distributions only; sending them is `ingest.rs`'s job.
//!
//! Shape: 1,000 actors (users, services, API keys, system), 50 actions in 8 prefixes with
//! skewed weights, 5,000 targets, 4,000 source addresses (three IPv4 /16 networks and one IPv6
//! /32), 3 tenants (60/30/10), severities and outcomes that follow the action, and a small
//! context object (~80 bytes).

use std::fmt::Write as _;

/// SplitMix64: fast, tiny, and good enough to spread benchmark data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

pub const ACTORS: u64 = 1000;
pub const TARGETS: u64 = 5000;
pub const ADDRESSES: u64 = 4000;

/// Tenants and their weights.
pub const TENANTS: [(&str, u64); 3] = [("acme", 60), ("globex", 30), ("initech", 10)];

/// Actions and their relative weights; 8 prefixes, 50 actions.
pub const ACTIONS: [(&str, u64); 50] = [
    ("auth.login.succeeded", 220),
    ("auth.login.failed", 60),
    ("auth.logout", 90),
    ("auth.mfa.challenged", 40),
    ("auth.mfa.failed", 8),
    ("auth.password.changed", 6),
    ("auth.session.revoked", 5),
    ("auth.token.refreshed", 80),
    ("config.threshold.changed", 12),
    ("config.rule.created", 6),
    ("config.rule.updated", 10),
    ("config.rule.deleted", 3),
    ("config.setting.changed", 9),
    ("config.retention.changed", 1),
    ("config.integration.enabled", 2),
    ("config.integration.disabled", 1),
    ("key.created", 3),
    ("key.rotated", 2),
    ("key.revoked", 1),
    ("key.used", 70),
    ("key.rotation.confirmed", 2),
    ("user.created", 4),
    ("user.deleted", 1),
    ("user.invited", 3),
    ("user.suspended", 1),
    ("user.role.granted", 3),
    ("user.role.revoked", 2),
    ("user.profile.updated", 8),
    ("pcap.download", 25),
    ("pcap.capture.started", 10),
    ("pcap.capture.stopped", 10),
    ("pcap.capture.deleted", 2),
    ("pcap.search", 30),
    ("node.registered", 2),
    ("node.decommissioned", 1),
    ("node.restarted", 4),
    ("node.upgraded", 3),
    ("node.config.pushed", 6),
    ("node.heartbeat.missed", 5),
    ("export.csv", 4),
    ("export.ndjson", 2),
    ("export.scheduled", 3),
    ("export.failed", 1),
    ("admin.impersonation.started", 1),
    ("admin.impersonation.stopped", 1),
    ("admin.audit.viewed", 6),
    ("admin.tenant.created", 1),
    ("admin.tenant.suspended", 1),
    ("admin.billing.updated", 2),
    ("admin.support.accessed", 3),
];

/// The action prefixes, for `action=prefix.*` queries.
pub const ACTION_PREFIXES: [&str; 8] = [
    "auth", "config", "key", "user", "pcap", "node", "export", "admin",
];

const TARGET_KINDS: [&str; 8] = [
    "node", "user", "config", "key", "pcap", "rule", "tenant", "report",
];

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0",
    "evident-cli/0.1.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
];

const SYSTEM_ACTORS: [&str; 5] = [
    "system:pruner",
    "system:checkpointer",
    "system:scheduler",
    "system:forwarder",
    "system:health",
];

/// The actor id and kind of actor number `a` (0..ACTORS).
pub fn actor(a: u64) -> (String, &'static str) {
    match a {
        0..900 => (format!("user-{a:04}"), "user"),
        900..980 => (format!("svc-{:02}", a - 900), "service"),
        980..995 => (format!("key-{:02}", a - 980), "api_key"),
        _ => (
            SYSTEM_ACTORS[(a as usize - 995) % SYSTEM_ACTORS.len()].to_owned(),
            "system",
        ),
    }
}

/// Source address number `i` (0..ADDRESSES): three of four in 10.20-22.0.0/16, one in four in
/// 2001:db8::/32.
pub fn address(i: u64) -> String {
    let j = i / 4;
    match i % 4 {
        3 => format!("2001:db8:{:x}::{:x}", j % 16, j + 1),
        net => format!("10.{}.{}.{}", 20 + net, j / 200, j % 200 + 1),
    }
}

/// Target number `t` (0..TARGETS) as (kind, id).
pub fn target(t: u64) -> (&'static str, String) {
    let kind = TARGET_KINDS[(t % TARGET_KINDS.len() as u64) as usize];
    (kind, format!("{kind}-{t:04}"))
}

fn weighted<'a>(rng: &mut Rng, table: &[(&'a str, u64)]) -> &'a str {
    let total: u64 = table.iter().map(|(_, w)| w).sum();
    let mut pick = rng.below(total);
    for (name, w) in table {
        if pick < *w {
            return name;
        }
        pick -= w;
    }
    table.first().map_or("", |(n, _)| n)
}

/// Appends one event object to `out`. Every string written is from the tables above or
/// formatted digits, none needs JSON escaping.
pub fn write_event(rng: &mut Rng, now_ms: i64, out: &mut String) {
    let a = rng.below(ACTORS);
    let (actor_id, actor_kind) = actor(a);
    let action = weighted(rng, &ACTIONS);
    let tenant = weighted(rng, &TENANTS);
    let (target_kind, target_id) = target(rng.below(TARGETS));
    let failed = action.ends_with("failed") || action.ends_with("missed");
    let outcome = if failed {
        "failure"
    } else if rng.chance(50) {
        "denied"
    } else if rng.chance(40) {
        "failure"
    } else {
        "success"
    };
    let severity = if rng.chance(3) {
        "critical"
    } else if rng.chance(20) {
        "error"
    } else if failed || outcome == "denied" {
        "warning"
    } else if action.starts_with("key.") && action != "key.used"
        || action.starts_with("config.")
        || action.starts_with("admin.")
    {
        "notice"
    } else {
        "info"
    };
    let occurred = now_ms - rng.below(5000) as i64;
    let _ = write!(
        out,
        r#"{{"occurred_at":{occurred},"tenant":"{tenant}","actor":{{"id":"{actor_id}","kind":"{actor_kind}""#
    );
    if actor_kind != "system" {
        // Mostly the actor's own few addresses; now and then one from anywhere.
        let ip = if rng.chance(50) {
            rng.below(ADDRESSES)
        } else {
            (a * 4 + rng.below(4)) % ADDRESSES
        };
        let _ = write!(out, r#","ip":"{}""#, address(ip));
        let ua = match actor_kind {
            "user" => USER_AGENTS[(a % 3 + rng.below(2) * 3) as usize % USER_AGENTS.len()],
            "service" => "evident-sdk/1.4 (rust)",
            _ => "curl/8.5.0",
        };
        let _ = write!(out, r#","user_agent":"{ua}""#);
    }
    let _ = write!(
        out,
        r#"}},"action":"{action}","target":{{"kind":"{target_kind}","id":"{target_id}"}},"outcome":"{outcome}","severity":"{severity}","context":{{"request_id":"req-{:016x}""#,
        rng.next_u64()
    );
    if action.starts_with("config.") {
        let old = rng.below(1000);
        let _ = write!(out, r#","old":{old},"new":{}"#, old + rng.below(50) + 1);
    } else if action.starts_with("auth.") {
        let method = ["password", "sso", "mfa", "passkey"][rng.below(4) as usize];
        let _ = write!(out, r#","method":"{method}""#);
    } else if action.starts_with("pcap.") {
        let _ = write!(out, r#","bytes":{}"#, rng.below(50_000_000));
    }
    out.push_str("}}");
}

/// One event object, or a JSON array of `n` events when `n > 1`.
pub fn body(rng: &mut Rng, n: usize, now_ms: i64) -> String {
    let mut out = String::with_capacity(n * 420 + 2);
    if n == 1 {
        write_event(rng, now_ms, &mut out);
        return out;
    }
    out.push('[');
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        write_event(rng, now_ms, &mut out);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_every_required_field() {
        let mut rng = Rng::new(7);
        let text = body(&mut rng, 500, 1_760_000_000_000);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = value.as_array().unwrap();
        assert_eq!(events.len(), 500);
        for e in events {
            for field in ["actor", "action", "target", "outcome", "severity", "tenant"] {
                assert!(e.get(field).is_some(), "{field} missing in {e}");
            }
            let action = e["action"].as_str().unwrap();
            assert!(ACTIONS.iter().any(|(a, _)| *a == action));
        }
        let single: serde_json::Value = serde_json::from_str(&body(&mut rng, 1, 0)).unwrap();
        assert!(single.is_object());
    }

    #[test]
    fn the_tables_have_the_advertised_shape() {
        let prefixes: std::collections::BTreeSet<_> = ACTIONS
            .iter()
            .map(|(a, _)| a.split('.').next().unwrap())
            .collect();
        assert_eq!(prefixes.len(), ACTION_PREFIXES.len());
        assert!(ACTION_PREFIXES.iter().all(|p| prefixes.contains(p)));
        let addrs: std::collections::BTreeSet<_> = (0..ADDRESSES).map(address).collect();
        assert_eq!(addrs.len() as u64, ADDRESSES);
        assert!(addrs.iter().all(|a| a.parse::<std::net::IpAddr>().is_ok()));
    }
}
