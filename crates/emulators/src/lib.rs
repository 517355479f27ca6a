//! Emulators of the remote services assetbridge talks to, faithful to the documented contracts
//! in the project's API reference (status codes, headers, limits, error bodies). They serve
//! integration tests, `assetbridge demo`, `assetbridge emulate ...` and the benchmark harness.
//!
//! - [`akeneo`]: the Akeneo PIM REST API (token, Asset Manager, media files, products).
//! - [`dam`]: a generic REST DAM with three paging styles, seeded deterministically.
//! - [`aem`]: AEM Assets Author API, IMS token endpoint, Adobe I/O Events sender and journal.

pub mod aem;
pub mod akeneo;
pub mod dam;
