//! The webhook receiver: an HTTP server (an [`axum::Router`]) turning DAM notifications into
//! inbox entries.
//!
//! Endpoints (configured in the `[webhooks]` table, [`WebhookConfig`]):
//! - `[[webhooks.generic]]` — any DAM: the body is read with a [`MessageShape`]
//!   ([`crate::message`]), the request is authenticated with an HMAC-SHA256 signature of the raw
//!   body or an API key header ([`WebhookAuth`]).
//! - `[webhooks.adobe]` — Adobe I/O Events (AEM Assets events): the registration challenge
//!   (`GET ?challenge=`, and a `{"challenge": ...}` POST body), digital signatures verified over
//!   the raw body with Adobe's public keys, recipient check, single and batch deliveries, events
//!   converted by [`AdobeEventRules`] ([`adobe`]).
//!
//! # The contract
//!
//! For every delivery: **read (bounded) → authenticate → parse → check the backlog →
//! inbox write (durable when it returns) → 2xx**. No 2xx is ever sent before the inbox
//! write returned, and nothing is stored for a non-2xx answer (one exception below).
//!
//! The inbox write is a **group commit** ([`commit`]): handlers hand their parsed changes to
//! one committer task (a bounded queue of [`QUEUE_DEPTH`] deliveries), which writes every
//! delivery queued at that moment — up to [`MAX_GROUP_CHANGES`] changes, without waiting for
//! more — with one `Store::enqueue` (one transaction), then answers each handler. A lone
//! delivery is written at once; under load one disk flush serves many deliveries. A failed
//! transaction answers each of its deliveries 503 (none of it was stored). The committer owns
//! the write once it has the changes, so a sender that hangs up mid-request cannot cancel a
//! write halfway.
//!
//! | situation | answer | why |
//! |---|---|---|
//! | stored (accepted, or dropped as a duplicate / stale) | **200** + JSON counts¹ | the sender may forget it |
//! | redelivery (event id seen before) | **200**, stored once | at-least-once senders retry; the inbox dedups on the event id |
//! | Adobe event of an unhandled type | **200**, ignored (counted) | Adobe retries 5xx forever-ish; a type we do not use is not an error |
//! | item no asset family applies to | **200**, skipped (counted) | configuration says we do not want it |
//! | Adobe asset event without an asset id | **200**, raw dead letter | one bad event must not block a batch; it stays visible in the dead letters |
//! | bad / missing signature, wrong API key, stale timestamp, wrong Adobe recipient | **401** | never retried by Adobe: a forged request stays refused |
//! | malformed body (not JSON, missing pointer, bad CloudEvent) | **400** | retrying the same body cannot help |
//! | body not fully received within `read_timeout_secs` | **408** | |
//! | body over `body_limit_bytes` (Content-Length or streamed) | **413** | |
//! | inbox backlog ≥ `backlog_limit` | **503** + `Retry-After` | Adobe retries only 429 and 5xx (not 505); 503 is retried by every sender, and is the same answer for generic webhooks (a 429 would blame the sender's rate, while this is our overload) |
//! | store write failed | **503** + `Retry-After` | the sender retries; nothing was acknowledged |
//! | Adobe public keys unreachable ([`SignatureError::KeyUnavailable`](assetbridge_dam::aem::SignatureError)) | **503** + `Retry-After` | the signature could not be checked yet |
//! | unknown path | **404** | |
//! | wrong method on a known path | **405** | |
//!
//! ¹ `{"accepted", "duplicates", "stale", "skipped"}` of this delivery (Adobe adds `ignored` and
//! `dead_lettered`). When the delivery was written in one transaction with others and the inbox
//! dropped some of that transaction's changes (so which delivery's is not known), `accepted`,
//! `duplicates` and `stale` give way to `stored` (this delivery's changes, all handled) and
//! `group` (the transaction's `deliveries`, `changes`, `accepted`, `duplicates`, `stale`).
//!
//! The exception: for an Adobe delivery whose changes were stored but whose dead letter (an
//! unusable event) could not be written, the answer is 503: Adobe redelivers, the stored changes
//! are deduplicated by their event id, and the dead letter is written then.
//!
//! Adobe marks a registration *Unstable* then *Disabled* when most deliveries fail over 24 h:
//! a backlog limit hit for hours has that cost (the journal still holds the events for 7 days).
//!
//! # Example
//!
//! ```toml
//! [webhooks]
//! listen = "127.0.0.1:8080"
//!
//! [[webhooks.generic]]
//! path = "/webhooks/dam"
//! event_id_header = "X-Event-Id"
//! shape = { family = "packshots", items_pointer = "/assets" }
//! auth.hmac = { secret = "${DAM_WEBHOOK_SECRET}", prefix = "sha256=", timestamp_header = "X-Timestamp" }
//!
//! [webhooks.adobe]
//! client_id = "4ab33463139e4f96b851589286cd46e4"
//! family = { folders = { "/content/dam/packshots" = "packshots" }, default = "images" }
//! ```

pub mod adobe;
mod auth;
mod commit;
mod stats;
mod tls;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assetbridge_core::AssetChange;
use assetbridge_dam::aem::{
    challenge_from_body, challenge_from_query, challenge_response, validation_url_from_body,
    DeliveryError, SignatureError, SignatureVerifier, SignatureVerifierConfig,
};
use assetbridge_store::{DeadLetterReason, Store};
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::message::{MessageShape, ParsedChange};
use commit::{Committed, GroupCommitter};

pub use adobe::{
    adobe_event_type, AdobeEventOutcome, AdobeEventRules, AdobeFamily, EchoFilter,
    ADOBE_EVENT_TYPE_KEY,
};
pub use auth::{ApiKeyAuth, AuthError, HmacAuth, SignatureEncoding, WebhookAuth};
pub use commit::{MAX_GROUP_CHANGES, QUEUE_DEPTH};
pub use stats::{WebhookStats, WebhookStatsSnapshot};

use stats::bump;

/// Default [`WebhookConfig::listen`]: localhost only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default [`WebhookConfig::body_limit_bytes`]: 2 MiB (I/O Events batches are at most 2 MB).
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 2 * 1024 * 1024;
/// Default [`WebhookConfig::backlog_limit`].
pub const DEFAULT_BACKLOG_LIMIT: u64 = 100_000;
/// Longest a graceful shutdown waits for requests in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `source` of changes from the Adobe webhook.
pub const ADOBE_SOURCE: &str = "adobe";

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid address")
}
fn default_body_limit() -> usize {
    DEFAULT_BODY_LIMIT_BYTES
}
fn default_backlog_limit() -> u64 {
    DEFAULT_BACKLOG_LIMIT
}
fn default_retry_after_secs() -> u64 {
    30
}
fn default_backlog_check_ms() -> u64 {
    1000
}
fn default_read_timeout_secs() -> u64 {
    30
}
fn default_generic_source() -> String {
    "webhook".to_owned()
}
fn default_adobe_path() -> String {
    "/webhooks/adobe".to_owned()
}
fn default_key_origin() -> String {
    assetbridge_dam::aem::events::DEFAULT_KEY_ORIGIN.to_owned()
}

/// The `[webhooks]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on (`IP:port`). Default: `"127.0.0.1:8080"` — localhost only; set
    /// `"0.0.0.0:8080"` explicitly to accept connections from elsewhere.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body, bytes; larger → 413. Default: 2 MiB (2 097 152).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// PEM certificate chain: serve HTTPS (rustls). Needs `tls_key_file`. Default: plain HTTP.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// When the inbox holds this many entries (pending + in flight) or more, deliveries are
    /// refused with 503 + `Retry-After`. `0` disables the check. Default: 100 000.
    #[serde(default = "default_backlog_limit")]
    pub backlog_limit: u64,
    /// `Retry-After` of 503 answers, seconds. Default: 30.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// How often the backlog is counted in the store, milliseconds (between counts, changes
    /// accepted by this server are added). Default: 1000.
    #[serde(default = "default_backlog_check_ms")]
    pub backlog_check_interval_ms: u64,
    /// Time allowed to receive a request body, seconds; slower → 408. Default: 30.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Generic webhook endpoints. Default: none.
    #[serde(default)]
    pub generic: Vec<GenericWebhookConfig>,
    /// The Adobe I/O Events endpoint. Default: none.
    #[serde(default)]
    pub adobe: Option<AdobeWebhookConfig>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            body_limit_bytes: default_body_limit(),
            tls_cert_file: None,
            tls_key_file: None,
            backlog_limit: default_backlog_limit(),
            retry_after_secs: default_retry_after_secs(),
            backlog_check_interval_ms: default_backlog_check_ms(),
            read_timeout_secs: default_read_timeout_secs(),
            generic: Vec::new(),
            adobe: None,
        }
    }
}

/// One `[[webhooks.generic]]` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericWebhookConfig {
    /// The URL path, e.g. `"/webhooks/dam"` (letters, digits, `/ - _ . ~`).
    pub path: String,
    /// How to read the body.
    pub shape: MessageShape,
    /// How requests are authenticated (required).
    pub auth: WebhookAuth,
    /// A header carrying the delivery id (used when the body has none; see
    /// [`crate::message`]), e.g. `"X-Event-Id"`. Default: none.
    #[serde(default)]
    pub event_id_header: Option<String>,
    /// `source` of the changes. Default: `"webhook"`.
    #[serde(default = "default_generic_source")]
    pub source: String,
}

/// The `[webhooks.adobe]` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdobeWebhookConfig {
    /// The URL path. Default: `"/webhooks/adobe"`.
    #[serde(default = "default_adobe_path")]
    pub path: String,
    /// Our Developer Console client id: every event must name it as `recipientclientid`.
    pub client_id: String,
    /// Origin of Adobe's signing public keys (https; http only on loopback, for tests).
    /// Default: `"https://static.adobeioevents.com"`.
    #[serde(default = "default_key_origin")]
    pub key_origin: String,
    /// The asset family of asset events (see [`AdobeFamily`]).
    pub family: AdobeFamily,
    /// Event types that become upserts. Default: `processing_completed`, `metadata_updated`.
    #[serde(default = "adobe::default_upsert_types")]
    pub upsert_types: Vec<String>,
    /// Event types that become deletions. Default: `aem.assets.asset.deleted`.
    #[serde(default = "adobe::default_delete_types")]
    pub delete_types: Vec<String>,
    /// The echoes of the connector's enrichment writes, not stored (see
    /// [`AdobeEventRules::echoes`]). Set by the binary from `[enrichment]`; not a configuration
    /// key. Default: none.
    #[serde(skip)]
    pub echoes: EchoFilter,
}

impl AdobeWebhookConfig {
    /// The event rules of this endpoint.
    pub fn rules(&self) -> AdobeEventRules {
        AdobeEventRules {
            family: self.family.clone(),
            upsert_types: self.upsert_types.clone(),
            delete_types: self.delete_types.clone(),
            echoes: self.echoes.clone(),
        }
    }
}

/// Errors starting or running the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The configuration cannot work.
    #[error("webhooks configuration: {0}")]
    Config(String),
    /// The TLS certificate or key cannot be used.
    #[error("webhooks TLS: {0}")]
    Tls(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("webhook server: {0}")]
    Serve(#[source] std::io::Error),
}

struct GenericEndpoint {
    path: String,
    shape: MessageShape,
    auth: WebhookAuth,
    event_id_header: Option<String>,
    source: String,
}

struct AdobeEndpoint {
    path: String,
    verifier: SignatureVerifier,
    rules: AdobeEventRules,
}

struct BacklogGate {
    limit: u64,
    interval: Duration,
    /// When last counted, and the count (plus what this server accepted since).
    counted: Mutex<Option<(Instant, u64)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl BacklogGate {
    /// `Ok(true)` when the inbox is full.
    async fn is_full(&self, store: &Store) -> Result<bool, String> {
        if self.limit == 0 {
            return Ok(false);
        }
        let cached = *self.counted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = cached {
            if at.elapsed() < self.interval {
                return Ok(n >= self.limit);
            }
        }
        // One count at a time; the others use the previous count meanwhile.
        let guard = match (self.refresh.try_lock(), cached) {
            (Ok(g), _) => g,
            (Err(_), Some((_, n))) => return Ok(n >= self.limit),
            (Err(_), None) => self.refresh.lock().await,
        };
        if let Some((at, n)) = *self.counted.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < self.interval {
                return Ok(n >= self.limit);
            }
        }
        let b = store.backlog().await.map_err(|e| e.to_string())?;
        let n = b.pending + b.in_flight;
        *self.counted.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), n));
        drop(guard);
        Ok(n >= self.limit)
    }

    fn add(&self, accepted: u64) {
        if let Some((_, n)) = self
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            *n += accepted;
        }
    }
}

struct Inner {
    store: Store,
    stats: Arc<WebhookStats>,
    gate: Arc<BacklogGate>,
    committer: GroupCommitter,
    body_limit: usize,
    read_timeout: Duration,
    retry_after: u64,
    generic: Vec<GenericEndpoint>,
    adobe: Option<AdobeEndpoint>,
}

/// What the webhook handlers share: the store, the endpoints, the counters. Cheap to clone.
#[derive(Clone)]
pub struct WebhookState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field(
                "generic",
                &self
                    .inner
                    .generic
                    .iter()
                    .map(|g| g.path.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("adobe", &self.inner.adobe.as_ref().map(|a| a.path.as_str()))
            .finish()
    }
}

fn check_path(path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "path \"{path}\" must start with `/` and use only letters, digits and `/ - _ . ~`"
        ))
    }
}

impl WebhookState {
    /// Checks the configuration and prepares the endpoints (the Adobe signature verifier).
    pub fn new(config: &WebhookConfig, store: Store) -> Result<Self, WebhookError> {
        let cfg = |m: String| WebhookError::Config(m);
        if config.body_limit_bytes == 0 {
            return Err(cfg("body_limit_bytes must be at least 1".into()));
        }
        let mut paths = BTreeSet::new();
        let mut generic = Vec::new();
        for (i, g) in config.generic.iter().enumerate() {
            let at = |m: String| cfg(format!("generic[{i}] ({}): {m}", g.path));
            check_path(&g.path).map_err(at)?;
            g.shape.validate().map_err(|m| at(format!("shape: {m}")))?;
            g.auth.validate().map_err(|m| at(format!("auth: {m}")))?;
            if let Some(h) = &g.event_id_header {
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| at(format!("event_id_header `{h}` is not a header name")))?;
            }
            if !paths.insert(g.path.clone()) {
                return Err(at("the path is used twice".into()));
            }
            generic.push(GenericEndpoint {
                path: g.path.clone(),
                shape: g.shape.clone(),
                auth: g.auth.clone(),
                event_id_header: g.event_id_header.clone(),
                source: g.source.clone(),
            });
        }
        let adobe = match &config.adobe {
            None => None,
            Some(a) => {
                let at = |m: String| cfg(format!("adobe ({}): {m}", a.path));
                check_path(&a.path).map_err(at)?;
                if !paths.insert(a.path.clone()) {
                    return Err(at("the path is also a generic endpoint's".into()));
                }
                let rules = a.rules();
                rules.validate().map_err(at)?;
                let mut vc = SignatureVerifierConfig::new(a.client_id.clone());
                vc.key_origin = url::Url::parse(&a.key_origin)
                    .map_err(|e| at(format!("key_origin `{}`: {e}", a.key_origin)))?;
                let verifier = SignatureVerifier::new(vc).map_err(|e| at(e.to_string()))?;
                Some(AdobeEndpoint {
                    path: a.path.clone(),
                    verifier,
                    rules,
                })
            }
        };
        if generic.is_empty() && adobe.is_none() {
            return Err(cfg(
                "no endpoint: configure [[webhooks.generic]] or [webhooks.adobe]".into(),
            ));
        }
        let stats = Arc::new(WebhookStats::default());
        let gate = Arc::new(BacklogGate {
            limit: config.backlog_limit,
            interval: Duration::from_millis(config.backlog_check_interval_ms),
            counted: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        });
        let committer = GroupCommitter::new(store.clone(), stats.clone(), gate.clone());
        Ok(WebhookState {
            inner: Arc::new(Inner {
                store,
                stats,
                gate,
                committer,
                body_limit: config.body_limit_bytes,
                read_timeout: Duration::from_secs(config.read_timeout_secs.max(1)),
                retry_after: config.retry_after_secs,
                generic,
                adobe,
            }),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.inner.stats.clone()
    }

    fn error(&self, status: StatusCode, message: impl Into<String>) -> Response {
        let message = message.into();
        let mut r = (status, axum::Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(self.inner.retry_after),
            );
        }
        r
    }

    /// Counts and answers a refusal.
    fn refuse(&self, refusal: Refusal) -> Response {
        let s = &self.inner.stats;
        let (counter, status) = match &refusal {
            Refusal::Unauthorized(_) => (&s.rejected_unauthorized, StatusCode::UNAUTHORIZED),
            Refusal::Malformed(_) => (&s.rejected_malformed, StatusCode::BAD_REQUEST),
            Refusal::Timeout => (&s.rejected_malformed, StatusCode::REQUEST_TIMEOUT),
            Refusal::TooLarge => (&s.rejected_too_large, StatusCode::PAYLOAD_TOO_LARGE),
            Refusal::BacklogFull => (&s.rejected_backlog_full, StatusCode::SERVICE_UNAVAILABLE),
            Refusal::StoreUnavailable(_) => (
                &s.rejected_store_unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Refusal::KeyUnavailable(_) => {
                (&s.rejected_key_unavailable, StatusCode::SERVICE_UNAVAILABLE)
            }
        };
        bump(counter, 1);
        let message = match refusal {
            Refusal::Unauthorized(m) => {
                tracing::warn!(reason = %m, "webhook delivery refused (401)");
                m
            }
            Refusal::Malformed(m) => {
                tracing::warn!(reason = %m, "malformed webhook delivery refused (400)");
                m
            }
            Refusal::Timeout => "the request body was not received in time".into(),
            Refusal::TooLarge => format!(
                "the request body is larger than {} bytes",
                self.inner.body_limit
            ),
            Refusal::BacklogFull => {
                tracing::warn!("inbox backlog full: webhook delivery refused (503)");
                "the inbox is full; retry later".into()
            }
            Refusal::StoreUnavailable(m) => {
                tracing::error!(error = %m, "inbox write failed: webhook delivery refused (503)");
                "the inbox is unavailable; retry later".into()
            }
            Refusal::KeyUnavailable(m) => {
                tracing::warn!(error = %m, "Adobe public key unavailable (503)");
                "the signature cannot be checked right now; retry later".into()
            }
        };
        self.error(status, message)
    }

    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
        let limit = self.inner.body_limit;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Refusal::TooLarge);
        }
        let read = async {
            let mut stream = body.into_data_stream();
            let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| Refusal::Malformed(format!("reading the body: {e}")))?;
                if buf.len() + chunk.len() > limit {
                    return Err(Refusal::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(buf))
        };
        tokio::time::timeout(self.inner.read_timeout, read)
            .await
            .map_err(|_| Refusal::Timeout)?
    }

    /// Checks the backlog, then writes `changes` durably through the group committer (one
    /// transaction with the other deliveries ready at the same time; see [`commit`]). The
    /// committer owns the write once the changes are handed over, so a dropped request cannot
    /// cancel it halfway. The counters move in the committer.
    async fn store_changes(&self, changes: Vec<AssetChange>) -> Result<Committed, Refusal> {
        if changes.is_empty() {
            return Ok(Committed::Own {
                accepted: 0,
                duplicates: 0,
                stale: 0,
            });
        }
        match self.inner.gate.is_full(&self.inner.store).await {
            Ok(false) => {}
            Ok(true) => return Err(Refusal::BacklogFull),
            Err(e) => return Err(Refusal::StoreUnavailable(e)),
        }
        self.inner
            .committer
            .commit(changes)
            .await
            .map_err(Refusal::StoreUnavailable)
    }

    fn ok(&self, body: Value) -> Response {
        bump(&self.inner.stats.acknowledged, 1);
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

enum Refusal {
    Unauthorized(String),
    Malformed(String),
    Timeout,
    TooLarge,
    BacklogFull,
    StoreUnavailable(String),
    KeyUnavailable(String),
}

/// The router serving every configured endpoint (unknown paths: 404). Mount it as it is, or
/// serve it with [`serve`] / [`WebhookServer`].
pub fn router(state: WebhookState) -> Router {
    let mut router: Router<WebhookState> = Router::new();
    for (index, g) in state.inner.generic.iter().enumerate() {
        router = router.route(
            &g.path,
            post(
                move |State(st): State<WebhookState>, headers: HeaderMap, body: Body| async move {
                    generic_delivery(st, index, headers, body).await
                },
            ),
        );
    }
    if let Some(a) = &state.inner.adobe {
        router = router.route(&a.path, post(adobe_delivery).get(adobe_challenge));
    }
    router.fallback(not_found).with_state(state)
}

async fn not_found(State(st): State<WebhookState>) -> Response {
    bump(&st.inner.stats.not_found, 1);
    st.error(StatusCode::NOT_FOUND, "no webhook endpoint at this path")
}

async fn generic_delivery(
    st: WebhookState,
    index: usize,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bump(&st.inner.stats.received, 1);
    let ep = &st.inner.generic[index];
    let raw = match st.read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return st.refuse(r),
    };
    if let Err(e) = ep.auth.verify(&headers, &raw, chrono::Utc::now()) {
        return st.refuse(Refusal::Unauthorized(e.to_string()));
    }
    let header_id = ep
        .event_id_header
        .as_deref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok());
    let parsed = match ep.shape.parse(&raw, &ep.source, header_id) {
        Ok(p) => p,
        Err(e) => return st.refuse(Refusal::Malformed(e.to_string())),
    };
    for p in &parsed {
        if let ParsedChange::Skipped { reason, dam_id, .. } = p {
            tracing::debug!(path = %ep.path, ?dam_id, %reason, "webhook item skipped");
        }
    }
    let (changes, skipped) = ParsedChange::split(parsed);
    bump(&st.inner.stats.skipped, skipped as u64);
    match st.store_changes(changes).await {
        Ok(c) => {
            let mut body = counts_body(c);
            body["skipped"] = json!(skipped);
            st.ok(body)
        }
        Err(r) => st.refuse(r),
    }
}

async fn adobe_challenge(State(st): State<WebhookState>, RawQuery(query): RawQuery) -> Response {
    match query.as_deref().and_then(challenge_from_query) {
        Some(c) => {
            bump(&st.inner.stats.challenges, 1);
            tracing::info!("answered an Adobe I/O Events challenge");
            (StatusCode::OK, axum::Json(challenge_response(&c))).into_response()
        }
        None => st.error(
            StatusCode::BAD_REQUEST,
            "a GET on this endpoint must carry a `challenge` query parameter",
        ),
    }
}

/// Largest POST body inspected for a challenge / validation URL (those bodies are tiny).
const CHALLENGE_BODY_MAX: usize = 4096;

async fn adobe_delivery(
    State(st): State<WebhookState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    bump(&st.inner.stats.received, 1);
    let Some(ep) = st.inner.adobe.as_ref() else {
        return not_found(State(st)).await;
    };
    let raw = match st.read_body(&headers, body).await {
        Ok(b) => b,
        Err(r) => return st.refuse(r),
    };
    // The registration handshake: a `{"challenge": ...}` body (undocumented, handled
    // defensively) or the asynchronous `{"validationUrl": ...}` (logged for an operator).
    if raw.len() <= CHALLENGE_BODY_MAX {
        if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&raw) {
            if v.get("type").is_none() {
                if let Some(c) = challenge_from_body(&v) {
                    bump(&st.inner.stats.challenges, 1);
                    return (StatusCode::OK, axum::Json(challenge_response(&c))).into_response();
                }
                if let Some(url) = validation_url_from_body(&v) {
                    bump(&st.inner.stats.challenges, 1);
                    tracing::warn!(
                        validation_url = %url,
                        "Adobe I/O Events asks for asynchronous validation: GET this URL within 5 minutes"
                    );
                    return st.ok(json!({}));
                }
            }
        }
    }
    let events = match ep.verifier.verify_delivery(&headers, &raw).await {
        Ok(e) => e,
        Err(DeliveryError::Signature(SignatureError::KeyUnavailable(m))) => {
            return st.refuse(Refusal::KeyUnavailable(m))
        }
        Err(DeliveryError::Signature(SignatureError::Config(m))) => {
            return st.refuse(Refusal::KeyUnavailable(m))
        }
        Err(DeliveryError::Signature(e)) => return st.refuse(Refusal::Unauthorized(e.to_string())),
        Err(DeliveryError::Event(e)) => return st.refuse(Refusal::Malformed(e.to_string())),
    };
    let mut changes = Vec::new();
    let mut unusable = Vec::new();
    let (mut ignored, mut skipped) = (0u64, 0u64);
    for event in &events {
        match ep.rules.convert(event, ADOBE_SOURCE) {
            AdobeEventOutcome::Changes(c) => changes.extend(c),
            AdobeEventOutcome::Ignored(reason) => {
                tracing::debug!(event_id = %event.event_id, %reason, "Adobe event ignored");
                ignored += 1;
            }
            AdobeEventOutcome::Skipped(reason) => {
                tracing::info!(event_id = %event.event_id, %reason, "Adobe event skipped: no asset family");
                skipped += 1;
            }
            AdobeEventOutcome::Unusable(reason) => unusable.push((event, reason)),
        }
    }
    bump(&st.inner.stats.ignored, ignored);
    bump(&st.inner.stats.skipped, skipped);
    let outcome = match st.store_changes(changes).await {
        Ok(o) => o,
        Err(r) => return st.refuse(r),
    };
    for (event, reason) in &unusable {
        // Once per event id: Adobe delivers at least once, and a redelivery of the batch would
        // otherwise add the same dead letter again.
        let raw_event = serde_json::to_vec(event).unwrap_or_default();
        let written = st
            .inner
            .store
            .add_raw_event_dead_letter(
                None,
                &event.event_id,
                ADOBE_SOURCE,
                &raw_event,
                &DeadLetterReason::new("unparseable", reason.clone()),
            )
            .await;
        match written.map(|id| id.is_some()) {
            Ok(true) => {
                tracing::warn!(event_id = %event.event_id, %reason, "unusable Adobe event dead-lettered");
                bump(&st.inner.stats.dead_lettered, 1);
            }
            Ok(false) => {
                tracing::debug!(event_id = %event.event_id, "unusable Adobe event redelivered: already dead-lettered");
            }
            Err(e) => return st.refuse(Refusal::StoreUnavailable(e.to_string())),
        }
    }
    let mut body = counts_body(outcome);
    body["ignored"] = json!(ignored);
    body["skipped"] = json!(skipped);
    body["dead_lettered"] = json!(unusable.len());
    st.ok(body)
}

/// The counts part of a 200 answer: this delivery's `accepted`, `duplicates` and `stale`; or,
/// when it was written in one transaction with other deliveries and some of that
/// transaction's changes were dropped (so whose is not known), `stored` (this delivery's
/// changes, all handled) and the transaction's counts under `group`.
fn counts_body(c: Committed) -> Value {
    match c {
        Committed::Own {
            accepted,
            duplicates,
            stale,
        } => json!({ "accepted": accepted, "duplicates": duplicates, "stale": stale }),
        Committed::Group {
            stored,
            deliveries,
            changes,
            outcome,
        } => json!({
            "stored": stored,
            "group": {
                "deliveries": deliveries,
                "changes": changes,
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "stale": outcome.stale,
            }
        }),
    }
}

/// A bound webhook server, not yet serving: bind first to learn the address (port 0 picks a
/// free port), then [`run`](WebhookServer::run).
pub struct WebhookServer {
    state: WebhookState,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tls::ServerConfig>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for WebhookServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookServer")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("state", &self.state)
            .finish()
    }
}

impl WebhookServer {
    /// Checks the configuration, loads the TLS certificate if any, and binds `config.listen`.
    pub async fn bind(config: &WebhookConfig, store: Store) -> Result<Self, WebhookError> {
        let state = WebhookState::new(config, store)?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(WebhookError::Config(
                    "tls_cert_file and tls_key_file go together".into(),
                ))
            }
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WebhookError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(WebhookError::Serve)?;
        Ok(Self {
            state,
            listener,
            tls,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.state.stats()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections and lets the
    /// requests in progress finish (at most [`SHUTDOWN_GRACE`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WebhookError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.addr, scheme, "webhook server listening");
        let app = router(self.state);
        let graceful = shutdown.clone().cancelled_owned();
        let served = async {
            match self.tls {
                None => axum::serve(self.listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
                    .map_err(WebhookError::Serve),
                Some(config) => {
                    let listener = tls::TlsListener::new(self.listener, config);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(graceful)
                        .await
                        .map_err(WebhookError::Serve)
                }
            }
        };
        tokio::select! {
            r = served => r,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::warn!("webhook server: requests still running after the shutdown grace period; stopping");
                Ok(())
            }
        }
    }
}

/// Binds `config.listen` and serves the webhook endpoints until `shutdown` is cancelled
/// ([`WebhookServer::bind`] + [`WebhookServer::run`]).
pub async fn serve(
    config: WebhookConfig,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    WebhookServer::bind(&config, store)
        .await?
        .run(shutdown)
        .await
}
