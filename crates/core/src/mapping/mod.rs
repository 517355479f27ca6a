//! DAM → PIM mapping: how one DAM asset becomes one Akeneo asset of a family.
//!
//! A [`FamilyMapping`] is configuration (the `asset_code` and `values` keys of a `[[families]]`
//! table); [`CompiledMapping`] is the same ready to run: templates parsed, pointers and regexes
//! compiled, value maps indexed and, when the family structure is known, every rule checked
//! against it. Mapping is a pure function of the DAM asset and never panics, whatever the JSON.
//!
//! Each [`ValueRule`] fills one (attribute, locale, channel) value:
//! 1. `when` (optional): a [`Condition`] on the record; when it does not hold, the rule does not
//!    apply to this asset.
//! 2. a source — exactly one of `from` (JSON pointer), `template` (minijinja), `value`
//!    (constant), or `locales` (one pointer per locale: the rule fans out to several values);
//! 3. `transform` (optional): a list of [`Transform`] steps (`trim`, `split`, `map`, `number`,
//!    `date`, `regex`, ...);
//! 4. `default` (optional): used when the result is empty (missing, `null`, blank, `[]`);
//! 5. coercion to the attribute's type, when the family structure is known (text and numbers
//!    become strings, option codes are sanitised, a media link loses the attribute's prefix, ...).
//!
//! Several rules may fill the same (attribute, locale, channel): they are alternatives, tried in
//! order; the first that applies and gives a value wins. When some rule applied but none gave a
//! value, `null` is sent (which erases the value in Akeneo, so a field removed in the DAM is
//! removed in the PIM too). When no rule applied, nothing is sent for that value.
//!
//! The full language reference, with worked examples, is `docs/mapping.md`.

mod coerce;
pub(crate) mod condition;
mod normalize;
mod pointer;
mod template;
mod transform;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::code::{is_valid_code, sanitize_code};
use crate::structure::{AttributeType, FamilyStructure};
use crate::{DamAsset, PimAsset, PimValue};

use coerce::{coerce, show, Target};
use condition::{is_empty, Cond};
use template::Lookup;
use transform::{Step, StepEnv};

pub use condition::{Condition, Test};
pub use pointer::JsonPointer;
pub use transform::{Capture, MapSource, Transform, Unmapped, ValueMap, ValueMaps};

/// Default asset-code template: the DAM id.
pub const DEFAULT_ASSET_CODE_TEMPLATE: &str = "{{ dam_id }}";

fn default_asset_code() -> String {
    DEFAULT_ASSET_CODE_TEMPLATE.to_owned()
}

/// The mapping of one asset family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyMapping {
    /// Template of the asset code; the result is trimmed and sanitised (see [`crate::code`]).
    /// Default: `{{ dam_id }}`.
    #[serde(default = "default_asset_code")]
    pub asset_code: String,
    /// The value rules. Default: none.
    #[serde(default)]
    pub values: Vec<ValueRule>,
}

impl Default for FamilyMapping {
    fn default() -> Self {
        Self {
            asset_code: default_asset_code(),
            values: Vec::new(),
        }
    }
}

/// What a rule does when its transforms or the type coercion fail on an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The asset fails to map (the error names the attribute and rule). The default.
    #[default]
    Fail,
    /// The rule is passed over, as if its `when` did not hold (the next rule for the same value
    /// is tried; if none applies, the value is not sent).
    Skip,
    /// The rule's result is empty: its `default`, else the next rule, else `null`.
    Default,
}

impl OnError {
    fn is_fail(&self) -> bool {
        *self == OnError::Fail
    }
}

/// One mapped value: fills one (attribute, locale, channel) of the Akeneo asset — or, with
/// `locales`, one per listed locale.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Akeneo attribute code.
    pub attribute: String,
    /// Source: a JSON pointer into the DAM record (`/metadata/title`).
    #[serde(default)]
    pub from: Option<String>,
    /// Source: a minijinja template rendered over the DAM record (its top-level keys, plus
    /// `dam_id` and `dam_updated`).
    #[serde(default)]
    pub template: Option<String>,
    /// Source: a constant.
    #[serde(default)]
    pub value: Option<Value>,
    /// Source: one JSON pointer per locale (`{ en_US = "/title", fr_FR = "/title_fr" }`); the rule
    /// fills one value per locale, each as if written with `from` and `locale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locales: Option<BTreeMap<String, String>>,
    /// Steps applied to the source's value, in order. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<Transform>,
    /// Used when the result is empty (missing, `null`, blank text, empty list). Not transformed;
    /// coerced to the attribute's type.
    #[serde(default)]
    pub default: Option<Value>,
    /// The rule applies only to assets for which this holds. Default: every asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// What a failing transform or coercion does. Default: `fail`.
    #[serde(default, skip_serializing_if = "OnError::is_fail")]
    pub on_error: OnError,
    /// Locale of the value (only for attributes with `value_per_locale`).
    #[serde(default)]
    pub locale: Option<String>,
    /// Channel of the value (only for attributes with `value_per_channel`).
    #[serde(default)]
    pub channel: Option<String>,
}

/// What [`CompiledMapping::compile`] checks the mapping against, beyond the mapping itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileContext<'a> {
    /// The family structure, when known (cached from the PIM): rules are checked against it and
    /// values coerced to the attribute types. Default: none (no checks, no coercion).
    pub structure: Option<&'a FamilyStructure>,
    /// The family's named value maps (`[families.maps.<name>]`), used by `{ map = "<name>" }`.
    /// Default: none.
    pub maps: Option<&'a ValueMaps>,
    /// Attributes whose missing options the connector creates: map targets and constants are not
    /// checked against their current options. Default: none.
    pub create_missing_options: &'a [String],
}

/// Why a mapping could not be built or applied.
///
/// `key` is the path of the offending configuration key relative to the family table
/// (`values[3]`, `values[3].transform[1]`, `values[0].locales.fr_FR`, `asset_code`), so a
/// caller can point at the line (`families[i].` + `key`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct MappingError {
    /// The attribute concerned (`None` for the asset code).
    pub attribute: Option<String>,
    /// The index of the rule in `values` (`None` for the asset code).
    pub rule: Option<usize>,
    /// The configuration key, relative to the family table.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.attribute, &self.key) {
            (Some(a), Some(k)) => write!(f, "attribute `{a}` ({k}): {}", self.message),
            (Some(a), None) => write!(f, "attribute `{a}`: {}", self.message),
            (None, Some(k)) => write!(f, "{k}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl MappingError {
    fn code(message: impl Into<String>) -> Self {
        Self {
            attribute: None,
            rule: None,
            key: Some("asset_code".into()),
            message: message.into(),
        }
    }

    fn rule(
        attribute: &str,
        rule: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            attribute: Some(attribute.to_owned()),
            rule: Some(rule),
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

#[derive(Debug)]
enum Source {
    Pointer(JsonPointer),
    Template {
        name: String,
        fast: Option<Lookup>,
    },
    /// A constant, already transformed and coerced (`None`: empty).
    Fixed(Option<Value>),
}

#[derive(Debug)]
struct CompiledRule {
    index: usize,
    key: String,
    source: Source,
    /// Each step with its index in `transform`.
    steps: Vec<(usize, Step)>,
    default: Option<Value>,
    when: Option<Cond>,
    on_error: OnError,
}

impl CompiledRule {
    /// Whether the rule gives a value to every asset (later alternatives can never apply).
    fn always_gives(&self) -> bool {
        self.when.is_none()
            && self.on_error != OnError::Skip
            && (self.default.is_some() || matches!(self.source, Source::Fixed(Some(_))))
    }
}

/// One (locale, channel) value of an attribute, and the rules that may fill it.
#[derive(Debug)]
struct Slot {
    locale: Option<String>,
    channel: Option<String>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
struct AttributeSlots {
    attribute: String,
    target: Target,
    slots: Vec<Slot>,
}

#[derive(Debug)]
enum CodeSource {
    Lookup(Lookup),
    Template,
}

/// A family mapping ready to apply.
#[derive(Debug)]
pub struct CompiledMapping {
    env: Environment<'static>,
    code: CodeSource,
    attributes: Vec<AttributeSlots>,
}

const CODE_TEMPLATE: &str = "__asset_code";

/// The shape of a rule's value, as far as it is known before seeing an asset.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Scalar,
    List,
    Table,
    Unknown,
}

fn shape_of(v: &Value) -> Shape {
    match v {
        Value::Array(_) => Shape::List,
        Value::Object(_) => Shape::Table,
        _ => Shape::Scalar,
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

fn single_valued(kind: AttributeType) -> bool {
    !matches!(
        kind,
        AttributeType::MultipleOptions | AttributeType::AutoTagging | AttributeType::Unknown
    )
}

fn options_list(options: &std::collections::BTreeSet<String>) -> String {
    let mut list: Vec<&str> = options.iter().map(String::as_str).take(12).collect();
    if options.len() > 12 {
        list.push("…");
    }
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// One rule as written, or one locale of a `locales` rule.
struct Variant<'r> {
    key: String,
    from_key: String,
    from: Option<&'r str>,
    locale: Option<&'r str>,
}

impl CompiledMapping {
    /// Compiles a mapping; with `structure`, checks every rule against the family (see
    /// [`CompiledMapping::compile`]).
    pub fn new(
        mapping: &FamilyMapping,
        structure: Option<&FamilyStructure>,
    ) -> Result<Self, MappingError> {
        Self::compile(
            mapping,
            &CompileContext {
                structure,
                ..CompileContext::default()
            },
        )
    }

    /// Compiles a mapping: parses templates and pointers, compiles regexes and conditions,
    /// indexes value maps. With a structure, every rule is checked against the family: the
    /// attribute exists and is writable; a locale is given exactly when the attribute is
    /// localizable and a channel exactly when it is scopable; the rule's value fits the type (no
    /// list for a single-valued attribute, no `date` step for a number, ...); constants and
    /// defaults coerce; value-map targets and constants are existing option codes (when the
    /// options are known and not in `create_missing_options`). Errors name the attribute, the
    /// rule index and the key.
    pub fn compile(mapping: &FamilyMapping, cx: &CompileContext<'_>) -> Result<Self, MappingError> {
        let mut env = template::environment();
        env.add_template_owned(CODE_TEMPLATE, mapping.asset_code.clone())
            .map_err(|e| MappingError::code(format!("template: {e}")))?;
        template::probe(&env, CODE_TEMPLATE).map_err(MappingError::code)?;
        let code = match template::fast_path(&mapping.asset_code) {
            Some(l) => CodeSource::Lookup(l),
            None => CodeSource::Template,
        };
        let mut attributes: Vec<AttributeSlots> = Vec::new();
        let mut by_attribute: HashMap<String, usize> = HashMap::new();
        for (i, r) in mapping.values.iter().enumerate() {
            let attr = r.attribute.as_str();
            let err = |key: String, m: String| MappingError::rule(attr, i, key, m);
            let base = format!("values[{i}]");
            let variants: Vec<Variant<'_>> = match &r.locales {
                Some(locales) => {
                    if r.from.is_some() || r.template.is_some() || r.value.is_some() {
                        return Err(err(
                            format!("{base}.locales"),
                            "`locales` is a source: give it instead of `from`, `template` or `value`".into(),
                        ));
                    }
                    if r.locale.is_some() {
                        return Err(err(
                            format!("{base}.locale"),
                            "give either `locale` or `locales`, not both".into(),
                        ));
                    }
                    if locales.is_empty() {
                        return Err(err(
                            format!("{base}.locales"),
                            "`locales` is empty: list at least one locale".into(),
                        ));
                    }
                    locales
                        .iter()
                        .map(|(l, p)| Variant {
                            key: base.clone(),
                            from_key: format!("{base}.locales.{l}"),
                            from: Some(p.as_str()),
                            locale: Some(l.as_str()),
                        })
                        .collect()
                }
                None => vec![Variant {
                    key: base.clone(),
                    from_key: format!("{base}.from"),
                    from: r.from.as_deref(),
                    locale: r.locale.as_deref(),
                }],
            };
            for v in variants {
                let (target, rule) = compile_rule(&mut env, cx, i, r, &v)?;
                let slot_at = *by_attribute.entry(r.attribute.clone()).or_insert_with(|| {
                    attributes.push(AttributeSlots {
                        attribute: r.attribute.clone(),
                        target,
                        slots: Vec::new(),
                    });
                    attributes.len() - 1
                });
                let group = &mut attributes[slot_at];
                let locale = v.locale.map(str::to_owned);
                let channel = r.channel.clone();
                match group
                    .slots
                    .iter_mut()
                    .find(|s| s.locale == locale && s.channel == channel)
                {
                    Some(slot) => {
                        if let Some(earlier) = slot.rules.iter().find(|r| r.always_gives()) {
                            return Err(err(
                                rule.key.clone(),
                                format!(
                                    "this rule can never apply: rule {} already gives the same value (locale {}, channel {}) to every asset; give that rule a `when`, or remove one",
                                    earlier.key,
                                    locale.as_deref().unwrap_or("none"),
                                    channel.as_deref().unwrap_or("none"),
                                ),
                            ));
                        }
                        slot.rules.push(rule);
                    }
                    None => group.slots.push(Slot {
                        locale,
                        channel,
                        rules: vec![rule],
                    }),
                }
            }
        }
        for a in &mut attributes {
            a.slots
                .sort_by(|x, y| (&x.locale, &x.channel).cmp(&(&y.locale, &y.channel)));
        }
        Ok(Self {
            env,
            code,
            attributes,
        })
    }

    fn render(
        &self,
        name: &str,
        asset: &DamAsset,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<String, minijinja::Error> {
        let ctx = ctx.get_or_insert_with(|| template::context(asset));
        self.env.get_template(name)?.render(&*ctx)
    }

    /// The sanitised asset code of a DAM asset.
    pub fn asset_code(&self, asset: &DamAsset) -> Result<String, MappingError> {
        self.code_in(asset, &mut None)
    }

    fn code_in(
        &self,
        asset: &DamAsset,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<String, MappingError> {
        let fast = match &self.code {
            CodeSource::Lookup(l) => l.get(asset),
            CodeSource::Template => None,
        };
        let raw: Cow<'_, str> = match fast {
            Some(Some(s)) => s,
            Some(None) => Cow::Borrowed(""),
            None => Cow::Owned(
                self.render(CODE_TEMPLATE, asset, ctx)
                    .map_err(|e| MappingError::code(format!("template: {e}")))?,
            ),
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(MappingError::code(
                "the asset_code template rendered an empty string",
            ));
        }
        Ok(sanitize_code(raw))
    }

    /// Maps a DAM asset to the PIM asset to write.
    pub fn map(&self, asset: &DamAsset) -> Result<PimAsset, MappingError> {
        let mut ctx = None;
        let code = self.code_in(asset, &mut ctx)?;
        self.map_values(asset, code, &mut ctx)
    }

    /// [`map`](Self::map) for an asset whose code [`asset_code`](Self::asset_code) already
    /// gave (the write path reads the state by code before it maps): the code is not rendered
    /// and sanitised a second time.
    pub fn map_coded(&self, asset: &DamAsset, code: String) -> Result<PimAsset, MappingError> {
        self.map_values(asset, code, &mut None)
    }

    fn map_values(
        &self,
        asset: &DamAsset,
        code: String,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<PimAsset, MappingError> {
        // Collected, then built at once: `BTreeMap::from_iter` sorts and bulk-loads, where
        // inserting one by one would compare attribute codes at every level of the tree.
        let mut mapped: Vec<(String, Vec<PimValue>)> = Vec::with_capacity(self.attributes.len());
        for a in &self.attributes {
            let mut values = Vec::with_capacity(a.slots.len());
            for slot in &a.slots {
                if let Some(data) = self.eval_slot(a, slot, asset, ctx)? {
                    values.push(PimValue {
                        locale: slot.locale.clone(),
                        channel: slot.channel.clone(),
                        data,
                    });
                }
            }
            if !values.is_empty() {
                mapped.push((a.attribute.clone(), values));
            }
        }
        Ok(PimAsset {
            code,
            values: mapped.into_iter().collect(),
        })
    }

    /// The value of one slot: `None` when no rule applies.
    fn eval_slot(
        &self,
        a: &AttributeSlots,
        slot: &Slot,
        asset: &DamAsset,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<Option<Value>, MappingError> {
        let mut applied = false;
        for rule in &slot.rules {
            if let Some(c) = &rule.when {
                if !c.eval(&asset.record) {
                    continue;
                }
            }
            match self.eval_rule(rule, &a.target, asset, ctx) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(message) => match rule.on_error {
                    OnError::Fail => {
                        return Err(MappingError::rule(
                            &a.attribute,
                            rule.index,
                            rule.key.clone(),
                            message,
                        ))
                    }
                    OnError::Skip => continue,
                    OnError::Default => {}
                },
            }
            applied = true;
            if let Some(d) = &rule.default {
                return Ok(Some(d.clone()));
            }
        }
        Ok(applied.then(|| a.target.erased()))
    }

    /// A rule's value for an asset: `Ok(None)` when empty.
    fn eval_rule(
        &self,
        rule: &CompiledRule,
        target: &Target,
        asset: &DamAsset,
        ctx: &mut Option<minijinja::Value>,
    ) -> Result<Option<Value>, String> {
        let raw = match &rule.source {
            Source::Fixed(v) => return Ok(v.clone()),
            Source::Pointer(p) => match p.get(&asset.record) {
                Some(v) if !is_empty(v) => v.clone(),
                _ => return Ok(None),
            },
            Source::Template { name, fast } => {
                let text = match fast.as_ref().and_then(|l| l.get(asset)) {
                    Some(Some(s)) => s.into_owned(),
                    Some(None) => return Ok(None),
                    None => self
                        .render(name, asset, ctx)
                        .map_err(|e| format!("template: {e}"))?,
                };
                if text.trim().is_empty() {
                    return Ok(None);
                }
                Value::String(text)
            }
        };
        let v = run_steps(&rule.steps, raw)?;
        if is_empty(&v) {
            return Ok(None);
        }
        let v = coerce(target, v)?;
        Ok((!is_empty(&v)).then_some(v))
    }
}

fn run_steps(steps: &[(usize, Step)], mut v: Value) -> Result<Value, String> {
    for (k, step) in steps {
        v = step.apply(v).map_err(|e| format!("transform[{k}]: {e}"))?;
    }
    Ok(v)
}

/// Compiles one rule (or one locale of a `locales` rule) into its attribute's target and the
/// compiled rule.
fn compile_rule(
    env: &mut Environment<'static>,
    cx: &CompileContext<'_>,
    i: usize,
    r: &ValueRule,
    v: &Variant<'_>,
) -> Result<(Target, CompiledRule), MappingError> {
    let attr = r.attribute.as_str();
    let base = &v.key;
    let err = |key: String, m: String| MappingError::rule(attr, i, key, m);
    if !is_valid_code(attr) {
        return Err(err(
            format!("{base}.attribute"),
            format!("`{attr}` is not an attribute code (letters, digits and `_`)"),
        ));
    }
    if r.locales.is_none() {
        let sources = [r.from.is_some(), r.template.is_some(), r.value.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if sources != 1 {
            return Err(err(
                base.clone(),
                "give exactly one of `from`, `template`, `value` or `locales`".into(),
            ));
        }
    }
    for (name, val) in [("locale", v.locale), ("channel", r.channel.as_deref())] {
        if val.is_some_and(|s| s.trim().is_empty()) {
            return Err(err(format!("{base}.{name}"), format!("`{name}` is empty")));
        }
    }

    // The attribute, as the structure describes it.
    let attribute = match cx.structure {
        None => None,
        Some(s) => {
            let a = s.attribute(attr).ok_or_else(|| {
                let mut known: Vec<&str> = s.attributes.keys().map(String::as_str).collect();
                known.truncate(20);
                err(
                    format!("{base}.attribute"),
                    format!(
                        "the asset family `{}` has no such attribute (it has: {})",
                        s.code,
                        known.join(", ")
                    ),
                )
            })?;
            if a.kind == AttributeType::AutoTagging {
                return Err(err(
                    format!("{base}.attribute"),
                    "auto_tagging attributes are read-only: they cannot be mapped".into(),
                ));
            }
            match (a.value_per_locale, v.locale) {
                (true, None) => {
                    return Err(err(
                        format!("{base}.locale"),
                        "the attribute is localizable: give a `locale` (or `locales`)".into(),
                    ))
                }
                (false, Some(l)) => {
                    let key = if r.locales.is_some() {
                        v.from_key.clone()
                    } else {
                        format!("{base}.locale")
                    };
                    return Err(err(
                        key,
                        format!("the attribute is not localizable, but locale `{l}` is given"),
                    ));
                }
                _ => {}
            }
            match (a.value_per_channel, &r.channel) {
                (true, None) => {
                    return Err(err(
                        format!("{base}.channel"),
                        "the attribute is scopable: give a `channel`".into(),
                    ))
                }
                (false, Some(c)) => {
                    return Err(err(
                        format!("{base}.channel"),
                        format!("the attribute is not scopable, but channel `{c}` is given"),
                    ))
                }
                _ => {}
            }
            Some(a)
        }
    };
    let target = attribute.map(Target::of).unwrap_or_default();
    let kind = target.kind;
    let known_options = attribute.and_then(|a| {
        let open = cx.create_missing_options.iter().any(|c| c == attr);
        match a.kind {
            AttributeType::SingleOption | AttributeType::MultipleOptions if !open => {
                a.options.as_ref()
            }
            _ => None,
        }
    });
    let check_codes = |key: String, what: &str, data: &Value| -> Result<(), MappingError> {
        let Some(options) = known_options else {
            return Ok(());
        };
        let codes: Vec<&Value> = match data {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for c in codes {
            if let Some(code) = c.as_str() {
                if !options.contains(code) {
                    let is = if what.ends_with(" to") {
                        ", which is"
                    } else {
                        " is"
                    };
                    return Err(err(
                        key,
                        format!(
                            "{what} `{code}`{is} not an option of the attribute (options: {})",
                            options_list(options)
                        ),
                    ));
                }
            }
        }
        Ok(())
    };

    // Transforms.
    let step_env = StepEnv {
        maps: cx.maps,
        max_characters: attribute.and_then(|a| a.max_characters),
        decimals_allowed: attribute.and_then(|a| a.decimals_allowed),
    };
    let mut steps = Vec::with_capacity(r.transform.len());
    for (k, t) in r.transform.iter().enumerate() {
        let step =
            Step::compile(t, &step_env).map_err(|e| err(format!("{base}.transform[{k}]"), e))?;
        steps.push((k, step));
    }

    // Shape and type checks.
    if let Some(kind) = kind {
        let mut shape = match (&r.value, &r.template) {
            (Some(c), _) => shape_of(c),
            (None, Some(_)) => Shape::Scalar,
            (None, None) => Shape::Unknown,
        };
        let mut made_list_at = None;
        for (k, t) in r.transform.iter().enumerate() {
            shape = match t {
                Transform::Split(_) | Transform::Regex { all: true, .. } => {
                    made_list_at = Some(k);
                    Shape::List
                }
                Transform::Join(_) | Transform::First | Transform::Last => Shape::Scalar,
                Transform::Get(_) => Shape::Unknown,
                Transform::Map { .. } if shape == Shape::Scalar => Shape::Unknown,
                _ => shape,
            };
        }
        if single_valued(kind) && shape == Shape::List {
            let why = match made_list_at {
                Some(k) => format!("`{}` (transform[{k}]) makes a list", r.transform[k].name()),
                None => "the constant is a list".to_string(),
            };
            return Err(err(
                match made_list_at {
                    Some(k) => format!("{base}.transform[{k}]"),
                    None => format!("{base}.value"),
                },
                format!(
                    "{why}, but a {} attribute holds one value: add {{ join = \", \" }} or \"first\" after it",
                    kind_name(kind)
                ),
            ));
        }
        if shape == Shape::Table && kind != AttributeType::Unknown {
            return Err(err(
                format!("{base}.value"),
                format!(
                    "a table cannot be the value of a {} attribute",
                    kind_name(kind)
                ),
            ));
        }
        if let Some((k, last)) = r.transform.iter().enumerate().next_back() {
            use AttributeType::*;
            let bad = match last {
                Transform::Date { .. } => !matches!(kind, Date | Text | Unknown),
                Transform::Number { .. } => !matches!(
                    kind,
                    Number | Text | SingleOption | MultipleOptions | Unknown
                ),
                _ => false,
            };
            if bad {
                return Err(err(
                    format!("{base}.transform[{k}]"),
                    format!(
                        "`{}` makes a {} value, but the attribute is a {} attribute",
                        last.name(),
                        if matches!(last, Transform::Date { .. }) {
                            "date"
                        } else {
                            "number"
                        },
                        kind_name(kind)
                    ),
                ));
            }
        }
    }

    // Source.
    let source = if let Some(p) = v.from {
        Source::Pointer(JsonPointer::parse(p).map_err(|e| err(v.from_key.clone(), e))?)
    } else if let Some(t) = &r.template {
        let name = format!("__value_{i}");
        env.add_template_owned(name.clone(), t.clone())
            .map_err(|e| err(format!("{base}.template"), format!("template: {e}")))?;
        template::probe(env, &name).map_err(|e| err(format!("{base}.template"), e))?;
        Source::Template {
            name,
            fast: template::fast_path(t),
        }
    } else {
        let c = r.value.clone().unwrap_or(Value::Null);
        let shown = show(&c);
        let data = run_steps(&steps, c).map_err(|e| {
            err(
                format!("{base}.value"),
                format!("the constant {shown}: {e}"),
            )
        })?;
        let data = if is_empty(&data) {
            None
        } else {
            let d = coerce(&target, data).map_err(|e| err(format!("{base}.value"), e))?;
            check_codes(format!("{base}.value"), "the constant", &d)?;
            Some(d)
        };
        Source::Fixed(data)
    };

    // Option and record codes are sanitised by the coercion: a `sanitize_code` step before it
    // would sanitise twice, and a second pass appends a second hash to an altered code.
    if matches!(
        kind,
        Some(AttributeType::SingleOption | AttributeType::MultipleOptions | AttributeType::Record)
    ) {
        if let Some(k) = r
            .transform
            .iter()
            .position(|t| matches!(t, Transform::SanitizeCode))
        {
            return Err(err(
                format!("{base}.transform[{k}]"),
                "option and record codes are sanitised already; a second `sanitize_code` would append a second hash: remove this step".into(),
            ));
        }
    }

    // Value-map targets must be options (when only order-keeping steps follow the map).
    if known_options.is_some() {
        for (k, t) in r.transform.iter().enumerate() {
            let Transform::Map { map, .. } = t else {
                continue;
            };
            let rest_keeps = r.transform[k + 1..]
                .iter()
                .all(|t| matches!(t, Transform::First | Transform::Last | Transform::Unique));
            if !rest_keeps {
                continue;
            }
            let (name, entries) = match map {
                MapSource::Named(n) => (format!("`{n}`"), cx.maps.and_then(|m| m.get(n))),
                MapSource::Inline(e) => ("(inline)".to_owned(), Some(e)),
            };
            for (from, to) in entries.into_iter().flatten() {
                let Ok(coded) = coerce(&target, to.clone()) else {
                    continue;
                };
                check_codes(
                    format!("{base}.transform[{k}]"),
                    &format!("map {name} sends `{from}` to"),
                    &coded,
                )?;
            }
        }
    }

    // Condition and default.
    let when = r
        .when
        .as_ref()
        .map(|c| Cond::compile(c).map_err(|e| err(format!("{base}.when"), e)))
        .transpose()?;
    let default = match &r.default {
        None => None,
        Some(d) if is_empty(d) => None,
        Some(d) => {
            let c = coerce(&target, d.clone()).map_err(|e| err(format!("{base}.default"), e))?;
            if kind.is_some_and(single_valued) && c.is_array() {
                return Err(err(
                    format!("{base}.default"),
                    "the default is a list, but the attribute holds one value".into(),
                ));
            }
            check_codes(format!("{base}.default"), "the default", &c)?;
            Some(c)
        }
    };
    Ok((
        target,
        CompiledRule {
            index: i,
            key: if r.locales.is_some() {
                v.from_key.clone()
            } else {
                base.clone()
            },
            source,
            steps,
            default,
            when,
            on_error: r.on_error,
        },
    ))
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
        attrs.insert(
            "width".into(),
            AssetAttribute::new("width", AttributeType::Number),
        );
        attrs.insert(
            "tags".into(),
            AssetAttribute::new("tags", AttributeType::MultipleOptions),
        );
        FamilyStructure {
            code: "packshots".into(),
            attribute_as_main_media: Some("media".into()),
            attributes: attrs,
        }
    }

    fn rule(attribute: &str) -> ValueRule {
        ValueRule {
            attribute: attribute.into(),
            ..ValueRule::default()
        }
    }

    fn mapping() -> FamilyMapping {
        FamilyMapping {
            asset_code: "{{ name }}".into(),
            values: vec![
                ValueRule {
                    from: Some("/url".into()),
                    ..rule("media")
                },
                ValueRule {
                    template: Some("{{ metadata.title | upper }}".into()),
                    locale: Some("en_US".into()),
                    ..rule("title")
                },
                ValueRule {
                    from: Some("/metadata/width".into()),
                    ..rule("width")
                },
                ValueRule {
                    from: Some("/metadata/tags".into()),
                    ..rule("tags")
                },
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
    fn mapping_with_the_code_given_is_mapping() {
        let m = CompiledMapping::new(&mapping(), Some(&structure())).unwrap();
        for record in [
            json!({"id": "a1", "name": "shoe-red.jpg", "url": "https://dam.example.com/files/x.jpg",
                   "metadata": {"title": "Red shoe", "width": 1200, "tags": ["a"]}}),
            json!({"id": "a2", "name": "n"}),
        ] {
            let asset = dam(record);
            let code = m.asset_code(&asset).unwrap();
            assert_eq!(m.map_coded(&asset, code).unwrap(), m.map(&asset).unwrap());
        }
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
        // Multiple options are erased with `[]`: Akeneo refuses `null` for them.
        assert_eq!(a.values["tags"][0].data, json!([]));
        let a = m
            .map(&dam(
                json!({"id": "a1", "name": "n", "metadata": {"tags": []}}),
            ))
            .unwrap();
        assert_eq!(a.values["tags"][0].data, json!([]));
    }

    #[test]
    fn rules_are_checked_against_the_structure() {
        let mut mp = mapping();
        mp.values.push(ValueRule {
            from: Some("/x".into()),
            ..rule("nope")
        });
        let e = CompiledMapping::new(&mp, Some(&structure())).unwrap_err();
        assert_eq!(e.attribute.as_deref(), Some("nope"));
        assert_eq!(e.rule, Some(4));

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
            .map(&dam(
                json!({"id": "a", "name": "n", "metadata": {"width": "wide"}}),
            ))
            .unwrap_err();
        assert_eq!(e.attribute.as_deref(), Some("width"));
        assert_eq!(e.rule, Some(2));
    }

    #[test]
    fn compiled_mappings_are_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CompiledMapping>();
        send_sync::<crate::routing::CompiledRoutes>();
    }

    #[test]
    fn empty_code_is_an_error() {
        let m = CompiledMapping::new(&mapping(), None).unwrap();
        assert!(m.asset_code(&dam(json!({"id": "a"}))).is_err());
        let d = CompiledMapping::new(&FamilyMapping::default(), None).unwrap();
        assert_eq!(
            d.asset_code(&dam(json!({"id": "a-1"}))).unwrap(),
            sanitize_code("a-1")
        );
    }
}
