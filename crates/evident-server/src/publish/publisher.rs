//! The publisher: a consumer of the committed log (kind `publisher`) that writes it to the
//! bucket as tiles, per-period bundles, CSVs and digests, and the checkpoint, when a
//! publication is due (the daily time, every N entries, or on demand).
//!
//! Its cursor is the archive's edge: every entry below it is in a full entry bundle and hash
//! tile in the bucket, or covered by the checkpoint object. A publication to a checkpoint of
//! size T writes, in order: the full tiles the new entries complete, the partial tiles of size
//! T, the objects of every period that closed, then swaps the checkpoint object (compare-and-
//! swap on its ETag), and only then deletes the partial tiles a wider one superseded. Every
//! object but the checkpoint is written create-only; one found already there must hold the
//! same bytes (a resumed publication), or the bucket holds another history and the publisher
//! refuses, loudly, to go on. A crash anywhere leaves a bucket whose checkpoint is consistent
//! and whose objects are all right; the next run writes what is missing. Every object is a
//! function of the log alone (a period's bundle is tied to a checkpoint at the period's own end,
//! signed for it), so an interrupted run ends with the same bucket as an uninterrupted one.

use super::PublishConfig;
use super::bucket::{Bucket, BucketError, Created};
use super::layout::{self, CHECKPOINT_KEY, TILE_WIDTH};
use crate::consumers::{Consumer, ConsumerContext, DeliveryError};
use crate::export::{BundleRequest, write_bundle, write_csv};
use bytes::Bytes;
use evident_core::checkpoint::Checkpoint;
use evident_core::event::Millis;
use evident_core::merkle::{self, NodeId};
use evident_core::{Hash, SealedEntry};
use evident_store::{Filter, Order, Store, StoreError, StoredCheckpoint};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// An idle period closes this long after its end: an append being committed then was
/// recorded before it (a group commit takes milliseconds).
const CLOSE_GRACE_MS: i64 = 2_000;

/// How long `deliver` waits for a publication to become due before handing the turn back.
const IDLE_WAIT: Duration = Duration::from_secs(2);

/// What operators see of the publisher beyond the cursor's status.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PublishStatus {
    /// Where it publishes (`s3://bucket/prefix`, `file:///dir`).
    pub target: String,
    /// The size of the checkpoint in the bucket (0 before the first publication).
    pub published_size: u64,
    /// When the checkpoint object was last swapped (ms since the epoch).
    pub last_published_at: Option<Millis>,
    /// The last period whose objects and digest are in the bucket (its start, RFC 3339).
    pub last_period: Option<String>,
    /// Objects written since the node started.
    pub objects_written: u64,
    /// Objects found already written (and identical) since the node started.
    pub objects_existing: u64,
    /// The next scheduled publication (ms since the epoch).
    pub next_scheduled_at: Option<Millis>,
    /// The size a requested publication is heading for, while one is in progress.
    pub publishing_to: Option<u64>,
    /// The last failure, until a publication succeeds again.
    pub last_error: Option<String>,
}

/// The publisher's side shared with the HTTP API: on-demand requests and the status.
#[derive(Clone, Default)]
pub struct PublishHandle(Arc<HandleInner>);

#[derive(Default)]
struct HandleInner {
    wake: tokio::sync::Notify,
    /// The size an on-demand publication must reach (0: none asked for).
    requested: AtomicU64,
    status: Mutex<PublishStatus>,
    published: tokio::sync::watch::Sender<u64>,
}

impl PublishHandle {
    pub fn new(target: String) -> PublishHandle {
        let handle = PublishHandle::default();
        handle.update(|s| s.target = target);
        handle
    }

    /// Asks for a publication of at least `size` entries (a checkpoint of that size exists).
    pub fn request(&self, size: u64) {
        self.0.requested.fetch_max(size, Ordering::AcqRel);
        self.0.wake.notify_one();
    }

    /// Waits until the bucket's checkpoint covers `size` entries, or `timeout` passed;
    /// whether it does.
    pub async fn wait_published(&self, size: u64, timeout: Duration) -> bool {
        let mut published = self.0.published.subscribe();
        tokio::time::timeout(timeout, published.wait_for(|p| *p >= size))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The object holding entry `seq` in the archive (`s3://bucket/prefix/tile/entries/…`),
    /// if it is published.
    pub fn archive_location(&self, seq: u64) -> Option<String> {
        let status = self.status();
        if seq >= status.published_size {
            return None;
        }
        let index = seq / TILE_WIDTH;
        let width = (status.published_size - index * TILE_WIDTH).min(TILE_WIDTH);
        Some(format!(
            "{}/{}",
            status.target.trim_end_matches('/'),
            layout::entry_bundle_key(index, width)
        ))
    }

    /// Shows `message` as the last error (a publisher that could not start).
    pub fn fail(&self, message: String) {
        self.update(|s| s.last_error = Some(message));
    }

    pub fn status(&self) -> PublishStatus {
        self.0
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut PublishStatus)) {
        f(&mut self.0.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn requested(&self) -> u64 {
        self.0.requested.load(Ordering::Acquire)
    }
}

/// A period whose entries are known: `[from_seq, to_seq)` recorded in `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PeriodSpan {
    start: i64,
    from_seq: u64,
    /// Exclusive; `None` while the period is open.
    to_seq: Option<u64>,
}

/// The state saved with the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// The size of the checkpoint object in the bucket.
    published_size: u64,
    /// Its ETag, for the next swap.
    checkpoint_etag: Option<String>,
    /// The period the entries below the cursor end in (open), and closed ones not yet
    /// written to the bucket, oldest first.
    open: Option<PeriodSpan>,
    closed: Vec<PeriodSpan>,
    /// The start of the first period not closed yet: a late entry (stamped inside a period
    /// already closed) counts in the period after it, never reopening one.
    period_floor: i64,
    /// The last period digest written: its key and SHA-256.
    last_digest: Option<(String, String)>,
    /// The scheduled time (ms) of the last daily publication served.
    last_daily: Option<i64>,
}

/// The publisher consumer.
pub struct Publisher {
    name: String,
    config: PublishConfig,
    bucket: Arc<dyn Bucket>,
    handle: PublishHandle,
    state: State,
    /// The checkpoint the publication in progress heads for.
    target: Option<StoredCheckpoint>,
    /// The bucket's checkpoint was checked against the log since the start.
    reconciled: bool,
    /// A refusal (another history in the bucket) was recorded in the log already.
    refusal_recorded: bool,
    /// Hidden, for the crash tests: the process aborts once it has created this many objects
    /// (`EVIDENT_TEST_PUBLISH_CRASH_AFTER`), as a crash in the middle of a publication would.
    crash_after: Option<u64>,
    created: AtomicU64,
}

/// Why a publication step failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket holds objects that do not belong to this log: nothing is overwritten.
    #[error("refusing to publish: {0}")]
    OtherHistory(String),
    #[error("publish: {0}")]
    Internal(String),
}

impl From<StepError> for DeliveryError {
    fn from(e: StepError) -> DeliveryError {
        match e {
            StepError::Store(e) => DeliveryError::Store(e),
            other => DeliveryError::destination(other.to_string()),
        }
    }
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| StepError::Internal(format!("store task failed: {e}")))?
}

impl Publisher {
    pub fn new(config: PublishConfig, bucket: Arc<dyn Bucket>, handle: PublishHandle) -> Self {
        Publisher {
            name: bucket.describe(),
            config,
            bucket,
            handle,
            state: State::default(),
            target: None,
            reconciled: false,
            refusal_recorded: false,
            crash_after: std::env::var("EVIDENT_TEST_PUBLISH_CRASH_AFTER")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            created: AtomicU64::new(0),
        }
    }

    /// Whether a publication is due now, and to which size at the least (on demand).
    fn due(&self, ctx: &ConsumerContext, next_seq: u64) -> bool {
        let requested = self.handle.requested();
        if requested > self.state.published_size {
            return true;
        }
        if self.config.every_events > 0
            && ctx.log_size().saturating_sub(next_seq) >= self.config.every_events
        {
            return true;
        }
        // The latest scheduled time at or before now; due if not served yet.
        let scheduled = self.config.daily_at.next_after(ctx.now()) - 86_400_000;
        self.state.last_daily.unwrap_or(0) < scheduled
    }

    /// Checks the bucket's checkpoint against the log: adopts its size and ETag when it is a
    /// checkpoint of this log, refuses when it is not.
    async fn reconcile(&mut self, ctx: &ConsumerContext) -> Result<(), StepError> {
        let found = self.bucket.get(CHECKPOINT_KEY).await?;
        let Some((bytes, etag)) = found else {
            if self.state.published_size > 0 {
                return Err(StepError::OtherHistory(format!(
                    "{} has no checkpoint object, but this node published a checkpoint of size \
                     {} there: the bucket was emptied or replaced; publish to a new prefix",
                    self.bucket.describe(),
                    self.state.published_size
                )));
            }
            self.state.checkpoint_etag = None;
            self.reconciled = true;
            return Ok(());
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let verifiers = ctx.state().node().files().verifiers().to_vec();
        let checkpoint = Checkpoint::open_any(&text, &verifiers).map_err(|e| {
            StepError::OtherHistory(format!(
                "{}/{CHECKPOINT_KEY} is not a checkpoint of this log ({e})",
                self.bucket.describe()
            ))
        })?;
        let size = checkpoint.size;
        let log_size = ctx.log_size();
        if size > log_size {
            return Err(StepError::OtherHistory(format!(
                "{}/{CHECKPOINT_KEY} is at size {size}, beyond this log's {log_size} entries",
                self.bucket.describe()
            )));
        }
        let root = root_at(ctx.store(), size).await?;
        if root != checkpoint.root {
            return Err(StepError::OtherHistory(format!(
                "{}/{CHECKPOINT_KEY} (size {size}) has another root than this log at that size: \
                 the bucket holds a different history",
                self.bucket.describe()
            )));
        }
        if size < self.state.published_size {
            return Err(StepError::OtherHistory(format!(
                "{}/{CHECKPOINT_KEY} was rolled back to size {size}; this node published size {} \
                 there",
                self.bucket.describe(),
                self.state.published_size
            )));
        }
        self.state.published_size = size;
        self.state.checkpoint_etag = etag;
        self.handle.update(|s| s.published_size = size);
        self.handle.0.published.send_replace(size);
        self.reconciled = true;
        Ok(())
    }

    /// Writes `bytes` at `key` create-only; an object already there must hold the same bytes.
    async fn put_immutable(&self, key: &str, bytes: Vec<u8>) -> Result<(), StepError> {
        let bytes = Bytes::from(bytes);
        match self.bucket.put_create_only(key, bytes.clone()).await? {
            Created::Created => {
                self.handle.update(|s| s.objects_written += 1);
                let created = self.created.fetch_add(1, Ordering::AcqRel) + 1;
                if self.crash_after.is_some_and(|limit| created >= limit) {
                    tracing::error!(created, "EVIDENT_TEST_PUBLISH_CRASH_AFTER: aborting");
                    std::process::abort();
                }
                Ok(())
            }
            Created::AlreadyExists => {
                let existing = self.bucket.get(key).await?;
                match existing {
                    Some((found, _)) if found == bytes => {
                        self.handle.update(|s| s.objects_existing += 1);
                        Ok(())
                    }
                    Some(_) => Err(StepError::OtherHistory(format!(
                        "{}/{key} exists with other contents than this log's: the bucket holds a \
                         different history (nothing was overwritten)",
                        self.bucket.describe()
                    ))),
                    None => Err(StepError::Internal(format!(
                        "{key}: refused as existing, then not found; retrying"
                    ))),
                }
            }
        }
    }

    /// The entries `[from, to)`: from the batch where it has them, else from the store.
    async fn entries(
        &self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
        from: u64,
        to: u64,
    ) -> Result<Vec<SealedEntry>, StepError> {
        let first_in_batch = batch.first().map_or(u64::MAX, |e| e.event.seq);
        let mut out = Vec::with_capacity((to - from) as usize);
        if from < first_in_batch {
            let upto = to.min(first_in_batch);
            let read = blocking(ctx.store(), move |store| {
                let mut entries = Vec::new();
                store.scan(
                    &Filter {
                        from_seq: Some(from),
                        to_seq: Some(upto),
                        ..Filter::default()
                    },
                    Order::Ascending,
                    None,
                    None,
                    &mut |e| {
                        entries.push(e);
                        std::ops::ControlFlow::Continue(())
                    },
                )?;
                Ok(entries)
            })
            .await?;
            out.extend(read);
        }
        for entry in batch {
            let seq = entry.event.seq;
            if seq >= from && seq < to && seq >= first_in_batch {
                out.push(entry.clone());
            }
        }
        let dense = out.len() as u64 == to - from
            && out
                .iter()
                .enumerate()
                .all(|(i, e)| e.event.seq == from + i as u64);
        if !dense {
            return Err(StepError::Internal(format!(
                "entries {from} to {} are not all in the store (pruned before they were \
                 archived?)",
                to - 1
            )));
        }
        Ok(out)
    }

    /// Writes the entry bundle and level-0 tile of group `index`, `width` wide.
    async fn write_level0(
        &self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
        index: u64,
        width: u64,
    ) -> Result<(), StepError> {
        let from = index * TILE_WIDTH;
        let entries = self.entries(ctx, batch, from, from + width).await?;
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|e| merkle::entry_leaf_hash(&e.hash, &e.seal))
            .collect();
        self.put_immutable(
            &layout::entry_bundle_key(index, width),
            layout::entry_bundle(&entries),
        )
        .await?;
        self.put_immutable(
            &layout::hash_tile_key(0, index, width),
            layout::hash_tile(&leaves),
        )
        .await
    }

    /// Writes hash tile `index` of `level` (≥ 1), `width` wide, from the stored Merkle nodes.
    async fn write_upper(
        &self,
        ctx: &ConsumerContext,
        level: u8,
        index: u64,
        width: u64,
    ) -> Result<(), StepError> {
        let node_level = level
            .checked_mul(8)
            .ok_or_else(|| StepError::Internal("tile level too high".into()))?;
        let ids: Vec<NodeId> = (0..width)
            .map(|i| NodeId {
                level: node_level,
                index: index * TILE_WIDTH + i,
            })
            .collect();
        let hashes = blocking(ctx.store(), move |store| Ok(store.read_nodes(&ids)?)).await?;
        if hashes.len() as u64 != width {
            return Err(StepError::Internal(format!(
                "tile {level}/{index}: {} of {width} Merkle nodes stored",
                hashes.len()
            )));
        }
        self.put_immutable(
            &layout::hash_tile_key(level, index, width),
            layout::hash_tile(&hashes),
        )
        .await
    }

    /// Writes every full tile that the entries `[from, to)` complete (`from` and `to` ≤ the
    /// target's size).
    async fn write_full_tiles(
        &self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
        from: u64,
        to: u64,
    ) -> Result<(), StepError> {
        // Level 0: groups whose end lies in (from, to].
        let mut index = from / TILE_WIDTH;
        while (index + 1) * TILE_WIDTH <= to {
            if (index + 1) * TILE_WIDTH > from {
                self.write_level0(ctx, batch, index, TILE_WIDTH).await?;
            }
            index += 1;
        }
        // Upper levels: a level-L tile spans 256^(L+1) entries.
        let mut level: u8 = 1;
        while let Some(span) = TILE_WIDTH.checked_pow(u32::from(level) + 1) {
            if span > to {
                break;
            }
            let mut index = from / span;
            while (index + 1) * span <= to {
                if (index + 1) * span > from {
                    self.write_upper(ctx, level, index, TILE_WIDTH).await?;
                }
                index += 1;
            }
            level += 1;
        }
        Ok(())
    }

    /// The partial tiles of tree size `size`: `(level, index, width)`.
    fn partials(size: u64) -> Vec<(u8, u64, u64)> {
        let mut out = Vec::new();
        let mut level: u8 = 0;
        loop {
            let count = size >> (8 * u32::from(level));
            if count == 0 {
                break;
            }
            let width = count % TILE_WIDTH;
            if width > 0 {
                out.push((level, count / TILE_WIDTH, width));
            }
            level += 1;
            if level > 7 {
                break;
            }
        }
        out
    }

    /// Follows the periods over the delivered entries `batch[..n]`.
    fn track_periods(&mut self, entries: &[SealedEntry]) {
        let period = self.config.period;
        for entry in entries {
            let start = period
                .start_of(entry.event.recorded_at)
                .max(self.state.period_floor);
            match &mut self.state.open {
                Some(open) if open.start == start => {}
                Some(open) => {
                    let mut closed = *open;
                    closed.to_seq = Some(entry.event.seq);
                    self.state.closed.push(closed);
                    self.state.period_floor = closed.start + period.0;
                    self.state.open = Some(PeriodSpan {
                        start,
                        from_seq: entry.event.seq,
                        to_seq: None,
                    });
                }
                None => {
                    self.state.open = Some(PeriodSpan {
                        start,
                        from_seq: entry.event.seq,
                        to_seq: None,
                    })
                }
            }
        }
    }

    /// Whether every entry recorded before `end` is below `size`.
    async fn closed_by_log(
        &self,
        ctx: &ConsumerContext,
        size: u64,
        end: i64,
    ) -> Result<bool, StepError> {
        let next = blocking(ctx.store(), move |store| {
            let mut found = None;
            store.scan(
                &Filter {
                    from_seq: Some(size),
                    ..Filter::default()
                },
                Order::Ascending,
                None,
                Some(1),
                &mut |e| {
                    found = Some(e.event.recorded_at);
                    std::ops::ControlFlow::Break(())
                },
            )?;
            Ok(found)
        })
        .await?;
        Ok(match next {
            Some(recorded_at) => recorded_at >= end,
            None => ctx.now() >= end + CLOSE_GRACE_MS,
        })
    }

    /// Writes the bundle, CSV and digest of a closed period.
    async fn write_period(
        &mut self,
        ctx: &ConsumerContext,
        span: PeriodSpan,
    ) -> Result<(), StepError> {
        let to_seq = span.to_seq.unwrap_or(span.from_seq);
        let end = span.start + self.config.period.0;
        let keys = layout::period_keys(span.start);
        let node = ctx.state().node().files();
        let signers = node.signers_now();
        let origin = node.origin().to_owned();
        let node_id = node.node_id().to_owned();
        // A checkpoint at the period's own end, signed for the bundle: a function of the log.
        let root = root_at(ctx.store(), to_seq).await?;
        let period_checkpoint = Checkpoint {
            origin: origin.clone(),
            size: to_seq,
            root,
            extensions: Vec::new(),
        };
        let note = period_checkpoint
            .sign_all(&signers)
            .map_err(|e| StepError::Internal(format!("signing the period checkpoint: {e}")))?;
        let checkpoint = StoredCheckpoint {
            size: to_seq,
            root,
            signed_note: note.clone(),
            created_at: end,
        };
        // The period's entries, stated in the bundle's signed header as its time range.
        let filter = Filter {
            from: Some(span.start),
            to: Some(end),
            from_seq: Some(span.from_seq),
            to_seq: Some(to_seq),
            ..Filter::default()
        };
        let request = BundleRequest {
            node_id,
            checkpoint,
            filter: filter.clone(),
            query: serde_json::json!({
                "from": evident_core::event::format_rfc3339_millis(span.start),
                "to": evident_core::event::format_rfc3339_millis(end),
            }),
            exported_at: end,
            limit: None,
            consistency_from: None,
            signers: signers.clone(),
        };
        let (bundle, csv) = blocking(ctx.store(), move |store| {
            let mut bundle = Vec::new();
            write_bundle(store, &request, &mut bundle)
                .map_err(|e| StepError::Internal(format!("period bundle: {e}")))?;
            let mut csv = Vec::new();
            write_csv(store, &filter, Order::Ascending, None, &mut csv)
                .map_err(|e| StepError::Internal(format!("period CSV: {e}")))?;
            Ok((bundle, csv))
        })
        .await?;
        let previous = match &self.state.last_digest {
            Some((key, hash)) => Some((
                key.clone(),
                Hash::from_hex(hash)
                    .map_err(|e| StepError::Internal(format!("saved state: {e}")))?,
            )),
            None => None,
        };
        let digest = layout::digest(
            &layout::DigestInput {
                period_start: span.start,
                period_end: end,
                from_seq: span.from_seq,
                to_seq,
                checkpoint: &period_checkpoint,
                objects: vec![(&keys.bundle, &bundle), (&keys.csv, &csv)],
                previous: previous.as_ref().map(|(k, h)| (k.as_str(), *h)),
            },
            &signers,
        )
        .map_err(StepError::Internal)?;
        let digest_hash = Hash::digest(&digest);
        self.put_immutable(&keys.bundle, bundle).await?;
        self.put_immutable(&keys.csv, csv).await?;
        self.put_immutable(&keys.digest, digest).await?;
        self.state.last_digest = Some((keys.digest.clone(), digest_hash.to_hex()));
        let name = evident_core::event::format_rfc3339_millis(span.start);
        self.handle.update(|s| s.last_period = Some(name));
        Ok(())
    }

    /// Finishes the publication to `target`: partial tiles, closed periods, the checkpoint
    /// swap, then the partial tiles it superseded.
    async fn finish(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
        target: &StoredCheckpoint,
    ) -> Result<(), StepError> {
        let size = target.size;
        for (level, index, width) in Self::partials(size) {
            if level == 0 {
                self.write_level0(ctx, batch, index, width).await?;
            } else {
                self.write_upper(ctx, level, index, width).await?;
            }
        }
        // A period still open closes when nothing more can be recorded in it: the entry after
        // the target is recorded after its end, or (none yet) its end is [`CLOSE_GRACE`] past.
        if let Some(open) = self.state.open {
            let end = open.start + self.config.period.0;
            if self.closed_by_log(ctx, size, end).await? {
                self.state.closed.push(PeriodSpan {
                    to_seq: Some(size),
                    ..open
                });
                self.state.open = None;
                self.state.period_floor = end;
            }
        }
        while let Some(span) = self.state.closed.first().copied() {
            self.write_period(ctx, span).await?;
            self.state.closed.remove(0);
        }
        let previous_size = self.state.published_size;
        let etag = match self
            .bucket
            .put_checkpoint_cas(
                CHECKPOINT_KEY,
                Bytes::from(target.signed_note.clone()),
                self.state.checkpoint_etag.as_deref(),
            )
            .await
        {
            Ok(etag) => etag,
            Err(BucketError::Conflict { .. }) => {
                // Someone (or this node before a crash) changed it: check it again, then retry.
                self.reconciled = false;
                self.reconcile(ctx).await?;
                if self.state.published_size >= size {
                    return self.superseded(previous_size, size).await;
                }
                self.bucket
                    .put_checkpoint_cas(
                        CHECKPOINT_KEY,
                        Bytes::from(target.signed_note.clone()),
                        self.state.checkpoint_etag.as_deref(),
                    )
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        self.state.published_size = size;
        self.state.checkpoint_etag = etag;
        // Done (and reported done) once the superseded partial tiles are gone too.
        self.superseded(previous_size, size).await?;
        let now = ctx.now();
        self.handle.update(|s| {
            s.published_size = size;
            s.last_published_at = Some(now);
            s.last_error = None;
        });
        self.handle.0.published.send_replace(size);
        Ok(())
    }

    /// Deletes the partial tiles between sizes `from` and `to` that size `to` does not use
    /// (a wider partial or the full tile has replaced them).
    async fn superseded(&self, from: u64, to: u64) -> Result<(), StepError> {
        let keep: Vec<String> = Self::partials(to)
            .into_iter()
            .flat_map(|(level, index, width)| {
                let mut keys = vec![layout::hash_tile_key(level, index, width)];
                if level == 0 {
                    keys.push(layout::entry_bundle_key(index, width));
                }
                keys
            })
            .collect();
        let mut level: u8 = 0;
        loop {
            let span_shift = 8 * (u32::from(level) + 1);
            let (first, last) = (from >> span_shift, to >> span_shift);
            if to >> (8 * u32::from(level)) == 0 {
                break;
            }
            for index in first..=last {
                let mut prefixes = vec![layout::hash_tile_partials(level, index)];
                if level == 0 {
                    prefixes.push(layout::entry_bundle_partials(index));
                }
                for prefix in prefixes {
                    for object in self.bucket.list(&prefix).await? {
                        if !keep.contains(&object.key) {
                            self.bucket.delete(&object.key).await?;
                        }
                    }
                }
            }
            level += 1;
            if level > 7 {
                break;
            }
        }
        Ok(())
    }

    /// Picks the checkpoint a due publication heads for: the latest one (on demand, one
    /// covering everything committed, signed now if need be).
    async fn choose_target(
        &self,
        ctx: &ConsumerContext,
    ) -> Result<Option<StoredCheckpoint>, StepError> {
        let requested = self.handle.requested();
        let mut latest = ctx.latest_checkpoint();
        if requested > latest.as_ref().map_or(0, |c| c.size) {
            latest = Some(
                ctx.state()
                    .node()
                    .sequencer()
                    .force_checkpoint()
                    .await
                    .map_err(|e| StepError::Internal(format!("signing a checkpoint: {e}")))?,
            );
        }
        Ok(latest.filter(|c| c.size > self.state.published_size))
    }

    async fn step(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, StepError> {
        if !self.reconciled {
            self.reconcile(ctx).await?;
        }
        let Some(first) = batch.first() else {
            return Ok(0);
        };
        let from = first.event.seq;
        if self.target.is_none() {
            if !self.due(ctx, from) {
                let _ = tokio::time::timeout(IDLE_WAIT, self.handle.0.wake.notified()).await;
                if !self.due(ctx, from) {
                    return Ok(0);
                }
            }
            self.target = self.choose_target(ctx).await?;
            self.serve_schedule(ctx);
            match &self.target {
                Some(target) => {
                    let size = target.size;
                    self.handle.update(|s| s.publishing_to = Some(size));
                }
                None => return Ok(0),
            }
        }
        let Some(target) = self.target.clone() else {
            return Ok(0);
        };
        let end = (from + batch.len() as u64).min(target.size);
        let done_to = if end == target.size {
            end
        } else {
            end / TILE_WIDTH * TILE_WIDTH
        };
        if done_to <= from {
            return Ok(0);
        }
        self.write_full_tiles(ctx, batch, from, done_to).await?;
        let n = (done_to - from) as usize;
        let before = self.state.clone();
        self.track_periods(&batch[..n]);
        if done_to == target.size {
            if let Err(e) = self.finish(ctx, batch, &target).await {
                // Nothing of this step counts: the same entries come again, and what was
                // written is found identical then (the checkpoint is checked afresh).
                self.state = before;
                self.reconciled = false;
                return Err(e);
            }
            self.target = None;
            self.handle.update(|s| s.publishing_to = None);
        }
        Ok(n)
    }

    /// Marks the daily publication served once its time has passed.
    fn serve_schedule(&mut self, ctx: &ConsumerContext) {
        let now = ctx.now();
        let next = self.config.daily_at.next_after(now);
        self.state.last_daily = Some(next - 86_400_000);
        self.handle.update(|s| s.next_scheduled_at = Some(next));
    }

    async fn record_refusal(&mut self, ctx: &ConsumerContext, message: &str) {
        if self.refusal_recorded {
            return;
        }
        self.refusal_recorded = true;
        tracing::error!(target = %self.bucket.describe(), error = %message, "publisher refuses the bucket");
        let event = crate::audit::AuditEvent::new(
            "evident.publish.refused",
            "failure",
            "critical",
            "bucket",
            self.bucket.describe(),
        )
        .with("error", message.to_owned());
        ctx.record(vec![event.into_input(
            &crate::audit::AuditActor::System("publisher"),
            &crate::audit::RequestInfo::default(),
        )])
        .await;
    }
}

/// The Merkle root of the log's first `size` entries, from the stored nodes.
async fn root_at(store: &Arc<dyn Store>, size: u64) -> Result<Hash, StepError> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    blocking(store, move |store| {
        let ids = merkle::subtree_ids(0, size);
        let hashes = store.read_nodes(&ids)?;
        merkle::CompactRange::from_parts(size, hashes)
            .map(|range| range.root())
            .map_err(|e| StepError::Internal(format!("Merkle nodes at size {size}: {e}")))
    })
    .await
}

impl Consumer for Publisher {
    fn kind(&self) -> &'static str {
        "publisher"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn restore(&mut self, state: Option<&str>) -> Result<(), DeliveryError> {
        if let Some(text) = state {
            self.state = serde_json::from_str(text).map_err(|e| {
                DeliveryError::destination(format!(
                    "the publisher's saved state is unreadable: {e}"
                ))
            })?;
        }
        let size = self.state.published_size;
        let next = self.config.daily_at.next_after(crate::now_ms());
        self.handle.update(|s| {
            s.published_size = size;
            s.next_scheduled_at = Some(next);
        });
        Ok(())
    }

    async fn deliver(
        &mut self,
        ctx: &ConsumerContext,
        batch: &[SealedEntry],
    ) -> Result<usize, DeliveryError> {
        match self.step(ctx, batch).await {
            Ok(n) => Ok(n),
            Err(e) => {
                let message = e.to_string();
                if matches!(e, StepError::OtherHistory(_)) {
                    self.record_refusal(ctx, &message).await;
                }
                self.handle.update(|s| s.last_error = Some(message));
                Err(e.into())
            }
        }
    }

    fn tick_every(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn save_state(&self) -> Option<String> {
        serde_json::to_string(&self.state).ok()
    }
}
