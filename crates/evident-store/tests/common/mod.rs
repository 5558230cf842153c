//! Test helpers shared by the store's test binaries: a writer that seals entries the way the
//! sequencer does, varied event specs, and the query oracle every filter is checked against.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::event::{Context, EventInput, Millis};
use evident_core::merkle::NodeId;
use evident_core::{
    Actor, ActorKind, ChainHead, Hash, Outcome, SealKey, SealedEntry, Severity, Target,
};
use evident_store::{Filter, IpFilter, Order, Store};
use std::net::IpAddr;
use std::ops::ControlFlow;
use uuid::Uuid;

pub const BASE_TIME: Millis = 1_773_478_800_000;

pub fn seal_key() -> SealKey {
    SealKey::new(&[7u8; 32]).unwrap()
}

/// A log being written: the sequencer's side, to produce what the store is given.
pub struct Writer {
    pub head: ChainHead,
    pub key: SealKey,
    pub all: Vec<SealedEntry>,
}

#[derive(Clone)]
pub struct Spec {
    pub recorded_at: Millis,
    pub node: &'static str,
    pub tenant: &'static str,
    pub actor: &'static str,
    pub kind: ActorKind,
    pub ip: Option<&'static str>,
    pub user_agent: Option<&'static str>,
    pub action: String,
    pub target_kind: &'static str,
    pub target_id: &'static str,
    pub outcome: Outcome,
    pub severity: Severity,
    pub occurred_at: Option<Millis>,
    /// Who appended it; `None` writes an entry of encoding version 1, as older builds did.
    pub appended_by: Option<&'static str>,
}

impl Spec {
    pub fn simple(recorded_at: Millis) -> Spec {
        Spec {
            recorded_at,
            node: "node-a",
            tenant: "default",
            actor: "alice",
            kind: ActorKind::User,
            ip: Some("203.0.113.7"),
            user_agent: Some("curl/8"),
            action: "auth.login".to_owned(),
            target_kind: "node",
            target_id: "nyc-edge-01",
            outcome: Outcome::Success,
            severity: Severity::Info,
            occurred_at: None,
            appended_by: Some("evk_0123456789ab"),
        }
    }
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            head: ChainHead::genesis(),
            key: seal_key(),
            all: Vec::new(),
        }
    }

    /// Sequences `specs` as one batch: the entries and the Merkle nodes they completed.
    pub fn batch(&mut self, specs: &[Spec]) -> (Vec<SealedEntry>, Vec<(NodeId, Hash)>) {
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        for spec in specs {
            let seq = self.head.next_seq;
            let input = EventInput {
                occurred_at: spec.occurred_at,
                tenant: spec.tenant.to_owned(),
                actor: Actor {
                    id: spec.actor.to_owned(),
                    kind: spec.kind,
                    ip: spec.ip.map(|s| s.parse::<IpAddr>().unwrap()),
                    user_agent: spec.user_agent.map(str::to_owned),
                },
                action: spec.action.clone(),
                target: Target {
                    kind: spec.target_kind.to_owned(),
                    id: spec.target_id.to_owned(),
                },
                outcome: spec.outcome,
                severity: spec.severity,
                context: Context::from_value(&serde_json::json!({"n": seq, "note": "héllo"}))
                    .unwrap(),
            };
            let id = Uuid::from_u128(0xabc0_0000 + u128::from(seq));
            let entry = match spec.appended_by {
                Some(by) => self.head.append(
                    id,
                    spec.recorded_at,
                    spec.node,
                    by,
                    input,
                    &self.key,
                    &mut nodes,
                ),
                None => self.head.append_v1(
                    id,
                    spec.recorded_at,
                    spec.node,
                    input,
                    &self.key,
                    &mut nodes,
                ),
            };
            entries.push(entry);
        }
        (entries, nodes)
    }

    /// Sequences and stores `specs`.
    pub fn append(&mut self, store: &dyn Store, specs: &[Spec]) {
        let (entries, nodes) = self.batch(specs);
        store.append(&entries, &nodes).unwrap();
        self.all.extend(entries);
    }
}

pub fn scan_all(store: &dyn Store, filter: &Filter, order: Order) -> Vec<SealedEntry> {
    let mut out = Vec::new();
    store
        .scan(filter, order, None, None, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

pub fn seqs(entries: &[SealedEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.event.seq).collect()
}

// ---- filters against an oracle ----

pub const ACTORS: [(&str, ActorKind); 5] = [
    ("alice", ActorKind::User),
    ("bob", ActorKind::User),
    ("svc-backup", ActorKind::Service),
    ("evk_3f9a1c2b", ActorKind::ApiKey),
    ("evident", ActorKind::System),
];
pub const ACTIONS: [&str; 9] = [
    "auth.login",
    "auth.login.failed",
    "config",
    "config.threshold.changed",
    "config.key.rotated",
    "configs.export",
    "config_x",
    "pcap.download",
    "key.rotated",
];
pub const TARGETS: [(&str, &str); 6] = [
    ("node", "nyc-edge-01"),
    ("node", "lon-edge-02"),
    ("user", "alice"),
    ("key", "nyc-edge-01"),
    ("node", "a:b"),
    ("a", "b"),
];
pub const IPS: [Option<&str>; 10] = [
    None,
    Some("10.1.2.3"),
    Some("10.1.9.9"),
    Some("10.2.0.1"),
    Some("192.168.1.1"),
    Some("2001:db8::1"),
    Some("2001:db8:0:1::5"),
    Some("2001:db9::1"),
    Some("203.0.113.7"),
    Some("0.0.0.0"),
];

pub fn varied(i: u64) -> Spec {
    let (actor, kind) = ACTORS[(i % 5) as usize];
    let (target_kind, target_id) = TARGETS[(i * 5 % 6) as usize];
    Spec {
        // Pairs share a timestamp: time bounds must cut between equal times correctly.
        recorded_at: BASE_TIME + (i / 2) as i64 * 10,
        node: "node-a",
        tenant: if i % 3 == 0 { "acme" } else { "default" },
        actor,
        kind,
        ip: IPS[(i * 7 % 10) as usize],
        user_agent: if i % 4 == 0 {
            None
        } else {
            Some("Mozilla/5.0")
        },
        action: ACTIONS[(i * 4 % 9) as usize].to_owned(),
        target_kind,
        target_id,
        outcome: Outcome::ALL[(i % 3) as usize],
        severity: Severity::ALL[(i * 3 % 8) as usize],
        // Four in five say when they happened, at client times out of log order (and pairs
        // equal), so that an occurred_at span is no sequence range; the fifth says nothing.
        occurred_at: (i % 5 != 1).then_some(BASE_TIME - 5000 + ((i * 37) % 61) as i64 * 20),
        appended_by: [
            Some("evk_0123456789ab"),
            Some("system"),
            Some("evk_ffffffffffff"),
        ][(i % 3) as usize],
    }
}

pub fn in_block(ip: Option<IpAddr>, block: IpFilter) -> bool {
    // IPv4 lives at ::ffff:0:0/96 of the IPv6 space; a block of either family is a range there.
    let as_u128 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let bits = match block.addr {
        IpAddr::V4(_) => 96 + u32::from(block.prefix_len),
        IpAddr::V6(_) => u32::from(block.prefix_len),
    };
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    ip.is_some_and(|ip| as_u128(ip) & mask == as_u128(block.addr) & mask)
}

pub fn cidr(text: &str) -> IpFilter {
    let (addr, len) = text.split_once('/').unwrap();
    IpFilter {
        addr: addr.parse().unwrap(),
        prefix_len: len.parse().unwrap(),
    }
}

/// A filter and the predicate it must agree with.
pub type Case<'a> = (Filter, Box<dyn Fn(&SealedEntry) -> bool + 'a>);

/// Checks `filter` against `oracle` over `all`: full scans in both orders, page by page with
/// keyset cursors, and the count.
pub fn check(
    store: &dyn Store,
    all: &[SealedEntry],
    filter: &Filter,
    oracle: &dyn Fn(&SealedEntry) -> bool,
) -> usize {
    check_paged(store, all, filter, oracle, &[1, 7, 50])
}

pub fn check_paged(
    store: &dyn Store,
    all: &[SealedEntry],
    filter: &Filter,
    oracle: &dyn Fn(&SealedEntry) -> bool,
    pages: &[u64],
) -> usize {
    let expected: Vec<&SealedEntry> = all.iter().filter(|e| oracle(e)).collect();
    for order in [Order::Ascending, Order::Descending] {
        let mut want: Vec<SealedEntry> = expected.iter().map(|e| (*e).clone()).collect();
        if order == Order::Descending {
            want.reverse();
        }
        let got = scan_all(store, filter, order);
        assert_eq!(seqs(&got), seqs(&want), "{filter:?} {order:?}");
        assert_eq!(got, want, "{filter:?} {order:?}: entries differ");
        for &page in pages {
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let mut this = Vec::new();
                store
                    .scan(filter, order, after, Some(page), &mut |e| {
                        this.push(e.event.seq);
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert!(this.len() as u64 <= page);
                let Some(last) = this.last() else { break };
                after = Some(*last);
                paged.extend(this);
            }
            assert_eq!(paged, seqs(&want), "{filter:?} {order:?} pages of {page}");
        }
    }
    assert_eq!(
        store.count(filter).unwrap(),
        expected.len() as u64,
        "count {filter:?}"
    );
    expected.len()
}
