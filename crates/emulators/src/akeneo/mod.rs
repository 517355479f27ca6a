//! An in-process emulator of the Akeneo PIM REST API: the parts a DAM → PIM connector uses,
//! following the project's API reference (`reference/akeneo-api.md`, cited as §n below) for
//! status codes, headers, messages, body shapes and limits.
//!
//! - `POST /api/oauth/v1/token` — password and refresh-token grants (§2); refresh tokens are
//!   single-use, as with Akeneo's OAuth2 library.
//! - Asset Manager: asset families, attributes, options (§5.1–§5.6); assets: list with
//!   `search_after` and `updated` / `code` filters, get, single and batch PATCH, DELETE
//!   (§5.7–§5.13); media files upload / download (§5.14).
//! - Products: `products-uuid` and `products` list / get / PATCH / NDJSON batch PATCH (§6),
//!   product attributes (read).
//! - Faults: latency, concurrency cap (429), injected 429 / 5xx / dropped connections, outage,
//!   short token TTLs and revocation (§3.3, §3.4).
//! - Test control (not part of the API; no token, no faults, not counted): `GET
//!   /_emulator/stats` (the [`Counters`] as JSON, plus `in_flight`) and `POST /_emulator/reset`
//!   (counters and request log back to empty), for tools that run the emulator in another
//!   process.
//!
//! Assets are stored compactly (one byte buffer per asset, a `BTreeMap` per family keyed by
//! code for `search_after`, an index on `updated` for filtered polls), so a million assets fit
//! in a few hundred megabytes (≈ 370 bytes per asset with 8 values, see
//! `tests/akeneo_scale.rs`).
//!
//! # Choices where the reference is silent
//! - Refresh tokens are single-use (FOS oauth2-php deletes the old one when it issues a new
//!   one); access tokens expire after `token_ttl`. Missing, unknown and expired tokens all get
//!   401 `Authentication is required`.
//! - An upsert that changes nothing keeps the asset's `updated` (answered 204).
//! - `search_after` cursors are URL-safe base64 of the last code (uuid for products); a cursor
//!   that does not decode is a 422.
//! - The concurrency cap counts every API request to the emulator (one "connection"); the
//!   token route is not capped, delayed or faulted, except by the outage switch.
//! - Asset list `channel` / `locales` naming an unknown channel / locale: 422
//!   `Invalid query parameters` with `errors`.
//! - Unknown media file code on download: 404 `Media file "<code>" not found.`.
//! - Naming conventions and product link rules are checked on family PATCH and executed on asset
//!   creation (201) only, never on update (204) nor on seeding (§5.4, §5.5; `linking.rs`): the
//!   naming convention before the asset is written, the link rules in a spawned task after the
//!   answer ([`AkeneoEmulator::link_jobs_pending`] / [`AkeneoEmulator::wait_for_link_jobs`] let
//!   a test wait for them). Patterns are PHP-style delimited PCRE compiled with the `regex`
//!   crate: look-around, back-references and `(?'name'…)` groups are refused as malformed. A
//!   named group that is not an attribute of the family is accepted by the family PATCH (as by
//!   the server) and fails at execution; a capture for a multiple-options, boolean or media-file
//!   attribute is refused (abort) or skipped. Link rule selections support `family`,
//!   `categories` (no category tree: `IN CHILDREN` = `IN`), `enabled`, `parent`, the identifier
//!   (or `identifier`) and text / select product attributes, compared case-sensitively;
//!   extrapolations read the asset's non-localizable, non-scopable values.
//! - Transformations are stored, not executed.
//! - Products: asset codes in asset collections are not checked against the asset families;
//!   an identifier `IN` with more than 100 values is a 422; `scope` hides uncategorised
//!   products (category trees are not modelled); blank NDJSON lines are skipped.
//! - `"values": {}` (which PHP decodes to an empty array) is accepted as "no values".
//! - Per-item batch results, NDJSON lines, token answers and `errors` bodies keep the server's
//!   key order; other bodies have sorted keys.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use assetbridge_emulators::akeneo::{demo_structure, AkeneoEmulator, AkeneoEmulatorConfig};
//! let emulator = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
//! for family in demo_structure() {
//!     emulator.add_asset_family(family);
//! }
//! let running = emulator.serve("127.0.0.1:0".parse().unwrap()).await?;
//! println!("Akeneo at {}", running.base_url);
//! # Ok(()) }
//! ```

// Handlers return `Result<_, Response>` so that a failed check is the HTTP answer itself; the
// error path is cold and the size of `Response` does not matter there.
#![allow(clippy::result_large_err)]

mod assets;
mod codec;
mod control;
mod demo;
mod families;
mod fast;
mod gate;
mod http;
mod linking;
mod media;
mod products;
mod routes;
mod schema;
mod server;
mod state;
mod token;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::FamilyStructure;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde_json::Value;

pub use control::{RESET as CONTROL_RESET, STATS as CONTROL_STATS};
pub use demo::{
    demo_product_attributes, demo_structure, demo_structure_with_prefix, DEMO_MEDIA_PREFIX,
    DEMO_TAGS,
};
pub use products::ProductAttribute;
pub use routes::{
    ASSET as ROUTE_ASSET, ASSETS as ROUTE_ASSETS, ATTRIBUTE as ROUTE_ATTRIBUTE,
    ATTRIBUTES as ROUTE_ATTRIBUTES, FAMILIES as ROUTE_FAMILIES, FAMILY as ROUTE_FAMILY,
    MEDIA_FILE as ROUTE_MEDIA_FILE, MEDIA_FILES as ROUTE_MEDIA_FILES, OPTION as ROUTE_OPTION,
    OPTIONS as ROUTE_OPTIONS, PRODUCT as ROUTE_PRODUCT, PRODUCTS as ROUTE_PRODUCTS,
    PRODUCTS_UUID as ROUTE_PRODUCTS_UUID, PRODUCT_ATTRIBUTE as ROUTE_PRODUCT_ATTRIBUTE,
    PRODUCT_ATTRIBUTES as ROUTE_PRODUCT_ATTRIBUTES, PRODUCT_UUID as ROUTE_PRODUCT_UUID,
    TOKEN as ROUTE_TOKEN, UNMATCHED as ROUTE_UNMATCHED,
};
pub use server::RunningEmulator;
pub use state::{Counters, LoggedRequest, MediaFileInfo};

use state::{Attribute, Family, Shared};

/// Configuration of an [`AkeneoEmulator`]. See [`Default`] for the defaults.
#[derive(Debug, Clone)]
pub struct AkeneoEmulatorConfig {
    /// The connection's client id. Default: `"assetbridge"`.
    pub client_id: String,
    /// The connection's secret. Default: `"secret"`.
    pub secret: String,
    /// The connection user's name. Default: `"admin"`.
    pub username: String,
    /// The connection user's password. Default: `"admin"`.
    pub password: String,
    /// Access token lifetime (`expires_in`). Default: 3600 s.
    pub token_ttl: Duration,
    /// Refresh token lifetime. Default: 1 209 600 s (14 days).
    pub refresh_ttl: Duration,
    /// The response time of every API request (not the token route): the answer leaves this long
    /// after the request arrived, the emulator's own work included (never earlier). Default: 0.
    pub latency: Duration,
    /// Concurrent API requests above this are answered 429 with `Retry-After` (SaaS: 4 per
    /// connection, §3.4). Default: `None` (no cap).
    pub max_concurrency: Option<usize>,
    /// Probability of an injected 429 per API request. Default: 0.
    pub rate_429: f64,
    /// `Retry-After` seconds of 429 answers (injected and cap). Default: 1.
    pub retry_after_secs: u64,
    /// Probability of an injected 500/502/503 per API request. Default: 0.
    pub rate_5xx: f64,
    /// Probability of closing the connection without an answer per API request. Default: 0.
    pub rate_drop: f64,
    /// Items per asset batch PATCH (§5.12). Default: 100.
    pub asset_batch_max: usize,
    /// Entries kept in the request log (a ring buffer). Default: 100 000.
    pub request_log_capacity: usize,
    /// Uploaded media files up to this size keep their bytes (for download); larger ones keep
    /// only name, size, type and SHA-1 and download answers 404. Default: 8 MiB.
    pub media_keep_bytes_max: usize,
    /// Total bytes of media kept for download; beyond it, new uploads keep no bytes.
    /// Default: 256 MiB.
    pub media_keep_bytes_total: usize,
}

impl Default for AkeneoEmulatorConfig {
    fn default() -> Self {
        Self {
            client_id: "assetbridge".into(),
            secret: "secret".into(),
            username: "admin".into(),
            password: "admin".into(),
            token_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(1_209_600),
            latency: Duration::ZERO,
            max_concurrency: None,
            rate_429: 0.0,
            retry_after_secs: 1,
            rate_5xx: 0.0,
            rate_drop: 0.0,
            asset_batch_max: 100,
            request_log_capacity: 100_000,
            media_keep_bytes_max: 8 * 1024 * 1024,
            media_keep_bytes_total: 256 * 1024 * 1024,
        }
    }
}

/// Fault injection settings, changeable at runtime with [`AkeneoEmulator::set_faults`].
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// The response time of every API request: the answer leaves this long after the request
    /// arrived, the emulator's own work included (never earlier). Default: 0.
    pub latency: Duration,
    /// Concurrency cap (429 above). Default: none.
    pub max_concurrency: Option<usize>,
    /// Probability of an injected 429. Default: 0.
    pub rate_429: f64,
    /// `Retry-After` of 429 answers. Default: 1.
    pub retry_after_secs: u64,
    /// Probability of an injected 500/502/503. Default: 0.
    pub rate_5xx: f64,
    /// Probability of a dropped connection. Default: 0.
    pub rate_drop: f64,
    /// When true every request, the token route included, is answered 503. Default: false.
    pub outage: bool,
    /// When true every `DELETE` is answered 503 (a PIM whose deletions fail while the rest
    /// works; test control). Default: false.
    pub delete_outage: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            max_concurrency: None,
            rate_429: 0.0,
            retry_after_secs: 1,
            rate_5xx: 0.0,
            rate_drop: 0.0,
            outage: false,
            delete_outage: false,
        }
    }
}

/// Seeding refused by the emulator's validation (the message is the API's).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SeedError(pub String);

/// The Akeneo emulator. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AkeneoEmulator {
    shared: Arc<Shared>,
    public_base: Arc<RwLock<String>>,
}

impl std::fmt::Debug for AkeneoEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkeneoEmulator")
            .field("base", &*self.public_base.read())
            .finish()
    }
}

impl AkeneoEmulator {
    /// A new, empty emulator (no asset family, locales en_US/fr_FR/de_DE, channels
    /// ecommerce/mobile/print).
    pub fn new(config: AkeneoEmulatorConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
            public_base: Arc::new(RwLock::new("http://localhost".into())),
        }
    }

    /// Binds `addr` (port 0 picks a free port), serves in a background task and returns.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningEmulator> {
        let running = server::serve(self.router(), addr).await?;
        *self.public_base.write() = running.base_url.clone();
        Ok(running)
    }

    /// The axum router (for embedding). Dropped-connection faults need [`Self::serve`]; through
    /// a bare router they become empty 502 answers.
    pub fn router(&self) -> axum::Router {
        routes::router(self.shared.clone())
    }

    // -----------------------------------------------------------------------------------------
    // Structure seeding

    /// Adds an asset family with its attributes and option codes. If the family exists, its
    /// attributes are added or updated (never removed) and its main media is replaced when
    /// given. When `attribute_as_main_media` is `None`, the first media attribute is used.
    pub fn add_asset_family(&self, family: FamilyStructure) {
        let entry = {
            let mut map = self.shared.families.write();
            map.entry(family.code.clone())
                .or_insert_with(|| Arc::new(RwLock::new(Family::new(&family.code))))
                .clone()
        };
        let mut f = entry.write();
        for a in family.attributes.values() {
            let mut attr = Attribute::from_core(a);
            if let Some(existing) = f.attribute(&a.code) {
                // Keep option labels and options not listed in the new structure.
                for (code, labels) in &existing.options {
                    if attr.option(code).is_none() {
                        attr.options.push((code.clone(), labels.clone()));
                    }
                }
            }
            f.upsert_attribute(attr);
        }
        let main = family.attribute_as_main_media.clone().or_else(|| {
            f.attributes
                .iter()
                .find(|a| {
                    matches!(
                        a.kind,
                        assetbridge_core::AttributeType::MediaFile
                            | assetbridge_core::AttributeType::MediaLink
                    )
                })
                .map(|a| a.code.clone())
        });
        if main.is_some() {
            f.attribute_as_main_media = main;
        }
    }

    /// Adds the demo structure: the asset families of [`demo_structure`] and the product
    /// attributes of [`demo_product_attributes`].
    pub fn add_demo_structure(&self) {
        for family in demo_structure() {
            self.add_asset_family(family);
        }
        for attribute in demo_product_attributes() {
            self.add_product_attribute(attribute);
        }
    }

    /// Adds an option (with labels) to a single/multiple options attribute. Returns false when
    /// the family or attribute is unknown.
    pub fn add_asset_attribute_option(
        &self,
        family: &str,
        attribute: &str,
        option: &str,
        labels: serde_json::Map<String, Value>,
    ) -> bool {
        let Some(f) = self.shared.family(family) else {
            return false;
        };
        let mut f = f.write();
        let Some(&i) = f.attr_index.get(attribute) else {
            return false;
        };
        let a = &mut f.attributes[i as usize];
        match a.options.iter_mut().find(|(c, _)| c == option) {
            Some((_, l)) => *l = labels,
            None => a.options.push((option.to_owned(), labels)),
        }
        true
    }

    /// The structure of a family as the API describes it (attributes with option codes).
    pub fn family_structure(&self, family: &str) -> Option<FamilyStructure> {
        let f = self.shared.family(family)?;
        let f = f.read();
        let attributes = f
            .attributes
            .iter()
            .map(|a| {
                let mut core = assetbridge_core::AssetAttribute::new(&a.code, a.kind);
                core.value_per_locale = a.value_per_locale;
                core.value_per_channel = a.value_per_channel;
                core.max_characters = a.max_characters.map(|m| m as u32);
                core.prefix = a.prefix.clone();
                core.suffix = a.suffix.clone();
                core.allowed_extensions =
                    (!a.allowed_extensions.is_empty()).then(|| a.allowed_extensions.clone());
                core.max_file_size = a.max_file_size.clone();
                core.decimals_allowed = a.decimals_allowed;
                core.min_value = a.min_value.clone();
                core.max_value = a.max_value.clone();
                if a.has_options() {
                    core.options = Some(a.options.iter().map(|(c, _)| c.clone()).collect());
                }
                (a.code.clone(), core)
            })
            .collect();
        Some(FamilyStructure {
            code: f.code.clone(),
            attribute_as_main_media: f.attribute_as_main_media.clone(),
            attributes,
        })
    }

    /// Activates a locale (and makes it available in every channel). At most 255 locales.
    pub fn add_locale(&self, code: &str) {
        let mut c = self.shared.catalog.write();
        if !c.locales.iter().any(|l| l == code) && c.locales.len() < 255 {
            c.locales.push(code.to_owned());
        }
        for (_, ls) in c.channels.iter_mut() {
            if !ls.iter().any(|l| l == code) {
                ls.push(code.to_owned());
            }
        }
    }

    /// Adds (or redefines) a channel with its locales, activating them. At most 255 channels.
    pub fn add_channel(&self, code: &str, locales: &[&str]) {
        let mut c = self.shared.catalog.write();
        for l in locales {
            if !c.locales.iter().any(|x| x == l) && c.locales.len() < 255 {
                c.locales.push((*l).to_owned());
            }
        }
        let ls: Vec<String> = locales.iter().map(|l| (*l).to_owned()).collect();
        if let Some((_, existing)) = c.channels.iter_mut().find(|(ch, _)| ch == code) {
            *existing = ls;
        } else if c.channels.len() < 255 {
            c.channels.push((code.to_owned(), ls));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Asset seeding and inspection

    /// Creates or updates one asset (`{"code": ..., "values": {...}}`, the PATCH body shape)
    /// with the API's validation, without HTTP and without counting it. Returns true when
    /// created.
    pub fn upsert_asset(&self, family: &str, asset: Value) -> Result<bool, SeedError> {
        self.seed_assets(family, std::iter::once(asset))
            .map(|(created, _)| created == 1)
    }

    /// Creates or updates many assets under one lock (fast seeding for demos and benchmarks).
    /// Stops at the first invalid asset. Returns (created, updated).
    pub fn seed_assets(
        &self,
        family: &str,
        assets: impl IntoIterator<Item = Value>,
    ) -> Result<(usize, usize), SeedError> {
        let f = self
            .shared
            .family(family)
            .ok_or_else(|| SeedError(format!("Asset family \"{family}\" does not exist.")))?;
        let mut f = f.write();
        let (mut created, mut updated) = (0, 0);
        for asset in assets {
            let Value::Object(obj) = asset else {
                return Err(SeedError("an asset must be a JSON object".into()));
            };
            match assets::upsert_one(&self.shared, &mut f, &obj, false) {
                Ok(assets::Written::Created) => created += 1,
                Ok(assets::Written::Updated) => updated += 1,
                Err(rej) => {
                    let code = obj.get("code").cloned().unwrap_or(Value::Null);
                    let msg = match rej {
                        validate::Rejected::Message(m) => m,
                        validate::Rejected::Format(e) => {
                            format!("{} {}", validate::INVALID_FORMAT, e.to_json())
                        }
                        validate::Rejected::Business(e) => {
                            format!("{} {}", validate::BUSINESS_RULES, e.to_json())
                        }
                        validate::Rejected::NamingBusiness(e) => {
                            format!("{} {}", linking::NAMING_BUSINESS_RULES, e.to_json())
                        }
                    };
                    return Err(SeedError(format!("asset {code}: {msg}")));
                }
            }
        }
        Ok((created, updated))
    }

    /// All assets of a family as GET returns them (code order). Empty for an unknown family.
    pub fn assets(&self, family: &str) -> Vec<Value> {
        let Some(f) = self.shared.family(family) else {
            return Vec::new();
        };
        let base = self.public_base.read().clone();
        let f = f.read();
        let catalog = self.shared.catalog.read();
        f.assets
            .values()
            .map(|a| {
                assets::render_asset(
                    &f,
                    &catalog,
                    &base,
                    a,
                    &assets::ValueFilter::default(),
                    false,
                )
            })
            .collect()
    }

    /// One asset as GET returns it.
    pub fn asset(&self, family: &str, code: &str) -> Option<Value> {
        let f = self.shared.family(family)?;
        let base = self.public_base.read().clone();
        let f = f.read();
        let catalog = self.shared.catalog.read();
        let a = f.asset(code)?;
        Some(assets::render_asset(
            &f,
            &catalog,
            &base,
            a,
            &assets::ValueFilter::default(),
            false,
        ))
    }

    /// Number of assets of a family (0 for an unknown family).
    pub fn asset_count(&self, family: &str) -> usize {
        self.shared
            .family(family)
            .map(|f| f.read().assets.len())
            .unwrap_or(0)
    }

    /// Codes of the asset families, sorted.
    pub fn family_codes(&self) -> Vec<String> {
        self.shared.families.read().keys().cloned().collect()
    }

    /// One uploaded media file (metadata, and bytes when kept).
    pub fn media_file(&self, code: &str) -> Option<MediaFileInfo> {
        self.shared.media.read().files.get(code).cloned()
    }

    /// Number of uploaded media files.
    pub fn media_file_count(&self) -> usize {
        self.shared.media.read().files.len()
    }

    // -----------------------------------------------------------------------------------------
    // Products

    /// Adds (or replaces) a product attribute. A fresh emulator has `sku` (identifier), `name`
    /// (text, per locale) and `description` (textarea, per locale and channel).
    pub fn add_product_attribute(&self, attribute: ProductAttribute) {
        self.shared.products.write().add_attribute(attribute);
    }

    /// The product attributes.
    pub fn product_attributes(&self) -> Vec<ProductAttribute> {
        self.shared.products.read().attributes.clone()
    }

    /// Creates or updates a product from products-uuid JSON (`uuid` generated when absent; the
    /// identifier comes from the identifier attribute's value or a top-level `identifier`),
    /// with the API's validation. Returns the uuid.
    pub fn add_product(&self, product: Value) -> Result<String, SeedError> {
        let Value::Object(obj) = product else {
            return Err(SeedError("a product must be a JSON object".into()));
        };
        let catalog = self.shared.catalog.read();
        let now = self.shared.now();
        self.shared
            .products
            .write()
            .seed(obj, &catalog, now)
            .map_err(SeedError)
    }

    /// All products as `GET /api/rest/v1/products-uuid/{uuid}` returns them (uuid order).
    pub fn products(&self) -> Vec<Value> {
        let base = self.public_base.read().clone();
        self.shared.products.read().all(&base)
    }

    /// One product by uuid.
    pub fn product(&self, uuid: &str) -> Option<Value> {
        let base = self.public_base.read().clone();
        self.shared.products.read().one(uuid, &base)
    }

    /// One product by identifier.
    pub fn product_by_identifier(&self, identifier: &str) -> Option<Value> {
        let uuid = self.shared.products.read().uuid_of(identifier)?;
        self.product(&uuid)
    }

    /// Number of products.
    pub fn product_count(&self) -> usize {
        self.shared.products.read().len()
    }

    // -----------------------------------------------------------------------------------------
    // Observation

    /// The request log, oldest first (bounded ring buffer, see
    /// [`AkeneoEmulatorConfig::request_log_capacity`]).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().entries.iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn reset_log(&self) {
        self.shared.log.lock().entries.clear();
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// Product link rule jobs (one per request that created assets in a family with rules)
    /// spawned and not finished yet (§5.5).
    pub fn link_jobs_pending(&self) -> usize {
        self.shared
            .link_jobs
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until no product link rule job is pending, at most `timeout`; returns whether they
    /// all finished. Jobs are spawned before the answer of the request that created the assets
    /// is sent, so after a client got its answer this covers that request's links.
    pub async fn wait_for_link_jobs(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.link_jobs_pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// API requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.shared
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    // -----------------------------------------------------------------------------------------
    // Faults and time

    /// Current fault settings.
    pub fn faults(&self) -> Faults {
        self.shared.faults.read().clone()
    }

    /// Replaces all fault settings.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.write() = faults;
    }

    /// Sets the response time of every API request (see [`Faults::latency`]).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.write().latency = latency;
    }

    /// Sets (or removes) the concurrency cap.
    pub fn set_max_concurrency(&self, cap: Option<usize>) {
        self.shared.faults.write().max_concurrency = cap;
    }

    /// Sets the injected fault probabilities (429, 5xx, dropped connection).
    pub fn set_fault_rates(&self, rate_429: f64, rate_5xx: f64, rate_drop: f64) {
        let mut f = self.shared.faults.write();
        f.rate_429 = rate_429;
        f.rate_5xx = rate_5xx;
        f.rate_drop = rate_drop;
    }

    /// Outage switch: while on, every request (token included) is answered 503.
    pub fn set_outage(&self, on: bool) {
        self.shared.faults.write().outage = on;
    }

    /// Expires every access token now (refresh tokens stay valid): the next API call gets 401.
    pub fn revoke_tokens(&self) {
        self.shared.tokens.lock().access.clear();
    }

    /// Expires every refresh token now.
    pub fn revoke_refresh_tokens(&self) {
        self.shared.tokens.lock().refresh.clear();
    }

    /// Lifetime of tokens granted from now on (access, refresh).
    pub fn set_token_ttl(&self, access: Duration, refresh: Duration) {
        *self.shared.token_ttl.write() = (access, refresh);
    }

    /// Freezes the server clock used for `created` / `updated` and `SINCE LAST N DAYS`
    /// (`None` = system clock). Token expiry always uses the real monotonic clock.
    pub fn set_clock(&self, now: Option<DateTime<Utc>>) {
        *self.shared.clock.write() = now;
    }
}
