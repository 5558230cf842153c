//! The publisher's view of the bucket layout: the keys and bytes of the objects it writes,
//! each one call into the format the integrity core defines (`evident_core::tiles` for the
//! C2SP tlog-tiles objects, `evident_core::digest` for the per-period digests). Nothing here
//! encodes anything itself.

use evident_core::{Hash, SealedEntry};

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;

/// The key of the checkpoint object.
pub const CHECKPOINT_KEY: &str = "checkpoint";

/// `tile/<L>/<N>` (full, `width == 256`) or `tile/<L>/<N>.p/<W>`.
pub fn hash_tile_key(level: u8, index: u64, width: u64) -> String {
    shim::tile_path(&format!("{level}"), index, width)
}

/// `tile/entries/<N>[.p/<W>]`.
pub fn entry_bundle_key(index: u64, width: u64) -> String {
    shim::tile_path("entries", index, width)
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
    shim::hash_tile(hashes)
}

/// An entry bundle's bytes: the entries, in order.
pub fn entry_bundle(entries: &[SealedEntry]) -> Vec<u8> {
    shim::entry_bundle(entries)
}

/// The keys of one period's objects (`start` in ms since the epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodKeys {
    pub bundle: String,
    pub csv: String,
    pub digest: String,
}

pub fn period_keys(start: i64) -> PeriodKeys {
    shim::period_keys(start)
}

/// What a period's digest says.
#[derive(Debug, Clone)]
pub struct DigestInput<'a> {
    pub origin: &'a str,
    pub period_start: i64,
    pub period_end: i64,
    pub from_seq: u64,
    pub to_seq: u64,
    /// The checkpoint (signed note) at `to_seq` the bundle is tied to.
    pub checkpoint: &'a str,
    /// `(key, bytes)` of every object of the period.
    pub objects: Vec<(&'a str, &'a [u8])>,
    /// The previous period's digest: key and SHA-256 of its bytes.
    pub previous: Option<(&'a str, Hash)>,
}

/// A period's signed digest object.
pub fn digest(
    input: &DigestInput<'_>,
    signer: &evident_core::NoteSigner,
) -> Result<Vec<u8>, String> {
    shim::digest(input, signer)
}

/// Stands in for `evident_core::tiles` / `digest` until they land on this branch; replaced by
/// calls into them.
mod shim {
    use super::*;

    pub fn tile_path(level: &str, index: u64, width: u64) -> String {
        let mut groups = Vec::new();
        let mut n = index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        groups.reverse();
        let last = groups.len() - 1;
        let parts: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                if i == last {
                    format!("{g:03}")
                } else {
                    format!("x{g:03}")
                }
            })
            .collect();
        let mut path = format!("tile/{level}/{}", parts.join("/"));
        if width < TILE_WIDTH {
            path.push_str(&format!(".p/{width}"));
        }
        path
    }

    pub fn hash_tile(hashes: &[Hash]) -> Vec<u8> {
        hashes.iter().flat_map(|h| h.0).collect()
    }

    pub fn entry_bundle(entries: &[SealedEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            let line = evident_core::export::entry_line(&evident_core::export::ExportEntry {
                entry: entry.clone(),
                run_start: None,
                run_end: None,
            });
            let line = line.trim_end_matches('\n').as_bytes();
            let len = u16::try_from(line.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(line);
        }
        out
    }

    pub fn period_keys(start: i64) -> PeriodKeys {
        let name = evident_core::event::format_rfc3339_millis(start);
        PeriodKeys {
            bundle: format!("period/{name}/events.ndjson"),
            csv: format!("period/{name}/events.csv"),
            digest: format!("period/{name}/digest"),
        }
    }

    pub fn digest(
        input: &DigestInput<'_>,
        signer: &evident_core::NoteSigner,
    ) -> Result<Vec<u8>, String> {
        let mut text = format!(
            "evident-digest/v1\n{}\n{} {}\n{} {}\n",
            input.origin, input.period_start, input.period_end, input.from_seq, input.to_seq
        );
        for (key, bytes) in &input.objects {
            text.push_str(&format!("{} {}\n", Hash::digest(bytes).to_hex(), key));
        }
        if let Some((key, hash)) = input.previous {
            text.push_str(&format!("previous {} {key}\n", hash.to_hex()));
        }
        let _ = input.checkpoint;
        signer
            .sign(&text)
            .map(String::into_bytes)
            .map_err(|e| e.to_string())
    }
}
