//! # warren-broker
//!
//! The broker. **Work has not started**: this crate holds only its description until the
//! single-node broker issue.
//!
//! It will be thin composition: the accept loop, one task per connection driving
//! `warren-amqp-codec`'s sans-IO connection state machine, queue actors driving `warren-queue`,
//! routing through `warren-routing`, persistence through `warren-store`, configuration, and the
//! embedding API (`Broker::builder()`, `serve_connection(io)`, `BrokerHandle`). It holds no rules
//! of AMQP semantics of its own: those live in the crates it composes.
