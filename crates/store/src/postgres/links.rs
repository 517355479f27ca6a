//! PostgreSQL side of explicit product links (see `crate::links`): migration 2, recording
//! pending links with the asset writes, claims under transaction-scoped advisory locks (one per
//! product, held until the claim's transaction ends), outcomes.

use std::collections::HashMap;

use sqlx::{Postgres, Row, Transaction};

use super::{db, invalid, PgStore};
use crate::error::{Backend, StoreError};
use crate::links::{
    op_text, parse_op, parse_targets, plan_forget, plan_record, AssetLinks, LinkBacklog,
    LinkRequest, LinkResults, LinkTarget, PendingLink, CANDIDATE_FACTOR,
};
use crate::model::WrittenAsset;
use crate::{dur_micros, plan};

/// Migration 2: link targets and pending links.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE link_targets (
    family  TEXT NOT NULL,
    code    TEXT NOT NULL,
    targets TEXT NOT NULL,
    PRIMARY KEY (family, code)
);
CREATE TABLE pending_links (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product     TEXT NOT NULL,
    attribute   TEXT NOT NULL,
    locale      TEXT,
    scope       TEXT,
    code        TEXT NOT NULL,
    op          TEXT NOT NULL,
    family      TEXT NOT NULL,
    dam_id      TEXT,
    enqueued_at TIMESTAMPTZ NOT NULL,
    not_before  TIMESTAMPTZ NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
);
CREATE INDEX pending_links_ready ON pending_links (not_before, product);
CREATE INDEX pending_links_product ON pending_links (product, id);
"#;

/// First key of the per-product advisory locks (ASCII "ABLP"), apart from the family locks.
const PRODUCT_LOCK_CLASS: i32 = 0x4142_4C50;

const LINK_COLUMNS: &str =
    "id, product, attribute, locale, scope, code, op, family, dam_id, attempts, enqueued_at, last_error";

impl PgStore {
    pub(crate) async fn record_written_linked(
        &self,
        family: &str,
        written: &[WrittenAsset],
        links: &[AssetLinks],
    ) -> Result<u64, StoreError> {
        const OP: &str = "record written assets and their links";
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        // Link targets first, then hashes: the order `forget_assets_unlinked` locks them in.
        let codes: Vec<String> = links.iter().map(|l| l.code.clone()).collect();
        let old = read_targets(&mut tx, family, &codes, OP).await?;
        if !written.is_empty() {
            write_hashes_and_codes(&mut tx, family, written, OP).await?;
        }
        let (requests, entries) = plan_record(family, &old, links);
        insert_links(&mut tx, &requests, OP).await?;
        write_targets(&mut tx, family, &entries, OP).await?;
        tx.commit().await.map_err(db(OP))?;
        Ok(requests.len() as u64)
    }

    pub(crate) async fn forget_assets_unlinked(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<u64, StoreError> {
        const OP: &str = "forget assets and unlink them";
        let mut dam_ids: Vec<&str> = assets.iter().map(|a| a.0.as_str()).collect();
        let mut codes: Vec<String> = assets.iter().map(|a| a.1.clone()).collect();
        dam_ids.sort_unstable();
        dam_ids.dedup();
        codes.sort_unstable();
        codes.dedup();
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        let old = read_targets(&mut tx, family, &codes, OP).await?;
        let requests = plan_forget(family, &old, assets);
        insert_links(&mut tx, &requests, OP).await?;
        let gone: Vec<(String, Option<Vec<LinkTarget>>)> =
            codes.iter().map(|c| (c.clone(), None)).collect();
        write_targets(&mut tx, family, &gone, OP).await?;
        sqlx::query("DELETE FROM hashes WHERE family = $1 AND code = ANY($2)")
            .bind(family)
            .bind(&codes)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        sqlx::query("DELETE FROM asset_codes WHERE family = $1 AND dam_id = ANY($2)")
            .bind(family)
            .bind(&dam_ids)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        Ok(requests.len() as u64)
    }

    pub(crate) async fn add_pending_links(&self, links: &[LinkRequest]) -> Result<(), StoreError> {
        const OP: &str = "add pending links";
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        insert_links(&mut tx, links, OP).await?;
        tx.commit().await.map_err(db(OP))
    }

    /// Opens the claim's transaction, locks up to `max_products` products with ready links
    /// (skipping those another transaction holds), and reads their ready links. Returns the
    /// transaction (to be finished or dropped), the links, the products locked and the
    /// products found held by someone else.
    #[allow(clippy::type_complexity)]
    pub(crate) async fn claim_links(
        &self,
        max_products: usize,
    ) -> Result<
        (
            Option<Transaction<'static, Postgres>>,
            Vec<PendingLink>,
            usize,
            usize,
        ),
        StoreError,
    > {
        const OP: &str = "claim pending links";
        let mut tx = self.pool.begin().await.map_err(db(OP))?;
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT product FROM pending_links WHERE not_before <= now() \
             GROUP BY product ORDER BY min(id) LIMIT $1",
        )
        .bind((max_products * CANDIDATE_FACTOR) as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db(OP))?;
        let mut locked: Vec<String> = Vec::new();
        let mut busy = 0;
        let mut rest = candidates.as_slice();
        while !rest.is_empty() && locked.len() < max_products {
            let take = (max_products - locked.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            // Each try-lock is held by this transaction until it commits or rolls back.
            let got: Vec<String> = sqlx::query_scalar(
                "SELECT p FROM unnest($1::text[]) WITH ORDINALITY AS t(p, o) \
                 WHERE pg_try_advisory_xact_lock($2, hashtext(p)) ORDER BY o",
            )
            .bind(chunk)
            .bind(PRODUCT_LOCK_CLASS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(OP))?;
            busy += chunk.len() - got.len();
            locked.extend(got);
        }
        if locked.is_empty() {
            return Ok((None, Vec::new(), 0, busy));
        }
        // A statement of its own, after the locks: its snapshot sees everything committed by
        // whoever held these products before (their deletions included).
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM pending_links \
             WHERE product = ANY($1) AND not_before <= now() ORDER BY id"
        );
        let rows = sqlx::query(&sql)
            .bind(&locked)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(OP))?;
        let links = rows
            .iter()
            .map(|r| link_from_row(r, OP))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Some(tx), links, locked.len(), busy))
    }

    pub(crate) async fn link_targets(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, Vec<LinkTarget>>, StoreError> {
        let rows = sqlx::query(
            "SELECT code, targets FROM link_targets WHERE family = $1 AND code = ANY($2)",
        )
        .bind(family)
        .bind(codes)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read link targets"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>(0), parse_targets(&r.get::<String, _>(1))))
            .collect())
    }

    pub(crate) async fn link_backlog(&self) -> Result<LinkBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*)::bigint, count(*) FILTER (WHERE not_before > now())::bigint \
             FROM pending_links",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("count pending links"))?;
        Ok(LinkBacklog {
            pending: row.get::<i64, _>(0) as u64,
            delayed: row.get::<i64, _>(1) as u64,
        })
    }
}

/// Records the outcome of a claim in its transaction and commits it, which releases the
/// products' locks.
pub(crate) async fn finish_links(
    mut tx: Transaction<'static, Postgres>,
    results: &LinkResults,
) -> Result<(), StoreError> {
    const OP: &str = "finish pending links";
    let mut gone: Vec<i64> = results.done.clone();
    if !results.retry.is_empty() {
        let ids: Vec<i64> = results.retry.iter().map(|r| r.id).collect();
        let errors: Vec<&str> = results.retry.iter().map(|r| r.error.as_str()).collect();
        let delays: Vec<i64> = results.retry.iter().map(|r| dur_micros(r.delay)).collect();
        sqlx::query(
            "UPDATE pending_links SET attempts = pending_links.attempts + 1, last_error = t.e, \
             not_before = now() + t.d * interval '1 microsecond' \
             FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS t(i, e, d) \
             WHERE pending_links.id = t.i",
        )
        .bind(&ids)
        .bind(&errors)
        .bind(&delays)
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
    }
    for d in &results.dead {
        let payload = serde_json::to_string(&d.change).map_err(|e| invalid(OP, e))?;
        sqlx::query(
            "INSERT INTO dead_letters (family, dam_id, event_id, source, payload, kind, message, \
             pim_status, pim_message, pim_errors, attempts, last_error, enqueued_at, failed_at) \
             SELECT $2, $3, NULL, $4, $5, $6, $7, $8, $9, $10, attempts, last_error, enqueued_at, now() \
             FROM pending_links WHERE id = $1",
        )
        .bind(d.id)
        .bind(&d.change.family)
        .bind(d.change.dam_id())
        .bind(&d.change.source)
        .bind(payload)
        .bind(&d.reason.kind)
        .bind(&d.reason.message)
        .bind(d.reason.pim_status.map(i32::from))
        .bind(d.reason.pim_message.as_deref())
        .bind(d.reason.pim_errors.as_ref().map(|v| v.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(db(OP))?;
        gone.push(d.id);
    }
    if !gone.is_empty() {
        sqlx::query("DELETE FROM pending_links WHERE id = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
    }
    tx.commit().await.map_err(db(OP))
}

/// Content hashes and DAM id → code entries of written assets, inside the caller's
/// transaction; drops the assets' pending inbox entries for older versions
/// ([`WrittenAsset::version`]).
pub(super) async fn write_hashes_and_codes(
    tx: &mut Transaction<'static, Postgres>,
    family: &str,
    assets: &[WrittenAsset],
    op: &'static str,
) -> Result<(), StoreError> {
    let hashes: Vec<(String, &assetbridge_core::ContentHash)> =
        assets.iter().map(|a| (a.code.clone(), &a.hash)).collect();
    let mut hashes = plan::last_per_key(&hashes);
    hashes.sort_by(|a, b| a.0.cmp(b.0));
    let codes: Vec<(String, &str)> = assets
        .iter()
        .map(|a| (a.dam_id.clone(), a.code.as_str()))
        .collect();
    let mut codes = plan::last_per_key(&codes);
    codes.sort_by(|a, b| a.0.cmp(b.0));
    let h_codes: Vec<&str> = hashes.iter().map(|e| e.0).collect();
    let h_hashes: Vec<&str> = hashes.iter().map(|e| e.1.as_str()).collect();
    let c_dam_ids: Vec<&str> = codes.iter().map(|e| e.0).collect();
    let c_codes: Vec<&str> = codes.iter().map(|e| *e.1).collect();
    sqlx::query(
        "WITH up AS ( \
            INSERT INTO hashes (family, code, hash, written_at) \
            SELECT $1, c, h, now() FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(c, h, o) ORDER BY o \
            ON CONFLICT (family, code) DO UPDATE SET hash = EXCLUDED.hash, written_at = EXCLUDED.written_at \
            RETURNING 1), \
         codes AS ( \
            INSERT INTO asset_codes (family, dam_id, code) \
            SELECT $1, d, c FROM unnest($4::text[], $5::text[]) WITH ORDINALITY AS t(d, c, o) ORDER BY o \
            ON CONFLICT (family, dam_id) DO UPDATE SET code = EXCLUDED.code) \
         INSERT INTO families (family, assets_written) SELECT $1, count(*) FROM up \
         ON CONFLICT (family) DO UPDATE SET assets_written = families.assets_written + EXCLUDED.assets_written",
    )
    .bind(family)
    .bind(&h_codes)
    .bind(&h_hashes)
    .bind(&c_dam_ids)
    .bind(&c_codes)
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    // Strictly older, not leased; an entry without a time stays.
    let (ids, times): (Vec<&str>, Vec<chrono::DateTime<chrono::Utc>>) = assets
        .iter()
        .filter_map(|a| Some((a.dam_id.as_str(), a.version?)))
        .unzip();
    if !ids.is_empty() {
        sqlx::query(
            "DELETE FROM inbox i USING unnest($2::text[], $3::timestamptz[]) AS v(d, t) \
             WHERE i.family = $1 AND i.dam_id = v.d AND i.lease_until IS NULL AND i.changed_at < v.t",
        )
        .bind(family)
        .bind(&ids)
        .bind(&times)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    }
    Ok(())
}

/// The former targets of `codes`, their rows locked for the rest of the transaction (two
/// writers of one asset at once record their links one after the other).
async fn read_targets(
    tx: &mut Transaction<'static, Postgres>,
    family: &str,
    codes: &[String],
    op: &'static str,
) -> Result<HashMap<String, Vec<LinkTarget>>, StoreError> {
    if codes.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sorted: Vec<&str> = codes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let rows = sqlx::query(
        "SELECT code, targets FROM link_targets WHERE family = $1 AND code = ANY($2) \
         ORDER BY code FOR UPDATE",
    )
    .bind(family)
    .bind(&sorted)
    .fetch_all(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<String, _>(0), parse_targets(&r.get::<String, _>(1))))
        .collect())
}

async fn write_targets(
    tx: &mut Transaction<'static, Postgres>,
    family: &str,
    entries: &[(String, Option<Vec<LinkTarget>>)],
    op: &'static str,
) -> Result<(), StoreError> {
    let mut keep: Vec<(String, String)> = Vec::new();
    let mut drop: Vec<String> = Vec::new();
    for (code, targets) in entries {
        match targets {
            Some(t) => keep.push((
                code.clone(),
                serde_json::to_string(t).map_err(|e| invalid(op, e))?,
            )),
            None => drop.push(code.clone()),
        }
    }
    // Key order, so that concurrent writers lock rows in the same order.
    keep.sort_by(|a, b| a.0.cmp(&b.0));
    keep.dedup_by(|a, b| a.0 == b.0);
    if !keep.is_empty() {
        let codes: Vec<&str> = keep.iter().map(|k| k.0.as_str()).collect();
        let targets: Vec<&str> = keep.iter().map(|k| k.1.as_str()).collect();
        sqlx::query(
            "INSERT INTO link_targets (family, code, targets) \
             SELECT $1, c, t FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(c, t, o) ORDER BY o \
             ON CONFLICT (family, code) DO UPDATE SET targets = EXCLUDED.targets",
        )
        .bind(family)
        .bind(&codes)
        .bind(&targets)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    }
    if !drop.is_empty() {
        sqlx::query("DELETE FROM link_targets WHERE family = $1 AND code = ANY($2)")
            .bind(family)
            .bind(&drop)
            .execute(&mut **tx)
            .await
            .map_err(db(op))?;
    }
    Ok(())
}

async fn insert_links(
    tx: &mut Transaction<'static, Postgres>,
    links: &[LinkRequest],
    op: &'static str,
) -> Result<(), StoreError> {
    if links.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&LinkRequest) -> Option<&str>| -> Vec<Option<&str>> {
        links.iter().map(f).collect()
    };
    let products = col(|l| Some(l.target.product.as_str()));
    let attributes = col(|l| Some(l.target.attribute.as_str()));
    let locales = col(|l| l.target.locale.as_deref());
    let scopes = col(|l| l.target.scope.as_deref());
    let codes = col(|l| Some(l.code.as_str()));
    let ops = col(|l| Some(op_text(l.op)));
    let families = col(|l| Some(l.family.as_str()));
    let dam_ids = col(|l| l.dam_id.as_deref());
    sqlx::query(
        "INSERT INTO pending_links (product, attribute, locale, scope, code, op, family, dam_id, \
         enqueued_at, not_before) \
         SELECT p, a, l, s, c, o, f, d, now(), now() \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[]) WITH ORDINALITY AS t(p, a, l, s, c, o, f, d, n) ORDER BY n",
    )
    .bind(&products)
    .bind(&attributes)
    .bind(&locales)
    .bind(&scopes)
    .bind(&codes)
    .bind(&ops)
    .bind(&families)
    .bind(&dam_ids)
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

fn link_from_row(r: &sqlx::postgres::PgRow, op: &'static str) -> Result<PendingLink, StoreError> {
    let op_name: String = r.get(6);
    let link_op = parse_op(&op_name).ok_or_else(|| StoreError::Corrupt {
        backend: Backend::Postgres,
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
        attempts: r.get::<i32, _>(9).max(0) as u32,
        enqueued_at: r.get(10),
        last_error: r.get(11),
    })
}
