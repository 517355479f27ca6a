//! Helpers shared by the mapping tests: a family table as written in the configuration
//! (`asset_code`, `values`, `maps`), compiled against a structure.

#![allow(dead_code)]

use assetbridge_core::mapping::{
    CompileContext, CompiledMapping, FamilyMapping, MappingError, ValueMaps, ValueRule,
};
use assetbridge_core::{DamAsset, FamilyStructure};
use chrono::TimeZone;
use serde::Deserialize;
use serde_json::Value;

/// The mapping keys of a `[[families]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyTable {
    #[serde(default)]
    pub asset_code: Option<String>,
    #[serde(default)]
    pub values: Vec<ValueRule>,
    #[serde(default)]
    pub maps: ValueMaps,
}

impl FamilyTable {
    pub fn parse(toml_text: &str) -> Self {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad family table: {e}\n{toml_text}"))
    }

    pub fn mapping(&self) -> FamilyMapping {
        FamilyMapping {
            asset_code: self
                .asset_code
                .clone()
                .unwrap_or_else(|| FamilyMapping::default().asset_code),
            values: self.values.clone(),
        }
    }

    pub fn compile(
        &self,
        structure: Option<&FamilyStructure>,
    ) -> Result<CompiledMapping, MappingError> {
        CompiledMapping::compile(
            &self.mapping(),
            &CompileContext {
                structure,
                maps: Some(&self.maps),
                ..CompileContext::default()
            },
        )
    }
}

/// Compiles a family table (TOML) against `structure`.
pub fn compile(
    toml_text: &str,
    structure: Option<&FamilyStructure>,
) -> Result<CompiledMapping, MappingError> {
    FamilyTable::parse(toml_text).compile(structure)
}

/// A structure from Akeneo-like JSON (`{"code", "attributes": {code: attribute}}`).
pub fn structure(v: Value) -> FamilyStructure {
    serde_json::from_value(v).expect("structure JSON")
}

/// A DAM asset whose id is the record's `id_pointer` value (or `"x"`).
pub fn dam_at(record: Value, id_pointer: &str) -> DamAsset {
    DamAsset {
        id: match record.pointer(id_pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "x".into(),
        },
        updated_at: chrono::Utc.timestamp_opt(1_709_288_430, 0).unwrap(),
        record,
    }
}

pub fn dam(record: Value) -> DamAsset {
    dam_at(record, "/id")
}
