//! Queues: declaration (named, server-named, passive, durable, exclusive, auto-delete),
//! equivalence, deletion with conditions, purge, bindings.

use crate::common::{
    amqp, amqp_error, consume, declare, drain, get, publish, start, try_consume, within,
};
use amqprs::channel::{
    BasicPublishArguments, QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
    QueuePurgeArguments, QueueUnbindArguments,
};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;

fn opts(durable: bool, exclusive: bool, auto_delete: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable,
        exclusive,
        auto_delete,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_and_server_named_queues() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    let q = within(ch.queue_declare("orders", opts(false, false, false), FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(q.name().as_str(), "orders");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    let gen1 = within(ch.queue_declare("", opts(false, true, false), FieldTable::default()))
        .await
        .unwrap();
    let gen2 = within(ch.queue_declare("", opts(false, true, false), FieldTable::default()))
        .await
        .unwrap();
    for g in [&gen1, &gen2] {
        let name = g.name().as_str();
        assert!(name.starts_with("amq.gen-"), "{name}");
        assert_eq!(name.len(), 30, "{name}");
    }
    assert_ne!(gen1.name(), gen2.name());
    // Redeclaring reports the current counts.
    publish(&ch, "", "orders", "1").await;
    publish(&ch, "", "orders", "2").await;
    let _consumer = consume(&ch, gen1.name().as_str(), "c", Default::default()).await;
    let again =
        within(ch.queue_declare("orders", opts(false, false, false), FieldTable::default()))
            .await
            .unwrap();
    assert_eq!((again.message_count(), again.consumer_count()), (2, 0));
    // A server-named queue can only be redeclared passively: its name has the reserved
    // prefix.
    let g = within(ch.queue_declare(
        gen1.name().as_str(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(g.consumer_count(), 1);
    let names: Vec<String> = b
        .handle()
        .queues("/")
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert!(names.contains(&"orders".to_string()));
    assert!(names.contains(&gen1.name().to_string()));
    assert!(names.contains(&gen2.name().to_string()));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_is_not_found() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "here").await;
    publish(&ch, "", "here", "m").await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // Passive ignores the other flags, and reports the counts.
    let q = within(ch.queue_declare(
        "here",
        QueueDeclareOptions {
            durable: true,
            ..passive
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(q.message_count(), 1);
    let err = within(ch.queue_declare("nope", passive, FieldTable::default()))
        .await
        .expect_err("no such queue");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no queue 'nope' in vhost '/'".into())
    );
    assert!(conn.status().connected());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_flags_are_recorded_and_listed() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    for (name, o) in [
        ("durable", opts(true, false, false)),
        ("transient", opts(false, false, false)),
        ("auto", opts(false, false, true)),
        ("mine", opts(false, true, false)),
    ] {
        within(ch.queue_declare(name, o, FieldTable::default()))
            .await
            .unwrap();
    }
    let flags = |name: &str| {
        let q = b.queue(name).expect("listed");
        (q.durable, q.exclusive, q.auto_delete)
    };
    assert_eq!(flags("durable"), (true, false, false));
    assert_eq!(flags("transient"), (false, false, false));
    assert_eq!(flags("auto"), (false, false, true));
    assert_eq!(flags("mine"), (false, true, false));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_flags_is_precondition_failed() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "q").await;
    let err = within(ch.queue_declare("q", opts(true, false, false), FieldTable::default()))
        .await
        .expect_err("durable differs");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
                .into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_declare("q", opts(false, false, true), FieldTable::default()))
        .await
        .expect_err("auto_delete differs");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'"
                .into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_queue_names_are_refused() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    let err =
        within(ch.queue_declare("amq.mine", opts(false, false, false), FieldTable::default()))
            .await
            .expect_err("amq. is reserved");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'".into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection_and_goes_with_it() {
    let b = start().await;
    let owner = b.lapin().await;
    let och = within(owner.create_channel()).await.unwrap();
    within(och.queue_declare("excl", opts(false, true, false), FieldTable::default()))
        .await
        .unwrap();
    let locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'excl' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";
    let other = b.lapin().await;
    // Declaring it again (exclusive or not), passively, consuming, getting: all 405.
    for o in [
        opts(false, true, false),
        opts(false, false, false),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
    ] {
        let ch = within(other.create_channel()).await.unwrap();
        let err = within(ch.queue_declare("excl", o, FieldTable::default()))
            .await
            .expect_err("exclusive to another connection");
        assert_eq!(amqp_error(&err), (405, locked.to_string()), "{o:?}");
    }
    let ch = within(other.create_channel()).await.unwrap();
    let err = try_consume(&ch, "excl", "c", Default::default())
        .await
        .err()
        .expect("consume refused");
    assert_eq!(amqp_error(&err), (405, locked.to_string()));
    let ch = within(other.create_channel()).await.unwrap();
    let err = within(ch.basic_get("excl", BasicGetOptions::default()))
        .await
        .expect_err("get refused");
    assert_eq!(amqp_error(&err), (405, locked.to_string()));
    // Even the owner cannot redeclare it without `exclusive`, nor make a shared queue
    // exclusive: both are 405 too.
    let ch = within(owner.create_channel()).await.unwrap();
    let err = within(ch.queue_declare("excl", opts(false, false, false), FieldTable::default()))
        .await
        .expect_err("exclusive flag differs");
    assert_eq!(amqp_error(&err), (405, locked.to_string()));
    let ch = within(owner.create_channel()).await.unwrap();
    declare(&ch, "shared").await;
    let err = within(ch.queue_declare("shared", opts(false, true, false), FieldTable::default()))
        .await
        .expect_err("exclusive flag differs");
    assert_eq!(
        amqp_error(&err),
        (405, locked.replace("'excl'", "'shared'"))
    );
    // The owner may use it; and it goes when the owner closes.
    publish(&och, "", "excl", "m").await;
    assert_eq!(get(&och, "excl").await.as_deref(), Some("m"));
    // (The close's own result is checked in raw::lapin_close_completes_without_error.)
    let _ = within(owner.close(200, "bye")).await;
    b.wait_queue_gone("excl").await;
    // Now anyone may declare it.
    let ch = within(other.create_channel()).await.unwrap();
    declare(&ch, "excl").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_after_its_last_consumer() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    within(ch.queue_declare("ad", opts(false, false, true), FieldTable::default()))
        .await
        .unwrap();
    let _c1 = consume(&ch, "ad", "one", Default::default()).await;
    let _c2 = consume(&ch, "ad", "two", Default::default()).await;
    assert_eq!(b.queue("ad").unwrap().consumers, 2);
    within(ch.basic_cancel("one", BasicCancelOptions::default()))
        .await
        .unwrap();
    assert_eq!(b.queue("ad").expect("still there").consumers, 1);
    within(ch.basic_cancel("two", BasicCancelOptions::default()))
        .await
        .unwrap();
    b.wait_queue_gone("ad").await;
    // An auto-delete queue that never had a consumer stays.
    within(ch.queue_declare("ad2", opts(false, false, true), FieldTable::default()))
        .await
        .unwrap();
    publish(&ch, "", "ad2", "m").await;
    assert_eq!(get(&ch, "ad2").await.as_deref(), Some("m"));
    assert!(b.queue("ad2").is_some());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "q").await;
    let cch = within(conn.create_channel()).await.unwrap();
    let _consumer = consume(&cch, "q", "c", Default::default()).await;
    let err = within(ch.queue_delete(
        "q",
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect_err("has a consumer");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' in use".into()
        )
    );
    within(cch.basic_cancel("c", BasicCancelOptions::default()))
        .await
        .unwrap();
    let ch = within(conn.create_channel()).await.unwrap();
    publish(&ch, "", "q", "m").await;
    let err = within(ch.queue_delete(
        "q",
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        },
    ))
    .await
    .expect_err("has a message");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    publish(&ch, "", "q", "m2").await;
    publish(&ch, "", "q", "m3").await;
    let n = within(ch.queue_delete(
        "q",
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect("no consumer now");
    assert_eq!(n, 3, "delete-ok carries the messages deleted");
    assert!(b.queue("q").is_none());
    // Deleting a missing queue succeeds with 0.
    let n = within(ch.queue_delete("q", QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(n, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_the_count_and_keeps_unacked() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "p").await;
    for i in 0..5 {
        publish(&ch, "", "p", &format!("m{i}")).await;
    }
    // One fetched and not acknowledged: not purged.
    let held = within(ch.basic_get("p", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(held.message_count, 4);
    let n = within(ch.queue_purge("p", QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(get(&ch, "p").await, None);
    let q = b.queue("p").unwrap();
    assert_eq!((q.messages_ready, q.messages_unacknowledged), (0, 1));
    within(ch.basic_reject(
        held.delivery.delivery_tag,
        lapin::options::BasicRejectOptions { requeue: true },
    ))
    .await
    .unwrap();
    let n = within(ch.queue_purge("p", QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(n, 1, "the requeued message is purged");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_change_routing() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "q").await;
    within(ch.queue_bind(
        "q",
        "amq.topic",
        "a.*",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // Binding twice is one binding.
    within(ch.queue_bind(
        "q",
        "amq.topic",
        "a.*",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let listed: Vec<_> = b
        .handle()
        .bindings("/")
        .unwrap()
        .into_iter()
        .filter(|x| x.destination == "q" && x.source == "amq.topic")
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].routing_key, "a.*");
    assert_eq!(listed[0].destination_kind, "queue");
    publish(&ch, "amq.topic", "a.b", "yes").await;
    publish(&ch, "amq.topic", "b.a", "no").await;
    assert_eq!(drain(&ch, "q").await, ["yes"]);
    within(ch.queue_unbind("q", "amq.topic", "a.*", FieldTable::default()))
        .await
        .unwrap();
    publish(&ch, "amq.topic", "a.b", "after").await;
    assert_eq!(get(&ch, "q").await, None);
    assert!(
        !b.handle()
            .bindings("/")
            .unwrap()
            .iter()
            .any(|x| x.destination == "q" && x.source == "amq.topic")
    );
    // Deleting a queue removes its bindings.
    within(ch.queue_bind(
        "q",
        "amq.fanout",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.queue_delete("q", QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert!(
        !b.handle()
            .bindings("/")
            .unwrap()
            .iter()
            .any(|x| x.destination == "q")
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_name_means_the_last_declared_queue() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    // Nothing declared on this channel yet.
    let err = within(ch.queue_bind(
        "",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("no queue declared yet");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no previously declared queue".into())
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let q = within(ch.queue_declare("", opts(false, true, false), FieldTable::default()))
        .await
        .unwrap();
    within(ch.queue_bind(
        "",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    publish(&ch, "amq.direct", "k", "m").await;
    assert_eq!(get(&ch, q.name().as_str()).await.as_deref(), Some("m"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_declares_binds_purges_and_deletes() {
    let b = start().await;
    let conn = b.amqprs().await;
    let (ch, mut events) = amqp::channel(&conn).await;
    let (name, messages, consumers) = within(ch.queue_declare(QueueDeclareArguments::new("rs")))
        .await
        .unwrap()
        .expect("declare-ok");
    assert_eq!((name.as_str(), messages, consumers), ("rs", 0, 0));
    let (gen_name, _, _) =
        within(ch.queue_declare(QueueDeclareArguments::exclusive_server_named()))
            .await
            .unwrap()
            .unwrap();
    assert!(gen_name.starts_with("amq.gen-") && gen_name.len() == 30);
    within(ch.queue_bind(QueueBindArguments::new("rs", "amq.direct", "key")))
        .await
        .unwrap();
    for i in 0..3u8 {
        within(ch.basic_publish(
            Default::default(),
            vec![i],
            BasicPublishArguments::new("amq.direct", "key"),
        ))
        .await
        .unwrap();
    }
    let (_, messages, _) = within(ch.queue_declare(QueueDeclareArguments::new("rs")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages, 3);
    assert_eq!(b.queue("rs").unwrap().messages_ready, 3);
    within(ch.queue_unbind(QueueUnbindArguments::new("rs", "amq.direct", "key")))
        .await
        .unwrap();
    within(ch.basic_publish(
        Default::default(),
        vec![9],
        BasicPublishArguments::new("amq.direct", "key"),
    ))
    .await
    .unwrap();
    let purged = within(ch.queue_purge(QueuePurgeArguments::new("rs")))
        .await
        .unwrap();
    assert_eq!(purged, Some(3));
    within(ch.basic_publish(
        Default::default(),
        vec![1],
        BasicPublishArguments::new("", "rs"),
    ))
    .await
    .unwrap();
    let deleted = within(ch.queue_delete(QueueDeleteArguments::new("rs")))
        .await
        .unwrap();
    assert_eq!(deleted, Some(1));
    assert!(b.queue("rs").is_none());
    // A passive declare of the deleted queue closes the channel with 404.
    let mut passive = QueueDeclareArguments::new("rs");
    passive.passive(true);
    let r = within(ch.queue_declare(passive)).await;
    assert!(r.is_err());
    match amqp::next(&mut events).await {
        amqp::ChannelEvent::Closed(code, text) => {
            assert_eq!(
                (code, text.as_str()),
                (404, "NOT_FOUND - no queue 'rs' in vhost '/'")
            );
        }
        other => panic!("expected a channel close, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_count_in_declare_ok_counts_consumers() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "cc").await;
    let _a = consume(&ch, "cc", "a", BasicConsumeOptions::default()).await;
    let _b2 = consume(&ch, "cc", "b", BasicConsumeOptions::default()).await;
    let q = within(ch.queue_declare(
        "cc",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(q.consumer_count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_arguments_is_precondition_failed() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut ten = FieldTable::default();
    ten.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(10));
    within(ch.queue_declare("bounded", opts(false, false, false), ten.clone()))
        .await
        .unwrap();
    within(ch.queue_declare("bounded", opts(false, false, false), ten))
        .await
        .expect("same arguments");
    let mut twenty = FieldTable::default();
    twenty.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(20));
    let err = within(ch.queue_declare("bounded", opts(false, false, false), twenty))
        .await
        .expect_err("x-max-length differs");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'bounded' in vhost '/': received '20' but current is '10'"
                .into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_declare("bounded", opts(false, false, false), FieldTable::default()))
        .await
        .expect_err("x-max-length missing");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'bounded' in vhost '/': received none but current is the value '10' of type 'signedint'"
                .into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_its_consumers_connection_closes() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    within(ch.queue_declare("ad-conn", opts(false, false, true), FieldTable::default()))
        .await
        .unwrap();
    let (consumer_conn, cch) = b.lapin_channel().await;
    let _d = consume(&cch, "ad-conn", "c", Default::default()).await;
    assert_eq!(b.queue("ad-conn").unwrap().consumers, 1);
    let _ = within(consumer_conn.close(200, "bye")).await;
    b.wait_queue_gone("ad-conn").await;
    b.stop().await;
}
