//! Settlements handed back to the queue: ack and discard drop, requeue goes back to the
//! original position marked redelivered (RabbitMQ's classic queues requeue by position, not at
//! the tail), and a late settlement for a cancelled consumer never touches the consumer that
//! took its slot.

use crate::common::*;
use warren_queue::{Outcome, QueueStats};

/// Takes everything left with `basic.get` (no ack): (label, redelivered, count left).
fn get_all(q: &mut Q) -> Vec<(&'static str, bool, u64)> {
    std::iter::from_fn(|| q.get(true))
        .map(|(e, left)| (e.message.0, e.redelivered(), left))
        .collect()
}

#[test]
fn requeued_messages_go_back_to_their_original_position() {
    let mut q = queue();
    let c = consumer(&mut q, 3);
    publish_all(&mut q, &["a", "b", "c", "d", "e"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b", "c"]);
    let [da, db, dc]: [_; 3] = d.try_into().unwrap();
    // Requeued out of order: they still come back in offset order, before d and e.
    settle_all(&mut q, [dc], Outcome::Requeue);
    settle_all(&mut q, [da], Outcome::Requeue);
    settle_all(&mut q, [db], Outcome::Ack);
    q.remove_consumer(c).unwrap();
    assert_eq!(q.stats().unacked, 0);
    assert_eq!(
        get_all(&mut q),
        [
            ("a", true, 3),
            ("c", true, 2),
            ("d", false, 1),
            ("e", false, 0)
        ]
    );
}

#[test]
fn requeue_restores_counts_and_bytes() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "bb", "ccc"]);
    let d = deliver(&mut q);
    assert_eq!(q.stats().ready_bytes, 0);
    settle_all(&mut q, d, Outcome::Requeue);
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 3,
            ready_bytes: 6,
            unacked: 0,
            consumers: 1
        }
    );
    assert_eq!(q.consumer(c).unwrap().unacked(), 0);
}

#[test]
fn every_requeue_counts_a_delivery() {
    let mut q = queue();
    let c = consumer(&mut q, 1);
    publish_all(&mut q, &["a", "b"]);
    for round in 0..3u32 {
        let d = deliver(&mut q);
        assert_eq!(labels(&d), ["a"]);
        assert_eq!(d[0].1.delivery_count, round);
        assert_eq!(d[0].1.redelivered(), round > 0);
        assert_eq!(d[0].0, c);
        settle_all(&mut q, d, Outcome::Requeue);
    }
    let d = deliver(&mut q);
    assert_eq!(d[0].1.delivery_count, 3);
    settle_all(&mut q, d, Outcome::Ack);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["b"]);
    assert!(!d[0].1.redelivered());
}

#[test]
fn ack_and_discard_drop_the_message() {
    let mut q = queue();
    let c = consumer(&mut q, 0);
    publish_all(&mut q, &["a", "b", "c"]);
    let mut d = deliver(&mut q).into_iter();
    settle_all(&mut q, d.next(), Outcome::Ack);
    settle_all(&mut q, d.next(), Outcome::Discard);
    assert_eq!(
        q.stats(),
        QueueStats {
            ready: 0,
            ready_bytes: 0,
            unacked: 1,
            consumers: 1
        }
    );
    assert_eq!(q.consumer(c).unwrap().unacked(), 1);
    settle_all(&mut q, d, Outcome::Requeue);
    assert_eq!(get_all(&mut q), [("c", true, 0)]);
}

#[test]
fn a_batch_of_settlements_frees_credit_and_requeues_in_order() {
    let mut q = queue();
    let c1 = consumer(&mut q, 2);
    let c2 = consumer(&mut q, 2);
    publish_all(&mut q, &["a", "b", "c", "d", "e", "f"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b", "c", "d"]);
    // basic.recover / channel close: everything back, in one batch, tag order.
    settle_all(&mut q, d, Outcome::Requeue);
    assert_eq!(q.consumer(c1).unwrap().unacked(), 0);
    assert_eq!(q.consumer(c2).unwrap().unacked(), 0);
    let d = deliver(&mut q);
    let got: Vec<_> = d
        .iter()
        .map(|(c, e)| (*c, e.message.0, e.redelivered()))
        .collect();
    // Rotation order after the settlements: both were parked at their prefetch and came back
    // in the order their credit was freed (c1 by a's settlement, c2 by b's).
    assert_eq!(
        got,
        [
            (c1, "a", true),
            (c2, "b", true),
            (c1, "c", true),
            (c2, "d", true)
        ]
    );
}

#[test]
fn a_settlement_only_frees_its_own_consumer() {
    let mut q = queue();
    let c1 = consumer(&mut q, 1);
    let c2 = consumer(&mut q, 1);
    publish_all(&mut q, &["a", "b", "c", "d"]);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a", "b"]);
    let [a, _b]: [_; 2] = d.try_into().unwrap();
    assert_eq!(a.0, c1);
    settle_all(&mut q, [a], Outcome::Ack);
    assert_eq!(q.consumer(c1).unwrap().unacked(), 0);
    assert_eq!(q.consumer(c2).unwrap().unacked(), 1);
    let d = deliver(&mut q);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].0, d[0].1.message.0), (c1, "c"));
}

#[test]
fn a_late_settlement_never_touches_the_consumer_that_reused_the_slot() {
    let mut q = queue();
    let old = consumer(&mut q, 1);
    publish_all(&mut q, &["a", "b", "c", "d"]);
    let old_d = deliver(&mut q);
    assert_eq!(labels(&old_d), ["a"]);
    q.remove_consumer(old).unwrap();
    let new = consumer(&mut q, 1);
    assert_ne!(new, old, "a reused slot gets a new generation");
    assert!(q.consumer(old).is_none());
    let new_d = deliver(&mut q);
    assert_eq!(labels(&new_d), ["b"]);
    assert_eq!(new_d[0].0, new);
    assert_eq!(q.consumer(new).unwrap().unacked(), 1);

    // The old consumer's delivery is settled late (its channel acks or requeues it).
    settle_all(&mut q, old_d, Outcome::Requeue);
    assert_eq!(
        q.consumer(new).unwrap().unacked(),
        1,
        "the new consumer's count is untouched"
    );
    assert_eq!(q.stats().unacked, 1);
    // ...so the new consumer is still at its prefetch.
    assert!(deliver(&mut q).is_empty());
    assert_eq!(q.message_count(), 3);
    settle_all(&mut q, new_d, Outcome::Ack);
    let d = deliver(&mut q);
    assert_eq!(labels(&d), ["a"]);
    assert!(d[0].1.redelivered());
}

#[test]
fn many_slot_reuses_keep_ids_unique() {
    let mut q = queue();
    let mut seen = std::collections::BTreeSet::new();
    let keep = consumer(&mut q, 0);
    seen.insert(keep);
    for _ in 0..100 {
        let c = consumer(&mut q, 0);
        assert!(seen.insert(c), "ids are never reused");
        q.remove_consumer(c).unwrap();
    }
    assert_eq!(q.consumer_count(), 1);
    assert_eq!(q.consumers().map(|c| c.id()).collect::<Vec<_>>(), [keep]);
}

#[test]
fn settling_a_get_requeues_it_in_place() {
    let mut q = queue();
    publish_all(&mut q, &["a", "b", "c"]);
    let (b_first, _) = q.get(false).unwrap();
    let (b_second, left) = q.get(false).unwrap();
    assert_eq!((b_first.message.0, b_second.message.0, left), ("a", "b", 1));
    q.settle([settlement(None, b_second, Outcome::Requeue)]);
    q.settle([settlement(None, b_first, Outcome::Discard)]);
    assert_eq!(q.stats().unacked, 0);
    assert_eq!(get_all(&mut q), [("b", true, 1), ("c", false, 0)]);
}

#[test]
fn an_undelivered_message_returns_unmarked_and_frees_only_what_it_took() {
    let mut q = queue();
    let c = consumer(&mut q, 1);
    let n = q
        .add_consumer(spec(0, true, Rcpt::open()))
        .expect("no-ack consumer");
    publish_all(&mut q, &["a", "b", "c"]);
    let d = deliver(&mut q);
    // c (prefetch 1) takes "a", the no-ack consumer "b" and "c".
    assert_eq!(labels(&d), ["a", "b", "c"]);
    assert_eq!(q.stats().unacked, 1);
    let [(ca, ea), (cb, eb), _]: [_; 3] = d.try_into().unwrap();
    assert_eq!((ca, cb), (c, n));
    // Neither reached its client: back in place, not redelivered; only "a" held credit.
    q.return_undelivered(cb, eb, false);
    q.return_undelivered(ca, ea, true);
    assert_eq!(q.stats().unacked, 0);
    q.remove_consumer(n).unwrap();
    let again = deliver(&mut q);
    assert_eq!(labels(&again), ["a"]);
    assert!(!again[0].1.redelivered());
    assert_eq!(get_all(&mut q), [("b", false, 0)]);
}
