//! Polling under concurrent change: assets that change while a pass lists the DAM, and retries
//! of polled changes that meet a newer version. Both emulators over real HTTP on 127.0.0.1, a
//! SQLite state file and the real clients (the pattern of `tests/durability.rs`).

mod support;

use support::{localhost, mapping, sqlite_store, structure, FAMILY};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use assetbridge_akeneo::{AkeneoClient, AkeneoConfig};
use assetbridge_core::mapping::CompiledMapping;
use assetbridge_core::sanitize_code;
use assetbridge_dam::rest::{DamAuth, Paging, RestDam, RestDamConfig};
use assetbridge_emulators::akeneo::{AkeneoEmulator, AkeneoEmulatorConfig, RunningEmulator};
use assetbridge_emulators::dam::{DamEmulator, DamEmulatorConfig, PagingStyle, RunningDam};
use assetbridge_engine::{Engine, FamilyPlan, SyncObserver, SyncOptions, SyncReport};
use serde_json::json;

struct TestApp {
    dam: DamEmulator,
    akeneo: AkeneoEmulator,
    engine: Engine,
    _dam_server: RunningDam,
    _akeneo_server: RunningEmulator,
    _dir: tempfile::TempDir,
}

impl TestApp {
    async fn start(
        assets: usize,
        paging: PagingStyle,
        page_size: u32,
        options: SyncOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Self {
        let dam = DamEmulator::new(DamEmulatorConfig {
            assets,
            paging,
            families: vec![FAMILY.to_owned()],
            ..DamEmulatorConfig::default()
        });
        let dam_server = dam.serve(localhost()).await.unwrap();
        let akeneo = AkeneoEmulator::new(AkeneoEmulatorConfig::default());
        let akeneo_server = akeneo.serve(localhost()).await.unwrap();
        akeneo.add_asset_family(structure(&format!("{}/files/", dam_server.base_url)));
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let mut pim_cfg = AkeneoConfig::new(
            akeneo_server.base_url.clone(),
            "assetbridge",
            "secret",
            "admin",
            "admin",
        );
        // An outage fails a call quickly (the engine's own retries are under test).
        pim_cfg.max_retries = 1;
        pim_cfg.retry_base_ms = 20;
        pim_cfg.retry_max_ms = 50;
        let pim = AkeneoClient::new(pim_cfg).unwrap();
        let mut dam_cfg = RestDamConfig::new(dam_server.base_url.clone());
        dam_cfg.auth = DamAuth::Bearer {
            token: "dam-token".to_owned().into(),
        };
        dam_cfg.family_param = Some("type".into());
        dam_cfg.page_size = page_size;
        dam_cfg.paging = match paging {
            PagingStyle::PageNumber => Paging::PageNumber {
                page_param: "page".into(),
                first_page: 1,
            },
            PagingStyle::CursorToken => Paging::default(),
            PagingStyle::LinkHeader => {
                dam_cfg.items_pointer = String::new();
                Paging::LinkHeader
            }
        };
        let rest = RestDam::new(dam_cfg).unwrap();
        let s = pim.family_structure(FAMILY).await.unwrap();
        let plan = FamilyPlan {
            code: FAMILY.to_owned(),
            query: rest.family_query(FAMILY),
            mapping: Arc::new(CompiledMapping::new(&mapping(), Some(&s)).unwrap()),
        };
        let mut engine = Engine::new(pim, store, rest, vec![plan], options);
        if let Some(o) = observer {
            engine = engine.with_observer(o);
        }
        Self {
            dam,
            akeneo,
            engine,
            _dam_server: dam_server,
            _akeneo_server: akeneo_server,
            _dir: dir,
        }
    }

    fn plan(&self) -> FamilyPlan {
        self.engine.family(FAMILY).unwrap().clone()
    }

    /// One polling pass, then the inbox drained.
    async fn sync(&self) -> SyncReport {
        let mut total = self.engine.sync_family(&self.plan(), false).await.unwrap();
        total += &self.engine.drain_inbox("test").await.unwrap();
        total
    }

    /// The DAM assets whose current title the PIM does not hold.
    fn pim_behind_dam(&self) -> Vec<String> {
        self.dam
            .ordered_ids(None, Some(FAMILY))
            .into_iter()
            .filter(|id| {
                let want = self.dam.get(id).unwrap()["metadata"]["title"].clone();
                let held = self
                    .akeneo
                    .asset(FAMILY, &sanitize_code(id))
                    .map(|a| a["values"]["title"][0]["data"].clone());
                held != Some(want)
            })
            .collect()
    }
}

/// Changes one DAM asset (it moves to the end of the listing) when the first page of a pass is
/// done, i.e. while the pass is still listing the DAM.
struct ChangeDuringPass {
    dam: DamEmulator,
    id: String,
    fired: AtomicBool,
}

impl SyncObserver for ChangeDuringPass {
    fn batch_done(&self, _family: &str, _report: &SyncReport) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            self.dam
                .set(
                    &self.id,
                    &json!({"metadata": {"title": "changed mid-pass"}}),
                )
                .unwrap();
        }
    }
}

/// Page-number paging is an offset: an asset of an earlier page that changes while the pass
/// lists the DAM moves to the end of the listing, and every later asset moves up one place — the
/// first asset of the next page not yet read slides onto a page already read and is never
/// listed. The cursor still advances past it (to the changed asset, now last), so no later pass
/// lists it again once it is older than the overlap window.
async fn an_asset_changed_mid_pass_skips_nothing(paging: PagingStyle) {
    let options = SyncOptions {
        pages_in_flight: 1,
        overlap: chrono::Duration::seconds(10),
        ..SyncOptions::default()
    };
    // The observer needs the emulator: armed once the app exists.
    let observer = Arc::new(ChangeDuringPassLate::default());
    let app = TestApp::start(60, paging, 10, options, Some(observer.clone())).await;
    let first = app.dam.ordered_ids(None, Some(FAMILY))[0].clone();
    observer.arm(ChangeDuringPass {
        dam: app.dam.clone(),
        id: first.clone(),
        fired: AtomicBool::new(false),
    });

    let r = app.sync().await;
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    // A second pass (the normal overlap window) does not bring back what the first skipped.
    app.sync().await;
    let behind = app.pim_behind_dam();
    assert!(
        behind.is_empty(),
        "{paging:?}: the PIM misses DAM changes: {behind:?} (first pass: {r:?})"
    );
}

/// [`ChangeDuringPass`], set once the app (and so the emulator) exists.
#[derive(Default)]
struct ChangeDuringPassLate(std::sync::OnceLock<ChangeDuringPass>);

impl ChangeDuringPassLate {
    fn arm(&self, inner: ChangeDuringPass) {
        assert!(self.0.set(inner).is_ok());
    }
}

impl SyncObserver for ChangeDuringPassLate {
    fn batch_done(&self, family: &str, report: &SyncReport) {
        if let Some(inner) = self.0.get() {
            inner.batch_done(family, report);
        }
    }
}

#[tokio::test]
async fn page_number_paging_skips_nothing_when_an_asset_changes_mid_pass() {
    an_asset_changed_mid_pass_skips_nothing(PagingStyle::PageNumber).await;
}

#[tokio::test]
async fn cursor_paging_skips_nothing_when_an_asset_changes_mid_pass() {
    an_asset_changed_mid_pass_skips_nothing(PagingStyle::CursorToken).await;
}

#[tokio::test]
async fn link_header_paging_skips_nothing_when_an_asset_changes_mid_pass() {
    an_asset_changed_mid_pass_skips_nothing(PagingStyle::LinkHeader).await;
}

/// A polled change that failed transiently waits in the inbox; the asset changes again in the
/// DAM and the next pass writes the newer version directly. Without more, the inbox retry of
/// the older version would then overwrite it in the PIM (and record its hash), and once the
/// cursor is past the overlap window nothing would bring the newer version back: recording the
/// newer version drops the older pending retry (`WrittenAsset::version`).
#[tokio::test]
async fn a_retried_older_version_does_not_overwrite_a_newer_polled_one() {
    let options = SyncOptions {
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(1),
        ..SyncOptions::default()
    };
    let app = TestApp::start(5, PagingStyle::CursorToken, 100, options, None).await;
    app.sync().await;
    let id = app.dam.ordered_ids(None, Some(FAMILY))[0].clone();

    // v1 fails (the PIM is down): a retry waits in the inbox.
    app.dam
        .set(&id, &json!({"metadata": {"title": "v1"}}))
        .unwrap();
    app.akeneo.set_outage(true);
    let r = app.engine.sync_family(&app.plan(), false).await.unwrap();
    assert_eq!(r.retrying, 1, "{r:?}");
    app.akeneo.set_outage(false);

    // v2 is polled and written before the retry comes due.
    app.dam
        .set(&id, &json!({"metadata": {"title": "v2"}}))
        .unwrap();
    let r = app.engine.sync_family(&app.plan(), false).await.unwrap();
    assert_eq!(r.updated, 1, "{r:?}");

    // The DAM moves on past the overlap window and a pass follows it; then the retry comes due.
    app.dam.advance_clock(Duration::from_secs(600));
    app.dam.touch(1);
    app.engine.sync_family(&app.plan(), false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.engine.drain_inbox("test").await.unwrap();
    app.sync().await;

    let held = app.akeneo.asset(FAMILY, &sanitize_code(&id)).unwrap();
    assert_eq!(
        held["values"]["title"][0]["data"],
        json!("v2"),
        "the PIM holds an older version than the DAM's"
    );
}

/// 429 answers the Akeneo emulator has given so far, all routes together.
fn throttled(akeneo: &AkeneoEmulator) -> u64 {
    akeneo
        .counters()
        .requests
        .values()
        .filter_map(|by_status| by_status.get(&429))
        .sum()
}

/// An asset changed while a pass lists the DAM is listed twice in that pass: its older version
/// on an early page, its newer one on the last. When the early page's PIM write is answered 429
/// (and waits its `Retry-After`, 1 s), the later pages are written meanwhile; the last page must
/// still wait for the early one, or the older version would land last and stay in the PIM (and
/// in the stored hash) once the cursor is past both.
#[tokio::test]
async fn an_older_version_slowed_by_a_429_is_not_written_after_the_newer_one() {
    let options = SyncOptions {
        pages_in_flight: 4,
        ..SyncOptions::default()
    };
    let app = TestApp::start(100, PagingStyle::CursorToken, 10, options, None).await;
    // A first pass: token and structure are cached, the cursor is set.
    let r = app.sync().await;
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");

    // Every asset changes: the next pass lists ten pages of them, 50 ms a page.
    app.dam.advance_clock(Duration::from_secs(60));
    app.dam.touch(100);
    let first = app.dam.ordered_ids(None, Some(FAMILY))[0].clone();
    app.dam.set_faults(assetbridge_emulators::dam::DamFaults {
        latency: Duration::from_millis(50),
        ..Default::default()
    });
    // The first PIM write of the pass (the first page's) is answered 429.
    app.akeneo.set_fault_rates(1.0, 0.0, 0.0);
    let before = throttled(&app.akeneo);
    let pass = tokio::spawn({
        let engine = app.engine.clone();
        let plan = app.plan();
        async move { engine.sync_family(&plan, false).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while throttled(&app.akeneo) == before {
        assert!(std::time::Instant::now() < deadline, "no 429 answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.akeneo.set_fault_rates(0.0, 0.0, 0.0);
    // While the first page waits, the first asset of the listing changes: it moves to the
    // end, onto the last page, which the pass reads in ≈ 0.5 s.
    app.dam.advance_clock(Duration::from_secs(1));
    app.dam
        .set(&first, &json!({"metadata": {"title": "newer"}}))
        .unwrap();
    let r = pass.await.unwrap().unwrap();
    assert_eq!(r.failed + r.retrying, 0, "{r:?}");
    assert!(
        r.seen > 100,
        "the changed asset was listed twice in the pass: {r:?}"
    );
    let held = app.akeneo.asset(FAMILY, &sanitize_code(&first)).unwrap();
    assert_eq!(
        held["values"]["title"][0]["data"],
        json!("newer"),
        "the PIM holds the version of the earlier page"
    );
    assert!(app.pim_behind_dam().is_empty());
}
