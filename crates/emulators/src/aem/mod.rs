//! AEM as a Cloud Service (Assets Author API), Adobe IMS and Adobe I/O Events, emulated.
//!
//! One server plays every Adobe role the connector talks to:
//!
//! - **IMS** — `POST /ims/token/v3` (client credentials, form-urlencoded; see [`ims`]).
//! - **AEM author** — `GET` / `PATCH /adobe/assets/{assetId}/metadata` (see [`assets`]). Every
//!   request to it is logged ([`AemEmulator::requests`], [`AemEmulator::patches`]). A PATCH that
//!   changes values emits the `aem.assets.asset.metadata_updated` echo.
//! - **I/O Events journal** — `GET /events/organizations/{org}/integrations/{int}/{registration}`
//!   (see [`journal`]). Every emitted event lands in it.
//! - **I/O Events sender** — [`AemEmulator::deliver`] POSTs signed deliveries to a webhook, with
//!   Adobe's headers and retry rules on a compressed clock; the public keys are served at
//!   `GET /prod/keys/pub-key-<id>.pem` so the verifier can use this server as its key origin
//!   (see [`sender`]).
//!
//! Where the reference marks Adobe behaviour as unverified, the choice made here is marked
//! `\[unverified]` in the docs of the handler concerned.
//!
//! Time: token expiry and journal retention follow a virtual clock (the real monotonic clock
//! plus [`AemEmulator::advance_clock`]), so tests can expire things without sleeping.

pub mod assets;
pub mod ims;
pub mod journal;
pub mod sender;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use assets::AemRequest;
pub use sender::{
    ChallengeCheck, DeliveryAttempt, DeliveryMode, DeliveryOutcome, DeliveryRecord,
    DeliverySigning, EmulatorKey, SignatureMode,
};

/// Settings of an [`AemEmulator`].
#[derive(Debug, Clone)]
pub struct AemEmulatorConfig {
    /// The author host name the emulated AEM pretends to be; events carry it as
    /// `repo:repositoryId`. Default: `author-p12345-e67890.adobeaemcloud.com`.
    pub author_host: String,
    /// The OAuth Server-to-Server credential IMS accepts. Default: `emulated-client-id`.
    pub client_id: String,
    /// Default: `emulated-client-secret`.
    pub client_secret: String,
    /// Scopes the credential may request. Default: `openid`, `AdobeID`, `aem.assets.author`,
    /// `aem.folders`.
    pub allowed_scopes: Vec<String>,
    /// `X-Api-Key` values AEM and the journal accept. Default: empty = the client id only.
    pub accepted_api_keys: Vec<String>,
    /// IMS org id (`x-ims-org-id` of journal calls). Default: `EMULATED0000000000000000@AdobeOrg`.
    pub org_id: String,
    /// Journal URL parts. Defaults: `54108`, `f89067f2-0d50-4bb2-bf78-209d0eacb6eb`.
    pub integration_id: String,
    pub registration_id: String,
    /// `expires_in` of issued tokens, seconds. Default: 86399.
    pub token_expires_in: u64,
    /// How long journaled events are kept (virtual clock). Default: 7 days.
    pub journal_retention: Duration,
    /// `limit` of a journal request that sets none. Default: 100 \[unverified].
    pub journal_default_limit: usize,
    /// `retry-after` of a 204 journal answer, seconds. Default: 10.
    pub journal_retry_after_secs: u64,
    /// How long one minute of Adobe's delivery retry schedule lasts (1 m, 2 m, 4 m, 8 m, then
    /// every 15 m, for 24 h). Default: 10 ms (24 h → 14.4 s).
    pub retry_minute: Duration,
    /// Timeout of one delivery attempt (Adobe: 10 s, connection included). Default: 10 s.
    pub delivery_timeout: Duration,
}

impl Default for AemEmulatorConfig {
    fn default() -> Self {
        Self {
            author_host: "author-p12345-e67890.adobeaemcloud.com".into(),
            client_id: "emulated-client-id".into(),
            client_secret: "emulated-client-secret".into(),
            allowed_scopes: ["openid", "AdobeID", "aem.assets.author", "aem.folders"]
                .map(String::from)
                .to_vec(),
            accepted_api_keys: Vec::new(),
            org_id: "EMULATED0000000000000000@AdobeOrg".into(),
            integration_id: "54108".into(),
            registration_id: "f89067f2-0d50-4bb2-bf78-209d0eacb6eb".into(),
            token_expires_in: 86_399,
            journal_retention: Duration::from_secs(7 * 24 * 3600),
            journal_default_limit: 100,
            journal_retry_after_secs: 10,
            retry_minute: Duration::from_millis(10),
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// The endpoints faults can be injected into ([`AemEmulator::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AemEndpoint {
    /// `POST /ims/token/v3`.
    Ims,
    /// `GET` / `PATCH /adobe/assets/{id}/metadata`.
    Metadata,
    /// The journal.
    Journal,
    /// `GET /prod/keys/...`.
    Keys,
}

/// One injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The status to answer.
    pub status: u16,
    /// Answer an HTML page (AEM hibernating) instead of a JSON error.
    pub html: bool,
    /// (Metadata `PATCH` only.) Apply the request, then answer the fault: an answer lost on
    /// its way, as behind a gateway that timed out.
    pub after_applying: bool,
}

impl Fault {
    /// A JSON error with this status (429s carry `Retry-After: 0`).
    pub fn status(status: u16) -> Self {
        Self {
            status,
            html: false,
            after_applying: false,
        }
    }
    /// An HTML page with this status (200 included: "AEM unavailable" pages).
    pub fn html(status: u16) -> Self {
        Self {
            status,
            html: true,
            after_applying: false,
        }
    }
    /// A metadata `PATCH` applied, then answered with this status (its answer lost).
    pub fn lost_answer(status: u16) -> Self {
        Self {
            status,
            html: false,
            after_applying: true,
        }
    }
}

pub(crate) struct Asset {
    pub(crate) asset_metadata: Map<String, Value>,
    pub(crate) repository_metadata: Map<String, Value>,
    pub(crate) version: u64,
}

pub(crate) struct Token {
    pub(crate) issued_at: Instant,
    pub(crate) expires_in: Duration,
    pub(crate) revoked: bool,
}

pub(crate) struct JournalItem {
    pub(crate) seq: u64,
    pub(crate) event: Value,
    pub(crate) at: Instant,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) clock_offset: Duration,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) tokens_issued: u64,
    pub(crate) assets: BTreeMap<String, Asset>,
    pub(crate) requests: Vec<AemRequest>,
    pub(crate) journal: Vec<JournalItem>,
    pub(crate) next_seq: u64,
    pub(crate) deliveries: Vec<DeliveryRecord>,
    pub(crate) faults: HashMap<AemEndpoint, VecDeque<Fault>>,
    pub(crate) key_fetches: u64,
    pub(crate) signing: DeliverySigning,
    pub(crate) webhook: Option<(url::Url, DeliveryMode)>,
}

pub(crate) struct Inner {
    pub(crate) config: AemEmulatorConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) http: reqwest::Client,
}

/// The emulator. Cheap to clone (shared state).
#[derive(Clone)]
pub struct AemEmulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AemEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AemEmulator")
            .field("author_host", &self.inner.config.author_host)
            .finish()
    }
}

impl AemEmulator {
    /// A new, empty emulator.
    pub fn new(config: AemEmulatorConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                http,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AemEmulatorConfig {
        &self.inner.config
    }

    /// The router serving every endpoint.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/ims/token/v3", post(ims::token))
            .route(
                "/adobe/assets/{asset_id}/metadata",
                get(assets::get_metadata).patch(assets::patch_metadata),
            )
            .route(
                "/events/organizations/{org}/integrations/{integration}/{registration}",
                get(journal::journal),
            )
            .route("/prod/keys/{file}", get(sender::public_key))
            .with_state(self.clone())
    }

    /// Binds `addr` (port 0: a free port) and serves in the background until the returned
    /// [`RunningAem`] is shut down or dropped.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningAem> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(RunningAem {
            base_url: format!("http://{addr}"),
            addr,
            emulator: self.clone(),
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The path of this emulator's journal
    /// (`/events/organizations/{org}/integrations/{int}/{registration}`).
    pub fn journal_path(&self) -> String {
        let c = &self.inner.config;
        format!(
            "/events/organizations/{}/integrations/{}/{}",
            c.org_id, c.integration_id, c.registration_id
        )
    }

    /// Moves the virtual clock forward (token expiry, journal retention).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.state.lock().clock_offset += by;
    }

    pub(crate) fn now(&self, state: &State) -> Instant {
        Instant::now() + state.clock_offset
    }

    /// Queues faults: the next requests to `endpoint` get them, in order, before any other check.
    pub fn fail_next(&self, endpoint: AemEndpoint, faults: &[Fault]) {
        self.inner
            .state
            .lock()
            .faults
            .entry(endpoint)
            .or_default()
            .extend(faults.iter().copied());
    }

    pub(crate) fn take_fault(&self, endpoint: AemEndpoint) -> Option<Fault> {
        self.inner
            .state
            .lock()
            .faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
    }

    /// The next fault of `endpoint` unless it is for a `PATCH` only ([`Fault::after_applying`]),
    /// which a `GET` leaves queued.
    pub(crate) fn take_fault_for_get(&self, endpoint: AemEndpoint) -> Option<Fault> {
        let mut state = self.inner.state.lock();
        let queue = state.faults.get_mut(&endpoint)?;
        if queue.front().is_some_and(|f| f.after_applying) {
            return None;
        }
        queue.pop_front()
    }

    /// Every request to the AEM metadata endpoints, in arrival order.
    pub fn requests(&self) -> Vec<AemRequest> {
        self.inner.state.lock().requests.clone()
    }

    /// Every PATCH request to the metadata endpoint (accepted or not), in arrival order.
    pub fn patches(&self) -> Vec<AemRequest> {
        self.inner
            .state
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "PATCH")
            .cloned()
            .collect()
    }

    /// How many tokens IMS issued.
    pub fn ims_tokens_issued(&self) -> u64 {
        self.inner.state.lock().tokens_issued
    }

    /// Makes every issued token invalid (AEM and the journal then answer 401 until a new token
    /// is fetched).
    pub fn expire_tokens(&self) {
        for t in self.inner.state.lock().tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// An asset's current `assetMetadata`.
    pub fn metadata(&self, asset_id: &str) -> Option<Map<String, Value>> {
        self.inner
            .state
            .lock()
            .assets
            .get(asset_id)
            .map(|a| a.asset_metadata.clone())
    }

    /// Every event ever emitted (journaled), oldest first — expired ones included.
    pub fn journal_events(&self) -> Vec<Value> {
        self.inner
            .state
            .lock()
            .journal
            .iter()
            .map(|i| i.event.clone())
            .collect()
    }

    /// The delivery log of the sender.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner.state.lock().deliveries.clone()
    }

    /// How many times a public key was served.
    pub fn key_fetches(&self) -> u64 {
        self.inner.state.lock().key_fetches
    }
}

/// A served emulator. Dropping it (or [`RunningAem::shutdown`]) stops the server.
#[derive(Debug)]
pub struct RunningAem {
    /// `http://127.0.0.1:<port>`: IMS token URL = base + `/ims/token/v3`; AEM author base URL;
    /// key origin; journal URL = base + [`AemEmulator::journal_path`].
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    emulator: AemEmulator,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningAem {
    /// The emulator behind the server.
    pub fn emulator(&self) -> &AemEmulator {
        &self.emulator
    }

    /// `{base_url}/ims/token/v3`.
    pub fn ims_token_url(&self) -> String {
        format!("{}/ims/token/v3", self.base_url)
    }

    /// `{base_url}{journal_path}`.
    pub fn journal_url(&self) -> String {
        format!("{}{}", self.base_url, self.emulator.journal_path())
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

    /// Serves until the server fails (select against Ctrl-C).
    pub async fn wait(mut self) -> std::io::Result<()> {
        let _keep_running = self.shutdown.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for RunningAem {
    type Target = AemEmulator;
    fn deref(&self) -> &AemEmulator {
        &self.emulator
    }
}

impl Drop for RunningAem {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A JSON response with a status.
pub(crate) fn json_response(status: u16, body: &Value) -> axum::response::Response {
    let mut r = axum::response::IntoResponse::into_response(axum::Json(body));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("valid status");
    r
}

/// The response of an injected fault.
pub(crate) fn fault_response(fault: Fault) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = http::StatusCode::from_u16(fault.status).expect("valid status");
    if fault.html {
        let page = "<!DOCTYPE html><html><head><title>AEM is waking up</title></head>\
                    <body><h1>This environment is hibernated or unavailable.</h1></body></html>";
        return (
            status,
            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response();
    }
    let mut r = json_response(
        fault.status,
        &serde_json::json!({"error_code": fault.status.to_string(), "message": "injected fault"}),
    );
    if fault.status == 429 {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("0"),
        );
    }
    r
}
