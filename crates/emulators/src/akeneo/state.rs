//! The emulator's shared state: structure, assets, media files, products, tokens, faults,
//! counters and the request log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assetbridge_core::AttributeType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Method;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use super::codec::{self, Val};
use super::products::ProductStore;
use super::{AkeneoEmulatorConfig, Faults};

/// Everything the handlers share.
pub(crate) struct Shared {
    pub creds: Credentials,
    pub asset_batch_max: usize,
    pub media_keep_max: usize,
    pub media_keep_total: usize,
    pub faults: RwLock<Faults>,
    pub token_ttl: RwLock<(Duration, Duration)>,
    pub clock: RwLock<Option<DateTime<Utc>>>,
    pub tokens: Mutex<Tokens>,
    pub catalog: RwLock<Catalog>,
    pub families: RwLock<BTreeMap<String, Arc<RwLock<Family>>>>,
    pub media: RwLock<MediaStore>,
    pub products: RwLock<ProductStore>,
    pub counters: CounterCells,
    pub log: Mutex<RequestLog>,
    pub in_flight: AtomicUsize,
    /// Product link rule jobs (one per request that created assets) not finished yet.
    pub link_jobs: AtomicUsize,
}

pub(crate) struct Credentials {
    pub client_id: String,
    pub secret: String,
    pub username: String,
    pub password: String,
}

impl Shared {
    pub fn new(config: AkeneoEmulatorConfig) -> Self {
        Self {
            creds: Credentials {
                client_id: config.client_id,
                secret: config.secret,
                username: config.username,
                password: config.password,
            },
            asset_batch_max: config.asset_batch_max,
            media_keep_max: config.media_keep_bytes_max,
            media_keep_total: config.media_keep_bytes_total,
            faults: RwLock::new(Faults {
                latency: config.latency,
                max_concurrency: config.max_concurrency,
                rate_429: config.rate_429,
                retry_after_secs: config.retry_after_secs,
                rate_5xx: config.rate_5xx,
                rate_drop: config.rate_drop,
                outage: false,
                delete_outage: false,
            }),
            token_ttl: RwLock::new((config.token_ttl, config.refresh_ttl)),
            clock: RwLock::new(None),
            tokens: Mutex::new(Tokens::default()),
            catalog: RwLock::new(Catalog::default()),
            families: RwLock::new(BTreeMap::new()),
            media: RwLock::new(MediaStore::default()),
            products: RwLock::new(ProductStore::default()),
            counters: CounterCells::default(),
            log: Mutex::new(RequestLog::new(config.request_log_capacity)),
            in_flight: AtomicUsize::new(0),
            link_jobs: AtomicUsize::new(0),
        }
    }

    /// Server time (the frozen clock when set), in whole seconds like Akeneo's timestamps.
    pub fn now(&self) -> i64 {
        match *self.clock.read() {
            Some(t) => t.timestamp(),
            None => Utc::now().timestamp(),
        }
    }

    pub fn family(&self, code: &str) -> Option<Arc<RwLock<Family>>> {
        self.families.read().get(code).cloned()
    }
}

/// ISO 8601 with an explicit UTC offset, as the Asset Manager renders `created`/`updated`.
pub(crate) fn iso(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Locales and channels

/// Activated locales and channels (with the locales each channel activates).
pub(crate) struct Catalog {
    pub locales: Vec<String>,
    pub channels: Vec<(String, Vec<String>)>,
}

impl Default for Catalog {
    fn default() -> Self {
        let all: Vec<String> = ["en_US", "fr_FR", "de_DE"].map(String::from).to_vec();
        Self {
            locales: all.clone(),
            channels: vec![
                ("ecommerce".into(), all.clone()),
                ("mobile".into(), all.clone()),
                ("print".into(), all),
            ],
        }
    }
}

impl Catalog {
    /// Stored index (+1) of an activated locale.
    pub fn locale_idx(&self, code: &str) -> Option<u8> {
        self.locales
            .iter()
            .position(|l| l == code)
            .map(|i| (i + 1) as u8)
    }
    pub fn channel_idx(&self, code: &str) -> Option<u8> {
        self.channels
            .iter()
            .position(|(c, _)| c == code)
            .map(|i| (i + 1) as u8)
    }
    pub fn locale_code(&self, idx: u8) -> Option<&str> {
        if idx == 0 {
            None
        } else {
            self.locales.get(idx as usize - 1).map(String::as_str)
        }
    }
    pub fn channel_code(&self, idx: u8) -> Option<&str> {
        if idx == 0 {
            None
        } else {
            self.channels.get(idx as usize - 1).map(|(c, _)| c.as_str())
        }
    }
    pub fn channel_has_locale(&self, channel: &str, locale: &str) -> bool {
        self.channels
            .iter()
            .any(|(c, ls)| c == channel && ls.iter().any(|l| l == locale))
    }
}

// ---------------------------------------------------------------------------------------------
// Asset families

/// One asset attribute, with everything the API renders and validation needs (§5.6).
#[derive(Debug, Clone)]
pub(crate) struct Attribute {
    pub code: String,
    pub kind: AttributeType,
    pub labels: Map<String, Value>,
    pub value_per_locale: bool,
    pub value_per_channel: bool,
    pub is_required_for_completeness: bool,
    pub is_read_only: bool,
    pub max_characters: Option<u64>,
    pub is_textarea: bool,
    pub is_rich_text_editor: Option<bool>,
    pub validation_rule: Option<String>,
    pub validation_regexp: Option<String>,
    pub media_type: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub allowed_extensions: Vec<String>,
    pub max_file_size: Option<String>,
    pub decimals_allowed: Option<bool>,
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    /// Options in creation order: (code, labels).
    pub options: Vec<(String, Map<String, Value>)>,
}

impl Attribute {
    pub fn new(code: &str, kind: AttributeType) -> Self {
        Self {
            code: code.to_owned(),
            kind,
            labels: Map::new(),
            value_per_locale: false,
            value_per_channel: false,
            is_required_for_completeness: false,
            is_read_only: false,
            max_characters: None,
            is_textarea: false,
            is_rich_text_editor: None,
            validation_rule: None,
            validation_regexp: None,
            media_type: None,
            prefix: None,
            suffix: None,
            allowed_extensions: Vec::new(),
            max_file_size: None,
            decimals_allowed: None,
            min_value: None,
            max_value: None,
            options: Vec::new(),
        }
    }

    pub fn from_core(a: &assetbridge_core::AssetAttribute) -> Self {
        let mut out = Self::new(&a.code, a.kind);
        out.value_per_locale = a.value_per_locale;
        out.value_per_channel = a.value_per_channel;
        out.max_characters = a.max_characters.map(u64::from);
        out.prefix = a.prefix.clone();
        out.suffix = a.suffix.clone();
        out.allowed_extensions = a
            .allowed_extensions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_lowercase())
            .collect();
        out.max_file_size = a.max_file_size.clone();
        out.decimals_allowed = a.decimals_allowed;
        out.min_value = a.min_value.clone();
        out.max_value = a.max_value.clone();
        if matches!(a.kind, AttributeType::MediaFile | AttributeType::MediaLink) {
            out.media_type = Some("image".into());
        }
        if let Some(opts) = &a.options {
            out.options = opts.iter().map(|o| (o.clone(), Map::new())).collect();
        }
        out
    }

    pub fn type_name(&self) -> String {
        match serde_json::to_value(self.kind) {
            Ok(Value::String(s)) => s,
            _ => "unknown".into(),
        }
    }

    pub fn has_options(&self) -> bool {
        matches!(
            self.kind,
            AttributeType::SingleOption | AttributeType::MultipleOptions
        )
    }

    pub fn option(&self, code: &str) -> Option<&Map<String, Value>> {
        self.options.iter().find(|(c, _)| c == code).map(|(_, l)| l)
    }

    /// The attribute as the API renders it (§5.6), without `_links`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::String(self.code.clone()));
        m.insert("labels".into(), Value::Object(self.labels.clone()));
        m.insert("type".into(), Value::String(self.type_name()));
        m.insert("value_per_locale".into(), self.value_per_locale.into());
        m.insert("value_per_channel".into(), self.value_per_channel.into());
        m.insert(
            "is_required_for_completeness".into(),
            self.is_required_for_completeness.into(),
        );
        m.insert("is_read_only".into(), self.is_read_only.into());
        let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        match self.kind {
            AttributeType::Text => {
                m.insert(
                    "max_characters".into(),
                    self.max_characters.map(Value::from).unwrap_or(Value::Null),
                );
                m.insert("is_textarea".into(), self.is_textarea.into());
                m.insert(
                    "is_rich_text_editor".into(),
                    self.is_rich_text_editor
                        .map(Value::from)
                        .unwrap_or(Value::Null),
                );
                m.insert("validation_rule".into(), opt(&self.validation_rule));
                m.insert("validation_regexp".into(), opt(&self.validation_regexp));
            }
            AttributeType::MediaFile => {
                m.insert(
                    "allowed_extensions".into(),
                    Value::from(self.allowed_extensions.clone()),
                );
                m.insert("max_file_size".into(), opt(&self.max_file_size));
                m.insert("media_type".into(), opt(&self.media_type));
            }
            AttributeType::MediaLink => {
                m.insert("prefix".into(), opt(&self.prefix));
                m.insert("suffix".into(), opt(&self.suffix));
                m.insert("media_type".into(), opt(&self.media_type));
            }
            AttributeType::Number => {
                m.insert(
                    "decimals_allowed".into(),
                    self.decimals_allowed.unwrap_or(false).into(),
                );
                m.insert("min_value".into(), opt(&self.min_value));
                m.insert("max_value".into(), opt(&self.max_value));
            }
            _ => {}
        }
        Value::Object(m)
    }
}

/// One stored asset: its code as first written, timestamps (seconds) and encoded values (see
/// [`codec`]).
pub(crate) struct StoredAsset {
    /// The code as the write that created the asset spelt it; the asset's key in
    /// [`Family::assets`] is its [`fold`]ed form.
    pub code: Arc<str>,
    pub created: i64,
    pub updated: i64,
    pub values: Box<[u8]>,
}

/// An asset family: its properties, attributes and assets.
pub(crate) struct Family {
    pub code: String,
    pub labels: Map<String, Value>,
    pub attribute_as_main_media: Option<String>,
    pub naming_convention: Value,
    pub product_link_rules: Value,
    pub transformations: Value,
    pub sharing_enabled: Option<bool>,
    pub attributes: Vec<Attribute>,
    pub attr_index: HashMap<String, u16>,
    /// Assets by [`fold`]ed code: `search_after` paging walks this map in that order. Akeneo
    /// keeps asset codes in a MySQL column of collation `utf8mb4_unicode_ci`, unique per family
    /// (CE `akeneo_asset_manager_asset`, `akeneoasset_manager_identifier_asset_ux`) and looked
    /// up with `WHERE code = :code` (CE `SqlAssetRepository::getByAssetFamilyAndCode`): `Foo`
    /// and `foo` are one asset, which keeps the spelling of the write that created it.
    pub assets: BTreeMap<Arc<str>, StoredAsset>,
    /// Codes by `updated` time: the `updated` filter reads ranges of it instead of scanning.
    /// A set of codes per second, not a set of (updated, code) pairs: the assets of a batch share
    /// their second, and ordering them by code as well compared codes at every level of the
    /// tree for each write (a tenth of the emulator's CPU at zero latency); the filter sorts the
    /// codes it finds anyway.
    pub by_updated: BTreeMap<i64, UpdatedAt>,
}

/// An asset code as Akeneo compares it (see [`Family::assets`]): codes are ASCII
/// (`^[a-zA-Z0-9_]+$`), where that collation is ASCII case folding. Borrowed when already
/// folded.
pub(crate) fn fold(code: &str) -> std::borrow::Cow<'_, str> {
    if code.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(code.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(code)
    }
}

/// The codes of the assets last updated in one second (see [`Family::by_updated`]).
pub type UpdatedAt = std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>;

impl Family {
    pub fn new(code: &str) -> Self {
        Self {
            code: code.to_owned(),
            labels: Map::new(),
            attribute_as_main_media: None,
            naming_convention: Value::Object(Map::new()),
            product_link_rules: Value::Array(vec![]),
            transformations: Value::Array(vec![]),
            sharing_enabled: None,
            attributes: Vec::new(),
            attr_index: HashMap::new(),
            assets: BTreeMap::new(),
            by_updated: BTreeMap::new(),
        }
    }

    pub fn attribute(&self, code: &str) -> Option<&Attribute> {
        self.attr_index
            .get(code)
            .map(|&i| &self.attributes[i as usize])
    }

    /// Adds an attribute, or replaces the one with the same code (keeping its index so that
    /// stored values stay valid).
    pub fn upsert_attribute(&mut self, attribute: Attribute) {
        match self.attr_index.get(&attribute.code) {
            Some(&i) => self.attributes[i as usize] = attribute,
            None => {
                self.attr_index
                    .insert(attribute.code.clone(), self.attributes.len() as u16);
                self.attributes.push(attribute);
            }
        }
    }

    /// The family as the API renders it (§5.3), without `_links`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), Value::String(self.code.clone()));
        m.insert("labels".into(), Value::Object(self.labels.clone()));
        m.insert(
            "attribute_as_main_media".into(),
            self.attribute_as_main_media
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        m.insert("naming_convention".into(), self.naming_convention.clone());
        m.insert("product_link_rules".into(), self.product_link_rules.clone());
        m.insert("transformations".into(), self.transformations.clone());
        if let Some(s) = self.sharing_enabled {
            m.insert("sharing_enabled".into(), s.into());
        }
        Value::Object(m)
    }

    /// The stored asset whose code is `code` (compared as Akeneo does: [`fold`]).
    pub fn asset(&self, code: &str) -> Option<&StoredAsset> {
        self.assets.get(&*fold(code))
    }

    /// Writes merged values for `code`; returns (created, changed).
    pub fn write_asset(
        &mut self,
        code: &str,
        changes: Vec<(u16, u8, u8, Option<codec::Data>)>,
        now: i64,
    ) -> (bool, bool) {
        let spelling = code;
        let folded = fold(code);
        let code = &*folded;
        if let Some((key, stored)) = self.assets.get_key_value(code) {
            let key = key.clone();
            let mut vals: Vec<Val> = codec::decode(&stored.values);
            if !codec::merge(&mut vals, changes) {
                return (false, false);
            }
            let old_updated = stored.updated;
            let stored = self.assets.get_mut(code).expect("present");
            stored.values = codec::encode(&vals);
            stored.updated = now;
            self.unindex_updated(old_updated, &key);
            self.by_updated.entry(now).or_default().insert(key);
            (false, true)
        } else {
            let mut vals = Vec::new();
            codec::merge(&mut vals, changes);
            let key: Arc<str> = Arc::from(code);
            let spelt = if spelling == code {
                key.clone()
            } else {
                Arc::from(spelling)
            };
            self.assets.insert(
                key.clone(),
                StoredAsset {
                    code: spelt,
                    created: now,
                    updated: now,
                    values: codec::encode(&vals),
                },
            );
            self.by_updated.entry(now).or_default().insert(key);
            (true, true)
        }
    }

    /// Takes `code` out of the codes updated at `updated` (and the second out of the index once
    /// it holds none).
    fn unindex_updated(&mut self, updated: i64, code: &Arc<str>) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.by_updated.entry(updated)
        {
            e.get_mut().remove(code);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    pub fn delete_asset(&mut self, code: &str) -> bool {
        match self.assets.remove_entry(&*fold(code)) {
            Some((key, stored)) => {
                self.unindex_updated(stored.updated, &key);
                true
            }
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Media files

/// What the emulator keeps of an uploaded media file.
#[derive(Debug, Clone)]
pub struct MediaFileInfo {
    /// The file code (`a/b/c/d/<sha1>_<name>`).
    pub code: String,
    /// The file name as uploaded.
    pub original_filename: String,
    /// The part's `Content-Type`, or one guessed from the extension.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case extension without the dot (`""` when none).
    pub extension: String,
    /// Hex SHA-1 of the content.
    pub content_sha1: String,
    /// The bytes, when they fit the keep caps (see `AkeneoEmulatorConfig::media_keep_bytes_max`).
    pub bytes: Option<Bytes>,
}

#[derive(Default)]
pub(crate) struct MediaStore {
    pub files: HashMap<String, MediaFileInfo>,
    pub kept_bytes: usize,
    pub uploads: u64,
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Default)]
pub(crate) struct Tokens {
    pub access: HashMap<String, Instant>,
    pub refresh: HashMap<String, Instant>,
    grants: u32,
}

impl Tokens {
    pub fn purge_sometimes(&mut self) {
        self.grants += 1;
        if self.grants % 1024 == 0 {
            let now = Instant::now();
            self.access.retain(|_, e| *e > now);
            self.refresh.retain(|_, e| *e > now);
        }
    }

    pub fn access_valid(&self, token: &str) -> bool {
        self.access.get(token).is_some_and(|e| *e > Instant::now())
    }
}

// ---------------------------------------------------------------------------------------------
// Counters and request log

/// A snapshot of the emulator's counters (see [`super::AkeneoEmulator::counters`]); also the
/// JSON of `GET /_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Successful password grants.
    pub token_grants: u64,
    /// Successful refresh-token grants.
    pub token_refreshes: u64,
    /// Token requests answered with an error.
    pub token_failures: u64,
    /// Responses per `"METHOD /route/template"` and status (`0` = connection dropped).
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Asset items created or updated (single and batch PATCH, seeding excluded).
    pub asset_writes: u64,
    /// Asset items answered 201.
    pub assets_created: u64,
    /// Asset items answered 204.
    pub assets_updated: u64,
    /// Asset items answered 422.
    pub asset_items_rejected: u64,
    /// Assets deleted.
    pub assets_deleted: u64,
    /// `PATCH .../assets` (batch) requests that reached item processing.
    pub asset_batch_requests: u64,
    /// `PATCH .../assets/{code}` requests.
    pub asset_single_patches: u64,
    /// Product lines / bodies created or updated.
    pub product_writes: u64,
    /// NDJSON product batch requests that reached line processing.
    pub product_batch_requests: u64,
    /// Successful media uploads.
    pub media_uploads: u64,
    /// Total bytes of successful media uploads.
    pub media_upload_bytes: u64,
    /// All 429 responses (concurrency cap and injected).
    pub throttled: u64,
    /// 429 responses caused by the concurrency cap.
    pub throttled_concurrency: u64,
    /// Injected 500/502/503 responses (outage included).
    pub injected_5xx: u64,
    /// Connections dropped without an answer.
    pub dropped_connections: u64,
    /// Highest number of API requests seen in flight at once (rejected ones included).
    pub max_in_flight: u64,
    /// Created assets whose family's naming convention wrote at least one value (§5.4).
    #[serde(default)]
    pub naming_conventions_applied: u64,
    /// Batch PATCH requests answered by the typed fast path (`fast.rs`), of `asset_batch_requests`.
    #[serde(default)]
    pub asset_batches_typed: u64,
    /// Product link rules run, one per (created asset, rule) (§5.5).
    #[serde(default)]
    pub link_rule_runs: u64,
    /// Product values changed by product link rules (one per product and assignment).
    #[serde(default)]
    pub products_linked: u64,
}

impl Counters {
    /// Responses to `method route` (all statuses).
    pub fn requests_to(&self, method: &str, route: &str) -> u64 {
        self.requests
            .get(&format!("{method} {route}"))
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Responses to `method route` with `status`.
    pub fn requests_with_status(&self, method: &str, route: &str, status: u16) -> u64 {
        self.requests
            .get(&format!("{method} {route}"))
            .and_then(|m| m.get(&status).copied())
            .unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct CounterCells {
    pub token_grants: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub token_failures: AtomicU64,
    pub requests: Mutex<HashMap<(Method, &'static str, u16), u64>>,
    pub asset_writes: AtomicU64,
    pub assets_created: AtomicU64,
    pub assets_updated: AtomicU64,
    pub asset_items_rejected: AtomicU64,
    pub assets_deleted: AtomicU64,
    pub asset_batch_requests: AtomicU64,
    pub asset_single_patches: AtomicU64,
    pub product_writes: AtomicU64,
    pub product_batch_requests: AtomicU64,
    pub media_uploads: AtomicU64,
    pub media_upload_bytes: AtomicU64,
    pub throttled: AtomicU64,
    pub throttled_concurrency: AtomicU64,
    pub injected_5xx: AtomicU64,
    pub dropped_connections: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub naming_conventions_applied: AtomicU64,
    pub asset_batches_typed: AtomicU64,
    pub link_rule_runs: AtomicU64,
    pub products_linked: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl CounterCells {
    pub fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut requests: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
        for ((m, r, s), n) in self.requests.lock().iter() {
            *requests
                .entry(format!("{m} {r}"))
                .or_default()
                .entry(*s)
                .or_default() += n;
        }
        Counters {
            token_grants: g(&self.token_grants),
            token_refreshes: g(&self.token_refreshes),
            token_failures: g(&self.token_failures),
            requests,
            asset_writes: g(&self.asset_writes),
            assets_created: g(&self.assets_created),
            assets_updated: g(&self.assets_updated),
            asset_items_rejected: g(&self.asset_items_rejected),
            assets_deleted: g(&self.assets_deleted),
            asset_batch_requests: g(&self.asset_batch_requests),
            asset_single_patches: g(&self.asset_single_patches),
            product_writes: g(&self.product_writes),
            product_batch_requests: g(&self.product_batch_requests),
            media_uploads: g(&self.media_uploads),
            media_upload_bytes: g(&self.media_upload_bytes),
            throttled: g(&self.throttled),
            throttled_concurrency: g(&self.throttled_concurrency),
            injected_5xx: g(&self.injected_5xx),
            dropped_connections: g(&self.dropped_connections),
            max_in_flight: g(&self.max_in_flight),
            naming_conventions_applied: g(&self.naming_conventions_applied),
            asset_batches_typed: g(&self.asset_batches_typed),
            link_rule_runs: g(&self.link_rule_runs),
            products_linked: g(&self.products_linked),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.token_grants,
            &self.token_refreshes,
            &self.token_failures,
            &self.asset_writes,
            &self.assets_created,
            &self.assets_updated,
            &self.asset_items_rejected,
            &self.assets_deleted,
            &self.asset_batch_requests,
            &self.asset_single_patches,
            &self.product_writes,
            &self.product_batch_requests,
            &self.media_uploads,
            &self.media_upload_bytes,
            &self.throttled,
            &self.throttled_concurrency,
            &self.injected_5xx,
            &self.dropped_connections,
            &self.max_in_flight,
            &self.naming_conventions_applied,
            &self.asset_batches_typed,
            &self.link_rule_runs,
            &self.products_linked,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.requests.lock().clear();
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// The HTTP method.
    pub method: Method,
    /// The URI path as sent (percent-encoded).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The matched route template (e.g. `/api/rest/v1/asset-families/{family}/assets`), or
    /// `"<unmatched>"`.
    pub route: &'static str,
    /// The status answered; `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
    /// Items in the request body for batch writes (assets or product lines), when parsed.
    pub items: Option<u32>,
    /// When the request reached the emulator.
    pub started: Instant,
    /// When its answer was ready (or the connection dropped).
    pub ended: Instant,
}

pub(crate) struct RequestLog {
    pub entries: VecDeque<LoggedRequest>,
    pub capacity: usize,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    pub fn push(&mut self, entry: LoggedRequest) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (second, codes) of the index, codes sorted.
    fn index(f: &Family) -> Vec<(i64, Vec<String>)> {
        f.by_updated
            .iter()
            .map(|(t, codes)| {
                let mut codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                codes.sort();
                (*t, codes)
            })
            .collect()
    }

    #[test]
    fn the_updated_index_follows_writes_and_deletions() {
        let mut f = Family::new("packshots");
        let change = |n: u8| vec![(0u16, 0u8, 0u8, Some(codec::Data::Bool(n % 2 == 0)))];
        assert_eq!(f.write_asset("a", change(1), 10), (true, true));
        assert_eq!(f.write_asset("b", change(1), 10), (true, true));
        assert_eq!(index(&f), [(10, vec!["a".into(), "b".into()])]);
        // An update moves the code to its new second; an emptied second leaves the index.
        assert_eq!(f.write_asset("a", change(2), 20), (false, true));
        assert_eq!(f.write_asset("b", change(2), 20), (false, true));
        assert_eq!(index(&f), [(20, vec!["a".into(), "b".into()])]);
        // A write that changes nothing keeps the asset's second.
        assert_eq!(f.write_asset("a", change(2), 30), (false, false));
        assert_eq!(index(&f), [(20, vec!["a".into(), "b".into()])]);
        assert!(f.delete_asset("a"));
        assert!(!f.delete_asset("a"));
        assert_eq!(index(&f), [(20, vec!["b".into()])]);
        assert!(f.delete_asset("b"));
        assert!(index(&f).is_empty());
    }
}
