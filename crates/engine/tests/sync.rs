//! The engine end to end: a DAM emulator and an Akeneo emulator over real HTTP on 127.0.0.1, a
//! SQLite state file, and the real clients in between.

mod support;

use support::{localhost, mapping};

use std::sync::Arc;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::{CompiledMapping, FamilyMapping};
use assetbridge_core::{AssetAttribute, AttributeType, FamilyStructure};
use assetbridge_dam::rest::{DamAuth, Paging, RestDam, RestDamConfig};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, PagingStyle, RunningDam, TAGS};
use assetbridge_engine::{DeletionPolicy, Engine, FamilyPlan, SyncOptions, SyncReport};
use assetbridge_store::Store;
use secrecy::SecretString;
use serde_json::json;

const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];

struct TestApp {
    dam: DamEmulator,
    akeneo: AkeneoEmulator,
    engine: Engine,
    _dam_server: RunningDam,
    _akeneo_server: RunningEmulator,
    _dir: tempfile::TempDir,
}

fn structure(code: &str, prefix: &str) -> FamilyStructure {
    let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
    media.prefix = Some(prefix.to_owned());
    let mut title = AssetAttribute::new("title", AttributeType::Text);
    title.value_per_locale = true;
    let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
    tags.options = Some(TAGS.iter().map(|s| s.to_string()).collect());
    let width = AssetAttribute::new("width", AttributeType::Number);
    let sku = AssetAttribute::new("sku", AttributeType::Text);
    FamilyStructure {
        code: code.to_owned(),
        attribute_as_main_media: Some("media".into()),
        attributes: [media, title, tags, width, sku]
            .into_iter()
            .map(|a| (a.code.clone(), a))
            .collect(),
    }
}

impl TestApp {
    async fn start(assets: usize, paging: PagingStyle, options: SyncOptions) -> Self {
        Self::start_with(assets, paging, options, mapping()).await
    }

    async fn start_with(
        assets: usize,
        paging: PagingStyle,
        options: SyncOptions,
        mapping: FamilyMapping,
    ) -> Self {
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets,
            paging,
            families: FAMILIES.iter().map(|s| s.to_string()).collect(),
            ..DamEmulatorConfig::default()
        });
        let dam_server = dam.serve(localhost()).await.unwrap();
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
        let akeneo_server = akeneo.serve(localhost()).await.unwrap();
        let prefix = format!("{}/files/", dam_server.base_url);
        for f in FAMILIES {
            akeneo.add_asset_family(structure(f, &prefix));
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!(
            "sqlite://{}",
            dir.path().join("state.db").display()
        ))
        .await
        .unwrap();
        let pim = AkeneoClient::new(AkeneoConfig::new(
            akeneo_server.base_url.clone(),
            "assetbridge",
            "secret",
            "admin",
            "admin",
        ))
        .unwrap();
        let mut dam_cfg = RestDamConfig::new(dam_server.base_url.clone());
        dam_cfg.auth = DamAuth::Bearer {
            token: SecretString::from("dam-token".to_owned()),
        };
        dam_cfg.family_param = Some("type".into());
        dam_cfg.paging = match paging {
            PagingStyle::PageNumber => Paging::PageNumber {
                page_param: "page".into(),
                first_page: 1,
            },
            PagingStyle::CursorToken => Paging::Cursor {
                cursor_param: "cursor".into(),
                next_cursor_pointer: "/next_cursor".into(),
            },
            PagingStyle::LinkHeader => Paging::LinkHeader,
        };
        if paging == PagingStyle::LinkHeader {
            dam_cfg.items_pointer = String::new();
        }
        let rest = RestDam::new(dam_cfg).unwrap();
        let mut plans = Vec::new();
        for f in FAMILIES {
            let s = pim.family_structure(f).await.unwrap();
            plans.push(FamilyPlan {
                code: f.to_owned(),
                query: rest.family_query(f),
                mapping: Arc::new(CompiledMapping::new(&mapping, Some(&s)).unwrap()),
            });
        }
        let engine = Engine::new(pim, store, rest, plans, options);
        Self {
            dam,
            akeneo,
            engine,
            _dam_server: dam_server,
            _akeneo_server: akeneo_server,
            _dir: dir,
        }
    }

    async fn sync(&self) -> SyncReport {
        let mut total = SyncReport::default();
        for plan in self.engine.families() {
            total += &self.engine.sync_family(plan, false).await.unwrap();
        }
        total += &self.engine.drain_inbox("test").await.unwrap();
        total
    }

    fn pim_count(&self) -> usize {
        FAMILIES.iter().map(|f| self.akeneo.asset_count(f)).sum()
    }

    /// Write requests Akeneo received, from its own request log.
    fn pim_writes(&self) -> usize {
        self.akeneo
            .request_log()
            .iter()
            .filter(|r| r.method != "GET" && !r.path.contains("/oauth/"))
            .count()
    }
}

#[tokio::test]
async fn full_sync_then_nothing_changed_makes_zero_pim_writes() {
    let app = TestApp::start(1_000, PagingStyle::CursorToken, SyncOptions::default()).await;
    let first = app.sync().await;
    assert_eq!(first.created, 1_000, "{first:?}");
    assert_eq!(first.failed + first.retrying, 0, "{first:?}");
    assert_eq!(app.pim_count(), 1_000);
    // 1 000 assets in two families: ⌈n/100⌉ batch requests per family.
    let writes_first = app.pim_writes();
    assert!(
        writes_first <= 12,
        "{writes_first} write requests for 1 000 assets"
    );

    // The PIM holds what the mapping says.
    let some_id = app.dam.ordered_ids(None, Some("packshots"))[0].clone();
    let record = app.dam.get(&some_id).unwrap();
    let code = assetbridge_core::sanitize_code(&some_id);
    let held = app.akeneo.asset("packshots", &code).expect("asset written");
    assert_eq!(
        held["values"]["title"][0]["data"],
        record["metadata"]["title"]
    );
    assert_eq!(held["values"]["title"][0]["locale"], json!("en_US"));
    assert_eq!(
        held["values"]["width"][0]["data"],
        json!(record["metadata"]["width"].to_string())
    );
    let url = record["url"].as_str().unwrap();
    let media = held["values"]["media"][0]["data"].as_str().unwrap();
    assert!(
        url.ends_with(media) && url.len() > media.len(),
        "prefix stripped: {media}"
    );

    app.akeneo.reset_log();
    let second = app.sync().await;
    assert_eq!(
        app.pim_writes(),
        0,
        "nothing changed, yet the PIM was written to"
    );
    assert_eq!(second.created + second.updated, 0, "{second:?}");
}

#[tokio::test]
async fn incremental_sync_writes_only_what_changed() {
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    let app = TestApp::start(600, PagingStyle::CursorToken, options).await;
    app.sync().await;
    let touched = app.dam.touch(30);
    let added = app.dam.add(7);
    let deleted = app.dam.delete(&touched[..3]);
    app.akeneo.reset_log();
    let r = app.sync().await;
    assert_eq!(r.updated, 27, "{r:?}");
    assert_eq!(r.created, 7, "{r:?}");
    assert_eq!(r.deleted, 3, "{r:?}");
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    // Each family: at most one batch PATCH (≤ 100 changed) plus one DELETE per deleted asset.
    let log = app.akeneo.request_log();
    let patched: usize = log
        .iter()
        .filter(|l| l.method == "PATCH" && l.path.ends_with("/assets"))
        .count();
    assert!(patched <= 2, "{patched} batch requests for 34 changes");
    assert_eq!(log.iter().filter(|l| l.method == "DELETE").count(), 3);
    assert_eq!(app.pim_count(), app.dam.count());
    for id in &deleted {
        let code = assetbridge_core::sanitize_code(id);
        assert!(FAMILIES
            .iter()
            .all(|f| app.akeneo.asset(f, &code).is_none()));
    }
    let _ = added;
}

#[tokio::test]
async fn deletions_are_kept_by_default_and_counted() {
    let app = TestApp::start(200, PagingStyle::CursorToken, SyncOptions::default()).await;
    app.sync().await;
    let gone = app.dam.delete_some(5);
    let r = app.sync().await;
    assert_eq!(r.deleted, 0);
    assert!(r.kept >= 5, "{r:?}");
    assert_eq!(app.pim_count(), 200, "nothing deleted silently");
    assert_eq!(gone.len(), 5);
}

async fn paging_style_syncs_everything(paging: PagingStyle) {
    let app = TestApp::start(450, paging, SyncOptions::default()).await;
    let r = app.sync().await;
    assert_eq!(r.created, 450, "{paging:?}: {r:?}");
    assert_eq!(app.pim_count(), 450, "{paging:?}");
    app.dam.touch(12);
    let r2 = app.sync().await;
    assert_eq!(r2.updated, 12, "{paging:?}: {r2:?}");
}

#[tokio::test]
async fn page_number_paging() {
    paging_style_syncs_everything(PagingStyle::PageNumber).await;
}

#[tokio::test]
async fn cursor_paging() {
    paging_style_syncs_everything(PagingStyle::CursorToken).await;
}

#[tokio::test]
async fn link_header_paging() {
    paging_style_syncs_everything(PagingStyle::LinkHeader).await;
}

#[tokio::test]
async fn codes_that_sanitise_alike_stay_distinct() {
    // Asset codes from the file name: `a-b.jpg` and `a b.jpg` both sanitise to `a_b_jpg`, which
    // is also a third asset's (valid) name: they must remain three assets.
    let mut m = mapping();
    m.asset_code = "{{ name }}".into();
    let app = TestApp::start_with(3, PagingStyle::CursorToken, SyncOptions::default(), m).await;
    let ids = app.dam.ordered_ids(None, None);
    for (id, name) in ids.iter().zip(["a-b.jpg", "a b.jpg", "a_b_jpg"]) {
        app.dam.set(id, &json!({ "name": name })).unwrap();
    }
    let r = app.sync().await;
    assert_eq!(r.created, 3, "{r:?}");
    assert_eq!(app.pim_count(), 3);
    let codes: Vec<String> = FAMILIES
        .iter()
        .flat_map(|f| app.akeneo.assets(f))
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes.contains(&"a_b_jpg".to_owned()), "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| c.starts_with("a_b_jpg_")).count(),
        2,
        "{codes:?}"
    );
    let unique: std::collections::BTreeSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), 3, "{codes:?}");
}

#[tokio::test]
async fn a_code_two_dam_assets_share_is_deleted_with_the_last_of_them() {
    // Asset codes from the file name: two DAM assets named alike are one PIM asset. Deleting
    // one of them in the DAM must not delete the PIM asset the other is still written as.
    let mut m = mapping();
    m.asset_code = "{{ name }}".into();
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    let app = TestApp::start_with(12, PagingStyle::CursorToken, options, m).await;
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    assert!(ids.len() >= 4, "{ids:?}");
    // The first two in one page (one batch), the fourth written by a later sync.
    for (id, name) in ids.iter().zip(["same_jpg", "same_jpg", "other_jpg"]) {
        app.dam.set(id, &json!({ "name": name })).unwrap();
    }
    let r = app.sync().await;
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    assert!(app.akeneo.asset("packshots", "same_jpg").is_some());
    app.dam
        .set(&ids[3], &json!({ "name": "same_jpg" }))
        .unwrap();
    app.sync().await;

    let before = app.pim_count();
    app.dam.delete(&ids[..1]);
    let r = app.sync().await;
    assert_eq!((r.deleted, r.kept), (0, 1), "{r:?}");
    assert!(app.akeneo.asset("packshots", "same_jpg").is_some());
    app.dam.delete(&ids[3..4]);
    let r = app.sync().await;
    // Kept: this one, and the first one's tombstone read again (the poll's overlap window).
    assert_eq!((r.deleted, r.kept), (0, 2), "{r:?}");
    assert!(app.akeneo.asset("packshots", "same_jpg").is_some());
    assert_eq!(app.pim_count(), before);
    // The last DAM asset written as `same_jpg` goes: so does the PIM asset.
    app.dam.delete(&ids[1..2]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(app.akeneo.asset("packshots", "same_jpg").is_none());
    assert!(app.akeneo.asset("packshots", "other_jpg").is_some());
    assert_eq!(app.pim_count(), before - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sharers_deleted_at_once_in_different_batches_delete_their_pim_asset() {
    // Each batch sees the other DAM asset still written as the code: without a second look
    // once its own code is forgotten, both would keep the PIM asset, then held by nobody.
    for round in 0..5 {
        let mut m = mapping();
        m.asset_code = "{{ name }}".into();
        let options = SyncOptions {
            deletions: DeletionPolicy::Delete,
            ..SyncOptions::default()
        };
        let app = TestApp::start_with(6, PagingStyle::CursorToken, options, m).await;
        let ids = app.dam.ordered_ids(None, Some("packshots"));
        for id in &ids[..2] {
            app.dam.set(id, &json!({ "name": "shared_jpg" })).unwrap();
        }
        app.sync().await;
        assert!(app.akeneo.asset("packshots", "shared_jpg").is_some());
        let plan = app.engine.families()[0].clone();
        let delete = |id: &str| {
            vec![assetbridge_engine::WriteItem::fresh(
                assetbridge_core::AssetChange {
                    family: plan.code.clone(),
                    event_id: None,
                    source: "test".into(),
                    kind: assetbridge_core::ChangeKind::Delete {
                        dam_id: id.to_owned(),
                        deleted_at: None,
                    },
                },
            )]
        };
        let (a, b) = tokio::join!(
            app.engine.write_changes(&plan, delete(&ids[0])),
            app.engine.write_changes(&plan, delete(&ids[1]))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.deleted + b.deleted >= 1, "round {round}: {a:?} {b:?}");
        assert!(
            app.akeneo.asset("packshots", "shared_jpg").is_none(),
            "round {round}: {a:?} {b:?}"
        );
    }
}

/// An app whose asset codes come from the file name, with `deletions = "delete"`, and one
/// `packshots` asset named `name`: (app, its DAM id).
async fn named_asset_app(name: &str) -> (TestApp, String) {
    let mut m = mapping();
    m.asset_code = "{{ name }}".into();
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        // Retries due soon (0.75–1.25 s for a first retry): the tests wait for them, and a
        // sync on a loaded machine does not outlast the first one's backoff.
        retry_base: std::time::Duration::from_secs(1),
        ..SyncOptions::default()
    };
    let app = TestApp::start_with(6, PagingStyle::CursorToken, options, m).await;
    let id = app.dam.ordered_ids(None, Some("packshots"))[0].clone();
    app.dam.set(&id, &json!({ "name": name })).unwrap();
    let r = app.sync().await;
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    assert!(app.akeneo.asset("packshots", name).is_some());
    (app, id)
}

#[tokio::test]
async fn a_renamed_asset_replaces_its_former_pim_asset() {
    let (app, id) = named_asset_app("before_jpg").await;
    let count = app.pim_count();
    app.dam.set(&id, &json!({ "name": "after_jpg" })).unwrap();
    let r = app.sync().await;
    // The new code written by the poll, the former one deleted by the inbox's drain.
    assert_eq!((r.created, r.deleted), (1, 1), "{r:?}");
    assert!(app.akeneo.asset("packshots", "after_jpg").is_some());
    assert!(app.akeneo.asset("packshots", "before_jpg").is_none());
    assert_eq!(app.pim_count(), count);
    // And back again.
    app.dam.set(&id, &json!({ "name": "before_jpg" })).unwrap();
    let r = app.sync().await;
    assert_eq!((r.created, r.deleted), (1, 1), "{r:?}");
    assert!(app.akeneo.asset("packshots", "before_jpg").is_some());
    assert!(app.akeneo.asset("packshots", "after_jpg").is_none());
    assert_eq!(app.pim_count(), count);
    // The DAM id maps to its current code only: deleting it deletes that one.
    app.dam.delete(&[&id]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert_eq!(app.pim_count(), count - 1);
}

/// Akeneo compares asset codes without regard to case: a file name whose capitals are fixed
/// gives the same PIM asset under another spelling. Retiring the "former" code would delete
/// the asset itself (the emulator, like Akeneo, deletes `Before_jpg` on `DELETE before_jpg`).
#[tokio::test]
async fn a_code_that_changes_only_in_case_is_the_same_pim_asset() {
    let (app, id) = named_asset_app("Before_jpg").await;
    let count = app.pim_count();
    let tags = app.dam.get(&id).unwrap()["metadata"]["tags"].clone();
    let pim_tags = |app: &TestApp| {
        app.akeneo
            .asset("packshots", "before_jpg")
            .expect("still there")["values"]["tags"][0]["data"]
            .clone()
    };
    let before = pim_tags(&app);
    // Respelt, and retagged.
    app.dam
        .set(
            &id,
            &json!({ "name": "before_jpg", "metadata": { "tags": [TAGS[1]] } }),
        )
        .unwrap();
    let r = app.sync().await;
    assert_eq!((r.updated, r.created, r.deleted), (1, 0, 0), "{r:?}");
    let inbox = app.engine.store().backlog().await.unwrap();
    assert_eq!(
        inbox.pending + inbox.in_flight,
        0,
        "nothing to retire: {inbox:?}"
    );
    let asset = app
        .akeneo
        .asset("packshots", "before_jpg")
        .expect("still there");
    assert_eq!(
        asset["code"], "Before_jpg",
        "the spelling it was created with"
    );
    assert_eq!(pim_tags(&app), json!([TAGS[1]]));
    assert_eq!(app.pim_count(), count);
    // Back to the first spelling and tags: the same content as first written under that
    // spelling, but not the PIM's now. Written (that spelling's hash was forgotten), not taken
    // for unchanged.
    app.dam
        .set(
            &id,
            &json!({ "name": "Before_jpg", "metadata": { "tags": tags } }),
        )
        .unwrap();
    let r = app.sync().await;
    assert_eq!((r.updated, r.deleted), (1, 0), "{r:?}");
    assert_eq!(pim_tags(&app), before);
    assert_eq!(app.pim_count(), count);
    // The DAM id maps to the current spelling: deleting the asset deletes the PIM asset.
    app.dam.delete(&[&id]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(app.akeneo.asset("packshots", "before_jpg").is_none());
    assert_eq!(app.pim_count(), count - 1);
}

#[tokio::test]
async fn an_older_version_written_late_does_not_retire_the_current_asset() {
    use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
    use assetbridge_engine::WriteItem;
    let (app, id) = named_asset_app("before_jpg").await;
    // The version named `before_jpg`, as a late event or a replayed dead letter carries it.
    let old_record = app.dam.get(&id).unwrap();
    let old_at = chrono::Utc::now() - chrono::Duration::hours(1);
    app.dam.set(&id, &json!({ "name": "after_jpg" })).unwrap();
    let r = app.sync().await;
    assert_eq!((r.created, r.deleted), (1, 1), "{r:?}");
    let count = app.pim_count();

    let plan = app.engine.families()[0].clone();
    let late = WriteItem::fresh(AssetChange {
        family: plan.code.clone(),
        event_id: None,
        source: "test".into(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: id.clone(),
                updated_at: old_at,
                record: old_record,
            },
        },
    });
    app.engine.write_changes(&plan, vec![late]).await.unwrap();
    let r = app.engine.drain_inbox("test").await.unwrap();
    // The DAM says the asset is `after_jpg`: that stays, and what the late write created goes.
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(app.akeneo.asset("packshots", "after_jpg").is_some());
    assert!(app.akeneo.asset("packshots", "before_jpg").is_none());
    assert_eq!(app.pim_count(), count);
    // The DAM id is recorded under its current code again: its deletion deletes that.
    app.dam.delete(&[&id]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert!(app.akeneo.asset("packshots", "after_jpg").is_none());
}

#[tokio::test]
async fn a_rename_whose_write_is_refused_keeps_the_former_asset_until_it_is_written() {
    let (app, id) = named_asset_app("before_jpg").await;
    // Renamed, with a tag the PIM does not know: the new code is refused.
    app.dam
        .set(
            &id,
            &json!({ "name": "after_jpg", "metadata": { "tags": ["no_such_tag"] } }),
        )
        .unwrap();
    let r = app.sync().await;
    // Refused, and the former code's retirement waits for the new code (a retry).
    assert_eq!((r.failed, r.deleted, r.retrying), (1, 0, 1), "{r:?}");
    assert!(app.akeneo.asset("packshots", "before_jpg").is_some());
    assert!(app.akeneo.asset("packshots", "after_jpg").is_none());
    // Fixed in the DAM: the new code is written, and the retirement (due by now) comes
    // through.
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    app.dam
        .set(&id, &json!({ "metadata": { "tags": [TAGS[0]] } }))
        .unwrap();
    let r = app.sync().await;
    assert!(
        app.akeneo.asset("packshots", "after_jpg").is_some(),
        "{r:?} {:?}",
        app.engine.store().recent_dead_letters(5).await.unwrap()
    );
    assert_eq!((r.created, r.deleted), (1, 1), "{r:?}");
    assert!(app.akeneo.asset("packshots", "before_jpg").is_none());
}

/// A dead letter of `id`'s version `record` (as it was an hour ago), as a failed write of it
/// left it; then `dlq retry` of every dead letter, and the inbox drained.
async fn replay_dead_letter(
    app: &TestApp,
    id: &str,
    record: Option<serde_json::Value>,
) -> SyncReport {
    use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
    let kind = match record {
        Some(record) => ChangeKind::Upsert {
            asset: DamAsset {
                id: id.to_owned(),
                updated_at: chrono::Utc::now() - chrono::Duration::hours(1),
                record,
            },
        },
        None => ChangeKind::Delete {
            dam_id: id.to_owned(),
            deleted_at: None,
        },
    };
    let change = AssetChange {
        family: "packshots".into(),
        event_id: None,
        source: "webhook".into(),
        kind,
    };
    let store = app.engine.store();
    let why = assetbridge_store::DeadLetterReason::new("retries_exhausted", "the PIM was down");
    store.add_dead_letter(&change, &why).await.unwrap();
    let moved = store
        .retry_dead_letters(&assetbridge_store::DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(moved, 1);
    app.engine.drain_inbox("test").await.unwrap()
}

/// The usual replay: a version failed and was dead-lettered, the asset was changed (fixed) in
/// the DAM and a poll wrote the new version, then someone ran `dlq retry`. The replay must not
/// put the old version back: it writes what the DAM has now (here: what the PIM already has).
#[tokio::test]
async fn a_replayed_dead_letter_does_not_put_an_older_version_back() {
    let (app, id) = named_asset_app("chair_jpg").await;
    let old = app.dam.get(&id).unwrap();
    app.dam
        .set(&id, &json!({ "metadata": { "tags": [TAGS[2]] } }))
        .unwrap();
    let r = app.sync().await;
    assert_eq!(r.updated, 1, "{r:?}");
    let tags =
        || app.akeneo.asset("packshots", "chair_jpg").unwrap()["values"]["tags"][0]["data"].clone();
    assert_eq!(tags(), json!([TAGS[2]]));

    let r = replay_dead_letter(&app, &id, Some(old)).await;
    assert_eq!((r.seen, r.unchanged, r.updated), (1, 1, 0), "{r:?}");
    assert_eq!(tags(), json!([TAGS[2]]), "the newer version stays");
    let store = app.engine.store();
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
    let inbox = store.backlog().await.unwrap();
    assert_eq!(inbox.pending + inbox.in_flight, 0, "{inbox:?}");

    // A replay whose asset changed since is written as it is now.
    let old = app.dam.get(&id).unwrap();
    app.dam
        .set(&id, &json!({ "metadata": { "tags": [TAGS[3]] } }))
        .unwrap();
    let r = replay_dead_letter(&app, &id, Some(old)).await;
    assert_eq!(r.updated, 1, "{r:?}");
    assert_eq!(tags(), json!([TAGS[3]]));
}

/// A replayed write of an asset the DAM deleted since does not bring it back (it is a dead
/// letter again, saying why); a replayed deletion of an asset that is in the DAM again writes it
/// rather than delete it.
#[tokio::test]
async fn a_replay_follows_the_dam_s_deletions_and_returns() {
    let (app, id) = named_asset_app("chair_jpg").await;
    let record = app.dam.get(&id).unwrap();
    let count = app.pim_count();

    // A deletion replayed while the asset is in the DAM: written (here unchanged), not deleted.
    let r = replay_dead_letter(&app, &id, None).await;
    assert_eq!((r.deleted, r.unchanged), (0, 1), "{r:?}");
    assert_eq!(app.pim_count(), count);

    app.dam.delete(&[&id]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 1, "{r:?}");
    assert_eq!(app.pim_count(), count - 1);
    let r = replay_dead_letter(&app, &id, Some(record)).await;
    assert_eq!((r.seen, r.failed, r.created), (1, 1, 0), "{r:?}");
    assert!(app.akeneo.asset("packshots", "chair_jpg").is_none());
    assert_eq!(app.pim_count(), count - 1);
    let store = app.engine.store();
    let inbox = store.backlog().await.unwrap();
    assert_eq!(inbox.pending + inbox.in_flight, 0, "{inbox:?}");
    let dead = store
        .dead_letters(&assetbridge_store::DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.kind, "not_in_dam");
    assert!(
        dead[0].reason.message.contains("no longer in the DAM"),
        "{:?}",
        dead[0].reason
    );
}

/// A replay whose asset cannot be read from the DAM waits as a retry; nothing is lost.
#[tokio::test]
async fn a_replay_the_dam_cannot_answer_waits_as_a_retry() {
    let (app, id) = named_asset_app("chair_jpg").await;
    let old = app.dam.get(&id).unwrap();
    app.dam.fail_next(&[503; 20]);
    let r = replay_dead_letter(&app, &id, Some(old)).await;
    assert_eq!((r.seen, r.retrying, r.updated), (1, 1, 0), "{r:?}");
    let inbox = app.engine.store().backlog().await.unwrap();
    assert_eq!(inbox.pending, 1, "{inbox:?}");
    assert_eq!(app.engine.store().dead_letter_count().await.unwrap(), 0);
}

#[tokio::test]
async fn rejected_assets_go_to_dead_letters_and_the_rest_is_written() {
    // `width` must be numeric: make three assets' width text; the PIM would refuse them, the
    // mapping already does, naming the attribute.
    let app = TestApp::start(120, PagingStyle::CursorToken, SyncOptions::default()).await;
    let ids = app.dam.ordered_ids(None, None);
    for id in &ids[..3] {
        app.dam
            .set(id, &json!({"metadata": {"width": "very wide"}}))
            .unwrap();
    }
    let r = app.sync().await;
    assert_eq!(r.created, 117, "{r:?}");
    assert_eq!(r.failed, 3, "{r:?}");
    let dead = app.engine.store().dead_letter_count().await.unwrap();
    assert_eq!(dead, 3);
}

#[tokio::test]
async fn tags_emptied_in_the_dam_are_emptied_in_the_pim() {
    // Akeneo erases a multiple-options value with `[]` and refuses `null` for it (422).
    let app = TestApp::start(4, PagingStyle::CursorToken, SyncOptions::default()).await;
    app.sync().await;
    let id = app.dam.ordered_ids(None, Some("packshots"))[0].clone();
    let code = assetbridge_core::sanitize_code(&id);
    let held = app.akeneo.asset("packshots", &code).unwrap();
    assert!(!held["values"]["tags"][0]["data"]
        .as_array()
        .unwrap()
        .is_empty());
    app.dam
        .set(&id, &json!({ "metadata": { "tags": [] } }))
        .unwrap();
    let r = app.sync().await;
    assert_eq!((r.updated, r.failed), (1, 0), "{r:?}");
    let held = app.akeneo.asset("packshots", &code).unwrap();
    assert!(held["values"].get("tags").is_none(), "{held}");
}
