//! NATS JetStream consumer: change messages from a stream into the durable inbox.
//!
//! A durable **pull** consumer (explicit acks, bounded `max_ack_pending`) is created — or
//! updated to this configuration — on the stream at start. The consumer pulls up to
//! [`NatsConfig::fetch_batch`] messages per request and handles them in batches as they arrive
//! (what arrived within [`NatsConfig::batch_wait_ms`] of the first): the batch's changes are
//! written with one [`Store::enqueue`] call and only then each message is acknowledged. A store
//! failure `nak`s the batch with a delay (the server redelivers it); an unparseable message
//! becomes a raw dead letter and is acknowledged. The rules shared with the AMQP consumer are
//! in [`crate::queue`].
//!
//! A message's delivery id (for deduplication of redeliveries) is its `Nats-Msg-Id` header
//! (which JetStream also uses to drop duplicate publishes within the stream's duplicate
//! window); the [`MessageShape`] may name one in the body instead (see [`crate::message`] for
//! which wins).
//!
//! TLS: a `tls://` URL, or `tls_required = true`, upgrades the connection to TLS after the
//! server's `INFO` (NATS's usual handshake); `tls_first = true` starts with the TLS handshake
//! instead (servers configured with `handshake_first`). The server's certificate is verified
//! against the system's roots or, when [`NatsConfig::tls_ca_file`] is set, against that file's
//! certificates only (the NATS client uses one or the other). A certificate that does not
//! verify on the first connection ends [`run`] with an error. A client certificate (mutual
//! TLS) is [`NatsConfig::tls_client_cert_file`] and [`NatsConfig::tls_client_key_file`] (PEM).
//!
//! The client reconnects by itself after a connection loss (with this configuration's backoff);
//! a pull request lost with the connection ends after its expiry and the next one is sent.
//! Messages pulled but not handled when the consumer stops (or the connection drops) are
//! redelivered by the server after [`NatsConfig::ack_wait_secs`].
//!
//! ```toml
//! [[queues.nats]]
//! url = "nats://nats:4222"
//! token = "${NATS_TOKEN}"
//! stream = "DAM"
//! subjects = ["dam.assets.>"]
//! declare = true              # create the stream if it does not exist
//! durable = "assetbridge"
//! [queues.nats.shape]
//! family_pointer = "/folder"
//! family_map = { "Packshots" = "packshots" }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_store::{redact_url, Store};
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectErrorKind, Event};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::message::MessageShape;
use crate::queue::{
    jittered_delay, read_ca_file, read_client_identity, sleep_or_shutdown, tls_refusal, Backoff,
    Backpressure, InboxWriter, Incoming,
};
pub use crate::queue::{QueueStats, QueueStatsSnapshot, SourceError};

const TRANSPORT: &str = "nats";
/// Timeout of one request to the server (stream/consumer setup, pull request, flush).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive failed pull requests before the connection is rebuilt.
const MAX_PULL_FAILURES: u32 = 5;

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}
fn default_durable() -> String {
    "assetbridge".to_owned()
}
fn default_max_ack_pending() -> u32 {
    1_000
}
fn default_fetch_batch() -> u32 {
    200
}
fn default_fetch_expires_ms() -> u64 {
    1_000
}
fn default_batch_wait_ms() -> u64 {
    10
}
fn default_ack_wait_secs() -> u64 {
    30
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

/// One NATS JetStream consumer (`[[queues.nats]]`). Unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server URL (several: comma-separated). Logs show it with any password as `***`.
    /// Default: `"nats://127.0.0.1:4222"`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Token authentication. Secret. Default: none.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// User of user/password authentication (needs `password`). Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of user/password authentication. Secret. Default: none.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The JetStream stream to consume. Required.
    pub stream: String,
    /// Create the stream (file storage, with `subjects`) when it does not exist. When `false`
    /// the stream must exist: a missing stream stops the consumer at start. Default: `false`.
    #[serde(default)]
    pub declare: bool,
    /// The subjects of the stream created when `declare = true` (required then). Default: none.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The durable consumer's name; several assetbridge processes with the same name share
    /// the work. Default: `"assetbridge"`.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// Most messages delivered and not yet acknowledged (the server stops delivering beyond
    /// it). At least 1. Default: 1 000.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
    /// Messages asked for per pull request (1 to `max_ack_pending`). Default: 200.
    #[serde(default = "default_fetch_batch")]
    pub fetch_batch: u32,
    /// How long a pull request waits for messages on the server, in milliseconds
    /// (100–60 000). Default: 1 000.
    #[serde(default = "default_fetch_expires_ms")]
    pub fetch_expires_ms: u64,
    /// How long to wait for more messages after the first one of a batch, in milliseconds
    /// (0–1 000). Default: 10.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// How long the server waits for an acknowledgement before redelivering, in seconds.
    /// Default: 30.
    #[serde(default = "default_ack_wait_secs")]
    pub ack_wait_secs: u64,
    /// Pause consuming while the inbox holds more pending changes than this. Default: 100 000.
    #[serde(default = "default_backlog_limit")]
    pub backlog_limit: u64,
    /// First delay before reconnecting (and the `nak` delay after a store failure), in
    /// milliseconds; doubles per consecutive failure, with jitter. Default: 500.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest such delay, in milliseconds. Default: 30 000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Timeout of connecting, in seconds. Default: 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Upgrade the connection to TLS even when the URL is `nats://` and the server does not
    /// ask for it (a `tls://` URL always does). Default: `false`.
    #[serde(default)]
    pub tls_required: bool,
    /// Start with the TLS handshake, before the server's `INFO` (the server must be
    /// configured with `handshake_first`); implies `tls_required`. Default: `false`.
    #[serde(default)]
    pub tls_first: bool,
    /// A PEM file of CA certificates to verify the server's certificate with, instead of the
    /// system's roots. Default: none (the system's roots).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate presented to a server that asks for one (mutual TLS): a PEM
    /// file, the certificate first, then any intermediates. Needs `tls_client_key_file`.
    /// Default: none.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM). Default: none.
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
    /// How a message body becomes changes. Required (`[queues.nats.shape]`).
    pub shape: MessageShape,
}

impl NatsConfig {
    /// A configuration with every default (no credentials, `declare = false`).
    pub fn new(stream: impl Into<String>, shape: MessageShape) -> Self {
        Self {
            url: default_url(),
            token: None,
            user: None,
            password: None,
            stream: stream.into(),
            declare: false,
            subjects: Vec::new(),
            durable: default_durable(),
            max_ack_pending: default_max_ack_pending(),
            fetch_batch: default_fetch_batch(),
            fetch_expires_ms: default_fetch_expires_ms(),
            batch_wait_ms: default_batch_wait_ms(),
            ack_wait_secs: default_ack_wait_secs(),
            backlog_limit: default_backlog_limit(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            connect_timeout_secs: default_connect_timeout_secs(),
            tls_required: false,
            tls_first: false,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            shape,
        }
    }

    /// The URL(s) with any password replaced by `***`, fit for logs.
    pub fn display_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Checks the configuration (names, bounds, credentials, message shape) without
    /// connecting.
    pub fn validate(&self) -> Result<(), SourceError> {
        let config = |message: String| {
            Err(SourceError::Config {
                transport: TRANSPORT,
                message,
            })
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if self.url.trim().is_empty() {
            return config("`url` is empty".into());
        }
        if !name_ok(&self.stream) {
            return config(format!(
                "`stream` = \"{}\" is not a valid stream name (no spaces, `.`, `*`, `>`, `/`)",
                self.stream
            ));
        }
        if !name_ok(&self.durable) {
            return config(format!(
                "`durable` = \"{}\" is not a valid consumer name (no spaces, `.`, `*`, `>`, `/`)",
                self.durable
            ));
        }
        if self.declare && self.subjects.is_empty() {
            return config("`declare = true` needs `subjects` for the stream to create".into());
        }
        if self.subjects.iter().any(|s| s.trim().is_empty()) {
            return config("`subjects` has an empty subject".into());
        }
        match (&self.token, &self.user, &self.password) {
            (Some(_), Some(_), _) => {
                return config("set either `token` or `user` + `password`, not both".into())
            }
            (_, Some(_), None) => return config("`user` needs `password`".into()),
            (_, None, Some(_)) => return config("`password` needs `user`".into()),
            _ => {}
        }
        if self.max_ack_pending == 0 {
            return config("`max_ack_pending` must be at least 1 (bounded)".into());
        }
        if self.fetch_batch == 0 || self.fetch_batch > self.max_ack_pending {
            return config("`fetch_batch` must be between 1 and `max_ack_pending`".into());
        }
        if !(100..=60_000).contains(&self.fetch_expires_ms) {
            return config("`fetch_expires_ms` must be between 100 and 60000".into());
        }
        if self.batch_wait_ms > 1_000 {
            return config("`batch_wait_ms` must be at most 1000".into());
        }
        if self.ack_wait_secs == 0 {
            return config("`ack_wait_secs` must be at least 1".into());
        }
        if self.backlog_limit == 0 {
            return config("`backlog_limit` must be at least 1".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return config(
                "`reconnect_min_ms` must be at least 1 and at most `reconnect_max_ms`".into(),
            );
        }
        if self.connect_timeout_secs == 0 {
            return config("`connect_timeout_secs` must be at least 1".into());
        }
        if let Some(path) = &self.tls_ca_file {
            read_ca_file(TRANSPORT, path)?;
        }
        read_client_identity(
            TRANSPORT,
            self.tls_client_cert_file.as_deref(),
            self.tls_client_key_file.as_deref(),
        )?;
        if let Err(e) = self.shape.validate() {
            return config(format!("`shape`: {e}"));
        }
        Ok(())
    }

    /// Removes every secret of this configuration from `message` (client errors may repeat
    /// what they were given).
    fn scrub(&self, message: String) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Some(t) = &self.token {
            secrets.push(t.expose_secret().to_owned());
        }
        if let Some(p) = &self.password {
            secrets.push(p.expose_secret().to_owned());
        }
        for u in self.url.split(',') {
            if let Ok(parsed) = url::Url::parse(u.trim()) {
                if let Some(p) = parsed.password() {
                    secrets.push(p.to_owned());
                }
            }
        }
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(message, |m, s| m.replace(s.as_str(), "***"))
    }
}

/// Consumes `config.stream` into `store` until `shutdown` fires (see [`run_with_stats`]).
pub async fn run(
    config: NatsConfig,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    run_with_stats(config, store, Arc::new(QueueStats::default()), shutdown).await
}

/// Consumes `config.stream` into `store` until `shutdown` fires, counting into `stats`.
///
/// Returns `Ok(())` after a graceful shutdown: no new pull request is sent, the batch in hand
/// is written and acknowledged, pending acknowledgements are flushed. Returns an error for an
/// invalid configuration, or when the server refuses the *first* setup for good (wrong
/// credentials, missing stream with `declare = false`, a consumer configuration the server
/// rejects); every later loss is retried with backoff.
pub async fn run_with_stats(
    config: NatsConfig,
    store: Store,
    stats: Arc<QueueStats>,
    shutdown: CancellationToken,
) -> Result<(), SourceError> {
    config.validate()?;
    let shown_url = config.display_url();
    let writer = InboxWriter {
        store,
        shape: config.shape.clone(),
        source: TRANSPORT,
        stats: stats.clone(),
    };
    let backoff = || {
        Backoff::new(
            Duration::from_millis(config.reconnect_min_ms),
            Duration::from_millis(config.reconnect_max_ms),
        )
    };
    let mut consumer = NatsConsumer {
        config: &config,
        shown_url: &shown_url,
        writer,
        shutdown: &shutdown,
        backoff: backoff(),
        store_backoff: backoff(),
        backpressure: Backpressure::new(config.backlog_limit),
        connected_once: false,
    };
    consumer.run().await
}

struct NatsConsumer<'a> {
    config: &'a NatsConfig,
    shown_url: &'a str,
    writer: InboxWriter,
    shutdown: &'a CancellationToken,
    backoff: Backoff,
    store_backoff: Backoff,
    backpressure: Backpressure,
    connected_once: bool,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

struct SetupFailure {
    permanent: bool,
    message: String,
}

impl SetupFailure {
    fn new(permanent: bool, message: String) -> Self {
        Self { permanent, message }
    }
}

impl NatsConsumer<'_> {
    async fn run(&mut self) -> Result<(), SourceError> {
        let stream = self.config.stream.as_str();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let reason = match self.setup().await {
                Ok((client, consumer)) => {
                    tracing::info!(url = self.shown_url, stream, durable = %self.config.durable,
                        "consuming");
                    self.connected_once = true;
                    self.backoff.reset();
                    let end = self.consume(&client, &consumer).await;
                    let _ = tokio::time::timeout(OPERATION_TIMEOUT, client.flush()).await;
                    match end {
                        SessionEnd::Shutdown => return Ok(()),
                        SessionEnd::Lost(reason) => reason,
                    }
                }
                Err(f) if f.permanent && !self.connected_once => {
                    return Err(SourceError::Broker {
                        transport: TRANSPORT,
                        url: self.shown_url.to_owned(),
                        message: self.config.scrub(f.message),
                    });
                }
                Err(f) => f.message,
            };
            self.writer.stats.add_reconnect();
            let delay = self.backoff.next_delay();
            tracing::warn!(
                url = self.shown_url,
                stream,
                error = %self.config.scrub(reason),
                retry_in_ms = delay.as_millis() as u64,
                "NATS consumer lost or refused; starting again"
            );
            if !sleep_or_shutdown(delay, self.shutdown).await {
                return Ok(());
            }
        }
    }

    async fn connect(&self) -> Result<Client, SetupFailure> {
        let c = self.config;
        let (min, max) = (
            Duration::from_millis(c.reconnect_min_ms),
            Duration::from_millis(c.reconnect_max_ms),
        );
        let stats = self.writer.stats.clone();
        let url = self.shown_url.to_owned();
        let mut options = async_nats::ConnectOptions::new()
            .name("assetbridge")
            .connection_timeout(Duration::from_secs(c.connect_timeout_secs))
            .request_timeout(Some(OPERATION_TIMEOUT))
            // Called before every attempt, the first included (`attempts` = 1): that one and
            // the first reconnect go at once, later ones back off.
            .reconnect_delay_callback(move |attempts| match attempts {
                0 | 1 => Duration::ZERO,
                n => jittered_delay(min, max, (n - 2).min(32) as u32),
            })
            .event_callback(move |event| {
                let stats = stats.clone();
                let url = url.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            stats.add_reconnect();
                            tracing::warn!(url, "NATS connection lost; reconnecting");
                        }
                        Event::Connected => tracing::info!(url, "NATS connection (re)established"),
                        other => tracing::warn!(url, event = %other, "NATS client event"),
                    }
                }
            });
        if c.tls_first {
            options = options.tls_first();
        } else if c.tls_required {
            options = options.require_tls(true);
        }
        if let Some(path) = &c.tls_ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if let (Some(cert), Some(key)) = (&c.tls_client_cert_file, &c.tls_client_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(token) = &c.token {
            options = options.token(token.expose_secret().to_owned());
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        let timeout = Duration::from_secs(c.connect_timeout_secs) + Duration::from_secs(1);
        match tokio::time::timeout(timeout, options.connect(c.url.as_str())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                // A certificate that does not verify comes as `Io`, rustls's error inside.
                let permanent = matches!(
                    e.kind(),
                    ConnectErrorKind::ServerParse
                        | ConnectErrorKind::Authentication
                        | ConnectErrorKind::AuthorizationViolation
                        | ConnectErrorKind::Tls
                ) || tls_refusal(&e).is_some();
                Err(SetupFailure::new(permanent, format!("connect: {e}")))
            }
            Err(_) => Err(SetupFailure::new(
                false,
                format!("connect: no answer within {timeout:?}"),
            )),
        }
    }

    /// Connects, finds (or creates) the stream and creates or updates the durable consumer.
    async fn setup(&self) -> Result<(Client, PullConsumer), SetupFailure> {
        let c = self.config;
        let client = self.connect().await?;
        let js = jetstream::new(client.clone());
        let stream = if c.declare {
            js.get_or_create_stream(jetstream::stream::Config {
                name: c.stream.clone(),
                subjects: c.subjects.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let permanent = matches!(
                    e.kind(),
                    jetstream::context::CreateStreamErrorKind::JetStream(_)
                );
                SetupFailure::new(permanent, format!("create stream `{}`: {e}", c.stream))
            })?
        } else {
            js.get_stream(&c.stream).await.map_err(|e| {
                let permanent = matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(_)
                );
                SetupFailure::new(
                    permanent,
                    format!(
                        "stream `{}` (declare = false: it must exist): {e}",
                        c.stream
                    ),
                )
            })?
        };
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(c.durable.clone()),
                description: Some("assetbridge: DAM changes into the inbox".into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(c.ack_wait_secs),
                max_ack_pending: i64::from(c.max_ack_pending),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let permanent =
                    matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(_));
                SetupFailure::new(
                    permanent,
                    format!("create or update consumer `{}`: {e}", c.durable),
                )
            })?;
        Ok((client, consumer))
    }

    /// Sends pull requests and handles their messages until shutdown or repeated failures.
    async fn consume(&mut self, client: &Client, consumer: &PullConsumer) -> SessionEnd {
        let c = self.config;
        let origin = c.stream.as_str();
        let expires = Duration::from_millis(c.fetch_expires_ms);
        // A request lost with the connection never ends by itself: stop waiting a little after
        // its expiry.
        let request_limit = expires + Duration::from_secs(2);
        let batch_wait = Duration::from_millis(c.batch_wait_ms);
        let max_batch = c.fetch_batch as usize;
        let mut failures = 0u32;
        let mut pull_backoff = Backoff::new(
            Duration::from_millis(c.reconnect_min_ms),
            Duration::from_millis(c.reconnect_max_ms),
        );
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
            if self.shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
            let request = consumer
                .batch()
                .max_messages(max_batch)
                .expires(expires)
                .messages();
            let mut messages = match tokio::time::timeout(OPERATION_TIMEOUT, request).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    if let Some(end) = self
                        .pull_failed(&mut failures, &mut pull_backoff, e.to_string())
                        .await
                    {
                        return end;
                    }
                    continue;
                }
                Err(_) => {
                    let msg = format!("pull request: no answer within {OPERATION_TIMEOUT:?}");
                    if let Some(end) = self
                        .pull_failed(&mut failures, &mut pull_backoff, msg)
                        .await
                    {
                        return end;
                    }
                    continue;
                }
            };
            // The request's messages, in batches as they arrive.
            let mut request_failed = None;
            loop {
                let first = tokio::select! {
                    _ = self.shutdown.cancelled() => return SessionEnd::Shutdown,
                    r = tokio::time::timeout(request_limit, messages.next()) => r,
                };
                let mut batch = match first {
                    Err(_) | Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        request_failed = Some(e.to_string());
                        break;
                    }
                    Ok(Some(Ok(m))) => vec![m],
                };
                failures = 0;
                pull_backoff.reset();
                let mut request_done = false;
                let deadline = tokio::time::Instant::now() + batch_wait;
                while batch.len() < max_batch {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Err(_) => break,
                        Ok(Some(Ok(m))) => batch.push(m),
                        Ok(Some(Err(e))) => {
                            request_failed = Some(e.to_string());
                            request_done = true;
                            break;
                        }
                        Ok(None) => {
                            request_done = true;
                            break;
                        }
                    }
                }
                self.writer.stats.add_received(batch.len() as u64);
                self.handle(client, batch).await;
                if request_done || self.shutdown.is_cancelled() {
                    break;
                }
            }
            if self.shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
            if let Some(e) = request_failed {
                if let Some(end) = self.pull_failed(&mut failures, &mut pull_backoff, e).await {
                    return end;
                }
            }
        }
    }

    /// Counts a failed pull request and pauses; `Some` when the session should end.
    async fn pull_failed(
        &self,
        failures: &mut u32,
        backoff: &mut Backoff,
        error: String,
    ) -> Option<SessionEnd> {
        *failures += 1;
        if *failures >= MAX_PULL_FAILURES {
            return Some(SessionEnd::Lost(format!(
                "{failures} pull requests failed in a row; last: {error}"
            )));
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            stream = self.config.stream.as_str(),
            error = %self.config.scrub(error),
            retry_in_ms = delay.as_millis() as u64,
            "pull request failed"
        );
        if !sleep_or_shutdown(delay, self.shutdown).await {
            return Some(SessionEnd::Shutdown);
        }
        None
    }

    /// Writes one batch, then acknowledges each message (or `nak`s them with a delay).
    async fn handle(&mut self, client: &Client, batch: Vec<jetstream::Message>) {
        let items: Vec<Incoming<'_>> = batch
            .iter()
            .map(|m| Incoming {
                body: &m.payload,
                message_id: m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str()),
                redelivered: m.info().map(|i| i.delivered > 1).unwrap_or(false),
            })
            .collect();
        match self.writer.write(&items).await {
            Ok(written) => {
                self.store_backoff.reset();
                self.backpressure.accepted(written.accepted);
                // The acks of a batch share one deadline: during a long disconnection the
                // client's outgoing buffer fills and an ack waits for room, which would hold the
                // consumer (and a shutdown) for as long. What is not acknowledged in time is
                // redelivered after `ack_wait` and dropped by the inbox as a redelivery.
                let mut acked = 0u64;
                let acks = async {
                    for m in &batch {
                        match m.ack().await {
                            Ok(()) => acked += 1,
                            Err(e) => tracing::warn!(
                                stream = self.config.stream.as_str(),
                                error = %e,
                                "cannot acknowledge (the server redelivers after ack_wait)"
                            ),
                        }
                    }
                };
                if tokio::time::timeout(OPERATION_TIMEOUT, acks).await.is_err() {
                    tracing::warn!(
                        stream = self.config.stream.as_str(),
                        messages = batch.len(),
                        "acknowledgements not sent within {OPERATION_TIMEOUT:?}; the server redelivers the rest after ack_wait"
                    );
                }
                let _ = tokio::time::timeout(OPERATION_TIMEOUT, client.flush()).await;
                self.writer.stats.add_acked(acked);
            }
            Err(e) => {
                self.writer.stats.add_store_failure();
                let delay = self.store_backoff.next_delay();
                tracing::error!(
                    stream = self.config.stream.as_str(),
                    error = %e,
                    messages = batch.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot write to the inbox; the messages are given back (nak)"
                );
                // Same deadline as the acks; a nak not sent is a redelivery after `ack_wait`.
                let naks = async {
                    for m in &batch {
                        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                };
                let _ = tokio::time::timeout(OPERATION_TIMEOUT, naks).await;
                let _ = tokio::time::timeout(OPERATION_TIMEOUT, client.flush()).await;
                sleep_or_shutdown(delay, self.shutdown).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MessageShape {
        MessageShape::with_family("packshots")
    }

    #[test]
    fn tls_settings_default_off_and_the_ca_file_is_checked() {
        let mut c = NatsConfig::new("DAM", shape());
        assert!(!c.tls_required && !c.tls_first && c.tls_ca_file.is_none());
        let dir = tempfile::tempdir().unwrap();
        c.tls_ca_file = Some(dir.path().join("missing.pem"));
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`tls_ca_file`") && e.contains("cannot be read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        c.tls_ca_file = Some(empty);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        c.tls_ca_file = None;
        c.tls_client_key_file = Some(dir.path().join("key.pem"));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("needs `tls_client_cert_file`"), "{e}");
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c: NatsConfig = serde_json::from_value(serde_json::json!({
            "stream": "DAM",
            "shape": {"family": "packshots"}
        }))
        .unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.durable, "assetbridge");
        assert_eq!((c.max_ack_pending, c.fetch_batch), (1_000, 200));
        assert_eq!(c.ack_wait_secs, 30);
        assert_eq!(c.backlog_limit, 100_000);
        c.validate().unwrap();
        let e = serde_json::from_value::<NatsConfig>(serde_json::json!({
            "stream": "DAM", "shape": {"family": "f"}, "batch": 3
        }))
        .unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
    }

    #[test]
    fn secrets_never_show() {
        let mut c = NatsConfig::new("DAM", shape());
        c.url = "nats://app:s3cret@127.0.0.1:4222".into();
        c.token = Some(SecretString::from("t0ken".to_owned()));
        let debug = format!("{c:?}");
        assert!(!debug.contains("t0ken"), "{debug}");
        assert!(!c.display_url().contains("s3cret"));
        assert_eq!(
            c.scrub("bad t0ken for nats://app:s3cret@h".into()),
            "bad *** for nats://app:***@h"
        );
    }

    #[test]
    fn bounds_and_credentials_are_checked() {
        let mut c = NatsConfig::new("DAM", shape());
        c.declare = true;
        assert!(c.validate().unwrap_err().to_string().contains("subjects"));
        c.subjects = vec!["dam.>".into()];
        c.validate().unwrap();
        c.fetch_batch = 2_000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fetch_batch"));
        c.fetch_batch = 10;
        c.max_ack_pending = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_ack_pending"));
        c.max_ack_pending = 10;
        c.user = Some("u".into());
        assert!(c.validate().unwrap_err().to_string().contains("password"));
        c.stream = "a.b".into();
        assert!(c.validate().unwrap_err().to_string().contains("stream"));
    }
}
