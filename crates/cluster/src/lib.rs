//! # warren-cluster
//!
//! Clustering. **Work has not started**: this crate holds only its description until the
//! clustering work.
//!
//! It will own: membership, the node-to-node transport, the adapter to the Raft engine
//! (openraft, pinned, its types never in our public API), and a generic replicated
//! `StateMachine` over opaque commands encoded with postcard. It knows nothing about AMQP.
