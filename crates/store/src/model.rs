//! The values the store hands out and takes in.

use std::time::Duration;

use assetbridge_core::{AssetChange, ContentHash, Cursor};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Tuning of a [`Store`](crate::Store). `StoreOptions::default()` gives the defaults listed per
/// field.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL: connections in the pool. SQLite: reader connections (writes always go
    /// through one writer connection). Default: 8.
    pub max_connections: u32,
    /// How long to wait for a connection (PostgreSQL connect, pool acquire). Default: 10 s.
    pub connect_timeout: Duration,
    /// SQLite: how long a statement waits for another process's write lock. Default: 5 s.
    pub busy_timeout: Duration,
    /// PostgreSQL: `statement_timeout` of every connection. Default: 60 s.
    pub statement_timeout: Duration,
    /// How long delivery (event) ids are remembered for deduplication. Default: 7 days.
    pub seen_event_retention: Duration,
    /// How long per-minute outcome counters are kept. Default: 24 h.
    pub outcome_retention: Duration,
    /// How often `enqueue` prunes expired event ids and outcome counters (at most once per
    /// interval per `Store`). Default: 10 min.
    pub prune_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            seen_event_retention: Duration::from_secs(7 * 24 * 3600),
            outcome_retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(600),
        }
    }
}

/// What [`Store::enqueue`](crate::Store::enqueue) did with a batch of changes.
///
/// Every change of the call lands in exactly one of `accepted`, `duplicates`, `stale` or (when
/// a later change of the same call for the same asset replaced it) `superseded`. `superseded`
/// also counts pending changes from earlier calls that an accepted change replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueOutcome {
    /// Changes of this call now pending in the inbox (new entries, or replacing a pending one).
    pub accepted: u64,
    /// Pending changes replaced by a newer change for the same asset.
    pub superseded: u64,
    /// Changes dropped because their event id was seen before (redeliveries).
    pub duplicates: u64,
    /// Changes dropped because a pending change for the same asset is newer by the DAM's own
    /// timestamp (`updated_at` of an upsert, `deleted_at` of a delete).
    pub stale: u64,
}

/// An inbox entry handed to a worker by [`Store::claim`](crate::Store::claim).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The inbox id; pass it to `complete`, `release`, `retry_later` or `dead_letter`.
    pub id: i64,
    /// The change to apply.
    pub change: AssetChange,
    /// Failed attempts so far: `retry_later` calls, and take-overs of an expired lease.
    pub attempts: u32,
    /// When the change (or the first change it superseded) entered the inbox.
    pub enqueued_at: DateTime<Utc>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

/// Size of the inbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries not claimed by a live lease (including those waiting for a retry).
    pub pending: u64,
    /// Entries claimed under a lease that has not expired.
    pub in_flight: u64,
    /// Of `pending`, entries waiting for their retry time (`not_before` in the future).
    pub delayed: u64,
    /// Age of the oldest entry; `None` when the inbox is empty.
    pub oldest_age: Option<Duration>,
}

/// Why a change became a dead letter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeadLetterReason {
    /// `pim_rejected`, `mapping`, `retries_exhausted`, `unparseable`, ...
    pub kind: String,
    /// A human-readable explanation.
    pub message: String,
    /// The PIM's HTTP status for this asset, if the PIM refused it.
    pub pim_status: Option<u16>,
    /// The PIM's message, if any.
    pub pim_message: Option<String>,
    /// The PIM's structured per-field errors, if any.
    pub pim_errors: Option<serde_json::Value>,
}

impl DeadLetterReason {
    /// A reason with just a kind and a message.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            ..Self::default()
        }
    }
}

/// What a dead letter holds: a change, or the raw bytes of a message that never parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetterPayload {
    /// A change (retryable).
    Change(AssetChange),
    /// The raw bytes of a message that never parsed (not retryable).
    Raw(Vec<u8>),
}

/// A change that failed for good, kept until retried or purged.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The dead letter's id.
    pub id: i64,
    /// The asset family, if known (always known for a `Change` payload).
    pub family: Option<String>,
    /// The DAM id, if known.
    pub dam_id: Option<String>,
    /// The delivery (event) id, if the change had one.
    pub event_id: Option<String>,
    /// The source that delivered it (`poll`, `webhook`, `amqp`, ...), if known.
    pub source: Option<String>,
    /// What failed.
    pub payload: DeadLetterPayload,
    /// Why it failed.
    pub reason: DeadLetterReason,
    /// Failed attempts before it was dead-lettered.
    pub attempts: u32,
    /// The last transient error seen while it was in the inbox.
    pub last_error: Option<String>,
    /// When it entered the inbox, if it ever did.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    pub failed_at: DateTime<Utc>,
}

/// Which dead letters to list, retry or purge. All set conditions must hold; the default
/// (nothing set) matches every dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only these ids (`None`: any id).
    pub ids: Option<Vec<i64>>,
    /// Only this asset family.
    pub family: Option<String>,
    /// Only this reason kind (`pim_rejected`, ...).
    pub kind: Option<String>,
    /// Only those whose message, PIM message or PIM errors contain this text (case-insensitive).
    pub error_contains: Option<String>,
    /// Only ids greater than this (keyset paging: pass the last id of the previous page).
    pub after_id: Option<i64>,
    /// At most this many, lowest ids first. Listing: default 100, at most 10 000.
    /// Retry and purge: `None` means all that match.
    pub limit: Option<usize>,
}

impl DeadLetterFilter {
    /// A filter matching exactly these ids.
    pub fn ids(ids: impl Into<Vec<i64>>) -> Self {
        Self {
            ids: Some(ids.into()),
            ..Self::default()
        }
    }
}

/// Per-family state for status pages.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyStatus {
    /// The asset family.
    pub family: String,
    /// Where the family's poller resumes.
    pub cursor: Option<Cursor>,
    /// When the cursor was last stored (the end of the last successful poll).
    pub last_success: Option<DateTime<Utc>>,
    /// Asset writes recorded with `put_hashes` since the store was created (cumulative).
    pub assets_written: u64,
}

/// Counts of PIM write outcomes over a window, from [`Store::outcomes`](crate::Store::outcomes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Assets the PIM accepted.
    pub succeeded: u64,
    /// Assets the PIM refused or that failed for good.
    pub failed: u64,
}

impl OutcomeCounts {
    /// `failed / (succeeded + failed)`, or 0 when there were no outcomes.
    pub fn error_rate(&self) -> f64 {
        let total = self.succeeded + self.failed;
        if total == 0 {
            0.0
        } else {
            self.failed as f64 / total as f64
        }
    }
}

/// What [`Store::prune`](crate::Store::prune) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Expired event ids deleted.
    pub seen_events: u64,
    /// Expired per-minute outcome counters deleted.
    pub outcome_buckets: u64,
}

/// An asset the PIM confirmed writing, for [`Store::record_written`](crate::Store::record_written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenAsset {
    /// The DAM's id of the asset.
    pub dam_id: String,
    /// The asset code it was written as.
    pub code: String,
    /// The content hash of what was written.
    pub hash: ContentHash,
    /// The DAM's time of the version written (its `updated_at`), when known. Recording it drops
    /// the asset's pending inbox entries for strictly older versions (not those being
    /// processed): a retry of an older version, due later, would otherwise overwrite this one
    /// in the PIM, and no poll would bring this one back once the cursor is past it.
    pub version: Option<DateTime<Utc>>,
}
