//! Consuming: order, round-robin, prefetch, acknowledgements, basic.get, recover, cancel.

use crate::common::{
    amqp, amqp_error, channel_errors, connection_errors, consume, declare, eventually, get,
    next_error, numbered, publish, start, text, try_consume, within,
};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicNackArguments, BasicPublishArguments,
    BasicQosArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, BasicRecoverOptions, BasicRejectOptions, QueueDeleteOptions,
};

fn manual() -> BasicConsumeOptions {
    BasicConsumeOptions::default()
}

fn auto_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_come_in_publish_order_with_increasing_tags() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "fifo").await;
    let bodies = numbered("m", 200);
    for m in &bodies {
        publish(&ch, "", "fifo", m).await;
    }
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "fifo", "c", manual()).await;
    let got = d.take(200).await;
    let texts: Vec<String> = got.iter().map(text).collect();
    assert_eq!(texts, bodies);
    let tags: Vec<u64> = got.iter().map(|d| d.delivery_tag).collect();
    assert_eq!(tags, (1..=200).collect::<Vec<u64>>());
    assert!(got.iter().all(|d| !d.redelivered));
    assert!(
        got.iter()
            .all(|d| d.routing_key.as_str() == "fifo" && d.exchange.as_str().is_empty())
    );
    // Messages published while the consumer is active come after, in order.
    for m in numbered("late", 10) {
        publish(&ch, "", "fifo", &m).await;
    }
    let late: Vec<String> = d.take(10).await.iter().map(text).collect();
    assert_eq!(late, numbered("late", 10));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_messages_round_robin() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "rr").await;
    let (_c2, cch) = b.lapin_channel().await;
    let mut a = consume(&cch, "rr", "a", auto_ack()).await;
    let mut z = consume(&cch, "rr", "z", auto_ack()).await;
    for m in numbered("m", 10) {
        publish(&ch, "", "rr", &m).await;
    }
    let got_a: Vec<String> = a.take(5).await.iter().map(text).collect();
    let got_z: Vec<String> = z.take(5).await.iter().map(text).collect();
    assert_eq!(got_a, ["m0", "m2", "m4", "m6", "m8"]);
    assert_eq!(got_z, ["m1", "m3", "m5", "m7", "m9"]);
    a.assert_quiet().await;
    z.assert_quiet().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch_limits_unacked_deliveries() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "pf").await;
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(2, BasicQosOptions { global: false }))
        .await
        .unwrap();
    let mut d = consume(&cch, "pf", "c", manual()).await;
    for m in numbered("m", 5) {
        publish(&ch, "", "pf", &m).await;
    }
    b.wait_queue("pf", |q| {
        q.messages_unacknowledged == 2 && q.messages_ready == 3
    })
    .await;
    let first = d.take(2).await;
    assert_eq!(first.iter().map(text).collect::<Vec<_>>(), ["m0", "m1"]);
    d.assert_quiet().await;
    within(cch.basic_ack(first[0].delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    assert_eq!(text(&d.next().await), "m2");
    d.assert_quiet().await;
    // Acking two at once (multiple) lets two more through.
    within(cch.basic_ack(3, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    let more = d.take(2).await;
    assert_eq!(more.iter().map(text).collect::<Vec<_>>(), ["m3", "m4"]);
    b.wait_queue("pf", |q| {
        q.messages_unacknowledged == 2 && q.messages_ready == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch_applies_to_each_consumer_of_a_channel() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "pa").await;
    declare(&ch, "pb").await;
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(2, BasicQosOptions { global: false }))
        .await
        .unwrap();
    let mut da = consume(&cch, "pa", "a", manual()).await;
    let mut db = consume(&cch, "pb", "b", manual()).await;
    for m in numbered("m", 4) {
        publish(&ch, "", "pa", &m).await;
        publish(&ch, "", "pb", &m).await;
    }
    b.wait_queue("pa", |q| q.messages_unacknowledged == 2).await;
    b.wait_queue("pb", |q| q.messages_unacknowledged == 2).await;
    da.take(2).await;
    db.take(2).await;
    da.assert_quiet().await;
    db.assert_quiet().await;
    let handle = b.handle();
    let consuming = || {
        handle
            .connections()
            .iter()
            .flat_map(|c| c.channels.iter().copied())
            .find(|c| c.consumers == 2)
            .expect("consuming channel listed")
    };
    assert_eq!(consuming().prefetch, 2);
    let listed = eventually(|| {
        let c = consuming();
        (c.unacked == 4).then_some(c)
    })
    .await;
    assert!(
        listed.is_some(),
        "the channel listing never showed 4 unacked: {:?}",
        consuming()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_limits_the_whole_channel() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "g1").await;
    declare(&ch, "g2").await;
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(3, BasicQosOptions { global: true }))
        .await
        .unwrap();
    let mut d1 = consume(&cch, "g1", "c1", manual()).await;
    let mut d2 = consume(&cch, "g2", "c2", manual()).await;
    for m in numbered("m", 3) {
        publish(&ch, "", "g1", &m).await;
        publish(&ch, "", "g2", &m).await;
    }
    let handle = b.handle();
    let total = || {
        let qs = handle.queues("/").unwrap();
        let u: u64 = qs.iter().map(|q| q.messages_unacknowledged).sum();
        let r: u64 = qs.iter().map(|q| q.messages_ready).sum();
        (u, r)
    };
    crate::common::eventually(|| (total() == (3, 3)).then_some(()))
        .await
        .unwrap_or_else(|| panic!("expected 3 unacked and 3 ready, got {:?}", total()));
    let n1 = b.queue("g1").unwrap().messages_unacknowledged as usize;
    let n2 = b.queue("g2").unwrap().messages_unacknowledged as usize;
    let got1 = d1.take(n1).await;
    let got2 = d2.take(n2).await;
    d1.assert_quiet().await;
    d2.assert_quiet().await;
    assert_eq!(total(), (3, 3));
    // Acking everything received so far (multiple, on the channel) frees three more.
    let last = got1
        .iter()
        .chain(got2.iter())
        .map(|d| d.delivery_tag)
        .max()
        .unwrap();
    within(cch.basic_ack(last, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    d1.take(3 - n1).await;
    d2.take(3 - n2).await;
    assert_eq!(total(), (3, 0));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_and_global_prefetch_combine() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "both").await;
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(10, BasicQosOptions { global: true }))
        .await
        .unwrap();
    within(cch.basic_qos(1, BasicQosOptions { global: false }))
        .await
        .unwrap();
    let mut d = consume(&cch, "both", "c", manual()).await;
    for m in numbered("m", 5) {
        publish(&ch, "", "both", &m).await;
    }
    b.wait_queue("both", |q| {
        q.messages_unacknowledged == 1 && q.messages_ready == 4
    })
    .await;
    let m0 = d.next().await;
    d.assert_quiet().await;
    within(m0.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    assert_eq!(text(&d.next().await), "m1");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_puts_the_message_back_in_place_redelivered() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "nq").await;
    for m in ["a", "b", "c", "d"] {
        publish(&ch, "", "nq", m).await;
    }
    let fetch = || {
        let ch = ch.clone();
        async move {
            within(ch.basic_get("nq", BasicGetOptions { no_ack: false }))
                .await
                .unwrap()
                .expect("a message")
        }
    };
    let a = fetch().await;
    let bm = fetch().await;
    assert_eq!(
        (text(&a.delivery), text(&bm.delivery)),
        ("a".into(), "b".into())
    );
    within(ch.basic_nack(
        bm.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    // b is back before c, marked redelivered.
    let again = fetch().await;
    assert_eq!(text(&again.delivery), "b");
    assert!(again.delivery.redelivered);
    let c = fetch().await;
    assert_eq!(text(&c.delivery), "c");
    assert!(!c.delivery.redelivered);
    // nack multiple with requeue: a, b and c go back, in their order, ahead of d.
    within(ch.basic_nack(
        c.delivery.delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let m = fetch().await;
        order.push((text(&m.delivery), m.delivery.redelivered));
    }
    assert_eq!(
        order,
        [
            ("a".to_string(), true),
            ("b".to_string(), true),
            ("c".to_string(), true),
            ("d".to_string(), false)
        ]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_goes_back_to_a_consumer_redelivered() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "rq").await;
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut d = consume(&cch, "rq", "c", manual()).await;
    publish(&ch, "", "rq", "x").await;
    publish(&ch, "", "rq", "y").await;
    let x = d.next().await;
    assert!(!x.redelivered);
    within(x.acker.nack(BasicNackOptions {
        multiple: false,
        requeue: true,
    }))
    .await
    .unwrap();
    let again = d.next().await;
    assert_eq!(text(&again), "x");
    assert!(again.redelivered);
    within(again.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    let y = d.next().await;
    assert_eq!(text(&y), "y");
    assert!(!y.redelivered);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_drops_the_message() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "rj").await;
    publish(&ch, "", "rj", "bad").await;
    publish(&ch, "", "rj", "good").await;
    let m = within(ch.basic_get("rj", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    within(ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: false },
    ))
    .await
    .unwrap();
    assert_eq!(get(&ch, "rj").await.as_deref(), Some("good"));
    assert_eq!(get(&ch, "rj").await, None);
    let q = b.queue("rj").unwrap();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (0, 0));
    // nack without requeue drops too.
    publish(&ch, "", "rj", "bad2").await;
    let m = within(ch.basic_get("rj", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    within(ch.basic_nack(m.delivery.delivery_tag, BasicNackOptions::default()))
        .await
        .unwrap();
    assert_eq!(get(&ch, "rj").await, None);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_closes_the_channel() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut errors = channel_errors(&ch);
    within(ch.basic_ack(99, BasicAckOptions::default()))
        .await
        .unwrap();
    assert_eq!(
        next_error(&mut errors).await,
        (406, "PRECONDITION_FAILED - unknown delivery tag 99".into())
    );
    // Acknowledging the same tag twice.
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "twice").await;
    publish(&ch, "", "twice", "m").await;
    let m = within(ch.basic_get("twice", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    let mut errors = channel_errors(&ch);
    within(ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    within(ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    assert_eq!(
        next_error(&mut errors).await,
        (406, "PRECONDITION_FAILED - unknown delivery tag 1".into())
    );
    // Only the channel went; the acknowledged message is gone for good.
    assert!(conn.status().connected());
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(get(&ch, "twice").await, None);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_reports_the_remaining_count_and_get_empty() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "bg").await;
    assert!(
        within(ch.basic_get("bg", BasicGetOptions::default()))
            .await
            .unwrap()
            .is_none()
    );
    for m in ["1", "2", "3"] {
        publish(&ch, "", "bg", m).await;
    }
    let mut counts = Vec::new();
    let mut tags = Vec::new();
    for _ in 0..3 {
        let m = within(ch.basic_get("bg", BasicGetOptions { no_ack: false }))
            .await
            .unwrap()
            .unwrap();
        counts.push(m.message_count);
        tags.push(m.delivery.delivery_tag);
        assert_eq!(m.delivery.routing_key.as_str(), "bg");
    }
    assert_eq!(counts, [2, 1, 0]);
    assert_eq!(tags, [1, 2, 3]);
    assert!(
        within(ch.basic_get("bg", BasicGetOptions::default()))
            .await
            .unwrap()
            .is_none()
    );
    let q = b.queue("bg").unwrap();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (0, 3));
    within(ch.basic_ack(3, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    b.wait_queue("bg", |q| q.messages_unacknowledged == 0).await;
    let err = within(ch.basic_get("nope", BasicGetOptions::default()))
        .await
        .expect_err("no such queue");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no queue 'nope' in vhost '/'".into())
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_recover_redelivers_unacked_messages() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "rc").await;
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "rc", "c", manual()).await;
    for m in ["a", "b"] {
        publish(&ch, "", "rc", m).await;
    }
    let first = d.take(2).await;
    assert!(first.iter().all(|m| !m.redelivered));
    within(cch.basic_recover(BasicRecoverOptions { requeue: true }))
        .await
        .unwrap();
    let again = d.take(2).await;
    assert_eq!(again.iter().map(text).collect::<Vec<_>>(), ["a", "b"]);
    assert!(again.iter().all(|m| m.redelivered));
    // New tags: the old ones are void.
    assert_eq!(
        again.iter().map(|m| m.delivery_tag).collect::<Vec<_>>(),
        [3, 4]
    );
    within(cch.basic_ack(4, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    b.wait_queue("rc", |q| {
        q.messages_unacknowledged == 0 && q.messages_ready == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_consumer_gets_nothing_more() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "cn").await;
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "cn", "c", auto_ack()).await;
    publish(&ch, "", "cn", "before").await;
    assert_eq!(text(&d.next().await), "before");
    within(cch.basic_cancel("c", BasicCancelOptions::default()))
        .await
        .unwrap();
    assert!(matches!(d.event().await, Ok(None)), "cancel reported");
    assert_eq!(b.queue("cn").unwrap().consumers, 0);
    publish(&ch, "", "cn", "after").await;
    b.wait_queue("cn", |q| q.messages_ready == 1).await;
    // Cancelling an unknown tag is answered with cancel-ok.
    within(cch.basic_cancel("never", BasicCancelOptions::default()))
        .await
        .unwrap();
    assert_eq!(get(&ch, "cn").await.as_deref(), Some("after"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers_with_a_notification() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "doomed").await;
    let (consumer_conn, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "doomed", "c", manual()).await;
    within(ch.queue_delete("doomed", QueueDeleteOptions::default()))
        .await
        .unwrap();
    // consumer_cancel_notify: the server sends basic.cancel; lapin ends the stream.
    assert!(matches!(d.event().await, Ok(None)), "cancel notified");
    assert!(consumer_conn.status().connected());
    assert!(cch.status().connected());
    // amqprs sees the cancel through its channel callback.
    declare(&ch, "doomed2").await;
    let conn = b.amqprs().await;
    let (ach, mut events) = amqp::channel(&conn).await;
    let (tag, _rx) = within(ach.basic_consume_rx(BasicConsumeArguments::new("doomed2", "rs-c")))
        .await
        .unwrap();
    within(ch.queue_delete("doomed2", QueueDeleteOptions::default()))
        .await
        .unwrap();
    match amqp::next(&mut events).await {
        amqp::ChannelEvent::Cancelled(t) => assert_eq!(t, tag),
        other => panic!("expected basic.cancel, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_requeues_its_unacked_messages_as_redelivered() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "cl").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "cl", m).await;
    }
    let (conn2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "cl", "c", manual()).await;
    let got = d.take(3).await;
    // One is acknowledged; two are not.
    within(got[1].acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    b.wait_queue("cl", |q| q.messages_unacknowledged == 2).await;
    within(cch.close(200, "done")).await.unwrap();
    let q = b
        .wait_queue("cl", |q| q.messages_ready == 2 && q.consumers == 0)
        .await;
    assert_eq!(q.messages_unacknowledged, 0);
    let ch2 = within(conn2.create_channel()).await.unwrap();
    let mut d2 = consume(&ch2, "cl", "c", manual()).await;
    let back = d2.take(2).await;
    assert_eq!(back.iter().map(text).collect::<Vec<_>>(), ["a", "c"]);
    assert!(back.iter().all(|m| m.redelivered));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_keeps_others_out() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "ex").await;
    let _mine = consume(
        &ch,
        "ex",
        "mine",
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await;
    let other = within(conn.create_channel()).await.unwrap();
    let err = try_consume(&other, "ex", "theirs", manual())
        .await
        .err()
        .expect("exclusive consumer present");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - queue 'ex' in vhost '/' in exclusive use".into()
        )
    );
    // An exclusive consumer cannot join a queue that already has consumers either.
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "shared").await;
    let _plain = consume(&ch, "shared", "plain", manual()).await;
    let ch2 = within(conn.create_channel()).await.unwrap();
    let err = try_consume(
        &ch2,
        "shared",
        "greedy",
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("queue has consumers");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - queue 'shared' in vhost '/' in exclusive use".into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_is_a_connection_error() {
    let b = start().await;
    let conn = b.lapin().await;
    let mut conn_errors = connection_errors(&conn);
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "t1").await;
    declare(&ch, "t2").await;
    let _first = consume(&ch, "t1", "t", manual()).await;
    let err = try_consume(&ch, "t2", "t", manual())
        .await
        .err()
        .expect("tag in use on this channel");
    let expected = (
        530,
        "NOT_ALLOWED - attempt to reuse consumer tag 't'".to_string(),
    );
    assert_eq!(amqp_error(&err), expected);
    assert_eq!(next_error(&mut conn_errors).await, expected);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_a_missing_queue_is_not_found() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    let err = try_consume(&ch, "nope", "c", manual())
        .await
        .err()
        .expect("no such queue");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no queue 'nope' in vhost '/'".into())
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_generated_consumer_tags() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "gt").await;
    let d1 = consume(&ch, "gt", "", manual()).await;
    let d2 = consume(&ch, "gt", "", manual()).await;
    assert!(d1.tag.starts_with("amq.ctag-"), "{}", d1.tag);
    assert!(d2.tag.starts_with("amq.ctag-"), "{}", d2.tag);
    assert_ne!(d1.tag, d2.tag);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consumer_leaves_nothing_unacked() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "na").await;
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "na", "c", auto_ack()).await;
    for m in numbered("m", 20) {
        publish(&ch, "", "na", &m).await;
    }
    d.take(20).await;
    let q = b
        .wait_queue("na", |q| {
            q.messages_ready == 0 && q.messages_unacknowledged == 0
        })
        .await;
    assert_eq!(q.consumers, 1);
    assert_eq!(q.counters.delivered, 20);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_size_is_not_implemented() {
    let b = start().await;
    let conn = b.amqprs().await;
    let mut closes = amqp::on_close(&conn).await;
    let (ch, _events) = amqp::channel(&conn).await;
    let r = within(ch.basic_qos(BasicQosArguments::new(10, 0, false))).await;
    assert!(r.is_err());
    assert_eq!(
        within(closes.recv()).await.expect("connection.close"),
        (540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)".into())
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_consumes_with_manual_acks_prefetch_and_nack() {
    let b = start().await;
    let conn = b.amqprs().await;
    let (ch, _events) = amqp::channel(&conn).await;
    within(ch.queue_declare(QueueDeclareArguments::new("rsq")))
        .await
        .unwrap();
    within(ch.basic_qos(BasicQosArguments::new(0, 3, false)))
        .await
        .unwrap();
    let (_tag, mut rx) = within(ch.basic_consume_rx(BasicConsumeArguments::new("rsq", "rs")))
        .await
        .unwrap();
    let (pch, _pev) = amqp::channel(&conn).await;
    for i in 0..6u8 {
        within(pch.basic_publish(
            Default::default(),
            vec![i],
            BasicPublishArguments::new("", "rsq"),
        ))
        .await
        .unwrap();
    }
    b.wait_queue("rsq", |q| {
        q.messages_unacknowledged == 3 && q.messages_ready == 3
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(amqp::delivery(&mut rx).await);
    }
    assert_eq!(
        got.iter()
            .map(|g| (g.0, g.1, g.2.clone()))
            .collect::<Vec<_>>(),
        [
            (1, false, vec![0]),
            (2, false, vec![1]),
            (3, false, vec![2])
        ]
    );
    // Requeue the second: it comes back first, redelivered.
    within(ch.basic_nack(BasicNackArguments::new(2, false, true)))
        .await
        .unwrap();
    let (tag, redelivered, body, _) = amqp::delivery(&mut rx).await;
    assert_eq!((tag, redelivered, body), (4, true, vec![1]));
    // Ack everything so far; the rest arrive in order.
    within(ch.basic_ack(BasicAckArguments::new(4, true)))
        .await
        .unwrap();
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(amqp::delivery(&mut rx).await.2);
    }
    assert_eq!(rest, [vec![3], vec![4], vec![5]]);
    within(ch.basic_ack(BasicAckArguments::new(0, true)))
        .await
        .unwrap();
    b.wait_queue("rsq", |q| {
        q.messages_unacknowledged == 0 && q.messages_ready == 0
    })
    .await;
    let n = within(ch.queue_delete(QueueDeleteArguments::new("rsq")))
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_basic_get_and_recover() {
    let b = start().await;
    let conn = b.amqprs().await;
    let (ch, _events) = amqp::channel(&conn).await;
    within(ch.queue_declare(QueueDeclareArguments::new("rsg")))
        .await
        .unwrap();
    for i in 1..=3u8 {
        within(ch.basic_publish(
            Default::default(),
            vec![i],
            BasicPublishArguments::new("", "rsg"),
        ))
        .await
        .unwrap();
    }
    let mut get = amqprs::channel::BasicGetArguments::new("rsg");
    get.no_ack(false);
    let (ok, _props, body) = within(ch.basic_get(get.clone()))
        .await
        .unwrap()
        .expect("get-ok");
    assert_eq!(
        (ok.delivery_tag(), ok.message_count(), body),
        (1, 2, vec![1])
    );
    within(ch.basic_recover(true)).await.unwrap();
    let (ok, _props, body) = within(ch.basic_get(get.clone()))
        .await
        .unwrap()
        .expect("get-ok");
    assert_eq!(
        (
            ok.delivery_tag(),
            ok.redelivered(),
            ok.message_count(),
            body
        ),
        (2, true, 2, vec![1])
    );
    within(ch.basic_ack(BasicAckArguments::new(2, false)))
        .await
        .unwrap();
    b.wait_queue("rsg", |q| {
        q.messages_ready == 2 && q.messages_unacknowledged == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple_with_tag_zero_acknowledges_everything() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "all").await;
    for m in numbered("m", 5) {
        publish(&ch, "", "all", &m).await;
    }
    let mut d = consume(&ch, "all", "c", manual()).await;
    d.take(5).await;
    b.wait_queue("all", |q| q.messages_unacknowledged == 5)
        .await;
    within(ch.basic_ack(0, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    b.wait_queue("all", |q| {
        q.messages_unacknowledged == 0 && q.messages_ready == 0
    })
    .await;
    // nack(0, multiple, requeue) gives everything back.
    for m in numbered("n", 3) {
        publish(&ch, "", "all", &m).await;
    }
    d.take(3).await;
    within(ch.basic_nack(
        0,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    ))
    .await
    .unwrap();
    let again = d.take(3).await;
    assert_eq!(
        again.iter().map(text).collect::<Vec<_>>(),
        ["n0", "n1", "n2"]
    );
    assert!(again.iter().all(|m| m.redelivered));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_off_is_not_implemented() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let active = within(ch.channel_flow(lapin::options::ChannelFlowOptions { active: true }))
        .await
        .unwrap();
    assert!(active);
    let err = within(ch.channel_flow(lapin::options::ChannelFlowOptions { active: false }))
        .await
        .expect_err("flow off is refused");
    assert_eq!(
        amqp_error(&err),
        (540, "NOT_IMPLEMENTED - active=false".into())
    );
    b.stop().await;
}
