//! The product filter: only assets whose product exists in the PIM are synchronised, existence
//! asked in batches of 100 identifiers and cached.

mod support;

use std::collections::BTreeSet;

use assetbridge_engine::{ProductFilterConfig, SyncOptions};
use serde_json::json;
use support::{TestApp, FAMILY};

fn filter(sku_from: &str, sku_regex: Option<&str>) -> ProductFilterConfig {
    ProductFilterConfig {
        sku_from: sku_from.into(),
        sku_regex: sku_regex.map(str::to_owned),
        attribute: "sku".into(),
        cache_ttl_secs: 300,
        cache_max: 10_000,
    }
}

/// Product search requests the PIM received.
fn product_calls(app: &TestApp) -> usize {
    app.pim_requests()
        .iter()
        .filter(|r| r.path.contains("/products"))
        .count()
}

async fn app_with(assets: usize, f: ProductFilterConfig) -> TestApp {
    let mut app = TestApp::start(assets, SyncOptions::default()).await;
    let filter = f.compile().unwrap();
    app.engine = app.engine.clone().with_product_filter(FAMILY, filter);
    app
}

#[tokio::test]
async fn only_assets_with_an_existing_product_are_written_and_products_are_asked_in_batches() {
    let app = app_with(400, filter("/metadata/sku", None)).await;
    let ids = app.dam.ordered_ids(None, None);
    let sku_of = |id: &String| {
        app.dam.get(id).unwrap()["metadata"]["sku"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let distinct: BTreeSet<String> = ids.iter().map(sku_of).collect();
    // Every other SKU is a product in the PIM.
    let products: BTreeSet<String> = distinct.iter().step_by(2).cloned().collect();
    for sku in &products {
        app.akeneo
            .add_product(json!({"values": {"sku": [{"locale": null, "scope": null, "data": sku}]}}))
            .unwrap();
    }
    let expected: usize = ids.iter().filter(|i| products.contains(&sku_of(i))).count();

    app.akeneo.reset_log();
    let r = app.sync().await;
    assert_eq!(r.created as usize, expected, "{r:?}");
    assert_eq!(r.skipped as usize, ids.len() - expected, "{r:?}");
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    assert_eq!(app.akeneo.asset_count(FAMILY), expected);
    for a in app.akeneo.assets(FAMILY) {
        let sku = a["values"]["sku"][0]["data"].as_str().unwrap();
        assert!(products.contains(sku), "{sku} has no product");
    }
    let calls = product_calls(&app);
    assert!(
        calls <= distinct.len().div_ceil(100),
        "{calls} product requests for {} distinct SKUs",
        distinct.len()
    );
    assert!(calls >= 1);

    // A full pass within the cache's lifetime asks the PIM nothing about products.
    app.akeneo.reset_log();
    let plan = app.engine.families()[0].clone();
    let again = app.engine.sync_family(&plan, true).await.unwrap();
    assert_eq!(again.skipped as usize, ids.len() - expected, "{again:?}");
    assert_eq!(product_calls(&app), 0, "answers are cached");
    assert_eq!(app.pim_writes(), 0);
}

#[tokio::test]
async fn a_sku_from_a_regex_over_the_file_name_and_a_bad_filter() {
    // The DAM emulator names files `SKU-000123_front.jpg`.
    let app = app_with(60, filter("/name", Some(r"^(SKU-\d+)_"))).await;
    let ids = app.dam.ordered_ids(None, None);
    let first = app.dam.get(&ids[0]).unwrap();
    let sku = first["metadata"]["sku"].as_str().unwrap().to_owned();
    app.akeneo
        .add_product(json!({"values": {"sku": [{"locale": null, "scope": null, "data": sku}]}}))
        .unwrap();
    let with_it = ids
        .iter()
        .filter(|i| app.dam.get(i).unwrap()["metadata"]["sku"] == json!(sku))
        .count();
    let r = app.sync().await;
    assert_eq!(r.created as usize, with_it, "{r:?}");
    assert_eq!(r.skipped as usize, ids.len() - with_it, "{r:?}");

    // The dry run says the same, with the reasons.
    let plan = app.engine.families()[0].clone();
    let entries = app.engine.plan_family(&plan, true).await.unwrap();
    let filtered = entries
        .iter()
        .filter(|e| e.reason.starts_with("product filter: no product `SKU-"))
        .count();
    assert_eq!(filtered, ids.len() - with_it, "{entries:#?}");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.reason == "unchanged (content hash)")
            .count(),
        with_it
    );

    let e = filter("metadata/sku", None).compile().unwrap_err();
    assert_eq!(e.0, "sku_from");
    let e = filter("/name", Some("(unclosed")).compile().unwrap_err();
    assert_eq!(e.0, "sku_regex");
}
