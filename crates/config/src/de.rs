//! A serde `Deserializer` over the loader's tree. It knows where every value was written and
//! which values are secret, so every error gets a key path, a line, and no secret in its text.

use std::fmt;
use std::ops::Range;

use serde::de::value::{BorrowedStrDeserializer, MapDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Expected, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};

use crate::error::ConfigError;
use crate::source::{render_path, Segment, SourceText};
use crate::tree::{Entry, Kind, Node};

/// The private struct through which `toml_datetime::Datetime` (`toml::value::Datetime`)
/// deserializes itself (`toml_datetime::__unstable::{NAME, FIELD}`).
const DATETIME_STRUCT: &str = "$__toml_private_Datetime";
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// How strictly the tree is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strictness {
    /// A key the target type ignores (no `deny_unknown_fields`) is refused all the same.
    pub(crate) reject_ignored_keys: bool,
}

/// Deserializes `T` from the root table.
pub(crate) fn deserialize<T: DeserializeOwned>(
    root: &Node,
    strictness: Strictness,
    source: &SourceText,
) -> Result<T, ConfigError> {
    let de = NodeDe {
        node: root,
        path: Vec::new(),
        entry: None,
        strictness,
    };
    T::deserialize(de)
        .map_err(|e| e.place_if_unplaced(|| Place::at_node(Vec::new(), root)))
        .map_err(|e| e.into_config_error(source))
}

// ---------------------------------------------------------------------------------------------
// The error type

/// The error raised while deserializing; placed (path, span) by the innermost access that sees
/// it, turned into a [`ConfigError`] at the end.
#[derive(Debug)]
pub(crate) struct DeError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    place: Option<Place>,
}

#[derive(Debug)]
enum ErrorKind {
    /// A message from the target type.
    Custom(String),
    /// A value the target type refuses: the message with the value, and without it.
    Value { shown: String, hidden: String },
    /// A required field is absent from the table the error is placed at.
    MissingField(&'static str),
    /// `deny_unknown_fields` refused a key.
    UnknownField(String),
    /// The target type ignored a key ([`Strictness::reject_ignored_keys`]).
    IgnoredKey(String),
}

/// Where an error happened.
#[derive(Debug)]
struct Place {
    path: Vec<Segment>,
    span: Option<Range<usize>>,
    /// The value itself is secret (interpolated or read from a `*_file`).
    hidden: bool,
    /// The texts under the place that must not be shown.
    fragments: Vec<String>,
    /// The key was produced from this `*_file` key.
    from_file_key: Option<String>,
}

impl Place {
    fn at_node(path: Vec<Segment>, node: &Node) -> Self {
        Self {
            path,
            span: node.span.clone(),
            hidden: node.origin.is_hidden(),
            fragments: node
                .hidden_fragments()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            from_file_key: None,
        }
    }

    fn at_key(path: Vec<Segment>, entry: &Entry) -> Self {
        Self {
            path,
            span: entry.key_span.clone().or_else(|| entry.value.span.clone()),
            hidden: false,
            fragments: Vec::new(),
            from_file_key: entry.from_file_key.clone(),
        }
    }
}

impl DeError {
    fn new(kind: ErrorKind) -> Self {
        Self(Box::new(Inner { kind, place: None }))
    }

    fn place_if_unplaced(mut self, place: impl FnOnce() -> Place) -> Self {
        if self.0.place.is_none() {
            self.0.place = Some(place());
        }
        self
    }

    fn into_config_error(self, source: &SourceText) -> ConfigError {
        let Inner { kind, place } = *self.0;
        let place = place.unwrap_or(Place {
            path: Vec::new(),
            span: None,
            hidden: false,
            fragments: Vec::new(),
            from_file_key: None,
        });
        let mut path = place.path;
        let message = match kind {
            ErrorKind::Value { shown, hidden } => {
                if place.hidden {
                    scrub(&hidden, &place.fragments, true)
                } else {
                    scrub(&shown, &place.fragments, false)
                }
            }
            ErrorKind::Custom(message) => scrub(&message, &place.fragments, place.hidden),
            ErrorKind::MissingField(field) => {
                path.push(Segment::Key(field.to_owned()));
                if place.span.is_some() {
                    format!("missing required key `{field}` in this table")
                } else {
                    format!("missing required key `{field}`")
                }
            }
            ErrorKind::UnknownField(message) => match place.from_file_key {
                Some(file_key) => format!(
                    "{message} (this key was made from `{file_key}`, read as a secret file; if \
                     `{file_key}` is a plain setting, the program must list it in \
                     `LoadOptions::literal_file_keys`)"
                ),
                None => message,
            },
            ErrorKind::IgnoredKey(key) => {
                format!("unknown key `{key}`: the configuration has no such setting here")
            }
        };
        let key = if path.is_empty() {
            None
        } else {
            Some(render_path(&path))
        };
        ConfigError::build(source, place.span, key, message)
    }
}

/// Replaces every secret text in `message` with `(value hidden)`. Texts shorter than four
/// characters cannot be replaced safely (they occur in ordinary words): when `strict` and one of
/// them occurs, the whole message is replaced; otherwise they are left (a 1–3 character text is
/// no secret worth the name, and the value the error is about is hidden by other means).
fn scrub(message: &str, fragments: &[String], strict: bool) -> String {
    let mut fragments: Vec<&String> = fragments.iter().filter(|f| !f.is_empty()).collect();
    fragments.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = message.to_owned();
    for fragment in fragments {
        if fragment.chars().count() >= 4 {
            out = out.replace(fragment.as_str(), "(value hidden)");
            // A debug-escaped copy (`string "a\"b"`).
            let escaped = format!("{fragment:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != fragment.as_str() {
                out = out.replace(escaped, "(value hidden)");
            }
        } else if strict && out.contains(fragment.as_str()) {
            return "invalid value (value hidden)".to_owned();
        }
    }
    out
}

impl fmt::Display for DeError {
    // Only the hidden forms: this is never what the user sees (see `into_config_error`), but it
    // must not leak either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.kind {
            ErrorKind::Value { hidden, .. } => f.write_str(hidden),
            ErrorKind::Custom(m) | ErrorKind::UnknownField(m) => f.write_str(m),
            ErrorKind::MissingField(field) => write!(f, "missing required key `{field}`"),
            ErrorKind::IgnoredKey(key) => write!(f, "unknown key `{key}`"),
        }
    }
}

impl std::error::Error for DeError {}

fn unexpected(u: &Unexpected<'_>, hidden: bool) -> String {
    let hide = |word: &str, value: String| {
        if hidden {
            format!("{word} (value hidden)")
        } else {
            format!("{word} {value}")
        }
    };
    match *u {
        Unexpected::Bool(b) => hide("boolean", format!("`{b}`")),
        Unexpected::Unsigned(n) => hide("integer", format!("`{n}`")),
        Unexpected::Signed(n) => hide("integer", format!("`{n}`")),
        Unexpected::Float(n) => hide("float", format!("`{n}`")),
        Unexpected::Char(c) => hide("character", format!("`{c}`")),
        Unexpected::Str(s) => hide("string", format!("{s:?}")),
        Unexpected::Bytes(_) => "bytes".to_owned(),
        Unexpected::Unit => "an empty value".to_owned(),
        Unexpected::Seq => "an array".to_owned(),
        Unexpected::Map => "a table".to_owned(),
        ref other => other.to_string(),
    }
}

fn expected(exp: &dyn Expected) -> String {
    let text = exp.to_string();
    match text.as_str() {
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        _ => text,
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "none is allowed here".to_owned(),
        [one] => format!("expected `{one}`"),
        many => {
            let list: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("expected one of {}", list.join(", "))
        }
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(ErrorKind::Custom(msg.to_string()))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let exp = expected(exp);
        Self::new(ErrorKind::Value {
            shown: format!(
                "invalid type: {}, expected {exp}",
                unexpected(&unexp, false)
            ),
            hidden: format!("invalid type: {}, expected {exp}", unexpected(&unexp, true)),
        })
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let exp = expected(exp);
        Self::new(ErrorKind::Value {
            shown: format!(
                "invalid value: {}, expected {exp}",
                unexpected(&unexp, false)
            ),
            hidden: format!(
                "invalid value: {}, expected {exp}",
                unexpected(&unexp, true)
            ),
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let expected = one_of(expected);
        Self::new(ErrorKind::Value {
            shown: format!("unknown variant `{variant}`, {expected}"),
            hidden: format!("unknown variant (value hidden), {expected}"),
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let expected = if expected.is_empty() {
            "there are no keys here".to_owned()
        } else {
            one_of(expected)
        };
        Self::new(ErrorKind::UnknownField(format!(
            "unknown field `{field}`, {expected}"
        )))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(ErrorKind::MissingField(field))
    }
}

// ---------------------------------------------------------------------------------------------
// The deserializer

fn child(path: &[Segment], segment: Segment) -> Vec<Segment> {
    let mut out = Vec::with_capacity(path.len() + 1);
    out.extend_from_slice(path);
    out.push(segment);
    out
}

fn unexpected_of(node: &Node) -> Unexpected<'_> {
    match &node.kind {
        Kind::String(s) => Unexpected::Str(s),
        Kind::Integer(i) => Unexpected::Signed(*i),
        Kind::Float(f) => Unexpected::Float(*f),
        Kind::Boolean(b) => Unexpected::Bool(*b),
        Kind::Datetime(_) => Unexpected::Other("a datetime"),
        Kind::Array(_) => Unexpected::Seq,
        Kind::Table(_) => Unexpected::Map,
    }
}

/// Deserializes one node.
struct NodeDe<'a> {
    node: &'a Node,
    path: Vec<Segment>,
    /// The table entry this node is the value of.
    entry: Option<&'a Entry>,
    strictness: Strictness,
}

impl<'a> NodeDe<'a> {
    /// The text of a string that came from the environment or a secret file: such strings are
    /// also read as numbers and booleans when the target asks for one (TOML cannot interpolate
    /// into a non-string).
    fn derived_text(&self) -> Option<&'a str> {
        match &self.node.kind {
            Kind::String(s) if self.node.origin.is_hidden() => Some(s.trim()),
            _ => None,
        }
    }

    fn integer<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.derived_text() {
            Some(text) => {
                if let Ok(i) = text.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(u) = text.parse::<u64>() {
                    visitor.visit_u64(u)
                } else {
                    Err(de::Error::invalid_type(Unexpected::Str(text), &visitor))
                }
            }
            None => self.deserialize_any(visitor),
        }
    }

    fn float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.derived_text() {
            Some(text) => match text.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
            },
            None => self.deserialize_any(visitor),
        }
    }
}

macro_rules! integer_hints {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.integer(visitor)
        }
    )*};
}

macro_rules! float_hints {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.float(visitor)
        }
    )*};
}

impl<'a> Deserializer<'a> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::String(s) => visitor.visit_borrowed_str(s),
            Kind::Integer(i) => visitor.visit_i64(*i),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Boolean(b) => visitor.visit_bool(*b),
            Kind::Datetime(d) => visitor.visit_string(d.to_string()),
            Kind::Array(items) => {
                let mut seq = SeqDe {
                    items: items.iter().enumerate(),
                    path: &self.path,
                    strictness: self.strictness,
                };
                let value = visitor.visit_seq(&mut seq)?;
                let left = seq.items.len();
                if left > 0 {
                    return Err(de::Error::invalid_length(
                        items.len(),
                        &format!("{} elements (found {left} more)", items.len() - left).as_str(),
                    ));
                }
                Ok(value)
            }
            Kind::Table(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                current: None,
                path: &self.path,
                strictness: self.strictness,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.derived_text() {
            Some("true") => visitor.visit_bool(true),
            Some("false") => visitor.visit_bool(false),
            Some(text) => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
            None => self.deserialize_any(visitor),
        }
    }

    integer_hints!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);
    float_hints!(deserialize_f32 deserialize_f64);

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        // TOML has no null: a present key is always `Some`.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            // `toml::value::Datetime` (toml_datetime) asks for its private one-field struct.
            Kind::Datetime(d) if name == DATETIME_STRUCT && fields == [DATETIME_FIELD] => visitor
                .visit_map(MapDeserializer::new(std::iter::once((
                    DATETIME_FIELD,
                    d.to_string(),
                )))),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::String(s) => visitor.visit_enum(BorrowedStrDeserializer::<DeError>::new(s)),
            Kind::Table(entries) if entries.len() == 1 => visitor.visit_enum(TableEnum {
                entry: &entries[0],
                path: &self.path,
                strictness: self.strictness,
            }),
            _ => {
                let expected = match variants {
                    [] => "an enum".to_owned(),
                    _ => format!(
                        "a string ({}) or a table with one key",
                        one_of(variants).trim_start_matches("expected ")
                    ),
                };
                Err(de::Error::invalid_type(
                    unexpected_of(self.node),
                    &expected.as_str(),
                ))
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.entry {
            Some(entry) if self.strictness.reject_ignored_keys => {
                Err(DeError::new(ErrorKind::IgnoredKey(entry.key.clone()))
                    .place_if_unplaced(|| Place::at_key(self.path, entry)))
            }
            _ => visitor.visit_unit(),
        }
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'a>>
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        identifier
    }
}

/// The elements of an array.
struct SeqDe<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p [Segment],
    strictness: Strictness,
}

impl<'a> SeqAccess<'a> for SeqDe<'a, '_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'a>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = child(self.path, Segment::Index(i));
        let de = NodeDe {
            node,
            path: path.clone(),
            entry: None,
            strictness: self.strictness,
        };
        seed.deserialize(de)
            .map(Some)
            .map_err(|e| e.place_if_unplaced(|| Place::at_node(path, node)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a table.
struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, Entry>,
    current: Option<&'a Entry>,
    path: &'p [Segment],
    strictness: Strictness,
}

impl<'a> MapAccess<'a> for MapDe<'a, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        seed.deserialize(BorrowedStrDeserializer::<DeError>::new(&entry.key))
            .map(Some)
            .map_err(|e| {
                e.place_if_unplaced(|| {
                    Place::at_key(child(self.path, Segment::Key(entry.key.clone())), entry)
                })
            })
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value was read before its key"))?;
        let path = child(self.path, Segment::Key(entry.key.clone()));
        let de = NodeDe {
            node: &entry.value,
            path: path.clone(),
            entry: Some(entry),
            strictness: self.strictness,
        };
        seed.deserialize(de)
            .map_err(|e| e.place_if_unplaced(|| Place::at_node(path, &entry.value)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as a table with one key: `{ variant = <content> }`.
struct TableEnum<'a, 'p> {
    entry: &'a Entry,
    path: &'p [Segment],
    strictness: Strictness,
}

impl<'a> EnumAccess<'a> for TableEnum<'a, '_> {
    type Error = DeError;
    type Variant = VariantDe<'a>;

    fn variant_seed<S: DeserializeSeed<'a>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDe<'a>), DeError> {
        let path = child(self.path, Segment::Key(self.entry.key.clone()));
        let variant = seed
            .deserialize(BorrowedStrDeserializer::<DeError>::new(&self.entry.key))
            .map_err(|e| e.place_if_unplaced(|| Place::at_key(path.clone(), self.entry)))?;
        Ok((
            variant,
            VariantDe {
                node: &self.entry.value,
                path,
                strictness: self.strictness,
            },
        ))
    }
}

/// The content of a variant written as `{ variant = <content> }`.
struct VariantDe<'a> {
    node: &'a Node,
    path: Vec<Segment>,
    strictness: Strictness,
}

impl<'a> VariantDe<'a> {
    fn de(&self) -> NodeDe<'a> {
        NodeDe {
            node: self.node,
            path: self.path.clone(),
            entry: None,
            strictness: self.strictness,
        }
    }

    fn placed<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| e.place_if_unplaced(|| Place::at_node(self.path.clone(), self.node)))
    }
}

impl<'a> VariantAccess<'a> for VariantDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match &self.node.kind {
            Kind::Table(entries) if entries.is_empty() => Ok(()),
            _ => self.placed(Err(de::Error::invalid_type(
                unexpected_of(self.node),
                &"an empty table (this variant takes no settings)",
            ))),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'a>>(self, seed: S) -> Result<S::Value, DeError> {
        let result = seed.deserialize(self.de());
        self.placed(result)
    }

    fn tuple_variant<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        let result = self.de().deserialize_seq(visitor);
        self.placed(result)
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = self.de().deserialize_map(visitor);
        self.placed(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_long_fragments_and_refuses_short_ones_when_strict() {
        let fragments = vec!["hunter2".to_owned(), "ab".to_owned()];
        assert_eq!(
            scrub("bad secret hunter2 here", &fragments, false),
            "bad secret (value hidden) here"
        );
        assert_eq!(
            scrub("about hunter2", &fragments, true),
            "invalid value (value hidden)"
        );
        assert_eq!(scrub("about", &fragments, false), "about");
        let quoted = vec!["a\"quote\"".to_owned()];
        assert_eq!(
            scrub(r#"string "a\"quote\"""#, &quoted, false),
            r#"string "(value hidden)""#
        );
    }
}
