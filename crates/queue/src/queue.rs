//! One queue: its messages, its consumers, and who gets what next.

use crate::ready::Ready;
use std::collections::VecDeque;

/// The position a message took when it entered its queue. Offsets only grow, so they give the
/// queue's order: a message that is requeued goes back to the position its offset names.
pub type Offset = u64;

/// What a queue needs to know of a message.
pub trait Payload {
    /// The size of the body in octets (for byte counts and byte limits).
    fn body_len(&self) -> usize;
    /// Its priority (the `priority` property; 0 without one). A queue without priorities
    /// ignores it; one with `max_priority` treats anything above as that.
    fn priority(&self) -> u8 {
        0
    }
    /// Its own time to live in milliseconds (the `expiration` property), if any.
    fn ttl(&self) -> Option<u64> {
        None
    }
    /// Milliseconds it has already waited since it was first published, when it enters a
    /// queue again after a restart: its time to live counts from its first publication, not
    /// from now (0 for a new message).
    fn age(&self) -> u64 {
        0
    }
}

impl<T: Payload + ?Sized> Payload for std::sync::Arc<T> {
    fn body_len(&self) -> usize {
        (**self).body_len()
    }
    fn priority(&self) -> u8 {
        (**self).priority()
    }
    fn ttl(&self) -> Option<u64> {
        (**self).ttl()
    }
    fn age(&self) -> u64 {
        (**self).age()
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
    /// When it expires (the queue's clock, in milliseconds), if it has a time to live.
    pub expires_at: Option<u64>,
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
    /// `x-priority`: consumers of a higher priority get messages first, while they have
    /// credit; equal ones take turns.
    pub priority: i32,
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
    /// Waiting for its turn on a single-active-consumer queue.
    standby: bool,
    /// When it subscribed, in the queue's order.
    registered: u64,
}

/// Consumers in the rotation: by priority, the highest first, taking turns within one.
#[derive(Debug, Default)]
struct Rotation(std::collections::BTreeMap<std::cmp::Reverse<i32>, VecDeque<ConsumerId>>);

impl Rotation {
    fn push_back(&mut self, id: ConsumerId, priority: i32) {
        self.0
            .entry(std::cmp::Reverse(priority))
            .or_default()
            .push_back(id);
    }

    fn pop_front(&mut self) -> Option<ConsumerId> {
        let mut lane = self.0.first_entry()?;
        let id = lane.get_mut().pop_front();
        if lane.get().is_empty() {
            lane.remove();
        }
        id
    }

    fn remove(&mut self, id: ConsumerId) {
        self.0.retain(|_, lane| {
            lane.retain(|c| *c != id);
            !lane.is_empty()
        });
    }

    fn clear(&mut self) {
        self.0.clear();
    }
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
    /// Its priority (`x-priority`).
    pub fn priority(&self) -> i32 {
        self.spec.priority
    }
    /// Whether it gets messages on a single-active-consumer queue (always true elsewhere).
    pub fn is_single_active(&self) -> bool {
        !self.standby
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

/// A queue's settings: fixed when it is declared, but for the limits a policy may change
/// ([`Queue::set_limits`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// Delete the queue once it has had a consumer and the last one goes.
    pub auto_delete: bool,
    /// The rules its arguments (and policies) set.
    pub limits: Limits,
    /// `x-single-active-consumer`: one consumer at a time gets messages; when it goes, the
    /// one of the highest priority, then the earliest subscribed, takes over.
    pub single_active_consumer: bool,
}

/// What a queue does when a publish would take it past a length limit (`x-overflow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (dead-letter) the oldest messages to make room (`drop-head`, the default).
    #[default]
    DropHead,
    /// Refuse the new message; a confirming publisher gets a nack (`reject-publish`).
    RejectPublish,
    /// As `reject-publish`, and dead-letter the refused message (`reject-publish-dlx`).
    RejectPublishDlx,
}

/// The rules a queue's arguments set: time to live, length limits, priorities, delivery
/// limit. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `x-message-ttl`: milliseconds a message may wait in the queue.
    pub message_ttl: Option<u64>,
    /// `x-max-length`: ready messages at most.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: octets of ready message bodies at most.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-max-priority`: priorities 0 to this (none: one level).
    pub max_priority: Option<u8>,
    /// `x-delivery-limit`: a message returned more often than this is dead-lettered.
    pub delivery_limit: Option<u32>,
}

impl Limits {
    /// Whether a publish may be refused (a length limit with `reject-publish(-dlx)`): its
    /// confirm must wait for the enqueue.
    pub fn may_refuse(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }

    /// Whether a rule depends on every ready message being in the queue (priorities, length
    /// limits, a message TTL): such a queue's backlog cannot page out.
    pub fn needs_all_messages(&self) -> bool {
        self.max_priority.is_some()
            || self.message_ttl.is_some()
            || self.max_length.is_some()
            || self.max_length_bytes.is_some()
    }
}

/// Why a message left its queue other than by an ack: the `reason` of RabbitMQ's `x-death`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeathReason {
    /// `basic.reject` or `basic.nack` without requeue.
    Rejected,
    /// Its time to live ran out.
    Expired,
    /// Dropped or refused by a length limit.
    MaxLen,
    /// Returned more often than the delivery limit allows.
    DeliveryLimit,
}

impl DeathReason {
    /// The reason as `x-death` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message that left its queue for good other than by an ack: the caller dead-letters it
/// if the queue has a dead-letter exchange, or drops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead<M> {
    /// The message as it was in the queue.
    pub entry: Entry<M>,
    /// Why.
    pub reason: DeathReason,
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed<M> {
    /// In the queue, at this offset (older messages may have been dropped to make room: see
    /// [`Queue::take_dead`]).
    Queued(Offset),
    /// Refused by a length limit (`reject-publish`, `reject-publish-dlx`): a confirming
    /// publisher gets a nack. With `dead_letter`, the caller dead-letters it (reason
    /// [`DeathReason::MaxLen`]).
    Rejected {
        /// The message.
        message: M,
        /// Whether to dead-letter it.
        dead_letter: bool,
    },
}

impl<M> Pushed<M> {
    /// The offset, if it was queued.
    pub fn offset(&self) -> Option<Offset> {
        match self {
            Pushed::Queued(o) => Some(*o),
            Pushed::Rejected { .. } => None,
        }
    }
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
    /// Ready messages: by priority, requeued ones first in their original positions.
    ready: Ready<M>,
    /// Messages that left for good other than by an ack, for the caller.
    dead: Vec<Dead<M>>,
    /// The clock, as last given to [`Self::advance`] (milliseconds).
    now: u64,
    next_offset: Offset,
    consumers: Vec<Option<Consumer<C>>>,
    free_slots: Vec<u32>,
    consumer_count: u32,
    /// Consumers in the rotation, by priority.
    rotation: Rotation,
    /// Subscriptions so far (their order).
    registrations: u64,
    /// Deliveries out (to consumers with acks, or `basic.get` without `no_ack`).
    unacked: u64,
    generation: u32,
    had_consumers: bool,
}

impl<M: Payload, C: Recipient> Queue<M, C> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let levels = config.limits.max_priority.unwrap_or(0);
        Self {
            config,
            ready: Ready::new(levels),
            dead: Vec::new(),
            now: 0,
            next_offset: 0,
            consumers: Vec::new(),
            free_slots: Vec::new(),
            consumer_count: 0,
            rotation: Rotation::default(),
            registrations: 0,
            unacked: 0,
            generation: 0,
            had_consumers: false,
        }
    }

    /// Its settings (as declared, with the limits a policy set last).
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Appends a message at the tail of its priority, stamped with its expiry (the lower of
    /// the queue's and its own time to live, from the clock). Past a length limit, the oldest
    /// messages are dropped (they go to [`Self::take_dead`]) or the new one is refused, as
    /// `x-overflow` says. Call [`Self::deliver`] afterwards (once per batch).
    pub fn publish(&mut self, message: M) -> Pushed<M> {
        self.push(message, 0)
    }

    /// Appends a message recovered after a restart: it may have been delivered before, so it
    /// is marked redelivered. It was accepted before, so no length limit refuses or drops it
    /// (the next publish trims a queue past its limit with `drop-head`); its time to live
    /// counts from its [`Payload::age`].
    pub fn publish_recovered(&mut self, message: M) -> Pushed<M> {
        self.push(message, 1)
    }

    /// Whether the ready messages plus one of `extra` octets (`None`: no new message) would
    /// be past a length limit.
    fn over_limit(&self, extra: Option<u64>) -> bool {
        let l = &self.config.limits;
        let (count, bytes) = (self.ready.count(), self.ready.bytes());
        match extra {
            Some(len) => {
                l.max_length.is_some_and(|m| count >= m)
                    || l.max_length_bytes.is_some_and(|m| bytes + len > m)
            }
            None => {
                l.max_length.is_some_and(|m| count > m)
                    || l.max_length_bytes.is_some_and(|m| bytes > m)
            }
        }
    }

    /// Drops (dead-letters) the oldest ready messages while the queue is past a length limit
    /// (with room for one of `extra` octets).
    fn drop_heads(&mut self, extra: Option<u64>) {
        while !self.ready.is_empty() && self.over_limit(extra) {
            if let Some((entry, _)) = self.ready.pop(|m| m.body_len() as u64) {
                self.dead.push(Dead {
                    entry,
                    reason: DeathReason::MaxLen,
                });
            }
        }
    }

    /// Replaces the rules (a policy changed): later publishes follow the new ones, and a
    /// queue past a new length limit with `drop-head` drops its oldest messages at once (to
    /// [`Self::take_dead`], reason `maxlen`), as RabbitMQ does. Messages already queued keep
    /// the expiry they were given; the priority levels stay those the queue was declared with.
    pub fn set_limits(&mut self, limits: Limits) {
        self.config.limits = Limits {
            max_priority: self.config.limits.max_priority,
            ..limits
        };
        if self.config.limits.overflow == Overflow::DropHead {
            self.drop_heads(None);
        }
    }

    fn push(&mut self, message: M, delivery_count: u32) -> Pushed<M> {
        let len = message.body_len() as u64;
        let recovered = delivery_count > 0;
        if !recovered && self.over_limit(Some(len)) {
            match self.config.limits.overflow {
                Overflow::RejectPublish | Overflow::RejectPublishDlx => {
                    return Pushed::Rejected {
                        message,
                        dead_letter: self.config.limits.overflow == Overflow::RejectPublishDlx,
                    };
                }
                // Make room: the oldest go, until the new one fits (a message larger than the
                // byte limit empties the queue and then is dropped itself).
                Overflow::DropHead => self.drop_heads(Some(len)),
            }
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        let ttl = crate::policy::lower(self.config.limits.message_ttl, message.ttl());
        // A message recovered after a restart has spent part of its time already.
        let age = message.age();
        let entry = Entry {
            offset,
            delivery_count,
            expires_at: ttl.map(|t| self.now.saturating_add(t).saturating_sub(age)),
            message,
        };
        if !recovered && self.over_limit(Some(len)) {
            // Still too big for the queue on its own (x-max-length 0, or a body above the
            // byte limit): it goes at once.
            self.dead.push(Dead {
                entry,
                reason: DeathReason::MaxLen,
            });
            return Pushed::Queued(offset);
        }
        let priority = self.priority(&entry.message);
        self.ready.push(entry, priority, len);
        Pushed::Queued(offset)
    }

    fn priority(&self, m: &M) -> u8 {
        match self.config.limits.max_priority {
            Some(max) => m.priority().min(max),
            None => 0,
        }
    }

    /// Moves the queue's clock to `now` (milliseconds, any origin, never backwards): every
    /// ready message whose time to live ran out goes to [`Self::take_dead`], wherever it is
    /// in the queue. Delivery never hands out an expired message either.
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        let expired = self.ready.expire(self.now, |m| m.body_len() as u64);
        self.dead.extend(expired.into_iter().map(|entry| Dead {
            entry,
            reason: DeathReason::Expired,
        }));
    }

    /// When the next ready message expires (to set a timer for [`Self::advance`]).
    pub fn next_expiry(&self) -> Option<u64> {
        self.ready.next_expiry()
    }

    /// The messages that left for good other than by an ack since the last call, in the
    /// order they left: dropped by a length limit, expired, rejected without requeue, past
    /// the delivery limit.
    pub fn take_dead(&mut self) -> Vec<Dead<M>> {
        std::mem::take(&mut self.dead)
    }

    /// Whether messages left for good are waiting for [`Self::take_dead`].
    pub fn has_dead(&self) -> bool {
        !self.dead.is_empty()
    }

    /// Messages ready for delivery (what `queue.declare-ok` and `basic.get-ok` report).
    pub fn message_count(&self) -> u64 {
        self.ready.count()
    }

    /// Consumers subscribed.
    pub fn consumer_count(&self) -> u32 {
        self.consumer_count
    }

    /// Counts for reports.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            ready: self.message_count(),
            ready_bytes: self.ready.bytes(),
            unacked: self.unacked,
            consumers: self.consumer_count,
        }
    }

    /// Whether no message is ready.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Subscribes a consumer. It joins the end of the rotation.
    pub fn add_consumer(&mut self, spec: ConsumerSpec<C>) -> Result<ConsumerId, ConsumeError> {
        if self.consumer_count > 0 && (spec.exclusive || self.consumers().any(|c| c.exclusive())) {
            return Err(ConsumeError::ExclusiveInUse);
        }
        // RabbitMQ refuses an exclusive consumer on a single-active-consumer queue, always.
        if self.config.single_active_consumer && spec.exclusive {
            return Err(ConsumeError::ExclusiveInUse);
        }
        let standby = self.config.single_active_consumer && self.consumer_count > 0;
        let priority = spec.priority;
        self.registrations += 1;
        let registered = self.registrations;
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
                active: !standby,
                standby,
                registered,
            });
        }
        self.consumer_count += 1;
        self.had_consumers = true;
        if !standby {
            self.rotation.push_back(id, priority);
        }
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
            self.rotation.remove(id);
        }
        if self.config.single_active_consumer && !consumer.standby {
            // The next takes over: the highest priority, then the earliest subscribed.
            let next = self
                .consumers
                .iter()
                .flatten()
                .filter(|c| c.standby)
                .max_by_key(|c| (c.spec.priority, std::cmp::Reverse(c.registered)))
                .map(|c| c.id);
            if let Some(next) = next {
                if let Some(c) = self.consumer_mut(next) {
                    c.standby = false;
                    c.active = true;
                    let p = c.spec.priority;
                    self.rotation.push_back(next, p);
                }
            }
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
            if !c.active && !c.standby {
                c.active = true;
                let p = c.spec.priority;
                self.rotation.push_back(id, p);
            }
        }
    }

    /// The next message to hand out; expired ones met on the way go to the dead.
    fn pop_next(&mut self) -> Option<Entry<M>> {
        loop {
            let (entry, _) = self.ready.pop(|m| m.body_len() as u64)?;
            if entry.expires_at.is_some_and(|at| at < self.now) {
                self.dead.push(Dead {
                    entry,
                    reason: DeathReason::Expired,
                });
                continue;
            }
            return Some(entry);
        }
    }

    /// Hands ready messages to consumers in turn until messages or credit run out, calling
    /// `out` for each delivery. Returns how many were delivered.
    ///
    /// Each delivery asks the consumer's own prefetch, then its [`Recipient`]; a consumer
    /// refused by either leaves the rotation (its own prefetch puts it back when a settlement
    /// frees credit; the recipient's refusal waits for [`Self::resume`]).
    pub fn deliver(&mut self, mut out: impl FnMut(&Consumer<C>, Entry<M>)) -> usize {
        // Expired messages go first, so that credit is only taken for a message to hand out.
        self.advance(self.now);
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
            let priority = self.consumer(id).map_or(0, |c| c.spec.priority);
            self.rotation.push_back(id, priority);
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
                Outcome::Ack => {}
                Outcome::Discard => self.dead.push(Dead {
                    entry: s.entry,
                    reason: DeathReason::Rejected,
                }),
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
        let priority = self.priority(&entry.message);
        let len = entry.message.body_len() as u64;
        self.ready.put_back(entry, priority, len);
    }

    /// One of the consumer's deliveries is settled: it may take another.
    fn release_credit(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumer_mut(id) {
            c.unacked = c.unacked.saturating_sub(1);
            if !c.active && !c.standby && c.has_own_credit() {
                c.active = true;
                let p = c.spec.priority;
                self.rotation.push_back(id, p);
            }
        }
    }

    fn requeue(&mut self, mut entry: Entry<M>) {
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        if self
            .config
            .limits
            .delivery_limit
            .is_some_and(|limit| entry.delivery_count > limit)
        {
            self.dead.push(Dead {
                entry,
                reason: DeathReason::DeliveryLimit,
            });
            return;
        }
        let priority = self.priority(&entry.message);
        let len = entry.message.body_len() as u64;
        self.ready.put_back(entry, priority, len);
    }

    /// `queue.purge`: drops every ready message (unsettled deliveries stay out); returns how
    /// many were dropped.
    pub fn purge(&mut self) -> u64 {
        self.purge_with(|_| {})
    }

    /// [`Self::purge`], handing each dropped message to `dropped` (oldest first).
    pub fn purge_with(&mut self, dropped: impl FnMut(Entry<M>)) -> u64 {
        let n = self.message_count();
        self.ready.drain(dropped);
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
