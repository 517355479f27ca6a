//! minijinja templates: the environment (with the connector's filters) and the fast path for
//! templates that are a plain lookup (`{{ dam_id }}`, `{{ name }}`, `{{ metadata.title }}`,
//! `{{ data["repo:name"] }}`), which are answered from the record without building a template
//! context.
//!
//! Filters added to minijinja's built-ins:
//! - `sanitize_code`: `{{ name | sanitize_code }}` → a valid Akeneo code (see [`crate::code`]);
//! - `regex_capture(pattern, group=1)`: the group (number or name) of the first match, undefined
//!   when nothing matches (so `| default("x")` works);
//! - `regex_replace(pattern, replacement)`: replaces every match (`$1`, `${name}`);
//! - `number(decimal="auto")`: the `number` transform (`"1 234,5 mm"` → `1234.5`);
//! - `date(format="auto")`: the `date` transform (→ `2023-03-01T00:00:00+00:00`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value as MjValue};
use regex::Regex;
use serde_json::Value;

use super::normalize::{normalize_date, normalize_number, DateFormat, DateOutput};
use crate::code::sanitize_code;
use crate::DamAsset;

/// Patterns compiled by the regex filters, kept for reuse (bounded).
#[derive(Default)]
struct RegexCache(Mutex<HashMap<String, Arc<Regex>>>);

const REGEX_CACHE_MAX: usize = 256;

/// How regex filter errors start (recognised by [`probe`]).
const REGEX_ERROR: &str = "invalid regular expression: ";

impl RegexCache {
    fn get(&self, pattern: &str) -> Result<Arc<Regex>, Error> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(re) = map.get(pattern) {
            return Ok(re.clone());
        }
        let re =
            Arc::new(Regex::new(pattern).map_err(|e| {
                Error::new(ErrorKind::InvalidOperation, format!("{REGEX_ERROR}{e}"))
            })?);
        if map.len() < REGEX_CACHE_MAX {
            map.insert(pattern.to_owned(), re.clone());
        }
        Ok(re)
    }
}

/// The text of a template value; `None` for undefined and none.
fn text_of(v: &MjValue) -> Option<Cow<'_, str>> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        _ => Some(match v.as_str() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(v.to_string()),
        }),
    }
}

/// The minijinja environment every mapping uses: chainable undefined (a missing field renders
/// as empty), no auto-escaping, the filters of the module docs.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    let cache = Arc::new(RegexCache::default());
    env.add_filter("sanitize_code", |v: MjValue| -> MjValue {
        match text_of(&v) {
            Some(s) => MjValue::from(sanitize_code(&s)),
            None => MjValue::UNDEFINED,
        }
    });
    let c = cache.clone();
    env.add_filter(
        "regex_capture",
        move |v: MjValue, pattern: String, group: Option<MjValue>| -> Result<MjValue, Error> {
            let re = c.get(&pattern)?;
            let Some(s) = text_of(&v) else {
                return Ok(MjValue::UNDEFINED);
            };
            let Some(caps) = re.captures(&s) else {
                return Ok(MjValue::UNDEFINED);
            };
            let m = match &group {
                None => caps.get(usize::from(re.captures_len() > 1)),
                Some(g) => match (g.as_str(), g.as_usize()) {
                    (Some(name), _) => caps.name(name),
                    (None, Some(i)) => caps.get(i),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "regex_capture: the group is a number or a name",
                        ))
                    }
                },
            };
            Ok(m.map(|m| MjValue::from(m.as_str()))
                .unwrap_or(MjValue::UNDEFINED))
        },
    );
    let c = cache;
    env.add_filter(
        "regex_replace",
        move |v: MjValue, pattern: String, with: String| -> Result<MjValue, Error> {
            let re = c.get(&pattern)?;
            Ok(match text_of(&v) {
                Some(s) => MjValue::from(re.replace_all(&s, with.as_str()).into_owned()),
                None => MjValue::UNDEFINED,
            })
        },
    );
    env.add_filter(
        "number",
        |v: MjValue, decimal: Option<String>| -> Result<MjValue, Error> {
            let decimal = match decimal.as_deref() {
                None | Some("auto") => None,
                Some(".") => Some('.'),
                Some(",") => Some(','),
                Some(other) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                        "number: the decimal separator is \".\", \",\" or \"auto\", got {other:?}"
                    ),
                    ))
                }
            };
            Ok(text_of(&v)
                .and_then(|s| normalize_number(&s, decimal, None))
                .map(MjValue::from)
                .unwrap_or(MjValue::UNDEFINED))
        },
    );
    env.add_filter(
        "date",
        |v: MjValue, format: Option<String>| -> Result<MjValue, Error> {
            let formats = match format.as_deref() {
                None => vec![],
                Some(f) => vec![DateFormat::parse(f)
                    .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("date: {e}")))?],
            };
            let input = if v.kind() == ValueKind::Number {
                match (v.as_i64(), f64::try_from(v.clone())) {
                    (Some(i), _) => Value::from(i),
                    (None, Ok(f)) => serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                }
            } else {
                match text_of(&v) {
                    Some(s) => Value::String(s.into_owned()),
                    None => return Ok(MjValue::UNDEFINED),
                }
            };
            Ok(normalize_date(&input, &formats, &DateOutput::Akeneo)
                .map(MjValue::from)
                .unwrap_or(MjValue::UNDEFINED))
        },
    );
    env
}

/// Renders template `name` over an empty record to find what only shows when rendering: an
/// unknown filter, test, function or method, or an invalid regular expression given to a regex
/// filter. Other errors depend on the data and are left to mapping time. Only the parts of the
/// template an empty record reaches are checked.
pub(crate) fn probe(env: &Environment<'static>, name: &str) -> Result<(), String> {
    let ctx = minijinja::context! { dam_id => "", dam_updated => "" };
    match env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod => Err(format!("template: {e}")),
            ErrorKind::InvalidOperation
                if e.detail().is_some_and(|d| d.starts_with(REGEX_ERROR)) =>
            {
                Err(format!("template: {e}"))
            }
            _ => Ok(()),
        },
    }
}

/// The template context of an asset: the record's top-level keys, plus `dam_id` and
/// `dam_updated` (RFC 3339), which win over record keys of the same name.
pub(crate) fn context(asset: &DamAsset) -> MjValue {
    let record = MjValue::from_serialize(&asset.record);
    minijinja::context! {
        dam_id => asset.id.as_str(),
        dam_updated => asset.updated_at.to_rfc3339(),
        ..record
    }
}

/// A template that is a plain lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// `{{ dam_id }}`.
    DamId,
    /// `{{ a.b["c:d"] }}`: object keys from the record's top level.
    Record(Vec<String>),
}

/// Names the fast path leaves to minijinja: literals, keywords, globals, and `dam_updated`
/// (formatted by the context).
const NOT_LOOKUPS: &[&str] = &[
    "none",
    "None",
    "true",
    "True",
    "false",
    "False",
    "range",
    "dict",
    "debug",
    "namespace",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "dam_updated",
];

fn ident(s: &str) -> Option<(&str, &str)> {
    let end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// Recognises `{{ a }}`, `{{ a.b }}`, `{{ a["x:y"] }}` (nothing else in the template), so it can
/// be answered by a lookup. `None` means "render it".
pub(crate) fn fast_path(template: &str) -> Option<Lookup> {
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    if inner.starts_with('-') || inner.ends_with('-') || inner.starts_with('+') {
        return None;
    }
    let (root, mut rest) = ident(inner)?;
    if NOT_LOOKUPS.contains(&root) {
        return None;
    }
    let mut keys = vec![root.to_owned()];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let (k, r) = ident(r)?;
            if k.as_bytes()[0].is_ascii_digit() {
                return None;
            }
            keys.push(k.to_owned());
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            let quote = r.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let r = &r[1..];
            let end = r.find(quote)?;
            let key = &r[..end];
            if key.contains('\\') {
                return None;
            }
            keys.push(key.to_owned());
            rest = r[end + 1..].strip_prefix(']')?;
        } else {
            return None;
        }
    }
    if keys[0] == "dam_id" {
        return (keys.len() == 1).then_some(Lookup::DamId);
    }
    Some(Lookup::Record(keys))
}

impl Lookup {
    /// What the template renders to: `Some(Some(text))`, `Some(None)` for an empty rendering
    /// (missing value), or `None` when the value is one minijinja formats its own way (floats,
    /// booleans, null, lists, tables): then the template must be rendered.
    pub(crate) fn get<'a>(&self, asset: &'a DamAsset) -> Option<Option<Cow<'a, str>>> {
        let keys = match self {
            Lookup::DamId => return Some(Some(Cow::Borrowed(asset.id.as_str()))),
            Lookup::Record(keys) => keys,
        };
        let mut cur = &asset.record;
        for k in keys {
            match cur {
                Value::Object(m) => match m.get(k.as_str()) {
                    Some(v) => cur = v,
                    None => return Some(None),
                },
                _ => return Some(None),
            }
        }
        match cur {
            Value::String(s) => Some(if s.is_empty() {
                None
            } else {
                Some(Cow::Borrowed(s.as_str()))
            }),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Some(Cow::Owned(n.to_string()))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn asset(record: Value) -> DamAsset {
        DamAsset {
            id: "ID-1".into(),
            updated_at: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            record,
        }
    }

    fn render(env: &Environment<'_>, t: &str, a: &DamAsset) -> String {
        env.render_str(t, context(a)).unwrap()
    }

    #[test]
    fn recognises_lookups() {
        assert_eq!(fast_path("{{ dam_id }}"), Some(Lookup::DamId));
        assert_eq!(
            fast_path("{{name}}"),
            Some(Lookup::Record(vec!["name".into()]))
        );
        assert_eq!(
            fast_path("{{ data.repositoryMetadata[\"repo:name\"] }}"),
            Some(Lookup::Record(vec![
                "data".into(),
                "repositoryMetadata".into(),
                "repo:name".into()
            ]))
        );
        for t in [
            "{{ dam_updated }}",
            "{{ dam_id.x }}",
            "{{ name | upper }}",
            "{{ a }}{{ b }}",
            "x{{ a }}",
            "{{ a }}\n",
            "{{- a }}",
            "{{ a.0 }}",
            "{{ a[0] }}",
            "{{ none }}",
            "{{ range }}",
            "{{ a . b }}",
            "{{ a[\"x\\\"y\"] }}",
        ] {
            assert_eq!(fast_path(t), None, "{t}");
        }
    }

    #[test]
    fn filters() {
        let env = environment();
        let a = asset(
            json!({"name": "SKU-0042_front.jpg", "w": "1 200,5 px", "d": "2023:03:01 10:00:00", "ts": 1677664800}),
        );
        assert_eq!(
            render(&env, "{{ name | sanitize_code }}", &a),
            sanitize_code("SKU-0042_front.jpg")
        );
        assert_eq!(
            render(&env, "{{ name | regex_capture('^SKU-(\\\\d+)') }}", &a),
            "0042"
        );
        assert_eq!(
            render(
                &env,
                "{{ name | regex_capture('_(?P<view>[a-z]+)', 'view') }}",
                &a
            ),
            "front"
        );
        assert_eq!(
            render(
                &env,
                "{{ name | regex_capture('x(y)') | default('none') }}",
                &a
            ),
            "none"
        );
        assert_eq!(
            render(&env, "{{ name | regex_replace('[^a-z]', '') }}", &a),
            "frontjpg"
        );
        assert_eq!(render(&env, "{{ w | number }}", &a), "1200.5");
        assert_eq!(
            render(&env, "{{ d | date }}", &a),
            "2023-03-01T00:00:00+00:00"
        );
        assert_eq!(
            render(&env, "{{ ts | date }}", &a),
            "2023-03-01T00:00:00+00:00"
        );
        assert_eq!(render(&env, "{{ missing | sanitize_code }}", &a), "");
        assert!(env
            .render_str("{{ name | regex_capture('(') }}", context(&a))
            .is_err());
        assert!(env
            .render_str("{{ w | number(';') }}", context(&a))
            .is_err());
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("dam_id".to_string()),
            Just("x:y".to_string())
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z ]{0,4}".prop_map(Value::from),
        ]
    }

    fn record() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The fast path gives exactly what minijinja renders (or defers to it).
        #[test]
        fn fast_path_agrees_with_minijinja(rec in record()) {
            let env = environment();
            let a = asset(rec);
            for t in ["{{ a }}", "{{ a.b }}", "{{ a[\"x:y\"] }}", "{{ b.a.a }}", "{{ dam_id }}", "{{ x }}"] {
                let lookup = fast_path(t).unwrap();
                if let Some(fast) = lookup.get(&a) {
                    let fast = fast.map(|c| c.into_owned()).unwrap_or_default();
                    prop_assert_eq!(fast, render(&env, t, &a), "{}", t);
                }
            }
        }
    }
}
