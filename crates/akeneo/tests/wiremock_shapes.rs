//! Unit-level tests of the client against `wiremock`: exact request shapes, and answers the
//! emulator does not produce (HTTP-date Retry-After, SaaS 403 on oversized batches, missing
//! `expires_in`, odd header case, ...).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use assetbridge_akeneo::{
    AkeneoClient, AkeneoConfig, AkeneoError, AssetQuery, DeleteOutcome, ItemOutcome,
};
use assetbridge_core::{PimAsset, PimValue};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;
use support::*;

/// Answers a batch PATCH like Akeneo: one `{code, status_code}` per item; codes starting with
/// `new_` are created, `bad_` refused (422), others updated.
fn batch_responder(req: &Request) -> ResponseTemplate {
    let items: Vec<Value> = serde_json::from_slice(&req.body).unwrap();
    let out: Vec<Value> = items
        .iter()
        .map(|a| {
            let code = a["code"].as_str().unwrap();
            if code.starts_with("new_") {
                json!({"code": code, "status_code": 201})
            } else if code.starts_with("bad_") {
                json!({"code": code, "status_code": 422,
                       "message": "The asset has data that does not comply with the business rules.",
                       "errors": [{"property": "values.title", "message": "The locale \"en_AU\" is not activated."}]})
            } else {
                json!({"code": code, "status_code": 204})
            }
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(out)
}

fn asset(code: &str, title: &str) -> PimAsset {
    let mut a = PimAsset::new(code);
    a.push_value(
        "title",
        PimValue {
            locale: None,
            channel: None,
            data: json!(title),
        },
    );
    a
}

async fn requests_to(server: &MockServer, m: &str, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .collect()
}

#[tokio::test]
async fn password_grant_shape_and_bearer_use() {
    let server = MockServer::start().await;
    // The PHP client's test token has no expires_in: it must work.
    mount_token(&server, None).await;
    mount_structure(&server).await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let s = client.family_structure(FAMILY).await.unwrap();
    assert_eq!(s.attribute("title").unwrap().max_characters, Some(20));
    assert_eq!(
        s.attribute("color")
            .unwrap()
            .options
            .as_ref()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.attribute_as_main_media.as_deref(), Some("media"));

    let tokens = requests_to(&server, "POST", "/api/oauth/v1/token").await;
    assert_eq!(tokens.len(), 1, "one grant for three calls");
    let t = &tokens[0];
    assert!(t.body.len() <= 200, "token body is {} bytes", t.body.len());
    assert_eq!(
        t.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    let body: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        body,
        json!({"grant_type": "password", "username": "api_user", "password": "pa55word_y"})
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("client_1:s3cr3t_x");
    assert_eq!(
        t.headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Basic {basic}")
    );
    for r in server.received_requests().await.unwrap() {
        if r.url.path().starts_with("/api/rest/") {
            assert_eq!(
                r.headers.get("authorization").unwrap().to_str().unwrap(),
                "Bearer access_1"
            );
        }
    }
    // Cached: no new fetch.
    client.family_structure(FAMILY).await.unwrap();
    assert_eq!(client.stats().structure_fetches, 1);
}

#[tokio::test]
async fn unauthorized_refreshes_once_and_falls_back_to_password_grant() {
    let server = MockServer::start().await;
    // refresh grant refused (422), password grant gives access_2.
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .and(body_string_contains("refresh_token"))
        .respond_with(ResponseTemplate::new(422).set_body_json(
            json!({"code": 422, "message": "Refresh token is invalid or has expired"}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    let grants = mount_token(&server, Some(3600)).await;
    // The first token is refused once.
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/asset-families/packshots/assets/a1"))
        .and(header("authorization", "Bearer access_1"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 401, "message": "Authentication is required"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/asset-families/packshots/assets/a1"))
        .and(header("authorization", "Bearer access_2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a1", "values": {}})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let a = client.get_asset(FAMILY, "a1").await.unwrap().unwrap();
    assert_eq!(a["code"], "a1");
    let st = client.stats();
    assert_eq!(st.unauthorized_replays, 1);
    assert_eq!(st.refresh_failures, 1);
    assert_eq!(st.password_grants, 2);
    assert_eq!(grants.load(Ordering::SeqCst), 2);
    let tokens = requests_to(&server, "POST", "/api/oauth/v1/token").await;
    let kinds: Vec<String> = tokens
        .iter()
        .map(|t| {
            serde_json::from_slice::<Value>(&t.body).unwrap()["grant_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["password", "refresh_token", "password"]);
    let refresh: Value = serde_json::from_slice(&tokens[1].body).unwrap();
    assert_eq!(refresh["refresh_token"], "refresh_1");
}

#[tokio::test]
async fn a_second_401_is_an_auth_error() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 401, "message": "Authentication is required"})),
        )
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let e = client.get_asset(FAMILY, "a1").await.unwrap_err();
    assert!(
        matches!(e, AkeneoError::Auth { status: 401, ref message } if message == "Authentication is required"),
        "{e:?}"
    );
    assert!(!e.is_transient());
    assert_eq!(
        requests_to(
            &server,
            "GET",
            "/api/rest/v1/asset-families/packshots/assets/a1"
        )
        .await
        .len(),
        2
    );
}

#[tokio::test]
async fn bad_credentials_are_an_auth_error_with_the_pim_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .respond_with(ResponseTemplate::new(422).set_body_json(
            json!({"code": 422, "message": "No user found for the given username and password"}),
        ))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let e = client.family_structure(FAMILY).await.unwrap_err();
    assert!(
        matches!(&e, AkeneoError::Auth { status: 422, message } if message == "No user found for the given username and password"),
        "{e:?}"
    );
    // Concurrent callers waiting for a failing grant share its failure.
    let calls = (0..10).map(|i| {
        let c = client.clone();
        tokio::spawn(async move { c.get_asset(FAMILY, &format!("a{i}")).await })
    });
    for r in futures::future::join_all(calls).await {
        let e = r.unwrap().unwrap_err();
        assert!(
            matches!(&e, AkeneoError::Auth { status: 422, message } if message.starts_with("No user found")),
            "{e:?}"
        );
    }
    let grants = requests_to(&server, "POST", "/api/oauth/v1/token")
        .await
        .len();
    assert!(grants <= 3, "{grants} grants for 11 callers");
}

#[tokio::test]
async fn token_renewed_before_expiry_with_the_refresh_grant() {
    let server = MockServer::start().await;
    mount_token(&server, Some(1)).await; // renewed 0.25 s before expiry
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a1", "values": {}})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    client.get_asset(FAMILY, "a1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.get_asset(FAMILY, "a1").await.unwrap();
    let st = client.stats();
    assert_eq!((st.password_grants, st.token_refreshes), (1, 1));
    assert_eq!(st.unauthorized_replays, 0, "renewed before any 401");
    let gets = requests_to(
        &server,
        "GET",
        "/api/rest/v1/asset-families/packshots/assets/a1",
    )
    .await;
    assert_eq!(
        gets[1]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        "Bearer access_2"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body(1, Some(3600)))
                .set_delay(Duration::from_millis(150)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let calls = (0..30).map(|i| {
        let c = client.clone();
        tokio::spawn(async move { c.get_asset(FAMILY, &format!("a{i}")).await })
    });
    for r in futures::future::join_all(calls).await {
        assert!(r.unwrap().unwrap().is_some());
    }
    assert_eq!(
        requests_to(&server, "POST", "/api/oauth/v1/token")
            .await
            .len(),
        1
    );
    assert!(client.stats().max_in_flight <= 4);
}

#[tokio::test]
async fn app_token_needs_no_grant() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer app_tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .mount(&server)
        .await;
    let mut c = AkeneoConfig::with_app_token(server.uri(), "app_tok");
    c.retry_base_ms = 1;
    c.retry_max_ms = 2;
    let client = AkeneoClient::new(c).unwrap();
    assert!(client.get_asset(FAMILY, "a").await.unwrap().is_some());
    assert!(requests_to(&server, "POST", "/api/oauth/v1/token")
        .await
        .is_empty());
}

#[tokio::test]
async fn retry_after_as_http_date_and_absent() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(1));
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", at.as_str()))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .with_priority(3)
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.max_retry_after_ms = 5_000;
    let client = AkeneoClient::new(c).unwrap();
    let start = Instant::now();
    assert!(client.get_asset(FAMILY, "a").await.unwrap().is_some());
    let took = start.elapsed();
    // HTTP date ~1 s ahead (second resolution: 0–1 s) + absent header = 1 s default.
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    let st = client.stats();
    assert_eq!(st.rate_limited, 2);
    assert!(st.rate_limit_wait >= Duration::from_millis(1000));
    assert_eq!(st.retries, 0, "429s are not counted as transient retries");
}

#[tokio::test]
async fn persistent_429_is_rate_limited_after_its_own_bound() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.max_retries = 1;
    c.max_rate_limit_retries = 7;
    let client = AkeneoClient::new(c).unwrap();
    let e = client.get_asset(FAMILY, "a").await.unwrap_err();
    assert!(matches!(e, AkeneoError::RateLimited { .. }), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(
        requests_to(
            &server,
            "GET",
            "/api/rest/v1/asset-families/packshots/assets/a"
        )
        .await
        .len(),
        8
    );
}

#[tokio::test]
async fn persistent_5xx_is_transient_after_bounded_attempts() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.max_retries = 3;
    let client = AkeneoClient::new(c).unwrap();
    let e = client.get_asset(FAMILY, "a").await.unwrap_err();
    assert!(
        matches!(&e, AkeneoError::Transient { status: Some(503), message } if message.contains("upstream down")),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_eq!(
        requests_to(
            &server,
            "GET",
            "/api/rest/v1/asset-families/packshots/assets/a"
        )
        .await
        .len(),
        4
    );
    assert_eq!(client.stats().retries, 3);
}

#[tokio::test]
async fn timeouts_are_transient() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.timeout_secs = 1;
    c.max_retries = 0;
    let client = AkeneoClient::new(c).unwrap();
    let e = client.get_asset(FAMILY, "a").await.unwrap_err();
    assert!(
        matches!(&e, AkeneoError::Transient { status: None, message } if message.contains("timed out")),
        "{e:?}"
    );
    assert_eq!(client.stats().transport_errors, 1);
}

#[tokio::test]
async fn upsert_chunks_results_in_order_and_local_validation() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/asset-families/packshots/assets"))
        .and(header("content-type", "application/json"))
        .respond_with(batch_responder)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut assets: Vec<PimAsset> = (0..250)
        .map(|i| match i % 50 {
            0 => asset(&format!("new_{i}"), "x"),
            1 => asset(&format!("bad_{i}"), "x"),
            _ => asset(&format!("a_{i}"), "x"),
        })
        .collect();
    assets[7] = asset("too_long", "this title is longer than twenty characters");
    assets[8] = asset("bad-code", "x");
    let results = client.upsert_assets(FAMILY, &assets).await.unwrap();
    assert_eq!(results.len(), 250);
    for (a, r) in assets.iter().zip(&results) {
        assert_eq!(a.code, r.code);
    }
    assert_eq!(results[0].outcome, ItemOutcome::Created);
    assert_eq!(results[2].outcome, ItemOutcome::Updated);
    let ItemOutcome::Failed(f) = &results[1].outcome else {
        panic!("{:?}", results[1])
    };
    assert_eq!(f.status, 422);
    assert!(f.permanent);
    assert!(f.message.contains("business rules"));
    assert_eq!(f.errors.as_ref().unwrap()[0]["property"], "values.title");
    let ItemOutcome::Failed(f) = &results[7].outcome else {
        panic!()
    };
    assert!(f.permanent && f.status == 422);
    assert!(
        f.message.contains("`title`") && f.message.contains("20"),
        "{}",
        f.message
    );
    assert!(
        matches!(&results[8].outcome, ItemOutcome::Failed(f) if f.message.contains("Asset code"))
    );

    let patches = requests_to(
        &server,
        "PATCH",
        "/api/rest/v1/asset-families/packshots/assets",
    )
    .await;
    let sizes: Vec<usize> = patches
        .iter()
        .map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len())
        .collect();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        248,
        "the 2 invalid assets are not sent"
    );
    assert!(sizes.iter().all(|s| *s <= 100));
    assert_eq!(sizes.len(), 3);
    // Value objects carry all three keys.
    let first: Vec<Value> = serde_json::from_slice(&patches[0].body).unwrap();
    assert_eq!(
        first[0]["values"]["title"][0],
        json!({"locale": null, "channel": null, "data": "x"})
    );
}

#[tokio::test]
async fn too_large_batches_are_split_and_acl_403_is_not() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    // SaaS: more than 25 assets → 403 without an Akeneo ACL message; alone "huge" → 413.
    Mock::given(method("PATCH"))
        .and(|r: &Request| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len() > 25)
        .respond_with(
            ResponseTemplate::new(403).set_body_string("<html>Request entity too large</html>"),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(body_string_contains("\"huge\""))
        .respond_with(ResponseTemplate::new(413).set_body_json(json!({"code": 413, "message": "Too many resources to process, 100 is the maximum allowed."})))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(batch_responder)
        .with_priority(3)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut assets: Vec<PimAsset> = (0..100).map(|i| asset(&format!("a_{i}"), "x")).collect();
    assets[60] = asset("huge", "x");
    let results = client.upsert_assets(FAMILY, &assets).await.unwrap();
    let ok = results.iter().filter(|r| r.is_success()).count();
    assert_eq!(ok, 99);
    assert!(
        matches!(&results[60].outcome, ItemOutcome::Failed(f) if f.status == 413 && f.permanent)
    );
    assert!(client.stats().batch_splits >= 3);
    // Every asset except "huge" was written exactly once.
    let mut written = std::collections::HashMap::<String, usize>::new();
    for r in requests_to(
        &server,
        "PATCH",
        "/api/rest/v1/asset-families/packshots/assets",
    )
    .await
    {
        let items: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        if items.len() <= 25 && !items.iter().any(|i| i["code"] == "huge") {
            for i in items {
                *written
                    .entry(i["code"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(written.len(), 99);
    assert!(written.values().all(|n| *n == 1));

    // An ACL 403 is an error for the whole call, not split.
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"code": 403, "message": "Access forbidden. You are not allowed to create or update assets."})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let e = client
        .upsert_assets(FAMILY, &assets[..10])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AkeneoError::Request { status: 403, message, .. } if message.starts_with("Access forbidden")),
        "{e:?}"
    );
    assert_eq!(
        requests_to(
            &server,
            "PATCH",
            "/api/rest/v1/asset-families/packshots/assets"
        )
        .await
        .len(),
        1
    );
}

#[tokio::test]
async fn drift_refusal_drops_the_cached_structure() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    let fetches = mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"code": "a", "status_code": 422, "message": "The asset has data that does not comply with the business rules.",
             "errors": [{"property": "values.color", "message": "The option \"red\" does not exist for the attribute \"color\""}]}
        ])))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut a = asset("a", "x");
    a.push_value(
        "color",
        PimValue {
            locale: None,
            channel: None,
            data: json!("red"),
        },
    );
    let r = client.upsert_assets(FAMILY, &[a.clone()]).await.unwrap();
    assert!(!r[0].is_success());
    client.upsert_assets(FAMILY, &[a]).await.unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "structure fetched again after the drift"
    );
}

#[tokio::test]
async fn missing_options_are_created_when_opted_in() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(path_regex(
            r"^/api/rest/v1/asset-families/packshots/attributes/color/options/[a-z_]+$",
        ))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/asset-families/packshots/assets"))
        .respond_with(batch_responder)
        .mount(&server)
        .await;
    let with_color = |code: &str, color: &str| {
        let mut a = asset(code, "x");
        a.push_value(
            "color",
            PimValue {
                locale: None,
                channel: None,
                data: json!(color),
            },
        );
        a
    };
    let assets = [
        with_color("a", "green"),
        with_color("b", "Not-Valid"),
        with_color("c", "red"),
    ];

    // Not opted in: refused locally, nothing created.
    let client = AkeneoClient::new(config(&server)).unwrap();
    let r = client.upsert_assets(FAMILY, &assets).await.unwrap();
    assert!(
        matches!(&r[0].outcome, ItemOutcome::Failed(f) if f.message.contains("option `green` does not exist"))
    );
    assert!(r[2].is_success());
    assert_eq!(client.stats().options_created, 0);

    let mut c = config(&server);
    c.create_missing_options = vec!["color".into()];
    let client = AkeneoClient::new(c).unwrap();
    let r = client.upsert_assets(FAMILY, &assets).await.unwrap();
    assert!(r[0].is_success(), "{:?}", r[0]);
    assert!(
        !r[1].is_success(),
        "an invalid option code is never created"
    );
    assert!(r[2].is_success());
    assert_eq!(client.stats().options_created, 1);
    let created = requests_to(
        &server,
        "PATCH",
        "/api/rest/v1/asset-families/packshots/attributes/color/options/green",
    )
    .await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&created[0].body).unwrap(),
        json!({"code": "green", "labels": {}})
    );
}

#[tokio::test]
async fn list_assets_follows_next_links_page_by_page() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    let page = |from: usize, n: usize, next: Option<&str>| {
        let items: Vec<Value> = (from..from + n)
            .map(|i| json!({"code": format!("a{i}"), "values": {}}))
            .collect();
        let mut links = json!({"self": {"href": "x"}, "first": {"href": "x"}});
        if let Some(n) = next {
            links["next"] = json!({"href": n});
        }
        json!({"_links": links, "_embedded": {"items": items}})
    };
    // Page 2's link names another host: the client must stay on the configured PIM.
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/asset-families/packshots/assets"))
        .and(wiremock::matchers::query_param("search_after", "p3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(0, 0, None)))
        .mount(&server)
        .await;
    let p3 =
        "http://elsewhere.invalid:1/api/rest/v1/asset-families/packshots/assets?search_after=p3"
            .to_string();
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/asset-families/packshots/assets"))
        .and(wiremock::matchers::query_param("search_after", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(100, 100, Some(&p3))))
        .mount(&server)
        .await;
    let p2 = format!(
        "{}/api/rest/v1/asset-families/packshots/assets?search_after=p2",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/asset-families/packshots/assets"))
        .and(wiremock::matchers::query_param_is_missing("search_after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(0, 100, Some(&p2))))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let since = chrono::DateTime::parse_from_rfc3339("2024-05-17T15:19:32Z")
        .unwrap()
        .to_utc();
    let stream = client.list_assets(
        FAMILY,
        AssetQuery {
            updated_since: Some(since),
            ..Default::default()
        },
    );
    futures::pin_mut!(stream);
    // Reading 10 items fetches one page only.
    let first: Vec<Value> = stream.as_mut().take(10).try_collect().await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(
        requests_to(
            &server,
            "GET",
            "/api/rest/v1/asset-families/packshots/assets"
        )
        .await
        .len(),
        1
    );
    let rest: Vec<Value> = stream.try_collect().await.unwrap();
    assert_eq!(first.len() + rest.len(), 200);
    let gets = requests_to(
        &server,
        "GET",
        "/api/rest/v1/asset-families/packshots/assets",
    )
    .await;
    assert_eq!(gets.len(), 3);
    let search: Value = serde_json::from_str(
        &gets[0]
            .url
            .query_pairs()
            .find(|(k, _)| k == "search")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        search,
        json!({"updated": [{"operator": ">", "value": "2024-05-17T15:19:32Z"}]})
    );
}

#[tokio::test]
async fn delete_outcomes() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("DELETE"))
        .and(path("/api/rest/v1/asset-families/packshots/assets/gone"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"code": 404, "message": "Resource `gone` does not exist."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/rest/v1/asset-families/packshots/assets/here"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/rest/v1/asset-families/nofamily/assets/here"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"code": 404, "message": "Asset family \"nofamily\" does not exist."}),
        ))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    assert_eq!(
        client.delete_asset(FAMILY, "here").await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        client.delete_asset(FAMILY, "gone").await.unwrap(),
        DeleteOutcome::NotFound
    );
    let e = client.delete_asset("nofamily", "here").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn media_upload_shape_and_size_limit() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("POST"))
        .and(path("/api/rest/v1/asset-media-files"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("ASSET-MEDIA-FILE-CODE", "1/2/3/4/abc_house.jpg")
                .insert_header("Location", "x"),
        )
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.media_max_bytes = 1000;
    let client = AkeneoClient::new(c).unwrap();
    let chunks = || {
        futures::stream::iter(
            (0..5).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + i; 100]))),
        )
    };
    let code = client
        .upload_media_file("dir/house.jpg", chunks(), Some(500))
        .await
        .unwrap();
    assert_eq!(code, "1/2/3/4/abc_house.jpg");
    let up = &requests_to(&server, "POST", "/api/rest/v1/asset-media-files").await[0];
    let ct = up.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("multipart/form-data; boundary="), "{ct}");
    let body = String::from_utf8_lossy(&up.body);
    assert!(
        body.contains("Content-Disposition: form-data; name=\"file\"; filename=\"house.jpg\""),
        "{body}"
    );
    assert!(body.contains("Content-Type: image/jpeg"));
    assert!(body.contains(&"e".repeat(100)));

    // Known too large: refused before sending.
    let e = client
        .upload_media_file("x.jpg", chunks(), Some(5000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AkeneoError::MediaTooLarge {
                size: 5000,
                limit: 1000
            }
        ),
        "{e:?}"
    );
    // Unknown length, stream passes the limit: cut and refused.
    let big = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 100]))),
    );
    let e = client
        .upload_media_file("x.jpg", big, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AkeneoError::MediaTooLarge { limit: 1000, .. }),
        "{e:?}"
    );
    // The caller's stream fails: a body error, not a retry storm.
    let broken = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("disk gone")),
    ]);
    let e = client
        .upload_media_file("x.jpg", broken, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AkeneoError::Body(m) if m.contains("disk gone")),
        "{e:?}"
    );
    assert_eq!(client.stats().media_uploads, 1);
}

#[tokio::test]
async fn media_upload_with_a_body_source_is_retried() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("POST"))
        .and(path("/api/rest/v1/asset-media-files"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/rest/v1/asset-media-files"))
        .respond_with(
            ResponseTemplate::new(201).insert_header("Asset-media-file-code", "a/b/c/d/x_y.png"),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut made = 0;
    let code = client
        .upload_media_file_with(
            "y.png",
            || {
                made += 1;
                Some(futures::stream::iter(vec![Ok::<_, std::io::Error>(
                    Bytes::from_static(b"png"),
                )]))
            },
            Some(3),
        )
        .await
        .unwrap();
    assert_eq!(code, "a/b/c/d/x_y.png");
    assert_eq!(made, 2);
    // A single stream cannot be replayed: the 503 is reported.
    Mock::given(method("POST"))
        .and(path("/api/rest/v1/asset-media-files"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let e = client
        .upload_media_file(
            "y.png",
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"png"))]),
            None,
        )
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn products_by_identifiers_are_chunked_by_100() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/products-uuid"))
        .respond_with(|r: &Request| {
            let q: std::collections::HashMap<String, String> =
                r.url.query_pairs().into_owned().collect();
            let search: Value = serde_json::from_str(&q["search"]).unwrap();
            let ids = search["sku"][0]["value"].as_array().unwrap().clone();
            assert_eq!(search["sku"][0]["operator"], "IN");
            assert_eq!(q["pagination_type"], "search_after");
            assert_eq!(q["limit"], "100");
            assert_eq!(q["attributes"], "name,sku");
            let items: Vec<Value> = ids
                .iter()
                .map(|i| {
                    json!({"uuid": format!("u-{}", i.as_str().unwrap()),
                "values": {"sku": [{"data": i, "locale": null, "scope": null}]}})
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(
                json!({"_links": {"self": {"href": "x"}}, "_embedded": {"items": items}}),
            )
        })
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut ids: Vec<String> = (0..250).map(|i| format!("sku{i}")).collect();
    ids.push("sku1".into()); // duplicate, searched once
    let products = client
        .products_by_identifiers(&ids, Some(&["name".to_string()]))
        .await
        .unwrap();
    assert_eq!(products.len(), 250);
    let gets = requests_to(&server, "GET", "/api/rest/v1/products-uuid").await;
    assert_eq!(gets.len(), 3);
}

#[tokio::test]
async fn products_updated_since_uses_the_product_date_format() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .and(path("/api/rest/v1/products-uuid"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"_links": {}, "_embedded": {"items": [{"uuid": "u1"}]}})),
        )
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let since = chrono::DateTime::parse_from_rfc3339("2016-07-04T10:00:00+02:00")
        .unwrap()
        .to_utc();
    let all: Vec<Value> = client
        .products_updated_since(since)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let get = &requests_to(&server, "GET", "/api/rest/v1/products-uuid").await[0];
    let search: Value = serde_json::from_str(
        &get.url
            .query_pairs()
            .find(|(k, _)| k == "search")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        search,
        json!({"updated": [{"operator": ">", "value": "2016-07-04 08:00:00"}]})
    );
}

#[tokio::test]
async fn ndjson_product_upsert_per_line_results() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .and(header("content-type", "application/vnd.akeneo.collection+json"))
        .respond_with(|r: &Request| {
            let body = String::from_utf8(r.body.clone()).unwrap();
            let out: Vec<String> = body
                .split('\n')
                .enumerate()
                .map(|(n, l)| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    assert!(v.get("_links").is_none());
                    let uuid = v["uuid"].as_str().unwrap();
                    if uuid.ends_with('7') {
                        json!({"line": n + 1, "uuid": uuid, "status_code": 422, "message": "Property \"group\" does not exist."}).to_string()
                    } else {
                        json!({"line": n + 1, "uuid": uuid, "status_code": 204}).to_string()
                    }
                })
                .collect();
            ResponseTemplate::new(200).set_body_raw(out.join("\n"), "application/vnd.akeneo.collection+json")
        })
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut lines: Vec<Value> = (0..150)
        .map(|i| json!({"uuid": format!("u{i}"), "_links": {"self": {"href": "x"}}, "values": {}}))
        .collect();
    lines[3] = json!("not an object");
    let results = client.upsert_products(&lines).await.unwrap();
    assert_eq!(results.len(), 150);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i);
        if i == 3 {
            assert!(matches!(&r.outcome, ItemOutcome::Failed(f) if f.permanent));
        } else if i % 10 == 7 {
            assert!(
                matches!(&r.outcome, ItemOutcome::Failed(f) if f.status == 422 && f.message.contains("group")),
                "{r:?}"
            );
            assert_eq!(r.uuid.as_deref(), Some(format!("u{i}").as_str()));
        } else {
            assert_eq!(r.outcome, ItemOutcome::Updated, "{r:?}");
        }
    }
    let patches = requests_to(&server, "PATCH", "/api/rest/v1/products-uuid").await;
    let lens: Vec<usize> = patches
        .iter()
        .map(|p| String::from_utf8_lossy(&p.body).split('\n').count())
        .collect();
    assert_eq!(lens.iter().sum::<usize>(), 149);
    assert!(lens.iter().all(|l| *l <= 100));
}

#[tokio::test]
async fn requests_per_second_ceiling() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.requests_per_second = Some(20.0);
    let client = AkeneoClient::new(c).unwrap();
    let start = Instant::now();
    // 1 token + 30 GETs: the first 20 are the burst, the other 11 need ≥ 0.5 s at 20/s.
    for i in 0..30 {
        client.get_asset(FAMILY, &format!("a{i}")).await.unwrap();
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // The wait is counted; how much of it there was depends on how long the requests took
    // themselves (on a loaded machine the bucket refills while they run).
    let waited = client.stats().throttle_wait;
    assert!(waited > Duration::ZERO, "{waited:?}");
}

#[tokio::test]
async fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let client =
        AkeneoClient::new(AkeneoConfig::new("http://127.0.0.1:9", "a", "b", "c", "d")).unwrap();
    let assets = vec![PimAsset::new("a")];
    send(&client.upsert_assets(FAMILY, &assets));
    send(&client.family_structure(FAMILY));
    send(&client.list_assets(FAMILY, AssetQuery::default()));
    send(&client.upload_media_file("a.png", futures::stream::empty(), None));
    send(&client.products_by_identifiers(&[], None));
    send(&client.upsert_products(&[]));
    send(&client.ensure_options(FAMILY, "a", &[]));
    send(&client.delete_asset(FAMILY, "a"));
}

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_never_contain_secrets() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .and(body_string_contains("refresh_token"))
        .respond_with(ResponseTemplate::new(422).set_body_json(
            json!({"code": 422, "message": "Refresh token is invalid or has expired"}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server, Some(3600)).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer access_1"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(3)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(batch_responder)
        .with_priority(4)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let r = client
        .upsert_assets(FAMILY, &[asset("a", "x"), asset("bad-code", "x")])
        .await
        .unwrap();
    assert!(r[0].is_success());
    let st = client.stats();
    assert_eq!(
        (
            st.unauthorized_replays,
            st.refresh_failures,
            st.retries,
            st.rate_limited
        ),
        (1, 1, 1, 1)
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("akeneo call"), "logging works: {text}");
    let basic = base64::engine::general_purpose::STANDARD.encode("client_1:s3cr3t_x");
    for secret in [
        "pa55word_y",
        "s3cr3t_x",
        "access_1",
        "access_2",
        "refresh_1",
        basic.as_str(),
    ] {
        assert!(!text.contains(secret), "`{secret}` in logs:\n{text}");
    }
}
