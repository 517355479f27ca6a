//! Progress of a sync: bars on a terminal (indicatif), plain log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use assetbridge_engine::{SyncObserver, SyncReport};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tracing::info;

/// A bar per family, with the totals it shows.
struct Bars {
    multi: MultiProgress,
    by_family: Mutex<HashMap<String, (ProgressBar, SyncReport)>>,
}

/// Shows progress per family.
pub struct Progress {
    bars: Option<Bars>,
}

impl Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn auto() -> Self {
        let bars = std::io::stderr().is_terminal().then(|| Bars {
            multi: MultiProgress::new(),
            by_family: Mutex::new(HashMap::new()),
        });
        Self { bars }
    }

    /// Log lines only.
    pub fn plain() -> Self {
        Self { bars: None }
    }
}

fn line(r: &SyncReport) -> String {
    format!(
        "seen {} · created {} · updated {} · unchanged {} · deleted {} · failed {} · retrying {}",
        r.seen, r.created, r.updated, r.unchanged, r.deleted, r.failed, r.retrying
    )
}

impl SyncObserver for Progress {
    fn family_started(&self, family: &str) {
        match &self.bars {
            Some(Bars { multi, by_family }) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:>12} {elapsed:>4} {msg}")
                        .expect("valid template"),
                );
                bar.set_prefix(family.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                by_family
                    .lock()
                    .insert(family.to_owned(), (bar, SyncReport::default()));
            }
            None => info!(family, "sync started"),
        }
    }

    fn batch_done(&self, family: &str, report: &SyncReport) {
        if let Some(bars) = &self.bars {
            if let Some((bar, total)) = bars.by_family.lock().get_mut(family) {
                *total += report;
                bar.set_message(line(total));
            }
        }
    }

    fn family_finished(&self, family: &str, report: &SyncReport) {
        match &self.bars {
            Some(bars) => {
                if let Some((bar, _)) = bars.by_family.lock().remove(family) {
                    bar.finish_with_message(line(report));
                }
            }
            None => info!(family, "{}", line(report)),
        }
    }
}

/// The end-of-sync summary table.
pub fn summary(rows: &[(String, SyncReport)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<16} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7} {:>7} {:>8} {:>7} {:>9} {:>10}\n",
        "family",
        "seen",
        "created",
        "updated",
        "unchanged",
        "deleted",
        "marked",
        "kept",
        "skipped",
        "failed",
        "retrying",
        "pim writes"
    ));
    let mut total = SyncReport::default();
    for (family, r) in rows {
        total += r;
        out.push_str(&row(family, r));
    }
    if rows.len() > 1 {
        out.push_str(&row("total", &total));
    }
    out
}

fn row(name: &str, r: &SyncReport) -> String {
    format!(
        "{:<16} {:>9} {:>9} {:>9} {:>10} {:>8} {:>7} {:>7} {:>8} {:>7} {:>9} {:>10}\n",
        name,
        r.seen,
        r.created,
        r.updated,
        r.unchanged,
        r.deleted,
        r.marked,
        r.kept,
        r.skipped,
        r.failed,
        r.retrying,
        r.pim_writes
    )
}
