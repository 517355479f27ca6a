//! Reconciliation: a full pass that compares the DAM and the PIM and repairs drift, streaming
//! both sides with memory bounded by configuration, never by the size of either.
//!
//! **Phase 1 — the DAM.** The family's whole DAM listing is streamed page by page, exactly as
//! a polling pass with `full` (same page tasks, same cursor rules: the cursor only moves
//! forward, past pages fully handled). For each page:
//!
//! - every asset code met (live assets, and the codes of tombstones the state knows) is
//!   marked "seen in pass N" in the store ([`Store::mark_seen`](assetbridge_store::Store::mark_seen),
//!   one statement per page);
//! - assets whose mapped content hash equals the last written one — which a normal pass would
//!   skip — are read from the PIM (`code IN`, one search per page) and compared with what the
//!   mapping produces, with the dry run's field diff: an asset edited in the PIM (**drift**) or
//!   gone from it has its hash forgotten, so the write path below writes it again;
//! - an asset whose hash differs from the last written one although the cursor had passed its
//!   DAM timestamp is a **missed change** (an event that never arrived): written again like any
//!   change, and reported as such;
//! - then the page goes through the normal write path ([`Engine::write_changes`]): same diff by
//!   content hash, same batches, same outcomes (dead letters, retries), tombstones by the
//!   deletion policy.
//!
//! **Phase 2 — the PIM.** Only when phase 1 read the listing to its end, the family's PIM
//! assets are streamed (`search_after` pages of 100) and each page's codes are looked up in
//! the store ([`Store::reconcile_lookup`](assetbridge_store::Store::reconcile_lookup), one
//! query per page):
//!
//! - seen in this pass → done in phase 1;
//! - written by the connector (its DAM id → code map) but not seen → **deleted in the DAM**
//!   (absent from the listing, no tombstone): the deletion policy applies through the write
//!   path (`keep`: reported and counted as kept, never silently; `delete`; `mark`). Skipped:
//!   assets written after the pass started (a webhook or a poll wrote them meanwhile) and
//!   assets already marked. As a safety, deletions are **not applied** (only reported, as
//!   `held back`) when a DAM asset of the pass had no asset code (a mapping error: its PIM
//!   asset cannot be recognised as seen) or when the DAM listing held no live asset at all
//!   (an empty listing is far likelier a wrong filter than an empty DAM);
//! - never written by the connector → **PIM-only**: reported, left alone (there is no setting
//!   that changes this: assets others put in the PIM are not the connector's to delete).
//!
//! The pass's marks are deleted when it finishes; the report lists the repairs (bounded: the
//! first [`MAX_LISTED`] per family, all counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use assetbridge_akeneo::{to_pim_asset, AssetQuery};
use assetbridge_core::{content_hash, AssetChange, ChangeKind, ContentHash, PimAsset};
use assetbridge_store::ReconcilePass;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::plan::{diff, FieldChange};
use crate::poll::Feed;
use crate::write::{is_mark_marker, mark_marker};
use crate::{DeletionPolicy, Engine, EngineError, FamilyPlan, SyncReport, WriteItem};

/// Repairs listed per family in a [`ReconcileReport`] (all are counted).
pub const MAX_LISTED: usize = 1000;

/// PIM assets compared per store look-up (one PIM page).
const PIM_PAGE: usize = 100;

/// Why an asset was repaired (or reported) by a reconciliation pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// Changed in the DAM before the cursor, with an older version in the state (a missed
    /// event): written again.
    Missed,
    /// Edited in the PIM: its values differ from what the mapping produces. Written again.
    Drift,
    /// Written by the connector, gone from the PIM (deleted there): written again.
    MissingInPim,
    /// In the PIM and written by the connector, absent from the DAM listing: the deletion
    /// policy applies (or, held back, is only reported).
    DeletedInDam,
    /// In the PIM, never written by the connector: reported, left alone.
    PimOnly,
}

/// One line of a reconciliation report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repair {
    pub kind: RepairKind,
    /// The PIM asset code.
    pub code: String,
    /// The DAM id, when known.
    pub dam_id: Option<String>,
    /// What was found and what was done.
    pub reason: String,
    /// For drift: the values the PIM holds (old) and what was written back (new).
    pub changes: Vec<FieldChange>,
}

/// What a reconciliation pass of one family found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    pub family: String,
    /// The pass number in the state store.
    pub pass: i64,
    /// Whether both listings were compared to their end. `false`: the DAM listing was not
    /// read to its end (shutdown, backpressure) or the PIM listing was stopped; deletions were
    /// then not looked for.
    pub complete: bool,
    /// Every write of the pass (the DAM listing through the write path, then the deletions).
    pub report: SyncReport,
    /// Live DAM assets in the family's listing.
    pub dam_assets: u64,
    /// PIM assets of the family listed.
    pub pim_assets: u64,
    /// PIM listing pages read (100 assets each).
    pub pim_pages: u64,
    /// Missed changes found (written again).
    pub missed: u64,
    /// Assets edited in the PIM (written again).
    pub drift: u64,
    /// Assets gone from the PIM (written again).
    pub missing_in_pim: u64,
    /// Assets absent from the DAM listing (deletion policy applied).
    pub deleted_in_dam: u64,
    /// Of those, deletions not applied because the pass could not be sure (see `note`).
    pub held_back: u64,
    /// PIM-only assets (reported, left alone).
    pub pim_only: u64,
    /// DAM assets whose asset code could not be made (mapping errors; dead-lettered).
    pub unmapped: u64,
    /// The first [`MAX_LISTED`] repairs, in the order found.
    pub repairs: Vec<Repair>,
    /// Repairs counted but not listed.
    pub not_listed: u64,
    /// Why deletions were held back or the PIM was not compared, if so.
    pub note: Option<String>,
}

impl ReconcileReport {
    /// Assets the pass repaired or reported (every kind).
    pub fn found(&self) -> u64 {
        self.missed + self.drift + self.missing_in_pim + self.deleted_in_dam + self.pim_only
    }
}

/// The outcome of a reconciliation of the routed listing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutedReconcileReport {
    /// One report per routed family, in configuration order.
    pub families: Vec<ReconcileReport>,
    /// The listing's changes that went to no family (see
    /// [`RoutedReport::unrouted`](crate::RoutedReport::unrouted)).
    pub unrouted: SyncReport,
}

/// The per-family state of a pass, shared by the page tasks of phase 1.
pub(crate) struct FamilyPass {
    pass: ReconcilePass,
    /// Changes with a DAM time before this were behind the cursor's overlap window when the
    /// pass started: a normal poll would not have read them again.
    window: Option<DateTime<Utc>>,
    live: AtomicU64,
    unmapped: AtomicU64,
    log: Mutex<RepairLog>,
}

#[derive(Default)]
struct RepairLog {
    repairs: Vec<Repair>,
    not_listed: u64,
    missed: u64,
    drift: u64,
    missing_in_pim: u64,
    deleted_in_dam: u64,
    held_back: u64,
    pim_only: u64,
}

impl RepairLog {
    fn add(&mut self, family: &str, r: Repair) {
        match r.kind {
            RepairKind::Missed => self.missed += 1,
            RepairKind::Drift => self.drift += 1,
            RepairKind::MissingInPim => self.missing_in_pim += 1,
            RepairKind::DeletedInDam => self.deleted_in_dam += 1,
            RepairKind::PimOnly => self.pim_only += 1,
        }
        debug!(family, code = %r.code, dam_id = ?r.dam_id, kind = ?r.kind, reason = %r.reason, "reconciliation");
        if self.repairs.len() < MAX_LISTED {
            self.repairs.push(r);
        } else {
            self.not_listed += 1;
        }
    }
}

impl FamilyPass {
    fn add(&self, r: Repair) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&self.pass.family, r);
    }
}

/// The passes of one reconciliation, by family.
pub(crate) struct PassMarks {
    by_family: HashMap<String, FamilyPass>,
}

impl PassMarks {
    pub(crate) fn family(&self, code: &str) -> Option<&FamilyPass> {
        self.by_family.get(code)
    }
}

impl Engine {
    /// A reconciliation pass of one family (see the [module docs](self)): `sync --full`.
    pub async fn reconcile_family(
        &self,
        plan: &FamilyPlan,
    ) -> Result<ReconcileReport, EngineError> {
        self.reconcile_family_until(plan, &CancellationToken::new())
            .await
    }

    /// [`reconcile_family`](Self::reconcile_family) that stops early when `stop` is
    /// cancelled (the report then says it is incomplete; no deletion is looked for).
    pub async fn reconcile_family_until(
        &self,
        plan: &FamilyPlan,
        stop: &CancellationToken,
    ) -> Result<ReconcileReport, EngineError> {
        let (mut reports, _) = self
            .reconcile_feed(&Feed::Family(plan.clone()), stop)
            .await?;
        Ok(reports.pop().unwrap_or_default())
    }

    /// A reconciliation pass of the routed listing: one DAM listing for every routed family,
    /// then each family's PIM listing. Without a routed listing, does nothing.
    pub async fn reconcile_routed(&self) -> Result<RoutedReconcileReport, EngineError> {
        self.reconcile_routed_until(&CancellationToken::new()).await
    }

    /// [`reconcile_routed`](Self::reconcile_routed) that stops early when `stop` is cancelled.
    pub async fn reconcile_routed_until(
        &self,
        stop: &CancellationToken,
    ) -> Result<RoutedReconcileReport, EngineError> {
        let Some(routed) = self.routed.clone() else {
            return Ok(RoutedReconcileReport::default());
        };
        let (families, unrouted) = self.reconcile_feed(&Feed::Routed(routed), stop).await?;
        Ok(RoutedReconcileReport { families, unrouted })
    }

    async fn reconcile_feed(
        &self,
        feed: &Feed,
        stop: &CancellationToken,
    ) -> Result<(Vec<ReconcileReport>, SyncReport), EngineError> {
        let families = self.feed_families(feed);
        let key = match feed {
            Feed::Family(p) => p.code.clone(),
            Feed::Routed(_) => crate::poll::ROUTED_LISTING.to_owned(),
        };
        let window = self
            .store
            .cursor(&key)
            .await?
            .map(|c| c.since(self.options.overlap));
        let mut by_family = HashMap::new();
        for p in &families {
            let pass = self.store.begin_reconcile(&p.code).await?;
            info!(family = %p.code, pass = pass.id, "reconciliation: reading the whole DAM listing");
            by_family.insert(
                p.code.clone(),
                FamilyPass {
                    pass,
                    window,
                    live: AtomicU64::new(0),
                    unmapped: AtomicU64::new(0),
                    log: Mutex::new(RepairLog::default()),
                },
            );
        }
        let marks = Arc::new(PassMarks { by_family });
        let outcome = match self.poll_pass(feed, true, stop, Some(marks.clone())).await {
            Ok(o) => o,
            Err(e) => {
                for fp in marks.by_family.values() {
                    if let Err(fe) = self.store.finish_reconcile(fp.pass.id, false).await {
                        warn!(family = %fp.pass.family, error = %fe, "cannot record the end of an interrupted reconciliation");
                    }
                }
                return Err(e);
            }
        };
        let mut reports = Vec::with_capacity(families.len());
        for (family, dam_report) in outcome.reports {
            let Some(plan) = self.family(&family).cloned() else {
                continue;
            };
            let fp = marks.family(&family).expect("a pass per family");
            let mut report = ReconcileReport {
                family: family.clone(),
                pass: fp.pass.id,
                report: dam_report,
                dam_assets: fp.live.load(Ordering::SeqCst),
                unmapped: fp.unmapped.load(Ordering::SeqCst),
                ..ReconcileReport::default()
            };
            let result = if outcome.complete {
                self.reconcile_pim(&plan, fp, stop, &mut report).await
            } else {
                report.note = Some(
                    "the DAM listing was not read to its end (shutdown or backpressure): the PIM was not compared and no deletion was looked for".into(),
                );
                Ok(false)
            };
            let complete = match result {
                Ok(c) => c,
                Err(e) => {
                    // This family's pass and those not compared yet end incomplete (their
                    // marks deleted now rather than a day later).
                    let unfinished = marks.by_family.values().filter(|p| {
                        !reports
                            .iter()
                            .any(|r: &ReconcileReport| r.pass == p.pass.id)
                    });
                    for p in unfinished {
                        if let Err(fe) = self.store.finish_reconcile(p.pass.id, false).await {
                            warn!(family = %p.pass.family, error = %fe, "cannot record the end of an interrupted reconciliation");
                        }
                    }
                    return Err(e);
                }
            };
            report.complete = complete;
            self.store.finish_reconcile(fp.pass.id, complete).await?;
            let log = std::mem::take(&mut *fp.log.lock().unwrap_or_else(|e| e.into_inner()));
            report.repairs = log.repairs;
            report.not_listed = log.not_listed;
            report.missed = log.missed;
            report.drift = log.drift;
            report.missing_in_pim = log.missing_in_pim;
            report.deleted_in_dam = log.deleted_in_dam;
            report.held_back = log.held_back;
            report.pim_only = log.pim_only;
            info!(
                family = %family,
                pass = report.pass,
                complete,
                dam_assets = report.dam_assets,
                pim_assets = report.pim_assets,
                missed = report.missed,
                drift = report.drift,
                missing_in_pim = report.missing_in_pim,
                deleted_in_dam = report.deleted_in_dam,
                held_back = report.held_back,
                pim_only = report.pim_only,
                "reconciliation done"
            );
            if report.deleted_in_dam > 0 && self.options.deletions == DeletionPolicy::Keep {
                warn!(family = %family, assets = report.deleted_in_dam, "assets deleted in the DAM are kept in the PIM (deletions = \"keep\"); see the reconciliation report");
            }
            if report.pim_only > 0 {
                info!(family = %family, assets = report.pim_only, "PIM-only assets (never written by the connector) are left alone");
            }
            reports.push(report);
        }
        Ok((reports, outcome.unrouted))
    }

    /// Phase 1 for one family's share of a DAM page: mark what was seen, find drift and missed
    /// changes, then write the page through the normal write path.
    pub(crate) async fn reconcile_page(
        &self,
        plan: &FamilyPlan,
        fp: &FamilyPass,
        changes: Vec<ChangeKind>,
    ) -> Result<SyncReport, EngineError> {
        let family = plan.code.as_str();
        let mut seen: Vec<String> = Vec::with_capacity(changes.len());
        // (code, mapped asset, its hash, DAM id, DAM time)
        let mut mapped: Vec<(String, PimAsset, ContentHash, String, DateTime<Utc>)> = Vec::new();
        let mut tombstones: Vec<String> = Vec::new();
        for c in &changes {
            match c {
                ChangeKind::Upsert { asset } => {
                    fp.live.fetch_add(1, Ordering::Relaxed);
                    match plan.mapping.asset_code(asset) {
                        Ok(code) => {
                            seen.push(code.clone());
                            if let Ok(pim) = plan.mapping.map(asset) {
                                let hash = content_hash(&pim);
                                mapped.push((code, pim, hash, asset.id.clone(), asset.updated_at));
                            }
                        }
                        Err(_) => {
                            fp.unmapped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ChangeKind::Delete { dam_id, .. } => tombstones.push(dam_id.clone()),
            }
        }
        if !tombstones.is_empty() {
            // A tombstone is handled here (the write path applies the policy): its PIM asset
            // is not "absent" in phase 2.
            let codes = self.store.asset_codes(family, &tombstones).await?;
            seen.extend(codes.into_values());
        }
        self.store.mark_seen(fp.pass.id, &seen).await?;

        let codes: Vec<String> = mapped.iter().map(|m| m.0.clone()).collect();
        let known = self.store.hashes(family, &codes).await?;
        let mut same: Vec<(String, PimAsset, String)> = Vec::new();
        for (code, pim, hash, dam_id, at) in mapped {
            match known.get(&code) {
                Some(h) if *h == hash => same.push((code, pim, dam_id)),
                Some(h) if !is_marker(h) && fp.window.is_some_and(|w| at < w) => {
                    fp.add(Repair {
                        kind: RepairKind::Missed,
                        code,
                        dam_id: Some(dam_id),
                        reason: format!(
                            "changed in the DAM at {} but the state held an older version (an event was missed): written again",
                            at.to_rfc3339()
                        ),
                        changes: Vec::new(),
                    });
                }
                _ => {}
            }
        }
        if !same.is_empty() {
            let wanted: Vec<String> = same.iter().map(|s| s.0.clone()).collect();
            let held = self.read_pim(family, wanted).await?;
            let mut forget: Vec<String> = Vec::new();
            for (code, pim, dam_id) in same {
                match held.get(&code) {
                    None => {
                        fp.add(Repair {
                            kind: RepairKind::MissingInPim,
                            code: code.clone(),
                            dam_id: Some(dam_id),
                            reason: "written by the connector but missing in the PIM (deleted there): written again".into(),
                            changes: Vec::new(),
                        });
                        forget.push(code);
                    }
                    Some(old) => {
                        let d = diff(Some(old), &pim);
                        if !d.is_empty() {
                            let fields: Vec<String> =
                                d.iter().map(|c| c.attribute.clone()).collect();
                            fp.add(Repair {
                                kind: RepairKind::Drift,
                                code: code.clone(),
                                dam_id: Some(dam_id),
                                reason: format!(
                                    "edited in the PIM: {} value(s) differ from the mapping ({}): written again",
                                    d.len(),
                                    fields.join(", ")
                                ),
                                changes: d,
                            });
                            forget.push(code);
                        }
                    }
                }
            }
            if !forget.is_empty() {
                // The write path skips an asset whose hash is the last written one; forgetting
                // the hash makes it write the mapping's values again.
                self.store.remove_hashes(family, &forget).await?;
            }
        }

        let items = changes
            .into_iter()
            .map(|kind| {
                WriteItem::fresh(AssetChange {
                    family: family.to_owned(),
                    event_id: None,
                    source: "reconcile".to_owned(),
                    kind,
                })
            })
            .collect();
        self.write_changes(plan, items).await
    }

    /// The PIM's assets among `codes` (`code IN`, 100 per search), by code.
    pub(crate) async fn read_pim(
        &self,
        family: &str,
        codes: Vec<String>,
    ) -> Result<HashMap<String, PimAsset>, EngineError> {
        if codes.is_empty() {
            return Ok(HashMap::new());
        }
        self.pim
            .list_assets(
                family,
                AssetQuery {
                    codes: Some(codes),
                    ..AssetQuery::default()
                },
            )
            .map_err(EngineError::from)
            .and_then(|v| async move { Ok(to_pim_asset(&v)?) })
            .map_ok(|a| (a.code.clone(), a))
            .try_collect()
            .await
    }

    /// Phase 2: the family's PIM listing, page by page, against the pass's marks. Returns
    /// whether the listing was read to its end.
    async fn reconcile_pim(
        &self,
        plan: &FamilyPlan,
        fp: &FamilyPass,
        stop: &CancellationToken,
        report: &mut ReconcileReport,
    ) -> Result<bool, EngineError> {
        let family = plan.code.as_str();
        let apply = if report.unmapped > 0 {
            report.note = Some(format!(
                "{} DAM asset(s) have no asset code (mapping errors): their PIM assets cannot be recognised, so deletions found are reported, not applied",
                report.unmapped
            ));
            false
        } else if report.dam_assets == 0 {
            report.note = Some(
                "the DAM listing held no live asset (a wrong filter?): deletions found are reported, not applied".into(),
            );
            false
        } else {
            true
        };
        let policy = &self.options.deletions;
        let already_marked = match policy {
            DeletionPolicy::Mark { attribute, value } => Some(mark_marker(attribute, value)),
            _ => None,
        };
        info!(
            family,
            pass = fp.pass.id,
            "reconciliation: comparing the PIM's assets"
        );
        let listing = self.pim.list_assets(family, AssetQuery::default());
        let mut pages = std::pin::pin!(listing.try_chunks(PIM_PAGE));
        while let Some(page) = pages.next().await {
            if stop.is_cancelled() {
                report.note = Some("stopped while reading the PIM listing (shutdown)".into());
                return Ok(false);
            }
            let page = page.map_err(|e| EngineError::from(e.1))?;
            report.pim_pages += 1;
            report.pim_assets += page.len() as u64;
            let codes: Vec<String> = page
                .iter()
                .filter_map(|a| a.get("code").and_then(|c| c.as_str()).map(str::to_owned))
                .collect();
            drop(page);
            let states = self
                .store
                .reconcile_lookup(family, Some(fp.pass.id), &codes)
                .await?;
            let mut deletes: Vec<WriteItem> = Vec::new();
            for code in codes {
                let state = states.get(&code);
                if state.is_some_and(|s| s.seen) {
                    continue;
                }
                match state.and_then(|s| s.dam_id.clone().map(|d| (s, d))) {
                    Some((s, dam_id)) => {
                        if s.written_at.is_some_and(|w| w >= fp.pass.started_at) {
                            // Written while the pass ran (an event, a poll): not absent.
                            continue;
                        }
                        if already_marked.is_some() && s.hash == already_marked {
                            continue;
                        }
                        let action = match policy {
                            DeletionPolicy::Keep => {
                                "kept in the PIM (deletions = \"keep\")".to_owned()
                            }
                            DeletionPolicy::Delete => {
                                "deleted in the PIM (deletions = \"delete\")".to_owned()
                            }
                            DeletionPolicy::Mark { attribute, value } => {
                                format!("marked `{attribute}` = {value} (deletions = \"mark\")")
                            }
                        };
                        let reason = if apply {
                            format!("absent from the DAM listing (deleted in the DAM): {action}")
                        } else {
                            format!(
                                "absent from the DAM listing (deleted in the DAM): not applied this pass ({})",
                                report.note.as_deref().unwrap_or_default()
                            )
                        };
                        fp.add(Repair {
                            kind: RepairKind::DeletedInDam,
                            code,
                            dam_id: Some(dam_id.clone()),
                            reason,
                            changes: Vec::new(),
                        });
                        if apply {
                            deletes.push(WriteItem::fresh(AssetChange {
                                family: family.to_owned(),
                                event_id: None,
                                source: "reconcile".to_owned(),
                                kind: ChangeKind::Delete {
                                    dam_id,
                                    // Absent from a listing read after the pass began: dated
                                    // then, so that a retry of it waiting in the inbox is
                                    // dropped by a newer version written meanwhile (the asset
                                    // restored), instead of deleting it.
                                    deleted_at: Some(fp.pass.started_at),
                                },
                            }));
                        } else {
                            fp.log.lock().unwrap_or_else(|e| e.into_inner()).held_back += 1;
                        }
                    }
                    None => {
                        let marker = state.and_then(|s| s.hash.as_ref()).is_some_and(is_marker);
                        fp.add(Repair {
                            kind: RepairKind::PimOnly,
                            code,
                            dam_id: None,
                            reason: if marker {
                                "in the PIM only: the connector never wrote it successfully (its DAM version was refused); left alone".into()
                            } else {
                                "in the PIM only: never written by the connector; left alone".into()
                            },
                            changes: Vec::new(),
                        });
                    }
                }
            }
            if !deletes.is_empty() {
                let r = self.write_changes(plan, deletes).await?;
                self.observer.batch_done(family, &r);
                report.report += &r;
            }
        }
        Ok(true)
    }
}

/// A hash-table entry that is not a content hash (a refused version, a deletion mark).
fn is_marker(h: &ContentHash) -> bool {
    is_mark_marker(h) || h.0.starts_with("dead-lettered:")
}
