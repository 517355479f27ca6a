//! AEM Assets Author API client (`{author}/adobe/assets/{assetId}/metadata`).
//!
//! Every request carries `Authorization: Bearer <IMS token>`, `X-Api-Key` and
//! `X-Adobe-Accept-Experimental: 1`. A PATCH sends an RFC 6902 JSON Patch with
//! `Content-Type: application/json-patch+json` and `If-Match` (`*` unless a real ETag is given).
//!
//! Safety: the client only talks to author hosts of its allow-list ([`AemConfig::allowed_hosts`]).
//! An event names its author host (`repo:repositoryId`), but a host that is not on the list is
//! refused with [`AemError::HostNotAllowed`] before any request (and before any token) is made.
//!
//! Failure handling: a 401 drops the IMS token, fetches a new one and retries once; 429, 5xx,
//! network errors and non-JSON (HTML) answers — AEM hibernating or unavailable — are retried a
//! bounded number of times and then reported as transient ([`AemError::is_transient`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::ims::{truncate, ImsClient, ImsConfig, ImsError, ImsToken};
use super::retry;

fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    500
}

/// How to reach AEM author services.
#[derive(Debug, Clone, Deserialize)]
pub struct AemConfig {
    /// Author hosts this connector may call, e.g. `author-p1-e2.adobeaemcloud.com` (host names
    /// only: no scheme, port or path; compared case-insensitively). Required, non-empty.
    pub allowed_hosts: Vec<String>,
    /// Base URL to use for a host instead of `https://{host}` (tests and emulators map a host to
    /// `http://127.0.0.1:PORT`). Keys must be allowed hosts. Default: none.
    #[serde(default)]
    pub base_url_overrides: BTreeMap<String, String>,
    /// `X-Api-Key` value. Default: the IMS client id.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The IMS credential (its product profile must grant access to the author services).
    pub ims: ImsConfig,
    /// Timeout of one request, connection included. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries after 408, 429, 5xx, network errors or non-JSON answers. Default: 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff before a retry (doubled each time, capped at 30 s; a `Retry-After` header
    /// wins). Default: 500.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

impl AemConfig {
    /// A configuration with every default for the given hosts and credential.
    pub fn new(allowed_hosts: Vec<String>, ims: ImsConfig) -> Self {
        Self {
            allowed_hosts,
            base_url_overrides: BTreeMap::new(),
            api_key: None,
            ims,
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
        }
    }
}

/// Errors of the Assets Author API client.
#[derive(Debug, thiserror::Error)]
pub enum AemError {
    /// The configuration cannot work.
    #[error("AEM configuration: {0}")]
    Config(String),
    /// The host is not in `allowed_hosts`; no request was made.
    #[error("AEM host `{host}` is not in the allowed author hosts")]
    HostNotAllowed { host: String },
    /// The asset id is empty or not usable in a URL.
    #[error("invalid AEM asset id `{0}`")]
    InvalidAssetId(String),
    /// No IMS token.
    #[error(transparent)]
    Ims(#[from] ImsError),
    /// 401 again after one token refresh.
    #[error("AEM refused the credential (401): {detail}")]
    Unauthorized { detail: String },
    /// 403: the credential's product profile lacks access, or the client id is not allowed by
    /// the environment's API configuration.
    #[error("AEM denied access (403): {detail}")]
    Forbidden { detail: String },
    /// 404: no such asset.
    #[error("AEM asset `{asset_id}` not found")]
    NotFound { asset_id: String },
    /// 412: the `If-Match` ETag no longer matches (someone changed the asset).
    #[error("AEM precondition failed (412): {detail}")]
    PreconditionFailed { detail: String },
    /// Another 4xx (400 with a Problem Details body, 415, 428, ...): the request is wrong and
    /// will not succeed as is.
    #[error("AEM rejected the request ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// AEM unavailable: 429/5xx after every retry, or an HTML/non-JSON answer (hibernation).
    #[error("AEM unavailable ({status:?}) after {attempts} attempts: {detail}")]
    Unavailable {
        status: Option<u16>,
        attempts: u32,
        detail: String,
    },
    /// AEM could not be reached (connection, timeout) after every retry.
    #[error("AEM request failed after {attempts} attempts: {detail}")]
    Transport { attempts: u32, detail: String },
    /// A JSON answer of an unexpected shape.
    #[error("AEM answered an unexpected body: {0}")]
    InvalidResponse(String),
}

impl AemError {
    /// True when the same call may succeed later (AEM or IMS unavailable, network), false when
    /// it needs a change (configuration, permissions, request, asset).
    pub fn is_transient(&self) -> bool {
        match self {
            AemError::Unavailable { .. } | AemError::Transport { .. } => true,
            AemError::Ims(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The HTTP status AEM answered, when the error comes from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AemError::Unauthorized { .. } => Some(401),
            AemError::Forbidden { .. } => Some(403),
            AemError::NotFound { .. } => Some(404),
            AemError::PreconditionFailed { .. } => Some(412),
            AemError::Rejected { status, .. } => Some(*status),
            AemError::Unavailable { status, .. } => *status,
            _ => None,
        }
    }
}

/// An asset's metadata as `GET .../metadata` returns it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AssetMetadata {
    /// `assetId` (`urn:aaid:aem:<uuid>`), when the answer names it.
    #[serde(rename = "assetId", default, skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// Editable metadata (`dc:title`, custom schema fields such as `pim:sku`, ...).
    #[serde(rename = "assetMetadata", default)]
    pub asset_metadata: Map<String, Value>,
    /// Read-only system metadata (`repo:name`, `repo:path`, ...).
    #[serde(rename = "repositoryMetadata", default)]
    pub repository_metadata: Map<String, Value>,
    /// The `ETag` response header, usable as `If-Match` of a later PATCH.
    #[serde(skip)]
    pub etag: Option<String>,
}

/// One RFC 6902 operation on an asset's `assetMetadata`.
///
/// Paths are JSON Pointers starting with `/`; build them from metadata keys with
/// [`PatchOp::add`] & co. (or [`metadata_pointer`]), which escape `~` and `/`. A `:` needs no
/// escaping (`/pim:sku`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// Sets a member (creating it, or replacing its value when it exists).
    Add { path: String, value: Value },
    /// Replaces an existing member's value.
    Replace { path: String, value: Value },
    /// Removes a member.
    Remove { path: String },
    /// Fails the whole patch unless the member equals `value`.
    Test { path: String, value: Value },
}

impl PatchOp {
    /// `add` of a top-level metadata key (the operation Adobe's samples use).
    pub fn add(key: &str, value: Value) -> Self {
        PatchOp::Add {
            path: metadata_pointer(key),
            value,
        }
    }
    /// `replace` of a top-level metadata key.
    pub fn replace(key: &str, value: Value) -> Self {
        PatchOp::Replace {
            path: metadata_pointer(key),
            value,
        }
    }
    /// `remove` of a top-level metadata key.
    pub fn remove(key: &str) -> Self {
        PatchOp::Remove {
            path: metadata_pointer(key),
        }
    }
    /// `test` of a top-level metadata key.
    pub fn test(key: &str, value: Value) -> Self {
        PatchOp::Test {
            path: metadata_pointer(key),
            value,
        }
    }
    /// The operation's JSON Pointer.
    pub fn path(&self) -> &str {
        match self {
            PatchOp::Add { path, .. }
            | PatchOp::Replace { path, .. }
            | PatchOp::Remove { path }
            | PatchOp::Test { path, .. } => path,
        }
    }
}

/// The JSON Pointer of a top-level metadata key: `/` + the key with `~` → `~0` and `/` → `~1`.
pub fn metadata_pointer(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// What a successful PATCH answered.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchResponse {
    /// The HTTP status (200 or 204).
    pub status: u16,
    /// The JSON body, `Value::Null` when there was none. Its shape is not documented by Adobe.
    pub body: Value,
    /// The new `ETag`, when sent.
    pub etag: Option<String>,
}

/// The Assets Author API client. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AemClient {
    allowed: Vec<String>,
    bases: BTreeMap<String, Url>,
    api_key: String,
    ims: Arc<ImsClient>,
    http: reqwest::Client,
    max_retries: u32,
    backoff: Duration,
}

const JSON_PATCH: &str = "application/json-patch+json";

impl AemClient {
    /// A client with its own IMS client (built from `config.ims`).
    pub fn new(config: AemConfig) -> Result<Self, AemError> {
        let ims = Arc::new(ImsClient::new(config.ims.clone())?);
        Self::with_ims_client(config, ims)
    }

    /// A client sharing an existing IMS client (`config.ims` is then only used for the default
    /// API key).
    pub fn with_ims_client(config: AemConfig, ims: Arc<ImsClient>) -> Result<Self, AemError> {
        if config.allowed_hosts.is_empty() {
            return Err(AemError::Config(
                "allowed_hosts is empty: list the AEM author hosts this connector may call".into(),
            ));
        }
        let mut allowed = Vec::with_capacity(config.allowed_hosts.len());
        for h in &config.allowed_hosts {
            let n = normalize_host(h).ok_or_else(|| {
                AemError::Config(format!(
                    "allowed host `{h}` must be a bare host name like author-p1-e2.adobeaemcloud.com"
                ))
            })?;
            allowed.push(n);
        }
        let mut bases = BTreeMap::new();
        for (host, base) in &config.base_url_overrides {
            let n = normalize_host(host)
                .filter(|n| allowed.contains(n))
                .ok_or_else(|| {
                    AemError::Config(format!(
                        "base_url_overrides: `{host}` is not an allowed host"
                    ))
                })?;
            let url = Url::parse(base)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    AemError::Config(format!(
                        "base_url_overrides: `{base}` is not an http(s) URL"
                    ))
                })?;
            bases.insert(n, url);
        }
        let api_key = config
            .api_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .unwrap_or_else(|| config.ims.client_id.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| AemError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            allowed,
            bases,
            api_key,
            ims,
            http,
            max_retries: config.max_retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
        })
    }

    /// The IMS client in use (to share it, or read its token counter).
    pub fn ims(&self) -> &Arc<ImsClient> {
        &self.ims
    }

    /// True when `host` is an allowed author host.
    pub fn is_allowed_host(&self, host: &str) -> bool {
        normalize_host(host).is_some_and(|h| self.allowed.contains(&h))
    }

    /// The URL of an asset's metadata on an allowed host.
    pub fn metadata_url(&self, host: &str, asset_id: &str) -> Result<Url, AemError> {
        let h = normalize_host(host)
            .filter(|h| self.allowed.contains(h))
            .ok_or_else(|| AemError::HostNotAllowed {
                host: host.to_owned(),
            })?;
        if asset_id.trim().is_empty() || asset_id.chars().any(char::is_control) {
            return Err(AemError::InvalidAssetId(asset_id.to_owned()));
        }
        let mut url = match self.bases.get(&h) {
            Some(base) => base.clone(),
            None => Url::parse(&format!("https://{h}/"))
                .map_err(|e| AemError::Config(format!("host `{h}`: {e}")))?,
        };
        url.path_segments_mut()
            .map_err(|_| AemError::Config(format!("base URL of `{h}` cannot take a path")))?
            .pop_if_empty()
            .extend(["adobe", "assets", asset_id, "metadata"]);
        Ok(url)
    }

    /// `GET {author}/adobe/assets/{assetId}/metadata`.
    pub async fn get_metadata(
        &self,
        host: &str,
        asset_id: &str,
    ) -> Result<AssetMetadata, AemError> {
        let url = self.metadata_url(host, asset_id)?;
        let resp = self
            .send(asset_id, |token| {
                self.http
                    .get(url.clone())
                    .header(http::header::ACCEPT, "application/json")
                    .header("X-Api-Key", &self.api_key)
                    .header("X-Adobe-Accept-Experimental", "1")
                    .bearer_auth(token.expose())
            })
            .await?;
        let etag = header_string(&resp.headers, http::header::ETAG);
        let mut meta: AssetMetadata = serde_json::from_slice(&resp.body)
            .map_err(|e| AemError::InvalidResponse(format!("metadata of `{asset_id}`: {e}")))?;
        meta.etag = etag;
        Ok(meta)
    }

    /// `PATCH {author}/adobe/assets/{assetId}/metadata` with a JSON Patch.
    ///
    /// `if_match`: an ETag from [`get_metadata`](Self::get_metadata) for an optimistic write
    /// (412 → [`AemError::PreconditionFailed`]); `None` sends `If-Match: *` (unconditional, as
    /// Adobe's samples do).
    pub async fn patch_metadata(
        &self,
        host: &str,
        asset_id: &str,
        ops: &[PatchOp],
        if_match: Option<&str>,
    ) -> Result<PatchResponse, AemError> {
        let url = self.metadata_url(host, asset_id)?;
        if ops.is_empty() {
            return Err(AemError::Config(
                "an empty JSON Patch would change nothing".into(),
            ));
        }
        for op in ops {
            if !op.path().starts_with('/') {
                return Err(AemError::Config(format!(
                    "JSON Patch path `{}` must start with `/`",
                    op.path()
                )));
            }
        }
        let body = serde_json::to_vec(ops).expect("a JSON Patch serialises");
        let if_match = if_match.unwrap_or("*").to_owned();
        let resp = self
            .send(asset_id, |token| {
                self.http
                    .patch(url.clone())
                    .header(http::header::CONTENT_TYPE, JSON_PATCH)
                    .header(http::header::ACCEPT, "application/json")
                    .header(http::header::IF_MATCH, &if_match)
                    .header("X-Api-Key", &self.api_key)
                    .header("X-Adobe-Accept-Experimental", "1")
                    .bearer_auth(token.expose())
                    .body(body.clone())
            })
            .await?;
        let body = if resp.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body)
                .map_err(|e| AemError::InvalidResponse(format!("PATCH answer: {e}")))?
        };
        Ok(PatchResponse {
            status: resp.status,
            etag: header_string(&resp.headers, http::header::ETAG),
            body,
        })
    }

    /// Sends with auth, the one-time 401 refresh, and bounded retries; returns a 2xx JSON (or
    /// empty) answer, or the mapped error.
    async fn send(
        &self,
        asset_id: &str,
        build: impl Fn(&ImsToken) -> reqwest::RequestBuilder,
    ) -> Result<Answer, AemError> {
        let attempts = self.max_retries + 1;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let token = self.ims.token().await?;
            attempt += 1;
            let (status, headers, body) = match build(&token).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    match r.bytes().await {
                        Ok(b) => (status, headers, b.to_vec()),
                        Err(e) => {
                            if attempt < attempts {
                                tokio::time::sleep(retry::backoff(self.backoff, attempt - 1)).await;
                                continue;
                            }
                            return Err(AemError::Transport {
                                attempts: attempt,
                                detail: e.to_string(),
                            });
                        }
                    }
                }
                Err(e) => {
                    if attempt < attempts {
                        tracing::warn!(attempt, error = %e, "AEM request failed; retrying");
                        tokio::time::sleep(retry::backoff(self.backoff, attempt - 1)).await;
                        continue;
                    }
                    return Err(AemError::Transport {
                        attempts: attempt,
                        detail: e.to_string(),
                    });
                }
            };
            let json = is_json(&headers);
            let empty = body.iter().all(u8::is_ascii_whitespace);
            let detail = || problem_detail(&body);
            // 408: the request timed out on the way (a proxy's or the server's): sent again.
            let transient = status == 429
                || status == 408
                || (500..600).contains(&status)
                || ((200..300).contains(&status) && !json && !empty);
            if transient {
                if attempt < attempts {
                    tracing::warn!(attempt, status, "AEM unavailable; retrying");
                    tokio::time::sleep(retry::wait_before_retry(
                        Some(&headers),
                        self.backoff,
                        attempt - 1,
                    ))
                    .await;
                    continue;
                }
                return Err(AemError::Unavailable {
                    status: Some(status),
                    attempts: attempt,
                    detail: if json {
                        detail()
                    } else {
                        format!("non-JSON answer: {}", detail())
                    },
                });
            }
            return match status {
                200..=299 => Ok(Answer {
                    status,
                    headers,
                    body,
                }),
                401 if !refreshed => {
                    tracing::info!("AEM answered 401; renewing the IMS token once");
                    self.ims.invalidate_token(&token);
                    refreshed = true;
                    // A refresh is not a failure retry: it does not use up an attempt.
                    attempt -= 1;
                    continue;
                }
                401 => Err(AemError::Unauthorized { detail: detail() }),
                403 => Err(AemError::Forbidden { detail: detail() }),
                404 => Err(AemError::NotFound {
                    asset_id: asset_id.to_owned(),
                }),
                412 => Err(AemError::PreconditionFailed { detail: detail() }),
                _ => Err(AemError::Rejected {
                    status,
                    detail: detail(),
                }),
            };
        }
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn header_string(headers: &http::HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("/json") || ct.contains("+json")
        })
}

/// A short message from an error body: Problem Details `detail`/`title`, else the text start.
fn problem_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for k in ["detail", "title", "message", "error_description", "error"] {
            if let Some(s) = v.get(k).and_then(Value::as_str) {
                return s.to_owned();
            }
        }
    }
    truncate(String::from_utf8_lossy(body).trim(), 300)
}

/// Lower-cases a bare host name and checks it is one (letters, digits, `-`, `.`).
fn normalize_host(host: &str) -> Option<String> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> AemClient {
        let mut c = AemConfig::new(
            vec!["Author-P1-E2.adobeaemcloud.com".into()],
            ImsConfig::new("cid", "secret", vec![]),
        );
        c.base_url_overrides.insert(
            "author-p1-e2.adobeaemcloud.com".into(),
            "http://127.0.0.1:9/".into(),
        );
        AemClient::new(c).unwrap()
    }

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(metadata_pointer("pim:sku"), "/pim:sku");
        assert_eq!(metadata_pointer("a/b~c"), "/a~1b~0c");
        assert_eq!(
            serde_json::to_value(vec![
                PatchOp::add("pim:sku", json!("S1")),
                PatchOp::remove("x")
            ])
            .unwrap(),
            json!([{"op":"add","path":"/pim:sku","value":"S1"},{"op":"remove","path":"/x"}])
        );
    }

    #[test]
    fn hosts_are_checked() {
        let c = client();
        assert!(c.is_allowed_host("author-p1-e2.adobeaemcloud.com"));
        assert!(c.is_allowed_host("AUTHOR-p1-e2.adobeaemcloud.com."));
        assert!(!c.is_allowed_host("author-p1-e3.adobeaemcloud.com"));
        assert!(!c.is_allowed_host("https://author-p1-e2.adobeaemcloud.com"));
        assert!(matches!(
            c.metadata_url("evil.example.com", "urn:aaid:aem:1"),
            Err(AemError::HostNotAllowed { .. })
        ));
        let u = c
            .metadata_url("author-p1-e2.adobeaemcloud.com", "urn:aaid:aem:1/../x")
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/adobe/assets/urn:aaid:aem:1%2F..%2Fx/metadata"
        );
        assert!(c
            .metadata_url("author-p1-e2.adobeaemcloud.com", " ")
            .is_err());
    }

    #[test]
    fn config_is_checked() {
        let ims = ImsConfig::new("cid", "secret", vec![]);
        assert!(AemClient::new(AemConfig::new(vec![], ims.clone())).is_err());
        assert!(AemClient::new(AemConfig::new(vec!["https://x.com".into()], ims.clone())).is_err());
        let mut c = AemConfig::new(vec!["a.com".into()], ims);
        c.base_url_overrides
            .insert("b.com".into(), "http://127.0.0.1:1".into());
        assert!(AemClient::new(c).is_err());
    }

    #[test]
    fn config_deserialises_with_defaults() {
        let c: AemConfig = serde_json::from_value(json!({
            "allowed_hosts": ["author-p1-e2.adobeaemcloud.com"],
            "ims": {"client_id": "cid", "client_secret": "shh", "scopes": ["openid"]}
        }))
        .unwrap();
        assert_eq!(c.timeout_secs, 30);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.ims.refresh_margin_secs, 300);
        assert_eq!(c.ims.token_url, crate::aem::ims::DEFAULT_IMS_TOKEN_URL);
        assert!(!format!("{c:?}").contains("shh"));
        let client = AemClient::new(c).unwrap();
        assert_eq!(
            client.api_key, "cid",
            "the API key defaults to the client id"
        );
    }

    #[test]
    fn default_host_url_is_https() {
        let c = AemClient::new(AemConfig::new(
            vec!["author-p1-e2.adobeaemcloud.com".into()],
            ImsConfig::new("cid", "secret", vec![]),
        ))
        .unwrap();
        assert_eq!(
            c.metadata_url("author-p1-e2.adobeaemcloud.com", "urn:aaid:aem:1")
                .unwrap()
                .as_str(),
            "https://author-p1-e2.adobeaemcloud.com/adobe/assets/urn:aaid:aem:1/metadata"
        );
    }
}
