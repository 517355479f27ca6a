//! Asset families, their attributes and attribute options (§5.1, §5.3, §5.6).

use std::ops::Bound;
use std::sync::Arc;

use assetbridge_core::AttributeType;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parking_lot::RwLock;
use serde_json::{json, Map, Value};

use super::http::{
    base_url, check_code_response, cursor_decode, cursor_encode, empty, error, error_with,
    family_not_found, invalid_json, json, link, param, parse_json, query_pairs,
    require_content_type, JSON,
};
use super::linking;
use super::schema::{prop, Errors, Ty};
use super::state::{Attribute, Family, Shared};

/// Asset families per list page (CE `parameters.yml`, §5.2).
pub(crate) const FAMILIES_PER_PAGE: usize = 200;
/// The family PATCH's business-rule message.
const BUSINESS_RULES: &str =
    "The asset family has data that does not comply with the business rules.";

/// Attributes per family and options per attribute (§5.2).
pub(crate) const MAX_ATTRIBUTES: usize = 100;
pub(crate) const MAX_OPTIONS: usize = 100;
/// Asset families per PIM and transformations per family (§5.2).
pub(crate) const MAX_FAMILIES: usize = 100;
pub(crate) const MAX_TRANSFORMATIONS: usize = 10;

fn family_path(code: &str) -> String {
    format!("/api/rest/v1/asset-families/{code}")
}

fn with_self_link(mut v: Value, base: &str, path: &str) -> Value {
    if let Value::Object(m) = &mut v {
        let mut out = Map::new();
        out.insert("_links".into(), json!({"self": link(base, path, &[])}));
        out.append(m);
        return Value::Object(out);
    }
    v
}

/// `GET /api/rest/v1/asset-families`: 200 per page, `search_after` (§4.2, §5.1).
pub(crate) async fn list_families(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = query_pairs(q.as_deref());
    let base = base_url(&headers);
    let after_raw = param(&pairs, "search_after");
    let after = match after_raw {
        None => None,
        Some(raw) => match cursor_decode(raw) {
            Some(c) => Some(c),
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "Asset family identifier may contain only letters, numbers and underscores. \"{raw}\" given"
                    ),
                )
            }
        },
    };
    let families: Vec<Arc<RwLock<Family>>> = {
        let map = s.families.read();
        let range = match &after {
            Some(a) => map.range::<str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
            None => map.range::<str, _>(..),
        };
        range
            .take(FAMILIES_PER_PAGE)
            .map(|(_, f)| f.clone())
            .collect()
    };
    let mut items = Vec::with_capacity(families.len());
    let mut last = None;
    for f in &families {
        let f = f.read();
        items.push(with_self_link(f.to_json(), &base, &family_path(&f.code)));
        last = Some(f.code.clone());
    }
    let path = "/api/rest/v1/asset-families";
    let mut links = Map::new();
    let self_params: Vec<(&str, &str)> =
        after_raw.map(|a| ("search_after", a)).into_iter().collect();
    links.insert("self".into(), link(&base, path, &self_params));
    links.insert("first".into(), link(&base, path, &[]));
    if items.len() == FAMILIES_PER_PAGE {
        if let Some(l) = last {
            let c = cursor_encode(&l);
            links.insert("next".into(), link(&base, path, &[("search_after", &c)]));
        }
    }
    json(
        StatusCode::OK,
        &json!({"_links": links, "_embedded": {"items": items}}),
    )
}

/// `GET /api/rest/v1/asset-families/{code}`.
pub(crate) async fn get_family(State(s): State<Arc<Shared>>, Path(code): Path<String>) -> Response {
    if let Err(r) = check_code_response("Asset family identifier", &code) {
        return r;
    }
    match s.family(&code) {
        Some(f) => json(StatusCode::OK, &f.read().to_json()),
        None => family_not_found(&code),
    }
}

fn validate_family_format(body: &Value) -> Errors {
    let mut e = Errors::default();
    let Some(obj) = body.as_object() else {
        e.check_type("", body, &[Ty::Object]);
        return e;
    };
    e.check_required("", obj, &["code"]);
    for (k, v) in obj {
        match k.as_str() {
            "code" => {
                e.check_type("code", v, &[Ty::String]);
            }
            "labels" => {
                let is_object = e.check_type("labels", v, &[Ty::Object]);
                if is_object {
                    for (l, t) in v.as_object().into_iter().flatten() {
                        e.check_type(&prop("labels", l), t, &[Ty::String, Ty::Null]);
                    }
                }
            }
            "attribute_as_main_media" => {
                e.check_type(k, v, &[Ty::String, Ty::Null]);
            }
            "naming_convention" | "_links" => {
                e.check_type(k, v, &[Ty::Object]);
            }
            "product_link_rules" | "transformations" => {
                e.check_type(k, v, &[Ty::Array]);
            }
            "sharing_enabled" => {
                e.check_type(k, v, &[Ty::Boolean]);
            }
            _ => {}
        }
    }
    e.check_additional(
        "",
        obj,
        &[
            "code",
            "labels",
            "attribute_as_main_media",
            "naming_convention",
            "product_link_rules",
            "transformations",
            "sharing_enabled",
            "_links",
        ],
    );
    e
}

fn merge_labels(labels: &mut Map<String, Value>, patch: Option<&Value>) {
    if let Some(Value::Object(m)) = patch {
        for (k, v) in m {
            match v {
                Value::Null => {
                    labels.remove(k);
                }
                v => {
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// `PATCH /api/rest/v1/asset-families/{code}`: upsert, 201/204 + `Location` (§5.1).
/// A new family gets the two attributes Akeneo creates with every family: `label` (text, one
/// value per locale) and `media` (media_file, the main media unless the body names another).
pub(crate) async fn patch_family(
    State(s): State<Arc<Shared>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    if let Err(r) = check_code_response("Asset family identifier", &code) {
        return r;
    }
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    let errors = validate_family_format(&body);
    if !errors.is_empty() {
        return error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The asset family has an invalid format.",
            errors.to_json(),
        );
    }
    if body.get("code").and_then(Value::as_str) != Some(code.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The code of the asset family provided in the URI must be the same as the one provided in the request body.",
        );
    }
    let location = format!("{}{}", base_url(&headers), family_path(&code));
    // Validates and applies the body's properties to a family (nothing is applied when a
    // check fails).
    let apply = |f: &mut Family| -> Result<(), Response> {
        if let Some(main) = body.get("attribute_as_main_media") {
            if let Some(m) = main.as_str() {
                let ok = f.attribute(m).is_some_and(|a| {
                    matches!(a.kind, AttributeType::MediaFile | AttributeType::MediaLink)
                });
                if !ok {
                    return Err(error_with(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        BUSINESS_RULES,
                        json!([{"property": "attribute_as_main_media", "message": format!("The attribute \"{m}\" is not a media attribute of this asset family.")}]),
                    ));
                }
            }
        }
        let main_after = match body.get("attribute_as_main_media") {
            Some(v) => v.as_str().map(str::to_owned),
            None => f.attribute_as_main_media.clone(),
        };
        {
            // §5.4 / §5.5. Lock order: family (held), catalog, products.
            let catalog = s.catalog.read();
            let products = s.products.read();
            let mut e = Errors::default();
            if let Some(nc) = body.get("naming_convention") {
                linking::check_naming_convention(nc, f, main_after.as_deref(), &catalog, &mut e);
            }
            if let Some(rules) = body.get("product_link_rules") {
                linking::check_link_rules(rules, f, &catalog, &products, &mut e);
            }
            // CE `ThereShouldBeLessTransformationThanLimit` (stored, not executed).
            if body
                .get("transformations")
                .and_then(Value::as_array)
                .is_some_and(|t| t.len() > MAX_TRANSFORMATIONS)
            {
                e.push(
                    "transformations",
                    format!("You have reached the limit of {MAX_TRANSFORMATIONS} transformations"),
                );
            }
            if !e.is_empty() {
                return Err(error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    BUSINESS_RULES,
                    e.to_json(),
                ));
            }
        }
        f.attribute_as_main_media = main_after;
        merge_labels(&mut f.labels, body.get("labels"));
        if let Some(v) = body.get("naming_convention") {
            f.naming_convention = v.clone();
        }
        if let Some(v) = body.get("product_link_rules") {
            f.product_link_rules = v.clone();
        }
        if let Some(v) = body.get("transformations") {
            f.transformations = v.clone();
        }
        if let Some(b) = body.get("sharing_enabled").and_then(Value::as_bool) {
            f.sharing_enabled = Some(b);
        }
        Ok(())
    };
    let update = |existing: Arc<RwLock<Family>>| -> Response {
        let mut g = existing.write();
        match apply(&mut g) {
            Ok(()) => empty(StatusCode::NO_CONTENT, Some(location.clone())),
            Err(r) => r,
        }
    };
    if let Some(existing) = s.family(&code) {
        return update(existing);
    }
    let mut f = Family::new(&code);
    let mut label = Attribute::new("label", AttributeType::Text);
    label.value_per_locale = true;
    f.upsert_attribute(label);
    let mut media = Attribute::new("media", AttributeType::MediaFile);
    media.media_type = Some("image".into());
    f.upsert_attribute(media);
    f.attribute_as_main_media = Some("media".into());
    if let Err(r) = apply(&mut f) {
        return r;
    }
    let mut map = s.families.write();
    if let Some(existing) = map.get(&code).cloned() {
        // Created concurrently: this request is an update.
        drop(map);
        return update(existing);
    }
    // CE `ThereShouldBeLessAssetFamilyThanLimit` (violation at `labels`), checked under the
    // lock that inserts, so that concurrent creations cannot pass the limit together.
    if map.len() >= MAX_FAMILIES {
        return error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            BUSINESS_RULES,
            json!([{"property": "labels", "message": format!("You cannot create the asset family \"{code}\" because you have reached the limit of {MAX_FAMILIES} asset families")}]),
        );
    }
    map.insert(code.clone(), Arc::new(RwLock::new(f)));
    empty(StatusCode::CREATED, Some(location.clone()))
}

// ---------------------------------------------------------------------------------------------
// Attributes

fn attribute_path(family: &str, code: &str) -> String {
    format!("/api/rest/v1/asset-families/{family}/attributes/{code}")
}

fn attribute_not_found(attribute: &str, family: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("Attribute \"{attribute}\" does not exist for asset family \"{family}\"."),
    )
}

/// `GET .../attributes`: a plain JSON array (§5.6), each attribute with `_links.self`.
pub(crate) async fn list_attributes(
    State(s): State<Arc<Shared>>,
    Path(family): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_code_response("Asset family identifier", &family) {
        return r;
    }
    let Some(f) = s.family(&family) else {
        return family_not_found(&family);
    };
    let base = base_url(&headers);
    let f = f.read();
    let items: Vec<Value> = f
        .attributes
        .iter()
        .map(|a| with_self_link(a.to_json(), &base, &attribute_path(&family, &a.code)))
        .collect();
    json(StatusCode::OK, &Value::Array(items))
}

/// `GET .../attributes/{code}`.
pub(crate) async fn get_attribute(
    State(s): State<Arc<Shared>>,
    Path((family, code)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_code_response("Asset family identifier", &family) {
        return r;
    }
    let Some(f) = s.family(&family) else {
        return family_not_found(&family);
    };
    if let Err(r) = check_code_response("Attribute code", &code) {
        return r;
    }
    let f = f.read();
    match f.attribute(&code) {
        Some(a) => json(StatusCode::OK, &a.to_json()),
        None => attribute_not_found(&code, &family),
    }
}

const ATTRIBUTE_TYPES: [&str; 9] = [
    "text",
    "media_link",
    "number",
    "media_file",
    "single_option",
    "multiple_options",
    "boolean",
    "date",
    "record",
];

/// Format checks of an attribute body for `kind` (§5.6 fields).
fn validate_attribute_format(obj: &Map<String, Value>, kind: &str, creating: bool) -> Errors {
    let mut e = Errors::default();
    if creating {
        e.check_required(
            "",
            obj,
            &["code", "type", "value_per_locale", "value_per_channel"],
        );
    }
    let mut allowed: Vec<&str> = vec![
        "code",
        "labels",
        "type",
        "value_per_locale",
        "value_per_channel",
        "is_required_for_completeness",
        "is_read_only",
        "_links",
    ];
    let specific: &[&str] = match kind {
        "text" => &[
            "max_characters",
            "is_textarea",
            "is_rich_text_editor",
            "validation_rule",
            "validation_regexp",
        ],
        "media_file" => &["allowed_extensions", "max_file_size", "media_type"],
        "media_link" => &["prefix", "suffix", "media_type"],
        "number" => &["decimals_allowed", "min_value", "max_value"],
        "record" => &["reference_entity_code"],
        _ => &[],
    };
    allowed.extend_from_slice(specific);
    for (k, v) in obj {
        match k.as_str() {
            "code" => {
                e.check_type(k, v, &[Ty::String]);
            }
            "type" => {
                let is_string = e.check_type(k, v, &[Ty::String]);
                if is_string {
                    e.check_enum(k, v, &ATTRIBUTE_TYPES);
                }
            }
            "labels" | "_links" => {
                e.check_type(k, v, &[Ty::Object]);
            }
            "value_per_locale"
            | "value_per_channel"
            | "is_required_for_completeness"
            | "is_read_only"
            | "is_textarea"
            | "decimals_allowed" => {
                e.check_type(k, v, &[Ty::Boolean]);
            }
            "is_rich_text_editor" => {
                e.check_type(k, v, &[Ty::Boolean, Ty::Null]);
            }
            "max_characters" => {
                e.check_type(k, v, &[Ty::Integer, Ty::Null]);
            }
            "validation_rule" => {
                let typed = e.check_type(k, v, &[Ty::String, Ty::Null]);
                if typed && v.is_string() {
                    e.check_enum(k, v, &["email", "url", "regular_expression", "none"]);
                }
            }
            "validation_regexp"
            | "max_file_size"
            | "prefix"
            | "suffix"
            | "min_value"
            | "max_value"
            | "reference_entity_code" => {
                e.check_type(k, v, &[Ty::String, Ty::Null]);
            }
            "media_type" => {
                e.check_type(k, v, &[Ty::String]);
            }
            "allowed_extensions" => {
                let is_array = e.check_type(k, v, &[Ty::Array]);
                if is_array {
                    for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                        e.check_type(&format!("{k}[{i}]"), x, &[Ty::String]);
                    }
                }
            }
            _ => {}
        }
    }
    e.check_additional("", obj, &allowed);
    e
}

fn str_opt(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn apply_attribute(a: &mut Attribute, obj: &Map<String, Value>) {
    for (k, v) in obj {
        match k.as_str() {
            "labels" => merge_labels(&mut a.labels, Some(v)),
            "is_required_for_completeness" => {
                a.is_required_for_completeness = v.as_bool().unwrap_or(false)
            }
            "is_read_only" => a.is_read_only = v.as_bool().unwrap_or(false),
            "max_characters" => a.max_characters = v.as_u64(),
            "is_textarea" => a.is_textarea = v.as_bool().unwrap_or(false),
            "is_rich_text_editor" => a.is_rich_text_editor = v.as_bool(),
            "validation_rule" => a.validation_rule = str_opt(v),
            "validation_regexp" => a.validation_regexp = str_opt(v),
            "media_type" => a.media_type = str_opt(v),
            "prefix" => a.prefix = str_opt(v),
            "suffix" => a.suffix = str_opt(v),
            "allowed_extensions" => {
                a.allowed_extensions = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|e| e.trim_start_matches('.').to_lowercase())
                    .collect()
            }
            "max_file_size" => a.max_file_size = str_opt(v),
            "decimals_allowed" => a.decimals_allowed = v.as_bool(),
            "min_value" => a.min_value = str_opt(v),
            "max_value" => a.max_value = str_opt(v),
            _ => {}
        }
    }
}

/// `PATCH .../attributes/{code}`: upsert, 201/204 + `Location` (CE `CreateOrUpdateAttributeAction`).
pub(crate) async fn patch_attribute(
    State(s): State<Arc<Shared>>,
    Path((family, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    if let Err(r) = check_code_response("Asset family identifier", &family)
        .and_then(|_| check_code_response("Attribute code", &code))
    {
        return r;
    }
    let Some(f) = s.family(&family) else {
        return family_not_found(&family);
    };
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    if body.get("code").and_then(Value::as_str) != Some(code.as_str()) {
        // Sic: the server's message says "asset family" for attributes too.
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The code of the asset family provided in the URI must be the same as the one provided in the request body.",
        );
    }
    let obj = body.as_object().cloned().unwrap_or_default();
    let location = format!("{}{}", base_url(&headers), attribute_path(&family, &code));
    let mut f = f.write();
    match f.attribute(&code).cloned() {
        None => {
            let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
            let errors = validate_attribute_format(&obj, kind, true);
            if !errors.is_empty() {
                return error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The attribute has an invalid format.",
                    errors.to_json(),
                );
            }
            if f.attributes.len() >= MAX_ATTRIBUTES {
                return error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The attribute has data that does not comply with the business rules.",
                    json!([{"property": "", "message": format!("You cannot create the attribute \"{code}\" because you have reached the limit of {MAX_ATTRIBUTES} attributes for this asset family")}]),
                );
            }
            let kind: AttributeType = serde_json::from_value(Value::String(kind.to_owned()))
                .unwrap_or(AttributeType::Unknown);
            let mut a = Attribute::new(&code, kind);
            a.value_per_locale = obj
                .get("value_per_locale")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            a.value_per_channel = obj
                .get("value_per_channel")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if matches!(kind, AttributeType::MediaFile | AttributeType::MediaLink) {
                a.media_type = Some("image".into());
            }
            apply_attribute(&mut a, &obj);
            f.upsert_attribute(a);
            if f.attribute_as_main_media.is_none()
                && matches!(kind, AttributeType::MediaFile | AttributeType::MediaLink)
            {
                f.attribute_as_main_media = Some(code.clone());
            }
            empty(StatusCode::CREATED, Some(location))
        }
        Some(mut a) => {
            let kind = a.type_name();
            let errors = validate_attribute_format(&obj, &kind, false);
            if !errors.is_empty() {
                return error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The attribute has an invalid format.",
                    errors.to_json(),
                );
            }
            // Immutable properties (§5.6): type, value_per_locale, value_per_channel.
            let mut immutable = Errors::default();
            if obj
                .get("type")
                .is_some_and(|t| t.as_str() != Some(kind.as_str()))
            {
                immutable.push("type", "The property type is immutable.");
            }
            if obj
                .get("value_per_locale")
                .is_some_and(|v| v.as_bool() != Some(a.value_per_locale))
            {
                immutable.push(
                    "value_per_locale",
                    "The property value_per_locale is immutable.",
                );
            }
            if obj
                .get("value_per_channel")
                .is_some_and(|v| v.as_bool() != Some(a.value_per_channel))
            {
                immutable.push(
                    "value_per_channel",
                    "The property value_per_channel is immutable.",
                );
            }
            if !immutable.is_empty() {
                return error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The attribute has data that does not comply with the business rules.",
                    immutable.to_json(),
                );
            }
            apply_attribute(&mut a, &obj);
            f.upsert_attribute(a);
            empty(StatusCode::NO_CONTENT, Some(location))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options

fn option_path(family: &str, attribute: &str, code: &str) -> String {
    format!("/api/rest/v1/asset-families/{family}/attributes/{attribute}/options/{code}")
}

fn option_json(code: &str, labels: &Map<String, Value>) -> Value {
    json!({"code": code, "labels": labels})
}

/// Resolves family + option attribute with the checks and messages of
/// CE `GetConnectorAttributeOptionsAction`.
fn option_attribute(
    s: &Shared,
    family: &str,
    attribute: &str,
) -> Result<Arc<RwLock<Family>>, Response> {
    check_code_response("Asset family identifier", family)?;
    let f = s.family(family).ok_or_else(|| family_not_found(family))?;
    check_code_response("Attribute code", attribute)?;
    {
        let g = f.read();
        let a = g
            .attribute(attribute)
            .ok_or_else(|| attribute_not_found(attribute, family))?;
        if !a.has_options() {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("Attribute \"{attribute}\" does not support options."),
            ));
        }
    }
    Ok(f)
}

/// `GET .../options`: a plain JSON array (§5.6).
pub(crate) async fn list_options(
    State(s): State<Arc<Shared>>,
    Path((family, attribute)): Path<(String, String)>,
) -> Response {
    let f = match option_attribute(&s, &family, &attribute) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let g = f.read();
    let a = g.attribute(&attribute).expect("checked");
    let items: Vec<Value> = a.options.iter().map(|(c, l)| option_json(c, l)).collect();
    json(StatusCode::OK, &Value::Array(items))
}

/// `GET .../options/{code}`.
pub(crate) async fn get_option(
    State(s): State<Arc<Shared>>,
    Path((family, attribute, option)): Path<(String, String, String)>,
) -> Response {
    let f = match option_attribute(&s, &family, &attribute) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let g = f.read();
    let a = g.attribute(&attribute).expect("checked");
    match a.option(&option) {
        Some(labels) => json(StatusCode::OK, &option_json(&option, labels)),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "Attribute option \"{option}\" does not exist for the attribute \"{attribute}\"."
            ),
        ),
    }
}

/// `PATCH .../options/{code}`: upsert, 201/204 + `Location`, order of CE
/// `CreateOrUpdateAttributeOptionAction`.
pub(crate) async fn patch_option(
    State(s): State<Arc<Shared>>,
    Path((family, attribute, option)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    if let Err(r) = check_code_response("Asset family identifier", &family)
        .and_then(|_| check_code_response("Attribute code", &attribute))
        .and_then(|_| check_code_response("Option code", &option))
    {
        return r;
    }
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    let mut e = Errors::default();
    match body.as_object() {
        None => {
            e.check_type("", &body, &[Ty::Object]);
        }
        Some(obj) => {
            e.check_required("", obj, &["code"]);
            if let Some(c) = obj.get("code") {
                e.check_type("code", c, &[Ty::String]);
            }
            if let Some(l) = obj.get("labels") {
                if e.check_type("labels", l, &[Ty::Object]) {
                    for (k, t) in l.as_object().into_iter().flatten() {
                        e.check_type(&prop("labels", k), t, &[Ty::String, Ty::Null]);
                    }
                }
            }
            e.check_additional("", obj, &["code", "labels", "_links"]);
        }
    }
    if !e.is_empty() {
        return error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The attribute option has an invalid format.",
            e.to_json(),
        );
    }
    if body.get("code").and_then(Value::as_str) != Some(option.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The code of the attribute option provided in the URI must be the same as the one provided in the request body.",
        );
    }
    let f = match option_attribute(&s, &family, &attribute) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let location = format!(
        "{}{}",
        base_url(&headers),
        option_path(&family, &attribute, &option)
    );
    let mut g = f.write();
    let idx = *g.attr_index.get(&attribute).expect("checked") as usize;
    let a = &mut g.attributes[idx];
    match a.options.iter_mut().find(|(c, _)| *c == option) {
        Some((_, labels)) => {
            merge_labels(labels, body.get("labels"));
            empty(StatusCode::NO_CONTENT, Some(location))
        }
        None => {
            if a.options.len() >= MAX_OPTIONS {
                return error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The attribute option has data that does not comply with the business rules.",
                    json!([{"property": "", "message": format!("You have reached the limit of {MAX_OPTIONS} attribute options per attribute.")}]),
                );
            }
            let mut labels = Map::new();
            merge_labels(&mut labels, body.get("labels"));
            a.options.push((option.clone(), labels));
            empty(StatusCode::CREATED, Some(location))
        }
    }
}
