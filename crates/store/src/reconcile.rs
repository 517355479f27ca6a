//! Bookkeeping of reconciliation passes (a full DAM ⇄ PIM comparison of one asset family).
//!
//! A pass is numbered ([`Store::begin_reconcile`]). While it streams the DAM listing it marks
//! the asset codes it met ([`Store::mark_seen`], one statement per DAM page); then, streaming
//! the PIM's listing page by page, it asks the store about each page's codes
//! ([`Store::reconcile_lookup`]): seen in this pass or not, written by the connector (the DAM
//! id → asset code map) or not, last hash and when it was written. So neither listing is ever
//! held in memory: the marks live in the store, one row per DAM asset, and are deleted when the
//! pass finishes ([`Store::finish_reconcile`]). Marks of a pass that never finished (the
//! process died) are deleted by the next pass of the family once they are a day old.
//!
//! Marks are per pass, not per family: two passes of one family (say, `sync --full` while `run`
//! holds its own) never see each other's marks.

use std::collections::HashMap;

use assetbridge_core::ContentHash;
use chrono::{DateTime, Utc};

use crate::{Db, Store, StoreError};

/// How old the marks of an unfinished pass must be before another pass deletes them.
pub const ABANDONED_PASS_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A reconciliation pass under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilePass {
    /// The pass number (unique in the store).
    pub id: i64,
    /// The asset family.
    pub family: String,
    /// When it started, by the store's clock (the same clock as a hash's `written_at`).
    pub started_at: DateTime<Utc>,
}

/// A finished (or abandoned) pass, for scheduling and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRun {
    /// The pass number.
    pub id: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Whether it compared everything (`false`: it stopped early — shutdown, an error, or
    /// backpressure — and applied nothing that needs a complete DAM listing).
    pub complete: bool,
}

/// What the store knows about one PIM asset code, for a pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodeState {
    /// The DAM id the connector wrote this code for (`None`: the connector never wrote it, or
    /// forgot it after deleting it).
    pub dam_id: Option<String>,
    /// The last content hash (or marker) recorded for the code.
    pub hash: Option<ContentHash>,
    /// When that hash was recorded.
    pub written_at: Option<DateTime<Utc>>,
    /// Whether the pass met the code in the DAM listing.
    pub seen: bool,
}

impl Store {
    /// Starts a reconciliation pass of `family` and returns it. Deletes the marks of the
    /// family's passes that started more than [`ABANDONED_PASS_AGE`] ago and never finished
    /// (recording them as finished, incomplete).
    pub async fn begin_reconcile(&self, family: &str) -> Result<ReconcilePass, StoreError> {
        self.begin_reconcile_with(family, ABANDONED_PASS_AGE).await
    }

    /// [`begin_reconcile`](Self::begin_reconcile) with another age after which an unfinished
    /// pass counts as abandoned.
    pub async fn begin_reconcile_with(
        &self,
        family: &str,
        abandoned_after: std::time::Duration,
    ) -> Result<ReconcilePass, StoreError> {
        match &self.inner.db {
            Db::Sqlite(s) => s.begin_reconcile(family, abandoned_after).await,
            Db::Postgres(p) => p.begin_reconcile(family, abandoned_after).await,
        }
    }

    /// Records that pass `pass` met `codes` in the DAM listing (one statement; codes already
    /// marked are ignored).
    pub async fn mark_seen(&self, pass: i64, codes: &[String]) -> Result<(), StoreError> {
        if codes.is_empty() {
            return Ok(());
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.mark_seen(pass, codes).await,
            Db::Postgres(p) => p.mark_seen(pass, codes).await,
        }
    }

    /// What the store knows about each of `codes` of `family` (one query): the codes with any
    /// state (written by the connector, a hash, or seen by `pass`); codes the store knows
    /// nothing about are absent from the map. `pass: None` never counts as seen (a dry run).
    pub async fn reconcile_lookup(
        &self,
        family: &str,
        pass: Option<i64>,
        codes: &[String],
    ) -> Result<HashMap<String, CodeState>, StoreError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.reconcile_lookup(family, pass, codes).await,
            Db::Postgres(p) => p.reconcile_lookup(family, pass, codes).await,
        }
    }

    /// Finishes pass `pass`: records when and whether it was complete, and deletes its marks.
    pub async fn finish_reconcile(&self, pass: i64, complete: bool) -> Result<(), StoreError> {
        match &self.inner.db {
            Db::Sqlite(s) => s.finish_reconcile(pass, complete).await,
            Db::Postgres(p) => p.finish_reconcile(pass, complete).await,
        }
    }

    /// The last finished pass of `family` (`complete_only`: the last complete one).
    pub async fn last_reconcile(
        &self,
        family: &str,
        complete_only: bool,
    ) -> Result<Option<ReconcileRun>, StoreError> {
        match &self.inner.db {
            Db::Sqlite(s) => s.last_reconcile(family, complete_only).await,
            Db::Postgres(p) => p.last_reconcile(family, complete_only).await,
        }
    }
}
