//! Durability of the engine against both emulators over real HTTP on 127.0.0.1 and a SQLite
//! state file: the poller's backpressure (it stops reading the DAM while the inbox is over
//! `backlog_limit`), nothing lost across a PIM outage, and the per-minute outcome counters that
//! `assetbridge status` shows.

mod support;

use support::{localhost, mapping};

use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::CompiledMapping;
use assetbridge_core::{
    sanitize_code, AssetAttribute, AssetChange, AttributeType, ChangeKind, DamAsset,
    FamilyStructure,
};
use assetbridge_dam::rest::{DamAuth, RestDam, RestDamConfig};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, RunningDam};
use assetbridge_engine::{
    DeletionPolicy, Engine, EngineError, FamilyPlan, SyncOptions, SyncReport, WriteItem,
};
use assetbridge_store::Store;
use secrecy::SecretString;
use serde_json::json;

const FAMILIES: [&str; 2] = ["packshots", "lifestyle"];
use assetbridge_emulators::dam::TAGS;

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
    async fn start(assets: usize, options: SyncOptions) -> Self {
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets,
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
        let mut pim_cfg = AkeneoConfig::new(
            akeneo_server.base_url.clone(),
            "assetbridge",
            "secret",
            "admin",
            "admin",
        );
        // An outage should fail a call quickly here (the engine's own retries are under test).
        pim_cfg.max_retries = 1;
        pim_cfg.retry_base_ms = 20;
        pim_cfg.retry_max_ms = 50;
        let pim = AkeneoClient::new(pim_cfg).unwrap();
        let mut dam_cfg = RestDamConfig::new(dam_server.base_url.clone());
        dam_cfg.auth = DamAuth::Bearer {
            token: SecretString::from("dam-token".to_owned()),
        };
        dam_cfg.family_param = Some("type".into());
        let rest = RestDam::new(dam_cfg).unwrap();
        let mut plans = Vec::new();
        for f in FAMILIES {
            let s = pim.family_structure(f).await.unwrap();
            plans.push(FamilyPlan {
                code: f.to_owned(),
                query: rest.family_query(f),
                mapping: Arc::new(CompiledMapping::new(&mapping(), Some(&s)).unwrap()),
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

    fn plan(&self, family: &str) -> FamilyPlan {
        self.engine.family(family).unwrap().clone()
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

    async fn inbox(&self) -> u64 {
        let b = self.engine.store().backlog().await.unwrap();
        b.pending + b.in_flight
    }
}

#[tokio::test]
async fn the_poller_holds_back_while_the_inbox_is_over_its_bound() {
    // One page at a time so the bound is met at a page boundary: 1 000 assets in two families,
    // pages of 100.
    let options = SyncOptions {
        pages_in_flight: 1,
        backlog_limit: 150,
        // Retries wait a second: the drain below finds them ready.
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(1),
        ..SyncOptions::default()
    };
    let app = TestApp::start(1_000, options).await;
    let packshots = app.plan("packshots");
    let lifestyle = app.plan("lifestyle");

    // The PIM is down: every page's changes go to the inbox for a retry.
    app.akeneo.set_outage(true);
    let r = app.engine.sync_family(&packshots, false).await.unwrap();
    // Page 1 → 100 in the inbox (< 150, go on); page 2 → 200 (≥ 150): page 3 is not written.
    assert_eq!(r.retrying, 200, "{r:?}");
    assert_eq!(app.inbox().await, 200);
    let cursor = app.engine.cursor("packshots").await.unwrap().unwrap();
    let second_page_last = app.dam.ordered_ids(None, Some("packshots"))[199].clone();
    assert_eq!(
        cursor.dam_id, second_page_last,
        "the cursor stops after the last page written"
    );

    // Over the bound, a pass does not even list the DAM.
    app.dam.reset_stats();
    let r = app.engine.sync_family(&lifestyle, false).await.unwrap();
    assert_eq!(r, SyncReport::default());
    assert_eq!(app.dam.stats().list_requests, 0);
    assert_eq!(app.engine.cursor("lifestyle").await.unwrap(), None);
    assert_eq!(app.inbox().await, 200, "nothing more was enqueued");

    // While the inbox is full, delayed retries included, passes keep holding back.
    app.akeneo.set_outage(false);
    let r = app.engine.sync_family(&packshots, false).await.unwrap();
    assert_eq!(r, SyncReport::default());

    // The PIM is back and the retries come due: the inbox drains, then the next passes resume
    // from the cursors and the PIM ends up holding exactly the DAM.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let drained = app.engine.drain_inbox("test").await.unwrap();
    assert_eq!(drained.created, 200, "{drained:?}");
    assert_eq!(app.inbox().await, 0);
    let r = app.sync().await;
    assert_eq!(r.created, 800, "the rest of the DAM: {r:?}");
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    assert_eq!(app.pim_count(), 1_000);
    assert_eq!(app.inbox().await, 0);
}

#[tokio::test]
async fn a_pim_outage_loses_nothing_and_the_backlog_drains_after_it() {
    let options = SyncOptions {
        // Short retry delays so that the test waits seconds, not minutes; the attempts are
        // counted (the default 8 with base 5 s and doubling spans ~10 minutes of outage).
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(1),
        ..SyncOptions::default()
    };
    let app = TestApp::start(400, options).await;
    app.sync().await;
    assert_eq!(app.pim_count(), 400);

    app.akeneo.set_outage(true);
    let touched = app.dam.touch(60);
    let added = app.dam.add(15);
    let r = app.sync().await;
    assert_eq!(r.created + r.updated, 0, "{r:?}");
    assert!(r.retrying >= 75, "{r:?}");
    assert_eq!(app.inbox().await, 75, "every change waits in the inbox");
    assert_eq!(app.engine.store().dead_letter_count().await.unwrap(), 0);
    let failed = app
        .engine
        .store()
        .outcomes(Duration::from_secs(600), None)
        .await
        .unwrap();
    assert!(failed.failed >= 75, "{failed:?}");

    app.akeneo.set_outage(false);
    // The retries come due (1 s ± 25 %).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let r = app.engine.drain_inbox("test").await.unwrap();
    assert_eq!(r.created, 15, "{r:?}");
    assert_eq!(r.updated, 60, "{r:?}");
    assert_eq!(app.inbox().await, 0);
    assert_eq!(app.pim_count(), 415);
    for id in touched.iter().chain(&added) {
        let record = app.dam.get(id).unwrap();
        let family = record["type"].as_str().unwrap();
        let held = app
            .akeneo
            .asset(family, &assetbridge_core::sanitize_code(id))
            .unwrap();
        assert_eq!(
            held["values"]["title"][0]["data"],
            record["metadata"]["title"]
        );
    }
}

#[tokio::test]
async fn write_outcomes_are_counted_per_family() {
    let app = TestApp::start(120, SyncOptions::default()).await;
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    for id in &ids[..3] {
        app.dam
            .set(id, &json!({"metadata": {"width": "very wide"}}))
            .unwrap();
    }
    let r = app.sync().await;
    assert_eq!(r.failed, 3, "{r:?}");
    let store = app.engine.store();
    let hour = Duration::from_secs(3600);
    let all = store.outcomes(hour, None).await.unwrap();
    assert_eq!(all.succeeded, 117);
    assert_eq!(all.failed, 3);
    let packshots = store.outcomes(hour, Some("packshots")).await.unwrap();
    let lifestyle = store.outcomes(hour, Some("lifestyle")).await.unwrap();
    assert_eq!(packshots.failed, 3);
    assert_eq!(lifestyle.failed, 0);
    assert_eq!(packshots.succeeded + lifestyle.succeeded, 117);
    assert_eq!(
        packshots.succeeded as usize,
        app.akeneo.asset_count("packshots")
    );

    // Nothing changed: nothing more is written. (The three refused assets are seen again in
    // the overlap window and fail again: those attempts are counted as failures.)
    app.sync().await;
    assert_eq!(
        store.outcomes(hour, None).await.unwrap().succeeded,
        all.succeeded
    );
}

/// A pass that dies after the PIM accepted a batch but before the engine recorded it leaves
/// assets in the PIM that the store has no hash for. When the DAM then deletes one of them, the
/// deletion must still reach the PIM: the engine records each DAM id's asset code before writing
/// (with `deletions = "delete"`), so the tombstone finds the code.
#[tokio::test]
async fn a_deletion_finds_an_asset_written_by_a_pass_that_died_before_recording_it() {
    let options = SyncOptions {
        deletions: DeletionPolicy::Delete,
        ..SyncOptions::default()
    };
    let app = TestApp::start(60, options).await;
    let plan = app.plan("packshots");
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    let items: Vec<WriteItem> = ids
        .iter()
        .map(|id| WriteItem::fresh(upsert_of(&app, id, None, "poll")))
        .collect();
    // The "crash": the write task is stopped as soon as the PIM has applied the batch (this
    // test runs on one thread, so the task cannot get past its next await after `abort`).
    let engine = app.engine.clone();
    let task = tokio::spawn(async move { engine.write_changes(&plan, items).await });
    while app.akeneo.counters().asset_writes < ids.len() as u64 {
        assert!(
            !task.is_finished(),
            "the write ended before the PIM applied it"
        );
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(app.akeneo.asset_count("packshots"), ids.len());
    let codes: Vec<String> = ids.iter().map(|id| sanitize_code(id)).collect();
    let hashes = app
        .engine
        .store()
        .hashes("packshots", &codes)
        .await
        .unwrap();
    assert!(
        hashes.is_empty(),
        "the crash came after the hashes were recorded: {hashes:?}"
    );

    // The DAM deletes two of them; the next pass (from no cursor: the pass died) deletes them.
    let gone = app.dam.delete(&ids[..2]);
    let r = app.sync().await;
    assert_eq!(r.deleted, 2, "{r:?}");
    for id in &gone {
        assert!(app.akeneo.asset("packshots", &sanitize_code(id)).is_none());
    }
    assert_eq!(app.pim_count(), app.dam.count());
}

/// Graceful shutdown of a poll pass: once `stop` is cancelled the pass reads no further page,
/// finishes the pages in flight, and leaves the cursor after them; the next pass goes on.
#[tokio::test]
async fn a_pass_stops_taking_pages_when_asked_to_stop() {
    let options = SyncOptions {
        pages_in_flight: 1,
        ..SyncOptions::default()
    };
    let app = TestApp::start(1_000, options).await;
    app.akeneo.set_latency(Duration::from_millis(30));
    let plan = app.plan("packshots");
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    let stop = tokio_util::sync::CancellationToken::new();
    let (engine, task_plan, task_stop) = (app.engine.clone(), plan.clone(), stop.clone());
    let task = tokio::spawn(async move {
        engine
            .sync_family_until(&task_plan, false, &task_stop)
            .await
    });
    while app.akeneo.counters().asset_writes < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.cancel();
    let r = task.await.unwrap().unwrap();
    let written = r.created as usize;
    assert!(written >= 100 && written < ids.len(), "{r:?}");
    assert_eq!(written % 100, 0, "whole pages: {r:?}");
    assert_eq!(app.akeneo.asset_count("packshots"), written);
    let cursor = app.engine.cursor("packshots").await.unwrap().unwrap();
    assert_eq!(
        cursor.dam_id,
        ids[written - 1],
        "the cursor is after the last page written"
    );

    let r = app.engine.sync_family(&plan, false).await.unwrap();
    assert_eq!(r.created as usize, ids.len() - written, "{r:?}");
    assert_eq!(app.akeneo.asset_count("packshots"), ids.len());
}

/// Known bug (reported, not fixed here): a change refused for good and seen again in the poll's
/// overlap window is dead-lettered again on every poll, so one bad asset becomes one dead letter
/// per poll (with `schedule = "30s"` and the 5-minute overlap: ten). Fixing it needs the store to
/// find an asset's dead letter (e.g. `DeadLetterFilter::dam_id`, or `add_dead_letter` skipping a
/// payload already dead-lettered for the asset).
#[tokio::test]

async fn a_refused_change_seen_again_in_the_overlap_is_not_dead_lettered_twice() {
    let app = TestApp::start(50, SyncOptions::default()).await;
    let id = app.dam.ordered_ids(None, Some("packshots"))[0].clone();
    app.dam
        .set(&id, &json!({"metadata": {"width": "very wide"}}))
        .unwrap();
    app.sync().await;
    assert_eq!(app.engine.store().dead_letter_count().await.unwrap(), 1);
    app.sync().await;
    assert_eq!(
        app.engine.store().dead_letter_count().await.unwrap(),
        1,
        "the same refused change was dead-lettered again"
    );
}

/// The upsert of a DAM asset as it is now.
fn upsert_of(app: &TestApp, id: &str, event_id: Option<String>, source: &str) -> AssetChange {
    let record = app.dam.get(id).unwrap();
    let updated_at = chrono::DateTime::parse_from_rfc3339(record["updated_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    AssetChange {
        family: record["type"].as_str().unwrap().to_owned(),
        event_id,
        source: source.into(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: id.to_owned(),
                updated_at,
                record,
            },
        },
    }
}

/// Inbox changes for these DAM assets, as a webhook would have stored them.
fn inbox_changes(app: &TestApp, ids: &[String]) -> Vec<AssetChange> {
    ids.iter()
        .map(|id| upsert_of(app, id, Some(format!("evt-{id}")), "webhook"))
        .collect()
}

/// A round that takes longer than its lease keeps its entries: the worker renews the leases
/// while it runs, so no other worker takes them over and writes them a second time (before:
/// the second worker claimed them once the first lease ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_longer_than_its_lease_keeps_its_entries() {
    // Long enough that a renewal delayed on a loaded machine still comes before the lease
    // runs out.
    let lease = Duration::from_secs(2);
    let options = SyncOptions {
        claim_lease: lease,
        ..SyncOptions::default()
    };
    let app = TestApp::start(10, options).await;
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    let store = app.engine.store().clone();
    store.enqueue(&inbox_changes(&app, &ids)).await.unwrap();
    // Each PIM call takes 3 leases: the checks below (2 leases in all) run during the first.
    app.akeneo.set_latency(lease * 3);
    let engine = app.engine.clone();
    let round = tokio::spawn(async move { engine.drain_once("slow").await });
    // Long past the first lease, while the round is still waiting for the PIM: nothing to take.
    for _ in 0..4 {
        tokio::time::sleep(lease / 2).await;
        assert!(!round.is_finished());
        let taken = store.claim("other", 100, lease).await.unwrap();
        assert!(
            taken.is_empty(),
            "another worker took over entries of a live round: {:?}",
            taken.iter().map(|c| c.change.dam_id()).collect::<Vec<_>>()
        );
    }
    let (n, r) = round.await.unwrap().unwrap();
    assert_eq!((n, r.created), (ids.len(), ids.len() as u64), "{r:?}");
    assert_eq!(app.inbox().await, 0);
    assert_eq!(
        app.akeneo.counters().asset_writes,
        ids.len() as u64,
        "written once"
    );
}

/// A change whose worker dies (its lease runs out) `max_attempts` times goes to the dead letters
/// with that reason, instead of coming back for ever; it can be replayed.
#[tokio::test]
async fn a_change_whose_workers_keep_dying_is_dead_lettered() {
    let options = SyncOptions {
        max_attempts: 3,
        ..SyncOptions::default()
    };
    let app = TestApp::start(5, options).await;
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    let store = app.engine.store().clone();
    store
        .enqueue(&inbox_changes(&app, &ids[..1]))
        .await
        .unwrap();
    // Three workers claim it and vanish (a claim that is never finished nor renewed).
    for ghost in ["ghost-1", "ghost-2", "ghost-3"] {
        let c = store
            .claim(ghost, 10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(c.len(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let (n, r) = app.engine.drain_once("w").await.unwrap();
    assert_eq!((n, r.failed, r.created), (1, 1, 0), "{r:?}");
    assert_eq!(app.akeneo.counters().asset_writes, 0);
    let dead = store
        .dead_letters(&assetbridge_store::DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.kind, "lease_expired");
    assert_eq!(
        dead[0].reason.message,
        "claimed 3 times without finishing; last: the lease of worker `ghost-3` ran out before it finished"
    );
    // Replayed, it is written.
    let moved = store
        .retry_dead_letters(&assetbridge_store::DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let r = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!(r.created, 1, "{r:?}");
}

/// A round that fails as a whole for a reason that is not the entries' (the PIM refuses our
/// credentials) gives its claims back at once and uses up no attempt: once the credentials are
/// fixed the backlog drains. (Before: the claims were left to expire, and with take-overs
/// counted as attempts the whole backlog would have become dead letters.)
#[tokio::test]
async fn a_round_that_fails_as_a_whole_gives_its_claims_back_without_an_attempt() {
    let app = TestApp::start(5, SyncOptions::default()).await;
    let ids = app.dam.ordered_ids(None, Some("packshots"));
    let store = app.engine.store().clone();
    store.enqueue(&inbox_changes(&app, &ids)).await.unwrap();
    let refused = AkeneoClient::new(AkeneoConfig::new(
        app._akeneo_server.base_url.clone(),
        "assetbridge",
        "secret",
        "admin",
        "not-the-password",
    ))
    .unwrap();
    let engine = Engine::new(
        refused,
        store.clone(),
        RestDam::new(RestDamConfig::new("http://127.0.0.1:9")).unwrap(),
        vec![app.plan("packshots"), app.plan("lifestyle")],
        SyncOptions::default(),
    );
    for _ in 0..3 {
        let e = engine.drain_once("w").await.unwrap_err();
        assert!(matches!(e, EngineError::Pim(_)), "{e}");
    }
    // Claimable at once (nothing waits for a lease to run out), no attempt used up.
    let back = store
        .claim("w2", 100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(back.len(), ids.len());
    assert!(back.iter().all(|c| c.attempts == 0), "{back:?}");
    store
        .release(&back.iter().map(|c| c.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let r = app.engine.drain_inbox("w").await.unwrap();
    assert_eq!(r.created, ids.len() as u64, "{r:?}");
}
