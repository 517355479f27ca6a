//! `deletions = "mark"`: an asset deleted in the DAM stays in the PIM, marked.

mod support;

use assetbridge_core::{sanitize_code, AssetChange, ChangeKind, DamAsset};
use assetbridge_engine::{DeletionPolicy, SyncOptions, WriteItem};
use serde_json::json;
use support::{TestApp, FAMILY};

fn mark(attribute: &str, value: serde_json::Value) -> SyncOptions {
    SyncOptions {
        deletions: DeletionPolicy::Mark {
            attribute: attribute.into(),
            value,
        },
        ..SyncOptions::default()
    }
}

#[tokio::test]
async fn a_deleted_asset_is_kept_and_marked_once_and_unmarked_when_it_comes_back() {
    let app = TestApp::start(150, mark("archived", json!(true))).await;
    let first = app.sync().await;
    assert_eq!(first.created, 150, "{first:?}");

    let ids = app.dam.ordered_ids(None, None);
    let before = app.dam.get(&ids[0]).unwrap();
    let gone = app.dam.delete(&ids[..4]);
    assert_eq!(gone.len(), 4);
    app.akeneo.reset_log();
    let r = app.sync().await;
    assert_eq!(r.marked, 4, "{r:?}");
    assert_eq!(r.deleted + r.failed + r.retrying, 0, "{r:?}");
    assert_eq!(app.akeneo.asset_count(FAMILY), 150, "nothing deleted");
    let log = app.pim_requests();
    assert_eq!(
        log.iter().filter(|l| l.method == "DELETE").count(),
        0,
        "no DELETE"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.method == "PATCH" && l.path.ends_with("/assets"))
            .count(),
        1,
        "one batch for four marks"
    );
    for id in &gone {
        let held = app.akeneo.asset(FAMILY, &sanitize_code(id)).unwrap();
        assert_eq!(held["values"]["archived"][0]["data"], json!(true), "{held}");
        // The other values are untouched.
        assert!(held["values"]["media"][0]["data"].is_string(), "{held}");
    }
    // A live asset holds no mark.
    let live = app.akeneo.asset(FAMILY, &sanitize_code(&ids[10])).unwrap();
    assert!(live["values"].get("archived").is_none(), "{live}");

    // Re-reading the tombstones (the next poll's overlap, or a full pass) writes nothing.
    app.akeneo.reset_log();
    let plan = app.engine.families()[0].clone();
    let again = app.engine.sync_family(&plan, true).await.unwrap();
    assert_eq!(again.marked, 0, "{again:?}");
    assert_eq!(app.pim_writes(), 0, "a mark is written once");

    // The asset comes back in the DAM (a newer version of it): written in full, mark emptied.
    let back = WriteItem::fresh(AssetChange {
        family: FAMILY.into(),
        event_id: None,
        source: "test".into(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: ids[0].clone(),
                updated_at: chrono::Utc::now(),
                record: before,
            },
        },
    });
    let r = app.engine.write_changes(&plan, vec![back]).await.unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    let held = app.akeneo.asset(FAMILY, &sanitize_code(&ids[0])).unwrap();
    let archived = held["values"].get("archived");
    assert!(
        archived.is_none() || archived.unwrap()[0]["data"].is_null(),
        "mark emptied: {held}"
    );
    // Deleted again: marked again.
    let r = app
        .engine
        .write_changes(
            &plan,
            vec![WriteItem::fresh(AssetChange {
                family: FAMILY.into(),
                event_id: None,
                source: "test".into(),
                kind: ChangeKind::Delete {
                    dam_id: ids[0].clone(),
                    deleted_at: None,
                },
            })],
        )
        .await
        .unwrap();
    assert_eq!(r.marked, 1, "{r:?}");
    let held = app.akeneo.asset(FAMILY, &sanitize_code(&ids[0])).unwrap();
    assert_eq!(held["values"]["archived"][0]["data"], json!(true), "{held}");
}

#[tokio::test]
async fn a_text_mark_and_a_mark_that_does_not_fit() {
    let app = TestApp::start(20, mark("status", json!("deleted_in_dam"))).await;
    app.sync().await;
    let gone = app.dam.delete_some(2);
    let r = app.sync().await;
    assert_eq!(r.marked, 2, "{r:?}");
    for id in &gone {
        let held = app.akeneo.asset(FAMILY, &sanitize_code(id)).unwrap();
        assert_eq!(held["values"]["status"][0]["data"], json!("deleted_in_dam"));
    }
    // Checked against the structure: unknown attribute, localizable attribute, wrong type.
    let s = &app.structure;
    let e = DeletionPolicy::Mark {
        attribute: "nope".into(),
        value: json!(true),
    }
    .check_against(s)
    .unwrap_err();
    assert!(e.contains("`nope`"), "{e}");
    let e = DeletionPolicy::Mark {
        attribute: "title".into(),
        value: json!("x"),
    }
    .check_against(s)
    .unwrap_err();
    assert!(e.contains("localizable"), "{e}");
    let e = DeletionPolicy::Mark {
        attribute: "archived".into(),
        value: json!("yes"),
    }
    .check_against(s)
    .unwrap_err();
    assert!(e.contains("type"), "{e}");
    assert!(DeletionPolicy::Delete.check_against(s).is_ok());
}

#[tokio::test]
async fn a_renamed_asset_s_former_pim_asset_is_marked() {
    // Asset codes from the file name: a rename writes a new PIM asset and marks the former.
    let app =
        TestApp::start_with(3, mark("archived", json!(true)), support::codes_from_names).await;
    let id = app.dam.ordered_ids(None, None)[0].clone();
    app.dam.set(&id, &json!({ "name": "before_jpg" })).unwrap();
    app.sync().await;
    app.dam.set(&id, &json!({ "name": "after_jpg" })).unwrap();
    let r = app.sync().await;
    assert_eq!((r.created, r.marked, r.deleted), (1, 1, 0), "{r:?}");
    let former = app.akeneo.asset(FAMILY, "before_jpg").unwrap();
    assert_eq!(
        former["values"]["archived"][0]["data"],
        json!(true),
        "{former}"
    );
    let current = app.akeneo.asset(FAMILY, "after_jpg").unwrap();
    assert!(current["values"].get("archived").is_none(), "{current}");
}

#[tokio::test]
async fn a_former_code_once_marked_does_not_keep_a_later_deletion_from_being_marked() {
    let app =
        TestApp::start_with(3, mark("archived", json!(true)), support::codes_from_names).await;
    let id = app.dam.ordered_ids(None, None)[0].clone();
    app.dam.set(&id, &json!({ "name": "before_jpg" })).unwrap();
    app.sync().await;
    app.dam.set(&id, &json!({ "name": "after_jpg" })).unwrap();
    let r = app.sync().await;
    assert_eq!((r.created, r.marked), (1, 1), "{r:?}");
    // Renamed back: `before_jpg` written again (its mark emptied), `after_jpg` marked.
    app.dam.set(&id, &json!({ "name": "before_jpg" })).unwrap();
    let r = app.sync().await;
    assert_eq!((r.updated, r.marked), (1, 1), "{r:?}");
    let cur = app.akeneo.asset(FAMILY, "before_jpg").unwrap();
    assert!(cur["values"]["archived"][0]["data"].is_null(), "{cur}");
    // Deleted in the DAM: `before_jpg` is marked (no holder of the former code left to
    // take it for shared).
    app.dam.delete(&[&id]);
    let r = app.sync().await;
    assert_eq!((r.marked, r.kept), (1, 0), "{r:?}");
    let cur = app.akeneo.asset(FAMILY, "before_jpg").unwrap();
    assert_eq!(cur["values"]["archived"][0]["data"], json!(true), "{cur}");
}

#[tokio::test]
async fn a_code_written_over_its_mark_is_marked_again_when_its_new_asset_goes() {
    // `a` is deleted and `x_jpg` marked (a's code entry stays); later `b` takes the name
    // `x_jpg`, and is deleted in turn: `x_jpg` must be marked again, not kept for `a`.
    let app =
        TestApp::start_with(3, mark("archived", json!(true)), support::codes_from_names).await;
    let ids = app.dam.ordered_ids(None, None);
    let (a, b) = (ids[0].clone(), ids[1].clone());
    app.dam.set(&a, &json!({ "name": "x_jpg" })).unwrap();
    app.dam.set(&b, &json!({ "name": "y_jpg" })).unwrap();
    app.sync().await;
    app.dam.delete(&[&a]);
    let r = app.sync().await;
    assert_eq!(r.marked, 1, "{r:?}");
    // Past the poll's overlap window: `a`'s tombstone is not read again.
    app.dam.advance_clock(std::time::Duration::from_secs(3600));
    app.dam.set(&ids[2], &json!({ "title": "later" })).unwrap();
    app.sync().await;
    app.dam.set(&b, &json!({ "name": "x_jpg" })).unwrap();
    app.sync().await;
    let cur = app.akeneo.asset(FAMILY, "x_jpg").unwrap();
    assert!(cur["values"]["archived"][0]["data"].is_null(), "{cur}");
    // `b` deleted, by an event (no poll re-reads `a`'s tombstone).
    let plan = app.engine.families()[0].clone();
    let gone = WriteItem::fresh(AssetChange {
        family: FAMILY.into(),
        event_id: None,
        source: "test".into(),
        kind: ChangeKind::Delete {
            dam_id: b.clone(),
            deleted_at: None,
        },
    });
    let r = app.engine.write_changes(&plan, vec![gone]).await.unwrap();
    assert_eq!((r.marked, r.kept), (1, 0), "{r:?}");
    let cur = app.akeneo.asset(FAMILY, "x_jpg").unwrap();
    assert_eq!(cur["values"]["archived"][0]["data"], json!(true), "{cur}");
}

#[tokio::test]
async fn two_assets_written_over_a_mark_in_one_batch_both_hold_the_code() {
    // `x_jpg` marked (its asset deleted); then two DAM assets named `x_jpg` come in one batch:
    // deleting one of them must not mark the PIM asset the other is still written as.
    let app =
        TestApp::start_with(4, mark("archived", json!(true)), support::codes_from_names).await;
    let ids = app.dam.ordered_ids(None, None);
    app.dam.set(&ids[0], &json!({ "name": "x_jpg" })).unwrap();
    app.sync().await;
    app.dam.delete(&ids[..1]);
    let r = app.sync().await;
    assert_eq!(r.marked, 1, "{r:?}");
    for id in &ids[1..3] {
        app.dam.set(id, &json!({ "name": "x_jpg" })).unwrap();
    }
    app.sync().await;
    let plan = app.engine.families()[0].clone();
    let gone = WriteItem::fresh(AssetChange {
        family: FAMILY.into(),
        event_id: None,
        source: "test".into(),
        // The one the batch wrote (the newer); the other one stays.
        kind: ChangeKind::Delete {
            dam_id: ids[2].clone(),
            deleted_at: None,
        },
    });
    let r = app.engine.write_changes(&plan, vec![gone]).await.unwrap();
    assert_eq!((r.marked, r.kept), (0, 1), "{r:?}");
    let cur = app.akeneo.asset(FAMILY, "x_jpg").unwrap();
    assert!(cur["values"]["archived"][0]["data"].is_null(), "{cur}");
}
