//! Dead letters put back into the inbox (`dlq retry`, the status page's retry button) carry the
//! change as it was when it failed. Since then the asset may have been written again from a
//! newer version (the usual case: someone fixed it in the DAM and a poll wrote it), deleted, or
//! brought back. Writing the old version would put it back over the newer one, so a replayed
//! change (`AssetChange::is_replayed`) is read from the DAM again first
//! ([`Engine::refresh_replayed`]):
//! - **In the DAM:** its current version is written instead, through the normal write path. The
//!   content hash makes that free when the PIM already holds it. A replayed deletion of an asset
//!   that is back in the DAM becomes that write.
//! - **Not in the DAM:** a replayed write is not written: it must not bring back an asset the
//!   DAM deleted (the PIM asset, if any, goes with the DAM's deletion: its event, the poll's
//!   tombstone or a reconciliation). It becomes a dead letter again, of kind `not_in_dam`, rather
//!   than vanish: a DAM adapter whose `asset_path` is wrong answers 404 for every asset, and the
//!   operator must see that (and purge them when the assets are really gone). A replayed deletion
//!   goes ahead.
//! - **The DAM cannot be read:** the change waits, as a retry, and is a dead letter again after
//!   `max_attempts`.
//!
//! Written as they are, as before: changes from Adobe I/O Events (their record is the event's
//! data, not what the DAM adapter's `GET` returns, so the family's mapping may not read the
//! latter) and the retirements of former codes (`rename`: they read the DAM themselves).

use assetbridge_core::{AssetChange, ChangeKind};
use assetbridge_store::{Claimed, DeadLetterReason};
use futures::stream::{self, StreamExt};

use crate::rename::RENAME_SOURCE;
use crate::{Engine, EngineError, SyncReport, WriteItem};

/// DAM reads in flight at once while refreshing replayed changes.
const READS_IN_FLIGHT: usize = 4;

/// Whether a replayed change is read from the DAM again (see the module).
fn refreshable(change: &AssetChange) -> bool {
    change.is_replayed()
        && change.origin() != RENAME_SOURCE
        && !change.origin().starts_with("adobe")
}

/// What the DAM says of a replayed change's asset now.
enum Now {
    /// Write this (the current version, or the change as it was when it is a deletion of an
    /// asset the DAM no longer has).
    Write(Claimed),
    /// A write of an asset the DAM no longer has: a dead letter again.
    Gone(Claimed),
    /// The DAM could not be read.
    Unreadable(Claimed, String),
}

impl Engine {
    /// Replaces each replayed change of `claimed` by what the DAM holds now (see the module);
    /// settles those that are not to be written (dead-lettered again, or retried) and leaves
    /// them out.
    pub(crate) async fn refresh_replayed(
        &self,
        claimed: Vec<Claimed>,
        report: &mut SyncReport,
    ) -> Result<Vec<Claimed>, EngineError> {
        if !claimed.iter().any(|c| refreshable(&c.change)) {
            return Ok(claimed);
        }
        let (replayed, mut out): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| refreshable(&c.change));
        let mut reads = stream::iter(replayed)
            .map(|c| self.read_again(c))
            .buffer_unordered(READS_IN_FLIGHT);
        while let Some(now) = reads.next().await {
            let (c, why) = match now {
                Now::Write(c) => {
                    out.push(c);
                    continue;
                }
                Now::Gone(c) => (c, None),
                Now::Unreadable(c, why) => (c, Some(why)),
            };
            report.seen += 1;
            let item = WriteItem {
                inbox_id: Some(c.id),
                attempts: c.attempts,
                change: c.change,
            };
            match why {
                None => {
                    let why = DeadLetterReason::new(
                        "not_in_dam",
                        format!(
                            "replayed, but asset `{}` is no longer in the DAM (its GET answers 404 or a deletion): not written, so that a deleted asset does not come back; purge this dead letter, or check the DAM's `asset_path` if the asset does exist",
                            item.change.dam_id()
                        ),
                    );
                    self.fail(item, why, report).await?;
                }
                Some(why) => self.retry(item, &why, report).await?,
            }
        }
        Ok(out)
    }

    async fn read_again(&self, mut c: Claimed) -> Now {
        let dam_id = c.change.dam_id().to_owned();
        match self.dam.get_asset(&dam_id).await {
            Ok(Some(asset)) => {
                c.change.kind = ChangeKind::Upsert { asset };
                Now::Write(c)
            }
            Ok(None) => match c.change.kind {
                ChangeKind::Delete { .. } => Now::Write(c),
                ChangeKind::Upsert { .. } => Now::Gone(c),
            },
            Err(e) => Now::Unreadable(
                c,
                format!("cannot read asset `{dam_id}` from the DAM to replay its dead letter: {e}"),
            ),
        }
    }
}
