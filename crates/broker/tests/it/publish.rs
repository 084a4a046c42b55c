//! Publishing: mandatory returns, publisher confirms, transactions, direct reply-to, large and
//! empty bodies, properties and headers.

use crate::common::{
    amqp, amqp_error, channel_errors, consume, declare, drain, get, next_error, numbered, publish,
    start, text, within,
};
use amqprs::channel::{
    BasicConsumeArguments, BasicPublishArguments, ConfirmSelectArguments, QueueDeclareArguments,
};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_message_is_returned_with_no_route() {
    let b = start().await;
    // amqprs, no confirms: basic.return comes through the channel callback.
    let conn = b.amqprs().await;
    let (ch, mut events) = amqp::channel(&conn).await;
    let mut args = BasicPublishArguments::new("amq.direct", "nobody");
    args.mandatory(true);
    within(ch.basic_publish(Default::default(), b"lost".to_vec(), args))
        .await
        .unwrap();
    match amqp::next(&mut events).await {
        amqp::ChannelEvent::Returned(code, text, body) => {
            assert_eq!((code, text.as_str()), (312, "NO_ROUTE"));
            assert_eq!(body, b"lost");
        }
        other => panic!("expected basic.return, got {other:?}"),
    }
    // Not mandatory: dropped silently.
    within(ch.basic_publish(
        Default::default(),
        b"dropped".to_vec(),
        BasicPublishArguments::new("amq.direct", "nobody"),
    ))
    .await
    .unwrap();
    // lapin, in confirm mode: the return arrives with the ack.
    let (_c, lch) = b.lapin_channel().await;
    within(lch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let confirm = within(lch.basic_publish(
        "",
        "no-such-queue",
        mandatory(),
        b"lost2",
        BasicProperties::default().with_message_id("id-1".into()),
    ))
    .await
    .unwrap();
    let c = within(confirm).await.unwrap();
    assert!(c.is_ack(), "unroutable messages are still confirmed");
    let ret = c.take_message().expect("returned message");
    assert_eq!(ret.reply_code, 312);
    assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(ret.delivery.exchange.as_str(), "");
    assert_eq!(ret.delivery.routing_key.as_str(), "no-such-queue");
    assert_eq!(ret.delivery.data, b"lost2");
    assert_eq!(
        ret.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("id-1")
    );
    let handle = b.handle();
    let counters = crate::common::eventually(|| {
        let c = handle.counters();
        (c.unroutable == 3).then_some(c)
    })
    .await
    .expect("three unroutable publishes counted");
    assert_eq!(counters.returned, 2);
    assert!(events.try_recv().is_err(), "only one return on amqprs");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_confirmed_routable_or_not() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "cq").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (i, m) in numbered("m", 50).iter().enumerate() {
        let key = if i % 5 == 0 { "nowhere" } else { "cq" };
        pending.push(
            within(ch.basic_publish(
                "",
                key,
                BasicPublishOptions::default(),
                m.as_bytes(),
                BasicProperties::default(),
            ))
            .await
            .unwrap(),
        );
    }
    for p in pending {
        let c = within(p).await.unwrap();
        assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
    }
    assert_eq!(drain(&ch, "cq").await.len(), 40);
    let listed = b.handle().connections();
    assert!(listed[0].channels.iter().any(|c| c.confirm));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_receives_an_ack_for_every_sequence_number() {
    let b = start().await;
    let conn = b.amqprs().await;
    let (ch, mut events) = amqp::channel(&conn).await;
    within(ch.queue_declare(QueueDeclareArguments::new("acq")))
        .await
        .unwrap();
    within(ch.confirm_select(ConfirmSelectArguments::new(false)))
        .await
        .unwrap();
    const N: u64 = 100;
    for i in 0..N {
        let key = if i % 3 == 0 { "void" } else { "acq" };
        within(ch.basic_publish(
            Default::default(),
            i.to_be_bytes().to_vec(),
            BasicPublishArguments::new("", key),
        ))
        .await
        .unwrap();
    }
    // Acks may be folded with `multiple`; together they must cover 1..=N exactly once.
    let mut confirmed = vec![false; N as usize + 1];
    let mut highest = 0u64;
    while highest < N {
        match amqp::next(&mut events).await {
            amqp::ChannelEvent::Ack(tag, multiple) => {
                assert!(tag > highest || !multiple, "acks go forward");
                let from = if multiple { 1 } else { tag };
                for t in from..=tag {
                    if multiple && confirmed[t as usize] {
                        continue;
                    }
                    assert!(!confirmed[t as usize], "tag {t} confirmed twice");
                    confirmed[t as usize] = true;
                }
                highest = highest.max(tag);
            }
            amqp::ChannelEvent::Nack(tag, multiple) => {
                panic!("basic.nack {tag} (multiple: {multiple}) for an in-memory queue")
            }
            other => panic!("expected basic.ack, got {other:?}"),
        }
    }
    assert!(confirmed[1..].iter().all(|c| *c));
    assert_eq!(b.handle().counters().published, N);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_publishes_appear_at_commit_and_vanish_at_rollback() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "txq").await;
    let (_c2, tch) = b.lapin_channel().await;
    within(tch.tx_select()).await.unwrap();
    publish(&tch, "", "txq", "one").await;
    publish(&tch, "", "txq", "two").await;
    // A round trip on the transactional channel, so both publishes were processed.
    within(tch.basic_qos(0, Default::default())).await.unwrap();
    assert_eq!(get(&ch, "txq").await, None, "not visible before commit");
    assert_eq!(b.queue("txq").unwrap().messages_ready, 0);
    within(tch.tx_commit()).await.unwrap();
    assert_eq!(drain(&ch, "txq").await, ["one", "two"]);
    publish(&tch, "", "txq", "three").await;
    within(tch.tx_rollback()).await.unwrap();
    assert_eq!(get(&ch, "txq").await, None, "rolled back");
    // The channel stays transactional: the next commit publishes what came after.
    publish(&tch, "", "txq", "four").await;
    within(tch.tx_commit()).await.unwrap();
    assert_eq!(drain(&ch, "txq").await, ["four"]);
    let listed = b.handle().connections();
    assert!(
        listed
            .iter()
            .flat_map(|c| c.channels.iter())
            .any(|c| c.transactional)
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_acks_take_effect_at_commit() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "txa").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "txa", m).await;
    }
    let (_c2, tch) = b.lapin_channel().await;
    within(tch.tx_select()).await.unwrap();
    let mut d = consume(&tch, "txa", "c", BasicConsumeOptions::default()).await;
    let got = d.take(3).await;
    b.wait_queue("txa", |q| q.messages_unacknowledged == 3)
        .await;
    within(tch.basic_ack(2, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    within(tch.basic_qos(0, Default::default())).await.unwrap();
    assert_eq!(
        b.queue("txa").unwrap().messages_unacknowledged,
        3,
        "acks wait for the commit"
    );
    within(tch.tx_commit()).await.unwrap();
    assert_eq!(b.queue("txa").unwrap().messages_unacknowledged, 1);
    // A rolled-back ack is forgotten: the message stays unacknowledged...
    within(tch.basic_ack(got[2].delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    within(tch.tx_rollback()).await.unwrap();
    assert_eq!(b.queue("txa").unwrap().messages_unacknowledged, 1);
    // ...and can be acknowledged again.
    within(tch.basic_ack(got[2].delivery_tag, BasicAckOptions::default()))
        .await
        .unwrap();
    within(tch.tx_commit()).await.unwrap();
    let q = b.queue("txa").unwrap();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (0, 0));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_and_tx_modes_exclude_each_other() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let err = within(ch.tx_select()).await.expect_err("confirm channel");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.tx_select()).await.unwrap();
    let err = within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect_err("tx channel");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.tx_commit()).await.expect_err("not transactional");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.tx_rollback())
        .await
        .expect_err("not transactional");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_round_trip_between_connections() {
    let b = start().await;
    // The server side: consumes requests, answers to their reply_to.
    let (_sc, sch) = b.lapin_channel().await;
    declare(&sch, "rpc").await;
    let mut requests = consume(
        &sch,
        "rpc",
        "server",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    // The client side: consumes its pseudo-queue, then sends requests.
    let (_cc, cch) = b.lapin_channel().await;
    let mut replies = consume(
        &cch,
        REPLY_TO,
        "",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    for i in 0..3 {
        within(
            cch.basic_publish(
                "",
                "rpc",
                BasicPublishOptions::default(),
                format!("question {i}").as_bytes(),
                BasicProperties::default()
                    .with_reply_to(REPLY_TO.into())
                    .with_correlation_id(format!("c{i}").into()),
            ),
        )
        .await
        .unwrap();
        let req = requests.next().await;
        let reply_to = req
            .properties
            .reply_to()
            .clone()
            .expect("reply_to set")
            .to_string();
        assert!(
            reply_to.starts_with("amq.rabbitmq.reply-to."),
            "reply_to rewritten to an address: {reply_to}"
        );
        assert_eq!(text(&req), format!("question {i}"));
        within(
            sch.basic_publish(
                "",
                &reply_to,
                BasicPublishOptions::default(),
                format!("answer {i}").as_bytes(),
                BasicProperties::default()
                    .with_correlation_id(req.properties.correlation_id().clone().unwrap()),
            ),
        )
        .await
        .unwrap();
        let reply = replies.next().await;
        assert_eq!(text(&reply), format!("answer {i}"));
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.to_string()),
            Some(format!("c{i}"))
        );
        assert_eq!(reply.routing_key.as_str(), reply_to);
        assert!(!reply.redelivered);
    }
    // No queue was created for the replies.
    let names: Vec<String> = b
        .handle()
        .queues("/")
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["rpc"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_misuse_is_precondition_failed() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "rpc").await;
    let mut errors = channel_errors(&ch);
    within(ch.basic_publish(
        "",
        "rpc",
        BasicPublishOptions::default(),
        b"q",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_error(&mut errors).await,
        (
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = crate::common::try_consume(&ch, REPLY_TO, "", BasicConsumeOptions::default())
        .await
        .err()
        .expect("reply consumer must be no-ack");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_split_and_reassembled() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "big").await;
    let body: Vec<u8> = (0..(1 << 20) + 17).map(|i| (i % 251) as u8).collect();
    within(ch.basic_publish(
        "",
        "big",
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "big", "c", BasicConsumeOptions::default()).await;
    let got = d.next().await;
    assert_eq!(got.data.len(), body.len());
    assert!(got.data == body, "body intact");
    within(got.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    // And through amqprs, both ways.
    let conn = b.amqprs().await;
    let (ach, _ev) = amqp::channel(&conn).await;
    within(ach.basic_publish(
        Default::default(),
        body.clone(),
        BasicPublishArguments::new("", "big"),
    ))
    .await
    .unwrap();
    let got = d.next().await;
    assert!(got.data == body, "amqprs-published body intact");
    declare(&ch, "big2").await;
    within(cch.basic_publish(
        "",
        "big2",
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let mut args = BasicConsumeArguments::new("big2", "rs");
    args.manual_ack(false);
    let (_tag, mut rx) = within(ach.basic_consume_rx(args)).await.unwrap();
    let (_, _, got, _) = amqp::delivery(&mut rx).await;
    assert!(got == body, "amqprs-consumed body intact");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_are_delivered() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "empty").await;
    for _ in 0..2 {
        within(ch.basic_publish(
            "",
            "empty",
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default().with_content_type("text/plain".into()),
        ))
        .await
        .unwrap();
    }
    let m = within(ch.basic_get("empty", BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .expect("get-ok");
    assert!(m.delivery.data.is_empty());
    assert_eq!(m.message_count, 1);
    let mut d = consume(
        &ch,
        "empty",
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got = d.next().await;
    assert!(got.data.is_empty());
    assert_eq!(
        got.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    b.stop().await;
}

fn rich_headers() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("value".into()));
    inner.insert("n".into(), AMQPValue::LongInt(7));
    let mut h = FieldTable::default();
    h.insert(
        "string".into(),
        AMQPValue::LongString("text ünïcode".into()),
    );
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-3));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(250));
    h.insert("i16".into(), AMQPValue::ShortInt(-300));
    h.insert("u16".into(), AMQPValue::ShortUInt(60000));
    h.insert("i32".into(), AMQPValue::LongInt(-70000));
    h.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    h.insert("i64".into(), AMQPValue::LongLongInt(-(1 << 40)));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(-2.25));
    h.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    h.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert("void".into(), AMQPValue::Void);
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
    );
    h.insert("table".into(), AMQPValue::FieldTable(inner.clone()));
    h.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("a".into()),
            AMQPValue::LongInt(1),
            AMQPValue::FieldTable(inner),
            AMQPValue::FieldArray(FieldArray::default()),
        ])),
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_round_trip_intact() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "props").await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("tests".into())
        .with_cluster_id("c1".into());
    within(ch.basic_publish(
        "",
        "props",
        BasicPublishOptions::default(),
        b"{}",
        props.clone(),
    ))
    .await
    .unwrap();
    let mut d = consume(
        &ch,
        "props",
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let got = d.next().await;
    assert_eq!(got.properties, props);
    // No properties at all stays no properties.
    publish(&ch, "", "props", "bare").await;
    let bare = d.next().await;
    assert_eq!(bare.properties, BasicProperties::default());
    // The same through amqprs.
    let conn = b.amqprs().await;
    let (ach, _ev) = amqp::channel(&conn).await;
    let mut headers = amqprs::FieldTable::new();
    headers.insert(
        "x-custom".try_into().unwrap(),
        amqprs::FieldValue::from("hello"),
    );
    headers.insert("x-flag".try_into().unwrap(), amqprs::FieldValue::from(true));
    let aprops = amqprs::BasicProperties::default()
        .with_content_type("text/plain")
        .with_headers(headers)
        .with_correlation_id("rs-corr")
        .with_priority(3)
        .with_persistence(true)
        .with_message_type("t")
        .finish();
    within(ach.basic_publish(
        aprops,
        b"rs".to_vec(),
        BasicPublishArguments::new("", "props"),
    ))
    .await
    .unwrap();
    let got = d.next().await;
    assert_eq!(text(&got), "rs");
    let p = &got.properties;
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("rs-corr")
    );
    assert_eq!(*p.priority(), Some(3));
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("t"));
    let h = p.headers().as_ref().expect("headers");
    assert_eq!(
        h.inner().get("x-custom"),
        Some(&AMQPValue::LongString("hello".into()))
    );
    assert_eq!(h.inner().get("x-flag"), Some(&AMQPValue::Boolean(true)));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_the_authenticated_user() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "uid").await;
    let mut errors = channel_errors(&ch);
    within(ch.basic_publish(
        "",
        "uid",
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default().with_user_id("mallory".into()),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_error(&mut errors).await,
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
                .into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(get(&ch, "uid").await, None, "the message was not enqueued");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_publishes_and_lapin_consumes_across_clients() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "mixed").await;
    let mut d = consume(&ch, "mixed", "c", BasicConsumeOptions::default()).await;
    let conn = b.amqprs().await;
    let (ach, _ev) = amqp::channel(&conn).await;
    for m in numbered("x", 30) {
        within(ach.basic_publish(
            Default::default(),
            m.into_bytes(),
            BasicPublishArguments::new("amq.direct", "k"),
        ))
        .await
        .unwrap();
    }
    // A round trip on the publishing channel: the x messages are routed (nowhere) first.
    within(ach.queue_declare(QueueDeclareArguments::new("mixed").passive(true).finish()))
        .await
        .unwrap();
    within(ch.queue_bind(
        "mixed",
        "amq.direct",
        "k",
        Default::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    for m in numbered("y", 30) {
        within(ach.basic_publish(
            Default::default(),
            m.into_bytes(),
            BasicPublishArguments::new("amq.direct", "k"),
        ))
        .await
        .unwrap();
    }
    let got: Vec<String> = d.take(30).await.iter().map(text).collect();
    assert_eq!(got, numbered("y", 30), "only messages after the bind");
    d.assert_quiet().await;
    b.stop().await;
}
