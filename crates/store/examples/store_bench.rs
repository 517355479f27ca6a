//! A quick throughput check of the state store.
//!
//! ```text
//! cargo run --release -p assetbridge-store --example store_bench -- [URL] [ASSETS]
//! ```
//!
//! Without a URL it uses a SQLite file in a temporary directory. With a `postgres://` URL the
//! database must exist and should be empty (the benchmark writes family `bench`). Default
//! ASSETS: 100 000. Every call works on a page of 100, as the engine does.

use std::time::{Duration, Instant};

use assetbridge_core::{AssetChange, ChangeKind, ContentHash, DamAsset};
use assetbridge_store::Store;
use chrono::Utc;

const PAGE: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = tempfile::tempdir()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let assets: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let store = Store::open(&url).await?;
    println!(
        "{} store, {assets} assets, pages of {PAGE}",
        store.backend()
    );

    let codes: Vec<String> = (0..assets).map(|i| format!("asset_{i:07}")).collect();

    let start = Instant::now();
    for page in codes.chunks(PAGE) {
        let entries: Vec<(String, ContentHash)> = page
            .iter()
            .map(|c| (c.clone(), ContentHash(format!("{:064x}", c.len() * 7919))))
            .collect();
        store.put_hashes("bench", &entries).await?;
    }
    report("put_hashes", start.elapsed(), assets);

    let start = Instant::now();
    let mut found = 0;
    for page in codes.chunks(PAGE) {
        found += store.hashes("bench", page).await?.len();
    }
    assert_eq!(found, assets);
    report("hashes (lookup)", start.elapsed(), assets);

    let start = Instant::now();
    for page in codes.chunks(PAGE) {
        let entries: Vec<(String, String)> = page
            .iter()
            .map(|c| (format!("dam-{c}"), c.clone()))
            .collect();
        store.put_asset_codes("bench", &entries).await?;
    }
    report("put_asset_codes", start.elapsed(), assets);

    let start = Instant::now();
    for page in codes.chunks(PAGE) {
        let changes: Vec<AssetChange> = page
            .iter()
            .map(|c| AssetChange {
                family: "bench".into(),
                event_id: Some(format!("ev-{c}")),
                source: "bench".into(),
                kind: ChangeKind::Upsert {
                    asset: DamAsset {
                        id: format!("dam-{c}"),
                        updated_at: Utc::now(),
                        record: serde_json::json!({"id": c, "title": "A title", "tags": ["a", "b"]}),
                    },
                },
            })
            .collect();
        store.enqueue(&changes).await?;
    }
    report("enqueue", start.elapsed(), assets);

    let start = Instant::now();
    let mut claimed = 0;
    loop {
        let batch = store.claim("bench", PAGE, Duration::from_secs(60)).await?;
        if batch.is_empty() {
            break;
        }
        claimed += batch.len();
        let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
        store.complete(&ids).await?;
    }
    assert_eq!(claimed, assets);
    report("claim + complete", start.elapsed(), assets);
    Ok(())
}

fn report(what: &str, took: Duration, n: usize) {
    println!(
        "{what:>18}: {:>8.2} s  {:>9.0} assets/s  {:>7.2} ms per page",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / (n / PAGE).max(1) as f64
    );
}
