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
                    assert_eq!((asset.updated_at, &asset.id), (last.updated_at, &last.dam_id));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Page-number paging stops on the short page: no extra request.
        assert_eq!(dam.stats().list_requests, 11, "{style:?}");
    }
}
