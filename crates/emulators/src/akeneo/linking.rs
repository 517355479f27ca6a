//! Naming conventions (§5.4) and product link rules (§5.5).
//!
//! - **Checked** when an asset family is PATCHed (CE `NamingConventionValidator`,
//!   `RawSourceValidator`, `PatternValidator`, `ProductLinkRules*Validator`,
//!   `ExtrapolatedAttributeValidator`; messages from `validators.en_US.yml`).
//! - **Executed** only when an asset is *created* (single PATCH 201, batch item 201): the naming
//!   convention before the asset is written (its captures are written with the asset, after the
//!   sent values, so they win; CE `CreateOrUpdateAssetsAction`), the product link rules in a task
//!   spawned once the answer is ready (CE `BatchAssetsToLink` on `kernel.terminate`). An update
//!   (204) runs neither, and neither does seeding through [`super::AkeneoEmulator`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use assetbridge_core::AttributeType;
use regex::Regex;
use serde_json::{json, Map, Value};

use super::codec::{self, Data};
use super::products::ProductStore;
use super::schema::{idx, prop, Errors};
use super::state::{add, bump, Catalog, Family, Shared};
use super::validate::{self, Rejected};

/// Product link rules per asset family (§5.2).
pub(crate) const MAX_LINK_RULES: usize = 2;

/// `"Error during naming convention execution: <reason>"` (§5.4, §5.12).
pub(crate) const NAMING_ERROR_PREFIX: &str = "Error during naming convention execution: ";

/// The message of a naming convention whose captured values break the business rules.
pub(crate) const NAMING_BUSINESS_RULES: &str =
    "The asset data computed with naming convention do not comply with the business rules.";

// ---------------------------------------------------------------------------------------------
// PCRE patterns

/// Compiles a pattern the way PHP's `preg_match` reads it: a delimiter (any non-alphanumeric,
/// non-backslash character; `(`, `[`, `{`, `<` close with their pair), the expression, the same
/// delimiter, then flags (`i m s x U A u D S`). Features PCRE has and the `regex` crate lacks
/// (look-around, back-references, `(?'name'…)`) make the pattern unusable here: refused like a
/// malformed one (a choice of the emulator, see the module docs of `akeneo`).
pub(crate) fn compile_pcre(pattern: &str) -> Result<Regex, String> {
    let malformed = || format!("The regular expression \"{pattern}\" is malformed.");
    let trimmed = pattern.trim_start();
    let first = trimmed.chars().next().ok_or_else(malformed)?;
    if first.is_alphanumeric() || first == '\\' || first.is_whitespace() {
        return Err(malformed());
    }
    let close = match first {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        c => c,
    };
    let body = &trimmed[first.len_utf8()..];
    let mut depth = 0usize;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if c == close && depth == 0 {
            end = Some(i);
            break;
        }
        if close != first {
            if c == first {
                depth += 1;
            } else if c == close {
                depth -= 1;
            }
        }
    }
    let end = end.ok_or_else(malformed)?;
    let expr = &body[..end];
    let mut inline = String::new();
    let mut anchored = false;
    for f in body[end + close.len_utf8()..].chars() {
        match f {
            'i' | 'm' | 's' | 'x' | 'U' => inline.push(f),
            'A' => anchored = true,
            // Unicode is always on; `$` never matches before a final newline here.
            'u' | 'D' | 'S' | '\n' | '\r' | ' ' => {}
            _ => return Err(malformed()),
        }
    }
    let mut source = String::new();
    if !inline.is_empty() {
        source.push_str(&format!("(?{inline})"));
    }
    if anchored {
        source.push_str(&format!("\\A(?:{expr})"));
    } else {
        source.push_str(expr);
    }
    regex::RegexBuilder::new(&source)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| malformed())
}

// ---------------------------------------------------------------------------------------------
// Family PATCH checks

/// Is this `naming_convention` "none" (`{}` or `null`, what a family without one renders)?
pub(crate) fn is_no_naming_convention(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(Map::is_empty)
}

fn unexpected_keys(e: &mut Errors, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            e.push(prop(path, k), "This field was not expected.");
        }
    }
}

fn missing_keys(e: &mut Errors, path: &str, obj: &Map<String, Value>, required: &[&str]) {
    for k in required {
        if !obj.contains_key(*k) {
            e.push(prop(path, k), "This field is missing.");
        }
    }
}

/// Checks a family's `naming_convention` (§5.4) against its attributes; `main_media` is the
/// family's main media attribute once the PATCH is applied.
pub(crate) fn check_naming_convention(
    nc: &Value,
    f: &Family,
    main_media: Option<&str>,
    catalog: &Catalog,
    e: &mut Errors,
) {
    if is_no_naming_convention(nc) {
        return;
    }
    let path = "naming_convention";
    let Some(obj) = nc.as_object() else {
        e.push(path, "This value should be of type array.");
        return;
    };
    missing_keys(
        e,
        path,
        obj,
        &["source", "pattern", "abort_asset_creation_on_error"],
    );
    unexpected_keys(
        e,
        path,
        obj,
        &["source", "pattern", "abort_asset_creation_on_error"],
    );
    if let Some(source) = obj.get("source") {
        let spath = prop(path, "source");
        match source.as_object() {
            None => e.push(&spath, "This value should be of type array."),
            Some(src) => {
                missing_keys(e, &spath, src, &["property", "locale", "channel"]);
                unexpected_keys(e, &spath, src, &["property", "locale", "channel"]);
                let locale = src.get("locale").unwrap_or(&Value::Null);
                let channel = src.get("channel").unwrap_or(&Value::Null);
                if let Some(l) = locale.as_str() {
                    if catalog.locale_idx(l).is_none() {
                        e.push(
                            prop(&spath, "locale"),
                            format!("The locale \"{l}\" is not activated."),
                        );
                    }
                } else if !locale.is_null() {
                    e.push(
                        prop(&spath, "locale"),
                        "This value should be of type string.",
                    );
                }
                if let Some(c) = channel.as_str() {
                    if catalog.channel_idx(c).is_none() {
                        e.push(
                            prop(&spath, "channel"),
                            format!("The channel \"{c}\" does not exist."),
                        );
                    }
                } else if !channel.is_null() {
                    e.push(
                        prop(&spath, "channel"),
                        "This value should be of type string.",
                    );
                }
                match src.get("property") {
                    Some(Value::String(p)) if p == "code" => {}
                    Some(Value::String(p)) => match f.attribute(p) {
                        None => e.push(
                            &spath,
                            format!("The property \"{p}\" does not exist for this asset family"),
                        ),
                        Some(_) if main_media != Some(p.as_str()) => e.push(
                            &spath,
                            "Property must match the code of the attribute defined as main media",
                        ),
                        Some(a) => {
                            let code = &a.code;
                            match (a.value_per_channel, channel.is_null()) {
                                (true, true) => e.push(
                                    &spath,
                                    format!(
                                        "Attribute \"{code}\" is scopable, you must define a channel"
                                    ),
                                ),
                                (false, false) => e.push(
                                    &spath,
                                    format!(
                                        "Attribute \"{code}\" is not scopable, you cannot define a channel"
                                    ),
                                ),
                                _ => {}
                            }
                            match (a.value_per_locale, locale.is_null()) {
                                (true, true) => e.push(
                                    &spath,
                                    format!(
                                        "Attribute \"{code}\" is localizable, you must define a locale"
                                    ),
                                ),
                                (false, false) => e.push(
                                    &spath,
                                    format!(
                                        "Attribute \"{code}\" is not localizable, you cannot define a locale"
                                    ),
                                ),
                                _ => {}
                            }
                        }
                    },
                    Some(Value::Null) | None => {
                        if src.contains_key("property") {
                            e.push(prop(&spath, "property"), "This value should not be null.");
                        }
                    }
                    Some(_) => e.push(
                        prop(&spath, "property"),
                        "This value should be of type string.",
                    ),
                }
            }
        }
    }
    match obj.get("pattern") {
        Some(Value::String(p)) => {
            if let Err(m) = compile_pcre(p) {
                e.push(prop(path, "pattern"), m);
            }
        }
        Some(_) => e.push(
            prop(path, "pattern"),
            "This value should be of type string.",
        ),
        None => {}
    }
    if let Some(a) = obj.get("abort_asset_creation_on_error") {
        if !a.is_boolean() {
            e.push(
                prop(path, "abort_asset_creation_on_error"),
                "This value should be of type bool.",
            );
        }
    }
}

/// The `{{name}}` patterns of a rule value (a string, or strings in an array), trimmed.
fn extrapolations(v: &Value) -> Vec<String> {
    let re = extrapolation_regex();
    let mut out = Vec::new();
    let mut scan = |s: &str| {
        for c in re.captures_iter(s) {
            out.push(c[1].trim().to_owned());
        }
    };
    match v {
        Value::String(s) => scan(s),
        Value::Array(items) => {
            for i in items {
                if let Some(s) = i.as_str() {
                    scan(s);
                }
            }
        }
        _ => {}
    }
    out
}

fn extrapolation_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\{\{(.*?)\}\}").expect("static pattern"))
}

fn type_name(kind: AttributeType) -> String {
    match serde_json::to_value(kind) {
        Ok(Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// `ExtrapolatedAttributeValidator::checkAttribute`: every `{{x}}` in `v` names an existing
/// asset attribute of a supported type with one value (no channel, no locale).
fn check_extrapolated(
    e: &mut Errors,
    path: &str,
    v: &Value,
    f: &Family,
    supported: &[AttributeType],
) {
    for code in extrapolations(v) {
        let Some(a) = f.attribute(&code) else {
            e.push(
                path,
                format!("The attribute \"{code}\" does not exist for this asset family"),
            );
            continue;
        };
        if !supported.contains(&a.kind) {
            let list: Vec<String> = supported.iter().map(|k| type_name(*k)).collect();
            e.push(
                path,
                format!(
                    "The attribute \"{code}\" of type \"{}\" is not supported, only the following attribute types are supported for this field: {}",
                    type_name(a.kind),
                    list.join(", ")
                ),
            );
        }
        if a.value_per_channel {
            e.push(
                path,
                format!("The attribute \"{code}\" cannot be used for extrapolation because it has one value per channel"),
            );
        }
        if a.value_per_locale {
            e.push(
                path,
                format!("The attribute \"{code}\" cannot be used for extrapolation because it has one value per locale"),
            );
        }
    }
}

const TEXTUAL: [AttributeType; 2] = [AttributeType::Text, AttributeType::SingleOption];
const VALUE_TYPES: [AttributeType; 4] = [
    AttributeType::Text,
    AttributeType::SingleOption,
    AttributeType::MultipleOptions,
    AttributeType::Number,
];

/// Fields of a product selection that take neither locale nor channel (§5.5).
const NO_LOCALE_FIELDS: [&str; 3] = ["categories", "family", "enabled"];

/// Operators allowed per kind of selection field (§5.5).
fn operators_for(field: &str, products: &ProductStore) -> Option<&'static [&'static str]> {
    const IDENTIFIER: &[&str] = &[
        "STARTS WITH",
        "CONTAINS",
        "DOES NOT CONTAIN",
        "=",
        "EQUALS",
        "!=",
        "IN",
        "NOT IN",
        "EMPTY",
        "NOT EMPTY",
    ];
    const TEXT: &[&str] = &[
        "STARTS WITH",
        "CONTAINS",
        "DOES NOT CONTAIN",
        "=",
        "EQUALS",
        "!=",
        "EMPTY",
        "NOT EMPTY",
    ];
    const SELECT: &[&str] = &["IN", "NOT IN", "EMPTY", "NOT EMPTY"];
    Some(match field {
        "family" => &["IN", "NOT IN"],
        "categories" => &[
            "IN",
            "NOT IN",
            "IN OR UNCLASSIFIED",
            "IN CHILDREN",
            "NOT IN CHILDREN",
            "UNCLASSIFIED",
        ],
        "enabled" => &["=", "EQUALS"],
        "parent" => &["IN", "EMPTY", "NOT EMPTY"],
        "identifier" => IDENTIFIER,
        f if f == products.identifier_code() => IDENTIFIER,
        f => match products.attribute_of(f)?.kind.as_str() {
            "pim_catalog_simpleselect" | "pim_catalog_multiselect" => SELECT,
            _ => TEXT,
        },
    })
}

/// Checks a family's `product_link_rules` (§5.5): at most two, each with selections and
/// assignments, known operators, assignments to asset collections of this family, valid
/// extrapolations.
pub(crate) fn check_link_rules(
    rules: &Value,
    f: &Family,
    catalog: &Catalog,
    products: &ProductStore,
    e: &mut Errors,
) {
    let Some(list) = rules.as_array() else {
        return; // the format check reports it
    };
    let path = "product_link_rules";
    if list.len() > MAX_LINK_RULES {
        e.push(
            path,
            format!(
                "You have reached the limit of {MAX_LINK_RULES} product link rules for the \"{}\" asset family.",
                f.code
            ),
        );
    }
    for (i, rule) in list.iter().enumerate() {
        let rpath = idx(path, i);
        let Some(rule) = rule.as_object() else {
            e.push(&rpath, "This value should be of type array.");
            continue;
        };
        unexpected_keys(e, &rpath, rule, &["product_selections", "assign_assets_to"]);
        let selections = rule
            .get("product_selections")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty());
        if selections.is_none() {
            e.push(
                prop(&rpath, "product_selections"),
                "You must specify at least one product selection in your product link rule",
            );
        }
        for (j, sel) in selections.into_iter().flatten().enumerate() {
            let spath = idx(&prop(&rpath, "product_selections"), j);
            let Some(sel) = sel.as_object() else {
                e.push(&spath, "This value should be of type array.");
                continue;
            };
            missing_keys(e, &spath, sel, &["field", "operator", "value"]);
            unexpected_keys(
                e,
                &spath,
                sel,
                &["field", "operator", "value", "locale", "channel"],
            );
            let field = sel.get("field").cloned().unwrap_or(Value::Null);
            let Some(field_s) = field.as_str() else {
                if sel.contains_key("field") {
                    e.push(
                        prop(&spath, "field"),
                        "This value should be of type string.",
                    );
                }
                continue;
            };
            check_extrapolated(e, &prop(&spath, "field"), &field, f, &TEXTUAL);
            if let Some(v) = sel.get("value") {
                check_extrapolated(e, &prop(&spath, "value"), v, f, &VALUE_TYPES);
            }
            for key in ["locale", "channel"] {
                let Some(x) = sel.get(key) else { continue };
                if NO_LOCALE_FIELDS.contains(&field_s) {
                    e.push(
                        prop(&spath, key),
                        format!("You cannot specify a {key} for the field \"{field_s}\""),
                    );
                    continue;
                }
                check_locale_or_channel(e, &prop(&spath, key), key, x, f, catalog);
            }
            let operator = sel.get("operator").and_then(Value::as_str);
            if sel.contains_key("operator") && operator.is_none() {
                e.push(
                    prop(&spath, "operator"),
                    "This value should be of type string.",
                );
            }
            if let (Some(op), true) = (operator, extrapolations(&field).is_empty()) {
                match operators_for(field_s, products) {
                    None => e.push(
                        prop(&spath, "field"),
                        format!("The field \"{field_s}\" does not exist"),
                    ),
                    Some(ops) if !ops.contains(&op) => e.push(
                        prop(&spath, "operator"),
                        format!(
                            "The operator \"{op}\" is not supported for the field \"{field_s}\""
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        let assignments = rule
            .get("assign_assets_to")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty());
        if assignments.is_none() {
            e.push(
                prop(&rpath, "assign_assets_to"),
                "You must specify at least one product assignment in your product link rule",
            );
        }
        for (j, asg) in assignments.into_iter().flatten().enumerate() {
            let apath = idx(&prop(&rpath, "assign_assets_to"), j);
            let Some(asg) = asg.as_object() else {
                e.push(&apath, "This value should be of type array.");
                continue;
            };
            missing_keys(e, &apath, asg, &["attribute", "mode"]);
            unexpected_keys(e, &apath, asg, &["attribute", "mode", "locale", "channel"]);
            match asg.get("mode") {
                Some(Value::String(m)) if m == "add" || m == "replace" => {}
                Some(m) => e.push(
                    prop(&apath, "mode"),
                    format!(
                        "Invalid assignment mode \"{}\" found in a product link rule, expected to be \"replace\" or \"add\"",
                        m.as_str().map(str::to_owned).unwrap_or_else(|| m.to_string())
                    ),
                ),
                None => {}
            }
            if let Some(attr) = asg.get("attribute") {
                let apath_attr = prop(&apath, "attribute");
                match attr.as_str() {
                    None => e.push(&apath_attr, "This value should be of type string."),
                    Some(code) if !extrapolations(attr).is_empty() => {
                        let _ = code;
                        check_extrapolated(e, &apath_attr, attr, f, &TEXTUAL);
                    }
                    Some(code) => match products.attribute_of(code) {
                        None => e.push(
                            &apath_attr,
                            format!("product attribute \"{code}\" does not exist"),
                        ),
                        Some(pa) if pa.kind != "pim_catalog_asset_collection" => e.push(
                            &apath_attr,
                            format!(
                                "product attribute \"{code}\" is not an attribute of type asset collection"
                            ),
                        ),
                        Some(pa) if pa.reference_data_name.as_deref() != Some(f.code.as_str()) => {
                            e.push(
                                &apath_attr,
                                format!(
                                    "The product attribute \"{code}\" cannot contain assets of asset family \"{}\"",
                                    f.code
                                ),
                            )
                        }
                        Some(_) => {}
                    },
                }
            }
            for key in ["locale", "channel"] {
                if let Some(x) = asg.get(key) {
                    check_locale_or_channel(e, &prop(&apath, key), key, x, f, catalog);
                }
            }
        }
    }
}

fn check_locale_or_channel(
    e: &mut Errors,
    path: &str,
    key: &str,
    x: &Value,
    f: &Family,
    catalog: &Catalog,
) {
    match x {
        Value::Null => {}
        Value::String(s) if !extrapolations(x).is_empty() => {
            let _ = s;
            check_extrapolated(e, path, x, f, &TEXTUAL);
        }
        Value::String(s) if key == "locale" => {
            if catalog.locale_idx(s).is_none() {
                e.push(
                    path,
                    format!("The locale \"{s}\" is not activated or does not exist"),
                );
            }
        }
        Value::String(s) => {
            if catalog.channel_idx(s).is_none() {
                e.push(path, format!("The channel \"{s}\" does not exist"));
            }
        }
        _ => e.push(path, "This value should be of type string."),
    }
}

// ---------------------------------------------------------------------------------------------
// Naming convention execution

/// One value change to merge into an asset (attribute index, channel, locale, data).
pub(crate) type Change = (u16, u8, u8, Option<Data>);

/// Runs the family's naming convention on an asset being created from `item` (§5.4): the
/// source (the asset code, or the main media value as sent, CE connector
/// `EditAssetCommandFactory`) is matched against the pattern and each non-empty named capture is
/// written to the attribute of that name (no locale, no channel).
///
/// - `abort_asset_creation_on_error: true`: no match, an unknown attribute or a capture the
///   attribute cannot hold refuse the asset with `Error during naming convention execution:
///   <reason>`; `false`: the convention (or that capture) is skipped and the asset created.
/// - Captured values that break the business rules (unknown option, not a number, ...) refuse
///   the asset either way (CE: `The asset data computed with naming convention do not comply
///   with the business rules.`).
pub(crate) fn naming_convention(
    f: &Family,
    catalog: &Catalog,
    media: &super::state::MediaStore,
    item: &Map<String, Value>,
) -> Result<Vec<Change>, Rejected> {
    let nc = &f.naming_convention;
    if is_no_naming_convention(nc) {
        return Ok(Vec::new());
    }
    let abort = nc
        .get("abort_asset_creation_on_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fail = |reason: String| -> Result<Vec<Change>, Rejected> {
        if abort {
            Err(Rejected::Message(format!("{NAMING_ERROR_PREFIX}{reason}")))
        } else {
            Ok(Vec::new())
        }
    };
    let source = nc.get("source").cloned().unwrap_or(Value::Null);
    let property = source.get("property").and_then(Value::as_str).unwrap_or("");
    let source_value: Option<String> = if property == "code" {
        item.get("code").and_then(Value::as_str).map(str::to_owned)
    } else {
        let locale = source.get("locale").cloned().unwrap_or(Value::Null);
        let channel = source.get("channel").cloned().unwrap_or(Value::Null);
        item.get("values")
            .and_then(|v| v.get(property))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|v| {
                v.get("locale").unwrap_or(&Value::Null) == &locale
                    && v.get("channel").unwrap_or(&Value::Null) == &channel
            })
            .and_then(|v| v.get("data"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // No source value: nothing to do (CE returns no command).
    let Some(source_value) = source_value else {
        return Ok(Vec::new());
    };
    let pattern = nc.get("pattern").and_then(Value::as_str).unwrap_or("");
    let re = match compile_pcre(pattern) {
        Ok(re) => re,
        Err(m) => return fail(m),
    };
    let Some(caps) = re.captures(&source_value) else {
        return fail("Naming convention pattern does not match".into());
    };
    let mut changes = Vec::new();
    let mut business = Errors::default();
    for name in re.capture_names().flatten() {
        let Some(m) = caps.name(name) else { continue };
        if m.as_str().is_empty() {
            continue;
        }
        let Some(&ai) = f.attr_index.get(name) else {
            if abort {
                return fail(format!(
                    "Attribute \"{name}\" does not exist for this asset family"
                ));
            }
            continue;
        };
        let a = &f.attributes[ai as usize];
        // A capture is text: attributes whose data is not a string cannot take it.
        if matches!(
            a.kind,
            AttributeType::MultipleOptions | AttributeType::Boolean | AttributeType::MediaFile
        ) {
            if abort {
                return fail(format!(
                    "The attribute \"{name}\" of type \"{}\" cannot receive a value from the naming convention",
                    type_name(a.kind)
                ));
            }
            continue;
        }
        let value = validate::ValueView {
            locale: None,
            channel: None,
            data: validate::DataView::Str(m.as_str()),
        };
        let mut msgs = Vec::new();
        validate::value_business(a, &value, catalog, media, &mut msgs);
        if msgs.is_empty() {
            changes.push((ai, 0, 0, Some(Data::Str(m.as_str().to_owned()))));
        }
        for msg in msgs {
            business.push(prop("values", name), msg);
        }
    }
    if !business.is_empty() {
        return Err(Rejected::NamingBusiness(business));
    }
    Ok(changes)
}

// ---------------------------------------------------------------------------------------------
// Product link rules execution

/// Decrements the pending job count when a job ends, even by a panic.
struct JobGuard(Arc<Shared>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.0.link_jobs.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the product link rules of `family` for the assets just created (`codes`) in a task of
/// its own, after the answer (§5.5: eventually consistent for the client). Nothing is spawned
/// when the family has no rule.
pub(crate) fn spawn_link_rules(s: &Arc<Shared>, family: &str, has_rules: bool, codes: Vec<String>) {
    if codes.is_empty() || !has_rules {
        return;
    }
    s.link_jobs.fetch_add(1, Ordering::SeqCst);
    let guard = JobGuard(s.clone());
    let family = family.to_owned();
    tokio::spawn(async move {
        let guard = guard;
        // Let the handler's answer go out first.
        tokio::task::yield_now().await;
        run_link_rules(&guard.0, &family, &codes);
    });
}

/// Whether a family has product link rules.
pub(crate) fn has_link_rules(f: &Family) -> bool {
    f.product_link_rules
        .as_array()
        .is_some_and(|l| !l.is_empty())
}

/// An asset's values by attribute code, as extrapolations read them.
type Properties = BTreeMap<String, Value>;

/// The asset's values usable in extrapolations: non-localizable, non-scopable values (text,
/// options, numbers...), multiple options as arrays.
fn asset_properties(f: &Family, code: &str) -> Option<Properties> {
    let stored = f.asset(code)?;
    let mut out = BTreeMap::new();
    for v in codec::decode(&stored.values) {
        if v.channel != 0 || v.locale != 0 {
            continue;
        }
        let Some(a) = f.attributes.get(v.attr as usize) else {
            continue;
        };
        let data = match v.data {
            Data::Str(s) => Value::String(s),
            Data::Bool(b) => Value::String(if b { "true" } else { "false" }.into()),
            Data::List(l) => Value::from(l),
        };
        out.insert(a.code.clone(), data);
    }
    Some(out)
}

fn run_link_rules(s: &Shared, family: &str, codes: &[String]) {
    let Some(fam) = s.family(family) else { return };
    let (rules, assets): (Vec<Value>, Vec<(String, Properties)>) = {
        let f = fam.read();
        let rules = f.product_link_rules.as_array().cloned().unwrap_or_default();
        let assets = codes
            .iter()
            .filter_map(|c| asset_properties(&f, c).map(|p| (c.clone(), p)))
            .collect();
        (rules, assets)
    };
    if rules.is_empty() {
        return;
    }
    let now = s.now();
    // Lock order: family (released above), then catalog, then products.
    let catalog = s.catalog.read();
    let mut products = s.products.write();
    for (code, props) in &assets {
        for (i, rule) in rules.iter().enumerate() {
            bump(&s.counters.link_rule_runs);
            match execute_rule(rule, code, props, &mut products, &catalog, now) {
                Ok(changed) => add(&s.counters.products_linked, changed),
                Err(reason) => tracing::debug!(
                    family,
                    asset = %code,
                    rule = i,
                    %reason,
                    "akeneo emulator: product link rule not applied"
                ),
            }
        }
    }
}

/// `ReplacePattern::replace`: `{{x}}` replaced by the asset's value of `x`; a value that is a
/// list replaces the whole string (one pattern only).
fn extrapolate(v: &Value, props: &BTreeMap<String, Value>) -> Result<Value, String> {
    match v {
        Value::String(s) => {
            let re = extrapolation_regex();
            let names: Vec<(String, String)> = re
                .captures_iter(s)
                .map(|c| (c[1].to_owned(), c[1].trim().to_owned()))
                .collect();
            let mut out = s.clone();
            for (raw, name) in &names {
                let value = props
                    .get(name)
                    .ok_or_else(|| format!("The asset property \"{name}\" does not exist"))?;
                match value {
                    Value::Array(_) if names.len() > 1 => {
                        return Err(format!(
                            "The asset property \"{name}\" could not be replaced as his value is an array"
                        ))
                    }
                    Value::Array(_) => return Ok(value.clone()),
                    Value::String(x) => out = out.replace(&format!("{{{{{raw}}}}}"), x),
                    other => out = out.replace(&format!("{{{{{raw}}}}}"), &other.to_string()),
                }
            }
            Ok(Value::String(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for i in items {
                match extrapolate(i, props)? {
                    Value::Array(inner) => out.extend(inner),
                    x => out.push(x),
                }
            }
            Ok(Value::Array(out))
        }
        other => Ok(other.clone()),
    }
}

/// One condition of a product selection, extrapolated.
struct Condition {
    field: String,
    operator: String,
    value: Value,
    locale: Option<String>,
    scope: Option<String>,
}

fn as_opt_string(v: Option<Value>) -> Option<String> {
    v.and_then(|v| v.as_str().map(str::to_owned))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                x => Some(x.to_string()),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => vec![],
        x => vec![x.to_string()],
    }
}

fn text_holds(op: &str, data: Option<&str>, value: &Value) -> bool {
    let want = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        x => x.to_string(),
    };
    let empty = data.is_none_or(str::is_empty);
    let d = data.unwrap_or("");
    match op {
        "=" | "EQUALS" => !empty && d == want,
        "!=" => d != want,
        "STARTS WITH" => !empty && d.starts_with(&want),
        "CONTAINS" => !empty && d.contains(&want),
        "DOES NOT CONTAIN" => !d.contains(&want) || empty,
        "IN" => !empty && strings(value).iter().any(|v| v == d),
        "NOT IN" => !strings(value).iter().any(|v| v == d),
        "EMPTY" => empty,
        "NOT EMPTY" => !empty,
        _ => false,
    }
}

fn holds(
    c: &Condition,
    identifier: Option<&str>,
    doc: &Map<String, Value>,
    products: &ProductStore,
) -> bool {
    let op = c.operator.as_str();
    match c.field.as_str() {
        "family" => {
            let fam = doc.get("family").and_then(Value::as_str);
            let list = strings(&c.value);
            let inside = fam.is_some_and(|f| list.iter().any(|x| x == f));
            match op {
                "IN" => inside,
                "NOT IN" => !inside,
                _ => false,
            }
        }
        "categories" => {
            let cats = strings(doc.get("categories").unwrap_or(&Value::Null));
            let list = strings(&c.value);
            let any = cats.iter().any(|x| list.contains(x));
            match op {
                // Category trees are not modelled: a category's children are not known.
                "IN" | "IN CHILDREN" => any,
                "NOT IN" | "NOT IN CHILDREN" => !any,
                "IN OR UNCLASSIFIED" => any || cats.is_empty(),
                "UNCLASSIFIED" => cats.is_empty(),
                _ => false,
            }
        }
        "enabled" => {
            let enabled = doc.get("enabled").and_then(Value::as_bool).unwrap_or(true);
            let want = match &c.value {
                Value::Bool(b) => *b,
                Value::String(s) => s == "true",
                _ => return false,
            };
            matches!(op, "=" | "EQUALS") && enabled == want
        }
        "parent" => {
            let parent = doc.get("parent").and_then(Value::as_str);
            match op {
                "EMPTY" => parent.is_none(),
                "NOT EMPTY" => parent.is_some(),
                "IN" => parent.is_some_and(|p| strings(&c.value).iter().any(|x| x == p)),
                _ => false,
            }
        }
        f if f == "identifier" || f == products.identifier_code() => {
            text_holds(op, identifier, &c.value)
        }
        f => {
            let Some(attr) = products.attribute_of(f) else {
                return false;
            };
            let data = doc
                .get("values")
                .and_then(|v| v.get(f))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| {
                    v.get("locale").and_then(Value::as_str) == c.locale.as_deref()
                        && v.get("scope").and_then(Value::as_str) == c.scope.as_deref()
                })
                .and_then(|v| v.get("data"))
                .cloned()
                .unwrap_or(Value::Null);
            match attr.kind.as_str() {
                "pim_catalog_simpleselect" | "pim_catalog_multiselect" => {
                    let have = strings(&data);
                    let list = strings(&c.value);
                    let any = have.iter().any(|h| list.contains(h));
                    match op {
                        "IN" => any,
                        "NOT IN" => !any,
                        "EMPTY" => have.is_empty(),
                        "NOT EMPTY" => !have.is_empty(),
                        _ => false,
                    }
                }
                _ => {
                    let text = match &data {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        x => Some(x.to_string()),
                    };
                    text_holds(op, text.as_deref(), &c.value)
                }
            }
        }
    }
}

/// Runs one rule for one created asset; returns the number of product values changed.
fn execute_rule(
    rule: &Value,
    asset_code: &str,
    props: &BTreeMap<String, Value>,
    products: &mut ProductStore,
    catalog: &Catalog,
    now: i64,
) -> Result<u64, String> {
    let mut conditions = Vec::new();
    for sel in rule
        .get("product_selections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = extrapolate(sel.get("field").unwrap_or(&Value::Null), props)?;
        let value = extrapolate(sel.get("value").unwrap_or(&Value::Null), props)?;
        let locale = sel
            .get("locale")
            .map(|l| extrapolate(l, props))
            .transpose()?;
        let channel = sel
            .get("channel")
            .map(|l| extrapolate(l, props))
            .transpose()?;
        conditions.push(Condition {
            field: field.as_str().unwrap_or_default().to_owned(),
            operator: sel
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            value,
            locale: as_opt_string(locale),
            scope: as_opt_string(channel),
        });
    }
    if conditions.is_empty() {
        return Err("the rule has no product selection".into());
    }
    // Candidates: by identifier when a condition names them, else every product.
    let id_field = products.identifier_code().to_owned();
    let by_id = conditions.iter().find_map(|c| {
        let on_id = c.field == "identifier" || c.field == id_field;
        match (on_id, c.operator.as_str()) {
            (true, "=" | "EQUALS" | "IN") => Some(strings(&c.value)),
            _ => None,
        }
    });
    let candidates: Vec<(String, Option<String>, Map<String, Value>)> = match by_id {
        Some(ids) => ids
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|id| {
                let uuid = products.uuid_by_identifier(id)?.to_owned();
                let (identifier, doc) = products.document(&uuid)?;
                Some((uuid, identifier, doc))
            })
            .collect(),
        None => products.documents(),
    };
    let selected: Vec<(String, Map<String, Value>)> = candidates
        .into_iter()
        .filter(|(_, identifier, doc)| {
            conditions
                .iter()
                .all(|c| holds(c, identifier.as_deref(), doc, products))
        })
        .map(|(u, _, d)| (u, d))
        .collect();
    let mut changed = 0u64;
    for asg in rule
        .get("assign_assets_to")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let attribute = extrapolate(asg.get("attribute").unwrap_or(&Value::Null), props)?;
        let attribute = attribute.as_str().unwrap_or_default().to_owned();
        let locale = as_opt_string(
            asg.get("locale")
                .map(|l| extrapolate(l, props))
                .transpose()?,
        );
        let scope = as_opt_string(
            asg.get("channel")
                .map(|l| extrapolate(l, props))
                .transpose()?,
        );
        let replace = asg.get("mode").and_then(Value::as_str) == Some("replace");
        if products
            .attribute_of(&attribute)
            .is_none_or(|a| a.kind != "pim_catalog_asset_collection")
        {
            return Err(format!(
                "product attribute \"{attribute}\" is not an asset collection"
            ));
        }
        for (uuid, doc) in &selected {
            let current = doc
                .get("values")
                .and_then(|v| v.get(&attribute))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| {
                    v.get("locale").and_then(Value::as_str) == locale.as_deref()
                        && v.get("scope").and_then(Value::as_str) == scope.as_deref()
                })
                .map(|v| strings(v.get("data").unwrap_or(&Value::Null)))
                .unwrap_or_default();
            let next: Vec<String> = if replace {
                vec![asset_code.to_owned()]
            } else if current.iter().any(|c| c == asset_code) {
                current.clone()
            } else {
                let mut n = current.clone();
                n.push(asset_code.to_owned());
                n
            };
            if next == current {
                continue;
            }
            let patch = json!({"values": {attribute.clone(): [
                {"locale": locale, "scope": scope, "data": next}
            ]}});
            let patch = patch.as_object().expect("object");
            if products.link_update(uuid, patch, catalog, now)? {
                changed += 1;
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_delimiters_and_flags() {
        let re = compile_pcre("/(?P<product_ref>.*)-.*/").unwrap();
        let c = re.captures("shirt-front").unwrap();
        assert_eq!(&c["product_ref"], "shirt");
        let re = compile_pcre("#^(?P<sku>[a-z]+)_\\d+$#i").unwrap();
        assert_eq!(&re.captures("ABC_12").unwrap()["sku"], "ABC");
        let re = compile_pcre("{^a/b}").unwrap();
        assert!(re.is_match("a/b"));
        let re = compile_pcre("/b/A").unwrap();
        assert!(!re.is_match("ab"));
        assert!(re.is_match("ba"));
        assert!(compile_pcre("/\\/x/").unwrap().is_match("/x"));
        for bad in ["", "abc", "/unclosed", "/x/q", "/(/", "/(?<=a)b/", "\\x\\"] {
            assert_eq!(
                compile_pcre(bad).unwrap_err(),
                format!("The regular expression \"{bad}\" is malformed."),
                "{bad}"
            );
        }
    }

    #[test]
    fn extrapolation_replaces_values_and_lists() {
        let props: BTreeMap<String, Value> = [
            ("ref".to_owned(), json!("SKU_1")),
            ("color".to_owned(), json!("red")),
            ("tags".to_owned(), json!(["a", "b"])),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            extrapolate(&json!("{{ref}}"), &props).unwrap(),
            json!("SKU_1")
        );
        assert_eq!(
            extrapolate(&json!("x_{{ ref }}_{{color}}"), &props).unwrap(),
            json!("x_SKU_1_red")
        );
        assert_eq!(
            extrapolate(&json!("{{tags}}"), &props).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            extrapolate(&json!(["{{ref}}", "other"]), &props).unwrap(),
            json!(["SKU_1", "other"])
        );
        assert!(extrapolate(&json!("{{tags}}_{{ref}}"), &props).is_err());
        assert_eq!(
            extrapolate(&json!("{{nope}}"), &props).unwrap_err(),
            "The asset property \"nope\" does not exist"
        );
    }
}
