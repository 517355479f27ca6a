//! A generic REST DAM, seeded deterministically, for tests, `demo` and benchmarks.
//!
//! # The API it serves
//!
//! - `GET /api/assets?updated_since=<RFC3339 | unix seconds | unix millis>&limit=<n>&type=<family>`
//!   plus the paging parameter of the configured [`PagingStyle`]. Items are ordered by
//!   `(updated_at, id)` ascending; `updated_since` is inclusive (`>=`). Deleted assets are listed
//!   as tombstones (`"deleted": true`, `updated_at` = the deletion time) so that a poller sees
//!   deletions. A `limit` above [`DamEmulatorConfig::page_size_max`] is **clamped** to it (no
//!   error); `limit=0`, a non-number, a bad `updated_since`, a bad cursor, or the paging
//!   parameter of another paging style give `400 {"error": "bad_request", "message": ...}`.
//!   Unknown `type` values list nothing. Other parameters are ignored.
//!   - [`PagingStyle::PageNumber`]: `page=<1-based>`; body `{"items": [...], "page": n,
//!     "limit": l, "total": N}` (`total` counts every item matching the filters). Like SQL
//!     `OFFSET`, this style is not stable under concurrent changes.
//!   - [`PagingStyle::CursorToken`]: `cursor=<opaque>`; body `{"items": [...], "next_cursor":
//!     "<opaque>" | null}`. The token encodes the `(updated_at, id)` position of the page's last
//!     item, so paging is stable under concurrent changes (a changed asset moves to the end and
//!     is listed again; nothing is skipped).
//!   - [`PagingStyle::LinkHeader`]: the body is a bare JSON array; while more items follow, a
//!     `Link: <http://host/api/assets?...&after=<opaque>>; rel="next"` header points to the next
//!     page (same position token as the cursor style).
//! - `GET /api/assets/{id}`: one asset (`404` once deleted).
//! - `GET /files/{id}/{name}`: the asset's file — deterministic JPEG-looking bytes whose SHA-1 is
//!   the record's `checksum` and whose length is its `size` (`404` if `name` is not the asset's
//!   current name or the asset is deleted).
//!
//! Authentication ([`DamEmulatorAuth`]) applies to `/api/*` and `/files/*`; the default is
//! `Authorization: Bearer dam-token`. Faults ([`DamFaults`]: latency, `429` with `Retry-After`,
//! `503`) apply to the same routes.
//!
//! # Test control: `/_emulator/*` (no auth, no faults)
//!
//! `POST /_emulator/touch {"n": 3}`, `POST /_emulator/add {"n": 3}`,
//! `POST /_emulator/delete {"ids": [..]} | {"n": 3}` (all answer `{"ids": [..]}`),
//! `PATCH /_emulator/assets/{id}` (a JSON merge patch; answers the record),
//! `GET /_emulator/stats`, `GET /_emulator/now`, `PUT /_emulator/faults` (a [`DamFaults`] as JSON
//! with `latency_ms`), `POST /_emulator/fail_next {"statuses": [503, 429]}`.
//!
//! # Records
//!
//! ```json
//! {"id": "3F2A9C1B-77E0-0C4D-9A1E-5B2C8D7E6F10", "name": "SKU-012345_front.jpg",
//!  "type": "packshots", "url": "http://127.0.0.1:port/files/<id>/SKU-012345_front.jpg",
//!  "created_at": "2025-12-20T08:00:00Z", "updated_at": "2026-01-01T00:00:07Z",
//!  "deleted": false, "checksum": "<sha1 hex>", "size": 2817,
//!  "metadata": {"title": "Classic red shirt", "title_fr": "chemise rouge",
//!               "title_de": "Hemd rot", "description": "...", "tags": ["summer", "new"],
//!               "width": 1200, "height": 800, "sku": "SKU-012345",
//!               "supplier": "Acme Textiles", "color": "red"}}
//! ```
//!
//! The same config (seed included) gives the same records, ids and timestamps. Ids are
//! uuid-like and sort like their position in the emulator's index; seeded assets get increasing
//! `updated_at` seconds apart, about one in four sharing its predecessor's timestamp. The
//! emulator has a logical clock ([`DamEmulator::now`]): every mutation is stamped one second
//! after the previous latest change, never with the wall clock.
//!
//! Storage is compact (a few dozen bytes per asset, plus each file's checksum once computed;
//! records are rendered on demand, listed ones straight to JSON text) and listing costs
//! O(log n + page) in every paging style, so a million assets are fine.

mod http;
mod log;
mod store;

pub use store::TAGS;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use store::{Store, StoreParams};

/// How the listing pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagingStyle {
    /// `page=<1-based>`; body `{"items", "page", "limit", "total"}`.
    PageNumber,
    /// `cursor=<opaque>`; body `{"items", "next_cursor"}`. The default.
    #[default]
    CursorToken,
    /// Bare JSON array; `Link: <...>; rel="next"` while more follow.
    LinkHeader,
}

/// How clients must authenticate on `/api/*` and `/files/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamEmulatorAuth {
    /// Anyone may call.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `<header>: <key>`.
    ApiKey {
        /// The header name, e.g. `X-Api-Key`.
        header: String,
        /// The expected key.
        key: String,
    },
}

impl Default for DamEmulatorAuth {
    /// `Bearer("dam-token")`.
    fn default() -> Self {
        DamEmulatorAuth::Bearer("dam-token".to_owned())
    }
}

/// Faults injected on `/api/*` and `/files/*` (not on `/_emulator/*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DamFaults {
    /// Delay added to every request. Default: none. In JSON: `latency_ms`.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Share of requests answered `503` (0.0–1.0). Default: 0.
    pub rate_5xx: f64,
    /// Share of requests answered `429` with `Retry-After`. Default: 0.
    pub rate_429: f64,
    /// The `Retry-After` of those `429`s, in seconds. Default: 1.
    pub retry_after_secs: u64,
}

impl Default for DamFaults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            rate_5xx: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The emulator's configuration. `DamEmulatorConfig::default()` gives 10 000 assets.
#[derive(Debug, Clone)]
pub struct DamEmulatorConfig {
    /// Assets seeded. Default: 10 000.
    pub assets: usize,
    /// Seed of everything generated. Default: 42.
    pub seed: u64,
    /// Asset families: each asset's `type` is one of them. Default: `["packshots", "lifestyle"]`.
    pub families: Vec<String>,
    /// Paging style of `GET /api/assets`. Default: [`PagingStyle::CursorToken`].
    pub paging: PagingStyle,
    /// Largest page; a larger `limit` is clamped to it. Also the page size when `limit` is
    /// absent. Default: 100.
    pub page_size_max: usize,
    /// Delay added to every `/api` and `/files` request. Default: none.
    pub latency: Duration,
    /// Share of requests answered `503`. Default: 0.
    pub rate_5xx: f64,
    /// Share of requests answered `429` with `Retry-After`. Default: 0.
    pub rate_429: f64,
    /// `Retry-After` of those `429`s, in seconds. Default: 1.
    pub retry_after_secs: u64,
    /// Authentication. Default: `Authorization: Bearer dam-token`.
    pub auth: DamEmulatorAuth,
    /// `updated_at` of the first seeded asset. Default: 2026-01-01T00:00:00Z.
    pub base_time: DateTime<Utc>,
    /// SKU numbers used in file names (`SKU-<6 digits>`); several assets share a SKU.
    /// Default: `1..=5000`.
    pub skus: RangeInclusive<u32>,
    /// File sizes in bytes (minimum 8). Default: `1024..=4096` (small, so that listings
    /// that checksum every file stay fast).
    pub file_sizes: RangeInclusive<u32>,
    /// Base of the records' `url`s. Default: the served address (`http://127.0.0.1:port`) once
    /// [`DamEmulator::serve`] runs, `http://dam.local` before.
    pub public_base_url: Option<String>,
}

impl Default for DamEmulatorConfig {
    fn default() -> Self {
        Self {
            assets: 10_000,
            seed: 42,
            families: vec!["packshots".to_owned(), "lifestyle".to_owned()],
            paging: PagingStyle::default(),
            page_size_max: 100,
            latency: Duration::ZERO,
            rate_5xx: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
            auth: DamEmulatorAuth::default(),
            base_time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            skus: 1..=5000,
            file_sizes: 1024..=4096,
            public_base_url: None,
        }
    }
}

/// What the emulator served so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamStats {
    /// `GET /api/assets` requests (faulted and refused ones included).
    pub list_requests: u64,
    /// `GET /api/assets/{id}` requests.
    pub get_requests: u64,
    /// `GET /files/{id}/{name}` requests.
    pub file_requests: u64,
    /// `/_emulator/*` requests.
    pub control_requests: u64,
    /// Listing pages answered `200`.
    pub pages_served: u64,
    /// Items in those pages.
    pub items_served: u64,
    /// Requests answered with an injected `429` or `503`.
    pub faults_injected: u64,
    /// Requests refused `401`.
    pub unauthorized: u64,
}

/// Errors of the mutation API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DamEmulatorError {
    /// No such asset (or it is deleted).
    #[error("no asset `{0}`")]
    UnknownAsset(String),
    /// A `type` that is not one of the configured families.
    #[error("unknown family `{0}`")]
    UnknownFamily(String),
    /// A patch that is not an object, or touches a derived field.
    #[error("invalid patch: {0}")]
    InvalidPatch(String),
}

struct FaultState {
    faults: DamFaults,
    /// Statuses to answer the next requests with, in order.
    fail_next: std::collections::VecDeque<u16>,
    rng: u64,
}

pub(crate) struct Inner {
    store: RwLock<Store>,
    paging: Mutex<PagingStyle>,
    page_size_max: usize,
    auth: DamEmulatorAuth,
    faults: Mutex<FaultState>,
    stats: Mutex<DamStats>,
    fixed_base: bool,
}

/// The emulator: a cheap-to-clone handle on shared state. Serve it with [`DamEmulator::serve`]
/// or mount [`DamEmulator::router`]; mutate it directly or over `/_emulator/*`.
#[derive(Clone)]
pub struct DamEmulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DamEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DamEmulator")
            .field("assets", &self.inner.store.read().len())
            .finish_non_exhaustive()
    }
}

impl DamEmulator {
    /// Seeds an emulator. Panics on an empty `families` list or `page_size_max == 0`.
    pub fn new(cfg: DamEmulatorConfig) -> Self {
        assert!(cfg.page_size_max > 0, "page_size_max must be at least 1");
        let fixed_base = cfg.public_base_url.is_some();
        let params = StoreParams {
            seed: cfg.seed,
            families: cfg.families.clone(),
            skus: cfg.skus.clone(),
            file_sizes: cfg.file_sizes.clone(),
            files_base: cfg
                .public_base_url
                .clone()
                .unwrap_or_else(|| "http://dam.local".to_owned())
                .trim_end_matches('/')
                .to_owned(),
        };
        let store = Store::seed(params, cfg.assets, cfg.base_time);
        Self {
            inner: Arc::new(Inner {
                store: RwLock::new(store),
                paging: Mutex::new(cfg.paging),
                page_size_max: cfg.page_size_max,
                auth: cfg.auth,
                faults: Mutex::new(FaultState {
                    faults: DamFaults {
                        latency: cfg.latency,
                        rate_5xx: cfg.rate_5xx,
                        rate_429: cfg.rate_429,
                        retry_after_secs: cfg.retry_after_secs,
                    },
                    fail_next: Default::default(),
                    rng: store::mix(cfg.seed ^ 0xFA17),
                }),
                stats: Mutex::new(DamStats::default()),
                fixed_base,
            }),
        }
    }

    /// The axum router serving the API and `/_emulator/*`.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Binds `addr` (use port 0 for a free port) and serves in a background task until the
    /// returned [`RunningDam`] is shut down or dropped. Unless `public_base_url` was configured,
    /// records' `url`s then point at this server's `/files/...`.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningDam> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        if !self.inner.fixed_base {
            self.inner.store.write().set_files_base(base_url.clone());
        }
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningDam {
            base_url,
            addr,
            emulator: self.clone(),
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The current paging style.
    pub fn paging(&self) -> PagingStyle {
        *self.inner.paging.lock()
    }

    /// Switches the paging style at runtime.
    pub fn set_paging(&self, paging: PagingStyle) {
        *self.inner.paging.lock() = paging;
    }

    /// The asset families (values of `type`).
    pub fn families(&self) -> Vec<String> {
        self.inner.store.read().families().to_vec()
    }

    /// The logical clock: the `updated_at` of the latest change (seeded or mutated).
    pub fn now(&self) -> DateTime<Utc> {
        store::ts(self.inner.store.read().now())
    }

    /// Moves the logical clock forward (the next mutation is stamped after it).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.store.write().advance(by.as_secs() as i64);
    }

    /// Changes the metadata (a new title, `v2`, `v3`...) of `n` live assets chosen
    /// deterministically (seed + mutation count), stamping them all with one new tick of the
    /// clock. Returns their ids, sorted. Fewer if fewer assets are live.
    pub fn touch(&self, n: usize) -> Vec<String> {
        self.inner.store.write().touch(n)
    }

    /// Creates `n` assets stamped with one new tick. Returns their ids, sorted.
    pub fn add(&self, n: usize) -> Vec<String> {
        self.inner.store.write().add(n)
    }

    /// Deletes the given assets (they become tombstones stamped with one new tick). Unknown or
    /// already deleted ids are skipped. Returns the ids deleted now, sorted.
    pub fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Vec<String> {
        let ids: Vec<String> = ids.iter().map(|s| s.as_ref().to_owned()).collect();
        self.inner.store.write().delete(&ids)
    }

    /// Removes the given assets from every listing **without** a tombstone, as a DAM that does
    /// not list deleted assets (a poller never sees the deletion; only a full comparison finds
    /// it). `GET /api/assets/{id}` then answers `404`. Unknown or already deleted ids are
    /// skipped. The clock does not move. Returns the ids removed now, sorted.
    pub fn purge<S: AsRef<str>>(&self, ids: &[S]) -> Vec<String> {
        let ids: Vec<String> = ids.iter().map(|s| s.as_ref().to_owned()).collect();
        self.inner.store.write().purge(&ids)
    }

    /// Deletes `n` live assets chosen deterministically. Returns their ids, sorted.
    pub fn delete_some(&self, n: usize) -> Vec<String> {
        self.inner.store.write().delete_some(n)
    }

    /// Applies a JSON merge patch (RFC 7386) to an asset's record — e.g.
    /// `{"name": "x.jpg", "metadata": {"title": "New"}}` or `{"type": "lifestyle"}` — and stamps
    /// it with a new tick. `id`, `updated_at`, `created_at`, `deleted`, `url`, `checksum` and
    /// `size` cannot be patched. Returns the new record.
    pub fn set(&self, id: &str, patch: &Value) -> Result<Value, DamEmulatorError> {
        self.inner.store.write().set(id, patch)
    }

    /// An asset's record as a listing would show it (a tombstone once deleted).
    pub fn get(&self, id: &str) -> Option<Value> {
        self.inner.store.read().get(id)
    }

    /// The bytes `GET /files/{id}/{name}` serves for an asset (with its current name), if live.
    pub fn file(&self, id: &str) -> Option<Vec<u8>> {
        let store = self.inner.store.read();
        let record = store.get(id)?;
        store.file(id, record["name"].as_str()?)
    }

    /// Assets not deleted.
    pub fn count(&self) -> usize {
        self.inner.store.read().live()
    }

    /// Assets including tombstones (what an unfiltered listing returns).
    pub fn count_with_tombstones(&self) -> usize {
        self.inner.store.read().len()
    }

    /// Ids in listing order (`(updated_at, id)`), tombstones included, optionally only those
    /// with `updated_at >= since` and of one family. For test assertions.
    pub fn ordered_ids(&self, since: Option<DateTime<Utc>>, family: Option<&str>) -> Vec<String> {
        self.inner
            .store
            .read()
            .ordered_ids(since.map(http::ceil_secs), family)
    }

    /// What was served so far.
    pub fn stats(&self) -> DamStats {
        self.inner.stats.lock().clone()
    }

    /// Resets the statistics.
    pub fn reset_stats(&self) {
        *self.inner.stats.lock() = DamStats::default();
    }

    /// Replaces the faults (latency, rates of `429` / `503`).
    pub fn set_faults(&self, faults: DamFaults) {
        self.inner.faults.lock().faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> DamFaults {
        self.inner.faults.lock().faults.clone()
    }

    /// Answers the next `/api` or `/files` requests with these statuses, in order (a `429`
    /// carries `Retry-After` as configured), before any rate-based fault.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.faults.lock().fail_next.extend(statuses);
    }
}

/// A served emulator. Dropping it (or [`RunningDam::shutdown`]) stops the server.
#[derive(Debug)]
pub struct RunningDam {
    /// `http://127.0.0.1:<port>` — the DAM's base URL.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    emulator: DamEmulator,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningDam {
    /// The emulator behind the server (for mutations and stats).
    pub fn emulator(&self) -> &DamEmulator {
        &self.emulator
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until the server fails (for `assetbridge emulate dam --listen`: select this
    /// against Ctrl-C).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep_running = self.shutdown.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for RunningDam {
    type Target = DamEmulator;
    fn deref(&self) -> &DamEmulator {
        &self.emulator
    }
}
