//! The I/O Events **sender**: signed webhook deliveries with Adobe's headers and retry rules,
//! the public keys that verify them, and the challenge check.
//!
//! # Keys
//! `ring` cannot generate RSA keys, so the emulator embeds three fixed **TEST-ONLY** RSA-2048
//! key pairs (generated once with `openssl genpkey`, committed under `test_keys/`; they protect
//! nothing) and signs with `ring`'s `RsaKeyPair` (RSASSA-PKCS1-v1_5, SHA-256) over the exact body
//! bytes. Key 1 and key 2 are served as `GET /prod/keys/pub-key-aemEmuKey1.pem` /
//! `pub-key-aemEmuKey2.pem` (SPKI PEM, like Adobe's); the rogue key is never served.
//!
//! # Deliveries
//! `POST <webhook>` with `content-type: application/cloudevents+json; charset=UTF-8`,
//! `user-agent: Adobe/1.0`, `x-adobe-delivery-id` and `x-request-id` (new per attempt),
//! `x-adobe-event-code`, `x-adobe-event-id` (stable across attempts; for a batch, those of its
//! first event \[unverified]), `x-adobe-provider`, `x-adobe-retry-count` (absent on the first
//! attempt, then 1, 2, ...), `x-adobe-digital-signature-1/-2`, `x-adobe-public-key1-path/-2-path`.
//! A batch is a JSON array of at most 20 events (and about 2 MB).
//!
//! Retries (Adobe's rules, on a compressed clock): only after 429, a 5xx other than 505, or a
//! failed attempt (connection error, timeout — Adobe's synthetic 6xx); any other status ends the
//! delivery. Waits: 1, 2, 4, 8, then every 15 minutes, each minute lasting
//! [`retry_minute`](super::AemEmulatorConfig::retry_minute); given up once the next attempt
//! would fall outside the 24 h window.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::Value;
use url::Url;

use super::{fault_response, AemEmulator, AemEndpoint};

/// Largest batch Adobe sends.
pub const MAX_BATCH_EVENTS: usize = 20;
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Adobe's retry window, in minutes.
const RETRY_WINDOW_MINUTES: u64 = 24 * 60;

const KEY1_PRIVATE: &str = include_str!("test_keys/key1.private.pem");
const KEY1_PUBLIC: &str = include_str!("test_keys/key1.public.pem");
const KEY2_PRIVATE: &str = include_str!("test_keys/key2.private.pem");
const KEY2_PUBLIC: &str = include_str!("test_keys/key2.public.pem");
const ROGUE_PRIVATE: &str = include_str!("test_keys/rogue.private.pem");
const ROGUE_PUBLIC: &str = include_str!("test_keys/rogue.public.pem");

/// The emulator's TEST-ONLY signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulatorKey {
    /// Served as key 1.
    Key1,
    /// Served as key 2 (a different pair: the "rotated" key).
    Key2,
    /// Never served: signatures made with it never verify.
    Rogue,
}

impl EmulatorKey {
    /// The public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_pem(self) -> &'static str {
        match self {
            EmulatorKey::Key1 => KEY1_PUBLIC,
            EmulatorKey::Key2 => KEY2_PUBLIC,
            EmulatorKey::Rogue => ROGUE_PUBLIC,
        }
    }

    /// The path it is served at (`None` for the rogue key).
    pub fn path(self) -> Option<&'static str> {
        match self {
            EmulatorKey::Key1 => Some("/prod/keys/pub-key-aemEmuKey1.pem"),
            EmulatorKey::Key2 => Some("/prod/keys/pub-key-aemEmuKey2.pem"),
            EmulatorKey::Rogue => None,
        }
    }

    fn pair(self) -> &'static RsaKeyPair {
        static PAIRS: OnceLock<[RsaKeyPair; 3]> = OnceLock::new();
        let pairs = PAIRS.get_or_init(|| {
            [KEY1_PRIVATE, KEY2_PRIVATE, ROGUE_PRIVATE].map(|pem| {
                let b64: String = pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .expect("embedded test key is base64");
                RsaKeyPair::from_pkcs8(&der).expect("embedded test key is PKCS#8 RSA")
            })
        });
        match self {
            EmulatorKey::Key1 => &pairs[0],
            EmulatorKey::Key2 => &pairs[1],
            EmulatorKey::Rogue => &pairs[2],
        }
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature of `body`, base64 (as in the signature headers).
    pub fn sign(self, body: &[u8]) -> String {
        let pair = self.pair();
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), body, &mut sig)
            .expect("RSA signing");
        base64::engine::general_purpose::STANDARD.encode(sig)
    }
}

/// How one signature header of a delivery is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMode {
    /// Signed with the key its key-path header names.
    #[default]
    Valid,
    /// Signed with the rogue key (the header still names the served key): fails verification.
    WrongKey,
    /// The signature header is left out.
    Omitted,
}

/// How deliveries are signed ([`AemEmulator::set_signing`]). Default: both signatures valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliverySigning {
    pub signature_1: SignatureMode,
    pub signature_2: SignatureMode,
}

/// Single (one event per request) or batch (arrays of up to 20) delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Single,
    Batch,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// `x-adobe-retry-count` (0 = first attempt, header absent).
    pub retry_count: u32,
    /// `x-adobe-delivery-id` of the attempt.
    pub delivery_id: String,
    /// The status answered, or `None` when the attempt failed (connection, timeout).
    pub status: Option<u16>,
    /// What went wrong, for failed attempts.
    pub error: Option<String>,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx answer.
    Delivered,
    /// A status Adobe does not retry (4xx other than 429, 3xx, 505): dropped at once.
    Rejected(u16),
    /// Still failing when the 24 h window (compressed) ran out.
    GaveUp,
}

/// One delivery (an event, or a batch) with its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub url: String,
    /// The events' `eventid`s.
    pub event_ids: Vec<String>,
    /// The exact body sent (the same on every attempt).
    pub body: String,
    pub attempts: Vec<DeliveryAttempt>,
    pub outcome: DeliveryOutcome,
}

/// What a challenge check saw ([`AemEmulator::check_challenge`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeCheck {
    /// The challenge sent.
    pub challenge: String,
    /// The status answered (`None`: no answer).
    pub status: Option<u16>,
    /// The answer echoed the challenge (raw text, or JSON `{"challenge": ...}`).
    pub echoed: bool,
}

/// Adobe retries after 429 and 5xx except 505 (and failed attempts).
pub fn is_retried_status(status: u16) -> bool {
    status == 429 || ((500..600).contains(&status) && status != 505)
}

/// The wait before retry number `retry` (1-based), in minutes of Adobe's schedule.
pub fn retry_wait_minutes(retry: u32) -> u64 {
    match retry {
        0 | 1 => 1,
        2 => 2,
        3 => 4,
        4 => 8,
        _ => 15,
    }
}

impl AemEmulator {
    /// Sets how the next deliveries are signed.
    pub fn set_signing(&self, signing: DeliverySigning) {
        self.inner.state.lock().signing = signing;
    }

    /// Pushes every event emitted from now on (processing_completed, metadata_updated echoes)
    /// to `url` in the background; `None` stops it.
    pub fn register_webhook(&self, webhook: Option<(Url, DeliveryMode)>) {
        self.inner.state.lock().webhook = webhook;
    }

    /// Delivers events to a webhook as I/O Events does (see the module docs), and returns the
    /// records of this call (also appended to [`deliveries`](AemEmulator::deliveries)). Single
    /// deliveries of several events run concurrently, each with its own retries.
    pub async fn deliver(
        &self,
        url: &Url,
        events: Vec<Value>,
        mode: DeliveryMode,
    ) -> Vec<DeliveryRecord> {
        let bodies: Vec<(Vec<Value>, Vec<u8>)> = match mode {
            DeliveryMode::Single => events
                .into_iter()
                .map(|e| {
                    let body = serde_json::to_vec(&e).expect("JSON");
                    (vec![e], body)
                })
                .collect(),
            DeliveryMode::Batch => {
                let mut out = Vec::new();
                let mut current: Vec<Value> = Vec::new();
                let mut size = 2;
                for e in events {
                    let s = serde_json::to_vec(&e).expect("JSON").len() + 1;
                    if !current.is_empty()
                        && (current.len() >= MAX_BATCH_EVENTS || size + s > MAX_BATCH_BYTES)
                    {
                        out.push(std::mem::take(&mut current));
                        size = 2;
                    }
                    size += s;
                    current.push(e);
                }
                if !current.is_empty() {
                    out.push(current);
                }
                out.into_iter()
                    .map(|batch| {
                        let body = serde_json::to_vec(&batch).expect("JSON");
                        (batch, body)
                    })
                    .collect()
            }
        };
        let records = futures::future::join_all(
            bodies
                .into_iter()
                .map(|(events, body)| self.deliver_one(url, events, body)),
        )
        .await;
        self.inner
            .state
            .lock()
            .deliveries
            .extend(records.iter().cloned());
        records
    }

    async fn deliver_one(&self, url: &Url, events: Vec<Value>, body: Vec<u8>) -> DeliveryRecord {
        let first = events.first().cloned().unwrap_or(Value::Null);
        let s = |k: &str| {
            first
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let event_code = s("type");
        let event_id = if s("eventid").is_empty() {
            s("event_id")
        } else {
            s("eventid")
        };
        let event_ids = events
            .iter()
            .filter_map(|e| e.get("eventid").or_else(|| e.get("event_id")))
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let signing = self.inner.state.lock().signing;
        let sig = |mode: SignatureMode, key: EmulatorKey| match mode {
            SignatureMode::Valid => Some(key.sign(&body)),
            SignatureMode::WrongKey => Some(EmulatorKey::Rogue.sign(&body)),
            SignatureMode::Omitted => None,
        };
        let sig1 = sig(signing.signature_1, EmulatorKey::Key1);
        let sig2 = sig(signing.signature_2, EmulatorKey::Key2);
        let provider = format!(
            "aemassets_{}_{}",
            self.inner.config.org_id,
            self.event_source().replace(':', "-")
        );
        let minute = self.inner.config.retry_minute;
        let mut attempts = Vec::new();
        let mut elapsed_minutes = 0u64;
        let mut retry = 0u32;
        let outcome = loop {
            let delivery_id = uuid::Uuid::new_v4().to_string();
            let mut req = self
                .inner
                .http
                .post(url.clone())
                .header(
                    "content-type",
                    "application/cloudevents+json; charset=UTF-8",
                )
                .header("user-agent", "Adobe/1.0")
                .header("accept-encoding", "deflate,compress,identity")
                .header("x-adobe-delivery-id", &delivery_id)
                .header("x-request-id", uuid::Uuid::new_v4().to_string())
                .header("x-adobe-event-code", &event_code)
                .header("x-adobe-event-id", &event_id)
                .header("x-adobe-provider", &provider)
                .header(
                    "x-adobe-public-key1-path",
                    EmulatorKey::Key1.path().expect("served"),
                )
                .header(
                    "x-adobe-public-key2-path",
                    EmulatorKey::Key2.path().expect("served"),
                );
            if let Some(s) = &sig1 {
                req = req.header("x-adobe-digital-signature-1", s);
            }
            if let Some(s) = &sig2 {
                req = req.header("x-adobe-digital-signature-2", s);
            }
            if retry > 0 {
                req = req.header("x-adobe-retry-count", retry.to_string());
            }
            let (status, error) = match req.body(body.clone()).send().await {
                Ok(r) => (Some(r.status().as_u16()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            attempts.push(DeliveryAttempt {
                retry_count: retry,
                delivery_id,
                status,
                error,
            });
            match status {
                Some(s) if (200..300).contains(&s) => break DeliveryOutcome::Delivered,
                Some(s) if !is_retried_status(s) => break DeliveryOutcome::Rejected(s),
                _ => {}
            }
            retry += 1;
            let wait = retry_wait_minutes(retry);
            if elapsed_minutes + wait > RETRY_WINDOW_MINUTES {
                break DeliveryOutcome::GaveUp;
            }
            elapsed_minutes += wait;
            tokio::time::sleep(minute * wait as u32).await;
        };
        DeliveryRecord {
            url: url.to_string(),
            event_ids,
            body: String::from_utf8_lossy(&body).into_owned(),
            attempts,
            outcome,
        }
    }

    /// Sends the registration challenge `GET <url>?challenge=<uuid>` and reports whether the
    /// webhook answered 200 echoing it: the raw value as `text/plain`, or
    /// `{"challenge": "..."}` as `application/json`. Another content type fails, as the
    /// reference warns ("a wrong content type can make validation fail").
    pub async fn check_challenge(&self, url: &Url) -> ChallengeCheck {
        let challenge = uuid::Uuid::new_v4().to_string();
        let mut target = url.clone();
        target
            .query_pairs_mut()
            .append_pair("challenge", &challenge);
        let (status, echoed) = match self.inner.http.get(target).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let media = r
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|ct| ct.split(';').next())
                    .map(|m| m.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                let body = r.text().await.unwrap_or_default();
                let json_echo = media == "application/json"
                    && serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| {
                            v.get("challenge")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .is_some_and(|c| c == challenge);
                let raw_echo = media == "text/plain" && body.trim() == challenge;
                (Some(status), status == 200 && (raw_echo || json_echo))
            }
            Err(_) => (None, false),
        };
        ChallengeCheck {
            challenge,
            status,
            echoed,
        }
    }
}

/// `GET /prod/keys/{file}`: the served public keys (SPKI PEM), 404 otherwise.
pub(crate) async fn public_key(
    State(emu): State<AemEmulator>,
    Path(file): Path<String>,
) -> Response {
    if let Some(f) = emu.take_fault(AemEndpoint::Keys) {
        return fault_response(f);
    }
    let path = format!("/prod/keys/{file}");
    let key = [EmulatorKey::Key1, EmulatorKey::Key2]
        .into_iter()
        .find(|k| k.path() == Some(path.as_str()));
    match key {
        Some(k) => {
            emu.inner.state.lock().key_fetches += 1;
            (
                [(http::header::CONTENT_TYPE, "application/x-pem-file")],
                k.public_pem(),
            )
                .into_response()
        }
        None => (http::StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A webhook answering the challenge GET in the form its path names.
    async fn challenge_hook() -> String {
        async fn answer(
            Path(form): Path<String>,
            axum::extract::RawQuery(q): axum::extract::RawQuery,
        ) -> Response {
            let c = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "challenge")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let json = serde_json::json!({ "challenge": c }).to_string();
            let (ct, body) = match form.as_str() {
                "json" => ("application/json", json),
                "json-as-text" => ("text/plain; charset=utf-8", json),
                "raw" => ("text/plain; charset=utf-8", c),
                "raw-as-json" => ("application/json", c),
                _ => ("text/html", c),
            };
            ([(http::header::CONTENT_TYPE, ct)], body).into_response()
        }
        let app = axum::Router::new().route("/{form}", axum::routing::get(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn challenge_echo_needs_the_matching_content_type() {
        let emu = AemEmulator::new(super::super::AemEmulatorConfig::default());
        let base = challenge_hook().await;
        for (form, ok) in [
            ("json", true),
            ("raw", true),
            ("json-as-text", false),
            ("raw-as-json", false),
            ("raw-as-html", false),
        ] {
            let url = Url::parse(&format!("{base}/{form}")).unwrap();
            let c = emu.check_challenge(&url).await;
            assert_eq!(c.status, Some(200), "{form}");
            assert_eq!(c.echoed, ok, "{form}");
        }
    }

    #[test]
    fn retry_rules() {
        assert!(is_retried_status(429));
        assert!(is_retried_status(500));
        assert!(is_retried_status(503));
        assert!(!is_retried_status(505));
        assert!(!is_retried_status(400));
        assert!(!is_retried_status(404));
        assert!(!is_retried_status(301));
        let waits: Vec<u64> = (1..=7).map(retry_wait_minutes).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15, 15]);
    }

    #[test]
    fn embedded_keys_sign_and_verify() {
        let body = br#"{"hello":"world"}"#;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(EmulatorKey::Key1.sign(body))
            .unwrap();
        assert_eq!(sig.len(), 256);
        let public = EmulatorKey::Key1.pair().public().as_ref().to_vec();
        let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public);
        assert!(key.verify(body, &sig).is_ok());
        assert!(key.verify(b"{\"hello\":\"world!\"}", &sig).is_err());
        let rogue = base64::engine::general_purpose::STANDARD
            .decode(EmulatorKey::Rogue.sign(body))
            .unwrap();
        assert!(key.verify(body, &rogue).is_err());
        assert!(EmulatorKey::Key2
            .public_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_ne!(
            EmulatorKey::Key1.public_pem(),
            EmulatorKey::Key2.public_pem()
        );
    }
}
