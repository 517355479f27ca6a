//! What a run measured: the machine, one record per scenario, the results file and the Markdown
//! table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available to the harness.
    pub nproc: usize,
    /// `MemTotal` of `/proc/meminfo`, in MiB.
    pub memory_mib: u64,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// `/proc/loadavg` when the run started (other work on the machine makes numbers noisy).
    pub load_average: String,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        Self {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_mib,
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            date: now(),
            load_average: load_average(),
        }
    }
}

/// UTC now, RFC 3339, whole seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Called just before a measurement starts: flushes every file system's dirty pages
/// (`sync(2)`, which waits for the writeback), then returns the load average. What earlier
/// scenarios — or this one's set-up — left to write back must not land in the fsyncs this one
/// measures: webhook ingest on PostgreSQL, whose every commit waits for a WAL flush, gave
/// 5 658 events/s right after the SQLite ingest runs and 15 964–17 159 run alone.
pub fn settle() -> String {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    load_average()
}

/// The three load averages of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The totals of `assetbridge sync`'s summary table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSummary {
    pub seen: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub kept: u64,
    pub failed: u64,
    pub retrying: u64,
    /// The engine's own count of PIM write requests (the emulator's count is authoritative).
    pub pim_writes: u64,
    /// `took N s` as the command printed it (the sync itself, without process start-up).
    pub took_s: Option<f64>,
}

impl SyncSummary {
    /// Parses the summary `assetbridge sync` prints: a header, one row per family (and `inbox`),
    /// a `total` row when there are several, then `took N s`.
    pub fn parse(stdout: &str) -> Result<Self> {
        let mut s = SyncSummary::default();
        // Column names from the header (`pim writes` is one column of two words), so a column
        // added to the table does not shift the others.
        let mut columns: Option<Vec<String>> = None;
        for line in stdout.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&"family") && cols.get(1) == Some(&"seen") {
                let joined = line.replace("pim writes", "pim_writes");
                columns = Some(joined.split_whitespace().map(str::to_owned).collect());
                continue;
            }
            if let Some(t) = line.strip_prefix("took ") {
                s.took_s = t.trim().trim_end_matches('s').parse().ok();
                continue;
            }
            let Some(names) = &columns else { continue };
            if cols.len() != names.len() || cols[0] == "total" {
                continue;
            }
            let n: Vec<u64> = match cols[1..].iter().map(|c| c.parse()).collect() {
                Ok(n) => n,
                Err(_) => continue,
            };
            for (name, v) in names[1..].iter().zip(n) {
                match name.as_str() {
                    "seen" => s.seen += v,
                    "created" => s.created += v,
                    "updated" => s.updated += v,
                    "unchanged" => s.unchanged += v,
                    "deleted" => s.deleted += v,
                    "kept" => s.kept += v,
                    "failed" => s.failed += v,
                    "retrying" => s.retrying += v,
                    "pim_writes" => s.pim_writes += v,
                    _ => {}
                }
            }
        }
        anyhow::ensure!(
            columns.is_some(),
            "no summary table in the output of `assetbridge sync`:\n{stdout}"
        );
        Ok(s)
    }

    /// Assets created, updated or deleted in the PIM.
    pub fn changed(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

/// The emulators' settings of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Assets seeded in the DAM emulator.
    pub dam_assets: u64,
    /// Latency of each Akeneo API request, ms.
    pub pim_latency_ms: u64,
    /// Concurrent Akeneo requests above which the emulator answers 429.
    pub pim_max_concurrency: Option<usize>,
    /// Latency of each DAM request (a page of `dam_page_size`), ms.
    pub dam_latency_ms: u64,
    /// Items per DAM page.
    pub dam_page_size: u64,
    /// DAM paging style (`cursor`, `page`).
    pub dam_paging: String,
    /// Assets per PIM batch request (1 for the per-asset baseline).
    pub batch_size: u64,
    /// A new token for every PIM call (the per-asset baseline).
    pub fresh_token_per_request: bool,
    /// The client's requests-per-second ceiling (`None`: none).
    pub requests_per_second: Option<f64>,
}

/// One scenario's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    /// What it measures, in one line.
    pub description: String,
    pub date: String,
    pub quick: bool,
    pub settings: Settings,
    /// DAM assets the sync read (the summary's `seen`).
    pub processed: u64,
    /// PIM assets created, updated or deleted (the summary).
    pub changed: u64,
    /// Wall time of the `assetbridge sync` process, start to exit.
    pub wall_s: f64,
    /// `processed / wall_s`.
    pub throughput: f64,
    /// The scenario's physical limit on the PIM side (assets/s): concurrency × batch size /
    /// latency. `None` without latency.
    pub pim_limit: Option<f64>,
    /// The DAM listing's limit (assets/s): page size / latency, pages read one after another.
    pub dam_limit: Option<f64>,
    /// `throughput / pim_limit`.
    pub ratio_to_pim_limit: Option<f64>,
    /// Every request the Akeneo emulator answered during the sync (token grants included).
    pub pim_requests: u64,
    /// Requests that change something (not GET, not the token route).
    pub pim_write_requests: u64,
    pub token_grants: u64,
    /// Asset items the Akeneo emulator created or updated.
    pub asset_writes: u64,
    /// Option creations (`PATCH .../options/{code}`) during the sync.
    pub option_writes: u64,
    /// 429 answers of the Akeneo emulator.
    pub throttled: u64,
    /// Highest number of Akeneo requests in flight at once.
    pub pim_max_in_flight: u64,
    /// `pim_requests / asset_writes`.
    pub pim_requests_per_changed_asset: Option<f64>,
    /// DAM listing pages served.
    pub dam_pages: u64,
    /// Peak RSS of the connector (`ru_maxrss`), MiB.
    pub peak_rss_mib: f64,
    /// Min and max sampled RSS after the first 20 % of the run, MiB.
    pub rss_after_warmup_mib: Option<(f64, f64)>,
    /// Mean RSS of the last fifth of the run minus that of the second fifth, MiB (growth).
    pub rss_growth_mib: Option<f64>,
    /// Mean RSS of the last tenth of the run minus that of its 50–60 % window, MiB (growth
    /// over the second half; ≈ 0 once bounded caches are full).
    #[serde(default)]
    pub rss_growth_second_half_mib: Option<f64>,
    /// RSS over the run, downsampled: (seconds, MiB).
    pub rss_timeline: Vec<(f64, f64)>,
    /// Anonymous RSS (heap, stacks) over the run, downsampled: (seconds, MiB).
    #[serde(default)]
    pub rss_anon_timeline: Vec<(f64, f64)>,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// `processed / (user + sys)`: the connector's own cost.
    pub assets_per_cpu_s: Option<f64>,
    /// CPU seconds both emulators used during the sync (they share the machine's CPUs).
    #[serde(default)]
    pub emulators_cpu_s: Option<f64>,
    pub exit_code: Option<i32>,
    pub summary: SyncSummary,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met.
    pub met: Option<bool>,
    /// `/proc/loadavg` just before the sync.
    pub load_before: String,
    pub notes: Vec<String>,
}

/// The results file: the machine of the latest run and the latest result of each scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsFile {
    pub generated_by: String,
    /// `git describe --always --dirty` of the workspace when known.
    pub commit: Option<String>,
    /// When the measured `assetbridge` binary was built (its modification time, UTC): the
    /// commit above is the workspace's at run time, not necessarily the binary's.
    #[serde(default)]
    pub binary_built: Option<String>,
    pub machine: Machine,
    /// By scenario name.
    pub scenarios: BTreeMap<String, ScenarioResult>,
    /// Ingest scenarios (webhook, queues; [`crate::ingest`]), by name.
    #[serde(default)]
    pub ingest: BTreeMap<String, crate::ingest::IngestResult>,
}

impl ResultsFile {
    /// Reads `path` if it exists (a file from another machine or an unreadable one starts
    /// afresh), then records `results` over it.
    pub fn merge_into(
        path: &Path,
        machine: Machine,
        commit: Option<String>,
        binary_built: Option<String>,
        results: &[ScenarioResult],
    ) -> Result<Self> {
        let mut file = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ResultsFile>(&b).ok())
            .filter(|f| {
                f.machine.cpu_model == machine.cpu_model && f.machine.nproc == machine.nproc
            })
            .unwrap_or_else(|| ResultsFile {
                generated_by: String::new(),
                commit: None,
                binary_built: None,
                machine: machine.clone(),
                scenarios: BTreeMap::new(),
                ingest: BTreeMap::new(),
            });
        file.generated_by = "cargo run --release -p assetbridge-bench".into();
        file.machine = machine;
        file.commit = commit;
        file.binary_built = binary_built;
        for r in results {
            file.scenarios.insert(r.name.clone(), r.clone());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let text = serde_json::to_string_pretty(&file)? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(file)
    }
}

fn f0(v: f64) -> String {
    let s = format!("{:.0}", v);
    // Thin thousands separators for readability: 12345 → 12 345.
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// The Markdown table of `results`, in scenario order.
pub fn markdown(results: &[&ScenarioResult]) -> String {
    let mut out = String::from(
        "| Scenario | DAM assets | Read | Changed | Wall (s) | Assets/s | PIM limit | % of limit | PIM req. / changed asset | PIM writes | Peak RSS (MiB) | CPU user+sys (s) | Target | Met |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in results {
        let opt =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} |\n",
            r.name,
            f0(r.settings.dam_assets as f64),
            f0(r.processed as f64),
            f0(r.changed as f64),
            r.wall_s,
            f0(r.throughput),
            opt(r.pim_limit, &|v| format!("{}/s", f0(v))),
            opt(r.ratio_to_pim_limit, &|v| format!("{:.0} %", v * 100.0)),
            opt(r.pim_requests_per_changed_asset, &|v| format!("{v:.3}")),
            r.pim_write_requests,
            r.peak_rss_mib,
            r.cpu_user_s + r.cpu_sys_s,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "\
family                seen   created   updated  unchanged  deleted  marked    kept  skipped  failed  retrying pim writes
packshots             5000      4990         0         10        0       0       0        0       0         0         50
lifestyle             5000      5000         0          0        0       0       0        0       0         0         50
total                10000      9990         0         10        0       0       0        0       0         0        100
took 2.5s
";

    #[test]
    fn summary_totals_and_took() {
        let s = SyncSummary::parse(OUT).unwrap();
        assert_eq!(s.seen, 10_000);
        assert_eq!(s.created, 9_990);
        assert_eq!(s.unchanged, 10);
        assert_eq!(s.pim_writes, 100);
        assert_eq!(s.took_s, Some(2.5));
        assert_eq!(s.changed(), 9_990);
        assert!(SyncSummary::parse("error: no such file").is_err());
    }

    #[test]
    fn thousands() {
        assert_eq!(f0(0.4), "0");
        assert_eq!(f0(999.0), "999");
        assert_eq!(f0(1000.0), "1\u{202f}000");
        assert_eq!(f0(1_234_567.0), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::describe();
        assert!(m.nproc >= 1);
        assert!(m.memory_mib > 0);
        assert!(!m.kernel.is_empty());
        assert!(m.date.ends_with('Z'));
    }
}
