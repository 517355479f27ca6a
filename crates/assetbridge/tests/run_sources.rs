//! `assetbridge run` with its event sources wired: a change delivered by a signed webhook, by
//! RabbitMQ and by NATS JetStream reaches the PIM through the durable inbox — the real binary as
//! a child process, the emulators and the brokers on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{terminate, wait_exit, wait_until, Env, EnvOptions};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "webhook-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SHAPE: &str =
    r#"{ items_pointer = "", family_pointer = "/type", event_id_pointer = "/event_id" }"#;

/// A DAM record of `env` with a new title and a later change time, as a DAM would send it.
fn changed_record(env: &Env, id: &str, title: &str, event_id: &str) -> Value {
    let mut record = env.dam.get(id).expect("asset");
    record["metadata"]["title"] = json!(title);
    record["updated_at"] = json!("2030-01-01T00:00:00Z");
    record["event_id"] = json!(event_id);
    record
}

fn pim_title(env: &Env, id: &str) -> Option<String> {
    let code = assetbridge_core::sanitize_code(id);
    common::FAMILIES
        .iter()
        .find_map(|f| env.akeneo.asset(f, &code))
        .and_then(|a| a["values"]["title"][0]["data"].as_str().map(str::to_owned))
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_signed_webhook_reaches_the_pim_and_a_bad_one_is_refused() {
    let env = Env::start(EnvOptions {
        assets: 40,
        ..EnvOptions::default()
    })
    .await;
    let port = free_port();
    let path = env.config("run.toml", "retry_base_secs = 1", "", "1h");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        r#"
[webhooks]
listen = "127.0.0.1:{port}"

[[webhooks.generic]]
path = "/webhooks/dam"
shape = {SHAPE}
auth = {{ hmac = {{ secret = "{SECRET}", prefix = "sha256=" }} }}
"#
    ));
    std::fs::write(&path, text).unwrap();
    let mut run = env.spawn(&["run", "--config", &common::config_arg(&path)], "run");
    // The first poll fills the PIM.
    wait_until(Duration::from_secs(60), "the first poll", || {
        env.pim_count() == 40
    })
    .await;

    let id = env.live_ids("packshots")[0].clone();
    let body = serde_json::to_vec(&changed_record(&env, &id, "Sent by webhook", "evt-1")).unwrap();
    let url = format!("http://127.0.0.1:{port}/webhooks/dam");
    let http = reqwest::Client::new();

    let forged = http
        .post(&url)
        .header("content-type", "application/json")
        .header("X-Signature", "sha256=00")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "{}", env.logs("run"));

    let ok = http
        .post(&url)
        .header("content-type", "application/json")
        .header("X-Signature", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", env.logs("run"));
    wait_until(
        Duration::from_secs(30),
        "the webhook change in the PIM",
        || pim_title(&env, &id).as_deref() == Some("Sent by webhook"),
    )
    .await;

    terminate(&run);
    let status = wait_exit(&mut run, Duration::from_secs(40)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        env.logs("run")
    );
}

#[tokio::test]
async fn changes_from_rabbitmq_and_nats_reach_the_pim() {
    use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let env = Env::start(EnvOptions {
        assets: 30,
        ..EnvOptions::default()
    })
    .await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let queue = format!("assetbridge-test-{tag}");
    let stream = format!("ASSETBRIDGE_TEST_{tag}");
    let subject = format!("assetbridge.test.{tag}");
    let path = env.config("run.toml", "retry_base_secs = 1", "", "1h");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        r#"
[[queues.amqp]]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue = "{queue}"
declare = true
shape = {SHAPE}

[[queues.nats]]
url = "nats://127.0.0.1:4222"
stream = "{stream}"
subjects = ["{subject}"]
declare = true
durable = "assetbridge-{tag}"
shape = {SHAPE}
"#
    ));
    std::fs::write(&path, text).unwrap();
    let mut run = env.spawn(&["run", "--config", &common::config_arg(&path)], "run");
    wait_until(Duration::from_secs(60), "the first poll", || {
        env.pim_count() == 30
    })
    .await;

    let ids = env.live_ids("lifestyle");
    let (via_amqp, via_nats) = (ids[0].clone(), ids[1].clone());

    let amqp = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ at 127.0.0.1:5672");
    // The consumer declares the queue; wait for it before publishing to the default exchange.
    wait_until(Duration::from_secs(30), "the AMQP queue", || {
        std::fs::read_to_string(env.path("run.err"))
            .map(|l| l.contains("RabbitMQ consumer"))
            .unwrap_or(false)
    })
    .await;
    let body = serde_json::to_vec(&changed_record(
        &env,
        &via_amqp,
        "Sent by RabbitMQ",
        "amqp-1",
    ))
    .unwrap();
    // Each probe on a channel of its own: the broker closes the channel of a passive declare
    // that finds no queue (404), so every later probe on it would fail too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = amqp.create_channel().await.unwrap();
        let found = probe
            .queue_declare(
                &queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .is_ok();
        if found {
            let _ = probe.close(200, "bye").await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer did not declare the queue: {}",
            env.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = amqp.create_channel().await.unwrap();
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let nats = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS at 127.0.0.1:4222");
    let js = async_nats::jetstream::new(nats);
    let body =
        serde_json::to_vec(&changed_record(&env, &via_nats, "Sent by NATS", "nats-1")).unwrap();
    let mut published = false;
    for _ in 0..50 {
        if let Ok(ack) = js.publish(subject.clone(), body.clone().into()).await {
            if ack.await.is_ok() {
                published = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        published,
        "could not publish to the stream: {}",
        env.logs("run")
    );

    wait_until(
        Duration::from_secs(30),
        "both queue changes in the PIM",
        || {
            pim_title(&env, &via_amqp).as_deref() == Some("Sent by RabbitMQ")
                && pim_title(&env, &via_nats).as_deref() == Some("Sent by NATS")
        },
    )
    .await;

    terminate(&run);
    let status = wait_exit(&mut run, Duration::from_secs(40)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        env.logs("run")
    );
    let _ = channel
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await;
    let _ = js.delete_stream(&stream).await;
}
