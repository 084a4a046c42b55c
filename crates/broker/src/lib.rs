//! # warren-broker
//!
//! The Warren broker: an AMQP 0-9-1 server with RabbitMQ's semantics, composed of
//! `warren-amqp-codec` (the protocol state machine), `warren-routing` (exchanges and
//! bindings) and `warren-queue` (queue and channel rules).
//!
//! This crate is the composition and the runtime glue, nothing more: the accept loop, one task
//! per connection driving the codec's sans-IO connection, virtual hosts, users and permissions,
//! and the embedding API. It holds no AMQP rule of its own.
//!
//! ```no_run
//! # async fn run() -> Result<(), warren_broker::Error> {
//! use std::time::Duration;
//! let broker = warren_broker::Broker::builder()
//!     .listen("127.0.0.1:5672".parse().unwrap())
//!     .start()
//!     .await?;
//! let handle = broker.handle();
//! println!("{:?}", handle.queues("/")?);
//! broker.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! Threading: a multi-threaded tokio runtime; each connection is one task; each queue is a
//! state machine behind its own lock, driven by whichever task touches it (see
//! `docs/adr/0007-broker-concurrency.md`).
#![forbid(unsafe_code)]

mod auth;
mod broker;
mod connection;
mod deadletter;
mod definitions;
mod durable;
mod handle;
mod message;
mod outbox;
mod paging;
mod policy;
mod staging;
mod vhost;

pub use auth::{PasswordHash, Permissions};
pub use broker::{Broker, BrokerBuilder, Error};
pub use definitions::ImportReport;
pub use durable::{BackupReport, DurableError};
pub use handle::{
    BindingInfo, BrokerHandle, ChannelInfo, ConnectionInfo, Counters, ExchangeInfo, QueueInfo,
};
pub use policy::PolicyInfo;
pub use vhost::QueueCounters;

/// The broker's clock for queue rules (message TTL): milliseconds since the process first
/// asked, monotonic.
pub(crate) fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A random 64-bit value from the system's source (0 if it fails).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}
