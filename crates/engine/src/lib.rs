//! The sync engine: turns DAM changes into Akeneo writes.
//!
//! - [`Engine::sync_family`]: one polling pass of a family — stream the DAM's changes since the
//!   family's cursor page by page, write each page, advance the cursor only past pages whose every
//!   change is written, dead-lettered or durable in the inbox.
//! - [`Engine::drain_inbox`] / [`Engine::run_workers`]: claim changes from the durable inbox
//!   (webhooks, queues, retries) in batches and write them the same way.
//! - [`Engine::write_changes`]: the shared core of both — map (pure), drop unchanged assets by
//!   content hash (zero PIM calls), batch-upsert the rest (≤ 100 per request, through the rate
//!   limited client), then record per-item outcomes: success → hash stored; permanent failure →
//!   dead letter with the PIM's message; transient failure → back to the inbox with backoff.
//! - [`Engine::plan_family`]: the dry run — what a polling pass would create, update (old → new
//!   values), delete, mark or skip, and why; reads only.
//! - [`Engine::reconcile_family`]: reconciliation (`sync --full`) — the whole DAM listing and
//!   the whole PIM listing compared, streamed page by page, drift repaired with the write path
//!   (see [`reconcile`]).
//! - [`Engine::sync_routed`]: one DAM listing feeding several families through the `[routing]`
//!   table ([`RoutedListing`]).
//! - [`links`]: explicit product links — the asset codes written are added to their products'
//!   asset-collection values (NDJSON batches, merged with the codes there, one linker per
//!   product at a time across processes).
//! - [`enrich`]: PIM → DAM enrichment of AEM asset metadata from product data
//!   ([`Engine::with_enrichment`]); claimed inbox changes that belong to it are enriched before
//!   the DAM → PIM write.

pub mod enrich;
mod lease;
pub mod links;
mod options;
mod plan;
mod poll;
mod product_filter;
pub mod reconcile;
mod rename;
mod replay;
mod report;
mod tally;
mod worker;
mod write;

pub use enrich::{Enricher, EnrichmentConfig, EnrichmentOutcome, EnrichmentStats};
pub use links::{LinkReport, Linker, ProductLinkConfig, ProductLinks, LINKS_FAMILY};
pub use options::{DeletionPolicy, FamilyPlan, SyncOptions};
pub use plan::{FieldChange, PlanAction, PlanEntry};
pub use poll::{RoutedListing, RoutedReport, ROUTED_LISTING, UNROUTED};
pub use product_filter::{ProductFilter, ProductFilterConfig};
pub use reconcile::{ReconcileReport, Repair, RepairKind, RoutedReconcileReport};
pub use rename::{former_code_holder, RENAME_SOURCE};
pub use report::{NoopObserver, SyncObserver, SyncReport};
pub use write::WriteItem;

use std::sync::Arc;

use assetbridge_akeneo::AkeneoClient;
use assetbridge_dam::rest::RestDam;
use assetbridge_store::Store;

/// Errors that stop a sync (as opposed to per-asset failures, which are counted and
/// dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state store: {0}")]
    Store(#[from] assetbridge_store::StoreError),
    #[error("Akeneo: {0}")]
    Pim(#[from] assetbridge_akeneo::AkeneoError),
    #[error("DAM: {0}")]
    Dam(#[from] assetbridge_dam::rest::DamError),
    #[error("mapping of family `{family}`: {source}")]
    Mapping {
        family: String,
        source: assetbridge_core::MappingError,
    },
    #[error("a write task stopped: {0}")]
    Task(String),
    #[error("the inbox leases of this round could not be renewed; it started no further write")]
    LeaseLost,
}

/// Everything a sync needs, wired once.
#[derive(Clone)]
pub struct Engine {
    pub(crate) pim: AkeneoClient,
    pub(crate) store: Store,
    pub(crate) dam: RestDam,
    pub(crate) families: Arc<Vec<FamilyPlan>>,
    pub(crate) options: SyncOptions,
    pub(crate) observer: Arc<dyn SyncObserver>,
    pub(crate) enrichment: Option<Arc<enrich::Enricher>>,
    pub(crate) product_filters: Arc<product_filter::ProductFilters>,
    /// Explicit product links per family (`[[families]] link`).
    pub(crate) product_links: Arc<std::collections::HashMap<String, Arc<links::ProductLinks>>>,
    /// Rung when pending product links are recorded in this process.
    pub(crate) link_wake: Arc<tokio::sync::Notify>,
    /// The routed listing (`[routing] poll = true`), if any.
    pub(crate) routed: Option<Arc<RoutedListing>>,
    pub(crate) outcomes: Arc<tally::OutcomeTally>,
}

impl Engine {
    pub fn new(
        pim: AkeneoClient,
        store: Store,
        dam: RestDam,
        families: Vec<FamilyPlan>,
        options: SyncOptions,
    ) -> Self {
        Self {
            pim,
            store,
            dam,
            families: Arc::new(families),
            options,
            observer: Arc::new(NoopObserver),
            enrichment: None,
            product_filters: Arc::new(Default::default()),
            product_links: Arc::new(Default::default()),
            link_wake: Arc::new(tokio::sync::Notify::new()),
            routed: None,
            outcomes: Arc::new(Default::default()),
        }
    }

    /// Only the assets of `family` whose product (SKU per `filter`) exists in the PIM are
    /// synchronised; the others are skipped (counted as `skipped`). Existence is asked in
    /// batches (100 identifiers per request) and cached. Default: no filter.
    pub fn with_product_filter(mut self, family: &str, filter: ProductFilter) -> Self {
        Arc::make_mut(&mut self.product_filters).insert(family.to_owned(), Arc::new(filter));
        self
    }

    /// Reports progress to `observer` (progress bars, logs, metrics).
    pub fn with_observer(mut self, observer: Arc<dyn SyncObserver>) -> Self {
        self.observer = observer;
        self
    }

    pub fn families(&self) -> &[FamilyPlan] {
        &self.families
    }

    pub fn family(&self, code: &str) -> Option<&FamilyPlan> {
        self.families.iter().find(|f| f.code == code)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn pim(&self) -> &AkeneoClient {
        &self.pim
    }

    /// The DAM client (its request counters feed `/metrics`).
    pub fn dam(&self) -> &RestDam {
        &self.dam
    }

    pub fn options(&self) -> &SyncOptions {
        &self.options
    }
}
