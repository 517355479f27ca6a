//! Products (§6): `products-uuid` and identifier-based `products` — list (offset or
//! `search_after`, filters), get, PATCH (upsert), DELETE, NDJSON batch PATCH (§6.4) — and the
//! product attributes (read only: `GET /api/rest/v1/attributes[/{code}]`).
//!
//! Products are kept as compact JSON text (parsed when read or written) with three indexes:
//! uuid order (paging), identifier → uuid, and (asset-collection attribute, asset code) → uuids
//! for the "products linked to this asset" lookups of the enrichment flow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::NaiveDateTime;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::http::{
    base_url, cursor_decode, cursor_encode, empty, error, invalid_json, json, json_text, link,
    ordered, param, parse_json, query_pairs, require_content_type, with_items, COLLECTION, JSON,
};
use super::state::{bump, iso, Catalog, Shared};

/// Lines / items per product batch and values per identifier `IN` filter (§6.4, §7).
pub(crate) const BATCH_MAX: usize = 100;
pub(crate) const LINE_MAX: usize = 1_000_000;
const IN_MAX: usize = 100;
/// `page` pagination depth (§4.3).
const OFFSET_MAX: usize = 10_000;

const DOC_UUID: &str = "http://api.akeneo.com/api-reference.html#patch_products_uuid__uuid_";
const DOC_IDENTIFIER: &str = "http://api.akeneo.com/api-reference.html#patch_products__code_";
const DOC_FILTER: &str = "http://api.akeneo.com/documentation/filter.html";

/// A product attribute (`GET /api/rest/v1/attributes`), enough to validate product values and
/// to find asset-collection attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductAttribute {
    /// Attribute code.
    pub code: String,
    /// Akeneo type: `pim_catalog_identifier`, `pim_catalog_text`, `pim_catalog_textarea`,
    /// `pim_catalog_number`, `pim_catalog_boolean`, `pim_catalog_simpleselect`,
    /// `pim_catalog_multiselect`, `pim_catalog_asset_collection`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// One value per locale.
    pub localizable: bool,
    /// One value per channel (`scope`).
    pub scopable: bool,
    /// For `pim_catalog_asset_collection`: the asset family code.
    pub reference_data_name: Option<String>,
    /// Labels per locale.
    pub labels: BTreeMap<String, String>,
}

impl ProductAttribute {
    fn new(code: &str, kind: &str) -> Self {
        Self {
            code: code.to_owned(),
            kind: kind.to_owned(),
            localizable: false,
            scopable: false,
            reference_data_name: None,
            labels: BTreeMap::new(),
        }
    }

    /// The identifier attribute (unique, neither localizable nor scopable).
    pub fn identifier(code: &str) -> Self {
        Self::new(code, "pim_catalog_identifier")
    }

    /// A text attribute.
    pub fn text(code: &str, localizable: bool, scopable: bool) -> Self {
        let mut a = Self::new(code, "pim_catalog_text");
        a.localizable = localizable;
        a.scopable = scopable;
        a
    }

    /// An attribute of any other type.
    pub fn of_type(code: &str, kind: &str, localizable: bool, scopable: bool) -> Self {
        let mut a = Self::new(code, kind);
        a.localizable = localizable;
        a.scopable = scopable;
        a
    }

    /// An asset collection linking assets of `family` (§6.1).
    pub fn asset_collection(code: &str, family: &str) -> Self {
        let mut a = Self::new(code, "pim_catalog_asset_collection");
        a.reference_data_name = Some(family.to_owned());
        a
    }

    fn is_asset_collection(&self) -> bool {
        self.kind == "pim_catalog_asset_collection"
    }

    fn to_json(&self, base: &str) -> Value {
        json!({
            "_links": {"self": link(base, &format!("/api/rest/v1/attributes/{}", self.code), &[])},
            "code": self.code,
            "type": self.kind,
            "group": "other",
            "unique": self.kind == "pim_catalog_identifier",
            "useable_as_grid_filter": true,
            "localizable": self.localizable,
            "scopable": self.scopable,
            "reference_data_name": self.reference_data_name,
            "labels": self.labels,
            "sort_order": 0,
        })
    }
}

/// The product attributes of a fresh emulator: `sku` (identifier), `name` (text, per locale),
/// `description` (textarea, per locale and channel).
pub(crate) fn default_attributes() -> Vec<ProductAttribute> {
    vec![
        ProductAttribute::identifier("sku"),
        ProductAttribute::text("name", true, false),
        ProductAttribute::of_type("description", "pim_catalog_textarea", true, true),
    ]
}

/// One stored product.
pub(crate) struct Product {
    /// Everything but `uuid`, `created`, `updated`, `_links`, as compact JSON.
    doc: Box<str>,
    identifier: Option<String>,
    created: i64,
    updated: i64,
}

impl Product {
    fn doc(&self) -> Map<String, Value> {
        serde_json::from_str(&self.doc).unwrap_or_default()
    }
}

pub(crate) struct ProductStore {
    pub attributes: Vec<ProductAttribute>,
    by_uuid: BTreeMap<String, Product>,
    by_identifier: HashMap<String, String>,
    asset_links: HashMap<(String, String), BTreeSet<String>>,
}

impl Default for ProductStore {
    fn default() -> Self {
        Self {
            attributes: default_attributes(),
            by_uuid: BTreeMap::new(),
            by_identifier: HashMap::new(),
            asset_links: HashMap::new(),
        }
    }
}

/// A refused product write: status, message, optional `errors`, optional documentation link.
pub(crate) struct ProductError {
    status: StatusCode,
    message: String,
    errors: Option<Value>,
    doc: Option<&'static str>,
}

impl ProductError {
    fn documented(message: String, doc: &'static str) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{message} Check the expected format on the API documentation."),
            errors: None,
            doc: Some(doc),
        }
    }

    fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            doc: None,
        }
    }

    fn response(&self) -> Response {
        let mut pairs: Vec<(&str, Value)> = vec![
            ("code", self.status.as_u16().into()),
            ("message", Value::String(self.message.clone())),
        ];
        if let Some(e) = &self.errors {
            pairs.push(("errors", e.clone()));
        }
        if let Some(d) = self.doc {
            pairs.push(("_links", json!({"documentation": {"href": d}})));
        }
        json_text(self.status, ordered(&pairs))
    }
}

fn php_type_lower(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "array",
    }
}

/// Which key identifies products on this endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyed {
    Uuid,
    Identifier,
}

impl Keyed {
    fn doc(self) -> &'static str {
        match self {
            Keyed::Uuid => DOC_UUID,
            Keyed::Identifier => DOC_IDENTIFIER,
        }
    }
    fn list_path(self) -> &'static str {
        match self {
            Keyed::Uuid => "/api/rest/v1/products-uuid",
            Keyed::Identifier => "/api/rest/v1/products",
        }
    }
}

fn valid_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

const TOP_LEVEL: [&str; 14] = [
    "uuid",
    "identifier",
    "enabled",
    "family",
    "categories",
    "groups",
    "parent",
    "values",
    "associations",
    "quantified_associations",
    "created",
    "updated",
    "metadata",
    "_links",
];

impl ProductStore {
    fn attribute(&self, code: &str) -> Option<&ProductAttribute> {
        self.attributes.iter().find(|a| a.code == code)
    }

    fn identifier_attribute(&self) -> &str {
        self.attributes
            .iter()
            .find(|a| a.kind == "pim_catalog_identifier")
            .map(|a| a.code.as_str())
            .unwrap_or("sku")
    }

    pub fn add_attribute(&mut self, a: ProductAttribute) {
        match self.attributes.iter_mut().find(|x| x.code == a.code) {
            Some(x) => *x = a,
            None => self.attributes.push(a),
        }
    }

    fn identifier_of(&self, doc: &Map<String, Value>) -> Option<String> {
        doc.get("values")
            .and_then(|v| v.get(self.identifier_attribute()))
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(|v| v.get("data"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn asset_links_of(&self, doc: &Map<String, Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(values) = doc.get("values").and_then(Value::as_object) else {
            return out;
        };
        for (attr, list) in values {
            if !self
                .attribute(attr)
                .is_some_and(|a| a.is_asset_collection())
            {
                continue;
            }
            for v in list.as_array().into_iter().flatten() {
                for code in v
                    .get("data")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(c) = code.as_str() {
                        out.push((attr.clone(), c.to_owned()));
                    }
                }
            }
        }
        out
    }

    /// Validates `patch` against the attributes and locales (§6.5 errors).
    fn validate(
        &self,
        patch: &Map<String, Value>,
        catalog: &Catalog,
        keyed: Keyed,
    ) -> Result<(), ProductError> {
        let doc = keyed.doc();
        for k in patch.keys() {
            if !TOP_LEVEL.contains(&k.as_str()) {
                return Err(ProductError::documented(
                    format!("Property \"{k}\" does not exist."),
                    doc,
                ));
            }
        }
        for key in ["categories", "groups"] {
            if let Some(v) = patch.get(key) {
                if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                    return Err(ProductError::documented(
                        format!(
                            "Property \"{key}\" expects an array as data, \"{}\" given.",
                            php_type_lower(v)
                        ),
                        doc,
                    ));
                }
            }
        }
        if let Some(v) = patch.get("enabled") {
            if !v.is_boolean() {
                return Err(ProductError::documented(
                    format!(
                        "Property \"enabled\" expects a boolean as data, \"{}\" given.",
                        php_type_lower(v)
                    ),
                    doc,
                ));
            }
        }
        for key in ["family", "parent"] {
            if let Some(v) = patch.get(key) {
                if !(v.is_string() || v.is_null()) {
                    return Err(ProductError::documented(
                        format!(
                            "Property \"{key}\" expects a string as data, \"{}\" given.",
                            php_type_lower(v)
                        ),
                        doc,
                    ));
                }
            }
        }
        let Some(values) = patch.get("values") else {
            return Ok(());
        };
        let Some(values) = values.as_object() else {
            return Err(ProductError::documented(
                format!(
                    "Property \"values\" expects an array as data, \"{}\" given.",
                    php_type_lower(values)
                ),
                doc,
            ));
        };
        for (code, list) in values {
            let Some(a) = self.attribute(code) else {
                return Err(ProductError::documented(
                    format!("Attribute \"{code}\" does not exist."),
                    doc,
                ));
            };
            let Some(list) = list.as_array() else {
                return Err(ProductError::documented(
                    format!(
                        "Property \"{code}\" expects an array as data, \"{}\" given.",
                        php_type_lower(list)
                    ),
                    doc,
                ));
            };
            for v in list {
                let Some(v) = v.as_object() else {
                    return Err(ProductError::documented(
                        format!("Property \"{code}\" expects an array with valid data."),
                        doc,
                    ));
                };
                // Product values are keyed `locale` / `scope` / `data`, all three required
                // (§1 "Values", §6.1; CE `validateValueStructure`): an asset-style `channel`
                // instead of `scope` is refused, not read as "no scope".
                for key in ["locale", "scope", "data"] {
                    if !v.contains_key(key) {
                        return Err(ProductError::documented(
                            format!("Property \"{code}\" expects an array with the key \"{key}\"."),
                            doc,
                        ));
                    }
                }
                let locale = v.get("locale").and_then(Value::as_str);
                let scope = v.get("scope").and_then(Value::as_str);
                match (a.localizable, locale) {
                    (true, None) => {
                        return Err(ProductError::documented(
                            format!("Attribute \"{code}\" expects a locale, none given."),
                            doc,
                        ))
                    }
                    (false, Some(l)) => {
                        return Err(ProductError::documented(
                            format!("Attribute \"{code}\" does not expect a locale, \"{l}\" given."),
                            doc,
                        ))
                    }
                    (true, Some(l)) if catalog.locale_idx(l).is_none() => {
                        return Err(ProductError::documented(
                            format!(
                                "Attribute \"{code}\" expects an existing and activated locale, \"{l}\" given."
                            ),
                            doc,
                        ))
                    }
                    _ => {}
                }
                match (a.scopable, scope) {
                    (true, None) => {
                        return Err(ProductError::documented(
                            format!("Attribute \"{code}\" expects a channel code, none given."),
                            doc,
                        ))
                    }
                    (false, Some(s)) => {
                        return Err(ProductError::documented(
                            format!(
                                "Attribute \"{code}\" does not expect a channel, \"{s}\" given."
                            ),
                            doc,
                        ))
                    }
                    (true, Some(s)) if catalog.channel_idx(s).is_none() => {
                        return Err(ProductError::documented(
                            format!(
                                "Attribute \"{code}\" expects an existing scope, \"{s}\" given."
                            ),
                            doc,
                        ))
                    }
                    _ => {}
                }
                let data = v.get("data").unwrap_or(&Value::Null);
                let ok = match a.kind.as_str() {
                    _ if data.is_null() => true,
                    "pim_catalog_asset_collection" | "pim_catalog_multiselect" => data
                        .as_array()
                        .is_some_and(|l| l.iter().all(Value::is_string)),
                    "pim_catalog_boolean" => data.is_boolean(),
                    "pim_catalog_number" => data.is_number() || data.is_string(),
                    "pim_catalog_price_collection" | "pim_catalog_metric" => true,
                    _ => data.is_string(),
                };
                if !ok {
                    let expected = match a.kind.as_str() {
                        "pim_catalog_asset_collection" | "pim_catalog_multiselect" => "an array",
                        "pim_catalog_boolean" => "a boolean",
                        _ => "a string",
                    };
                    return Err(ProductError::documented(
                        format!(
                            "Property \"{code}\" expects {expected} as data, \"{}\" given.",
                            php_type_lower(data)
                        ),
                        doc,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Upserts the product `uuid` with `patch` (update rules of DOCS `rest-api/update.md`:
    /// values merged per (attribute, locale, scope), `data: null` erases, other non-object data
    /// replaced — so an asset collection's array is replaced whole). Returns true when created.
    fn upsert(
        &mut self,
        uuid: &str,
        patch: &Map<String, Value>,
        catalog: &Catalog,
        keyed: Keyed,
        now: i64,
    ) -> Result<bool, ProductError> {
        self.validate(patch, catalog, keyed)?;
        let existing = self.by_uuid.get(uuid);
        let created = existing.is_none();
        let mut doc = existing.map(Product::doc).unwrap_or_else(|| {
            let mut m = Map::new();
            m.insert("enabled".into(), Value::Bool(true));
            m.insert("family".into(), Value::Null);
            m.insert("categories".into(), json!([]));
            m.insert("groups".into(), json!([]));
            m.insert("parent".into(), Value::Null);
            m.insert("values".into(), json!({}));
            m.insert("associations".into(), json!({}));
            m.insert("quantified_associations".into(), json!({}));
            m
        });
        let before = doc.clone();
        for (k, v) in patch {
            match k.as_str() {
                "uuid" | "identifier" | "created" | "updated" | "_links" | "metadata" => {}
                "values" => {
                    let values = doc
                        .entry("values")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .expect("values object");
                    for (attr, list) in v.as_object().into_iter().flatten() {
                        let current = values
                            .entry(attr.clone())
                            .or_insert_with(|| json!([]))
                            .as_array_mut()
                            .expect("value list");
                        for item in list.as_array().into_iter().flatten() {
                            let locale = item.get("locale").cloned().unwrap_or(Value::Null);
                            let scope = item.get("scope").cloned().unwrap_or(Value::Null);
                            let data = item.get("data").cloned().unwrap_or(Value::Null);
                            current.retain(|x| {
                                x.get("locale").unwrap_or(&Value::Null) != &locale
                                    || x.get("scope").unwrap_or(&Value::Null) != &scope
                            });
                            if !data.is_null() {
                                current
                                    .push(json!({"locale": locale, "scope": scope, "data": data}));
                            }
                        }
                        if current.is_empty() {
                            values.remove(attr);
                        }
                    }
                }
                "associations" | "quantified_associations" => {
                    let target = doc
                        .entry(k.clone())
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .expect("object");
                    for (t, links) in v.as_object().into_iter().flatten() {
                        let slot = target.entry(t.clone()).or_insert_with(|| json!({}));
                        if let (Some(slot), Some(links)) = (slot.as_object_mut(), links.as_object())
                        {
                            for (lk, lv) in links {
                                slot.insert(lk.clone(), lv.clone());
                            }
                        }
                    }
                }
                _ => {
                    doc.insert(k.clone(), v.clone());
                }
            }
        }
        // Identifier uniqueness.
        let new_identifier = self.identifier_of(&doc);
        if let Some(id) = &new_identifier {
            if self.by_identifier.get(id).is_some_and(|u| u != uuid) {
                return Err(ProductError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    message: "Validation failed.".into(),
                    errors: Some(json!([{
                        "property": "identifier",
                        "message": "The same identifier is already set on another product",
                    }])),
                    doc: None,
                });
            }
        }
        if !created && doc == before {
            return Ok(false);
        }
        // Re-index.
        if let Some(old) = self.by_uuid.get(uuid) {
            let old_doc = old.doc();
            if let Some(id) = &old.identifier {
                self.by_identifier.remove(id);
            }
            for key in self.asset_links_of(&old_doc) {
                if let Some(set) = self.asset_links.get_mut(&key) {
                    set.remove(uuid);
                    if set.is_empty() {
                        self.asset_links.remove(&key);
                    }
                }
            }
        }
        if let Some(id) = &new_identifier {
            self.by_identifier.insert(id.clone(), uuid.to_owned());
        }
        for key in self.asset_links_of(&doc) {
            self.asset_links
                .entry(key)
                .or_default()
                .insert(uuid.to_owned());
        }
        let created_at = self.by_uuid.get(uuid).map(|p| p.created).unwrap_or(now);
        self.by_uuid.insert(
            uuid.to_owned(),
            Product {
                doc: serde_json::to_string(&doc)
                    .unwrap_or_default()
                    .into_boxed_str(),
                identifier: new_identifier,
                created: created_at,
                updated: now,
            },
        );
        Ok(created)
    }

    fn delete(&mut self, uuid: &str) -> bool {
        let Some(p) = self.by_uuid.remove(uuid) else {
            return false;
        };
        if let Some(id) = &p.identifier {
            self.by_identifier.remove(id);
        }
        for key in self.asset_links_of(&p.doc()) {
            if let Some(set) = self.asset_links.get_mut(&key) {
                set.remove(uuid);
                if set.is_empty() {
                    self.asset_links.remove(&key);
                }
            }
        }
        true
    }

    /// The product as GET returns it (§6.3 example).
    fn render(&self, uuid: &str, p: &Product, base: &str, keyed: Keyed, view: &View) -> Value {
        let mut doc = p.doc();
        if let Some(Value::Object(values)) = doc.get_mut("values") {
            values.retain(|attr, _| view.attributes.as_ref().is_none_or(|a| a.contains(attr)));
            for list in values.values_mut() {
                if let Value::Array(items) = list {
                    items.retain(|v| {
                        let l_ok = v.get("locale").and_then(Value::as_str).is_none_or(|l| {
                            view.locales
                                .as_ref()
                                .is_none_or(|ls| ls.iter().any(|x| x == l))
                        });
                        let s_ok = v
                            .get("scope")
                            .and_then(Value::as_str)
                            .is_none_or(|s| view.scope.as_deref().is_none_or(|x| x == s));
                        l_ok && s_ok
                    });
                }
            }
            values.retain(|_, l| l.as_array().is_none_or(|a| !a.is_empty()));
        }
        let self_href = match keyed {
            Keyed::Uuid => format!("/api/rest/v1/products-uuid/{uuid}"),
            Keyed::Identifier => format!(
                "/api/rest/v1/products/{}",
                p.identifier.clone().unwrap_or_default()
            ),
        };
        let mut out = Map::new();
        out.insert(
            "_links".into(),
            json!({"self": link(base, &self_href, &[])}),
        );
        out.insert("uuid".into(), Value::String(uuid.to_owned()));
        if keyed == Keyed::Identifier {
            out.insert(
                "identifier".into(),
                p.identifier
                    .clone()
                    .map(Value::String)
                    .unwrap_or(Value::Null),
            );
        }
        out.append(&mut doc);
        out.insert("created".into(), Value::String(iso(p.created)));
        out.insert("updated".into(), Value::String(iso(p.updated)));
        Value::Object(out)
    }
}

/// `attributes` / `locales` / `scope` of a GET.
#[derive(Default)]
struct View {
    attributes: Option<Vec<String>>,
    locales: Option<Vec<String>>,
    scope: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Search filters (§6.3)

enum Cond {
    Identifier(String, Vec<String>),
    Uuid(String, Vec<String>),
    Updated(String, Vec<i64>),
    Assets(String, String, Vec<String>),
    Family(String, Vec<String>),
    Enabled(String, bool),
}

fn filter_error(message: String) -> ProductError {
    ProductError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
        errors: None,
        doc: Some(DOC_FILTER),
    }
}

fn unsupported(field: &str, op: &str) -> ProductError {
    filter_error(format!(
        "Filter on property \"{field}\" is not supported or does not support operator \"{op}\""
    ))
}

fn parse_product_date(field: &str, v: &Value) -> Result<i64, ProductError> {
    let raw = v.as_str().unwrap_or_default();
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp())
        .map_err(|_| {
            filter_error(format!(
                "Property \"{field}\" expects a string with the format \"yyyy-mm-dd H:i:s\" as data, \"{}\" given.",
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ))
        })
}

fn string_list(field: &str, op: &str, v: &Value) -> Result<Vec<String>, ProductError> {
    match v {
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()),
        Value::String(s) if !matches!(op, "IN" | "NOT IN") => Ok(vec![s.clone()]),
        other => Err(filter_error(format!(
            "Property \"{field}\" expects an array as data, \"{}\" given.",
            php_type_lower(other)
        ))),
    }
}

fn parse_search(store: &ProductStore, search: &Value, now: i64) -> Result<Vec<Cond>, ProductError> {
    let Some(obj) = search.as_object() else {
        return Ok(Vec::new()); // `[]`
    };
    let id_attr = store.identifier_attribute().to_owned();
    let mut out = Vec::new();
    for (field, conds) in obj {
        let structure = || {
            filter_error(format!(
                "Structure of filter \"{field}\" should respect this structure: {{\"{field}\":[{{\"operator\": \"my_operator\", \"value\": \"my_value\"}}]}}"
            ))
        };
        let Some(conds) = conds.as_array() else {
            return Err(structure());
        };
        for c in conds {
            let Some(op) = c.get("operator").and_then(Value::as_str) else {
                return Err(structure());
            };
            let value = c.get("value").cloned().unwrap_or(Value::Null);
            let needs_value = !matches!(op, "EMPTY" | "NOT EMPTY");
            if needs_value && c.get("value").is_none() {
                return Err(structure());
            }
            let f = field.as_str();
            let cond = if f == id_attr || f == "identifier" {
                match op {
                    "IN" | "NOT IN" | "=" | "!=" | "STARTS WITH" | "CONTAINS"
                    | "DOES NOT CONTAIN" => {
                        let list = string_list(f, op, &value)?;
                        if list.len() > IN_MAX {
                            return Err(filter_error(format!(
                                "Filter on property \"{f}\" accepts at most {IN_MAX} values, {} given.",
                                list.len()
                            )));
                        }
                        Cond::Identifier(op.into(), list)
                    }
                    "EMPTY" | "NOT EMPTY" => Cond::Identifier(op.into(), vec![]),
                    _ => return Err(unsupported(f, op)),
                }
            } else if f == "uuid" {
                match op {
                    "IN" | "NOT IN" | "=" | "!=" => {
                        Cond::Uuid(op.into(), string_list(f, op, &value)?)
                    }
                    _ => return Err(unsupported(f, op)),
                }
            } else if f == "updated" || f == "created" {
                let ts = match op {
                    "=" | "!=" | "<" | ">" => vec![parse_product_date(f, &value)?],
                    "BETWEEN" | "NOT BETWEEN" => match value.as_array() {
                        Some(pair) if pair.len() == 2 => vec![
                            parse_product_date(f, &pair[0])?,
                            parse_product_date(f, &pair[1])?,
                        ],
                        _ => {
                            return Err(filter_error(format!(
                                "Property \"{f}\" expects an array with 2 elements as data."
                            )))
                        }
                    },
                    "SINCE LAST N DAYS" => match value.as_i64() {
                        Some(n) if n >= 0 => vec![now - n * 86_400],
                        _ => {
                            return Err(filter_error(format!(
                                "Property \"{f}\" expects an integer as data, \"{}\" given.",
                                php_type_lower(&value)
                            )))
                        }
                    },
                    _ => return Err(unsupported(f, op)),
                };
                if f == "created" {
                    return Err(unsupported(f, op));
                }
                Cond::Updated(op.into(), ts)
            } else if f == "family" {
                match op {
                    "IN" | "NOT IN" => Cond::Family(op.into(), string_list(f, op, &value)?),
                    "EMPTY" | "NOT EMPTY" => Cond::Family(op.into(), vec![]),
                    _ => return Err(unsupported(f, op)),
                }
            } else if f == "enabled" {
                match (op, value.as_bool()) {
                    ("=" | "!=", Some(b)) => Cond::Enabled(op.into(), b),
                    _ => return Err(unsupported(f, op)),
                }
            } else if store.attribute(f).is_some_and(|a| a.is_asset_collection()) {
                match op {
                    "IN" | "NOT IN" => {
                        Cond::Assets(f.into(), op.into(), string_list(f, op, &value)?)
                    }
                    "EMPTY" | "NOT EMPTY" => Cond::Assets(f.into(), op.into(), vec![]),
                    _ => return Err(unsupported(f, op)),
                }
            } else {
                return Err(unsupported(f, op));
            };
            out.push(cond);
        }
    }
    Ok(out)
}

fn cond_holds(store: &ProductStore, c: &Cond, uuid: &str, p: &Product) -> bool {
    match c {
        Cond::Identifier(op, list) => {
            let id = p.identifier.as_deref();
            match op.as_str() {
                "IN" | "=" => id.is_some_and(|i| list.iter().any(|x| x == i)),
                "NOT IN" | "!=" => id.is_none_or(|i| !list.iter().any(|x| x == i)),
                "STARTS WITH" => id.is_some_and(|i| list.iter().any(|x| i.starts_with(x.as_str()))),
                "CONTAINS" => id.is_some_and(|i| list.iter().any(|x| i.contains(x.as_str()))),
                "DOES NOT CONTAIN" => {
                    id.is_none_or(|i| !list.iter().any(|x| i.contains(x.as_str())))
                }
                "EMPTY" => id.is_none(),
                _ => id.is_some(),
            }
        }
        Cond::Uuid(op, list) => {
            let inside = list.iter().any(|x| x.eq_ignore_ascii_case(uuid));
            matches!(op.as_str(), "IN" | "=") == inside
        }
        Cond::Updated(op, ts) => {
            let t = p.updated;
            match op.as_str() {
                "=" => t == ts[0],
                "!=" => t != ts[0],
                "<" => t < ts[0],
                ">" => t > ts[0],
                "BETWEEN" => ts[0] <= t && t <= ts[1],
                "NOT BETWEEN" => t < ts[0] || t > ts[1],
                _ => t >= ts[0],
            }
        }
        Cond::Family(op, list) => {
            let doc = p.doc();
            let fam = doc.get("family").and_then(Value::as_str);
            match op.as_str() {
                "IN" => fam.is_some_and(|f| list.iter().any(|x| x == f)),
                "NOT IN" => fam.is_none_or(|f| !list.iter().any(|x| x == f)),
                "EMPTY" => fam.is_none(),
                _ => fam.is_some(),
            }
        }
        Cond::Enabled(op, b) => {
            let enabled = p
                .doc()
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            (op == "=") == (enabled == *b)
        }
        Cond::Assets(attr, op, list) => {
            let linked: Vec<String> = store
                .asset_links_of(&p.doc())
                .into_iter()
                .filter(|(a, _)| a == attr)
                .map(|(_, c)| c)
                .collect();
            match op.as_str() {
                "IN" => linked.iter().any(|c| list.contains(c)),
                "NOT IN" => !linked.iter().any(|c| list.contains(c)),
                "EMPTY" => linked.is_empty(),
                _ => !linked.is_empty(),
            }
        }
    }
}

/// Candidate uuids (sorted) from an index, when a condition allows it.
fn candidates(store: &ProductStore, conds: &[Cond]) -> Option<Vec<String>> {
    for c in conds {
        match c {
            Cond::Uuid(op, list) if op == "IN" || op == "=" => {
                let mut v: Vec<String> = list.iter().map(|u| u.to_ascii_lowercase()).collect();
                v.sort();
                v.dedup();
                return Some(v);
            }
            Cond::Identifier(op, list) if op == "IN" || op == "=" => {
                let mut v: Vec<String> = list
                    .iter()
                    .filter_map(|i| store.by_identifier.get(i).cloned())
                    .collect();
                v.sort();
                v.dedup();
                return Some(v);
            }
            Cond::Assets(attr, op, list) if op == "IN" => {
                let mut set = BTreeSet::new();
                for code in list {
                    if let Some(u) = store.asset_links.get(&(attr.clone(), code.clone())) {
                        set.extend(u.iter().cloned());
                    }
                }
                return Some(set.into_iter().collect());
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn pagination_error(message: impl Into<String>) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

async fn list(s: Arc<Shared>, headers: HeaderMap, q: Option<String>, keyed: Keyed) -> Response {
    let pairs = query_pairs(q.as_deref());
    let base = base_url(&headers);
    // CE `ParameterValidator`: limit, page, with_count, pagination type.
    let limit_raw = param(&pairs, "limit");
    let limit = match limit_raw {
        None => 10,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 && l.bytes().all(|b| b.is_ascii_digit()) => {
                if n > 100 {
                    return pagination_error("You cannot request more than 100 items.");
                }
                n
            }
            _ => return pagination_error(format!("\"{l}\" is not a valid limit number.")),
        },
    };
    let page_raw = param(&pairs, "page");
    let page = match page_raw {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return pagination_error(format!("\"{p}\" is not a valid page number.")),
        },
    };
    let with_count = match param(&pairs, "with_count") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return pagination_error(format!(
                "Parameter \"with_count\" has to be a boolean. Only \"true\" or \"false\" allowed, \"{other}\" given."
            ))
        }
    };
    let search_after_mode = match param(&pairs, "pagination_type") {
        None | Some("page") => false,
        Some("search_after") => true,
        Some(_) => return pagination_error("Pagination type does not exist."),
    };
    if !search_after_mode && (page - 1).saturating_mul(limit) >= OFFSET_MAX {
        return pagination_error(
            "You have reached the maximum number of pages you can retrieve with the \"page\" pagination type. Please use the search after pagination type instead",
        );
    }
    let search_raw = param(&pairs, "search");
    let search = match search_raw {
        None => None,
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => Some(v),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Search query parameter should be valid JSON.",
                )
            }
        },
    };
    let mut view = View::default();
    {
        let catalog = s.catalog.read();
        if let Some(scope) = param(&pairs, "scope") {
            if catalog.channel_idx(scope).is_none() {
                return pagination_error(format!("Scope \"{scope}\" does not exist."));
            }
            view.scope = Some(scope.to_owned());
        }
        if let Some(ls) = param(&pairs, "locales").filter(|l| !l.is_empty()) {
            let list: Vec<String> = ls.split(',').map(str::to_owned).collect();
            if let Some(bad) = list.iter().find(|l| catalog.locale_idx(l).is_none()) {
                return pagination_error(format!(
                    "Locale \"{bad}\" does not exist or is not activated."
                ));
            }
            view.locales = Some(list);
        }
    }
    if let Some(attrs) = param(&pairs, "attributes").filter(|a| !a.is_empty()) {
        view.attributes = Some(attrs.split(',').map(str::to_owned).collect());
    }
    let after = match (search_after_mode, param(&pairs, "search_after")) {
        (true, Some(raw)) => match cursor_decode(raw) {
            Some(u) => Some(u),
            None => {
                return pagination_error(format!("\"{raw}\" is not a valid search_after value."))
            }
        },
        _ => None,
    };
    let store = s.products.read();
    let conds = match search.as_ref().map(|v| parse_search(&store, v, s.now())) {
        None => Vec::new(),
        Some(Ok(c)) => c,
        Some(Err(e)) => return e.response(),
    };
    let keep = |uuid: &str, p: &Product| {
        (keyed == Keyed::Uuid || p.identifier.is_some())
            && conds.iter().all(|c| cond_holds(&store, c, uuid, p))
            // A channel only shows products classified in its tree: uncategorised are hidden.
            && (view.scope.is_none()
                || p.doc()
                    .get("categories")
                    .and_then(Value::as_array)
                    .is_some_and(|c| !c.is_empty()))
    };
    let mut rows: Vec<(&String, &Product)> = Vec::new();
    let mut count = 0usize;
    let offset = if search_after_mode {
        0
    } else {
        (page - 1) * limit
    };
    match candidates(&store, &conds) {
        Some(list) => {
            for u in &list {
                if let Some((k, p)) = store.by_uuid.get_key_value(u.as_str()) {
                    if after.as_deref().is_some_and(|a| k.as_str() <= a) || !keep(k, p) {
                        continue;
                    }
                    count += 1;
                    if count > offset && rows.len() < limit {
                        rows.push((k, p));
                    }
                }
            }
        }
        None => {
            let range = match &after {
                Some(a) => store
                    .by_uuid
                    .range::<str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                None => store.by_uuid.range::<str, _>(..),
            };
            for (k, p) in range {
                if !keep(k, p) {
                    continue;
                }
                count += 1;
                if count > offset && rows.len() < limit {
                    rows.push((k, p));
                }
                if rows.len() >= limit && !with_count {
                    break;
                }
            }
        }
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|(u, p)| store.render(u, p, &base, keyed, &view))
        .collect();
    // Links echo the query (without the paging position).
    let mut echo: Vec<(&str, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "page" && k != "search_after" && k != "limit")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    echo.push(("limit", limit.to_string()));
    let path = keyed.list_path();
    let mk = |extra: &[(&str, String)]| {
        let mut all: Vec<(&str, &str)> = echo.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (k, v) in extra {
            all.push((k, v.as_str()));
        }
        link(&base, path, &all)
    };
    let mut links = Map::new();
    let mut body = Map::new();
    if search_after_mode {
        let self_extra: Vec<(&str, String)> = param(&pairs, "search_after")
            .map(|a| vec![("search_after", a.to_owned())])
            .unwrap_or_default();
        links.insert("self".into(), mk(&self_extra));
        links.insert("first".into(), mk(&[]));
        if rows.len() == limit {
            if let Some((last, _)) = rows.last() {
                links.insert("next".into(), mk(&[("search_after", cursor_encode(last))]));
            }
        }
    } else {
        links.insert("self".into(), mk(&[("page", page.to_string())]));
        links.insert("first".into(), mk(&[("page", "1".into())]));
        if page >= 2 {
            links.insert("previous".into(), mk(&[("page", (page - 1).to_string())]));
        }
        if rows.len() >= limit {
            links.insert("next".into(), mk(&[("page", (page + 1).to_string())]));
        }
        body.insert("current_page".into(), page.into());
        if with_count {
            body.insert("items_count".into(), count.into());
        }
    }
    body.insert("_links".into(), Value::Object(links));
    body.insert("_embedded".into(), json!({"items": items}));
    json(StatusCode::OK, &Value::Object(body))
}

pub(crate) async fn list_uuid(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    list(s, headers, q, Keyed::Uuid).await
}

pub(crate) async fn list_identifier(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    list(s, headers, q, Keyed::Identifier).await
}

fn product_not_found(key: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("Product \"{key}\" does not exist or you do not have permission to access it."),
    )
}

fn no_route(method: &str, path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("No route found for \"{method} {path}\""),
    )
}

pub(crate) async fn get_uuid(
    State(s): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_uuid(&uuid) {
        return no_route("GET", &format!("/api/rest/v1/products-uuid/{uuid}"));
    }
    let uuid = uuid.to_ascii_lowercase();
    let store = s.products.read();
    match store.by_uuid.get(&uuid) {
        Some(p) => json(
            StatusCode::OK,
            &store.render(&uuid, p, &base_url(&headers), Keyed::Uuid, &View::default()),
        ),
        None => product_not_found(&uuid),
    }
}

pub(crate) async fn get_identifier(
    State(s): State<Arc<Shared>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let store = s.products.read();
    let Some(uuid) = store.by_identifier.get(&code) else {
        return product_not_found(&code);
    };
    let p = &store.by_uuid[uuid];
    json(
        StatusCode::OK,
        &store.render(
            uuid,
            p,
            &base_url(&headers),
            Keyed::Identifier,
            &View::default(),
        ),
    )
}

/// One product write keyed by uuid or identifier: returns (uuid, created).
fn write_one(
    s: &Shared,
    keyed: Keyed,
    key: &str,
    body: &Value,
) -> Result<(String, bool), ProductError> {
    let Some(obj) = body.as_object() else {
        return Err(ProductError::documented(
            "Invalid json message received".into(),
            keyed.doc(),
        ));
    };
    let catalog = s.catalog.read();
    let mut store = s.products.write();
    let now = s.now();
    match keyed {
        Keyed::Uuid => {
            if let Some(b) = obj.get("uuid") {
                if b.as_str().map(str::to_ascii_lowercase).as_deref() != Some(key) {
                    let given = b
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| b.to_string());
                    return Err(ProductError::plain(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "The uuid \"{given}\" provided in the request body must match the uuid \"{key}\" provided in the url."
                        ),
                    ));
                }
            }
            let created = store.upsert(key, obj, &catalog, keyed, now)?;
            Ok((key.to_owned(), created))
        }
        Keyed::Identifier => {
            if let Some(b) = obj.get("identifier") {
                if b.as_str() != Some(key) {
                    let given = b
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| b.to_string());
                    return Err(ProductError::plain(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "The identifier \"{given}\" provided in the request body must match the identifier \"{key}\" provided in the url."
                        ),
                    ));
                }
            }
            let uuid = store
                .by_identifier
                .get(key)
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            // The identifier endpoint writes the identifier into the identifier attribute.
            let mut obj = obj.clone();
            let id_attr = store.identifier_attribute().to_owned();
            let values = obj.entry("values").or_insert_with(|| json!({}));
            if let Some(values) = values.as_object_mut() {
                values.insert(
                    id_attr,
                    json!([{"locale": null, "scope": null, "data": key}]),
                );
            }
            let created = store.upsert(&uuid, &obj, &catalog, keyed, now)?;
            Ok((uuid, created))
        }
    }
}

fn count_write(s: &Shared) {
    bump(&s.counters.product_writes);
}

async fn patch_single(
    s: Arc<Shared>,
    keyed: Keyed,
    key: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    let key = match keyed {
        Keyed::Uuid => {
            if !valid_uuid(&key) {
                return no_route("PATCH", &format!("/api/rest/v1/products-uuid/{key}"));
            }
            key.to_ascii_lowercase()
        }
        Keyed::Identifier => key,
    };
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    match write_one(&s, keyed, &key, &body) {
        Ok((uuid, created)) => {
            count_write(&s);
            let path = match keyed {
                Keyed::Uuid => format!("/api/rest/v1/products-uuid/{uuid}"),
                Keyed::Identifier => format!("/api/rest/v1/products/{key}"),
            };
            empty(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::NO_CONTENT
                },
                Some(format!("{}{}", base_url(&headers), path)),
            )
        }
        Err(e) => e.response(),
    }
}

pub(crate) async fn patch_uuid(
    State(s): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch_single(s, Keyed::Uuid, uuid, headers, body).await
}

pub(crate) async fn patch_identifier(
    State(s): State<Arc<Shared>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch_single(s, Keyed::Identifier, code, headers, body).await
}

pub(crate) async fn delete_uuid(
    State(s): State<Arc<Shared>>,
    Path(uuid): Path<String>,
) -> Response {
    if !valid_uuid(&uuid) {
        return no_route("DELETE", &format!("/api/rest/v1/products-uuid/{uuid}"));
    }
    let uuid = uuid.to_ascii_lowercase();
    if s.products.write().delete(&uuid) {
        empty(StatusCode::NO_CONTENT, None)
    } else {
        product_not_found(&uuid)
    }
}

pub(crate) async fn delete_identifier(
    State(s): State<Arc<Shared>>,
    Path(code): Path<String>,
) -> Response {
    let mut store = s.products.write();
    let Some(uuid) = store.by_identifier.get(&code).cloned() else {
        return product_not_found(&code);
    };
    store.delete(&uuid);
    empty(StatusCode::NO_CONTENT, None)
}

/// NDJSON batch PATCH (§6.4).
async fn batch(s: Arc<Shared>, keyed: Keyed, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_content_type(&headers, COLLECTION) {
        return r;
    }
    let text = String::from_utf8_lossy(&body);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.len() > BATCH_MAX {
        return with_items(
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Too many resources to process, {BATCH_MAX} is the maximum allowed."),
            ),
            lines.len(),
        );
    }
    bump(&s.counters.product_batch_requests);
    let key_name = match keyed {
        Keyed::Uuid => "uuid",
        Keyed::Identifier => "identifier",
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        // Keys in the server's order: line, uuid|identifier, status_code, message, errors, _links.
        let mut result: Vec<(&str, Value)> = vec![("line", (i + 1).into())];
        if line.chars().count() > LINE_MAX {
            result.push(("status_code", 413.into()));
            result.push(("message", "Line is too long.".into()));
            out.push(ordered(&result));
            continue;
        }
        let Some(item) = parse_json(line.as_bytes()) else {
            result.push(("status_code", 400.into()));
            result.push(("message", "Invalid json message received".into()));
            out.push(ordered(&result));
            continue;
        };
        let key = item
            .get(key_name)
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let Some(key) = key else {
            result.push(("status_code", 422.into()));
            let msg = match keyed {
                Keyed::Uuid => "Uuid is missing.",
                Keyed::Identifier => "Identifier is missing.",
            };
            result.push(("message", msg.into()));
            out.push(ordered(&result));
            continue;
        };
        result.push((key_name, Value::String(key.clone())));
        let outcome = if keyed == Keyed::Uuid && !valid_uuid(&key) {
            Err(ProductError::plain(
                StatusCode::NOT_FOUND,
                format!("No route found for \"PATCH /api/rest/v1/products-uuid/{key}\""),
            ))
        } else {
            let key = if keyed == Keyed::Uuid {
                key.to_ascii_lowercase()
            } else {
                key
            };
            write_one(&s, keyed, &key, &item)
        };
        match outcome {
            Ok((_, created)) => {
                count_write(&s);
                result.push(("status_code", (if created { 201 } else { 204 }).into()));
            }
            Err(e) => {
                result.push(("status_code", e.status.as_u16().into()));
                result.push(("message", e.message.clone().into()));
                if let Some(errors) = &e.errors {
                    result.push(("errors", errors.clone()));
                }
                if let Some(d) = e.doc {
                    result.push(("_links", json!({"documentation": {"href": d}})));
                }
            }
        }
        out.push(ordered(&result));
    }
    let mut r = Response::new(Body::from(out.join("\n")));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(COLLECTION));
    with_items(r, lines.len())
}

pub(crate) async fn batch_uuid(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    batch(s, Keyed::Uuid, headers, body).await
}

pub(crate) async fn batch_identifier(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    batch(s, Keyed::Identifier, headers, body).await
}

// ---------------------------------------------------------------------------------------------
// Product attributes (read)

pub(crate) async fn list_attributes(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = query_pairs(q.as_deref());
    let base = base_url(&headers);
    let limit = match param(&pairs, "limit") {
        None => 10,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => {
                if n > 100 {
                    return pagination_error("You cannot request more than 100 items.");
                }
                n
            }
            _ => return pagination_error(format!("\"{l}\" is not a valid limit number.")),
        },
    };
    let page = match param(&pairs, "page") {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return pagination_error(format!("\"{p}\" is not a valid page number.")),
        },
    };
    let mut types: Option<Vec<String>> = None;
    let mut codes: Option<Vec<String>> = None;
    if let Some(raw) = param(&pairs, "search") {
        let Ok(Value::Object(search)) = serde_json::from_str::<Value>(raw) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Search query parameter should be valid JSON.",
            );
        };
        for (field, conds) in &search {
            for c in conds.as_array().into_iter().flatten() {
                let op = c.get("operator").and_then(Value::as_str).unwrap_or("");
                let list = match (op, c.get("value").and_then(Value::as_array)) {
                    ("IN", Some(l)) => l
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect::<Vec<_>>(),
                    _ => return unsupported(field, op).response(),
                };
                match field.as_str() {
                    "type" => types = Some(list),
                    "code" => codes = Some(list),
                    _ => return unsupported(field, op).response(),
                }
            }
        }
    }
    let store = s.products.read();
    let matching: Vec<&ProductAttribute> = store
        .attributes
        .iter()
        .filter(|a| types.as_ref().is_none_or(|t| t.contains(&a.kind)))
        .filter(|a| codes.as_ref().is_none_or(|c| c.contains(&a.code)))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|a| a.to_json(&base))
        .collect();
    let path = "/api/rest/v1/attributes";
    let mut echo: Vec<(&str, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "page" && k != "limit")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    echo.push(("limit", limit.to_string()));
    let mk = |p: usize| {
        let mut all: Vec<(&str, &str)> = echo.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let ps = p.to_string();
        all.push(("page", &ps));
        link(&base, path, &all)
    };
    let mut links = Map::new();
    links.insert("self".into(), mk(page));
    links.insert("first".into(), mk(1));
    if page >= 2 {
        links.insert("previous".into(), mk(page - 1));
    }
    if items.len() >= limit {
        links.insert("next".into(), mk(page + 1));
    }
    json(
        StatusCode::OK,
        &json!({"_links": links, "current_page": page, "_embedded": {"items": items}}),
    )
}

pub(crate) async fn get_attribute(
    State(s): State<Arc<Shared>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let store = s.products.read();
    match store.attribute(&code) {
        Some(a) => {
            let mut v = a.to_json(&base_url(&headers));
            if let Value::Object(m) = &mut v {
                m.remove("_links");
            }
            json(StatusCode::OK, &v)
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("Attribute \"{code}\" does not exist."),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Seeding / inspection (used by `AkeneoEmulator`)

impl ProductStore {
    /// Seeds a product (products-uuid JSON; `uuid` generated when absent, identifier from the
    /// identifier attribute value or a top-level `identifier`). Returns the uuid.
    pub(crate) fn seed(
        &mut self,
        mut product: Map<String, Value>,
        catalog: &Catalog,
        now: i64,
    ) -> Result<String, String> {
        let uuid = product
            .get("uuid")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !valid_uuid(&uuid) {
            return Err(format!("\"{uuid}\" is not a valid uuid"));
        }
        if let Some(id) = product
            .remove("identifier")
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            let id_attr = self.identifier_attribute().to_owned();
            let values = product.entry("values").or_insert_with(|| json!({}));
            if let Some(values) = values.as_object_mut() {
                values
                    .entry(id_attr)
                    .or_insert_with(|| json!([{"locale": null, "scope": null, "data": id}]));
            }
        }
        self.upsert(&uuid, &product, catalog, Keyed::Uuid, now)
            .map_err(|e| e.message)?;
        Ok(uuid)
    }

    pub(crate) fn all(&self, base: &str) -> Vec<Value> {
        self.by_uuid
            .iter()
            .map(|(u, p)| self.render(u, p, base, Keyed::Uuid, &View::default()))
            .collect()
    }

    pub(crate) fn one(&self, uuid: &str, base: &str) -> Option<Value> {
        let uuid = uuid.to_ascii_lowercase();
        let p = self.by_uuid.get(&uuid)?;
        Some(self.render(&uuid, p, base, Keyed::Uuid, &View::default()))
    }

    pub(crate) fn uuid_of(&self, identifier: &str) -> Option<String> {
        self.by_identifier.get(identifier).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_uuid.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Product link rules (used by `linking`)

impl ProductStore {
    /// A product attribute by code.
    pub(crate) fn attribute_of(&self, code: &str) -> Option<&ProductAttribute> {
        self.attribute(code)
    }

    /// The code of the identifier attribute (`sku` unless another was added).
    pub(crate) fn identifier_code(&self) -> &str {
        self.identifier_attribute()
    }

    /// The uuid of the product with this identifier.
    pub(crate) fn uuid_by_identifier(&self, identifier: &str) -> Option<&str> {
        self.by_identifier.get(identifier).map(String::as_str)
    }

    /// Every product as (uuid, identifier, document without uuid/created/updated), uuid order.
    pub(crate) fn documents(&self) -> Vec<(String, Option<String>, Map<String, Value>)> {
        self.by_uuid
            .iter()
            .map(|(u, p)| (u.clone(), p.identifier.clone(), p.doc()))
            .collect()
    }

    /// One product's (identifier, document).
    pub(crate) fn document(&self, uuid: &str) -> Option<(Option<String>, Map<String, Value>)> {
        self.by_uuid
            .get(uuid)
            .map(|p| (p.identifier.clone(), p.doc()))
    }

    /// Applies `patch` to an existing product with the API's update rules (a product link
    /// rule's assignment). Returns whether the product changed.
    pub(crate) fn link_update(
        &mut self,
        uuid: &str,
        patch: &Map<String, Value>,
        catalog: &Catalog,
        now: i64,
    ) -> Result<bool, String> {
        let before = self.by_uuid.get(uuid).map(|p| p.doc.clone());
        self.upsert(uuid, patch, catalog, Keyed::Uuid, now)
            .map_err(|e| e.message)?;
        let after = self.by_uuid.get(uuid).map(|p| p.doc.clone());
        Ok(before != after)
    }
}
