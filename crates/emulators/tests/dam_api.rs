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
        assert!(
            key(&w[0]) < key(&w[1]),
            "{:?} !< {:?}",
            key(&w[0]),
            key(&w[1])
        );
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
    assert_eq!(
        ts(&r),
        "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    // Both families are used, and some assets share a timestamp (tie-breaks by id).
    let records: Vec<Value> = ids_a.iter().map(|id| a.get(id).unwrap()).collect();
    let families: HashSet<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
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
    let ids: Vec<String> = items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, dam.ordered_ids(None, None));
    assert_eq!(dam.stats().pages_served, 13);
    assert_eq!(dam.stats().items_served, 1234);
}

#[tokio::test]
async fn page_number_and_link_header_list_everything_once_in_order() {
    for style in [PagingStyle::PageNumber, PagingStyle::LinkHeader] {
        let dam = serve(cfg(730, style)).await;
        let (items, pages) = walk(&dam, "limit=50").await;
        assert_eq!(items.len(), 730, "{style:?}");
        assert_eq!(pages, 15, "{style:?}");
        assert_ordered_and_unique(&items);
        let ids: Vec<&str> = items.iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids, dam.ordered_ids(None, None), "{style:?}");
    }
    // Page-number bodies carry the page and the total.
    let dam = serve(cfg(230, PagingStyle::PageNumber)).await;
    let body: Value = get(&format!("{}/api/assets?limit=100&page=3", dam.base_url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["page"], 3);
    assert_eq!(body["total"], 230);
    assert_eq!(body["items"].as_array().unwrap().len(), 30);
    // Link-header listings carry no Link on the last page, and the link keeps the filters.
    let dam = serve(cfg(230, PagingStyle::LinkHeader)).await;
    let resp = get(&format!(
        "{}/api/assets?limit=100&type=packshots",
        dam.base_url
    ))
    .await;
    let link = resp.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("<{}/api/assets?", dam.base_url)),
        "{link}"
    );
    assert!(
        link.contains("type=packshots") && link.contains("limit=100"),
        "{link}"
    );
    let dam = serve(cfg(80, PagingStyle::LinkHeader)).await;
    let resp = get(&format!("{}/api/assets?limit=100", dam.base_url)).await;
    assert!(resp.headers().get("link").is_none());
}

#[tokio::test]
async fn updated_since_is_inclusive_and_type_filters() {
    for style in [
        PagingStyle::PageNumber,
        PagingStyle::CursorToken,
        PagingStyle::LinkHeader,
    ] {
        let dam = serve(cfg(600, style)).await;
        let all = dam.ordered_ids(None, None);
        let pivot = dam.get(&all[300]).unwrap();
        let since = pivot["updated_at"].as_str().unwrap().to_owned();
        let (items, _) = walk(&dam, &format!("limit=40&updated_since={since}")).await;
        assert!(items.iter().all(|v| ts(v) >= ts(&pivot)));
        // Inclusive: assets sharing the pivot's timestamp (before it in id order) too.
        let expected: Vec<&String> = all
            .iter()
            .filter(|id| ts(&dam.get(id).unwrap()) >= ts(&pivot))
            .collect();
        assert_eq!(items.len(), expected.len(), "{style:?}");
        assert_eq!(ts(&items[0]), ts(&pivot));
        assert!(items.len() < 600 && items.len() >= 300);
        // Unix seconds are accepted too.
        let secs = ts(&pivot).timestamp();
        let (by_secs, _) = walk(&dam, &format!("limit=40&updated_since={secs}")).await;
        assert_eq!(by_secs, items, "{style:?}");
        // Family filter.
        let (packshots, _) = walk(&dam, "limit=40&type=packshots").await;
        assert!(packshots.iter().all(|v| v["type"] == "packshots"));
        assert_eq!(
            packshots.len(),
            dam.ordered_ids(None, Some("packshots")).len()
        );
        assert!(!packshots.is_empty() && packshots.len() < 600);
        let (none, _) = walk(&dam, "type=unknown").await;
        assert!(none.is_empty());
    }
}

#[tokio::test]
async fn bad_requests_are_refused_and_limit_is_clamped() {
    let dam = serve(cfg(300, PagingStyle::CursorToken)).await;
    let body: Value = get(&format!("{}/api/assets?limit=1000", dam.base_url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 100);
    for bad in [
        "limit=0",
        "limit=ten",
        "updated_since=yesterday",
        "cursor=garbage",
        "page=2",
        "after=abc",
    ] {
        let resp = get(&format!("{}/api/assets?{bad}", dam.base_url)).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{bad}");
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
    // A `+` offset sent unencoded arrives as a space and is still understood.
    let resp = get(&format!(
        "{}/api/assets?updated_since=2026-01-01T01:00:00+01:00",
        dam.base_url
    ))
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn deletions_are_tombstones_stamped_with_the_deletion_time() {
    let dam = serve(cfg(200, PagingStyle::CursorToken)).await;
    let victims: Vec<String> = dam.ordered_ids(None, None)[10..13].to_vec();
    let before = dam.now();
    let deleted = dam.delete(&victims);
    assert_eq!(deleted.len(), 3);
    assert_eq!(dam.now(), before + chrono::Duration::seconds(1));
    assert_eq!(dam.count(), 197);
    assert_eq!(dam.count_with_tombstones(), 200);
    // Deleting again changes nothing.
    assert!(dam.delete(&victims).is_empty());
    assert_eq!(dam.now(), before + chrono::Duration::seconds(1));

    let (items, _) = walk(&dam, &format!("updated_since={}", dam.now().to_rfc3339())).await;
    assert_eq!(items.len(), 3);
    for item in &items {
        assert_eq!(item["deleted"], json!(true));
        assert_eq!(ts(item), dam.now());
        assert!(victims.contains(&item["id"].as_str().unwrap().to_owned()));
    }
    // The full listing still has 200 entries: the tombstones moved to the end.
    let (all, _) = walk(&dam, "").await;
    assert_eq!(all.len(), 200);
    assert!(all[197..].iter().all(|v| v["deleted"] == json!(true)));
    let resp = get(&format!("{}/api/assets/{}", dam.base_url, victims[0])).await;
    assert_eq!(resp.status(), 404);
    assert!(dam.file(&victims[0]).is_none());
    let n = dam.delete_some(5);
    assert_eq!(n.len(), 5);
    assert_eq!(dam.count(), 192);
}

#[tokio::test]
async fn mutations_advance_the_logical_clock_and_move_assets_to_the_end() {
    let dam = serve(cfg(300, PagingStyle::CursorToken)).await;
    let t0 = dam.now();
    let touched = dam.touch(7);
    assert_eq!(touched.len(), 7);
    let t1 = dam.now();
    assert!(t1 > t0);
    for id in &touched {
        let r = dam.get(id).unwrap();
        assert_eq!(ts(&r), t1);
        assert!(
            r["metadata"]["title"].as_str().unwrap().ends_with("(v2)"),
            "{r}"
        );
    }
    let tail = dam.ordered_ids(Some(t1), None);
    let mut sorted = touched.clone();
    sorted.sort();
    assert_eq!(tail, sorted, "touched assets share one tick, ordered by id");

    let added = dam.add(4);
    let t2 = dam.now();
    assert!(t2 > t1);
    assert_eq!(dam.count(), 304);
    for id in &added {
        let r = dam.get(id).unwrap();
        assert_eq!(ts(&r), t2);
        assert_eq!(r["created_at"], r["updated_at"]);
    }

    let id = &dam.ordered_ids(None, None)[0];
    let r = dam
        .set(
            id,
            &json!({"name": "renamed front.jpg", "metadata": {"title": "New title", "tags": null}}),
        )
        .unwrap();
    let t3 = dam.now();
    assert!(t3 > t2);
    assert_eq!(r["name"], "renamed front.jpg");
    assert_eq!(r["metadata"]["title"], "New title");
    assert!(r["metadata"].get("tags").is_none());
    assert!(r["metadata"]["sku"].is_string(), "other metadata is kept");
    assert!(r["url"].as_str().unwrap().ends_with("/renamed%20front.jpg"));
    assert_eq!(ts(&r), t3);
    let r = dam.set(id, &json!({"type": "lifestyle"})).unwrap();
    assert_eq!(r["type"], "lifestyle");
    assert_eq!(
        dam.ordered_ids(Some(dam.now()), Some("lifestyle")),
        vec![id.clone()]
    );
    assert!(dam
        .set(id, &json!({"updated_at": "2020-01-01T00:00:00Z"}))
        .is_err());
    assert!(dam.set(id, &json!({"type": "nope"})).is_err());
    assert!(dam.set("not-an-id", &json!({})).is_err());
    let before = dam.now();
    assert!(dam.set(id, &json!({"id": "x"})).is_err());
    assert_eq!(dam.now(), before, "a refused patch does not tick");

    dam.advance_clock(Duration::from_secs(3600));
    let later = dam.touch(1);
    assert_eq!(
        ts(&dam.get(&later[0]).unwrap()),
        before + chrono::Duration::seconds(3601)
    );

    // Same seed, same mutations → same results.
    let twin = DamEmulator::new(cfg(300, PagingStyle::CursorToken));
    assert_eq!(twin.touch(7), touched);
    assert_eq!(twin.add(4), added);
}

#[tokio::test]
async fn cursor_paging_is_stable_under_concurrent_changes() {
    let dam = serve(cfg(500, PagingStyle::CursorToken)).await;
    let original: HashSet<String> = dam.ordered_ids(None, None).into_iter().collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut touched = Vec::new();
    loop {
        let url = match &cursor {
            None => format!("{}/api/assets?limit=50", dam.base_url),
            Some(c) => format!("{}/api/assets?limit=50&cursor={c}", dam.base_url),
        };
        let body: Value = get(&url).await.json().await.unwrap();
        for v in body["items"].as_array().unwrap() {
            seen.push(v["id"].as_str().unwrap().to_owned());
        }
        if seen.len() == 100 {
            touched = dam.touch(20); // some already seen, some not yet
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let seen_set: HashSet<String> = seen.iter().cloned().collect();
    assert!(original.is_subset(&seen_set), "nothing is skipped");
    assert_eq!(
        seen.len(),
        500 + touched.iter().filter(|id| seen[..100].contains(id)).count()
    );
    assert_eq!(
        &seen[seen.len() - 20..],
        &touched[..],
        "touched assets come again at the end"
    );
}

#[tokio::test]
async fn files_are_deterministic_and_match_checksum_and_size() {
    use sha1::{Digest, Sha1};
    let dam = serve(cfg(20, PagingStyle::CursorToken)).await;
    let id = &dam.ordered_ids(None, None)[5];
    let r = dam.get(id).unwrap();
    let url = r["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/files/{id}/", dam.base_url)),
        "{url}"
    );
    let resp = get(url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, r["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha1::digest(&bytes)),
        r["checksum"].as_str().unwrap()
    );
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    assert_eq!(dam.file(id).unwrap(), bytes.to_vec());
    let resp = get(&format!("{}/files/{id}/other.jpg", dam.base_url)).await;
    assert_eq!(resp.status(), 404);
    // No credentials, no file.
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(dam.stats().file_requests, 3);
}

#[tokio::test]
async fn auth_is_checked() {
    let dam = serve(cfg(10, PagingStyle::CursorToken)).await;
    let url = format!("{}/api/assets", dam.base_url);
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = client()
        .get(&url)
        .header("Authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(dam.stats().unauthorized, 2);

    let dam = serve(DamEmulatorConfig {
        auth: DamEmulatorAuth::ApiKey {
            header: "X-Api-Key".into(),
            key: "k1".into(),
        },
        ..cfg(10, PagingStyle::CursorToken)
    })
    .await;
    let url = format!("{}/api/assets", dam.base_url);
    assert_eq!(get(&url).await.status(), 401);
    let resp = client()
        .get(&url)
        .header("x-api-key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let dam = serve(DamEmulatorConfig {
        auth: DamEmulatorAuth::None,
        ..cfg(10, PagingStyle::CursorToken)
    })
    .await;
    let resp = client()
        .get(format!("{}/api/assets", dam.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn faults_are_injected_as_configured() {
    let dam = serve(DamEmulatorConfig {
        retry_after_secs: 7,
        ..cfg(10, PagingStyle::CursorToken)
    })
    .await;
    let url = format!("{}/api/assets", dam.base_url);
    dam.fail_next(&[503, 429, 500]);
    assert_eq!(get(&url).await.status(), 503);
    let resp = get(&url).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(get(&url).await.status(), 500);
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(dam.stats().faults_injected, 3);

    dam.set_faults(DamFaults {
        rate_5xx: 1.0,
        ..Default::default()
    });
    assert_eq!(get(&url).await.status(), 503);
    dam.set_faults(DamFaults {
        rate_429: 1.0,
        retry_after_secs: 0,
        ..Default::default()
    });
    let resp = get(&url).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "0");
    // Rates are honoured roughly, and deterministically per seed.
    dam.set_faults(DamFaults {
        rate_5xx: 0.3,
        ..Default::default()
    });
    let mut failed = 0;
    for _ in 0..100 {
        if get(&url).await.status() == 503 {
            failed += 1;
        }
    }
    assert!((15..=45).contains(&failed), "{failed}");
    dam.set_faults(DamFaults {
        latency: Duration::from_millis(150),
        ..Default::default()
    });
    let start = Instant::now();
    assert_eq!(get(&url).await.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(dam.faults().latency, Duration::from_millis(150));
}

#[tokio::test]
async fn control_endpoints_drive_the_emulator_over_http() {
    let dam = serve(cfg(50, PagingStyle::CursorToken)).await;
    let c = client();
    let base = &dam.base_url;
    let body: Value = c
        .post(format!("{base}/_emulator/touch"))
        .json(&json!({"n": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ids"].as_array().unwrap().len(), 3);
    let body: Value = c
        .post(format!("{base}/_emulator/add"))
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let added: Vec<String> = serde_json::from_value(body["ids"].clone()).unwrap();
    assert_eq!(dam.count(), 52);
    let body: Value = c
        .post(format!("{base}/_emulator/delete"))
        .json(&json!({"ids": [added[0]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ids"], json!([added[0]]));
    let body: Value = c
        .post(format!("{base}/_emulator/delete"))
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);
    assert_eq!(dam.count(), 49);
    let resp = c
        .patch(format!("{base}/_emulator/assets/{}", added[1]))
        .json(&json!({"metadata": {"title": "Via HTTP"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(dam.get(&added[1]).unwrap()["metadata"]["title"], "Via HTTP");
    let resp = c
        .patch(format!("{base}/_emulator/assets/{}", added[1]))
        .json(&json!({"checksum": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = c
        .patch(format!("{base}/_emulator/assets/nope"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let now: Value = c
        .get(format!("{base}/_emulator/now"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        now["now"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        dam.now()
    );
    let resp = c
        .put(format!("{base}/_emulator/faults"))
        .json(&json!({"rate_5xx": 1.0, "latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(dam.faults().latency, Duration::from_millis(5));
    assert_eq!(get(&format!("{base}/api/assets")).await.status(), 503);
    dam.set_faults(DamFaults::default());
    let resp = c
        .post(format!("{base}/_emulator/fail_next"))
        .json(&json!({"statuses": [502]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(get(&format!("{base}/api/assets")).await.status(), 502);
    let stats: Value = c
        .get(format!("{base}/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["list_requests"], 2);
    assert_eq!(stats["faults_injected"], 2);
    assert_eq!(stats["control_requests"], 11);
}

#[tokio::test]
async fn a_large_dam_lists_fast_from_anywhere() {
    // Listing cost does not grow with the position: a late page of a big DAM is as cheap as
    // the first (index by (updated_at, id); rank/select for page numbers).
    let emu = DamEmulator::new(DamEmulatorConfig {
        assets: 200_000,
        paging: PagingStyle::PageNumber,
        ..Default::default()
    });
    let dam = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    dam.touch(50_000);
    let start = Instant::now();
    for page in [1, 1000, 1500, 2000] {
        let body: Value = get(&format!(
            "{}/api/assets?limit=100&page={page}",
            dam.base_url
        ))
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 100);
        assert_eq!(body["total"], 200_000);
    }
    let late = dam.ordered_ids(None, None)[150_000].clone();
    let since = dam.get(&late).unwrap()["updated_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let body: Value = get(&format!(
        "{}/api/assets?limit=100&page=3&updated_since={since}",
        dam.base_url
    ))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 100);
    // About 0.1 s on an idle machine (debug build); the bound leaves room for a loaded one.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
