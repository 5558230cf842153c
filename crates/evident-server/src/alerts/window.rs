//! Threshold windows: for each threshold rule and key (actor, address or target), the
//! window opened by its first matching event, the matches counted in it and whether it has
//! fired. A window lasts `within_ms` of recording time from its first event and fires once,
//! when its `count`-th match arrives. Serializable, so that it is kept with a consumer's
//! cursor and a restart neither loses nor repeats a window. Pure: no I/O.

use super::rule::Rule;
use evident_core::Event;
use evident_core::event::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most sequence numbers a window remembers (the first `count`, capped).
const MAX_SEQS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    started_at: Millis,
    count: u32,
    fired: bool,
    seqs: Vec<u64>,
}

/// Every open window, by rule name and key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    open: BTreeMap<String, BTreeMap<String, Window>>,
}

/// A rule fired on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub rule: String,
    /// The event that made it fire.
    pub seq: u64,
    /// For a threshold rule: the matching events of the window (the firing one last), its
    /// key and when it opened.
    pub window: Option<FiredWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredWindow {
    pub key: String,
    pub started_at: Millis,
    pub seqs: Vec<u64>,
}

/// What [`Windows::observe_undoable`] changed: the earlier state of each window it counted
/// an event in, so that [`Windows::undo`] puts them back when the event is to be seen again
/// (its alert could not be delivered). Dropping windows that were over is not undone: the
/// same event drops them again.
#[derive(Debug, Default)]
pub struct Undo(Vec<(String, String, Option<Window>)>);

impl Windows {
    /// Counts `event` (which `rule` matches) and says whether the rule fires on it.
    pub fn observe(&mut self, rule: &Rule, event: &Event) -> Option<Fired> {
        self.observe_undoable(rule, event, &mut Undo::default())
    }

    /// [`Self::observe`], noting in `undo` how to take it back (issue 16: the webhook
    /// consumer cloned every open window for each matching entry instead, a fifth of the
    /// server's CPU with a per-actor threshold rule over a thousand actors).
    pub fn observe_undoable(
        &mut self,
        rule: &Rule,
        event: &Event,
        undo: &mut Undo,
    ) -> Option<Fired> {
        let Some(threshold) = rule.threshold else {
            return Some(Fired {
                rule: rule.name.clone(),
                seq: event.seq,
                window: None,
            });
        };
        let at = event.recorded_at;
        let within = Millis::try_from(threshold.within_ms).unwrap_or(Millis::MAX);
        let windows = self.open.entry(rule.name.clone()).or_default();
        // Windows over before this event are dropped, so the state stays small.
        windows.retain(|_, w| at.saturating_sub(w.started_at) < within);
        let key = threshold.per.key_of(event);
        undo.0
            .push((rule.name.clone(), key.clone(), windows.get(&key).cloned()));
        let window = windows.entry(key.clone()).or_insert_with(|| Window {
            started_at: at,
            count: 0,
            fired: false,
            seqs: Vec::new(),
        });
        window.count = window.count.saturating_add(1);
        if window.seqs.len() < MAX_SEQS {
            window.seqs.push(event.seq);
        }
        if window.fired || window.count < threshold.count {
            return None;
        }
        window.fired = true;
        Some(Fired {
            rule: rule.name.clone(),
            seq: event.seq,
            window: Some(FiredWindow {
                key,
                started_at: window.started_at,
                seqs: window.seqs.clone(),
            }),
        })
    }

    /// Takes back what `undo` recorded, newest change first.
    pub fn undo(&mut self, undo: Undo) {
        for (rule, key, before) in undo.0.into_iter().rev() {
            let windows = self.open.entry(rule.clone()).or_default();
            match before {
                Some(window) => {
                    windows.insert(key, window);
                }
                None => {
                    windows.remove(&key);
                    if windows.is_empty() {
                        self.open.remove(&rule);
                    }
                }
            }
        }
    }

    /// Forgets the windows of rules no longer in force.
    pub fn keep_only(&mut self, rules: &[&str]) {
        self.open.retain(|name, _| rules.contains(&name.as_str()));
    }
}
