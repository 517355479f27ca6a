//! Where things are in the configuration file: line/column arithmetic, key paths, and the
//! [`SourceMap`] handed out with every loaded configuration.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::error::ConfigError;

/// A position in the configuration file. Lines and columns count from 1; the column counts
/// characters (not bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file name as given to the loader (the path passed to [`load`](crate::load), or the
    /// `origin` passed to [`load_str`](crate::load_str)).
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The text of the file and its line starts, shared by the [`SourceMap`] and error building.
#[derive(Clone)]
pub(crate) struct SourceText {
    pub(crate) file: String,
    text: Arc<str>,
    line_starts: Arc<[usize]>,
}

impl SourceText {
    pub(crate) fn new(file: &str, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: file.to_owned(),
            text: Arc::from(text),
            line_starts: line_starts.into(),
        }
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// 0-based line index of a byte offset (clamped to the text).
    fn line_index(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// The text of a 0-based line, without its line ending.
    fn line_text(&self, index: usize) -> &str {
        let start = self.line_starts[index];
        let end = self
            .line_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_index(offset);
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count() + 1;
        (line + 1, column)
    }

    pub(crate) fn location(&self, offset: usize) -> Location {
        let (line, column) = self.line_col(offset);
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    /// A two-line excerpt: the line holding `span.start`, and carets under the part of the span
    /// that is on that line.
    ///
    /// ```text
    ///    |
    /// 14 | attribut = "title"
    ///    | ^^^^^^^^
    /// ```
    pub(crate) fn excerpt(&self, span: &Range<usize>) -> Option<String> {
        if self.text.is_empty() {
            return None;
        }
        let (line, column) = self.line_col(span.start);
        let text = self.line_text(line - 1);
        let text_chars = text.chars().count();
        // Carets from the start column to the span's end or the line's end, at least one.
        let span_chars = self
            .text
            .get(span.start.min(self.text.len())..span.end.min(self.text.len()))
            .map(|s| s.chars().take_while(|c| *c != '\n' && *c != '\r').count())
            .unwrap_or(0);
        let width = span_chars.min(text_chars.saturating_sub(column - 1)).max(1);
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        // Tabs keep the caret aligned under the text.
        let lead: String = text
            .chars()
            .take(column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        Some(format!(
            "{pad} |\n{line} | {text}\n{pad} | {lead}{}",
            "^".repeat(width)
        ))
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a key path the way errors and [`SourceMap::locate`] spell it:
/// `families[1].values[0].attribute`. Keys that are not bare TOML keys (letters, digits, `_`,
/// `-`) are written as TOML basic strings: `mapping."my.attribute"`.
pub(crate) fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                push_key(&mut out, key);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        out.push_str(key);
        return;
    }
    out.push('"');
    for c in key.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses a key path written as [`render_path`] writes it (bare keys, `"quoted"` keys, `[n]`
/// indices, `.` between keys). `None` when it is malformed.
pub(crate) fn parse_path(text: &str) -> Option<Vec<Segment>> {
    let mut path = Vec::new();
    let mut chars = text.trim().chars().peekable();
    let mut expect_key = true;
    while let Some(&c) = chars.peek() {
        match c {
            '[' => {
                chars.next();
                let mut digits = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    digits.push(c);
                }
                path.push(Segment::Index(digits.trim().parse().ok()?));
                expect_key = false;
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '.' => {
                chars.next();
                if expect_key {
                    return None;
                }
                expect_key = true;
            }
            '"' => {
                if !expect_key {
                    return None;
                }
                chars.next();
                let mut key = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => key.push('\n'),
                            't' => key.push('\t'),
                            'u' => {
                                let hex: String = chars.by_ref().take(4).collect();
                                key.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            other => key.push(other),
                        },
                        other => key.push(other),
                    }
                }
                path.push(Segment::Key(key));
                expect_key = false;
            }
            _ => {
                if !expect_key {
                    return None;
                }
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                path.push(Segment::Key(key.trim().to_owned()));
                expect_key = false;
            }
        }
    }
    if expect_key && !path.is_empty() {
        return None;
    }
    Some(path)
}

/// Where each key path of a loaded configuration was written, so that checks made after loading
/// (say, "this attribute does not exist in the PIM") can point at `file:line:column`.
///
/// Paths are spelled like error keys: `families[1].values[3].attribute` (array indices in
/// brackets, keys joined with `.`, keys that are not bare TOML keys in double quotes). A key
/// points at its key in the file; a `[table]` or `[[array.element]]` at its header; an array at
/// its first element; a key produced from a `*_file` key (`password` from `password_file`) at the
/// `*_file` key. Only what the file wrote is known: keys filled by serde defaults have no place.
#[derive(Clone)]
pub struct SourceMap {
    pub(crate) source: SourceText,
    pub(crate) spans: HashMap<String, Range<usize>>,
}

impl fmt::Debug for SourceMap {
    // The text may hold literal secrets: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceMap")
            .field("file", &self.source.file)
            .field("keys", &self.spans.len())
            .finish_non_exhaustive()
    }
}

impl SourceMap {
    pub(crate) fn new(source: SourceText) -> Self {
        Self {
            source,
            spans: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, path: &[Segment], span: Range<usize>) {
        self.spans.entry(render_path(path)).or_insert(span);
    }

    /// The file name every location refers to.
    pub fn file(&self) -> &str {
        &self.source.file
    }

    fn span_of(&self, key_path: &str) -> Option<&Range<usize>> {
        self.spans.get(key_path).or_else(|| {
            // Accept any spelling that parses to the same path (`a . b`, `"b"`).
            let canonical = render_path(&parse_path(key_path)?);
            self.spans.get(&canonical)
        })
    }

    /// Where `key_path` (e.g. `families[1].values[3].attribute`) was written, or `None` when the
    /// file does not write it.
    pub fn locate(&self, key_path: &str) -> Option<Location> {
        self.span_of(key_path)
            .map(|span| self.source.location(span.start))
    }

    /// Like [`locate`](Self::locate), but falls back to the nearest enclosing key the file does
    /// write (`families[1].values[3]`, then `families[1]`, ...), so that an error about a key left
    /// to its default still points at the table it belongs to.
    pub fn locate_nearest(&self, key_path: &str) -> Option<Location> {
        self.nearest_span(key_path)
            .map(|span| self.source.location(span.start))
    }

    fn nearest_span(&self, key_path: &str) -> Option<&Range<usize>> {
        if let Some(span) = self.span_of(key_path) {
            return Some(span);
        }
        let mut path = parse_path(key_path)?;
        while path.pop().is_some() {
            if path.is_empty() {
                break;
            }
            if let Some(span) = self.spans.get(&render_path(&path)) {
                return Some(span);
            }
        }
        None
    }

    /// An error about `key_path` found after loading (a failed cross-check, a value the schema
    /// type accepted but the program cannot use), placed at the key's line — or the nearest
    /// enclosing table's — with an excerpt of that line. The message must not hold secrets.
    pub fn error_at(&self, key_path: &str, message: impl Into<String>) -> ConfigError {
        let span = self.nearest_span(key_path).cloned();
        let key = if key_path.trim().is_empty() {
            None
        } else {
            Some(key_path.trim().to_owned())
        };
        ConfigError::build(&self.source, span, key, message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let path = vec![
            Segment::Key("families".into()),
            Segment::Index(1),
            Segment::Key("values".into()),
            Segment::Index(3),
            Segment::Key("my.attr \"x\"".into()),
        ];
        let text = render_path(&path);
        assert_eq!(text, r#"families[1].values[3]."my.attr \"x\"""#);
        assert_eq!(parse_path(&text).unwrap(), path);
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(parse_path("a."), None);
        assert_eq!(parse_path("").unwrap(), vec![]);
    }

    #[test]
    fn line_and_column_count_characters() {
        let src = SourceText::new("f.toml", "a = 1\né = \"x\"\n\nlast");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "é" is two bytes, one column.
        assert_eq!(src.line_col(9), (2, 3));
        assert_eq!(src.line_col(src.text().len()), (4, 5));
        let excerpt = src.excerpt(&(9..10)).unwrap();
        assert_eq!(excerpt, "  |\n2 | é = \"x\"\n  |   ^");
    }
}
