//! A demo catalogue structure for `assetbridge demo`, tests and benchmarks.

use std::collections::{BTreeMap, BTreeSet};

use assetbridge_core::{AssetAttribute, AttributeType, FamilyStructure};

use super::products::ProductAttribute;

/// The `media` link prefix of [`demo_structure`].
pub const DEMO_MEDIA_PREFIX: &str = "https://dam.local/files/";

/// Option codes of the demo `tags` attribute.
pub const DEMO_TAGS: [&str; 10] = [
    "summer", "winter", "outdoor", "indoor", "studio", "red", "blue", "green", "black", "white",
];

/// Two asset families, `packshots` and `lifestyle`, with the media prefix
/// [`DEMO_MEDIA_PREFIX`]. See [`demo_structure_with_prefix`].
pub fn demo_structure() -> Vec<FamilyStructure> {
    demo_structure_with_prefix(DEMO_MEDIA_PREFIX)
}

/// Two asset families, `packshots` and `lifestyle`, each with:
/// - `media`: media_link with `prefix` = `media_prefix` (the main media);
/// - `title`: text, one value per locale;
/// - `description`: text, one value per locale, at most 500 characters;
/// - `tags`: multiple_options with the options [`DEMO_TAGS`];
/// - `width`, `height`: number (integers);
/// - `sku`: text;
/// - `media_file`: media_file, extensions jpg/png/pdf/tif, at most 50 MB.
pub fn demo_structure_with_prefix(media_prefix: &str) -> Vec<FamilyStructure> {
    ["packshots", "lifestyle"]
        .into_iter()
        .map(|code| {
            let mut attrs = BTreeMap::new();
            let mut add = |a: AssetAttribute| {
                attrs.insert(a.code.clone(), a);
            };
            let mut media = AssetAttribute::new("media", AttributeType::MediaLink);
            media.prefix = Some(media_prefix.to_owned());
            add(media);
            let mut title = AssetAttribute::new("title", AttributeType::Text);
            title.value_per_locale = true;
            add(title);
            let mut description = AssetAttribute::new("description", AttributeType::Text);
            description.value_per_locale = true;
            description.max_characters = Some(500);
            add(description);
            let mut tags = AssetAttribute::new("tags", AttributeType::MultipleOptions);
            tags.options = Some(
                DEMO_TAGS
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<BTreeSet<_>>(),
            );
            add(tags);
            for dim in ["width", "height"] {
                let mut n = AssetAttribute::new(dim, AttributeType::Number);
                n.decimals_allowed = Some(false);
                add(n);
            }
            add(AssetAttribute::new("sku", AttributeType::Text));
            let mut file = AssetAttribute::new("media_file", AttributeType::MediaFile);
            file.allowed_extensions = Some(["jpg", "png", "pdf", "tif"].map(String::from).to_vec());
            file.max_file_size = Some("50".into());
            add(file);
            FamilyStructure {
                code: code.to_owned(),
                attribute_as_main_media: Some("media".into()),
                attributes: attrs,
            }
        })
        .collect()
}

/// Product attributes linking products to the demo asset families: asset collections
/// `packshots` and `lifestyle` (`reference_data_name` = the family of the same code).
pub fn demo_product_attributes() -> Vec<ProductAttribute> {
    vec![
        ProductAttribute::asset_collection("packshots", "packshots"),
        ProductAttribute::asset_collection("lifestyle", "lifestyle"),
    ]
}
