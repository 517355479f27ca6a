//! The I/O Events Journaling API:
//! `GET /events/organizations/{org}/integrations/{integration}/{registration}`.
//!
//! Headers: `Authorization: Bearer <token from this IMS>` (else 401), `x-api-key` (else 403
//! \[unverified]), `x-ims-org-id` = the configured org (else 403 \[unverified]).
//!
//! Query: `since=<position>` (exclusive), `limit=<n ≥ 1>` (default
//! [`AemEmulatorConfig::journal_default_limit`](super::AemEmulatorConfig), carried into `next`),
//! `latest=true` (only without `since`: skip every existing event).
//!
//! Answers:
//! - 200 `{"events":[{"position","event"}], "_page":{"last","count"}}` +
//!   `Link: </events/...?since=<last>[&limit=n]>; rel="next"` (a relative URI, as Adobe's);
//!   responses stop before 1.5 MB (at least one event).
//! - 204 at the end, with `retry-after` and a `next` link equal to the request; after
//!   `latest=true`, a 204 whose `next` starts after the newest event \[unverified shape].
//! - 410 `Events at position <pos> have expired.` (text) when `since` names an event older than
//!   the retention (virtual clock).
//! - 400 for an unknown/invalid position or `limit`, and for `seek` (not emulated).
//! - 404 for another org / integration / registration.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::HeaderMap;
use serde_json::{json, Value};

use super::ims::{api_key_ok, bad_api_key, bearer_ok, unauthorized};
use super::{fault_response, json_response, AemEmulator, AemEndpoint};

/// Responses are cut before this many bytes of events (Adobe: 1.5 MB).
const MAX_RESPONSE_BYTES: usize = 1_500_000;

fn position_of(seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("emulated-journal:{seq}"))
}

fn seq_of(position: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(position)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("emulated-journal:")?
        .parse()
        .ok()
}

fn text(status: u16, body: String) -> Response {
    (
        http::StatusCode::from_u16(status).expect("valid"),
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn with_link(mut r: Response, target: &str) -> Response {
    r.headers_mut().append(
        http::header::LINK,
        http::HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")).expect("ascii"),
    );
    r
}

pub(crate) async fn journal(
    State(emu): State<AemEmulator>,
    Path((org, integration, registration)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    uri: http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(f) = emu.take_fault(AemEndpoint::Journal) {
        return fault_response(f);
    }
    let c = &emu.inner.config;
    if org != c.org_id || integration != c.integration_id || registration != c.registration_id {
        return json_response(
            404,
            &json!({"error": "not_found", "message": "unknown journal"}),
        );
    }
    if !bearer_ok(&emu, &headers) {
        return unauthorized();
    }
    if !api_key_ok(&emu, &headers) {
        return bad_api_key();
    }
    if headers.get("x-ims-org-id").and_then(|v| v.to_str().ok()) != Some(c.org_id.as_str()) {
        return json_response(
            403,
            &json!({"error_code": "403027", "message": "x-ims-org-id does not match the registration"}),
        );
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("seek").is_some() {
        return text(400, "seek is not supported by the emulator".into());
    }
    let limit = match get("limit") {
        None => None,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return text(400, format!("Invalid limit: {l}")),
        },
    };
    let path = uri.path().to_owned();
    let request_target = match &query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.clone(),
    };
    let next_target = |since: &str| {
        let mut t = format!("{path}?since={since}");
        if let Some(l) = limit {
            t.push_str(&format!("&limit={l}"));
        }
        t
    };
    let retry_after = c.journal_retry_after_secs.to_string();
    let no_content = |next: &str| {
        let mut r = with_link(http::StatusCode::NO_CONTENT.into_response(), next);
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_str(&retry_after).expect("digits"),
        );
        r
    };

    let state = emu.inner.state.lock();
    let now = emu.now(&state);
    let retention = c.journal_retention;
    let alive = |at: std::time::Instant| at + retention > now;
    let since_seq = match get("since") {
        Some(pos) => {
            let Some(seq) = seq_of(pos).filter(|s| *s <= state.next_seq) else {
                return text(400, format!("Invalid position: {pos}"));
            };
            let expired = state
                .journal
                .iter()
                .find(|i| i.seq == seq)
                .is_some_and(|i| !alive(i.at));
            if expired {
                return text(410, format!("Events at position {pos} have expired."));
            }
            seq
        }
        None if get("latest") == Some("true") => {
            return match state.journal.last() {
                Some(last) => no_content(&next_target(&position_of(last.seq))),
                None => no_content(&request_target),
            };
        }
        None => 0,
    };
    let max = limit.unwrap_or(c.journal_default_limit).max(1);
    let mut events = Vec::new();
    let mut bytes = 0;
    for item in state
        .journal
        .iter()
        .filter(|i| i.seq > since_seq && alive(i.at))
    {
        if events.len() >= max {
            break;
        }
        let size = item.event.to_string().len() + 64;
        if !events.is_empty() && bytes + size > MAX_RESPONSE_BYTES {
            break;
        }
        bytes += size;
        events.push((item.seq, item.event.clone()));
    }
    drop(state);
    let Some((last_seq, _)) = events.last() else {
        return no_content(&request_target);
    };
    let last = position_of(*last_seq);
    let body: Vec<Value> = events
        .iter()
        .map(|(seq, event)| json!({"position": position_of(*seq), "event": event}))
        .collect();
    let count = body.len();
    with_link(
        json_response(
            200,
            &json!({"events": body, "_page": {"last": last, "count": count}}),
        ),
        &next_target(&last),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_reject_garbage() {
        assert_eq!(seq_of(&position_of(42)), Some(42));
        assert_eq!(seq_of("nope"), None);
        assert_eq!(seq_of(""), None);
    }
}
