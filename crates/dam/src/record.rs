//! Reading one DAM record (a listing item, a webhook body, a queue message) with configured JSON
//! pointers: every DAM names its fields differently, so the shape is configuration.

use assetbridge_core::mapping::JsonPointer;
use assetbridge_core::{ChangeKind, Cursor, DamAsset};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the id, the update timestamp and the deletion flag are in a DAM record.
///
/// Shared by the REST adapter (which has the same three fields, flattened by hand into its own
/// table) and by the webhook and queue sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordShape {
    /// JSON pointer to the asset's id (a string, or a number used as a string).
    /// Default: `"/id"`.
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    /// JSON pointer to the time of the last change: an RFC 3339 string (or
    /// `YYYY-MM-DD HH:MM:SS`, taken as UTC), or a unix timestamp in seconds or milliseconds
    /// (a number or a string of digits; values from 10^11 up are milliseconds).
    /// Default: `"/updated_at"`.
    #[serde(default = "default_updated_pointer")]
    pub updated_pointer: String,
    /// JSON pointer to a deletion marker; when the value there is truthy the record is a
    /// deletion. Truthy: `true`, a non-zero number, a string other than `""`, `"false"`, `"0"`,
    /// `"no"` (so a `deleted_at` timestamp works; when it is one, it is the deletion time).
    /// Absent or `null` means "not deleted". `None` (in TOML: `deleted_pointer = ""`) means
    /// records are never deletions. Default: `Some("/deleted")`.
    #[serde(
        default = "default_deleted_pointer",
        deserialize_with = "deserialize_optional_pointer"
    )]
    pub deleted_pointer: Option<String>,
}

pub(crate) fn default_id_pointer() -> String {
    "/id".to_owned()
}
pub(crate) fn default_updated_pointer() -> String {
    "/updated_at".to_owned()
}
pub(crate) fn default_deleted_pointer() -> Option<String> {
    Some("/deleted".to_owned())
}

/// `""` → `None`, anything else → `Some`.
pub(crate) fn deserialize_optional_pointer<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

impl Default for RecordShape {
    fn default() -> Self {
        Self {
            id_pointer: default_id_pointer(),
            updated_pointer: default_updated_pointer(),
            deleted_pointer: default_deleted_pointer(),
        }
    }
}

/// A record that does not have the configured shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at JSON pointer `{pointer}`: {detail}")]
pub struct RecordError {
    /// What was looked for (`asset id`, `updated timestamp`, ...).
    pub what: String,
    /// The configured pointer.
    pub pointer: String,
    /// What was found instead.
    pub detail: String,
}

/// A parsed record: the change and, when the record has a timestamp, its poll position.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRecord {
    /// The upsert or deletion.
    pub change: ChangeKind,
    /// `(updated_at, id)` of the record; `None` for a deletion without a timestamp.
    pub cursor: Option<Cursor>,
}

impl RecordShape {
    /// Reads one record: an [`ChangeKind::Upsert`] carrying the whole record, or a
    /// [`ChangeKind::Delete`] when the deletion marker is truthy. An upsert needs an id and a
    /// timestamp; a deletion needs only an id (`deleted_at` is the deletion timestamp when the
    /// marker is one, else the record's timestamp if it has one).
    pub fn parse_item(&self, item: &Value) -> Result<ChangeKind, RecordError> {
        self.parse(item).map(|p| p.change)
    }

    /// Like [`RecordShape::parse_item`], with the record's poll cursor.
    pub fn parse(&self, item: &Value) -> Result<ParsedRecord, RecordError> {
        self.compile().parse(item)
    }

    /// The shape with its pointers parsed once, for reading many records (a listing's pages).
    pub fn compile(&self) -> CompiledShape {
        CompiledShape::new(
            &self.id_pointer,
            &self.updated_pointer,
            self.deleted_pointer.as_deref(),
        )
    }
}

/// A [`RecordShape`] whose pointers are parsed once: reading a record looks its three fields up
/// without splitting and unescaping the pointer texts again (`serde_json::Value::pointer`
/// allocates two strings per token on every call).
#[derive(Debug, Clone)]
pub struct CompiledShape {
    id: ShapePointer,
    updated: ShapePointer,
    deleted: Option<ShapePointer>,
}

/// One configured pointer: parsed, or — when it is no valid RFC 6901 pointer — looked up as
/// `serde_json::Value::pointer` reads such a text, so both ways find the same values.
#[derive(Debug, Clone)]
struct ShapePointer {
    text: String,
    parsed: Option<JsonPointer>,
}

impl ShapePointer {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            parsed: JsonPointer::parse(text).ok(),
        }
    }

    fn get<'v>(&self, item: &'v Value) -> Option<&'v Value> {
        match &self.parsed {
            Some(p) => p.get(item),
            None => item.pointer(&self.text),
        }
    }
}

impl CompiledShape {
    /// The shape of [`RecordShape`]'s three pointers, parsed once.
    pub fn new(id_pointer: &str, updated_pointer: &str, deleted_pointer: Option<&str>) -> Self {
        Self {
            id: ShapePointer::new(id_pointer),
            updated: ShapePointer::new(updated_pointer),
            deleted: deleted_pointer.map(ShapePointer::new),
        }
    }

    /// [`RecordShape::parse`] with the pointers parsed once.
    pub fn parse(&self, item: &Value) -> Result<ParsedRecord, RecordError> {
        Ok(self.read(item)?.into_record(|| item.clone()))
    }

    /// [`CompiledShape::parse`], taking the record (an upsert carries it without a copy).
    pub fn parse_owned(&self, item: Value) -> Result<ParsedRecord, RecordError> {
        Ok(self.read(&item)?.into_record(|| item))
    }

    fn read(&self, item: &Value) -> Result<Read, RecordError> {
        let err = |what: &str, pointer: &ShapePointer, detail: String| RecordError {
            what: what.to_owned(),
            pointer: pointer.text.clone(),
            detail,
        };
        let id = match self.id.get(item) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(err(
                    "asset id",
                    &self.id,
                    format!(
                        "expected a non-empty string or a number, found {}",
                        kind(other)
                    ),
                ))
            }
            None => return Err(err("asset id", &self.id, missing(item))),
        };
        let updated = match self.updated.get(item) {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_timestamp(v).map_err(|d| {
                err(
                    "updated timestamp",
                    &self.updated,
                    format!("{d} (asset `{id}`)"),
                )
            })?),
        };
        let deletion = match &self.deleted {
            None => None,
            Some(p) => match p.get(item) {
                None | Some(Value::Null) => None,
                Some(v) => truthy(v).then(|| parse_timestamp(v).ok()),
            },
        };
        let cursor = updated.map(|updated_at| Cursor {
            updated_at,
            dam_id: id.clone(),
        });
        if let Some(deleted_at) = deletion {
            return Ok(Read::Delete {
                id,
                deleted_at: deleted_at.or(updated),
                cursor,
            });
        }
        let Some(updated_at) = updated else {
            return Err(err(
                "updated timestamp",
                &self.updated,
                format!("{} (asset `{id}`)", missing(item)),
            ));
        };
        Ok(Read::Upsert {
            id,
            updated_at,
            cursor,
        })
    }
}

/// What [`CompiledShape::read`] found in a record.
enum Read {
    Upsert {
        id: String,
        updated_at: DateTime<Utc>,
        cursor: Option<Cursor>,
    },
    Delete {
        id: String,
        deleted_at: Option<DateTime<Utc>>,
        cursor: Option<Cursor>,
    },
}

impl Read {
    /// The parsed record; `record` gives the record an upsert carries.
    fn into_record(self, record: impl FnOnce() -> Value) -> ParsedRecord {
        match self {
            Read::Delete {
                id,
                deleted_at,
                cursor,
            } => ParsedRecord {
                change: ChangeKind::Delete {
                    dam_id: id,
                    deleted_at,
                },
                cursor,
            },
            Read::Upsert {
                id,
                updated_at,
                cursor,
            } => ParsedRecord {
                change: ChangeKind::Upsert {
                    asset: DamAsset {
                        id,
                        updated_at,
                        record: record(),
                    },
                },
                cursor,
            },
        }
    }
}

fn missing(item: &Value) -> String {
    match item {
        Value::Object(m) => {
            let keys: Vec<&str> = m.keys().take(12).map(String::as_str).collect();
            format!("missing (the record has keys: {})", keys.join(", "))
        }
        other => format!("missing (the record is {}, not an object)", kind(other)),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            let s = s.trim();
            !(s.is_empty()
                || s.eq_ignore_ascii_case("false")
                || s == "0"
                || s.eq_ignore_ascii_case("no"))
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Unix seconds below this, milliseconds from it (10^11 s is the year 5138).
const MILLIS_FROM: f64 = 1e11;

fn from_unix(n: f64) -> Option<DateTime<Utc>> {
    let millis = if n.abs() >= MILLIS_FROM {
        n
    } else {
        n * 1000.0
    };
    Utc.timestamp_millis_opt(millis.round() as i64).single()
}

/// Reads a timestamp: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), or unix seconds/millis as
/// a number or a string of digits.
pub fn parse_timestamp(v: &Value) -> Result<DateTime<Utc>, String> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(from_unix)
            .ok_or_else(|| format!("unix timestamp out of range: {n}")),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.with_timezone(&Utc));
            }
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                if let Some(t) = s.parse::<f64>().ok().and_then(from_unix) {
                    return Ok(t);
                }
            }
            for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                    return Ok(t.and_utc());
                }
            }
            Err(format!(
                "expected an RFC 3339 timestamp or unix seconds/millis, found \"{s}\""
            ))
        }
        other => Err(format!(
            "expected an RFC 3339 timestamp or unix seconds/millis, found {}",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn upsert_carries_the_record_and_its_cursor() {
        let item = json!({"id": "A-1", "updated_at": "2026-01-02T03:04:05Z", "deleted": false});
        let p = RecordShape::default().parse(&item).unwrap();
        assert_eq!(
            p.change,
            ChangeKind::Upsert {
                asset: DamAsset {
                    id: "A-1".into(),
                    updated_at: t("2026-01-02T03:04:05Z"),
                    record: item.clone()
                }
            }
        );
        assert_eq!(p.cursor.unwrap().dam_id, "A-1");
    }

    #[test]
    fn parsing_a_taken_record_reads_as_parsing_a_borrowed_one() {
        let shape = RecordShape::default().compile();
        for item in [
            json!({"id": "A-1", "updated_at": "2026-01-02T03:04:05Z", "meta": {"sku": "S1"}}),
            json!({"id": 7, "updated_at": 1_767_225_600, "deleted": true}),
            json!({"id": "A-2", "deleted": "2026-01-02T03:04:05Z"}),
            json!({"id": "A-3"}),
            json!({"updated_at": "2026-01-02T03:04:05Z"}),
            json!([1]),
        ] {
            assert_eq!(
                shape.parse_owned(item.clone()),
                shape.parse(&item),
                "{item}"
            );
        }
    }

    #[test]
    fn pointers_that_are_not_rfc_6901_read_as_serde_json_reads_them() {
        // `~2` is no valid escape: the pointer is looked up as `Value::pointer` reads its text
        // (the key `i~2`), as before pointers were parsed once.
        let shape = RecordShape {
            id_pointer: "/i~2".into(),
            updated_pointer: "/meta/up~1dated".into(),
            deleted_pointer: None,
        };
        let item = json!({"i~2": "A-1", "meta": {"up/dated": "2026-01-02T03:04:05Z"}});
        let p = shape.parse(&item).unwrap();
        assert_eq!(p.cursor.unwrap().dam_id, "A-1");
        let e = shape.parse(&json!({"i": "A-1"})).unwrap_err();
        assert_eq!(e.pointer, "/i~2");
    }

    #[test]
    fn deletions_from_flags_and_timestamps() {
        let shape = RecordShape::default();
        let d = shape
            .parse_item(&json!({"id": 7, "updated_at": 1_767_225_600, "deleted": true}))
            .unwrap();
        assert_eq!(
            d,
            ChangeKind::Delete {
                dam_id: "7".into(),
                deleted_at: Some(t("2026-01-01T00:00:00Z"))
            }
        );
        let shape = RecordShape {
            deleted_pointer: Some("/deleted_at".into()),
            ..Default::default()
        };
        let d = shape
            .parse_item(&json!({"id": "x", "deleted_at": "2026-02-01T00:00:00+01:00"}))
            .unwrap();
        assert_eq!(
            d,
            ChangeKind::Delete {
                dam_id: "x".into(),
                deleted_at: Some(t("2026-01-31T23:00:00Z"))
            }
        );
        for not_deleted in [json!(null), json!(false), json!(0), json!("no"), json!("")] {
            let item =
                json!({"id": "x", "updated_at": "2026-01-01T00:00:00Z", "deleted_at": not_deleted});
            assert!(matches!(
                shape.parse_item(&item).unwrap(),
                ChangeKind::Upsert { .. }
            ));
        }
    }

    #[test]
    fn errors_name_the_missing_pointer() {
        let shape = RecordShape {
            id_pointer: "/asset/uuid".into(),
            ..Default::default()
        };
        let e = shape
            .parse_item(&json!({"id": "x", "updated_at": "2026-01-01T00:00:00Z"}))
            .unwrap_err();
        assert_eq!(e.pointer, "/asset/uuid");
        assert!(e.to_string().contains("/asset/uuid"), "{e}");
        assert!(e.detail.contains("keys: id, updated_at"), "{e}");
        let e = RecordShape::default()
            .parse_item(&json!({"id": "x"}))
            .unwrap_err();
        assert_eq!(e.pointer, "/updated_at");
        assert!(e.to_string().contains("asset `x`"), "{e}");
        let e = RecordShape::default()
            .parse_item(&json!({"id": "x", "updated_at": "last tuesday"}))
            .unwrap_err();
        assert!(e.detail.contains("last tuesday"), "{e}");
    }

    #[test]
    fn timestamps_are_auto_detected() {
        let want = t("2026-01-01T00:00:00Z");
        for v in [
            json!("2026-01-01T00:00:00Z"),
            json!("2026-01-01T01:00:00+01:00"),
            json!("2026-01-01 00:00:00"),
            json!(1_767_225_600),
            json!(1_767_225_600_000_i64),
            json!("1767225600"),
            json!("1767225600000"),
            json!(1_767_225_600.0),
        ] {
            assert_eq!(parse_timestamp(&v), Ok(want), "{v}");
        }
        assert_eq!(
            parse_timestamp(&json!(1_767_225_600.5)),
            Ok(t("2026-01-01T00:00:00.500Z"))
        );
        assert!(parse_timestamp(&json!(true)).is_err());
    }

    #[test]
    fn shape_deserialises_with_defaults_and_empty_deleted_pointer() {
        let s: RecordShape = serde_json::from_value(json!({"id_pointer": "/uuid"})).unwrap();
        assert_eq!(s.id_pointer, "/uuid");
        assert_eq!(s.updated_pointer, "/updated_at");
        assert_eq!(s.deleted_pointer.as_deref(), Some("/deleted"));
        let s: RecordShape = serde_json::from_value(json!({"deleted_pointer": ""})).unwrap();
        assert_eq!(s.deleted_pointer, None);
        assert!(serde_json::from_value::<RecordShape>(json!({"idpointer": "/x"})).is_err());
    }
}
