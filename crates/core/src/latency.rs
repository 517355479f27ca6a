//! A lock-free latency histogram for request durations (the clients' metrics).
//!
//! Pure data: the caller measures a duration and records it; nothing here reads a clock.
//! Buckets are fixed ([`LATENCY_BUCKETS`], seconds), as Prometheus histograms expect.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets: 1 ms … 30 s, then +Inf.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Durations counted per bucket, with their sum. Shared by reference; recording is one atomic
/// add per counter.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One per bucket of [`LATENCY_BUCKETS`], then the +Inf bucket (not cumulative).
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Observations per bucket of [`LATENCY_BUCKETS`], then +Inf (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of the observations, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

impl LatencySnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(500)); // ≤ 1 ms
        h.record(Duration::from_millis(50)); // ≤ 50 ms (bounds are inclusive)
        h.record(Duration::from_millis(51)); // ≤ 100 ms
        h.record(Duration::from_secs(60)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.counts.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[5], 1);
        assert_eq!(s.counts[6], 1);
        assert_eq!(s.counts[LATENCY_BUCKETS.len()], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_micros, 500 + 50_000 + 51_000 + 60_000_000);
        assert!((s.sum_seconds() - 60.1015).abs() < 1e-9);
    }
}
