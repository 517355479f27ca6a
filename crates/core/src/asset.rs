//! Domain types: what the DAM says an asset is, what changed, and what the PIM should hold.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An asset as the DAM describes it.
///
/// `record` is the DAM's own JSON for the asset, untouched: mapping rules read it with JSON
/// pointers, so a DAM needs configuration rather than code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DamAsset {
    /// The DAM's identifier of the asset (stable across renames).
    pub id: String,
    /// When the DAM last changed the asset, by the DAM's own clock.
    pub updated_at: DateTime<Utc>,
    /// The DAM's JSON record for the asset.
    pub record: Value,
}

/// What happened to one DAM asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    /// Created or updated: the asset as it is now.
    Upsert { asset: DamAsset },
    /// Deleted (or archived) in the DAM.
    Delete {
        dam_id: String,
        /// When the DAM deleted it, if it says.
        #[serde(default)]
        deleted_at: Option<DateTime<Utc>>,
    },
}

/// A change learned from a source (poller, webhook, queue, journal), on its way to the PIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetChange {
    /// The Akeneo asset family this change belongs to.
    pub family: String,
    /// The delivery's own id (webhook event id, message id) when the source has one: a change
    /// whose event id was seen before is a redelivery and is dropped.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Which source produced it (`poll`, `webhook`, `amqp`, `nats`, `journal`, ...).
    pub source: String,
    #[serde(flatten)]
    pub kind: ChangeKind,
}

/// What a dead letter's `source` gains when `dlq retry` (or the status page) puts it back into
/// the inbox: the write path then reads the asset from the DAM again rather than write the
/// version that failed, which may be older than what the PIM holds by now.
pub const REPLAYED: &str = " (replayed)";

impl AssetChange {
    /// The DAM id of the asset this change concerns.
    pub fn dam_id(&self) -> &str {
        self.kind.dam_id()
    }

    /// Whether this change is a dead letter put back into the inbox ([`REPLAYED`]).
    pub fn is_replayed(&self) -> bool {
        self.source.ends_with(REPLAYED)
    }

    /// Marks this change as a replayed dead letter (once, however often it is replayed).
    pub fn mark_replayed(&mut self) {
        if !self.is_replayed() {
            self.source.push_str(REPLAYED);
        }
    }

    /// The source that produced the change, without the replay mark.
    pub fn origin(&self) -> &str {
        self.source.strip_suffix(REPLAYED).unwrap_or(&self.source)
    }
}

impl ChangeKind {
    /// The DAM id of the asset this change concerns.
    pub fn dam_id(&self) -> &str {
        match self {
            ChangeKind::Upsert { asset } => &asset.id,
            ChangeKind::Delete { dam_id, .. } => dam_id,
        }
    }
}

/// One value of an Akeneo asset attribute: `{"locale": .., "channel": .., "data": ..}`.
///
/// Akeneo's write schema requires all three keys to be present (`null` allowed), so none is
/// skipped when serialising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PimValue {
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub data: Value,
}

/// An asset of Akeneo's Asset Manager, as the connector writes it.
///
/// Values are kept in a `BTreeMap` so serialisation (and so the content hash) is deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PimAsset {
    pub code: String,
    pub values: BTreeMap<String, Vec<PimValue>>,
}

impl PimAsset {
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            values: BTreeMap::new(),
        }
    }

    /// Adds one value, keeping the values of an attribute ordered by (locale, channel).
    pub fn push_value(&mut self, attribute: &str, value: PimValue) {
        let slot = self.values.entry(attribute.to_owned()).or_default();
        slot.retain(|v| !(v.locale == value.locale && v.channel == value.channel));
        slot.push(value);
        slot.sort_by(|a, b| (&a.locale, &a.channel).cmp(&(&b.locale, &b.channel)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_replayed_change_is_marked_once_and_keeps_its_origin() {
        let mut c = AssetChange {
            family: "f".into(),
            event_id: None,
            source: "webhook".into(),
            kind: ChangeKind::Delete {
                dam_id: "a".into(),
                deleted_at: None,
            },
        };
        assert!(!c.is_replayed());
        assert_eq!(c.origin(), "webhook");
        c.mark_replayed();
        c.mark_replayed();
        assert!(c.is_replayed());
        assert_eq!(c.source, "webhook (replayed)");
        assert_eq!(c.origin(), "webhook");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn pim_value_serialises_all_three_keys() {
        let v = PimValue {
            locale: None,
            channel: None,
            data: json!("x"),
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"locale": null, "channel": null, "data": "x"})
        );
    }

    #[test]
    fn push_value_replaces_same_locale_and_channel() {
        let mut a = PimAsset::new("a");
        a.push_value(
            "title",
            PimValue {
                locale: Some("fr_FR".into()),
                channel: None,
                data: json!("un"),
            },
        );
        a.push_value(
            "title",
            PimValue {
                locale: Some("en_US".into()),
                channel: None,
                data: json!("one"),
            },
        );
        a.push_value(
            "title",
            PimValue {
                locale: Some("fr_FR".into()),
                channel: None,
                data: json!("deux"),
            },
        );
        let titles = &a.values["title"];
        assert_eq!(titles.len(), 2);
        assert_eq!(titles[0].locale.as_deref(), Some("en_US"));
        assert_eq!(titles[1].data, json!("deux"));
    }

    #[test]
    fn change_round_trips_through_json() {
        let c = AssetChange {
            family: "packshots".into(),
            event_id: Some("e1".into()),
            source: "webhook".into(),
            kind: ChangeKind::Delete {
                dam_id: "42".into(),
                deleted_at: None,
            },
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AssetChange>(&s).unwrap(), c);
        assert_eq!(c.dam_id(), "42");
    }
}
