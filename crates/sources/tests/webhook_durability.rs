//! "SIGKILL during a webhook storm of 5 000 events loses no acknowledged event."
//!
//! The webhook server runs in a child process (this test binary re-invoked to run the ignored
//! `child_webhook_server` test, which serves until it is killed). The parent fires 5 000
//! HMAC-signed deliveries at it, 64 at a time, records the event id of every delivery answered
//! 2xx, SIGKILLs the child once a share of them is acknowledged, then reopens the SQLite store
//! and checks that every acknowledged event is in the inbox.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assetbridge_sources::message::MessageShape;
use assetbridge_sources::webhook::{
    GenericWebhookConfig, HmacAuth, SignatureEncoding, WebhookAuth, WebhookConfig, WebhookServer,
};
use assetbridge_store::Store;
use futures::StreamExt;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const CHILD_DB_ENV: &str = "ASSETBRIDGE_TEST_WEBHOOK_CHILD_DB";
const READY: &str = "WEBHOOK-CHILD-LISTENING ";
const EVENTS: usize = 5_000;
const CONCURRENCY: usize = 64;
/// Kill once this many deliveries were acknowledged.
const KILL_AFTER_ACKS: usize = 1_500;

fn hmac() -> HmacAuth {
    HmacAuth {
        secret: SecretString::from("storm-secret"),
        header: "X-Signature".into(),
        encoding: SignatureEncoding::Hex,
        prefix: Some("sha256=".into()),
        timestamp_header: None,
        tolerance_secs: 300,
    }
}

fn config() -> WebhookConfig {
    let mut shape = MessageShape::with_family("packshots");
    shape.event_id_pointer = Some("/event_id".into());
    WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog_limit: 0,
        generic: vec![GenericWebhookConfig {
            path: "/webhooks/dam".into(),
            shape,
            auth: WebhookAuth::Hmac(hmac()),
            event_id_header: None,
            source: "webhook".into(),
        }],
        ..WebhookConfig::default()
    }
}

/// Kills (SIGKILL) and reaps the child when dropped, so a failing test leaves no process behind.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child: serves the webhook until killed. Run only by the durability test.
#[test]
#[ignore = "the child process of webhook_storm_survives_sigkill; runs only when it starts it"]
fn child_webhook_server() {
    let Ok(db) = std::env::var(CHILD_DB_ENV) else {
        panic!("{CHILD_DB_ENV} is not set: this test is started by webhook_storm_survives_sigkill");
    };
    // The parent holds our stdin: when it goes away (even killed), so do we.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(&db).await.unwrap();
        let server = WebhookServer::bind(&config(), store).await.unwrap();
        println!("{READY}{}", server.local_addr());
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        server.run(CancellationToken::new()).await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_storm_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let db = db.to_str().unwrap().to_owned();
    // Create the schema first, so the child starts fast.
    Store::open(&db).await.unwrap().close().await;

    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_webhook_server",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, &db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // A plain thread (not spawn_blocking: the runtime would wait for it on a failure).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            // libtest prints "test child_webhook_server ... " on the same line first.
            if let Some(at) = line.find(READY) {
                let _ = tx.send(line[at + READY.len()..].trim().to_owned());
                // Keep draining the child's stdout so it never blocks on a full pipe.
                for _ in lines {}
                return;
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("the child did not start listening within 30 s")
        .expect("the child exited without listening");
    let url = format!("http://{addr}/webhooks/dam");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let auth = hmac();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let child = Arc::new(Mutex::new(child));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Instant::now();

    futures::stream::iter(0..EVENTS)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            let (acked, failed, child, killed_at) = (
                acked.clone(),
                failed.clone(),
                child.clone(),
                killed_at.clone(),
            );
            async move {
                let event_id = format!("storm-{i}");
                let body = serde_json::json!({
                    "id": format!("asset-{i}"),
                    "updated_at": "2026-05-01T12:00:00Z",
                    "event_id": event_id,
                    "title": "a storm of changes",
                })
                .to_string();
                let sig = auth.sign(body.as_bytes(), None);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-signature", sig)
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let n = {
                            let mut a = acked.lock().unwrap();
                            a.push(event_id);
                            a.len()
                        };
                        if n == KILL_AFTER_ACKS {
                            // SIGKILL (std's Child::kill on Unix).
                            child.lock().unwrap().0.kill().unwrap();
                            *killed_at.lock().unwrap() = Some(Instant::now());
                        }
                    }
                    Ok(r) => panic!("unexpected answer {} before the kill", r.status()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let status = child.lock().unwrap().0.wait().unwrap();
    let killed_at = killed_at.lock().unwrap().expect("the child was killed");
    let acked = acked.lock().unwrap().clone();
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "storm: {} acknowledged, {failed} failed; killed after {:?} ({status})",
        acked.len(),
        killed_at - started
    );
    assert!(!status.success(), "the child was killed, not finished");
    assert!(
        failed > 0,
        "the kill happened mid-storm: some deliveries must have failed"
    );
    assert_eq!(acked.len() + failed, EVENTS);

    // Reopen the store the child was writing and look for every acknowledged event.
    let store = Store::open(&db).await.unwrap();
    let claimed = store
        .claim("check", EVENTS + 10, Duration::from_secs(60))
        .await
        .unwrap();
    let stored: HashSet<String> = claimed
        .iter()
        .filter_map(|c| c.change.event_id.clone())
        .collect();
    assert_eq!(
        stored.len(),
        claimed.len(),
        "one inbox entry per event (distinct assets)"
    );
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in the inbox, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(stored.len() >= acked.len());
}
