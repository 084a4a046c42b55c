//! Robustness: channel churn leaves nothing behind, dropped connections give their messages
//! back, many clients at once.

use crate::common::{
    TestBroker, amqp, consume, declare, eventually, lapin_connect, numbered, publish, start, text,
    within,
};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay in front of the broker whose connections can be cut at once, the way a
/// network failure or a killed client process ends them: no `connection.close`, just EOF.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let l2 = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l2.lock().unwrap().push(link);
            }
        });
        Proxy {
            addr,
            links,
            accept,
        }
    }

    /// Drops every relayed connection (both sockets close).
    fn cut(&self) {
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn wait_no_connections(b: &TestBroker) {
    let handle = b.handle();
    assert!(
        eventually(|| handle.connections().is_empty().then_some(()))
            .await
            .is_some(),
        "connections left: {:?}",
        handle.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_churn_leaves_nothing_behind() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "churn").await;
    let conn = b.lapin().await;
    let mut channels = Vec::new();
    let mut consumers = Vec::new();
    for i in 0..100 {
        let c = within(conn.create_channel()).await.unwrap();
        if i % 2 == 0 {
            within(c.basic_qos(5, BasicQosOptions::default()))
                .await
                .unwrap();
            consumers.push(
                consume(
                    &c,
                    "churn",
                    &format!("c{i}"),
                    BasicConsumeOptions::default(),
                )
                .await,
            );
        }
        if i % 3 == 0 {
            within(c.confirm_select(ConfirmSelectOptions::default()))
                .await
                .unwrap();
        }
        if i % 3 == 1 {
            within(c.tx_select()).await.unwrap();
        }
        channels.push(c);
    }
    for m in numbered("m", 100) {
        publish(&ch, "", "churn", &m).await;
    }
    // Deliveries are spread over the consumers and left unacknowledged.
    b.wait_queue("churn", |q| {
        q.consumers == 50 && q.messages_unacknowledged == 100
    })
    .await;
    let handle = b.handle();
    let listed_channels = |id: u64| {
        handle
            .connections()
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.channels.len())
    };
    let id = handle
        .connections()
        .into_iter()
        .max_by_key(|c| c.channels.len())
        .unwrap()
        .id;
    assert_eq!(listed_channels(id), Some(100));
    for c in channels {
        within(c.close(200, "done")).await.unwrap();
    }
    let q = b
        .wait_queue("churn", |q| {
            q.consumers == 0 && q.messages_ready == 100 && q.messages_unacknowledged == 0
        })
        .await;
    // Each close requeues its channel's deliveries, which may go to a consumer closed later
    // and be requeued again.
    assert!(q.counters.requeued >= 100, "{:?}", q.counters);
    assert!(
        eventually(|| (listed_channels(id) == Some(0)).then_some(()))
            .await
            .is_some(),
        "channels left: {:?}",
        listed_channels(id)
    );
    // Open and close in quick succession on one connection.
    for _ in 0..300 {
        let c = within(conn.create_channel()).await.unwrap();
        within(c.close(200, "")).await.unwrap();
    }
    assert!(
        eventually(|| (listed_channels(id) == Some(0)).then_some(()))
            .await
            .is_some()
    );
    // And with amqprs.
    let a = b.amqprs().await;
    for _ in 0..50 {
        let (c, _ev) = amqp::channel(&a).await;
        within(c.close()).await.unwrap();
    }
    let total: usize = handle.connections().iter().map(|c| c.channels.len()).sum();
    // Only the publisher's channel remains open.
    assert!(
        eventually(|| {
            let total: usize = handle.connections().iter().map(|c| c.channels.len()).sum();
            (total == 1).then_some(())
        })
        .await
        .is_some(),
        "open channels: {total}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_requeues_unacked_and_releases_its_queues() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "dq").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "dq", m).await;
    }
    let proxy = Proxy::start(b.addr).await;
    let victim = lapin_connect(&proxy.uri()).await.unwrap();
    let vch = within(victim.create_channel()).await.unwrap();
    within(vch.queue_declare(
        "victim-excl",
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    ))
    .await
    .unwrap();
    let mut d = consume(&vch, "dq", "c", BasicConsumeOptions::default()).await;
    let got = d.take(3).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["a", "b", "c"]);
    b.wait_queue("dq", |q| q.messages_unacknowledged == 3).await;
    assert_eq!(b.handle().connections().len(), 2);
    proxy.cut();
    let q = b
        .wait_queue("dq", |q| {
            q.messages_ready == 3 && q.messages_unacknowledged == 0 && q.consumers == 0
        })
        .await;
    assert_eq!(q.counters.requeued, 3);
    b.wait_queue_gone("victim-excl").await;
    let handle = b.handle();
    assert!(
        eventually(|| (handle.connections().len() == 1).then_some(()))
            .await
            .is_some()
    );
    // Another consumer gets them, redelivered, in order.
    let mut d2 = consume(&ch, "dq", "c2", BasicConsumeOptions::default()).await;
    let back = d2.take(3).await;
    assert_eq!(back.iter().map(text).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(back.iter().all(|m| m.redelivered));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_mid_publish_keeps_what_was_complete() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "mp").await;
    let proxy = Proxy::start(b.addr).await;
    let conn = lapin_connect(&proxy.uri()).await.unwrap();
    let pch = within(conn.create_channel()).await.unwrap();
    within(pch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for m in numbered("m", 20) {
        confirms.push(
            within(pch.basic_publish(
                "",
                "mp",
                Default::default(),
                m.as_bytes(),
                Default::default(),
            ))
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(within(c).await.unwrap().is_ack());
    }
    proxy.cut();
    wait_no_connections_except(&b, 1).await;
    let q = b.queue("mp").unwrap();
    assert_eq!(q.messages_ready, 20, "confirmed messages survive the drop");
    b.stop().await;
}

async fn wait_no_connections_except(b: &TestBroker, n: usize) {
    let handle = b.handle();
    assert!(
        eventually(|| (handle.connections().len() == n).then_some(()))
            .await
            .is_some(),
        "connections: {:?}",
        handle.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_with_unacked_messages_requeues_them() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "cq").await;
    for m in numbered("m", 4) {
        publish(&ch, "", "cq", &m).await;
    }
    let a = b.amqprs().await;
    let (ach, _ev) = amqp::channel(&a).await;
    let (_tag, mut rx) =
        within(ach.basic_consume_rx(amqprs::channel::BasicConsumeArguments::new("cq", "rs")))
            .await
            .unwrap();
    for _ in 0..4 {
        amqp::delivery(&mut rx).await;
    }
    within(ach.basic_ack(amqprs::channel::BasicAckArguments::new(1, false)))
        .await
        .unwrap();
    b.wait_queue("cq", |q| q.messages_unacknowledged == 3).await;
    within(a.close()).await.unwrap();
    b.wait_queue("cq", |q| {
        q.messages_ready == 3 && q.messages_unacknowledged == 0
    })
    .await;
    let mut d = consume(&ch, "cq", "again", BasicConsumeOptions::default()).await;
    let back = d.take(3).await;
    assert_eq!(
        back.iter().map(text).collect::<Vec<_>>(),
        ["m1", "m2", "m3"]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_and_one_consumer() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "load").await;
    const PUBLISHERS: usize = 8;
    const EACH: usize = 200;
    let mut d = consume(&ch, "load", "sink", BasicConsumeOptions::default()).await;
    let uri = b.uri();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let conn = lapin_connect(&uri).await.unwrap();
            let ch = within(conn.create_channel()).await.unwrap();
            within(ch.confirm_select(ConfirmSelectOptions::default()))
                .await
                .unwrap();
            let mut confirms = Vec::new();
            for i in 0..EACH {
                confirms.push(
                    within(ch.basic_publish(
                        "",
                        "load",
                        Default::default(),
                        format!("{p}:{i}").as_bytes(),
                        Default::default(),
                    ))
                    .await
                    .unwrap(),
                );
            }
            for c in confirms {
                assert!(within(c).await.unwrap().is_ack());
            }
            let _ = within(conn.close(200, "")).await;
        }));
    }
    let mut next = [0usize; PUBLISHERS];
    let mut last_tag = 0;
    for _ in 0..PUBLISHERS * EACH {
        let m = d.next().await;
        let t = text(&m);
        let (p, i) = t.split_once(':').unwrap();
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[p], "publisher {p}'s messages stay in order");
        next[p] += 1;
        last_tag = m.delivery_tag;
    }
    for t in tasks {
        t.await.unwrap();
    }
    within(ch.basic_ack(last_tag, BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    b.wait_queue("load", |q| {
        q.messages_ready == 0 && q.messages_unacknowledged == 0
    })
    .await;
    wait_no_connections_except(&b, 1).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_broker_after_all_clients_leave() {
    let b = start().await;
    for _ in 0..5 {
        let conn = b.lapin().await;
        let ch = within(conn.create_channel()).await.unwrap();
        within(ch.queue_declare(
            "",
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        ))
        .await
        .unwrap();
        let _ = within(conn.close(200, "")).await;
    }
    wait_no_connections(&b).await;
    let handle = b.handle();
    assert!(
        eventually(|| handle.queues("/").unwrap().is_empty().then_some(()))
            .await
            .is_some(),
        "exclusive queues left: {:?}",
        handle.queues("/")
    );
    assert_eq!(handle.counters().connections_opened, 5);
    b.stop().await;
}
