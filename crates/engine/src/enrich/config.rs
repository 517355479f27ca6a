//! The `[enrichment]` configuration: which events trigger it, how an asset finds its product,
//! which product values become which AEM metadata fields, and how they are written.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde::Deserialize;

/// `aem.assets.asset.processing_completed`.
pub const PROCESSING_COMPLETED: &str = "aem.assets.asset.processing_completed";
/// `aem.assets.asset.metadata_updated` (also the echo of our own PATCH).
pub const METADATA_UPDATED: &str = "aem.assets.asset.metadata_updated";

fn default_trigger_events() -> Vec<String> {
    vec![PROCESSING_COMPLETED.to_owned(), METADATA_UPDATED.to_owned()]
}
fn default_status_field() -> String {
    "pim:status".to_owned()
}
fn default_status_not_found() -> String {
    "not_found".to_owned()
}
fn default_cache_ttl_secs() -> u64 {
    60
}
fn default_cache_max_products() -> usize {
    10_000
}
fn default_concurrency() -> usize {
    8
}
fn default_separator() -> String {
    ", ".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_poll_interval_secs() -> u64 {
    60
}
fn default_poll_overlap_secs() -> u64 {
    60
}
fn default_max_assets_per_product() -> usize {
    1000
}

/// The `[enrichment]` table: PIM → DAM enrichment of AEM asset metadata from Akeneo products.
///
/// ```toml
/// [enrichment]
/// product_key = { from = "name", regex = "^([A-Za-z0-9-]+)" }
/// locale = "en_US"
/// fields = [
///   { attribute = "sku", target = "wknd-skuid" },
///   { attribute = "supplier", target = "wknd-suppliername", format = "option_label" },
/// ]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichmentConfig {
    /// Inbox families whose changes belong to enrichment (the family the Adobe webhook, journal
    /// or queue gives AEM asset events). Default: empty = every change made from an AEM asset
    /// event (a record carrying `_event_type` = `aem.assets.…`), whatever its family, and
    /// deletions from Adobe sources.
    #[serde(default)]
    pub families: Vec<String>,
    /// Event types that trigger an enrichment. Default: `aem.assets.asset.processing_completed`
    /// and `aem.assets.asset.metadata_updated` (an update that is not our own echo: the inbox
    /// keeps one pending change per asset, so a user's edit may replace a pending
    /// `processing_completed`; enriching on it too loses nothing, and idempotence makes it a
    /// GET without PATCH when nothing changed).
    #[serde(default = "default_trigger_events")]
    pub trigger_events: Vec<String>,
    /// How an asset finds its product. Default: the asset name (`repo:name`), as Adobe's tutorial.
    #[serde(default)]
    pub product_key: ProductKey,
    /// Which product values go to which AEM metadata fields (at least one).
    pub fields: Vec<FieldRule>,
    /// Locale of localizable product attributes (a field's own `locale` wins). Default: none —
    /// a localizable attribute then has no value unless its field names a locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// Channel (scope) of scopable product attributes (a field's own `scope` wins). Default: none.
    #[serde(default)]
    pub scope: Option<String>,
    /// What to do when no product matches the asset's key. Default: `skip`.
    #[serde(default)]
    pub unknown_product: UnknownProduct,
    /// Metadata field `mark` writes. Default: `pim:status`.
    #[serde(default = "default_status_field")]
    pub status_field: String,
    /// Value `mark` writes to `status_field` (removed again once the product is found).
    /// Default: `not_found`.
    #[serde(default = "default_status_not_found")]
    pub status_not_found: String,
    /// How long product data read from the PIM is reused, seconds. Default: 60.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Most products kept in that cache. Default: 10000.
    #[serde(default = "default_cache_max_products")]
    pub cache_max_products: usize,
    /// AEM requests (GET/PATCH metadata) in flight at once. Default: 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Send the `ETag` of the GET as `If-Match` of the PATCH (412 → retried later) instead of
    /// `If-Match: *`. AEM's ETag support is not documented. Default: false.
    #[serde(default)]
    pub use_etag: bool,
    /// The PIM side: re-enrich assets when their product changes.
    #[serde(default)]
    pub product_poll: ProductPollConfig,
}

/// `[enrichment.product_poll]`: polls Akeneo for products updated since the last poll and
/// re-enriches the assets linked to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductPollConfig {
    /// Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between polls. Default: 60.
    #[serde(default = "default_poll_interval_secs")]
    pub interval_secs: u64,
    /// Each poll goes back this many seconds before the last product seen. Default: 60.
    #[serde(default = "default_poll_overlap_secs")]
    pub overlap_secs: u64,
    /// Most assets remembered per product (the newest are kept). Default: 1000.
    #[serde(default = "default_max_assets_per_product")]
    pub max_assets_per_product: usize,
}

impl Default for ProductPollConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: default_poll_interval_secs(),
            overlap_secs: default_poll_overlap_secs(),
            max_assets_per_product: default_max_assets_per_product(),
        }
    }
}

/// What enrichment does for an asset whose product is not in the PIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownProduct {
    /// Nothing is written (no AEM call); counted and logged with the key.
    #[default]
    Skip,
    /// `status_field = status_not_found` is written to the asset.
    Mark,
}

/// Where an asset's product key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// `repo:name`, the file name.
    #[default]
    Name,
    /// `repo:path`, e.g. `/content/dam/products/SKU-1/front.jpg`.
    Path,
    /// An asset metadata field (`assetMetadata[field]`); an array gives several candidates.
    Metadata,
}

/// `product_key = { from = "name" | "path" | "metadata", regex = "...", field = "...", strip_extension = false }`.
///
/// The key is the product identifier (Akeneo's identifier attribute, `sku` by default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductKey {
    /// Default: `name`.
    #[serde(default)]
    pub from: KeySource,
    /// With `from = "metadata"`: the metadata field, e.g. `pim:productId`. Required then.
    #[serde(default)]
    pub field: Option<String>,
    /// A regular expression over the value; the key is its group named `key`, else group 1,
    /// else the whole match. No match → the asset has no product key (skipped, counted).
    /// Default: none (the whole value).
    #[serde(default)]
    pub regex: Option<String>,
    /// Drop a file extension (`.jpg`) from the value before the regex. Default: false.
    #[serde(default)]
    pub strip_extension: bool,
}

/// A product's top-level property (not a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductProperty {
    /// `uuid`.
    Uuid,
    /// The identifier attribute's value.
    Identifier,
    /// `family` code.
    Family,
    /// `categories` codes.
    Categories,
    /// `enabled`.
    Enabled,
    /// `parent` product model code.
    Parent,
    /// `groups` codes.
    Groups,
}

impl ProductProperty {
    pub(crate) fn key(self) -> &'static str {
        match self {
            ProductProperty::Uuid => "uuid",
            ProductProperty::Identifier => "identifier",
            ProductProperty::Family => "family",
            ProductProperty::Categories => "categories",
            ProductProperty::Enabled => "enabled",
            ProductProperty::Parent => "parent",
            ProductProperty::Groups => "groups",
        }
    }
}

/// How a product value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// From the attribute type when the PIM says it (`attribute_type`), else from the JSON
    /// shape: text as text, numbers as numbers, booleans as booleans, option codes as codes,
    /// a metric as `"amount unit"`, prices as `"amount currency"`. Default.
    #[default]
    Auto,
    /// A string: text as it is; numbers normalised (`12.5000` → `"12.5"`, also the decimal text
    /// of a `pim_catalog_number` attribute); booleans `"true"`/`"false"`; a metric
    /// `"amount unit"`.
    Text,
    /// A JSON number (strings parsed; a metric's or a price's amount).
    Number,
    /// A JSON boolean (`true`/`false`, `"1"`/`"0"`, `"yes"`/`"no"` accepted).
    Boolean,
    /// A date written with `date_format` (default `%Y-%m-%d`).
    Date,
    /// The option code(s), unchanged.
    OptionCode,
    /// The option label(s): the PIM's `linked_data` labels in the field's locale when present,
    /// else the field's `labels` map, else the code.
    OptionLabel,
    /// The PIM's `data` as is.
    Json,
}

/// How a multi-valued attribute (multi-select, categories, prices) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiFormat {
    /// A JSON array. Default.
    #[default]
    Array,
    /// One string, the items joined with `separator`.
    Join,
}

/// What happens to the AEM field when the product has no value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Leave the AEM field as it is. Default.
    #[default]
    Keep,
    /// Remove the AEM field (a JSON Patch `remove`) when it is present.
    Remove,
}

/// One `[[enrichment.fields]]` rule: a product value → an AEM metadata field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The AEM metadata field written, e.g. `pim:sku` or `wknd-skuid` (sent as the JSON Pointer
    /// `/pim:sku`).
    pub target: String,
    /// The product attribute read (one of `attribute` and `property`).
    #[serde(default)]
    pub attribute: Option<String>,
    /// A top-level product property read instead of an attribute.
    #[serde(default)]
    pub property: Option<ProductProperty>,
    /// Default: `auto`.
    #[serde(default)]
    pub format: ValueFormat,
    /// Locale of this attribute's value. Default: `[enrichment] locale`.
    #[serde(default)]
    pub locale: Option<String>,
    /// Channel of this attribute's value. Default: `[enrichment] scope`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Default: `array`.
    #[serde(default)]
    pub multi: MultiFormat,
    /// Separator of `multi = "join"`. Default: `", "`.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Option code → label, for `format = "option_label"` when the PIM gives no labels.
    /// Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `strftime` format of `format = "date"`. Default: `%Y-%m-%d`.
    #[serde(default)]
    pub date_format: Option<String>,
    /// For price collections: the currency whose amount is written. Default: every price.
    #[serde(default)]
    pub currency: Option<String>,
    /// Default: `keep`.
    #[serde(default)]
    pub on_missing: OnMissing,
}

impl FieldRule {
    /// A rule reading `attribute` into `target` with every default.
    pub fn new(attribute: &str, target: &str) -> Self {
        Self {
            target: target.to_owned(),
            attribute: Some(attribute.to_owned()),
            property: None,
            format: ValueFormat::Auto,
            locale: None,
            scope: None,
            multi: MultiFormat::Array,
            separator: default_separator(),
            labels: BTreeMap::new(),
            date_format: None,
            currency: None,
            on_missing: OnMissing::Keep,
        }
    }
}

/// A configuration problem: the key (relative to `[enrichment]`, e.g. `fields[1].target`) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("enrichment.{key}: {message}")]
pub struct ConfigIssue {
    /// Key under `[enrichment]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn issue(key: impl Into<String>, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        key: key.into(),
        message: message.into(),
    }
}

impl EnrichmentConfig {
    /// A configuration with every default and these fields.
    pub fn new(fields: Vec<FieldRule>) -> Self {
        Self {
            families: Vec::new(),
            trigger_events: default_trigger_events(),
            product_key: ProductKey::default(),
            fields,
            locale: None,
            scope: None,
            unknown_product: UnknownProduct::Skip,
            status_field: default_status_field(),
            status_not_found: default_status_not_found(),
            cache_ttl_secs: default_cache_ttl_secs(),
            cache_max_products: default_cache_max_products(),
            concurrency: default_concurrency(),
            use_etag: false,
            product_poll: ProductPollConfig::default(),
        }
    }

    /// Checks what serde cannot (a rule reads exactly one source, targets are distinct and
    /// non-empty, the key's regex compiles, …).
    pub fn validate(&self) -> Result<(), ConfigIssue> {
        self.compile().map(|_| ())
    }

    pub(crate) fn compile(&self) -> Result<Compiled, ConfigIssue> {
        if self.fields.is_empty() {
            return Err(issue("fields", "at least one field rule is needed"));
        }
        let mut targets = HashSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            let key = |k: &str| format!("fields[{i}].{k}");
            if f.target.trim().is_empty() {
                return Err(issue(key("target"), "must name an AEM metadata field"));
            }
            if f.target.starts_with('/') {
                return Err(issue(
                    key("target"),
                    format!(
                        "`{}`: name the field without a leading `/` (it becomes the JSON Pointer `/{}`)",
                        f.target,
                        f.target.trim_start_matches('/')
                    ),
                ));
            }
            if f.target.starts_with("repo:") {
                return Err(issue(
                    key("target"),
                    format!("`{}` is read-only repository metadata", f.target),
                ));
            }
            if !targets.insert(f.target.as_str()) {
                return Err(issue(
                    key("target"),
                    format!("`{}` is written by two rules", f.target),
                ));
            }
            match (&f.attribute, &f.property) {
                (Some(a), None) if !a.trim().is_empty() => {}
                (None, Some(_)) => {}
                (Some(_), Some(_)) => {
                    return Err(issue(
                        key("attribute"),
                        "give `attribute` or `property`, not both",
                    ))
                }
                _ => return Err(issue(key("attribute"), "give `attribute` or `property`")),
            }
            if f.multi == MultiFormat::Join && f.separator.is_empty() {
                return Err(issue(key("separator"), "must not be empty"));
            }
        }
        if self.unknown_product == UnknownProduct::Mark {
            if self.status_field.trim().is_empty() || self.status_field.starts_with('/') {
                return Err(issue("status_field", "must name an AEM metadata field"));
            }
            if targets.contains(self.status_field.as_str()) {
                return Err(issue(
                    "status_field",
                    format!("`{}` is also a field rule's target", self.status_field),
                ));
            }
        }
        if self.trigger_events.is_empty() {
            return Err(issue("trigger_events", "at least one event type is needed"));
        }
        if self.concurrency == 0 {
            return Err(issue("concurrency", "must be at least 1"));
        }
        if self.cache_max_products == 0 {
            return Err(issue("cache_max_products", "must be at least 1"));
        }
        if self.product_poll.max_assets_per_product == 0 {
            return Err(issue(
                "product_poll.max_assets_per_product",
                "must be at least 1",
            ));
        }
        if self.product_poll.interval_secs == 0 {
            return Err(issue("product_poll.interval_secs", "must be at least 1"));
        }
        let regex = match &self.product_key.regex {
            Some(r) => Some(
                Regex::new(r)
                    .map_err(|e| issue("product_key.regex", format!("does not compile: {e}")))?,
            ),
            None => None,
        };
        let field = match (self.product_key.from, &self.product_key.field) {
            (KeySource::Metadata, Some(f)) if !f.trim().is_empty() => Some(f.clone()),
            (KeySource::Metadata, _) => return Err(issue(
                "product_key.field",
                "`from = \"metadata\"` needs the metadata field, e.g. field = \"pim:productId\"",
            )),
            (_, Some(_)) => {
                return Err(issue(
                    "product_key.field",
                    "only used with `from = \"metadata\"`",
                ))
            }
            (_, None) => None,
        };
        let mut owned: HashSet<String> = self.fields.iter().map(|f| f.target.clone()).collect();
        if self.unknown_product == UnknownProduct::Mark {
            owned.insert(self.status_field.clone());
        }
        let mut attributes: Vec<String> = Vec::new();
        for f in &self.fields {
            if let Some(a) = &f.attribute {
                if !attributes.contains(a) {
                    attributes.push(a.clone());
                }
            }
        }
        Ok(Compiled {
            key: CompiledKey {
                from: self.product_key.from,
                field,
                regex,
                strip_extension: self.product_key.strip_extension,
            },
            owned,
            attributes,
        })
    }
}

/// The checked form of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub key: CompiledKey,
    /// Metadata keys enrichment writes (targets, and the status field in `mark` mode).
    pub owned: HashSet<String>,
    /// Product attributes read (the `attributes` restriction of product reads).
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledKey {
    pub from: KeySource,
    pub field: Option<String>,
    pub regex: Option<Regex>,
    pub strip_extension: bool,
}

impl CompiledKey {
    /// The product key(s) of one raw value (name, path, or metadata field value).
    pub fn keys_of(&self, raw: &serde_json::Value) -> Vec<String> {
        let items: Vec<String> = match raw {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Number(n) => vec![n.to_string()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Object(o) => {
                        o.get("value").and_then(|v| v.as_str()).map(str::to_owned)
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut out: Vec<String> = Vec::new();
        for s in items {
            if let Some(k) = self.key_of_str(&s) {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out
    }

    fn key_of_str(&self, s: &str) -> Option<String> {
        let mut s = s.trim();
        if self.strip_extension {
            if let Some((stem, ext)) = s.rsplit_once('.') {
                if !stem.is_empty() && !ext.is_empty() && !ext.contains('/') {
                    s = stem;
                }
            }
        }
        let key = match &self.regex {
            None => s.to_owned(),
            Some(re) => {
                let caps = re.captures(s)?;
                caps.name("key")
                    .or_else(|| caps.get(1))
                    .or_else(|| caps.get(0))?
                    .as_str()
                    .to_owned()
            }
        };
        let key = key.trim().to_owned();
        (!key.is_empty()).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The engine does not depend on `toml`: these tests give the table as JSON (the same serde
    /// shape).
    fn cfg(json_text: &str) -> EnrichmentConfig {
        serde_json::from_str(json_text).unwrap()
    }

    #[test]
    fn defaults() {
        let c = cfg(r#"{"fields": [{"attribute": "sku", "target": "pim:sku"}]}"#);
        assert_eq!(c.trigger_events, default_trigger_events());
        assert_eq!(c.product_key.from, KeySource::Name);
        assert_eq!(c.unknown_product, UnknownProduct::Skip);
        assert_eq!(c.status_field, "pim:status");
        assert_eq!(c.status_not_found, "not_found");
        assert_eq!(c.cache_ttl_secs, 60);
        assert_eq!(c.cache_max_products, 10_000);
        assert_eq!(c.concurrency, 8);
        assert!(!c.use_etag);
        assert!(c.product_poll.enabled);
        assert_eq!(c.product_poll.interval_secs, 60);
        assert_eq!(c.fields[0].separator, ", ");
        assert_eq!(c.fields[0].format, ValueFormat::Auto);
        c.validate().unwrap();
    }

    #[test]
    fn bad_configurations_name_their_key() {
        let cases = [
            (json!({"fields": []}), "fields"),
            (json!({"fields": [{"target": "a"}]}), "fields[0].attribute"),
            (
                json!({"fields": [{"target": "a", "attribute": "x", "property": "uuid"}]}),
                "fields[0].attribute",
            ),
            (
                json!({"fields": [{"target": "a", "attribute": "x"}, {"target": "a", "attribute": "y"}]}),
                "fields[1].target",
            ),
            (
                json!({"fields": [{"target": "/a", "attribute": "x"}]}),
                "fields[0].target",
            ),
            (
                json!({"fields": [{"target": "repo:name", "attribute": "x"}]}),
                "fields[0].target",
            ),
            (
                json!({"fields": [{"target": "a", "attribute": "x"}], "product_key": {"regex": "("}}),
                "product_key.regex",
            ),
            (
                json!({"fields": [{"target": "a", "attribute": "x"}], "product_key": {"from": "metadata"}}),
                "product_key.field",
            ),
            (
                json!({"fields": [{"target": "pim:status", "attribute": "x"}], "unknown_product": "mark"}),
                "status_field",
            ),
            (
                json!({"fields": [{"target": "a", "attribute": "x"}], "concurrency": 0}),
                "concurrency",
            ),
        ];
        for (v, key) in cases {
            let c: EnrichmentConfig = serde_json::from_value(v.clone()).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, key, "{v}: {e}");
        }
        // Unknown keys are refused by serde.
        assert!(serde_json::from_value::<EnrichmentConfig>(
            json!({"fields": [{"target": "a", "attribute": "x", "atribute": "y"}]})
        )
        .is_err());
    }

    #[test]
    fn keys_from_names_paths_and_metadata() {
        let c = cfg(r#"{"fields": [{"attribute": "sku", "target": "pim:sku"}]}"#);
        let k = c.compile().unwrap().key;
        assert_eq!(k.keys_of(&json!("SKU-1.jpg")), vec!["SKU-1.jpg"]);

        let mut c2 = c.clone();
        c2.product_key.strip_extension = true;
        let k = c2.compile().unwrap().key;
        assert_eq!(k.keys_of(&json!("SKU-1.front.jpg")), vec!["SKU-1.front"]);
        assert_eq!(k.keys_of(&json!("noext")), vec!["noext"]);

        c2.product_key.regex = Some(r"^(?P<key>[A-Z]+-\d+)".into());
        let k = c2.compile().unwrap().key;
        assert_eq!(k.keys_of(&json!("SKU-1_front.jpg")), vec!["SKU-1"]);
        assert!(
            k.keys_of(&json!("front.jpg")).is_empty(),
            "no match, no key"
        );

        let mut c3 = c.clone();
        c3.product_key.from = KeySource::Path;
        c3.product_key.regex = Some("/products/([^/]+)/".into());
        let k = c3.compile().unwrap().key;
        assert_eq!(
            k.keys_of(&json!("/content/dam/products/SKU-9/front.jpg")),
            vec!["SKU-9"]
        );

        let mut c4 = c;
        c4.product_key.from = KeySource::Metadata;
        c4.product_key.field = Some("pim:productId".into());
        let k = c4.compile().unwrap().key;
        assert_eq!(k.keys_of(&json!(["A", "B", "A", ""])), vec!["A", "B"]);
        assert_eq!(k.keys_of(&json!(42)), vec!["42"]);
        assert!(k.keys_of(&json!(null)).is_empty());
    }
}
