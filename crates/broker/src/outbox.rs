//! Where queues leave deliveries for a connection, and the handle a queue keeps of each
//! consumer.
//!
//! A queue, run by whichever task touched it, pushes deliveries into the consumer's
//! connection's outbox and wakes that connection's task once per batch. The connection task
//! takes them out, numbers them on their channel and writes them. The outbox is bounded: past
//! [`Outbox::LIMIT`] entries, queues stop delivering to the connection's consumers (they
//! leave the rotation) until the connection has written enough and resumes them. A client
//! that does not read its socket therefore holds back only its own deliveries, in its
//! queues, counted by the memory alarm.

use crate::message::Message;
use crate::vhost::QueueCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;
use warren_amqp_codec::ShortStr;
use warren_queue::channel::ChannelCredit;
use warren_queue::{ConsumerId, Entry, Recipient};

/// Something for a connection to send.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message for a consumer.
    Deliver {
        channel: u16,
        consumer: ConsumerId,
        tag: ShortStr,
        no_ack: bool,
        queue: Arc<QueueCell>,
        entry: Entry<Arc<Message>>,
    },
    /// The consumer's queue was deleted: tell the client (`basic.cancel`).
    Cancelled {
        channel: u16,
        tag: ShortStr,
        consumer: ConsumerId,
        queue: Arc<QueueCell>,
    },
    /// A direct reply-to message for a `amq.rabbitmq.reply-to` consumer.
    Reply {
        channel: u16,
        tag: ShortStr,
        message: Arc<Message>,
    },
}

/// One connection's inbound deliveries.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    items: Mutex<VecDeque<Outgoing>>,
    /// Entries pushed and not yet emitted: those in `items` and those the connection has taken
    /// but not written yet ([`Outbox::done`] counts them out).
    len: AtomicUsize,
    /// A queue refused a delivery because the outbox was full.
    starved: AtomicBool,
    pub(crate) notify: Notify,
}

impl Outbox {
    /// Entries past which queues hold deliveries back.
    pub(crate) const LIMIT: usize = 4096;

    pub(crate) fn push(&self, item: Outgoing) {
        let was_empty = {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            items.push_back(item);
            self.len.fetch_add(1, Ordering::SeqCst);
            items.len() == 1
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Takes up to `max` entries; they still count until [`Outbox::done`].
    pub(crate) fn take(&self, max: usize, out: &mut VecDeque<Outgoing>) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let n = items.len().min(max);
        if n == items.len() && out.is_empty() {
            std::mem::swap(&mut *items, out);
        } else {
            out.extend(items.drain(..n));
        }
        if items.capacity() > 4 * Self::LIMIT {
            items.shrink_to(Self::LIMIT);
        }
    }

    /// `n` taken entries were emitted (or given back to their queues).
    pub(crate) fn done(&self, n: usize) {
        if n > 0 {
            self.len.fetch_sub(n, Ordering::SeqCst);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether queues must hold deliveries back. A refusal is recorded before the length is
    /// read again, so a connection that drains in between either sees the record (and
    /// resumes its consumers) or was seen draining (and the delivery goes ahead).
    pub(crate) fn is_full(&self) -> bool {
        if self.len() < Self::LIMIT {
            return false;
        }
        self.starved.store(true, Ordering::SeqCst);
        if self.len() < Self::LIMIT {
            return false;
        }
        self.notify.notify_one();
        true
    }

    /// Whether queues held back deliveries since the last call (the caller resumes its
    /// consumers when it has room again).
    pub(crate) fn take_starved(&self) -> bool {
        self.starved.swap(false, Ordering::SeqCst)
    }
}

/// A queue's handle on one consumer: the connection's outbox, the channel and its shared
/// prefetch credit.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerLink {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) channel: u16,
    pub(crate) tag: ShortStr,
    pub(crate) credit: Arc<ChannelCredit>,
}

impl Recipient for ConsumerLink {
    fn try_reserve(&self, ack_required: bool) -> bool {
        if self.outbox.is_full() {
            return false;
        }
        !ack_required || self.credit.try_acquire()
    }
}

/// Paused publishers (their outboxes), each once, woken together.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Vec<Weak<Outbox>>);

impl Waiters {
    /// Adds a publisher (once; publishers gone meanwhile are forgotten).
    pub(crate) fn add(&mut self, publisher: &Arc<Outbox>) {
        self.0.retain(|w| w.strong_count() > 0);
        if !self
            .0
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(publisher)))
        {
            self.0.push(Arc::downgrade(publisher));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wakes every publisher and forgets them.
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            if let Some(o) = w.upgrade() {
                o.notify.notify_one();
            }
        }
    }
}
