//! Integration tests for warren-routing: one binary, one module per area.

mod consistent_hash;
mod headers;
mod props;
mod topic;
mod topology;
