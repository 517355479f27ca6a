//! `[[families]] product_filter` through the real binary: only assets whose product exists in
//! the PIM are written, products asked in batches.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config_arg, text, Env, EnvOptions};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_assets_of_existing_products_are_synced() {
    let env = Env::start(EnvOptions {
        assets: 300,
        ..EnvOptions::default()
    })
    .await;
    let path = env.config("pf.toml", "", "", "5m");
    let toml = std::fs::read_to_string(&path).unwrap();
    let toml = toml.replace(
        "schedule = \"5m\"",
        "schedule = \"5m\"\nproduct_filter = { sku_from = \"/metadata/sku\" }",
    );
    std::fs::write(&path, toml).unwrap();
    let cfg = config_arg(&path);

    let records: Vec<serde_json::Value> = env
        .dam
        .ordered_ids(None, None)
        .iter()
        .map(|id| env.dam.get(id).unwrap())
        .collect();
    let skus: BTreeSet<String> = records
        .iter()
        .map(|r| r["metadata"]["sku"].as_str().unwrap().to_owned())
        .collect();
    let products: BTreeSet<String> = skus.iter().step_by(3).cloned().collect();
    for sku in &products {
        env.akeneo
            .add_product(json!({"values": {"sku": [{"locale": null, "scope": null, "data": sku}]}}))
            .unwrap();
    }
    let expected = records
        .iter()
        .filter(|r| products.contains(r["metadata"]["sku"].as_str().unwrap()))
        .count();

    env.akeneo.reset_log();
    let out = env
        .output(&["sync", "--config", &cfg, "--no-progress"], T)
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.pim_count(), expected);
    assert!(
        text(&out.stdout).contains("skipped"),
        "{}",
        text(&out.stdout)
    );
    let calls = env
        .akeneo
        .request_log()
        .iter()
        .filter(|r| r.path.contains("/products"))
        .count();
    // Two families, each with its own filter and cache, 150 assets each: at most one search
    // per DAM page of ≤ 100 assets, so ≤ 4 here, against ⌈distinct / 100⌉ = 3 overall.
    assert!(
        (1..=4).contains(&calls),
        "{calls} product requests for {} distinct SKUs",
        skus.len()
    );
}
