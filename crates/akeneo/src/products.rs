//! Products: search by identifiers or update date (`products-uuid`, `search_after`, 100 per page)
//! and NDJSON batch upsert with per-line results.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use futures::FutureExt;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::assets::{merge_parts, too_large, ItemFailure, ItemOutcome};
use crate::config::MAX_BATCH;
use crate::error::AkeneoError;
use crate::stats::inc;
use crate::AkeneoClient;

/// The content type of Akeneo's NDJSON collections.
pub const COLLECTION_CONTENT_TYPE: &str = "application/vnd.akeneo.collection+json";

/// Longest product line Akeneo reads (characters; checked here in bytes, which is stricter).
pub const MAX_LINE_LEN: usize = 1_000_000;

/// The result of one product line of [`AkeneoClient::upsert_products`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProductLineResult {
    /// The position of the line in the input slice (0-based).
    pub index: usize,
    /// The product's uuid, when the PIM (or the line) gave it.
    pub uuid: Option<String>,
    /// The product's identifier, when the PIM gave it (identifier endpoint).
    pub identifier: Option<String>,
    /// Created (201), updated (204) or failed with the PIM's per-line status and message.
    pub outcome: ItemOutcome,
}

#[derive(Deserialize)]
struct LineResult {
    #[serde(default)]
    line: Option<usize>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    identifier: Option<String>,
    status_code: u16,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<Value>,
}

fn outcome(status: u16, message: Option<String>, errors: Option<Value>) -> ItemOutcome {
    match status {
        201 => ItemOutcome::Created,
        200 | 204 => ItemOutcome::Updated,
        s => ItemOutcome::Failed(ItemFailure {
            status: s,
            message: message.unwrap_or_else(|| format!("HTTP {s}")),
            errors,
            permanent: !(s == 408 || s == 429 || s >= 500),
        }),
    }
}

/// A line that failed with its whole request (see [`merge_parts`]).
fn failed_line(index: usize, failure: ItemFailure) -> ProductLineResult {
    ProductLineResult {
        index,
        uuid: None,
        identifier: None,
        outcome: ItemOutcome::Failed(failure),
    }
}

fn local_failure(index: usize, line: &Value, status: u16, message: String) -> ProductLineResult {
    ProductLineResult {
        index,
        uuid: line.get("uuid").and_then(Value::as_str).map(str::to_owned),
        identifier: None,
        outcome: ItemOutcome::Failed(ItemFailure {
            status,
            message,
            errors: None,
            permanent: true,
        }),
    }
}

impl AkeneoClient {
    /// The products whose identifier attribute (`product_identifier_attribute`, default `sku`)
    /// is one of `identifiers`, as the PIM returns them (`GET /api/rest/v1/products-uuid`).
    ///
    /// Identifiers are searched 100 per request (`IN` filter), pages of 100 followed with
    /// `search_after`, several searches in flight within the concurrency cap. `attributes`
    /// restricts the returned values (the identifier attribute is always included). Duplicate
    /// identifiers are searched once; the order of the result is not the order of `identifiers`.
    pub async fn products_by_identifiers(
        &self,
        identifiers: &[String],
        attributes: Option<&[String]>,
    ) -> Result<Vec<Value>, AkeneoError> {
        let mut seen = HashSet::new();
        let ids: Vec<&String> = identifiers.iter().filter(|i| seen.insert(*i)).collect();
        let id_attr = self.inner.config.product_identifier_attribute.clone();
        let attributes = attributes.map(|a| {
            let mut list: Vec<String> = a.to_vec();
            if !list.contains(&id_attr) {
                list.push(id_attr.clone());
            }
            list.join(",")
        });
        let urls: Vec<(Url, usize)> = ids
            .chunks(MAX_BATCH)
            .map(|chunk| {
                let search = json!({ id_attr.as_str(): [{"operator": "IN", "value": chunk}] });
                (
                    self.products_url(&search, attributes.as_deref()),
                    chunk.len(),
                )
            })
            .collect();
        let pages: Vec<Vec<Value>> = stream::iter(urls)
            .map(|(url, n)| {
                // Identifiers are unique: n identifiers match at most n products, so a full
                // page needs no look at the (empty) next one.
                self.pages("search products", VecDeque::from([url]))
                    .take(n)
                    .try_collect::<Vec<Value>>()
            })
            .buffered(self.inner.config.max_concurrency)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Every product updated strictly after `since` (`updated` `>` filter, in the
    /// `YYYY-MM-DD hh:mm:ss` form the product API wants; UTC), page by page (100 per page,
    /// `search_after`) as the stream is read.
    pub fn products_updated_since(
        &self,
        since: DateTime<Utc>,
    ) -> impl Stream<Item = Result<Value, AkeneoError>> + Send + 'static {
        let search = json!({"updated": [{"operator": ">", "value": since.format("%Y-%m-%d %H:%M:%S").to_string()}]});
        let url = self.products_url(&search, None);
        self.pages("list products", VecDeque::from([url]))
    }

    /// A product attribute as the PIM describes it (`GET /api/rest/v1/attributes/{code}`:
    /// `type`, `localizable`, `scopable`, `reference_data_name`, ...), or `None` when there is
    /// no such attribute.
    pub async fn product_attribute(&self, code: &str) -> Result<Option<Value>, AkeneoError> {
        let url = self.inner.api_url(&["attributes", code]);
        let mut make = move |http: &reqwest::Client| {
            http.get(url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
        };
        let r = self
            .inner
            .execute(
                "get product attribute",
                true,
                self.inner.timeout(),
                &mut make,
            )
            .await?;
        match r.code() {
            200 => r.json().map(Some),
            404 => Ok(None),
            _ => Err(r.into_error()),
        }
    }

    /// Deletes the product `uuid` (`DELETE /api/rest/v1/products-uuid/{uuid}`). `Ok(false)` when
    /// there was no such product.
    pub async fn delete_product(&self, uuid: &str) -> Result<bool, AkeneoError> {
        let url = self.inner.api_url(&["products-uuid", uuid]);
        let mut make = move |http: &reqwest::Client| http.delete(url.clone());
        let r = self
            .inner
            .execute("delete product", true, self.inner.timeout(), &mut make)
            .await?;
        match r.code() {
            200 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(r.into_error()),
        }
    }

    fn products_url(&self, search: &Value, attributes: Option<&str>) -> Url {
        let mut url = self.inner.api_url(&["products-uuid"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("search", &search.to_string());
            q.append_pair("pagination_type", "search_after");
            q.append_pair("limit", &MAX_BATCH.to_string());
            if let Some(a) = attributes {
                q.append_pair("attributes", a);
            }
        }
        url
    }

    /// Creates or updates products with `PATCH /api/rest/v1/products-uuid` (lines keyed by
    /// `uuid`): NDJSON `application/vnd.akeneo.collection+json`, ≤ `batch_size` (100) lines per
    /// request; one result per line, in input order. `_links` is stripped from each line; a line
    /// that is not a JSON object or is longer than 1 000 000 bytes is refused without sending.
    /// A batch refused as too large (413, or SaaS's 403 that is not an ACL refusal) is split in
    /// half; a line too large on its own is that line's permanent failure. When some requests
    /// went through and others failed as a whole, the lines of the failed ones are reported
    /// `Failed` (the call fails only when no request went through, or on an auth error).
    pub async fn upsert_products(
        &self,
        lines: &[Value],
    ) -> Result<Vec<ProductLineResult>, AkeneoError> {
        self.upsert_product_lines("products-uuid", lines).await
    }

    /// Like [`upsert_products`](Self::upsert_products), on `PATCH /api/rest/v1/products` (lines
    /// keyed by `identifier`).
    pub async fn upsert_products_by_identifier(
        &self,
        lines: &[Value],
    ) -> Result<Vec<ProductLineResult>, AkeneoError> {
        self.upsert_product_lines("products", lines).await
    }

    async fn upsert_product_lines(
        &self,
        endpoint: &'static str,
        lines: &[Value],
    ) -> Result<Vec<ProductLineResult>, AkeneoError> {
        let mut results: Vec<Option<ProductLineResult>> = vec![None; lines.len()];
        let mut sendable: Vec<(usize, String)> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(obj) = line.as_object() else {
                results[i] = Some(local_failure(
                    i,
                    line,
                    422,
                    "a product line must be a JSON object".into(),
                ));
                continue;
            };
            let mut obj = obj.clone();
            obj.remove("_links");
            let text = Value::Object(obj).to_string();
            if text.len() > MAX_LINE_LEN {
                results[i] = Some(local_failure(
                    i,
                    line,
                    413,
                    format!(
                        "Line is too long ({} bytes, at most {MAX_LINE_LEN}).",
                        text.len()
                    ),
                ));
                continue;
            }
            sendable.push((i, text));
        }
        let batch = self.inner.config.batch_size.clamp(1, MAX_BATCH);
        let chunks: Vec<Vec<(usize, String)>> = sendable.chunks(batch).map(<[_]>::to_vec).collect();
        let parts: Vec<_> = stream::iter(chunks)
            .map(|chunk| async move {
                let items = chunk.iter().map(|(i, _)| *i).collect();
                (items, self.send_product_batch(endpoint, chunk).await)
            })
            .buffered(self.inner.config.max_concurrency)
            .collect()
            .await;
        for res in merge_parts(parts, failed_line)? {
            let i = res.index;
            results[i] = Some(res);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every line has a result"))
            .collect())
    }

    fn send_product_batch(
        &self,
        endpoint: &'static str,
        chunk: Vec<(usize, String)>,
    ) -> BoxFuture<'_, Result<Vec<ProductLineResult>, AkeneoError>> {
        async move {
            let body = bytes::Bytes::from(
                chunk
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            let url = self.inner.api_url(&[endpoint]);
            let mut make = move |http: &reqwest::Client| {
                http.patch(url.clone())
                    .header(CONTENT_TYPE, COLLECTION_CONTENT_TYPE)
                    .body(body.clone())
            };
            let r = self
                .inner
                .execute("upsert products", true, self.inner.timeout(), &mut make)
                .await?;
            if too_large(&r) {
                if chunk.len() == 1 {
                    let (message, errors) = r.message_and_errors();
                    return Ok(vec![failed_line(
                        chunk[0].0,
                        ItemFailure {
                            status: r.code(),
                            message: format!("too large to send, even alone: {message}"),
                            errors,
                            permanent: true,
                        },
                    )]);
                }
                inc(&self.inner.stats.batch_splits);
                let mid = chunk.len() / 2;
                let (a, b) = (chunk[..mid].to_vec(), chunk[mid..].to_vec());
                let items = |c: &[(usize, String)]| c.iter().map(|(i, _)| *i).collect();
                let parts_items: (Vec<usize>, Vec<usize>) = (items(&a), items(&b));
                let (ra, rb) = futures::join!(
                    self.send_product_batch(endpoint, a),
                    self.send_product_batch(endpoint, b)
                );
                return merge_parts(vec![(parts_items.0, ra), (parts_items.1, rb)], failed_line);
            }
            if r.code() != 200 {
                return Err(r.into_error());
            }
            let text = String::from_utf8_lossy(&r.body);
            let mut by_line: HashMap<usize, LineResult> = HashMap::new();
            for (n, l) in text
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .enumerate()
            {
                let parsed: LineResult = serde_json::from_str(l).map_err(|e| {
                    let l: String = l.chars().take(300).collect();
                    AkeneoError::unreadable_write_answer(
                        200,
                        format!("unreadable NDJSON result line ({e}): {l}"),
                    )
                })?;
                by_line.insert(parsed.line.unwrap_or(n + 1), parsed);
            }
            Ok(chunk
                .iter()
                .enumerate()
                .map(|(pos, (index, _))| match by_line.remove(&(pos + 1)) {
                    Some(lr) => ProductLineResult {
                        index: *index,
                        uuid: lr.uuid,
                        identifier: lr.identifier,
                        outcome: outcome(lr.status_code, lr.message, lr.errors),
                    },
                    None => ProductLineResult {
                        index: *index,
                        uuid: None,
                        identifier: None,
                        outcome: ItemOutcome::Failed(ItemFailure {
                            status: 502,
                            message: "the PIM's answer has no result for this line".into(),
                            errors: None,
                            permanent: false,
                        }),
                    },
                })
                .collect())
        }
        .boxed()
    }
}
