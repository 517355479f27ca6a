//! The few JSON-schema checks the Asset Manager connector runs, with the messages of the PHP
//! validator it uses (justinrainbow/json-schema: `Integer value found, but a string is required`,
//! `The property channel is required`, ...) and Akeneo's property paths (`values.name[0].locale`,
//! CE `JsonSchemaErrorsFormatter`).

use serde_json::{json, Map, Value};

use super::http::php_type;

/// Expected JSON types, worded like the validator does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    String,
    Null,
    Array,
    Object,
    Boolean,
    Integer,
}

impl Ty {
    fn wording(self) -> &'static str {
        match self {
            Ty::String => "a string",
            Ty::Null => "a null",
            Ty::Array => "an array",
            Ty::Object => "an object",
            Ty::Boolean => "a boolean",
            Ty::Integer => "an integer",
        }
    }

    pub(crate) fn accepts(self, v: &Value) -> bool {
        match self {
            Ty::String => v.is_string(),
            Ty::Null => v.is_null(),
            Ty::Array => v.is_array(),
            Ty::Object => v.is_object(),
            Ty::Boolean => v.is_boolean(),
            Ty::Integer => v.is_i64() || v.is_u64(),
        }
    }
}

/// Collected `{property, message}` errors.
#[derive(Default)]
pub(crate) struct Errors(pub Vec<(String, String)>);

impl Errors {
    pub fn push(&mut self, property: impl Into<String>, message: impl Into<String>) {
        self.0.push((property.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|(p, m)| json!({"property": p, "message": m}))
                .collect(),
        )
    }

    /// Checks `v` against `types`; returns whether it matched.
    pub fn check_type(&mut self, path: &str, v: &Value, types: &[Ty]) -> bool {
        if types.iter().any(|t| t.accepts(v)) {
            return true;
        }
        let words: Vec<&str> = types.iter().map(|t| t.wording()).collect();
        let expected = match words.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {}", rest.join(", "), last),
            None => String::new(),
        };
        self.push(
            path,
            format!("{} value found, but {} is required", php_type(v), expected),
        );
        false
    }

    /// `required` keys of an object.
    pub fn check_required(&mut self, path: &str, obj: &Map<String, Value>, keys: &[&str]) {
        for k in keys {
            if !obj.contains_key(*k) {
                self.push(prop(path, k), format!("The property {k} is required"));
            }
        }
    }

    /// `additionalProperties: false`.
    pub fn check_additional(&mut self, path: &str, obj: &Map<String, Value>, allowed: &[&str]) {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push(
                    path,
                    format!(
                        "The property {k} is not defined and the definition does not allow additional properties"
                    ),
                );
            }
        }
    }

    /// `enum`.
    pub fn check_enum(&mut self, path: &str, v: &Value, allowed: &[&str]) -> bool {
        if v.as_str().is_some_and(|s| allowed.contains(&s)) {
            return true;
        }
        let list = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(",");
        self.push(
            path,
            format!("Does not have a value in the enumeration [{list}]"),
        );
        false
    }
}

/// `a.b` (or `b` at the root).
pub(crate) fn prop(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a[i]`.
pub(crate) fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
