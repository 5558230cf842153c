//! The runner against a real node (embedded store in a temporary directory): every committed
//! entry reaches a consumer once and in order, the cursor survives a restart, a destination
//! that is down neither blocks appends nor loses anything, and a lag incident is recorded
//! once.

use super::*;
use crate::test_support::{event_json, faulty_node, test_config};
use evident_core::EventInput;
use evident_store::{Filter, Order};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A destination that records what it was given, and can be switched off.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<u64>>>,
    down: Arc<AtomicBool>,
    restored: Arc<Mutex<Option<String>>>,
    ticks: Arc<AtomicU64>,
}

impl Consumer for Recorder {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn name(&self) -> &str {
        "recorder"
    }
    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        *self.restored.lock().unwrap() = state.map(str::to_owned);
        Ok(())
    }
    async fn deliver(
        &mut self,
        _ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(DeliveryError::destination("connection refused"));
        }
        let mut seen = self.seen.lock().unwrap();
        seen.extend(batch.iter().map(|e| e.event.seq));
        Ok(batch.len())
    }
    async fn tick(&mut self, _ctx: &ConsumerContext) -> Result<(), DeliveryError> {
        self.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn tick_every(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn save_state(&self) -> Option<String> {
        Some(format!("{}", self.seen.lock().unwrap().len()))
    }
}

fn inputs(n: usize) -> Vec<EventInput> {
    (0..n)
        .map(|i| EventInput::from_json(&event_json(&format!("u{i}"), "auth.login")).unwrap())
        .collect()
}

/// Waits (up to a generous limit, failing with `what`) until `done` holds.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn actions(store: &dyn Store, action: &str) -> Vec<u64> {
    let filter = Filter {
        action: Some(evident_store::ActionFilter::Exact(action.to_owned())),
        ..Filter::default()
    };
    let mut out = Vec::new();
    store
        .scan(&filter, Order::Ascending, None, None, &mut |e| {
            out.push(e.event.seq);
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_entry_arrives_once_in_order_and_a_restart_resumes_at_the_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _) = faulty_node(test_config(tmp.path()));
    let state = AppState::new(node);
    let sequencer = || state.node().sequencer();
    sequencer().append(inputs(30)).await.unwrap();

    let first = Recorder::default();
    let task = spawn(&state, first.clone(), ConsumerSettings::default());
    wait_for("30 entries arrived", || {
        first.seen.lock().unwrap().len() >= 30
    })
    .await;
    // More while it runs: woken by the commit, not by polling the store.
    for _ in 0..4 {
        sequencer().append(inputs(5)).await.unwrap();
    }
    wait_for("50 entries arrived", || {
        first.seen.lock().unwrap().len() >= 50
    })
    .await;
    assert_eq!(*first.seen.lock().unwrap(), (0..50).collect::<Vec<u64>>());
    assert_eq!(
        *first.restored.lock().unwrap(),
        None,
        "a new consumer has no state"
    );
    wait_for("ticks ran", || first.ticks.load(Ordering::SeqCst) >= 2).await;
    // Caught up: the cursor is saved at once, with the consumer's state.
    let store = state.store().clone();
    wait_for("the cursor was saved at 50", || {
        store
            .consumer_cursor("test:recorder")
            .unwrap()
            .is_some_and(|c| c.next_seq == 50)
    })
    .await;
    let status = state.consumers().status("test", "recorder").unwrap();
    assert_eq!(
        (status.next_seq, status.lag_events, status.delivered),
        (50, 0, 50)
    );
    assert_eq!(status.last_error, None);
    task.abort();

    // Stopped, the log goes on; restarted, it resumes where the cursor says, with its state.
    sequencer().append(inputs(10)).await.unwrap();
    let second = Recorder::default();
    let task = spawn(&state, second.clone(), ConsumerSettings::default());
    wait_for("the 10 new entries arrived", || {
        second.seen.lock().unwrap().len() >= 10
    })
    .await;
    assert_eq!(*second.seen.lock().unwrap(), (50..60).collect::<Vec<u64>>());
    assert_eq!(
        second.restored.lock().unwrap().as_deref(),
        Some("50"),
        "the state saved with the cursor comes back"
    );
    let metrics = state.node().metrics().encode();
    assert!(
        metrics.contains(r#"evident_consumer_position{kind="test",name="recorder"} 60"#),
        "{metrics}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_never_blocks_appends_and_lags_once_then_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, _) = faulty_node(test_config(tmp.path()));
    let state = AppState::new(node);
    let recorder = Recorder::default();
    recorder.down.store(true, Ordering::SeqCst);
    let settings = ConsumerSettings {
        lag_warn_events: Some(5),
        lag_warn_seconds: None,
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        ..ConsumerSettings::default()
    };
    let task = spawn(&state, recorder.clone(), settings);
    // Appends go on while every delivery fails.
    for _ in 0..6 {
        state.node().sequencer().append(inputs(5)).await.unwrap();
    }
    let status = || state.consumers().status("test", "recorder").unwrap();
    wait_for("retries failed and a lag incident opened", || {
        let s = status();
        s.failures >= 5 && s.lagging_since.is_some()
    })
    .await;
    let s = status();
    assert!(s.retrying, "{s:?}");
    assert_eq!(s.last_error.as_deref(), Some("connection refused"));
    assert!(s.lag_events >= 30, "{s:?}");
    assert_eq!(
        s.next_seq, 0,
        "nothing is skipped while the destination is down"
    );
    // Many more failures: still exactly one warning event.
    let before = s.failures;
    wait_for("more retries failed", || status().failures >= before + 5).await;
    let store = state.store().clone();
    assert_eq!(actions(&*store, LAGGING_ACTION).len(), 1);
    assert!(recorder.seen.lock().unwrap().is_empty());

    recorder.down.store(false, Ordering::SeqCst);
    wait_for("caught up", || {
        let s = status();
        s.lag_events == 0
            && s.lagging_since.is_none()
            && s.next_seq == state.node().sequencer().size()
    })
    .await;
    let lagging = actions(&*store, LAGGING_ACTION);
    let recovered = actions(&*store, RECOVERED_ACTION);
    assert_eq!(
        (lagging.len(), recovered.len()),
        (1, 1),
        "{lagging:?} {recovered:?}"
    );
    // Everything committed meanwhile arrived, in order, none twice: its own warning too.
    wait_for("the caught-up event arrived", || {
        recorder.seen.lock().unwrap().last() == Some(&recovered[0])
    })
    .await;
    let size = state.node().sequencer().size();
    assert_eq!(
        *recorder.seen.lock().unwrap(),
        (0..size).collect::<Vec<u64>>()
    );
    let s = status();
    assert_eq!((s.last_error, s.retrying), (None, false));
    task.abort();
}
