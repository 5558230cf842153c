//! The 32-byte SHA-256 digest type shared by the chain, the seal and the Merkle tree, with its
//! lowercase-hex text form (used in JSON, CSV and exports), and the fixed-length SHA-256
//! computations the verifier repeats per entry (Merkle leaf and node hashes of 65 bytes, the
//! HMAC's inner and outer hashes after a precomputed key block), padded here by hand (FIPS
//! 180-4 §5.1.1) and fed to the SHA-256 compression function as whole blocks, which spares the
//! general streaming hasher's buffering on the hot path. Same digests, fewer instructions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
use std::fmt;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// A text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 lowercase hex digits for a SHA-256 hash")]
pub struct BadHash;

impl Hash {
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Hash {
        use sha2::Digest;
        Hash(sha2::Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lowercase hex digits (uppercase is refused so that a hash has one
    /// text form only).
    pub fn from_hex(s: &str) -> Result<Hash, BadHash> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(BadHash);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadHash)?;
        Ok(Hash(out))
    }
}

/// One 64-byte SHA-256 input block.
type Block = GenericArray<u8, U64>;

/// The SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The SHA-256 chaining state after some whole blocks: what HMAC precomputes from its key.
#[derive(Clone, Copy)]
pub(crate) struct Sha256State([u32; 8]);

impl Sha256State {
    /// The state after absorbing the single block `block` from the initial value.
    pub(crate) fn after_block(block: &[u8; 64]) -> Sha256State {
        let mut state = SHA256_IV;
        sha2::compress256(&mut state, std::slice::from_ref(Block::from_slice(block)));
        Sha256State(state)
    }

    /// SHA-256 of (the one block absorbed so far ‖ `msg`): a 96-byte message, so the 32 bytes
    /// and the padding fill exactly one more block.
    pub(crate) fn finish_32(&self, msg: &[u8; 32]) -> Hash {
        let mut block = Block::default();
        block[..32].copy_from_slice(msg);
        block[32] = 0x80;
        block[56..].copy_from_slice(&(96u64 * 8).to_be_bytes());
        let mut state = self.0;
        sha2::compress256(&mut state, std::slice::from_ref(&block));
        state_to_hash(state)
    }
}

fn state_to_hash(state: [u32; 8]) -> Hash {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    Hash(out)
}

/// SHA-256(`prefix` ‖ `a` ‖ `b`): the RFC 6962 leaf hash of 64 bytes (`prefix` 0x00) and the
/// node hash (`prefix` 0x01). 65 bytes plus padding make exactly two blocks.
pub(crate) fn sha256_prefixed_pair(prefix: u8, a: &[u8; 32], b: &[u8; 32]) -> Hash {
    let mut blocks = [Block::default(), Block::default()];
    blocks[0][0] = prefix;
    blocks[0][1..33].copy_from_slice(a);
    blocks[0][33..].copy_from_slice(&b[..31]);
    blocks[1][0] = b[31];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    sha2::compress256(&mut state, &blocks);
    state_to_hash(state)
}

/// Constant-time equality of two digests: the difference is folded into one word without a
/// data-dependent branch, then compared once.
pub(crate) fn ct_eq(a: &Hash, b: &Hash) -> bool {
    use subtle::ConstantTimeEq;
    let mut diff = 0u64;
    for (x, y) in a.0.chunks_exact(8).zip(b.0.chunks_exact(8)) {
        let mut xa = [0u8; 8];
        let mut ya = [0u8; 8];
        xa.copy_from_slice(x);
        ya.copy_from_slice(y);
        diff |= u64::from_ne_bytes(xa) ^ u64::from_ne_bytes(ya);
    }
    diff.ct_eq(&0).into()
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn prefixed_pair_is_sha256_of_the_65_bytes() {
        for prefix in [0u8, 1, 0xff] {
            let a: [u8; 32] = std::array::from_fn(|i| i as u8);
            let b: [u8; 32] = std::array::from_fn(|i| 200 - i as u8);
            let mut joined = vec![prefix];
            joined.extend_from_slice(&a);
            joined.extend_from_slice(&b);
            assert_eq!(sha256_prefixed_pair(prefix, &a, &b), Hash::digest(&joined));
        }
    }

    #[test]
    fn one_block_then_32_bytes_is_sha256_of_the_96_bytes() {
        let block: [u8; 64] = std::array::from_fn(|i| (i * 7) as u8);
        let msg: [u8; 32] = std::array::from_fn(|i| (i * 13) as u8);
        let expected = Sha256::new()
            .chain_update(block)
            .chain_update(msg)
            .finalize();
        assert_eq!(
            Sha256State::after_block(&block).finish_32(&msg).0,
            <[u8; 32]>::from(expected)
        );
    }

    #[test]
    fn ct_eq_compares_every_byte() {
        let a = Hash::digest(b"x");
        assert!(ct_eq(&a, &a));
        for bit in 0..256 {
            let mut b = a;
            b.0[bit / 8] ^= 1 << (bit % 8);
            assert!(!ct_eq(&a, &b), "bit {bit}");
        }
    }
}
