//! Reconciliation (`Engine::reconcile_family`, what `sync --full` runs): the whole DAM listing
//! and the whole PIM listing compared, page by page, and drift repaired through the write path.
//! Drift is made behind the connector's back: assets removed from the DAM without a tombstone,
//! values edited and an asset deleted directly in the Akeneo emulator, a DAM change the cursor
//! had already passed, an asset only the PIM has.

mod support;

use std::collections::BTreeSet;

use assetbridge_core::{sanitize_code, Cursor};
use assetbridge_engine::{DeletionPolicy, RepairKind, SyncOptions};
use serde_json::{json, Value};
use support::{TestApp, FAMILY};
use tokio_util::sync::CancellationToken;

fn opts(deletions: DeletionPolicy) -> SyncOptions {
    SyncOptions {
        deletions,
        ..SyncOptions::default()
    }
}

/// Moves the family's cursor far past every DAM change, as if the poller had seen them all.
async fn cursor_past_everything(app: &TestApp) {
    let at = app.dam.now() + chrono::Duration::hours(1);
    app.engine
        .store()
        .set_cursor(
            FAMILY,
            &Cursor {
                updated_at: at,
                dam_id: "~".into(),
            },
        )
        .await
        .unwrap();
}

/// PIM listing requests (`GET …/assets` without a `code IN` search) of the request log.
fn pim_listing_requests(app: &TestApp) -> Vec<Option<String>> {
    app.pim_requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/{FAMILY}/assets")))
        .filter(|r| !r.query.as_deref().unwrap_or("").contains("search="))
        .map(|r| r.query)
        .collect()
}

/// `GET …/assets?search={"code":[{"operator":"IN",…}]}` searches of the request log (their
/// first pages: a search answered with a full page of 100 is followed by one more page).
fn pim_code_reads(app: &TestApp) -> usize {
    app.pim_requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .filter(|r| {
            let q = r.query.as_deref().unwrap_or("");
            q.contains("search=") && !q.contains("search_after=")
        })
        .count()
}

fn title(asset: &Value) -> Value {
    asset["values"]["title"][0]["data"].clone()
}

#[tokio::test]
async fn a_full_pass_repairs_exactly_the_drift_and_a_second_writes_nothing() {
    let app = TestApp::start(250, opts(DeletionPolicy::Delete)).await;
    let first = app.sync().await;
    assert_eq!(first.created, 250, "{first:?}");
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    let code = |id: &str| sanitize_code(id);

    // (1) Deleted in the DAM without any event: two assets vanish from the listing (no
    // tombstone); a third is deleted with a tombstone that the poller never read.
    let purged = app.dam.purge(&ids[0..2]);
    assert_eq!(purged.len(), 2);
    let tombstoned = app.dam.delete(&ids[2..3]);
    // (2) Manual edits in the PIM: a value changed, an asset deleted there.
    let edited = code(&ids[10]);
    let dam_title = title(&app.akeneo.asset(FAMILY, &edited).unwrap());
    app.akeneo
        .upsert_asset(
            FAMILY,
            json!({"code": edited, "values": {"title": [{"locale": "en_US", "channel": null, "data": "Edited by hand"}]}}),
        )
        .unwrap();
    let removed_in_pim = code(&ids[11]);
    app.engine
        .pim()
        .delete_asset(FAMILY, &removed_in_pim)
        .await
        .unwrap();
    // (3) A DAM change the cursor passed without it being written (a missed event).
    let silent = ids[20].clone();
    app.dam
        .set(&silent, &json!({"metadata": {"title": "Changed silently"}}))
        .unwrap();
    cursor_past_everything(&app).await;
    // (4) An asset the connector never wrote.
    app.akeneo
        .upsert_asset(
            FAMILY,
            json!({"code": "made_in_the_pim", "values": {"title": [{"locale": "en_US", "channel": null, "data": "Mine"}]}}),
        )
        .unwrap();

    // An incremental sync sees none of it.
    app.akeneo.reset_log();
    let r = app.sync().await;
    assert_eq!(r.written(), 0, "{r:?}");
    assert_eq!(app.pim_writes(), 0);

    app.akeneo.reset_log();
    let plan = app.engine.families()[0].clone();
    let rec = app.engine.reconcile_family(&plan).await.unwrap();
    assert!(rec.complete, "{rec:#?}");
    assert_eq!(rec.dam_assets, 247, "live DAM assets: {rec:#?}");
    let found: BTreeSet<(RepairKind, String)> = rec
        .repairs
        .iter()
        .map(|r| (r.kind, r.code.clone()))
        .collect();
    let expected: BTreeSet<(RepairKind, String)> = [
        (RepairKind::DeletedInDam, code(&purged[0])),
        (RepairKind::DeletedInDam, code(&purged[1])),
        (RepairKind::Drift, edited.clone()),
        (RepairKind::MissingInPim, removed_in_pim.clone()),
        (RepairKind::Missed, code(&silent)),
        (RepairKind::PimOnly, "made_in_the_pim".to_owned()),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, expected, "{rec:#?}");
    assert_eq!(
        (
            rec.missed,
            rec.drift,
            rec.missing_in_pim,
            rec.deleted_in_dam,
            rec.pim_only,
            rec.held_back
        ),
        (1, 1, 1, 2, 1, 0),
        "{rec:#?}"
    );
    let drift = rec
        .repairs
        .iter()
        .find(|r| r.kind == RepairKind::Drift)
        .unwrap();
    assert_eq!(drift.changes.len(), 1, "{drift:?}");
    assert_eq!(drift.changes[0].attribute, "title");
    assert_eq!(drift.changes[0].old, Some(json!("Edited by hand")));
    assert_eq!(drift.changes[0].new.as_ref(), Some(&dam_title));
    // Writes: the drift and the missed change updated, the asset gone from the PIM created,
    // the tombstone (phase 1) and the two absent assets (phase 2) deleted.
    let w = &rec.report;
    assert_eq!(
        (w.created, w.updated, w.deleted, w.failed, w.retrying),
        (1, 2, 3, 0, 0),
        "{w:?}"
    );

    // The emulator's state.
    for id in purged.iter().chain(&tombstoned) {
        assert!(
            app.akeneo.asset(FAMILY, &code(id)).is_none(),
            "{id} deleted"
        );
    }
    assert_eq!(
        title(&app.akeneo.asset(FAMILY, &edited).unwrap()),
        dam_title
    );
    assert!(app.akeneo.asset(FAMILY, &removed_in_pim).is_some());
    assert_eq!(
        title(&app.akeneo.asset(FAMILY, &code(&silent)).unwrap()),
        json!("Changed silently")
    );
    assert_eq!(
        title(&app.akeneo.asset(FAMILY, "made_in_the_pim").unwrap()),
        json!("Mine"),
        "a PIM-only asset is left alone"
    );
    assert_eq!(app.akeneo.asset_count(FAMILY), 247 + 1);

    // The request log: the PIM listing read in pages of 100 (search_after after the first),
    // one `code IN` read per DAM page of unchanged assets, the writes batched.
    let listing = pim_listing_requests(&app);
    assert_eq!(listing.len(), 3, "{listing:?}");
    assert!(listing[0]
        .as_deref()
        .is_none_or(|q| !q.contains("search_after")));
    assert!(
        listing[1..]
            .iter()
            .all(|q| q.as_deref().unwrap_or("").contains("search_after=")),
        "{listing:?}"
    );
    assert_eq!(
        pim_code_reads(&app),
        3,
        "one search per DAM page (100 + 100 + 48)"
    );
    let log = app.pim_requests();
    let deletes = log.iter().filter(|r| r.method == "DELETE").count();
    assert_eq!(deletes, 3);
    let patches = log.iter().filter(|r| r.method == "PATCH").count();
    assert!(patches <= 3, "{patches} batch requests for 3 upserts");

    // The cursor rules: never backwards.
    let cursor = app.engine.cursor(FAMILY).await.unwrap().unwrap();
    assert!(cursor.updated_at > app.dam.now());

    // A second pass finds nothing to repair and writes nothing (the PIM-only asset is
    // reported again: it is still there, untouched).
    app.akeneo.reset_log();
    let again = app.engine.reconcile_family(&plan).await.unwrap();
    assert!(again.complete);
    assert_eq!(app.pim_writes(), 0, "{again:#?}");
    assert_eq!(again.report.written(), 0, "{again:#?}");
    assert_eq!(
        (
            again.missed,
            again.drift,
            again.missing_in_pim,
            again.deleted_in_dam,
            again.pim_only
        ),
        (0, 0, 0, 0, 1),
        "{again:#?}"
    );
    assert_eq!(again.report.unchanged, 247);
}

#[tokio::test]
async fn keep_reports_absent_assets_and_never_deletes_them() {
    let app = TestApp::start(40, SyncOptions::default()).await;
    app.sync().await;
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    let purged = app.dam.purge(&ids[5..8]);
    app.akeneo.reset_log();
    let plan = app.engine.families()[0].clone();
    let rec = app.engine.reconcile_family(&plan).await.unwrap();
    assert_eq!(rec.deleted_in_dam, 3, "{rec:#?}");
    assert_eq!(rec.report.kept, 3, "counted as kept: {rec:#?}");
    assert_eq!(rec.report.deleted, 0);
    for r in rec
        .repairs
        .iter()
        .filter(|r| r.kind == RepairKind::DeletedInDam)
    {
        assert!(r.reason.contains("kept in the PIM"), "{r:?}");
    }
    for id in &purged {
        assert!(app.akeneo.asset(FAMILY, &sanitize_code(id)).is_some());
    }
    assert_eq!(app.pim_writes(), 0);
    // Reported again on the next pass: never silently.
    let again = app.engine.reconcile_family(&plan).await.unwrap();
    assert_eq!(again.deleted_in_dam, 3, "{again:#?}");
}

#[tokio::test]
async fn mark_marks_absent_assets_once() {
    let app = TestApp::start(
        30,
        opts(DeletionPolicy::Mark {
            attribute: "archived".into(),
            value: json!(true),
        }),
    )
    .await;
    app.sync().await;
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    let purged = app.dam.purge(&ids[0..2]);
    let plan = app.engine.families()[0].clone();

    // The dry run of the pass says it first, and writes nothing.
    app.akeneo.reset_log();
    let entries = app.engine.plan_family(&plan, true).await.unwrap();
    let marks: Vec<_> = entries
        .iter()
        .filter(|e| e.action == assetbridge_engine::PlanAction::Mark)
        .collect();
    assert_eq!(marks.len(), 2, "{entries:#?}");
    assert!(marks[0].reason.starts_with("absent from the DAM listing"));
    assert_eq!(app.pim_writes(), 0);

    let rec = app.engine.reconcile_family(&plan).await.unwrap();
    assert_eq!(rec.report.marked, 2, "{rec:#?}");
    for id in &purged {
        let held = app.akeneo.asset(FAMILY, &sanitize_code(id)).unwrap();
        assert_eq!(held["values"]["archived"][0]["data"], json!(true), "{held}");
    }
    app.akeneo.reset_log();
    let again = app.engine.reconcile_family(&plan).await.unwrap();
    assert_eq!(again.deleted_in_dam, 0, "already marked: {again:#?}");
    assert_eq!(app.pim_writes(), 0);
}

#[tokio::test]
async fn the_dry_run_lists_the_same_repairs() {
    let app = TestApp::start(60, opts(DeletionPolicy::Delete)).await;
    app.sync().await;
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    let purged = app.dam.purge(&ids[0..1]);
    let edited = sanitize_code(&ids[30]);
    app.akeneo
        .upsert_asset(
            FAMILY,
            json!({"code": edited, "values": {"width": [{"locale": null, "channel": null, "data": "1"}]}}),
        )
        .unwrap();
    app.akeneo
        .upsert_asset(FAMILY, json!({"code": "pim_only", "values": {}}))
        .unwrap();
    let plan = app.engine.families()[0].clone();
    app.akeneo.reset_log();
    let entries = app.engine.plan_family(&plan, true).await.unwrap();
    assert!(app.pim_requests().iter().all(|r| r.method == "GET"));
    use assetbridge_engine::PlanAction as A;
    let acted: Vec<(A, Option<String>)> = entries
        .iter()
        .filter(|e| e.action != A::Skip)
        .map(|e| (e.action, e.code.clone()))
        .collect();
    assert_eq!(
        acted,
        vec![
            (A::Update, Some(edited.clone())),
            (A::Delete, Some(sanitize_code(&purged[0]))),
        ],
        "{entries:#?}"
    );
    let update = entries.iter().find(|e| e.action == A::Update).unwrap();
    assert!(update.reason.starts_with("edited in the PIM"), "{update:?}");
    assert_eq!(update.changes[0].old, Some(json!("1")));
    let pim_only = entries
        .iter()
        .find(|e| e.code.as_deref() == Some("pim_only"))
        .unwrap();
    assert_eq!(pim_only.action, A::Skip);
    assert!(pim_only.reason.contains("PIM only"), "{pim_only:?}");
}

#[tokio::test]
async fn deletions_are_held_back_when_the_listing_is_empty_or_stopped() {
    let app = TestApp::start(30, opts(DeletionPolicy::Delete)).await;
    app.sync().await;
    let plan = app.engine.families()[0].clone();

    // A listing filter that matches nothing: every PIM asset looks absent — held back.
    let mut wrong = plan.clone();
    wrong.query = vec![("type".into(), "no_such_type".into())];
    let rec = app.engine.reconcile_family(&wrong).await.unwrap();
    assert_eq!(rec.dam_assets, 0);
    assert_eq!((rec.deleted_in_dam, rec.held_back), (30, 30), "{rec:#?}");
    assert!(
        rec.note.as_deref().unwrap().contains("no live asset"),
        "{rec:#?}"
    );
    assert_eq!(rec.report.deleted, 0);
    assert_eq!(app.akeneo.asset_count(FAMILY), 30);

    // A pass stopped before the DAM listing's end looks for no deletion at all.
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    app.dam.purge(&ids[0..3]);
    let stop = CancellationToken::new();
    stop.cancel();
    let rec = app
        .engine
        .reconcile_family_until(&plan, &stop)
        .await
        .unwrap();
    assert!(!rec.complete, "{rec:#?}");
    assert_eq!(rec.deleted_in_dam, 0);
    assert_eq!(app.akeneo.asset_count(FAMILY), 30);
    let last = app
        .engine
        .store()
        .last_reconcile(FAMILY, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last.id, last.complete), (rec.pass, false));
    // A complete pass then applies them.
    let rec = app.engine.reconcile_family(&plan).await.unwrap();
    assert!(rec.complete);
    assert_eq!(rec.report.deleted, 3, "{rec:#?}");
    assert_eq!(app.akeneo.asset_count(FAMILY), 27);
}

/// A reconciliation deletion the PIM could not apply waits in the inbox for a retry; meanwhile the
/// asset comes back in the DAM and a poll writes it. The retry is then dropped (the deletion is
/// dated by the pass, older than the version written) instead of deleting the restored asset.
/// Before: the deletion was undated, stayed, and deleted it.
#[tokio::test]
async fn a_deletion_retry_does_not_delete_an_asset_restored_meanwhile() {
    let app = TestApp::start(
        20,
        SyncOptions {
            retry_base: std::time::Duration::from_millis(1),
            retry_max: std::time::Duration::from_millis(5),
            ..opts(DeletionPolicy::Delete)
        },
    )
    .await;
    app.sync().await;
    let ids = app.dam.ordered_ids(None, Some(FAMILY));
    let id = ids[3].clone();
    let mut record = app.dam.get(&id).unwrap();
    app.dam.purge(std::slice::from_ref(&id));
    // The PIM fails deletions (only): the pass's deletion goes to the inbox for a retry.
    app.akeneo
        .set_faults(assetbridge_emulators::akeneo::Faults {
            delete_outage: true,
            ..app.akeneo.faults()
        });
    let plan = app.engine.families()[0].clone();
    let rec = app.engine.reconcile_family(&plan).await.unwrap();
    assert_eq!(rec.deleted_in_dam, 1, "{rec:#?}");
    assert_eq!(rec.report.retrying, 1, "{rec:#?}");
    app.akeneo
        .set_faults(assetbridge_emulators::akeneo::Faults {
            delete_outage: false,
            ..app.akeneo.faults()
        });

    // The asset is back, changed, and a poll writes it before the retry comes due.
    let restored_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    record["updated_at"] = json!(restored_at.to_rfc3339());
    record["metadata"]["title"] = json!("Back again");
    let change = assetbridge_core::AssetChange {
        family: FAMILY.to_owned(),
        event_id: None,
        source: "poll".into(),
        kind: assetbridge_core::ChangeKind::Upsert {
            asset: assetbridge_core::DamAsset {
                id: id.clone(),
                updated_at: restored_at,
                record,
            },
        },
    };
    let w = app
        .engine
        .write_changes(&plan, vec![assetbridge_engine::WriteItem::fresh(change)])
        .await
        .unwrap();
    assert_eq!(w.updated, 1, "{w:?}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!(r.deleted, 0, "the restored asset was deleted: {r:?}");
    let held = app.akeneo.asset(FAMILY, &sanitize_code(&id)).unwrap();
    assert_eq!(title(&held), "Back again");
}
