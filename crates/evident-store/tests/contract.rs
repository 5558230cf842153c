//! The storage contract, run against both backends: the embedded SQLite store and PostgreSQL
//! (a throwaway cluster shared by this test binary, one fresh database per test; see the
//! `evident-testpg` crate). Durable round trips, every query filter against an in-memory
//! oracle in both orders and across pages, refused appends that leave nothing behind,
//! snapshots, checkpoints and API keys. Backend-specific checks live in `sqlite.rs` and
//! `postgres.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use evident_core::merkle::{self, NodeId};
use evident_core::{ActorKind, ChainHead, Hash, Outcome, SealedEntry, Severity};
use evident_store::{
    ActionFilter, Buckets, ConsumerCursor, Filter, IpFilter, KeyRecord, Order, PostgresStore,
    PruneAnchor, SqliteStore, Store, StoreError, StoredCheckpoint,
};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty store of node `node-a` on one backend, which can be opened again.
struct Fixture {
    _dir: Option<tempfile::TempDir>,
    open: Box<dyn Fn() -> Arc<dyn Store>>,
    store: Arc<dyn Store>,
    /// Runs a DELETE of entry `seq` from a plain SQL client (not the store): its error text.
    raw_delete: Box<dyn Fn(u64) -> Result<u64, String>>,
}

impl Fixture {
    fn new(backend: Backend) -> Fixture {
        type Open = Box<dyn Fn() -> Arc<dyn Store>>;
        type RawDelete = Box<dyn Fn(u64) -> Result<u64, String>>;
        let (dir, open, raw_delete): (_, Open, RawDelete) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path: PathBuf = dir.path().join("evident.db");
                let raw = path.clone();
                (
                    Some(dir),
                    Box::new(move || Arc::new(SqliteStore::open(&path).unwrap())),
                    Box::new(move |seq| {
                        let conn = rusqlite::Connection::open(&raw).unwrap();
                        conn.execute("DELETE FROM events WHERE seq = ?1", [seq as i64])
                            .map(|n| n as u64)
                            .map_err(|e| e.to_string())
                    }),
                )
            }
            Backend::Postgres => {
                let url = evident_testpg::fresh_database_url().unwrap_or_else(|e| panic!("{e}"));
                let raw = url.clone();
                (
                    None,
                    Box::new(move || Arc::new(PostgresStore::open(&url, "node-a").unwrap())),
                    Box::new(move |seq| {
                        let mut client =
                            ::postgres::Client::connect(&raw, ::postgres::NoTls).unwrap();
                        client
                            .execute(
                                "DELETE FROM evident.events WHERE seq = $1",
                                &[&(seq as i64)],
                            )
                            .map_err(|e| {
                                e.as_db_error()
                                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                            })
                    }),
                )
            }
        };
        let store = open();
        Fixture {
            _dir: dir,
            open,
            store,
            raw_delete,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The same storage, opened again.
    fn reopen(&self) -> Arc<dyn Store> {
        (self.open)()
    }
}

/// Runs each listed contract test once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

contract!(
    append_and_load_head_round_trip_and_survive_reopen,
    empty_append_is_a_no_op_and_limits_and_break_stop_early,
    every_filter_returns_exactly_the_matching_entries_in_both_orders_and_pages,
    random_query_filters_select_what_the_core_matcher_keeps,
    appends_that_break_the_log_are_refused_and_leave_nothing,
    append_on_refuses_a_log_that_is_not_where_the_writer_left_it,
    a_non_canonical_ip_is_refused_not_rewritten,
    a_long_read_does_not_block_appends_and_sees_one_snapshot,
    checkpoints_are_kept_once_each_and_listed_in_order,
    api_keys_are_stored_found_revoked_expired_and_touched,
    consumer_cursors_are_kept_per_consumer_and_only_move_forward,
    witness_state_is_replaced_only_from_the_size_the_caller_read_and_survives_reopen,
    pruning_deletes_a_prefix_in_batches_below_a_persisted_anchor_and_keeps_the_tree,
    every_tree_node_reads_as_computed_before_and_after_pruning_at_unaligned_points,
    entries_of_both_encoding_versions_read_back_as_written_and_verify,
    histograms_count_exactly_what_each_bucket_holds_whatever_the_state_of_the_counts,
);

fn append_and_load_head_round_trip_and_survive_reopen(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    assert_eq!(store.load_head().unwrap(), ChainHead::genesis());
    assert!(scan_all(&*store, &Filter::default(), Order::Ascending).is_empty());

    let mut w = Writer::new();
    for batch in 0..5 {
        let specs: Vec<Spec> = (0..(batch * 3 + 1))
            .map(|i| {
                let mut s = Spec::simple(BASE_TIME + batch * 100 + i);
                if i % 2 == 0 {
                    s.ip = Some("2001:db8::7");
                    s.user_agent = None;
                    s.occurred_at = Some(BASE_TIME - 5);
                }
                s
            })
            .collect();
        w.append(&*store, &specs);
        assert_eq!(store.load_head().unwrap(), w.head, "after batch {batch}");
    }
    assert_eq!(w.head.next_seq, 35);
    assert_eq!(
        scan_all(&*store, &Filter::default(), Order::Ascending),
        w.all
    );
    assert_eq!(store.count(&Filter::default()).unwrap(), 35);
    // The stored nodes rebuild the same tree.
    let ids = merkle::subtree_ids(0, 35);
    assert_eq!(store.read_nodes(&ids).unwrap(), w.head.tree.hashes());
    let leaf = store
        .read_nodes(&[NodeId {
            level: 0,
            index: 17,
        }])
        .unwrap();
    assert_eq!(leaf, vec![w.all[17].leaf_hash()]);
    match store.read_nodes(&[NodeId {
        level: 0,
        index: 35,
    }]) {
        Err(StoreError::NotFound(m)) => assert!(m.contains("level 0, index 35"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let store = fx.reopen();
    assert_eq!(store.load_head().unwrap(), w.head);
    assert_eq!(
        scan_all(&*store, &Filter::default(), Order::Ascending),
        w.all
    );
    // And it keeps appending where it left off.
    w.append(&*store, &[Spec::simple(BASE_TIME + 10_000)]);
    assert_eq!(store.load_head().unwrap(), w.head);
    let mut reversed = w.all.clone();
    reversed.reverse();
    assert_eq!(
        scan_all(&*store, &Filter::default(), Order::Descending),
        reversed
    );
}

/// A log written before entry encoding version 2 (no `appended_by`) and extended after it:
/// each entry reads back in its own version, with who appended it, and the whole log verifies
/// with the seal key and the checkpoint of its tree, before and after a reopen.
fn entries_of_both_encoding_versions_read_back_as_written_and_verify(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let old: Vec<Spec> = (0..5)
        .map(|i| Spec {
            appended_by: None,
            ..varied(i)
        })
        .collect();
    w.append(&*store, &old);
    let new: Vec<Spec> = (5..12).map(varied).collect();
    w.append(&*store, &new);
    for store in [store, fx.reopen()] {
        let read = scan_all(&*store, &Filter::default(), Order::Ascending);
        assert_eq!(read, w.all);
        let versions: Vec<u8> = read.iter().map(|e| e.event.entry_version()).collect();
        assert_eq!(versions, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(
            read[5].event.appended_by.as_deref(),
            Some("evk_ffffffffffff")
        );
        assert_eq!(
            read[6].event.appended_by.as_deref(),
            Some("evk_0123456789ab")
        );
        assert_eq!(read[7].event.appended_by.as_deref(), Some("system"));
        let mut v = evident_core::verify::StreamVerifier::new(
            evident_core::verify::Anchor::genesis(),
            Some(seal_key()),
            Some("node-a".to_owned()),
        );
        for e in &read {
            v.push(e).unwrap();
        }
        assert_eq!(v.finish().unwrap().root, w.head.tree.root());
        assert_eq!(store.load_head().unwrap(), w.head);
    }
}

fn empty_append_is_a_no_op_and_limits_and_break_stop_early(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    store.append(&[], &[]).unwrap();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..10).map(|i| Spec::simple(BASE_TIME + i)).collect();
    w.append(&*store, &specs);
    let mut got = Vec::new();
    store
        .scan(
            &Filter::default(),
            Order::Ascending,
            None,
            Some(3),
            &mut |e| {
                got.push(e.event.seq);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(got, [0, 1, 2]);
    got.clear();
    store
        .scan(
            &Filter::default(),
            Order::Descending,
            Some(5),
            None,
            &mut |e| {
                got.push(e.event.seq);
                if got.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
    assert_eq!(got, [4, 3]);
    got.clear();
    store
        .scan(
            &Filter::default(),
            Order::Ascending,
            None,
            Some(0),
            &mut |e| {
                got.push(e.event.seq);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert!(got.is_empty());
}

fn every_filter_returns_exactly_the_matching_entries_in_both_orders_and_pages(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..240).map(varied).collect();
    for chunk in specs.chunks(40) {
        w.append(&*store, chunk);
    }
    let all = w.all.clone();
    let time = |i: usize| all[i].event.recorded_at;
    let f = Filter::default;

    let mut cases: Vec<Case<'_>> = vec![
        (f(), Box::new(|_| true)),
        (
            Filter {
                actor: Some("bob".into()),
                ..f()
            },
            Box::new(|e| e.event.actor.id == "bob"),
        ),
        (
            Filter {
                actor_kind: Some(ActorKind::System),
                ..f()
            },
            Box::new(|e| e.event.actor.kind == ActorKind::System),
        ),
        (
            Filter {
                action: Some(ActionFilter::Exact("config".into())),
                ..f()
            },
            Box::new(|e| e.event.action == "config"),
        ),
        (
            // `config` and `config.…`, not `configs.export` nor `config_x`.
            Filter {
                action: Some(ActionFilter::Prefix("config".into())),
                ..f()
            },
            Box::new(|e| e.event.action == "config" || e.event.action.starts_with("config.")),
        ),
        (
            Filter {
                action: Some(ActionFilter::Prefix("auth.login".into())),
                ..f()
            },
            Box::new(|e| e.event.action.starts_with("auth.login")),
        ),
        (
            Filter {
                action: Some(ActionFilter::Prefix("pcap".into())),
                ..f()
            },
            Box::new(|e| e.event.action == "pcap.download"),
        ),
        (
            Filter {
                target: Some("node:nyc-edge-01".into()),
                ..f()
            },
            Box::new(|e| e.event.target.kind == "node" && e.event.target.id == "nyc-edge-01"),
        ),
        (
            // A bare id matches any kind.
            Filter {
                target: Some("nyc-edge-01".into()),
                ..f()
            },
            Box::new(|e| e.event.target.id == "nyc-edge-01"),
        ),
        (
            // Split at the first colon: kind `node`, id `a:b`.
            Filter {
                target: Some("node:a:b".into()),
                ..f()
            },
            Box::new(|e| e.event.target.kind == "node" && e.event.target.id == "a:b"),
        ),
        (
            Filter {
                target: Some("a:b".into()),
                ..f()
            },
            Box::new(|e| e.event.target.kind == "a" && e.event.target.id == "b"),
        ),
        (
            Filter {
                tenant: Some("acme".into()),
                ..f()
            },
            Box::new(|e| e.event.tenant == "acme"),
        ),
        (
            // One node's log: its node matches everything.
            Filter {
                node: Some("node-a".into()),
                ..f()
            },
            Box::new(|_| true),
        ),
        (
            Filter {
                node: Some("node-a".into()),
                severity: Some(Severity::Error),
                ..f()
            },
            Box::new(|e| e.event.severity >= Severity::Error),
        ),
        (
            Filter {
                outcome: Some(Outcome::Denied),
                ..f()
            },
            Box::new(|e| e.event.outcome == Outcome::Denied),
        ),
        (
            Filter {
                from: Some(time(100)),
                to: Some(time(201)),
                ..f()
            },
            Box::new(move |e| e.event.recorded_at >= time(100) && e.event.recorded_at < time(201)),
        ),
        (
            // Bounds between stored times.
            Filter {
                from: Some(time(30) + 3),
                to: Some(time(61) - 3),
                ..f()
            },
            Box::new(move |e| e.event.recorded_at > time(30) && e.event.recorded_at < time(61)),
        ),
        (
            Filter {
                from: Some(time(239)),
                ..f()
            },
            Box::new(move |e| e.event.recorded_at >= time(239)),
        ),
        (
            Filter {
                to: Some(time(2)),
                ..f()
            },
            Box::new(move |e| e.event.recorded_at < time(2)),
        ),
        (
            Filter {
                from_seq: Some(17),
                to_seq: Some(150),
                ..f()
            },
            Box::new(|e| (17..150).contains(&e.event.seq)),
        ),
        (
            Filter {
                tenant: Some("default".into()),
                actor: Some("alice".into()),
                severity: Some(Severity::Notice),
                from: Some(time(20)),
                to: Some(time(220)),
                ..f()
            },
            Box::new(move |e| {
                e.event.tenant == "default"
                    && e.event.actor.id == "alice"
                    && e.event.severity >= Severity::Notice
                    && (time(20)..time(220)).contains(&e.event.recorded_at)
            }),
        ),
        (
            Filter {
                action: Some(ActionFilter::Prefix("config".into())),
                outcome: Some(Outcome::Failure),
                ip: Some(cidr("10.0.0.0/8")),
                from_seq: Some(10),
                ..f()
            },
            Box::new(|e| {
                (e.event.action == "config" || e.event.action.starts_with("config."))
                    && e.event.outcome == Outcome::Failure
                    && in_block(e.event.actor.ip, cidr("10.0.0.0/8"))
                    && e.event.seq >= 10
            }),
        ),
        (
            Filter {
                target: Some("nyc-edge-01".into()),
                actor_kind: Some(ActorKind::User),
                tenant: Some("acme".into()),
                ..f()
            },
            Box::new(|e| {
                e.event.target.id == "nyc-edge-01"
                    && e.event.actor.kind == ActorKind::User
                    && e.event.tenant == "acme"
            }),
        ),
    ];
    for severity in Severity::ALL {
        cases.push((
            Filter {
                severity: Some(severity),
                ..f()
            },
            Box::new(move |e| e.event.severity >= severity),
        ));
    }
    for block in [
        "10.1.2.3/32",
        "10.1.0.0/16",
        "10.1.2.3/16",
        "10.0.0.0/8",
        "192.168.0.0/16",
        "0.0.0.0/0",
        "0.0.0.0/32",
        "2001:db8::1/128",
        "2001:db8::/64",
        "2001:db8::/32",
        "2001:db8::/31",
        "::/0",
        // IPv4 as it sits in the IPv6 space.
        "::ffff:0:0/96",
    ] {
        cases.push((
            Filter {
                ip: Some(cidr(block)),
                ..f()
            },
            Box::new(move |e| in_block(e.event.actor.ip, cidr(block))),
        ));
    }
    // When the clients say the events happened: a span, either bound alone, bounds on equal
    // times, and a span with another filter driving. Entries without occurred_at never match.
    let occurred = |e: &SealedEntry, from: Option<i64>, to: Option<i64>| {
        e.event
            .occurred_at
            .is_some_and(|at| from.is_none_or(|from| at >= from) && to.is_none_or(|to| at < to))
    };
    let (lo, hi) = (BASE_TIME - 4000, BASE_TIME - 3000);
    for (from, to) in [
        (Some(lo), Some(hi)),
        (Some(lo), None),
        (None, Some(hi)),
        (Some(BASE_TIME - 5000), Some(BASE_TIME - 4980)),
    ] {
        cases.push((
            Filter {
                occurred_from: from,
                occurred_to: to,
                ..f()
            },
            Box::new(move |e| occurred(e, from, to)),
        ));
    }
    cases.push((
        Filter {
            occurred_from: Some(lo),
            occurred_to: Some(hi),
            actor: Some("svc-backup".into()),
            from: Some(time(40)),
            ..f()
        },
        Box::new(move |e| {
            occurred(e, Some(lo), Some(hi))
                && e.event.actor.id == "svc-backup"
                && e.event.recorded_at >= time(40)
        }),
    ));
    for (filter, oracle) in &cases {
        let n = check(&*store, &all, filter, oracle.as_ref());
        assert!(
            n > 0,
            "{filter:?}: the data set should have matches for this case"
        );
    }

    // Filters that match nothing, each in a different way.
    let empty: Vec<Filter> = vec![
        Filter {
            actor: Some("mallory".into()),
            ..f()
        },
        Filter {
            node: Some("node-z".into()),
            ..f()
        },
        Filter {
            node: Some("node-".into()),
            ..f()
        },
        Filter {
            actor: Some("alice".into()),
            node: Some("node-z".into()),
            ..f()
        },
        Filter {
            action: Some(ActionFilter::Prefix("conf".into())),
            ..f()
        },
        Filter {
            action: Some(ActionFilter::Exact("auth".into())),
            ..f()
        },
        Filter {
            target: Some("user:nyc-edge-01".into()),
            ..f()
        },
        Filter {
            ip: Some(cidr("172.16.0.0/12")),
            ..f()
        },
        Filter {
            ip: Some(cidr("2001:db8::2/128")),
            ..f()
        },
        Filter {
            from: Some(time(239) + 1),
            ..f()
        },
        Filter {
            to: Some(time(0)),
            ..f()
        },
        Filter {
            from: Some(time(100)),
            to: Some(time(100)),
            ..f()
        },
        Filter {
            from_seq: Some(240),
            ..f()
        },
        // Past every stated time, before every one, and an empty span.
        Filter {
            occurred_from: Some(BASE_TIME),
            ..f()
        },
        Filter {
            occurred_to: Some(BASE_TIME - 5000),
            ..f()
        },
        Filter {
            occurred_from: Some(lo),
            occurred_to: Some(lo),
            ..f()
        },
        // Bob's events state no occurred_at: no occurred_at bound keeps them, however wide.
        Filter {
            actor: Some("bob".into()),
            occurred_from: Some(0),
            ..f()
        },
        Filter {
            from_seq: Some(50),
            to_seq: Some(50),
            ..f()
        },
        Filter {
            from_seq: Some(u64::MAX),
            ..f()
        },
    ];
    for filter in &empty {
        check(&*store, &all, filter, &|_| false);
        let mut n = 0;
        store
            .scan(filter, Order::Descending, Some(u64::MAX), None, &mut |_| {
                n += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(n, 0, "{filter:?}");
    }

    // An IP filter with a prefix longer than its family allows is refused, not guessed at.
    let bad = Filter {
        ip: Some(IpFilter {
            addr: "10.0.0.1".parse().unwrap(),
            prefix_len: 33,
        }),
        ..f()
    };
    assert!(matches!(
        store.scan(&bad, Order::Ascending, None, None, &mut |_| {
            ControlFlow::Continue(())
        }),
        Err(StoreError::Backend(_))
    ));
}

/// A small deterministic generator (xorshift64*), so that each run checks the same random
/// filters and a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Query parameters as a client would send them, each present with probability 1/3, values
/// drawn from what the log holds and a few that match nothing or match at a boundary.
/// `times` holds the recorded and the occurred times of the log's entries.
fn random_params(rng: &mut Rng, times: &[i64]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let time = |rng: &mut Rng| {
        let t = times[rng.below(times.len())] + [-1, 0, 1][rng.below(3)];
        if rng.below(2) == 0 {
            t.to_string()
        } else {
            evident_core::event::format_rfc3339_millis(t)
        }
    };
    let mut maybe =
        |rng: &mut Rng, name: &'static str, value: &mut dyn FnMut(&mut Rng) -> String| {
            if rng.below(3) == 0 {
                let v = value(rng);
                out.push((name, v));
            }
        };
    maybe(rng, "from", &mut |r| time(r));
    maybe(rng, "to", &mut |r| time(r));
    maybe(rng, "occurred_from", &mut |r| time(r));
    maybe(rng, "occurred_to", &mut |r| time(r));
    maybe(rng, "actor", &mut |r| {
        r.pick(&[
            "alice",
            "bob",
            "svc-backup",
            "evk_3f9a1c2b",
            "evident",
            "nobody",
        ])
        .to_owned()
    });
    maybe(rng, "actor_kind", &mut |r| {
        r.pick(&["user", "service", "api_key", "system"]).to_owned()
    });
    maybe(rng, "action", &mut |r| {
        let a = r.pick(&ACTIONS);
        match r.below(3) {
            0 => format!("{a}.*"),
            1 => format!("{}.*", a.split('.').next().unwrap_or(a)),
            _ => a.to_owned(),
        }
    });
    maybe(rng, "target", &mut |r| {
        let (kind, id) = TARGETS[r.below(TARGETS.len())];
        match r.below(3) {
            0 => id.to_owned(),
            1 => format!("{kind}:{id}"),
            _ => format!("{}:{id}", r.pick(&["node", "user", "key", "a"])),
        }
    });
    maybe(rng, "ip", &mut |r| {
        let base = match IPS[r.below(IPS.len())] {
            Some(ip) => ip,
            None => r.pick(&["::", "::ffff:0:0", "0.0.0.0"]),
        };
        let max = if base.contains(':') { 128 } else { 32 };
        match r.below(3) {
            0 => base.to_owned(),
            _ => format!("{base}/{}", r.below(max + 1)),
        }
    });
    maybe(rng, "tenant", &mut |r| {
        r.pick(&["acme", "default", "other"]).to_owned()
    });
    maybe(rng, "node", &mut |r| {
        r.pick(&["node-a", "node-b"]).to_owned()
    });
    maybe(rng, "severity", &mut |r| {
        r.pick(&[
            "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
        ])
        .to_owned()
    });
    maybe(rng, "outcome", &mut |r| {
        r.pick(&["success", "failure", "denied"]).to_owned()
    });
    out
}

/// The store runs filters in SQL, the export verifier with the core's matcher: on random
/// filters, parsed from query parameters by the core as the server parses them, both keep
/// exactly the same entries.
fn random_query_filters_select_what_the_core_matcher_keeps(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..240).map(varied).collect();
    for chunk in specs.chunks(60) {
        w.append(&*store, chunk);
    }
    let all = w.all.clone();
    let times: Vec<i64> = all
        .iter()
        .flat_map(|e| [Some(e.event.recorded_at), e.event.occurred_at])
        .flatten()
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut nonempty = 0;
    for case in 0..300 {
        let params = random_params(&mut rng, &times);
        let parsed = evident_core::filter::EventFilter::from_params(|name| {
            params
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        });
        let Ok(core) = parsed else {
            continue; // `to` before `from`: refused before any store sees it.
        };
        let filter: Filter = core.clone().into();
        let expected = all.iter().filter(|e| core.matches(&e.event)).count();
        let got = check_paged(&*store, &all, &filter, &|e| core.matches(&e.event), &[97]);
        assert_eq!(got, expected, "case {case}: {params:?}");
        nonempty += usize::from(expected > 0 && expected < all.len());
    }
    // The generator is worth something only if it hits real selections.
    assert!(
        nonempty > 50,
        "only {nonempty} filters selected a proper subset"
    );
}

// ---- histograms ----

/// Histograms are exact: on random filters and random grids (round widths, which the embedded
/// store answers from its counts, and odd ones, which it cannot), over a log whose times
/// spread over milliseconds to days (so that grids cut inside seconds, minutes and days), every
/// bucket holds per severity exactly the matching entries of its time range, whether the
/// counts took in nothing yet, part of the log or all of it, and after a prune.
fn histograms_count_exactly_what_each_bucket_holds_whatever_the_state_of_the_counts(
    backend: Backend,
) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let mut rng = Rng(0x0b5e_55ed_c0de_2026);
    let steps = [
        0, 0, 1, 7, 400, 999, 1_000, 1_001, 59_000, 61_000, 3_600_000, 86_400_000,
    ];
    let mut t = BASE_TIME - 3_600_123;
    let mut specs: Vec<Spec> = (0..400)
        .map(|i| {
            t += steps[rng.below(steps.len())];
            Spec {
                recorded_at: t,
                ..varied(i)
            }
        })
        .collect();
    // The last entry records the prune below (the pruner appends it before anchoring).
    specs[399].action = "retention.pruned".to_owned();
    for chunk in specs.chunks(50) {
        w.append(&*store, chunk);
    }
    let last_time = specs[399].recorded_at;
    let widths = [
        1, 7, 250, 1_000, 5_000, 60_000, 900_000, 3_600_000, 7_200_000, 86_400_000,
    ];
    let check_cases = |store: &dyn Store, kept: &[SealedEntry], rng: &mut Rng, stage: &str| {
        let times: Vec<i64> = kept
            .iter()
            .flat_map(|e| [Some(e.event.recorded_at), e.event.occurred_at])
            .flatten()
            .collect();
        let first_time = kept[0].event.recorded_at;
        let (mut nonzero, mut counted) = (0, 0);
        for case in 0..300 {
            let mut params = random_params(rng, &times);
            // Two in three keep only what the embedded store's counts know: its keys, or an
            // address block alone.
            let known: &[&str] = match rng.below(3) {
                0 => &[
                    "from", "to", "tenant", "node", "action", "severity", "outcome",
                ],
                1 => &["from", "to", "node", "ip"],
                _ => &[],
            };
            if !known.is_empty() {
                params.retain(|(name, _)| known.contains(name));
                counted += 1;
            }
            let Ok(core) = evident_core::filter::EventFilter::from_params(|name| {
                params
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            }) else {
                continue;
            };
            let filter: Filter = core.clone().into();
            // A grid from around the first entry to around the last, or a random slice.
            let (from, to) = match rng.below(3) {
                0 => (first_time - 1, last_time + 1),
                _ => {
                    let a = times[rng.below(times.len())] + [-1_500, 0, 1][rng.below(3)];
                    let b = times[rng.below(times.len())] + [-1, 0, 2_500][rng.below(3)];
                    (a.min(b), a.max(b) + 1)
                }
            };
            // A width of the list, else (a millisecond grid over days is not what a chart
            // asks) the round one a chart of 200 buckets would have.
            let width = widths[rng.below(widths.len())];
            let Some(grid) = Buckets::with_width(from, to, width)
                .filter(|g| g.len() <= 5_000)
                .or_else(|| Buckets::covering(from, to, 200))
            else {
                continue;
            };
            let mut want = vec![[0u64; 8]; grid.len()];
            for e in kept.iter().filter(|e| core.matches(&e.event)) {
                let rank = Severity::ALL
                    .iter()
                    .position(|s| *s == e.event.severity)
                    .unwrap() as i64;
                grid.add(&mut want, e.event.recorded_at, rank, 1);
            }
            let got = store.histogram(&filter, &grid).unwrap();
            assert_eq!(
                got, want,
                "{stage}, case {case}: {params:?} over {from}..{to} by {width}"
            );
            nonzero += usize::from(want.iter().flatten().any(|n| *n > 0));
        }
        assert!(
            nonzero > 40 && counted > 150,
            "{stage}: only {nonzero} histograms counted anything, {counted} of known filters"
        );
    };
    let all = w.all.clone();
    check_cases(&*store, &all, &mut rng, "no counts taken in");
    let taken = store.advance_counts(137).unwrap();
    let expected_taken = match backend {
        Backend::Sqlite => 137,
        Backend::Postgres => 0, // it keeps no counts: one grouped query answers
    };
    assert_eq!(taken, expected_taken);
    check_cases(&*store, &all, &mut rng, "part of the log counted");
    // A prune of a prefix reaching past what the counts hold (entries 137..200 go before they
    // are counted), then of one within them.
    let size = all.len() as u64;
    store
        .put_checkpoint(&StoredCheckpoint {
            size,
            root: w.head.tree.root(),
            signed_note: format!("example.org/log\n{size}\nroot\n"),
            created_at: BASE_TIME,
        })
        .unwrap();
    let below = 250;
    let last_pruned = &all[below - 1];
    store
        .begin_prune(&PruneAnchor {
            from_seq: 0,
            below_seq: below as u64,
            hash: last_pruned.hash,
            seal: last_pruned.seal,
            recorded_at: last_pruned.event.recorded_at,
            checkpoint_size: size,
            checkpoint_note: format!("example.org/log\n{size}\nroot\n"),
            started_at: last_time,
            event_seq: size - 1,
        })
        .unwrap();
    assert_eq!(store.prune_batch(200).unwrap(), 200);
    check_cases(&*store, &all[200..], &mut rng, "pruned past the counts");
    while store.advance_counts(100).unwrap() > 0 {}
    check_cases(&*store, &all[200..], &mut rng, "all counted");
    while store.prune_batch(20).unwrap() > 0 {}
    check_cases(&*store, &all[below..], &mut rng, "pruned within the counts");
}

// ---- refused appends ----

fn appends_that_break_the_log_are_refused_and_leave_nothing(backend: Backend) {
    let fx = Fixture::new(backend);
    let (store, mut w) = small_log(&fx);
    let before = store.load_head().unwrap();
    let refused =
        |store: &dyn Store, entries: &[SealedEntry], nodes: &[(NodeId, Hash)], why: &str| {
            match store.append(entries, nodes) {
                Err(StoreError::Backend(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("expected a refusal ({why}), got {other:?}"),
            }
        };

    // A gap: the batch starts past the next seq.
    let mut ahead = Writer {
        head: w.head.clone(),
        key: seal_key(),
        all: Vec::new(),
    };
    ahead.batch(&[Spec::simple(BASE_TIME + 10_000)]);
    let (gap, gap_nodes) = ahead.batch(&[Spec::simple(BASE_TIME + 10_000)]);
    refused(&*store, &gap, &gap_nodes, "entry 13 where entry 12 is next");

    // A replay of stored entries.
    refused(
        &*store,
        &w.all[11..],
        &[],
        "entry 11 where entry 12 is next",
    );

    // A batch that goes wrong in its middle: the good entries before it are not kept either.
    let mut fork = Writer {
        head: w.head.clone(),
        key: seal_key(),
        all: Vec::new(),
    };
    let (mut entries, nodes) = fork.batch(
        &(0..6)
            .map(|i| Spec::simple(BASE_TIME + 10_000 + i))
            .collect::<Vec<_>>(),
    );
    entries.remove(3);
    refused(&*store, &entries, &nodes, "entry 16 where entry 15 is next");

    // Another node's entry.
    let mut other = Writer {
        head: w.head.clone(),
        key: seal_key(),
        all: Vec::new(),
    };
    let mut spec = Spec::simple(BASE_TIME + 10_000);
    spec.node = "node-b";
    let (entries, nodes) = other.batch(&[Spec::simple(BASE_TIME + 10_000), spec]);
    refused(&*store, &entries, &nodes, "a log holds one node's entries");

    // Time going backwards.
    let mut back = Writer {
        head: w.head.clone(),
        key: seal_key(),
        all: Vec::new(),
    };
    let (entries, nodes) = back.batch(&[Spec::simple(BASE_TIME - 1)]);
    refused(
        &*store,
        &entries,
        &nodes,
        "recording time must not go backwards",
    );

    // A Merkle node written twice (after the entries were inserted in the same transaction).
    let mut dup = Writer {
        head: w.head.clone(),
        key: seal_key(),
        all: Vec::new(),
    };
    let (entries, mut nodes) = dup.batch(&[Spec::simple(BASE_TIME + 20_000)]);
    // (Only upper nodes are stored, so the duplicate is one of those, twice in the batch.)
    let upper = NodeId { level: 8, index: 0 };
    nodes.extend([(upper, Hash::ZERO), (upper, Hash::ZERO)]);
    refused(&*store, &entries, &nodes, "level 8, index 0");

    // Nothing of any of that was stored, and the store still appends.
    assert_eq!(store.load_head().unwrap(), before);
    assert_eq!(store.count(&Filter::default()).unwrap(), 12);
    assert!(matches!(
        store.read_nodes(&[NodeId {
            level: 0,
            index: 12
        }]),
        Err(StoreError::NotFound(_))
    ));
    w.append(
        &*store,
        &[
            Spec::simple(BASE_TIME + 30_000),
            Spec::simple(BASE_TIME + 30_000),
        ],
    );
    assert_eq!(store.load_head().unwrap(), w.head);
    assert_eq!(
        scan_all(&*store, &Filter::default(), Order::Ascending),
        w.all
    );
}

/// `append_on` stores a batch only where the writer left the log: a changed head hash, a tail
/// shorter or longer than the writer's are refused as corrupt, naming the entry, and store
/// nothing.
fn append_on_refuses_a_log_that_is_not_where_the_writer_left_it(backend: Backend) {
    let fx = Fixture::new(backend);
    let (store, mut w) = small_log(&fx);
    let prev = w.head.last_hash;
    let older = w.head.clone();
    let (entries, nodes) = w.batch(&[Spec::simple(BASE_TIME + 10_000)]);
    let corrupt = |result: Result<(), StoreError>, want_seq: u64, why: &str| match result {
        Err(StoreError::Corrupt { seq, problem }) => {
            assert_eq!(seq, Some(want_seq), "{problem}");
            assert!(problem.contains(why), "{problem}");
        }
        other => panic!("expected corrupt ({why}), got {other:?}"),
    };
    // The newest stored row is not the one the writer built on.
    corrupt(
        store.append_on(&Hash([7; 32]), &entries, &nodes),
        11,
        "the head row was changed",
    );
    assert_eq!(store.count(&Filter::default()).unwrap(), 12);
    store.append_on(&prev, &entries, &nodes).unwrap();
    assert_eq!(store.count(&Filter::default()).unwrap(), 13);

    // Sealed on the older head: the store holds an entry the writer does not know of.
    let mut stale = Writer {
        head: older,
        key: seal_key(),
        all: Vec::new(),
    };
    let (entries, nodes) = stale.batch(&[Spec::simple(BASE_TIME + 10_000)]);
    corrupt(
        store.append_on(&prev, &entries, &nodes),
        12,
        "added behind the writer's back",
    );
    // Sealed past the stored end: entries the writer wrote are gone.
    let last = w.head.last_hash;
    w.batch(&[Spec::simple(BASE_TIME + 10_001)]);
    let (entries, nodes) = w.batch(&[Spec::simple(BASE_TIME + 10_002)]);
    corrupt(
        store.append_on(&last, &entries, &nodes),
        13,
        "removed at its tail",
    );
    assert_eq!(store.count(&Filter::default()).unwrap(), 13);
    assert_eq!(store.load_head().unwrap().next_seq, 13);
}

fn a_non_canonical_ip_is_refused_not_rewritten(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let (mut entries, nodes) = w.batch(&[Spec::simple(BASE_TIME)]);
    // Bypasses validation (which would have made it IPv4): the store must not change it.
    entries[0].event.actor.ip = Some("::ffff:203.0.113.7".parse().unwrap());
    assert!(matches!(
        store.append(&entries, &nodes),
        Err(StoreError::Backend(_))
    ));
    assert_eq!(store.count(&Filter::default()).unwrap(), 0);
}

// ---- concurrency ----

fn a_long_read_does_not_block_appends_and_sees_one_snapshot(backend: Backend) {
    let fx = Fixture::new(backend);
    let (store, mut w) = small_log(&fx);
    let store = Arc::clone(&store);
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            store
                .scan(&Filter::default(), Order::Ascending, None, None, &mut |e| {
                    if seen.is_empty() {
                        started_tx.send(()).unwrap();
                        // Hold the read open until the writer has committed (bounded wait).
                        let _ = go_rx.recv_timeout(Duration::from_secs(20));
                    }
                    seen.push(e.event.seq);
                    ControlFlow::Continue(())
                })
                .unwrap();
            seen
        })
    };
    started_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    // The append commits while the read is still open (it would hang here otherwise).
    w.append(&*store, &[Spec::simple(BASE_TIME + 50_000)]);
    assert_eq!(store.count(&Filter::default()).unwrap(), 13);
    go_tx.send(()).unwrap();
    let seen = reader.join().unwrap();
    // The read began before the append: it sees the log as it was, whole.
    assert_eq!(seen, (0..12).collect::<Vec<u64>>());
}

// ---- checkpoints and keys ----

fn checkpoints_are_kept_once_each_and_listed_in_order(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    assert!(store.checkpoints().unwrap().is_empty());
    let cp = |size: u64, root: u8| StoredCheckpoint {
        size,
        root: Hash([root; 32]),
        signed_note: format!("example.org/log\n{size}\n\n— sig {root}\n"),
        created_at: BASE_TIME + size as i64,
    };
    store.put_checkpoint(&cp(10, 1)).unwrap();
    store.put_checkpoint(&cp(30, 3)).unwrap();
    store.put_checkpoint(&cp(20, 2)).unwrap();
    assert_eq!(store.latest_checkpoint().unwrap(), Some(cp(30, 3)));
    assert_eq!(store.checkpoint_at(20).unwrap(), Some(cp(20, 2)));
    assert_eq!(store.checkpoint_at(21).unwrap(), None);
    assert_eq!(store.checkpoint_at(u64::MAX).unwrap(), None);
    assert_eq!(
        store.checkpoints().unwrap(),
        vec![cp(10, 1), cp(20, 2), cp(30, 3)]
    );
    // The same tree signed again: accepted, the first note stays.
    let mut again = cp(20, 2);
    again.signed_note.push_str("cosig\n");
    store.put_checkpoint(&again).unwrap();
    assert_eq!(store.checkpoint_at(20).unwrap(), Some(cp(20, 2)));
    // Another root for a size already signed: two histories, refused.
    assert!(matches!(
        store.put_checkpoint(&cp(20, 9)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.checkpoints().unwrap().len(), 3);
}

fn api_keys_are_stored_found_revoked_expired_and_touched(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let key = |id: &str, secret: u8| KeyRecord {
        id: id.to_owned(),
        secret_hash: Hash([secret; 32]),
        role: "admin".to_owned(),
        tenant: Some("acme".to_owned()),
        label: Some("ci".to_owned()),
        created_at: BASE_TIME,
        revoked_at: None,
        expires_at: None,
        last_used_at: None,
        last_used_ip: None,
    };
    store.put_key(&key("evk_00000001", 1)).unwrap();
    let mut second = key("evk_00000002", 2);
    second.tenant = None;
    second.label = None;
    second.created_at = BASE_TIME + 1;
    store.put_key(&second).unwrap();
    assert_eq!(
        store.key_by_hash(&Hash([1; 32])).unwrap(),
        Some(key("evk_00000001", 1))
    );
    assert_eq!(store.key_by_hash(&Hash([3; 32])).unwrap(), None);
    assert_eq!(
        store.keys().unwrap(),
        vec![key("evk_00000001", 1), second.clone()]
    );
    // Neither the id nor the secret may be reused.
    assert!(matches!(
        store.put_key(&key("evk_00000001", 5)),
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.put_key(&key("evk_00000009", 2)),
        Err(StoreError::Backend(_))
    ));

    store.revoke_key("evk_00000001", BASE_TIME + 100).unwrap();
    store.revoke_key("evk_00000001", BASE_TIME + 200).unwrap();
    store
        .set_key_expiry("evk_00000002", BASE_TIME + 300)
        .unwrap();
    store
        .touch_key("evk_00000002", BASE_TIME + 50, Some("203.0.113.7"))
        .unwrap();
    // A late, older touch does not move last use backwards.
    store
        .touch_key("evk_00000002", BASE_TIME + 40, Some("198.51.100.1"))
        .unwrap();
    let keys = store.keys().unwrap();
    assert_eq!(keys[0].revoked_at, Some(BASE_TIME + 100));
    assert_eq!(keys[1].expires_at, Some(BASE_TIME + 300));
    assert_eq!(keys[1].last_used_at, Some(BASE_TIME + 50));
    assert_eq!(keys[1].last_used_ip.as_deref(), Some("203.0.113.7"));
    store
        .touch_key("evk_00000002", BASE_TIME + 60, None)
        .unwrap();
    let k = store.key_by_hash(&Hash([2; 32])).unwrap().unwrap();
    assert_eq!(
        (k.last_used_at, k.last_used_ip),
        (Some(BASE_TIME + 60), None)
    );
    for result in [
        store.revoke_key("evk_nope", BASE_TIME),
        store.set_key_expiry("evk_nope", BASE_TIME),
        store.touch_key("evk_nope", BASE_TIME, None),
    ] {
        assert!(matches!(result, Err(StoreError::NotFound(m)) if m.contains("evk_nope")));
    }
    // Keys are mutable, the log is not: no trigger stands in the way here.
    let store = fx.reopen();
    assert_eq!(store.keys().unwrap().len(), 2);
}

fn consumer_cursors_are_kept_per_consumer_and_only_move_forward(backend: Backend) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let cursor = |consumer: &str, next_seq: u64, state: Option<&str>| ConsumerCursor {
        consumer: consumer.to_owned(),
        next_seq,
        state: state.map(str::to_owned),
        updated_at: BASE_TIME + next_seq as i64,
    };
    assert_eq!(store.consumer_cursor("forwarder:siem").unwrap(), None);
    assert!(store.consumer_cursors().unwrap().is_empty());
    store
        .save_consumer_cursor(&cursor("forwarder:siem", 0, None))
        .unwrap();
    store
        .save_consumer_cursor(&cursor("webhook:pager", 7, Some(r#"{"open":[3]}"#)))
        .unwrap();
    store
        .save_consumer_cursor(&cursor("forwarder:siem", 42, Some("{}")))
        .unwrap();
    // The same position again is fine (a consumer saving its state only).
    store
        .save_consumer_cursor(&cursor("forwarder:siem", 42, Some(r#"{"n":1}"#)))
        .unwrap();
    assert_eq!(
        store.consumer_cursor("forwarder:siem").unwrap(),
        Some(cursor("forwarder:siem", 42, Some(r#"{"n":1}"#)))
    );
    // Back is refused and changes nothing.
    let back = store.save_consumer_cursor(&cursor("forwarder:siem", 41, None));
    assert!(
        matches!(
            &back,
            Err(StoreError::CursorBackwards { consumer, stored: 42, asked: 41 })
                if consumer == "forwarder:siem"
        ),
        "{back:?}"
    );
    // Durable: another handle on the same storage reads the same rows, in name order.
    let store = fx.reopen();
    assert_eq!(
        store.consumer_cursors().unwrap(),
        vec![
            cursor("forwarder:siem", 42, Some(r#"{"n":1}"#)),
            cursor("webhook:pager", 7, Some(r#"{"open":[3]}"#)),
        ]
    );
}

fn small_log(fx: &Fixture) -> (Arc<dyn Store>, Writer) {
    let store = fx.store();
    let mut w = Writer::new();
    let specs: Vec<Spec> = (0..12).map(varied).collect();
    w.append(&*store, &specs);
    store
        .put_checkpoint(&StoredCheckpoint {
            size: 12,
            root: w.head.tree.root(),
            signed_note: "example.org/log\n12\nroot\n".to_owned(),
            created_at: BASE_TIME,
        })
        .unwrap();
    (store, w)
}

/// Retention at the storage level: the anchor (which names its `retention.pruned` event) is
/// checked against the stored entries and checkpoint and only moves forward; deletes come
/// only in bounded batches below it (and go on after a reopen, as after a crash); DELETE from
/// a plain SQL client stays refused; Merkle nodes and checkpoints stay, so proofs for kept
/// entries and consistency from an older checkpoint still verify; the log goes on from the
/// same head.
fn pruning_deletes_a_prefix_in_batches_below_a_persisted_anchor_and_keeps_the_tree(
    backend: Backend,
) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let mut specs: Vec<Spec> = (0..30)
        .map(|i| Spec::simple(BASE_TIME + i * 1000))
        .collect();
    // Entry 29 records the prune (the pruner appends it before anchoring).
    specs[29].action = "retention.pruned".to_owned();
    w.append(&*store, &specs[..12]);
    let old_root = w.head.tree.root();
    let cp = |size: u64, root: Hash| StoredCheckpoint {
        size,
        root,
        signed_note: format!("example.org/log\n{size}\nroot\n"),
        created_at: BASE_TIME,
    };
    store.put_checkpoint(&cp(12, old_root)).unwrap();
    w.append(&*store, &specs[12..]);
    let root = w.head.tree.root();
    store.put_checkpoint(&cp(30, root)).unwrap();
    let head = store.load_head().unwrap();

    assert_eq!(store.prune_anchor().unwrap(), None);
    // No anchor, no deletion.
    assert_eq!(store.prune_batch(100).unwrap(), 0);
    assert_eq!(store.count(&Filter::default()).unwrap(), 30);
    // Nor from a plain SQL client, ever.
    let refused = (fx.raw_delete)(0).unwrap_err();
    assert!(refused.contains("DELETE refused"), "{refused}");

    let last_pruned = &w.all[19];
    let anchor = PruneAnchor {
        from_seq: 0,
        below_seq: 20,
        hash: last_pruned.hash,
        seal: last_pruned.seal,
        recorded_at: last_pruned.event.recorded_at,
        checkpoint_size: 30,
        checkpoint_note: cp(30, root).signed_note,
        started_at: BASE_TIME + 400 * 86_400_000,
        event_seq: 29,
    };
    // Refused: a hash that is not entry 19's, a checkpoint that does not cover the anchor,
    // an event that is not a retention.pruned one, an event below the anchor.
    let mut wrong = anchor.clone();
    wrong.hash = w.all[18].hash;
    assert!(store.begin_prune(&wrong).is_err());
    let mut wrong = anchor.clone();
    wrong.checkpoint_size = 12;
    assert!(store.begin_prune(&wrong).is_err());
    let mut wrong = anchor.clone();
    wrong.event_seq = 28;
    assert!(store.begin_prune(&wrong).is_err());
    let mut wrong = anchor.clone();
    wrong.event_seq = 19;
    assert!(store.begin_prune(&wrong).is_err());
    assert_eq!(store.prune_anchor().unwrap(), None);

    store.begin_prune(&anchor).unwrap();
    store.begin_prune(&anchor).unwrap(); // the same anchor again: fine
    assert_eq!(store.prune_anchor().unwrap(), Some(anchor.clone()));

    // The first batch, then a "crash": the store is opened again and the prune goes on.
    assert_eq!(store.prune_batch(7).unwrap(), 7);
    drop(store);
    let store = fx.reopen();
    assert_eq!(store.prune_anchor().unwrap(), Some(anchor.clone()));
    assert_eq!(
        seqs(&scan_all(&*store, &Filter::default(), Order::Ascending))[0],
        7
    );
    // Still no DELETE from outside, not even below the anchor.
    let refused = (fx.raw_delete)(8).unwrap_err();
    assert!(refused.contains("DELETE refused"), "{refused}");
    assert_eq!(store.prune_batch(7).unwrap(), 7);
    assert_eq!(store.prune_batch(7).unwrap(), 6);
    assert_eq!(store.prune_batch(7).unwrap(), 0);

    // Exactly the prefix went; the window (20..30) is whole.
    let kept = scan_all(&*store, &Filter::default(), Order::Ascending);
    assert_eq!(seqs(&kept), (20..30).collect::<Vec<_>>());
    assert_eq!(kept, w.all[20..].to_vec());
    assert_eq!(store.count(&Filter::default()).unwrap(), 10);
    let by_time = Filter {
        from: Some(BASE_TIME),
        to: Some(BASE_TIME + 25_000),
        ..Filter::default()
    };
    assert_eq!(
        seqs(&scan_all(&*store, &by_time, Order::Descending)),
        (20..25).rev().collect::<Vec<_>>()
    );
    assert_eq!(store.load_head().unwrap(), head);
    assert_eq!(store.checkpoints().unwrap().len(), 2);

    // Every Merkle node stays: inclusion of a kept entry, consistency from the old checkpoint.
    let plan = merkle::inclusion_plan(25, 30).unwrap();
    let proof = plan
        .assemble(&store.read_nodes(plan.nodes()).unwrap())
        .unwrap();
    merkle::verify_inclusion(&w.all[25].leaf_hash(), 25, 30, &proof, &root).unwrap();
    let plan = merkle::consistency_plan(12, 30).unwrap();
    let proof = plan
        .assemble(&store.read_nodes(plan.nodes()).unwrap())
        .unwrap();
    merkle::verify_consistency(12, &old_root, 30, &root, &proof).unwrap();

    // The log goes on; the anchor never moves back.
    w.append(&*store, &[Spec::simple(BASE_TIME + 31_000)]);
    assert_eq!(store.load_head().unwrap(), w.head);
    let mut back = anchor.clone();
    back.below_seq = 10;
    back.hash = w.all[9].hash;
    back.seal = w.all[9].seal;
    back.recorded_at = w.all[9].event.recorded_at;
    assert!(store.begin_prune(&back).is_err());
    let refused = (fx.raw_delete)(20).unwrap_err();
    assert!(refused.contains("DELETE refused"), "{refused}");
    assert_eq!(store.count(&Filter::default()).unwrap(), 11);
}

/// Every complete node of the tree over `entries`, computed in memory.
fn full_tree(entries: &[SealedEntry]) -> std::collections::BTreeMap<NodeId, Hash> {
    let mut range = merkle::CompactRange::new();
    let mut done = Vec::new();
    for e in entries {
        range.append_leaf(e.leaf_hash(), &mut done);
    }
    done.into_iter().collect()
}

/// Reads every node of `want` from `store` (highest levels first, as proofs mostly ask) and
/// compares each with the in-memory tree.
#[track_caller]
fn assert_tree_reads(store: &dyn Store, want: &std::collections::BTreeMap<NodeId, Hash>) {
    let mut ids: Vec<NodeId> = want.keys().copied().collect();
    ids.sort_by_key(|id| (std::cmp::Reverse(id.level), id.index));
    let got = store.read_nodes(&ids).unwrap();
    for (id, hash) in ids.iter().zip(got) {
        assert_eq!(hash, want[id], "node {id:?}");
    }
}

/// The store keeps only the upper Merkle nodes and recomputes the lower ones from the rows
/// (`evident_store::tree`); pruning stores the lower nodes over what it deletes. Whatever the
/// batch and prune boundaries (none aligned to a subtree here), every node of the tree reads
/// exactly as computed in memory, before pruning, after a first prune, after a second one
/// that starts inside a block the first one cut, and after a reopen; the head loads the same.
fn every_tree_node_reads_as_computed_before_and_after_pruning_at_unaligned_points(
    backend: Backend,
) {
    let fx = Fixture::new(backend);
    let store = fx.store();
    let mut w = Writer::new();
    let mut specs: Vec<Spec> = (0..700).map(|i| Spec::simple(BASE_TIME + i * 10)).collect();
    specs[699].action = "retention.pruned".to_owned();
    for chunk in [
        &specs[..1],
        &specs[1..130],
        &specs[130..257],
        &specs[257..699],
        &specs[699..],
    ] {
        w.append(&*store, chunk);
    }
    let cp = |size: u64, root: Hash| StoredCheckpoint {
        size,
        root,
        signed_note: format!("example.org/log\n{size}\nroot\n"),
        created_at: BASE_TIME,
    };
    store.put_checkpoint(&cp(700, w.head.tree.root())).unwrap();
    assert_tree_reads(&*store, &full_tree(&w.all));
    assert_eq!(store.load_head().unwrap(), w.head);

    let anchor = |from: u64, below: u64, cp_size: u64, event: u64, all: &[SealedEntry]| {
        let last = &all[usize::try_from(below - 1).unwrap()];
        PruneAnchor {
            from_seq: from,
            below_seq: below,
            hash: last.hash,
            seal: last.seal,
            recorded_at: last.event.recorded_at,
            checkpoint_size: cp_size,
            checkpoint_note: cp(cp_size, Hash::ZERO).signed_note,
            started_at: BASE_TIME + 400 * 86_400_000,
            event_seq: event,
        }
    };
    store
        .begin_prune(&anchor(0, 333, 700, 699, &w.all))
        .unwrap();
    let mut deleted = 0;
    loop {
        match store.prune_batch(100).unwrap() {
            0 => break,
            n => deleted += n,
        }
    }
    assert_eq!(deleted, 333);
    assert_tree_reads(&*store, &full_tree(&w.all));
    assert_eq!(store.load_head().unwrap(), w.head);

    // More entries, a second prune from 333 to 555 in batches of 64, then a reopen.
    let mut more: Vec<Spec> = (700..801)
        .map(|i| Spec::simple(BASE_TIME + i * 10))
        .collect();
    more[100].action = "retention.pruned".to_owned();
    w.append(&*store, &more);
    store.put_checkpoint(&cp(801, w.head.tree.root())).unwrap();
    store
        .begin_prune(&anchor(333, 555, 801, 800, &w.all))
        .unwrap();
    while store.prune_batch(64).unwrap() > 0 {}
    assert_eq!(
        seqs(&scan_all(&*store, &Filter::default(), Order::Ascending))[0],
        555
    );
    drop(store);
    let store = fx.reopen();
    assert_tree_reads(&*store, &full_tree(&w.all));
    assert_eq!(store.load_head().unwrap(), w.head);
    // And the log goes on from there, its new nodes reading right too.
    w.append(&*store, &[Spec::simple(BASE_TIME + 9_000)]);
    assert_tree_reads(&*store, &full_tree(&w.all));

    // Migration: a fresh store takes the pruned prefix's nodes (every level, in chunks) and
    // the anchor, then the kept entries with the nodes they complete; it reads the same.
    let copy = Fixture::new(backend);
    let dest = copy.store();
    let anchor = store.prune_anchor().unwrap().unwrap();
    let k = anchor.below_seq;
    let prefix: Vec<NodeId> = (0u8..64)
        .flat_map(|level| (0..(k >> level)).map(move |index| NodeId { level, index }))
        .collect();
    for chunk in prefix.chunks(300) {
        let hashes = store.read_nodes(chunk).unwrap();
        let nodes: Vec<(NodeId, Hash)> = chunk.iter().copied().zip(hashes).collect();
        dest.import_pruned_nodes(&nodes).unwrap();
    }
    dest.import_anchor(&anchor).unwrap();
    assert_eq!(dest.prune_anchor().unwrap(), Some(anchor.clone()));
    let mut tree =
        merkle::CompactRange::from_parts(k, store.read_nodes(&merkle::subtree_ids(0, k)).unwrap())
            .unwrap();
    let mut nodes = Vec::new();
    let kept = &w.all[usize::try_from(k).unwrap()..];
    for e in kept {
        tree.append_leaf(e.leaf_hash(), &mut nodes);
    }
    dest.append(kept, &nodes).unwrap();
    assert_eq!(dest.load_head().unwrap(), w.head);
    assert_tree_reads(&*dest, &full_tree(&w.all));
    // Importing into a log that holds entries is refused.
    for refused in [
        dest.import_anchor(&anchor),
        dest.import_pruned_nodes(&[(NodeId { level: 0, index: 0 }, Hash::ZERO)]),
    ] {
        match refused {
            Err(StoreError::Backend(m)) => assert!(m.contains("not empty"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn witness_state_is_replaced_only_from_the_size_the_caller_read_and_survives_reopen(
    backend: Backend,
) {
    use evident_store::{CollectedCosignature, WitnessedCheckpoint};
    let fx = Fixture::new(backend);
    let store = fx.store();
    let witnessed = |size: u64, root: u8| WitnessedCheckpoint {
        origin: "peer.example".to_owned(),
        size,
        root: Hash([root; 32]),
        signed_note: format!("peer.example\n{size}\nroot\n\n\u{2014} sig\n"),
        updated_at: BASE_TIME + size as i64,
    };
    assert_eq!(store.witnessed_checkpoint("peer.example").unwrap(), None);
    // First record: expected size 0 (none stored); then only from the stored size.
    store
        .record_witnessed_checkpoint(&witnessed(3, 1), 0)
        .unwrap();
    let stale = store.record_witnessed_checkpoint(&witnessed(2, 9), 0);
    assert!(
        matches!(
            &stale,
            Err(StoreError::WitnessMoved {
                stored: 3,
                expected: 0,
                ..
            })
        ),
        "{stale:?}"
    );
    store
        .record_witnessed_checkpoint(&witnessed(5, 2), 3)
        .unwrap();
    assert!(
        store
            .record_witnessed_checkpoint(&witnessed(6, 2), 3)
            .is_err()
    );
    assert_eq!(
        store.witnessed_checkpoint("peer.example").unwrap(),
        Some(witnessed(5, 2))
    );
    assert_eq!(store.witnessed_checkpoint("other.example").unwrap(), None);
    let cosig = |size: u64, witness: &str, line: &str| CollectedCosignature {
        size,
        witness: witness.to_owned(),
        line: line.to_owned(),
        received_at: BASE_TIME,
    };
    store
        .put_cosignature(&cosig(5, "b/witness", "\u{2014} b x\n"))
        .unwrap();
    store
        .put_cosignature(&cosig(5, "a/witness", "\u{2014} a x\n"))
        .unwrap();
    store
        .put_cosignature(&cosig(5, "a/witness", "\u{2014} a y\n"))
        .unwrap();
    store
        .put_cosignature(&cosig(4, "a/witness", "\u{2014} a old\n"))
        .unwrap();
    // Durable: another handle reads the same state.
    let store = fx.reopen();
    assert_eq!(
        store.witnessed_checkpoint("peer.example").unwrap(),
        Some(witnessed(5, 2))
    );
    assert_eq!(
        store.cosignatures_at(5).unwrap(),
        vec![
            cosig(5, "a/witness", "\u{2014} a y\n"),
            cosig(5, "b/witness", "\u{2014} b x\n")
        ]
    );
    assert!(store.cosignatures_at(6).unwrap().is_empty());
}
