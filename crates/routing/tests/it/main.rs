//! Integration tests for warren-routing.
