//! A model test (STYLE.md, practice 7): random sequences of publish, consume, cancel, deliver,
//! get, settle (through a channel's [`Unacked`], single or `multiple`, known or unknown tags,
//! also inside a transaction that is rolled back), recover, purge, recipient refusal and
//! resume, and channel-wide credit changes, run against a [`Queue`] and a naive reference
//! (sets of ready, out and gone offsets, per-consumer counts). After every step:
//!
//! - every published offset is exactly one of ready, out (unsettled) or gone (acked, discarded,
//!   purged, or delivered without acks): nothing lost, nothing duplicated;
//! - deliveries and gets take the lowest ready offset (FIFO, requeued messages in their
//!   original place), with the right delivery count;
//! - no consumer exceeds its prefetch, and the channel's credit counts exactly the unsettled
//!   deliveries to consumers (so a refused or impossible delivery never leaks credit);
//! - `stats()` and the other counts agree with the reference;
//! - after `deliver`, messages are left ready only if no consumer could take one: each is at
//!   its prefetch, refused by its recipient, or short of channel credit (nobody is forgotten
//!   out of the rotation).
//!
//! Runs from a fixed seed; set `WARREN_PROPTEST_SEED` to explore others.

use proptest::prelude::*;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use warren_queue::channel::{ChannelCredit, Pending, Unacked};
use warren_queue::{
    ConsumeError, ConsumerId, ConsumerSpec, Outcome, Payload, Queue, QueueConfig, QueueStats,
    Recipient, Settlement,
};

#[derive(Debug, Clone, PartialEq, Eq)]
struct MMsg {
    offset: u64,
    len: usize,
}

impl Payload for MMsg {
    fn body_len(&self) -> usize {
        self.len
    }
}

/// One consumer's owner: a gate the test opens and closes, and the channel's shared credit.
#[derive(Debug)]
struct Owner {
    no_ack: bool,
    open: Cell<bool>,
    granted: Cell<u32>,
    credit: Rc<ChannelCredit>,
}

#[derive(Debug, Clone)]
struct MRcpt(Rc<Owner>);

impl Recipient for MRcpt {
    fn try_reserve(&self, ack_required: bool) -> bool {
        let o = &self.0;
        assert_eq!(ack_required, !o.no_ack, "ack_required is !no_ack");
        let ok = o.open.get() && (!ack_required || o.credit.try_acquire());
        if ok {
            o.granted.set(o.granted.get() + 1);
        }
        ok
    }
}

#[derive(Debug, Clone)]
enum Tag {
    /// The n-th outstanding tag (modulo their number).
    Outstanding(usize),
    /// Any tag, probably unknown.
    Raw(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Publish {
        len: usize,
    },
    Consume {
        prefetch: u16,
        no_ack: bool,
        exclusive: bool,
    },
    Cancel {
        pick: usize,
    },
    Deliver,
    Get {
        no_ack: bool,
    },
    Settle {
        tag: Tag,
        multiple: bool,
        outcome: Outcome,
    },
    /// Settles inside a transaction and rolls it back (`settle_tagged`, then `restore`).
    Rollback {
        tag: Tag,
        multiple: bool,
    },
    Recover,
    Purge,
    Gate {
        pick: usize,
        open: bool,
    },
    Resume {
        pick: usize,
    },
    SetLimit(u32),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Ack),
        Just(Outcome::Requeue),
        Just(Outcome::Discard)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..5).prop_map(|len| Op::Publish { len }),
        2 => (0u16..4, prop::bool::weighted(0.25), prop::bool::weighted(0.1))
            .prop_map(|(prefetch, no_ack, exclusive)| Op::Consume { prefetch, no_ack, exclusive }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        5 => Just(Op::Deliver),
        1 => any::<bool>().prop_map(|no_ack| Op::Get { no_ack }),
        5 => (
            prop_oneof![
                6 => any::<usize>().prop_map(Tag::Outstanding),
                1 => (0u64..40).prop_map(Tag::Raw),
            ],
            prop::bool::weighted(0.3),
            outcome()
        )
            .prop_map(|(tag, multiple, outcome)| Op::Settle { tag, multiple, outcome }),
        1 => (
            prop_oneof![
                3 => any::<usize>().prop_map(Tag::Outstanding),
                1 => (0u64..40).prop_map(Tag::Raw),
            ],
            any::<bool>()
        )
            .prop_map(|(tag, multiple)| Op::Rollback { tag, multiple }),
        1 => Just(Op::Recover),
        1 => Just(Op::Purge),
        1 => (any::<usize>(), prop::bool::weighted(0.6))
            .prop_map(|(pick, open)| Op::Gate { pick, open }),
        1 => any::<usize>().prop_map(|pick| Op::Resume { pick }),
        1 => (0u32..4).prop_map(Op::SetLimit),
    ]
}

#[derive(Debug)]
struct ModelConsumer {
    id: ConsumerId,
    owner: Rc<Owner>,
    prefetch: u16,
    no_ack: bool,
    exclusive: bool,
    /// Unsettled deliveries (acks required only).
    out: u32,
}

struct Harness {
    q: Queue<MMsg, MRcpt>,
    auto_delete: bool,
    credit: Rc<ChannelCredit>,
    unacked: Unacked<(), MMsg>,
    consumers: Vec<ModelConsumer>,
    // The reference.
    lens: Vec<usize>,
    counts: Vec<u32>,
    ready: BTreeSet<u64>,
    /// Unsettled: offset -> consumer (None for basic.get).
    out: BTreeMap<u64, Option<ConsumerId>>,
    /// Outstanding tags -> offset.
    tags: BTreeMap<u64, u64>,
    gone: BTreeSet<u64>,
    next_tag: u64,
}

impl Harness {
    fn new(auto_delete: bool) -> Self {
        Self {
            q: Queue::new(QueueConfig {
                auto_delete,
                ..QueueConfig::default()
            }),
            auto_delete,
            credit: Rc::new(ChannelCredit::new()),
            unacked: Unacked::new(),
            consumers: Vec::new(),
            lens: Vec::new(),
            counts: Vec::new(),
            ready: BTreeSet::new(),
            out: BTreeMap::new(),
            tags: BTreeMap::new(),
            gone: BTreeSet::new(),
            next_tag: 1,
        }
    }

    fn resume_all(&mut self) {
        for c in &self.consumers {
            self.q.resume(c.id);
        }
    }

    /// Checks a message leaving the queue (deliver or get) against the reference.
    fn take(&mut self, offset: u64, message: &MMsg, delivery_count: u32) {
        let head = self.ready.pop_first();
        assert_eq!(Some(offset), head, "the lowest ready offset goes first");
        assert_eq!(message.offset, offset, "the entry carries its own message");
        assert_eq!(
            delivery_count, self.counts[offset as usize],
            "delivery count of {offset}"
        );
    }

    fn track(&mut self, consumer: Option<ConsumerId>, entry: warren_queue::Entry<MMsg>) {
        let offset = entry.offset;
        let tag = self.unacked.track(Pending {
            queue: (),
            consumer,
            entry,
        });
        assert_eq!(tag, self.next_tag);
        self.next_tag += 1;
        self.tags.insert(tag, offset);
        self.out.insert(offset, consumer);
    }

    fn untracked(&mut self, offset: u64) {
        assert_eq!(self.unacked.next_untracked(), self.next_tag);
        self.next_tag += 1;
        self.gone.insert(offset);
    }

    /// The channel hands settled deliveries back: queue first, then credit.
    fn hand_back(&mut self, settled: Vec<Pending<(), MMsg>>, outcome: Outcome) {
        let mut to_consumers = 0u32;
        let mut batch = Vec::new();
        for p in settled {
            let offset = p.entry.offset;
            assert_eq!(self.out.remove(&offset), Some(p.consumer), "settled once");
            if let Some(id) = p.consumer {
                to_consumers += 1;
                if let Some(mc) = self.consumers.iter_mut().find(|c| c.id == id) {
                    mc.out -= 1;
                }
            }
            match outcome {
                Outcome::Ack | Outcome::Discard => {
                    self.gone.insert(offset);
                }
                Outcome::Requeue => {
                    self.counts[offset as usize] += 1;
                    self.ready.insert(offset);
                }
            }
            batch.push(Settlement {
                consumer: p.consumer,
                entry: p.entry,
                outcome,
            });
        }
        self.q.settle(batch);
        if self.credit.release(to_consumers) {
            self.resume_all();
        }
    }

    /// The tag an op names, and the outstanding tags a settlement of it takes, in order
    /// (none for an unknown tag). `None` when the op names the n-th outstanding tag and there
    /// is none.
    fn expect_settled(&self, tag: &Tag, multiple: bool) -> Option<(u64, Vec<u64>)> {
        let tag = match *tag {
            Tag::Outstanding(n) => {
                if self.tags.is_empty() {
                    return None;
                }
                *self.tags.keys().nth(n % self.tags.len()).expect("in range")
            }
            Tag::Raw(t) => t,
        };
        let expected = if multiple && tag == 0 {
            self.tags.keys().copied().collect()
        } else if !self.tags.contains_key(&tag) {
            Vec::new()
        } else if multiple {
            self.tags.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        Some((tag, expected))
    }

    /// A settlement succeeds exactly when its tag is outstanding, or it is `multiple` with
    /// tag 0; otherwise it is RabbitMQ's unknown-tag error.
    fn check_result(
        r: Result<(), warren_amqp_codec::AmqpException>,
        tag: u64,
        multiple: bool,
        expected: &[u64],
    ) {
        if (multiple && tag == 0) || !expected.is_empty() {
            r.expect("known tag");
        } else {
            let e = r.expect_err("unknown tag");
            assert_eq!(e.text, format!("unknown delivery tag {tag}"));
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Publish { len } => {
                let offset = self.lens.len() as u64;
                assert_eq!(self.q.publish(MMsg { offset, len }).offset(), Some(offset));
                self.lens.push(len);
                self.counts.push(0);
                self.ready.insert(offset);
            }
            Op::Consume {
                prefetch,
                no_ack,
                exclusive,
            } => {
                let owner = Rc::new(Owner {
                    no_ack,
                    open: Cell::new(true),
                    granted: Cell::new(0),
                    credit: self.credit.clone(),
                });
                let refused = !self.consumers.is_empty()
                    && (exclusive || self.consumers.iter().any(|c| c.exclusive));
                let r = self.q.add_consumer(ConsumerSpec {
                    no_ack,
                    exclusive,
                    prefetch,
                    recipient: MRcpt(owner.clone()),
                    priority: 0,
                });
                if refused {
                    assert_eq!(r.unwrap_err(), ConsumeError::ExclusiveInUse);
                } else {
                    let id = r.expect("accepted");
                    assert!(self.consumers.iter().all(|c| c.id != id), "fresh id");
                    self.consumers.push(ModelConsumer {
                        id,
                        owner,
                        prefetch,
                        no_ack,
                        exclusive,
                        out: 0,
                    });
                }
            }
            Op::Cancel { pick } => {
                if self.consumers.is_empty() {
                    return;
                }
                let mc = self.consumers.remove(pick % self.consumers.len());
                let removed = self.q.remove_consumer(mc.id).expect("present");
                assert!(Rc::ptr_eq(&removed.recipient.0, &mc.owner));
                assert_eq!(
                    removed.auto_delete_now,
                    self.auto_delete && self.consumers.is_empty()
                );
                assert!(self.q.remove_consumer(mc.id).is_none());
                assert!(self.q.consumer(mc.id).is_none());
                // Its unsettled deliveries stay with the channel.
            }
            Op::Deliver => {
                for c in &self.consumers {
                    c.owner.granted.set(0);
                }
                let mut got = Vec::new();
                let n = self.q.deliver(|c, e| got.push((c.id(), c.no_ack(), e)));
                assert_eq!(n, got.len());
                let mut per_consumer: BTreeMap<ConsumerId, u32> = BTreeMap::new();
                for (id, no_ack, e) in got {
                    self.take(e.offset, &e.message, e.delivery_count);
                    *per_consumer.entry(id).or_default() += 1;
                    let mc = self
                        .consumers
                        .iter_mut()
                        .find(|c| c.id == id)
                        .expect("delivered to a live consumer");
                    assert_eq!(mc.no_ack, no_ack);
                    if no_ack {
                        self.untracked(e.offset);
                    } else {
                        mc.out += 1;
                        assert!(
                            mc.prefetch == 0 || mc.out <= u32::from(mc.prefetch),
                            "prefetch {} exceeded",
                            mc.prefetch
                        );
                        self.track(Some(id), e);
                    }
                }
                for c in &self.consumers {
                    assert_eq!(
                        c.owner.granted.get(),
                        per_consumer.get(&c.id).copied().unwrap_or(0),
                        "every credit granted is used by a delivery"
                    );
                }
                if !self.ready.is_empty() {
                    let credit_full =
                        self.credit.limit() != 0 && self.credit.used() >= self.credit.limit();
                    for c in &self.consumers {
                        let at_prefetch =
                            !c.no_ack && c.prefetch != 0 && c.out >= u32::from(c.prefetch);
                        let refused = !c.owner.open.get() || (!c.no_ack && credit_full);
                        assert!(
                            at_prefetch || refused,
                            "{:?} could take a message but was left out",
                            c.id
                        );
                    }
                }
            }
            Op::Get { no_ack } => match self.q.get(no_ack) {
                None => assert!(self.ready.is_empty()),
                Some((e, left)) => {
                    self.take(e.offset, &e.message, e.delivery_count);
                    assert_eq!(left, self.ready.len() as u64, "count left");
                    if no_ack {
                        self.untracked(e.offset);
                    } else {
                        self.track(None, e);
                    }
                }
            },
            Op::Settle {
                ref tag,
                multiple,
                outcome,
            } => {
                let Some((tag, expected)) = self.expect_settled(tag, multiple) else {
                    return;
                };
                let mut settled = Vec::new();
                let r = self.unacked.settle(tag, multiple, &mut settled);
                Self::check_result(r, tag, multiple, &expected);
                let expected_offsets: Vec<u64> = expected
                    .iter()
                    .map(|t| self.tags.remove(t).expect("outstanding"))
                    .collect();
                assert_eq!(
                    settled.iter().map(|p| p.entry.offset).collect::<Vec<_>>(),
                    expected_offsets,
                    "settled in tag order"
                );
                self.hand_back(settled, outcome);
            }
            Op::Rollback { ref tag, multiple } => {
                let Some((tag, expected)) = self.expect_settled(tag, multiple) else {
                    return;
                };
                let mut settled = Vec::new();
                let r = self.unacked.settle_tagged(tag, multiple, &mut settled);
                Self::check_result(r, tag, multiple, &expected);
                assert_eq!(
                    settled.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
                    expected,
                    "settled with their tags, in tag order"
                );
                for (t, p) in &settled {
                    assert_eq!(Some(&p.entry.offset), self.tags.get(t));
                }
                assert_eq!(self.unacked.len(), self.tags.len() - expected.len());
                // tx.rollback: everything back as it was (the reference did not change).
                self.unacked.restore(settled);
            }
            Op::Recover => {
                let mut settled = Vec::new();
                self.unacked.drain(&mut settled);
                let expected: Vec<u64> = std::mem::take(&mut self.tags).into_values().collect();
                assert_eq!(
                    settled.iter().map(|p| p.entry.offset).collect::<Vec<_>>(),
                    expected
                );
                self.hand_back(settled, Outcome::Requeue);
            }
            Op::Purge => {
                assert_eq!(self.q.purge(), self.ready.len() as u64);
                self.gone.append(&mut self.ready);
            }
            Op::Gate { pick, open } => {
                if self.consumers.is_empty() {
                    return;
                }
                let c = &self.consumers[pick % self.consumers.len()];
                c.owner.open.set(open);
                if open {
                    let id = c.id;
                    self.q.resume(id);
                }
            }
            Op::Resume { pick } => {
                if let Some(c) = self.consumers.get(pick % self.consumers.len().max(1)) {
                    let id = c.id;
                    self.q.resume(id);
                }
            }
            Op::SetLimit(limit) => {
                if self.credit.set_limit(limit) {
                    self.resume_all();
                }
            }
        }
    }

    fn check(&self) {
        let published = self.lens.len();
        // Every offset is in exactly one place.
        assert_eq!(
            self.ready.len() + self.out.len() + self.gone.len(),
            published,
            "nothing lost or duplicated"
        );
        let all: BTreeSet<u64> = self
            .ready
            .iter()
            .chain(self.out.keys())
            .chain(self.gone.iter())
            .copied()
            .collect();
        assert_eq!(all.len(), published);
        assert!(all.iter().all(|o| *o < published as u64));

        let ready_bytes: usize = self.ready.iter().map(|o| self.lens[*o as usize]).sum();
        assert_eq!(
            self.q.stats(),
            QueueStats {
                ready: self.ready.len() as u64,
                ready_bytes: ready_bytes as u64,
                unacked: self.out.len() as u64,
                consumers: self.consumers.len() as u32,
            }
        );
        assert_eq!(self.q.message_count(), self.ready.len() as u64);
        assert_eq!(self.q.is_empty(), self.ready.is_empty());
        assert_eq!(self.q.consumer_count(), self.consumers.len() as u32);

        assert_eq!(self.unacked.len(), self.tags.len());
        assert_eq!(self.tags.len(), self.out.len());

        let ids: BTreeSet<ConsumerId> = self.q.consumers().map(|c| c.id()).collect();
        assert_eq!(
            ids,
            self.consumers.iter().map(|c| c.id).collect::<BTreeSet<_>>()
        );
        for mc in &self.consumers {
            let c = self.q.consumer(mc.id).expect("live consumer");
            assert_eq!(c.unacked(), mc.out, "unacked of {:?}", mc.id);
            assert_eq!(c.prefetch(), mc.prefetch);
            assert_eq!(c.no_ack(), mc.no_ack);
            assert_eq!(c.exclusive(), mc.exclusive);
            let expected = self.out.values().filter(|c| **c == Some(mc.id)).count();
            assert_eq!(mc.out as usize, expected);
            if mc.prefetch != 0 {
                assert!(mc.out <= u32::from(mc.prefetch));
            }
        }
        let to_consumers = self.out.values().filter(|c| c.is_some()).count();
        assert_eq!(
            self.credit.used() as usize,
            to_consumers,
            "channel credit counts unsettled consumer deliveries"
        );
    }
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    #[test]
    fn queue_agrees_with_a_naive_model(
        auto_delete in any::<bool>(),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let mut h = Harness::new(auto_delete);
        for op in &ops {
            h.apply(op);
            h.check();
        }
        // Finally: everything settles back, and a fresh consumer drains the queue in order.
        h.apply(&Op::Recover);
        h.check();
        for c in std::mem::take(&mut h.consumers) {
            h.q.remove_consumer(c.id).expect("present");
        }
        h.credit.set_limit(0);
        let id = h.q.add_consumer(ConsumerSpec {
            no_ack: true,
            exclusive: false,
            prefetch: 0,
            recipient: MRcpt(Rc::new(Owner {
                no_ack: true,
                open: Cell::new(true),
                granted: Cell::new(0),
                credit: h.credit.clone(),
            })),
            priority: 0,
        }).expect("no consumers left");
        let mut offsets = Vec::new();
        h.q.deliver(|c, e| {
            assert_eq!(c.id(), id);
            offsets.push(e.offset);
        });
        prop_assert_eq!(offsets, h.ready.iter().copied().collect::<Vec<_>>());
        prop_assert!(h.q.is_empty());
        prop_assert_eq!(h.q.stats().unacked, 0);
    }
}
