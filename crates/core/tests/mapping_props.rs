//! Properties: mapping never panics on arbitrary JSON (with a mapping that uses every transform,
//! condition and source), its outputs have the shapes Akeneo expects, routing never panics, and
//! code sanitising is stable and collision-free.

mod mapping_common;

use assetbridge_core::code::{is_valid_code, MAX_CODE_LEN};
use std::sync::OnceLock;

use assetbridge_core::mapping::{CompiledMapping, OnError};
use assetbridge_core::routing::{CompiledRoutes, RouteConfig};
use assetbridge_core::validate::{validate_asset, ViolationKind};
use assetbridge_core::{sanitize_code, DamAsset, FamilyStructure};
use chrono::TimeZone;
use mapping_common::{structure, FamilyTable};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Text that looks like what DAMs send: numbers with units and separators, dates, codes,
/// keywords, unicode, blanks.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _.,;:/|#@-]{0,24}",
        "[0-9]{1,4}([.,][0-9]{1,3}){0,3} ?(px|cm|€|kg)?",
        "-?[0-9]{1,20}",
        "[0-9]{4}[-:/][0-9]{2}[-:/][0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
        "SKU-[0-9]{1,6}_(front|back)\\.(jpg|png)",
        ".{0,12}",
        Just(String::new()),
        Just("   ".to_string()),
        Just("Summer 2024".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        (-1e13f64..1e13).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("value".to_string()),
        Just("en".to_string()),
        Just("title".to_string()),
        Just("type".to_string()),
        "[a-z:]{1,6}",
    ]
}

/// Any JSON, nested a few levels, with keys the mapping reads often enough to reach its rules.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a DAM field usually holds (text, a scalar, a list of text), sometimes any JSON.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::from),
        2 => leaf(),
        2 => prop::collection::vec(text().prop_map(Value::from), 0..5).prop_map(Value::from),
        1 => prop::collection::vec(
            (text(), any::<f64>()).prop_map(|(v, c)| json!({"value": v, "confidence": c})),
            0..3,
        )
        .prop_map(Value::from),
        2 => json_value(),
    ]
}

/// A record: usually an object with the keys the mapping reads, sometimes any JSON at all.
fn record() -> impl Strategy<Value = Value> {
    let fields = (
        field(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(v, name, tags, meta, kind, id)| {
            json!({"v": v, "name": name, "tags": tags, "metadata": meta, "type": kind, "id": id})
        });
    prop_oneof![4 => fields, 1 => json_value()]
}

fn asset(id: String, record: Value) -> DamAsset {
    DamAsset {
        id,
        updated_at: chrono::Utc.timestamp_opt(1_709_288_430, 0).unwrap(),
        record,
    }
}

/// Every transform, reading the arbitrary `/v`; every condition; every source kind.
const EVERY_TRANSFORM: &str = r#"
asset_code = "{{ name }}"
values = [
  { attribute = "t_trim", from = "/v", transform = ["trim"] },
  { attribute = "t_lower", from = "/v", transform = ["lower"] },
  { attribute = "t_upper", from = "/v", transform = ["upper"] },
  { attribute = "t_code", from = "/v", transform = ["sanitize_code"] },
  { attribute = "t_first", from = "/v", transform = ["first"] },
  { attribute = "t_last", from = "/v", transform = ["last"] },
  { attribute = "t_unique", from = "/v", transform = ["unique"] },
  { attribute = "t_replace", from = "/v", transform = [{ replace = ",", with = "." }] },
  { attribute = "t_regex_replace", from = "/v", transform = [{ regex_replace = '\s+', with = " " }] },
  { attribute = "t_affix", from = "/v", transform = [{ prefix = "p_" }, { suffix = "_s" }, { strip_prefix = "p_" }, { strip_suffix = "_s" }] },
  { attribute = "t_truncate", from = "/v", transform = [{ truncate = 3 }] },
  { attribute = "t_max", from = "/v", transform = ["truncate"] },
  { attribute = "t_regex", from = "/v", transform = [{ regex = '(\d+)' }] },
  { attribute = "t_regex_named", from = "/v", transform = [{ regex = '(?P<w>[a-z]+)', capture = "w" }] },
  { attribute = "t_regex_all", from = "/v", transform = [{ regex = '\w+', all = true }] },
  { attribute = "t_split", from = "/v", transform = [{ split = [",", ";"] }] },
  { attribute = "t_join", from = "/v", transform = [{ join = "|" }] },
  { attribute = "t_number", from = "/v", transform = ["number"] },
  { attribute = "t_number_comma", from = "/v", transform = [{ number = ",", decimals = 2 }] },
  { attribute = "t_date", from = "/v", transform = ["date"] },
  { attribute = "t_date_formats", from = "/v", transform = [{ date = ["%d/%m/%Y", "unix_ms", "rfc2822", "auto"], output = "datetime" }] },
  { attribute = "t_map", from = "/v", transform = [{ map = "m" }] },
  { attribute = "t_map_drop", from = "/v", transform = [{ map = "m", unmapped = "drop", ignore_case = true }] },
  { attribute = "t_map_error", from = "/v", transform = [{ map = { a = "b" }, unmapped = "error" }], on_error = "default" },
  { attribute = "t_get", from = "/v", transform = [{ get = "/value" }] },
  { attribute = "t_chain", from = "/v", transform = ["trim", { split = "," }, "lower", { map = "m" }, "unique", { join = "," }, { regex = '(\w+)' }, "number"], on_error = "skip" },
  { attribute = "t_whole", from = "", transform = [{ get = "/metadata/title" }] },
  { attribute = "template", template = "{{ v }}|{{ metadata.title | upper }}|{{ name | regex_capture('(\\d+)') }}|{{ v | number }}|{{ v | date }}|{{ name | sanitize_code }}" },
  { attribute = "lookup", template = "{{ metadata.title }}" },
  { attribute = "constant", value = ["a", 1, true] },
  { attribute = "loc", locales = { en_US = "/metadata/en", fr_FR = "/metadata/fr" }, transform = ["trim"] },
  { attribute = "cond", value = "x", when = { any = [
      { pointer = "/type", equals = "image" },
      { pointer = "/type", in = ["video", 3, true] },
      { pointer = "/name", matches = "^SKU", ignore_case = true },
      { all = [{ pointer = "/tags", prefix = "s" }, { not = { pointer = "/tags", suffix = "x" } }] },
      { pointer = "/tags", contains = "summer" },
      { pointer = "/metadata", exists = true },
  ] } },
  { attribute = "cond", from = "/v", default = "d" },
]

[maps.m]
"summer 2024" = "summer"
"1" = ["one", "uno"]
"true" = false
"#;

/// The same rules (where a type allows them) against a structure with every attribute type, so
/// coercion runs too.
fn typed_structure() -> FamilyStructure {
    let mut attrs = serde_json::Map::new();
    let types = [
        ("t_trim", "text"),
        ("t_lower", "media_link"),
        ("t_upper", "media_file"),
        ("t_code", "text"),
        ("t_first", "single_option"),
        ("t_last", "record"),
        ("t_unique", "multiple_options"),
        ("t_replace", "text"),
        ("t_regex_replace", "text"),
        ("t_affix", "text"),
        ("t_truncate", "text"),
        ("t_max", "text"),
        ("t_regex", "number"),
        ("t_regex_named", "single_option"),
        ("t_regex_all", "multiple_options"),
        ("t_split", "multiple_options"),
        ("t_join", "text"),
        ("t_number", "number"),
        ("t_number_comma", "number"),
        ("t_date", "date"),
        ("t_date_formats", "date"),
        ("t_map", "multiple_options"),
        ("t_map_drop", "boolean"),
        ("t_map_error", "text"),
        ("t_get", "unknown_type"),
        ("t_chain", "number"),
        ("t_whole", "text"),
        ("template", "text"),
        ("lookup", "text"),
        ("constant", "multiple_options"),
        ("cond", "text"),
    ];
    for (code, kind) in types {
        let mut a = json!({"code": code, "type": kind});
        if code == "t_max" {
            a["max_characters"] = json!(4);
        }
        if code == "t_number" {
            a["decimals_allowed"] = json!(false);
        }
        if kind == "media_link" {
            a["prefix"] = json!("http");
        }
        attrs.insert(code.into(), a);
    }
    attrs.insert(
        "loc".into(),
        json!({"code": "loc", "type": "text", "value_per_locale": true}),
    );
    structure(json!({"code": "every", "attributes": attrs}))
}

struct Compiled {
    untyped: CompiledMapping,
    typed: CompiledMapping,
    /// Every rule `on_error = "skip"` and the code `{{ dam_id }}`: no error stops the mapping,
    /// so every rule runs on every record.
    typed_skipping: CompiledMapping,
    structure: FamilyStructure,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let t = FamilyTable::parse(EVERY_TRANSFORM);
        let s = typed_structure();
        let mut skipping = FamilyTable::parse(EVERY_TRANSFORM);
        skipping.asset_code = None;
        for r in &mut skipping.values {
            r.on_error = OnError::Skip;
        }
        Compiled {
            untyped: t.compile(None).unwrap(),
            typed: t.compile(Some(&s)).unwrap_or_else(|e| panic!("{e}")),
            typed_skipping: skipping.compile(Some(&s)).unwrap_or_else(|e| panic!("{e}")),
            structure: s,
        }
    })
}

fn akeneo_number(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !frac.ends_with('0')
        && s != "-0"
        && (body.contains('.') != frac.is_empty())
}

fn akeneo_date(s: &str) -> bool {
    s.len() == 25
        && s.ends_with("T00:00:00+00:00")
        && chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Mapping is total: arbitrary JSON gives an asset or an error, never a panic; an asset has
    /// a valid code, and (with the structure) no value of the wrong JSON type.
    #[test]
    fn mapping_never_panics_and_outputs_fit(id in "[^\\s]{1,40}", rec in record()) {
        let c = compiled();
        let s = &c.structure;
        let a = asset(id, rec);
        if let Ok(out) = c.untyped.map(&a) {
            prop_assert!(is_valid_code(&out.code));
        }
        let _ = c.untyped.asset_code(&a);
        if let Err(e) = c.typed.map(&a) {
            prop_assert!(e.attribute.is_some() || e.key.as_deref() == Some("asset_code"), "{e}");
        }
        match c.typed_skipping.map(&a) {
            Ok(out) => {
                prop_assert!(is_valid_code(&out.code));
                for v in validate_asset(&out, s) {
                    prop_assert!(
                        !matches!(v.kind, ViolationKind::WrongDataType | ViolationKind::LocaleMissing
                            | ViolationKind::LocaleNotAllowed | ViolationKind::DuplicateValue
                            | ViolationKind::UnknownAttribute | ViolationKind::InvalidCode),
                        "{v}"
                    );
                }
                for (attr, values) in &out.values {
                    for v in values {
                        match (attr.as_str(), &v.data) {
                            ("t_number" | "t_number_comma", Value::String(n)) => {
                                prop_assert!(akeneo_number(n), "{attr}: {n}");
                                // `t_number`'s attribute allows no decimals: integers only.
                                prop_assert!(attr != "t_number" || !n.contains('.'), "{n}");
                            }
                            ("t_date", Value::String(d)) => prop_assert!(akeneo_date(d), "{d}"),
                            ("t_truncate", Value::String(t)) => prop_assert!(t.chars().count() <= 3),
                            ("t_max", Value::String(t)) => prop_assert!(t.chars().count() <= 4),
                            _ => {}
                        }
                    }
                }
            }
            Err(e) => prop_assert!(false, "with on_error = skip and a non-blank id: {e}"),
        }
    }

    /// Each value map/number/date step on a bare value (not inside a record) never panics.
    #[test]
    fn transforms_on_any_value(v in json_value()) {
        let c = compiled();
        let a = asset("x".into(), json!({"v": v, "name": "n"}));
        let _ = c.untyped.map(&a);
        let _ = c.typed.map(&a);
        prop_assert!(c.typed_skipping.map(&a).is_ok());
    }

    /// Routing is total.
    #[test]
    fn routing_never_panics(rec in record()) {
        let cfg: RouteConfig = toml::from_str(r#"
            default = "other"
            routes = [
              { family = "a", when = { pointer = "/type", in = ["image", 1] } },
              { family = "b", when = { pointer = "/name", matches = "^SKU" } },
              { family = "c", when = { all = [{ pointer = "/tags", contains = "s" }, { not = { pointer = "/v", exists = true } }] } },
              { family = "d", when = { pointer = "/metadata/value", prefix = "x", ignore_case = true } },
            ]"#).unwrap();
        let r = CompiledRoutes::new(&cfg).unwrap();
        prop_assert!(["a", "b", "c", "d", "other"].contains(&r.route(&rec).unwrap()));
    }

    /// Codes: always valid, at most 255 characters, stable, and different inputs never share one.
    #[test]
    fn sanitised_codes_are_valid_stable_and_distinct(a in ".{0,300}", b in ".{0,300}") {
        let (ca, cb) = (sanitize_code(&a), sanitize_code(&b));
        prop_assert!(is_valid_code(&ca) && ca.len() <= MAX_CODE_LEN);
        prop_assert_eq!(&ca, &sanitize_code(&a));
        if a != b {
            prop_assert_ne!(ca, cb);
        }
    }

    /// Inputs that differ only in disallowed characters (the usual collision risk) still get
    /// different codes; valid codes are kept as they are.
    #[test]
    fn look_alike_inputs_get_distinct_codes(stem in "[a-z0-9]{1,20}", seps in prop::collection::vec(prop::sample::select(vec!['-', ' ', '.', '/', '_', 'é']), 1..4)) {
        let variants: Vec<String> = seps.iter().map(|c| format!("{stem}{c}x")).collect();
        for (i, x) in variants.iter().enumerate() {
            for y in &variants[i + 1..] {
                if x != y {
                    prop_assert_ne!(sanitize_code(x), sanitize_code(y));
                }
            }
        }
        prop_assert_eq!(sanitize_code(&stem), stem.clone());
    }

    /// The mapped asset code is the sanitised, trimmed DAM id with the default template.
    #[test]
    fn the_default_asset_code_is_the_sanitised_id(id in "[ ]{0,2}[^ ]{1,40}[ ]{0,2}") {
        prop_assume!(!id.trim().is_empty());
        let m = FamilyTable::parse("values = []").compile(None).unwrap();
        let code = m.asset_code(&asset(id.clone(), json!({}))).unwrap();
        prop_assert_eq!(code, sanitize_code(id.trim()));
    }
}
