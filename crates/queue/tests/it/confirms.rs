//! Publisher confirms: sequence numbers from 1, replies in order, runs of the same kind folded
//! into one `multiple` reply.

use warren_queue::channel::{ConfirmReply, Confirms};

fn ack(tag: u64, multiple: bool) -> ConfirmReply {
    ConfirmReply {
        tag,
        multiple,
        ack: true,
    }
}

fn nack(tag: u64, multiple: bool) -> ConfirmReply {
    ConfirmReply {
        tag,
        multiple,
        ack: false,
    }
}

fn poll_all(c: &mut Confirms) -> Vec<ConfirmReply> {
    std::iter::from_fn(|| c.poll()).collect()
}

#[test]
fn numbers_start_at_one() {
    let mut c = Confirms::default();
    assert_eq!(c.outstanding(), 0);
    assert_eq!(c.poll(), None);
    assert_eq!((c.publish(), c.publish(), c.publish()), (1, 2, 3));
    assert_eq!(c.outstanding(), 3);
}

#[test]
fn a_single_settled_publish_gets_a_single_reply() {
    let mut c = Confirms::default();
    c.publish();
    assert_eq!(c.poll(), None, "pending");
    c.settle(1, true);
    assert_eq!(poll_all(&mut c), [ack(1, false)]);
    assert_eq!(c.outstanding(), 0);
    assert_eq!(c.publish(), 2, "numbers continue");
    c.settle(2, false);
    assert_eq!(poll_all(&mut c), [nack(2, false)]);
}

#[test]
fn a_pending_front_holds_back_later_replies_which_then_fold() {
    let mut c = Confirms::default();
    for _ in 0..4 {
        c.publish();
    }
    c.settle(2, true);
    c.settle(3, true);
    assert_eq!(c.poll(), None);
    assert_eq!(c.outstanding(), 4);
    c.settle(1, true);
    assert_eq!(poll_all(&mut c), [ack(3, true)]);
    assert_eq!(c.outstanding(), 1);
    c.settle(4, false);
    assert_eq!(poll_all(&mut c), [nack(4, false)]);
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn runs_of_each_kind_fold_separately() {
    let mut c = Confirms::default();
    for _ in 0..7 {
        c.publish();
    }
    for (seq, ok) in [
        (1, true),
        (2, true),
        (3, false),
        (4, false),
        (5, true),
        (6, false),
    ] {
        c.settle(seq, ok);
    }
    assert_eq!(
        poll_all(&mut c),
        [ack(2, true), nack(4, true), ack(5, false), nack(6, false)]
    );
    assert_eq!(c.outstanding(), 1);
    c.settle(7, true);
    assert_eq!(poll_all(&mut c), [ack(7, false)]);
}

#[test]
fn poll_gives_one_reply_at_a_time() {
    let mut c = Confirms::default();
    for _ in 0..3 {
        c.publish();
    }
    c.settle(1, true);
    c.settle(2, false);
    c.settle(3, true);
    assert_eq!(c.poll(), Some(ack(1, false)));
    assert_eq!(c.outstanding(), 2);
    assert_eq!(c.poll(), Some(nack(2, false)));
    assert_eq!(c.poll(), Some(ack(3, false)));
    assert_eq!(c.poll(), None);
}

#[test]
fn unknown_and_repeated_settlements_are_ignored() {
    let mut c = Confirms::default();
    c.publish();
    c.publish();
    c.settle(0, true);
    c.settle(3, true);
    c.settle(u64::MAX, false);
    assert_eq!(c.poll(), None);
    c.settle(1, false);
    c.settle(1, true); // the first settlement stands
    assert_eq!(poll_all(&mut c), [nack(1, false)]);
    c.settle(1, true); // already answered
    assert_eq!(c.poll(), None);
    assert_eq!(c.outstanding(), 1);
    c.settle(2, true);
    assert_eq!(poll_all(&mut c), [ack(2, false)]);
}

#[test]
fn a_long_run_folds_into_one_reply() {
    let mut c = Confirms::default();
    for i in 1..=10_000 {
        assert_eq!(c.publish(), i);
    }
    for i in (1..=10_000).rev() {
        c.settle(i, true);
    }
    assert_eq!(poll_all(&mut c), [ack(10_000, true)]);
    assert_eq!(c.publish(), 10_001);
}
