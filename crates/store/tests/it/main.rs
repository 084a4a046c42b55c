//! Integration tests of `warren-store`, one binary (see `docs/ARCHITECTURE.md`).

mod backend;
mod log;
mod messages;
mod meta;
