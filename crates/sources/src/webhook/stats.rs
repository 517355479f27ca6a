//! Counters of the webhook server, for metrics and status pages.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Plain atomic counters of a webhook server (cumulative since it started). Read them with
/// [`WebhookStats::snapshot`].
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Deliveries (POSTs) received on a webhook endpoint, whatever their outcome.
    pub received: AtomicU64,
    /// Deliveries answered 2xx.
    pub acknowledged: AtomicU64,
    /// Changes the inbox accepted (new or replacing a pending change).
    pub accepted: AtomicU64,
    /// Changes dropped as redeliveries (event id seen before).
    pub duplicates: AtomicU64,
    /// Changes dropped as older than what the inbox holds for the asset.
    pub stale: AtomicU64,
    /// Items no asset family applies to (acknowledged, not stored).
    pub skipped: AtomicU64,
    /// Adobe events of a type that is not handled (acknowledged, not stored).
    pub ignored: AtomicU64,
    /// Adobe events that could not become a change, stored as raw dead letters.
    pub dead_lettered: AtomicU64,
    /// Challenge requests answered (Adobe).
    pub challenges: AtomicU64,
    /// Refused: bad or missing signature / API key, wrong recipient (401).
    pub rejected_unauthorized: AtomicU64,
    /// Refused: malformed body (400), or a body not received in time (408).
    pub rejected_malformed: AtomicU64,
    /// Refused: body over the limit (413).
    pub rejected_too_large: AtomicU64,
    /// Refused: the inbox backlog is over its limit (503).
    pub rejected_backlog_full: AtomicU64,
    /// Refused: the store failed (503).
    pub rejected_store_unavailable: AtomicU64,
    /// Refused: Adobe's public keys could not be fetched (503).
    pub rejected_key_unavailable: AtomicU64,
    /// Requests to an unknown path (404).
    pub not_found: AtomicU64,
    /// Deliveries handed to the group committer (those with at least one change to store).
    pub commit_requests: AtomicU64,
    /// Inbox transactions the group committer made (each writes every delivery queued when it
    /// started, up to 1 000 changes): `commit_requests / commits` deliveries per transaction.
    pub commits: AtomicU64,
    /// Of those, transactions that failed (each of their deliveries answered 503).
    pub commit_failures: AtomicU64,
}

/// A copy of [`WebhookStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct WebhookStatsSnapshot {
    pub received: u64,
    pub acknowledged: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub skipped: u64,
    pub ignored: u64,
    pub dead_lettered: u64,
    pub challenges: u64,
    pub rejected_unauthorized: u64,
    pub rejected_malformed: u64,
    pub rejected_too_large: u64,
    pub rejected_backlog_full: u64,
    pub rejected_store_unavailable: u64,
    pub rejected_key_unavailable: u64,
    pub not_found: u64,
    pub commit_requests: u64,
    pub commits: u64,
    pub commit_failures: u64,
}

impl WebhookStats {
    /// The current values.
    pub fn snapshot(&self) -> WebhookStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStatsSnapshot {
            received: g(&self.received),
            acknowledged: g(&self.acknowledged),
            accepted: g(&self.accepted),
            duplicates: g(&self.duplicates),
            stale: g(&self.stale),
            skipped: g(&self.skipped),
            ignored: g(&self.ignored),
            dead_lettered: g(&self.dead_lettered),
            challenges: g(&self.challenges),
            rejected_unauthorized: g(&self.rejected_unauthorized),
            rejected_malformed: g(&self.rejected_malformed),
            rejected_too_large: g(&self.rejected_too_large),
            rejected_backlog_full: g(&self.rejected_backlog_full),
            rejected_store_unavailable: g(&self.rejected_store_unavailable),
            rejected_key_unavailable: g(&self.rejected_key_unavailable),
            not_found: g(&self.not_found),
            commit_requests: g(&self.commit_requests),
            commits: g(&self.commits),
            commit_failures: g(&self.commit_failures),
        }
    }
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
