//! PIM → DAM enrichment: AEM asset metadata written from Akeneo product data (Adobe's "AEM
//! Assets events for PIM integration" flow, as a feature of the connector).
//!
//! An `aem.assets.asset.processing_completed` event — from the Adobe webhook, the I/O Events
//! journal or a queue, i.e. an inbox change whose record carries that event type under
//! `"_event_type"` — names an asset. Enrichment finds the asset's product by a configured key
//! (the asset name as Adobe's tutorial does, a regex over the name or path, or a metadata
//! field), reads the configured product values from Akeneo, and writes them to the asset with
//! ONE JSON Patch (`PATCH {author}/adobe/assets/{assetId}/metadata`, through
//! [`AemClient`], which adds the IMS bearer token, `X-Api-Key`, `If-Match` and
//! `X-Adobe-Accept-Experimental: 1`).
//!
//! - **Safe hosts**: the author host comes from the event (`repo:repositoryId`) but is only
//!   called when it is in `[aem] allowed_hosts`; a foreign host is a dead letter, with no call.
//! - **Idempotent**: the asset's metadata is read first; no PATCH when it already holds the
//!   values. **Loop-safe**: a `metadata_updated` event whose changed keys (`event:created`,
//!   `event:updated`, `event:deleted`) are all enrichment targets is our own echo — it is
//!   dropped for both directions (no enrichment, no DAM → PIM write). See `docs/enrichment.md`.
//! - **Batched**: the enrichment events of one claimed inbox batch share their product reads
//!   (identifier `IN`, ≤ 100 per request), and products are cached briefly (TTL, bounded).
//! - **Unknown product**: `skip` (counted, logged with the key) or `mark` (writes
//!   `status_field = status_not_found`).
//! - **PIM side**: [`Enricher::poll_products_once`] reads products updated since a durable
//!   cursor and re-enriches the assets linked to them (links learned when enriching).
//! - **Failures** follow the pipeline: transient (AEM 5xx/429, IMS or PIM unavailable) → retry
//!   with backoff through the inbox; permanent (asset 404, 403, host not allowed, a request AEM
//!   refuses) → dead letter with the reason.

pub(crate) mod cache;
mod config;
pub(crate) mod format;
mod links;
mod poll;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoError};
use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_dam::aem::{AemClient, AemError, AssetMetadata, ImsError, PatchOp};
use assetbridge_store::{Claimed, DeadLetterReason, Store, StoreError};
use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

use crate::{Engine, EngineError, SyncReport, WriteItem};

pub use config::{
    ConfigIssue, EnrichmentConfig, FieldRule, KeySource, MultiFormat, OnMissing, ProductKey,
    ProductPollConfig, ProductProperty, UnknownProduct, ValueFormat, METADATA_UPDATED,
    PROCESSING_COMPLETED,
};
pub use links::LINKS_FAMILY;
pub use poll::{ProductPollReport, PRODUCTS_CURSOR};

use cache::ProductCache;
use config::Compiled;
use links::{LinkEdit, Links};

/// The reserved inbox family of enrichment's own work (re-enrichment after a product change,
/// and the retry of an enrichment whose change also went DAM → PIM).
pub const ENRICHMENT_FAMILY: &str = "__enrichment";
/// `source` of the changes enrichment enqueues itself.
pub const ENRICHMENT_SOURCE: &str = "enrichment";
/// The event type of a re-enrichment change (in its record's `"_event_type"`).
pub const REENRICH_EVENT: &str = "assetbridge.enrichment.reenrich";
/// The record key holding an Adobe change's event type (the Adobe webhook and journal sources
/// write it; the same as `assetbridge_sources::webhook::ADOBE_EVENT_TYPE_KEY`).
pub const EVENT_TYPE_KEY: &str = "_event_type";
/// The record key of a re-enrichment change naming the product that caused it.
const PRODUCT_KEY: &str = "_product";

/// Errors that stop an enrichment operation as a whole (per-asset failures are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum EnrichmentError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(#[from] ConfigIssue),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The PIM failed.
    #[error("Akeneo: {0}")]
    Pim(#[from] AkeneoError),
}

/// What enrichment did with one inbox change.
#[derive(Debug, Clone, PartialEq)]
pub enum EnrichmentOutcome {
    /// Not an enrichment change: left to the DAM → PIM writer.
    NotMine,
    /// The asset's metadata was patched with `operations` JSON Patch operations.
    Patched { operations: usize },
    /// The asset already held the product's values: no PATCH.
    Unchanged,
    /// No product in the PIM for the asset's key(s); `marked`: the status field says so.
    NotFound { keys: Vec<String>, marked: bool },
    /// The asset gives no product key (no name, the regex does not match, no such field).
    NoKey { reason: String },
    /// The echo of our own write (a `metadata_updated` touching only our fields): nothing to do
    /// in either direction.
    Echo,
    /// An enrichment change that needs nothing (a deletion, an event type that is not a
    /// trigger).
    Ignored { reason: String },
    /// A re-enrichment of an asset that no longer exists: its link was dropped.
    Gone,
    /// A transient failure: to be retried later.
    Retry { error: String },
    /// A permanent failure: to the dead letters with this kind and message.
    Failed { kind: String, message: String },
}

/// Counters of an [`Enricher`] since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnrichmentStats {
    /// Enrichment jobs run (events and re-enrichments, one per asset and batch).
    pub jobs: u64,
    /// Assets patched.
    pub patched: u64,
    /// Assets that already held the values (no PATCH).
    pub unchanged: u64,
    /// Assets whose product is unknown (skipped or marked).
    pub not_found: u64,
    /// Of those, assets marked with the status field.
    pub marked: u64,
    /// Assets without a product key.
    pub no_key: u64,
    /// Echoes of our own writes dropped.
    pub echoes: u64,
    /// Enrichment changes needing nothing (deletions, non-trigger events).
    pub ignored: u64,
    /// Re-enrichments of assets gone from AEM.
    pub gone: u64,
    /// Transient failures (retried later).
    pub retrying: u64,
    /// Permanent failures (dead letters).
    pub failed: u64,
    /// Product read requests sent to the PIM (≤ 100 identifiers each).
    pub product_requests: u64,
    /// Product look-ups answered by the cache.
    pub product_cache_hits: u64,
    /// `GET .../metadata` calls.
    pub aem_gets: u64,
    /// `PATCH .../metadata` calls.
    pub aem_patches: u64,
    /// Re-enrichment changes enqueued (product poll, and retries of enrichments of changes that
    /// also went DAM → PIM).
    pub reenrich_enqueued: u64,
}

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    patched: AtomicU64,
    unchanged: AtomicU64,
    not_found: AtomicU64,
    marked: AtomicU64,
    no_key: AtomicU64,
    echoes: AtomicU64,
    ignored: AtomicU64,
    gone: AtomicU64,
    retrying: AtomicU64,
    failed: AtomicU64,
    product_requests: AtomicU64,
    product_cache_hits: AtomicU64,
    aem_gets: AtomicU64,
    aem_patches: AtomicU64,
    reenrich_enqueued: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The enrichment feature: configuration, clients, product cache and links. Share it with
/// `Arc`; give it to the engine with [`Engine::with_enrichment`].
pub struct Enricher {
    config: EnrichmentConfig,
    compiled: Compiled,
    pim: AkeneoClient,
    aem: Arc<AemClient>,
    store: Store,
    identifier_attribute: String,
    cache: ProductCache,
    links: Links,
    counters: Counters,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One asset to enrich, shared by the changes of a batch that name it.
struct Job {
    indexes: Vec<usize>,
    host: String,
    asset_id: String,
    /// For a re-enrichment: the product whose change caused it.
    reenrich_of: Option<String>,
    event_assets: Option<Map<String, Value>>,
    event_repository: Option<Map<String, Value>>,
    keys: Option<Vec<String>>,
    metadata: Option<AssetMetadata>,
    outcome: Option<EnrichmentOutcome>,
}

fn failed(kind: &str, message: impl Into<String>) -> EnrichmentOutcome {
    EnrichmentOutcome::Failed {
        kind: kind.to_owned(),
        message: message.into(),
    }
}

fn record_of(change: &AssetChange) -> Option<&Value> {
    match &change.kind {
        ChangeKind::Upsert { asset } => Some(&asset.record),
        ChangeKind::Delete { .. } => None,
    }
}

fn event_type_of(record: &Value) -> Option<&str> {
    record.get(EVENT_TYPE_KEY).and_then(Value::as_str)
}

fn host_of(record: &Value) -> Option<&str> {
    record
        .get("repositoryMetadata")
        .and_then(|r| r.get("repo:repositoryId"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|h| !h.is_empty())
}

/// Whether AEM's current value already is the wanted one (numbers and their text, a list of one
/// and its item, are the same).
fn same_value(current: &Value, wanted: &Value) -> bool {
    if current == wanted {
        return true;
    }
    match (current, wanted) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
        }
        (Value::Array(a), w) if a.len() == 1 => same_value(&a[0], w),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::String(s), Value::Bool(b)) | (Value::Bool(b), Value::String(s)) => {
            s.trim() == b.to_string()
        }
        _ => false,
    }
}

impl Enricher {
    /// Checks the configuration and builds the enricher. `pim` reads products (its
    /// `product_identifier_attribute` is the identifier the product key is matched against);
    /// `aem` writes metadata (its allow-list decides which hosts may be called); `store` keeps
    /// the product → asset links and the product poll's cursor.
    pub fn new(
        config: EnrichmentConfig,
        pim: AkeneoClient,
        aem: Arc<AemClient>,
        store: Store,
    ) -> Result<Self, EnrichmentError> {
        let compiled = config.compile()?;
        let identifier_attribute = pim.config().product_identifier_attribute.clone();
        Ok(Self {
            cache: ProductCache::new(
                Duration::from_secs(config.cache_ttl_secs),
                config.cache_max_products,
            ),
            links: Links::new(store.clone(), config.product_poll.max_assets_per_product),
            compiled,
            pim,
            aem,
            store,
            identifier_attribute,
            counters: Counters::default(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EnrichmentConfig {
        &self.config
    }

    /// The AEM client in use.
    pub fn aem(&self) -> &Arc<AemClient> {
        &self.aem
    }

    /// The counters so far.
    pub fn stats(&self) -> EnrichmentStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EnrichmentStats {
            jobs: g(&c.jobs),
            patched: g(&c.patched),
            unchanged: g(&c.unchanged),
            not_found: g(&c.not_found),
            marked: g(&c.marked),
            no_key: g(&c.no_key),
            echoes: g(&c.echoes),
            ignored: g(&c.ignored),
            gone: g(&c.gone),
            retrying: g(&c.retrying),
            failed: g(&c.failed),
            product_requests: g(&c.product_requests),
            product_cache_hits: g(&c.product_cache_hits),
            aem_gets: g(&c.aem_gets),
            aem_patches: g(&c.aem_patches),
            reenrich_enqueued: g(&c.reenrich_enqueued),
        }
    }

    /// The metadata keys enrichment writes (targets, and the status field in `mark` mode). A
    /// `metadata_updated` event changing only these is our echo.
    pub fn owned_keys(&self) -> impl Iterator<Item = &str> {
        self.compiled.owned.iter().map(String::as_str)
    }

    /// The inbox families enrichment owns (`families`; empty: every AEM asset event).
    pub fn families(&self) -> &[String] {
        &self.config.families
    }

    /// Whether `change` belongs to enrichment: a change of the reserved family, of a family in
    /// `families`, or — when `families` is empty — an AEM asset event (record `_event_type` =
    /// `aem.assets.…`) or a deletion from an Adobe source.
    pub fn owns(&self, change: &AssetChange) -> bool {
        if change.family == ENRICHMENT_FAMILY {
            return true;
        }
        if !self.config.families.is_empty() {
            return self.config.families.contains(&change.family);
        }
        match &change.kind {
            ChangeKind::Upsert { asset } => event_type_of(&asset.record)
                .is_some_and(|t| t.starts_with("aem.assets.") || t == REENRICH_EVENT),
            ChangeKind::Delete { .. } => change.source.starts_with("adobe"),
        }
    }

    /// Whether `record` (of a `metadata_updated` change) is the echo of our own write: the keys
    /// it says changed are all ours.
    pub fn is_echo(&self, record: &Value) -> bool {
        assetbridge_dam::aem::is_echo_of(record, |k| self.compiled.owned.contains(k))
    }

    /// A change asking to enrich one asset again (reserved family, no event id).
    pub fn reenrich_change(
        &self,
        host: &str,
        asset_id: &str,
        product: Option<&str>,
    ) -> AssetChange {
        let mut record = json!({
            EVENT_TYPE_KEY: REENRICH_EVENT,
            "assetId": asset_id,
            "repositoryMetadata": {"repo:repositoryId": host},
        });
        if let Some(p) = product {
            record[PRODUCT_KEY] = Value::String(p.to_owned());
        }
        AssetChange {
            family: ENRICHMENT_FAMILY.to_owned(),
            event_id: None,
            source: ENRICHMENT_SOURCE.to_owned(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: asset_id.to_owned(),
                    updated_at: Utc::now(),
                    record,
                },
            },
        }
    }

    /// Enriches the assets these changes name, sharing product reads, and says what happened
    /// to each change (in order). Touches AEM, the PIM and the links, never the inbox: applying
    /// outcomes (complete, retry, dead letter) is the caller's part (the engine does it for
    /// claimed inbox batches).
    pub async fn enrich_changes(&self, changes: &[AssetChange]) -> Vec<EnrichmentOutcome> {
        let mut out = vec![EnrichmentOutcome::NotMine; changes.len()];
        let mut jobs: Vec<Job> = Vec::new();
        let mut by_asset: HashMap<(String, String), usize> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            if !self.owns(change) {
                continue;
            }
            match self.job_of(change) {
                Ok(job) => {
                    let key = (job.host.to_ascii_lowercase(), job.asset_id.clone());
                    match by_asset.get(&key) {
                        Some(&j) => {
                            jobs[j].indexes.push(i);
                            // A re-enrichment merged with an event keeps its product (for links).
                            if jobs[j].reenrich_of.is_none() {
                                jobs[j].reenrich_of = job.reenrich_of;
                            }
                        }
                        None => {
                            by_asset.insert(key, jobs.len());
                            jobs.push(Job {
                                indexes: vec![i],
                                ..job
                            });
                        }
                    }
                }
                Err(o) => {
                    self.count(&o);
                    out[i] = o;
                }
            }
        }
        if !jobs.is_empty() {
            bump(&self.counters.jobs, jobs.len() as u64);
            self.run(&mut jobs).await;
        }
        for job in jobs {
            let o = job.outcome.expect("every job ends with an outcome");
            self.count(&o);
            for i in job.indexes {
                out[i] = o.clone();
            }
        }
        out
    }

    fn count(&self, outcome: &EnrichmentOutcome) {
        let c = &self.counters;
        let counter = match outcome {
            EnrichmentOutcome::NotMine => return,
            EnrichmentOutcome::Echo => &c.echoes,
            EnrichmentOutcome::Ignored { .. } => &c.ignored,
            EnrichmentOutcome::Patched { .. } => &c.patched,
            EnrichmentOutcome::Unchanged => &c.unchanged,
            EnrichmentOutcome::NotFound { marked, .. } => {
                if *marked {
                    bump(&c.marked, 1);
                }
                &c.not_found
            }
            EnrichmentOutcome::NoKey { .. } => &c.no_key,
            EnrichmentOutcome::Gone => &c.gone,
            EnrichmentOutcome::Retry { .. } => &c.retrying,
            EnrichmentOutcome::Failed { .. } => &c.failed,
        };
        bump(counter, 1);
    }

    /// Classifies an owned change: a job, or its outcome right away.
    fn job_of(&self, change: &AssetChange) -> Result<Job, EnrichmentOutcome> {
        let Some(record) = record_of(change) else {
            return Err(EnrichmentOutcome::Ignored {
                reason: "a deletion: nothing to enrich".into(),
            });
        };
        let ty = event_type_of(record);
        if ty == Some(METADATA_UPDATED) && self.is_echo(record) {
            debug!(asset = %change.dam_id(), "metadata_updated echo of our own write: ignored");
            return Err(EnrichmentOutcome::Echo);
        }
        let reenrich = ty == Some(REENRICH_EVENT);
        let trigger = reenrich
            || match ty {
                Some(t) => self.config.trigger_events.iter().any(|x| x == t),
                None => self.config.families.contains(&change.family),
            };
        if !trigger {
            return Err(EnrichmentOutcome::Ignored {
                reason: format!(
                    "event type `{}` does not trigger enrichment",
                    ty.unwrap_or("(none)")
                ),
            });
        }
        let Some(host) = host_of(record) else {
            return Err(failed(
                "enrichment_no_host",
                format!(
                    "asset `{}`: the event names no author host (repositoryMetadata.repo:repositoryId)",
                    change.dam_id()
                ),
            ));
        };
        if !self.aem.is_allowed_host(host) {
            warn!(host, asset = %change.dam_id(), "event for an author host that is not allowed: not called");
            return Err(failed(
                "enrichment_host_not_allowed",
                format!(
                    "author host `{host}` of asset `{}` is not in [aem] allowed_hosts: not called",
                    change.dam_id()
                ),
            ));
        }
        let object = |k: &str| record.get(k).and_then(Value::as_object).cloned();
        Ok(Job {
            indexes: Vec::new(),
            host: host.to_owned(),
            asset_id: change.dam_id().to_owned(),
            reenrich_of: record
                .get(PRODUCT_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned),
            event_assets: if reenrich {
                None
            } else {
                object("assetMetadata")
            },
            event_repository: if reenrich {
                None
            } else {
                object("repositoryMetadata")
            },
            keys: None,
            metadata: None,
            outcome: None,
        })
    }

    /// The raw key value from metadata (event or GET), if it holds it.
    fn raw_key<'a>(
        &self,
        assets: Option<&'a Map<String, Value>>,
        repository: Option<&'a Map<String, Value>>,
    ) -> Option<&'a Value> {
        let k = &self.compiled.key;
        let v = match k.from {
            KeySource::Name => repository?.get("repo:name"),
            KeySource::Path => repository?.get("repo:path"),
            KeySource::Metadata => assets?.get(k.field.as_deref()?),
        }?;
        (!v.is_null()).then_some(v)
    }

    /// Sets the job's keys (or its `NoKey` outcome) from what is known; false when the asset's
    /// metadata must be read first.
    fn derive_keys(&self, job: &mut Job) -> bool {
        let raw = match &job.metadata {
            Some(m) => self.raw_key(Some(&m.asset_metadata), Some(&m.repository_metadata)),
            None => self.raw_key(job.event_assets.as_ref(), job.event_repository.as_ref()),
        };
        let Some(raw) = raw else {
            if job.metadata.is_some() {
                job.outcome = Some(EnrichmentOutcome::NoKey {
                    reason: format!("asset `{}` has no {}", job.asset_id, self.key_source_name()),
                });
                return true;
            }
            return false;
        };
        let keys = self.compiled.key.keys_of(raw);
        if keys.is_empty() {
            job.outcome = Some(EnrichmentOutcome::NoKey {
                reason: format!(
                    "asset `{}`: {} `{}` gives no product key",
                    job.asset_id,
                    self.key_source_name(),
                    match raw {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }
                ),
            });
        } else {
            job.keys = Some(keys);
        }
        true
    }

    fn key_source_name(&self) -> String {
        match self.compiled.key.from {
            KeySource::Name => "name (repo:name)".into(),
            KeySource::Path => "path (repo:path)".into(),
            KeySource::Metadata => format!(
                "metadata field `{}`",
                self.compiled.key.field.as_deref().unwrap_or("")
            ),
        }
    }

    async fn get_metadata(&self, host: &str, asset_id: &str) -> Result<AssetMetadata, AemError> {
        bump(&self.counters.aem_gets, 1);
        self.aem.get_metadata(host, asset_id).await
    }

    /// What an AEM error means for a job.
    fn aem_outcome(&self, job: &Job, e: &AemError) -> EnrichmentOutcome {
        let asset = &job.asset_id;
        let credential = matches!(
            e,
            AemError::Unauthorized { .. } | AemError::Ims(ImsError::Rejected { .. })
        );
        if e.is_transient() || credential || matches!(e, AemError::PreconditionFailed { .. }) {
            // A refused credential is retried too: fixing the configuration lets the backlog
            // through (after `max_attempts` it is a dead letter, replayable).
            return EnrichmentOutcome::Retry {
                error: format!("asset `{asset}`: {e}"),
            };
        }
        match e {
            AemError::NotFound { .. } if job.reenrich_of.is_some() => EnrichmentOutcome::Gone,
            AemError::NotFound { .. } => failed(
                "enrichment_asset_not_found",
                format!("AEM has no asset `{asset}` on `{}` (404)", job.host),
            ),
            AemError::Forbidden { .. } => failed(
                "enrichment_forbidden",
                format!("asset `{asset}` on `{}`: {e}", job.host),
            ),
            AemError::HostNotAllowed { .. } => failed(
                "enrichment_host_not_allowed",
                format!("asset `{asset}`: {e}"),
            ),
            _ => failed(
                "enrichment_rejected",
                format!("asset `{asset}` on `{}`: {e}", job.host),
            ),
        }
    }

    /// Product data of these identifiers: the cache, then one PIM search for the rest
    /// (≤ 100 identifiers per request). `None`: no such product.
    async fn products(
        &self,
        identifiers: &BTreeSet<String>,
    ) -> Result<HashMap<String, Option<Arc<Value>>>, AkeneoError> {
        let mut out = HashMap::with_capacity(identifiers.len());
        let mut misses = Vec::new();
        for id in identifiers {
            match self.cache.get(id) {
                Some(p) => {
                    bump(&self.counters.product_cache_hits, 1);
                    out.insert(id.clone(), p);
                }
                None => misses.push(id.clone()),
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let attributes = &self.compiled.attributes;
        bump(
            &self.counters.product_requests,
            misses.len().div_ceil(100) as u64,
        );
        let found = self
            .pim
            .products_by_identifiers(
                &misses,
                (!attributes.is_empty()).then_some(attributes.as_slice()),
            )
            .await?;
        let mut by_id: HashMap<String, Arc<Value>> = HashMap::with_capacity(found.len());
        let mut by_lower: HashMap<String, Arc<Value>> = HashMap::new();
        for p in found {
            if let Some(id) = format::product_identifier(&p, &self.identifier_attribute) {
                let p = Arc::new(p);
                by_lower.insert(id.to_lowercase(), p.clone());
                by_id.insert(id, p);
            }
        }
        let mut fresh = Vec::with_capacity(misses.len());
        for id in misses {
            // The PIM may match identifiers without regard to case.
            let p = by_id
                .get(&id)
                .or_else(|| by_lower.get(&id.to_lowercase()))
                .cloned();
            fresh.push((id.clone(), p.clone()));
            out.insert(id, p);
        }
        self.cache.put(fresh);
        Ok(out)
    }

    /// The metadata operations that make the asset hold `product`'s values.
    fn operations(&self, current: &Map<String, Value>, product: Option<&Value>) -> Vec<PatchOp> {
        let mut ops = Vec::new();
        let mark = self.config.unknown_product == UnknownProduct::Mark;
        let status = &self.config.status_field;
        let not_found = Value::String(self.config.status_not_found.clone());
        match product {
            Some(product) => {
                for rule in &self.config.fields {
                    let wanted = format::field_value(
                        rule,
                        product,
                        &self.identifier_attribute,
                        self.config.locale.as_deref(),
                        self.config.scope.as_deref(),
                    );
                    match (wanted, current.get(&rule.target)) {
                        (Some(w), Some(c)) if same_value(c, &w) => {}
                        (Some(w), _) => ops.push(PatchOp::add(&rule.target, w)),
                        (None, Some(_)) if rule.on_missing == OnMissing::Remove => {
                            ops.push(PatchOp::remove(&rule.target))
                        }
                        (None, _) => {}
                    }
                }
                if mark
                    && current
                        .get(status)
                        .is_some_and(|v| same_value(v, &not_found))
                {
                    ops.push(PatchOp::remove(status));
                }
            }
            None => {
                if mark
                    && !current
                        .get(status)
                        .is_some_and(|v| same_value(v, &not_found))
                {
                    ops.push(PatchOp::add(status, not_found));
                }
            }
        }
        ops
    }

    /// Ends one job whose keys are known: product, GET (unless done), diff, PATCH.
    async fn finish(
        &self,
        job: &Job,
        products: &HashMap<String, Option<Arc<Value>>>,
    ) -> (EnrichmentOutcome, Option<AssetMetadata>) {
        let keys = job.keys.as_deref().unwrap_or_default();
        let product = keys.iter().find_map(|k| products.get(k).cloned().flatten());
        if product.is_none() && self.config.unknown_product == UnknownProduct::Skip {
            info!(asset = %job.asset_id, host = %job.host, keys = ?keys, "no product in the PIM for this asset: skipped (unknown_product = \"skip\")");
            return (
                EnrichmentOutcome::NotFound {
                    keys: keys.to_vec(),
                    marked: false,
                },
                None,
            );
        }
        let metadata = match &job.metadata {
            Some(m) => m.clone(),
            None => match self.get_metadata(&job.host, &job.asset_id).await {
                Ok(m) => m,
                Err(e) => return (self.aem_outcome(job, &e), None),
            },
        };
        let ops = self.operations(&metadata.asset_metadata, product.as_deref());
        let done = match &product {
            Some(_) if ops.is_empty() => EnrichmentOutcome::Unchanged,
            Some(_) => EnrichmentOutcome::Patched {
                operations: ops.len(),
            },
            None => {
                info!(asset = %job.asset_id, host = %job.host, keys = ?keys, "no product in the PIM for this asset: marked (unknown_product = \"mark\")");
                EnrichmentOutcome::NotFound {
                    keys: keys.to_vec(),
                    marked: true,
                }
            }
        };
        if ops.is_empty() {
            return (done, Some(metadata));
        }
        let if_match = if self.config.use_etag {
            metadata.etag.as_deref()
        } else {
            None
        };
        bump(&self.counters.aem_patches, 1);
        match self
            .aem
            .patch_metadata(&job.host, &job.asset_id, &ops, if_match)
            .await
        {
            Ok(_) => {
                debug!(asset = %job.asset_id, operations = ops.len(), "asset metadata enriched");
                (done, Some(metadata))
            }
            // A `remove` of a member already gone is refused (400): this very PATCH applied
            // before its answer was lost (then sent again), or another enrichment of the asset
            // removed it first. What the asset holds now decides.
            Err(e @ AemError::Rejected { status: 400, .. })
                if ops.iter().any(|o| matches!(o, PatchOp::Remove { .. })) =>
            {
                match self.get_metadata(&job.host, &job.asset_id).await {
                    Ok(now)
                        if self
                            .operations(&now.asset_metadata, product.as_deref())
                            .is_empty() =>
                    {
                        debug!(asset = %job.asset_id, "a removal was refused, but the asset already holds what was wanted");
                        (done, Some(now))
                    }
                    _ => (self.aem_outcome(job, &e), Some(metadata)),
                }
            }
            Err(e) => (self.aem_outcome(job, &e), Some(metadata)),
        }
    }

    /// Runs the jobs of one batch: keys, shared product reads, then each asset.
    async fn run(&self, jobs: &mut [Job]) {
        let concurrency = self.config.concurrency.max(1);
        // 1. Keys from the events; the rest need the asset's metadata first.
        let mut need_get = Vec::new();
        for (i, job) in jobs.iter_mut().enumerate() {
            if !self.derive_keys(job) {
                need_get.push(i);
            }
        }
        if !need_get.is_empty() {
            let targets: Vec<(usize, String, String)> = need_get
                .iter()
                .map(|&i| (i, jobs[i].host.clone(), jobs[i].asset_id.clone()))
                .collect();
            let fetched: Vec<(usize, Result<AssetMetadata, AemError>)> = stream::iter(targets)
                .map(|(i, host, asset)| async move { (i, self.get_metadata(&host, &asset).await) })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            for (i, r) in fetched {
                match r {
                    Ok(m) => {
                        jobs[i].metadata = Some(m);
                        self.derive_keys(&mut jobs[i]);
                    }
                    Err(e) => jobs[i].outcome = Some(self.aem_outcome(&jobs[i], &e)),
                }
            }
        }
        // 2. One product read for the batch.
        let identifiers: BTreeSet<String> = jobs
            .iter()
            .filter(|j| j.outcome.is_none())
            .flat_map(|j| j.keys.iter().flatten().cloned())
            .collect();
        let products = if identifiers.is_empty() {
            HashMap::new()
        } else {
            match self.products(&identifiers).await {
                Ok(p) => p,
                Err(e) => {
                    let outcome = if e.is_transient()
                        || matches!(e, AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_))
                    {
                        EnrichmentOutcome::Retry {
                            error: format!("reading products from the PIM: {e}"),
                        }
                    } else {
                        failed(
                            "enrichment_pim_rejected",
                            format!("reading products from the PIM: {e}"),
                        )
                    };
                    warn!(error = %e, identifiers = identifiers.len(), "enrichment: product read failed");
                    for j in jobs.iter_mut().filter(|j| j.outcome.is_none()) {
                        j.outcome = Some(outcome.clone());
                    }
                    HashMap::new()
                }
            }
        };
        // 3. Each asset: GET, compare, PATCH.
        let pending: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].outcome.is_none())
            .collect();
        let results: Vec<(usize, (EnrichmentOutcome, Option<AssetMetadata>))> = {
            let jobs_ref: &[Job] = jobs;
            let products = &products;
            stream::iter(pending)
                .map(|i| async move { (i, self.finish(&jobs_ref[i], products).await) })
                .buffer_unordered(concurrency)
                .collect()
                .await
        };
        for (i, (outcome, metadata)) in results {
            jobs[i].outcome = Some(outcome);
            if jobs[i].metadata.is_none() {
                jobs[i].metadata = metadata;
            }
        }
        // 4. Links product → asset, for the PIM side.
        let mut edits = Vec::new();
        for job in jobs.iter() {
            let asset = (job.host.clone(), job.asset_id.clone());
            let outcome = job.outcome.as_ref().expect("set above");
            let keys = job.keys.as_deref().unwrap_or_default();
            let linked = matches!(
                outcome,
                EnrichmentOutcome::Patched { .. }
                    | EnrichmentOutcome::Unchanged
                    | EnrichmentOutcome::NotFound { .. }
            );
            if linked {
                for k in keys {
                    edits.push(LinkEdit::Add {
                        identifier: k.clone(),
                        asset: asset.clone(),
                    });
                }
            }
            if let Some(p) = &job.reenrich_of {
                // The asset is gone, or no longer gives this product's key.
                let unlinked = matches!(
                    outcome,
                    EnrichmentOutcome::Gone | EnrichmentOutcome::NoKey { .. }
                ) || (job.keys.is_some()
                    && !keys
                        .iter()
                        .any(|k| links::link_key(k) == links::link_key(p)));
                if unlinked {
                    edits.push(LinkEdit::Remove {
                        identifier: p.clone(),
                        asset: asset.clone(),
                    });
                }
            }
        }
        if let Err(e) = self.links.apply(edits).await {
            warn!(error = %e, "cannot record product → asset links; they are recorded again at the next event");
        }
    }
}

impl Engine {
    /// Enriches AEM asset metadata from product data ([`Enricher`]): inbox changes that belong
    /// to enrichment are handled by it before the DAM → PIM write.
    pub fn with_enrichment(mut self, enricher: Arc<Enricher>) -> Self {
        self.enrichment = Some(enricher);
        self
    }

    /// The enricher, when enrichment is configured.
    pub fn enrichment(&self) -> Option<&Arc<Enricher>> {
        self.enrichment.as_ref()
    }

    /// Runs enrichment on a claimed inbox batch and applies its outcomes; returns the changes
    /// that go on to the DAM → PIM writer.
    ///
    /// A change of a family that is not written to the PIM ends here: done, retried later or
    /// dead-lettered. A change of a family that also goes DAM → PIM goes on whatever
    /// enrichment did — except our own echo, which goes nowhere; an enrichment failure of such a
    /// change is kept apart (a re-enrichment change in the inbox, or a dead letter of one), so
    /// that the two directions never hold each other up.
    pub(crate) async fn enrich_claimed(
        &self,
        claimed: Vec<Claimed>,
    ) -> Result<Vec<Claimed>, EngineError> {
        let Some(enricher) = self.enrichment.clone() else {
            return Ok(claimed);
        };
        if !claimed.iter().any(|c| enricher.owns(&c.change)) {
            return Ok(claimed);
        }
        let changes: Vec<AssetChange> = claimed.iter().map(|c| c.change.clone()).collect();
        let outcomes = enricher.enrich_changes(&changes).await;
        drop(changes);
        let mut forward = Vec::with_capacity(claimed.len());
        let mut done = Vec::new();
        let mut scratch = SyncReport::default();
        let mut tally: HashMap<&'static str, u64> = HashMap::new();
        let mut again_later: Vec<AssetChange> = Vec::new();
        for (c, outcome) in claimed.into_iter().zip(outcomes) {
            let to_pim = self.family(&c.change.family).is_some();
            let name = match &outcome {
                EnrichmentOutcome::NotMine => {
                    forward.push(c);
                    continue;
                }
                EnrichmentOutcome::Echo => {
                    done.push(c.id);
                    "echo"
                }
                EnrichmentOutcome::Retry { error } => {
                    if to_pim {
                        let again = record_of(&c.change)
                            .and_then(host_of)
                            .map(|h| enricher.reenrich_change(h, c.change.dam_id(), None));
                        again_later.extend(again);
                        forward.push(c);
                    } else {
                        self.retry(item_of(c), error, &mut scratch).await?;
                    }
                    "retrying"
                }
                EnrichmentOutcome::Failed { kind, message } => {
                    let why = DeadLetterReason::new(kind.clone(), message.clone());
                    if to_pim {
                        let letter = record_of(&c.change)
                            .and_then(host_of)
                            .filter(|h| enricher.aem.is_allowed_host(h))
                            .map(|h| enricher.reenrich_change(h, c.change.dam_id(), None))
                            .unwrap_or_else(|| AssetChange {
                                event_id: None,
                                ..c.change.clone()
                            });
                        warn!(asset = %c.change.dam_id(), kind = %kind, reason = %message, "enrichment dead-lettered (the change still goes DAM → PIM)");
                        self.store.add_dead_letter(&letter, &why).await?;
                        forward.push(c);
                    } else {
                        self.fail(item_of(c), why, &mut scratch).await?;
                    }
                    "failed"
                }
                other => {
                    if to_pim {
                        forward.push(c);
                    } else {
                        done.push(c.id);
                    }
                    match other {
                        EnrichmentOutcome::Patched { .. } => "patched",
                        EnrichmentOutcome::Unchanged => "unchanged",
                        EnrichmentOutcome::NotFound { .. } => "not_found",
                        EnrichmentOutcome::NoKey { .. } => "no_key",
                        EnrichmentOutcome::Gone => "gone",
                        _ => "ignored",
                    }
                }
            };
            *tally.entry(name).or_default() += 1;
        }
        if !again_later.is_empty() {
            // Before the changes go on (and are completed): durable first.
            self.store.enqueue(&again_later).await?;
            bump(
                &enricher.counters.reenrich_enqueued,
                again_later.len() as u64,
            );
        }
        if !done.is_empty() {
            self.store.complete(&done).await?;
        }
        let mut tally: Vec<_> = tally.into_iter().collect();
        tally.sort();
        info!(outcomes = ?tally, "enrichment round done");
        Ok(forward)
    }
}

fn item_of(c: Claimed) -> WriteItem {
    WriteItem {
        inbox_id: Some(c.id),
        attempts: c.attempts,
        change: c.change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_loosely() {
        assert!(same_value(&json!("12"), &json!(12)));
        assert!(same_value(&json!(12.0), &json!(12)));
        assert!(same_value(&json!(["a"]), &json!("a")));
        assert!(same_value(&json!(["a", "b"]), &json!(["a", "b"])));
        assert!(same_value(&json!("true"), &json!(true)));
        assert!(!same_value(&json!(["a", "b"]), &json!(["b", "a"])));
        assert!(!same_value(&json!("x"), &json!("y")));
        assert!(!same_value(&json!(null), &json!("y")));
    }

    #[test]
    fn changed_keys_of_metadata_updated_records() {
        let r = json!({"assetMetadata": {"pim:sku": "A", "event:created": ["pim:sku"], "event:updated": {"pim:x": 1}}});
        let k = assetbridge_dam::aem::changed_metadata_keys(&r).unwrap();
        assert_eq!(
            k,
            ["pim:sku", "pim:x"].map(String::from).into_iter().collect()
        );
        assert!(assetbridge_dam::aem::changed_metadata_keys(
            &json!({"assetMetadata": {"dc:title": "t"}})
        )
        .is_none());
        assert!(assetbridge_dam::aem::changed_metadata_keys(&json!({})).is_none());
    }
}
