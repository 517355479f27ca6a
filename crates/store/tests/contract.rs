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
use assetbridge_store::{
    Backend, DeadLetterFilter, DeadLetterPayload, DeadLetterReason, EnqueueOutcome, Store,
    StoreOptions,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::Connection;

// --- harness ----------------------------------------------------------------------------

struct TestDb {
    backend: Backend,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>, // (admin URL, database name)
}

fn admin_url() -> String {
    std::env::var("ASSETBRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
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
            pg: None,
        }
    }

    async fn postgres() -> Self {
        let admin = admin_url();
        let mut conn = match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "PostgreSQL at {} is unreachable ({e}); the PostgreSQL contract tests need it \
                 (start it, or set ASSETBRIDGE_TEST_POSTGRES_URL)",
                assetbridge_store::redact_url(&admin)
            ),
            Err(_) => panic!(
                "PostgreSQL at {} did not answer within 10 s; the PostgreSQL contract tests need it",
                assetbridge_store::redact_url(&admin)
            ),
        };
        let name = format!("ab_store_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&format!("/{name}"));
        Self {
            backend: Backend::Postgres,
            url: url.to_string(),
            _dir: None,
            pg: Some((admin, name)),
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

impl Drop for TestDb {
    fn drop(&mut self) {
        // Runs on success and on panic: the test database never outlives the test.
        if let Some((admin, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut c)
                        .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
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

contract_tests!(cursors, hashes, asset_codes, reopen_keeps_state,);

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
