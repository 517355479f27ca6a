//! The DAM emulator over real HTTP: seeding, paging styles, filters, tombstones, mutations,
//! faults, auth, files.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use assetbridge_emulators::dam::{
    DamEmulator, DamEmulatorAuth, DamEmulatorConfig, DamFaults, PagingStyle, RunningDam,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const TOKEN: &str = "Bearer dam-token";

fn cfg(assets: usize, paging: PagingStyle) -> DamEmulatorConfig {
    DamEmulatorConfig {
        assets,
        paging,
        ..Default::default()
    }
}

async fn serve(cfg: DamEmulatorConfig) -> RunningDam {
    DamEmulator::new(cfg)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("Authorization", TOKEN)
        .send()
        .await
        .unwrap()
}

fn ts(v: &Value) -> DateTime<Utc> {
    v["updated_at"].as_str().unwrap().parse().unwrap()
}

fn key(v: &Value) -> (DateTime<Utc>, String) {
    (ts(v), v["id"].as_str().unwrap().to_owned())
}

/// Walks every page of a listing in any style; returns the items in order and the page count.
async fn walk(dam: &RunningDam, query: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let sep = if query.is_empty() { "" } else { "&" };
    match dam.paging() {
        PagingStyle::CursorToken => {
            let mut cursor: Option<String> = None;
            loop {
                let url = match &cursor {
                    None => format!("{}/api/assets?{query}", dam.base_url),
                    Some(c) => format!("{}/api/assets?{query}{sep}cursor={c}", dam.base_url),
                };
                let body: Value = get(&url).await.json().await.unwrap();
                pages += 1;
                items.extend(body["items"].as_array().unwrap().iter().cloned());
                match body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
        }
        PagingStyle::PageNumber => {
            for page in 1.. {
                let url = format!("{}/api/assets?{query}{sep}page={page}", dam.base_url);
                let body: Value = get(&url).await.json().await.unwrap();
                let got = body["items"].as_array().unwrap();
                if got.is_empty() {
                    break;
                }
                pages += 1;
                items.extend(got.iter().cloned());
                if items.len() >= body["total"].as_u64().unwrap() as usize {
                    break;
                }
            }
        }
        PagingStyle::LinkHeader => {
            let mut url = format!("{}/api/assets?{query}", dam.base_url);
            loop {
                let resp = get(&url).await;
                assert_eq!(resp.status(), 200);
                let next = resp
                    .headers()
                    .get("link")
                    .map(|l| l.to_str().unwrap().to_owned());
                let body: Value = resp.json().await.unwrap();
                pages += 1;
                items.extend(body.as_array().unwrap().iter().cloned());
                match next {
                    Some(l) => {
                        assert!(l.ends_with("; rel=\"next\""), "{l}");
                        url = l[1..l.find('>').unwrap()].to_owned();
                    }
                    None => break,
                }
            }
        }
    }
    (items, pages)
}

fn assert_ordered_and_unique(items: &[Value]) {
    for w in items.windows(2) {
        assert!(key(&w[0]) < key(&w[1]), "{:?} !< {:?}", key(&w[0]), key(&w[1]));
    }
    let ids: HashSet<&str> = items.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), items.len());
}

#[test]
fn seeding_is_deterministic_and_records_look_real() {
    let a = DamEmulator::new(cfg(500, PagingStyle::CursorToken));
    let b = DamEmulator::new(cfg(500, PagingStyle::CursorToken));
    let c = DamEmulator::new(DamEmulatorConfig {
        seed: 7,
        ..cfg(500, PagingStyle::CursorToken)
    });
    let ids_a = a.ordered_ids(None, None);
    assert_eq!(ids_a.len(), 500);
    assert_eq!(ids_a, b.ordered_ids(None, None));
    assert_ne!(ids_a, c.ordered_ids(None, None));
    for id in ids_a.iter().take(50) {
        assert_eq!(a.get(id), b.get(id));
    }
    let r = a.get(&ids_a[0]).unwrap();
    let id = r["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
    let name = r["name"].as_str().unwrap();
    assert!(name.starts_with("SKU-") && name.ends_with(".jpg"), "{name}");
    let sku = &r["metadata"]["sku"];
    assert_eq!(sku.as_str().unwrap().len(), 10);
    assert!(name.starts_with(sku.as_str().unwrap()));
    assert!(["packshots", "lifestyle"].contains(&r["type"].as_str().unwrap()));
    assert_eq!(r["deleted"], json!(false));
    assert_eq!(r["checksum"].as_str().unwrap().len(), 40);
    assert!(r["metadata"]["title"].as_str().is_some());
    assert!(r["metadata"]["title_fr"].as_str().is_some());
    assert!(r["metadata"]["tags"].as_array().unwrap().len() >= 2);
    assert!(r["metadata"]["width"].as_u64().unwrap() > 0);
    assert_eq!(ts(&r), "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
    // Both families are used, and some assets share a timestamp (tie-breaks by id).
    let records: Vec<Value> = ids_a.iter().map(|id| a.get(id).unwrap()).collect();
    let families: HashSet<&str> = records.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(families.len(), 2);
    assert!(records.windows(2).any(|w| ts(&w[0]) == ts(&w[1])));
    assert_ordered_and_unique(&records);
    assert_eq!(a.now(), ts(records.last().unwrap()));
}

#[tokio::test]
async fn cursor_paging_lists_everything_once_in_order() {
    let dam = serve(cfg(1234, PagingStyle::CursorToken)).await;
    let (items, pages) = walk(&dam, "limit=100").await;
    assert_eq!(items.len(), 1234);
    assert_eq!(pages, 13);
    assert_ordered_and_unique(&items);
    let ids: Vec<String> = items.iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, dam.ordered_ids(None, None));
    assert_eq!(dam.stats().pages_served, 13);
    assert_eq!(dam.stats().items_served, 1234);
}
