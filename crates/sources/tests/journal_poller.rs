//! The journal poller against the AEM emulator's I/O Events journal and IMS (real HTTP on
//! 127.0.0.1), writing into a SQLite inbox in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use assetbridge_core::ChangeKind;
use assetbridge_dam::aem::JournalPosition;
use assetbridge_emulators::aem::{AemEmulator, AemEmulatorConfig, AemEndpoint, Fault, RunningAem};
use assetbridge_sources::journal::{
    JournalImsConfig, JournalSource, JournalSourceConfig, JournalSourceError, JournalStart,
    JournalStats,
};
use assetbridge_sources::webhook::adobe_event_type;
use assetbridge_store::{Claimed, DeadLetterFilter, Store};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn emulator(retention: Duration, page_limit: usize) -> RunningAem {
    AemEmulator::new(AemEmulatorConfig {
        journal_retry_after_secs: 1,
        journal_retention: retention,
        journal_default_limit: page_limit,
        ..AemEmulatorConfig::default()
    })
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

fn config(aem: &RunningAem) -> JournalSourceConfig {
    let c = aem.config();
    let mut config = JournalSourceConfig::new(
        aem.journal_url(),
        c.org_id.clone(),
        JournalImsConfig {
            token_url: aem.ims_token_url(),
            client_id: c.client_id.clone(),
            client_secret: SecretString::from(c.client_secret.clone()),
            scopes: vec!["openid".into(), "AdobeID".into()],
        },
        serde_json::from_value(json!({
            "folders": {"/content/dam/packshots": "packshots"}, "default": "images"
        }))
        .unwrap(),
    );
    config.backoff_min_ms = 20;
    config.backoff_max_ms = 200;
    config.retry_backoff_ms = 10;
    config
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), JournalSourceError>>,
    stats: Arc<JournalStats>,
}

impl Running {
    fn start(config: &JournalSourceConfig, store: &Store) -> Running {
        let source = JournalSource::new(config, store.clone()).unwrap();
        let stats = source.stats();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(source.run(shutdown.clone()));
        Running {
            shutdown,
            task,
            stats,
        }
    }

    async fn stop(self) -> Arc<JournalStats> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops within 10 s")
            .unwrap()
            .unwrap();
        self.stats
    }
}

async fn open_store(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("state.db").to_str().unwrap())
        .await
        .unwrap()
}

/// Seeds assets `from..to` and journals their processing_completed events.
fn emit(aem: &AemEmulator, from: usize, to: usize) -> Vec<Value> {
    (from..to)
        .map(|n| {
            let id = format!("urn:aaid:aem:00000000-0000-0000-0000-{n:012}");
            let folder = if n % 2 == 0 { "packshots" } else { "other" };
            aem.add_asset(
                &id,
                &format!("a{n}.png"),
                &format!("/content/dam/{folder}/a{n}.png"),
                json!({"dc:title": format!("A{n}")}),
            );
            aem.processing_completed(&id).unwrap()
        })
        .collect()
}

async fn inbox(store: &Store) -> Vec<Claimed> {
    let c = store
        .claim("test", 10_000, Duration::from_secs(60))
        .await
        .unwrap();
    store
        .release(&c.iter().map(|c| c.id).collect::<Vec<_>>())
        .await
        .unwrap();
    c
}

async fn wait_for_inbox(store: &Store, n: usize, within: Duration) -> Vec<Claimed> {
    let deadline = Instant::now() + within;
    loop {
        let c = inbox(store).await;
        if c.len() >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} changes in the inbox after {within:?}",
            c.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn position(store: &Store, config: &JournalSourceConfig) -> Option<JournalPosition> {
    JournalSource::new(config, store.clone())
        .unwrap()
        .position()
        .await
        .unwrap()
}

#[tokio::test]
async fn events_become_changes_and_the_position_survives_a_restart() {
    let aem = emulator(Duration::from_secs(7 * 24 * 3600), 3).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let config = config(&aem);
    let events = emit(&aem, 0, 7);

    let run = Running::start(&config, &store);
    let got = wait_for_inbox(&store, 7, Duration::from_secs(5)).await;
    // Let it reach the end of the journal (a 204) before stopping.
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().empty_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = run.stop().await.snapshot();
    assert_eq!(got.len(), 7);
    for e in &events {
        let id = e["data"]["assetId"].as_str().unwrap();
        let c = got
            .iter()
            .find(|c| c.change.dam_id() == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(c.change.event_id.as_deref(), e["eventid"].as_str());
        assert_eq!(c.change.source, "adobe_journal");
        let path = e["data"]["repositoryMetadata"]["repo:path"]
            .as_str()
            .unwrap();
        let want = if path.contains("/packshots/") {
            "packshots"
        } else {
            "images"
        };
        assert_eq!(c.change.family, want);
        assert_eq!(
            adobe_event_type(&c.change),
            Some("aem.assets.asset.processing_completed")
        );
        assert!(matches!(c.change.kind, ChangeKind::Upsert { .. }));
    }
    // Pages of 3: 3 + 3 + 1, then the 204.
    assert_eq!((stats.events, stats.accepted, stats.duplicates), (7, 7, 0));
    assert!(stats.polls >= 4, "{stats:?}");
    let saved = position(&store, &config).await.expect("position stored");
    assert!(!saved.as_str().is_empty());

    // While stopped, more events; the restarted source reads only those.
    let more = emit(&aem, 7, 10);
    let run = Running::start(&config, &store);
    let got = wait_for_inbox(&store, 10, Duration::from_secs(5)).await;
    let stats = run.stop().await.snapshot();
    assert_eq!(got.len(), 10);
    assert_eq!(
        (stats.events, stats.accepted, stats.duplicates),
        (3, 3, 0),
        "only the new events are read after a restart"
    );
    for e in &more {
        assert!(got
            .iter()
            .any(|c| c.change.event_id.as_deref() == e["eventid"].as_str()));
    }
    assert_ne!(position(&store, &config).await.unwrap(), saved);
    // The pseudo family shows up in the family status, named as documented.
    let families = store.family_status().await.unwrap();
    assert!(families
        .iter()
        .any(|f| f.family == "__journal:f89067f2-0d50-4bb2-bf78-209d0eacb6eb"));
}

#[tokio::test]
async fn the_204_retry_after_is_honoured() {
    let aem = emulator(Duration::from_secs(7 * 24 * 3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let started = Instant::now();
    let run = Running::start(&config(&aem), &store);
    // The first poll finds the journal empty: 204 + retry-after: 1. The pause began after
    // `before`, the last look that still saw no empty poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = started;
    loop {
        let now = Instant::now();
        if run.stats.snapshot().empty_polls > 0 {
            break;
        }
        before = now;
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    emit(&aem, 0, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = inbox(&store).await.len();
    let polls = run.stats.snapshot().polls;
    // Only telling while the pause cannot have run out yet: on a loaded machine the steps
    // above may take longer than that.
    if before.elapsed() < Duration::from_millis(900) {
        assert_eq!(early, 0, "polled again before the retry-after");
        assert_eq!(polls, 1);
    }
    wait_for_inbox(&store, 1, Duration::from_secs(10)).await;
    // The second poll came at least the retry-after (1 s) after the first one.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stats.snapshot().polls >= 2);
    run.stop().await;
}

#[tokio::test]
async fn an_expired_position_restarts_from_the_oldest_retained_event() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let config = config(&aem);
    emit(&aem, 0, 3);
    let run = Running::start(&config, &store);
    wait_for_inbox(&store, 3, Duration::from_secs(5)).await;
    run.stop().await;

    // The stored position expires; new events arrive meanwhile.
    aem.advance_clock(Duration::from_secs(2 * 3600));
    let fresh = emit(&aem, 3, 5);
    let run = Running::start(&config, &store);
    let got = wait_for_inbox(&store, 5, Duration::from_secs(5)).await;
    let stats = run.stop().await.snapshot();
    assert_eq!(stats.expired_restarts, 1);
    assert_eq!((stats.events, stats.accepted), (2, 2));
    for e in &fresh {
        assert!(got
            .iter()
            .any(|c| c.change.event_id.as_deref() == e["eventid"].as_str()));
    }
}

#[tokio::test]
async fn an_expired_position_can_restart_from_the_latest() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let mut config = config(&aem);
    config.on_expired = JournalStart::Latest;
    emit(&aem, 0, 2);
    let run = Running::start(&config, &store);
    wait_for_inbox(&store, 2, Duration::from_secs(5)).await;
    run.stop().await;

    aem.advance_clock(Duration::from_secs(2 * 3600));
    emit(&aem, 2, 4); // skipped by the restart at the latest event
    let run = Running::start(&config, &store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().expired_restarts == 0 || run.stats.snapshot().empty_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = emit(&aem, 4, 5);
    let got = wait_for_inbox(&store, 3, Duration::from_secs(5)).await;
    let stats = run.stop().await.snapshot();
    assert_eq!(
        got.len(),
        3,
        "the two events before the restart are skipped"
    );
    assert!(got
        .iter()
        .any(|c| c.change.event_id.as_deref() == after[0]["eventid"].as_str()));
    assert_eq!((stats.expired_restarts, stats.accepted), (1, 1));
}

#[tokio::test]
async fn start_latest_skips_what_is_already_journaled() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let mut config = config(&aem);
    config.start = JournalStart::Latest;
    emit(&aem, 0, 3);
    let run = Running::start(&config, &store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().empty_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The position after `latest=true` is stored right away.
    assert!(position(&store, &config).await.is_some());
    let new = emit(&aem, 3, 4);
    let got = wait_for_inbox(&store, 1, Duration::from_secs(5)).await;
    run.stop().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].change.event_id.as_deref(),
        new[0]["eventid"].as_str()
    );
}

/// `latest=true` on an empty journal answers 204 with `next` equal to the request — another
/// `latest=true`, which would jump past whatever arrived in between (the reference: use it only
/// on the first call). The poller reads from the oldest instead (the journal was empty), so
/// the event journaled after that first poll is read.
#[tokio::test]
async fn start_latest_on_an_empty_journal_misses_nothing_journaled_after() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let mut config = config(&aem);
    config.start = JournalStart::Latest;
    let run = Running::start(&config, &store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().empty_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Empty: no position to store yet.
    assert!(position(&store, &config).await.is_none());
    let new = emit(&aem, 0, 2);
    let got = wait_for_inbox(&store, 2, Duration::from_secs(5)).await;
    let stats = run.stop().await;
    let mut got: Vec<_> = got
        .iter()
        .filter_map(|c| c.change.event_id.clone())
        .collect();
    got.sort();
    let mut want: Vec<_> = new
        .iter()
        .map(|e| e["eventid"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(stats.snapshot().accepted, 2);
    assert!(position(&store, &config).await.is_some());
}

#[tokio::test]
async fn errors_back_off_and_bad_entries_are_dead_lettered() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let mut config = config(&aem);
    config.max_retries = 0;
    // The journal fails three times, then answers.
    aem.fail_next(AemEndpoint::Journal, &[Fault::status(503); 3]);
    emit(&aem, 0, 1);
    // An asset event without an asset id, a journal entry that is not a CloudEvent, a type we
    // do not handle.
    let no_asset_id = aem.envelope(
        "aem.assets.asset.processing_completed",
        json!({"repositoryMetadata": {"repo:path": "/content/dam/packshots/x.png"}}),
    );
    aem.emit(no_asset_id.clone());
    // The same event journaled again (at least once delivery): dead-lettered once.
    aem.emit(no_asset_id);
    aem.emit(json!({"not": "an event"}));
    aem.emit(aem.envelope("aem.sites.page.published", json!({"path": "/content/x"})));
    emit(&aem, 1, 2);

    let run = Running::start(&config, &store);
    let got = wait_for_inbox(&store, 2, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().empty_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = run.stop().await.snapshot();
    assert_eq!(got.len(), 2);
    assert_eq!(stats.errors, 3);
    assert_eq!(
        (stats.events, stats.ignored, stats.dead_lettered),
        (6, 1, 2)
    );
    let dead = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead
        .iter()
        .all(|d| d.reason.kind == "unparseable" && d.source.as_deref() == Some("adobe_journal")));
    assert!(dead.iter().any(|d| d.reason.message.contains("assetId")));
    assert!(dead
        .iter()
        .any(|d| d.reason.message.contains("journal entry")));
}

#[tokio::test]
async fn a_wrong_credential_is_retried_not_fatal() {
    let aem = emulator(Duration::from_secs(3600), 100).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let mut config = config(&aem);
    config.ims.client_secret = SecretString::from("wrong");
    emit(&aem, 0, 1);
    let run = Running::start(&config, &store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.stats.snapshot().errors < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!run.task.is_finished());
    run.stop().await;
    assert!(inbox(&store).await.is_empty());
}
