//! Adobe I/O Events Journaling API client (the pull model).
//!
//! `GET <journal url>` with `Authorization: Bearer`, `x-api-key` and `x-ims-org-id` answers
//! - 200 `{"events":[{"position","event"}], "_page":{"last","count"}}` + `Link: <...>; rel="next"`
//!   (poll `next` again at once);
//! - 204 at the end of the journal + `retry-after` + a `next` link (wait, then poll `next`);
//! - 410 Gone when the position is older than the retention (7 days): restart from the oldest
//!   event or from the latest.
//!
//! A poller drives it like this (the position is what it stores durably, after the events are
//! durable themselves):
//! ```no_run
//! # async fn demo(client: assetbridge_dam::aem::JournalClient) -> Result<(), Box<dyn std::error::Error>> {
//! use assetbridge_dam::aem::JournalError;
//! let mut position = None; // loaded from the store
//! loop {
//!     let batch = match client.next(position.as_ref()).await {
//!         Ok(b) => b,
//!         Err(JournalError::Expired { .. }) => { position = None; continue } // or config: latest
//!         Err(e) => return Err(e.into()),
//!     };
//!     for entry in &batch.events { /* store entry.event durably */ }
//!     if let Some(last) = batch.last { position = Some(last); /* store it */ }
//!     if let Some(wait) = batch.retry_after { tokio::time::sleep(wait).await; }
//! }
//! # }
//! ```
//! [`JournalClient::next`] asks for the events after a stored position (`since`);
//! [`JournalClient::fetch`] follows a `next` link verbatim. Both return the same
//! [`JournalBatch`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::events::{AdobeEvent, EventError};
use super::ims::{truncate, ImsClient, ImsError};
use super::retry;

fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    1000
}
fn default_retry_after_secs() -> u64 {
    2
}

/// Settings of a [`JournalClient`].
#[derive(Debug, Clone, Deserialize)]
pub struct JournalConfig {
    /// The registration's journal URL (Developer Console), e.g.
    /// `https://events-va6.adobe.io/events/organizations/{org}/integrations/{int}/{registration}`.
    pub url: String,
    /// The IMS org id (`...@AdobeOrg`), sent as `x-ims-org-id`.
    pub org_id: String,
    /// `x-api-key`. Default: the IMS client id.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `limit` (events per response). Default: the API's.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Without a stored position, start at the end of the journal (`latest=true`) instead of
    /// the oldest retained event. Default: false (oldest: nothing retained is missed).
    #[serde(default)]
    pub start_at_latest: bool,
    /// Timeout of one request. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries after 429, 5xx or network errors. Default: 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff (doubled each retry, capped at 30 s; `Retry-After` wins). Default: 1000.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Wait announced after a 204 that carries no `retry-after`. Default: 2.
    #[serde(default = "default_retry_after_secs")]
    pub default_retry_after_secs: u64,
}

impl JournalConfig {
    /// Defaults for the given journal URL and org.
    pub fn new(url: impl Into<String>, org_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            org_id: org_id.into(),
            api_key: None,
            limit: None,
            start_at_latest: false,
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            default_retry_after_secs: default_retry_after_secs(),
        }
    }
}

/// An opaque journal position (an event's `position`); asking `since` it returns what follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JournalPosition(pub String);

impl JournalPosition {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JournalPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub position: JournalPosition,
    pub event: AdobeEvent,
}

/// One journal response.
#[derive(Debug, Clone)]
pub struct JournalBatch {
    /// The events, in the journal's order.
    pub events: Vec<JournalEntry>,
    /// Entries whose `event` is not a usable CloudEvent (kept so the poller can log or
    /// dead-letter them instead of stalling on them).
    pub malformed: Vec<(JournalPosition, EventError)>,
    /// Where to resume after this batch (`_page.last`, else the last entry's position); `None`
    /// when the response held no events (keep the previous position).
    pub last: Option<JournalPosition>,
    /// The `rel="next"` link, resolved against the journal URL (when absent: the request URL
    /// advanced to `last`).
    pub next: Url,
    /// Wait this long before polling `next` (a 204: `retry-after`, default 2 s); `None` after
    /// a 200 — poll again at once.
    pub retry_after: Option<Duration>,
}

impl JournalBatch {
    /// True when the response held no entries at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.malformed.is_empty()
    }
}

/// Errors of the journal client.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The configuration cannot work.
    #[error("journal configuration: {0}")]
    Config(String),
    /// 410 Gone: the position is older than the journal's retention. Restart from the oldest
    /// event (`next(None)`) or the latest.
    #[error("journal position expired: {message}")]
    Expired { message: String },
    /// No IMS token.
    #[error(transparent)]
    Ims(#[from] ImsError),
    /// 401 again after one token refresh, or 403.
    #[error("journal access refused ({status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    /// Another 4xx.
    #[error("journal request rejected ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// 429 / 5xx after every retry.
    #[error("journal unavailable ({status}) after {attempts} attempts: {detail}")]
    Unavailable {
        status: u16,
        attempts: u32,
        detail: String,
    },
    /// Network failure after every retry.
    #[error("journal request failed after {attempts} attempts: {detail}")]
    Transport { attempts: u32, detail: String },
    /// A 200 answer of an unexpected shape, or a `next` link to another origin.
    #[error("journal answered an unexpected response: {0}")]
    InvalidResponse(String),
}

impl JournalError {
    /// True when polling again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            JournalError::Unavailable { .. }
            | JournalError::Transport { .. }
            | JournalError::InvalidResponse(_) => true,
            JournalError::Ims(e) => e.is_transient(),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    events: Vec<RawEntry>,
    #[serde(rename = "_page", default)]
    page: Option<PageInfo>,
}

#[derive(Deserialize)]
struct RawEntry {
    position: String,
    event: Value,
}

#[derive(Deserialize)]
struct PageInfo {
    #[serde(default)]
    last: Option<String>,
}

/// The Journaling API client. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct JournalClient {
    url: Url,
    org_id: String,
    api_key: String,
    limit: Option<u32>,
    start_at_latest: bool,
    ims: Arc<ImsClient>,
    http: reqwest::Client,
    max_retries: u32,
    backoff: Duration,
    default_retry_after: Duration,
}

impl JournalClient {
    /// A client using the given IMS client (the registration's credential).
    pub fn new(config: JournalConfig, ims: Arc<ImsClient>) -> Result<Self, JournalError> {
        let url = Url::parse(&config.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| JournalError::Config(format!("url `{}` is not http(s)", config.url)))?;
        if config.org_id.trim().is_empty() {
            return Err(JournalError::Config("org_id is empty".into()));
        }
        if config.limit == Some(0) {
            return Err(JournalError::Config("limit must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JournalError::Config(format!("HTTP client: {e}")))?;
        let api_key = config
            .api_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .unwrap_or_else(|| ims.client_id().to_owned());
        Ok(Self {
            url,
            org_id: config.org_id,
            api_key,
            limit: config.limit,
            start_at_latest: config.start_at_latest,
            ims,
            http,
            max_retries: config.max_retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            default_retry_after: Duration::from_secs(config.default_retry_after_secs),
        })
    }

    /// The URL that asks for the events after `position` (`since`), or — without one — from
    /// the oldest event (or `latest=true` when configured). `limit` is added when configured.
    pub fn url_for(&self, position: Option<&JournalPosition>) -> Url {
        let mut url = self.url.clone();
        {
            let mut q = url.query_pairs_mut();
            match position {
                Some(p) => {
                    q.append_pair("since", p.as_str());
                }
                None if self.start_at_latest => {
                    q.append_pair("latest", "true");
                }
                None => {}
            }
            if let Some(l) = self.limit {
                q.append_pair("limit", &l.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// The events after `position` (see [`url_for`](Self::url_for)).
    pub async fn next(
        &self,
        position: Option<&JournalPosition>,
    ) -> Result<JournalBatch, JournalError> {
        self.fetch(&self.url_for(position)).await
    }

    /// Fetches a journal URL (typically a previous batch's `next`). It must be on the journal's
    /// origin: the bearer token is never sent elsewhere.
    pub async fn fetch(&self, url: &Url) -> Result<JournalBatch, JournalError> {
        if url.origin() != self.url.origin() {
            return Err(JournalError::InvalidResponse(format!(
                "`{url}` is not on the journal's origin"
            )));
        }
        let attempts = self.max_retries + 1;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let token = self.ims.token().await?;
            attempt += 1;
            let sent = self
                .http
                .get(url.clone())
                .header(http::header::ACCEPT, "application/json")
                .header("x-api-key", &self.api_key)
                .header("x-ims-org-id", &self.org_id)
                .bearer_auth(token.expose())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    if attempt < attempts {
                        tracing::warn!(attempt, error = %e, "journal request failed; retrying");
                        tokio::time::sleep(retry::backoff(self.backoff, attempt - 1)).await;
                        continue;
                    }
                    return Err(JournalError::Transport {
                        attempts: attempt,
                        detail: e.to_string(),
                    });
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    if attempt < attempts {
                        tokio::time::sleep(retry::backoff(self.backoff, attempt - 1)).await;
                        continue;
                    }
                    return Err(JournalError::Transport {
                        attempts: attempt,
                        detail: e.to_string(),
                    });
                }
            };
            let text = || truncate(String::from_utf8_lossy(&body).trim(), 300);
            match status {
                200 => return self.batch_from(url, &headers, &body),
                204 => {
                    let next = self
                        .next_link(url, &headers)?
                        .unwrap_or_else(|| url.clone());
                    return Ok(JournalBatch {
                        events: Vec::new(),
                        malformed: Vec::new(),
                        last: None,
                        next,
                        retry_after: Some(
                            retry::retry_after(&headers).unwrap_or(self.default_retry_after),
                        ),
                    });
                }
                410 => return Err(JournalError::Expired { message: text() }),
                401 if !refreshed => {
                    self.ims.invalidate_token(&token);
                    refreshed = true;
                    attempt -= 1;
                    continue;
                }
                401 | 403 => {
                    return Err(JournalError::Unauthorized {
                        status,
                        detail: text(),
                    })
                }
                429 | 500..=599 => {
                    if attempt < attempts {
                        tracing::warn!(attempt, status, "journal unavailable; retrying");
                        tokio::time::sleep(retry::wait_before_retry(
                            Some(&headers),
                            self.backoff,
                            attempt - 1,
                        ))
                        .await;
                        continue;
                    }
                    return Err(JournalError::Unavailable {
                        status,
                        attempts: attempt,
                        detail: text(),
                    });
                }
                _ => {
                    return Err(JournalError::Rejected {
                        status,
                        detail: text(),
                    })
                }
            }
        }
    }

    fn batch_from(
        &self,
        url: &Url,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<JournalBatch, JournalError> {
        let page: Page = serde_json::from_slice(body)
            .map_err(|e| JournalError::InvalidResponse(format!("journal page: {e}")))?;
        let mut events = Vec::with_capacity(page.events.len());
        let mut malformed = Vec::new();
        for raw in page.events {
            let position = JournalPosition(raw.position);
            match AdobeEvent::from_value(&raw.event, None) {
                Ok(event) => events.push(JournalEntry { position, event }),
                Err(e) => malformed.push((position, e)),
            }
        }
        let last_entry = events
            .iter()
            .map(|e| &e.position)
            .chain(malformed.iter().map(|(p, _)| p))
            .last()
            .cloned();
        let last = page
            .page
            .and_then(|p| p.last)
            .filter(|l| !l.is_empty())
            .map(JournalPosition)
            .or(last_entry);
        let next = match self.next_link(url, headers)? {
            Some(n) => n,
            None => match &last {
                Some(l) => self.url_for(Some(l)),
                None => url.clone(),
            },
        };
        Ok(JournalBatch {
            events,
            malformed,
            last,
            next,
            retry_after: None,
        })
    }

    fn next_link(
        &self,
        base: &Url,
        headers: &http::HeaderMap,
    ) -> Result<Option<Url>, JournalError> {
        let Some(target) = headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_links)
            .find(|(_, rel)| {
                rel.split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
            .map(|(t, _)| t)
        else {
            return Ok(None);
        };
        let next = base
            .join(&target)
            .map_err(|e| JournalError::InvalidResponse(format!("next link `{target}`: {e}")))?;
        if next.origin() != self.url.origin() {
            return Err(JournalError::InvalidResponse(format!(
                "next link `{next}` leaves the journal's origin"
            )));
        }
        Ok(Some(next))
    }
}

/// Parses a `Link` header value into (target, rel) pairs.
fn parse_links(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let target = rest[start + 1..start + end].trim().to_owned();
        let after = &rest[start + end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let rel = params
            .split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("rel").then(|| {
                    v.trim()
                        .trim_end_matches(',')
                        .trim()
                        .trim_matches('"')
                        .to_owned()
                })
            })
            .next()
            .unwrap_or_default();
        out.push((target, rel));
        rest = &after[params_end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aem::ImsConfig;

    #[test]
    fn link_headers() {
        let l = parse_links(
            r#"</events/organizations/1/integrations/2/r?since=abc&limit=5>; rel="next", </x?validate>; rel="validate""#,
        );
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].0,
            "/events/organizations/1/integrations/2/r?since=abc&limit=5"
        );
        assert_eq!(l[0].1, "next");
        assert_eq!(l[1].1, "validate");
        assert!(parse_links("garbage").is_empty());
    }

    #[test]
    fn urls() {
        let ims = Arc::new(ImsClient::new(ImsConfig::new("cid", "s", vec![])).unwrap());
        let mut c = JournalConfig::new(
            "https://events-va6.adobe.io/events/organizations/1/integrations/2/r",
            "O@AdobeOrg",
        );
        c.limit = Some(5);
        let j = JournalClient::new(c.clone(), ims.clone()).unwrap();
        assert_eq!(j.url_for(None).query(), Some("limit=5"));
        assert_eq!(
            j.url_for(Some(&JournalPosition("a b".into()))).query(),
            Some("since=a+b&limit=5")
        );
        c.limit = None;
        c.start_at_latest = true;
        let j = JournalClient::new(c.clone(), ims.clone()).unwrap();
        assert_eq!(j.url_for(None).query(), Some("latest=true"));
        c.start_at_latest = false;
        let j = JournalClient::new(c.clone(), ims.clone()).unwrap();
        assert_eq!(j.url_for(None).query(), None);
        c.url = "not a url".into();
        assert!(JournalClient::new(c, ims).is_err());
    }
}
