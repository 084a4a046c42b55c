//! Integration tests for warren-broker with real clients (lapin and amqprs) over TCP.
//!
//! Each test starts its own broker in-process on a free loopback port, so the tests run in
//! parallel. Expectations are RabbitMQ 3.x's: where a test pins a reply code or text, it is
//! the one RabbitMQ sends. Nothing sleeps to wait for a delivery: deliveries, closes and
//! listings are awaited with a deadline.

mod backup;
mod common;
mod connection;
mod consume;
mod definitions;
mod durability;
mod exchanges;
mod features;
mod fuzz;
mod handle;
mod paging;
mod permissions;
mod policies;
mod publish;
mod queues;
mod raw;
mod robustness;
mod scripted;
mod store_faults;
