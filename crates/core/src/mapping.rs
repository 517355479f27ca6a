//! DAM → PIM mapping: how one DAM asset becomes one Akeneo asset of a family.
//!
//! A [`FamilyMapping`] is configuration (deserialised from the `[[families]]` tables of the config
//! file); [`CompiledMapping`] is the same with its templates parsed and, when the family
//! structure is known, each rule checked against it. Mapping is a pure function of the DAM
//! record.
//!
//! Each [`ValueRule`] fills one (attribute, locale, channel) value from exactly one source:
//! - `from`: a JSON pointer into the DAM record (`/metadata/title`);
//! - `template`: a minijinja template over the record (`{{ metadata.title | upper }}`);
//! - `value`: a constant.
//!
//! `default` is used when the source yields nothing (missing or `null`); with no default the
//! value is sent as `null`, which erases it in Akeneo, so a field removed in the DAM is removed in
//! the PIM too.
//!
//! When the family structure is known, data is coerced to the attribute's type: text and number
//! become strings, booleans are parsed, option codes are sanitised, multiple options become
//! arrays, and a `media_link` URL loses the attribute's `prefix`/`suffix` (Akeneo stores only the
//! part between them).

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::code::sanitize_code;
use crate::structure::{AttributeType, FamilyStructure};
use crate::{DamAsset, PimAsset, PimValue};

/// Default asset-code template: the DAM id.
pub const DEFAULT_ASSET_CODE_TEMPLATE: &str = "{{ dam_id }}";

fn default_asset_code() -> String {
    DEFAULT_ASSET_CODE_TEMPLATE.to_owned()
}

/// The mapping of one asset family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyMapping {
    /// Template of the asset code; the result is sanitised (see [`crate::code`]).
    /// Default: `{{ dam_id }}`.
    #[serde(default = "default_asset_code")]
    pub asset_code: String,
    /// One rule per (attribute, locale, channel) value.
    #[serde(default)]
    pub values: Vec<ValueRule>,
}

/// One mapped value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Akeneo attribute code.
    pub attribute: String,
    /// JSON pointer into the DAM record.
    #[serde(default)]
    pub from: Option<String>,
    /// minijinja template rendered over the DAM record.
    #[serde(default)]
    pub template: Option<String>,
    /// A constant.
    #[serde(default)]
    pub value: Option<Value>,
    /// Used when the source yields nothing.
    #[serde(default)]
    pub default: Option<Value>,
    /// Locale of the value (only for attributes with `value_per_locale`).
    #[serde(default)]
    pub locale: Option<String>,
    /// Channel of the value (only for attributes with `value_per_channel`).
    #[serde(default)]
    pub channel: Option<String>,
}

/// Why a mapping could not be built or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", attribute.as_ref().map(|a| format!("attribute `{a}`: ")).unwrap_or_default())]
pub struct MappingError {
    /// The attribute concerned (`None` for the asset code).
    pub attribute: Option<String>,
    pub message: String,
}

impl MappingError {
    fn new(attribute: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            attribute: attribute.map(str::to_owned),
            message: message.into(),
        }
    }
}

#[derive(Debug)]
enum Source {
    Pointer(String),
    Template(String),
    Constant(Value),
}

#[derive(Debug)]
struct CompiledRule {
    attribute: String,
    source: Source,
    default: Option<Value>,
    locale: Option<String>,
    channel: Option<String>,
    kind: Option<AttributeType>,
    prefix: Option<String>,
    suffix: Option<String>,
}

/// A family mapping ready to apply.
#[derive(Debug)]
pub struct CompiledMapping {
    env: Environment<'static>,
    rules: Vec<CompiledRule>,
}

const CODE_TEMPLATE: &str = "__asset_code";

impl CompiledMapping {
    /// Parses the templates and, when `structure` is given, checks every rule against the
    /// family: the attribute exists, a locale is given exactly when the attribute is localizable,
    /// a channel exactly when it is scopable.
    pub fn new(
        mapping: &FamilyMapping,
        structure: Option<&FamilyStructure>,
    ) -> Result<Self, MappingError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned(CODE_TEMPLATE, mapping.asset_code.clone())
            .map_err(|e| MappingError::new(None, format!("asset_code template: {e}")))?;
        let mut rules = Vec::with_capacity(mapping.values.len());
        for (i, r) in mapping.values.iter().enumerate() {
            let attr = Some(r.attribute.as_str());
            let sources = [r.from.is_some(), r.template.is_some(), r.value.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if sources != 1 {
                return Err(MappingError::new(
                    attr,
                    "give exactly one of `from`, `template` or `value`",
                ));
            }
            let source = if let Some(p) = &r.from {
                if !(p.is_empty() || p.starts_with('/')) {
                    return Err(MappingError::new(
                        attr,
                        format!("`from` must be a JSON pointer starting with `/`, got `{p}`"),
                    ));
                }
                Source::Pointer(p.clone())
            } else if let Some(t) = &r.template {
                let name = format!("__value_{i}");
                env.add_template_owned(name.clone(), t.clone())
                    .map_err(|e| MappingError::new(attr, format!("template: {e}")))?;
                Source::Template(name)
            } else {
                Source::Constant(r.value.clone().unwrap_or(Value::Null))
            };
            let (mut kind, mut prefix, mut suffix) = (None, None, None);
            if let Some(s) = structure {
                let a = s.attribute(&r.attribute).ok_or_else(|| {
                    MappingError::new(
                        attr,
                        format!("the asset family `{}` has no such attribute", s.code),
                    )
                })?;
                match (a.value_per_locale, &r.locale) {
                    (true, None) => {
                        return Err(MappingError::new(
                            attr,
                            "the attribute is localizable: give a `locale`",
                        ))
                    }
                    (false, Some(l)) => {
                        return Err(MappingError::new(
                            attr,
                            format!("the attribute is not localizable, but locale `{l}` is given"),
                        ))
                    }
                    _ => {}
                }
                match (a.value_per_channel, &r.channel) {
                    (true, None) => {
                        return Err(MappingError::new(
                            attr,
                            "the attribute is scopable: give a `channel`",
                        ))
                    }
                    (false, Some(c)) => {
                        return Err(MappingError::new(
                            attr,
                            format!("the attribute is not scopable, but channel `{c}` is given"),
                        ))
                    }
                    _ => {}
                }
                kind = Some(a.kind);
                prefix = a.prefix.clone().filter(|p| !p.is_empty());
                suffix = a.suffix.clone().filter(|p| !p.is_empty());
            }
            rules.push(CompiledRule {
                attribute: r.attribute.clone(),
                source,
                default: r.default.clone(),
                locale: r.locale.clone(),
                channel: r.channel.clone(),
                kind,
                prefix,
                suffix,
            });
        }
        Ok(Self { env, rules })
    }

    fn context(asset: &DamAsset) -> minijinja::Value {
        let record = minijinja::Value::from_serialize(&asset.record);
        minijinja::context! {
            dam_id => asset.id.as_str(),
            dam_updated => asset.updated_at.to_rfc3339(),
            ..record
        }
    }

    /// The sanitised asset code of a DAM asset.
    pub fn asset_code(&self, asset: &DamAsset) -> Result<String, MappingError> {
        let ctx = Self::context(asset);
        self.code_in(&ctx)
    }

    fn code_in(&self, ctx: &minijinja::Value) -> Result<String, MappingError> {
        let raw = self
            .env
            .get_template(CODE_TEMPLATE)
            .and_then(|t| t.render(ctx))
            .map_err(|e| MappingError::new(None, format!("asset_code template: {e}")))?;
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(MappingError::new(
                None,
                "the asset_code template rendered an empty string",
            ));
        }
        Ok(sanitize_code(raw))
    }

    /// Maps a DAM asset to the PIM asset to write.
    pub fn map(&self, asset: &DamAsset) -> Result<PimAsset, MappingError> {
        let ctx = Self::context(asset);
        let mut out = PimAsset::new(self.code_in(&ctx)?);
        for rule in &self.rules {
            let attr = Some(rule.attribute.as_str());
            let raw = match &rule.source {
                Source::Pointer(p) => asset.record.pointer(p).cloned(),
                Source::Template(name) => {
                    let s = self
                        .env
                        .get_template(name)
                        .and_then(|t| t.render(&ctx))
                        .map_err(|e| MappingError::new(attr, format!("template: {e}")))?;
                    Some(Value::String(s)).filter(|v| v.as_str() != Some(""))
                }
                Source::Constant(v) => Some(v.clone()),
            };
            let raw = raw
                .filter(|v| !v.is_null())
                .or_else(|| rule.default.clone())
                .unwrap_or(Value::Null);
            let data = coerce(rule, raw)?;
            out.push_value(
                &rule.attribute,
                PimValue {
                    locale: rule.locale.clone(),
                    channel: rule.channel.clone(),
                    data,
                },
            );
        }
        Ok(out)
    }
}

fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn coerce(rule: &CompiledRule, v: Value) -> Result<Value, MappingError> {
    if v.is_null() {
        return Ok(v);
    }
    let attr = Some(rule.attribute.as_str());
    let Some(kind) = rule.kind else {
        return Ok(v);
    };
    let wrong = |want: &str| {
        MappingError::new(
            attr,
            format!("cannot turn {v} into a {want} value"),
        )
    };
    Ok(match kind {
        AttributeType::Text | AttributeType::Date | AttributeType::MediaFile => {
            Value::String(scalar_to_string(&v).ok_or_else(|| wrong("text"))?)
        }
        AttributeType::Number => {
            let s = scalar_to_string(&v).ok_or_else(|| wrong("number"))?;
            let t = s.trim();
            if t.parse::<f64>().is_err() {
                return Err(wrong("number"));
            }
            Value::String(t.to_owned())
        }
        AttributeType::Boolean => match &v {
            Value::Bool(_) => v,
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Value::Bool(n.as_i64() == Some(1))
            }
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Value::Bool(true),
                "false" | "no" | "0" => Value::Bool(false),
                _ => return Err(wrong("boolean")),
            },
            _ => return Err(wrong("boolean")),
        },
        AttributeType::SingleOption | AttributeType::Record => {
            Value::String(sanitize_code(&scalar_to_string(&v).ok_or_else(|| wrong("option"))?))
        }
        AttributeType::MultipleOptions => {
            let items: Vec<Value> = match &v {
                Value::Array(a) => a.iter().filter(|x| !x.is_null()).cloned().collect(),
                other => vec![other.clone()],
            };
            let mut codes = Vec::with_capacity(items.len());
            for i in &items {
                let s = scalar_to_string(i).ok_or_else(|| wrong("options"))?;
                let code = sanitize_code(&s);
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            Value::Array(codes.into_iter().map(Value::String).collect())
        }
        AttributeType::MediaLink => {
            let mut s = scalar_to_string(&v).ok_or_else(|| wrong("media link"))?;
            if let Some(p) = &rule.prefix {
                if let Some(rest) = s.strip_prefix(p.as_str()) {
                    s = rest.to_owned();
                }
            }
            if let Some(x) = &rule.suffix {
                if let Some(rest) = s.strip_suffix(x.as_str()) {
                    s = rest.to_owned();
                }
            }
            Value::String(s)
        }
        AttributeType::AutoTagging | AttributeType::Unknown => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::AssetAttribute;
    use chrono::TimeZone;
    use serde_json::json;

    fn dam(record: Value) -> DamAsset {
        DamAsset {
            id: record["id"].as_str().unwrap_or("x").to_owned(),
            updated_at: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            record,
        }
    }

    fn structure() -> FamilyStructure {
        let mut attrs = std::collections::BTreeMap::new();
        let mut link = AssetAttribute::new("media", AttributeType::MediaLink);
        link.prefix = Some("https://dam.example.com/files/".into());
        attrs.insert("media".into(), link);
        let mut title = AssetAttribute::new("title", AttributeType::Text);
        title.value_per_locale = true;
        attrs.insert("title".into(), title);
        attrs.insert("width".into(), AssetAttribute::new("width", AttributeType::Number));
        attrs.insert("tags".into(), AssetAttribute::new("tags", AttributeType::MultipleOptions));
        FamilyStructure {
            code: "packshots".into(),
            attribute_as_main_media: Some("media".into()),
            attributes: attrs,
        }
    }

    fn rule(attribute: &str) -> ValueRule {
        ValueRule {
            attribute: attribute.into(),
            from: None,
            template: None,
            value: None,
            default: None,
            locale: None,
            channel: None,
        }
    }

    fn mapping() -> FamilyMapping {
        FamilyMapping {
            asset_code: "{{ name }}".into(),
            values: vec![
                ValueRule { from: Some("/url".into()), ..rule("media") },
                ValueRule {
                    template: Some("{{ metadata.title | upper }}".into()),
                    locale: Some("en_US".into()),
                    ..rule("title")
                },
                ValueRule { from: Some("/metadata/width".into()), ..rule("width") },
                ValueRule { from: Some("/metadata/tags".into()), ..rule("tags") },
            ],
        }
    }

    #[test]
    fn maps_a_realistic_record() {
        let m = CompiledMapping::new(&mapping(), Some(&structure())).unwrap();
        let a = m
            .map(&dam(json!({
                "id": "a1",
                "name": "shoe-red.jpg",
                "url": "https://dam.example.com/files/shoe-red.jpg",
                "metadata": {"title": "Red shoe", "width": 1200, "tags": ["Summer", "red", "Summer"]}
            })))
            .unwrap();
        assert!(a.code.starts_with("shoe_red_jpg_"));
        assert_eq!(a.values["media"][0].data, json!("shoe-red.jpg"));
        assert_eq!(a.values["title"][0].data, json!("RED SHOE"));
        assert_eq!(a.values["title"][0].locale.as_deref(), Some("en_US"));
        assert_eq!(a.values["width"][0].data, json!("1200"));
        assert_eq!(a.values["tags"][0].data, json!(["Summer", "red"]));
    }

    #[test]
    fn missing_fields_become_null_or_default() {
        let mut mp = mapping();
        mp.values[2].default = Some(json!(0));
        let m = CompiledMapping::new(&mp, Some(&structure())).unwrap();
        let a = m.map(&dam(json!({"id": "a1", "name": "n"}))).unwrap();
        assert_eq!(a.values["media"][0].data, Value::Null);
        assert_eq!(a.values["width"][0].data, json!("0"));
        assert_eq!(a.values["title"][0].data, Value::Null);
    }

    #[test]
    fn rules_are_checked_against_the_structure() {
        let mut mp = mapping();
        mp.values.push(ValueRule { from: Some("/x".into()), ..rule("nope") });
        let e = CompiledMapping::new(&mp, Some(&structure())).unwrap_err();
        assert_eq!(e.attribute.as_deref(), Some("nope"));

        let mut mp = mapping();
        mp.values[1].locale = None;
        let e = CompiledMapping::new(&mp, Some(&structure())).unwrap_err();
        assert!(e.message.contains("localizable"), "{e}");

        let mut mp = mapping();
        mp.values[0].locale = Some("en_US".into());
        assert!(CompiledMapping::new(&mp, Some(&structure())).is_err());
    }

    #[test]
    fn exactly_one_source_per_rule() {
        let mut mp = mapping();
        mp.values[0].value = Some(json!("x"));
        assert!(CompiledMapping::new(&mp, None).is_err());
        let mut mp = mapping();
        mp.values[0].from = Some("url".into());
        assert!(CompiledMapping::new(&mp, None).is_err());
    }

    #[test]
    fn wrong_types_fail_with_the_attribute_named() {
        let m = CompiledMapping::new(&mapping(), Some(&structure())).unwrap();
        let e = m
            .map(&dam(json!({"id": "a", "name": "n", "metadata": {"width": "wide"}})))
            .unwrap_err();
        assert_eq!(e.attribute.as_deref(), Some("width"));
    }

    #[test]
    fn empty_code_is_an_error() {
        let m = CompiledMapping::new(&mapping(), None).unwrap();
        assert!(m.asset_code(&dam(json!({"id": "a"}))).is_err());
        let d = CompiledMapping::new(
            &FamilyMapping { asset_code: default_asset_code(), values: vec![] },
            None,
        )
        .unwrap();
        assert_eq!(d.asset_code(&dam(json!({"id": "a-1"}))).unwrap(), sanitize_code("a-1"));
    }
}
