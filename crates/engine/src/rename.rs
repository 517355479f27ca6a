//! Asset codes that change: a mapping whose code comes from something the DAM lets people edit
//! (a file name, a SKU field) gives a DAM asset a new code when it is edited, and the write
//! creates a second PIM asset. The first one — the *former code* — is retired by the deletion
//! policy, like a deletion in the DAM (`deletions = "delete"` deletes it, `"mark"` marks it;
//! with `"keep"` no DAM id → code map is kept, so nothing is noticed and it stays).
//!
//! How, without a new kind of change:
//! 1. Before the write, the DAM id → code map is read for the batch; a DAM id whose recorded code
//!    differs from its new one is renamed. The former code is recorded under a DAM id of its own,
//!    the *former-code holder* ([`former_code_holder`]), in the same store call as the new codes,
//!    so a crash after the write still leaves the former PIM asset known to the map (a
//!    reconciliation finds it "written, not seen" and retires it).
//! 2. After the PIM's answer: a renamed asset written → a `Delete` of its former-code holder goes
//!    into the inbox (durable, retried, dead-lettered like any change; the deletion policy, the
//!    product-link clean-up and the shared-code guard apply as to any deletion). Not written
//!    (refused, retried, whole batch failed) → the former code is put back as the DAM id's code
//!    and the holder dropped, so the next attempt notices the rename again.

use std::collections::HashMap;

use assetbridge_core::{AssetChange, ChangeKind};
use assetbridge_store::WrittenAsset;
use tracing::info;

use crate::{Engine, EngineError, FamilyPlan};

/// The source named by the inbox entries that retire former codes.
pub const RENAME_SOURCE: &str = "rename";

/// The DAM id under which `dam_id`'s former code `code` is recorded until it is retired.
pub fn former_code_holder(dam_id: &str, code: &str) -> String {
    format!("{dam_id} (formerly {code})")
}

/// The renamed DAM ids of one batch: DAM id → former code.
#[derive(Debug, Default)]
pub(crate) struct Renames(HashMap<String, String>);

impl Engine {
    /// Step 1 (see the module): `codes` (DAM id, new code) gains the former-code holders of
    /// the renamed DAM ids; the caller records them all in one call.
    pub(crate) async fn detect_renames(
        &self,
        plan: &FamilyPlan,
        codes: &mut Vec<(String, String)>,
    ) -> Result<Renames, EngineError> {
        let dam_ids: Vec<String> = codes.iter().map(|(d, _)| d.clone()).collect();
        let recorded = self.store.asset_codes(&plan.code, &dam_ids).await?;
        let mut renames = HashMap::new();
        for (dam_id, code) in codes.iter() {
            if let Some(former) = recorded.get(dam_id).filter(|f| *f != code) {
                renames.insert(dam_id.clone(), former.clone());
            }
        }
        codes.extend(
            renames
                .iter()
                .map(|(d, former)| (former_code_holder(d, former), former.clone())),
        );
        Ok(Renames(renames))
    }

    /// Step 2 (see the module), once the PIM answered (`written`: what it confirmed) or the
    /// whole batch failed (`written` empty).
    pub(crate) async fn settle_renames(
        &self,
        plan: &FamilyPlan,
        renames: Renames,
        written: &[WrittenAsset],
    ) -> Result<(), EngineError> {
        if renames.0.is_empty() {
            return Ok(());
        }
        let written: HashMap<&str, &WrittenAsset> =
            written.iter().map(|w| (w.dam_id.as_str(), w)).collect();
        let mut retire = Vec::new();
        let mut restore = Vec::new();
        let mut holders = Vec::new();
        for (dam_id, former) in renames.0 {
            let holder = former_code_holder(&dam_id, &former);
            match written.get(dam_id.as_str()) {
                Some(w) => {
                    info!(family = %plan.code, dam_id = %dam_id, former = %former, code = %w.code, "asset code changed; the former PIM asset goes the way of a deletion");
                    retire.push(AssetChange {
                        family: plan.code.clone(),
                        event_id: None,
                        source: RENAME_SOURCE.to_owned(),
                        kind: ChangeKind::Delete {
                            dam_id: holder,
                            deleted_at: w.version,
                        },
                    });
                }
                None => {
                    restore.push((dam_id, former));
                    holders.push(holder);
                }
            }
        }
        if !retire.is_empty() {
            self.store.enqueue(&retire).await?;
        }
        if !restore.is_empty() {
            self.store.put_asset_codes(&plan.code, &restore).await?;
            self.store.remove_asset_codes(&plan.code, &holders).await?;
        }
        Ok(())
    }
}
