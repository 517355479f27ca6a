//! The Adobe clients (IMS, Assets Author API, I/O Events signatures, journal) against the AEM
//! emulator, over real HTTP on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use assetbridge_dam::aem::{
    check_recipients, parse_delivery, AemClient, AemConfig, AemError, DeliveryError, ImsClient,
    ImsConfig, ImsError, JournalClient, JournalConfig, JournalError, JournalPosition, PatchOp,
    SignatureError, SignatureVerifier, SignatureVerifierConfig,
};
use assetbridge_emulators::aem::{
    AemEmulator, AemEmulatorConfig, AemEndpoint, DeliveryMode, EmulatorKey, Fault, RunningAem,
};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

const HOST: &str = "author-p1-e2.adobeaemcloud.com";
const ASSET: &str = "urn:aaid:aem:5b80c144-39c7-43d0-857a-562fbe22b4e4";
const CLIENT_ID: &str = "cid-123";

fn emulator_config() -> AemEmulatorConfig {
    AemEmulatorConfig {
        author_host: HOST.into(),
        client_id: CLIENT_ID.into(),
        client_secret: "s3cret".into(),
        org_id: "ORG1@AdobeOrg".into(),
        ..AemEmulatorConfig::default()
    }
}

async fn start_with(config: AemEmulatorConfig) -> RunningAem {
    let emu = AemEmulator::new(config);
    emu.add_asset(
        ASSET,
        "heineken brandplanner.pdf",
        "/content/dam/benge/heineken brandplanner.pdf",
        json!({"dc:title": "hello"}),
    );
    emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

async fn start() -> RunningAem {
    start_with(emulator_config()).await
}

fn ims_config(aem: &RunningAem) -> ImsConfig {
    let mut c = ImsConfig::new(
        CLIENT_ID,
        "s3cret",
        vec![
            "openid".into(),
            "AdobeID".into(),
            "aem.assets.author".into(),
        ],
    );
    c.token_url = aem.ims_token_url();
    c.retry_backoff_ms = 1;
    c.timeout_secs = 5;
    c
}

fn aem_client(aem: &RunningAem) -> AemClient {
    let mut c = AemConfig::new(vec![HOST.into()], ims_config(aem));
    c.base_url_overrides
        .insert(HOST.into(), aem.base_url.clone());
    c.retry_backoff_ms = 1;
    c.timeout_secs = 5;
    AemClient::new(c).unwrap()
}

// ---------------------------------------------------------------------------------------------
// IMS

#[tokio::test]
async fn ims_token_is_cached_and_refreshed_single_flight() {
    let aem = start().await;
    let ims = Arc::new(ImsClient::new(ims_config(&aem)).unwrap());
    let calls = (0..100).map(|_| {
        let ims = ims.clone();
        async move { ims.token().await.unwrap().expose().to_owned() }
    });
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(
        aem.ims_tokens_issued(),
        1,
        "100 concurrent callers, one token"
    );
    assert_eq!(ims.tokens_fetched(), 1);

    // A thousand more uses cost nothing.
    for _ in 0..1000 {
        ims.token().await.unwrap();
    }
    assert_eq!(aem.ims_tokens_issued(), 1);

    // invalidate_token only drops the token it names.
    let current = ims.token().await.unwrap();
    ims.invalidate();
    let fresh = ims.token().await.unwrap();
    assert_ne!(fresh.expose(), current.expose());
    ims.invalidate_token(&current); // stale: ignored
    assert_eq!(ims.token().await.unwrap().expose(), fresh.expose());
    assert_eq!(aem.ims_tokens_issued(), 2);
}

#[tokio::test]
async fn a_token_expiring_within_the_margin_is_renewed() {
    // expires_in 301 s with a 300 s margin: usable for one second only.
    let aem = start_with(AemEmulatorConfig {
        token_expires_in: 301,
        ..emulator_config()
    })
    .await;
    let ims = ImsClient::new(ims_config(&aem)).unwrap();
    let a = ims.token().await.unwrap();
    assert_eq!(a.expires_in(), Duration::from_secs(301));
    assert_eq!(ims.token().await.unwrap().expose(), a.expose());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(ims.token().await.unwrap().expose(), a.expose());
    assert_eq!(aem.ims_tokens_issued(), 2);
}

#[tokio::test]
async fn ims_errors_are_typed_and_outages_retried() {
    let aem = start().await;
    let mut bad = ims_config(&aem);
    bad.client_secret = "wrong".to_owned().into();
    let err = ImsClient::new(bad).unwrap().token().await.unwrap_err();
    match &err {
        ImsError::Rejected {
            status,
            error,
            description,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(error, "invalid_client");
            assert!(!description.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert!(!format!("{err:?}").contains("wrong"), "no secret in errors");

    let mut scoped = ims_config(&aem);
    scoped.scopes.push("aem.sites.admin".into());
    assert!(matches!(
        ImsClient::new(scoped).unwrap().token().await,
        Err(ImsError::Rejected { error, .. }) if error == "invalid_scope"
    ));

    // Two 503s then a token: retried.
    aem.fail_next(AemEndpoint::Ims, &[Fault::status(503), Fault::status(502)]);
    let ims = ImsClient::new(ims_config(&aem)).unwrap();
    ims.token().await.unwrap();
    // Four in a row (1 + 3 retries): unavailable, transient.
    ims.invalidate();
    aem.fail_next(AemEndpoint::Ims, &[Fault::status(503); 4]);
    let err = ims.token().await.unwrap_err();
    assert!(
        matches!(
            err,
            ImsError::Unavailable {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

// ---------------------------------------------------------------------------------------------
// Assets Author API

#[tokio::test]
async fn patch_sends_exactly_the_contract() {
    let aem = start().await;
    let client = aem_client(&aem);
    let ops = vec![
        PatchOp::add("pim:sku", json!("SKU-1")),
        PatchOp::add("a/b~c", json!("x")),
    ];
    let resp = client
        .patch_metadata(HOST, ASSET, &ops, None)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.etag.is_some());
    assert_eq!(resp.body["assetMetadata"]["pim:sku"], "SKU-1");

    let patches = aem.patches();
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(p.path, format!("/adobe/assets/{ASSET}/metadata"));
    assert_eq!(p.asset_id, ASSET);
    let body: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(
        body,
        json!([
            {"op": "add", "path": "/pim:sku", "value": "SKU-1"},
            {"op": "add", "path": "/a~1b~0c", "value": "x"}
        ])
    );
    assert_eq!(
        p.header("content-type"),
        Some("application/json-patch+json")
    );
    assert_eq!(p.header("if-match"), Some("*"));
    assert_eq!(p.header("x-adobe-accept-experimental"), Some("1"));
    assert_eq!(p.header("x-api-key"), Some(CLIENT_ID));
    let auth = p.header("authorization").unwrap();
    assert!(auth.starts_with("Bearer ") && auth.len() > 20, "{auth}");
    let mut names: Vec<&str> = p.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "if-match",
            "x-adobe-accept-experimental",
            "x-api-key"
        ],
        "no other header, each once"
    );
    let meta = aem.metadata(ASSET).unwrap();
    assert_eq!(meta["pim:sku"], "SKU-1");
    assert_eq!(meta["a/b~c"], "x");
}

#[tokio::test]
async fn get_metadata_and_conditional_patch() {
    let aem = start().await;
    let client = aem_client(&aem);
    let m = client.get_metadata(HOST, ASSET).await.unwrap();
    assert_eq!(m.asset_id.as_deref(), Some(ASSET));
    assert_eq!(m.asset_metadata["dc:title"], "hello");
    assert_eq!(
        m.repository_metadata["repo:name"],
        "heineken brandplanner.pdf"
    );
    let etag = m.etag.clone().unwrap();

    let ops = [PatchOp::replace("dc:title", json!("Hello Heineken"))];
    let r = client
        .patch_metadata(HOST, ASSET, &ops, Some(&etag))
        .await
        .unwrap();
    assert_eq!(aem.patches()[0].header("if-match"), Some(etag.as_str()));
    assert_ne!(r.etag.as_deref(), Some(etag.as_str()));
    // The old ETag is stale now.
    let err = client
        .patch_metadata(HOST, ASSET, &[PatchOp::remove("dc:title")], Some(&etag))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AemError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(412));
    assert!(!err.is_transient());

    let err = client
        .get_metadata(HOST, "urn:aaid:aem:nope")
        .await
        .unwrap_err();
    assert!(matches!(err, AemError::NotFound { .. }), "{err:?}");
    // A failing `test` op is a 400 with the Problem Details message.
    let err = client
        .patch_metadata(
            HOST,
            ASSET,
            &[PatchOp::test("dc:title", json!("other"))],
            None,
        )
        .await
        .unwrap_err();
    match err {
        AemError::Rejected {
            status: 400,
            detail,
        } => assert!(!detail.is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(aem.ims_tokens_issued(), 1);
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_retries_once() {
    let aem = start().await;
    let client = aem_client(&aem);
    client
        .patch_metadata(HOST, ASSET, &[PatchOp::add("k", json!(1))], None)
        .await
        .unwrap();
    aem.expire_tokens();
    client
        .patch_metadata(HOST, ASSET, &[PatchOp::add("k", json!(2))], None)
        .await
        .unwrap();
    let statuses: Vec<u16> = aem.patches().iter().map(|p| p.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
    assert_eq!(aem.ims_tokens_issued(), 2);
    assert_eq!(aem.metadata(ASSET).unwrap()["k"], 2);
}

#[tokio::test]
async fn a_second_401_is_an_error_not_a_loop() {
    // Tokens that are dead on arrival: every PATCH is refused.
    let aem = start_with(AemEmulatorConfig {
        token_expires_in: 0,
        ..emulator_config()
    })
    .await;
    let client = aem_client(&aem);
    let err = client
        .patch_metadata(HOST, ASSET, &[PatchOp::add("k", json!(1))], None)
        .await
        .unwrap_err();
    assert!(matches!(err, AemError::Unauthorized { .. }), "{err:?}");
    assert_eq!(aem.patches().len(), 2, "one retry after one refresh");
    assert_eq!(aem.ims_tokens_issued(), 2);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_never_called() {
    let aem = start().await;
    let client = aem_client(&aem);
    for host in [
        "evil.example.com",
        "author-p1-e3.adobeaemcloud.com",
        "127.0.0.1",
    ] {
        let err = client
            .patch_metadata(host, ASSET, &[PatchOp::add("k", json!(1))], None)
            .await
            .unwrap_err();
        assert!(matches!(err, AemError::HostNotAllowed { .. }), "{err:?}");
        assert!(matches!(
            client.get_metadata(host, ASSET).await,
            Err(AemError::HostNotAllowed { .. })
        ));
    }
    assert!(aem.requests().is_empty(), "no request made");
    assert_eq!(aem.ims_tokens_issued(), 0, "not even a token");

    // The host an event names goes through the same check.
    let event = aem.processing_completed(ASSET).unwrap();
    let parsed = parse_delivery(event.to_string().as_bytes()).unwrap();
    assert!(client.is_allowed_host(parsed[0].repository_id().unwrap()));
}

#[tokio::test]
async fn outages_and_html_pages_are_retried_then_transient() {
    let aem = start().await;
    let client = aem_client(&aem);
    aem.fail_next(
        AemEndpoint::Metadata,
        &[Fault::status(503), Fault::html(200), Fault::status(429)],
    );
    client
        .patch_metadata(HOST, ASSET, &[PatchOp::add("k", json!(1))], None)
        .await
        .unwrap();
    // A 408 (the request timed out on its way) is sent again too.
    aem.fail_next(AemEndpoint::Metadata, &[Fault::status(408)]);
    client
        .patch_metadata(HOST, ASSET, &[PatchOp::add("k", json!(2))], None)
        .await
        .unwrap();
    assert_eq!(
        aem.patches().iter().map(|p| p.status).collect::<Vec<_>>(),
        [503, 200, 429, 200, 408, 200]
    );

    aem.fail_next(AemEndpoint::Metadata, &[Fault::html(503); 4]);
    let err = client.get_metadata(HOST, ASSET).await.unwrap_err();
    assert!(
        matches!(
            err,
            AemError::Unavailable {
                status: Some(503),
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("non-JSON"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Signatures

fn verifier(aem: &RunningAem) -> SignatureVerifier {
    let mut c = SignatureVerifierConfig::new(CLIENT_ID);
    c.key_origin = url::Url::parse(&aem.base_url).unwrap();
    c.fetch_backoff = Duration::from_millis(1);
    SignatureVerifier::new(c).unwrap()
}

fn signed_headers(body: &[u8], key1: EmulatorKey, key2: EmulatorKey) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v = |s: &str| HeaderValue::from_str(s).unwrap();
    h.insert("x-adobe-digital-signature-1", v(&key1.sign(body)));
    h.insert("x-adobe-digital-signature-2", v(&key2.sign(body)));
    h.insert(
        "x-adobe-public-key1-path",
        v(EmulatorKey::Key1.path().unwrap()),
    );
    h.insert(
        "x-adobe-public-key2-path",
        v(EmulatorKey::Key2.path().unwrap()),
    );
    h
}

/// Receives one real delivery from the emulator's sender and returns (headers, raw body).
async fn receive_delivery(
    aem: &RunningAem,
    events: Vec<Value>,
    mode: DeliveryMode,
) -> (HeaderMap, Vec<u8>) {
    type Seen = Arc<parking_lot::Mutex<Option<(HeaderMap, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    *seen.lock() = Some((headers, body.to_vec()));
                    "ok"
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = url::Url::parse(&format!("http://{addr}/hook")).unwrap();
    aem.deliver(&url, events, mode).await;
    let got = seen.lock().take().expect("delivered");
    got
}

#[tokio::test]
async fn a_real_delivery_verifies_and_parses() {
    let aem = start().await;
    let v = verifier(&aem);
    let event = aem.processing_completed(ASSET).unwrap();
    let (headers, body) = receive_delivery(&aem, vec![event.clone()], DeliveryMode::Single).await;
    let events = v.verify_delivery(&headers, &body).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, event["eventid"].as_str().unwrap());
    assert_eq!(events[0].asset_id(), Some(ASSET));
    assert_eq!(events[0].repository_id(), Some(HOST));
    assert_eq!(events[0].asset_name(), Some("heineken brandplanner.pdf"));

    // Tampering with one byte breaks it.
    let mut tampered = body.clone();
    let i = tampered.len() / 2;
    tampered[i] ^= 0x01;
    let err = v.verify(&headers, &tampered).await.unwrap_err();
    assert_eq!(err, SignatureError::Invalid);
    assert_eq!(err.status_code(), 401);

    // A batch delivery: every element is checked for its recipient.
    let other = {
        let mut e = aem.processing_completed(ASSET).unwrap();
        e["recipientclientid"] = json!("someone-else");
        e["recipient_client_id"] = json!("someone-else");
        e
    };
    let mine = aem.processing_completed(ASSET).unwrap();
    let (headers, body) =
        receive_delivery(&aem, vec![mine.clone(), mine], DeliveryMode::Batch).await;
    assert_eq!(v.verify_delivery(&headers, &body).await.unwrap().len(), 2);
    let mine = aem.processing_completed(ASSET).unwrap();
    let (headers, body) = receive_delivery(&aem, vec![mine, other], DeliveryMode::Batch).await;
    let err = v.verify_delivery(&headers, &body).await.unwrap_err();
    assert!(
        matches!(
            err,
            DeliveryError::Signature(SignatureError::WrongRecipient { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.status_code(), 401);
    let events = parse_delivery(&body).unwrap();
    assert!(check_recipients(&events[..1], CLIENT_ID).is_ok());
    assert!(check_recipients(&events, CLIENT_ID).is_err());
}

#[tokio::test]
async fn either_signature_suffices_and_keys_are_cached() {
    let aem = start().await;
    let v = verifier(&aem);
    let body = aem
        .processing_completed(ASSET)
        .unwrap()
        .to_string()
        .into_bytes();
    use EmulatorKey::{Key1, Key2, Rogue};

    // Both valid: key 1 is enough, fetched once for five deliveries.
    for _ in 0..5 {
        v.verify(&signed_headers(&body, Key1, Key2), &body)
            .await
            .unwrap();
    }
    assert_eq!(aem.key_fetches(), 1);
    assert_eq!(v.key_fetches(), 1);

    // Signature 1 made with a wrong key, signature 2 valid: accepted (key rotation).
    for _ in 0..3 {
        v.verify(&signed_headers(&body, Rogue, Key2), &body)
            .await
            .unwrap();
    }
    // Signature 2 wrong, signature 1 valid: accepted.
    v.verify(&signed_headers(&body, Key1, Rogue), &body)
        .await
        .unwrap();
    assert_eq!(aem.key_fetches(), 2, "one fetch per key path");

    // Both wrong: refused with a 401-type error.
    let err = v
        .verify(&signed_headers(&body, Rogue, Rogue), &body)
        .await
        .unwrap_err();
    assert_eq!(err, SignatureError::Invalid);
    assert_eq!(err.status_code(), 401);
    // Swapped keys (each signature checked against the other slot's key): refused.
    let err = v
        .verify(&signed_headers(&body, Key2, Key1), &body)
        .await
        .unwrap_err();
    assert_eq!(err, SignatureError::Invalid);
    // Garbage signatures.
    let mut h = signed_headers(&body, Key1, Key2);
    h.insert(
        "x-adobe-digital-signature-1",
        HeaderValue::from_static("%%%"),
    );
    h.insert(
        "x-adobe-digital-signature-2",
        HeaderValue::from_static("AAAA"),
    );
    assert_eq!(v.verify(&h, &body).await, Err(SignatureError::Invalid));
    assert_eq!(aem.key_fetches(), 2);

    // Both slots naming the same key, the first signature wrong: the second is still checked
    // with that key once the first slot fetched it.
    let fresh = verifier(&aem);
    let key1 = EmulatorKey::Key1.path().unwrap();
    let mut h = signed_headers(&body, Rogue, Key1);
    h.insert("x-adobe-public-key2-path", HeaderValue::from_static(key1));
    fresh.verify(&h, &body).await.unwrap();
    assert_eq!(fresh.key_fetches(), 1);
}

#[tokio::test]
async fn missing_headers_and_foreign_key_paths_are_refused() {
    let aem = start().await;
    let v = verifier(&aem);
    let body = br#"{"eventid":"x","type":"aem.assets.asset.deleted"}"#;
    for name in [
        "x-adobe-digital-signature-1",
        "x-adobe-digital-signature-2",
        "x-adobe-public-key1-path",
        "x-adobe-public-key2-path",
    ] {
        let mut h = signed_headers(body, EmulatorKey::Key1, EmulatorKey::Key2);
        h.remove(name);
        let err = v.verify(&h, body).await.unwrap_err();
        assert_eq!(err, SignatureError::MissingHeader(name));
        assert_eq!(err.status_code(), 401);
    }
    for path in [
        "/prod/keys/../../admin/secret.pem",
        "https://evil.example.com/prod/keys/pub-key-x.pem",
        "//evil.example.com/prod/keys/pub-key-x.pem",
        "/prod/keys/pub-key-x.pem?redirect=https://evil.example.com",
        "/prod/keys/pub-key-x.txt",
    ] {
        let mut h = signed_headers(body, EmulatorKey::Key1, EmulatorKey::Key2);
        h.insert(
            "x-adobe-public-key2-path",
            HeaderValue::from_str(path).unwrap(),
        );
        let err = v.verify(&h, body).await.unwrap_err();
        assert!(
            matches!(err, SignatureError::InvalidKeyPath(_)),
            "{path}: {err:?}"
        );
        assert_eq!(err.status_code(), 401);
    }
    assert_eq!(aem.key_fetches(), 0, "nothing fetched for refused requests");

    // A well-formed path the origin does not serve (404): that signature fails, the other
    // can still carry the delivery.
    let mut h = signed_headers(body, EmulatorKey::Key1, EmulatorKey::Key2);
    h.insert(
        "x-adobe-public-key1-path",
        HeaderValue::from_static("/prod/keys/pub-key-gone.pem"),
    );
    v.verify(&h, body).await.unwrap();
    h.insert(
        "x-adobe-public-key2-path",
        HeaderValue::from_static("/prod/keys/pub-key-gone2.pem"),
    );
    assert_eq!(v.verify(&h, body).await, Err(SignatureError::Invalid));
}

#[tokio::test]
async fn an_unreachable_key_origin_asks_adobe_to_retry() {
    let aem = start().await;
    let v = verifier(&aem);
    let body = br#"[]"#;
    aem.fail_next(AemEndpoint::Keys, &[Fault::status(503); 6]);
    let err = v
        .verify(
            &signed_headers(body, EmulatorKey::Key1, EmulatorKey::Key2),
            body,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SignatureError::KeyUnavailable(_)), "{err:?}");
    assert_eq!(err.status_code(), 503);
    // Once the origin is back, nothing bad was cached.
    v.verify(
        &signed_headers(body, EmulatorKey::Key1, EmulatorKey::Key2),
        body,
    )
    .await
    .unwrap();
}

/// A key origin under our control: `/prod/keys/slow-key1.pem` serves key 1 after 4 s (a key
/// just rotated, on a slow origin), key 2's path serves key 2 at once, every other path answers
/// 404 after `miss_delay`. Counts fetches per path and the most fetches under way at once.
struct KeyOrigin {
    url: url::Url,
    fetches: Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
    max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

const SLOW_KEY1: &str = "/prod/keys/slow-key1.pem";

async fn key_origin(miss_delay: Duration) -> KeyOrigin {
    use std::sync::atomic::{AtomicUsize, Ordering};
    type Counts = Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>;
    let fetches: Counts = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (f, cur, max) = (fetches.clone(), in_flight.clone(), max_in_flight.clone());
    let app = axum::Router::new().fallback(move |uri: http::Uri| {
        let (f, cur, max) = (f.clone(), cur.clone(), max.clone());
        async move {
            let path = uri.path().to_owned();
            *f.lock().entry(path.clone()).or_default() += 1;
            let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            let answer = if path == SLOW_KEY1 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                (
                    http::StatusCode::OK,
                    EmulatorKey::Key1.public_pem().to_owned(),
                )
            } else if Some(path.as_str()) == EmulatorKey::Key2.path() {
                (
                    http::StatusCode::OK,
                    EmulatorKey::Key2.public_pem().to_owned(),
                )
            } else {
                tokio::time::sleep(miss_delay).await;
                (http::StatusCode::NOT_FOUND, "Not Found".to_owned())
            };
            cur.fetch_sub(1, Ordering::SeqCst);
            answer
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    KeyOrigin {
        url: url::Url::parse(&format!("http://{addr}")).unwrap(),
        fetches,
        max_in_flight,
    }
}

fn headers_with_paths(
    body: &[u8],
    sig1: EmulatorKey,
    path1: &str,
    sig2: EmulatorKey,
    path2: &str,
) -> HeaderMap {
    let mut h = signed_headers(body, sig1, sig2);
    h.insert(
        "x-adobe-public-key1-path",
        HeaderValue::from_str(path1).unwrap(),
    );
    h.insert(
        "x-adobe-public-key2-path",
        HeaderValue::from_str(path2).unwrap(),
    );
    h
}

/// Key paths come from unverified requests: made-up paths must not make the verifier fetch
/// without bound, nor hold up a delivery signed with a key it already has.
#[tokio::test]
async fn made_up_key_paths_cannot_flood_the_key_origin_or_delay_a_real_delivery() {
    use EmulatorKey::{Key1, Key2, Rogue};
    // Misses answered slowly enough that a delivery waiting behind one is told from one that
    // did not wait, even on a loaded machine.
    let origin = key_origin(Duration::from_millis(1_500)).await;
    let mut c = SignatureVerifierConfig::new(CLIENT_ID);
    c.key_origin = origin.url.clone();
    c.fetch_backoff = Duration::from_millis(1);
    let v = Arc::new(SignatureVerifier::new(c).unwrap());
    assert_eq!(
        SignatureVerifierConfig::new(CLIENT_ID).max_concurrent_fetches,
        8
    );
    let body = br#"[{"eventid":"e1"}]"#;
    let key2 = Key2.path().unwrap();

    // Key 2 cached by a first delivery.
    v.verify(
        &headers_with_paths(body, Rogue, "/prod/keys/pub-key-none.pem", Key2, key2),
        body,
    )
    .await
    .unwrap();

    // A delivery whose first key is new and slow to fetch, the second cached: verified with the
    // cached key at once (before: the slow fetch of key 1 came first, 4 s here).
    let started = std::time::Instant::now();
    v.verify(&headers_with_paths(body, Key1, SLOW_KEY1, Key2, key2), body)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        origin.fetches.lock().get(SLOW_KEY1),
        None,
        "the slow key was not needed"
    );

    // A refused path is remembered: asked 20 times, fetched once (before: 20 fetches).
    for _ in 0..20 {
        let err = v
            .verify(
                &headers_with_paths(
                    body,
                    Rogue,
                    "/prod/keys/pub-key-made-up.pem",
                    Rogue,
                    "/prod/keys/pub-key-made-up.pem",
                ),
                body,
            )
            .await
            .unwrap_err();
        assert_eq!(err, SignatureError::Invalid);
    }
    assert_eq!(origin.fetches.lock()["/prod/keys/pub-key-made-up.pem"], 1);

    // 40 requests at once, each naming two new made-up paths: at most 8 fetches under way; the
    // requests that find no free slot are answered 503 at once (Adobe would retry a real one)
    // instead of queueing behind the others (before: one global fetch at a time, ≈ 2 min
    // here; queued for the 8 slots it would still be ≈ 15 s).
    let started = std::time::Instant::now();
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let v = v.clone();
            tokio::spawn(async move {
                let (p1, p2) = (
                    format!("/prod/keys/pub-key-a{i}.pem"),
                    format!("/prod/keys/pub-key-b{i}.pem"),
                );
                v.verify(&headers_with_paths(body, Rogue, &p1, Rogue, &p2), body)
                    .await
            })
        })
        .collect();
    // Meanwhile a real delivery signed with the cached key goes through without waiting (for
    // a fetch: 1.5 s).
    let real = std::time::Instant::now();
    v.verify(
        &headers_with_paths(body, Rogue, "/prod/keys/pub-key-c.pem", Key2, key2),
        body,
    )
    .await
    .unwrap();
    assert!(
        real.elapsed() < Duration::from_secs(1),
        "{:?}",
        real.elapsed()
    );
    let (mut refused, mut busy) = (0, 0);
    for r in futures::future::join_all(flood).await {
        match r.unwrap() {
            Err(SignatureError::Invalid) => refused += 1,
            Err(e @ SignatureError::KeyUnavailable(_)) => {
                assert_eq!(e.status_code(), 503);
                busy += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused + busy, 40);
    assert!(busy > 0, "some requests found every fetch slot taken");
    assert!(
        origin
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 8
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Journal

fn journal(aem: &RunningAem, limit: Option<u32>, latest: bool) -> JournalClient {
    let ims = Arc::new(ImsClient::new(ims_config(aem)).unwrap());
    let mut c = JournalConfig::new(aem.journal_url(), "ORG1@AdobeOrg");
    c.limit = limit;
    c.start_at_latest = latest;
    c.retry_backoff_ms = 1;
    c.timeout_secs = 5;
    JournalClient::new(c, ims).unwrap()
}

#[tokio::test]
async fn journal_follows_next_until_204_then_resumes() {
    let aem = start().await;
    let j = journal(&aem, Some(2), false);
    let ids: Vec<String> = (0..5)
        .map(|_| {
            aem.processing_completed(ASSET).unwrap()["eventid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    aem.fail_next(AemEndpoint::Journal, &[Fault::status(503)]);

    let mut seen = Vec::new();
    let mut position: Option<JournalPosition> = None;
    let mut batch = j.next(None).await.unwrap();
    let mut pages = 1;
    while !batch.is_empty() {
        assert!(batch.events.len() <= 2);
        assert!(
            batch.retry_after.is_none(),
            "after a 200, poll again at once"
        );
        assert!(batch.next.query().unwrap().contains("limit=2"));
        seen.extend(batch.events.iter().map(|e| e.event.event_id.clone()));
        assert_eq!(
            batch.last.as_ref(),
            batch.events.last().map(|e| &e.position)
        );
        position = batch.last.clone();
        batch = j.fetch(&batch.next).await.unwrap();
        pages += 1;
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 4);
    assert_eq!(batch.retry_after, Some(Duration::from_secs(10)));
    assert!(batch.last.is_none());

    // Resuming from the stored position sees only newer events.
    let newer = aem.processing_completed(ASSET).unwrap();
    let b = j.next(position.as_ref()).await.unwrap();
    assert_eq!(b.events.len(), 1);
    assert_eq!(
        b.events[0].event.event_id,
        newer["eventid"].as_str().unwrap()
    );
    assert_eq!(b.events[0].event.asset_id(), Some(ASSET));
    // The 204's next link is followed as well.
    let b = j.fetch(&b.next).await.unwrap();
    assert!(b.is_empty());
    assert_eq!(j.fetch(&b.next).await.unwrap().events.len(), 0);
}

#[tokio::test]
async fn journal_expiry_latest_and_errors() {
    let aem = start().await;
    let j = journal(&aem, None, false);
    aem.processing_completed(ASSET).unwrap();
    let first = j.next(None).await.unwrap();
    let pos = first.last.clone().unwrap();

    // 8 days later the position is gone: 410 → Expired.
    aem.advance_clock(Duration::from_secs(8 * 24 * 3600));
    let err = j.next(Some(&pos)).await.unwrap_err();
    match &err {
        JournalError::Expired { message } => assert!(message.contains("have expired"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    // Restarting from the oldest retained event works (the journal is empty by now).
    let b = j.next(None).await.unwrap();
    assert!(b.is_empty());
    assert_eq!(b.retry_after, Some(Duration::from_secs(10)));

    // latest=true skips what exists; its next link sees what comes after.
    aem.processing_completed(ASSET).unwrap();
    let latest = journal(&aem, None, true);
    let b = latest.next(None).await.unwrap();
    assert!(b.is_empty());
    assert!(b.retry_after.is_some());
    let newer = aem.processing_completed(ASSET).unwrap();
    let b = latest.fetch(&b.next).await.unwrap();
    assert_eq!(b.events.len(), 1);
    assert_eq!(
        b.events[0].event.event_id,
        newer["eventid"].as_str().unwrap()
    );

    // A next link to another origin is refused (the token never leaves the journal's origin).
    let err = j
        .fetch(&url::Url::parse("http://evil.example.com/events").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::InvalidResponse(_)), "{err:?}");

    // A wrong org: 403, typed.
    let ims = Arc::new(ImsClient::new(ims_config(&aem)).unwrap());
    let other =
        JournalClient::new(JournalConfig::new(aem.journal_url(), "OTHER@AdobeOrg"), ims).unwrap();
    assert!(matches!(
        other.next(None).await,
        Err(JournalError::Unauthorized { status: 403, .. })
    ));
}

#[tokio::test]
async fn journal_recovers_from_an_expired_token() {
    let aem = start().await;
    let j = journal(&aem, None, false);
    aem.processing_completed(ASSET).unwrap();
    assert_eq!(j.next(None).await.unwrap().events.len(), 1);
    aem.expire_tokens();
    assert_eq!(j.next(None).await.unwrap().events.len(), 1);
    assert_eq!(aem.ims_tokens_issued(), 2);
}
