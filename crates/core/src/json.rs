//! Compact JSON writing for the hot paths: the bytes serde_json's compact serialiser writes
//! (`serde_json::to_writer`), written faster.
//!
//! The connector writes every asset twice — its canonical rendering for the content hash and
//! the batch body for the PIM — and most of those bytes are strings. serde_json looks each
//! byte of a string up in its escape table; here eight bytes at a time are checked at once
//! for anything that needs escaping (a control character, `"` or `\`), and clean runs are
//! copied whole. Numbers are still written by serde_json. The output is byte for byte
//! serde_json's (the tests compare both on generated values): a content hash must never
//! change with the code that renders it.

use serde_json::Value;

use crate::PimAsset;

/// `text` as a JSON string, as serde_json writes it: `"` and `\` escaped with a backslash,
/// control characters as `\b`, `\t`, `\n`, `\f`, `\r` or `\u00XX`, everything else as is.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut clean_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if let Some(escape) = escape(b) {
            out.extend_from_slice(&bytes[clean_from..i]);
            out.extend_from_slice(escape);
            clean_from = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether one of the eight bytes of `word` is below 0x20, `"` or `\` (exact: never a false
/// "no"; a "yes" sends the bytes one by one through [`escape`]).
fn needs_escape(word: u64) -> bool {
    // A byte below n (n ≤ 0x80): (x − n·ONES) & !x & HIGHS is non-zero iff one is.
    let control = word.wrapping_sub(0x20 * ONES) & !word & HIGHS;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(word ^ (u64::from(b'"') * ONES));
    let backslash = zero_byte(word ^ (u64::from(b'\\') * ONES));
    control | quote | backslash != 0
}

/// `\u00XX` for each of the 32 control characters, built at compile time.
static UNICODE_ESCAPES: [[u8; 6]; 32] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    table
};

/// How serde_json escapes a byte, if it does.
fn escape(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x09 => b"\\t",
        0x0a => b"\\n",
        0x0c => b"\\f",
        0x0d => b"\\r",
        0x00..=0x1f => &UNICODE_ESCAPES[b as usize],
        _ => return None,
    })
}

/// `value` as compact JSON, as `serde_json::to_writer` writes it (objects in their map's
/// order).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n).expect("a number serialises"),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items, write_value),
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v);
            }
            out.push(b'}');
        }
    }
}

fn write_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// One asset as its `Serialize` writes it: `{"code":…,"values":{"attr":[{"locale":…,
/// "channel":…,"data":…}]}}`.
pub fn write_asset(out: &mut Vec<u8>, asset: &PimAsset) {
    out.extend_from_slice(b"{\"code\":");
    write_str(out, &asset.code);
    out.extend_from_slice(b",\"values\":{");
    for (i, (attribute, values)) in asset.values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, attribute);
        out.push(b':');
        write_array(out, values, |out, v| {
            out.extend_from_slice(b"{\"locale\":");
            write_opt_str(out, v.locale.as_deref());
            out.extend_from_slice(b",\"channel\":");
            write_opt_str(out, v.channel.as_deref());
            out.extend_from_slice(b",\"data\":");
            write_value(out, &v.data);
            out.push(b'}');
        });
    }
    out.extend_from_slice(b"}}");
}

/// A JSON array of assets — a batch body — as serde_json writes a `[&PimAsset]`.
pub fn write_assets<'a>(out: &mut Vec<u8>, assets: impl IntoIterator<Item = &'a PimAsset>) {
    write_array(out, assets, write_asset);
}

/// `[…]`: each item written by `write`, separated by commas.
fn write_array<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

/// Parses `text` into a [`Value`], as `serde_json::from_str::<Value>` does, building each
/// object at once from its members rather than inserting them one by one.
///
/// A listing page of the DAM is parsed into `Value`s (its records are read with configured
/// pointers), and inserting every key of every record into its map, a search of the map each,
/// was ≈ 3 % of the connector's instructions at zero latency. Here an object's members are
/// collected, then the map is built from them ([`serde_json::Map`]'s `FromIterator`: sorted —
/// a DAM usually sends them sorted already — then bulk-loaded). A repeated key keeps its last
/// value, as with serde_json. Same limits (recursion depth) and errors: serde_json's parser
/// reads the text.
pub fn parse_value(text: &str) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = BulkValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A [`Value`] whose objects are built at once (see [`parse_value`]).
#[derive(Clone, Copy)]
struct BulkValue;

impl<'de> serde::de::DeserializeSeed<'de> for BulkValue {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BulkValue {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members: Vec<(String, Value)> = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value_seed(self)?));
        }
        Ok(Value::Object(members.into_iter().collect()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::PimValue;
    use proptest::prelude::*;

    /// Any JSON value: every kind of scalar (escapes, non-ASCII, both integer ranges, finite
    /// floats), nested arrays and objects. Also the content hash's tests' generator.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
            "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn every_byte_is_written_as_serde_json_writes_it() {
        // Each byte value alone, and at each position of a 17-byte string (both sides of the
        // eight-byte words).
        for b in 0u8..=0x7f {
            let c = char::from(b);
            for at in 0..17 {
                let mut s: String = "abcdefghijklmnopq".into();
                s.replace_range(at..=at, &c.to_string());
                let mut ours = Vec::new();
                write_str(&mut ours, &s);
                assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn parsing_gives_what_serde_json_gives_and_fails_where_it_fails() {
        for text in [
            r#"{"b": 1, "a": [true, null, 2.5, -3, 18446744073709551615], "c": {"z": "\u00e9\n", "y": {}}}"#,
            r#"{"k": 1, "k": 2, "j": 0}"#,
            r#"[{"x": []}, "s", 1e400]"#,
            "  \"text\"  ",
        ] {
            let ours = parse_value(text).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
        assert_eq!(
            parse_value(r#"{"k": 1, "k": 2}"#).unwrap()["k"],
            2,
            "the last value wins"
        );
        for bad in [r#"{"a": 1"#, r#"{"a": 1} x"#, "[1,]", "", r#"{"a" 1}"#] {
            let ours = parse_value(bad).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(bad).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            parse_value(&deep).is_err(),
            "serde_json's recursion limit holds"
        );
    }

    proptest! {
        #[test]
        fn parsed_values_are_serde_jsons(v in any_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            prop_assert_eq!(
                parse_value(&text).unwrap(),
                serde_json::from_str::<Value>(&text).unwrap()
            );
        }

        #[test]
        fn strings_are_written_as_serde_json_writes_them(s in ".*", t in "[ -~\u{0}-\u{1f}é]{0,70}") {
            for text in [&s, &t] {
                let mut ours = Vec::new();
                write_str(&mut ours, text);
                prop_assert_eq!(ours, serde_json::to_vec(text).unwrap());
            }
        }

        #[test]
        fn values_are_written_as_serde_json_writes_them(v in any_json()) {
            let mut ours = Vec::new();
            write_value(&mut ours, &v);
            prop_assert_eq!(ours, serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn batches_are_written_as_serde_json_writes_them(
            assets in proptest::collection::vec(
                (
                    ".{1,12}",
                    proptest::collection::vec(
                        (".{1,8}", proptest::option::of(".{0,6}"), proptest::option::of(".{0,6}"), any_json()),
                        0..5,
                    ),
                ),
                0..4,
            )
        ) {
            let assets: Vec<PimAsset> = assets
                .into_iter()
                .map(|(code, values)| {
                    let mut a = PimAsset::new(code);
                    for (attribute, locale, channel, data) in values {
                        a.push_value(&attribute, PimValue { locale, channel, data });
                    }
                    a
                })
                .collect();
            let mut ours = Vec::new();
            write_assets(&mut ours, &assets);
            let refs: Vec<&PimAsset> = assets.iter().collect();
            prop_assert_eq!(ours, serde_json::to_vec(&refs).unwrap());
        }
    }
}
