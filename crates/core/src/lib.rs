//! The pure core of assetbridge.
//!
//! Everything here is data and pure functions: the DAM's view of an asset ([`DamAsset`]), a change
//! learned from a source ([`AssetChange`]), the PIM's view ([`PimAsset`]), the asset family
//! structure as Akeneo describes it ([`structure`]), the mapping from one to the other
//! ([`mapping`]), family routing ([`routing`]), asset-code sanitising ([`code`]), content hashing
//! ([`hash`]), a request latency histogram for the clients' metrics ([`latency`]) and poll cursors ([`cursor`]). No I/O, no HTTP library, no clock reads: adapters depend on this crate, never the
//! reverse.

pub mod asset;
pub mod code;
pub mod cursor;
pub mod hash;
pub mod json;
pub mod latency;
pub mod mapping;
pub mod routing;
pub mod structure;
pub mod validate;

pub use asset::{AssetChange, ChangeKind, DamAsset, PimAsset, PimValue, REPLAYED};
pub use code::sanitize_code;
pub use cursor::Cursor;
pub use hash::{content_hash, ContentHash};
pub use mapping::{CompiledMapping, FamilyMapping, MappingError, ValueRule};
pub use structure::{AssetAttribute, AttributeType, FamilyStructure};
