//! Inbox workers: claim durable changes (from webhooks, queues and retries) and write them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_store::{Claimed, DeadLetterReason, LEASE_RAN_OUT};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{lease, Engine, EngineError, SyncReport, WriteItem};

/// Largest batch handed to one `write_changes` call from the inbox (one PIM request).
const WRITE_CHUNK: usize = 100;

impl Engine {
    /// Claims one round of ready inbox entries and writes them. Returns how many were claimed
    /// (0 = nothing ready) and what happened to them.
    ///
    /// The round's leases are renewed while it runs ([`crate::lease`]); if they cannot be, the
    /// round starts no further batch and returns [`EngineError::LeaseLost`]. A round that fails
    /// otherwise (the PIM refusing our credentials, the store) gives back the claims it did not
    /// finish at once, without counting an attempt: the error is not the entries' doing.
    pub async fn drain_once(&self, worker: &str) -> Result<(usize, SyncReport), EngineError> {
        let lease = self.options.claim_lease;
        let claimed_at = tokio::time::Instant::now();
        let claimed = self
            .store
            .claim(worker, self.options.claim_size, lease)
            .await?;
        let n = claimed.len();
        if n == 0 {
            return Ok((0, SyncReport::default()));
        }
        let ids: Arc<Vec<i64>> = Arc::new(claimed.iter().map(|c| c.id).collect());
        let done = CancellationToken::new();
        let lost = CancellationToken::new();
        // The holder runs beside the round and is never dropped in the middle of a renewal: it
        // ends at its next wake-up once `done` is cancelled.
        let renew = {
            let (store, name, ids) = (self.store.clone(), worker.to_owned(), ids.clone());
            move || {
                let (store, name, ids) = (store.clone(), name.clone(), ids.clone());
                async move { store.renew_leases(&name, &ids, lease).await.map(drop) }
            }
        };
        let (name, holder_done, holder_lost) = (worker.to_owned(), done.clone(), lost.clone());
        tokio::spawn(async move {
            if let Some(l) = lease::hold(claimed_at, lease, holder_done, renew).await {
                warn!(
                    worker = %name,
                    error = l.last_error.as_deref().unwrap_or("renewals took too long"),
                    "inbox leases could not be renewed; the round starts no further write"
                );
                holder_lost.cancel();
            }
        });
        let result = self.write_claimed(claimed, &lost).await;
        done.cancel();
        match result {
            Ok(report) => Ok((n, report)),
            Err(e) => {
                if !lost.is_cancelled() {
                    // Entries finished, retried or dead-lettered are no longer leased: only
                    // the rest are given back.
                    if let Err(r) = self.store.release(&ids).await {
                        warn!(worker, error = %r, "cannot give the claims of a failed round back; they come back when their lease runs out");
                    }
                }
                Err(e)
            }
        }
    }

    /// Writes one round of claimed entries; starts no batch once `lost` is cancelled.
    async fn write_claimed(
        &self,
        claimed: Vec<Claimed>,
        lost: &CancellationToken,
    ) -> Result<SyncReport, EngineError> {
        let mut report = SyncReport::default();
        // Entries that reached `max_attempts` without being dead-lettered: taken over from
        // workers whose leases ran out (each take-over counts an attempt), or `max_attempts`
        // lowered since. A change that brings its worker down every time stops here.
        let (claimed, abandoned): (Vec<_>, Vec<_>) = claimed
            .into_iter()
            .partition(|c| c.attempts < self.options.max_attempts);
        for c in abandoned {
            let last = c.last_error.as_deref().unwrap_or("unknown");
            let kind = if last.starts_with(LEASE_RAN_OUT) {
                "lease_expired"
            } else {
                "retries_exhausted"
            };
            let why = DeadLetterReason::new(
                kind,
                format!(
                    "claimed {} times without finishing; last: {last}",
                    c.attempts
                ),
            );
            warn!(id = c.id, dam_id = c.change.dam_id(), reason = %why.message, "inbox entry dead-lettered");
            self.store.dead_letter(c.id, &why).await?;
            report.seen += 1;
            report.failed += 1;
        }
        // Enrichment (when configured) takes its changes first; the rest go DAM → PIM.
        let claimed = self.enrich_claimed(claimed).await?;
        // Product-link dead letters brought back by `dlq retry` become pending links again.
        let claimed = self.requeue_claimed_links(claimed).await?;
        // Dead letters put back by `dlq retry` are written as the DAM has them now.
        let claimed = self.refresh_replayed(claimed, &mut report).await?;
        let mut by_family: BTreeMap<String, Vec<WriteItem>> = BTreeMap::new();
        for c in claimed {
            by_family
                .entry(c.change.family.clone())
                .or_default()
                .push(WriteItem {
                    inbox_id: Some(c.id),
                    attempts: c.attempts,
                    change: c.change,
                });
        }
        let mut chunks = Vec::new();
        for (family, items) in by_family {
            let Some(plan) = self.family(&family) else {
                // A change for a family that is no longer configured cannot be written: keep it
                // where an operator can see and replay it.
                for item in items {
                    let why = DeadLetterReason {
                        kind: "unknown_family".into(),
                        message: format!("asset family `{family}` is not configured"),
                        pim_status: None,
                        pim_message: None,
                        pim_errors: None,
                    };
                    if let Some(id) = item.inbox_id {
                        self.store.dead_letter(id, &why).await?;
                    }
                    report.seen += 1;
                    report.failed += 1;
                }
                continue;
            };
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<WriteItem> = items.by_ref().take(WRITE_CHUNK).collect();
                chunks.push((plan.clone(), chunk));
            }
        }
        let mut results = stream::iter(chunks)
            .map(
                |(plan, chunk): (crate::FamilyPlan, Vec<WriteItem>)| async move {
                    if lost.is_cancelled() {
                        return (plan, Err(EngineError::LeaseLost));
                    }
                    let r = self.write_changes(&plan, chunk).await;
                    (plan, r)
                },
            )
            .buffer_unordered(self.options.pages_in_flight.max(1));
        let mut first_error = None;
        while let Some((plan, r)) = results.next().await {
            match r {
                Ok(r) => {
                    self.observer.batch_done(&plan.code, &r);
                    report += &r;
                }
                Err(e) => {
                    // Leave the claims to expire (the lease brings them back); report the error.
                    first_error.get_or_insert(e);
                }
            }
        }
        self.flush_outcomes().await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Drains the inbox until nothing is ready (entries waiting for a retry later are left).
    pub async fn drain_inbox(&self, worker: &str) -> Result<SyncReport, EngineError> {
        let mut total = SyncReport::default();
        loop {
            let (n, report) = self.drain_once(worker).await?;
            total += &report;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs an inbox worker until `shutdown` is cancelled: claims, writes, and sleeps until new
    /// work is announced (or `idle` passes) when the inbox is empty. Errors are logged and
    /// retried after a pause; claims of a failed round come back when their lease expires.
    pub async fn run_worker(&self, worker: &str, idle: Duration, shutdown: CancellationToken) {
        info!(worker, "inbox worker started");
        let mut pause = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            // A round in flight is finished, not abandoned: its writes and their outcomes land
            // together (every PIM call has a timeout, so this is bounded).
            let round = self.drain_once(worker).await;
            match round {
                Ok((0, _)) => {
                    pause = Duration::from_millis(500);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.store.wait_for_work(idle) => {}
                    }
                }
                Ok(_) => pause = Duration::from_millis(500),
                Err(e) => {
                    warn!(worker, error = %e, pause_ms = pause.as_millis() as u64, "inbox worker round failed; pausing");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
        info!(worker, "inbox worker stopped");
    }
}
