//! The shape of a change message — a webhook body or a queue message body — and how it becomes
//! [`AssetChange`]s.
//!
//! Every DAM words its notifications differently, so the shape is configuration
//! ([`MessageShape`]), read with JSON pointers. The rules, in order:
//!
//! 1. **Envelopes.** A body that is a [CloudEvent](https://cloudevents.io) (a JSON object with
//!    `specversion`) is unwrapped: its `data` is the document, its `id` the envelope's event id,
//!    its `type` decides deletions ([`MessageShape::deleted_types`]) and its `time` is the
//!    fallback deletion time. A JSON array whose elements are all CloudEvents (the CloudEvents
//!    JSON batch format) is several envelopes. Any other body is one envelope whose document is
//!    the body itself.
//! 2. **Items.** [`MessageShape::items_pointer`] points into the document at the change(s): an
//!    object is one change, an array is one change per element (an empty array is a message
//!    with no change). `""` (the default) is the document itself.
//! 3. **Records.** Each item is read with the record pointers (`id_pointer`, `updated_pointer`,
//!    `deleted_pointer`: an [`assetbridge_dam::record::RecordShape`]): an upsert carries the
//!    whole item as the asset's record; a truthy deletion marker (or a CloudEvent type listed in
//!    `deleted_types`) makes it a deletion, which needs only the id.
//! 4. **Family.** A fixed [`family`](MessageShape::family), or the value at
//!    [`family_pointer`](MessageShape::family_pointer) in the item — used as the family code, or
//!    translated through [`family_map`](MessageShape::family_map). A value the map does not
//!    know (or an item without a value when a map is set) is [`ParsedChange::Skipped`]: counted
//!    and acknowledged, not an error. A shape with neither is **routed**: the `[routing]` table
//!    ([`MessageShape::routes`], attached by the configuration loader) decides each item's
//!    family from the item (the DAM record), as for a routed DAM listing; an item no route
//!    matches goes to the table's default, or without one is skipped
//!    ([`routing::SKIP_REASON`]). A deletion (a deletion message often carries little more
//!    than the id, which a route's conditions may match where the asset's record would not)
//!    goes to every family of the table — each family's write path deletes it only if it
//!    holds the asset — with the event id suffixed `@<family>` so that each copy is
//!    deduplicated on its own.
//! 5. **Event id** (the delivery id, for deduplication of redeliveries): the value at
//!    [`event_id_pointer`](MessageShape::event_id_pointer) in the item when it is there; else
//!    the envelope's id — a CloudEvent's `id`, or for a plain body whose items are below the
//!    body (`items_pointer` not `""`) the value at `event_id_pointer` in the body; else the id
//!    a transport gave (`header_event_id`: an HTTP header, an AMQP `message_id`, a NATS
//!    `Nats-Msg-Id`). When an envelope- or transport-level id covers several changes, change
//!    number `i` (0-based, in message order) gets the id `"{id}#{i}"`, so that each change is
//!    deduplicated on its own and a redelivery of the same message yields the same ids. No id
//!    anywhere: the change has no event id (only per-asset deduplication applies).
//!
//! A body that is not JSON, or an item without the configured fields, is a [`MessageError`]
//! naming the pointer and what was found; nothing of such a message should be stored.
//!
//! ```toml
//! # a DAM posting {"event_id": "...", "assets": [{"uuid": "...", "modified": "...", ...}]}
//! items_pointer = "/assets"
//! id_pointer = "/uuid"
//! updated_pointer = "/modified"
//! deleted_pointer = "/trashed"
//! event_id_pointer = "/event_id"
//! family_pointer = "/folder"
//! family_map = { "Packshots" = "packshots", "Lifestyle" = "lifestyle_images" }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use assetbridge_core::routing::{self, CompiledRoutes, Routed};
use assetbridge_core::{AssetChange, ChangeKind};
use assetbridge_dam::record::{parse_timestamp, CompiledShape, RecordError, RecordShape};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn default_id_pointer() -> String {
    "/id".to_owned()
}
fn default_updated_pointer() -> String {
    "/updated_at".to_owned()
}
fn default_deleted_pointer() -> Option<String> {
    Some("/deleted".to_owned())
}

/// `""` (or absent, for an `Option` with a `None` default) → `None`.
fn empty_is_none<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Where the changes are in a message and how to read them (see the [module docs](self) for
/// the rules). Deserialised from a TOML/JSON table; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MessageShapeDef")]
pub struct MessageShape {
    /// JSON pointer to the change(s) in the document (an object, or an array of them).
    /// Default: `""` (the document itself).
    pub items_pointer: String,
    /// JSON pointer to the asset id in an item. Default: `"/id"`.
    pub id_pointer: String,
    /// JSON pointer to the item's last-change time (RFC 3339, or unix seconds/millis).
    /// Default: `"/updated_at"`.
    pub updated_pointer: String,
    /// JSON pointer to the item's deletion marker (truthy = deleted); `""` = items are never
    /// deletions. Default: `"/deleted"`.
    pub deleted_pointer: Option<String>,
    /// JSON pointer to the delivery's event id (in the item, else in the body). Default: none.
    pub event_id_pointer: Option<String>,
    /// The fixed asset family code of every change. At most one of `family` and
    /// `family_pointer` may be set; with neither, the items are routed by
    /// [`routes`](Self::routes).
    pub family: Option<String>,
    /// JSON pointer (in the item) to a value naming the family.
    pub family_pointer: Option<String>,
    /// DAM value at `family_pointer` → asset family code. Unmatched values are skipped.
    /// Default: none (the value is the family code itself).
    pub family_map: Option<BTreeMap<String, String>>,
    /// CloudEvent `type`s that mean "deleted" (e.g. `com.example.asset.deleted`).
    /// Default: none.
    pub deleted_types: Vec<String>,
    /// The routing table of a shape with neither `family` nor `family_pointer` (the top-level
    /// `[routing]`; attached by the configuration loader, never read from the shape's table).
    /// Default: none.
    #[serde(skip)]
    pub routes: Option<SharedRoutes>,
}

/// A compiled routing table shared by several shapes. Two are equal when they are the same
/// table.
#[derive(Debug, Clone)]
pub struct SharedRoutes(pub Arc<CompiledRoutes>);

impl PartialEq for SharedRoutes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedRoutes {}

/// The serialised form of [`MessageShape`], checked by [`MessageShape::validate`] on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageShapeDef {
    #[serde(default)]
    items_pointer: String,
    #[serde(default = "default_id_pointer")]
    id_pointer: String,
    #[serde(default = "default_updated_pointer")]
    updated_pointer: String,
    #[serde(
        default = "default_deleted_pointer",
        deserialize_with = "empty_is_none"
    )]
    deleted_pointer: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    event_id_pointer: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    family: Option<String>,
    #[serde(default, deserialize_with = "empty_is_none")]
    family_pointer: Option<String>,
    #[serde(default)]
    family_map: Option<BTreeMap<String, String>>,
    #[serde(default)]
    deleted_types: Vec<String>,
}

impl TryFrom<MessageShapeDef> for MessageShape {
    type Error = String;

    fn try_from(d: MessageShapeDef) -> Result<Self, String> {
        let shape = MessageShape {
            items_pointer: d.items_pointer,
            id_pointer: d.id_pointer,
            updated_pointer: d.updated_pointer,
            deleted_pointer: d.deleted_pointer,
            event_id_pointer: d.event_id_pointer,
            family: d.family,
            family_pointer: d.family_pointer,
            family_map: d.family_map,
            deleted_types: d.deleted_types,
            routes: None,
        };
        shape.validate()?;
        Ok(shape)
    }
}

impl MessageShape {
    /// A shape with every default and a fixed family.
    pub fn with_family(family: impl Into<String>) -> Self {
        Self {
            items_pointer: String::new(),
            id_pointer: default_id_pointer(),
            updated_pointer: default_updated_pointer(),
            deleted_pointer: default_deleted_pointer(),
            event_id_pointer: None,
            family: Some(family.into()),
            family_pointer: None,
            family_map: None,
            deleted_types: Vec::new(),
            routes: None,
        }
    }

    /// A shape with every default that routes each item with `routes` (neither `family` nor
    /// `family_pointer`).
    pub fn routed(routes: Arc<CompiledRoutes>) -> Self {
        Self {
            family: None,
            routes: Some(SharedRoutes(routes)),
            ..Self::with_family("unused")
        }
    }

    /// Whether the items' family comes from the routing table (neither `family` nor
    /// `family_pointer` is set).
    pub fn is_routed(&self) -> bool {
        self.family.is_none() && self.family_pointer.is_none()
    }

    /// Attaches the routing table used when the shape [is routed](Self::is_routed).
    pub fn with_routes(mut self, routes: Arc<CompiledRoutes>) -> Self {
        self.routes = Some(SharedRoutes(routes));
        self
    }

    /// Checks the shape: pointers are `""` or start with `/` (the id and updated pointers must
    /// not be empty), at most one of `family` / `family_pointer` (neither: the items are routed
    /// by the `[routing]` table, which the configuration must then have), `family_map` only
    /// with `family_pointer`, no empty family code.
    pub fn validate(&self) -> Result<(), String> {
        let pointer = |name: &str, p: &str, may_be_empty: bool| {
            if p.is_empty() && !may_be_empty {
                Err(format!("`{name}` must not be empty"))
            } else if !p.is_empty() && !p.starts_with('/') {
                Err(format!(
                    "`{name}` = \"{p}\" is not a JSON pointer (it must start with `/`, e.g. \"/{p}\")"
                ))
            } else {
                Ok(())
            }
        };
        pointer("items_pointer", &self.items_pointer, true)?;
        pointer("id_pointer", &self.id_pointer, false)?;
        pointer("updated_pointer", &self.updated_pointer, false)?;
        for (name, p) in [
            ("deleted_pointer", &self.deleted_pointer),
            ("event_id_pointer", &self.event_id_pointer),
            ("family_pointer", &self.family_pointer),
        ] {
            if let Some(p) = p {
                pointer(name, p, true)?;
            }
        }
        match (&self.family, &self.family_pointer) {
            (Some(_), Some(_)) => {
                return Err("set either `family` or `family_pointer`, not both".into())
            }
            (Some(f), None) if f.trim().is_empty() => return Err("`family` is empty".into()),
            _ => {}
        }
        if self.family_map.is_some() && self.family_pointer.is_none() {
            return Err("`family_map` needs `family_pointer`".into());
        }
        if let Some(map) = &self.family_map {
            if let Some((k, _)) = map.iter().find(|(_, v)| v.trim().is_empty()) {
                return Err(format!("`family_map` maps \"{k}\" to an empty family code"));
            }
        }
        Ok(())
    }

    /// The record pointers as a [`RecordShape`].
    pub fn record_shape(&self) -> RecordShape {
        RecordShape {
            id_pointer: self.id_pointer.clone(),
            updated_pointer: self.updated_pointer.clone(),
            deleted_pointer: self.deleted_pointer.clone(),
        }
    }

    /// Parses a message body into its changes (see the [module docs](self)). `source` becomes
    /// each change's [`AssetChange::source`]; `header_event_id` is the transport's delivery id,
    /// if any.
    pub fn parse(
        &self,
        body: &[u8],
        source: &str,
        header_event_id: Option<&str>,
    ) -> Result<Vec<ParsedChange>, MessageError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| MessageError::NotJson(e.to_string()))?;
        self.parse_value(&value, source, header_event_id)
    }

    /// [`parse`](Self::parse) of an already decoded body.
    pub fn parse_value(
        &self,
        body: &Value,
        source: &str,
        header_event_id: Option<&str>,
    ) -> Result<Vec<ParsedChange>, MessageError> {
        self.validate().map_err(MessageError::Config)?;
        let routes = match (self.is_routed(), &self.routes) {
            (false, _) => None,
            (true, Some(r)) => Some(r.0.as_ref()),
            (true, None) => {
                return Err(MessageError::Config(
                    "set `family` (a fixed asset family code), `family_pointer`, or a top-level [routing] table".into(),
                ))
            }
        };
        let record = CompiledShape::new(
            &self.id_pointer,
            &self.updated_pointer,
            self.deleted_pointer.as_deref(),
        );
        let header_event_id = header_event_id.map(str::trim).filter(|s| !s.is_empty());

        let envelopes = envelopes(body)?;
        let several_envelopes = envelopes.len() > 1;
        let mut out = Vec::new();
        for (envelope_index, envelope) in envelopes.into_iter().enumerate() {
            let items = self.items(&envelope, envelope_index, several_envelopes)?;
            // The id that covers the whole envelope: a CloudEvent's `id`, a body-level pointer
            // (when the items are below the body), else the transport's.
            let envelope_id: Option<String> = match &envelope.cloud_event {
                Some(ce) => ce.id.clone(),
                None => (!self.items_pointer.is_empty())
                    .then(|| {
                        self.event_id_pointer
                            .as_deref()
                            .and_then(|p| id_at(envelope.document, p))
                    })
                    .flatten(),
            }
            .or_else(|| {
                // A batch of CloudEvents shares one transport id: never reuse it per envelope.
                (!several_envelopes)
                    .then(|| header_event_id.map(str::to_owned))
                    .flatten()
            });
            let shared = items.len() > 1;
            for (i, item) in items.iter().enumerate() {
                let at = |e: MessageError| e.at_item(envelope_index, several_envelopes, i, shared);
                let item_id = self
                    .event_id_pointer
                    .as_deref()
                    .and_then(|p| id_at(item, p));
                let event_id = item_id.or_else(|| {
                    envelope_id.as_ref().map(|id| {
                        if shared {
                            format!("{id}#{i}")
                        } else {
                            id.clone()
                        }
                    })
                });
                let family = match routes {
                    // Routed: decided below, once the kind of change is known.
                    Some(_) => String::new(),
                    None => match self.family_of(item).map_err(at)? {
                        FamilyOutcome::Family(f) => f,
                        FamilyOutcome::Skip(reason) => {
                            out.push(ParsedChange::Skipped {
                                dam_id: id_at(item, &self.id_pointer),
                                event_id,
                                reason,
                            });
                            continue;
                        }
                    },
                };
                let deleted_by_type = envelope.cloud_event.as_ref().is_some_and(|ce| {
                    ce.event_type
                        .as_deref()
                        .is_some_and(|t| self.deleted_types.iter().any(|d| d == t))
                });
                let kind = if deleted_by_type {
                    let dam_id = id_at(item, &self.id_pointer).ok_or_else(|| {
                        at(MessageError::Record(RecordError {
                            what: "asset id".into(),
                            pointer: self.id_pointer.clone(),
                            detail: "missing or not a non-empty string/number".into(),
                        }))
                    })?;
                    let deleted_at = item
                        .pointer(&self.updated_pointer)
                        .and_then(|v| parse_timestamp(v).ok())
                        .or(envelope.cloud_event.as_ref().and_then(|ce| ce.time));
                    ChangeKind::Delete { dam_id, deleted_at }
                } else {
                    match record.parse(item) {
                        Ok(parsed) => parsed.change,
                        Err(e) => return Err(at(MessageError::Record(e))),
                    }
                };
                if let Some(routes) = routes {
                    route_item(routes, item, kind, event_id, source, &mut out);
                    continue;
                }
                out.push(ParsedChange::Change(AssetChange {
                    family,
                    event_id,
                    source: source.to_owned(),
                    kind,
                }));
            }
        }
        for parsed in &out {
            if let ParsedChange::Change(c) = parsed {
                storable("asset id", c.dam_id())?;
                storable("family", &c.family)?;
                if let Some(id) = &c.event_id {
                    storable("event id", id)?;
                }
            }
        }
        Ok(out)
    }

    fn items<'a>(
        &self,
        envelope: &Envelope<'a>,
        envelope_index: usize,
        several: bool,
    ) -> Result<Vec<&'a Value>, MessageError> {
        let wrap = |e: MessageError| {
            if several {
                MessageError::InEnvelope {
                    envelope: envelope_index,
                    error: Box::new(e),
                }
            } else {
                e
            }
        };
        let found = envelope
            .document
            .pointer(&self.items_pointer)
            .ok_or_else(|| {
                wrap(MessageError::Shape {
                    what: "changes".into(),
                    pointer: self.items_pointer.clone(),
                    detail: describe_missing(envelope.document),
                })
            })?;
        match found {
            Value::Object(_) => Ok(vec![found]),
            Value::Array(items) => {
                if let Some((i, other)) = items.iter().enumerate().find(|(_, v)| !v.is_object()) {
                    return Err(wrap(MessageError::Shape {
                        what: format!("change {i}"),
                        pointer: self.items_pointer.clone(),
                        detail: format!("expected an object, found {}", kind_of(other)),
                    }));
                }
                Ok(items.iter().collect())
            }
            other => Err(wrap(MessageError::Shape {
                what: "changes".into(),
                pointer: self.items_pointer.clone(),
                detail: format!(
                    "expected an object or an array of objects, found {}",
                    kind_of(other)
                ),
            })),
        }
    }

    fn family_of(&self, item: &Value) -> Result<FamilyOutcome, MessageError> {
        if let Some(f) = &self.family {
            return Ok(FamilyOutcome::Family(f.clone()));
        }
        let pointer = self.family_pointer.as_deref().unwrap_or_default();
        let value = match item.pointer(pointer) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            None | Some(Value::Null) => None,
            Some(Value::String(_)) => None,
            Some(other) => {
                return Err(MessageError::Shape {
                    what: "family".into(),
                    pointer: pointer.to_owned(),
                    detail: format!("expected a string or a number, found {}", kind_of(other)),
                })
            }
        };
        match (&self.family_map, value) {
            (None, Some(v)) => Ok(FamilyOutcome::Family(v)),
            (None, None) => Err(MessageError::Shape {
                what: "family".into(),
                pointer: pointer.to_owned(),
                detail: describe_missing(item),
            }),
            (Some(map), Some(v)) => Ok(match map.get(&v) {
                Some(code) => FamilyOutcome::Family(code.clone()),
                None => FamilyOutcome::Skip(format!(
                    "family value \"{v}\" at `{pointer}` is not in family_map"
                )),
            }),
            (Some(_), None) => Ok(FamilyOutcome::Skip(format!(
                "no family value at `{pointer}`"
            ))),
        }
    }
}

/// The change(s) of a routed item: an upsert goes to the family of the first route that
/// matches, else the default, else it is skipped; a deletion goes to every family of the table
/// (event id suffixed `@<family>`) — a deletion message carries little more than the id, so a
/// route's conditions (`not`, `exists = false`) may match it where the asset's record would
/// not, and each family's write path deletes only what it holds.
fn route_item(
    routes: &CompiledRoutes,
    item: &Value,
    kind: ChangeKind,
    event_id: Option<String>,
    source: &str,
    out: &mut Vec<ParsedChange>,
) {
    let change = |family: &str, event_id: Option<String>, kind: ChangeKind| {
        ParsedChange::Change(AssetChange {
            family: family.to_owned(),
            event_id,
            source: source.to_owned(),
            kind,
        })
    };
    if let ChangeKind::Delete { .. } = &kind {
        for family in routes.families() {
            let id = event_id.as_ref().map(|e| format!("{e}@{family}"));
            out.push(change(family, id, kind.clone()));
        }
        return;
    }
    match routes.decide(item) {
        Routed::Route { family, .. } | Routed::Default(family) => {
            out.push(change(family, event_id, kind))
        }
        Routed::Skipped => out.push(ParsedChange::Skipped {
            dam_id: Some(kind.dam_id().to_owned()),
            event_id,
            reason: routing::SKIP_REASON.to_owned(),
        }),
    }
}

enum FamilyOutcome {
    Family(String),
    Skip(String),
}

/// One change of a message, or why an item was skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedChange {
    /// A change to store.
    Change(AssetChange),
    /// An item that maps to no asset family ([`MessageShape::family_map`] does not know its
    /// value): acknowledged and counted, not stored.
    Skipped {
        /// The item's asset id, when it has one.
        dam_id: Option<String>,
        /// The item's event id, when it has one.
        event_id: Option<String>,
        /// Why (names the pointer and the value).
        reason: String,
    },
}

impl ParsedChange {
    /// The change, when it is one.
    pub fn change(&self) -> Option<&AssetChange> {
        match self {
            ParsedChange::Change(c) => Some(c),
            ParsedChange::Skipped { .. } => None,
        }
    }

    /// Splits parsed changes into the changes to store and the number skipped.
    pub fn split(parsed: Vec<ParsedChange>) -> (Vec<AssetChange>, usize) {
        let mut changes = Vec::with_capacity(parsed.len());
        let mut skipped = 0;
        for p in parsed {
            match p {
                ParsedChange::Change(c) => changes.push(c),
                ParsedChange::Skipped { .. } => skipped += 1,
            }
        }
        (changes, skipped)
    }
}

/// A message that does not have the configured shape. Its `Display` names the item, the pointer
/// and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// The body is not JSON.
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    /// The body (or a CloudEvent) is not of the configured shape.
    #[error("{what} at JSON pointer `{pointer}`: {detail}")]
    Shape {
        /// What was looked for (`changes`, `family`, `CloudEvent data`, ...).
        what: String,
        /// The pointer (or CloudEvent attribute) concerned.
        pointer: String,
        /// What was found instead.
        detail: String,
    },
    /// An item lacks a record field (id, timestamp).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An error in change `item` of a message with several changes.
    #[error("change {item}: {error}")]
    InItem {
        /// 0-based index of the change in its envelope.
        item: usize,
        /// The error.
        error: Box<MessageError>,
    },
    /// An error in CloudEvent `envelope` of a batch.
    #[error("CloudEvent {envelope} of the batch: {error}")]
    InEnvelope {
        /// 0-based index of the CloudEvent in the batch.
        envelope: usize,
        /// The error.
        error: Box<MessageError>,
    },
    /// The shape itself is invalid (see [`MessageShape::validate`]).
    #[error("message shape configuration: {0}")]
    Config(String),
    /// An id the state store cannot hold (a NUL character, or longer than [`MAX_KEY_BYTES`]):
    /// the message is dead-lettered rather than given back to the broker forever.
    #[error("{what} `{value}` cannot be stored: {detail}")]
    Unstorable {
        /// `asset id`, `event id` or `family`.
        what: String,
        /// The value, escaped and cut to 80 characters.
        value: String,
        /// Why.
        detail: String,
    },
}

/// Longest asset id, event id or family a change may carry, in bytes (PostgreSQL refuses an
/// index entry beyond ≈ 2.7 kB; ids are far shorter in practice).
pub const MAX_KEY_BYTES: usize = 2048;

/// Whether the state store can hold `value` as an id: no NUL character (PostgreSQL's text
/// refuses it) and at most [`MAX_KEY_BYTES`].
fn storable(what: &str, value: &str) -> Result<(), MessageError> {
    let detail = if value.contains('\0') {
        "it contains a NUL character, which the state store cannot hold".to_owned()
    } else if value.len() > MAX_KEY_BYTES {
        format!("it is {} bytes long (at most {MAX_KEY_BYTES})", value.len())
    } else {
        return Ok(());
    };
    let escaped: String = value.escape_debug().to_string();
    let mut shown: String = escaped.chars().take(80).collect();
    if escaped.chars().count() > 80 {
        shown.push('…');
    }
    Err(MessageError::Unstorable {
        what: what.to_owned(),
        value: shown,
        detail,
    })
}

impl MessageError {
    fn at_item(self, envelope: usize, several: bool, item: usize, shared: bool) -> MessageError {
        let e = if shared {
            MessageError::InItem {
                item,
                error: Box::new(self),
            }
        } else {
            self
        };
        if several {
            MessageError::InEnvelope {
                envelope,
                error: Box::new(e),
            }
        } else {
            e
        }
    }
}

struct CloudEventInfo {
    id: Option<String>,
    event_type: Option<String>,
    time: Option<chrono::DateTime<chrono::Utc>>,
}

struct Envelope<'a> {
    document: &'a Value,
    cloud_event: Option<CloudEventInfo>,
}

fn is_cloud_event(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("specversion"))
}

fn unwrap_cloud_event(ce: &Value) -> Result<Envelope<'_>, MessageError> {
    {
        let s = |k: &str| {
            ce.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let document = match ce.get("data") {
            Some(d @ (Value::Object(_) | Value::Array(_))) => d,
            Some(other) => {
                return Err(MessageError::Shape {
                    what: "CloudEvent data".into(),
                    pointer: "/data".into(),
                    detail: format!(
                        "expected a JSON object or array, found {} (data_base64 is not supported)",
                        kind_of(other)
                    ),
                })
            }
            None => {
                return Err(MessageError::Shape {
                    what: "CloudEvent data".into(),
                    pointer: "/data".into(),
                    detail: "missing".into(),
                })
            }
        };
        Ok(Envelope {
            document,
            cloud_event: Some(CloudEventInfo {
                id: s("id"),
                event_type: s("type"),
                time: s("time")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc)),
            }),
        })
    }
}

fn envelopes(body: &Value) -> Result<Vec<Envelope<'_>>, MessageError> {
    let unwrap = unwrap_cloud_event;
    match body {
        v if is_cloud_event(v) => Ok(vec![unwrap(v)?]),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_cloud_event) => items
            .iter()
            .enumerate()
            .map(|(i, ce)| {
                unwrap(ce).map_err(|e| MessageError::InEnvelope {
                    envelope: i,
                    error: Box::new(e),
                })
            })
            .collect(),
        other => Ok(vec![Envelope {
            document: other,
            cloud_event: None,
        }]),
    }
}

/// A non-empty string, or a number as a string, at `pointer`.
fn id_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe_missing(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let keys: Vec<&str> = m.keys().take(12).map(String::as_str).collect();
            format!("missing (the document has keys: {})", keys.join(", "))
        }
        other => format!("missing (the document is {})", kind_of(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assetbridge_core::DamAsset;
    use serde_json::json;

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    fn changes(p: Vec<ParsedChange>) -> Vec<AssetChange> {
        let (c, skipped) = ParsedChange::split(p);
        assert_eq!(skipped, 0);
        c
    }

    #[test]
    fn defaults_read_one_object_or_an_array() {
        let shape = MessageShape::with_family("packshots");
        let one = json!({"id": "a1", "updated_at": "2026-01-01T00:00:00Z"});
        let c = changes(
            shape
                .parse(one.to_string().as_bytes(), "webhook", Some("h1"))
                .unwrap(),
        );
        assert_eq!(
            c,
            vec![AssetChange {
                family: "packshots".into(),
                event_id: Some("h1".into()),
                source: "webhook".into(),
                kind: ChangeKind::Upsert {
                    asset: DamAsset {
                        id: "a1".into(),
                        updated_at: t("2026-01-01T00:00:00Z"),
                        record: one.clone()
                    }
                }
            }]
        );
        let many = json!([one, {"id": 2, "deleted": true}]);
        let c = changes(
            shape
                .parse(many.to_string().as_bytes(), "amqp", Some("m1"))
                .unwrap(),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].event_id.as_deref(), Some("m1#0"));
        assert_eq!(c[1].event_id.as_deref(), Some("m1#1"));
        assert_eq!(
            c[1].kind,
            ChangeKind::Delete {
                dam_id: "2".into(),
                deleted_at: None
            }
        );
        assert!(changes(shape.parse(b"[]", "amqp", None).unwrap()).is_empty());
    }

    #[test]
    fn item_and_envelope_event_ids() {
        let mut shape = MessageShape::with_family("f");
        shape.items_pointer = "/assets".into();
        shape.event_id_pointer = Some("/event_id".into());
        let body = json!({"event_id": "env-1", "assets": [
            {"id": "a", "updated_at": 1_767_225_600, "event_id": "own"},
            {"id": "b", "updated_at": 1_767_225_600}
        ]});
        let c = changes(
            shape
                .parse(body.to_string().as_bytes(), "webhook", Some("hdr"))
                .unwrap(),
        );
        assert_eq!(c[0].event_id.as_deref(), Some("own"));
        assert_eq!(c[1].event_id.as_deref(), Some("env-1#1"));
        // Without an envelope id the header is used.
        let body = json!({"assets": {"id": "a", "updated_at": 1_767_225_600}});
        let c = changes(
            shape
                .parse(body.to_string().as_bytes(), "webhook", Some("hdr"))
                .unwrap(),
        );
        assert_eq!(c[0].event_id.as_deref(), Some("hdr"));
        let c = changes(
            shape
                .parse(body.to_string().as_bytes(), "webhook", None)
                .unwrap(),
        );
        assert_eq!(c[0].event_id, None);
    }

    #[test]
    fn cloud_events_are_unwrapped() {
        let mut shape = MessageShape::with_family("f");
        shape.deleted_types = vec!["com.example.asset.deleted".into()];
        let ce = |id: &str, ty: &str, data: Value| {
            json!({"specversion": "1.0", "id": id, "type": ty, "source": "/dam",
                   "time": "2026-03-01T10:00:00Z", "data": data})
        };
        let up = ce(
            "ce-1",
            "com.example.asset.updated",
            json!({"id": "a", "updated_at": "2026-03-01T09:00:00Z"}),
        );
        let c = changes(
            shape
                .parse(up.to_string().as_bytes(), "nats", Some("hdr"))
                .unwrap(),
        );
        assert_eq!(c[0].event_id.as_deref(), Some("ce-1"));
        assert!(matches!(&c[0].kind, ChangeKind::Upsert { asset } if asset.record == up["data"]));
        let del = ce("ce-2", "com.example.asset.deleted", json!({"id": "b"}));
        let batch = json!([up, del]);
        let c = changes(
            shape
                .parse(batch.to_string().as_bytes(), "webhook", Some("hdr"))
                .unwrap(),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].event_id.as_deref(), Some("ce-2"));
        assert_eq!(
            c[1].kind,
            ChangeKind::Delete {
                dam_id: "b".into(),
                deleted_at: Some(t("2026-03-01T10:00:00Z"))
            }
        );
        let bad = json!({"specversion": "1.0", "id": "x", "type": "t", "data": "text"});
        let e = shape
            .parse(bad.to_string().as_bytes(), "nats", None)
            .unwrap_err();
        assert!(e.to_string().contains("/data"), "{e}");
    }

    #[test]
    fn family_pointer_and_map() {
        let shape: MessageShape = serde_json::from_value(json!({
            "family_pointer": "/folder",
            "family_map": {"Packshots": "packshots"}
        }))
        .unwrap();
        let body = json!([
            {"id": "a", "updated_at": "2026-01-01T00:00:00Z", "folder": "Packshots"},
            {"id": "b", "updated_at": "2026-01-01T00:00:00Z", "folder": "Other"},
            {"id": "c", "updated_at": "2026-01-01T00:00:00Z"}
        ]);
        let parsed = shape
            .parse(body.to_string().as_bytes(), "webhook", None)
            .unwrap();
        assert_eq!(parsed[0].change().unwrap().family, "packshots");
        match &parsed[1] {
            ParsedChange::Skipped { dam_id, reason, .. } => {
                assert_eq!(dam_id.as_deref(), Some("b"));
                assert!(
                    reason.contains("\"Other\"") && reason.contains("/folder"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parsed[2], ParsedChange::Skipped { .. }));
        // Without a map the value is the family code; a missing value is an error.
        let shape: MessageShape =
            serde_json::from_value(json!({"family_pointer": "/folder"})).unwrap();
        let c = changes(
            shape
                .parse(body[0].to_string().as_bytes(), "webhook", None)
                .unwrap(),
        );
        assert_eq!(c[0].family, "Packshots");
        let e = shape
            .parse(body[2].to_string().as_bytes(), "webhook", None)
            .unwrap_err();
        assert!(e.to_string().contains("`/folder`"), "{e}");
    }

    #[test]
    fn malformed_bodies_name_what_is_wrong() {
        let mut shape = MessageShape::with_family("f");
        let e = shape.parse(b"{nope", "webhook", None).unwrap_err();
        assert!(matches!(e, MessageError::NotJson(_)), "{e}");
        let e = shape
            .parse(
                br#"[{"id":"a","updated_at":"2026-01-01T00:00:00Z"},{"id":"b"}]"#,
                "w",
                None,
            )
            .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("change 1") && s.contains("/updated_at"), "{s}");
        let e = shape.parse(b"[1]", "w", None).unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
        shape.items_pointer = "/items".into();
        let e = shape.parse(br#"{"data": []}"#, "w", None).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("`/items`") && s.contains("keys: data"), "{s}");
        let e = shape.parse(br#"{"items": "x"}"#, "w", None).unwrap_err();
        assert!(e.to_string().contains("found a string"), "{e}");
    }

    #[test]
    fn ids_the_store_cannot_hold_are_refused() {
        let shape = MessageShape::with_family("packshots");
        let nul_id = br#"{"id":"a\u0000b","updated_at":"2026-01-01T00:00:00Z"}"#;
        let e = shape.parse(nul_id, "amqp", None).unwrap_err();
        assert!(matches!(e, MessageError::Unstorable { .. }), "{e:?}");
        let s = e.to_string();
        assert!(s.contains("asset id `a\\0b`") && s.contains("NUL"), "{s}");
        assert!(!s.contains('\0'), "the message itself holds no NUL");

        let good = br#"{"id":"a","updated_at":"2026-01-01T00:00:00Z"}"#;
        let e = shape.parse(good, "amqp", Some("m\0x")).unwrap_err();
        assert!(e.to_string().starts_with("event id"), "{e}");

        let mut by_pointer = MessageShape::with_family("x");
        by_pointer.family = None;
        by_pointer.family_pointer = Some("/family".into());
        let body = br#"{"id":"a","updated_at":"2026-01-01T00:00:00Z","family":"pack\u0000shots"}"#;
        let e = by_pointer.parse(body, "amqp", None).unwrap_err();
        assert!(e.to_string().starts_with("family"), "{e}");

        let long = "x".repeat(MAX_KEY_BYTES + 1);
        let body = json!({"id": long, "updated_at": "2026-01-01T00:00:00Z"}).to_string();
        let e = shape.parse(body.as_bytes(), "amqp", None).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("2049 bytes long") && s.contains('…'), "{s}");
        assert!(s.len() < 300, "{s}");
        // At the bound: accepted.
        let body = json!({"id": "x".repeat(MAX_KEY_BYTES), "updated_at": "2026-01-01T00:00:00Z"})
            .to_string();
        assert_eq!(
            changes(shape.parse(body.as_bytes(), "amqp", None).unwrap()).len(),
            1
        );
    }

    #[test]
    fn shapes_are_validated_when_deserialised() {
        for (bad, want) in [
            (json!({"family": "a", "family_pointer": "/f"}), "not both"),
            (
                json!({"family": "a", "family_map": {"x": "y"}}),
                "needs `family_pointer`",
            ),
            (
                json!({"family": "a", "id_pointer": "id"}),
                "not a JSON pointer",
            ),
            (json!({"family": "a", "idpointer": "/id"}), "unknown field"),
        ] {
            let e = serde_json::from_value::<MessageShape>(bad.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let s: MessageShape =
            serde_json::from_value(json!({"family": "a", "deleted_pointer": ""})).unwrap();
        assert_eq!(s.deleted_pointer, None);
        assert_eq!(s.id_pointer, "/id");
        assert_eq!(s.items_pointer, "");
        // Round trip.
        let back: MessageShape = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // Neither `family` nor `family_pointer`: routed, which needs a routing table.
        let routed: MessageShape = serde_json::from_value(json!({})).unwrap();
        assert!(routed.is_routed());
        let e = routed
            .parse(br#"{"id": "a", "updated_at": 1}"#, "w", None)
            .unwrap_err();
        assert!(
            matches!(&e, MessageError::Config(m) if m.contains("[routing]")),
            "{e}"
        );
    }

    fn routes() -> Arc<CompiledRoutes> {
        let cfg: routing::RouteConfig = serde_json::from_value(json!({"routes": [
            {"family": "packshots", "when": {"pointer": "/path", "prefix": "/dam/packshots/"}},
            {"family": "videos", "when": {"pointer": "/type", "equals": "video"}},
        ]}))
        .unwrap();
        Arc::new(CompiledRoutes::new(&cfg).unwrap())
    }

    #[test]
    fn items_without_a_family_are_routed() {
        let shape = MessageShape::routed(routes());
        assert!(shape.is_routed());
        let body = json!([
            {"id": "a", "updated_at": 1_767_225_600, "path": "/dam/packshots/a.jpg"},
            {"id": "b", "updated_at": 1_767_225_600, "type": "video"},
            {"id": "c", "updated_at": 1_767_225_600, "path": "/dam/misc/c.jpg"},
            {"id": "d", "deleted": true, "type": "video"},
            {"id": "e", "deleted": true},
        ]);
        let parsed = shape
            .parse(body.to_string().as_bytes(), "webhook", Some("m1"))
            .unwrap();
        let families: Vec<(Option<&str>, Option<&str>)> = parsed
            .iter()
            .map(|p| match p {
                ParsedChange::Change(c) => (Some(c.family.as_str()), c.event_id.as_deref()),
                ParsedChange::Skipped { event_id, .. } => (None, event_id.as_deref()),
            })
            .collect();
        assert_eq!(
            families,
            vec![
                (Some("packshots"), Some("m1#0")),
                (Some("videos"), Some("m1#1")),
                (None, Some("m1#2")),
                // A deletion, even one a route matches: every family, ids of their own.
                (Some("packshots"), Some("m1#3@packshots")),
                (Some("videos"), Some("m1#3@videos")),
                (Some("packshots"), Some("m1#4@packshots")),
                (Some("videos"), Some("m1#4@videos")),
            ]
        );
        match &parsed[2] {
            ParsedChange::Skipped { dam_id, reason, .. } => {
                assert_eq!(dam_id.as_deref(), Some("c"));
                assert_eq!(reason, routing::SKIP_REASON);
            }
            other => panic!("{other:?}"),
        }
        // With a default, an unmatched upsert goes there (a deletion still fans out).
        let cfg: routing::RouteConfig =
            serde_json::from_value(json!({"default": "other", "routes": [
                {"family": "videos", "when": {"pointer": "/type", "equals": "video"}},
            ]}))
            .unwrap();
        let shape = MessageShape::with_family("x");
        let shape = MessageShape {
            family: None,
            ..shape
        }
        .with_routes(Arc::new(CompiledRoutes::new(&cfg).unwrap()));
        let c = changes(
            shape
                .parse(br#"{"id": "c", "updated_at": 1}"#, "w", None)
                .unwrap(),
        );
        assert_eq!(c[0].family, "other");
        let c = changes(
            shape
                .parse(br#"{"id": "c", "deleted": true}"#, "w", None)
                .unwrap(),
        );
        let fams: Vec<&str> = c.iter().map(|c| c.family.as_str()).collect();
        assert_eq!(fams, vec!["videos", "other"]);
        assert!(c.iter().all(|c| c.event_id.is_none()));
        // A shape with a family ignores an attached table.
        let fixed = MessageShape::with_family("packshots").with_routes(routes());
        let c = changes(
            fixed
                .parse(
                    br#"{"id": "b", "updated_at": 1, "type": "video"}"#,
                    "w",
                    None,
                )
                .unwrap(),
        );
        assert_eq!(c[0].family, "packshots");
    }
}
