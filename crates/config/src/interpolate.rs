//! `${VAR}` / `${VAR:-default}` in string values.

use std::ops::Range;

use crate::error::ConfigError;
use crate::source::{render_path, Segment, SourceText};
use crate::tree::{Kind, Node, Origin};

/// What went wrong expanding one string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// `${NAME}` with `NAME` unset and no default.
    Unset(String),
    /// `${` without its `}`.
    Unterminated,
    /// `${...}` whose name is not an environment variable name.
    BadName(String),
}

/// The result of expanding one string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub(crate) text: String,
    /// At least one `${...}` was replaced (an escaped `$${` alone does not count).
    pub(crate) interpolated: bool,
    /// The variables' values that went into `text` (not the defaults, which the file shows).
    pub(crate) values: Vec<String>,
}

/// Expands `${NAME}`, `${NAME:-default}` and the escape `$${` in `input`.
///
/// - `${NAME}`: the variable's value; an unset variable is an error, a set but empty one gives
///   the empty string.
/// - `${NAME:-default}`: the variable's value, or `default` when it is unset or empty. The
///   default is taken as written (no `${...}` inside it; it ends at the first `}`).
/// - `$${` gives a literal `${`; any other `$` is kept as it is.
///
/// A value is inserted as it is: it is not expanded again.
pub(crate) fn expand(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, ExpandError> {
    let mut text = String::with_capacity(input.len());
    let mut values = Vec::new();
    let mut interpolated = false;
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        text.push_str(&rest[..dollar]);
        let tail = &rest[dollar..];
        if let Some(after) = tail.strip_prefix("$${") {
            text.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let close = body.find('}').ok_or(ExpandError::Unterminated)?;
            let inner = &body[..close];
            let (name, default) = match inner.find(":-") {
                Some(i) => (&inner[..i], Some(&inner[i + 2..])),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(ExpandError::BadName(name.to_owned()));
            }
            let value = match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
                (Some(v), _) => {
                    values.push(v.clone());
                    v
                }
                (None, Some(d)) => d.to_owned(),
                (None, None) => return Err(ExpandError::Unset(name.to_owned())),
            };
            text.push_str(&value);
            interpolated = true;
            rest = &body[close + 1..];
        } else {
            text.push('$');
            rest = &tail[1..];
        }
    }
    text.push_str(rest);
    Ok(Expanded {
        text,
        interpolated,
        values,
    })
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands every string value under `node` (keys and comments are never touched).
pub(crate) fn interpolate_tree(
    node: &mut Node,
    path: &mut Vec<Segment>,
    env: &dyn Fn(&str) -> Option<String>,
    source: &SourceText,
) -> Result<(), ConfigError> {
    match &mut node.kind {
        Kind::String(s) => {
            if !s.contains('$') {
                return Ok(());
            }
            match expand(s, env) {
                Ok(expanded) => {
                    if expanded.interpolated {
                        let mut fragments = vec![expanded.text.clone()];
                        fragments.extend(expanded.values);
                        node.origin = Origin::Interpolated { fragments };
                    }
                    *s = expanded.text;
                    Ok(())
                }
                Err(e) => Err(expand_error(e, node.span.clone(), path, source)),
            }
        }
        Kind::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Segment::Index(i));
                interpolate_tree(item, path, env, source)?;
                path.pop();
            }
            Ok(())
        }
        Kind::Table(entries) => {
            for entry in entries {
                path.push(Segment::Key(entry.key.clone()));
                interpolate_tree(&mut entry.value, path, env, source)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn expand_error(
    error: ExpandError,
    span: Option<Range<usize>>,
    path: &[Segment],
    source: &SourceText,
) -> ConfigError {
    // Point at the `${NAME` in the raw text of the value when it can be found there.
    let within = |needle: &str| -> Option<Range<usize>> {
        let span = span.clone()?;
        let raw = source.text().get(span.clone())?;
        let at = raw.find(needle)?;
        Some(span.start + at..span.end)
    };
    let (message, place) = match error {
        ExpandError::Unset(name) => (
            format!(
                "environment variable `{name}` is not set (write `${{{name}:-default}}` to give it a default)"
            ),
            within(&format!("${{{name}")),
        ),
        ExpandError::Unterminated => (
            "`${` without a closing `}` (write `$${` for a literal `${`)".to_owned(),
            None,
        ),
        ExpandError::BadName(name) => (
            format!(
                "`${{{name}}}` does not name an environment variable (letters, digits and `_`, not starting with a digit; write `$${{` for a literal `${{`)"
            ),
            within(&format!("${{{name}")),
        ),
    };
    ConfigError::build(source, place.or(span), Some(render_path(path)), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("pim.example".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\nc".into()),
            "NESTED" => Some("${HOST}".into()),
            _ => None,
        }
    }

    fn ok(input: &str) -> Expanded {
        expand(input, &env).unwrap()
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(ok("https://${HOST}/api").text, "https://pim.example/api");
        assert_eq!(ok("${MISSING:-fallback}").text, "fallback");
        assert_eq!(ok("${EMPTY:-fallback}").text, "fallback");
        assert_eq!(ok("[${EMPTY}]").text, "[]");
        assert_eq!(ok("${HOST:-x}").text, "pim.example");
        assert_eq!(ok("${MISSING:-}").text, "");
        assert_eq!(ok("cost: $5, $${HOST}, $$").text, "cost: $5, ${HOST}, $$");
        assert_eq!(ok("${QUOTE}").text, "a\"b\nc");
        // Values are not expanded again.
        assert_eq!(ok("${NESTED}").text, "${HOST}");
    }

    #[test]
    fn reports_what_was_interpolated() {
        let e = ok("u:${HOST}:${MISSING:-d}");
        assert!(e.interpolated);
        assert_eq!(e.values, vec!["pim.example".to_owned()]);
        let e = ok("only $${escaped}");
        assert!(!e.interpolated);
        assert!(e.values.is_empty());
    }

    #[test]
    fn refuses_unset_unterminated_and_bad_names() {
        assert_eq!(
            expand("${MISSING}", &env),
            Err(ExpandError::Unset("MISSING".into()))
        );
        assert_eq!(expand("${HOST", &env), Err(ExpandError::Unterminated));
        assert_eq!(
            expand("${1X}", &env),
            Err(ExpandError::BadName("1X".into()))
        );
        assert_eq!(expand("${}", &env), Err(ExpandError::BadName("".into())));
    }
}
