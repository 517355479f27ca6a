//! The client's configuration: the `[akeneo]` table of the config file.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::error::AkeneoError;

/// Size cap of the token request body, enforced by Akeneo (`CONTENT_MAX_SIZE = 200`).
pub const TOKEN_BODY_MAX_BYTES: usize = 200;

/// The most items Akeneo accepts in one batch PATCH (assets and products).
pub const MAX_BATCH: usize = 100;

/// Connection settings and limits of the Akeneo client; also the `[akeneo]` table of the config
/// file. Unknown keys are refused.
///
/// Either a fixed App token (`app_token`) or the four Connection credentials (`client_id`,
/// `secret`, `username`, `password`) must be given.
///
/// ```toml
/// [akeneo]
/// url = "https://acme.cloud.akeneo.com"
/// client_id = "1_abc"
/// secret = "..."
/// username = "dam_connector_1234"
/// password = "..."
/// max_concurrency = 4
/// requests_per_second = 100    # 0 = no ceiling
/// create_missing_options = ["colors"]   # or true / false
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkeneoConfig {
    /// Base URL of the PIM, e.g. `"https://acme.cloud.akeneo.com"` (no `/api/...` suffix; a path
    /// prefix is kept when the PIM is served under one). Required.
    pub url: String,
    /// Client ID of the Connection. Required unless `app_token` is set. Default: empty.
    #[serde(default)]
    pub client_id: String,
    /// Secret of the Connection. Required unless `app_token` is set. Default: empty.
    #[serde(default = "empty_secret")]
    pub secret: SecretString,
    /// Username of the Connection's API user. Required unless `app_token` is set. Default: empty.
    #[serde(default)]
    pub username: String,
    /// Password of the Connection's API user. Required unless `app_token` is set. Default: empty.
    #[serde(default = "empty_secret")]
    pub password: SecretString,
    /// A fixed Akeneo App access token (no expiry, no refresh). When set, the password grant is
    /// never used and the four credentials above may be left out. Default: none.
    #[serde(default)]
    pub app_token: Option<SecretString>,
    /// At most this many HTTP calls in flight at once, retries included (Akeneo SaaS allows 4
    /// per connection). Default: 4.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Ceiling on requests per second (Akeneo SaaS: 100/s per instance); bursts up to one
    /// second's worth are allowed. `0` in the config file (or `None`) means no ceiling.
    /// Default: 100.
    #[serde(
        default = "default_requests_per_second",
        deserialize_with = "de_requests_per_second"
    )]
    pub requests_per_second: Option<f64>,
    /// Timeout of one HTTP request (connect + send + whole response), in seconds. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Timeout of one media file upload, in seconds (uploads can be large). Default: 600.
    #[serde(default = "default_media_timeout_secs")]
    pub media_timeout_secs: u64,
    /// How many times a request is retried after a transient failure (408, 5xx, timeout, dropped
    /// connection) before the call fails with [`AkeneoError::Transient`]. Default: 6.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// How many 429 answers one request may receive before the call fails with
    /// [`AkeneoError::RateLimited`] (counted separately from `max_retries`). Default: 20.
    #[serde(default = "default_max_rate_limit_retries")]
    pub max_rate_limit_retries: u32,
    /// First backoff delay after a transient failure, in milliseconds; doubled per attempt, with
    /// jitter. Default: 200.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest backoff delay after a transient failure, in milliseconds. Default: 10000.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Upper bound of one wait on a 429's `Retry-After`, in milliseconds (a longer announced
    /// wait is cut to this, then the request is tried again). Default: 60000.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// How long a fetched asset family structure (attributes, options) is reused, in seconds.
    /// Default: 600.
    #[serde(default = "default_structure_ttl_secs")]
    pub structure_ttl_secs: u64,
    /// When an upsert meets an attribute or option the cached structure does not know, and the
    /// cached structure is older than this many seconds, the structure is fetched again before
    /// the asset is refused (the family may have changed in the PIM). Default: 30.
    #[serde(default = "default_structure_recheck_secs")]
    pub structure_recheck_secs: u64,
    /// Attribute codes whose missing option codes are created in the PIM (instead of failing
    /// the asset) when an upsert references them. `["*"]` (or `true` in the config file) means
    /// every option attribute; `false` means none. Default: empty (never create options).
    #[serde(default, deserialize_with = "de_create_missing_options")]
    pub create_missing_options: Vec<String>,
    /// Ceiling on option creations per second (Akeneo limits option writes to 3/s).
    /// Default: 3.
    #[serde(default = "default_option_writes_per_second")]
    pub option_writes_per_second: f64,
    /// Largest media file accepted by [`upload_media_file`](crate::AkeneoClient::upload_media_file),
    /// in bytes. Default: 104857600 (100 MB).
    #[serde(default = "default_media_max_bytes")]
    pub media_max_bytes: u64,
    /// Assets (or product lines) per batch PATCH, 1 to 100. Default: 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The product identifier attribute used by
    /// [`products_by_identifiers`](crate::AkeneoClient::products_by_identifiers). Default: `"sku"`.
    #[serde(default = "default_product_identifier_attribute")]
    pub product_identifier_attribute: String,
    /// **Benchmark baseline only — never set it in production.** Every API call gets a new
    /// token from its own password grant (no caching, no refresh), as the per-event serverless
    /// designs do; with `batch_size = 1` this is the per-asset baseline the benchmark harness
    /// (`crates/bench`) compares the connector with. Deliberately not in the configuration
    /// reference. Default: false.
    #[serde(default)]
    #[doc(hidden)]
    pub fresh_token_per_request: bool,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}
fn default_max_concurrency() -> usize {
    4
}
fn default_requests_per_second() -> Option<f64> {
    Some(100.0)
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_media_timeout_secs() -> u64 {
    600
}
fn default_max_retries() -> u32 {
    6
}
fn default_max_rate_limit_retries() -> u32 {
    20
}
fn default_retry_base_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    10_000
}
fn default_max_retry_after_ms() -> u64 {
    60_000
}
fn default_structure_ttl_secs() -> u64 {
    600
}
fn default_structure_recheck_secs() -> u64 {
    30
}
fn default_option_writes_per_second() -> f64 {
    3.0
}
fn default_media_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_batch_size() -> usize {
    MAX_BATCH
}
fn default_product_identifier_attribute() -> String {
    "sku".into()
}

fn de_requests_per_second<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<f64>::deserialize(d)?;
    Ok(v.filter(|r| *r > 0.0))
}

fn de_create_missing_options<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        All(bool),
        List(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::All(true) => vec!["*".into()],
        Either::All(false) => Vec::new(),
        Either::List(l) => l,
    })
}

impl AkeneoConfig {
    /// A configuration for a Connection (password grant), every other field at its default.
    pub fn new(
        url: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            secret: SecretString::from(secret.into()),
            username: username.into(),
            password: SecretString::from(password.into()),
            app_token: None,
            max_concurrency: default_max_concurrency(),
            requests_per_second: default_requests_per_second(),
            timeout_secs: default_timeout_secs(),
            media_timeout_secs: default_media_timeout_secs(),
            max_retries: default_max_retries(),
            max_rate_limit_retries: default_max_rate_limit_retries(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            structure_ttl_secs: default_structure_ttl_secs(),
            structure_recheck_secs: default_structure_recheck_secs(),
            create_missing_options: Vec::new(),
            option_writes_per_second: default_option_writes_per_second(),
            media_max_bytes: default_media_max_bytes(),
            batch_size: default_batch_size(),
            product_identifier_attribute: default_product_identifier_attribute(),
            fresh_token_per_request: false,
        }
    }

    /// A configuration using a fixed App token, every other field at its default.
    pub fn with_app_token(url: impl Into<String>, token: impl Into<String>) -> Self {
        let mut c = Self::new(url, "", "", "", "");
        c.app_token = Some(SecretString::from(token.into()));
        c
    }

    /// Whether missing options of `attribute` may be created (see `create_missing_options`).
    pub fn creates_options_for(&self, attribute: &str) -> bool {
        self.create_missing_options
            .iter()
            .any(|a| a == "*" || a == attribute)
    }

    /// Checks the configuration; [`AkeneoClient::new`](crate::AkeneoClient::new) calls this.
    pub fn validate(&self) -> Result<(), AkeneoError> {
        let bad = |m: String| Err(AkeneoError::InvalidConfig(m));
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return bad(format!(
                    "akeneo.url: scheme `{}` is not http(s)",
                    u.scheme()
                ))
            }
            Err(e) => return bad(format!("akeneo.url `{}`: {e}", self.url)),
        }
        if self.app_token.is_none() {
            for (name, empty) in [
                ("client_id", self.client_id.is_empty()),
                ("secret", self.secret.expose_secret().is_empty()),
                ("username", self.username.is_empty()),
                ("password", self.password.expose_secret().is_empty()),
            ] {
                if empty {
                    return bad(format!(
                        "akeneo.{name} is required (or set akeneo.app_token)"
                    ));
                }
            }
            let body = crate::auth::password_grant_body(&self.username, &self.password);
            if body.len() > TOKEN_BODY_MAX_BYTES {
                return bad(format!(
                    "akeneo.username and akeneo.password are too long: the token request body would be {} bytes, Akeneo accepts at most {TOKEN_BODY_MAX_BYTES}",
                    body.len()
                ));
            }
        } else if self
            .app_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
        {
            return bad("akeneo.app_token is empty".into());
        }
        if self.max_concurrency == 0 {
            return bad("akeneo.max_concurrency must be at least 1".into());
        }
        if let Some(r) = self.requests_per_second {
            if !r.is_finite() || r <= 0.0 {
                return bad("akeneo.requests_per_second must be positive".into());
            }
        }
        if !self.option_writes_per_second.is_finite() || self.option_writes_per_second <= 0.0 {
            return bad("akeneo.option_writes_per_second must be positive".into());
        }
        if self.timeout_secs == 0 || self.media_timeout_secs == 0 {
            return bad("akeneo.timeout_secs and media_timeout_secs must be at least 1".into());
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return bad(format!("akeneo.batch_size must be 1 to {MAX_BATCH}"));
        }
        if self.retry_max_ms < self.retry_base_ms {
            return bad("akeneo.retry_max_ms must be at least retry_base_ms".into());
        }
        if self.product_identifier_attribute.is_empty() {
            return bad("akeneo.product_identifier_attribute is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_table_with_defaults() {
        let c: AkeneoConfig = serde_json::from_value(serde_json::json!({
            "url": "https://acme.cloud.akeneo.com",
            "client_id": "id", "secret": "s", "username": "u", "password": "p",
            "requests_per_second": 0,
            "create_missing_options": true
        }))
        .unwrap();
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.requests_per_second, None);
        assert_eq!(c.timeout_secs, 30);
        assert_eq!(c.max_retries, 6);
        assert_eq!(c.structure_ttl_secs, 600);
        assert_eq!(c.media_max_bytes, 100 * 1024 * 1024);
        assert!(c.creates_options_for("anything"));
        c.validate().unwrap();
        let d = AkeneoConfig::new("http://x", "a", "b", "c", "d");
        assert_eq!(d.requests_per_second, Some(100.0));
        assert!(!d.creates_options_for("colors"));
    }

    #[test]
    fn unknown_keys_and_missing_credentials_are_refused() {
        let e = serde_json::from_value::<AkeneoConfig>(serde_json::json!({
            "url": "http://x", "typo": 1
        }));
        assert!(e.is_err());
        let c: AkeneoConfig =
            serde_json::from_value(serde_json::json!({"url": "http://x"})).unwrap();
        assert!(
            matches!(c.validate(), Err(AkeneoError::InvalidConfig(m)) if m.contains("client_id"))
        );
        let c = AkeneoConfig::with_app_token("http://x", "tok");
        c.validate().unwrap();
    }

    #[test]
    fn token_body_cap_is_checked() {
        let c = AkeneoConfig::new("http://x", "a", "b", "u".repeat(100), "p".repeat(100));
        assert!(matches!(c.validate(), Err(AkeneoError::InvalidConfig(m)) if m.contains("200")));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = AkeneoConfig::new("http://x", "id", "topsecret", "u", "hunter2");
        let s = format!("{c:?}");
        assert!(!s.contains("topsecret") && !s.contains("hunter2"), "{s}");
    }
}
