//! Sending one logical request: concurrency cap, requests-per-second ceiling, bearer token,
//! 401 → renew and replay once, 429 → `Retry-After`, transient failures → bounded exponential
//! backoff with jitter.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::AkeneoError;
use crate::stats::{inc, Counters};
use crate::Inner;

/// A whole HTTP answer (status, headers, body read to the end).
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    /// The body as JSON of type `T`, or a protocol error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AkeneoError> {
        serde_json::from_slice(&self.body).map_err(|e| AkeneoError::Protocol {
            status: self.code(),
            message: format!("body is not the expected JSON ({e}): {}", self.snippet()),
        })
    }

    /// The start of the body as text, for messages.
    pub fn snippet(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let mut out: String = s.chars().take(300).collect();
        if s.chars().count() > 300 {
            out.push('…');
        }
        out
    }

    /// The PIM's `message` (and `errors`) from an error body `{"code":..,"message":..}`.
    pub fn message_and_errors(&self) -> (String, Option<Value>) {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => {
                let msg = v
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.snippet());
                (msg, v.get("errors").cloned())
            }
            Err(_) if self.body.is_empty() => (
                self.status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_owned(),
                None,
            ),
            Err(_) => (self.snippet(), None),
        }
    }

    /// This answer as the error of the whole request.
    pub fn into_error(self) -> AkeneoError {
        let (message, errors) = self.message_and_errors();
        let status = self.code();
        match status {
            401 => AkeneoError::Auth { status, message },
            408 | 500..=599 => AkeneoError::Transient {
                status: Some(status),
                message,
            },
            429 => AkeneoError::RateLimited {
                retry_after: retry_after(&self.headers),
            },
            _ => AkeneoError::Request {
                status,
                message,
                errors,
            },
        }
    }
}

/// Builds the request of each attempt.
pub(crate) trait MakeRequest: Send {
    /// The request of the next attempt; `None` when it cannot be built again (a streamed body
    /// already consumed).
    fn make(&mut self, http: &reqwest::Client) -> Option<RequestBuilder>;
}

impl<F> MakeRequest for F
where
    F: FnMut(&reqwest::Client) -> RequestBuilder + Send,
{
    fn make(&mut self, http: &reqwest::Client) -> Option<RequestBuilder> {
        Some(self(http))
    }
}

/// A requests-per-second ceiling: a token bucket where each caller reserves the next slot, so
/// waiters are served in order and the rate holds under any concurrency.
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Waits for a slot; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let wait = {
            let mut s = self.state.lock();
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst);
            s.1 = now;
            s.0 -= 1.0;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

/// The client's limits: the concurrency cap and the optional rate ceiling.
pub(crate) struct Limits {
    pub semaphore: Semaphore,
    pub bucket: Option<TokenBucket>,
}

/// How long a 429 asks to wait: `Retry-After` in seconds or as an HTTP date; 1 s when absent
/// or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Duration {
    let Some(v) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) else {
        return Duration::from_secs(1);
    };
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Duration::from_secs(secs);
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Duration::from_secs_f64(secs.min(86_400.0));
        }
    }
    if let Ok(at) = httpdate::parse_http_date(v) {
        return at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
    }
    Duration::from_secs(1)
}

/// Exponential backoff with jitter: attempt n waits a random time in [d/2, d] with
/// d = min(max, base · 2^(n-1)).
pub(crate) fn backoff(base_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    let d = exp.min(max_ms).max(1);
    let ms = rand::Rng::gen_range(&mut rand::thread_rng(), d / 2..=d);
    Duration::from_millis(ms)
}

fn transport_message(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs_f64());
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl Inner {
    /// Sends one request with every limit and retry rule; returns the answer for any status the
    /// caller has to interpret (2xx, and 4xx other than 401/408/429), or the error.
    ///
    /// `authenticated`: add the bearer token (and renew it on a 401).
    pub(crate) async fn execute(
        &self,
        op: &str,
        authenticated: bool,
        timeout: Duration,
        factory: &mut dyn MakeRequest,
    ) -> Result<RawResponse, AkeneoError> {
        let cfg = &self.config;
        let mut transient_failures = 0u32;
        let mut rate_limited = 0u32;
        let mut replayed = false;
        loop {
            let mut asked_wait: Option<Duration> = None;
            let token = if authenticated {
                Some(self.auth.token(self).await?)
            } else {
                None
            };
            let Some(mut rb) = factory.make(&self.http) else {
                return Err(AkeneoError::Transient {
                    status: None,
                    message: format!("{op}: the request body cannot be sent again"),
                });
            };
            if let Some(t) = &token {
                rb = rb.bearer_auth(t.access.expose_secret());
            }
            rb = rb.timeout(timeout);

            let started = Instant::now();
            let outcome = {
                let _permit = self
                    .limits
                    .semaphore
                    .acquire()
                    .await
                    .expect("semaphore never closed");
                if let Some(bucket) = &self.limits.bucket {
                    let waited = bucket.acquire().await;
                    Counters::add_wait(&self.stats.throttle_wait_us, waited);
                }
                let _in_flight = self.stats.enter();
                inc(&self.stats.requests);
                let sent_at = std::time::Instant::now();
                match rb.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let headers = resp.headers().clone();
                        match resp.bytes().await {
                            Ok(body) => {
                                self.stats.latency.record(sent_at.elapsed());
                                Ok(RawResponse {
                                    status,
                                    headers,
                                    body,
                                })
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            };

            let err = match outcome {
                Ok(r) => {
                    let code = r.code();
                    self.stats.status(code);
                    tracing::debug!(
                        op,
                        status = code,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "akeneo call"
                    );
                    if code == 401 && authenticated {
                        if !replayed && self.auth.can_renew() {
                            replayed = true;
                            inc(&self.stats.unauthorized_replays);
                            if let Some(t) = &token {
                                self.auth.invalidate(t.generation);
                            }
                            tracing::info!(
                                op,
                                "akeneo answered 401; renewing the token and replaying once"
                            );
                            continue;
                        }
                        return Err(r.into_error());
                    }
                    if code == 429 {
                        rate_limited += 1;
                        inc(&self.stats.rate_limited);
                        let wait = retry_after(&r.headers)
                            .min(Duration::from_millis(cfg.max_retry_after_ms));
                        if rate_limited > cfg.max_rate_limit_retries {
                            tracing::warn!(
                                op,
                                attempts = rate_limited,
                                "akeneo: still throttled, giving up"
                            );
                            return Err(AkeneoError::RateLimited { retry_after: wait });
                        }
                        tracing::debug!(
                            op,
                            wait_ms = wait.as_millis() as u64,
                            "akeneo 429; waiting Retry-After"
                        );
                        tokio::time::sleep(wait).await;
                        Counters::add_wait(&self.stats.rate_limit_wait_us, wait);
                        continue;
                    }
                    if code == 408 || r.status.is_server_error() {
                        // A 503 (or 408) may say when to come back: honour it like a 429's.
                        if r.headers.contains_key(RETRY_AFTER) {
                            asked_wait = Some(
                                retry_after(&r.headers)
                                    .min(Duration::from_millis(cfg.max_retry_after_ms)),
                            );
                        }
                        r.into_error()
                    } else {
                        return Ok(r);
                    }
                }
                Err(e) => {
                    inc(&self.stats.transport_errors);
                    if e.is_builder() {
                        return Err(AkeneoError::InvalidInput(format!("{op}: {e}")));
                    }
                    let message = transport_message(&e, timeout);
                    tracing::debug!(op, error = %message, "akeneo call failed");
                    AkeneoError::Transient {
                        status: None,
                        message,
                    }
                }
            };
            transient_failures += 1;
            if transient_failures > cfg.max_retries {
                tracing::warn!(op, attempts = transient_failures, error = %err, "akeneo: giving up after retries");
                return Err(err);
            }
            let delay = backoff(cfg.retry_base_ms, cfg.retry_max_ms, transient_failures)
                .max(asked_wait.unwrap_or(Duration::ZERO));
            tracing::debug!(op, attempt = transient_failures, delay_ms = delay.as_millis() as u64, error = %err, "akeneo: transient failure, retrying");
            inc(&self.stats.retries);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(RETRY_AFTER, HeaderValue::from_static("15"));
        assert_eq!(retry_after(&h), Duration::from_secs(15));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Duration::from_millis(500));
        let at = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap(),
        );
        let d = retry_after(&h);
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Duration::ZERO);
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(200, 10_000, attempt).as_millis() as u64;
            let full = (200u64 << (attempt - 1).min(30)).min(10_000);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_holds_the_rate() {
        let b = TokenBucket::new(10.0, 1.0);
        let start = tokio::time::Instant::now();
        for _ in 0..11 {
            b.acquire().await;
        }
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(990) && e < Duration::from_millis(1100),
            "{e:?}"
        );
    }
}
