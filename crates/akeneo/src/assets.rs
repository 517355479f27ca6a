//! Asset Manager assets: batch upsert with per-item results, list, get, delete.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use assetbridge_core::validate::{is_valid_code, validate_asset, ValueViolation, ViolationKind};
use assetbridge_core::PimAsset;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, Stream, StreamExt};
use futures::FutureExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::config::MAX_BATCH;
use crate::error::AkeneoError;
use crate::stats::inc;
use crate::transport::RawResponse;
use crate::AkeneoClient;

/// The result of one asset of an upsert, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    /// The asset code, as given.
    pub code: String,
    pub outcome: ItemOutcome,
}

impl ItemResult {
    /// Whether the PIM holds the asset as sent (created or updated).
    pub fn is_success(&self) -> bool {
        !matches!(self.outcome, ItemOutcome::Failed(_))
    }
}

/// What happened to one asset (or product line).
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// 201: the PIM created it.
    Created,
    /// 204: the PIM updated it.
    Updated,
    /// Refused, by the PIM or by the client's own checks before sending.
    Failed(ItemFailure),
}

/// Why one item failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFailure {
    /// The item's status: the PIM's per-item `status_code` (422 for validation), or 422 for an
    /// asset the client refused before sending, 413 for an item too large to send on its own.
    pub status: u16,
    /// The PIM's message (or the client's reason, naming attribute, locale and channel).
    pub message: String,
    /// The PIM's `errors` array when it gave one; for assets refused before sending, the list of
    /// violations `[{attribute, locale, channel, kind, message}]`.
    pub errors: Option<Value>,
    /// `true` when sending the same data again cannot succeed (fix the data or the PIM
    /// structure); `false` for a per-item transient status (5xx, 429).
    pub permanent: bool,
}

/// What `delete_asset` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// 204: the asset was deleted.
    Deleted,
    /// 404: there was no such asset (nothing to do).
    NotFound,
}

/// Filters of [`AkeneoClient::list_assets`]. All empty = every asset of the family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssetQuery {
    /// Only assets updated strictly after this moment (`updated` `>` filter, ISO 8601).
    pub updated_since: Option<DateTime<Utc>>,
    /// Only these asset codes (`code` `IN` filter; sent 100 codes per search).
    pub codes: Option<Vec<String>>,
    /// Only the values of this channel (plus non-scopable values).
    pub channel: Option<String>,
    /// Only the values of these locales (plus non-localizable values).
    pub locales: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default)]
    code: Value,
    status_code: u16,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<Value>,
}

fn item_outcome(status: u16, message: Option<String>, errors: Option<Value>) -> ItemOutcome {
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

/// Whether a per-item refusal says the family structure changed under us (attribute or option
/// unknown to the PIM, while our cached structure knew it).
fn shows_structure_drift(f: &ItemFailure) -> bool {
    if f.status != 422 {
        return false;
    }
    let mut texts = vec![f.message.to_lowercase()];
    if let Some(Value::Array(errs)) = &f.errors {
        texts.extend(
            errs.iter()
                .filter_map(|e| e.get("message").and_then(Value::as_str))
                .map(str::to_lowercase),
        );
    }
    texts.iter().any(|t| {
        (t.contains("attribute") || t.contains("option"))
            && (t.contains("does not exist")
                || t.contains("not exist")
                || t.contains("unknown")
                || t.contains("not in the"))
    })
}

fn violations_failure(violations: &[ValueViolation]) -> ItemFailure {
    let message = format!(
        "refused before sending: {}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    ItemFailure {
        status: 422,
        message,
        errors: serde_json::to_value(violations).ok(),
        permanent: true,
    }
}

/// The room a batch body reserves per asset before it is written: a DAM asset's mapped values
/// (a media link, titles, a description, tags, a few numbers) with their keys.
const BODY_BYTES_PER_ASSET: usize = 1024;

/// One request of a call: the items it carried, and its answer.
pub(crate) type Part<T> = (Vec<usize>, Result<Vec<T>, AkeneoError>);

/// Merges the answers of the requests one call was sent as (batches, halves of a split batch),
/// `(items of the request, its answer)` each: when some went through and others failed as a
/// whole, the failed ones become a failure of each of their items (built by `fail`), so the
/// written items keep their results and only the others are retried (or dead-lettered). When
/// every request failed, the call fails with the first error; an authentication or
/// configuration error always fails the call.
pub(crate) fn merge_parts<T>(
    parts: Vec<Part<T>>,
    fail: impl Fn(usize, ItemFailure) -> T,
) -> Result<Vec<T>, AkeneoError> {
    let call_error =
        |e: &AkeneoError| matches!(e, AkeneoError::Auth { .. } | AkeneoError::InvalidConfig(_));
    let all_failed = parts.iter().all(|(_, r)| r.is_err());
    if all_failed || parts.iter().any(|(_, r)| r.as_ref().is_err_and(call_error)) {
        let mut first = None;
        for (_, r) in parts {
            if let Err(e) = r {
                if call_error(&e) {
                    return Err(e);
                }
                first.get_or_insert(e);
            }
        }
        return match first {
            Some(e) => Err(e),
            None => Ok(Vec::new()),
        };
    }
    let mut out = Vec::new();
    for (items, r) in parts {
        match r {
            Ok(results) => out.extend(results),
            Err(e) => {
                let failure = ItemFailure {
                    status: e.status().unwrap_or(502),
                    message: e.to_string(),
                    errors: match &e {
                        AkeneoError::Request { errors, .. } => errors.clone(),
                        _ => None,
                    },
                    permanent: !e.is_transient(),
                };
                out.extend(items.into_iter().map(|i| fail(i, failure.clone())));
            }
        }
    }
    Ok(out)
}

/// Whether the request was refused as too large (413, or SaaS's 403 that is not an ACL refusal).
pub(crate) fn too_large(r: &RawResponse) -> bool {
    match r.code() {
        413 => true,
        403 => {
            let (m, _) = r.message_and_errors();
            let m = m.to_lowercase();
            !(m.contains("access forbidden") || m.contains("not allowed"))
        }
        _ => false,
    }
}

impl AkeneoClient {
    /// Creates or updates `assets` in asset family `family`; one result per asset, in input
    /// order.
    ///
    /// Each asset is first checked against the family structure
    /// ([`assetbridge_core::validate::validate_asset`]); one that does not fit is
    /// not sent and is reported `Failed { status: 422, permanent: true }` with the reasons — except
    /// when its only problems are unknown options of attributes listed in
    /// `create_missing_options`: those options are created first. The others are sent in
    /// batches of ≤ `batch_size` (100), several batches in flight within the concurrency cap. A
    /// batch refused as too large (413, or a 403 that is not an ACL refusal) is split in half and
    /// each half sent again. Per-item refusals are reported with the PIM's message and `errors`;
    /// a refusal that shows the structure changed (unknown attribute/option) drops the cached
    /// structure.
    ///
    /// Errors: a whole-request failure that persists after the retries (transient, auth, unknown
    /// family, ...) when no request of the call went through (or any authentication failure).
    /// When some batches (or halves of a split batch) were written and others failed as a
    /// whole, the assets of the failed ones are reported `Failed` (`permanent: false` for a
    /// transient failure) and the written ones keep their results. Upserts are idempotent, so
    /// sending the same assets again is harmless.
    /// Codes should be unique in one call (with duplicates, batches are sent one at a time so
    /// the last one wins).
    pub async fn upsert_assets(
        &self,
        family: &str,
        assets: &[PimAsset],
    ) -> Result<Vec<ItemResult>, AkeneoError> {
        if assets.is_empty() {
            return Ok(Vec::new());
        }
        let mut structure = self.family_structure(family).await?;
        let mut violations: Vec<Vec<ValueViolation>> = assets
            .iter()
            .map(|a| validate_asset(a, &structure))
            .collect();
        // Unknown attribute or option with a structure that is not fresh: the family may have
        // changed in the PIM; look again before refusing.
        let unknown = violations.iter().flatten().any(|v| {
            matches!(
                v.kind,
                ViolationKind::UnknownAttribute | ViolationKind::UnknownOption { .. }
            )
        });
        if unknown {
            let recheck = Duration::from_secs(self.inner.config.structure_recheck_secs);
            if self
                .structure_age(family)
                .await
                .is_some_and(|age| age >= recheck)
            {
                tracing::debug!(
                    family,
                    "unknown attribute or option; fetching the structure again"
                );
                self.invalidate_structure(family);
                structure = self.family_structure(family).await?;
                violations = assets
                    .iter()
                    .map(|a| validate_asset(a, &structure))
                    .collect();
            }
        }
        let mut refused: HashMap<usize, ItemFailure> = HashMap::new();

        // Unknown options we may create: only when they are the asset's only problems.
        let mut to_create: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut waiting_for_options = Vec::new();
        for (i, vs) in violations.iter().enumerate() {
            let creatable = !vs.is_empty()
                && vs.iter().all(|v| match &v.kind {
                    ViolationKind::UnknownOption { option } => {
                        self.inner.config.creates_options_for(&v.attribute) && is_valid_code(option)
                    }
                    _ => false,
                });
            if creatable {
                waiting_for_options.push(i);
                for v in vs {
                    if let ViolationKind::UnknownOption { option } = &v.kind {
                        to_create
                            .entry(v.attribute.clone())
                            .or_default()
                            .insert(option.clone());
                    }
                }
            }
        }
        if !to_create.is_empty() {
            let mut failed_attrs: HashMap<String, AkeneoError> = HashMap::new();
            for (attribute, codes) in &to_create {
                let codes: Vec<String> = codes.iter().cloned().collect();
                match self.ensure_options(family, attribute, &codes).await {
                    Ok(()) => {}
                    Err(e) if e.is_transient() || matches!(e, AkeneoError::Auth { .. }) => {
                        return Err(e)
                    }
                    Err(e) => {
                        failed_attrs.insert(attribute.clone(), e);
                    }
                }
            }
            structure = self.family_structure(family).await?;
            for &i in &waiting_for_options {
                if let Some((attr, e)) = violations[i]
                    .iter()
                    .find_map(|v| failed_attrs.get_key_value(&v.attribute))
                {
                    refused.insert(
                        i,
                        ItemFailure {
                            status: e.status().unwrap_or(422),
                            message: format!("creating missing options of `{attr}` failed: {e}"),
                            errors: None,
                            permanent: true,
                        },
                    );
                } else {
                    violations[i] = validate_asset(&assets[i], &structure);
                }
            }
        }
        for (i, vs) in violations.iter().enumerate() {
            if !vs.is_empty() && !refused.contains_key(&i) {
                refused.insert(i, violations_failure(vs));
            }
        }
        for (i, f) in &refused {
            tracing::debug!(family, code = %assets[*i].code, reason = %f.message, "asset refused before sending");
        }

        let sendable: Vec<usize> = (0..assets.len())
            .filter(|i| !refused.contains_key(i))
            .collect();
        let mut results: Vec<Option<ItemResult>> = vec![None; assets.len()];
        for (i, f) in refused {
            results[i] = Some(ItemResult {
                code: assets[i].code.clone(),
                outcome: ItemOutcome::Failed(f),
            });
        }
        let unique = {
            let mut seen = HashSet::new();
            sendable
                .iter()
                .all(|&i| seen.insert(assets[i].code.as_str()))
        };
        let in_flight = if unique {
            self.inner.config.max_concurrency
        } else {
            1
        };
        let batch = self.inner.config.batch_size.clamp(1, MAX_BATCH);
        let chunks: Vec<Vec<usize>> = sendable.chunks(batch).map(<[usize]>::to_vec).collect();
        let parts: Vec<_> = stream::iter(chunks)
            .map(|chunk| async move {
                let r = self.send_asset_batch(family, assets, chunk.clone()).await;
                (chunk, r)
            })
            .buffered(in_flight)
            .collect()
            .await;
        let sent = merge_parts(parts, |i, f| (i, ItemOutcome::Failed(f)))?;
        let mut drift = false;
        for (i, outcome) in sent {
            if let ItemOutcome::Failed(f) = &outcome {
                drift |= shows_structure_drift(f);
            }
            results[i] = Some(ItemResult {
                code: assets[i].code.clone(),
                outcome,
            });
        }
        if drift {
            tracing::info!(
                family,
                "per-item refusals show the asset family changed; dropping the cached structure"
            );
            self.invalidate_structure(family);
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every asset has a result"))
            .collect())
    }

    /// One batch PATCH (split in halves when refused as too large).
    fn send_asset_batch<'a>(
        &'a self,
        family: &'a str,
        assets: &'a [PimAsset],
        idx: Vec<usize>,
    ) -> BoxFuture<'a, Result<Vec<(usize, ItemOutcome)>, AkeneoError>> {
        async move {
            // Sized for a typical asset up front: grown from empty, the buffer of a batch of
            // 100 was copied ten times over (≈ 1 % of the connector's instructions). Written
            // by `assetbridge_core::json`: serde_json's bytes, with strings escaped a word at a
            // time.
            let mut buf = Vec::with_capacity(idx.len() * BODY_BYTES_PER_ASSET);
            assetbridge_core::json::write_assets(&mut buf, idx.iter().map(|&i| &assets[i]));
            let body = bytes::Bytes::from(buf);
            let url = self.inner.api_url(&["asset-families", family, "assets"]);
            let mut make = move |http: &reqwest::Client| {
                http.patch(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            };
            let r = self
                .inner
                .execute("upsert assets", true, self.inner.timeout(), &mut make)
                .await?;
            if r.code() == 200 {
                return self.read_batch_results(family, assets, &idx, &r);
            }
            if too_large(&r) {
                let (message, errors) = r.message_and_errors();
                if idx.len() == 1 {
                    return Ok(vec![(
                        idx[0],
                        ItemOutcome::Failed(ItemFailure {
                            status: r.code(),
                            message: format!("too large to send, even alone: {message}"),
                            errors,
                            permanent: true,
                        }),
                    )]);
                }
                inc(&self.inner.stats.batch_splits);
                tracing::info!(
                    family,
                    size = idx.len(),
                    status = r.code(),
                    "batch refused as too large; splitting it"
                );
                let (a, b) = idx.split_at(idx.len() / 2);
                let (ra, rb) = futures::join!(
                    self.send_asset_batch(family, assets, a.to_vec()),
                    self.send_asset_batch(family, assets, b.to_vec())
                );
                return merge_parts(vec![(a.to_vec(), ra), (b.to_vec(), rb)], |i, f| {
                    (i, ItemOutcome::Failed(f))
                });
            }
            Err(r.into_error())
        }
        .boxed()
    }

    fn read_batch_results(
        &self,
        family: &str,
        assets: &[PimAsset],
        idx: &[usize],
        r: &RawResponse,
    ) -> Result<Vec<(usize, ItemOutcome)>, AkeneoError> {
        let items: Vec<BatchItem> = r.json().map_err(|e| match e {
            AkeneoError::Protocol { status, message } => {
                AkeneoError::unreadable_write_answer(status, message)
            }
            other => other,
        })?;
        let code_of = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let in_order = items.len() == idx.len()
            && items
                .iter()
                .zip(idx)
                .all(|(it, &i)| code_of(&it.code) == assets[i].code);
        let mut out = Vec::with_capacity(idx.len());
        if in_order {
            for (it, &i) in items.into_iter().zip(idx) {
                out.push((i, item_outcome(it.status_code, it.message, it.errors)));
            }
            return Ok(out);
        }
        // Not one result per asset in order: match by code.
        let mut by_code: HashMap<String, VecDeque<BatchItem>> = HashMap::new();
        for it in items {
            by_code.entry(code_of(&it.code)).or_default().push_back(it);
        }
        for &i in idx {
            let outcome = match by_code
                .get_mut(&assets[i].code)
                .and_then(VecDeque::pop_front)
            {
                Some(it) => item_outcome(it.status_code, it.message, it.errors),
                None => {
                    tracing::warn!(family, code = %assets[i].code, "no result for this asset in the PIM's batch answer");
                    ItemOutcome::Failed(ItemFailure {
                        status: 502,
                        message: "the PIM's batch answer has no result for this asset".into(),
                        errors: None,
                        permanent: false,
                    })
                }
            };
            out.push((i, outcome));
        }
        Ok(out)
    }

    /// Deletes asset `code` of `family`: `Deleted` (204) or `NotFound` (404 for the asset). An
    /// unknown family is an error (404 `Asset family "x" does not exist.`).
    pub async fn delete_asset(
        &self,
        family: &str,
        code: &str,
    ) -> Result<DeleteOutcome, AkeneoError> {
        let url = self
            .inner
            .api_url(&["asset-families", family, "assets", code]);
        let mut make = move |http: &reqwest::Client| http.delete(url.clone());
        let r = self
            .inner
            .execute("delete asset", true, self.inner.timeout(), &mut make)
            .await?;
        match r.code() {
            200 | 204 => Ok(DeleteOutcome::Deleted),
            404 if !family_missing(&r) => Ok(DeleteOutcome::NotFound),
            _ => Err(r.into_error()),
        }
    }

    /// One asset as the PIM returns it (values with read-only extras such as `_links`,
    /// `linked_data`), or `None` when the family has no such asset. An unknown family is an
    /// error.
    pub async fn get_asset(&self, family: &str, code: &str) -> Result<Option<Value>, AkeneoError> {
        let url = self
            .inner
            .api_url(&["asset-families", family, "assets", code]);
        let mut make =
            move |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        let r = self
            .inner
            .execute("get asset", true, self.inner.timeout(), &mut make)
            .await?;
        match r.code() {
            200 => r.json().map(Some),
            404 if !family_missing(&r) => Ok(None),
            _ => Err(r.into_error()),
        }
    }

    /// The assets of `family` matching `query`, as the PIM returns them (JSON objects with
    /// `code`, `values`, `created`, `updated`; use [`to_pim_asset`] for the writable part).
    ///
    /// Pages (100 assets each) are fetched one at a time as the stream is read, following
    /// `_links.next` (`search_after`); nothing more than one page is held in memory. An error
    /// ends the stream after being yielded.
    pub fn list_assets(
        &self,
        family: &str,
        query: AssetQuery,
    ) -> impl Stream<Item = Result<Value, AkeneoError>> + Send + 'static {
        let base = self.inner.api_url(&["asset-families", family, "assets"]);
        let mut firsts = VecDeque::new();
        let code_chunks: Vec<Option<&[String]>> = match &query.codes {
            Some(codes) if codes.is_empty() => Vec::new(),
            Some(codes) => codes.chunks(MAX_BATCH).map(Some).collect(),
            None => vec![None],
        };
        for codes in code_chunks {
            let mut search = serde_json::Map::new();
            if let Some(since) = query.updated_since {
                search.insert(
                    "updated".into(),
                    json!([{"operator": ">", "value": since.to_rfc3339_opts(SecondsFormat::Secs, true)}]),
                );
            }
            if let Some(codes) = codes {
                search.insert("code".into(), json!([{"operator": "IN", "value": codes}]));
            }
            let mut url = base.clone();
            {
                let mut q = url.query_pairs_mut();
                if !search.is_empty() {
                    q.append_pair("search", &Value::Object(search).to_string());
                }
                if let Some(c) = &query.channel {
                    q.append_pair("channel", c);
                }
                if let Some(l) = &query.locales {
                    q.append_pair("locales", &l.join(","));
                }
            }
            if url.query() == Some("") {
                url.set_query(None);
            }
            firsts.push_back(url);
        }
        self.pages("list assets", firsts)
    }

    /// Follows `_links.next` from each of `firsts`, yielding the items of each page.
    pub(crate) fn pages(
        &self,
        op: &'static str,
        firsts: VecDeque<Url>,
    ) -> impl Stream<Item = Result<Value, AkeneoError>> + Send + 'static {
        struct State {
            client: AkeneoClient,
            queue: VecDeque<Url>,
            next: Option<Url>,
            items: std::vec::IntoIter<Value>,
            done: bool,
        }
        let st = State {
            client: self.clone(),
            queue: firsts,
            next: None,
            items: Vec::new().into_iter(),
            done: false,
        };
        stream::unfold(st, move |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                if let Some(item) = st.items.next() {
                    return Some((Ok(item), st));
                }
                let url = st.next.take().or_else(|| st.queue.pop_front())?;
                match st.client.page(op, url).await {
                    Ok((items, next)) => {
                        st.items = items.into_iter();
                        st.next = next;
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }

    /// One HAL page: `_embedded.items` and the `_links.next` URL.
    async fn page(&self, op: &str, url: Url) -> Result<(Vec<Value>, Option<Url>), AkeneoError> {
        let this = url.clone();
        let mut make =
            move |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        let r = self
            .inner
            .execute(op, true, self.inner.timeout(), &mut make)
            .await?;
        if r.code() != 200 {
            return Err(r.into_error());
        }
        let mut page: Value = r.json()?;
        let items = match page
            .get_mut("_embedded")
            .and_then(|e| e.get_mut("items"))
            .map(Value::take)
        {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(AkeneoError::Protocol {
                    status: 200,
                    message: "`_embedded.items` is not an array".into(),
                })
            }
        };
        let next = match page.pointer("/_links/next/href").and_then(Value::as_str) {
            Some(href) => {
                let next = self.inner.same_origin(href)?;
                if next == this || items.is_empty() {
                    None
                } else {
                    Some(next)
                }
            }
            None => None,
        };
        Ok((items, next))
    }
}

/// Whether a 404 is about the family (`Asset family "x" does not exist.`) rather than the asset.
fn family_missing(r: &RawResponse) -> bool {
    r.message_and_errors().0.starts_with("Asset family")
}

/// The writable part of an asset read from the PIM: `code` and `values` with `locale`,
/// `channel`, `data` (read-only extras such as `_links`, `linked_data`, `attribute_type`,
/// `created`, `updated` dropped).
pub fn to_pim_asset(asset: &Value) -> Result<PimAsset, AkeneoError> {
    serde_json::from_value::<PimAsset>(json!({
        "code": asset.get("code").cloned().unwrap_or(Value::Null),
        "values": asset.get("values").cloned().unwrap_or_else(|| json!({})),
    }))
    .map_err(|e| AkeneoError::Protocol {
        status: 200,
        message: format!("asset JSON is not readable: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_detection() {
        let f = |message: &str, errors: Option<Value>| ItemFailure {
            status: 422,
            message: message.into(),
            errors,
            permanent: true,
        };
        assert!(shows_structure_drift(&f(
            "The asset has data that does not comply with the business rules.",
            Some(
                json!([{"property": "values.color", "message": "The option \"red\" does not exist for the attribute \"color\""}])
            )
        )));
        assert!(shows_structure_drift(&f(
            "Attribute \"title\" does not exist for this asset family",
            None
        )));
        assert!(!shows_structure_drift(&f(
            "The asset has data that does not comply with the business rules.",
            Some(
                json!([{"property": "values.label", "message": "The locale \"en_AU\" is not activated."}])
            )
        )));
    }

    #[test]
    fn pim_asset_from_read_json() {
        let a = to_pim_asset(&json!({
            "_links": {"self": {"href": "x"}}, "code": "a1",
            "values": {"media": [{"locale": null, "channel": null, "data": "1/2/x.png", "_links": {}}],
                       "link": [{"locale": null, "channel": null, "data": "p.png", "linked_data": {"full_url": "u"}}]},
            "created": "2021-05-31T09:23:34+00:00"
        }))
        .unwrap();
        assert_eq!(a.code, "a1");
        assert_eq!(a.values["media"][0].data, json!("1/2/x.png"));
        assert_eq!(a.values.len(), 2);
    }
}
