//! Products (§6): being built.

/// Products by uuid, with the identifier and asset-collection indexes.
#[derive(Default)]
pub(crate) struct ProductStore {}
