//! Adobe side of assetbridge: AEM as a Cloud Service (Assets Author API), Adobe IMS and
//! Adobe I/O Events.
//!
//! Building blocks, no server:
//! - [`ims`]: the IMS client-credentials token client (cached, single-flight refresh).
//! - [`author`]: the AEM Assets Author API client (`GET`/`PATCH .../metadata`), limited to an
//!   allow-list of author hosts.
//! - [`events`]: I/O Events deliveries: CloudEvent parsing, the challenge handshake, digital
//!   signature verification (RSASSA-PKCS1-v1_5 SHA-256, keys fetched from a fixed origin).
//! - [`journal`]: the I/O Events Journaling API client (pull model).
//!
//! The contract these follow is the project's Adobe reference notes; behaviours the notes mark
//! as unverified are called out where they matter.

pub mod author;
pub mod events;
pub mod ims;
pub mod journal;
mod keys;
mod retry;

pub use author::{
    metadata_pointer, AemClient, AemConfig, AemError, AssetMetadata, PatchOp, PatchResponse,
};
pub use events::{
    challenge_from_body, challenge_from_query, challenge_response, changed_metadata_keys,
    check_recipients, is_echo_of, parse_delivery, parse_delivery_with_header_id,
    validation_url_from_body, AdobeEvent, DeliveryError, EventError, EventType, SignatureError,
    SignatureVerifier, SignatureVerifierConfig,
};
pub use ims::{ImsClient, ImsConfig, ImsError, ImsToken};
pub use journal::{
    JournalBatch, JournalClient, JournalConfig, JournalEntry, JournalError, JournalPosition,
};
