//! The IMS token endpoint: `POST /ims/token/v3`.
//!
//! Body (`Content-Type: application/x-www-form-urlencoded`; parameters in the query string are
//! accepted too, as Adobe allows):
//! `grant_type=client_credentials&client_id=..&client_secret=..&scope=a,b,c`.
//!
//! - 200 `{"access_token": "<JWT-shaped>", "token_type": "bearer", "expires_in": 86399}`;
//! - OAuth2 errors `{"error", "error_description"}`: 400 `invalid_request` (wrong content type,
//!   missing parameter), 400 `unsupported_grant_type`, 400 `invalid_client` (unknown client id),
//!   401 `invalid_client` (wrong secret), 400 `invalid_scope` (a scope the credential lacks,
//!   with the message IMS was seen sending). The exact statuses of `invalid_client` /
//!   `invalid_scope` are \[unverified]; the shape is confirmed.
//! - A request without `scope` is granted the credential's scopes \[unverified].

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use base64::Engine;
use http::HeaderMap;
use serde_json::json;

use super::{fault_response, json_response, AemEmulator, AemEndpoint, Token};

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

pub(crate) async fn token(
    State(emu): State<AemEmulator>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(f) = emu.take_fault(AemEndpoint::Ims) {
        return fault_response(f);
    }
    let form_ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !body.is_empty() && !form_ct {
        return oauth_error(
            400,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let mut params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    // Body parameters win over query parameters.
    params.splice(0..0, url::form_urlencoded::parse(&body).into_owned());
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let c = &emu.inner.config;
    let Some(grant_type) = get("grant_type") else {
        return oauth_error(400, "invalid_request", "missing grant_type parameter");
    };
    if grant_type != "client_credentials" {
        return oauth_error(400, "unsupported_grant_type", "unsupported grant_type");
    }
    let Some(client_id) = get("client_id") else {
        return oauth_error(400, "invalid_request", "missing client_id parameter");
    };
    if client_id != c.client_id {
        return oauth_error(400, "invalid_client", "invalid client_id parameter");
    }
    let Some(secret) = get("client_secret") else {
        return oauth_error(400, "invalid_request", "missing client_secret parameter");
    };
    if secret != c.client_secret {
        return oauth_error(401, "invalid_client", "invalid client_secret parameter");
    }
    let scopes: Vec<&str> = get("scope")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if scopes
        .iter()
        .any(|s| !c.allowed_scopes.iter().any(|a| a == s))
    {
        return oauth_error(
            400,
            "invalid_scope",
            "The metascopes in the JWT are not a subset of the metascopes in the binding.",
        );
    }
    let mut state = emu.inner.state.lock();
    state.tokens_issued += 1;
    let n = state.tokens_issued;
    let now = emu.now(&state);
    let created_at = chrono::Utc::now().timestamp_millis();
    let expires_in = c.token_expires_in;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    // JWT-shaped (Adobe's tokens are JWTs; nobody may rely on parsing them).
    let access_token = format!(
        "{}.{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT", "x5u": "emulated.cer"})),
        b64(json!({
            "type": "access_token", "client_id": client_id, "as": "ims-na1",
            "created_at": created_at.to_string(), "expires_in": (expires_in * 1000).to_string(),
            "scope": scopes.join(","), "id": format!("emulated-{n}-{}", uuid::Uuid::new_v4()),
        })),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
    );
    state.tokens.insert(
        access_token.clone(),
        Token {
            issued_at: now,
            expires_in: Duration::from_secs(expires_in),
            revoked: false,
        },
    );
    json_response(
        200,
        &json!({"access_token": access_token, "token_type": "bearer", "expires_in": expires_in}),
    )
}

/// Checks `Authorization: Bearer <token issued here, not expired, not revoked>`.
pub(crate) fn bearer_ok(emu: &AemEmulator, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    let state = emu.inner.state.lock();
    let now = emu.now(&state);
    state
        .tokens
        .get(token)
        .is_some_and(|t| !t.revoked && now < t.issued_at + t.expires_in)
}

/// Checks `X-Api-Key` against the accepted keys (the client id by default).
pub(crate) fn api_key_ok(emu: &AemEmulator, headers: &HeaderMap) -> bool {
    let c = &emu.inner.config;
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| {
            if c.accepted_api_keys.is_empty() {
                k == c.client_id
            } else {
                c.accepted_api_keys.iter().any(|a| a == k)
            }
        })
}

/// Adobe gateway-style 401 \[unverified body].
pub(crate) fn unauthorized() -> Response {
    json_response(
        401,
        &json!({"error_code": "401013", "message": "Oauth token is not valid"}),
    )
}

/// Adobe gateway-style 403 for a missing or unknown API key \[unverified status and body].
pub(crate) fn bad_api_key() -> Response {
    json_response(
        403,
        &json!({"error_code": "403003", "message": "Api Key is invalid"}),
    )
}
