//! Asset codes that change: a mapping whose code comes from something the DAM lets people edit
//! (a file name, a SKU field) gives a DAM asset a new code when it is edited, and the write
//! creates a second PIM asset. The first one — the *former code* — is retired by the deletion
//! policy, like a deletion in the DAM (`deletions = "delete"` deletes it, `"mark"` marks it;
//! with `"keep"` no DAM id → code map is kept, so nothing is noticed and it stays).
//!
//! How, without a new kind of change:
//! 1. **Noticed at the write.** The DAM id → code map is read for the batch; a DAM id recorded
//!    under another code is renamed. The former code is recorded under a DAM id of its own, the
//!    *former-code holder* ([`former_code_holder`]), in the same store call as the new codes
//!    (before the PIM write: a crash after it still leaves the former PIM asset known to the
//!    map, and a reconciliation finds it "written, not seen" and retires it).
//! 2. **Retired through the inbox.** After the write, whatever its outcome, a `Delete` of the
//!    holder goes into the inbox: durable, retried, dead-lettered like any change; the deletion
//!    policy, the product-link clean-up and the shared-code guard apply as to any deletion.
//! 3. **Checked against the DAM first** ([`Engine::check_retirements`]): the asset is read
//!    from the DAM again and its code mapped now.
//!    - Gone from the DAM (or unreadable as an asset): the former code goes.
//!    - Its code now *is* the former code: the write that "renamed" it was of an older version
//!      (a late event, a replayed dead letter). The former PIM asset is the current one and
//!      stays; the DAM id is recorded under it again, and the code the stale write created is
//!      retired in its turn.
//!    - Another code, already written (a content hash recorded for it): the former code goes.
//!    - Another code not written yet (its write failed and waits for a retry, or was refused):
//!      the retirement waits, as a retry with backoff, and after `max_attempts` is a dead
//!      letter that `dlq retry` brings back — the former PIM asset is never removed before
//!      the asset's current one is in the PIM.
//!
//! **Case.** Akeneo compares asset codes without regard to case (they live in a MySQL column
//! of collation `utf8mb4_unicode_ci`, unique per family): `Chair_01` and `chair_01` are one
//! PIM asset, which keeps the spelling it was created with, and a `DELETE` of either deletes
//! it. A code that changes only in case (someone fixing a file name's capitals) is therefore
//! not a rename: retiring the "former" code would delete the asset itself. The DAM id is
//! recorded under the new spelling, and the former spelling's content hash is forgotten (so a
//! later change back to it is written, never taken for unchanged). [`same_code`] is the one
//! comparison.

use std::collections::HashMap;

use assetbridge_core::{AssetChange, ChangeKind, ContentHash};
use tracing::info;

use crate::{Engine, EngineError, FamilyPlan, SyncReport, WriteItem};

/// The source named by the inbox entries that retire former codes.
pub const RENAME_SOURCE: &str = "rename";

/// The DAM id under which `dam_id`'s former code `code` is recorded until it is retired.
pub fn former_code_holder(dam_id: &str, code: &str) -> String {
    format!("{dam_id}{}", holder_suffix(code))
}

fn holder_suffix(code: &str) -> String {
    format!(" (formerly {code})")
}

/// The DAM id of `holder` when it is the former-code holder of `code` (or of a spelling of it
/// in another case: [`same_code`]).
pub(crate) fn holder_of<'a>(holder: &'a str, code: &str) -> Option<&'a str> {
    let suffix = holder_suffix(code);
    let cut = holder.len().checked_sub(suffix.len())?;
    (holder.is_char_boundary(cut) && holder[cut..].eq_ignore_ascii_case(&suffix))
        .then(|| &holder[..cut])
}

/// Whether two asset codes name one PIM asset: Akeneo compares codes without regard to case
/// (see the module), and codes are ASCII (`^[a-zA-Z0-9_]+$`).
pub(crate) fn same_code(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `h` is a content hash (not one of the engine's markers: a refused version, a
/// deletion mark).
fn is_content_hash(h: &ContentHash) -> bool {
    !h.0.is_empty() && h.0.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The renamed DAM ids of one batch: DAM id → former code.
#[derive(Debug, Default)]
pub(crate) struct Renames(HashMap<String, String>);

impl Engine {
    /// Step 1 (see the module): `codes` (DAM id, new code) gains the former-code holders of
    /// the renamed DAM ids; the caller records them all in one call, then calls
    /// [`retire_former_codes`](Self::retire_former_codes) once the PIM answered.
    pub(crate) async fn detect_renames(
        &self,
        plan: &FamilyPlan,
        codes: &mut Vec<(String, String)>,
    ) -> Result<Renames, EngineError> {
        let dam_ids: Vec<String> = codes.iter().map(|(d, _)| d.clone()).collect();
        let recorded = self.store.asset_codes(&plan.code, &dam_ids).await?;
        let mut renames = HashMap::new();
        let mut respelt = Vec::new();
        for (dam_id, code) in codes.iter() {
            match recorded.get(dam_id) {
                Some(former) if former == code => {}
                Some(former) if same_code(former, code) => respelt.push(former.clone()),
                Some(former) => {
                    renames.insert(dam_id.clone(), former.clone());
                }
                None => {}
            }
        }
        if !respelt.is_empty() {
            // One PIM asset under another spelling (see the module): nothing to retire.
            info!(family = %plan.code, codes = ?respelt, "asset codes changed only in case: the same PIM asset, written under the new spelling");
            self.store.remove_hashes(&plan.code, &respelt).await?;
        }
        codes.extend(
            renames
                .iter()
                .map(|(d, former)| (former_code_holder(d, former), former.clone())),
        );
        Ok(Renames(renames))
    }

    /// Step 2 (see the module): one inbox `Delete` per former-code holder.
    pub(crate) async fn retire_former_codes(
        &self,
        plan: &FamilyPlan,
        renames: Renames,
    ) -> Result<(), EngineError> {
        if renames.0.is_empty() {
            return Ok(());
        }
        let retire: Vec<AssetChange> = renames
            .0
            .into_iter()
            .map(|(dam_id, former)| {
                info!(family = %plan.code, dam_id = %dam_id, former = %former, "asset code changed; the former PIM asset goes the way of a deletion once the new one is written");
                retire_change(plan, &former_code_holder(&dam_id, &former))
            })
            .collect();
        self.store.enqueue(&retire).await?;
        Ok(())
    }

    /// Step 3 (see the module), for the deletions of a batch: (item, code) pairs whose DAM id
    /// is a former-code holder are checked against the DAM; those that must not go (yet) are
    /// settled here (done or retried) and left out of the result.
    pub(crate) async fn check_retirements(
        &self,
        plan: &FamilyPlan,
        to_delete: Vec<(WriteItem, String)>,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<Vec<(WriteItem, String)>, EngineError> {
        let mut out = Vec::with_capacity(to_delete.len());
        // (item, former code, the DAM id, its code now)
        let mut moved: Vec<(WriteItem, String, String, String)> = Vec::new();
        for (item, former) in to_delete {
            let Some(dam_id) = holder_of(item.change.dam_id(), &former).map(str::to_owned) else {
                out.push((item, former));
                continue;
            };
            let now = match self.dam.get_asset(&dam_id).await {
                Ok(Some(asset)) => plan.mapping.asset_code(&asset),
                Ok(None) => {
                    // Gone from the DAM: nothing holds the former code any more.
                    out.push((item, former));
                    continue;
                }
                Err(e) => {
                    let why = format!("cannot read asset `{dam_id}` from the DAM to retire its former code `{former}`: {e}");
                    self.retry(item, &why, report).await?;
                    continue;
                }
            };
            match now {
                Ok(code) if same_code(&code, &former) => {
                    self.restore_former_code(plan, item, &dam_id, &former, done, report)
                        .await?
                }
                Ok(code) => moved.push((item, former, dam_id, code)),
                Err(e) => {
                    let why = format!("asset `{dam_id}` has no asset code now ({e}); its former code `{former}` waits");
                    self.retry(item, &why, report).await?;
                }
            }
        }
        if moved.is_empty() {
            return Ok(out);
        }
        let codes: Vec<String> = moved.iter().map(|(_, _, _, c)| c.clone()).collect();
        let hashes = self.store.hashes(&plan.code, &codes).await?;
        for (item, former, dam_id, code) in moved {
            if hashes.get(&code).is_some_and(is_content_hash) {
                out.push((item, former));
            } else {
                let why = format!("asset `{dam_id}` is not written under its new code `{code}` yet; its former code `{former}` waits for it");
                self.retry(item, &why, report).await?;
            }
        }
        Ok(out)
    }

    /// The DAM says `dam_id`'s code is its former code: the write that moved it away was of an
    /// older version. The DAM id is recorded under the former code again (whose PIM asset is
    /// the current one) and the code the stale write created is retired in its turn.
    async fn restore_former_code(
        &self,
        plan: &FamilyPlan,
        item: WriteItem,
        dam_id: &str,
        former: &str,
        done: &mut Vec<i64>,
        report: &mut SyncReport,
    ) -> Result<(), EngineError> {
        let holder = item.change.dam_id().to_owned();
        let ids = [dam_id.to_owned()];
        let stale = self
            .store
            .asset_codes(&plan.code, &ids)
            .await?
            .remove(dam_id)
            .filter(|c| !same_code(c, former));
        let mut codes = vec![(dam_id.to_owned(), former.to_owned())];
        if let Some(stale) = &stale {
            codes.push((former_code_holder(dam_id, stale), stale.clone()));
        }
        self.store.put_asset_codes(&plan.code, &codes).await?;
        self.store
            .remove_asset_codes(&plan.code, std::slice::from_ref(&holder))
            .await?;
        if let Some(stale) = &stale {
            info!(family = %plan.code, dam_id, code = %former, stale = %stale, "an older version of the asset was written under another code; that code goes the way of a deletion");
            self.store
                .enqueue(&[retire_change(plan, &former_code_holder(dam_id, stale))])
                .await?;
        }
        report.kept += 1;
        if let Some(id) = item.inbox_id {
            done.push(id);
        }
        Ok(())
    }
}

fn retire_change(plan: &FamilyPlan, holder: &str) -> AssetChange {
    AssetChange {
        family: plan.code.clone(),
        event_id: None,
        source: RENAME_SOURCE.to_owned(),
        kind: ChangeKind::Delete {
            dam_id: holder.to_owned(),
            deleted_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_names_its_dam_id_for_its_code_in_any_case() {
        let holder = former_code_holder("dam-1", "Chair_01");
        assert_eq!(holder, "dam-1 (formerly Chair_01)");
        assert_eq!(holder_of(&holder, "Chair_01"), Some("dam-1"));
        assert_eq!(holder_of(&holder, "chair_01"), Some("dam-1"));
        assert_eq!(holder_of(&holder, "chair_02"), None);
        assert_eq!(holder_of("dam-1", "Chair_01"), None);
        // A cut inside a multi-byte character is no match, never a panic.
        assert_eq!(holder_of("é (formerly Chair_01)", "Chair_01"), Some("é"));
        assert_eq!(holder_of("é(formerly x)", "x"), None);
        assert!(same_code("Chair_01", "CHAIR_01"));
        assert!(!same_code("Chair_01", "Chair_02"));
    }
}
