//! Response builders and request helpers shared by the handlers.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::header::{CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// Number of items of a batch request, attached to the response for the request log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemCount(pub u32);

/// Marker: the gate asked for the connection to be dropped without an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

pub(crate) const JSON: &str = "application/json";
pub(crate) const COLLECTION: &str = "application/vnd.akeneo.collection+json";
pub(crate) const MULTIPART: &str = "multipart/form-data";

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

/// A JSON object written with its keys in the given order (the PHP server's order; the
/// workspace's `serde_json` sorts object keys).
pub(crate) fn ordered(pairs: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out.push('}');
    out
}

/// A JSON response from already-serialised text.
pub(crate) fn json_text(status: StatusCode, text: String) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    r
}

/// The generic error body `{"code":<status>,"message":...}` (§3.2).
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(
        status,
        &json!({"code": status.as_u16(), "message": message.into()}),
    )
}

/// An error body with `errors` (§3.2).
pub(crate) fn error_with(status: StatusCode, message: &str, errors: Value) -> Response {
    json_text(
        status,
        ordered(&[
            ("code", status.as_u16().into()),
            ("message", message.into()),
            ("errors", errors),
        ]),
    )
}

/// An empty response (201/204) with a `Location` header (§3.1).
pub(crate) fn empty(status: StatusCode, location: Option<String>) -> Response {
    let mut r = status.into_response();
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(LOCATION, l);
    }
    r
}

/// `http://<Host>`: links and `Location` headers are absolute like Akeneo's.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// The media type of a header value without parameters, lower-cased.
pub(crate) fn essence(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The 415 checks of §3.1: `expected` must be the Content-Type (parameters ignored).
pub(crate) fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), Response> {
    match headers.get(CONTENT_TYPE) {
        None => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "The 'Content-type' header is missing. '{expected}' has to specified as value."
            ),
        )),
        Some(v) => {
            let raw = String::from_utf8_lossy(v.as_bytes()).into_owned();
            if essence(&raw) == expected {
                Ok(())
            } else {
                Err(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "'{raw}' in 'Content-type' header is not valid.  Only '{expected}' is allowed."
                    ),
                ))
            }
        }
    }
}

/// `json_decode($body, true)` as the PHP server does it: `None` for invalid JSON and for `null`
/// (both answered 400 `Invalid json message received`).
pub(crate) fn parse_json(body: &[u8]) -> Option<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(v),
    }
}

pub(crate) fn invalid_json() -> Response {
    error(StatusCode::BAD_REQUEST, "Invalid json message received")
}

/// Decoded query pairs, in order.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// The last value of a query parameter (PHP keeps the last one).
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Builds `base + path + ?k=v&...` with form-encoding.
pub(crate) fn link(base: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let mut href = format!("{base}{path}");
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    if !q.is_empty() {
        href.push('?');
        href.push_str(&q);
    }
    json!({ "href": href })
}

/// Opaque `search_after` cursor (§4.2: clients must follow `next`, never build it).
pub(crate) fn cursor_encode(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

pub(crate) fn cursor_decode(raw: &str) -> Option<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// PHP's `ucwords(gettype($v))` on a JSON-decoded value, as the JSON-schema messages print it.
pub(crate) fn php_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "Double",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

/// The identifier checks of `AssetFamilyIdentifier::fromString` / `AssetCode::fromString`
/// (CE `.../Domain/Model/...`): `what` is `"Asset family identifier"` or `"Asset code"`.
pub(crate) fn check_code(what: &str, code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    if code.len() > 255 {
        return Err(format!(
            "{what} cannot be longer than 255 characters, {} string long given",
            code.len()
        ));
    }
    if !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "{what} may contain only letters, numbers and underscores. \"{code}\" given"
        ));
    }
    Ok(())
}

/// 422 for a malformed identifier in the URI.
pub(crate) fn check_code_response(what: &str, code: &str) -> Result<(), Response> {
    check_code(what, code).map_err(|m| error(StatusCode::UNPROCESSABLE_ENTITY, m))
}

pub(crate) fn family_not_found(code: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("Asset family \"{code}\" does not exist."),
    )
}

pub(crate) fn with_items(mut r: Response, n: usize) -> Response {
    r.extensions_mut().insert(ItemCount(n as u32));
    r
}
