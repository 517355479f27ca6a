//! Assets: list with `search_after` and filters (§5.9), get (§5.10), single PATCH (§5.11),
//! batch PATCH (§5.12), DELETE (§5.13).

use std::ops::Bound;
use std::sync::Arc;

use assetbridge_core::AttributeType;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::DateTime;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::codec::{self, Data};
use super::fast;
use super::http::{
    base_url, check_code, check_code_response, cursor_decode, cursor_encode, empty, error,
    error_with, family_not_found, invalid_json, json, json_text, link, ordered, param, parse_json,
    php_type, query_pairs, require_content_type, with_items, JSON,
};
use super::linking::{self, NAMING_BUSINESS_RULES};
use super::state::{bump, fold, iso, Catalog, Family, Shared, StoredAsset};
use super::validate::{self, Accepted, Rejected, BUSINESS_RULES, INVALID_FORMAT};

/// Assets per list page, fixed (§5.2, §5.9: no `limit` parameter).
pub(crate) const ASSETS_PER_PAGE: usize = 100;
/// Above this many candidates from the `updated` index, paging scans by code instead.
const INDEX_CANDIDATES_MAX: usize = 20_000;

fn asset_path(family: &str, code: &str) -> String {
    format!("/api/rest/v1/asset-families/{family}/assets/{code}")
}

/// Which values a GET returns (`channel` / `locales` only trim scopable / localizable values).
#[derive(Default)]
pub(crate) struct ValueFilter {
    pub channel: Option<u8>,
    pub locales: Option<Vec<u8>>,
}

impl ValueFilter {
    fn keeps(&self, v: &codec::Val) -> bool {
        (v.channel == 0 || self.channel.is_none_or(|c| c == v.channel))
            && (v.locale == 0
                || self
                    .locales
                    .as_ref()
                    .is_none_or(|ls| ls.contains(&v.locale)))
    }
}

/// An asset as GET returns it (§5.7): values with `_links.download` (media_file) and
/// `linked_data` (media_link), ISO 8601 `created` / `updated`.
pub(crate) fn render_asset(
    f: &Family,
    catalog: &Catalog,
    base: &str,
    a: &StoredAsset,
    filter: &ValueFilter,
    self_link: bool,
) -> Value {
    let code = &*a.code;
    let mut values: Map<String, Value> = Map::new();
    for v in codec::decode(&a.values) {
        if !filter.keeps(&v) {
            continue;
        }
        let Some(attr) = f.attributes.get(v.attr as usize) else {
            continue;
        };
        let mut item = Map::new();
        item.insert(
            "locale".into(),
            catalog
                .locale_code(v.locale)
                .map(|s| Value::String(s.into()))
                .unwrap_or(Value::Null),
        );
        item.insert(
            "channel".into(),
            catalog
                .channel_code(v.channel)
                .map(|s| Value::String(s.into()))
                .unwrap_or(Value::Null),
        );
        let data = match &v.data {
            Data::Str(s) => Value::String(s.clone()),
            Data::Bool(b) => Value::Bool(*b),
            Data::List(l) => Value::from(l.clone()),
        };
        match (attr.kind, &v.data) {
            (AttributeType::MediaFile, Data::Str(key)) => {
                item.insert(
                    "_links".into(),
                    json!({"download": {"href": format!("{base}/api/rest/v1/asset-media-files/{key}")}}),
                );
            }
            (AttributeType::MediaLink, Data::Str(s)) => {
                let prefix = attr.prefix.clone().unwrap_or_default();
                let suffix = attr.suffix.clone().unwrap_or_default();
                item.insert(
                    "linked_data".into(),
                    json!({
                        "full_url": format!("{prefix}{s}{suffix}"),
                        "prefix": attr.prefix,
                        "suffix": attr.suffix,
                    }),
                );
            }
            _ => {}
        }
        item.insert("data".into(), data);
        match values
            .entry(attr.code.clone())
            .or_insert_with(|| Value::Array(vec![]))
        {
            Value::Array(list) => list.push(Value::Object(item)),
            _ => unreachable!("values are arrays"),
        }
    }
    let mut out = Map::new();
    if self_link {
        out.insert(
            "_links".into(),
            json!({"self": link(base, &asset_path(&f.code, code), &[])}),
        );
    }
    out.insert("code".into(), Value::String(code.to_owned()));
    out.insert("values".into(), Value::Object(values));
    out.insert("created".into(), Value::String(iso(a.created)));
    out.insert("updated".into(), Value::String(iso(a.updated)));
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Search filters (§5.9)

/// Conditions on `updated`, bounds in milliseconds (filter dates may have fractions of a
/// second; stored timestamps are whole seconds, like Akeneo's).
#[derive(Debug, Clone, Copy)]
enum Updated {
    Gt(i64),
    Lt(i64),
    Between(i64, i64),
    NotBetween(i64, i64),
    Since(i64),
}

impl Updated {
    fn holds(self, secs: i64) -> bool {
        let t = secs.saturating_mul(1000);
        match self {
            Updated::Gt(x) => t > x,
            Updated::Lt(x) => t < x,
            Updated::Between(a, b) => a <= t && t <= b,
            Updated::NotBetween(a, b) => t < a || t > b,
            Updated::Since(x) => t >= x,
        }
    }
}

/// Smallest whole second `s` with `s * 1000 >= ms`.
fn ceil_secs(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

#[derive(Default)]
pub(crate) struct AssetFilter {
    updated: Vec<Updated>,
    codes: Option<Vec<String>>,
}

impl AssetFilter {
    fn matches(&self, a: &StoredAsset) -> bool {
        self.updated.iter().all(|c| c.holds(a.updated))
    }

    /// Inclusive bounds (whole seconds) on `updated` implied by the conditions, if any.
    fn updated_bounds(&self) -> Option<(i64, i64)> {
        let mut lo = i64::MIN;
        let mut hi = i64::MAX;
        let mut any = false;
        for c in &self.updated {
            match *c {
                Updated::Gt(x) => {
                    lo = lo.max(x.div_euclid(1000) + 1);
                    any = true
                }
                Updated::Since(x) => {
                    lo = lo.max(ceil_secs(x));
                    any = true
                }
                Updated::Lt(x) => {
                    hi = hi.min(ceil_secs(x) - 1);
                    any = true
                }
                Updated::Between(a, b) => {
                    lo = lo.max(ceil_secs(a));
                    hi = hi.min(b.div_euclid(1000));
                    any = true
                }
                Updated::NotBetween(..) => {}
            }
        }
        any.then_some((lo, hi))
    }
}

/// Opis-style type name for `The data (x) must match the type: y`.
fn opis_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn date_time(v: &Value, path: &str, errors: &mut Vec<(String, String)>) -> Option<i64> {
    match v.as_str() {
        None => {
            errors.push((
                path.into(),
                format!("The data ({}) must match the type: string", opis_type(v)),
            ));
            None
        }
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.timestamp_millis()),
            Err(_) => {
                errors.push((
                    path.into(),
                    "The data must match the 'date-time' format".into(),
                ));
                None
            }
        },
    }
}

/// Parses a (non-empty) `search` object; errors are `(property, message)` in the server's
/// JSON-pointer style (`/updated/0/value`).
fn parse_filters(v: &Value, now: i64) -> Result<AssetFilter, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut out = AssetFilter::default();
    let Some(obj) = v.as_object() else {
        return Err(vec![(
            "/".into(),
            format!("The data ({}) must match the type: object", opis_type(v)),
        )]);
    };
    for (key, val) in obj {
        match key.as_str() {
            "updated" => {
                let Some(list) = val.as_array() else {
                    errors.push((
                        "/updated".into(),
                        format!("The data ({}) must match the type: array", opis_type(val)),
                    ));
                    continue;
                };
                if list.is_empty() {
                    errors.push((
                        "/updated".into(),
                        "Array should have at least 1 items, 0 found".into(),
                    ));
                }
                for (i, c) in list.iter().enumerate() {
                    let path = format!("/updated/{i}");
                    let Some(c) = c.as_object() else {
                        errors.push((
                            path,
                            format!("The data ({}) must match the type: object", opis_type(c)),
                        ));
                        continue;
                    };
                    let (Some(op), Some(value)) = (c.get("operator"), c.get("value")) else {
                        errors.push((
                            path,
                            "The required properties (operator, value) are missing".into(),
                        ));
                        continue;
                    };
                    let vpath = format!("{path}/value");
                    match op.as_str() {
                        Some(">") | Some("<") => {
                            if let Some(t) = date_time(value, &vpath, &mut errors) {
                                out.updated.push(if op == ">" {
                                    Updated::Gt(t)
                                } else {
                                    Updated::Lt(t)
                                });
                            }
                        }
                        Some(o @ ("BETWEEN" | "NOT BETWEEN")) => match value.as_array() {
                            Some(pair) if pair.len() == 2 => {
                                let a = date_time(&pair[0], &format!("{vpath}/0"), &mut errors);
                                let b = date_time(&pair[1], &format!("{vpath}/1"), &mut errors);
                                if let (Some(a), Some(b)) = (a, b) {
                                    out.updated.push(if o == "BETWEEN" {
                                        Updated::Between(a, b)
                                    } else {
                                        Updated::NotBetween(a, b)
                                    });
                                }
                            }
                            Some(pair) => errors.push((
                                vpath,
                                format!(
                                    "Array should have {} 2 items, {} found",
                                    if pair.len() < 2 {
                                        "at least"
                                    } else {
                                        "at most"
                                    },
                                    pair.len()
                                ),
                            )),
                            None => errors.push((
                                vpath,
                                format!(
                                    "The data ({}) must match the type: array",
                                    opis_type(value)
                                ),
                            )),
                        },
                        Some("SINCE LAST N DAYS") => match value.as_i64() {
                            Some(n) if n >= 0 => {
                                out.updated.push(Updated::Since((now - n * 86_400) * 1000));
                            }
                            _ => errors.push((
                                vpath,
                                format!(
                                    "The data ({}) must match the type: integer",
                                    opis_type(value)
                                ),
                            )),
                        },
                        _ => errors.push((
                            format!("{path}/operator"),
                            "The data should match one item from enum".into(),
                        )),
                    }
                }
            }
            "code" => {
                let Some(list) = val.as_array() else {
                    errors.push((
                        "/code".into(),
                        format!("The data ({}) must match the type: array", opis_type(val)),
                    ));
                    continue;
                };
                for (i, c) in list.iter().enumerate() {
                    let path = format!("/code/{i}");
                    let op = c.get("operator").and_then(Value::as_str);
                    let value = c.get("value").and_then(Value::as_array);
                    if op != Some("IN") {
                        errors.push((
                            format!("{path}/operator"),
                            "The data should match one item from enum".into(),
                        ));
                        continue;
                    }
                    match value {
                        Some(codes) if codes.iter().all(Value::is_string) => {
                            let codes: Vec<String> = codes
                                .iter()
                                .filter_map(|c| c.as_str().map(str::to_owned))
                                .collect();
                            // Several IN conditions: intersection.
                            out.codes = Some(match out.codes.take() {
                                None => codes,
                                Some(prev) => {
                                    prev.into_iter().filter(|c| codes.contains(c)).collect()
                                }
                            });
                        }
                        _ => errors.push((
                            format!("{path}/value"),
                            "The data must be an array of strings".into(),
                        )),
                    }
                }
            }
            other => errors.push((
                "/".into(),
                format!("Additional object properties are not allowed: {other}"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One page of assets after `after` (exclusive), in code order.
fn page<'a>(
    f: &'a Family,
    filter: &AssetFilter,
    after: Option<&str>,
    limit: usize,
) -> Vec<(&'a Arc<str>, &'a StoredAsset)> {
    // Keys are folded codes (`Family::assets`): so is the order, and the cursor.
    let after = after.map(fold);
    let after = after.as_deref();
    let after_ok = |c: &str| after.is_none_or(|a| c > a);
    if let Some(codes) = &filter.codes {
        let mut codes: Vec<std::borrow::Cow<'_, str>> = codes
            .iter()
            .map(|c| fold(c))
            .filter(|c| after_ok(c))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        return codes
            .into_iter()
            .filter_map(|c| f.assets.get_key_value(&*c))
            .filter(|(_, a)| filter.matches(a))
            .take(limit)
            .collect();
    }
    if let Some((lo, hi)) = filter.updated_bounds() {
        if lo > hi {
            return Vec::new();
        }
        let mut candidates: Vec<&Arc<str>> = Vec::new();
        let mut overflow = false;
        'seconds: for codes in f.by_updated.range(lo..=hi).map(|(_, codes)| codes) {
            for code in codes {
                if after_ok(code) {
                    candidates.push(code);
                    if candidates.len() > INDEX_CANDIDATES_MAX {
                        overflow = true;
                        break 'seconds;
                    }
                }
            }
        }
        if !overflow {
            candidates.sort_unstable();
            return candidates
                .into_iter()
                .filter_map(|c| f.assets.get_key_value(&**c))
                .filter(|(_, a)| filter.matches(a))
                .take(limit)
                .collect();
        }
    }
    let range = match after {
        Some(a) => f
            .assets
            .range::<str, _>((Bound::Excluded(a), Bound::Unbounded)),
        None => f.assets.range::<str, _>(..),
    };
    range
        .filter(|(_, a)| filter.matches(a))
        .take(limit)
        .collect()
}

/// `GET /api/rest/v1/asset-families/{family}/assets` (§4.2, §5.9), checks in the order of CE
/// `GetConnectorAssetsAction`.
pub(crate) async fn list_assets(
    State(s): State<Arc<Shared>>,
    Path(family): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = query_pairs(q.as_deref());
    let search = param(&pairs, "search");
    let filter = match search {
        None => AssetFilter::default(),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => {
                let is_empty = match &v {
                    Value::Object(m) => m.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if is_empty {
                    AssetFilter::default()
                } else {
                    match parse_filters(&v, s.now()) {
                        Ok(f) => f,
                        Err(errors) => {
                            let errors: Vec<Value> = errors
                                .into_iter()
                                .map(|(p, m)| json!({"property": p, "message": m}))
                                .collect();
                            return error_with(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "The search filters have an invalid format.",
                                Value::Array(errors),
                            );
                        }
                    }
                }
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "The search query parameter must be a valid JSON.",
                )
            }
        },
    };
    let after_raw = param(&pairs, "search_after");
    let after = match after_raw {
        None => None,
        Some(raw) => match cursor_decode(raw).filter(|c| check_code("Asset code", c).is_ok()) {
            Some(c) => Some(c),
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                    "Asset code may contain only letters, numbers and underscores. \"{raw}\" given"
                ),
                )
            }
        },
    };
    if let Err(r) = check_code_response("Asset family identifier", &family) {
        return r;
    }
    let channel_raw = param(&pairs, "channel");
    let locales_raw = param(&pairs, "locales");
    let mut value_filter = ValueFilter::default();
    {
        let catalog = s.catalog.read();
        let mut errs = Vec::new();
        if let Some(c) = channel_raw {
            match catalog.channel_idx(c) {
                Some(i) => value_filter.channel = Some(i),
                None => errs.push(json!({"property": "channel", "message": format!("The channel \"{c}\" does not exist.")})),
            }
        }
        if let Some(ls) = locales_raw.filter(|l| !l.is_empty()) {
            let mut idx = Vec::new();
            for l in ls.split(',') {
                match catalog.locale_idx(l) {
                    Some(i) => idx.push(i),
                    None => errs.push(json!({"property": "locales", "message": format!("The locale \"{l}\" is not activated.")})),
                }
            }
            value_filter.locales = Some(idx);
        }
        if !errs.is_empty() {
            return error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid query parameters",
                Value::Array(errs),
            );
        }
    }
    let Some(fam) = s.family(&family) else {
        return family_not_found(&family);
    };
    let base = base_url(&headers);
    // Lock order everywhere: family, then catalog, then media.
    let f = fam.read();
    let catalog = s.catalog.read();
    let rows = page(&f, &filter, after.as_deref(), ASSETS_PER_PAGE);
    let items: Vec<Value> = rows
        .iter()
        .map(|(_, a)| render_asset(&f, &catalog, &base, a, &value_filter, true))
        .collect();
    let path = format!("/api/rest/v1/asset-families/{family}/assets");
    let mut echo: Vec<(&str, &str)> = Vec::new();
    for (k, v) in [
        ("channel", channel_raw),
        ("locales", locales_raw),
        ("search", search),
    ] {
        if let Some(v) = v {
            echo.push((k, v));
        }
    }
    let mut links = Map::new();
    let mut self_params = echo.clone();
    if let Some(a) = after_raw {
        self_params.push(("search_after", a));
    }
    links.insert("self".into(), link(&base, &path, &self_params));
    links.insert("first".into(), link(&base, &path, &echo));
    // §4.2: `next` iff the page is full.
    if rows.len() == ASSETS_PER_PAGE {
        if let Some((last, _)) = rows.last() {
            let c = cursor_encode(last);
            let mut next = echo.clone();
            next.push(("search_after", &c));
            links.insert("next".into(), link(&base, &path, &next));
        }
    }
    json(
        StatusCode::OK,
        &json!({"_links": links, "_embedded": {"items": items}}),
    )
}

/// `GET .../assets/{code}` (§5.10).
pub(crate) async fn get_asset(
    State(s): State<Arc<Shared>>,
    Path((family, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_code_response("Asset family identifier", &family)
        .and_then(|_| check_code_response("Asset code", &code))
    {
        return r;
    }
    let Some(fam) = s.family(&family) else {
        return family_not_found(&family);
    };
    let base = base_url(&headers);
    // Lock order everywhere: family, then catalog, then media.
    let f = fam.read();
    let catalog = s.catalog.read();
    match f.asset(&code) {
        Some(a) => json(
            StatusCode::OK,
            &render_asset(&f, &catalog, &base, a, &ValueFilter::default(), false),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            format!("Asset \"{code}\" does not exist for the asset family \"{family}\"."),
        ),
    }
}

/// Outcome of writing one valid asset.
pub(crate) enum Written {
    Created,
    Updated,
}

/// Validates and writes one asset object into `family` (shared by single / batch PATCH and
/// seeding). The family lock is held for the whole item. With `naming`, an asset being created
/// goes through the family's naming convention (§5.4) — the API paths; seeding does not.
pub(crate) fn upsert_one(
    s: &Shared,
    f: &mut Family,
    item: &Map<String, Value>,
    naming: bool,
) -> Result<Written, Rejected> {
    let (accepted, named) = {
        let catalog = s.catalog.read();
        let media = s.media.read();
        let mut accepted = validate::validate(f, &catalog, &media, item)?;
        let mut named = false;
        if naming && f.asset(&accepted.code).is_none() {
            let extra = linking::naming_convention(f, &catalog, &media, item)?;
            named = !extra.is_empty();
            // After the sent values: the convention's captures win (CE merges its commands last).
            accepted.changes.extend(extra);
        }
        (accepted, named)
    };
    if named {
        bump(&s.counters.naming_conventions_applied);
    }
    Ok(write_accepted(s, f, accepted))
}

/// Writes a validated asset into `f`.
pub(crate) fn write_accepted(s: &Shared, f: &mut Family, accepted: Accepted) -> Written {
    let (created, _changed) = f.write_asset(&accepted.code, accepted.changes, s.now());
    if created {
        Written::Created
    } else {
        Written::Updated
    }
}

impl Written {
    pub(crate) fn is_created(&self) -> bool {
        matches!(self, Written::Created)
    }
}

fn count_written(s: &Shared, w: &Written) {
    bump(&s.counters.asset_writes);
    match w {
        Written::Created => bump(&s.counters.assets_created),
        Written::Updated => bump(&s.counters.assets_updated),
    }
}

/// Counts a write of the batch PATCH and renders its result line, keys in the server's order:
/// `{"code":…,"status_code":201|204}`.
pub(crate) fn written_line(s: &Shared, code: Value, w: &Written) -> String {
    count_written(s, w);
    let status = match w {
        Written::Created => 201,
        Written::Updated => 204,
    };
    ordered(&[("code", code), ("status_code", status.into())])
}

/// The end of a batch PATCH: the family's lock released, the link rules of the created codes
/// started (§5.5: after the answer), and the 200 with one result line per item.
pub(crate) fn finish_batch(
    s: &Arc<Shared>,
    family: &str,
    f: parking_lot::RwLockWriteGuard<'_, Family>,
    results: Vec<String>,
    created: Vec<String>,
) -> Response {
    let has_rules = linking::has_link_rules(&f);
    drop(f);
    linking::spawn_link_rules(s, family, has_rules, created);
    let n = results.len();
    with_items(
        json_text(StatusCode::OK, format!("[{}]", results.join(","))),
        n,
    )
}

/// `PATCH .../assets/{code}` (§5.11), order of CE `CreateOrUpdateAssetAction`.
pub(crate) async fn patch_asset(
    State(s): State<Arc<Shared>>,
    Path((family, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    if let Err(r) = check_code_response("Asset code", &code)
        .and_then(|_| check_code_response("Asset family identifier", &family))
    {
        return r;
    }
    let Some(fam) = s.family(&family) else {
        return family_not_found(&family);
    };
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    if body.get("code").and_then(Value::as_str) != Some(code.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The code of the asset provided in the URI must be the same as the one provided in the request body.",
        );
    }
    let item = body.as_object().cloned().unwrap_or_default();
    bump(&s.counters.asset_single_patches);
    let mut f = fam.write();
    let location = format!("{}{}", base_url(&headers), asset_path(&family, &code));
    match upsert_one(&s, &mut f, &item, true) {
        Ok(w) => {
            count_written(&s, &w);
            let status = match w {
                Written::Created => StatusCode::CREATED,
                Written::Updated => StatusCode::NO_CONTENT,
            };
            let has_rules = linking::has_link_rules(&f);
            drop(f);
            if matches!(w, Written::Created) {
                // §5.5: link rules run for created assets only, after the answer.
                linking::spawn_link_rules(&s, &family, has_rules, vec![code.clone()]);
            }
            empty(status, Some(location))
        }
        Err(rej) => {
            bump(&s.counters.asset_items_rejected);
            match rej {
                Rejected::Format(e) => error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    INVALID_FORMAT,
                    e.to_json(),
                ),
                Rejected::Message(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
                Rejected::Business(e) => error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    BUSINESS_RULES,
                    e.to_json(),
                ),
                Rejected::NamingBusiness(e) => error_with(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    NAMING_BUSINESS_RULES,
                    e.to_json(),
                ),
            }
        }
    }
}

/// `PATCH .../assets` (§5.12): checks in the order of CE `CreateOrUpdateAssetsAction`, then each
/// item independently, answered 200 with one result per item, in order.
pub(crate) async fn patch_assets(
    State(s): State<Arc<Shared>>,
    Path(family): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers, JSON) {
        return r;
    }
    if let Err(r) = check_code_response("Asset family identifier", &family) {
        return r;
    }
    let Some(fam) = s.family(&family) else {
        return family_not_found(&family);
    };
    if let Some(r) = fast::patch_assets(&s, &fam, &family, &body) {
        return r;
    }
    let Some(body) = parse_json(&body) else {
        return invalid_json();
    };
    // "The list of assets has an invalid format." (JSON schema: array of objects). PHP decodes
    // `{}` to an empty array, so it is an empty list.
    let items: Vec<Value> = match body {
        Value::Array(items) => items,
        Value::Object(m) if m.is_empty() => Vec::new(),
        other => {
            return error_with(
                StatusCode::BAD_REQUEST,
                "The list of assets has an invalid format.",
                json!([{"property": "", "message": format!("{} value found, but an array is required", php_type(&other))}]),
            )
        }
    };
    let list_errors: Vec<Value> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_object())
        .map(|(i, v)| {
            json!({"property": format!("[{i}]"), "message": format!("{} value found, but an object is required", php_type(v))})
        })
        .collect();
    if !list_errors.is_empty() {
        return with_items(
            error_with(
                StatusCode::BAD_REQUEST,
                "The list of assets has an invalid format.",
                Value::Array(list_errors),
            ),
            items.len(),
        );
    }
    if items.len() > s.asset_batch_max {
        return with_items(
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Too many resources to process, {} is the maximum allowed.",
                    s.asset_batch_max
                ),
            ),
            items.len(),
        );
    }
    bump(&s.counters.asset_batch_requests);
    // One `{code, status_code[, message][, errors]}` per item, keys in the server's order.
    let mut results: Vec<String> = Vec::with_capacity(items.len());
    let mut created: Vec<String> = Vec::new();
    let mut f = fam.write();
    for item in &items {
        let obj = item.as_object().expect("checked above");
        let raw_code = obj.get("code").cloned();
        let line = match upsert_one(&s, &mut f, obj, true) {
            Ok(w) => {
                if w.is_created() {
                    if let Some(c) = obj.get("code").and_then(Value::as_str) {
                        created.push(c.to_owned());
                    }
                }
                written_line(&s, raw_code.unwrap_or_default(), &w)
            }
            Err(rej) => {
                bump(&s.counters.asset_items_rejected);
                match rej {
                    Rejected::Format(e) => ordered(&[
                        (
                            "code",
                            raw_code.unwrap_or_else(|| Value::String(String::new())),
                        ),
                        ("status_code", 422.into()),
                        ("message", INVALID_FORMAT.into()),
                        ("errors", e.to_json()),
                    ]),
                    Rejected::Message(m) => ordered(&[
                        ("code", raw_code.unwrap_or(Value::Null)),
                        ("status_code", 422.into()),
                        ("message", m.into()),
                    ]),
                    Rejected::Business(e) => ordered(&[
                        ("code", raw_code.unwrap_or(Value::Null)),
                        ("status_code", 422.into()),
                        ("message", BUSINESS_RULES.into()),
                        ("errors", e.to_json()),
                    ]),
                    Rejected::NamingBusiness(e) => ordered(&[
                        ("code", raw_code.unwrap_or(Value::Null)),
                        ("status_code", 422.into()),
                        ("message", NAMING_BUSINESS_RULES.into()),
                        ("errors", e.to_json()),
                    ]),
                }
            }
        };
        results.push(line);
    }
    // §5.5: the codes created by this request (201 items only) are linked after the answer.
    finish_batch(&s, &family, f, results, created)
}

/// `DELETE .../assets/{code}` (§5.13).
pub(crate) async fn delete_asset(
    State(s): State<Arc<Shared>>,
    Path((family, code)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_code_response("Asset family identifier", &family)
        .and_then(|_| check_code_response("Asset code", &code))
    {
        return r;
    }
    let Some(fam) = s.family(&family) else {
        return family_not_found(&family);
    };
    if fam.write().delete_asset(&code) {
        bump(&s.counters.assets_deleted);
        empty(StatusCode::NO_CONTENT, None)
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("Resource `{code}` does not exist."),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_bounds() {
        assert_eq!(ceil_secs(10_000), 10);
        assert_eq!(ceil_secs(10_500), 11);
        assert_eq!(ceil_secs(-500), 0);
        let f = AssetFilter {
            updated: vec![Updated::Lt(10_500), Updated::Gt(8_999)],
            codes: None,
        };
        // 9 and 10 qualify (9000 > 8999, 10000 < 10500)
        assert_eq!(f.updated_bounds(), Some((9, 10)));
        assert!(Updated::Lt(10_500).holds(10));
        assert!(!Updated::Gt(10_000).holds(10));
        assert!(Updated::Between(9_500, 10_000).holds(10));
        assert!(!Updated::Between(9_500, 10_000).holds(9));
        let between = AssetFilter {
            updated: vec![Updated::Between(9_500, 10_999)],
            codes: None,
        };
        assert_eq!(between.updated_bounds(), Some((10, 10)));
    }
}
