//! # warren-management
//!
//! The management HTTP API and metrics endpoint. **Work has not started**: this crate holds only
//! its description until the operations work.
//!
//! It will serve RabbitMQ's management API shapes and a metrics endpoint over a `BrokerHandle`,
//! so that embedders who do not want HTTP never compile it.
