//! Reading a product value and writing it in the form an AEM metadata field takes (pure).

use chrono::{DateTime, NaiveDate};
use serde_json::{Number, Value};

use super::config::{FieldRule, MultiFormat, ProductProperty, ValueFormat};

/// The identifier of a product JSON: the identifier attribute's value, else a top-level
/// `identifier`.
pub(crate) fn product_identifier(product: &Value, identifier_attribute: &str) -> Option<String> {
    product
        .get("values")
        .and_then(|v| v.get(identifier_attribute))
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find_map(|e| e.get("data").and_then(Value::as_str)))
        .or_else(|| product.get("identifier").and_then(Value::as_str))
        .map(str::to_owned)
}

/// One raw value chosen from the product: its data, the PIM's attribute type and linked data
/// when given.
struct Raw<'a> {
    data: &'a Value,
    attribute_type: Option<&'a str>,
    linked_data: Option<&'a Value>,
}

/// The entry of an attribute's value list matching the wanted locale and channel: an exact
/// match first, then a value that is not localised (resp. not scoped).
fn pick<'a>(entries: &'a [Value], locale: Option<&str>, scope: Option<&str>) -> Option<&'a Value> {
    let field = |e: &'a Value, k: &str| e.get(k).and_then(Value::as_str);
    let fits = |e: &&'a Value| {
        let l = field(e, "locale");
        let s = field(e, "scope");
        (l.is_none() || l == locale) && (s.is_none() || s == scope)
    };
    let score = |e: &&'a Value| {
        u8::from(field(e, "locale").is_some()) + u8::from(field(e, "scope").is_some())
    };
    entries.iter().filter(fits).max_by_key(score)
}

/// The value of `rule` in `product`, formatted; `None` when the product has none (no entry for
/// the locale/channel, `null`, an empty string or list).
pub(crate) fn field_value(
    rule: &FieldRule,
    product: &Value,
    identifier_attribute: &str,
    default_locale: Option<&str>,
    default_scope: Option<&str>,
) -> Option<Value> {
    let locale = rule.locale.as_deref().or(default_locale);
    let scope = rule.scope.as_deref().or(default_scope);
    let identifier;
    let raw = match (&rule.attribute, rule.property) {
        (_, Some(ProductProperty::Identifier)) => {
            identifier = Value::String(product_identifier(product, identifier_attribute)?);
            Raw {
                data: &identifier,
                attribute_type: Some("pim_catalog_identifier"),
                linked_data: None,
            }
        }
        (_, Some(p)) => Raw {
            data: product.get(p.key())?,
            attribute_type: None,
            linked_data: None,
        },
        (Some(a), None) => {
            let entries = product.get("values")?.get(a)?.as_array()?;
            let e = pick(entries, locale, scope)?;
            Raw {
                data: e.get("data")?,
                attribute_type: e.get("attribute_type").and_then(Value::as_str).or_else(|| {
                    product
                        .get("attribute_types")
                        .and_then(|t| t.get(a)?.as_str())
                }),
                linked_data: e.get("linked_data"),
            }
        }
        (None, None) => return None,
    };
    if is_empty(raw.data) {
        return None;
    }
    format(rule, &raw, locale)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// What a value is, for `format = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Boolean,
    Date,
    Option,
    Metric,
    Prices,
    Other,
}

fn kind_of(raw: &Raw<'_>) -> Kind {
    if let Some(t) = raw.attribute_type {
        let k = match t {
            "pim_catalog_identifier" | "pim_catalog_text" | "pim_catalog_textarea" => Kind::Text,
            "pim_catalog_number" => Kind::Number,
            "pim_catalog_boolean" => Kind::Boolean,
            "pim_catalog_date" => Kind::Date,
            "pim_catalog_simpleselect" | "pim_catalog_multiselect" => Kind::Option,
            "pim_catalog_metric" => Kind::Metric,
            "pim_catalog_price_collection" => Kind::Prices,
            _ => Kind::Other,
        };
        if k != Kind::Other {
            return k;
        }
    }
    match raw.data {
        Value::String(_) => Kind::Text,
        Value::Number(_) => Kind::Number,
        Value::Bool(_) => Kind::Boolean,
        Value::Object(o) if o.contains_key("amount") && o.contains_key("unit") => Kind::Metric,
        Value::Array(a) if !a.is_empty() && a.iter().all(|p| p.get("currency").is_some()) => {
            Kind::Prices
        }
        Value::Array(a) if a.iter().all(Value::is_string) => Kind::Text,
        _ => Kind::Other,
    }
}

fn format(rule: &FieldRule, raw: &Raw<'_>, locale: Option<&str>) -> Option<Value> {
    let kind = kind_of(raw);
    let data = raw.data;
    // Prices and metrics are first reduced to amounts or texts.
    if kind == Kind::Prices {
        let prices: Vec<&Value> = data
            .as_array()?
            .iter()
            .filter(|p| {
                rule.currency.as_deref().is_none()
                    || p.get("currency").and_then(Value::as_str) == rule.currency.as_deref()
            })
            .collect();
        let items: Vec<Value> = prices
            .iter()
            .filter_map(|p| {
                let amount = p.get("amount")?;
                match rule.format {
                    ValueFormat::Number => to_number(amount),
                    ValueFormat::Json => Some((*p).clone()),
                    _ if rule.currency.is_some() && rule.format == ValueFormat::Auto => {
                        to_number(amount)
                    }
                    _ => Some(Value::String(format!(
                        "{} {}",
                        number_text(amount)?,
                        p.get("currency").and_then(Value::as_str).unwrap_or("")
                    ))),
                }
            })
            .collect();
        return match items.len() {
            0 => None,
            1 if rule.currency.is_some() => items.into_iter().next(),
            _ => multi(rule, items),
        };
    }
    match rule.format {
        ValueFormat::Json => Some(data.clone()),
        ValueFormat::Auto => match kind {
            Kind::Text => scalar_or_list(rule, data, |v| text(v).map(Value::String)),
            Kind::Number => scalar_or_list(rule, data, to_number),
            Kind::Boolean => scalar_or_list(rule, data, to_bool),
            Kind::Date => scalar_or_list(rule, data, |v| date(rule, v)),
            Kind::Option => scalar_or_list(rule, data, |v| {
                v.as_str().map(|s| Value::String(s.to_owned()))
            }),
            Kind::Metric => metric_text(data).map(Value::String),
            Kind::Prices => unreachable!("handled above"),
            Kind::Other => Some(data.clone()),
        },
        ValueFormat::Text => match kind {
            Kind::Metric => metric_text(data).map(Value::String),
            // A number attribute's decimal text ("12.5000") is normalised too.
            Kind::Number => scalar_or_list(rule, data, |v| {
                number_text(v).or_else(|| text(v)).map(Value::String)
            }),
            _ => scalar_or_list(rule, data, |v| text(v).map(Value::String)),
        },
        ValueFormat::Number => {
            if kind == Kind::Metric {
                return data.get("amount").and_then(to_number);
            }
            scalar_or_list(rule, data, to_number)
        }
        ValueFormat::Boolean => scalar_or_list(rule, data, to_bool),
        ValueFormat::Date => scalar_or_list(rule, data, |v| date(rule, v)),
        ValueFormat::OptionCode => scalar_or_list(rule, data, |v| text(v).map(Value::String)),
        ValueFormat::OptionLabel => {
            let label_of = |code: &Value, index: Option<usize>| -> Option<Value> {
                let code = text(code)?;
                let linked = match (raw.linked_data, index) {
                    (Some(Value::Array(l)), Some(i)) => l.get(i),
                    (Some(Value::Array(l)), None) => l.first(),
                    (Some(Value::Object(m)), _) if m.contains_key("labels") => raw.linked_data,
                    (Some(Value::Object(m)), _) => m.get(&code),
                    _ => None,
                };
                let from_pim = linked
                    .and_then(|l| l.get("labels"))
                    .and_then(|labels| labels.get(locale?))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                Some(Value::String(
                    from_pim
                        .map(str::to_owned)
                        .or_else(|| rule.labels.get(&code).cloned())
                        .unwrap_or(code),
                ))
            };
            match data {
                Value::Array(items) => {
                    let out: Vec<Value> = items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, v)| label_of(v, Some(i)))
                        .collect();
                    multi(rule, out)
                }
                v => label_of(v, None),
            }
        }
    }
}

/// Applies `one` to a scalar, or to each item of a list (then written as `multi` says).
fn scalar_or_list(
    rule: &FieldRule,
    data: &Value,
    one: impl Fn(&Value) -> Option<Value>,
) -> Option<Value> {
    match data {
        Value::Array(items) => multi(rule, items.iter().filter_map(one).collect()),
        v => one(v),
    }
}

fn multi(rule: &FieldRule, items: Vec<Value>) -> Option<Value> {
    if items.is_empty() {
        return None;
    }
    match rule.multi {
        MultiFormat::Array => Some(Value::Array(items)),
        MultiFormat::Join => Some(Value::String(
            items
                .iter()
                .filter_map(text)
                .collect::<Vec<_>>()
                .join(&rule.separator),
        )),
    }
}

/// A scalar as text: strings as they are, numbers normalised, booleans `true`/`false`.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) => number_text(v),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `"12.5000"` → `12.5`, `"3"` → `3`, numbers as they are.
fn to_number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Some(Value::Number(i.into()));
            }
            let f: f64 = s.parse().ok()?;
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                return Some(Value::Number((f as i64).into()));
            }
            Number::from_f64(f).map(Value::Number)
        }
        _ => None,
    }
}

fn number_text(v: &Value) -> Option<String> {
    match to_number(v)? {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn to_bool(v: &Value) -> Option<Value> {
    match v {
        Value::Bool(_) => Some(v.clone()),
        Value::Number(n) => Some(Value::Bool(n.as_f64()? != 0.0)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

/// An Akeneo date (`2016-06-23T00:00:00+00:00`, or `YYYY-MM-DD`) written with `date_format`
/// (default `%Y-%m-%d`); an unreadable date is written as it is.
fn date(rule: &FieldRule, v: &Value) -> Option<Value> {
    let s = v.as_str()?;
    let fmt = rule.date_format.as_deref().unwrap_or("%Y-%m-%d");
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|d| d.naive_local())
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    Some(Value::String(match parsed {
        Some(d) => {
            use std::fmt::Write;
            let mut out = String::new();
            // A bad strftime format makes `write!` fail: fall back to the PIM's text.
            if write!(out, "{}", d.format(fmt)).is_err() {
                s.to_owned()
            } else {
                out
            }
        }
        None => s.to_owned(),
    }))
}

fn metric_text(v: &Value) -> Option<String> {
    let amount = number_text(v.get("amount")?)?;
    match v.get("unit").and_then(Value::as_str) {
        Some(u) if !u.is_empty() => Some(format!("{amount} {u}")),
        _ => Some(amount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product() -> Value {
        json!({
            "uuid": "25566245-55c3-42ce-86d9-8610ac459fa8",
            "family": "tshirt",
            "categories": ["summer", "men"],
            "enabled": true,
            "values": {
                "sku": [{"data": "top-xl", "locale": null, "scope": null}],
                "name": [
                    {"data": "Top XL", "locale": "en_US", "scope": null},
                    {"data": "Haut XL", "locale": "fr_FR", "scope": null}
                ],
                "description": [
                    {"data": "web text", "locale": "en_US", "scope": "ecommerce"},
                    {"data": "print text", "locale": "en_US", "scope": "print"}
                ],
                "weight": [{"data": {"amount": "12.5000", "unit": "KILOGRAM"}, "locale": null, "scope": null}],
                "price": [{"data": [{"amount": "10.50", "currency": "EUR"}, {"amount": "12.00", "currency": "USD"}], "locale": null, "scope": null}],
                "stock": [{"data": "42.0000", "locale": null, "scope": null}],
                "organic": [{"data": false, "locale": null, "scope": null}],
                "launch": [{"data": "2024-03-01T00:00:00+00:00", "locale": null, "scope": null}],
                "color": [{"data": "red", "locale": null, "scope": null, "attribute_type": "pim_catalog_simpleselect",
                           "linked_data": {"attribute": "color", "code": "red", "labels": {"en_US": "Red", "fr_FR": "Rouge"}}}],
                "materials": [{"data": ["cotton", "linen"], "locale": null, "scope": null}],
                "empty": [{"data": "", "locale": null, "scope": null}]
            }
        })
    }

    fn rule(attr: &str) -> FieldRule {
        FieldRule::new(attr, "t")
    }

    fn v(rule: &FieldRule, locale: Option<&str>, scope: Option<&str>) -> Option<Value> {
        field_value(rule, &product(), "sku", locale, scope)
    }

    #[test]
    fn text_number_boolean_and_missing() {
        assert_eq!(v(&rule("sku"), None, None), Some(json!("top-xl")));
        assert_eq!(
            v(&rule("stock"), None, None),
            Some(json!("42.0000")),
            "auto keeps text"
        );
        let mut r = rule("stock");
        r.format = ValueFormat::Number;
        assert_eq!(v(&r, None, None), Some(json!(42)));
        r.format = ValueFormat::Text;
        assert_eq!(v(&r, None, None), Some(json!("42.0000")), "text stays text");
        let typed = json!({"values": {"stock": [{"data": "42.5000", "locale": null, "scope": null, "attribute_type": "pim_catalog_number"}]}});
        assert_eq!(
            field_value(&r, &typed, "sku", None, None),
            Some(json!("42.5")),
            "a number attribute is normalised"
        );
        assert_eq!(v(&rule("organic"), None, None), Some(json!(false)));
        let mut r = rule("organic");
        r.format = ValueFormat::Text;
        assert_eq!(v(&r, None, None), Some(json!("false")));
        assert_eq!(v(&rule("empty"), None, None), None);
        assert_eq!(v(&rule("nope"), None, None), None);
    }

    #[test]
    fn locale_and_scope() {
        assert_eq!(
            v(&rule("name"), None, None),
            None,
            "localised, no locale asked"
        );
        assert_eq!(
            v(&rule("name"), Some("fr_FR"), None),
            Some(json!("Haut XL"))
        );
        let mut r = rule("name");
        r.locale = Some("en_US".into());
        assert_eq!(
            v(&r, Some("fr_FR"), None),
            Some(json!("Top XL")),
            "the rule's locale wins"
        );
        assert_eq!(
            v(&rule("description"), Some("en_US"), Some("print")),
            Some(json!("print text"))
        );
        assert_eq!(v(&rule("description"), Some("en_US"), None), None);
        // A non-localised value fits any locale.
        assert_eq!(
            v(&rule("sku"), Some("de_DE"), Some("x")),
            Some(json!("top-xl"))
        );
    }

    #[test]
    fn options_multi_values_and_labels() {
        assert_eq!(v(&rule("color"), None, None), Some(json!("red")));
        let mut r = rule("color");
        r.format = ValueFormat::OptionLabel;
        assert_eq!(
            v(&r, Some("fr_FR"), None),
            Some(json!("Rouge")),
            "PIM labels"
        );
        r.labels.insert("red".into(), "Crimson".into());
        assert_eq!(
            v(&r, Some("de_DE"), None),
            Some(json!("Crimson")),
            "configured labels"
        );
        assert_eq!(
            v(&rule("materials"), None, None),
            Some(json!(["cotton", "linen"]))
        );
        let mut r = rule("materials");
        r.multi = MultiFormat::Join;
        r.separator = "|".into();
        assert_eq!(v(&r, None, None), Some(json!("cotton|linen")));
        r.format = ValueFormat::OptionLabel;
        r.labels.insert("cotton".into(), "Cotton".into());
        assert_eq!(v(&r, None, None), Some(json!("Cotton|linen")));
    }

    #[test]
    fn dates_metrics_prices_and_properties() {
        assert_eq!(
            v(&rule("launch"), None, None),
            Some(json!("2024-03-01T00:00:00+00:00"))
        );
        let mut r = rule("launch");
        r.format = ValueFormat::Date;
        assert_eq!(v(&r, None, None), Some(json!("2024-03-01")));
        r.date_format = Some("%d/%m/%Y".into());
        assert_eq!(v(&r, None, None), Some(json!("01/03/2024")));
        assert_eq!(v(&rule("weight"), None, None), Some(json!("12.5 KILOGRAM")));
        let mut r = rule("weight");
        r.format = ValueFormat::Number;
        assert_eq!(v(&r, None, None), Some(json!(12.5)));
        assert_eq!(
            v(&rule("price"), None, None),
            Some(json!(["10.5 EUR", "12 USD"]))
        );
        let mut r = rule("price");
        r.currency = Some("USD".into());
        assert_eq!(v(&r, None, None), Some(json!(12)));
        r.format = ValueFormat::Text;
        assert_eq!(v(&r, None, None), Some(json!("12 USD")));

        let prop = |p: ProductProperty| FieldRule {
            attribute: None,
            property: Some(p),
            ..rule("x")
        };
        assert_eq!(
            v(&prop(ProductProperty::Family), None, None),
            Some(json!("tshirt"))
        );
        assert_eq!(
            v(&prop(ProductProperty::Categories), None, None),
            Some(json!(["summer", "men"]))
        );
        assert_eq!(
            v(&prop(ProductProperty::Identifier), None, None),
            Some(json!("top-xl"))
        );
        assert_eq!(
            v(&prop(ProductProperty::Enabled), None, None),
            Some(json!(true))
        );
        assert_eq!(v(&prop(ProductProperty::Parent), None, None), None);
        assert_eq!(
            product_identifier(&product(), "sku").as_deref(),
            Some("top-xl")
        );
    }
}
