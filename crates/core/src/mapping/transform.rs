//! The transform pipeline of a value rule: `transform = ["trim", { split = "," }, ...]`.
//!
//! Each step takes the value the previous one made. Steps that work on text apply to every
//! element of a list (and drop elements that become `null` or blank); `split`, `join`, `first`,
//! `last` and `unique` work on the list itself. See `docs/mapping.md` for the reference.

use std::collections::{BTreeMap, HashMap, HashSet};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::condition::is_empty;
use super::normalize::{normalize_date, normalize_number, number_text, DateFormat, DateOutput};
use super::pointer::JsonPointer;
use crate::code::sanitize_code;

/// A named value map: DAM text → value (usually an option code). `[families.maps.<name>]`.
pub type ValueMap = BTreeMap<String, Value>;
/// The named value maps of a family, by name.
pub type ValueMaps = BTreeMap<String, ValueMap>;

/// Which capture group a `regex` step keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// By number (`0` is the whole match).
    Index(usize),
    /// By name (`(?P<sku>...)`).
    Name(String),
}

/// Where a `map` step finds its table.
#[derive(Debug, Clone, PartialEq)]
pub enum MapSource {
    /// A named map of the family (`{ map = "tag_codes" }`).
    Named(String),
    /// A map written in place (`{ map = { "Yes" = "yes", "No" = "no" } }`).
    Inline(ValueMap),
}

/// What a `map` step does with a value the map has no entry for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Keep the value as it is. The default.
    #[default]
    Keep,
    /// Drop it (an element of a list disappears; a single value becomes empty).
    Drop,
    /// Fail the mapping of the asset, naming the value.
    Error,
}

/// One step of a value rule's `transform` list.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// `"trim"`: removes leading and trailing white space.
    Trim,
    /// `"lower"`: lower case.
    Lower,
    /// `"upper"`: upper case.
    Upper,
    /// `"sanitize_code"`: turns text into a valid Akeneo code (see [`crate::code`]).
    SanitizeCode,
    /// `"first"`: the first element of a list (a single value is kept).
    First,
    /// `"last"`: the last element of a list.
    Last,
    /// `"unique"`: drops repeated elements of a list, keeping the first.
    Unique,
    /// `{ replace = "-", with = "_" }`: replaces every occurrence of a text.
    Replace { find: String, with: String },
    /// `{ regex_replace = "\\s+", with = " " }`: replaces every match; `with` may use `$1`,
    /// `${name}`.
    RegexReplace { pattern: String, with: String },
    /// `{ prefix = "SKU_" }`: adds text in front.
    Prefix(String),
    /// `{ suffix = "_v1" }`: adds text at the end.
    Suffix(String),
    /// `{ strip_prefix = "https://cdn.example.com/" }`: removes text in front, if there.
    StripPrefix(String),
    /// `{ strip_suffix = ".jpg" }`: removes text at the end, if there.
    StripSuffix(String),
    /// `{ truncate = 80 }`: at most that many characters. `"truncate"`: at most the text
    /// attribute's `max_characters` (nothing happens when the structure gives none).
    Truncate(Option<usize>),
    /// `{ regex = "^SKU-(\\d+)", capture = 1 }`: the capture group of the first match (no match
    /// → empty). `capture` is a number or a group name; default: `1` when the regex has a group,
    /// else the whole match. `all = true`: every match, as a list.
    Regex {
        pattern: String,
        capture: Option<Capture>,
        all: bool,
    },
    /// `{ split = "," }` or `{ split = [",", ";"] }`: text → list; parts are trimmed, blank parts
    /// dropped.
    Split(Vec<String>),
    /// `{ join = "|" }`: list → text.
    Join(String),
    /// `"number"`, `{ number = "," }` (decimal comma), `{ number = "auto", decimals = 2 }`:
    /// normalises a number (units, thousand separators, decimal comma) to Akeneo's numeric text.
    /// Without `decimals`, a number attribute that allows no decimals gets an integer (rounded).
    Number {
        decimal: Option<char>,
        decimals: Option<u32>,
    },
    /// `"date"`, `{ date = "%d/%m/%Y" }`, `{ date = ["%d/%m/%Y", "auto"], output = "date" }`:
    /// reads a date (formats tried in order; none given = `auto`) and writes Akeneo's
    /// `2023-03-01T00:00:00+00:00`. `output`: `akeneo` (default), `datetime`, `date` or a
    /// `chrono` format.
    Date {
        formats: Vec<String>,
        output: Option<String>,
    },
    /// `{ map = "tag_codes", unmapped = "drop", ignore_case = true }`: looks each value up in a
    /// value map.
    Map {
        map: MapSource,
        unmapped: Unmapped,
        ignore_case: bool,
    },
    /// `{ get = "/value" }`: the value at a JSON pointer inside the current value (each element
    /// of a list: `[{ "value": "a" }, ...]` → `["a", ...]`).
    Get(String),
}

const NAMED: &[&str] = &[
    "trim",
    "lower",
    "upper",
    "sanitize_code",
    "first",
    "last",
    "unique",
    "truncate",
    "number",
    "date",
];

/// Table heads and the other keys each allows.
const HEADS: &[(&str, &[&str])] = &[
    ("replace", &["with"]),
    ("regex_replace", &["with"]),
    ("prefix", &[]),
    ("suffix", &[]),
    ("strip_prefix", &[]),
    ("strip_suffix", &[]),
    ("truncate", &[]),
    ("regex", &["capture", "all"]),
    ("split", &[]),
    ("join", &[]),
    ("number", &["decimals"]),
    ("date", &["output"]),
    ("map", &["unmapped", "ignore_case"]),
    ("get", &[]),
];

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

fn str_of(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("`{key}` takes a string, got {}", describe(other))),
    }
}

fn non_empty(key: &str, s: String) -> Result<String, String> {
    if s.is_empty() {
        Err(format!("`{key}` needs a non-empty string"))
    } else {
        Ok(s)
    }
}

impl Transform {
    /// Reads a step from its JSON/TOML form, with an error that says what is wrong.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(name) => Ok(match name.as_str() {
                "trim" => Self::Trim,
                "lower" => Self::Lower,
                "upper" => Self::Upper,
                "sanitize_code" => Self::SanitizeCode,
                "first" => Self::First,
                "last" => Self::Last,
                "unique" => Self::Unique,
                "truncate" => Self::Truncate(None),
                "number" => Self::Number {
                    decimal: None,
                    decimals: None,
                },
                "date" => Self::Date {
                    formats: vec![],
                    output: None,
                },
                other => {
                    let tables: Vec<&str> = HEADS.iter().map(|(h, _)| *h).collect();
                    let hint = if tables.contains(&other) {
                        format!(" (`{other}` takes an argument: {{ {other} = ... }})")
                    } else {
                        String::new()
                    };
                    return Err(format!(
                        "unknown transform `{other}`{hint}; known: {}, or a table with one of {}",
                        NAMED.join(", "),
                        tables.join(", ")
                    ));
                }
            }),
            Value::Object(map) => Self::from_table(map),
            other => Err(format!(
                "a transform is a name (\"trim\") or a table ({{ split = \",\" }}), got {}",
                describe(other)
            )),
        }
    }

    fn from_table(map: &Map<String, Value>) -> Result<Self, String> {
        let heads: Vec<&(&str, &[&str])> =
            HEADS.iter().filter(|(h, _)| map.contains_key(*h)).collect();
        let (head, allowed) = match heads.as_slice() {
            [one] => **one,
            [] => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown transform table with keys {keys:?}; a table transform has one of {}",
                    HEADS.iter().map(|(h, _)| *h).collect::<Vec<_>>().join(", ")
                ));
            }
            many => {
                return Err(format!(
                    "one transform per table: found {} (list them as separate steps)",
                    many.iter()
                        .map(|(h, _)| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))
            }
        };
        for k in map.keys() {
            if k != head && !allowed.contains(&k.as_str()) {
                return Err(if allowed.is_empty() {
                    format!("`{head}` takes no other key, got `{k}`")
                } else {
                    format!(
                        "`{head}` allows only {} besides itself, got `{k}`",
                        allowed
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
        }
        let v = &map[head];
        let with = || match map.get("with") {
            Some(w) => str_of("with", w),
            None => Err(format!("`{head}` needs `with` (the replacement text)")),
        };
        Ok(match head {
            "replace" => Self::Replace {
                find: non_empty("replace", str_of(head, v)?)?,
                with: with()?,
            },
            "regex_replace" => Self::RegexReplace {
                pattern: str_of(head, v)?,
                with: with()?,
            },
            "prefix" => Self::Prefix(str_of(head, v)?),
            "suffix" => Self::Suffix(str_of(head, v)?),
            "strip_prefix" => Self::StripPrefix(non_empty(head, str_of(head, v)?)?),
            "strip_suffix" => Self::StripSuffix(non_empty(head, str_of(head, v)?)?),
            "truncate" => match v.as_u64() {
                Some(n) if n > 0 => Self::Truncate(Some(n.min(usize::MAX as u64) as usize)),
                _ => return Err("`truncate` takes a positive number of characters".into()),
            },
            "regex" => Self::Regex {
                pattern: str_of(head, v)?,
                capture: match map.get("capture") {
                    None => None,
                    Some(Value::String(s)) => Some(Capture::Name(s.clone())),
                    Some(c) => match c.as_u64() {
                        Some(n) => Some(Capture::Index(n.min(usize::MAX as u64) as usize)),
                        None => {
                            return Err(
                                "`capture` is a group number (0, 1, ...) or a group name".into()
                            )
                        }
                    },
                },
                all: match map.get("all") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(o) => {
                        return Err(format!("`all` must be true or false, got {}", describe(o)))
                    }
                },
            },
            "split" => Self::Split(match v {
                Value::String(s) => vec![non_empty("split", s.clone())?],
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| str_of("split", i).and_then(|s| non_empty("split", s)))
                    .collect::<Result<_, _>>()?,
                _ => return Err("`split` takes a separator or a list of separators".into()),
            }),
            "join" => Self::Join(str_of(head, v)?),
            "number" => Self::Number {
                decimal: match v.as_str() {
                    Some("auto") => None,
                    Some(".") => Some('.'),
                    Some(",") => Some(','),
                    _ => {
                        return Err(
                            "`number` takes the decimal separator: \".\", \",\" or \"auto\"".into(),
                        )
                    }
                },
                decimals: match map.get("decimals") {
                    None => None,
                    Some(d) => match d.as_u64() {
                        Some(n) if n <= 30 => Some(n as u32),
                        _ => return Err("`decimals` takes a number from 0 to 30".into()),
                    },
                },
            },
            "date" => Self::Date {
                formats: match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|i| str_of("date", i))
                        .collect::<Result<_, _>>()?,
                    _ => return Err("`date` takes a format or a list of formats".into()),
                },
                output: map.get("output").map(|o| str_of("output", o)).transpose()?,
            },
            "map" => Self::Map {
                map: match v {
                    Value::String(name) => MapSource::Named(name.clone()),
                    Value::Object(entries) => MapSource::Inline(
                        entries
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    other => {
                        return Err(format!(
                            "`map` takes the name of a map or a table of entries, got {}",
                            describe(other)
                        ))
                    }
                },
                unmapped: match map.get("unmapped") {
                    None => Unmapped::Keep,
                    Some(u) => Unmapped::deserialize(u)
                        .map_err(|_| "`unmapped` is \"keep\", \"drop\" or \"error\"".to_string())?,
                },
                ignore_case: match map.get("ignore_case") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(o) => {
                        return Err(format!(
                            "`ignore_case` must be true or false, got {}",
                            describe(o)
                        ))
                    }
                },
            },
            _ => Self::Get(str_of(head, v)?),
        })
    }

    /// The JSON/TOML form (inverse of [`Transform::from_json`]).
    pub fn to_json(&self) -> Value {
        let s = |x: &str| Value::String(x.to_owned());
        let table = |pairs: Vec<(&str, Value)>| {
            Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };
        match self {
            Self::Trim => s("trim"),
            Self::Lower => s("lower"),
            Self::Upper => s("upper"),
            Self::SanitizeCode => s("sanitize_code"),
            Self::First => s("first"),
            Self::Last => s("last"),
            Self::Unique => s("unique"),
            Self::Truncate(None) => s("truncate"),
            Self::Truncate(Some(n)) => table(vec![("truncate", Value::from(*n as u64))]),
            Self::Replace { find, with } => table(vec![("replace", s(find)), ("with", s(with))]),
            Self::RegexReplace { pattern, with } => {
                table(vec![("regex_replace", s(pattern)), ("with", s(with))])
            }
            Self::Prefix(x) => table(vec![("prefix", s(x))]),
            Self::Suffix(x) => table(vec![("suffix", s(x))]),
            Self::StripPrefix(x) => table(vec![("strip_prefix", s(x))]),
            Self::StripSuffix(x) => table(vec![("strip_suffix", s(x))]),
            Self::Regex {
                pattern,
                capture,
                all,
            } => {
                let mut t = vec![("regex", s(pattern))];
                match capture {
                    Some(Capture::Index(i)) => t.push(("capture", Value::from(*i as u64))),
                    Some(Capture::Name(n)) => t.push(("capture", s(n))),
                    None => {}
                }
                if *all {
                    t.push(("all", Value::Bool(true)));
                }
                table(t)
            }
            Self::Split(seps) => table(vec![(
                "split",
                if seps.len() == 1 {
                    s(&seps[0])
                } else {
                    Value::Array(seps.iter().map(|x| s(x)).collect())
                },
            )]),
            Self::Join(sep) => table(vec![("join", s(sep))]),
            Self::Number { decimal, decimals } => {
                if decimal.is_none() && decimals.is_none() {
                    return s("number");
                }
                let d = decimal
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "auto".into());
                let mut t = vec![("number", Value::String(d))];
                if let Some(n) = decimals {
                    t.push(("decimals", Value::from(*n)));
                }
                table(t)
            }
            Self::Date { formats, output } => {
                if formats.is_empty() && output.is_none() {
                    return s("date");
                }
                let f = match formats.as_slice() {
                    [] => s("auto"),
                    [one] => s(one),
                    many => Value::Array(many.iter().map(|x| s(x)).collect()),
                };
                let mut t = vec![("date", f)];
                if let Some(o) = output {
                    t.push(("output", s(o)));
                }
                table(t)
            }
            Self::Map {
                map,
                unmapped,
                ignore_case,
            } => {
                let m = match map {
                    MapSource::Named(n) => s(n),
                    MapSource::Inline(entries) => Value::Object(
                        entries
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                };
                let mut t = vec![("map", m)];
                if *unmapped != Unmapped::Keep {
                    t.push((
                        "unmapped",
                        serde_json::to_value(unmapped).unwrap_or(Value::Null),
                    ));
                }
                if *ignore_case {
                    t.push(("ignore_case", Value::Bool(true)));
                }
                table(t)
            }
            Self::Get(p) => table(vec![("get", s(p))]),
        }
    }

    /// The name used in messages (`split`, `map`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Trim => "trim",
            Self::Lower => "lower",
            Self::Upper => "upper",
            Self::SanitizeCode => "sanitize_code",
            Self::First => "first",
            Self::Last => "last",
            Self::Unique => "unique",
            Self::Replace { .. } => "replace",
            Self::RegexReplace { .. } => "regex_replace",
            Self::Prefix(_) => "prefix",
            Self::Suffix(_) => "suffix",
            Self::StripPrefix(_) => "strip_prefix",
            Self::StripSuffix(_) => "strip_suffix",
            Self::Truncate(_) => "truncate",
            Self::Regex { .. } => "regex",
            Self::Split(_) => "split",
            Self::Join(_) => "join",
            Self::Number { .. } => "number",
            Self::Date { .. } => "date",
            Self::Map { .. } => "map",
            Self::Get(_) => "get",
        }
    }
}

impl<'de> Deserialize<'de> for Transform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Transform {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// What a step needs to know about the rule's attribute (from the family structure).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepEnv<'a> {
    pub maps: Option<&'a ValueMaps>,
    pub max_characters: Option<u32>,
    pub decimals_allowed: Option<bool>,
}

/// A compiled value map.
#[derive(Debug)]
pub(crate) struct CompiledMap {
    pub name: String,
    pub table: HashMap<String, Value>,
    pub unmapped: Unmapped,
    pub ignore_case: bool,
}

/// A step ready to run: regexes compiled, maps indexed, structure defaults resolved.
#[derive(Debug)]
pub(crate) enum Step {
    Noop,
    Trim,
    Lower,
    Upper,
    SanitizeCode,
    First,
    Last,
    Unique,
    Replace {
        find: String,
        with: String,
    },
    RegexReplace {
        re: Regex,
        with: String,
    },
    Prefix(String),
    Suffix(String),
    StripPrefix(String),
    StripSuffix(String),
    Truncate(usize),
    Regex {
        re: Regex,
        group: usize,
        all: bool,
    },
    Split(Vec<String>),
    Join(String),
    Number {
        decimal: Option<char>,
        decimals: Option<u32>,
    },
    Date {
        formats: Vec<DateFormat>,
        output: DateOutput,
    },
    Map(CompiledMap),
    Get(JsonPointer),
}

fn compile_regex(p: &str) -> Result<Regex, String> {
    Regex::new(p).map_err(|e| format!("invalid regular expression: {e}"))
}

fn check_map_target(v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        Value::Array(items)
            if items
                .iter()
                .all(|i| !i.is_array() && !i.is_object() && !i.is_null()) =>
        {
            Ok(())
        }
        other => Err(format!(
            "a map entry's value is a string, number, boolean or a list of those, got {}",
            describe(other)
        )),
    }
}

impl Step {
    pub(crate) fn compile(t: &Transform, env: &StepEnv<'_>) -> Result<Self, String> {
        Ok(match t {
            Transform::Trim => Step::Trim,
            Transform::Lower => Step::Lower,
            Transform::Upper => Step::Upper,
            Transform::SanitizeCode => Step::SanitizeCode,
            Transform::First => Step::First,
            Transform::Last => Step::Last,
            Transform::Unique => Step::Unique,
            Transform::Replace { find, with } => {
                if find.is_empty() {
                    return Err("`replace` needs a non-empty text to find".into());
                }
                Step::Replace {
                    find: find.clone(),
                    with: with.clone(),
                }
            }
            Transform::RegexReplace { pattern, with } => Step::RegexReplace {
                re: compile_regex(pattern)?,
                with: with.clone(),
            },
            Transform::Prefix(s) => Step::Prefix(s.clone()),
            Transform::Suffix(s) => Step::Suffix(s.clone()),
            Transform::StripPrefix(s) => Step::StripPrefix(s.clone()),
            Transform::StripSuffix(s) => Step::StripSuffix(s.clone()),
            Transform::Truncate(Some(0)) => {
                return Err("`truncate` takes a positive number of characters".into())
            }
            Transform::Truncate(Some(n)) => Step::Truncate(*n),
            Transform::Truncate(None) => match env.max_characters {
                Some(n) if n > 0 => Step::Truncate(n as usize),
                _ => Step::Noop,
            },
            Transform::Regex {
                pattern,
                capture,
                all,
            } => {
                let re = compile_regex(pattern)?;
                let groups = re.captures_len();
                let group = match capture {
                    None => usize::from(groups > 1),
                    Some(Capture::Index(i)) => {
                        if *i >= groups {
                            return Err(format!(
                                "`capture = {i}`, but the regular expression has {} group(s)",
                                groups - 1
                            ));
                        }
                        *i
                    }
                    Some(Capture::Name(n)) => re
                        .capture_names()
                        .position(|c| c == Some(n.as_str()))
                        .ok_or_else(|| {
                            format!("the regular expression has no group named `{n}`")
                        })?,
                };
                Step::Regex {
                    re,
                    group,
                    all: *all,
                }
            }
            Transform::Split(seps) => {
                if seps.is_empty() || seps.iter().any(String::is_empty) {
                    return Err("`split` needs non-empty separators".into());
                }
                Step::Split(seps.clone())
            }
            Transform::Join(s) => Step::Join(s.clone()),
            Transform::Number { decimal, decimals } => Step::Number {
                decimal: *decimal,
                decimals: decimals.or(match env.decimals_allowed {
                    Some(false) => Some(0),
                    _ => None,
                }),
            },
            Transform::Date { formats, output } => Step::Date {
                formats: formats
                    .iter()
                    .map(|f| DateFormat::parse(f))
                    .collect::<Result<_, _>>()?,
                output: match output {
                    None => DateOutput::Akeneo,
                    Some(o) => DateOutput::parse(o)?,
                },
            },
            Transform::Map {
                map,
                unmapped,
                ignore_case,
            } => {
                let (name, entries) = match map {
                    MapSource::Named(n) => {
                        let entries = env.maps.and_then(|m| m.get(n)).ok_or_else(|| {
                            let known: Vec<&str> = env
                                .maps
                                .map(|m| m.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            if known.is_empty() {
                                format!("no value map named `{n}` (the family defines no maps)")
                            } else {
                                format!(
                                    "no value map named `{n}` (the family defines {})",
                                    known.join(", ")
                                )
                            }
                        })?;
                        (format!("`{n}`"), entries)
                    }
                    MapSource::Inline(entries) => ("(inline)".to_owned(), entries),
                };
                let mut table = HashMap::with_capacity(entries.len());
                for (k, v) in entries {
                    check_map_target(v).map_err(|e| format!("map {name}, entry `{k}`: {e}"))?;
                    let key = if *ignore_case {
                        k.to_lowercase()
                    } else {
                        k.clone()
                    };
                    if let Some(prev) = table.insert(key, v.clone()) {
                        if prev != *v {
                            return Err(format!(
                                "map {name}: with ignore_case, `{k}` collides with another entry that maps elsewhere"
                            ));
                        }
                    }
                }
                Step::Map(CompiledMap {
                    name,
                    table,
                    unmapped: *unmapped,
                    ignore_case: *ignore_case,
                })
            }
            Transform::Get(p) => Step::Get(JsonPointer::parse(p)?),
        })
    }

    /// Runs the step. Never panics; an input the step cannot handle is an `Err` naming it.
    pub(crate) fn apply(&self, v: Value) -> Result<Value, String> {
        match self {
            Step::Noop => Ok(v),
            Step::First => Ok(match v {
                Value::Array(items) => items
                    .into_iter()
                    .find(|i| !is_empty(i))
                    .unwrap_or(Value::Null),
                other => other,
            }),
            Step::Last => Ok(match v {
                Value::Array(items) => items
                    .into_iter()
                    .rev()
                    .find(|i| !is_empty(i))
                    .unwrap_or(Value::Null),
                other => other,
            }),
            Step::Unique => Ok(match v {
                Value::Array(items) => {
                    let mut seen = HashSet::with_capacity(items.len());
                    Value::Array(
                        items
                            .into_iter()
                            .filter(|i| seen.insert(i.to_string()))
                            .collect(),
                    )
                }
                other => other,
            }),
            Step::Join(sep) => match v {
                Value::Array(items) => {
                    let mut out = String::new();
                    let mut first = true;
                    for i in items {
                        if is_empty(&i) {
                            continue;
                        }
                        if !first {
                            out.push_str(sep);
                        }
                        first = false;
                        out.push_str(&text(i, "join")?);
                    }
                    Ok(Value::String(out))
                }
                Value::Null => Ok(Value::Null),
                other => Ok(Value::String(text(other, "join")?)),
            },
            Step::Split(seps) => each(v, |x| {
                let s = text(x, "split")?;
                let mut parts: Vec<&str> = vec![&s];
                for sep in seps {
                    parts = parts
                        .into_iter()
                        .flat_map(|p| p.split(sep.as_str()))
                        .collect();
                }
                Ok(Value::Array(
                    parts
                        .into_iter()
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                ))
            }),
            Step::Regex { re, group, all } => each(v, |x| {
                let s = text(x, "regex")?;
                if *all {
                    Ok(Value::Array(
                        re.captures_iter(&s)
                            .filter_map(|c| c.get(*group))
                            .map(|m| Value::String(m.as_str().to_owned()))
                            .collect(),
                    ))
                } else {
                    Ok(re
                        .captures(&s)
                        .and_then(|c| c.get(*group))
                        .map(|m| Value::String(m.as_str().to_owned()))
                        .unwrap_or(Value::Null))
                }
            }),
            Step::Number { decimal, decimals } => each(v, |x| {
                let s = text(x, "number")?;
                normalize_number(&s, *decimal, *decimals)
                    .map(Value::String)
                    .ok_or_else(|| format!("`{s}` is not a number"))
            }),
            Step::Date { formats, output } => each(v, |x| {
                normalize_date(&x, formats, output)
                    .map(Value::String)
                    .ok_or_else(|| match &x {
                        Value::String(s) => format!("`{s}` is not a date in the expected format"),
                        other => format!("{other} is not a date"),
                    })
            }),
            Step::Map(m) => each(v, |x| {
                let found = match &x {
                    Value::String(s) if !m.ignore_case => m.table.get(s.as_str()),
                    Value::Object(_) | Value::Array(_) => {
                        return Err(format!("`map` expects text, got {}", describe(&x)))
                    }
                    other => {
                        // Strings get here only with `ignore_case`; number and boolean
                        // texts have no upper case.
                        let t = match other {
                            Value::String(s) => s.to_lowercase(),
                            Value::Number(n) => number_text(n),
                            Value::Bool(b) => b.to_string(),
                            _ => String::new(),
                        };
                        m.table.get(&t)
                    }
                };
                match (found, m.unmapped) {
                    (Some(target), _) => Ok(target.clone()),
                    (None, Unmapped::Keep) => Ok(x),
                    (None, Unmapped::Drop) => Ok(Value::Null),
                    (None, Unmapped::Error) => Err(format!(
                        "{} has no entry in map {}",
                        match &x {
                            Value::String(s) => format!("`{s}`"),
                            other => other.to_string(),
                        },
                        m.name
                    )),
                }
            }),
            Step::Get(p) => each(v, |x| Ok(p.get(&x).cloned().unwrap_or(Value::Null))),
            _ => each(v, |x| {
                let s = text(x, self.name())?;
                Ok(Value::String(self.on_text(s)))
            }),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Step::Trim => "trim",
            Step::Lower => "lower",
            Step::Upper => "upper",
            Step::SanitizeCode => "sanitize_code",
            Step::Replace { .. } => "replace",
            Step::RegexReplace { .. } => "regex_replace",
            Step::Prefix(_) => "prefix",
            Step::Suffix(_) => "suffix",
            Step::StripPrefix(_) => "strip_prefix",
            Step::StripSuffix(_) => "strip_suffix",
            Step::Truncate(_) => "truncate",
            _ => "transform",
        }
    }

    /// The text steps.
    fn on_text(&self, s: String) -> String {
        match self {
            Step::Trim => {
                let t = s.trim();
                if t.len() == s.len() {
                    s
                } else {
                    t.to_owned()
                }
            }
            Step::Lower => s.to_lowercase(),
            Step::Upper => s.to_uppercase(),
            Step::SanitizeCode => sanitize_code(&s),
            Step::Replace { find, with } => s.replace(find.as_str(), with),
            Step::RegexReplace { re, with } => re.replace_all(&s, with.as_str()).into_owned(),
            Step::Prefix(p) => {
                let mut out = String::with_capacity(p.len() + s.len());
                out.push_str(p);
                out.push_str(&s);
                out
            }
            Step::Suffix(x) => s + x,
            Step::StripPrefix(p) => match s.strip_prefix(p.as_str()) {
                Some(rest) => rest.to_owned(),
                None => s,
            },
            Step::StripSuffix(x) => match s.strip_suffix(x.as_str()) {
                Some(rest) => rest.to_owned(),
                None => s,
            },
            Step::Truncate(n) => match s.char_indices().nth(*n) {
                Some((cut, _)) => s[..cut].to_owned(),
                None => s,
            },
            _ => s,
        }
    }
}

/// A scalar as text; lists and tables are refused with the step's name.
fn text(v: Value, step: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(number_text(&n)),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("`{step}` expects text, got {}", describe(&other))),
    }
}

/// Applies `f` to a single value, or to each element of a list. In a list, results that are
/// empty are dropped and results that are lists are spliced in. `null` stays `null`.
fn each(v: Value, mut f: impl FnMut(Value) -> Result<Value, String>) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                if is_empty(&i) {
                    continue;
                }
                match f(i)? {
                    Value::Array(inner) => out.extend(inner.into_iter().filter(|x| !is_empty(x))),
                    r if is_empty(&r) => {}
                    r => out.push(r),
                }
            }
            Ok(Value::Array(out))
        }
        other => f(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(t: Value) -> Step {
        let t = Transform::from_json(&t).unwrap();
        assert_eq!(Transform::from_json(&t.to_json()).unwrap(), t, "round trip");
        Step::compile(&t, &StepEnv::default()).unwrap()
    }

    fn run(t: Value, v: Value) -> Result<Value, String> {
        step(t).apply(v)
    }

    #[test]
    fn text_steps() {
        assert_eq!(run(json!("trim"), json!("  a b ")).unwrap(), json!("a b"));
        assert_eq!(run(json!("lower"), json!("ÉTÉ")).unwrap(), json!("été"));
        assert_eq!(
            run(json!("upper"), json!(["a", "b"])).unwrap(),
            json!(["A", "B"])
        );
        assert_eq!(run(json!("upper"), json!(12)).unwrap(), json!("12"));
        assert_eq!(
            run(json!("sanitize_code"), json!("ok_1")).unwrap(),
            json!("ok_1")
        );
        assert_eq!(
            run(json!({"replace": "-", "with": "_"}), json!("a-b-c")).unwrap(),
            json!("a_b_c")
        );
        assert_eq!(
            run(
                json!({"regex_replace": "\\s+", "with": " "}),
                json!("a \t b")
            )
            .unwrap(),
            json!("a b")
        );
        assert_eq!(
            run(
                json!({"regex_replace": "(\\w+)@(\\w+)", "with": "$2/${1}"}),
                json!("me@host")
            )
            .unwrap(),
            json!("host/me")
        );
        assert_eq!(
            run(json!({"prefix": "SKU_"}), json!("1")).unwrap(),
            json!("SKU_1")
        );
        assert_eq!(
            run(json!({"suffix": "_v"}), json!("1")).unwrap(),
            json!("1_v")
        );
        assert_eq!(
            run(json!({"strip_prefix": "a/"}), json!("a/b")).unwrap(),
            json!("b")
        );
        assert_eq!(
            run(json!({"strip_prefix": "x/"}), json!("a/b")).unwrap(),
            json!("a/b")
        );
        assert_eq!(
            run(json!({"strip_suffix": ".jpg"}), json!("a.jpg")).unwrap(),
            json!("a")
        );
        assert_eq!(
            run(json!({"truncate": 3}), json!("héllo")).unwrap(),
            json!("hél")
        );
        assert_eq!(
            run(json!({"truncate": 9}), json!("héllo")).unwrap(),
            json!("héllo")
        );
        assert_eq!(
            run(json!("trim"), json!({"a": 1})).unwrap_err(),
            "`trim` expects text, got a table"
        );
    }

    #[test]
    fn truncate_uses_max_characters() {
        let t = Transform::Truncate(None);
        let env = StepEnv {
            max_characters: Some(2),
            ..StepEnv::default()
        };
        assert_eq!(
            Step::compile(&t, &env)
                .unwrap()
                .apply(json!("abc"))
                .unwrap(),
            json!("ab")
        );
        let s = Step::compile(&t, &StepEnv::default()).unwrap();
        assert_eq!(s.apply(json!("abc")).unwrap(), json!("abc"));
    }

    #[test]
    fn list_steps() {
        assert_eq!(
            run(json!({"split": ","}), json!("a, b,,c ,")).unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(
            run(json!({"split": [",", ";"]}), json!(["a;b", "c,d"])).unwrap(),
            json!(["a", "b", "c", "d"])
        );
        assert_eq!(
            run(json!({"join": "|"}), json!(["a", null, "", 2])).unwrap(),
            json!("a|2")
        );
        assert_eq!(run(json!({"join": "|"}), json!("a")).unwrap(), json!("a"));
        assert_eq!(
            run(json!("first"), json!(["", "b", "c"])).unwrap(),
            json!("b")
        );
        assert_eq!(run(json!("first"), json!([])).unwrap(), Value::Null);
        assert_eq!(run(json!("last"), json!(["a", "b"])).unwrap(), json!("b"));
        assert_eq!(run(json!("first"), json!("x")).unwrap(), json!("x"));
        assert_eq!(
            run(json!("unique"), json!(["a", "b", "a"])).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            run(
                json!({"get": "/value"}),
                json!([{"value": "a"}, {"x": 1}, {"value": "b"}])
            )
            .unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            run(json!({"get": "/a/0"}), json!({"a": [5]})).unwrap(),
            json!(5)
        );
        assert_eq!(
            run(json!({"get": "/a"}), json!("text")).unwrap(),
            Value::Null
        );
        assert_eq!(
            run(json!({"join": ","}), json!([[1]])).unwrap_err(),
            "`join` expects text, got an array"
        );
    }

    #[test]
    fn regex_step() {
        assert_eq!(
            run(json!({"regex": "^SKU-(\\d+)"}), json!("SKU-0042_front.jpg")).unwrap(),
            json!("0042")
        );
        assert_eq!(
            run(json!({"regex": "^SKU-(\\d+)"}), json!("other")).unwrap(),
            Value::Null
        );
        assert_eq!(
            run(json!({"regex": "\\d+"}), json!("ab12cd")).unwrap(),
            json!("12")
        );
        assert_eq!(
            run(
                json!({"regex": "(?P<v>[a-z]+)_(\\d)", "capture": "v"}),
                json!("x_1")
            )
            .unwrap(),
            json!("x")
        );
        assert_eq!(
            run(json!({"regex": "(a)(b)", "capture": 2}), json!("ab")).unwrap(),
            json!("b")
        );
        assert_eq!(
            run(
                json!({"regex": "#(\\w+)", "all": true}),
                json!("#red and #blue")
            )
            .unwrap(),
            json!(["red", "blue"])
        );
        assert_eq!(
            run(json!({"regex": "^(\\d+)"}), json!(["1a", "b", "22"])).unwrap(),
            json!(["1", "22"])
        );
        let bad = |t: Value| {
            Step::compile(&Transform::from_json(&t).unwrap(), &StepEnv::default()).unwrap_err()
        };
        assert!(bad(json!({"regex": "("})).contains("invalid regular expression"));
        assert!(bad(json!({"regex": "(a)", "capture": 2})).contains("has 1 group"));
        assert!(bad(json!({"regex": "(a)", "capture": "x"})).contains("no group named `x`"));
    }

    #[test]
    fn number_and_date_steps() {
        assert_eq!(
            run(json!("number"), json!("1 200,5 mm")).unwrap(),
            json!("1200.5")
        );
        assert_eq!(run(json!("number"), json!(12.0)).unwrap(), json!("12"));
        assert_eq!(
            run(json!({"number": ",", "decimals": 1}), json!("1.234,56")).unwrap(),
            json!("1234.6")
        );
        assert_eq!(
            run(json!("number"), json!("n/a")).unwrap_err(),
            "`n/a` is not a number"
        );
        let int = Step::compile(
            &Transform::Number {
                decimal: None,
                decimals: None,
            },
            &StepEnv {
                decimals_allowed: Some(false),
                ..StepEnv::default()
            },
        )
        .unwrap();
        assert_eq!(int.apply(json!("12,7 cm")).unwrap(), json!("13"));
        assert_eq!(
            run(json!("date"), json!("2023-03-01T10:00:00Z")).unwrap(),
            json!("2023-03-01T00:00:00+00:00")
        );
        assert_eq!(
            run(json!({"date": "%d/%m/%Y"}), json!("01/03/2023")).unwrap(),
            json!("2023-03-01T00:00:00+00:00")
        );
        assert_eq!(
            run(
                json!({"date": ["%d/%m/%Y", "auto"], "output": "date"}),
                json!(["01/03/2023", "2024-05-06"])
            )
            .unwrap(),
            json!(["2023-03-01", "2024-05-06"])
        );
        assert!(run(json!({"date": "%d/%m/%Y"}), json!("2023-03-01"))
            .unwrap_err()
            .contains("not a date"));
        assert!(Step::compile(
            &Transform::from_json(&json!({"date": "%Q"})).unwrap(),
            &StepEnv::default()
        )
        .is_err());
    }

    #[test]
    fn map_step() {
        let mut maps = ValueMaps::new();
        maps.insert(
            "tags".into(),
            [
                ("Summer 2024".to_string(), json!("summer")),
                ("Red".to_string(), json!("red")),
            ]
            .into(),
        );
        let env = StepEnv {
            maps: Some(&maps),
            ..StepEnv::default()
        };
        let c = |t: Value| Step::compile(&Transform::from_json(&t).unwrap(), &env);
        let keep = c(json!({"map": "tags"})).unwrap();
        assert_eq!(
            keep.apply(json!(["Summer 2024", "Blue"])).unwrap(),
            json!(["summer", "Blue"])
        );
        let drop = c(json!({"map": "tags", "unmapped": "drop"})).unwrap();
        assert_eq!(
            drop.apply(json!(["Summer 2024", "Blue"])).unwrap(),
            json!(["summer"])
        );
        assert_eq!(drop.apply(json!("Blue")).unwrap(), Value::Null);
        let err = c(json!({"map": "tags", "unmapped": "error"})).unwrap();
        assert_eq!(
            err.apply(json!("Blue")).unwrap_err(),
            "`Blue` has no entry in map `tags`"
        );
        let ic = c(json!({"map": "tags", "ignore_case": true, "unmapped": "drop"})).unwrap();
        assert_eq!(
            ic.apply(json!(["RED", "summer 2024"])).unwrap(),
            json!(["red", "summer"])
        );
        let inline = c(json!({"map": {"1": true, "0": false}})).unwrap();
        assert_eq!(inline.apply(json!(1)).unwrap(), json!(true));
        let multi = c(json!({"map": {"a": ["x", "y"]}})).unwrap();
        assert_eq!(
            multi.apply(json!(["a", "b"])).unwrap(),
            json!(["x", "y", "b"])
        );
        assert!(c(json!({"map": "nope"}))
            .unwrap_err()
            .contains("no value map named `nope` (the family defines tags)"));
        assert!(c(json!({"map": {"a": {"b": 1}}}))
            .unwrap_err()
            .contains("entry `a`"));
        assert!(c(json!({"map": {"A": "x", "a": "y"}, "ignore_case": true}))
            .unwrap_err()
            .contains("collides"));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        for (t, want) in [
            (json!("trimm"), "unknown transform `trimm`"),
            (json!("split"), "`split` takes an argument"),
            (json!(3), "a transform is a name"),
            (json!({"splitt": ","}), "unknown transform table"),
            (
                json!({"split": ",", "join": "|"}),
                "one transform per table",
            ),
            (
                json!({"split": ",", "with": "x"}),
                "`split` takes no other key, got `with`",
            ),
            (
                json!({"regex": "x", "with": "y"}),
                "`regex` allows only `capture`, `all`",
            ),
            (json!({"replace": "x"}), "needs `with`"),
            (json!({"replace": "", "with": "x"}), "non-empty"),
            (json!({"split": []}), "separator"),
            (json!({"split": ""}), "non-empty"),
            (json!({"truncate": 0}), "positive"),
            (json!({"number": ";"}), "decimal separator"),
            (json!({"number": "auto", "decimals": 99}), "0 to 30"),
            (json!({"map": 1}), "name of a map"),
            (
                json!({"map": "m", "unmapped": "ignore"}),
                "\"keep\", \"drop\" or \"error\"",
            ),
            (json!({"regex": "x", "capture": -1}), "group number"),
            (json!({"date": []}), "format"),
        ] {
            let e = Transform::from_json(&t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn every_transform_round_trips() {
        for t in [
            json!("trim"),
            json!("lower"),
            json!("upper"),
            json!("sanitize_code"),
            json!("first"),
            json!("last"),
            json!("unique"),
            json!("truncate"),
            json!("number"),
            json!("date"),
            json!({"truncate": 5}),
            json!({"replace": "a", "with": "b"}),
            json!({"regex_replace": "a", "with": "b"}),
            json!({"prefix": "p"}),
            json!({"suffix": "s"}),
            json!({"strip_prefix": "p"}),
            json!({"strip_suffix": "s"}),
            json!({"regex": "(a)", "capture": 1, "all": true}),
            json!({"regex": "(?P<n>a)", "capture": "n"}),
            json!({"split": ","}),
            json!({"split": [",", ";"]}),
            json!({"join": ","}),
            json!({"number": ","}),
            json!({"number": "auto", "decimals": 2}),
            json!({"date": "%Y"}),
            json!({"date": ["%Y", "auto"], "output": "date"}),
            json!({"map": "m", "unmapped": "drop", "ignore_case": true}),
            json!({"map": {"a": "b"}}),
            json!({"get": "/a"}),
        ] {
            let parsed = Transform::from_json(&t).unwrap();
            assert_eq!(parsed.to_json(), t);
        }
    }
}
