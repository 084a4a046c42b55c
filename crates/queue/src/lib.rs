//! # warren-queue
//!
//! Queue semantics as a sans-IO state machine. **Work has not started**: this crate holds only
//! its description until the single-node broker issue.
//!
//! It will own: FIFO order, consumers served round-robin, prefetch credit, `basic.get`, acks,
//! nacks, rejects and requeue to the original position, purge, exclusive and single-active
//! consumers, priorities, TTL, length limits and dead-letter decisions, all expressed as effects
//! the caller carries out. Time is an argument; it never reads the clock, does no I/O and has
//! no async runtime.
