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

    /// The links of these products (absent: none recorded), keyed by the identifiers asked
    /// for. One store query.
    ///
    /// Links are stored under the identifier in lower case ([`link_key`]): enrichment learns an
    /// identifier from the asset (its file name, say `sku-1.jpg`) while the product poll knows
    /// the PIM's spelling (`SKU-1`), and the PIM matches identifiers without regard to case.
    /// Entries an earlier version stored under another spelling are read too (and moved under
    /// the lower-case key by the next [`apply`](Self::apply) that touches them).
    pub async fn get(
        &self,
        identifiers: &[String],
    ) -> Result<HashMap<String, LinkEntry>, StoreError> {
        let stored = self.read(identifiers.iter().map(String::as_str)).await?;
        Ok(identifiers
            .iter()
            .filter_map(|id| {
                let entry = stored.merged(&link_key(id))?;
                Some((id.clone(), entry))
            })
            .collect())
    }

    /// The stored entries of these identifiers, under their lower-case keys and under the
    /// spellings given.
    async fn read<'a>(
        &self,
        identifiers: impl Iterator<Item = &'a str>,
    ) -> Result<Stored, StoreError> {
        let mut asked: Vec<String> = Vec::new();
        for id in identifiers {
            let key = link_key(id);
            if key != id {
                asked.push(id.to_owned());
            }
            asked.push(key);
        }
        asked.sort();
        asked.dedup();
        if asked.is_empty() {
            return Ok(Stored::default());
        }
        let raw = self.store.asset_codes(LINKS_FAMILY, &asked).await?;
        let mut stored = Stored::default();
        for (id, text) in raw {
            let entry = serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(product = %id, error = %e, "unreadable enrichment links; starting them again");
                LinkEntry::default()
            });
            let key = link_key(&id);
            if key == id {
                stored.keyed.insert(key, entry);
            } else {
                stored.legacy.entry(key).or_default().push((id, entry));
            }
        }
        Ok(stored)
    }

    /// Applies edits: one read and at most one write (and one delete) for the whole set.
    pub async fn apply(&self, edits: Vec<LinkEdit>) -> Result<(), StoreError> {
        if edits.is_empty() {
            return Ok(());
        }
        let _serialised = self.lock.lock().await;
        let stored = self.read(edits.iter().map(LinkEdit::identifier)).await?;
        let mut after: HashMap<String, LinkEntry> = HashMap::new();
        for e in edits {
            let key = link_key(e.identifier());
            let entry = match after.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let merged = stored.merged(v.key());
                    v.insert(merged.unwrap_or_default())
                }
            };
            match e {
                LinkEdit::Add { asset, .. } => {
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
                LinkEdit::Remove { asset, .. } => {
                    entry.assets.retain(|a| *a != asset);
                }
                LinkEdit::Hash { hash, .. } => {
                    if !entry.assets.is_empty() {
                        entry.values_hash = Some(hash);
                    }
                }
            }
        }
        let mut write = Vec::new();
        let mut delete = Vec::new();
        for (key, mut entry) in after {
            // Folding other spellings in may have gone past the bound: the newest are kept.
            let over = entry.assets.len().saturating_sub(self.max_assets);
            entry.assets.drain(..over);
            // Other spellings of the key are folded into it: they go.
            let legacy = stored.legacy.get(&key);
            delete.extend(legacy.into_iter().flatten().map(|(id, _)| id.clone()));
            if entry.assets.is_empty() {
                if stored.keyed.contains_key(&key) {
                    delete.push(key);
                }
            } else if legacy.is_some() || stored.keyed.get(&key) != Some(&entry) {
                write.push((key, serde_json::to_string(&entry).expect("links serialise")));
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

/// The store key of a product's links: its identifier in lower case (see [`Links::get`]).
pub(crate) fn link_key(identifier: &str) -> String {
    identifier.to_lowercase()
}

/// Stored link entries: under their lower-case keys, and under other spellings (by key).
#[derive(Default)]
struct Stored {
    keyed: HashMap<String, LinkEntry>,
    legacy: HashMap<String, Vec<(String, LinkEntry)>>,
}

impl Stored {
    /// The entry of `key` with those stored under other spellings folded in (their assets
    /// after its own, within the bound at the next write), if any is stored.
    fn merged(&self, key: &str) -> Option<LinkEntry> {
        let legacy = self.legacy.get(key);
        let mut entry = match (self.keyed.get(key), legacy) {
            (None, None) => return None,
            (Some(e), _) => e.clone(),
            (None, Some(_)) => LinkEntry::default(),
        };
        let mut hashes_differ = false;
        for (_, other) in legacy.into_iter().flatten() {
            for a in &other.assets {
                if !entry.assets.contains(a) {
                    entry.assets.push(a.clone());
                }
            }
            match (&entry.values_hash, &other.values_hash) {
                (None, Some(_)) => entry.values_hash.clone_from(&other.values_hash),
                (Some(a), Some(b)) if a != b => hashes_differ = true,
                _ => {}
            }
        }
        if hashes_differ {
            // Some of these assets were sent other values: the next product change re-enriches
            // them all.
            entry.values_hash = None;
        }
        Some(entry)
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
        // Stored where the docs say: the DAM id → code map, reserved family, the identifier in
        // lower case.
        let raw = store
            .asset_codes(LINKS_FAMILY, &["p".to_owned()])
            .await
            .unwrap();
        assert!(raw["p"].contains("\"values_hash\":\"h1\""), "{}", raw["p"]);
    }

    /// Enrichment learns `sku-1` from a file name; the product poll asks for the PIM's `SKU-1`.
    /// Before: the links were stored under `sku-1` and the poll found none, so a product change
    /// never re-enriched the asset.
    #[tokio::test]
    async fn links_are_found_whatever_the_case_of_the_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let links = Links::new(store.clone(), 3);
        links
            .apply(vec![LinkEdit::Add {
                identifier: "sku-1".into(),
                asset: a("1"),
            }])
            .await
            .unwrap();
        let got = links.get(&["SKU-1".to_owned()]).await.unwrap();
        assert_eq!(got["SKU-1"].assets, vec![a("1")]);

        // An entry stored by an earlier version under the PIM's spelling is still read, merged
        // with the lower-case one, and moved under the lower-case key at the next edit.
        let legacy = LinkEntry {
            values_hash: Some("old".into()),
            assets: vec![a("2")],
        };
        store
            .put_asset_codes(
                LINKS_FAMILY,
                &[("Sku-1".to_owned(), serde_json::to_string(&legacy).unwrap())],
            )
            .await
            .unwrap();
        let ids = ["Sku-1".to_owned(), "SKU-1".to_owned()];
        let got = links.get(&ids).await.unwrap();
        assert_eq!(got["Sku-1"].assets, vec![a("1"), a("2")]);
        assert_eq!(got["Sku-1"], got["SKU-1"]);
        links
            .apply(vec![LinkEdit::Hash {
                identifier: "Sku-1".into(),
                hash: "h2".into(),
            }])
            .await
            .unwrap();
        let raw = store
            .asset_codes(LINKS_FAMILY, &["Sku-1".to_owned(), "sku-1".to_owned()])
            .await
            .unwrap();
        assert_eq!(raw.len(), 1, "{raw:?}");
        let moved: LinkEntry = serde_json::from_str(&raw["sku-1"]).unwrap();
        assert_eq!(moved.assets, vec![a("1"), a("2")]);
        assert_eq!(moved.values_hash.as_deref(), Some("h2"));
        // Removing the asset under any spelling removes it.
        links
            .apply(vec![
                LinkEdit::Remove {
                    identifier: "SKU-1".into(),
                    asset: a("1"),
                },
                LinkEdit::Remove {
                    identifier: "sku-1".into(),
                    asset: a("2"),
                },
            ])
            .await
            .unwrap();
        assert!(links.get(&ids).await.unwrap().is_empty());
    }
}
