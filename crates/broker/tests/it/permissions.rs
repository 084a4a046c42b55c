//! Permissions: configure, write and read regular expressions, checked as RabbitMQ checks
//! them (the default exchange under the name `amq.default`).

use crate::common::{
    TestBroker, amqp, amqp_error, channel_errors, declare, get, lapin_connect, next_error, publish,
    start_with, try_consume, within,
};
use amqprs::channel::{BasicGetArguments, QueueDeclareArguments};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

/// guest may do anything; bob may configure and read `bob-*` and write to `bob-*` and the
/// default exchange.
async fn broker() -> TestBroker {
    start_with(|b| {
        b.user("guest", "guest", &["administrator"])
            .user("bob", "bob", &[])
            .vhost("/")
            .permissions("guest", "/", ".*", ".*", ".*")
            .permissions("bob", "/", "^bob-", "^(bob-.*|amq\\.default)$", "^bob-")
    })
    .await
}

async fn bob(b: &TestBroker) -> Connection {
    lapin_connect(&b.uri_as("bob", "bob", "/"))
        .await
        .expect("bob logs in")
}

fn refused(kind: &str, name: &str) -> (u16, String) {
    (
        403,
        format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'bob'"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_permission_governs_declare_and_delete() {
    let b = broker().await;
    let conn = bob(&b).await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "bob-q").await;
    within(ch.exchange_declare(
        "bob-x",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let err = within(ch.queue_declare("q", Default::default(), FieldTable::default()))
        .await
        .expect_err("configure on 'q' refused");
    assert_eq!(amqp_error(&err), refused("queue", "q"));
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_declare(
        "x",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("configure on exchange 'x' refused");
    assert_eq!(amqp_error(&err), refused("exchange", "x"));
    // A server-named queue is checked under its generated name: amq.gen-* is not bob-*.
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_declare("", Default::default(), FieldTable::default()))
        .await
        .expect_err("configure on amq.gen-* refused");
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-")
            && text.ends_with("' in vhost '/' refused for user 'bob'"),
        "{text}"
    );
    // Deleting someone else's queue needs configure too.
    let (_g, gch) = b.lapin_channel().await;
    declare(&gch, "shared").await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_delete("shared", QueueDeleteOptions::default()))
        .await
        .expect_err("configure on 'shared' refused");
    assert_eq!(amqp_error(&err), refused("queue", "shared"));
    assert!(b.queue("shared").is_some());
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.queue_delete("bob-q", QueueDeleteOptions::default()))
        .await
        .expect("bob may delete his queue");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_permission_governs_publish_and_bind() {
    let b = broker().await;
    let (_g, gch) = b.lapin_channel().await;
    within(gch.exchange_declare(
        "orders",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let conn = bob(&b).await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "bob-q").await;
    within(ch.exchange_declare(
        "bob-x",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // Bind: write on the queue, read on the exchange.
    within(ch.queue_bind(
        "bob-q",
        "bob-x",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    // Allowed: bob-x and the default exchange.
    publish(&ch, "bob-x", "", "via-x").await;
    publish(&ch, "", "bob-q", "direct").await;
    assert_eq!(get(&ch, "bob-q").await.as_deref(), Some("via-x"));
    assert_eq!(get(&ch, "bob-q").await.as_deref(), Some("direct"));
    // Refused: another exchange.
    let mut errors = channel_errors(&ch);
    publish(&ch, "orders", "", "nope").await;
    assert_eq!(next_error(&mut errors).await, refused("exchange", "orders"));
    // Binding from an exchange bob cannot read.
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_bind(
        "bob-q",
        "orders",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("read on 'orders' refused");
    assert_eq!(amqp_error(&err), refused("exchange", "orders"));
    // Binding to a queue bob cannot write.
    declare(&gch, "guest-q").await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_bind(
        "guest-q",
        "bob-x",
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("write on 'guest-q' refused");
    assert_eq!(amqp_error(&err), refused("queue", "guest-q"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_to_the_default_exchange_is_checked_as_amq_default() {
    let b = start_with(|b| {
        b.user("carol", "carol", &[])
            .vhost("/")
            .permissions("carol", "/", ".*", "^carol-x$", ".*")
    })
    .await;
    let conn = lapin_connect(&b.uri_as("carol", "carol", "/"))
        .await
        .unwrap();
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "carol-q").await;
    let mut errors = channel_errors(&ch);
    publish(&ch, "", "carol-q", "m").await;
    assert_eq!(
        next_error(&mut errors).await,
        (
            403,
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'carol'"
                .into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_permission_governs_consume_get_and_purge() {
    let b = broker().await;
    let (_g, gch) = b.lapin_channel().await;
    declare(&gch, "secret").await;
    publish(&gch, "", "secret", "classified").await;
    let conn = bob(&b).await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.basic_get("secret", BasicGetOptions::default()))
        .await
        .expect_err("read on 'secret' refused");
    assert_eq!(amqp_error(&err), refused("queue", "secret"));
    let ch = within(conn.create_channel()).await.unwrap();
    let err = try_consume(&ch, "secret", "c", Default::default())
        .await
        .err()
        .expect("consume refused");
    assert_eq!(amqp_error(&err), refused("queue", "secret"));
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_purge("secret", QueuePurgeOptions::default()))
        .await
        .expect_err("purge refused");
    assert_eq!(amqp_error(&err), refused("queue", "secret"));
    assert_eq!(b.queue("secret").unwrap().messages_ready, 1);
    // Bob's own queue is readable.
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "bob-q").await;
    publish(&ch, "", "bob-q", "mine").await;
    assert_eq!(get(&ch, "bob-q").await.as_deref(), Some("mine"));
    let _d = try_consume(&ch, "bob-q", "c", Default::default())
        .await
        .expect("consume allowed");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_sees_permission_refusals_as_channel_closes() {
    let b = broker().await;
    let conn = crate::common::amqprs_connect(b.addr, "bob", "bob", "/")
        .await
        .unwrap();
    let (ch, mut events) = amqp::channel(&conn).await;
    within(ch.queue_declare(QueueDeclareArguments::new("bob-ok")))
        .await
        .unwrap();
    assert!(
        within(ch.basic_get(BasicGetArguments::new("bob-ok")))
            .await
            .unwrap()
            .is_none()
    );
    let r = within(ch.queue_declare(QueueDeclareArguments::new("forbidden"))).await;
    assert!(r.is_err());
    match amqp::next(&mut events).await {
        amqp::ChannelEvent::Closed(code, text) => {
            assert_eq!((code, text), refused("queue", "forbidden"));
        }
        other => panic!("expected a channel close, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_granted_at_runtime_apply_to_new_connections() {
    let b = broker().await;
    let handle = b.handle();
    handle.add_user("dave", "pw", &[]);
    let err = lapin_connect(&b.uri_as("dave", "pw", "/"))
        .await
        .expect_err("no permissions yet");
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'dave'".into()
        )
    );
    handle
        .set_permissions("dave", "/", "^dave-", "^dave-", "^dave-")
        .unwrap();
    let conn = lapin_connect(&b.uri_as("dave", "pw", "/")).await.unwrap();
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "dave-q").await;
    let err = within(ch.queue_declare("other", Default::default(), FieldTable::default()))
        .await
        .expect_err("configure refused");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - access to queue 'other' in vhost '/' refused for user 'dave'".into()
        )
    );
    assert!(
        handle
            .permissions_list()
            .iter()
            .any(|p| p.0 == "dave" && p.1 == "/" && p.2 == "^dave-")
    );
    b.stop().await;
}
