//! Each transform, condition and rule semantic through the public API: a family table (TOML)
//! compiled and applied to a DAM record.

mod mapping_common;

use assetbridge_core::FamilyStructure;
use mapping_common::{dam, structure, FamilyTable};
use serde_json::{json, Value};

/// Maps `record` with `values = [rules]` (+ `extra` TOML, e.g. maps), without a structure;
/// returns the `values` of the asset, or the error text.
fn map_with(
    rules: &str,
    extra: &str,
    s: Option<&FamilyStructure>,
    record: Value,
) -> Result<Value, String> {
    let text = format!("values = [\n{rules}\n]\n{extra}");
    let m = FamilyTable::parse(&text)
        .compile(s)
        .map_err(|e| format!("compile: {e}"))?;
    m.map(&dam(record))
        .map(|a| serde_json::to_value(a).unwrap()["values"].clone())
        .map_err(|e| e.to_string())
}

/// The data of attribute `x` (no locale, no channel) after one rule reading `/v` with `transform`.
fn x(transform: &str, v: Value) -> Value {
    let rules = format!(r#"{{ attribute = "x", from = "/v", transform = {transform} }}"#);
    let values = map_with(&rules, "", None, json!({"id": "a", "v": v})).unwrap();
    values["x"][0]["data"].clone()
}

fn x_err(transform: &str, v: Value) -> String {
    let rules = format!(r#"{{ attribute = "x", from = "/v", transform = {transform} }}"#);
    map_with(&rules, "", None, json!({"id": "a", "v": v})).unwrap_err()
}

#[test]
fn text_transforms() {
    assert_eq!(x(r#"["trim"]"#, json!("  a  ")), json!("a"));
    assert_eq!(x(r#"["lower"]"#, json!("ÄBC")), json!("äbc"));
    assert_eq!(x(r#"["upper"]"#, json!("sku-1")), json!("SKU-1"));
    assert_eq!(
        x(r#"[{ replace = " ", with = "-" }]"#, json!("a b c")),
        json!("a-b-c")
    );
    assert_eq!(
        x(
            r#"[{ regex_replace = '(\d{4})(\d{2})', with = "$1-$2" }]"#,
            json!("202403")
        ),
        json!("2024-03")
    );
    assert_eq!(
        x(r#"[{ prefix = "SKU-" }, { suffix = "-EU" }]"#, json!(42)),
        json!("SKU-42-EU")
    );
    assert_eq!(
        x(
            r#"[{ strip_prefix = "https://cdn/" }, { strip_suffix = ".jpg" }]"#,
            json!("https://cdn/a/b.jpg")
        ),
        json!("a/b")
    );
    assert_eq!(x(r#"[{ truncate = 4 }]"#, json!("Ünïcødé")), json!("Ünïc"));
    assert_eq!(
        x(r#"["sanitize_code"]"#, json!("valid_code")),
        json!("valid_code")
    );
    assert!(x(r#"["sanitize_code"]"#, json!("not valid"))
        .as_str()
        .unwrap()
        .starts_with("not_valid_"));
    // On a list: each element; blank results are dropped.
    assert_eq!(
        x(r#"["trim", "upper"]"#, json!([" a ", "  ", "b", null])),
        json!(["A", "B"])
    );
    assert_eq!(x(r#"["trim"]"#, json!(true)), json!("true"));
    assert_eq!(
        x_err(r#"["trim"]"#, json!({"a": 1})),
        "attribute `x` (values[0]): transform[0]: `trim` expects text, got a table"
    );
}

#[test]
fn truncate_to_the_attributes_max_characters() {
    let s = structure(
        json!({"code": "f", "attributes": {"t": {"code": "t", "type": "text", "max_characters": 5}}}),
    );
    let v = map_with(
        r#"{ attribute = "t", from = "/v", transform = ["truncate"] }"#,
        "",
        Some(&s),
        json!({"id": "a", "v": "abcdefgh"}),
    )
    .unwrap();
    assert_eq!(v["t"][0]["data"], json!("abcde"));
}

#[test]
fn regex_transforms() {
    assert_eq!(
        x(r#"[{ regex = '^SKU-(\d+)' }]"#, json!("SKU-0042_front.jpg")),
        json!("0042")
    );
    assert_eq!(
        x(
            r#"[{ regex = '^SKU-(\d+)', capture = 0 }]"#,
            json!("SKU-0042_front.jpg")
        ),
        json!("SKU-0042")
    );
    assert_eq!(
        x(
            r#"[{ regex = '_(?P<view>[a-z]+)\.', capture = "view" }]"#,
            json!("SKU-0042_front.jpg")
        ),
        json!("front")
    );
    assert_eq!(
        x(r#"[{ regex = '[A-Z]{3}' }]"#, json!("abc DEF ghi")),
        json!("DEF")
    );
    assert_eq!(
        x(r#"[{ regex = '#(\w+)', all = true }]"#, json!("#red #blue")),
        json!(["red", "blue"])
    );
    // No match is empty: null is sent.
    assert_eq!(
        x(r#"[{ regex = '^SKU-(\d+)' }]"#, json!("IMG_1.jpg")),
        Value::Null
    );
}

#[test]
fn list_transforms() {
    assert_eq!(
        x(r#"[{ split = "," }]"#, json!("a, b ,,c")),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        x(r#"[{ split = [",", "|"] }]"#, json!("a|b,c")),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        x(r#"[{ join = " / " }]"#, json!(["a", "b"])),
        json!("a / b")
    );
    assert_eq!(x(r#"["first"]"#, json!(["", "b", "c"])), json!("b"));
    assert_eq!(x(r#"["last"]"#, json!(["a", "b", null])), json!("b"));
    assert_eq!(
        x(r#"["unique"]"#, json!(["a", "b", "a", 1, 1])),
        json!(["a", "b", 1])
    );
    assert_eq!(
        x(
            r#"[{ get = "/value" }]"#,
            json!([{"value": "a", "confidence": 0.9}, {"value": "b"}])
        ),
        json!(["a", "b"])
    );
    assert_eq!(
        x(
            r#"[{ get = "/en" }]"#,
            json!({"en": "Hello", "fr": "Bonjour"})
        ),
        json!("Hello")
    );
    assert_eq!(x(r#"[{ split = "," }, "first"]"#, json!("")), Value::Null);
}

#[test]
fn number_transforms() {
    assert_eq!(x(r#"["number"]"#, json!("1 234,50 €")), json!("1234.5"));
    assert_eq!(
        x(r#"["number"]"#, json!("1,234,567.891")),
        json!("1234567.891")
    );
    assert_eq!(x(r#"[{ number = "." }]"#, json!("1,234")), json!("1234"));
    assert_eq!(x(r#"[{ number = "," }]"#, json!("1.234")), json!("1234"));
    assert_eq!(
        x(r#"[{ number = "auto", decimals = 0 }]"#, json!("2.5")),
        json!("3")
    );
    assert_eq!(x(r#"["number"]"#, json!(1.5e3)), json!("1500"));
    assert_eq!(
        x(r#"["number"]"#, json!(["12 cm", "3,5 cm"])),
        json!(["12", "3.5"])
    );
    assert_eq!(
        x_err(r#"["number"]"#, json!("n/a")),
        "attribute `x` (values[0]): transform[0]: `n/a` is not a number"
    );
    // A number attribute without decimals: integers.
    let s = structure(
        json!({"code": "f", "attributes": {"w": {"code": "w", "type": "number", "decimals_allowed": false}}}),
    );
    let v = map_with(
        r#"{ attribute = "w", from = "/v", transform = ["number"] }"#,
        "",
        Some(&s),
        json!({"id": "a", "v": "1 199,5 px"}),
    )
    .unwrap();
    assert_eq!(v["w"][0]["data"], json!("1200"));
}

#[test]
fn date_transforms() {
    assert_eq!(
        x(r#"["date"]"#, json!("2024-03-01T10:20:30Z")),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(r#"["date"]"#, json!("2024:03:01 10:20:30")),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(r#"["date"]"#, json!(1_709_288_430)),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(r#"["date"]"#, json!(1_709_288_430_000_i64)),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(r#"[{ date = "%d.%m.%Y" }]"#, json!("01.03.2024")),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(
            r#"[{ date = ["%d.%m.%Y", "%m/%d/%Y"] }]"#,
            json!("03/01/2024")
        ),
        json!("2024-03-01T00:00:00+00:00")
    );
    assert_eq!(
        x(
            r#"[{ date = "auto", output = "datetime" }]"#,
            json!("2024-03-01T10:20:30+01:00")
        ),
        json!("2024-03-01T09:20:30+00:00")
    );
    assert_eq!(
        x(
            r#"[{ date = "rfc2822", output = "date" }]"#,
            json!("Fri, 01 Mar 2024 10:20:30 +0000")
        ),
        json!("2024-03-01")
    );
    assert!(x_err(r#"[{ date = "%d.%m.%Y" }]"#, json!("2024-03-01"))
        .contains("`2024-03-01` is not a date in the expected format"));
}

#[test]
fn value_maps() {
    let maps = "[maps.tags]\n\"Summer 2024\" = \"summer\"\nHiking = [\"outdoor\", \"sport\"]\n";
    let run = |t: &str, v: Value| {
        let rules = format!(r#"{{ attribute = "x", from = "/v", transform = {t} }}"#);
        map_with(&rules, maps, None, json!({"id": "a", "v": v})).map(|v| v["x"][0]["data"].clone())
    };
    assert_eq!(
        run(r#"[{ map = "tags" }]"#, json!(["Summer 2024", "Other"])).unwrap(),
        json!(["summer", "Other"])
    );
    assert_eq!(
        run(
            r#"[{ map = "tags", unmapped = "drop" }]"#,
            json!(["Summer 2024", "Other", "Hiking"])
        )
        .unwrap(),
        json!(["summer", "outdoor", "sport"])
    );
    assert_eq!(
        run(r#"[{ map = "tags", unmapped = "drop" }]"#, json!("Other")).unwrap(),
        Value::Null
    );
    assert_eq!(
        run(
            r#"[{ map = "tags", unmapped = "drop", ignore_case = true }]"#,
            json!("SUMMER 2024")
        )
        .unwrap(),
        json!("summer")
    );
    assert_eq!(
        run(
            r#"[{ map = "tags", unmapped = "error" }]"#,
            json!(["Summer 2024", "Other"])
        )
        .unwrap_err(),
        "attribute `x` (values[0]): transform[0]: `Other` has no entry in map `tags`"
    );
    assert_eq!(
        run(r#"[{ map = { "1" = "yes", "0" = "no" } }]"#, json!(1)).unwrap(),
        json!("yes")
    );
}

#[test]
fn defaults_empty_values_and_null() {
    let rules = r#"{ attribute = "a", from = "/a", default = "none" },
  { attribute = "b", from = "/b" },
  { attribute = "c", from = "/c", transform = [{ regex = "x(y)" }], default = "no match" },"#;
    let v = map_with(
        rules,
        "",
        None,
        json!({"id": "1", "a": "  ", "b": [], "c": "zzz"}),
    )
    .unwrap();
    assert_eq!(v["a"][0]["data"], json!("none"));
    assert_eq!(v["b"][0]["data"], Value::Null);
    assert_eq!(v["c"][0]["data"], json!("no match"));
    // false and 0 are values, not empty.
    let v = map_with(
        r#"{ attribute = "f", from = "/f", default = true }"#,
        "",
        None,
        json!({"id": "1", "f": false}),
    )
    .unwrap();
    assert_eq!(v["f"][0]["data"], json!(false));
}

#[test]
fn conditions_and_alternatives() {
    let rules = r#"{ attribute = "kind", value = "video", when = { pointer = "/type", equals = "video" } },
  { attribute = "kind", value = "document", when = { pointer = "/name", matches = '\.pdf$', ignore_case = true } },
  { attribute = "kind", value = "photo", when = { pointer = "/type", in = ["image", "photo"] } },
  { attribute = "season", value = "summer", when = { pointer = "/tags", contains = "summer" } },
  { attribute = "internal", value = true, when = { all = [{ pointer = "/path", prefix = "/content/dam/internal/" }, { not = { pointer = "/public", exists = true } }] } },
  { attribute = "internal", value = false, when = { pointer = "/path", suffix = ".jpg" } },"#;
    let m = |r: Value| map_with(rules, "", None, r).unwrap();
    let v = m(
        json!({"id": "1", "type": "video", "name": "a.PDF", "tags": ["summer-24"], "path": "/content/dam/internal/a.jpg"}),
    );
    assert_eq!(v["kind"][0]["data"], json!("video"));
    assert_eq!(v["season"][0]["data"], json!("summer"));
    assert_eq!(v["internal"][0]["data"], json!(true));
    let v = m(
        json!({"id": "2", "type": "image", "name": "a.PDF", "path": "/content/dam/internal/a.jpg", "public": "yes"}),
    );
    assert_eq!(v["kind"][0]["data"], json!("document"));
    assert_eq!(v["internal"][0]["data"], json!(false));
    assert!(v.get("season").is_none(), "no rule applied: nothing sent");
    let v = m(json!({"id": "3", "type": "audio"}));
    assert!(
        v.get("kind").is_none() && v.get("internal").is_none(),
        "{v}"
    );
}

#[test]
fn alternatives_fall_through_empty_results_and_send_null_when_all_are_empty() {
    let rules = r#"{ attribute = "title", from = "/title" },
  { attribute = "title", from = "/name", transform = [{ regex = '^(.+)\.\w+$' }] },"#;
    let v = map_with(rules, "", None, json!({"id": "1", "name": "shoe.jpg"})).unwrap();
    assert_eq!(v["title"][0]["data"], json!("shoe"));
    let v = map_with(
        rules,
        "",
        None,
        json!({"id": "1", "title": "Shoe", "name": "shoe.jpg"}),
    )
    .unwrap();
    assert_eq!(v["title"][0]["data"], json!("Shoe"));
    let v = map_with(rules, "", None, json!({"id": "1", "name": "no extension"})).unwrap();
    assert_eq!(v["title"][0]["data"], Value::Null);
}

#[test]
fn on_error() {
    let s = structure(json!({"code": "f", "attributes": {"w": {"code": "w", "type": "number"}}}));
    let run = |rules: &str| {
        map_with(
            rules,
            "",
            Some(&s),
            json!({"id": "1", "w": "wide", "w2": "12"}),
        )
    };
    assert_eq!(
        run(r#"{ attribute = "w", from = "/w" }"#).unwrap_err(),
        "attribute `w` (values[0]): cannot turn \"wide\" into a number value (add the `number` transform to read units and separators)"
    );
    assert_eq!(
        run(r#"{ attribute = "w", from = "/w", on_error = "skip" }"#).unwrap(),
        json!({})
    );
    assert_eq!(
        run(r#"{ attribute = "w", from = "/w", on_error = "default" }"#).unwrap()["w"][0]["data"],
        Value::Null
    );
    assert_eq!(
        run(r#"{ attribute = "w", from = "/w", on_error = "default", default = 1 }"#).unwrap()["w"]
            [0]["data"],
        json!("1")
    );
    assert_eq!(
        run("{ attribute = \"w\", from = \"/w\", on_error = \"skip\" },\n{ attribute = \"w\", from = \"/w2\" }").unwrap()["w"][0]["data"],
        json!("12")
    );
}

#[test]
fn locales_fan_out_and_channels() {
    let rules = r#"{ attribute = "title", locales = { en_US = "/t/en", fr_FR = "/t/fr", de_DE = "/t/de" }, transform = ["trim"] },
  { attribute = "desc", locale = "en_US", channel = "print", from = "/d" },
  { attribute = "desc", locale = "en_US", channel = "ecommerce", from = "/d", transform = [{ truncate = 5 }] },"#;
    let v = map_with(
        rules,
        "",
        None,
        json!({"id": "1", "t": {"en": " Shoe ", "fr": "Chaussure"}, "d": "Long text"}),
    )
    .unwrap();
    assert_eq!(
        v["title"],
        json!([
            {"locale": "de_DE", "channel": null, "data": null},
            {"locale": "en_US", "channel": null, "data": "Shoe"},
            {"locale": "fr_FR", "channel": null, "data": "Chaussure"},
        ])
    );
    assert_eq!(
        v["desc"],
        json!([
            {"locale": "en_US", "channel": "ecommerce", "data": "Long "},
            {"locale": "en_US", "channel": "print", "data": "Long text"},
        ])
    );
}

#[test]
fn templates() {
    let rules = r#"{ attribute = "a", template = "{{ metadata.title }} ({{ metadata.sku | default('n/a') }})" },
  { attribute = "b", template = "{{ metadata.ratio }}" },
  { attribute = "c", template = "{{ metadata.count }}" },
  { attribute = "d", template = "{{ dam_id }}/{{ dam_updated }}" },
  { attribute = "e", template = "{{ name | regex_capture('^SKU-(\\d+)') | default('none') }}" },
  { attribute = "f", template = "{{ w | number }}x{{ h | number }}" },
  { attribute = "g", template = "{{ shot | date }}" },
  { attribute = "h", template = "{{ name | sanitize_code }}" },
  { attribute = "i", template = '{{ data["repo:name"] }}' },
  { attribute = "j", template = "{{ missing }}" },"#;
    let v = map_with(
        rules,
        "",
        None,
        json!({
            "id": "ID-1", "name": "SKU-0042.jpg", "w": "1 200 px", "h": "800,0",
            "shot": "2024:03:01 10:00:00",
            "metadata": {"title": "Shoe", "ratio": 1.5, "count": 3},
            "data": {"repo:name": "a b.png"}
        }),
    )
    .unwrap();
    let d = |k: &str| v[k][0]["data"].clone();
    assert_eq!(d("a"), json!("Shoe (n/a)"));
    assert_eq!(d("b"), json!("1.5"));
    assert_eq!(d("c"), json!("3"));
    assert_eq!(d("d"), json!("ID-1/2024-03-01T10:20:30+00:00"));
    assert_eq!(d("e"), json!("0042"));
    assert_eq!(d("f"), json!("1200x800"));
    assert_eq!(d("g"), json!("2024-03-01T00:00:00+00:00"));
    assert_eq!(
        d("h"),
        json!(assetbridge_core::sanitize_code("SKU-0042.jpg"))
    );
    assert_eq!(d("i"), json!("a b.png"));
    assert_eq!(d("j"), Value::Null);
}

#[test]
fn asset_codes() {
    let code = |tpl: &str, record: Value| {
        let t = FamilyTable::parse(&format!("asset_code = '{tpl}'"));
        t.compile(None)
            .unwrap()
            .asset_code(&dam(record))
            .map_err(|e| e.to_string())
    };
    assert_eq!(code("{{ dam_id }}", json!({"id": "ok_1"})).unwrap(), "ok_1");
    assert_eq!(
        code("{{ name }}", json!({"id": "1", "name": " shoe_1 "})).unwrap(),
        "shoe_1"
    );
    assert_eq!(
        code("{{ meta.sku }}", json!({"id": "1", "meta": {"sku": 42}})).unwrap(),
        "42"
    );
    assert_eq!(
        code(
            "{{ meta.sku }}_{{ view }}",
            json!({"id": "1", "meta": {"sku": "A1"}, "view": "front"})
        )
        .unwrap(),
        "A1_front"
    );
    assert_eq!(
        code("{{ ratio }}", json!({"id": "1", "ratio": 1.5})).unwrap(),
        assetbridge_core::sanitize_code("1.5")
    );
    assert_eq!(
        code("{{ name }}", json!({"id": "1"})).unwrap_err(),
        "asset_code: the asset_code template rendered an empty string"
    );
    // The record can be anything; lookups in a non-object record find nothing.
    assert!(code("{{ name }}", json!([1, 2])).is_err());
    assert_eq!(code("{{ dam_id }}", json!("text")).unwrap(), "x");
}

#[test]
fn one_asset_holds_only_attributes_with_an_applicable_rule() {
    let rules = r#"{ attribute = "a", from = "/a", when = { pointer = "/t", equals = "x" } },
  { attribute = "b", from = "/b" },"#;
    let v = map_with(rules, "", None, json!({"id": "1", "t": "y", "b": "B"})).unwrap();
    assert_eq!(
        v,
        json!({"b": [{"locale": null, "channel": null, "data": "B"}]})
    );
}
