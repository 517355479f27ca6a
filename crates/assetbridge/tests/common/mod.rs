//! Shared harness of the binary's integration tests: a DAM emulator and an Akeneo emulator in
//! the test process (real HTTP on 127.0.0.1, free ports), a state store (a SQLite file in a
//! temporary directory, or a PostgreSQL database of its own, created for the test and dropped
//! after it), a generated configuration file, and the real `assetbridge` binary (the debug build
//! cargo made for these tests) run as child processes.
//!
//! PostgreSQL is expected at `postgres://postgres@127.0.0.1:5432/postgres` (override with
//! `ASSETBRIDGE_TEST_POSTGRES_URL`); if it is unreachable the PostgreSQL tests fail, nothing is
//! skipped silently.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use assetbridge_core::{
    sanitize_code, AssetAttribute, AssetChange, AttributeType, ChangeKind, DamAsset,
    FamilyStructure,
};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, RunningDam};
use assetbridge_store::{Backlog, Store};
use serde_json::Value;
use tokio::process::{Child, Command};

pub const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];
/// Every tag the DAM emulator uses.
pub use assetbridge_emulators::dam::TAGS;

/// Where the state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How a test environment starts.
pub struct EnvOptions {
    pub assets: usize,
    pub backend: Backend,
    /// Tags left out of the PIM's `tags` options (assets using them are refused).
    pub missing_tags: Vec<&'static str>,
    /// Latency the Akeneo emulator adds to each API request.
    pub pim_latency: Duration,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            assets: 1_000,
            backend: Backend::Sqlite,
            missing_tags: Vec::new(),
            pim_latency: Duration::ZERO,
        }
    }
}

/// The emulators, the state and the configuration of one test.
pub struct Env {
    pub dam: DamEmulator,
    pub akeneo: AkeneoEmulator,
    pub dam_url: String,
    pub akeneo_url: String,
    pub state_url: String,
    pub dir: tempfile::TempDir,
    _dam_server: RunningDam,
    _akeneo_server: RunningEmulator,
    // Last: dropped after the children (which `kill_on_drop`) and the servers.
    _pg: Option<assetbridge_store::testing::PgTestDatabase>,
}

/// The Akeneo structure of a family: what the mapping below writes.
pub fn structure(code: &str, media_prefix: &str, missing_tags: &[&str]) -> FamilyStructure {
    let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
    media.prefix = Some(media_prefix.to_owned());
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = true;
    let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
    tags.options = Some(
        TAGS.iter()
            .filter(|t| !missing_tags.contains(t))
            .map(|s| s.to_string())
            .collect(),
    );
    let width = AssetAttribute::new("width", AttributeType::Number);
    let sku = AssetAttribute::new("sku", AttributeType::Text);
    FamilyStructure {
        code: code.to_owned(),
        attribute_as_main_media: Some("media".into()),
        attributes: [media, title, tags, width, sku]
            .into_iter()
            .map(|a| (a.code.clone(), a))
            .collect(),
    }
}

impl Env {
    pub async fn start(options: EnvOptions) -> Env {
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets: options.assets,
            families: FAMILIES.iter().map(|s| s.to_string()).collect(),
            ..DamEmulatorConfig::default()
        });
        let dam_server = dam.serve(localhost).await.expect("DAM emulator");
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig {
            latency: options.pim_latency,
            ..AkeneoEmulatorConfig::default()
        });
        let akeneo_server = akeneo.serve(localhost).await.expect("Akeneo emulator");
        let prefix = format!("{}/files/", dam_server.base_url);
        for f in FAMILIES {
            akeneo.add_asset_family(structure(f, &prefix, &options.missing_tags));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (pg, state_url) = match options.backend {
            Backend::Sqlite => (
                None,
                format!("sqlite://{}", dir.path().join("state.db").display()),
            ),
            Backend::Postgres => {
                let db = assetbridge_store::testing::PgTestDatabase::create("cli_test").await;
                let url = db.url().to_owned();
                (Some(db), url)
            }
        };
        Env {
            dam,
            akeneo,
            dam_url: dam_server.base_url.clone(),
            akeneo_url: akeneo_server.base_url.clone(),
            state_url,
            dir,
            _dam_server: dam_server,
            _akeneo_server: akeneo_server,
            _pg: pg,
        }
    }

    /// Writes a configuration file named `name` and returns its path. `sync` and `akeneo` are
    /// extra lines of those tables; `schedule` is every family's schedule.
    pub fn config(&self, name: &str, sync: &str, akeneo: &str, schedule: &str) -> PathBuf {
        let mut families = String::new();
        for f in FAMILIES {
            families.push_str(&format!(
                r#"
[[families]]
code = "{f}"
schedule = "{schedule}"
values = [
  {{ attribute = "media", from = "/url" }},
  {{ attribute = "title", from = "/metadata/title", locale = "en_US" }},
  {{ attribute = "tags",  from = "/metadata/tags" }},
  {{ attribute = "width", from = "/metadata/width" }},
  {{ attribute = "sku",   from = "/metadata/sku" }},
]
"#
            ));
        }
        let text = format!(
            r#"[state]
url = "{state}"

[akeneo]
url = "{akeneo_url}"
client_id = "assetbridge"
secret = "secret"
username = "admin"
password = "admin"
{akeneo}

[dam]
base_url = "{dam_url}"
auth = {{ type = "bearer", token = "dam-token" }}
family_param = "type"

[sync]
deletions = "delete"
{sync}

[log]
level = "info"
{families}"#,
            state = self.state_url,
            akeneo_url = self.akeneo_url,
            dam_url = self.dam_url,
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A command running the binary, its stdout and stderr appended to `<log>.out` / `<log>.err`
    /// in the test directory (shown by [`Env::logs`] when an assertion fails).
    pub fn command(&self, args: &[&str], log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_assetbridge"));
        cmd.args(args)
            .env_remove("RUST_LOG")
            .env_remove("ASSETBRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(self.log_file(&format!("{log}.out")))
            .stderr(self.log_file(&format!("{log}.err")))
            .kill_on_drop(true);
        cmd
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .expect("log file")
    }

    /// Spawns the binary (see [`Env::command`]).
    pub fn spawn(&self, args: &[&str], log: &str) -> Child {
        self.command(args, log).spawn().expect("spawn assetbridge")
    }

    /// The text a child logged so far (stdout then stderr), for failure messages.
    pub fn logs(&self, log: &str) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.path().join(format!("{log}.{ext}")))
                .unwrap_or_default()
        };
        let err = read("err");
        // The tail is what matters.
        let tail: String = {
            let lines: Vec<&str> = err.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!(
            "--- {log} stdout ---\n{}\n--- {log} stderr (tail) ---\n{tail}",
            read("out")
        )
    }

    /// Runs the binary to its end (at most `timeout`) and captures its output.
    pub async fn output(&self, args: &[&str], timeout: Duration) -> Output {
        let child = Command::new(env!("CARGO_BIN_EXE_assetbridge"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ASSETBRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn assetbridge");
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out.expect("wait for assetbridge"),
            Err(_) => panic!(
                "`assetbridge {}` did not finish within {timeout:?}",
                args.join(" ")
            ),
        }
    }

    /// Opens the state store the children use.
    pub async fn store(&self) -> Store {
        Store::open(&self.state_url)
            .await
            .expect("open the state store")
    }

    /// Inbox size (pending + in flight) and dead letters, read from the store.
    pub async fn inbox_and_dead_letters(&self) -> (Backlog, u64) {
        let store = self.store().await;
        let b = store.backlog().await.expect("backlog");
        let d = store.dead_letter_count().await.expect("dead letters");
        store.close().await;
        (b, d)
    }

    /// (family, code) of every asset the PIM holds.
    pub fn pim_codes(&self) -> BTreeSet<(String, String)> {
        FAMILIES
            .iter()
            .flat_map(|f| {
                self.akeneo
                    .assets(f)
                    .into_iter()
                    .map(move |a| (f.to_string(), a["code"].as_str().unwrap_or("").to_owned()))
            })
            .collect()
    }

    pub fn pim_count(&self) -> usize {
        FAMILIES.iter().map(|f| self.akeneo.asset_count(f)).sum()
    }

    /// Live DAM asset ids of a family.
    pub fn live_ids(&self, family: &str) -> Vec<String> {
        self.dam
            .ordered_ids(None, Some(family))
            .into_iter()
            .filter(|id| {
                self.dam
                    .get(id)
                    .is_some_and(|r| r["deleted"] != Value::Bool(true))
            })
            .collect()
    }

    /// (family, code) of every live DAM asset: what the PIM should hold.
    pub fn expected_codes(&self) -> BTreeSet<(String, String)> {
        FAMILIES
            .iter()
            .flat_map(|f| {
                self.live_ids(f)
                    .into_iter()
                    .map(move |id| (f.to_string(), sanitize_code(&id)))
            })
            .collect()
    }

    /// Checks that the PIM holds exactly the live DAM assets, and that the assets of `sample`
    /// (DAM ids) hold what the mapping makes of their current DAM records.
    pub fn assert_pim_matches_dam(&self, sample: &[String]) {
        let expected = self.expected_codes();
        let held = self.pim_codes();
        let missing: Vec<_> = expected.difference(&held).take(5).collect();
        let extra: Vec<_> = held.difference(&expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "the PIM differs from the DAM: {} missing (e.g. {missing:?}), {} extra (e.g. {extra:?})",
            expected.difference(&held).count(),
            held.difference(&expected).count()
        );
        assert_eq!(self.pim_count(), self.dam.count());
        for id in sample {
            self.assert_content(id);
        }
    }

    /// The PIM asset of DAM asset `id` holds what the mapping makes of its record.
    pub fn assert_content(&self, id: &str) {
        let record = self.dam.get(id).expect("DAM asset");
        let family = record["type"].as_str().expect("type");
        let code = sanitize_code(id);
        let Some(held) = self.akeneo.asset(family, &code) else {
            panic!("asset {code} (DAM {id}) is not in family {family} of the PIM");
        };
        let v = &held["values"];
        assert_eq!(
            v["title"][0]["data"], record["metadata"]["title"],
            "{id}: title"
        );
        assert_eq!(v["title"][0]["locale"], "en_US", "{id}: title locale");
        assert_eq!(v["sku"][0]["data"], record["metadata"]["sku"], "{id}: sku");
        assert_eq!(
            v["width"][0]["data"],
            Value::String(record["metadata"]["width"].to_string()),
            "{id}: width"
        );
        let tags = |x: &Value| -> BTreeSet<String> {
            x.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(|s| s.to_lowercase()))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            tags(&v["tags"][0]["data"]),
            tags(&record["metadata"]["tags"]),
            "{id}: tags"
        );
        let url = record["url"].as_str().expect("url");
        let media = v["media"][0]["data"].as_str().expect("media");
        assert!(
            url.ends_with(media),
            "{id}: media {media} is not the end of {url}"
        );
    }

    /// An upsert of DAM asset `id` as a webhook would deliver it.
    pub fn change_of(&self, id: &str, event_id: &str) -> AssetChange {
        let record = self.dam.get(id).expect("DAM asset");
        let updated_at = record["updated_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .expect("updated_at")
            .with_timezone(&chrono::Utc);
        AssetChange {
            family: record["type"].as_str().expect("type").to_owned(),
            event_id: Some(event_id.to_owned()),
            source: "webhook".to_owned(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: id.to_owned(),
                    updated_at,
                    record,
                },
            },
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Waits until `check` holds (polled every 100 ms), at most `timeout`; panics with `what`
/// otherwise.
pub async fn wait_until<F: FnMut() -> bool>(timeout: Duration, what: &str, mut check: F) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a child to exit, at most `timeout`.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status.expect("wait for child")),
        Err(_) => None,
    }
}

/// Sends SIGTERM to a child (the `kill` utility: no libc binding needed).
pub fn terminate(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Sends SIGKILL to a child and reaps it.
pub async fn kill_hard(child: &mut Child) {
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

pub fn config_arg(path: &Path) -> String {
    path.display().to_string()
}
