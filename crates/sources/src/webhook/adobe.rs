//! How an Adobe I/O Events (AEM Assets) event becomes an [`AssetChange`] — shared by the Adobe
//! webhook and the journal poller.
//!
//! | event type (default lists) | change |
//! |---|---|
//! | `aem.assets.asset.processing_completed`, `aem.assets.asset.metadata_updated` ([`AdobeEventRules::upsert_types`]) | `Upsert`: id = `data.assetId` (else `repo:assetId`), `updated_at` = `repo:modifyDate`, else the event `time`, else the time of receipt; `record` = the event's `data` object plus `"_event_type"` (see [`ADOBE_EVENT_TYPE_KEY`]) |
//! | `aem.assets.asset.deleted` ([`AdobeEventRules::delete_types`]) | `Delete` of `data.assetId`, `deleted_at` = the event `time` |
//! | anything else (e.g. `published`, Sites events) | ignored (acknowledged, counted) |
//!
//! The change's `event_id` is I/O Events' `eventid` (stable across redeliveries).
//!
//! `metadata_updated` is also what our own enrichment PATCHes cause: such changes carry
//! `_event_type = "aem.assets.asset.metadata_updated"` in their record (and `source` =
//! `"adobe"` from the webhook, `"adobe_journal"` from the journal), which is the hook the
//! enrichment feature uses to recognise its echo.
//!
//! The asset family comes from [`AdobeFamily`]. An upsert whose family cannot be determined is
//! skipped (counted). A deletion whose family cannot be determined (deletion events may not
//! carry the asset's path) is sent to **every** family the rule can produce, with event ids
//! `"{eventid}#{family}"`: deleting an asset a family never held is a no-op for the engine.

use std::collections::{BTreeMap, BTreeSet};

use assetbridge_core::{AssetChange, ChangeKind, DamAsset};
use assetbridge_dam::aem::{is_echo_of, AdobeEvent, EventType};
use chrono::Utc;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The record key under which an Adobe change keeps its event type.
pub const ADOBE_EVENT_TYPE_KEY: &str = "_event_type";

/// The event type of a change made from an Adobe event (`record["_event_type"]`), if it is one.
pub fn adobe_event_type(change: &AssetChange) -> Option<&str> {
    match &change.kind {
        ChangeKind::Upsert { asset } => asset.record.get(ADOBE_EVENT_TYPE_KEY)?.as_str(),
        ChangeKind::Delete { .. } => None,
    }
}

/// Default [`AdobeEventRules::upsert_types`].
pub fn default_upsert_types() -> Vec<String> {
    vec![
        "aem.assets.asset.processing_completed".to_owned(),
        "aem.assets.asset.metadata_updated".to_owned(),
    ]
}

/// Default [`AdobeEventRules::delete_types`].
pub fn default_delete_types() -> Vec<String> {
    vec!["aem.assets.asset.deleted".to_owned()]
}

/// Which asset family an AEM asset event belongs to. In TOML, one of:
///
/// ```toml
/// family = "packshots"                       # every asset
/// family = { folders = { "/content/dam/packshots" = "packshots", "/content/dam/people" = "portraits" }, default = "images" }
/// family = { pointer = "/assetMetadata/pim:family", map = { "Shoes" = "shoes" }, default = "images" }
/// ```
///
/// - `folders`: the asset's `repo:path` (`data.repositoryMetadata["repo:path"]`) is matched
///   against the folders; the **longest** folder containing it (on a `/` boundary) wins.
/// - `pointer`: a JSON pointer into the event's `data`; its value (a string or number) is the
///   family code, or — with `map` — is translated by `map` (exact match).
/// - `default`: the family of assets no folder or map entry matches. Without it, such assets
///   are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdobeFamily {
    /// One family for every asset.
    Fixed(String),
    /// By folder (`repo:path` prefix), longest match first.
    Folders {
        /// Folder (no trailing `/`) → family code.
        folders: BTreeMap<String, String>,
        /// The family of assets outside every folder.
        default: Option<String>,
    },
    /// By a value in the event's `data`.
    Pointer {
        /// JSON pointer into `data`.
        pointer: String,
        /// Value → family code; `None`: the value is the family code.
        map: Option<BTreeMap<String, String>>,
        /// The family of assets whose value is missing or unmapped.
        default: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyRuleDef {
    #[serde(default)]
    folders: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pointer: Option<String>,
    #[serde(default)]
    map: Option<BTreeMap<String, String>>,
    #[serde(default)]
    default: Option<String>,
}

impl TryFrom<FamilyRuleDef> for AdobeFamily {
    type Error = String;

    fn try_from(d: FamilyRuleDef) -> Result<Self, String> {
        let family = match (d.folders, d.pointer) {
            (Some(_), Some(_)) => return Err("set either `folders` or `pointer`, not both".into()),
            (None, None) => return Err(
                "a family table needs `folders` or `pointer` (or give a family code as a string)"
                    .into(),
            ),
            (Some(folders), None) => {
                if d.map.is_some() {
                    return Err("`map` goes with `pointer`, not `folders`".into());
                }
                let mut normalised = BTreeMap::new();
                for (folder, family) in folders {
                    let f = folder.trim_end_matches('/');
                    if !f.starts_with('/') {
                        return Err(format!("folder \"{folder}\" must be an absolute path like \"/content/dam/...\""));
                    }
                    normalised.insert(f.to_owned(), family);
                }
                AdobeFamily::Folders {
                    folders: normalised,
                    default: d.default,
                }
            }
            (None, Some(pointer)) => {
                if !pointer.starts_with('/') {
                    return Err(format!(
                        "pointer \"{pointer}\" is not a JSON pointer (it must start with `/`)"
                    ));
                }
                AdobeFamily::Pointer {
                    pointer,
                    map: d.map,
                    default: d.default,
                }
            }
        };
        family.validate()?;
        Ok(family)
    }
}

impl<'de> Deserialize<'de> for AdobeFamily {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AdobeFamily;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an asset family code, or a table with `folders` or `pointer`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AdobeFamily, E> {
                let f = AdobeFamily::Fixed(s.to_owned());
                f.validate().map_err(E::custom)?;
                Ok(f)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AdobeFamily, A::Error> {
                let def = FamilyRuleDef::deserialize(de::value::MapAccessDeserializer::new(map))?;
                AdobeFamily::try_from(def).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl AdobeFamily {
    /// Checks that no family code is empty.
    pub fn validate(&self) -> Result<(), String> {
        let empty = self.families().into_iter().any(|f| f.trim().is_empty());
        if empty
            || matches!(self, AdobeFamily::Pointer { map: Some(m), .. } if m.values().any(|v| v.trim().is_empty()))
        {
            return Err("an asset family code is empty".into());
        }
        Ok(())
    }

    /// Every family code the rule can produce (empty for a pointer without a map and without a
    /// default: its codes come from the events).
    pub fn families(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        match self {
            AdobeFamily::Fixed(f) => {
                out.insert(f.clone());
            }
            AdobeFamily::Folders { folders, default } => {
                out.extend(folders.values().cloned());
                out.extend(default.iter().cloned());
            }
            AdobeFamily::Pointer { map, default, .. } => {
                if let Some(m) = map {
                    out.extend(m.values().cloned());
                }
                out.extend(default.iter().cloned());
            }
        }
        out
    }

    /// [`family_of`](Self::family_of) without the default: the family the event's own path or
    /// value gives (a fixed family is one).
    pub fn named_family_of(&self, event: &AdobeEvent) -> Result<String, String> {
        match self {
            AdobeFamily::Fixed(f) => Ok(f.clone()),
            AdobeFamily::Folders { folders, .. } => AdobeFamily::Folders {
                folders: folders.clone(),
                default: None,
            }
            .family_of(event),
            AdobeFamily::Pointer { pointer, map, .. } => AdobeFamily::Pointer {
                pointer: pointer.clone(),
                map: map.clone(),
                default: None,
            }
            .family_of(event),
        }
    }

    /// The family of an event, `Err(reason)` when none applies.
    pub fn family_of(&self, event: &AdobeEvent) -> Result<String, String> {
        match self {
            AdobeFamily::Fixed(f) => Ok(f.clone()),
            AdobeFamily::Folders { folders, default } => {
                let Some(path) = event.asset_path() else {
                    return default
                        .clone()
                        .ok_or_else(|| "the event has no `repo:path`".to_owned());
                };
                folders
                    .iter()
                    .filter(|(folder, _)| {
                        path == folder.as_str()
                            || path
                                .strip_prefix(folder.as_str())
                                .is_some_and(|rest| rest.starts_with('/'))
                    })
                    .max_by_key(|(folder, _)| folder.len())
                    .map(|(_, family)| family.clone())
                    .or_else(|| default.clone())
                    .ok_or_else(|| format!("`{path}` is in no configured folder"))
            }
            AdobeFamily::Pointer {
                pointer,
                map,
                default,
            } => {
                let value = match event.data.pointer(pointer) {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let found = match (value, map) {
                    (Some(v), None) => Some(v),
                    (Some(v), Some(m)) => m.get(&v).cloned(),
                    (None, _) => None,
                };
                found
                    .or_else(|| default.clone())
                    .ok_or_else(|| format!("no family for the value at `{pointer}` in `data`"))
            }
        }
    }
}

/// What one Adobe event gives.
#[derive(Debug, Clone, PartialEq)]
pub enum AdobeEventOutcome {
    /// Changes to store (one, or one per family for an unroutable deletion).
    Changes(Vec<AssetChange>),
    /// A type that is not handled: acknowledged and counted.
    Ignored(String),
    /// An asset event no family applies to: acknowledged and counted.
    Skipped(String),
    /// An asset event that cannot become a change (no asset id, `data` not an object): to be
    /// dead-lettered.
    Unusable(String),
}

/// The echoes of the connector's own enrichment writes (see [`AdobeEventRules::echoes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoFilter {
    /// The metadata keys enrichment writes (its targets, and its status field when it marks).
    /// Empty: no event is taken for an echo.
    pub keys: BTreeSet<String>,
    /// The inbox families enrichment owns (`[enrichment] families`); empty: every family.
    pub families: BTreeSet<String>,
}

impl EchoFilter {
    /// Whether `event`, of `family`, is such an echo: a `metadata_updated` event of a family
    /// enrichment owns whose changed keys are all enrichment's.
    pub fn is_echo(&self, event: &AdobeEvent, family: &str) -> bool {
        !self.keys.is_empty()
            && event.event_type == EventType::MetadataUpdated
            && (self.families.is_empty() || self.families.contains(family))
            && is_echo_of(&event.data, |k| self.keys.contains(k))
    }
}

/// How Adobe events become changes (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdobeEventRules {
    /// Asset family routing.
    pub family: AdobeFamily,
    /// Event types that become upserts. Default: `processing_completed`, `metadata_updated`.
    pub upsert_types: Vec<String>,
    /// Event types that become deletions. Default: `aem.assets.asset.deleted`.
    pub delete_types: Vec<String>,
    /// Which `metadata_updated` events are the echoes of the connector's own enrichment
    /// writes: acknowledged and not stored ([`AdobeEventOutcome::Ignored`]), so that one can never
    /// take the place of a user's edit of the same asset still pending in the inbox (the inbox
    /// keeps one pending change per asset) — the engine drops echoes too, but by then the edit
    /// was gone. Default: none (set from `[enrichment]` by the binary; not a configuration key).
    pub echoes: EchoFilter,
}

impl AdobeEventRules {
    /// Rules with the default type lists.
    pub fn new(family: AdobeFamily) -> Self {
        Self {
            family,
            upsert_types: default_upsert_types(),
            delete_types: default_delete_types(),
            echoes: EchoFilter::default(),
        }
    }

    /// Checks the rules (family codes, a type in both lists).
    pub fn validate(&self) -> Result<(), String> {
        self.family.validate()?;
        if let Some(t) = self
            .upsert_types
            .iter()
            .find(|t| self.delete_types.contains(t))
        {
            return Err(format!(
                "event type `{t}` is in both upsert_types and delete_types"
            ));
        }
        Ok(())
    }

    /// Converts one event; `source` becomes the change's source.
    pub fn convert(&self, event: &AdobeEvent, source: &str) -> AdobeEventOutcome {
        let ty = event.event_type.as_str();
        let upsert = self.upsert_types.iter().any(|t| t == ty);
        let delete = self.delete_types.iter().any(|t| t == ty);
        if !upsert && !delete {
            return AdobeEventOutcome::Ignored(format!("event type `{ty}` is not handled"));
        }
        let Some(asset_id) = event.asset_id().filter(|s| !s.trim().is_empty()) else {
            return AdobeEventOutcome::Unusable(format!(
                "`{ty}` event `{}` has no `data.assetId`",
                event.event_id
            ));
        };
        if delete {
            // The family the event itself names: a default is not a decision about an asset
            // the event does not describe (a deletion without a path goes to every family).
            let family = self.family.named_family_of(event);
            let change = |family: String, event_id: String| AssetChange {
                family,
                event_id: Some(event_id),
                source: source.to_owned(),
                kind: ChangeKind::Delete {
                    dam_id: asset_id.to_owned(),
                    deleted_at: event.time.or_else(|| event.modify_date()),
                },
            };
            return match family {
                Ok(f) => AdobeEventOutcome::Changes(vec![change(f, event.event_id.clone())]),
                Err(reason) => {
                    let all = self.family.families();
                    if all.is_empty() {
                        return AdobeEventOutcome::Skipped(reason);
                    }
                    AdobeEventOutcome::Changes(
                        all.into_iter()
                            .map(|f| {
                                let id = format!("{}#{f}", event.event_id);
                                change(f, id)
                            })
                            .collect(),
                    )
                }
            };
        }
        let family = match self.family.family_of(event) {
            Ok(f) => f,
            Err(reason) => return AdobeEventOutcome::Skipped(reason),
        };
        if self.echoes.is_echo(event, &family) {
            return AdobeEventOutcome::Ignored(format!(
                "`{ty}` event `{}` is the echo of our own metadata write",
                event.event_id
            ));
        }
        let Value::Object(mut record) = event.data.clone() else {
            return AdobeEventOutcome::Unusable(format!(
                "`{ty}` event `{}` has no `data` object",
                event.event_id
            ));
        };
        record.insert(
            ADOBE_EVENT_TYPE_KEY.to_owned(),
            Value::String(ty.to_owned()),
        );
        AdobeEventOutcome::Changes(vec![AssetChange {
            family,
            event_id: Some(event.event_id.clone()),
            source: source.to_owned(),
            kind: ChangeKind::Upsert {
                asset: DamAsset {
                    id: asset_id.to_owned(),
                    updated_at: event.modify_date().or(event.time).unwrap_or_else(Utc::now),
                    record: Value::Object(record),
                },
            },
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, path: Option<&str>) -> AdobeEvent {
        let mut repo = json!({"repo:modifyDate": "2026-01-02T03:04:05.000Z"});
        if let Some(p) = path {
            repo["repo:path"] = json!(p);
        }
        AdobeEvent::from_value(
            &json!({
                "specversion": "1.0", "type": ty, "eventid": "ev-1",
                "time": "2026-01-02T03:04:06Z", "recipientclientid": "c",
                "data": {"assetId": "urn:aaid:aem:1", "repositoryMetadata": repo,
                         "assetMetadata": {"pim:family": "Shoes"}}
            }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn echoes_of_our_own_writes_are_not_stored_once_our_keys_are_known() {
        let with_meta = |ty: &str, meta: Value| {
            let mut e = event(ty, None);
            e.data["assetMetadata"] = meta;
            e
        };
        let echo = with_meta(
            "aem.assets.asset.metadata_updated",
            json!({"wknd-skuid": "A", "event:updated": {"wknd-skuid": "A"}}),
        );
        let edit = with_meta(
            "aem.assets.asset.metadata_updated",
            json!({"dc:title": "t", "wknd-skuid": "A", "event:created": ["dc:title", "wknd-skuid"]}),
        );
        let unsaid = with_meta(
            "aem.assets.asset.metadata_updated",
            json!({"wknd-skuid": "A"}),
        );
        let processed = with_meta(
            "aem.assets.asset.processing_completed",
            json!({"event:updated": {"wknd-skuid": "A"}}),
        );
        let mut rules = AdobeEventRules::new(AdobeFamily::Fixed("f".into()));
        // Keys unknown (no enrichment): everything is stored, echoes included.
        assert!(matches!(
            rules.convert(&echo, "adobe"),
            AdobeEventOutcome::Changes(_)
        ));
        rules.echoes.keys = ["wknd-skuid".to_owned(), "wknd-suppliername".to_owned()].into();
        match rules.convert(&echo, "adobe") {
            AdobeEventOutcome::Ignored(why) => assert_eq!(
                why,
                "`aem.assets.asset.metadata_updated` event `ev-1` is the echo of our own metadata write"
            ),
            other => panic!("{other:?}"),
        }
        // A user's edit (another key changed too), an event that does not say what changed, and
        // another event type are stored.
        for e in [&edit, &unsaid, &processed] {
            assert!(
                matches!(rules.convert(e, "adobe"), AdobeEventOutcome::Changes(_)),
                "{e:?}"
            );
        }
        // With `[enrichment] families`, only those families' echoes are: in another family
        // (written DAM → PIM only) the same event is a user's edit of a mapped key.
        rules.echoes.families = ["aem_assets".to_owned()].into();
        assert!(matches!(
            rules.convert(&echo, "adobe"),
            AdobeEventOutcome::Changes(_)
        ));
        rules.echoes.families.insert("f".to_owned());
        assert!(matches!(
            rules.convert(&echo, "adobe"),
            AdobeEventOutcome::Ignored(_)
        ));
    }

    fn folders() -> AdobeFamily {
        serde_json::from_value(json!({
            "folders": {"/content/dam/a": "fa", "/content/dam/a/b/": "fb"}
        }))
        .unwrap()
    }

    #[test]
    fn processing_completed_is_an_upsert_with_the_event_type() {
        let rules = AdobeEventRules::new(AdobeFamily::Fixed("images".into()));
        let e = event("aem.assets.asset.processing_completed", Some("/x.png"));
        let AdobeEventOutcome::Changes(c) = rules.convert(&e, "adobe") else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].family, "images");
        assert_eq!(c[0].event_id.as_deref(), Some("ev-1"));
        assert_eq!(c[0].source, "adobe");
        assert_eq!(
            adobe_event_type(&c[0]),
            Some("aem.assets.asset.processing_completed")
        );
        let ChangeKind::Upsert { asset } = &c[0].kind else {
            panic!()
        };
        assert_eq!(asset.id, "urn:aaid:aem:1");
        assert_eq!(asset.updated_at.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(asset.record["assetMetadata"]["pim:family"], "Shoes");
        assert!(matches!(
            rules.convert(&event("aem.assets.asset.published", None), "adobe"),
            AdobeEventOutcome::Ignored(_)
        ));
    }

    #[test]
    fn folders_longest_match_and_default() {
        let f = folders();
        let fam = |p: &str| f.family_of(&event("t", Some(p)));
        assert_eq!(fam("/content/dam/a/x.png").unwrap(), "fa");
        assert_eq!(fam("/content/dam/a/b/x.png").unwrap(), "fb");
        assert!(fam("/content/dam/ab/x.png").is_err(), "segment boundary");
        assert!(f.family_of(&event("t", None)).is_err());
        let with_default: AdobeFamily = serde_json::from_value(json!({
            "folders": {"/content/dam/a": "fa"}, "default": "other"
        }))
        .unwrap();
        assert_eq!(
            with_default
                .family_of(&event("t", Some("/content/dam/z/1.png")))
                .unwrap(),
            "other"
        );
    }

    #[test]
    fn pointer_and_map() {
        let f: AdobeFamily = serde_json::from_value(json!({
            "pointer": "/assetMetadata/pim:family", "map": {"Shoes": "shoes"}
        }))
        .unwrap();
        assert_eq!(f.family_of(&event("t", None)).unwrap(), "shoes");
        let f: AdobeFamily =
            serde_json::from_value(json!({"pointer": "/assetMetadata/pim:family"})).unwrap();
        assert_eq!(f.family_of(&event("t", None)).unwrap(), "Shoes");
        let f: AdobeFamily =
            serde_json::from_value(json!({"pointer": "/nope", "map": {"x": "y"}})).unwrap();
        assert!(f.family_of(&event("t", None)).is_err());
    }

    #[test]
    fn unroutable_deletions_go_to_every_family() {
        let rules = AdobeEventRules::new(folders());
        let AdobeEventOutcome::Changes(c) =
            rules.convert(&event("aem.assets.asset.deleted", None), "adobe")
        else {
            panic!()
        };
        let got: Vec<(String, String)> = c
            .iter()
            .map(|c| (c.family.clone(), c.event_id.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("fa".to_owned(), "ev-1#fa".to_owned()),
                ("fb".to_owned(), "ev-1#fb".to_owned())
            ]
        );
        assert!(
            matches!(&c[0].kind, ChangeKind::Delete { dam_id, deleted_at: Some(_) } if dam_id == "urn:aaid:aem:1")
        );
        // A routable deletion goes to its family only.
        let AdobeEventOutcome::Changes(c) = rules.convert(
            &event("aem.assets.asset.deleted", Some("/content/dam/a/b/1.png")),
            "adobe",
        ) else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].event_id.as_deref(), Some("ev-1"));
        // With a default: a deletion whose event names no folder still goes to every family
        // (it went to the default only, though its asset may be in another); an upsert
        // without a path goes to the default.
        let with_default = AdobeEventRules::new(
            serde_json::from_value(json!({
                "folders": {"/content/dam/a": "fa"}, "default": "other"
            }))
            .unwrap(),
        );
        let AdobeEventOutcome::Changes(c) =
            with_default.convert(&event("aem.assets.asset.deleted", None), "adobe")
        else {
            panic!()
        };
        let mut fams: Vec<&str> = c.iter().map(|c| c.family.as_str()).collect();
        fams.sort();
        assert_eq!(fams, ["fa", "other"]);
        let AdobeEventOutcome::Changes(c) = with_default.convert(
            &event("aem.assets.asset.processing_completed", None),
            "adobe",
        ) else {
            panic!()
        };
        assert_eq!(c[0].family, "other");
        // An unroutable upsert is skipped.
        assert!(matches!(
            rules.convert(
                &event(
                    "aem.assets.asset.processing_completed",
                    Some("/elsewhere/1.png")
                ),
                "adobe"
            ),
            AdobeEventOutcome::Skipped(_)
        ));
    }

    #[test]
    fn unusable_events() {
        let rules = AdobeEventRules::new(AdobeFamily::Fixed("f".into()));
        let e = AdobeEvent::from_value(
            &json!({"type": "aem.assets.asset.processing_completed", "eventid": "e", "data": {}}),
            None,
        )
        .unwrap();
        assert!(matches!(
            rules.convert(&e, "adobe"),
            AdobeEventOutcome::Unusable(_)
        ));
    }

    #[test]
    fn family_config_errors() {
        for (bad, want) in [
            (json!({"folders": {"a": "x"}, "pointer": "/p"}), "not both"),
            (json!({}), "needs `folders` or `pointer`"),
            (json!({"folders": {"content/dam": "x"}}), "absolute path"),
            (json!({"pointer": "p"}), "JSON pointer"),
            (json!({"pointer": "/p", "mapping": {}}), "unknown field"),
            (json!(""), "empty"),
            (json!(42), "asset family code"),
        ] {
            let e = serde_json::from_value::<AdobeFamily>(bad.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
