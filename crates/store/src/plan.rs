//! Backend-independent planning of an enqueue: in-call deduplication and per-asset collapse.

use std::collections::{HashMap, HashSet};

use assetbridge_core::{AssetChange, ChangeKind};
use chrono::{DateTime, Utc};

/// The DAM's own time of a change, used to keep an older change from replacing a newer one.
pub(crate) fn changed_at(change: &AssetChange) -> Option<DateTime<Utc>> {
    match &change.kind {
        ChangeKind::Upsert { asset } => Some(asset.updated_at),
        ChangeKind::Delete { deleted_at, .. } => *deleted_at,
    }
}

/// Whether `new` may replace `old` (both optional DAM times): only a strictly older change is
/// refused; unknown times never block.
pub(crate) fn may_replace(new: Option<DateTime<Utc>>, old: Option<DateTime<Utc>>) -> bool {
    match (new, old) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

/// The distinct event ids of a batch, in first-seen order.
pub(crate) fn distinct_event_ids(changes: &[AssetChange]) -> Vec<String> {
    let mut seen = HashSet::new();
    changes
        .iter()
        .filter_map(|c| c.event_id.as_deref())
        .filter(|e| seen.insert(*e))
        .map(str::to_owned)
        .collect()
}

/// A change to upsert into the inbox, with its columns.
#[derive(Debug)]
pub(crate) struct Row<'a> {
    pub change: &'a AssetChange,
    pub payload: String,
    pub changed_at: Option<DateTime<Utc>>,
}

/// The result of planning: rows to upsert (one per asset) and counts of what was dropped.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    pub rows: Vec<Row<'a>>,
    pub duplicates: u64,
    pub superseded: u64,
    pub stale: u64,
}

/// Drops redeliveries (an event id not in `new_event_ids`, or repeated within the call) and
/// collapses several changes for one asset into the newest. `check_events: false` skips the
/// event-id check (a retried dead letter was seen already).
pub(crate) fn plan<'a>(
    changes: &'a [AssetChange],
    new_event_ids: &HashSet<String>,
    check_events: bool,
) -> Result<Plan<'a>, serde_json::Error> {
    let mut plan = Plan::default();
    let mut consumed: HashSet<&str> = HashSet::new();
    let mut slot: HashMap<(&str, &str), usize> = HashMap::new();
    for change in changes {
        if check_events {
            if let Some(e) = change.event_id.as_deref() {
                if !new_event_ids.contains(e) || !consumed.insert(e) {
                    plan.duplicates += 1;
                    continue;
                }
            }
        }
        let at = changed_at(change);
        let key = (change.family.as_str(), change.dam_id());
        match slot.get(&key) {
            Some(&i) => {
                if may_replace(at, plan.rows[i].changed_at) {
                    plan.rows[i] = Row {
                        change,
                        payload: serde_json::to_string(change)?,
                        changed_at: at,
                    };
                    plan.superseded += 1;
                } else {
                    plan.stale += 1;
                }
            }
            None => {
                slot.insert(key, plan.rows.len());
                plan.rows.push(Row {
                    change,
                    payload: serde_json::to_string(change)?,
                    changed_at: at,
                });
            }
        }
    }
    Ok(plan)
}

/// Keeps the last entry per key (later entries of a call win), in first-seen order.
pub(crate) fn last_per_key<V>(entries: &[(String, V)]) -> Vec<(&str, &V)> {
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(entries.len(), Default::default());
    let mut out: Vec<(&str, &V)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match index.get(k.as_str()) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k, out.len());
                out.push((k, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use assetbridge_core::DamAsset;
    use chrono::TimeZone;

    fn up(id: &str, secs: i64, event: Option<&str>) -> AssetChange {
        AssetChange {
            family: "f".into(),
            event_id: event.map(Into::into),
            source: "test".into(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: id.into(),
                    updated_at: Utc.timestamp_opt(secs, 0).unwrap(),
                    record: serde_json::json!({}),
                },
            },
        }
    }

    #[test]
    fn collapses_per_asset_and_drops_redeliveries() {
        let changes = vec![
            up("a", 10, Some("e1")),
            up("a", 12, Some("e2")),
            up("a", 11, None),
            up("b", 10, Some("e1")),
            up("c", 10, Some("old")),
        ];
        let new: HashSet<String> = ["e1", "e2"].iter().map(|s| s.to_string()).collect();
        let p = plan(&changes, &new, true).unwrap();
        assert_eq!(p.rows.len(), 1);
        assert_eq!(
            p.rows[0].changed_at,
            Some(Utc.timestamp_opt(12, 0).unwrap())
        );
        assert_eq!((p.duplicates, p.superseded, p.stale), (2, 1, 1));
        let p = plan(&changes, &HashSet::new(), false).unwrap();
        assert_eq!(p.rows.len(), 3);
    }

    #[test]
    fn last_entry_per_key_wins() {
        let e = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("a".to_string(), 3),
        ];
        assert_eq!(last_per_key(&e), vec![("a", &3), ("b", &2)]);
    }
}
