//! The grid of a histogram of the log: how many entries match a filter per time bucket and
//! severity. [`Buckets`] cuts a range of `recorded_at` at the multiples of a "round" width
//! (100 ms, 1 s, 5 min, 6 h, 7 d … counted from the epoch, in UTC), so that buckets read well
//! on an axis and line up with the per-100 ms, second, minute, hour and day counts the embedded
//! store keeps as the log grows (`sqlite/counts.rs`), whatever the range. Backends fill the
//! grid ([`crate::Store::histogram`]); this file holds only the arithmetic they share.

use crate::Filter;
use evident_core::event::{Millis, Severity};

/// Entries per severity, indexed by rank (`Severity::ALL` order: 0 debug … 7 emergency).
pub type SeverityCounts = [u64; Severity::ALL.len()];

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The widths a grid may have, finest first; beyond the last, whole multiples of a year. None
/// finer than 100 ms, the finest cell of the embedded store's counts: a chart of a range
/// shorter than its number of buckets times 100 ms has fewer buckets.
const WIDTHS: [i64; 28] = [
    100,
    200,
    500,
    SECOND,
    2 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    90 * DAY,
    180 * DAY,
    365 * DAY,
];

/// A histogram's grid: `[from, to)` cut at the multiples of `width` milliseconds, so every
/// bucket is `[k·width, (k+1)·width)` except that the first starts at `from` and the last
/// ends at `to` when those are not on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    from: Millis,
    to: Millis,
    width: i64,
}

impl Buckets {
    /// The grid over `[from, to)` with the finest round width that needs no more than
    /// `max_buckets` buckets (but 2 for a range around the epoch asked in 1: every width's
    /// grid cuts at 0). `None` when the range is empty or `max_buckets` is 0.
    pub fn covering(from: Millis, to: Millis, max_buckets: u64) -> Option<Buckets> {
        if from >= to || max_buckets == 0 {
            return None;
        }
        let fits = |width: i64| Buckets { from, to, width }.cells() <= u128::from(max_buckets);
        let width = match WIDTHS.iter().copied().find(|w| fits(*w)) {
            Some(width) => width,
            None => {
                // Whole years, doubling: a range of i64 milliseconds needs at most ~30 steps
                // (and at the widest, a range of every i64 spans three cells).
                let mut width = 365 * DAY;
                while !fits(width) && width < i64::MAX {
                    width = width.saturating_mul(2);
                }
                width
            }
        };
        Some(Buckets { from, to, width })
    }

    /// The grid of `width` over `[from, to)`; `None` when the range is empty or the width
    /// not positive.
    pub fn with_width(from: Millis, to: Millis, width: i64) -> Option<Buckets> {
        (from < to && width > 0).then_some(Buckets { from, to, width })
    }

    pub fn from(&self) -> Millis {
        self.from
    }

    pub fn to(&self) -> Millis {
        self.to
    }

    pub fn width(&self) -> i64 {
        self.width
    }

    fn cell(&self, at: Millis) -> i128 {
        i128::from(at).div_euclid(i128::from(self.width))
    }

    fn cells(&self) -> u128 {
        // `to` is exclusive: the last cell is the one holding `to - 1`.
        (self.cell(self.to - 1) - self.cell(self.from) + 1).unsigned_abs()
    }

    /// The number of buckets.
    pub fn len(&self) -> usize {
        usize::try_from(self.cells()).unwrap_or(usize::MAX)
    }

    /// Never: a grid covers a non-empty range.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bucket holding `at`, if it is in range.
    pub fn index_of(&self, at: Millis) -> Option<usize> {
        if at < self.from || at >= self.to {
            return None;
        }
        usize::try_from(self.cell(at) - self.cell(self.from)).ok()
    }

    /// The range `[start, end)` of bucket `index` (clipped to the grid's range).
    pub fn bounds(&self, index: usize) -> (Millis, Millis) {
        let start = (self.cell(self.from) + index as i128) * i128::from(self.width);
        let end = start + i128::from(self.width);
        let clip = |t: i128| i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX });
        (
            clip(start).max(self.from).min(self.to),
            clip(end).max(self.from).min(self.to),
        )
    }

    /// `filter` narrowed to the grid's range: what a backend counts.
    pub fn narrow(&self, filter: &Filter) -> Filter {
        Filter {
            from: Some(filter.from.map_or(self.from, |f| f.max(self.from))),
            to: Some(filter.to.map_or(self.to, |t| t.min(self.to))),
            ..filter.clone()
        }
    }

    /// Adds an entry recorded at `at` of severity rank `rank` to `counts` (one per bucket);
    /// entries outside the range or of no known rank are not counted.
    pub fn add(&self, counts: &mut [SeverityCounts], at: Millis, rank: i64, n: u64) {
        let Some(cell) = self.index_of(at).and_then(|i| counts.get_mut(i)) else {
            return;
        };
        if let Some(slot) = usize::try_from(rank).ok().and_then(|r| cell.get_mut(r)) {
            *slot = slot.saturating_add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_round_and_never_has_more_buckets_than_asked() {
        // Two minutes from an odd millisecond, 40 buckets at most: 5 s wide, 25 buckets (a
        // 3 s grid is not round; 2 s would need 61).
        let from = 1_700_000_000_123;
        let grid = Buckets::covering(from, from + 120_000, 40).unwrap();
        assert_eq!(grid.width(), 5_000);
        assert_eq!(grid.len(), 25);
        assert_eq!(grid.bounds(0), (from, 1_700_000_005_000));
        assert_eq!(grid.bounds(1), (1_700_000_005_000, 1_700_000_010_000));
        assert_eq!(grid.bounds(24).1, from + 120_000);
        // A day in 30 buckets: one hour each (30 min would need 48), on the hour.
        let day = Buckets::covering(0, DAY, 30).unwrap();
        assert_eq!((day.width(), day.len()), (HOUR, 24));
        // Never finer than 100 ms: 1.2 s asked in 40 buckets gets 12.
        let short = Buckets::covering(1_000, 2_200, 40).unwrap();
        assert_eq!((short.width(), short.len()), (100, 12));
        // Exactly as many as asked when the range is on the grid.
        assert_eq!(Buckets::covering(0, 40 * SECOND, 40).unwrap().len(), 40);
        for max in 1..=200u64 {
            for (from, span) in [(7, 1), (-5_000, 90_001), (1_234_567, 86_400_000 * 400)] {
                let grid = Buckets::covering(from, from + span, max).unwrap();
                let around_epoch = from < 0 && from + span > 0;
                let most = if around_epoch { max.max(2) } else { max };
                assert!(grid.len() as u64 <= most, "{max} {from} {span}: {grid:?}");
                let (first, last) = (grid.bounds(0), grid.bounds(grid.len() - 1));
                assert_eq!((first.0, last.1), (from, from + span));
            }
        }
        // Asking for one bucket over every i64 ends (with the widest grid there is).
        let all = Buckets::covering(i64::MIN, i64::MAX, 1).unwrap();
        assert_eq!((all.width(), all.len()), (i64::MAX, 3));
        assert!(Buckets::covering(5, 5, 10).is_none());
        assert!(Buckets::covering(5, 6, 0).is_none());
    }

    #[test]
    fn entries_land_in_the_bucket_holding_their_time() {
        let grid = Buckets::with_width(-1_500, 2_500, 1_000).unwrap();
        assert_eq!(grid.len(), 5);
        assert_eq!(grid.index_of(-1_500), Some(0));
        assert_eq!(grid.index_of(-1_001), Some(0));
        assert_eq!(grid.index_of(-1_000), Some(1));
        assert_eq!(grid.index_of(-1), Some(1));
        assert_eq!(grid.index_of(0), Some(2));
        assert_eq!(grid.index_of(2_499), Some(4));
        assert_eq!(grid.index_of(2_500), None);
        assert_eq!(grid.index_of(-1_501), None);
        let mut counts = vec![[0u64; 8]; grid.len()];
        grid.add(&mut counts, 999, 3, 2);
        grid.add(&mut counts, 1_000, 7, 1);
        grid.add(&mut counts, 1_000, 8, 1); // no such rank
        grid.add(&mut counts, 9_999, 0, 1); // out of range
        assert_eq!(counts[2][3], 2);
        assert_eq!(counts[3][7], 1);
        assert_eq!(counts.iter().flatten().sum::<u64>(), 3);
    }

    #[test]
    fn narrowing_keeps_the_tighter_bound() {
        let grid = Buckets::with_width(100, 200, 10).unwrap();
        let open = grid.narrow(&Filter::default());
        assert_eq!((open.from, open.to), (Some(100), Some(200)));
        let tight = grid.narrow(&Filter {
            from: Some(150),
            to: Some(160),
            ..Filter::default()
        });
        assert_eq!((tight.from, tight.to), (Some(150), Some(160)));
    }
}
