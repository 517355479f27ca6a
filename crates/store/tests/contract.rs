//! The store's contract, run against both backends: every test function below runs once on
//! SQLite (a file in a temporary directory) and once on PostgreSQL (a database of its own,
//! created for the test and dropped after it).
//!
//! PostgreSQL is expected at `postgres://postgres@127.0.0.1:5432/postgres` (override with
//! `ASSETBRIDGE_TEST_POSTGRES_URL`). If it is unreachable the PostgreSQL tests FAIL: nothing is
//! skipped silently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assetbridge_core::{AssetChange, ChangeKind, ContentHash, Cursor, DamAsset};
use assetbridge_store::testing::PgTestDatabase;
use assetbridge_store::{
    Backend, DeadLetterFilter, DeadLetterPayload, DeadLetterReason, EnqueueOutcome, Store,
    StoreOptions, WrittenAsset,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::Connection;

// --- harness ----------------------------------------------------------------------------

struct TestDb {
    backend: Backend,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgTestDatabase>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A nested path: open must create the parent directories.
        let url = format!(
            "sqlite://{}",
            dir.path().join("state/nested/state.db").display()
        );
        Self {
            backend: Backend::Sqlite,
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    async fn postgres() -> Self {
        let db = PgTestDatabase::create("store_test").await;
        Self {
            backend: Backend::Postgres,
            url: db.url().to_owned(),
            _dir: None,
            _pg: Some(db),
        }
    }

    async fn open(&self) -> Store {
        self.open_with(StoreOptions::default()).await
    }

    async fn open_with(&self, options: StoreOptions) -> Store {
        let store = Store::open_with(&self.url, options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url));
        assert_eq!(store.backend(), self.backend);
        store
    }
}

/// Runs each listed test function against SQLite (`sqlite::name`) and PostgreSQL
/// (`postgres::name`).
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

contract_tests!(
    cursors,
    hashes,
    asset_codes,
    dam_ids_by_code,
    written_and_forgotten_together,
    hash_markers_are_not_counted_as_written,
    reconcile_passes_mark_and_look_up_codes,
    abandoned_reconcile_passes_are_cleaned,
    reopen_keeps_state,
    enqueue_is_durable_and_deduplicated,
    newer_change_supersedes_pending,
    a_written_version_drops_older_pending_retries,
    in_flight_asset_keeps_order,
    lease_expiry_returns_entries,
    leases_are_renewed_by_their_holder_only,
    complete_release_and_retry_later,
    dead_letters_move_list_retry_purge,
    raw_and_direct_dead_letters,
    an_unusable_event_is_dead_lettered_once,
    reasons_quoting_a_nul_character_are_stored,
    the_most_recent_dead_letters_in_one_read,
    a_stale_worker_cannot_finish_a_newer_change,
    backlog_counts,
    concurrent_claimers_never_share_an_entry,
    family_lock_is_exclusive,
    wait_for_work_wakes_on_enqueue,
    outcomes_and_prune,
    undecodable_inbox_entry_becomes_dead_letter,
    product_links_are_recorded_with_writes,
    product_link_claims_exclude_each_other,
    product_link_outcomes
);

// Explicit product links: pending links, link targets, per-product claims.
#[path = "contract/links.rs"]
mod links;
use links::*;

// --- fixtures ---------------------------------------------------------------------------

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn upsert(family: &str, dam_id: &str, at: i64, event: Option<&str>) -> AssetChange {
    AssetChange {
        family: family.into(),
        event_id: event.map(Into::into),
        source: "test".into(),
        kind: ChangeKind::Upsert {
            asset: DamAsset {
                id: dam_id.into(),
                updated_at: t(at),
                record: json!({"id": dam_id, "v": at}),
            },
        },
    }
}

fn delete(family: &str, dam_id: &str, at: Option<i64>) -> AssetChange {
    AssetChange {
        family: family.into(),
        event_id: None,
        source: "test".into(),
        kind: ChangeKind::Delete {
            dam_id: dam_id.into(),
            deleted_at: at.map(t),
        },
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn h(s: &str) -> ContentHash {
    ContentHash(s.to_owned())
}

// --- cursors, hashes, codes -------------------------------------------------------------

async fn cursors(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.cursor("packshots").await.unwrap(), None);
    // Nanosecond precision must round-trip exactly: the poller compares cursors.
    let c1 = Cursor {
        updated_at: Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
        dam_id: "a-1".into(),
    };
    let before = Utc::now() - chrono::Duration::seconds(5);
    store.set_cursor("packshots", &c1).await.unwrap();
    assert_eq!(store.cursor("packshots").await.unwrap(), Some(c1.clone()));
    assert_eq!(store.cursor("other").await.unwrap(), None);
    let c2 = Cursor {
        updated_at: t(100),
        dam_id: "b".into(),
    };
    store.set_cursor("packshots", &c2).await.unwrap();
    assert_eq!(store.cursor("packshots").await.unwrap(), Some(c2.clone()));

    let status = store.family_status().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].family, "packshots");
    assert_eq!(status[0].cursor, Some(c2));
    let last = status[0].last_success.expect("last success recorded");
    assert!(
        last > before && last < Utc::now() + chrono::Duration::seconds(5),
        "{last}"
    );
}

async fn hashes(db: &TestDb) {
    let store = db.open().await;
    assert!(store
        .hashes("f", &strings(&["a"]))
        .await
        .unwrap()
        .is_empty());
    assert!(store.hashes("f", &[]).await.unwrap().is_empty());
    store
        .put_hashes(
            "f",
            &[
                ("a".into(), h("ha")),
                ("b".into(), h("hb")),
                ("a".into(), h("ha2")),
            ],
        )
        .await
        .unwrap();
    store
        .put_hashes("g", &[("a".into(), h("other-family"))])
        .await
        .unwrap();
    let got = store.hashes("f", &strings(&["a", "b", "c"])).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["a"], h("ha2"), "last entry of a call wins");
    assert_eq!(got["b"], h("hb"));
    // Overwrite.
    store
        .put_hashes("f", &[("b".into(), h("hb2"))])
        .await
        .unwrap();
    assert_eq!(
        store.hashes("f", &strings(&["b"])).await.unwrap()["b"],
        h("hb2")
    );
    // Remove only what is asked, only in that family.
    store
        .remove_hashes("f", &strings(&["a", "zzz"]))
        .await
        .unwrap();
    let got = store.hashes("f", &strings(&["a", "b"])).await.unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(
        store.hashes("g", &strings(&["a"])).await.unwrap()["a"],
        h("other-family")
    );

    // A page larger than SQLite's classic 999-parameter limit is still one call.
    let many: Vec<(String, ContentHash)> = (0..2500)
        .map(|i| (format!("code-{i}"), h(&format!("h{i}"))))
        .collect();
    store.put_hashes("big", &many).await.unwrap();
    let codes: Vec<String> = many.iter().map(|e| e.0.clone()).collect();
    let got = store.hashes("big", &codes).await.unwrap();
    assert_eq!(got.len(), 2500);
    assert_eq!(got["code-1234"], h("h1234"));

    // assets_written counts distinct codes per put.
    let status: HashMap<String, u64> = store
        .family_status()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.family, s.assets_written))
        .collect();
    assert_eq!(status["f"], 3);
    assert_eq!(status["g"], 1);
    assert_eq!(status["big"], 2500);
}

async fn asset_codes(db: &TestDb) {
    let store = db.open().await;
    store
        .put_asset_codes(
            "f",
            &[
                ("dam-1".into(), "code_1".into()),
                ("dam-2".into(), "code_2".into()),
            ],
        )
        .await
        .unwrap();
    store
        .put_asset_codes("g", &[("dam-1".into(), "g_code".into())])
        .await
        .unwrap();
    let got = store
        .asset_codes("f", &strings(&["dam-1", "dam-2", "dam-3"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["dam-1"], "code_1");
    assert_eq!(got["dam-2"], "code_2");
    // A rename: the DAM id now maps to a new code.
    store
        .put_asset_codes("f", &[("dam-1".into(), "renamed".into())])
        .await
        .unwrap();
    assert_eq!(
        store.asset_codes("f", &strings(&["dam-1"])).await.unwrap()["dam-1"],
        "renamed"
    );
    store
        .remove_asset_codes("f", &strings(&["dam-1"]))
        .await
        .unwrap();
    let got = store
        .asset_codes("f", &strings(&["dam-1", "dam-2"]))
        .await
        .unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["dam-2"]);
    assert_eq!(
        store.asset_codes("g", &strings(&["dam-1"])).await.unwrap()["dam-1"],
        "g_code"
    );
    assert!(store.asset_codes("f", &[]).await.unwrap().is_empty());
}

async fn dam_ids_by_code(db: &TestDb) {
    let store = db.open().await;
    // Two DAM assets written as one code (their mapping gives the same code), a third apart,
    // and the same code in another family.
    store
        .put_asset_codes(
            "f",
            &[
                ("dam-2".into(), "shared".into()),
                ("dam-1".into(), "shared".into()),
                ("dam-3".into(), "own".into()),
            ],
        )
        .await
        .unwrap();
    store
        .put_asset_codes("g", &[("dam-9".into(), "shared".into())])
        .await
        .unwrap();
    let got = store
        .dam_ids_by_code("f", &strings(&["shared", "own", "nobody"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["shared"], strings(&["dam-1", "dam-2"]));
    assert_eq!(got["own"], strings(&["dam-3"]));
    // Written after the lookup above (on SQLite: in the log again, not yet merged), then one
    // holder removed and one renamed.
    store
        .put_asset_codes("f", &[("dam-4".into(), "shared".into())])
        .await
        .unwrap();
    store
        .remove_asset_codes("f", &strings(&["dam-1"]))
        .await
        .unwrap();
    store
        .put_asset_codes("f", &[("dam-3".into(), "renamed".into())])
        .await
        .unwrap();
    let got = store
        .dam_ids_by_code("f", &strings(&["shared", "own"]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got["shared"], strings(&["dam-2", "dam-4"]));
    assert!(store.dam_ids_by_code("f", &[]).await.unwrap().is_empty());
}

async fn hash_markers_are_not_counted_as_written(db: &TestDb) {
    let store = db.open().await;
    store
        .put_hashes("f", &[("c1".into(), h("h1"))])
        .await
        .unwrap();
    store
        .put_hash_markers("f", &[("c1".into(), h("m1")), ("c2".into(), h("m2"))])
        .await
        .unwrap();
    store.put_hash_markers("f", &[]).await.unwrap();
    let hashes = store.hashes("f", &strings(&["c1", "c2"])).await.unwrap();
    assert_eq!((hashes["c1"].as_str(), hashes["c2"].as_str()), ("m1", "m2"));
    let written = store.family_status().await.unwrap()[0].assets_written;
    assert_eq!(written, 1, "markers are not written assets");
    // A real write replaces a marker (and counts).
    store
        .put_hashes("f", &[("c2".into(), h("h2"))])
        .await
        .unwrap();
    let hashes = store.hashes("f", &strings(&["c2"])).await.unwrap();
    assert_eq!(hashes["c2"].as_str(), "h2");
    assert_eq!(store.family_status().await.unwrap()[0].assets_written, 2);
}

async fn written_and_forgotten_together(db: &TestDb) {
    let store = db.open().await;
    let w = |dam: &str, code: &str, hash: &str| WrittenAsset {
        dam_id: dam.into(),
        code: code.into(),
        hash: h(hash),
        version: None,
    };
    store
        .record_written(
            "f",
            &[
                w("d1", "c1", "h1"),
                w("d2", "c2", "h2"),
                w("d1", "c1", "h1b"),
            ],
        )
        .await
        .unwrap();
    let hashes = store.hashes("f", &strings(&["c1", "c2"])).await.unwrap();
    assert_eq!(
        (hashes["c1"].as_str(), hashes["c2"].as_str()),
        ("h1b", "h2")
    );
    let codes = store
        .asset_codes("f", &strings(&["d1", "d2"]))
        .await
        .unwrap();
    assert_eq!((codes["d1"].as_str(), codes["d2"].as_str()), ("c1", "c2"));
    store.record_written("f", &[]).await.unwrap();
    let written = store.family_status().await.unwrap()[0].assets_written;
    assert_eq!(written, 2);

    store
        .forget_assets("f", &[("d1".into(), "c1".into())])
        .await
        .unwrap();
    assert_eq!(
        store
            .hashes("f", &strings(&["c1", "c2"]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .asset_codes("f", &strings(&["d1", "d2"]))
            .await
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["d2"]
    );
}

async fn reconcile_passes_mark_and_look_up_codes(db: &TestDb) {
    let store = db.open().await;
    let w = |dam: &str, code: &str, hash: &str| WrittenAsset {
        dam_id: dam.into(),
        code: code.into(),
        hash: h(hash),
        version: None,
    };
    store
        .record_written("f", &[w("d1", "c1", "h1")])
        .await
        .unwrap();
    assert!(store.last_reconcile("f", false).await.unwrap().is_none());
    let pass = store.begin_reconcile("f").await.unwrap();
    assert_eq!(pass.family, "f");
    let other = store.begin_reconcile("f").await.unwrap();
    assert_ne!(pass.id, other.id, "each pass has its own number");
    // Written during the pass: a later `written_at` than the pass's start, same clock.
    store
        .record_written("f", &[w("d2", "c2", "h2")])
        .await
        .unwrap();
    store
        .record_written("g", &[w("d1", "c1", "g1")])
        .await
        .unwrap();
    store
        .put_hash_markers("f", &[("c3".into(), h("marker"))])
        .await
        .unwrap();
    store
        .mark_seen(pass.id, &strings(&["c1", "x", "c1"]))
        .await
        .unwrap();
    store.mark_seen(pass.id, &strings(&["x"])).await.unwrap();
    store.mark_seen(pass.id, &[]).await.unwrap();

    let codes = strings(&["c1", "c2", "c3", "c4", "x"]);
    let got = store
        .reconcile_lookup("f", Some(pass.id), &codes)
        .await
        .unwrap();
    assert_eq!(got.len(), 4, "c4 is unknown: {got:?}");
    assert_eq!(got["c1"].dam_id.as_deref(), Some("d1"));
    assert_eq!(got["c1"].hash, Some(h("h1")));
    assert!(got["c1"].seen);
    assert!(got["c1"].written_at.unwrap() <= pass.started_at);
    assert_eq!(got["c2"].dam_id.as_deref(), Some("d2"));
    assert!(!got["c2"].seen);
    assert!(got["c2"].written_at.unwrap() >= pass.started_at);
    assert_eq!(got["c3"].dam_id, None, "a marker alone: never written");
    assert_eq!(got["c3"].hash, Some(h("marker")));
    assert!(got["x"].seen && got["x"].dam_id.is_none() && got["x"].hash.is_none());
    // Marks belong to their pass; a dry run (no pass) sees none; families do not mix.
    let theirs = store
        .reconcile_lookup("f", Some(other.id), &codes)
        .await
        .unwrap();
    assert!(theirs.values().all(|s| !s.seen), "{theirs:?}");
    assert!(!theirs.contains_key("x"));
    let dry = store.reconcile_lookup("f", None, &codes).await.unwrap();
    assert!(dry.values().all(|s| !s.seen));
    let g = store
        .reconcile_lookup("g", Some(pass.id), &strings(&["c1", "c2"]))
        .await
        .unwrap();
    assert_eq!(g["c1"].hash, Some(h("g1")));
    assert!(g["c1"].seen, "marks are per pass and code");
    assert!(!g.contains_key("c2"));
    assert!(store
        .reconcile_lookup("f", Some(pass.id), &[])
        .await
        .unwrap()
        .is_empty());

    // A forgotten asset is no longer the connector's.
    store
        .forget_assets("f", &[("d2".into(), "c2".into())])
        .await
        .unwrap();
    let got = store
        .reconcile_lookup("f", Some(pass.id), &strings(&["c2"]))
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");

    // Finishing deletes the pass's marks and records it.
    store.finish_reconcile(pass.id, true).await.unwrap();
    let got = store
        .reconcile_lookup("f", Some(pass.id), &codes)
        .await
        .unwrap();
    assert!(got.values().all(|s| !s.seen), "{got:?}");
    store.finish_reconcile(other.id, false).await.unwrap();
    let last = store.last_reconcile("f", false).await.unwrap().unwrap();
    assert_eq!((last.id, last.complete), (other.id, false));
    let last = store.last_reconcile("f", true).await.unwrap().unwrap();
    assert_eq!((last.id, last.complete), (pass.id, true));
    assert!(last.finished_at >= last.started_at);
    assert!(store.last_reconcile("g", false).await.unwrap().is_none());

    // The state survives a reopen (the pass numbers go on).
    drop(store);
    let store = db.open().await;
    assert_eq!(
        store.last_reconcile("f", true).await.unwrap().unwrap().id,
        pass.id
    );
    let next = store.begin_reconcile("f").await.unwrap();
    assert!(next.id > other.id);
}

async fn abandoned_reconcile_passes_are_cleaned(db: &TestDb) {
    let store = db.open().await;
    let crashed = store.begin_reconcile("f").await.unwrap();
    store
        .mark_seen(crashed.id, &strings(&["c1", "c2"]))
        .await
        .unwrap();
    let elsewhere = store.begin_reconcile("g").await.unwrap();
    store
        .mark_seen(elsewhere.id, &strings(&["c1"]))
        .await
        .unwrap();
    // A young unfinished pass is left alone (it may be running in another process).
    let young = store.begin_reconcile("f").await.unwrap();
    let seen = |store: Store, pass: i64, family: &'static str| async move {
        store
            .reconcile_lookup(family, Some(pass), &strings(&["c1", "c2"]))
            .await
            .unwrap()
            .values()
            .filter(|s| s.seen)
            .count()
    };
    assert_eq!(seen(store.clone(), crashed.id, "f").await, 2);
    store.finish_reconcile(young.id, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Older than the age given: abandoned; its marks go, it is recorded as incomplete.
    let next = store
        .begin_reconcile_with("f", Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(seen(store.clone(), crashed.id, "f").await, 0);
    assert_eq!(
        seen(store.clone(), elsewhere.id, "g").await,
        1,
        "other families untouched"
    );
    assert_eq!(seen(store.clone(), next.id, "f").await, 0);
    let last = store.last_reconcile("f", false).await.unwrap().unwrap();
    assert_eq!(last.id, young.id, "the last finished pass by number");
    store.finish_reconcile(next.id, true).await.unwrap();
    assert!(store.last_reconcile("g", false).await.unwrap().is_none());
}

async fn reopen_keeps_state(db: &TestDb) {
    let store = db.open().await;
    let c = Cursor {
        updated_at: t(5),
        dam_id: "x".into(),
    };
    store.set_cursor("f", &c).await.unwrap();
    store
        .put_hashes("f", &[("a".into(), h("ha"))])
        .await
        .unwrap();
    store
        .put_asset_codes("f", &[("d".into(), "a".into())])
        .await
        .unwrap();
    store
        .enqueue(&[upsert("f", "d", 1, Some("ev-1"))])
        .await
        .unwrap();
    store
        .add_dead_letter(
            &upsert("f", "e", 1, None),
            &DeadLetterReason::new("mapping", "no title"),
        )
        .await
        .unwrap();
    store.close().await;
    drop(store);

    let store = db.open().await; // migrations run again: must be a no-op
    assert_eq!(store.cursor("f").await.unwrap(), Some(c));
    assert_eq!(
        store.hashes("f", &strings(&["a"])).await.unwrap()["a"],
        h("ha")
    );
    assert_eq!(
        store.asset_codes("f", &strings(&["d"])).await.unwrap()["d"],
        "a"
    );
    assert_eq!(store.backlog().await.unwrap().pending, 1);
    assert_eq!(store.dead_letter_count().await.unwrap(), 1);
    // The event id is still remembered after the reopen.
    let again = store
        .enqueue(&[upsert("f", "d", 2, Some("ev-1"))])
        .await
        .unwrap();
    assert_eq!(again.duplicates, 1);
}

// --- inbox ------------------------------------------------------------------------------

const LONG: Duration = Duration::from_secs(60);

fn updated_at(c: &AssetChange) -> Option<DateTime<Utc>> {
    match &c.kind {
        ChangeKind::Upsert { asset } => Some(asset.updated_at),
        ChangeKind::Delete { .. } => None,
    }
}

async fn enqueue_is_durable_and_deduplicated(db: &TestDb) {
    let store = db.open().await;
    let out = store
        .enqueue(&[
            upsert("f", "a", 1, Some("e1")),
            upsert("f", "b", 1, Some("e2")),
            upsert("f", "c", 1, Some("e1")), // same delivery id within the call
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        EnqueueOutcome {
            accepted: 2,
            superseded: 0,
            duplicates: 1,
            stale: 0
        }
    );
    // A redelivery in a later call is dropped, even with new content.
    let out = store
        .enqueue(&[upsert("f", "a", 5, Some("e2")), upsert("f", "d", 1, None)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1));

    // Durable: a second, independent handle sees all of it.
    let other = db.open().await;
    let claimed = other.claim("w", 10, LONG).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.change.dam_id()).collect();
    assert_eq!(ids, vec!["a", "b", "d"]);
    assert_eq!(
        claimed[0].change,
        upsert("f", "a", 1, Some("e1")),
        "the redelivery did not replace it"
    );
    assert!(claimed
        .iter()
        .all(|c| c.attempts == 0 && c.last_error.is_none()));
    let age = Utc::now() - claimed[0].enqueued_at;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(30),
        "{age}"
    );
    assert!(store.enqueue(&[]).await.unwrap() == EnqueueOutcome::default());
}

async fn newer_change_supersedes_pending(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[upsert("f", "a", 10, None), upsert("f", "b", 10, None)])
        .await
        .unwrap();
    let out = store.enqueue(&[upsert("f", "a", 12, None)]).await.unwrap();
    assert_eq!((out.accepted, out.superseded), (1, 1));
    // Older by the DAM's own time: dropped as stale.
    let out = store.enqueue(&[upsert("f", "a", 11, None)]).await.unwrap();
    assert_eq!((out.accepted, out.stale), (0, 1));
    // Same asset twice in one call: the newer wins.
    let out = store
        .enqueue(&[upsert("f", "b", 13, None), upsert("f", "b", 12, None)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.superseded, out.stale), (1, 1, 1));
    // A delete without a time supersedes; the same DAM id in another family is another asset.
    let out = store
        .enqueue(&[delete("f", "b", None), upsert("g", "b", 1, None)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.superseded), (2, 1));

    let b = store.backlog().await.unwrap();
    assert_eq!(b.pending, 3, "one entry per asset");
    let claimed = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let by_asset: HashMap<(String, String), &AssetChange> = claimed
        .iter()
        .map(|c| {
            (
                (c.change.family.clone(), c.change.dam_id().to_owned()),
                &c.change,
            )
        })
        .collect();
    assert_eq!(updated_at(by_asset[&("f".into(), "a".into())]), Some(t(12)));
    assert!(matches!(
        by_asset[&("f".into(), "b".into())].kind,
        ChangeKind::Delete { .. }
    ));
    assert_eq!(updated_at(by_asset[&("g".into(), "b".into())]), Some(t(1)));
    // Grouped by family.
    let families: Vec<&str> = claimed.iter().map(|c| c.change.family.as_str()).collect();
    assert_eq!(families, vec!["f", "f", "g"]);
}

/// Recording a written version drops the asset's pending inbox entries for strictly older
/// versions — not newer ones, not the same time, not one without a time, not one being
/// processed (leased), not another family's.
async fn a_written_version_drops_older_pending_retries(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[
            upsert("f", "old", 10, None),
            upsert("f", "newer", 30, None),
            upsert("f", "same", 20, None),
            delete("f", "untimed", None),
            upsert("f", "leased", 10, None),
            upsert("g", "old", 10, None),
        ])
        .await
        .unwrap();
    // "leased" is being processed.
    let claimed = store.claim("w", 10, LONG).await.unwrap();
    let leased: Vec<i64> = claimed
        .iter()
        .filter(|c| c.change.dam_id() != "leased")
        .map(|c| c.id)
        .collect();
    store.release(&leased).await.unwrap();
    let w = |dam: &str| WrittenAsset {
        dam_id: dam.into(),
        code: format!("c-{dam}"),
        hash: h("h"),
        version: Some(t(20)),
    };
    store
        .record_written("f", &["old", "newer", "same", "untimed", "leased"].map(w))
        .await
        .unwrap();
    let b = store.backlog().await.unwrap();
    assert_eq!((b.pending, b.in_flight), (4, 1), "{b:?}");
    store
        .release(&[claimed
            .iter()
            .find(|c| c.change.dam_id() == "leased")
            .unwrap()
            .id])
        .await
        .unwrap();
    let left: Vec<(String, String)> = store
        .claim("w", 10, LONG)
        .await
        .unwrap()
        .iter()
        .map(|c| (c.change.family.clone(), c.change.dam_id().to_owned()))
        .collect();
    let mut left = left;
    left.sort();
    let want: Vec<(String, String)> = [
        ("f", "leased"),
        ("f", "newer"),
        ("f", "same"),
        ("f", "untimed"),
        ("g", "old"),
    ]
    .iter()
    .map(|(f, d)| (f.to_string(), d.to_string()))
    .collect();
    assert_eq!(left, want);
    // The hashes and codes were recorded as usual.
    assert_eq!(
        store.hashes("f", &strings(&["c-old"])).await.unwrap().len(),
        1
    );
}

async fn in_flight_asset_keeps_order(db: &TestDb) {
    let store = db.open().await;
    store.enqueue(&[upsert("f", "a", 1, None)]).await.unwrap();
    let first = store.claim("w1", 10, LONG).await.unwrap();
    assert_eq!(first.len(), 1);

    // A newer change while the first is in flight: added, not merged into the claimed one.
    let out = store
        .enqueue(&[upsert("f", "a", 2, None), upsert("f", "other", 1, None)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.superseded), (2, 0));
    // Older than the in-flight one: stale.
    let out = store.enqueue(&[upsert("f", "a", 0, None)]).await.unwrap();
    assert_eq!(out.stale, 1);
    // A third change replaces the waiting one (still one waiting entry).
    let out = store.enqueue(&[upsert("f", "a", 3, None)]).await.unwrap();
    assert_eq!((out.accepted, out.superseded), (1, 1));
    let b = store.backlog().await.unwrap();
    assert_eq!((b.pending, b.in_flight), (2, 1));

    // The waiting change for "a" is not claimable while "a" is in flight.
    let next = store.claim("w2", 10, LONG).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.change.dam_id()).collect::<Vec<_>>(),
        vec!["other"]
    );
    assert!(store.claim("w2", 10, LONG).await.unwrap().is_empty());

    store.complete(&[first[0].id]).await.unwrap();
    let next = store.claim("w2", 10, LONG).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(updated_at(&next[0].change), Some(t(3)));

    // Released with a newer change waiting: the released one is dropped in its favour.
    store.enqueue(&[upsert("f", "a", 4, None)]).await.unwrap();
    store.release(&[next[0].id]).await.unwrap();
    let after = store.claim("w3", 10, LONG).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(updated_at(&after[0].change), Some(t(4)));
    // Retried later with a newer change waiting: same.
    store.enqueue(&[upsert("f", "a", 5, None)]).await.unwrap();
    store
        .retry_later(after[0].id, "boom", Duration::from_secs(3600))
        .await
        .unwrap();
    let after = store.claim("w3", 10, LONG).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(updated_at(&after[0].change), Some(t(5)));
    assert_eq!(after[0].attempts, 0);
    store.complete(&[after[0].id]).await.unwrap();
    let b = store.backlog().await.unwrap();
    assert_eq!(
        (b.pending, b.in_flight),
        (0, 1),
        "only `other` is left, in flight"
    );
}

async fn lease_expiry_returns_entries(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[upsert("f", "a", 1, None), upsert("f", "b", 1, None)])
        .await
        .unwrap();
    // The lease must outlive the next two claims (commits with fsync, slow on a loaded
    // machine), and then run out.
    let first = store.claim("w1", 1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 1, "limit respected");
    assert_eq!(first[0].change.dam_id(), "a", "oldest first");
    let second = store.claim("w2", 10, LONG).await.unwrap();
    assert_eq!(
        second.iter().map(|c| c.change.dam_id()).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert!(store.claim("w2", 10, LONG).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    // w1 vanished: its entry comes back, with the lost lease counted as an attempt.
    let again = store.claim("w3", 10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].change, first[0].change);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("the lease of worker `w1` ran out before it finished")
    );
    assert!(again[0]
        .last_error
        .as_deref()
        .unwrap()
        .starts_with(assetbridge_store::LEASE_RAN_OUT));
    // A change arriving while the expired entry was re-leased still waits behind it.
    store.enqueue(&[upsert("f", "a", 2, None)]).await.unwrap();
    assert!(store.claim("w4", 10, LONG).await.unwrap().is_empty());
    assert!(store.claim("w4", 0, LONG).await.unwrap().is_empty());
}

async fn leases_are_renewed_by_their_holder_only(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[upsert("f", "a", 1, None), upsert("f", "b", 1, None)])
        .await
        .unwrap();
    // Renewed every half lease: a renewal late by less than that (a loaded machine) still
    // comes in time.
    let short = Duration::from_secs(2);
    let held = store.claim("w1", 10, short).await.unwrap();
    let ids: Vec<i64> = held.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 2);
    // Renewed before it runs out, again and again: nobody else gets the entries, though the
    // first lease has long run out.
    for _ in 0..3 {
        tokio::time::sleep(short / 2).await;
        assert_eq!(store.renew_leases("w1", &ids, short).await.unwrap(), 2);
        assert!(store.claim("w2", 10, LONG).await.unwrap().is_empty());
    }
    // Another worker's name renews nothing; a finished entry is not renewed.
    assert_eq!(store.renew_leases("w2", &ids, LONG).await.unwrap(), 0);
    store.complete(&ids[..1]).await.unwrap();
    assert_eq!(store.renew_leases("w1", &ids, short).await.unwrap(), 1);
    assert_eq!(store.renew_leases("w1", &[], short).await.unwrap(), 0);
    // Not renewed: taken over once the lease ran out (an attempt counted), and then the
    // first holder's renewal no longer reaches it.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let taken = store.claim("w2", 10, LONG).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, ids[1]);
    assert_eq!(taken[0].attempts, 1);
    assert_eq!(store.renew_leases("w1", &ids, LONG).await.unwrap(), 0);
    // A released entry is not under a lease: nothing to renew, and claiming it again counts
    // no attempt.
    store.release(&ids[1..]).await.unwrap();
    assert_eq!(store.renew_leases("w2", &ids, LONG).await.unwrap(), 0);
    let back = store.claim("w3", 10, LONG).await.unwrap();
    assert_eq!((back.len(), back[0].attempts), (1, 1));
}

async fn complete_release_and_retry_later(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[
            upsert("f", "a", 1, None),
            upsert("f", "b", 1, None),
            upsert("f", "c", 1, None),
        ])
        .await
        .unwrap();
    let c = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(c.len(), 3);
    let (a, b, cc) = (c[0].id, c[1].id, c[2].id);

    store.complete(&[a, 999_999]).await.unwrap();
    store.release(&[b]).await.unwrap();
    // Long enough that the claim and backlog below surely run before it is due.
    store
        .retry_later(cc, "PIM said 503", Duration::from_secs(2))
        .await
        .unwrap();

    let b_again = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(
        b_again.len(),
        1,
        "released entry is claimable at once; retried one is not yet"
    );
    assert_eq!((b_again[0].id, b_again[0].attempts), (b, 0));
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.in_flight, backlog.delayed),
        (1, 1, 1)
    );

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let retried = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, cc);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("PIM said 503"));
    store
        .retry_later(cc, "again", Duration::ZERO)
        .await
        .unwrap();
    let retried = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(
        (retried[0].attempts, retried[0].last_error.as_deref()),
        (2, Some("again"))
    );

    store.complete(&[b, cc]).await.unwrap();
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.in_flight, backlog.oldest_age),
        (0, 0, None)
    );
    // Releasing something unknown or unclaimed is harmless.
    store.release(&[a, 424242]).await.unwrap();
    store.complete(&[]).await.unwrap();
    store.release(&[]).await.unwrap();
}

async fn backlog_counts(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.backlog().await.unwrap(), Default::default());
    let changes: Vec<AssetChange> = (0..10)
        .map(|i| upsert("f", &format!("a{i}"), 1, None))
        .collect();
    store.enqueue(&changes).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let claimed = store.claim("w", 4, LONG).await.unwrap();
    store
        .retry_later(claimed[0].id, "x", Duration::from_secs(3600))
        .await
        .unwrap();
    let b = store.backlog().await.unwrap();
    assert_eq!(b.pending, 7);
    assert_eq!(b.in_flight, 3);
    assert_eq!(b.delayed, 1);
    let age = b.oldest_age.expect("oldest age");
    assert!(
        age >= Duration::from_millis(40) && age < Duration::from_secs(30),
        "{age:?}"
    );
}

// --- dead letters -----------------------------------------------------------------------

async fn dead_letters_move_list_retry_purge(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[
            upsert("packshots", "a", 1, Some("ev-a")),
            upsert("packshots", "b", 1, None),
            upsert("ambiance", "c", 1, None),
        ])
        .await
        .unwrap();
    let claimed = store.claim("w", 10, LONG).await.unwrap();
    let id_of = |dam: &str| {
        claimed
            .iter()
            .find(|c| c.change.dam_id() == dam)
            .unwrap()
            .id
    };
    store
        .retry_later(id_of("a"), "timeout", Duration::ZERO)
        .await
        .unwrap();
    let a = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(a.len(), 1);

    let rejected = DeadLetterReason {
        kind: "pim_rejected".into(),
        message: "PIM refused the asset".into(),
        pim_status: Some(422),
        pim_message: Some("Property \"media\" expects a valid file key".into()),
        pim_errors: Some(json!([{"property": "media", "message": "File Not Found"}])),
    };
    store.dead_letter(a[0].id, &rejected).await.unwrap();
    store
        .dead_letter(
            id_of("b"),
            &DeadLetterReason::new("mapping", "title is required"),
        )
        .await
        .unwrap();
    store
        .dead_letter(
            id_of("c"),
            &DeadLetterReason::new("retries_exhausted", "5 attempts: HTTP 503"),
        )
        .await
        .unwrap();
    store.dead_letter(123_456, &rejected).await.unwrap(); // unknown id: nothing happens
    assert_eq!(
        store.backlog().await.unwrap(),
        Default::default(),
        "moved out of the inbox"
    );
    assert_eq!(store.dead_letter_count().await.unwrap(), 3);

    let all = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let first = &all[0];
    assert_eq!(first.family.as_deref(), Some("packshots"));
    assert_eq!(first.dam_id.as_deref(), Some("a"));
    assert_eq!(first.event_id.as_deref(), Some("ev-a"));
    assert_eq!(first.source.as_deref(), Some("test"));
    assert_eq!(first.reason, rejected);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.last_error.as_deref(), Some("timeout"));
    assert!(first.enqueued_at.is_some());
    assert_eq!(
        first.payload,
        DeadLetterPayload::Change(upsert("packshots", "a", 1, Some("ev-a")))
    );
    assert_eq!(
        store.dead_letter_by_id(first.id).await.unwrap().as_ref(),
        Some(first)
    );
    assert_eq!(store.dead_letter_by_id(-1).await.unwrap(), None);

    let list = |f: DeadLetterFilter| {
        let store = store.clone();
        async move {
            store
                .dead_letters(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.dam_id.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(DeadLetterFilter {
            family: Some("packshots".into()),
            ..Default::default()
        })
        .await,
        vec!["a", "b"]
    );
    // error_contains: case-insensitive, over message, PIM message and PIM errors.
    for needle in ["FILE KEY", "file not found", "refused"] {
        assert_eq!(
            list(DeadLetterFilter {
                error_contains: Some(needle.into()),
                ..Default::default()
            })
            .await,
            vec!["a"],
            "{needle}"
        );
    }
    // LIKE wildcards are plain text.
    assert!(list(DeadLetterFilter {
        error_contains: Some("%".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    assert_eq!(
        list(DeadLetterFilter {
            kind: Some("retries_exhausted".into()),
            ..Default::default()
        })
        .await,
        vec!["c"]
    );
    // Paging.
    let page1 = store
        .dead_letters(&DeadLetterFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page1.len(), 2);
    let page2 = list(DeadLetterFilter {
        after_id: Some(page1[1].id),
        ..Default::default()
    })
    .await;
    assert_eq!(page2, vec!["c"]);
    assert_eq!(
        list(DeadLetterFilter::ids(vec![all[2].id, all[0].id])).await,
        vec!["a", "c"]
    );

    // Retry: back into the inbox with attempts reset; event-id dedup does not apply.
    let moved = store
        .retry_dead_letters(&DeadLetterFilter {
            family: Some("packshots".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(store.dead_letter_count().await.unwrap(), 1);
    let back = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(
        back.iter().map(|c| c.change.dam_id()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(back.iter().all(|c| c.attempts == 0));
    assert_eq!(back[0].change.event_id.as_deref(), Some("ev-a"));
    // Nothing matches any more: nothing moves.
    assert_eq!(
        store
            .retry_dead_letters(&DeadLetterFilter {
                family: Some("packshots".into()),
                ..Default::default()
            })
            .await
            .unwrap(),
        0
    );

    // Purge with a filter, then everything.
    for c in &back {
        store
            .dead_letter(c.id, &DeadLetterReason::new("mapping", "still bad"))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .purge_dead_letters(&DeadLetterFilter {
                kind: Some("mapping".into()),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.dead_letter_count().await.unwrap(), 2);
    assert_eq!(
        store
            .purge_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
}

/// A raw dead letter with an event id is written once per (source, event id): a redelivery of
/// the same unusable event adds nothing; another event, another source, or the same id in an
/// ordinary dead letter do not count.
async fn an_unusable_event_is_dead_lettered_once(db: &TestDb) {
    let store = db.open().await;
    let why = DeadLetterReason::new("unparseable", "no asset id");
    let first = store
        .add_raw_event_dead_letter(None, "ev-1", "adobe", b"{}", &why)
        .await
        .unwrap();
    assert!(first.is_some());
    let again = store
        .add_raw_event_dead_letter(None, "ev-1", "adobe", b"{}", &why)
        .await
        .unwrap();
    assert_eq!(again, None, "a redelivery");
    // An ordinary dead letter of a change with that event id is not a raw one.
    store
        .add_dead_letter(&upsert("f", "x", 1, Some("ev-2")), &why)
        .await
        .unwrap();
    for (event, source) in [("ev-2", "adobe"), ("ev-1", "journal")] {
        let id = store
            .add_raw_event_dead_letter(None, event, source, b"{}", &why)
            .await
            .unwrap();
        assert!(id.is_some(), "{event} from {source}");
    }
    let d = store
        .dead_letter_by_id(first.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.event_id.as_deref(), d.source.as_deref()),
        (Some("ev-1"), Some("adobe"))
    );
    assert_eq!(store.dead_letter_count().await.unwrap(), 4);
}

/// A reason that quotes outside data may hold a NUL character, which PostgreSQL's `text`
/// refuses: the dead letter (and a retry's error) is still written — the character shown as
/// U+FFFD — rather than failing for ever (a queue message given back to the broker each time).
async fn reasons_quoting_a_nul_character_are_stored(db: &TestDb) {
    let store = db.open().await;
    let why = DeadLetterReason::new("unparseable", "keys: a\0b, c");
    let raw = store
        .add_raw_dead_letter(Some("f"), Some("amqp"), b"{\"a\\u0000b\":1}", &why)
        .await
        .unwrap();
    let ev = store
        .add_raw_event_dead_letter(Some("f"), "ev\0nul", "adobe", b"{}", &why)
        .await
        .unwrap()
        .unwrap();
    store.enqueue(&[upsert("f", "x", 1, None)]).await.unwrap();
    let claimed = store.claim("w", 10, Duration::from_secs(60)).await.unwrap();
    store
        .retry_later(claimed[0].id, "PIM said: bad\0value", Duration::ZERO)
        .await
        .unwrap();
    let claimed = store.claim("w", 10, Duration::from_secs(60)).await.unwrap();
    let mut pim = DeadLetterReason::new("pim_rejected", "rejected\0");
    pim.pim_message = Some("value \0 refused".into());
    store.dead_letter(claimed[0].id, &pim).await.unwrap();

    let all = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let by_id = |id: i64| all.iter().find(|d| d.id == id).unwrap();
    // Raw bytes are kept exactly; text shows the character as U+FFFD on PostgreSQL.
    assert_eq!(
        by_id(raw).payload,
        DeadLetterPayload::Raw(b"{\"a\\u0000b\":1}".to_vec())
    );
    let shown = |s: &str| s.replace('\u{FFFD}', "\0");
    assert_eq!(shown(&by_id(raw).reason.message), "keys: a\0b, c");
    assert_eq!(shown(by_id(ev).event_id.as_deref().unwrap()), "ev\0nul");
    let moved = all
        .iter()
        .find(|d| d.reason.kind == "pim_rejected")
        .unwrap();
    assert_eq!(shown(&moved.reason.message), "rejected\0");
    assert_eq!(
        shown(moved.reason.pim_message.as_deref().unwrap()),
        "value \0 refused"
    );
    assert_eq!(
        shown(moved.last_error.as_deref().unwrap()),
        "PIM said: bad\0value"
    );
    if db.backend == Backend::Postgres {
        assert!(!moved.reason.message.contains('\0'));
    }
}

/// A worker whose lease expired still holds the entry's id. Another worker re-claimed the
/// entry and gave it back for a retry; a newer version of the asset then took its place. The
/// stale worker's `complete`, `retry_later` or `dead_letter` by the old id must not touch the
/// newer change (before, it took the pending entry's place under the same id: completing the
/// old one deleted v2, never written).
async fn a_stale_worker_cannot_finish_a_newer_change(db: &TestDb) {
    let store = db.open().await;
    for stale_end in ["complete", "retry_later", "dead_letter"] {
        let asset = format!("a-{stale_end}");
        store
            .enqueue(&[upsert("f", &asset, 1, None)])
            .await
            .unwrap();
        let c1 = store
            .claim("w1", 1, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(c1.len(), 1);
        tokio::time::sleep(Duration::from_millis(450)).await;
        let c2 = store
            .claim("w2", 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c2.iter().map(|c| c.id).collect::<Vec<_>>(), [c1[0].id]);
        store
            .retry_later(c2[0].id, "PIM 503", Duration::ZERO)
            .await
            .unwrap();
        // A newer version arrives while the entry waits for its retry.
        store
            .enqueue(&[upsert("f", &asset, 2, None)])
            .await
            .unwrap();
        // The first worker finally ends its write of v1, by the old id.
        match stale_end {
            "complete" => store.complete(&[c1[0].id]).await.unwrap(),
            "retry_later" => store
                .retry_later(c1[0].id, "late", Duration::from_secs(3600))
                .await
                .unwrap(),
            _ => store
                .dead_letter(
                    c1[0].id,
                    &DeadLetterReason::new("pim_rejected", "v1 refused"),
                )
                .await
                .unwrap(),
        }
        let c3 = store
            .claim("w3", 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c3.len(), 1, "{stale_end}: v2 is still there, due now");
        match &c3[0].change.kind {
            ChangeKind::Upsert { asset } => assert_eq!(asset.updated_at, t(2), "{stale_end}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c3[0].attempts, 0, "{stale_end}");
        assert_eq!(
            c3[0].enqueued_at, c1[0].enqueued_at,
            "{stale_end}: when the first of them entered the inbox"
        );
        store.complete(&[c3[0].id]).await.unwrap();
    }
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
}

/// The status page's "recent failures": the highest ids, oldest of them first.
async fn the_most_recent_dead_letters_in_one_read(db: &TestDb) {
    let store = db.open().await;
    assert!(store.recent_dead_letters(3).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let why = DeadLetterReason::new("mapping", format!("failure {i}"));
        ids.push(
            store
                .add_dead_letter(&upsert("f", &format!("a{i}"), i, None), &why)
                .await
                .unwrap(),
        );
    }
    let recent = store.recent_dead_letters(3).await.unwrap();
    assert_eq!(
        recent.iter().map(|d| d.id).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    assert_eq!(recent[2].reason.message, "failure 4");
    assert_eq!(store.recent_dead_letters(10).await.unwrap().len(), 5);
}

async fn raw_and_direct_dead_letters(db: &TestDb) {
    let store = db.open().await;
    let change = upsert("f", "x", 7, Some("ev-x"));
    // The poller path: the change never entered the inbox.
    let id = store
        .add_dead_letter(&change, &DeadLetterReason::new("mapping", "no code"))
        .await
        .unwrap();
    let raw = b"\xff\xfenot json".to_vec();
    let raw_id = store
        .add_raw_dead_letter(
            Some("f"),
            Some("amqp"),
            &raw,
            &DeadLetterReason::new("unparseable", "bad JSON"),
        )
        .await
        .unwrap();
    let d = store.dead_letter_by_id(id).await.unwrap().unwrap();
    assert_eq!(d.payload, DeadLetterPayload::Change(change.clone()));
    assert_eq!((d.attempts, d.enqueued_at), (0, None));
    let r = store.dead_letter_by_id(raw_id).await.unwrap().unwrap();
    assert_eq!(r.payload, DeadLetterPayload::Raw(raw));
    assert_eq!(
        (r.family.as_deref(), r.source.as_deref(), r.dam_id),
        (Some("f"), Some("amqp"), None)
    );

    // Retrying everything moves the change, leaves the raw message.
    assert_eq!(
        store
            .retry_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.dead_letter_count().await.unwrap(), 1);
    let c = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(c.len(), 1);
    // Marked as replayed (the write path reads the asset from the DAM again), once however
    // often it is replayed; otherwise the change as it was.
    let mut replayed = change.clone();
    replayed.mark_replayed();
    assert_eq!(c[0].change, replayed);
    assert_eq!(
        c[0].change.source,
        format!("{}{}", change.source, assetbridge_core::REPLAYED)
    );

    // Retrying a dead letter older than the asset's pending change drops it in its favour.
    store
        .dead_letter(c[0].id, &DeadLetterReason::new("mapping", "x"))
        .await
        .unwrap();
    store.enqueue(&[upsert("f", "x", 9, None)]).await.unwrap();
    assert_eq!(
        store
            .retry_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        1
    );
    let c = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(updated_at(&c[0].change), Some(t(9)));

    // Replayed twice: marked once.
    let mut c = c;
    for _ in 0..2 {
        store
            .dead_letter(c[0].id, &DeadLetterReason::new("mapping", "x"))
            .await
            .unwrap();
        store
            .retry_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap();
        c = store.claim("w", 10, LONG).await.unwrap();
        assert_eq!(c.len(), 1);
    }
    assert!(c[0].change.is_replayed());
    assert_eq!(c[0].change.origin(), "test");
    assert_eq!(
        c[0].change
            .source
            .matches(assetbridge_core::REPLAYED)
            .count(),
        1
    );
}

// --- scale-out --------------------------------------------------------------------------

async fn concurrent_claimers_never_share_an_entry(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await; // a second handle: on PostgreSQL, like a second process
    let changes: Vec<AssetChange> = (0..1000)
        .map(|i| upsert("f", &format!("a{i:04}"), 1, None))
        .collect();
    for chunk in changes.chunks(100) {
        assert_eq!(a.enqueue(chunk).await.unwrap().accepted, 100);
    }
    let mut tasks = Vec::new();
    for (n, store) in [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let worker = format!("w{n}");
            for _ in 0..10_000 {
                let batch = store.claim(&worker, 7, LONG).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
                mine.extend(
                    batch
                        .into_iter()
                        .map(|c| (c.id, c.change.dam_id().to_owned())),
                );
                store.complete(&ids).await.unwrap();
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut per_task = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_task.push(mine.len());
        for (id, dam) in mine {
            assert!(seen.insert(id), "entry {id} ({dam}) claimed twice");
        }
    }
    assert_eq!(
        seen.len(),
        1000,
        "every entry claimed exactly once (per task: {per_task:?})"
    );
    assert_eq!(a.backlog().await.unwrap(), Default::default());
}

async fn family_lock_is_exclusive(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let lock = a
        .try_lock_family("packshots")
        .await
        .unwrap()
        .expect("first lock");
    assert_eq!(lock.family(), "packshots");
    assert!(
        b.try_lock_family("packshots").await.unwrap().is_none(),
        "held by the other handle"
    );
    assert!(
        a.try_lock_family("packshots").await.unwrap().is_none(),
        "not re-entrant"
    );
    let other = b
        .try_lock_family("ambiance")
        .await
        .unwrap()
        .expect("another family is free");
    let mut lock = lock;
    assert!(lock.is_held().await);
    lock.unlock().await.unwrap();
    let mut taken = b
        .try_lock_family("packshots")
        .await
        .unwrap()
        .expect("free after unlock");
    assert!(taken.is_held().await);
    drop(taken);
    // Dropping releases it too (on PostgreSQL asynchronously: give it a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(l) = a.try_lock_family("packshots").await.unwrap() {
            l.unlock().await.unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "lock not released by drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.unlock().await.unwrap();
}

async fn wait_for_work_wakes_on_enqueue(db: &TestDb) {
    let waiter = db.open().await;
    // PostgreSQL: another handle (NOTIFY crosses processes). SQLite serves one process: a clone.
    let producer = match db.backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => waiter.clone(),
    };
    // Nothing to do: returns after the timeout.
    let start = Instant::now();
    waiter.wait_for_work(Duration::from_millis(300)).await;
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(250), "{idle:?}");
    // Let a possibly stored wake-up permit be consumed, and the listener start.
    waiter.wait_for_work(Duration::from_millis(300)).await;

    let w = waiter.clone();
    let waiting = tokio::spawn(async move {
        let start = Instant::now();
        w.wait_for_work(Duration::from_secs(10)).await;
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer
        .enqueue(&[upsert("f", "a", 1, None)])
        .await
        .unwrap();
    let waited = waiting.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "woken by the enqueue, not the timeout: {waited:?}"
    );
    assert_eq!(waiter.claim("w", 10, LONG).await.unwrap().len(), 1);
}

async fn outcomes_and_prune(db: &TestDb) {
    let store = db
        .open_with(StoreOptions {
            seen_event_retention: Duration::from_millis(100),
            ..Default::default()
        })
        .await;
    store.record_outcomes("f", 90, 10).await.unwrap();
    store.record_outcomes("f", 0, 0).await.unwrap();
    store.record_outcomes("g", 5, 0).await.unwrap();
    let f = store
        .outcomes(Duration::from_secs(300), Some("f"))
        .await
        .unwrap();
    assert_eq!((f.succeeded, f.failed), (90, 10));
    assert!((f.error_rate() - 0.1).abs() < 1e-9);
    let all = store
        .outcomes(Duration::from_secs(300), None)
        .await
        .unwrap();
    assert_eq!((all.succeeded, all.failed), (95, 10));

    store
        .enqueue(&[upsert("f", "a", 1, Some("ev"))])
        .await
        .unwrap();
    assert_eq!(
        store
            .enqueue(&[upsert("f", "b", 1, Some("ev"))])
            .await
            .unwrap()
            .duplicates,
        1
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pruned = store.prune().await.unwrap();
    assert_eq!(pruned.seen_events, 1);
    assert_eq!(pruned.outcome_buckets, 0, "outcome counters are kept 24 h");
    // Past the retention window the id is forgotten.
    assert_eq!(
        store
            .enqueue(&[upsert("f", "b", 1, Some("ev"))])
            .await
            .unwrap()
            .accepted,
        1
    );
}

/// Corrupts one inbox payload behind the store's back.
async fn corrupt_payload(db: &TestDb, dam_id: &str) {
    let sql = "UPDATE inbox SET payload = '{not json' WHERE dam_id = ";
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            sqlx::query(&format!("{sql}?1"))
                .bind(dam_id)
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(&format!("{sql}$1"))
                .bind(dam_id)
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
    }
}

async fn undecodable_inbox_entry_becomes_dead_letter(db: &TestDb) {
    let store = db.open().await;
    store
        .enqueue(&[upsert("f", "good", 1, None), upsert("f", "bad", 1, None)])
        .await
        .unwrap();
    corrupt_payload(db, "bad").await;
    let claimed = store.claim("w", 10, LONG).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.change.dam_id())
            .collect::<Vec<_>>(),
        vec!["good"]
    );
    let dl = store
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason.kind, "unparseable");
    assert_eq!(dl[0].dam_id.as_deref(), Some("bad"));
    assert_eq!(dl[0].payload, DeadLetterPayload::Raw(b"{not json".to_vec()));
    assert_eq!(store.backlog().await.unwrap().in_flight, 1);
}

// --- backend-independent ----------------------------------------------------------------

#[tokio::test]
async fn errors_never_show_the_password() {
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let e = Store::open_with("postgres://app:sup3r-secret@127.0.0.1:1/state", options)
        .await
        .expect_err("nothing listens on port 1");
    let msg = format!("{e} {e:?}");
    assert!(!msg.contains("sup3r-secret"), "{msg}");
    assert!(
        msg.contains("PostgreSQL") && msg.contains("app:***@127.0.0.1:1"),
        "{msg}"
    );
    assert!(e.is_transient(), "nothing listening yet: worth retrying");
    // A refusal (here: no such database) is not worth retrying.
    let mut missing = url::Url::parse(&assetbridge_store::testing::postgres_admin_url()).unwrap();
    missing.set_path("/ab_store_no_such_database");
    let e = Store::open(missing.as_str())
        .await
        .expect_err("no such database");
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = Store::open("redis://x").await.expect_err("unsupported");
    assert!(e.to_string().contains("unsupported scheme"), "{e}");
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.enqueue(&[upsert("f", "a", 1, None)]).await.unwrap();
    assert_eq!(store.claim("w", 10, LONG).await.unwrap().len(), 1);
    store
        .put_hashes("f", &[("a".into(), h("x"))])
        .await
        .unwrap();
    assert_eq!(store.hashes("f", &strings(&["a"])).await.unwrap().len(), 1);
}

#[tokio::test]
async fn plain_path_opens_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store
        .set_cursor(
            "f",
            &Cursor {
                updated_at: t(1),
                dam_id: "x".into(),
            },
        )
        .await
        .unwrap();
    assert!(path.exists());
    let _ = Arc::new(store);
}
