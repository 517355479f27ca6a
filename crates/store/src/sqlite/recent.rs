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
//! - A merge copies the whole log into the keyed tables, in runs of keys each committed on its
//!   own, then empties it; a merged entry stays readable in the index's frozen layer until the
//!   commit of its run, and leaves it after (a read that misses it in the index then reads the
//!   table, in a snapshot taken after that commit), so a read finds each entry in the index or
//!   in the tables, never in neither. Only the merger adds to the frozen layer (when a merge
//!   begins); anyone else only removes from it.
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
/// written is about two rows (its code, written ahead, and its hash), so 36 864 rows hold
/// ≈ 18 000 assets: the index then holds ≈ 4.5 MiB ([`Entry`]: ≈ 120 bytes an entry), and a
/// merge writes each leaf of the keyed tables at most once per ≈ 18 000 assets instead of once
/// per entry. A merge's entries leave the index run by run as they reach the tables, and its
/// log rows are deleted [`LOG_DELETE_ROWS`] at a time, so a merge adds little to the peak.
/// Measured (zero latency, 100 000 assets, 4 alternating pairs): 24 576 rows with a
/// `BTreeMap<Box<str>, _>` index → 36 864 rows with this one, −7 % wall; the 1 000 000-asset
/// run's peak RSS 58.8 → 59.5 MiB (same session). 49 152 rows: 63.3 MiB — too close to the
/// 64 MB ceiling.
pub(super) const MERGE_AFTER_ROWS: usize = 36_864;

/// Keys per read when a table's filter is built.
const FILTER_PAGE: i64 = 10_000;

/// Log rows deleted per transaction once a merge has copied them. Every page a transaction
/// changes is held twice in memory until it commits (the dirty page, and its original in the
/// member's statement journal, kept in memory: `temp_store = memory`): deleting a whole log of
/// [`MERGE_AFTER_ROWS`] rows (≈ 150 bytes each) at once held ≈ 2 × 5 MiB.
const LOG_DELETE_ROWS: i64 = 4_096;

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

    /// (flags, start of the key, end of the key).
    fn header(&self) -> (u8, usize, usize) {
        let (len, start) = get_length(&self.0, 1);
        (self.0[0], start, start + len)
    }

    fn key(&self) -> &[u8] {
        let (_, start, end) = self.header();
        &self.0[start..end]
    }

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

/// The log's entries not yet being merged: the latest per key.
#[derive(Default)]
struct Active {
    families: HashMap<String, PerKind<EntrySet>>,
}

impl Active {
    fn get(&self, family: &str, kind: Kind, key: &str) -> Option<&Entry> {
        self.families.get(family)?[kind.slot()].get(key.as_bytes())
    }

    fn is_empty(&self) -> bool {
        self.families.is_empty()
    }
}

/// The entries of a merge, sorted by key (UTF-8 byte order is the keys' order), at most one
/// per key.
#[derive(Default)]
struct Frozen {
    families: HashMap<String, PerKind<Vec<Entry>>>,
}

impl Frozen {
    fn get(&self, family: &str, kind: Kind, key: &str) -> Option<&Entry> {
        let run = &self.families.get(family)?[kind.slot()];
        run.binary_search_by(|e| e.key().cmp(key.as_bytes()))
            .ok()
            .map(|i| &run[i])
    }

    fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Adds `newer` over these entries (a merge that failed left its entries here).
    fn absorb(&mut self, newer: Active) {
        for (family, sets) in newer.families {
            let mine = self.families.entry(family).or_default();
            for (slot, set) in sets.into_iter().enumerate() {
                let mut fresh: Vec<Entry> = set.into_iter().collect();
                fresh.sort_unstable_by(|a, b| a.key().cmp(b.key()));
                let old = std::mem::take(&mut mine[slot]);
                mine[slot] = merge_sorted(old, fresh);
            }
        }
    }
}

/// Two sorted runs as one; on equal keys, `newer`'s entry.
fn merge_sorted(older: Vec<Entry>, newer: Vec<Entry>) -> Vec<Entry> {
    if older.is_empty() {
        return newer;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.into_iter().peekable();
    let mut newer = newer.into_iter().peekable();
    loop {
        let take_newer = match (older.peek(), newer.peek()) {
            (Some(o), Some(n)) => match o.key().cmp(n.key()) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => {
                    older.next();
                    true
                }
            },
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        out.extend(if take_newer {
            newer.next()
        } else {
            older.next()
        });
    }
    out
}

#[derive(Default)]
struct Index {
    /// Entries of the log not yet being merged.
    active: Active,
    /// Entries of a merge not yet known to be in the keyed tables.
    frozen: Frozen,
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

    /// Forgets deleted keys (called by the writer's holder).
    pub(super) fn remove(&self, family: &str, kind: Kind, keys: &[&str]) {
        let mut index = self.index();
        let Index { active, frozen, .. } = &mut *index;
        if let Some(sets) = active.families.get_mut(family) {
            for k in keys {
                sets[kind.slot()].remove(k.as_bytes());
            }
        }
        if let Some(runs) = frozen.families.get_mut(family) {
            let gone: HashSet<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            runs[kind.slot()].retain(|e| !gone.contains(e.key()));
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
        let Some(runs) = index.frozen.families.get(family) else {
            return Vec::new();
        };
        let run = &runs[kind.slot()];
        let from = after.map_or(0, |a| run.partition_point(|e| e.key() <= a.as_bytes()));
        run[from..]
            .iter()
            .take(n)
            .map(|e| (e.key_string(), e.value(), e.at()))
            .collect()
    }

    /// A run of a merge is committed: its frozen entries of (family, kind), keys up to
    /// `through`, are in the keyed table and leave the index (a read that no longer finds one
    /// here reads the table, after that commit). Frees their memory while the merge goes on,
    /// so the index peaks near one threshold's worth of entries rather than two.
    fn release_merged(&self, family: &str, kind: Kind, through: &str) {
        let mut index = self.index();
        if let Some(runs) = index.frozen.families.get_mut(family) {
            let run = &mut runs[kind.slot()];
            let n = run.partition_point(|e| e.key() <= through.as_bytes());
            run.drain(..n);
        }
    }

    /// A merge is committed: its entries are in the keyed tables.
    fn thaw(&self) {
        self.index().frozen = Frozen::default();
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

/// Reads `keys` from the keyed table and the log with SQL, in one snapshot: the log's latest
/// row per key wins. Used when the index cannot be trusted (a failed commit).
pub(super) async fn read_through_log(
    store: &SqliteStore,
    kind: Kind,
    family: &str,
    keys: &[String],
    op: &'static str,
) -> Result<KeyMap<String>, StoreError> {
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
                // The family is the statement's own literal (as in `append`).
                let sql = match kind {
                    Kind::Code => format!(
                        "INSERT INTO asset_codes (family, dam_id, code) VALUES {} \
                         ON CONFLICT (family, dam_id) DO UPDATE SET code = excluded.code \
                         WHERE asset_codes.code IS NOT excluded.code",
                        values_rows(run.len(), &[&family], 2)
                    ),
                    Kind::Hash => format!(
                        "INSERT INTO hashes (family, code, hash, written_at) VALUES {} \
                         ON CONFLICT (family, code) DO UPDATE SET hash = excluded.hash, \
                         written_at = excluded.written_at",
                        values_rows(run.len(), &[&family], 3)
                    ),
                };
                // Runs are full but for each family's last: that one is not kept prepared.
                let mut q = sqlx::query(&sql).persistent(run.len() == MERGE_RUN);
                for (key, value, at) in &run {
                    q = q.bind(key.as_str()).bind(value.as_str());
                    if kind == Kind::Hash {
                        q = q.bind(*at);
                    }
                }
                q.execute(&mut *tx).await.map_err(db(OP))?;
                tx.commit().await.map_err(db(OP))?;
                self.recent.release_merged(&family, kind, &last_key);
                after = Some(last_key);
            }
        }
        // The merged rows leave the log oldest first, a bounded number per transaction (see
        // [`LOG_DELETE_ROWS`]). A process ending halfway leaves the newer rows, which the next
        // open merges again: each key's latest remaining row is at least as new as what the
        // tables hold.
        loop {
            let mut tx = self
                .writer
                .begin(Durability::Ordered)
                .await
                .map_err(db(OP))?;
            let deleted = sqlx::query(
                "DELETE FROM recent_writes WHERE seq IN \
                 (SELECT seq FROM recent_writes WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
            )
            .bind(last)
            .bind(LOG_DELETE_ROWS)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?
            .rows_affected();
            tx.commit().await.map_err(db(OP))?;
            if deleted < LOG_DELETE_ROWS as u64 {
                break;
            }
        }
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

    async fn read_all(store: &SqliteStore, n: usize) -> (KeyMap<String>, KeyMap<ContentHash>) {
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
        // Merged in several runs (`MERGE_RUN` keys each): the tables hold every entry.
        store.merge_recent().await.unwrap();
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

    /// Entries leave the index run by run as a merge commits them; a read during the merge
    /// finds every entry all the same (in the index or in the table), and once the merge is
    /// done the index is empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_during_a_merge_find_every_entry_as_runs_leave_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir, 100_000).await);
        let n = MERGE_RUN * 4 + 7;
        let codes: Vec<(String, String)> =
            (0..n).map(|i| (format!("d{i}"), format!("c{i}"))).collect();
        let hash = |i: usize| format!("{i:064x}");
        let assets: Vec<WrittenAsset> = (0..n)
            .map(|i| written(&format!("d{i}"), &format!("c{i}"), &hash(i)))
            .collect();
        store.put_asset_codes(F, &codes).await.unwrap();
        store.record_written(F, &assets).await.unwrap();
        // Build the filters first, so that a key missing from the index costs a table read
        // only when the table may hold it.
        read_all(&store, n).await;
        let merging = {
            let store = store.clone();
            tokio::spawn(async move { store.merge_recent().await })
        };
        let mut rounds = 0;
        let mut partly_released = false;
        while !merging.is_finished() || rounds == 0 {
            let (codes, hashes) = read_all(&store, n).await;
            assert_eq!((codes.len(), hashes.len()), (n, n), "round {rounds}");
            assert_eq!(hashes[&format!("c{}", n - 1)], ContentHash(hash(n - 1)));
            let frozen = {
                let index = store.recent.index();
                index
                    .frozen
                    .families
                    .get(F)
                    .map_or(0, |runs| runs[0].len() + runs[1].len())
            };
            partly_released |= frozen > 0 && frozen < 2 * n;
            rounds += 1;
            tokio::task::yield_now().await;
        }
        merging.await.unwrap().unwrap();
        assert!(store.recent.is_empty());
        let (codes, hashes) = read_all(&store, n).await;
        assert_eq!((codes.len(), hashes.len()), (n, n));
        assert_eq!(hashes["c3"], ContentHash(hash(3)));
        // Not asserted (it depends on scheduling), shown when the test fails elsewhere.
        eprintln!(
            "{rounds} read rounds during the merge; saw a partly released index: {partly_released}"
        );
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

    /// The merged rows leave the log oldest first, at most [`LOG_DELETE_ROWS`] a transaction;
    /// a process that ended after only some of those transactions leaves newer rows, which
    /// the next open merges again without bringing back an older value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_merged_log_is_emptied_oldest_first_in_bounded_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000_000).await;
        let n = LOG_DELETE_ROWS as usize + 500;
        let batch = |tag: &str| -> Vec<WrittenAsset> {
            (0..n)
                .map(|i| written(&format!("d{i}"), &format!("c{i}"), &format!("{tag}{i}")))
                .collect()
        };
        store.record_written(F, &batch("old")).await.unwrap();
        store.record_written(F, &batch("new")).await.unwrap();
        let rows = store.recent_rows().await;
        assert!(rows > LOG_DELETE_ROWS, "{rows} rows");
        let commits = store.writer.commits().await;
        store.merge_recent().await.unwrap();
        assert_eq!(store.recent_rows().await, 0);
        let runs = n.div_ceil(MERGE_RUN) as u64;
        let deletions = (rows as u64).div_ceil(LOG_DELETE_ROWS as u64);
        assert!(
            store.writer.commits().await - commits >= 1 + runs + deletions,
            "one transaction per run and per {LOG_DELETE_ROWS} rows deleted"
        );
        assert_eq!(
            tables(&store).await.1[&format!("c{}", n - 1)],
            format!("new{}", n - 1)
        );

        // Again, and the process ends after the merge's runs and its first deletion only.
        store.record_written(F, &batch("older")).await.unwrap();
        store.record_written(F, &batch("newest")).await.unwrap();
        let mut tx = store.writer.begin(Durability::Ordered).await.unwrap();
        sqlx::query("UPDATE hashes SET hash = 'newest' || substr(code, 2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "DELETE FROM recent_writes WHERE seq IN \
             (SELECT seq FROM recent_writes ORDER BY seq LIMIT ?1)",
        )
        .bind(LOG_DELETE_ROWS)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(store.recent_rows().await > 0);
        store.close().await;
        drop(store);
        let store = open(&dir, 1_000_000).await;
        assert_eq!(store.recent_rows().await, 0);
        let (_, hashes) = tables(&store).await;
        assert_eq!(hashes.len(), n);
        for i in 0..n {
            assert_eq!(hashes[&format!("c{i}")], format!("newest{i}"));
        }
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

    /// A merge that did not commit leaves its entries frozen; the next freeze sorts the new
    /// entries in among them, the newer value winning for a key in both.
    #[test]
    fn a_second_freeze_sorts_newer_entries_over_the_frozen_ones() {
        let recent = Recent::new(1_000);
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
        let run = recent.frozen_run(F, Kind::Hash, None, 100);
        let got: Vec<(&str, &str, i64)> = run
            .iter()
            .map(|(k, v, at)| (k.as_str(), v.as_str(), *at))
            .collect();
        assert_eq!(
            got,
            [
                ("c1", "old1", 1),
                ("c2", "new2", 2),
                ("c3", "new3", 2),
                ("c6", "new6", 2)
            ]
        );
        // Runs resume after a key, in order.
        let after: Vec<String> = recent
            .frozen_run(F, Kind::Hash, Some("c2"), 2)
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(after, ["c3", "c6"]);
        let (found, missing) = recent.lookup(F, Kind::Hash, &["c1".into(), "c5".into()]);
        assert_eq!(found["c1"], "old1");
        assert_eq!(missing, ["c5"]);
        recent.thaw();
        assert!(recent.is_empty());
    }
}
