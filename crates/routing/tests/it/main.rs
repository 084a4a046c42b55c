//! Integration tests for warren-routing: one binary, one module per area.

mod topology;
