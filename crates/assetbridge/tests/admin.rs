//! The admin server of `assetbridge run` (`[server]`): probes, metrics, the status page and the
//! dead-letter retry action, against the real binary, the emulators and a SQLite state file.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{text, wait_exit, Env, EnvOptions, FAMILIES};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with `[server]` (given as extra lines after the `[akeneo]` table).
fn config(env: &Env, port: u16, token: Option<&str>) -> String {
    let mut server = format!(
        "\n[server]\nlisten = \"127.0.0.1:{port}\"\nallowed_hosts = [\"status.example.com\"]\n"
    );
    if let Some(t) = token {
        server.push_str(&format!("admin_token = \"{t}\"\n"));
    }
    env.config("assetbridge.toml", "", &server, "1h")
        .display()
        .to_string()
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

/// The text of `<td class="{class}">` in the families-table row of `family`.
fn family_cell(html: &str, family: &str, class: &str) -> String {
    let row_start = html
        .find(&format!("<tr data-family=\"{family}\">"))
        .unwrap_or_else(|| panic!("no row for {family}"));
    let row = &html[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    cell(row, class)
}

fn cell(html: &str, class: &str) -> String {
    let open = format!("class=\"{class}\">");
    let start = html
        .find(&open)
        .unwrap_or_else(|| panic!("no cell {class}"))
        + open.len();
    let end = start + html[start..].find('<').unwrap();
    html[start..end].to_owned()
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn wait_ready(http: &reqwest::Client, base: &str, env: &Env) {
    let start = std::time::Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(start.elapsed() < T, "never ready: {}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_status_page_and_retry_with_a_token() {
    let env = Env::start(EnvOptions {
        assets: 120,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    let port = free_port();
    let c = config(&env, port, Some("s3cret&<token>"));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut run = env.spawn(&["run", "--config", &c], "run");
    wait_ready(&http, &base, &env).await;
    assert_eq!(get(&http, &format!("{base}/healthz")).await.0, 200);

    // The first poll: everything but the `eco` assets lands, those become dead letters.
    let live: usize = FAMILIES.iter().map(|f| env.live_ids(f).len()).sum();
    let start = std::time::Instant::now();
    let metrics = loop {
        let (status, body) = get(&http, &format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        let m = parse_metrics(&body);
        let failed: f64 = FAMILIES
            .iter()
            .map(|f| {
                m.get(&format!(
                    "assetbridge_assets_total{{family=\"{f}\",outcome=\"failed\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
            })
            .sum();
        if env.pim_count() > 0 && env.pim_count() + failed as usize == live {
            break m;
        }
        assert!(
            start.elapsed() < T,
            "the first poll did not finish: {}",
            env.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dead = live - env.pim_count();
    assert!(dead > 0, "the seed gives some `eco` assets");

    // /metrics: the created counts are what the PIM holds, per family; dead letters as stored.
    for f in FAMILIES {
        let created =
            metrics[&format!("assetbridge_assets_total{{family=\"{f}\",outcome=\"created\"}}")];
        assert_eq!(created as usize, env.akeneo.asset_count(f), "{f}");
    }
    assert_eq!(metrics["assetbridge_dead_letters"] as usize, dead);
    assert_eq!(metrics["assetbridge_ready"], 1.0);
    assert_eq!(metrics["assetbridge_store_up"], 1.0);
    assert!(metrics["assetbridge_pim_requests_total"] > 0.0);
    assert!(metrics["assetbridge_pim_responses_total{status=\"200\"}"] > 0.0);
    assert!(metrics.contains_key("assetbridge_pim_rate_limit_wait_seconds_total"));
    // SQLite's page-cache region (16 MiB by default): the state's pages are held in its slots.
    let slots =
        |state: &str| metrics[&format!("assetbridge_sqlite_page_cache_slots{{state=\"{state}\"}}")];
    assert!(slots("capacity") > 0.0);
    assert!(slots("in_use") > 0.0, "the store's pages are in the region");
    assert!(slots("in_use") <= slots("highest") && slots("highest") <= slots("capacity"));
    // Requests to both sides, by status, and their latency histograms (one snapshot each:
    // the +Inf bucket is the count).
    assert!(metrics["assetbridge_dam_requests_total"] > 0.0);
    assert!(metrics["assetbridge_dam_responses_total{status=\"200\"}"] > 0.0);
    assert!(metrics.contains_key("assetbridge_dam_retries_total"));
    for side in ["pim", "dam"] {
        let count = metrics[&format!("assetbridge_{side}_request_duration_seconds_count")];
        assert!(count > 0.0, "{side}");
        assert_eq!(
            metrics[&format!("assetbridge_{side}_request_duration_seconds_bucket{{le=\"+Inf\"}}")],
            count,
            "{side}"
        );
        assert!(metrics[&format!("assetbridge_{side}_request_duration_seconds_sum")] > 0.0);
    }
    assert!(metrics.contains_key("assetbridge_backlog{state=\"pending\"}"));

    // The status page says what `assetbridge status --json` says.
    let status = env.output(&["status", "--config", &c, "--json"], T).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let (code, html) = get(&http, &format!("{base}/")).await;
    assert_eq!(code, 200);
    for fam in status["families"].as_array().unwrap() {
        let f = fam["family"].as_str().unwrap();
        assert_eq!(
            family_cell(&html, f, "assets-written"),
            fam["assets_written"].to_string(),
            "{f}"
        );
        let cursor = &fam["cursor"];
        assert!(cursor.is_object(), "{f} has a cursor after its poll");
        assert_eq!(
            family_cell(&html, f, "cursor"),
            format!(
                "{} / {}",
                cursor["updated_at"].as_str().unwrap(),
                cursor["dam_id"].as_str().unwrap()
            )
        );
        assert_eq!(
            family_cell(&html, f, "created"),
            env.akeneo.asset_count(f).to_string()
        );
    }
    assert_eq!(cell(&html, "total"), status["backlog"]["total"].to_string());
    assert_eq!(
        cell(&html, "dead-letter-count"),
        status["dead_letters"].to_string()
    );
    assert!(html.contains("<button type=\"submit\">Retry</button>"));
    assert!(
        html.contains("pim_rejected"),
        "recent failures show their reason"
    );

    // Retry: refused without or with a wrong token, done with it (form field or bearer).
    let store = env.store().await;
    let ids: Vec<i64> = store
        .dead_letters(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), dead);
    let newest = ids.iter().max().unwrap();
    assert!(
        html.contains(&format!("<tr><td>{newest}</td>")),
        "the newest dead letter is among the recent failures"
    );
    let post = |body: String, bearer: Option<&str>| {
        let mut r = http
            .post(format!("{base}/dead-letters/retry"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        async move {
            let r = r.send().await.expect("POST");
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(post(format!("ids={}", ids[0]), None).await.0, 401);
    assert_eq!(
        post(format!("ids={}&token=wrong", ids[0]), None).await.0,
        401
    );
    assert_eq!(post("ids=1".into(), Some("wrong")).await.0, 401);
    assert_eq!(store.dead_letter_count().await.unwrap() as usize, dead);

    // The token has `&<>`: percent-encoded in the form.
    let (code, body) = post(format!("ids={}&token=s3cret%26%3Ctoken%3E", ids[0]), None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("retried: 1 "), "{body}");
    assert!(store.dead_letter_by_id(ids[0]).await.unwrap().is_none());

    let (code, body) = post("all=1".into(), Some("s3cret&<token>")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("retried: "), "{body}");
    for id in &ids {
        assert!(
            store.dead_letter_by_id(*id).await.unwrap().is_none(),
            "dead letter {id} was moved back to the inbox"
        );
    }
    // Still refused by the PIM (the option is missing): they come back as new dead letters.
    let start = std::time::Instant::now();
    while (store.dead_letter_count().await.unwrap() as usize) < dead {
        assert!(start.elapsed() < T, "{}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;

    common::terminate(&run);
    let exit = wait_exit(&mut run, T).await.expect("run exits on SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", env.logs("run"));
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "the admin server stopped with the process"
    );
}

/// Without `admin_token` the retry button is disabled and the action answers 403; `/readyz` is
/// 503 while the PIM is still being asked for its token and structures (a slow PIM here), 200
/// after; the webhook server's counters are on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_retry_button_is_disabled_and_refused() {
    let env = Env::start(EnvOptions {
        assets: 30,
        missing_tags: vec!["eco"],
        // Slow enough that the admin server answers before the PIM did, even when the process
        // is slow to start on a loaded machine.
        pim_latency: Duration::from_secs(2),
        ..EnvOptions::default()
    })
    .await;
    let port = free_port();
    let hook_port = free_port();
    let c = config(&env, port, None);
    let mut text = std::fs::read_to_string(&c).unwrap();
    text.push_str(&format!(
        r#"
[webhooks]
listen = "127.0.0.1:{hook_port}"

[[webhooks.generic]]
path = "/webhooks/dam"
shape = {{ items_pointer = "", family_pointer = "/type", event_id_pointer = "/event_id" }}
auth = {{ hmac = {{ secret = "webhook-secret", prefix = "sha256=" }} }}
"#
    ));
    std::fs::write(&c, text).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut run = env.spawn(&["run", "--config", &c], "run");

    // The first answer of /readyz (the PIM takes 2 s per request: token, then structures).
    let start = std::time::Instant::now();
    let first = loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            break r.status().as_u16();
        }
        assert!(start.elapsed() < T, "no admin server: {}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first, 503, "not ready before the PIM answered");
    assert_eq!(get(&http, &format!("{base}/healthz")).await.0, 200);
    wait_ready(&http, &base, &env).await;

    let (code, html) = get(&http, &format!("{base}/")).await;
    assert_eq!(code, 200);
    assert!(html.contains("<button type=\"submit\" disabled>Retry</button>"));

    // Listening on 127.0.0.1, it answers only requests for a loopback name: a page whose own
    // host name was pointed at 127.0.0.1 (DNS rebinding) cannot read it as its own origin.
    for (host, expected) in [
        (format!("rebind.example:{port}"), 421),
        ("rebind.example".to_owned(), 421),
        (format!("127.0.0.1.nip.io:{port}"), 421),
        // A name the configuration allows (a reverse proxy passing its own `Host` on).
        (format!("status.example.com:{port}"), 200),
        ("Status.Example.com".to_owned(), 200),
        (format!("other.example.com:{port}"), 421),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        ("LOCALHOST".to_owned(), 200),
    ] {
        for path in ["/", "/metrics", "/readyz"] {
            let r = http
                .get(format!("{base}{path}"))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), expected, "Host: {host} {path}");
        }
    }
    // And no other page may frame it (the retry form), nor sniff its types.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(
        r.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    let r = http
        .post(format!("{base}/dead-letters/retry"))
        .bearer_auth("anything")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("all=1&token=anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // An unsigned delivery: received and refused (401), counted on /metrics.
    let r = http
        .post(format!("http://127.0.0.1:{hook_port}/webhooks/dam"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let m = parse_metrics(&get(&http, &format!("{base}/metrics")).await.1);
    assert_eq!(
        m["assetbridge_webhook_events_total{event=\"received\"}"],
        1.0
    );
    assert_eq!(
        m["assetbridge_webhook_events_total{event=\"rejected_unauthorized\"}"],
        1.0
    );
    assert_eq!(
        m["assetbridge_webhook_events_total{event=\"accepted\"}"],
        0.0
    );

    common::terminate(&run);
    let exit = wait_exit(&mut run, T).await.expect("run exits on SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", env.logs("run"));
}
