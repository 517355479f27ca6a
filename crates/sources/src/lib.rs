//! Where changes come from, besides polling: every source turns what it receives into
//! [`assetbridge_core::AssetChange`]s and appends them to the durable inbox
//! ([`assetbridge_store::Store::enqueue`]) **before** it acknowledges anything.
//!
//! - [`message`]: the configurable shape of a change message (JSON pointers, CloudEvents),
//!   shared by webhooks and queues.
//! - [`webhook`]: the HTTP receiver (generic DAM webhooks with HMAC or API key; Adobe I/O
//!   Events with challenge and digital signatures).
//! - [`journal`]: the Adobe I/O Events journal poller.
//! - [`amqp`]: RabbitMQ consumer.
//! - [`nats`]: NATS JetStream consumer.
//! - [`queue`]: what the queue consumers share (errors, counters, the write path).

pub mod amqp;
pub mod journal;
pub mod message;
pub mod nats;
mod pem;
pub mod queue;
pub mod webhook;
