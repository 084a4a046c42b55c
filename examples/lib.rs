//! Examples of using Warren's crates; see the `[[example]]` targets in this package:
//!
//! - `codec-dump`: decodes a captured AMQP byte stream with `warren-amqp-codec` alone and prints
//!   its frames (`cargo run --example codec-dump -- FILE`).
