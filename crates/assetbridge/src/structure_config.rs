//! `[families.structure]`: what the PIM's asset family must look like, applied by
//! `assetbridge structure apply` (see `docs/configuration.md` and `docs/linking.md`).
//!
//! Everything the PIM would refuse is refused here first, offline, with the key of the setting:
//! codes, at most 100 attributes and 100 options per attribute, type-specific fields on the
//! right types, a naming convention whose pattern compiles and whose named groups are declared
//! non-localizable, non-scopable `text` / `single_option` / `number` attributes, at most two
//! product link rules whose extrapolations (`{{attribute}}`) name declared attributes with one
//! value. What can only be checked against the PIM (immutable `type`, `value_per_locale`,
//! `value_per_channel` of an attribute that already exists) is checked by the command before it
//! writes anything.

use std::collections::{BTreeMap, BTreeSet};

use assetbridge_core::code::is_valid_code;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Attributes per asset family and options per option attribute (Akeneo's limits, §5.2).
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_OPTIONS: usize = 100;
/// Product link rules per asset family (§5.2).
pub const MAX_LINK_RULES: usize = 2;

/// `[families.structure]`. Every key is optional: what is not written is left as the PIM has
/// it. Nothing is ever deleted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureConfig {
    /// The family's labels per locale (`{ en_US = "Packshots" }`); other locales are left alone.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The attribute shown as the asset's main media (a `media_file` or `media_link`
    /// attribute). Default: left as the PIM has it (Akeneo uses the first media attribute).
    #[serde(default)]
    pub attribute_as_main_media: Option<String>,
    /// The attributes the family must have (created when missing, updated when different).
    #[serde(default)]
    pub attributes: Vec<AttributeSpec>,
    /// The naming convention (run by Akeneo when an asset is created). Default: left as is.
    #[serde(default)]
    pub naming_convention: Option<NamingConventionSpec>,
    /// The product link rules (at most 2; run by Akeneo when an asset is created). Default: left
    /// as is; `[]` removes them.
    #[serde(default)]
    pub product_link_rules: Option<Vec<LinkRuleSpec>>,
}

/// An asset attribute's type (§5.6). `record` and `auto_tagging` are not managed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeKind {
    Text,
    MediaLink,
    Number,
    MediaFile,
    SingleOption,
    MultipleOptions,
    Boolean,
    Date,
}

impl AttributeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeKind::Text => "text",
            AttributeKind::MediaLink => "media_link",
            AttributeKind::Number => "number",
            AttributeKind::MediaFile => "media_file",
            AttributeKind::SingleOption => "single_option",
            AttributeKind::MultipleOptions => "multiple_options",
            AttributeKind::Boolean => "boolean",
            AttributeKind::Date => "date",
        }
    }

    pub fn is_media(self) -> bool {
        matches!(self, AttributeKind::MediaFile | AttributeKind::MediaLink)
    }
}

/// A number written as a TOML number or a string (Akeneo keeps `min_value`, `max_value`,
/// `max_file_size` as strings).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NumberText {
    Int(i64),
    Float(f64),
    Text(String),
}

impl NumberText {
    /// The text sent to Akeneo.
    pub fn text(&self) -> String {
        match self {
            NumberText::Int(i) => i.to_string(),
            NumberText::Float(f) => f.to_string(),
            NumberText::Text(s) => s.trim().to_owned(),
        }
    }

    pub fn value(&self) -> Option<f64> {
        self.text().parse::<f64>().ok().filter(|f| f.is_finite())
    }
}

/// `validation_rule` of a text attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationRule {
    None,
    Email,
    Url,
    RegularExpression,
}

impl ValidationRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationRule::None => "none",
            ValidationRule::Email => "email",
            ValidationRule::Url => "url",
            ValidationRule::RegularExpression => "regular_expression",
        }
    }
}

/// `[[families.structure.attributes]]`: one asset attribute. `code`, `type`,
/// `value_per_locale` and `value_per_channel` cannot change once the attribute exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    pub code: String,
    #[serde(rename = "type")]
    pub kind: AttributeKind,
    /// Labels per locale; other locales are left alone.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One value per locale. Default: false. Immutable.
    #[serde(default)]
    pub value_per_locale: bool,
    /// One value per channel. Default: false. Immutable.
    #[serde(default)]
    pub value_per_channel: bool,
    pub is_required_for_completeness: Option<bool>,
    pub is_read_only: Option<bool>,
    // text
    pub max_characters: Option<u64>,
    pub is_textarea: Option<bool>,
    pub is_rich_text_editor: Option<bool>,
    pub validation_rule: Option<ValidationRule>,
    pub validation_regexp: Option<String>,
    // media_file / media_link
    pub media_type: Option<String>,
    pub allowed_extensions: Option<Vec<String>>,
    pub max_file_size: Option<NumberText>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    // number
    pub decimals_allowed: Option<bool>,
    pub min_value: Option<NumberText>,
    pub max_value: Option<NumberText>,
    /// The options of a `single_option` / `multiple_options` attribute (created when missing,
    /// labels updated; options not listed are left alone).
    #[serde(default)]
    pub options: Vec<OptionSpec>,
}

/// One option: `{ code = "summer", labels = { en_US = "Summer" } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `naming_convention = { source = { property = "code" }, pattern = "/…/", … }` (§5.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingConventionSpec {
    pub source: NamingSource,
    /// A PCRE pattern with delimiters, e.g. `"/^(?P<product_ref>[A-Z0-9]+)_.*$/"`; each named
    /// group writes the captured text to the attribute of that name.
    pub pattern: String,
    /// true: an asset whose source does not match is refused (422); false: it is created and
    /// the convention skipped. Default: false.
    #[serde(default)]
    pub abort_asset_creation_on_error: bool,
}

/// The naming convention's source: `code` (the asset code) or the main media attribute (its
/// value as sent: the file code or the link).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingSource {
    pub property: String,
    pub locale: Option<String>,
    pub channel: Option<String>,
}

/// `[[families.structure.product_link_rules]]` (§5.5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRuleSpec {
    /// Conditions (all must hold) selecting the products.
    pub product_selections: Vec<SelectionSpec>,
    /// Where the asset goes on each selected product.
    pub assign_assets_to: Vec<AssignmentSpec>,
}

/// `{ field = "sku", operator = "EQUALS", value = "{{product_ref}}" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSpec {
    pub field: String,
    pub operator: String,
    pub value: Value,
    pub locale: Option<String>,
    pub channel: Option<String>,
}

/// `add` (after the assets already there) or `replace` (the whole collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignMode {
    Add,
    Replace,
}

/// `{ attribute = "packshots", mode = "add" }`: a product asset collection attribute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentSpec {
    pub attribute: String,
    pub mode: AssignMode,
    pub locale: Option<String>,
    pub channel: Option<String>,
}

/// Product selection fields that take neither locale nor channel (§5.5).
const NO_LOCALE_FIELDS: [&str; 3] = ["categories", "family", "enabled"];

const ALL_OPERATORS: [&str; 16] = [
    "=",
    "EQUALS",
    "!=",
    "IN",
    "NOT IN",
    "STARTS WITH",
    "CONTAINS",
    "DOES NOT CONTAIN",
    "EMPTY",
    "NOT EMPTY",
    "IN OR UNCLASSIFIED",
    "IN CHILDREN",
    "NOT IN CHILDREN",
    "UNCLASSIFIED",
    "BETWEEN",
    "NOT BETWEEN",
];

/// A setting that cannot work: the key (relative to `structure`) and why.
pub type Invalid = (String, String);

fn at(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

// ---------------------------------------------------------------------------------------------
// PCRE patterns

/// Reads a pattern as PHP's `preg_match` does (delimiter, expression, delimiter, flags) and
/// compiles it. Features the `regex` crate does not have (look-around, back-references) are
/// refused: the pattern could not be checked here.
pub fn compile_pcre(pattern: &str) -> Result<regex::Regex, String> {
    let trimmed = pattern.trim_start();
    let first = trimmed
        .chars()
        .next()
        .ok_or("the pattern is empty: write it with delimiters, e.g. \"/^(?P<sku>[A-Z0-9]+)_/\"")?;
    if first.is_alphanumeric() || first == '\\' || first.is_whitespace() {
        return Err(format!(
            "the pattern must start with a delimiter (PCRE, as Akeneo reads it), e.g. \"/{pattern}/\""
        ));
    }
    let close = match first {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        c => c,
    };
    let body = &trimmed[first.len_utf8()..];
    let (mut depth, mut escaped, mut end) = (0usize, false, None);
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == close && depth == 0 {
            end = Some(i);
            break;
        } else if close != first && c == first {
            depth += 1;
        } else if close != first && c == close {
            depth -= 1;
        }
    }
    let end = end.ok_or_else(|| format!("no closing delimiter `{close}`"))?;
    let expr = &body[..end];
    let (mut inline, mut anchored) = (String::new(), false);
    for f in body[end + close.len_utf8()..].chars() {
        match f {
            'i' | 'm' | 's' | 'x' | 'U' => inline.push(f),
            'A' => anchored = true,
            'u' | 'D' | 'S' | '\n' | '\r' | ' ' => {}
            other => return Err(format!("unknown pattern flag `{other}`")),
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
        .map_err(|e| format!("the pattern does not compile (look-around and back-references are not supported): {e}"))
}

/// The `{{name}}` extrapolations in a rule value (trimmed names).
pub fn extrapolations(v: &Value) -> Vec<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"\{\{(.*?)\}\}").expect("static pattern"));
    let mut out = Vec::new();
    let mut scan = |s: &str| {
        for c in re.captures_iter(s) {
            out.push(c[1].trim().to_owned());
        }
    };
    match v {
        Value::String(s) => scan(s),
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut scan),
        _ => {}
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Validation

impl StructureConfig {
    /// The declared attribute `code`.
    pub fn attribute(&self, code: &str) -> Option<&AttributeSpec> {
        self.attributes.iter().find(|a| a.code == code)
    }

    /// Checks what Akeneo would refuse. Keys are relative to the `structure` table.
    pub fn validate(&self) -> Result<(), Invalid> {
        for locale in self.labels.keys() {
            check_locale_code(locale).map_err(|m| at(format!("labels.{locale}"), m))?;
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(at(
                "attributes",
                format!(
                    "{} attributes: Akeneo allows at most {MAX_ATTRIBUTES} per asset family",
                    self.attributes.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, a) in self.attributes.iter().enumerate() {
            let key = format!("attributes[{i}]");
            if !is_valid_code(&a.code) {
                return Err(at(
                    format!("{key}.code"),
                    format!(
                        "`{}` is not an Akeneo code (letters, digits and `_`, at most 255)",
                        a.code
                    ),
                ));
            }
            if !seen.insert(a.code.as_str()) {
                return Err(at(
                    format!("{key}.code"),
                    format!("attribute `{}` is declared twice", a.code),
                ));
            }
            a.validate().map_err(|(k, m)| at(format!("{key}.{k}"), m))?;
        }
        if let Some(main) = &self.attribute_as_main_media {
            if !is_valid_code(main) {
                return Err(at(
                    "attribute_as_main_media",
                    format!("`{main}` is not an Akeneo code"),
                ));
            }
            if let Some(a) = self.attribute(main) {
                if !a.kind.is_media() {
                    return Err(at(
                        "attribute_as_main_media",
                        format!(
                            "`{main}` is a `{}` attribute: the main media must be `media_file` or `media_link`",
                            a.kind.as_str()
                        ),
                    ));
                }
            }
        }
        if let Some(nc) = &self.naming_convention {
            self.validate_naming(nc)?;
        }
        if let Some(rules) = &self.product_link_rules {
            self.validate_rules(rules)?;
        }
        Ok(())
    }

    fn validate_naming(&self, nc: &NamingConventionSpec) -> Result<(), Invalid> {
        let key = "naming_convention";
        let p = &nc.source.property;
        if p == "code" {
            if nc.source.locale.is_some() || nc.source.channel.is_some() {
                return Err(at(
                    format!("{key}.source"),
                    "the asset code has no locale or channel: leave them out",
                ));
            }
        } else {
            if self.attribute_as_main_media.as_deref() != Some(p.as_str()) {
                return Err(at(
                    format!("{key}.source.property"),
                    format!(
                        "`{p}`: the source is `code` or the family's main media attribute; set `attribute_as_main_media = \"{p}\"` in this table (Akeneo refuses any other attribute)"
                    ),
                ));
            }
            if let Some(a) = self.attribute(p) {
                for (given, per, what) in [
                    (&nc.source.locale, a.value_per_locale, "locale"),
                    (&nc.source.channel, a.value_per_channel, "channel"),
                ] {
                    match (given, per) {
                        (None, true) => {
                            return Err(at(
                                format!("{key}.source"),
                                format!(
                                    "`{p}` has one value per {what}: give the source's `{what}`"
                                ),
                            ))
                        }
                        (Some(_), false) => {
                            return Err(at(
                                format!("{key}.source.{what}"),
                                format!("`{p}` has no value per {what}: leave `{what}` out"),
                            ))
                        }
                        _ => {}
                    }
                }
            }
        }
        let re = compile_pcre(&nc.pattern).map_err(|m| at(format!("{key}.pattern"), m))?;
        let groups: Vec<&str> = re.capture_names().flatten().collect();
        if groups.is_empty() {
            return Err(at(
                format!("{key}.pattern"),
                "the pattern has no named group: name each part after the attribute it fills, e.g. (?P<product_ref>[A-Z0-9]+)",
            ));
        }
        for g in groups {
            let Some(a) = self.attribute(g) else {
                return Err(at(
                    format!("{key}.pattern"),
                    format!(
                        "the group `{g}` must name an attribute declared in `attributes` (text, single_option or number, one value: no locale, no channel)"
                    ),
                ));
            };
            if !matches!(
                a.kind,
                AttributeKind::Text | AttributeKind::SingleOption | AttributeKind::Number
            ) {
                return Err(at(
                    format!("{key}.pattern"),
                    format!(
                        "the group `{g}` fills a `{}` attribute: a naming convention fills only text, single_option or number attributes",
                        a.kind.as_str()
                    ),
                ));
            }
            if a.value_per_locale || a.value_per_channel {
                return Err(at(
                    format!("{key}.pattern"),
                    format!("the group `{g}` fills an attribute with one value per locale or channel: a naming convention writes one value (no locale, no channel)"),
                ));
            }
        }
        Ok(())
    }

    /// Every `{{x}}` of `v` names a declared attribute of `allowed` type with one value.
    fn check_extrapolated(
        &self,
        key: &str,
        v: &Value,
        allowed: &[AttributeKind],
    ) -> Result<(), Invalid> {
        for name in extrapolations(v) {
            let Some(a) = self.attribute(&name) else {
                return Err(at(
                    key,
                    format!("`{{{{{name}}}}}` must name an attribute declared in `attributes`"),
                ));
            };
            if !allowed.contains(&a.kind) {
                let list: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
                return Err(at(
                    key,
                    format!(
                        "`{{{{{name}}}}}` is a `{}` attribute; here only {} attributes can be used",
                        a.kind.as_str(),
                        list.join(", ")
                    ),
                ));
            }
            if a.value_per_locale || a.value_per_channel {
                return Err(at(
                    key,
                    format!("`{{{{{name}}}}}` has one value per locale or channel: extrapolations need attributes with one value"),
                ));
            }
        }
        Ok(())
    }

    fn validate_rules(&self, rules: &[LinkRuleSpec]) -> Result<(), Invalid> {
        const TEXTUAL: [AttributeKind; 2] = [AttributeKind::Text, AttributeKind::SingleOption];
        const VALUES: [AttributeKind; 4] = [
            AttributeKind::Text,
            AttributeKind::SingleOption,
            AttributeKind::MultipleOptions,
            AttributeKind::Number,
        ];
        if rules.len() > MAX_LINK_RULES {
            return Err(at(
                "product_link_rules",
                format!(
                    "{} rules: Akeneo allows at most {MAX_LINK_RULES} product link rules per asset family",
                    rules.len()
                ),
            ));
        }
        for (i, r) in rules.iter().enumerate() {
            let key = format!("product_link_rules[{i}]");
            if r.product_selections.is_empty() {
                return Err(at(
                    format!("{key}.product_selections"),
                    "at least one product selection is needed",
                ));
            }
            if r.assign_assets_to.is_empty() {
                return Err(at(
                    format!("{key}.assign_assets_to"),
                    "at least one assignment is needed",
                ));
            }
            for (j, s) in r.product_selections.iter().enumerate() {
                let skey = format!("{key}.product_selections[{j}]");
                if s.field.trim().is_empty() {
                    return Err(at(format!("{skey}.field"), "the field is empty"));
                }
                if !ALL_OPERATORS.contains(&s.operator.as_str()) {
                    return Err(at(
                        format!("{skey}.operator"),
                        format!(
                            "`{}` is not an operator of product link rules ({})",
                            s.operator,
                            ALL_OPERATORS.join(", ")
                        ),
                    ));
                }
                let field = s.field.as_str();
                if NO_LOCALE_FIELDS.contains(&field) {
                    for (given, what) in [(&s.locale, "locale"), (&s.channel, "channel")] {
                        if given.is_some() {
                            return Err(at(
                                format!("{skey}.{what}"),
                                format!("the field `{field}` takes no {what}"),
                            ));
                        }
                    }
                }
                let allowed: &[&str] = match field {
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
                    _ => &ALL_OPERATORS,
                };
                if !allowed.contains(&s.operator.as_str()) {
                    return Err(at(
                        format!("{skey}.operator"),
                        format!(
                            "`{}` does not apply to the field `{field}` (use {})",
                            s.operator,
                            allowed.join(", ")
                        ),
                    ));
                }
                let wants_list = matches!(field, "family" | "categories")
                    && s.operator != "UNCLASSIFIED"
                    || matches!(s.operator.as_str(), "IN" | "NOT IN");
                if wants_list && !s.value.is_array() && extrapolations(&s.value).is_empty() {
                    return Err(at(
                        format!("{skey}.value"),
                        format!(
                            "`{}` on `{field}` takes a list, e.g. value = [\"a\", \"b\"]",
                            s.operator
                        ),
                    ));
                }
                if field == "enabled"
                    && !matches!(&s.value, Value::Bool(_))
                    && !matches!(s.value.as_str(), Some("true" | "false"))
                {
                    return Err(at(format!("{skey}.value"), "`enabled` takes true or false"));
                }
                self.check_extrapolated(
                    &format!("{skey}.field"),
                    &Value::String(s.field.clone()),
                    &TEXTUAL,
                )?;
                self.check_extrapolated(&format!("{skey}.value"), &s.value, &VALUES)?;
                for (given, what) in [(&s.locale, "locale"), (&s.channel, "channel")] {
                    if let Some(x) = given {
                        self.check_extrapolated(
                            &format!("{skey}.{what}"),
                            &Value::String(x.clone()),
                            &TEXTUAL,
                        )?;
                    }
                }
            }
            for (j, a) in r.assign_assets_to.iter().enumerate() {
                let akey = format!("{key}.assign_assets_to[{j}]");
                if extrapolations(&Value::String(a.attribute.clone())).is_empty()
                    && !is_valid_code(&a.attribute)
                {
                    return Err(at(
                        format!("{akey}.attribute"),
                        format!("`{}` is not a product attribute code", a.attribute),
                    ));
                }
                self.check_extrapolated(
                    &format!("{akey}.attribute"),
                    &Value::String(a.attribute.clone()),
                    &TEXTUAL,
                )?;
                for (given, what) in [(&a.locale, "locale"), (&a.channel, "channel")] {
                    if let Some(x) = given {
                        self.check_extrapolated(
                            &format!("{akey}.{what}"),
                            &Value::String(x.clone()),
                            &TEXTUAL,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // What is sent to Akeneo

    /// The naming convention as Akeneo's JSON (§5.3).
    pub fn naming_json(&self) -> Option<Value> {
        self.naming_convention.as_ref().map(|nc| {
            json!({
                "source": {
                    "property": nc.source.property,
                    "locale": nc.source.locale,
                    "channel": nc.source.channel,
                },
                "pattern": nc.pattern,
                "abort_asset_creation_on_error": nc.abort_asset_creation_on_error,
            })
        })
    }

    /// The product link rules as Akeneo's JSON (§5.5): attribute fields get `locale` and
    /// `channel` (null when not set), `family` / `categories` / `enabled` get neither;
    /// `enabled` takes the strings "true" / "false".
    pub fn rules_json(&self) -> Option<Value> {
        self.product_link_rules.as_ref().map(|rules| {
            Value::Array(
                rules
                    .iter()
                    .map(|r| {
                        let selections: Vec<Value> = r
                            .product_selections
                            .iter()
                            .map(|s| {
                                let mut m = Map::new();
                                m.insert("field".into(), json!(s.field));
                                m.insert("operator".into(), json!(s.operator));
                                let value = match (&s.value, s.field.as_str()) {
                                    (Value::Bool(b), "enabled") => json!(b.to_string()),
                                    (v, _) => v.clone(),
                                };
                                m.insert("value".into(), value);
                                if !NO_LOCALE_FIELDS.contains(&s.field.as_str()) {
                                    m.insert("locale".into(), json!(s.locale));
                                    m.insert("channel".into(), json!(s.channel));
                                }
                                Value::Object(m)
                            })
                            .collect();
                        let assignments: Vec<Value> = r
                            .assign_assets_to
                            .iter()
                            .map(|a| {
                                json!({
                                    "mode": match a.mode { AssignMode::Add => "add", AssignMode::Replace => "replace" },
                                    "attribute": a.attribute,
                                    "locale": a.locale,
                                    "channel": a.channel,
                                })
                            })
                            .collect();
                        json!({"product_selections": selections, "assign_assets_to": assignments})
                    })
                    .collect(),
            )
        })
    }
}

/// A locale code as Akeneo writes them (`en_US`, `fr_FR`, `zh_Hans_CN`).
fn check_locale_code(l: &str) -> Result<(), String> {
    let ok = l.len() <= 100
        && l.contains('_')
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !l.starts_with('_')
        && !l.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{l}` is not a locale code (e.g. en_US)"))
    }
}

impl AttributeSpec {
    /// The fields that only apply to some types, with the types.
    fn type_specific(&self) -> Vec<(&'static str, bool, &'static [AttributeKind])> {
        use AttributeKind::*;
        vec![
            ("max_characters", self.max_characters.is_some(), &[Text]),
            ("is_textarea", self.is_textarea.is_some(), &[Text]),
            (
                "is_rich_text_editor",
                self.is_rich_text_editor.is_some(),
                &[Text],
            ),
            ("validation_rule", self.validation_rule.is_some(), &[Text]),
            (
                "validation_regexp",
                self.validation_regexp.is_some(),
                &[Text],
            ),
            (
                "media_type",
                self.media_type.is_some(),
                &[MediaFile, MediaLink],
            ),
            (
                "allowed_extensions",
                self.allowed_extensions.is_some(),
                &[MediaFile],
            ),
            ("max_file_size", self.max_file_size.is_some(), &[MediaFile]),
            ("prefix", self.prefix.is_some(), &[MediaLink]),
            ("suffix", self.suffix.is_some(), &[MediaLink]),
            (
                "decimals_allowed",
                self.decimals_allowed.is_some(),
                &[Number],
            ),
            ("min_value", self.min_value.is_some(), &[Number]),
            ("max_value", self.max_value.is_some(), &[Number]),
            (
                "options",
                !self.options.is_empty(),
                &[SingleOption, MultipleOptions],
            ),
        ]
    }

    fn validate(&self) -> Result<(), Invalid> {
        for locale in self.labels.keys() {
            check_locale_code(locale).map_err(|m| at(format!("labels.{locale}"), m))?;
        }
        for (field, set, types) in self.type_specific() {
            if set && !types.contains(&self.kind) {
                let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                return Err(at(
                    field,
                    format!(
                        "`{field}` applies to {} attributes, not to `{}`",
                        names.join(" / "),
                        self.kind.as_str()
                    ),
                ));
            }
        }
        if let Some(m) = &self.media_type {
            let allowed: &[&str] = match self.kind {
                AttributeKind::MediaLink => &["image", "pdf", "youtube", "vimeo", "other"],
                _ => &["image", "pdf", "other"],
            };
            if !allowed.contains(&m.as_str()) {
                return Err(at(
                    "media_type",
                    format!("`{m}`: one of {}", allowed.join(", ")),
                ));
            }
        }
        for (field, v) in [("prefix", &self.prefix), ("suffix", &self.suffix)] {
            if v.as_deref() == Some("") {
                return Err(at(
                    field,
                    format!("the {field} cannot be an empty string (leave it out)"),
                ));
            }
        }
        if let Some(exts) = &self.allowed_extensions {
            let mut seen = BTreeSet::new();
            for (i, e) in exts.iter().enumerate() {
                if e.is_empty()
                    || !e
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                {
                    return Err(at(
                        format!("allowed_extensions[{i}]"),
                        format!(
                            "`{e}`: an extension is lower-case letters and digits, without the dot"
                        ),
                    ));
                }
                if !seen.insert(e) {
                    return Err(at(
                        format!("allowed_extensions[{i}]"),
                        format!("`{e}` is listed twice"),
                    ));
                }
            }
        }
        for (field, v) in [
            ("max_file_size", &self.max_file_size),
            ("min_value", &self.min_value),
            ("max_value", &self.max_value),
        ] {
            if let Some(n) = v {
                if n.value().is_none() {
                    return Err(at(field, format!("`{}` is not a number", n.text())));
                }
            }
        }
        if let (Some(min), Some(max)) = (
            self.min_value.as_ref().and_then(NumberText::value),
            self.max_value.as_ref().and_then(NumberText::value),
        ) {
            if min > max {
                return Err(at("min_value", "the min cannot be greater than the max"));
            }
        }
        match (self.validation_rule, &self.validation_regexp) {
            (Some(ValidationRule::RegularExpression), None) => {
                return Err(at(
                    "validation_regexp",
                    "validation_rule = \"regular_expression\" needs `validation_regexp`",
                ))
            }
            (Some(ValidationRule::RegularExpression), Some(re)) => {
                compile_pcre(re).map_err(|m| at("validation_regexp", m))?;
            }
            (_, Some(_)) => {
                return Err(at(
                    "validation_regexp",
                    "only with validation_rule = \"regular_expression\"",
                ))
            }
            _ => {}
        }
        if self.options.len() > MAX_OPTIONS {
            return Err(at(
                "options",
                format!(
                    "{} options: Akeneo allows at most {MAX_OPTIONS} per attribute",
                    self.options.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, o) in self.options.iter().enumerate() {
            if !is_valid_code(&o.code) {
                return Err(at(
                    format!("options[{i}].code"),
                    format!(
                        "`{}` is not an Akeneo option code (letters, digits and `_`)",
                        o.code
                    ),
                ));
            }
            if !seen.insert(o.code.as_str()) {
                return Err(at(
                    format!("options[{i}].code"),
                    format!("option `{}` is listed twice", o.code),
                ));
            }
            for locale in o.labels.keys() {
                check_locale_code(locale)
                    .map_err(|m| at(format!("options[{i}].labels.{locale}"), m))?;
            }
        }
        Ok(())
    }

    /// The mutable settings this spec fixes, as Akeneo's JSON keys and values (labels apart).
    pub fn settings(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        let mut push = |k: &'static str, v: Option<Value>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        push(
            "is_required_for_completeness",
            self.is_required_for_completeness.map(Value::from),
        );
        push("is_read_only", self.is_read_only.map(Value::from));
        push("max_characters", self.max_characters.map(Value::from));
        push("is_textarea", self.is_textarea.map(Value::from));
        push(
            "is_rich_text_editor",
            self.is_rich_text_editor.map(Value::from),
        );
        push(
            "validation_rule",
            self.validation_rule.map(|r| json!(r.as_str())),
        );
        push(
            "validation_regexp",
            self.validation_regexp.clone().map(Value::from),
        );
        push("media_type", self.media_type.clone().map(Value::from));
        push(
            "allowed_extensions",
            self.allowed_extensions.clone().map(Value::from),
        );
        push(
            "max_file_size",
            self.max_file_size.as_ref().map(|n| json!(n.text())),
        );
        push("prefix", self.prefix.clone().map(Value::from));
        push("suffix", self.suffix.clone().map(Value::from));
        push("decimals_allowed", self.decimals_allowed.map(Value::from));
        push(
            "min_value",
            self.min_value.as_ref().map(|n| json!(n.text())),
        );
        push(
            "max_value",
            self.max_value.as_ref().map(|n| json!(n.text())),
        );
        out
    }

    /// The body that creates the attribute.
    pub fn create_body(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), json!(self.code));
        m.insert("type".into(), json!(self.kind.as_str()));
        m.insert("value_per_locale".into(), json!(self.value_per_locale));
        m.insert("value_per_channel".into(), json!(self.value_per_channel));
        m.insert("labels".into(), json!(self.labels));
        for (k, v) in self.settings() {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StructureConfig {
        assetbridge_config::load_str::<StructureConfig>(
            text,
            "structure.toml",
            &|_: &str| None,
            std::path::Path::new("."),
        )
        .unwrap()
        .value
    }

    const GOOD: &str = r#"
labels = { en_US = "Packshots" }
attribute_as_main_media = "url"
naming_convention = { source = { property = "code" }, pattern = "/^(?P<product_ref>[A-Z0-9]+)_/", abort_asset_creation_on_error = true }

[[attributes]]
code = "url"
type = "media_link"
prefix = "https://dam.example.com/"
media_type = "image"

[[attributes]]
code = "product_ref"
type = "text"

[[attributes]]
code = "view"
type = "single_option"
options = [ { code = "front", labels = { en_US = "Front" } } ]

[[product_link_rules]]
product_selections = [ { field = "sku", operator = "EQUALS", value = "{{product_ref}}" } ]
assign_assets_to = [ { attribute = "packshots", mode = "add" } ]
"#;

    #[test]
    fn a_good_structure_validates_and_renders_akeneo_json() {
        let s = parse(GOOD);
        s.validate().unwrap();
        assert_eq!(
            s.naming_json().unwrap(),
            json!({"source": {"property": "code", "locale": null, "channel": null},
                   "pattern": "/^(?P<product_ref>[A-Z0-9]+)_/", "abort_asset_creation_on_error": true})
        );
        assert_eq!(
            s.rules_json().unwrap(),
            json!([{"product_selections": [{"field": "sku", "operator": "EQUALS", "value": "{{product_ref}}", "locale": null, "channel": null}],
                    "assign_assets_to": [{"mode": "add", "attribute": "packshots", "locale": null, "channel": null}]}])
        );
        assert_eq!(
            s.attributes[0].create_body(),
            json!({"code": "url", "type": "media_link", "value_per_locale": false, "value_per_channel": false,
                   "labels": {}, "media_type": "image", "prefix": "https://dam.example.com/"})
        );
    }

    fn error_of(text: &str) -> Invalid {
        parse(text).validate().unwrap_err()
    }

    #[test]
    fn what_akeneo_refuses_is_refused_with_its_key() {
        let e = error_of(&GOOD.replace("(?P<product_ref>", "(?P<ref>"));
        assert_eq!(e.0, "naming_convention.pattern");
        assert!(e.1.contains("`ref`"), "{e:?}");
        let e = error_of(&GOOD.replace(
            "code = \"product_ref\"\ntype = \"text\"",
            "code = \"product_ref\"\ntype = \"text\"\nvalue_per_locale = true",
        ));
        assert_eq!(e.0, "naming_convention.pattern");
        let e = error_of(&GOOD.replace(
            "code = \"product_ref\"\ntype = \"text\"",
            "code = \"product_ref\"\ntype = \"multiple_options\"",
        ));
        assert!(e.1.contains("multiple_options"), "{e:?}");
        let e = error_of(&GOOD.replace("/^(?P<product_ref>[A-Z0-9]+)_/", "^(?P<product_ref>.*)$"));
        assert_eq!(e.0, "naming_convention.pattern");
        assert!(e.1.contains("delimiter"), "{e:?}");
        let e = error_of(&GOOD.replace("/^(?P<product_ref>[A-Z0-9]+)_/", "/^[A-Z0-9]+_/"));
        assert!(e.1.contains("no named group"), "{e:?}");
        let e = error_of(&GOOD.replace("property = \"code\"", "property = \"view\""));
        assert_eq!(e.0, "naming_convention.source.property");
        let rule = "[[product_link_rules]]\nproduct_selections = [ { field = \"sku\", operator = \"EQUALS\", value = \"x\" } ]\nassign_assets_to = [ { attribute = \"packshots\", mode = \"add\" } ]\n";
        let e = error_of(&format!("{GOOD}{rule}{rule}"));
        assert_eq!(e.0, "product_link_rules");
        let e = error_of(&GOOD.replace("value = \"{{product_ref}}\"", "value = \"{{nope}}\""));
        assert_eq!(e.0, "product_link_rules[0].product_selections[0].value");
        let e = error_of(&GOOD.replace(
            "{ field = \"sku\", operator = \"EQUALS\", value = \"{{product_ref}}\" }",
            "{ field = \"family\", operator = \"IN\", value = [\"hats\"], locale = \"en_US\" }",
        ));
        assert_eq!(e.0, "product_link_rules[0].product_selections[0].locale");
        let e = error_of(&GOOD.replace("operator = \"EQUALS\"", "operator = \"LIKE\""));
        assert_eq!(e.0, "product_link_rules[0].product_selections[0].operator");
        let e = error_of(&GOOD.replace(
            "prefix = \"https://dam.example.com/\"",
            "prefix = \"x\"\nmax_characters = 3",
        ));
        assert_eq!(e.0, "attributes[0].max_characters");
        let e = error_of(&GOOD.replace("code = \"front\"", "code = \"front-left\""));
        assert_eq!(e.0, "attributes[2].options[0].code");
        let e = error_of(&GOOD.replace(
            "attribute_as_main_media = \"url\"",
            "attribute_as_main_media = \"view\"",
        ));
        assert_eq!(e.0, "attribute_as_main_media");
        let many: String = (0..101)
            .map(|i| format!("[[attributes]]\ncode = \"a{i}\"\ntype = \"text\"\n"))
            .collect();
        let e = error_of(&many);
        assert_eq!(e.0, "attributes");
        let opts: String = (0..101)
            .map(|i| format!("{{ code = \"o{i}\" }},"))
            .collect();
        let e = error_of(&format!(
            "[[attributes]]\ncode = \"a\"\ntype = \"single_option\"\noptions = [{opts}]\n"
        ));
        assert_eq!(e.0, "attributes[0].options");
        let e = error_of(
            "[[attributes]]\ncode = \"n\"\ntype = \"number\"\nmin_value = 10\nmax_value = \"2\"\n",
        );
        assert_eq!(e.0, "attributes[0].min_value");
    }

    #[test]
    fn pcre_patterns_read_like_php() {
        let re = compile_pcre("/(?P<product_ref>.*)-.*/").unwrap();
        assert_eq!(&re.captures("shirt-front").unwrap()["product_ref"], "shirt");
        assert!(compile_pcre("#^abc$#i").unwrap().is_match("ABC"));
        assert!(compile_pcre("/(?<=a)b/").is_err());
        assert!(compile_pcre("/x/q").is_err());
        assert!(compile_pcre("/open").is_err());
    }
}
