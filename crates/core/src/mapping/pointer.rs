//! JSON pointers (RFC 6901) parsed once, looked up without allocating.
//!
//! `serde_json::Value::pointer` splits and unescapes the pointer text on every call; mapping
//! reads the same few pointers from every asset, so they are parsed at start-up instead.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    key: Box<str>,
    /// The token read as an array index, when it is one (`0` or a number without leading zero).
    index: Option<usize>,
}

/// A parsed JSON pointer. The empty pointer `""` designates the whole document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    tokens: Box<[Token]>,
}

impl JsonPointer {
    /// Parses `/a/b~1c/0`. Errors name what is wrong (missing leading `/`, bad `~` escape).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self {
                tokens: Box::new([]),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON pointer: it must start with `/` (e.g. `/metadata/title`)"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut key = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => key.push('~'),
                        Some('1') => key.push('/'),
                        _ => {
                            return Err(format!(
                                "`{text}` is not a valid JSON pointer: `~` must be followed by `0` (for `~`) or `1` (for `/`)"
                            ))
                        }
                    }
                } else {
                    key.push(c);
                }
            }
            let index = parse_index(&key);
            tokens.push(Token {
                key: key.into_boxed_str(),
                index,
            });
        }
        Ok(Self {
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The value the pointer designates in `doc`, if any.
    pub fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        let mut cur = doc;
        for t in self.tokens.iter() {
            cur = match cur {
                Value::Object(map) => map.get(&*t.key)?,
                Value::Array(items) => items.get(t.index?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// Array index as RFC 6901 (and `serde_json`) reads it: `0`, or digits without a leading zero.
fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agrees_with_serde_json() {
        let doc = json!({
            "a": {"b": [10, {"c/d": 1, "e~f": 2}]},
            "": {"": 3},
            "01": 4,
            "arr": [[5]]
        });
        for p in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c~1d",
            "/a/b/1/e~0f",
            "/a/b/01",
            "/a/b/-",
            "/a/b/9",
            "/a/x/y",
            "/",
            "//",
            "/01",
            "/arr/0/0",
            "/arr/0/0/0",
        ] {
            let ours = JsonPointer::parse(p).unwrap();
            assert_eq!(ours.get(&doc), doc.pointer(p), "{p}");
        }
    }

    #[test]
    fn bad_pointers_are_refused() {
        assert!(JsonPointer::parse("a/b")
            .unwrap_err()
            .contains("must start with `/`"));
        assert!(JsonPointer::parse("/a~2").unwrap_err().contains('~'));
        assert!(JsonPointer::parse("/a~").is_err());
    }
}
