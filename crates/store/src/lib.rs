//! # warren-store
//!
//! Durable storage, synchronous and runtime-agnostic; an fsync error is fatal and never
//! retried. **In progress** (the durability issue): today it holds the storage layer every
//! other part goes through.
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
//! - [`meta`]: the metadata store: keys and values changed in atomic, durable batches, with
//!   snapshot compaction that a crash at any point leaves consistent.
//!
//! It will own: a segmented append-only log of records (length, CRC32C, version byte), the
//! message store with reference counts (a message routed to many queues is written once), per
//! queue indexes of positions and acks, the metadata store for durable definitions, group
//! commit, compaction, and recovery that cuts torn tails and reports damaged records.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic_in_result_fn
)]

pub mod backend;
pub mod log;
pub mod meta;

pub use backend::{Backend, BackendFile, CrashBackend, Fault, FileBackend, MemoryBackend};
pub use log::{Damage, Log, LogOptions, Position, Record, Recovery, StoreError};
pub use meta::{Change, MetaStore};
