//! Group commit of webhook deliveries, over real HTTP on 127.0.0.1 against a SQLite inbox in a
//! temporary directory.
//!
//! To make grouping deterministic, the test holds SQLite's write lock from its own connection
//! (`BEGIN IMMEDIATE`) while deliveries arrive: the committer's first transaction waits for the
//! lock, every other delivery queues behind it, and the test releases the lock only once the
//! server counts every delivery as handed to the committer (`commit_requests`). Nothing may be
//! acknowledged while the lock is held; afterwards everything queued is written together.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assetbridge_core::ChangeKind;
use assetbridge_sources::message::MessageShape;
use assetbridge_sources::webhook::{
    ApiKeyAuth, GenericWebhookConfig, WebhookAuth, WebhookConfig, WebhookError, WebhookServer,
    WebhookStats,
};
use assetbridge_store::{Claimed, Store, StoreOptions};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, SqliteConnection};
use tokio_util::sync::CancellationToken;

const PATH: &str = "/webhooks/dam";
const KEY: &str = "group-commit-key";

struct Server {
    url: String,
    db: String,
    store: Store,
    stats: Arc<WebhookStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), WebhookError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(busy_timeout: Duration) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db").to_str().unwrap().to_owned();
        let options = StoreOptions {
            busy_timeout,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&db, options).await.unwrap();
        let mut shape = MessageShape::with_family("packshots");
        shape.event_id_pointer = Some("/event_id".into());
        let config = WebhookConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            backlog_limit: 0,
            generic: vec![GenericWebhookConfig {
                path: PATH.into(),
                shape,
                auth: WebhookAuth::ApiKey(ApiKeyAuth {
                    header: "X-Api-Key".into(),
                    key: SecretString::from(KEY),
                }),
                event_id_header: None,
                source: "webhook".into(),
            }],
            ..WebhookConfig::default()
        };
        let server = WebhookServer::bind(&config, store.clone()).await.unwrap();
        let url = format!("http://{}{PATH}", server.local_addr());
        let stats = server.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Server {
            url,
            db,
            store,
            stats,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Holds SQLite's write lock until the returned connection rolls back.
    async fn lock_writes(&self) -> SqliteConnection {
        let mut c = SqliteConnection::connect(&format!("sqlite://{}", self.db))
            .await
            .unwrap();
        c.execute("BEGIN IMMEDIATE").await.unwrap();
        c
    }

    /// Waits until `n` deliveries were handed to the committer.
    async fn wait_queued(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.stats.snapshot().commit_requests < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} deliveries reached the committer within 30 s",
                self.stats.snapshot().commit_requests
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn inbox(&self) -> Vec<Claimed> {
        let c = self
            .store
            .claim("test", 100_000, Duration::from_secs(60))
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
            .expect("graceful shutdown within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn item(id: &str, updated_at: &str, event_id: &str) -> Value {
    json!({"id": id, "updated_at": updated_at, "event_id": event_id, "title": format!("asset {id}")})
}

/// Posts `body`; (status, `Retry-After`, JSON answer).
async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// (DAM id → (event id, updated_at)) of the inbox.
fn by_asset(inbox: &[Claimed]) -> BTreeMap<String, (Option<String>, String)> {
    inbox
        .iter()
        .map(|c| {
            let at = match &c.change.kind {
                ChangeKind::Upsert { asset } => asset.updated_at.to_rfc3339(),
                ChangeKind::Delete { .. } => "deleted".into(),
            };
            (
                c.change.dam_id().to_owned(),
                (c.change.event_id.clone(), at),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_share_one_transaction_and_are_acknowledged_after_it() {
    const N: usize = 200;
    let s = Server::start(Duration::from_secs(60)).await;
    let lock = s.lock_writes().await;
    let client = client();
    let mut deliveries = tokio::task::JoinSet::new();
    for i in 0..N {
        let (client, url) = (client.clone(), s.url.clone());
        deliveries.spawn(async move {
            let event_id = format!("ev-{i}");
            let body = item(&format!("asset-{i}"), "2026-04-01T10:00:00Z", &event_id);
            (event_id, post(&client, &url, body).await)
        });
    }
    s.wait_queued(N as u64).await;
    let st = s.stats.snapshot();
    assert_eq!(
        (st.acknowledged, st.accepted),
        (0, 0),
        "nothing is acknowledged while the inbox cannot be written"
    );
    assert_eq!(
        s.store.backlog().await.unwrap().pending,
        0,
        "nothing written yet"
    );
    lock.close().await.unwrap(); // rolls the lock's empty transaction back

    let mut acknowledged = Vec::new();
    while let Some(r) = deliveries.join_next().await {
        let (event_id, (status, _, v)) = r.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            (&v["accepted"], &v["duplicates"], &v["stale"]),
            (&json!(1), &json!(0), &json!(0)),
            "every change of the group was accepted, so each delivery gets its own counts: {v}"
        );
        acknowledged.push(event_id);
    }
    let st = s.stats.snapshot();
    assert_eq!(st.commit_requests, N as u64);
    // The first delivery's transaction waited for the lock alone; all the others were queued
    // by then and went into one more transaction (N - 1 < 1 000 changes).
    assert!(
        st.commits <= 2,
        "{} transactions for {N} deliveries",
        st.commits
    );
    assert_eq!(
        (st.accepted, st.acknowledged, st.commit_failures),
        (N as u64, N as u64, 0)
    );

    let inbox = by_asset(&s.inbox().await);
    assert_eq!(inbox.len(), N);
    for event_id in &acknowledged {
        let i = event_id.trim_start_matches("ev-");
        assert_eq!(
            inbox.get(&format!("asset-{i}")).map(|e| e.0.as_deref()),
            Some(Some(event_id.as_str())),
            "acknowledged {event_id} is in the inbox"
        );
    }
    s.stop().await;
}

/// The deliveries of the dedup test, in order: (asset, DAM time, event id).
const MIXED: [(&str, &str, &str); 6] = [
    ("x", "2026-04-01T10:00:10Z", "e1"),
    ("x", "2026-04-01T10:00:12Z", "e2"), // newer: replaces the first
    ("x", "2026-04-01T10:00:11Z", "e3"), // older than the pending one: stale
    ("y", "2026-04-01T10:00:05Z", "e1"), // event id seen in this group: duplicate
    ("z", "2026-04-01T10:00:01Z", "e4"),
    ("z", "2026-04-01T10:00:01Z", "e4"), // a plain redelivery
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deduplicates_and_supersedes_as_deliveries_one_by_one_would() {
    // One by one: each delivery its own transaction.
    let one_by_one = Server::start(Duration::from_secs(60)).await;
    let client = client();
    for (asset, at, ev) in MIXED {
        let (status, _, v) = post(&client, &one_by_one.url, item(asset, at, ev)).await;
        assert_eq!(status, 200, "{v}");
    }
    let expected = by_asset(&one_by_one.inbox().await);
    let sequential = one_by_one.stats.snapshot();
    assert_eq!(sequential.commits, MIXED.len() as u64);
    one_by_one.stop().await;
    assert_eq!(
        expected,
        BTreeMap::from([
            (
                "x".to_owned(),
                (
                    Some("e2".to_owned()),
                    "2026-04-01T10:00:12+00:00".to_owned()
                )
            ),
            (
                "z".to_owned(),
                (
                    Some("e4".to_owned()),
                    "2026-04-01T10:00:01+00:00".to_owned()
                )
            ),
        ])
    );

    // Grouped: the same deliveries queued (in the same order) behind a held write lock.
    let s = Server::start(Duration::from_secs(60)).await;
    let lock = s.lock_writes().await;
    let mut answers = Vec::new();
    for (i, (asset, at, ev)) in MIXED.into_iter().enumerate() {
        let (client, url) = (client.clone(), s.url.clone());
        answers.push(tokio::spawn(async move {
            post(&client, &url, item(asset, at, ev)).await
        }));
        // The next one only once this one is queued: the group keeps the order of arrival.
        s.wait_queued(i as u64 + 1).await;
    }
    lock.close().await.unwrap();
    let mut bodies = Vec::new();
    for a in answers {
        let (status, _, v) = a.await.unwrap();
        assert_eq!(status, 200, "{v}");
        bodies.push(v);
    }
    let st = s.stats.snapshot();
    assert!(st.commits <= 2, "{} transactions", st.commits);
    assert_eq!(
        by_asset(&s.inbox().await),
        expected,
        "same inbox as one by one"
    );
    assert_eq!(
        (st.duplicates, st.stale),
        (2, 1),
        "e1 and e4 redelivered; x@11 older than x@12"
    );
    // x@10 is accepted on its own when its transaction waited for the lock alone (then x@12
    // replaces it), or collapsed into x@12 within the group.
    assert!((2..=3).contains(&st.accepted), "{st:?}");
    // Whose changes were dropped is not known within a transaction: the deliveries after the
    // first (which may have been written alone) carry the group's counts.
    for v in &bodies[1..] {
        assert_eq!(v["stored"], 1, "{v}");
        assert!(v.get("accepted").is_none(), "{v}");
        assert!(v["group"]["deliveries"].as_u64().unwrap() >= 5, "{v}");
        assert_eq!(v["group"]["stale"], 1, "{v}");
        assert_eq!(v["group"]["duplicates"], 2, "{v}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_answers_503_to_each_of_its_deliveries_and_stores_nothing() {
    const N: usize = 20;
    // The store gives up on the lock after 300 ms.
    let s = Server::start(Duration::from_millis(300)).await;
    let lock = s.lock_writes().await;
    let client = client();
    let mut deliveries = tokio::task::JoinSet::new();
    for i in 0..N {
        let (client, url) = (client.clone(), s.url.clone());
        deliveries.spawn(async move {
            let body = item(
                &format!("a-{i}"),
                "2026-04-01T10:00:00Z",
                &format!("ev-{i}"),
            );
            post(&client, &url, body).await
        });
    }
    while let Some(r) = deliveries.join_next().await {
        let (status, retry_after, v) = r.unwrap();
        assert_eq!(status, 503, "{v}");
        assert_eq!(retry_after.as_deref(), Some("30"));
    }
    lock.close().await.unwrap();
    let st = s.stats.snapshot();
    assert_eq!(st.rejected_store_unavailable, N as u64);
    assert_eq!((st.acknowledged, st.accepted), (0, 0));
    assert!(st.commit_failures >= 1 && st.commit_failures == st.commits);
    assert!(
        s.inbox().await.is_empty(),
        "nothing of a failed group is stored"
    );

    // The senders retry: every event is new to the inbox (no event id was remembered).
    for i in 0..N {
        let body = item(
            &format!("a-{i}"),
            "2026-04-01T10:00:00Z",
            &format!("ev-{i}"),
        );
        let (status, _, v) = post(&client, &s.url, body).await;
        assert_eq!((status, &v["accepted"]), (200, &json!(1)), "{v}");
    }
    assert_eq!(s.inbox().await.len(), N);
    s.stop().await;
}
