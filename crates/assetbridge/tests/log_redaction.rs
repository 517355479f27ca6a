//! Secrets never reach the logs, in either format, at the most verbose level (`trace`, every
//! crate: reqwest, hyper, sqlx included): the PIM's client secret and password (and their
//! Basic header), the DAM token, the PostgreSQL password of the state URL, the admin token
//! (right or wrong) of the status page's retry action — on the success paths and on the
//! failure paths (refused credentials), where error messages are built.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorAuth, DamEmulatorConfig};
use common::{text, wait_exit, Backend, Env, EnvOptions, FAMILIES};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

const PIM_SECRET: &str = "pim-secret-7f3a9c";
const PIM_PASSWORD: &str = "pim-password-5e1b88";
const DAM_TOKEN: &str = "dam-token-c4d9e1";
const PG_PASSWORD: &str = "pg-password-8c2f41";
const ADMIN_TOKEN: &str = "admin-token-93b7f0";
const WRONG_ADMIN_TOKEN: &str = "wrong-admin-token-1d2e5a";
const WRONG_PIM_PASSWORD: &str = "wrong-pim-password-44aa01";
const WRONG_DAM_TOKEN: &str = "wrong-dam-token-0b9c7d";

/// Standard base64 without a crate (the Basic header of the PIM's token request).
fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_is_standard() {
    assert_eq!(base64(b"assetbridge:secret"), "YXNzZXRicmlkZ2U6c2VjcmV0");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}

/// Emulators that accept only this test's credentials (the harness's `Env` provides the
/// PostgreSQL database and the configuration text, whose credentials are replaced).
struct Setup {
    env: Env,
    akeneo: AkeneoEmulator,
    dam: DamEmulator,
    _servers: (
        assetbridge_emulators::akeneo::RunningEmulator,
        assetbridge_emulators::dam::RunningDam,
    ),
}

async fn setup() -> Setup {
    let env = Env::start(EnvOptions {
        assets: 40,
        backend: Backend::Postgres,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: 40,
        families: FAMILIES.iter().map(|s| s.to_string()).collect(),
        auth: DamEmulatorAuth::Bearer(DAM_TOKEN.into()),
        ..DamEmulatorConfig::default()
    });
    let dam_server = dam.serve(localhost).await.expect("DAM emulator");
    let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig {
        secret: PIM_SECRET.into(),
        password: PIM_PASSWORD.into(),
        ..AkeneoEmulatorConfig::default()
    });
    let akeneo_server = akeneo.serve(localhost).await.expect("Akeneo emulator");
    let prefix = format!("{}/files/", dam_server.base_url);
    for f in FAMILIES {
        akeneo.add_asset_family(common::structure(f, &prefix, &["eco"]));
    }
    Setup {
        env,
        akeneo,
        dam,
        _servers: (akeneo_server, dam_server),
    }
}

impl Setup {
    /// The harness's configuration with this test's emulators and secrets (`password` and
    /// `dam_token` as given) and `extra` appended.
    fn config(&self, name: &str, password: &str, dam_token: &str, extra: &str) -> String {
        let path = self.env.config(name, "", "", "1h");
        let mut c = std::fs::read_to_string(&path).unwrap();
        let mut state = url::Url::parse(&self.env.state_url).unwrap();
        state.set_password(Some(PG_PASSWORD)).unwrap();
        for (from, to) in [
            (self.env.state_url.clone(), state.to_string()),
            (self.env.akeneo_url.clone(), self.akeneo_url().to_owned()),
            (self.env.dam_url.clone(), self.dam_url().to_owned()),
            (
                "secret = \"secret\"".into(),
                format!("secret = \"{PIM_SECRET}\""),
            ),
            (
                "password = \"admin\"".into(),
                format!("password = \"{password}\""),
            ),
            (
                "token = \"dam-token\"".into(),
                format!("token = \"{dam_token}\""),
            ),
        ] {
            assert_eq!(c.matches(&from).count(), 1, "`{from}` once in:\n{c}");
            c = c.replace(&from, &to);
        }
        c.push_str(extra);
        std::fs::write(&path, c).unwrap();
        path.display().to_string()
    }

    fn akeneo_url(&self) -> &str {
        &self._servers.0.base_url
    }

    fn dam_url(&self) -> &str {
        &self._servers.1.base_url
    }
}

/// Every secret and encoding of one that could appear in a log line.
fn secrets() -> Vec<String> {
    let mut s: Vec<String> = [
        PIM_SECRET,
        PIM_PASSWORD,
        DAM_TOKEN,
        PG_PASSWORD,
        ADMIN_TOKEN,
        WRONG_ADMIN_TOKEN,
        WRONG_PIM_PASSWORD,
        WRONG_DAM_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    s.push(base64(format!("assetbridge:{PIM_SECRET}").as_bytes()));
    s
}

/// None of the secrets is in `log`; no Authorization header value either.
fn assert_redacted(what: &str, log: &str) {
    for secret in secrets() {
        if let Some(at) = log.find(&secret) {
            let line = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("{what}: a secret in the logs: {}", &log[line..end]);
        }
    }
    for scheme in ["Bearer ", "Basic "] {
        assert!(
            !log.contains(scheme),
            "{what}: an Authorization value ({scheme}…) in the logs"
        );
    }
}

/// Every line of `log` is a JSON event — except the command's final `error: …` message, which
/// the binary prints as text whatever the log format.
fn assert_json_lines(what: &str, log: &str) {
    for line in log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("error: "))
    {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string(), "{what}: no level: {line}");
    }
}

/// `sync` at `trace` in JSON (success), then refused credentials (PIM password, DAM token) in
/// both formats: the output and the logs hold no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_logs_hold_no_secret_in_json_or_human_format() {
    let s = setup().await;
    let c = s.config("good.toml", PIM_PASSWORD, DAM_TOKEN, "");
    let out = s
        .env
        .output(
            &[
                "--log-format",
                "json",
                "--log-level",
                "trace",
                "sync",
                "--config",
                &c,
            ],
            T,
        )
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Exit 3: done, the `eco` assets refused by the PIM.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(s.akeneo.asset_count(FAMILIES[0]) > 0);
    assert!(
        stderr.contains("TRACE") && stderr.contains("DEBUG"),
        "every level was logged"
    );
    assert!(!stderr.contains("\nerror: "), "{stderr}");
    assert_json_lines("sync (json)", &stderr);
    assert_redacted("sync (json) stderr", &stderr);
    assert_redacted("sync (json) stdout", &stdout);

    for (name, password, token, refused) in [
        ("bad-pim.toml", WRONG_PIM_PASSWORD, DAM_TOKEN, "PIM"),
        ("bad-dam.toml", PIM_PASSWORD, WRONG_DAM_TOKEN, "DAM"),
    ] {
        let c = s.config(name, password, token, "");
        for format in ["human", "json"] {
            let out = s
                .env
                .output(
                    &[
                        "--log-format",
                        format,
                        "--log-level",
                        "trace",
                        "sync",
                        "--config",
                        &c,
                    ],
                    T,
                )
                .await;
            let what = format!("sync, {refused} refuses the credentials ({format})");
            assert!(!out.status.success(), "{what}: {}", text(&out.stderr));
            assert_redacted(&format!("{what}: stderr"), &text(&out.stderr));
            assert_redacted(&format!("{what}: stdout"), &text(&out.stdout));
            if format == "json" {
                assert_json_lines(&what, &text(&out.stderr));
            } else {
                // Not a terminal: plain text, no colour codes.
                assert!(
                    !text(&out.stderr).contains('\u{1b}'),
                    "{what}: ANSI escapes in a piped log"
                );
            }
        }
    }
    assert!(s.dam.stats().list_requests > 0);
}

/// `run` at `trace` with an admin token: the retry action with the right token (form field
/// and bearer) and a wrong one; nothing of either reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_hold_no_admin_token() {
    let s = setup().await;
    let c = s.config(
        "run.toml",
        PIM_PASSWORD,
        DAM_TOKEN,
        &format!("\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
    );
    let mut run = s.env.spawn(
        &[
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "run",
            "--config",
            &c,
        ],
        "run",
    );
    // The admin server's address, from its log line.
    let start = Instant::now();
    let base = loop {
        let log = std::fs::read_to_string(s.env.path("run.err")).unwrap_or_default();
        if let Some(addr) = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin server listening"))
            })
            .and_then(|l| l["listen"].as_str().map(str::to_owned))
        {
            break format!("http://{addr}");
        }
        assert!(start.elapsed() < T, "{}", s.env.logs("run"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The first poll leaves dead letters (the `eco` option is missing).
    let store = s.env.store().await;
    let start = Instant::now();
    while store.dead_letter_count().await.unwrap() == 0 {
        assert!(start.elapsed() < T, "no dead letter: {}", s.env.logs("run"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let post = |body: String, bearer: Option<&str>| {
        let mut r = http
            .post(format!("{base}/dead-letters/retry"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        async move { r.send().await.expect("POST").status().as_u16() }
    };
    assert_eq!(
        post(format!("all=1&token={WRONG_ADMIN_TOKEN}"), None).await,
        401
    );
    assert_eq!(post("all=1".into(), Some(WRONG_ADMIN_TOKEN)).await, 401);
    assert_eq!(post(format!("all=1&token={ADMIN_TOKEN}"), None).await, 200);
    assert_eq!(post("all=1".into(), Some(ADMIN_TOKEN)).await, 200);
    store.close().await;

    common::terminate(&run);
    let exit = wait_exit(&mut run, T).await.expect("run exits on SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", s.env.logs("run"));
    let log = std::fs::read_to_string(s.env.path("run.err")).unwrap();
    assert!(
        log.contains("dead letters moved back to the inbox (status page)"),
        "the retries were logged"
    );
    assert_json_lines("run", &log);
    assert_redacted("run stderr", &log);
    assert_redacted(
        "run stdout",
        &std::fs::read_to_string(s.env.path("run.out")).unwrap_or_default(),
    );
}
