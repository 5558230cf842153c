//! The signing keys this node's witness trusts for each cluster peer: the peer's configured
//! `public_key`, and every key a verified signing-key rotation from a trusted key led to
//! (docs/FORMAT.md §16, §18). When a peer's checkpoint is signed under its origin by a key not
//! trusted yet, the witness reads the peer's `evident.signing_key.rotated` events over the cluster's
//! mTLS client ([`fetch_rotations`]) and follows them with the core's
//! [`KeyChain`](evident_core::rotation::KeyChain): a rotation statement counts only when a
//! key already trusted signed it, so a peer (or anyone between) cannot talk the witness into a
//! key of its choosing.
//!
//! The learned keys are kept in memory only: after a restart the witness trusts the configured
//! key again and learns the rotations anew on the first checkpoint that needs them (one read
//! of the peer's rotation events). A changed `public_key` starts that peer's chain afresh.

use crate::cluster::{PeerClient, PeerConfig, PeerError};
use evident_core::NoteVerifier;
use evident_core::event::Event;
use evident_core::rotation::{FollowReport, KeyChain, SIGNING_ROTATION_ACTION};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// Rotation events read per page, and the most pages read per fetch (rotations are rare: a
/// peer with more than this many is refused until the operator pins a later key).
const PAGE_LIMIT: u64 = 1000;
const MAX_PAGES: usize = 16;

/// Why the witness could not read a peer's rotation events.
#[derive(Debug, thiserror::Error)]
pub enum RotationFetchError {
    /// The peer did not answer, or refused.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The peer's answer is not an audit-log page.
    #[error("node {node}: its rotation events: {problem}")]
    Malformed { node: String, problem: String },
    /// The configured `public_key` does not parse.
    #[error("node {node}: configured public_key: {problem}")]
    BadConfiguredKey { node: String, problem: String },
}

/// The trusted keys of every peer, by node id (in memory; see the module doc).
#[derive(Debug, Default)]
pub struct PeerKeys {
    chains: Mutex<HashMap<String, KeyChain>>,
}

impl PeerKeys {
    fn with_chain<T>(
        &self,
        peer: &PeerConfig,
        f: impl FnOnce(&mut KeyChain) -> T,
    ) -> Result<T, RotationFetchError> {
        let configured = NoteVerifier::parse(&peer.public_key).map_err(|e| {
            RotationFetchError::BadConfiguredKey {
                node: peer.node_id.clone(),
                problem: e.to_string(),
            }
        })?;
        let mut chains = self
            .chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let chain = chains
            .entry(peer.node_id.clone())
            .or_insert_with(|| KeyChain::new(configured.clone()));
        if chain.pinned() != &configured {
            *chain = KeyChain::new(configured);
        }
        Ok(f(chain))
    }

    /// The keys trusted for `peer` now, its configured key first.
    pub fn trusted(&self, peer: &PeerConfig) -> Result<Vec<NoteVerifier>, RotationFetchError> {
        self.with_chain(peer, |chain| chain.trusted().to_vec())
    }

    /// Follows `events` (the peer's own rotation events) from the keys trusted for `peer`.
    pub fn learn(
        &self,
        peer: &PeerConfig,
        events: &[Event],
    ) -> Result<FollowReport, RotationFetchError> {
        self.with_chain(peer, |chain| chain.follow_all(events))
    }
}

/// Reads every `evident.signing_key.rotated` event `peer` holds, oldest first, as stored events (the
/// page's `hash` and `seal` set aside: what authenticates a rotation is the statement's
/// signature, which the caller checks). An event that does not parse is skipped and logged.
pub async fn fetch_rotations(
    client: &PeerClient,
    peer: &PeerConfig,
) -> Result<Vec<Event>, RotationFetchError> {
    let malformed = |problem: String| RotationFetchError::Malformed {
        node: peer.node_id.clone(),
        problem,
    };
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!(
            "/api/v1/audit-log?action={SIGNING_ROTATION_ACTION}&order=asc&limit={PAGE_LIMIT}"
        );
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let page: Value = client
            .get(peer, &path)
            .await?
            .json()
            .map_err(|e| malformed(format!("not JSON: {e}")))?;
        let Some(found) = page.get("events").and_then(Value::as_array) else {
            return Err(malformed("no events array".into()));
        };
        for value in found {
            match stored_event(value) {
                Ok(event) => events.push(event),
                Err(problem) => tracing::warn!(peer = %peer.node_id, %problem,
                    "skipping a rotation event of a peer that does not parse"),
            }
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(events),
        }
    }
    Err(malformed(format!(
        "more than {} rotation events",
        PAGE_LIMIT * MAX_PAGES as u64
    )))
}

/// The stored event of one entry of an audit-log page (the event JSON plus `hash` and `seal`).
pub(crate) fn stored_event(value: &Value) -> Result<Event, String> {
    let mut object = value
        .as_object()
        .cloned()
        .ok_or_else(|| "not an object".to_owned())?;
    object.remove("hash");
    object.remove("seal");
    Event::from_json(&Value::Object(object)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_core::NoteSigner;

    #[test]
    fn an_entry_of_a_page_reads_back_as_its_stored_event() {
        let page_entry = serde_json::json!({
            "seq": 4,
            "id": "00000000-0000-0000-0000-000000000000",
            "recorded_at": "2026-01-01T00:00:00.000Z",
            "occurred_at": null,
            "node_id": "node-2",
            "tenant": "default",
            "actor": {"id": "evident", "kind": "system", "ip": null, "user_agent": null},
            "action": "evident.signing_key.rotated",
            "target": {"kind": "signing_key", "id": "k"},
            "outcome": "success",
            "severity": "notice",
            "context": {},
            "appended_by": "system",
            "hash": "00",
            "seal": "00",
        });
        let event = stored_event(&page_entry).unwrap();
        assert_eq!(
            (event.seq, event.action.as_str()),
            (4, SIGNING_ROTATION_ACTION)
        );
        assert!(stored_event(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn a_changed_configured_key_starts_the_chain_afresh() {
        let a = NoteSigner::from_seed("evident/node-2", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("evident/node-2", [2; 32]).unwrap();
        let mut peer = PeerConfig {
            node_id: "node-2".into(),
            url: "https://127.0.0.1:1".into(),
            public_key: a.verifier().to_vkey_string(),
        };
        let keys = PeerKeys::default();
        assert_eq!(keys.trusted(&peer).unwrap(), vec![a.verifier()]);
        peer.public_key = b.verifier().to_vkey_string();
        assert_eq!(keys.trusted(&peer).unwrap(), vec![b.verifier()]);
        peer.public_key = "nonsense".into();
        assert!(matches!(
            keys.trusted(&peer),
            Err(RotationFetchError::BadConfiguredKey { .. })
        ));
    }
}
