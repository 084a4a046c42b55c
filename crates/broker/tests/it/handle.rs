//! The embedding API: listings, counters, administration, shutdown.

use crate::common::{
    amqp, amqp_error, connection_errors, consume, declare, eventually, lapin_connect, next_error,
    numbered, publish, start, start_with, within,
};
use lapin::options::{BasicAckOptions, BasicQosOptions, ConfirmSelectOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_listing_counts_ready_unacked_and_consumers() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "counted").await;
    for m in numbered("msg", 5) {
        publish(&ch, "", "counted", &m).await;
    }
    let q = b.wait_queue("counted", |q| q.messages_ready == 5).await;
    assert_eq!(q.messages_unacknowledged, 0);
    assert_eq!(q.consumers, 0);
    assert_eq!(q.message_bytes_ready, 5 * 4);
    assert_eq!(q.counters.published, 5);
    let (_c2, cch) = b.lapin_channel().await;
    within(cch.basic_qos(2, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut d = consume(&cch, "counted", "c", Default::default()).await;
    let q = b
        .wait_queue("counted", |q| {
            q.messages_ready == 3 && q.messages_unacknowledged == 2
        })
        .await;
    assert_eq!(q.consumers, 1);
    assert_eq!(q.message_bytes_ready, 3 * 4);
    let got = d.take(2).await;
    within(got[1].acker.ack(BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    let q = b.wait_queue("counted", |q| q.counters.acked == 2).await;
    assert_eq!(q.counters.delivered, 4);
    assert_eq!(q.vhost, "/");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_listing_shows_channels_and_their_state() {
    let b = start().await;
    let conn = b.lapin().await;
    let c1 = within(conn.create_channel()).await.unwrap();
    let c2 = within(conn.create_channel()).await.unwrap();
    let c3 = within(conn.create_channel()).await.unwrap();
    within(c1.basic_qos(7, BasicQosOptions { global: false }))
        .await
        .unwrap();
    within(c1.basic_qos(20, BasicQosOptions { global: true }))
        .await
        .unwrap();
    within(c2.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    within(c3.tx_select()).await.unwrap();
    declare(&c1, "lq").await;
    publish(&c1, "", "lq", "m").await;
    let _d = consume(&c1, "lq", "c", Default::default()).await;
    b.wait_queue("lq", |q| q.messages_unacknowledged == 1).await;
    let handle = b.handle();
    let listed = eventually(|| {
        let l = handle.connections();
        l.first()
            .filter(|c| c.channels.iter().any(|ch| ch.unacked == 1))
            .cloned()
    })
    .await
    .expect("listing catches up");
    assert_eq!(listed.user, "guest");
    assert_eq!(listed.vhost, "/");
    let mut chans = listed.channels.clone();
    chans.sort_by_key(|c| c.number);
    assert_eq!(
        chans.iter().map(|c| c.number).collect::<Vec<_>>(),
        [c1.id(), c2.id(), c3.id()]
    );
    let l1 = chans[0];
    assert_eq!(
        (l1.prefetch, l1.global_prefetch, l1.consumers, l1.unacked),
        (7, 20, 1, 1)
    );
    assert!(!l1.confirm && !l1.transactional);
    assert!(chans[1].confirm && !chans[1].transactional);
    assert!(chans[2].transactional && !chans[2].confirm);
    // A closed channel leaves the listing.
    within(c3.close(200, "bye")).await.unwrap();
    let remaining = eventually(|| {
        let l = handle.connections();
        let n = l.first().map(|c| c.channels.len());
        (n == Some(2)).then_some(n)
    })
    .await;
    assert!(remaining.is_some(), "{:?}", handle.connections());
    let _ = within(conn.close(200, "bye")).await;
    assert!(
        eventually(|| handle.connections().is_empty().then_some(()))
            .await
            .is_some()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_traffic() {
    let b = start().await;
    let before = b.handle().counters();
    assert_eq!(before.connections_opened, 0);
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "ctr").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut confirms = Vec::new();
    let mut plan = vec![("ctr", false); 2];
    plan.extend([("nowhere", true); 28]);
    for (key, mandatory) in plan {
        confirms.push(
            within(ch.basic_publish(
                "",
                key,
                lapin::options::BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                b"1234",
                Default::default(),
            ))
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        within(c).await.unwrap();
    }
    let (_c2, cch) = b.lapin_channel().await;
    let mut d = consume(&cch, "ctr", "c", Default::default()).await;
    let got = d.take(2).await;
    within(got[1].acker.ack(BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    let handle = b.handle();
    let c = eventually(|| {
        let c = handle.counters();
        (c.acked == 2).then_some(c)
    })
    .await
    .expect("acks counted");
    assert_eq!(c.connections_opened, 2);
    assert_eq!(c.published, 30);
    assert_eq!(c.routed, 2);
    assert_eq!(c.unroutable, 28);
    assert_eq!(c.returned, 28);
    // (How acks folded with `multiple` are counted: raw::confirmed_counter_counts_messages.)
    assert!(c.confirmed >= 1);
    assert_eq!(c.delivered, 2);
    assert_eq!(c.message_memory, 0, "acknowledged messages are freed");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_memory_tracks_held_bodies() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "mem").await;
    let body = vec![0u8; 10_000];
    for _ in 0..3 {
        within(ch.basic_publish("", "mem", Default::default(), &body, Default::default()))
            .await
            .unwrap();
    }
    b.wait_queue("mem", |q| q.messages_ready == 3).await;
    let used = b.handle().counters().message_memory;
    assert!(used >= 30_000, "message memory {used}");
    within(ch.queue_purge("mem", Default::default()))
        .await
        .unwrap();
    let handle = b.handle();
    assert!(
        eventually(|| (handle.counters().message_memory == 0).then_some(()))
            .await
            .is_some(),
        "purged messages are freed: {}",
        handle.counters().message_memory
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_forces_the_client_out() {
    let b = start().await;
    let conn = b.lapin().await;
    let mut errors = connection_errors(&conn);
    let a = b.amqprs().await;
    let mut closes = amqp::on_close(&a).await;
    let handle = b.handle();
    let listed = handle.connections();
    assert_eq!(listed.len(), 2);
    for c in &listed {
        assert!(handle.close_connection(c.id, "go away"));
    }
    assert_eq!(
        next_error(&mut errors).await,
        (320, "CONNECTION_FORCED - go away".into())
    );
    assert_eq!(
        within(closes.recv()).await.expect("connection.close"),
        (320, "CONNECTION_FORCED - go away".into())
    );
    assert!(
        eventually(|| handle.connections().is_empty().then_some(()))
            .await
            .is_some()
    );
    assert!(!handle.close_connection(listed[0].id, "again"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_connection_forced() {
    let b = start().await;
    let conn = b.lapin().await;
    let mut errors = connection_errors(&conn);
    let a = b.amqprs().await;
    let mut closes = amqp::on_close(&a).await;
    let addr = b.addr;
    let uri = b.uri();
    within(b.broker.shutdown(Duration::from_secs(5))).await;
    let expected = (
        320,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'".to_string(),
    );
    assert_eq!(next_error(&mut errors).await, expected);
    assert_eq!(
        within(closes.recv()).await.expect("connection.close"),
        expected
    );
    // Nothing listens any more.
    let deadline = tokio::time::Instant::now() + crate::common::TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lapin_connect(&uri).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_added_and_deleted_at_runtime() {
    let b = start().await;
    let handle = b.handle();
    assert_eq!(handle.vhosts(), ["/"]);
    handle.add_vhost("staging");
    handle
        .set_permissions("guest", "staging", ".*", ".*", ".*")
        .unwrap();
    assert_eq!(handle.vhosts(), ["/", "staging"]);
    let conn = lapin_connect(&b.uri_as("guest", "guest", "staging"))
        .await
        .unwrap();
    let mut errors = connection_errors(&conn);
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "sq").await;
    assert_eq!(handle.queues("staging").unwrap().len(), 1);
    assert!(
        handle.queues("/").unwrap().is_empty(),
        "vhosts are separate"
    );
    assert!(handle.delete_vhost("staging"));
    let (code, _text) = next_error(&mut errors).await;
    assert_eq!(code, 320);
    assert!(handle.queues("staging").is_err());
    assert_eq!(handle.vhosts(), ["/"]);
    let err = lapin_connect(&b.uri_as("guest", "guest", "staging"))
        .await
        .expect_err("vhost gone");
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - vhost staging not found".into())
    );
    assert!(!handle.delete_vhost("staging"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_blocks_publishers_until_memory_is_freed() {
    let b = start_with(|b| b.memory_high_watermark(50_000)).await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "heavy").await;
    let publisher = b.lapin().await;
    let pch = within(publisher.create_channel()).await.unwrap();
    // lapin holds publishes back while blocked, so they go from a task of their own.
    let sender = tokio::spawn(async move {
        let body = vec![1u8; 10_000];
        for _ in 0..8 {
            pch.basic_publish("", "heavy", Default::default(), &body, Default::default())
                .await
                .unwrap();
        }
        pch.basic_publish(
            "",
            "heavy",
            Default::default(),
            b"after",
            Default::default(),
        )
        .await
        .unwrap();
    });
    let handle = b.handle();
    assert!(
        eventually(|| (handle.memory_alarm() && publisher.status().blocked()).then_some(()))
            .await
            .is_some(),
        "alarm {} / publisher blocked {}",
        handle.memory_alarm(),
        publisher.status().blocked()
    );
    // A connection that does not publish keeps working, and frees memory.
    let purged = within(ch.queue_purge("heavy", Default::default()))
        .await
        .unwrap();
    assert!(purged >= 5, "purged {purged}");
    assert!(
        eventually(|| (!handle.memory_alarm() && !publisher.status().blocked()).then_some(()))
            .await
            .is_some(),
        "alarm {} / publisher blocked {}",
        handle.memory_alarm(),
        publisher.status().blocked()
    );
    within(sender).await.unwrap();
    let q = b
        .wait_queue("heavy", |q| q.messages_ready == 9 - u64::from(purged))
        .await;
    assert_eq!(q.counters.published, 9);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let b = start_with(|b| b.max_connections(2)).await;
    let c1 = b.lapin().await;
    let _c2 = b.lapin().await;
    assert!(lapin_connect(&b.uri()).await.is_err(), "third connection");
    assert_eq!(b.handle().counters().connections_refused, 1);
    let _ = within(c1.close(200, "")).await;
    let handle = b.handle();
    assert!(
        eventually(|| (handle.connections().len() == 1).then_some(()))
            .await
            .is_some()
    );
    let _c3 = lapin_connect(&b.uri()).await.expect("room again");
    b.stop().await;
}
