//! The Akeneo PIM REST client of assetbridge.
//!
//! [`AkeneoClient`] talks to the real Akeneo REST API (SaaS and on-prem): Asset Manager assets
//! (batch upsert, list, get, delete), media file uploads, asset family structure (cached), option
//! creation, asset family administration (read and upsert families, attributes, options:
//! `family_admin`), and products (search by identifier or update date, NDJSON batch upsert).
//!
//! Every HTTP call goes through the same rules:
//! - **auth**: password grant with the Connection's credentials (or a fixed App token); the token
//!   is renewed before it expires with the refresh_token grant (password grant when the refresh is
//!   refused); one grant is shared by all concurrent callers; a 401 renews the token once and
//!   replays the request;
//! - **limits**: at most `max_concurrency` calls in flight (attempts of retries included), and at
//!   most `requests_per_second`;
//! - **retries**: 429 waits `Retry-After` (seconds or HTTP date, 1 s when absent; at most
//!   `max_rate_limit_retries` times); 408, 5xx, timeouts and dropped connections are retried with
//!   exponential backoff and jitter (at least the `Retry-After` of a 408/5xx that gives one),
//!   at most `max_retries` times; then the call fails with a
//!   typed [`AkeneoError`];
//! - every request has a timeout; logs (`tracing`) never contain tokens or passwords.

mod assets;
mod auth;
mod config;
mod error;
mod family_admin;
mod media;
mod products;
mod stats;
mod structure;
mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use url::Url;

pub use assets::{to_pim_asset, AssetQuery, DeleteOutcome, ItemFailure, ItemOutcome, ItemResult};
pub use config::{AkeneoConfig, MAX_BATCH, TOKEN_BODY_MAX_BYTES};
pub use error::AkeneoError;
pub use family_admin::Upserted;
pub use media::MEDIA_FILE_CODE_HEADER;
pub use products::{ProductLineResult, COLLECTION_CONTENT_TYPE, MAX_LINE_LEN};
pub use stats::ClientStats;

/// A client of one Akeneo PIM. Cheap to clone (all clones share the token, limits, caches and
/// counters).
#[derive(Clone)]
pub struct AkeneoClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: AkeneoConfig,
    pub http: reqwest::Client,
    /// The base URL, path ending without a slash.
    pub base: Url,
    pub token_url: Url,
    pub auth: auth::Auth,
    pub limits: transport::Limits,
    pub option_bucket: transport::TokenBucket,
    pub structures: Mutex<HashMap<String, Arc<structure::Slot>>>,
    /// Serialises option creation: concurrent batches that meet the same missing option create
    /// it once (the second finds it in the cache once it gets the lock).
    pub option_writes: tokio::sync::Mutex<()>,
    pub stats: stats::Counters,
}

impl std::fmt::Debug for AkeneoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkeneoClient")
            .field("url", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

impl AkeneoClient {
    /// Checks the configuration and builds the client. No request is sent (the first call
    /// fetches a token).
    pub fn new(config: AkeneoConfig) -> Result<Self, AkeneoError> {
        config.validate()?;
        let mut base = Url::parse(&config.url)
            .map_err(|e| AkeneoError::InvalidConfig(format!("akeneo.url: {e}")))?;
        base.set_query(None);
        base.set_fragment(None);
        {
            let mut p = base.path().trim_end_matches('/').to_owned();
            if p.is_empty() {
                p.push('/');
            }
            base.set_path(&p);
        }
        let token_url = join(&base, &["api", "oauth", "v1", "token"]);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.timeout_secs.clamp(1, 10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            .user_agent(concat!("assetbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AkeneoError::InvalidConfig(format!("HTTP client: {e}")))?;
        let limits = transport::Limits {
            semaphore: tokio::sync::Semaphore::new(config.max_concurrency),
            bucket: config
                .requests_per_second
                .map(|r| transport::TokenBucket::new(r, r)),
        };
        let option_bucket = transport::TokenBucket::new(config.option_writes_per_second, 1.0);
        Ok(Self {
            inner: Arc::new(Inner {
                auth: auth::Auth::new(config.app_token.clone()),
                config,
                http,
                base,
                token_url,
                limits,
                option_bucket,
                structures: Mutex::new(HashMap::new()),
                option_writes: tokio::sync::Mutex::new(()),
                stats: stats::Counters::default(),
            }),
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &AkeneoConfig {
        &self.inner.config
    }

    /// A snapshot of the client's counters (requests by status, retries, 429s, token grants and
    /// refreshes, time waited on rate limits, ...).
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }
}

/// `base` + path segments (each percent-encoded as one segment).
pub(crate) fn join(base: &Url, segments: &[&str]) -> Url {
    let mut u = base.clone();
    u.path_segments_mut()
        .expect("http(s) URL")
        .pop_if_empty()
        .extend(segments);
    u
}

impl Inner {
    /// `{base}/api/rest/v1/` + segments.
    pub(crate) fn api_url(&self, segments: &[&str]) -> Url {
        let mut all = vec!["api", "rest", "v1"];
        all.extend_from_slice(segments);
        join(&self.base, &all)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }

    /// A link the PIM gave (`_links.next.href`), pointed at the configured PIM origin so the
    /// token is never sent to another host.
    pub(crate) fn same_origin(&self, href: &str) -> Result<Url, AkeneoError> {
        let mut u = Url::parse(href)
            .or_else(|_| self.base.join(href))
            .map_err(|e| AkeneoError::Protocol {
                status: 200,
                message: format!("unreadable link `{href}`: {e}"),
            })?;
        if u.origin() != self.base.origin() {
            let _ = u.set_scheme(self.base.scheme());
            let _ = u.set_host(self.base.host_str());
            let _ = u.set_port(self.base.port());
        }
        Ok(u)
    }
}
