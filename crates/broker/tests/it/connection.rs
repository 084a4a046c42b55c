//! Opening connections: authentication, virtual host access, server properties, tuning.

use crate::common::{amqp, amqp_error, amqprs_connect, lapin_connect, start, start_with, within};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_logs_in_and_opens_a_channel() {
    let b = start().await;
    let (conn, ch) = b.lapin_channel().await;
    assert!(conn.status().connected());
    assert_eq!(conn.status().username(), "guest");
    assert_eq!(conn.status().vhost(), "/");
    let q = within(ch.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap();
    assert!(q.name().as_str().starts_with("amq.gen-"));
    let _ = within(conn.close(200, "bye")).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_access_refused() {
    let b = start().await;
    let err = lapin_connect(&b.uri_as("guest", "nope", "/"))
        .await
        .expect_err("login must fail");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
                .to_string()
        )
    );
    // An unknown user is told the same.
    let err = lapin_connect(&b.uri_as("mallory", "guest", "/"))
        .await
        .expect_err("login must fail");
    assert_eq!(amqp_error(&err).0, 403);
    assert_eq!(b.handle().connections().len(), 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_for_amqprs() {
    // amqprs does not announce `authentication_failure_close`: RabbitMQ (and Warren) just
    // close the socket; the client must see the open fail either way.
    let b = start().await;
    let r = amqprs_connect(b.addr, "guest", "wrong", "/").await;
    assert!(r.is_err(), "login with a wrong password must fail");
    let ok = amqprs_connect(b.addr, "guest", "guest", "/").await;
    assert!(ok.is_ok());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_not_allowed() {
    let b = start().await;
    let err = lapin_connect(&b.uri_as("guest", "guest", "nope"))
        .await
        .expect_err("vhost does not exist");
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - vhost nope not found".to_string())
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_permissions_on_vhost_is_not_allowed() {
    let b = start_with(|b| {
        b.user("guest", "guest", &["administrator"])
            .user("bob", "bob", &[])
            .vhost("/")
            .vhost("other")
            .permissions("guest", "/", ".*", ".*", ".*")
            .permissions("bob", "other", ".*", ".*", ".*")
    })
    .await;
    let err = lapin_connect(&b.uri_as("bob", "bob", "/"))
        .await
        .expect_err("bob has no permissions on /");
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'bob'".to_string()
        )
    );
    // Where bob has permissions, he gets in.
    let conn = lapin_connect(&b.uri_as("bob", "bob", "other"))
        .await
        .expect("bob may use 'other'");
    assert_eq!(conn.status().vhost(), "other");
    let listed = b.handle().connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user, "bob");
    assert_eq!(listed[0].vhost, "other");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_properties_announce_rabbitmq_capabilities() {
    let b = start().await;
    let conn = b.amqprs().await;
    let props = conn.server_properties();
    assert_eq!(props.product(), "Warren");
    assert!(!props.version().is_empty());
    assert!(!props.cluster_name().is_empty());
    let c = props.capabilities();
    assert!(c.publisher_confirms());
    assert!(c.exchange_exchange_bindings());
    assert!(c.basic_nack());
    assert!(c.consumer_cancel_notify());
    assert!(c.connection_blocked());
    assert!(c.consumer_priorities());
    assert!(c.authentication_failure_close());
    assert!(c.per_consumer_qos());
    assert!(c.direct_reply_to());
    within(conn.close()).await.unwrap();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_max_and_frame_max_are_negotiated() {
    let b = start_with(|b| b.channel_max(16).frame_max(65536)).await;
    // The client takes the server's values when it asks for none...
    let conn = b.lapin().await;
    assert_eq!(conn.configuration().channel_max(), 16);
    assert_eq!(conn.configuration().frame_max(), 65536);
    // ...and the lower values when it asks for less.
    let low = lapin_connect(&format!("{}?channel_max=4&frame_max=10000", b.uri()))
        .await
        .unwrap();
    assert_eq!(low.configuration().channel_max(), 4);
    assert_eq!(low.configuration().frame_max(), 10000);
    // A message larger than a frame still goes through with the small frame size.
    let ch = within(low.create_channel()).await.unwrap();
    within(ch.queue_declare("big", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap();
    let body = vec![7u8; 20_000];
    within(ch.basic_publish("", "big", Default::default(), &body, Default::default()))
        .await
        .unwrap();
    let got = within(ch.basic_get("big", Default::default()))
        .await
        .unwrap()
        .expect("message");
    assert_eq!(got.delivery.data, body);
    // amqprs takes the server's values as they are.
    let a = b.amqprs().await;
    assert_eq!(a.channel_max(), 16);
    assert_eq!(a.frame_max(), 65536);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_negotiated() {
    let b = start_with(|b| b.heartbeat(5)).await;
    // Both non-zero: the lower wins.
    let conn = lapin_connect(&format!("{}?heartbeat=2", b.uri()))
        .await
        .unwrap();
    assert_eq!(conn.configuration().heartbeat(), 2);
    // The client asks for none: lapin follows the server.
    let conn0 = b.lapin().await;
    assert_eq!(conn0.configuration().heartbeat(), 5);
    let mut args = amqprs::connection::OpenConnectionArguments::new(
        &b.addr.ip().to_string(),
        b.addr.port(),
        "guest",
        "guest",
    );
    args.heartbeat(3);
    let a = within(amqprs::connection::Connection::open(&args))
        .await
        .unwrap();
    assert_eq!(a.heartbeat(), 3);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_survives_on_heartbeats() {
    // With a one-second heartbeat, an idle connection lives on heartbeats alone: the server
    // must send them (or lapin reports a missing heartbeat) and accept the client's.
    let b = start_with(|b| b.heartbeat(1)).await;
    let conn = b.lapin().await;
    assert_eq!(conn.configuration().heartbeat(), 1);
    let mut errors = crate::common::connection_errors(&conn);
    let a = b.amqprs().await;
    let mut closes = amqp::on_close(&a).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(errors.try_recv().is_err(), "lapin connection failed");
    assert!(closes.try_recv().is_err(), "amqprs connection was closed");
    assert!(conn.status().connected());
    assert!(a.is_open());
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(b.handle().connections().len(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_name_is_listed() {
    let b = start().await;
    let mut args = amqprs::connection::OpenConnectionArguments::new(
        &b.addr.ip().to_string(),
        b.addr.port(),
        "guest",
        "guest",
    );
    args.connection_name("reporting-service");
    let _a = within(amqprs::connection::Connection::open(&args))
        .await
        .unwrap();
    let listed = b.handle().connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client_name.as_deref(), Some("reporting-service"));
    assert_eq!(listed[0].user, "guest");
    assert!(listed[0].peer.is_some_and(|p| p.ip().is_loopback()));
    b.stop().await;
}
