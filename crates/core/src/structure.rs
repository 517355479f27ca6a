//! The structure of an Akeneo asset family, as the Asset Manager API describes it
//! (`GET /api/rest/v1/asset-families/{family}` and `.../attributes`, `.../options`).
//!
//! Pure data: the Akeneo client fills it and caches it; mapping and validation read it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Asset attribute types of the Asset Manager (`type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    Text,
    MediaLink,
    Number,
    MediaFile,
    SingleOption,
    MultipleOptions,
    Boolean,
    Date,
    Record,
    AutoTagging,
    /// A type this version of the connector does not know; values are sent as mapped.
    #[serde(other)]
    Unknown,
}

/// One asset attribute with the properties the connector needs to write valid values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetAttribute {
    pub code: String,
    #[serde(rename = "type")]
    pub kind: AttributeType,
    #[serde(default)]
    pub value_per_locale: bool,
    #[serde(default)]
    pub value_per_channel: bool,
    /// text: maximum length.
    #[serde(default)]
    pub max_characters: Option<u32>,
    /// media_link: the part of the URL Akeneo adds in front of the stored data.
    #[serde(default)]
    pub prefix: Option<String>,
    /// media_link: the part of the URL Akeneo adds after the stored data.
    #[serde(default)]
    pub suffix: Option<String>,
    /// media_file: allowed extensions (lower case, no dot).
    #[serde(default)]
    pub allowed_extensions: Option<Vec<String>>,
    /// media_file: maximum size in MB, as Akeneo's string.
    #[serde(default)]
    pub max_file_size: Option<String>,
    /// number: whether decimals are allowed.
    #[serde(default)]
    pub decimals_allowed: Option<bool>,
    #[serde(default)]
    pub min_value: Option<String>,
    #[serde(default)]
    pub max_value: Option<String>,
    /// single_option / multiple_options: the option codes that exist (filled from the options
    /// endpoint; `None` when not loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeSet<String>>,
}

impl AssetAttribute {
    /// A plain attribute of the given type, neither localizable nor scopable.
    pub fn new(code: impl Into<String>, kind: AttributeType) -> Self {
        Self {
            code: code.into(),
            kind,
            value_per_locale: false,
            value_per_channel: false,
            max_characters: None,
            prefix: None,
            suffix: None,
            allowed_extensions: None,
            max_file_size: None,
            decimals_allowed: None,
            min_value: None,
            max_value: None,
            options: None,
        }
    }
}

/// An asset family and its attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyStructure {
    pub code: String,
    #[serde(default)]
    pub attribute_as_main_media: Option<String>,
    pub attributes: BTreeMap<String, AssetAttribute>,
}

impl FamilyStructure {
    pub fn attribute(&self, code: &str) -> Option<&AssetAttribute> {
        self.attributes.get(code)
    }
}
