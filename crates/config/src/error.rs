//! [`ConfigError`]: what went wrong, in which file, on which line, under which key.

use std::fmt;
use std::ops::Range;

use crate::source::SourceText;

/// An error in the configuration file: syntax, an unknown key, a wrong type, a missing key, a
/// value the schema refuses, an unset environment variable, an unreadable `*_file` secret.
///
/// `Display` writes `file:line:column: key `path`: message`, followed — when the line is known —
/// by an excerpt of the offending line with a caret under the offending part:
///
/// ```text
/// assetbridge.toml:14:1: key `families[0].values[2].attribut`: unknown field `attribut`, expected one of `attribute`, `from`
///    |
/// 14 | attribut = "title"
///    | ^^^^^^^^
/// ```
///
/// Parts that are not known are left out (`file: message` when nothing else is). Values that
/// came from the environment or from a `*_file` secret are never shown: messages say
/// `(value hidden)` instead. Use [`headline`](Self::headline) for the first line alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given to the loader.
    pub file: String,
    /// Line, from 1, when the error has a place in the file.
    pub line: Option<usize>,
    /// Column in characters, from 1, when the error has a place in the file.
    pub column: Option<usize>,
    /// The key path the error is about, like `families[0].values[2].attribut`, when there is one
    /// (not for syntax errors, nor for errors about the whole file).
    pub key: Option<String>,
    /// What is wrong, without the file, line or key.
    pub message: String,
    /// See [`excerpt`](Self::excerpt). Boxed: errors travel in `Result`s, keep them small.
    excerpt: Option<Box<Excerpt>>,
}

/// The rendered excerpt (boxed in [`ConfigError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Excerpt(String);

impl ConfigError {
    /// An error about the file as a whole (it cannot be read, ...).
    pub(crate) fn whole_file(file: &str, message: String) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            key: None,
            message,
            excerpt: None,
        }
    }

    pub(crate) fn build(
        source: &SourceText,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> Self {
        let (line, column, excerpt) = match &span {
            Some(span) => {
                let (line, column) = source.line_col(span.start);
                (
                    Some(line),
                    Some(column),
                    source.excerpt(span).map(|e| Box::new(Excerpt(e))),
                )
            }
            None => (None, None, None),
        };
        Self {
            file: source.file.clone(),
            line,
            column,
            key,
            message,
            excerpt,
        }
    }

    /// The offending line and a caret line under it (see the type's docs), when the line is
    /// known.
    pub fn excerpt(&self) -> Option<&str> {
        self.excerpt.as_deref().map(|e| e.0.as_str())
    }

    /// The first line of the `Display` form: `file:line:column: key `path`: message`.
    pub fn headline(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = self.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(": ");
        if let Some(key) = &self.key {
            out.push_str(&format!("key `{key}`: "));
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(excerpt) = self.excerpt() {
            write!(f, "\n{excerpt}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
