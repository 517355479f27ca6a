//! Scale probe of the Akeneo emulator: memory per asset and page latency with many assets.
//! `AKENEO_SCALE_ASSETS` (default 20 000) sets the count; the 1 000 000 run is
//! `cargo test -p assetbridge-emulators --release --test akeneo_scale -- --ignored`.

use std::time::{Duration, Instant};

use assetbridge_emulators::akeneo::{demo_structure, AkeneoEmulator, AkeneoEmulatorConfig};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn asset(i: usize) -> Value {
    json!({"code": format!("asset_{i:07}"), "values": {
        "media": [{"locale": null, "channel": null, "data": format!("dir/{i}/image_{i}.jpg")}],
        "title": [{"locale": "en_US", "channel": null, "data": format!("Product picture {i}")},
                  {"locale": "fr_FR", "channel": null, "data": format!("Photo produit {i}")}],
        "tags": [{"locale": null, "channel": null, "data": ["summer", "studio"]}],
        "width": [{"locale": null, "channel": null, "data": "1920"}],
        "height": [{"locale": null, "channel": null, "data": "1080"}],
        "sku": [{"locale": null, "channel": null, "data": format!("SKU-{i}")}]
    }})
}

async fn probe(n: usize) -> (f64, Duration, Duration) {
    let emu = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    for f in demo_structure() {
        emu.add_asset_family(f);
    }
    let before = rss_kib();
    // Half the assets an hour earlier, so that `updated >` selects a small recent slice.
    emu.set_clock(Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()));
    emu.seed_assets("packshots", (0..n - 50).map(asset))
        .unwrap();
    emu.set_clock(Some(Utc.with_ymd_and_hms(2024, 1, 1, 1, 0, 0).unwrap()));
    emu.seed_assets("packshots", (n - 50..n).map(asset))
        .unwrap();
    let per_asset = (rss_kib().saturating_sub(before) * 1024) as f64 / n as f64;
    assert_eq!(emu.asset_count("packshots"), n);

    let running = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::new();
    let tok: Value = http
        .post(format!("{}/api/oauth/v1/token", running.base_url))
        .basic_auth("assetbridge", Some("secret"))
        .json(&json!({"grant_type": "password", "username": "admin", "password": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap();
    // a page deep in the family
    let t = Instant::now();
    let cursor = base64_code(&format!("asset_{:07}", n / 2));
    let page: Value = http
        .get(format!(
            "{}/api/rest/v1/asset-families/packshots/assets?search_after={cursor}",
            running.base_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deep_page = t.elapsed();
    assert_eq!(page["_embedded"]["items"].as_array().unwrap().len(), 100);
    // a poll for the recent slice
    let search: String = url::form_urlencoded::byte_serialize(
        json!({"updated": [{"operator": ">", "value": "2024-01-01T00:30:00Z"}]})
            .to_string()
            .as_bytes(),
    )
    .collect();
    let t = Instant::now();
    let page: Value = http
        .get(format!(
            "{}/api/rest/v1/asset-families/packshots/assets?search={search}",
            running.base_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let poll = t.elapsed();
    assert_eq!(page["_embedded"]["items"].as_array().unwrap().len(), 50);
    (per_asset, deep_page, poll)
}

/// The emulator's cursors are URL-safe base64 of the last code; built here only to jump into
/// the middle of the family (clients must follow `next`).
fn base64_code(code: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(code)
}

#[tokio::test]
async fn memory_and_page_latency() {
    let n = std::env::var("AKENEO_SCALE_ASSETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (per_asset, deep, poll) = probe(n).await;
    eprintln!("{n} assets: {per_asset:.0} B/asset RSS, deep page {deep:?}, updated poll {poll:?}");
    assert!(per_asset < 1500.0, "{per_asset} bytes per asset");
    assert!(poll < Duration::from_secs(2));
}

#[tokio::test]
#[ignore = "a million assets: run in release"]
async fn a_million_assets() {
    let (per_asset, deep, poll) = probe(1_000_000).await;
    eprintln!("1M assets: {per_asset:.0} B/asset RSS, deep page {deep:?}, updated poll {poll:?}");
    assert!(per_asset < 600.0, "{per_asset} bytes per asset");
    assert!(deep < Duration::from_millis(200));
    assert!(poll < Duration::from_millis(200));
}
