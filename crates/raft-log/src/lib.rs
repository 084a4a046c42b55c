//! # warren-raft-log
//!
//! Durable Raft state. **Work has not started**: this crate holds only its description until
//! the clustering work.
//!
//! It will own: the persistent Raft log (entries, truncation, purge), the vote and term record
//! and snapshots, stored through `warren-store`'s segmented log. It knows no Raft library:
//! `warren-cluster` adapts it to the engine. Synchronous and runtime-agnostic.
