//! The REST DAM adapter against the DAM emulator over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use assetbridge_core::ChangeKind;
use assetbridge_dam::rest::{DamAuth, DamError, DamPage, Paging, RestDam, RestDamConfig};
use assetbridge_emulators::dam::{
    DamEmulator, DamEmulatorAuth, DamEmulatorConfig, PagingStyle, RunningDam,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;

async fn serve(assets: usize, paging: PagingStyle) -> RunningDam {
    DamEmulator::new(DamEmulatorConfig {
        assets,
        paging,
        ..Default::default()
    })
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

fn config(dam: &RunningDam, paging: PagingStyle) -> RestDamConfig {
    let mut cfg = RestDamConfig::new(&dam.base_url);
    cfg.auth = DamAuth::Bearer {
        token: "dam-token".into(),
    };
    cfg.retry_backoff_ms = 5;
    cfg.timeout_secs = 5;
    match paging {
        PagingStyle::PageNumber => {
            cfg.paging = Paging::PageNumber {
                page_param: "page".into(),
                first_page: 1,
            };
        }
        PagingStyle::CursorToken => {} // the default
        PagingStyle::LinkHeader => {
            cfg.paging = Paging::LinkHeader;
            cfg.items_pointer = String::new();
        }
    }
    cfg
}

async fn collect(dam: &RestDam, since: Option<DateTime<Utc>>) -> Result<Vec<DamPage>, DamError> {
    let mut pages = Vec::new();
    let mut stream = dam.changes(since, &[]);
    while let Some(page) = stream.next().await {
        pages.push(page?);
    }
    Ok(pages)
}

fn ids(pages: &[DamPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| &p.changes)
        .map(|c| match c {
            ChangeKind::Upsert { asset } => asset.id.clone(),
            ChangeKind::Delete { dam_id, .. } => dam_id.clone(),
        })
        .collect()
}

#[tokio::test]
async fn every_paging_style_lists_all_assets_once_in_order() {
    for style in [
        PagingStyle::PageNumber,
        PagingStyle::CursorToken,
        PagingStyle::LinkHeader,
    ] {
        let dam = serve(1050, style).await;
        let mut cfg = config(&dam, style);
        cfg.page_size = 100;
        let client = RestDam::new(cfg).unwrap();
        let pages = collect(&client, None).await.unwrap();
        assert_eq!(pages.len(), 11, "{style:?}");
        let got = ids(&pages);
        assert_eq!(got, dam.ordered_ids(None, None), "{style:?}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 1050, "{style:?}");
        // Each page's cursor is its last item's (updated_at, id).
        for page in &pages {
            let last = page.last.as_ref().unwrap();
            match page.changes.last().unwrap() {
                ChangeKind::Upsert { asset } => {
                    assert_eq!(
                        (asset.updated_at, &asset.id),
                        (last.updated_at, &last.dam_id)
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Page-number paging stops on the short page: no extra request.
        assert_eq!(dam.stats().list_requests, 11, "{style:?}");
    }
}

#[tokio::test]
async fn since_lists_only_what_changed_and_deletions_come_through() {
    for style in [
        PagingStyle::PageNumber,
        PagingStyle::CursorToken,
        PagingStyle::LinkHeader,
    ] {
        let dam = serve(500, style).await;
        let client = RestDam::new(config(&dam, style)).unwrap();
        let before = dam.now();
        let touched = dam.touch(6);
        let victims = dam.ordered_ids(None, None)[..3].to_vec();
        dam.delete(&victims);
        let deleted_at = dam.now();
        let added = dam.add(2);

        let pages = collect(&client, Some(before + chrono::Duration::seconds(1)))
            .await
            .unwrap();
        let changes: Vec<&ChangeKind> = pages.iter().flat_map(|p| &p.changes).collect();
        assert_eq!(changes.len(), 11, "{style:?}");
        let mut upserted = Vec::new();
        let mut deleted = Vec::new();
        for c in changes {
            match c {
                ChangeKind::Upsert { asset } => {
                    assert_eq!(asset.record["id"], asset.id.as_str());
                    assert!(asset.updated_at > before);
                    upserted.push(asset.id.clone());
                }
                ChangeKind::Delete {
                    dam_id,
                    deleted_at: at,
                } => {
                    assert_eq!(*at, Some(deleted_at));
                    deleted.push(dam_id.clone());
                }
            }
        }
        let mut want_up = touched.clone();
        want_up.extend(added.clone());
        assert_eq!(upserted, want_up, "{style:?}");
        let mut victims_sorted = victims.clone();
        victims_sorted.sort();
        assert_eq!(deleted, victims_sorted, "{style:?}");
        let last = pages.last().unwrap().last.clone().unwrap();
        assert_eq!(last.updated_at, dam.now());
        assert_eq!(&last.dam_id, added.last().unwrap());

        // Nothing changed since the last cursor's time + 1s: no pages at all.
        let none = collect(&client, Some(dam.now() + chrono::Duration::seconds(1)))
            .await
            .unwrap();
        assert!(none.is_empty(), "{style:?}");
    }
}

#[tokio::test]
async fn unix_since_formats_and_family_query() {
    use assetbridge_dam::rest::SinceFormat;
    let dam = serve(400, PagingStyle::CursorToken).await;
    let pivot = dam.get(&dam.ordered_ids(None, None)[200]).unwrap();
    let since: DateTime<Utc> = pivot["updated_at"].as_str().unwrap().parse().unwrap();
    let want = dam.ordered_ids(Some(since), None);
    for format in [
        SinceFormat::Rfc3339,
        SinceFormat::UnixSeconds,
        SinceFormat::UnixMillis,
    ] {
        let mut cfg = config(&dam, PagingStyle::CursorToken);
        cfg.since_format = format;
        cfg.page_size = 37;
        let client = RestDam::new(cfg).unwrap();
        let got = ids(&collect(&client, Some(since)).await.unwrap());
        assert_eq!(got, want, "{format:?}");
    }
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.family_param = Some("type".into());
    let client = RestDam::new(cfg).unwrap();
    let query = client.family_query("lifestyle");
    assert_eq!(query, vec![("type".to_owned(), "lifestyle".to_owned())]);
    let mut stream = client.changes(None, &query);
    let mut n = 0;
    while let Some(page) = stream.next().await {
        for c in page.unwrap().changes {
            let ChangeKind::Upsert { asset } = c else {
                panic!()
            };
            assert_eq!(asset.record["type"], "lifestyle");
            n += 1;
        }
    }
    assert_eq!(n, dam.ordered_ids(None, Some("lifestyle")).len());
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: 250,
        retry_after_secs: 0,
        ..Default::default()
    })
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let client = RestDam::new(config(&dam, PagingStyle::CursorToken)).unwrap();
    dam.fail_next(&[503, 429, 502, 500]);
    let got = ids(&collect(&client, None).await.unwrap());
    assert_eq!(got, dam.ordered_ids(None, None));
    assert_eq!(dam.stats().faults_injected, 4);
    assert_eq!(dam.stats().list_requests, 3 + 4);

    // Retry-After is honoured.
    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: 10,
        retry_after_secs: 1,
        ..Default::default()
    })
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let client = RestDam::new(config(&dam, PagingStyle::CursorToken)).unwrap();
    dam.fail_next(&[429]);
    let start = std::time::Instant::now();
    assert_eq!(ids(&collect(&client, None).await.unwrap()).len(), 10);
    assert!(start.elapsed() >= Duration::from_secs(1));

    // Retries are bounded.
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.max_retries = 2;
    let client = RestDam::new(cfg).unwrap();
    dam.reset_stats();
    dam.fail_next(&[503, 503, 503, 503]);
    let err = collect(&client, None).await.unwrap_err();
    assert!(
        matches!(err, DamError::Transient { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(dam.stats().list_requests, 3);
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let dam = serve(10, PagingStyle::CursorToken).await;
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.timeout_secs = 1;
    cfg.max_retries = 1;
    let client = RestDam::new(cfg).unwrap();
    dam.set_faults(assetbridge_emulators::dam::DamFaults {
        latency: Duration::from_millis(1500),
        ..Default::default()
    });
    let start = std::time::Instant::now();
    let err = collect(&client, None).await.unwrap_err();
    assert!(
        matches!(err, DamError::Transient { attempts: 2, .. }),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn credentials_are_sent_and_refusals_are_not_retried() {
    let dam = serve(30, PagingStyle::CursorToken).await;
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.auth = DamAuth::Bearer {
        token: "wrong".into(),
    };
    let err = collect(&RestDam::new(cfg).unwrap(), None)
        .await
        .unwrap_err();
    match &err {
        DamError::Http {
            status,
            message,
            url,
        } => {
            assert_eq!(*status, 401);
            assert!(message.contains("unauthorized"), "{message}");
            assert!(url.ends_with("/api/assets"), "{url}");
        }
        other => panic!("{other}"),
    }
    assert!(!err.is_transient());
    assert_eq!(dam.stats().list_requests, 1);
    assert_eq!(dam.stats().unauthorized, 1);

    let dam = DamEmulator::new(DamEmulatorConfig {
        assets: 30,
        auth: DamEmulatorAuth::ApiKey {
            header: "X-Api-Key".into(),
            key: "k-123".into(),
        },
        ..Default::default()
    })
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.auth = DamAuth::ApiKey {
        header: "X-Api-Key".into(),
        key: "k-123".into(),
    };
    let client = RestDam::new(cfg).unwrap();
    assert_eq!(ids(&collect(&client, None).await.unwrap()).len(), 30);
    assert_eq!(dam.stats().unauthorized, 0);
}

#[tokio::test]
async fn a_missing_pointer_gives_an_error_naming_it() {
    let dam = serve(30, PagingStyle::CursorToken).await;
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.id_pointer = "/uuid".into();
    let err = collect(&RestDam::new(cfg).unwrap(), None)
        .await
        .unwrap_err();
    match &err {
        DamError::Parse {
            pointer, detail, ..
        } => {
            assert_eq!(pointer, "/uuid");
            assert!(detail.contains("item 1 of page 1"), "{detail}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("`/uuid`"), "{err}");

    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.items_pointer = "/data".into();
    let err = collect(&RestDam::new(cfg).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DamError::Parse { pointer, .. } if pointer == "/data"),
        "{err}"
    );

    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.updated_pointer = "/metadata/modified".into();
    let err = collect(&RestDam::new(cfg).unwrap(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DamError::Parse { pointer, .. } if pointer == "/metadata/modified"),
        "{err}"
    );
    // A nested pointer that exists works.
    let mut cfg = config(&dam, PagingStyle::CursorToken);
    cfg.id_pointer = "/metadata/sku".into();
    cfg.deleted_pointer = None;
    let pages = collect(&RestDam::new(cfg).unwrap(), None).await.unwrap();
    let ChangeKind::Upsert { asset } = &pages[0].changes[0] else {
        panic!()
    };
    assert!(asset.id.starts_with("SKU-"));
}

#[tokio::test]
async fn a_dam_ignoring_the_page_parameter_is_detected() {
    let dam = serve(300, PagingStyle::PageNumber).await;
    let mut cfg = config(&dam, PagingStyle::PageNumber);
    cfg.paging = Paging::PageNumber {
        page_param: "p".into(),
        first_page: 1,
    };
    // Each full page moves `since` up to its last item's time: the page number only matters
    // among items sharing one time, so a listing whose times advance is read whole...
    let pages = collect(&RestDam::new(cfg.clone()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(ids(&pages), dam.ordered_ids(None, None));
    // ... and a page that would have to be followed by page 2 of the same time repeats itself.
    cfg.page_size = 1;
    dam.reset_stats();
    let err = collect(&RestDam::new(cfg).unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DamError::Paging(_)), "{err}");
    assert!(err.to_string().contains("`p`"), "{err}");
    assert_eq!(dam.stats().list_requests, 3);
}

/// Page-number paging is an offset: an asset of a page already read that changes (it moves to
/// the end of the listing) or is deleted moves every later asset up one place, and the first
/// asset of the next page would slide onto the page already read, never listed. Every asset
/// listed when the listing started is listed, once a change happened between two pages.
#[tokio::test]
async fn page_number_paging_skips_nothing_when_an_earlier_asset_changes_between_pages() {
    for change in ["touch", "delete", "purge"] {
        let dam = serve(100, PagingStyle::PageNumber).await;
        let mut cfg = config(&dam, PagingStyle::PageNumber);
        cfg.page_size = 10;
        let client = RestDam::new(cfg).unwrap();
        let before = dam.ordered_ids(None, None);
        let mut stream = client.changes(None, &[]);
        // Two pages read (the second was fetched ahead of the first's consumer): the change
        // lands before the third is asked for.
        let mut got = ids(&[
            stream.next().await.unwrap().unwrap(),
            stream.next().await.unwrap().unwrap(),
        ]);
        match change {
            "touch" => {
                dam.set(&before[0], &serde_json::json!({"name": "changed.jpg"}))
                    .unwrap();
            }
            "delete" => {
                dam.delete(&before[..1]);
            }
            _ => {
                dam.purge(&before[..1]);
            }
        }
        let mut rest = Vec::new();
        while let Some(page) = stream.next().await {
            rest.push(page.unwrap());
        }
        got.extend(ids(&rest));
        let missed: Vec<&String> = before[1..].iter().filter(|id| !got.contains(id)).collect();
        assert!(missed.is_empty(), "{change}: never listed: {missed:?}");
    }
    // Runs of items sharing one time longer than a page are paged within that time: still
    // every item once, in order.
    let dam = serve(200, PagingStyle::PageNumber).await;
    for page_size in [1, 2, 3] {
        let mut cfg = config(&dam, PagingStyle::PageNumber);
        cfg.page_size = page_size;
        let got = ids(&collect(&RestDam::new(cfg).unwrap(), None).await.unwrap());
        assert_eq!(got, dam.ordered_ids(None, None), "page size {page_size}");
    }
}

#[tokio::test]
async fn pages_are_streamed_with_at_most_one_fetched_ahead() {
    let dam = serve(20_000, PagingStyle::CursorToken).await;
    let client = RestDam::new(config(&dam, PagingStyle::CursorToken)).unwrap();
    let mut stream = client.changes(None, &[]);
    // Nothing is requested before the first poll.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(dam.stats().list_requests, 0);

    let mut consumed = 0u64;
    let mut items = 0usize;
    let mut prev = None;
    while let Some(page) = stream.next().await {
        let page = page.unwrap();
        consumed += 1;
        items += page.changes.len();
        assert!(page.changes.len() <= 100);
        // The last cursors strictly increase: pages come in order.
        assert!(prev < page.last);
        prev = page.last.clone();
        if consumed == 1 || consumed == 100 {
            // While the caller holds this page, the adapter fetches one more (it may take a
            // while on a loaded machine)...
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while dam.stats().pages_served < consumed + 1 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no page fetched ahead"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // ... and no more than that.
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(dam.stats().pages_served, consumed + 1);
        }
        assert!(dam.stats().pages_served <= consumed + 1);
    }
    assert_eq!(items, 20_000);
    assert_eq!(consumed, 200);
    assert_eq!(dam.stats().pages_served, 200);

    // Dropping the stream stops fetching.
    dam.reset_stats();
    let mut stream = client.changes(None, &[]);
    stream.next().await.unwrap().unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(dam.stats().list_requests <= 2);
}

#[tokio::test]
async fn get_asset_and_fetch_file() {
    let dam = serve(40, PagingStyle::CursorToken).await;
    let client = RestDam::new(config(&dam, PagingStyle::CursorToken)).unwrap();
    let id = dam.ordered_ids(None, None)[7].clone();
    let asset = client.get_asset(&id).await.unwrap().unwrap();
    assert_eq!(asset.id, id);
    assert_eq!(asset.record, dam.get(&id).unwrap());
    assert_eq!(client.get_asset("unknown-id").await.unwrap(), None);
    dam.delete(std::slice::from_ref(&id));
    assert_eq!(client.get_asset(&id).await.unwrap(), None);

    let other = dam.ordered_ids(None, None)[3].clone();
    let record = dam.get(&other).unwrap();
    dam.fail_next(&[503]);
    let (mut bytes, len) = client
        .fetch_file(record["url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(len, record["size"].as_u64());
    let mut got = Vec::new();
    while let Some(chunk) = bytes.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, dam.file(&other).unwrap());
    // A relative URL is resolved against base_url.
    let path = record["url"].as_str().unwrap().replace(&dam.base_url, "");
    let (_, len) = client.fetch_file(&path).await.unwrap();
    assert_eq!(len, record["size"].as_u64());
    let err = client
        .fetch_file(&format!("{}/files/{other}/nope.jpg", dam.base_url))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DamError::Http { status: 404, .. }), "{err}");
}

/// A listing served by `body`, whatever is asked.
async fn serve_body(body: &'static [u8]) -> String {
    let app = axum::Router::new().fallback(move || async move {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_listing_that_is_not_utf8_or_not_json_is_a_parse_error_naming_why() {
    for (body, why) in [
        (&b"{\"items\": [{\"id\": \"a\xff\"}]}"[..], "not UTF-8"),
        (&b"{\"items\": [{\"id\": \"a\"}"[..], "not JSON"),
    ] {
        let url = serve_body(body).await;
        let mut cfg = RestDamConfig::new(&url);
        cfg.max_retries = 0;
        let err = collect(&RestDam::new(cfg).unwrap(), None)
            .await
            .unwrap_err();
        match &err {
            DamError::Parse { what, detail, .. } => {
                assert_eq!(what, "response body");
                assert!(detail.starts_with(why), "{why}: {detail}");
            }
            other => panic!("{why}: {other}"),
        }
    }
}

/// A DAM whose ids are numbers, ordered numerically within one time (as `ORDER BY updated, id`
/// on an integer column gives): `1, 2, …, 9, 10, …` — not the order of their texts. Page-number
/// paging drops the items it already delivered by id, not by comparing ids as text (which
/// dropped `10`…`89` after `9`, never listed: a reconciliation then deleted them from the PIM).
#[tokio::test]
async fn page_number_paging_lists_every_asset_whatever_the_order_of_ids_within_a_time() {
    use std::collections::HashMap;
    // Ids 1..=150: 1..=120 share one time, 121..=150 a later one.
    let t0 = 1_700_000_000i64;
    let items: Vec<(u32, i64)> = (1..=150u32)
        .map(|id| (id, if id <= 120 { t0 } else { t0 + 60 }))
        .collect();
    let app =
        axum::Router::new().fallback(move |q: axum::extract::Query<HashMap<String, String>>| {
            let items = items.clone();
            async move {
                let since: i64 = q.get("updated_since").map_or(0, |s| s.parse().unwrap());
                let limit: usize = q["limit"].parse().unwrap();
                let page: usize = q["page"].parse().unwrap();
                let listed: Vec<serde_json::Value> = items
                    .iter()
                    .filter(|(_, t)| *t >= since)
                    .skip((page - 1) * limit)
                    .take(limit)
                    .map(|(id, t)| {
                        let at = DateTime::from_timestamp(*t, 0).unwrap().to_rfc3339();
                        serde_json::json!({"id": id, "updated_at": at})
                    })
                    .collect();
                axum::Json(serde_json::json!({ "items": listed }))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    for page_size in [9u32, 10, 50, 100] {
        let mut cfg = RestDamConfig::new(&url);
        cfg.paging = Paging::PageNumber {
            page_param: "page".into(),
            first_page: 1,
        };
        cfg.since_format = assetbridge_dam::rest::SinceFormat::UnixSeconds;
        cfg.page_size = page_size;
        cfg.retry_backoff_ms = 5;
        let pages = collect(&RestDam::new(cfg).unwrap(), None).await.unwrap();
        let listed = ids(&pages);
        let unique: HashSet<&String> = listed.iter().collect();
        assert_eq!(unique.len(), 150, "page size {page_size}: {listed:?}");
        assert_eq!(listed.len(), 150, "page size {page_size}: listed once each");
    }
}
