//! SQLite side of reconciliation passes (see `crate::reconcile`): migration 3, the pass
//! table and the per-pass marks of asset codes seen in the DAM listing.

use std::collections::HashMap;
use std::time::Duration;

use assetbridge_core::ContentHash;
use sqlx::Row;

use super::{db, json_text, Durability, SqliteStore};
use crate::error::StoreError;
use crate::reconcile::{CodeState, ReconcilePass, ReconcileRun};
use crate::{dur_micros, from_micros, now_micros};

/// Migration 3: reconciliation passes, their marks, and asset codes looked up by code.
pub(super) const MIGRATION: &str = r#"
CREATE INDEX asset_codes_by_code ON asset_codes (family, code);
CREATE TABLE reconcile_passes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    family      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    complete    INTEGER
);
CREATE INDEX reconcile_passes_family ON reconcile_passes (family, id);
CREATE TABLE reconcile_seen (
    pass INTEGER NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (pass, code)
) WITHOUT ROWID;
"#;

impl SqliteStore {
    pub(crate) async fn begin_reconcile(
        &self,
        family: &str,
        abandoned_after: Duration,
    ) -> Result<ReconcilePass, StoreError> {
        const OP: &str = "begin reconciliation";
        let now = now_micros();
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let old = now - dur_micros(abandoned_after);
        sqlx::query(
            "DELETE FROM reconcile_seen WHERE pass IN (SELECT id FROM reconcile_passes \
             WHERE family = ?1 AND finished_at IS NULL AND started_at < ?2)",
        )
        .bind(family)
        .bind(old)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        sqlx::query(
            "UPDATE reconcile_passes SET finished_at = ?3, complete = 0 \
             WHERE family = ?1 AND finished_at IS NULL AND started_at < ?2",
        )
        .bind(family)
        .bind(old)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reconcile_passes (family, started_at) VALUES (?1, ?2) RETURNING id",
        )
        .bind(family)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        Ok(ReconcilePass {
            id,
            family: family.to_owned(),
            started_at: from_micros(now),
        })
    }

    pub(crate) async fn mark_seen(&self, pass: i64, codes: &[String]) -> Result<(), StoreError> {
        const OP: &str = "mark codes seen";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query(
            "INSERT INTO reconcile_seen (pass, code) SELECT ?1, value FROM json_each(?2) WHERE true \
             ON CONFLICT (pass, code) DO NOTHING",
        )
        .bind(pass)
        .bind(json_text(&codes))
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn reconcile_lookup(
        &self,
        family: &str,
        pass: Option<i64>,
        codes: &[String],
    ) -> Result<HashMap<String, CodeState>, StoreError> {
        const OP: &str = "look up codes for reconciliation";
        // Code → DAM id is answered by the tables' index: the recent writes go there first.
        self.merge_recent().await?;
        let rows = sqlx::query(
            "SELECT c.value, \
                (SELECT a.dam_id FROM asset_codes a WHERE a.family = ?1 AND a.code = c.value \
                 ORDER BY a.dam_id LIMIT 1), \
                h.hash, h.written_at, \
                EXISTS (SELECT 1 FROM reconcile_seen s WHERE s.pass = ?3 AND s.code = c.value) \
             FROM json_each(?2) c LEFT JOIN hashes h ON h.family = ?1 AND h.code = c.value",
        )
        .bind(family)
        .bind(json_text(&codes))
        .bind(pass)
        .fetch_all(&self.reader)
        .await
        .map_err(db(OP))?;
        let mut out = HashMap::new();
        for r in rows {
            let state = CodeState {
                dam_id: r.get::<Option<String>, _>(1),
                hash: r.get::<Option<String>, _>(2).map(ContentHash),
                written_at: r.get::<Option<i64>, _>(3).map(from_micros),
                seen: r.get::<bool, _>(4),
            };
            if state.dam_id.is_some() || state.hash.is_some() || state.seen {
                out.insert(r.get::<String, _>(0), state);
            }
        }
        Ok(out)
    }

    pub(crate) async fn dam_ids_by_code(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        const OP: &str = "look up DAM ids by asset code";
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        // Read in one statement (one snapshot), without merging the log (a read, cheap enough
        // per batch of deletions, and a dry run stays a read): a DAM id's latest entry in the
        // log of recent writes (the bare column of `max(seq)`) overrides the newest run's
        // (`max(run)`), which overrides the table's, and a removed DAM id is in none. A merge
        // in progress copies the log's latest entries into a run before deleting them from the
        // log, and a compaction moves a run's entries into the table, so they agree meanwhile.
        let rows = sqlx::query(
            "WITH log AS ( \
                 SELECT key AS dam_id, value AS code, max(seq) FROM recent_writes \
                 WHERE kind = 'code' AND family = ?1 GROUP BY key), \
             runs AS ( \
                 SELECT key AS dam_id, value AS code, max(run) FROM recent_runs \
                 WHERE run IN (SELECT run FROM recent_run_ids) AND kind = 'code' AND family = ?1 \
                 GROUP BY key), \
             wanted AS (SELECT DISTINCT value AS code FROM json_each(?2)) \
             SELECT l.code, l.dam_id FROM log l WHERE l.code IN (SELECT code FROM wanted) \
             UNION \
             SELECT r.code, r.dam_id FROM runs r WHERE r.code IN (SELECT code FROM wanted) \
               AND NOT EXISTS (SELECT 1 FROM log l WHERE l.dam_id = r.dam_id) \
             UNION \
             SELECT a.code, a.dam_id FROM asset_codes a \
             WHERE a.family = ?1 AND a.code IN (SELECT code FROM wanted) \
               AND NOT EXISTS (SELECT 1 FROM log l WHERE l.dam_id = a.dam_id) \
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.dam_id = a.dam_id) \
             ORDER BY 1, 2",
        )
        .bind(family)
        .bind(json_text(&codes))
        .fetch_all(&self.reader)
        .await
        .map_err(db(OP))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for r in rows {
            out.entry(r.get(0)).or_default().push(r.get(1));
        }
        Ok(out)
    }

    pub(crate) async fn finish_reconcile(
        &self,
        pass: i64,
        complete: bool,
    ) -> Result<(), StoreError> {
        const OP: &str = "finish reconciliation";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        sqlx::query("DELETE FROM reconcile_seen WHERE pass = ?1")
            .bind(pass)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        sqlx::query("UPDATE reconcile_passes SET finished_at = ?2, complete = ?3 WHERE id = ?1")
            .bind(pass)
            .bind(now_micros())
            .bind(complete)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn last_reconcile(
        &self,
        family: &str,
        complete_only: bool,
    ) -> Result<Option<ReconcileRun>, StoreError> {
        const OP: &str = "read the last reconciliation";
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, complete FROM reconcile_passes \
             WHERE family = ?1 AND finished_at IS NOT NULL AND (?2 = 0 OR complete = 1) \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(family)
        .bind(complete_only)
        .fetch_optional(&self.reader)
        .await
        .map_err(db(OP))?;
        Ok(row.map(|r| ReconcileRun {
            id: r.get(0),
            started_at: from_micros(r.get(1)),
            finished_at: from_micros(r.get(2)),
            complete: r.get::<Option<bool>, _>(3).unwrap_or(false),
        }))
    }
}
