//! Which AEM assets were enriched from which product — so a product change in the PIM
//! re-enriches them.
//!
//! Kept in the store's DAM id → code map under the reserved family [`LINKS_FAMILY`]: the "DAM
//! id" is the product identifier, the "code" a small JSON document
//! `{"values_hash": "...", "assets": [["<author host>", "<asset id>"], ...]}` (at most
//! `max_assets_per_product` assets, newest last). The store has no table of its own for this
//! yet; this layout needs no schema change. Updates are serialised within the process; two
//! processes updating the same product at once may lose one link (the asset is then linked
//! again at its next event).

use std::collections::HashMap;

use assetbridge_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// The reserved store family holding product → asset links.
pub const LINKS_FAMILY: &str = "__enrichment_links";

/// One linked asset: (author host, asset id).
pub(crate) type AssetRef = (String, String);

/// The links of one product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LinkEntry {
    /// Hash of the product's enrichment values last sent to its assets by the product poll.
    #[serde(default)]
    pub values_hash: Option<String>,
    /// The linked assets, oldest first.
    #[serde(default)]
    pub assets: Vec<AssetRef>,
}

pub(crate) struct Links {
    store: Store,
    max_assets: usize,
    lock: tokio::sync::Mutex<()>,
}

/// A change to the links: add or remove `asset` for product `identifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkEdit {
    Add { identifier: String, asset: AssetRef },
    Remove { identifier: String, asset: AssetRef },
    Hash { identifier: String, hash: String },
}

impl LinkEdit {
    fn identifier(&self) -> &str {
        match self {
            LinkEdit::Add { identifier, .. }
            | LinkEdit::Remove { identifier, .. }
            | LinkEdit::Hash { identifier, .. } => identifier,
        }
    }
}

impl Links {
    pub fn new(store: Store, max_assets: usize) -> Self {
        Self {
            store,
            max_assets: max_assets.max(1),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The links of these products (absent: none recorded). One store query.
    pub async fn get(
        &self,
        identifiers: &[String],
    ) -> Result<HashMap<String, LinkEntry>, StoreError> {
        if identifiers.is_empty() {
            return Ok(HashMap::new());
        }
        let raw = self.store.asset_codes(LINKS_FAMILY, identifiers).await?;
        Ok(raw
            .into_iter()
            .map(|(id, text)| {
                let entry = serde_json::from_str(&text).unwrap_or_else(|e| {
                    tracing::warn!(product = %id, error = %e, "unreadable enrichment links; starting them again");
                    LinkEntry::default()
                });
                (id, entry)
            })
            .collect())
    }

    /// Applies edits: one read and at most one write (and one delete) for the whole set.
    pub async fn apply(&self, edits: Vec<LinkEdit>) -> Result<(), StoreError> {
        if edits.is_empty() {
            return Ok(());
        }
        let _serialised = self.lock.lock().await;
        let mut ids: Vec<String> = edits.iter().map(|e| e.identifier().to_owned()).collect();
        ids.sort();
        ids.dedup();
        let before = self.get(&ids).await?;
        let mut after = before.clone();
        for e in edits {
            match e {
                LinkEdit::Add { identifier, asset } => {
                    let entry = after.entry(identifier).or_default();
                    if let Some(i) = entry.assets.iter().position(|a| *a == asset) {
                        if i + 1 == entry.assets.len() {
                            continue;
                        }
                        // Newest last: a re-linked asset moves to the end only if the list is
                        // full (so that a bounded list keeps recently used links).
                        if entry.assets.len() < self.max_assets {
                            continue;
                        }
                        entry.assets.remove(i);
                    }
                    entry.assets.push(asset);
                    let over = entry.assets.len().saturating_sub(self.max_assets);
                    entry.assets.drain(..over);
                }
                LinkEdit::Remove { identifier, asset } => {
                    if let Some(entry) = after.get_mut(&identifier) {
                        entry.assets.retain(|a| *a != asset);
                    }
                }
                LinkEdit::Hash { identifier, hash } => {
                    if let Some(entry) = after.get_mut(&identifier) {
                        entry.values_hash = Some(hash);
                    }
                }
            }
        }
        let mut write = Vec::new();
        let mut delete = Vec::new();
        for (id, entry) in after {
            if entry.assets.is_empty() {
                if before.contains_key(&id) {
                    delete.push(id);
                }
            } else if before.get(&id) != Some(&entry) {
                write.push((id, serde_json::to_string(&entry).expect("links serialise")));
            }
        }
        if !write.is_empty() {
            self.store.put_asset_codes(LINKS_FAMILY, &write).await?;
        }
        if !delete.is_empty() {
            self.store.remove_asset_codes(LINKS_FAMILY, &delete).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: &str) -> AssetRef {
        ("author-p1-e2.adobeaemcloud.com".to_owned(), id.to_owned())
    }

    #[tokio::test]
    async fn links_are_bounded_merged_and_dropped_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let links = Links::new(store.clone(), 2);
        let add = |p: &str, id: &str| LinkEdit::Add {
            identifier: p.to_owned(),
            asset: a(id),
        };
        links
            .apply(vec![
                add("P", "1"),
                add("P", "2"),
                add("P", "1"),
                add("Q", "9"),
            ])
            .await
            .unwrap();
        let got = links.get(&["P".to_owned(), "Q".to_owned()]).await.unwrap();
        assert_eq!(
            got["P"].assets,
            vec![a("2"), a("1")],
            "no duplicates; in a full list a re-linked asset becomes the newest"
        );
        links.apply(vec![add("P", "3")]).await.unwrap();
        let got = links.get(&["P".to_owned()]).await.unwrap();
        assert_eq!(
            got["P"].assets,
            vec![a("1"), a("3")],
            "bounded: the newest kept"
        );

        links
            .apply(vec![LinkEdit::Hash {
                identifier: "P".into(),
                hash: "h1".into(),
            }])
            .await
            .unwrap();
        assert_eq!(
            links.get(&["P".to_owned()]).await.unwrap()["P"]
                .values_hash
                .as_deref(),
            Some("h1")
        );
        let remove = |p: &str, id: &str| LinkEdit::Remove {
            identifier: p.to_owned(),
            asset: a(id),
        };
        links.apply(vec![remove("Q", "9")]).await.unwrap();
        assert!(
            links.get(&["Q".to_owned()]).await.unwrap().is_empty(),
            "empty → gone"
        );
        // Stored where the docs say: the DAM id → code map, reserved family.
        let raw = store
            .asset_codes(LINKS_FAMILY, &["P".to_owned()])
            .await
            .unwrap();
        assert!(raw["P"].contains("\"values_hash\":\"h1\""), "{}", raw["P"]);
    }
}
