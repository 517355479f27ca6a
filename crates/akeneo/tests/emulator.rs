//! The client against the Akeneo emulator, over real HTTP on 127.0.0.1: token expiry and
//! revocation, the concurrency cap under a 429 storm, 5xx bursts and dropped connections,
//! per-item results, batch splitting, media upload, products.
//!
//! Backoffs are shortened through the client's config (`retry_*_ms`, `max_retry_after_ms`) so
//! the suite runs in seconds.

use std::collections::BTreeSet;
use std::time::Duration;

use assetbridge_akeneo::{
    AkeneoClient, AkeneoConfig, AkeneoError, AssetQuery, DeleteOutcome, ItemOutcome,
};
use assetbridge_core::{PimAsset, PimValue};
use assetbridge_emulators::akeneo::{
    demo_structure, AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator, ROUTE_ASSETS,
    ROUTE_PRODUCTS_UUID, ROUTE_TOKEN,
};
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::{json, Value};

const FAMILY: &str = "packshots";

struct Env {
    emulator: AkeneoEmulator,
    _running: RunningEmulator,
    base_url: String,
}

async fn env(config: AkeneoEmulatorConfig) -> Env {
    let emulator = AkeneoEmulator::new(config);
    for f in demo_structure() {
        emulator.add_asset_family(f);
    }
    let running = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Env {
        base_url: running.base_url.clone(),
        emulator,
        _running: running,
    }
}

impl Env {
    fn config(&self) -> AkeneoConfig {
        let mut c = AkeneoConfig::new(&self.base_url, "assetbridge", "secret", "admin", "admin");
        c.retry_base_ms = 2;
        c.retry_max_ms = 20;
        c.max_retry_after_ms = 20;
        c.timeout_secs = 10;
        c
    }
    fn client(&self) -> AkeneoClient {
        AkeneoClient::new(self.config()).unwrap()
    }
}

fn asset(code: &str, title: &str) -> PimAsset {
    let mut a = PimAsset::new(code);
    a.push_value(
        "title",
        PimValue {
            locale: Some("en_US".into()),
            channel: None,
            data: json!(title),
        },
    );
    a.push_value(
        "width",
        PimValue {
            locale: None,
            channel: None,
            data: json!("640"),
        },
    );
    a
}

fn assets(prefix: &str, n: usize) -> Vec<PimAsset> {
    (0..n)
        .map(|i| asset(&format!("{prefix}_{i}"), &format!("Title {i}")))
        .collect()
}

fn all_succeeded(results: &[assetbridge_akeneo::ItemResult]) {
    for r in results {
        assert!(r.is_success(), "{r:?}");
    }
}

#[tokio::test]
async fn structure_matches_the_emulator() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let client = env.client();
    let s = client.family_structure(FAMILY).await.unwrap();
    assert_eq!(*s, env.emulator.family_structure(FAMILY).unwrap());
    let e = client.family_structure("nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    client
        .ensure_options(FAMILY, "tags", &["neon".into(), "red".into()])
        .await
        .unwrap();
    let s = client.family_structure(FAMILY).await.unwrap();
    assert!(s
        .attribute("tags")
        .unwrap()
        .options
        .as_ref()
        .unwrap()
        .contains("neon"));
    assert!(
        env.emulator.family_structure(FAMILY).unwrap().attributes["tags"]
            .options
            .as_ref()
            .unwrap()
            .contains("neon")
    );
    assert_eq!(client.stats().options_created, 1);
    let e = client
        .ensure_options(FAMILY, "tags", &["not-valid".into()])
        .await
        .unwrap_err();
    assert!(matches!(e, AkeneoError::InvalidInput(_)), "{e:?}");
}

#[tokio::test]
async fn an_attribute_added_in_the_pim_is_seen_before_refusing() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let mut config = env.config();
    config.structure_recheck_secs = 0;
    let client = AkeneoClient::new(config).unwrap();
    client.family_structure(FAMILY).await.unwrap();
    // The PIM gains an attribute after the client cached the structure.
    let mut s = env.emulator.family_structure(FAMILY).unwrap();
    s.attributes.insert(
        "photographer".into(),
        assetbridge_core::AssetAttribute::new(
            "photographer",
            assetbridge_core::AttributeType::Text,
        ),
    );
    env.emulator.add_asset_family(s);
    let mut a = asset("new_attr", "x");
    a.push_value(
        "photographer",
        PimValue {
            locale: None,
            channel: None,
            data: json!("Ann"),
        },
    );
    all_succeeded(&client.upsert_assets(FAMILY, &[a]).await.unwrap());
    assert_eq!(client.stats().structure_fetches, 2);
    // A truly unknown attribute is still refused without sending.
    let mut b = asset("bad_attr", "x");
    b.push_value(
        "nope",
        PimValue {
            locale: None,
            channel: None,
            data: json!("x"),
        },
    );
    let r = client.upsert_assets(FAMILY, &[b]).await.unwrap();
    assert!(
        matches!(&r[0].outcome, ItemOutcome::Failed(f) if f.message.contains("`nope` does not exist")),
        "{r:?}"
    );
    assert_eq!(env.emulator.counters().asset_writes, 1);
}

#[tokio::test]
async fn token_expiry_and_revocation_mid_run() {
    let env = env(AkeneoEmulatorConfig {
        token_ttl: Duration::from_secs(1),
        latency: Duration::from_millis(2),
        ..Default::default()
    })
    .await;
    let client = env.client();
    let emulator = env.emulator.clone();
    let revoker = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            emulator.revoke_tokens();
        }
    });
    let batch = assets("t", 300);
    let mut rounds = 0;
    let started = std::time::Instant::now();
    // Keep writing across revocations and past the 1 s expiry.
    while started.elapsed() < Duration::from_millis(1400) {
        let results = client.upsert_assets(FAMILY, &batch).await.unwrap();
        all_succeeded(&results);
        rounds += 1;
    }
    revoker.await.unwrap();
    assert!(rounds >= 2);
    assert_eq!(env.emulator.asset_count(FAMILY), 300);
    let st = client.stats();
    assert!(st.unauthorized_replays >= 1, "{st:?}");
    assert!(st.token_refreshes >= 1, "{st:?}");
    let c = env.emulator.counters();
    assert_eq!(c.token_grants, st.password_grants);
    assert_eq!(c.token_refreshes, st.token_refreshes);
    // No request failed for good: every 401 was followed by a successful replay.
    assert_eq!(
        c.requests_to("PATCH", ROUTE_ASSETS),
        (rounds * 3) as u64 + c.requests_with_status("PATCH", ROUTE_ASSETS, 401)
    );
}

#[tokio::test]
async fn refused_refresh_falls_back_to_the_password_grant() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let client = env.client();
    client.upsert_assets(FAMILY, &assets("r", 5)).await.unwrap();
    env.emulator.revoke_refresh_tokens();
    env.emulator.revoke_tokens();
    all_succeeded(&client.upsert_assets(FAMILY, &assets("r", 5)).await.unwrap());
    let st = client.stats();
    assert_eq!(st.unauthorized_replays, 1);
    assert_eq!(st.refresh_failures, 1);
    assert_eq!(st.password_grants, 2);
    let c = env.emulator.counters();
    assert_eq!(c.token_grants, 2);
    assert_eq!(c.token_failures, 1, "the refused refresh");
}

#[tokio::test]
async fn many_concurrent_callers_one_token_request() {
    let env = env(AkeneoEmulatorConfig {
        latency: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    let client = env.client();
    let calls = (0..40).map(|i| {
        let c = client.clone();
        tokio::spawn(async move { c.get_asset(FAMILY, &format!("none_{i}")).await })
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().unwrap(), None);
    }
    assert_eq!(env.emulator.counters().requests_to("POST", ROUTE_TOKEN), 1);
    assert_eq!(env.emulator.counters().token_grants, 1);
}

#[tokio::test]
async fn a_429_storm_never_exceeds_the_cap_and_finishes() {
    let env = env(AkeneoEmulatorConfig {
        max_concurrency: Some(4),
        rate_429: 0.25,
        latency: Duration::from_millis(3),
        ..Default::default()
    })
    .await;
    let client = env.client();
    // Several callers at once: upserts (10 batches each), reads and structure.
    let mut tasks = Vec::new();
    for k in 0..3 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .upsert_assets(FAMILY, &assets(&format!("s{k}"), 1000))
                .await?;
            assert!(r.iter().all(|r| r.is_success()));
            Ok::<_, AkeneoError>(())
        }));
    }
    for k in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.get_asset(FAMILY, &format!("s0_{k}")).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let c = env.emulator.counters();
    assert!(
        c.max_in_flight <= 4,
        "emulator saw {} in flight",
        c.max_in_flight
    );
    assert_eq!(c.throttled_concurrency, 0, "the cap was never hit");
    assert!(c.throttled > 0, "the storm happened");
    assert_eq!(env.emulator.asset_count(FAMILY), 3000);
    let st = client.stats();
    assert!(st.max_in_flight <= 4);
    assert_eq!(st.rate_limited, c.throttled);
}

#[tokio::test]
async fn bursts_of_5xx_and_dropped_connections_are_retried() {
    let env = env(AkeneoEmulatorConfig {
        rate_5xx: 0.2,
        rate_drop: 0.1,
        ..Default::default()
    })
    .await;
    let mut config = env.config();
    config.max_retries = 12;
    config.batch_size = 10; // 50 batches: faults are certain to happen
    let client = AkeneoClient::new(config).unwrap();
    let batch = assets("f", 500);
    all_succeeded(&client.upsert_assets(FAMILY, &batch).await.unwrap());
    assert_eq!(env.emulator.asset_count(FAMILY), 500);
    let c = env.emulator.counters();
    assert!(
        c.injected_5xx + c.dropped_connections > 0,
        "faults happened"
    );
    assert!(client.stats().retries > 0);
}

#[tokio::test]
async fn persistent_5xx_is_a_transient_error_after_bounded_attempts() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let mut config = env.config();
    config.max_retries = 4;
    let client = AkeneoClient::new(config).unwrap();
    client.family_structure(FAMILY).await.unwrap(); // token + structure before the outage
    env.emulator.reset_counters();
    env.emulator.set_outage(true);
    let e = client
        .upsert_assets(FAMILY, &assets("o", 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AkeneoError::Transient {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_eq!(
        env.emulator.counters().requests_to("PATCH", ROUTE_ASSETS),
        5
    );
    env.emulator.set_outage(false);
    all_succeeded(&client.upsert_assets(FAMILY, &assets("o", 3)).await.unwrap());
}

#[tokio::test]
async fn batch_of_100_with_3_refused_by_the_pim() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let client = env.client();
    let mut batch = assets("b", 100);
    // Valid for the family structure, refused by the PIM: the locale is not activated.
    for i in [10, 50, 99] {
        batch[i].push_value(
            "title",
            PimValue {
                locale: Some("en_AU".into()),
                channel: None,
                data: json!("G'day"),
            },
        );
    }
    let results = client.upsert_assets(FAMILY, &batch).await.unwrap();
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.code, batch[i].code);
        if [10, 50, 99].contains(&i) {
            let ItemOutcome::Failed(f) = &r.outcome else {
                panic!("{r:?}")
            };
            assert_eq!(f.status, 422);
            assert!(f.permanent);
            let errors = f.errors.as_ref().expect("the PIM's errors").to_string();
            assert!(errors.contains("en_AU"), "{f:?}");
        } else {
            assert_eq!(r.outcome, ItemOutcome::Created, "{r:?}");
        }
    }
    let c = env.emulator.counters();
    assert_eq!(c.asset_writes, 97, "97 written exactly once");
    assert_eq!(c.asset_items_rejected, 3);
    assert_eq!(c.asset_batch_requests, 1);
    let patches: Vec<_> = env
        .emulator
        .request_log()
        .into_iter()
        .filter(|r| r.route == ROUTE_ASSETS && r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].items, Some(100));

    // Locally invalid assets never reach the PIM.
    env.emulator.reset_counters();
    let mut bad = asset("bad_width", "x");
    bad.push_value(
        "width",
        PimValue {
            locale: None,
            channel: None,
            data: json!("12.5"),
        },
    );
    let r = client
        .upsert_assets(FAMILY, &[bad, asset("good", "x")])
        .await
        .unwrap();
    assert!(
        matches!(&r[0].outcome, ItemOutcome::Failed(f) if f.message.contains("`width`") && f.message.contains("decimals"))
    );
    assert!(r[1].is_success());
    assert_eq!(env.emulator.counters().asset_writes, 1);
}

#[tokio::test]
async fn oversized_batches_are_split_until_accepted() {
    // The emulator accepts at most 10 assets per batch (413 above), like Akeneo's test setup.
    let env = env(AkeneoEmulatorConfig {
        asset_batch_max: 10,
        ..Default::default()
    })
    .await;
    let client = env.client();
    let batch = assets("z", 100);
    let results = client.upsert_assets(FAMILY, &batch).await.unwrap();
    all_succeeded(&results);
    assert!(results.iter().all(|r| r.outcome == ItemOutcome::Created));
    let c = env.emulator.counters();
    assert_eq!(c.asset_writes, 100, "each asset written exactly once");
    assert!(c.requests_with_status("PATCH", ROUTE_ASSETS, 413) > 0);
    assert!(client.stats().batch_splits > 0);
}

#[tokio::test]
async fn media_file_upload_and_use() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let client = env.client();
    const SIZE: usize = 3 * 1024 * 1024;
    let chunks = futures::stream::iter(
        (0..SIZE / 65536).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; 65536]))),
    );
    let code = client
        .upload_media_file("photos/house.jpg", chunks, Some(SIZE as u64))
        .await
        .unwrap();
    assert!(code.ends_with("_house.jpg"), "{code}");
    let info = env.emulator.media_file(&code).expect("stored");
    assert_eq!(info.size, SIZE as u64);
    assert_eq!(info.original_filename, "house.jpg");
    let mut a = asset("with_file", "x");
    a.push_value(
        "media_file",
        PimValue {
            locale: None,
            channel: None,
            data: json!(code),
        },
    );
    all_succeeded(&client.upsert_assets(FAMILY, &[a]).await.unwrap());
    let got = client
        .get_asset(FAMILY, "with_file")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["values"]["media_file"][0]["data"], json!(code));
}

#[tokio::test]
async fn list_get_delete() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    let client = env.client();
    all_succeeded(
        &client
            .upsert_assets(FAMILY, &assets("l", 250))
            .await
            .unwrap(),
    );
    let all: Vec<Value> = client
        .list_assets(FAMILY, AssetQuery::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    let codes: BTreeSet<String> = all
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 250);
    let typed = assetbridge_akeneo::to_pim_asset(&all[0]).unwrap();
    assert_eq!(typed.values["width"][0].data, json!("640"));

    let wanted: Vec<String> = (0..150)
        .map(|i| format!("l_{i}"))
        .chain(["missing".to_string()])
        .collect();
    let some: Vec<Value> = client
        .list_assets(
            FAMILY,
            AssetQuery {
                codes: Some(wanted),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(some.len(), 150);

    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let none: Vec<Value> = client
        .list_assets(
            FAMILY,
            AssetQuery {
                updated_since: Some(future),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let recent: Vec<Value> = client
        .list_assets(
            FAMILY,
            AssetQuery {
                updated_since: Some(past),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(recent.len(), 250);

    assert!(client.get_asset(FAMILY, "l_1").await.unwrap().is_some());
    assert_eq!(
        client.delete_asset(FAMILY, "l_1").await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        client.delete_asset(FAMILY, "l_1").await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(client.get_asset(FAMILY, "l_1").await.unwrap().is_none());
    assert!(client
        .delete_asset("nofamily", "x")
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(env.emulator.asset_count(FAMILY), 249);
}

#[tokio::test]
async fn products_by_identifiers_and_ndjson_upsert() {
    let env = env(AkeneoEmulatorConfig::default()).await;
    for i in 0..250 {
        env.emulator
            .add_product(json!({"identifier": format!("sku{i}"), "values": {}}))
            .unwrap();
    }
    let client = env.client();
    let mut ids: Vec<String> = (0..250).map(|i| format!("sku{i}")).collect();
    ids.push("unknown_sku".into());
    let products = client.products_by_identifiers(&ids, None).await.unwrap();
    assert_eq!(products.len(), 250);
    let log: Vec<_> = env
        .emulator
        .request_log()
        .into_iter()
        .filter(|r| r.route == ROUTE_PRODUCTS_UUID && r.method == "GET")
        .collect();
    assert_eq!(log.len(), 3, "251 identifiers → 3 searches of ≤ 100");
    assert!(log.iter().all(|r| r.status == Some(200)));

    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let updated: Vec<Value> = client
        .products_updated_since(since)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(updated.len(), 250);

    let mut lines: Vec<Value> = products
        .iter()
        .take(120)
        .map(|p| json!({"uuid": p["uuid"], "values": {"name": [{"locale": "en_US", "scope": null, "data": "Named"}]}}))
        .collect();
    lines[5] = json!({"uuid": products[5]["uuid"], "group": "x"});
    let results = client.upsert_products(&lines).await.unwrap();
    assert_eq!(results.len(), 120);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i);
        if i == 5 {
            let ItemOutcome::Failed(f) = &r.outcome else {
                panic!("{r:?}")
            };
            assert_eq!(f.status, 422);
            assert!(f.message.contains("group"), "{f:?}");
        } else {
            assert_eq!(r.outcome, ItemOutcome::Updated, "{r:?}");
            assert_eq!(
                r.uuid.as_ref(),
                products[i]["uuid"].as_str().map(str::to_owned).as_ref()
            );
        }
    }
    assert_eq!(env.emulator.counters().product_batch_requests, 2);
    let p = env
        .emulator
        .product(products[0]["uuid"].as_str().unwrap())
        .unwrap();
    assert_eq!(p["values"]["name"][0]["data"], "Named");
}
