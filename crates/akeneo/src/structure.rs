//! Asset family structure: family, attributes and options, cached with a TTL; one fetch shared
//! by concurrent callers. Option creation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::validate::is_valid_code;
use assetbridge_core::{AssetAttribute, AttributeType, FamilyStructure};
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::AkeneoError;
use crate::stats::inc;
use crate::{AkeneoClient, Inner};

/// One family's cache entry; its lock is held while the structure is fetched, so concurrent
/// callers share one fetch.
#[derive(Default)]
pub(crate) struct Slot {
    cell: tokio::sync::Mutex<Option<(Arc<FamilyStructure>, Instant)>>,
}

impl AkeneoClient {
    /// The structure of asset family `family`: its attributes (type, value per locale/channel,
    /// media link prefix/suffix, media file limits, max characters, decimals, min/max) and the
    /// options of its option attributes.
    ///
    /// Cached for `structure_ttl_secs`; concurrent callers share one fetch. An unknown family is
    /// [`AkeneoError::Request`] with status 404.
    pub async fn family_structure(
        &self,
        family: &str,
    ) -> Result<Arc<FamilyStructure>, AkeneoError> {
        let slot = self
            .inner
            .structures
            .lock()
            .entry(family.to_owned())
            .or_default()
            .clone();
        let mut cell = slot.cell.lock().await;
        let ttl = Duration::from_secs(self.inner.config.structure_ttl_secs);
        if let Some((s, at)) = cell.as_ref() {
            if at.elapsed() < ttl {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(self.inner.fetch_structure(family).await?);
        *cell = Some((s.clone(), Instant::now()));
        Ok(s)
    }

    /// How long ago the cached structure of `family` was fetched (`None` when not cached).
    pub(crate) async fn structure_age(&self, family: &str) -> Option<Duration> {
        let slot = self.inner.structures.lock().get(family).cloned()?;
        let cell = slot.cell.lock().await;
        cell.as_ref().map(|(_, at)| at.elapsed())
    }

    /// Forgets the cached structure of `family`; the next use fetches it again.
    pub fn invalidate_structure(&self, family: &str) {
        self.inner.structures.lock().remove(family);
    }

    /// Makes sure the option codes `codes` exist for option attribute `attribute` of `family`,
    /// creating the missing ones (`PATCH .../options/{code}` with empty labels), at most
    /// `option_writes_per_second`. Refuses codes Akeneo would refuse (`^[a-zA-Z0-9_]+$`, ≤ 255).
    /// The structure cache of the family is refreshed when options were created.
    pub async fn ensure_options(
        &self,
        family: &str,
        attribute: &str,
        codes: &[String],
    ) -> Result<(), AkeneoError> {
        if codes.is_empty() {
            return Ok(());
        }
        if let Some(bad) = codes.iter().find(|c| !is_valid_code(c)) {
            return Err(AkeneoError::InvalidInput(format!(
                "option code `{bad}` is not valid for Akeneo (letters, digits, underscores; 1 to 255 characters)"
            )));
        }
        let structure = self.family_structure(family).await?;
        let attr = structure.attribute(attribute).ok_or_else(|| {
            AkeneoError::InvalidInput(format!(
                "attribute `{attribute}` does not exist in asset family `{family}`"
            ))
        })?;
        if !matches!(
            attr.kind,
            AttributeType::SingleOption | AttributeType::MultipleOptions
        ) {
            return Err(AkeneoError::InvalidInput(format!(
                "attribute `{attribute}` of asset family `{family}` is not an option attribute"
            )));
        }
        let missing_in = |s: &FamilyStructure| -> BTreeSet<String> {
            let known = s
                .attribute(attribute)
                .and_then(|a| a.options.clone())
                .unwrap_or_default();
            codes
                .iter()
                .filter(|c| !known.contains(*c))
                .cloned()
                .collect()
        };
        if missing_in(&structure).is_empty() {
            return Ok(());
        }
        // One creator at a time; whoever waited re-reads the cache, which now holds what the
        // previous holder created.
        let _creating = self.inner.option_writes.lock().await;
        let missing = missing_in(&*self.family_structure(family).await?);
        for code in missing {
            if let Err(e) = self.inner.create_option(family, attribute, &code).await {
                self.invalidate_structure(family);
                return Err(e);
            }
            self.add_cached_options(family, attribute, BTreeSet::from([code]))
                .await;
        }
        Ok(())
    }

    /// Adds option codes just created to the cached structure (no refetch: reads may lag).
    async fn add_cached_options(&self, family: &str, attribute: &str, codes: BTreeSet<String>) {
        let slot = self.inner.structures.lock().get(family).cloned();
        let Some(slot) = slot else { return };
        let mut cell = slot.cell.lock().await;
        if let Some((s, _)) = cell.as_mut() {
            let mut updated = (**s).clone();
            if let Some(a) = updated.attributes.get_mut(attribute) {
                a.options.get_or_insert_with(BTreeSet::new).extend(codes);
            }
            *s = Arc::new(updated);
        }
    }
}

impl Inner {
    async fn create_option(
        &self,
        family: &str,
        attribute: &str,
        code: &str,
    ) -> Result<(), AkeneoError> {
        let waited = self.option_bucket.acquire().await;
        crate::stats::Counters::add_wait(&self.stats.throttle_wait_us, waited);
        let url = self.api_url(&[
            "asset-families",
            family,
            "attributes",
            attribute,
            "options",
            code,
        ]);
        let body = bytes::Bytes::from(
            serde_json::to_vec(&json!({"code": code, "labels": {}})).expect("serialisable"),
        );
        let mut make = move |http: &reqwest::Client| {
            http.patch(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let r = self
            .execute(
                "create asset attribute option",
                true,
                self.timeout(),
                &mut make,
            )
            .await?;
        if r.status.is_success() {
            inc(&self.stats.options_created);
            tracing::info!(
                family,
                attribute,
                option = code,
                "created asset attribute option"
            );
            Ok(())
        } else {
            Err(r.into_error())
        }
    }

    async fn get_json(&self, op: &str, url: url::Url) -> Result<Value, AkeneoError> {
        let mut make = move |http: &reqwest::Client| {
            http.get(url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
        };
        let r = self.execute(op, true, self.timeout(), &mut make).await?;
        if r.code() == 200 {
            r.json()
        } else {
            Err(r.into_error())
        }
    }

    pub(crate) async fn fetch_structure(
        &self,
        family: &str,
    ) -> Result<FamilyStructure, AkeneoError> {
        inc(&self.stats.structure_fetches);
        let fam = self
            .get_json(
                "get asset family",
                self.api_url(&["asset-families", family]),
            )
            .await?;
        let attrs = self
            .get_json(
                "list asset attributes",
                self.api_url(&["asset-families", family, "attributes"]),
            )
            .await?;
        let attrs = attrs.as_array().ok_or_else(|| AkeneoError::Protocol {
            status: 200,
            message: "the attribute list is not a JSON array".into(),
        })?;
        let mut attributes: BTreeMap<String, AssetAttribute> = attrs
            .iter()
            .filter_map(parse_attribute)
            .map(|a| (a.code.clone(), a))
            .collect();
        let option_attrs: Vec<String> = attributes
            .values()
            .filter(|a| {
                matches!(
                    a.kind,
                    AttributeType::SingleOption | AttributeType::MultipleOptions
                )
            })
            .map(|a| a.code.clone())
            .collect();
        let concurrency = self.config.max_concurrency;
        let options: Vec<(String, BTreeSet<String>)> = stream::iter(option_attrs)
            .map(|code| async move {
                let url = self.api_url(&["asset-families", family, "attributes", &code, "options"]);
                let list = self.get_json("list asset attribute options", url).await?;
                let codes = list
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o.get("code").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok::<_, AkeneoError>((code, codes))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        for (code, opts) in options {
            if let Some(a) = attributes.get_mut(&code) {
                a.options = Some(opts);
            }
        }
        Ok(FamilyStructure {
            code: fam
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or(family)
                .to_owned(),
            attribute_as_main_media: fam
                .get("attribute_as_main_media")
                .and_then(Value::as_str)
                .map(str::to_owned),
            attributes,
        })
    }
}

fn string_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An attribute from the PIM's JSON, tolerant of nulls and of numbers sent as strings (or the
/// reverse). Items without a code are skipped.
pub(crate) fn parse_attribute(v: &Value) -> Option<AssetAttribute> {
    let code = v.get("code")?.as_str()?;
    let kind = v
        .get("type")
        .cloned()
        .and_then(|t| serde_json::from_value::<AttributeType>(t).ok())
        .unwrap_or(AttributeType::Unknown);
    let mut a = AssetAttribute::new(code, kind);
    let flag = |k: &str| v.get(k).and_then(Value::as_bool);
    a.value_per_locale = flag("value_per_locale").unwrap_or(false);
    a.value_per_channel = flag("value_per_channel").unwrap_or(false);
    a.max_characters = match v.get("max_characters") {
        Some(Value::Number(n)) => n.as_u64().map(|n| n.min(u32::MAX as u64) as u32),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    a.prefix = string_of(v.get("prefix"));
    a.suffix = string_of(v.get("suffix"));
    a.allowed_extensions = v
        .get("allowed_extensions")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect()
        });
    a.max_file_size = string_of(v.get("max_file_size"));
    a.decimals_allowed = flag("decimals_allowed");
    a.min_value = string_of(v.get("min_value"));
    a.max_value = string_of(v.get("max_value"));
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_leniently() {
        let a = parse_attribute(&json!({
            "code": "media_preview", "type": "media_link", "value_per_locale": false,
            "value_per_channel": true, "prefix": "dam.com/my_assets/", "suffix": null, "media_type": "image"
        }))
        .unwrap();
        assert_eq!(a.kind, AttributeType::MediaLink);
        assert!(a.value_per_channel && !a.value_per_locale);
        assert_eq!(a.prefix.as_deref(), Some("dam.com/my_assets/"));
        assert_eq!(a.suffix, None);
        let t = parse_attribute(&json!({"code": "w", "type": "text", "max_characters": 50,
            "is_textarea": false, "validation_rule": null}))
        .unwrap();
        assert_eq!(t.max_characters, Some(50));
        let n = parse_attribute(
            &json!({"code": "n", "type": "number", "decimals_allowed": false,
            "min_value": "1", "max_value": 10}),
        )
        .unwrap();
        assert_eq!(n.decimals_allowed, Some(false));
        assert_eq!(n.min_value.as_deref(), Some("1"));
        assert_eq!(n.max_value.as_deref(), Some("10"));
        let f = parse_attribute(
            &json!({"code": "f", "type": "media_file", "allowed_extensions": ["JPG", "png"],
            "max_file_size": "10.5"}),
        )
        .unwrap();
        assert_eq!(f.allowed_extensions, Some(vec!["jpg".into(), "png".into()]));
        assert_eq!(f.max_file_size.as_deref(), Some("10.5"));
        let u = parse_attribute(&json!({"code": "x", "type": "something_new"})).unwrap();
        assert_eq!(u.kind, AttributeType::Unknown);
        assert!(parse_attribute(&json!({"type": "text"})).is_none());
    }
}
