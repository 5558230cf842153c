//! The hash chain and the per-node HMAC seal, and [`ChainHead`], the O(log n) state a sequencer
//! keeps to append the next entry (next sequence number, last hash, Merkle frontier).
//!
//! Entry `seq` has hash `SHA-256(prev ‖ canonical bytes)`, where `prev` is the hash of entry
//! `seq − 1` (32 zero bytes for entry 0) and the canonical bytes are
//! [`crate::canonical::encode`]'s. Its seal is `HMAC-SHA256(node secret, hash)`, and its Merkle
//! leaf is the RFC 6962 leaf hash of `hash ‖ seal`.

use crate::event::{Event, EventInput, Millis};
use crate::hash::{Hash, Sha256State};
use crate::merkle::{CompactRange, NodeId};
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// The predecessor hash of entry 0.
pub const GENESIS_PREV_HASH: Hash = Hash::ZERO;

/// Shortest accepted seal secret, in bytes (the HMAC-SHA256 output size).
pub const MIN_SEAL_SECRET_BYTES: usize = 32;

/// An HMAC-SHA256 seal over an entry hash.
pub type Seal = Hash;

/// entry hash = SHA-256(prev_hash ‖ canonical bytes).
pub fn entry_hash(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(canonical);
    Hash(h.finalize().into())
}

/// The entry hash of `event` after `prev`, encoding into `buf` (cleared first) so that a
/// verifier walking millions of entries reuses one buffer.
pub fn recompute_hash(prev: &Hash, event: &Event, buf: &mut Vec<u8>) -> Hash {
    buf.clear();
    crate::canonical::encode_into(event, buf);
    entry_hash(prev, buf)
}

/// HMAC's block size for SHA-256 (RFC 2104 `B`).
const HMAC_BLOCK: usize = 64;

/// A node's HMAC secret, keyed once: the SHA-256 states after the inner and outer key blocks
/// (RFC 2104's `K ⊕ ipad` and `K ⊕ opad`) are computed when the key is made, so a seal costs
/// exactly two compression-function calls and copies 64 bytes of state, nothing else.
#[derive(Clone)]
pub struct SealKey {
    inner: Sha256State,
    outer: Sha256State,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<secret>)")
    }
}

/// A seal secret shorter than 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seal secret must be at least 32 bytes, got {0}")]
pub struct WeakSealSecret(pub usize);

impl SealKey {
    pub fn new(secret: &[u8]) -> Result<SealKey, WeakSealSecret> {
        if secret.len() < MIN_SEAL_SECRET_BYTES {
            return Err(WeakSealSecret(secret.len()));
        }
        // RFC 2104: a key longer than the block is hashed first; the key is zero-padded to one
        // block and XORed with the pads.
        let hashed;
        let key: &[u8] = if secret.len() > HMAC_BLOCK {
            hashed = Sha256::digest(secret);
            &hashed
        } else {
            secret
        };
        let mut ipad = [0x36u8; HMAC_BLOCK];
        let mut opad = [0x5cu8; HMAC_BLOCK];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
            *i ^= k;
            *o ^= k;
        }
        Ok(SealKey {
            inner: Sha256State::after_block(&ipad),
            outer: Sha256State::after_block(&opad),
        })
    }

    /// HMAC-SHA256(secret, entry hash).
    pub fn seal(&self, entry_hash: &Hash) -> Seal {
        let inner = self.inner.finish_32(&entry_hash.0);
        self.outer.finish_32(&inner.0)
    }

    /// Constant-time check of a seal.
    pub fn check(&self, entry_hash: &Hash, seal: &Seal) -> bool {
        crate::hash::ct_eq(&self.seal(entry_hash), seal)
    }
}

/// An event with its chain hash and seal: one row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    pub event: Event,
    pub hash: Hash,
    pub seal: Seal,
}

impl SealedEntry {
    /// The Merkle leaf data: entry hash ‖ seal (64 bytes).
    pub fn leaf_data(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.hash.0);
        out[32..].copy_from_slice(&self.seal.0);
        out
    }
    /// RFC 6962 leaf hash of [`Self::leaf_data`]: SHA-256(0x00 ‖ hash ‖ seal).
    pub fn leaf_hash(&self) -> Hash {
        crate::merkle::entry_leaf_hash(&self.hash, &self.seal)
    }
}

/// What a sequencer needs to append the next entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub last_hash: Hash,
    pub tree: CompactRange,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> ChainHead {
        ChainHead {
            next_seq: 0,
            last_hash: GENESIS_PREV_HASH,
            tree: CompactRange::new(),
        }
    }

    /// Sequences one event: assigns the next sequence number, records who appended it (an API
    /// key id or [`crate::event::APPENDED_BY_SYSTEM`]; the entry is encoding version 2), hashes,
    /// seals, appends the leaf to the tree, and pushes every Merkle node this append completed
    /// onto `completed_nodes` (for the storage layer to keep).
    // Each argument is one thing the caller assigns; bundling them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        id: Uuid,
        recorded_at: Millis,
        node_id: &str,
        appended_by: &str,
        input: EventInput,
        key: &SealKey,
        completed_nodes: &mut Vec<(NodeId, Hash)>,
    ) -> SealedEntry {
        let event = Event::new(
            self.next_seq,
            id,
            recorded_at,
            node_id.to_owned(),
            appended_by.to_owned(),
            input,
        );
        self.push(event, key, completed_nodes)
    }

    /// Sequences one event in entry encoding version 1 (no `appended_by`), as builds before
    /// version 2 wrote every entry. The node never calls this; it exists so that tests and
    /// tools can build the logs those builds left behind and show that they still verify.
    pub fn append_v1(
        &mut self,
        id: Uuid,
        recorded_at: Millis,
        node_id: &str,
        input: EventInput,
        key: &SealKey,
        completed_nodes: &mut Vec<(NodeId, Hash)>,
    ) -> SealedEntry {
        let mut event = Event::new(
            self.next_seq,
            id,
            recorded_at,
            node_id.to_owned(),
            String::new(),
            input,
        );
        event.appended_by = None;
        self.push(event, key, completed_nodes)
    }

    /// Hashes, seals and appends `event` (numbered `next_seq`) to the chain and the tree.
    fn push(
        &mut self,
        event: Event,
        key: &SealKey,
        completed_nodes: &mut Vec<(NodeId, Hash)>,
    ) -> SealedEntry {
        let mut buf = Vec::new();
        let hash = recompute_hash(&self.last_hash, &event, &mut buf);
        let seal = key.seal(&hash);
        let entry = SealedEntry { event, hash, seal };
        self.tree.append_leaf(entry.leaf_hash(), completed_nodes);
        self.next_seq += 1;
        self.last_hash = hash;
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC-SHA256 written out from RFC 2104, independently of the `hmac` crate.
    fn reference_hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    #[test]
    fn rfc4231_case_6_long_key() {
        // RFC 4231 test case 6: 131-byte key of 0xaa.
        let key = [0xaau8; 131];
        let msg = b"Test Using Larger Than Block-Size Key - Hash Key First";
        assert_eq!(
            hex::encode(reference_hmac(&key, msg)),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn seal_is_hmac_sha256_of_the_entry_hash() {
        for secret in [vec![7u8; 32], (0u8..=200).collect::<Vec<u8>>()] {
            let key = SealKey::new(&secret).unwrap();
            let h = Hash::digest(b"some entry");
            assert_eq!(key.seal(&h).0, reference_hmac(&secret, &h.0));
        }
    }

    #[test]
    fn seal_matches_the_hmac_crate() {
        use hmac::{Hmac, Mac};
        // Keys of one block, of more than one (hashed first, as RFC 4231 cases 6 and 7 are),
        // and of exactly the minimum.
        for secret in [
            vec![0xaau8; 131],
            vec![1u8; 32],
            vec![2u8; 64],
            vec![3u8; 65],
        ] {
            let key = SealKey::new(&secret).unwrap();
            for msg in [Hash::ZERO, Hash::digest(b"entry")] {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
                mac.update(&msg.0);
                let expected: [u8; 32] = mac.finalize().into_bytes().into();
                assert_eq!(key.seal(&msg).0, expected);
            }
        }
    }

    #[test]
    fn leaf_hash_is_rfc6962_of_hash_then_seal() {
        let event = crate::event::Event::new(
            0,
            Uuid::from_u128(1),
            0,
            "n".to_owned(),
            "evk_0123456789ab".to_owned(),
            crate::event::EventInput::from_json(&serde_json::json!({
                "actor": {"id": "a", "kind": "user"},
                "action": "x",
                "target": {"kind": "k", "id": "i"},
                "outcome": "success",
                "severity": "info"
            }))
            .unwrap(),
        );
        let entry = SealedEntry {
            event,
            hash: Hash([3; 32]),
            seal: Hash([4; 32]),
        };
        assert_eq!(
            entry.leaf_hash(),
            crate::merkle::leaf_hash(&entry.leaf_data())
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(SealKey::new(&[1u8; 31]).unwrap_err(), WeakSealSecret(31));
        assert_eq!(SealKey::new(&[]).unwrap_err(), WeakSealSecret(0));
        assert!(SealKey::new(&[1u8; 32]).is_ok());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = SealKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let text = format!("{key:?}");
        assert!(!text.contains("0123456789"), "{text}");
        assert_eq!(text, "SealKey(<secret>)");
    }

    #[test]
    fn entry_hash_is_sha256_of_prev_then_bytes() {
        let prev = Hash([0x11; 32]);
        let mut joined = vec![0x11u8; 32];
        joined.extend_from_slice(b"payload");
        assert_eq!(entry_hash(&prev, b"payload"), Hash::digest(&joined));
        // SHA-256 of 32 zero bytes: the hash of an (impossible) empty entry after genesis.
        assert_eq!(
            entry_hash(&GENESIS_PREV_HASH, b"").to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn check_fails_on_every_single_bit_flip() {
        let key = SealKey::new(&[42u8; 32]).unwrap();
        let h = Hash::digest(b"entry");
        let seal = key.seal(&h);
        assert!(key.check(&h, &seal));
        for bit in 0..256 {
            let mut h2 = h;
            h2.0[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.check(&h2, &seal), "hash bit {bit}");
            let mut s2 = seal;
            s2.0[bit / 8] ^= 1 << (bit % 8);
            assert!(!key.check(&h, &s2), "seal bit {bit}");
        }
        let other = SealKey::new(&[43u8; 32]).unwrap();
        assert!(!other.check(&h, &seal));
    }
}
