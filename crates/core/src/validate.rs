//! Checks an asset's values against its family structure before anything is sent to the PIM.
//!
//! Akeneo refuses an asset whose values don't fit the family (a locale on a non-localizable
//! attribute, an unknown option, a number that is not a numeric string, a text longer than the
//! attribute allows, ...). Checking locally makes bad data fail early, without a PIM call, and with
//! a reason that names the attribute, locale and channel. The checks only use what
//! [`FamilyStructure`] knows: whether a locale or channel is *activated* in the PIM is left to the
//! PIM.
//!
//! `data: null` erases that (locale, channel) value in Akeneo and is accepted, except for a
//! `multiple_options` attribute, whose data Akeneo takes as an array only (`[]` erases it).

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::asset::PimAsset;
use crate::structure::{AttributeType, FamilyStructure};

/// What kind of problem a [`ValueViolation`] is (lets callers act on some kinds, e.g. create
/// missing options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ViolationKind {
    /// The asset code breaks Akeneo's rule (non-empty, ≤ 255 chars, `^[a-zA-Z0-9_]+$`).
    InvalidCode,
    /// The family has no attribute with this code.
    UnknownAttribute,
    /// A locale is given for an attribute that has no value per locale.
    LocaleNotAllowed,
    /// No locale is given for an attribute that has a value per locale.
    LocaleMissing,
    /// A channel is given for an attribute that has no value per channel.
    ChannelNotAllowed,
    /// No channel is given for an attribute that has a value per channel.
    ChannelMissing,
    /// Two values of the attribute have the same locale and channel.
    DuplicateValue,
    /// `data` has the wrong JSON type for the attribute type.
    WrongDataType,
    /// An option code the attribute does not have.
    UnknownOption { option: String },
    /// A text longer than `max_characters`.
    TooLong,
    /// A number attribute value that is not a numeric string.
    NotANumber,
    /// A number with decimals where the attribute allows none.
    DecimalsNotAllowed,
    /// A number below `min_value` or above `max_value`.
    OutOfRange,
    /// A media file whose extension is not in `allowed_extensions`.
    ExtensionNotAllowed,
    /// A date that is not an ISO 8601 date.
    InvalidDate,
    /// The attribute cannot be written through the API (`auto_tagging`).
    ReadOnly,
}

/// One reason an asset does not fit its family structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueViolation {
    /// The attribute code (`"code"` for a problem with the asset code itself).
    pub attribute: String,
    /// The value's locale, if it has one.
    pub locale: Option<String>,
    /// The value's channel, if it has one.
    pub channel: Option<String>,
    /// What kind of problem this is.
    #[serde(flatten)]
    pub kind: ViolationKind,
    /// A human-readable explanation.
    pub message: String,
}

impl fmt::Display for ValueViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attribute `{}` (locale {}, channel {}): {}",
            self.attribute,
            self.locale.as_deref().unwrap_or("none"),
            self.channel.as_deref().unwrap_or("none"),
            self.message
        )
    }
}

/// Whether `code` is a valid Akeneo code (asset, option, family): non-empty, at most 255
/// characters, only ASCII letters, digits and underscores.
pub fn is_valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 255
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks `asset` against `structure`; an empty result means the asset fits.
///
/// Every value is checked (the result lists all problems, not only the first): unknown
/// attributes, locale/channel presence against `value_per_locale` / `value_per_channel`, duplicate
/// (locale, channel) pairs, data types, option codes (when the structure knows the options), text
/// length, numeric strings, decimals, min/max, media file extensions, dates, read-only attributes,
/// and the asset code itself.
pub fn validate_asset(asset: &PimAsset, structure: &FamilyStructure) -> Vec<ValueViolation> {
    let mut out = Vec::new();
    if !is_valid_code(&asset.code) {
        out.push(ValueViolation {
            attribute: "code".into(),
            locale: None,
            channel: None,
            kind: ViolationKind::InvalidCode,
            message: format!(
                "Asset code may contain only letters, numbers and underscores (1 to 255 characters). \"{}\" given",
                asset.code
            ),
        });
    }
    let mut seen: Vec<(Option<&str>, Option<&str>)> = Vec::new();
    for (code, values) in &asset.values {
        let Some(attribute) = structure.attribute(code) else {
            out.push(ValueViolation {
                attribute: code.clone(),
                locale: None,
                channel: None,
                kind: ViolationKind::UnknownAttribute,
                message: format!(
                    "attribute `{code}` does not exist in asset family `{}`",
                    structure.code
                ),
            });
            continue;
        };
        // (locale, channel) pairs seen so far: an attribute has a handful of values at most,
        // so a list of borrowed pairs beats a set of cloned ones.
        seen.clear();
        for value in values {
            let mut push = |kind: ViolationKind, message: String| {
                out.push(ValueViolation {
                    attribute: code.clone(),
                    locale: value.locale.clone(),
                    channel: value.channel.clone(),
                    kind,
                    message,
                })
            };
            if attribute.kind == AttributeType::AutoTagging {
                push(
                    ViolationKind::ReadOnly,
                    "auto_tagging attributes are read-only".into(),
                );
                continue;
            }
            match (&value.locale, attribute.value_per_locale) {
                (Some(l), false) => push(
                    ViolationKind::LocaleNotAllowed,
                    format!("the attribute has no value per locale, but locale `{l}` is given"),
                ),
                (None, true) => push(
                    ViolationKind::LocaleMissing,
                    "the attribute has a value per locale, but no locale is given".into(),
                ),
                _ => {}
            }
            match (&value.channel, attribute.value_per_channel) {
                (Some(c), false) => push(
                    ViolationKind::ChannelNotAllowed,
                    format!("the attribute has no value per channel, but channel `{c}` is given"),
                ),
                (None, true) => push(
                    ViolationKind::ChannelMissing,
                    "the attribute has a value per channel, but no channel is given".into(),
                ),
                _ => {}
            }
            let pair = (value.locale.as_deref(), value.channel.as_deref());
            if seen.contains(&pair) {
                push(
                    ViolationKind::DuplicateValue,
                    "more than one value for the same locale and channel".into(),
                );
            } else {
                seen.push(pair);
            }
            // `null` erases a value, except of multiple options: Akeneo's schema for them
            // takes an array only (`[]` erases).
            if value.data.is_null() && attribute.kind != AttributeType::MultipleOptions {
                continue;
            }
            check_data(attribute, &value.data, &mut push);
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_data(
    attribute: &crate::structure::AssetAttribute,
    data: &Value,
    push: &mut impl FnMut(ViolationKind, String),
) {
    let wrong = |expected: &str, push: &mut dyn FnMut(ViolationKind, String)| {
        push(
            ViolationKind::WrongDataType,
            format!(
                "{} attribute expects {expected} as data, {} given",
                kind_name(attribute.kind),
                type_name(data)
            ),
        )
    };
    match attribute.kind {
        AttributeType::Text => {
            let Some(s) = data.as_str() else {
                return wrong("a string", push);
            };
            if let Some(max) = attribute.max_characters {
                let n = s.chars().count();
                if n > max as usize {
                    push(
                        ViolationKind::TooLong,
                        format!("text is {n} characters long, more than the {max} allowed"),
                    );
                }
            }
        }
        AttributeType::MediaLink | AttributeType::Record => {
            if !data.is_string() {
                wrong("a string", push);
            }
        }
        AttributeType::MediaFile => {
            let Some(s) = data.as_str() else {
                return wrong("a string (a media file code)", push);
            };
            if let Some(allowed) = attribute
                .allowed_extensions
                .as_ref()
                .filter(|a| !a.is_empty())
            {
                let name = s.rsplit('/').next().unwrap_or(s);
                let ext = name
                    .rsplit_once('.')
                    .map(|(_, e)| e.to_ascii_lowercase())
                    .unwrap_or_default();
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&ext)) {
                    push(
                        ViolationKind::ExtensionNotAllowed,
                        format!(
                            "file extension `{ext}` is not allowed (allowed: {})",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
        AttributeType::Number => {
            let Some(s) = data.as_str() else {
                return wrong("a numeric string", push);
            };
            check_number(attribute, s, push);
        }
        AttributeType::SingleOption => {
            let Some(s) = data.as_str() else {
                return wrong("an option code string", push);
            };
            check_option(attribute, s, push);
        }
        AttributeType::MultipleOptions => {
            let Some(items) = data.as_array() else {
                return wrong("an array of option codes", push);
            };
            for item in items {
                match item.as_str() {
                    Some(s) => check_option(attribute, s, push),
                    None => push(
                        ViolationKind::WrongDataType,
                        format!(
                            "multiple_options attribute expects option code strings, {} given in the array",
                            type_name(item)
                        ),
                    ),
                }
            }
        }
        AttributeType::Boolean => {
            if !data.is_boolean() {
                wrong("a boolean", push);
            }
        }
        AttributeType::Date => {
            let Some(s) = data.as_str() else {
                return wrong("an ISO 8601 date string", push);
            };
            let ok = chrono::DateTime::parse_from_rfc3339(s).is_ok()
                || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
            if !ok {
                push(
                    ViolationKind::InvalidDate,
                    format!("`{s}` is not an ISO 8601 date (e.g. 2023-03-01T00:00:00+00:00)"),
                );
            }
        }
        AttributeType::AutoTagging | AttributeType::Unknown => {}
    }
}

fn kind_name(kind: AttributeType) -> &'static str {
    match kind {
        AttributeType::Text => "text",
        AttributeType::MediaLink => "media_link",
        AttributeType::Number => "number",
        AttributeType::MediaFile => "media_file",
        AttributeType::SingleOption => "single_option",
        AttributeType::MultipleOptions => "multiple_options",
        AttributeType::Boolean => "boolean",
        AttributeType::Date => "date",
        AttributeType::Record => "record",
        AttributeType::AutoTagging => "auto_tagging",
        AttributeType::Unknown => "unknown",
    }
}

fn check_option(
    attribute: &crate::structure::AssetAttribute,
    code: &str,
    push: &mut impl FnMut(ViolationKind, String),
) {
    if let Some(options) = &attribute.options {
        if !options.contains(code) {
            push(
                ViolationKind::UnknownOption {
                    option: code.to_owned(),
                },
                format!(
                    "option `{code}` does not exist for attribute `{}`",
                    attribute.code
                ),
            );
        }
    }
}

/// A numeric string as Akeneo accepts it: optional minus sign, digits, optional fraction.
fn parse_numeric(s: &str) -> Option<(f64, bool)> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let has_decimals = frac.is_some_and(|f| f.bytes().any(|b| b != b'0'));
    s.parse::<f64>().ok().map(|v| (v, has_decimals))
}

fn check_number(
    attribute: &crate::structure::AssetAttribute,
    s: &str,
    push: &mut impl FnMut(ViolationKind, String),
) {
    let Some((v, has_decimals)) = parse_numeric(s) else {
        push(
            ViolationKind::NotANumber,
            format!("`{s}` is not a numeric string"),
        );
        return;
    };
    if attribute.decimals_allowed == Some(false) && has_decimals {
        push(
            ViolationKind::DecimalsNotAllowed,
            format!("`{s}` has decimals, the attribute allows none"),
        );
    }
    let bound = |b: &Option<String>| {
        b.as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .and_then(|b| b.parse::<f64>().ok())
    };
    if let Some(min) = bound(&attribute.min_value) {
        if v < min {
            push(
                ViolationKind::OutOfRange,
                format!("`{s}` is less than the minimum {min}"),
            );
        }
    }
    if let Some(max) = bound(&attribute.max_value) {
        if v > max {
            push(
                ViolationKind::OutOfRange,
                format!("`{s}` is greater than the maximum {max}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::PimValue;
    use crate::structure::AssetAttribute;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn structure() -> FamilyStructure {
        let mut attrs = BTreeMap::new();
        let mut title = AssetAttribute::new("title", AttributeType::Text);
        title.value_per_locale = true;
        title.max_characters = Some(5);
        let mut width = AssetAttribute::new("width", AttributeType::Number);
        width.decimals_allowed = Some(false);
        width.min_value = Some("0".into());
        width.max_value = Some("1000".into());
        let mut color = AssetAttribute::new("color", AttributeType::SingleOption);
        color.options = Some(["red".to_string(), "blue".to_string()].into());
        let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
        tags.options = Some(["a".to_string()].into());
        tags.value_per_channel = true;
        let mut media = AssetAttribute::new("media", AttributeType::MediaFile);
        media.allowed_extensions = Some(vec!["jpg".into(), "png".into()]);
        for a in [
            title,
            width,
            color,
            tags,
            media,
            AssetAttribute::new("flag", AttributeType::Boolean),
            AssetAttribute::new("when", AttributeType::Date),
            AssetAttribute::new("auto", AttributeType::AutoTagging),
        ] {
            attrs.insert(a.code.clone(), a);
        }
        FamilyStructure {
            code: "packshots".into(),
            attribute_as_main_media: None,
            attributes: attrs,
        }
    }

    fn v(locale: Option<&str>, channel: Option<&str>, data: Value) -> PimValue {
        PimValue {
            locale: locale.map(Into::into),
            channel: channel.map(Into::into),
            data,
        }
    }

    fn kinds(asset: &PimAsset) -> Vec<(String, ViolationKind)> {
        validate_asset(asset, &structure())
            .into_iter()
            .map(|v| (v.attribute, v.kind))
            .collect()
    }

    #[test]
    fn a_valid_asset_has_no_violations() {
        let mut a = PimAsset::new("ok_1");
        a.push_value("title", v(Some("en_US"), None, json!("Hello")));
        a.push_value("width", v(None, None, json!("640")));
        a.push_value("color", v(None, None, json!("red")));
        a.push_value("tags", v(None, Some("ecommerce"), json!(["a"])));
        a.push_value("media", v(None, None, json!("1/2/3/4/abc_house.JPG")));
        a.push_value("flag", v(None, None, json!(true)));
        a.push_value("when", v(None, None, json!("2023-03-01T00:00:00+00:00")));
        a.push_value("width", v(None, None, Value::Null));
        assert_eq!(validate_asset(&a, &structure()), vec![]);
    }

    #[test]
    fn multiple_options_are_erased_with_an_empty_array_not_null() {
        let mut a = PimAsset::new("x");
        a.push_value("tags", v(None, Some("ecommerce"), json!([])));
        assert_eq!(validate_asset(&a, &structure()), vec![]);
        let mut a = PimAsset::new("x");
        a.push_value("tags", v(None, Some("ecommerce"), Value::Null));
        assert_eq!(
            kinds(&a),
            vec![("tags".to_owned(), ViolationKind::WrongDataType)]
        );
    }

    #[test]
    fn locale_and_channel_rules() {
        let mut a = PimAsset::new("x");
        a.push_value("title", v(None, Some("print"), json!("Hi")));
        a.push_value("tags", v(Some("en_US"), None, json!([])));
        let k = kinds(&a);
        assert!(k.contains(&("title".into(), ViolationKind::LocaleMissing)));
        assert!(k.contains(&("title".into(), ViolationKind::ChannelNotAllowed)));
        assert!(k.contains(&("tags".into(), ViolationKind::LocaleNotAllowed)));
        assert!(k.contains(&("tags".into(), ViolationKind::ChannelMissing)));
        let msg = validate_asset(&a, &structure())
            .into_iter()
            .find(|v| v.kind == ViolationKind::ChannelNotAllowed)
            .unwrap()
            .to_string();
        assert!(
            msg.contains("`title`") && msg.contains("channel print"),
            "{msg}"
        );
    }

    #[test]
    fn data_checks() {
        let mut a = PimAsset::new("bad-code");
        a.push_value("title", v(Some("en_US"), None, json!("too long")));
        a.push_value("width", v(None, None, json!(640)));
        a.push_value("color", v(None, None, json!("green")));
        a.push_value("tags", v(None, Some("e"), json!(["a", "b", 3])));
        a.push_value("media", v(None, None, json!("1/2/abc_doc.pdf")));
        a.push_value("flag", v(None, None, json!("yes")));
        a.push_value("when", v(None, None, json!("yesterday")));
        a.push_value("nope", v(None, None, json!("x")));
        a.push_value("auto", v(None, None, json!(["x"])));
        let k = kinds(&a);
        let expect = [
            ("code", ViolationKind::InvalidCode),
            ("title", ViolationKind::TooLong),
            ("width", ViolationKind::WrongDataType),
            (
                "color",
                ViolationKind::UnknownOption {
                    option: "green".into(),
                },
            ),
            ("tags", ViolationKind::UnknownOption { option: "b".into() }),
            ("tags", ViolationKind::WrongDataType),
            ("media", ViolationKind::ExtensionNotAllowed),
            ("flag", ViolationKind::WrongDataType),
            ("when", ViolationKind::InvalidDate),
            ("nope", ViolationKind::UnknownAttribute),
            ("auto", ViolationKind::ReadOnly),
        ];
        for (attr, kind) in &expect {
            assert!(
                k.contains(&(attr.to_string(), kind.clone())),
                "{attr} {kind:?} in {k:?}"
            );
        }
        assert_eq!(k.len(), expect.len(), "{k:?}");
    }

    #[test]
    fn number_checks() {
        for (data, kind) in [
            ("12.5", Some(ViolationKind::DecimalsNotAllowed)),
            ("12.0", None),
            ("-1", Some(ViolationKind::OutOfRange)),
            ("1001", Some(ViolationKind::OutOfRange)),
            ("1e3", Some(ViolationKind::NotANumber)),
            ("", Some(ViolationKind::NotANumber)),
            (" 1", Some(ViolationKind::NotANumber)),
            ("1000", None),
        ] {
            let mut a = PimAsset::new("n");
            a.push_value("width", v(None, None, json!(data)));
            let k: Vec<_> = kinds(&a).into_iter().map(|(_, k)| k).collect();
            assert_eq!(k, kind.into_iter().collect::<Vec<_>>(), "{data}");
        }
    }

    #[test]
    fn duplicate_values_are_reported() {
        let mut a = PimAsset::new("d");
        a.values.insert(
            "title".into(),
            vec![
                v(Some("en_US"), None, json!("a")),
                v(Some("en_US"), None, json!("b")),
            ],
        );
        assert_eq!(
            kinds(&a),
            vec![("title".to_string(), ViolationKind::DuplicateValue)]
        );
    }

    #[test]
    fn codes() {
        assert!(is_valid_code("abc_DEF_123"));
        assert!(!is_valid_code(""));
        assert!(!is_valid_code("a-b"));
        assert!(!is_valid_code(&"a".repeat(256)));
        assert!(is_valid_code(&"a".repeat(255)));
    }
}
