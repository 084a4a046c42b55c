//! One queue: its messages, its consumers, and who gets what next.

use std::collections::{BTreeMap, VecDeque};

/// The position a message took when it entered its queue. Offsets only grow, so they give the
/// queue's order: a message that is requeued goes back to the position its offset names.
pub type Offset = u64;

/// What a queue needs to know of a message.
pub trait Payload {
    /// The size of the body in octets (for byte counts and, later, byte limits).
    fn body_len(&self) -> usize;
}

impl<T: Payload + ?Sized> Payload for std::sync::Arc<T> {
    fn body_len(&self) -> usize {
        (**self).body_len()
    }
}

/// What the queue asks of a consumer's owner before each delivery.
///
/// The broker's implementation checks the channel-wide prefetch (`basic.qos` with `global`)
/// and whether the connection can take more output; the queue checks the consumer's own
/// prefetch itself. A consumer that is refused leaves the rotation until
/// [`Queue::resume`] puts it back.
pub trait Recipient {
    /// Takes one unit of credit for a delivery, or refuses. `ack_required` is false for
    /// `no_ack` consumers, which no prefetch limits (as in RabbitMQ).
    fn try_reserve(&self, ack_required: bool) -> bool;
}

/// A message in a queue, or out for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<M> {
    /// Where the message sits in the queue's order.
    pub offset: Offset,
    /// How many times the message came back to the queue after being handed out (the
    /// `redelivered` flag is `delivery_count > 0`; a delivery limit counts with it).
    pub delivery_count: u32,
    /// The message itself.
    pub message: M,
}

impl<M> Entry<M> {
    /// Whether the message was delivered before (the `redelivered` flag).
    pub fn redelivered(&self) -> bool {
        self.delivery_count > 0
    }
}

/// A consumer's identity in one queue: a slot and a generation, so that a late settlement for
/// a cancelled consumer never touches one that later took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId {
    slot: u32,
    generation: u32,
}

/// How a consumer subscribes (`basic.consume`, with the channel's `basic.qos` applied).
#[derive(Debug, Clone)]
pub struct ConsumerSpec<C> {
    /// No acknowledgements: a delivery is settled as it is handed out.
    pub no_ack: bool,
    /// The consumer wants the queue to itself.
    pub exclusive: bool,
    /// Unacknowledged deliveries allowed at once (0: no limit); `basic.qos` with
    /// `global=false` as RabbitMQ interprets it.
    pub prefetch: u16,
    /// The owner's handle: where deliveries go and who is asked for channel credit.
    pub recipient: C,
}

/// One consumer of a queue.
#[derive(Debug)]
pub struct Consumer<C> {
    id: ConsumerId,
    spec: ConsumerSpec<C>,
    /// Deliveries not yet settled (only counted when acks are required).
    unacked: u32,
    /// Whether the consumer is in the rotation.
    active: bool,
}

impl<C> Consumer<C> {
    /// The consumer's id.
    pub fn id(&self) -> ConsumerId {
        self.id
    }
    /// The owner's handle.
    pub fn recipient(&self) -> &C {
        &self.spec.recipient
    }
    /// Whether deliveries need no acknowledgement.
    pub fn no_ack(&self) -> bool {
        self.spec.no_ack
    }
    /// Whether the consumer holds the queue exclusively.
    pub fn exclusive(&self) -> bool {
        self.spec.exclusive
    }
    /// Its prefetch limit (0: none).
    pub fn prefetch(&self) -> u16 {
        self.spec.prefetch
    }
    /// Deliveries it has not settled yet.
    pub fn unacked(&self) -> u32 {
        self.unacked
    }
    fn has_own_credit(&self) -> bool {
        self.spec.no_ack || self.spec.prefetch == 0 || self.unacked < u32::from(self.spec.prefetch)
    }
}

/// Why `basic.consume` was refused by the queue itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeError {
    /// An exclusive consumer was asked for while others exist, or a consumer while an
    /// exclusive one exists (RabbitMQ: 403 ACCESS_REFUSED "queue '…' in vhost '…' in
    /// exclusive use").
    ExclusiveInUse,
}

/// What became of a delivery when its channel settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `basic.ack`: done with.
    Ack,
    /// `basic.nack`/`basic.reject` with `requeue`, `basic.recover`, or the channel closing:
    /// back to its original position, marked redelivered.
    Requeue,
    /// `basic.nack`/`basic.reject` without `requeue`: dropped (dead-lettered once the queue
    /// has a dead-letter exchange).
    Discard,
}

/// A delivery settled by its channel, handed back to its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement<M> {
    /// The consumer it went to (`None` for `basic.get`).
    pub consumer: Option<ConsumerId>,
    /// The message, as delivered.
    pub entry: Entry<M>,
    /// What to do with it.
    pub outcome: Outcome,
}

/// A consumer removed from a queue.
#[derive(Debug)]
pub struct Removed<C> {
    /// The consumer's handle.
    pub recipient: C,
    /// The queue is auto-delete and this was its last consumer: RabbitMQ deletes it now.
    pub auto_delete_now: bool,
}

/// Settings fixed when a queue is declared.
#[derive(Debug, Clone, Default)]
pub struct QueueConfig {
    /// Delete the queue once it has had a consumer and the last one goes.
    pub auto_delete: bool,
}

/// Counts of a queue, as `queue.declare-ok` and the management listings report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Octets of the bodies of the ready messages.
    pub ready_bytes: u64,
    /// Messages delivered and not yet settled.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u32,
}

/// A queue: messages in order, consumers served in turn, credit checked per delivery.
///
/// `M` is the message (the broker's shared message handle), `C` the consumer's owner handle.
/// Nothing here knows channels or delivery tags: a delivery leaves the queue as an [`Entry`]
/// and comes back through [`Queue::settle`].
#[derive(Debug)]
pub struct Queue<M, C> {
    config: QueueConfig,
    /// Requeued messages, served first, in their original order. Every message that was ever
    /// handed out precedes every message still in `ready`, so the two never interleave.
    returned: BTreeMap<Offset, Entry<M>>,
    /// Messages never handed out, in order.
    ready: VecDeque<Entry<M>>,
    ready_bytes: u64,
    next_offset: Offset,
    consumers: Vec<Option<Consumer<C>>>,
    free_slots: Vec<u32>,
    consumer_count: u32,
    /// Consumers in the rotation, next first.
    rotation: VecDeque<ConsumerId>,
    /// Deliveries out (to consumers with acks, or `basic.get` without `no_ack`).
    unacked: u64,
    generation: u32,
    had_consumers: bool,
}

impl<M: Payload, C: Recipient> Queue<M, C> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            returned: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            next_offset: 0,
            consumers: Vec::new(),
            free_slots: Vec::new(),
            consumer_count: 0,
            rotation: VecDeque::new(),
            unacked: 0,
            generation: 0,
            had_consumers: false,
        }
    }

    /// The settings the queue was created with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Appends a message at the tail; returns its offset. Call [`Self::deliver`] afterwards
    /// (once per batch) to hand ready messages to consumers.
    pub fn publish(&mut self, message: M) -> Offset {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.ready_bytes += message.body_len() as u64;
        self.ready.push_back(Entry {
            offset,
            delivery_count: 0,
            message,
        });
        offset
    }

    /// Appends a message recovered after a restart: it may have been delivered before, so it
    /// is marked redelivered.
    pub fn publish_recovered(&mut self, message: M) -> Offset {
        let offset = self.publish(message);
        if let Some(e) = self.ready.back_mut() {
            e.delivery_count = 1;
        }
        offset
    }

    /// Messages ready for delivery (what `queue.declare-ok` and `basic.get-ok` report).
    pub fn message_count(&self) -> u64 {
        (self.ready.len() + self.returned.len()) as u64
    }

    /// Consumers subscribed.
    pub fn consumer_count(&self) -> u32 {
        self.consumer_count
    }

    /// Counts for reports.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            ready: self.message_count(),
            ready_bytes: self.ready_bytes,
            unacked: self.unacked,
            consumers: self.consumer_count,
        }
    }

    /// Whether no message is ready.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.returned.is_empty()
    }

    /// Subscribes a consumer. It joins the end of the rotation.
    pub fn add_consumer(&mut self, spec: ConsumerSpec<C>) -> Result<ConsumerId, ConsumeError> {
        if self.consumer_count > 0 && (spec.exclusive || self.consumers().any(|c| c.exclusive())) {
            return Err(ConsumeError::ExclusiveInUse);
        }
        self.generation = self.generation.wrapping_add(1);
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.consumers.push(None);
                (self.consumers.len() - 1) as u32
            }
        };
        let id = ConsumerId {
            slot,
            generation: self.generation,
        };
        if let Some(s) = self.consumers.get_mut(slot as usize) {
            *s = Some(Consumer {
                id,
                spec,
                unacked: 0,
                active: true,
            });
        }
        self.consumer_count += 1;
        self.had_consumers = true;
        self.rotation.push_back(id);
        Ok(id)
    }

    /// Removes a consumer (`basic.cancel`, its channel closing, its queue being deleted).
    /// Its unsettled deliveries stay with its channel, which settles them later.
    pub fn remove_consumer(&mut self, id: ConsumerId) -> Option<Removed<C>> {
        let consumer = self.consumers.get_mut(id.slot as usize)?;
        if consumer.as_ref().is_none_or(|c| c.id != id) {
            return None;
        }
        let consumer = consumer.take()?;
        self.free_slots.push(id.slot);
        self.consumer_count -= 1;
        if consumer.active {
            self.rotation.retain(|c| *c != id);
        }
        Some(Removed {
            recipient: consumer.spec.recipient,
            auto_delete_now: self.config.auto_delete
                && self.had_consumers
                && self.consumer_count == 0,
        })
    }

    /// A consumer by id.
    pub fn consumer(&self, id: ConsumerId) -> Option<&Consumer<C>> {
        self.consumers
            .get(id.slot as usize)?
            .as_ref()
            .filter(|c| c.id == id)
    }

    fn consumer_mut(&mut self, id: ConsumerId) -> Option<&mut Consumer<C>> {
        self.consumers
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|c| c.id == id)
    }

    /// Every consumer, in slot order.
    pub fn consumers(&self) -> impl Iterator<Item = &Consumer<C>> {
        self.consumers.iter().flatten()
    }

    /// Puts a consumer that was refused credit back into the rotation (its channel's credit
    /// or its connection's output room came back). Call [`Self::deliver`] afterwards.
    pub fn resume(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumer_mut(id) {
            if !c.active {
                c.active = true;
                self.rotation.push_back(id);
            }
        }
    }

    fn pop_next(&mut self) -> Option<Entry<M>> {
        let entry = match self.returned.pop_first() {
            Some((_, e)) => e,
            None => self.ready.pop_front()?,
        };
        self.ready_bytes -= entry.message.body_len() as u64;
        Some(entry)
    }

    /// Hands ready messages to consumers in turn until messages or credit run out, calling
    /// `out` for each delivery. Returns how many were delivered.
    ///
    /// Each delivery asks the consumer's own prefetch, then its [`Recipient`]; a consumer
    /// refused by either leaves the rotation (its own prefetch puts it back when a settlement
    /// frees credit; the recipient's refusal waits for [`Self::resume`]).
    pub fn deliver(&mut self, mut out: impl FnMut(&Consumer<C>, Entry<M>)) -> usize {
        let mut delivered = 0;
        while !self.is_empty() {
            let Some(id) = self.rotation.pop_front() else {
                break;
            };
            let Some(consumer) = self
                .consumers
                .get_mut(id.slot as usize)
                .and_then(Option::as_mut)
                .filter(|c| c.id == id)
            else {
                continue;
            };
            if !consumer.has_own_credit()
                || !consumer.spec.recipient.try_reserve(!consumer.spec.no_ack)
            {
                consumer.active = false;
                continue;
            }
            if !consumer.spec.no_ack {
                consumer.unacked += 1;
            }
            let no_ack = consumer.spec.no_ack;
            let Some(entry) = self.pop_next() else {
                break;
            };
            if !no_ack {
                self.unacked += 1;
            }
            self.rotation.push_back(id);
            if let Some(consumer) = self.consumer(id) {
                out(consumer, entry);
            }
            delivered += 1;
        }
        delivered
    }

    /// `basic.get`: the next ready message, if any, with the count left behind. With acks
    /// required, the delivery is unsettled until [`Self::settle`] (consumer `None`).
    pub fn get(&mut self, no_ack: bool) -> Option<(Entry<M>, u64)> {
        let entry = self.pop_next()?;
        if !no_ack {
            self.unacked += 1;
        }
        let left = self.message_count();
        Some((entry, left))
    }

    /// Takes back deliveries its channel settled: frees the consumers' credit, drops acked
    /// and discarded messages, and puts requeued ones back at their original position, marked
    /// redelivered. Call [`Self::deliver`] afterwards.
    pub fn settle(&mut self, settlements: impl IntoIterator<Item = Settlement<M>>) {
        for s in settlements {
            self.unacked = self.unacked.saturating_sub(1);
            if let Some(id) = s.consumer {
                self.release_credit(id);
            }
            match s.outcome {
                Outcome::Ack | Outcome::Discard => {}
                Outcome::Requeue => self.requeue(s.entry),
            }
        }
    }

    /// Takes back a delivery that never reached its consumer (the consumer or its channel went
    /// while it was on its way): it regains its position without being marked redelivered,
    /// and the consumer's credit is freed if it needed acks. Call [`Self::deliver`] afterwards.
    pub fn return_undelivered(
        &mut self,
        consumer: ConsumerId,
        entry: Entry<M>,
        ack_required: bool,
    ) {
        if ack_required {
            self.unacked = self.unacked.saturating_sub(1);
            self.release_credit(consumer);
        }
        self.ready_bytes += entry.message.body_len() as u64;
        self.returned.insert(entry.offset, entry);
    }

    /// One of the consumer's deliveries is settled: it may take another.
    fn release_credit(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumer_mut(id) {
            c.unacked = c.unacked.saturating_sub(1);
            if !c.active && c.has_own_credit() {
                c.active = true;
                self.rotation.push_back(id);
            }
        }
    }

    fn requeue(&mut self, mut entry: Entry<M>) {
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        self.ready_bytes += entry.message.body_len() as u64;
        self.returned.insert(entry.offset, entry);
    }

    /// `queue.purge`: drops every ready message (unsettled deliveries stay out); returns how
    /// many were dropped.
    pub fn purge(&mut self) -> u64 {
        self.purge_with(|_| {})
    }

    /// [`Self::purge`], handing each dropped message to `dropped` (oldest first).
    pub fn purge_with(&mut self, mut dropped: impl FnMut(Entry<M>)) -> u64 {
        let n = self.message_count();
        for (_, e) in std::mem::take(&mut self.returned) {
            dropped(e);
        }
        for e in self.ready.drain(..) {
            dropped(e);
        }
        self.ready_bytes = 0;
        n
    }

    /// Takes every consumer out, for a queue that is being deleted.
    pub fn drain_consumers(&mut self) -> Vec<(ConsumerId, C)> {
        self.rotation.clear();
        self.free_slots.clear();
        self.consumer_count = 0;
        self.consumers
            .drain(..)
            .flatten()
            .map(|c| (c.id, c.spec.recipient))
            .collect()
    }
}
