//! Paging: past the paging budget a queue keeps only a head in memory; the rest of its
//! backlog, transient messages too, lives on disk and is read back, in order, as consumers
//! reach it. Paged-out transient messages are not recovered after a restart; persistent ones
//! of durable queues are.

use crate::common::{DataDir, TestBroker, consume, declare_durable, eventually, within};
use lapin::BasicProperties;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;

const BUDGET: u64 = 512 * 1024;
const BODY: usize = 1024;

fn dir() -> DataDir {
    DataDir::new()
}

async fn start_on(dir: &DataDir) -> TestBroker {
    dir.start_with(|b| b.paging_budget(BUDGET)).await
}

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(BODY, b'.');
    b
}

/// Publishes `n` numbered messages with confirms, all acknowledged.
async fn publish(ch: &Channel, queue: &str, n: usize, persistent: bool) {
    let props = if persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(
            within(ch.basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &body(i),
                props.clone(),
            ))
            .await
            .unwrap(),
        );
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                assert!(matches!(within(p).await.unwrap(), Confirmation::Ack(None)));
            }
        }
    }
    for p in pending {
        assert!(matches!(within(p).await.unwrap(), Confirmation::Ack(None)));
    }
}

/// Consumes `n` messages, checking they come in publish order; returns how many were
/// marked redelivered.
async fn drain_in_order(ch: &Channel, queue: &str, n: usize) -> usize {
    within(ch.basic_qos(500, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = consume(ch, queue, "pager", BasicConsumeOptions::default()).await;
    let mut redelivered = 0;
    for i in 0..n {
        let d = c.next().await;
        assert_eq!(d.data, body(i), "message {i} out of order");
        redelivered += usize::from(d.redelivered);
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    c.assert_quiet().await;
    redelivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_backlog_pages_out_and_drains_in_order() {
    let dir = dir();
    let b = start_on(&dir).await;
    let (_c, ch) = b.lapin_channel().await;
    within(ch.queue_declare("tq", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let n = 20_000;
    publish(&ch, "tq", n, false).await;
    let q = b.queue("tq").unwrap();
    assert_eq!(
        (q.messages_ready, q.message_bytes_ready),
        (n as u64, (n * BODY) as u64)
    );
    let c = b.handle().counters();
    // 20 MiB published; memory holds the budget and a head, the rest is on disk.
    assert!(
        c.message_memory < 6 << 20,
        "message memory {} with a budget of {BUDGET}",
        c.message_memory
    );
    assert!(c.store_disk_bytes > 10 << 20, "{c:?}");
    // Paging starts past half the budget once the queue holds a head of 2,048 in memory.
    assert_eq!(c.stored_messages as usize, n - 2048, "paged out: {c:?}");
    assert_eq!(drain_in_order(&ch, "tq", n).await, 0);
    assert_eq!(b.handle().counters().stored_messages, 0);
    // Once drained, the store gives the disk space back (at most the active segment).
    let h = b.handle();
    eventually(|| (h.counters().store_disk_bytes <= 16 << 20).then_some(()))
        .await
        .unwrap_or_else(|| panic!("disk use after the drain: {:?}", h.counters()));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_backlog_comes_back_paged_out_after_a_restart() {
    let dir = dir();
    let b = start_on(&dir).await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "dq").await;
    within(ch.queue_declare("tq", QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let n = 10_000;
    publish(&ch, "dq", n, true).await;
    // A transient backlog pages out beside it, and is not recovered.
    publish(&ch, "tq", 5_000, false).await;
    b.stop().await;

    let b = start_on(&dir).await;
    let c = b.handle().counters();
    assert_eq!(
        c.stored_messages as usize, n,
        "only the persistent ones: {c:?}"
    );
    assert!(c.message_memory < 1 << 20, "nothing read back yet: {c:?}");
    let q = b.queue("dq").unwrap();
    assert_eq!(
        (q.messages_ready, q.message_bytes_ready),
        (n as u64, (n * BODY) as u64)
    );
    assert!(b.queue("tq").is_none());
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(
        drain_in_order(&ch, "dq", n).await,
        n,
        "all marked redelivered"
    );
    assert_eq!(b.handle().counters().stored_messages, 0);
    b.stop().await;
}
