//! Errors of the Akeneo client.

use std::time::Duration;

use serde_json::Value;

/// Why an Akeneo call failed as a whole. Each variant that comes from the PIM keeps its HTTP
/// status and the PIM's message.
#[derive(Debug, thiserror::Error)]
pub enum AkeneoError {
    /// A failure worth retrying later: 408, 5xx, timeout, dropped connection, after the client's
    /// own bounded retries (`max_retries`).
    #[error("transient Akeneo failure{}: {message}", fmt_status(*.status))]
    Transient {
        /// The HTTP status, when an answer arrived.
        status: Option<u16>,
        message: String,
    },
    /// Still answered 429 after `max_rate_limit_retries` waits.
    #[error("Akeneo rate limit: still throttled, last Retry-After {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Authentication failed: bad credentials (token endpoint 422), or 401 even with a fresh token.
    #[error("Akeneo authentication failed (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// The PIM refused the request for good (4xx other than 401/408/429), with its message and
    /// validation `errors` when it gave them.
    #[error("Akeneo refused the request (HTTP {status}): {message}")]
    Request {
        status: u16,
        message: String,
        errors: Option<Value>,
    },
    /// The PIM answered something the client cannot read (not the documented shape).
    #[error("unexpected Akeneo response (HTTP {status}): {message}")]
    Protocol { status: u16, message: String },
    /// The configuration is unusable.
    #[error("invalid Akeneo configuration: {0}")]
    InvalidConfig(String),
    /// An argument of the call is unusable (e.g. an option code Akeneo would refuse).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A media file is larger than `media_max_bytes`.
    #[error("media file too large: {size} bytes or more, the limit is {limit}")]
    MediaTooLarge { size: u64, limit: u64 },
    /// Reading a media file's body failed (the caller's stream yielded an error).
    #[error("reading the media file failed: {0}")]
    Body(String),
}

fn fmt_status(s: Option<u16>) -> String {
    s.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl AkeneoError {
    /// A write the PIM answered 200 whose answer cannot be read (a gateway's page, a cut body):
    /// it may or may not have been written, so it counts as transient — upserts are idempotent
    /// and are sent again later, never dead-lettered on a guess.
    pub(crate) fn unreadable_write_answer(status: u16, message: impl std::fmt::Display) -> Self {
        AkeneoError::Transient {
            status: Some(status),
            message: format!(
                "{message} (the write may have been applied; it is sent again, which is idempotent)"
            ),
        }
    }

    /// Whether trying the same call again later may succeed (transient failures and rate
    /// limiting). Everything else needs a change of data, configuration or credentials.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AkeneoError::Transient { .. } | AkeneoError::RateLimited { .. }
        )
    }

    /// The HTTP status the PIM answered, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AkeneoError::Transient { status, .. } => *status,
            AkeneoError::RateLimited { .. } => Some(429),
            AkeneoError::Auth { status, .. }
            | AkeneoError::Request { status, .. }
            | AkeneoError::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The PIM's message (or the client's reason) without the variant's prefix.
    pub fn message(&self) -> String {
        match self {
            AkeneoError::Transient { message, .. }
            | AkeneoError::Auth { message, .. }
            | AkeneoError::Request { message, .. }
            | AkeneoError::Protocol { message, .. } => message.clone(),
            AkeneoError::InvalidConfig(m) | AkeneoError::InvalidInput(m) | AkeneoError::Body(m) => {
                m.clone()
            }
            other => other.to_string(),
        }
    }

    /// Whether this is a 404 from the PIM.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AkeneoError::Request { status: 404, .. })
    }
}
