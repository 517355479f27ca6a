//! `assetbridge status`: what the state store says — the inbox backlog, dead letters, each
//! family's cursor and last success, and the recent error rate of PIM writes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use assetbridge_store::{Backlog, FamilyStatus, OutcomeCounts, Store};
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{json, Value};

use super::ConfigArg;
use crate::exit::Failure;
use crate::logging::{self, LogArgs};
use crate::{config, wiring, CliResult};

/// The windows the error rate is shown for.
const WINDOWS: [(&str, Duration); 2] = [
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3600)),
];

/// Shows the connector's state: inbox backlog, dead letters, cursors, recent error rate.
///
/// Read from the state store only (the PIM and the DAM are not contacted): the inbox backlog
/// (pending, waiting for a retry, in flight, age of the oldest change), the dead letters, per
/// family the poll cursor, the last successful poll and the assets written, and the error rate
/// of PIM writes over the last 5 minutes and hour (failed = refused for good, or failed for now
/// and retried).
///
/// Works while `assetbridge run` is running, on SQLite as on PostgreSQL (there it shows the
/// state shared by every instance). Exit codes: 0 ok · 1 the store failed · 2 configuration.
///
/// Examples:
///   assetbridge status --config assetbridge.toml
///   assetbridge status --config assetbridge.toml --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Everything `status` shows, read once.
struct Snapshot {
    store_url: String,
    backend: String,
    backlog: Backlog,
    dead_letters: u64,
    outcomes: Vec<(&'static str, OutcomeCounts)>,
    /// Configured families first (config order), then families only the store knows.
    families: Vec<FamilyRow>,
    now: DateTime<Utc>,
}

struct FamilyRow {
    configured: bool,
    status: FamilyStatus,
    last_hour: OutcomeCounts,
}

pub async fn run(args: StatusArgs, log: LogArgs) -> CliResult {
    let loaded = config::load(&args.config.config)?;
    logging::init(&log, Some(&loaded.value.log));
    let store = wiring::open_store(&loaded.value).await?;
    let configured: Vec<String> = loaded
        .value
        .families
        .iter()
        .map(|f| f.code.clone())
        .collect();
    let snap = snapshot(&store, &configured)
        .await
        .context("state store")
        .map_err(Failure::Fatal)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&snap)).context("JSON output")?
        );
    } else {
        print!("{}", table(&snap));
    }
    Ok(ExitCode::SUCCESS)
}

async fn snapshot(
    store: &Store,
    configured: &[String],
) -> Result<Snapshot, assetbridge_store::StoreError> {
    let now = Utc::now();
    let backlog = store.backlog().await?;
    let dead_letters = store.dead_letter_count().await?;
    let mut outcomes = Vec::new();
    for (name, window) in WINDOWS {
        outcomes.push((name, store.outcomes(window, None).await?));
    }
    let mut known: BTreeMap<String, FamilyStatus> = store
        .family_status()
        .await?
        .into_iter()
        // Names starting with `__` are the connector's own positions (journal, enrichment
        // product poll), not asset families.
        .filter(|f| !f.family.starts_with("__"))
        .map(|f| (f.family.clone(), f))
        .collect();
    let mut families = Vec::new();
    for code in configured {
        let status = known.remove(code).unwrap_or_else(|| FamilyStatus {
            family: code.clone(),
            cursor: None,
            last_success: None,
            assets_written: 0,
        });
        families.push((true, status));
    }
    families.extend(known.into_values().map(|s| (false, s)));
    let mut rows = Vec::with_capacity(families.len());
    for (configured, status) in families {
        let last_hour = store
            .outcomes(Duration::from_secs(3600), Some(&status.family))
            .await?;
        rows.push(FamilyRow {
            configured,
            status,
            last_hour,
        });
    }
    Ok(Snapshot {
        store_url: store.display_url().to_owned(),
        backend: store.backend().to_string(),
        backlog,
        dead_letters,
        outcomes,
        families: rows,
        now,
    })
}

fn to_json(s: &Snapshot) -> Value {
    let outcomes: serde_json::Map<String, Value> = s
        .outcomes
        .iter()
        .map(|(name, o)| (format!("last_{name}"), outcome_json(o)))
        .collect();
    json!({
        "store": { "url": s.store_url, "backend": s.backend },
        "backlog": {
            "pending": s.backlog.pending,
            "delayed": s.backlog.delayed,
            "in_flight": s.backlog.in_flight,
            "total": s.backlog.pending + s.backlog.in_flight,
            "oldest_age_secs": s.backlog.oldest_age.map(|d| d.as_secs_f64()),
        },
        "dead_letters": s.dead_letters,
        "outcomes": outcomes,
        "families": s.families.iter().map(|f| json!({
            "family": f.status.family,
            "configured": f.configured,
            "cursor": f.status.cursor.as_ref().map(|c| json!({
                "updated_at": c.updated_at.to_rfc3339(),
                "dam_id": c.dam_id,
            })),
            "last_success": f.status.last_success.map(|t| t.to_rfc3339()),
            "assets_written": f.status.assets_written,
            "outcomes_last_1h": outcome_json(&f.last_hour),
        })).collect::<Vec<_>>(),
        "at": s.now.to_rfc3339(),
    })
}

fn outcome_json(o: &OutcomeCounts) -> Value {
    json!({
        "succeeded": o.succeeded,
        "failed": o.failed,
        "error_rate": o.error_rate(),
    })
}

fn table(s: &Snapshot) -> String {
    let mut out = String::new();
    let b = &s.backlog;
    out.push_str(&format!("state store    {} ({})\n", s.store_url, s.backend));
    out.push_str(&format!(
        "inbox          {} pending ({} waiting for a retry) · {} in flight · oldest {}\n",
        b.pending,
        b.delayed,
        b.in_flight,
        b.oldest_age.map(age).unwrap_or_else(|| "-".into())
    ));
    out.push_str(&format!(
        "dead letters   {}{}\n",
        s.dead_letters,
        if s.dead_letters > 0 {
            "  (assetbridge dlq list)"
        } else {
            ""
        }
    ));
    let rates: Vec<String> = s
        .outcomes
        .iter()
        .map(|(name, o)| {
            format!(
                "last {name}: {} ok, {} failed ({})",
                o.succeeded,
                o.failed,
                percent(o)
            )
        })
        .collect();
    out.push_str(&format!("PIM writes     {}\n\n", rates.join(" · ")));

    out.push_str(&format!(
        "{:<18} {:<22} {:<38} {:<22} {:>14} {:>12}\n",
        "family",
        "cursor (DAM time)",
        "cursor DAM id",
        "last success",
        "assets written",
        "errors (1h)"
    ));
    for f in &s.families {
        let st = &f.status;
        let name = if f.configured {
            st.family.clone()
        } else {
            format!("{} (not configured)", st.family)
        };
        let (cursor_at, cursor_id) = match &st.cursor {
            Some(c) => (
                c.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                c.dam_id.clone(),
            ),
            None => ("never polled".to_owned(), "-".to_owned()),
        };
        let last = st
            .last_success
            .map(|t| {
                let ago = (s.now - t).to_std().unwrap_or_default();
                format!("{} ago", age(ago))
            })
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<18} {:<22} {:<38} {:<22} {:>14} {:>12}\n",
            name,
            cursor_at,
            cursor_id,
            last,
            st.assets_written,
            percent(&f.last_hour)
        ));
    }
    out
}

fn percent(o: &OutcomeCounts) -> String {
    if o.succeeded + o.failed == 0 {
        "-".into()
    } else {
        format!("{:.1} %", o.error_rate() * 100.0)
    }
}

/// `1h 02m`, `3m 07s`, `12s`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(Duration::from_secs(12)), "12s");
        assert_eq!(age(Duration::from_secs(187)), "3m 07s");
        assert_eq!(age(Duration::from_secs(3720)), "1h 02m");
        assert_eq!(age(Duration::from_secs(90_000)), "1d 01h");
    }

    #[test]
    fn error_rates_show_dashes_without_writes() {
        assert_eq!(percent(&OutcomeCounts::default()), "-");
        let o = OutcomeCounts {
            succeeded: 3,
            failed: 1,
        };
        assert_eq!(percent(&o), "25.0 %");
    }
}
