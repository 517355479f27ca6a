//! The AEM Assets Author API: asset metadata, and the events assets emit.
//!
//! `GET /adobe/assets/{assetId}/metadata` (checks 1–5 below, those that apply) → 200
//! `{"assetId", "assetMetadata": {...}, "repositoryMetadata": {...}}` with an `ETag` header
//! (the ETag is \[unverified]: the reference only implies conditional requests).
//!
//! `PATCH /adobe/assets/{assetId}/metadata` — checks, in this order:
//! 1. `Authorization: Bearer <token from this emulator's IMS>` → else 401;
//! 2. `X-Api-Key` (the client id, or a configured key) → else 403 \[unverified status];
//! 3. `Accept` (when sent) admits `application/json` → else 406 (GET too);
//!    `Content-Type: application/json-patch+json` → else 415;
//! 4. `X-Adobe-Accept-Experimental: 1` → else 400 Problem Details \[unverified status] (GET
//!    too: both operations are in the experimental Assets Author spec, which marks the header
//!    `required`);
//! 5. the asset exists → else 404;
//! 6. `If-Match` present → else 428 [unverified: the reference says "always send If-Match"];
//!    a value other than `*` must equal the current ETag → else 412 \[unverified];
//! 7. an RFC 6902 array of `add` / `replace` / `remove` / `test` operations whose paths are JSON
//!    Pointers starting with `/` → else 400 `application/problem+json` (`move` / `copy` are
//!    refused as unsupported; slash-less paths, which the PIM tutorial used, are refused — the
//!    reference marks their acceptance unverified). The patch applies atomically to
//!    `assetMetadata`; a failing `test` or a missing member gives 400.
//!
//! Success: 200 with the GET shape and the new `ETag` \[unverified shape]. When values changed,
//! an `aem.assets.asset.metadata_updated` event is emitted (journal, and the registered webhook
//! if any) with `assetMetadata` = the new metadata plus `event:created` (keys added) and
//! `event:updated` (changed keys → new values), like the captures.
//!
//! Every request to these endpoints is logged, whatever its outcome ([`AemRequest`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::ims::{api_key_ok, bad_api_key, bearer_ok, unauthorized};
use super::{fault_response, json_response, AemEmulator, AemEndpoint, Asset, JournalItem};

/// One logged request to the metadata endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct AemRequest {
    /// `GET` or `PATCH`.
    pub method: String,
    /// The request path as received (percent-encoding kept).
    pub path: String,
    /// The asset id, decoded.
    pub asset_id: String,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body, as text.
    pub body: String,
    /// The status answered.
    pub status: u16,
}

impl AemRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn problem(status: u16, title: &str, detail: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({"type": "about:blank", "title": title, "status": status, "detail": detail}),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// Whether the `Accept` header (absent = anything) admits `application/json`, the only
/// representation served; otherwise AEM answers 406 (reference 4.4, error model).
fn accepts_json(headers: &HeaderMap) -> bool {
    let mut ranges = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    // (media range, refused with q=0); the most specific matching range decides.
    let ranges: Vec<(String, bool)> = ranges
        .map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
                })
            });
            (media, refused)
        })
        .collect();
    ["application/json", "application/*", "*/*"]
        .iter()
        .find_map(|m| {
            ranges
                .iter()
                .find(|(r, _)| r == m)
                .map(|(_, refused)| !refused)
        })
        .unwrap_or(false)
}

fn not_acceptable() -> Response {
    problem(
        406,
        "Not Acceptable",
        "The only representation available is application/json",
    )
}

fn etag(version: u64) -> String {
    format!("\"{version:016x}\"")
}

fn mime_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("tif" | "tiff") => "image/tiff",
        Some("pdf") => "application/pdf",
        Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    }
}

impl AemEmulator {
    /// Seeds an asset (replacing one with the same id). `asset_id` should look like
    /// `urn:aaid:aem:<uuid>`; `metadata` becomes its `assetMetadata` (a non-object is stored as
    /// an empty object).
    pub fn add_asset(&self, asset_id: &str, name: &str, path: &str, metadata: Value) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let host = self.inner.config.author_host.clone();
        let size = 1000 + (name.len() as u64) * 7919;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(format!("{asset_id}{name}").as_bytes()))
        };
        let repository: Map<String, Value> = json!({
            "aem:assetState": "processed",
            "dam:sha1": &digest[..40],
            "dc:format": mime_of(name),
            "repo:ancestors": [],
            "repo:assetClass": "file",
            "repo:assetId": asset_id,
            "repo:createDate": now,
            "repo:createdBy": "EMULATOR@ADOBE.COM",
            "repo:modifiedBy": "EMULATOR@ADOBE.COM",
            "repo:modifyDate": now,
            "repo:name": name,
            "repo:path": path,
            "repo:repositoryId": host,
            "repo:size": size.to_string(),
            "repo:state": "ACTIVE",
            "repo:version": format!("oak:1.0::ci:{}", &digest[..32]),
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let asset = Asset {
            asset_metadata: metadata.as_object().cloned().unwrap_or_default(),
            repository_metadata: repository,
            version: 1,
        };
        self.inner
            .state
            .lock()
            .assets
            .insert(asset_id.to_owned(), asset);
    }

    /// `source` of this AEM's events: `acct:aem-p<program>-e<env>@adobe.com`, from the author
    /// host when it reads `author-p<program>-e<env>...`.
    pub fn event_source(&self) -> String {
        let host = &self.inner.config.author_host;
        let bucket = host
            .split('.')
            .next()
            .and_then(|b| b.strip_prefix("author-"))
            .filter(|b| b.starts_with('p') && b.contains("-e"))
            .unwrap_or("p12345-e67890");
        format!("acct:aem-{bucket}@adobe.com")
    }

    /// A CloudEvent envelope of this AEM, as I/O Events delivers it (new and deprecated id
    /// names).
    pub fn envelope(&self, event_type: &str, data: Value) -> Value {
        let event_id = uuid::Uuid::new_v4().to_string();
        let client = &self.inner.config.client_id;
        json!({
            "specversion": "1.0",
            "id": uuid::Uuid::new_v4().to_string(),
            "source": self.event_source(),
            "type": event_type,
            "datacontenttype": "application/json",
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "eventid": event_id,
            "event_id": event_id,
            "recipientclientid": client,
            "recipient_client_id": client,
            "data": data,
        })
    }

    /// Builds an `aem.assets.asset.processing_completed` event for a seeded asset (real-shaped,
    /// see the reference's capture), journals it, pushes it to the registered webhook if any,
    /// and returns it. `None` for an unknown asset.
    pub fn processing_completed(&self, asset_id: &str) -> Option<Value> {
        let data = {
            let state = self.inner.state.lock();
            let a = state.assets.get(asset_id)?;
            json!({
                "assetId": asset_id,
                "assetMetadata": a.asset_metadata,
                "repositoryMetadata": a.repository_metadata,
            })
        };
        let event = self.envelope("aem.assets.asset.processing_completed", data);
        self.emit(event.clone());
        Some(event)
    }

    /// Journals an event (any JSON) and pushes it to the registered webhook, if any (in the
    /// background, on the current Tokio runtime).
    pub fn emit(&self, event: Value) {
        let webhook = {
            let mut state = self.inner.state.lock();
            state.next_seq += 1;
            let seq = state.next_seq;
            let at = self.now(&state);
            state.journal.push(JournalItem {
                seq,
                event: event.clone(),
                at,
            });
            state.webhook.clone()
        };
        if let Some((url, mode)) = webhook {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!("no Tokio runtime: the event is journaled but not delivered");
                return;
            };
            let emu = self.clone();
            runtime.spawn(async move {
                emu.deliver(&url, vec![event], mode).await;
            });
        }
    }

    fn log(
        &self,
        method: &str,
        path: &str,
        asset_id: &str,
        headers: &HeaderMap,
        body: &[u8],
        status: u16,
    ) {
        let headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        self.inner.state.lock().requests.push(AemRequest {
            method: method.into(),
            path: path.into(),
            asset_id: asset_id.into(),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
            status,
        });
    }

    fn metadata_body(&self, asset_id: &str, a: &Asset) -> Value {
        json!({
            "assetId": asset_id,
            "assetMetadata": a.asset_metadata,
            "repositoryMetadata": a.repository_metadata,
        })
    }
}

pub(crate) async fn get_metadata(
    State(emu): State<AemEmulator>,
    Path(asset_id): Path<String>,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    let resp = get_inner(&emu, &asset_id, &headers);
    emu.log(
        "GET",
        uri.path(),
        &asset_id,
        &headers,
        b"",
        resp.status().as_u16(),
    );
    resp
}

fn get_inner(emu: &AemEmulator, asset_id: &str, headers: &HeaderMap) -> Response {
    if let Some(f) = emu.take_fault_for_get(AemEndpoint::Metadata) {
        return fault_response(f);
    }
    if !bearer_ok(emu, headers) {
        return unauthorized();
    }
    if !api_key_ok(emu, headers) {
        return bad_api_key();
    }
    if !accepts_json(headers) {
        return not_acceptable();
    }
    if let Some(r) = experimental_missing(headers) {
        return r;
    }
    let state = emu.inner.state.lock();
    let Some(a) = state.assets.get(asset_id) else {
        return problem(404, "Not Found", &format!("Asset {asset_id} not found"));
    };
    let mut r = json_response(200, &emu.metadata_body(asset_id, a));
    r.headers_mut().insert(
        http::header::ETAG,
        http::HeaderValue::from_str(&etag(a.version)).expect("ascii"),
    );
    r
}

/// The 400 for a request without `X-Adobe-Accept-Experimental: 1` (check 4).
fn experimental_missing(headers: &HeaderMap) -> Option<Response> {
    (header(headers, "x-adobe-accept-experimental") != Some("1")).then(|| {
        problem(
            400,
            "Bad Request",
            "This is an experimental operation: send X-Adobe-Accept-Experimental: 1",
        )
    })
}

pub(crate) async fn patch_metadata(
    State(emu): State<AemEmulator>,
    Path(asset_id): Path<String>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, echo) = patch_inner(&emu, &asset_id, &headers, &body);
    emu.log(
        "PATCH",
        uri.path(),
        &asset_id,
        &headers,
        &body,
        resp.status().as_u16(),
    );
    if let Some(event) = echo {
        emu.emit(event);
    }
    resp
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn patch_inner(
    emu: &AemEmulator,
    asset_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<Value>) {
    match emu.take_fault(AemEndpoint::Metadata) {
        // Applied, then the answer lost on its way (a gateway's timeout).
        Some(f) if f.after_applying => {
            let (_, echo) = patch_apply(emu, asset_id, headers, body);
            (fault_response(f), echo)
        }
        Some(f) => (fault_response(f), None),
        None => patch_apply(emu, asset_id, headers, body),
    }
}

fn patch_apply(
    emu: &AemEmulator,
    asset_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<Value>) {
    if !bearer_ok(emu, headers) {
        return (unauthorized(), None);
    }
    if !api_key_ok(emu, headers) {
        return (bad_api_key(), None);
    }
    if !accepts_json(headers) {
        return (not_acceptable(), None);
    }
    let media = header(headers, "content-type")
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/json-patch+json") {
        return (
            problem(
                415,
                "Unsupported Media Type",
                "Content-Type must be application/json-patch+json",
            ),
            None,
        );
    }
    if let Some(r) = experimental_missing(headers) {
        return (r, None);
    }
    let mut state = emu.inner.state.lock();
    let Some(asset) = state.assets.get_mut(asset_id) else {
        return (
            problem(404, "Not Found", &format!("Asset {asset_id} not found")),
            None,
        );
    };
    let Some(if_match) = header(headers, "if-match") else {
        return (
            problem(
                428,
                "Precondition Required",
                "If-Match is required (use * for an unconditional update)",
            ),
            None,
        );
    };
    if if_match != "*" && !if_match.split(',').any(|t| t.trim() == etag(asset.version)) {
        return (
            problem(
                412,
                "Precondition Failed",
                "If-Match does not match the asset's current ETag",
            ),
            None,
        );
    }
    let ops: Vec<Value> = match serde_json::from_slice(body) {
        Ok(Value::Array(ops)) if !ops.is_empty() => ops,
        Ok(_) => {
            return (
                problem(
                    400,
                    "Bad Request",
                    "The body must be a non-empty JSON Patch array",
                ),
                None,
            )
        }
        Err(e) => {
            return (
                problem(400, "Bad Request", &format!("Invalid JSON: {e}")),
                None,
            )
        }
    };
    for (i, op) in ops.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        if !matches!(name, "add" | "replace" | "remove" | "test") {
            return (
                problem(
                    400,
                    "Bad Request",
                    &format!("Operation {i}: unsupported op `{name}` (add, replace, remove, test)"),
                ),
                None,
            );
        }
        match op.get("path").and_then(Value::as_str) {
            Some(p) if p.starts_with('/') && p.len() > 1 => {}
            _ => {
                return (
                    problem(
                        400,
                        "Bad Request",
                        &format!("Operation {i}: `path` must be a JSON Pointer to a metadata property, like /dc:title"),
                    ),
                    None,
                )
            }
        }
    }
    let patch: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
        Ok(p) => p,
        Err(e) => {
            return (
                problem(400, "Bad Request", &format!("Invalid JSON Patch: {e}")),
                None,
            )
        }
    };
    let before = asset.asset_metadata.clone();
    let mut doc = Value::Object(before.clone());
    if let Err(e) = json_patch::patch(&mut doc, &patch) {
        return (
            problem(
                400,
                "Bad Request",
                &format!("The patch cannot be applied: {e}"),
            ),
            None,
        );
    }
    let Value::Object(after) = doc else {
        return (
            problem(400, "Bad Request", "The patch must leave an object"),
            None,
        );
    };
    let changed = after != before;
    if changed {
        asset.asset_metadata = after.clone();
        asset.version += 1;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        asset
            .repository_metadata
            .insert("repo:modifyDate".into(), Value::String(now));
    }
    let body = emu.metadata_body(asset_id, asset);
    let version = asset.version;
    let echo = changed.then(|| {
        let created: Vec<Value> = after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| Value::String(k.clone()))
            .collect();
        let updated: Map<String, Value> = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|old| old != *v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut meta = after.clone();
        if !created.is_empty() {
            meta.insert("event:created".into(), Value::Array(created));
        }
        if !updated.is_empty() {
            meta.insert("event:updated".into(), Value::Object(updated));
        }
        let repo = &asset.repository_metadata;
        let pick = |k: &str| repo.get(k).cloned().unwrap_or(Value::Null);
        let client = &emu.inner.config.client_id;
        json!({
            "user": {
                "imsUserId": format!("{client}@techacct.adobe.com"),
                "principalId": format!("{client}@techacct.adobe.com"),
                "displayName": "Emulated technical account",
            },
            "repositoryMetadata": {
                "repo:repositoryId": pick("repo:repositoryId"),
                "dc:format": pick("dc:format"),
                "repo:assetId": pick("repo:assetId"),
                "repo:name": pick("repo:name"),
                "repo:path": pick("repo:path"),
                "repo:state": pick("repo:state"),
                "aem:assetState": pick("aem:assetState"),
            },
            "assetMetadata": meta,
            "assetId": asset_id,
        })
    });
    drop(state);
    let echo = echo.map(|data| emu.envelope("aem.assets.asset.metadata_updated", data));
    let mut r = json_response(200, &body);
    r.headers_mut().insert(
        http::header::ETAG,
        http::HeaderValue::from_str(&etag(version)).expect("ascii"),
    );
    (r, echo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aem::AemEmulatorConfig;

    const ASSET: &str = "urn:aaid:aem:20fec14a-b5b8-4c7d-85f4-e619d66281dc";

    #[tokio::test]
    async fn metadata_answers_406_when_json_is_not_acceptable() {
        let emu = AemEmulator::new(AemEmulatorConfig::default());
        emu.add_asset(
            ASSET,
            "a.png",
            "/content/dam/a.png",
            json!({"dc:title": "A"}),
        );
        let aem = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = reqwest::Client::new();
        let token: Value = http
            .post(aem.ims_token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "emulated-client-id"),
                ("client_secret", "emulated-client-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_owned();
        let url = format!("{}/adobe/assets/{ASSET}/metadata", aem.base_url);
        let get = |accept: Option<&str>| {
            let mut req = http
                .get(&url)
                .bearer_auth(&token)
                .header("x-api-key", "emulated-client-id")
                .header("x-adobe-accept-experimental", "1");
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            req.send()
        };
        for (accept, status) in [
            (None, 200),
            (Some("application/json"), 200),
            (Some("text/html, */*;q=0.1"), 200),
            (Some("application/*"), 200),
            (Some("text/html"), 406),
            (Some("application/xml"), 406),
            (Some("application/json;q=0, text/html"), 406),
            (Some("application/json;q=0, */*"), 406),
        ] {
            let r = get(accept).await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{accept:?}");
        }
        let patch = |accept: &str| {
            http.patch(&url)
                .bearer_auth(&token)
                .header("x-api-key", "emulated-client-id")
                .header("content-type", "application/json-patch+json")
                .header("if-match", "*")
                .header("x-adobe-accept-experimental", "1")
                .header("accept", accept)
                .body(r#"[{"op":"add","path":"/pim:sku","value":"S"}]"#)
                .send()
        };
        let r = patch("text/html").await.unwrap();
        assert_eq!(r.status(), 406);
        assert!(aem.metadata(ASSET).unwrap().get("pim:sku").is_none());
        assert!(aem.journal_events().is_empty());
        let r = patch("application/json").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(aem.metadata(ASSET).unwrap()["pim:sku"], "S");
    }
}
