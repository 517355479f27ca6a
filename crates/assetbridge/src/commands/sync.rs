use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use assetbridge_engine::{Engine, ReconcileReport, RepairKind, SyncObserver, SyncReport, UNROUTED};
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
    /// Reconciliation: read the whole DAM listing (not only what changed since the cursor) and
    /// the whole PIM listing, and repair drift — missed changes and assets edited or deleted
    /// in the PIM are written again, assets deleted in the DAM get the deletion policy, assets
    /// only the PIM has are reported. Unchanged assets cost no PIM write (one read per 100).
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
    let (rows, reconciled) = if args.full {
        reconcile_all(&engine, &args.families).await?
    } else {
        (sync_all(&engine, &args.families, false).await?, Vec::new())
    };
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
    print!("{}", reconciliation(&reconciled));
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

/// Polls every selected family once — `[sync] families_in_flight` of them at a time — then
/// drains the inbox (retries, webhook and queue changes). Returns a report per family, in the
/// configuration's order (and one row `inbox` for what the drain did).
pub async fn sync_all(
    engine: &Engine,
    only: &[String],
    full: bool,
) -> Result<Vec<(String, SyncReport)>, Failure> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    // Families fed by the routed listing are polled through it, below.
    let selected = engine
        .families()
        .iter()
        .filter(|plan| only.is_empty() || only.contains(&plan.code))
        .filter(|plan| !engine.is_routed(&plan.code));
    let mut rows: Vec<(String, SyncReport)> = stream::iter(selected)
        .map(|plan| async move {
            engine
                .sync_family(plan, full)
                .await
                .map(|report| (plan.code.clone(), report))
                .map_err(|e| Failure::Fatal(anyhow::anyhow!("family `{}`: {e}", plan.code)))
        })
        .buffered(engine.options().families_in_flight.max(1))
        .try_collect()
        .await?;
    if routed_selected(engine, only) {
        let routed = engine
            .sync_routed(full)
            .await
            .map_err(|e| Failure::Fatal(anyhow::anyhow!("routed listing: {e}")))?;
        rows.extend(routed.families);
        if routed.unrouted.seen > 0 {
            rows.push((UNROUTED.to_owned(), routed.unrouted));
        }
    }
    let drained = engine
        .drain_inbox(&super::run::worker_name("sync"))
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("inbox: {e}")))?;
    if drained.seen > 0 {
        rows.push(("inbox".to_owned(), drained));
    }
    Ok(rows)
}

/// Whether the routed listing is configured and (with `--family`) one of its families asked
/// for: it then feeds all of them (one listing, one cursor).
fn routed_selected(engine: &Engine, only: &[String]) -> bool {
    engine.routed_listing().is_some()
        && (only.is_empty() || only.iter().any(|f| engine.is_routed(f)))
}

/// `sync --full`: reconciles every selected family — the whole DAM listing and the whole PIM
/// listing compared, streamed page by page, drift repaired through the write path (see
/// `assetbridge_engine::reconcile`) — one listing after the other, then drains the inbox.
/// Returns the rows of the summary and the reconciliation reports.
pub async fn reconcile_all(
    engine: &Engine,
    only: &[String],
) -> Result<(Vec<(String, SyncReport)>, Vec<ReconcileReport>), Failure> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    // Families side by side, as `sync_all` polls them: each reads its PIM listing one
    // search_after page after another, so this is what spreads the PIM's concurrent calls.
    let selected = engine
        .families()
        .iter()
        .filter(|plan| only.is_empty() || only.contains(&plan.code))
        .filter(|plan| !engine.is_routed(&plan.code));
    let mut reports: Vec<ReconcileReport> = stream::iter(selected)
        .map(|plan| async move {
            engine
                .reconcile_family(plan)
                .await
                .map_err(|e| Failure::Fatal(anyhow::anyhow!("family `{}`: {e}", plan.code)))
        })
        .buffered(engine.options().families_in_flight.max(1))
        .try_collect()
        .await?;
    let mut rows: Vec<(String, SyncReport)> = reports
        .iter()
        .map(|r| (r.family.clone(), r.report.clone()))
        .collect();
    if routed_selected(engine, only) {
        let routed = engine
            .reconcile_routed()
            .await
            .map_err(|e| Failure::Fatal(anyhow::anyhow!("routed listing: {e}")))?;
        for r in routed.families {
            rows.push((r.family.clone(), r.report.clone()));
            reports.push(r);
        }
        if routed.unrouted.seen > 0 {
            rows.push((UNROUTED.to_owned(), routed.unrouted));
        }
    }
    let drained = engine
        .drain_inbox(&super::run::worker_name("sync"))
        .await
        .map_err(|e| Failure::Fatal(anyhow::anyhow!("inbox: {e}")))?;
    if drained.seen > 0 {
        rows.push(("inbox".to_owned(), drained));
    }
    Ok((rows, reports))
}

/// What the reconciliation found and did, per family: the counts, then each repair (the first
/// ones the report lists) with its reason and, for an asset edited in the PIM, the values
/// written back. Empty without reports.
pub fn reconciliation(reports: &[ReconcileReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if reports.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\nreconciliation (DAM and PIM compared in full):");
    let _ = writeln!(
        s,
        "{:<16} {:>10} {:>10} {:>7} {:>7} {:>11} {:>11} {:>10} {:>9}",
        "family",
        "dam assets",
        "pim assets",
        "missed",
        "drift",
        "gone in pim",
        "gone in dam",
        "held back",
        "pim only"
    );
    for r in reports {
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>10} {:>7} {:>7} {:>11} {:>11} {:>10} {:>9}",
            r.family,
            r.dam_assets,
            r.pim_assets,
            r.missed,
            r.drift,
            r.missing_in_pim,
            r.deleted_in_dam,
            r.held_back,
            r.pim_only
        );
    }
    for r in reports {
        if !r.complete || r.note.is_some() {
            let _ = writeln!(
                s,
                "  {}: {}{}",
                r.family,
                if r.complete { "" } else { "incomplete — " },
                r.note.as_deref().unwrap_or("")
            );
        }
        for repair in &r.repairs {
            let kind = match repair.kind {
                RepairKind::Missed => "missed",
                RepairKind::Drift => "drift",
                RepairKind::MissingInPim => "gone in pim",
                RepairKind::DeletedInDam => "gone in dam",
                RepairKind::PimOnly => "pim only",
            };
            let _ = writeln!(
                s,
                "  {}: {:<11} {} (DAM {}): {}",
                r.family,
                kind,
                repair.code,
                repair.dam_id.as_deref().unwrap_or("—"),
                repair.reason
            );
            for c in &repair.changes {
                let show = |v: &Option<serde_json::Value>| match v {
                    None => "∅".to_owned(),
                    Some(v) => v.to_string(),
                };
                let field = match (&c.locale, &c.channel) {
                    (None, None) => c.attribute.clone(),
                    (l, ch) => format!(
                        "{}[{}{}]",
                        c.attribute,
                        l.as_deref().unwrap_or(""),
                        ch.as_deref().map(|c| format!("/{c}")).unwrap_or_default()
                    ),
                };
                let _ = writeln!(
                    s,
                    "      {field}: {} (in the PIM) → {}",
                    show(&c.old),
                    show(&c.new)
                );
            }
        }
        if r.not_listed > 0 {
            let _ = writeln!(
                s,
                "  {}: … {} more not listed (each is logged at debug level)",
                r.family, r.not_listed
            );
        }
    }
    s
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
