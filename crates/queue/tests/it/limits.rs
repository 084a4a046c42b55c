//! The rules a queue's arguments set, with time passed in: message TTL (per queue and per
//! message), length limits with their overflow modes, priorities, the delivery limit, and
//! which messages leave as dead (for dead-lettering) and why; plus a model test of random
//! publishes, gets, settlements and clock advances against a naive reference.

use proptest::prelude::*;
use std::collections::BTreeMap;
use warren_queue::{
    DeathReason, Entry, Limits, Outcome, Overflow, Payload, Pushed, Queue, QueueConfig, Recipient,
    Settlement,
};

/// A message with a label, a priority and its own time to live.
#[derive(Debug, Clone, PartialEq, Eq)]
struct M {
    label: u32,
    priority: u8,
    ttl: Option<u64>,
    len: usize,
}

impl Payload for M {
    fn body_len(&self) -> usize {
        self.len
    }
    fn priority(&self) -> u8 {
        self.priority
    }
    fn ttl(&self) -> Option<u64> {
        self.ttl
    }
}

struct Anyone;
impl Recipient for Anyone {
    fn try_reserve(&self, _ack_required: bool) -> bool {
        true
    }
}

fn m(label: u32) -> M {
    M {
        label,
        priority: 0,
        ttl: None,
        len: 10,
    }
}

fn queue(limits: Limits) -> Queue<M, Anyone> {
    Queue::new(QueueConfig {
        auto_delete: false,
        limits,
        single_active_consumer: false,
    })
}

fn get(q: &mut Queue<M, Anyone>) -> Option<Entry<M>> {
    q.get(false).map(|(e, _)| e)
}

fn labels_of_dead(q: &mut Queue<M, Anyone>) -> Vec<(u32, DeathReason)> {
    q.take_dead()
        .into_iter()
        .map(|d| (d.entry.message.label, d.reason))
        .collect()
}

fn settle(q: &mut Queue<M, Anyone>, entry: Entry<M>, outcome: Outcome) {
    q.settle([Settlement {
        consumer: None,
        entry,
        outcome,
    }]);
}

#[test]
fn a_queue_ttl_expires_messages_in_order_and_never_delivers_them() {
    let mut q = queue(Limits {
        message_ttl: Some(100),
        ..Limits::default()
    });
    q.advance(1_000);
    q.publish(m(1));
    q.advance(1_050);
    q.publish(m(2));
    assert_eq!(q.next_expiry(), Some(1_100));
    q.advance(1_100);
    assert!(
        labels_of_dead(&mut q).is_empty(),
        "expires after, not at, its time"
    );
    q.advance(1_101);
    assert_eq!(labels_of_dead(&mut q), [(1, DeathReason::Expired)]);
    assert_eq!(q.message_count(), 1);
    q.advance(1_200);
    assert_eq!(labels_of_dead(&mut q), [(2, DeathReason::Expired)]);
    assert!(get(&mut q).is_none());
    assert_eq!(q.next_expiry(), None);
}

#[test]
fn a_short_lived_message_behind_a_long_lived_one_goes_on_time() {
    let mut q = queue(Limits::default());
    q.publish(M {
        ttl: Some(10_000),
        ..m(1)
    });
    q.publish(M {
        ttl: Some(10),
        ..m(2)
    });
    q.publish(m(3));
    q.advance(11);
    assert_eq!(labels_of_dead(&mut q), [(2, DeathReason::Expired)]);
    assert_eq!(q.message_count(), 2);
    assert_eq!(get(&mut q).unwrap().message.label, 1);
    assert_eq!(get(&mut q).unwrap().message.label, 3);
}

#[test]
fn the_lower_of_the_queue_and_message_ttl_wins_and_a_zero_ttl_waits_for_no_one() {
    let mut q = queue(Limits {
        message_ttl: Some(50),
        ..Limits::default()
    });
    q.publish(M {
        ttl: Some(500),
        ..m(1)
    });
    q.publish(M {
        ttl: Some(5),
        ..m(2)
    });
    q.publish(M {
        ttl: Some(0),
        ..m(3)
    });
    // At the instant of its publish a zero-TTL message can still be taken...
    let e = get(&mut q).unwrap();
    assert_eq!(e.message.label, 1);
    assert_eq!(e.expires_at, Some(50));
    settle(&mut q, e, Outcome::Ack);
    // ...but not a moment later.
    q.advance(1);
    assert_eq!(labels_of_dead(&mut q), [(3, DeathReason::Expired)]);
    q.advance(6);
    assert_eq!(labels_of_dead(&mut q), [(2, DeathReason::Expired)]);
}

#[test]
fn a_requeued_message_keeps_its_expiry_and_an_unacked_one_does_not_expire() {
    let mut q = queue(Limits {
        message_ttl: Some(100),
        ..Limits::default()
    });
    q.publish(m(1));
    let e = get(&mut q).unwrap();
    q.advance(500);
    assert!(
        labels_of_dead(&mut q).is_empty(),
        "out for delivery: not expired"
    );
    settle(&mut q, e, Outcome::Requeue);
    q.advance(501);
    assert_eq!(labels_of_dead(&mut q), [(1, DeathReason::Expired)]);
}

#[test]
fn drop_head_drops_the_oldest_to_make_room() {
    let mut q = queue(Limits {
        max_length: Some(2),
        ..Limits::default()
    });
    for i in 1..=4 {
        assert!(matches!(q.publish(m(i)), Pushed::Queued(_)));
    }
    assert_eq!(q.message_count(), 2);
    assert_eq!(
        labels_of_dead(&mut q),
        [(1, DeathReason::MaxLen), (2, DeathReason::MaxLen)]
    );
    // Unacked messages do not count against the limit.
    let e = get(&mut q).unwrap();
    q.publish(m(5));
    assert!(labels_of_dead(&mut q).is_empty());
    settle(&mut q, e, Outcome::Requeue);
    assert_eq!(q.message_count(), 3, "a requeue is never refused");
}

#[test]
fn a_byte_limit_counts_body_octets() {
    let mut q = queue(Limits {
        max_length_bytes: Some(25),
        ..Limits::default()
    });
    q.publish(m(1));
    q.publish(m(2));
    q.publish(m(3));
    assert_eq!(q.stats().ready_bytes, 20);
    assert_eq!(labels_of_dead(&mut q), [(1, DeathReason::MaxLen)]);
    // A body larger than the limit empties the queue and goes too.
    q.publish(M { len: 30, ..m(4) });
    assert_eq!(q.message_count(), 0);
    assert_eq!(
        labels_of_dead(&mut q),
        [
            (2, DeathReason::MaxLen),
            (3, DeathReason::MaxLen),
            (4, DeathReason::MaxLen)
        ]
    );
}

#[test]
fn reject_publish_refuses_the_new_message_and_the_dlx_mode_says_to_dead_letter_it() {
    for (overflow, dlx) in [
        (Overflow::RejectPublish, false),
        (Overflow::RejectPublishDlx, true),
    ] {
        let mut q = queue(Limits {
            max_length: Some(1),
            overflow,
            ..Limits::default()
        });
        assert_eq!(q.publish(m(1)), Pushed::Queued(0));
        assert_eq!(
            q.publish(m(2)),
            Pushed::Rejected {
                message: m(2),
                dead_letter: dlx
            }
        );
        assert_eq!(q.message_count(), 1);
        assert!(labels_of_dead(&mut q).is_empty());
    }
    // x-max-length 0 refuses everything (drop-head: each one dies at once).
    let mut q = queue(Limits {
        max_length: Some(0),
        ..Limits::default()
    });
    q.publish(m(1));
    assert_eq!(labels_of_dead(&mut q), [(1, DeathReason::MaxLen)]);
}

#[test]
fn higher_priorities_first_fifo_within_and_capped_at_the_maximum() {
    let mut q = queue(Limits {
        max_priority: Some(5),
        ..Limits::default()
    });
    for (label, priority) in [(1, 0), (2, 5), (3, 9), (4, 2), (5, 5), (6, 0)] {
        q.publish(M {
            priority,
            ..m(label)
        });
    }
    let order: Vec<u32> = std::iter::from_fn(|| get(&mut q))
        .map(|e| e.message.label)
        .collect();
    // 9 counts as 5 and queues after the earlier 5.
    assert_eq!(order, [2, 3, 5, 4, 1, 6]);
}

#[test]
fn a_requeued_message_goes_back_to_its_place_in_its_priority() {
    let mut q = queue(Limits {
        max_priority: Some(3),
        ..Limits::default()
    });
    q.publish(M {
        priority: 1,
        ..m(1)
    });
    q.publish(M {
        priority: 1,
        ..m(2)
    });
    q.publish(M {
        priority: 3,
        ..m(3)
    });
    let a = get(&mut q).unwrap(); // 3
    let b = get(&mut q).unwrap(); // 1
    settle(&mut q, b, Outcome::Requeue);
    settle(&mut q, a, Outcome::Requeue);
    let order: Vec<(u32, bool)> = std::iter::from_fn(|| get(&mut q))
        .map(|e| (e.message.label, e.redelivered()))
        .collect();
    assert_eq!(order, [(3, true), (1, true), (2, false)]);
}

#[test]
fn rejected_and_over_the_delivery_limit_leave_as_dead() {
    let mut q = queue(Limits {
        delivery_limit: Some(2),
        ..Limits::default()
    });
    q.publish(m(1));
    q.publish(m(2));
    let e = get(&mut q).unwrap();
    settle(&mut q, e, Outcome::Discard);
    assert_eq!(labels_of_dead(&mut q), [(1, DeathReason::Rejected)]);
    // Delivered three times, returned three times: the third return is past the limit.
    for round in 1..=3 {
        let e = get(&mut q).unwrap();
        assert_eq!(e.delivery_count, round - 1);
        settle(&mut q, e, Outcome::Requeue);
    }
    assert_eq!(labels_of_dead(&mut q), [(2, DeathReason::DeliveryLimit)]);
    assert!(q.is_empty());
}

// ---- model test ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Publish {
        priority: u8,
        ttl: Option<u64>,
    },
    Get,
    Settle {
        pick: usize,
        outcome: u8,
    },
    Advance(u64),
    /// A policy changed the length limit and the message TTL.
    Relimit {
        max_length: Option<u64>,
        message_ttl: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, prop::option::of(0u64..50)).prop_map(|(priority, ttl)| Op::Publish { priority, ttl }),
        3 => Just(Op::Get),
        3 => (any::<usize>(), 0u8..3).prop_map(|(pick, outcome)| Op::Settle { pick, outcome }),
        2 => (0u64..30).prop_map(Op::Advance),
        1 => (prop::option::of(0u64..6), prop::option::of(0u64..40))
            .prop_map(|(max_length, message_ttl)| Op::Relimit { max_length, message_ttl }),
    ]
}

/// The naive reference: ready messages in a map by offset, searched in full every time.
#[derive(Debug, Default)]
struct Reference {
    now: u64,
    /// offset → (priority level, expires at, times returned, length)
    ready: BTreeMap<u64, (u8, Option<u64>, u32)>,
    next: u64,
    dead: Vec<(u64, DeathReason)>,
}

impl Reference {
    fn level(&self, p: u8, max: Option<u8>) -> u8 {
        max.map_or(0, |m| p.min(m))
    }

    /// Next in delivery order: highest level, then lowest offset.
    fn next_offset(&self) -> Option<u64> {
        self.ready
            .iter()
            .max_by_key(|(o, (p, _, _))| (*p, std::cmp::Reverse(**o)))
            .map(|(o, _)| *o)
    }

    fn expire(&mut self) {
        let mut gone: Vec<(u64, u64)> = self
            .ready
            .iter()
            .filter_map(|(o, (_, at, _))| at.filter(|at| *at < self.now).map(|at| (at, *o)))
            .collect();
        gone.sort();
        for (_, o) in gone {
            self.ready.remove(&o);
            self.dead.push((o, DeathReason::Expired));
        }
    }
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// Publishes (with priorities and TTLs), gets, acks, rejects, requeues, clock advances and
    /// policy changes under random limits: the queue and a naive reference agree on what is delivered, in
    /// which order, and on what dies, when and why.
    #[test]
    fn the_queue_agrees_with_a_naive_reference(
        ops in prop::collection::vec(op(), 1..200),
        max_length in prop::option::of(0u64..6),
        max_priority in prop::option::of(0u8..4),
        message_ttl in prop::option::of(0u64..40),
        delivery_limit in prop::option::of(0u32..3),
    ) {
        let (mut max_length, mut message_ttl) = (max_length, message_ttl);
        let limits = Limits { message_ttl, max_length, max_priority, delivery_limit, ..Limits::default() };
        let mut q = queue(limits);
        let mut r = Reference::default();
        let mut out: Vec<Entry<M>> = Vec::new();
        let mut got_dead: Vec<(u64, DeathReason)> = Vec::new();
        for op in ops {
            match op {
                Op::Publish { priority, ttl } => {
                    let offset = r.next;
                    if max_length.is_some_and(|m| r.ready.len() as u64 >= m) {
                        while !r.ready.is_empty() && max_length.is_some_and(|m| r.ready.len() as u64 >= m) {
                            let o = r.next_offset().unwrap();
                            r.ready.remove(&o);
                            r.dead.push((o, DeathReason::MaxLen));
                        }
                    }
                    let ttl_eff = match (message_ttl, ttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    r.next += 1;
                    if max_length == Some(0) {
                        r.dead.push((offset, DeathReason::MaxLen));
                    } else {
                        let level = r.level(priority, max_priority);
                        r.ready.insert(offset, (level, ttl_eff.map(|t| r.now + t), 0));
                    }
                    let pushed = q.publish(M { label: offset as u32, priority, ttl, len: 1 });
                    prop_assert_eq!(pushed.offset(), Some(offset));
                }
                Op::Get => {
                    // Expired ones met on the way die first.
                    let expected = loop {
                        match r.next_offset() {
                            None => break None,
                            Some(o) => {
                                let (_, at, returned) = r.ready[&o];
                                if at.is_some_and(|at| at < r.now) {
                                    r.ready.remove(&o);
                                    r.dead.push((o, DeathReason::Expired));
                                    continue;
                                }
                                r.ready.remove(&o);
                                break Some((o, returned));
                            }
                        }
                    };
                    let got = get(&mut q);
                    prop_assert_eq!(got.as_ref().map(|e| (e.offset, e.delivery_count)), expected);
                    out.extend(got);
                }
                Op::Settle { pick, outcome } => {
                    if out.is_empty() {
                        continue;
                    }
                    let e = out.remove(pick % out.len());
                    let outcome = [Outcome::Ack, Outcome::Discard, Outcome::Requeue][outcome as usize];
                    match outcome {
                        Outcome::Ack => {}
                        Outcome::Discard => r.dead.push((e.offset, DeathReason::Rejected)),
                        Outcome::Requeue => {
                            let returned = e.delivery_count + 1;
                            if delivery_limit.is_some_and(|l| returned > l) {
                                r.dead.push((e.offset, DeathReason::DeliveryLimit));
                            } else {
                                let level = r.level(e.message.priority, max_priority);
                                r.ready.insert(e.offset, (level, e.expires_at, returned));
                            }
                        }
                    }
                    settle(&mut q, e, outcome);
                }
                Op::Advance(dt) => {
                    r.now += dt;
                    r.expire();
                    q.advance(r.now);
                }
                Op::Relimit { max_length: ml, message_ttl: ttl } => {
                    (max_length, message_ttl) = (ml, ttl);
                    // Over the new limit: the oldest go at once; queued ones keep their expiry.
                    while max_length.is_some_and(|m| r.ready.len() as u64 > m) {
                        let o = r.next_offset().unwrap();
                        r.ready.remove(&o);
                        r.dead.push((o, DeathReason::MaxLen));
                    }
                    q.set_limits(Limits { message_ttl, max_length, max_priority, delivery_limit, ..Limits::default() });
                }
            }
            got_dead.extend(q.take_dead().into_iter().map(|d| (d.entry.offset, d.reason)));
            prop_assert_eq!(&got_dead, &r.dead);
            prop_assert_eq!(q.message_count(), r.ready.len() as u64);
        }
    }
}

/// A message that comes back after a restart, having waited already.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Aged {
    label: u32,
    age: u64,
}

impl Payload for Aged {
    fn body_len(&self) -> usize {
        1
    }
    fn age(&self) -> u64 {
        self.age
    }
}

#[test]
fn a_recovered_message_keeps_the_time_it_waited() {
    let mut q: Queue<Aged, Anyone> = Queue::new(QueueConfig {
        limits: Limits {
            message_ttl: Some(50),
            ..Limits::default()
        },
        ..QueueConfig::default()
    });
    q.advance(1000);
    q.publish_recovered(Aged { label: 1, age: 30 });
    q.publish_recovered(Aged { label: 2, age: 80 });
    q.publish(Aged { label: 3, age: 0 });
    // Waited longer than its TTL: gone at once; the other has 20 ms left, the new one 50.
    assert_eq!(q.next_expiry(), Some(970));
    q.advance(1001);
    let dead: Vec<u32> = q
        .take_dead()
        .iter()
        .map(|d| d.entry.message.label)
        .collect();
    assert_eq!(dead, [2]);
    assert_eq!(q.next_expiry(), Some(1020));
    q.advance(1021);
    let dead: Vec<u32> = q
        .take_dead()
        .iter()
        .map(|d| d.entry.message.label)
        .collect();
    assert_eq!(dead, [1]);
    assert_eq!(q.next_expiry(), Some(1050));
}

#[test]
fn a_lower_length_limit_set_later_drops_the_oldest_at_once() {
    let mut q = queue(Limits::default());
    for i in 0..5 {
        q.publish(m(i));
    }
    q.set_limits(Limits {
        max_length: Some(2),
        ..Limits::default()
    });
    let dead: Vec<(u32, DeathReason)> = q
        .take_dead()
        .iter()
        .map(|d| (d.entry.message.label, d.reason))
        .collect();
    assert_eq!(
        dead,
        [
            (0, DeathReason::MaxLen),
            (1, DeathReason::MaxLen),
            (2, DeathReason::MaxLen)
        ]
    );
    assert_eq!(q.message_count(), 2);
    // With reject-publish nothing already queued goes; new publishes are refused.
    let mut q = queue(Limits::default());
    for i in 0..5 {
        q.publish(m(i));
    }
    q.set_limits(Limits {
        max_length: Some(2),
        overflow: Overflow::RejectPublish,
        ..Limits::default()
    });
    assert!(!q.has_dead());
    assert_eq!(q.message_count(), 5);
    assert!(matches!(q.publish(m(9)), Pushed::Rejected { .. }));
    // A TTL set later reaches only later messages.
    let mut q = queue(Limits::default());
    q.publish(m(1));
    q.set_limits(Limits {
        message_ttl: Some(10),
        ..Limits::default()
    });
    q.publish(m(2));
    q.advance(100);
    let dead: Vec<u32> = q
        .take_dead()
        .iter()
        .map(|d| d.entry.message.label)
        .collect();
    assert_eq!(dead, [2]);
    assert_eq!(q.message_count(), 1);
}
