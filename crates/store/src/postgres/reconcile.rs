//! PostgreSQL side of reconciliation passes (see `crate::reconcile`): migration 3, the pass
//! table and the per-pass marks of asset codes seen in the DAM listing. Times are the
//! database's (`now()`), like a hash's `written_at`.

use std::collections::HashMap;
use std::time::Duration;

use assetbridge_core::ContentHash;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{db, PgStore};
use crate::dur_micros;
use crate::error::StoreError;
use crate::reconcile::{CodeState, ReconcilePass, ReconcileRun};

/// Migration 3: reconciliation passes, their marks, and asset codes looked up by code.
pub(super) const MIGRATION: &str = r#"
CREATE INDEX asset_codes_by_code ON asset_codes (family, code);
CREATE TABLE reconcile_passes (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    complete    BOOLEAN
);
CREATE INDEX reconcile_passes_family ON reconcile_passes (family, id);
CREATE TABLE reconcile_seen (
    pass BIGINT NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (pass, code)
);
"#;

impl PgStore {
    pub(crate) async fn begin_reconcile(
        &self,
        family: &str,
        abandoned_after: Duration,
    ) -> Result<ReconcilePass, StoreError> {
        const OP: &str = "begin reconciliation";
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        let old_micros = dur_micros(abandoned_after);
        sqlx::query(
            "WITH old AS ( \
                UPDATE reconcile_passes SET finished_at = now(), complete = false \
                WHERE family = $1 AND finished_at IS NULL \
                AND started_at < now() - make_interval(secs => $2::double precision / 1000000) \
                RETURNING id) \
             DELETE FROM reconcile_seen WHERE pass IN (SELECT id FROM old)",
        )
        .bind(family)
        .bind(old_micros)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        let row = sqlx::query(
            "INSERT INTO reconcile_passes (family, started_at) VALUES ($1, now()) \
             RETURNING id, started_at",
        )
        .bind(family)
        .fetch_one(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        Ok(ReconcilePass {
            id: row.get(0),
            family: family.to_owned(),
            started_at: row.get::<DateTime<Utc>, _>(1),
        })
    }

    pub(crate) async fn mark_seen(&self, pass: i64, codes: &[String]) -> Result<(), StoreError> {
        let mut sorted: Vec<&str> = codes.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        sqlx::query(
            "INSERT INTO reconcile_seen (pass, code) SELECT $1, c FROM unnest($2::text[]) AS t(c) \
             ON CONFLICT (pass, code) DO NOTHING",
        )
        .bind(pass)
        .bind(&sorted)
        .execute(&self.pool)
        .await
        .map_err(db("mark codes seen"))?;
        Ok(())
    }

    pub(crate) async fn dam_ids_by_code(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT code, dam_id FROM asset_codes WHERE family = $1 AND code = ANY($2) \
             ORDER BY code, dam_id",
        )
        .bind(family)
        .bind(codes)
        .fetch_all(&self.pool)
        .await
        .map_err(db("look up DAM ids by asset code"))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for r in rows {
            out.entry(r.get(0)).or_default().push(r.get(1));
        }
        Ok(out)
    }

    pub(crate) async fn reconcile_lookup(
        &self,
        family: &str,
        pass: Option<i64>,
        codes: &[String],
    ) -> Result<HashMap<String, CodeState>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.code, \
                (SELECT a.dam_id FROM asset_codes a WHERE a.family = $1 AND a.code = c.code \
                 ORDER BY a.dam_id LIMIT 1), \
                h.hash, h.written_at, \
                EXISTS (SELECT 1 FROM reconcile_seen s WHERE s.pass = $3 AND s.code = c.code) \
             FROM unnest($2::text[]) AS c(code) \
             LEFT JOIN hashes h ON h.family = $1 AND h.code = c.code",
        )
        .bind(family)
        .bind(codes)
        .bind(pass)
        .fetch_all(&self.pool)
        .await
        .map_err(db("look up codes for reconciliation"))?;
        let mut out = HashMap::new();
        for r in rows {
            let state = CodeState {
                dam_id: r.get::<Option<String>, _>(1),
                hash: r.get::<Option<String>, _>(2).map(ContentHash),
                written_at: r.get::<Option<DateTime<Utc>>, _>(3),
                seen: r.get::<bool, _>(4),
            };
            if state.dam_id.is_some() || state.hash.is_some() || state.seen {
                out.insert(r.get::<String, _>(0), state);
            }
        }
        Ok(out)
    }

    pub(crate) async fn finish_reconcile(
        &self,
        pass: i64,
        complete: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH done AS (UPDATE reconcile_passes SET finished_at = now(), complete = $2 \
             WHERE id = $1) \
             DELETE FROM reconcile_seen WHERE pass = $1",
        )
        .bind(pass)
        .bind(complete)
        .execute(&self.pool)
        .await
        .map_err(db("finish reconciliation"))?;
        Ok(())
    }

    pub(crate) async fn last_reconcile(
        &self,
        family: &str,
        complete_only: bool,
    ) -> Result<Option<ReconcileRun>, StoreError> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, complete FROM reconcile_passes \
             WHERE family = $1 AND finished_at IS NOT NULL AND (NOT $2 OR complete) \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(family)
        .bind(complete_only)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read the last reconciliation"))?;
        Ok(row.map(|r| ReconcileRun {
            id: r.get(0),
            started_at: r.get(1),
            finished_at: r.get(2),
            complete: r.get::<Option<bool>, _>(3).unwrap_or(false),
        }))
    }
}
