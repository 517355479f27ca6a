//! Generic webhooks over real HTTP on 127.0.0.1: HMAC (hex, base64, prefix, timestamp) and API
//! key authentication, object and array bodies, redeliveries, size limits, malformed bodies,
//! backlog limit, unknown paths — each checked against the SQLite inbox in a temporary directory.

use std::collections::BTreeMap;
use std::time::Duration;

use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_sources::message::MessageShape;
use assetbridge_sources::webhook::{
    ApiKeyAuth, GenericWebhookConfig, HmacAuth, SignatureEncoding, WebhookAuth, WebhookConfig,
    WebhookError, WebhookServer, WebhookStats,
};
use assetbridge_store::{Claimed, Store};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

struct Server {
    base: String,
    store: Store,
    stats: Arc<WebhookStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), WebhookError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(config: WebhookConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state.db").to_str().unwrap())
            .await
            .unwrap();
        let server = WebhookServer::bind(&config, store.clone()).await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let stats = server.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Server {
            base,
            store,
            stats,
            shutdown,
            task,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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

    async fn pending(&self) -> u64 {
        self.store.backlog().await.unwrap().pending
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn hmac(encoding: SignatureEncoding, prefix: Option<&str>, ts: Option<&str>) -> HmacAuth {
    HmacAuth {
        secret: SecretString::from("the-shared-secret"),
        header: "X-Signature".into(),
        encoding,
        prefix: prefix.map(str::to_owned),
        timestamp_header: ts.map(str::to_owned),
        tolerance_secs: 300,
    }
}

fn shape() -> MessageShape {
    let mut s = MessageShape::with_family("packshots");
    s.event_id_pointer = Some("/event_id".into());
    s
}

fn endpoint(path: &str, auth: WebhookAuth) -> GenericWebhookConfig {
    GenericWebhookConfig {
        path: path.into(),
        shape: shape(),
        auth,
        event_id_header: Some("X-Event-Id".into()),
        source: "webhook".into(),
    }
}

fn config(endpoints: Vec<GenericWebhookConfig>) -> WebhookConfig {
    WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        generic: endpoints,
        ..WebhookConfig::default()
    }
}

fn item(id: &str, event_id: &str) -> Value {
    json!({"id": id, "updated_at": "2026-04-01T10:00:00Z", "event_id": event_id, "title": format!("asset {id}")})
}

async fn post(
    url: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let h = r.headers().clone();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, h, v)
}

#[tokio::test]
async fn hmac_hex_signed_delivery_is_stored_before_200() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let s = Server::start(config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]))
    .await;
    let body = item("A-1", "ev-1").to_string();
    let (status, _, v) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", auth.sign(body.as_bytes(), None))],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1);
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].change,
        AssetChange {
            family: "packshots".into(),
            event_id: Some("ev-1".into()),
            source: "webhook".into(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: "A-1".into(),
                    updated_at: "2026-04-01T10:00:00Z".parse().unwrap(),
                    record: serde_json::from_str(&body).unwrap(),
                }
            }
        }
    );
    let st = s.stats.snapshot();
    assert_eq!((st.received, st.acknowledged, st.accepted), (1, 1, 1));
    s.stop().await;
}

#[tokio::test]
async fn base64_prefixed_and_timestamped_signatures() {
    let b64 = hmac(SignatureEncoding::Base64, Some("sha256="), None);
    let ts = hmac(SignatureEncoding::Hex, Some("v1="), Some("X-Timestamp"));
    let s = Server::start(config(vec![
        endpoint("/b64", WebhookAuth::Hmac(b64.clone())),
        endpoint("/ts", WebhookAuth::Hmac(ts.clone())),
    ]))
    .await;

    let body = item("B-1", "ev-b64").to_string();
    let sig = b64.sign(body.as_bytes(), None);
    assert!(sig.starts_with("sha256=") && sig.ends_with('='), "{sig}");
    let (status, _, _) = post(&s.url("/b64"), body.as_bytes(), &[("x-signature", sig)]).await;
    assert_eq!(status, 200);
    // The same signature without its prefix is refused.
    let bare = b64.sign(body.as_bytes(), None)["sha256=".len()..].to_owned();
    let (status, _, v) = post(&s.url("/b64"), body.as_bytes(), &[("x-signature", bare)]).await;
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("sha256="), "{v}");

    let now = chrono::Utc::now().timestamp().to_string();
    let body = item("T-1", "ev-ts").to_string();
    let sig = ts.sign(body.as_bytes(), Some(&now));
    let (status, _, _) = post(
        &s.url("/ts"),
        body.as_bytes(),
        &[("x-signature", sig.clone()), ("x-timestamp", now.clone())],
    )
    .await;
    assert_eq!(status, 200);
    // Missing timestamp, replayed with another timestamp, stale timestamp: 401.
    let (status, _, _) = post(
        &s.url("/ts"),
        body.as_bytes(),
        &[("x-signature", sig.clone())],
    )
    .await;
    assert_eq!(status, 401);
    let later = (chrono::Utc::now().timestamp() + 5).to_string();
    let (status, _, _) = post(
        &s.url("/ts"),
        body.as_bytes(),
        &[("x-signature", sig), ("x-timestamp", later)],
    )
    .await;
    assert_eq!(status, 401);
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    let body2 = item("T-2", "ev-old").to_string();
    let (status, _, v) = post(
        &s.url("/ts"),
        body2.as_bytes(),
        &[
            ("x-signature", ts.sign(body2.as_bytes(), Some(&old))),
            ("x-timestamp", old),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("tolerance"), "{v}");

    let ids: Vec<String> = s
        .inbox()
        .await
        .into_iter()
        .map(|c| c.change.dam_id().to_owned())
        .collect();
    assert_eq!(ids, ["B-1", "T-1"]);
    assert_eq!(s.stats.snapshot().rejected_unauthorized, 4);
    s.stop().await;
}

#[tokio::test]
async fn bad_or_missing_signature_is_401_and_nothing_is_stored() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let s = Server::start(config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]))
    .await;
    let body = item("X-1", "ev-x").to_string();
    let other = hmac(SignatureEncoding::Hex, None, None);
    let wrong_secret = HmacAuth {
        secret: SecretString::from("another-secret"),
        ..other
    };
    for headers in [
        vec![],
        vec![("x-signature", wrong_secret.sign(body.as_bytes(), None))],
        vec![("x-signature", "zz-not-hex".to_owned())],
        // Signed for another body.
        vec![("x-signature", auth.sign(b"{}", None))],
    ] {
        let (status, _, v) = post(&s.url("/webhooks/dam"), body.as_bytes(), &headers).await;
        assert_eq!(status, 401, "{headers:?}: {v}");
        assert!(v["error"].is_string());
    }
    assert_eq!(s.pending().await, 0);
    assert_eq!(s.stats.snapshot().rejected_unauthorized, 4);
    s.stop().await;
}

#[tokio::test]
async fn redelivery_is_acknowledged_and_stored_once() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let s = Server::start(config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]))
    .await;
    let body = item("R-1", "ev-same").to_string();
    let sig = auth.sign(body.as_bytes(), None);
    let (s1, _, v1) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", sig.clone())],
    )
    .await;
    let (s2, _, v2) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", sig)],
    )
    .await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200));
    assert_eq!(
        (v1["accepted"].clone(), v1["duplicates"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        (v2["accepted"].clone(), v2["duplicates"].clone()),
        (json!(0), json!(1))
    );
    // The header id works the same for a body without one.
    let no_id = json!({"id": "R-2", "updated_at": "2026-04-01T10:00:00Z"}).to_string();
    let sig = auth.sign(no_id.as_bytes(), None);
    for _ in 0..2 {
        let (st, _, _) = post(
            &s.url("/webhooks/dam"),
            no_id.as_bytes(),
            &[("x-signature", sig.clone()), ("x-event-id", "hdr-7".into())],
        )
        .await;
        assert_eq!(st, 200);
    }
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[1].change.event_id.as_deref(), Some("hdr-7"));
    let st = s.stats.snapshot();
    assert_eq!((st.accepted, st.duplicates, st.acknowledged), (2, 2, 4));
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_nothing_is_stored() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let mut c = config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]);
    c.body_limit_bytes = 1024;
    let s = Server::start(c).await;
    let mut big = item("BIG", "ev-big");
    big["padding"] = json!("x".repeat(2000));
    let body = big.to_string();
    let sig = auth.sign(body.as_bytes(), None);
    // With a Content-Length.
    let (status, _, v) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", sig.clone())],
    )
    .await;
    assert_eq!(status, 413, "{v}");
    // Streamed (chunked, no Content-Length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(300)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = reqwest::Client::new()
        .post(s.url("/webhooks/dam"))
        .header("x-signature", sig)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.pending().await, 0);
    assert_eq!(s.stats.snapshot().rejected_too_large, 2);
    // A body within the limit still works.
    let small = item("S", "ev-small").to_string();
    let (status, _, _) = post(
        &s.url("/webhooks/dam"),
        small.as_bytes(),
        &[("x-signature", auth.sign(small.as_bytes(), None))],
    )
    .await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_and_nothing_is_stored() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let s = Server::start(config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]))
    .await;
    for (body, want) in [
        ("{not json".to_owned(), "not JSON"),
        (
            json!({"updated_at": "2026-04-01T10:00:00Z"}).to_string(),
            "/id",
        ),
        // One bad item spoils the whole delivery: nothing of it is stored.
        (
            json!([item("OK-1", "e1"), {"id": "NO-TIME"}]).to_string(),
            "/updated_at",
        ),
        ("42".to_owned(), "expected an object"),
    ] {
        let (status, _, v) = post(
            &s.url("/webhooks/dam"),
            body.as_bytes(),
            &[("x-signature", auth.sign(body.as_bytes(), None))],
        )
        .await;
        assert_eq!(status, 400, "{body}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    assert_eq!(s.pending().await, 0);
    assert_eq!(s.stats.snapshot().rejected_malformed, 4);
    s.stop().await;
}

#[tokio::test]
async fn api_key_authentication() {
    let s = Server::start(config(vec![endpoint(
        "/webhooks/eventbridge",
        WebhookAuth::ApiKey(ApiKeyAuth {
            header: "X-Api-Key".into(),
            key: SecretString::from("k-0123456789"),
        }),
    )]))
    .await;
    let body = item("K-1", "ev-k").to_string();
    let (status, _, _) = post(
        &s.url("/webhooks/eventbridge"),
        body.as_bytes(),
        &[("x-api-key", "k-0123456789".into())],
    )
    .await;
    assert_eq!(status, 200);
    for headers in [vec![], vec![("x-api-key", "k-0123456788".to_owned())]] {
        let body = item("K-2", "ev-k2").to_string();
        let (status, _, _) = post(&s.url("/webhooks/eventbridge"), body.as_bytes(), &headers).await;
        assert_eq!(status, 401);
    }
    let inbox = s.inbox().await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].change.dam_id(), "K-1");
    s.stop().await;
}

#[tokio::test]
async fn array_bodies_and_family_routing() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let mut ep = endpoint("/webhooks/dam", WebhookAuth::Hmac(auth.clone()));
    ep.shape = serde_json::from_value(json!({
        "items_pointer": "/assets",
        "event_id_pointer": "/delivery",
        "family_pointer": "/folder",
        "family_map": {"Packshots": "packshots", "People": "portraits"},
    }))
    .unwrap();
    let s = Server::start(config(vec![ep])).await;
    let body = json!({"delivery": "d-1", "assets": [
        {"id": "P-1", "updated_at": "2026-04-01T10:00:00Z", "folder": "Packshots"},
        {"id": "P-2", "updated_at": "2026-04-01T10:00:00Z", "folder": "People"},
        {"id": "P-3", "updated_at": "2026-04-01T10:00:00Z", "folder": "Drafts"},
        {"id": "P-4", "updated_at": "2026-04-01T10:00:00Z", "folder": "Packshots", "deleted": true}
    ]})
    .to_string();
    let (status, _, v) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", auth.sign(body.as_bytes(), None))],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["accepted"].clone(), v["skipped"].clone()),
        (json!(3), json!(1))
    );
    let got: BTreeMap<String, (String, String, bool)> = s
        .inbox()
        .await
        .into_iter()
        .map(|c| {
            (
                c.change.dam_id().to_owned(),
                (
                    c.change.family.clone(),
                    c.change.event_id.clone().unwrap(),
                    matches!(c.change.kind, ChangeKind::Delete { .. }),
                ),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            (
                "P-1".to_owned(),
                ("packshots".to_owned(), "d-1#0".to_owned(), false)
            ),
            (
                "P-2".to_owned(),
                ("portraits".to_owned(), "d-1#1".to_owned(), false)
            ),
            (
                "P-4".to_owned(),
                ("packshots".to_owned(), "d-1#3".to_owned(), true)
            ),
        ])
    );
    assert_eq!(s.stats.snapshot().skipped, 1);
    s.stop().await;
}

#[tokio::test]
async fn full_backlog_is_503_with_retry_after_and_nothing_is_stored() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let mut c = config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]);
    c.backlog_limit = 3;
    c.retry_after_secs = 7;
    let s = Server::start(c).await;
    // Two deliveries fit, the store then holds 2 of 3.
    for i in 0..2 {
        let body = item(&format!("F-{i}"), &format!("ev-f{i}")).to_string();
        let (status, _, _) = post(
            &s.url("/webhooks/dam"),
            body.as_bytes(),
            &[("x-signature", auth.sign(body.as_bytes(), None))],
        )
        .await;
        assert_eq!(status, 200);
    }
    // Something else fills the inbox up to the limit.
    s.store
        .enqueue(&[AssetChange {
            family: "packshots".into(),
            event_id: None,
            source: "poll".into(),
            kind: ChangeKind::Delete {
                dam_id: "other".into(),
                deleted_at: None,
            },
        }])
        .await
        .unwrap();
    // The backlog is counted at most once a second (in between, this server's own writes are
    // added): wait for a fresh count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = item("F-9", "ev-f9").to_string();
    let (status, headers, v) = post(
        &s.url("/webhooks/dam"),
        body.as_bytes(),
        &[("x-signature", auth.sign(body.as_bytes(), None))],
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    assert_eq!(s.pending().await, 3);
    assert!(s.inbox().await.iter().all(|c| c.change.dam_id() != "F-9"));
    assert_eq!(s.stats.snapshot().rejected_backlog_full, 1);
    s.stop().await;
}

#[tokio::test]
async fn backlog_count_includes_this_servers_writes_between_counts() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let mut c = config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth.clone()),
    )]);
    c.backlog_limit = 2;
    c.backlog_check_interval_ms = 60_000;
    let s = Server::start(c).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = item(&format!("G-{i}"), &format!("ev-g{i}")).to_string();
        let (status, _, _) = post(
            &s.url("/webhooks/dam"),
            body.as_bytes(),
            &[("x-signature", auth.sign(body.as_bytes(), None))],
        )
        .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(s.pending().await, 2);
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let auth = hmac(SignatureEncoding::Hex, None, None);
    let s = Server::start(config(vec![endpoint(
        "/webhooks/dam",
        WebhookAuth::Hmac(auth),
    )]))
    .await;
    let (status, _, v) = post(&s.url("/webhooks/other"), b"{}", &[]).await;
    assert_eq!(status, 404, "{v}");
    let r = reqwest::get(s.url("/webhooks/dam")).await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.stats.snapshot().not_found, 1);
    s.stop().await;
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let auth = || WebhookAuth::Hmac(hmac(SignatureEncoding::Hex, None, None));
    for (c, want) in [
        (config(vec![]), "no endpoint"),
        (
            config(vec![endpoint("webhooks", auth())]),
            "must start with `/`",
        ),
        (config(vec![endpoint("/a/{id}", auth())]), "letters, digits"),
        (
            config(vec![endpoint("/a", auth()), endpoint("/a", auth())]),
            "used twice",
        ),
    ] {
        let e = WebhookServer::bind(&c, store.clone()).await.unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    let mut c = config(vec![endpoint("/a", auth())]);
    c.tls_cert_file = Some("cert.pem".into());
    let e = WebhookServer::bind(&c, store.clone()).await.unwrap_err();
    assert!(e.to_string().contains("go together"), "{e}");
    // The TOML shape: defaults, and unknown keys refused.
    let c: WebhookConfig = toml_like(json!({
        "generic": [{"path": "/w", "shape": {"family": "f"}, "auth": {"hmac": {"secret": "s"}}}]
    }));
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.body_limit_bytes, 2 * 1024 * 1024);
    assert_eq!(c.backlog_limit, 100_000);
    assert!(serde_json::from_value::<WebhookConfig>(json!({"listne": "x"})).is_err());
}

fn toml_like(v: Value) -> WebhookConfig {
    serde_json::from_value(v).unwrap()
}
