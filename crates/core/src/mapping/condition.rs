//! Conditions on a DAM record: `when` of a value rule, and the routes of [`crate::routing`].
//!
//! ```toml
//! when = { pointer = "/type", equals = "image" }
//! when = { pointer = "/type", in = ["image", "video"] }
//! when = { pointer = "/name", matches = "\\.jpe?g$", ignore_case = true }
//! when = { pointer = "/path", prefix = "/content/dam/packshots/" }
//! when = { pointer = "/metadata/tags", contains = "summer" }
//! when = { pointer = "/metadata/sku", exists = true }
//! when = { all = [{ ... }, { ... }] }     # also `any = [...]` and `not = { ... }`
//! ```
//!
//! A test reads the value at `pointer`. When that value is an array, the test holds when it
//! holds for **any** element (so `equals = "summer"` on a tag list means "has the tag"). Numbers
//! and booleans are compared by their text (`equals = 3` and `equals = "3"` match `3` and `"3"`).
//! A missing or `null` value fails every test except `exists = false`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::normalize::number_text;
use super::pointer::JsonPointer;

/// A condition on the DAM record (see the module docs for the TOML forms).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// One test of the value at a JSON pointer.
    Test {
        /// JSON pointer into the DAM record.
        pointer: String,
        /// What the value must satisfy.
        test: Test,
        /// Compare text case-insensitively. Default: `false`.
        ignore_case: bool,
    },
    /// Every condition holds (`all = [...]`; an empty list holds).
    All(Vec<Condition>),
    /// At least one condition holds (`any = [...]`; an empty list does not hold).
    Any(Vec<Condition>),
    /// The condition does not hold (`not = {...}`).
    Not(Box<Condition>),
}

/// The test of a [`Condition::Test`].
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `exists = true`: the value is there and not empty (not `null`, not `""` or blank, not
    /// `[]`); `exists = false`: the opposite.
    Exists(bool),
    /// `equals = "image"`: the value's text equals this scalar.
    Equals(Value),
    /// `in = ["image", "video"]`: the value's text equals one of these scalars.
    In(Vec<Value>),
    /// `matches = "regex"`: the regular expression finds a match in the value's text.
    Matches(String),
    /// `prefix = "/content/dam/x/"`: the value's text starts with this.
    Prefix(String),
    /// `suffix = ".jpg"`: the value's text ends with this.
    Suffix(String),
    /// `contains = "summer"`: the value's text contains this.
    Contains(String),
}

const TESTS: &[&str] = &[
    "exists", "equals", "in", "matches", "prefix", "suffix", "contains",
];

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

impl Condition {
    /// Reads a condition from its JSON/TOML form, with an error that says what is wrong.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let Value::Object(map) = v else {
            return Err(format!(
                "a condition is a table such as {{ pointer = \"/type\", equals = \"image\" }}, got {}",
                describe(v)
            ));
        };
        for (k, combinator) in [("all", 0), ("any", 1), ("not", 2)] {
            if let Some(inner) = map.get(k) {
                if map.len() != 1 {
                    return Err(format!("`{k}` must be the only key of its condition table"));
                }
                return Ok(match combinator {
                    2 => Condition::Not(Box::new(Self::from_json(inner)?)),
                    _ => {
                        let Value::Array(items) = inner else {
                            return Err(format!("`{k}` takes a list of conditions"));
                        };
                        let items = items
                            .iter()
                            .enumerate()
                            .map(|(i, c)| Self::from_json(c).map_err(|e| format!("{k}[{i}]: {e}")))
                            .collect::<Result<Vec<_>, _>>()?;
                        if combinator == 0 {
                            Condition::All(items)
                        } else {
                            Condition::Any(items)
                        }
                    }
                });
            }
        }
        let pointer = match map.get("pointer") {
            Some(Value::String(p)) => p.clone(),
            Some(other) => {
                return Err(format!(
                    "`pointer` must be a string, got {}",
                    describe(other)
                ))
            }
            None => {
                return Err(
                    "a condition needs a `pointer` (or is `all`, `any` or `not`)".to_string(),
                )
            }
        };
        let ignore_case = match map.get("ignore_case") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "`ignore_case` must be true or false, got {}",
                    describe(other)
                ))
            }
        };
        let mut test = None;
        for (k, v) in map {
            if k == "pointer" || k == "ignore_case" {
                continue;
            }
            if !TESTS.contains(&k.as_str()) {
                return Err(format!(
                    "unknown condition key `{k}` (expected `pointer` with one of {}, or `all`, `any`, `not`)",
                    TESTS.join(", ")
                ));
            }
            if test.is_some() {
                return Err(format!(
                    "a condition has exactly one test (one of {}); use `all = [...]` to combine",
                    TESTS.join(", ")
                ));
            }
            let text = |v: &Value| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`{k}` takes a string, got {}", describe(other))),
            };
            let scalar = |v: &Value| match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
                other => Err(format!(
                    "`{k}` compares with a string, number or boolean, got {}",
                    describe(other)
                )),
            };
            test = Some(match k.as_str() {
                "exists" => match v {
                    Value::Bool(b) => Test::Exists(*b),
                    other => {
                        return Err(format!(
                            "`exists` must be true or false, got {}",
                            describe(other)
                        ))
                    }
                },
                "equals" => Test::Equals(scalar(v)?),
                "in" => match v {
                    Value::Array(items) => {
                        Test::In(items.iter().map(scalar).collect::<Result<_, _>>()?)
                    }
                    other => return Err(format!("`in` takes a list, got {}", describe(other))),
                },
                "matches" => Test::Matches(text(v)?),
                "prefix" => Test::Prefix(text(v)?),
                "suffix" => Test::Suffix(text(v)?),
                _ => Test::Contains(text(v)?),
            });
        }
        let Some(test) = test else {
            return Err(format!(
                "the condition on `{pointer}` has no test: add one of {}",
                TESTS.join(", ")
            ));
        };
        Ok(Condition::Test {
            pointer,
            test,
            ignore_case,
        })
    }

    /// The JSON/TOML form (inverse of [`Condition::from_json`]).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        match self {
            Condition::All(c) => {
                m.insert(
                    "all".into(),
                    Value::Array(c.iter().map(Self::to_json).collect()),
                );
            }
            Condition::Any(c) => {
                m.insert(
                    "any".into(),
                    Value::Array(c.iter().map(Self::to_json).collect()),
                );
            }
            Condition::Not(c) => {
                m.insert("not".into(), c.to_json());
            }
            Condition::Test {
                pointer,
                test,
                ignore_case,
            } => {
                m.insert("pointer".into(), Value::String(pointer.clone()));
                let (k, v) = match test {
                    Test::Exists(b) => ("exists", Value::Bool(*b)),
                    Test::Equals(v) => ("equals", v.clone()),
                    Test::In(v) => ("in", Value::Array(v.clone())),
                    Test::Matches(s) => ("matches", Value::String(s.clone())),
                    Test::Prefix(s) => ("prefix", Value::String(s.clone())),
                    Test::Suffix(s) => ("suffix", Value::String(s.clone())),
                    Test::Contains(s) => ("contains", Value::String(s.clone())),
                };
                m.insert(k.into(), v);
                if *ignore_case {
                    m.insert("ignore_case".into(), Value::Bool(true));
                }
            }
        }
        Value::Object(m)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Whether a value counts as "nothing": `null`, a blank string or an empty array.
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[derive(Debug)]
pub(crate) enum CTest {
    Exists(bool),
    OneOf(Vec<String>),
    Matches(regex::Regex),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

/// A condition ready to evaluate: pointers parsed, regexes compiled.
#[derive(Debug)]
pub(crate) enum Cond {
    Test {
        pointer: JsonPointer,
        test: CTest,
        ignore_case: bool,
    },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// Compiles `c`; errors name the sub-condition (`all[1]: ...`).
    pub(crate) fn compile(c: &Condition) -> Result<Self, String> {
        Ok(match c {
            Condition::All(items) | Condition::Any(items) => {
                let name = if matches!(c, Condition::All(_)) {
                    "all"
                } else {
                    "any"
                };
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Self::compile(c).map_err(|e| format!("{name}[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(c, Condition::All(_)) {
                    Cond::All(items)
                } else {
                    Cond::Any(items)
                }
            }
            Condition::Not(inner) => Cond::Not(Box::new(
                Self::compile(inner).map_err(|e| format!("not: {e}"))?,
            )),
            Condition::Test {
                pointer,
                test,
                ignore_case,
            } => {
                let ic = *ignore_case;
                let fold = |s: &str| if ic { s.to_lowercase() } else { s.to_owned() };
                let test = match test {
                    Test::Exists(b) => CTest::Exists(*b),
                    Test::Equals(v) => {
                        CTest::OneOf(scalar_text(v).map(|s| fold(&s)).into_iter().collect())
                    }
                    Test::In(vs) => CTest::OneOf(
                        vs.iter()
                            .filter_map(scalar_text)
                            .map(|s| fold(&s))
                            .collect(),
                    ),
                    Test::Matches(p) => CTest::Matches(
                        regex::RegexBuilder::new(p)
                            .case_insensitive(ic)
                            .build()
                            .map_err(|e| format!("`matches`: invalid regular expression: {e}"))?,
                    ),
                    Test::Prefix(s) => CTest::Prefix(fold(s)),
                    Test::Suffix(s) => CTest::Suffix(fold(s)),
                    Test::Contains(s) => CTest::Contains(fold(s)),
                };
                Cond::Test {
                    pointer: JsonPointer::parse(pointer)?,
                    test,
                    ignore_case: ic,
                }
            }
        })
    }

    /// Whether the condition holds for `record`.
    pub(crate) fn eval(&self, record: &Value) -> bool {
        match self {
            Cond::All(items) => items.iter().all(|c| c.eval(record)),
            Cond::Any(items) => items.iter().any(|c| c.eval(record)),
            Cond::Not(c) => !c.eval(record),
            Cond::Test {
                pointer,
                test,
                ignore_case,
            } => {
                let v = pointer.get(record);
                if let CTest::Exists(want) = test {
                    return v.is_some_and(|v| !is_empty(v)) == *want;
                }
                match v {
                    Some(Value::Array(items)) => {
                        items.iter().any(|i| test_scalar(test, i, *ignore_case))
                    }
                    Some(v) => test_scalar(test, v, *ignore_case),
                    None => false,
                }
            }
        }
    }
}

fn test_scalar(test: &CTest, v: &Value, ignore_case: bool) -> bool {
    let owned;
    let text: &str = match v {
        Value::String(s) => s,
        Value::Number(n) => {
            owned = number_text(n);
            &owned
        }
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        _ => return false,
    };
    if let CTest::Matches(re) = test {
        return re.is_match(text);
    }
    let folded;
    let text = if ignore_case {
        folded = text.to_lowercase();
        &folded
    } else {
        text
    };
    match test {
        CTest::OneOf(options) => options.iter().any(|o| o == text),
        CTest::Prefix(p) => text.starts_with(p.as_str()),
        CTest::Suffix(s) => text.ends_with(s.as_str()),
        CTest::Contains(s) => text.contains(s.as_str()),
        CTest::Exists(_) | CTest::Matches(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(c: Value, record: &Value) -> bool {
        let c = Condition::from_json(&c).unwrap();
        assert_eq!(Condition::from_json(&c.to_json()).unwrap(), c);
        Cond::compile(&c).unwrap().eval(record)
    }

    #[test]
    fn every_test() {
        let r = json!({
            "type": "image", "n": 3, "flag": true, "tags": ["Summer", "red"],
            "path": "/content/dam/packshots/a.JPG", "empty": "  ", "none": null, "list": []
        });
        assert!(holds(json!({"pointer": "/type", "equals": "image"}), &r));
        assert!(!holds(json!({"pointer": "/type", "equals": "video"}), &r));
        assert!(holds(json!({"pointer": "/n", "equals": "3"}), &r));
        assert!(holds(json!({"pointer": "/n", "equals": 3}), &r));
        assert!(holds(json!({"pointer": "/flag", "equals": true}), &r));
        assert!(holds(
            json!({"pointer": "/type", "in": ["video", "image"]}),
            &r
        ));
        assert!(holds(json!({"pointer": "/tags", "equals": "red"}), &r));
        assert!(!holds(json!({"pointer": "/tags", "equals": "summer"}), &r));
        assert!(holds(
            json!({"pointer": "/tags", "equals": "summer", "ignore_case": true}),
            &r
        ));
        assert!(holds(
            json!({"pointer": "/path", "matches": "\\.jpe?g$", "ignore_case": true}),
            &r
        ));
        assert!(!holds(
            json!({"pointer": "/path", "matches": "\\.jpe?g$"}),
            &r
        ));
        assert!(holds(
            json!({"pointer": "/path", "prefix": "/content/dam/packshots/"}),
            &r
        ));
        assert!(holds(json!({"pointer": "/path", "suffix": ".JPG"}), &r));
        assert!(holds(
            json!({"pointer": "/path", "contains": "packshots"}),
            &r
        ));
        assert!(holds(json!({"pointer": "/type", "exists": true}), &r));
        for missing in ["/empty", "/none", "/list", "/nope"] {
            assert!(
                holds(json!({"pointer": missing, "exists": false}), &r),
                "{missing}"
            );
            assert!(!holds(json!({"pointer": missing, "equals": ""}), &r) || missing == "/empty");
        }
        assert!(!holds(json!({"pointer": "/nope", "prefix": ""}), &r));
    }

    #[test]
    fn combinators() {
        let r = json!({"type": "image", "size": 10});
        let img = json!({"pointer": "/type", "equals": "image"});
        let big = json!({"pointer": "/size", "equals": 99});
        assert!(holds(json!({"all": [img, {"not": big}]}), &r));
        assert!(!holds(json!({"all": [img, big]}), &r));
        assert!(holds(json!({"any": [big, img]}), &r));
        assert!(holds(json!({"all": []}), &r));
        assert!(!holds(json!({"any": []}), &r));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (c, want) in [
            (json!("x"), "is a table"),
            (json!({"equals": "x"}), "needs a `pointer`"),
            (json!({"pointer": "/a"}), "has no test"),
            (
                json!({"pointer": "/a", "equals": "x", "prefix": "y"}),
                "exactly one test",
            ),
            (
                json!({"pointer": "/a", "equal": "x"}),
                "unknown condition key `equal`",
            ),
            (
                json!({"pointer": "/a", "equals": ["x"]}),
                "string, number or boolean",
            ),
            (json!({"pointer": "/a", "exists": "yes"}), "true or false"),
            (json!({"all": [{"pointer": "/a"}]}), "all[0]: "),
            (
                json!({"not": {"pointer": "/a", "equals": 1}, "any": []}),
                "only key",
            ),
        ] {
            let e = Condition::from_json(&c).unwrap_err();
            assert!(e.contains(want), "{c}: {e}");
        }
        let c = Condition::from_json(&json!({"pointer": "a", "equals": 1})).unwrap();
        assert!(Cond::compile(&c)
            .unwrap_err()
            .contains("must start with `/`"));
        let c = Condition::from_json(&json!({"any": [{"pointer": "/a", "matches": "("}]})).unwrap();
        assert!(Cond::compile(&c)
            .unwrap_err()
            .starts_with("any[0]: `matches`"));
    }
}
