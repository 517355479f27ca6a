//! What the queue consumers ([`crate::amqp`], [`crate::nats`]) share: their error type, their
//! counters, and the one write path from a batch of message bodies to the durable inbox.
//!
//! The rules both consumers follow:
//!
//! - **Durable before acknowledged.** A batch of messages is parsed with the configured
//!   [`MessageShape`], its changes are written with one [`Store::enqueue`] call, its unparseable
//!   messages with [`Store::add_raw_dead_letter`], and only when all of that returned `Ok` is the
//!   batch acknowledged to the broker.
//! - **Unparseable → dead letter, then acknowledged.** Such a message would fail the same way on
//!   every redelivery, so it is kept (raw bytes and the reason, kind `unparseable`) and taken off
//!   the queue.
//! - **Store failure → not acknowledged.** The broker gets the batch back (AMQP: `nack` with
//!   requeue; NATS: `nak` with a delay) after a pause that grows with consecutive failures.
//! - **Backpressure.** When the inbox holds more than `backlog_limit` pending changes the
//!   consumer stops taking messages (the broker keeps them) until it drains; the inbox may
//!   exceed the limit by at most one batch.
//! - **Reconnect** with exponential backoff and jitter, between `reconnect_min_ms` and
//!   `reconnect_max_ms`, until shutdown. Only a configuration error, or a broker refusal on the
//!   *first* connection (wrong credentials, missing queue/stream), ends [`run`](crate::amqp::run)
//!   with an error.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assetbridge_store::{DeadLetterReason, Store, StoreError};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::message::{MessageShape, ParsedChange};

/// Why a queue consumer stopped (other than a requested shutdown).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The consumer's configuration is invalid; nothing was connected.
    #[error("{transport} consumer configuration: {message}")]
    Config {
        /// `amqp` or `nats`.
        transport: &'static str,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The broker refused the first connection or setup for good (wrong credentials, missing
    /// queue or stream, ...). Later losses are retried, never returned.
    #[error("{transport} broker at `{url}`: {message}")]
    Broker {
        /// `amqp` or `nats`.
        transport: &'static str,
        /// The broker URL with any password replaced by `***`.
        url: String,
        /// What the broker or client said.
        message: String,
    },
}

/// Counters of one queue consumer, shared with whoever wants to read them (metrics, status).
/// All counts are since the consumer started; read them with [`QueueStats::snapshot`].
#[derive(Debug, Default)]
pub struct QueueStats {
    received: AtomicU64,
    enqueued: AtomicU64,
    duplicates: AtomicU64,
    stale: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    store_failures: AtomicU64,
    reconnects: AtomicU64,
    backpressure_pauses: AtomicU64,
}

/// A point-in-time copy of [`QueueStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStatsSnapshot {
    /// Messages received from the broker (every delivery: redeliveries, and deliveries given
    /// back after a store failure, count again).
    pub received: u64,
    /// Changes the inbox accepted (new pending entries or replacing a pending one).
    pub enqueued: u64,
    /// Changes dropped by the inbox because their event id was seen before.
    pub duplicates: u64,
    /// Changes dropped by the inbox as older than what it holds for the asset.
    pub stale: u64,
    /// Items of parsed messages that mapped to no asset family (acknowledged, not stored).
    pub skipped: u64,
    /// Messages that could not be parsed, stored as raw dead letters and acknowledged.
    pub dead_lettered: u64,
    /// Messages written to the store that the broker marked as redelivered (AMQP
    /// `redelivered`, NATS delivery count > 1): after a store failure, a lost connection or a
    /// restart.
    pub redelivered: u64,
    /// Messages acknowledged to the broker.
    pub acked: u64,
    /// Batches whose write to the store failed (given back to the broker unacknowledged).
    pub store_failures: u64,
    /// Connections lost or refused and tried again.
    pub reconnects: u64,
    /// Times the consumer paused because the inbox backlog exceeded `backlog_limit`.
    pub backpressure_pauses: u64,
}

impl QueueStats {
    /// A copy of every counter.
    pub fn snapshot(&self) -> QueueStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueStatsSnapshot {
            received: r(&self.received),
            enqueued: r(&self.enqueued),
            duplicates: r(&self.duplicates),
            stale: r(&self.stale),
            skipped: r(&self.skipped),
            dead_lettered: r(&self.dead_lettered),
            redelivered: r(&self.redelivered),
            acked: r(&self.acked),
            store_failures: r(&self.store_failures),
            reconnects: r(&self.reconnects),
            backpressure_pauses: r(&self.backpressure_pauses),
        }
    }

    pub(crate) fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_store_failure(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Exponential backoff with jitter: attempt `n` waits a random time in `[d/2, d]` where
/// `d = min(min · 2^n, max)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt (and counts the attempt).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = jittered_delay(self.min, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the first delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Reads a consumer's `tls_ca_file`: the PEM text, once it is known to hold at least one
/// certificate (checked at start, so a wrong path or file is a configuration error naming the
/// key rather than a handshake failure later).
pub(crate) fn read_ca_file(transport: &'static str, path: &Path) -> Result<String, SourceError> {
    let config = |e: String| SourceError::Config {
        transport,
        message: format!("`tls_ca_file` = `{}` {e}", path.display()),
    };
    let text = crate::pem::read(path).map_err(config)?;
    crate::pem::certificates(&text).map_err(config)?;
    String::from_utf8(text).map_err(|_| config("is not a PEM certificate file: not UTF-8".into()))
}

/// A client certificate for mutual TLS: `tls_client_cert_file` (PEM, the certificate first,
/// then any intermediates) and `tls_client_key_file` (PEM), read and checked at start.
pub(crate) struct ClientIdentity {
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

/// Reads a consumer's client certificate, if it names one (both files or neither).
pub(crate) fn read_client_identity(
    transport: &'static str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientIdentity>, SourceError> {
    let config = |message: String| SourceError::Config { transport, message };
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            return Err(config(
                "`tls_client_cert_file` needs `tls_client_key_file` (its private key)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(config(
                "`tls_client_key_file` needs `tls_client_cert_file` (its certificate)".into(),
            ))
        }
    };
    let chain = crate::pem::certificate_file(cert)
        .map_err(|e| config(format!("`tls_client_cert_file` = `{}` {e}", cert.display())))?;
    let key = crate::pem::private_key_file(key)
        .map_err(|e| config(format!("`tls_client_key_file` = `{}` {e}", key.display())))?;
    Ok(Some(ClientIdentity { chain, key }))
}

/// The TLS refusal (rustls's error) behind an error, if that is what it is: an untrusted or
/// mismatched certificate, a TLS version or cipher the server refuses. Such a refusal on the
/// first connection is a configuration problem, not worth retrying.
pub(crate) fn tls_refusal<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // `io::Error::source` skips the error it wraps: look inside it too.
        if let Some(t) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// The delay before attempt `attempt` (0-based): a random time in `[d/2, d]` where
/// `d = min(min · 2^attempt, max)`.
pub(crate) fn jittered_delay(min: Duration, max: Duration, attempt: u32) -> Duration {
    let max = max.max(min);
    let d = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = d / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64);
    (half + Duration::from_millis(jitter)).min(max)
}

/// Sleeps `d`, or less when `shutdown` fires. Returns `false` when shut down.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One received message, as the write path needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    /// The message body.
    pub body: &'a [u8],
    /// The transport's delivery id (AMQP `message_id`, NATS `Nats-Msg-Id`).
    pub message_id: Option<&'a str>,
    /// Whether the broker says this is a redelivery.
    pub redelivered: bool,
}

/// What one successful batch write did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Written {
    /// Changes the inbox accepted.
    pub accepted: u64,
}

/// The write path shared by the consumers: parse, enqueue, dead-letter, count.
#[derive(Debug, Clone)]
pub(crate) struct InboxWriter {
    pub store: Store,
    pub shape: MessageShape,
    /// `amqp` or `nats`: the changes' `source`.
    pub source: &'static str,
    pub stats: Arc<QueueStats>,
}

impl InboxWriter {
    /// Writes a batch durably: every change in one `enqueue`, every unparseable message as a
    /// raw dead letter. Counters move only when everything succeeded, so a batch given back
    /// to the broker and redelivered is not counted twice.
    pub(crate) async fn write(&self, items: &[Incoming<'_>]) -> Result<Written, StoreError> {
        let mut changes = Vec::with_capacity(items.len());
        let mut unparseable = Vec::new();
        let mut skipped = 0u64;
        let mut redelivered = 0u64;
        for item in items {
            redelivered += u64::from(item.redelivered);
            match self.shape.parse(item.body, self.source, item.message_id) {
                Ok(parsed) => {
                    let (c, s) = ParsedChange::split(parsed);
                    changes.extend(c);
                    skipped += s as u64;
                }
                Err(e) => {
                    let message = match item.message_id {
                        Some(id) => format!("{e} (message id `{id}`)"),
                        None => e.to_string(),
                    };
                    unparseable.push((item.body, item.message_id, message));
                }
            }
        }
        let outcome = self.store.enqueue(&changes).await?;
        let mut dead_lettered = 0u64;
        for (body, message_id, message) in &unparseable {
            tracing::warn!(
                source = self.source,
                reason = %message,
                "unparseable message moved to the dead letters"
            );
            let reason = DeadLetterReason::new("unparseable", message.clone());
            let family = self.shape.family.as_deref();
            // A batch given back to the broker after this write (a later write failed) comes
            // again: with a message id, its dead letter is written once.
            let id = message_id.map(str::trim).filter(|id| !id.is_empty());
            let written = match id {
                Some(id) => self
                    .store
                    .add_raw_event_dead_letter(family, id, self.source, body, &reason)
                    .await?
                    .is_some(),
                None => {
                    self.store
                        .add_raw_dead_letter(family, Some(self.source), body, &reason)
                        .await?;
                    true
                }
            };
            dead_lettered += u64::from(written);
        }
        let s = &self.stats;
        s.enqueued.fetch_add(outcome.accepted, Ordering::Relaxed);
        s.duplicates
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        s.stale.fetch_add(outcome.stale, Ordering::Relaxed);
        s.skipped.fetch_add(skipped, Ordering::Relaxed);
        s.dead_lettered.fetch_add(dead_lettered, Ordering::Relaxed);
        s.redelivered.fetch_add(redelivered, Ordering::Relaxed);
        Ok(Written {
            accepted: outcome.accepted,
        })
    }
}

/// How often the backlog is read while paused, and at least how often otherwise.
const BACKLOG_POLL: Duration = Duration::from_millis(500);
const BACKLOG_REFRESH: Duration = Duration::from_secs(5);

/// Pauses a consumer while the inbox holds more than `limit` pending changes.
///
/// The backlog is read when the changes accepted since the last read could have pushed it past
/// the limit, and at least every few seconds; not on every batch (it counts the inbox).
#[derive(Debug)]
pub(crate) struct Backpressure {
    limit: u64,
    estimate: u64,
    last_read: Option<Instant>,
}

impl Backpressure {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            estimate: 0,
            last_read: None,
        }
    }

    /// Counts changes just accepted into the inbox.
    pub(crate) fn accepted(&mut self, n: u64) {
        self.estimate = self.estimate.saturating_add(n);
    }

    /// Returns at once when the inbox is below the limit; else waits until it is. Returns
    /// `false` when `shutdown` fired while waiting.
    pub(crate) async fn wait(
        &mut self,
        store: &Store,
        stats: &QueueStats,
        shutdown: &CancellationToken,
        origin: &str,
    ) -> bool {
        if let Some(t) = self.last_read {
            if self.estimate <= self.limit && t.elapsed() < BACKLOG_REFRESH {
                return true;
            }
        }
        let mut paused = false;
        loop {
            match store.backlog().await {
                Ok(b) => {
                    self.estimate = b.pending;
                    self.last_read = Some(Instant::now());
                    if b.pending <= self.limit {
                        if paused {
                            tracing::info!(origin, pending = b.pending, "inbox drained; resuming");
                        }
                        return true;
                    }
                    if !paused {
                        paused = true;
                        stats.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            origin,
                            pending = b.pending,
                            limit = self.limit,
                            "inbox backlog over the limit; pausing consumption"
                        );
                    }
                }
                Err(e) => {
                    // Do not stall on a failing read: the next write fails too and the batch
                    // goes back to the broker.
                    tracing::warn!(origin, error = %e, "cannot read the inbox backlog");
                    return true;
                }
            }
            if !sleep_or_shutdown(BACKLOG_POLL, shutdown).await {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[4..] {
            assert!(*x >= Duration::from_millis(500) && *x <= Duration::from_millis(1000));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
