//! Queue features through real clients: message TTL (per queue and per message, expired even
//! with no one reading), length limits with their overflow modes (a refused publish is
//! nacked), priorities and the delivery limit. Dead-lettering is not wired yet: dead
//! messages are dropped.

use crate::common::*;
use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k.to_string()), v.clone());
    }
    t
}

async fn declare_with(ch: &lapin::Channel, queue: &str, arguments: FieldTable) {
    within(ch.queue_declare(queue, QueueDeclareOptions::default(), arguments))
        .await
        .expect("queue.declare succeeds");
}

async fn send(ch: &lapin::Channel, queue: &str, body: &str, props: BasicProperties) {
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
