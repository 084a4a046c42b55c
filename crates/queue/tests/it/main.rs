//! Integration tests for warren-queue: one binary, one module per area.
//!
//! The expectations are RabbitMQ 3.x's (classic queues, `rabbit_channel`,
//! `rabbit_queue_consumers`): where a test pins a reply code or text, it is the one RabbitMQ
//! sends.

mod arguments;
mod common;
mod confirms;
mod consumers;
mod credit;
mod deadletter;
mod declare;
mod limits;
mod mode;
mod model;
mod policy;
mod rules;
mod settle;
mod unacked;
