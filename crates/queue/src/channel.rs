//! What a channel keeps between a queue and a client: delivery tags and unsettled deliveries,
//! prefetch credit, publisher-confirm sequence numbers, and the transaction buffer.
//!
//! These are the channel-side halves of the queue rules: a queue hands a message out, the
//! channel numbers it and remembers it until the client settles it, then hands it back.

use crate::queue::{ConsumerId, Entry};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use warren_amqp_codec::{AmqpException, ReplyCode};

/// A delivery waiting for the client to settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending<Q, M> {
    /// The queue it came from (the broker's queue handle).
    pub queue: Q,
    /// The consumer it went to, `None` for `basic.get`.
    pub consumer: Option<ConsumerId>,
    /// The message as delivered.
    pub entry: Entry<M>,
}

/// The delivery tags of one channel and the deliveries not yet settled.
///
/// Tags start at 1 and grow by one per delivery (`basic.deliver` and `basic.get-ok`, with or
/// without acks), as the client counts them. Settled entries become holes that are dropped
/// once they reach the front, so a single ack costs a binary search and `multiple` costs what
/// it settles.
#[derive(Debug)]
pub struct Unacked<Q, M> {
    slots: VecDeque<(u64, Option<Pending<Q, M>>)>,
    next_tag: u64,
    live: usize,
}

impl<Q, M> Default for Unacked<Q, M> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            next_tag: 1,
            live: 0,
        }
    }
}

/// The reply RabbitMQ gives to an ack, nack or reject of a tag it does not know.
pub fn unknown_delivery_tag(tag: u64) -> AmqpException {
    AmqpException::channel(
        ReplyCode::PreconditionFailed,
        format!("unknown delivery tag {tag}"),
    )
}

impl<Q, M> Unacked<Q, M> {
    /// A channel with no deliveries yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Numbers a delivery whose settlement is not needed (`no_ack`).
    pub fn next_untracked(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    /// Numbers a delivery and remembers it until it is settled.
    pub fn track(&mut self, pending: Pending<Q, M>) -> u64 {
        let tag = self.next_untracked();
        self.slots.push_back((tag, Some(pending)));
        self.live += 1;
        tag
    }

    /// Deliveries not settled yet.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Slots kept, settled ones not yet dropped included (for tests of compaction).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether every delivery is settled.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Settles by tag, with RabbitMQ's rules: `multiple` with tag 0 settles everything;
    /// otherwise the tag must be outstanding (else 406 "unknown delivery tag N", and nothing is
    /// settled), and `multiple` also settles every earlier one. The settled deliveries are
    /// appended to `out` in tag order.
    pub fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        out: &mut Vec<Pending<Q, M>>,
    ) -> Result<(), AmqpException> {
        self.settle_with(tag, multiple, |_, p| out.push(p))
    }

    /// [`Self::settle`], keeping each delivery's tag (for a transaction, whose rollback puts
    /// them back with [`Self::restore`]).
    pub fn settle_tagged(
        &mut self,
        tag: u64,
        multiple: bool,
        out: &mut Vec<(u64, Pending<Q, M>)>,
    ) -> Result<(), AmqpException> {
        self.settle_with(tag, multiple, |t, p| out.push((t, p)))
    }

    fn settle_with(
        &mut self,
        tag: u64,
        multiple: bool,
        mut out: impl FnMut(u64, Pending<Q, M>),
    ) -> Result<(), AmqpException> {
        if multiple && tag == 0 {
            for (t, p) in self.slots.drain(..) {
                if let Some(p) = p {
                    out(t, p);
                }
            }
            self.live = 0;
            return Ok(());
        }
        let index = self
            .slots
            .binary_search_by_key(&tag, |(t, _)| *t)
            .ok()
            .filter(|&i| self.slots.get(i).is_some_and(|(_, p)| p.is_some()))
            .ok_or_else(|| unknown_delivery_tag(tag))?;
        if multiple {
            for (t, p) in self.slots.drain(..=index) {
                if let Some(p) = p {
                    out(t, p);
                    self.live -= 1;
                }
            }
        } else if let Some(p) = self.slots.get_mut(index).and_then(|(_, p)| p.take()) {
            out(tag, p);
            self.live -= 1;
        }
        self.compact();
        Ok(())
    }

    /// Drops settled slots: those at the front at once, the others once they are the
    /// majority (one delivery left unsettled must not keep a slot for every later tag).
    fn compact(&mut self) {
        while self.slots.front().is_some_and(|(_, p)| p.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + 64 {
            self.slots.retain(|(_, p)| p.is_some());
        }
        if self.slots.is_empty() && self.slots.capacity() > 1024 {
            self.slots = VecDeque::new();
        }
    }

    /// Puts settled deliveries back as unsettled under their tags (`tx.rollback` drops the
    /// transaction's acks, and RabbitMQ then counts those deliveries as outstanding again).
    pub fn restore(&mut self, items: impl IntoIterator<Item = (u64, Pending<Q, M>)>) {
        for (tag, p) in items {
            match self.slots.binary_search_by_key(&tag, |(t, _)| *t) {
                Ok(i) => {
                    if let Some(slot) = self.slots.get_mut(i) {
                        if slot.1.is_none() {
                            self.live += 1;
                        }
                        slot.1 = Some(p);
                    }
                }
                Err(i) => {
                    self.slots.insert(i, (tag, Some(p)));
                    self.live += 1;
                }
            }
        }
    }

    /// Takes every unsettled delivery, in tag order (the channel closes, or `basic.recover`).
    pub fn drain(&mut self, out: &mut Vec<Pending<Q, M>>) {
        out.extend(self.slots.drain(..).filter_map(|(_, p)| p));
        self.live = 0;
        if self.slots.capacity() > 1024 {
            self.slots = VecDeque::new();
        }
    }

    /// Keeps only the deliveries for which `keep` says yes (e.g. drops those of a deleted
    /// queue whose messages need no settling any more).
    pub fn retain(&mut self, mut keep: impl FnMut(&Pending<Q, M>) -> bool) {
        for (_, p) in self.slots.iter_mut() {
            if p.as_ref().is_some_and(|p| !keep(p)) {
                *p = None;
                self.live -= 1;
            }
        }
        self.compact();
    }
}

/// The channel-wide prefetch limit (`basic.qos` with `global=true`), shared by every queue the
/// channel consumes from: queues take credit as they deliver, the channel gives it back as the
/// client settles.
#[derive(Debug, Default)]
pub struct ChannelCredit {
    limit: AtomicU32,
    used: AtomicU32,
    starved: AtomicBool,
}

impl ChannelCredit {
    /// No limit yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the limit (0: none). Returns whether consumers refused for lack of credit may now
    /// be served.
    pub fn set_limit(&self, limit: u32) -> bool {
        self.limit.store(limit, Ordering::SeqCst);
        self.wake_if_room()
    }

    /// The limit (0: none).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Deliveries counted against the limit.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes one unit for a delivery that needs an ack, or refuses (remembering that someone
    /// was refused).
    pub fn try_acquire(&self) -> bool {
        // Sequentially consistent throughout: a refusal must be recorded before the count is
        // looked at again, and a release must lower the count before it looks for a refusal.
        let acquire = || {
            self.used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    let limit = self.limit.load(Ordering::SeqCst);
                    (limit == 0 || used < limit).then_some(used + 1)
                })
                .is_ok()
        };
        if acquire() {
            return true;
        }
        self.starved.store(true, Ordering::SeqCst);
        // A release (or a raised limit) between the refusal and the flag saw nobody starved
        // and woke nobody: look once more, so that the wake-up is not lost. (If this succeeds,
        // the flag may cause one spurious wake-up later, which is harmless.)
        acquire()
    }

    /// Gives back `n` units as deliveries are settled. Returns whether a consumer was refused
    /// since the last wake-up and there is room now: the caller then resumes the channel's
    /// consumers.
    pub fn release(&self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        self.wake_if_room()
    }

    fn wake_if_room(&self) -> bool {
        let limit = self.limit.load(Ordering::SeqCst);
        let room = limit == 0 || self.used.load(Ordering::SeqCst) < limit;
        room && self.starved.swap(false, Ordering::SeqCst)
    }
}

/// `basic.qos` as RabbitMQ interprets it: `global=false` sets the prefetch of consumers created
/// afterwards on the channel; `global=true` sets one limit shared by all the channel's
/// consumers. A `prefetch_size` other than 0 is not implemented (540), as in RabbitMQ.
pub fn check_qos(prefetch_size: u32) -> Result<(), AmqpException> {
    if prefetch_size != 0 {
        return Err(AmqpException::connection(
            ReplyCode::NotImplemented,
            format!("prefetch_size!=0 ({prefetch_size})"),
        ));
    }
    Ok(())
}

/// The reply to a publish in confirm mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmReply {
    /// The sequence number (delivery tag) it answers.
    pub tag: u64,
    /// Whether it answers every earlier outstanding number too.
    pub multiple: bool,
    /// `basic.ack` (true) or `basic.nack` (false).
    pub ack: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfirmState {
    Pending,
    Ack,
    Nack,
}

/// Publisher-confirm sequence numbers of one channel: every publish after `confirm.select`
/// takes the next number (from 1); each is settled as an ack or a nack when every queue it
/// went to has it (or refused it), and replies go out in order, consecutive ones of the same
/// kind folded into one `multiple` reply.
#[derive(Debug)]
pub struct Confirms {
    /// The number of the first entry of `states`.
    base: u64,
    states: VecDeque<ConfirmState>,
}

impl Default for Confirms {
    fn default() -> Self {
        Self {
            base: 1,
            states: VecDeque::new(),
        }
    }
}

impl Confirms {
    /// Numbers a publish.
    pub fn publish(&mut self) -> u64 {
        self.states.push_back(ConfirmState::Pending);
        self.base + self.states.len() as u64 - 1
    }

    /// Settles a number: `ack` true when every target queue took the message.
    pub fn settle(&mut self, seq: u64, ack: bool) {
        if let Some(s) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.states.get_mut(i))
        {
            if *s == ConfirmState::Pending {
                *s = if ack {
                    ConfirmState::Ack
                } else {
                    ConfirmState::Nack
                };
            }
        }
    }

    /// Publishes not yet answered.
    pub fn outstanding(&self) -> usize {
        self.states.len()
    }

    /// The next reply to send, if the oldest outstanding publish is settled.
    pub fn poll(&mut self) -> Option<ConfirmReply> {
        let first = *self.states.front()?;
        if first == ConfirmState::Pending {
            return None;
        }
        let run = self.states.iter().take_while(|s| **s == first).count();
        self.states.drain(..run);
        self.base += run as u64;
        if self.states.is_empty() && self.states.capacity() > 4096 {
            self.states = VecDeque::new();
        }
        Some(ConfirmReply {
            tag: self.base - 1,
            multiple: run > 1,
            ack: first == ConfirmState::Ack,
        })
    }
}

/// Work buffered by a transaction until `tx.commit`.
#[derive(Debug)]
pub struct Transaction<P, S> {
    /// Publishes, in order.
    pub publishes: Vec<P>,
    /// Acks, nacks and rejects, in order.
    pub settlements: Vec<S>,
}

impl<P, S> Default for Transaction<P, S> {
    fn default() -> Self {
        Self {
            publishes: Vec::new(),
            settlements: Vec::new(),
        }
    }
}

/// A channel's publishing mode: plain, confirms (`confirm.select`) or transactional
/// (`tx.select`). The two are exclusive, as in RabbitMQ.
#[derive(Debug)]
pub enum Mode<P, S> {
    /// Neither.
    Plain,
    /// Publisher confirms.
    Confirm(Confirms),
    /// A transaction is always open; commit and rollback start the next.
    Tx(Transaction<P, S>),
}

// Not derived: a derive would demand `P: Default` and `S: Default`.
#[allow(clippy::derivable_impls)]
impl<P, S> Default for Mode<P, S> {
    fn default() -> Self {
        Mode::Plain
    }
}

fn precondition(text: &str) -> AmqpException {
    AmqpException::channel(ReplyCode::PreconditionFailed, text)
}

impl<P, S> Mode<P, S> {
    /// `confirm.select`.
    pub fn select_confirm(&mut self) -> Result<(), AmqpException> {
        match self {
            Mode::Tx(_) => Err(precondition("cannot switch from tx to confirm mode")),
            Mode::Confirm(_) => Ok(()),
            Mode::Plain => {
                *self = Mode::Confirm(Confirms::default());
                Ok(())
            }
        }
    }

    /// `tx.select`.
    pub fn select_tx(&mut self) -> Result<(), AmqpException> {
        match self {
            Mode::Confirm(_) => Err(precondition("cannot switch from confirm to tx mode")),
            Mode::Tx(_) => Ok(()),
            Mode::Plain => {
                *self = Mode::Tx(Transaction::default());
                Ok(())
            }
        }
    }

    /// `tx.commit`: the work to apply now, in order; a new transaction begins.
    pub fn commit(&mut self) -> Result<Transaction<P, S>, AmqpException> {
        match self {
            Mode::Tx(t) => Ok(std::mem::take(t)),
            _ => Err(precondition("channel is not transactional")),
        }
    }

    /// `tx.rollback`: the buffered work is dropped (the deliveries whose acks are dropped stay
    /// unsettled); a new transaction begins.
    pub fn rollback(&mut self) -> Result<Transaction<P, S>, AmqpException> {
        self.commit()
    }

    /// The confirm tracker, in confirm mode.
    pub fn confirms(&mut self) -> Option<&mut Confirms> {
        match self {
            Mode::Confirm(c) => Some(c),
            _ => None,
        }
    }

    /// The open transaction, in tx mode.
    pub fn transaction(&mut self) -> Option<&mut Transaction<P, S>> {
        match self {
            Mode::Tx(t) => Some(t),
            _ => None,
        }
    }
}

fn not_implemented(text: &str) -> AmqpException {
    AmqpException::connection(ReplyCode::NotImplemented, text)
}

/// `channel.flow`: RabbitMQ refuses to stop a channel's deliveries (540).
pub fn check_flow(active: bool) -> Result<(), AmqpException> {
    if active {
        Ok(())
    } else {
        Err(not_implemented("active=false"))
    }
}

/// `basic.publish` with `immediate` is not implemented (540), as in RabbitMQ.
pub fn check_immediate(immediate: bool) -> Result<(), AmqpException> {
    if immediate {
        Err(not_implemented("immediate=true"))
    } else {
        Ok(())
    }
}

/// `basic.recover` (and `recover-async`) is implemented only with `requeue` (540).
pub fn check_recover(requeue: bool) -> Result<(), AmqpException> {
    if requeue {
        Ok(())
    } else {
        Err(not_implemented("requeue=false"))
    }
}

/// The pseudo-queue a client consumes from to receive direct replies.
pub const REPLY_TO: &[u8] = b"amq.rabbitmq.reply-to";

/// `basic.consume` of [`REPLY_TO`]: the consumer must be `no_ack`, and a channel has one.
pub fn check_reply_consumer(no_ack: bool, already_set: bool) -> Result<(), AmqpException> {
    if !no_ack {
        return Err(precondition("reply consumer cannot acknowledge"));
    }
    if already_set {
        return Err(precondition("reply consumer already set"));
    }
    Ok(())
}

/// The message property rules RabbitMQ applies to a publish, in its order:
/// - `reply_to` equal to [`REPLY_TO`] needs a reply consumer on the channel (its key, given as
///   `reply_key`) and is rewritten to `amq.rabbitmq.reply-to.<key>`;
/// - `user_id`, if set, must be the authenticated user;
/// - `expiration` must be a valid TTL (see [`crate::declare::check_expiration`]).
pub fn check_properties(
    properties: &mut warren_amqp_codec::BasicProperties,
    reply_key: Option<&[u8]>,
    user: &str,
) -> Result<(), AmqpException> {
    if properties
        .reply_to
        .as_ref()
        .is_some_and(|r| r.as_bytes() == REPLY_TO)
    {
        let key = reply_key.ok_or_else(|| precondition("fast reply consumer does not exist"))?;
        let mut full = REPLY_TO.to_vec();
        full.push(b'.');
        full.extend_from_slice(key);
        properties.reply_to = warren_amqp_codec::ShortStr::from_bytes(full).ok();
    }
    if let Some(uid) = &properties.user_id {
        if uid.as_bytes() != user.as_bytes() {
            return Err(precondition(&format!(
                "user_id property set to '{}' but authenticated user was '{user}'",
                String::from_utf8_lossy(uid.as_bytes()),
            )));
        }
    }
    if let Some(e) = &properties.expiration {
        crate::declare::check_expiration(e.as_bytes())?;
    }
    Ok(())
}
