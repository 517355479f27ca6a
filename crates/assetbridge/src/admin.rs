//! The admin HTTP server of `assetbridge run` (`[server]`): liveness, readiness, Prometheus
//! metrics, a server-rendered status page and the dead-letter retry action.
//!
//! Metrics are rendered directly in the Prometheus text format (version 0.0.4) from counters
//! the process already keeps: the engine's [`SyncReport`]s (through a [`SyncObserver`]), the
//! Akeneo client's [`ClientStats`](assetbridge_akeneo::ClientStats), the webhook server's
//! counters and the store (backlog, dead letters), the last three sampled at scrape time. No
//! global recorder is installed, so nothing else in the process can add or change series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use assetbridge_engine::{Engine, SyncObserver, SyncReport};
use assetbridge_sources::webhook::WebhookStats;
use assetbridge_store::{DeadLetterFilter, FamilyStatus, OutcomeCounts};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// How long a store query of a probe or a page may take before it counts as unavailable.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Dead letters listed on the status page (lowest ids first) and recent failures shown.
const DEAD_LETTERS_SHOWN: usize = 100;
const RECENT_FAILURES: usize = 20;
/// How long the status page may take to gather what it shows.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// The windows the status page shows PIM write throughput for (as `status` does).
const THROUGHPUT_WINDOWS: [(&str, Duration); 2] = [
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3600)),
];
/// Upper bounds (seconds) of the poll-pass duration histogram's buckets.
const PASS_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Upper bounds (seconds) of the write-batch duration histogram's buckets (a batch is one PIM
/// request of ≤ 100 assets plus mapping and state: 50 ms of PIM latency is a typical value).
const BATCH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram: counts per bucket (upper bounds `bounds`, then +Inf), sum, count.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds` (the +Inf bucket).
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// A client's request-latency snapshot, as a histogram to render.
    pub fn of_latency(l: &assetbridge_core::latency::LatencySnapshot) -> Self {
        Self {
            bounds: &assetbridge_core::latency::LATENCY_BUCKETS,
            counts: l.counts.clone(),
            sum: l.sum_seconds(),
        }
    }

    /// Counts one observation of `v`.
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A family's poll passes as the observer saw them.
#[derive(Debug, Clone)]
struct Passes {
    /// When the pass in progress started (`None` between passes).
    started: Option<Instant>,
    /// Durations of the passes that finished.
    durations: Histogram,
    /// When the last pass finished (Unix seconds).
    last_finished: Option<f64>,
}

impl Default for Passes {
    fn default() -> Self {
        Self {
            started: None,
            durations: Histogram::new(&PASS_BUCKETS),
            last_finished: None,
        }
    }
}

/// Per-family sums of every [`SyncReport`] the engine reported (cumulative since start).
#[derive(Default)]
pub struct MetricsObserver {
    by_family: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    batches: Mutex<BTreeMap<String, u64>>,
    passes: Mutex<BTreeMap<String, Passes>>,
    batch_durations: Mutex<BTreeMap<String, Histogram>>,
}

impl SyncObserver for MetricsObserver {
    fn family_started(&self, family: &str) {
        self.passes
            .lock()
            .entry(family.to_owned())
            .or_default()
            .started = Some(Instant::now());
    }

    /// A pass that ends in an error reports no `family_finished`: its start is overwritten by
    /// the next pass and it is not observed.
    fn family_finished(&self, family: &str, _report: &SyncReport) {
        let mut all = self.passes.lock();
        let p = all.entry(family.to_owned()).or_default();
        if let Some(started) = p.started.take() {
            p.durations.observe(started.elapsed().as_secs_f64());
            p.last_finished = Some(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    fn batch_written(&self, family: &str, _report: &SyncReport, elapsed: Duration) {
        self.batch_durations
            .lock()
            .entry(family.to_owned())
            .or_insert_with(|| Histogram::new(&BATCH_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    fn batch_done(&self, family: &str, report: &SyncReport) {
        // The report's fields, by name (so a new outcome becomes a series on its own).
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(report) else {
            return;
        };
        let mut all = self.by_family.lock();
        let sums = all.entry(family.to_owned()).or_default();
        for (name, value) in fields {
            if let Some(n) = value.as_u64() {
                *sums.entry(name).or_default() += n;
            }
        }
        drop(all);
        *self.batches.lock().entry(family.to_owned()).or_default() += 1;
    }
}

/// What the handlers share. The engine is set once it is wired (the PIM answered with a token
/// and every family's structure); until then `/readyz` answers 503.
pub struct AdminState {
    engine: OnceLock<Arc<Engine>>,
    webhooks: OnceLock<Arc<WebhookStats>>,
    observer: Arc<MetricsObserver>,
    configured: Vec<String>,
    token: Option<SecretString>,
}

impl AdminState {
    /// A state for the configured `families`, with the admin token if any.
    pub fn new(configured: Vec<String>, token: Option<SecretString>) -> Arc<Self> {
        Arc::new(Self {
            engine: OnceLock::new(),
            webhooks: OnceLock::new(),
            observer: Arc::new(MetricsObserver::default()),
            configured,
            token,
        })
    }

    /// The observer to install on the engine (`Engine::with_observer`).
    pub fn observer(&self) -> Arc<MetricsObserver> {
        self.observer.clone()
    }

    /// The engine is wired: the server becomes ready (if the store answers).
    pub fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    /// The webhook server's counters, exported on `/metrics`.
    pub fn set_webhooks(&self, stats: Arc<WebhookStats>) {
        let _ = self.webhooks.set(stats);
    }
}

/// The router: `GET /healthz`, `/readyz`, `/metrics`, `/`, `POST /dead-letters/retry`. Every
/// answer forbids being framed by another page (`X-Frame-Options: DENY`, CSP
/// `frame-ancestors 'none'`: the status page holds the retry form) and content sniffing.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .route("/dead-letters/retry", post(retry))
        .with_state(state)
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                let h = r.headers_mut();
                h.insert(
                    header::X_FRAME_OPTIONS,
                    header::HeaderValue::from_static("DENY"),
                );
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static("frame-ancestors 'none'"),
                );
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    header::HeaderValue::from_static("nosniff"),
                );
                r
            },
        ))
}

/// Whether a `Host` header names this machine's loopback: `localhost` (or a name under
/// `.localhost`), `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:9090`
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// On a loopback address the admin server answers only requests addressed to a loopback name
/// (421 otherwise): a web page the operator opens cannot point its own host name at
/// 127.0.0.1 (DNS rebinding) and read the status page or `/metrics` as its own origin. A
/// request without `Host` (HTTP/1.0 tools) is served.
async fn loopback_host_only(
    State(allowed): State<Arc<Vec<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{FFFD}"));
    let named = |h: &str| {
        let name = h
            .rsplit_once(':')
            .map_or(h, |(n, _)| n)
            .trim_end_matches('.');
        allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    match host {
        Some(h) if !is_loopback_host(h) && !named(h) => (
            StatusCode::MISDIRECTED_REQUEST,
            "this admin server listens on a loopback address and answers only requests for \
             localhost, 127.0.0.1, [::1] or a name of [server] allowed_hosts\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// Binds `listen` (an error if taken) and serves until `stop` is cancelled, then finishes the
/// requests in progress.
pub async fn bind(
    listen: std::net::SocketAddr,
    allowed_hosts: Vec<String>,
    state: Arc<AdminState>,
    stop: CancellationToken,
) -> std::io::Result<(
    std::net::SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut app = router(state);
    if addr.ip().is_loopback() {
        app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(allowed_hosts),
            loopback_host_only,
        ));
    }
    let serve = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    };
    Ok((addr, serve))
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let Some(engine) = s.engine.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting (PIM token and family structures not obtained yet)\n",
        )
            .into_response();
    };
    match tokio::time::timeout(STORE_TIMEOUT, engine.store().backlog()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the state store failed: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the state store did not answer in time\n",
        )
            .into_response(),
    }
}

/// A Prometheus label value, escaped (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }
    /// The `_bucket` (cumulative, `le`), `_sum` and `_count` samples of a histogram.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = h
                .bounds
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Report fields that are not an asset outcome, exported as series of their own.
const NOT_OUTCOMES: [&str; 2] = ["seen", "pim_writes"];

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let mut t = Text(String::new());
    t.one("assetbridge_up", "gauge", "1 while the process runs.", 1);
    t.one(
        "assetbridge_ready",
        "gauge",
        "1 once the PIM token and family structures were obtained.",
        u8::from(s.engine.get().is_some()),
    );

    let sums = s.observer.by_family.lock().clone();
    t.head(
        "assetbridge_assets_total",
        "counter",
        "Assets processed since start, by family and outcome.",
    );
    for (family, fields) in &sums {
        for (outcome, n) in fields
            .iter()
            .filter(|(k, _)| !NOT_OUTCOMES.contains(&k.as_str()))
        {
            t.sample(
                "assetbridge_assets_total",
                &[("family", family), ("outcome", outcome)],
                n,
            );
        }
    }
    t.head(
        "assetbridge_changes_seen_total",
        "counter",
        "Changes read (DAM pages and inbox claims) since start, by family.",
    );
    for (family, fields) in &sums {
        let n = fields.get("seen").copied().unwrap_or(0);
        t.sample("assetbridge_changes_seen_total", &[("family", family)], n);
    }
    t.head(
        "assetbridge_pim_write_requests_total",
        "counter",
        "PIM write requests (batch PATCH, DELETE) since start, by family.",
    );
    for (family, fields) in &sums {
        let n = fields.get("pim_writes").copied().unwrap_or(0);
        t.sample(
            "assetbridge_pim_write_requests_total",
            &[("family", family)],
            n,
        );
    }
    let batches = s.observer.batches.lock().clone();
    t.head(
        "assetbridge_batches_total",
        "counter",
        "Batches (DAM pages, inbox claims) done since start, by family.",
    );
    for (family, n) in &batches {
        t.sample("assetbridge_batches_total", &[("family", family)], n);
    }
    let passes = s.observer.passes.lock().clone();
    t.head(
        "assetbridge_poll_pass_duration_seconds",
        "histogram",
        "Duration of the poll passes that finished since start (DAM read and PIM writes), by family.",
    );
    for (family, p) in &passes {
        t.histogram(
            "assetbridge_poll_pass_duration_seconds",
            &[("family", family)],
            &p.durations,
        );
    }
    let batch_durations = s.observer.batch_durations.lock().clone();
    t.head(
        "assetbridge_batch_duration_seconds",
        "histogram",
        "Duration of each write batch (≤ 100 changes of one family: mapping, diff, one PIM request, state recorded), by family.",
    );
    for (family, h) in &batch_durations {
        t.histogram(
            "assetbridge_batch_duration_seconds",
            &[("family", family)],
            h,
        );
    }
    t.head(
        "assetbridge_poll_last_finished_timestamp_seconds",
        "gauge",
        "When this process last finished a poll pass of the family (Unix time).",
    );
    for (family, p) in &passes {
        if let Some(at) = p.last_finished {
            t.sample(
                "assetbridge_poll_last_finished_timestamp_seconds",
                &[("family", family)],
                at,
            );
        }
    }

    if let Some(engine) = s.engine.get() {
        let c = engine.pim().stats();
        t.head(
            "assetbridge_pim_request_duration_seconds",
            "histogram",
            "Duration of the PIM attempts that got an answer (send → body read).",
        );
        t.histogram(
            "assetbridge_pim_request_duration_seconds",
            &[],
            &Histogram::of_latency(&c.request_latency),
        );
        let d = engine.dam().stats();
        t.one(
            "assetbridge_dam_requests_total",
            "counter",
            "HTTP requests sent to the DAM (every attempt: listing pages, single assets, files).",
            d.requests,
        );
        t.head(
            "assetbridge_dam_responses_total",
            "counter",
            "DAM answers by HTTP status.",
        );
        for (status, n) in &d.responses_by_status {
            t.sample(
                "assetbridge_dam_responses_total",
                &[("status", &status.to_string())],
                n,
            );
        }
        t.one(
            "assetbridge_dam_transport_errors_total",
            "counter",
            "DAM attempts without an answer.",
            d.transport_errors,
        );
        t.one(
            "assetbridge_dam_retries_total",
            "counter",
            "DAM attempts repeated after a transient failure.",
            d.retries,
        );
        t.head(
            "assetbridge_dam_request_duration_seconds",
            "histogram",
            "Time from sending a DAM attempt to its answer's status line and headers.",
        );
        t.histogram(
            "assetbridge_dam_request_duration_seconds",
            &[],
            &Histogram::of_latency(&d.request_latency),
        );
        t.one(
            "assetbridge_pim_requests_total",
            "counter",
            "HTTP requests sent to the PIM (every attempt, token requests included).",
            c.requests,
        );
        t.head(
            "assetbridge_pim_responses_total",
            "counter",
            "PIM answers by HTTP status.",
        );
        for (status, n) in &c.responses_by_status {
            t.sample(
                "assetbridge_pim_responses_total",
                &[("status", &status.to_string())],
                n,
            );
        }
        for (name, help, v) in [
            (
                "assetbridge_pim_transport_errors_total",
                "PIM attempts without an answer.",
                c.transport_errors,
            ),
            (
                "assetbridge_pim_retries_total",
                "PIM attempts repeated after a transient failure.",
                c.retries,
            ),
            (
                "assetbridge_pim_rate_limited_total",
                "429 answers from the PIM.",
                c.rate_limited,
            ),
            (
                "assetbridge_pim_token_refreshes_total",
                "Successful refresh_token grants.",
                c.token_refreshes,
            ),
            (
                "assetbridge_pim_password_grants_total",
                "Password grants.",
                c.password_grants,
            ),
            (
                "assetbridge_pim_refresh_failures_total",
                "Refused refresh_token grants.",
                c.refresh_failures,
            ),
            (
                "assetbridge_pim_unauthorized_replays_total",
                "Requests replayed after a 401.",
                c.unauthorized_replays,
            ),
            (
                "assetbridge_pim_batch_splits_total",
                "Batches split after a 413.",
                c.batch_splits,
            ),
            (
                "assetbridge_pim_structure_fetches_total",
                "Family structures fetched from the PIM (cache misses).",
                c.structure_fetches,
            ),
            (
                "assetbridge_pim_options_created_total",
                "Attribute options created in the PIM.",
                c.options_created,
            ),
            (
                "assetbridge_pim_media_uploads_total",
                "Media files uploaded to the PIM.",
                c.media_uploads,
            ),
            (
                "assetbridge_pim_media_bytes_total",
                "Bytes of the media files uploaded to the PIM.",
                c.media_bytes,
            ),
        ] {
            t.one(name, "counter", help, v);
        }
        t.one(
            "assetbridge_pim_rate_limit_wait_seconds_total",
            "counter",
            "Time waited on 429 Retry-After.",
            c.rate_limit_wait.as_secs_f64(),
        );
        t.one(
            "assetbridge_pim_throttle_wait_seconds_total",
            "counter",
            "Time waited on the client's own requests-per-second ceiling.",
            c.throttle_wait.as_secs_f64(),
        );
        t.one(
            "assetbridge_pim_max_in_flight",
            "gauge",
            "Most PIM calls in flight at once.",
            c.max_in_flight,
        );

        let store = engine.store();
        let backlog = tokio::time::timeout(STORE_TIMEOUT, store.backlog()).await;
        let dead = tokio::time::timeout(STORE_TIMEOUT, store.dead_letter_count()).await;
        let families = tokio::time::timeout(STORE_TIMEOUT, store.family_status()).await;
        t.one(
            "assetbridge_store_up",
            "gauge",
            "1 when the state store answered this scrape.",
            u8::from(matches!(
                (&backlog, &dead, &families),
                (Ok(Ok(_)), Ok(Ok(_)), Ok(Ok(_)))
            )),
        );
        if let Ok(Ok(families)) = families {
            // The store's view (shared by every instance), the connector's own positions
            // (`__journal`, ...) left out as on the status page.
            let families: Vec<_> = families
                .into_iter()
                .filter(|f| !f.family.starts_with("__"))
                .collect();
            let unix = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
            t.head(
                "assetbridge_family_cursor_timestamp_seconds",
                "gauge",
                "The DAM time of the family's poll cursor (Unix time): how far the sync has read.",
            );
            for f in &families {
                if let Some(c) = &f.cursor {
                    t.sample(
                        "assetbridge_family_cursor_timestamp_seconds",
                        &[("family", &f.family)],
                        unix(&c.updated_at),
                    );
                }
            }
            t.head(
                "assetbridge_family_last_success_timestamp_seconds",
                "gauge",
                "When a poll pass of the family last succeeded, by any instance (Unix time).",
            );
            for f in &families {
                if let Some(at) = &f.last_success {
                    t.sample(
                        "assetbridge_family_last_success_timestamp_seconds",
                        &[("family", &f.family)],
                        unix(at),
                    );
                }
            }
            t.head(
                "assetbridge_family_assets_written",
                "gauge",
                "Assets of the family written to the PIM, all time, as the store counts them.",
            );
            for f in &families {
                t.sample(
                    "assetbridge_family_assets_written",
                    &[("family", &f.family)],
                    f.assets_written,
                );
            }
        }
        if let Ok(Ok(b)) = backlog {
            t.head(
                "assetbridge_backlog",
                "gauge",
                "Inbox entries by state (delayed is part of pending).",
            );
            t.sample("assetbridge_backlog", &[("state", "pending")], b.pending);
            t.sample(
                "assetbridge_backlog",
                &[("state", "in_flight")],
                b.in_flight,
            );
            t.sample("assetbridge_backlog", &[("state", "delayed")], b.delayed);
            t.one(
                "assetbridge_backlog_oldest_age_seconds",
                "gauge",
                "Age of the oldest inbox entry (0 when empty).",
                b.oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            );
        }
        if let Ok(Ok(n)) = dead {
            t.one(
                "assetbridge_dead_letters",
                "gauge",
                "Dead letters in the store.",
                n,
            );
        }
    }

    if let Some(u) = assetbridge_store::page_cache::usage() {
        t.head(
            "assetbridge_sqlite_page_cache_slots",
            "gauge",
            "SQLite's page-cache region (ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB): its slots of one page, those in use, and the most in use at once.",
        );
        for (state, n) in [
            ("capacity", u.capacity as i64),
            ("in_use", u.in_use),
            ("highest", u.highest),
        ] {
            t.sample(
                "assetbridge_sqlite_page_cache_slots",
                &[("state", state)],
                n,
            );
        }
    }

    if let Some(w) = s.webhooks.get() {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(w.snapshot()) {
            t.head(
                "assetbridge_webhook_events_total",
                "counter",
                "Webhook server counters since start, by event.",
            );
            for (event, v) in fields {
                if let Some(n) = v.as_u64() {
                    t.sample("assetbridge_webhook_events_total", &[("event", &event)], n);
                }
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.0,
    )
        .into_response()
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}</style></head><body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page(
            "assetbridge",
            &format!(
                "<p>The state store is unavailable: {}</p>",
                esc(&e.to_string())
            ),
        )),
    )
        .into_response()
}

/// The status page. Its elements keep stable ids and data attributes for scripts and the
/// browser test: `#families tr[data-family] td.<column>`, `#backlog td.<state>`,
/// `#throughput tr[data-window] td.<column>`, `#recent`, `#dead-letter-count`,
/// `#dead-letters tr[data-dead-letter-id]`, `#retry-form`, `#admin-token`, `#retry-all`; the
/// retry action's answer is `#result`.
async fn status_page(State(s): State<Arc<AdminState>>) -> Response {
    let Some(engine) = s.engine.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(page("assetbridge", "<h1>assetbridge</h1><p>Starting…</p>")),
        )
            .into_response();
    };
    let store = engine.store();
    let gathered = tokio::time::timeout(PAGE_TIMEOUT, async {
        let families = store.family_status().await?;
        // PIM write outcomes of the last hour per family (the families shown), and over the
        // throughput windows for all families: what `assetbridge status` shows.
        let mut last_hour = BTreeMap::new();
        for code in s.configured.iter().chain(
            families
                .iter()
                .map(|f| &f.family)
                .filter(|f| !f.starts_with("__")),
        ) {
            if !last_hour.contains_key(code) {
                let o = store
                    .outcomes(Duration::from_secs(3600), Some(code))
                    .await?;
                last_hour.insert(code.clone(), o);
            }
        }
        let mut throughput = Vec::with_capacity(THROUGHPUT_WINDOWS.len());
        for (name, window) in THROUGHPUT_WINDOWS {
            throughput.push((name, window, store.outcomes(window, None).await?));
        }
        let backlog = store.backlog().await?;
        let count = store.dead_letter_count().await?;
        let listed = store
            .dead_letters(&DeadLetterFilter {
                limit: Some(DEAD_LETTERS_SHOWN),
                ..DeadLetterFilter::default()
            })
            .await?;
        // The most recent failures: the highest ids, in one read.
        let recent = store.recent_dead_letters(RECENT_FAILURES).await?;
        Ok::<_, assetbridge_store::StoreError>((
            families, last_hour, throughput, backlog, count, listed, recent,
        ))
    })
    .await;
    let (known, last_hour, throughput, backlog, count, listed, recent) = match gathered {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return unavailable(e),
        Err(_) => return unavailable("no answer in time"),
    };
    let mut known: BTreeMap<String, FamilyStatus> = known
        .into_iter()
        .filter(|f| !f.family.starts_with("__"))
        .map(|f| (f.family.clone(), f))
        .collect();
    let mut rows: Vec<FamilyStatus> = Vec::new();
    for code in &s.configured {
        rows.push(known.remove(code).unwrap_or(FamilyStatus {
            family: code.clone(),
            cursor: None,
            last_success: None,
            assets_written: 0,
        }));
    }
    rows.extend(known.into_values());
    let sums = s.observer.by_family.lock().clone();

    let mut b = String::from(
        "<h1>assetbridge</h1>\n<h2>Families</h2>\n<table id=\"families\">\
<tr><th>Family</th><th>Cursor</th><th>Last success</th><th>Assets written (all time)</th>\
<th>Written (1h)</th><th>Failed (1h)</th>\
<th>Created</th><th>Updated</th><th>Unchanged</th><th>Deleted</th><th>Failed</th></tr>\n",
    );
    for f in &rows {
        let cursor = f
            .cursor
            .as_ref()
            .map(|c| format!("{} / {}", c.updated_at.to_rfc3339(), c.dam_id))
            .unwrap_or_else(|| "—".into());
        let last = f
            .last_success
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into());
        let n = |k: &str| {
            sums.get(&f.family)
                .and_then(|m| m.get(k))
                .copied()
                .unwrap_or(0)
        };
        let hour = last_hour.get(&f.family).copied().unwrap_or_default();
        let _ = writeln!(
            b,
            "<tr data-family=\"{fam}\"><td>{fam}</td><td class=\"cursor\">{}</td><td class=\"last-success\">{}</td>\
<td class=\"assets-written\">{}</td><td class=\"succeeded-1h\">{}</td><td class=\"failed-1h\">{}</td>\
<td class=\"created\">{}</td><td class=\"updated\">{}</td>\
<td class=\"unchanged\">{}</td><td class=\"deleted\">{}</td><td class=\"failed\">{}</td></tr>",
            esc(&cursor),
            esc(&last),
            f.assets_written,
            hour.succeeded,
            hour.failed,
            n("created"),
            n("updated"),
            n("unchanged"),
            n("deleted"),
            n("failed"),
            fam = esc(&f.family),
        );
    }
    b.push_str(
        "</table>\n<p>Written / failed (1h): PIM write outcomes of the last hour, every instance \
(as <code>assetbridge status</code>). Created … failed: since this process started.</p>\n",
    );
    let _ = writeln!(
        b,
        "<h2>Backlog</h2>\n<table id=\"backlog\"><tr><th>Pending</th><th>Delayed</th><th>In flight</th>\
<th>Total</th><th>Oldest (s)</th></tr>\n<tr><td class=\"pending\">{}</td><td class=\"delayed\">{}</td>\
<td class=\"in-flight\">{}</td><td class=\"total\">{}</td><td class=\"oldest\">{}</td></tr></table>",
        backlog.pending,
        backlog.delayed,
        backlog.in_flight,
        backlog.pending + backlog.in_flight,
        backlog
            .oldest_age
            .map(|d| format!("{:.0}", d.as_secs_f64()))
            .unwrap_or_else(|| "—".into()),
    );
    b.push_str(
        "<h2>Throughput</h2>\n<table id=\"throughput\"><tr><th>Window</th><th>Written</th>\
<th>Failed</th><th>Written per minute</th><th>Error rate</th></tr>\n",
    );
    for (name, window, o) in &throughput {
        let _ = writeln!(
            b,
            "<tr data-window=\"{name}\"><td>last {name}</td><td class=\"succeeded\">{}</td>\
<td class=\"failed\">{}</td><td class=\"per-minute\">{:.1}</td><td class=\"error-rate\">{}</td></tr>",
            o.succeeded,
            o.failed,
            o.succeeded as f64 / (window.as_secs_f64() / 60.0),
            percent(o),
        );
    }
    b.push_str(
        "</table>\n<p>PIM write outcomes recorded by every instance sharing the store.</p>\n",
    );

    let reason = |d: &assetbridge_store::DeadLetter| {
        let mut r = format!("{}: {}", d.reason.kind, d.reason.message);
        if let Some(st) = d.reason.pim_status {
            let _ = write!(r, " (PIM {st}");
            if let Some(m) = &d.reason.pim_message {
                let _ = write!(r, ": {m}");
            }
            r.push(')');
        }
        r
    };
    let _ = writeln!(
        b,
        "<h2>Recent failures</h2>\n<table id=\"recent\"><tr><th>Id</th><th>When</th><th>Family</th>\
<th>DAM id</th><th>Reason</th></tr>"
    );
    for d in recent.iter().rev() {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"when\">{}</td><td class=\"family\">{}</td><td class=\"dam-id\">{}</td>\
<td class=\"reason\">{}</td></tr>",
            d.id,
            esc(&d.failed_at.to_rfc3339()),
            esc(d.family.as_deref().unwrap_or("")),
            esc(d.dam_id.as_deref().unwrap_or("")),
            esc(&reason(d)),
        );
    }
    b.push_str("</table>\n");

    let disabled = if s.token.is_some() { "" } else { " disabled" };
    let _ = writeln!(
        b,
        "<h2>Dead letters</h2>\n<p>Dead letters: <span id=\"dead-letter-count\" class=\"dead-letter-count\">{count}</span> \
(listing the first {} by id).</p>\n<form id=\"retry-form\" method=\"post\" action=\"/dead-letters/retry\">\n\
<table id=\"dead-letters\"><tr><th></th><th>Id</th><th>Family</th><th>DAM id</th><th>Attempts</th><th>Reason</th></tr>",
        listed.len().min(DEAD_LETTERS_SHOWN)
    );
    for d in listed.iter().take(DEAD_LETTERS_SHOWN) {
        let _ = writeln!(
            b,
            "<tr data-dead-letter-id=\"{id}\"><td><input type=\"checkbox\" name=\"ids\" value=\"{id}\"{disabled}></td>\
<td class=\"id\">{id}</td><td class=\"family\">{}</td><td class=\"dam-id\">{}</td><td class=\"attempts\">{}</td>\
<td class=\"reason\">{}</td></tr>",
            esc(d.family.as_deref().unwrap_or("")),
            esc(d.dam_id.as_deref().unwrap_or("")),
            d.attempts,
            esc(&reason(d)),
            id = d.id,
        );
    }
    b.push_str("</table>\n");
    if s.token.is_some() {
        b.push_str(
            "<p><label>Admin token <input id=\"admin-token\" type=\"password\" name=\"token\" autocomplete=\"off\"></label>\n\
<label><input id=\"retry-all\" type=\"checkbox\" name=\"all\" value=\"1\"> all dead letters</label>\n\
<button type=\"submit\">Retry</button></p>\n",
        );
    } else {
        b.push_str(
            "<p><button type=\"submit\" disabled>Retry</button> \
(disabled: no <code>[server] admin_token</code> is configured)</p>\n",
        );
    }
    b.push_str("</form>\n");
    Html(page("assetbridge status", &b)).into_response()
}

/// An error rate as a percentage with one decimal (`0.0%` when nothing was written).
fn percent(o: &OutcomeCounts) -> String {
    format!("{:.1}%", o.error_rate() * 100.0)
}

/// Decodes `application/x-www-form-urlencoded` into pairs (`+` is a space, `%XX` a byte).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Equal in time independent of where the inputs differ (same length assumed public).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn retry(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = |status: StatusCode, msg: String| {
        (
            status,
            Html(page(
                "assetbridge: retry",
                &format!(
                    "<p id=\"result\">{}</p><p><a href=\"/\">Back to the status page</a></p>",
                    esc(&msg)
                ),
            )),
        )
            .into_response()
    };
    let Some(token) = &s.token else {
        return reply(
            StatusCode::FORBIDDEN,
            "retrying from the status page is disabled: no [server] admin_token is configured"
                .into(),
        );
    };
    let pairs = form_pairs(&body);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone())
        })
        // The page's token field left empty: no token given.
        .filter(|t| !t.is_empty());
    match given {
        Some(g) if same(g.as_bytes(), token.expose_secret().as_bytes()) => {}
        Some(_) => return reply(StatusCode::UNAUTHORIZED, "wrong admin token".into()),
        None => {
            return reply(
                StatusCode::UNAUTHORIZED,
                "the admin token is required".into(),
            )
        }
    }
    let all = pairs
        .iter()
        .any(|(k, v)| k == "all" && !v.is_empty() && v != "0");
    let mut ids = Vec::new();
    for (k, v) in &pairs {
        if k == "ids" {
            for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                match part.trim().parse::<i64>() {
                    Ok(id) => ids.push(id),
                    Err(_) => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            format!("`{part}` is not a dead-letter id"),
                        )
                    }
                }
            }
        }
    }
    if !all && ids.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "choose dead letters (`ids`) or `all`".into(),
        );
    }
    let Some(engine) = s.engine.get() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting; try again".into(),
        );
    };
    let filter = if all {
        DeadLetterFilter::default()
    } else {
        DeadLetterFilter::ids(ids)
    };
    match tokio::time::timeout(
        Duration::from_secs(60),
        engine.store().retry_dead_letters(&filter),
    )
    .await
    {
        Ok(Ok(n)) => {
            tracing::info!(
                retried = n,
                all,
                "dead letters moved back to the inbox (status page)"
            );
            reply(
                StatusCode::OK,
                format!("retried: {n} dead letter(s) moved back to the inbox"),
            )
        }
        Ok(Err(e)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state store failed: {e}"),
        ),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store did not answer in time".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_labels_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        static BOUNDS: [f64; 3] = [0.5, 1.0, 5.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.2, 0.5, 0.7, 3.0, 9.0] {
            h.observe(v);
        }
        let mut t = Text(String::new());
        t.histogram("x_seconds", &[("family", "packshots")], &h);
        assert_eq!(
            t.0,
            "x_seconds_bucket{family=\"packshots\",le=\"0.5\"} 2\n\
x_seconds_bucket{family=\"packshots\",le=\"1\"} 3\n\
x_seconds_bucket{family=\"packshots\",le=\"5\"} 4\n\
x_seconds_bucket{family=\"packshots\",le=\"+Inf\"} 5\n\
x_seconds_sum{family=\"packshots\"} 13.4\n\
x_seconds_count{family=\"packshots\"} 5\n"
        );
    }

    #[test]
    fn poll_passes_are_timed_from_start_to_finish() {
        let o = MetricsObserver::default();
        // A finish without a start (a pass that began before a restart) is not observed.
        o.family_finished("packshots", &SyncReport::default());
        assert_eq!(o.passes.lock()["packshots"].durations.count(), 0);
        o.family_started("packshots");
        o.family_finished("packshots", &SyncReport::default());
        o.family_started("lifestyle");
        let passes = o.passes.lock();
        assert_eq!(passes["packshots"].durations.count(), 1);
        assert!(passes["packshots"].last_finished.is_some());
        assert!(passes["packshots"].started.is_none());
        // In progress: not observed yet.
        assert_eq!(passes["lifestyle"].durations.count(), 0);
        assert!(passes["lifestyle"].last_finished.is_none());
    }

    #[test]
    fn write_batches_are_timed_per_family() {
        let o = MetricsObserver::default();
        let r = SyncReport::default();
        o.batch_written("packshots", &r, Duration::from_millis(40));
        o.batch_written("packshots", &r, Duration::from_millis(700));
        o.batch_written("lifestyle", &r, Duration::from_millis(3));
        let h = o.batch_durations.lock();
        assert_eq!(h["packshots"].count(), 2);
        assert!((h["packshots"].sum - 0.74).abs() < 1e-9);
        // 40 ms falls in the 50 ms bucket, 700 ms in the 1 s one.
        assert_eq!(h["packshots"].counts[3], 1);
        assert_eq!(h["packshots"].counts[7], 1);
        assert_eq!(h["lifestyle"].counts[0], 1);
    }

    #[test]
    fn forms_decode_repeated_keys_and_escapes() {
        let p = form_pairs(b"ids=1&ids=22&token=a%2Bb+c%&all");
        assert_eq!(
            p,
            vec![
                ("ids".into(), "1".into()),
                ("ids".into(), "22".into()),
                ("token".into(), "a+b c%".into()),
                ("all".into(), String::new()),
            ]
        );
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[tokio::test]
    async fn not_ready_until_the_engine_is_wired() {
        let state = AdminState::new(vec!["packshots".into()], None);
        assert_eq!(
            readyz(State(state.clone())).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_page(State(state.clone())).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Without a token, the retry action is refused whatever the request.
        let r = retry(State(state), HeaderMap::new(), Bytes::from_static(b"all=1")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
