//! The dry run (`Engine::plan_family`): lists exactly what a sync would do, and writes nothing.

mod support;

use std::collections::BTreeSet;

use assetbridge_engine::{DeletionPolicy, PlanAction, PlanEntry, SyncOptions};
use serde_json::json;
use support::{TestApp, FAMILY};

fn ids_of(entries: &[PlanEntry], action: PlanAction) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.action == action)
        .map(|e| e.dam_id.clone())
        .collect()
}

#[tokio::test]
async fn a_known_change_set_is_listed_exactly_and_nothing_is_written() {
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    let app = TestApp::start(150, options).await;
    app.sync().await;
    let plan = app.engine.families()[0].clone();
    let cursor = app.engine.cursor(FAMILY).await.unwrap();

    let touched: BTreeSet<String> = app.dam.touch(5).into_iter().collect();
    let added: BTreeSet<String> = app.dam.add(3).into_iter().collect();
    let live: Vec<String> = app
        .dam
        .ordered_ids(None, None)
        .into_iter()
        .filter(|i| !touched.contains(i) && !added.contains(i))
        .collect();
    let deleted: BTreeSet<String> = app.dam.delete(&live[..2]).into_iter().collect();
    // A change the DAM reports that maps to the very same content: a skip.
    let same = live[5].clone();
    let record = app.dam.get(&same).unwrap();
    app.dam
        .set(
            &same,
            &json!({"metadata": {"title": record["metadata"]["title"]}}),
        )
        .unwrap();

    app.akeneo.reset_log();
    let entries = app.engine.plan_family(&plan, false).await.unwrap();
    assert_eq!(
        ids_of(&entries, PlanAction::Update),
        touched,
        "{entries:#?}"
    );
    assert_eq!(ids_of(&entries, PlanAction::Create), added, "{entries:#?}");
    assert_eq!(
        ids_of(&entries, PlanAction::Delete),
        deleted,
        "{entries:#?}"
    );
    let skipped = ids_of(&entries, PlanAction::Skip);
    assert!(skipped.contains(&same), "{entries:#?}");
    assert!(
        entries
            .iter()
            .filter(|e| e.action == PlanAction::Skip)
            .all(|e| e.reason == "unchanged (content hash)"),
        "{entries:#?}"
    );

    // The update's diff: the values the touch changed (the title among them), each old value
    // as the PIM holds it, each new one different.
    for e in entries.iter().filter(|e| e.action == PlanAction::Update) {
        let held = app.akeneo.asset(FAMILY, e.code.as_ref().unwrap()).unwrap();
        let now = app.dam.get(&e.dam_id).unwrap();
        let title = e
            .changes
            .iter()
            .find(|c| c.attribute == "title")
            .unwrap_or_else(|| panic!("no title change: {e:#?}"));
        assert_eq!(title.locale.as_deref(), Some("en_US"));
        assert_eq!(title.new.as_ref(), Some(&now["metadata"]["title"]));
        for c in &e.changes {
            assert!(
                ["title", "tags"].contains(&c.attribute.as_str()),
                "only what the touch changed: {e:#?}"
            );
            let old = held["values"][&c.attribute]
                .as_array()
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v["locale"].as_str() == c.locale.as_deref())
                })
                .map(|v| v["data"].clone());
            assert_eq!(c.old, old, "{e:#?}");
            assert_ne!(c.old, c.new, "{e:#?}");
        }
    }
    // A creation lists every mapped value, none held before.
    for e in entries.iter().filter(|e| e.action == PlanAction::Create) {
        assert!(e.code.is_some(), "{e:#?}");
        assert!(e.changes.len() >= 4, "{e:#?}");
        assert!(e.changes.iter().all(|c| c.old.is_none()), "{e:#?}");
    }

    // Only reads: GETs in the PIM's own log, at most one asset search for 8 codes.
    let log = app.pim_requests();
    assert!(log.iter().all(|l| l.method == "GET"), "{log:#?}");
    assert!(log.len() <= 1, "{} PIM requests", log.len());
    assert_eq!(
        app.engine.cursor(FAMILY).await.unwrap(),
        cursor,
        "cursor moved"
    );
    assert_eq!(app.akeneo.asset_count(FAMILY), 150);

    // The sync that follows does what the plan said.
    let r = app.sync().await;
    assert_eq!(
        (r.created, r.updated, r.deleted),
        (
            added.len() as u64,
            touched.len() as u64,
            deleted.len() as u64
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_plan_with_mark_and_keep_policies() {
    let options = SyncOptions {
        deletions: DeletionPolicy::Mark {
            attribute: "archived".into(),
            value: json!(true),
        },
        ..SyncOptions::default()
    };
    let app = TestApp::start(30, options).await;
    app.sync().await;
    let gone = app.dam.delete_some(2);
    let plan = app.engine.families()[0].clone();
    let entries = app.engine.plan_family(&plan, false).await.unwrap();
    let marked: Vec<&PlanEntry> = entries
        .iter()
        .filter(|e| e.action == PlanAction::Mark)
        .collect();
    assert_eq!(marked.len(), 2, "{entries:#?}");
    assert_eq!(marked[0].changes[0].attribute, "archived");
    assert_eq!(marked[0].changes[0].new, Some(json!(true)));
    app.sync().await;
    // Once marked, the tombstones are skips.
    let entries = app.engine.plan_family(&plan, true).await.unwrap();
    let gone: BTreeSet<String> = gone.into_iter().collect();
    for e in entries.iter().filter(|e| gone.contains(&e.dam_id)) {
        assert_eq!(e.action, PlanAction::Skip, "{e:#?}");
        assert!(e.reason.contains("already marked"), "{e:#?}");
    }
    assert!(
        entries.iter().all(|e| e.action == PlanAction::Skip),
        "{entries:#?}"
    );
}

#[tokio::test]
async fn a_plan_lists_a_rename_s_former_asset_and_keeps_a_shared_code() {
    // Asset codes from the file name (compiled without the structure: rules that need none).
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    let app = TestApp::start_with(4, options, support::codes_from_names).await;
    let ids = app.dam.ordered_ids(None, None);
    for (id, name) in ids
        .iter()
        .zip(["renamed_jpg", "shared_jpg", "shared_jpg", "gone_jpg"])
    {
        app.dam.set(id, &json!({ "name": name })).unwrap();
    }
    app.sync().await;
    app.dam
        .set(&ids[0], &json!({ "name": "new_name_jpg" }))
        .unwrap();
    app.dam.delete(&[&ids[1], &ids[3]]);
    let plan = app.engine.families()[0].clone();
    app.akeneo.reset_log();
    let entries = app.engine.plan_family(&plan, false).await.unwrap();
    let of = |code: &str| -> Vec<&PlanEntry> {
        entries
            .iter()
            .filter(|e| e.code.as_deref() == Some(code))
            .collect()
    };
    // The rename: the new code created, the former deleted.
    assert_eq!(
        of("new_name_jpg")[0].action,
        PlanAction::Create,
        "{entries:#?}"
    );
    let former = of("renamed_jpg");
    assert_eq!(former.len(), 1, "{entries:#?}");
    assert_eq!(
        (former[0].action, former[0].dam_id.as_str()),
        (PlanAction::Delete, ids[0].as_str())
    );
    assert!(former[0].reason.contains("new_name_jpg"), "{former:?}");
    // A deletion of one of two DAM assets written as one code: kept.
    let shared: Vec<_> = of("shared_jpg")
        .into_iter()
        .filter(|e| e.dam_id == ids[1])
        .collect();
    assert_eq!(shared[0].action, PlanAction::Skip, "{entries:#?}");
    assert!(shared[0].reason.contains(&ids[2]), "{shared:?}");
    assert_eq!(of("gone_jpg")[0].action, PlanAction::Delete, "{entries:#?}");
    assert_eq!(app.pim_writes(), 0, "a plan writes nothing");
    // And the sync does what the plan said.
    let r = app.sync().await;
    assert_eq!((r.created, r.deleted, r.kept), (1, 2, 1), "{r:?}");
    assert!(app.akeneo.asset(FAMILY, "shared_jpg").is_some());
    assert!(app.akeneo.asset(FAMILY, "renamed_jpg").is_none());
    assert!(app.akeneo.asset(FAMILY, "gone_jpg").is_none());
}
