//! Test support (feature `test-support`, for the workspace's tests only): a PostgreSQL
//! database of one test's own on the server every machine of the project runs (127.0.0.1:5432,
//! trust auth; `ASSETBRIDGE_TEST_POSTGRES_URL` names another), dropped with its guard.

use std::time::Duration;

use sqlx::Connection;

use crate::redact_url;

/// The admin URL the test databases are created from.
pub fn postgres_admin_url() -> String {
    std::env::var("ASSETBRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database, dropped (with its connections) when this is dropped — on success and on
/// panic.
pub struct PgTestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgTestDatabase {
    /// Creates `ab_<prefix>_<pid>_<nanos>`. Panics with a clear message when PostgreSQL is
    /// unreachable (the tests that need it fail rather than pass unchecked).
    pub async fn create(prefix: &str) -> Self {
        let admin = postgres_admin_url();
        let connect = sqlx::PgConnection::connect(&admin);
        let mut conn = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "PostgreSQL at {} is unreachable ({e}); this test needs it (start it, or set \
                 ASSETBRIDGE_TEST_POSTGRES_URL)",
                redact_url(&admin)
            ),
            Err(_) => panic!(
                "PostgreSQL at {} did not answer within 10 s; this test needs it",
                redact_url(&admin)
            ),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let name = format!("ab_{prefix}_{}_{nanos}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&format!("/{name}"));
        Self {
            admin,
            name,
            url: url.to_string(),
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgTestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let connect = sqlx::PgConnection::connect(&admin);
                if let Ok(Ok(mut c)) = tokio::time::timeout(Duration::from_secs(10), connect).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(&drop).execute(&mut c).await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
