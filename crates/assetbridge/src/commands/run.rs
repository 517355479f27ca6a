use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use assetbridge_engine::{Engine, ROUTED_LISTING};
use clap::Args;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ConfigArg;
use crate::logging::{self, LogArgs};
use crate::schedule::Schedule;
use crate::{config, wiring, CliResult};

/// Runs continuously: polls each family on its schedule and works the inbox.
///
/// Each family is polled on its `schedule` (an interval such as `5m`, or a cron expression), and
/// reconciled (DAM and PIM compared in full, as `sync --full`) on its `reconcile_schedule`
/// (default: daily); families a `[routing]` table feeds from one listing (`poll = true`) are
/// polled through it. Inbox workers write what webhooks, queues and retries put in the inbox.
/// SIGTERM or Ctrl-C stops taking work, lets batches in flight finish (at most --shutdown-grace
/// seconds) and exits.
///
/// Example:
///   assetbridge run --config assetbridge.toml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Inbox workers in this process. Default: 2.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds to let in-flight work finish after a shutdown signal. Default: 30.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
}

pub async fn run(args: RunArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let mut tasks = JoinSet::new();

    // `[server]`: the admin server answers from the start (`/readyz` is 503 until wired).
    let server = &loaded.value.server;
    let admin = crate::admin::AdminState::new(
        loaded
            .value
            .families
            .iter()
            .map(|f| f.code.clone())
            .collect(),
        // An empty token (e.g. an unset `${VAR:-}`) is no token: the retry button stays disabled.
        server
            .admin_token
            .clone()
            .filter(|t| !secrecy::ExposeSecret::expose_secret(t).is_empty()),
    );
    let listen = server
        .listen
        .unwrap_or(config::ServerConfig::DEFAULT_LISTEN);
    let allowed_hosts = server.allowed_hosts.clone();
    match crate::admin::bind(listen, allowed_hosts, admin.clone(), shutdown.clone()).await {
        Ok((addr, serve)) => {
            info!(listen = %addr, "admin server listening (/healthz, /readyz, /metrics, /)");
            if !addr.ip().is_loopback() {
                warn!(listen = %addr, "the admin server is reachable beyond this machine: its status page and metrics need no token (only the retry action does)");
            }
            tasks.spawn(async move {
                if let Err(e) = serve.await {
                    warn!(error = %e, "admin server stopped");
                }
            });
        }
        Err(e) if server.listen.is_none() => {
            warn!(listen = %listen, error = %e, "admin server not started: the default address is taken (set [server] listen)");
        }
        Err(e) => {
            return Err(crate::exit::Failure::Fatal(anyhow::anyhow!(
                "admin server: cannot listen on {listen}: {e}"
            )));
        }
    }

    let engine = Arc::new(
        wiring::engine(&loaded)
            .await?
            .with_observer(admin.observer()),
    );
    admin.set_engine(engine.clone());

    let started = chrono::Utc::now();
    for (plan, fcfg) in engine.families().iter().zip(&loaded.value.families) {
        if engine.is_routed(&plan.code) {
            // Fed by the routed listing, polled below.
            continue;
        }
        let schedule = fcfg.schedule().map_err(crate::exit::Failure::Config)?;
        let reconcile = fcfg
            .reconcile_schedule(&loaded.value.sync)
            .map_err(crate::exit::Failure::Config)?;
        let engine = engine.clone();
        let target = Target::Family(plan.code.clone());
        let stop = shutdown.clone();
        tasks.spawn(
            async move { poll_loop(engine, target, schedule, reconcile, started, stop).await },
        );
    }
    if let Some(routing) = loaded.value.routing.as_ref().filter(|r| r.poll) {
        let schedule = routing.schedule().map_err(crate::exit::Failure::Config)?;
        let reconcile = crate::schedule::Schedule::parse_optional(
            routing
                .reconcile_schedule
                .as_deref()
                .unwrap_or(&loaded.value.sync.reconcile_schedule),
        )
        .map_err(crate::exit::Failure::Config)?;
        let engine = engine.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            poll_loop(engine, Target::Routed, schedule, reconcile, started, stop).await
        });
    }
    let cfg = &loaded.value;
    // The Adobe sources do not store the echoes of enrichment's writes
    // (`AdobeEventRules::echoes`), so an echo never replaces a user's pending edit.
    let echoes = engine
        .enrichment()
        .map(|e| assetbridge_sources::webhook::EchoFilter {
            keys: e.owned_keys().map(str::to_owned).collect(),
            families: e.families().iter().cloned().collect(),
        })
        .unwrap_or_default();
    if let Some(webhooks) = &cfg.webhooks {
        let mut webhooks = webhooks.clone();
        if let Some(adobe) = webhooks.adobe.as_mut() {
            adobe.echoes = echoes.clone();
        }
        let server =
            assetbridge_sources::webhook::WebhookServer::bind(&webhooks, engine.store().clone())
                .await
                .map_err(|e| {
                    crate::exit::Failure::Fatal(anyhow::anyhow!("webhook receiver: {e}"))
                })?;
        info!(listen = %server.local_addr(), tls = server.is_tls(), "webhook receiver listening");
        admin.set_webhooks(server.stats());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = server.run(stop).await {
                warn!(error = %e, "webhook receiver stopped");
            }
        });
    }
    if let Some(journal) = &cfg.adobe_journal {
        let (mut journal, store, stop) =
            (journal.clone(), engine.store().clone(), shutdown.clone());
        journal.echoes = echoes.clone();
        info!(url = %journal.url, "Adobe I/O Events journal poller starting");
        tasks.spawn(async move {
            if let Err(e) = assetbridge_sources::journal::run(journal, store, stop).await {
                warn!(error = %e, "journal poller stopped");
            }
        });
    }
    for q in &cfg.queues.amqp {
        let (q, store, stop) = (q.clone(), engine.store().clone(), shutdown.clone());
        info!(queue = %q.queue, url = %q.display_url(), "RabbitMQ consumer starting");
        tasks.spawn(async move {
            if let Err(e) = assetbridge_sources::amqp::run(q, store, stop).await {
                warn!(error = %e, "RabbitMQ consumer stopped");
            }
        });
    }
    for q in &cfg.queues.nats {
        let (q, store, stop) = (q.clone(), engine.store().clone(), shutdown.clone());
        info!(stream = %q.stream, url = %q.display_url(), "NATS JetStream consumer starting");
        tasks.spawn(async move {
            if let Err(e) = assetbridge_sources::nats::run(q, store, stop).await {
                warn!(error = %e, "NATS consumer stopped");
            }
        });
    }
    if let Some(enricher) = engine.enrichment().cloned() {
        // PIM → DAM: products changed in the PIM re-enrich their AEM assets.
        let stop = shutdown.clone();
        tasks.spawn(async move { enricher.run_product_poll(stop).await });
    }
    for i in 0..args.workers.max(1) {
        let engine = engine.clone();
        let stop = shutdown.clone();
        let name = worker_name(&format!("worker-{i}"));
        tasks.spawn(async move { engine.run_worker(&name, Duration::from_secs(1), stop).await });
    }
    let links_configured = loaded.value.families.iter().any(|f| f.link.is_some());
    let links_pending = match engine.store().link_backlog().await {
        Ok(b) => b.pending > 0,
        Err(e) => {
            warn!(error = %e, "cannot count pending product links");
            false
        }
    };
    if links_configured || links_pending {
        // Product links: one linker per process; across processes a product is linked by one
        // linker at a time (the store's per-product claims).
        let engine = engine.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { engine.run_linker(Duration::from_secs(1), stop).await });
    }
    info!(
        families = engine.families().len(),
        workers = args.workers,
        "assetbridge is running"
    );

    shutdown.cancelled().await;
    info!(
        grace_secs = args.shutdown_grace,
        "shutting down: finishing work in flight"
    );
    let grace = Duration::from_secs(args.shutdown_grace);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!("work still in flight after the grace period; stopping it (claims come back after their lease)");
        tasks.abort_all();
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// What a poll loop polls: one family's listing, or the routed listing.
enum Target {
    Family(String),
    Routed,
}

impl Target {
    /// The name of its lock (and of its cursor).
    fn name(&self) -> &str {
        match self {
            Target::Family(f) => f,
            Target::Routed => ROUTED_LISTING,
        }
    }
}

/// Polls `target` on `schedule` under its lock; when its reconciliation is due (checked before
/// each poll), the pass is a reconciliation instead (which reads the whole listing, so it
/// replaces the poll). A reconciliation is due one `reconcile` interval (or at the cron
/// expression's next time) after the end of the last complete one recorded in the state store
/// — or, when none is recorded, after this process started — and never twice within one
/// interval of an attempt by this process.
async fn poll_loop(
    engine: Arc<Engine>,
    target: Target,
    schedule: Schedule,
    reconcile: Option<Schedule>,
    started: chrono::DateTime<chrono::Utc>,
    stop: CancellationToken,
) {
    let name = target.name().to_owned();
    let mut last_attempt: Option<chrono::DateTime<chrono::Utc>> = None;
    while !stop.is_cancelled() {
        match engine.store().try_lock_family(&name).await {
            Ok(Some(lock)) => {
                let due = match &reconcile {
                    None => false,
                    Some(s) => reconcile_due(&engine, &target, s, started, last_attempt).await,
                };
                if due {
                    last_attempt = Some(chrono::Utc::now());
                    reconcile_once(&engine, &target, &stop).await;
                } else {
                    poll_once(&engine, &target, &stop).await;
                }
                drop(lock);
            }
            Ok(None) => info!(
                listing = %name,
                "another instance polls this listing; skipping this round"
            ),
            Err(e) => warn!(listing = %name, error = %e, "cannot take the family lock"),
        }
        let delay = schedule.delay_from(chrono::Utc::now());
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Whether a reconciliation of `target` is due now.
async fn reconcile_due(
    engine: &Engine,
    target: &Target,
    schedule: &Schedule,
    started: chrono::DateTime<chrono::Utc>,
    last_attempt: Option<chrono::DateTime<chrono::Utc>>,
) -> bool {
    // The routed listing's families are reconciled together: the first one's record speaks
    // for them.
    let family = match target {
        Target::Family(f) => Some(f.clone()),
        Target::Routed => engine
            .routed_listing()
            .and_then(|r| r.families().first().cloned()),
    };
    let Some(family) = family else {
        return false;
    };
    let recorded = match engine.store().last_reconcile(&family, true).await {
        Ok(r) => r.map(|r| r.finished_at),
        Err(e) => {
            warn!(family, error = %e, "cannot read the last reconciliation; not reconciling this round");
            return false;
        }
    };
    let base = [recorded, last_attempt]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(started);
    chrono::Utc::now() >= schedule.next_after(base)
}

async fn poll_once(engine: &Engine, target: &Target, stop: &CancellationToken) {
    match target {
        Target::Family(family) => {
            let plan = engine.family(family).expect("configured family").clone();
            match engine.sync_family_until(&plan, false, stop).await {
                Ok(r) => info!(
                    family,
                    seen = r.seen,
                    created = r.created,
                    updated = r.updated,
                    unchanged = r.unchanged,
                    deleted = r.deleted,
                    failed = r.failed,
                    retrying = r.retrying,
                    "poll done"
                ),
                Err(e) => {
                    warn!(family, error = %e, "poll failed; the cursor stays where it was")
                }
            }
        }
        Target::Routed => match engine.sync_routed_until(false, stop).await {
            Ok(r) => {
                for (family, r) in &r.families {
                    info!(
                        family,
                        seen = r.seen,
                        created = r.created,
                        updated = r.updated,
                        unchanged = r.unchanged,
                        deleted = r.deleted,
                        failed = r.failed,
                        retrying = r.retrying,
                        "poll done (routed listing)"
                    );
                }
                info!(
                    seen = r.unrouted.seen,
                    skipped = r.unrouted.skipped,
                    "routed listing: changes that went to no family"
                );
            }
            Err(e) => {
                warn!(error = %e, "poll of the routed listing failed; the cursor stays where it was")
            }
        },
    }
}

async fn reconcile_once(engine: &Engine, target: &Target, stop: &CancellationToken) {
    // The engine logs each family's outcome ("reconciliation done") and its repairs.
    let result = match target {
        Target::Family(family) => {
            let plan = engine.family(family).expect("configured family").clone();
            info!(family, "scheduled reconciliation starting");
            engine
                .reconcile_family_until(&plan, stop)
                .await
                .map(|r| vec![r])
        }
        Target::Routed => {
            info!("scheduled reconciliation of the routed listing starting");
            engine
                .reconcile_routed_until(stop)
                .await
                .map(|r| r.families)
        }
    };
    match result {
        Ok(reports) => {
            for r in reports {
                if !r.complete {
                    warn!(family = %r.family, note = r.note.as_deref().unwrap_or(""), "reconciliation incomplete");
                }
            }
        }
        Err(e) => {
            warn!(listing = %target.name(), error = %e, "reconciliation failed; the next is due one interval from now")
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

/// An inbox worker's name, unique among the processes sharing a state store (leases are held
/// and renewed by name): host, process id and `role`.
pub fn worker_name(role: &str) -> String {
    format!("{}-{}-{role}", hostname(), std::process::id())
}

/// Cancels `token` on SIGINT (Ctrl-C) or SIGTERM.
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}
