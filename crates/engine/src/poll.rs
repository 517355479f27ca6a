//! Polling: one pass over what changed in the DAM since a family's cursor.

use assetbridge_core::{AssetChange, Cursor};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Engine, EngineError, FamilyPlan, SyncReport, WriteItem};

impl Engine {
    /// One polling pass of a family.
    ///
    /// Streams the DAM's changes since the family's cursor (minus the overlap window) page by
    /// page, writes up to `pages_in_flight` pages at once, and advances the cursor strictly in
    /// page order, only past pages whose every change is written, unchanged, dead-lettered or
    /// durable in the inbox. Memory is bounded by `pages_in_flight` pages, whatever the size of
    /// the DAM. With `full`, the pass starts from the beginning of the DAM (the cursor never
    /// moves backwards).
    ///
    /// Backpressure: while the inbox holds [`SyncOptions::backlog_limit`](crate::SyncOptions)
    /// entries or more, a pass does not start, and a pass under way reads no further page (the
    /// pages already read are finished and the cursor moves past them only); the next pass
    /// resumes from the cursor once the inbox has drained below the bound.
    pub async fn sync_family(
        &self,
        plan: &FamilyPlan,
        full: bool,
    ) -> Result<SyncReport, EngineError> {
        self.sync_family_until(plan, full, &CancellationToken::new())
            .await
    }

    /// [`sync_family`](Self::sync_family) that stops early when `stop` is cancelled (graceful
    /// shutdown): no further DAM page is read, the pages in flight are finished and the cursor
    /// moves past them; the next pass resumes from there.
    pub async fn sync_family_until(
        &self,
        plan: &FamilyPlan,
        full: bool,
        stop: &CancellationToken,
    ) -> Result<SyncReport, EngineError> {
        self.observer.family_started(&plan.code);
        let gate = BacklogGate::new(self.clone(), &plan.code);
        if !gate.clone().open().await {
            self.observer
                .family_finished(&plan.code, &SyncReport::default());
            return Ok(SyncReport::default());
        }
        let stored = self.store.cursor(&plan.code).await?;
        let since = if full {
            None
        } else {
            stored.as_ref().map(|c| c.since(self.options.overlap))
        };
        info!(family = %plan.code, since = ?since, "polling the DAM");
        let stop = stop.clone();
        let pages = self.dam.changes(since, &plan.query).take_while(move |_| {
            let (gate, stop) = (gate.clone(), stop.clone());
            async move {
                if stop.is_cancelled() {
                    info!(family = %gate.family, "shutting down: the pass reads no further page");
                    return false;
                }
                gate.open().await
            }
        });
        // Each page is written by its own task: the pages in flight keep making progress while
        // this loop awaits the store to advance the cursor (a page suspended halfway through a
        // store transaction would otherwise hold the SQLite writer that the cursor needs).
        let written = pages
            .map(|page| {
                let engine = self.clone();
                let plan = plan.clone();
                tokio::spawn(async move {
                    let page = page?;
                    let items = page
                        .changes
                        .into_iter()
                        .map(|kind| {
                            WriteItem::fresh(AssetChange {
                                family: plan.code.clone(),
                                event_id: None,
                                source: "poll".to_owned(),
                                kind,
                            })
                        })
                        .collect();
                    let report = engine.write_changes(&plan, items).await?;
                    Ok::<_, EngineError>((report, page.last))
                })
            })
            .buffered(self.options.pages_in_flight.max(1));
        let mut written = std::pin::pin!(written);

        let mut total = SyncReport::default();
        let mut cursor = stored;
        while let Some(done) = written.next().await {
            let (report, last) = done.map_err(|e| EngineError::Task(e.to_string()))??;
            if let Some(last) = last {
                if cursor.as_ref().is_none_or(|c| &last > c) {
                    self.store.set_cursor(&plan.code, &last).await?;
                    cursor = Some(last);
                }
            }
            total += &report;
            self.observer.batch_done(&plan.code, &report);
        }
        self.observer.family_finished(&plan.code, &total);
        Ok(total)
    }

    /// The cursor of a family, as stored.
    pub async fn cursor(&self, family: &str) -> Result<Option<Cursor>, EngineError> {
        Ok(self.store.cursor(family).await?)
    }
}

/// The poller's backpressure check: open while the inbox is below `backlog_limit`. Read before
/// each DAM page is written (one count query per page of up to 100 changes).
#[derive(Clone)]
struct BacklogGate {
    engine: Engine,
    family: String,
}

impl BacklogGate {
    fn new(engine: Engine, family: &str) -> Self {
        Self {
            engine,
            family: family.to_owned(),
        }
    }

    /// Whether the poller may write another page. A store error counts as open: the writes
    /// that follow meet the same error and report it.
    async fn open(self) -> bool {
        let limit = self.engine.options.backlog_limit;
        if limit == 0 {
            return true;
        }
        match self.engine.store.backlog().await {
            Ok(b) => {
                let size = b.pending + b.in_flight;
                if size >= limit {
                    warn!(
                        family = %self.family,
                        backlog = size,
                        backlog_limit = limit,
                        "the inbox is over its bound: the poller reads no further DAM page until it drains"
                    );
                    false
                } else {
                    true
                }
            }
            Err(e) => {
                warn!(family = %self.family, error = %e, "cannot read the inbox size");
                true
            }
        }
    }
}
