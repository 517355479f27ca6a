//! Start-up validation: every mistake in a mapping is refused by `CompiledMapping::compile` with
//! an error naming the attribute, the rule's index in `values` and the configuration key.

mod mapping_common;

use assetbridge_core::mapping::{CompileContext, CompiledMapping, MappingError};
use assetbridge_core::FamilyStructure;
use mapping_common::{structure, FamilyTable};
use serde_json::json;

fn family() -> FamilyStructure {
    structure(json!({
        "code": "packshots",
        "attributes": {
            "media": {"code": "media", "type": "media_link", "prefix": "https://dam/"},
            "title": {"code": "title", "type": "text", "value_per_locale": true},
            "summary": {"code": "summary", "type": "text", "value_per_channel": true},
            "sku": {"code": "sku", "type": "text"},
            "tags": {"code": "tags", "type": "multiple_options", "options": ["summer", "winter"]},
            "free_tags": {"code": "free_tags", "type": "multiple_options"},
            "color": {"code": "color", "type": "single_option", "options": ["red", "blue"]},
            "supplier": {"code": "supplier", "type": "record"},
            "width": {"code": "width", "type": "number", "decimals_allowed": false},
            "shot_on": {"code": "shot_on", "type": "date"},
            "is_public": {"code": "is_public", "type": "boolean"},
            "auto": {"code": "auto", "type": "auto_tagging"}
        }
    }))
}

/// Compiles `values` (the inside of `values = [...]`) plus optional extra TOML against the
/// family; returns the error.
fn error_with(values: &str, extra: &str) -> MappingError {
    let text = format!("values = [\n{values}\n]\n{extra}");
    match FamilyTable::parse(&text).compile(Some(&family())) {
        Ok(_) => panic!("compiles, but should not:\n{text}"),
        Err(e) => e,
    }
}

fn error(values: &str) -> MappingError {
    error_with(values, "")
}

#[track_caller]
fn check(e: &MappingError, attribute: &str, rule: usize, key: &str, message: &str) {
    assert_eq!(e.attribute.as_deref(), Some(attribute), "{e}");
    assert_eq!(e.rule, Some(rule), "{e}");
    assert_eq!(e.key.as_deref(), Some(key), "{e}");
    assert!(e.message.contains(message), "`{message}` not in: {e}");
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("`{attribute}`")) && shown.contains(key),
        "{shown}"
    );
}

const OK: &str = r#"  { attribute = "sku", from = "/sku" },"#;

#[test]
fn unknown_and_read_only_attributes() {
    let e = error(&format!(
        "{OK}\n  {{ attribute = \"titel\", from = \"/t\", locale = \"en_US\" }}"
    ));
    check(
        &e,
        "titel",
        1,
        "values[1].attribute",
        "has no such attribute (it has: auto, color",
    );
    let e = error(r#"{ attribute = "auto", value = ["x"] }"#);
    check(&e, "auto", 0, "values[0].attribute", "read-only");
    let e = error(r#"{ attribute = "Title Text", from = "/t" }"#);
    check(
        &e,
        "Title Text",
        0,
        "values[0].attribute",
        "not an attribute code",
    );
}

#[test]
fn locales_and_channels() {
    let e = error(r#"{ attribute = "sku", from = "/sku", locale = "en_US" }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].locale",
        "not localizable, but locale `en_US` is given",
    );
    let e = error(&format!(
        "{OK}\n{OK}\n  {{ attribute = \"title\", from = \"/t\" }}"
    ));
    check(
        &e,
        "title",
        2,
        "values[2].locale",
        "localizable: give a `locale`",
    );
    let e = error(r#"{ attribute = "summary", from = "/s" }"#);
    check(
        &e,
        "summary",
        0,
        "values[0].channel",
        "scopable: give a `channel`",
    );
    let e = error(r#"{ attribute = "sku", from = "/sku", channel = "ecommerce" }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].channel",
        "not scopable, but channel `ecommerce`",
    );
    let e = error(r#"{ attribute = "sku", locales = { en_US = "/a", fr_FR = "/b" } }"#);
    check(&e, "sku", 0, "values[0].locales.en_US", "not localizable");
    let e = error(r#"{ attribute = "title", from = "/t", locale = " " }"#);
    check(&e, "title", 0, "values[0].locale", "`locale` is empty");
}

#[test]
fn sources() {
    let e = error(r#"{ attribute = "sku" }"#);
    check(
        &e,
        "sku",
        0,
        "values[0]",
        "exactly one of `from`, `template`, `value` or `locales`",
    );
    let e = error(r#"{ attribute = "sku", from = "/a", value = "x" }"#);
    check(&e, "sku", 0, "values[0]", "exactly one of");
    let e = error(r#"{ attribute = "title", locales = { en_US = "/a" }, from = "/b" }"#);
    check(&e, "title", 0, "values[0].locales", "`locales` is a source");
    let e = error(r#"{ attribute = "title", locales = { en_US = "/a" }, locale = "en_US" }"#);
    check(
        &e,
        "title",
        0,
        "values[0].locale",
        "either `locale` or `locales`",
    );
    let e = error(r#"{ attribute = "title", locales = {} }"#);
    check(&e, "title", 0, "values[0].locales", "`locales` is empty");
    let e = error(r#"{ attribute = "sku", from = "metadata/sku" }"#);
    check(&e, "sku", 0, "values[0].from", "must start with `/`");
    let e = error(r#"{ attribute = "title", locales = { en_US = "/a", fr_FR = "b" } }"#);
    check(
        &e,
        "title",
        0,
        "values[0].locales.fr_FR",
        "must start with `/`",
    );
    let e = error(r#"{ attribute = "sku", from = "/a~2" }"#);
    check(&e, "sku", 0, "values[0].from", "`~` must be followed");
    let e = error(r#"{ attribute = "sku", template = "{{ name " }"#);
    check(&e, "sku", 0, "values[0].template", "template:");
    let e = error(r#"{ attribute = "sku", template = "{{ name | no_such_filter }}" }"#);
    check(&e, "sku", 0, "values[0].template", "unknown filter");
    let e = error(r#"{ attribute = "sku", template = "{{ name | regex_capture('(') }}" }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].template",
        "invalid regular expression",
    );
    // Errors that depend on the data are left to mapping time.
    FamilyTable::parse(r#"values = [{ attribute = "sku", template = "{{ n + 1 }}" }]"#)
        .compile(Some(&family()))
        .unwrap();
}

#[test]
fn the_asset_code_template() {
    let table = FamilyTable::parse("asset_code = \"{% if %}\"\nvalues = []");
    let e = table.compile(None).unwrap_err();
    assert_eq!(e.attribute, None);
    assert_eq!(e.rule, None);
    assert_eq!(e.key.as_deref(), Some("asset_code"));
    assert!(e.to_string().starts_with("asset_code: template:"), "{e}");
    let e = FamilyTable::parse("asset_code = \"{{ dam_id | slugify }}\"")
        .compile(None)
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("asset_code"));
    assert!(e.message.contains("unknown filter"), "{e}");
}

#[test]
fn shapes_and_types() {
    let e = error(r#"{ attribute = "sku", value = ["a", "b"] }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].value",
        "the constant is a list, but a text attribute holds one value",
    );
    let e = error(&format!("{OK}\n  {{ attribute = \"color\", from = \"/c\", transform = [\"trim\", {{ split = \",\" }}] }}"));
    check(
        &e,
        "color",
        1,
        "values[1].transform[1]",
        "`split` (transform[1]) makes a list, but a single_option attribute",
    );
    let e =
        error(r#"{ attribute = "sku", from = "/n", transform = [{ regex = '\d+', all = true }] }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].transform[0]",
        "`regex` (transform[0]) makes a list",
    );
    let e = error(r#"{ attribute = "sku", value = { a = 1 } }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].value",
        "a table cannot be the value of a text attribute",
    );
    let e = error(r#"{ attribute = "width", from = "/d", transform = ["date"] }"#);
    check(
        &e,
        "width",
        0,
        "values[0].transform[0]",
        "`date` makes a date value, but the attribute is a number attribute",
    );
    let e = error(r#"{ attribute = "shot_on", from = "/d", transform = ["number"] }"#);
    check(
        &e,
        "shot_on",
        0,
        "values[0].transform[0]",
        "`number` makes a number value, but the attribute is a date",
    );
    let e = error(r#"{ attribute = "is_public", value = "maybe" }"#);
    check(
        &e,
        "is_public",
        0,
        "values[0].value",
        "cannot turn \"maybe\" into a boolean value",
    );
    let e = error(r#"{ attribute = "width", from = "/w", default = "unknown" }"#);
    check(
        &e,
        "width",
        0,
        "values[0].default",
        "cannot turn \"unknown\" into a number value",
    );
    let e = error(r#"{ attribute = "sku", from = "/s", default = ["a"] }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].default",
        "cannot turn [\"a\"] into a text value",
    );
    let e = error(r#"{ attribute = "tags", from = "/t", transform = ["sanitize_code"] }"#);
    check(&e, "tags", 0, "values[0].transform[0]", "sanitised already");

    // Lists are fine for multiple options, and a `join`/`first` makes a list single again.
    let ok = r#"values = [
      { attribute = "tags", from = "/t", transform = [{ split = "," }] },
      { attribute = "sku", from = "/t", transform = [{ split = "," }, "first"] },
      { attribute = "color", value = ["red"], transform = ["first"] },
      { attribute = "summary", channel = "print", from = "/t", transform = [{ split = "," }, { join = " / " }] },
    ]"#;
    FamilyTable::parse(ok).compile(Some(&family())).unwrap();
}

#[test]
fn option_codes() {
    let e = error(r#"{ attribute = "color", value = "green" }"#);
    check(
        &e,
        "color",
        0,
        "values[0].value",
        "the constant `green` is not an option of the attribute (options: blue, red)",
    );
    let e = error(r#"{ attribute = "color", from = "/c", default = "green" }"#);
    check(
        &e,
        "color",
        0,
        "values[0].default",
        "the default `green` is not an option",
    );
    let e = error(r#"{ attribute = "tags", value = ["summer", "autumn"] }"#);
    check(
        &e,
        "tags",
        0,
        "values[0].value",
        "the constant `autumn` is not an option",
    );
    let e = error_with(
        &format!("{OK}\n  {{ attribute = \"tags\", from = \"/k\", transform = [{{ map = \"seasons\" }}, \"unique\"] }}"),
        "[maps.seasons]\n\"Summer 2024\" = \"summer\"\n\"Autumn 2024\" = \"autumn\"\n",
    );
    check(
        &e,
        "tags",
        1,
        "values[1].transform[0]",
        "map `seasons` sends `Autumn 2024` to `autumn`, which is not an option",
    );
    let e = error(
        r#"{ attribute = "color", from = "/c", transform = [{ map = { Rouge = "red", Vert = "green" } }] }"#,
    );
    check(
        &e,
        "color",
        0,
        "values[0].transform[0]",
        "map (inline) sends `Vert` to `green`",
    );

    // Options unknown, a later step that changes the codes, or options created on demand:
    // targets are not checked.
    let fine = [
        r#"{ attribute = "free_tags", from = "/k", transform = [{ map = { a = "anything" } }] }"#,
        r#"{ attribute = "color", from = "/k", transform = [{ map = { a = "x" } }, { prefix = "y" }] }"#,
        r#"{ attribute = "supplier", value = "any_record" }"#,
    ];
    for v in fine {
        FamilyTable::parse(&format!("values = [{v}]"))
            .compile(Some(&family()))
            .unwrap();
    }
    let table = FamilyTable::parse(r#"values = [{ attribute = "color", value = "green" }]"#);
    let open = ["color".to_string()];
    let s = family();
    CompiledMapping::compile(
        &table.mapping(),
        &CompileContext {
            structure: Some(&s),
            maps: None,
            create_missing_options: &open,
        },
    )
    .unwrap();
}

#[test]
fn transforms_that_cannot_compile() {
    let e = error(
        r#"{ attribute = "sku", from = "/n", transform = ["trim", { regex = "^SKU-(\\d+" }] }"#,
    );
    check(
        &e,
        "sku",
        0,
        "values[0].transform[1]",
        "invalid regular expression",
    );
    let e = error(
        r#"{ attribute = "sku", from = "/n", transform = [{ regex = '(\d+)', capture = 2 }] }"#,
    );
    check(
        &e,
        "sku",
        0,
        "values[0].transform[0]",
        "`capture = 2`, but the regular expression has 1 group(s)",
    );
    let e = error(
        r#"{ attribute = "sku", from = "/n", transform = [{ regex_replace = "[", with = "" }] }"#,
    );
    check(
        &e,
        "sku",
        0,
        "values[0].transform[0]",
        "invalid regular expression",
    );
    let e = error(r#"{ attribute = "tags", from = "/n", transform = [{ map = "tag_codes" }] }"#);
    check(
        &e,
        "tags",
        0,
        "values[0].transform[0]",
        "no value map named `tag_codes` (the family defines no maps)",
    );
    let e = error(r#"{ attribute = "shot_on", from = "/d", transform = [{ date = "%d/%m/%Q" }] }"#);
    check(
        &e,
        "shot_on",
        0,
        "values[0].transform[0]",
        "not a valid chrono date format",
    );
    let e = error(
        r#"{ attribute = "shot_on", from = "/d", transform = [{ date = "auto", output = "%" }] }"#,
    );
    check(
        &e,
        "shot_on",
        0,
        "values[0].transform[0]",
        "not a valid chrono date format",
    );
    let e = error(r#"{ attribute = "sku", from = "/n", transform = [{ get = "x" }] }"#);
    check(
        &e,
        "sku",
        0,
        "values[0].transform[0]",
        "must start with `/`",
    );
    let e = error_with(
        r#"{ attribute = "tags", from = "/n", transform = [{ map = "m" }] }"#,
        "[maps.m]\nx = { y = 1 }\n",
    );
    check(
        &e,
        "tags",
        0,
        "values[0].transform[0]",
        "map `m`, entry `x`",
    );
}

#[test]
fn conditions_that_cannot_compile() {
    let e =
        error(r#"{ attribute = "sku", from = "/n", when = { pointer = "type", equals = "x" } }"#);
    check(&e, "sku", 0, "values[0].when", "must start with `/`");
    let e = error(
        r#"{ attribute = "sku", from = "/n", when = { any = [{ pointer = "/n", matches = "(" }] } }"#,
    );
    check(
        &e,
        "sku",
        0,
        "values[0].when",
        "any[0]: `matches`: invalid regular expression",
    );
}

#[test]
fn a_rule_hidden_behind_an_unconditional_one() {
    let e = error(
        r#"{ attribute = "color", value = "red" },
  { attribute = "color", from = "/c" },"#,
    );
    check(
        &e,
        "color",
        1,
        "values[1]",
        "can never apply: rule values[0] already gives",
    );
    let e = error(
        r#"{ attribute = "title", locale = "en_US", from = "/t", default = "Untitled" },
  { attribute = "title", locale = "fr_FR", from = "/t_fr" },
  { attribute = "title", locales = { de_DE = "/t_de", en_US = "/name" } },"#,
    );
    check(
        &e,
        "title",
        2,
        "values[2].locales.en_US",
        "rule values[0] already gives",
    );
    // A `when`, `on_error = "skip"`, or no default: later rules stay reachable.
    let ok = r#"values = [
      { attribute = "color", value = "red", when = { pointer = "/t", equals = "x" } },
      { attribute = "color", from = "/c", default = "blue", on_error = "skip" },
      { attribute = "color", from = "/d" },
      { attribute = "color", value = "blue" },
    ]"#;
    FamilyTable::parse(ok).compile(Some(&family())).unwrap();
}

#[test]
fn without_a_structure_only_the_mapping_itself_is_checked() {
    let ok = r#"values = [
      { attribute = "anything", from = "/a", locale = "en_US", transform = [{ split = "," }] },
      { attribute = "other", value = { nested = true } },
    ]"#;
    FamilyTable::parse(ok).compile(None).unwrap();
    let e = FamilyTable::parse(
        r#"values = [{ attribute = "a", from = "/a", transform = [{ regex = "(" }] }]"#,
    )
    .compile(None)
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("values[0].transform[0]"));
}

#[test]
fn configuration_typos_fail_to_deserialise_with_a_clear_message() {
    for (values, want) in [
        (
            r#"{ attribute = "a", from = "/a", transfrom = ["trim"] }"#,
            "unknown field `transfrom`",
        ),
        (
            r#"{ attribute = "a", from = "/a", transform = ["trimm"] }"#,
            "unknown transform `trimm`",
        ),
        (
            r#"{ attribute = "a", from = "/a", transform = [{ split = ",", join = "|" }] }"#,
            "one transform per table",
        ),
        (
            r#"{ attribute = "a", from = "/a", when = { pointer = "/a", equal = "x" } }"#,
            "unknown condition key `equal`",
        ),
        (
            r#"{ attribute = "a", from = "/a", on_error = "ignore" }"#,
            "unknown variant `ignore`",
        ),
        (
            r#"{ attribute = "a", from = "/a", transform = [{ map = "m", unmapped = "skip" }] }"#,
            "\"keep\", \"drop\" or \"error\"",
        ),
    ] {
        let text = format!("values = [{values}]");
        let e = toml::from_str::<FamilyTable>(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{want} not in {e}");
    }
}
