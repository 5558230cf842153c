//! The bodies of alert messages. `generic`: a Standard Webhooks style JSON envelope
//! (`type`, `timestamp`, `data`) whose data carries the rule, the event(s) with their
//! sequence numbers, entry hashes and inclusion proofs, and the signed checkpoint the proofs
//! verify against. `slack`: `{"text": …}` for a Slack incoming webhook. Also reads the
//! entries and assembles their proofs from the store.

use crate::alerts::{Fired, Rule};
use crate::http::proofs::InclusionProof;
use evident_core::SealedEntry;
use evident_core::event::format_rfc3339_millis;
use evident_core::merkle;
use evident_store::{Filter, Order, Store, StoreError, StoredCheckpoint};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::ops::ControlFlow;

/// The shape of the message body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// JSON with the events, their inclusion proofs and the signed checkpoint.
    #[default]
    Generic,
    /// `{"text": "…"}`, what a Slack incoming webhook takes.
    Slack,
}

impl Template {
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Generic => "generic",
            Template::Slack => "slack",
        }
    }
}

/// One event of an alert with its proof.
pub struct ProvenEntry {
    pub entry: SealedEntry,
    /// `None` only when the node could not prove it (it serves a damaged log read-only).
    pub proof: Option<InclusionProof>,
}

/// What an alert is about.
pub enum Alert<'a> {
    /// Events of the log matched a rule (`entries` ends with the one that fired it).
    Events {
        fired: &'a Fired,
        rule: &'a Rule,
        entries: Vec<ProvenEntry>,
        /// `None` only when no checkpoint covers the events and none can be signed (the
        /// node is read-only): the alert goes out unproven rather than not at all.
        checkpoint: Option<StoredCheckpoint>,
    },
    /// A condition of the node (read-only, dead-man): nothing in the log to prove.
    Condition {
        rule: &'a str,
        description: &'a str,
        since: evident_core::event::Millis,
        detail: Value,
    },
}

/// Reads the entries `seqs` and proves each in the tree of `checkpoint` (when there is one).
pub fn prove(
    store: &dyn Store,
    seqs: &[u64],
    checkpoint: Option<&StoredCheckpoint>,
) -> Result<Vec<ProvenEntry>, StoreError> {
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let mut found = None;
        let filter = Filter {
            from_seq: Some(seq),
            to_seq: Some(seq + 1),
            ..Filter::default()
        };
        store.scan(&filter, Order::Ascending, None, Some(1), &mut |entry| {
            found = Some(entry);
            ControlFlow::Break(())
        })?;
        // Pruned since it matched: the alert goes out with the entries still kept.
        let Some(entry) = found else { continue };
        let Some(checkpoint) = checkpoint else {
            out.push(ProvenEntry { entry, proof: None });
            continue;
        };
        let corrupt = |problem: String| StoreError::Corrupt {
            seq: Some(seq),
            problem,
        };
        let plan = merkle::inclusion_plan(seq, checkpoint.size)
            .map_err(|e| corrupt(format!("inclusion proof: {e}")))?;
        let hashes = store.read_nodes(plan.nodes())?;
        let path = plan
            .assemble(&hashes)
            .map_err(|e| corrupt(format!("stored Merkle nodes: {e}")))?;
        let proof = InclusionProof {
            seq,
            size: checkpoint.size,
            leaf_hash: entry.leaf_hash(),
            hash: entry.hash,
            seal: entry.seal,
            prev_hash: None,
            proof: path,
            root: checkpoint.root,
            checkpoint: Some(checkpoint.signed_note.clone()),
        };
        out.push(ProvenEntry {
            entry,
            proof: Some(proof),
        });
    }
    Ok(out)
}

/// The message body of `alert` in `template`.
pub fn body(template: Template, alert: &Alert<'_>, node_id: &str, public_key: &str) -> Vec<u8> {
    let value = match template {
        Template::Generic => generic(alert, node_id, public_key),
        Template::Slack => json!({ "text": slack_text(alert, node_id) }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

fn generic(alert: &Alert<'_>, node_id: &str, public_key: &str) -> Value {
    match alert {
        Alert::Events {
            fired,
            rule,
            entries,
            checkpoint,
        } => {
            let last = entries.last();
            let events: Vec<Value> = entries
                .iter()
                .map(|p| {
                    json!({
                        "seq": p.entry.event.seq,
                        "hash": p.entry.hash,
                        "event": serde_json::to_value(&p.entry.event).unwrap_or(Value::Null),
                        "proof": serde_json::to_value(&p.proof).unwrap_or(Value::Null),
                    })
                })
                .collect();
            let window = match (&fired.window, rule.threshold) {
                (Some(w), Some(t)) => json!({
                    "per": t.per,
                    "key": w.key,
                    "count": t.count,
                    "within_ms": t.within_ms,
                    "started_at": format_rfc3339_millis(w.started_at),
                    "seqs": w.seqs,
                }),
                _ => Value::Null,
            };
            json!({
                "type": "evident.alert",
                "timestamp": last.map(|p| format_rfc3339_millis(p.entry.event.recorded_at)),
                "data": {
                    "rule": {"name": rule.name, "description": rule.description},
                    "node": node_id,
                    "seq": fired.seq,
                    "hash": last.map(|p| p.entry.hash),
                    "events": events,
                    "window": window,
                    "checkpoint": checkpoint.as_ref().map(|c| &c.signed_note),
                    "public_key": public_key,
                }
            })
        }
        Alert::Condition {
            rule,
            description,
            since,
            detail,
        } => json!({
            "type": "evident.alert",
            "timestamp": format_rfc3339_millis(*since),
            "data": {
                "rule": {"name": rule, "description": description},
                "node": node_id,
                "condition": detail,
                "since": format_rfc3339_millis(*since),
                "events": [],
                "public_key": public_key,
            }
        }),
    }
}

fn slack_text(alert: &Alert<'_>, node_id: &str) -> String {
    match alert {
        Alert::Events { rule, entries, .. } => {
            let Some(last) = entries.last() else {
                return format!(":rotating_light: Evident alert {} on {node_id}", rule.name);
            };
            let e = &last.entry.event;
            let count = if entries.len() > 1 {
                format!(" ({} matching events)", entries.len())
            } else {
                String::new()
            };
            format!(
                ":rotating_light: *Evident alert* `{}` on `{node_id}`{count}: {} `{}` by {} `{}` on {} `{}`, {}, tenant `{}` (seq {}, entry hash {})",
                rule.name,
                e.severity.as_str().to_uppercase(),
                e.action,
                e.actor.kind,
                e.actor.id,
                e.target.kind,
                e.target.id,
                e.outcome,
                e.tenant,
                e.seq,
                last.entry.hash,
            )
        }
        Alert::Condition {
            rule,
            description,
            detail,
            ..
        } => format!(
            ":rotating_light: *Evident alert* `{rule}` on `{node_id}`: {description} ({detail})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_shape_a_condition_alert() {
        let alert = Alert::Condition {
            rule: "builtin.read_only",
            description: "The node serves its log read-only",
            since: 1_700_000_000_000,
            detail: json!({"kind": "chain_broken", "seq": 3}),
        };
        let generic: Value =
            serde_json::from_slice(&body(Template::Generic, &alert, "node-1", "vk")).unwrap();
        assert_eq!(generic["type"], "evident.alert");
        assert_eq!(generic["data"]["rule"]["name"], "builtin.read_only");
        assert_eq!(generic["data"]["condition"]["kind"], "chain_broken");
        assert_eq!(generic["data"]["events"], json!([]));
        assert_eq!(generic["data"]["public_key"], "vk");
        let slack: Value =
            serde_json::from_slice(&body(Template::Slack, &alert, "node-1", "vk")).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("builtin.read_only") && text.contains("node-1"),
            "{text}"
        );
        assert_eq!(
            slack.as_object().unwrap().len(),
            1,
            "Slack takes {{\"text\"}}"
        );
        // Compact JSON: no raw newline, so the v1a signature is always possible.
        assert!(!body(Template::Generic, &alert, "node-1", "vk").contains(&b'\n'));
    }
}
