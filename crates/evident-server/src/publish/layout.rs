//! The publisher's view of the bucket layout: the keys and bytes of the objects it writes,
//! each one call into the format the integrity core defines (`evident_core::tiles` for the
//! C2SP tlog-tiles objects, `evident_core::digest` for the per-period digests and the object
//! keys). Nothing here encodes anything itself.

use evident_core::digest::{self, Digest};
use evident_core::tiles::TileId;
use evident_core::{Checkpoint, Hash, NoteSigner, SealedEntry};

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = evident_core::tiles::TILE_WIDTH;

/// The key of the checkpoint object.
pub const CHECKPOINT_KEY: &str = digest::layout::CHECKPOINT;

/// `tile/<L>/<N>` (full, `width == 256`) or `tile/<L>/<N>.p/<W>`.
pub fn hash_tile_key(level: u8, index: u64, width: u64) -> String {
    TileId::hash(level, index, width).path()
}

/// `tile/entries/<N>[.p/<W>]`.
pub fn entry_bundle_key(index: u64, width: u64) -> String {
    TileId::entries(index, width).path()
}

/// The prefix under which the partial versions of a hash tile live (`tile/<L>/<N>.p/`).
pub fn hash_tile_partials(level: u8, index: u64) -> String {
    format!("{}.p/", hash_tile_key(level, index, TILE_WIDTH))
}

/// The prefix under which the partial versions of an entry bundle live.
pub fn entry_bundle_partials(index: u64) -> String {
    format!("{}.p/", entry_bundle_key(index, TILE_WIDTH))
}

/// A hash tile's bytes: the hashes, in order.
pub fn hash_tile(hashes: &[Hash]) -> Vec<u8> {
    evident_core::tiles::hash_tile(hashes)
}

/// An entry bundle's bytes: the entries, in order.
pub fn entry_bundle(entries: &[SealedEntry]) -> Vec<u8> {
    evident_core::tiles::entry_bundle(entries)
}

pub use digest::layout::period_keys;

/// What a period's digest says.
#[derive(Debug, Clone)]
pub struct DigestInput<'a> {
    pub period_start: i64,
    pub period_end: i64,
    pub from_seq: u64,
    pub to_seq: u64,
    /// The checkpoint at `to_seq` the bundle is tied to.
    pub checkpoint: &'a Checkpoint,
    /// `(key, bytes)` of every object of the period.
    pub objects: Vec<(&'a str, &'a [u8])>,
    /// The previous period's digest: key and SHA-256 of its bytes.
    pub previous: Option<(&'a str, Hash)>,
}

/// A period's signed digest object, signed by each of `signers` (the node's active keys:
/// both during a signing-key rotation's transition, old key first).
pub fn digest(input: &DigestInput<'_>, signers: &[NoteSigner]) -> Result<Vec<u8>, String> {
    let Some((first, rest)) = signers.split_first() else {
        return Err("no signing key".to_owned());
    };
    let mut note = Digest::new(
        input.checkpoint,
        (input.period_start, input.period_end),
        (input.from_seq, input.to_seq),
        &input.objects,
        input.previous,
    )
    .sign(first)
    .map_err(|e| e.to_string())?;
    for signer in rest {
        note = evident_core::note::add_signature(&note, signer).map_err(|e| e.to_string())?;
    }
    Ok(note.into_bytes())
}
