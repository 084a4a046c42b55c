//! Random command sequences from two pipelining clients: the broker must not panic, and once
//! the clients are gone it must hold nothing for them (no connections, consumers or
//! unacknowledged deliveries; exclusive queues removed; once the queues go too, no message
//! left in memory).

use bytes::BytesMut;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::Mutex;
use warren_amqp_codec::frame;
use warren_amqp_codec::*;
use warren_broker::Broker;
use warren_testkit::peer::Peer;

#[derive(Debug, Clone)]
enum Op {
    Open(u16),
    Close(u16),
    Declare(u8, bool, bool),
    Delete(u8, bool, bool),
    Purge(u8),
    Bind(u8, u8, u8),
    Unbind(u8, u8, u8),
    Exchange(u8, u8),
    DeleteExchange(u8),
    Publish(u8, u8, bool, u16),
    Consume(u8, u8, bool, bool),
    Cancel(u8),
    Ack(u8, bool),
    Nack(u8, bool, bool),
    Reject(u8, bool),
    Get(u8, bool),
    Qos(u16, bool),
    Confirm,
    Tx,
    Commit,
    Rollback,
    Recover,
}

/// Operations, weighted so that scripts mostly declare, publish, consume and settle (an
/// error closes the channel, which the script then reopens).
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u16..4).prop_map(Op::Open),
        1 => (1u16..4).prop_map(Op::Close),
        6 => (1u8..4, prop::bool::weighted(0.2), prop::bool::weighted(0.2))
            .prop_map(|(q, e, a)| Op::Declare(q, e, a)),
        1 => (0u8..4, any::<bool>(), any::<bool>()).prop_map(|(q, u, e)| Op::Delete(q, u, e)),
        1 => (0u8..4).prop_map(Op::Purge),
        3 => (0u8..4, 1u8..4, 0u8..3).prop_map(|(q, x, k)| Op::Bind(q, x, k)),
        1 => (0u8..4, 0u8..4, 0u8..3).prop_map(|(q, x, k)| Op::Unbind(q, x, k)),
        1 => (0u8..4, 0u8..4).prop_map(|(x, t)| Op::Exchange(x, t)),
        1 => (0u8..4).prop_map(Op::DeleteExchange),
        12 => (prop_oneof![4 => 0u8..2, 1 => 2u8..5], 0u8..4, any::<bool>(), 0u16..3000)
            .prop_map(|(x, k, m, n)| Op::Publish(x, k, m, n)),
        5 => (1u8..4, 0u8..3, prop::bool::weighted(0.3), prop::bool::weighted(0.1))
            .prop_map(|(q, t, n, e)| Op::Consume(q, t, n, e)),
        2 => (0u8..3).prop_map(Op::Cancel),
        6 => (0u8..5, any::<bool>()).prop_map(|(t, m)| Op::Ack(t, m)),
        3 => (0u8..5, any::<bool>(), any::<bool>()).prop_map(|(t, m, r)| Op::Nack(t, m, r)),
        2 => (1u8..5, any::<bool>()).prop_map(|(t, r)| Op::Reject(t, r)),
        4 => (1u8..4, any::<bool>()).prop_map(|(q, n)| Op::Get(q, n)),
        2 => (0u16..4, any::<bool>()).prop_map(|(n, g)| Op::Qos(n, g)),
        1 => Just(Op::Confirm),
        1 => Just(Op::Tx),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Recover),
    ]
}

fn s(v: String) -> ShortStr {
    ShortStr::from(v)
}

/// Encodes one operation on `channel` into `buf`.
fn encode(op: &Op, channel: u16, buf: &mut BytesMut) {
    let queue = |q: u8| {
        s(if q == 0 {
            String::new()
        } else {
            format!("fq{q}")
        })
    };
    let exchange = |x: u8| {
        s(match x {
            0 => String::new(),
            1 => "amq.topic".into(),
            n => format!("fx{n}"),
        })
    };
    let method: Method = match *op {
        Op::Open(c) => {
            return frame::encode_method(buf, c, &ChannelOpen::default().into());
        }
        Op::Close(c) => {
            return frame::encode_method(buf, c, &ChannelClose::default().into());
        }
        Op::Declare(q, exclusive, auto_delete) => QueueDeclare {
            queue: queue(q),
            exclusive,
            auto_delete,
            ..Default::default()
        }
        .into(),
        Op::Delete(q, if_unused, if_empty) => QueueDelete {
            queue: queue(q),
            if_unused,
            if_empty,
            ..Default::default()
        }
        .into(),
        Op::Purge(q) => QueuePurge {
            queue: queue(q),
            ..Default::default()
        }
        .into(),
        Op::Bind(q, x, k) => QueueBind {
            queue: queue(q),
            exchange: exchange(x),
            routing_key: s(format!("k{k}")),
            ..Default::default()
        }
        .into(),
        Op::Unbind(q, x, k) => QueueUnbind {
            queue: queue(q),
            exchange: exchange(x),
            routing_key: s(format!("k{k}")),
            ..Default::default()
        }
        .into(),
        Op::Exchange(x, t) => ExchangeDeclare {
            exchange: exchange(x),
            kind: s(["direct", "fanout", "topic", "headers"][usize::from(t % 4)].into()),
            auto_delete: t == 3,
            ..Default::default()
        }
        .into(),
        Op::DeleteExchange(x) => ExchangeDelete {
            exchange: exchange(x),
            ..Default::default()
        }
        .into(),
        Op::Publish(x, k, mandatory, n) => {
            // To the default exchange, the key names a queue.
            let key = if x == 0 {
                s(format!("fq{}", k.max(1)))
            } else {
                s(format!("k{k}"))
            };
            let p = BasicPublish {
                exchange: exchange(x),
                routing_key: key,
                mandatory,
                ..Default::default()
            };
            let body = vec![b'x'; usize::from(n)];
            return frame::encode_content(
                buf,
                channel,
                &p.into(),
                &BasicProperties::default(),
                &body,
                4096,
            );
        }
        Op::Consume(q, t, no_ack, exclusive) => BasicConsume {
            queue: queue(q),
            // Tag 0: server-named (reusing a tag is a connection error; keep it rare).
            consumer_tag: if t == 0 {
                ShortStr::default()
            } else {
                s(format!("t{t}"))
            },
            no_ack,
            exclusive,
            ..Default::default()
        }
        .into(),
        Op::Cancel(t) => BasicCancel {
            consumer_tag: s(format!("t{t}")),
            nowait: false,
        }
        .into(),
        Op::Ack(t, multiple) => BasicAck {
            delivery_tag: u64::from(t),
            multiple,
        }
        .into(),
        Op::Nack(t, multiple, requeue) => BasicNack {
            delivery_tag: u64::from(t),
            multiple,
            requeue,
        }
        .into(),
        Op::Reject(t, requeue) => BasicReject {
            delivery_tag: u64::from(t),
            requeue,
        }
        .into(),
        Op::Get(q, no_ack) => BasicGet {
            queue: queue(q),
            no_ack,
            ..Default::default()
        }
        .into(),
        Op::Qos(n, global) => BasicQos {
            prefetch_size: 0,
            prefetch_count: n,
            global,
        }
        .into(),
        Op::Confirm => ConfirmSelect { nowait: false }.into(),
        Op::Tx => TxSelect {}.into(),
        Op::Commit => TxCommit {}.into(),
        Op::Rollback => TxRollback {}.into(),
        Op::Recover => BasicRecover { requeue: true }.into(),
    };
    frame::encode_method(buf, channel, &method);
}

/// A channel as the script sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    /// We sent `channel.close`: the number may be reused only after the server's close-ok.
    Closing,
}

/// One scripted connection: a writer shared with the reader task, which answers the
/// server's `channel.close` with `close-ok` and keeps track of which channels are open, so
/// that the script goes on after errors.
struct Client {
    writer: Arc<Mutex<WriteHalf<DuplexStream>>>,
    open: Arc<std::sync::Mutex<[State; 4]>>,
}

async fn reader(
    mut rd: ReadHalf<DuplexStream>,
    writer: Arc<Mutex<WriteHalf<DuplexStream>>>,
    open: Arc<std::sync::Mutex<[State; 4]>>,
) {
    let mut buf = BytesMut::new();
    loop {
        loop {
            match frame::decode_frame(&mut buf, u32::MAX) {
                Ok(Some(Frame::Method { channel, method })) => match method {
                    Method::ChannelClose(_) => {
                        let mut out = BytesMut::new();
                        frame::encode_method(&mut out, channel, &ChannelCloseOk::default().into());
                        let _ = writer.lock().await.write_all(&out).await;
                        let mut open = open.lock().unwrap();
                        let slot = &mut open[usize::from(channel) % 4];
                        // Both sides closing: the server's close-ok to ours is still to come.
                        if *slot == State::Open {
                            *slot = State::Closed;
                        }
                    }
                    Method::ChannelCloseOk(_) => {
                        open.lock().unwrap()[usize::from(channel) % 4] = State::Closed;
                    }
                    Method::ConnectionClose(_) => {
                        let mut out = BytesMut::new();
                        frame::encode_method(&mut out, 0, &ConnectionCloseOk::default().into());
                        let _ = writer.lock().await.write_all(&out).await;
                    }
                    _ => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the server sent an undecodable frame: {e}"),
            }
        }
        if !matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
    }
}

async fn run(script: Vec<(usize, u16, Op)>) {
    let broker = Broker::builder()
        .frame_max(4096)
        .start()
        .await
        .expect("broker");
    let h = broker.handle();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let h2 = h.clone();
        servers.push(tokio::spawn(async move {
            h2.serve_connection(server, None).await
        }));
        let mut p = Peer::open(client, "guest", "guest", "/")
            .await
            .expect("open");
        p.open_channel(1).await.expect("channel");
        let (rd, wr) = tokio::io::split(p.into_inner());
        let writer = Arc::new(Mutex::new(wr));
        let open = Arc::new(std::sync::Mutex::new([
            State::Closed,
            State::Open,
            State::Closed,
            State::Closed,
        ]));
        readers.push(tokio::spawn(reader(rd, writer.clone(), open.clone())));
        clients.push(Client { writer, open });
    }
    for (i, (conn, channel, op)) in script.iter().enumerate() {
        let c = &clients[*conn];
        let mut buf = BytesMut::new();
        match op {
            Op::Open(n) => {
                let mut open = c.open.lock().unwrap();
                let slot = &mut open[usize::from(*n) % 4];
                if *slot != State::Closed {
                    continue;
                }
                *slot = State::Open;
            }
            Op::Close(n) => {
                let mut open = c.open.lock().unwrap();
                let slot = &mut open[usize::from(*n) % 4];
                if *slot != State::Open {
                    continue;
                }
                *slot = State::Closing;
            }
            _ => {
                // A method on a channel that is not open would end the whole connection:
                // (re)open it first; skip it while it is closing.
                let mut open = c.open.lock().unwrap();
                let slot = &mut open[usize::from(*channel) % 4];
                match *slot {
                    State::Open => {}
                    State::Closing => continue,
                    State::Closed => {
                        *slot = State::Open;
                        frame::encode_method(&mut buf, *channel, &ChannelOpen::default().into());
                    }
                }
            }
        }
        encode(op, *channel, &mut buf);
        // A connection the server closed refuses writes: that is fine.
        let _ = c.writer.lock().await.write_all(&buf).await;
        // Let the server answer now and then, so that the script reacts to closed channels
        // instead of sending into them.
        if i % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for c in &clients {
        let _ = c.writer.lock().await.shutdown().await;
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
    }
    for s in servers {
        let done = tokio::time::timeout(Duration::from_secs(10), s)
            .await
            .expect("the connection ends");
        assert!(done.is_ok(), "a connection task panicked: {done:?}");
    }
    assert!(h.connections().is_empty());
    for q in h.queues("/").unwrap() {
        assert!(
            !q.exclusive,
            "exclusive queue {} outlived its connection",
            q.name
        );
        assert_eq!(q.consumers, 0, "queue {} kept consumers", q.name);
        assert_eq!(
            q.messages_unacknowledged, 0,
            "queue {} kept unacked",
            q.name
        );
    }
    // With every queue gone, no message may be left anywhere (outboxes, channels, batches).
    assert!(h.delete_vhost("/"));
    assert_eq!(h.counters().message_memory, 0, "messages leaked");
    broker.shutdown(Duration::from_secs(1)).await;
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(48))]

    #[test]
    fn random_commands_never_panic_and_leave_nothing_behind(
        script in prop::collection::vec((0usize..2, 1u16..4, op()), 1..150)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(script));
    }
}
