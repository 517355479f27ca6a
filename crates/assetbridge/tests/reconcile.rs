//! Reconciliation and routing through the real binary: `plan --full` lists the drift, `sync
//! --full` repairs it and prints what it did and why, a second `sync --full` writes nothing;
//! `[routing] poll = true` feeds a family from one unfiltered listing and counts the rest.

mod common;

use std::time::Duration;

use assetbridge_core::{sanitize_code, Cursor};
use common::{config_arg, text, Env, EnvOptions};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(180);

fn writes(env: &Env) -> usize {
    env.akeneo
        .request_log()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/oauth/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_full_repairs_the_drift_and_says_why() {
    let env = Env::start(EnvOptions {
        assets: 120,
        ..EnvOptions::default()
    })
    .await;
    let cfg = config_arg(&env.config("a.toml", "", "", "5m"));
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.pim_count(), 120);

    // Drift behind the connector's back.
    let packshots = env.live_ids("packshots");
    let purged = env.dam.purge(&packshots[0..2]);
    let edited = sanitize_code(&packshots[5]);
    env.akeneo
        .upsert_asset(
            "packshots",
            json!({"code": edited, "values": {"title": [{"locale": "en_US", "channel": null, "data": "Edited in the PIM"}]}}),
        )
        .unwrap();
    env.akeneo
        .upsert_asset(
            "lifestyle",
            json!({"code": "uploaded_by_hand", "values": {}}),
        )
        .unwrap();
    let silent = env.live_ids("lifestyle")[3].clone();
    env.dam
        .set(&silent, &json!({"metadata": {"title": "Changed silently"}}))
        .unwrap();
    let store = env.store().await;
    store
        .set_cursor(
            "lifestyle",
            &Cursor {
                updated_at: env.dam.now() + chrono::Duration::hours(1),
                dam_id: "~".into(),
            },
        )
        .await
        .unwrap();
    store.close().await;

    // The dry run lists it, as JSON, and writes nothing.
    env.akeneo.reset_log();
    let out = env
        .output(&["plan", "--config", &cfg, "--full", "--json"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(writes(&env), 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let acted: Vec<(String, String, String)> = doc["families"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            let family = f["family"].as_str().unwrap().to_owned();
            f["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] != json!("skip"))
                .map(move |e| {
                    (
                        family.clone(),
                        e["action"].as_str().unwrap().to_owned(),
                        e["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut want = vec![
        ("packshots".to_owned(), "update".to_owned(), edited.clone()),
        (
            "packshots".to_owned(),
            "delete".to_owned(),
            sanitize_code(&purged[0]),
        ),
        (
            "packshots".to_owned(),
            "delete".to_owned(),
            sanitize_code(&purged[1]),
        ),
        (
            "lifestyle".to_owned(),
            "update".to_owned(),
            sanitize_code(&silent),
        ),
    ];
    let mut got = acted.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{}", text(&out.stdout));

    // The repair.
    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--full", "--no-progress"], T)
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for line in [
        format!("packshots: drift       {edited}"),
        format!("packshots: gone in dam {}", sanitize_code(&purged[0])),
        format!("lifestyle: missed      {}", sanitize_code(&silent)),
        "lifestyle: pim only    uploaded_by_hand".to_owned(),
        "title[en_US]: \"Edited in the PIM\" (in the PIM) →".to_owned(),
    ] {
        assert!(stdout.contains(&line), "`{line}` missing from:\n{stdout}");
    }
    let deletes = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 2);
    for id in &purged {
        assert!(env.akeneo.asset("packshots", &sanitize_code(id)).is_none());
    }
    env.assert_content(&packshots[5]);
    env.assert_content(&silent);
    assert!(env.akeneo.asset("lifestyle", "uploaded_by_hand").is_some());

    // Nothing left to repair: no write (the PIM-only asset is reported again).
    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--full", "--no-progress"], T)
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(writes(&env), 0, "{stdout}");
    assert!(!stdout.contains("drift  "), "{stdout}");
    assert!(stdout.contains("pim only    uploaded_by_hand"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_listing_feeds_its_family_and_counts_the_unrouted() {
    let env = Env::start(EnvOptions {
        assets: 90,
        ..EnvOptions::default()
    })
    .await;
    let path = env.config("r.toml", "", "", "5m");
    let mut text_cfg = std::fs::read_to_string(&path).unwrap();
    text_cfg.push_str(
        r#"
[routing]
poll = true
routes = [ { family = "packshots", when = { pointer = "/type", equals = "packshots" } } ]
"#,
    );
    std::fs::write(&path, text_cfg).unwrap();
    let cfg = config_arg(&path);
    env.dam.reset_stats();
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    env.assert_pim_matches_dam(&[]);
    // lifestyle through its own listing; the routed listing (every asset, no family filter)
    // sends packshots to packshots and counts the lifestyle assets as skipped.
    let lifestyle = env.live_ids("lifestyle").len();
    let unrouted = stdout
        .lines()
        .find(|l| l.starts_with("(unrouted)"))
        .unwrap_or_else(|| panic!("no (unrouted) row:\n{stdout}"));
    // The summary's columns, by name.
    let header: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("family"))
        .unwrap()
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let cols: Vec<&str> = unrouted.split_whitespace().collect();
    assert_eq!(cols[col("seen")], lifestyle.to_string(), "{stdout}");
    assert_eq!(cols[col("skipped")], lifestyle.to_string(), "{stdout}");
    assert_eq!(env.dam.stats().items_served as usize, 90 + lifestyle);
    let store = env.store().await;
    assert!(store
        .cursor(assetbridge_engine::ROUTED_LISTING)
        .await
        .unwrap()
        .is_some());
    assert!(store.cursor("packshots").await.unwrap().is_none());
    store.close().await;

    // A routed family names a family that does not exist: a configuration error at its line.
    let bad = std::fs::read_to_string(&path)
        .unwrap()
        .replace("family = \"packshots\"", "family = \"packshot\"");
    std::fs::write(env.dir.path().join("bad.toml"), bad).unwrap();
    let out = env
        .output(
            &[
                "sync",
                "--config",
                &config_arg(&env.dir.path().join("bad.toml")),
            ],
            T,
        )
        .await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("routing.routes[0].family") && err.contains("packshot"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reconciles_on_its_schedule() {
    let env = Env::start(EnvOptions {
        assets: 60,
        ..EnvOptions::default()
    })
    .await;
    // Polls every second, reconciles every 3 s; the admin server on a free port.
    let path = env.config(
        "run.toml",
        "reconcile_schedule = \"3s\"",
        "\n[server]\nlisten = \"127.0.0.1:0\"\n",
        "1s",
    );
    let cfg = config_arg(&path);
    let log = "run";
    let mut run = env.spawn(&["run", "--config", &cfg, "--shutdown-grace", "10"], log);
    common::wait_until(Duration::from_secs(60), "the first poll", || {
        env.pim_count() == 60
    })
    .await;

    // Drift no poll can see: an edit in the PIM, an asset gone from the DAM without a trace.
    let packshots = env.live_ids("packshots");
    let edited = packshots[1].clone();
    let code = sanitize_code(&edited);
    let dam_title = env.dam.get(&edited).unwrap()["metadata"]["title"].clone();
    env.akeneo
        .upsert_asset(
            "packshots",
            json!({"code": code, "values": {"title": [{"locale": "en_US", "channel": null, "data": "Edited in the PIM"}]}}),
        )
        .unwrap();
    let purged = env.dam.purge(&packshots[0..1]);
    let gone = sanitize_code(&purged[0]);
    let repaired = || {
        let title = env
            .akeneo
            .asset("packshots", &code)
            .map(|a| a["values"]["title"][0]["data"].clone());
        title.as_ref() == Some(&dam_title) && env.akeneo.asset("packshots", &gone).is_none()
    };
    common::wait_until(
        Duration::from_secs(60),
        "the scheduled reconciliation",
        repaired,
    )
    .await;
    common::terminate(&run);
    let status = common::wait_exit(&mut run, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("run did not stop\n{}", env.logs(log)));
    assert!(status.success(), "{}", env.logs(log));
    let logs = std::fs::read_to_string(env.dir.path().join("run.err")).unwrap();
    assert!(logs.contains("scheduled reconciliation starting"), "{logs}");
    let store = env.store().await;
    let last = store.last_reconcile("packshots", true).await.unwrap();
    assert!(last.is_some_and(|r| r.complete), "{logs}");
    store.close().await;
}
