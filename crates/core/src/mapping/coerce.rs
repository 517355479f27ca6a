//! The last step of every rule: the mapped value becomes data of the attribute's type.
//!
//! Only applies when the family structure is known. Text, media file and record values become
//! strings; numbers become numeric strings (no exponent); booleans are read from
//! `true/false/yes/no/1/0`; option codes are sanitised (and de-duplicated, for multiple options);
//! dates Akeneo-formatted when readable; a `media_link` URL loses the attribute's
//! `prefix`/`suffix` (Akeneo stores only the part between them).

use serde_json::Value;

use super::condition::is_empty;
use super::normalize::{normalize_date, number_text, DateOutput};
use crate::code::sanitize_code;
use crate::structure::{AssetAttribute, AttributeType};

/// What coercion needs to know about the attribute.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub kind: Option<AttributeType>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

impl Target {
    /// The data that erases a value of this attribute: `[]` for multiple options (Akeneo's
    /// schema for them takes an array only: `null` is refused with 422 "The asset has an
    /// invalid format."), `null` for every other type.
    pub(crate) fn erased(&self) -> Value {
        match self.kind {
            Some(AttributeType::MultipleOptions) => Value::Array(Vec::new()),
            _ => Value::Null,
        }
    }

    pub(crate) fn of(a: &AssetAttribute) -> Self {
        Self {
            kind: Some(a.kind),
            prefix: a.prefix.clone().filter(|p| !p.is_empty()),
            suffix: a.suffix.clone().filter(|p| !p.is_empty()),
        }
    }
}

/// `v` for messages: JSON, cut to a readable length.
pub(crate) fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn scalar_text(v: Value) -> Result<String, Value> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(number_text(&n)),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(other),
    }
}

/// Turns `v` (not empty) into data of the target's type.
pub(crate) fn coerce(target: &Target, v: Value) -> Result<Value, String> {
    let Some(kind) = target.kind else {
        return Ok(v);
    };
    let wrong = |v: &Value, want: &str| format!("cannot turn {} into a {want} value", show(v));
    Ok(match kind {
        AttributeType::Text | AttributeType::MediaFile => {
            Value::String(scalar_text(v).map_err(|v| wrong(&v, "text"))?)
        }
        AttributeType::Date => {
            if let Some(d) = normalize_date(&v, &[], &DateOutput::Akeneo) {
                Value::String(d)
            } else {
                Value::String(scalar_text(v).map_err(|v| wrong(&v, "date"))?)
            }
        }
        AttributeType::Number => {
            let s = scalar_text(v).map_err(|v| wrong(&v, "number"))?;
            let t = s.trim();
            if t.parse::<f64>().map_or(true, |f| !f.is_finite()) {
                return Err(format!(
                    "cannot turn \"{s}\" into a number value (add the `number` transform to read units and separators)"
                ));
            }
            Value::String(t.to_owned())
        }
        AttributeType::Boolean => match v {
            Value::Bool(_) => v,
            Value::Number(ref n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Value::Bool(n.as_u64() == Some(1))
            }
            Value::String(ref s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Value::Bool(true),
                "false" | "no" | "0" => Value::Bool(false),
                _ => return Err(wrong(&v, "boolean")),
            },
            _ => return Err(wrong(&v, "boolean")),
        },
        AttributeType::SingleOption | AttributeType::Record => {
            let what = if kind == AttributeType::Record {
                "record code"
            } else {
                "option"
            };
            Value::String(sanitize_code(
                scalar_text(v).map_err(|v| wrong(&v, what))?.trim(),
            ))
        }
        AttributeType::MultipleOptions => {
            let items = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            let mut codes: Vec<Value> = Vec::with_capacity(items.len());
            for i in items {
                if is_empty(&i) {
                    continue;
                }
                let s = scalar_text(i).map_err(|v| wrong(&v, "option"))?;
                let code = Value::String(sanitize_code(s.trim()));
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            Value::Array(codes)
        }
        AttributeType::MediaLink => {
            let mut s = scalar_text(v).map_err(|v| wrong(&v, "media link"))?;
            if let Some(p) = &target.prefix {
                if let Some(rest) = s.strip_prefix(p.as_str()) {
                    s = rest.to_owned();
                }
            }
            if let Some(x) = &target.suffix {
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
    use serde_json::json;

    fn t(kind: AttributeType) -> Target {
        Target {
            kind: Some(kind),
            ..Target::default()
        }
    }

    #[test]
    fn per_type() {
        use AttributeType::*;
        assert_eq!(coerce(&t(Text), json!(12)).unwrap(), json!("12"));
        assert_eq!(
            coerce(&t(Text), json!(1e21)).unwrap(),
            json!("1000000000000000000000")
        );
        assert!(coerce(&t(Text), json!(["a"])).unwrap_err().contains("text"));
        assert_eq!(coerce(&t(Number), json!(" 12.5 ")).unwrap(), json!("12.5"));
        assert!(coerce(&t(Number), json!("12 cm"))
            .unwrap_err()
            .contains("`number` transform"));
        assert!(coerce(&t(Number), json!("inf")).is_err());
        assert_eq!(coerce(&t(Boolean), json!("Yes")).unwrap(), json!(true));
        assert_eq!(coerce(&t(Boolean), json!(0)).unwrap(), json!(false));
        assert!(coerce(&t(Boolean), json!("maybe")).is_err());
        assert_eq!(
            coerce(&t(SingleOption), json!(" red ")).unwrap(),
            json!("red")
        );
        assert_eq!(
            coerce(&t(MultipleOptions), json!(["a", "", null, "a", 3])).unwrap(),
            json!(["a", "3"])
        );
        assert_eq!(
            coerce(&t(MultipleOptions), json!("a")).unwrap(),
            json!(["a"])
        );
        assert_eq!(
            coerce(&t(Date), json!("2023-03-01T10:00:00Z")).unwrap(),
            json!("2023-03-01T00:00:00+00:00")
        );
        assert_eq!(coerce(&t(Date), json!("soon")).unwrap(), json!("soon"));
        assert_eq!(
            coerce(&Target::default(), json!({"a": 1})).unwrap(),
            json!({"a": 1})
        );
        let link = Target {
            kind: Some(MediaLink),
            prefix: Some("https://x/".into()),
            suffix: Some("?dl=1".into()),
        };
        assert_eq!(
            coerce(&link, json!("https://x/a.jpg?dl=1")).unwrap(),
            json!("a.jpg")
        );
        assert_eq!(
            coerce(&link, json!("https://y/a.jpg")).unwrap(),
            json!("https://y/a.jpg")
        );
        let long = json!({"k": "x".repeat(500)});
        assert!(coerce(&t(Text), long).unwrap_err().len() < 200);
    }
}
