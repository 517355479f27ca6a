//! The generic REST DAM adapter: every DAM differs, so the adapter is configuration, not code
//! per DAM.
//!
//! [`RestDam::changes`] lists what changed since a time, page by page, following the DAM's own
//! paging style ([`Paging`]), reading each item with configured JSON pointers
//! ([`RestDamConfig::parse_item`]); [`RestDam::get_asset`] reads one asset;
//! [`RestDam::fetch_file`] streams a file (for media uploads). Every request has a timeout;
//! `429` (honouring `Retry-After`), `5xx`, timeouts and connection failures are retried with
//! bounded exponential backoff.
//!
//! The configuration is the `[dam]` table of the config file:
//!
//! ```toml
//! [dam]
//! type = "rest"
//! base_url = "https://dam.example.com"
//! list_path = "/api/assets"
//! auth = { type = "bearer", token = "${DAM_TOKEN}" }
//! paging = { type = "cursor", cursor_param = "cursor", next_cursor_pointer = "/next_cursor" }
//! items_pointer = "/items"
//! id_pointer = "/id"
//! updated_pointer = "/updated_at"
//! deleted_pointer = "/deleted"
//! ```

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use assetbridge_core::{ChangeKind, Cursor, DamAsset};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LINK, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use url::Url;

use crate::record::{
    default_deleted_pointer, default_id_pointer, default_updated_pointer,
    deserialize_optional_pointer, kind, CompiledShape, RecordError, RecordShape,
};

/// The kind of DAM adapter: `type = "rest"` (the only one so far; may be omitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestKind {
    /// The generic REST adapter.
    #[default]
    Rest,
}

/// How the adapter authenticates. In TOML: `auth = { type = "none" }`,
/// `auth = { type = "bearer", token = "..." }` or
/// `auth = { type = "api_key", header = "X-Api-Key", key = "..." }`. Default: `none`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DamAuth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (secret).
        token: SecretString,
    },
    /// `<header>: <key>`.
    ApiKey {
        /// The header name. Default: `X-Api-Key`.
        #[serde(default = "default_api_key_header")]
        header: String,
        /// The key (secret).
        key: SecretString,
    },
}

fn default_api_key_header() -> String {
    "X-Api-Key".to_owned()
}

/// How `since` is written in the query. Default: `rfc3339`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinceFormat {
    /// `2026-01-01T00:00:00Z` (fractional seconds only when present).
    #[default]
    Rfc3339,
    /// Whole unix seconds (rounded down, so nothing at the boundary is missed).
    UnixSeconds,
    /// Unix milliseconds.
    UnixMillis,
}

/// The DAM's paging style. In TOML: `paging = { type = "page_number", page_param = "page",
/// first_page = 1 }`, `paging = { type = "cursor", cursor_param = "cursor",
/// next_cursor_pointer = "/next_cursor" }` or `paging = { type = "link_header" }`.
/// Default: `cursor` with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// `?page=n`. A page shorter than `page_size` (or empty) is the last one, so `page_size`
    /// must not exceed the DAM's own maximum page size.
    ///
    /// A page number is an offset, which shifts when an asset of a page already read changes
    /// (it moves to the end of the listing) or is deleted: the asset that slides onto the page
    /// already read would never be listed, and the poll cursor would move past it. So after
    /// each full page the adapter asks again from page `first_page` with `since` moved up to
    /// the time of the last item it delivered (the listing is ordered by `updated` and `since`
    /// is inclusive), dropping the items of that time it already delivered — by id, so items
    /// sharing one time may come in any order (numeric ids, a case-insensitive collation): a
    /// keyset listing built from `since`. Only a run of more than `page_size` items sharing one
    /// time is still paged by offset within that time.
    PageNumber {
        /// Default: `page`.
        #[serde(default = "default_page_param")]
        page_param: String,
        /// Number of the first page. Default: 1.
        #[serde(default = "default_first_page")]
        first_page: u64,
    },
    /// `?cursor=<token>`, the token read from each response; listing ends when it is null,
    /// absent or empty.
    Cursor {
        /// Default: `cursor`.
        #[serde(default = "default_cursor_param")]
        cursor_param: String,
        /// JSON pointer to the next cursor in the response body. Default: `/next_cursor`.
        #[serde(default = "default_next_cursor_pointer")]
        next_cursor_pointer: String,
    },
    /// The `Link: <url>; rel="next"` response header (RFC 8288), resolved against the request
    /// URL. A next link to another origin is refused (credentials are never sent elsewhere).
    LinkHeader,
}

impl Default for Paging {
    fn default() -> Self {
        Paging::Cursor {
            cursor_param: default_cursor_param(),
            next_cursor_pointer: default_next_cursor_pointer(),
        }
    }
}

fn default_page_param() -> String {
    "page".to_owned()
}
fn default_first_page() -> u64 {
    1
}
fn default_cursor_param() -> String {
    "cursor".to_owned()
}
fn default_next_cursor_pointer() -> String {
    "/next_cursor".to_owned()
}
fn default_list_path() -> String {
    "/api/assets".to_owned()
}
fn default_since_param() -> String {
    "updated_since".to_owned()
}
fn default_limit_param() -> String {
    "limit".to_owned()
}
fn default_page_size() -> u32 {
    100
}
fn default_items_pointer() -> String {
    "/items".to_owned()
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    250
}

/// The `[dam]` table of the config file (`type = "rest"`). Unknown keys are refused.
///
/// The record shape (`id_pointer`, `updated_pointer`, `deleted_pointer`) is the same as
/// [`RecordShape`]'s, repeated here as plain keys because serde cannot flatten into a table that
/// refuses unknown keys; [`RestDamConfig::record_shape`] gives it back as one value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestDamConfig {
    /// `"rest"`. Optional.
    #[serde(rename = "type", default)]
    pub kind: RestKind,
    /// The DAM's base URL, `http` or `https`, e.g. `https://dam.example.com/v2`. Required.
    pub base_url: String,
    /// Path of the listing, appended to `base_url`. Default: `/api/assets`.
    #[serde(default = "default_list_path")]
    pub list_path: String,
    /// Path of one asset, appended to `base_url`, `{id}` replaced by the percent-encoded id.
    /// Default: `<list_path>/{id}`.
    #[serde(default)]
    pub asset_path: Option<String>,
    /// JSON pointer to the record in the body of `asset_path`; `""` = the body is the record.
    /// Default: `""`.
    #[serde(default)]
    pub asset_pointer: String,
    /// Authentication. Default: none.
    #[serde(default)]
    pub auth: DamAuth,
    /// Query parameter carrying "changed since" (inclusive). Default: `updated_since`.
    #[serde(default = "default_since_param")]
    pub since_param: String,
    /// How the since value is written. Default: `rfc3339`.
    #[serde(default)]
    pub since_format: SinceFormat,
    /// Query parameter carrying the page size. Default: `limit`.
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// Items asked per page (at most one page is held in memory, plus one fetched ahead).
    /// Default: 100.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The paging style. Default: `cursor` (`cursor` / `/next_cursor`).
    #[serde(default)]
    pub paging: Paging,
    /// JSON pointer to the items array in a listing response; `""` = the body is the array.
    /// Default: `/items`.
    #[serde(default = "default_items_pointer")]
    pub items_pointer: String,
    /// JSON pointer to an item's id. Default: `/id`.
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    /// JSON pointer to an item's last-change time (RFC 3339, or unix seconds/millis — detected).
    /// Default: `/updated_at`.
    #[serde(default = "default_updated_pointer")]
    pub updated_pointer: String,
    /// JSON pointer to a deletion marker; a truthy value makes the item a deletion (see
    /// [`RecordShape::deleted_pointer`]). `""` = items are never deletions.
    /// Default: `/deleted`.
    #[serde(
        default = "default_deleted_pointer",
        deserialize_with = "deserialize_optional_pointer"
    )]
    pub deleted_pointer: Option<String>,
    /// Query parameter filtering the listing by family, for [`RestDam::family_query`].
    /// Default: none.
    #[serde(default)]
    pub family_param: Option<String>,
    /// Query parameters added to every listing request. Default: none.
    #[serde(default)]
    pub extra_query: BTreeMap<String, String>,
    /// Timeout of each request (and of each read of a file download), in seconds. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries of a request answered `429` / `5xx` / timed out / not connected. Default: 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay in milliseconds, doubled at each retry (capped at 30 s, with jitter);
    /// a `429`'s `Retry-After` takes precedence (capped at 60 s). Default: 250.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

impl RestDamConfig {
    /// A configuration with every default, for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            kind: RestKind::Rest,
            base_url: base_url.into(),
            list_path: default_list_path(),
            asset_path: None,
            asset_pointer: String::new(),
            auth: DamAuth::None,
            since_param: default_since_param(),
            since_format: SinceFormat::default(),
            limit_param: default_limit_param(),
            page_size: default_page_size(),
            paging: Paging::default(),
            items_pointer: default_items_pointer(),
            id_pointer: default_id_pointer(),
            updated_pointer: default_updated_pointer(),
            deleted_pointer: default_deleted_pointer(),
            family_param: None,
            extra_query: BTreeMap::new(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
        }
    }

    /// The record shape: where the id, timestamp and deletion marker are.
    pub fn record_shape(&self) -> RecordShape {
        RecordShape {
            id_pointer: self.id_pointer.clone(),
            updated_pointer: self.updated_pointer.clone(),
            deleted_pointer: self.deleted_pointer.clone(),
        }
    }

    /// Reads one item with the configured pointers (see [`RecordShape::parse_item`]).
    pub fn parse_item(&self, item: &Value) -> Result<ChangeKind, DamError> {
        Ok(self.record_shape().parse_item(item)?)
    }

    /// Checks everything that can be checked without calling the DAM.
    pub fn validate(&self) -> Result<(), DamError> {
        let cfg = |m: String| Err(DamError::Config(m));
        match Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => return cfg(format!("`base_url` must be an http(s) URL, got `{u}`")),
            Err(e) => {
                return cfg(format!(
                    "`base_url` is not a URL ({e}): `{}`",
                    self.base_url
                ))
            }
        }
        if self.page_size == 0 {
            return cfg("`page_size` must be at least 1".into());
        }
        if self.timeout_secs == 0 {
            return cfg("`timeout_secs` must be at least 1".into());
        }
        for (name, value) in [
            ("since_param", &self.since_param),
            ("limit_param", &self.limit_param),
        ] {
            if value.is_empty() {
                return cfg(format!("`{name}` must not be empty"));
            }
        }
        let mut pointers = vec![
            ("items_pointer", self.items_pointer.as_str(), true),
            ("asset_pointer", self.asset_pointer.as_str(), true),
            ("id_pointer", self.id_pointer.as_str(), false),
            ("updated_pointer", self.updated_pointer.as_str(), false),
        ];
        if let Some(p) = &self.deleted_pointer {
            pointers.push(("deleted_pointer", p, false));
        }
        match &self.paging {
            Paging::Cursor {
                cursor_param,
                next_cursor_pointer,
            } => {
                if cursor_param.is_empty() {
                    return cfg("`paging.cursor_param` must not be empty".into());
                }
                pointers.push(("paging.next_cursor_pointer", next_cursor_pointer, false));
            }
            Paging::PageNumber { page_param, .. } if page_param.is_empty() => {
                return cfg("`paging.page_param` must not be empty".into());
            }
            _ => {}
        }
        for (name, p, empty_ok) in pointers {
            if !(p.starts_with('/') || (empty_ok && p.is_empty())) {
                return cfg(format!(
                    "`{name}` must be a JSON pointer starting with `/`{}, got `{p}`",
                    if empty_ok { " (or \"\")" } else { "" }
                ));
            }
        }
        if let Some(path) = &self.asset_path {
            if !path.contains("{id}") {
                return cfg(format!("`asset_path` must contain `{{id}}`, got `{path}`"));
            }
        }
        auth_headers(&self.auth)?;
        Ok(())
    }
}

/// Errors of the REST DAM adapter.
#[derive(Debug, thiserror::Error)]
pub enum DamError {
    /// The DAM answered with an error status that retrying will not fix (or kept answering
    /// `429` past the retries).
    #[error("DAM answered {status} for {url}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The request URL without its query string.
        url: String,
        /// The DAM's message (the start of its response body).
        message: String,
    },
    /// The DAM stayed unavailable (`5xx`, timeouts, connection failures) for every attempt.
    #[error("DAM unavailable for {url} after {attempts} attempt(s): {detail}")]
    Transient {
        /// The request URL without its query string.
        url: String,
        /// Attempts made (`1 + max_retries`).
        attempts: u32,
        /// The last failure.
        detail: String,
    },
    /// A response did not have the configured shape; `pointer` is the configured JSON pointer
    /// that was missing or held the wrong thing.
    #[error("unexpected DAM response: {what} at JSON pointer `{pointer}`: {detail}")]
    Parse {
        /// What was looked for (`items array`, `asset id`, `updated timestamp`, ...).
        what: String,
        /// The configured JSON pointer (`""` = the whole body).
        pointer: String,
        /// What was found instead, and where (item and page).
        detail: String,
    },
    /// The configuration is unusable.
    #[error("DAM configuration: {0}")]
    Config(String),
    /// The DAM's paging went wrong (a page repeated, a next link to another origin...).
    #[error("DAM paging: {0}")]
    Paging(String),
}

impl DamError {
    /// Whether trying again later may succeed (unavailability, rate limits).
    pub fn is_transient(&self) -> bool {
        match self {
            DamError::Transient { .. } => true,
            DamError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<RecordError> for DamError {
    fn from(e: RecordError) -> Self {
        DamError::Parse {
            what: e.what,
            pointer: e.pointer,
            detail: e.detail,
        }
    }
}

/// One page of changes, in the DAM's `(updated_at, id)` order.
#[derive(Debug, Clone, PartialEq)]
pub struct DamPage {
    /// The page's items: upserts (the whole DAM record) and deletions.
    pub changes: Vec<ChangeKind>,
    /// The cursor `(updated_at, id)` of the page's last item that has a timestamp: once the
    /// page is durable, a poller may resume after it.
    pub last: Option<Cursor>,
}

/// A file download: the bytes as they arrive.
pub type FileStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The generic REST DAM client. Cheap to clone (shared connection pool).
#[derive(Clone)]
pub struct RestDam {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: RestDamConfig,
    /// The record shape, its pointers parsed once.
    shape: CompiledShape,
    client: reqwest::Client,
    auth: Vec<(HeaderName, HeaderValue)>,
    /// `base_url` + `list_path`.
    list_url: Url,
    origin: url::Origin,
    stats: DamCounters,
}

/// What the DAM client did since it was created ([`RestDam::stats`]), for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamStats {
    /// HTTP attempts sent (listing pages, single assets, files; every retry counts).
    pub requests: u64,
    /// Answers received, by HTTP status.
    pub responses_by_status: BTreeMap<u16, u64>,
    /// Attempts that got no answer: timeout, refused or dropped connection.
    pub transport_errors: u64,
    /// Attempts repeated after a transient failure (429, 408, 5xx, no answer).
    pub retries: u64,
    /// Time from sending an attempt to its answer's status line and headers.
    pub request_latency: assetbridge_core::latency::LatencySnapshot,
}

#[derive(Default)]
struct DamCounters {
    requests: std::sync::atomic::AtomicU64,
    by_status: parking_lot::Mutex<BTreeMap<u16, u64>>,
    transport_errors: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
    latency: assetbridge_core::latency::LatencyHistogram,
}

impl DamCounters {
    fn inc(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn answered(&self, status: StatusCode, took: Duration) {
        *self.by_status.lock().entry(status.as_u16()).or_default() += 1;
        self.latency.record(took);
    }
}

impl std::fmt::Debug for RestDam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestDam")
            .field("list_url", &redact(&self.inner.list_url))
            .finish_non_exhaustive()
    }
}

fn auth_headers(auth: &DamAuth) -> Result<Vec<(HeaderName, HeaderValue)>, DamError> {
    let sensitive = |v: String, what: &str| {
        HeaderValue::from_str(&v)
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .map_err(|_| DamError::Config(format!("the {what} is not a valid header value")))
    };
    Ok(match auth {
        DamAuth::None => vec![],
        DamAuth::Bearer { token } => vec![(
            AUTHORIZATION,
            sensitive(format!("Bearer {}", token.expose_secret()), "bearer token")?,
        )],
        DamAuth::ApiKey { header, key } => {
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                DamError::Config(format!("`auth.header` is not a header name: `{header}`"))
            })?;
            vec![(name, sensitive(key.expose_secret().to_owned(), "API key")?)]
        }
    })
}

/// The URL without query string or credentials, for messages.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn join_path(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Largest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Empty pages in a row (with a next cursor/link) after which paging is deemed stuck.
const MAX_EMPTY_PAGES: u32 = 1000;

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The `rel="next"` target of `Link` headers (RFC 8288), unresolved.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(s) = value.to_str() else { continue };
        let mut rest = s;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>').map(|c| open + c) else {
                break;
            };
            let target = &rest[open + 1..close];
            // Parameters run to the next link (a `,` outside quotes) or the end.
            let after = &rest[close + 1..];
            let mut end = after.len();
            let mut quoted = false;
            for (i, c) in after.char_indices() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let params = &after[..end];
            let is_next = params.split(';').any(|p| {
                let mut kv = p.splitn(2, '=');
                let k = kv.next().unwrap_or("").trim();
                let v = kv.next().unwrap_or("").trim().trim_matches('"');
                k.eq_ignore_ascii_case("rel")
                    && v.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.trim().to_owned());
            }
            rest = &after[end..];
        }
    }
    None
}

fn format_since(t: DateTime<Utc>, f: SinceFormat) -> String {
    match f {
        SinceFormat::Rfc3339 => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        SinceFormat::UnixSeconds => t.timestamp().to_string(),
        SinceFormat::UnixMillis => t.timestamp_millis().to_string(),
    }
}

fn pointer<'a>(body: &'a Value, p: &str) -> Option<&'a Value> {
    if p.is_empty() {
        Some(body)
    } else {
        body.pointer(p)
    }
}

impl RestDam {
    /// A client for the configured DAM (no request is made). Fails on an unusable
    /// configuration.
    pub fn new(config: RestDamConfig) -> Result<Self, DamError> {
        config.validate()?;
        let auth = auth_headers(&config.auth)?;
        let list_url = Url::parse(&join_path(&config.base_url, &config.list_path))
            .map_err(|e| DamError::Config(format!("`list_path` does not make a URL: {e}")))?;
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("assetbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DamError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shape: config.record_shape().compile(),
                origin: list_url.origin(),
                list_url,
                client,
                auth,
                cfg: config,
                stats: DamCounters::default(),
            }),
        })
    }

    /// Counters of the requests made so far (for metrics and tests).
    pub fn stats(&self) -> DamStats {
        let c = &self.inner.stats;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        DamStats {
            requests: g(&c.requests),
            responses_by_status: c.by_status.lock().clone(),
            transport_errors: g(&c.transport_errors),
            retries: g(&c.retries),
            request_latency: c.latency.snapshot(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RestDamConfig {
        &self.inner.cfg
    }

    /// The query filtering the listing by one family value (`[(family_param, value)]`), or
    /// nothing when `family_param` is not configured.
    pub fn family_query(&self, value: &str) -> Vec<(String, String)> {
        self.inner
            .cfg
            .family_param
            .iter()
            .map(|p| (p.clone(), value.to_owned()))
            .collect()
    }

    /// Streams what changed since `since` (inclusive; `None` = everything), page by page, in
    /// the DAM's order, never holding the whole DAM in memory: at most one page is fetched
    /// ahead while the caller processes the current one. `query` adds per-family parameters to
    /// every request (replacing `extra_query` entries with the same name). Empty pages are
    /// skipped. The stream ends after the last page or after the first error. Nothing is
    /// requested until the stream is first polled (inside a Tokio runtime); dropping it stops
    /// the fetching.
    pub fn changes(&self, since: Option<DateTime<Utc>>, query: &[(String, String)]) -> DamChanges {
        let pager = Pager {
            dam: self.clone(),
            since,
            query: query.to_vec(),
            next: Next::Start,
            prev_last: None,
            page_since: None,
            delivered: None,
            last_seen: None,
            warned_order: false,
            pages: 0,
        };
        DamChanges {
            start: Some(pager),
            rx: None,
            task: None,
        }
    }

    /// One asset by id: `None` when the DAM answers `404`/`410` or the record is a deletion.
    pub async fn get_asset(&self, id: &str) -> Result<Option<DamAsset>, DamError> {
        let cfg = &self.inner.cfg;
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        let path = match &cfg.asset_path {
            Some(p) => p.replace("{id}", &encoded),
            None => join_path(&cfg.list_path, &encoded),
        };
        let url = Url::parse(&join_path(&cfg.base_url, &path))
            .map_err(|e| DamError::Config(format!("`asset_path` does not make a URL: {e}")))?;
        let (body, _, _) = match self.get_json(&url, &[404, 410]).await {
            Ok(r) => r,
            Err(DamError::Http {
                status: 404 | 410, ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let record = pointer(&body, &cfg.asset_pointer).ok_or_else(|| DamError::Parse {
            what: "asset record".into(),
            pointer: cfg.asset_pointer.clone(),
            detail: "missing from the response".into(),
        })?;
        match self.inner.shape.parse(record)?.change {
            ChangeKind::Upsert { asset } => Ok(Some(asset)),
            ChangeKind::Delete { .. } => Ok(None),
        }
    }

    /// Streams a file (e.g. the asset's binary for a media upload) with its length when the DAM
    /// says it. A relative `url` is resolved against `base_url`. The DAM's credentials are sent
    /// only to the DAM's own origin (scheme, host, port): a file on another host (a CDN, a
    /// signed URL) is fetched without them. Failures before the body starts are retried like
    /// any request; each read of the body times out after `timeout_secs`.
    pub async fn fetch_file(&self, url: &str) -> Result<(FileStream, Option<u64>), DamError> {
        let base = Url::parse(&self.inner.cfg.base_url)
            .map_err(|e| DamError::Config(format!("`base_url`: {e}")))?;
        let url = base
            .join(url)
            .map_err(|e| DamError::Config(format!("file URL `{url}`: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DamError::Config(format!(
                "file URL must be http(s): `{}`",
                redact(&url)
            )));
        }
        let resp = self.send(&url, false, &[]).await?;
        let len = resp.content_length();
        let stream = resp.bytes_stream().map_err(|e| {
            let kind = if e.is_timeout() {
                std::io::ErrorKind::TimedOut
            } else {
                std::io::ErrorKind::Other
            };
            std::io::Error::new(kind, e.without_url())
        });
        Ok((stream.boxed(), len))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = Duration::from_millis(self.inner.cfg.retry_backoff_ms);
        let exp = base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// One GET with retries; returns the successful response (body unread). `json` sets a
    /// whole-request timeout. Statuses in `pass` are returned as [`DamError::Http`] at once.
    async fn send(
        &self,
        url: &Url,
        json: bool,
        pass: &[u16],
    ) -> Result<reqwest::Response, DamError> {
        let cfg = &self.inner.cfg;
        let attempts = cfg.max_retries.saturating_add(1);
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let mut detail = String::new();
        for attempt in 1..=attempts {
            let mut req = self.inner.client.get(url.clone());
            if url.origin() == self.inner.origin {
                for (k, v) in &self.inner.auth {
                    req = req.header(k, v);
                }
            }
            if json {
                req = req.header(reqwest::header::ACCEPT, "application/json");
            }
            let stats = &self.inner.stats;
            DamCounters::inc(&stats.requests);
            let sent_at = std::time::Instant::now();
            let sent = tokio::time::timeout(timeout, req.send()).await;
            if let Ok(Ok(resp)) = &sent {
                stats.answered(resp.status(), sent_at.elapsed());
            }
            let wait = match sent {
                Err(_) => {
                    DamCounters::inc(&stats.transport_errors);
                    detail = format!("no response within {}s", cfg.timeout_secs);
                    self.backoff(attempt)
                }
                Ok(Err(e)) if e.is_builder() => {
                    return Err(DamError::Config(format!("request: {}", e.without_url())))
                }
                Ok(Err(e)) => {
                    DamCounters::inc(&stats.transport_errors);
                    detail = e.without_url().to_string();
                    self.backoff(attempt)
                }
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp),
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    let body = tokio::time::timeout(timeout, resp.text())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    let message = snippet(&body, status);
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT
                        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
                    if !retryable || pass.contains(&status.as_u16()) {
                        return Err(DamError::Http {
                            status: status.as_u16(),
                            url: redact(url),
                            message,
                        });
                    }
                    if attempt == attempts && status == StatusCode::TOO_MANY_REQUESTS {
                        return Err(DamError::Http {
                            status: 429,
                            url: redact(url),
                            message: format!(
                                "still rate limited after {attempts} attempt(s): {message}"
                            ),
                        });
                    }
                    detail = format!("{status}: {message}");
                    after.unwrap_or_else(|| self.backoff(attempt))
                }
            };
            if attempt < attempts {
                DamCounters::inc(&self.inner.stats.retries);
                warn!(url = %redact(url), attempt, wait_ms = wait.as_millis() as u64, %detail, "DAM request failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        Err(DamError::Transient {
            url: redact(url),
            attempts,
            detail,
        })
    }

    /// GET a JSON body, with retries (reading the body is part of an attempt).
    async fn get_json(&self, url: &Url, pass: &[u16]) -> Result<(Value, HeaderMap, Url), DamError> {
        let cfg = &self.inner.cfg;
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let attempts = cfg.max_retries.saturating_add(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(url, true, pass).await?;
            let headers = resp.headers().clone();
            let final_url = resp.url().clone();
            let bytes = match tokio::time::timeout(timeout, resp.bytes()).await {
                Ok(Ok(b)) => b,
                failed => {
                    let detail = match failed {
                        Ok(Err(e)) => e.without_url().to_string(),
                        _ => format!("body not read within {}s", cfg.timeout_secs),
                    };
                    if attempt >= attempts {
                        return Err(DamError::Transient {
                            url: redact(url),
                            attempts,
                            detail,
                        });
                    }
                    warn!(url = %redact(url), attempt, %detail, "reading a DAM response failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            // The body is checked as UTF-8 once, then parsed as text: parsing bytes checks
            // every string on its own (≈ 2 % of the connector's instructions at zero latency).
            // Objects are built at once from their members (`json::parse_value`).
            let parsed = std::str::from_utf8(&bytes)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(|text| {
                    assetbridge_core::json::parse_value(text).map_err(|e| format!("not JSON ({e})"))
                });
            let body = parsed.map_err(|why| DamError::Parse {
                what: "response body".into(),
                pointer: String::new(),
                detail: format!(
                    "{why} from {}: {}",
                    redact(url),
                    snippet(&String::from_utf8_lossy(&bytes), StatusCode::OK)
                ),
            })?;
            return Ok((body, headers, final_url));
        }
    }
}

fn snippet(body: &str, status: StatusCode) -> String {
    let body = body.trim();
    if body.is_empty() {
        return status.canonical_reason().unwrap_or("no message").to_owned();
    }
    let mut s: String = body.chars().take(300).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s
}

enum Next {
    Start,
    Page(u64),
    Cursor(String),
    Link(Url),
    Done,
}

/// Walks the pages of one listing.
struct Pager {
    dam: RestDam,
    since: Option<DateTime<Utc>>,
    query: Vec<(String, String)>,
    next: Next,
    /// Last cursor of the previous page read with the same `since` (page-number loop guard).
    prev_last: Option<Cursor>,
    /// Page-number paging: the `since` of the requests once moved up past the start (the time
    /// of the last item delivered; see [`Paging::PageNumber`]).
    page_since: Option<DateTime<Utc>>,
    /// Page-number paging: the latest `updated` delivered and the ids delivered at that time;
    /// those a request with a moved-up `since` (or the next page of that time) lists again are
    /// dropped. Compared by identity, not by the order of ids, which the DAM may sort in its
    /// own way within one time.
    delivered: Option<(DateTime<Utc>, HashSet<String>)>,
    /// Last cursor seen (order check).
    last_seen: Option<Cursor>,
    warned_order: bool,
    pages: u64,
}

impl Pager {
    fn first_url(&self, page: Option<u64>, cursor: Option<&str>) -> Url {
        let cfg = &self.dam.inner.cfg;
        let mut url = self.dam.inner.list_url.clone();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &cfg.extra_query {
                if !self.query.iter().any(|(qk, _)| qk == k) {
                    q.append_pair(k, v);
                }
            }
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            if let Some(since) = self.page_since.or(self.since) {
                q.append_pair(&cfg.since_param, &format_since(since, cfg.since_format));
            }
            q.append_pair(&cfg.limit_param, &cfg.page_size.to_string());
            match (&cfg.paging, page, cursor) {
                (Paging::PageNumber { page_param, .. }, Some(n), _) => {
                    q.append_pair(page_param, &n.to_string());
                }
                (Paging::Cursor { cursor_param, .. }, _, Some(c)) => {
                    q.append_pair(cursor_param, c);
                }
                _ => {}
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    async fn next_page(&mut self) -> Result<Option<DamPage>, DamError> {
        let mut empty_in_a_row = 0u32;
        loop {
            let cfg = &self.dam.inner.cfg;
            let url = match &self.next {
                Next::Done => return Ok(None),
                Next::Start => match &cfg.paging {
                    Paging::PageNumber { first_page, .. } => {
                        self.first_url(Some(*first_page), None)
                    }
                    _ => self.first_url(None, None),
                },
                Next::Page(n) => self.first_url(Some(*n), None),
                Next::Cursor(c) => self.first_url(None, Some(c)),
                Next::Link(u) => u.clone(),
            };
            debug!(url = %redact(&url), "listing DAM changes");
            let (mut body, headers, final_url) = self.dam.get_json(&url, &[]).await?;
            self.pages += 1;
            let page_no = self.pages;
            // The items are taken out of the body (each record moves into its change, no
            // copy) unless the next cursor is read from within them afterwards.
            let cursor_within_items = matches!(&cfg.paging, Paging::Cursor { next_cursor_pointer, .. }
                if next_cursor_pointer.starts_with(cfg.items_pointer.as_str()));
            let items = if cursor_within_items {
                pointer(&body, &cfg.items_pointer).cloned()
            } else {
                // `""` points at the body itself.
                body.pointer_mut(&cfg.items_pointer).map(Value::take)
            };
            let items = match items {
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(DamError::Parse {
                        what: "items array".into(),
                        pointer: cfg.items_pointer.clone(),
                        detail: format!("expected an array, found {}", kind(&other)),
                    })
                }
                None => {
                    return Err(DamError::Parse {
                        what: "items array".into(),
                        pointer: cfg.items_pointer.clone(),
                        detail: if body.is_array() {
                            "missing: the listing response is a bare array (set `items_pointer = \"\"`)".into()
                        } else {
                            "missing from the listing response".into()
                        },
                    })
                }
            };
            let page_number = matches!(&cfg.paging, Paging::PageNumber { .. });
            // Items as listed (page-number paging counts them: a short page is the last), and
            // the last listed item's position, delivered or not.
            let listed = items.len();
            let mut listed_last = None;
            let mut changes = Vec::with_capacity(items.len());
            let mut last = None;
            for (i, item) in items.into_iter().enumerate() {
                let parsed =
                    self.dam
                        .inner
                        .shape
                        .parse_owned(item)
                        .map_err(|e| DamError::Parse {
                            what: e.what,
                            pointer: e.pointer,
                            detail: format!("{} (item {} of page {page_no})", e.detail, i + 1),
                        })?;
                if let Some(c) = parsed.cursor {
                    if page_number {
                        listed_last = Some(c.clone());
                        if self
                            .delivered
                            .as_ref()
                            .is_some_and(|(at, ids)| c.updated_at == *at && ids.contains(&c.dam_id))
                        {
                            // Listed again because `since` moved up to its time: delivered.
                            continue;
                        }
                        match &mut self.delivered {
                            Some((at, ids)) if c.updated_at == *at => {
                                ids.insert(c.dam_id.clone());
                            }
                            Some((at, _)) if c.updated_at < *at => {}
                            _ => {
                                self.delivered =
                                    Some((c.updated_at, HashSet::from([c.dam_id.clone()])));
                            }
                        }
                    }
                    // Ids within one time may come in any order (nothing relies on it); an
                    // update time going back may make a poll cursor skip changes.
                    if !self.warned_order
                        && self
                            .last_seen
                            .as_ref()
                            .is_some_and(|p| c.updated_at < p.updated_at)
                    {
                        self.warned_order = true;
                        warn!("the DAM listing is not ordered by update time; a poll cursor may skip changes");
                    }
                    self.last_seen = Some(c.clone());
                    last = Some(c);
                }
                changes.push(parsed.change);
            }
            let count = changes.len();
            self.next = match &cfg.paging {
                Paging::PageNumber { first_page, .. } => {
                    let first_page = *first_page;
                    let current = match self.next {
                        Next::Page(n) => n,
                        _ => first_page,
                    };
                    if listed > 0 && listed_last.is_some() && listed_last == self.prev_last {
                        return Err(DamError::Paging(format!(
                            "page {} repeats page {} — does the DAM read `{}`?",
                            current,
                            current.saturating_sub(1),
                            match &cfg.paging {
                                Paging::PageNumber { page_param, .. } => page_param.as_str(),
                                _ => "",
                            }
                        )));
                    }
                    let asked_since = self.page_since.or(self.since);
                    if listed < cfg.page_size as usize {
                        Next::Done
                    } else {
                        match &last {
                            // Ask again from the first page, from the time of the last item
                            // delivered: an offset that changes behind the pages read cannot
                            // skip an item.
                            Some(l) if asked_since.is_none_or(|s| l.updated_at > s) => {
                                self.page_since = Some(l.updated_at);
                                self.prev_last = None;
                                Next::Page(first_page)
                            }
                            // Within one time (or items without one): the next page.
                            _ => {
                                self.prev_last = listed_last;
                                Next::Page(current + 1)
                            }
                        }
                    }
                }
                Paging::Cursor {
                    next_cursor_pointer,
                    cursor_param,
                } => match body.pointer(next_cursor_pointer) {
                    None | Some(Value::Null) => Next::Done,
                    Some(Value::String(s)) if s.is_empty() => Next::Done,
                    Some(v @ (Value::String(_) | Value::Number(_))) => {
                        let token = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        if matches!(&self.next, Next::Cursor(c) if *c == token) {
                            return Err(DamError::Paging(format!(
                                "the DAM returned the cursor it was given (`{cursor_param}`) — paging would never end"
                            )));
                        }
                        Next::Cursor(token)
                    }
                    Some(other) => {
                        return Err(DamError::Parse {
                            what: "next cursor".into(),
                            pointer: next_cursor_pointer.clone(),
                            detail: format!("expected a string, found {}", kind(other)),
                        })
                    }
                },
                Paging::LinkHeader => match next_link(&headers) {
                    None => Next::Done,
                    Some(link) => {
                        let next = final_url.join(&link).map_err(|e| {
                            DamError::Paging(format!("bad rel=\"next\" link `{link}`: {e}"))
                        })?;
                        if next.origin() != self.dam.inner.origin {
                            return Err(DamError::Paging(format!(
                                "the rel=\"next\" link points to another origin ({}); refused",
                                redact(&next)
                            )));
                        }
                        if next == url {
                            return Err(DamError::Paging(
                                "the rel=\"next\" link is the page just read — paging would never end".into(),
                            ));
                        }
                        Next::Link(next)
                    }
                },
            };
            if count > 0 {
                return Ok(Some(DamPage { changes, last }));
            }
            if matches!(self.next, Next::Done) {
                return Ok(None);
            }
            empty_in_a_row += 1;
            if empty_in_a_row >= MAX_EMPTY_PAGES {
                return Err(DamError::Paging(format!(
                    "{MAX_EMPTY_PAGES} empty pages in a row, each pointing to a next one"
                )));
            }
        }
    }

    /// Fetches pages into `tx`, one ahead of the consumer at most.
    async fn run(mut self, tx: mpsc::Sender<Result<DamPage, DamError>>) {
        loop {
            // Wait for room before fetching: the channel holds one page, so at most one page
            // is fetched ahead of the one the consumer holds.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            match self.next_page().await {
                Ok(Some(page)) => permit.send(Ok(page)),
                Ok(None) => return,
                Err(e) => {
                    permit.send(Err(e));
                    return;
                }
            }
        }
    }
}

/// The stream of [`RestDam::changes`]: pages of changes, fetched by a background task at most
/// one page ahead. `Unpin`, `Send`, `'static`; dropping it stops the fetching.
pub struct DamChanges {
    start: Option<Pager>,
    rx: Option<mpsc::Receiver<Result<DamPage, DamError>>>,
    task: Option<JoinHandle<()>>,
}

impl Stream for DamChanges {
    type Item = Result<DamPage, DamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(pager) = self.start.take() {
            let (tx, rx) = mpsc::channel(1);
            self.task = Some(tokio::spawn(pager.run(tx)));
            self.rx = Some(rx);
        }
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for DamChanges {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for DamChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DamChanges")
            .field("started", &self.start.is_none())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(links: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in links {
            h.append(LINK, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn next_link_is_found_among_others() {
        assert_eq!(
            next_link(&headers(&[
                r#"<https://x/a?page=1>; rel="prev", <https://x/a?page=3&q=a,b>; rel="next""#
            ])),
            Some("https://x/a?page=3&q=a,b".into())
        );
        assert_eq!(
            next_link(&headers(&[r#"</a?p=2>; title="a, b"; rel="next last""#])),
            Some("/a?p=2".into())
        );
        assert_eq!(
            next_link(&headers(&[
                r#"<https://x/a?page=1>; rel="first""#,
                "<b>; rel=next"
            ])),
            Some("b".into())
        );
        assert_eq!(next_link(&headers(&[r#"<https://x/a>; rel="prev""#])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn config_from_toml_with_defaults() {
        let toml = r#"
            type = "rest"
            base_url = "https://dam.example.com/v2"
            auth = { type = "api_key", key = "s3cret" }
            paging = { type = "page_number" }
            deleted_pointer = ""
        "#;
        let cfg: RestDamConfig = toml::from_str(toml).unwrap();
        assert_eq!(cfg.list_path, "/api/assets");
        assert_eq!(cfg.page_size, 100);
        assert_eq!(cfg.deleted_pointer, None);
        assert_eq!(
            cfg.paging,
            Paging::PageNumber {
                page_param: "page".into(),
                first_page: 1
            }
        );
        assert!(matches!(&cfg.auth, DamAuth::ApiKey { header, .. } if header == "X-Api-Key"));
        assert!(!format!("{cfg:?}").contains("s3cret"));
        cfg.validate().unwrap();
        let dam = RestDam::new(cfg).unwrap();
        assert_eq!(
            dam.inner.list_url.as_str(),
            "https://dam.example.com/v2/api/assets"
        );
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut cfg = RestDamConfig::new("ftp://x");
        assert!(cfg.validate().unwrap_err().to_string().contains("base_url"));
        cfg.base_url = "http://x".into();
        cfg.id_pointer = "id".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("id_pointer"));
        cfg.id_pointer = "/id".into();
        cfg.page_size = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("page_size"));
        cfg.page_size = 10;
        cfg.asset_path = Some("/assets".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("{id}"));
        cfg.asset_path = None;
        cfg.auth = DamAuth::ApiKey {
            header: "bad header".into(),
            key: "k".into(),
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.header"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<RestDamConfig>("base_url = \"http://x\"\nitem_pointer = \"/x\"")
            .unwrap_err();
        assert!(e.to_string().contains("item_pointer"), "{e}");
        let e = toml::from_str::<RestDamConfig>(
            "base_url = \"http://x\"\npaging = { type = \"cursor\", page_param = \"p\" }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("page_param"), "{e}");
    }

    #[test]
    fn since_formats() {
        let t: DateTime<Utc> = "2026-01-01T00:00:01.250Z".parse().unwrap();
        assert_eq!(
            format_since(t, SinceFormat::Rfc3339),
            "2026-01-01T00:00:01.250Z"
        );
        assert_eq!(format_since(t, SinceFormat::UnixSeconds), "1767225601");
        assert_eq!(format_since(t, SinceFormat::UnixMillis), "1767225601250");
    }

    #[test]
    fn retry_after_seconds_and_dates_are_capped() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
