//! The dry run: what a sync of a family would do, read-only.

use std::collections::{BTreeMap, HashMap};

use assetbridge_akeneo::{to_pim_asset, AssetQuery};
use assetbridge_core::{content_hash, ChangeKind, ContentHash, PimAsset, PimValue};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::write::{dead_marker, is_mark_marker, mark_marker};
use crate::{DeletionPolicy, Engine, EngineError, FamilyPlan};

/// What a sync would do with one DAM change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// The asset is not in the PIM: it would be created.
    Create,
    /// The asset is in the PIM and its mapped content changed: it would be updated.
    Update,
    /// Deleted in the DAM, `deletions = "delete"`: the PIM asset would be deleted.
    Delete,
    /// Deleted in the DAM, `deletions = "mark"`: the PIM asset would be upserted with the mark.
    Mark,
    /// Nothing would be written (see the entry's reason).
    Skip,
}

/// One value that would change: (attribute, locale, channel) old → new. `None`: no value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub attribute: String,
    pub locale: Option<String>,
    pub channel: Option<String>,
    /// The value the PIM holds now (`None` when it holds none).
    pub old: Option<Value>,
    /// The value a sync would write (`Some(Value::Null)` empties the value).
    pub new: Option<Value>,
}

/// One line of a dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEntry {
    pub action: PlanAction,
    /// The DAM's identifier of the asset (empty for a PIM-only asset found by a `full` plan).
    pub dam_id: String,
    /// The PIM asset code (`None` when it cannot be known: a mapping error, a deletion of an
    /// asset the connector never wrote).
    pub code: Option<String>,
    /// The values that would change (create, update, mark); empty otherwise.
    pub changes: Vec<FieldChange>,
    /// Why: e.g. `new in the PIM`, `2 value(s) differ`, `unchanged (content hash)`.
    pub reason: String,
}

impl Engine {
    /// A dry run of [`sync_family`](Self::sync_family): reads the same DAM changes (since the
    /// family's cursor minus the overlap window, or from the beginning with `full`) and says for
    /// each what a sync would do, with the values that would change, read from the PIM
    /// (`GET` of the assets by `code IN`, 100 per request, only for assets whose content hash
    /// changed). Writes nothing: no PIM write, the cursor, hashes, inbox and dead letters are
    /// untouched. The inbox (retries, webhook and queue changes) is not part of the plan.
    ///
    /// Entries come in DAM page order; within a page, two changes of one asset are both listed
    /// and the older one is a skip.
    ///
    /// With `full`, the plan is the dry run of a reconciliation ([`crate::reconcile`]): assets
    /// whose content hash is unchanged are read from the PIM too and compared (an asset edited
    /// in the PIM is an update, one gone from the PIM a create), and after the DAM listing the
    /// PIM's listing is read page by page: an asset the connector wrote that the DAM no longer
    /// lists is a delete / mark (or a skip with `keep`), a PIM-only asset a skip. Those entries
    /// follow the DAM's. (The plan keeps the codes it met in memory, like its entries.)
    ///
    /// A family fed by the routed listing is planned from that listing (its share of it).
    pub async fn plan_family(
        &self,
        plan: &FamilyPlan,
        full: bool,
    ) -> Result<Vec<PlanEntry>, EngineError> {
        let routed = self.routed.clone().filter(|_| self.is_routed(&plan.code));
        let (key, query) = match &routed {
            Some(r) => (crate::ROUTED_LISTING.to_owned(), r.query.clone()),
            None => (plan.code.clone(), plan.query.clone()),
        };
        let stored = self.store.cursor(&key).await?;
        let since = if full {
            None
        } else {
            stored.as_ref().map(|c| c.since(self.options.overlap))
        };
        let mut pages = std::pin::pin!(self.dam.changes(since, &query));
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page?;
            let changes = match &routed {
                None => page.changes,
                Some(r) => {
                    let mut unrouted = crate::SyncReport::default();
                    self.route_changes(r, page.changes, &mut unrouted)
                        .await?
                        .into_iter()
                        .find(|(p, _)| p.code == plan.code)
                        .map(|(_, c)| c)
                        .unwrap_or_default()
                }
            };
            self.plan_page(plan, changes, &mut out, full).await?;
        }
        if full {
            self.plan_pim_side(plan, &mut out).await?;
        }
        Ok(out)
    }

    /// The PIM side of a `full` plan: each PIM asset the DAM listing did not show.
    async fn plan_pim_side(
        &self,
        plan: &FamilyPlan,
        out: &mut Vec<PlanEntry>,
    ) -> Result<(), EngineError> {
        let seen: std::collections::HashSet<String> =
            out.iter().filter_map(|e| e.code.clone()).collect();
        // Live DAM assets: every entry so far but the tombstones' (whose reasons say so).
        let live = out
            .iter()
            .filter(|e| !e.reason.starts_with("deleted in the DAM"))
            .count();
        let unmapped = out
            .iter()
            .filter(|e| e.code.is_none() && e.reason.starts_with("mapping:"))
            .count();
        let held_back = if unmapped > 0 {
            Some(format!(
                "{unmapped} DAM asset(s) have no asset code (mapping errors)"
            ))
        } else if live == 0 {
            Some("the DAM listing holds no asset (a wrong filter?)".to_owned())
        } else {
            None
        };
        let listing = self.pim.list_assets(&plan.code, AssetQuery::default());
        let mut pages = std::pin::pin!(listing.try_chunks(100));
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| EngineError::from(e.1))?;
            let codes: Vec<String> = page
                .iter()
                .filter_map(|a| a.get("code").and_then(Value::as_str).map(str::to_owned))
                .filter(|c| !seen.contains(c))
                .collect();
            drop(page);
            let states = self
                .store
                .reconcile_lookup(&plan.code, None, &codes)
                .await?;
            for code in codes {
                let state = states.get(&code);
                let entry = |action, dam_id: &str, changes, reason: String| PlanEntry {
                    action,
                    dam_id: dam_id.to_owned(),
                    code: Some(code.clone()),
                    changes,
                    reason,
                };
                match state.and_then(|s| s.dam_id.as_deref().map(|d| (s, d))) {
                    None => out.push(entry(
                        PlanAction::Skip,
                        "",
                        Vec::new(),
                        "in the PIM only: never written by the connector; left alone".into(),
                    )),
                    Some((_, dam_id)) if held_back.is_some() => out.push(entry(
                        PlanAction::Skip,
                        dam_id,
                        Vec::new(),
                        format!(
                            "absent from the DAM listing (deleted in the DAM); not applied: {}",
                            held_back.as_deref().unwrap_or_default()
                        ),
                    )),
                    Some((s, dam_id)) => match &self.options.deletions {
                        DeletionPolicy::Keep => out.push(entry(
                            PlanAction::Skip,
                            dam_id,
                            Vec::new(),
                            "absent from the DAM listing (deleted in the DAM); kept in the PIM (deletions = \"keep\")".into(),
                        )),
                        DeletionPolicy::Delete => out.push(entry(
                            PlanAction::Delete,
                            dam_id,
                            Vec::new(),
                            "absent from the DAM listing (deleted in the DAM; deletions = \"delete\")".into(),
                        )),
                        DeletionPolicy::Mark { attribute, value } => {
                            if s.hash.as_ref() == Some(&mark_marker(attribute, value)) {
                                out.push(entry(
                                    PlanAction::Skip,
                                    dam_id,
                                    Vec::new(),
                                    "absent from the DAM listing; already marked".into(),
                                ))
                            } else {
                                out.push(entry(
                                    PlanAction::Mark,
                                    dam_id,
                                    vec![FieldChange {
                                        attribute: attribute.clone(),
                                        locale: None,
                                        channel: None,
                                        old: None,
                                        new: Some(value.clone()),
                                    }],
                                    "absent from the DAM listing (deleted in the DAM; deletions = \"mark\")".into(),
                                ))
                            }
                        }
                    },
                }
            }
        }
        Ok(())
    }

    async fn plan_page(
        &self,
        plan: &FamilyPlan,
        changes: Vec<ChangeKind>,
        out: &mut Vec<PlanEntry>,
        full: bool,
    ) -> Result<(), EngineError> {
        let skip = |dam_id: &str, code: Option<String>, reason: String| PlanEntry {
            action: PlanAction::Skip,
            dam_id: dam_id.to_owned(),
            code,
            changes: Vec::new(),
            reason,
        };
        // (index in `out`, mapped asset, content hash, refused-version marker) of each upsert.
        let mut mapped: Vec<(usize, PimAsset, ContentHash, ContentHash)> = Vec::new();
        let mut latest: HashMap<String, (usize, chrono::DateTime<chrono::Utc>)> = HashMap::new();
        let mut deletes: Vec<(usize, String)> = Vec::new();
        let first = out.len();
        let filtered_out = self.plan_product_filter(plan, &changes).await?;
        for kind in changes {
            match kind {
                ChangeKind::Upsert { asset } if filtered_out.contains_key(&asset.id) => {
                    let why = filtered_out[&asset.id].clone();
                    // The code is known (a full plan must not take the PIM asset for absent).
                    let code = plan.mapping.asset_code(&asset).ok();
                    out.push(skip(&asset.id, code, why));
                }
                ChangeKind::Upsert { asset } => {
                    let r = plan
                        .mapping
                        .asset_code(&asset)
                        .and_then(|code| plan.mapping.map(&asset).map(|pim| (code, pim)));
                    match r {
                        Err(e) => out.push(skip(&asset.id, None, format!("mapping: {e}"))),
                        Ok((code, pim)) => {
                            let i = out.len();
                            out.push(skip(&asset.id, Some(code.clone()), String::new()));
                            if let Some(&(j, at)) = latest.get(&code) {
                                let older = if asset.updated_at >= at { j } else { i };
                                out[older].reason =
                                    "superseded by a newer change of the same asset".into();
                                if older == i {
                                    continue;
                                }
                                mapped.retain(|(k, _, _, _)| *k != j);
                            }
                            latest.insert(code, (i, asset.updated_at));
                            let hash = content_hash(&pim);
                            mapped.push((i, pim, hash, dead_marker(&asset)));
                        }
                    }
                }
                ChangeKind::Delete { dam_id, .. } => {
                    deletes.push((out.len(), dam_id.clone()));
                    out.push(skip(&dam_id, None, String::new()));
                }
            }
        }

        // Upserts: drop what the hash table says is unchanged (or refused for good), read the
        // rest from the PIM and diff.
        let codes: Vec<String> = mapped.iter().map(|(_, a, _, _)| a.code.clone()).collect();
        let known = if codes.is_empty() {
            assetbridge_store::KeyMap::default()
        } else {
            self.store.hashes(&plan.code, &codes).await?
        };
        let mut to_read: Vec<(usize, PimAsset)> = Vec::new();
        // `full`: unchanged by hash, yet compared with what the PIM holds (drift).
        let mut to_check: Vec<(usize, PimAsset)> = Vec::new();
        for (i, asset, hash, dead) in mapped {
            match known.get(&asset.code) {
                Some(h) if *h == hash && full => to_check.push((i, asset)),
                Some(h) if *h == hash => out[i].reason = "unchanged (content hash)".into(),
                Some(h) if *h == dead => {
                    out[i].reason =
                        "this DAM version was refused for good (see `assetbridge dlq list`)".into()
                }
                _ => to_read.push((i, asset)),
            }
        }
        if !to_check.is_empty() {
            let codes: Vec<String> = to_check.iter().map(|(_, a)| a.code.clone()).collect();
            let held = self.read_pim(&plan.code, codes).await?;
            for (i, asset) in to_check {
                let e = &mut out[i];
                match held.get(&asset.code) {
                    None => {
                        e.action = PlanAction::Create;
                        e.changes = diff(None, &asset);
                        e.reason =
                            "written by the connector but missing in the PIM (deleted there)"
                                .into();
                    }
                    Some(old) => {
                        let changes = diff(Some(old), &asset);
                        if changes.is_empty() {
                            e.reason = "unchanged (content hash)".into();
                        } else {
                            e.action = PlanAction::Update;
                            e.reason = format!(
                                "edited in the PIM: {} value(s) differ from the mapping",
                                changes.len()
                            );
                            e.changes = changes;
                        }
                    }
                }
            }
        }
        if !to_read.is_empty() {
            let codes: Vec<String> = to_read.iter().map(|(_, a)| a.code.clone()).collect();
            let held: HashMap<String, PimAsset> = self
                .pim
                .list_assets(
                    &plan.code,
                    AssetQuery {
                        codes: Some(codes),
                        ..AssetQuery::default()
                    },
                )
                .map_err(EngineError::from)
                .and_then(|v| async move { Ok(to_pim_asset(&v)?) })
                .map_ok(|a| (a.code.clone(), a))
                .try_collect()
                .await?;
            for (i, mut asset) in to_read {
                if let DeletionPolicy::Mark { attribute, .. } = &self.options.deletions {
                    let marked = known.get(&asset.code).is_some_and(is_mark_marker);
                    if marked && !asset.values.contains_key(attribute) {
                        asset.push_value(
                            attribute,
                            PimValue {
                                locale: None,
                                channel: None,
                                data: Value::Null,
                            },
                        );
                    }
                }
                let e = &mut out[i];
                match held.get(&asset.code) {
                    None => {
                        e.action = PlanAction::Create;
                        e.changes = diff(None, &asset);
                        e.reason = "not in the PIM".into();
                    }
                    Some(old) => {
                        e.action = PlanAction::Update;
                        e.changes = diff(Some(old), &asset);
                        e.reason = if e.changes.is_empty() {
                            "the PIM already holds these values (written once to record its content hash)".into()
                        } else {
                            format!("{} value(s) differ", e.changes.len())
                        };
                    }
                }
            }
        }

        // Deletions, by policy.
        if !deletes.is_empty() {
            let ids: Vec<String> = deletes.iter().map(|(_, d)| d.clone()).collect();
            let codes = self.store.asset_codes(&plan.code, &ids).await?;
            let hashes = if matches!(self.options.deletions, DeletionPolicy::Mark { .. }) {
                let c: Vec<String> = codes.values().cloned().collect();
                self.store.hashes(&plan.code, &c).await?
            } else {
                assetbridge_store::KeyMap::default()
            };
            for (i, dam_id) in deletes {
                let e = &mut out[i];
                let code = codes.get(&dam_id).cloned();
                e.code = code.clone();
                match (&self.options.deletions, code) {
                    (DeletionPolicy::Keep, _) => {
                        e.reason =
                            "deleted in the DAM; kept in the PIM (deletions = \"keep\")".into()
                    }
                    (_, None) => {
                        e.reason =
                            "deleted in the DAM; never written by the connector: nothing to do"
                                .into()
                    }
                    (DeletionPolicy::Delete, Some(_)) => {
                        e.action = PlanAction::Delete;
                        e.reason = "deleted in the DAM (deletions = \"delete\")".into();
                    }
                    (DeletionPolicy::Mark { attribute, value }, Some(code)) => {
                        if hashes.get(&code) == Some(&mark_marker(attribute, value)) {
                            e.reason = "deleted in the DAM; already marked".into();
                        } else {
                            e.action = PlanAction::Mark;
                            e.changes = vec![mark_change(attribute, value)];
                            e.reason = "deleted in the DAM (deletions = \"mark\")".into();
                        }
                    }
                }
            }
            self.plan_shared_codes(plan, out, &ids).await?;
        }
        self.plan_renames(plan, out, first).await
    }

    /// Deletions (planned in `out`) of PIM assets another DAM asset is still written as (one
    /// code): a sync keeps them (see `write::keep_shared_codes`). `leaving`: the DAM ids the
    /// page deletes.
    async fn plan_shared_codes(
        &self,
        plan: &FamilyPlan,
        out: &mut [PlanEntry],
        leaving: &[String],
    ) -> Result<(), EngineError> {
        let deleting = |e: &PlanEntry| {
            matches!(e.action, PlanAction::Delete | PlanAction::Mark) && leaving.contains(&e.dam_id)
        };
        let mut codes: Vec<String> = out
            .iter()
            .filter(|e| deleting(e))
            .filter_map(|e| e.code.clone())
            .collect();
        if codes.is_empty() {
            return Ok(());
        }
        codes.sort_unstable();
        codes.dedup();
        let holders = self.store.dam_ids_by_code(&plan.code, &codes).await?;
        for e in out.iter_mut().filter(|e| deleting(e)) {
            let other = e
                .code
                .as_ref()
                .and_then(|c| holders.get(c))
                .and_then(|ids| ids.iter().find(|id| !leaving.contains(id)));
            if let Some(other) = other {
                e.action = PlanAction::Skip;
                e.changes.clear();
                e.reason = format!(
                    "deleted in the DAM; kept in the PIM: DAM asset `{other}` is written as the same code"
                );
            }
        }
        Ok(())
    }

    /// Upserts (planned in `out` from index `first`) that would be written under a code other
    /// than the one their DAM id was last written as: a sync retires the former PIM asset by
    /// the deletion policy once the new one is written (see `rename`). One entry each, after
    /// the page's.
    async fn plan_renames(
        &self,
        plan: &FamilyPlan,
        out: &mut Vec<PlanEntry>,
        first: usize,
    ) -> Result<(), EngineError> {
        if !self.options.deletions.needs_codes() {
            return Ok(());
        }
        let written: Vec<(String, String)> = out[first..]
            .iter()
            .filter(|e| matches!(e.action, PlanAction::Create | PlanAction::Update))
            .filter_map(|e| Some((e.dam_id.clone(), e.code.clone()?)))
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = written.iter().map(|(d, _)| d.clone()).collect();
        let recorded = self.store.asset_codes(&plan.code, &ids).await?;
        for (dam_id, code) in written {
            let Some(former) = recorded
                .get(&dam_id)
                .filter(|f| !crate::rename::same_code(f, &code))
            else {
                continue;
            };
            let (action, changes, policy) = match &self.options.deletions {
                DeletionPolicy::Mark { attribute, value } => (
                    PlanAction::Mark,
                    vec![mark_change(attribute, value)],
                    "mark",
                ),
                _ => (PlanAction::Delete, Vec::new(), "delete"),
            };
            out.push(PlanEntry {
                action,
                dam_id,
                code: Some(former.clone()),
                changes,
                reason: format!(
                    "the asset's code changed to `{code}`: its former PIM asset goes once that is written (deletions = \"{policy}\")"
                ),
            });
        }
        Ok(())
    }
}

/// The value change a deletion mark writes.
fn mark_change(attribute: &str, value: &Value) -> FieldChange {
    FieldChange {
        attribute: attribute.to_owned(),
        locale: None,
        channel: None,
        old: None,
        new: Some(value.clone()),
    }
}

impl Engine {
    /// The upserts the family's product filter would skip: DAM id → reason (asks the PIM
    /// about the SKUs not in the filter's cache, 100 per request; reads only).
    async fn plan_product_filter(
        &self,
        plan: &FamilyPlan,
        changes: &[ChangeKind],
    ) -> Result<HashMap<String, String>, EngineError> {
        let mut out = HashMap::new();
        let Some(filter) = self.product_filters.get(&plan.code).cloned() else {
            return Ok(out);
        };
        let skus: Vec<(&str, Option<String>)> = changes
            .iter()
            .filter_map(|c| match c {
                ChangeKind::Upsert { asset } => Some((asset.id.as_str(), filter.sku(asset))),
                ChangeKind::Delete { .. } => None,
            })
            .collect();
        let wanted = skus.iter().filter_map(|(_, s)| s.clone()).collect();
        let attribute = filter.config().attribute.clone();
        let pim = self.pim.clone();
        let found = filter
            .existing(wanted, |ids| async move {
                let attrs = [attribute.clone()];
                let products = pim.products_by_identifiers(&ids, Some(&attrs)).await?;
                Ok::<_, assetbridge_akeneo::AkeneoError>(
                    products
                        .iter()
                        .filter_map(|p| crate::enrich::format::product_identifier(p, &attribute))
                        .collect(),
                )
            })
            .await?;
        for (id, sku) in skus {
            match sku {
                Some(s) if found.contains(&s) => {}
                Some(s) => {
                    out.insert(
                        id.to_owned(),
                        format!("product filter: no product `{s}` in the PIM"),
                    );
                }
                None => {
                    out.insert(
                        id.to_owned(),
                        format!("product filter: no SKU at `{}`", filter.config().sku_from),
                    );
                }
            }
        }
        Ok(out)
    }
}

/// The values of `new` that differ from `old` (attributes `new` does not write are left alone
/// by a PATCH, so they are not compared).
pub(crate) fn diff(old: Option<&PimAsset>, new: &PimAsset) -> Vec<FieldChange> {
    type Key = (Option<String>, Option<String>);
    let index = |vals: Option<&Vec<PimValue>>| -> BTreeMap<Key, Value> {
        vals.into_iter()
            .flatten()
            .map(|v| ((v.locale.clone(), v.channel.clone()), v.data.clone()))
            .collect()
    };
    let mut out = Vec::new();
    for (attribute, values) in &new.values {
        let before = index(old.and_then(|o| o.values.get(attribute)));
        for v in values {
            let was = before.get(&(v.locale.clone(), v.channel.clone()));
            if was != Some(&v.data) && !(was.is_none() && v.data.is_null()) {
                out.push(FieldChange {
                    attribute: attribute.clone(),
                    locale: v.locale.clone(),
                    channel: v.channel.clone(),
                    old: was.cloned(),
                    new: Some(v.data.clone()),
                });
            }
        }
    }
    out
}
