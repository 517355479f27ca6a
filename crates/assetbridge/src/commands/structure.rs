//! `assetbridge structure apply`: makes each asset family in the PIM look like its
//! `[families.structure]` table — idempotently.
//!
//! For each family: read the family, its attributes and the options of the option attributes
//! the configuration lists; compute the difference; PATCH only what is missing or different
//! (the family, each attribute, each option, then the family's main media / naming convention /
//! product link rules once the attributes they name exist). Nothing is ever deleted. An
//! attribute whose immutable `type`, `value_per_locale` or `value_per_channel` differs from the
//! configuration is an error naming the configuration line, reported before anything is written.
//! A second run with the same configuration sends no PATCH at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::anyhow;
use assetbridge_akeneo::{AkeneoClient, AkeneoError, Upserted};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::ConfigArg;
use crate::config::{self, AppConfig};
use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::structure_config::{AttributeSpec, StructureConfig, MAX_ATTRIBUTES, MAX_OPTIONS};
use crate::CliResult;

/// Manages the PIM's asset families from the configuration (`[families.structure]`).
#[derive(Debug, Args)]
pub struct StructureArgs {
    #[command(subcommand)]
    pub command: StructureCommand,
}

#[derive(Debug, Subcommand)]
pub enum StructureCommand {
    Apply(ApplyArgs),
}

/// Creates or updates the asset families, attributes, options, naming conventions and product
/// link rules of `[families.structure]` in the PIM.
///
/// Idempotent: reads the PIM's family, attributes and options, then PATCHes only what is
/// missing or different, and prints each item as created, updated (with the fields) or
/// unchanged. Never deletes anything. An existing attribute whose type, value_per_locale or
/// value_per_channel differs (Akeneo cannot change them) is a configuration error (exit 2),
/// found before anything is written.
///
/// Naming conventions and product link rules run in Akeneo only when an asset is created:
/// assets that already exist are not linked by a rule applied later (see docs/linking.md).
///
/// Example:
///   assetbridge structure apply --config assetbridge.toml --dry-run
///   assetbridge structure apply --config assetbridge.toml --family packshots
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print what would be written; write nothing (only GET requests).
    #[arg(long)]
    pub dry_run: bool,
    /// Only these families (repeatable). Default: every family with a `structure` table.
    #[arg(long = "family", value_name = "CODE")]
    pub families: Vec<String>,
}

pub async fn run(args: StructureArgs, log: LogArgs) -> CliResult {
    match args.command {
        StructureCommand::Apply(a) => apply(a, log).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The plan

/// What one step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Create,
    /// The fields that differ.
    Update(Vec<String>),
    Unchanged,
}

/// What a step is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The family itself (created with its labels).
    Family,
    Attribute(String),
    /// (attribute, option)
    Option(String, String),
    /// Labels, main media, naming convention, product link rules of an existing family.
    Properties,
}

/// One PATCH to send (or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub item: Item,
    pub outcome: Outcome,
    /// The PATCH body (`None` when unchanged).
    pub body: Option<Value>,
}

/// The difference between one family's configuration and the PIM.
#[derive(Debug, Default)]
pub struct FamilyDiff {
    pub steps: Vec<Step>,
    /// Changes Akeneo cannot make: (key relative to `structure`, message).
    pub conflicts: Vec<(String, String)>,
}

/// `null`-valued keys dropped everywhere (Akeneo renders absent optional keys as null or leaves
/// them out), so that what was sent and what is read back compare equal.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// A naming convention as read from the PIM: `{}`, `[]` and `null` all mean none.
fn naming_of(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(v) => normalized(v),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Does the PIM's value `have` already say what the configuration `want`s for key `k`?
fn same_setting(k: &str, want: &Value, have: Option<&Value>) -> bool {
    let have = have.unwrap_or(&Value::Null);
    match k {
        "max_characters" | "max_file_size" | "min_value" | "max_value" => {
            match (as_number(want), as_number(have)) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => want == have,
            }
        }
        "allowed_extensions" => {
            let list = |v: &Value| -> Vec<String> {
                let mut l: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|e| e.trim_start_matches('.').to_lowercase())
                    .collect();
                l.sort();
                l
            };
            list(want) == list(have)
        }
        _ => want == have,
    }
}

/// The labels of `want` that `have` (a PIM `labels` object) lacks or says differently.
fn changed_labels(want: &BTreeMap<String, String>, have: Option<&Value>) -> Map<String, Value> {
    want.iter()
        .filter(|(l, t)| have.and_then(|h| h.get(*l)).and_then(Value::as_str) != Some(t.as_str()))
        .map(|(l, t)| (l.clone(), json!(t)))
        .collect()
}

fn attribute_diff(
    spec: &AttributeSpec,
    index: usize,
    have: Option<&Value>,
    conflicts: &mut Vec<(String, String)>,
) -> Step {
    let item = Item::Attribute(spec.code.clone());
    let Some(have) = have else {
        return Step {
            item,
            outcome: Outcome::Create,
            body: Some(spec.create_body()),
        };
    };
    let key = |k: &str| format!("attributes[{index}].{k}");
    let pim_type = have.get("type").and_then(Value::as_str).unwrap_or("?");
    let mut immutable = false;
    if pim_type != spec.kind.as_str() {
        immutable = true;
        conflicts.push((
            key("type"),
            format!(
                "attribute `{}` exists in the PIM as `{pim_type}`, not `{}`; Akeneo cannot change an attribute's type (use another code, or write `type = \"{pim_type}\"`)",
                spec.code,
                spec.kind.as_str()
            ),
        ));
    }
    for (k, want) in [
        ("value_per_locale", spec.value_per_locale),
        ("value_per_channel", spec.value_per_channel),
    ] {
        let pim = have.get(k).and_then(Value::as_bool).unwrap_or(false);
        if pim != want {
            immutable = true;
            conflicts.push((
                key(k),
                format!(
                    "attribute `{}` has {k} = {pim} in the PIM; Akeneo cannot change it (use another code, or write `{k} = {pim}`)",
                    spec.code
                ),
            ));
        }
    }
    let mut fields = Vec::new();
    let mut body = Map::new();
    body.insert("code".into(), json!(spec.code));
    let labels = changed_labels(&spec.labels, have.get("labels"));
    if !labels.is_empty() {
        fields.extend(labels.keys().map(|l| format!("labels.{l}")));
        body.insert("labels".into(), Value::Object(labels));
    }
    if !immutable {
        for (k, want) in spec.settings() {
            if !same_setting(k, &want, have.get(k)) {
                fields.push(k.to_owned());
                body.insert(k.into(), want);
            }
        }
    }
    if fields.is_empty() {
        Step {
            item,
            outcome: Outcome::Unchanged,
            body: None,
        }
    } else {
        Step {
            item,
            outcome: Outcome::Update(fields),
            body: Some(Value::Object(body)),
        }
    }
}

/// Compares the configuration with what the PIM holds: `family` (`None`: it does not exist),
/// its `attributes`, and the `options` of the option attributes (by attribute code; an
/// attribute missing from the map has none).
pub fn diff(
    code: &str,
    spec: &StructureConfig,
    family: Option<&Value>,
    attributes: &[Value],
    options: &BTreeMap<String, Vec<Value>>,
) -> FamilyDiff {
    let mut out = FamilyDiff::default();
    if family.is_none() {
        let mut body = Map::new();
        body.insert("code".into(), json!(code));
        if !spec.labels.is_empty() {
            body.insert("labels".into(), json!(spec.labels));
        }
        out.steps.push(Step {
            item: Item::Family,
            outcome: Outcome::Create,
            body: Some(Value::Object(body)),
        });
    }
    let by_code: BTreeMap<&str, &Value> = attributes
        .iter()
        .filter_map(|a| a.get("code").and_then(Value::as_str).map(|c| (c, a)))
        .collect();
    let creating = spec
        .attributes
        .iter()
        .filter(|a| !by_code.contains_key(a.code.as_str()))
        .count();
    if by_code.len() + creating > MAX_ATTRIBUTES {
        out.conflicts.push((
            "attributes".into(),
            format!(
                "the family would have {} attributes ({} in the PIM, {creating} to create); Akeneo allows at most {MAX_ATTRIBUTES}",
                by_code.len() + creating,
                by_code.len()
            ),
        ));
    }
    for (i, a) in spec.attributes.iter().enumerate() {
        let have = by_code.get(a.code.as_str()).copied();
        let conflicts_before = out.conflicts.len();
        out.steps
            .push(attribute_diff(a, i, have, &mut out.conflicts));
        if out.conflicts.len() > conflicts_before || a.options.is_empty() {
            continue;
        }
        let existing: BTreeMap<&str, &Value> = options
            .get(&a.code)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("code").and_then(Value::as_str).map(|c| (c, o)))
            .collect();
        let new = a
            .options
            .iter()
            .filter(|o| !existing.contains_key(o.code.as_str()))
            .count();
        if existing.len() + new > MAX_OPTIONS {
            out.conflicts.push((
                format!("attributes[{i}].options"),
                format!(
                    "attribute `{}` would have {} options; Akeneo allows at most {MAX_OPTIONS}",
                    a.code,
                    existing.len() + new
                ),
            ));
            continue;
        }
        for o in &a.options {
            let item = Item::Option(a.code.clone(), o.code.clone());
            let step = match existing.get(o.code.as_str()) {
                None => Step {
                    item,
                    outcome: Outcome::Create,
                    body: Some(json!({"code": o.code, "labels": o.labels})),
                },
                Some(h) => {
                    let labels = changed_labels(&o.labels, h.get("labels"));
                    if labels.is_empty() {
                        Step {
                            item,
                            outcome: Outcome::Unchanged,
                            body: None,
                        }
                    } else {
                        Step {
                            item,
                            outcome: Outcome::Update(
                                labels.keys().map(|l| format!("labels.{l}")).collect(),
                            ),
                            body: Some(json!({"code": o.code, "labels": labels})),
                        }
                    }
                }
            };
            out.steps.push(step);
        }
    }
    // The family's own properties, last: they name attributes that must exist first.
    let empty = Value::Object(Map::new());
    let have = family.unwrap_or(&empty);
    let mut fields = Vec::new();
    let mut body = Map::new();
    body.insert("code".into(), json!(code));
    if family.is_some() {
        let labels = changed_labels(&spec.labels, have.get("labels"));
        if !labels.is_empty() {
            fields.extend(labels.keys().map(|l| format!("labels.{l}")));
            body.insert("labels".into(), Value::Object(labels));
        }
    }
    if let Some(main) = &spec.attribute_as_main_media {
        if have.get("attribute_as_main_media").and_then(Value::as_str) != Some(main.as_str()) {
            fields.push("attribute_as_main_media".into());
            body.insert("attribute_as_main_media".into(), json!(main));
        }
    }
    if let Some(nc) = spec.naming_json() {
        if naming_of(have.get("naming_convention")) != normalized(&nc) {
            fields.push("naming_convention".into());
            body.insert("naming_convention".into(), nc);
        }
    }
    if let Some(rules) = spec.rules_json() {
        let pim = have
            .get("product_link_rules")
            .map(normalized)
            .unwrap_or(Value::Array(vec![]));
        let pim = if pim.is_null() {
            Value::Array(vec![])
        } else {
            pim
        };
        if pim != normalized(&rules) {
            fields.push("product_link_rules".into());
            body.insert("product_link_rules".into(), rules);
        }
    }
    out.steps.push(if fields.is_empty() {
        Step {
            item: Item::Properties,
            outcome: Outcome::Unchanged,
            body: None,
        }
    } else {
        Step {
            item: Item::Properties,
            outcome: Outcome::Update(fields),
            body: Some(Value::Object(body)),
        }
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Reading the PIM, applying, printing

fn pim_failure(family: &str, what: &str, e: AkeneoError) -> Failure {
    let mut msg = format!("asset family `{family}`, {what}: {e}");
    if let AkeneoError::Request {
        errors: Some(errors),
        ..
    } = &e
    {
        let _ = write!(msg, "; errors: {errors}");
    }
    Failure::Fatal(anyhow!(msg))
}

/// Reads what the diff needs from the PIM (GET requests only).
async fn read_and_diff(
    pim: &AkeneoClient,
    code: &str,
    spec: &StructureConfig,
) -> Result<FamilyDiff, Failure> {
    let family = pim
        .asset_family(code)
        .await
        .map_err(|e| pim_failure(code, "reading the family", e))?;
    let mut attributes = Vec::new();
    let mut options = BTreeMap::new();
    if family.is_some() {
        attributes = pim
            .asset_attributes(code)
            .await
            .map_err(|e| pim_failure(code, "reading the attributes", e))?;
        for a in &spec.attributes {
            if a.options.is_empty() {
                continue;
            }
            // Only option attributes that exist as such: others are created (no options yet)
            // or in conflict.
            let is_option_attribute = attributes.iter().any(|p| {
                p.get("code").and_then(Value::as_str) == Some(a.code.as_str())
                    && matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("single_option" | "multiple_options")
                    )
            });
            if is_option_attribute {
                let list = pim
                    .asset_attribute_options(code, &a.code)
                    .await
                    .map_err(|e| {
                        pim_failure(code, &format!("reading the options of `{}`", a.code), e)
                    })?;
                options.insert(a.code.clone(), list);
            }
        }
    }
    Ok(diff(code, spec, family.as_ref(), &attributes, &options))
}

fn describe(item: &Item) -> String {
    match item {
        Item::Family => "asset family".to_owned(),
        Item::Attribute(a) => format!("attribute `{a}`"),
        Item::Option(a, o) => format!("option `{a}.{o}`"),
        Item::Properties => "family properties".to_owned(),
    }
}

#[derive(Default)]
struct Tally {
    created: usize,
    updated: usize,
    unchanged: usize,
    patches: usize,
}

fn line(out: &mut String, step: &Step, dry_run: bool, tally: &mut Tally) {
    let (verb, fields) = match (&step.outcome, dry_run) {
        (Outcome::Create, false) => ("created", String::new()),
        (Outcome::Create, true) => ("to create", String::new()),
        (Outcome::Update(f), false) => ("updated", format!(": {}", f.join(", "))),
        (Outcome::Update(f), true) => ("to update", format!(": {}", f.join(", "))),
        (Outcome::Unchanged, _) => ("unchanged", String::new()),
    };
    match step.outcome {
        Outcome::Create => tally.created += 1,
        Outcome::Update(_) => tally.updated += 1,
        Outcome::Unchanged => tally.unchanged += 1,
    }
    let _ = writeln!(out, "  {:<32} {verb}{fields}", describe(&step.item));
}

/// Sends one step's PATCH.
async fn send(pim: &AkeneoClient, family: &str, step: &Step) -> Result<Upserted, Failure> {
    let body = step.body.as_ref().expect("a step to send has a body");
    let r = match &step.item {
        Item::Family | Item::Properties => pim.upsert_asset_family(family, body).await,
        Item::Attribute(a) => pim.upsert_asset_attribute(family, a, body).await,
        Item::Option(a, o) => pim.upsert_asset_attribute_option(family, a, o, body).await,
    };
    r.map_err(|e| pim_failure(family, &describe(&step.item), e))
}

fn conflicts_error(
    loaded: &assetbridge_config::Loaded<AppConfig>,
    index: usize,
    conflicts: &[(String, String)],
    written: &str,
) -> Failure {
    let shown: Vec<String> = conflicts
        .iter()
        .map(|(key, message)| {
            loaded
                .source
                .error_at(
                    &format!("families[{index}].structure.{key}"),
                    message.clone(),
                )
                .to_string()
        })
        .collect();
    Failure::Config(format!("{}\n{written}", shown.join("\nerror: ")))
}

async fn apply(args: ApplyArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    let cfg = &loaded.value;
    for f in &args.families {
        match cfg.families.iter().find(|c| &c.code == f) {
            None => {
                return Err(Failure::Config(format!(
                    "--family {f}: no such family in the configuration"
                )))
            }
            Some(c) if c.structure.is_none() => {
                return Err(Failure::Config(format!(
                    "--family {f}: the family has no [families.structure] table"
                )))
            }
            Some(_) => {}
        }
    }
    let selected: Vec<(usize, &str, &StructureConfig)> = cfg
        .families
        .iter()
        .enumerate()
        .filter(|(_, f)| args.families.is_empty() || args.families.contains(&f.code))
        .filter_map(|(i, f)| f.structure.as_ref().map(|s| (i, f.code.as_str(), s)))
        .collect();
    if selected.is_empty() {
        return Err(Failure::Config(
            "no family has a [families.structure] table: nothing to apply".into(),
        ));
    }
    let pim = AkeneoClient::new(cfg.akeneo.clone())
        .map_err(|e| Failure::from(loaded.source.error_at("akeneo", e.to_string())))?;

    // 1. Read everything and compute every difference before writing anything.
    let mut plans = Vec::new();
    for (i, code, spec) in &selected {
        let d = read_and_diff(&pim, code, spec).await?;
        if !d.conflicts.is_empty() {
            return Err(conflicts_error(
                &loaded,
                *i,
                &d.conflicts,
                "nothing was written",
            ));
        }
        plans.push((*i, *code, *spec, d));
    }

    // 2. Print (dry run) or apply, family by family.
    let mut total = Tally::default();
    for (i, code, spec, mut d) in plans {
        let mut out = String::new();
        let mut tally = Tally::default();
        let _ = writeln!(out, "asset family `{code}`");
        if args.dry_run {
            for step in &d.steps {
                line(&mut out, step, true, &mut tally);
            }
            if matches!(d.steps.first().map(|s| &s.item), Some(Item::Family)) {
                let _ = writeln!(
                    out,
                    "  (Akeneo adds its `label` and `media` attributes to a new family: the attributes are compared again once it exists)"
                );
            }
        } else {
            if let Some(first) = d.steps.first().filter(|s| s.item == Item::Family) {
                send(&pim, code, first).await?;
                tally.patches += 1;
                line(&mut out, first, false, &mut tally);
                // The new family holds the attributes Akeneo creates with it: compare again.
                d = read_and_diff(&pim, code, spec).await?;
                if !d.conflicts.is_empty() {
                    print!("{out}");
                    return Err(conflicts_error(
                        &loaded,
                        i,
                        &d.conflicts,
                        "only the asset family itself was created (with the attributes Akeneo gives every new family)",
                    ));
                }
            }
            for step in &d.steps {
                if step.body.is_some() {
                    send(&pim, code, step).await?;
                    tally.patches += 1;
                }
                line(&mut out, step, false, &mut tally);
            }
            pim.invalidate_structure(code);
        }
        let _ = writeln!(
            out,
            "  {} {}, {} {}, {} unchanged; {} PATCH request{}",
            tally.created,
            if args.dry_run { "to create" } else { "created" },
            tally.updated,
            if args.dry_run { "to update" } else { "updated" },
            tally.unchanged,
            tally.patches,
            if tally.patches == 1 { "" } else { "s" }
        );
        print!("{out}");
        total.created += tally.created;
        total.updated += tally.updated;
        total.unchanged += tally.unchanged;
        total.patches += tally.patches;
    }
    if args.dry_run {
        println!("dry run: nothing was written");
    } else if total.patches == 0 {
        println!("the PIM already matches the configuration: nothing to write");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> StructureConfig {
        assetbridge_config::load_str::<StructureConfig>(
            text,
            "s.toml",
            &|_: &str| None,
            std::path::Path::new("."),
        )
        .unwrap()
        .value
    }

    const SPEC: &str = r#"
labels = { en_US = "Packshots" }
attribute_as_main_media = "url"
naming_convention = { source = { property = "code" }, pattern = "/^(?P<sku>[A-Z0-9]+)_/" }

[[attributes]]
code = "url"
type = "media_link"
prefix = "https://dam/"

[[attributes]]
code = "sku"
type = "text"
labels = { en_US = "SKU" }

[[attributes]]
code = "view"
type = "single_option"
options = [ { code = "front", labels = { en_US = "Front" } }, { code = "back" } ]

[[product_link_rules]]
product_selections = [ { field = "sku", operator = "EQUALS", value = "{{sku}}" } ]
assign_assets_to = [ { attribute = "packshots", mode = "add" } ]
"#;

    fn outcomes(d: &FamilyDiff) -> Vec<(Item, Outcome)> {
        d.steps
            .iter()
            .map(|s| (s.item.clone(), s.outcome.clone()))
            .collect()
    }

    #[test]
    fn a_missing_family_is_created_with_everything() {
        let s = spec(SPEC);
        let d = diff("packshots", &s, None, &[], &BTreeMap::new());
        assert!(d.conflicts.is_empty());
        assert_eq!(
            outcomes(&d),
            vec![
                (Item::Family, Outcome::Create),
                (Item::Attribute("url".into()), Outcome::Create),
                (Item::Attribute("sku".into()), Outcome::Create),
                (Item::Attribute("view".into()), Outcome::Create),
                (Item::Option("view".into(), "front".into()), Outcome::Create),
                (Item::Option("view".into(), "back".into()), Outcome::Create),
                (
                    Item::Properties,
                    Outcome::Update(vec![
                        "attribute_as_main_media".into(),
                        "naming_convention".into(),
                        "product_link_rules".into()
                    ])
                ),
            ]
        );
        assert_eq!(
            d.steps[0].body,
            Some(json!({"code": "packshots", "labels": {"en_US": "Packshots"}}))
        );
    }

    /// The PIM as the emulator renders it after an apply.
    fn applied(s: &StructureConfig) -> (Value, Vec<Value>, BTreeMap<String, Vec<Value>>) {
        let family = json!({
            "code": "packshots", "labels": {"en_US": "Packshots", "fr_FR": "Photos"},
            "attribute_as_main_media": "url",
            "naming_convention": s.naming_json().unwrap(),
            "product_link_rules": s.rules_json().unwrap(),
            "transformations": []
        });
        let attributes = vec![
            json!({"code": "label", "type": "text", "value_per_locale": true, "value_per_channel": false, "labels": {}}),
            json!({"code": "url", "type": "media_link", "value_per_locale": false, "value_per_channel": false,
                   "labels": {}, "prefix": "https://dam/", "suffix": null, "media_type": "image"}),
            json!({"code": "sku", "type": "text", "value_per_locale": false, "value_per_channel": false,
                   "labels": {"en_US": "SKU", "de_DE": "Artikel"}, "max_characters": null}),
            json!({"code": "view", "type": "single_option", "value_per_locale": false, "value_per_channel": false, "labels": {}}),
        ];
        let options = BTreeMap::from([(
            "view".to_owned(),
            vec![
                json!({"code": "front", "labels": {"en_US": "Front"}}),
                json!({"code": "back", "labels": {}}),
                json!({"code": "side", "labels": {}}),
            ],
        )]);
        (family, attributes, options)
    }

    #[test]
    fn a_matching_pim_needs_no_write() {
        let s = spec(SPEC);
        let (family, attributes, options) = applied(&s);
        let d = diff("packshots", &s, Some(&family), &attributes, &options);
        assert!(d.conflicts.is_empty());
        assert!(
            d.steps
                .iter()
                .all(|s| s.outcome == Outcome::Unchanged && s.body.is_none()),
            "{:#?}",
            d.steps
        );
    }

    #[test]
    fn only_what_differs_is_sent() {
        let s = spec(&SPEC.replace(
            "labels = { en_US = \"Front\" }",
            "labels = { en_US = \"Front view\" }",
        ));
        let (family, attributes, options) = applied(&s);
        let d = diff("packshots", &s, Some(&family), &attributes, &options);
        let to_send: Vec<&Step> = d.steps.iter().filter(|s| s.body.is_some()).collect();
        assert_eq!(to_send.len(), 1);
        assert_eq!(to_send[0].item, Item::Option("view".into(), "front".into()));
        assert_eq!(
            to_send[0].body,
            Some(json!({"code": "front", "labels": {"en_US": "Front view"}}))
        );
        // A setting written as a number matches the PIM's string; a changed one is sent alone.
        let s = spec(&SPEC.replace("prefix = \"https://dam/\"", "prefix = \"https://cdn/\""));
        let d = diff("packshots", &s, Some(&family), &attributes, &options);
        let url = d
            .steps
            .iter()
            .find(|s| s.item == Item::Attribute("url".into()))
            .unwrap();
        assert_eq!(url.outcome, Outcome::Update(vec!["prefix".into()]));
        assert_eq!(
            url.body,
            Some(json!({"code": "url", "prefix": "https://cdn/"}))
        );
    }

    #[test]
    fn immutable_fields_are_conflicts_with_their_key() {
        let s = spec(&SPEC.replace(
            "code = \"sku\"\ntype = \"text\"",
            "code = \"sku\"\ntype = \"single_option\"",
        ));
        let (family, attributes, options) = applied(&s);
        let d = diff("packshots", &s, Some(&family), &attributes, &options);
        assert_eq!(d.conflicts.len(), 1);
        assert_eq!(d.conflicts[0].0, "attributes[1].type");
        assert!(d.conflicts[0].1.contains("`text`"), "{:?}", d.conflicts);
        let s = spec(&SPEC.replace(
            "code = \"sku\"\ntype = \"text\"",
            "code = \"sku\"\ntype = \"text\"\nvalue_per_locale = true",
        ));
        let d = diff("packshots", &s, Some(&family), &attributes, &options);
        assert_eq!(d.conflicts[0].0, "attributes[1].value_per_locale");
    }

    #[test]
    fn settings_compare_by_meaning() {
        assert!(same_setting(
            "max_file_size",
            &json!("10"),
            Some(&json!("10.0"))
        ));
        assert!(same_setting(
            "max_characters",
            &json!(50),
            Some(&json!("50"))
        ));
        assert!(same_setting(
            "allowed_extensions",
            &json!(["png", "jpg"]),
            Some(&json!(["JPG", "png"]))
        ));
        assert!(!same_setting("prefix", &json!("a"), None));
        assert_eq!(
            naming_of(Some(&json!({}))),
            Value::Null,
            "a family without convention"
        );
    }
}
