//! The client against the API reference (`reference/akeneo-api.md`, §n) where a call partly
//! fails or meets a limit: per-line statuses, results out of order, Retry-After on 503, 429 on
//! the token endpoint, odd token lifetimes, oversized product batches, a split batch whose
//! halves fare differently, media uploads that cannot succeed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use assetbridge_akeneo::{AkeneoClient, AkeneoError, ItemOutcome};
use assetbridge_core::{PimAsset, PimValue};
use bytes::Bytes;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;
use support::*;

/// The shared configuration, with a `Retry-After` of up to 5 s honoured (the shared one caps
/// it at 50 ms to keep the other tests fast).
fn waiting_config(server: &MockServer) -> assetbridge_akeneo::AkeneoConfig {
    let mut c = config(server);
    c.max_retry_after_ms = 5_000;
    c
}

fn asset(code: &str) -> PimAsset {
    let mut a = PimAsset::new(code);
    a.push_value(
        "title",
        PimValue {
            locale: None,
            channel: None,
            data: json!("t"),
        },
    );
    a
}

fn ok_products(r: &Request) -> ResponseTemplate {
    let body = String::from_utf8(r.body.clone()).unwrap();
    let out: Vec<String> = body
        .split('\n')
        .enumerate()
        .map(|(n, l)| {
            let v: Value = serde_json::from_str(l).unwrap();
            json!({"line": n + 1, "uuid": v["uuid"], "status_code": 204}).to_string()
        })
        .collect();
    ResponseTemplate::new(200)
        .set_body_raw(out.join("\n"), "application/vnd.akeneo.collection+json")
}

/// Lines in reverse order, one missing, one unknown extra, and statuses the client must map:
/// 422 with nested errors, 403, 500, 429 per line.
#[tokio::test]
async fn batch_lines_out_of_order_missing_extra_and_odd_statuses() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/api/rest/v1/asset-families/{FAMILY}/assets")))
        .respond_with(|r: &Request| {
            let items: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
            let mut out: Vec<Value> = items
                .iter()
                .filter(|a| a["code"] != "gone")
                .map(|a| match a["code"].as_str().unwrap() {
                    "v422" => json!({"code": "v422", "status_code": 422, "message": "The asset has an invalid format.",
                        "errors": [{"property": "values.title[0].locale", "message": "x", "nested": {"deep": [1, 2]}}]}),
                    "f403" => json!({"code": "f403", "status_code": 403, "message": "Access forbidden."}),
                    "s500" => json!({"code": "s500", "status_code": 500, "message": "boom"}),
                    "t429" => json!({"code": "t429", "status_code": 429}),
                    c => json!({"code": c, "status_code": 201}),
                })
                .collect();
            out.push(json!({"code": "stranger", "status_code": 204}));
            out.reverse();
            ResponseTemplate::new(200).set_body_json(out)
        })
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let codes = ["a1", "v422", "gone", "f403", "s500", "t429", "a2"];
    let assets: Vec<PimAsset> = codes.iter().map(|c| asset(c)).collect();
    let res = client.upsert_assets(FAMILY, &assets).await.unwrap();
    assert_eq!(
        res.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
        codes
    );
    assert_eq!(res[0].outcome, ItemOutcome::Created);
    assert_eq!(res[6].outcome, ItemOutcome::Created);
    let f = |i: usize| match &res[i].outcome {
        ItemOutcome::Failed(f) => f.clone(),
        o => panic!("{i}: {o:?}"),
    };
    assert!(f(1).permanent && f(1).status == 422 && f(1).errors.is_some());
    assert!(
        !f(2).permanent,
        "a missing line is retried, not dead-lettered"
    );
    assert!(f(3).permanent && f(3).status == 403);
    assert!(!f(4).permanent && f(4).status == 500);
    assert!(!f(5).permanent && f(5).status == 429);
}

/// §3.4: honour `Retry-After` when present — also on a 503.
#[tokio::test]
async fn retry_after_on_503_is_honoured() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .with_priority(2)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(waiting_config(&server)).unwrap();
    let start = Instant::now();
    assert!(client.get_asset(FAMILY, "a").await.unwrap().is_some());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "retried after {took:?}, Retry-After said 1 s"
    );
}

/// A 429 on the token endpoint waits `Retry-After` and tries the grant again.
#[tokio::test]
async fn token_endpoint_429_waits_and_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/oauth/v1/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_token(&server, Some(3600)).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(waiting_config(&server)).unwrap();
    let start = Instant::now();
    assert!(client.get_asset(FAMILY, "a").await.unwrap().is_some());
    assert!(start.elapsed() >= Duration::from_millis(950));
    assert_eq!(client.stats().rate_limited, 1);
}

/// A token lifetime the client cannot add to a clock must not panic.
#[tokio::test]
async fn absurd_expires_in_does_not_panic() {
    let server = MockServer::start().await;
    mount_token(&server, Some(u64::MAX)).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code": "a", "values": {}})))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let c2 = client.clone();
    let r = tokio::spawn(async move { c2.get_asset(FAMILY, "a").await.map(|v| v.is_some()) }).await;
    assert!(matches!(r, Ok(Ok(true))), "{r:?}");
}

/// §3.3 / §8.10: SaaS answers 403 to a payload too large for the platform — product batches
/// too must be split (as asset batches are), not fail as a whole.
#[tokio::test]
async fn product_batch_refused_as_too_large_by_saas_is_split() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .and(|r: &Request| String::from_utf8_lossy(&r.body).split('\n').count() > 10)
        .respond_with(
            ResponseTemplate::new(403).set_body_string("<html>Request entity too large</html>"),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .respond_with(ok_products)
        .with_priority(2)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let lines: Vec<Value> = (0..40)
        .map(|i| json!({"uuid": format!("u{i}"), "values": {}}))
        .collect();
    let res = client.upsert_products(&lines).await;
    let res = res.expect("a too-large 403 splits the batch");
    assert!(
        res.iter().all(|r| r.outcome == ItemOutcome::Updated),
        "{res:?}"
    );
}

/// One product line still refused as too large on its own is that line's failure: the other
/// lines, written, keep their results (retry only what failed).
#[tokio::test]
async fn product_line_too_large_alone_fails_only_that_line() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .and(body_string_contains("\"huge\""))
        .respond_with(
            ResponseTemplate::new(413)
                .set_body_json(json!({"code": 413, "message": "Request Entity Too Large"})),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .respond_with(ok_products)
        .with_priority(2)
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let mut lines: Vec<Value> = (0..8)
        .map(|i| json!({"uuid": format!("u{i}"), "values": {}}))
        .collect();
    lines[5] = json!({"uuid": "huge", "values": {}});
    let res = client
        .upsert_products(&lines)
        .await
        .expect("per-line results");
    for (i, r) in res.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(&r.outcome, ItemOutcome::Failed(f) if f.status == 413 && f.permanent),
                "{r:?}"
            );
        } else {
            assert_eq!(r.outcome, ItemOutcome::Updated, "{r:?}");
        }
    }
}

/// Two halves of a split asset batch: one written, one failing for good after its retries —
/// the written half keeps its results, the failing half is reported per asset (retry only what
/// failed).
#[tokio::test]
async fn a_failing_half_of_a_split_batch_does_not_discard_the_written_half() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(|r: &Request| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len() > 5)
        .respond_with(ResponseTemplate::new(413).set_body_json(
            json!({"code": 413, "message": "Too many resources to process, 100 is the maximum allowed."}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(body_string_contains("\"b_"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(|r: &Request| {
            let items: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
            ResponseTemplate::new(200).set_body_json(
                items
                    .iter()
                    .map(|a| json!({"code": a["code"], "status_code": 204}))
                    .collect::<Vec<_>>(),
            )
        })
        .with_priority(3)
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.max_retries = 1;
    let client = AkeneoClient::new(c).unwrap();
    let assets: Vec<PimAsset> = (0..5)
        .map(|i| asset(&format!("a_{i}")))
        .chain((0..5).map(|i| asset(&format!("b_{i}"))))
        .collect();
    let res = client
        .upsert_assets(FAMILY, &assets)
        .await
        .expect("per-asset results");
    for r in &res {
        if r.code.starts_with("a_") {
            assert_eq!(r.outcome, ItemOutcome::Updated, "{r:?}");
        } else {
            assert!(
                matches!(&r.outcome, ItemOutcome::Failed(f) if !f.permanent && f.status == 503),
                "{r:?}"
            );
        }
    }
}

/// A file larger than `media_max_bytes` (length unknown up front) cannot succeed on a retry:
/// it is refused after the first attempt, not streamed again `max_retries` times.
#[tokio::test]
async fn media_too_large_from_a_body_source_is_not_retried() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    Mock::given(method("POST"))
        .and(path("/api/rest/v1/asset-media-files"))
        .respond_with(
            ResponseTemplate::new(201).insert_header("Asset-media-file-code", "a/b/c/d/x_y.png"),
        )
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.media_max_bytes = 1000;
    let client = AkeneoClient::new(c).unwrap();
    let mut made = 0;
    let e = client
        .upload_media_file_with(
            "y.png",
            || {
                made += 1;
                Some(futures::stream::iter((0..20).map(|_| {
                    Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 100]))
                })))
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, AkeneoError::MediaTooLarge { limit: 1000, .. }),
        "{e:?}"
    );
    assert_eq!(made, 1, "the oversized file was streamed {made} times");
}

/// A token the PIM keeps refusing: each call renews it once and replays once, then fails with
/// an auth error — no grant loop, even with concurrent callers.
#[tokio::test]
async fn persistent_401_renews_once_per_call_without_looping() {
    let server = MockServer::start().await;
    let grants = mount_token(&server, Some(3600)).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"code": 401, "message": "Authentication is required"})),
        )
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();
    let calls = (0..8).map(|i| {
        let c = client.clone();
        async move { c.get_asset(FAMILY, &format!("a{i}")).await }
    });
    for r in futures::future::join_all(calls).await {
        assert!(
            matches!(r, Err(AkeneoError::Auth { status: 401, .. })),
            "{r:?}"
        );
    }
    let n = grants.load(Ordering::SeqCst);
    assert!((2..=9).contains(&n), "{n} grants for 8 calls");
    assert_eq!(client.stats().unauthorized_replays, 8);
}

/// A write answered 200 with a body that is not the batch answer (a gateway's maintenance page,
/// a body cut short) may or may not have been applied: transient, so the batch is sent again
/// (upserts are idempotent) rather than dead-lettered as refused.
#[tokio::test]
async fn an_unreadable_200_answer_to_a_write_is_transient() {
    let server = MockServer::start().await;
    mount_token(&server, None).await;
    mount_structure(&server).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/api/rest/v1/asset-families/{FAMILY}/assets")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html><body>Down for maintenance</body></html>",
            "text/html",
        ))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/rest/v1/products-uuid"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "{\"line\":1,\"uuid\":\"u0\",\"status_code\":204}\n{\"line\":2,\"uu",
            "application/vnd.akeneo.collection+json",
        ))
        .mount(&server)
        .await;
    let client = AkeneoClient::new(config(&server)).unwrap();

    let err = client
        .upsert_assets(FAMILY, &[asset("a1"), asset("a2")])
        .await
        .expect_err("no result can be read");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.status(), Some(200));
    assert!(err.to_string().contains("sent again"), "{err}");

    let lines = vec![
        json!({"uuid": "u0", "values": {}}),
        json!({"uuid": "u1", "values": {}}),
    ];
    let err = client
        .upsert_products(&lines)
        .await
        .expect_err("the answer is cut short");
    assert!(err.is_transient(), "{err:?}");
}
