//! Group commit of webhook deliveries: one inbox transaction for every delivery that is ready.
//!
//! A handler verifies and parses its delivery, then hands the changes to the one **committer**
//! task through a bounded channel, with a oneshot for the answer. The committer takes what is
//! queued — never waiting for more than what is already there — up to [`MAX_GROUP_CHANGES`]
//! changes, writes all of it with one [`Store::enqueue`] (one transaction, one `fsync` on SQLite),
//! then answers every handler of the group; only then does a handler send its 2xx. A store
//! failure answers every handler of the group with the error (503: nothing of the group was
//! stored, the senders retry).
//!
//! Why: with `synchronous = FULL` every commit waits for the disk (≈ 4 ms on the benchmark
//! machine), so one transaction per delivery caps a receiver at a few hundred deliveries per
//! second whatever the CPU. Grouping costs no latency when the receiver is idle (a lone
//! delivery is written at once) and amortises the wait when it is busy.
//!
//! The inbox's rules hold within a group exactly as across calls: `enqueue` drops an event id
//! seen before *or earlier in the same call* as a duplicate, and of several changes for one
//! asset keeps the newest by the DAM's time (a strictly older one is stale) — so the inbox ends
//! as it would after the same deliveries written one by one.
//!
//! What a handler learns ([`Committed`]): its own counts when the group was its delivery alone,
//! or when the store accepted every change of the group (then each delivery's changes were all
//! accepted); otherwise — several deliveries in one transaction and the store dropped some of
//! their changes as duplicates or stale — which delivery's changes were dropped is not known,
//! and the answer carries the group's counts instead.
//!
//! A handler whose client hangs up after handing its changes over does not cancel the write:
//! the committer owns the changes from then on (the answer is dropped).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use assetbridge_core::AssetChange;
use assetbridge_store::{EnqueueOutcome, Store};
use tokio::sync::{mpsc, oneshot};

use super::stats::{bump, WebhookStats};
use super::BacklogGate;

/// Most changes written in one transaction (a single delivery with more is written alone).
pub const MAX_GROUP_CHANGES: usize = 1_000;
/// Deliveries waiting for the committer at most; a handler beyond it waits to hand over.
pub const QUEUE_DEPTH: usize = 1_024;

/// What the inbox did with one delivery's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// This delivery's own counts.
    Own {
        accepted: u64,
        duplicates: u64,
        stale: u64,
    },
    /// Written in one transaction with other deliveries, and the store dropped some of the
    /// group's changes (duplicates, stale, several changes of one asset): the counts are the
    /// whole transaction's.
    Group {
        /// This delivery's changes (all handled: accepted, or dropped as duplicates / stale).
        stored: usize,
        deliveries: usize,
        changes: usize,
        outcome: EnqueueOutcome,
    },
}

struct Job {
    changes: Vec<AssetChange>,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// The handlers' side: hands changes to the committer task (started on first use, so that a
/// state built outside a runtime works; it ends when the last handle is dropped).
pub(crate) struct GroupCommitter {
    tx: mpsc::Sender<Job>,
    start: Mutex<Option<Worker>>,
    started: AtomicBool,
    stats: Arc<WebhookStats>,
}

struct Worker {
    rx: mpsc::Receiver<Job>,
    store: Store,
    stats: Arc<WebhookStats>,
    gate: Arc<BacklogGate>,
}

impl GroupCommitter {
    pub(crate) fn new(store: Store, stats: Arc<WebhookStats>, gate: Arc<BacklogGate>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        Self {
            tx,
            start: Mutex::new(Some(Worker {
                rx,
                store,
                stats: stats.clone(),
                gate,
            })),
            started: AtomicBool::new(false),
            stats,
        }
    }

    /// Writes `changes` durably (with whatever else is queued); `Err` = nothing of them stored.
    pub(crate) async fn commit(&self, changes: Vec<AssetChange>) -> Result<Committed, String> {
        self.ensure_started();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { changes, reply })
            .await
            .map_err(|_| "the inbox writer has stopped".to_owned())?;
        bump(&self.stats.commit_requests, 1);
        answer
            .await
            .map_err(|_| "the inbox writer stopped before answering".to_owned())?
    }

    fn ensure_started(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let worker = self.start.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = worker {
            tokio::spawn(w.run());
            self.started.store(true, Ordering::Release);
        }
    }
}

impl Worker {
    async fn run(mut self) {
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(j) => j,
                None => match self.rx.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            let mut changes = first.changes.len();
            let mut group = vec![first];
            while changes < MAX_GROUP_CHANGES {
                match self.rx.try_recv() {
                    Ok(j) if changes + j.changes.len() > MAX_GROUP_CHANGES => {
                        carry = Some(j);
                        break;
                    }
                    Ok(j) => {
                        changes += j.changes.len();
                        group.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.write(group).await;
        }
    }

    async fn write(&self, group: Vec<Job>) {
        let sizes: Vec<usize> = group.iter().map(|j| j.changes.len()).collect();
        let total: usize = sizes.iter().sum();
        let mut changes = Vec::with_capacity(total);
        let mut replies = Vec::with_capacity(group.len());
        for job in group {
            changes.extend(job.changes);
            replies.push(job.reply);
        }
        let result = self.store.enqueue(&changes).await;
        bump(&self.stats.commits, 1);
        match result {
            Ok(outcome) => {
                let s = &self.stats;
                bump(&s.accepted, outcome.accepted);
                bump(&s.duplicates, outcome.duplicates);
                bump(&s.stale, outcome.stale);
                self.gate.add(outcome.accepted);
                let answers = attribute(&sizes, outcome);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A handler whose client hung up is gone: its changes are stored anyway.
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                bump(&self.stats.commit_failures, 1);
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Each delivery's share of a group's outcome (`sizes`: changes per delivery, in order).
fn attribute(sizes: &[usize], outcome: EnqueueOutcome) -> Vec<Committed> {
    let total: usize = sizes.iter().sum();
    if sizes.len() == 1 {
        return vec![Committed::Own {
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            stale: outcome.stale,
        }];
    }
    if outcome.accepted == total as u64 {
        // Nothing dropped: every delivery's changes were all accepted.
        return sizes
            .iter()
            .map(|&n| Committed::Own {
                accepted: n as u64,
                duplicates: 0,
                stale: 0,
            })
            .collect();
    }
    sizes
        .iter()
        .map(|&n| Committed::Group {
            stored: n,
            deliveries: sizes.len(),
            changes: total,
            outcome,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(accepted: u64, duplicates: u64, stale: u64) -> EnqueueOutcome {
        EnqueueOutcome {
            accepted,
            superseded: 0,
            duplicates,
            stale,
        }
    }

    #[test]
    fn a_lone_delivery_gets_its_own_counts() {
        assert_eq!(
            attribute(&[3], outcome(1, 1, 1)),
            vec![Committed::Own {
                accepted: 1,
                duplicates: 1,
                stale: 1
            }]
        );
    }

    #[test]
    fn all_accepted_is_split_per_delivery() {
        assert_eq!(
            attribute(&[1, 2], outcome(3, 0, 0)),
            vec![
                Committed::Own {
                    accepted: 1,
                    duplicates: 0,
                    stale: 0
                },
                Committed::Own {
                    accepted: 2,
                    duplicates: 0,
                    stale: 0
                }
            ]
        );
    }

    #[test]
    fn drops_in_a_group_are_not_attributed() {
        let o = outcome(2, 1, 0);
        let a = attribute(&[1, 2], o);
        let group = |stored| Committed::Group {
            stored,
            deliveries: 2,
            changes: 3,
            outcome: o,
        };
        assert_eq!(a, vec![group(1), group(2)]);
    }
}
