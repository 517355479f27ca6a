//! Adobe I/O Events deliveries: parsing, the challenge handshake, signature verification.
//!
//! A webhook server built on this module should, for a `POST`:
//! 1. read the **raw** body bytes (bounded), then [`SignatureVerifier::verify`] them — before
//!    parsing anything;
//! 2. [`parse_delivery_with_header_id`] (one CloudEvent object, or an array for batch
//!    deliveries) and [`check_recipients`] (every event must be addressed to our client id);
//! 3. store the events durably, then answer 200 within Adobe's 10 s.
//!
//! [`SignatureVerifier::verify_delivery`] does steps 1–2 in one call. Error types carry the HTTP
//! status to answer ([`SignatureError::status_code`], [`EventError::status_code`]): 401 for a
//! bad or missing signature or a foreign recipient, 400 for a malformed body, 503 when the
//! public keys cannot be fetched right now (Adobe retries 5xx, never 4xx).
//!
//! For a `GET ?challenge=...` answer 200 with [`challenge_response`] (JSON).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::keys::rsa_public_key_der;
use super::retry;

/// The metadata keys a `metadata_updated` event's `data` (or a change record made of it) says it
/// changed — `assetMetadata["event:created"]`, the keys of `["event:updated"]`, and
/// `event:deleted` / `event:removed` — if it says: `None` when it names none of them.
pub fn changed_metadata_keys(data: &Value) -> Option<HashSet<String>> {
    let meta = data.get("assetMetadata")?.as_object()?;
    let mut keys = HashSet::new();
    let mut said = false;
    for k in [
        "event:created",
        "event:updated",
        "event:deleted",
        "event:removed",
    ] {
        match meta.get(k) {
            Some(Value::Array(items)) => {
                said = true;
                keys.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            Some(Value::Object(m)) => {
                said = true;
                keys.extend(m.keys().cloned());
            }
            Some(Value::String(s)) => {
                said = true;
                keys.insert(s.clone());
            }
            _ => {}
        }
    }
    said.then_some(keys)
}

/// Whether a `metadata_updated` event's `data` is the echo of a write of `own` keys: it names the
/// keys it changed, and they are all among them.
pub fn is_echo_of(data: &Value, own: impl Fn(&str) -> bool) -> bool {
    changed_metadata_keys(data).is_some_and(|k| !k.is_empty() && k.iter().all(|k| own(k)))
}

// ---------------------------------------------------------------------------------------------
// Event types and events

/// `type` of an AEM Assets event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `aem.assets.asset.processing_completed`: upload and processing (metadata extraction,
    /// renditions) finished — the event to react to instead of "created".
    ProcessingCompleted,
    /// `aem.assets.asset.metadata_updated` (also emitted by our own PATCHes: mind the echo).
    MetadataUpdated,
    /// `aem.assets.asset.deleted`.
    Deleted,
    /// `aem.assets.asset.published`.
    Published,
    /// Any other type: acknowledge with 200 and ignore.
    Other(String),
}

impl EventType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::ProcessingCompleted => "aem.assets.asset.processing_completed",
            EventType::MetadataUpdated => "aem.assets.asset.metadata_updated",
            EventType::Deleted => "aem.assets.asset.deleted",
            EventType::Published => "aem.assets.asset.published",
            EventType::Other(s) => s,
        }
    }

    /// Reads a wire name (unknown names become [`EventType::Other`]).
    pub fn parse(s: &str) -> Self {
        match s {
            "aem.assets.asset.processing_completed" => EventType::ProcessingCompleted,
            "aem.assets.asset.metadata_updated" => EventType::MetadataUpdated,
            "aem.assets.asset.deleted" => EventType::Deleted,
            "aem.assets.asset.published" => EventType::Published,
            other => EventType::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(EventType::parse(&String::deserialize(d)?))
    }
}

/// One Adobe I/O Events CloudEvent, as delivered (webhook) or journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdobeEvent {
    /// I/O Events' id of the event (`eventid`, else the deprecated `event_id`, else the
    /// `x-adobe-event-id` header of a single delivery). Stable across redeliveries: the dedupe
    /// key.
    pub event_id: String,
    /// `recipientclientid` (else the deprecated `recipient_client_id`).
    pub recipient_client_id: Option<String>,
    /// The producer's (AEM's) event id `id` — differs from `event_id`.
    pub id: Option<String>,
    /// `source`, e.g. `acct:aem-p142461-e1463137@adobe.com` (do not derive the host from it).
    pub source: Option<String>,
    /// `type`.
    pub event_type: EventType,
    /// `time`, when present and RFC 3339.
    pub time: Option<DateTime<Utc>>,
    /// `data` (`Value::Null` when absent).
    pub data: Value,
}

impl AdobeEvent {
    /// Reads one CloudEvent. `fallback_event_id` (the `x-adobe-event-id` header) is used when
    /// the event carries neither `eventid` nor `event_id`.
    pub fn from_value(v: &Value, fallback_event_id: Option<&str>) -> Result<Self, EventError> {
        let obj = v
            .as_object()
            .ok_or_else(|| EventError::Malformed("an event must be a JSON object".into()))?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let event_id = s("eventid")
            .or_else(|| s("event_id"))
            .or(fallback_event_id.filter(|s| !s.is_empty()))
            .ok_or(EventError::MissingEventId)?
            .to_owned();
        let event_type = s("type")
            .map(EventType::parse)
            .ok_or_else(|| EventError::Malformed(format!("event `{event_id}` has no `type`")))?;
        Ok(AdobeEvent {
            recipient_client_id: s("recipientclientid")
                .or_else(|| s("recipient_client_id"))
                .map(str::to_owned),
            id: s("id").map(str::to_owned),
            source: s("source").map(str::to_owned),
            time: s("time")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
            event_type,
            event_id,
        })
    }

    fn repository(&self, key: &str) -> Option<&Value> {
        self.data.get("repositoryMetadata")?.get(key)
    }

    fn repository_str(&self, key: &str) -> Option<&str> {
        self.repository(key).and_then(Value::as_str)
    }

    /// `data.assetId` (`urn:aaid:aem:<uuid>`), else `repo:assetId`.
    pub fn asset_id(&self) -> Option<&str> {
        self.data
            .get("assetId")
            .and_then(Value::as_str)
            .or_else(|| self.repository_str("repo:assetId"))
    }

    /// `repo:repositoryId`: the AEM author host name (e.g.
    /// `author-p142461-e1463137.adobeaemcloud.com`). Check it against an allow-list before
    /// calling it.
    pub fn repository_id(&self) -> Option<&str> {
        self.repository_str("repo:repositoryId")
    }

    /// `repo:name`, the file name (may contain spaces).
    pub fn asset_name(&self) -> Option<&str> {
        self.repository_str("repo:name")
    }

    /// `repo:path`, e.g. `/content/dam/folder/file.png`.
    pub fn asset_path(&self) -> Option<&str> {
        self.repository_str("repo:path")
    }

    /// `data.assetMetadata` (editable metadata; on `metadata_updated` also `event:created` /
    /// `event:updated`).
    pub fn asset_metadata(&self) -> Option<&Map<String, Value>> {
        self.data.get("assetMetadata").and_then(Value::as_object)
    }

    /// `data.repositoryMetadata`.
    pub fn repository_metadata(&self) -> Option<&Map<String, Value>> {
        self.data
            .get("repositoryMetadata")
            .and_then(Value::as_object)
    }

    /// `repo:size` in bytes — a string in captures, a number in Adobe's example: both accepted.
    pub fn repo_size(&self) -> Option<u64> {
        match self.repository("repo:size")? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// `repo:modifyDate`, when present and RFC 3339.
    pub fn modify_date(&self) -> Option<DateTime<Utc>> {
        self.repository_str("repo:modifyDate")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A delivery or event that cannot be used. Answer 400 ([`EventError::status_code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, not an object/array of objects, an empty batch, or no `type`.
    #[error("malformed event delivery: {0}")]
    Malformed(String),
    /// An event without `eventid` / `event_id` (and no header fallback).
    #[error("event without `eventid`")]
    MissingEventId,
}

impl EventError {
    /// The HTTP status a webhook should answer: 400.
    pub fn status_code(&self) -> u16 {
        400
    }
}

/// Parses a delivery body: one CloudEvent object, or an array of them (batch delivery).
pub fn parse_delivery(body: &[u8]) -> Result<Vec<AdobeEvent>, EventError> {
    parse_delivery_with_header_id(body, None)
}

/// [`parse_delivery`], with the `x-adobe-event-id` header as the event id of a single-event
/// delivery whose body names none (not used for batches, whose header names one event only).
pub fn parse_delivery_with_header_id(
    body: &[u8],
    header_event_id: Option<&str>,
) -> Result<Vec<AdobeEvent>, EventError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| EventError::Malformed(format!("not JSON: {e}")))?;
    match &v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(EventError::Malformed("empty batch".into()));
            }
            items
                .iter()
                .map(|item| AdobeEvent::from_value(item, None))
                .collect()
        }
        Value::Object(_) => Ok(vec![AdobeEvent::from_value(&v, header_event_id)?]),
        _ => Err(EventError::Malformed(
            "a delivery is a JSON object or array".into(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Challenge

/// The `challenge` query parameter of a raw query string (`challenge=abc&x=y`), percent-decoded.
pub fn challenge_from_query(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
        .find(|(k, _)| k == "challenge")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// A `{"challenge": "..."}` body (not documented by Adobe for POST; handled defensively).
pub fn challenge_from_body(body: &Value) -> Option<String> {
    body.get("challenge")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The asynchronous-validation body `{"validationUrl": "..."}`: someone must `GET` that URL
/// within 5 minutes (log it; never fetch it automatically from an unverified request).
///
/// Only an `https` URL on Adobe's `adobe.io` domain (`https://csm.adobe.io/csm/registrations/
/// validate?...`) counts: the request is not signed, so a URL elsewhere is not offered to an
/// operator to open (the body is then treated as an ordinary, unsigned delivery: refused).
pub fn validation_url_from_body(body: &Value) -> Option<String> {
    let raw = body.get("validationUrl").and_then(Value::as_str)?;
    let url = Url::parse(raw).ok()?;
    let adobe = matches!(url.host(), Some(url::Host::Domain(h))
        if h.eq_ignore_ascii_case("adobe.io") || h.to_ascii_lowercase().ends_with(".adobe.io"));
    (url.scheme() == "https"
        && adobe
        && url.username().is_empty()
        && url.password().is_none()
        && url.port().is_none())
    .then(|| url.to_string())
}

/// The JSON answer to a challenge: `{"challenge": "<value>"}` (send with
/// `Content-Type: application/json`).
pub fn challenge_response(challenge: &str) -> Value {
    serde_json::json!({ "challenge": challenge })
}

// ---------------------------------------------------------------------------------------------
// Signatures

/// Header with the base64 signature made with key 1.
pub const HEADER_SIGNATURE_1: &str = "x-adobe-digital-signature-1";
/// Header with the base64 signature made with key 2.
pub const HEADER_SIGNATURE_2: &str = "x-adobe-digital-signature-2";
/// Header with the path of public key 1 (`/prod/keys/pub-key-<id>.pem`).
pub const HEADER_KEY_1_PATH: &str = "x-adobe-public-key1-path";
/// Header with the path of public key 2.
pub const HEADER_KEY_2_PATH: &str = "x-adobe-public-key2-path";
/// Header with the event id (single deliveries).
pub const HEADER_EVENT_ID: &str = "x-adobe-event-id";
/// Adobe's origin of the signing public keys.
pub const DEFAULT_KEY_ORIGIN: &str = "https://static.adobeioevents.com";
/// Longest a public key may be cached (Adobe: at most 24 h).
pub const MAX_KEY_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a delivery was refused, with the status to answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    /// The verifier's configuration cannot work.
    #[error("signature verifier configuration: {0}")]
    Config(String),
    /// A required signature or key-path header is missing (or not text). 401.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// A key-path header is not a plain `/....pem` path on the key origin. 401.
    #[error("refused public key path `{0}`")]
    InvalidKeyPath(String),
    /// Neither signature verifies over the raw body. 401.
    #[error("the delivery's digital signatures do not verify")]
    Invalid,
    /// No signature verified and at least one public key could not be fetched for a transient
    /// reason (network, 5xx): answer 503 so that Adobe retries.
    #[error("public key unavailable: {0}")]
    KeyUnavailable(String),
    /// An event of the delivery is addressed to another client id. 401.
    #[error("event `{event_id}` is for recipient {found:?}, not this client")]
    WrongRecipient {
        event_id: String,
        found: Option<String>,
    },
}

impl SignatureError {
    /// The HTTP status a webhook should answer.
    pub fn status_code(&self) -> u16 {
        match self {
            SignatureError::KeyUnavailable(_) | SignatureError::Config(_) => 503,
            _ => 401,
        }
    }
}

/// Signature or parsing failure of [`SignatureVerifier::verify_delivery`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Event(#[from] EventError),
}

impl DeliveryError {
    /// The HTTP status a webhook should answer (401, 400 or 503).
    pub fn status_code(&self) -> u16 {
        match self {
            DeliveryError::Signature(e) => e.status_code(),
            DeliveryError::Event(e) => e.status_code(),
        }
    }
}

/// Checks that every event is addressed to `client_id` (`recipientclientid`); a missing
/// recipient is refused too.
pub fn check_recipients(events: &[AdobeEvent], client_id: &str) -> Result<(), SignatureError> {
    for e in events {
        if e.recipient_client_id.as_deref() != Some(client_id) {
            return Err(SignatureError::WrongRecipient {
                event_id: e.event_id.clone(),
                found: e.recipient_client_id.clone(),
            });
        }
    }
    Ok(())
}

/// Settings of a [`SignatureVerifier`].
#[derive(Debug, Clone)]
pub struct SignatureVerifierConfig {
    /// Where public keys are fetched: this origin + the key-path header. Must be https, except
    /// on a loopback host (tests). Default: `https://static.adobeioevents.com`.
    pub key_origin: Url,
    /// Our Developer Console client id (the expected `recipientclientid`).
    pub client_id: String,
    /// How long a fetched key is trusted; capped at 24 h. Default: 24 h.
    pub cache_ttl: Duration,
    /// Most keys kept (oldest evicted first). Default: 16.
    pub max_cached_keys: usize,
    /// Timeout of one key fetch. Default: 5 s.
    pub fetch_timeout: Duration,
    /// Retries of a key fetch after a network error or 5xx. Default: 2.
    pub fetch_retries: u32,
    /// First backoff between key-fetch retries (doubled each time). Default: 200 ms.
    pub fetch_backoff: Duration,
    /// How long a key path the origin refused (404 or another 4xx, not an RSA public key) is
    /// remembered, so that requests naming it again are refused without another fetch.
    /// Default: 10 min.
    pub unusable_key_ttl: Duration,
    /// Most refused key paths remembered (oldest forgotten first). Default: 1 024.
    pub max_unusable_keys: usize,
    /// Most key fetches under way at once (one per distinct path: concurrent requests naming
    /// the same path share one fetch). A request that would need one more is answered as if
    /// the key were unavailable (503, Adobe retries) instead of queueing behind the others.
    /// Default: 8.
    pub max_concurrent_fetches: usize,
}

impl SignatureVerifierConfig {
    /// Defaults for the given client id.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            key_origin: Url::parse(DEFAULT_KEY_ORIGIN).expect("valid origin"),
            client_id: client_id.into(),
            cache_ttl: MAX_KEY_CACHE_TTL,
            max_cached_keys: 16,
            fetch_timeout: Duration::from_secs(5),
            fetch_retries: 2,
            fetch_backoff: Duration::from_millis(200),
            unusable_key_ttl: Duration::from_secs(600),
            max_unusable_keys: 1024,
            max_concurrent_fetches: 8,
        }
    }
}

struct CachedKey {
    der: Arc<[u8]>,
    fetched_at: Instant,
}

enum KeyFetch {
    Key(Arc<[u8]>),
    /// The key cannot be used (404, not a PEM RSA key): counts as a failed signature.
    Unusable(String),
    /// The origin refused this path recently (remembered, not fetched again).
    KnownUnusable,
    /// Temporarily unavailable.
    Unavailable(String),
}

/// What the caches know of a key path.
enum Known {
    Key(Arc<[u8]>),
    Unusable,
    Nothing,
}

/// Keys fetched, and key paths the origin refused.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, CachedKey>,
    unusable: HashMap<String, Instant>,
}

/// A fetch of one key path under way: requests naming the same path wait for it. Removed from
/// the map by the last holder.
struct InFlight<'a> {
    map: &'a parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    path: &'a str,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        // Held by the map and by us alone: nobody else waits for this path.
        if map
            .get(self.path)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate) && Arc::strong_count(&self.gate) == 2)
        {
            map.remove(self.path);
        }
    }
}

/// Verifies I/O Events digital signatures (RSASSA-PKCS1-v1_5, SHA-256, over the raw body), with
/// a bounded per-path key cache. Share one per process (`Arc`).
///
/// A request's key paths are chosen by whoever sends it, before anything is verified, so
/// fetching is bounded: a signature is first checked with the keys already cached (a delivery
/// signed with a known key never waits for a fetch), a path the origin refused is remembered
/// ([`SignatureVerifierConfig::unusable_key_ttl`]), requests naming the same path share one
/// fetch, and at most [`SignatureVerifierConfig::max_concurrent_fetches`] run at once.
pub struct SignatureVerifier {
    config: SignatureVerifierConfig,
    origin: Url,
    http: reqwest::Client,
    cache: parking_lot::Mutex<KeyCache>,
    in_flight: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetch_slots: tokio::sync::Semaphore,
    fetches: AtomicU64,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("key_origin", &self.origin.as_str())
            .field("client_id", &self.config.client_id)
            .finish()
    }
}

impl SignatureVerifier {
    /// A verifier; checks the key origin (scheme, host, no path/query).
    pub fn new(mut config: SignatureVerifierConfig) -> Result<Self, SignatureError> {
        let o = &config.key_origin;
        let loopback = matches!(
            o.host(),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback()
        ) || matches!(o.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || o.host_str() == Some("localhost");
        if !(o.scheme() == "https" || (o.scheme() == "http" && loopback)) {
            return Err(SignatureError::Config(format!(
                "key origin `{o}` must be https (http only on loopback)"
            )));
        }
        if o.host().is_none()
            || !(o.path().is_empty() || o.path() == "/")
            || o.query().is_some()
            || o.fragment().is_some()
            || !o.username().is_empty()
        {
            return Err(SignatureError::Config(format!(
                "key origin `{o}` must be a bare origin like https://static.adobeioevents.com"
            )));
        }
        if config.client_id.trim().is_empty() {
            return Err(SignatureError::Config("client_id is empty".into()));
        }
        config.cache_ttl = config.cache_ttl.min(MAX_KEY_CACHE_TTL);
        config.max_cached_keys = config.max_cached_keys.max(2);
        config.max_concurrent_fetches = config.max_concurrent_fetches.max(1);
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SignatureError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            origin: config.key_origin.clone(),
            fetch_slots: tokio::sync::Semaphore::new(config.max_concurrent_fetches),
            config,
            http,
            cache: parking_lot::Mutex::new(KeyCache::default()),
            in_flight: parking_lot::Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Our client id (expected recipient).
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// How many public keys were fetched over HTTP so far (cache misses).
    pub fn key_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The URL a key-path header designates: the configured origin + the path, after checking
    /// the path is `^/[A-Za-z0-9_./-]+\.pem$` without `..` or `//`.
    pub fn key_url(&self, path: &str) -> Result<Url, SignatureError> {
        let bad = || SignatureError::InvalidKeyPath(path.chars().take(200).collect());
        let valid = path.len() <= 256
            && path.starts_with('/')
            && path.ends_with(".pem")
            && path.len() > "/.pem".len()
            && !path.contains("..")
            && !path.contains("//")
            && path[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'));
        if !valid {
            return Err(bad());
        }
        let mut url = self.origin.clone();
        url.set_path(path);
        if url.origin() != self.origin.origin() || url.path() != path {
            return Err(bad());
        }
        Ok(url)
    }

    /// Verifies a delivery's signatures over its raw body. Valid when **either** signature
    /// verifies with its key; all four headers are required.
    pub async fn verify(&self, headers: &HeaderMap, raw_body: &[u8]) -> Result<(), SignatureError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::MissingHeader(name))
        };
        let sig1 = get(HEADER_SIGNATURE_1)?;
        let sig2 = get(HEADER_SIGNATURE_2)?;
        let path1 = get(HEADER_KEY_1_PATH)?;
        let path2 = get(HEADER_KEY_2_PATH)?;
        let url1 = self.key_url(path1)?;
        let url2 = self.key_url(path2)?;
        let decode = |sig: &str| base64::engine::general_purpose::STANDARD.decode(sig).ok();
        let slots = [(decode(sig1), path1, url1), (decode(sig2), path2, url2)];
        let verifies = |der: &[u8], sig: &[u8]| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                .verify(raw_body, sig)
                .is_ok()
        };
        // The keys already cached first: a delivery signed with one is never held up by a fetch
        // of the other slot's key.
        let mut tried = [false; 2];
        for ((sig, path, _), tried) in slots.iter().zip(&mut tried) {
            if let (Some(sig), Known::Key(der)) = (sig, self.known(path)) {
                if verifies(&der, sig) {
                    return Ok(());
                }
                *tried = true;
            }
        }
        let mut unavailable = None;
        for ((sig, path, url), tried) in slots.into_iter().zip(tried) {
            let Some(sig) = sig else {
                tracing::debug!(path, "signature header is not base64");
                continue;
            };
            if tried {
                continue; // with its cached key, above
            }
            match self.key(path, url).await {
                KeyFetch::Key(der) => {
                    if verifies(&der, &sig) {
                        return Ok(());
                    }
                    tracing::debug!(path, "signature does not verify with this key");
                }
                KeyFetch::Unusable(why) => tracing::warn!(path, %why, "unusable public key"),
                KeyFetch::KnownUnusable => {
                    tracing::debug!(path, "public key path refused by the origin recently")
                }
                KeyFetch::Unavailable(why) => {
                    tracing::warn!(path, %why, "public key unavailable");
                    unavailable = Some(format!("{path}: {why}"));
                }
            }
        }
        Err(match unavailable {
            Some(why) => SignatureError::KeyUnavailable(why),
            None => SignatureError::Invalid,
        })
    }

    /// [`verify`](Self::verify), then [`parse_delivery_with_header_id`] and
    /// [`check_recipients`] against our client id.
    pub async fn verify_delivery(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
    ) -> Result<Vec<AdobeEvent>, DeliveryError> {
        self.verify(headers, raw_body).await?;
        let header_id = headers.get(HEADER_EVENT_ID).and_then(|v| v.to_str().ok());
        let events = parse_delivery_with_header_id(raw_body, header_id)?;
        check_recipients(&events, &self.config.client_id)?;
        Ok(events)
    }

    /// What the caches hold for `path` (expired entries count as nothing).
    fn known(&self, path: &str) -> Known {
        let cache = self.cache.lock();
        if let Some(k) = cache
            .keys
            .get(path)
            .filter(|k| k.fetched_at.elapsed() < self.config.cache_ttl)
        {
            return Known::Key(k.der.clone());
        }
        if cache
            .unusable
            .get(path)
            .is_some_and(|at| at.elapsed() < self.config.unusable_key_ttl)
        {
            return Known::Unusable;
        }
        Known::Nothing
    }

    async fn key(&self, path: &str, url: Url) -> KeyFetch {
        match self.known(path) {
            Known::Key(k) => return KeyFetch::Key(k),
            Known::Unusable => return KeyFetch::KnownUnusable,
            Known::Nothing => {}
        }
        // One fetch per path at a time: concurrent requests naming it share the answer.
        let in_flight = InFlight {
            map: &self.in_flight,
            path,
            gate: self
                .in_flight
                .lock()
                .entry(path.to_owned())
                .or_default()
                .clone(),
        };
        let _turn = in_flight.gate.lock().await;
        match self.known(path) {
            Known::Key(k) => return KeyFetch::Key(k),
            Known::Unusable => return KeyFetch::KnownUnusable,
            Known::Nothing => {}
        }
        let Ok(_slot) = self.fetch_slots.try_acquire() else {
            return KeyFetch::Unavailable(format!(
                "{} public key fetches already under way",
                self.config.max_concurrent_fetches
            ));
        };
        let fetched = self.fetch(url).await;
        let mut cache = self.cache.lock();
        match &fetched {
            KeyFetch::Key(der) => {
                let ttl = self.config.cache_ttl;
                cache.keys.retain(|_, k| k.fetched_at.elapsed() < ttl);
                while cache.keys.len() >= self.config.max_cached_keys {
                    let oldest = cache
                        .keys
                        .iter()
                        .min_by_key(|(_, k)| k.fetched_at)
                        .map(|(p, _)| p.clone());
                    match oldest {
                        Some(p) => cache.keys.remove(&p),
                        None => break,
                    };
                }
                cache.keys.insert(
                    path.to_owned(),
                    CachedKey {
                        der: der.clone(),
                        fetched_at: Instant::now(),
                    },
                );
            }
            KeyFetch::Unusable(_) => {
                let ttl = self.config.unusable_key_ttl;
                cache.unusable.retain(|_, at| at.elapsed() < ttl);
                if cache.unusable.len() >= self.config.max_unusable_keys.max(1) {
                    let oldest = cache
                        .unusable
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(p, _)| p.clone());
                    if let Some(p) = oldest {
                        cache.unusable.remove(&p);
                    }
                }
                cache.unusable.insert(path.to_owned(), Instant::now());
            }
            KeyFetch::KnownUnusable | KeyFetch::Unavailable(_) => {}
        }
        drop(cache);
        fetched
    }

    async fn fetch(&self, url: Url) -> KeyFetch {
        let attempts = self.config.fetch_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let transient = match self.http.get(url.clone()).send().await {
                Ok(r) if r.status().is_success() => {
                    return match r.text().await {
                        Ok(pem) if pem.len() <= 16 * 1024 => match rsa_public_key_der(&pem) {
                            Ok(der) => KeyFetch::Key(der.into()),
                            Err(e) => KeyFetch::Unusable(e),
                        },
                        Ok(_) => KeyFetch::Unusable("key file too large".into()),
                        Err(e) => KeyFetch::Unavailable(e.to_string()),
                    };
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    format!("HTTP {}", r.status().as_u16())
                }
                Ok(r) => return KeyFetch::Unusable(format!("HTTP {}", r.status().as_u16())),
                Err(e) => e.to_string(),
            };
            if attempt >= attempts {
                return KeyFetch::Unavailable(transient);
            }
            tokio::time::sleep(retry::backoff(self.config.fetch_backoff, attempt - 1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capture() -> Value {
        json!({
          "specversion": "1.0",
          "id": "712375d8-0464-489b-ac3e-6b0eb77d2932",
          "source": "acct:aem-p142461-e1463137@adobe.com",
          "type": "aem.assets.asset.processing_completed",
          "datacontenttype": "application/json",
          "time": "2025-08-29T06:57:54.151358579Z",
          "eventid": "ebea9720-fake-40b0-9f18-f765bd982706",
          "event_id": "ebea9720-e2a6-40b0-9f18-f765bd982706",
          "recipientclientid": "4ab33463139e4f96b851589286cd46e4",
          "recipient_client_id": "4ab33463139e4f96b851589286cd46e4",
          "data": {
            "assetId": "urn:aaid:aem:20fec14a-b5b8-4c7d-85f4-e619d66281dc",
            "assetMetadata": { "xcm:machineKeywords": [ { "confidence": 0.896, "value": "editorial photography" } ] },
            "repositoryMetadata": {
              "aem:assetState": "processed",
              "repo:modifyDate": "2025-08-29T06:57:54.141Z",
              "repo:name": "Screenshot 2025-05-28 at 5.05.48 PM.png",
              "repo:path": "/content/dam/agency_work_for_BRAND_A/Screenshot 2025-05-28 at 5.05.48 PM.png",
              "repo:repositoryId": "author-p142461-e1463137.adobeaemcloud.com",
              "repo:size": "669044"
            }
          }
        })
    }

    #[test]
    fn parses_the_real_capture() {
        let body = serde_json::to_vec(&capture()).unwrap();
        let events = parse_delivery(&body).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            e.event_id, "ebea9720-fake-40b0-9f18-f765bd982706",
            "eventid wins"
        );
        assert_eq!(e.event_type, EventType::ProcessingCompleted);
        assert_eq!(
            e.id.as_deref(),
            Some("712375d8-0464-489b-ac3e-6b0eb77d2932")
        );
        assert_eq!(
            e.recipient_client_id.as_deref(),
            Some("4ab33463139e4f96b851589286cd46e4")
        );
        assert_eq!(
            e.asset_id(),
            Some("urn:aaid:aem:20fec14a-b5b8-4c7d-85f4-e619d66281dc")
        );
        assert_eq!(
            e.repository_id(),
            Some("author-p142461-e1463137.adobeaemcloud.com")
        );
        assert_eq!(
            e.asset_name(),
            Some("Screenshot 2025-05-28 at 5.05.48 PM.png")
        );
        assert!(e.asset_path().unwrap().starts_with("/content/dam/"));
        assert_eq!(e.repo_size(), Some(669_044));
        assert_eq!(
            e.modify_date().unwrap().to_rfc3339(),
            "2025-08-29T06:57:54.141+00:00"
        );
        assert!(e.time.is_some());
        assert!(e
            .asset_metadata()
            .unwrap()
            .contains_key("xcm:machineKeywords"));
        // Round trip through our own serialisation.
        let back: AdobeEvent = serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap();
        assert_eq!(&back, e);
    }

    #[test]
    fn deprecated_names_numbers_and_fallbacks() {
        let mut v = capture();
        let o = v.as_object_mut().unwrap();
        o.remove("eventid");
        o.remove("recipientclientid");
        o["data"]["repositoryMetadata"]["repo:size"] = json!(338049);
        let e = AdobeEvent::from_value(&v, None).unwrap();
        assert_eq!(e.event_id, "ebea9720-e2a6-40b0-9f18-f765bd982706");
        assert_eq!(
            e.recipient_client_id.as_deref(),
            Some("4ab33463139e4f96b851589286cd46e4")
        );
        assert_eq!(e.repo_size(), Some(338_049));

        v.as_object_mut().unwrap().remove("event_id");
        assert_eq!(
            AdobeEvent::from_value(&v, None),
            Err(EventError::MissingEventId)
        );
        let body = serde_json::to_vec(&v).unwrap();
        let e = parse_delivery_with_header_id(&body, Some("hdr-id")).unwrap();
        assert_eq!(e[0].event_id, "hdr-id");
        // A batch never takes the header id.
        let batch = serde_json::to_vec(&json!([v])).unwrap();
        assert_eq!(
            parse_delivery_with_header_id(&batch, Some("hdr-id")),
            Err(EventError::MissingEventId)
        );
    }

    #[test]
    fn batches_and_malformed_bodies() {
        let mut second = capture();
        second["eventid"] = json!("e2");
        second["type"] = json!("aem.sites.page.created");
        let body = serde_json::to_vec(&json!([capture(), second])).unwrap();
        let events = parse_delivery(&body).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].event_type,
            EventType::Other("aem.sites.page.created".into())
        );
        assert_eq!(events[1].event_type.as_str(), "aem.sites.page.created");

        for bad in [
            &b"not json"[..],
            b"[]",
            b"42",
            b"[1]",
            br#"{"eventid":"x"}"#,
        ] {
            let e = parse_delivery(bad).unwrap_err();
            assert_eq!(e.status_code(), 400, "{e}");
        }
    }

    #[test]
    fn every_known_type_round_trips() {
        for t in [
            EventType::ProcessingCompleted,
            EventType::MetadataUpdated,
            EventType::Deleted,
            EventType::Published,
        ] {
            assert_eq!(EventType::parse(t.as_str()), t);
        }
        assert_eq!(
            EventType::parse("aem.assets.asset.deleted"),
            EventType::Deleted
        );
    }

    #[test]
    fn recipients_are_checked_for_every_event() {
        let a = AdobeEvent::from_value(&capture(), None).unwrap();
        let mut b = a.clone();
        b.recipient_client_id = Some("someone-else".into());
        let mut c = a.clone();
        c.recipient_client_id = None;
        let me = "4ab33463139e4f96b851589286cd46e4";
        assert!(check_recipients(&[a.clone(), a.clone()], me).is_ok());
        let err = check_recipients(&[a.clone(), b], me).unwrap_err();
        assert_eq!(err.status_code(), 401);
        assert!(check_recipients(&[a, c], me).is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            challenge_from_query("challenge=8ec8d794-e0ab&x=1").as_deref(),
            Some("8ec8d794-e0ab")
        );
        assert_eq!(
            challenge_from_query("?x=1&challenge=a%20b").as_deref(),
            Some("a b")
        );
        assert_eq!(challenge_from_query("x=1"), None);
        assert_eq!(challenge_from_query("challenge="), None);
        assert_eq!(
            challenge_from_body(&json!({"challenge": "c1"})).as_deref(),
            Some("c1")
        );
        assert_eq!(challenge_from_body(&capture()), None);
        assert_eq!(challenge_response("c1"), json!({"challenge": "c1"}));
        assert_eq!(
            validation_url_from_body(&json!({"validationUrl": "https://csm.adobe.io/x"}))
                .as_deref(),
            Some("https://csm.adobe.io/x")
        );
        // The documented form passes unchanged.
        let real = "https://csm.adobe.io/csm/registrations/validate?id=6a4b&challenge=9f1c";
        assert_eq!(
            validation_url_from_body(&json!({ "validationUrl": real })).as_deref(),
            Some(real)
        );
        // Not Adobe's: never offered to an operator.
        for foreign in [
            "https://evil.example.com/csm/registrations/validate?id=1",
            "https://adobe.io.evil.example.com/x",
            "https://evil-adobe.io/x",
            "http://csm.adobe.io/x",
            "https://user@csm.adobe.io/x",
            "https://csm.adobe.io:8443/x",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert_eq!(
                validation_url_from_body(&json!({ "validationUrl": foreign })),
                None,
                "{foreign}"
            );
        }
        assert_eq!(
            validation_url_from_body(&json!({ "validationUrl": 7 })),
            None
        );
    }

    #[test]
    fn key_paths_are_confined_to_the_origin() {
        let v = SignatureVerifier::new(SignatureVerifierConfig::new("cid")).unwrap();
        assert_eq!(
            v.key_url("/prod/keys/pub-key-Ptc2pD9vT9.pem")
                .unwrap()
                .as_str(),
            "https://static.adobeioevents.com/prod/keys/pub-key-Ptc2pD9vT9.pem"
        );
        for bad in [
            "/prod/keys/../../etc/passwd.pem",
            "https://evil.example.com/key.pem",
            "//evil.example.com/key.pem",
            "prod/keys/k.pem",
            "/prod/keys/k.pem?x=1",
            "/prod/keys/k.txt",
            "/prod/keys/k%2e.pem",
            "/prod/keys/@evil.com.pem\\",
            "/.pem",
        ] {
            assert!(
                matches!(v.key_url(bad), Err(SignatureError::InvalidKeyPath(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn origins_are_checked() {
        let mut c = SignatureVerifierConfig::new("cid");
        c.key_origin = Url::parse("http://static.adobeioevents.com").unwrap();
        assert!(
            SignatureVerifier::new(c.clone()).is_err(),
            "plain http off loopback"
        );
        c.key_origin = Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(SignatureVerifier::new(c.clone()).is_ok());
        c.key_origin = Url::parse("https://static.adobeioevents.com/prod/").unwrap();
        assert!(SignatureVerifier::new(c.clone()).is_err());
        c.key_origin = Url::parse("https://static.adobeioevents.com").unwrap();
        c.cache_ttl = Duration::from_secs(7 * 24 * 3600);
        let v = SignatureVerifier::new(c).unwrap();
        assert_eq!(v.config.cache_ttl, MAX_KEY_CACHE_TTL);
    }

    #[tokio::test]
    async fn missing_headers_are_refused_before_any_fetch() {
        let v = SignatureVerifier::new(SignatureVerifierConfig::new("cid")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(HEADER_SIGNATURE_1, "AAAA".parse().unwrap());
        h.insert(HEADER_KEY_1_PATH, "/prod/keys/a.pem".parse().unwrap());
        h.insert(HEADER_KEY_2_PATH, "/prod/keys/b.pem".parse().unwrap());
        assert_eq!(
            v.verify(&h, b"{}").await,
            Err(SignatureError::MissingHeader(HEADER_SIGNATURE_2))
        );
        h.insert(HEADER_SIGNATURE_2, "AAAA".parse().unwrap());
        h.insert(HEADER_KEY_2_PATH, "/../b.pem".parse().unwrap());
        assert!(matches!(
            v.verify(&h, b"{}").await,
            Err(SignatureError::InvalidKeyPath(_))
        ));
        assert_eq!(v.key_fetches(), 0);
    }
}
