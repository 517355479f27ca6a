//! Explicit product links: after an asset is written to the Asset Manager, its code is added to
//! the asset-collection value of its product(s) — merged with the codes already there — through
//! the product NDJSON batch API.
//!
//! 1. **Recording** (hooks of the write path): when the PIM confirms an asset write, the links
//!    it needs are recorded as *pending links* in the same store transaction as the asset's
//!    content hash ([`Store::record_written_linked`]): an `add` for each of its products, a
//!    `remove` for each product it was linked to before and no longer is. An unchanged asset
//!    whose products changed (or that was written before links were configured) gets its links
//!    recorded too, without a PIM call. A deletion in the PIM (`deletions = "delete"`) records a
//!    `remove` for every product the asset was linked to, with the forgetting of the asset.
//! 2. **Linking** ([`Engine::link_once`]): claims the ready pending links of up to 100 products
//!    under a per-product exclusion that holds across processes (see `assetbridge_store::links`),
//!    reads those products (identifier `IN`, ≤ 100 per request), merges (append missing codes in
//!    order, remove unlinked ones, keep everything else and its order), writes the products that
//!    changed (NDJSON, ≤ 100 per request) and records each product's outcome: success → its
//!    pending links deleted; no such product / refused (422…) → dead letters with the PIM's
//!    message; transient failure → retried later with backoff, dead-lettered after
//!    `max_attempts`. The read and the write of a product happen while no other linker can write
//!    links for it, so two changes of one product at once never lose a link.
//! 3. **Retrying dead letters**: a link's dead letter is a change of the reserved family
//!    [`LINKS_FAMILY`]; `dlq retry` puts it in the inbox, and the inbox workers turn it back into
//!    a pending link ([`Engine::requeue_claimed_links`]).
//!
//! Different from the enrichment's product → asset links (`enrich::links`, another reserved
//! family of the code map), which remember which AEM assets were enriched from a product.

mod config;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoError, ItemOutcome};
use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_store::{
    AssetLinks, Claimed, DeadLetterReason, LinkDead, LinkOp, LinkRequest, LinkResults, LinkRetry,
    PendingLink, WrittenAsset,
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{
    LinkMode, OnDelete, ProductExpression, ProductLinkConfig, ProductLinks, ProductSource,
    ASSET_COLLECTION_TYPE,
};

use crate::{Engine, EngineError, FamilyPlan};

/// The reserved asset family of product-link dead letters (and of their retries in the inbox).
pub const LINKS_FAMILY: &str = "__product_links";

/// Products claimed per linking round: one product search and at most one NDJSON write of
/// ≤ 100 lines.
pub const LINK_CLAIM_PRODUCTS: usize = 100;

/// What linking did. Every pending link handled ends in exactly one of `done`, `failed` and
/// `retrying`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkReport {
    /// Pending links handled.
    pub links: u64,
    /// Of those, done: the product holds (or, for a removal, no longer holds) the code.
    pub done: u64,
    /// Of those, dead-lettered (no such product, refused by the PIM, retries used up).
    pub failed: u64,
    /// Of those, waiting for a retry.
    pub retrying: u64,
    /// Asset codes added to products.
    pub added: u64,
    /// Asset codes removed from products.
    pub removed: u64,
    /// Products written.
    pub products_written: u64,
    /// Products that already were as wanted (no write).
    pub products_unchanged: u64,
    /// Product search requests (≤ 100 identifiers each).
    pub pim_reads: u64,
    /// NDJSON product write requests (≤ 100 products each).
    pub pim_writes: u64,
    /// Times a product with ready links was held by another linker when claimed (it was left
    /// to that linker, and waited for): evidence of linkers working on one product at once.
    pub busy: u64,
}

impl std::ops::AddAssign<&LinkReport> for LinkReport {
    fn add_assign(&mut self, o: &LinkReport) {
        self.links += o.links;
        self.done += o.done;
        self.failed += o.failed;
        self.retrying += o.retrying;
        self.added += o.added;
        self.removed += o.removed;
        self.products_written += o.products_written;
        self.products_unchanged += o.products_unchanged;
        self.pim_reads += o.pim_reads;
        self.pim_writes += o.pim_writes;
        self.busy += o.busy;
    }
}

/// The dead-letter id of a link: unique per (operation, family, code, product value), so that
/// retried link dead letters never collapse in the inbox.
pub fn link_key(r: &LinkRequest) -> String {
    let op = match r.op {
        LinkOp::Add => "add",
        LinkOp::Remove => "remove",
    };
    let mut key = format!(
        "{op}:{}:{}:{}:{}",
        r.family, r.code, r.target.product, r.target.attribute
    );
    for part in [&r.target.locale, &r.target.scope] {
        key.push(':');
        key.push_str(part.as_deref().unwrap_or(""));
    }
    key
}

/// The dead letter's payload for a link: a change of [`LINKS_FAMILY`] whose record is the link.
fn link_change(r: &LinkRequest) -> AssetChange {
    AssetChange {
        family: LINKS_FAMILY.to_owned(),
        event_id: None,
        source: "links".to_owned(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: link_key(r),
                updated_at: chrono::Utc::now(),
                record: serde_json::to_value(r).unwrap_or(Value::Null),
            },
        },
    }
}

/// The codes of a product's value after applying `ops` in order: an added code is appended
/// unless present; a removed code is taken out; the other codes keep their order.
pub fn merge_codes(current: &[String], ops: &[(LinkOp, &str)]) -> Vec<String> {
    let mut out: Vec<String> = current.to_vec();
    for (op, code) in ops {
        match op {
            LinkOp::Add => {
                if !out.iter().any(|c| c == code) {
                    out.push((*code).to_owned());
                }
            }
            LinkOp::Remove => out.retain(|c| c != code),
        }
    }
    out
}

/// The codes of `product`'s `attribute` value for (`locale`, `scope`), as the PIM returned it.
fn current_codes(
    product: &Value,
    attribute: &str,
    locale: Option<&str>,
    scope: Option<&str>,
) -> Vec<String> {
    product
        .get("values")
        .and_then(|v| v.get(attribute))
        .and_then(Value::as_array)
        .and_then(|entries| {
            entries.iter().find(|e| {
                e.get("locale").and_then(Value::as_str) == locale
                    && e.get("scope").and_then(Value::as_str) == scope
            })
        })
        .and_then(|e| e.get("data"))
        .and_then(Value::as_array)
        .map(|codes| {
            codes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn reason(kind: &str, message: String) -> DeadLetterReason {
    DeadLetterReason::new(kind, message)
}

/// One value of a product: (attribute, locale, scope).
type ValueKey<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// One product's pending links on their way.
struct ProductWork<'a> {
    links: Vec<&'a PendingLink>,
}

impl Engine {
    /// Links assets of `family` to products as `links` says (see [`ProductLinkConfig`]).
    /// Default: no links.
    pub fn with_product_links(mut self, family: &str, links: ProductLinks) -> Self {
        Arc::make_mut(&mut self.product_links).insert(family.to_owned(), Arc::new(links));
        self
    }

    /// The product links of `family`, when configured.
    pub fn product_links(&self, family: &str) -> Option<&Arc<ProductLinks>> {
        self.product_links.get(family)
    }

    // --- hooks of the write path ----------------------------------------------------------

    /// Write-path hook, for an asset the PIM confirmed: where it should be linked, added to
    /// `linked`. A product expression that fails leaves the asset's links as they were (with a
    /// warning).
    pub(crate) fn collect_links(
        &self,
        plan: &FamilyPlan,
        change: &AssetChange,
        code: &str,
        linked: &mut Vec<AssetLinks>,
    ) {
        let Some(links) = self.product_links.get(&plan.code) else {
            return;
        };
        let ChangeKind::Upsert { asset } = &change.kind else {
            return;
        };
        match links.targets(asset) {
            Ok(targets) => linked.push(AssetLinks {
                dam_id: asset.id.clone(),
                code: code.to_owned(),
                targets,
            }),
            Err(e) => {
                warn!(family = %plan.code, code, error = %e, "cannot tell the products of this asset (link.product); its product links are left as they were")
            }
        }
    }

    /// Write-path hook: records the written assets and, in the same transaction, their
    /// pending links.
    pub(crate) async fn record_written_linked(
        &self,
        plan: &FamilyPlan,
        written: &[WrittenAsset],
        linked: Vec<AssetLinks>,
    ) -> Result<(), EngineError> {
        if !self.product_links.contains_key(&plan.code) {
            self.store.record_written(&plan.code, written).await?;
            return Ok(());
        }
        let n = self
            .store
            .record_written_linked(&plan.code, written, &linked)
            .await?;
        if n > 0 {
            self.link_wake.notify_one();
        }
        Ok(())
    }

    /// Write-path hook for unchanged assets (no PIM call): those whose products are not the
    /// ones their links were last recorded for (their product field changed without changing
    /// the mapped values, or links were configured after they were written) get their links
    /// recorded. One store read per batch, only for families with links.
    pub(crate) async fn relink_unchanged(
        &self,
        plan: &FamilyPlan,
        unchanged: Vec<(AssetChange, String)>,
    ) -> Result<(), EngineError> {
        if unchanged.is_empty() || !self.product_links.contains_key(&plan.code) {
            return Ok(());
        }
        let mut wanted = Vec::with_capacity(unchanged.len());
        for (change, code) in &unchanged {
            self.collect_links(plan, change, code, &mut wanted);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let codes: Vec<String> = wanted.iter().map(|l| l.code.clone()).collect();
        let known = self.store.link_targets(&plan.code, &codes).await?;
        let stale: Vec<AssetLinks> = wanted
            .into_iter()
            .filter(|l| {
                let mut want = l.targets.clone();
                want.sort();
                want.dedup();
                known.get(&l.code).cloned().unwrap_or_default() != want
            })
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        debug!(family = %plan.code, assets = stale.len(), "unchanged assets whose products changed: links recorded");
        let n = self
            .store
            .record_written_linked(&plan.code, &[], &stale)
            .await?;
        if n > 0 {
            self.link_wake.notify_one();
        }
        Ok(())
    }

    /// Write-path hook for assets deleted in the PIM (`assets`: (dam_id, code)): forgets them
    /// and, when their family unlinks on deletion, records their removal from every product
    /// they were linked to — in one transaction.
    pub(crate) async fn forget_linked(
        &self,
        plan: &FamilyPlan,
        assets: &[(String, String)],
    ) -> Result<(), EngineError> {
        let unlink = self
            .product_links
            .get(&plan.code)
            .is_some_and(|l| l.config().on_delete == OnDelete::Unlink);
        if !unlink {
            self.store.forget_assets(&plan.code, assets).await?;
            return Ok(());
        }
        let n = self
            .store
            .forget_assets_unlinked(&plan.code, assets)
            .await?;
        if n > 0 {
            self.link_wake.notify_one();
        }
        Ok(())
    }

    /// Inbox hook: claimed changes of [`LINKS_FAMILY`] (link dead letters brought back by
    /// `dlq retry`) become pending links again; the others are returned.
    pub(crate) async fn requeue_claimed_links(
        &self,
        claimed: Vec<Claimed>,
    ) -> Result<Vec<Claimed>, EngineError> {
        if !claimed.iter().any(|c| c.change.family == LINKS_FAMILY) {
            return Ok(claimed);
        }
        let mut rest = Vec::with_capacity(claimed.len());
        let mut requests = Vec::new();
        let mut ids = Vec::new();
        for c in claimed {
            if c.change.family != LINKS_FAMILY {
                rest.push(c);
                continue;
            }
            let parsed = match &c.change.kind {
                ChangeKind::Upsert { asset } => {
                    serde_json::from_value::<LinkRequest>(asset.record.clone())
                        .map_err(|e| e.to_string())
                }
                ChangeKind::Delete { .. } => Err("a deletion is not a product link".to_owned()),
            };
            match parsed {
                Ok(r) => {
                    requests.push(r);
                    ids.push(c.id);
                }
                Err(e) => {
                    let why = reason("unparseable", format!("not a product link: {e}"));
                    self.store.dead_letter(c.id, &why).await?;
                }
            }
        }
        if !requests.is_empty() {
            // Recorded before the inbox entries go: a crash in between repeats the links,
            // which is harmless.
            self.store.add_pending_links(&requests).await?;
            self.store.complete(&ids).await?;
            self.link_wake.notify_one();
        }
        Ok(rest)
    }

    // --- the linker -----------------------------------------------------------------------

    /// One linking round: claims the ready pending links of up to [`LINK_CLAIM_PRODUCTS`]
    /// products and applies them. Returns how many pending links were claimed (0: nothing
    /// ready that no other linker holds) and what happened. An error that makes every PIM call
    /// pointless (credentials) is returned with nothing recorded: the links stay pending.
    pub async fn link_once(&self) -> Result<(usize, LinkReport), EngineError> {
        let claim = self.store.claim_links(LINK_CLAIM_PRODUCTS).await?;
        let mut report = LinkReport {
            busy: claim.busy() as u64,
            ..LinkReport::default()
        };
        if claim.is_empty() {
            return Ok((0, report));
        }
        let n = claim.links().len();
        let results = match self.apply_links(claim.links(), &mut report).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing recorded: the links stay pending, the products are free again.
                if let Err(r) = claim.release().await {
                    warn!(error = %r, "cannot release the claimed products (they come free when the connection closes)");
                }
                return Err(e);
            }
        };
        claim.finish(&results).await?;
        report.links += n as u64;
        report.done += results.done.len() as u64;
        report.failed += results.dead.len() as u64;
        report.retrying += results.retry.len() as u64;
        for d in &results.dead {
            warn!(kind = %d.reason.kind, reason = %d.reason.message, "product link dead-lettered");
        }
        Ok((n, report))
    }

    /// Links until nothing is ready. Links waiting for a retry are left; products another
    /// linker holds are waited for (polling every 20 ms, at most 30 s in a row), so that what
    /// was ready when this was called is linked when it returns.
    pub async fn link_pending(&self) -> Result<LinkReport, EngineError> {
        const POLL: Duration = Duration::from_millis(20);
        const MAX_WAIT: Duration = Duration::from_secs(30);
        let mut total = LinkReport::default();
        let mut waited = Duration::ZERO;
        loop {
            let (n, report) = self.link_once().await?;
            total += &report;
            if n > 0 {
                waited = Duration::ZERO;
                continue;
            }
            if report.busy == 0 || waited >= MAX_WAIT {
                return Ok(total);
            }
            tokio::time::sleep(POLL).await;
            waited += POLL;
        }
    }

    /// Runs a linker until `shutdown` is cancelled: links what is ready, then waits until links
    /// are recorded in this process or `idle` passes (other processes' links, retries coming
    /// due). Errors are logged and retried after a pause.
    pub async fn run_linker(&self, idle: Duration, shutdown: CancellationToken) {
        info!("product linker started");
        let mut pause = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let wait = match self.link_pending().await {
                Ok(r) => {
                    if r.links > 0 {
                        info!(
                            links = r.links,
                            added = r.added,
                            removed = r.removed,
                            products_written = r.products_written,
                            failed = r.failed,
                            retrying = r.retrying,
                            "product links done"
                        );
                    }
                    pause = Duration::from_millis(500);
                    idle
                }
                Err(e) => {
                    warn!(error = %e, pause_ms = pause.as_millis() as u64, "linking round failed; pausing");
                    let p = pause;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    p
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.link_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("product linker stopped");
    }

    /// Starts a linker in the background that links whenever links are recorded in this
    /// process (after each written batch). [`Linker::finish`] stops it and links what is left.
    pub fn start_linker(&self) -> Linker {
        let engine = self.clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut total = LinkReport::default();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = engine.link_wake.notified() => {}
                }
                match engine.link_pending().await {
                    Ok(r) => total += &r,
                    Err(e) => warn!(error = %e, "linking round failed; the links stay pending"),
                }
            }
            total
        });
        Linker {
            engine: self.clone(),
            stop,
            task,
        }
    }

    /// Applies claimed links: one search for the products, one NDJSON write for those that
    /// change. Returns the outcome of every link.
    async fn apply_links(
        &self,
        links: &[PendingLink],
        report: &mut LinkReport,
    ) -> Result<LinkResults, EngineError> {
        let mut results = LinkResults::default();
        let mut by_product: BTreeMap<&str, ProductWork<'_>> = BTreeMap::new();
        for l in links {
            by_product
                .entry(l.request.target.product.as_str())
                .or_insert_with(|| ProductWork { links: Vec::new() })
                .links
                .push(l);
        }
        let identifiers: Vec<String> = by_product.keys().map(|p| (*p).to_owned()).collect();
        let mut attributes: Vec<String> = links
            .iter()
            .map(|l| l.request.target.attribute.clone())
            .collect();
        attributes.sort();
        attributes.dedup();
        report.pim_reads += identifiers.len().div_ceil(100) as u64;
        let products = match self
            .pim
            .products_by_identifiers(&identifiers, Some(&attributes))
            .await
        {
            Ok(p) => p,
            Err(e @ (AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                let message = format!("cannot read the products: {e}");
                for l in links {
                    self.link_failed(l, &e, &message, &mut results);
                }
                return Ok(results);
            }
        };
        let id_attr = self.pim.config().product_identifier_attribute.clone();
        let found: HashMap<String, &Value> = products
            .iter()
            .filter_map(|p| crate::enrich::format::product_identifier(p, &id_attr).map(|i| (i, p)))
            .collect();

        let mut lines: Vec<Value> = Vec::new();
        let mut line_links: Vec<Vec<&PendingLink>> = Vec::new();
        let mut line_uuids: Vec<String> = Vec::new();
        for (identifier, work) in &by_product {
            let Some(product) = found.get(*identifier) else {
                for l in &work.links {
                    match l.request.op {
                        // Nothing to take a code out of.
                        LinkOp::Remove => results.done.push(l.id),
                        LinkOp::Add => results.dead.push(LinkDead {
                            id: l.id,
                            change: link_change(&l.request),
                            reason: reason(
                                "product_missing",
                                format!(
                                    "cannot link asset `{}` (family `{}`) to product `{identifier}`: the PIM has no product whose `{id_attr}` is `{identifier}`",
                                    l.request.code, l.request.family
                                ),
                            ),
                        }),
                    }
                }
                continue;
            };
            let Some(uuid) = product.get("uuid").and_then(Value::as_str) else {
                for l in &work.links {
                    let e = AkeneoError::Protocol {
                        status: 200,
                        message: "a product without uuid".into(),
                    };
                    self.link_failed(
                        l,
                        &e,
                        "the PIM returned the product without a uuid",
                        &mut results,
                    );
                }
                continue;
            };
            // Per value (attribute, locale, scope): the current codes, then the links in order.
            let mut by_value: BTreeMap<ValueKey<'_>, Vec<&PendingLink>> = BTreeMap::new();
            for l in &work.links {
                let t = &l.request.target;
                by_value
                    .entry((
                        t.attribute.as_str(),
                        t.locale.as_deref(),
                        t.scope.as_deref(),
                    ))
                    .or_default()
                    .push(l);
            }
            let mut values = serde_json::Map::new();
            let (mut added, mut removed) = (0u64, 0u64);
            for ((attribute, locale, scope), ls) in &by_value {
                let current = current_codes(product, attribute, *locale, *scope);
                let ops: Vec<(LinkOp, &str)> = ls
                    .iter()
                    .map(|l| (l.request.op, l.request.code.as_str()))
                    .collect();
                let next = merge_codes(&current, &ops);
                if next == current {
                    continue;
                }
                added += next.iter().filter(|c| !current.contains(c)).count() as u64;
                removed += current.iter().filter(|c| !next.contains(c)).count() as u64;
                let entry = values
                    .entry((*attribute).to_owned())
                    .or_insert_with(|| json!([]));
                if let Some(list) = entry.as_array_mut() {
                    list.push(json!({"locale": locale, "scope": scope, "data": next}));
                }
            }
            if values.is_empty() {
                report.products_unchanged += 1;
                results.done.extend(work.links.iter().map(|l| l.id));
                continue;
            }
            report.added += added;
            report.removed += removed;
            lines.push(json!({"uuid": uuid, "values": values}));
            line_links.push(work.links.clone());
            line_uuids.push(uuid.to_owned());
        }
        if lines.is_empty() {
            return Ok(results);
        }

        report.pim_writes += lines.len().div_ceil(100) as u64;
        let written = match self.pim.upsert_products(&lines).await {
            Ok(r) => r,
            Err(e @ (AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                let message = format!("cannot write the products: {e}");
                for l in line_links.iter().flatten() {
                    self.link_failed(l, &e, &message, &mut results);
                }
                return Ok(results);
            }
        };
        for r in written {
            let Some(ls) = line_links.get(r.index) else {
                continue;
            };
            let uuid = &line_uuids[r.index];
            match r.outcome {
                ItemOutcome::Updated => {
                    report.products_written += 1;
                    results.done.extend(ls.iter().map(|l| l.id));
                }
                ItemOutcome::Created => {
                    // The product was deleted between the read and the write, and the upsert
                    // made a new one with only our value: take that one away again.
                    if let Err(e) = self.pim.delete_product(uuid).await {
                        warn!(uuid = %uuid, error = %e, "a product deleted while being linked was re-created by the link's write and cannot be deleted again");
                    }
                    for l in ls {
                        results.dead.push(LinkDead {
                            id: l.id,
                            change: link_change(&l.request),
                            reason: reason(
                                "product_missing",
                                format!(
                                    "cannot link asset `{}` to product `{}`: the product was deleted while it was being linked",
                                    l.request.code, l.request.target.product
                                ),
                            ),
                        });
                    }
                }
                ItemOutcome::Failed(f) if f.permanent => {
                    for l in ls {
                        results.dead.push(LinkDead {
                            id: l.id,
                            change: link_change(&l.request),
                            reason: DeadLetterReason {
                                kind: "pim_rejected".into(),
                                message: format!(
                                    "the PIM refused to link asset `{}` to product `{}` (attribute `{}`): {}",
                                    l.request.code,
                                    l.request.target.product,
                                    l.request.target.attribute,
                                    f.message
                                ),
                                pim_status: Some(f.status),
                                pim_message: Some(f.message.clone()),
                                pim_errors: f.errors.clone(),
                            },
                        });
                    }
                }
                ItemOutcome::Failed(f) => {
                    let message = format!("PIM status {}: {}", f.status, f.message);
                    for l in ls {
                        self.retry_link(l, &message, &mut results);
                    }
                }
            }
        }
        Ok(results)
    }

    /// A failed request for `l`: retried later when the failure is transient, else
    /// dead-lettered.
    fn link_failed(
        &self,
        l: &PendingLink,
        e: &AkeneoError,
        message: &str,
        results: &mut LinkResults,
    ) {
        if e.is_transient() {
            self.retry_link(l, message, results);
        } else {
            results.dead.push(LinkDead {
                id: l.id,
                change: link_change(&l.request),
                reason: DeadLetterReason {
                    kind: "pim_request_rejected".into(),
                    message: message.to_owned(),
                    pim_status: e.status(),
                    pim_message: Some(e.message()),
                    pim_errors: None,
                },
            });
        }
    }

    fn retry_link(&self, l: &PendingLink, message: &str, results: &mut LinkResults) {
        let attempts = l.attempts + 1;
        if attempts >= self.options.max_attempts {
            results.dead.push(LinkDead {
                id: l.id,
                change: link_change(&l.request),
                reason: reason(
                    "retries_exhausted",
                    format!("gave up after {attempts} attempts; last error: {message}"),
                ),
            });
        } else {
            results.retry.push(LinkRetry {
                id: l.id,
                error: message.to_owned(),
                delay: self.options.backoff(l.attempts),
            });
        }
    }
}

/// A linker running in the background of a `sync` pass ([`Engine::start_linker`]).
pub struct Linker {
    engine: Engine,
    stop: CancellationToken,
    task: JoinHandle<LinkReport>,
}

impl Linker {
    /// Stops the background linker and links what is still ready. Returns everything it did.
    pub async fn finish(self) -> Result<LinkReport, EngineError> {
        self.stop.cancel();
        let mut total = self
            .task
            .await
            .map_err(|e| EngineError::Task(e.to_string()))?;
        total += &self.engine.link_pending().await?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merging_appends_in_order_without_duplicates_and_removes() {
        let current = codes(&["manual", "a"]);
        assert_eq!(
            merge_codes(
                &current,
                &[(LinkOp::Add, "b"), (LinkOp::Add, "a"), (LinkOp::Add, "c")]
            ),
            codes(&["manual", "a", "b", "c"])
        );
        assert_eq!(
            merge_codes(&current, &[(LinkOp::Add, "b"), (LinkOp::Remove, "b")]),
            current
        );
        assert_eq!(
            merge_codes(&current, &[(LinkOp::Remove, "a"), (LinkOp::Add, "a")]),
            codes(&["manual", "a"])
        );
        assert_eq!(
            merge_codes(&current, &[(LinkOp::Remove, "manual")]),
            codes(&["a"])
        );
        assert!(merge_codes(&[], &[(LinkOp::Remove, "x")]).is_empty());
    }

    #[test]
    fn current_codes_pick_the_value_of_the_locale_and_scope() {
        let p = json!({"values": {"images": [
            {"locale": null, "scope": null, "data": ["a", "b"]},
            {"locale": "en_US", "scope": "ecommerce", "data": ["c"]},
        ]}});
        assert_eq!(current_codes(&p, "images", None, None), codes(&["a", "b"]));
        assert_eq!(
            current_codes(&p, "images", Some("en_US"), Some("ecommerce")),
            codes(&["c"])
        );
        assert!(current_codes(&p, "images", Some("fr_FR"), None).is_empty());
        assert!(current_codes(&p, "other", None, None).is_empty());
    }

    #[test]
    fn link_keys_are_unique_per_link() {
        let r = |op, locale: Option<&str>| LinkRequest {
            family: "f".into(),
            dam_id: None,
            code: "c".into(),
            op,
            target: assetbridge_store::LinkTarget {
                product: "P".into(),
                attribute: "a".into(),
                locale: locale.map(str::to_owned),
                scope: None,
            },
        };
        assert_ne!(
            link_key(&r(LinkOp::Add, None)),
            link_key(&r(LinkOp::Remove, None))
        );
        assert_ne!(
            link_key(&r(LinkOp::Add, None)),
            link_key(&r(LinkOp::Add, Some("en_US")))
        );
        assert_eq!(link_key(&r(LinkOp::Add, None)), "add:f:c:P:a::");
    }
}
