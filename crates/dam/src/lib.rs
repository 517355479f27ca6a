//! DAM clients of assetbridge.
//!
//! - [`rest`]: the generic REST adapter — listing changes since a time in any of three paging
//!   styles, reading items with configured JSON pointers, fetching files.
//! - [`record`]: reading one DAM record with configured JSON pointers ([`record::RecordShape`]),
//!   shared by the REST adapter and the webhook and queue sources.

pub mod aem;
pub mod record;
pub mod rest;
