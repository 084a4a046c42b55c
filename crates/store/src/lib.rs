//! # warren-store
//!
//! Durable storage. **Work has not started**: this crate holds only its description until the
//! durability issue.
//!
//! It will own: a segmented append-only log of records (length, CRC32C, version byte), the
//! message store with reference counts (a message routed to many queues is written once), per
//! queue indexes of positions and acks, the metadata store for durable definitions, group
//! commit with `fdatasync`, compaction, and recovery that cuts torn tails and reports damaged
//! records. All file access goes through one `Backend` trait (file, in-memory and
//! fault-injecting backends) and every backend passes the exported conformance suite.
//!
//! It is synchronous and runtime-agnostic; an fsync error is fatal and never retried.
