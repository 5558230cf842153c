//! C2SP tlog-tiles for Evident's Merkle tree: tile coordinates and their object paths
//! (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), which tiles a tree of a given size
//! has, the bytes of hash tiles and entry bundles and their parsing, and a streaming rebuilder
//! that recomputes every tile and the root from the leaves (what a bucket verifier compares).
//!
//! Entry bundle entries are the 64 leaf-data bytes `entry hash ‖ seal`, so that a generic
//! tlog-tiles client hashing SHA-256(0x00 ‖ entry) gets exactly the tree's leaves; the events
//! themselves are in the per-period NDJSON bundles (`docs/FORMAT.md`, "Published buckets").

use crate::chain::{Seal, SealedEntry};
use crate::hash::Hash;
use crate::merkle::{CompactRange, NodeId, entry_leaf_hash, node_hash};

/// Tree levels per tile level: a tile of level `L` holds hashes of tree level `8 L`.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Bytes of one entry of an Evident entry bundle: entry hash ‖ seal.
pub const ENTRY_DATA_BYTES: usize = 64;

/// Errors from parsing tile paths and tile bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("not a tile path: {0}")]
    BadPath(String),
    #[error("hash tile of width {width} must be {expected} bytes, got {got}")]
    BadHashTileLength {
        width: u64,
        expected: usize,
        got: usize,
    },
    #[error("entry bundle is truncated inside entry {index}")]
    TruncatedBundle { index: u64 },
    #[error("entry bundle holds {got} entries, expected {expected}")]
    WrongEntryCount { got: u64, expected: u64 },
    #[error("entry {index} of the bundle is {got} bytes, expected {ENTRY_DATA_BYTES}")]
    BadEntryLength { index: u64, got: usize },
}

/// Which kind of tile: a hash tile of a tile level, or an entry bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// Hashes of tree level `8 * level`.
    Hash(u8),
    /// The entries (leaf data) of level-0 tile `index`.
    Entries,
}

/// One tile object: kind, index within its level, and width (1..=256; 256 is a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub kind: TileKind,
    pub index: u64,
    pub width: u64,
}

/// The C2SP index encoding: decimal in groups of three digits, zero-padded, every group but
/// the last prefixed with `x` (`1234067` → `x001/x234/067`).
pub fn encode_index(n: u64) -> String {
    let mut groups = Vec::new();
    let mut rest = n;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let last = groups.len().saturating_sub(1);
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i == last {
                format!("{g:03}")
            } else {
                format!("x{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn decode_index(parts: &[&str]) -> Option<u64> {
    let (last, front) = parts.split_last()?;
    let mut n: u64 = 0;
    for (i, part) in front.iter().enumerate() {
        let digits = part.strip_prefix('x')?;
        let g = parse_group(digits)?;
        // The first group carries no leading zero group ("x000/…" is not canonical).
        if i == 0 && g == 0 {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(g)?;
    }
    n.checked_mul(1000)?.checked_add(parse_group(last)?)
}

fn parse_group(s: &str) -> Option<u64> {
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl TileId {
    /// A full hash tile.
    pub fn hash(level: u8, index: u64, width: u64) -> TileId {
        TileId {
            kind: TileKind::Hash(level),
            index,
            width,
        }
    }

    /// An entry bundle.
    pub fn entries(index: u64, width: u64) -> TileId {
        TileId {
            kind: TileKind::Entries,
            index,
            width,
        }
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The object path, relative to the log's prefix.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hash(level) => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut path = format!("tile/{level}/{}", encode_index(self.index));
        if !self.is_full() {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a path made by [`TileId::path`] (and only the canonical form).
    pub fn parse_path(path: &str) -> Result<TileId, TileError> {
        let bad = || TileError::BadPath(path.to_owned());
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (level, rest) = rest.split_once('/').ok_or_else(bad)?;
        let kind = if level == "entries" {
            TileKind::Entries
        } else {
            if level.is_empty()
                || !level.bytes().all(|b| b.is_ascii_digit())
                || (level.len() > 1 && level.starts_with('0'))
            {
                return Err(bad());
            }
            let level: u8 = level.parse().map_err(|_| bad())?;
            if level > 63 / TILE_HEIGHT {
                return Err(bad());
            }
            TileKind::Hash(level)
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                if width.is_empty()
                    || !width.bytes().all(|b| b.is_ascii_digit())
                    || width.starts_with('0')
                {
                    return Err(bad());
                }
                let width: u64 = width.parse().map_err(|_| bad())?;
                if width >= TILE_WIDTH {
                    return Err(bad());
                }
                (index, width)
            }
            None => (rest, TILE_WIDTH),
        };
        let parts: Vec<&str> = index.split('/').collect();
        let index = decode_index(&parts).ok_or_else(bad)?;
        let tile = TileId { kind, index, width };
        if tile.path() != path {
            return Err(bad());
        }
        Ok(tile)
    }

    /// The tree level of the hashes in a hash tile (0 for an entry bundle: its leaves).
    pub fn tree_level(&self) -> u8 {
        match self.kind {
            TileKind::Hash(level) => level * TILE_HEIGHT,
            TileKind::Entries => 0,
        }
    }

    /// The tree nodes whose hashes the tile holds, in order (the leaves, for an entry bundle).
    pub fn node_ids(&self) -> Vec<NodeId> {
        let level = self.tree_level();
        let first = self.index.saturating_mul(TILE_WIDTH);
        (0..self.width)
            .map(|i| NodeId {
                level,
                index: first.saturating_add(i),
            })
            .collect()
    }

    /// The leaves `[start, end)` the tile's hashes cover (saturating at `u64::MAX`).
    pub fn leaf_range(&self) -> (u64, u64) {
        let per_hash = 1u64
            .checked_shl(u32::from(self.tree_level()))
            .unwrap_or(u64::MAX);
        let start = self
            .index
            .saturating_mul(TILE_WIDTH)
            .saturating_mul(per_hash);
        (
            start,
            start.saturating_add(self.width.saturating_mul(per_hash)),
        )
    }
}

/// The hash tiles of a tree of `size` leaves, level 0 first, each level by index: full tiles,
/// then the level's partial tile if it has one. Level `L` has `size >> 8L` hashes.
pub fn hash_tiles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    let mut level: u8 = 0;
    let mut count = size;
    while count > 0 {
        push_level(&mut out, TileKind::Hash(level), count);
        level += 1;
        count >>= TILE_HEIGHT;
    }
    out
}

/// The entry bundles of a log of `size` entries (full ones, then the partial one).
pub fn entry_bundles(size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    push_level(&mut out, TileKind::Entries, size);
    out
}

fn push_level(out: &mut Vec<TileId>, kind: TileKind, count: u64) {
    for index in 0..count / TILE_WIDTH {
        out.push(TileId {
            kind,
            index,
            width: TILE_WIDTH,
        });
    }
    if count % TILE_WIDTH > 0 {
        out.push(TileId {
            kind,
            index: count / TILE_WIDTH,
            width: count % TILE_WIDTH,
        });
    }
}

/// Every tile object (entry bundles and hash tiles) of a log of `size` entries.
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    let mut out = entry_bundles(size);
    out.extend(hash_tiles(size));
    out
}

/// The tiles a log of `new` entries has that one of `old` entries has not (what growing
/// the bucket from `old` to `new` writes).
pub fn new_tiles(old: u64, new: u64) -> Vec<TileId> {
    let before: std::collections::HashSet<TileId> = tiles_for_size(old).into_iter().collect();
    tiles_for_size(new)
        .into_iter()
        .filter(|t| !before.contains(t))
        .collect()
}

/// A hash tile's bytes: the 32-byte hashes, concatenated.
pub fn hash_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Parses a hash tile of `width` hashes.
pub fn parse_hash_tile(bytes: &[u8], width: u64) -> Result<Vec<Hash>, TileError> {
    let expected = usize::try_from(width)
        .unwrap_or(usize::MAX)
        .saturating_mul(32);
    if bytes.len() != expected {
        return Err(TileError::BadHashTileLength {
            width,
            expected,
            got: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            Hash(h)
        })
        .collect())
}

/// The entry of an Evident entry bundle: entry hash ‖ seal (the Merkle leaf data).
pub fn entry_data(hash: &Hash, seal: &Seal) -> [u8; ENTRY_DATA_BYTES] {
    let mut out = [0u8; ENTRY_DATA_BYTES];
    out[..32].copy_from_slice(&hash.0);
    out[32..].copy_from_slice(&seal.0);
    out
}

/// An entry bundle's bytes: each entry as a big-endian uint16 length and its data
/// (`entry hash ‖ seal`, so every length is 64).
pub fn entry_bundle(entries: &[SealedEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * (2 + ENTRY_DATA_BYTES));
    for entry in entries {
        out.extend_from_slice(&(ENTRY_DATA_BYTES as u16).to_be_bytes());
        out.extend_from_slice(&entry_data(&entry.hash, &entry.seal));
    }
    out
}

/// Splits any C2SP entry bundle into its entries' data (no assumption on their content).
pub fn parse_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let index = out.len() as u64;
        let (len, after) = rest
            .split_first_chunk::<2>()
            .ok_or(TileError::TruncatedBundle { index })?;
        let len = usize::from(u16::from_be_bytes(*len));
        if after.len() < len {
            return Err(TileError::TruncatedBundle { index });
        }
        let (data, after) = after.split_at(len);
        out.push(data);
        rest = after;
    }
    Ok(out)
}

/// Parses an Evident entry bundle of `width` entries into `(entry hash, seal)` pairs.
pub fn parse_evident_entry_bundle(
    bytes: &[u8],
    width: u64,
) -> Result<Vec<(Hash, Seal)>, TileError> {
    let entries = parse_entry_bundle(bytes)?;
    if entries.len() as u64 != width {
        return Err(TileError::WrongEntryCount {
            got: entries.len() as u64,
            expected: width,
        });
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let data: &[u8; ENTRY_DATA_BYTES] =
                (*data).try_into().map_err(|_| TileError::BadEntryLength {
                    index: i as u64,
                    got: data.len(),
                })?;
            let mut hash = [0u8; 32];
            let mut seal = [0u8; 32];
            hash.copy_from_slice(&data[..32]);
            seal.copy_from_slice(&data[32..]);
            Ok((Hash(hash), Hash(seal)))
        })
        .collect()
}

/// The hash of the perfect subtree over 2^k adjacent hashes (a full tile's 256 hashes give
/// the next tile level's hash); `None` unless `hashes.len()` is a power of two.
pub fn perfect_root(hashes: &[Hash]) -> Option<Hash> {
    if hashes.is_empty() || !hashes.len().is_power_of_two() {
        return None;
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.first().copied()
}

/// Recomputes a log's tiles and root from its leaves, in order, in memory proportional to
/// one tile per level: what a verifier compares a bucket's tiles against, and what a writer
/// can render them with.
#[derive(Debug, Clone, Default)]
pub struct TileRebuilder {
    /// The hashes of the open (not yet full) tile of each level.
    open: Vec<Vec<Hash>>,
    tree: CompactRange,
}

impl TileRebuilder {
    pub fn new() -> TileRebuilder {
        TileRebuilder::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The root of the tree of the leaves so far.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Adds the next leaf; returns the full hash tiles it completes, lowest level first, with
    /// their hashes.
    pub fn push_leaf(&mut self, leaf: Hash) -> Vec<(TileId, Vec<Hash>)> {
        let mut completed = Vec::new();
        self.tree.append_leaf(leaf, &mut Vec::new());
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.open.len() <= level {
                self.open.push(Vec::new());
            }
            let open = &mut self.open[level];
            open.push(hash);
            if open.len() as u64 != TILE_WIDTH {
                break;
            }
            let hashes = std::mem::take(open);
            let Some(root) = perfect_root(&hashes) else {
                break;
            };
            let index = (self.tree.size() - 1) >> (TILE_HEIGHT as usize * (level + 1));
            completed.push((TileId::hash(level as u8, index, TILE_WIDTH), hashes));
            hash = root;
            level += 1;
        }
        completed
    }

    /// Adds the leaf of an entry.
    pub fn push_entry(&mut self, hash: &Hash, seal: &Seal) -> Vec<(TileId, Vec<Hash>)> {
        self.push_leaf(entry_leaf_hash(hash, seal))
    }

    /// The partial hash tiles of the tree so far, lowest level first, with their hashes.
    pub fn partial_tiles(&self) -> Vec<(TileId, Vec<Hash>)> {
        let size = self.tree.size();
        self.open
            .iter()
            .enumerate()
            .filter(|(_, hashes)| !hashes.is_empty())
            .map(|(level, hashes)| {
                let index = size >> (TILE_HEIGHT as usize * (level + 1));
                (
                    TileId::hash(level as u8, index, hashes.len() as u64),
                    hashes.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{self, leaf_hash};

    #[test]
    fn index_encoding_follows_the_spec_examples() {
        // C2SP tlog-tiles: "the index 1234067 is encoded as x001/x234/067".
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(7), "007");
        assert_eq!(encode_index(999), "999");
        assert_eq!(encode_index(1000), "x001/000");
        assert_eq!(encode_index(u64::MAX), "x018/x446/x744/x073/x709/x551/615");
        assert_eq!(
            TileId::hash(0, 1_234_067, 256).path(),
            "tile/0/x001/x234/067"
        );
        assert_eq!(TileId::hash(1, 1, 7).path(), "tile/1/001.p/7");
        assert_eq!(
            TileId::entries(1000, 255).path(),
            "tile/entries/x001/000.p/255"
        );
    }

    #[test]
    fn paths_parse_back_and_non_canonical_ones_are_refused() {
        for tile in [
            TileId::hash(0, 0, 256),
            TileId::hash(2, 1_234_067, 3),
            TileId::entries(u64::MAX, 1),
            TileId::entries(5, 256),
        ] {
            assert_eq!(TileId::parse_path(&tile.path()), Ok(tile));
        }
        for bad in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/00/001",
            "tile/0/001.p/256",
            "tile/0/001.p/0",
            "tile/0/001.p/07",
            "tile/entries/001/",
            "tiles/0/001",
            "tile/0/x1/001",
            "tile/9/001",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
        ] {
            assert!(TileId::parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tiles_of_a_size() {
        assert!(tiles_for_size(0).is_empty());
        assert_eq!(hash_tiles(1), vec![TileId::hash(0, 0, 1)]);
        assert_eq!(
            hash_tiles(256),
            vec![TileId::hash(0, 0, 256), TileId::hash(1, 0, 1)]
        );
        let size = 256 * 256 * 2 + 256 * 3 + 5;
        let tiles = hash_tiles(size);
        assert_eq!(tiles.len(), (515 + 1) + (2 + 1) + 1);
        assert!(tiles.contains(&TileId::hash(0, 515, 5)));
        assert!(tiles.contains(&TileId::hash(1, 1, 256)));
        assert!(tiles.contains(&TileId::hash(1, 2, 3)));
        assert!(tiles.contains(&TileId::hash(2, 0, 2)));
        assert_eq!(
            new_tiles(255, 257),
            vec![
                TileId::entries(0, 256),
                TileId::entries(1, 1),
                TileId::hash(0, 0, 256),
                TileId::hash(0, 1, 1),
                TileId::hash(1, 0, 1),
            ]
        );
    }

    #[test]
    fn rebuilder_matches_the_tree_and_the_tile_definitions() {
        let leaves: Vec<Hash> = (0..256u32 * 256 + 300)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut rebuilder = TileRebuilder::new();
        let mut full = Vec::new();
        for leaf in &leaves {
            full.extend(rebuilder.push_leaf(*leaf));
        }
        let mut all = full.clone();
        all.extend(rebuilder.partial_tiles());
        let mut ids: Vec<TileId> = all.iter().map(|(id, _)| *id).collect();
        ids.sort();
        let mut expected = hash_tiles(leaves.len() as u64);
        expected.sort();
        assert_eq!(ids, expected);
        // A level-1 hash is the root of 256 leaves; a level-2 partial tile is empty here.
        let (_, level1) = all
            .iter()
            .find(|(id, _)| *id == TileId::hash(1, 0, 256))
            .cloned()
            .unwrap();
        assert_eq!(level1.len(), 256);
        let mut tree = CompactRange::new();
        for leaf in &leaves[..256] {
            tree.append_leaf(*leaf, &mut Vec::new());
        }
        assert_eq!(level1[0], tree.root());
        assert!(all.contains(&(TileId::hash(2, 0, 1), vec![perfect_root(&level1).unwrap()])));
        let mut whole = CompactRange::new();
        for leaf in &leaves {
            whole.append_leaf(*leaf, &mut Vec::new());
        }
        assert_eq!(rebuilder.root(), whole.root());
        assert_eq!(merkle::empty_root(), TileRebuilder::new().root());
    }

    #[test]
    fn tile_bytes_round_trip() {
        let hashes: Vec<Hash> = (0..3u8).map(|i| Hash::digest(&[i])).collect();
        let bytes = hash_tile(&hashes);
        assert_eq!(bytes.len(), 96);
        assert_eq!(parse_hash_tile(&bytes, 3), Ok(hashes.clone()));
        assert!(parse_hash_tile(&bytes, 2).is_err());
        assert!(parse_hash_tile(&bytes[..95], 3).is_err());

        let mut bundle = Vec::new();
        for (h, s) in hashes.iter().zip(hashes.iter().rev()) {
            bundle.extend_from_slice(&[0, 64]);
            bundle.extend_from_slice(&entry_data(h, s));
        }
        let parsed = parse_evident_entry_bundle(&bundle, 3).unwrap();
        assert_eq!(parsed[1], (hashes[1], hashes[1]));
        assert_eq!(
            leaf_hash(parse_entry_bundle(&bundle).unwrap()[0]),
            entry_leaf_hash(&hashes[0], &hashes[2])
        );
        assert!(parse_evident_entry_bundle(&bundle, 4).is_err());
        assert!(parse_entry_bundle(&bundle[..bundle.len() - 1]).is_err());
        assert!(parse_evident_entry_bundle(&[0, 1, 7], 1).is_err());
    }
}
