//! `assetbridge plan`, run as the real binary against the emulators: lists what a sync would do,
//! writes nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config_arg, text, Env, EnvOptions, FAMILIES};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_lists_the_pending_changes_and_only_reads() {
    let env = Env::start(EnvOptions {
        assets: 200,
        ..EnvOptions::default()
    })
    .await;
    let cfg = env.config("plan.toml", "", "", "5m");
    let cfg = config_arg(&cfg);
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let touched: BTreeSet<String> = env.dam.touch(6).into_iter().collect();
    let added: BTreeSet<String> = env.dam.add(4).into_iter().collect();
    env.akeneo.reset_log();
    let out = env.output(&["plan", "--config", &cfg, "--json"], T).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    let families = doc["families"].as_array().unwrap();
    assert_eq!(families.len(), FAMILIES.len(), "{doc:#}");
    let mut updates = BTreeSet::new();
    let mut creates = BTreeSet::new();
    for f in families {
        for e in f["entries"].as_array().unwrap() {
            let id = e["dam_id"].as_str().unwrap().to_owned();
            match e["action"].as_str().unwrap() {
                "update" => {
                    assert!(
                        e["changes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|c| c["attribute"] == "title" && c["old"] != c["new"]),
                        "{e:#}"
                    );
                    updates.insert(id);
                }
                "create" => {
                    creates.insert(id);
                }
                "skip" => assert_eq!(e["reason"], "unchanged (content hash)", "{e:#}"),
                other => panic!("unexpected action {other}: {e:#}"),
            }
        }
        let counts = &f["counts"];
        assert_eq!(counts["delete"], 0, "{counts}");
    }
    assert_eq!(updates, touched);
    assert_eq!(creates, added);
    let log = env.akeneo.request_log();
    assert!(
        log.iter()
            .all(|l| l.method == "GET" || l.path.contains("/oauth/")),
        "the dry run wrote to the PIM: {log:#?}"
    );

    // The human form names the same operations; the sync afterwards still has them all to do.
    let out = env.output(&["plan", "--config", &cfg], T).await;
    let shown = text(&out.stdout);
    assert!(shown.contains("to create"), "{shown}");
    assert!(shown.contains("title[en_US]:"), "{shown}");
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.pim_count(), 204);
    let out = env.output(&["plan", "--config", &cfg, "--json"], T).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    for f in doc["families"].as_array().unwrap() {
        assert_eq!(f["counts"]["create"], 0, "{doc:#}");
        assert_eq!(f["counts"]["update"], 0, "{doc:#}");
    }
}
