//! Recent writes of content hashes and asset codes: appended to a log table, merged into the
//! keyed tables in large sorted runs (migration 4).
//!
//! Why: `hashes` (by asset code) and `asset_codes` (by DAM id, and its index by code) have
//! random keys — DAM ids and asset codes are uuids in listing order — so writing a batch of 100
//! into them dirties about 100 B-tree leaves per table, each a 4 KiB page written to the WAL at
//! commit and again at checkpoint: ≈ 21 KB of page writes per asset, the one writer's main cost.
//! Appending the same entries to `recent_writes` (rowid order) dirties a few pages per batch;
//! a merge moves [`MERGE_AFTER_ROWS`] of them at once into the keyed tables, sorted by key, so
//! each leaf is written once per merge rather than once per entry.
//!
//! Reads must see the log: an in-memory index ([`Recent`]) holds the latest entry per key of
//! the unmerged log, bounded by the merge threshold. Invariants:
//! - The index is changed only by the writer's holder, after its statements are part of the
//!   writer's transaction (`WriteTx::release`) and before the writer is handed on, so the
//!   index follows the order of the statements. A reader may see an entry shortly before it is
//!   durable (its group's COMMIT); if a COMMIT fails, the index can no longer be trusted and the
//!   store reads the log with SQL instead ([`read_through_log`]) until it is reopened.
//! - A merge copies the whole log into the keyed tables and empties it in one statement group;
//!   the entries it merged stay readable in the index's frozen layer until its commit, so a read
//!   finds each entry in the index or in the tables, never in neither.
//! - A deletion (of a hash or a code) removes the key from the tables, from the log and from
//!   the index together.
//! - Opening the store merges whatever a previous process left in the log (crash recovery):
//!   the index starts empty.
//! - A key a read finds in neither the index nor a keyed table's filter ([`KeyFilter`], built
//!   from the table on the first read of that family and kind) is absent without a SQL read.
//!   A filter holds every key of its table: it is built while no merge runs
//!   (`Recent::merging`), and a merge inserts its keys into the filter before writing them
//!   into the table (a merge from the log with SQL drops the filters: rebuilt on the next
//!   read).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use assetbridge_core::ContentHash;
use sqlx::Row;

use super::group::{Durability, GroupWriter};
use super::key_filter::KeyFilter;
use super::{db, json_text, SqliteStore, WriteTx};
use crate::error::StoreError;
use crate::now_micros;

/// Migration 4: the log of recent writes. `AUTOINCREMENT`: a sequence number is never reused,
/// even after the log was emptied (by another process opening the file, say), so a merge's
/// "rows up to `seq`" never takes in rows appended after it began.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE recent_writes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    family     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    written_at INTEGER
);
"#;

/// Log rows after which the next write merges the log into the keyed tables. Each asset
/// written is about two rows (its code, written ahead, and its hash), so 24 576 rows hold
/// ≈ 12 000 assets: the index then holds ≈ 4 MiB (twice that while a merge runs), and a merge
/// writes each leaf of the keyed tables at most once per ≈ 12 000 assets instead of once per
/// entry. Measured (zero latency, 100 000 assets): 16 384 → 24 576 rows −5 % wall, 32 768 rows
/// −14 %; the 1 000 000-asset run's peak RSS 58.2 → 59.5 MiB (boxed strings in the index paid
/// for part of it) and 60.8 MiB at 32 768 — too close to its 64 MB ceiling.
pub(super) const MERGE_AFTER_ROWS: usize = 24_576;

/// Keys per read when a table's filter is built.
const FILTER_PAGE: i64 = 10_000;

/// Keys per transaction of a merge (see [`SqliteStore::merge_in_runs`]): at most this many
/// leaves per table are dirtied by one transaction.
const MERGE_RUN: usize = 512;

/// What a log row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    /// key: a DAM id, value: the asset code it is written as (`asset_codes`).
    Code,
    /// key: an asset code, value: its content hash (`hashes`).
    Hash,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Code => "code",
            Kind::Hash => "hash",
        }
    }

    /// The keyed table of this kind: (table, key column, value column).
    fn table(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Code => ("asset_codes", "dam_id", "code"),
            Kind::Hash => ("hashes", "code", "hash"),
        }
    }
}

/// Entries of one [`append`]: what the log and the index receive.
pub(super) struct Appended {
    pub(super) kind: Kind,
    /// (key, value), at most one per key.
    pub(super) entries: Vec<(String, String)>,
    /// When they were written (µs since the epoch): the hashes' `written_at`.
    pub(super) at: i64,
}

impl Appended {
    pub(super) fn now(kind: Kind, entries: Vec<(String, String)>) -> Self {
        Self {
            kind,
            entries,
            at: now_micros(),
        }
    }
}

/// Value and write time per key. Boxed strings: no spare capacity, 16 bytes a string less
/// than a `String` (the index holds up to two merges' worth of entries).
type Entries = BTreeMap<Box<str>, (Box<str>, i64)>;

/// The latest value per key of the log, per family and kind.
#[derive(Default)]
struct Layer {
    families: HashMap<String, FamilyLayer>,
}

#[derive(Default)]
struct FamilyLayer {
    codes: Entries,
    hashes: Entries,
}

impl FamilyLayer {
    fn map(&self, kind: Kind) -> &Entries {
        match kind {
            Kind::Code => &self.codes,
            Kind::Hash => &self.hashes,
        }
    }

    fn map_mut(&mut self, kind: Kind) -> &mut Entries {
        match kind {
            Kind::Code => &mut self.codes,
            Kind::Hash => &mut self.hashes,
        }
    }
}

impl Layer {
    fn get(&self, family: &str, kind: Kind, key: &str) -> Option<&str> {
        self.families.get(family)?.map(kind).get(key).map(|v| &*v.0)
    }

    fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Adds `newer` over this layer's entries.
    fn absorb(&mut self, newer: Layer) {
        if self.is_empty() {
            *self = newer;
            return;
        }
        for (family, f) in newer.families {
            let mine = self.families.entry(family).or_default();
            mine.codes.extend(f.codes);
            mine.hashes.extend(f.hashes);
        }
    }
}

#[derive(Default)]
struct Index {
    /// Entries of the log not yet being merged.
    active: Layer,
    /// Entries of a merge not yet known to be in the keyed tables.
    frozen: Layer,
    /// Rows appended since the last merge began.
    rows: usize,
}

/// Keys of the keyed tables read at least once, per family and kind.
type Filters = HashMap<(String, Kind), KeyFilter>;

/// The in-memory index of the unmerged log (see the module's invariants).
pub(super) struct Recent {
    index: Mutex<Index>,
    /// One merge at a time (and no merge while a table's filter is built).
    merging: Arc<tokio::sync::Mutex<()>>,
    merge_after: usize,
    filters: Mutex<Filters>,
    /// SQL reads of a keyed table by [`SqliteStore::read_keyed`] (tests).
    #[cfg(test)]
    table_reads: std::sync::atomic::AtomicU64,
}

impl Recent {
    pub(super) fn new(merge_after: usize) -> Self {
        Self {
            index: Mutex::default(),
            merging: Arc::default(),
            merge_after,
            filters: Mutex::default(),
            #[cfg(test)]
            table_reads: Default::default(),
        }
    }

    fn filters(&self) -> std::sync::MutexGuard<'_, Filters> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys the table of (family, kind) may hold; `Err(keys)` when it has no filter yet.
    fn maybe_in_table(
        &self,
        family: &str,
        kind: Kind,
        keys: Vec<String>,
    ) -> Result<Vec<String>, Vec<String>> {
        let filters = self.filters();
        match filters.get(&(family.to_owned(), kind)) {
            Some(f) => Ok(keys.into_iter().filter(|k| f.may_contain(k)).collect()),
            None => Err(keys),
        }
    }

    /// Adds keys about to be merged into the table of (family, kind) to its filter, if it has
    /// one (the caller holds `merging`).
    fn filter_insert<'a>(&self, family: &str, kind: Kind, keys: impl Iterator<Item = &'a str>) {
        if let Some(f) = self.filters().get_mut(&(family.to_owned(), kind)) {
            keys.for_each(|k| f.insert(k));
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The values of `keys` found in the index; the keys not found.
    pub(super) fn lookup(
        &self,
        family: &str,
        kind: Kind,
        keys: &[String],
    ) -> (HashMap<String, String>, Vec<String>) {
        let index = self.index();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for k in keys {
            match index
                .active
                .get(family, kind, k)
                .or_else(|| index.frozen.get(family, kind, k))
            {
                Some(v) => {
                    found.insert(k.clone(), v.to_owned());
                }
                None => missing.push(k.clone()),
            }
        }
        (found, missing)
    }

    /// Records appended entries (called by the writer's holder, see the invariants).
    fn put(&self, family: &str, appended: Appended) {
        let mut index = self.index();
        index.rows += appended.entries.len();
        let map = index
            .active
            .families
            .entry(family.to_owned())
            .or_default()
            .map_mut(appended.kind);
        let at = appended.at;
        map.extend(
            appended
                .entries
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), (v.into_boxed_str(), at))),
        );
    }

    /// Forgets deleted keys (called by the writer's holder).
    pub(super) fn remove(&self, family: &str, kind: Kind, keys: &[&str]) {
        let mut index = self.index();
        let Index { active, frozen, .. } = &mut *index;
        for layer in [active, frozen] {
            if let Some(f) = layer.families.get_mut(family) {
                let map = f.map_mut(kind);
                for k in keys {
                    map.remove(*k);
                }
            }
        }
    }

    /// The entries a merge copies become the frozen layer (called by the writer's holder);
    /// returns the (family, kind) pairs it holds.
    fn freeze(&self) -> Vec<(String, Kind)> {
        let mut index = self.index();
        let active = std::mem::take(&mut index.active);
        index.frozen.absorb(active);
        index.rows = 0;
        index
            .frozen
            .families
            .keys()
            .flat_map(|f| [(f.clone(), Kind::Code), (f.clone(), Kind::Hash)])
            .collect()
    }

    /// Up to `n` frozen entries of (family, kind) after key `after`, in key order (called by
    /// the writer's holder, so a deletion cannot come between reading and merging them).
    fn frozen_run(
        &self,
        family: &str,
        kind: Kind,
        after: Option<&str>,
        n: usize,
    ) -> Vec<(String, String, i64)> {
        let index = self.index();
        let Some(f) = index.frozen.families.get(family) else {
            return Vec::new();
        };
        let map = f.map(kind);
        let range = match after {
            Some(a) => map.range::<str, _>((Bound::Excluded(a), Bound::Unbounded)),
            None => map.range::<str, _>(..),
        };
        range
            .take(n)
            .map(|(k, (v, at))| (k.to_string(), v.to_string(), *at))
            .collect()
    }

    /// A merge is committed: its entries are in the keyed tables.
    fn thaw(&self) {
        self.index().frozen = Layer::default();
    }

    fn rows(&self) -> usize {
        self.index().rows
    }

    fn is_empty(&self) -> bool {
        let index = self.index();
        index.rows == 0 && index.active.is_empty() && index.frozen.is_empty()
    }
}

/// Appends entries to the log (within the caller's transaction).
pub(super) async fn append(
    tx: &mut WriteTx,
    family: &str,
    appended: &Appended,
    op: &'static str,
) -> Result<(), StoreError> {
    if appended.entries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO recent_writes (kind, family, key, value, written_at) \
         SELECT ?1, ?2, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?3 \
         FROM json_each(?4)",
    )
    .bind(appended.kind.as_str())
    .bind(family)
    .bind(appended.at)
    .bind(json_text(&appended.entries))
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

/// Reads `keys` from the keyed table and the log with SQL, in one snapshot: the log's latest
/// row per key wins. Used when the index cannot be trusted (a failed commit).
pub(super) async fn read_through_log(
    store: &SqliteStore,
    kind: Kind,
    family: &str,
    keys: &[String],
    op: &'static str,
) -> Result<HashMap<String, String>, StoreError> {
    let (table, key_col, value_col) = kind.table();
    let sql = format!(
        "WITH wanted AS (SELECT DISTINCT value AS k FROM json_each(?2)), \
         logged AS (SELECT key, value, max(seq) FROM recent_writes \
                    WHERE kind = ?3 AND family = ?1 AND key IN (SELECT k FROM wanted) GROUP BY key) \
         SELECT w.k, coalesce(l.value, t.{value_col}) FROM wanted w \
         LEFT JOIN logged l ON l.key = w.k \
         LEFT JOIN {table} t ON t.family = ?1 AND t.{key_col} = w.k \
         WHERE coalesce(l.value, t.{value_col}) IS NOT NULL"
    );
    let rows = sqlx::query(&sql)
        .bind(family)
        .bind(json_text(&keys))
        .bind(kind.as_str())
        .fetch_all(&store.reader)
        .await
        .map_err(db(op))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

impl SqliteStore {
    /// Whether reads may use the in-memory index (no commit has failed since the store opened).
    pub(super) fn index_trusted(&self) -> bool {
        !self.writer.has_failed()
    }

    /// `keys` of `kind`: the log's latest entry, else the keyed table's.
    pub(super) async fn read_keyed(
        &self,
        kind: Kind,
        family: &str,
        keys: &[String],
        op: &'static str,
    ) -> Result<HashMap<String, String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        if !self.index_trusted() {
            return read_through_log(self, kind, family, keys, op).await;
        }
        let (mut found, missing) = self.recent.lookup(family, kind, keys);
        if missing.is_empty() {
            return Ok(found);
        }
        let missing = match self.recent.maybe_in_table(family, kind, missing) {
            Ok(maybe) => maybe,
            Err(missing) => {
                self.build_filter(kind, family, op).await?;
                self.recent
                    .maybe_in_table(family, kind, missing)
                    .unwrap_or_else(|m| m)
            }
        };
        if missing.is_empty() {
            return Ok(found);
        }
        #[cfg(test)]
        self.recent
            .table_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sql = match kind {
            Kind::Code => {
                "SELECT dam_id, code FROM asset_codes WHERE family = ?1 \
                 AND dam_id IN (SELECT value FROM json_each(?2))"
            }
            Kind::Hash => {
                "SELECT code, hash FROM hashes WHERE family = ?1 \
                 AND code IN (SELECT value FROM json_each(?2))"
            }
        };
        let rows = sqlx::query(sql)
            .bind(family)
            .bind(json_text(&missing))
            .fetch_all(&self.reader)
            .await
            .map_err(db(op))?;
        found.extend(rows.into_iter().map(|r| (r.get(0), r.get(1))));
        Ok(found)
    }

    /// Builds the filter of the table of (family, kind) from its keys, read in pages of
    /// [`FILTER_PAGE`] (memory stays flat), while no merge runs.
    async fn build_filter(
        &self,
        kind: Kind,
        family: &str,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let _merging = self.recent.merging.lock().await;
        if self
            .recent
            .filters()
            .contains_key(&(family.to_owned(), kind))
        {
            return Ok(());
        }
        let (table, key_col, _) = kind.table();
        let count: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE family = ?1"))
                .bind(family)
                .fetch_one(&self.reader)
                .await
                .map_err(db(op))?;
        let mut filter = KeyFilter::with_capacity(usize::try_from(count).unwrap_or(0));
        let page = format!(
            "SELECT {key_col} FROM {table} WHERE family = ?1 AND {key_col} > ?2 \
             ORDER BY {key_col} LIMIT {FILTER_PAGE}"
        );
        let mut after = String::new();
        loop {
            let keys: Vec<String> = sqlx::query_scalar(&page)
                .bind(family)
                .bind(&after)
                .fetch_all(&self.reader)
                .await
                .map_err(db(op))?;
            keys.iter().for_each(|k| filter.insert(k));
            match keys.into_iter().last() {
                Some(last) => after = last,
                None => break,
            }
        }
        self.recent
            .filters()
            .insert((family.to_owned(), kind), filter);
        Ok(())
    }

    /// Commits `tx`, which appended these entries to the log, and records them in the index;
    /// merges the log if it has reached the threshold.
    pub(super) async fn commit_appended(
        &self,
        tx: WriteTx,
        family: &str,
        appended: Vec<Appended>,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let released = tx.release().await.map_err(db(op))?;
        for a in appended {
            self.recent.put(family, a);
        }
        released.committed().await.map_err(db(op))?;
        if self.recent.rows() < self.recent.merge_after {
            return Ok(());
        }
        // One merge at a time, in the background: this caller's write is done. If one is still
        // running while the log has reached the threshold again, wait for it: the index holds
        // at most about twice the threshold (the merge's frozen entries and the new ones).
        let merging = match self.recent.merging.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let g = self.recent.merging.clone().lock_owned().await;
                if self.recent.rows() < self.recent.merge_after {
                    return Ok(());
                }
                g
            }
        };
        let merger = self.merger();
        tokio::spawn(async move {
            if let Err(e) = merger.merge().await {
                // The log stays; the next write past the threshold tries again.
                tracing::warn!(error = %e, "merging recent state writes failed; trying again later");
            }
            drop(merging);
        });
        Ok(())
    }

    /// Merges the whole log into the keyed tables now (waiting for a merge in progress).
    pub(super) async fn merge_recent(&self) -> Result<(), StoreError> {
        let _merging = self.recent.merging.lock().await;
        if self.index_trusted() && self.recent.is_empty() {
            return Ok(());
        }
        self.merger().merge().await
    }

    /// Waits for a merge in progress (closing the store).
    pub(super) async fn wait_for_merge(&self) {
        drop(self.recent.merging.lock().await);
    }

    fn merger(&self) -> Merger {
        Merger {
            writer: self.writer.clone(),
            recent: self.recent.clone(),
        }
    }

    /// At open: merges the log a previous process left (the index knows nothing of it).
    pub(super) async fn merge_recent_left_over(&self) -> Result<(), StoreError> {
        // Empty when no write came since the last merge (a new database, or a second open such
        // as `status` after the first merged it): a read decides, so such an open costs no
        // write transaction.
        let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM recent_writes)")
            .fetch_one(&self.reader)
            .await
            .map_err(db("merge recent state writes"))?;
        if !left {
            return Ok(());
        }
        let _merging = self.recent.merging.lock().await;
        self.merger().merge_with_sql().await
    }

    /// Rows in the log (tests).
    #[cfg(test)]
    pub(super) async fn recent_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM recent_writes")
            .fetch_one(&self.reader)
            .await
            .unwrap()
    }
}

/// What a merge needs, apart from the store (so that it can run as a task of its own).
struct Merger {
    writer: Arc<GroupWriter>,
    recent: Arc<Recent>,
}

impl Merger {
    /// Merges the log (the caller holds `Recent::merging`).
    async fn merge(&self) -> Result<(), StoreError> {
        if self.writer.has_failed() {
            self.merge_with_sql().await
        } else {
            self.merge_in_runs().await
        }
    }

    /// The merge: the log's entries, taken from the index (the latest per key), written into
    /// the keyed tables in key order, [`MERGE_RUN`] keys per transaction so that a transaction's
    /// dirty pages stay few (memory stays flat however large the tables); then the merged rows
    /// are deleted from the log. The entries stay readable in the frozen layer until then, and
    /// a process ending halfway leaves the whole log to the next open's merge.
    async fn merge_in_runs(&self) -> Result<(), StoreError> {
        const OP: &str = "merge recent state writes";
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM recent_writes")
            .fetch_one(&mut *tx)
            .await
            .map_err(db(OP))?;
        let released = tx.release().await.map_err(db(OP))?;
        let sets = self.recent.freeze();
        released.committed().await.map_err(db(OP))?;
        for (family, kind) in sets {
            let mut after: Option<String> = None;
            // Frozen entries are only ever removed, so one seen here is still there or deleted.
            while !self
                .recent
                .frozen_run(&family, kind, after.as_deref(), 1)
                .is_empty()
            {
                let mut tx = self
                    .writer
                    .begin(Durability::Ordered)
                    .await
                    .map_err(db(OP))?;
                let run = self
                    .recent
                    .frozen_run(&family, kind, after.as_deref(), MERGE_RUN);
                let Some(last_key) = run.last().map(|r| r.0.clone()) else {
                    // Deleted meanwhile.
                    tx.commit().await.map_err(db(OP))?;
                    break;
                };
                // Before the table has them (see the invariants).
                self.recent
                    .filter_insert(&family, kind, run.iter().map(|r| r.0.as_str()));
                let sql = match kind {
                    Kind::Code => {
                        "INSERT INTO asset_codes (family, dam_id, code) \
                         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]') \
                         FROM json_each(?2) WHERE true \
                         ON CONFLICT (family, dam_id) DO UPDATE SET code = excluded.code \
                         WHERE asset_codes.code IS NOT excluded.code"
                    }
                    Kind::Hash => {
                        "INSERT INTO hashes (family, code, hash, written_at) \
                         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                         json_extract(value, '$[2]') FROM json_each(?2) WHERE true \
                         ON CONFLICT (family, code) DO UPDATE SET hash = excluded.hash, \
                         written_at = excluded.written_at"
                    }
                };
                sqlx::query(sql)
                    .bind(&family)
                    .bind(json_text(&run))
                    .execute(&mut *tx)
                    .await
                    .map_err(db(OP))?;
                tx.commit().await.map_err(db(OP))?;
                after = Some(last_key);
            }
        }
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        sqlx::query("DELETE FROM recent_writes WHERE seq <= ?1")
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        self.recent.thaw();
        Ok(())
    }

    /// The merge when the index cannot be trusted (or is empty, at open): the latest row per
    /// key, from the log itself, in one transaction.
    async fn merge_with_sql(&self) -> Result<(), StoreError> {
        const OP: &str = "merge recent state writes";
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        // Sorted by key, so consecutive rows land in the same leaves. The latest row per key
        // wins (`max(seq)`).
        for sql in [
            "INSERT INTO asset_codes (family, dam_id, code) \
             SELECT family, key, value FROM recent_writes WHERE seq IN \
               (SELECT max(seq) FROM recent_writes WHERE kind = 'code' GROUP BY family, key) \
             ORDER BY family, key \
             ON CONFLICT (family, dam_id) DO UPDATE SET code = excluded.code \
             WHERE asset_codes.code IS NOT excluded.code",
            "INSERT INTO hashes (family, code, hash, written_at) \
             SELECT family, key, value, written_at FROM recent_writes WHERE seq IN \
               (SELECT max(seq) FROM recent_writes WHERE kind = 'hash' GROUP BY family, key) \
             ORDER BY family, key \
             ON CONFLICT (family, code) DO UPDATE SET hash = excluded.hash, \
             written_at = excluded.written_at",
            "DELETE FROM recent_writes",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.map_err(db(OP))?;
        }
        let released = tx.release().await.map_err(db(OP))?;
        self.recent.freeze();
        // Keys went into the tables unseen: the filters are rebuilt on the next reads.
        self.recent.filters().clear();
        released.committed().await.map_err(db(OP))?;
        self.recent.thaw();
        Ok(())
    }
}

/// A content hash read from the log or the table.
pub(super) fn hash_map(m: HashMap<String, String>) -> HashMap<String, ContentHash> {
    m.into_iter().map(|(k, v)| (k, ContentHash(v))).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{StoreOptions, WrittenAsset};
    use crate::sqlite::SqliteTarget;

    const F: &str = "packshots";

    /// A file store whose log is merged after `merge_after` rows.
    async fn open(dir: &tempfile::TempDir, merge_after: usize) -> SqliteStore {
        let target = SqliteTarget::File(dir.path().join("s.db"));
        let mut store = SqliteStore::open(target, &StoreOptions::default(), "test")
            .await
            .unwrap();
        store.recent = Arc::new(Recent::new(merge_after));
        store
    }

    fn written(dam_id: &str, code: &str, hash: &str) -> WrittenAsset {
        WrittenAsset {
            dam_id: dam_id.into(),
            code: code.into(),
            hash: ContentHash(hash.into()),
        }
    }

    fn keys(range: std::ops::Range<usize>, prefix: &str) -> Vec<String> {
        range.map(|i| format!("{prefix}{i}")).collect()
    }

    /// Writes asset `i` as the engine does: its code ahead, then its hash.
    async fn write_asset(store: &SqliteStore, i: usize, hash: &str) {
        let (id, code) = (format!("d{i}"), format!("c{i}"));
        store
            .put_asset_codes(F, &[(id.clone(), code.clone())])
            .await
            .unwrap();
        store
            .record_written(F, &[written(&id, &code, hash)])
            .await
            .unwrap();
    }

    /// What the keyed tables hold, read directly (not through the log or the index).
    async fn tables(store: &SqliteStore) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let codes = sqlx::query_as::<_, (String, String)>("SELECT dam_id, code FROM asset_codes")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        let hashes = sqlx::query_as::<_, (String, String)>("SELECT code, hash FROM hashes")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        (codes.into_iter().collect(), hashes.into_iter().collect())
    }

    async fn read_all(
        store: &SqliteStore,
        n: usize,
    ) -> (HashMap<String, String>, HashMap<String, ContentHash>) {
        (
            store.asset_codes(F, &keys(0..n, "d")).await.unwrap(),
            store.hashes(F, &keys(0..n, "c")).await.unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_read_from_the_log_then_from_the_tables_once_merged() {
        let dir = tempfile::tempdir().unwrap();
        // Each asset appends 2 rows (its code ahead, its hash): merged at the 5th asset.
        let store = open(&dir, 10).await;
        for i in 0..4 {
            write_asset(&store, i, &format!("h{i}")).await;
        }
        assert_eq!(
            store.recent_rows().await,
            8,
            "code ahead + hash per asset; the code not again"
        );
        assert!(tables(&store).await.0.is_empty(), "nothing merged yet");
        let (codes, hashes) = read_all(&store, 6).await;
        assert_eq!(codes.len(), 4);
        assert_eq!(codes["d3"], "c3");
        assert_eq!(hashes["c2"], ContentHash("h2".into()));

        write_asset(&store, 4, "h4").await;
        // The merge runs as a task of its own, holding the merge lock from the start.
        store.wait_for_merge().await;
        assert_eq!(store.recent_rows().await, 0, "the threshold merged the log");
        let (codes, hashes) = tables(&store).await;
        assert_eq!(codes.len(), 5);
        assert_eq!(hashes["c4"], "h4");
        let (codes, hashes) = read_all(&store, 6).await;
        assert_eq!((codes.len(), hashes.len()), (5, 5));
        assert_eq!(codes["d4"], "c4");
    }

    fn table_reads(store: &SqliteStore) -> u64 {
        store
            .recent
            .table_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Of `candidates`, those the filter of `F`'s hashes says were never merged.
    fn filtered_out(store: &SqliteStore, candidates: Vec<String>) -> Vec<String> {
        let maybe = store
            .recent
            .maybe_in_table(F, Kind::Hash, candidates.clone())
            .expect("the filter is built");
        candidates
            .into_iter()
            .filter(|k| !maybe.contains(k))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_the_table_filter_rules_out_cost_no_sql_and_merged_keys_are_always_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 10).await;
        for i in 0..20 {
            write_asset(&store, i, &format!("h{i}")).await;
        }
        store.wait_for_merge().await;
        // The first read of the family builds the filter from the table (before any merge:
        // empty), and later merges insert their keys into it.
        let (_, hashes) = read_all(&store, 20).await;
        assert_eq!(hashes.len(), 20);
        for i in 20..60 {
            write_asset(&store, i, &format!("h{i}")).await;
        }
        store.wait_for_merge().await;
        assert!(tables(&store).await.1.len() >= 50, "most of them merged");
        let (codes, hashes) = read_all(&store, 60).await;
        assert_eq!(
            (codes.len(), hashes.len()),
            (60, 60),
            "no merged key ruled out"
        );
        assert_eq!(hashes["c45"], ContentHash("h45".into()));

        // Never written: what the filter rules out costs no SQL read.
        let absent = filtered_out(&store, keys(0..50, "new"));
        assert!(absent.len() > 40, "≈ 1 % false positives: {}", absent.len());
        let before = table_reads(&store);
        assert!(store.hashes(F, &absent).await.unwrap().is_empty());
        assert_eq!(
            table_reads(&store),
            before,
            "no SQL read for ruled-out keys"
        );
        // A key the filter lets through is read with SQL (and found or not).
        let found = store.hashes(F, &keys(0..1, "c")).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            table_reads(&store),
            before
                + u64::from(
                    !store
                        .recent
                        .lookup(F, Kind::Hash, &keys(0..1, "c"))
                        .1
                        .is_empty()
                )
        );

        // Reopened, the filter is built from the table: every merged key is still found.
        store.close().await;
        let store = open(&dir, 10).await;
        let (codes, hashes) = read_all(&store, 60).await;
        assert_eq!((codes.len(), hashes.len()), (60, 60));
        assert!(filtered_out(&store, keys(0..60, "c")).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_past_the_threshold_waits_while_a_merge_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir, 4).await);
        // A merge that is still running (the test holds its lock).
        let merging = store.recent.merging.clone().lock_owned().await;
        write_asset(&store, 0, "h").await;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { write_asset(&store, 1, "h").await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !writer.is_finished(),
            "the write that reached the threshold again waits for the running merge"
        );
        // Its entries are already readable: they were recorded before it waited.
        assert_eq!(store.hashes(F, &keys(1..2, "c")).await.unwrap().len(), 1);
        drop(merging);
        writer.await.unwrap();
        store.wait_for_merge().await;
        assert_eq!(
            store.recent_rows().await,
            0,
            "and then merged the log itself"
        );
        assert_eq!(tables(&store).await.1.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_larger_than_a_run_writes_every_entry_in_several_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 100_000).await;
        let n = MERGE_RUN * 2 + 100;
        let codes: Vec<(String, String)> =
            (0..n).map(|i| (format!("d{i}"), format!("c{i}"))).collect();
        let assets: Vec<WrittenAsset> = (0..n)
            .map(|i| written(&format!("d{i}"), &format!("c{i}"), &format!("h{i}")))
            .collect();
        store.put_asset_codes(F, &codes).await.unwrap();
        store.record_written(F, &assets).await.unwrap();
        let commits = store.writer.commits().await;
        store.merge_recent().await.unwrap();
        // One to freeze, three runs per table, one to empty the log.
        assert_eq!(store.writer.commits().await - commits, 1 + 3 + 3 + 1);
        assert_eq!(store.recent_rows().await, 0);
        let (codes, hashes) = tables(&store).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
        assert_eq!(hashes[&format!("c{}", n - 1)], format!("h{}", n - 1));
        let written_at: i64 = sqlx::query_scalar("SELECT min(written_at) FROM hashes")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert!(written_at > 0, "the write time travels with the hash");
        let (codes, hashes) = read_all(&store, n).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latest_write_of_a_key_wins_over_the_tables_and_through_a_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        write_asset(&store, 1, "old").await;
        store.merge_recent().await.unwrap();
        // Newer values in the log: a new hash, and the DAM id written as another code.
        store
            .record_written(F, &[written("d1", "c1", "new")])
            .await
            .unwrap();
        store
            .put_asset_codes(F, &[("d1".into(), "c1-renamed".into())])
            .await
            .unwrap();
        let (codes, hashes) = read_all(&store, 2).await;
        assert_eq!(codes["d1"], "c1-renamed");
        assert_eq!(hashes["c1"], ContentHash("new".into()));
        store.merge_recent().await.unwrap();
        let (codes, hashes) = tables(&store).await;
        assert_eq!(codes["d1"], "c1-renamed");
        assert_eq!(hashes["c1"], "new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequence_numbers_are_not_reused_once_the_log_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        write_asset(&store, 1, "h").await;
        let seq = |store: &SqliteStore| {
            let reader = store.reader.clone();
            async move {
                sqlx::query_scalar::<_, Option<i64>>("SELECT min(seq) FROM recent_writes")
                    .fetch_one(&reader)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(seq(&store).await, Some(1));
        store.merge_recent().await.unwrap();
        assert_eq!(seq(&store).await, None);
        // A merge in progress deletes the rows up to the last it saw: a row appended after
        // the log was emptied must come after that.
        write_asset(&store, 2, "h").await;
        assert_eq!(seq(&store).await, Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_store_merges_what_the_log_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        for i in 0..3 {
            write_asset(&store, i, "h").await;
        }
        assert_eq!(store.recent_rows().await, 6);
        // The process ends without a merge (as a crash would leave it).
        store.close().await;
        drop(store);
        let store = open(&dir, 1_000).await;
        assert_eq!(store.recent_rows().await, 0);
        assert_eq!(tables(&store).await.0.len(), 3);
        let (codes, hashes) = read_all(&store, 3).await;
        assert_eq!((codes.len(), hashes.len()), (3, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deletion_removes_the_key_from_the_tables_the_log_and_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        // Assets 0–2 merged into the tables, then rewritten (in the log); 3–5 only in the log.
        for i in 0..3 {
            write_asset(&store, i, "merged").await;
        }
        store.merge_recent().await.unwrap();
        for i in 0..6 {
            write_asset(&store, i, "logged").await;
        }
        store.remove_hashes(F, &keys(0..1, "c")).await.unwrap();
        store.remove_asset_codes(F, &keys(1..2, "d")).await.unwrap();
        store
            .forget_assets(F, &[("d2".into(), "c2".into()), ("d3".into(), "c3".into())])
            .await
            .unwrap();
        let check = |(codes, hashes): (HashMap<String, String>, HashMap<String, ContentHash>)| {
            let mut codes: Vec<_> = codes.into_keys().collect();
            let mut hashes: Vec<_> = hashes.into_keys().collect();
            codes.sort();
            hashes.sort();
            assert_eq!(codes, ["d0", "d4", "d5"]);
            assert_eq!(hashes, ["c1", "c4", "c5"]);
        };
        check(read_all(&store, 6).await);
        // The same after a merge, and after reopening.
        store.merge_recent().await.unwrap();
        check(read_all(&store, 6).await);
        store.close().await;
        drop(store);
        let store = open(&dir, 1_000).await;
        check(read_all(&store, 6).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_through_the_log_with_sql_answer_as_the_index_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        for i in 0..10 {
            write_asset(&store, i, "merged").await;
        }
        store.merge_recent().await.unwrap();
        for i in 5..15 {
            write_asset(&store, i, &format!("logged{i}")).await;
        }
        store
            .put_asset_codes(F, &[("d7".into(), "c7-renamed".into())])
            .await
            .unwrap();
        store.remove_hashes(F, &keys(8..9, "c")).await.unwrap();
        let from_index = read_all(&store, 20).await;
        assert_eq!(from_index.0.len(), 15);
        assert_eq!(from_index.1.len(), 14);
        // As after a failed commit: the index is no longer used.
        store.writer.set_failed();
        assert!(!store.index_trusted());
        assert_eq!(read_all(&store, 20).await, from_index);
        // Writes go on; a merge empties the log and the tables answer alike.
        write_asset(&store, 20, "after").await;
        assert_eq!(store.hashes(F, &keys(20..21, "c")).await.unwrap().len(), 1);
        store.merge_recent().await.unwrap();
        assert_eq!(store.recent_rows().await, 0);
        assert_eq!(read_all(&store, 20).await, from_index);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconciliation_sees_the_codes_and_hashes_still_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        write_asset(&store, 1, "h1").await;
        assert_eq!(store.recent_rows().await, 2);
        let found = store
            .reconcile_lookup(F, None, &["c1".into(), "c2".into()])
            .await
            .unwrap();
        assert_eq!(found["c1"].dam_id.as_deref(), Some("d1"));
        assert_eq!(found["c1"].hash, Some(ContentHash("h1".into())));
        assert!(found["c1"].written_at.is_some());
        assert_eq!(found.get("c2").and_then(|s| s.dam_id.clone()), None);
    }
}
