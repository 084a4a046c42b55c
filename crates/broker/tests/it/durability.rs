//! Durability: what a broker with a data directory keeps across a restart (a clean shutdown,
//! then a new broker on the same directory), as RabbitMQ does: durable exchanges, queues and
//! the bindings between durable ends; users, virtual hosts and permissions; the persistent
//! messages of durable queues that were not settled for good, marked redelivered.

use crate::common::{
    DataDir, TestBroker, amqp, amqp_error, bind, channel_errors, consume, declare_durable,
    eventually, lapin_connect, next_error, numbered, text, within,
};
use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

/// The names of the exchanges every virtual host has.
const BUILT_IN: [&str; 7] = [
    "",
    "amq.direct",
    "amq.fanout",
    "amq.headers",
    "amq.match",
    "amq.rabbitmq.trace",
    "amq.topic",
];

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn queue_opts(durable: bool, exclusive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable,
        exclusive,
        ..Default::default()
    }
}

async fn declare_queue(ch: &Channel, name: &str, options: QueueDeclareOptions) {
    within(ch.queue_declare(name, options, FieldTable::default()))
        .await
        .expect("queue.declare succeeds");
}

async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    durable: bool,
    auto_delete: bool,
) {
    let options = ExchangeDeclareOptions {
        durable,
        auto_delete,
        ..Default::default()
    };
    within(ch.exchange_declare(name, kind, options, FieldTable::default()))
        .await
        .expect("exchange.declare succeeds");
}

async fn bind_exchange(ch: &Channel, destination: &str, source: &str, key: &str) {
    within(ch.exchange_bind(
        destination,
        source,
        key,
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind succeeds");
}

/// Publishes `body` with `properties` (no confirm awaited).
async fn send(ch: &Channel, exchange: &str, key: &str, body: &str, properties: BasicProperties) {
    within(ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        body.as_bytes(),
        properties,
    ))
    .await
    .expect("basic.publish is sent");
}

/// Every message of `queue` as (body, redelivered), fetched with no-ack `basic.get`.
async fn fetch_all(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    loop {
        let got = within(ch.basic_get(queue, BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get succeeds");
        match got {
            Some(m) => v.push((text(&m.delivery), m.delivery.redelivered)),
            None => return v,
        }
    }
}

/// `(body, true)` for each body: what a restart gives back.
fn redelivered(bodies: &[&str]) -> Vec<(String, bool)> {
    bodies.iter().map(|b| (b.to_string(), true)).collect()
}

/// Waits until the message store holds exactly `n` messages.
async fn wait_stored(b: &TestBroker, n: u64) {
    let handle = b.handle();
    let reached = eventually(|| (handle.counters().stored_messages == n).then_some(())).await;
    assert!(
        reached.is_some(),
        "stored_messages never reached {n}; counters: {:?}",
        handle.counters()
    );
}

fn queue_names(b: &TestBroker, vhost: &str) -> Vec<String> {
    b.handle()
        .queues(vhost)
        .expect("vhost exists")
        .into_iter()
        .map(|q| q.name)
        .collect()
}

fn exchange_names(b: &TestBroker) -> Vec<String> {
    b.handle()
        .exchanges("/")
        .expect("vhost / exists")
        .into_iter()
        .map(|x| x.name)
        .collect()
}

/// The exchanges every vhost has, plus `declared`, sorted as the handle lists them.
fn with_built_in(declared: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = BUILT_IN
        .iter()
        .chain(declared)
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v
}

/// A binding as listed: source, destination, destination kind, routing key, and its
/// arguments (all long strings here) by name.
type Binding = (String, String, &'static str, String, Vec<(String, String)>);

fn binding(source: &str, destination: &str, kind: &'static str, key: &str) -> Binding {
    (
        source.into(),
        destination.into(),
        kind,
        key.into(),
        Vec::new(),
    )
}

fn sorted(mut v: Vec<Binding>) -> Vec<Binding> {
    v.sort();
    v
}

/// Bindings of `/`, sorted.
fn bindings(b: &TestBroker) -> Vec<Binding> {
    let listed = b.handle().bindings("/").expect("vhost / exists");
    sorted(
        listed
            .into_iter()
            .map(|x| {
                let mut args: Vec<(String, String)> = x
                    .arguments
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            warren_amqp_codec::FieldValue::LongStr(s) => {
                                String::from_utf8_lossy(s.as_bytes()).into_owned()
                            }
                            other => panic!("unexpected binding argument {other:?}"),
                        };
                        (String::from_utf8_lossy(k.as_bytes()).into_owned(), v)
                    })
                    .collect();
                args.sort();
                (
                    x.source,
                    x.destination,
                    x.destination_kind,
                    x.routing_key,
                    args,
                )
            })
            .collect(),
    )
}

/// A passive declare of `queue` on a fresh channel: its message count, or the error.
async fn passive_queue(conn: &lapin::Connection, queue: &str) -> Result<u32, (u16, String)> {
    let ch = within(conn.create_channel()).await.expect("channel opens");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    within(ch.queue_declare(queue, passive, FieldTable::default()))
        .await
        .map(|q| q.message_count())
        .map_err(|e| amqp_error(&e))
}

/// A passive declare of `exchange` on a fresh channel.
async fn passive_exchange(conn: &lapin::Connection, exchange: &str) -> Result<(), (u16, String)> {
    let ch = within(conn.create_channel()).await.expect("channel opens");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    within(ch.exchange_declare(
        exchange,
        ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    ))
    .await
    .map_err(|e| amqp_error(&e))
}

fn no_queue(name: &str) -> Result<u32, (u16, String)> {
    Err((404, format!("NOT_FOUND - no queue '{name}' in vhost '/'")))
}

fn no_exchange(name: &str) -> Result<(), (u16, String)> {
    Err((
        404,
        format!("NOT_FOUND - no exchange '{name}' in vhost '/'"),
    ))
}

fn headers_args(kind: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-match".into(), AMQPValue::LongString("all".into()));
    t.insert("kind".into(), AMQPValue::LongString(kind.into()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_topology_survives_a_restart_and_still_routes() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    let mut orders_args = FieldTable::default();
    orders_args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    within(ch.exchange_declare(
        "orders",
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        orders_args.clone(),
    ))
    .await
    .unwrap();
    declare_exchange(&ch, "all", ExchangeKind::Fanout, true, false).await;
    declare_exchange(&ch, "scratch", ExchangeKind::Direct, false, false).await;
    let mut kept_args = FieldTable::default();
    kept_args.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    within(ch.queue_declare("kept", queue_opts(true, false), kept_args.clone()))
        .await
        .unwrap();
    declare_durable(&ch, "unrouted").await;
    declare_queue(&ch, "temp", queue_opts(false, false)).await;
    // Exclusive and durable: RabbitMQ deletes it with its connection, which a restart ends.
    declare_queue(&ch, "mine", queue_opts(true, true)).await;
    // Between durable ends: kept.
    bind(&ch, "kept", "orders", "new").await;
    bind(&ch, "kept", "amq.topic", "audit.#").await;
    bind(&ch, "unrouted", "amq.fanout", "").await;
    bind_exchange(&ch, "orders", "all", "").await;
    within(ch.queue_bind(
        "kept",
        "amq.headers",
        "",
        QueueBindOptions::default(),
        headers_args("audit"),
    ))
    .await
    .unwrap();
    // Touching a transient or exclusive end: gone.
    bind(&ch, "temp", "orders", "new").await;
    bind(&ch, "kept", "scratch", "s").await;
    bind(&ch, "mine", "orders", "new").await;
    bind_exchange(&ch, "scratch", "all", "").await;
    bind_exchange(&ch, "orders", "scratch", "x").await;
    let durable_exchanges: Vec<_> = b
        .handle()
        .exchanges("/")
        .unwrap()
        .into_iter()
        .filter(|x| x.durable)
        .collect();
    let kept_before = b.queue("kept").unwrap();
    assert_eq!(bindings(&b).len(), 10);

    let b = dir.restart(b).await;
    let after = b.handle().exchanges("/").unwrap();
    assert_eq!(after, durable_exchanges, "durable exchanges, as declared");
    assert_eq!(exchange_names(&b), with_built_in(&["all", "orders"]));
    let orders = after.iter().find(|x| x.name == "orders").unwrap();
    assert_eq!(
        (orders.kind.as_str(), orders.durable, orders.auto_delete),
        ("direct", true, false)
    );
    assert_eq!(queue_names(&b, "/"), ["kept", "unrouted"]);
    let kept = b.queue("kept").unwrap();
    assert_eq!(kept, kept_before, "flags and arguments as declared");
    let mut by_headers = binding("amq.headers", "kept", "queue", "");
    by_headers.4 = vec![
        ("kind".to_string(), "audit".to_string()),
        ("x-match".to_string(), "all".to_string()),
    ];
    let expected = sorted(vec![
        binding("all", "orders", "exchange", ""),
        binding("amq.fanout", "unrouted", "queue", ""),
        by_headers,
        binding("amq.topic", "kept", "queue", "audit.#"),
        binding("orders", "kept", "queue", "new"),
    ]);
    assert_eq!(bindings(&b), expected);

    let (conn, ch) = b.lapin_channel().await;
    // Redeclaring with the same flags and arguments is equivalent.
    within(ch.queue_declare("kept", queue_opts(true, false), kept_args))
        .await
        .unwrap();
    within(ch.exchange_declare(
        "orders",
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        orders_args,
    ))
    .await
    .unwrap();
    // Every recovered route works: direct, exchange-to-exchange, topic, headers, and the
    // alternate exchange.
    send(&ch, "orders", "new", "direct", BasicProperties::default()).await;
    send(&ch, "all", "new", "fanout", BasicProperties::default()).await;
    send(
        &ch,
        "amq.topic",
        "audit.x",
        "topic",
        BasicProperties::default(),
    )
    .await;
    let mut h = FieldTable::default();
    h.insert("kind".into(), AMQPValue::LongString("audit".into()));
    send(
        &ch,
        "amq.headers",
        "",
        "headers",
        BasicProperties::default().with_headers(h),
    )
    .await;
    send(
        &ch,
        "orders",
        "nobody",
        "alternate",
        BasicProperties::default(),
    )
    .await;
    let q = b.wait_queue("kept", |q| q.messages_ready == 4).await;
    assert_eq!(q.messages_ready, 4);
    let got: Vec<String> = fetch_all(&ch, "kept")
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(got, ["direct", "fanout", "topic", "headers"]);
    assert_eq!(
        fetch_all(&ch, "unrouted").await,
        [("alternate".into(), false)]
    );
    for gone in ["temp", "mine"] {
        assert_eq!(passive_queue(&conn, gone).await, no_queue(gone));
    }
    assert_eq!(
        passive_exchange(&conn, "scratch").await,
        no_exchange("scratch")
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let mut errors = channel_errors(&ch);
    send(&ch, "scratch", "s", "lost", BasicProperties::default()).await;
    assert_eq!(
        next_error(&mut errors).await,
        (404, "NOT_FOUND - no exchange 'scratch' in vhost '/'".into())
    );
    b.stop().await;
}

fn rich_properties() -> BasicProperties {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("value".into()));
    let mut h = FieldTable::default();
    h.insert("string".into(), AMQPValue::LongString("ünïcode".into()));
    h.insert("i64".into(), AMQPValue::LongLongInt(-(1 << 40)));
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("table".into(), AMQPValue::FieldTable(inner));
    h.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("a".into()),
            AMQPValue::LongInt(1),
        ])),
    );
    persistent()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(h)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("tests".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_of_durable_queues_survive_intact_and_redelivered() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "pq").await;
    declare_queue(&ch, "tq", queue_opts(false, false)).await;
    bind(&ch, "pq", "amq.direct", "pk").await;
    let rich = rich_properties();
    // A body larger than a frame, kept whole.
    let big: String = (0..300_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    send(&ch, "", "pq", "p1", rich.clone()).await;
    send(
        &ch,
        "",
        "pq",
        "t1",
        BasicProperties::default().with_delivery_mode(1),
    )
    .await;
    send(&ch, "amq.direct", "pk", "p2", persistent()).await;
    send(&ch, "", "pq", "t2", BasicProperties::default()).await;
    send(&ch, "", "pq", "", persistent()).await;
    send(&ch, "", "pq", &big, persistent()).await;
    send(&ch, "", "tq", "in a transient queue", persistent()).await;
    // And one from amqprs, once the others are in.
    b.wait_queue("pq", |q| q.messages_ready == 6).await;
    let conn = b.amqprs().await;
    let (ach, _ev) = amqp::channel(&conn).await;
    let mut headers = amqprs::FieldTable::new();
    headers.insert(
        "x-custom".try_into().unwrap(),
        amqprs::FieldValue::from("hello"),
    );
    let aprops = amqprs::BasicProperties::default()
        .with_content_type("text/plain")
        .with_headers(headers)
        .with_persistence(true)
        .with_message_id("rs-1")
        .finish();
    within(ach.basic_publish(aprops, b"p3".to_vec(), BasicPublishArguments::new("", "pq")))
        .await
        .unwrap();
    b.wait_queue("pq", |q| q.messages_ready == 7).await;
    b.wait_queue("tq", |q| q.messages_ready == 1).await;
    // Written once each: only the persistent messages of the durable queue.
    wait_stored(&b, 5).await;

    let b = dir.restart(b).await;
    assert_eq!(queue_names(&b, "/"), ["pq"], "the transient queue is gone");
    assert_eq!(b.handle().counters().stored_messages, 5);
    let q = b.queue("pq").unwrap();
    assert_eq!(
        (q.messages_ready, q.message_bytes_ready),
        (5, 2 + 2 + 300_000 + 2)
    );
    // One more after the restart; a second restart keeps all six, once each, in order.
    let (_c, ch) = b.lapin_channel().await;
    send(&ch, "", "pq", "p4", persistent()).await;
    b.wait_queue("pq", |q| q.messages_ready == 6).await;
    wait_stored(&b, 6).await;
    let b = dir.restart(b).await;
    assert_eq!(b.handle().counters().stored_messages, 6);
    let (_c, ch) = b.lapin_channel().await;
    let mut d = consume(&ch, "pq", "c", BasicConsumeOptions::default()).await;
    let got = d.take(6).await;
    d.assert_quiet().await;
    let summary: Vec<(String, bool, &str, &str)> = got
        .iter()
        .map(|m| {
            let body = if m.data.len() > 100 {
                format!("<{} octets>", m.data.len())
            } else {
                text(m)
            };
            (
                body,
                m.redelivered,
                m.exchange.as_str(),
                m.routing_key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("p1".to_string(), true, "", "pq"),
            ("p2".to_string(), true, "amq.direct", "pk"),
            (String::new(), true, "", "pq"),
            ("<300000 octets>".to_string(), true, "", "pq"),
            ("p3".to_string(), true, "", "pq"),
            ("p4".to_string(), true, "", "pq"),
        ]
    );
    assert_eq!(got[0].properties, rich, "every property intact");
    assert_eq!(got[1].properties, persistent());
    assert_eq!(got[2].properties, persistent());
    assert!(got[3].data == big.as_bytes(), "the large body intact");
    let mut h = FieldTable::default();
    h.insert("x-custom".into(), AMQPValue::LongString("hello".into()));
    assert_eq!(
        got[4].properties,
        persistent()
            .with_content_type("text/plain".into())
            .with_headers(h)
            .with_message_id("rs-1".into())
    );
    within(got[5].acker.ack(BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    wait_stored(&b, 0).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_messages_stay_settled_and_unacked_ones_come_back() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "work").await;
    for m in numbered("m", 9) {
        send(&ch, "", "work", &m, persistent()).await;
    }
    b.wait_queue("work", |q| q.messages_ready == 9).await;
    wait_stored(&b, 9).await;
    // A no-ack get settles at once.
    assert_eq!(fetch_one(&ch, "work").await, ("m0".into(), false));
    // A consumer on another connection, left open (with unacked deliveries) at shutdown.
    let (_worker, wch) = b.lapin_channel().await;
    within(wch.basic_qos(20, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut d = consume(&wch, "work", "w", BasicConsumeOptions::default()).await;
    let got = d.take(8).await;
    let bodies: Vec<String> = got.iter().map(text).collect();
    assert_eq!(bodies, numbered("m", 9)[1..]);
    let tag = |i: usize| got[i - 1].delivery_tag;
    within(wch.basic_ack(tag(1), BasicAckOptions::default()))
        .await
        .unwrap();
    within(wch.basic_ack(tag(3), BasicAckOptions { multiple: true }))
        .await
        .unwrap();
    let discard = BasicNackOptions {
        multiple: false,
        requeue: false,
    };
    within(wch.basic_nack(tag(4), discard)).await.unwrap();
    within(wch.basic_reject(tag(5), BasicRejectOptions { requeue: false }))
        .await
        .unwrap();
    // Requeued: it comes straight back to the same consumer, and stays unacked.
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    within(wch.basic_nack(tag(6), requeue)).await.unwrap();
    let again = d.next().await;
    assert_eq!((text(&again), again.redelivered), ("m6".into(), true));
    // m6, m7 and m8 are still held; the rest were settled for good.
    wait_stored(&b, 3).await;
    let q = b
        .wait_queue("work", |q| q.messages_unacknowledged == 3)
        .await;
    assert_eq!(q.messages_ready, 0);

    let b = dir.restart(b).await;
    assert_eq!(b.handle().counters().stored_messages, 3);
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(
        fetch_all(&ch, "work").await,
        redelivered(&["m6", "m7", "m8"])
    );
    wait_stored(&b, 0).await;
    let b = dir.restart(b).await;
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(fetch_all(&ch, "work").await, []);
    b.stop().await;
}

/// One message of `queue` as (body, redelivered), fetched with a no-ack `basic.get`.
async fn fetch_one(ch: &Channel, queue: &str) -> (String, bool) {
    let m = within(ch.basic_get(queue, BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get succeeds")
        .expect("a message");
    (text(&m.delivery), m.delivery.redelivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_and_deleted_queues_keep_nothing() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    for (queue, n) in [("purged", 3), ("deleted", 4), ("held", 4), ("kept", 2)] {
        declare_durable(&ch, queue).await;
        for m in numbered(&format!("{queue}-"), n) {
            send(&ch, "", queue, &m, persistent()).await;
        }
    }
    b.wait_queue("kept", |q| q.messages_ready == 2).await;
    wait_stored(&b, 13).await;
    let purged = within(ch.queue_purge("purged", QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    wait_stored(&b, 10).await;
    let deleted = within(ch.queue_delete("deleted", QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    wait_stored(&b, 6).await;
    // Deleted while a consumer holds two of its messages: those go when they come back.
    let (_cc, cch) = b.lapin_channel().await;
    within(cch.basic_qos(2, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut d = consume(&cch, "held", "h", BasicConsumeOptions::default()).await;
    let held = d.take(2).await;
    assert_eq!(
        held.iter().map(text).collect::<Vec<_>>(),
        ["held-0", "held-1"]
    );
    let ready = within(ch.queue_delete("held", QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(ready, 2);
    wait_stored(&b, 4).await;
    within(cch.close(200, "bye")).await.unwrap();
    wait_stored(&b, 2).await;

    let b = dir.restart(b).await;
    assert_eq!(queue_names(&b, "/"), ["kept", "purged"]);
    assert_eq!(b.handle().counters().stored_messages, 2);
    assert_eq!(b.queue("purged").unwrap().messages_ready, 0);
    let (conn, ch) = b.lapin_channel().await;
    for gone in ["deleted", "held"] {
        assert_eq!(passive_queue(&conn, gone).await, no_queue(gone));
    }
    // A new queue of a deleted one's name starts empty.
    declare_durable(&ch, "deleted").await;
    assert_eq!(passive_queue(&conn, "deleted").await, Ok(0));
    let deleted = within(ch.queue_delete("kept", QueueDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    wait_stored(&b, 0).await;

    // The queues declared after a restart get store numbers of their own: each keeps only
    // its messages through the next restart.
    declare_durable(&ch, "new").await;
    for q in ["deleted", "purged", "new"] {
        send(&ch, "", q, &format!("{q}-again"), persistent()).await;
    }
    b.wait_queue("new", |q| q.messages_ready == 1).await;
    wait_stored(&b, 3).await;

    let b = dir.restart(b).await;
    assert_eq!(queue_names(&b, "/"), ["deleted", "new", "purged"]);
    assert_eq!(b.handle().counters().stored_messages, 3);
    let (_c, ch) = b.lapin_channel().await;
    for q in ["deleted", "new", "purged"] {
        let again = format!("{q}-again");
        assert_eq!(fetch_all(&ch, q).await, redelivered(&[&again]));
    }
    wait_stored(&b, 0).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanned_out_message_is_stored_once_until_every_queue_is_done() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_exchange(&ch, "fan", ExchangeKind::Fanout, true, false).await;
    let queues = ["f1", "f2", "f3"];
    for q in queues {
        declare_durable(&ch, q).await;
        bind(&ch, q, "fan", "").await;
    }
    // A transient queue takes a copy too, which the store does not count on.
    declare_queue(&ch, "ft", queue_opts(false, false)).await;
    bind(&ch, "ft", "fan", "").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let confirm = |body: &'static str| {
        let ch = ch.clone();
        async move {
            let c = within(ch.basic_publish(
                "fan",
                "",
                BasicPublishOptions::default(),
                body.as_bytes(),
                persistent(),
            ))
            .await
            .unwrap();
            within(c).await.unwrap()
        }
    };
    assert!(matches!(confirm("once").await, Confirmation::Ack(None)));
    let c = b.handle().counters();
    assert_eq!(c.stored_messages, 1, "written once for three queues");
    assert!(c.store_disk_bytes > 0);
    let (_c2, gch) = b.lapin_channel().await;
    for (i, q) in queues.iter().enumerate() {
        let m = within(gch.basic_get(q, BasicGetOptions { no_ack: false }))
            .await
            .unwrap()
            .expect("each queue has it");
        assert_eq!(text(&m.delivery), "once");
        within(m.delivery.acker.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        b.wait_queue(q, |q| q.counters.acked == 1).await;
        let left = if i == 2 { 0 } else { 1 };
        wait_stored(&b, left).await;
        assert_eq!(b.handle().counters().stored_messages, left);
    }
    assert_eq!(b.queue("ft").unwrap().messages_ready, 1);
    assert!(matches!(confirm("twice").await, Confirmation::Ack(None)));
    assert_eq!(fetch_one(&gch, "f1").await, ("twice".into(), false));
    b.wait_queue("f1", |q| q.counters.delivered == 2).await;
    wait_stored(&b, 1).await;

    let b = dir.restart(b).await;
    assert_eq!(b.handle().counters().stored_messages, 1);
    assert_eq!(queue_names(&b, "/"), ["f1", "f2", "f3"]);
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(fetch_all(&ch, "f1").await, []);
    assert_eq!(fetch_all(&ch, "f2").await, redelivered(&["twice"]));
    wait_stored(&b, 1).await;
    // A no-ack consumer settles on delivery.
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut d = consume(&ch, "f3", "c", no_ack).await;
    let m = d.next().await;
    assert_eq!((text(&m), m.redelivered), ("twice".into(), true));
    wait_stored(&b, 0).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_wait_for_the_sync_and_committed_transactions_survive() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "confirmed").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let syncs_before = b.handle().counters().store_syncs;
    let c = within(ch.basic_publish(
        "",
        "confirmed",
        BasicPublishOptions::default(),
        b"c1",
        persistent(),
    ))
    .await
    .unwrap();
    assert!(matches!(within(c).await.unwrap(), Confirmation::Ack(None)));
    let c = b.handle().counters();
    assert!(
        c.store_syncs > syncs_before,
        "confirmed after a sync: {c:?}"
    );
    assert_eq!(c.stored_messages, 1);

    // Transactions through amqprs.
    let conn = b.amqprs().await;
    let (tch, _ev) = amqp::channel(&conn).await;
    within(tch.queue_declare(QueueDeclareArguments::durable_client_named("txq")))
        .await
        .unwrap();
    within(tch.tx_select()).await.unwrap();
    let publish = |body: &'static str| {
        let props = amqprs::BasicProperties::default()
            .with_persistence(true)
            .finish();
        tch.basic_publish(
            props,
            body.as_bytes().to_vec(),
            BasicPublishArguments::new("", "txq"),
        )
    };
    within(publish("t1")).await.unwrap();
    within(publish("t2")).await.unwrap();
    let syncs_before = b.handle().counters().store_syncs;
    within(tch.tx_commit()).await.unwrap();
    let c = b.handle().counters();
    assert!(
        c.store_syncs > syncs_before,
        "committed after a sync: {c:?}"
    );
    assert_eq!(c.stored_messages, 3);
    assert_eq!(b.queue("txq").unwrap().messages_ready, 2);
    within(publish("t3")).await.unwrap();
    within(tch.tx_rollback()).await.unwrap();
    // An empty commit after the rollback publishes nothing either.
    within(tch.tx_commit()).await.unwrap();
    assert_eq!(b.queue("txq").unwrap().messages_ready, 2);
    assert_eq!(b.handle().counters().stored_messages, 3);
    // Acks in a transaction: a committed one settles for good, a rolled-back one does not
    // (its message stays unacked, and comes back after the restart).
    let (_c2, lch) = b.lapin_channel().await;
    within(lch.tx_select()).await.unwrap();
    let get = |queue: &'static str| {
        let lch = lch.clone();
        async move {
            within(lch.basic_get(queue, BasicGetOptions { no_ack: false }))
                .await
                .unwrap()
                .expect("a message")
                .delivery
        }
    };
    let t1 = get("txq").await;
    assert_eq!(text(&t1), "t1");
    within(t1.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within(lch.tx_commit()).await.unwrap();
    wait_stored(&b, 2).await;
    let c1 = get("confirmed").await;
    assert_eq!(text(&c1), "c1");
    within(c1.acker.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within(lch.tx_rollback()).await.unwrap();
    assert_eq!(b.handle().counters().stored_messages, 2);

    let b = dir.restart(b).await;
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(fetch_all(&ch, "confirmed").await, redelivered(&["c1"]));
    assert_eq!(fetch_all(&ch, "txq").await, redelivered(&["t2"]));
    wait_stored(&b, 0).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_survive_and_deletions_stick() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let h = b.handle();
    h.add_vhost("sales");
    h.add_user("alice", "secret", &["monitoring"]);
    h.set_permissions("alice", "sales", "^a-", ".*", "^a-")
        .unwrap();
    h.add_vhost("temp");
    h.add_user("bob", "pw", &[]);
    h.set_permissions("bob", "temp", ".*", ".*", ".*").unwrap();
    h.set_permissions("alice", "temp", ".*", ".*", ".*")
        .unwrap();
    // Alice keeps a message in sales, bob one in temp.
    for (user, password, vhost, queue) in [
        ("alice", "secret", "sales", "a-q"),
        ("bob", "pw", "temp", "b-q"),
    ] {
        let conn = lapin_connect(&b.uri_as(user, password, vhost))
            .await
            .expect("logs in");
        let ch = within(conn.create_channel()).await.unwrap();
        declare_durable(&ch, queue).await;
        send(&ch, "", queue, &format!("{user}'s"), persistent()).await;
        let q = eventually(|| {
            h.queues(vhost)
                .unwrap()
                .into_iter()
                .find(|q| q.messages_ready == 1)
        })
        .await;
        assert!(q.is_some(), "{user}'s message arrives");
        let _ = within(conn.close(200, "bye")).await;
    }
    wait_stored(&b, 2).await;
    assert!(h.delete_user("bob"));
    assert!(h.delete_vhost("temp"));
    wait_stored(&b, 1).await;

    let b = dir.restart(b).await;
    let h = b.handle();
    assert_eq!(h.vhosts(), ["/", "sales"]);
    assert_eq!(
        h.users_list(),
        [
            ("alice".to_string(), vec!["monitoring".to_string()]),
            ("guest".to_string(), vec!["administrator".to_string()]),
        ]
    );
    let perm = |u: &str, v: &str, c: &str, w: &str, r: &str| {
        (u.into(), v.into(), c.into(), w.into(), r.into())
    };
    assert_eq!(
        h.permissions_list(),
        [
            perm("alice", "sales", "^a-", ".*", "^a-"),
            perm("guest", "/", ".*", ".*", ".*"),
        ]
    );
    assert_eq!(queue_names(&b, "sales"), ["a-q"]);
    assert_eq!(h.counters().stored_messages, 1);
    // Alice logs in to sales with her password, and her patterns still apply.
    let conn = lapin_connect(&b.uri_as("alice", "secret", "sales"))
        .await
        .expect("alice logs in after the restart");
    let ch = within(conn.create_channel()).await.unwrap();
    assert_eq!(fetch_all(&ch, "a-q").await, redelivered(&["alice's"]));
    let err = within(ch.queue_declare("b-q", queue_opts(true, false), FieldTable::default()))
        .await
        .expect_err("configure is limited to ^a-");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - access to queue 'b-q' in vhost 'sales' refused for user 'alice'"
                .into()
        )
    );
    let err = lapin_connect(&b.uri_as("alice", "wrong", "sales"))
        .await
        .expect_err("wrong password");
    assert_eq!(amqp_error(&err).0, 403);
    let err = lapin_connect(&b.uri_as("bob", "pw", "sales"))
        .await
        .expect_err("bob was deleted");
    assert_eq!(amqp_error(&err).0, 403);
    let err = lapin_connect(&b.uri_as("guest", "guest", "temp"))
        .await
        .expect_err("temp was deleted");
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - vhost temp not found".into())
    );
    // Created again, it is empty: nothing of the old one came back.
    h.add_vhost("temp");
    assert_eq!(queue_names(&b, "temp"), Vec::<String>::new());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_guest_is_created_on_the_first_start_only() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let h = b.handle();
    let guest = || ("guest".to_string(), vec!["administrator".to_string()]);
    assert_eq!(h.users_list(), [guest()]);
    assert_eq!(h.vhosts(), ["/"]);
    // A changed password is kept: the default is not imposed again.
    h.add_user("guest", "changed", &["administrator"]);
    let b = dir.restart(b).await;
    let h = b.handle();
    assert_eq!(h.users_list(), [guest()]);
    let err = lapin_connect(&b.uri()).await.expect_err("the old password");
    assert_eq!(amqp_error(&err).0, 403);
    let conn = lapin_connect(&b.uri_as("guest", "changed", "/"))
        .await
        .expect("the changed password");
    let _ = within(conn.close(200, "bye")).await;

    h.add_user("admin", "pw", &["administrator"]);
    h.set_permissions("admin", "/", ".*", ".*", ".*").unwrap();
    assert!(h.delete_user("guest"));
    let b = dir.restart(b).await;
    let h = b.handle();
    assert_eq!(
        h.users_list(),
        [("admin".to_string(), vec!["administrator".to_string()])]
    );
    assert_eq!(
        h.permissions_list(),
        [(
            "admin".to_string(),
            "/".to_string(),
            ".*".to_string(),
            ".*".to_string(),
            ".*".to_string()
        )]
    );
    for password in ["guest", "changed"] {
        let err = lapin_connect(&b.uri_as("guest", password, "/"))
            .await
            .expect_err("guest is gone");
        assert_eq!(amqp_error(&err).0, 403);
    }
    let conn = lapin_connect(&b.uri_as("admin", "pw", "/"))
        .await
        .expect("admin logs in");
    let _ = within(conn.close(200, "bye")).await;

    // With no user at all, a restart still does not bring guest back.
    assert!(h.delete_user("admin"));
    let b = dir.restart(b).await;
    assert_eq!(b.handle().users_list(), []);
    assert_eq!(b.handle().vhosts(), ["/"]);
    assert_eq!(b.handle().permissions_list(), []);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_deleted_exchanges_stay_deleted() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (conn, ch) = b.lapin_channel().await;
    declare_durable(&ch, "sink").await;
    declare_durable(&ch, "doomed").await;
    declare_exchange(&ch, "ad-unbound", ExchangeKind::Direct, true, true).await;
    declare_exchange(&ch, "ad-queue", ExchangeKind::Fanout, true, true).await;
    declare_exchange(&ch, "ad-source", ExchangeKind::Fanout, true, true).await;
    declare_exchange(&ch, "target", ExchangeKind::Fanout, true, false).await;
    declare_exchange(&ch, "ad-kept", ExchangeKind::Direct, true, true).await;
    bind(&ch, "sink", "ad-unbound", "k").await;
    bind(&ch, "doomed", "ad-queue", "").await;
    bind_exchange(&ch, "target", "ad-source", "").await;
    bind(&ch, "sink", "ad-kept", "k").await;
    // Each loses its last binding: by queue.unbind, by deleting the queue, by deleting the
    // destination exchange.
    within(ch.queue_unbind("sink", "ad-unbound", "k", FieldTable::default()))
        .await
        .unwrap();
    within(ch.queue_delete("doomed", QueueDeleteOptions::default()))
        .await
        .unwrap();
    within(ch.exchange_delete("target", ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    assert_eq!(exchange_names(&b), with_built_in(&["ad-kept"]));
    for gone in ["ad-unbound", "ad-queue", "ad-source"] {
        assert_eq!(passive_exchange(&conn, gone).await, no_exchange(gone));
    }

    let b = dir.restart(b).await;
    assert_eq!(exchange_names(&b), with_built_in(&["ad-kept"]));
    assert_eq!(bindings(&b), [binding("ad-kept", "sink", "queue", "k")]);
    let kept = b.handle().exchanges("/").unwrap();
    let kept = kept.iter().find(|x| x.name == "ad-kept").unwrap();
    assert!(kept.durable && kept.auto_delete);
    // Still auto-delete after the restart: its last binding takes it along, for good.
    let (_c, ch) = b.lapin_channel().await;
    within(ch.queue_unbind("sink", "ad-kept", "k", FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(exchange_names(&b), with_built_in(&[]));
    let b = dir.restart(b).await;
    assert_eq!(exchange_names(&b), with_built_in(&[]));
    assert_eq!(bindings(&b), []);
    assert_eq!(queue_names(&b, "/"), ["sink"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_keeps_the_unacked_messages() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "pq").await;
    for m in numbered("m", 3) {
        send(&ch, "", "pq", &m, persistent()).await;
    }
    b.wait_queue("pq", |q| q.messages_ready == 3).await;
    let (_held, hch) = b.lapin_channel().await;
    let m = within(hch.basic_get("pq", BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(text(&m.delivery), "m0");
    // RabbitMQ's purge drops the ready messages only.
    let purged = within(ch.queue_purge("pq", QueuePurgeOptions::default()))
        .await
        .unwrap();
    assert_eq!(purged, 2);
    wait_stored(&b, 1).await;

    let b = dir.restart(b).await;
    assert_eq!(b.handle().counters().stored_messages, 1);
    let (_c, ch) = b.lapin_channel().await;
    assert_eq!(fetch_all(&ch, "pq").await, redelivered(&["m0"]));
    wait_stored(&b, 0).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_exchanges_and_removed_bindings_stay_gone() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "sink").await;
    declare_exchange(&ch, "old", ExchangeKind::Direct, true, false).await;
    declare_exchange(&ch, "src", ExchangeKind::Fanout, true, false).await;
    declare_exchange(&ch, "keep", ExchangeKind::Direct, true, false).await;
    bind(&ch, "sink", "old", "o").await;
    bind_exchange(&ch, "old", "src", "").await;
    bind_exchange(&ch, "keep", "src", "").await;
    bind(&ch, "sink", "keep", "p").await;
    bind(&ch, "sink", "keep", "q").await;
    within(ch.exchange_delete("old", ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    within(ch.queue_unbind("sink", "keep", "p", FieldTable::default()))
        .await
        .unwrap();
    let before = bindings(&b);

    let b = dir.restart(b).await;
    assert_eq!(exchange_names(&b), with_built_in(&["keep", "src"]));
    let expected = sorted(vec![
        binding("keep", "sink", "queue", "q"),
        binding("src", "keep", "exchange", ""),
    ]);
    assert_eq!(before, expected);
    assert_eq!(bindings(&b), expected);
    // Declared again, the exchange has none of its old bindings.
    let (_c, ch) = b.lapin_channel().await;
    declare_exchange(&ch, "old", ExchangeKind::Direct, true, false).await;
    assert_eq!(bindings(&b), expected);
    send(&ch, "src", "p", "p", BasicProperties::default()).await;
    send(&ch, "src", "q", "q", BasicProperties::default()).await;
    send(&ch, "old", "o", "o", BasicProperties::default()).await;
    assert_eq!(fetch_all(&ch, "sink").await, [("q".to_string(), false)]);
    b.stop().await;
}

/// RabbitMQ 3.10.8, observed: a durable auto-delete queue whose consumer is connected when the
/// node stops is deleted (the consumer goes with its connection), one that never had a
/// consumer is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_auto_delete_queues_across_a_shutdown() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_conn, ch) = b.lapin_channel().await;
    let auto_delete = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    for q in ["ad-consumed", "ad-idle"] {
        within(ch.queue_declare(q, auto_delete, FieldTable::default()))
            .await
            .unwrap();
    }
    let _d = consume(&ch, "ad-consumed", "c", BasicConsumeOptions::default()).await;
    let b = dir.restart(b).await;
    assert_eq!(queue_names(&b, "/"), ["ad-idle"]);
    b.stop().await;
}
