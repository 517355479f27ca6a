//! `[[families]] link` through the real binary: `sync` links the assets it writes to their
//! products (merged with the codes already there, NDJSON batches of ≤ 100 products), a DAM
//! deletion unlinks them, and `check` refuses a link to an attribute that cannot hold them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use assetbridge_core::sanitize_code;
use assetbridge_emulators::akeneo::ProductAttribute;
use common::{config_arg, terminate, text, wait_exit, wait_until, Backend, Env, EnvOptions};
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const ATTR: &str = "packshot_images";

/// The configuration of `env` with a link on the `packshots` family.
fn with_link(env: &Env, name: &str, link: &str) -> String {
    let path = env.config(name, "", "", "5m");
    let toml = std::fs::read_to_string(&path).unwrap();
    let toml = toml.replacen(
        "code = \"packshots\"\n",
        &format!("code = \"packshots\"\nlink = {link}\n"),
        1,
    );
    std::fs::write(&path, toml).unwrap();
    config_arg(&path)
}

fn codes(env: &Env, identifier: &str) -> Vec<String> {
    let p = env.akeneo.product_by_identifier(identifier).unwrap();
    p["values"][ATTR][0]["data"]
        .as_array()
        .map(|l| l.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Live packshots assets by SKU: sku → asset codes.
fn packshots_by_sku(env: &Env) -> BTreeMap<String, Vec<String>> {
    let mut by_sku: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in env.live_ids("packshots") {
        let r = env.dam.get(&id).unwrap();
        by_sku
            .entry(r["metadata"]["sku"].as_str().unwrap().to_owned())
            .or_default()
            .push(sanitize_code(&id));
    }
    by_sku
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_links_written_assets_to_their_products_and_unlinks_deleted_ones() {
    let env = Env::start(EnvOptions {
        assets: 400,
        backend: Backend::Postgres,
        ..EnvOptions::default()
    })
    .await;
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(ATTR, "packshots"));
    let by_sku = packshots_by_sku(&env);
    assert!(by_sku.len() > 100, "enough products for several batches");
    // Every product exists; the first holds two codes linked by hand.
    let first = by_sku.keys().next().unwrap().clone();
    for sku in by_sku.keys() {
        let values = if *sku == first {
            json!({ATTR: [{"locale": null, "scope": null, "data": ["by_hand_1", "by_hand_2"]}]})
        } else {
            json!({})
        };
        env.akeneo
            .add_product(json!({"identifier": sku, "values": values}))
            .unwrap();
    }
    let cfg = with_link(
        &env,
        "links.toml",
        &format!("{{ product = \"/metadata/sku\", attribute = \"{ATTR}\" }}"),
    );

    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("product links:"),
        "{}",
        text(&out.stdout)
    );
    for (sku, assets) in &by_sku {
        let held = codes(&env, sku);
        let expected: BTreeSet<&str> = assets.iter().map(String::as_str).collect();
        let mut wanted: BTreeSet<&str> = expected.clone();
        if *sku == first {
            assert_eq!(&held[..2], ["by_hand_1", "by_hand_2"], "{held:?}");
            wanted.extend(["by_hand_1", "by_hand_2"]);
        }
        let got: BTreeSet<&str> = held.iter().map(String::as_str).collect();
        assert_eq!(got, wanted, "product {sku}");
        assert_eq!(got.len(), held.len(), "no duplicate in {held:?}");
    }
    // The lifestyle family has no link: its assets are in no product.
    let writes: Vec<u32> = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == "/api/rest/v1/products-uuid")
        .map(|r| r.items.unwrap_or(0))
        .collect();
    assert!(!writes.is_empty());
    assert!(writes.iter().all(|n| (1..=100).contains(n)), "{writes:?}");
    assert_eq!(
        writes.iter().sum::<u32>() as usize,
        by_sku.len(),
        "each product written once: {writes:?}"
    );

    // A second pass changes nothing: no product request at all.
    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!env
        .akeneo
        .request_log()
        .iter()
        .any(|r| r.path.starts_with("/api/rest/v1/products")));

    // Deleted in the DAM (deletions = "delete"): deleted in the PIM and unlinked.
    let (sku, assets) = by_sku
        .iter()
        .find(|(s, _)| **s == first)
        .map(|(s, a)| (s.clone(), a.clone()))
        .unwrap();
    let gone_id = env
        .live_ids("packshots")
        .into_iter()
        .find(|id| sanitize_code(id) == assets[0])
        .unwrap();
    env.dam.delete(&[gone_id.as_str()]);
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = codes(&env, &sku);
    assert!(!held.contains(&assets[0]), "{held:?}");
    assert_eq!(&held[..2], ["by_hand_1", "by_hand_2"], "{held:?}");
    assert_eq!(held.len(), 2 + assets.len() - 1, "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_product_makes_sync_partial_with_a_dead_letter() {
    let env = Env::start(EnvOptions {
        assets: 40,
        ..EnvOptions::default()
    })
    .await;
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(ATTR, "packshots"));
    let by_sku = packshots_by_sku(&env);
    let missing = by_sku.keys().next().unwrap().clone();
    for sku in by_sku.keys().filter(|s| **s != missing) {
        env.akeneo
            .add_product(json!({"identifier": sku, "values": {}}))
            .unwrap();
    }
    let cfg = with_link(
        &env,
        "links.toml",
        &format!("{{ product = \"/metadata/sku\", attribute = \"{ATTR}\" }}"),
    );
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let store = env.store().await;
    let dead = store.dead_letters(&Default::default()).await.unwrap();
    assert_eq!(dead.len(), by_sku[&missing].len(), "{dead:?}");
    assert!(dead.iter().all(|d| d.reason.kind == "product_missing"
        && d.family.as_deref() == Some(assetbridge_engine::LINKS_FAMILY)
        && d.reason.message.contains(&missing)));

    // The product is created; `dlq retry` then `sync` link it.
    env.akeneo
        .add_product(json!({"identifier": missing, "values": {}}))
        .unwrap();
    let out = env
        .output(
            &[
                "dlq",
                "retry",
                "--config",
                &cfg,
                "--family",
                assetbridge_engine::LINKS_FAMILY,
            ],
            T,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let held: BTreeSet<String> = codes(&env, &missing).into_iter().collect();
    let want: BTreeSet<String> = by_sku[&missing].iter().cloned().collect();
    assert_eq!(held, want);
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_link_that_does_not_fit_the_pim() {
    let env = Env::start(EnvOptions {
        assets: 10,
        ..EnvOptions::default()
    })
    .await;
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(ATTR, "packshots"));
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(
            "lifestyle_images",
            "lifestyle",
        ));
    let check = |cfg: String| {
        let env = &env;
        async move {
            let out = env.output(&["check", "--config", &cfg], T).await;
            (out.status.code(), text(&out.stderr))
        }
    };
    // `name` is a text attribute.
    let (code, err) = check(with_link(
        &env,
        "a.toml",
        "{ product = \"/metadata/sku\", attribute = \"name\" }",
    ))
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("families[0].link.attribute") && err.contains("not an asset collection"),
        "{err}"
    );
    // An asset collection of another family.
    let (code, err) = check(with_link(
        &env,
        "b.toml",
        "{ product = \"/metadata/sku\", attribute = \"lifestyle_images\" }",
    ))
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("lifestyle"), "{err}");
    // No such attribute.
    let (code, err) = check(with_link(
        &env,
        "c.toml",
        "{ product = \"/metadata/sku\", attribute = \"nope\" }",
    ))
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no product attribute `nope`"), "{err}");
    // A scope on an attribute that is not scopable.
    let (code, err) = check(with_link(
        &env,
        "d.toml",
        &format!(
            "{{ product = \"/metadata/sku\", attribute = \"{ATTR}\", scope = \"ecommerce\" }}"
        ),
    ))
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("families[0].link.scope"), "{err}");
    // And a good one passes.
    let (code, err) = check(with_link(
        &env,
        "e.toml",
        &format!("{{ product = \"/metadata/sku\", attribute = \"{ATTR}\" }}"),
    ))
    .await;
    assert_eq!(code, Some(0), "{err}");
}

/// Two `run` processes on one PostgreSQL store, many assets of a few products: each process
/// polls, works its inbox and runs its linker; every link ends up in the PIM, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_run_processes_on_one_store_link_every_asset() {
    let env = Env::start(EnvOptions {
        assets: 300,
        backend: Backend::Postgres,
        ..EnvOptions::default()
    })
    .await;
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(ATTR, "packshots"));
    // Crowd the packshots onto four products, each with a code linked by hand.
    let hot = ["HOT-1", "HOT-2", "HOT-3", "HOT-4"];
    for (i, id) in env.live_ids("packshots").iter().enumerate() {
        env.dam
            .set(id, &json!({"metadata": {"sku": hot[i % hot.len()]}}))
            .unwrap();
    }
    for p in hot {
        env.akeneo
            .add_product(json!({"identifier": p, "values": {ATTR: [{"locale": null, "scope": null, "data": [format!("by_hand_{p}")]}]}}))
            .unwrap();
    }
    let path = env.config("run.toml", "", "", "1s");
    let toml = std::fs::read_to_string(&path).unwrap().replacen(
        "code = \"packshots\"\n",
        &format!("code = \"packshots\"\nlink = {{ product = \"/metadata/sku\", attribute = \"{ATTR}\" }}\n"),
        1,
    );
    std::fs::write(&path, toml).unwrap();
    let cfg = config_arg(&path);
    let mut runs = vec![
        env.spawn(
            &["run", "--config", &cfg, "--shutdown-grace", "10"],
            "run-a",
        ),
        env.spawn(
            &["run", "--config", &cfg, "--shutdown-grace", "10"],
            "run-b",
        ),
    ];

    let complete = |env: &Env| {
        let by_sku = packshots_by_sku(env);
        hot.iter().all(|p| {
            let held = codes(env, p);
            let mut want: BTreeSet<String> = by_sku
                .get(*p)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect();
            want.insert(format!("by_hand_{p}"));
            held.first().map(String::as_str) == Some(format!("by_hand_{p}").as_str())
                && held.len() == want.len()
                && held.into_iter().collect::<BTreeSet<_>>() == want
        })
    };
    wait_until(
        Duration::from_secs(90),
        "every packshot linked to its product",
        || complete(&env),
    )
    .await;

    // While both run: some assets move to another product, some are deleted in the DAM.
    let ids = env.live_ids("packshots");
    for id in ids.iter().take(20) {
        env.dam
            .set(id, &json!({"metadata": {"sku": "HOT-1"}}))
            .unwrap();
    }
    env.dam.delete(&ids[20..30]);
    wait_until(
        Duration::from_secs(90),
        "links follow the moves and deletions",
        || complete(&env),
    )
    .await;

    for r in &runs {
        terminate(r);
    }
    for (r, log) in runs.iter_mut().zip(["run-a", "run-b"]) {
        let status = wait_exit(r, Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}\n{}",
            env.logs(log)
        );
    }
    let store = env.store().await;
    assert_eq!(store.link_backlog().await.unwrap().pending, 0);
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
}

/// Links configured on a catalogue the connector wrote before: `sync --full` re-reads the DAM,
/// finds the assets unchanged (no asset write) and links them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_full_links_a_catalogue_written_before_links_were_configured() {
    let env = Env::start(EnvOptions {
        assets: 120,
        ..EnvOptions::default()
    })
    .await;
    env.akeneo
        .add_product_attribute(ProductAttribute::asset_collection(ATTR, "packshots"));
    let by_sku = packshots_by_sku(&env);
    for sku in by_sku.keys() {
        env.akeneo
            .add_product(json!({"identifier": sku, "values": {}}))
            .unwrap();
    }
    let plain = config_arg(&env.config("plain.toml", "", "", "5m"));
    let out = env
        .output(&["sync", "--config", &plain, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(by_sku.keys().all(|s| codes(&env, s).is_empty()));

    let cfg = with_link(
        &env,
        "links.toml",
        &format!("{{ product = \"/metadata/sku\", attribute = \"{ATTR}\" }}"),
    );
    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress", "--full"], T)
        .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for (sku, assets) in &by_sku {
        let held: BTreeSet<String> = codes(&env, sku).into_iter().collect();
        let want: BTreeSet<String> = assets.iter().cloned().collect();
        assert_eq!(held, want, "product {sku}");
    }
    let asset_writes = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/asset-families/"))
        .count();
    assert_eq!(asset_writes, 0, "the assets were unchanged");
}
