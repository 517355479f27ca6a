//! The HTTP face of the DAM emulator.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::store::{mix, ListQuery};
use super::{DamEmulator, DamEmulatorAuth, DamEmulatorError, DamFaults, PagingStyle};

pub(super) fn router(emu: DamEmulator) -> Router {
    Router::new()
        .route("/api/assets", get(list))
        .route("/api/assets/{id}", get(get_one))
        .route("/files/{id}/{name}", get(file))
        .route("/_emulator/touch", post(touch))
        .route("/_emulator/add", post(add))
        .route("/_emulator/delete", post(delete))
        .route("/_emulator/assets/{id}", patch(set))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/now", get(now))
        .route("/_emulator/faults", put(faults))
        .route("/_emulator/fail_next", post(fail_next))
        .with_state(emu)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Seconds, rounded up: `updated_since` is inclusive and every timestamp is whole seconds.
pub(super) fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

fn parse_since(raw: &str) -> Result<i64, String> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = raw
            .parse()
            .map_err(|_| format!("`updated_since` out of range: {raw}"))?;
        // Unix seconds, or milliseconds past the year 5138.
        return Ok(if n >= 100_000_000_000 {
            n.div_euclid(1000) + i64::from(n.rem_euclid(1000) > 0)
        } else {
            n
        });
    }
    // A `+` sent unencoded in a query string arrives as a space.
    let fixed = raw.replace(' ', "+");
    DateTime::parse_from_rfc3339(&fixed)
        .map(|t| ceil_secs(t.with_timezone(&Utc)))
        .map_err(|e| {
            format!("`updated_since` must be RFC 3339 or unix seconds/millis, got `{raw}`: {e}")
        })
}

fn encode_position((t, key): (i64, u64)) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{t}:{key:016x}"))
}

fn decode_position(token: &str) -> Option<(i64, u64)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let mut parts = raw.split(':');
    if parts.next()? != "v1" {
        return None;
    }
    let t = parts.next()?.parse().ok()?;
    let key = u64::from_str_radix(parts.next()?, 16).ok()?;
    parts.next().is_none().then_some((t, key))
}

#[derive(Clone, Copy)]
enum Route {
    List,
    Get,
    File,
}

impl DamEmulator {
    /// Counts the request, then applies latency, injected faults and authentication.
    async fn guard(&self, route: Route, headers: &HeaderMap) -> Result<(), Response> {
        {
            let mut stats = self.inner.stats.lock();
            match route {
                Route::List => stats.list_requests += 1,
                Route::Get => stats.get_requests += 1,
                Route::File => stats.file_requests += 1,
            }
        }
        let (latency, fault) = {
            let mut f = self.inner.faults.lock();
            let fault = match f.fail_next.pop_front() {
                Some(s) => Some(s),
                None => {
                    f.rng = mix(f.rng);
                    let u = (f.rng >> 11) as f64 / (1u64 << 53) as f64;
                    if u < f.faults.rate_429 {
                        Some(429)
                    } else if u < f.faults.rate_429 + f.faults.rate_5xx {
                        Some(503)
                    } else {
                        None
                    }
                }
            };
            (
                f.faults.latency,
                fault.map(|s| (s, f.faults.retry_after_secs)),
            )
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some((status, retry_after)) = fault {
            self.inner.stats.lock().faults_injected += 1;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut resp = if status == StatusCode::TOO_MANY_REQUESTS {
                error(
                    status,
                    "too_many_requests",
                    "rate limit exceeded, retry later",
                )
            } else {
                error(status, "unavailable", "injected fault")
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            return Err(resp);
        }
        let ok = match &self.inner.auth {
            DamEmulatorAuth::None => true,
            DamEmulatorAuth::Bearer(token) => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| t == token),
            DamEmulatorAuth::ApiKey { header, key } => headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == key),
        };
        if !ok {
            self.inner.stats.lock().unauthorized += 1;
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials",
            );
            if matches!(self.inner.auth, DamEmulatorAuth::Bearer(_)) {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return Err(resp);
        }
        Ok(())
    }

    fn control(&self) {
        self.inner.stats.lock().control_requests += 1;
    }
}

/// A page of `page`-number paging: the records as the store wrote them, fields in the order of
/// their names (as a `Value` would serialise them).
#[derive(Serialize)]
struct NumberedPage<'a> {
    items: &'a [Box<RawValue>],
    limit: usize,
    page: usize,
    total: usize,
}

/// A page of cursor paging (`next_cursor` is `null` on the last page).
#[derive(Serialize)]
struct CursorPage<'a> {
    items: &'a [Box<RawValue>],
    next_cursor: Option<String>,
}

async fn list(
    State(emu): State<DamEmulator>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(resp) = emu.guard(Route::List, &headers).await {
        return resp;
    }
    let paging = emu.paging();
    let mut q = ListQuery {
        limit: emu.inner.page_size_max,
        ..Default::default()
    };
    let mut page = 1usize;
    let mut passthrough: Vec<(String, String)> = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "updated_since" => match parse_since(v) {
                Ok(s) => q.since = Some(s),
                Err(e) => return bad_request(e),
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if n > 0 => q.limit = n.min(emu.inner.page_size_max),
                _ => return bad_request(format!("`limit` must be a positive integer, got `{v}`")),
            },
            "type" => q.family = Some(v.clone()),
            "page" if paging == PagingStyle::PageNumber => match v.parse::<usize>() {
                Ok(n) if n > 0 => page = n,
                _ => return bad_request(format!("`page` must be an integer >= 1, got `{v}`")),
            },
            "cursor" if paging == PagingStyle::CursorToken => match decode_position(v) {
                Some(p) => q.after = Some(p),
                None => return bad_request(format!("invalid `cursor`: `{v}`")),
            },
            "after" if paging == PagingStyle::LinkHeader => match decode_position(v) {
                Some(p) => q.after = Some(p),
                None => return bad_request(format!("invalid `after`: `{v}`")),
            },
            "page" | "cursor" | "after" => {
                return bad_request(format!(
                    "`{k}` is not a paging parameter of this API (paging: {paging:?})"
                ))
            }
            _ => {}
        }
        if !matches!(k.as_str(), "after" | "cursor" | "page") {
            passthrough.push((k.clone(), v.clone()));
        }
    }
    if !passthrough.iter().any(|(k, _)| k == "limit") {
        passthrough.push(("limit".into(), q.limit.to_string()));
    }
    q.skip = (page - 1).saturating_mul(q.limit);
    let result = emu.inner.store.read().list(&q);
    {
        let mut stats = emu.inner.stats.lock();
        stats.pages_served += 1;
        stats.items_served += result.items.len() as u64;
    }
    match paging {
        PagingStyle::PageNumber => Json(NumberedPage {
            items: &result.items,
            limit: q.limit,
            page,
            total: result.total,
        })
        .into_response(),
        PagingStyle::CursorToken => {
            let next_cursor = match (result.more, result.last) {
                (true, Some(last)) => Some(encode_position(last)),
                _ => None,
            };
            Json(CursorPage {
                items: &result.items,
                next_cursor,
            })
            .into_response()
        }
        PagingStyle::LinkHeader => {
            let mut resp = Json(&result.items).into_response();
            if let (true, Some(last)) = (result.more, result.last) {
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &passthrough {
                    ser.append_pair(k, v);
                }
                ser.append_pair("after", &encode_position(last));
                let base = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| format!("http://{h}"))
                    .unwrap_or_default();
                let link = format!("<{base}/api/assets?{}>; rel=\"next\"", ser.finish());
                if let Ok(v) = HeaderValue::from_str(&link) {
                    resp.headers_mut().insert(header::LINK, v);
                }
            }
            resp
        }
    }
}

async fn get_one(
    State(emu): State<DamEmulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(resp) = emu.guard(Route::Get, &headers).await {
        return resp;
    }
    match emu.get(&id) {
        Some(r) if r["deleted"] != Value::Bool(true) => Json(r).into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset `{id}`"),
        ),
    }
}

async fn file(
    State(emu): State<DamEmulator>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    if let Err(resp) = emu.guard(Route::File, &headers).await {
        return resp;
    }
    let bytes = emu.inner.store.read().file(&id, &name);
    match bytes {
        Some(b) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "image/jpeg")
            .header(header::CONTENT_LENGTH, b.len())
            .body(Body::from(b))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no file `{name}` for asset `{id}`"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Count {
    n: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DeleteBody {
    Ids { ids: Vec<String> },
    Count { n: usize },
}

async fn touch(State(emu): State<DamEmulator>, Json(body): Json<Count>) -> Response {
    emu.control();
    Json(json!({"ids": emu.touch(body.n)})).into_response()
}

async fn add(State(emu): State<DamEmulator>, Json(body): Json<Count>) -> Response {
    emu.control();
    Json(json!({"ids": emu.add(body.n)})).into_response()
}

async fn delete(State(emu): State<DamEmulator>, Json(body): Json<DeleteBody>) -> Response {
    emu.control();
    let ids = match body {
        DeleteBody::Ids { ids } => emu.delete(&ids),
        DeleteBody::Count { n } => emu.delete_some(n),
    };
    Json(json!({"ids": ids})).into_response()
}

async fn set(
    State(emu): State<DamEmulator>,
    Path(id): Path<String>,
    Json(patch): Json<Value>,
) -> Response {
    emu.control();
    match emu.set(&id, &patch) {
        Ok(r) => Json(r).into_response(),
        Err(e @ DamEmulatorError::UnknownAsset(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e) => bad_request(e.to_string()),
    }
}

async fn stats(State(emu): State<DamEmulator>) -> Response {
    emu.control();
    Json(emu.stats()).into_response()
}

async fn now(State(emu): State<DamEmulator>) -> Response {
    emu.control();
    Json(json!({"now": emu.now()})).into_response()
}

async fn faults(State(emu): State<DamEmulator>, Json(f): Json<DamFaults>) -> Response {
    emu.control();
    emu.set_faults(f);
    StatusCode::NO_CONTENT.into_response()
}

async fn fail_next(
    State(emu): State<DamEmulator>,
    Json(body): Json<HashMap<String, Vec<u16>>>,
) -> Response {
    emu.control();
    match body.get("statuses") {
        Some(s) if body.len() == 1 && s.iter().all(|&c| (400..600).contains(&c)) => {
            emu.fail_next(s);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => bad_request("expected {\"statuses\": [4xx or 5xx, ...]}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_refused() {
        let p = (1_767_225_600, 0xDEAD_BEEF_0000_0001);
        assert_eq!(decode_position(&encode_position(p)), Some(p));
        assert_eq!(decode_position("garbage"), None);
        assert_eq!(decode_position(&URL_SAFE_NO_PAD.encode("v2:1:2")), None);
    }

    #[test]
    fn since_accepts_rfc3339_and_unix_numbers() {
        assert_eq!(parse_since("2026-01-01T00:00:00Z"), Ok(1_767_225_600));
        assert_eq!(parse_since("2026-01-01T00:00:00.5Z"), Ok(1_767_225_601));
        assert_eq!(parse_since("2026-01-01T01:00:00 01:00"), Ok(1_767_225_600));
        assert_eq!(parse_since("1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_since("1767225600000"), Ok(1_767_225_600));
        assert_eq!(parse_since("1767225600001"), Ok(1_767_225_601));
        assert!(parse_since("yesterday").is_err());
    }
}
