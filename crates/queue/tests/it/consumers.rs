//! Delivery to consumers (RabbitMQ's `rabbit_queue_consumers`): FIFO order, round-robin,
//! per-consumer prefetch, refusal by the recipient until `resume`, `no_ack` consumers,
//! exclusive consumers, auto-delete, and `basic.get`.

use crate::common::*;
use std::sync::Arc;
use warren_queue::channel::ChannelCredit;
use warren_queue::{ConsumeError, ConsumerSpec, Outcome, QueueStats, Recipient};

#[test]
fn publish_numbers_offsets_and_counts_ready_bytes() {
    let mut q = queue();
    assert!(q.is_empty());
    assert_eq!(q.publish(Msg("a")).offset(), Some(0));
    assert_eq!(q.publish(Msg("bb")).offset(), Some(1));
    assert_eq!(q.publish(Msg("ccc")).offset(), Some(2));
    assert!(!q.is_empty());
    assert_eq!(q.message_count(), 3);
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 3,
            ready_bytes: 6,
            unacked: 0,
            consumers: 0
        }
    );
}

#[test]
fn deliver_without_consumers_delivers_nothing() {
    let mut q = queue();
    publish_all(&mut q, &["a", "b"]);
    assert!(deliver(&mut q).is_empty());
    assert_eq!(q.message_count(), 2);
}

#[test]
fn one_consumer_gets_everything_in_fifo_order() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b", "c"]);
    assert!(d.iter().all(|(id, _)| *id == c));
    assert_eq!(
        d.iter().map(|(_, e)| e.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(
        d.iter()
            .all(|(_, e)| !e.redelivered() && e.delivery_count == 0)
    );
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 0,
            ready_bytes: 0,
            unacked: 3,
            consumers: 1
        }
    );
    assert_eq!(q.consumer(c).map(|c| c.unacked()), Some(3));
}

#[test]
fn consumers_are_served_round_robin() {
    let mut q = queue();
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    let c3 = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c", "d", "e", "f", "g"]);
    let d = deliver(&mut q);
    let got: Vec<_> = d.iter().map(|(c, e)| (*c, e.message.0)).collect();
    assert_eq!(
        got,
        [
            (c1, "a"),
            (c2, "b"),
            (c3, "c"),
            (c1, "d"),
            (c2, "e"),
            (c3, "f"),
            (c1, "g")
        ]
    );
    // The rotation carries over to the next batch: c2 is next.
    publish_all(&mut q, &["h"]);
    let d = deliver(&mut q);
    assert_eq!(d.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [c2]);
}

#[test]
fn a_new_consumer_joins_the_end_of_the_rotation() {
    let mut q = queue();
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    publish_all(&mut q, &["a"]);
    assert_eq!(deliver(&mut q)[0].0, c1);
    // Rotation now: c2, c1 (served last). c3 joins behind them.
    let c3 = consumer(&mut q, 0);
    publish_all(&mut q, &["b", "c", "d", "e"]);
    let order: Vec<_> = deliver(&mut q).iter().map(|(c, _)| *c).collect();
    assert_eq!(order, [c2, c1, c3, c2]);
}

#[test]
fn prefetch_stops_a_consumer_until_it_settles() {
    let mut q = queue();
    let r = Rcpt::open();
    let c = q.add_consumer(spec(2, false, r.clone())).unwrap();
    publish_all(&mut q, &["a", "b", "c", "d", "e"]);
    let first = deliver(&mut q);
    assert_eq!(labels(&first), ["a", "b"]);
    assert_eq!(q.consumer(c).unwrap().unacked(), 2);
    assert_eq!(q.message_count(), 3);
    // The own prefetch is checked before the recipient is asked: no credit is taken for a
    // delivery that cannot happen.
    assert_eq!(r.calls(), [(true, true), (true, true)]);
    // Nothing more until a settlement.
    assert!(deliver(&mut q).is_empty());
    assert_eq!(r.calls().len(), 2);

    let mut first = first.into_iter();
    settle_all(&mut q, first.next(), Outcome::Ack);
    assert_eq!(q.consumer(c).unwrap().unacked(), 1);
    assert_eq!(labels(&deliver(&mut q)), ["c"]);
    assert!(deliver(&mut q).is_empty());
    assert_eq!(q.stats().unacked, 2);
}

#[test]
fn a_consumer_at_its_prefetch_is_skipped_and_the_others_served() {
    let mut q = queue();
    let c1 = consumer(&mut q, 1);
    let c2 = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c", "d"]);
    let d = deliver(&mut q);
    let got: Vec<_> = d.iter().map(|(c, e)| (*c, e.message.0)).collect();
    assert_eq!(got, [(c1, "a"), (c2, "b"), (c2, "c"), (c2, "d")]);
    // c1 settles: it is back in the rotation, behind c2.
    let a = d.into_iter().next().unwrap();
    settle_all(&mut q, [a], Outcome::Ack);
    publish_all(&mut q, &["e", "f", "g"]);
    let got: Vec<_> = deliver(&mut q)
        .iter()
        .map(|(c, e)| (*c, e.message.0))
        .collect();
    assert_eq!(got, [(c2, "e"), (c1, "f"), (c2, "g")]);
}

#[test]
fn prefetch_zero_means_no_limit() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    for _ in 0..1000 {
        q.publish(Msg("x"));
    }
    assert_eq!(deliver(&mut q).len(), 1000);
    assert_eq!(q.consumer(c).unwrap().unacked(), 1000);
}

#[test]
fn a_refusing_recipient_leaves_the_rotation_until_resumed() {
    let mut q = queue();
    let r1 = Rcpt::with_credit(0);
    let c1 = q.add_consumer(spec(0, false, r1.clone())).unwrap();
    let c2 = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c"]);
    let d = deliver(&mut q);
    assert!(d.iter().all(|(c, _)| *c == c2));
    assert_eq!(labels(&d), ["a", "b", "c"]);
    // c1 was asked once, refused, and not asked again.
    assert_eq!(r1.calls(), [(true, false)]);
    publish_all(&mut q, &["d"]);
    assert_eq!(deliver(&mut q)[0].0, c2);
    assert_eq!(r1.calls().len(), 1);

    // Credit comes back: the owner resumes the consumer, which rejoins behind c2.
    r1.set_credit(None);
    q.resume(c1);
    publish_all(&mut q, &["e", "f", "g"]);
    let order: Vec<_> = deliver(&mut q).iter().map(|(c, _)| *c).collect();
    assert_eq!(order, [c2, c1, c2]);
}

#[test]
fn when_every_recipient_refuses_messages_stay_ready() {
    let mut q = queue();
    let r = Rcpt::with_credit(1);
    let c = q.add_consumer(spec(0, false, r.clone())).unwrap();
    publish_all(&mut q, &["a", "b", "c"]);
    assert_eq!(labels(&deliver(&mut q)), ["a"]);
    assert_eq!(q.message_count(), 2);
    assert_eq!(q.stats().ready_bytes, 2);
    // Out of the rotation: resume without credit asks once more and stops again.
    q.resume(c);
    assert!(deliver(&mut q).is_empty());
    assert_eq!(r.calls(), [(true, true), (true, false), (true, false)]);
    r.set_credit(None);
    q.resume(c);
    assert_eq!(labels(&deliver(&mut q)), ["b", "c"]);
}

#[test]
fn resuming_an_active_consumer_does_not_serve_it_twice_per_turn() {
    let mut q = queue();
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    q.resume(c1);
    q.resume(c1);
    q.resume(c2);
    publish_all(&mut q, &["a", "b", "c", "d"]);
    let order: Vec<_> = deliver(&mut q).iter().map(|(c, _)| *c).collect();
    assert_eq!(order, [c1, c2, c1, c2]);
}

#[test]
fn resume_of_an_unknown_consumer_is_ignored() {
    let mut q = queue();
    let gone = consumer(&mut q, 0);
    q.remove_consumer(gone).unwrap();
    let c = consumer(&mut q, 0);
    q.resume(gone);
    publish_all(&mut q, &["a", "b"]);
    let order: Vec<_> = deliver(&mut q).iter().map(|(c, _)| *c).collect();
    assert_eq!(order, [c, c]);
}

#[test]
fn no_ack_consumers_ignore_prefetch_and_ask_without_ack_required() {
    let mut q = queue();
    let r = Rcpt::open();
    let c = q.add_consumer(spec(1, true, r.clone())).unwrap();
    publish_all(&mut q, &["a", "b", "c"]);
    assert_eq!(labels(&deliver(&mut q)), ["a", "b", "c"]);
    assert_eq!(r.calls(), [(false, true); 3]);
    assert_eq!(q.consumer(c).unwrap().unacked(), 0);
    assert!(q.consumer(c).unwrap().no_ack());
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 0,
            ready_bytes: 0,
            unacked: 0,
            consumers: 1
        }
    );
}

#[test]
fn a_refusing_no_ack_recipient_leaves_the_rotation_too() {
    let mut q = queue();
    let r = Rcpt::with_credit(1);
    let c = q.add_consumer(spec(0, true, r.clone())).unwrap();
    publish_all(&mut q, &["a", "b"]);
    assert_eq!(labels(&deliver(&mut q)), ["a"]);
    assert!(deliver(&mut q).is_empty());
    assert_eq!(r.calls(), [(false, true), (false, false)]);
    r.set_credit(None);
    q.resume(c);
    assert_eq!(labels(&deliver(&mut q)), ["b"]);
}

#[test]
fn consumer_accessors_report_the_spec() {
    let mut q = queue();
    let r = Rcpt::open();
    let c = q
        .add_consumer(ConsumerSpec {
            no_ack: false,
            exclusive: true,
            prefetch: 7,
            recipient: r.clone(),
            priority: 0,
        })
        .unwrap();
    let cons = q.consumer(c).unwrap();
    assert_eq!(cons.id(), c);
    assert_eq!(cons.prefetch(), 7);
    assert!(cons.exclusive());
    assert!(!cons.no_ack());
    assert!(cons.recipient().same(&r));
    assert_eq!(q.consumers().map(|c| c.id()).collect::<Vec<_>>(), [c]);
    assert_eq!(q.consumer_count(), 1);
}

#[test]
fn a_removed_consumer_gets_nothing_more_and_gives_back_its_recipient() {
    let mut q = queue();
    let r1 = Rcpt::open();
    let c1 = q.add_consumer(spec(0, false, r1.clone())).unwrap();
    let c2 = consumer(&mut q, 0);
    let removed = q.remove_consumer(c1).expect("present");
    assert!(removed.recipient.same(&r1));
    assert!(!removed.auto_delete_now);
    assert!(
        q.remove_consumer(c1).is_none(),
        "a second removal finds nothing"
    );
    assert!(q.consumer(c1).is_none());
    assert_eq!(q.consumer_count(), 1);
    publish_all(&mut q, &["a", "b"]);
    let order: Vec<_> = deliver(&mut q).iter().map(|(c, _)| *c).collect();
    assert_eq!(order, [c2, c2]);
    assert!(r1.calls().is_empty());
}

#[test]
fn removing_a_consumer_out_of_the_rotation_works_too() {
    let mut q = queue();
    let c1 = consumer(&mut q, 1);
    publish_all(&mut q, &["a", "b"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a"]);
    // c1 is at its prefetch, out of the rotation.
    q.remove_consumer(c1).unwrap();
    // Its late settlement puts nothing back into the rotation.
    settle_all(&mut q, d, Outcome::Requeue);
    assert!(deliver(&mut q).is_empty());
    assert_eq!(q.message_count(), 2);
    assert_eq!(q.stats().unacked, 0);
    let c2 = consumer(&mut q, 0);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b"]);
    assert!(d[0].1.redelivered() && !d[1].1.redelivered());
    assert!(d.iter().all(|(c, _)| *c == c2));
}

// ---------------------------------------------------------------------------------------------
// basic.get

#[test]
fn get_on_an_empty_queue_is_none() {
    let mut q = queue();
    assert!(q.get(false).is_none());
    assert!(q.get(true).is_none());
    assert_eq!(q.stats(), QueueStats::default());
}

#[test]
fn get_returns_the_head_and_the_count_left() {
    let mut q = queue();
    publish_all(&mut q, &["a", "bb", "ccc"]);
    let (e, left) = q.get(false).unwrap();
    assert_eq!((e.message.0, e.offset, left), ("a", 0, 2));
    assert!(!e.redelivered());
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 2,
            ready_bytes: 5,
            unacked: 1,
            consumers: 0
        }
    );
    let (e, left) = q.get(true).unwrap();
    assert_eq!((e.message.0, left), ("bb", 1));
    assert_eq!(q.stats().unacked, 1, "no_ack get is not unacked");
    let (e, left) = q.get(false).unwrap();
    assert_eq!((e.message.0, left), ("ccc", 0));
    assert_eq!(q.stats().unacked, 2);
    assert!(q.get(false).is_none());
}

#[test]
fn get_does_not_disturb_the_rotation() {
    let mut q = queue();
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c", "d"]);
    assert_eq!(q.get(true).unwrap().0.message.0, "a");
    let got: Vec<_> = deliver(&mut q)
        .iter()
        .map(|(c, e)| (*c, e.message.0))
        .collect();
    assert_eq!(got, [(c1, "b"), (c2, "c"), (c1, "d")]);
}

#[test]
fn a_settled_get_frees_the_queue_unacked_count_only() {
    let mut q = queue();
    let c = consumer(&mut q, 1);
    publish_all(&mut q, &["a", "b", "c"]);
    let d = deliver(&mut q);
    let (e, _) = q.get(false).unwrap();
    assert_eq!(e.message.0, "b");
    assert_eq!(q.stats().unacked, 2);
    q.settle([settlement(None, e, Outcome::Ack)]);
    assert_eq!(q.stats().unacked, 1);
    assert_eq!(
        q.consumer(c).unwrap().unacked(),
        1,
        "the consumer's count is its own"
    );
    assert!(deliver(&mut q).is_empty());
    settle_all(&mut q, d, Outcome::Ack);
    assert_eq!(labels(&deliver(&mut q)), ["c"]);
}

// ---------------------------------------------------------------------------------------------
// queue.purge

#[test]
fn purge_drops_ready_messages_only() {
    let mut q = queue();
    let c = consumer(&mut q, 2);
    publish_all(&mut q, &["a", "b", "c", "dd", "e"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b"]);
    // A requeued message is ready again: purge drops it too.
    let mut d = d.into_iter();
    settle_all(&mut q, d.next(), Outcome::Requeue);
    assert_eq!(q.message_count(), 4);
    assert_eq!(q.purge(), 4);
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 0,
            ready_bytes: 0,
            unacked: 1,
            consumers: 1
        }
    );
    assert!(q.is_empty());
    assert_eq!(q.purge(), 0);
    // The delivery that stayed out can still come back.
    settle_all(&mut q, d, Outcome::Requeue);
    assert_eq!(q.message_count(), 1);
    assert_eq!(q.stats().ready_bytes, 1);
    let again = deliver(&mut q);
    assert_eq!(labels(&again), ["b"]);
    assert_eq!(again[0].0, c);
    assert!(again[0].1.redelivered());
    // New publishes come after it.
    q.publish(Msg("f"));
    assert_eq!(q.get(true).unwrap().0.offset, 5);
}

// ---------------------------------------------------------------------------------------------
// exclusive consumers

#[test]
fn an_exclusive_consumer_is_refused_when_any_consumer_exists() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    assert_eq!(
        q.add_consumer(exclusive(Rcpt::open())).unwrap_err(),
        ConsumeError::ExclusiveInUse
    );
    assert_eq!(q.consumer_count(), 1);
    q.remove_consumer(c).unwrap();
    assert!(q.add_consumer(exclusive(Rcpt::open())).is_ok());
}

#[test]
fn no_consumer_is_accepted_while_an_exclusive_one_exists() {
    let mut q = queue();
    let x = q.add_consumer(exclusive(Rcpt::open())).unwrap();
    let refused = Rcpt::open();
    assert_eq!(
        q.add_consumer(spec(0, false, refused.clone())).unwrap_err(),
        ConsumeError::ExclusiveInUse
    );
    assert_eq!(
        q.add_consumer(spec(0, true, refused.clone())).unwrap_err(),
        ConsumeError::ExclusiveInUse
    );
    assert_eq!(
        q.add_consumer(exclusive(refused.clone())).unwrap_err(),
        ConsumeError::ExclusiveInUse
    );
    assert_eq!(q.consumer_count(), 1);
    // A refused consumer never receives anything.
    publish_all(&mut q, &["a", "b"]);
    let d = deliver(&mut q);
    assert!(d.iter().all(|(c, _)| *c == x));
    assert!(refused.calls().is_empty());
    q.remove_consumer(x).unwrap();
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    assert_ne!(c1, c2);
}

// ---------------------------------------------------------------------------------------------
// auto-delete

#[test]
fn auto_delete_fires_when_the_last_consumer_goes() {
    let mut q = auto_delete_queue();
    assert!(q.config().auto_delete);
    let c1 = consumer(&mut q, 0);
    let c2 = consumer(&mut q, 0);
    assert!(!q.remove_consumer(c1).unwrap().auto_delete_now);
    assert!(q.remove_consumer(c2).unwrap().auto_delete_now);
}

#[test]
fn a_queue_without_auto_delete_never_asks_for_deletion() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    assert!(!q.remove_consumer(c).unwrap().auto_delete_now);
}

#[test]
fn a_refused_exclusive_consumer_does_not_count_as_having_had_a_consumer() {
    let mut q = auto_delete_queue();
    let c1 = consumer(&mut q, 0);
    assert!(q.add_consumer(exclusive(Rcpt::open())).is_err());
    assert!(q.remove_consumer(c1).unwrap().auto_delete_now);
}

#[test]
fn drain_consumers_takes_every_consumer() {
    let mut q = auto_delete_queue();
    let r1 = Rcpt::open();
    let r2 = Rcpt::open();
    let c1 = q.add_consumer(spec(0, false, r1.clone())).unwrap();
    let c2 = q.add_consumer(spec(0, false, r2.clone())).unwrap();
    let c3 = consumer(&mut q, 0);
    q.remove_consumer(c3).unwrap();
    publish_all(&mut q, &["a"]);
    let d = deliver(&mut q);
    let drained = q.drain_consumers();
    assert_eq!(drained.len(), 2);
    assert_eq!(drained[0].0, c1);
    assert!(drained[0].1.same(&r1));
    assert_eq!(drained[1].0, c2);
    assert!(drained[1].1.same(&r2));
    assert_eq!(q.consumer_count(), 0);
    assert_eq!(q.consumers().count(), 0);
    assert!(q.consumer(c1).is_none());
    // Unsettled deliveries are still counted and can be settled.
    assert_eq!(q.stats().unacked, 1);
    settle_all(&mut q, d, Outcome::Ack);
    assert_eq!(q.stats().unacked, 0);
    // The queue still works (and ids stay unique).
    let c4 = consumer(&mut q, 0);
    assert!(![c1, c2, c3].contains(&c4));
    publish_all(&mut q, &["b"]);
    assert_eq!(deliver(&mut q)[0].0, c4);
}

// ---------------------------------------------------------------------------------------------
// global qos: one ChannelCredit shared by consumers on two queues

#[derive(Debug, Clone)]
struct Channel(Arc<ChannelCredit>);

impl Recipient for Channel {
    fn try_reserve(&self, ack_required: bool) -> bool {
        !ack_required || self.0.try_acquire()
    }
}

#[test]
fn channel_credit_is_shared_by_the_channels_queues() {
    use warren_queue::{Queue, QueueConfig};
    let credit = Arc::new(ChannelCredit::new());
    assert!(!credit.set_limit(2));
    let mut q1: Queue<Msg, Channel> = Queue::new(QueueConfig::default());
    let mut q2: Queue<Msg, Channel> = Queue::new(QueueConfig::default());
    let ch = Channel(credit.clone());
    let spec = |no_ack| ConsumerSpec {
        no_ack,
        exclusive: false,
        prefetch: 0,
        recipient: ch.clone(),
        priority: 0,
    };
    let c1 = q1.add_consumer(spec(false)).unwrap();
    let c2 = q2.add_consumer(spec(false)).unwrap();
    let c3 = q2.add_consumer(spec(true)).unwrap();
    for l in ["a", "b", "c"] {
        q1.publish(Msg(l));
        q2.publish(Msg(l));
    }
    let mut out1 = Vec::new();
    assert_eq!(q1.deliver(|c, e| out1.push((c.id(), e))), 2);
    assert_eq!(credit.used(), 2);
    // q2: c2 is refused (credit exhausted); the no_ack c3 takes everything.
    let mut out2 = Vec::new();
    assert_eq!(q2.deliver(|c, e| out2.push((c.id(), e))), 3);
    assert!(out2.iter().all(|(c, _)| *c == c3));
    assert_eq!(credit.used(), 2);

    // The client acks one of q1's deliveries: credit is released, and the channel's consumers
    // are resumed.
    let (c, e) = out1.remove(0);
    assert_eq!(c, c1);
    q1.settle([warren_queue::Settlement {
        consumer: Some(c),
        entry: e,
        outcome: Outcome::Ack,
    }]);
    assert!(credit.release(1), "someone was refused");
    q2.resume(c2);
    // c2 rejoins the rotation behind c3.
    q2.publish(Msg("d"));
    q2.publish(Msg("e"));
    q2.publish(Msg("f"));
    let mut out2 = Vec::new();
    assert_eq!(q2.deliver(|c, e| out2.push((c.id(), e.message.0))), 3);
    assert_eq!(out2, [(c3, "d"), (c2, "e"), (c3, "f")]);
    assert_eq!(credit.used(), 2);
    assert!(!credit.release(0));
}

fn sac_queue() -> Q {
    warren_queue::Queue::new(warren_queue::QueueConfig {
        single_active_consumer: true,
        ..warren_queue::QueueConfig::default()
    })
}

fn with_priority(prefetch: u16, priority: i32) -> ConsumerSpec<Rcpt> {
    ConsumerSpec {
        priority,
        ..spec(prefetch, false, Rcpt::open())
    }
}

#[test]
fn a_single_active_consumer_queue_serves_one_and_the_next_takes_over() {
    let mut q = sac_queue();
    let first = q.add_consumer(with_priority(0, 0)).unwrap();
    let low = q.add_consumer(with_priority(0, 1)).unwrap();
    let high = q.add_consumer(with_priority(0, 5)).unwrap();
    let later_high = q.add_consumer(with_priority(0, 5)).unwrap();
    // The first registered is active; a higher-priority newcomer does not take over.
    publish_all(&mut q, &["a", "b", "c"]);
    let d = deliver(&mut q);
    assert!(d.iter().all(|(c, _)| *c == first), "{d:?}");
    assert!(q.consumer(first).unwrap().is_single_active());
    assert!(!q.consumer(high).unwrap().is_single_active());
    // When it goes: the highest priority, then the earliest registered.
    q.remove_consumer(first);
    publish_all(&mut q, &["d"]);
    assert_eq!(deliver(&mut q)[0].0, high);
    q.remove_consumer(high);
    publish_all(&mut q, &["e"]);
    assert_eq!(deliver(&mut q)[0].0, later_high);
    q.remove_consumer(later_high);
    publish_all(&mut q, &["f"]);
    assert_eq!(deliver(&mut q)[0].0, low);
    // An exclusive consumer is refused on such a queue, even alone.
    let mut q = sac_queue();
    assert_eq!(
        q.add_consumer(exclusive(Rcpt::open())).unwrap_err(),
        warren_queue::ConsumeError::ExclusiveInUse
    );
}

#[test]
fn higher_priority_consumers_are_served_first_while_they_have_credit() {
    let mut q = queue();
    let low = q.add_consumer(with_priority(0, 0)).unwrap();
    let high_a = q.add_consumer(with_priority(2, 10)).unwrap();
    let high_b = q.add_consumer(with_priority(1, 10)).unwrap();
    publish_all(&mut q, &["1", "2", "3", "4", "5"]);
    let d = deliver(&mut q);
    let who: Vec<warren_queue::ConsumerId> = d.iter().map(|(c, _)| *c).collect();
    // The two high ones take turns until their prefetch is used up; the low one gets the
    // rest.
    assert_eq!(who, [high_a, high_b, high_a, low, low]);
}
