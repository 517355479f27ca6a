//! RabbitMQ (AMQP 0-9-1) consumer: change messages from a queue into the durable inbox.
//!
//! One connection, one channel, one consumer with manual acknowledgement and a bounded
//! prefetch (`basic.qos`). Deliveries are taken in batches — what arrived within
//! [`AmqpConfig::batch_wait_ms`] of the first one, at most [`AmqpConfig::prefetch`] — written to
//! the inbox with one [`Store::enqueue`] call, and only then acknowledged with one
//! `basic.ack(multiple = true)` up to the batch's last delivery tag. The rules shared with the
//! NATS consumer (dead letters, store failures, backpressure, reconnects) are in
//! [`crate::queue`].
//!
//! A message's delivery id (for deduplication of redeliveries) is its AMQP `message_id`
//! property; the [`MessageShape`] may name one in the body instead (see
//! [`crate::message`] for which wins).
//!
//! ```toml
//! [[queues.amqp]]
//! url = "amqp://assetbridge:${RABBITMQ_PASSWORD}@rabbitmq:5672/%2f"
//! queue = "dam.asset-changes"
//! declare = true              # declare the queue (durable) if it does not exist
//! prefetch = 200
//! [queues.amqp.shape]
//! family = "packshots"
//! id_pointer = "/asset/id"
//! updated_pointer = "/asset/modified"
//! ```
//!
//! TLS: an `amqps://` URL (port 5671 unless given) connects over TLS 1.2/1.3 (rustls, ring),
//! verifying the broker's certificate against the system's roots and, when set,
//! [`AmqpConfig::tls_ca_file`] (a private CA); the URL's host is the name checked. A broker
//! certificate that does not verify on the first connection ends [`run`] with an error (it
//! would fail the same way on every retry). A client certificate (mutual TLS) is
//! [`AmqpConfig::tls_client_cert_file`] and [`AmqpConfig::tls_client_key_file`] (PEM; the key
//! PKCS#8), handed to the client as the PKCS#12 identity it takes, built in memory at start.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_store::{redact_url, Store};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::message::MessageShape;
use crate::queue::{
    read_ca_file, read_client_identity, sleep_or_shutdown, tls_refusal, Backoff, Backpressure,
    ClientIdentity, InboxWriter, Incoming,
};
pub use crate::queue::{QueueStats, QueueStatsSnapshot, SourceError};

const TRANSPORT: &str = "amqp";
/// Timeout of one broker operation after connecting (declare, qos, consume, ack, close).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

fn default_prefetch() -> u16 {
    200
}
fn default_batch_wait_ms() -> u64 {
    10
}
fn default_backlog_limit() -> u64 {
    100_000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_connect_timeout_secs() -> u64 {
    10
}

/// One RabbitMQ consumer (`[[queues.amqp]]`). Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// The broker URL, `amqp://user:password@host:5672/vhost` (the default vhost `/` is
    /// `%2f`), or `amqps://…` (TLS, port 5671 by default). Secret: it carries the password;
    /// logs show it with the password as `***`. Required.
    pub url: SecretString,
    /// A PEM file of CA certificates trusted for an `amqps://` broker besides the system's
    /// roots (a private CA, a self-signed broker). Only with `amqps://`. Default: none.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate presented to an `amqps://` broker that asks for one (mutual TLS):
    /// a PEM file, the certificate first, then any intermediates. Needs `tls_client_key_file`.
    /// Default: none.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key: a PEM file, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    /// Default: none.
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
    /// The queue to consume. Required.
    pub queue: String,
    /// Declare the queue (durable, not exclusive, not auto-delete) when it does not exist.
    /// When `false` the queue must exist: a missing queue stops the consumer at start.
    /// Default: `false`.
    #[serde(default)]
    pub declare: bool,
    /// Most unacknowledged messages the broker sends this consumer (`basic.qos`), which also
    /// bounds a batch. 1–65 535. Default: 200.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The consumer tag shown in the broker's management UI; `""` lets the broker choose one.
    /// Default: `""`.
    #[serde(default)]
    pub consumer_tag: String,
    /// How long to wait for more messages after the first one of a batch, in milliseconds
    /// (0–1 000). Default: 10.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Pause consuming while the inbox holds more pending changes than this. Default: 100 000.
    #[serde(default = "default_backlog_limit")]
    pub backlog_limit: u64,
    /// First delay before reconnecting (and before giving a batch back after a store
    /// failure), in milliseconds; doubles per consecutive failure, with jitter. Default: 500.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest such delay, in milliseconds. Default: 30 000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Timeout of connecting (TCP + AMQP handshake), in seconds. Default: 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// How a message body becomes changes. Required (`[queues.amqp.shape]`).
    pub shape: MessageShape,
}

impl AmqpConfig {
    /// A configuration with every default.
    pub fn new(url: impl Into<String>, queue: impl Into<String>, shape: MessageShape) -> Self {
        Self {
            url: SecretString::from(url.into()),
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            queue: queue.into(),
            declare: false,
            prefetch: default_prefetch(),
            consumer_tag: String::new(),
            batch_wait_ms: default_batch_wait_ms(),
            backlog_limit: default_backlog_limit(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            connect_timeout_secs: default_connect_timeout_secs(),
            shape,
        }
    }

    /// The URL with its password replaced by `***`, fit for logs.
    pub fn display_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }

    /// Checks the configuration (URL, bounds, certificate files, message shape) without
    /// connecting.
    pub fn validate(&self) -> Result<(), SourceError> {
        let uri = self.parsed_uri()?;
        self.tls_config(&uri).map(|_| ())
    }

    /// What the TLS handshake needs besides the URL: the CA file's text, the client identity;
    /// for `amqps://`, also that the system's trusted certificates can be loaded.
    fn tls_config(&self, uri: &AMQPUri) -> Result<TlsFiles, SourceError> {
        if uri.scheme == AMQPScheme::AMQPS {
            system_roots_loadable()?;
        }
        let identity = read_client_identity(
            TRANSPORT,
            self.tls_client_cert_file.as_deref(),
            self.tls_client_key_file.as_deref(),
        )?
        .map(pkcs12_identity)
        .transpose()?;
        Ok(TlsFiles {
            trusted_ca: self.trusted_ca()?,
            identity,
        })
    }

    /// The PEM text of `tls_ca_file`, if set.
    fn trusted_ca(&self) -> Result<Option<String>, SourceError> {
        self.tls_ca_file
            .as_deref()
            .map(|path| read_ca_file(TRANSPORT, path))
            .transpose()
    }

    fn parsed_uri(&self) -> Result<AMQPUri, SourceError> {
        let config = |message: String| SourceError::Config {
            transport: TRANSPORT,
            message,
        };
        // lapin's own parse error repeats the whole URL (password included): never show it.
        let mut uri = AMQPUri::from_str(self.url.expose_secret()).map_err(|_| {
            config(format!(
                "`url` = `{}` is not an AMQP URL (amqp://user:password@host:port/vhost)",
                self.display_url()
            ))
        })?;
        let tls_keys = [
            ("tls_ca_file", self.tls_ca_file.is_some()),
            ("tls_client_cert_file", self.tls_client_cert_file.is_some()),
            ("tls_client_key_file", self.tls_client_key_file.is_some()),
        ];
        if let Some((key, _)) = tls_keys.iter().find(|(_, set)| *set) {
            if uri.scheme != AMQPScheme::AMQPS {
                return Err(config(format!(
                    "`{key}` is set but `url` is amqp:// (no TLS): use amqps://"
                )));
            }
        }
        if self.queue.trim().is_empty() {
            return Err(config("`queue` is empty".into()));
        }
        if self.prefetch == 0 {
            return Err(config(
                "`prefetch` must be at least 1 (0 would mean unbounded)".into(),
            ));
        }
        if self.batch_wait_ms > 1_000 {
            return Err(config("`batch_wait_ms` must be at most 1000".into()));
        }
        if self.backlog_limit == 0 {
            return Err(config("`backlog_limit` must be at least 1".into()));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(config(
                "`reconnect_min_ms` must be at least 1 and at most `reconnect_max_ms`".into(),
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err(config("`connect_timeout_secs` must be at least 1".into()));
        }
        self.shape
            .validate()
            .map_err(|e| config(format!("`shape`: {e}")))?;
        // The TCP connect runs on a blocking thread: bound it too (unless the URL's
        // `connection_timeout` query parameter says otherwise).
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(self.connect_timeout_secs * 1_000);
        }
        Ok(uri)
    }
}

/// Checks that the system's trusted certificates load, as lapin's TLS stack loads them at each
/// `amqps://` connection (`rustls-native-certs` 0.7, the version it uses). That stack panics
/// when they cannot be read — `SSL_CERT_FILE` or `SSL_CERT_DIR` naming a missing or unreadable
/// file or directory, with no certificate elsewhere — so it is asked here first, and such a
/// machine gets a configuration error instead. No bundle at all is not an error: nothing is
/// trusted then but `tls_ca_file`.
fn system_roots_loadable() -> Result<(), SourceError> {
    rustls_native_certs::load_native_certs()
        .map(|_| ())
        .map_err(|e| SourceError::Config {
            transport: TRANSPORT,
            message: format!(
                "the system's trusted certificates, which an amqps:// connection loads, \
                 cannot be read: {e} (check SSL_CERT_FILE and SSL_CERT_DIR)"
            ),
        })
}

/// The TLS material of a consumer, read once at start.
struct TlsFiles {
    /// PEM certificates trusted besides the system's roots (`tls_ca_file`).
    trusted_ca: Option<String>,
    /// The client certificate and key as the PKCS#12 container lapin takes.
    identity: Option<Pkcs12>,
}

struct Pkcs12 {
    der: Vec<u8>,
    password: &'static str,
}

/// The password of the in-memory PKCS#12 container. It never leaves the process, so its
/// encryption protects nothing: one key-derivation iteration instead of the format's default
/// 10 000, which lapin's TLS stack would otherwise repeat at every connection.
const PKCS12_PASSWORD: &str = "assetbridge";
const PKCS12_ITERATIONS: u64 = 1;

/// Packs a client certificate and key into the PKCS#12 identity lapin's TLS stack takes (its
/// only way in); the key must be PKCS#8, which is all that stack reads back.
fn pkcs12_identity(identity: ClientIdentity) -> Result<Pkcs12, SourceError> {
    let config = |message: String| SourceError::Config {
        transport: TRANSPORT,
        message,
    };
    let rustls::pki_types::PrivateKeyDer::Pkcs8(key) = &identity.key else {
        return Err(config(
            "`tls_client_key_file` must be a PKCS#8 key (`-----BEGIN PRIVATE KEY-----`); convert \
             it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem`"
                .into(),
        ));
    };
    let chain = identity
        .chain
        .iter()
        .map(|c| p12_keystore::Certificate::from_der(c.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config(format!("`tls_client_cert_file`: {e}")))?;
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "assetbridge",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            key.secret_pkcs8_der(),
            [1u8],
            chain,
        )),
    );
    let der = store
        .writer(PKCS12_PASSWORD)
        .encryption_iterations(PKCS12_ITERATIONS)
        .mac_iterations(PKCS12_ITERATIONS)
        .write()
        .map_err(|e| config(format!("client certificate: {e}")))?;
    Ok(Pkcs12 {
        der,
        password: PKCS12_PASSWORD,
    })
}

/// Consumes `config.queue` into `store` until `shutdown` fires (see [`run_with_stats`]).
pub async fn run(
    config: AmqpConfig,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    run_with_stats(config, store, Arc::new(QueueStats::default()), shutdown).await
}

/// Consumes `config.queue` into `store` until `shutdown` fires, counting into `stats`.
///
/// Returns `Ok(())` after a graceful shutdown: no new message is taken, the batch in hand is
/// written and acknowledged, the channel is closed (unprocessed prefetched messages go back
/// to the queue) and the connection closed. Returns an error for an invalid configuration, or
/// when the broker refuses the *first* connection for good (wrong credentials, missing queue,
/// queue declared with other arguments); every later loss is retried with backoff.
pub async fn run_with_stats(
    config: AmqpConfig,
    store: Store,
    stats: Arc<QueueStats>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    let uri = config.parsed_uri()?;
    let tls = config.tls_config(&uri)?;
    let shown_url = config.display_url();
    let writer = InboxWriter {
        store,
        shape: config.shape.clone(),
        source: TRANSPORT,
        stats: stats.clone(),
    };
    let mut consumer = AmqpConsumer {
        config: &config,
        uri,
        tls,
        shown_url: &shown_url,
        writer,
        shutdown: &shutdown,
        backoff: Backoff::new(
            Duration::from_millis(config.reconnect_min_ms),
            Duration::from_millis(config.reconnect_max_ms),
        ),
        store_backoff: Backoff::new(
            Duration::from_millis(config.reconnect_min_ms),
            Duration::from_millis(config.reconnect_max_ms),
        ),
        backpressure: Backpressure::new(config.backlog_limit),
        connected_once: false,
    };
    consumer.run().await
}

struct AmqpConsumer<'a> {
    config: &'a AmqpConfig,
    uri: AMQPUri,
    tls: TlsFiles,
    shown_url: &'a str,
    writer: InboxWriter,
    shutdown: &'a CancellationToken,
    backoff: Backoff,
    store_backoff: Backoff,
    backpressure: Backpressure,
    connected_once: bool,
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// A failed broker operation: permanent (configuration, credentials) or worth retrying.
struct BrokerFailure {
    permanent: bool,
    message: String,
}

impl BrokerFailure {
    fn from_lapin(what: &str, e: &lapin::Error) -> Self {
        let permanent = match e {
            lapin::Error::ProtocolError(amqp) => matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                        | AMQPSoftError::NOTFOUND
                        | AMQPSoftError::PRECONDITIONFAILED
                ) | AMQPErrorKind::Hard(_)
            ),
            lapin::Error::InvalidProtocolVersion(_) => true,
            // The broker's certificate does not verify (or TLS was refused): the same on
            // every retry.
            lapin::Error::IOError(io) => tls_refusal(io.as_ref()).is_some(),
            _ => false,
        };
        Self {
            permanent,
            message: format!("{what}: {e}"),
        }
    }

    fn transient(message: String) -> Self {
        Self {
            permanent: false,
            message,
        }
    }
}

/// Runs a broker operation with [`OPERATION_TIMEOUT`].
async fn op<T>(
    what: &str,
    fut: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerFailure> {
    match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerFailure::from_lapin(what, &e)),
        Err(_) => Err(BrokerFailure::transient(format!(
            "{what}: no answer within {OPERATION_TIMEOUT:?}"
        ))),
    }
}

impl AmqpConsumer<'_> {
    async fn run(&mut self) -> Result<(), SourceError> {
        let queue = self.config.queue.as_str();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let reason = match self.connect().await {
                Ok((connection, channel, consumer)) => {
                    if !self.connected_once {
                        tracing::info!(url = self.shown_url, queue, "consuming");
                    } else {
                        tracing::info!(url = self.shown_url, queue, "reconnected; consuming");
                    }
                    self.connected_once = true;
                    self.backoff.reset();
                    let end = self.consume(consumer).await;
                    close(&connection, &channel).await;
                    match end {
                        SessionEnd::Shutdown => return Ok(()),
                        SessionEnd::Lost(reason) => reason,
                    }
                }
                Err(f) if f.permanent && !self.connected_once => {
                    return Err(SourceError::Broker {
                        transport: TRANSPORT,
                        url: self.shown_url.to_owned(),
                        message: f.message,
                    });
                }
                Err(f) => f.message,
            };
            self.writer.stats.add_reconnect();
            let delay = self.backoff.next_delay();
            tracing::warn!(
                url = self.shown_url,
                queue,
                error = %reason,
                retry_in_ms = delay.as_millis() as u64,
                "AMQP connection lost or refused; reconnecting"
            );
            if !sleep_or_shutdown(delay, self.shutdown).await {
                return Ok(());
            }
        }
    }

    async fn connect(&self) -> Result<(Connection, Channel, Consumer), BrokerFailure> {
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let properties = ConnectionProperties::default().with_connection_name("assetbridge".into());
        let tls = OwnedTLSConfig {
            identity: self.tls.identity.as_ref().map(|i| OwnedIdentity {
                der: i.der.clone(),
                password: i.password.to_owned(),
            }),
            cert_chain: self.tls.trusted_ca.clone(),
        };
        let connection = match tokio::time::timeout(
            timeout,
            Connection::connect_uri_with_config(self.uri.clone(), properties, tls),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(BrokerFailure::from_lapin("connect", &e)),
            Err(_) => {
                return Err(BrokerFailure::transient(format!(
                    "connect: no answer within {timeout:?}"
                )))
            }
        };
        let setup = async {
            let channel = op("open channel", connection.create_channel()).await?;
            op(
                "basic.qos",
                channel.basic_qos(self.config.prefetch, BasicQosOptions { global: false }),
            )
            .await?;
            let declare = QueueDeclareOptions {
                passive: !self.config.declare,
                durable: true,
                ..QueueDeclareOptions::default()
            };
            let what = if self.config.declare {
                "declare queue"
            } else {
                "check queue (declare = false: it must exist)"
            };
            op(
                what,
                channel.queue_declare(&self.config.queue, declare, FieldTable::default()),
            )
            .await?;
            let consumer = op(
                "basic.consume",
                channel.basic_consume(
                    &self.config.queue,
                    &self.config.consumer_tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok::<_, BrokerFailure>((channel, consumer))
        };
        match setup.await {
            Ok((channel, consumer)) => Ok((connection, channel, consumer)),
            Err(f) => {
                let _ =
                    tokio::time::timeout(OPERATION_TIMEOUT, connection.close(200, "setup failed"))
                        .await;
                Err(f)
            }
        }
    }

    /// Takes batches until the connection is lost or shutdown fires.
    async fn consume(&mut self, mut consumer: Consumer) -> SessionEnd {
        let origin = self.config.queue.as_str();
        let max_batch = usize::from(self.config.prefetch);
        let batch_wait = Duration::from_millis(self.config.batch_wait_ms);
        loop {
            if !self
                .backpressure
                .wait(
                    &self.writer.store,
                    &self.writer.stats,
                    self.shutdown,
                    origin,
                )
                .await
            {
                return SessionEnd::Shutdown;
            }
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => return SessionEnd::Shutdown,
                d = consumer.next() => d,
            };
            let mut batch = match first {
                Some(Ok(d)) => vec![d],
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                None => return SessionEnd::Lost("the broker cancelled the consumer".into()),
            };
            let mut lost = None;
            let deadline = tokio::time::Instant::now() + batch_wait;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(d))) => batch.push(d),
                    Ok(Some(Err(e))) => {
                        lost = Some(e.to_string());
                        break;
                    }
                    Ok(None) => {
                        lost = Some("the broker cancelled the consumer".into());
                        break;
                    }
                }
            }
            self.writer.stats.add_received(batch.len() as u64);
            if let Err(reason) = self.handle(batch).await {
                return SessionEnd::Lost(reason);
            }
            if let Some(reason) = lost {
                return SessionEnd::Lost(reason);
            }
        }
    }

    /// Writes one batch, then acks it (or gives it back). `Err` when the channel is gone.
    async fn handle(&mut self, batch: Vec<lapin::message::Delivery>) -> Result<(), String> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let items: Vec<Incoming<'_>> = batch
            .iter()
            .map(|d| Incoming {
                body: &d.data,
                message_id: d.properties.message_id().as_ref().map(|s| s.as_str()),
                redelivered: d.redelivered,
            })
            .collect();
        match self.writer.write(&items).await {
            Ok(written) => {
                self.store_backoff.reset();
                self.backpressure.accepted(written.accepted);
                op(
                    "basic.ack",
                    last.acker.ack(BasicAckOptions { multiple: true }),
                )
                .await
                .map_err(|f| f.message)?;
                self.writer.stats.add_acked(batch.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.writer.stats.add_store_failure();
                let delay = self.store_backoff.next_delay();
                tracing::error!(
                    queue = self.config.queue.as_str(),
                    error = %e,
                    messages = batch.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot write to the inbox; the messages go back to the queue"
                );
                // Hold the messages (unacknowledged: the broker sends nothing more beyond the
                // prefetch) for the pause, then requeue them for redelivery.
                sleep_or_shutdown(delay, self.shutdown).await;
                op(
                    "basic.nack",
                    last.acker.nack(BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    }),
                )
                .await
                .map_err(|f| f.message)
            }
        }
    }
}

/// Closes the channel (the broker requeues what was delivered and not acknowledged) and the
/// connection, each within [`OPERATION_TIMEOUT`]; errors are of no interest any more.
async fn close(connection: &Connection, channel: &Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(OPERATION_TIMEOUT, channel.close(200, "bye")).await;
    }
    if connection.status().connected() {
        let _ = tokio::time::timeout(OPERATION_TIMEOUT, connection.close(200, "bye")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MessageShape {
        MessageShape::with_family("packshots")
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c: AmqpConfig = serde_json::from_value(serde_json::json!({
            "url": "amqp://guest:s3cret@127.0.0.1:5672/%2f",
            "queue": "q",
            "shape": {"family": "packshots"}
        }))
        .unwrap();
        assert_eq!(c.prefetch, 200);
        assert!(!c.declare);
        assert_eq!(c.backlog_limit, 100_000);
        assert_eq!((c.reconnect_min_ms, c.reconnect_max_ms), (500, 30_000));
        assert_eq!(c.consumer_tag, "");
        c.validate().unwrap();
        let e = serde_json::from_value::<AmqpConfig>(serde_json::json!({
            "url": "amqp://h", "queue": "q", "shape": {"family": "f"}, "prefetch_count": 3
        }))
        .unwrap_err();
        assert!(e.to_string().contains("prefetch_count"), "{e}");
    }

    #[test]
    fn the_password_never_shows() {
        let c = AmqpConfig::new("amqp://guest:s3cret@127.0.0.1:5672/%2f", "q", shape());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.display_url(), "amqp://guest:***@127.0.0.1:5672/%2f");
        let mut bad = AmqpConfig::new("amqp://guest:s3cret@host:notaport/", "q", shape());
        let e = bad.validate().unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        bad.url = SecretString::from("amqps://guest:s3cret@host:x/".to_owned());
        let e = bad.validate().unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = AmqpConfig::new("amqps://guest:s3cret@broker.example/%2f", "q", shape());
        c.validate().unwrap();
        // amqps:// alone: the system's roots, nothing to read.
        assert_eq!(c.trusted_ca().unwrap(), None);

        let missing = dir.path().join("missing.pem");
        c.tls_ca_file = Some(missing);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`tls_ca_file`") && e.contains("cannot be read"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        c.tls_ca_file = Some(empty);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        c.tls_ca_file = Some(broken);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate file"), "{e}");

        c.tls_ca_file = None;

        // A client certificate: both files or neither; the key PKCS#8 (what the TLS stack reads).
        let cert = dir.path().join("client-cert.pem");
        std::fs::write(&cert, include_str!("../tests/fixtures/client-cert.pem")).unwrap();
        c.tls_client_cert_file = Some(cert);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("needs `tls_client_key_file`"), "{e}");
        let sec1 = dir.path().join("sec1.pem");
        std::fs::write(
            &sec1,
            "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        c.tls_client_key_file = Some(sec1);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be a PKCS#8 key"), "{e}");
        let key = dir.path().join("client-key.pem");
        std::fs::write(&key, include_str!("../tests/fixtures/client-key.pem")).unwrap();
        c.tls_client_key_file = Some(key);
        let uri = c.parsed_uri().unwrap();
        let identity = c.tls_config(&uri).unwrap().identity.expect("an identity");
        // What lapin's TLS stack will read back: the key and the one certificate.
        let back = p12_keystore::KeyStore::from_pkcs12(&identity.der, identity.password).unwrap();
        let (_, chain) = back.private_key_chain().expect("a key");
        assert_eq!(chain.chain().len(), 1);

        // TLS files with a plain amqp:// URL would silently not be used: refused.
        c.tls_ca_file = Some(dir.path().join("ca.pem"));
        c.url = SecretString::from("amqp://guest:s3cret@broker.example/%2f".to_owned());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("use amqps://") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn bounds_are_checked() {
        let mut c = AmqpConfig::new("amqp://h", "q", shape());
        c.prefetch = 0;
        assert!(c.validate().unwrap_err().to_string().contains("prefetch"));
        c.prefetch = 1;
        c.reconnect_min_ms = 60_000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("reconnect_min_ms"));
        c.reconnect_min_ms = 500;
        c.queue = " ".into();
        assert!(c.validate().unwrap_err().to_string().contains("queue"));
    }
}
