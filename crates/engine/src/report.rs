use std::ops::AddAssign;
use std::time::Duration;

use serde::Serialize;

/// What a sync did, by outcome. Every change seen ends in exactly one of the outcome counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Changes read (from the DAM or the inbox).
    pub seen: u64,
    /// Assets created in the PIM.
    pub created: u64,
    /// Assets updated in the PIM.
    pub updated: u64,
    /// Assets whose content hash was unchanged: no PIM call.
    pub unchanged: u64,
    /// Assets deleted in the PIM.
    pub deleted: u64,
    /// Assets deleted in the DAM and marked in the PIM (`deletions = "mark"`).
    pub marked: u64,
    /// Assets skipped by the family's product filter (no SKU, or no such product in the PIM).
    pub skipped: u64,
    /// Deletions not applied because of the deletion policy (`keep`), or of assets never synced.
    pub kept: u64,
    /// Changes that failed for good (now in the dead-letter store).
    pub failed: u64,
    /// Changes that failed for now and wait in the inbox for a retry.
    pub retrying: u64,
    /// Redeliveries dropped by the inbox (an event id seen before).
    pub duplicates: u64,
    /// PIM write requests made (batch PATCH and DELETE).
    pub pim_writes: u64,
}

impl SyncReport {
    pub fn written(&self) -> u64 {
        self.created + self.updated + self.deleted + self.marked
    }
}

impl AddAssign<&SyncReport> for SyncReport {
    fn add_assign(&mut self, o: &SyncReport) {
        self.seen += o.seen;
        self.created += o.created;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.deleted += o.deleted;
        self.marked += o.marked;
        self.kept += o.kept;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.retrying += o.retrying;
        self.duplicates += o.duplicates;
        self.pim_writes += o.pim_writes;
    }
}

/// Receives progress as the engine goes (progress bars, log lines, metrics).
pub trait SyncObserver: Send + Sync {
    /// A family's pass started.
    fn family_started(&self, _family: &str) {}
    /// A batch (a DAM page, or a claim from the inbox) is done.
    fn batch_done(&self, _family: &str, _report: &SyncReport) {}
    /// A family's pass finished.
    fn family_finished(&self, _family: &str, _report: &SyncReport) {}
    /// One write batch (≤ 100 changes of one family: map, diff, one PIM request, state
    /// recorded) took `elapsed`, with these outcomes. For latency histograms.
    fn batch_written(&self, _family: &str, _report: &SyncReport, _elapsed: Duration) {}
}

/// An observer that does nothing.
pub struct NoopObserver;
impl SyncObserver for NoopObserver {}
