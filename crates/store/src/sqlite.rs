//! The SQLite backend: one writer connection (concurrent writes share a `BEGIN IMMEDIATE`
//! transaction and its commit, see [`group`]), a pool of reader connections, WAL journal,
//! `synchronous=FULL` for writes acknowledged outside the process and `NORMAL` for state
//! derived again from the DAM and the PIM (see [`group`], `Durability`). Content hashes and
//! DAM id → code entries are appended to a log, merged into sorted runs and the runs compacted
//! into their tables (see [`recent`]).
//!
//! Times are stored as INTEGER microseconds since the Unix epoch, taken from this process's
//! clock (SQLite serves one process). Batches are passed as one JSON array parameter and
//! expanded with `json_each`, so a call is one statement whatever its size (no parameter
//! limit, no per-row round trips) — except the hottest, the appends to the recent-writes log,
//! which bind multi-row `VALUES` (see [`values_rows`]): there, SQLite's
//! JSON parsing and `json_extract` per column were a fifth of its thread's instructions.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::{AssetChange, ContentHash, Cursor};
use serde_json::json;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use crate::error::{is_transient_sqlx, Backend, StoreError};
use crate::model::*;
use crate::plan::{self, may_replace};
use crate::KeyMap;
use crate::{cursor_from_columns, cursor_to_text, dur_micros, from_micros, now_micros};

mod group;
mod key_filter;
mod links;
mod recent;
mod reconcile;

use group::{Durability, GroupWriter, WriteTx};
use recent::{Appended, Kind, Recent};

const B: Backend = Backend::Sqlite;

/// A list bound as one JSON text parameter (expanded with `json_each`), serialised straight
/// from its items (no `serde_json::Value` built on the way).
fn json_text<T: serde::Serialize + ?Sized>(items: &T) -> String {
    serde_json::to_string(items).expect("lists of strings and numbers serialise")
}

/// The rows of a multi-row `VALUES` list: `rows` times `(…)`, each starting with the same SQL
/// `literals` then `cols` parameters, bound in order, row by row. Used where SQLite would
/// otherwise parse a JSON array and extract each column of each row with `json_extract` — the
/// hot writes of the recent-writes log (see [`recent`]). The parameters are anonymous on
/// purpose: sqlx matches each numbered one (`?NNN`) by asking SQLite for its name, a search of
/// the statement's parameter list, so a statement of n numbered parameters cost O(n²) to bind.
///
/// A value shared by every row (a log kind, a family) is a literal, written once into the
/// statement rather than bound once a row (binding a text copies it: ≈ 3.5 % of the
/// connector's instructions at zero latency went to the log's binds). The literals are part of
/// the statement's text, so a statement is prepared once per set of literals: they are for
/// values from a small fixed set (a log kind, a configured family), never per-call data.
fn values_rows(rows: usize, literals: &[&str], cols: usize) -> String {
    let mut row = String::from("(");
    for l in literals {
        row.push_str(&sql_literal(l));
        row.push_str(", ");
    }
    row.push_str(&vec!["?"; cols].join(", "));
    row.push(')');
    vec![row; rows].join(", ")
}

/// `text` as an SQL string literal (`'…'`, each `'` doubled).
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |cause| StoreError::Database {
        backend: B,
        operation,
        cause,
    }
}

fn corrupt(operation: &'static str, what: &'static str, e: impl ToString) -> StoreError {
    StoreError::Corrupt {
        backend: B,
        operation,
        what,
        message: e.to_string(),
    }
}

/// Where the SQLite database lives.
#[derive(Debug, Clone)]
pub(crate) enum SqliteTarget {
    File(PathBuf),
    Memory,
}

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE families (
    family            TEXT PRIMARY KEY,
    cursor_updated_at TEXT,
    cursor_dam_id     TEXT,
    last_success      INTEGER,
    assets_written    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE hashes (
    family     TEXT NOT NULL,
    code       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (family, code)
) WITHOUT ROWID;
CREATE TABLE asset_codes (
    family TEXT NOT NULL,
    dam_id TEXT NOT NULL,
    code   TEXT NOT NULL,
    PRIMARY KEY (family, dam_id)
) WITHOUT ROWID;
CREATE TABLE seen_events (
    event_id TEXT PRIMARY KEY,
    seen_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX seen_events_seen_at ON seen_events (seen_at);
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    family      TEXT NOT NULL,
    dam_id      TEXT NOT NULL,
    event_id    TEXT,
    source      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    changed_at  INTEGER,
    enqueued_at INTEGER NOT NULL,
    not_before  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    claimed_by  TEXT,
    lease_until INTEGER
);
CREATE UNIQUE INDEX inbox_pending_asset ON inbox (family, dam_id) WHERE lease_until IS NULL;
CREATE INDEX inbox_asset ON inbox (family, dam_id, id);
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    family      TEXT,
    dam_id      TEXT,
    event_id    TEXT,
    source      TEXT,
    payload     TEXT,
    raw_payload BLOB,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    pim_status  INTEGER,
    pim_message TEXT,
    pim_errors  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    enqueued_at INTEGER,
    failed_at   INTEGER NOT NULL
);
CREATE INDEX dead_letters_family ON dead_letters (family, id);
CREATE TABLE outcomes (
    minute    INTEGER NOT NULL,
    family    TEXT NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, family)
) WITHOUT ROWID;
"#,
    ),
    (2, links::MIGRATION),
    (3, reconcile::MIGRATION),
    (4, recent::MIGRATION),
    // Raw dead letters written once per (event id, source): the check is one index lookup.
    (
        5,
        "CREATE INDEX dead_letters_event ON dead_letters (event_id, source) \
         WHERE raw_payload IS NOT NULL;",
    ),
    (6, recent::RUNS_MIGRATION),
];

/// [`drop_older_pending`]'s statement. `CROSS JOIN` makes the written assets the outer loop, each
/// an index search of `inbox_asset` (family, DAM id): with a plain `JOIN`, SQLite's planner
/// scanned every inbox entry of the family and, for each, the whole list — over a second per
/// batch of 100 with 100 000 entries waiting (the queue-ingest benchmark stalled on it).
const DROP_OLDER_PENDING: &str = "DELETE FROM inbox WHERE lease_until IS NULL AND id IN ( \
     SELECT i.id FROM json_each(?2) v CROSS JOIN inbox i \
     ON i.family = ?1 AND i.dam_id = json_extract(v.value, '$[0]') \
     WHERE i.changed_at < json_extract(v.value, '$[1]'))";

/// Drops the pending inbox entries (not leased) of written assets whose change is strictly older
/// than the version written ([`WrittenAsset::version`]), in the caller's transaction. An entry
/// without a time, or of the same time, stays.
async fn drop_older_pending(
    tx: &mut WriteTx,
    family: &str,
    assets: &[WrittenAsset],
    op: &'static str,
) -> Result<(), StoreError> {
    let versions: Vec<(&str, i64)> = assets
        .iter()
        .filter_map(|a| Some((a.dam_id.as_str(), a.version?.timestamp_micros())))
        .collect();
    if versions.is_empty() {
        return Ok(());
    }
    sqlx::query(DROP_OLDER_PENDING)
        .bind(family)
        .bind(json_text(&versions))
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    Ok(())
}

/// The SQL condition a dead letter must meet for a [`DeadLetterFilter`]; parameters ?1..?5.
const DEAD_LETTER_WHERE: &str = "(?1 IS NULL OR family = ?1) \
     AND (?2 IS NULL OR kind = ?2) \
     AND (?3 IS NULL OR instr(lower(message || ' ' || coalesce(pim_message, '') || ' ' || coalesce(pim_errors, '')), lower(?3)) > 0) \
     AND (?4 IS NULL OR id > ?4) \
     AND (?5 IS NULL OR id IN (SELECT value FROM json_each(?5)))";

const DEAD_LETTER_COLUMNS: &str =
    "id, family, dam_id, event_id, source, payload, raw_payload, kind, message, \
     pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at";

pub(crate) struct SqliteStore {
    /// The one writer connection, shared by concurrent writes' commits ([`group`]).
    writer: Arc<GroupWriter>,
    reader: SqlitePool,
    /// The index of recent hash and code writes not yet merged into their tables.
    /// (Shared with a merge running as a task of its own.)
    recent: Arc<Recent>,
    pub(crate) target: SqliteTarget,
    /// The background checkpointer of a file database (see [`Checkpointer`]).
    checkpointer: Option<Checkpointer>,
}

/// The writer's own automatic checkpoint, in pages: a backstop (64 MiB of WAL at SQLite's 4 KiB
/// pages). A passive checkpoint beside a busy writer copies every frame but rarely finds a
/// moment when the WAL can start over, so the WAL grows to this size, then the writer's own
/// checkpoint — with little left to copy — lets it restart.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "16384";

/// How often the background checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed WAL frames back into the database file from a reader connection and a task
/// of its own, beside the writer. SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, on the one writer connection that every state write waits for: measured at 18 %
/// of that connection's time at zero latency. A `PASSIVE` checkpoint never blocks the writer or
/// the readers (it copies what no reader still needs and leaves the rest for the next round),
/// and durability does not depend on it: every commit is already synced in the WAL.
struct Checkpointer {
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(pool: SqlitePool) -> Self {
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    // The writer's own automatic checkpoint still bounds the WAL.
                    tracing::debug!(error = %e, "background WAL checkpoint failed; trying again");
                }
            }
        });
        Self { task }
    }
}

impl Checkpointer {
    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SqliteStore {
    pub(crate) async fn open(
        target: SqliteTarget,
        options: &StoreOptions,
        shown_url: &str,
    ) -> Result<Self, StoreError> {
        let open_err = |message: String, transient: bool| StoreError::Open {
            backend: B,
            url: shown_url.to_owned(),
            message,
            transient,
        };
        let connect_err = |e: sqlx::Error| open_err(e.to_string(), is_transient_sqlx(&e));
        let base = SqliteConnectOptions::new()
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let (writer, reader) = match &target {
            SqliteTarget::Memory => {
                // One connection serves reads and writes: an in-memory database lives and dies
                // with its connection, so it is never closed while the store lives.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(options.connect_timeout.max(Duration::from_secs(30)))
                    .connect_with(base.in_memory(true))
                    .await
                    .map_err(connect_err)?;
                (pool.clone(), pool)
            }
            SqliteTarget::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| {
                        open_err(
                            format!("cannot create directory {}: {e}", parent.display()),
                            false,
                        )
                    })?;
                }
                let file = base
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full);
                // `temp_store` stays the default (files): a statement's or a savepoint's journal
                // is held in memory up to 64 KiB and only a larger one goes to a temporary file.
                // A state write journals a few pages of the log; a merge into a run, which
                // reuses pages a compaction freed, journals thousands (4 KiB each): in memory
                // (`temp_store = memory`) they took the million-asset run's peak RSS over 64 MiB.
                // (With every write a random insert into the keyed tables, its journal was on
                // disk: 12 % of the connector's CPU.)
                // The writer: a larger page cache (8 MiB, default 2 MiB) keeps the B-tree
                // pages of the hash and code tables it keeps updating. Checkpoints are the
                // background checkpointer's (below); the writer's own is only a backstop.
                // Durability is unchanged: each commit still syncs the WAL
                // (`synchronous = FULL`).
                let writer_file = file
                    .clone()
                    .pragma("cache_size", "-8192")
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES);
                // Writes are serialised through one connection, kept open so the WAL stays
                // in place for the readers. Waiting for it is bounded by the acquire timeout.
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(options.connect_timeout.max(Duration::from_secs(30)))
                    .connect_with(writer_file)
                    .await
                    .map_err(connect_err)?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(options.max_connections.max(1))
                    .acquire_timeout(options.connect_timeout)
                    .connect_with(file)
                    .await
                    .map_err(connect_err)?;
                (writer, reader)
            }
        };
        let store = Self {
            // A file database's WAL is checkpointed beside the writer; an in-memory one has none.
            checkpointer: matches!(target, SqliteTarget::File(_))
                .then(|| Checkpointer::start(reader.clone())),
            writer: Arc::new(GroupWriter::new(writer)),
            reader,
            recent: Arc::new(Recent::new(recent::MERGE_AFTER_ROWS, recent::MAX_RUNS)),
            target,
        };
        store.migrate().await?;
        // What a previous process left in the log goes to a run: the index starts empty.
        store.merge_recent_left_over().await?;
        Ok(store)
    }

    pub(crate) async fn close(&self) {
        self.wait_for_merge().await;
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
        self.writer.close().await;
        self.reader.close().await;
        self.writer.pool().close().await;
    }

    /// The caller's part of the writer's next commit (see [`group`]).
    /// Joins the writer's group (see [`group`]) for a write that must survive as `durability`
    /// says: `Synced` for what is acknowledged outside the process, `Ordered` for state derived
    /// again from the DAM and the PIM.
    async fn write_tx(
        &self,
        op: &'static str,
        durability: Durability,
    ) -> Result<WriteTx, StoreError> {
        self.writer.begin(durability).await.map_err(db(op))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        const OP: &str = "migrate";
        let mut tx = self.write_tx(OP, Durability::Synced).await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        let current: i64 =
            sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(db(OP))?;
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > latest {
            return Err(StoreError::SchemaTooNew {
                backend: B,
                found: current,
                supported: latest,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db(OP))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(now_micros())
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
        }
        tx.commit().await.map_err(db(OP))
    }

    // --- cursors -------------------------------------------------------------------------

    pub(crate) async fn cursor(&self, family: &str) -> Result<Option<Cursor>, StoreError> {
        const OP: &str = "read cursor";
        let row =
            sqlx::query("SELECT cursor_updated_at, cursor_dam_id FROM families WHERE family = ?")
                .bind(family)
                .fetch_optional(&self.reader)
                .await
                .map_err(db(OP))?;
        match row {
            None => Ok(None),
            Some(r) => {
                cursor_from_columns(r.get(0), r.get(1)).map_err(|e| corrupt(OP, "cursor", e))
            }
        }
    }

    pub(crate) async fn set_cursor(&self, family: &str, cursor: &Cursor) -> Result<(), StoreError> {
        const OP: &str = "store cursor";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query(
            "INSERT INTO families (family, cursor_updated_at, cursor_dam_id, last_success) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (family) DO UPDATE SET cursor_updated_at = excluded.cursor_updated_at, \
             cursor_dam_id = excluded.cursor_dam_id, last_success = excluded.last_success",
        )
        .bind(family)
        .bind(cursor_to_text(cursor))
        .bind(&cursor.dam_id)
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    // --- content hashes and asset codes --------------------------------------------------

    pub(crate) async fn hashes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<KeyMap<ContentHash>, StoreError> {
        self.read_keyed(Kind::Hash, family, codes, "read content hashes")
            .await
            .map(recent::hash_map)
    }

    pub(crate) async fn put_hashes(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        const OP: &str = "store content hashes";
        if entries.is_empty() {
            return Ok(());
        }
        let batch = Appended::now(Kind::Hash, hash_entries(entries));
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        write_hashes(&mut tx, family, &batch, OP).await?;
        self.commit_appended(tx, family, vec![batch], OP).await
    }

    pub(crate) async fn put_hash_markers(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        const OP: &str = "store hash markers";
        if entries.is_empty() {
            return Ok(());
        }
        let batch = Appended::now(Kind::Hash, hash_entries(entries));
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        recent::append(&mut tx, family, &batch, OP).await?;
        self.commit_appended(tx, family, vec![batch], OP).await
    }

    pub(crate) async fn record_written(
        &self,
        family: &str,
        assets: &[WrittenAsset],
    ) -> Result<(), StoreError> {
        const OP: &str = "record written assets";
        if assets.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let appended = self.append_written(&mut tx, family, assets, OP).await?;
        self.commit_appended(tx, family, appended, OP).await
    }

    /// Appends the hashes of written assets, and their codes unless already recorded (usually
    /// written ahead), to the log: what [`commit_appended`](Self::commit_appended) takes.
    async fn append_written(
        &self,
        tx: &mut WriteTx,
        family: &str,
        assets: &[WrittenAsset],
        op: &'static str,
    ) -> Result<Vec<Appended>, StoreError> {
        let hashes: Vec<(String, ContentHash)> = assets
            .iter()
            .map(|a| (a.code.clone(), a.hash.clone()))
            .collect();
        let hashes = Appended::now(Kind::Hash, hash_entries(&hashes));
        let all: Vec<(String, String)> = assets
            .iter()
            .map(|a| (a.dam_id.clone(), a.code.clone()))
            .collect();
        // The index follows the writer, which this caller holds.
        let known = if self.index_trusted() {
            let ids: Vec<String> = all.iter().map(|a| a.0.clone()).collect();
            self.recent.lookup(family, Kind::Code, &ids).0
        } else {
            KeyMap::default()
        };
        let codes: Vec<(String, String)> = plan::last_per_key(&all)
            .into_iter()
            .filter(|(id, code)| known.get(*id) != Some(*code))
            .map(|(id, code)| (id.to_owned(), code.clone()))
            .collect();
        let codes = Appended::now(Kind::Code, codes);
        write_hashes(tx, family, &hashes, op).await?;
        recent::append(tx, family, &codes, op).await?;
        drop_older_pending(tx, family, assets, op).await?;
        Ok(vec![hashes, codes])
    }

    pub(crate) async fn forget_assets(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<(), StoreError> {
        const OP: &str = "forget assets";
        if assets.is_empty() {
            return Ok(());
        }
        let dam_ids: Vec<&str> = assets.iter().map(|a| a.0.as_str()).collect();
        let codes: Vec<&str> = assets.iter().map(|a| a.1.as_str()).collect();
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        delete_keyed(&mut tx, Kind::Hash, family, &codes, OP).await?;
        delete_keyed(&mut tx, Kind::Code, family, &dam_ids, OP).await?;
        let released = tx.release().await.map_err(db(OP))?;
        self.recent.remove(family, Kind::Hash, &codes);
        self.recent.remove(family, Kind::Code, &dam_ids);
        released.committed().await.map_err(db(OP))?;
        self.merge_if_due().await;
        Ok(())
    }

    pub(crate) async fn remove_hashes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<(), StoreError> {
        self.delete_keys("remove content hashes", Kind::Hash, family, codes)
            .await
    }

    pub(crate) async fn put_asset_codes(
        &self,
        family: &str,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        const OP: &str = "store asset codes";
        if entries.is_empty() {
            return Ok(());
        }
        let batch: Vec<(String, String)> = plan::last_per_key(entries)
            .into_iter()
            .map(|(id, code)| (id.to_owned(), code.clone()))
            .collect();
        let batch = Appended::now(Kind::Code, batch);
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        recent::append(&mut tx, family, &batch, OP).await?;
        self.commit_appended(tx, family, vec![batch], OP).await
    }

    pub(crate) async fn asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<KeyMap<String>, StoreError> {
        self.read_keyed(Kind::Code, family, dam_ids, "read asset codes")
            .await
    }

    pub(crate) async fn remove_asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<(), StoreError> {
        self.delete_keys("remove asset codes", Kind::Code, family, dam_ids)
            .await
    }

    async fn delete_keys(
        &self,
        op: &'static str,
        kind: Kind,
        family: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut tx = self.write_tx(op, Durability::Ordered).await?;
        delete_keyed(&mut tx, kind, family, &keys, op).await?;
        let released = tx.release().await.map_err(db(op))?;
        self.recent.remove(family, kind, &keys);
        released.committed().await.map_err(db(op))?;
        self.merge_if_due().await;
        Ok(())
    }

    // --- inbox ---------------------------------------------------------------------------

    pub(crate) async fn enqueue(
        &self,
        changes: &[AssetChange],
    ) -> Result<EnqueueOutcome, StoreError> {
        const OP: &str = "enqueue";
        let now = now_micros();
        let event_ids = plan::distinct_event_ids(changes);
        let mut tx = self.write_tx(OP, Durability::Synced).await?;
        let mut new_events = HashSet::new();
        if !event_ids.is_empty() {
            let rows = sqlx::query(
                "INSERT INTO seen_events (event_id, seen_at) SELECT value, ?1 FROM json_each(?2) WHERE true \
                 ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            )
            .bind(now)
            .bind(json_text(&event_ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(db(OP))?;
            new_events = rows.into_iter().map(|r| r.get::<String, _>(0)).collect();
        }
        let plan = plan::plan(changes, &new_events, true).map_err(|e| invalid(OP, e))?;
        let (accepted, superseded, stale) = upsert_rows(&mut tx, &plan.rows, now, OP).await?;
        tx.commit().await.map_err(db(OP))?;
        Ok(EnqueueOutcome {
            accepted,
            superseded: superseded + plan.superseded,
            duplicates: plan.duplicates,
            stale: stale + plan.stale,
        })
    }

    pub(crate) async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        const OP: &str = "claim";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_micros();
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let rows = sqlx::query(
            "UPDATE inbox SET claimed_by = ?1, lease_until = ?2, \
                attempts = attempts + (lease_until IS NOT NULL), \
                last_error = CASE WHEN lease_until IS NULL THEN last_error \
                    ELSE 'the lease of worker `' || coalesce(claimed_by, '?') || '` ran out before it finished' END \
             WHERE id IN ( \
                SELECT i.id FROM inbox i \
                WHERE i.not_before <= ?3 AND (i.lease_until IS NULL OR i.lease_until <= ?3) \
                AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.family = i.family AND o.dam_id = i.dam_id AND o.id < i.id) \
                ORDER BY i.id LIMIT ?4) \
             RETURNING id, family, payload, attempts, enqueued_at, last_error",
        )
        .bind(worker)
        .bind(now.saturating_add(dur_micros(lease)))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db(OP))?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut corrupt_ids = Vec::new();
        for r in rows {
            let id: i64 = r.get("id");
            let payload: String = r.get("payload");
            match serde_json::from_str::<AssetChange>(&payload) {
                Ok(change) => claimed.push((
                    r.get::<String, _>("family"),
                    Claimed {
                        id,
                        change,
                        attempts: r.get::<i64, _>("attempts").max(0) as u32,
                        enqueued_at: from_micros(r.get("enqueued_at")),
                        last_error: r.get("last_error"),
                    },
                )),
                Err(e) => corrupt_ids.push((id, e.to_string())),
            }
        }
        for (id, message) in corrupt_ids {
            tracing::warn!(id, %message, "inbox entry does not decode; moved to dead letters");
            let reason = DeadLetterReason::new(
                "unparseable",
                format!("inbox payload does not decode: {message}"),
            );
            move_to_dead_letters(&mut tx, id, &reason, true, OP).await?;
        }
        tx.commit().await.map_err(db(OP))?;
        claimed.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    pub(crate) async fn complete(&self, ids: &[i64]) -> Result<(), StoreError> {
        const OP: &str = "complete inbox entries";
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query("DELETE FROM inbox WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(json_text(&ids))
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn renew_leases(
        &self,
        worker: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        const OP: &str = "renew inbox leases";
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let renewed = sqlx::query(
            "UPDATE inbox SET lease_until = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND claimed_by = ?3 AND lease_until IS NOT NULL",
        )
        .bind(now_micros().saturating_add(dur_micros(lease)))
        .bind(json_text(&ids))
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?
        .rows_affected();
        tx.commit().await.map_err(db(OP))?;
        Ok(renewed)
    }

    pub(crate) async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        const OP: &str = "release inbox entries";
        if ids.is_empty() {
            return Ok(());
        }
        let ids = json_text(&ids);
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query(&format!(
            "DELETE FROM inbox WHERE id IN (SELECT value FROM json_each(?1)) AND lease_until IS NOT NULL AND {NEWER_EXISTS}"
        ))
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        sqlx::query(
            "UPDATE inbox SET lease_until = NULL, claimed_by = NULL \
             WHERE id IN (SELECT value FROM json_each(?1)) AND lease_until IS NOT NULL",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn retry_later(
        &self,
        id: i64,
        error: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        const OP: &str = "schedule retry";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let removed = sqlx::query(&format!(
            "DELETE FROM inbox WHERE id = ?1 AND {NEWER_EXISTS}"
        ))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?
        .rows_affected();
        if removed == 0 {
            sqlx::query(
                "UPDATE inbox SET attempts = attempts + 1, not_before = ?2, last_error = ?3, \
                 lease_until = NULL, claimed_by = NULL WHERE id = ?1",
            )
            .bind(id)
            .bind(now_micros().saturating_add(dur_micros(delay)))
            .bind(error)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        }
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn backlog(&self) -> Result<Backlog, StoreError> {
        const OP: &str = "read backlog";
        let now = now_micros();
        let r = sqlx::query(
            "SELECT count(*), \
             coalesce(sum(CASE WHEN lease_until IS NOT NULL AND lease_until > ?1 THEN 1 ELSE 0 END), 0), \
             coalesce(sum(CASE WHEN (lease_until IS NULL OR lease_until <= ?1) AND not_before > ?1 THEN 1 ELSE 0 END), 0), \
             min(enqueued_at) FROM inbox",
        )
        .bind(now)
        .fetch_one(&self.reader)
        .await
        .map_err(db(OP))?;
        let total: i64 = r.get(0);
        let in_flight: i64 = r.get(1);
        let oldest: Option<i64> = r.get(3);
        Ok(Backlog {
            pending: (total - in_flight).max(0) as u64,
            in_flight: in_flight.max(0) as u64,
            delayed: r.get::<i64, _>(2).max(0) as u64,
            oldest_age: oldest.map(|t| Duration::from_micros((now - t).max(0) as u64)),
        })
    }

    // --- dead letters --------------------------------------------------------------------

    pub(crate) async fn dead_letter(
        &self,
        id: i64,
        reason: &DeadLetterReason,
    ) -> Result<(), StoreError> {
        const OP: &str = "move to dead letters";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        move_to_dead_letters(&mut tx, id, reason, false, OP).await?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn add_dead_letter(
        &self,
        change: &AssetChange,
        reason: &DeadLetterReason,
    ) -> Result<i64, StoreError> {
        const OP: &str = "add dead letter";
        let payload = serde_json::to_string(change).map_err(|e| invalid(OP, e))?;
        // Ordered: a dead letter of a polled asset is found again by the next poll; one of
        // an inbox entry leaves the entry in the inbox if it is lost.
        self.insert_dead_letter(
            OP,
            Durability::Ordered,
            Some(&change.family),
            Some(change.dam_id()),
            change.event_id.as_deref(),
            Some(&change.source),
            Some(&payload),
            None,
            reason,
            false,
        )
        .await
        .map(Option::unwrap_or_default)
    }

    pub(crate) async fn add_raw_dead_letter(
        &self,
        family: Option<&str>,
        source: Option<&str>,
        raw: &[u8],
        reason: &DeadLetterReason,
    ) -> Result<i64, StoreError> {
        // Synced: the caller acknowledges the message once this returns.
        self.insert_dead_letter(
            "add raw dead letter",
            Durability::Synced,
            family,
            None,
            None,
            source,
            None,
            Some(raw),
            reason,
            false,
        )
        .await
        .map(Option::unwrap_or_default)
    }

    pub(crate) async fn add_raw_event_dead_letter(
        &self,
        family: Option<&str>,
        event_id: &str,
        source: &str,
        raw: &[u8],
        reason: &DeadLetterReason,
    ) -> Result<Option<i64>, StoreError> {
        self.insert_dead_letter(
            "add raw dead letter",
            Durability::Synced,
            family,
            None,
            Some(event_id),
            Some(source),
            None,
            Some(raw),
            reason,
            true,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_dead_letter(
        &self,
        op: &'static str,
        durability: Durability,
        family: Option<&str>,
        dam_id: Option<&str>,
        event_id: Option<&str>,
        source: Option<&str>,
        payload: Option<&str>,
        raw: Option<&[u8]>,
        reason: &DeadLetterReason,
        once: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write_tx(op, durability).await?;
        // `once`: not when a raw dead letter of the same event from the same source exists (one
        // writer: the check and the insert cannot interleave with another's).
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO dead_letters (family, dam_id, event_id, source, payload, raw_payload, kind, message, \
             pim_status, pim_message, pim_errors, attempts, failed_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12 \
             WHERE NOT (?13 AND EXISTS (SELECT 1 FROM dead_letters d \
                 WHERE d.event_id = ?3 AND d.source IS ?4 AND d.raw_payload IS NOT NULL)) \
             RETURNING id",
        )
        .bind(family)
        .bind(dam_id)
        .bind(event_id)
        .bind(source)
        .bind(payload)
        .bind(raw)
        .bind(&reason.kind)
        .bind(&reason.message)
        .bind(reason.pim_status.map(i64::from))
        .bind(reason.pim_message.as_deref())
        .bind(reason.pim_errors.as_ref().map(|v| v.to_string()))
        .bind(now_micros())
        .bind(once)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(id)
    }

    pub(crate) async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        const OP: &str = "list dead letters";
        let limit = crate::listing_limit(filter.limit);
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {DEAD_LETTER_WHERE} ORDER BY id LIMIT ?6"
        );
        let rows = bind_filter(sqlx::query(&sql), filter)
            .bind(limit as i64)
            .fetch_all(&self.reader)
            .await
            .map_err(db(OP))?;
        rows.iter().map(|r| dead_letter_from_row(r, OP)).collect()
    }

    pub(crate) async fn recent_dead_letters(
        &self,
        n: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        const OP: &str = "list recent dead letters";
        let sql =
            format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT ?1");
        let rows = sqlx::query(&sql)
            .bind(n as i64)
            .fetch_all(&self.reader)
            .await
            .map_err(db(OP))?;
        rows.iter().map(|r| dead_letter_from_row(r, OP)).collect()
    }

    pub(crate) async fn dead_letter_by_id(
        &self,
        id: i64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        const OP: &str = "read dead letter";
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db(OP))?;
        row.map(|r| dead_letter_from_row(&r, OP)).transpose()
    }

    pub(crate) async fn retry_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<u64, StoreError> {
        const OP: &str = "retry dead letters";
        const CHUNK: usize = 500;
        let mut remaining = filter.limit.unwrap_or(usize::MAX);
        let mut after = filter.after_id;
        let mut moved = 0u64;
        let now = now_micros();
        let sql = format!(
            "SELECT id, payload FROM dead_letters WHERE {DEAD_LETTER_WHERE} AND payload IS NOT NULL \
             ORDER BY id LIMIT ?6"
        );
        let mut tx = self.write_tx(OP, Durability::Synced).await?;
        while remaining > 0 {
            let take = remaining.min(CHUNK);
            let page = DeadLetterFilter {
                after_id: after,
                ..filter.clone()
            };
            let rows = bind_filter(sqlx::query(&sql), &page)
                .bind(take as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(db(OP))?;
            if rows.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut changes = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.get(0);
                let payload: String = r.get(1);
                let mut change: AssetChange = serde_json::from_str(&payload)
                    .map_err(|e| corrupt(OP, "dead letter payload", e))?;
                change.mark_replayed();
                ids.push(id);
                changes.push(change);
            }
            let plan = plan::plan(&changes, &HashSet::new(), false).map_err(|e| invalid(OP, e))?;
            upsert_rows(&mut tx, &plan.rows, now, OP).await?;
            sqlx::query("DELETE FROM dead_letters WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(json_text(&ids))
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
            moved += ids.len() as u64;
            remaining -= ids.len();
            after = ids.last().copied();
            if ids.len() < take {
                break;
            }
        }
        tx.commit().await.map_err(db(OP))?;
        Ok(moved)
    }

    pub(crate) async fn purge_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<u64, StoreError> {
        const OP: &str = "purge dead letters";
        let sql = format!(
            "DELETE FROM dead_letters WHERE id IN \
             (SELECT id FROM dead_letters WHERE {DEAD_LETTER_WHERE} ORDER BY id LIMIT ?6)"
        );
        let mut tx = self.write_tx(OP, Durability::Synced).await?;
        let n = bind_filter(sqlx::query(&sql), filter)
            .bind(filter.limit.map(|l| l as i64).unwrap_or(-1))
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?
            .rows_affected();
        tx.commit().await.map_err(db(OP))?;
        Ok(n)
    }

    pub(crate) async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.reader)
            .await
            .map_err(db("count dead letters"))?;
        Ok(n.max(0) as u64)
    }

    // --- status and housekeeping ---------------------------------------------------------

    pub(crate) async fn family_status(&self) -> Result<Vec<FamilyStatus>, StoreError> {
        const OP: &str = "read family status";
        let rows = sqlx::query(
            "SELECT family, cursor_updated_at, cursor_dam_id, last_success, assets_written \
             FROM families ORDER BY family",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db(OP))?;
        rows.into_iter()
            .map(|r| {
                Ok(FamilyStatus {
                    family: r.get(0),
                    cursor: cursor_from_columns(r.get(1), r.get(2))
                        .map_err(|e| corrupt(OP, "cursor", e))?,
                    last_success: r.get::<Option<i64>, _>(3).map(from_micros),
                    assets_written: r.get::<i64, _>(4).max(0) as u64,
                })
            })
            .collect()
    }

    pub(crate) async fn record_outcomes(
        &self,
        family: &str,
        succeeded: u64,
        failed: u64,
    ) -> Result<(), StoreError> {
        const OP: &str = "record outcomes";
        if succeeded == 0 && failed == 0 {
            return Ok(());
        }
        let minute = now_micros().div_euclid(60_000_000);
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query(
            "INSERT INTO outcomes (minute, family, succeeded, failed) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (minute, family) DO UPDATE SET succeeded = succeeded + excluded.succeeded, \
             failed = failed + excluded.failed",
        )
        .bind(minute)
        .bind(family)
        .bind(succeeded as i64)
        .bind(failed as i64)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn outcomes(
        &self,
        window: Duration,
        family: Option<&str>,
    ) -> Result<OutcomeCounts, StoreError> {
        let since = (now_micros() - dur_micros(window)).div_euclid(60_000_000);
        let r = sqlx::query(
            "SELECT coalesce(sum(succeeded), 0), coalesce(sum(failed), 0) FROM outcomes \
             WHERE minute >= ?1 AND (?2 IS NULL OR family = ?2)",
        )
        .bind(since)
        .bind(family)
        .fetch_one(&self.reader)
        .await
        .map_err(db("read outcomes"))?;
        Ok(OutcomeCounts {
            succeeded: r.get::<i64, _>(0).max(0) as u64,
            failed: r.get::<i64, _>(1).max(0) as u64,
        })
    }

    pub(crate) async fn prune(&self, options: &StoreOptions) -> Result<PruneOutcome, StoreError> {
        const OP: &str = "prune";
        const BATCH: i64 = 10_000;
        let now = now_micros();
        let cutoff = now - dur_micros(options.seen_event_retention);
        let mut out = PruneOutcome::default();
        // Bounded batches so the writer is never held for long.
        for _ in 0..10_000 {
            let mut tx = self.write_tx(OP, Durability::Ordered).await?;
            let n = sqlx::query(
                "DELETE FROM seen_events WHERE event_id IN \
                 (SELECT event_id FROM seen_events WHERE seen_at < ?1 LIMIT ?2)",
            )
            .bind(cutoff)
            .bind(BATCH)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?
            .rows_affected();
            tx.commit().await.map_err(db(OP))?;
            out.seen_events += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        let minute_cutoff = (now - dur_micros(options.outcome_retention)).div_euclid(60_000_000);
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        out.outcome_buckets = sqlx::query("DELETE FROM outcomes WHERE minute < ?1")
            .bind(minute_cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?
            .rows_affected();
        tx.commit().await.map_err(db(OP))?;
        Ok(out)
    }
}

/// The last hash per code of `entries`, as the log's (key, value) pairs.
fn hash_entries(entries: &[(String, ContentHash)]) -> Vec<(String, String)> {
    plan::last_per_key(entries)
        .into_iter()
        .map(|(c, h)| (c.to_owned(), h.0.clone()))
        .collect()
}

/// Appends content hashes to the log (see [`recent`]) and counts them as written.
async fn write_hashes(
    tx: &mut WriteTx,
    family: &str,
    batch: &Appended,
    op: &'static str,
) -> Result<(), StoreError> {
    recent::append(tx, family, batch, op).await?;
    sqlx::query(
        "INSERT INTO families (family, assets_written) VALUES (?1, ?2) \
         ON CONFLICT (family) DO UPDATE SET assets_written = assets_written + excluded.assets_written",
    )
    .bind(family)
    .bind(batch.entries.len() as i64)
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

/// Deletes `keys` of `kind` from their table, from the log of recent writes and from its runs
/// (the caller makes them tombstones in the index once its statements are in:
/// `WriteTx::release`, [`Recent::remove`](recent::Recent::remove)).
/// The log is bounded by the merge threshold, so scanning it is cheap; deletions are rare next
/// to writes.
async fn delete_keyed(
    tx: &mut WriteTx,
    kind: Kind,
    family: &str,
    keys: &[&str],
    op: &'static str,
) -> Result<(), StoreError> {
    let from_table = match kind {
        Kind::Hash => {
            "DELETE FROM hashes WHERE family = ?1 AND code IN (SELECT value FROM json_each(?2))"
        }
        Kind::Code => {
            "DELETE FROM asset_codes WHERE family = ?1 AND dam_id IN (SELECT value FROM json_each(?2))"
        }
    };
    let keys = json_text(&keys);
    sqlx::query(from_table)
        .bind(family)
        .bind(&keys)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    // The log (bounded: scanned), then the runs (one seek per run and key).
    for sql in [
        "DELETE FROM recent_writes WHERE family = ?1 \
         AND key IN (SELECT value FROM json_each(?2)) AND kind = ?3",
        "DELETE FROM recent_runs WHERE run IN (SELECT run FROM recent_run_ids) \
         AND kind = ?3 AND family = ?1 AND key IN (SELECT value FROM json_each(?2))",
    ] {
        sqlx::query(sql)
            .bind(family)
            .bind(&keys)
            .bind(kind.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db(op))?;
    }
    Ok(())
}

/// "A newer inbox entry exists for the same asset" (about the row `inbox`).
const NEWER_EXISTS: &str = "EXISTS (SELECT 1 FROM inbox n WHERE n.family = inbox.family \
     AND n.dam_id = inbox.dam_id AND n.id > inbox.id)";

fn invalid(operation: &'static str, e: impl ToString) -> StoreError {
    StoreError::InvalidInput {
        backend: B,
        operation,
        message: e.to_string(),
    }
}

/// Writes planned rows (one per asset) into the inbox: replaces the asset's pending entry, or
/// adds a new one, unless a pending or in-flight entry is newer by the DAM's time. Returns
/// (accepted, superseded, stale).
async fn upsert_rows(
    tx: &mut WriteTx,
    rows: &[plan::Row<'_>],
    now: i64,
    op: &'static str,
) -> Result<(u64, u64, u64), StoreError> {
    if rows.is_empty() {
        return Ok((0, 0, 0));
    }
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.change.family.as_str(), r.change.dam_id()))
        .collect();
    // What the inbox holds for these assets: the pending entry (at most one) and the newest
    // DAM time among in-flight entries.
    let existing = sqlx::query(
        "SELECT id, family, dam_id, changed_at, lease_until IS NULL FROM inbox \
         WHERE (family, dam_id) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))",
    )
    .bind(json_text(&keys))
    .fetch_all(&mut **tx)
    .await
    .map_err(db(op))?;
    let mut pending: HashMap<(String, String), (i64, Option<i64>)> = HashMap::new();
    let mut in_flight: HashMap<(String, String), i64> = HashMap::new();
    for r in existing {
        let key = (r.get::<String, _>(1), r.get::<String, _>(2));
        let at: Option<i64> = r.get(3);
        if r.get::<bool, _>(4) {
            pending.insert(key, (r.get(0), at));
        } else if let Some(at) = at {
            let e = in_flight.entry(key).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let (mut accepted, mut superseded, mut stale) = (0u64, 0u64, 0u64);
    let mut inserts = Vec::new();
    for row in rows {
        let key = (row.change.family.clone(), row.change.dam_id().to_owned());
        let at = row.changed_at.map(|t| t.timestamp_micros());
        if !may_replace(
            at.map(from_micros),
            in_flight.get(&key).copied().map(from_micros),
        ) {
            stale += 1;
            continue;
        }
        match pending.get(&key) {
            Some(&(id, old_at)) => {
                if !may_replace(at.map(from_micros), old_at.map(from_micros)) {
                    stale += 1;
                    continue;
                }
                // The newer change takes the pending entry's place under a new id (keeping when
                // the first of them entered the inbox): a worker whose lease on the old id
                // expired cannot complete, retry or dead-letter the newer change by that id.
                let enqueued_at: i64 =
                    sqlx::query_scalar("DELETE FROM inbox WHERE id = ?1 RETURNING enqueued_at")
                        .bind(id)
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(db(op))?;
                sqlx::query(
                    "INSERT INTO inbox (family, dam_id, event_id, source, payload, changed_at, \
                     enqueued_at, not_before, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
                )
                .bind(&row.change.family)
                .bind(row.change.dam_id())
                .bind(row.change.event_id.as_deref())
                .bind(&row.change.source)
                .bind(&row.payload)
                .bind(at)
                .bind(enqueued_at)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(db(op))?;
                accepted += 1;
                superseded += 1;
            }
            None => {
                inserts.push(json!([
                    row.change.family,
                    row.change.dam_id(),
                    row.change.event_id,
                    row.change.source,
                    row.payload,
                    at
                ]));
                accepted += 1;
            }
        }
    }
    if !inserts.is_empty() {
        sqlx::query(
            "INSERT INTO inbox (family, dam_id, event_id, source, payload, changed_at, enqueued_at, not_before, attempts) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
             json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), ?1, ?1, 0 \
             FROM json_each(?2) ORDER BY key",
        )
        .bind(now)
        .bind(serde_json::Value::Array(inserts).to_string())
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    }
    Ok((accepted, superseded, stale))
}

/// Moves one inbox entry to the dead letters (inside the caller's transaction). `raw`: keep
/// the payload as raw bytes (it does not decode). A missing entry is not an error: it was
/// completed or dead-lettered by whoever held it after a lease expiry.
async fn move_to_dead_letters(
    tx: &mut WriteTx,
    id: i64,
    reason: &DeadLetterReason,
    raw: bool,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dead_letters (family, dam_id, event_id, source, payload, raw_payload, kind, message, \
         pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at) \
         SELECT family, dam_id, event_id, source, CASE WHEN ?2 THEN NULL ELSE payload END, \
         CASE WHEN ?2 THEN CAST(payload AS BLOB) ELSE NULL END, ?3, ?4, ?5, ?6, ?7, attempts, last_error, \
         enqueued_at, ?8 FROM inbox WHERE id = ?1",
    )
    .bind(id)
    .bind(raw)
    .bind(&reason.kind)
    .bind(&reason.message)
    .bind(reason.pim_status.map(i64::from))
    .bind(reason.pim_message.as_deref())
    .bind(reason.pim_errors.as_ref().map(|v| v.to_string()))
    .bind(now_micros())
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    sqlx::query("DELETE FROM inbox WHERE id = ?1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    Ok(())
}

fn bind_filter<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    f: &'q DeadLetterFilter,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(f.family.as_deref())
        .bind(f.kind.as_deref())
        .bind(f.error_contains.as_deref())
        .bind(f.after_id)
        .bind(f.ids.as_ref().map(json_text))
}

fn dead_letter_from_row(r: &SqliteRow, op: &'static str) -> Result<DeadLetter, StoreError> {
    let payload: Option<String> = r.get("payload");
    let raw: Option<Vec<u8>> = r.get("raw_payload");
    let payload = match (payload, raw) {
        (Some(p), _) => DeadLetterPayload::Change(
            serde_json::from_str(&p).map_err(|e| corrupt(op, "dead letter payload", e))?,
        ),
        (None, Some(raw)) => DeadLetterPayload::Raw(raw),
        (None, None) => DeadLetterPayload::Raw(Vec::new()),
    };
    let pim_errors: Option<String> = r.get("pim_errors");
    Ok(DeadLetter {
        id: r.get("id"),
        family: r.get("family"),
        dam_id: r.get("dam_id"),
        event_id: r.get("event_id"),
        source: r.get("source"),
        payload,
        reason: DeadLetterReason {
            kind: r.get("kind"),
            message: r.get("message"),
            pim_status: r
                .get::<Option<i64>, _>("pim_status")
                .and_then(|s| u16::try_from(s).ok()),
            pim_message: r.get("pim_message"),
            pim_errors: pim_errors
                .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(op, "PIM errors", e)))
                .transpose()?,
        },
        attempts: r.get::<i64, _>("attempts").max(0) as u32,
        last_error: r.get("last_error"),
        enqueued_at: r.get::<Option<i64>, _>("enqueued_at").map(from_micros),
        failed_at: from_micros(r.get("failed_at")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written assets are the outer loop of the deletion of older pending entries, each an
    /// index search of the inbox (not a scan of the family's entries per asset).
    #[tokio::test]
    async fn older_pending_entries_are_found_by_an_index_search_per_asset() {
        let dir = tempfile::tempdir().unwrap();
        let target = SqliteTarget::File(dir.path().join("s.db"));
        let store = SqliteStore::open(target, &StoreOptions::default(), "test")
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {DROP_OLDER_PENDING}"))
            .bind("packshots")
            .bind(r#"[["d1",1]]"#)
            .fetch_all(&store.reader)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        let at = |needle: &str| plan.iter().position(|d| d.contains(needle));
        let (Some(list), Some(search)) = (
            at("SCAN v VIRTUAL TABLE"),
            at("SEARCH i USING INDEX inbox_asset (family=? AND dam_id=?)"),
        ) else {
            panic!("unexpected plan: {plan:?}");
        };
        assert!(list < search, "the list is the outer loop: {plan:?}");
    }

    #[test]
    fn values_rows_are_anonymous_parameters_row_by_row() {
        assert_eq!(values_rows(1, &[], 1), "(?)");
        assert_eq!(values_rows(3, &[], 2), "(?, ?), (?, ?), (?, ?)");
        assert_eq!(
            values_rows(2, &["hash", "it's"], 1),
            "('hash', 'it''s', ?), ('hash', 'it''s', ?)"
        );
    }

    #[tokio::test]
    async fn connections_are_durable_wal_with_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let target = SqliteTarget::File(dir.path().join("s.db"));
        let store = SqliteStore::open(target, &StoreOptions::default(), "test")
            .await
            .unwrap();
        for pool in [store.writer.pool(), &store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(sync, 2, "synchronous=FULL");
            let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(busy, 5000);
        }
    }

    /// What is acknowledged outside the process commits synced (`synchronous = FULL`); state
    /// derived again from the DAM and the PIM commits ordered (`NORMAL`): see `group`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_writes_commit_synced_and_derived_state_ordered() {
        use assetbridge_core::{ChangeKind, DamAsset};
        use chrono::{TimeZone, Utc};
        let dir = tempfile::tempdir().unwrap();
        let target = SqliteTarget::File(dir.path().join("s.db"));
        let store = SqliteStore::open(target, &StoreOptions::default(), "test")
            .await
            .unwrap();
        let w = store.writer.clone();
        let change = AssetChange {
            family: "f".into(),
            event_id: Some("e1".into()),
            source: "webhook".into(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: "a1".into(),
                    updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                    record: json!({}),
                },
            },
        };
        // (commits, synced commits) each write adds.
        async fn delta(
            w: &GroupWriter,
            write: impl std::future::Future<Output = ()>,
        ) -> (u64, u64) {
            let (c, s) = (w.commits().await, w.synced_commits().await);
            write.await;
            (w.commits().await - c, w.synced_commits().await - s)
        }
        let synced = (1, 1);
        let ordered = (1, 0);
        assert_eq!(
            delta(&w, async {
                store
                    .enqueue(std::slice::from_ref(&change))
                    .await
                    .map(drop)
                    .unwrap()
            })
            .await,
            synced,
            "enqueue: a webhook's 2xx or a broker's ack follows it"
        );
        let reason = DeadLetterReason {
            kind: "parse".into(),
            message: "not JSON".into(),
            pim_status: None,
            pim_message: None,
            pim_errors: None,
        };
        assert_eq!(
            delta(&w, async {
                store
                    .add_raw_dead_letter(None, Some("queue"), b"{", &reason)
                    .await
                    .map(drop)
                    .unwrap()
            })
            .await,
            synced,
            "a raw dead letter: the message is acknowledged after it"
        );
        let letter = store.add_dead_letter(&change, &reason).await.unwrap();
        assert_eq!(
            delta(&w, async {
                store
                    .retry_dead_letters(&DeadLetterFilter {
                        ids: Some(vec![letter]),
                        ..DeadLetterFilter::default()
                    })
                    .await
                    .map(drop)
                    .unwrap()
            })
            .await,
            synced,
            "a user's retry"
        );
        let hashes = vec![("c1".to_owned(), ContentHash("h1".into()))];
        assert_eq!(
            delta(&w, async { store.put_hashes("f", &hashes).await.unwrap() }).await,
            ordered,
            "content hashes"
        );
        let cursor = Cursor {
            updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            dam_id: "a1".into(),
        };
        assert_eq!(
            delta(&w, async { store.set_cursor("f", &cursor).await.unwrap() }).await,
            ordered,
            "a cursor"
        );
        assert_eq!(
            delta(&w, async {
                store
                    .add_dead_letter(&change, &reason)
                    .await
                    .map(drop)
                    .unwrap()
            })
            .await,
            ordered,
            "a dead letter of a change the store or the DAM still holds"
        );
        // The writer's connection follows its last group.
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.writer.pool())
            .await
            .unwrap();
        assert_eq!(level, 1, "NORMAL after an ordered group");
    }

    /// Committed pages reach the database file without the writer's own checkpoint (whose
    /// threshold these writes stay far below): the background checkpointer copies them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_background_checkpointer_copies_the_wal_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(
            SqliteTarget::File(path.clone()),
            &StoreOptions::default(),
            "test",
        )
        .await
        .unwrap();
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(store.writer.pool())
            .await
            .unwrap();
        assert_eq!(autocheckpoint.to_string(), WRITER_AUTOCHECKPOINT_PAGES);
        // Let a round copy what the migrations wrote, then measure from there.
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&path).unwrap().len();
        let hashes: Vec<(String, ContentHash)> = (0..5_000)
            .map(|i| (format!("asset-{i:05}"), ContentHash(format!("{i:064}"))))
            .collect();
        for chunk in hashes.chunks(500) {
            store.put_hashes("f", chunk).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("s.db-wal"))
            .unwrap()
            .len();
        assert!(wal > 100_000, "the writes went to the WAL ({wal} bytes)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now > before + 100_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {now} bytes (was {before}): no checkpoint ran"
            );
            tokio::time::sleep(CHECKPOINT_EVERY).await;
        }
        store.close().await;
    }
}
