//! SQLite side of explicit product links (see `crate::links`): migration 2, recording pending
//! links with the asset writes, claims under the process-wide product guard, outcomes.

use std::collections::HashMap;

use serde_json::json;
use sqlx::Row;

use super::{Durability, WriteTx};

use super::{db, delete_keyed, invalid, json_text, Kind, SqliteStore};
use crate::error::StoreError;
use crate::links::{
    op_text, parse_op, parse_targets, plan_forget, plan_record, AssetLinks, LinkBacklog,
    LinkRequest, LinkResults, LinkTarget, PendingLink, ProductGuard, CANDIDATE_FACTOR,
};
use crate::model::WrittenAsset;
use crate::{dur_micros, from_micros, now_micros};

/// Migration 2: link targets and pending links.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE link_targets (
    family  TEXT NOT NULL,
    code    TEXT NOT NULL,
    targets TEXT NOT NULL,
    PRIMARY KEY (family, code)
) WITHOUT ROWID;
CREATE TABLE pending_links (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    product     TEXT NOT NULL,
    attribute   TEXT NOT NULL,
    locale      TEXT,
    scope       TEXT,
    code        TEXT NOT NULL,
    op          TEXT NOT NULL,
    family      TEXT NOT NULL,
    dam_id      TEXT,
    enqueued_at INTEGER NOT NULL,
    not_before  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX pending_links_ready ON pending_links (not_before, product);
CREATE INDEX pending_links_product ON pending_links (product, id);
"#;

const LINK_COLUMNS: &str =
    "id, product, attribute, locale, scope, code, op, family, dam_id, attempts, enqueued_at, last_error";

impl SqliteStore {
    pub(crate) async fn record_written_linked(
        &self,
        family: &str,
        written: &[WrittenAsset],
        links: &[AssetLinks],
    ) -> Result<u64, StoreError> {
        const OP: &str = "record written assets and their links";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let appended = if written.is_empty() {
            Vec::new()
        } else {
            self.append_written(&mut tx, family, written, OP).await?
        };
        let codes: Vec<String> = links.iter().map(|l| l.code.clone()).collect();
        let old = read_targets(&mut tx, family, &codes, OP).await?;
        let (requests, entries) = plan_record(family, &old, links);
        insert_links(&mut tx, &requests, OP).await?;
        write_targets(&mut tx, family, &entries, OP).await?;
        self.commit_appended(tx, family, appended, OP).await?;
        Ok(requests.len() as u64)
    }

    pub(crate) async fn forget_assets_unlinked(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<u64, StoreError> {
        const OP: &str = "forget assets and unlink them";
        let dam_ids: Vec<&str> = assets.iter().map(|a| a.0.as_str()).collect();
        let codes: Vec<String> = assets.iter().map(|a| a.1.clone()).collect();
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let old = read_targets(&mut tx, family, &codes, OP).await?;
        let requests = plan_forget(family, &old, assets);
        insert_links(&mut tx, &requests, OP).await?;
        let gone: Vec<(String, Option<Vec<LinkTarget>>)> =
            codes.iter().map(|c| (c.clone(), None)).collect();
        write_targets(&mut tx, family, &gone, OP).await?;
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        delete_keyed(&mut tx, Kind::Hash, family, &codes, OP).await?;
        delete_keyed(&mut tx, Kind::Code, family, &dam_ids, OP).await?;
        let released = tx.release().await.map_err(db(OP))?;
        self.recent.remove(family, Kind::Hash, &codes);
        self.recent.remove(family, Kind::Code, &dam_ids);
        released.committed().await.map_err(db(OP))?;
        self.merge_if_due().await;
        Ok(requests.len() as u64)
    }

    pub(crate) async fn add_pending_links(&self, links: &[LinkRequest]) -> Result<(), StoreError> {
        const OP: &str = "add pending links";
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        insert_links(&mut tx, links, OP).await?;
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn claim_links(
        &self,
        scope: &str,
        max_products: usize,
    ) -> Result<(ProductGuard, Vec<PendingLink>, usize), StoreError> {
        const OP: &str = "claim pending links";
        let now = now_micros();
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT product FROM pending_links WHERE not_before <= ?1 \
             GROUP BY product ORDER BY min(id) LIMIT ?2",
        )
        .bind(now)
        .bind((max_products * CANDIDATE_FACTOR) as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(db(OP))?;
        let (guard, busy) = ProductGuard::take(scope, &candidates, max_products);
        let products = guard.products();
        if products.is_empty() {
            return Ok((guard, Vec::new(), busy));
        }
        // Read after taking the guard: every row committed by now is seen, and rows recorded
        // later wait for the next claim.
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM pending_links \
             WHERE product IN (SELECT value FROM json_each(?1)) AND not_before <= ?2 ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(json_text(&products))
            .bind(now_micros())
            .fetch_all(&self.reader)
            .await
            .map_err(db(OP))?;
        let links = rows
            .iter()
            .map(|r| link_from_row(r, OP))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((guard, links, busy))
    }

    pub(crate) async fn finish_links(&self, results: &LinkResults) -> Result<(), StoreError> {
        const OP: &str = "finish pending links";
        if results.done.is_empty() && results.retry.is_empty() && results.dead.is_empty() {
            return Ok(());
        }
        let now = now_micros();
        let mut tx = self.write_tx(OP, Durability::Ordered).await?;
        let mut gone: Vec<i64> = results.done.clone();
        for r in &results.retry {
            sqlx::query(
                "UPDATE pending_links SET attempts = attempts + 1, last_error = ?2, not_before = ?3 \
                 WHERE id = ?1",
            )
            .bind(r.id)
            .bind(&r.error)
            .bind(now.saturating_add(dur_micros(r.delay)))
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        }
        for d in &results.dead {
            let payload = serde_json::to_string(&d.change).map_err(|e| invalid(OP, e))?;
            sqlx::query(
                "INSERT INTO dead_letters (family, dam_id, event_id, source, payload, kind, message, \
                 pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at) \
                 SELECT ?2, ?3, NULL, ?4, ?5, ?6, ?7, ?8, ?9, ?10, attempts, last_error, enqueued_at, ?11 \
                 FROM pending_links WHERE id = ?1",
            )
            .bind(d.id)
            .bind(&d.change.family)
            .bind(d.change.dam_id())
            .bind(&d.change.source)
            .bind(payload)
            .bind(&d.reason.kind)
            .bind(&d.reason.message)
            .bind(d.reason.pim_status.map(i64::from))
            .bind(d.reason.pim_message.as_deref())
            .bind(d.reason.pim_errors.as_ref().map(|v| v.to_string()))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
            gone.push(d.id);
        }
        if !gone.is_empty() {
            sqlx::query("DELETE FROM pending_links WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(json_text(&gone))
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
        }
        tx.commit().await.map_err(db(OP))
    }

    pub(crate) async fn link_targets(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, Vec<LinkTarget>>, StoreError> {
        let rows = sqlx::query(
            "SELECT code, targets FROM link_targets WHERE family = ?1 \
             AND code IN (SELECT value FROM json_each(?2))",
        )
        .bind(family)
        .bind(json_text(&codes))
        .fetch_all(&self.reader)
        .await
        .map_err(db("read link targets"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), parse_targets(&r.get::<String, _>(1))))
            .collect())
    }

    pub(crate) async fn link_backlog(&self) -> Result<LinkBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*), coalesce(sum(CASE WHEN not_before > ?1 THEN 1 ELSE 0 END), 0) \
             FROM pending_links",
        )
        .bind(now_micros())
        .fetch_one(&self.reader)
        .await
        .map_err(db("count pending links"))?;
        Ok(LinkBacklog {
            pending: row.get::<i64, _>(0) as u64,
            delayed: row.get::<i64, _>(1) as u64,
        })
    }
}

async fn read_targets(
    tx: &mut WriteTx,
    family: &str,
    codes: &[String],
    op: &'static str,
) -> Result<HashMap<String, Vec<LinkTarget>>, StoreError> {
    if codes.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT code, targets FROM link_targets WHERE family = ?1 \
         AND code IN (SELECT value FROM json_each(?2))",
    )
    .bind(family)
    .bind(json_text(&codes))
    .fetch_all(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<String, _>(0), parse_targets(&r.get::<String, _>(1))))
        .collect())
}

async fn write_targets(
    tx: &mut WriteTx,
    family: &str,
    entries: &[(String, Option<Vec<LinkTarget>>)],
    op: &'static str,
) -> Result<(), StoreError> {
    let mut keep: Vec<(String, String)> = Vec::new();
    let mut drop: Vec<&str> = Vec::new();
    for (code, targets) in entries {
        match targets {
            Some(t) => keep.push((
                code.clone(),
                serde_json::to_string(t).map_err(|e| invalid(op, e))?,
            )),
            None => drop.push(code),
        }
    }
    if !keep.is_empty() {
        sqlx::query(
            "INSERT INTO link_targets (family, code, targets) \
             SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]') \
             FROM json_each(?2) WHERE true \
             ON CONFLICT (family, code) DO UPDATE SET targets = excluded.targets",
        )
        .bind(family)
        .bind(json_text(&keep))
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    }
    if !drop.is_empty() {
        sqlx::query(
            "DELETE FROM link_targets WHERE family = ?1 AND code IN (SELECT value FROM json_each(?2))",
        )
        .bind(family)
        .bind(json_text(&drop))
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    }
    Ok(())
}

async fn insert_links(
    tx: &mut WriteTx,
    links: &[LinkRequest],
    op: &'static str,
) -> Result<(), StoreError> {
    if links.is_empty() {
        return Ok(());
    }
    let now = now_micros();
    let batch: Vec<serde_json::Value> = links
        .iter()
        .map(|l| {
            json!([
                l.target.product,
                l.target.attribute,
                l.target.locale,
                l.target.scope,
                l.code,
                op_text(l.op),
                l.family,
                l.dam_id
            ])
        })
        .collect();
    sqlx::query(
        "INSERT INTO pending_links (product, attribute, locale, scope, code, op, family, dam_id, \
         enqueued_at, not_before) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
         json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), \
         json_extract(value, '$[6]'), json_extract(value, '$[7]'), ?1, ?1 \
         FROM json_each(?2) ORDER BY key",
    )
    .bind(now)
    .bind(serde_json::Value::Array(batch).to_string())
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

fn link_from_row(r: &sqlx::sqlite::SqliteRow, op: &'static str) -> Result<PendingLink, StoreError> {
    let op_name: String = r.get(6);
    let link_op = parse_op(&op_name).ok_or_else(|| StoreError::Corrupt {
        backend: crate::Backend::Sqlite,
        operation: op,
        what: "pending link",
        message: format!("unknown operation `{op_name}`"),
    })?;
    Ok(PendingLink {
        id: r.get(0),
        request: LinkRequest {
            family: r.get(7),
            dam_id: r.get(8),
            code: r.get(5),
            op: link_op,
            target: LinkTarget {
                product: r.get(1),
                attribute: r.get(2),
                locale: r.get(3),
                scope: r.get(4),
            },
        },
        attempts: r.get::<i64, _>(9).max(0) as u32,
        enqueued_at: from_micros(r.get(10)),
        last_error: r.get(11),
    })
}
