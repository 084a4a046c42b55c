//! # warren-testkit
//!
//! Test support, a dev-dependency only. **Work has not started**: this crate holds only its
//! description until the broker issue needs it.
//!
//! It will hold: a scripted AMQP peer (frame builders over an in-memory duplex stream) for exact
//! protocol tests against the broker, the deterministic multi-node simulation harness, and
//! fault-injecting storage backends. (The codec's own state-machine tests script frames
//! directly and need nothing from here.)
