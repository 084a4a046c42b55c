//! # warren-queue
//!
//! Queue semantics as a sans-IO state machine: the rules of RabbitMQ's classic queues, with no
//! runtime, no clock and no I/O, so they run in a plain loop in tests.
//!
//! - [`Queue`]: messages in FIFO order; consumers served round-robin; each delivery asks the
//!   consumer's own prefetch and then its owner ([`Recipient`]) for credit; `basic.get`;
//!   settlements (ack, nack, reject) handed back with [`Settlement`], a requeued message going
//!   back to its original position marked redelivered; purge; cancel; exclusive consumers;
//!   auto-delete once the last consumer goes.
//! - [`channel`]: the channel-side halves: delivery tags and unsettled deliveries
//!   ([`channel::Unacked`], with RabbitMQ's `multiple` and unknown-tag rules), the channel-wide
//!   prefetch shared by the channel's queues ([`channel::ChannelCredit`]), publisher-confirm
//!   numbering folded into `multiple` replies ([`channel::Confirms`]), and confirm/tx modes
//!   with the transaction buffer ([`channel::Mode`]).
//!
//! - The rules queue arguments set ([`Limits`]), with time passed in ([`Queue::advance`]):
//!   message TTL per queue and per message (expired messages leave wherever they are),
//!   length limits with `drop-head`, `reject-publish` and `reject-publish-dlx`, priorities,
//!   the delivery limit; single active consumer and consumer priorities. Messages that leave
//!   other than by an ack come out as [`Dead`] with their reason, and [`deadletter`] writes
//!   their dead letters' headers as RabbitMQ does.
//! - [`policy`]: what a policy or operator policy may set, which one applies, and how it
//!   combines with a queue's arguments ([`declare::settings`]); [`Queue::set_limits`] applies
//!   a change to a live queue.
//!
//! What it deliberately does not do: hold channels, sockets or delivery tags inside a queue
//! (a delivery leaves as an [`Entry`] and comes back as a [`Settlement`]), know how messages
//! are encoded (the message type is the caller's), read a clock, or decide anything about
//! routing (a dead letter is the caller's to route).
//!
//! ```
//! use warren_queue::{ConsumerSpec, Outcome, Payload, Queue, QueueConfig, Recipient, Settlement};
//!
//! struct Msg(&'static str);
//! impl Payload for Msg {
//!     fn body_len(&self) -> usize { self.0.len() }
//! }
//! struct Anyone;
//! impl Recipient for Anyone {
//!     fn try_reserve(&self, _ack_required: bool) -> bool { true }
//! }
//!
//! let mut q = Queue::new(QueueConfig::default());
//! q.publish(Msg("a"));
//! q.publish(Msg("b"));
//! let c = q
//!     .add_consumer(ConsumerSpec {
//!         no_ack: false, exclusive: false, prefetch: 1, recipient: Anyone, priority: 0,
//!     })
//!     .unwrap();
//! let mut out = Vec::new();
//! q.deliver(|_, entry| out.push(entry));
//! assert_eq!(out.len(), 1); // prefetch 1: "b" waits for the ack
//! let first = out.pop().unwrap();
//! q.settle([Settlement { consumer: Some(c), entry: first, outcome: Outcome::Requeue }]);
//! q.deliver(|_, entry| out.push(entry));
//! assert_eq!(out[0].message.0, "a");
//! assert!(out[0].redelivered());
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod channel;
pub mod deadletter;
pub mod declare;
pub mod policy;
mod queue;
mod ready;

pub use queue::{
    ConsumeError, Consumer, ConsumerId, ConsumerSpec, Dead, DeathReason, Entry, Limits, Offset,
    Outcome, Overflow, Payload, Pushed, Queue, QueueConfig, QueueStats, Recipient, Removed,
    Settlement,
};
