//! Virtual hosts: one routing topology each, and the queues it names.

use crate::durable::Durable;
use crate::message::Message;
use crate::outbox::{ConsumerLink, Outbox, Outgoing};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use warren_amqp_codec::{FieldTable, ShortStr};
use warren_queue::{Queue, QueueConfig, QueueStats};
use warren_routing::{QueueId, Topology};

/// Counters of one queue, as the handle reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Messages enqueued.
    pub published: u64,
    /// Messages handed to consumers or `basic.get`.
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries requeued.
    pub requeued: u64,
}

/// A queue's mutable state, behind its lock.
#[derive(Debug)]
pub(crate) struct QueueState {
    pub(crate) queue: Queue<Arc<Message>, ConsumerLink>,
    pub(crate) counters: QueueCounters,
    /// Deleted: nothing more goes in; late settlements are ignored.
    pub(crate) deleted: bool,
    /// Publishing connections paused until the backlog drains (see [`FLOW_HIGH`]).
    flow_waiters: Vec<Weak<Outbox>>,
    /// `counters.delivered` at the last congestion check.
    delivered_at_check: u64,
}

/// Ready messages past which a queue whose consumers are draining it pauses its publishers: a
/// publisher faster than the consumers would otherwise grow the backlog (and the latency)
/// without bound. They resume when it is down to [`FLOW_LOW`], or as soon as the consumers
/// stop making progress (a stuck consumer must not stall publishers: the backlog then grows
/// as in RabbitMQ, bounded by the memory alarm). Queues without consumers never pause
/// publishers.
pub(crate) const FLOW_HIGH: u64 = 8192;
/// See [`FLOW_HIGH`].
pub(crate) const FLOW_LOW: u64 = FLOW_HIGH / 2;

impl QueueState {
    /// Whether the backlog is still above the mark at which paused publishers resume.
    pub(crate) fn over_low_mark(&self) -> bool {
        self.queue.consumer_count() > 0 && self.queue.message_count() > FLOW_LOW
    }

    /// Registers a publisher to be woken when the backlog drains.
    pub(crate) fn add_flow_waiter(&mut self, publisher: &Arc<Outbox>) {
        self.flow_waiters.retain(|w| w.strong_count() > 0);
        if !self
            .flow_waiters
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(publisher)))
        {
            self.flow_waiters.push(Arc::downgrade(publisher));
        }
    }

    fn wake_flow_waiters(&mut self) {
        for w in self.flow_waiters.drain(..) {
            if let Some(o) = w.upgrade() {
                o.notify.notify_one();
            }
        }
    }

    /// Whether publishers should pause for this queue: a large backlog that consumers have
    /// been draining since the last check.
    pub(crate) fn congested(&mut self) -> bool {
        let progressing = self.counters.delivered != self.delivered_at_check;
        self.delivered_at_check = self.counters.delivered;
        progressing && self.queue.consumer_count() > 0 && self.queue.message_count() > FLOW_HIGH
    }
}

/// One queue: what was declared, and its state.
#[derive(Debug)]
pub(crate) struct QueueCell {
    pub(crate) name: ShortStr,
    pub(crate) vhost: String,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    /// The connection that declared it exclusive.
    pub(crate) exclusive_owner: Option<u64>,
    pub(crate) arguments: FieldTable,
    /// A durable queue's number in the message store, and the store.
    pub(crate) store: Option<(u64, Arc<Durable>)>,
    state: Mutex<QueueState>,
}

impl QueueCell {
    pub(crate) fn new(
        name: ShortStr,
        vhost: &str,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<u64>,
        arguments: FieldTable,
        store: Option<(u64, Arc<Durable>)>,
    ) -> Self {
        Self {
            name,
            vhost: vhost.to_string(),
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            store,
            state: Mutex::new(QueueState {
                queue: Queue::new(QueueConfig { auto_delete }),
                counters: QueueCounters::default(),
                deleted: false,
                flow_waiters: Vec::new(),
                delivered_at_check: 0,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands ready messages to consumers (the caller holds the lock).
    pub(crate) fn deliver(self: &Arc<Self>, state: &mut QueueState) {
        let n = state.queue.deliver(|consumer, entry| {
            let link = consumer.recipient();
            link.outbox.push(Outgoing::Deliver {
                channel: link.channel,
                consumer: consumer.id(),
                tag: link.tag.clone(),
                no_ack: consumer.no_ack(),
                queue: self.clone(),
                entry,
            });
        });
        state.counters.delivered += n as u64;
        if !state.flow_waiters.is_empty() && !state.over_low_mark() {
            state.wake_flow_waiters();
        }
    }

    /// The store reference a message leaving this queue for good drops: `(queue, message)`
    /// for a persistent message of a durable queue.
    pub(crate) fn stored_ref(&self, message: &Message) -> Option<(u64, u64)> {
        let id = message.stored_id();
        match &self.store {
            Some((q, _)) if id != 0 => Some((*q, id)),
            _ => None,
        }
    }

    /// Tells the store that these messages left this queue for good.
    pub(crate) fn forget<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) {
        if let Some((_, durable)) = &self.store {
            let acks: Vec<(u64, u64)> = messages
                .into_iter()
                .filter_map(|m| self.stored_ref(m))
                .collect();
            durable.ack(&acks);
        }
    }

    /// `queue.purge`: drops every ready message (the store forgets them too); returns how many.
    pub(crate) fn purge(&self, state: &mut QueueState) -> u64 {
        let mut dropped = Vec::new();
        let n = state.queue.purge_with(|e| {
            if self.store.is_some() {
                dropped.push(e.message);
            }
        });
        self.forget(dropped.iter().map(|m| &**m));
        n
    }

    pub(crate) fn stats(&self) -> (QueueStats, QueueCounters) {
        let s = self.lock();
        (s.queue.stats(), s.counters)
    }
}

/// A virtual host's routing and queues, behind one lock: publishes read it, declarations and
/// deletions write it.
#[derive(Debug)]
pub(crate) struct VhostState {
    pub(crate) topology: Topology,
    queues: Vec<Option<Arc<QueueCell>>>,
}

impl VhostState {
    pub(crate) fn queue(&self, id: QueueId) -> Option<&Arc<QueueCell>> {
        self.queues.get(id.0 as usize)?.as_ref()
    }

    pub(crate) fn queue_named(
        &self,
        name: &(impl AsRef<[u8]> + ?Sized),
    ) -> Option<&Arc<QueueCell>> {
        self.queue(self.topology.queue_id(name.as_ref())?)
    }

    /// Registers a new queue under its name.
    pub(crate) fn insert_queue(&mut self, cell: Arc<QueueCell>) {
        let id = self.topology.declare_queue(&cell.name).id;
        let i = id.0 as usize;
        if self.queues.len() <= i {
            self.queues.resize(i + 1, None);
        }
        if let Some(slot) = self.queues.get_mut(i) {
            *slot = Some(cell);
        }
    }

    /// Forgets a queue and its bindings, if `cell` is still the queue of that name; returns
    /// the exchanges that went with it (auto-delete ones left without bindings).
    pub(crate) fn remove_queue(&mut self, cell: &Arc<QueueCell>) -> Option<Vec<ShortStr>> {
        let id = self.topology.queue_id(cell.name.as_bytes())?;
        if !self.queue(id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            return None;
        }
        let removal = self.topology.delete_queue(id);
        if let Some(slot) = self.queues.get_mut(id.0 as usize) {
            *slot = None;
        }
        Some(removal.exchanges)
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = &Arc<QueueCell>> {
        self.queues.iter().flatten()
    }
}

/// A virtual host.
#[derive(Debug)]
pub(crate) struct Vhost {
    pub(crate) name: String,
    /// Where its durable definitions and messages go (`None`: nothing is kept).
    pub(crate) durable: Option<Arc<Durable>>,
    state: RwLock<VhostState>,
}

impl Vhost {
    pub(crate) fn new(name: &str, seed: u64, durable: Option<Arc<Durable>>) -> Self {
        Self {
            name: name.to_string(),
            durable,
            state: RwLock::new(VhostState {
                topology: Topology::new(name, seed),
                queues: Vec::new(),
            }),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, VhostState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, VhostState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records definition changes (call with the vhost's write lock held, so that the store
    /// sees them in the order the topology did). A failure is logged by the store and
    /// returned as RabbitMQ's 541 INTERNAL_ERROR.
    pub(crate) fn persist(
        &self,
        changes: &[warren_store::Change],
    ) -> Result<(), warren_amqp_codec::AmqpException> {
        match &self.durable {
            Some(d) => d.apply(changes).map_err(|why| {
                warren_amqp_codec::AmqpException::connection(
                    warren_amqp_codec::ReplyCode::InternalError,
                    format!("definitions could not be written: {why}"),
                )
            }),
            None => Ok(()),
        }
    }

    /// Deletes a queue: unregisters it, then empties it and cancels its consumers (each
    /// consumer's connection is told). Returns the number of ready messages it held, or `None`
    /// if it was already gone.
    pub(crate) fn delete_queue(&self, cell: &Arc<QueueCell>) -> Option<u64> {
        {
            let mut vstate = self.write();
            let exchanges = vstate.remove_queue(cell)?;
            let queue = cell.store.as_ref().map(|_| &cell.name);
            if let Some(d) = &self.durable {
                if queue.is_some() || !exchanges.is_empty() {
                    let _ = d.apply(&d.deleted(&self.name, &exchanges, queue));
                }
            }
        }
        let mut state = cell.lock();
        state.deleted = true;
        state.wake_flow_waiters();
        let n = cell.purge(&mut state);
        for (consumer, link) in state.queue.drain_consumers() {
            link.outbox.push(Outgoing::Cancelled {
                channel: link.channel,
                tag: link.tag,
                consumer,
                queue: cell.clone(),
            });
        }
        Some(n)
    }
}
