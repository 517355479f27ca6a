//! HTTPS for the webhook server (rustls, ring provider): a delivery over TLS is stored, plain
//! HTTP on the TLS port gets nothing, unusable certificate files are refused at start.

use std::time::Duration;

use assetbridge_sources::message::MessageShape;
use assetbridge_sources::webhook::{
    GenericWebhookConfig, HmacAuth, SignatureEncoding, WebhookAuth, WebhookConfig, WebhookServer,
};
use assetbridge_store::Store;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// A TEST-ONLY self-signed certificate (P-256, CA:FALSE) for 127.0.0.1 and localhost, valid
/// until 2126; it protects nothing.
const CERT_PEM: &str = include_str!("fixtures/localhost-cert.pem");
/// Its private key (PKCS#8). TEST ONLY.
const KEY_PEM: &str = include_str!("fixtures/localhost-key.pem");

fn hmac() -> HmacAuth {
    HmacAuth {
        secret: SecretString::from("tls-secret"),
        header: "X-Signature".into(),
        encoding: SignatureEncoding::Hex,
        prefix: None,
        timestamp_header: None,
        tolerance_secs: 300,
    }
}

fn config(dir: &std::path::Path) -> WebhookConfig {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, CERT_PEM).unwrap();
    std::fs::write(&key, KEY_PEM).unwrap();
    WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: Some(cert),
        tls_key_file: Some(key),
        generic: vec![GenericWebhookConfig {
            path: "/webhooks/dam".into(),
            shape: MessageShape::with_family("packshots"),
            auth: WebhookAuth::Hmac(hmac()),
            event_id_header: Some("X-Event-Id".into()),
            source: "webhook".into(),
        }],
        ..WebhookConfig::default()
    }
}

#[tokio::test]
async fn deliveries_over_https_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state.db").to_str().unwrap())
        .await
        .unwrap();
    let server = WebhookServer::bind(&config(dir.path()), store.clone())
        .await
        .unwrap();
    assert!(server.is_tls());
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(CERT_PEM.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = r#"{"id":"T-1","updated_at":"2026-04-01T10:00:00Z"}"#;
    let r = client
        .post(format!("https://localhost:{}/webhooks/dam", addr.port()))
        .header("x-signature", hmac().sign(body.as_bytes(), None))
        .header("x-event-id", "tls-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let claimed = store.claim("t", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].change.event_id.as_deref(), Some("tls-1"));

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(format!("http://{addr}/webhooks/dam"))
        .body(body)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the certificate cannot connect.
    let untrusting = reqwest::Client::new()
        .post(format!("https://localhost:{}/webhooks/dam", addr.port()))
        .body(body)
        .send()
        .await;
    assert!(untrusting.is_err());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn unusable_certificate_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state.db").to_str().unwrap())
        .await
        .unwrap();
    let mut c = config(dir.path());
    c.tls_key_file = Some(dir.path().join("missing.pem"));
    let e = WebhookServer::bind(&c, store.clone()).await.unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let mut c = config(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    c.tls_cert_file = Some(dir.path().join("empty.pem"));
    let e = WebhookServer::bind(&c, store).await.unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}
