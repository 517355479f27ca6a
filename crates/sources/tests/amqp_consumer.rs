//! The RabbitMQ consumer against the real broker on 127.0.0.1:5672 (guest/guest), writing into a
//! SQLite store in a temporary directory. Every test uses its own queue and deletes it.
//! A broker that cannot be reached fails the test with a clear message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assetbridge_core::ChangeKind;
use assetbridge_sources::amqp::{self, AmqpConfig};
use assetbridge_sources::message::MessageShape;
use assetbridge_sources::queue::{QueueStats, QueueStatsSnapshot, SourceError};
use assetbridge_store::{DeadLetterFilter, DeadLetterPayload, Store};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod support;
use support::{Handshake, TlsTerminator};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

// --- helpers -------------------------------------------------------------------------------

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("assetbridge-test-{name}-{}-{nanos}", std::process::id())
}

/// A test's own queue on the broker, deleted on `cleanup`.
struct TestQueue {
    name: String,
    _connection: Connection,
    channel: Channel,
}

impl TestQueue {
    async fn new(name: &str) -> TestQueue {
        let connection = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(BROKER, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("RabbitMQ at 127.0.0.1:5672 did not answer within 5 s; start it (CI does)"))
        .unwrap_or_else(|e| panic!("RabbitMQ at 127.0.0.1:5672 (guest/guest) is not reachable: {e}; start it (CI does)"));
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let name = unique(name);
        channel
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            name,
            _connection: connection,
            channel,
        }
    }

    async fn publish(&self, body: &[u8], message_id: Option<&str>) {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        self.channel
            .basic_publish("", &self.name, BasicPublishOptions::default(), body, props)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Messages ready for delivery (not counting delivered-but-unacknowledged ones).
    async fn ready(&self) -> u32 {
        self.channel
            .queue_declare(
                &self.name,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    async fn cleanup(self) {
        let _ = self
            .channel
            .queue_delete(&self.name, QueueDeleteOptions::default())
            .await;
    }
}

struct Running {
    stats: Arc<QueueStats>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Running {
    fn start(config: AmqpConfig, store: &Store) -> Running {
        let stats = Arc::new(QueueStats::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(amqp::run_with_stats(
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

fn shape() -> MessageShape {
    MessageShape::with_family("packshots")
}

fn config(queue: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(BROKER, queue, shape());
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 200;
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

async fn wait_ready(queue: &TestQueue, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = queue.ready().await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue still has {n} ready messages, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy to the broker whose connections the test can cut.
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
async fn messages_land_in_the_inbox_and_the_queue_is_drained() {
    let queue = TestQueue::new("drain").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = config(&queue.name);
    c.declare = true; // the queue exists already with the same arguments: declaring is idempotent
    let running = Running::start(c, &store);

    for i in 0..40 {
        queue
            .publish(&asset(&format!("a{i:02}")), Some(&format!("m-{i}")))
            .await;
    }
    // A CloudEvent, a message with two changes, and a deletion.
    let cloud_event = serde_json::json!({
        "specversion": "1.0", "id": "ce-1", "type": "com.example.asset.updated",
        "source": "/dam", "time": "2024-05-01T10:00:00Z",
        "data": {"id": "ce-asset", "updated_at": "2024-05-01T10:00:00Z"}
    });
    queue
        .publish(&serde_json::to_vec(&cloud_event).unwrap(), None)
        .await;
    let two = serde_json::json!([
        {"id": "b1", "updated_at": "2024-05-01T10:00:00Z"},
        {"id": "b2", "updated_at": 1714557600}
    ]);
    queue
        .publish(&serde_json::to_vec(&two).unwrap(), Some("m-two"))
        .await;
    queue
        .publish(br#"{"id": "gone", "deleted": true}"#, Some("m-del"))
        .await;

    running
        .wait_for("43 messages acknowledged", |s| s.acked == 43)
        .await;
    let s = running.stats();
    assert_eq!(s.received, 43);
    assert_eq!(s.enqueued, 44, "{s:?}");
    assert_eq!((s.dead_lettered, s.duplicates, s.redelivered), (0, 0, 0));
    running.stop().await;

    let all = inbox(&store).await;
    assert_eq!(all.len(), 44, "{all:?}");
    let find = |id: &str| all.iter().find(|(d, _, _)| d == id).unwrap();
    assert_eq!(find("a07").1.as_deref(), Some("m-7"));
    assert_eq!(find("ce-asset").1.as_deref(), Some("ce-1"));
    assert_eq!(find("b1").1.as_deref(), Some("m-two#0"));
    assert_eq!(find("b2").1.as_deref(), Some("m-two#1"));
    assert!(matches!(find("gone").2, ChangeKind::Delete { .. }));
    match &find("a07").2 {
        ChangeKind::Upsert { asset } => assert_eq!(asset.record["title"], "asset a07"),
        other => panic!("{other:?}"),
    }
    // Everything was acknowledged: closing the channel requeued nothing.
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

/// On PostgreSQL, whose text refuses the NUL character: a message whose asset id holds one,
/// and an unparseable one whose keys do (the dead letter's reason lists them), are
/// dead-lettered and acknowledged, and the good message behind them is stored — before, the
/// store refused the batch every time and the broker redelivered it for ever, the queue stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_postgres_cannot_hold_are_dead_lettered_not_redelivered_forever() {
    let pg = assetbridge_store::testing::PgTestDatabase::create("amqp_nul").await;
    let store = Store::open(pg.url()).await.unwrap();
    let queue = TestQueue::new("nul").await;
    let running = Running::start(config(&queue.name), &store);
    queue
        .publish(
            br#"{"id":"a\u0000b","updated_at":"2024-05-01T10:00:00Z"}"#,
            Some("nul-id"),
        )
        .await;
    queue.publish(br#"{"\u0000":1}"#, Some("nul-key")).await;
    queue.publish(&asset("fine"), Some("fine")).await;
    running.wait_for("all three", |s| s.acked == 3).await;
    let s = running.stats();
    assert_eq!((s.enqueued, s.dead_lettered), (1, 2), "{s:?}");
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["fine"]);
    let dead = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter().any(|d| d.reason.message.contains("NUL")),
        "{dead:?}"
    );
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_id_is_stored_once() {
    let queue = TestQueue::new("dup").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let running = Running::start(config(&queue.name), &store);

    // Same message id, different assets: only the event-id check can drop the second one.
    queue.publish(&asset("x1"), Some("same-id")).await;
    running.wait_for("first message", |s| s.acked == 1).await;
    queue.publish(&asset("x2"), Some("same-id")).await;
    running.wait_for("second message", |s| s.acked == 2).await;
    // ... also within one batch.
    queue.publish(&asset("y1"), Some("other-id")).await;
    queue.publish(&asset("y2"), Some("other-id")).await;
    running.wait_for("all four", |s| s.acked == 4).await;

    let s = running.stats();
    assert_eq!((s.enqueued, s.duplicates), (2, 2), "{s:?}");
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["x1", "y1"]);
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_message_becomes_a_dead_letter_and_is_not_redelivered() {
    let queue = TestQueue::new("dead").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let running = Running::start(config(&queue.name), &store);

    queue.publish(b"this is not json", Some("bad-1")).await;
    queue
        .publish(
            br#"{"name": "no id here", "updated_at": "2024-05-01T10:00:00Z"}"#,
            None,
        )
        .await;
    queue.publish(&asset("fine"), None).await;
    running
        .wait_for("three acknowledged", |s| s.acked == 3)
        .await;
    // Give a (wrong) redelivery time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = running.stats();
    assert_eq!(
        (s.received, s.dead_lettered, s.enqueued),
        (3, 2, 1),
        "{s:?}"
    );
    assert_eq!(s.redelivered, 0);
    // The same message again (as the broker redelivers a batch given back after a later write
    // failed): acknowledged, its dead letter not written twice.
    queue.publish(b"this is not json", Some("bad-1")).await;
    running
        .wait_for("the repeat acknowledged", |s| s.acked == 4)
        .await;
    assert_eq!(running.stats().dead_lettered, 2);
    running.stop().await;

    let dead = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].payload,
        DeadLetterPayload::Raw(b"this is not json".to_vec())
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
    assert_eq!(dead[0].source.as_deref(), Some("amqp"));
    assert_eq!(dead[0].family.as_deref(), Some("packshots"));
    assert!(
        dead[1].reason.message.contains("/id"),
        "{:?}",
        dead[1].reason
    );
    assert_eq!(inbox(&store).await.len(), 1);
    assert_eq!(
        queue.ready().await,
        0,
        "the dead-lettered messages were acknowledged"
    );
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_leaves_the_messages_on_the_queue() {
    let queue = TestQueue::new("storefail").await;
    let dir = tempfile::tempdir().unwrap();
    let broken = store(&dir).await;
    broken.close().await; // every call now fails
    let running = Running::start(config(&queue.name), &broken);

    for i in 0..3 {
        queue
            .publish(&asset(&format!("s{i}")), Some(&format!("s-{i}")))
            .await;
    }
    // Written nowhere, acknowledged never, given back and delivered again.
    running
        .wait_for("two failed attempts", |s| {
            s.store_failures >= 2 && s.received >= 6
        })
        .await;
    let s = running.stats();
    assert_eq!((s.acked, s.enqueued), (0, 0), "{s:?}");
    running.stop().await;
    // Nothing was lost: the closed channel gave the three back (the broker's ready count
    // follows the requeue a moment later).
    wait_ready(&queue, 3).await;

    // With a working store the same messages arrive, flagged as redeliveries.
    let store = store(&dir).await;
    let running = Running::start(config(&queue.name), &store);
    running
        .wait_for("three acknowledged", |s| s.acked == 3)
        .await;
    assert_eq!(running.stats().redelivered, 3);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["s0", "s1", "s2"]);
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bounds_the_unacknowledged_messages() {
    let queue = TestQueue::new("prefetch").await;
    let dir = tempfile::tempdir().unwrap();
    let broken = store(&dir).await;
    broken.close().await; // nothing is ever acknowledged
    let mut c = config(&queue.name);
    c.prefetch = 5;
    // The batch closes at the prefetch bound, not after the default 10 ms: on a loaded
    // machine the 5 can arrive spread out, and a batch closed early would be counted short.
    c.batch_wait_ms = 1_000;
    // Hold the failed batch for seconds before giving it back: with jitter 10 to 20 s, well
    // beyond the shutdown bound below (and the 10 s `stop` allows).
    c.reconnect_min_ms = 20_000;
    c.reconnect_max_ms = 20_000;
    for i in 0..20 {
        queue.publish(&asset(&format!("p{i}")), None).await;
    }
    let running = Running::start(c, &broken);
    running.wait_for("a first batch", |s| s.received >= 5).await;
    // The broker handed out exactly 5 and keeps the other 15.
    wait_ready(&queue, 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue.ready().await, 15);
    assert_eq!(running.stats().received, 5);
    let took = running.stop().await;
    assert!(
        took < Duration::from_secs(4),
        "shutdown cut the pause short: {took:?}"
    );
    // The closed channel gave the five back; the broker's ready count follows the requeue a
    // moment later.
    wait_ready(&queue, 20).await;
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_pauses_consumption_until_it_drains() {
    let queue = TestQueue::new("backpressure").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let mut c = config(&queue.name);
    c.backlog_limit = 5;
    c.prefetch = 5;
    for i in 0..20 {
        queue.publish(&asset(&format!("p{i:02}")), None).await;
    }
    let running = Running::start(c, &store);

    // Once the inbox holds more than 5 the consumer takes nothing more: at most one batch
    // (prefetch 5) past the limit is written. The broker keeps what it has not handed out.
    running
        .wait_for("a pause", |s| s.backpressure_pauses == 1)
        .await;
    let acked = running.stats().acked;
    assert!((6..=10).contains(&acked), "{acked}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(running.stats().acked, acked, "nothing taken while paused");
    assert_eq!(store.backlog().await.unwrap().pending, acked);
    let ready = u64::from(queue.ready().await);
    assert!(ready >= 20 - acked - 5, "ready {ready}, acked {acked}");

    // Workers drain the inbox; consumption resumes until the queue is empty.
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
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reconnects_after_the_connection_drops() {
    let queue = TestQueue::new("reconnect").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let mut c = config(&queue.name);
    c.url = format!("amqp://guest:guest@{}/%2f", proxy.addr).into();
    let running = Running::start(c, &store);

    queue.publish(&asset("before"), None).await;
    running
        .wait_for("the first message", |s| s.acked == 1)
        .await;
    proxy.cut();
    running.wait_for("a reconnect", |s| s.reconnects >= 1).await;
    queue.publish(&asset("after"), None).await;
    running
        .wait_for("the second message", |s| s.acked == 2)
        .await;
    assert!(proxy.accepted.load(Ordering::SeqCst) >= 2);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["after", "before"]);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_returns_promptly() {
    let queue = TestQueue::new("shutdown").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let running = Running::start(config(&queue.name), &store);
    queue.publish(&asset("one"), None).await;
    running.wait_for("one message", |s| s.acked == 1).await;
    // An idle consumer waits for deliveries forever; the bounds here are loose for a loaded
    // machine and still far below the waits they cut short.
    let took = running.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    // Also while the broker cannot be reached (waiting to reconnect: with jitter 15 to 30 s).
    let mut c = config(&queue.name);
    c.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    c.reconnect_min_ms = 30_000;
    c.reconnect_max_ms = 30_000;
    let running = Running::start(c, &store);
    running
        .wait_for("a failed connection", |s| s.reconnects >= 1)
        .await;
    let took = running.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_at_start_are_errors_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    // Make sure the broker is there, so the errors below are the broker's refusals.
    let queue = TestQueue::new("refusals").await;

    let missing = config(&unique("missing"));
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        amqp::run(missing, store.clone(), CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert!(
        text.contains("NOT_FOUND") || text.contains("NOT-FOUND"),
        "{text}"
    );

    let mut wrong = config(&queue.name);
    wrong.url = "amqp://guest:wrong-s3cret@127.0.0.1:5672/%2f"
        .to_owned()
        .into();
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        amqp::run(wrong, store.clone(), CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert!(text.contains("guest:***@127.0.0.1"), "{text}");
    assert!(text.contains("ACCESS_REFUSED"), "{text}");
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_consumes_over_tls() {
    let queue = TestQueue::new("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls = TlsTerminator::start("127.0.0.1:5672", Handshake::First).await;
    let mut c = config(&queue.name);
    c.url = format!("amqps://guest:guest@{}/%2f", tls.addr).into();
    c.tls_ca_file = Some(TlsTerminator::ca_file(dir.path()));
    let running = Running::start(c, &store);

    for i in 0..3 {
        queue.publish(&asset(&format!("t{i}")), None).await;
    }
    running
        .wait_for("3 messages acknowledged over TLS", |s| s.acked == 3)
        .await;
    // The consumer's one connection went through the terminator's TLS handshake.
    assert_eq!(tls.handshakes(), 1);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["t0", "t1", "t2"]);
    assert_eq!(queue.ready().await, 0);
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_an_error_at_start() {
    let queue = TestQueue::new("tls-untrusted").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls = TlsTerminator::start("127.0.0.1:5672", Handshake::First).await;
    queue.publish(&asset("kept"), None).await;
    // No `tls_ca_file`: the system's roots do not know the self-signed certificate.
    let mut c = config(&queue.name);
    c.url = format!("amqps://guest:s3cret@{}/%2f", tls.addr).into();
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        amqp::run(c, store.clone(), CancellationToken::new()),
    )
    .await
    .expect("a certificate refusal must end the consumer, not be retried")
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(tls.handshakes(), 0);
    // Nothing was taken: the message is still on the queue, the inbox is empty.
    assert_eq!(queue.ready().await, 1);
    assert!(inbox(&store).await.is_empty());
    queue.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_for_a_broker_that_requires_one() {
    let queue = TestQueue::new("mtls").await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let tls = TlsTerminator::requiring_client_cert("127.0.0.1:5672", Handshake::First).await;
    let url = format!("amqps://guest:guest@{}/%2f", tls.addr);

    // Without a client certificate the broker's side refuses the handshake: an error at start.
    let mut c = config(&queue.name);
    c.url = url.clone().into();
    c.tls_ca_file = Some(TlsTerminator::ca_file(dir.path()));
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        amqp::run(c.clone(), store.clone(), CancellationToken::new()),
    )
    .await
    .expect("a refused handshake must end the consumer, not be retried")
    .unwrap_err();
    assert!(matches!(e, SourceError::Broker { .. }), "{e:?}");
    assert_eq!(tls.handshakes(), 0);

    // With it (PEM files; lapin gets them as PKCS#12), the messages arrive.
    let (cert, key) = TlsTerminator::client_cert_files(dir.path());
    c.tls_client_cert_file = Some(cert);
    c.tls_client_key_file = Some(key);
    let running = Running::start(c, &store);
    queue.publish(&asset("m0"), None).await;
    running
        .wait_for("the message, over mutual TLS", |s| s.acked == 1)
        .await;
    assert_eq!(tls.handshakes(), 1);
    running.stop().await;
    let ids: Vec<String> = inbox(&store).await.into_iter().map(|c| c.0).collect();
    assert_eq!(ids, ["m0"]);
    queue.cleanup().await;
}
