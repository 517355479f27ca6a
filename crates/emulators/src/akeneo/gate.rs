//! The middleware every request goes through: fault injection (latency, concurrency cap,
//! injected 429 / 5xx / dropped connections, outage), content negotiation (406), bearer
//! authentication (401), 405 answers, counters and the request log.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{ACCEPT, ALLOW, AUTHORIZATION, RETRY_AFTER};
use http::{HeaderValue, Method, StatusCode};

use super::http::{error, essence, DropConnection, ItemCount};
use super::routes;
use super::state::{bump, LoggedRequest, Shared};
use super::Faults;

/// Counts a request in flight for as long as it lives.
struct InFlight<'a> {
    shared: &'a Shared,
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let count = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .counters
            .max_in_flight
            .fetch_max(count as u64, Ordering::Relaxed);
        Self { shared, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn gate(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| routes::intern(m.as_str()))
        .unwrap_or(routes::UNMATCHED);

    let resp = handle(&s, route, req, next).await;

    let dropped = resp.extensions().get::<DropConnection>().is_some();
    let status = resp.status().as_u16();
    let items = resp.extensions().get::<ItemCount>().map(|c| c.0);
    {
        let key_status = if dropped { 0 } else { status };
        *s.counters
            .requests
            .lock()
            .entry((method.clone(), route, key_status))
            .or_default() += 1;
    }
    s.log.lock().push(LoggedRequest {
        method,
        path,
        query,
        route,
        status: (!dropped).then_some(status),
        items,
        started,
        ended: Instant::now(),
    });
    resp
}

fn too_many(s: &Shared, retry_after: u64) -> Response {
    bump(&s.counters.throttled);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "You have exceeded the limit of API requests per second.",
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

fn server_error(s: &Shared, status: StatusCode) -> Response {
    bump(&s.counters.injected_5xx);
    error(status, status.canonical_reason().unwrap_or("Server error"))
}

fn dropped(s: &Shared) -> Response {
    bump(&s.counters.dropped_connections);
    // Served through `AkeneoEmulator::serve`, this marker makes the connection close without an
    // answer; a bare `router()` user sees an empty 502 instead.
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.extensions_mut().insert(DropConnection);
    r
}

/// §3.1: `Accept` is optional; `*/*`, `application/*` and `application/json` (and the NDJSON
/// collection type) are acceptable, anything else is 406.
fn check_accept(req: &Request) -> Result<(), Response> {
    let Some(v) = req.headers().get(ACCEPT) else {
        return Ok(());
    };
    let raw = String::from_utf8_lossy(v.as_bytes()).into_owned();
    let ok = raw.trim().is_empty()
        || raw.split(',').any(|part| {
            matches!(
                essence(part).as_str(),
                "*/*" | "application/*" | "application/json" | super::http::COLLECTION
            )
        });
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::NOT_ACCEPTABLE,
            format!("'{raw}' in 'Accept' header is not valid. Only 'application/json' is allowed."),
        ))
    }
}

/// 401 unless a valid `Authorization: Bearer <token>` is present (§2.3).
fn check_bearer(s: &Shared, req: &Request) -> Result<(), Response> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    match token {
        Some(t) if s.tokens.lock().access_valid(&t) => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "Authentication is required",
        )),
    }
}

/// §3.3 405: `No route found for 'POST /api/rest/v1/...': Method Not Allowed (Allow: GET, PATCH)`.
fn method_not_allowed(method: &Method, path: &str, allowed: &[Method]) -> Response {
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("No route found for '{method} {path}': Method Not Allowed (Allow: {list})"),
    );
    if let Ok(v) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

async fn handle(s: &Shared, route: &'static str, req: Request, next: Next) -> Response {
    // Routing comes first in Symfony: a known path with another method is a 405.
    if let Some(allowed) = routes::allowed_methods(route) {
        let m = req.method();
        let ok = allowed.contains(m) || (m == Method::HEAD && allowed.contains(&Method::GET));
        if !ok {
            return method_not_allowed(m, req.uri().path(), allowed);
        }
    }

    if route == routes::TOKEN {
        if s.faults.read().outage {
            return server_error(s, StatusCode::SERVICE_UNAVAILABLE);
        }
        if let Err(r) = check_accept(&req) {
            return r;
        }
        return next.run(req).await;
    }

    // Every other request is an API request: concurrency cap, latency, faults.
    let guard = InFlight::enter(s);
    let faults = s.faults.read().clone();
    if let Some(cap) = faults.max_concurrency {
        if guard.count > cap {
            drop(guard);
            bump(&s.counters.throttled_concurrency);
            if !faults.latency.is_zero() {
                tokio::time::sleep(faults.latency).await;
            }
            return too_many(s, faults.retry_after_secs);
        }
    }
    // The latency is the request's response time: the answer leaves `latency` after the request
    // arrived, the emulator's own work (reading the body, validating, storing) included — as a
    // server's response time is measured — and never earlier. Whatever the answer is.
    // Without latency there is no timer at all: a deadline already past still waits for the
    // timer driver's next tick (tokio rounds deadlines up to the millisecond), up to 1 ms a call.
    let answer_at = tokio::time::Instant::now() + faults.latency;
    let resp = answer(s, route, &faults, req, next).await;
    if !faults.latency.is_zero() {
        tokio::time::sleep_until(answer_at).await;
    }
    drop(guard);
    resp
}

/// An API request past the concurrency cap: injected faults, then `Accept`, then the bearer
/// token, then the route itself.
async fn answer(
    s: &Shared,
    route: &'static str,
    faults: &Faults,
    req: Request,
    next: Next,
) -> Response {
    if faults.outage || (faults.delete_outage && req.method() == Method::DELETE) {
        return server_error(s, StatusCode::SERVICE_UNAVAILABLE);
    }
    let roll: f64 = rand::random();
    if roll < faults.rate_drop {
        return dropped(s);
    }
    if roll < faults.rate_drop + faults.rate_429 {
        return too_many(s, faults.retry_after_secs);
    }
    if roll < faults.rate_drop + faults.rate_429 + faults.rate_5xx {
        let status = match rand::random::<u8>() % 3 {
            0 => StatusCode::INTERNAL_SERVER_ERROR,
            1 => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        return server_error(s, status);
    }
    if let Err(r) = check_accept(&req) {
        return r;
    }
    if route != routes::UNMATCHED && !routes::is_public(route) {
        if let Err(r) = check_bearer(s, &req) {
            return r;
        }
    }
    next.run(req).await
}

/// Fallback for unknown paths (Symfony's router answers before the firewall).
pub(crate) async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "No route found for \"{} {}\"",
            req.method(),
            req.uri().path()
        ),
    )
}
