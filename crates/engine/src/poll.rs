//! Polling: one pass over what changed in a DAM listing since its cursor.
//!
//! A listing feeds either one family (its own listing: `[dam] family_param` or the family's
//! `query`) or, with a routing table ([`RoutedListing`]), every family the table names: each
//! asset of the one listing goes to the family its route gives, and an asset no route matches
//! is skipped and counted ([`routing::SKIP_REASON`]), not failed. Either way the cursor is the
//! listing's own, advanced strictly in page order past pages fully handled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use assetbridge_core::routing::{self, CompiledRoutes};
use assetbridge_core::{AssetChange, ChangeKind, Cursor};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::reconcile::PassMarks;
use crate::{Engine, EngineError, FamilyPlan, SyncReport, WriteItem};

/// The cursor name of the routed listing in the state store (never an Akeneo family code,
/// which has only letters, digits and `_`).
pub const ROUTED_LISTING: &str = "(routed)";

/// The name of the report row of a routed listing's changes that went to no family: upserts
/// no route matches (`skipped`) and deletions of assets no routed family holds (`kept`).
pub const UNROUTED: &str = "(unrouted)";

/// One DAM listing feeding several families through a routing table (`[routing] poll = true`).
#[derive(Debug)]
pub struct RoutedListing {
    /// The routing table.
    pub routes: Arc<CompiledRoutes>,
    /// Query parameters of the listing (besides `[dam] extra_query`). Default: none — every
    /// asset of the DAM.
    pub query: Vec<(String, String)>,
}

impl RoutedListing {
    /// The families the listing feeds: every family a route or the default names.
    pub fn families(&self) -> Vec<String> {
        self.routes
            .families()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

/// What a pass reads.
#[derive(Clone)]
pub(crate) enum Feed {
    /// One family's own listing.
    Family(FamilyPlan),
    /// The routed listing.
    Routed(Arc<RoutedListing>),
}

impl Feed {
    /// The name the listing's cursor is stored under.
    fn key(&self) -> &str {
        match self {
            Feed::Family(p) => &p.code,
            Feed::Routed(_) => ROUTED_LISTING,
        }
    }

    fn query(&self) -> &[(String, String)] {
        match self {
            Feed::Family(p) => &p.query,
            Feed::Routed(r) => &r.query,
        }
    }
}

/// What one pass over a listing did.
#[derive(Debug, Default)]
pub(crate) struct PassOutcome {
    /// Per family, in the engine's order of families (families the pass fed only).
    pub reports: Vec<(String, SyncReport)>,
    /// Changes of a routed listing that went to no family.
    pub unrouted: SyncReport,
    /// Whether the listing was read to its end (not stopped by shutdown or backpressure).
    pub complete: bool,
}

/// The outcome of a routed polling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutedReport {
    /// What each routed family received, in configuration order.
    pub families: Vec<(String, SyncReport)>,
    /// The changes that went to no family: upserts no route matches are `skipped` (with
    /// [`routing::SKIP_REASON`]); deletions of assets no routed family holds are `kept`.
    pub unrouted: SyncReport,
}

impl Engine {
    /// Feeds the families a routing table names from one DAM listing (see
    /// [`RoutedListing`]). Default: none (each family polls its own listing).
    pub fn with_routed_listing(mut self, listing: RoutedListing) -> Self {
        self.routed = Some(Arc::new(listing));
        self
    }

    /// The routed listing, if configured.
    pub fn routed_listing(&self) -> Option<&RoutedListing> {
        self.routed.as_deref()
    }

    /// Whether `family` is fed by the routed listing rather than its own.
    pub fn is_routed(&self, family: &str) -> bool {
        self.routed
            .as_ref()
            .is_some_and(|r| r.routes.families().contains(&family))
    }

    /// One polling pass of a family.
    ///
    /// Streams the DAM's changes since the family's cursor (minus the overlap window) page by
    /// page, writes up to `pages_in_flight` pages at once (a page that finishes makes room for
    /// the next at once, whatever the pages before it), and advances the cursor strictly in
    /// page order, only past pages whose every change is written, unchanged, dead-lettered or
    /// durable in the inbox. Memory is bounded by `pages_in_flight` pages (and the small
    /// outcomes of at most [`FINISHED_AHEAD`] pages finished ahead of a slower one), whatever
    /// the size of the DAM. With `full`, the pass starts from the beginning of the DAM (the
    /// cursor never moves backwards).
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
        let out = self
            .poll_pass(&Feed::Family(plan.clone()), full, stop, None)
            .await?;
        Ok(out
            .reports
            .into_iter()
            .next()
            .map(|(_, r)| r)
            .unwrap_or_default())
    }

    /// One polling pass of the routed listing (see [`RoutedListing`]): like
    /// [`sync_family`](Self::sync_family), with one cursor for the listing ([`ROUTED_LISTING`]).
    /// Without a routed listing configured, does nothing.
    pub async fn sync_routed(&self, full: bool) -> Result<RoutedReport, EngineError> {
        self.sync_routed_until(full, &CancellationToken::new())
            .await
    }

    /// [`sync_routed`](Self::sync_routed) that stops early when `stop` is cancelled.
    pub async fn sync_routed_until(
        &self,
        full: bool,
        stop: &CancellationToken,
    ) -> Result<RoutedReport, EngineError> {
        let Some(routed) = self.routed.clone() else {
            return Ok(RoutedReport::default());
        };
        let out = self
            .poll_pass(&Feed::Routed(routed), full, stop, None)
            .await?;
        Ok(RoutedReport {
            families: out.reports,
            unrouted: out.unrouted,
        })
    }

    /// The families a feed writes to, in the engine's order.
    pub(crate) fn feed_families(&self, feed: &Feed) -> Vec<FamilyPlan> {
        match feed {
            Feed::Family(p) => vec![p.clone()],
            Feed::Routed(r) => {
                let named = r.routes.families();
                self.families
                    .iter()
                    .filter(|p| named.contains(&p.code.as_str()))
                    .cloned()
                    .collect()
            }
        }
    }

    /// One pass over a listing: stream its pages, hand each page's changes to their families
    /// (`marks`: a reconciliation pass, see [`crate::reconcile`]), advance the listing's cursor
    /// in page order.
    pub(crate) async fn poll_pass(
        &self,
        feed: &Feed,
        full: bool,
        stop: &CancellationToken,
        marks: Option<Arc<PassMarks>>,
    ) -> Result<PassOutcome, EngineError> {
        let families = self.feed_families(feed);
        for p in &families {
            self.observer.family_started(&p.code);
        }
        let finish = |out: &PassOutcome| {
            for (family, report) in &out.reports {
                self.observer.family_finished(family, report);
            }
        };
        let mut outcome = PassOutcome {
            reports: families
                .iter()
                .map(|p| (p.code.clone(), SyncReport::default()))
                .collect(),
            ..PassOutcome::default()
        };
        let key = feed.key().to_owned();
        let gate = BacklogGate::new(self.clone(), &key);
        if !gate.clone().open(0).await {
            finish(&outcome);
            return Ok(outcome);
        }
        let stored = self.store.cursor(&key).await?;
        let since = if full {
            None
        } else {
            stored.as_ref().map(|c| c.since(self.options.overlap))
        };
        info!(listing = %key, since = ?since, full, "polling the DAM");
        let stop = stop.clone();
        let stopped = Arc::new(AtomicBool::new(false));
        let stopped_in = stopped.clone();
        let pages = self.dam.changes(since, feed.query()).take_while(move |page| {
            let (gate, stop, stopped) = (gate.clone(), stop.clone(), stopped_in.clone());
            let changes = page.as_ref().map_or(0, |p| p.changes.len());
            async move {
                let go = if stop.is_cancelled() {
                    info!(listing = %gate.family, "shutting down: the pass reads no further page");
                    false
                } else {
                    gate.open(changes).await
                };
                if !go {
                    stopped.store(true, Ordering::SeqCst);
                }
                go
            }
        });
        // Each page is written by its own task: the pages in flight keep making progress while
        // this loop awaits the store to advance the cursor (a page suspended halfway through a
        // store transaction would otherwise hold the SQLite writer that the cursor needs).
        // Pages finish in any order — a page that is done frees its place for the next one at
        // once, rather than waiting behind a slower page before it — and their outcomes are
        // taken in page order ([`InOrder`]), so the cursor still only moves past pages whose
        // every change is handled.
        let in_flight = self.options.pages_in_flight.max(1);
        let mut pages = std::pin::pin!(pages);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut order = InOrder::default();
        let mut assets = AssetsInFlight::default();
        let mut spawned: u64 = 0;
        let mut exhausted = false;
        let mut cursor = CursorKeeper::new(stored);
        let failed: Result<(), EngineError> = 'pass: loop {
            while !exhausted && running.len() < in_flight && order.waiting() < FINISHED_AHEAD {
                let Some(page) = pages.next().await else {
                    exhausted = true;
                    break;
                };
                let engine = self.clone();
                let feed = feed.clone();
                let marks = marks.clone();
                let seq = spawned;
                spawned += 1;
                let ids = page.as_ref().map(|p| p.changes.iter().map(|c| c.dam_id()));
                let (entered, earlier) = match ids {
                    Ok(ids) => assets.enter(seq, ids),
                    Err(_) => assets.enter(seq, std::iter::empty()),
                };
                let task = tokio::spawn(async move {
                    // Held as long as this task runs: its drop tells the later pages that list
                    // one of this page's assets that they may write.
                    let _entered = entered;
                    for e in earlier {
                        let _ = e.await;
                    }
                    let page = page?;
                    let done = engine
                        .handle_page(&feed, page.changes, marks.as_deref())
                        .await?;
                    Ok::<_, EngineError>((done, page.last))
                });
                running.push(async move { (seq, task.await) });
            }
            let Some((seq, done)) = running.next().await else {
                break 'pass Ok(());
            };
            assets.leave(seq);
            for done in order.finished(seq, done) {
                let ((by_family, unrouted), last) =
                    match done.map_err(|e| EngineError::Task(e.to_string())) {
                        Ok(Ok(page)) => page,
                        Ok(Err(e)) | Err(e) => break 'pass Err(e),
                    };
                if let Some(last) = last {
                    if let Err(e) = cursor.advance(self, &key, last).await {
                        break 'pass Err(e);
                    }
                }
                for (family, report) in by_family {
                    if let Some((_, total)) = outcome.reports.iter_mut().find(|(f, _)| *f == family)
                    {
                        *total += &report;
                    }
                    self.observer.batch_done(&family, &report);
                }
                outcome.unrouted += &unrouted;
            }
        };
        if let Err(e) = failed {
            // The pages still in flight (spawned tasks: dropping their handles would not stop
            // them) finish before the pass returns, so that none is still writing when the
            // caller gives up the family's lock and another pass may begin. The pages before
            // the failed one are durable: the cursor may move past them (the pages after it
            // are not taken: it stays here).
            while running.next().await.is_some() {}
            if let Err(save) = cursor.save(self, &key).await {
                warn!(error = %save, "cannot save the cursor of a failed pass; the next pass re-reads from the last one saved");
            }
            self.flush_outcomes().await;
            return Err(e);
        }
        cursor.save(self, &key).await?;
        self.flush_outcomes().await;
        outcome.complete = !stopped.load(Ordering::SeqCst);
        finish(&outcome);
        Ok(outcome)
    }

    /// One page of a listing: its changes, grouped by family, written (or reconciled).
    /// Returns the report of each family the page fed, and that of the unrouted changes.
    async fn handle_page(
        &self,
        feed: &Feed,
        changes: Vec<ChangeKind>,
        marks: Option<&PassMarks>,
    ) -> Result<(Vec<(String, SyncReport)>, SyncReport), EngineError> {
        let mut unrouted = SyncReport::default();
        let groups: Vec<(FamilyPlan, Vec<ChangeKind>)> = match feed {
            Feed::Family(plan) => vec![(plan.clone(), changes)],
            Feed::Routed(r) => self.route_changes(r, changes, &mut unrouted).await?,
        };
        let mut out = Vec::with_capacity(groups.len());
        for (plan, changes) in groups {
            let report = match marks.and_then(|m| m.family(&plan.code)) {
                Some(pass) => self.reconcile_page(&plan, pass, changes).await?,
                None => {
                    let items = changes
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
                    self.write_changes(&plan, items).await?
                }
            };
            out.push((plan.code.clone(), report));
        }
        Ok((out, unrouted))
    }

    /// Splits a routed page by family: an upsert goes to the family its route gives (none:
    /// skipped, counted in `unrouted`); a deletion, which carries only the DAM id, goes to each
    /// routed family whose state knows that id (one store read per family for the page's
    /// deletions), or, known nowhere, is counted as `kept` in `unrouted` (nothing to delete).
    pub(crate) async fn route_changes(
        &self,
        routed: &RoutedListing,
        changes: Vec<ChangeKind>,
        unrouted: &mut SyncReport,
    ) -> Result<Vec<(FamilyPlan, Vec<ChangeKind>)>, EngineError> {
        let mut groups: BTreeMap<String, Vec<ChangeKind>> = BTreeMap::new();
        let mut deletes: Vec<ChangeKind> = Vec::new();
        for kind in changes {
            match &kind {
                ChangeKind::Upsert { asset } => match routed.routes.route(&asset.record) {
                    Some(family) if self.family(family).is_some() => {
                        groups.entry(family.to_owned()).or_default().push(kind);
                    }
                    Some(family) => {
                        warn!(dam_id = %asset.id, family, "the routing table names a family that is not configured: asset skipped");
                        unrouted.seen += 1;
                        unrouted.skipped += 1;
                    }
                    None => {
                        debug!(dam_id = %asset.id, reason = routing::SKIP_REASON, "asset skipped");
                        unrouted.seen += 1;
                        unrouted.skipped += 1;
                    }
                },
                ChangeKind::Delete { .. } => deletes.push(kind),
            }
        }
        if !deletes.is_empty() {
            let ids: Vec<String> = deletes
                .iter()
                .map(|d| match d {
                    ChangeKind::Delete { dam_id, .. } => dam_id.clone(),
                    ChangeKind::Upsert { asset } => asset.id.clone(),
                })
                .collect();
            let mut known_by: Vec<(String, assetbridge_store::KeyMap<String>)> = Vec::new();
            for family in routed.routes.families() {
                if self.family(family).is_some() {
                    known_by.push((
                        family.to_owned(),
                        self.store.asset_codes(family, &ids).await?,
                    ));
                }
            }
            for (d, id) in deletes.into_iter().zip(ids) {
                let mut sent = false;
                for (family, known) in &known_by {
                    if known.contains_key(&id) {
                        groups.entry(family.clone()).or_default().push(d.clone());
                        sent = true;
                    }
                }
                if !sent {
                    debug!(dam_id = %id, "deleted in the DAM; no routed family holds it: nothing to do");
                    unrouted.seen += 1;
                    unrouted.kept += 1;
                }
            }
        }
        Ok(groups
            .into_iter()
            .filter_map(|(family, changes)| self.family(&family).cloned().map(|p| (p, changes)))
            .collect())
    }

    /// The cursor of a family (or of [`ROUTED_LISTING`]), as stored.
    pub async fn cursor(&self, family: &str) -> Result<Option<Cursor>, EngineError> {
        Ok(self.store.cursor(family).await?)
    }
}

/// The DAM assets of the pages being written, so that a page listing an asset that an earlier
/// page still being written lists too waits for that page before it writes. Pages finish in any
/// order: an asset changed while a pass lists the DAM moves to the end of the listing and is
/// listed again, and without this the older version's page, slower (a 429 and its
/// `Retry-After`, say), could write after the newer one's and leave the PIM — and the stored
/// hash — with the older version, which no later poll pass would correct once the cursor is
/// past both (a reconciliation would). Assets are known by a 64-bit hash of their DAM id: two ids with one hash only make a
/// page wait needlessly. Memory: the ids of at most `pages_in_flight` pages.
#[derive(Default)]
struct AssetsInFlight {
    /// The latest page in flight that lists each asset.
    latest: std::collections::HashMap<u64, u64>,
    /// The pages in flight: their assets, and a signal that resolves when the page is done.
    pages: std::collections::HashMap<u64, (Vec<u64>, Entered)>,
}

/// Resolves when the page's task ends (its sender dropped).
type Entered = futures::future::Shared<tokio::sync::oneshot::Receiver<()>>;

impl AssetsInFlight {
    fn key(dam_id: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(dam_id)
    }

    /// Page `seq` (after every page entered so far) lists `ids`: returns what its task holds
    /// until it is done, and the earlier pages in flight it must wait for.
    fn enter<'a>(
        &mut self,
        seq: u64,
        ids: impl Iterator<Item = &'a str>,
    ) -> (tokio::sync::oneshot::Sender<()>, Vec<Entered>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut keys = Vec::new();
        let mut earlier = std::collections::BTreeSet::new();
        for id in ids {
            let k = Self::key(id);
            if let Some(prev) = self.latest.insert(k, seq) {
                if prev != seq {
                    earlier.insert(prev);
                }
            }
            keys.push(k);
        }
        let waits = earlier
            .into_iter()
            .filter_map(|p| self.pages.get(&p).map(|(_, done)| done.clone()))
            .collect();
        self.pages
            .insert(seq, (keys, futures::FutureExt::shared(rx)));
        (tx, waits)
    }

    /// Page `seq` is done: its assets are no longer in flight (unless a later page lists them).
    fn leave(&mut self, seq: u64) {
        if let Some((keys, _)) = self.pages.remove(&seq) {
            for k in keys {
                if self.latest.get(&k) == Some(&seq) {
                    self.latest.remove(&k);
                }
            }
        }
    }
}

/// Pages finished ahead of an unfinished earlier one after which a pass reads no further DAM
/// page until that one finishes: bounds what [`InOrder`] holds (each page's small outcome:
/// its counts and last cursor) when one page is slow (retrying a PIM call, say).
const FINISHED_AHEAD: usize = 256;

/// Outcomes that arrive in any order, taken in sequence order: the outcome of page `n` is
/// given out once those of pages `0..n` have been.
struct InOrder<T> {
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        Self {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> InOrder<T> {
    /// Page `seq` finished with `outcome`: the outcomes now next in order (none while an
    /// earlier page is unfinished).
    fn finished(&mut self, seq: u64, outcome: T) -> Vec<T> {
        self.waiting.insert(seq, outcome);
        let mut ready = Vec::new();
        while let Some(o) = self.waiting.remove(&self.next) {
            ready.push(o);
            self.next += 1;
        }
        ready
    }

    /// Outcomes held until an earlier page finishes.
    fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// How often a pass stores its cursor while pages keep coming (and once more at its end).
const CURSOR_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The cursor of a pass in progress: advanced after each page in page order, stored at most
/// once a second and at the end of the pass (one synced commit a second instead of one a
/// page). A crash re-reads at most a second of pages, whose unchanged assets cost no PIM call;
/// the cursor still never moves past a change that is not durable.
struct CursorKeeper {
    current: Option<Cursor>,
    unsaved: bool,
    saved_at: std::time::Instant,
}

impl CursorKeeper {
    fn new(stored: Option<Cursor>) -> Self {
        Self {
            current: stored,
            unsaved: false,
            saved_at: std::time::Instant::now(),
        }
    }

    async fn advance(
        &mut self,
        engine: &Engine,
        key: &str,
        last: Cursor,
    ) -> Result<(), EngineError> {
        if self.current.as_ref().is_none_or(|c| &last > c) {
            self.current = Some(last);
            self.unsaved = true;
        }
        if self.saved_at.elapsed() >= CURSOR_SAVE_EVERY {
            self.save(engine, key).await?;
        }
        Ok(())
    }

    async fn save(&mut self, engine: &Engine, key: &str) -> Result<(), EngineError> {
        if let (true, Some(c)) = (self.unsaved, &self.current) {
            engine.store.set_cursor(key, c).await?;
            self.unsaved = false;
        }
        self.saved_at = std::time::Instant::now();
        Ok(())
    }
}

/// The poller's backpressure check: open while the inbox is below `backlog_limit`.
///
/// The inbox is counted (one query on a reader connection) before a pass starts and after each
/// DAM page is read — unless the last count is fresh ([`BACKLOG_RECOUNT_AFTER`]) and, with
/// every change admitted since then counted as if it went to the inbox (a retry each), still
/// below half the bound. So a pass far below the bound counts a few times a second rather than
/// once a page (each count is a round trip to a SQLite thread: ≈ 1 of the 8 statements of a
/// page at zero latency), and near the bound it counts before every page, as before.
#[derive(Clone)]
struct BacklogGate {
    engine: Engine,
    family: String,
    last: Arc<std::sync::Mutex<Option<BacklogCount>>>,
}

/// The gate's last count of the inbox.
#[derive(Clone, Copy)]
struct BacklogCount {
    /// Pending + in flight at the count.
    size: u64,
    at: std::time::Instant,
    /// Changes admitted since the count (pages let through without counting again).
    admitted: u64,
}

impl BacklogCount {
    /// Whether `changes` more may be let through on this count: it is fresh and, were every
    /// change admitted since (these included) to go to the inbox, the inbox would still be
    /// below half of `limit`.
    fn still_far_below(&self, limit: u64, changes: u64) -> bool {
        self.at.elapsed() < BACKLOG_RECOUNT_AFTER && self.size + self.admitted + changes < limit / 2
    }
}

/// How long the gate may go on from one count of the inbox without counting again (only while
/// far below the bound: see [`BacklogGate`]).
const BACKLOG_RECOUNT_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

impl BacklogGate {
    fn new(engine: Engine, family: &str) -> Self {
        Self {
            engine,
            family: family.to_owned(),
            last: Arc::default(),
        }
    }

    /// Whether the poller may write a page of `changes` changes (`0`: whether a pass may
    /// start). A store error counts as open: the writes that follow meet the same error and
    /// report it.
    async fn open(self, changes: usize) -> bool {
        let limit = self.engine.options.backlog_limit;
        if limit == 0 {
            return true;
        }
        let changes = changes as u64;
        {
            let mut last = self.last.lock().expect("the gate's lock is never poisoned");
            if let Some(c) = last.as_mut().filter(|c| c.still_far_below(limit, changes)) {
                c.admitted += changes;
                return true;
            }
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
                    *self.last.lock().expect("the gate's lock is never poisoned") =
                        Some(BacklogCount {
                            size,
                            at: std::time::Instant::now(),
                            admitted: changes,
                        });
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{AssetsInFlight, InOrder};

    /// Whether every future of `waits` has resolved (polled once, without waiting).
    fn resolved(waits: &[super::Entered]) -> bool {
        use futures::FutureExt;
        waits.iter().all(|w| w.clone().now_or_never().is_some())
    }

    #[test]
    fn a_page_waits_for_the_earlier_pages_in_flight_that_list_one_of_its_assets() {
        let mut assets = AssetsInFlight::default();
        let (p0, w0) = assets.enter(0, ["a", "b"].into_iter());
        let (p1, w1) = assets.enter(1, ["c"].into_iter());
        assert!(w0.is_empty() && w1.is_empty(), "nothing shared yet");
        // Page 2 lists `b` (page 0) and `c` (page 1): it waits for both, page 0 first done.
        let (p2, w2) = assets.enter(2, ["b", "c", "d"].into_iter());
        assert_eq!(w2.len(), 2);
        assert!(!resolved(&w2));
        drop(p0);
        assets.leave(0);
        assert!(!resolved(&w2), "page 1 still writes `c`");
        drop(p1);
        assets.leave(1);
        assert!(resolved(&w2));
        // Page 3 lists `d` and `b`: only page 2 (the latest to list them) is in its way.
        let (p3, w3) = assets.enter(3, ["d", "b"].into_iter());
        assert_eq!(w3.len(), 1);
        assert!(!resolved(&w3));
        drop(p2);
        assert!(
            resolved(&w3),
            "a page whose task ended frees the next before `leave`"
        );
        assets.leave(2);
        drop(p3);
        assets.leave(3);
        // Nothing left in flight: a page listing the same assets waits for none.
        let (_p4, w4) = assets.enter(4, ["a", "b", "c", "d"].into_iter());
        assert!(w4.is_empty());
        assert_eq!(assets.pages.len(), 1);
        assert_eq!(assets.latest.len(), 4);
        // An asset listed twice on one page is not a wait on itself.
        let (_p5, w5) = assets.enter(5, ["e", "e"].into_iter());
        assert!(w5.is_empty());
    }

    #[test]
    fn outcomes_are_given_out_in_page_order_whatever_order_pages_finish_in() {
        let mut order = InOrder::default();
        assert_eq!(order.finished(1, "p1"), Vec::<&str>::new());
        assert_eq!(order.finished(3, "p3"), Vec::<&str>::new());
        assert_eq!(order.waiting(), 2);
        // Page 0 releases itself and page 1; page 3 still waits for page 2.
        assert_eq!(order.finished(0, "p0"), ["p0", "p1"]);
        assert_eq!(order.waiting(), 1);
        assert_eq!(order.finished(2, "p2"), ["p2", "p3"]);
        assert_eq!(order.waiting(), 0);
        assert_eq!(order.finished(4, "p4"), ["p4"]);
    }

    #[test]
    fn the_backlog_gate_counts_again_near_the_bound_or_after_a_while() {
        use super::{BacklogCount, BACKLOG_RECOUNT_AFTER};
        let now = std::time::Instant::now();
        let count = |size, admitted, at| BacklogCount { size, at, admitted };
        // Far below the bound, fresh: pages go through on the count.
        assert!(count(0, 0, now).still_far_below(100_000, 100));
        assert!(count(1_000, 48_800, now).still_far_below(100_000, 100));
        // What was admitted since counts as if it all went to the inbox: half the bound is
        // reached, so the inbox is counted again.
        assert!(!count(1_000, 48_900, now).still_far_below(100_000, 100));
        assert!(!count(0, 0, now).still_far_below(150, 100));
        // A count too old is taken again, however far below the bound.
        let old = now - BACKLOG_RECOUNT_AFTER;
        assert!(!count(0, 0, old).still_far_below(100_000, 100));
    }

    proptest::proptest! {
        /// Any finishing order gives every outcome out exactly once, in page order.
        #[test]
        fn any_finishing_order_gives_page_order(
            perm in Just((0u64..60).collect::<Vec<_>>()).prop_shuffle()
        ) {
            let mut order = InOrder::default();
            let mut out = Vec::new();
            for seq in perm {
                out.extend(order.finished(seq, seq));
            }
            prop_assert_eq!(out, (0u64..60).collect::<Vec<_>>());
            prop_assert_eq!(order.waiting(), 0);
        }
    }
}
