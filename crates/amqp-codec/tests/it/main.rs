//! Integration tests of `warren-amqp-codec`, one binary (see `docs/ARCHITECTURE.md`).

mod connection;
mod golden;
mod properties;
mod robustness;
