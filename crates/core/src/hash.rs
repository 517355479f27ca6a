//! Content hashes: what the connector last wrote for an asset, so an unchanged asset costs no
//! PIM call.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::PimAsset;

/// Hex SHA-256 of an asset's canonical JSON (code + values, attributes sorted by code, values
/// by locale and channel).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(pub String);

impl ContentHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes the asset as it would be sent to the PIM.
///
/// The bytes hashed are a canonical JSON rendering written here (object keys sorted at every
/// depth), so the hash does not depend on serde_json's `preserve_order` feature being switched on
/// somewhere in the dependency tree.
pub fn content_hash(asset: &PimAsset) -> ContentHash {
    let mut buf = Vec::with_capacity(256);
    hash_rendered(asset, |leaf, h| write_json(leaf, h, &mut buf))
}

/// The content hash, with `render` writing each scalar and object key (as JSON) to the hasher.
fn hash_rendered(asset: &PimAsset, mut render: impl FnMut(Leaf<'_>, &mut Sha256)) -> ContentHash {
    let mut h = Sha256::new();
    h.update(b"code:");
    h.update(asset.code.as_bytes());
    for (attribute, values) in &asset.values {
        h.update(b"\nattr:");
        h.update(attribute.as_bytes());
        for v in values {
            h.update(b"\n locale:");
            h.update(v.locale.as_deref().unwrap_or("\0").as_bytes());
            h.update(b" channel:");
            h.update(v.channel.as_deref().unwrap_or("\0").as_bytes());
            h.update(b" data:");
            write_canonical(&v.data, &mut h, &mut render);
        }
    }
    ContentHash(lower_hex(&h.finalize()))
}

/// `bytes` as lowercase hex — what `hex::encode` gives, written through a lookup table into
/// one buffer (`hex::encode` collects a `char` iterator, one push at a time: it was ≈ 3 % of
/// the connector's instructions at zero latency, for content hashes, code suffixes and the
/// state index).
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// What a canonical rendering writes as JSON text of its own: an object key or a scalar.
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Key(&'a str),
    Scalar(&'a Value),
}

fn write_canonical(v: &Value, h: &mut Sha256, render: &mut impl FnMut(Leaf<'_>, &mut Sha256)) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                render(Leaf::Key(k), h);
                h.update(b":");
                write_canonical(&map[k], h, render);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for item in items {
                write_canonical(item, h, render);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => render(Leaf::Scalar(other), h),
    }
}

/// serde_json's compact rendering of a leaf (what `to_string` gives, written by
/// [`crate::json`]) into `buf`, then fed to the hasher at once: no `String` per scalar and key,
/// one hasher update per leaf.
fn write_json(leaf: Leaf<'_>, h: &mut Sha256, buf: &mut Vec<u8>) {
    buf.clear();
    match leaf {
        Leaf::Key(k) => crate::json::write_str(buf, k),
        Leaf::Scalar(v) => crate::json::write_value(buf, v),
    }
    h.update(&buf[..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::tests::any_json;
    use crate::PimValue;
    use serde_json::json;

    fn asset(title: &str) -> PimAsset {
        let mut a = PimAsset::new("a");
        a.push_value(
            "title",
            PimValue {
                locale: None,
                channel: None,
                data: json!(title),
            },
        );
        a
    }

    #[test]
    fn equal_assets_hash_equal_and_changes_show() {
        assert_eq!(content_hash(&asset("x")), content_hash(&asset("x")));
        assert_ne!(content_hash(&asset("x")), content_hash(&asset("y")));
        assert_eq!(content_hash(&asset("x")).as_str().len(), 64);
    }

    /// The rendering hashed before scalars and keys were fed to the hasher as written: every
    /// stored hash must stay valid across the change, or an upgrade would rewrite every asset.
    fn content_hash_by_strings(asset: &PimAsset) -> ContentHash {
        hash_rendered(asset, |leaf, h| match leaf {
            Leaf::Key(k) => h.update(serde_json::to_string(k).unwrap().as_bytes()),
            Leaf::Scalar(v) => h.update(v.to_string().as_bytes()),
        })
    }

    proptest::proptest! {
        #[test]
        fn hashes_are_those_of_the_string_rendering(
            code in "[a-z0-9_]{1,20}",
            values in proptest::collection::vec(
                ("[a-z_]{1,8}", proptest::option::of("[a-z]{2}_[A-Z]{2}"), any_json()),
                0..6,
            ),
        ) {
            let mut a = PimAsset::new(&code);
            for (attribute, locale, data) in values {
                a.push_value(&attribute, PimValue { locale, channel: None, data });
            }
            proptest::prop_assert_eq!(content_hash(&a), content_hash_by_strings(&a));
        }
    }

    proptest::proptest! {
        #[test]
        fn lower_hex_is_hex_encode(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            proptest::prop_assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        }
    }

    /// A pinned hash: the rendering (`code:…`, `\nattr:…`, `\n locale:… channel:… data:…`,
    /// objects with sorted keys and a comma after every member) hashed by an independent
    /// script (Python's `hashlib` and `json`), so a change of the walk or of any separator —
    /// which would make every stored hash stale and rewrite every asset — fails here.
    #[test]
    fn the_rendering_hashed_is_pinned() {
        let mut a = PimAsset::new("shoe_red");
        let value = |locale: Option<&str>, channel: Option<&str>, data| PimValue {
            locale: locale.map(str::to_owned),
            channel: channel.map(str::to_owned),
            data,
        };
        a.push_value("title", value(Some("en_US"), None, json!("Red \"shoe\" é")));
        a.push_value(
            "title",
            value(Some("fr_FR"), Some("ecommerce"), json!("Chaussure")),
        );
        a.push_value("tags", value(None, None, json!(["a", "b"])));
        a.push_value(
            "width",
            value(None, None, json!({"unit": "PX", "amount": 12})),
        );
        assert_eq!(
            content_hash(&a).as_str(),
            "620451f26510b16489b6e0eb742e8439f0bc4a047be3894741eb87904dbc95f3"
        );
    }

    #[test]
    fn key_order_of_data_objects_does_not_matter() {
        let mut a = PimAsset::new("a");
        let mut b = PimAsset::new("a");
        let v1: serde_json::Value = serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap();
        let v2: serde_json::Value = serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap();
        a.push_value(
            "m",
            PimValue {
                locale: None,
                channel: None,
                data: v1,
            },
        );
        b.push_value(
            "m",
            PimValue {
                locale: None,
                channel: None,
                data: v2,
            },
        );
        assert_eq!(content_hash(&a), content_hash(&b));
    }
}
