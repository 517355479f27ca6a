//! The PostgreSQL backend: one pool, committed transactions, the database's own clock
//! (`now()`) for leases and retry times so several processes agree on them.
//!
//! Batches are passed as arrays and expanded with `unnest`, so a call is one statement
//! whatever its size. Rows are written in key order so that concurrent writers of overlapping
//! batches lock them in the same order and cannot deadlock.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::{AssetChange, ContentHash, Cursor};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use tokio::sync::Notify;

use crate::error::{is_transient_sqlx, is_unique_violation, scrub, Backend, StoreError};
use crate::model::*;
use crate::plan;
use crate::KeyMap;
use crate::{cursor_from_columns, cursor_to_text, dur_micros};

pub(crate) mod links;
mod reconcile;

const B: Backend = Backend::Postgres;

/// The NOTIFY channel that wakes idle workers when the inbox gains work.
pub(crate) const CHANNEL: &str = "assetbridge_inbox";

/// First key of every advisory lock this crate takes (ASCII "ABLK").
const LOCK_CLASS: i32 = 0x4142_4C4B;

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

fn invalid(operation: &'static str, e: impl ToString) -> StoreError {
    StoreError::InvalidInput {
        backend: B,
        operation,
        message: e.to_string(),
    }
}

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE families (
    family            TEXT PRIMARY KEY,
    cursor_updated_at TEXT,
    cursor_dam_id     TEXT,
    last_success      TIMESTAMPTZ,
    assets_written    BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE hashes (
    family     TEXT NOT NULL,
    code       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (family, code)
);
CREATE TABLE asset_codes (
    family TEXT NOT NULL,
    dam_id TEXT NOT NULL,
    code   TEXT NOT NULL,
    PRIMARY KEY (family, dam_id)
);
CREATE TABLE seen_events (
    event_id TEXT PRIMARY KEY,
    seen_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX seen_events_seen_at ON seen_events (seen_at);
CREATE TABLE inbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family      TEXT NOT NULL,
    dam_id      TEXT NOT NULL,
    event_id    TEXT,
    source      TEXT NOT NULL,
    payload     TEXT NOT NULL,
    changed_at  TIMESTAMPTZ,
    enqueued_at TIMESTAMPTZ NOT NULL,
    not_before  TIMESTAMPTZ NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    claimed_by  TEXT,
    lease_until TIMESTAMPTZ
);
CREATE UNIQUE INDEX inbox_pending_asset ON inbox (family, dam_id) WHERE lease_until IS NULL;
CREATE INDEX inbox_asset ON inbox (family, dam_id, id);
CREATE TABLE dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family      TEXT,
    dam_id      TEXT,
    event_id    TEXT,
    source      TEXT,
    payload     TEXT,
    raw_payload BYTEA,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    pim_status  INTEGER,
    pim_message TEXT,
    pim_errors  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    enqueued_at TIMESTAMPTZ,
    failed_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX dead_letters_family ON dead_letters (family, id);
CREATE TABLE outcomes (
    minute    BIGINT NOT NULL,
    family    TEXT NOT NULL,
    succeeded BIGINT NOT NULL DEFAULT 0,
    failed    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, family)
);
"#,
    ),
    (2, links::MIGRATION),
    (3, reconcile::MIGRATION),
    // Raw dead letters written once per (event id, source): the check is one index lookup.
    (
        4,
        "CREATE INDEX dead_letters_event ON dead_letters (event_id, source) \
         WHERE raw_payload IS NOT NULL;",
    ),
];

const DEAD_LETTER_WHERE: &str = "($1::text IS NULL OR family = $1) \
     AND ($2::text IS NULL OR kind = $2) \
     AND ($3::text IS NULL OR strpos(lower(message || ' ' || coalesce(pim_message, '') || ' ' || coalesce(pim_errors, '')), lower($3)) > 0) \
     AND ($4::bigint IS NULL OR id > $4) \
     AND ($5::bigint[] IS NULL OR id = ANY($5))";

const DEAD_LETTER_COLUMNS: &str =
    "id, family, dam_id, event_id, source, payload, raw_payload, kind, message, \
     pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at";

const NEWER_EXISTS: &str = "EXISTS (SELECT 1 FROM inbox n WHERE n.family = inbox.family \
     AND n.dam_id = inbox.dam_id AND n.id > inbox.id)";

/// How often a write that lost a race on the pending-entry index is retried.
const RACE_RETRIES: usize = 5;

pub(crate) struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
    connect_timeout: Duration,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            task.abort();
        }
    }
}

impl PgStore {
    pub(crate) async fn open(
        url: &str,
        options: &StoreOptions,
        shown_url: &str,
    ) -> Result<Self, StoreError> {
        let password = url::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(|p| p.to_owned()));
        let open_err = |e: sqlx::Error| StoreError::Open {
            backend: B,
            url: shown_url.to_owned(),
            message: scrub(e.to_string(), password.as_deref()),
            transient: is_transient_sqlx(&e),
        };
        let connect = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name("assetbridge")
            .options([(
                "statement_timeout",
                options.statement_timeout.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(open_err)?;
        let store = Self {
            pool,
            connect,
            connect_timeout: options.connect_timeout,
            listener: std::sync::Mutex::new(None),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) async fn close(&self) {
        if let Some(task) = self.listener.lock().ok().and_then(|mut l| l.take()) {
            task.abort();
        }
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        const OP: &str = "migrate";
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        // Serialise concurrent opens of a fresh database.
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(LOCK_CLASS)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        let current: i64 =
            sqlx::query_scalar("SELECT coalesce(max(version), 0)::bigint FROM schema_migrations")
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
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())")
                .bind(version)
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
            sqlx::query("SELECT cursor_updated_at, cursor_dam_id FROM families WHERE family = $1")
                .bind(family)
                .fetch_optional(&self.pool)
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
        sqlx::query(
            "INSERT INTO families (family, cursor_updated_at, cursor_dam_id, last_success) \
             VALUES ($1, $2, $3, now()) \
             ON CONFLICT (family) DO UPDATE SET cursor_updated_at = EXCLUDED.cursor_updated_at, \
             cursor_dam_id = EXCLUDED.cursor_dam_id, last_success = EXCLUDED.last_success",
        )
        .bind(family)
        .bind(cursor_to_text(cursor))
        .bind(&cursor.dam_id)
        .execute(&self.pool)
        .await
        .map_err(db("store cursor"))?;
        Ok(())
    }

    // --- content hashes and asset codes --------------------------------------------------

    pub(crate) async fn hashes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<KeyMap<ContentHash>, StoreError> {
        if codes.is_empty() {
            return Ok(KeyMap::default());
        }
        let rows =
            sqlx::query("SELECT code, hash FROM hashes WHERE family = $1 AND code = ANY($2)")
                .bind(family)
                .bind(codes)
                .fetch_all(&self.pool)
                .await
                .map_err(db("read content hashes"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), ContentHash(r.get::<String, _>(1))))
            .collect())
    }

    pub(crate) async fn put_hash_markers(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut unique = plan::last_per_key(entries);
        unique.sort_by(|a, b| a.0.cmp(b.0));
        let codes: Vec<&str> = unique.iter().map(|e| e.0).collect();
        let hashes: Vec<&str> = unique.iter().map(|e| e.1.as_str()).collect();
        sqlx::query(
            "INSERT INTO hashes (family, code, hash, written_at) \
             SELECT $1, c, h, now() FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(c, h, o) ORDER BY o \
             ON CONFLICT (family, code) DO UPDATE SET hash = EXCLUDED.hash, written_at = EXCLUDED.written_at",
        )
        .bind(family)
        .bind(&codes)
        .bind(&hashes)
        .execute(&self.pool)
        .await
        .map_err(db("store hash markers"))?;
        Ok(())
    }

    pub(crate) async fn put_hashes(
        &self,
        family: &str,
        entries: &[(String, ContentHash)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut unique = plan::last_per_key(entries);
        unique.sort_by(|a, b| a.0.cmp(b.0));
        let codes: Vec<&str> = unique.iter().map(|e| e.0).collect();
        let hashes: Vec<&str> = unique.iter().map(|e| e.1.as_str()).collect();
        sqlx::query(
            "WITH up AS ( \
                INSERT INTO hashes (family, code, hash, written_at) \
                SELECT $1, c, h, now() FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(c, h, o) ORDER BY o \
                ON CONFLICT (family, code) DO UPDATE SET hash = EXCLUDED.hash, written_at = EXCLUDED.written_at \
                RETURNING 1) \
             INSERT INTO families (family, assets_written) SELECT $1, count(*) FROM up \
             ON CONFLICT (family) DO UPDATE SET assets_written = families.assets_written + EXCLUDED.assets_written",
        )
        .bind(family)
        .bind(&codes)
        .bind(&hashes)
        .execute(&self.pool)
        .await
        .map_err(db("store content hashes"))?;
        Ok(())
    }

    pub(crate) async fn remove_hashes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<(), StoreError> {
        if codes.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM hashes WHERE family = $1 AND code = ANY($2)")
            .bind(family)
            .bind(codes)
            .execute(&self.pool)
            .await
            .map_err(db("remove content hashes"))?;
        Ok(())
    }

    pub(crate) async fn put_asset_codes(
        &self,
        family: &str,
        entries: &[(String, String)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut unique = plan::last_per_key(entries);
        unique.sort_by(|a, b| a.0.cmp(b.0));
        let dam_ids: Vec<&str> = unique.iter().map(|e| e.0).collect();
        let codes: Vec<&str> = unique.iter().map(|e| e.1.as_str()).collect();
        sqlx::query(
            "INSERT INTO asset_codes (family, dam_id, code) \
             SELECT $1, d, c FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(d, c, o) ORDER BY o \
             ON CONFLICT (family, dam_id) DO UPDATE SET code = EXCLUDED.code",
        )
        .bind(family)
        .bind(&dam_ids)
        .bind(&codes)
        .execute(&self.pool)
        .await
        .map_err(db("store asset codes"))?;
        Ok(())
    }

    pub(crate) async fn asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<KeyMap<String>, StoreError> {
        if dam_ids.is_empty() {
            return Ok(KeyMap::default());
        }
        let rows = sqlx::query(
            "SELECT dam_id, code FROM asset_codes WHERE family = $1 AND dam_id = ANY($2)",
        )
        .bind(family)
        .bind(dam_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read asset codes"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
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
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        links::write_hashes_and_codes(&mut tx, family, assets, OP).await?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn forget_assets(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<(), StoreError> {
        if assets.is_empty() {
            return Ok(());
        }
        let mut dam_ids: Vec<&str> = assets.iter().map(|a| a.0.as_str()).collect();
        let mut codes: Vec<&str> = assets.iter().map(|a| a.1.as_str()).collect();
        dam_ids.sort_unstable();
        codes.sort_unstable();
        sqlx::query(
            "WITH h AS (DELETE FROM hashes WHERE family = $1 AND code = ANY($2)) \
             DELETE FROM asset_codes WHERE family = $1 AND dam_id = ANY($3)",
        )
        .bind(family)
        .bind(&codes)
        .bind(&dam_ids)
        .execute(&self.pool)
        .await
        .map_err(db("forget assets"))?;
        Ok(())
    }

    pub(crate) async fn remove_asset_codes(
        &self,
        family: &str,
        dam_ids: &[String],
    ) -> Result<(), StoreError> {
        if dam_ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM asset_codes WHERE family = $1 AND dam_id = ANY($2)")
            .bind(family)
            .bind(dam_ids)
            .execute(&self.pool)
            .await
            .map_err(db("remove asset codes"))?;
        Ok(())
    }

    // --- inbox ---------------------------------------------------------------------------

    pub(crate) async fn enqueue(
        &self,
        changes: &[AssetChange],
    ) -> Result<EnqueueOutcome, StoreError> {
        const OP: &str = "enqueue";
        let mut event_ids = plan::distinct_event_ids(changes);
        event_ids.sort();
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        let mut new_events = HashSet::new();
        if !event_ids.is_empty() {
            let rows = sqlx::query(
                "INSERT INTO seen_events (event_id, seen_at) \
                 SELECT e, now() FROM unnest($1::text[]) WITH ORDINALITY AS t(e, o) ORDER BY o \
                 ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            )
            .bind(&event_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(OP))?;
            new_events = rows.into_iter().map(|r| r.get::<String, _>(0)).collect();
        }
        let plan = plan::plan(changes, &new_events, true).map_err(|e| invalid(OP, e))?;
        let (accepted, superseded, stale) = upsert_rows(&mut tx, &plan.rows, OP).await?;
        if accepted > 0 {
            notify(&mut tx, OP).await?;
        }
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
        let rows = sqlx::query(
            "WITH picked AS ( \
                SELECT i.id FROM inbox i \
                WHERE i.not_before <= now() AND (i.lease_until IS NULL OR i.lease_until <= now()) \
                AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.family = i.family AND o.dam_id = i.dam_id AND o.id < i.id) \
                ORDER BY i.id LIMIT $3 \
                FOR UPDATE SKIP LOCKED) \
             UPDATE inbox SET claimed_by = $1, lease_until = now() + $2 * interval '1 microsecond', \
                attempts = inbox.attempts + CASE WHEN inbox.lease_until IS NULL THEN 0 ELSE 1 END, \
                last_error = CASE WHEN inbox.lease_until IS NULL THEN inbox.last_error \
                    ELSE 'the lease of worker `' || coalesce(inbox.claimed_by, '?') || '` ran out before it finished' END \
             FROM picked WHERE inbox.id = picked.id \
             RETURNING inbox.id, inbox.family, inbox.payload, inbox.attempts, inbox.enqueued_at, inbox.last_error",
        )
        .bind(worker)
        .bind(dur_micros(lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get("id");
            let payload: String = r.get("payload");
            match serde_json::from_str::<AssetChange>(&payload) {
                Ok(change) => claimed.push((
                    r.get::<String, _>("family"),
                    Claimed {
                        id,
                        change,
                        attempts: r.get::<i32, _>("attempts").max(0) as u32,
                        enqueued_at: r.get("enqueued_at"),
                        last_error: r.get("last_error"),
                    },
                )),
                Err(e) => {
                    tracing::warn!(id, error = %e, "inbox entry does not decode; moved to dead letters");
                    let reason = DeadLetterReason::new(
                        "unparseable",
                        format!("inbox payload does not decode: {e}"),
                    );
                    self.move_to_dead_letters(id, &reason, true, OP).await?;
                }
            }
        }
        claimed.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id)));
        Ok(claimed.into_iter().map(|(_, c)| c).collect())
    }

    pub(crate) async fn complete(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM inbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(db("complete inbox entries"))?;
        Ok(())
    }

    pub(crate) async fn renew_leases(
        &self,
        worker: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let renewed = sqlx::query(
            "UPDATE inbox SET lease_until = now() + $3 * interval '1 microsecond' \
             WHERE id = ANY($1) AND claimed_by = $2 AND lease_until IS NOT NULL",
        )
        .bind(ids)
        .bind(worker)
        .bind(dur_micros(lease))
        .execute(&self.pool)
        .await
        .map_err(db("renew inbox leases"))?
        .rows_affected();
        Ok(renewed)
    }

    pub(crate) async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        const OP: &str = "release inbox entries";
        if ids.is_empty() {
            return Ok(());
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        let delete = format!(
            "DELETE FROM inbox WHERE id = ANY($1) AND lease_until IS NOT NULL AND {NEWER_EXISTS}"
        );
        self.retry_race(OP, |mut tx| {
            let ids = &ids;
            let delete = &delete;
            async move {
                sqlx::query(delete).bind(ids).execute(&mut *tx).await?;
                sqlx::query(
                    "UPDATE inbox SET lease_until = NULL, claimed_by = NULL \
                     WHERE id = ANY($1) AND lease_until IS NOT NULL",
                )
                .bind(ids)
                .execute(&mut *tx)
                .await?;
                notify_raw(&mut tx).await?;
                tx.commit().await
            }
        })
        .await
    }

    pub(crate) async fn retry_later(
        &self,
        id: i64,
        error: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        const OP: &str = "schedule retry";
        let delete = format!("DELETE FROM inbox WHERE id = $1 AND {NEWER_EXISTS}");
        let delay = dur_micros(delay);
        self.retry_race(OP, |mut tx| {
            let delete = &delete;
            async move {
                let removed = sqlx::query(delete)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    sqlx::query(
                        "UPDATE inbox SET attempts = attempts + 1, \
                         not_before = now() + $2 * interval '1 microsecond', last_error = $3, \
                         lease_until = NULL, claimed_by = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(delay)
                    .bind(pg_text(error))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
        })
        .await
    }

    /// Runs `f` in a fresh transaction, again when it lost a race with a concurrent enqueue on
    /// the pending-entry index (the next attempt sees the new entry and takes the other path).
    async fn retry_race<F, Fut>(&self, op: &'static str, f: F) -> Result<(), StoreError>
    where
        F: Fn(Transaction<'static, Postgres>) -> Fut,
        Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
    {
        let mut attempt = 0;
        loop {
            let tx = self.pool.begin().await.map_err(db(op))?;
            match f(tx).await {
                Ok(()) => return Ok(()),
                Err(e) if is_unique_violation(&e) && attempt + 1 < RACE_RETRIES => attempt += 1,
                Err(e) => return Err(db(op)(e)),
            }
        }
    }

    pub(crate) async fn backlog(&self) -> Result<Backlog, StoreError> {
        let r = sqlx::query(
            "SELECT count(*), count(*) FILTER (WHERE lease_until > now()), \
             count(*) FILTER (WHERE (lease_until IS NULL OR lease_until <= now()) AND not_before > now()), \
             (EXTRACT(EPOCH FROM (now() - min(enqueued_at))) * 1000000)::bigint FROM inbox",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("read backlog"))?;
        let total: i64 = r.get(0);
        let in_flight: i64 = r.get(1);
        let oldest: Option<i64> = r.get(3);
        Ok(Backlog {
            pending: (total - in_flight).max(0) as u64,
            in_flight: in_flight.max(0) as u64,
            delayed: r.get::<i64, _>(2).max(0) as u64,
            oldest_age: oldest.map(|t| Duration::from_micros(t.max(0) as u64)),
        })
    }

    // --- dead letters --------------------------------------------------------------------

    pub(crate) async fn dead_letter(
        &self,
        id: i64,
        reason: &DeadLetterReason,
    ) -> Result<(), StoreError> {
        self.move_to_dead_letters(id, reason, false, "move to dead letters")
            .await
    }

    /// Moves one inbox entry to the dead letters in one statement. A missing entry is not an
    /// error (completed or dead-lettered by whoever held it after a lease expiry).
    async fn move_to_dead_letters(
        &self,
        id: i64,
        reason: &DeadLetterReason,
        raw: bool,
        op: &'static str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH moved AS (DELETE FROM inbox WHERE id = $1 RETURNING *) \
             INSERT INTO dead_letters (family, dam_id, event_id, source, payload, raw_payload, kind, message, \
             pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at) \
             SELECT family, dam_id, event_id, source, CASE WHEN $2 THEN NULL ELSE payload END, \
             CASE WHEN $2 THEN convert_to(payload, 'UTF8') ELSE NULL END, $3, $4, $5, $6, $7, \
             attempts, last_error, enqueued_at, now() FROM moved",
        )
        .bind(id)
        .bind(raw)
        .bind(pg_text(&reason.kind))
        .bind(pg_text(&reason.message))
        .bind(reason.pim_status.map(i32::from))
        .bind(reason.pim_message.as_deref().map(pg_text))
        .bind(reason.pim_errors.as_ref().map(|v| v.to_string()))
        .execute(&self.pool)
        .await
        .map_err(db(op))?;
        Ok(())
    }

    pub(crate) async fn add_dead_letter(
        &self,
        change: &AssetChange,
        reason: &DeadLetterReason,
    ) -> Result<i64, StoreError> {
        const OP: &str = "add dead letter";
        let payload = serde_json::to_string(change).map_err(|e| invalid(OP, e))?;
        self.insert_dead_letter(
            OP,
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
        self.insert_dead_letter(
            "add raw dead letter",
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
        family: Option<&str>,
        dam_id: Option<&str>,
        event_id: Option<&str>,
        source: Option<&str>,
        payload: Option<&str>,
        raw: Option<&[u8]>,
        reason: &DeadLetterReason,
        once: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        if once {
            // `once`: one check-and-insert per event id at a time, across instances.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dead letter ' || $1))")
                .bind(event_id.map(pg_text))
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO dead_letters (family, dam_id, event_id, source, payload, raw_payload, kind, message, \
             pim_status, pim_message, pim_errors, attempts, failed_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, now() \
             WHERE NOT ($12 AND EXISTS (SELECT 1 FROM dead_letters d \
                 WHERE d.event_id = $3 AND d.source IS NOT DISTINCT FROM $4 AND d.raw_payload IS NOT NULL)) \
             RETURNING id",
        )
        .bind(family.map(pg_text))
        .bind(dam_id.map(pg_text))
        .bind(event_id.map(pg_text))
        .bind(source.map(pg_text))
        .bind(payload)
        .bind(raw)
        .bind(pg_text(&reason.kind))
        .bind(pg_text(&reason.message))
        .bind(reason.pim_status.map(i32::from))
        .bind(reason.pim_message.as_deref().map(pg_text))
        .bind(reason.pim_errors.as_ref().map(|v| v.to_string()))
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
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {DEAD_LETTER_WHERE} ORDER BY id LIMIT $6");
        let rows = bind_filter(sqlx::query(&sql), filter)
            .bind(crate::listing_limit(filter.limit) as i64)
            .fetch_all(&self.pool)
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
            format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db(OP))?;
        rows.iter().map(|r| dead_letter_from_row(r, OP)).collect()
    }

    pub(crate) async fn dead_letter_by_id(
        &self,
        id: i64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        const OP: &str = "read dead letter";
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
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
        let sql = format!(
            "SELECT id, payload FROM dead_letters WHERE {DEAD_LETTER_WHERE} AND payload IS NOT NULL \
             ORDER BY id LIMIT $6 FOR UPDATE"
        );
        let mut attempt = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(db(OP))?;
            let mut remaining = filter.limit.unwrap_or(usize::MAX);
            let mut after = filter.after_id;
            let mut moved = 0u64;
            let result: Result<(), StoreError> = async {
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
                        ids.push(r.get::<i64, _>(0));
                        let payload: String = r.get(1);
                        let mut change = serde_json::from_str::<AssetChange>(&payload)
                            .map_err(|e| corrupt(OP, "dead letter payload", e))?;
                        change.mark_replayed();
                        changes.push(change);
                    }
                    let plan =
                        plan::plan(&changes, &HashSet::new(), false).map_err(|e| invalid(OP, e))?;
                    upsert_rows(&mut tx, &plan.rows, OP).await?;
                    sqlx::query("DELETE FROM dead_letters WHERE id = ANY($1)")
                        .bind(&ids)
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
                if moved > 0 {
                    notify(&mut tx, OP).await?;
                }
                Ok(())
            }
            .await;
            let result = match result {
                Ok(()) => tx.commit().await.map_err(db(OP)),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(moved),
                Err(StoreError::Database { cause, .. })
                    if is_unique_violation(&cause) && attempt + 1 < RACE_RETRIES =>
                {
                    attempt += 1
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) async fn purge_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM dead_letters WHERE id IN \
             (SELECT id FROM dead_letters WHERE {DEAD_LETTER_WHERE} ORDER BY id LIMIT $6)"
        );
        let n = bind_filter(sqlx::query(&sql), filter)
            .bind(filter.limit.map(|l| l as i64))
            .execute(&self.pool)
            .await
            .map_err(db("purge dead letters"))?
            .rows_affected();
        Ok(n)
    }

    pub(crate) async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(db(OP))?;
        rows.into_iter()
            .map(|r| {
                Ok(FamilyStatus {
                    family: r.get(0),
                    cursor: cursor_from_columns(r.get(1), r.get(2))
                        .map_err(|e| corrupt(OP, "cursor", e))?,
                    last_success: r.get::<Option<DateTime<Utc>>, _>(3),
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
        if succeeded == 0 && failed == 0 {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO outcomes (minute, family, succeeded, failed) \
             VALUES (floor(extract(epoch FROM now()) / 60)::bigint, $1, $2, $3) \
             ON CONFLICT (minute, family) DO UPDATE SET succeeded = outcomes.succeeded + EXCLUDED.succeeded, \
             failed = outcomes.failed + EXCLUDED.failed",
        )
        .bind(family)
        .bind(succeeded as i64)
        .bind(failed as i64)
        .execute(&self.pool)
        .await
        .map_err(db("record outcomes"))?;
        Ok(())
    }

    pub(crate) async fn outcomes(
        &self,
        window: Duration,
        family: Option<&str>,
    ) -> Result<OutcomeCounts, StoreError> {
        let r = sqlx::query(
            "SELECT coalesce(sum(succeeded), 0)::bigint, coalesce(sum(failed), 0)::bigint FROM outcomes \
             WHERE minute >= floor((extract(epoch FROM now()) - $1::bigint / 1000000.0) / 60)::bigint \
             AND ($2::text IS NULL OR family = $2)",
        )
        .bind(dur_micros(window))
        .bind(family)
        .fetch_one(&self.pool)
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
        let mut out = PruneOutcome::default();
        for _ in 0..10_000 {
            let n = sqlx::query(
                "DELETE FROM seen_events WHERE event_id IN (SELECT event_id FROM seen_events \
                 WHERE seen_at < now() - $1 * interval '1 microsecond' LIMIT $2)",
            )
            .bind(dur_micros(options.seen_event_retention))
            .bind(BATCH)
            .execute(&self.pool)
            .await
            .map_err(db(OP))?
            .rows_affected();
            out.seen_events += n;
            if (n as i64) < BATCH {
                break;
            }
        }
        out.outcome_buckets = sqlx::query(
            "DELETE FROM outcomes WHERE minute < \
             floor((extract(epoch FROM now()) - $1::bigint / 1000000.0) / 60)::bigint",
        )
        .bind(dur_micros(options.outcome_retention))
        .execute(&self.pool)
        .await
        .map_err(db(OP))?
        .rows_affected();
        Ok(out)
    }

    // --- scale-out -----------------------------------------------------------------------

    /// Tries to take the session advisory lock of `family` on a dedicated connection.
    pub(crate) async fn try_lock_family(
        &self,
        family: &str,
    ) -> Result<Option<PgConnection>, StoreError> {
        const OP: &str = "lock family";
        let mut conn = tokio::time::timeout(
            self.connect_timeout,
            PgConnection::connect_with(&self.connect),
        )
        .await
        .map_err(|_| db(OP)(sqlx::Error::PoolTimedOut))?
        .map_err(db(OP))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(family)
            .fetch_one(&mut conn)
            .await
            .map_err(db(OP))?;
        if locked {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Starts (once) the task that LISTENs for inbox notifications and wakes `wake`.
    pub(crate) fn ensure_listener(&self, wake: Arc<Notify>) {
        let Ok(mut slot) = self.listener.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let connect = self.connect.clone();
        let connect_timeout = self.connect_timeout;
        *slot = Some(tokio::spawn(async move {
            let wake_all = || {
                wake.notify_waiters();
                wake.notify_one();
            };
            loop {
                // A pool of one, so a lost connection is re-established by the listener.
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(connect_timeout)
                    .max_lifetime(None)
                    .idle_timeout(None)
                    .connect_lazy_with(connect.clone());
                let listening = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(CHANNEL).await?;
                    loop {
                        // `None`: the connection was lost (and is re-established on the next
                        // call); wake anyway, a notification may have been missed.
                        listener.try_recv().await?;
                        wake_all();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listening.await {
                    tracing::warn!(error = %e, "PostgreSQL inbox listener failed; retrying in 1 s");
                }
                wake_all();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
}

/// Unlocks and closes a family lock connection.
pub(crate) async fn unlock_family(mut conn: PgConnection, family: &str) -> Result<(), StoreError> {
    const OP: &str = "unlock family";
    sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(family)
        .execute(&mut conn)
        .await
        .map_err(db(OP))?;
    conn.close().await.map_err(db(OP))
}

/// Whether the lock connection is still alive (the session lock lives as long as it does).
pub(crate) async fn ping(conn: &mut PgConnection) -> bool {
    conn.ping().await.is_ok()
}

async fn notify_raw(tx: &mut Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn notify(
    tx: &mut Transaction<'static, Postgres>,
    op: &'static str,
) -> Result<(), StoreError> {
    notify_raw(tx).await.map_err(db(op))
}

/// Writes planned rows (one per asset) into the inbox in one statement: replaces the asset's
/// pending entry or adds one, unless a pending or in-flight entry is newer by the DAM's time.
/// Returns (accepted, superseded, stale).
async fn upsert_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[plan::Row<'_>],
    op: &'static str,
) -> Result<(u64, u64, u64), StoreError> {
    if rows.is_empty() {
        return Ok((0, 0, 0));
    }
    let mut rows: Vec<&plan::Row<'_>> = rows.iter().collect();
    rows.sort_by(|a, b| {
        (&a.change.family, a.change.dam_id()).cmp(&(&b.change.family, b.change.dam_id()))
    });
    let families: Vec<&str> = rows.iter().map(|r| r.change.family.as_str()).collect();
    let dam_ids: Vec<&str> = rows.iter().map(|r| r.change.dam_id()).collect();
    let event_ids: Vec<Option<&str>> = rows.iter().map(|r| r.change.event_id.as_deref()).collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.change.source.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let changed: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.changed_at).collect();
    // A newer change takes a pending entry's place under a new id (`id = DEFAULT`): a worker
    // whose lease on the old id expired cannot complete, retry or dead-letter it by that id.
    let written = sqlx::query(
        "INSERT INTO inbox (family, dam_id, event_id, source, payload, changed_at, enqueued_at, not_before, attempts) \
         SELECT t.family, t.dam_id, t.event_id, t.source, t.payload, t.changed_at, now(), now(), 0 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
              WITH ORDINALITY AS t(family, dam_id, event_id, source, payload, changed_at, o) \
         WHERE NOT EXISTS (SELECT 1 FROM inbox l WHERE l.family = t.family AND l.dam_id = t.dam_id \
              AND l.lease_until IS NOT NULL AND t.changed_at < l.changed_at) \
         ORDER BY t.o \
         ON CONFLICT (family, dam_id) WHERE lease_until IS NULL DO UPDATE SET \
              id = DEFAULT, event_id = EXCLUDED.event_id, source = EXCLUDED.source, payload = EXCLUDED.payload, \
              changed_at = EXCLUDED.changed_at, not_before = EXCLUDED.not_before, attempts = 0, last_error = NULL \
         WHERE EXCLUDED.changed_at IS NULL OR inbox.changed_at IS NULL OR EXCLUDED.changed_at >= inbox.changed_at \
         RETURNING (xmax = 0) AS inserted",
    )
    .bind(&families)
    .bind(&dam_ids)
    .bind(&event_ids)
    .bind(&sources)
    .bind(&payloads)
    .bind(&changed)
    .fetch_all(&mut **tx)
    .await
    .map_err(db(op))?;
    let accepted = written.len() as u64;
    let superseded = written.iter().filter(|r| !r.get::<bool, _>(0)).count() as u64;
    Ok((accepted, superseded, rows.len() as u64 - accepted))
}

fn bind_filter<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    f: &'q DeadLetterFilter,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(f.family.as_deref())
        .bind(f.kind.as_deref())
        .bind(f.error_contains.as_deref())
        .bind(f.after_id)
        .bind(f.ids.as_deref())
}

fn dead_letter_from_row(r: &PgRow, op: &'static str) -> Result<DeadLetter, StoreError> {
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
                .get::<Option<i32>, _>("pim_status")
                .and_then(|s| u16::try_from(s).ok()),
            pim_message: r.get("pim_message"),
            pim_errors: pim_errors
                .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(op, "PIM errors", e)))
                .transpose()?,
        },
        attempts: r.get::<i32, _>("attempts").max(0) as u32,
        last_error: r.get("last_error"),
        enqueued_at: r.get("enqueued_at"),
        failed_at: r.get("failed_at"),
    })
}

/// Text PostgreSQL's `text` can hold: it refuses the NUL character, which a message quoting
/// outside data (a DAM record, a queue message, a PIM answer) may carry; it becomes U+FFFD, so
/// a dead letter or a retry's error is never refused for its wording.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}
