//! Per family product filter: only assets whose product exists in the PIM are synchronised.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::DamAsset;
use serde::Deserialize;
use serde_json::Value;

use crate::enrich::cache::ProductCache;

/// `[families.product_filter]`: where an asset's product identifier (SKU) is in its DAM record,
/// and which product attribute it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFilterConfig {
    /// JSON pointer to the SKU in the DAM record, e.g. `/metadata/sku`. A number is taken as
    /// its decimal text.
    pub sku_from: String,
    /// A regular expression applied to the value at `sku_from`: the SKU is its first capture
    /// group (or the whole match without a group), e.g. `^([A-Z]+-\d+)_` on a file name. No
    /// match: the asset has no SKU. Default: none (the value as it is).
    #[serde(default)]
    pub sku_regex: Option<String>,
    /// The product attribute the SKU is a value of; must be the PIM's product identifier
    /// attribute (`[akeneo] product_identifier_attribute`). Default: `sku`.
    #[serde(default = "d_attribute")]
    pub attribute: String,
    /// Seconds an answer of the PIM (product found or not) is reused. Default: 300.
    #[serde(default = "d_ttl")]
    pub cache_ttl_secs: u64,
    /// Most SKUs remembered. Default: 100000.
    #[serde(default = "d_cache_max")]
    pub cache_max: usize,
}

fn d_attribute() -> String {
    "sku".to_owned()
}
fn d_ttl() -> u64 {
    300
}
fn d_cache_max() -> usize {
    100_000
}

/// A compiled product filter, with its cache of product existence.
pub struct ProductFilter {
    config: ProductFilterConfig,
    pointer: String,
    regex: Option<regex::Regex>,
    cache: ProductCache,
    /// One look-up at a time: pages written concurrently do not ask about the same SKU twice
    /// (the second finds the first one's answers in the cache).
    asking: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ProductFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductFilter")
            .field("config", &self.config)
            .finish()
    }
}

impl ProductFilterConfig {
    /// Checks the pointer and the regular expression. Errors name the key (`sku_from`,
    /// `sku_regex`).
    pub fn compile(&self) -> Result<ProductFilter, (String, String)> {
        if !(self.sku_from.is_empty() || self.sku_from.starts_with('/')) {
            return Err((
                "sku_from".into(),
                format!(
                    "`{}` is not a JSON pointer (it starts with `/`, e.g. `/metadata/sku`)",
                    self.sku_from
                ),
            ));
        }
        let regex = match &self.sku_regex {
            None => None,
            Some(r) => Some(regex::Regex::new(r).map_err(|e| {
                (
                    "sku_regex".to_owned(),
                    format!("not a regular expression: {e}"),
                )
            })?),
        };
        if self.attribute.trim().is_empty() {
            return Err(("attribute".into(), "must not be empty".into()));
        }
        Ok(ProductFilter {
            config: self.clone(),
            pointer: self.sku_from.clone(),
            regex,
            cache: ProductCache::new(Duration::from_secs(self.cache_ttl_secs), self.cache_max),
            asking: tokio::sync::Mutex::new(()),
        })
    }
}

impl ProductFilter {
    pub fn config(&self) -> &ProductFilterConfig {
        &self.config
    }

    /// The SKU of an asset, if its record has one.
    pub fn sku(&self, asset: &DamAsset) -> Option<String> {
        let raw = match asset.record.pointer(&self.pointer)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let sku = match &self.regex {
            None => raw,
            Some(re) => {
                let c = re.captures(&raw)?;
                c.get(1).or_else(|| c.get(0))?.as_str().to_owned()
            }
        };
        let sku = sku.trim().to_owned();
        (!sku.is_empty()).then_some(sku)
    }

    /// Which of `skus` are products in the PIM: answers from the cache, the rest asked in one
    /// call of `ask` (which searches 100 identifiers per request). Returns the existing ones.
    pub(crate) async fn existing<F, Fut, E>(
        &self,
        skus: BTreeSet<String>,
        ask: F,
    ) -> Result<BTreeSet<String>, E>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, E>>,
    {
        let _one_at_a_time = self.asking.lock().await;
        let mut found = BTreeSet::new();
        let mut unknown = Vec::new();
        for s in skus {
            match self.cache.get(&s) {
                Some(Some(_)) => {
                    found.insert(s);
                }
                Some(None) => {}
                None => unknown.push(s),
            }
        }
        if !unknown.is_empty() {
            let present: BTreeSet<String> = ask(unknown.clone()).await?.into_iter().collect();
            let yes = Arc::new(Value::Bool(true));
            self.cache.put(unknown.into_iter().map(|s| {
                let hit = present.contains(&s);
                if hit {
                    found.insert(s.clone());
                }
                (s, hit.then(|| yes.clone()))
            }));
        }
        Ok(found)
    }
}

/// The product filters of the families that have one: family code → filter.
pub(crate) type ProductFilters = HashMap<String, Arc<ProductFilter>>;
