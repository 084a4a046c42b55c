//! # warren-store
//!
//! Durable storage, synchronous and runtime-agnostic; an fsync error is fatal and never
//! retried.
//!
//! - [`backend`]: the [`Backend`] trait (a flat namespace of files with positional reads and
//!   writes, `fdatasync`, and directory syncs for creations, renames and removals), a
//!   [`FileBackend`] on disk, a [`MemoryBackend`], a [`CrashBackend`] whose durable image only
//!   completed syncs advance and which fails chosen operations, and the [`backend::conformance`]
//!   suite every backend passes.
//! - [`log`]: a segmented append-only log of checksummed records (length, CRC32C, version,
//!   kind), group commit with one `fdatasync` per [`Log::sync`], segments rolled at a size
//!   limit, and recovery that cuts torn tails and skips (and reports) damaged records. A
//!   failed write or sync stops the log for good.
//! - [`messages`]: the message store: each persistent message written once for all the
//!   queues it reaches, reference-counted, retired by acks; group commit through
//!   [`MessageStore::begin_sync`] (one `fdatasync` run outside the caller's lock); segment
//!   summaries so that recovery reads only the last segment's bodies; removal of dead
//!   segments and compaction of sparse ones, so that disk use follows the live data.
//! - [`meta`]: the metadata store: keys and values changed in atomic, durable batches, with
//!   snapshot compaction that a crash at any point leaves consistent.
//!
//! It does not know AMQP: messages are opaque octets, queues are numbers, definitions are
//! keys and values each owner encodes.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic_in_result_fn
)]

pub mod backend;
pub mod log;
pub mod messages;
pub mod meta;

pub use backend::{Backend, BackendFile, CrashBackend, Fault, FileBackend, MemoryBackend};
pub use log::SyncJob;
pub use log::{Damage, Log, LogOptions, Position, Record, Recovery, StoreError};
pub use messages::{
    MessageRef, MessageStore, MessageStoreOptions, MessageStoreStats, Recovered, StoredMessage,
    SyncTicket,
};
pub use meta::{Change, MetaStore};
