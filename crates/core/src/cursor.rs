//! Poll cursors: where a family's poller resumes.
//!
//! A cursor is taken from the DAM's own timestamps (never the connector's clock) plus the DAM id
//! of the last asset seen at that timestamp as a tie-break. When asking the DAM for changes the
//! poller goes back by an overlap window, so that a change the DAM committed late with an earlier
//! timestamp is still seen; assets seen twice cost nothing because their content hash is
//! unchanged.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::DamAsset;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// The DAM's `updated` timestamp of the newest asset fully written.
    pub updated_at: DateTime<Utc>,
    /// The DAM id of that asset (tie-break among assets sharing the timestamp).
    pub dam_id: String,
}

impl Cursor {
    pub fn of(asset: &DamAsset) -> Self {
        Self {
            updated_at: asset.updated_at,
            dam_id: asset.id.clone(),
        }
    }

    /// The `since` value to ask the DAM for, going back by `overlap`.
    pub fn since(&self, overlap: Duration) -> DateTime<Utc> {
        self.updated_at - overlap
    }

    /// The later of two optional cursors.
    pub fn max(a: Option<Cursor>, b: Option<Cursor>) -> Option<Cursor> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b > a { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(secs: i64, id: &str) -> Cursor {
        Cursor {
            updated_at: Utc.timestamp_opt(secs, 0).unwrap(),
            dam_id: id.into(),
        }
    }

    #[test]
    fn ordered_by_time_then_id() {
        assert!(c(10, "b") > c(10, "a"));
        assert!(c(11, "a") > c(10, "z"));
        assert_eq!(
            Cursor::max(Some(c(10, "a")), Some(c(9, "z"))),
            Some(c(10, "a"))
        );
        assert_eq!(Cursor::max(None, Some(c(9, "z"))), Some(c(9, "z")));
    }

    #[test]
    fn since_goes_back_by_the_overlap() {
        assert_eq!(
            c(100, "a").since(Duration::seconds(30)),
            Utc.timestamp_opt(70, 0).unwrap()
        );
    }
}
