//! The `link` table of a `[[families]]` entry: which products an asset of the family is linked
//! to, through which product asset-collection attribute.
//!
//! ```toml
//! link = { product = "/metadata/sku", attribute = "packshots" }
//! link = { product = { from = "/name", transform = [{ regex = '^(SKU-\d+)_' }] }, attribute = "images", scope = "ecommerce" }
//! ```
//!
//! `product` is a JSON pointer into the DAM record, or a small expression in the mapping
//! language (`from` / `template`, `transform`, `when`, `default`, `on_error`, as a value rule of
//! `docs/mapping.md`): its result is the product identifier, or a list of them (one link per
//! product).

use std::collections::BTreeSet;
use std::fmt;

use assetbridge_core::mapping::{
    CompileContext, CompiledMapping, Condition, FamilyMapping, OnError, Transform, ValueMaps,
    ValueRule,
};
use assetbridge_core::DamAsset;
use assetbridge_store::LinkTarget;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The product type an asset-collection attribute must have.
pub const ASSET_COLLECTION_TYPE: &str = "pim_catalog_asset_collection";

/// The name of the one value the compiled product expression fills.
const SLOT: &str = "product";

/// `[[families]] link`: explicit links of the family's assets to products.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductLinkConfig {
    /// Where the product identifier comes from: a JSON pointer (`"/metadata/sku"`) or an
    /// expression table (`{ from = "/name", transform = [...] }`). A list links to several
    /// products. Required.
    pub product: ProductSource,
    /// The product attribute holding the asset codes: a `pim_catalog_asset_collection` whose
    /// `reference_data_name` is this asset family. Required.
    pub attribute: String,
    /// The value's locale: required exactly when the attribute is localizable. Default: none.
    #[serde(default)]
    pub locale: Option<String>,
    /// The value's channel: required exactly when the attribute is scopable. Default: none.
    #[serde(default)]
    pub scope: Option<String>,
    /// How the code joins the codes already there. Default: `add`.
    #[serde(default)]
    pub mode: LinkMode,
    /// What a deletion of the asset in the PIM (`[sync] deletions = "delete"`) does to its
    /// links. Default: `unlink`.
    #[serde(default)]
    pub on_delete: OnDelete,
}

/// How an asset code joins a product's asset collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// Appended after the codes already there (their order kept), unless already present.
    #[default]
    Add,
}

/// What the deletion of a linked asset does to the products it is linked to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Its code is removed from them (when the deletion policy deletes the asset in the PIM).
    #[default]
    Unlink,
    /// Nothing is done to the products.
    Keep,
}

/// `link.product`: a JSON pointer, or an expression of the mapping language.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductSource {
    /// A JSON pointer into the DAM record (`"/metadata/sku"`).
    Pointer(String),
    /// An expression (`{ from = "/name", transform = [...] }`).
    Expression(ProductExpression),
}

/// The expression form of `link.product`: a value rule of the mapping language without
/// attribute, locale or channel.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductExpression {
    /// Source: a JSON pointer into the DAM record.
    #[serde(default)]
    pub from: Option<String>,
    /// Source: a minijinja template over the DAM record.
    #[serde(default)]
    pub template: Option<String>,
    /// Steps applied to the source's value (`trim`, `regex`, `split`, `map`, ...).
    #[serde(default)]
    pub transform: Vec<Transform>,
    /// Used when the result is empty.
    #[serde(default)]
    pub default: Option<Value>,
    /// The asset is linked only when this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// What a failing transform does: `fail` (default: the asset's links are left as they
    /// were, with a warning), `skip` (no product) or `default`.
    #[serde(default)]
    pub on_error: OnError,
}

impl<'de> Deserialize<'de> for ProductSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProductSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a JSON pointer such as \"/metadata/sku\", or a table such as { from = \"/name\", transform = [...] }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ProductSource::Pointer(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ProductSource::Pointer(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ProductExpression::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ProductSource::Expression)
            }
        }
        d.deserialize_any(V)
    }
}

/// A checked `link` table, ready to say where an asset goes.
#[derive(Debug)]
pub struct ProductLinks {
    config: ProductLinkConfig,
    expression: CompiledMapping,
}

impl ProductLinkConfig {
    /// Checks what can be checked without the PIM and compiles the product expression (with
    /// the family's named value maps, for `{ map = "…" }` steps). Errors: (key relative to the
    /// `link` table, message).
    pub fn compile(&self, maps: Option<&ValueMaps>) -> Result<ProductLinks, (String, String)> {
        if !assetbridge_core::code::is_valid_code(&self.attribute) {
            return Err((
                "attribute".into(),
                format!(
                    "`{}` is not an Akeneo attribute code (letters, digits and `_`)",
                    self.attribute
                ),
            ));
        }
        for (key, v) in [("locale", &self.locale), ("scope", &self.scope)] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err((key.into(), "must not be empty (leave the key out)".into()));
            }
        }
        let rule = match &self.product {
            ProductSource::Pointer(p) => ValueRule {
                attribute: SLOT.into(),
                from: Some(p.clone()),
                ..ValueRule::default()
            },
            ProductSource::Expression(e) => {
                if e.from.is_some() == e.template.is_some() {
                    return Err((
                        "product".into(),
                        "give exactly one of `from` (a JSON pointer) and `template`".into(),
                    ));
                }
                ValueRule {
                    attribute: SLOT.into(),
                    from: e.from.clone(),
                    template: e.template.clone(),
                    transform: e.transform.clone(),
                    default: e.default.clone(),
                    when: e.when.clone(),
                    on_error: e.on_error,
                    ..ValueRule::default()
                }
            }
        };
        let mapping = FamilyMapping {
            values: vec![rule],
            ..FamilyMapping::default()
        };
        let cx = CompileContext {
            structure: None,
            maps,
            create_missing_options: &[],
        };
        let expression = CompiledMapping::compile(&mapping, &cx).map_err(|e| {
            let key = match e.key.as_deref().and_then(|k| k.strip_prefix("values[0]")) {
                Some(rest) if matches!(self.product, ProductSource::Expression(_)) => {
                    format!("product{rest}")
                }
                _ => "product".to_owned(),
            };
            (key, e.message)
        })?;
        Ok(ProductLinks {
            config: self.clone(),
            expression,
        })
    }

    /// Checks the link against the product attribute as the PIM describes it
    /// (`GET /api/rest/v1/attributes/{code}`; `None`: no such attribute): an asset collection of
    /// asset family `family`, with a locale exactly when localizable and a scope exactly when
    /// scopable. Errors: (key relative to the `link` table, message).
    pub fn check_attribute(
        &self,
        family: &str,
        attribute: Option<&Value>,
    ) -> Result<(), (String, String)> {
        let code = &self.attribute;
        let Some(a) = attribute else {
            return Err((
                "attribute".into(),
                format!("the PIM has no product attribute `{code}`"),
            ));
        };
        let kind = a.get("type").and_then(Value::as_str).unwrap_or("(none)");
        if kind != ASSET_COLLECTION_TYPE {
            return Err((
                "attribute".into(),
                format!("product attribute `{code}` is a `{kind}`, not an asset collection (`{ASSET_COLLECTION_TYPE}`)"),
            ));
        }
        let linked = a
            .get("reference_data_name")
            .and_then(Value::as_str)
            .unwrap_or("(none)");
        if linked != family {
            return Err((
                "attribute".into(),
                format!("product attribute `{code}` holds assets of family `{linked}`, not of `{family}`"),
            ));
        }
        let flag = |k: &str| a.get(k).and_then(Value::as_bool).unwrap_or(false);
        for (key, given, needed, what) in [
            ("locale", &self.locale, flag("localizable"), "localizable"),
            ("scope", &self.scope, flag("scopable"), "scopable"),
        ] {
            match (given, needed) {
                (None, true) => {
                    return Err((
                        key.into(),
                        format!("product attribute `{code}` is {what}: give a `{key}`"),
                    ))
                }
                (Some(v), false) => {
                    return Err((
                        key.into(),
                        format!(
                            "product attribute `{code}` is not {what}: remove `{key} = \"{v}\"`"
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl ProductLinks {
    /// The configuration it was compiled from.
    pub fn config(&self) -> &ProductLinkConfig {
        &self.config
    }

    /// The product identifiers of `asset`: distinct, in the order found, blanks dropped. An
    /// expression that fails (with `on_error = "fail"`) is an error.
    pub fn products(&self, asset: &DamAsset) -> Result<Vec<String>, String> {
        let out = self.expression.map(asset).map_err(|e| e.message)?;
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        let mut push = |v: &Value| {
            let text = match v {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                _ => return,
            };
            if !text.is_empty() && seen.insert(text.clone()) {
                found.push(text);
            }
        };
        for value in out.values.get(SLOT).into_iter().flatten() {
            match &value.data {
                Value::Array(items) => items.iter().for_each(&mut push),
                other => push(other),
            }
        }
        Ok(found)
    }

    /// Where `asset` should be linked.
    pub fn targets(&self, asset: &DamAsset) -> Result<Vec<LinkTarget>, String> {
        Ok(self
            .products(asset)?
            .into_iter()
            .map(|product| LinkTarget {
                product,
                attribute: self.config.attribute.clone(),
                locale: self.config.locale.clone(),
                scope: self.config.scope.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asset(record: Value) -> DamAsset {
        DamAsset {
            id: "a1".into(),
            updated_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            record,
        }
    }

    fn config(product: Value) -> ProductLinkConfig {
        serde_json::from_value(json!({"product": product, "attribute": "images"})).unwrap()
    }

    #[test]
    fn a_pointer_gives_one_product_or_several() {
        let links = config(json!("/metadata/sku")).compile(None).unwrap();
        assert_eq!(
            links
                .products(&asset(json!({"metadata": {"sku": " SKU-1 "}})))
                .unwrap(),
            vec!["SKU-1"]
        );
        assert_eq!(
            links
                .products(&asset(
                    json!({"metadata": {"sku": ["A", "B", "A", "", 42]}})
                ))
                .unwrap(),
            vec!["A", "B", "42"]
        );
        assert!(links
            .products(&asset(json!({"metadata": {}})))
            .unwrap()
            .is_empty());
        let t = links
            .targets(&asset(json!({"metadata": {"sku": "X"}})))
            .unwrap();
        assert_eq!(t[0].attribute, "images");
        assert_eq!(t[0].locale, None);
    }

    #[test]
    fn an_expression_uses_the_mapping_language() {
        let links = config(json!({
            "from": "/name",
            "transform": [{"regex": "^(SKU-\\d+)_"}],
        }))
        .compile(None)
        .unwrap();
        assert_eq!(
            links
                .products(&asset(json!({"name": "SKU-000042_front.jpg"})))
                .unwrap(),
            vec!["SKU-000042"]
        );
        assert!(links
            .products(&asset(json!({"name": "no-sku.jpg"})))
            .unwrap()
            .is_empty());
        let split = config(json!({"from": "/skus", "transform": [{"split": ","}], "when": {"pointer": "/type", "equals": "image"}}))
            .compile(None)
            .unwrap();
        assert_eq!(
            split
                .products(&asset(json!({"skus": "A, B", "type": "image"})))
                .unwrap(),
            vec!["A", "B"]
        );
        assert!(split
            .products(&asset(json!({"skus": "A, B", "type": "video"})))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn mistakes_name_their_key() {
        let e = config(json!("metadata/sku")).compile(None).unwrap_err();
        assert_eq!(e.0, "product", "{e:?}");
        let e = config(json!({"from": "/name", "transform": [{"regex": "("}]}))
            .compile(None)
            .unwrap_err();
        assert_eq!(e.0, "product.transform[0]", "{e:?}");
        let e = config(json!({"transform": ["trim"]}))
            .compile(None)
            .unwrap_err();
        assert_eq!(e.0, "product", "{e:?}");
        let mut c = config(json!("/sku"));
        c.attribute = "not-a-code".into();
        assert_eq!(c.compile(None).unwrap_err().0, "attribute");
        assert!(serde_json::from_value::<ProductLinkConfig>(
            json!({"product": "/sku", "attribute": "a", "mode": "replace"})
        )
        .is_err());
    }

    #[test]
    fn the_attribute_is_checked_against_the_pim() {
        let c = config(json!("/sku"));
        let attr = |kind: &str, family: &str, localizable: bool, scopable: bool| {
            json!({"code": "images", "type": kind, "reference_data_name": family,
                   "localizable": localizable, "scopable": scopable})
        };
        assert!(c
            .check_attribute(
                "packshots",
                Some(&attr(ASSET_COLLECTION_TYPE, "packshots", false, false))
            )
            .is_ok());
        assert_eq!(
            c.check_attribute("packshots", None).unwrap_err().0,
            "attribute"
        );
        let e = c
            .check_attribute(
                "packshots",
                Some(&attr("pim_catalog_text", "packshots", false, false)),
            )
            .unwrap_err();
        assert!(e.1.contains("pim_catalog_text"), "{e:?}");
        let e = c
            .check_attribute(
                "packshots",
                Some(&attr(ASSET_COLLECTION_TYPE, "lifestyle", false, false)),
            )
            .unwrap_err();
        assert!(e.1.contains("lifestyle"), "{e:?}");
        let e = c
            .check_attribute(
                "packshots",
                Some(&attr(ASSET_COLLECTION_TYPE, "packshots", true, false)),
            )
            .unwrap_err();
        assert_eq!(e.0, "locale");
        let mut scoped = c.clone();
        scoped.scope = Some("ecommerce".into());
        let e = scoped
            .check_attribute(
                "packshots",
                Some(&attr(ASSET_COLLECTION_TYPE, "packshots", false, false)),
            )
            .unwrap_err();
        assert_eq!(e.0, "scope");
        assert!(scoped
            .check_attribute(
                "packshots",
                Some(&attr(ASSET_COLLECTION_TYPE, "packshots", false, true))
            )
            .is_ok());
    }
}
