//! `evident verify --dir DIR` / `--bucket s3://…`: checks a published bucket (or a downloaded
//! copy of one) from its objects alone, through the publisher's `Bucket` trait (a directory or
//! S3 via `object_store`), every decision taken by the core's `tiles` and `digest` formats:
//! the checkpoint's signature, every entry bundle and hash tile against the tree recomputed
//! from the entries, the root against the checkpoint (and a trusted one held elsewhere), and
//! the chain of period digests with the objects they name. The verdict names the first bad
//! object and the seq it concerns.

use crate::output::{VerificationFailed, count_progress};
use evident_core::Checkpoint;
use evident_core::digest::{Digest, layout};
use evident_core::export::ExportVerifier;
use evident_core::hash::Hash;
use evident_core::merkle::entry_leaf_hash;
use evident_core::note::NoteVerifier;
use evident_core::tiles::{self, TileId, TileRebuilder};
use evident_server::publish::Bucket;
use std::collections::{BTreeMap, HashSet};

/// The first problem found: which object, which seq, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketProblem {
    pub object: String,
    pub seq: Option<u64>,
    pub reason: String,
}

impl BucketProblem {
    fn new(object: &str, seq: Option<u64>, reason: impl Into<String>) -> BucketProblem {
        BucketProblem {
            object: object.to_owned(),
            seq,
            reason: reason.into(),
        }
    }

    /// The verdict line, in `evident verify`'s style.
    pub fn verdict(&self) -> String {
        match self.seq {
            Some(seq) => format!("FAILED at seq {seq}: {}: {}", self.object, self.reason),
            None => format!("FAILED: {}: {}", self.object, self.reason),
        }
    }
}

/// What an intact bucket holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketReport {
    pub size: u64,
    pub root: Hash,
    pub tiles: u64,
    pub entry_bundles: u64,
    pub digests: u64,
    pub period_objects: u64,
    /// Tile objects the checkpoint does not cover (a publication in progress), not checked.
    pub unchecked_tiles: u64,
}

type Outcome<T> = Result<T, BucketProblem>;

async fn fetch(bucket: &dyn Bucket, key: &str, seq: Option<u64>) -> Outcome<Vec<u8>> {
    match bucket.get(key).await {
        Ok(Some((bytes, _))) => Ok(bytes.to_vec()),
        Ok(None) => Err(BucketProblem::new(key, seq, "missing")),
        Err(e) => Err(BucketProblem::new(key, seq, format!("cannot read: {e}"))),
    }
}

fn utf8(key: &str, seq: Option<u64>, bytes: Vec<u8>) -> Outcome<String> {
    String::from_utf8(bytes).map_err(|_| BucketProblem::new(key, seq, "not UTF-8 text"))
}

/// One verified digest with the bytes it was read from.
struct DigestRead {
    key: String,
    digest: Digest,
}

/// Reads and checks the chain of digests (signatures, order, links, contiguity).
async fn read_digests(
    bucket: &dyn Bucket,
    verifier: &NoteVerifier,
    size: u64,
) -> Outcome<Vec<DigestRead>> {
    let listed = bucket.list(layout::DIGESTS_PREFIX).await.map_err(|e| {
        BucketProblem::new(layout::DIGESTS_PREFIX, None, format!("cannot list: {e}"))
    })?;
    let mut keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
    keys.sort();
    let mut out: Vec<DigestRead> = Vec::new();
    let mut previous: Option<(String, Hash, Digest)> = None;
    for key in keys {
        let expected_from = previous.as_ref().map_or(0, |(_, _, d)| d.to_seq);
        let bytes = fetch(bucket, &key, Some(expected_from)).await?;
        let sha = Hash::digest(&bytes);
        let text = utf8(&key, Some(expected_from), bytes)?;
        let digest = Digest::open(&text, verifier)
            .map_err(|e| BucketProblem::new(&key, Some(expected_from), e.to_string()))?;
        let at = Some(digest.from_seq);
        if layout::period_keys(digest.period_start).digest != key {
            return Err(BucketProblem::new(
                &key,
                at,
                format!(
                    "holds the digest of the period starting {}, which belongs at {}",
                    evident_core::event::format_rfc3339_millis(digest.period_start),
                    layout::period_keys(digest.period_start).digest
                ),
            ));
        }
        if digest.from_seq != expected_from {
            return Err(BucketProblem::new(
                &key,
                Some(expected_from),
                format!(
                    "covers seqs from {}, but the previous period ends at {expected_from}",
                    digest.from_seq
                ),
            ));
        }
        let expected_link = previous.as_ref().map(|(k, h, _)| (k.clone(), *h));
        if digest.previous != expected_link {
            let said = digest
                .previous
                .as_ref()
                .map_or("none".to_owned(), |(k, h)| format!("{k} with SHA-256 {h}"));
            let is = expected_link
                .as_ref()
                .map_or("none".to_owned(), |(k, h)| format!("{k} with SHA-256 {h}"));
            return Err(BucketProblem::new(
                &key,
                at,
                format!("names the previous digest {said}, but it is {is}: the chain is broken"),
            ));
        }
        if let Some((_, _, p)) = &previous
            && digest.period_start < p.period_end
        {
            return Err(BucketProblem::new(
                &key,
                at,
                "period overlaps the previous one",
            ));
        }
        if digest.checkpoint_size > size {
            return Err(BucketProblem::new(
                &key,
                at,
                format!(
                    "is tied to a checkpoint of size {}, beyond the bucket's checkpoint ({size}): \
                     the bucket's checkpoint was rolled back",
                    digest.checkpoint_size
                ),
            ));
        }
        previous = Some((key.clone(), sha, digest.clone()));
        out.push(DigestRead { key, digest });
    }
    Ok(out)
}

/// Checks one period's objects against its digest, and its NDJSON bundle as an export.
async fn check_period(
    bucket: &dyn Bucket,
    verifier: &NoteVerifier,
    read: &DigestRead,
) -> Outcome<u64> {
    let d = &read.digest;
    let at = Some(d.from_seq);
    for object in &d.objects {
        let bytes = fetch(bucket, &object.key, at).await?;
        if bytes.len() as u64 != object.size || Hash::digest(&bytes) != object.sha256 {
            return Err(BucketProblem::new(
                &object.key,
                at,
                format!(
                    "is {} bytes with SHA-256 {}, but {} says {} bytes with SHA-256 {}",
                    bytes.len(),
                    Hash::digest(&bytes),
                    read.key,
                    object.size,
                    object.sha256
                ),
            ));
        }
        if object.key.ends_with(".ndjson") {
            let mut export = ExportVerifier::new(verifier.clone(), None);
            let pushed = export.push_bytes(&bytes);
            let checkpoint = export.checkpoint().cloned();
            let report = pushed.and_then(|()| export.finish()).map_err(|e| {
                BucketProblem::new(&object.key, e.line().map(|_| d.from_seq), e.to_string())
            })?;
            let tied = checkpoint
                .is_some_and(|c| c.size == d.checkpoint_size && c.root == d.checkpoint_root);
            let count = d.to_seq - d.from_seq;
            let seqs_match = report.entries == count
                && (count == 0
                    || (report.first_seq == Some(d.from_seq)
                        && report.last_seq == Some(d.to_seq - 1)));
            if !tied || !seqs_match {
                return Err(BucketProblem::new(
                    &object.key,
                    at,
                    format!(
                        "does not hold exactly seqs [{}, {}) under the checkpoint of size {} \
                         that {} names",
                        d.from_seq, d.to_seq, d.checkpoint_size, read.key
                    ),
                ));
            }
        }
    }
    Ok(d.objects.len() as u64)
}

/// Verifies the whole bucket.
pub async fn verify_bucket(
    bucket: &dyn Bucket,
    verifier: &NoteVerifier,
    trusted: Option<&Checkpoint>,
) -> Outcome<BucketReport> {
    let text = utf8(
        layout::CHECKPOINT,
        None,
        fetch(bucket, layout::CHECKPOINT, None).await?,
    )?;
    let checkpoint = Checkpoint::open(&text, verifier)
        .map_err(|e| BucketProblem::new(layout::CHECKPOINT, None, e.to_string()))?;
    let size = checkpoint.size;
    if let Some(t) = trusted
        && t.size > size
    {
        return Err(BucketProblem::new(
            layout::CHECKPOINT,
            Some(size),
            format!(
                "is of size {size}, older than the trusted checkpoint of size {}: the bucket \
                 was truncated or rolled back",
                t.size
            ),
        ));
    }
    let digests = read_digests(bucket, verifier, size).await?;
    // The roots the tree must have on the way: the digests' checkpoints and the trusted one.
    let mut wanted: BTreeMap<u64, Vec<(String, Hash)>> = BTreeMap::new();
    if let Some(t) = trusted {
        wanted
            .entry(t.size)
            .or_default()
            .push(("the trusted checkpoint".to_owned(), t.root));
    }
    for read in &digests {
        wanted
            .entry(read.digest.checkpoint_size)
            .or_default()
            .push((read.key.clone(), read.digest.checkpoint_root));
    }

    let progress = count_progress(Some(size), "verifying bucket");
    let mut rebuilder = TileRebuilder::new();
    let mut stored_tiles = 0u64;
    // The first stored hash tile that differs from the recomputation (judged at the end: the
    // root says whether the tile or the entries are wrong).
    let mut first_bad_tile: Option<BucketProblem> = None;
    // The first entry whose leaf differs from the stored level-0 tile.
    let mut first_bad_entry: Option<BucketProblem> = None;
    let mut expected_keys: HashSet<String> = HashSet::new();
    let check_roots = |rebuilder: &TileRebuilder| -> Outcome<()> {
        for (who, root) in wanted.get(&rebuilder.size()).into_iter().flatten() {
            if rebuilder.root() != *root {
                return Err(BucketProblem::new(
                    who,
                    Some(rebuilder.size().saturating_sub(1)),
                    format!(
                        "says the tree of size {} has root {root}, but the bucket's entries give \
                         {}: the bucket holds another history (a fork)",
                        rebuilder.size(),
                        rebuilder.root()
                    ),
                ));
            }
        }
        Ok(())
    };
    check_roots(&rebuilder)?;
    let bundles = tiles::entry_bundles(size);
    for bundle in &bundles {
        let key = bundle.path();
        expected_keys.insert(key.clone());
        let (first, _) = bundle.leaf_range();
        let bytes = fetch(bucket, &key, Some(first)).await?;
        let entries = tiles::parse_evident_entry_bundle(&bytes, bundle.width)
            .map_err(|e| BucketProblem::new(&key, Some(first), e.to_string()))?;
        // The stored level-0 tile, to say which entry differs when one does.
        let level0 = TileId::hash(0, bundle.index, bundle.width);
        let level0_stored = match bucket.get(&level0.path()).await {
            Ok(Some((b, _))) => tiles::parse_hash_tile(&b, bundle.width).ok(),
            _ => None,
        };
        let mut completed = Vec::new();
        for (i, (hash, seal)) in entries.iter().enumerate() {
            let leaf = entry_leaf_hash(hash, seal);
            if first_bad_entry.is_none()
                && let Some(stored) = &level0_stored
                && stored.get(i) != Some(&leaf)
            {
                first_bad_entry = Some(BucketProblem::new(
                    &key,
                    Some(first + i as u64),
                    format!("entry's leaf hash is not the one {} holds", level0.path()),
                ));
            }
            completed.extend(rebuilder.push_leaf(leaf));
            // A root that disagrees: an entry that differs from its stored tile is the
            // likelier culprit, and is named when there is one.
            if let Err(problem) = check_roots(&rebuilder) {
                return Err(first_bad_entry.unwrap_or(problem));
            }
        }
        if bundles.last() == Some(bundle) {
            completed.extend(rebuilder.partial_tiles());
        }
        for (tile, hashes) in completed {
            let tile_key = tile.path();
            expected_keys.insert(tile_key.clone());
            let (tile_first, _) = tile.leaf_range();
            let stored = fetch(bucket, &tile_key, Some(tile_first)).await?;
            stored_tiles += 1;
            if first_bad_tile.is_none() && stored != tiles::hash_tile(&hashes) {
                let per_hash = (tile.leaf_range().1 - tile_first) / tile.width;
                let differs = tiles::parse_hash_tile(&stored, tile.width)
                    .ok()
                    .and_then(|s| s.iter().zip(&hashes).position(|(a, b)| a != b))
                    .unwrap_or(0) as u64;
                first_bad_tile = Some(BucketProblem::new(
                    &tile_key,
                    Some(tile_first + differs * per_hash),
                    "does not match the hashes recomputed from the entry bundles",
                ));
            }
        }
        progress.set_position(rebuilder.size());
    }
    progress.finish_and_clear();
    if rebuilder.root() != checkpoint.root {
        return Err(first_bad_entry.unwrap_or_else(|| {
            BucketProblem::new(
                layout::CHECKPOINT,
                Some(size.saturating_sub(1)),
                format!(
                    "root {} is not the root of the bucket's entries ({})",
                    checkpoint.root,
                    rebuilder.root()
                ),
            )
        }));
    }
    if let Some(problem) = first_bad_tile {
        return Err(problem);
    }
    let mut period_objects = 0;
    for read in &digests {
        period_objects += check_period(bucket, verifier, read).await?;
    }
    let listed = bucket
        .list(layout::TILES_PREFIX)
        .await
        .map_err(|e| BucketProblem::new(layout::TILES_PREFIX, None, format!("cannot list: {e}")))?;
    // Other tile objects: a superseded partial tile (a crash before its deletion) must be a
    // prefix of the tile that replaced it; one beyond the checkpoint is not checked.
    let current: std::collections::HashMap<(tiles::TileKind, u64), TileId> =
        tiles::tiles_for_size(size)
            .into_iter()
            .map(|t| ((t.kind, t.index), t))
            .collect();
    let mut unchecked_tiles = 0u64;
    for object in listed.iter().filter(|o| !expected_keys.contains(&o.key)) {
        let Ok(tile) = TileId::parse_path(&object.key) else {
            unchecked_tiles += 1;
            continue;
        };
        let Some(wider) = current
            .get(&(tile.kind, tile.index))
            .filter(|w| w.width > tile.width)
        else {
            unchecked_tiles += 1;
            continue;
        };
        let (first, _) = tile.leaf_range();
        let old = fetch(bucket, &object.key, Some(first)).await?;
        let new = fetch(bucket, &wider.path(), Some(first)).await?;
        if !new.starts_with(&old) {
            return Err(BucketProblem::new(
                &object.key,
                Some(first),
                format!("is not a prefix of {}, which superseded it", wider.path()),
            ));
        }
    }
    Ok(BucketReport {
        size,
        root: checkpoint.root,
        tiles: stored_tiles,
        entry_bundles: bundles.len() as u64,
        digests: digests.len() as u64,
        period_objects,
        unchecked_tiles,
    })
}

/// Runs the verification and prints the verdict in `evident verify`'s style.
pub fn run(
    bucket: &dyn Bucket,
    verifier: &NoteVerifier,
    trusted: Option<&Checkpoint>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(verify_bucket(bucket, verifier, trusted)) {
        Ok(report) => {
            println!(
                "OK: {} intact: {} entries, root {}; {} entry bundles, {} hash tiles, {} \
                 digests and {} period objects verified{}",
                bucket.describe(),
                report.size,
                report.root,
                report.entry_bundles,
                report.tiles,
                report.digests,
                report.period_objects,
                if report.unchecked_tiles > 0 {
                    format!(
                        " ({} tile objects beyond the checkpoint not checked)",
                        report.unchecked_tiles
                    )
                } else {
                    String::new()
                }
            );
            if trusted.is_some() {
                println!("consistent with the trusted checkpoint");
            }
            Ok(())
        }
        Err(problem) => Err(VerificationFailed(problem.verdict()).into()),
    }
}
