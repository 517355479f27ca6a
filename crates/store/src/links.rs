//! Explicit product links: the durable queue of asset codes to add to (or remove from) products'
//! asset-collection values, and what each asset was last linked to.
//!
//! - **Link targets** (`link_targets`): per (family, asset code), the product values the asset
//!   should be in (product identifier, attribute, locale, scope). Needed because a deletion in
//!   the DAM only knows the DAM id, never the product.
//! - **Pending links** (`pending_links`): one row per (asset code, product value, add/remove),
//!   recorded in the same transaction as the asset write that caused it
//!   ([`Store::record_written_linked`]) or the deletion ([`Store::forget_assets_unlinked`]), and
//!   removed only when the linker committed its outcome ([`LinkClaim::finish`]): written, or
//!   dead-lettered, or rescheduled.
//!
//! [`Store::claim_links`] hands a linker every ready row of up to N products, under a
//! **per-product exclusion** that holds until [`LinkClaim::finish`] (or the claim is dropped):
//! while a claim holds a product, no other claim — in this process or, on PostgreSQL, any other
//! — gets that product. PostgreSQL: transaction-scoped advisory locks (`pg_try_advisory_xact_lock`)
//! taken in the claim's transaction, which stays open until `finish` commits it (a crashed or
//! dropped claim rolls back: nothing is lost, the locks go with the session). SQLite (one
//! process): a process-wide set of claimed products per database file.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use assetbridge_core::AssetChange;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{DeadLetterReason, WrittenAsset};
use crate::{Db, Store, StoreError};

/// One value of a product's asset-collection attribute: where an asset code is linked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkTarget {
    /// The product identifier (the PIM's identifier attribute, e.g. the SKU).
    pub product: String,
    /// The product's asset-collection attribute.
    pub attribute: String,
    /// The value's locale (a localizable attribute), else `None`.
    #[serde(default)]
    pub locale: Option<String>,
    /// The value's channel (a scopable attribute), else `None`.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Add the asset code to the value, or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkOp {
    /// Append the code (unless present), keeping the order of the codes already there.
    Add,
    /// Remove the code (if present).
    Remove,
}

impl LinkOp {
    fn as_str(self) -> &'static str {
        match self {
            LinkOp::Add => "add",
            LinkOp::Remove => "remove",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "add" => Some(LinkOp::Add),
            "remove" => Some(LinkOp::Remove),
            _ => None,
        }
    }
}

/// One link to make or unmake: asset `code` of asset family `family` in `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkRequest {
    /// The asset family of the asset.
    pub family: String,
    /// The DAM id of the asset, when known (for the operator's eyes).
    #[serde(default)]
    pub dam_id: Option<String>,
    /// The asset code.
    pub code: String,
    /// Add or remove.
    pub op: LinkOp,
    /// The product value.
    #[serde(flatten)]
    pub target: LinkTarget,
}

/// The product values a written asset belongs in now (all of them: an empty list means none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetLinks {
    /// The DAM id of the asset.
    pub dam_id: String,
    /// Its asset code.
    pub code: String,
    /// Where it should be linked.
    pub targets: Vec<LinkTarget>,
}

/// A pending link handed out by [`Store::claim_links`].
#[derive(Debug, Clone, PartialEq)]
pub struct PendingLink {
    /// The row id; pass it back in [`LinkResults`].
    pub id: i64,
    /// What to do.
    pub request: LinkRequest,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was recorded.
    pub enqueued_at: DateTime<Utc>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

/// Size of the pending-link queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkBacklog {
    /// Pending links (ready or waiting for a retry).
    pub pending: u64,
    /// Of `pending`, those waiting for their retry time.
    pub delayed: u64,
}

/// A pending link to try again later.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRetry {
    /// The row id.
    pub id: i64,
    /// Why it failed this time.
    pub error: String,
    /// When to try again, from now.
    pub delay: Duration,
}

/// A pending link that failed for good: it leaves the queue for the dead-letter store.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkDead {
    /// The row id.
    pub id: i64,
    /// The dead letter's payload (a change that `dlq retry` brings back to the inbox).
    pub change: AssetChange,
    /// Why.
    pub reason: DeadLetterReason,
}

/// What became of the links of a [`LinkClaim`]. Ids not named stay pending as they were.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkResults {
    /// Done (written, or nothing to do): removed from the queue.
    pub done: Vec<i64>,
    /// To try again later (`attempts + 1`).
    pub retry: Vec<LinkRetry>,
    /// Moved to the dead letters.
    pub dead: Vec<LinkDead>,
}

/// Every ready pending link of some products, held under a per-product exclusion until
/// [`finish`](Self::finish) (or drop, which gives the products back with nothing changed).
pub struct LinkClaim {
    links: Vec<PendingLink>,
    products: usize,
    busy: usize,
    hold: Hold,
}

enum Hold {
    None,
    Sqlite {
        store: Store,
        guard: ProductGuard,
    },
    Postgres {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
    },
}

impl std::fmt::Debug for LinkClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkClaim")
            .field("links", &self.links.len())
            .field("products", &self.products)
            .field("busy", &self.busy)
            .finish()
    }
}

impl LinkClaim {
    /// The claimed links, oldest first.
    pub fn links(&self) -> &[PendingLink] {
        &self.links
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Products held by this claim.
    pub fn products(&self) -> usize {
        self.products
    }

    /// Products that had ready links but were held by another claim at the time (so were left
    /// to it): evidence of linkers working on the same products at once.
    pub fn busy(&self) -> usize {
        self.busy
    }

    /// Gives the products back with nothing changed, now. (Dropping a claim does the same, but
    /// on PostgreSQL the rollback, and so the release of the products, happens a moment later,
    /// when the connection goes back to the pool.)
    pub async fn release(mut self) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.hold, Hold::None) {
            Hold::None | Hold::Sqlite { .. } => Ok(()),
            Hold::Postgres { tx } => tx.rollback().await.map_err(|cause| StoreError::Database {
                backend: crate::Backend::Postgres,
                operation: "release pending links",
                cause,
            }),
        }
    }

    /// Records the outcome in one transaction and releases the products.
    pub async fn finish(mut self, results: &LinkResults) -> Result<(), StoreError> {
        match std::mem::replace(&mut self.hold, Hold::None) {
            Hold::None => Ok(()),
            Hold::Sqlite { store, guard } => {
                let r = match &store.inner.db {
                    Db::Sqlite(s) => s.finish_links(results).await,
                    Db::Postgres(_) => unreachable!("a SQLite claim of a SQLite store"),
                };
                drop(guard);
                r
            }
            Hold::Postgres { tx } => crate::postgres::links::finish_links(tx, results).await,
        }
    }
}

/// Products claimed in this process, per SQLite database: (database scope, product).
static CLAIMED: LazyLock<Mutex<HashSet<(String, String)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// Products of one SQLite claim; released on drop.
pub(crate) struct ProductGuard {
    keys: Vec<(String, String)>,
}

impl ProductGuard {
    /// Takes up to `max` of `candidates` (in order) that no other claim of `scope` holds.
    /// Returns the guard and how many candidates were held by others.
    pub(crate) fn take(scope: &str, candidates: &[String], max: usize) -> (Self, usize) {
        let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = Vec::new();
        let mut busy = 0;
        for p in candidates {
            if keys.len() >= max {
                break;
            }
            let key = (scope.to_owned(), p.clone());
            if held.insert(key.clone()) {
                keys.push(key);
            } else {
                busy += 1;
            }
        }
        (Self { keys }, busy)
    }

    pub(crate) fn products(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.1.clone()).collect()
    }
}

impl Drop for ProductGuard {
    fn drop(&mut self) {
        let mut held = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        for k in self.keys.drain(..) {
            held.remove(&k);
        }
    }
}

/// Candidates read per claim, as a multiple of the products wanted (some may be held by
/// another claim).
pub(crate) const CANDIDATE_FACTOR: usize = 4;

// --- planning (both backends) -------------------------------------------------------------

/// The targets of an asset in a stable form: distinct, sorted.
pub(crate) fn normalise(targets: &[LinkTarget]) -> Vec<LinkTarget> {
    targets
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An asset's new target list by code (`None`: forget the asset's entry).
pub(crate) type TargetEntries = Vec<(String, Option<Vec<LinkTarget>>)>;

/// What recording `links` means, given what each asset was linked to before (`old`, by code):
/// an `add` for every current target (the PIM may have lost it: adding is idempotent), a
/// `remove` for every former target no longer wanted; and each asset's new target list
/// (`None`: forget the asset's entry). The last entry per code wins.
pub(crate) fn plan_record(
    family: &str,
    old: &HashMap<String, Vec<LinkTarget>>,
    links: &[AssetLinks],
) -> (Vec<LinkRequest>, TargetEntries) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, l) in links.iter().enumerate() {
        last.insert(l.code.as_str(), i);
    }
    let mut requests = Vec::new();
    let mut entries = Vec::new();
    for (i, l) in links.iter().enumerate() {
        if last.get(l.code.as_str()) != Some(&i) {
            continue;
        }
        let new = normalise(&l.targets);
        let request = |op, target: &LinkTarget| LinkRequest {
            family: family.to_owned(),
            dam_id: Some(l.dam_id.clone()),
            code: l.code.clone(),
            op,
            target: target.clone(),
        };
        if let Some(before) = old.get(&l.code) {
            for t in before.iter().filter(|t| !new.contains(t)) {
                requests.push(request(LinkOp::Remove, t));
            }
        }
        for t in &new {
            requests.push(request(LinkOp::Add, t));
        }
        entries.push((l.code.clone(), (!new.is_empty()).then_some(new)));
    }
    (requests, entries)
}

/// Removing deleted assets (`assets`: (dam_id, code)) from every product they were linked to.
pub(crate) fn plan_forget(
    family: &str,
    old: &HashMap<String, Vec<LinkTarget>>,
    assets: &[(String, String)],
) -> Vec<LinkRequest> {
    let mut seen = HashSet::new();
    let mut requests = Vec::new();
    for (dam_id, code) in assets {
        if !seen.insert(code.as_str()) {
            continue;
        }
        for t in old.get(code).into_iter().flatten() {
            requests.push(LinkRequest {
                family: family.to_owned(),
                dam_id: Some(dam_id.clone()),
                code: code.clone(),
                op: LinkOp::Remove,
                target: t.clone(),
            });
        }
    }
    requests
}

/// A stored target list (JSON) back to targets; unreadable text counts as none.
pub(crate) fn parse_targets(text: &str) -> Vec<LinkTarget> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(crate) fn op_text(op: LinkOp) -> &'static str {
    op.as_str()
}

pub(crate) fn parse_op(s: &str) -> Option<LinkOp> {
    LinkOp::parse(s)
}

// --- the store's API ----------------------------------------------------------------------

impl Store {
    /// Records written assets (as [`record_written`](Self::record_written)) **and** their
    /// links, in one transaction: for each asset, an `add` pending link for every target in
    /// `links`, a `remove` for every target it was linked to before and no longer is, and the
    /// new target list. Returns how many pending links were recorded.
    pub async fn record_written_linked(
        &self,
        family: &str,
        written: &[WrittenAsset],
        links: &[AssetLinks],
    ) -> Result<u64, StoreError> {
        if written.is_empty() && links.is_empty() {
            return Ok(0);
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.record_written_linked(family, written, links).await,
            Db::Postgres(p) => p.record_written_linked(family, written, links).await,
        }
    }

    /// Forgets deleted assets (as [`forget_assets`](Self::forget_assets); `assets`: (dam_id,
    /// code)) **and** records a `remove` pending link for every product value they were linked
    /// to, in one transaction. Returns how many pending links were recorded.
    pub async fn forget_assets_unlinked(
        &self,
        family: &str,
        assets: &[(String, String)],
    ) -> Result<u64, StoreError> {
        if assets.is_empty() {
            return Ok(0);
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.forget_assets_unlinked(family, assets).await,
            Db::Postgres(p) => p.forget_assets_unlinked(family, assets).await,
        }
    }

    /// Adds pending links as they are (e.g. dead letters brought back by `dlq retry`), ready
    /// now, in one transaction.
    pub async fn add_pending_links(&self, links: &[LinkRequest]) -> Result<(), StoreError> {
        if links.is_empty() {
            return Ok(());
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.add_pending_links(links).await,
            Db::Postgres(p) => p.add_pending_links(links).await,
        }
    }

    /// Claims every ready pending link (retry time come) of up to `max_products` products,
    /// oldest first, under a per-product exclusion held until [`LinkClaim::finish`] or drop.
    /// Products held by another claim are left out (counted in [`LinkClaim::busy`]). An empty
    /// claim holds nothing.
    pub async fn claim_links(&self, max_products: usize) -> Result<LinkClaim, StoreError> {
        let max = max_products.max(1);
        match &self.inner.db {
            Db::Sqlite(s) => {
                let scope = crate::sqlite_lock_scope(s, &self.inner);
                let (guard, links, busy) = s.claim_links(&scope, max).await?;
                let products = guard.keys.len();
                if links.is_empty() {
                    return Ok(LinkClaim {
                        links,
                        products: 0,
                        busy,
                        hold: Hold::None,
                    });
                }
                Ok(LinkClaim {
                    links,
                    products,
                    busy,
                    hold: Hold::Sqlite {
                        store: self.clone(),
                        guard,
                    },
                })
            }
            Db::Postgres(p) => {
                let (tx, links, products, busy) = p.claim_links(max).await?;
                let hold = match tx {
                    Some(tx) if !links.is_empty() => Hold::Postgres { tx },
                    Some(tx) => {
                        // Locked, but their links were finished meanwhile: free them now.
                        tx.rollback().await.map_err(|cause| StoreError::Database {
                            backend: crate::Backend::Postgres,
                            operation: "release pending links",
                            cause,
                        })?;
                        Hold::None
                    }
                    None => Hold::None,
                };
                Ok(LinkClaim {
                    products: if links.is_empty() { 0 } else { products },
                    hold,
                    links,
                    busy,
                })
            }
        }
    }

    /// The product values each of `codes` is linked to (as last recorded), by code.
    pub async fn link_targets(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, Vec<LinkTarget>>, StoreError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        match &self.inner.db {
            Db::Sqlite(s) => s.link_targets(family, codes).await,
            Db::Postgres(p) => p.link_targets(family, codes).await,
        }
    }

    /// Counts of the pending-link queue.
    pub async fn link_backlog(&self) -> Result<LinkBacklog, StoreError> {
        match &self.inner.db {
            Db::Sqlite(s) => s.link_backlog().await,
            Db::Postgres(p) => p.link_backlog().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> LinkTarget {
        LinkTarget {
            product: p.into(),
            attribute: "images".into(),
            locale: None,
            scope: None,
        }
    }

    #[test]
    fn record_adds_every_target_and_removes_the_dropped_ones() {
        let old = HashMap::from([("a".to_owned(), vec![t("P1"), t("P2")])]);
        let links = vec![
            AssetLinks {
                dam_id: "d".into(),
                code: "a".into(),
                targets: vec![t("P2"), t("P3"), t("P3")],
            },
            AssetLinks {
                dam_id: "e".into(),
                code: "b".into(),
                targets: vec![],
            },
        ];
        let (requests, entries) = plan_record("fam", &old, &links);
        let ops: Vec<(LinkOp, &str)> = requests
            .iter()
            .map(|r| (r.op, r.target.product.as_str()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (LinkOp::Remove, "P1"),
                (LinkOp::Add, "P2"),
                (LinkOp::Add, "P3")
            ]
        );
        assert_eq!(
            entries,
            vec![
                ("a".to_owned(), Some(vec![t("P2"), t("P3")])),
                ("b".to_owned(), None)
            ]
        );
    }

    #[test]
    fn forget_removes_every_remembered_target_once() {
        let old = HashMap::from([("a".to_owned(), vec![t("P1"), t("P2")])]);
        let assets = vec![
            ("d".to_owned(), "a".to_owned()),
            ("d".to_owned(), "a".to_owned()),
            ("x".to_owned(), "unknown".to_owned()),
        ];
        let r = plan_forget("fam", &old, &assets);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.op == LinkOp::Remove && r.code == "a"));
    }

    #[test]
    fn a_link_request_round_trips_through_json() {
        let r = LinkRequest {
            family: "f".into(),
            dam_id: None,
            code: "c".into(),
            op: LinkOp::Remove,
            target: LinkTarget {
                product: "P".into(),
                attribute: "a".into(),
                locale: Some("en_US".into()),
                scope: None,
            },
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<LinkRequest>(&text).unwrap(), r);
    }
}
