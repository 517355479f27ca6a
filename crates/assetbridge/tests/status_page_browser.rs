//! The status page of `assetbridge run` in a real browser, and `/metrics` against what
//! `assetbridge status --json` says.
//!
//! The browser is Debian's headless Chromium, driven through chromedriver's W3C WebDriver HTTP
//! API with plain JSON over reqwest (already a dev-dependency; the handful of commands used
//! here do not justify a WebDriver client crate and its dependency tree). chromedriver and the
//! Chromium it starts run in a process group of their own, killed when the test ends however it
//! ends ([`Browser`]'s `Drop`); chromedriver listens on a port the system chooses (`--port=0`),
//! the admin server too (`listen = "127.0.0.1:0"`, its address read from the JSON log).
//!
//! Without `chromium` and `chromedriver` (on `PATH`, or `ASSETBRIDGE_TEST_CHROMIUM` /
//! `ASSETBRIDGE_TEST_CHROMEDRIVER`) the browser test fails when `CI=true`, and otherwise says
//! loudly on stderr that it was skipped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{text, wait_exit, Env, EnvOptions, FAMILIES};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);
const TOKEN: &str = "br0wser&<token> +%";

// ---------------------------------------------------------------------------------------------
// The connector under test.

/// A config with `[server]` on a port the system chooses, with the admin token.
fn config(env: &Env) -> String {
    // TOML basic string: the token has no `"` or `\`.
    let server = format!("\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n");
    env.config("assetbridge.toml", "", &server, "1h")
        .display()
        .to_string()
}

/// Starts `run` (JSON logs) and returns the child and the admin server's base URL, once
/// `/readyz` answers 200.
async fn start_run(
    env: &Env,
    config: &str,
    http: &reqwest::Client,
) -> (tokio::process::Child, String) {
    let run = env.spawn(&["--log-format", "json", "run", "--config", config], "run");
    let start = Instant::now();
    let base = loop {
        let log = std::fs::read_to_string(env.path("run.err")).unwrap_or_default();
        let addr = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admin server listening"))
            })
            .and_then(|l| l["listen"].as_str().map(str::to_owned));
        if let Some(addr) = addr {
            break format!("http://{addr}");
        }
        assert!(start.elapsed() < T, "no admin server: {}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(start.elapsed() < T, "never ready: {}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (run, base)
}

/// Series → value of a Prometheus text exposition (`name{labels}` as written).
fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn metrics(http: &reqwest::Client, base: &str) -> (String, BTreeMap<String, f64>) {
    let r = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let m = parse_metrics(&body);
    (body, m)
}

/// Waits until this process finished the first poll pass of every family (the observer's
/// gauge): the cursors, last successes, dead letters and PIM contents are final then (the
/// schedule is `1h`, the inbox is empty).
async fn wait_first_passes(env: &Env, http: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let start = Instant::now();
    loop {
        let (_, m) = metrics(http, base).await;
        if FAMILIES.iter().all(|f| {
            m.contains_key(&format!(
                "assetbridge_poll_last_finished_timestamp_seconds{{family=\"{f}\"}}"
            ))
        }) {
            return m;
        }
        assert!(
            start.elapsed() < T,
            "the first polls did not finish: {}",
            env.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status_json(env: &Env, config: &str) -> Value {
    let out = env
        .output(&["status", "--config", config, "--json"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// `status --json`'s number at `pointer`, as the page prints it.
fn num(status: &Value, pointer: &str) -> String {
    let v = status
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in {status}"));
    assert!(v.is_u64(), "{pointer} is not a count: {v}");
    v.to_string()
}

async fn stop_run(env: &Env, mut run: tokio::process::Child) {
    common::terminate(&run);
    let exit = wait_exit(&mut run, T).await.expect("run exits on SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", env.logs("run"));
}

// ---------------------------------------------------------------------------------------------
// The browser: chromedriver + headless Chromium, W3C WebDriver over HTTP.

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A program given by `var`, or found on `PATH` as `name`.
fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (skip) — a failure under `CI=true`.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = program("ASSETBRIDGE_TEST_CHROMIUM", "chromium");
    let driver = program("ASSETBRIDGE_TEST_CHROMEDRIVER", "chromedriver");
    if let (Some(c), Some(d)) = (&chromium, &driver) {
        return Some((c.clone(), d.clone()));
    }
    let missing: Vec<&str> = [("chromium", &chromium), ("chromedriver", &driver)]
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    let msg = format!(
        "the status-page browser test needs Debian's `chromium` and `chromium-driver` packages \
         ({} not found: looked for ASSETBRIDGE_TEST_CHROMIUM / ASSETBRIDGE_TEST_CHROMEDRIVER, \
         else `chromium` / `chromedriver` on PATH); `.ci/run` installs them, or: apt-get install \
         chromium chromium-driver",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true: {msg}");
    }
    eprintln!("\n*** SKIPPED status_page_browser: {msg} ***\n");
    None
}

/// chromedriver (its own process group, with the Chromium it starts) and one session.
/// Dropping it kills the group and any process still naming its temporary directory.
struct Browser {
    driver: std::process::Child,
    dir: tempfile::TempDir,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("log file");
        let driver = std::process::Command::new(chromedriver)
            .arg("--port=0")
            // Chromium's own files (profile, crash reports) stay in the temporary directory.
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(T).build().unwrap();
        let mut b = Browser {
            driver,
            dir,
            base: String::new(),
            session: String::new(),
            http,
        };
        // "ChromeDriver was started successfully on port N."
        let start = Instant::now();
        b.base = loop {
            let log = b.log();
            if let Some(port) = log
                .split("started successfully on port ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .filter(|p| !p.is_empty())
            {
                break format!("http://127.0.0.1:{port}");
            }
            if let Ok(Some(exit)) = b.driver.try_wait() {
                panic!("chromedriver exited ({exit}): {log}");
            }
            assert!(start.elapsed() < T, "chromedriver did not start: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let profile = b.dir.path().join("profile");
        let r = b
            .http
            .post(format!("{}/session", b.base))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "goog:chromeOptions": {
                    "binary": chromium,
                    // As root: no sandbox. Without the background-networking flags Chromium
                    // reaches out to Google services and the closed network refuses it.
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}}))
            .send()
            .await
            .expect("POST /session");
        let status = r.status();
        let v: Value = r.json().await.expect("WebDriver JSON");
        assert!(status.is_success(), "new session: {v}\n{}", b.log());
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_owned();
        b.cmd(
            reqwest::Method::POST,
            "/timeouts",
            json!({ "pageLoad": 30_000, "implicit": 0, "script": 10_000 }),
        )
        .await;
        b
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("chromedriver.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// A session command; a WebDriver error is returned as `Err(error code, message)`.
    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, (String, String)> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
            req = req.json(&body);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let ok = r.status().is_success();
        let v: Value = r.json().await.expect("WebDriver JSON");
        if ok {
            Ok(v["value"].clone())
        } else {
            Err((
                v["value"]["error"].as_str().unwrap_or("?").to_owned(),
                v["value"]["message"].as_str().unwrap_or("").to_owned(),
            ))
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        match self.try_cmd(method.clone(), path, body).await {
            Ok(v) => v,
            Err((code, msg)) => panic!("WebDriver {method} {path}: {code}: {msg}"),
        }
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element_id(v: &Value) -> String {
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {v}"))
            .to_owned()
    }

    async fn try_find(&self, css: &str) -> Option<String> {
        match self
            .try_cmd(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await
        {
            Ok(v) => Some(Self::element_id(&v)),
            Err((code, _)) if code == "no such element" => None,
            Err((code, msg)) => panic!("find {css}: {code}: {msg}"),
        }
    }

    async fn find(&self, css: &str) -> String {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!("no element `{css}` on the page:\n{}", self.source().await),
        }
    }

    /// Waits (bounded) for an element to appear, e.g. on the page a click navigates to.
    async fn wait_for(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            assert!(
                start.elapsed() < T,
                "`{css}` never appeared:\n{}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v.as_array()
            .expect("element list")
            .iter()
            .map(Self::element_id)
            .collect()
    }

    async fn text_of(&self, element: &str) -> String {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            Value::Null,
        )
        .await
        .as_str()
        .expect("text")
        .to_owned()
    }

    /// The rendered text of the element `css` selects.
    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.text_of(&e).await
    }

    async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/attribute/{name}"),
            Value::Null,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Ends the session (Chromium exits); `Drop` still makes sure of it.
    async fn quit(&self) {
        let _ = self.try_cmd(reqwest::Method::DELETE, "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every Chromium process it started share its process group.
        let group = format!("-{}", self.driver.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium's crash handler leaves the group (setsid); it names the temporary
        // directory (HOME) in its command line: kill those by pid.
        let dir = self.dir.path().to_string_lossy().into_owned();
        let me = std::process::id().to_string();
        for _ in 0..20 {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let pid = e.file_name().to_string_lossy().into_owned();
                    if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                    String::from_utf8_lossy(&cmdline)
                        .contains(&dir)
                        .then_some(pid)
                })
                .collect();
            if left.is_empty() {
                return;
            }
            for pid in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The issue's browser test: the page's numbers are `status --json`'s (and the PIM's), and the
/// retry button (with the admin token typed in) puts a dead letter back in the inbox, where an
/// inbox worker takes it up again while no poll runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_chromium_matches_status_json_and_retries_a_dead_letter() {
    let Some((chromium, chromedriver)) = browser_programs() else {
        return;
    };
    let env = Env::start(EnvOptions {
        assets: 120,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    let c = config(&env);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (run, base) = start_run(&env, &c, &http).await;
    wait_first_passes(&env, &http, &base).await;

    // The known state: every live asset is in the PIM or a dead letter (the `eco` option is
    // missing in the PIM), nothing waits in the inbox.
    let store = env.store().await;
    let dead_letters = store.dead_letters(&Default::default()).await.unwrap();
    let live: usize = FAMILIES.iter().map(|f| env.live_ids(f).len()).sum();
    assert!(env.pim_count() > 0, "{}", env.logs("run"));
    assert!(!dead_letters.is_empty(), "the seed gives some `eco` assets");
    assert_eq!(env.pim_count() + dead_letters.len(), live);
    let status = status_json(&env, &c).await;
    assert_eq!(status["dead_letters"], dead_letters.len());
    assert_eq!(status["backlog"]["total"], 0);

    let browser = Browser::start(&chromium, &chromedriver).await;
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("h1").await, "assetbridge");

    // Per family: cursor, last success, counts.
    let families = status["families"].as_array().unwrap();
    assert_eq!(families.len(), FAMILIES.len());
    for fam in families {
        let f = fam["family"].as_str().unwrap();
        let cell = |class: &str| format!("#families tr[data-family=\"{f}\"] td.{class}");
        let cursor = &fam["cursor"];
        assert!(cursor.is_object(), "{f} has a cursor after its poll");
        assert_eq!(
            browser.text(&cell("cursor")).await,
            format!(
                "{} / {}",
                cursor["updated_at"].as_str().unwrap(),
                cursor["dam_id"].as_str().unwrap()
            ),
            "{f}: cursor"
        );
        assert_eq!(
            browser.text(&cell("last-success")).await,
            fam["last_success"].as_str().expect("a last success"),
            "{f}: last success"
        );
        assert_eq!(
            browser.text(&cell("assets-written")).await,
            num(fam, "/assets_written"),
            "{f}: assets written"
        );
        assert_eq!(
            browser.text(&cell("succeeded-1h")).await,
            num(fam, "/outcomes_last_1h/succeeded"),
            "{f}: written in the last hour"
        );
        assert_eq!(
            browser.text(&cell("failed-1h")).await,
            num(fam, "/outcomes_last_1h/failed"),
            "{f}: failed in the last hour"
        );
        // Since this process started: what the PIM holds, and the family's dead letters.
        assert_eq!(
            browser.text(&cell("created")).await,
            env.akeneo.asset_count(f).to_string(),
            "{f}: created"
        );
        let dead_here = dead_letters
            .iter()
            .filter(|d| d.family.as_deref() == Some(f))
            .count();
        assert_eq!(
            browser.text(&cell("failed")).await,
            dead_here.to_string(),
            "{f}: failed"
        );
    }

    // Backlog, throughput, dead letters.
    for (class, pointer) in [
        ("pending", "/backlog/pending"),
        ("delayed", "/backlog/delayed"),
        ("in-flight", "/backlog/in_flight"),
        ("total", "/backlog/total"),
    ] {
        assert_eq!(
            browser.text(&format!("#backlog td.{class}")).await,
            num(&status, pointer),
            "backlog {class}"
        );
    }
    for window in ["5m", "1h"] {
        for class in ["succeeded", "failed"] {
            assert_eq!(
                browser
                    .text(&format!(
                        "#throughput tr[data-window=\"{window}\"] td.{class}"
                    ))
                    .await,
                num(&status, &format!("/outcomes/last_{window}/{class}")),
                "throughput {window} {class}"
            );
        }
    }
    assert_eq!(
        browser.text("#dead-letter-count").await,
        num(&status, "/dead_letters")
    );
    let mut listed = BTreeSet::new();
    for row in browser
        .find_all("#dead-letters tr[data-dead-letter-id]")
        .await
    {
        let id = browser
            .attribute(&row, "data-dead-letter-id")
            .await
            .expect("id");
        listed.insert(id.parse::<i64>().expect("numeric id"));
    }
    let stored: BTreeSet<i64> = dead_letters.iter().map(|d| d.id).collect();
    assert_eq!(listed, stored, "the page lists every dead letter");
    let recent = browser.text("#recent").await;
    assert!(
        recent.contains("pim_rejected"),
        "recent failures show their reason: {recent}"
    );

    // The first dead letter, chosen on the page.
    let d = &dead_letters[0];
    let dam_id = d.dam_id.clone().expect("DAM id");
    let row = format!("#dead-letters tr[data-dead-letter-id=\"{}\"]", d.id);
    assert_eq!(browser.text(&format!("{row} td.dam-id")).await, dam_id);
    assert!(browser
        .text(&format!("{row} td.reason"))
        .await
        .starts_with("pim_rejected"));

    // Without the token: refused, nothing moved.
    browser.click(&format!("{row} input[name=ids]")).await;
    browser.click("#retry-form button[type=submit]").await;
    let result = browser.wait_for("#result").await;
    assert_eq!(
        browser.text_of(&result).await,
        "the admin token is required"
    );
    assert!(store.dead_letter_by_id(d.id).await.unwrap().is_some());

    // With the token, typed as a person would (the browser form-encodes `&<> +%`).
    let dam_lists = env.dam.stats().list_requests;
    let newest = dead_letters.iter().map(|d| d.id).max().unwrap();
    browser.goto(&format!("{base}/")).await;
    browser.click(&format!("{row} input[name=ids]")).await;
    browser.type_into("#admin-token", TOKEN).await;
    browser.click("#retry-form button[type=submit]").await;
    let result = browser.wait_for("#result").await;
    assert_eq!(
        browser.text_of(&result).await,
        "retried: 1 dead letter(s) moved back to the inbox"
    );
    assert!(
        store.dead_letter_by_id(d.id).await.unwrap().is_none(),
        "the dead letter left the dead-letter store"
    );
    // Back in the inbox, an inbox worker claims it; the PIM still lacks the option, so it is a
    // dead letter again, a new one. No poll ran (the DAM was not listed again): only the inbox
    // can have brought the change back.
    let start = Instant::now();
    let again = loop {
        let all = store.dead_letters(&Default::default()).await.unwrap();
        if let Some(again) = all
            .into_iter()
            .find(|x| x.dam_id.as_deref() == Some(&dam_id) && x.id > newest)
        {
            break again;
        }
        assert!(
            start.elapsed() < T,
            "the retried change never came back from the inbox: {}",
            env.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(again.family, d.family);
    assert_eq!(again.reason.kind, "pim_rejected");
    assert_eq!(env.dam.stats().list_requests, dam_lists, "no poll ran");
    let after = status_json(&env, &c).await;
    assert_eq!(after["backlog"]["total"], 0, "{after}");
    assert_eq!(after["dead_letters"], dead_letters.len(), "{after}");

    // The page, reloaded, shows the new dead letter in place of the old one.
    browser.goto(&format!("{base}/")).await;
    assert_eq!(
        browser.text("#dead-letter-count").await,
        num(&after, "/dead_letters")
    );
    assert!(browser.try_find(&row).await.is_none());
    assert_eq!(
        browser
            .text(&format!(
                "#dead-letters tr[data-dead-letter-id=\"{}\"] td.dam-id",
                again.id
            ))
            .await,
        dam_id
    );

    browser.quit().await;
    drop(browser);
    store.close().await;
    stop_run(&env, run).await;
}

/// `/metrics` has every family issue 8 lists that the process has data for, and the store's
/// gauges are `status --json`'s numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_the_issue_and_agree_with_status_json() {
    let env = Env::start(EnvOptions {
        assets: 120,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    let c = config(&env);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (run, base) = start_run(&env, &c, &http).await;
    wait_first_passes(&env, &http, &base).await;
    let status = status_json(&env, &c).await;
    let (body, m) = metrics(&http, &base).await;

    // Every family has HELP and TYPE.
    for (name, kind) in [
        ("assetbridge_assets_total", "counter"),
        ("assetbridge_pim_requests_total", "counter"),
        ("assetbridge_pim_responses_total", "counter"),
        ("assetbridge_pim_retries_total", "counter"),
        ("assetbridge_pim_token_refreshes_total", "counter"),
        ("assetbridge_pim_rate_limit_wait_seconds_total", "counter"),
        ("assetbridge_pim_throttle_wait_seconds_total", "counter"),
        ("assetbridge_pim_structure_fetches_total", "counter"),
        ("assetbridge_poll_pass_duration_seconds", "histogram"),
        ("assetbridge_poll_last_finished_timestamp_seconds", "gauge"),
        ("assetbridge_backlog", "gauge"),
        ("assetbridge_dead_letters", "gauge"),
        ("assetbridge_family_cursor_timestamp_seconds", "gauge"),
        ("assetbridge_family_last_success_timestamp_seconds", "gauge"),
        ("assetbridge_family_assets_written", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "no {kind} {name} in:\n{body}"
        );
    }

    let dead = status["dead_letters"].as_u64().unwrap();
    assert!(dead > 0);
    assert_eq!(m["assetbridge_dead_letters"], dead as f64);
    assert_eq!(
        m["assetbridge_backlog{state=\"pending\"}"],
        status["backlog"]["pending"].as_f64().unwrap()
    );
    // The PIM: requests by status (token and structures and batches answered 200), one
    // password grant, the structures fetched once per family.
    assert!(m["assetbridge_pim_responses_total{status=\"200\"}"] >= 1.0);
    assert_eq!(m["assetbridge_pim_password_grants_total"], 1.0);
    assert_eq!(
        m["assetbridge_pim_structure_fetches_total"],
        FAMILIES.len() as f64
    );
    for fam in status["families"].as_array().unwrap() {
        let f = fam["family"].as_str().unwrap();
        let series = |name: &str| format!("{name}{{family=\"{f}\"}}");
        let at = |pointer: &str| {
            chrono::DateTime::parse_from_rfc3339(fam.pointer(pointer).unwrap().as_str().unwrap())
                .unwrap()
                .timestamp_millis() as f64
                / 1000.0
        };
        assert_eq!(
            m[&series("assetbridge_family_cursor_timestamp_seconds")],
            at("/cursor/updated_at"),
            "{f}"
        );
        assert_eq!(
            m[&series("assetbridge_family_last_success_timestamp_seconds")],
            at("/last_success"),
            "{f}"
        );
        assert_eq!(
            m[&series("assetbridge_family_assets_written")],
            fam["assets_written"].as_f64().unwrap(),
            "{f}"
        );
        // Outcomes since start: created = what the PIM holds.
        assert_eq!(
            m[&format!("assetbridge_assets_total{{family=\"{f}\",outcome=\"created\"}}")],
            env.akeneo.asset_count(f) as f64,
            "{f}"
        );
        // One pass finished, in the histogram: +Inf bucket = count = 1, buckets cumulative.
        let h = "assetbridge_poll_pass_duration_seconds";
        assert_eq!(m[&format!("{h}_count{{family=\"{f}\"}}")], 1.0, "{f}");
        assert_eq!(
            m[&format!("{h}_bucket{{family=\"{f}\",le=\"+Inf\"}}")],
            1.0,
            "{f}"
        );
        assert!(m[&format!("{h}_sum{{family=\"{f}\"}}")] > 0.0, "{f}");
        let prefix = format!("{h}_bucket{{family=\"{f}\",le=\"");
        let mut buckets: Vec<(f64, f64)> = m
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 2, "{buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative buckets: {buckets:?}"
        );
    }

    stop_run(&env, run).await;
}
