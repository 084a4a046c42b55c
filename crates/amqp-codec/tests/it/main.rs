//! Integration tests of `warren-amqp-codec`, one binary (see `docs/ARCHITECTURE.md`).

mod connection;
mod gen_strategies;
mod golden;
mod properties;
mod robustness;
