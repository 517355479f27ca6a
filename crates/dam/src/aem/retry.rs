//! Backoff and `Retry-After` handling shared by the Adobe clients.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Longest single wait any Adobe client sleeps before a retry, whatever the server asks.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential backoff: `initial * 2^attempt`, capped at [`MAX_BACKOFF`]. `attempt` starts at 0.
pub(crate) fn backoff(initial: Duration, attempt: u32) -> Duration {
    initial
        .checked_mul(1u32 << attempt.min(16))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date (a date in the past is zero).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(raw).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The wait before retry number `attempt` (0-based): the server's `Retry-After` when it gave one,
/// else exponential backoff; never more than [`MAX_BACKOFF`].
pub(crate) fn wait_before_retry(
    headers: Option<&HeaderMap>,
    initial: Duration,
    attempt: u32,
) -> Duration {
    headers
        .and_then(retry_after)
        .unwrap_or_else(|| backoff(initial, attempt))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_millis(500);
        assert_eq!(backoff(i, 0), Duration::from_millis(500));
        assert_eq!(backoff(i, 2), Duration::from_secs(2));
        assert_eq!(backoff(i, 40), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("10"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(10)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
