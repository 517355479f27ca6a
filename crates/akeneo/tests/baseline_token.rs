//! The benchmark baseline switch `fresh_token_per_request` (off by default): with it, every API
//! call gets its own password grant; without it, one grant serves every call.

use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig, ItemOutcome};
use assetbridge_core::{PimAsset, PimValue};
use assetbridge_emulators::akeneo::{demo_structure, AkeneoEmulator, AkeneoEmulatorConfig};
use serde_json::json;

fn assets(n: usize) -> Vec<PimAsset> {
    (0..n)
        .map(|i| {
            let mut a = PimAsset::new(format!("asset_{i}"));
            a.push_value(
                "sku",
                PimValue {
                    locale: None,
                    channel: None,
                    data: json!(format!("SKU-{i}")),
                },
            );
            a
        })
        .collect()
}

/// (token grants, batch requests, API calls other than the token route).
async fn grants_for_ten_single_asset_batches(fresh: bool) -> (u64, u64, u64) {
    let emulator = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
    for f in demo_structure() {
        emulator.add_asset_family(f);
    }
    let running = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config =
        AkeneoConfig::new(&running.base_url, "assetbridge", "secret", "admin", "admin");
    config.timeout_secs = 10;
    config.batch_size = 1;
    config.fresh_token_per_request = fresh;
    let client = AkeneoClient::new(config).unwrap();
    let results = tokio::time::timeout(
        Duration::from_secs(30),
        client.upsert_assets("packshots", &assets(10)),
    )
    .await
    .expect("in time")
    .unwrap();
    assert_eq!(results.len(), 10);
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, ItemOutcome::Created)));
    let c = emulator.counters();
    let api_calls: u64 = c
        .requests
        .iter()
        .filter(|(route, _)| !route.contains("/oauth/"))
        .map(|(_, by_status)| by_status.values().sum::<u64>())
        .sum();
    assert!(
        api_calls > 10,
        "structure reads and ten batches: {api_calls}"
    );
    (c.token_grants, c.asset_batch_requests, api_calls)
}

#[tokio::test]
async fn one_grant_per_call_only_when_asked() {
    // Default: one grant serves the structure reads and the ten batches of one.
    let (grants, batches, _) = grants_for_ten_single_asset_batches(false).await;
    assert_eq!((grants, batches), (1, 10));
    // Baseline: every API call (structure reads and batches) fetches its own token.
    let (grants, batches, calls) = grants_for_ten_single_asset_batches(true).await;
    assert_eq!((grants, batches), (calls, 10));
    assert!(!AkeneoConfig::new("http://x", "a", "b", "c", "d").fresh_token_per_request);
}
