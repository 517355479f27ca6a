//! Adobe IMS OAuth server-to-server (client credentials) tokens.
//!
//! `POST {token_url}` with a form-urlencoded body
//! `grant_type=client_credentials&client_id=..&client_secret=..&scope=<comma-joined scopes>`
//! answers `{"access_token", "token_type", "expires_in"}` (`expires_in` in **seconds**, about
//! 24 h). There is no refresh token: the client simply asks again.
//!
//! [`ImsClient`] caches the token until `expires_in - refresh_margin_secs` (so a thousand events
//! cost one token), lets only one caller refresh at a time (the others wait for its result),
//! retries 5xx / 429 / network errors a bounded number of times, and can drop its token when an
//! API answers 401 ([`ImsClient::invalidate_token`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::retry;

/// Adobe's IMS v3 token endpoint (North America; the one Adobe's guides use).
pub const DEFAULT_IMS_TOKEN_URL: &str = "https://ims-na1.adobelogin.com/ims/token/v3";

fn default_token_url() -> String {
    DEFAULT_IMS_TOKEN_URL.to_owned()
}
fn default_refresh_margin_secs() -> u64 {
    300
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    500
}

/// How to obtain IMS tokens (an OAuth Server-to-Server credential of a Developer Console
/// project).
#[derive(Debug, Clone, Deserialize)]
pub struct ImsConfig {
    /// Token endpoint. Default: `https://ims-na1.adobelogin.com/ims/token/v3`.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// The credential's client id (also the default `X-Api-Key` of Adobe APIs).
    pub client_id: String,
    /// The credential's client secret. Never logged.
    pub client_secret: SecretString,
    /// Scopes, sent comma-joined (e.g. `openid`, `AdobeID`, `aem.assets.author`, `aem.folders`).
    /// Default: none (the `scope` parameter is then left out).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A token is renewed this many seconds before it expires. Default: 300.
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
    /// Timeout of one token request, connection included. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries after a 5xx, 429 or network error (so at most `1 + max_retries` requests).
    /// Default: 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff before a retry, doubled each time (capped at 30 s). Default: 500.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

impl ImsConfig {
    /// A configuration with every default, for the given credential.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            token_url: default_token_url(),
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            scopes,
            refresh_margin_secs: default_refresh_margin_secs(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
        }
    }
}

/// Errors from IMS.
#[derive(Debug, thiserror::Error)]
pub enum ImsError {
    /// The configuration cannot work (bad token URL, empty client id, ...).
    #[error("IMS configuration: {0}")]
    Config(String),
    /// IMS refused the credential: an OAuth2 error (`invalid_client`, `invalid_scope`, ...).
    /// Not retried: fix the configuration.
    #[error("IMS refused the token request ({status}): {error}: {description}")]
    Rejected {
        status: u16,
        /// OAuth2 `error` code (`invalid_client`, `invalid_scope`, ...), or `http_<status>`
        /// when the body was not an OAuth2 error.
        error: String,
        /// OAuth2 `error_description`, or the start of the body.
        description: String,
    },
    /// IMS kept answering 5xx / 429 after every retry.
    #[error("IMS unavailable ({status}) after {attempts} attempts: {detail}")]
    Unavailable {
        status: u16,
        attempts: u32,
        detail: String,
    },
    /// IMS could not be reached (connection, timeout) after every retry.
    #[error("IMS request failed after {attempts} attempts: {detail}")]
    Transport { attempts: u32, detail: String },
    /// A 200 answer that is not a token.
    #[error("IMS answered an unexpected body: {0}")]
    InvalidResponse(String),
}

impl ImsError {
    /// True when asking again later may succeed (IMS down, network), false when the credential
    /// or configuration is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ImsError::Unavailable { .. }
                | ImsError::Transport { .. }
                | ImsError::InvalidResponse(_)
        )
    }
}

/// An IMS access token. `Debug` never shows the token.
#[derive(Clone)]
pub struct ImsToken {
    value: SecretString,
    serial: u64,
    expires_in: Duration,
    refresh_at: Instant,
}

impl ImsToken {
    /// The bearer token, for an `Authorization: Bearer ...` header.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }
    /// Which fetch produced the token (1 for the first one); see [`ImsClient::invalidate_token`].
    pub fn serial(&self) -> u64 {
        self.serial
    }
    /// The lifetime IMS announced (`expires_in`).
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
    fn is_fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

impl std::fmt::Debug for ImsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImsToken")
            .field("value", &"[REDACTED]")
            .field("serial", &self.serial)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type: Option<String>,
    expires_in: serde_json::Value,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A cached, single-flight IMS token source. Share it (`Arc`) between the clients that use the
/// same credential (Assets Author API, journal).
pub struct ImsClient {
    config: ImsConfig,
    token_url: Url,
    http: reqwest::Client,
    cached: parking_lot::Mutex<Option<ImsToken>>,
    refresh: tokio::sync::Mutex<()>,
    fetched: AtomicU64,
}

impl std::fmt::Debug for ImsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImsClient")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.config.client_id)
            .field("tokens_fetched", &self.tokens_fetched())
            .finish()
    }
}

impl ImsClient {
    /// A client with its own HTTP client (timeout from the configuration).
    pub fn new(config: ImsConfig) -> Result<Self, ImsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| ImsError::Config(format!("HTTP client: {e}")))?;
        Self::with_http_client(config, http)
    }

    /// A client using the given HTTP client (which should carry a timeout).
    pub fn with_http_client(config: ImsConfig, http: reqwest::Client) -> Result<Self, ImsError> {
        let token_url = Url::parse(&config.token_url)
            .map_err(|e| ImsError::Config(format!("token_url `{}`: {e}", config.token_url)))?;
        if !matches!(token_url.scheme(), "https" | "http") {
            return Err(ImsError::Config(format!(
                "token_url `{token_url}` must be http(s)"
            )));
        }
        if config.client_id.trim().is_empty() {
            return Err(ImsError::Config("client_id is empty".into()));
        }
        if config.client_secret.expose_secret().is_empty() {
            return Err(ImsError::Config("client_secret is empty".into()));
        }
        Ok(Self {
            config,
            token_url,
            http,
            cached: parking_lot::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            fetched: AtomicU64::new(0),
        })
    }

    /// The credential's client id.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// How many tokens this client obtained from IMS so far.
    pub fn tokens_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// A valid token: the cached one while it is fresh, else a new one. Concurrent callers share
    /// one refresh.
    pub async fn token(&self) -> Result<ImsToken, ImsError> {
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        let _guard = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(t) = self.fresh_cached() {
            return Ok(t);
        }
        let token = self.fetch().await?;
        *self.cached.lock() = Some(token.clone());
        Ok(token)
    }

    /// Forgets the cached token, whatever it is: the next [`token`](Self::token) asks IMS.
    pub fn invalidate(&self) {
        *self.cached.lock() = None;
    }

    /// Forgets the cached token only if it is still `stale` (the one an API just refused with
    /// 401). When many requests fail with the same token at once, only the first one causes a
    /// new token to be fetched.
    pub fn invalidate_token(&self, stale: &ImsToken) {
        let mut cached = self.cached.lock();
        if cached.as_ref().is_some_and(|t| t.serial == stale.serial) {
            *cached = None;
        }
    }

    fn fresh_cached(&self) -> Option<ImsToken> {
        self.cached
            .lock()
            .as_ref()
            .filter(|t| t.is_fresh())
            .cloned()
    }

    async fn fetch(&self) -> Result<ImsToken, ImsError> {
        let scope = self.config.scopes.join(",");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope.as_str()));
        }
        let initial = Duration::from_millis(self.config.retry_backoff_ms);
        let attempts = self.config.max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(self.token_url.clone())
                .header(http::header::ACCEPT, "application/json")
                .form(&form)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    if attempt < attempts {
                        tracing::warn!(attempt, error = %e, "IMS token request failed; retrying");
                        tokio::time::sleep(retry::backoff(initial, attempt - 1)).await;
                        continue;
                    }
                    return Err(ImsError::Transport {
                        attempts: attempt,
                        detail: e.to_string(),
                    });
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            if status.is_success() {
                return self.token_from(&body);
            }
            let text = String::from_utf8_lossy(&body);
            if status.as_u16() == 429 || status.is_server_error() {
                if attempt < attempts {
                    tracing::warn!(attempt, %status, "IMS unavailable; retrying");
                    tokio::time::sleep(retry::wait_before_retry(
                        Some(&headers),
                        initial,
                        attempt - 1,
                    ))
                    .await;
                    continue;
                }
                return Err(ImsError::Unavailable {
                    status: status.as_u16(),
                    attempts: attempt,
                    detail: truncate(&text, 300),
                });
            }
            return Err(match serde_json::from_slice::<OAuthError>(&body) {
                Ok(e) => ImsError::Rejected {
                    status: status.as_u16(),
                    error: e.error,
                    description: e.error_description.unwrap_or_default(),
                },
                Err(_) => ImsError::Rejected {
                    status: status.as_u16(),
                    error: format!("http_{}", status.as_u16()),
                    description: truncate(&text, 300),
                },
            });
        }
    }

    fn token_from(&self, body: &[u8]) -> Result<ImsToken, ImsError> {
        let r: TokenResponse = serde_json::from_slice(body).map_err(|e| {
            ImsError::InvalidResponse(format!(
                "{e}: {}",
                truncate(&String::from_utf8_lossy(body), 200)
            ))
        })?;
        if r.access_token.is_empty() {
            return Err(ImsError::InvalidResponse("empty access_token".into()));
        }
        let expires_in = match &r.expires_in {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| ImsError::InvalidResponse(format!("expires_in: {}", r.expires_in)))?;
        let margin = self.config.refresh_margin_secs;
        // A token shorter-lived than the margin is used for half its life rather than never.
        let usable = if expires_in > margin {
            expires_in - margin
        } else {
            expires_in / 2
        };
        let serial = self.fetched.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(serial, expires_in, "obtained an IMS token");
        Ok(ImsToken {
            value: SecretString::from(r.access_token),
            serial,
            expires_in: Duration::from_secs(expires_in),
            refresh_at: Instant::now() + Duration::from_secs(usable),
        })
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_the_secret() {
        let c = ImsConfig::new("id", "s3cr3t-value", vec!["openid".into()]);
        let d = format!("{c:?}");
        assert!(!d.contains("s3cr3t-value"), "{d}");
        assert_eq!(c.token_url, DEFAULT_IMS_TOKEN_URL);
        assert_eq!(c.refresh_margin_secs, 300);
    }

    #[test]
    fn config_is_checked() {
        let mut c = ImsConfig::new("", "x", vec![]);
        assert!(matches!(
            ImsClient::new(c.clone()),
            Err(ImsError::Config(_))
        ));
        c.client_id = "id".into();
        c.token_url = "ftp://x".into();
        assert!(matches!(ImsClient::new(c), Err(ImsError::Config(_))));
    }

    #[test]
    fn token_lifetime_keeps_the_margin() {
        let ims = ImsClient::new(ImsConfig::new("id", "s", vec![])).unwrap();
        let t = ims
            .token_from(br#"{"access_token":"abc","token_type":"bearer","expires_in":86399}"#)
            .unwrap();
        assert_eq!(t.expose(), "abc");
        assert!(t.is_fresh());
        assert!(!format!("{t:?}").contains("abc"));
        // Shorter than the margin: half its life.
        let t = ims
            .token_from(br#"{"access_token":"abc","expires_in":"0"}"#)
            .unwrap();
        assert!(!t.is_fresh());
        assert!(ims.token_from(br#"{"access_token":"abc"}"#).is_err());
        assert!(ims.token_from(b"<html>").is_err());
    }
}
