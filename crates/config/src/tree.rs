//! The parsed file as a tree of values that remember where they were written and whether they
//! hold a secret; the loader rewrites it (interpolation, `*_file` keys) before deserializing it.

use std::ops::Range;

use toml_edit::{Item, Value};

use crate::source::{Segment, SourceMap};

/// One value of the file.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Where the value was written (for a table: its header, or its first key).
    pub(crate) span: Option<Range<usize>>,
    /// Where the text came from; anything but `Literal` is never shown in messages.
    pub(crate) origin: Origin,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(toml_edit::Datetime),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// Where a string value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Written in the file as it is.
    Literal,
    /// The string held at least one `${VAR}`; `fragments` are the texts that must not be shown:
    /// the whole resulting string and each variable's value.
    Interpolated { fragments: Vec<String> },
    /// Read from the file named by a `*_file` key.
    File { fragments: Vec<String> },
}

impl Origin {
    pub(crate) fn is_hidden(&self) -> bool {
        !matches!(self, Origin::Literal)
    }

    pub(crate) fn fragments(&self) -> &[String] {
        match self {
            Origin::Literal => &[],
            Origin::Interpolated { fragments } | Origin::File { fragments } => fragments,
        }
    }
}

/// One `key = value` of a table.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) key_span: Option<Range<usize>>,
    pub(crate) value: Node,
    /// For `password` made from `password_file`: `password_file`.
    pub(crate) from_file_key: Option<String>,
}

impl Node {
    /// Every text under this node that must not be shown.
    pub(crate) fn hidden_fragments(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fragments(&mut out);
        out
    }

    fn collect_fragments<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.extend(
            self.origin
                .fragments()
                .iter()
                .filter(|f| !f.is_empty())
                .map(String::as_str),
        );
        match &self.kind {
            Kind::Array(items) => items.iter().for_each(|n| n.collect_fragments(out)),
            Kind::Table(entries) => entries.iter().for_each(|e| e.value.collect_fragments(out)),
            _ => {}
        }
    }
}

/// Converts the parsed document's root table, recording every key path's place in `map`.
pub(crate) fn from_document(root: &toml_edit::Table, map: &mut SourceMap) -> Node {
    let mut path = Vec::new();
    let entries = table_entries(root, &mut path, map);
    Node {
        kind: Kind::Table(entries),
        span: None,
        origin: Origin::Literal,
    }
}

fn table_entries(
    table: &toml_edit::Table,
    path: &mut Vec<Segment>,
    map: &mut SourceMap,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (name, item) in table.iter() {
        let key_span = table.key(name).and_then(|k| k.span());
        path.push(Segment::Key(name.to_owned()));
        let value = from_item(item, path, map, key_span.clone());
        // A `[table]` or `[[array]]` is placed at its header, a `key = value` at its key.
        let headed = match item {
            Item::Table(t) => !t.is_implicit() && !t.is_dotted(),
            Item::ArrayOfTables(_) => true,
            _ => false,
        };
        let place = if headed {
            value.span.clone().or_else(|| key_span.clone())
        } else {
            key_span.clone().or_else(|| value.span.clone())
        };
        if let Some(place) = place {
            map.insert(path, place);
        }
        path.pop();
        entries.push(Entry {
            key: name.to_owned(),
            key_span,
            value,
            from_file_key: None,
        });
    }
    entries
}

fn from_item(
    item: &Item,
    path: &mut Vec<Segment>,
    map: &mut SourceMap,
    key_span: Option<Range<usize>>,
) -> Node {
    match item {
        Item::Value(value) => from_value(value, path, map),
        Item::Table(table) => from_table(table, path, map, key_span),
        Item::ArrayOfTables(array) => {
            let mut items = Vec::new();
            for (i, table) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                let node = from_table(table, path, map, None);
                if let Some(span) = &node.span {
                    map.insert(path, span.clone());
                }
                path.pop();
                items.push(node);
            }
            let span = items.first().and_then(|n| n.span.clone());
            Node {
                kind: Kind::Array(items),
                span,
                origin: Origin::Literal,
            }
        }
        // Not produced by the parser for present keys (`Table::iter` skips them).
        Item::None => Node {
            kind: Kind::Table(Vec::new()),
            span: key_span,
            origin: Origin::Literal,
        },
    }
}

fn from_table(
    table: &toml_edit::Table,
    path: &mut Vec<Segment>,
    map: &mut SourceMap,
    key_span: Option<Range<usize>>,
) -> Node {
    let entries = table_entries(table, path, map);
    // A `[header]` table has a span starting at its header; implicit (`[a.b]` makes `a`) and
    // dotted (`a.b = 1` makes `a`) tables have none: use the key, else the first entry.
    let span = if table.is_implicit() || table.is_dotted() {
        None
    } else {
        table.span()
    }
    .or(key_span)
    .or_else(|| first_place(&entries));
    Node {
        kind: Kind::Table(entries),
        span,
        origin: Origin::Literal,
    }
}

fn first_place(entries: &[Entry]) -> Option<Range<usize>> {
    entries
        .iter()
        .find_map(|e| e.key_span.clone().or_else(|| e.value.span.clone()))
}

fn from_value(value: &Value, path: &mut Vec<Segment>, map: &mut SourceMap) -> Node {
    let span = value.span();
    let kind = match value {
        Value::String(s) => Kind::String(s.value().clone()),
        Value::Integer(i) => Kind::Integer(*i.value()),
        Value::Float(f) => Kind::Float(*f.value()),
        Value::Boolean(b) => Kind::Boolean(*b.value()),
        Value::Datetime(d) => Kind::Datetime(*d.value()),
        Value::Array(array) => {
            let mut items = Vec::new();
            for (i, item) in array.iter().enumerate() {
                path.push(Segment::Index(i));
                let node = from_value(item, path, map);
                if let Some(span) = &node.span {
                    map.insert(path, span.clone());
                }
                path.pop();
                items.push(node);
            }
            Kind::Array(items)
        }
        Value::InlineTable(table) => {
            let mut entries = Vec::new();
            for (name, item) in table.iter() {
                let key_span = table.key(name).and_then(|k| k.span());
                path.push(Segment::Key(name.to_owned()));
                let value = from_value(item, path, map);
                if let Some(place) = key_span.clone().or_else(|| value.span.clone()) {
                    map.insert(path, place);
                }
                path.pop();
                entries.push(Entry {
                    key: name.to_owned(),
                    key_span,
                    value,
                    from_file_key: None,
                });
            }
            Kind::Table(entries)
        }
    };
    Node {
        kind,
        span,
        origin: Origin::Literal,
    }
}
