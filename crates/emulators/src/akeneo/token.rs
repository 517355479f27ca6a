//! `POST /api/oauth/v1/token` (§2.1, §2.2) and the two routes that need no token (§2.3).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::http::{base_url, error, essence, json, json_text, ordered};
use super::routes;
use super::state::{bump, Shared};

/// `TokenController::CONTENT_MAX_SIZE` (CE).
const CONTENT_MAX_SIZE: usize = 200;

/// Request parameters as PHP's `filter_var_array(..., FILTER_REQUIRE_SCALAR)` sees them:
/// scalars become strings, arrays/objects become "not given".
type Params = HashMap<String, Option<String>>;

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
}

fn unprocessable(s: &Shared, message: &str) -> Response {
    bump(&s.counters.token_failures);
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// OAuth2 server error codes, mapped to Akeneo's messages by `TokenController::getErrorMessage`.
#[derive(Clone, Copy)]
enum OAuthError {
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    InvalidGrant,
}

fn message(e: OAuthError, refresh: bool) -> &'static str {
    match (e, refresh) {
        (OAuthError::InvalidRequest, false) => {
            "Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid"
        }
        (OAuthError::InvalidRequest, true) => {
            "Parameter \"grant_type\" or \"refresh_token\" is missing or empty"
        }
        (OAuthError::InvalidClient, _) => {
            "Parameter \"client_id\" is missing or does not match any client, or secret is invalid"
        }
        (OAuthError::UnauthorizedClient, _) => "This grant type is not authorized for this client",
        (OAuthError::InvalidGrant, false) => "No user found for the given username and password",
        (OAuthError::InvalidGrant, true) => "Refresh token is invalid or has expired",
    }
}

/// `OAuth2::GRANT_TYPE_REGEXP` of FOS oauth2-php.
fn grant_type_syntax_ok(g: &str) -> bool {
    matches!(
        g,
        "authorization_code" | "token" | "password" | "client_credentials" | "refresh_token"
    ) || (g.starts_with("http://") && g.len() > 7)
        || (g.starts_with("https://") && g.len() > 8)
        || (g.starts_with("urn:") && g.len() > 4)
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(hex::encode(bytes))
}

/// Client credentials from `Authorization: Basic` (or `client_id`/`client_secret` in the body,
/// which the OAuth2 library also accepts).
fn client_credentials(headers: &HeaderMap, params: &Params) -> Option<(String, String)> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (id, secret) = text.split_once(':').unwrap_or((text.as_str(), ""));
            (!id.is_empty()).then(|| (id.to_owned(), secret.to_owned()))
        });
    basic.or_else(|| {
        let id = params.get("client_id").cloned().flatten()?;
        if id.is_empty() {
            return None;
        }
        let secret = params
            .get("client_secret")
            .cloned()
            .flatten()
            .unwrap_or_default();
        Some((id, secret))
    })
}

pub(crate) async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The body listener decodes JSON or form bodies (400 / 415) before the controller runs.
    let mut params: Params = HashMap::new();
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type.as_deref().map(essence).as_deref() {
        None => {}
        Some("application/json") => {
            let blank = body.iter().all(u8::is_ascii_whitespace);
            if !blank {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(m)) => {
                        for (k, v) in m {
                            params.insert(k, scalar(&v));
                        }
                    }
                    Ok(Value::Array(_)) => {}
                    _ => {
                        bump(&s.counters.token_failures);
                        return error(StatusCode::BAD_REQUEST, "Invalid json message received");
                    }
                }
            }
        }
        Some("application/x-www-form-urlencoded") => {
            for (k, v) in url::form_urlencoded::parse(&body) {
                params.insert(k.into_owned(), Some(v.into_owned()));
            }
        }
        Some(_) => {
            bump(&s.counters.token_failures);
            let raw = content_type.unwrap_or_default();
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "'{raw}' in 'Content-type' header is not valid.  Only 'application/json' is allowed."
                ),
            );
        }
    }

    if body.len() > CONTENT_MAX_SIZE {
        return unprocessable(&s, "The request content size is too large");
    }

    let grant_type = params.get("grant_type").cloned().flatten();
    let refresh = grant_type.as_deref() == Some("refresh_token");
    let fail = |e: OAuthError| unprocessable(&s, message(e, refresh));

    // Order of `OAuth2::grantAccessToken` (FOS oauth2-php).
    let Some(grant) = grant_type.filter(|g| grant_type_syntax_ok(g)) else {
        return fail(OAuthError::InvalidRequest);
    };
    match client_credentials(&headers, &params) {
        Some((id, secret)) if id == s.creds.client_id && secret == s.creds.secret => {}
        _ => return fail(OAuthError::InvalidClient),
    }
    let get = |k: &str| params.get(k).cloned().flatten().filter(|v| !v.is_empty());
    match grant.as_str() {
        "password" => {
            let (Some(user), Some(pass)) = (get("username"), get("password")) else {
                return fail(OAuthError::InvalidRequest);
            };
            if user != s.creds.username || pass != s.creds.password {
                return fail(OAuthError::InvalidGrant);
            }
            bump(&s.counters.token_grants);
            issue(&s, None)
        }
        "refresh_token" => {
            let Some(rt) = get("refresh_token") else {
                return fail(OAuthError::InvalidRequest);
            };
            let valid = s
                .tokens
                .lock()
                .refresh
                .get(&rt)
                .is_some_and(|e| *e > Instant::now());
            if !valid {
                return fail(OAuthError::InvalidGrant);
            }
            bump(&s.counters.token_refreshes);
            issue(&s, Some(rt))
        }
        // Akeneo connections are only allowed the password and refresh_token grants.
        _ => fail(OAuthError::UnauthorizedClient),
    }
}

/// A new access token and a new refresh token (§2.1). The refresh token used, if any, is
/// deleted: FOS oauth2-php's `createAccessToken` unsets the old refresh token whenever it issues
/// a new one, so Akeneo refresh tokens are single-use.
fn issue(s: &Shared, used_refresh: Option<String>) -> Response {
    let (ttl, refresh_ttl) = *s.token_ttl.read();
    let access = new_token();
    let refresh = new_token();
    let now = Instant::now();
    {
        let mut t = s.tokens.lock();
        t.purge_sometimes();
        if let Some(old) = used_refresh {
            t.refresh.remove(&old);
        }
        t.access.insert(access.clone(), now + ttl);
        t.refresh.insert(refresh.clone(), now + refresh_ttl);
    }
    let mut r = json_text(
        StatusCode::OK,
        ordered(&[
            ("access_token", access.into()),
            ("expires_in", ttl.as_secs().into()),
            ("token_type", "bearer".into()),
            ("scope", Value::Null),
            ("refresh_token", refresh.into()),
        ]),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /api/rest/v1`: the endpoint list (no token needed).
pub(crate) async fn endpoint_list(headers: HeaderMap) -> Response {
    let mut routes_map = Map::new();
    for (name, route) in [
        ("pim_api_asset_family_list", routes::FAMILIES),
        ("pim_api_asset_family_get", routes::FAMILY),
        ("pim_api_asset_attribute_list", routes::ATTRIBUTES),
        ("pim_api_asset_attribute_get", routes::ATTRIBUTE),
        ("pim_api_asset_attribute_option_list", routes::OPTIONS),
        ("pim_api_asset_attribute_option_get", routes::OPTION),
        ("pim_api_asset_list", routes::ASSETS),
        ("pim_api_asset_get", routes::ASSET),
        ("pim_api_asset_media_file_create", routes::MEDIA_FILES),
        ("pim_api_asset_media_file_download", routes::MEDIA_FILE),
        ("pim_api_product_uuid_list", routes::PRODUCTS_UUID),
        ("pim_api_product_uuid_get", routes::PRODUCT_UUID),
        ("pim_api_product_list", routes::PRODUCTS),
        ("pim_api_product_get", routes::PRODUCT),
        ("pim_api_attribute_list", routes::PRODUCT_ATTRIBUTES),
        ("pim_api_attribute_get", routes::PRODUCT_ATTRIBUTE),
    ] {
        let methods: Vec<&str> = routes::allowed_methods(route)
            .unwrap_or(&[])
            .iter()
            .map(|m| m.as_str())
            .collect();
        routes_map.insert(
            name.into(),
            json!({"route": route.replace("{*code}", "{code}"), "methods": methods}),
        );
    }
    json(
        StatusCode::OK,
        &json!({
            "host": base_url(&headers),
            "authentication": {
                "fos_oauth_server_token": {"route": routes::TOKEN, "methods": ["POST"]}
            },
            "routes": routes_map,
        }),
    )
}

/// `GET /api/rest/v1/system-information` (§2.3, no token needed).
pub(crate) async fn system_information() -> Response {
    json(
        StatusCode::OK,
        &json!({"version": "20210521041041", "edition": "Serenity"}),
    )
}
