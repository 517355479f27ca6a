//! The Adobe I/O Events webhook against the AEM emulator's signed sender (real HTTP on
//! 127.0.0.1, the emulator as the public-key origin), writing into a SQLite inbox in a
//! temporary directory.

use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::ChangeKind;
use assetbridge_emulators::aem::{
    AemEmulator, AemEmulatorConfig, AemEndpoint, DeliveryMode, DeliveryOutcome, DeliverySigning,
    EmulatorKey, Fault, RunningAem, SignatureMode,
};
use assetbridge_sources::webhook::{
    adobe_event_type, AdobeFamily, AdobeWebhookConfig, WebhookConfig, WebhookError, WebhookServer,
    WebhookStats,
};
use assetbridge_store::{Claimed, DeadLetterFilter, DeadLetterPayload, Store};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use url::Url;

const PATH: &str = "/webhooks/adobe";

struct Setup {
    aem: RunningAem,
    url: Url,
    store: Store,
    stats: Arc<WebhookStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), WebhookError>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// The emulator (retry minute of 1 ms) and our webhook; `client_id` is what our side
    /// expects as recipient (`None`: the emulator's), `key_origin` where keys are fetched
    /// (`None`: the emulator).
    async fn start(client_id: Option<&str>, key_origin: Option<&str>) -> Setup {
        let aem = AemEmulator::new(AemEmulatorConfig {
            retry_minute: Duration::from_millis(1),
            ..AemEmulatorConfig::default()
        })
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state.db").to_str().unwrap())
            .await
            .unwrap();
        let family: AdobeFamily = serde_json::from_value(json!({
            "folders": {"/content/dam/packshots": "packshots", "/content/dam/people": "portraits"}
        }))
        .unwrap();
        let config = WebhookConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            adobe: Some(AdobeWebhookConfig {
                path: PATH.into(),
                client_id: client_id.unwrap_or(&aem.config().client_id).to_owned(),
                key_origin: key_origin.unwrap_or(&aem.base_url).to_owned(),
                family,
                upsert_types: assetbridge_sources::webhook::adobe::default_upsert_types(),
                delete_types: assetbridge_sources::webhook::adobe::default_delete_types(),
                echoes: Default::default(),
            }),
            ..WebhookConfig::default()
        };
        let server = WebhookServer::bind(&config, store.clone()).await.unwrap();
        let url = Url::parse(&format!("http://{}{PATH}", server.local_addr())).unwrap();
        let stats = server.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Setup {
            aem,
            url,
            store,
            stats,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Seeds an asset in `folder` and returns its processing_completed event (journaled too).
    fn asset(&self, n: usize, folder: &str) -> Value {
        let id = format!("urn:aaid:aem:00000000-0000-0000-0000-{n:012}");
        self.aem.add_asset(
            &id,
            &format!("asset {n}.png"),
            &format!("/content/dam/{folder}/asset {n}.png"),
            json!({"dc:title": format!("Asset {n}")}),
        );
        self.aem.processing_completed(&id).unwrap()
    }

    async fn inbox(&self) -> Vec<Claimed> {
        let c = self
            .store
            .claim("test", 10_000, Duration::from_secs(60))
            .await
            .unwrap();
        self.store
            .release(&c.iter().map(|c| c.id).collect::<Vec<_>>())
            .await
            .unwrap();
        c
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Sends `body` with Adobe's signature headers made over `signed` (the emulator's served keys).
async fn post_signed(url: &Url, signed: &[u8], body: &[u8]) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(url.clone())
        .header(
            "content-type",
            "application/cloudevents+json; charset=UTF-8",
        )
        .header(
            "x-adobe-digital-signature-1",
            EmulatorKey::Key1.sign(signed),
        )
        .header(
            "x-adobe-digital-signature-2",
            EmulatorKey::Key2.sign(signed),
        )
        .header(
            "x-adobe-public-key1-path",
            EmulatorKey::Key1.path().unwrap(),
        )
        .header(
            "x-adobe-public-key2-path",
            EmulatorKey::Key2.path().unwrap(),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn challenge_by_get_and_by_post() {
    let s = Setup::start(None, None).await;
    let check = s.aem.check_challenge(&s.url).await;
    assert_eq!(check.status, Some(200));
    assert!(check.echoed, "{check:?}");
    let mut u = s.url.clone();
    u.set_query(Some("challenge=8ec8d794-e0ab"));
    let r = reqwest::get(u).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"challenge": "8ec8d794-e0ab"})
    );
    let r = reqwest::Client::new()
        .post(s.url.clone())
        .json(&json!({"challenge": "by-post"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"challenge": "by-post"})
    );
    let r = reqwest::get(s.url.clone()).await.unwrap();
    assert_eq!(r.status(), 400, "a GET without a challenge");
    assert_eq!(s.stats.snapshot().challenges, 3);
    assert!(s.inbox().await.is_empty());
    s.stop().await;
}

/// The asynchronous validation body is not signed: only a URL on Adobe's domain is taken (and
/// logged for an operator to open); any other is an unsigned delivery, refused and not stored.
#[tokio::test]
async fn only_an_adobe_validation_url_is_taken() {
    let s = Setup::start(None, None).await;
    let post = |body: Value| {
        let url = s.url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post(json!({
        "validationUrl": "https://csm.adobe.io/csm/registrations/validate?id=6a4b&challenge=9f1c"
    }))
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stats.snapshot().challenges, 1);
    for foreign in [
        "https://evil.example.com/csm/registrations/validate?id=1",
        "http://csm.adobe.io/csm/registrations/validate?id=1",
    ] {
        let r = post(json!({ "validationUrl": foreign })).await;
        assert_eq!(r.status(), 401, "{foreign}");
    }
    assert_eq!(
        s.stats.snapshot().challenges,
        1,
        "foreign URLs are not counted"
    );
    assert!(s.inbox().await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn signed_single_and_batch_deliveries_are_stored() {
    let s = Setup::start(None, None).await;
    let singles: Vec<Value> = (0..3).map(|n| s.asset(n, "packshots")).collect();
    let records = s
        .aem
        .deliver(&s.url, singles.clone(), DeliveryMode::Single)
        .await;
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .all(|r| r.outcome == DeliveryOutcome::Delivered && r.attempts.len() == 1));

    // 25 events: a batch of 20 and one of 5.
    let batch: Vec<Value> = (10..35)
        .map(|n| s.asset(n, if n % 2 == 0 { "packshots" } else { "people" }))
        .collect();
    let records = s
        .aem
        .deliver(&s.url, batch.clone(), DeliveryMode::Batch)
        .await;
    assert_eq!(
        records
            .iter()
            .map(|r| r.event_ids.len())
            .collect::<Vec<_>>(),
        [20, 5]
    );
    assert!(records
        .iter()
        .all(|r| r.outcome == DeliveryOutcome::Delivered));

    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 28);
    for event in singles.iter().chain(&batch) {
        let id = event["data"]["assetId"].as_str().unwrap();
        let c = inbox
            .iter()
            .find(|c| c.change.dam_id() == id)
            .unwrap_or_else(|| panic!("{id} not stored"));
        assert_eq!(c.change.event_id.as_deref(), event["eventid"].as_str());
        assert_eq!(c.change.source, "adobe");
        let path = event["data"]["repositoryMetadata"]["repo:path"]
            .as_str()
            .unwrap();
        let want = if path.starts_with("/content/dam/people/") {
            "portraits"
        } else {
            "packshots"
        };
        assert_eq!(c.change.family, want);
        assert_eq!(
            adobe_event_type(&c.change),
            Some("aem.assets.asset.processing_completed")
        );
        let ChangeKind::Upsert { asset } = &c.change.kind else {
            panic!("not an upsert")
        };
        assert_eq!(
            asset.record["assetMetadata"],
            event["data"]["assetMetadata"]
        );
        let modified: chrono::DateTime<chrono::Utc> = event["data"]["repositoryMetadata"]
            ["repo:modifyDate"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(asset.updated_at, modified);
    }
    let st = s.stats.snapshot();
    assert_eq!((st.received, st.acknowledged, st.accepted), (5, 5, 28));
    s.stop().await;
}

#[tokio::test]
async fn events_pushed_by_a_registered_webhook_arrive() {
    let s = Setup::start(None, None).await;
    s.aem
        .register_webhook(Some((s.url.clone(), DeliveryMode::Single)));
    let event = s.asset(1, "people");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let inbox = s.inbox().await;
        if let Some(c) = inbox.first() {
            assert_eq!(c.change.event_id.as_deref(), event["eventid"].as_str());
            assert_eq!(c.change.family, "portraits");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn tampered_or_unsigned_deliveries_are_401_and_nothing_is_stored() {
    let s = Setup::start(None, None).await;
    let event = s.asset(1, "packshots");
    let body = serde_json::to_vec(&event).unwrap();
    let mut tampered = event.clone();
    tampered["data"]["assetMetadata"]["dc:title"] = json!("Forged");
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let (status, _, v) = post_signed(&s.url, &body, &tampered).await;
    assert_eq!(status, 401, "{v}");
    // The untampered body with the same headers passes (the keys verify).
    let (status, _, _) = post_signed(&s.url, &body, &body).await;
    assert_eq!(status, 200);
    assert_eq!(s.inbox().await.len(), 1);

    // No signatures at all; both made with a key that is not served.
    let other = s.asset(2, "packshots");
    for (one, two) in [
        (SignatureMode::Omitted, SignatureMode::Omitted),
        (SignatureMode::WrongKey, SignatureMode::WrongKey),
    ] {
        s.aem.set_signing(DeliverySigning {
            signature_1: one,
            signature_2: two,
        });
        let r = s
            .aem
            .deliver(&s.url, vec![other.clone()], DeliveryMode::Single)
            .await;
        assert_eq!(r[0].outcome, DeliveryOutcome::Rejected(401));
    }
    // One valid signature is enough (keys rotate).
    s.aem.set_signing(DeliverySigning {
        signature_1: SignatureMode::WrongKey,
        signature_2: SignatureMode::Valid,
    });
    let r = s
        .aem
        .deliver(&s.url, vec![other], DeliveryMode::Single)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.inbox().await.len(), 2);
    assert_eq!(s.stats.snapshot().rejected_unauthorized, 3);
    s.stop().await;
}

#[tokio::test]
async fn wrong_recipient_is_401_and_nothing_is_stored() {
    let s = Setup::start(Some("another-client-id"), None).await;
    let events = vec![s.asset(1, "packshots"), s.asset(2, "packshots")];
    for mode in [DeliveryMode::Single, DeliveryMode::Batch] {
        let r = s.aem.deliver(&s.url, events.clone(), mode).await;
        assert!(r
            .iter()
            .all(|r| r.outcome == DeliveryOutcome::Rejected(401)));
    }
    assert!(s.inbox().await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn redeliveries_are_deduplicated_by_eventid() {
    let s = Setup::start(None, None).await;
    let event = s.asset(1, "packshots");
    for _ in 0..3 {
        let r = s
            .aem
            .deliver(&s.url, vec![event.clone()], DeliveryMode::Single)
            .await;
        assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    }
    // A batch repeating it along with a new event.
    let fresh = s.asset(2, "packshots");
    let r = s
        .aem
        .deliver(&s.url, vec![event, fresh], DeliveryMode::Batch)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    assert_eq!(s.inbox().await.len(), 2);
    let st = s.stats.snapshot();
    assert_eq!((st.accepted, st.duplicates), (2, 3));
    s.stop().await;
}

#[tokio::test]
async fn unknown_types_are_acknowledged_and_ignored() {
    let s = Setup::start(None, None).await;
    let page = s.aem.envelope(
        "aem.sites.page.created",
        json!({"path": "/content/site/en/page"}),
    );
    let published = s.aem.envelope(
        "aem.assets.asset.published",
        json!({"assetId": "urn:aaid:aem:x", "repositoryMetadata": {"repo:path": "/content/dam/packshots/x.png"}}),
    );
    let asset = s.asset(1, "packshots");
    let r = s
        .aem
        .deliver(&s.url, vec![page, published, asset], DeliveryMode::Batch)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 1);
    let st = s.stats.snapshot();
    assert_eq!((st.ignored, st.accepted), (2, 1));
    s.stop().await;
}

#[tokio::test]
async fn deletions_and_unusable_events() {
    let s = Setup::start(None, None).await;
    let deleted = s.aem.envelope(
        "aem.assets.asset.deleted",
        json!({"assetId": "urn:aaid:aem:gone",
               "repositoryMetadata": {"repo:path": "/content/dam/people/gone.png"}}),
    );
    // Without a path: a deletion for every family of the rule.
    let deleted_nowhere = s.aem.envelope(
        "aem.assets.asset.deleted",
        json!({"assetId": "urn:aaid:aem:lost"}),
    );
    let no_asset_id = s.aem.envelope(
        "aem.assets.asset.processing_completed",
        json!({"repositoryMetadata": {"repo:path": "/content/dam/packshots/a.png"}}),
    );
    let outside = s.aem.envelope(
        "aem.assets.asset.processing_completed",
        json!({"assetId": "urn:aaid:aem:out", "repositoryMetadata": {"repo:path": "/content/dam/drafts/a.png"}}),
    );
    let r = s
        .aem
        .deliver(
            &s.url,
            vec![
                deleted.clone(),
                deleted_nowhere.clone(),
                no_asset_id.clone(),
                outside,
            ],
            DeliveryMode::Batch,
        )
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    let mut got: Vec<(String, String, String)> = s
        .inbox()
        .await
        .into_iter()
        .map(|c| {
            assert!(matches!(
                c.change.kind,
                ChangeKind::Delete {
                    deleted_at: Some(_),
                    ..
                }
            ));
            (
                c.change.dam_id().to_owned(),
                c.change.family.clone(),
                c.change.event_id.clone().unwrap(),
            )
        })
        .collect();
    got.sort();
    let lost_id = deleted_nowhere["eventid"].as_str().unwrap();
    assert_eq!(
        got,
        vec![
            (
                "urn:aaid:aem:gone".to_owned(),
                "portraits".to_owned(),
                deleted["eventid"].as_str().unwrap().to_owned()
            ),
            (
                "urn:aaid:aem:lost".to_owned(),
                "packshots".to_owned(),
                format!("{lost_id}#packshots")
            ),
            (
                "urn:aaid:aem:lost".to_owned(),
                "portraits".to_owned(),
                format!("{lost_id}#portraits")
            ),
        ]
    );
    let dead = s
        .store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.kind, "unparseable");
    assert!(
        dead[0].reason.message.contains("assetId"),
        "{:?}",
        dead[0].reason
    );
    assert_eq!(dead[0].source.as_deref(), Some("adobe"));
    let DeadLetterPayload::Raw(raw) = &dead[0].payload else {
        panic!("raw dead letter expected")
    };
    let raw: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(raw["event_id"], no_asset_id["eventid"]);
    let st = s.stats.snapshot();
    assert_eq!((st.dead_lettered, st.skipped, st.accepted), (1, 1, 3));
    s.stop().await;
}

#[tokio::test]
async fn unreachable_public_keys_are_503_and_adobe_retries() {
    // Keys served by nobody: 503 + Retry-After, nothing stored.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = Setup::start(None, Some(&format!("http://{closed}"))).await;
    let event = s.asset(1, "packshots");
    let body = serde_json::to_vec(&event).unwrap();
    let (status, retry_after, v) = post_signed(&s.url, &body, &body).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert!(s.inbox().await.is_empty());
    assert_eq!(s.stats.snapshot().rejected_key_unavailable, 1);
    s.stop().await;

    // The key origin fails for a while: the first attempt gets 503, Adobe's retry is stored.
    let s = Setup::start(None, None).await;
    s.aem.fail_next(AemEndpoint::Keys, &[Fault::status(503); 6]);
    let event = s.asset(1, "packshots");
    let r = s
        .aem
        .deliver(&s.url, vec![event.clone()], DeliveryMode::Single)
        .await;
    assert_eq!(r[0].outcome, DeliveryOutcome::Delivered);
    let statuses: Vec<Option<u16>> = r[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(200)]);
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].change.event_id.as_deref(),
        event["eventid"].as_str()
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_signed_bodies_are_400() {
    let s = Setup::start(None, None).await;
    for body in [
        &b"not json"[..],
        b"[]",
        br#"{"specversion":"1.0","eventid":"x"}"#,
    ] {
        let (status, _, v) = post_signed(&s.url, body, body).await;
        assert_eq!(status, 400, "{}: {v}", String::from_utf8_lossy(body));
    }
    assert!(s.inbox().await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_redelivered_unusable_event_is_dead_lettered_once() {
    // Adobe delivers at least once (a lost 200, a 10 s timeout): the same batch, with an event
    // that has no asset id, arrives twice. Its changes are deduplicated by event id; its dead
    // letter must be too.
    let s = Setup::start(None, None).await;
    let no_asset_id = s.aem.envelope(
        "aem.assets.asset.processing_completed",
        json!({"repositoryMetadata": {"repo:path": "/content/dam/packshots/a.png"}}),
    );
    let good = s.asset(1, "packshots");
    let body = serde_json::to_vec(&json!([good, no_asset_id])).unwrap();
    for _ in 0..2 {
        let (status, _, v) = post_signed(&s.url, &body, &body).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(s.inbox().await.len(), 1);
    let dead = s
        .store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "one unusable event, one dead letter: {dead:#?}"
    );
    s.stop().await;
}
