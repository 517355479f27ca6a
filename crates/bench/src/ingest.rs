//! Ingest scenarios: how fast `assetbridge run` makes incoming events durable.
//!
//! - `webhook_ingest`: `wrk` (Debian's package; a Lua script makes every request a new event
//!   with its own event id, authenticated with the generic webhook's API key) POSTs to `run`'s
//!   webhook receiver over loopback for a fixed time with a fixed number of connections. The
//!   throughput is **durable events per second**: the run's event ids the state store holds at
//!   the end (counted in the database with its own CLI, `sqlite3` or `psql`, after the
//!   connector stopped) divided by the load's duration — not the HTTP answers. The latency is
//!   wrk's acknowledgement latency (send → 2xx), whose percentiles come from its `done` hook.
//! - `queue_ingest_amqp` / `queue_ingest_nats`: N messages are published beforehand (persistent,
//!   publisher confirms / JetStream acks, each with its own message id), then `run` starts and
//!   consumes them. The harness polls the store's count of the run's event ids; the rate is
//!   taken from the first durable event to the last. Acknowledgement is checked at the broker
//!   (AMQP: the queue is empty once the connector stopped, so nothing was left unacknowledged;
//!   NATS: the durable consumer has nothing pending and nothing unacknowledged).
//!
//! In all three the connector runs as deployed: its pollers (a DAM emulator with no asset) and
//! two inbox workers draining into the Akeneo emulator (50 ms a request, 4 concurrent). The
//! drain is held to 5 PIM requests per second (`requests_per_second = 5`, ≤ 500 assets/s) so
//! that the CPU measured is the ingest path's, not the write path's (which the sync scenarios
//! measure); the results name it. Unlike the sync scenarios this module uses an async runtime
//! (tokio, current thread) for the brokers' clients (lapin, async-nats: the same the connector
//! uses).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http;
use crate::process::{check_interrupted, Out, Proc};
use crate::report::{self, Machine};

/// Where the connector keeps its state in an ingest scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateBackend {
    /// SQLite on local disk (the default, embedded).
    Sqlite,
    /// PostgreSQL at 127.0.0.1:5432 (user `postgres`, a database created for the run).
    Postgres,
}

impl StateBackend {
    pub fn name(self) -> &'static str {
        match self {
            StateBackend::Sqlite => "sqlite",
            StateBackend::Postgres => "postgres",
        }
    }

    /// The scenario's name in the results (`webhook_ingest`, `webhook_ingest_postgres`).
    fn result_name(self, base: &str) -> String {
        match self {
            StateBackend::Sqlite => base.to_owned(),
            StateBackend::Postgres => format!("{base}_postgres"),
        }
    }
}

/// What every ingest scenario of a run shares.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub bin: PathBuf,
    pub quick: bool,
    pub keep: bool,
    pub state: StateBackend,
    /// wrk: load duration, connections, threads.
    pub duration_s: u64,
    pub connections: u32,
    pub threads: u32,
    /// Messages published for a queue scenario.
    pub messages: u64,
}

/// Acknowledgement latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One ingest scenario's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestResult {
    pub name: String,
    pub description: String,
    pub date: String,
    pub quick: bool,
    /// `sqlite` or `postgres`.
    pub state: String,
    /// How the load was made (the load generator's command line, or what was published).
    pub load: String,
    /// Requests completed by the load generator / messages published.
    pub sent: u64,
    /// Requests answered 2xx / messages acknowledged to the broker.
    pub acknowledged: u64,
    /// Non-2xx answers and socket errors (webhook).
    pub failed: u64,
    /// The run's event ids in the state store at the end.
    pub durable: u64,
    /// The measured window, seconds (webhook: the load's duration; queue: first to last
    /// durable event).
    pub window_s: f64,
    /// `durable / window_s`.
    pub durable_per_s: f64,
    /// Queue: every message from the connector's start to the last durable event (start-up,
    /// connection, PIM structure reads included), events/s.
    pub overall_per_s: Option<f64>,
    /// Webhook: the acknowledgement latency (wrk).
    pub latency: Option<Latency>,
    /// Webhook: inbox transactions of the group committer, and deliveries per transaction.
    pub commits: Option<u64>,
    pub deliveries_per_commit: Option<f64>,
    /// CPU seconds of the connector during the window (user + system).
    pub connector_cpu_s: f64,
    /// CPU seconds of the load generator (wrk) during the run, when measured.
    pub load_generator_cpu_s: Option<f64>,
    /// Peak RSS of the connector (VmHWM at the end of the window), MiB.
    pub peak_rss_mib: f64,
    /// Asset writes the Akeneo emulator received meanwhile (the throttled drain).
    pub pim_asset_writes: u64,
    pub target: String,
    pub met: Option<bool>,
    pub load_before: String,
    pub notes: Vec<String>,
}

const WEBHOOK_PATH: &str = "/webhooks/dam";
const API_KEY: &str = "bench-webhook-key";
const FAMILY: &str = "packshots";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Says what is missing, with how to install it, before anything starts.
pub fn check_tools(webhook: bool, state: StateBackend) -> Result<()> {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
            .unwrap_or(false)
    };
    if webhook && !have("wrk") {
        bail!("the webhook_ingest scenario needs `wrk` (the HTTP load generator) on the PATH: `apt-get install -y wrk` (Debian)");
    }
    match state {
        StateBackend::Sqlite if !have("sqlite3") => bail!(
            "the ingest scenarios count durable events with the `sqlite3` command: `apt-get install -y sqlite3`"
        ),
        StateBackend::Postgres if !have("psql") => bail!(
            "the ingest scenarios on PostgreSQL need `psql`: `apt-get install -y postgresql-client`"
        ),
        _ => Ok(()),
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// A short unique tag for this run's event ids, queue, stream and database.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
}

/// GET `path` on a loopback server; (status, body text).
fn get_text(base_url: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let addr = http::loopback(base_url)?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(16 * 1024 * 1024).read_to_end(&mut raw)?;
    let (status, body) = http::parse_response(&raw)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A sample of a Prometheus text exposition: `name{labels} value`.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// (user + system CPU seconds, VmHWM MiB) of a process.
fn cpu_and_peak(pid: u32) -> (f64, f64) {
    let cpu = crate::process::cpu_seconds(pid);
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0);
    (cpu, hwm)
}

/// Seconds the threads of a process have spent runnable but waiting for a CPU (the second
/// field of `/proc/<pid>/task/*/schedstat`): time lost to other processes (and to each other).
fn run_queue_wait_s(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// The state store of one scenario: where it is, and how to count the run's events in it.
struct StateDb {
    backend: StateBackend,
    url: String,
    sqlite_path: Option<PathBuf>,
    pg_database: Option<String>,
}

impl StateDb {
    fn create(backend: StateBackend, dir: &Path, tag: &str) -> Result<Self> {
        match backend {
            StateBackend::Sqlite => {
                let path = dir.join("state.db");
                Ok(Self {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    sqlite_path: Some(path),
                    pg_database: None,
                })
            }
            StateBackend::Postgres => {
                let db = format!("assetbridge_bench_{tag}");
                psql(PG_ADMIN_URL, &format!("CREATE DATABASE {db}"))?;
                Ok(Self {
                    backend,
                    url: format!("postgres://postgres@127.0.0.1:5432/{db}"),
                    sqlite_path: None,
                    pg_database: Some(db),
                })
            }
        }
    }

    /// Event ids starting with `prefix` the store has seen (durably committed).
    fn count_events(&self, prefix: &str) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM seen_events WHERE event_id LIKE '{prefix}%'");
        let out = match self.backend {
            StateBackend::Sqlite => {
                let path = self.sqlite_path.as_ref().expect("sqlite path");
                if !path.exists() {
                    return Ok(0);
                }
                let o = Command::new("sqlite3")
                    .arg("-readonly")
                    .arg(path)
                    .arg(&sql)
                    .output()
                    .context("cannot run sqlite3")?;
                if !o.status.success() {
                    let err = String::from_utf8_lossy(&o.stderr);
                    // Before the connector created its schema.
                    if err.contains("no such table") {
                        return Ok(0);
                    }
                    bail!("sqlite3: {err}");
                }
                String::from_utf8_lossy(&o.stdout).into_owned()
            }
            StateBackend::Postgres => match psql(&self.url, &sql) {
                Ok(s) => s,
                Err(e) if e.to_string().contains("does not exist") => return Ok(0),
                Err(e) => return Err(e),
            },
        };
        out.trim()
            .parse()
            .with_context(|| format!("count of events: `{}`", out.trim()))
    }
}

impl Drop for StateDb {
    fn drop(&mut self) {
        if let Some(db) = self.pg_database.take() {
            let _ = psql(PG_ADMIN_URL, &format!("DROP DATABASE IF EXISTS {db}"));
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<String> {
    let o = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .context("cannot run psql")?;
    if !o.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Emulators, the connector's configuration and (once started) the connector.
struct Stack {
    dir: Option<tempfile::TempDir>,
    dam: Option<Proc>,
    akeneo: Option<Proc>,
    akeneo_url: String,
    connector: Option<Proc>,
    admin_url: String,
    webhook_url: String,
    state: StateDb,
    tag: String,
    bin: PathBuf,
}

impl Stack {
    fn start(opts: &IngestOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("assetbridge-bench-ingest-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let path = dir.path().to_path_buf();
        let tag = run_tag();
        let state = StateDb::create(opts.state, &path, &tag)?;
        eprintln!(
            "  starting emulators (DAM without assets; PIM 50 ms, cap 4) in {}",
            path.display()
        );
        let mut cmd = Command::new(&opts.bin);
        cmd.args(["emulate", "dam", "--listen", "127.0.0.1:0", "--assets", "0"])
            .env("RUST_LOG", "warn");
        let mut dam = Proc::spawn("DAM emulator", cmd, &path.join("dam.log"), Out::Pipe)?;
        let dam_url = crate::url_of(&dam.wait_for_line(" on http://", Duration::from_secs(60))?)?;
        let mut cmd = Command::new(&opts.bin);
        cmd.args(["emulate", "akeneo", "--listen", "127.0.0.1:0"])
            .args(["--latency-ms", "50", "--max-concurrency", "4"])
            .args(["--media-prefix", &format!("{dam_url}/files/")])
            .env("RUST_LOG", "warn");
        let mut akeneo = Proc::spawn("Akeneo emulator", cmd, &path.join("akeneo.log"), Out::Pipe)?;
        let akeneo_url =
            crate::url_of(&akeneo.wait_for_line(" on http://", Duration::from_secs(60))?)?;
        let admin_port = free_port()?;
        let webhook_port = free_port()?;
        Ok(Self {
            dir: Some(dir),
            dam: Some(dam),
            akeneo: Some(akeneo),
            akeneo_url: akeneo_url.clone(),
            connector: None,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            webhook_url: format!("http://127.0.0.1:{webhook_port}"),
            state,
            tag,
            bin: opts.bin.clone(),
        }
        .with_config(&dam_url, &akeneo_url, admin_port, webhook_port))
    }

    fn with_config(self, dam: &str, akeneo: &str, admin_port: u16, webhook_port: u16) -> Self {
        let cfg = format!(
            r#"# Written by assetbridge-bench (ingest scenarios).
[state]
url = "{state}"

[server]
listen = "127.0.0.1:{admin_port}"

[akeneo]
url = "{akeneo}"
client_id = "assetbridge"
secret = "secret"
username = "admin"
password = "admin"
# The inbox workers' drain is held to 5 PIM requests/s (≤ 500 assets/s): the ingest path is
# what these scenarios measure.
requests_per_second = 5.0

[dam]
base_url = "{dam}"
auth = {{ type = "bearer", token = "dam-token" }}
family_param = "type"

[[families]]
code = "{FAMILY}"
schedule = "24h"
values = [
  {{ attribute = "title", from = "/title", locale = "en_US" }},
]

[webhooks]
listen = "127.0.0.1:{webhook_port}"
# The gate stays on (its count of the inbox is part of the cost), far above the run's events.
backlog_limit = 100000000

[[webhooks.generic]]
path = "{WEBHOOK_PATH}"
shape = {{ family = "{FAMILY}", event_id_pointer = "/event_id" }}
auth.api_key = {{ header = "X-Api-Key", key = "{API_KEY}" }}
"#,
            state = self.state.url,
        );
        let path = self.dir().join("assetbridge.toml");
        std::fs::write(&path, cfg).expect("temporary directory is writable");
        self
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory present").path()
    }

    /// Appends `text` to the configuration (the queue consumers).
    fn add_config(&self, text: &str) -> Result<()> {
        let path = self.dir().join("assetbridge.toml");
        let mut cfg = std::fs::read_to_string(&path)?;
        cfg.push_str(text);
        std::fs::write(&path, cfg)?;
        Ok(())
    }

    /// Starts `assetbridge run`; returns once `/readyz` answers 200 (when `wait_ready`).
    fn start_connector(&mut self, wait_ready: bool) -> Result<u32> {
        let dir = self.dir().to_path_buf();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(dir.join("assetbridge.toml"))
            .env("RUST_LOG", "warn");
        let proc = Proc::spawn(
            "assetbridge run",
            cmd,
            &dir.join("run.log"),
            Out::File(&dir.join("run.out")),
        )?;
        let pid = proc.pid();
        self.connector = Some(proc);
        if wait_ready {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                check_interrupted()?;
                if let Ok((200, _)) = get_text(&self.admin_url, "/readyz") {
                    break;
                }
                if Instant::now() > until {
                    bail!(
                        "assetbridge run not ready within 60 s; see {}",
                        dir.join("run.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(pid)
    }

    fn metrics(&self) -> String {
        get_text(&self.admin_url, "/metrics")
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    fn pim_asset_writes(&self) -> u64 {
        http::call(&self.akeneo_url, "GET", "/_emulator/stats", None)
            .ok()
            .and_then(|v| v["asset_writes"].as_u64())
            .unwrap_or(0)
    }

    /// SIGTERM to the connector, then wait for it to exit (at most 60 s).
    fn stop_connector(&mut self) {
        if let Some(p) = self.connector.take() {
            p.stop(Duration::from_secs(60));
        }
    }

    fn finish(mut self, keep: bool) {
        self.stop_connector();
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

impl Drop for Stack {
    fn drop(&mut self) {
        self.connector.take();
        self.dam.take();
        self.akeneo.take();
        if let Some(d) = self.dir.take() {
            if !std::thread::panicking() && !crate::process::interrupted() {
                eprintln!(
                    "  logs, configuration and state kept in {}",
                    d.keep().display()
                );
            }
        }
    }
}

/// wrk's Lua script: each request a new event (its own event id and asset), the API key
/// header, and a `done` hook printing the summary as one JSON line.
fn wrk_script(prefix: &str) -> String {
    format!(
        r#"-- Written by assetbridge-bench: one new event per request.
local threads = {{}}
local n = 0
function setup(thread)
  thread:set("tid", n)
  n = n + 1
  table.insert(threads, thread)
end

local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Api-Key"] = "{API_KEY}"

function request()
  counter = counter + 1
  local id = "{prefix}" .. tid .. "-" .. counter
  local body = '{{"id":"asset-' .. id .. '","updated_at":"2026-11-23T10:00:00Z","event_id":"' .. id .. '","title":"bench event ' .. counter .. '"}}'
  return wrk.format(nil, "{WEBHOOK_PATH}", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"#
    )
}

/// The `WRK-JSON` line of wrk's output.
fn parse_wrk(out: &str) -> Result<Value> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("WRK-JSON "))
        .with_context(|| format!("no summary in wrk's output:\n{out}"))?;
    serde_json::from_str(line).context("wrk's summary is not JSON")
}

pub fn webhook_ingest(opts: &IngestOptions) -> Result<IngestResult> {
    let mut stack = Stack::start(opts)?;
    let pid = stack.start_connector(true)?;
    let prefix = format!("wb-{}-", stack.tag);
    let dir = stack.dir().to_path_buf();
    let script = dir.join("events.lua");
    std::fs::write(&script, wrk_script(&prefix))?;

    // A short warm-up (connections, first transactions), not counted: its events have their
    // own prefix.
    let warm_prefix = format!("warm-{}-", stack.tag);
    let warm_script = dir.join("warm.lua");
    std::fs::write(&warm_script, wrk_script(&warm_prefix))?;
    let target = format!("{}{WEBHOOK_PATH}", stack.webhook_url);
    let run_wrk = |script: &Path, secs: u64, out: &Path| -> Result<crate::process::Exited> {
        let mut cmd = Command::new("wrk");
        cmd.args(["-t", &opts.threads.to_string()])
            .args(["-c", &opts.connections.to_string()])
            .args(["-d", &format!("{secs}s")])
            .args(["--timeout", "10s"])
            .arg("-s")
            .arg(script)
            .arg(&target);
        let p = Proc::spawn("wrk", cmd, &dir.join("wrk.log"), Out::File(out))?;
        p.wait_measured(
            Instant::now() + Duration::from_secs(secs + 60),
            Duration::from_millis(500),
        )
    };
    eprintln!("  warm-up: 2 s");
    run_wrk(&warm_script, 2, &dir.join("wrk-warm.out"))?;

    let load = format!(
        "wrk -t {} -c {} -d {}s (Lua: a new event id and asset per request, API key)",
        opts.threads, opts.connections, opts.duration_s
    );
    eprintln!("  webhook_ingest: {load}");
    let metrics_before = stack.metrics();
    let load_before = report::settle();
    let date = report::now();
    let (cpu0, _) = cpu_and_peak(pid);
    let wait0 = run_queue_wait_s(pid);
    let pim0 = stack.pim_asset_writes();
    let wrk_out = dir.join("wrk.out");
    let exited = run_wrk(&script, opts.duration_s, &wrk_out)?;
    let (cpu1, peak) = cpu_and_peak(pid);
    let waited = run_queue_wait_s(pid) - wait0;
    let load_after = report::load_average();
    let metrics_after = stack.metrics();
    let pim1 = stack.pim_asset_writes();
    stack.stop_connector();
    let durable = stack.state.count_events(&prefix)?;
    let w = parse_wrk(&std::fs::read_to_string(&wrk_out).unwrap_or_default())?;

    let u = |k: &str| w[k].as_u64().unwrap_or(0);
    let sent = u("requests");
    let errors = u("connect") + u("read") + u("write") + u("timeout");
    let non_2xx = u("status");
    let acknowledged = sent.saturating_sub(non_2xx + u("read") + u("timeout"));
    let window = u("duration_us") as f64 / 1e6;
    let ms = |k: &str| w[k].as_f64().unwrap_or(0.0) / 1000.0;
    let latency = Latency {
        p50_ms: ms("p50"),
        p90_ms: ms("p90"),
        p99_ms: ms("p99"),
        p999_ms: ms("p999"),
        max_ms: ms("max"),
        mean_ms: ms("mean"),
    };
    let counter = |text: &str, event: &str| {
        metric(
            text,
            &format!("assetbridge_webhook_events_total{{event=\"{event}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let commits = counter(&metrics_after, "commits") - counter(&metrics_before, "commits");
    let requests =
        counter(&metrics_after, "commit_requests") - counter(&metrics_before, "commit_requests");
    let durable_per_s = durable as f64 / window.max(1e-9);
    let mut notes = vec![
        format!(
            "{sent} requests in {window:.1} s, {acknowledged} answered 2xx, {non_2xx} other statuses, {errors} socket errors; {durable} of the run's events durable in the store (counted in the database after the connector stopped)"
        ),
        format!(
            "acknowledgement latency (wrk, closed loop of {} connections): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            opts.connections, latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
        ),
        format!(
            "group commit: {requests:.0} deliveries in {commits:.0} inbox transactions ({:.1} per transaction)",
            requests / commits.max(1.0)
        ),
        format!(
            "CPU during the load: connector {:.1} s, wrk {:.1} s, of {:.0} s available ({} CPUs × {window:.0} s)",
            cpu1 - cpu0,
            (exited.user + exited.sys).as_secs_f64(),
            window * Machine::describe().nproc as f64,
            Machine::describe().nproc
        ),
        format!(
            "meanwhile the inbox workers wrote {} assets to the Akeneo emulator (drain held to 5 requests/s)",
            pim1 - pim0
        ),
        format!(
            "the connector's threads waited {waited:.1} s in all for a CPU during the load (run-queue delay, /proc/<pid>/task/*/schedstat); load average {load_before} before, {load_after} after"
        ),
    ];
    if durable < acknowledged {
        notes.push(format!(
            "INVARIANT BROKEN: {acknowledged} acknowledged but only {durable} durable"
        ));
    }
    let met = durable_per_s >= 10_000.0
        && latency.p99_ms <= 25.0
        && durable >= acknowledged
        && non_2xx == 0;
    let result = IngestResult {
        name: opts.state.result_name("webhook_ingest"),
        description: "generic webhook (API key) POSTs from wrk over loopback to `assetbridge run`; durable events/s and acknowledgement latency".into(),
        date,
        quick: opts.quick,
        state: opts.state.name().into(),
        load,
        sent,
        acknowledged,
        failed: non_2xx + errors,
        durable,
        window_s: window,
        durable_per_s,
        overall_per_s: None,
        latency: Some(latency),
        commits: Some(commits as u64),
        deliveries_per_commit: Some(requests / commits.max(1.0)),
        connector_cpu_s: cpu1 - cpu0,
        load_generator_cpu_s: Some((exited.user + exited.sys).as_secs_f64()),
        peak_rss_mib: peak,
        pim_asset_writes: pim1 - pim0,
        target: "≥ 10 000 durable events/s, p99 ≤ 25 ms".into(),
        met: Some(met),
        load_before,
        notes,
    };
    stack.finish(opts.keep);
    Ok(result)
}

/// Which broker a queue scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Amqp,
    Nats,
}

fn message_body(id: &str, i: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"asset-{id}","updated_at":"2026-11-23T10:00:00Z","title":"bench message {i}"}}"#
    )
    .into_bytes()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")
}

/// Publishes `n` persistent messages with ids `{prefix}{i}` (publisher confirms).
async fn publish_amqp(queue: &str, prefix: &str, n: u64) -> Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(AMQP_URL, ConnectionProperties::default()),
    )
    .await
    .context("RabbitMQ at 127.0.0.1:5672 did not answer within 10 s")?
    .context("RabbitMQ at 127.0.0.1:5672 (guest/guest) is not reachable")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut pending = Vec::with_capacity(1000);
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.clone().into());
        let confirm = ch
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &message_body(&id, i),
                props,
            )
            .await?;
        pending.push(confirm);
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                c.await?;
            }
        }
    }
    for c in pending {
        c.await?;
    }
    let _ = conn.close(200, "published").await;
    Ok(())
}

/// Messages ready in the queue (not counting delivered-but-unacknowledged ones).
async fn amqp_ready(queue: &str) -> Result<u32> {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = conn.close(200, "counted").await;
    Ok(q.message_count())
}

async fn amqp_delete(queue: &str) {
    use lapin::options::QueueDeleteOptions;
    use lapin::{Connection, ConnectionProperties};
    if let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.queue_delete(queue, QueueDeleteOptions::default()).await;
        }
        let _ = conn.close(200, "deleted").await;
    }
}

async fn nats_js() -> Result<async_nats::jetstream::Context> {
    let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(NATS_URL))
        .await
        .context("NATS at 127.0.0.1:4222 did not answer within 10 s")?
        .context("NATS at 127.0.0.1:4222 is not reachable")?;
    Ok(async_nats::jetstream::new(client))
}

/// Creates the stream and publishes `n` messages with `Nats-Msg-Id` `{prefix}{i}`.
async fn publish_nats(stream: &str, subject: &str, prefix: &str, n: u64) -> Result<()> {
    let js = nats_js().await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .context("cannot create a JetStream stream (is JetStream enabled?)")?;
    let mut pending = Vec::with_capacity(1000);
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, message_body(&id, i).into())
            .await?;
        pending.push(ack);
        if pending.len() == 1000 {
            for a in pending.drain(..) {
                a.await?;
            }
        }
    }
    for a in pending {
        a.await?;
    }
    Ok(())
}

/// (pending, unacknowledged) of the durable consumer; `None` before it exists.
async fn nats_consumer(stream: &str, durable: &str) -> Result<Option<(u64, usize)>> {
    let js = nats_js().await?;
    let s = js.get_stream(stream).await?;
    match s.consumer_info(durable).await {
        Ok(info) => Ok(Some((info.num_pending, info.num_ack_pending))),
        Err(_) => Ok(None),
    }
}

async fn nats_delete(stream: &str) {
    if let Ok(js) = nats_js().await {
        let _ = js.delete_stream(stream).await;
    }
}

pub fn queue_ingest(opts: &IngestOptions, broker: Broker) -> Result<IngestResult> {
    let rt = runtime()?;
    let mut stack = Stack::start(opts)?;
    let tag = stack.tag.clone();
    let prefix = format!("q-{tag}-");
    let n = opts.messages;
    let (base, queue, subject) = match broker {
        Broker::Amqp => (
            "queue_ingest_amqp",
            format!("assetbridge-bench-{tag}"),
            String::new(),
        ),
        Broker::Nats => (
            "queue_ingest_nats",
            format!("ABBENCH_{tag}").to_uppercase(),
            format!("abbench.{tag}"),
        ),
    };
    eprintln!("  publishing {n} messages to {queue}");
    let published_at = Instant::now();
    let publish = match broker {
        Broker::Amqp => rt.block_on(publish_amqp(&queue, &prefix, n)),
        Broker::Nats => rt.block_on(publish_nats(&queue, &subject, &prefix, n)),
    };
    let cleanup = |rt: &tokio::runtime::Runtime| match broker {
        Broker::Amqp => rt.block_on(amqp_delete(&queue)),
        Broker::Nats => rt.block_on(nats_delete(&queue)),
    };
    if let Err(e) = publish {
        cleanup(&rt);
        return Err(e);
    }
    let publish_s = published_at.elapsed().as_secs_f64();
    let (consumer, load) = match broker {
        Broker::Amqp => (
            format!(
                "\n[[queues.amqp]]\nurl = \"{AMQP_URL}\"\nqueue = \"{queue}\"\n[queues.amqp.shape]\nfamily = \"{FAMILY}\"\n"
            ),
            format!("{n} persistent messages published to a durable RabbitMQ queue beforehand; consumer defaults (prefetch 200, batch_wait_ms 10)"),
        ),
        Broker::Nats => (
            format!(
                "\n[[queues.nats]]\nurl = \"{NATS_URL}\"\nstream = \"{queue}\"\ndurable = \"assetbridge\"\n[queues.nats.shape]\nfamily = \"{FAMILY}\"\n"
            ),
            format!("{n} messages published to a JetStream stream (file storage) beforehand; consumer defaults (fetch_batch 200, max_ack_pending 1 000, batch_wait_ms 10)"),
        ),
    };
    stack.add_config(&consumer)?;
    let load_before = report::settle();
    let date = report::now();
    eprintln!("  {base}: assetbridge run consumes them");
    let started = Instant::now();
    let pid = stack.start_connector(false)?;
    let deadline = started + Duration::from_secs(120 + n / 500);
    let mut first: Option<(Instant, u64, f64)> = None;
    let mut last_count = 0;
    let all_at = loop {
        check_interrupted()?;
        let c = stack.state.count_events(&prefix).unwrap_or(last_count);
        let now = Instant::now();
        if c > 0 && first.is_none() {
            first = Some((now, c, cpu_and_peak(pid).0));
        }
        last_count = c;
        if c >= n {
            break now;
        }
        if now > deadline {
            cleanup(&rt);
            bail!(
                "only {c} of {n} messages durable after {:.0} s; see {}",
                (now - started).as_secs_f64(),
                stack.dir().join("run.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (cpu1, peak) = cpu_and_peak(pid);
    let (t_first, c_first, cpu0) = first.expect("a first count was taken");
    // Acknowledgements, at the broker.
    let mut notes = Vec::new();
    let acked = match broker {
        Broker::Nats => {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                match rt.block_on(nats_consumer(&queue, "assetbridge"))? {
                    Some((0, 0)) => {
                        notes.push(format!(
                            "all {n} acknowledged {:.2} s after the last became durable (consumer: nothing pending, nothing unacknowledged)",
                            all_at.elapsed().as_secs_f64()
                        ));
                        break true;
                    }
                    Some((p, a)) if Instant::now() > until => {
                        notes.push(format!("after 30 s: {p} pending, {a} unacknowledged"));
                        break false;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        Broker::Amqp => false,
    };
    let pim_writes = stack.pim_asset_writes();
    stack.stop_connector();
    let acked = match broker {
        Broker::Nats => acked,
        Broker::Amqp => {
            // The connector closed its channel: whatever it had not acknowledged is back in
            // the queue as ready.
            let ready = rt.block_on(amqp_ready(&queue))?;
            notes.push(format!(
                "after the connector stopped the queue holds {ready} messages: every message was acknowledged"
            ));
            if ready != 0 {
                notes.pop();
                notes.push(format!(
                    "after the connector stopped the queue holds {ready} messages (not acknowledged)"
                ));
            }
            ready == 0
        }
    };
    let durable = stack.state.count_events(&prefix)?;
    cleanup(&rt);
    let window = (all_at - t_first).as_secs_f64();
    let durable_per_s = (n - c_first) as f64 / window.max(1e-9);
    let overall = n as f64 / (all_at - started).as_secs_f64().max(1e-9);
    notes.insert(
        0,
        format!(
            "published in {publish_s:.1} s; the first event was durable {:.2} s after `run` started ({c_first} at the first count), the last {:.2} s after; {:.0} events/s from the first to the last, {overall:.0} events/s including start-up",
            (t_first - started).as_secs_f64(),
            (all_at - started).as_secs_f64(),
            durable_per_s
        ),
    );
    notes.push(format!(
        "connector CPU {:.1} s over the {window:.1} s window",
        cpu1 - cpu0
    ));
    let result = IngestResult {
        name: opts.state.result_name(base),
        description: match broker {
            Broker::Amqp => "RabbitMQ messages published beforehand, consumed by `assetbridge run`: durable and acknowledged events/s".into(),
            Broker::Nats => "NATS JetStream messages published beforehand, consumed by `assetbridge run`: durable and acknowledged events/s".into(),
        },
        date,
        quick: opts.quick,
        state: opts.state.name().into(),
        load,
        sent: n,
        acknowledged: if acked { n } else { 0 },
        failed: 0,
        durable,
        window_s: window,
        durable_per_s,
        overall_per_s: Some(overall),
        latency: None,
        commits: None,
        deliveries_per_commit: None,
        connector_cpu_s: cpu1 - cpu0,
        load_generator_cpu_s: None,
        peak_rss_mib: peak,
        pim_asset_writes: pim_writes,
        target: "none set (issue 8: measure it)".into(),
        met: Some(durable == n && acked),
        load_before,
        notes,
    };
    stack.finish(opts.keep);
    Ok(result)
}

/// Records `results` in the results file `file` (already written to `path`) and writes it again.
pub fn merge_into(
    path: &Path,
    mut file: report::ResultsFile,
    results: &[IngestResult],
) -> Result<report::ResultsFile> {
    if results.is_empty() {
        return Ok(file);
    }
    for r in results {
        file.ingest.insert(r.name.clone(), r.clone());
    }
    let text = serde_json::to_string_pretty(&file)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

fn f0(v: f64) -> String {
    let s = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// The Markdown table of ingest results.
pub fn markdown(results: &[&IngestResult]) -> String {
    let mut out = String::from(
        "| Scenario | State | Events | Durable | Window (s) | Durable events/s | p50 / p99 ack (ms) | Deliveries per transaction | Connector CPU (s) | Peak RSS (MiB) | Target | Met |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.1} | {:.1} | {} | {} |\n",
            r.name,
            r.state,
            f0(r.sent as f64),
            f0(r.durable as f64),
            r.window_s,
            f0(r.durable_per_s),
            r.latency
                .as_ref()
                .map(|l| format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms))
                .unwrap_or_else(|| "–".into()),
            r.deliveries_per_commit
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "–".into()),
            r.connector_cpu_s,
            r.peak_rss_mib,
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

    #[test]
    fn wrk_summary_line() {
        let out = "Running 1s test\nWRK-JSON {\"requests\":10,\"duration_us\":1000000,\"connect\":0,\"read\":0,\"write\":0,\"status\":1,\"timeout\":0,\"p50\":1500,\"p90\":2000,\"p99\":9000,\"p999\":12000,\"max\":15000,\"mean\":1600.5}\n";
        let v = parse_wrk(out).unwrap();
        assert_eq!(v["requests"], 10);
        assert_eq!(v["p99"], 9000);
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn prometheus_samples() {
        let text = "# TYPE x counter\nassetbridge_webhook_events_total{event=\"commits\"} 42\nassetbridge_webhook_events_total{event=\"commit_requests\"} 420\n";
        assert_eq!(
            metric(text, "assetbridge_webhook_events_total{event=\"commits\"}"),
            Some(42.0)
        );
        assert_eq!(metric(text, "nope"), None);
    }

    #[test]
    fn the_script_makes_unique_ids_and_authenticates() {
        let s = wrk_script("wb-x-");
        assert!(s.contains("\"wb-x-\" .. tid .. \"-\" .. counter"));
        assert!(s.contains(API_KEY));
        assert!(s.contains("latency:percentile(99)"));
    }
}
