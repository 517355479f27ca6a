//! The NATS JetStream consumer against the real server on 127.0.0.1:4222, writing into a SQLite
//! store in a temporary directory. Every test uses its own stream and deletes it.
//! A server that cannot be reached fails the test with a clear message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assetbridge_core::ChangeKind;
use assetbridge_sources::message::MessageShape;
use assetbridge_sources::nats::{self, NatsConfig};
use assetbridge_sources::queue::{QueueStats, QueueStatsSnapshot, SourceError};
use assetbridge_store::{DeadLetterFilter, DeadLetterPayload, Store};
use async_nats::jetstream::{self, consumer::AckPolicy};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod support;
use support::{Handshake, TlsTerminator};

const SERVER: &str = "nats://127.0.0.1:4222";

// --- helpers -------------------------------------------------------------------------------

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

async fn jetstream() -> jetstream::Context {
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(SERVER))
        .await
        .unwrap_or_else(|_| {
            panic!("NATS at 127.0.0.1:4222 did not answer within 5 s; start it with JetStream (CI does)")
        })
        .unwrap_or_else(|e| {
            panic!("NATS at 127.0.0.1:4222 is not reachable: {e}; start it with JetStream (CI does)")
        });
    jetstream::new(client)
}

/// A test's own stream (one subject), deleted on `cleanup`.
struct TestStream {
    name: String,
    subject: String,
    js: jetstream::Context,
}

impl TestStream {
    async fn new(name: &str) -> TestStream {
        let js = jetstream().await;
        let name = unique(&format!("ABTEST_{name}"));
        let subject = format!("abtest.{}", name.to_lowercase());
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!("cannot create a JetStream stream (is JetStream enabled?): {e}")
        });
        TestStream { name, subject, js }
    }

    /// Publishes and waits for the stream's acknowledgement; `true` when the server dropped it
    /// as a duplicate `Nats-Msg-Id`.
    async fn publish(&self, body: &[u8], msg_id: Option<&str>) -> bool {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        self.js
            .publish_with_headers(self.subject.clone(), headers, Bytes::copy_from_slice(body))
            .await
            .unwrap()
            .await
            .unwrap()
            .duplicate
    }

    async fn consumer_info(&self, durable: &str) -> jetstream::consumer::Info {
        self.js
            .get_stream(&self.name)
            .await
            .unwrap()
            .consumer_info(durable)
            .await
            .unwrap()
    }

    /// Waits until the durable consumer has nothing pending and nothing unacknowledged.
    async fn wait_drained(&self, durable: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = self.consumer_info(durable).await;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "consumer not drained: {} pending, {} unacknowledged",
                info.num_pending,
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn cleanup(self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

struct Running {
    stats: Arc<QueueStats>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Running {
    fn start(config: NatsConfig, store: &Store) -> Running {
        let stats = Arc::new(QueueStats::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nats::run_with_stats(
            config,
            store.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
        Running {
            stats,
            shutdown,
            task,
        }
    }

    fn stats(&self) -> QueueStatsSnapshot {
        self.stats.snapshot()
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&QueueStatsSnapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.stats();
            if cond(&s) {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the consumer stopped while waiting for {what}; stats: {s:?}"
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stats: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts down and returns how long `run` took to return.
    async fn stop(self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the consumer did not stop within 10 s")
            .unwrap()
            .expect("run returned an error");
        started.elapsed()
    }
}

fn config(stream: &TestStream) -> NatsConfig {
    let mut c = NatsConfig::new(&stream.name, MessageShape::with_family("packshots"));
    c.durable = "assetbridge_test".into();
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 200;
    c.fetch_expires_ms = 500;
    c
}

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("state.db").to_str().unwrap())
        .await
        .unwrap()
}

fn asset(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "updated_at": "2024-05-01T10:00:00Z", "title": format!("asset {id}")
    }))
    .unwrap()
}

/// Every change in the inbox, by DAM id (claims them for a minute).
async fn inbox(store: &Store) -> Vec<(String, Option<String>, ChangeKind)> {
    let mut all: Vec<_> = store
        .claim("test", 10_000, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.change.dam_id().to_owned(),
                c.change.event_id.clone(),
                c.change.kind,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A TCP proxy to the server whose connections the test can cut.
struct Proxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (a, c) = (accepted.clone(), connections.clone());
        let listener = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            accepted,
            connections,
            listener,
        }
    }

    /// Closes every proxied connection (both sides see the socket close).
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.cut();
    }
}

// --- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_land_in_the_inbox_and_the_stream_is_drained() {
    let stream = TestStream::new("drain").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    for i in 0..40 {
        stream
            .publish(&asset(&format!("a{i:02}")), Some(&format!("m-{i}")))
            .await;
    }
    let cloud_event = serde_json::json!({
        "specversion": "1.0", "id": "ce-1", "type": "com.example.asset.updated",
        "source": "/dam", "time": "2024-05-01T10:00:00Z",
        "data": {"id": "ce-asset", "updated_at": "2024-05-01T10:00:00Z"}
    });
    stream
        .publish(&serde_json::to_vec(&cloud_event).unwrap(), None)
        .await;
    let two = serde_json::json!([
        {"id": "b1", "updated_at": "2024-05-01T10:00:00Z"},
        {"id": "b2", "updated_at": 1714557600}
    ]);
    stream
        .publish(&serde_json::to_vec(&two).unwrap(), Some("m-two"))
        .await;
    stream
        .publish(br#"{"id": "gone", "deleted": true}"#, Some("m-del"))
        .await;

    let c = config(&stream);
    let durable = c.durable.clone();
    let running = Running::start(c, &store);
    running
        .wait_for("43 messages acknowledged", |s| s.acked == 43)
        .await;
    stream.wait_drained(&durable).await;
    let s = running.stats();
    assert_eq!((s.received, s.enqueued), (43, 44), "{s:?}");
    assert_eq!((s.dead_lettered, s.duplicates, s.redelivered), (0, 0, 0));
    running.stop().await;

    let all = inbox(&store).await;
    assert_eq!(all.len(), 44, "{all:?}");
    let find = |id: &str| all.iter().find(|(d, _, _)| d == id).unwrap();
    assert_eq!(
        find("a07").1.as_deref(),
        Some("m-7"),
        "Nats-Msg-Id is the event id"
    );
    assert_eq!(find("ce-asset").1.as_deref(), Some("ce-1"));
    assert_eq!(find("b2").1.as_deref(), Some("m-two#1"));
    assert!(matches!(find("gone").2, ChangeKind::Delete { .. }));
    let info = stream.consumer_info(&durable).await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert_eq!(info.num_redelivered, 0);
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_creates_the_stream() {
    let js = jetstream().await;
    let name = unique("ABTEST_declare");
    let subject = format!("abtest.{}.>", name.to_lowercase());
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = NatsConfig::new(&name, MessageShape::with_family("packshots"));
    c.declare = true;
    c.subjects = vec![subject.clone()];
    c.fetch_expires_ms = 500;
    let running = Running::start(c, &store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while js.get_stream(&name).await.is_err() {
        assert!(Instant::now() < deadline, "the stream was not created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    js.publish(
        format!("abtest.{}.one", name.to_lowercase()),
        Bytes::from(asset("declared")),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    running.wait_for("the message", |s| s.acked == 1).await;
    running.stop().await;
    assert_eq!(inbox(&store).await[0].0, "declared");
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_stored_once() {
    let stream = TestStream::new("dup").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = config(&stream);
    c.shape.event_id_pointer = Some("/event_id".into());
    let running = Running::start(c, &store);

    // The same Nats-Msg-Id twice: JetStream itself drops the second publish.
    assert!(!stream.publish(&asset("h1"), Some("hdr-1")).await);
    assert!(stream.publish(&asset("h2"), Some("hdr-1")).await);
    // The same event id in two bodies (different assets): the inbox drops the second.
    let body = |id: &str| {
        serde_json::to_vec(&serde_json::json!({
            "id": id, "updated_at": "2024-05-01T10:00:00Z", "event_id": "evt-1"
        }))
        .unwrap()
    };
    stream.publish(&body("e1"), None).await;
    running.wait_for("two messages", |s| s.acked == 2).await;
    stream.publish(&body("e2"), None).await;
    running.wait_for("three messages", |s| s.acked == 3).await;

    let s = running.stats();
    assert_eq!((s.received, s.enqueued, s.duplicates), (3, 2, 1), "{s:?}");
    running.stop().await;
    let all = inbox(&store).await;
    let ids: Vec<&str> = all.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(ids, ["e1", "h1"]);
    assert_eq!(all[0].1.as_deref(), Some("evt-1"));
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_message_becomes_a_dead_letter_and_is_acknowledged() {
    let stream = TestStream::new("dead").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let c = config(&stream);
    let durable = c.durable.clone();
    let running = Running::start(c, &store);

    stream.publish(b"{not json", Some("bad-1")).await;
    stream
        .publish(br#"{"id": "no-time", "updated_at": "yesterday"}"#, None)
        .await;
    stream.publish(&asset("fine"), None).await;
    running
        .wait_for("three acknowledged", |s| s.acked == 3)
        .await;
    stream.wait_drained(&durable).await;
    let s = running.stats();
    assert_eq!(
        (s.dead_lettered, s.enqueued, s.redelivered),
        (2, 1, 0),
        "{s:?}"
    );
    running.stop().await;

    let dead = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].payload,
        DeadLetterPayload::Raw(b"{not json".to_vec())
    );
    assert_eq!(dead[0].reason.kind, "unparseable");
    assert!(
        dead[0].reason.message.contains("not JSON"),
        "{:?}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.message.contains("bad-1"),
        "{:?}",
        dead[0].reason
    );
    assert_eq!(dead[0].source.as_deref(), Some("nats"));
    assert!(
        dead[1].reason.message.contains("/updated_at"),
        "{:?}",
        dead[1].reason
    );
    let info = stream.consumer_info(&durable).await;
    assert_eq!(info.num_redelivered, 0, "acknowledged, never redelivered");
    assert_eq!(inbox(&store).await.len(), 1);
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_naks_and_the_messages_come_back() {
    let stream = TestStream::new("storefail").await;
    let dir = tempfile::tempdir().unwrap();
    let broken = store(&dir).await;
    broken.close().await; // every call now fails
    for i in 0..3 {
        stream
            .publish(&asset(&format!("s{i}")), Some(&format!("s-{i}")))
            .await;
    }
    let c = config(&stream);
    let durable = c.durable.clone();
    let running = Running::start(c, &broken);
    running
        .wait_for("two failed attempts", |s| {
            s.store_failures >= 2 && s.received >= 6
        })
        .await;
    let s = running.stats();
    assert_eq!((s.acked, s.enqueued), (0, 0), "{s:?}");
    running.stop().await;
    let info = stream.consumer_info(&durable).await;
    assert!(info.num_redelivered >= 1, "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 0, "nothing acknowledged");

    // With a working store the same messages arrive, as redeliveries.
    let store = store(&dir).await;
    let running = Running::start(config(&stream), &store);
    running
        .wait_for("three acknowledged", |s| s.acked == 3)
        .await;
    assert_eq!(running.stats().redelivered, 3);
    stream.wait_drained(&durable).await;
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["s0", "s1", "s2"]);
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_bounds_the_unacknowledged_messages() {
    let stream = TestStream::new("bound").await;
    let dir = tempfile::tempdir().unwrap();
    let broken = store(&dir).await;
    broken.close().await; // nothing is ever acknowledged
    for i in 0..20 {
        stream.publish(&asset(&format!("p{i}")), None).await;
    }
    let mut c = config(&stream);
    c.max_ack_pending = 7;
    c.fetch_batch = 7;
    c.ack_wait_secs = 45;
    // The batch closes at its 7 messages, not after the default 10 ms: on a loaded machine
    // the 7 can arrive spread out, and a batch closed early would be counted short. The pull
    // request lives long enough for the 7 to arrive.
    c.batch_wait_ms = 1_000;
    c.fetch_expires_ms = 5_000;
    // Nak delay and pause: the batch stays out for seconds. With jitter the pause is 10 to
    // 20 s, well beyond the shutdown bound below (and the 10 s `stop` allows).
    c.reconnect_min_ms = 20_000;
    c.reconnect_max_ms = 20_000;
    let durable = c.durable.clone();
    let running = Running::start(c, &broken);
    running
        .wait_for("a first batch", |s| s.store_failures >= 1)
        .await;

    let info = stream.consumer_info(&durable).await;
    assert_eq!(info.config.max_ack_pending, 7);
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, Duration::from_secs(45));
    assert_eq!(info.config.durable_name.as_deref(), Some(durable.as_str()));
    assert_eq!(info.num_ack_pending, 7, "{info:?}");
    assert_eq!(info.num_pending, 13, "{info:?}");
    assert_eq!(running.stats().received, 7);
    let took = running.stop().await;
    assert!(
        took < Duration::from_secs(4),
        "shutdown cut the pause short: {took:?}"
    );
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_survives_a_connection_drop() {
    let stream = TestStream::new("reconnect").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let proxy = Proxy::start("127.0.0.1:4222").await;
    let mut c = config(&stream);
    c.url = format!("nats://{}", proxy.addr);
    c.fetch_expires_ms = 200;
    let running = Running::start(c, &store);

    stream.publish(&asset("before"), None).await;
    running
        .wait_for("the first message", |s| s.acked == 1)
        .await;
    proxy.cut();
    running
        .wait_for("the disconnection", |s| s.reconnects >= 1)
        .await;
    stream.publish(&asset("after"), None).await;
    running
        .wait_for("the second message", |s| s.acked == 2)
        .await;
    assert!(proxy.accepted.load(Ordering::SeqCst) >= 2);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["after", "before"]);
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_pauses_pulling_until_it_drains() {
    let stream = TestStream::new("backpressure").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = config(&stream);
    c.backlog_limit = 5;
    c.fetch_batch = 5;
    let durable = c.durable.clone();
    for i in 0..20 {
        stream.publish(&asset(&format!("p{i:02}")), None).await;
    }
    let running = Running::start(c, &store);

    // Once the inbox holds more than 5 no pull request is sent: at most one request (5
    // messages) past the limit is written; the rest stays on the stream.
    running
        .wait_for("a pause", |s| s.backpressure_pauses == 1)
        .await;
    let acked = running.stats().acked;
    assert!((6..=10).contains(&acked), "{acked}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(running.stats().acked, acked, "nothing taken while paused");
    assert_eq!(store.backlog().await.unwrap().pending, acked);
    // The server counts the acks a moment after the client sent them: wait for its view to
    // match (it must, and stay so: nothing is pulled while paused).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = stream.consumer_info(&durable).await;
        if info.num_pending == 20 - acked && info.num_ack_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "acked {acked}: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.stats().acked, acked, "nothing taken while paused");

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut drained = 0;
    while running.stats().acked < 20 || store.backlog().await.unwrap().pending > 0 {
        let claimed = store
            .claim("worker", 100, Duration::from_secs(60))
            .await
            .unwrap();
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        drained += ids.len();
        store.complete(&ids).await.unwrap();
        assert!(Instant::now() < deadline, "stuck: {:?}", running.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(drained, 20);
    running.stop().await;
    stream.wait_drained(&durable).await;
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_returns_promptly() {
    let stream = TestStream::new("shutdown").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = config(&stream);
    c.fetch_expires_ms = 30_000; // an idle pull request outstanding for long
    let running = Running::start(c, &store);
    stream.publish(&asset("one"), None).await;
    running.wait_for("one message", |s| s.acked == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = running.stop().await;
    // Well below the 30 s the pull request would wait; loose for a loaded machine.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_an_error_at_start() {
    let _ = jetstream().await; // the server is there
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let c = NatsConfig::new(
        unique("ABTEST_missing"),
        MessageShape::with_family("packshots"),
    );
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        nats::run(c, store, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert!(e.to_string().contains("must exist"), "{e}");
}

/// Consumes three messages through a TLS terminator in front of the server.
async fn consume_over_tls(name: &str, handshake: Handshake, tls_first: bool) {
    let stream = TestStream::new(name).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls = TlsTerminator::start("127.0.0.1:4222", handshake).await;
    let mut c = config(&stream);
    c.url = format!("nats://{}", tls.addr);
    c.tls_required = true;
    c.tls_first = tls_first;
    c.tls_ca_file = Some(TlsTerminator::ca_file(dir.path()));
    let running = Running::start(c, &store);

    for i in 0..3 {
        stream.publish(&asset(&format!("t{i}")), None).await;
    }
    running
        .wait_for("3 messages acknowledged over TLS", |s| s.acked == 3)
        .await;
    assert_eq!(tls.handshakes(), 1);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["t0", "t1", "t2"]);
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_after_the_server_info_with_a_private_ca() {
    consume_over_tls("tls", Handshake::AfterGreeting, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_first_handshake_with_a_private_ca() {
    consume_over_tls("tlsfirst", Handshake::First, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_an_error_at_start() {
    let stream = TestStream::new("tlsuntrusted").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls = TlsTerminator::start("127.0.0.1:4222", Handshake::AfterGreeting).await;
    stream.publish(&asset("kept"), None).await;
    // No `tls_ca_file`: the system's roots do not know the self-signed certificate.
    let mut c = config(&stream);
    c.url = format!("tls://{}", tls.addr);
    c.token = Some("t0k3n-s3cret".to_owned().into());
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        nats::run(c, store.clone(), CancellationToken::new()),
    )
    .await
    .expect("a certificate refusal must end the consumer, not be retried")
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert!(text.to_lowercase().contains("tls"), "{text}");
    assert!(!text.contains("t0k3n-s3cret"), "{text}");
    assert_eq!(tls.handshakes(), 0);
    assert!(inbox(&store).await.is_empty());
    stream.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_for_a_server_that_requires_one() {
    let stream = TestStream::new("mtls").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls =
        TlsTerminator::requiring_client_cert("127.0.0.1:4222", Handshake::AfterGreeting).await;

    // Without a client certificate the server's side refuses the handshake: an error at start.
    let mut c = config(&stream);
    c.url = format!("tls://{}", tls.addr);
    c.tls_ca_file = Some(TlsTerminator::ca_file(dir.path()));
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        nats::run(c.clone(), store.clone(), CancellationToken::new()),
    )
    .await
    .expect("a refused handshake must end the consumer, not be retried")
    .unwrap_err();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert_eq!(tls.handshakes(), 0);

    let (cert, key) = TlsTerminator::client_cert_files(dir.path());
    c.tls_client_cert_file = Some(cert);
    c.tls_client_key_file = Some(key);
    let running = Running::start(c, &store);
    stream.publish(&asset("m0"), None).await;
    running
        .wait_for("the message, over mutual TLS", |s| s.acked == 1)
        .await;
    assert_eq!(tls.handshakes(), 1);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["m0"]);
    stream.cleanup().await;
}
