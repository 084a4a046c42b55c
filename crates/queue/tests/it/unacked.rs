//! Delivery tags (`rabbit_channel`'s `next_tag` and `collect_acks`): tags from 1 shared by
//! tracked and untracked deliveries; single and `multiple` settlement; `multiple` with tag 0
//! settles everything; any other tag that is not outstanding is 406 PRECONDITION_FAILED
//! "unknown delivery tag N" and settles nothing.

use crate::common::Msg;
use warren_amqp_codec::{ReplyCode, Scope};
use warren_queue::Entry;
use warren_queue::channel::{Pending, Unacked, unknown_delivery_tag};

type U = Unacked<&'static str, Msg>;

fn pending(queue: &'static str, offset: u64) -> Pending<&'static str, Msg> {
    Pending {
        queue,
        consumer: None,
        entry: Entry {
            offset,
            delivery_count: 0,
            expires_at: None,
            message: Msg("m"),
        },
    }
}

/// Tracks `n` deliveries from queue "q", offsets 0.., returning their tags.
fn track_n(u: &mut U, n: u64) -> Vec<u64> {
    (0..n).map(|o| u.track(pending("q", o))).collect()
}

fn offsets(out: &[Pending<&'static str, Msg>]) -> Vec<u64> {
    out.iter().map(|p| p.entry.offset).collect()
}

fn assert_unknown(r: Result<(), warren_amqp_codec::AmqpException>, tag: u64) {
    let e = r.expect_err("unknown tag");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert_eq!(e.text, format!("unknown delivery tag {tag}"));
    assert_eq!(e.scope, Scope::Channel);
    assert_eq!(
        e.reply_text(),
        format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
    );
}

#[test]
fn tags_start_at_one_and_are_shared_by_tracked_and_untracked_deliveries() {
    let mut u = U::new();
    assert!(u.is_empty());
    assert_eq!(u.next_untracked(), 1);
    assert_eq!(u.track(pending("q", 0)), 2);
    assert_eq!(u.next_untracked(), 3);
    assert_eq!(u.track(pending("q", 1)), 4);
    assert_eq!(u.len(), 2);
    assert!(!u.is_empty());
    // An untracked (no_ack) tag is not outstanding.
    let mut out = Vec::new();
    assert_unknown(u.settle(3, false, &mut out), 3);
    assert_unknown(u.settle(1, true, &mut out), 1);
    assert!(out.is_empty());
    assert_eq!(u.len(), 2);
}

#[test]
fn a_single_ack_settles_exactly_its_tag_once() {
    let mut u = U::new();
    track_n(&mut u, 3);
    let mut out = Vec::new();
    u.settle(2, false, &mut out).unwrap();
    assert_eq!(offsets(&out), [1]);
    assert_eq!(u.len(), 2);
    // Again: unknown, nothing settled, out untouched.
    assert_unknown(u.settle(2, false, &mut out), 2);
    assert_eq!(offsets(&out), [1]);
    assert_eq!(u.len(), 2);
    u.settle(1, false, &mut out).unwrap();
    u.settle(3, false, &mut out).unwrap();
    assert_eq!(offsets(&out), [1, 0, 2]);
    assert!(u.is_empty());
}

#[test]
fn multiple_settles_every_outstanding_tag_up_to_and_including_it() {
    let mut u = U::new();
    track_n(&mut u, 6);
    let mut out = Vec::new();
    u.settle(2, false, &mut out).unwrap(); // a hole
    out.clear();
    u.settle(4, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0, 2, 3], "tags 1, 3, 4 in tag order");
    assert_eq!(u.len(), 2);
    out.clear();
    u.settle(6, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [4, 5]);
    assert!(u.is_empty());
}

#[test]
fn multiple_on_the_oldest_tag_settles_just_it() {
    let mut u = U::new();
    track_n(&mut u, 3);
    let mut out = Vec::new();
    u.settle(1, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0]);
    assert_eq!(u.len(), 2);
}

#[test]
fn multiple_with_tag_zero_settles_everything() {
    let mut u = U::new();
    track_n(&mut u, 4);
    let mut out = Vec::new();
    u.settle(3, false, &mut out).unwrap();
    out.clear();
    u.settle(0, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0, 1, 3]);
    assert!(u.is_empty());
    // Also when nothing is outstanding.
    out.clear();
    u.settle(0, true, &mut out).unwrap();
    assert!(out.is_empty());
    // Tags keep counting.
    assert_eq!(u.track(pending("q", 9)), 5);
}

#[test]
fn tag_zero_without_multiple_is_unknown() {
    let mut u = U::new();
    track_n(&mut u, 2);
    let mut out = Vec::new();
    assert_unknown(u.settle(0, false, &mut out), 0);
    assert!(out.is_empty());
    assert_eq!(u.len(), 2);
}

#[test]
fn multiple_with_a_tag_not_outstanding_settles_nothing() {
    let mut u = U::new();
    track_n(&mut u, 5);
    let mut out = Vec::new();
    u.settle(3, false, &mut out).unwrap();
    out.clear();
    // Tag 3 was settled: `multiple` on it is unknown, though 1 and 2 are outstanding.
    assert_unknown(u.settle(3, true, &mut out), 3);
    // A tag never given out, beyond the last.
    assert_unknown(u.settle(6, true, &mut out), 6);
    assert_unknown(u.settle(u64::MAX, true, &mut out), u64::MAX);
    assert!(out.is_empty());
    assert_eq!(u.len(), 4);
    u.settle(5, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0, 1, 3, 4]);
}

#[test]
fn settled_holes_in_the_middle_are_unknown() {
    let mut u = U::new();
    track_n(&mut u, 3);
    let mut out = Vec::new();
    u.settle(2, false, &mut out).unwrap();
    assert_unknown(u.settle(2, false, &mut out), 2);
    assert_unknown(u.settle(2, true, &mut out), 2);
    assert_eq!(u.len(), 2);
    u.settle(1, false, &mut out).unwrap();
    // After the front is settled the hole at 2 is dropped: 2 is still unknown, 3 still known.
    assert_unknown(u.settle(2, false, &mut out), 2);
    u.settle(3, false, &mut out).unwrap();
    assert_eq!(offsets(&out), [1, 0, 2]);
}

#[test]
fn drain_takes_everything_in_tag_order() {
    let mut u = U::new();
    track_n(&mut u, 5);
    let mut out = Vec::new();
    u.settle(2, false, &mut out).unwrap();
    u.settle(4, false, &mut out).unwrap();
    out.clear();
    u.drain(&mut out);
    assert_eq!(offsets(&out), [0, 2, 4]);
    assert!(u.is_empty());
    let mut again = Vec::new();
    u.drain(&mut again);
    assert!(again.is_empty());
    // Tags do not restart (the client keeps counting on the channel).
    assert_eq!(u.next_untracked(), 6);
    assert_eq!(u.track(pending("q", 7)), 7);
    assert_unknown(u.settle(1, false, &mut again), 1);
}

#[test]
fn drain_after_many_deliveries_still_works() {
    let mut u = U::new();
    let tags = track_n(&mut u, 5000);
    assert_eq!(tags.last(), Some(&5000));
    let mut out = Vec::new();
    u.drain(&mut out);
    assert_eq!(out.len(), 5000);
    assert_eq!(u.track(pending("q", 0)), 5001);
    out.clear();
    u.settle(5001, false, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn retain_drops_the_deliveries_of_a_deleted_queue() {
    let mut u = U::new();
    let t1 = u.track(pending("a", 0));
    let t2 = u.track(pending("b", 0));
    let t3 = u.track(pending("a", 1));
    let t4 = u.track(pending("b", 1));
    u.retain(|p| p.queue != "a");
    assert_eq!(u.len(), 2);
    let mut out = Vec::new();
    assert_unknown(u.settle(t1, false, &mut out), t1);
    assert_unknown(u.settle(t3, true, &mut out), t3);
    u.settle(t4, true, &mut out).unwrap();
    assert_eq!(
        out.iter()
            .map(|p| (p.queue, p.entry.offset))
            .collect::<Vec<_>>(),
        [("b", 0), ("b", 1)]
    );
    assert!(u.is_empty());
    let _ = t2;
}

#[test]
fn retain_keeping_everything_changes_nothing() {
    let mut u = U::new();
    track_n(&mut u, 3);
    u.retain(|_| true);
    assert_eq!(u.len(), 3);
    let mut out = Vec::new();
    u.settle(3, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0, 1, 2]);
}

#[test]
fn unknown_delivery_tag_is_rabbitmqs_reply() {
    let e = unknown_delivery_tag(42);
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert_eq!(e.code as u16, 406);
    assert_eq!(e.text, "unknown delivery tag 42");
    assert_eq!(e.scope, Scope::Channel);
}

// ---------------------------------------------------------------------------------------------
// transactions: settle_tagged and restore (`tx.rollback` puts acks back, as RabbitMQ does with
// `lists:usort(AcksL ++ UAMQ)`)

#[test]
fn settle_tagged_keeps_the_tags_with_the_same_rules() {
    let mut u = U::new();
    track_n(&mut u, 4);
    let mut out = Vec::new();
    u.settle_tagged(3, true, &mut out).unwrap();
    assert_eq!(
        out.iter()
            .map(|(t, p)| (*t, p.entry.offset))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 1), (3, 2)]
    );
    let before = out.len();
    let r = u.settle_tagged(3, false, &mut out);
    assert_eq!(r.unwrap_err().text, "unknown delivery tag 3");
    let r = u.settle_tagged(0, false, &mut out);
    assert_eq!(r.unwrap_err().text, "unknown delivery tag 0");
    assert_eq!(out.len(), before);
    u.settle_tagged(0, true, &mut out).unwrap();
    assert_eq!(out.last().map(|(t, _)| *t), Some(4));
    assert!(u.is_empty());
}

#[test]
fn restore_puts_settled_deliveries_back_under_their_tags() {
    let mut u = U::new();
    track_n(&mut u, 5);
    let mut txn = Vec::new();
    // Within a transaction: ack 2, then multiple up to 4 (1, 3, 4), then nothing is left
    // but 5.
    u.settle_tagged(2, false, &mut txn).unwrap();
    u.settle_tagged(4, true, &mut txn).unwrap();
    assert_eq!(u.len(), 1);
    // Acking again inside the same transaction is unknown, as in RabbitMQ.
    assert!(u.settle_tagged(2, false, &mut Vec::new()).is_err());
    // tx.rollback.
    u.restore(txn);
    assert_eq!(u.len(), 5);
    let mut out = Vec::new();
    u.settle(3, false, &mut out).unwrap();
    u.settle(0, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [2, 0, 1, 3, 4]);
    // Tags did not move.
    assert_eq!(u.next_untracked(), 6);
}

#[test]
fn restore_into_a_hole_and_after_the_front_was_dropped() {
    let mut u = U::new();
    track_n(&mut u, 4);
    let mut front = Vec::new();
    u.settle_tagged(1, false, &mut front).unwrap(); // dropped from the front
    let mut middle = Vec::new();
    u.settle_tagged(3, false, &mut middle).unwrap(); // a hole
    assert_eq!(u.len(), 2);
    u.restore(middle);
    assert_eq!(u.len(), 3);
    u.restore(front);
    assert_eq!(u.len(), 4);
    let mut out = Vec::new();
    u.settle(2, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [0, 1]);
    out.clear();
    u.settle(4, true, &mut out).unwrap();
    assert_eq!(offsets(&out), [2, 3]);
    assert!(u.is_empty());
}

#[test]
fn restore_of_nothing_changes_nothing() {
    let mut u = U::new();
    track_n(&mut u, 2);
    u.restore(Vec::new());
    assert_eq!(u.len(), 2);
}

#[test]
fn one_delivery_left_unsettled_does_not_keep_a_slot_per_later_tag() {
    let mut u: Unacked<u8, u32> = Unacked::new();
    let mut out = Vec::new();
    let first = u.track(pending_for_compaction(0));
    for i in 1..100_000u32 {
        let tag = u.track(pending_for_compaction(i));
        u.settle(tag, false, &mut out).unwrap();
    }
    assert_eq!(u.len(), 1);
    assert!(u.slot_count() < 200, "{} slots kept", u.slot_count());
    u.settle(first, false, &mut out).unwrap();
    assert!(u.is_empty());
}

fn pending_for_compaction(i: u32) -> Pending<u8, u32> {
    Pending {
        queue: 0,
        consumer: None,
        entry: warren_queue::Entry {
            offset: u64::from(i),
            delivery_count: 0,
            expires_at: None,
            message: i,
        },
    }
}
