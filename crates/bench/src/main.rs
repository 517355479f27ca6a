//! `assetbridge-bench`: the benchmark harness of assetbridge.
//!
//! It builds nothing: it runs the release binary (`target/release/assetbridge`; build it first
//! with `cargo build --release -p assetbridge`, or pass `--build`). For each scenario it starts
//! the DAM emulator and the Akeneo emulator as separate processes on free 127.0.0.1 ports
//! (`assetbridge emulate dam|akeneo --listen 127.0.0.1:0`), writes the connector's configuration
//! file into a temporary directory, runs `assetbridge sync` as a third process and measures it:
//! wall time, throughput, the ratio to the scenario's physical limit, PIM requests per changed
//! asset (the Akeneo emulator's counters, read over HTTP), peak RSS (`wait4`'s `ru_maxrss`, and
//! `/proc/<pid>/status` sampled every 100 ms) and CPU time (`ru_utime + ru_stime`).
//!
//! Results: `bench/results.json` (`bench/results-quick.json` with `--quick`), merged by scenario
//! name, with the machine described; and a Markdown table on stdout for the README.
//!
//! ```sh
//! cargo build --release -p assetbridge -p assetbridge-bench
//! cargo run --release -p assetbridge-bench -- --quick
//! cargo run --release -p assetbridge-bench -- --scenario initial --scenario resync
//! ```

mod http;
mod ingest;
mod process;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

use process::{check_interrupted, Out, Proc};
use report::{Machine, ResultsFile, ScenarioResult, Settings, SyncSummary};

/// Benchmarks assetbridge against its emulators, each in its own process on 127.0.0.1.
///
/// Example:
///   cargo build --release -p assetbridge -p assetbridge-bench
///   cargo run --release -p assetbridge-bench -- --quick
///   cargo run --release -p assetbridge-bench -- --scenario initial --scenario baseline
#[derive(Debug, Parser)]
#[command(name = "assetbridge-bench", verbatim_doc_comment)]
struct Args {
    /// Scenarios to run (repeatable). `incremental` and `resync` run after `initial` on the
    /// same emulators, so asking for either runs `initial` too. Default: all.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// Smaller sizes for a fast check: 10 000 assets instead of 100 000, 100 000 instead of
    /// 1 000 000, a 2 000-asset baseline instead of 10 000.
    #[arg(long)]
    quick: bool,
    /// The assetbridge binary. Default: target/release/assetbridge of this workspace.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Run `cargo build --release -p assetbridge` first.
    #[arg(long)]
    build: bool,
    /// Results file (merged by scenario name). Default: bench/results.json
    /// (bench/results-quick.json with --quick).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// DAM paging style the emulator serves and the connector follows. Default: cursor.
    #[arg(long, value_enum, default_value = "cursor")]
    dam_paging: DamPaging,
    /// Keep the temporary directories (configuration, state, logs) and print where they are.
    #[arg(long)]
    keep: bool,
    /// Run nothing: print the Markdown table of the results file.
    #[arg(long)]
    table: bool,
    /// State store of the ingest scenarios (webhook, queues): `sqlite` (a file in the temporary
    /// directory) or `postgres` (a database created on 127.0.0.1:5432, user postgres, and
    /// dropped afterwards; results named `*_postgres`). Default: sqlite.
    #[arg(long, value_enum, default_value = "sqlite")]
    ingest_state: ingest::StateBackend,
    /// webhook_ingest: wrk's connections (requests in flight). Default: 64.
    #[arg(long, default_value_t = 64)]
    wrk_connections: u32,
    /// webhook_ingest: wrk's threads. Default: 1 (the connector needs the other CPU).
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    /// webhook_ingest: seconds of load. Default: 20 (10 with --quick).
    #[arg(long)]
    wrk_seconds: Option<u64>,
    /// queue_ingest_*: messages published. Default: 100 000 (20 000 with --quick).
    #[arg(long)]
    messages: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every scenario below.
    All,
    /// Initial sync of 100 000 assets, PIM at 50 ms with 4 concurrent calls, DAM at 20 ms a page.
    Initial,
    /// Then 1 % of the assets changed in the DAM: PIM writes for that 1 % only.
    Incremental,
    /// Then a full re-read with nothing changed: zero PIM writes.
    Resync,
    /// 100 000 assets with zero-latency emulators: the connector's own cost.
    ZeroLatency,
    /// 1 000 000 assets: peak RSS ≤ 64 MiB, and flat.
    Million,
    /// The per-asset baseline (one PATCH and one new token per asset) through the same harness.
    Baseline,
    /// Generic webhook deliveries from wrk to `assetbridge run`: durable events/s and p99
    /// acknowledgement latency (target ≥ 10 000/s, ≤ 25 ms). Needs `wrk` and `sqlite3`.
    #[value(name = "webhook-ingest", alias = "webhook_ingest")]
    WebhookIngest,
    /// RabbitMQ messages published beforehand, consumed by `assetbridge run`.
    #[value(name = "queue-ingest-amqp", alias = "queue_ingest_amqp")]
    QueueIngestAmqp,
    /// NATS JetStream messages published beforehand, consumed by `assetbridge run`.
    #[value(name = "queue-ingest-nats", alias = "queue_ingest_nats")]
    QueueIngestNats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DamPaging {
    Cursor,
    Page,
}

impl DamPaging {
    fn name(self) -> &'static str {
        match self {
            DamPaging::Cursor => "cursor",
            DamPaging::Page => "page",
        }
    }
}

/// Tags the DAM emulator's records carry beyond the four seasons the Akeneo emulator creates
/// (see `crates/emulators/src/dam/store.rs`): created up front, as a PIM admin would have, so
/// the measured syncs do not wait on Akeneo's 3-per-second option writes. Should the list drift,
/// the connector creates the missing ones and the results say so (`option_writes`).
const DAM_EXTRA_TAGS: &str = "red,studio,outdoor,new,sale,eco,premium,bestseller";

/// The asset families of the generated configuration (the DAM emulator's two types).
const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];

const PAGE_SIZE: u64 = 100;
const PIM_LATENCY_MS: u64 = 50;
const PIM_CAP: usize = 4;
const DAM_LATENCY_MS: u64 = 20;
const MIB: f64 = 1024.0;

/// Sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    main: u64,
    million: u64,
    baseline: u64,
}

/// One environment: two emulators and a configuration.
#[derive(Debug, Clone)]
struct Spec {
    assets: u64,
    pim_latency_ms: u64,
    pim_cap: Option<usize>,
    dam_latency_ms: u64,
    paging: DamPaging,
    baseline: bool,
    /// `None`: no requests-per-second ceiling in the client.
    requests_per_second: Option<f64>,
}

impl Spec {
    fn realistic(assets: u64, paging: DamPaging) -> Self {
        Self {
            assets,
            pim_latency_ms: PIM_LATENCY_MS,
            pim_cap: Some(PIM_CAP),
            dam_latency_ms: DAM_LATENCY_MS,
            paging,
            baseline: false,
            requests_per_second: Some(100.0),
        }
    }

    fn batch_size(&self) -> u64 {
        if self.baseline {
            1
        } else {
            PAGE_SIZE
        }
    }

    fn pim_limit(&self) -> Option<f64> {
        (self.pim_latency_ms > 0).then(|| {
            self.pim_cap.unwrap_or(PIM_CAP) as f64 * self.batch_size() as f64
                / (self.pim_latency_ms as f64 / 1000.0)
        })
    }

    /// The DAM listing's ceiling: each family's cursor pages are read one after another (one
    /// page per round trip), and `sync` reads the families side by side
    /// (`[sync] families_in_flight`, default 4 ≥ the two families here).
    fn dam_limit(&self) -> Option<f64> {
        (self.dam_latency_ms > 0).then(|| {
            FAMILIES.len() as f64 * PAGE_SIZE as f64 / (self.dam_latency_ms as f64 / 1000.0)
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            dam_assets: self.assets,
            pim_latency_ms: self.pim_latency_ms,
            pim_max_concurrency: self.pim_cap,
            dam_latency_ms: self.dam_latency_ms,
            dam_page_size: PAGE_SIZE,
            dam_paging: self.paging.name().into(),
            batch_size: self.batch_size(),
            fresh_token_per_request: self.baseline,
            requests_per_second: self.requests_per_second,
        }
    }

    /// A generous bound on one sync: five times the slowest limit's time, plus two minutes.
    fn deadline(&self) -> Duration {
        let slowest = [self.pim_limit(), self.dam_limit()]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let per_asset = if slowest.is_finite() {
            5.0 / slowest
        } else {
            1.0 / 1000.0
        };
        Duration::from_secs_f64(120.0 + self.assets as f64 * per_asset)
    }
}

/// The running emulators of one environment and the directory with the configuration, state
/// and logs. Dropping it kills the emulators, then removes the directory.
struct Env {
    dam: Option<Proc>,
    akeneo: Option<Proc>,
    dam_url: String,
    akeneo_url: String,
    config: PathBuf,
    bin: PathBuf,
    spec: Spec,
    syncs: u32,
    dir: Option<tempfile::TempDir>,
}

impl Env {
    fn start(bin: &Path, spec: Spec) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("assetbridge-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let path = dir.path().to_path_buf();
        eprintln!(
            "  starting emulators ({} DAM assets, PIM {} ms{}, DAM {} ms a page, {} paging) in {}",
            spec.assets,
            spec.pim_latency_ms,
            spec.pim_cap
                .map(|c| format!(" cap {c}"))
                .unwrap_or_default(),
            spec.dam_latency_ms,
            spec.paging.name(),
            path.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["emulate", "dam", "--listen", "127.0.0.1:0"])
            .args(["--assets", &spec.assets.to_string()])
            .args(["--latency-ms", &spec.dam_latency_ms.to_string()])
            .args(["--paging", spec.paging.name()])
            .env("RUST_LOG", "warn");
        let mut dam = Proc::spawn("DAM emulator", cmd, &path.join("dam.log"), Out::Pipe)?;
        let seeding = Duration::from_secs(120 + spec.assets / 5_000);
        let dam_url = url_of(&dam.wait_for_line(" on http://", seeding)?)?;

        let mut cmd = Command::new(bin);
        cmd.args(["emulate", "akeneo", "--listen", "127.0.0.1:0"])
            .args(["--latency-ms", &spec.pim_latency_ms.to_string()])
            .args(["--media-prefix", &format!("{dam_url}/files/")])
            .args(["--tag-options", DAM_EXTRA_TAGS])
            .env("RUST_LOG", "warn");
        if let Some(cap) = spec.pim_cap {
            cmd.args(["--max-concurrency", &cap.to_string()]);
        }
        let mut akeneo = Proc::spawn("Akeneo emulator", cmd, &path.join("akeneo.log"), Out::Pipe)?;
        let akeneo_url = url_of(&akeneo.wait_for_line(" on http://", Duration::from_secs(60))?)?;

        let config = path.join("assetbridge.toml");
        std::fs::write(
            &config,
            config_file(&akeneo_url, &dam_url, &path.join("state.db"), &spec),
        )?;
        Ok(Self {
            dam: Some(dam),
            akeneo: Some(akeneo),
            dam_url,
            akeneo_url,
            config,
            bin: bin.to_path_buf(),
            spec,
            syncs: 0,
            dir: Some(dir),
        })
    }

    fn akeneo_stats(&self) -> Result<Value> {
        http::call(&self.akeneo_url, "GET", "/_emulator/stats", None)
    }

    fn dam_stats(&self) -> Result<Value> {
        http::call(&self.dam_url, "GET", "/_emulator/stats", None)
    }

    /// CPU seconds both emulators have used so far.
    fn emulators_cpu_s(&self) -> f64 {
        [&self.dam, &self.akeneo]
            .into_iter()
            .flatten()
            .map(Proc::cpu_s)
            .sum()
    }

    /// Runs `assetbridge sync` once (with `extra` arguments) and measures it.
    fn sync(
        &mut self,
        name: &str,
        description: &str,
        quick: bool,
        extra: &[&str],
    ) -> Result<ScenarioResult> {
        check_interrupted()?;
        http::call(&self.akeneo_url, "POST", "/_emulator/reset", None)?;
        let dam_before = self.dam_stats()?;
        self.syncs += 1;
        let dir = self.dir.as_ref().expect("directory present").path();
        let stdout = dir.join(format!("sync-{}-{name}.out", self.syncs));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("sync")
            .arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(extra);
        let load_before = report::settle();
        let date = report::now();
        eprintln!("  {name}: assetbridge sync {}", extra.join(" "));
        let deadline = Instant::now() + self.spec.deadline();
        let emulators_before = self.emulators_cpu_s();
        let proc = Proc::spawn(
            "assetbridge sync",
            cmd,
            &dir.join("sync.log"),
            Out::File(&stdout),
        )?;
        let exited = proc.wait_measured(deadline, Duration::from_millis(100))?;
        let emulators_cpu_s = self.emulators_cpu_s() - emulators_before;
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        let summary = SyncSummary::parse(&out).with_context(|| {
            format!(
                "sync exited with {:?}; see {}",
                exited.exit_code,
                dir.join("sync.log").display()
            )
        })?;
        let pim = self.akeneo_stats()?;
        let dam_after = self.dam_stats()?;

        let wall = exited.wall.as_secs_f64();
        let cpu = (exited.user + exited.sys).as_secs_f64();
        let (pim_requests, pim_write_requests, option_writes) = request_counts(&pim);
        let asset_writes = pim["asset_writes"].as_u64().unwrap_or(0);
        let processed = summary.seen;
        let throughput = processed as f64 / wall.max(1e-9);
        let pim_limit = self.spec.pim_limit();
        let rss_mib = |kb: u64| kb as f64 / MIB;
        let warm = process::rss_after_warmup(&exited.samples, wall, 0.2)
            .map(|(lo, hi)| (rss_mib(lo), rss_mib(hi)));
        let mut notes = Vec::new();
        if exited.exit_code != Some(0) {
            notes.push(format!(
                "sync exited with {:?} (signal {:?})",
                exited.exit_code, exited.signal
            ));
        }
        if option_writes > 0 {
            notes.push(format!(
                "{option_writes} option creation(s) during the sync (at Akeneo's 3/s)"
            ));
        }
        Ok(ScenarioResult {
            name: name.into(),
            description: description.into(),
            date,
            quick,
            settings: self.spec.settings(),
            processed,
            changed: summary.changed(),
            wall_s: wall,
            throughput,
            pim_limit,
            dam_limit: self.spec.dam_limit(),
            ratio_to_pim_limit: pim_limit.map(|l| throughput / l),
            pim_requests,
            pim_write_requests,
            token_grants: pim["token_grants"].as_u64().unwrap_or(0),
            asset_writes,
            option_writes,
            throttled: pim["throttled"].as_u64().unwrap_or(0),
            pim_max_in_flight: pim["max_in_flight"].as_u64().unwrap_or(0),
            pim_requests_per_changed_asset: (asset_writes > 0)
                .then(|| pim_requests as f64 / asset_writes as f64),
            dam_pages: dam_after["pages_served"].as_u64().unwrap_or(0)
                - dam_before["pages_served"].as_u64().unwrap_or(0),
            peak_rss_mib: rss_mib(exited.max_rss_kb),
            rss_after_warmup_mib: warm,
            rss_growth_mib: rss_growth(&exited.samples, wall),
            rss_growth_second_half_mib: rss_growth_second_half(&exited.samples, wall),
            rss_timeline: downsample(&exited.samples, 40, |s| s.rss_kb),
            rss_anon_timeline: downsample(&exited.samples, 40, |s| s.anon_kb),
            cpu_user_s: exited.user.as_secs_f64(),
            cpu_sys_s: exited.sys.as_secs_f64(),
            assets_per_cpu_s: (cpu > 0.0).then(|| processed as f64 / cpu),
            emulators_cpu_s: Some(emulators_cpu_s),
            exit_code: exited.exit_code,
            summary,
            target: String::new(),
            met: None,
            load_before,
            notes,
        })
    }

    /// Stops the emulators (SIGTERM, then SIGKILL) and removes the directory unless `keep`.
    fn finish(mut self, keep: bool) {
        if let Some(p) = self.dam.take() {
            p.stop(Duration::from_secs(5));
        }
        if let Some(p) = self.akeneo.take() {
            p.stop(Duration::from_secs(5));
        }
        if let Some(d) = self.dir.take() {
            if keep {
                eprintln!("  kept {}", d.keep().display());
            }
        }
    }
}

impl Drop for Env {
    /// Reached without [`Env::finish`] only on an error, a panic or Ctrl-C: the emulators are
    /// killed; the directory (logs, configuration, state) is kept after an error, for
    /// inspection, and removed after a panic or Ctrl-C.
    fn drop(&mut self) {
        self.dam.take();
        self.akeneo.take();
        if let Some(d) = self.dir.take() {
            if !std::thread::panicking() && !process::interrupted() {
                eprintln!(
                    "  logs, configuration and state kept in {}",
                    d.keep().display()
                );
            }
        }
    }
}

/// What the machine's CPUs allow when the connector and the emulators share them: `nproc`
/// CPUs divided by the CPU time all three spent per asset — the throughput this run could not
/// exceed however fast the connector's wall-clock pipeline.
fn cpu_bound_note(r: &ScenarioResult, nproc: usize) -> Option<String> {
    let connector = r.cpu_user_s + r.cpu_sys_s;
    let emulators = r.emulators_cpu_s?;
    let total = connector + emulators;
    if r.processed == 0 || total <= 0.0 {
        return None;
    }
    let us = |s: f64| s / r.processed as f64 * 1e6;
    Some(format!(
        "CPU per asset: connector {:.0} µs, emulators {:.0} µs ({:.1} s of CPU); {} CPUs shared by the three \
         allow at most {:.0} assets/s — and the emulators alone {:.0} assets/s",
        us(connector),
        us(emulators),
        emulators,
        nproc,
        nproc as f64 * r.processed as f64 / total,
        if emulators > 0.0 {
            nproc as f64 * r.processed as f64 / emulators
        } else {
            f64::INFINITY
        }
    ))
}

fn url_of(line: &str) -> Result<String> {
    let start = line.find("http://").context("no URL")?;
    let url = line[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    http::loopback(&url)?;
    Ok(url)
}

/// (all requests, write requests, option writes) from the Akeneo emulator's counters.
fn request_counts(stats: &Value) -> (u64, u64, u64) {
    let mut all = 0;
    let mut writes = 0;
    let mut options = 0;
    if let Some(map) = stats["requests"].as_object() {
        for (route, by_status) in map {
            let n: u64 = by_status
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            all += n;
            if !route.starts_with("GET ") && !route.contains("/oauth/") {
                writes += n;
            }
            if route.starts_with("PATCH ") && route.ends_with("/options/{option}") {
                options += n;
            }
        }
    }
    (all, writes, options)
}

fn mean_rss(samples: &[process::RssSample], from: f64, to: f64) -> Option<f64> {
    let w: Vec<f64> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .map(|s| s.rss_kb as f64)
        .collect();
    (!w.is_empty()).then(|| w.iter().sum::<f64>() / w.len() as f64)
}

/// Mean RSS of the last fifth of the run minus the mean of the second fifth, MiB.
fn rss_growth(samples: &[process::RssSample], wall: f64) -> Option<f64> {
    let early = mean_rss(samples, wall * 0.2, wall * 0.4)?;
    let late = mean_rss(samples, wall * 0.8, wall)?;
    Some((late - early) / MIB)
}

/// Mean RSS of the last tenth of the run minus the mean of its sixth tenth (50–60 %), MiB:
/// memory that grows with the work done keeps growing in the second half; a bounded cache
/// that fills up does not.
fn rss_growth_second_half(samples: &[process::RssSample], wall: f64) -> Option<f64> {
    let middle = mean_rss(samples, wall * 0.5, wall * 0.6)?;
    let late = mean_rss(samples, wall * 0.9, wall)?;
    Some((late - middle) / MIB)
}

/// About `points` (seconds, MiB) pairs of `kb` over the run, the last sample included.
fn downsample(
    samples: &[process::RssSample],
    points: usize,
    kb: impl Fn(&process::RssSample) -> u64,
) -> Vec<(f64, f64)> {
    if samples.is_empty() {
        return Vec::new();
    }
    let step = samples.len().div_ceil(points).max(1);
    let mut out: Vec<(f64, f64)> = samples
        .iter()
        .step_by(step)
        .map(|s| {
            (
                (s.at * 10.0).round() / 10.0,
                (kb(s) as f64 / MIB * 10.0).round() / 10.0,
            )
        })
        .collect();
    if let Some(last) = samples.last() {
        if samples.len() > 1 && (samples.len() - 1) % step != 0 {
            out.push((
                (last.at * 10.0).round() / 10.0,
                (kb(last) as f64 / MIB * 10.0).round() / 10.0,
            ));
        }
    }
    out
}

/// The connector's configuration: the demo's mapping (10 value rules per family).
fn config_file(akeneo: &str, dam: &str, state: &Path, spec: &Spec) -> String {
    let mut families = String::new();
    for f in FAMILIES {
        families.push_str(&format!(
            r#"
[[families]]
code = "{f}"
schedule = "5m"
values = [
  {{ attribute = "media",       from = "/url" }},
  {{ attribute = "title",       from = "/metadata/title",    locale = "en_US" }},
  {{ attribute = "title",       from = "/metadata/title_fr", locale = "fr_FR" }},
  {{ attribute = "title",       from = "/metadata/title_de", locale = "de_DE" }},
  {{ attribute = "description", from = "/metadata/description", locale = "en_US" }},
  {{ attribute = "tags",        from = "/metadata/tags" }},
  {{ attribute = "width",       from = "/metadata/width" }},
  {{ attribute = "height",      from = "/metadata/height" }},
  {{ attribute = "sku",         from = "/metadata/sku" }},
  {{ attribute = "supplier",    from = "/metadata/supplier" }},
]
"#
        ));
    }
    let mut akeneo_extra = format!(
        "requests_per_second = {:?}\n",
        spec.requests_per_second.unwrap_or(0.0)
    );
    if spec.baseline {
        akeneo_extra.push_str(
            "# The per-asset baseline: one asset per PATCH, a new token for every call.\n\
             batch_size = 1\nfresh_token_per_request = true\n",
        );
    }
    let paging = match spec.paging {
        DamPaging::Cursor => "",
        DamPaging::Page => "paging = { type = \"page_number\" }\n",
    };
    format!(
        r#"# Written by assetbridge-bench.
[state]
url = "sqlite://{state}"

[akeneo]
url = "{akeneo}"
client_id = "assetbridge"
secret = "${{BENCH_AKENEO_SECRET:-secret}}"
username = "admin"
password = "${{BENCH_AKENEO_PASSWORD:-admin}}"
create_missing_options = ["tags"]
{akeneo_extra}
[dam]
base_url = "{dam}"
auth = {{ type = "bearer", token = "${{BENCH_DAM_TOKEN:-dam-token}}" }}
family_param = "type"
page_size = {PAGE_SIZE}
{paging}
[sync]
deletions = "delete"
{families}"#,
        state = state.display()
    )
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

fn git_describe(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() -> ExitCode {
    process::install_signal_handlers();
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios; `Ok(false)` when some target was missed.
fn run(args: Args) -> Result<bool> {
    let root = workspace_root();
    if args.table {
        let path = results_path(&args, &root);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: ResultsFile = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a results file", path.display()))?;
        print_table(&file, &path);
        return Ok(true);
    }
    if args.build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "assetbridge"])
            .current_dir(&root)
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build --release -p assetbridge failed");
        }
    }
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/assetbridge"));
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --release -p assetbridge`) or pass --build",
            bin.display()
        );
    }
    let sizes = if args.quick {
        Sizes {
            main: 10_000,
            million: 100_000,
            baseline: 2_000,
        }
    } else {
        Sizes {
            main: 100_000,
            million: 1_000_000,
            baseline: 10_000,
        }
    };
    let wanted = |s: Scenario| {
        args.scenarios.is_empty()
            || args.scenarios.contains(&Scenario::All)
            || args.scenarios.contains(&s)
    };
    // The ingest scenarios run last: what they need is checked before the first scenario, so
    // a missing tool does not cost the results of the others.
    if [
        Scenario::WebhookIngest,
        Scenario::QueueIngestAmqp,
        Scenario::QueueIngestNats,
    ]
    .into_iter()
    .any(wanted)
    {
        ingest::check_tools(wanted(Scenario::WebhookIngest), args.ingest_state)?;
    }
    let machine = Machine::describe();
    eprintln!(
        "assetbridge-bench: {} on {} ({} CPUs, {} MiB, kernel {}, load {})",
        bin.display(),
        machine.cpu_model,
        machine.nproc,
        machine.memory_mib,
        machine.kernel,
        machine.load_average
    );
    let mut results: Vec<ScenarioResult> = Vec::new();

    if wanted(Scenario::Initial) || wanted(Scenario::Incremental) || wanted(Scenario::Resync) {
        eprintln!("initial → incremental → resync ({} assets)", sizes.main);
        let spec = Spec::realistic(sizes.main, args.dam_paging);
        let mut env = Env::start(&bin, spec)?;
        let mut r = env.sync(
            "initial",
            "initial sync; PIM 50 ms/request, 4 concurrent; DAM 20 ms/page of 100",
            args.quick,
            &[],
        )?;
        r.target = "≥ 90 % of the PIM limit".into();
        r.met = Some(
            r.ratio_to_pim_limit.is_some_and(|x| x >= 0.9)
                && r.summary.created == sizes.main
                && r.summary.failed == 0,
        );
        if r.summary.created != sizes.main {
            r.notes.push(format!(
                "created {} of {} assets",
                r.summary.created, sizes.main
            ));
        }
        explain_limits(&mut r);
        results.push(r);

        if wanted(Scenario::Incremental) || wanted(Scenario::Resync) {
            let n = (sizes.main / 100).max(1);
            let touched = http::call(
                &env.dam_url,
                "POST",
                "/_emulator/touch",
                Some(&json!({ "n": n })),
            )?;
            let touched = touched["ids"].as_array().map(Vec::len).unwrap_or(0) as u64;
            let mut r = env.sync(
                "incremental",
                "1 % of the assets changed in the DAM (/_emulator/touch), poll from the cursor",
                args.quick,
                &[],
            )?;
            r.target = format!("PIM writes for the {touched} changed assets only");
            // A few hundred assets read: start-up dominates, no rate to compare with a limit.
            r.pim_limit = None;
            r.ratio_to_pim_limit = None;
            r.met = Some(
                touched == n
                    && r.asset_writes == touched
                    && r.summary.updated == touched
                    && r.summary.failed == 0,
            );
            r.notes.push(format!(
                "{touched} assets touched; the poll also re-read {} unchanged assets of the overlap window (zero PIM calls for them)",
                r.summary.unchanged
            ));
            r.notes.push(format!(
                "throughput is of the assets read; changed assets per second: {:.0}",
                r.changed as f64 / r.wall_s.max(1e-9)
            ));
            results.push(r);

            let mut r = env.sync(
                "resync",
                "full re-read of every DAM asset (sync --full) with nothing changed",
                args.quick,
                &["--full"],
            )?;
            r.target = "0 PIM writes".into();
            r.met = Some(
                r.pim_write_requests == 0
                    && r.asset_writes == 0
                    && r.summary.seen == sizes.main
                    && r.summary.failed == 0,
            );
            r.pim_limit = None;
            r.ratio_to_pim_limit = None;
            r.notes.push(format!(
                "{} assets read, {} unchanged: `sync --full` reconciles, so besides the token grant and structure reads the PIM calls are reads — one asset search per DAM page of unchanged assets and the PIM's asset listing, page by page ({} requests, {} of them writes)",
                r.summary.seen, r.summary.unchanged, r.pim_requests, r.pim_write_requests
            ));
            explain_limits(&mut r);
            results.push(r);
        }
        env.finish(args.keep);
    }

    if wanted(Scenario::ZeroLatency) {
        eprintln!("zero-latency ({} assets)", sizes.main);
        let spec = Spec {
            assets: sizes.main,
            pim_latency_ms: 0,
            pim_cap: Some(PIM_CAP),
            dam_latency_ms: 0,
            paging: args.dam_paging,
            baseline: false,
            requests_per_second: None,
        };
        let mut env = Env::start(&bin, spec)?;
        let mut r = env.sync(
            "zero-latency",
            "initial sync against zero-latency emulators (no rate ceiling): the connector's own cost",
            args.quick,
            &[],
        )?;
        r.target = "≥ 50 000 assets/s".into();
        r.met = Some(r.throughput >= 50_000.0 && r.summary.failed == 0);
        r.notes.push(format!(
            "{:.0} assets per CPU-second of the connector; the emulators share the same {} CPUs",
            r.assets_per_cpu_s.unwrap_or(0.0),
            machine.nproc
        ));
        if let Some(note) = cpu_bound_note(&r, machine.nproc) {
            r.notes.push(note);
        }
        results.push(r);
        env.finish(args.keep);
    }

    if wanted(Scenario::Million) {
        eprintln!("million ({} assets)", sizes.million);
        let spec = Spec::realistic(sizes.million, args.dam_paging);
        let mut env = Env::start(&bin, spec)?;
        let mut r = env.sync(
            "million",
            "initial sync of the large DAM, realistic latencies: memory must not grow with the DAM",
            args.quick,
            &[],
        )?;
        r.target = "peak RSS ≤ 64 MiB, flat".into();
        // Flat: no growth over the second half of the run (≤ 1 MiB between the 50–60 % window
        // and the last tenth). A first full run showed RSS rising over the first half, then a
        // plateau; growth from the second fifth to the last fifth is reported as well.
        let flat = r.rss_growth_second_half_mib.is_some_and(|g| g <= 1.0);
        r.met = Some(r.peak_rss_mib <= 64.0 && flat && r.summary.failed == 0);
        let mib = |g: Option<f64>| {
            g.map(|g| format!("{g:+.1} MiB"))
                .unwrap_or_else(|| "n/a".into())
        };
        r.notes.push(format!(
            "RSS after warm-up (first 20 % of the run): {}; growth over the second half (last tenth − 50–60 %): {} (flat: ≤ 1 MiB); from the second fifth to the last fifth: {}",
            r.rss_after_warmup_mib
                .map(|(a, b)| format!("{a:.1}–{b:.1} MiB"))
                .unwrap_or_else(|| "no samples".into()),
            mib(r.rss_growth_second_half_mib),
            mib(r.rss_growth_mib)
        ));
        if let (Some(rss), Some(anon)) = (r.rss_timeline.last(), r.rss_anon_timeline.last()) {
            r.notes.push(format!(
                "at the end: RSS {:.1} MiB, of which {:.1} MiB anonymous (heap, stacks) and {:.1} MiB file-backed or shared (the binary, SQLite's mapped WAL index)",
                rss.1,
                anon.1,
                rss.1 - anon.1
            ));
        }
        explain_limits(&mut r);
        results.push(r);
        env.finish(args.keep);
    }

    if wanted(Scenario::Baseline) {
        eprintln!("baseline ({} assets)", sizes.baseline);
        let mut spec = Spec::realistic(sizes.baseline, args.dam_paging);
        spec.baseline = true;
        let mut env = Env::start(&bin, spec)?;
        let mut r = env.sync(
            "baseline",
            "per-asset baseline: one asset per PATCH and a new token per call (batch_size = 1, fresh_token_per_request)",
            args.quick,
            &[],
        )?;
        r.target = "none (reference)".into();
        if let Some(initial) = results.iter().find(|x| x.name == "initial") {
            r.notes.push(format!(
                "the connector's initial sync is {:.0}× faster ({:.0} vs {:.0} assets/s) with {:.0}× fewer PIM requests per asset",
                initial.throughput / r.throughput.max(1e-9),
                initial.throughput,
                r.throughput,
                r.pim_requests_per_changed_asset.unwrap_or(0.0)
                    / initial.pim_requests_per_changed_asset.unwrap_or(f64::INFINITY)
            ));
        }
        r.notes.push(
            "the emulator does not delay or cap the token route, so a token per call costs a local round trip only; against a real PIM it costs more".into(),
        );
        results.push(r);
        env.finish(args.keep);
    }

    let ingest_results = run_ingest(&args, &bin, &wanted)?;

    let out = results_path(&args, &root);
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
    let file =
        ResultsFile::merge_into(&out, machine.clone(), git_describe(&root), built, &results)?;
    let file = ingest::merge_into(&out, file, &ingest_results)?;
    print_table(&file, &out);
    Ok(results.iter().all(|r| r.met != Some(false))
        && ingest_results.iter().all(|r| r.met != Some(false)))
}

/// The ingest scenarios that are wanted (webhook, then the queues).
fn run_ingest(
    args: &Args,
    bin: &Path,
    wanted: &dyn Fn(Scenario) -> bool,
) -> Result<Vec<ingest::IngestResult>> {
    let webhook = wanted(Scenario::WebhookIngest);
    let amqp = wanted(Scenario::QueueIngestAmqp);
    let nats = wanted(Scenario::QueueIngestNats);
    if !(webhook || amqp || nats) {
        return Ok(Vec::new());
    }
    ingest::check_tools(webhook, args.ingest_state)?;
    let opts = ingest::IngestOptions {
        bin: bin.to_path_buf(),
        quick: args.quick,
        keep: args.keep,
        state: args.ingest_state,
        duration_s: args.wrk_seconds.unwrap_or(if args.quick { 10 } else { 20 }),
        connections: args.wrk_connections,
        threads: args.wrk_threads,
        messages: args
            .messages
            .unwrap_or(if args.quick { 20_000 } else { 100_000 }),
    };
    let mut out = Vec::new();
    if webhook {
        eprintln!("webhook_ingest ({} state)", opts.state.name());
        out.push(ingest::webhook_ingest(&opts)?);
    }
    if amqp {
        eprintln!("queue_ingest_amqp ({} state)", opts.state.name());
        out.push(ingest::queue_ingest(&opts, ingest::Broker::Amqp)?);
    }
    if nats {
        eprintln!("queue_ingest_nats ({} state)", opts.state.name());
        out.push(ingest::queue_ingest(&opts, ingest::Broker::Nats)?);
    }
    Ok(out)
}

fn results_path(args: &Args, root: &Path) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        root.join(if args.quick {
            "bench/results-quick.json"
        } else {
            "bench/results.json"
        })
    })
}

/// The machine, the table (scenario order) and the notes of a results file, on stdout.
fn print_table(file: &ResultsFile, path: &Path) {
    let machine = &file.machine;
    let order = [
        "initial",
        "incremental",
        "resync",
        "zero-latency",
        "million",
        "baseline",
    ];
    let rows: Vec<&ScenarioResult> = order
        .iter()
        .filter_map(|n| file.scenarios.get(*n))
        .collect();
    println!(
        "\nMachine: {} CPUs ({}), {} MiB, Linux {}; {}; load {} at start.\n",
        machine.nproc,
        machine.cpu_model,
        machine.memory_mib,
        machine.kernel,
        machine.date,
        machine.load_average
    );
    println!("{}", report::markdown(&rows));
    for r in &rows {
        for n in &r.notes {
            println!("- {}: {n}", r.name);
        }
    }
    if !file.ingest.is_empty() {
        let ingest: Vec<&ingest::IngestResult> = file.ingest.values().collect();
        println!("\nIngest:\n\n{}", ingest::markdown(&ingest));
        for r in &ingest {
            for n in &r.notes {
                println!("- {}: {n}", r.name);
            }
        }
    }
    let dates: Vec<&str> = rows.iter().map(|r| r.date.as_str()).collect();
    if let (Some(first), Some(last)) = (dates.iter().min(), dates.iter().max()) {
        println!("\nScenarios run from {first} to {last}.");
    }
    println!("Results: {}", path.display());
}

/// Says which limit bounds a latency scenario: the PIM's, or the DAM listing's when lower.
fn explain_limits(r: &mut ScenarioResult) {
    if let (Some(dam), Some(pim)) = (r.dam_limit, r.pim_limit) {
        if dam < pim {
            r.notes.push(format!(
                "the DAM listing (one page of {} at {} ms, each family's pages read one after another, the families side by side) caps reading at {:.0} assets/s = {:.0} % of the PIM limit; measured {:.0} % of the DAM limit",
                r.settings.dam_page_size,
                r.settings.dam_latency_ms,
                dam,
                dam / pim * 100.0,
                r.throughput / dam * 100.0
            ));
        }
    } else if let Some(dam) = r.dam_limit {
        r.notes.push(format!(
            "reading is bounded by the DAM listing: {dam:.0} assets/s (one page at a time); measured {:.0} % of it",
            r.throughput / dam * 100.0
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_of_the_scenarios() {
        let s = Spec::realistic(100_000, DamPaging::Cursor);
        assert_eq!(s.pim_limit(), Some(8_000.0));
        assert_eq!(s.dam_limit(), Some(10_000.0));
        let mut b = s.clone();
        b.baseline = true;
        assert_eq!(b.pim_limit(), Some(80.0));
        assert!(b.deadline() > s.deadline());
        let z = Spec {
            pim_latency_ms: 0,
            dam_latency_ms: 0,
            ..s.clone()
        };
        assert_eq!(z.pim_limit(), None);
        assert!(z.deadline() >= Duration::from_secs(120));
    }

    #[test]
    fn config_parses_as_toml_and_has_the_baseline_switches_only_for_the_baseline() {
        let s = Spec::realistic(10, DamPaging::Page);
        let text = config_file(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            Path::new("/tmp/x.db"),
            &s,
        );
        let v: toml::Value = text.parse::<toml::Table>().unwrap().into();
        assert_eq!(v["akeneo"]["requests_per_second"].as_float(), Some(100.0));
        assert!(v["akeneo"].get("batch_size").is_none());
        assert_eq!(v["dam"]["paging"]["type"].as_str(), Some("page_number"));
        assert_eq!(v["families"].as_array().unwrap().len(), 2);
        assert_eq!(v["families"][0]["values"].as_array().unwrap().len(), 10);
        let mut b = s;
        b.baseline = true;
        b.requests_per_second = None;
        let text = config_file(
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            Path::new("/tmp/x.db"),
            &b,
        );
        let v: toml::Value = text.parse::<toml::Table>().unwrap().into();
        assert_eq!(v["akeneo"]["batch_size"].as_integer(), Some(1));
        assert_eq!(v["akeneo"]["fresh_token_per_request"].as_bool(), Some(true));
        assert_eq!(v["akeneo"]["requests_per_second"].as_float(), Some(0.0));
    }

    #[test]
    fn counts_from_the_emulator_counters() {
        let stats = json!({"requests": {
            "POST /api/oauth/v1/token": {"200": 2},
            "GET /api/rest/v1/asset-families/{family}": {"200": 2},
            "PATCH /api/rest/v1/asset-families/{family}/assets": {"200": 10, "429": 1},
            "PATCH /api/rest/v1/asset-families/{family}/attributes/{attribute}/options/{option}": {"201": 3}
        }});
        assert_eq!(request_counts(&stats), (18, 14, 3));
    }

    #[test]
    fn urls_from_ready_lines() {
        assert_eq!(
            url_of("DAM emulator on http://127.0.0.1:4321").unwrap(),
            "http://127.0.0.1:4321"
        );
        assert!(url_of("Akeneo emulator on http://0.0.0.0:1").is_err());
        assert!(url_of("nothing").is_err());
    }

    #[test]
    fn downsampling_keeps_the_last_point() {
        let s: Vec<process::RssSample> = (0..100)
            .map(|i| process::RssSample {
                at: i as f64,
                rss_kb: 1024 * i,
                hwm_kb: 1024 * i,
                anon_kb: 1024 * i,
            })
            .collect();
        let d = downsample(&s, 10, |s| s.rss_kb);
        assert!(d.len() <= 11);
        assert_eq!(d.first(), Some(&(0.0, 0.0)));
        assert_eq!(d.last(), Some(&(99.0, 99.0)));
        assert_eq!(rss_growth(&s, 100.0).map(|g| g.round()), Some(60.0));
        assert_eq!(
            rss_growth_second_half(&s, 100.0).map(|g| g.round()),
            Some(40.0)
        );
        // Rise, then plateau: growth over the run, none in the second half.
        let plateau: Vec<process::RssSample> = (0..100)
            .map(|i| process::RssSample {
                at: i as f64,
                rss_kb: 1024 * i.min(40),
                hwm_kb: 1024 * i.min(40),
                anon_kb: 1024 * i.min(40),
            })
            .collect();
        assert!(rss_growth(&plateau, 100.0).unwrap() > 5.0);
        assert_eq!(rss_growth_second_half(&plateau, 100.0), Some(0.0));
    }
}
