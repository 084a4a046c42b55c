//! Confirm and transaction modes (`confirm.select`, `tx.*`) and their RabbitMQ errors.

use warren_amqp_codec::{AmqpException, ReplyCode, Scope};
use warren_queue::channel::{ConfirmReply, Mode};

type M = Mode<&'static str, u64>;

fn assert_precondition(r: Result<impl std::fmt::Debug, AmqpException>, text: &str) {
    let e = r.expect_err("precondition failed");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert_eq!(e.text, text);
    assert_eq!(e.scope, Scope::Channel);
}

#[test]
fn a_channel_starts_plain() {
    let mut m = M::default();
    assert!(matches!(m, Mode::Plain));
    assert!(m.confirms().is_none());
    assert!(m.transaction().is_none());
}

#[test]
fn confirm_then_tx_is_refused() {
    let mut m = M::default();
    m.select_confirm().unwrap();
    assert_precondition(m.select_tx(), "cannot switch from confirm to tx mode");
    assert!(m.confirms().is_some(), "still in confirm mode");
    assert!(m.transaction().is_none());
}

#[test]
fn tx_then_confirm_is_refused() {
    let mut m = M::default();
    m.select_tx().unwrap();
    assert_precondition(m.select_confirm(), "cannot switch from tx to confirm mode");
    assert!(m.transaction().is_some(), "still in tx mode");
    assert!(m.confirms().is_none());
}

#[test]
fn selecting_confirm_again_keeps_the_numbering() {
    let mut m = M::default();
    m.select_confirm().unwrap();
    let c = m.confirms().unwrap();
    assert_eq!(c.publish(), 1);
    assert_eq!(c.publish(), 2);
    m.select_confirm().unwrap();
    let c = m.confirms().unwrap();
    assert_eq!(c.publish(), 3);
    c.settle(1, true);
    assert_eq!(
        c.poll(),
        Some(ConfirmReply {
            tag: 1,
            multiple: false,
            ack: true
        })
    );
}

#[test]
fn commit_and_rollback_need_a_transaction() {
    let mut m = M::default();
    assert_precondition(m.commit(), "channel is not transactional");
    assert_precondition(m.rollback(), "channel is not transactional");
    m.select_confirm().unwrap();
    assert_precondition(m.commit(), "channel is not transactional");
    assert_precondition(m.rollback(), "channel is not transactional");
}

#[test]
fn commit_returns_the_buffered_work_in_order_and_starts_afresh() {
    let mut m = M::default();
    m.select_tx().unwrap();
    {
        let t = m.transaction().unwrap();
        t.publishes.push("p1");
        t.settlements.push(7);
        t.publishes.push("p2");
        t.settlements.push(3);
    }
    let t = m.commit().unwrap();
    assert_eq!(t.publishes, ["p1", "p2"]);
    assert_eq!(t.settlements, [7, 3]);
    let t = m.transaction().unwrap();
    assert!(t.publishes.is_empty() && t.settlements.is_empty());
    let empty = m.commit().unwrap();
    assert!(empty.publishes.is_empty() && empty.settlements.is_empty());
    // tx.select again keeps the open transaction.
    m.transaction().unwrap().publishes.push("p3");
    m.select_tx().unwrap();
    assert_eq!(m.transaction().unwrap().publishes, ["p3"]);
}

#[test]
fn rollback_hands_back_the_work_to_drop_and_starts_afresh() {
    let mut m = M::default();
    m.select_tx().unwrap();
    m.transaction().unwrap().publishes.push("p1");
    m.transaction().unwrap().settlements.push(1);
    let t = m.rollback().unwrap();
    assert_eq!(t.publishes, ["p1"]);
    assert_eq!(t.settlements, [1]);
    let t = m.commit().unwrap();
    assert!(t.publishes.is_empty() && t.settlements.is_empty());
    assert!(m.transaction().is_some(), "still transactional");
}
