use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use assetbridge_engine::{Engine, SyncObserver, SyncReport};
use clap::Args;

use super::ConfigArg;
use crate::exit::{Failure, PARTIAL};
use crate::logging::{self, LogArgs};
use crate::progress::{summary, Progress};
use crate::{config, wiring, CliResult};

/// One pass DAM → PIM, then exit.
///
/// For each configured family, asks the DAM what changed since the last successful sync (the
/// family's cursor, minus the overlap window), writes changed assets to Akeneo in batches of up
/// to 100, skips unchanged ones (no PIM call), and retries what is waiting in the inbox. Prints a
/// summary; exits 3 when some assets failed (see `assetbridge dlq list`).
///
/// Example:
///   assetbridge sync --config assetbridge.toml
///   assetbridge sync --config assetbridge.toml --family packshots --full
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these families (repeatable). Default: all configured families.
    #[arg(long = "family", value_name = "CODE")]
    pub families: Vec<String>,
    /// Start from the beginning of the DAM instead of the cursor (unchanged assets still cost
    /// no PIM write).
    #[arg(long)]
    pub full: bool,
    /// Plain log lines even on a terminal (no progress bars).
    #[arg(long)]
    pub no_progress: bool,
}

pub async fn run(args: SyncArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    for f in &args.families {
        if !loaded.value.families.iter().any(|c| &c.code == f) {
            return Err(Failure::Config(format!(
                "--family {f}: no such family in the configuration"
            )));
        }
    }
    let progress: Arc<dyn SyncObserver> = if args.no_progress {
        Arc::new(Progress::plain())
    } else {
        Arc::new(Progress::auto())
    };
    let engine = wiring::engine(&loaded).await?.with_observer(progress);
    let started = Instant::now();
    // Product links are made as batches are written, and what is left at the end.
    let linker = engine.start_linker();
    let rows = sync_all(&engine, &args.families, args.full).await?;
    let links = linker
        .finish()
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("product links: {e}")))?;
    let waiting = waiting_retries(&engine).await?;
    let links_waiting = engine
        .store()
        .link_backlog()
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("state store: {e}")))?
        .pending;
    eprintln!();
    print!("{}", summary(&rows));
    if links.links > 0 || links_waiting > 0 {
        println!(
            "product links: {} handled — {} code(s) added, {} removed, {} product(s) written ({} NDJSON request(s)), {} already as wanted, {} dead-lettered, {} waiting for a retry",
            links.links, links.added, links.removed, links.products_written, links.pim_writes,
            links.products_unchanged, links.failed, links_waiting
        );
    }
    println!("took {:.1}s", started.elapsed().as_secs_f64());
    if waiting > 0 {
        println!("{waiting} change(s) wait in the inbox for a retry (`assetbridge run` retries them; `assetbridge status` shows them)");
    }
    // Links dead-lettered or waiting make the run partial, as assets do.
    Ok(exit_code(&rows, waiting + links_waiting + links.failed))
}

/// Polls every selected family once, then drains the inbox (retries, webhook and queue
/// changes). Returns a report per family (and one row `inbox` for what the drain did).
pub async fn sync_all(
    engine: &Engine,
    only: &[String],
    full: bool,
) -> Result<Vec<(String, SyncReport)>, Failure> {
    let mut rows = Vec::new();
    for plan in engine.families() {
        if !only.is_empty() && !only.contains(&plan.code) {
            continue;
        }
        let report = engine
            .sync_family(plan, full)
            .await
            .map_err(|e| Failure::Fatal(anyhow::anyhow!("family `{}`: {e}", plan.code)))?;
        rows.push((plan.code.clone(), report));
    }
    let drained = engine
        .drain_inbox("sync")
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("inbox: {e}")))?;
    if drained.seen > 0 {
        rows.push(("inbox".to_owned(), drained));
    }
    Ok(rows)
}

/// Changes still in the inbox after the drain (waiting for a retry).
pub async fn waiting_retries(engine: &Engine) -> Result<u64, Failure> {
    let backlog = engine
        .store()
        .backlog()
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("state store: {e}")))?;
    Ok(backlog.pending + backlog.in_flight)
}

/// 0 when every change landed, 3 when some failed for good or still wait for a retry.
pub fn exit_code(rows: &[(String, SyncReport)], waiting: u64) -> ExitCode {
    let mut total = SyncReport::default();
    for (_, r) in rows {
        total += r;
    }
    if total.failed > 0 || waiting > 0 {
        ExitCode::from(PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}
