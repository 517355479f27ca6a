//! The AEM / IMS / I/O Events emulator follows the contract of the Adobe reference notes, over
//! real HTTP on 127.0.0.1.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_emulators::aem::{
    AemEmulator, AemEmulatorConfig, AemEndpoint, DeliveryMode, DeliveryOutcome, DeliverySigning,
    EmulatorKey, Fault, RunningAem, SignatureMode,
};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use base64::Engine;
use http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

const HOST: &str = "author-p1-e2.adobeaemcloud.com";
const ASSET: &str = "urn:aaid:aem:20fec14a-b5b8-4c7d-85f4-e619d66281dc";

fn config() -> AemEmulatorConfig {
    AemEmulatorConfig {
        author_host: HOST.into(),
        client_id: "cid-123".into(),
        client_secret: "s3cret".into(),
        org_id: "ORG1@AdobeOrg".into(),
        retry_minute: Duration::from_millis(1),
        ..AemEmulatorConfig::default()
    }
}

async fn start(config: AemEmulatorConfig) -> RunningAem {
    let emu = AemEmulator::new(config);
    emu.add_asset(
        ASSET,
        "shoe red.png",
        "/content/dam/shoes/shoe red.png",
        json!({"dc:title": "Red shoe"}),
    );
    emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn token(aem: &RunningAem) -> String {
    let r: Value = reqwest::Client::new()
        .post(aem.ims_token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cid-123"),
            ("client_secret", "s3cret"),
            ("scope", "openid,AdobeID,aem.assets.author"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap().to_owned()
}

fn metadata_url(aem: &RunningAem, asset: &str) -> String {
    format!("{}/adobe/assets/{asset}/metadata", aem.base_url)
}

fn patch(aem: &RunningAem, token: &str, body: &str) -> reqwest::RequestBuilder {
    patch_with(aem, token, body, &[])
}

/// A PATCH with the contract's headers, some replaced (`Some`) or left out (`None`).
fn patch_with(
    aem: &RunningAem,
    token: &str,
    body: &str,
    changes: &[(&str, Option<&str>)],
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .patch(metadata_url(aem, ASSET))
        .bearer_auth(token)
        .body(body.to_owned());
    for (name, value) in [
        ("content-type", "application/json-patch+json"),
        ("if-match", "*"),
        ("x-adobe-accept-experimental", "1"),
        ("x-api-key", "cid-123"),
    ] {
        match changes.iter().find(|(n, _)| *n == name) {
            Some((_, Some(v))) => req = req.header(name, *v),
            Some((_, None)) => {}
            None => req = req.header(name, value),
        }
    }
    req
}

#[tokio::test]
async fn ims_issues_tokens_and_refuses_bad_credentials() {
    let aem = start(config()).await;
    let http = reqwest::Client::new();
    let ok = http
        .post(aem.ims_token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cid-123"),
            ("client_secret", "s3cret"),
            ("scope", "openid,aem.assets.author"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86399);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);

    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Form, u16, &str); 5] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "cid-123"),
                ("client_secret", "nope"),
            ],
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "other"),
                ("client_secret", "s3cret"),
            ],
            400,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "cid-123"),
                ("client_secret", "s3cret"),
                ("scope", "openid,aem.sites.admin"),
            ],
            400,
            "invalid_scope",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "cid-123"),
                ("client_secret", "s3cret"),
            ],
            400,
            "unsupported_grant_type",
        ),
        (&[("client_id", "cid-123")], 400, "invalid_request"),
    ];
    for (form, status, error) in cases {
        let r = http
            .post(aem.ims_token_url())
            .form(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{form:?}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"], error, "{form:?}");
        assert!(e["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // JSON instead of a form.
    let r = http
        .post(aem.ims_token_url())
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(aem.ims_tokens_issued(), 1);

    // Injected outage.
    aem.fail_next(AemEndpoint::Ims, &[Fault::status(503)]);
    let r = http
        .post(aem.ims_token_url())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn get_metadata_has_the_documented_shape_and_an_etag() {
    let aem = start(config()).await;
    let t = token(&aem).await;
    let get = |asset: &str| {
        reqwest::Client::new()
            .get(metadata_url(&aem, asset))
            .header("x-api-key", "cid-123")
            .header("x-adobe-accept-experimental", "1")
    };
    let r = get(ASSET).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("etag").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["assetId"], ASSET);
    assert_eq!(body["assetMetadata"]["dc:title"], "Red shoe");
    assert_eq!(body["repositoryMetadata"]["repo:name"], "shoe red.png");
    assert_eq!(body["repositoryMetadata"]["repo:repositoryId"], HOST);
    assert_eq!(body["repositoryMetadata"]["repo:state"], "ACTIVE");

    let r = get("urn:aaid:aem:nope")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = get(ASSET).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The header is required on GET too (both operations are experimental).
    let r = reqwest::Client::new()
        .get(metadata_url(&aem, ASSET))
        .header("x-api-key", "cid-123")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert_eq!(aem.requests().len(), 4);
}

#[tokio::test]
async fn patch_enforces_the_contract() {
    let aem = start(config()).await;
    let t = token(&aem).await;
    let good = r#"[{"op":"add","path":"/pim:sku","value":"SKU-1"}]"#;

    // 401: no token, a foreign token.
    let r = patch(&aem, "not-a-token", good).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // 403: no API key.
    let r = patch_with(&aem, &t, good, &[("x-api-key", None)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // 415: plain JSON.
    let r = patch_with(
        &aem,
        &t,
        good,
        &[("content-type", Some("application/json"))],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    // 400: experimental header missing.
    let r = patch_with(&aem, &t, good, &[("x-adobe-accept-experimental", None)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // 428: no If-Match.
    let r = patch_with(&aem, &t, good, &[("if-match", None)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 428);
    // 404: unknown asset.
    let r = reqwest::Client::new()
        .patch(metadata_url(&aem, "urn:aaid:aem:unknown"))
        .header("content-type", "application/json-patch+json")
        .header("if-match", "*")
        .header("x-adobe-accept-experimental", "1")
        .header("x-api-key", "cid-123")
        .bearer_auth(&t)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // 400 problem+json: malformed, unsupported op, slash-less path, a failing test op.
    for bad in [
        "not json",
        r#"{"op":"add","path":"/a","value":1}"#,
        "[]",
        r#"[{"op":"move","from":"/dc:title","path":"/x"}]"#,
        r#"[{"op":"add","path":"wknd-skuid","value":"MockSKU 123"}]"#,
        r#"[{"op":"add","path":"/a"}]"#,
        r#"[{"op":"test","path":"/dc:title","value":"Blue shoe"},{"op":"add","path":"/x","value":1}]"#,
        r#"[{"op":"remove","path":"/missing"}]"#,
    ] {
        let r = patch(&aem, &t, bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{bad}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], 400);
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
    }
    // Nothing changed so far, no event.
    assert_eq!(aem.metadata(ASSET).unwrap().len(), 1);
    assert!(aem.journal_events().is_empty());

    // Success: applied, ETag, echo event.
    let r = patch(
        &aem,
        &t,
        r#"[{"op":"add","path":"/pim:sku","value":"SKU-1"},{"op":"add","path":"/dc:title","value":"Rouge"},{"op":"add","path":"/a~1b","value":true}]"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["assetMetadata"]["pim:sku"], "SKU-1");
    let meta = aem.metadata(ASSET).unwrap();
    assert_eq!(meta["dc:title"], "Rouge");
    assert_eq!(meta["a/b"], true, "JSON Pointer escapes are decoded");
    let events = aem.journal_events();
    assert_eq!(events.len(), 1);
    let echo = &events[0];
    assert_eq!(echo["type"], "aem.assets.asset.metadata_updated");
    assert_eq!(echo["recipientclientid"], "cid-123");
    assert_eq!(echo["data"]["assetId"], ASSET);
    assert_eq!(
        echo["data"]["repositoryMetadata"]["repo:repositoryId"],
        HOST
    );
    let created: Vec<&str> = echo["data"]["assetMetadata"]["event:created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 2);
    assert!(created.contains(&"pim:sku") && created.contains(&"a/b"));
    assert_eq!(
        echo["data"]["assetMetadata"]["event:updated"],
        json!({"dc:title": "Rouge"})
    );

    // The same values again: 200, no new event.
    let r = patch(
        &aem,
        &t,
        r#"[{"op":"add","path":"/pim:sku","value":"SKU-1"}]"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(aem.journal_events().len(), 1);

    // Conditional writes: the current ETag passes, a stale one gets 412.
    let r = patch_with(
        &aem,
        &t,
        r#"[{"op":"replace","path":"/pim:sku","value":"SKU-2"}]"#,
        &[("if-match", Some(&etag))],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = patch_with(
        &aem,
        &t,
        r#"[{"op":"remove","path":"/pim:sku"}]"#,
        &[("if-match", Some(&etag))],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 412);

    // Expired tokens are refused.
    aem.expire_tokens();
    let r = patch(&aem, &t, good).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // HTML "unavailable" page injected.
    aem.fail_next(AemEndpoint::Metadata, &[Fault::html(200)]);
    let t2 = token(&aem).await;
    let r = patch(&aem, &t2, good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    // Every PATCH is logged with headers and body.
    let patches = aem.patches();
    assert_eq!(patches.len(), 20);
    let ok = patches.iter().find(|p| p.status == 200).unwrap();
    assert_eq!(
        ok.header("content-type"),
        Some("application/json-patch+json")
    );
    assert_eq!(ok.header("x-api-key"), Some("cid-123"));
    assert!(ok.header("authorization").unwrap().starts_with("Bearer "));
    assert!(ok.body.contains("SKU-1"));
    assert_eq!(ok.asset_id, ASSET);
}

#[tokio::test]
async fn processing_completed_is_real_shaped() {
    let aem = start(config()).await;
    assert!(aem.processing_completed("urn:aaid:aem:unknown").is_none());
    let e = aem.processing_completed(ASSET).unwrap();
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "aem.assets.asset.processing_completed");
    assert_eq!(e["source"], "acct:aem-p1-e2@adobe.com");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["eventid"], e["event_id"]);
    assert_ne!(e["eventid"], e["id"]);
    assert_eq!(e["recipientclientid"], "cid-123");
    assert_eq!(e["recipient_client_id"], "cid-123");
    let repo = &e["data"]["repositoryMetadata"];
    assert_eq!(repo["repo:repositoryId"], HOST);
    assert_eq!(repo["repo:name"], "shoe red.png");
    assert_eq!(repo["repo:path"], "/content/dam/shoes/shoe red.png");
    assert_eq!(repo["repo:assetId"], ASSET);
    assert_eq!(repo["aem:assetState"], "processed");
    assert_eq!(repo["dc:format"], "image/png");
    assert!(repo["repo:size"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(e["data"]["assetId"], ASSET);
    assert_eq!(e["data"]["assetMetadata"]["dc:title"], "Red shoe");
    assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok());
    assert_eq!(aem.journal_events(), vec![e]);
}

async fn journal_get(aem: &RunningAem, token: &str, url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("x-api-key", "cid-123")
        .header("x-ims-org-id", "ORG1@AdobeOrg")
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e} {}", aem.base_url))
}

fn next_link(r: &reqwest::Response) -> String {
    let link = r.headers()["link"].to_str().unwrap();
    let start = link.find('<').unwrap() + 1;
    let end = link.find('>').unwrap();
    assert!(link[end..].contains("rel=\"next\""), "{link}");
    link[start..end].to_owned()
}

#[tokio::test]
async fn journal_pages_ends_with_204_and_expires_with_410() {
    let aem = start(config()).await;
    let t = token(&aem).await;
    // Empty journal: 204 with retry-after and a next link equal to the request.
    let r = journal_get(&aem, &t, &aem.journal_url()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["retry-after"], "10");
    assert_eq!(next_link(&r), aem.journal_path());

    let ids: Vec<String> = (0..5)
        .map(|_| {
            aem.processing_completed(ASSET).unwrap()["eventid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut url = format!("{}?limit=2", aem.journal_url());
    let mut seen = Vec::new();
    let mut first_position = None;
    loop {
        let r = journal_get(&aem, &t, &url).await;
        if r.status() == 204 {
            assert!(r.headers().get("retry-after").is_some());
            assert_eq!(format!("{}{}", aem.base_url, next_link(&r)), url);
            break;
        }
        assert_eq!(r.status(), 200);
        let next = next_link(&r);
        assert!(next.starts_with('/'), "relative next link: {next}");
        assert!(next.contains("limit=2"), "limit is carried: {next}");
        let page: Value = r.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        assert_eq!(page["_page"]["count"], events.len());
        assert_eq!(page["_page"]["last"], events.last().unwrap()["position"]);
        for e in events {
            first_position.get_or_insert_with(|| e["position"].as_str().unwrap().to_owned());
            seen.push(e["event"]["eventid"].as_str().unwrap().to_owned());
        }
        url = format!("{}{next}", aem.base_url);
    }
    assert_eq!(seen, ids);

    // latest=true: skip everything; its next link only sees newer events.
    let r = journal_get(&aem, &t, &format!("{}?latest=true", aem.journal_url())).await;
    assert_eq!(r.status(), 204);
    let after_latest = format!("{}{}", aem.base_url, next_link(&r));
    let newer = aem.processing_completed(ASSET).unwrap();
    let r = journal_get(&aem, &t, &after_latest).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["event"], newer);

    // Retention: 8 days later the first position has expired.
    aem.advance_clock(Duration::from_secs(8 * 24 * 3600));
    let t = token(&aem).await; // tokens expired with the clock too
    let pos = first_position.unwrap();
    let r = journal_get(&aem, &t, &format!("{}?since={pos}", aem.journal_url())).await;
    assert_eq!(r.status(), 410);
    assert_eq!(
        r.text().await.unwrap(),
        format!("Events at position {pos} have expired.")
    );
    // The oldest (no params) is now empty.
    let r = journal_get(&aem, &t, &aem.journal_url()).await;
    assert_eq!(r.status(), 204);

    // Bad requests.
    let r = journal_get(&aem, &t, &format!("{}?since=garbage", aem.journal_url())).await;
    assert_eq!(r.status(), 400);
    let r = journal_get(&aem, &t, &format!("{}?limit=0", aem.journal_url())).await;
    assert_eq!(r.status(), 400);
    let r = reqwest::Client::new()
        .get(aem.journal_url())
        .header("x-api-key", "cid-123")
        .header("x-ims-org-id", "OTHER@AdobeOrg")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reqwest::Client::new()
        .get(aem.journal_url())
        .header("x-api-key", "cid-123")
        .header("x-ims-org-id", "ORG1@AdobeOrg")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = journal_get(
        &aem,
        &t,
        &format!(
            "{}/events/organizations/ORG1@AdobeOrg/integrations/1/x",
            aem.base_url
        ),
    )
    .await;
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver for the sender tests.

#[derive(Clone, Default)]
struct Hook {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    echo_challenge: bool,
}

async fn hook_post(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    h.seen.lock().push((headers, body));
    let status = h.script.lock().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn hook_get(State(h): State<Hook>, RawQuery(q): RawQuery) -> axum::response::Response {
    use axum::response::IntoResponse;
    let challenge = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "challenge")
        .map(|(_, v)| v.into_owned());
    match challenge {
        Some(c) if h.echo_challenge => axum::Json(json!({"challenge": c})).into_response(),
        _ => "hello".into_response(),
    }
}

async fn serve_hook(hook: Hook) -> url::Url {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook_post).get(hook_get))
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url::Url::parse(&format!("http://{addr}/hook")).unwrap()
}

/// `RSAPublicKey` DER of an RSA-2048 SPKI PEM: the SPKI header of such keys is 24 bytes
/// (SEQUENCE, AlgorithmIdentifier rsaEncryption + NULL, BIT STRING with 0 unused bits).
fn rsa_2048_public_key(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(der.len(), 294, "RSA-2048 SPKI");
    der[24..].to_vec()
}

fn verifies(aem_key_pem: &str, body: &[u8], sig_b64: &str) -> bool {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .unwrap();
    UnparsedPublicKey::new(
        &RSA_PKCS1_2048_8192_SHA256,
        rsa_2048_public_key(aem_key_pem),
    )
    .verify(body, &sig)
    .is_ok()
}

#[tokio::test]
async fn sender_signs_with_served_keys_and_sets_adobe_headers() {
    let aem = start(config()).await;
    let hook = Hook::default();
    let url = serve_hook(hook.clone()).await;
    let event = aem.processing_completed(ASSET).unwrap();
    let records = aem
        .deliver(&url, vec![event.clone()], DeliveryMode::Single)
        .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, DeliveryOutcome::Delivered);
    let (headers, body) = hook.seen.lock()[0].clone();
    let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        h("content-type").as_deref(),
        Some("application/cloudevents+json; charset=UTF-8")
    );
    assert_eq!(h("user-agent").as_deref(), Some("Adobe/1.0"));
    assert_eq!(
        h("x-adobe-event-code").as_deref(),
        Some("aem.assets.asset.processing_completed")
    );
    assert_eq!(h("x-adobe-event-id").as_deref(), event["eventid"].as_str());
    assert!(h("x-adobe-delivery-id").is_some());
    assert!(
        h("x-adobe-retry-count").is_none(),
        "absent on the first attempt"
    );
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), event);

    // The key paths are served by the emulator, and the signatures verify over the raw body.
    let client = reqwest::Client::new();
    for (sig, path) in [
        ("x-adobe-digital-signature-1", "x-adobe-public-key1-path"),
        ("x-adobe-digital-signature-2", "x-adobe-public-key2-path"),
    ] {
        let path = h(path).unwrap();
        assert!(path.starts_with("/prod/keys/pub-key-") && path.ends_with(".pem"));
        let pem = client
            .get(format!("{}{path}", aem.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(verifies(&pem, &body, &h(sig).unwrap()), "{sig}");
        assert!(!verifies(&pem, b"{}", &h(sig).unwrap()));
    }
    assert_eq!(aem.key_fetches(), 2);
    let r = client
        .get(format!("{}/prod/keys/pub-key-unknown.pem", aem.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Key 2 signed with the rogue key: signature 1 still verifies, signature 2 does not.
    aem.set_signing(DeliverySigning {
        signature_1: SignatureMode::Valid,
        signature_2: SignatureMode::WrongKey,
    });
    aem.deliver(&url, vec![event.clone()], DeliveryMode::Single)
        .await;
    let (headers, body) = hook.seen.lock()[1].clone();
    let sig = |n: &str| headers[n].to_str().unwrap().to_owned();
    assert!(verifies(
        EmulatorKey::Key1.public_pem(),
        &body,
        &sig("x-adobe-digital-signature-1")
    ));
    assert!(!verifies(
        EmulatorKey::Key2.public_pem(),
        &body,
        &sig("x-adobe-digital-signature-2")
    ));

    // An omitted signature header.
    aem.set_signing(DeliverySigning {
        signature_1: SignatureMode::Omitted,
        signature_2: SignatureMode::Valid,
    });
    aem.deliver(&url, vec![event], DeliveryMode::Single).await;
    assert!(hook.seen.lock()[2]
        .0
        .get("x-adobe-digital-signature-1")
        .is_none());
    assert_eq!(aem.deliveries().len(), 3);
}

#[tokio::test]
async fn sender_retries_like_adobe() {
    let aem = start(config()).await;
    let hook = Hook::default();
    let url = serve_hook(hook.clone()).await;
    let event = aem.processing_completed(ASSET).unwrap();

    // 503, 429, then 200: three attempts, retry counts 1 and 2, same event id.
    hook.script.lock().extend([503, 429]);
    let r = aem
        .deliver(&url, vec![event.clone()], DeliveryMode::Single)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    assert_eq!(r[0].attempts.len(), 3);
    let seen = hook.seen.lock().clone();
    assert_eq!(seen.len(), 3);
    let retry_counts: Vec<Option<&str>> = seen
        .iter()
        .map(|(h, _)| h.get("x-adobe-retry-count").map(|v| v.to_str().unwrap()))
        .collect();
    assert_eq!(retry_counts, [None, Some("1"), Some("2")]);
    let ids: Vec<&str> = seen
        .iter()
        .map(|(h, _)| h["x-adobe-event-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    let deliveries: Vec<&str> = seen
        .iter()
        .map(|(h, _)| h["x-adobe-delivery-id"].to_str().unwrap())
        .collect();
    assert_ne!(deliveries[0], deliveries[1]);
    assert!(
        seen.iter().all(|(_, b)| *b == seen[0].1),
        "same bytes on every attempt"
    );

    // 505 and 4xx are not retried.
    for status in [505, 400, 404] {
        hook.script.lock().push_back(status);
        let r = aem
            .deliver(&url, vec![event.clone()], DeliveryMode::Single)
            .await;
        assert_eq!(r[0].outcome, DeliveryOutcome::Rejected(status));
        assert_eq!(r[0].attempts.len(), 1);
    }

    // Always 500: gives up once the (compressed) 24 h window is over:
    // 1+2+4+8 = 15 minutes, then every 15 minutes → 95 more retries, 100 attempts in all.
    let fast = AemEmulator::new(AemEmulatorConfig {
        retry_minute: Duration::from_micros(50),
        ..config()
    });
    hook.script.lock().extend(std::iter::repeat_n(500, 200));
    let r = fast
        .deliver(&url, vec![event.clone()], DeliveryMode::Single)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::GaveUp);
    assert_eq!(r[0].attempts.len(), 100);
    hook.script.lock().clear();

    // A webhook that cannot be reached counts as a failed (retried) attempt.
    let dead = url::Url::parse("http://127.0.0.1:9/hook").unwrap();
    let r = fast.deliver(&dead, vec![event], DeliveryMode::Single).await;
    assert_eq!(r[0].outcome, DeliveryOutcome::GaveUp);
    assert!(r[0]
        .attempts
        .iter()
        .all(|a| a.status.is_none() && a.error.is_some()));
}

#[tokio::test]
async fn batches_hold_at_most_20_events() {
    let aem = start(config()).await;
    let hook = Hook::default();
    let url = serve_hook(hook.clone()).await;
    let events: Vec<Value> = (0..25)
        .map(|_| aem.processing_completed(ASSET).unwrap())
        .collect();
    let r = aem.deliver(&url, events.clone(), DeliveryMode::Batch).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].event_ids.len(), 20);
    assert_eq!(r[1].event_ids.len(), 5);
    let seen = hook.seen.lock().clone();
    let first: Vec<Value> = serde_json::from_slice(&seen[0].1).unwrap();
    let second: Vec<Value> = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(first.len() + second.len(), 25);
    let mut all = first;
    all.extend(second);
    all.sort_by_key(|e| e["eventid"].as_str().unwrap().to_owned());
    let mut expected = events;
    expected.sort_by_key(|e| e["eventid"].as_str().unwrap().to_owned());
    assert_eq!(all, expected);
    // The signature covers the whole array.
    let (h, body) = &seen[0];
    assert!(verifies(
        EmulatorKey::Key1.public_pem(),
        body,
        h["x-adobe-digital-signature-1"].to_str().unwrap()
    ));
}

#[tokio::test]
async fn registered_webhook_receives_emitted_events_and_echoes() {
    let aem = start(config()).await;
    let hook = Hook::default();
    let url = serve_hook(hook.clone()).await;
    aem.register_webhook(Some((url, DeliveryMode::Single)));
    aem.processing_completed(ASSET).unwrap();
    let t = token(&aem).await;
    let r = patch(&aem, &t, r#"[{"op":"add","path":"/pim:sku","value":"S"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Deliveries are sent in the background: wait for both (with room for a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hook.seen.lock().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let types: Vec<String> = hook
        .seen
        .lock()
        .iter()
        .map(|(h, _)| h["x-adobe-event-code"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.len(), 2);
    assert!(types.contains(&"aem.assets.asset.processing_completed".to_owned()));
    assert!(types.contains(&"aem.assets.asset.metadata_updated".to_owned()));
}

#[tokio::test]
async fn challenge_check() {
    let aem = start(config()).await;
    let echoing = serve_hook(Hook {
        echo_challenge: true,
        ..Hook::default()
    })
    .await;
    let c = aem.check_challenge(&echoing).await;
    assert_eq!(c.status, Some(200));
    assert!(c.echoed);
    let silent = serve_hook(Hook::default()).await;
    let c = aem.check_challenge(&silent).await;
    assert_eq!(c.status, Some(200));
    assert!(!c.echoed);
}
