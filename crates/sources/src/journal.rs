//! The Adobe I/O Events **journal** poller: the pull alternative (or complement) to the Adobe
//! webhook. Every event registration has a journal that keeps events for 7 days; reading it
//! needs no public endpoint and catches up after any outage shorter than that.
//!
//! The loop ([`JournalSource::run`]):
//! 1. read the stored position (see *Position* below); without one, start at the oldest retained
//!    event or at the latest ([`JournalSourceConfig::start`]);
//! 2. fetch the events after it ([`JournalClient`]), then follow the journal's `next` links;
//! 3. convert them with the same rules as the Adobe webhook ([`AdobeEventRules`]: upserts,
//!    deletions, ignored types, family routing); unusable events and journal entries that are not
//!    CloudEvents become raw dead letters (so they cannot stall the journal);
//! 4. [`Store::enqueue`] the changes (durable when it returns; retried with backoff until it
//!    succeeds or the source is stopped), **then** persist the position — so a crash in between
//!    re-reads the batch (at-least-once; the inbox drops the repeats by their `eventid`);
//! 5. at the end of the journal (204) wait the announced `retry-after` (at most
//!    [`JournalSourceConfig::max_wait_secs`]), then poll `next`.
//!
//! - **410 Gone** (the position is older than the retention): a warning names the expired
//!   position and the restart point — events between them that expired were never read — and
//!   the poller restarts from the oldest retained event or the latest
//!   ([`JournalSourceConfig::on_expired`]).
//! - **Errors** (network, 5xx after the client's own retries, IMS, 401/403): logged and retried
//!   after an exponential backoff between `backoff_min_ms` and `backoff_max_ms`; the poller does
//!   not stop on its own (credentials can be fixed in the Developer Console without a restart).
//! - **Backpressure**: while the inbox holds `backlog_limit` entries or more, polling pauses.
//! - **With the webhook**: reading the journal of a registration that also delivers to the
//!   Adobe webhook is safe (a reconciliation path for lost deliveries): both produce the same
//!   event ids, and the inbox drops the second copy.
//! - **Stop**: on the [`CancellationToken`]; a batch already fetched is stored (or not) as a
//!   whole, and its position persisted only if it was.
//!
//! # Position
//!
//! The store has no table for journal positions, so the position is kept as a poll cursor of a
//! pseudo family: key `"__journal:<registration>"` ([`JournalSource::position_key`]), the opaque
//! position in [`Cursor::dam_id`], the time it was stored in `updated_at`. Such keys show up in
//! [`Store::family_status`] (filter names starting with `__`). `<registration>` is
//! [`JournalSourceConfig::registration`], by default the last segment of the journal URL (the
//! registration id).
//!
//! ```toml
//! [adobe_journal]
//! url = "https://events-va6.adobe.io/events/organizations/23294/integrations/54108/f89067f2-0d50-4bb2-bf78-209d0eacb6eb"
//! org_id = "7ABB3E6A5A7491460A495D61@AdobeOrg"
//! ims = { client_id = "4ab33463139e4f96b851589286cd46e4", client_secret = "${ADOBE_CLIENT_SECRET}", scopes = ["openid", "AdobeID", "adobeio_api"] }
//! start = "oldest"
//! family = { folders = { "/content/dam/packshots" = "packshots" }, default = "images" }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_core::{AssetChange, Cursor};
use assetbridge_dam::aem::{
    ImsClient, ImsConfig, JournalBatch, JournalClient, JournalConfig, JournalError, JournalPosition,
};
use assetbridge_store::{DeadLetterReason, Store, StoreError};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::webhook::adobe::{
    default_delete_types, default_upsert_types, AdobeEventOutcome, AdobeEventRules, AdobeFamily,
    EchoFilter,
};

/// `source` of the changes read from the journal.
pub const JOURNAL_SOURCE: &str = "adobe_journal";
/// Prefix of the pseudo family under which positions are stored.
pub const POSITION_KEY_PREFIX: &str = "__journal:";

fn default_token_url() -> String {
    assetbridge_dam::aem::ims::DEFAULT_IMS_TOKEN_URL.to_owned()
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    1000
}
fn default_backoff_min_ms() -> u64 {
    1000
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_max_wait_secs() -> u64 {
    300
}
fn default_backlog_limit() -> u64 {
    100_000
}

/// Where to start reading when there is no (usable) position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStart {
    /// The oldest event the journal retains (up to 7 days back): nothing retained is missed.
    #[default]
    Oldest,
    /// The end of the journal: only events from now on.
    Latest,
}

/// The `next` link to follow, never a jump to the end: `latest=true` is for the first call only
/// (reference §3). On an empty journal the 204's `next` is the request itself, `latest=true`
/// again, and following it would jump past whatever arrives before the next poll: that change
/// would be lost. The journal was empty, so reading from its oldest event (the same URL without
/// `latest`) skips nothing; if a journal ever answered so while not empty, the cost is events
/// read twice, which the inbox's event ids absorb — never events missed.
fn without_latest(mut next: Url) -> Url {
    if !next.query_pairs().any(|(k, _)| k == "latest") {
        return next;
    }
    let kept: Vec<(String, String)> = next
        .query_pairs()
        .filter(|(k, _)| k != "latest")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    next.set_query(None);
    if !kept.is_empty() {
        next.query_pairs_mut().extend_pairs(kept);
    }
    next
}

/// The IMS credential of the journal (an OAuth Server-to-Server credential of the Developer
/// Console project that owns the registration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalImsConfig {
    /// Token endpoint. Default: `https://ims-na1.adobelogin.com/ims/token/v3`.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// The credential's client id (also the default `x-api-key`).
    pub client_id: String,
    /// The credential's client secret. Never logged.
    pub client_secret: SecretString,
    /// Scopes. Default: none.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The `[adobe_journal]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSourceConfig {
    /// The registration's journal URL (Developer Console).
    pub url: String,
    /// The IMS org id (`...@AdobeOrg`), sent as `x-ims-org-id`.
    pub org_id: String,
    /// The IMS credential.
    pub ims: JournalImsConfig,
    /// `x-api-key`. Default: the IMS client id.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Name of the stored position (`"__journal:<registration>"`). Default: the last segment
    /// of `url`.
    #[serde(default)]
    pub registration: Option<String>,
    /// Where to start without a stored position: `"oldest"` or `"latest"`. Default: `"oldest"`.
    #[serde(default)]
    pub start: JournalStart,
    /// Where to restart when the stored position has expired (410): `"oldest"` or `"latest"`.
    /// Default: `"oldest"` (recover what is still retained).
    #[serde(default)]
    pub on_expired: JournalStart,
    /// Events per request (`limit`). Default: the API's.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The asset family of asset events (as for the Adobe webhook; see [`AdobeFamily`]).
    pub family: AdobeFamily,
    /// Event types that become upserts. Default: `processing_completed`, `metadata_updated`.
    #[serde(default = "default_upsert_types")]
    pub upsert_types: Vec<String>,
    /// Event types that become deletions. Default: `aem.assets.asset.deleted`.
    #[serde(default = "default_delete_types")]
    pub delete_types: Vec<String>,
    /// The echoes of the connector's enrichment writes, not stored (see
    /// [`AdobeEventRules::echoes`]). Set by the binary from `[enrichment]`; not a configuration
    /// key. Default: none.
    #[serde(skip)]
    pub echoes: EchoFilter,
    /// Timeout of one journal request, seconds. Default: 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The client's own retries of one request after 429 / 5xx / network errors. Default: 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff of those retries, milliseconds. Default: 1000.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// First wait after a failed poll (or store write), milliseconds; doubled per consecutive
    /// failure. Default: 1000.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Longest wait after failures, milliseconds. Default: 60 000.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Longest wait honoured from a `retry-after`, seconds. Default: 300.
    #[serde(default = "default_max_wait_secs")]
    pub max_wait_secs: u64,
    /// Polling pauses while the inbox holds this many entries or more; `0` disables the check.
    /// Default: 100 000.
    #[serde(default = "default_backlog_limit")]
    pub backlog_limit: u64,
}

impl JournalSourceConfig {
    /// A configuration with every default.
    pub fn new(
        url: impl Into<String>,
        org_id: impl Into<String>,
        ims: JournalImsConfig,
        family: AdobeFamily,
    ) -> Self {
        Self {
            url: url.into(),
            org_id: org_id.into(),
            ims,
            api_key: None,
            registration: None,
            start: JournalStart::Oldest,
            on_expired: JournalStart::Oldest,
            limit: None,
            family,
            upsert_types: default_upsert_types(),
            delete_types: default_delete_types(),
            echoes: Default::default(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_wait_secs: default_max_wait_secs(),
            backlog_limit: default_backlog_limit(),
        }
    }
}

/// Why the journal source could not start.
#[derive(Debug, thiserror::Error)]
pub enum JournalSourceError {
    /// The configuration cannot work.
    #[error("adobe_journal configuration: {0}")]
    Config(String),
}

/// Counters of the journal source (cumulative since it started); read with
/// [`JournalStats::snapshot`].
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Journal responses received (200 and 204).
    pub polls: AtomicU64,
    /// 204 answers (end of the journal).
    pub empty_polls: AtomicU64,
    /// Events read (CloudEvents, usable or not).
    pub events: AtomicU64,
    /// Changes the inbox accepted.
    pub accepted: AtomicU64,
    /// Changes dropped as already seen (by event id).
    pub duplicates: AtomicU64,
    /// Changes dropped as older than what the inbox holds.
    pub stale: AtomicU64,
    /// Events of a type that is not handled.
    pub ignored: AtomicU64,
    /// Asset events no family applies to.
    pub skipped: AtomicU64,
    /// Unusable events and malformed journal entries stored as raw dead letters.
    pub dead_lettered: AtomicU64,
    /// Failed polls or store writes (each followed by a backoff).
    pub errors: AtomicU64,
    /// Restarts after the position expired (410).
    pub expired_restarts: AtomicU64,
    /// Positions persisted.
    pub positions_saved: AtomicU64,
    /// Pauses because the inbox backlog was full.
    pub backpressure_pauses: AtomicU64,
}

/// A copy of [`JournalStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct JournalStatsSnapshot {
    pub polls: u64,
    pub empty_polls: u64,
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub ignored: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub errors: u64,
    pub expired_restarts: u64,
    pub positions_saved: u64,
    pub backpressure_pauses: u64,
}

impl JournalStats {
    /// The current values.
    pub fn snapshot(&self) -> JournalStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JournalStatsSnapshot {
            polls: g(&self.polls),
            empty_polls: g(&self.empty_polls),
            events: g(&self.events),
            accepted: g(&self.accepted),
            duplicates: g(&self.duplicates),
            stale: g(&self.stale),
            ignored: g(&self.ignored),
            skipped: g(&self.skipped),
            dead_lettered: g(&self.dead_lettered),
            errors: g(&self.errors),
            expired_restarts: g(&self.expired_restarts),
            positions_saved: g(&self.positions_saved),
            backpressure_pauses: g(&self.backpressure_pauses),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The journal poller. Build with [`JournalSource::new`], run with [`JournalSource::run`].
pub struct JournalSource {
    client: JournalClient,
    store: Store,
    rules: AdobeEventRules,
    key: String,
    start: JournalStart,
    on_expired: JournalStart,
    backoff_min: Duration,
    backoff_max: Duration,
    max_wait: Duration,
    backlog_limit: u64,
    stats: Arc<JournalStats>,
}

impl std::fmt::Debug for JournalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalSource")
            .field("position_key", &self.key)
            .field("start", &self.start)
            .finish()
    }
}

/// What happened to one fetched batch.
enum Step {
    /// Stored and its position persisted (or nothing to persist).
    Done,
    /// Stopped before the batch was stored.
    Stopped,
}

impl JournalSource {
    /// Checks the configuration and builds the IMS and journal clients (no request is made).
    pub fn new(config: &JournalSourceConfig, store: Store) -> Result<Self, JournalSourceError> {
        let cfg = |m: String| JournalSourceError::Config(m);
        let rules = AdobeEventRules {
            family: config.family.clone(),
            upsert_types: config.upsert_types.clone(),
            delete_types: config.delete_types.clone(),
            echoes: config.echoes.clone(),
        };
        rules.validate().map_err(cfg)?;
        let registration = match &config.registration {
            Some(r) if !r.trim().is_empty() => r.trim().to_owned(),
            Some(_) => return Err(cfg("registration is empty".into())),
            None => Url::parse(&config.url)
                .ok()
                .and_then(|u| {
                    u.path_segments()?
                        .rfind(|s| !s.is_empty())
                        .map(str::to_owned)
                })
                .ok_or_else(|| {
                    cfg(format!(
                        "url `{}` has no path segment to name the registration; set `registration`",
                        config.url
                    ))
                })?,
        };
        if config.backoff_min_ms == 0 || config.backoff_max_ms < config.backoff_min_ms {
            return Err(cfg(
                "backoff_min_ms must be at least 1 and at most backoff_max_ms".into(),
            ));
        }
        let mut ims = ImsConfig::new(
            config.ims.client_id.clone(),
            config.ims.client_secret.expose_secret().to_owned(),
            config.ims.scopes.clone(),
        );
        ims.token_url = config.ims.token_url.clone();
        let ims = ImsClient::new(ims).map_err(|e| cfg(e.to_string()))?;
        let mut jc = JournalConfig::new(config.url.clone(), config.org_id.clone());
        jc.api_key = config.api_key.clone();
        jc.limit = config.limit;
        jc.start_at_latest = false;
        jc.timeout_secs = config.timeout_secs;
        jc.max_retries = config.max_retries;
        jc.retry_backoff_ms = config.retry_backoff_ms;
        let client = JournalClient::new(jc, Arc::new(ims)).map_err(|e| cfg(e.to_string()))?;
        Ok(Self {
            client,
            store,
            rules,
            key: format!("{POSITION_KEY_PREFIX}{registration}"),
            start: config.start,
            on_expired: config.on_expired,
            backoff_min: Duration::from_millis(config.backoff_min_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            max_wait: Duration::from_secs(config.max_wait_secs),
            backlog_limit: config.backlog_limit,
            stats: Arc::new(JournalStats::default()),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<JournalStats> {
        self.stats.clone()
    }

    /// The pseudo family under which the position is stored (`"__journal:<registration>"`).
    pub fn position_key(&self) -> &str {
        &self.key
    }

    /// The stored position, if any.
    pub async fn position(&self) -> Result<Option<JournalPosition>, StoreError> {
        Ok(self
            .store
            .cursor(&self.key)
            .await?
            .map(|c| JournalPosition(c.dam_id)))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .backoff_min
            .checked_mul(1u32 << failures.saturating_sub(1).min(20))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max);
        // Up to 10 % jitter, so that restarted pollers do not move in step.
        let jitter = rand::thread_rng().gen_range(0..=base.as_millis() as u64 / 10);
        base + Duration::from_millis(jitter)
    }

    /// Sleeps unless cancelled first; `false` when cancelled.
    async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The URL that starts reading without a position.
    fn start_url(&self, mode: JournalStart) -> Url {
        let mut url = self.client.url_for(None);
        if mode == JournalStart::Latest {
            url.query_pairs_mut().append_pair("latest", "true");
        }
        url
    }

    /// Polls until `shutdown` is cancelled. Returns `Ok(())` then; it does not stop on errors
    /// (they are logged, counted and retried with backoff).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JournalSourceError> {
        let mut failures = 0u32;
        let mut position = loop {
            match self.position().await {
                Ok(p) => break p,
                Err(e) => {
                    failures += 1;
                    bump(&self.stats.errors, 1);
                    tracing::warn!(error = %e, "reading the journal position failed; retrying");
                    if !Self::pause(&shutdown, self.backoff(failures)).await {
                        return Ok(());
                    }
                }
            }
        };
        failures = 0;
        tracing::info!(
            key = %self.key,
            position = position.as_ref().map(|p| p.as_str()).unwrap_or("(none)"),
            start = ?self.start,
            "journal source started"
        );
        let mut next: Option<Url> = None;
        let mut restart = self.start;
        while !shutdown.is_cancelled() {
            if !self.wait_for_room(&shutdown).await {
                break;
            }
            let url = match (&next, &position) {
                (Some(u), _) => u.clone(),
                (None, Some(p)) => self.client.url_for(Some(p)),
                (None, None) => self.start_url(restart),
            };
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.client.fetch(&url) => r,
            };
            let batch = match fetched {
                Ok(b) => b,
                Err(JournalError::Expired { message }) => {
                    bump(&self.stats.expired_restarts, 1);
                    tracing::warn!(
                        expired_position = position.as_ref().map(|p| p.as_str()).unwrap_or("(none)"),
                        restart_from = ?self.on_expired,
                        %message,
                        "journal position expired: events after it that are no longer retained were never read; restarting"
                    );
                    position = None;
                    next = None;
                    restart = self.on_expired;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    bump(&self.stats.errors, 1);
                    let wait = self.backoff(failures);
                    if e.is_transient() {
                        tracing::warn!(error = %e, ?wait, "journal poll failed; retrying");
                    } else {
                        tracing::error!(error = %e, ?wait, "journal poll refused; retrying (check the credential and the registration)");
                    }
                    if !Self::pause(&shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            bump(&self.stats.polls, 1);
            let retry_after = batch.retry_after;
            let next_url = batch.next.clone();
            match self.store_batch(batch, &mut position, &shutdown).await {
                Step::Done => next = Some(without_latest(next_url)),
                Step::Stopped => break,
            }
            if let Some(wait) = retry_after {
                bump(&self.stats.empty_polls, 1);
                if !Self::pause(&shutdown, wait.min(self.max_wait)).await {
                    break;
                }
            }
        }
        tracing::info!(key = %self.key, "journal source stopped");
        Ok(())
    }

    /// Waits while the inbox is full; `false` when cancelled.
    async fn wait_for_room(&self, shutdown: &CancellationToken) -> bool {
        if self.backlog_limit == 0 {
            return true;
        }
        let mut paused = false;
        loop {
            match self.store.backlog().await {
                Ok(b) if b.pending + b.in_flight < self.backlog_limit => return true,
                Ok(b) => {
                    if !paused {
                        paused = true;
                        bump(&self.stats.backpressure_pauses, 1);
                        tracing::info!(
                            pending = b.pending,
                            limit = self.backlog_limit,
                            "inbox full: journal polling paused"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "counting the inbox failed"),
            }
            if !Self::pause(shutdown, Duration::from_secs(1)).await {
                return false;
            }
        }
    }

    /// Retries a store write with backoff until it succeeds; `None` when cancelled first.
    async fn durable<T, F, Fut>(&self, shutdown: &CancellationToken, what: &str, f: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut failures = 0;
        loop {
            // The write itself is not cancelled halfway: shutdown is checked between attempts.
            match f().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    failures += 1;
                    bump(&self.stats.errors, 1);
                    let wait = self.backoff(failures);
                    tracing::warn!(error = %e, ?wait, "{what} failed; retrying");
                    if !Self::pause(shutdown, wait).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn store_batch(
        &self,
        batch: JournalBatch,
        position: &mut Option<JournalPosition>,
        shutdown: &CancellationToken,
    ) -> Step {
        let mut changes: Vec<AssetChange> = Vec::new();
        // (raw, reason, key): written once per key — the event id, or the journal position of
        // an entry that is not an event — so a batch read again after a crash adds nothing.
        let mut dead: Vec<(Vec<u8>, String, String)> = Vec::new();
        bump(
            &self.stats.events,
            (batch.events.len() + batch.malformed.len()) as u64,
        );
        for entry in &batch.events {
            match self.rules.convert(&entry.event, JOURNAL_SOURCE) {
                AdobeEventOutcome::Changes(c) => changes.extend(c),
                AdobeEventOutcome::Ignored(reason) => {
                    tracing::debug!(event_id = %entry.event.event_id, %reason, "journal event ignored");
                    bump(&self.stats.ignored, 1);
                }
                AdobeEventOutcome::Skipped(reason) => {
                    tracing::info!(event_id = %entry.event.event_id, %reason, "journal event skipped: no asset family");
                    bump(&self.stats.skipped, 1);
                }
                AdobeEventOutcome::Unusable(reason) => dead.push((
                    serde_json::to_vec(&entry.event).unwrap_or_default(),
                    reason,
                    entry.event.event_id.clone(),
                )),
            }
        }
        for (pos, error) in &batch.malformed {
            let raw =
                serde_json::json!({"journal_position": pos.as_str(), "error": error.to_string()});
            dead.push((
                raw.to_string().into_bytes(),
                format!("journal entry at position {pos}: {error}"),
                format!("journal position {}", pos.as_str()),
            ));
        }
        if !changes.is_empty() {
            let Some(outcome) = self
                .durable(shutdown, "writing journal events to the inbox", || {
                    self.store.enqueue(&changes)
                })
                .await
            else {
                return Step::Stopped;
            };
            bump(&self.stats.accepted, outcome.accepted);
            bump(&self.stats.duplicates, outcome.duplicates);
            bump(&self.stats.stale, outcome.stale);
        }
        for (raw, reason, key) in &dead {
            let reason = DeadLetterReason::new("unparseable", reason.clone());
            let written = self
                .durable(shutdown, "writing a dead letter", || {
                    self.store
                        .add_raw_event_dead_letter(None, key, JOURNAL_SOURCE, raw, &reason)
                })
                .await;
            match written {
                None => return Step::Stopped,
                Some(Some(_)) => {
                    tracing::warn!(reason = %reason.message, "unusable journal event dead-lettered");
                    bump(&self.stats.dead_lettered, 1);
                }
                Some(None) => {
                    tracing::debug!(%key, "unusable journal event already dead-lettered")
                }
            }
        }
        // Where to resume: the batch's last position; after a 204, the `since` of its `next`
        // link (after `latest=true` that is the newest event, worth remembering).
        let new_position = batch.last.clone().or_else(|| {
            batch
                .next
                .query_pairs()
                .find(|(k, _)| k == "since")
                .map(|(_, v)| JournalPosition(v.into_owned()))
        });
        if let Some(p) = new_position {
            if position.as_ref() != Some(&p) {
                let cursor = Cursor {
                    updated_at: chrono::Utc::now(),
                    dam_id: p.0.clone(),
                };
                let saved = self
                    .durable(shutdown, "saving the journal position", || {
                        self.store.set_cursor(&self.key, &cursor)
                    })
                    .await;
                if saved.is_none() {
                    return Step::Stopped;
                }
                bump(&self.stats.positions_saved, 1);
                *position = Some(p);
            }
        }
        Step::Done
    }
}

/// Builds a [`JournalSource`] and runs it until `shutdown` is cancelled.
pub async fn run(
    config: JournalSourceConfig,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), JournalSourceError> {
    JournalSource::new(&config, store)?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: JournalSourceConfig = serde_json::from_value(json!({
            "url": "https://events-va6.adobe.io/events/organizations/1/integrations/2/reg-3",
            "org_id": "O@AdobeOrg",
            "ims": {"client_id": "cid", "client_secret": "very-secret"},
            "family": "images"
        }))
        .unwrap();
        assert_eq!(c.start, JournalStart::Oldest);
        assert_eq!(c.on_expired, JournalStart::Oldest);
        assert_eq!(c.backlog_limit, 100_000);
        assert_eq!(
            c.ims.token_url,
            "https://ims-na1.adobelogin.com/ims/token/v3"
        );
        assert!(!format!("{c:?}").contains("very-secret"));
        let c: JournalSourceConfig = serde_json::from_value(json!({
            "url": "https://x/events/organizations/1/integrations/2/reg-3",
            "org_id": "O@AdobeOrg",
            "ims": {"client_id": "cid", "client_secret": "s"},
            "family": "images", "start": "latest", "on_expired": "latest"
        }))
        .unwrap();
        assert_eq!(c.start, JournalStart::Latest);
        assert!(serde_json::from_value::<JournalSourceConfig>(json!({
            "url": "https://x/r", "org_id": "O", "ims": {"client_id": "c", "client_secret": "s"},
            "family": "f", "start": "newest"
        }))
        .is_err());
        assert!(serde_json::from_value::<JournalSourceConfig>(json!({
            "url": "https://x/r", "org_id": "O", "ims": {"client_id": "c", "client_secret": "s"},
            "family": "f", "strat": "latest"
        }))
        .is_err());
    }

    #[tokio::test]
    async fn position_key_comes_from_the_url() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let ims = JournalImsConfig {
            token_url: default_token_url(),
            client_id: "cid".into(),
            client_secret: SecretString::from("s"),
            scopes: vec![],
        };
        let c = JournalSourceConfig::new(
            "https://events-va6.adobe.io/events/organizations/1/integrations/2/f89067f2/",
            "O@AdobeOrg",
            ims.clone(),
            AdobeFamily::Fixed("images".into()),
        );
        let s = JournalSource::new(&c, store.clone()).unwrap();
        assert_eq!(s.position_key(), "__journal:f89067f2");
        let mut c2 = c.clone();
        c2.registration = Some("mine".into());
        assert_eq!(
            JournalSource::new(&c2, store.clone())
                .unwrap()
                .position_key(),
            "__journal:mine"
        );
        let mut bad = c.clone();
        bad.url = "https://events-va6.adobe.io".into();
        assert!(JournalSource::new(&bad, store.clone())
            .unwrap_err()
            .to_string()
            .contains("registration"));
        let mut bad = c;
        bad.backoff_max_ms = 1;
        assert!(JournalSource::new(&bad, store).is_err());
    }
}
