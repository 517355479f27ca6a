//! A PostgreSQL database of its own for one test, on the server every machine of the project
//! runs (127.0.0.1:5432, trust auth; `ASSETBRIDGE_TEST_POSTGRES_URL` names another), dropped
//! when the guard is.

use std::time::Duration;

use sqlx::Connection;

/// Drops the test database when dropped (on success and on panic).
pub struct PgDatabase {
    admin: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                }
            });
        })
        .join();
    }
}

/// A fresh database and its URL. Panics with a clear message when PostgreSQL is unreachable.
pub async fn database(prefix: &str) -> (PgDatabase, String) {
    let admin = std::env::var("ASSETBRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn =
        match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin))
            .await
        {
            Ok(Ok(c)) => c,
            other => panic!(
                "PostgreSQL at {} is unreachable ({other:?}); this test needs it (start it, or \
                 set ASSETBRIDGE_TEST_POSTGRES_URL)",
                assetbridge_store::redact_url(&admin)
            ),
        };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("ab_{prefix}_{}_{nanos}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    (PgDatabase { admin, name }, url.to_string())
}
