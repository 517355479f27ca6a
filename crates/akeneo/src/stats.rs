//! Counters of what the client did, for metrics and tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// A snapshot of the client's counters since it was created ([`AkeneoClient::stats`](crate::AkeneoClient::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (every attempt, token requests included).
    pub requests: u64,
    /// Answers received, by HTTP status.
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Attempts that got no answer: timeout, refused or dropped connection.
    pub transport_errors: u64,
    /// Attempts repeated after a transient failure (408, 5xx, transport error).
    pub retries: u64,
    /// 429 answers received (each followed by a wait and a new attempt, within bounds).
    pub rate_limited: u64,
    /// Total time spent waiting on 429 `Retry-After`.
    pub rate_limit_wait: Duration,
    /// Total time spent waiting on the client's own requests-per-second ceiling.
    pub throttle_wait: Duration,
    /// Most HTTP calls ever in flight at once (never above `max_concurrency`).
    pub max_in_flight: u64,
    /// Password grants (first token, and fallbacks when a refresh was refused).
    pub password_grants: u64,
    /// Successful refresh_token grants.
    pub token_refreshes: u64,
    /// refresh_token grants the PIM refused (then the password grant is used).
    pub refresh_failures: u64,
    /// Requests replayed after a 401 with a renewed token.
    pub unauthorized_replays: u64,
    /// Batches split in two after a 413 or a "too large" 403.
    pub batch_splits: u64,
    /// Family structures fetched from the PIM (cache misses).
    pub structure_fetches: u64,
    /// Attribute options created by the client.
    pub options_created: u64,
    /// Media files uploaded, and their total size in bytes.
    pub media_uploads: u64,
    pub media_bytes: u64,
    /// Durations of the HTTP attempts that got an answer (send → body read).
    pub request_latency: assetbridge_core::latency::LatencySnapshot,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub by_status: Mutex<BTreeMap<u16, u64>>,
    pub transport_errors: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub rate_limit_wait_us: AtomicU64,
    pub throttle_wait_us: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub password_grants: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    pub unauthorized_replays: AtomicU64,
    pub batch_splits: AtomicU64,
    pub structure_fetches: AtomicU64,
    pub options_created: AtomicU64,
    pub media_uploads: AtomicU64,
    pub media_bytes: AtomicU64,
    pub latency: assetbridge_core::latency::LatencyHistogram,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub fn status(&self, status: u16) {
        *self.by_status.lock().entry(status).or_default() += 1;
    }

    pub fn add_wait(c: &AtomicU64, d: Duration) {
        c.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Marks one call as in flight until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
        InFlight(self)
    }

    pub fn snapshot(&self) -> ClientStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        ClientStats {
            requests: g(&self.requests),
            responses_by_status: self.by_status.lock().clone(),
            transport_errors: g(&self.transport_errors),
            retries: g(&self.retries),
            rate_limited: g(&self.rate_limited),
            rate_limit_wait: Duration::from_micros(g(&self.rate_limit_wait_us)),
            throttle_wait: Duration::from_micros(g(&self.throttle_wait_us)),
            max_in_flight: g(&self.max_in_flight),
            password_grants: g(&self.password_grants),
            token_refreshes: g(&self.token_refreshes),
            refresh_failures: g(&self.refresh_failures),
            unauthorized_replays: g(&self.unauthorized_replays),
            batch_splits: g(&self.batch_splits),
            structure_fetches: g(&self.structure_fetches),
            options_created: g(&self.options_created),
            media_uploads: g(&self.media_uploads),
            media_bytes: g(&self.media_bytes),
            request_latency: self.latency.snapshot(),
        }
    }
}

pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
