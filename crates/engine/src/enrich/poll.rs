//! The PIM side of enrichment: products updated in Akeneo re-enrich the AEM assets linked to
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::{content_hash, Cursor, PimAsset, PimValue};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::links::LinkEdit;
use super::{bump, format, Enricher, EnrichmentError};

/// The reserved store key (a poll cursor "family") of the product poll's position: the `updated`
/// time and uuid of the newest product seen.
pub const PRODUCTS_CURSOR: &str = "__enrichment_products";

/// Products read per step (one link look-up and one enqueue per step).
const STEP: usize = 100;
/// Re-enrichment changes written to the inbox per enqueue call.
const ENQUEUE_CHUNK: usize = 500;

/// What one product poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProductPollReport {
    /// The first poll: no cursor was stored, so it was set to now (products changed before
    /// are not looked at; their assets are enriched at their next event).
    pub started: bool,
    /// Products the PIM returned as updated.
    pub products: u64,
    /// Of those, products linked to assets whose enrichment values changed.
    pub changed: u64,
    /// Re-enrichment changes written to the inbox (one per linked asset).
    pub enqueued: u64,
}

impl Enricher {
    /// A hash of the values `product` gives the configured fields.
    fn values_hash(&self, product: &Value) -> String {
        let mut values = BTreeMap::new();
        for rule in &self.config.fields {
            let data = format::field_value(
                rule,
                product,
                &self.identifier_attribute,
                self.config.locale.as_deref(),
                self.config.scope.as_deref(),
            )
            .unwrap_or(Value::Null);
            values.insert(
                rule.target.clone(),
                vec![PimValue {
                    locale: None,
                    channel: None,
                    data,
                }],
            );
        }
        content_hash(&PimAsset {
            code: String::new(),
            values,
        })
        .0
    }

    /// One poll of the PIM side: reads the products updated since the stored cursor (going
    /// back `overlap_secs`), and for each product linked to assets whose enrichment values
    /// differ from the ones last sent, writes one re-enrichment change per linked asset to the
    /// inbox (durably; the workers do the rest, with the usual retries). The cursor moves only
    /// after the whole pass, to the newest product seen. The first poll only stores "now".
    pub async fn poll_products_once(&self) -> Result<ProductPollReport, EnrichmentError> {
        let mut report = ProductPollReport::default();
        let overlap = chrono::Duration::seconds(self.config.product_poll.overlap_secs as i64);
        let Some(cursor) = self.store.cursor(PRODUCTS_CURSOR).await? else {
            let start = Cursor {
                updated_at: Utc::now() - overlap,
                dam_id: String::new(),
            };
            self.store.set_cursor(PRODUCTS_CURSOR, &start).await?;
            info!(since = %start.updated_at, "product poll started: products changed from now on re-enrich their assets");
            report.started = true;
            return Ok(report);
        };
        let mut newest = cursor.clone();
        let pages = self
            .pim
            .products_updated_since(cursor.since(overlap))
            .chunks(STEP);
        let mut pages = std::pin::pin!(pages);
        while let Some(step) = pages.next().await {
            let mut products = Vec::with_capacity(step.len());
            for p in step {
                products.push(p?);
            }
            report.products += products.len() as u64;
            let mut hashes: BTreeMap<String, String> = BTreeMap::new();
            let mut fresh = Vec::with_capacity(products.len());
            for p in products {
                if let (Some(updated), Some(uuid)) = (
                    p.get("updated")
                        .and_then(Value::as_str)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                    p.get("uuid").and_then(Value::as_str),
                ) {
                    let c = Cursor {
                        updated_at: updated.with_timezone(&Utc),
                        dam_id: uuid.to_owned(),
                    };
                    if c > newest {
                        newest = c;
                    }
                }
                let Some(id) = format::product_identifier(&p, &self.identifier_attribute) else {
                    continue;
                };
                hashes.insert(id.clone(), self.values_hash(&p));
                fresh.push((id, Some(Arc::new(p))));
            }
            // What enrichment reads next for these products is this fresh copy.
            self.cache.put(fresh);
            let ids: Vec<String> = hashes.keys().cloned().collect();
            let links = self.links.get(&ids).await?;
            let mut changes = Vec::new();
            let mut edits = Vec::new();
            for (id, entry) in links {
                let hash = &hashes[&id];
                if entry.values_hash.as_ref() == Some(hash) {
                    debug!(product = %id, "product updated, enrichment values unchanged");
                    continue;
                }
                report.changed += 1;
                for (host, asset) in &entry.assets {
                    changes.push(self.reenrich_change(host, asset, Some(&id)));
                }
                edits.push(LinkEdit::Hash {
                    identifier: id,
                    hash: hash.clone(),
                });
            }
            for chunk in changes.chunks(ENQUEUE_CHUNK) {
                self.store.enqueue(chunk).await?;
                report.enqueued += chunk.len() as u64;
                bump(&self.counters.reenrich_enqueued, chunk.len() as u64);
            }
            // Only after the re-enrichments are durable in the inbox.
            self.links.apply(edits).await?;
        }
        if newest > cursor {
            self.store.set_cursor(PRODUCTS_CURSOR, &newest).await?;
        }
        Ok(report)
    }

    /// Polls the PIM side every `product_poll.interval_secs` until `shutdown` is cancelled (one
    /// instance at a time: the poll takes the store's lock of [`PRODUCTS_CURSOR`]). Returns at
    /// once when `product_poll.enabled` is false.
    pub async fn run_product_poll(&self, shutdown: CancellationToken) {
        if !self.config.product_poll.enabled {
            return;
        }
        let interval = Duration::from_secs(self.config.product_poll.interval_secs.max(1));
        info!(
            interval_secs = interval.as_secs(),
            "enrichment product poll running"
        );
        while !shutdown.is_cancelled() {
            match self.store.try_lock_family(PRODUCTS_CURSOR).await {
                Ok(Some(lock)) => {
                    match self.poll_products_once().await {
                        Ok(r) if r.products > 0 || r.started => info!(
                            products = r.products,
                            changed = r.changed,
                            enqueued = r.enqueued,
                            "product poll done"
                        ),
                        Ok(_) => debug!("product poll: no product updated"),
                        Err(e) => {
                            warn!(error = %e, "product poll failed; the cursor stays where it was")
                        }
                    }
                    drop(lock);
                }
                Ok(None) => debug!("another instance polls the products; skipping this round"),
                Err(e) => warn!(error = %e, "cannot take the product poll lock"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
