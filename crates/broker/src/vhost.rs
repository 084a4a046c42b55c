//! Virtual hosts: one routing topology each, and the queues it names.

use crate::deadletter::{DeadLetter, Inbox};
use crate::durable::Durable;
use crate::message::Message;
use crate::outbox::{ConsumerLink, Outbox, Outgoing, Waiters};
use crate::paging::{self, Spill, Spilled};
use crate::policy::{Applied, Policies, Policy};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use warren_amqp_codec::{FieldTable, ShortStr};
use warren_queue::DeathReason;
use warren_queue::declare::QueueSettings;
use warren_queue::policy::{PolicyKind, QueueType, Target};
use warren_queue::{Pushed, Queue, QueueStats};
use warren_routing::{QueueId, Topology};
use warren_store::MessageRef;

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
    flow_waiters: Waiters,
    /// `counters.delivered` at the last congestion check.
    delivered_at_check: u64,
    /// The messages past the head that live only on disk (paging).
    pub(crate) spill: Spill,
    /// Its dead-letter exchange and routing key (arguments and policy).
    pub(crate) dead_letter: Option<(ShortStr, Option<ShortStr>)>,
    /// Whether its backlog may page out: not with priorities, a length limit or a message
    /// TTL, whose rules need every ready message in the queue (a limit bounds such a backlog
    /// anyway).
    pages: bool,
    /// The policies that apply to it.
    pub(crate) applied: Applied,
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
    /// Messages ready: in memory and paged out.
    pub(crate) fn message_count(&self) -> u64 {
        self.queue.message_count() + self.spill.count()
    }

    /// Whether the backlog is still above the mark at which paused publishers resume.
    pub(crate) fn over_low_mark(&self) -> bool {
        self.queue.consumer_count() > 0 && self.message_count() > FLOW_LOW
    }

    /// Registers a publisher to be woken when the backlog drains.
    pub(crate) fn add_flow_waiter(&mut self, publisher: &Arc<Outbox>) {
        self.flow_waiters.add(publisher);
    }

    fn wake_flow_waiters(&mut self) {
        self.flow_waiters.wake_all();
    }

    /// Whether a publisher paused for this queue may resume: it is gone, or down to its low
    /// mark, or (`recheck`: checked now and then) its consumers stopped making progress (a
    /// stuck consumer must not stall publishers).
    pub(crate) fn releases(&mut self, recheck: bool) -> bool {
        self.deleted || !self.over_low_mark() || (recheck && !self.congested())
    }

    /// Whether publishers should pause for this queue: a large backlog that consumers have
    /// been draining since the last check.
    pub(crate) fn congested(&mut self) -> bool {
        let progressing = self.counters.delivered != self.delivered_at_check;
        self.delivered_at_check = self.counters.delivered;
        progressing && self.queue.consumer_count() > 0 && self.message_count() > FLOW_HIGH
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
    /// The store its backlog pages out to, if the broker has one.
    paging: Option<Arc<Durable>>,
    /// Its reference in the store for paged-out messages that recovery must drop.
    transient_ref: u64,
    /// Paging out: new messages go to the spill (read without the lock when a publish is
    /// staged; set and cleared under it).
    pub(crate) spilling: AtomicBool,
    /// When its next ready message expires (`u64::MAX`: none), for the broker's sweeper.
    pub(crate) next_expiry: AtomicU64,
    /// A length limit with `reject-publish(-dlx)`: publishes to it may be refused.
    pub(crate) may_refuse: AtomicBool,
    /// `x-expires` (or a policy's `expires`): milliseconds unused after which the queue is
    /// deleted (`u64::MAX`: never).
    pub(crate) expires: AtomicU64,
    /// When it was last used (declared, consumed from, `basic.get`, a consumer cancelled),
    /// on the broker's clock.
    pub(crate) last_used: AtomicU64,
    dead_letters: Arc<Inbox>,
    state: Mutex<QueueState>,
}

impl QueueCell {
    /// A queue as declared (`decl`; `exclusive_owner`: the connection holding it exclusively),
    /// in virtual host `vhost` (whose policies apply to it), with the store its messages go
    /// to (and its number there, if durable).
    pub(crate) fn new(
        name: ShortStr,
        vhost: &Vhost,
        decl: warren_queue::declare::QueueDecl,
        exclusive_owner: Option<u64>,
        disk: Option<(Arc<Durable>, Option<u64>)>,
    ) -> Self {
        let applied = vhost
            .policies()
            .applied(name.as_bytes(), queue_target(&decl));
        let QueueSettings {
            config,
            dead_letter,
            expires,
        } = warren_queue::declare::settings(&decl, applied.definition.as_ref());
        let warren_queue::declare::QueueDecl {
            durable,
            auto_delete,
            arguments,
            ..
        } = decl;
        let store = disk
            .as_ref()
            .and_then(|(d, id)| id.map(|id| (id, d.clone())));
        let transient_ref = disk.as_ref().map_or(0, |(d, _)| d.new_transient_ref());
        Self {
            paging: disk.map(|(d, _)| d),
            transient_ref,
            spilling: AtomicBool::new(false),
            next_expiry: AtomicU64::new(u64::MAX),
            dead_letters: vhost.dead_letters.clone(),
            expires: AtomicU64::new(expires.unwrap_or(u64::MAX)),
            last_used: AtomicU64::new(crate::now_ms()),
            may_refuse: AtomicBool::new(config.limits.may_refuse()),
            name,
            vhost: vhost.name.clone(),
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            store,
            state: Mutex::new(QueueState {
                pages: !config.limits.needs_all_messages(),
                queue: Queue::new(config),
                counters: QueueCounters::default(),
                deleted: false,
                flow_waiters: Waiters::default(),
                delivered_at_check: 0,
                spill: Spill::default(),
                dead_letter,
                applied,
            }),
        }
    }

    /// Applies what the policies of its virtual host now say: new limits (a lower length
    /// limit drops the oldest at once, dead-lettered), dead-letter target and expiry. A queue
    /// that may no longer page reads its paged-out messages back in.
    pub(crate) fn apply_policies(self: &Arc<Self>, policies: &Policies) {
        let decl = self.decl();
        let applied = policies.applied(self.name.as_bytes(), queue_target(&decl));
        let mut s = self.lock();
        if s.deleted || s.applied == applied {
            return;
        }
        let settings = warren_queue::declare::settings(&decl, applied.definition.as_ref());
        tracing::debug!(queue = %self.name, vhost = %self.vhost, policy = ?applied.policy, operator_policy = ?applied.operator_policy, "policies applied");
        s.applied = applied;
        let limits = settings.config.limits;
        self.may_refuse
            .store(limits.may_refuse(), Ordering::Release);
        let expires = settings.expires.unwrap_or(u64::MAX);
        if self.expires.swap(expires, Ordering::AcqRel) != expires {
            // As RabbitMQ: a new expiry counts from when it applies.
            self.touch();
        }
        s.dead_letter = settings.dead_letter;
        s.pages = !limits.needs_all_messages();
        if !s.pages {
            // Read back under the old rules (a queue that paged had no TTL or length
            // limit): the new ones reach only what is published from now on, but for the
            // heads a lower limit drops.
            self.page_in_all(&mut s);
        }
        s.queue.advance(crate::now_ms());
        s.queue.set_limits(limits);
        self.deliver(&mut s);
    }

    /// The queue as declared.
    pub(crate) fn decl(&self) -> warren_queue::declare::QueueDecl {
        warren_queue::declare::QueueDecl {
            durable: self.durable,
            exclusive: self.exclusive_owner.is_some(),
            auto_delete: self.auto_delete,
            arguments: self.arguments.clone(),
        }
    }

    /// The inbox its dead letters go to.
    pub(crate) fn dead_letters(&self) -> &Inbox {
        &self.dead_letters
    }

    /// Whether its backlog may page out.
    pub(crate) fn pages(&self, state: &QueueState) -> bool {
        state.pages
    }

    /// Reads every paged-out message back into memory (for a queue whose rules need them
    /// all there).
    pub(crate) fn page_in_all(self: &Arc<Self>, state: &mut QueueState) {
        state.queue.advance(crate::now_ms());
        while !state.spill.is_empty() {
            let before = state.spill.count();
            self.refill_batch(state);
            if state.spill.count() == before {
                break; // unreadable: left where it is (logged)
            }
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A message the queue refused (a length limit): the store forgets it for this queue.
    pub(crate) fn refused(self: &Arc<Self>, state: &QueueState, pushed: Pushed<Arc<Message>>) {
        if let Pushed::Rejected {
            message,
            dead_letter,
        } = pushed
        {
            // Its publisher gets a nack (if confirming).
            message.set_refused();
            if let (true, Some(target)) = (dead_letter, &state.dead_letter) {
                self.dead_letter(target, [(message, DeathReason::MaxLen)]);
            } else {
                self.forget([&*message]);
            }
        }
    }

    /// The queue is used now (what restarts its `x-expires` clock, as in RabbitMQ:
    /// declarations, `basic.get`, consumers coming and going; not publishes).
    pub(crate) fn touch(&self) {
        self.last_used.store(crate::now_ms(), Ordering::Release);
    }

    /// Whether `x-expires` has run out: no consumers, unused for that long.
    pub(crate) fn unused_for_too_long(&self, state: &QueueState, now: u64) -> bool {
        let e = self.expires.load(Ordering::Acquire);
        e != u64::MAX
            && state.queue.consumer_count() == 0
            && now.saturating_sub(self.last_used.load(Ordering::Acquire)) > e
    }

    /// Messages that left the queue for good other than by an ack (rejected, expired, over a
    /// limit, past the delivery limit): dead-lettered if the queue has a dead-letter exchange
    /// (the worker routes them once this lock is released), else the store forgets them.
    pub(crate) fn bury(self: &Arc<Self>, state: &mut QueueState) {
        if state.queue.has_dead() {
            let dead = state.queue.take_dead();
            if let Some(target) = &state.dead_letter {
                self.dead_letter(
                    target,
                    dead.into_iter().map(|d| (d.entry.message, d.reason)),
                );
            } else {
                self.forget(dead.iter().map(|d| &*d.entry.message));
            }
        }
    }

    fn dead_letter(
        self: &Arc<Self>,
        target: &(ShortStr, Option<ShortStr>),
        dead: impl IntoIterator<Item = (Arc<Message>, DeathReason)>,
    ) {
        self.dead_letters
            .push(dead.into_iter().map(|(message, reason)| DeadLetter {
                queue: self.clone(),
                target: target.clone(),
                stored: self.stored_ref(&message),
                message,
                reason,
            }));
    }

    /// Hands ready messages to consumers (the caller holds the lock).
    pub(crate) fn deliver(self: &Arc<Self>, state: &mut QueueState) {
        state.queue.advance(crate::now_ms());
        self.refill(state);
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
        // Expired, rejected, over a limit: gone for good.
        self.bury(state);
        self.next_expiry.store(
            state.queue.next_expiry().unwrap_or(u64::MAX),
            Ordering::Release,
        );
        if !state.flow_waiters.is_empty() && !state.over_low_mark() {
            state.wake_flow_waiters();
        }
    }

    /// The reference under which this queue holds a message in the store: its number for a
    /// persistent message of a durable queue, its transient reference for one paged out.
    pub(crate) fn ref_for(&self, persistent: bool) -> u64 {
        match &self.store {
            Some((q, _)) if persistent => *q,
            _ => self.transient_ref,
        }
    }

    /// The store reference a message leaving this queue for good drops: `(queue, message)`
    /// for a persistent message of a durable queue, or a message read back from the spill.
    pub(crate) fn stored_ref(&self, message: &Message) -> Option<(u64, MessageRef)> {
        let at = message.stored()?;
        let read_for = message.read_for();
        if read_for != 0 {
            return (read_for == self.ref_for(message.persistent)).then_some((read_for, at));
        }
        match &self.store {
            Some((q, _)) if message.persistent => Some((*q, at)),
            _ => None,
        }
    }

    /// Removes the spill file of a queue that is gone.
    pub(crate) fn discard_spill(&self, state: &mut QueueState) {
        if let Some(d) = &self.paging {
            state
                .spill
                .remove(d.backend(), &paging::spill_name(self.transient_ref));
        }
    }

    /// Drops this queue's transient reference to a message written to be paged out that
    /// stayed in memory after all.
    pub(crate) fn drop_transient_ref(&self, m: &Message) {
        if let (Some(d), Some(at)) = (&self.paging, m.stored()) {
            d.ack(&[(self.transient_ref, at)]);
        }
    }

    /// Whether a message entering this queue pages out: the queue is paging already, or it
    /// holds a head in memory and either the broker is over its paging budget or the message
    /// is on disk anyway (persistent, in a durable queue: keeping a backlog of those in memory
    /// would only duplicate the disk).
    pub(crate) fn should_page(&self, state: &QueueState, over_budget: bool, m: &Message) -> bool {
        let on_disk = m.persistent && self.store.is_some() && m.stored().is_some();
        // While anything is paged out, new messages follow it (whatever the rules say now:
        // order first).
        self.paging.is_some()
            && (!state.spill.is_empty()
                || (state.pages
                    && (over_budget || on_disk)
                    && state.queue.message_count() >= paging::HEAD_MIN))
    }

    /// Pages a message out: its id goes to the spill (written to the store first if it is not
    /// there for this queue yet). Returns false if it could not be (the store failed): it
    /// then stays in memory.
    pub(crate) fn page_out(&self, state: &mut QueueState, m: &Message, has_ref: bool) -> bool {
        let Some(d) = &self.paging else {
            return false;
        };
        let queue_ref = self.ref_for(m.persistent);
        let at = match m.stored() {
            Some(at) if has_ref => at,
            _ => match d.write_one(self.transient_ref, m) {
                Some(at) => {
                    return self.push_spill(state, d, at, m, true);
                }
                None => return false,
            },
        };
        self.push_spill(state, d, at, m, queue_ref == self.transient_ref)
    }

    fn push_spill(
        &self,
        state: &mut QueueState,
        d: &Arc<Durable>,
        at: MessageRef,
        m: &Message,
        transient: bool,
    ) -> bool {
        let entry = Spilled {
            at,
            len: m.body.len() as u32,
            redelivered: false,
            transient,
        };
        self.spill_entry(state, d, entry)
    }

    /// Adds an entry to the spill (recovery uses it too).
    pub(crate) fn spill_entry(&self, state: &mut QueueState, d: &Arc<Durable>, e: Spilled) -> bool {
        let name = paging::spill_name(self.transient_ref);
        match state.spill.push(d.backend(), &name, e) {
            Ok(()) => {
                self.spilling.store(true, Ordering::Release);
                true
            }
            Err(err) => {
                tracing::error!(queue = %self.name, error = %err, "the queue's spill file cannot be written");
                false
            }
        }
    }

    /// Reads the next batch of paged-out messages back into memory when the head runs low.
    pub(crate) fn refill(self: &Arc<Self>, state: &mut QueueState) {
        if state.spill.is_empty() || state.queue.message_count() >= paging::REFILL_LOW {
            return;
        }
        self.refill_batch(state);
    }

    fn refill_batch(self: &Arc<Self>, state: &mut QueueState) {
        let Some(d) = &self.paging else {
            return;
        };
        let batch = match state.spill.pop(paging::REFILL_BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(queue = %self.name, error = %e, "the queue's spill file cannot be read");
                return;
            }
        };
        let gauge = d.gauge();
        for e in batch {
            let queue_ref = if e.transient {
                self.transient_ref
            } else {
                self.ref_for(true)
            };
            // On a read error (logged) the reference stays: after a restart the message is
            // recovered if the disk lets it be read; a read error never drops a message.
            if let Some(m) = d.read_message(&e.at, &gauge) {
                m.set_read_for(queue_ref);
                let pushed = if e.redelivered {
                    state.queue.publish_recovered(m)
                } else {
                    state.queue.publish(m)
                };
                self.refused(state, pushed);
            }
        }
        if state.spill.is_empty() {
            self.spilling.store(false, Ordering::Release);
        }
    }

    /// Tells the store that these messages left this queue for good.
    pub(crate) fn forget<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) {
        if self.paging.is_some() {
            let acks: Vec<(u64, MessageRef)> = messages
                .into_iter()
                .filter_map(|m| self.stored_ref(m))
                .collect();
            self.drop_refs(&acks);
        }
    }

    /// Drops store references `(queue reference, message id)` of this queue's messages.
    pub(crate) fn drop_refs(&self, refs: &[(u64, MessageRef)]) {
        if let (false, Some(d)) = (refs.is_empty(), &self.paging) {
            d.ack(refs);
        }
    }

    /// `queue.purge`: drops every ready message, paged out or not (the store forgets them
    /// too); returns how many.
    pub(crate) fn purge(&self, state: &mut QueueState) -> u64 {
        let mut dropped = Vec::new();
        let mut n = state.queue.purge_with(|e| {
            if self.paging.is_some() {
                dropped.push(e.message);
            }
        });
        self.forget(dropped.iter().map(|m| &**m));
        if let Some(d) = &self.paging {
            match state.spill.drain() {
                Ok(spilled) => {
                    n += spilled.len() as u64;
                    let acks: Vec<(u64, MessageRef)> = spilled
                        .iter()
                        .map(|e| {
                            let r = if e.transient {
                                self.transient_ref
                            } else {
                                self.ref_for(true)
                            };
                            (r, e.at)
                        })
                        .collect();
                    d.ack(&acks);
                }
                Err(e) => {
                    tracing::error!(queue = %self.name, error = %e, "the queue's spill file cannot be read")
                }
            }
            self.spilling.store(false, Ordering::Release);
        }
        n
    }

    pub(crate) fn stats(&self) -> (QueueStats, QueueCounters) {
        let s = self.lock();
        let mut stats = s.queue.stats();
        stats.ready += s.spill.count();
        stats.ready_bytes += s.spill.bytes();
        (stats, s.counters)
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
    /// Where its queues leave their dead letters.
    pub(crate) dead_letters: Arc<Inbox>,
    state: RwLock<VhostState>,
    /// Its policies and operator policies (taken after `state`, never before).
    policies: RwLock<Policies>,
    /// Held while a policy change is applied, so that changes apply in order.
    policy_change: Mutex<()>,
}

/// What a queue is, for a policy's `apply-to`.
fn queue_target(decl: &warren_queue::declare::QueueDecl) -> Target {
    Target::Queue(QueueType::of(&decl.arguments))
}

impl Vhost {
    pub(crate) fn new(
        name: &str,
        seed: u64,
        durable: Option<Arc<Durable>>,
        dead_letters: Arc<Inbox>,
    ) -> Self {
        Self {
            name: name.to_string(),
            durable,
            dead_letters,
            state: RwLock::new(VhostState {
                topology: Topology::new(name, seed),
                queues: Vec::new(),
            }),
            policies: RwLock::default(),
            policy_change: Mutex::new(()),
        }
    }

    pub(crate) fn policies(&self) -> RwLockReadGuard<'_, Policies> {
        self.policies.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (`Ok`) or clears (`Err`: kind and name) a policy: recorded, then applied to every
    /// queue and exchange. Returns false when clearing one that does not exist; an error if
    /// it cannot be recorded (nothing changes then).
    pub(crate) fn change_policy(
        &self,
        change: Result<Policy, (PolicyKind, String)>,
    ) -> Result<bool, String> {
        let _order = self.policy_change.lock().unwrap_or_else(|e| e.into_inner());
        let record = match &change {
            Ok(p) => crate::durable::record::policy(p),
            Err((kind, name)) => {
                if !self.policies().has(*kind, name) {
                    return Ok(false);
                }
                crate::durable::record::policy_cleared(&self.name, *kind, name)
            }
        };
        if let Some(d) = &self.durable {
            d.apply(&[record])
                .map_err(|why| format!("the policy could not be written: {why}"))?;
        }
        {
            let mut policies = self.policies.write().unwrap_or_else(|e| e.into_inner());
            match change {
                Ok(p) => policies.set(p),
                Err((kind, name)) => {
                    policies.clear(kind, &name);
                }
            }
        }
        self.apply_policies();
        Ok(true)
    }

    /// Adds a stored policy at startup (before the queues and exchanges are restored).
    pub(crate) fn restore_policy(&self, p: Policy) {
        self.policies
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set(p);
    }

    /// Applies the policies to every exchange (alternate exchanges) and queue.
    pub(crate) fn apply_policies(&self) {
        let policies = self.policies().clone();
        let cells: Vec<Arc<QueueCell>> = {
            let mut state = self.write();
            let ids: Vec<warren_routing::ExchangeId> =
                state.topology.exchanges().map(|(id, _)| id).collect();
            for id in ids {
                apply_exchange_policy(&mut state.topology, &policies, id);
            }
            state.queues().cloned().collect()
        };
        for cell in cells {
            cell.apply_policies(&policies);
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
        cell.discard_spill(&mut state);
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

// Declarations, shared by connections (after their permission checks) and the handle (a
// definitions import, acting as the administrator).

impl VhostState {
    /// Whether `destination` is a queue exclusive to a connection other than `owner` (`None`:
    /// no connection, as for the handle).
    pub(crate) fn held_by_other(
        &self,
        destination: &warren_routing::DestinationName,
        owner: Option<u64>,
    ) -> bool {
        match destination {
            warren_routing::DestinationName::Queue(q) => self
                .queue_named(q)
                .is_some_and(|c| c.exclusive_owner.is_some_and(|o| Some(o) != owner)),
            warren_routing::DestinationName::Exchange(_) => false,
        }
    }
}

impl Vhost {
    /// `exchange.declare` (not passive): the topology's checks, then a new durable exchange is
    /// recorded.
    pub(crate) fn declare_exchange(
        &self,
        spec: warren_routing::ExchangeSpec,
    ) -> Result<
        warren_routing::Declared<warren_routing::ExchangeId>,
        warren_amqp_codec::AmqpException,
    > {
        let mut state = self.write();
        let declared = state
            .topology
            .declare_exchange(spec)
            .map_err(|e| e.exception())?;
        if let Some(x) = state.topology.exchange(declared.id) {
            if declared.created && x.durable {
                self.persist(&[crate::durable::record::exchange(&self.name, x)])?;
            }
        }
        if declared.created {
            let policies = self.policies();
            apply_exchange_policy(&mut state.topology, &policies, declared.id);
        }
        Ok(declared)
    }

    /// `queue.declare` (not passive) of a named queue, after the caller's name and `configure`
    /// checks: the existing queue of that name, if `owner` may use it (405) and it is
    /// equivalent (406), or a new one, recorded if durable. `owner` is the declaring connection
    /// (`None`: the handle); `on_create` runs before a new queue's arguments are validated (a
    /// connection's dead-letter permission checks go there). Returns the queue and whether it
    /// was created.
    pub(crate) fn declare_queue(
        &self,
        name: &ShortStr,
        requested: &warren_queue::declare::QueueDecl,
        owner: Option<u64>,
        on_create: impl FnOnce() -> Result<(), warren_amqp_codec::AmqpException>,
    ) -> Result<(Arc<QueueCell>, bool), warren_amqp_codec::AmqpException> {
        use warren_queue::declare::{self, QueueDecl};
        let mut state = self.write();
        if let Some(cell) = state.queue_named(name).cloned() {
            drop(state);
            if cell.exclusive_owner.is_some_and(|o| Some(o) != owner) {
                return Err(declare::locked(&cell.name, &cell.vhost));
            }
            declare::check_equivalent(&cell.decl(), requested, name, &self.name)?;
            return Ok((cell, false));
        }
        on_create()?;
        declare::validate_arguments(requested, name, &self.name)?;
        let exclusive_owner = if requested.exclusive { owner } else { None };
        // Durable queues keep their messages, unless exclusive (which go with their
        // connection, as in RabbitMQ).
        let store = match &self.durable {
            Some(d) if requested.durable && !requested.exclusive => {
                let (id, counter) = d.new_queue_id();
                let stored = crate::durable::StoredQueue {
                    vhost: self.name.clone(),
                    name: name.detached(),
                    id,
                    auto_delete: requested.auto_delete,
                    arguments: requested.arguments.detached(),
                };
                self.persist(&[counter, crate::durable::record::queue(&stored)])?;
                Some((d.clone(), Some(id)))
            }
            Some(d) => Some((d.clone(), None)),
            None => None,
        };
        let decl = QueueDecl {
            arguments: requested.arguments.detached(),
            ..requested.clone()
        };
        let cell = Arc::new(QueueCell::new(
            name.detached(),
            self,
            decl,
            exclusive_owner,
            store,
        ));
        state.insert_queue(cell.clone());
        Ok((cell, true))
    }

    /// `queue.bind` / `exchange.bind`, after the caller's permission checks: the topology's
    /// checks, then another connection's exclusive queue is refused (405, after the existence
    /// and argument checks, as RabbitMQ orders them), and a new binding between durable ends is
    /// recorded. `owner` as for [`Vhost::declare_queue`]. Returns whether the binding is new.
    pub(crate) fn bind(
        &self,
        spec: &warren_routing::BindingSpec,
        owner: Option<u64>,
    ) -> Result<bool, warren_amqp_codec::AmqpException> {
        use warren_routing::{DestinationName, strip_cr_lf};
        let mut state = self.write();
        let foreign = state.held_by_other(&spec.destination, owner);
        let created = state.topology.bind(spec).map_err(|e| e.exception())?;
        if foreign {
            if created {
                let _ = state.topology.unbind(spec);
            }
            let dest = match &spec.destination {
                DestinationName::Queue(q) | DestinationName::Exchange(q) => q,
            };
            return Err(warren_queue::declare::locked(dest, &self.name));
        }
        // A binding is durable when both its ends are.
        let durable_exchange = |name: &ShortStr| {
            state
                .topology
                .exchange_id(strip_cr_lf(name).as_bytes())
                .and_then(|id| state.topology.exchange(id))
                .is_some_and(|x| x.durable)
        };
        let durable_dest = match &spec.destination {
            DestinationName::Queue(q) => state
                .queue_named(&strip_cr_lf(q))
                .is_some_and(|c| c.store.is_some()),
            DestinationName::Exchange(x) => durable_exchange(x),
        };
        if created && durable_dest && durable_exchange(&spec.source) {
            self.persist(&[crate::durable::record::binding(&self.name, spec)])?;
        }
        Ok(created)
    }
}

/// Sets the alternate exchange the policies give exchange `id` (the `alternate-exchange`
/// argument, if it has one, still wins when routing).
pub(crate) fn apply_exchange_policy(
    topology: &mut Topology,
    policies: &Policies,
    id: warren_routing::ExchangeId,
) {
    let Some(name) = topology.exchange(id).map(|x| x.name.clone()) else {
        return;
    };
    let alternate = policies
        .applied(name.as_bytes(), Target::Exchange)
        .definition
        .and_then(|d| d.alternate_exchange);
    topology.set_policy_alternate(id, alternate);
}
