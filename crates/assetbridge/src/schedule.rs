//! When `run` polls a family (or reconciles it): a fixed interval or a cron expression.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A polling schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every so often, counted from the end of the previous pass.
    Every(Duration),
    /// At the times a cron expression names (UTC; six fields with seconds, or the usual five).
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Parses `30s`, `5m`, `1h`, `7d` (an interval) or a cron expression.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(d) = parse_interval(t) {
            if d.is_zero() {
                return Err("an interval must be longer than zero".into());
            }
            return Ok(Schedule::Every(d));
        }
        let fields = t.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "`{s}` is neither an interval (30s, 5m, 1h, 7d) nor a cron expression (5 or 6 fields)"
            ));
        }
        croner::Cron::new(t)
            .with_seconds_optional()
            .parse()
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("`{s}` is not a valid cron expression: {e}"))
    }

    /// Like [`parse`](Self::parse), where `off` (or `never`) means no schedule.
    pub fn parse_optional(s: &str) -> Result<Option<Self>, String> {
        match s.trim() {
            "off" | "never" => Ok(None),
            _ => Self::parse(s).map(Some),
        }
    }

    /// When a pass is next due, counted from `base` (the end of the last pass, or the start of
    /// the process): `base` + the interval, or the cron expression's first time after `base`.
    /// A time in the past means "now".
    pub fn next_after(&self, base: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => {
                base + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)
            }
            Schedule::Cron(c) => c
                .find_next_occurrence(&base, false)
                .unwrap_or(base + chrono::Duration::days(1)),
        }
    }

    /// How long to wait, from `now`, before the next pass.
    pub fn delay_from(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron(c) => c
                .find_next_occurrence(&now, false)
                .ok()
                .and_then(|next| (next - now).to_std().ok())
                .unwrap_or(Duration::from_secs(60)),
        }
    }
}

fn parse_interval(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86_400,
        "w" | "week" | "weeks" => n * 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn intervals() {
        assert!(
            matches!(Schedule::parse("5m"), Ok(Schedule::Every(d)) if d == Duration::from_secs(300))
        );
        assert!(
            matches!(Schedule::parse("1h"), Ok(Schedule::Every(d)) if d == Duration::from_secs(3600))
        );
        assert!(
            matches!(Schedule::parse("1 week"), Ok(Schedule::Every(d)) if d == Duration::from_secs(604_800))
        );
        assert!(Schedule::parse("0s").is_err());
        assert!(Schedule::parse("soon").is_err());
    }

    #[test]
    fn off_and_next_after() {
        assert!(Schedule::parse_optional("off").unwrap().is_none());
        assert!(Schedule::parse_optional(" never ").unwrap().is_none());
        assert!(Schedule::parse_optional("soon").is_err());
        let daily = Schedule::parse_optional("1d").unwrap().unwrap();
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
        assert_eq!(
            daily.next_after(base),
            Utc.with_ymd_and_hms(2026, 1, 2, 10, 0, 0).unwrap()
        );
        // At 03:00 every day: the first 03:00 after the last pass.
        let at3 = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            at3.next_after(base),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap()
        );
    }

    #[test]
    fn cron_every_five_minutes() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 2, 30).unwrap();
        assert_eq!(s.delay_from(now), Duration::from_secs(150));
        let s5 = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s5.delay_from(now), Duration::from_secs(150));
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
