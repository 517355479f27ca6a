//! The write path shared by polling and the inbox: map → diff → batch upsert → record outcomes.

use assetbridge_akeneo::{AkeneoError, DeleteOutcome, ItemOutcome};
use assetbridge_core::{content_hash, AssetChange, ChangeKind, ContentHash, PimAsset, PimValue};
use assetbridge_store::{DeadLetterReason, KeyMap, WrittenAsset};
use futures::stream::{self, StreamExt};
use tracing::{debug, warn};

use crate::{DeletionPolicy, Engine, EngineError, FamilyPlan, SyncReport};

/// One change on its way to the PIM, with where it came from.
#[derive(Debug, Clone)]
pub struct WriteItem {
    /// The inbox entry it was claimed from; `None` when it comes straight from a poll page.
    pub inbox_id: Option<i64>,
    /// Attempts made so far (0 for a fresh change).
    pub attempts: u32,
    pub change: AssetChange,
}

impl WriteItem {
    pub fn fresh(change: AssetChange) -> Self {
        Self {
            inbox_id: None,
            attempts: 0,
            change,
        }
    }
}

/// What the upserts of a batch are written with: the hashes the store holds for their codes,
/// and the other DAM assets of the batch written as one of them (see `dedupe`).
#[derive(Clone, Copy)]
struct Batch<'a> {
    known: &'a KeyMap<ContentHash>,
    sharing: &'a [(String, String)],
}

struct Mapped {
    item: WriteItem,
    asset: PimAsset,
    hash: ContentHash,
}

/// What the hash table holds for an asset whose DAM version `asset` was refused for good: never
/// equal to a content hash, and replaced by one when a later write succeeds.
pub(crate) fn dead_marker(asset: &assetbridge_core::DamAsset) -> ContentHash {
    ContentHash(format!("dead-lettered:{}", asset.updated_at.to_rfc3339()))
}

/// What the hash table holds for an asset marked as deleted (`deletions = "mark"`): never equal
/// to a content hash.
pub(crate) fn mark_marker(attribute: &str, value: &serde_json::Value) -> ContentHash {
    ContentHash(format!("{MARK_PREFIX}{attribute}={value}"))
}

const MARK_PREFIX: &str = "marked-deleted:";

pub(crate) fn is_mark_marker(h: &ContentHash) -> bool {
    h.0.starts_with(MARK_PREFIX)
}

fn reason(kind: &str, message: impl Into<String>) -> DeadLetterReason {
    DeadLetterReason {
        kind: kind.to_owned(),
        message: message.into(),
        pim_status: None,
        pim_message: None,
        pim_errors: None,
    }
}

impl Engine {
    /// Writes a batch of changes of one family. Every change ends in exactly one place: written
    /// (hash recorded), unchanged, dead-lettered, or back in the inbox for a retry; the report
    /// counts each. Only errors that make every write pointless (the store is gone, the PIM
    /// refuses our credentials) are returned as `Err`, with nothing recorded for the batch.
    ///
    /// Each call is one `batch` tracing span (family, changes, and the outcome counts once
    /// done), reported to the observer with its duration
    /// ([`SyncObserver::batch_written`](crate::SyncObserver::batch_written)).
    pub async fn write_changes(
        &self,
        plan: &FamilyPlan,
        items: Vec<WriteItem>,
    ) -> Result<SyncReport, EngineError> {
        use tracing::field::Empty;
        use tracing::Instrument;
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "batch",
            family = %plan.code,
            changes = items.len(),
            created = Empty,
            updated = Empty,
            unchanged = Empty,
            deleted = Empty,
            skipped = Empty,
            failed = Empty,
            retrying = Empty,
            pim_writes = Empty,
            ms = Empty,
        );
        let result = self.write_batch(plan, items).instrument(span.clone()).await;
        if let Ok(r) = &result {
            let elapsed = started.elapsed();
            span.record("created", r.created);
            span.record("updated", r.updated);
            span.record("unchanged", r.unchanged);
            span.record("deleted", r.deleted + r.marked);
            span.record("skipped", r.skipped + r.kept);
            span.record("failed", r.failed);
            span.record("retrying", r.retrying);
            span.record("pim_writes", r.pim_writes);
            span.record("ms", elapsed.as_secs_f64() * 1000.0);
            debug!(parent: &span, "batch written");
            self.observer.batch_written(&plan.code, r, elapsed);
        }
        result
    }

    async fn write_batch(
        &self,
        plan: &FamilyPlan,
        items: Vec<WriteItem>,
    ) -> Result<SyncReport, EngineError> {
        let mut report = SyncReport {
            seen: items.len() as u64,
            ..SyncReport::default()
        };
        let mut done: Vec<i64> = Vec::new();
        let mut upserts: Vec<Mapped> = Vec::with_capacity(items.len());
        let mut deletes: Vec<WriteItem> = Vec::new();

        // The asset code of each upsert first, so one store read answers both "what was last
        // written" and "was this very version already dead-lettered".
        let mut coded: Vec<(WriteItem, String)> = Vec::with_capacity(items.len());
        for item in items {
            match &item.change.kind {
                ChangeKind::Upsert { asset } => match plan.mapping.asset_code(asset) {
                    Ok(code) => coded.push((item, code)),
                    Err(e) => {
                        self.fail(item, reason("mapping", e.to_string()), &mut report)
                            .await?;
                    }
                },
                ChangeKind::Delete { .. } => deletes.push(item),
            }
        }
        let coded = self
            .filter_by_product(plan, coded, &mut done, &mut report)
            .await?;
        let codes: Vec<String> = coded.iter().map(|(_, c)| c.clone()).collect();
        let known = if codes.is_empty() {
            KeyMap::default()
        } else {
            self.store.hashes(&plan.code, &codes).await?
        };
        let mut marks: Vec<(String, ContentHash)> = Vec::new();
        for (item, code) in coded {
            let ChangeKind::Upsert { asset } = &item.change.kind else {
                unreachable!("only upserts are coded")
            };
            let marker = dead_marker(asset);
            // A version refused for good is not refused again each time a poll re-reads it
            // (the overlap window): it waits in the dead-letter store for `dlq retry`, which
            // comes through the inbox and so is not skipped here.
            if item.inbox_id.is_none() && known.get(&code) == Some(&marker) {
                report.unchanged += 1;
                continue;
            }
            match plan.mapping.map_coded(asset, code.clone()) {
                Ok(pim) => {
                    let hash = content_hash(&pim);
                    upserts.push(Mapped {
                        item,
                        asset: pim,
                        hash,
                    });
                }
                Err(e) => {
                    marks.push((code, marker));
                    self.fail(item, reason("mapping", e.to_string()), &mut report)
                        .await?;
                }
            }
        }

        // Two changes of one asset code in a batch: the newest wins, the other is done.
        let mut sharing = Vec::new();
        let upserts = self.dedupe(upserts, &mut done, &mut sharing, &mut report);
        if !sharing.is_empty() && self.options.deletions.needs_codes() {
            // Different DAM assets written as one code: each holds the PIM asset, so that the
            // deletion of one of them does not delete it (see `keep_shared_codes`); one that
            // held another code before is renamed (see `rename`).
            let renames = self.detect_renames(plan, &mut sharing).await?;
            self.store.put_asset_codes(&plan.code, &sharing).await?;
            self.retire_former_codes(plan, renames).await?;
        }

        if !upserts.is_empty() {
            let batch = Batch {
                known: &known,
                sharing: &sharing,
            };
            self.write_upserts(plan, upserts, batch, &mut marks, &mut done, &mut report)
                .await?;
        }
        if !marks.is_empty() {
            self.store.put_hash_markers(&plan.code, &marks).await?;
        }
        if !deletes.is_empty() {
            self.write_deletes(plan, deletes, &mut done, &mut report)
                .await?;
        }
        if !done.is_empty() {
            self.store.complete(&done).await?;
        }
        // Per-minute outcome counters for `assetbridge status` (the recent error rate), stored
        // at most once a second (see `OutcomeTally`).
        self.count_outcomes(
            &plan.code,
            report.written(),
            report.failed + report.retrying,
        )
        .await;
        Ok(report)
    }

    /// The family's product filter, if any: keeps the upserts whose product exists in the PIM
    /// (one search per 100 SKUs not in the cache); the others are skipped and done.
    async fn filter_by_product(
        &self,
        plan: &FamilyPlan,
        coded: Vec<(WriteItem, String)>,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<Vec<(WriteItem, String)>, EngineError> {
        let Some(filter) = self.product_filters.get(&plan.code).cloned() else {
            return Ok(coded);
        };
        let skus: Vec<Option<String>> = coded
            .iter()
            .map(|(item, _)| match &item.change.kind {
                ChangeKind::Upsert { asset } => filter.sku(asset),
                ChangeKind::Delete { .. } => None,
            })
            .collect();
        let wanted: std::collections::BTreeSet<String> = skus.iter().flatten().cloned().collect();
        let attribute = filter.config().attribute.clone();
        let pim = self.pim.clone();
        let found = filter
            .existing(wanted, |ids| async move {
                let attrs = [attribute.clone()];
                let products = pim.products_by_identifiers(&ids, Some(&attrs)).await?;
                Ok::<_, AkeneoError>(
                    products
                        .iter()
                        .filter_map(|p| crate::enrich::format::product_identifier(p, &attribute))
                        .collect(),
                )
            })
            .await;
        let found = match found {
            Ok(f) => f,
            Err(e @ (AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                // The question could not be answered: every asset that needed it waits for a
                // retry (never skipped on a guess).
                let message = format!("cannot check which products exist: {e}");
                for (item, _) in coded {
                    self.retry(item, &message, report).await?;
                }
                return Ok(Vec::new());
            }
        };
        let mut kept = Vec::with_capacity(coded.len());
        for ((item, code), sku) in coded.into_iter().zip(skus) {
            let why = match &sku {
                Some(s) if found.contains(s) => {
                    kept.push((item, code));
                    continue;
                }
                Some(s) => format!("no product `{s}` in the PIM"),
                None => format!("no SKU at `{}`", filter.config().sku_from),
            };
            report.skipped += 1;
            debug!(family = %plan.code, code = %code, reason = %why, "asset skipped by the product filter");
            if let Some(id) = item.inbox_id {
                done.push(id);
            }
        }
        Ok(kept)
    }

    /// Keeps the newest change of each asset code. When the two are different DAM assets
    /// whose mappings give one code, the other's (DAM id, code) goes to `sharing`.
    fn dedupe(
        &self,
        upserts: Vec<Mapped>,
        done: &mut Vec<i64>,
        sharing: &mut Vec<(String, String)>,
        report: &mut SyncReport,
    ) -> Vec<Mapped> {
        let mut index: KeyMap<usize> =
            KeyMap::with_capacity_and_hasher(upserts.len(), Default::default());
        let mut kept: Vec<Option<Mapped>> = Vec::with_capacity(upserts.len());
        for m in upserts {
            let newer_than = |o: &Mapped| match (&m.item.change.kind, &o.item.change.kind) {
                (ChangeKind::Upsert { asset: a }, ChangeKind::Upsert { asset: b }) => {
                    a.updated_at >= b.updated_at
                }
                _ => true,
            };
            match index.get(&m.asset.code) {
                Some(&i) => {
                    let old = kept[i].take().expect("indexed entry present");
                    let (winner, loser) = if newer_than(&old) { (m, old) } else { (old, m) };
                    if let Some(id) = loser.item.inbox_id {
                        done.push(id);
                    }
                    if loser.item.change.dam_id() != winner.item.change.dam_id() {
                        sharing.push((
                            loser.item.change.dam_id().to_owned(),
                            loser.asset.code.clone(),
                        ));
                    }
                    report.unchanged += 1;
                    kept[i] = Some(winner);
                }
                None => {
                    index.insert(m.asset.code.clone(), kept.len());
                    kept.push(Some(m));
                }
            }
        }
        kept.into_iter().flatten().collect()
    }

    async fn write_upserts(
        &self,
        plan: &FamilyPlan,
        upserts: Vec<Mapped>,
        batch: Batch<'_>,
        marks: &mut Vec<(String, ContentHash)>,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let known = batch.known;
        let mut changed: Vec<Mapped> = Vec::with_capacity(upserts.len());
        let mut relink: Vec<(assetbridge_core::AssetChange, String)> = Vec::new();
        for m in upserts {
            if known.get(&m.asset.code) == Some(&m.hash) {
                report.unchanged += 1;
                if let Some(id) = m.item.inbox_id {
                    done.push(id);
                }
                if self.product_links.contains_key(&plan.code) {
                    relink.push((m.item.change, m.asset.code));
                }
            } else {
                changed.push(m);
            }
        }
        // Unchanged assets whose products changed get their links (no PIM call).
        self.relink_unchanged(plan, relink).await?;
        if changed.is_empty() {
            return Ok(());
        }

        if let DeletionPolicy::Mark { attribute, .. } = &self.options.deletions {
            // An asset marked as deleted that comes back in the DAM: empty the mark (unless
            // the mapping writes that attribute itself). The content hash stays the mapping's.
            for m in &mut changed {
                if known.get(&m.asset.code).is_some_and(is_mark_marker)
                    && !m.asset.values.contains_key(attribute)
                {
                    m.asset.push_value(
                        attribute,
                        PimValue {
                            locale: None,
                            channel: None,
                            data: serde_json::Value::Null,
                        },
                    );
                }
            }
        }
        let mut renames = crate::rename::Renames::default();
        if self.options.deletions.needs_codes() {
            // Record which code each DAM id is written as *before* writing: if the process dies
            // between the PIM's answer and `record_written` below, a later deletion in the DAM
            // still finds the PIM asset. (A code recorded for a write that then fails is
            // harmless: its deletion answers 404, counted as gone.)
            // A DAM id recorded under another code is renamed: its former code is recorded
            // too, under a holder of its own (see `rename`).
            let mut codes: Vec<(String, String)> = changed
                .iter()
                .map(|m| (m.item.change.dam_id().to_owned(), m.asset.code.clone()))
                .collect();
            renames = self.detect_renames(plan, &mut codes).await?;
            self.store.put_asset_codes(&plan.code, &codes).await?;
        }
        // The values move into the request (no copy of each asset); what is needed after the
        // PIM's answer is the code, the change and the hash.
        let assets: Vec<PimAsset> = changed
            .iter_mut()
            .map(|m| PimAsset {
                code: m.asset.code.clone(),
                values: std::mem::take(&mut m.asset.values),
            })
            .collect();
        report.pim_writes += assets.len().div_ceil(100) as u64;
        let results = match self.pim.upsert_assets(&plan.code, &assets).await {
            Ok(results) => results,
            Err(e) => {
                self.retire_former_codes(plan, renames).await?;
                return self.whole_batch_failed(changed, e, report).await;
            }
        };
        drop(assets);

        let mut written: Vec<WrittenAsset> = Vec::with_capacity(changed.len());
        let mut linked = Vec::new();
        let mut by_code: KeyMap<Mapped> = changed
            .into_iter()
            .map(|m| (m.asset.code.clone(), m))
            .collect();
        for r in results {
            let Some(m) = by_code.remove(&r.code) else {
                warn!(family = %plan.code, code = %r.code, "the PIM answered for an asset code that was not sent");
                continue;
            };
            match r.outcome {
                ItemOutcome::Created | ItemOutcome::Updated => {
                    if matches!(r.outcome, ItemOutcome::Created) {
                        report.created += 1;
                    } else {
                        report.updated += 1;
                    }
                    self.collect_links(plan, &m.item.change, &m.asset.code, &mut linked);
                    written.push(WrittenAsset {
                        dam_id: m.item.change.dam_id().to_owned(),
                        code: m.asset.code,
                        hash: m.hash,
                        // Drops pending retries of older versions (see `WrittenAsset::version`).
                        version: match &m.item.change.kind {
                            ChangeKind::Upsert { asset } => Some(asset.updated_at),
                            ChangeKind::Delete { .. } => None,
                        },
                    });
                    if let Some(id) = m.item.inbox_id {
                        done.push(id);
                    }
                }
                ItemOutcome::Failed(f) if f.permanent => {
                    if let ChangeKind::Upsert { asset } = &m.item.change.kind {
                        marks.push((m.asset.code.clone(), dead_marker(asset)));
                    }
                    let why = DeadLetterReason {
                        kind: "pim_rejected".into(),
                        message: format!("the PIM rejected asset `{}`: {}", r.code, f.message),
                        pim_status: Some(f.status),
                        pim_message: Some(f.message.clone()),
                        pim_errors: f.errors.clone(),
                    };
                    self.fail(m.item, why, report).await?;
                }
                ItemOutcome::Failed(f) => {
                    self.retry(
                        m.item,
                        &format!("PIM status {}: {}", f.status, f.message),
                        report,
                    )
                    .await?;
                }
            }
        }
        // Anything the PIM did not answer for is retried: never assume it was written.
        for (_, m) in by_code {
            self.retry(m.item, "the PIM gave no result for this asset", report)
                .await?;
        }
        if !written.is_empty() {
            // With the family's pending product links, in the same transaction.
            self.record_written_linked(plan, &written, linked).await?;
            self.release_marked_codes(plan, &written, batch).await?;
        }
        self.retire_former_codes(plan, renames).await
    }

    /// `deletions = "mark"` keeps a marked asset's DAM id → code entry (a tombstone read again
    /// then finds the mark and writes nothing). A code written over its mark, by whichever DAM
    /// asset, no longer belongs to those marked DAM ids: a mark is written only once nobody
    /// else held the code, so every other DAM id recorded under it is a deleted one. They are
    /// forgotten, or the deletion of the new writer would take them for sharers and keep the
    /// PIM asset unmarked (see `keep_shared_codes`).
    async fn release_marked_codes(
        &self,
        plan: &FamilyPlan,
        written: &[WrittenAsset],
        batch: Batch<'_>,
    ) -> Result<(), EngineError> {
        let over_marks: Vec<&WrittenAsset> = written
            .iter()
            .filter(|w| batch.known.get(&w.code).is_some_and(is_mark_marker))
            .collect();
        if over_marks.is_empty() {
            return Ok(());
        }
        let codes: Vec<String> = over_marks.iter().map(|w| w.code.clone()).collect();
        let holders = self.store.dam_ids_by_code(&plan.code, &codes).await?;
        let mut marked_ids = Vec::new();
        for w in over_marks {
            for id in holders.get(&w.code).into_iter().flatten() {
                // Not the writer, nor another DAM asset of this batch written as the code.
                let live =
                    *id == w.dam_id || batch.sharing.iter().any(|(d, c)| d == id && *c == w.code);
                if !live && crate::rename::holder_of(id, &w.code).is_none() {
                    marked_ids.push(id.clone());
                }
            }
        }
        if !marked_ids.is_empty() {
            self.store
                .remove_asset_codes(&plan.code, &marked_ids)
                .await?;
        }
        Ok(())
    }

    /// The whole batch request failed (after the client's own retries).
    async fn whole_batch_failed(
        &self,
        changed: Vec<Mapped>,
        e: AkeneoError,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        if matches!(e, AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_)) {
            // Our credentials or configuration are wrong: every write would fail the same way.
            return Err(e.into());
        }
        let transient = e.is_transient();
        let message = e.to_string();
        for m in changed {
            if transient {
                self.retry(m.item, &message, report).await?;
            } else {
                self.fail(
                    m.item,
                    reason("pim_request_rejected", message.clone()),
                    report,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn write_deletes(
        &self,
        plan: &FamilyPlan,
        deletes: Vec<WriteItem>,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let dam_ids: Vec<String> = deletes
            .iter()
            .map(|d| d.change.dam_id().to_owned())
            .collect();
        let codes = self.store.asset_codes(&plan.code, &dam_ids).await?;
        let mut to_delete = Vec::new();
        for d in deletes {
            match codes.get(d.change.dam_id()) {
                Some(code) if self.options.deletions.needs_codes() => {
                    to_delete.push((d, code.clone()))
                }
                Some(code) => {
                    report.kept += 1;
                    debug!(family = %plan.code, code = %code, "asset deleted in the DAM kept in the PIM (deletions = \"keep\")");
                    if let Some(id) = d.inbox_id {
                        done.push(id);
                    }
                }
                None => {
                    // Never written by us: nothing to delete.
                    report.kept += 1;
                    if let Some(id) = d.inbox_id {
                        done.push(id);
                    }
                }
            }
        }
        // Former codes of renamed assets go only once the DAM confirms it (see `rename`).
        let to_delete = self
            .check_retirements(plan, to_delete, done, report)
            .await?;
        let to_delete = self
            .keep_shared_codes(plan, to_delete, done, report)
            .await?;
        if to_delete.is_empty() {
            return Ok(());
        }
        if let DeletionPolicy::Mark { attribute, value } = &self.options.deletions {
            return self
                .write_marks(plan, to_delete, attribute, value, done, report)
                .await;
        }
        report.pim_writes += to_delete.len() as u64;
        let family = plan.code.as_str();
        let results: Vec<(WriteItem, String, Result<DeleteOutcome, AkeneoError>)> =
            stream::iter(to_delete)
                .map(|(d, code)| async move {
                    let r = self.pim.delete_asset(family, &code).await;
                    (d, code, r)
                })
                .buffer_unordered(self.options.pages_in_flight.max(1))
                .collect()
                .await;
        let mut forgotten = Vec::new();
        for (d, code, r) in results {
            match r {
                Ok(_) => {
                    // Deleted now, or already gone (404): either way the PIM no longer holds it.
                    report.deleted += 1;
                    forgotten.push((d.change.dam_id().to_owned(), code));
                    if let Some(id) = d.inbox_id {
                        done.push(id);
                    }
                }
                Err(e @ (AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))) => {
                    return Err(e.into())
                }
                Err(e) if e.is_transient() => self.retry(d, &e.to_string(), report).await?,
                Err(e) => {
                    self.fail(d, reason("pim_delete_rejected", e.to_string()), report)
                        .await?
                }
            }
        }
        if !forgotten.is_empty() {
            // Hashes and codes go together: a tombstone seen again (poll overlap) then finds
            // no code, so there is nothing more to delete.
            // With the removal of their product links, in the same transaction.
            self.forget_linked(plan, &forgotten).await?;
            self.rewrite_if_claimed_meanwhile(plan, &forgotten).await?;
        }
        Ok(())
    }

    /// A DAM asset written as a deleted code while the deletion was under way (a new file
    /// given the name of one just deleted or renamed, in a batch beside this one) may have had
    /// its write land before the `DELETE` and its hash recorded after: its hash is forgotten,
    /// so the next read of it (the poll's overlap window covers a change that recent) writes
    /// it again rather than taking it for unchanged.
    async fn rewrite_if_claimed_meanwhile(
        &self,
        plan: &FamilyPlan,
        forgotten: &[(String, String)],
    ) -> Result<(), EngineError> {
        let mut codes: Vec<String> = forgotten.iter().map(|(_, c)| c.clone()).collect();
        codes.sort_unstable();
        codes.dedup();
        let holders = self.store.dam_ids_by_code(&plan.code, &codes).await?;
        let claimed: Vec<String> = holders
            .into_iter()
            .filter(|(code, ids)| {
                ids.iter()
                    .any(|id| crate::rename::holder_of(id, code).is_none())
            })
            .map(|(code, _)| code)
            .collect();
        if !claimed.is_empty() {
            warn!(family = %plan.code, codes = ?claimed, "written again by another DAM asset while being deleted: written again on its next read");
            self.store.remove_hashes(&plan.code, &claimed).await?;
        }
        Ok(())
    }

    /// Two DAM assets whose mappings give one asset code share one PIM asset: deleting one of
    /// them in the DAM must not delete (or mark) it while the other is still written as that
    /// code. Such a deletion only forgets the deleted DAM id's code and counts as `kept`; the
    /// last holder's deletion (or both in one batch) deletes the PIM asset. One store read
    /// per batch of deletions.
    async fn keep_shared_codes(
        &self,
        plan: &FamilyPlan,
        to_delete: Vec<(WriteItem, String)>,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<Vec<(WriteItem, String)>, EngineError> {
        if to_delete.is_empty() {
            return Ok(to_delete);
        }
        let mut codes: Vec<String> = to_delete.iter().map(|(_, c)| c.clone()).collect();
        codes.sort_unstable();
        codes.dedup();
        let holders = self.store.dam_ids_by_code(&plan.code, &codes).await?;
        let leaving: std::collections::HashSet<String> = to_delete
            .iter()
            .map(|(d, _)| d.change.dam_id().to_owned())
            .collect();
        let held_elsewhere = |ids: Option<&Vec<String>>, code: &str| -> Option<String> {
            ids?.iter()
                .find(|id| {
                    !leaving.contains(id.as_str()) && crate::rename::holder_of(id, code).is_none()
                })
                .cloned()
        };
        let mut shared = Vec::new();
        let mut out = Vec::with_capacity(to_delete.len());
        for (d, code) in to_delete {
            if held_elsewhere(holders.get(&code), &code).is_some() {
                shared.push((d, code));
            } else {
                out.push((d, code));
            }
        }
        if shared.is_empty() {
            return Ok(out);
        }
        let released: Vec<String> = shared
            .iter()
            .map(|(d, _)| d.change.dam_id().to_owned())
            .collect();
        self.store.remove_asset_codes(&plan.code, &released).await?;
        // Two sharers deleted at once in different batches each saw the other: now that ours
        // is forgotten, look again. A code nobody else holds any more is deleted after all,
        // its DAM id recorded again first (a failed deletion is retried against it).
        let mut codes: Vec<String> = shared.iter().map(|(_, c)| c.clone()).collect();
        codes.sort_unstable();
        codes.dedup();
        let now = self.store.dam_ids_by_code(&plan.code, &codes).await?;
        let mut back = Vec::new();
        for (d, code) in shared {
            match held_elsewhere(now.get(&code), &code) {
                Some(other) => {
                    report.kept += 1;
                    tracing::info!(
                        family = %plan.code,
                        code = %code,
                        dam_id = %d.change.dam_id(),
                        other = %other,
                        "asset deleted in the DAM kept in the PIM: another DAM asset is written as the same code"
                    );
                    if let Some(id) = d.inbox_id {
                        done.push(id);
                    }
                }
                None => {
                    back.push((d.change.dam_id().to_owned(), code.clone()));
                    out.push((d, code));
                }
            }
        }
        if !back.is_empty() {
            self.store.put_asset_codes(&plan.code, &back).await?;
        }
        Ok(out)
    }

    /// `deletions = "mark"`: upserts each deleted asset with only the mark value (one batch
    /// request per 100), instead of deleting it. A mark already written (its marker in the hash
    /// table) is not written again when a poll re-reads the tombstone.
    async fn write_marks(
        &self,
        plan: &FamilyPlan,
        to_mark: Vec<(WriteItem, String)>,
        attribute: &str,
        value: &serde_json::Value,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let marker = mark_marker(attribute, value);
        let codes: Vec<String> = to_mark.iter().map(|(_, c)| c.clone()).collect();
        let known = self.store.hashes(&plan.code, &codes).await?;
        let mut by_code: KeyMap<WriteItem> =
            KeyMap::with_capacity_and_hasher(to_mark.len(), Default::default());
        for (d, code) in to_mark {
            if known.get(&code) == Some(&marker) {
                report.unchanged += 1;
                if let Some(id) = d.inbox_id {
                    done.push(id);
                }
                continue;
            }
            // Two tombstones of one asset in a batch: one mark.
            if let Some(old) = by_code.insert(code, d) {
                report.unchanged += 1;
                if let Some(id) = old.inbox_id {
                    done.push(id);
                }
            }
        }
        if by_code.is_empty() {
            return Ok(());
        }
        let assets: Vec<PimAsset> = by_code
            .keys()
            .map(|code| {
                let mut a = PimAsset::new(code.clone());
                a.push_value(
                    attribute,
                    PimValue {
                        locale: None,
                        channel: None,
                        data: value.clone(),
                    },
                );
                a
            })
            .collect();
        report.pim_writes += assets.len().div_ceil(100) as u64;
        let results = match self.pim.upsert_assets(&plan.code, &assets).await {
            Ok(results) => results,
            Err(e @ (AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))) => {
                return Err(e.into())
            }
            Err(e) => {
                let transient = e.is_transient();
                let message = e.to_string();
                for (_, d) in by_code {
                    if transient {
                        self.retry(d, &message, report).await?;
                    } else {
                        self.fail(d, reason("pim_request_rejected", message.clone()), report)
                            .await?;
                    }
                }
                return Ok(());
            }
        };
        let mut marks = Vec::new();
        let mut retired = Vec::new();
        for r in results {
            let Some(d) = by_code.remove(&r.code) else {
                warn!(family = %plan.code, code = %r.code, "the PIM answered for an asset code that was not sent");
                continue;
            };
            match r.outcome {
                ItemOutcome::Created | ItemOutcome::Updated => {
                    report.marked += 1;
                    debug!(family = %plan.code, code = %r.code, attribute, "asset deleted in the DAM marked in the PIM");
                    if crate::rename::holder_of(d.change.dam_id(), &r.code).is_some() {
                        // A former code, marked: its holder has done its work.
                        retired.push(d.change.dam_id().to_owned());
                    }
                    marks.push((r.code, marker.clone()));
                    if let Some(id) = d.inbox_id {
                        done.push(id);
                    }
                }
                ItemOutcome::Failed(f) if f.permanent => {
                    let why = DeadLetterReason {
                        kind: "pim_mark_rejected".into(),
                        message: format!(
                            "the PIM rejected the deletion mark `{attribute}` of asset `{}`: {}",
                            r.code, f.message
                        ),
                        pim_status: Some(f.status),
                        pim_message: Some(f.message.clone()),
                        pim_errors: f.errors.clone(),
                    };
                    self.fail(d, why, report).await?;
                }
                ItemOutcome::Failed(f) => {
                    self.retry(
                        d,
                        &format!("PIM status {}: {}", f.status, f.message),
                        report,
                    )
                    .await?;
                }
            }
        }
        for (_, d) in by_code {
            self.retry(d, "the PIM gave no result for this asset", report)
                .await?;
        }
        if !marks.is_empty() {
            // The code entry stays (the asset still exists in the PIM); the hash becomes the
            // marker, so the asset is written in full when it comes back in the DAM.
            self.store.put_hash_markers(&plan.code, &marks).await?;
        }
        if !retired.is_empty() {
            self.store.remove_asset_codes(&plan.code, &retired).await?;
        }
        Ok(())
    }

    /// A permanent failure: to the dead-letter store, with its reason.
    pub(crate) async fn fail(
        &self,
        item: WriteItem,
        why: DeadLetterReason,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        report.failed += 1;
        warn!(family = %item.change.family, dam_id = %item.change.dam_id(), kind = %why.kind, reason = %why.message, "change dead-lettered");
        match item.inbox_id {
            Some(id) => self.store.dead_letter(id, &why).await?,
            None => {
                self.store.add_dead_letter(&item.change, &why).await?;
            }
        }
        Ok(())
    }

    /// A transient failure: back to the inbox with backoff, or to the dead-letter store once the
    /// attempts are used up.
    pub(crate) async fn retry(
        &self,
        item: WriteItem,
        error: &str,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let attempts = item.attempts + 1;
        if attempts >= self.options.max_attempts {
            let why = reason(
                "retries_exhausted",
                format!("gave up after {attempts} attempts; last error: {error}"),
            );
            return self.fail(item, why, report).await;
        }
        report.retrying += 1;
        match item.inbox_id {
            Some(id) => {
                self.store
                    .retry_later(id, error, self.options.backoff(item.attempts))
                    .await?
            }
            None => {
                self.store
                    .enqueue(std::slice::from_ref(&item.change))
                    .await?;
            }
        }
        Ok(())
    }
}
