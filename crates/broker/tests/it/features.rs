//! Queue features through real clients: message TTL (per queue and per message, expired even
//! with no one reading), length limits with their overflow modes (a refused publish is
//! nacked), priorities, the delivery limit, dead-lettering with `x-death`, queue expiry,
//! single active consumer and consumer priorities. Policies are in `policies.rs`.

use crate::common::*;
use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};

pub(crate) fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k.to_string()), v.clone());
    }
    t
}

pub(crate) async fn declare_with(ch: &lapin::Channel, queue: &str, arguments: FieldTable) {
    within(ch.queue_declare(queue, QueueDeclareOptions::default(), arguments))
        .await
        .expect("queue.declare succeeds");
}

pub(crate) async fn send(ch: &lapin::Channel, queue: &str, body: &str, props: BasicProperties) {
    within(ch.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    ))
    .await
    .expect("basic.publish is sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_expire_even_when_nobody_reads_the_queue() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_with(
        &ch,
        "ttl",
        args(&[("x-message-ttl", AMQPValue::LongInt(100))]),
    )
    .await;
    declare(&ch, "mixed").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "ttl", m).await;
    }
    // Per message: a short-lived one behind a long-lived one goes first.
    send(
        &ch,
        "mixed",
        "long",
        BasicProperties::default().with_expiration("60000".into()),
    )
    .await;
    send(
        &ch,
        "mixed",
        "short",
        BasicProperties::default().with_expiration("50".into()),
    )
    .await;
    b.wait_queue("ttl", |q| q.messages_ready == 3).await;
    b.wait_queue("ttl", |q| q.messages_ready == 0).await;
    b.wait_queue("mixed", |q| q.messages_ready == 1).await;
    assert_eq!(drain(&ch, "mixed").await, ["long"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest_and_reject_publish_nacks() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_with(
        &ch,
        "head",
        args(&[("x-max-length", AMQPValue::LongInt(2))]),
    )
    .await;
    for m in ["m1", "m2", "m3", "m4", "m5"] {
        publish(&ch, "", "head", m).await;
    }
    b.wait_queue("head", |q| q.messages_ready == 2).await;
    assert_eq!(drain(&ch, "head").await, ["m4", "m5"]);

    declare_with(
        &ch,
        "full",
        args(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut answers = Vec::new();
    for m in ["first", "second", "third"] {
        let c = within(ch.basic_publish(
            "",
            "full",
            BasicPublishOptions::default(),
            m.as_bytes(),
            BasicProperties::default(),
        ))
        .await
        .unwrap();
        answers.push(within(c).await.unwrap());
    }
    assert!(matches!(answers[0], Confirmation::Ack(None)), "{answers:?}");
    assert!(
        matches!(answers[1], Confirmation::Nack(None)),
        "{answers:?}"
    );
    assert!(
        matches!(answers[2], Confirmation::Nack(None)),
        "{answers:?}"
    );
    assert_eq!(drain(&ch, "full").await, ["first"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_are_delivered_first() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_with(
        &ch,
        "prio",
        args(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]),
    )
    .await;
    for (m, p) in [
        ("low", 0),
        ("high", 5),
        ("over", 9),
        ("mid", 2),
        ("none", 0),
    ] {
        let props = if m == "none" {
            BasicProperties::default()
        } else {
            BasicProperties::default().with_priority(p)
        };
        send(&ch, "prio", m, props).await;
    }
    b.wait_queue("prio", |q| q.messages_ready == 5).await;
    assert_eq!(
        drain(&ch, "prio").await,
        ["high", "over", "mid", "low", "none"]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_returned_too_often_is_dropped() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_with(
        &ch,
        "limited",
        args(&[("x-delivery-limit", AMQPValue::LongInt(1))]),
    )
    .await;
    publish(&ch, "", "limited", "again").await;
    b.wait_queue("limited", |q| q.messages_ready == 1).await;
    for round in 0..2 {
        let m = within(ch.basic_get("limited", BasicGetOptions { no_ack: false }))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: still there"));
        within(
            m.delivery
                .acker
                .reject(BasicRejectOptions { requeue: true }),
        )
        .await
        .unwrap();
    }
    b.wait_queue("limited", |q| {
        q.messages_ready == 0 && q.messages_unacknowledged == 0
    })
    .await;
    assert_eq!(drain(&ch, "limited").await, Vec::<String>::new());
    b.stop().await;
}

pub(crate) fn header<'a>(d: &'a lapin::message::Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key))
}

pub(crate) fn text_of(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => format!("{other:?}"),
    }
}

/// The x-death entries as (queue, reason, count).
pub(crate) fn deaths(d: &lapin::message::Delivery) -> Vec<(String, String, i64)> {
    let Some(AMQPValue::FieldArray(items)) = header(d, "x-death") else {
        return Vec::new();
    };
    items
        .as_slice()
        .iter()
        .filter_map(|v| match v {
            AMQPValue::FieldTable(t) => {
                let t = t.inner();
                let count = match t.get("count") {
                    Some(AMQPValue::LongLongInt(n)) => *n,
                    _ => -1,
                };
                Some((text_of(t.get("queue")), text_of(t.get("reason")), count))
            }
            _ => None,
        })
        .collect()
}

pub(crate) async fn get_one(ch: &lapin::Channel, queue: &str) -> Option<lapin::message::Delivery> {
    within(ch.basic_get(queue, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .map(|m| m.delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_expired_and_dropped_messages_are_dead_lettered_with_x_death() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "dlq").await;
    let dl = |extra: &[(&str, AMQPValue)]| {
        let mut a = vec![
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dlq".into()),
            ),
        ];
        a.extend_from_slice(extra);
        args(&a)
    };
    declare_with(&ch, "src", dl(&[])).await;
    declare_with(&ch, "ttl", dl(&[("x-message-ttl", AMQPValue::LongInt(20))])).await;
    declare_with(&ch, "short", dl(&[("x-max-length", AMQPValue::LongInt(1))])).await;

    // Rejected.
    publish(&ch, "", "src", "r").await;
    b.wait_queue("src", |q| q.messages_ready == 1).await;
    let m = within(ch.basic_get("src", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    within(
        m.delivery
            .acker
            .reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    b.wait_queue("dlq", |q| q.messages_ready == 1).await;
    let d = get_one(&ch, "dlq").await.unwrap();
    assert_eq!(text(&d), "r");
    assert_eq!(deaths(&d), [("src".into(), "rejected".into(), 1)]);
    assert_eq!(text_of(header(&d, "x-first-death-queue")), "src");
    assert_eq!(text_of(header(&d, "x-first-death-reason")), "rejected");
    assert_eq!(d.routing_key.as_str(), "dlq");

    // Expired, with its own expiration recorded and removed.
    send(
        &ch,
        "ttl",
        "e",
        BasicProperties::default().with_expiration("5000".into()),
    )
    .await;
    b.wait_queue("dlq", |q| q.messages_ready == 1).await;
    let d = get_one(&ch, "dlq").await.unwrap();
    assert_eq!(deaths(&d), [("ttl".into(), "expired".into(), 1)]);
    assert!(d.properties.expiration().is_none());
    let Some(AMQPValue::FieldArray(items)) = header(&d, "x-death") else {
        panic!("x-death");
    };
    let AMQPValue::FieldTable(entry) = &items.as_slice()[0] else {
        panic!("entry");
    };
    assert_eq!(text_of(entry.inner().get("original-expiration")), "5000");

    // Dropped by the length limit.
    publish(&ch, "", "short", "old").await;
    publish(&ch, "", "short", "new").await;
    b.wait_queue("dlq", |q| q.messages_ready == 1).await;
    let d = get_one(&ch, "dlq").await.unwrap();
    assert_eq!(text(&d), "old");
    assert_eq!(deaths(&d), [("short".into(), "maxlen".into(), 1)]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_cycle_ends_and_a_rejection_cycle_counts_up() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    // A → A by TTL: dropped at its first expiry.
    declare_with(
        &ch,
        "loop",
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(10)),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
        ]),
    )
    .await;
    publish(&ch, "", "loop", "x").await;
    b.wait_queue("loop", |q| {
        q.messages_ready == 0 && q.counters.published >= 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let q = b.queue("loop").unwrap();
    assert_eq!(
        (q.messages_ready, q.counters.published),
        (0, 1),
        "dropped, not looping"
    );
    // Rejected back into itself: goes on, counting.
    declare_with(
        &ch,
        "again",
        args(&[("x-dead-letter-exchange", AMQPValue::LongString("".into()))]),
    )
    .await;
    publish(&ch, "", "again", "y").await;
    for n in 1..=3 {
        b.wait_queue("again", |q| q.messages_ready == 1).await;
        let m = within(ch.basic_get("again", BasicGetOptions { no_ack: false }))
            .await
            .unwrap()
            .unwrap();
        if n > 1 {
            assert_eq!(
                deaths(&m.delivery),
                [("again".into(), "rejected".into(), n - 1)]
            );
        }
        within(
            m.delivery
                .acker
                .reject(BasicRejectOptions { requeue: false }),
        )
        .await
        .unwrap();
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_dead_letter_survives_a_restart_in_its_new_queue() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "dead").await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch.queue_declare(
        "work",
        durable,
        args(&[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dead".into()),
            ),
        ]),
    ))
    .await
    .unwrap();
    send(
        &ch,
        "work",
        "p",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    b.wait_queue("work", |q| q.messages_ready == 1).await;
    let m = within(ch.basic_get("work", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    within(
        m.delivery
            .acker
            .reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    b.wait_queue("dead", |q| q.messages_ready == 1).await;
    let b = dir.restart(b).await;
    assert_eq!(b.queue("work").unwrap().messages_ready, 0);
    assert_eq!(b.queue("dead").unwrap().messages_ready, 1);
    let (_c, ch) = b.lapin_channel().await;
    let d = get_one(&ch, "dead").await.unwrap();
    assert_eq!(text(&d), "p");
    assert_eq!(deaths(&d), [("work".into(), "rejected".into(), 1)]);
    assert_eq!(b.handle().counters().stored_messages, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_queue_expires_and_a_used_one_does_not() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    let expires = || args(&[("x-expires", AMQPValue::LongInt(300))]);
    declare_with(&ch, "idle", expires()).await;
    declare_with(&ch, "watched", expires()).await;
    declare_with(&ch, "polled", expires()).await;
    publish(&ch, "", "idle", "lost with it").await;
    let _c = consume(
        &ch,
        "watched",
        "w",
        lapin::options::BasicConsumeOptions::default(),
    )
    .await;
    // Polled every 100 ms: each basic.get restarts its clock.
    for _ in 0..8 {
        get(&ch, "polled").await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(b.queue("idle").is_none(), "unused for 300 ms: deleted");
    assert!(b.queue("watched").is_some(), "a consumer keeps it");
    assert!(b.queue("polled").is_some(), "basic.get keeps it");
    b.wait_queue_gone("polled").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_gets_everything_until_it_goes() {
    let b = start().await;
    let (_c1, ch1) = b.lapin_channel().await;
    let (_c2, ch2) = b.lapin_channel().await;
    declare_with(
        &ch1,
        "sac",
        args(&[("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let opts = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut first = consume(&ch1, "sac", "first", opts).await;
    let mut second = consume(&ch2, "sac", "second", opts).await;
    for m in ["a", "b", "c"] {
        publish(&ch1, "", "sac", m).await;
    }
    let got: Vec<String> = first.take(3).await.iter().map(text).collect();
    assert_eq!(got, ["a", "b", "c"]);
    second.assert_quiet().await;
    within(ch1.basic_cancel("first", lapin::options::BasicCancelOptions::default()))
        .await
        .unwrap();
    publish(&ch1, "", "sac", "d").await;
    assert_eq!(text(&second.next().await), "d");
    // An exclusive consumer is refused on such a queue.
    let (_c3, ch3) = b.lapin_channel().await;
    let mut errors = channel_errors(&ch3);
    let exclusive = lapin::options::BasicConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _ = ch3
        .basic_consume("sac", "x", exclusive, FieldTable::default())
        .await;
    assert_eq!(next_error(&mut errors).await.0, 403);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_consumer_is_served_first() {
    let b = start().await;
    let (_c1, ch1) = b.lapin_channel().await;
    let (_c2, ch2) = b.lapin_channel().await;
    declare(&ch1, "cp").await;
    let opts = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut low = consume(&ch1, "cp", "low", opts).await;
    let priority = args(&[("x-priority", AMQPValue::LongInt(10))]);
    let mut high = try_consume_with(&ch2, "cp", "high", opts, priority)
        .await
        .expect("basic.consume succeeds");
    for m in ["1", "2", "3"] {
        publish(&ch1, "", "cp", m).await;
    }
    let got: Vec<String> = high.take(3).await.iter().map(text).collect();
    assert_eq!(got, ["1", "2", "3"]);
    low.assert_quiet().await;
    b.stop().await;
}
