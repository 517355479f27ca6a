//! The state store of assetbridge: poll cursors, content hashes, the DAM id → asset code map,
//! the durable deduplicated inbox, dead letters, outcome counters and scale-out locks.
//!
//! One behaviour, two backends, chosen by the URL given to [`Store::open`]:
//!
//! - **SQLite** (the default, embedded): `sqlite://path/to/state.db` or a plain path. WAL journal,
//!   `synchronous=FULL` (a returned write survives a power cut), busy timeout, one writer
//!   connection (concurrent writes share a `BEGIN IMMEDIATE` transaction, each in a savepoint of
//!   its own, committed together) and a pool of readers. One process.
//! - **PostgreSQL**: `postgres://…` / `postgresql://…`. Several processes can share it: claims use
//!   `FOR UPDATE SKIP LOCKED`, pollers take per-family advisory locks, `LISTEN/NOTIFY` wakes idle
//!   workers.
//!
//! The schema is migrated when the store opens (a `schema_migrations` table holds the version).
//!
//! Every call that writes is durable when it returns. Memory is bounded by the call: nothing
//! loads the whole inbox, hash table or dead-letter store.
//!
//! ## The inbox
//!
//! [`Store::enqueue`] writes changes in one transaction. A change whose event id was seen before
//! (within [`StoreOptions::seen_event_retention`]) is dropped. Per asset (family, DAM id) there is
//! at most one *pending* entry: a newer change replaces it. While an entry is *in flight*
//! (claimed), a newer change waits as a new pending entry, and is not claimable until the
//! in-flight one is completed, released, retried later or dead-lettered; a released or retried
//! entry that has a newer one behind it is dropped in its favour (a change carries the asset's
//! whole state, so the newer one is enough). A change older by the DAM's own timestamp than the
//! pending or in-flight one is dropped as stale.
//!
//! [`Store::claim`] leases up to `limit` ready entries, oldest first; an expired lease makes an
//! entry claimable again (at-least-once), and taking it over counts an attempt
//! ([`LEASE_RAN_OUT`]); [`Store::renew_leases`] keeps a live worker's leases.

#![warn(missing_docs)]

mod error;
mod links;
mod model;
pub mod page_cache;
mod plan;
mod postgres;
mod reconcile;
mod sqlite;
#[cfg(feature = "test-support")]
pub mod testing;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use assetbridge_core::{AssetChange, ContentHash, Cursor};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::Notify;

pub use error::{redact_url, Backend, StoreError};

/// How the last error of an inbox entry taken over from a worker whose lease ran out begins
/// (`` the lease of worker `NAME` ran out before it finished ``): written by [`Store::claim`].
pub const LEASE_RAN_OUT: &str = "the lease of worker";
pub use model::{
    Backlog, Claimed, DeadLetter, DeadLetterFilter, DeadLetterPayload, DeadLetterReason,
    EnqueueOutcome, FamilyStatus, OutcomeCounts, PruneOutcome, StoreOptions, WrittenAsset,
};

pub use links::{
    AssetLinks, LinkBacklog, LinkClaim, LinkDead, LinkOp, LinkRequest, LinkResults, LinkRetry,
    LinkTarget, PendingLink,
};

pub use reconcile::{CodeState, ReconcilePass, ReconcileRun, ABANDONED_PASS_AGE};

/// What the store answers keyed by asset code or DAM id ([`Store::hashes`],
/// [`Store::asset_codes`]). foldhash rather than the standard library's SipHash: the write path
/// looks every asset of a page up in these maps, and SipHash was ≈ 3 % of the connector's
/// instructions at zero latency. (foldhash is seeded per process; the keys are the DAM's ids
/// and the codes made from them, not a network peer's choosing.)
pub type KeyMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

use postgres::PgStore;
use sqlite::{SqliteStore, SqliteTarget};

/// Default number of dead letters a listing returns when the filter sets no limit.
pub const DEFAULT_LISTING_LIMIT: usize = 100;
/// Most dead letters a single listing returns.
pub const MAX_LISTING_LIMIT: usize = 10_000;

/// The state store. Cheap to clone (an `Arc`); clones share the connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    options: StoreOptions,
    shown_url: String,
    wake: Arc<Notify>,
    last_prune: AtomicI64,
}

enum Db {
    Sqlite(SqliteStore),
    Postgres(Box<PgStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("url", &self.inner.shown_url)
            .finish()
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.inner.db {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the store at `url` with default [`StoreOptions`].
    ///
    /// `sqlite://path/to/state.db`, `sqlite:path`, `sqlite::memory:` or a plain path → SQLite
    /// (file and parent directories created if missing); `postgres://…` / `postgresql://…` →
    /// PostgreSQL (the database must exist). Migrates the schema.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// Opens the store at `url` with the given options (see [`Store::open`]).
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let shown_url = redact_url(url);
        let db = match parse_target(url)? {
            Target::Postgres => {
                Db::Postgres(Box::new(PgStore::open(url, &options, &shown_url).await?))
            }
            Target::Sqlite(t) => Db::Sqlite(SqliteStore::open(t, &options, &shown_url).await?),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                options,
                shown_url,
                wake: Arc::new(Notify::new()),
                last_prune: AtomicI64::new(now_micros()),
            }),
        })
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        match self.inner.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The store URL with any password replaced by `***`.
    pub fn display_url(&self) -> &str {
        &self.inner.shown_url
    }

    /// Closes every connection; calls made afterwards fail. Held [`FamilyLock`]s keep their own
    /// connections.
    pub async fn close(&self) {
        match &self.inner.db {
            Db::Sqlite(s) => s.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    // --- cursors -------------------------------------------------------------------------

    /// The poll cursor of `family`, if one was stored.
    pub async fn cursor(&self, family: &str) -> Result<Option<Cursor>, StoreError> {
        dispatch!(self, s => s.cursor(family))
    }

    /// Stores the poll cursor of `family` and records now as its last successful poll.
    pub async fn set_cursor(&self, family: &str, cursor: &Cursor) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_cursor(family, cursor))
    }

    // --- content hashes ------------------------------------------------------------------

    /// The last written content hash of each of `codes` that has one (one query).
    pub async fn hashes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<KeyMap<ContentHash>, StoreError> {
        dispatch!(self, s => s.hashes(family, codes))
    }

    /// Records the content hashes of written assets (code, hash) in one transaction; a code
    /// repeated in `entries` keeps its last hash. Adds `entries.len()` (distinct codes) to the
    /// family's `assets_written` counter.
    pub async fn put_hashes(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_hashes(family, entries))
    }

    /// Forgets the content hashes of `codes` (e.g. after a delete).
    pub async fn remove_hashes(&self, family: &str, codes: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_hashes(family, codes))
    }

    // --- DAM id → asset code -------------------------------------------------------------

    /// Records which asset code each DAM id (dam_id, code) was written as, so a delete (which
    /// only knows the DAM id) finds the PIM asset. One transaction; the last entry per DAM id wins.
    pub async fn put_asset_codes(
        &self,
        family: &str,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_asset_codes(family, entries))
    }

    /// The asset code of each of `dam_ids` that has one: DAM id → code (one query).
    pub async fn asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<KeyMap<String>, StoreError> {
        dispatch!(self, s => s.asset_codes(family, dam_ids))
    }

    /// Which DAM ids are written as each of `codes`: code → DAM ids, sorted (codes no DAM id
    /// is written as are left out). Two DAM assets whose mapping gives one code share one PIM
    /// asset; a deletion asks this before deleting it. On SQLite, merges the recent writes
    /// first (the code index is the tables'); meant for deletions, not for every write.
    pub async fn dam_ids_by_code(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, StoreError> {
        dispatch!(self, s => s.dam_ids_by_code(family, codes))
    }

    /// Forgets the asset codes of `dam_ids` (after the asset was deleted in the PIM).
    pub async fn remove_asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_asset_codes(family, dam_ids))
    }

    /// Stores `entries` in the hash table **without** counting them as written assets: markers
    /// the engine keeps for asset versions refused for good (so that a poll re-reading such a
    /// version does not dead-letter it again). A later successful write replaces the marker.
    pub async fn put_hash_markers(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_hash_markers(family, entries))
    }

    // --- both at once --------------------------------------------------------------------

    /// Records written assets in one transaction (one round trip on PostgreSQL): their content
    /// hashes (as [`put_hashes`](Self::put_hashes)) and their DAM id → code entries (as
    /// [`put_asset_codes`](Self::put_asset_codes)).
    pub async fn record_written(
        &self,
        family: &str,
        assets: &[WrittenAsset],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_written(family, assets))
    }

    /// Forgets deleted assets in one transaction: the hashes of their codes and the code
    /// entries of their DAM ids. `assets`: (dam_id, code).
    pub async fn forget_assets(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.forget_assets(family, assets))
    }

    // --- inbox ---------------------------------------------------------------------------

    /// Writes `changes` into the inbox in one transaction, durable when it returns.
    ///
    /// Redeliveries (event id seen before, by any source: ids are one namespace) are dropped;
    /// a change replaces the pending entry of
    /// its asset; while the asset's entry is in flight the change waits behind it; a change
    /// older (by the DAM's time) than what the inbox holds for the asset is dropped as stale.
    /// Wakes idle workers (in this process, and on PostgreSQL in every process).
    pub async fn enqueue(&self, changes: &[AssetChange]) -> Result<EnqueueOutcome, StoreError> {
        if changes.is_empty() {
            return Ok(EnqueueOutcome::default());
        }
        let outcome = dispatch!(self, s => s.enqueue(changes))?;
        if outcome.accepted > 0 {
            self.wake_local();
        }
        self.maybe_prune().await;
        Ok(outcome)
    }

    /// Leases up to `limit` ready entries to `worker` for `lease`: entries whose retry time has
    /// come, not under a live lease, and with no older entry for the same asset. Oldest first;
    /// the result is ordered by family, then id, so batches group by family.
    ///
    /// Taking over an entry whose lease ran out (its worker died, or stalled past the lease
    /// without renewing it) counts an attempt, with that as its last error: a change that brings
    /// its worker down every time ends in the dead letters instead of coming back for ever.
    ///
    /// An entry whose payload no longer decodes is moved to the dead letters (kind
    /// `unparseable`) instead of being returned.
    pub async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        dispatch!(self, s => s.claim(worker, limit, lease))
    }

    /// Extends the leases `worker` holds on these entries to now + `lease` (a worker whose round
    /// takes longer than a lease renews it, so no other worker takes its entries over while it
    /// is alive). Entries finished meanwhile, given back, or taken over by another worker after
    /// the lease ran out are left alone. Returns how many leases were extended.
    pub async fn renew_leases(
        &self,
        worker: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.renew_leases(worker, ids, lease))
    }

    /// Removes finished entries from the inbox. Unknown ids are ignored.
    pub async fn complete(&self, ids: &[i64]) -> Result<(), StoreError> {
        dispatch!(self, s => s.complete(ids))
    }

    /// Gives claimed entries back without counting an attempt (graceful shutdown). An entry with
    /// a newer change waiting behind it is dropped in that change's favour. Unknown or unclaimed
    /// ids are ignored.
    pub async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        dispatch!(self, s => s.release(ids))?;
        self.wake_local();
        Ok(())
    }

    /// Gives a claimed entry back after a transient failure: `attempts + 1`, not claimable
    /// before now + `delay`, `error` kept as its last error. If a newer change for the asset is
    /// waiting, the entry is dropped in its favour instead.
    pub async fn retry_later(
        &self,
        id: i64,
        error: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.retry_later(id, error, delay))
    }

    /// Moves an inbox entry to the dead letters atomically. An id no longer in the inbox is
    /// ignored (another worker finished it after this worker's lease expired).
    pub async fn dead_letter(&self, id: i64, reason: &DeadLetterReason) -> Result<(), StoreError> {
        dispatch!(self, s => s.dead_letter(id, reason))
    }

    /// Records a dead letter for a change that never entered the inbox (e.g. the poller's
    /// mapping failed). Returns its id.
    pub async fn add_dead_letter(
        &self,
        change: &AssetChange,
        reason: &DeadLetterReason,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.add_dead_letter(change, reason))
    }

    /// Records a dead letter for a message that could not be parsed into a change: its raw
    /// bytes, and the family and source if known. Returns its id. Raw dead letters cannot be
    /// retried (only listed and purged).
    pub async fn add_raw_dead_letter(
        &self,
        family: Option<&str>,
        source: Option<&str>,
        raw: &[u8],
        reason: &DeadLetterReason,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.add_raw_dead_letter(family, source, raw, reason))
    }

    /// [`add_raw_dead_letter`](Self::add_raw_dead_letter) for an unusable event that has its own
    /// id, once: `None` when a raw dead letter of the same event id from the same source is
    /// already there (a redelivery — sources such as Adobe I/O Events deliver at least once).
    pub async fn add_raw_event_dead_letter(
        &self,
        family: Option<&str>,
        event_id: &str,
        source: &str,
        raw: &[u8],
        reason: &DeadLetterReason,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.add_raw_event_dead_letter(family, event_id, source, raw, reason))
    }

    /// Counts of the inbox (pending, in flight, delayed, oldest age).
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        dispatch!(self, s => s.backlog())
    }

    // --- dead letters --------------------------------------------------------------------

    /// Dead letters matching `filter`, lowest id first, at most `filter.limit` (default
    /// [`DEFAULT_LISTING_LIMIT`], at most [`MAX_LISTING_LIMIT`]). Page with `after_id`.
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        dispatch!(self, s => s.dead_letters(filter))
    }

    /// The `n` most recent dead letters (highest ids), oldest of them first: one indexed read
    /// however many there are (at most [`MAX_LISTING_LIMIT`]).
    pub async fn recent_dead_letters(&self, n: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let n = n.min(MAX_LISTING_LIMIT);
        // The backends read newest first (the index, backwards).
        let mut newest_first = dispatch!(self, s => s.recent_dead_letters(n))?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// One dead letter.
    pub async fn dead_letter_by_id(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        dispatch!(self, s => s.dead_letter_by_id(id))
    }

    /// Moves the dead letters matching `filter` back into the inbox (attempts reset, ready now,
    /// each change marked replayed: `AssetChange::mark_replayed`, so the write path reads the
    /// asset from the DAM again) in one transaction, processed in chunks so memory stays bounded. Event-id deduplication
    /// does not apply (they were seen already); per-asset rules do: a retried change older than
    /// the asset's pending one is dropped. Raw dead letters are skipped (they stay). Returns how
    /// many dead letters were taken out.
    pub async fn retry_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        let moved = dispatch!(self, s => s.retry_dead_letters(filter))?;
        if moved > 0 {
            self.wake_local();
        }
        Ok(moved)
    }

    /// Deletes the dead letters matching `filter` (all matches when `filter.limit` is `None`).
    /// Returns how many were deleted.
    pub async fn purge_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_dead_letters(filter))
    }

    /// Number of dead letters.
    pub async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.dead_letter_count())
    }

    // --- status --------------------------------------------------------------------------

    /// Every family the store knows (has a cursor or written assets), by name.
    pub async fn family_status(&self) -> Result<Vec<FamilyStatus>, StoreError> {
        dispatch!(self, s => s.family_status())
    }

    /// Adds PIM write outcomes of `family` to the current minute's counters.
    pub async fn record_outcomes(
        &self,
        family: &str,
        succeeded: u64,
        failed: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_outcomes(family, succeeded, failed))
    }

    /// Outcomes recorded within the last `window` (minute granularity), for one family or all.
    pub async fn outcomes(
        &self,
        window: Duration,
        family: Option<&str>,
    ) -> Result<OutcomeCounts, StoreError> {
        dispatch!(self, s => s.outcomes(window, family))
    }

    /// Deletes event ids older than [`StoreOptions::seen_event_retention`] and outcome counters
    /// older than [`StoreOptions::outcome_retention`], in bounded batches. `enqueue` calls this
    /// at most once per [`StoreOptions::prune_interval`].
    pub async fn prune(&self) -> Result<PruneOutcome, StoreError> {
        self.inner.last_prune.store(now_micros(), Ordering::Relaxed);
        dispatch!(self, s => s.prune(&self.inner.options))
    }

    async fn maybe_prune(&self) {
        let now = now_micros();
        let last = self.inner.last_prune.load(Ordering::Relaxed);
        if now - last < dur_micros(self.inner.options.prune_interval) {
            return;
        }
        if self
            .inner
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if let Err(e) = self.prune().await {
            tracing::warn!(error = %e, "pruning the state store failed");
        }
    }

    // --- scale-out -----------------------------------------------------------------------

    /// Tries to become the one poller of `family`. `None`: someone else holds it.
    ///
    /// PostgreSQL: a session advisory lock on a dedicated connection owned by the returned
    /// [`FamilyLock`], exclusive across processes (keyed by a 32-bit hash of the family name:
    /// two families whose names collide share a lock, which only serialises them). SQLite: exclusive within this process per
    /// database file (SQLite serves one process). Released by [`FamilyLock::unlock`] or on drop.
    pub async fn try_lock_family(&self, family: &str) -> Result<Option<FamilyLock>, StoreError> {
        match &self.inner.db {
            Db::Postgres(p) => Ok(p.try_lock_family(family).await?.map(|conn| FamilyLock {
                family: family.to_owned(),
                hold: Hold::Postgres(Some(conn)),
            })),
            Db::Sqlite(s) => {
                let key = (sqlite_lock_scope(s, &self.inner), family.to_owned());
                let mut held = LOCAL_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
                if held.insert(key.clone()) {
                    Ok(Some(FamilyLock {
                        family: family.to_owned(),
                        hold: Hold::Local(Some(key)),
                    }))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Waits until work may have arrived in the inbox (an enqueue, release or dead-letter retry
    /// — on PostgreSQL from any process, via `LISTEN/NOTIFY`) or `timeout` passed. Spurious
    /// wake-ups are possible: callers claim and, finding nothing, wait again.
    ///
    /// PostgreSQL: the first call starts a background listener (one extra connection, re-made
    /// after a connection loss); a notification sent before it listens is not seen, which the
    /// timeout covers.
    pub async fn wait_for_work(&self, timeout: Duration) {
        if let Db::Postgres(p) = &self.inner.db {
            p.ensure_listener(self.inner.wake.clone());
        }
        let _ = tokio::time::timeout(timeout, self.inner.wake.notified()).await;
    }

    fn wake_local(&self) {
        self.inner.wake.notify_waiters();
        // Keep one permit for a worker that is between an empty claim and its wait.
        self.inner.wake.notify_one();
    }
}

/// Process-wide SQLite family locks: (database scope, family).
static LOCAL_LOCKS: LazyLock<Mutex<HashSet<(String, String)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

fn sqlite_lock_scope(s: &SqliteStore, inner: &Arc<Inner>) -> String {
    match &s.target {
        SqliteTarget::File(p) => std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .to_string_lossy()
            .into_owned(),
        // An in-memory database is private to its store.
        SqliteTarget::Memory => format!("memory:{:p}", Arc::as_ptr(inner)),
    }
}

/// Exclusive right to poll one family, from [`Store::try_lock_family`]. Released by
/// [`FamilyLock::unlock`] or when dropped.
pub struct FamilyLock {
    family: String,
    hold: Hold,
}

enum Hold {
    Local(Option<(String, String)>),
    Postgres(Option<sqlx::PgConnection>),
}

impl fmt::Debug for FamilyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FamilyLock")
            .field("family", &self.family)
            .finish()
    }
}

impl FamilyLock {
    /// The family this lock is for.
    pub fn family(&self) -> &str {
        &self.family
    }

    /// Whether the lock is still held. PostgreSQL: pings the lock's connection (the lock lives
    /// as long as that session); a `false` means another process may now hold it.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.hold {
            Hold::Local(key) => key.is_some(),
            Hold::Postgres(Some(conn)) => postgres::ping(conn).await,
            Hold::Postgres(None) => false,
        }
    }

    /// Releases the lock now.
    pub async fn unlock(mut self) -> Result<(), StoreError> {
        match &mut self.hold {
            Hold::Local(key) => {
                release_local(key.take());
                Ok(())
            }
            Hold::Postgres(conn) => match conn.take() {
                Some(conn) => postgres::unlock_family(conn, &self.family).await,
                None => Ok(()),
            },
        }
    }
}

impl Drop for FamilyLock {
    fn drop(&mut self) {
        match &mut self.hold {
            Hold::Local(key) => release_local(key.take()),
            Hold::Postgres(conn) => {
                if let Some(conn) = conn.take() {
                    let family = std::mem::take(&mut self.family);
                    // Closing the session releases the lock; do it politely when a runtime is
                    // there, else dropping the socket ends the session just the same.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            let _ = postgres::unlock_family(conn, &family).await;
                        });
                    }
                }
            }
        }
    }
}

fn release_local(key: Option<(String, String)>) {
    if let Some(key) = key {
        LOCAL_LOCKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

// --- shared helpers ---------------------------------------------------------------------

enum Target {
    Postgres,
    Sqlite(SqliteTarget),
}

fn parse_target(url: &str) -> Result<Target, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return Ok(Target::Postgres);
    }
    if trimmed == ":memory:" || trimmed == "sqlite::memory:" || trimmed == "sqlite://:memory:" {
        return Ok(Target::Sqlite(SqliteTarget::Memory));
    }
    let path = if let Some(rest) = trimmed.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("sqlite:") {
        rest
    } else if let Some((scheme, _)) = trimmed.split_once("://") {
        return Err(invalid(&format!(
            "unsupported scheme `{scheme}` (use sqlite://, postgres:// or a file path)"
        )));
    } else {
        trimmed
    };
    if path.is_empty() {
        return Err(invalid("no database file path"));
    }
    if path.contains('?') {
        return Err(invalid("query parameters are not supported for SQLite"));
    }
    Ok(Target::Sqlite(SqliteTarget::File(PathBuf::from(path))))
}

pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

pub(crate) fn dur_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn listing_limit(limit: Option<usize>) -> usize {
    limit
        .unwrap_or(DEFAULT_LISTING_LIMIT)
        .min(MAX_LISTING_LIMIT)
}

/// Cursor timestamps are stored as RFC 3339 text with nanoseconds, so they round-trip exactly.
pub(crate) fn cursor_to_text(c: &Cursor) -> String {
    c.updated_at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn cursor_from_columns(
    updated_at: Option<String>,
    dam_id: Option<String>,
) -> Result<Option<Cursor>, chrono::ParseError> {
    match (updated_at, dam_id) {
        (Some(t), Some(dam_id)) => Ok(Some(Cursor {
            updated_at: DateTime::parse_from_rfc3339(&t)?.with_timezone(&Utc),
            dam_id,
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert!(matches!(
            parse_target("postgres://u@h/db"),
            Ok(Target::Postgres)
        ));
        assert!(matches!(
            parse_target("postgresql://u@h/db"),
            Ok(Target::Postgres)
        ));
        assert!(matches!(
            parse_target("sqlite://state/s.db"),
            Ok(Target::Sqlite(SqliteTarget::File(p))) if p == std::path::Path::new("state/s.db")
        ));
        assert!(matches!(
            parse_target("sqlite:///abs/s.db"),
            Ok(Target::Sqlite(SqliteTarget::File(p))) if p == std::path::Path::new("/abs/s.db")
        ));
        assert!(matches!(
            parse_target("s.db"),
            Ok(Target::Sqlite(SqliteTarget::File(_)))
        ));
        assert!(matches!(
            parse_target("sqlite::memory:"),
            Ok(Target::Sqlite(SqliteTarget::Memory))
        ));
        let e = parse_target("mysql://u:pw@h/db").err().unwrap().to_string();
        assert!(
            e.contains("unsupported scheme `mysql`") && !e.contains("pw"),
            "{e}"
        );
        assert!(parse_target("").is_err());
        assert!(parse_target("sqlite://").is_err());
    }
}
