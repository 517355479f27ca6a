//! The wiremock harness the client's tests share: the configuration, a token endpoint, the
//! structure of family `packshots`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use assetbridge_akeneo::AkeneoConfig;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const FAMILY: &str = "packshots";

pub fn config(server: &MockServer) -> AkeneoConfig {
    let mut c = AkeneoConfig::new(
        server.uri(),
        "client_1",
        "s3cr3t_x",
        "api_user",
        "pa55word_y",
    );
    c.retry_base_ms = 1;
    c.retry_max_ms = 5;
    c.max_retry_after_ms = 50;
    c.requests_per_second = None;
    c.timeout_secs = 5;
    c
}

pub fn token_body(n: usize, expires_in: Option<u64>) -> Value {
    let mut v = json!({
        "access_token": format!("access_{n}"),
        "token_type": "bearer",
        "scope": null,
        "refresh_token": format!("refresh_{n}"),
    });
    if let Some(e) = expires_in {
        v["expires_in"] = json!(e);
    }
    v
}

/// A token endpoint that hands out `access_1`, `access_2`, ... (password and refresh grants).
pub async fn mount_token(server: &MockServer, expires_in: Option<u64>) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .respond_with(move |_: &Request| {
            let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(token_body(i, expires_in))
        })
        .mount(server)
        .await;
    n
}

pub fn attribute(code: &str, kind: &str) -> Value {
    json!({"code": code, "labels": {}, "type": kind, "value_per_locale": false,
           "value_per_channel": false, "is_required_for_completeness": false})
}

/// Family `packshots`: `title` (text, 20 chars), `color` (single_option red/blue), `media` (media_file).
pub async fn mount_structure(server: &MockServer) -> Arc<AtomicUsize> {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    Mock::given(method("GET"))
        .and(path(format!("/api/rest/v1/asset-families/{FAMILY}")))
        .respond_with(move |_: &Request| {
            f.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(200).set_body_json(
                json!({"code": FAMILY, "labels": {}, "attribute_as_main_media": "media"}),
            )
        })
        .mount(server)
        .await;
    let mut title = attribute("title", "text");
    title["max_characters"] = json!(20);
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/rest/v1/asset-families/{FAMILY}/attributes"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            title,
            attribute("color", "single_option"),
            attribute("media", "media_file"),
        ])))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/rest/v1/asset-families/{FAMILY}/attributes/color/options"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"code": "red", "labels": {}}, {"code": "blue", "labels": {}}
        ])))
        .mount(server)
        .await;
    fetches
}
