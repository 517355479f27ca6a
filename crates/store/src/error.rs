//! Errors of the state store, and URL redaction.

use std::fmt;

/// Which database a [`Store`](crate::Store) keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An embedded SQLite file (the default): one process, WAL, `synchronous=FULL`.
    Sqlite,
    /// A PostgreSQL database: several processes may share it.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Everything that can go wrong in the state store.
///
/// Messages name the backend and the operation; a URL in a message always has its password
/// replaced by `***`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum StoreError {
    /// The store URL could not be understood.
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The database could not be opened or connected to.
    #[error("{backend} store at `{url}`: cannot open: {message}")]
    Open {
        backend: Backend,
        url: String,
        message: String,
        /// Whether trying again later may succeed (server not reachable yet, as opposed to a
        /// refused login or an unusable path).
        transient: bool,
    },

    /// A statement or transaction failed.
    #[error("{backend} store: {operation} failed: {cause}")]
    Database {
        backend: Backend,
        operation: &'static str,
        cause: sqlx::Error,
    },

    /// The database was migrated by a newer assetbridge than this one.
    #[error(
        "{backend} store: schema version {found} is newer than this build supports ({supported}); \
         upgrade assetbridge"
    )]
    SchemaTooNew {
        backend: Backend,
        found: i64,
        supported: i64,
    },

    /// Something stored could not be decoded (e.g. an inbox payload written by an incompatible
    /// version).
    #[error("{backend} store: {operation}: stored {what} is corrupt: {message}")]
    Corrupt {
        backend: Backend,
        operation: &'static str,
        what: &'static str,
        message: String,
    },

    /// The caller passed something the store cannot accept.
    #[error("{backend} store: {operation}: {message}")]
    InvalidInput {
        backend: Backend,
        operation: &'static str,
        message: String,
    },
}

impl StoreError {
    /// The backend the error comes from, when known.
    pub fn backend(&self) -> Option<Backend> {
        match self {
            StoreError::InvalidUrl { .. } => None,
            StoreError::Open { backend, .. }
            | StoreError::Database { backend, .. }
            | StoreError::SchemaTooNew { backend, .. }
            | StoreError::Corrupt { backend, .. }
            | StoreError::InvalidInput { backend, .. } => Some(*backend),
        }
    }

    /// Whether retrying the same call later may succeed: connection loss, pool timeout, a busy
    /// SQLite file, a PostgreSQL serialization failure, deadlock or shutdown.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Open { transient, .. } => *transient,
            StoreError::Database { cause, .. } => is_transient_sqlx(cause),
            _ => false,
        }
    }
}

pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            matches!(
                code.as_ref(),
                // SQLite: BUSY, LOCKED (primary and extended codes keep the low byte)
                "5" | "6" | "261" | "517" | "262"
                // PostgreSQL: serialization failure, deadlock, admin shutdown, crash, cannot connect now
                | "40001" | "40P01" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("08")
        }
        _ => false,
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// The URL with any password (user-info or `password=` query parameter) replaced by `***`.
///
/// Plain paths and SQLite URLs are returned unchanged; an unparseable URL that might hold a
/// secret is returned as `<unparseable URL>`.
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") {
        return url.to_owned();
    }
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret =
                    k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
                (
                    k.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Removes every occurrence of `secret` from `message`.
pub(crate) fn scrub(message: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => message.replace(s, "***"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/state"),
            "postgres://app:***@db:5432/state"
        );
        let r = redact_url("postgresql://db/state?user=app&password=s3cret&sslmode=require");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("sslmode=require"), "{r}");
        assert_eq!(redact_url("sqlite://state.db"), "sqlite://state.db");
        assert_eq!(redact_url("state/state.db"), "state/state.db");
        assert_eq!(scrub("x s3cret y".into(), Some("s3cret")), "x *** y");
    }
}
