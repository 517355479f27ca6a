//! `assetbridge dlq` and `assetbridge status`, run as the real binary against the emulators
//! (in this process, over HTTP on 127.0.0.1) and a SQLite state file.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use assetbridge_store::{DeadLetterReason, Store};
use common::{text, Env, EnvOptions, FAMILIES};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn has_tag(record: &Value, tag: &str) -> bool {
    record["metadata"]["tags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t == tag))
}

/// The scenario: the PIM lacks an option (`eco` of `tags`) and the connector may not
/// create options → those assets are dead letters with the PIM's 422 and `sync` exits 3; the
/// option is added in the PIM → `dlq retry`, then `sync` → delivered, no dead letter, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_retried_once_the_cause_is_fixed() {
    let env = Env::start(EnvOptions {
        assets: 300,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config("assetbridge.toml", "", "", "5m");
    let c = cfg.display().to_string();
    let eco: BTreeSet<String> = FAMILIES
        .iter()
        .flat_map(|f| env.live_ids(f))
        .filter(|id| has_tag(&env.dam.get(id).unwrap(), "eco"))
        .collect();
    assert!(eco.len() > 5, "the seed gives some `eco` assets");
    let eco_packshots: BTreeSet<String> = env
        .live_ids("packshots")
        .into_iter()
        .filter(|id| eco.contains(id))
        .collect();

    // 1. The sync: everything but the `eco` assets lands; exit 3.
    let out = env
        .output(&["sync", "--config", &c, "--no-progress"], T)
        .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(env.pim_count(), 300 - eco.len());

    // 2. `dlq list --json`: one dead letter per `eco` asset, with the PIM's 422 and message.
    let out = env
        .output(
            &["dlq", "list", "--config", &c, "--json", "--limit", "1000"],
            T,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = json_of(&out);
    let listed = listed.as_array().expect("an array");
    let dam_ids: BTreeSet<String> = listed
        .iter()
        .map(|d| d["dam_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dam_ids, eco);
    for d in listed {
        assert_eq!(d["kind"], "pim_rejected", "{d}");
        assert_eq!(d["pim_status"], 422, "{d}");
        let message = d["pim_message"].as_str().unwrap_or_default();
        assert!(
            message.contains("eco") && message.contains("tags"),
            "the PIM's message names the option and the attribute: {d}"
        );
        assert_eq!(d["retryable"], true);
    }

    // Filters.
    let out = env
        .output(
            &[
                "dlq",
                "list",
                "--config",
                &c,
                "--json",
                "--family",
                "packshots",
                "--error",
                "ECO",
            ],
            T,
        )
        .await;
    let only: BTreeSet<String> = json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dam_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(only, eco_packshots);
    let out = env
        .output(
            &[
                "dlq",
                "list",
                "--config",
                &c,
                "--json",
                "--error",
                "no-such-text",
            ],
            T,
        )
        .await;
    assert_eq!(json_of(&out), Value::Array(vec![]));
    let first_id = listed[0]["id"].as_i64().unwrap();
    let out = env
        .output(
            &["dlq", "list", "--config", &c, "--json", "--limit", "2"],
            T,
        )
        .await;
    assert_eq!(json_of(&out).as_array().unwrap().len(), 2);

    // The table.
    let out = env.output(&["dlq", "list", "--config", &c], T).await;
    let table = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        table.contains(&format!(
            "{} shown ({} dead letters in all)",
            eco.len(),
            eco.len()
        )),
        "{table}"
    );
    assert!(table.contains("PIM 422"), "{table}");

    // `show`: payload, reason, PIM status and message.
    let out = env
        .output(&["dlq", "show", "--config", &c, &first_id.to_string()], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let first_dam_id = listed[0]["dam_id"].as_str().unwrap();
    for needle in [
        "PIM status     422",
        "PIM message",
        "payload",
        "\"eco\"",
        first_dam_id,
    ] {
        assert!(shown.contains(needle), "`{needle}` missing in:\n{shown}");
    }
    let out = env
        .output(
            &[
                "dlq",
                "show",
                "--config",
                &c,
                "--json",
                &first_id.to_string(),
            ],
            T,
        )
        .await;
    let one = json_of(&out);
    assert_eq!(one["payload"]["asset"]["id"], first_dam_id, "{one}");
    assert_eq!(one["payload"]["family"], listed[0]["family"]);
    // Unknown id: exit 1; bad usage: exit 2.
    let out = env
        .output(&["dlq", "show", "--config", &c, "999999"], T)
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no dead letter with id 999999"));
    let out = env
        .output(&["dlq", "list", "--config", &c, "--limit", "0"], T)
        .await;
    assert_eq!(out.status.code(), Some(2));

    // `status --json` agrees.
    let out = env.output(&["status", "--config", &c, "--json"], T).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = json_of(&out);
    assert_eq!(status["dead_letters"], eco.len(), "{status}");
    assert_eq!(status["backlog"]["total"], 0, "{status}");
    let failed = status["outcomes"]["last_5m"]["failed"].as_u64().unwrap();
    let succeeded = status["outcomes"]["last_5m"]["succeeded"].as_u64().unwrap();
    assert_eq!(failed as usize, eco.len(), "{status}");
    assert_eq!(succeeded as usize, 300 - eco.len(), "{status}");
    let written: u64 = status["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["assets_written"].as_u64().unwrap())
        .sum();
    assert_eq!(written as usize, 300 - eco.len());
    for f in status["families"].as_array().unwrap() {
        assert!(f["cursor"]["dam_id"].is_string(), "{f}");
        assert!(f["last_success"].is_string(), "{f}");
        assert_eq!(f["configured"], true);
    }
    let out = env.output(&["status", "--config", &c], T).await;
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!("dead letters   {}", eco.len())),
        "{table}"
    );

    // 3. Fix the cause in the PIM, retry, sync.
    for f in FAMILIES {
        assert!(env
            .akeneo
            .add_asset_attribute_option(f, "tags", "eco", serde_json::Map::new()));
    }
    let out = env.output(&["dlq", "retry", "--config", &c], T).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "{} dead letters (every dead letter) moved back",
            eco.len()
        )),
        "{}",
        text(&out.stdout)
    );
    let (backlog, dead) = env.inbox_and_dead_letters().await;
    assert_eq!(dead, 0);
    assert_eq!(backlog.pending as usize, eco.len());

    let out = env
        .output(&["sync", "--config", &c, "--no-progress"], T)
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let sample: Vec<String> = eco.iter().cloned().collect();
    env.assert_pim_matches_dam(&sample);
    let (backlog, dead) = env.inbox_and_dead_letters().await;
    assert_eq!((backlog.pending, backlog.in_flight, dead), (0, 0, 0));
    let out = env.output(&["dlq", "list", "--config", &c], T).await;
    assert!(text(&out.stdout).contains("no dead letter matches (0 dead letters in all)"));
}

/// `purge` asks for --yes (refuses without it when nobody can confirm) and deletes only what
/// matches; `retry --id` takes only that one. Dead letters written straight into the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_yes_and_filters_choose_what_is_taken() {
    let env = Env::start(EnvOptions {
        assets: 12,
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config("assetbridge.toml", "", "", "5m");
    let c = cfg.display().to_string();
    let store: Store = env.store().await;
    let mut ids = Vec::new();
    for (i, f) in FAMILIES.iter().enumerate() {
        for id in env.live_ids(f).iter().take(3) {
            let change = env.change_of(id, &format!("evt-{i}-{id}"));
            let why = DeadLetterReason {
                kind: "pim_rejected".into(),
                message: format!("the PIM rejected asset `{id}`"),
                pim_status: Some(422),
                pim_message: Some(if i == 0 {
                    "Property \"title\" is too long".into()
                } else {
                    "The option \"x\" does not exist".into()
                }),
                pim_errors: None,
            };
            ids.push(store.add_dead_letter(&change, &why).await.unwrap());
        }
    }
    store
        .add_raw_dead_letter(
            Some("packshots"),
            Some("webhook"),
            b"{not json",
            &DeadLetterReason::new("unparseable", "bad JSON"),
        )
        .await
        .unwrap();
    store.close().await;

    // Without --yes and with no terminal to ask: refused, exit 2, nothing deleted.
    let out = env
        .output(
            &["dlq", "purge", "--config", &c, "--family", "packshots"],
            T,
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--yes"));
    assert_eq!(env.inbox_and_dead_letters().await.1, 7);

    // --error matches the PIM's message, case-insensitively.
    let out = env
        .output(
            &[
                "dlq", "purge", "--config", &c, "--error", "TOO LONG", "--yes",
            ],
            T,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 dead letters deleted"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(env.inbox_and_dead_letters().await.1, 4);

    // retry --id: just that one goes back to the inbox.
    let id = ids[4].to_string();
    let out = env
        .output(&["dlq", "retry", "--config", &c, "--id", &id], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (backlog, dead) = env.inbox_and_dead_letters().await;
    assert_eq!((backlog.pending, dead), (1, 3));

    // The raw one cannot be retried; it stays and is shown as not retryable.
    let out = env.output(&["dlq", "retry", "--config", &c], T).await;
    assert!(out.status.success());
    let (backlog, dead) = env.inbox_and_dead_letters().await;
    assert_eq!((backlog.pending, dead), (3, 1));
    let out = env
        .output(&["dlq", "list", "--config", &c, "--json"], T)
        .await;
    let left = json_of(&out);
    assert_eq!(left[0]["kind"], "unparseable");
    assert_eq!(left[0]["retryable"], false);
    let out = env
        .output(
            &["dlq", "show", "--config", &c, &left[0]["id"].to_string()],
            T,
        )
        .await;
    assert!(
        text(&out.stdout).contains("{not json"),
        "{}",
        text(&out.stdout)
    );

    // status shows the inbox the retries filled.
    let out = env.output(&["status", "--config", &c, "--json"], T).await;
    let status = json_of(&out);
    assert_eq!(status["backlog"]["pending"], 3, "{status}");
    assert_eq!(status["dead_letters"], 1, "{status}");
    assert!(status["backlog"]["oldest_age_secs"].is_number(), "{status}");
    // Families nobody polled yet are listed (configured, no cursor).
    assert_eq!(status["families"][0]["cursor"], Value::Null, "{status}");

    let out = env
        .output(&["dlq", "purge", "--config", &c, "--yes"], T)
        .await;
    assert!(
        text(&out.stdout).contains("1 dead letter deleted"),
        "{}",
        text(&out.stdout)
    );
}

/// `dlq retry` next to a running `run` (SQLite: no cross-process notification): its workers pick
/// the retried changes up within their idle interval (1 s) and deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_delivers_retried_dead_letters() {
    let env = Env::start(EnvOptions {
        assets: 200,
        missing_tags: vec!["eco"],
        ..EnvOptions::default()
    })
    .await;
    // The client looks at the PIM's structure again before refusing an option it does not know
    // when its copy is older than `structure_recheck_secs` (default 30): 1 s here.
    let cfg = env.config("assetbridge.toml", "", "structure_recheck_secs = 1\n", "1h");
    let c = cfg.display().to_string();
    let eco = FAMILIES
        .iter()
        .flat_map(|f| env.live_ids(f))
        .filter(|id| has_tag(&env.dam.get(id).unwrap(), "eco"))
        .count();
    assert!(eco > 0);
    let mut run = env.spawn(&["run", "--config", &c], "run");
    common::wait_until(T, "the first pass", || env.pim_count() == 200 - eco).await;
    let t0 = std::time::Instant::now();
    loop {
        if env.inbox_and_dead_letters().await.1 as usize == eco {
            break;
        }
        assert!(t0.elapsed() < T, "{}", env.logs("run"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for f in FAMILIES {
        env.akeneo
            .add_asset_attribute_option(f, "tags", "eco", serde_json::Map::new());
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let out = env.output(&["dlq", "retry", "--config", &c], T).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    common::wait_until(
        Duration::from_secs(20),
        "the retried assets delivered",
        || env.pim_count() == 200,
    )
    .await;
    // The worker completes an inbox entry after the PIM answered: the backlog empties a
    // moment after the count is reached.
    let t0 = std::time::Instant::now();
    loop {
        let (backlog, dead) = env.inbox_and_dead_letters().await;
        assert_eq!(dead, 0, "{}", env.logs("run"));
        if backlog.pending + backlog.in_flight == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "backlog {backlog:?}\n{}",
            env.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.assert_pim_matches_dam(&[]);
    common::terminate(&run);
    let status = common::wait_exit(&mut run, Duration::from_secs(30)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        env.logs("run")
    );
}
