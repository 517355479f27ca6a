//! Recent writes of content hashes and asset codes: appended to a log table, merged into
//! sorted runs (an LSM tree of two levels: migrations 4 and 6), and the runs compacted into the
//! keyed tables now and then.
//!
//! Why: `hashes` (by asset code) and `asset_codes` (by DAM id, and its index by code) have
//! random keys — DAM ids and asset codes are uuids in listing order — so writing a batch of 100
//! into them dirties about 100 B-tree leaves per table, each a 4 KiB page written to the WAL at
//! commit and again at checkpoint: ≈ 21 KB of page writes per asset, the one writer's main cost.
//! Appending the same entries to `recent_writes` (rowid order) dirties a few pages per batch.
//! After [`MERGE_AFTER_ROWS`] of them, a merge writes the log's latest entry per key as a new
//! run of `recent_runs`, at the right edge of that table (pages written once), and empties the
//! log, in one transaction. After [`MAX_RUNS`] runs, a compaction moves them all into the keyed tables in key
//! order, so each leaf of a keyed table is rewritten once per [`MAX_RUNS`] merges rather than
//! once per merge (as when every merge went into the tables: those rewrites were ≈ 40 % of the
//! connector's CPU at zero latency).
//!
//! Reads must see the log: an in-memory index ([`Recent`]) holds the latest entry per key of
//! the unmerged log, bounded by about twice the merge threshold (new entries while a merge
//! runs). A key not in the index is read from the
//! runs (the newest run's entry wins) and the keyed table in one statement. Invariants:
//! - The index is changed only by the writer's holder, after its statements are part of the
//!   writer's transaction (`WriteTx::release`) and before the writer is handed on, so the
//!   index follows the order of the statements. A reader may see an entry shortly before it is
//!   durable (its group's COMMIT); if a COMMIT fails, the index can no longer be trusted and the
//!   store reads the log with SQL instead ([`read_through_log`]) until it is reopened.
//! - A merge writes a run and freezes the index's entries in one transaction; the frozen
//!   entries stay readable until that transaction is committed, and leave the index after (a
//!   read that misses them then reads the runs, in a snapshot taken after that commit), so a
//!   read finds each entry in the index or in a run, never in neither. The same transaction
//!   empties the log.
//! - Precedence, newest first: the log (the index), the runs by number, the keyed table. A
//!   compaction moves keys from the runs into the table a range at a time, in transactions that
//!   insert and delete together, so a read (one statement over runs and table) finds each key.
//! - A deletion (of a hash or a code) removes the key from the tables, from the runs and from
//!   the log, and makes it a tombstone in the index, together: until the merge after it commits,
//!   the index answers "absent" for the key, where SQL would still read the value the deletion
//!   removes from a run or the table until the deletion's group commits.
//! - Opening the store merges whatever a previous process left in the log into a new run
//!   (crash recovery): the index starts empty. Runs outlive the process.
//! - A key a read finds in neither the index nor the filter of (family, kind) ([`KeyFilter`],
//!   built from the table and the runs on the first read of that family and kind) is absent
//!   without a SQL read. A filter holds every key of the runs and the table: it is built while
//!   no merge or compaction runs (`Recent::merging`), a merge inserts its frozen keys into the
//!   filter before they leave the index, and a compaction only moves keys between the two (a
//!   merge when the index cannot be trusted drops the filters; reads then go through the log
//!   with SQL, without filters, until the store is reopened).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use assetbridge_core::ContentHash;
use sqlx::Row;

use super::group::{Durability, GroupWriter};
use super::key_filter::KeyFilter;
use super::{db, json_text, values_rows, SqliteStore, WriteTx};
use crate::error::StoreError;
use crate::now_micros;
use crate::KeyMap;

/// Migration 4: the log of recent writes, in `seq` order (`AUTOINCREMENT`: a sequence number is
/// never given twice; a merge takes the whole log, so it no longer depends on it).
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

/// Log rows (and tombstones: deleted keys, [`Recent::remove`]) after which the next write or
/// deletion merges the log into a run. Each asset written is about
/// two rows (its code, written ahead, and its hash), so 36 864 rows hold ≈ 18 000 assets: the
/// index then holds ≈ 4.5 MiB ([`Entry`]: ≈ 120 bytes an entry). (When merges went into the
/// keyed tables, fewer and larger ones rewrote fewer leaves.) Measured (zero latency, 100 000 assets, 4 alternating pairs): 24 576 rows with a
/// `BTreeMap<Box<str>, _>` index → 36 864 rows with this one, −7 % wall; the 1 000 000-asset
/// run's peak RSS 58.8 → 59.5 MiB (same session). 49 152 rows: 63.3 MiB — too close to the
/// 64 MB ceiling.
pub(super) const MERGE_AFTER_ROWS: usize = 36_864;

/// Keys per read when a table's filter is built.
const FILTER_PAGE: i64 = 10_000;

/// Migration 6: runs, the log's entries as merged (the latest per key), each sorted and
/// numbered, newest last. Keyed by run first, so a new run is written at the right edge of the
/// table; `recent_run_ids` lists the runs, so that a read seeks each run (`run IN …`) without
/// scanning. A compaction moves every run into the keyed tables. `AUTOINCREMENT`: a run number is
/// never given twice, even by another process opening the file (which merges a log it finds into
/// a run), so a compaction's "runs up to `n`" never takes in a run written after it began.
pub(super) const RUNS_MIGRATION: &str = r#"
CREATE TABLE recent_runs (
    run        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    family     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    written_at INTEGER,
    PRIMARY KEY (run, kind, family, key)
) WITHOUT ROWID;
CREATE TABLE recent_run_ids (run INTEGER PRIMARY KEY AUTOINCREMENT);
"#;

/// Runs after which a merge compacts them into the keyed tables. A read of a key that the
/// filters let through seeks each run, so more runs cost reads; a compaction rewrites the keyed
/// tables' leaves, so fewer cost writes. 8 runs of [`MERGE_AFTER_ROWS`] rows: a compaction
/// every ≈ 150 000 assets written.
pub(super) const MAX_RUNS: usize = 8;

/// Keys each run gives one transaction of a compaction: at most [`MAX_RUNS`] × this many
/// leaves of a keyed table are dirtied by one transaction (memory stays flat).
const COMPACT_STEP: usize = 64;

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

    /// Where this kind's entries are in a [`PerKind`].
    fn slot(self) -> usize {
        match self {
            Kind::Code => 0,
            Kind::Hash => 1,
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

/// One entry of the index: key, value and (for a hash) write time in a single allocation.
///
/// Layout: a flags byte, the key's length (LEB128), the key, the write time (8 bytes, hashes
/// only) and the value. A 64-character lowercase hex value (a content hash) is kept as its 32
/// bytes ([`PACKED_HEX`]). A hash entry of a 49-character code takes 91 bytes, a code entry
/// of a 36-character DAM id 87 — one 96-byte block each, where a map of separate strings
/// spent two blocks (96 to 120 bytes) and a B-tree's slot overhead besides: ≈ 120 bytes an
/// entry against ≈ 200, so the log can be merged after more rows in the same memory.
#[derive(Clone)]
struct Entry(Box<[u8]>);

/// Flag: the value is a packed 64-character lowercase hex string.
const PACKED_HEX: u8 = 1;
/// Flag: the entry carries its write time.
const HAS_AT: u8 = 2;
/// Flag: the key was deleted (no value follows): a read answers "absent" without SQL, which
/// would still see the value the deletion removes until its group commits.
const TOMBSTONE: u8 = 4;

impl Entry {
    fn new(kind: Kind, key: &str, value: &str, at: i64) -> Self {
        // Lowercase only: `hex::encode` gives it back as it was.
        let mut bytes = [0u8; 32];
        let packed = kind == Kind::Hash
            && is_lower_hex_64(value)
            && hex::decode_to_slice(value, &mut bytes).is_ok();
        let with_at = kind == Kind::Hash;
        let mut b = Vec::with_capacity(
            1 + 5 + key.len() + if with_at { 8 } else { 0 } + if packed { 32 } else { value.len() },
        );
        b.push(if packed { PACKED_HEX } else { 0 } | if with_at { HAS_AT } else { 0 });
        put_length(&mut b, key.len());
        b.extend_from_slice(key.as_bytes());
        if with_at {
            b.extend_from_slice(&at.to_le_bytes());
        }
        if packed {
            b.extend_from_slice(&bytes);
        } else {
            b.extend_from_slice(value.as_bytes());
        }
        Self(b.into_boxed_slice())
    }

    /// A deleted key ([`TOMBSTONE`]).
    fn tombstone(key: &str) -> Self {
        let mut b = Vec::with_capacity(1 + 5 + key.len());
        b.push(TOMBSTONE);
        put_length(&mut b, key.len());
        b.extend_from_slice(key.as_bytes());
        Self(b.into_boxed_slice())
    }

    fn is_tombstone(&self) -> bool {
        self.0[0] & TOMBSTONE != 0
    }

    /// (flags, start of the key, end of the key).
    fn header(&self) -> (u8, usize, usize) {
        let (len, start) = get_length(&self.0, 1);
        (self.0[0], start, start + len)
    }

    fn key(&self) -> &[u8] {
        let (_, start, end) = self.header();
        &self.0[start..end]
    }

    #[cfg(test)]
    fn at(&self) -> i64 {
        let (flags, _, end) = self.header();
        if flags & HAS_AT == 0 {
            return 0;
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&self.0[end..end + 8]);
        i64::from_le_bytes(at)
    }

    fn value(&self) -> String {
        let (flags, _, end) = self.header();
        let start = if flags & HAS_AT != 0 { end + 8 } else { end };
        let v = &self.0[start..];
        if flags & PACKED_HEX != 0 {
            assetbridge_core::hash::lower_hex(v)
        } else {
            // Built from a `str`: always valid.
            String::from_utf8_lossy(v).into_owned()
        }
    }

    #[cfg(test)]
    fn key_string(&self) -> String {
        String::from_utf8_lossy(self.key()).into_owned()
    }
}

/// Appends `n` as LEB128: 7 bits a byte, low bits first, the high bit set on all but the last.
fn put_length(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The LEB128 length at `at`, and where what follows it starts.
fn get_length(b: &[u8], mut at: usize) -> (usize, usize) {
    let (mut n, mut shift) = (0usize, 0u32);
    loop {
        let byte = b[at];
        n |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            return (n, at);
        }
        shift += 7;
    }
}

fn is_lower_hex_64(v: &str) -> bool {
    v.len() == 64
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// An entry is its key, for the sets: looked up by the key's bytes.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}
impl std::borrow::Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Entries by key. foldhash rather than the standard library's SipHash: the set is looked
/// up and grown for every state read and write (SipHash was ≈ 2 % of the connector's
/// instructions at zero latency); its seed is still random per process.
type EntrySet = HashSet<Entry, foldhash::fast::RandomState>;

/// The entries of one family, by kind ([`Kind::slot`]).
type PerKind<T> = [T; 2];

/// Entries of the log, the latest per key: those not yet being merged (`Index::active`), and
/// those of a merge in progress (`Index::frozen`, readable until the merge's run is committed).
#[derive(Default)]
struct Layer {
    families: HashMap<String, PerKind<EntrySet>>,
}

impl Layer {
    fn get(&self, family: &str, kind: Kind, key: &str) -> Option<&Entry> {
        self.families.get(family)?[kind.slot()].get(key.as_bytes())
    }

    fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Adds `newer` over these entries (a merge whose commit failed left its entries here).
    fn absorb(&mut self, newer: Layer) {
        if self.families.is_empty() {
            self.families = newer.families;
            return;
        }
        for (family, sets) in newer.families {
            let mine = self.families.entry(family).or_default();
            for (slot, set) in sets.into_iter().enumerate() {
                for e in set {
                    mine[slot].replace(e);
                }
            }
        }
    }
}

#[derive(Default)]
struct Index {
    /// Entries of the log not yet being merged.
    active: Layer,
    /// Entries of a merge not yet known to be in a run.
    frozen: Layer,
    /// Rows appended, and keys deleted (tombstones), since the last merge began.
    rows: usize,
}

/// Keys of the keyed tables and their runs, read at least once, per family and kind.
type Filters = HashMap<(String, Kind), KeyFilter>;

/// The in-memory index of the unmerged log (see the module's invariants).
pub(super) struct Recent {
    index: Mutex<Index>,
    /// One merge or compaction at a time (and neither while a filter is built).
    merging: Arc<tokio::sync::Mutex<()>>,
    merge_after: usize,
    /// Runs after which a merge compacts them into the keyed tables.
    max_runs: usize,
    filters: Mutex<Filters>,
    /// SQL reads of the runs and keyed tables by [`SqliteStore::read_keyed`] (tests).
    #[cfg(test)]
    table_reads: std::sync::atomic::AtomicU64,
}

impl Recent {
    pub(super) fn new(merge_after: usize, max_runs: usize) -> Self {
        Self {
            index: Mutex::default(),
            merging: Arc::default(),
            merge_after,
            max_runs: max_runs.max(1),
            filters: Mutex::default(),
            #[cfg(test)]
            table_reads: Default::default(),
        }
    }

    fn filters(&self) -> std::sync::MutexGuard<'_, Filters> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys the runs or the table of (family, kind) may hold; `Err(keys)` when it has no
    /// filter yet.
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

    /// Adds the frozen entries' keys to the filters of their (family, kind), where there is
    /// one (the caller holds `merging`), before they leave the index.
    fn filter_frozen(&self) {
        let index = self.index();
        let mut filters = self.filters();
        if filters.is_empty() {
            return;
        }
        for (family, sets) in &index.frozen.families {
            for kind in [Kind::Code, Kind::Hash] {
                if let Some(f) = filters.get_mut(&(family.clone(), kind)) {
                    for e in &sets[kind.slot()] {
                        // Keys are built from a `str`.
                        f.insert(std::str::from_utf8(e.key()).unwrap_or_default());
                    }
                }
            }
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The values of `keys` found in the index; the keys it does not know. A key the index
    /// knows as deleted is in neither.
    pub(super) fn lookup(
        &self,
        family: &str,
        kind: Kind,
        keys: &[String],
    ) -> (KeyMap<String>, Vec<String>) {
        let index = self.index();
        let mut found = KeyMap::default();
        let mut missing = Vec::new();
        for k in keys {
            match index
                .active
                .get(family, kind, k)
                .or_else(|| index.frozen.get(family, kind, k))
            {
                // Deleted: absent, in neither list (see [`Recent::remove`]).
                Some(e) if e.is_tombstone() => {}
                Some(e) => {
                    found.insert(k.clone(), e.value());
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
        let set =
            &mut index.active.families.entry(family.to_owned()).or_default()[appended.kind.slot()];
        let (kind, at) = (appended.kind, appended.at);
        for (k, v) in appended.entries {
            set.replace(Entry::new(kind, &k, &v, at));
        }
    }

    /// Records deleted keys (called by the writer's holder, after the deletion's statements
    /// are part of the writer's transaction): each becomes a tombstone in the active layer, so
    /// that reads answer "absent" at once. Without it, a read between this call and the
    /// group's COMMIT would miss the index and read, with SQL, a snapshot from before the
    /// deletion — the value the deletion removes from a run or the table. A tombstone leaves
    /// the index with the merge after it (frozen, then dropped once that merge commits, when the
    /// deletion, committed in the same group or an earlier one, is what SQL reads); it counts
    /// as a row, so deletions alone also bring a merge about and tombstones cannot pile up.
    pub(super) fn remove(&self, family: &str, kind: Kind, keys: &[&str]) {
        let mut index = self.index();
        let Index {
            active,
            frozen,
            rows,
        } = &mut *index;
        if let Some(sets) = frozen.families.get_mut(family) {
            for k in keys {
                sets[kind.slot()].remove(k.as_bytes());
            }
        }
        let set = &mut active.families.entry(family.to_owned()).or_default()[kind.slot()];
        for k in keys {
            set.replace(Entry::tombstone(k));
        }
        *rows += keys.len();
    }

    /// The entries a merge copies become the frozen layer (called by the writer's holder,
    /// right after the merge's statements).
    fn freeze(&self) {
        let mut index = self.index();
        let active = std::mem::take(&mut index.active);
        index.frozen.absorb(active);
        index.rows = 0;
    }

    /// A merge is committed: its entries are in a run.
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
    for chunk in appended.entries.chunks(APPEND_ROWS) {
        // The kind and the family are the statement's own literals (one prepared statement
        // per family and kind): each row binds its key, value and time.
        let sql = format!(
            "INSERT INTO recent_writes (kind, family, key, value, written_at) VALUES {}",
            values_rows(chunk.len(), &[appended.kind.as_str(), family], 3)
        );
        // Prepared once and kept for full chunks and whole pages; other sizes are one-offs
        // that would push the hot statements out of the connection's statement cache.
        let mut q =
            sqlx::query(&sql).persistent(chunk.len() == APPEND_ROWS || chunk.len() == PAGE_ROWS);
        for (key, value) in chunk {
            q = q.bind(key.as_str()).bind(value.as_str()).bind(appended.at);
        }
        q.execute(&mut **tx).await.map_err(db(op))?;
    }
    Ok(())
}

/// Most log rows one `INSERT` binds (five parameters each: 2 500, far below SQLite's limit of
/// 32 766).
const APPEND_ROWS: usize = 500;
/// The usual size of an append: one page or batch of 100 assets.
const PAGE_ROWS: usize = 100;

/// The latest value of a key `k` of (family `?1`, kind) in the runs, newest run first, as an
/// SQL expression (a subquery: one index seek per run).
fn in_runs(kind: Kind, k: &str) -> String {
    format!(
        "(SELECT r.value FROM recent_runs r \
          WHERE r.run IN (SELECT run FROM recent_run_ids) AND r.kind = '{}' \
          AND r.family = ?1 AND r.key = {k} ORDER BY r.run DESC LIMIT 1)",
        kind.as_str()
    )
}

/// Reads `keys` from the keyed table and the log with SQL, in one snapshot: the log's latest
/// row per key wins, then the newest run's, then the table's. Used when the index cannot be
/// trusted (a failed commit).
pub(super) async fn read_through_log(
    store: &SqliteStore,
    kind: Kind,
    family: &str,
    keys: &[String],
    op: &'static str,
) -> Result<KeyMap<String>, StoreError> {
    let (table, key_col, value_col) = kind.table();
    let runs = in_runs(kind, "w.k");
    let sql = format!(
        "WITH wanted AS (SELECT DISTINCT value AS k FROM json_each(?2)), \
         logged AS (SELECT key, value, max(seq) FROM recent_writes \
                    WHERE kind = ?3 AND family = ?1 AND key IN (SELECT k FROM wanted) GROUP BY key), \
         answered AS (SELECT w.k AS k, coalesce(l.value, {runs}, t.{value_col}) AS v \
                      FROM wanted w \
                      LEFT JOIN logged l ON l.key = w.k \
                      LEFT JOIN {table} t ON t.family = ?1 AND t.{key_col} = w.k) \
         SELECT k, v FROM answered WHERE v IS NOT NULL"
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

    /// `keys` of `kind`: the log's latest entry, else the newest run's, else the keyed table's.
    pub(super) async fn read_keyed(
        &self,
        kind: Kind,
        family: &str,
        keys: &[String],
        op: &'static str,
    ) -> Result<KeyMap<String>, StoreError> {
        if keys.is_empty() {
            return Ok(KeyMap::default());
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
        // The runs and the table in one statement (one snapshot): a compaction moves keys
        // from the one to the other in a transaction, so each key is in one or both.
        let (table, key_col, value_col) = kind.table();
        let runs = in_runs(kind, "w.value");
        let sql = format!(
            "SELECT w.value, coalesce({runs}, \
               (SELECT t.{value_col} FROM {table} t WHERE t.family = ?1 AND t.{key_col} = w.value)) AS v \
             FROM json_each(?2) w WHERE v IS NOT NULL"
        );
        let rows = sqlx::query(&sql)
            .bind(family)
            .bind(json_text(&missing))
            .fetch_all(&self.reader)
            .await
            .map_err(db(op))?;
        found.extend(rows.into_iter().map(|r| (r.get(0), r.get(1))));
        Ok(found)
    }

    /// Builds the filter of (family, kind) from the keys of its table and of its runs, read
    /// in pages of [`FILTER_PAGE`] (memory stays flat), while no merge or compaction runs.
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
        let k = kind.as_str();
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT (SELECT count(*) FROM {table} WHERE family = ?1) \
                  + (SELECT count(*) FROM recent_runs \
                     WHERE run IN (SELECT run FROM recent_run_ids) AND kind = '{k}' AND family = ?1)"
        ))
        .bind(family)
        .fetch_one(&self.reader)
        .await
        .map_err(db(op))?;
        let mut filter = KeyFilter::with_capacity(usize::try_from(count).unwrap_or(0));
        // The table, then each run (merges and compactions wait: the keys stay where they are).
        let runs: Vec<i64> = sqlx::query_scalar("SELECT run FROM recent_run_ids ORDER BY run")
            .fetch_all(&self.reader)
            .await
            .map_err(db(op))?;
        let table_page = format!(
            "SELECT {key_col} FROM {table} WHERE family = ?1 AND {key_col} > ?2 \
             ORDER BY {key_col} LIMIT {FILTER_PAGE}"
        );
        let run_page = format!(
            "SELECT key FROM recent_runs WHERE run = ?3 AND kind = '{k}' AND family = ?1 \
             AND key > ?2 ORDER BY key LIMIT {FILTER_PAGE}"
        );
        for run in std::iter::once(None).chain(runs.into_iter().map(Some)) {
            // '' is the least text: `> ''` misses only the key '' itself, read on its own.
            let mut after = String::new();
            let first: Option<String> = match run {
                None => sqlx::query_scalar(&format!(
                    "SELECT {key_col} FROM {table} WHERE family = ?1 AND {key_col} = ''"
                ))
                .bind(family)
                .fetch_optional(&self.reader)
                .await
                .map_err(db(op))?,
                Some(run) => sqlx::query_scalar(&format!(
                    "SELECT key FROM recent_runs WHERE run = ?2 AND kind = '{k}' \
                     AND family = ?1 AND key = ''"
                ))
                .bind(family)
                .bind(run)
                .fetch_optional(&self.reader)
                .await
                .map_err(db(op))?,
            };
            if let Some(k) = first {
                filter.insert(&k);
            }
            loop {
                let q = match run {
                    None => sqlx::query_scalar(&table_page).bind(family).bind(&after),
                    Some(run) => sqlx::query_scalar(&run_page)
                        .bind(family)
                        .bind(&after)
                        .bind(run),
                };
                let keys: Vec<String> = q.fetch_all(&self.reader).await.map_err(db(op))?;
                keys.iter().for_each(|k| filter.insert(k));
                match keys.into_iter().last() {
                    Some(last) => after = last,
                    None => break,
                }
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
        self.merge_if_due().await;
        Ok(())
    }

    /// Starts a merge in the background once the index holds [`Recent::merge_after`] rows
    /// (appended entries and tombstones), after a write has committed.
    pub(super) async fn merge_if_due(&self) {
        if self.recent.rows() < self.recent.merge_after {
            return;
        }
        // One merge at a time, in the background: this caller's write is done. If one is still
        // running while the log has reached the threshold again, wait for it: the index holds
        // at most about twice the threshold (the merge's frozen entries and the new ones).
        let merging = match self.recent.merging.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let g = self.recent.merging.clone().lock_owned().await;
                if self.recent.rows() < self.recent.merge_after {
                    return;
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
    }

    /// Merges the whole log and every run into the keyed tables now (waiting for a merge in
    /// progress): reconciliation reads the tables' code index.
    pub(super) async fn merge_recent(&self) -> Result<(), StoreError> {
        const OP: &str = "merge recent state writes";
        let _merging = self.recent.merging.lock().await;
        let runs: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM recent_run_ids)")
            .fetch_one(&self.reader)
            .await
            .map_err(db(OP))?;
        if self.index_trusted() && self.recent.is_empty() && !runs {
            return Ok(());
        }
        let merger = self.merger();
        merger.write_run().await?;
        merger.compact().await
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

    /// At open: merges the log a previous process left (the index knows nothing of it) into
    /// a run of its own.
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
        // A run only: a compaction is left to the process that writes (an open by `status`,
        // say, stays short).
        self.merger().write_run().await.map(|_| ())
    }

    /// Merges the log into a run, without compacting (tests).
    #[cfg(test)]
    pub(super) async fn merge_into_run(&self) -> usize {
        let _merging = self.recent.merging.lock().await;
        self.merger().write_run().await.unwrap()
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
    /// Merges the log into a new run, and the runs into the keyed tables once there are
    /// [`Recent::max_runs`] of them (the caller holds `Recent::merging`).
    async fn merge(&self) -> Result<(), StoreError> {
        let runs = self.write_run().await?;
        if runs >= self.recent.max_runs {
            self.compact().await?;
        }
        Ok(())
    }

    /// The log's latest row per key, written as a new run in one statement: the run gets the
    /// highest run number, the first column of the primary key, so its rows go to new pages at
    /// the right edge of `recent_runs`, each written once — where merging them into the keyed
    /// tables rewrote leaves across those tables. The entries stay readable in the
    /// index's frozen layer until the run is committed. The log is emptied in the same
    /// transaction. Returns how many runs there are.
    async fn write_run(&self) -> Result<usize, StoreError> {
        const OP: &str = "merge recent state writes";
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        let logged: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM recent_writes)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db(OP))?;
        if logged {
            let run: i64 =
                sqlx::query_scalar("INSERT INTO recent_run_ids DEFAULT VALUES RETURNING run")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db(OP))?;
            // In the log's order (its rowid order: no sort), so that a key's latest row is the
            // one left. Sorting by key first would write the run's pages in key order, but
            // sorts the whole log (≈ 5 MiB in SQLite's sorter at the threshold); inserting in
            // log order is as fast (≈ 90 ms for 36 864 rows; a `GROUP BY` for the latest row
            // per key, then an `ORDER BY`, took ≈ 190 ms).
            sqlx::query(
                "INSERT INTO recent_runs (run, kind, family, key, value, written_at) \
                 SELECT ?1, kind, family, key, value, written_at FROM recent_writes \
                 WHERE true ORDER BY seq \
                 ON CONFLICT (run, kind, family, key) DO UPDATE SET value = excluded.value, \
                 written_at = excluded.written_at",
            )
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
            // The whole log is in the run: this transaction holds the writer, so no row came
            // after. Without a `WHERE`, SQLite frees the table's pages at once instead of
            // deleting row by row (≈ 6 against ≈ 35 ms, in bounded transactions, for a log of
            // 36 864 rows), and journals none of them.
            sqlx::query("DELETE FROM recent_writes")
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
        }
        let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM recent_run_ids")
            .fetch_one(&mut *tx)
            .await
            .map_err(db(OP))?;
        let trusted = !self.writer.has_failed();
        let released = tx.release().await.map_err(db(OP))?;
        self.recent.freeze();
        if trusted {
            // Before the entries leave the index (see the invariants).
            self.recent.filter_frozen();
        } else {
            // The index may not hold every key the run does: the filters are rebuilt.
            self.recent.filters().clear();
        }
        released.committed().await.map_err(db(OP))?;
        self.recent.thaw();
        Ok(usize::try_from(runs).unwrap_or(0))
    }

    /// Moves every run into the keyed tables: per family and kind, in key order, each
    /// transaction taking at most [`COMPACT_STEP`] keys of each run (the newest run's value
    /// of a key wins) and deleting them from the runs. Each leaf of a keyed table is written
    /// about once per compaction, however many runs it takes in. A key is in the runs or in
    /// the table at every commit, so reads (one statement over both) always find it, and the
    /// filters, which cover both, stay as they are.
    async fn compact(&self) -> Result<(), StoreError> {
        const OP: &str = "compact recent state runs";
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        let runs: Vec<i64> = sqlx::query_scalar("SELECT run FROM recent_run_ids ORDER BY run")
            .fetch_all(&mut *tx)
            .await
            .map_err(db(OP))?;
        let Some(&through) = runs.last() else {
            tx.commit().await.map_err(db(OP))?;
            return Ok(());
        };
        let sets: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT kind, family FROM recent_runs WHERE run <= ?1 ORDER BY kind, family",
        )
        .bind(through)
        .fetch_all(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        for (kind, family) in sets {
            let kind = match kind.as_str() {
                "code" => Kind::Code,
                "hash" => Kind::Hash,
                _ => continue,
            };
            self.compact_set(kind, &family, &runs).await?;
        }
        let mut tx = self
            .writer
            .begin(Durability::Ordered)
            .await
            .map_err(db(OP))?;
        for sql in [
            "DELETE FROM recent_runs WHERE run <= ?1",
            "DELETE FROM recent_run_ids WHERE run <= ?1",
        ] {
            sqlx::query(sql)
                .bind(through)
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
        }
        tx.commit().await.map_err(db(OP))
    }

    /// Compacts the entries of (family, kind) in `runs` (see [`Self::compact`]).
    async fn compact_set(&self, kind: Kind, family: &str, runs: &[i64]) -> Result<(), StoreError> {
        const OP: &str = "compact recent state runs";
        let through = *runs.last().expect("runs to compact");
        let k = kind.as_str();
        let f = super::sql_literal(family);
        let chosen = format!(
            "run IN (SELECT run FROM recent_run_ids WHERE run <= {through}) \
             AND kind = '{k}' AND family = {f}"
        );
        // Keys from `after` (excluded; `None`: from the first) to `upto` (included; `None`: to
        // the last). '' is the least text.
        let mut after: Option<String> = None;
        loop {
            let lower = if after.is_some() {
                "key > ?"
            } else {
                "key >= ''"
            };
            let mut tx = self
                .writer
                .begin(Durability::Ordered)
                .await
                .map_err(db(OP))?;
            // The chunk ends at the first of the runs' COMPACT_STEP-th keys: each run gives it
            // at most COMPACT_STEP keys.
            let fence = format!(
                "SELECT key FROM recent_runs WHERE run = ? AND kind = '{k}' AND family = {f} \
                 AND {lower} ORDER BY key LIMIT 1 OFFSET {}",
                COMPACT_STEP - 1
            );
            let mut upto: Option<String> = None;
            for run in runs {
                let mut q = sqlx::query_scalar::<_, String>(&fence).bind(run);
                if let Some(a) = &after {
                    q = q.bind(a.as_str());
                }
                if let Some(key) = q.fetch_optional(&mut *tx).await.map_err(db(OP))? {
                    if upto.as_ref().is_none_or(|u| key < *u) {
                        upto = Some(key);
                    }
                }
            }
            let range = match upto {
                Some(_) => format!("{lower} AND key <= ?"),
                None => lower.to_owned(),
            };
            let upsert = match kind {
                Kind::Code => format!(
                    "INSERT INTO asset_codes (family, dam_id, code) \
                     SELECT family, key, value FROM recent_runs WHERE {chosen} AND {range} \
                     ORDER BY key, run \
                     ON CONFLICT (family, dam_id) DO UPDATE SET code = excluded.code \
                     WHERE asset_codes.code IS NOT excluded.code"
                ),
                Kind::Hash => format!(
                    "INSERT INTO hashes (family, code, hash, written_at) \
                     SELECT family, key, value, coalesce(written_at, 0) FROM recent_runs \
                     WHERE {chosen} AND {range} ORDER BY key, run \
                     ON CONFLICT (family, code) DO UPDATE SET hash = excluded.hash, \
                     written_at = excluded.written_at"
                ),
            };
            let delete = format!("DELETE FROM recent_runs WHERE {chosen} AND {range}");
            for sql in [&upsert, &delete] {
                let mut q = sqlx::query(sql);
                if let Some(a) = &after {
                    q = q.bind(a.as_str());
                }
                if let Some(u) = &upto {
                    q = q.bind(u.as_str());
                }
                q.execute(&mut *tx).await.map_err(db(OP))?;
            }
            tx.commit().await.map_err(db(OP))?;
            match upto {
                Some(u) => after = Some(u),
                None => return Ok(()),
            }
        }
    }
}

/// A content hash read from the log, a run or the table.
pub(super) fn hash_map(m: KeyMap<String>) -> KeyMap<ContentHash> {
    m.into_iter().map(|(k, v)| (k, ContentHash(v))).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{StoreOptions, WrittenAsset};
    use crate::sqlite::SqliteTarget;

    const F: &str = "packshots";

    /// A file store whose log is merged after `merge_after` rows (runs compacted after
    /// [`MAX_RUNS`]).
    async fn open(dir: &tempfile::TempDir, merge_after: usize) -> SqliteStore {
        open_with(dir, merge_after, MAX_RUNS).await
    }

    /// A file store whose log is merged after `merge_after` rows, runs compacted after
    /// `max_runs`.
    async fn open_with(
        dir: &tempfile::TempDir,
        merge_after: usize,
        max_runs: usize,
    ) -> SqliteStore {
        let target = SqliteTarget::File(dir.path().join("s.db"));
        let mut store = SqliteStore::open(target, &StoreOptions::default(), "test")
            .await
            .unwrap();
        store.recent = Arc::new(Recent::new(merge_after, max_runs));
        store
    }

    fn written(dam_id: &str, code: &str, hash: &str) -> WrittenAsset {
        WrittenAsset {
            dam_id: dam_id.into(),
            code: code.into(),
            hash: ContentHash(hash.into()),
            version: None,
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

    /// What the runs hold: (run, kind, key, value), in key order.
    async fn run_rows(store: &SqliteStore) -> Vec<(i64, String, String, String)> {
        sqlx::query_as("SELECT run, kind, key, value FROM recent_runs ORDER BY run, kind, key")
            .fetch_all(&store.reader)
            .await
            .unwrap()
    }

    async fn read_all(store: &SqliteStore, n: usize) -> (KeyMap<String>, KeyMap<ContentHash>) {
        (
            store.asset_codes(F, &keys(0..n, "d")).await.unwrap(),
            store.hashes(F, &keys(0..n, "c")).await.unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_read_from_the_log_then_from_runs_then_from_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        // Each asset appends 2 rows (its code ahead, its hash): merged at the 5th asset, and
        // the runs compacted at the second.
        let store = open_with(&dir, 10, 2).await;
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
        assert!(
            tables(&store).await.0.is_empty(),
            "into a run, not the tables"
        );
        let runs = run_rows(&store).await;
        assert_eq!(runs.len(), 10);
        assert!(runs.iter().all(|r| r.0 == 1), "one run: {runs:?}");
        assert!(runs.contains(&(1, "hash".into(), "c4".into(), "h4".into())));
        assert!(store.recent.is_empty(), "the index let go of them");
        let (codes, hashes) = read_all(&store, 6).await;
        assert_eq!((codes.len(), hashes.len()), (5, 5));
        assert_eq!(codes["d4"], "c4");
        assert_eq!(hashes["c0"], ContentHash("h0".into()));

        // The second run reaches `max_runs`: both are compacted into the tables.
        for i in 5..10 {
            write_asset(&store, i, &format!("h{i}")).await;
        }
        store.wait_for_merge().await;
        assert!(run_rows(&store).await.is_empty());
        let run_ids: i64 = sqlx::query_scalar("SELECT count(*) FROM recent_run_ids")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(run_ids, 0);
        let (codes, hashes) = tables(&store).await;
        assert_eq!((codes.len(), hashes.len()), (10, 10));
        assert_eq!(hashes["c9"], "h9");
        let (codes, hashes) = read_all(&store, 12).await;
        assert_eq!((codes.len(), hashes.len()), (10, 10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_family_is_written_into_the_statements_as_a_quoted_literal() {
        // Appends and merges carry the family as a literal of the statement: a quote in it
        // stays data, and other families' rows are untouched.
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 4).await;
        let odd = "it's'); DROP TABLE hashes; --";
        for family in [odd, F] {
            store
                .put_asset_codes(family, &[("d1".into(), format!("{family}-c1"))])
                .await
                .unwrap();
            store
                .record_written(family, &[written("d1", &format!("{family}-c1"), "h1")])
                .await
                .unwrap();
        }
        store.wait_for_merge().await;
        assert_eq!(store.recent_rows().await, 0, "merged");
        assert_eq!(run_rows(&store).await.len(), 4, "into runs");
        // And compacted into the tables.
        store.merge_recent().await.unwrap();
        for family in [odd, F] {
            let codes = store.asset_codes(family, &["d1".into()]).await.unwrap();
            assert_eq!(codes["d1"], format!("{family}-c1"));
            let hashes = store
                .hashes(family, &[format!("{family}-c1")])
                .await
                .unwrap();
            assert_eq!(hashes[&format!("{family}-c1")], ContentHash("h1".into()));
        }
        let families: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT family FROM hashes ORDER BY family")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        assert_eq!(families, [odd, F]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_larger_than_one_statement_keeps_every_row_and_merges_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000_000).await;
        // More rows than one `INSERT` binds (`APPEND_ROWS`), odd sizes on both sides.
        let n = APPEND_ROWS * 2 + 37;
        let codes: Vec<(String, String)> =
            (0..n).map(|i| (format!("d{i}"), format!("c{i}"))).collect();
        store.put_asset_codes(F, &codes).await.unwrap();
        let written: Vec<WrittenAsset> = (0..n)
            .map(|i| written(&format!("d{i}"), &format!("c{i}"), &format!("h{i}")))
            .collect();
        store.record_written(F, &written).await.unwrap();
        assert_eq!(store.recent_rows().await, 2 * n as i64);
        let logged: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT kind, family, key || '=' || value, written_at FROM recent_writes ORDER BY seq",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap();
        assert_eq!(logged[0].2, "d0=c0");
        assert_eq!(logged[n].2, "c0=h0");
        assert_eq!(logged[2 * n - 1].2, format!("c{}=h{}", n - 1, n - 1));
        assert!(logged.iter().all(|r| r.1 == F && r.3.is_some()));
        assert_eq!(
            logged.iter().filter(|r| r.0 == Kind::Code.as_str()).count(),
            n
        );

        let from_index = read_all(&store, n).await;
        assert_eq!((from_index.0.len(), from_index.1.len()), (n, n));
        // Merged into a run, compacted into the tables in steps of `COMPACT_STEP` keys: the
        // tables hold every entry.
        store.merge_recent().await.unwrap();
        assert!(run_rows(&store).await.is_empty());
        assert_eq!(store.recent_rows().await, 0);
        let (codes, hashes) = tables(&store).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
        assert_eq!(codes["d1000"], "c1000");
        assert_eq!(hashes[&format!("c{}", n - 1)], format!("h{}", n - 1));
        assert_eq!(read_all(&store, n).await, from_index);
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
        // The first read of the family builds the filter from the table and the runs (the
        // merges so far), and later merges insert their keys into it.
        let (_, hashes) = read_all(&store, 20).await;
        assert_eq!(hashes.len(), 20);
        for i in 20..60 {
            write_asset(&store, i, &format!("h{i}")).await;
        }
        store.wait_for_merge().await;
        assert!(
            store.recent_rows().await < 10,
            "merged into runs, some compacted"
        );
        assert!(!run_rows(&store).await.is_empty(), "some in runs");
        assert!(!tables(&store).await.1.is_empty(), "some in the tables");
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

        // Reopened, the filter is built from the table and the runs: every merged key is still
        // found.
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
            "a write that reaches the threshold waits for the running merge"
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
        let hashes = run_rows(&store)
            .await
            .into_iter()
            .filter(|r| r.1 == "hash")
            .count();
        assert_eq!(hashes, 2);
    }

    /// A compaction takes every run (the newest value of a key winning) into the tables, in
    /// transactions of at most `COMPACT_STEP` keys of each run, and empties the runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_moves_every_run_into_the_tables_the_newest_value_winning() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(&dir, 100_000, 100).await;
        let n = COMPACT_STEP * 5 + 3;
        // Three runs: every key, every other key, every third key, each newer than the last.
        for (round, step) in [(0, 1), (1, 2), (2, 3)] {
            let codes: Vec<(String, String)> = (0..n)
                .step_by(step)
                .map(|i| (format!("d{i}"), format!("c{i}-r{round}")))
                .collect();
            let assets: Vec<WrittenAsset> = (0..n)
                .step_by(step)
                .map(|i| {
                    written(
                        &format!("d{i}"),
                        &format!("c{i}"),
                        &format!("h{i}-r{round}"),
                    )
                })
                .collect();
            store.put_asset_codes(F, &codes).await.unwrap();
            store.record_written(F, &assets).await.unwrap();
            assert_eq!(store.merge_into_run().await, round + 1);
        }
        let want = |i: usize| {
            if i % 3 == 0 {
                2
            } else if i % 2 == 0 {
                1
            } else {
                0
            }
        };
        let check = |(codes, hashes): (KeyMap<String>, KeyMap<ContentHash>)| {
            assert_eq!((codes.len(), hashes.len()), (n, n));
            for i in 0..n {
                // `record_written` wrote the code `c{i}` after `put_asset_codes`.
                assert_eq!(codes[&format!("d{i}")], format!("c{i}"), "d{i}");
                assert_eq!(
                    hashes[&format!("c{i}")],
                    ContentHash(format!("h{i}-r{}", want(i))),
                    "c{i}"
                );
            }
        };
        check(read_all(&store, n).await);
        let commits = store.writer.commits().await;
        store.merge_recent().await.unwrap();
        let transactions = store.writer.commits().await - commits;
        assert!(run_rows(&store).await.is_empty());
        let (codes, hashes) = tables(&store).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
        for i in 0..n {
            assert_eq!(hashes[&format!("c{i}")], format!("h{i}-r{}", want(i)));
        }
        // Per kind, the chunks end at the first run's `COMPACT_STEP`-th key: at least
        // n / COMPACT_STEP of them, besides the listing and the final cleanup.
        assert!(
            transactions >= 2 * (n / COMPACT_STEP) as u64 + 2,
            "{transactions} transactions"
        );
        let written_at: i64 = sqlx::query_scalar("SELECT min(written_at) FROM hashes")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert!(written_at > 0, "the write time travels with the hash");
        check(read_all(&store, n).await);
    }

    /// Reads while a merge writes a run and a compaction moves the runs into the tables, chunk
    /// by chunk, find every entry at its latest value (in the index, a run or the table), and
    /// once both are done the index and the runs are empty. (How many reads fall inside the
    /// merge depends on scheduling: printed, not asserted.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_during_a_merge_and_a_compaction_find_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open_with(&dir, 100_000, 100).await);
        let n = COMPACT_STEP * 8 + 7;
        let hash = |i: usize, round: usize| format!("{:064x}", i * 10 + round);
        for round in 0..2 {
            let codes: Vec<(String, String)> =
                (0..n).map(|i| (format!("d{i}"), format!("c{i}"))).collect();
            let assets: Vec<WrittenAsset> = (0..n)
                .map(|i| written(&format!("d{i}"), &format!("c{i}"), &hash(i, round)))
                .collect();
            store.put_asset_codes(F, &codes).await.unwrap();
            store.record_written(F, &assets).await.unwrap();
            if round == 0 {
                store.merge_into_run().await;
            }
        }
        // The codes change too: a stale one (the run's) would show.
        let renamed: Vec<(String, String)> =
            (0..n).map(|i| (format!("d{i}"), format!("x{i}"))).collect();
        store.put_asset_codes(F, &renamed).await.unwrap();
        // Build the filters first, so that a key missing from the index costs a SQL read
        // only when the runs or the table may hold it.
        read_all(&store, n).await;
        let merging = {
            let store = store.clone();
            tokio::spawn(async move { store.merge_recent().await })
        };
        let mut rounds = 0;
        while !merging.is_finished() || rounds == 0 {
            let (codes, hashes) = read_all(&store, n).await;
            assert_eq!((codes.len(), hashes.len()), (n, n), "round {rounds}");
            for i in [0, 3, n / 2, n - 1] {
                assert_eq!(
                    hashes[&format!("c{i}")],
                    ContentHash(hash(i, 1)),
                    "round {rounds}"
                );
                assert_eq!(codes[&format!("d{i}")], format!("x{i}"), "round {rounds}");
            }
            rounds += 1;
            tokio::task::yield_now().await;
        }
        merging.await.unwrap().unwrap();
        assert!(store.recent.is_empty());
        assert!(run_rows(&store).await.is_empty());
        let (codes, hashes) = read_all(&store, n).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
        assert_eq!(hashes["c3"], ContentHash(hash(3, 1)));
        // Not asserted (it depends on scheduling), shown when the test fails elsewhere.
        eprintln!("{rounds} read rounds during the merge and the compaction");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_newest_run_wins_over_older_runs_and_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(&dir, 1_000, 100).await;
        write_asset(&store, 1, "table").await;
        write_asset(&store, 2, "table").await;
        store.merge_recent().await.unwrap();
        store
            .record_written(F, &[written("d1", "c1", "run1")])
            .await
            .unwrap();
        store.merge_into_run().await;
        store
            .record_written(F, &[written("d1", "c1", "run2")])
            .await
            .unwrap();
        store
            .put_asset_codes(F, &[("d2".into(), "c2-run2".into())])
            .await
            .unwrap();
        store.merge_into_run().await;
        let (codes, hashes) = read_all(&store, 3).await;
        assert_eq!(hashes["c1"], ContentHash("run2".into()));
        assert_eq!(hashes["c2"], ContentHash("table".into()));
        assert_eq!(codes["d2"], "c2-run2");
        assert_eq!(codes["d1"], "c1");
        // The same with SQL alone (as after a failed commit), and after a reopen.
        store.writer.set_failed();
        assert_eq!(read_all(&store, 3).await, (codes.clone(), hashes.clone()));
        store.close().await;
        drop(store);
        let store = open_with(&dir, 1_000, 100).await;
        assert_eq!(read_all(&store, 3).await, (codes.clone(), hashes.clone()));
        // Reverse lookups see the runs too: `c2` is no longer d2's code.
        let by_code = store
            .dam_ids_by_code(F, &["c2".into(), "c2-run2".into(), "c1".into()])
            .await
            .unwrap();
        assert_eq!(by_code.get("c2"), None);
        assert_eq!(by_code["c2-run2"], ["d2"]);
        assert_eq!(by_code["c1"], ["d1"]);
        store.merge_recent().await.unwrap();
        assert_eq!(read_all(&store, 3).await, (codes, hashes));
        let (_, table) = tables(&store).await;
        assert_eq!(table["c1"], "run2");
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
        // Not needed by the merge (it empties the log while it holds the writer), but a
        // sequence number is never given twice.
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
        let runs = run_rows(&store).await;
        assert_eq!(
            runs.iter().filter(|r| r.1 == "code").count(),
            3,
            "into a run"
        );
        let (codes, hashes) = read_all(&store, 3).await;
        assert_eq!((codes.len(), hashes.len()), (3, 3));
    }

    /// A merge writes the run and empties the log in one transaction (nothing to finish after
    /// a crash), the latest row of a key winning over its older ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_writes_the_latest_row_per_key_and_empties_the_log_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000_000).await;
        let n = 700;
        let batch = |tag: &str| -> Vec<WrittenAsset> {
            (0..n)
                .map(|i| written(&format!("d{i}"), &format!("c{i}"), &format!("{tag}{i}")))
                .collect()
        };
        store.record_written(F, &batch("old")).await.unwrap();
        store.record_written(F, &batch("new")).await.unwrap();
        store
            .put_asset_codes(F, &[("d5".into(), "c5-renamed".into())])
            .await
            .unwrap();
        assert_eq!(store.recent_rows().await, 3 * n as i64 + 1);
        let commits = store.writer.commits().await;
        assert_eq!(store.merge_into_run().await, 1);
        assert_eq!(store.writer.commits().await - commits, 1);
        assert_eq!(store.recent_rows().await, 0);
        let runs = run_rows(&store).await;
        assert_eq!(runs.len(), 2 * n, "one row per key");
        assert!(runs.contains(&(1, "hash".into(), "c9".into(), "new9".into())));
        assert!(runs.contains(&(1, "code".into(), "d5".into(), "c5-renamed".into())));
        assert!(runs.contains(&(1, "code".into(), "d6".into(), "c6".into())));
        let written_at: i64 =
            sqlx::query_scalar("SELECT min(written_at) FROM recent_runs WHERE kind = 'hash'")
                .fetch_one(&store.reader)
                .await
                .unwrap();
        assert!(written_at > 0, "the write time travels with the hash");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deletion_removes_the_key_from_the_tables_the_log_and_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000).await;
        // Assets 0–2 compacted into the tables, 0–3 rewritten into a run, 2–5 rewritten in
        // the log: every key deleted below is in two or three of them.
        for i in 0..3 {
            write_asset(&store, i, "merged").await;
        }
        store.merge_recent().await.unwrap();
        for i in 0..4 {
            write_asset(&store, i, "run").await;
        }
        store.merge_into_run().await;
        for i in 2..6 {
            write_asset(&store, i, "logged").await;
        }
        store.remove_hashes(F, &keys(0..1, "c")).await.unwrap();
        store.remove_asset_codes(F, &keys(1..2, "d")).await.unwrap();
        store
            .forget_assets(F, &[("d2".into(), "c2".into()), ("d3".into(), "c3".into())])
            .await
            .unwrap();
        let check = |(codes, hashes): (KeyMap<String>, KeyMap<ContentHash>)| {
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
        // 0–9 in the tables, 5–11 in a run, 10–14 in the log.
        for i in 0..10 {
            write_asset(&store, i, "merged").await;
        }
        store.merge_recent().await.unwrap();
        for i in 5..12 {
            write_asset(&store, i, &format!("run{i}")).await;
        }
        store.merge_into_run().await;
        for i in 10..15 {
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

    /// Reads every key of 0..12 and every code's DAM ids, and compares them with the model.
    async fn compare(
        store: &SqliteStore,
        codes: &BTreeMap<String, String>,
        hashes: &BTreeMap<String, String>,
        at: &str,
    ) {
        // The empty key too: the least text, where compaction chunks and filter pages start.
        let mut ids = keys(0..12, "d");
        ids.push(String::new());
        let mut all_codes = keys(0..12, "c");
        all_codes.push(String::new());
        let (read_codes, read_hashes) = (
            store.asset_codes(F, &ids).await.unwrap(),
            store.hashes(F, &all_codes).await.unwrap(),
        );
        let read_codes: BTreeMap<String, String> = read_codes.into_iter().collect();
        let read_hashes: BTreeMap<String, String> =
            read_hashes.into_iter().map(|(k, v)| (k, v.0)).collect();
        assert_eq!(&read_codes, codes, "codes, {at}");
        assert_eq!(&read_hashes, hashes, "hashes, {at}");
        let mut by_code: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (d, c) in codes {
            by_code.entry(c.clone()).or_default().push(d.clone());
        }
        let read: BTreeMap<String, Vec<String>> = store
            .dam_ids_by_code(F, &all_codes)
            .await
            .unwrap()
            .into_iter()
            .map(|(c, mut ids)| {
                ids.sort();
                (c, ids)
            })
            .collect();
        assert_eq!(read, by_code, "DAM ids by code, {at}");
    }

    /// Random writes, deletions, merges and compactions over a few keys, read back after each
    /// step and compared with a model, with thresholds small enough that every layer is in use
    /// (the log, a merge in progress, runs, the tables); then after a reopen, and with SQL
    /// alone (as after a failed commit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_operations_read_back_as_the_model_says() {
        for seed in [0x9e37_79b9_7f4a_7c15u64, 7, 1_234_567, 0xdead_beef] {
            let dir = tempfile::tempdir().unwrap();
            let store = open_with(&dir, 6, 3).await;
            // xorshift64: the same sequence on every run.
            let mut state = seed;
            let mut next = move |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            let mut codes: BTreeMap<String, String> = BTreeMap::new();
            let mut hashes: BTreeMap<String, String> = BTreeMap::new();
            for step in 0..250 {
                // 12 keys of each kind, and now and then the empty one.
                let mut key = |prefix: &str| match next(13) {
                    12 => String::new(),
                    i => format!("{prefix}{i}"),
                };
                let (d, c) = (key("d"), key("c"));
                match next(10) {
                    0..=3 => {
                        let h = format!("h{step}");
                        store
                            .record_written(F, &[written(&d, &c, &h)])
                            .await
                            .unwrap();
                        codes.insert(d, c.clone());
                        hashes.insert(c, h);
                    }
                    4 | 5 => {
                        store
                            .put_asset_codes(F, &[(d.clone(), c.clone())])
                            .await
                            .unwrap();
                        codes.insert(d, c);
                    }
                    6 => {
                        store
                            .remove_hashes(F, std::slice::from_ref(&c))
                            .await
                            .unwrap();
                        hashes.remove(&c);
                    }
                    7 => {
                        store
                            .remove_asset_codes(F, std::slice::from_ref(&d))
                            .await
                            .unwrap();
                        codes.remove(&d);
                    }
                    8 => {
                        store
                            .forget_assets(F, &[(d.clone(), c.clone())])
                            .await
                            .unwrap();
                        codes.remove(&d);
                        hashes.remove(&c);
                    }
                    _ => {
                        if next(2) == 0 {
                            store.merge_into_run().await;
                        } else {
                            store.merge_recent().await.unwrap();
                        }
                    }
                }
                compare(
                    &store,
                    &codes,
                    &hashes,
                    &format!("seed {seed}, step {step}"),
                )
                .await;
            }
            store.close().await;
            drop(store);
            let store = open_with(&dir, 6, 3).await;
            compare(&store, &codes, &hashes, &format!("seed {seed}, reopened")).await;
            store.writer.set_failed();
            compare(&store, &codes, &hashes, &format!("seed {seed}, SQL alone")).await;
        }
    }

    fn hex_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[0-9a-f]{64}",
            "[0-9a-fA-F]{64}",
            "[0-9a-f]{63,65}",
            "dead-lettered:[0-9T:+-]{0,30}",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        /// An index entry gives back exactly the key, value and (hashes only) write time it was
        /// made of, whatever their lengths (keys of 127 bytes and more take a longer length
        /// prefix) and whether or not the value is packed hex.
        #[test]
        fn an_entry_gives_back_what_it_was_made_of(
            key in proptest::prop_oneof!["[a-zA-Z0-9_-]{0,200}", ".{0,40}", "x{16380,16390}"],
            value in hex_value(),
            at in proptest::prelude::any::<i64>(),
            hash in proptest::prelude::any::<bool>(),
        ) {
            let kind = if hash { Kind::Hash } else { Kind::Code };
            let e = Entry::new(kind, &key, &value, at);
            proptest::prop_assert_eq!(e.key(), key.as_bytes());
            proptest::prop_assert_eq!(e.key_string(), key.clone());
            proptest::prop_assert_eq!(e.value(), value.clone());
            proptest::prop_assert_eq!(e.at(), if hash { at } else { 0 });
        }
    }

    #[test]
    fn a_content_hash_entry_fits_one_96_byte_block() {
        let code = "00008CB1_9F98_64DC_E125_02EFF7F750D5_797d3ee47ede";
        let hash = "b45faa19b67b41ed214de6983931c80951af45d52a26f6cdbca22f454a1f27c6";
        let e = Entry::new(Kind::Hash, code, hash, 1);
        assert_eq!(e.0.len(), 1 + 1 + code.len() + 8 + 32);
        let e = Entry::new(Kind::Code, "00008CB1-9F98-64DC-E125-02EFF7F750D5", code, 1);
        assert_eq!(e.0.len(), 1 + 1 + 36 + code.len());
        // Not lowercase hex: kept as text.
        let upper = hash.to_uppercase();
        let e = Entry::new(Kind::Hash, code, &upper, 1);
        assert_eq!(e.value(), upper);
        assert_eq!(e.0.len(), 1 + 1 + code.len() + 8 + 64);
    }

    /// A merge that did not commit leaves its entries frozen; the next freeze adds the new
    /// entries over them, the newer value winning for a key in both.
    #[test]
    fn a_second_freeze_adds_newer_entries_over_the_frozen_ones() {
        let recent = Recent::new(1_000, MAX_RUNS);
        let put = |pairs: &[(&str, &str)], at: i64| {
            recent.put(
                F,
                Appended {
                    kind: Kind::Hash,
                    entries: pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    at,
                },
            )
        };
        put(&[("c3", "old3"), ("c1", "old1"), ("c5", "old5")], 1);
        recent.freeze();
        put(&[("c2", "new2"), ("c3", "new3"), ("c6", "new6")], 2);
        assert_eq!(recent.lookup(F, Kind::Hash, &["c3".into()]).0["c3"], "new3");
        recent.remove(F, Kind::Hash, &["c5"]);
        recent.freeze();
        assert!(recent.index().active.is_empty());
        let mut got: Vec<(String, String, i64)> = recent.index().frozen.families[F]
            [Kind::Hash.slot()]
        .iter()
        .filter(|e| !e.is_tombstone())
        .map(|e| (e.key_string(), e.value(), e.at()))
        .collect();
        got.sort();
        let want = [
            ("c1", "old1", 1),
            ("c2", "new2", 2),
            ("c3", "new3", 2),
            ("c6", "new6", 2),
        ];
        assert_eq!(got, want.map(|(k, v, at)| (k.to_owned(), v.to_owned(), at)));
        // c5 is a tombstone until the thaw: known as deleted, so not left to SQL.
        let (found, missing) = recent.lookup(F, Kind::Hash, &["c1".into(), "c5".into()]);
        assert_eq!(found["c1"], "old1");
        assert!(missing.is_empty());
        recent.thaw();
        assert!(recent.is_empty());
        let (found, missing) = recent.lookup(F, Kind::Hash, &["c1".into(), "c5".into()]);
        assert!(found.is_empty());
        assert_eq!(missing, ["c1", "c5"]);
    }

    /// A deleted key is absent for the index (not left to SQL) until the merge after the
    /// deletion commits; a write after the deletion wins over its tombstone; tombstones count
    /// as rows, so deletions alone reach the merge threshold.
    #[test]
    fn a_deleted_key_is_a_tombstone_until_the_next_merge_commits() {
        let recent = Recent::new(1_000, MAX_RUNS);
        let put = |k: &str, v: &str| {
            recent.put(
                F,
                Appended::now(Kind::Code, vec![(k.to_owned(), v.to_owned())]),
            )
        };
        put("d1", "c1");
        put("d2", "c2");
        let rows = recent.rows();
        recent.remove(F, Kind::Code, &["d1", "d3"]);
        assert_eq!(recent.rows(), rows + 2);
        let ids = [
            "d1".to_owned(),
            "d2".to_owned(),
            "d3".to_owned(),
            "d4".to_owned(),
        ];
        let (found, missing) = recent.lookup(F, Kind::Code, &ids);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [("d2".to_owned(), "c2".to_owned())]
        );
        assert_eq!(missing, ["d4"]);
        // The other kind is untouched.
        assert_eq!(recent.lookup(F, Kind::Hash, &ids[..1]).1, ["d1"]);
        recent.freeze();
        assert_eq!(recent.lookup(F, Kind::Code, &ids).1, ["d4"]);
        put("d3", "c3-again");
        assert_eq!(recent.lookup(F, Kind::Code, &ids[2..3]).0["d3"], "c3-again");
        recent.thaw();
        let (found, missing) = recent.lookup(F, Kind::Code, &ids);
        assert_eq!(found["d3"], "c3-again");
        assert_eq!(missing, ["d1", "d2", "d4"]);
    }

    /// The window a reviewer found: a key with an older value in a run and a newer one in the
    /// log is deleted; between the deletion's release (the index updated) and its group's
    /// COMMIT, a read must not fall through to SQL, which still sees the run's value. Another
    /// member holds the writer right after the deletion, so that group stays open while the
    /// key is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_between_a_deletion_and_its_commit_finds_the_key_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir, 1_000).await);
        write_asset(&store, 0, "in-a-run").await;
        store.merge_into_run().await;
        write_asset(&store, 0, "in-the-log").await;
        // Read from the index (without the fix, the read below missed it, built the filter of
        // the family's hashes and read the run's value with SQL).
        assert_eq!(
            store.hashes(F, &keys(0..1, "c")).await.unwrap()["c0"].0,
            "in-the-log"
        );

        let first = store.writer.begin(Durability::Ordered).await.unwrap();
        // The deletion queues for the writer, then the next member behind it (the writer's
        // lock is first come, first served); the committer, asked when `first` commits,
        // queues behind both.
        let before = store.writer.holders();
        let deletion = tokio::spawn({
            let store = store.clone();
            async move { store.remove_hashes(F, &keys(0..1, "c")).await }
        });
        store.writer.wait_queued(before, 1).await;
        let next = tokio::spawn({
            let store = store.clone();
            async move { store.writer.begin(Durability::Ordered).await.unwrap() }
        });
        store.writer.wait_queued(before, 2).await;
        let first = tokio::spawn(first.commit());
        // The deletion has run and released; `next` holds the writer, so the group with the
        // deletion is not committed yet.
        let next = next.await.unwrap();
        assert!(
            !deletion.is_finished(),
            "the deletion's group must still be open"
        );
        let reads = table_reads(&store);
        let got = store.hashes(F, &keys(0..1, "c")).await.unwrap();
        assert!(got.is_empty(), "read before the commit: {got:?}");
        assert_eq!(
            table_reads(&store),
            reads,
            "answered by the index, without SQL"
        );
        next.commit().await.unwrap();
        first.await.unwrap().unwrap();
        deletion.await.unwrap().unwrap();
        assert!(store.hashes(F, &keys(0..1, "c")).await.unwrap().is_empty());
        // And after the merge that drops the tombstone, from SQL.
        store.merge_into_run().await;
        assert!(store.recent.is_empty());
        assert!(store.hashes(F, &keys(0..1, "c")).await.unwrap().is_empty());
    }

    /// Deletions alone bring a merge about (their tombstones count as rows), so the index does
    /// not grow with them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletions_alone_reach_the_merge_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 4).await;
        store.remove_asset_codes(F, &keys(0..5, "d")).await.unwrap();
        store.wait_for_merge().await;
        assert!(store.recent.is_empty(), "the merge dropped the tombstones");
        assert!(store
            .asset_codes(F, &keys(0..5, "d"))
            .await
            .unwrap()
            .is_empty());
    }
}
