//! An append-only log of asset positions ordered by `(updated_at, id)`, with rank and select.
//!
//! Every time an asset changes it gets a new `updated_at` from the emulator's clock, which is
//! never earlier than any timestamp already in the log, so a change is an append (the old
//! position is marked dead). A Fenwick tree over the liveness bits answers "how many live
//! entries before position p" and "where is the k-th live entry" in O(log n), so a listing
//! page — by timestamp, by cursor or by page number — costs O(log n + page), whatever the
//! number of assets.

/// One position: the asset's `updated_at` (seconds) and id key at the time of the append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub t: i64,
    pub key: u64,
    pub idx: u32,
}

#[derive(Debug)]
pub(crate) struct OrderedLog {
    entries: Vec<LogEntry>,
    live: Vec<u64>,
    /// Fenwick tree over liveness, 1-based (`fen[0]` unused).
    fen: Vec<u32>,
    live_count: usize,
}

impl Default for OrderedLog {
    fn default() -> Self {
        Self::from_sorted(Vec::new())
    }
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl OrderedLog {
    /// Builds a log from entries already sorted by `(t, key)`, all live. O(n).
    pub fn from_sorted(entries: Vec<LogEntry>) -> Self {
        debug_assert!(entries
            .windows(2)
            .all(|w| (w[0].t, w[0].key) < (w[1].t, w[1].key)));
        let n = entries.len();
        let mut fen = vec![1u32; n + 1];
        fen[0] = 0;
        for i in 1..=n {
            let j = i + lowbit(i);
            if j <= n {
                fen[j] += fen[i];
            }
        }
        let mut live = vec![u64::MAX; n.div_ceil(64)];
        if n % 64 != 0 {
            if let Some(last) = live.last_mut() {
                *last = (1u64 << (n % 64)) - 1;
            }
        }
        Self {
            entries,
            live,
            fen,
            live_count: n,
        }
    }

    pub fn live_count(&self) -> usize {
        self.live_count
    }

    pub fn entry(&self, pos: usize) -> LogEntry {
        self.entries[pos]
    }

    /// Appends a live entry; it must not sort before the last entry. Returns its position.
    pub fn push(&mut self, entry: LogEntry) -> usize {
        if let Some(last) = self.entries.last() {
            assert!(
                (last.t, last.key) < (entry.t, entry.key),
                "log appends must be ordered"
            );
        }
        let pos = self.entries.len();
        self.entries.push(entry);
        if pos % 64 == 0 {
            self.live.push(0);
        }
        self.live[pos / 64] |= 1 << (pos % 64);
        // Fenwick node i (1-based) covers (i - lowbit(i), i].
        let i = pos + 1;
        let mut sum = 1u32;
        let stop = i - lowbit(i);
        let mut j = i - 1;
        while j > stop {
            sum += self.fen[j];
            j -= lowbit(j);
        }
        self.fen.push(sum);
        self.live_count += 1;
        pos
    }

    /// Marks a position dead (its asset moved or was replaced).
    pub fn kill(&mut self, pos: usize) {
        let bit = 1u64 << (pos % 64);
        if self.live[pos / 64] & bit == 0 {
            return;
        }
        self.live[pos / 64] &= !bit;
        let mut i = pos + 1;
        while i < self.fen.len() {
            self.fen[i] -= 1;
            i += lowbit(i);
        }
        self.live_count -= 1;
    }

    /// Live entries in `[0, pos)`.
    pub fn rank(&self, pos: usize) -> usize {
        let mut i = pos.min(self.entries.len());
        let mut sum = 0usize;
        while i > 0 {
            sum += self.fen[i] as usize;
            i -= lowbit(i);
        }
        sum
    }

    /// Position of the k-th live entry (1-based `k`), if there are that many.
    pub fn select(&self, mut k: usize) -> Option<usize> {
        if k == 0 || k > self.live_count {
            return None;
        }
        let n = self.entries.len();
        let mut pos = 0usize;
        let mut step = if n == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && (self.fen[next] as usize) < k {
                pos = next;
                k -= self.fen[next] as usize;
            }
            step >>= 1;
        }
        Some(pos)
    }

    /// First position whose entry has `t >= since`.
    pub fn lower_bound_time(&self, since: i64) -> usize {
        self.entries.partition_point(|e| e.t < since)
    }

    /// First position whose entry sorts strictly after `(t, key)`.
    pub fn upper_bound(&self, t: i64, key: u64) -> usize {
        self.entries.partition_point(|e| (e.t, e.key) <= (t, key))
    }

    /// Up to `limit` live entries starting `skip` live entries after position `start`, and
    /// whether more live entries follow them.
    pub fn page(&self, start: usize, skip: usize, limit: usize) -> (Vec<LogEntry>, bool) {
        let first = self.rank(start) + skip;
        let mut out = Vec::with_capacity(limit.min(self.live_count.saturating_sub(first)));
        for k in first + 1..=first + limit {
            match self.select(k) {
                Some(pos) => out.push(self.entries[pos]),
                None => break,
            }
        }
        let more = first + out.len() < self.live_count;
        (out, more)
    }

    /// Live entries at or after position `start`.
    pub fn live_from(&self, start: usize) -> usize {
        self.live_count - self.rank(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: i64, key: u64) -> LogEntry {
        LogEntry {
            t,
            key,
            idx: key as u32,
        }
    }

    #[test]
    fn rank_select_and_pages_follow_kills_and_appends() {
        let mut log = OrderedLog::from_sorted((0..100).map(|i| e(i / 3, i as u64)).collect());
        assert_eq!(log.live_count(), 100);
        assert_eq!(log.rank(10), 10);
        assert_eq!(log.select(1), Some(0));
        assert_eq!(log.select(100), Some(99));
        assert_eq!(log.select(101), None);
        for p in (0..100).step_by(2) {
            log.kill(p);
        }
        log.kill(0); // idempotent
        assert_eq!(log.live_count(), 50);
        assert_eq!(log.rank(10), 5);
        assert_eq!(log.select(1), Some(1));
        assert_eq!(log.select(50), Some(99));
        for i in 0..37 {
            log.push(e(1000 + i, 500 + i as u64));
        }
        assert_eq!(log.live_count(), 87);
        assert_eq!(log.select(51).map(|p| log.entry(p).key), Some(500));
        let (page, more) = log.page(log.lower_bound_time(30), 2, 5);
        let keys: Vec<u64> = page.iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![95, 97, 99, 500, 501]);
        assert!(more);
        let (page, more) = log.page(log.upper_bound(1035, 535), 0, 5);
        assert_eq!(page.len(), 1);
        assert!(!more);
        // Brute-force cross-check of rank against the liveness bits.
        for p in 0..log.entries.len() {
            let brute = (0..p)
                .filter(|&q| log.live[q / 64] & (1 << (q % 64)) != 0)
                .count();
            assert_eq!(log.rank(p), brute, "rank({p})");
        }
    }

    #[test]
    fn empty_log_and_push_from_empty() {
        let mut log = OrderedLog::default();
        assert_eq!(log.select(1), None);
        assert_eq!(log.page(0, 0, 10), (vec![], false));
        for i in 0..130 {
            log.push(e(i, i as u64));
        }
        assert_eq!(log.rank(130), 130);
        assert_eq!(log.select(129), Some(128));
    }
}
