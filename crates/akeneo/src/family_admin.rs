//! Asset family administration (§5.1, §5.3, §5.6 of the API reference): read a family, its
//! attributes and their options as the PIM gives them, and upsert each (`PATCH` → 201 created
//! or 204 updated). Every call goes through the client's transport (token, concurrency cap,
//! rate limit, 429 / transient retries); a refusal (e.g. 422) is [`AkeneoError::Request`] with
//! the PIM's `message` and `errors`.
//!
//! These calls change what [`AkeneoClient::family_structure`] caches: after writing, call
//! [`AkeneoClient::invalidate_structure`] (the upserts here do it for the family they touch).

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use crate::error::AkeneoError;
use crate::stats::inc;
use crate::AkeneoClient;

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// 201: the resource did not exist.
    Created,
    /// 204: the resource existed and was updated.
    Updated,
}

impl AkeneoClient {
    /// `GET /api/rest/v1/asset-families/{code}`: the family as the PIM renders it, or `None`
    /// when it does not exist (404).
    pub async fn asset_family(&self, code: &str) -> Result<Option<Value>, AkeneoError> {
        let url = self.inner.api_url(&["asset-families", code]);
        self.get_optional("get asset family", url).await
    }

    /// `GET .../asset-families/{family}/attributes`: every attribute of the family (a plain
    /// JSON array, at most 100).
    pub async fn asset_attributes(&self, family: &str) -> Result<Vec<Value>, AkeneoError> {
        let url = self
            .inner
            .api_url(&["asset-families", family, "attributes"]);
        self.get_array("list asset attributes", url).await
    }

    /// `GET .../attributes/{attribute}/options`: the options of an option attribute (a plain
    /// JSON array, at most 100).
    pub async fn asset_attribute_options(
        &self,
        family: &str,
        attribute: &str,
    ) -> Result<Vec<Value>, AkeneoError> {
        let url =
            self.inner
                .api_url(&["asset-families", family, "attributes", attribute, "options"]);
        self.get_array("list asset attribute options", url).await
    }

    /// `PATCH /api/rest/v1/asset-families/{code}` with `body` (which must hold `"code": code`).
    /// Forgets the cached structure of the family.
    pub async fn upsert_asset_family(
        &self,
        code: &str,
        body: &Value,
    ) -> Result<Upserted, AkeneoError> {
        let url = self.inner.api_url(&["asset-families", code]);
        let r = self.patch_json("upsert asset family", url, body).await;
        self.invalidate_structure(code);
        r
    }

    /// `PATCH .../asset-families/{family}/attributes/{code}` with `body`. Forgets the cached
    /// structure of the family.
    pub async fn upsert_asset_attribute(
        &self,
        family: &str,
        code: &str,
        body: &Value,
    ) -> Result<Upserted, AkeneoError> {
        let url = self
            .inner
            .api_url(&["asset-families", family, "attributes", code]);
        let r = self.patch_json("upsert asset attribute", url, body).await;
        self.invalidate_structure(family);
        r
    }

    /// `PATCH .../attributes/{attribute}/options/{code}` with `body`, at most
    /// `option_writes_per_second`. Forgets the cached structure of the family.
    pub async fn upsert_asset_attribute_option(
        &self,
        family: &str,
        attribute: &str,
        code: &str,
        body: &Value,
    ) -> Result<Upserted, AkeneoError> {
        let waited = self.inner.option_bucket.acquire().await;
        crate::stats::Counters::add_wait(&self.inner.stats.throttle_wait_us, waited);
        let url = self.inner.api_url(&[
            "asset-families",
            family,
            "attributes",
            attribute,
            "options",
            code,
        ]);
        let r = self
            .patch_json("upsert asset attribute option", url, body)
            .await;
        if matches!(r, Ok(Upserted::Created)) {
            inc(&self.inner.stats.options_created);
        }
        self.invalidate_structure(family);
        r
    }

    async fn get_optional(&self, op: &str, url: url::Url) -> Result<Option<Value>, AkeneoError> {
        let mut make =
            move |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        let r = self
            .inner
            .execute(op, true, self.inner.timeout(), &mut make)
            .await?;
        match r.code() {
            200 => r.json().map(Some),
            404 => Ok(None),
            _ => Err(r.into_error()),
        }
    }

    async fn get_array(&self, op: &str, url: url::Url) -> Result<Vec<Value>, AkeneoError> {
        let mut make =
            move |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        let r = self
            .inner
            .execute(op, true, self.inner.timeout(), &mut make)
            .await?;
        if r.code() != 200 {
            return Err(r.into_error());
        }
        match r.json::<Value>()? {
            Value::Array(items) => Ok(items),
            other => Err(AkeneoError::Protocol {
                status: 200,
                message: format!("{op}: expected a JSON array, got {}", kind(&other)),
            }),
        }
    }

    async fn patch_json(
        &self,
        op: &str,
        url: url::Url,
        body: &Value,
    ) -> Result<Upserted, AkeneoError> {
        let bytes = bytes::Bytes::from(serde_json::to_vec(body).map_err(|e| {
            AkeneoError::InvalidInput(format!("{op}: the body cannot be serialised: {e}"))
        })?);
        let mut make = move |http: &reqwest::Client| {
            http.patch(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(bytes.clone())
        };
        let r = self
            .inner
            .execute(op, true, self.inner.timeout(), &mut make)
            .await?;
        match r.code() {
            201 => Ok(Upserted::Created),
            200 | 204 => Ok(Upserted::Updated),
            _ => Err(r.into_error()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
