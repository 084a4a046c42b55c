//! Exact wire behaviour a client library would hide: a minimal hand-written AMQP client over
//! a plain TCP socket.

use crate::common::{TIMEOUT, eventually, start, start_with, within};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn shortstr(buf: &mut Vec<u8>, s: &str) {
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

fn longstr(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

/// A method frame on `channel`.
fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + args.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut f = vec![1u8];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f.push(0xCE);
    f
}

/// The next frame: type, channel, payload. `None` at end of stream.
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u16, Vec<u8>)> {
    let mut header = [0u8; 7];
    s.read_exact(&mut header).await.ok()?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).await.ok()?;
    assert_eq!(payload.pop(), Some(0xCE), "frame end");
    Some((
        header[0],
        u16::from_be_bytes([header[1], header[2]]),
        payload,
    ))
}

/// The next method frame's (class, method, arguments), skipping heartbeats.
async fn read_method<S: AsyncRead + Unpin>(s: &mut S) -> (u16, u16, Vec<u8>) {
    loop {
        let (kind, _, payload) = within(read_frame(s)).await.expect("a frame");
        if kind == 8 {
            continue;
        }
        assert_eq!(kind, 1, "a method frame");
        let class = u16::from_be_bytes([payload[0], payload[1]]);
        let id = u16::from_be_bytes([payload[2], payload[3]]);
        return (class, id, payload[4..].to_vec());
    }
}

/// Opens a connection as guest to `/` with the given heartbeat.
async fn handshake(addr: std::net::SocketAddr, heartbeat: u16) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    login(&mut s).await;
    tune_and_open(&mut s, heartbeat).await;
    s
}

/// Protocol header, start, start-ok as guest/guest, announcing
/// `authentication_failure_close`.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let (class, id, _) = read_method(s).await;
    assert_eq!((class, id), (10, 10), "connection.start");
    // client-properties: {capabilities: {authentication_failure_close: true}}
    let mut caps = Vec::new();
    shortstr(&mut caps, "authentication_failure_close");
    caps.extend_from_slice(&[b't', 1]);
    let mut props = Vec::new();
    shortstr(&mut props, "capabilities");
    props.push(b'F');
    longstr(&mut props, &caps);
    let mut args = Vec::new();
    longstr(&mut args, &props);
    shortstr(&mut args, "PLAIN");
    longstr(&mut args, b"\0guest\0guest");
    shortstr(&mut args, "en_US");
    s.write_all(&method(0, 10, 11, &args)).await.unwrap();
}

/// Tune-ok with the server's limits and `heartbeat`, then open `/`.
async fn tune_and_open<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, heartbeat: u16) {
    let (class, id, tune) = read_method(s).await;
    assert_eq!((class, id), (10, 30), "connection.tune");
    let mut args = Vec::new();
    args.extend_from_slice(&tune[0..6]); // the server's channel_max and frame_max
    args.extend_from_slice(&heartbeat.to_be_bytes());
    s.write_all(&method(0, 10, 31, &args)).await.unwrap();
    let mut args = Vec::new();
    shortstr(&mut args, "/");
    shortstr(&mut args, "");
    args.push(0);
    s.write_all(&method(0, 10, 40, &args)).await.unwrap();
    let (class, id, _) = read_method(s).await;
    assert_eq!((class, id), (10, 41), "connection.open-ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_ok_the_server_leaves_closing_the_socket_to_the_client() {
    // RabbitMQ (rabbit_reader: close_connection/1) answers connection.close with close-ok
    // and then waits for the client to close the TCP connection (up to a timeout); clients
    // such as lapin treat an EOF before they have processed close-ok as an aborted
    // connection.
    let b = start().await;
    let mut s = handshake(b.addr, 0).await;
    let mut args = Vec::new();
    args.extend_from_slice(&200u16.to_be_bytes());
    shortstr(&mut args, "bye");
    args.extend_from_slice(&0u16.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&method(0, 10, 50, &args)).await.unwrap();
    let (class, id, _) = read_method(&mut s).await;
    assert_eq!((class, id), (10, 51), "connection.close-ok");
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
        Err(_) => {}
        Ok(r) => panic!("the server ended the socket right after close-ok: {r:?}"),
    }
    drop(s);
    let handle = b.handle();
    assert!(
        eventually(|| handle.connections().is_empty().then_some(()))
            .await
            .is_some()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_close_completes_without_error() {
    // The client-visible side of the test above: `Connection::close` must return Ok.
    let b = start().await;
    let mut failures = Vec::new();
    for i in 0..10 {
        let conn = b.lapin().await;
        let ch = within(conn.create_channel()).await.unwrap();
        crate::common::declare(&ch, &format!("q{i}")).await;
        if let Err(e) = within(conn.close(200, "bye")).await {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "close failed: {failures:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_missed_heartbeats() {
    let b = start_with(|b| b.heartbeat(1)).await;
    let mut s = handshake(b.addr, 1).await;
    assert_eq!(b.handle().connections().len(), 1);
    let since = Instant::now();
    // The client sends nothing more; the server's heartbeats arrive until it gives up.
    let mut heartbeats = 0;
    loop {
        match tokio::time::timeout(TIMEOUT, read_frame(&mut s)).await {
            Err(_) => panic!("the server never dropped a silent client"),
            Ok(None) => break,
            Ok(Some((8, 0, _))) => heartbeats += 1,
            Ok(Some((1, 0, payload))) => {
                // A connection.close is acceptable too, as long as it is the end.
                assert_eq!(&payload[0..4], &[0, 10, 0, 50], "only connection.close");
            }
            Ok(Some(other)) => panic!("unexpected frame {other:?}"),
        }
    }
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "dropped too early: {waited:?}"
    );
    assert!(heartbeats >= 1, "the server sent no heartbeat");
    let handle = b.handle();
    assert!(
        eventually(|| handle.connections().is_empty().then_some(()))
            .await
            .is_some()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_protocol_header_gets_the_supported_header() {
    // RabbitMQ answers an unknown protocol header with its own and closes the socket.
    let b = start().await;
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut got = [0u8; 8];
    within(s.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"AMQP\x00\x00\x09\x01");
    assert!(b.handle().connections().is_empty());
    b.stop().await;
}

/// `basic.publish` to the default exchange with an empty property set and `body`, as the
/// three frames a client sends.
fn publish_frames(channel: u16, routing_key: &str, body: &[u8]) -> Vec<u8> {
    let mut args = Vec::new();
    args.extend_from_slice(&0u16.to_be_bytes()); // ticket
    shortstr(&mut args, ""); // exchange
    shortstr(&mut args, routing_key);
    args.push(0); // mandatory, immediate
    let mut out = method(channel, 60, 40, &args);
    let mut header = Vec::new();
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes()); // no properties
    for (kind, payload) in [(2u8, header.as_slice()), (3u8, body)] {
        out.push(kind);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(0xCE);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_counter_counts_messages_not_ack_frames() {
    // Ten publishes in one write are confirmed together, typically by one basic.ack with
    // multiple=true; the handle's `confirmed` counts publishes confirmed, as RabbitMQ's
    // messages_confirmed counter does.
    let b = start().await;
    let mut s = handshake(b.addr, 0).await;
    let mut open = Vec::new();
    shortstr(&mut open, "");
    s.write_all(&method(1, 20, 10, &open)).await.unwrap();
    assert_eq!(read_method(&mut s).await.0, 20, "channel.open-ok");
    s.write_all(&method(1, 85, 10, &[0])).await.unwrap();
    let (class, id, _) = read_method(&mut s).await;
    assert_eq!((class, id), (85, 11), "confirm.select-ok");
    let mut batch = Vec::new();
    for _ in 0..10 {
        batch.extend(publish_frames(1, "nowhere", b"m"));
    }
    s.write_all(&batch).await.unwrap();
    let mut covered = 0u64;
    while covered < 10 {
        let (class, id, args) = read_method(&mut s).await;
        assert_eq!((class, id), (60, 80), "basic.ack");
        let tag = u64::from_be_bytes(args[0..8].try_into().unwrap());
        let multiple = args[8] & 1 == 1;
        assert!(tag > covered, "acks go forward");
        assert!(multiple || tag == covered + 1, "no tag skipped");
        covered = tag;
    }
    let counters = b.handle().counters();
    assert_eq!(counters.published, 10);
    assert_eq!(counters.confirmed, 10);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_connection_runs_over_any_byte_stream() {
    let b = start_with(|b| b).await;
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let handle = b.handle();
    let served = tokio::spawn(async move { handle.serve_connection(server, None).await });
    login(&mut client).await;
    tune_and_open(&mut client, 0).await;
    let listed = b.handle().connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].peer, None);
    assert_eq!(listed[0].user, "guest");
    drop(client);
    within(served).await.unwrap();
    assert!(b.handle().connections().is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_is_refused_from_a_remote_address() {
    // RabbitMQ's loopback_users: guest may only connect from localhost. The refusal is
    // the same 403 as for a wrong password.
    let b = start().await;
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let handle = b.handle();
    let remote: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let served = tokio::spawn(async move { handle.serve_connection(server, Some(remote)).await });
    login(&mut client).await;
    let (class, id, args) = read_method(&mut client).await;
    assert_eq!((class, id), (10, 50), "connection.close");
    let code = u16::from_be_bytes([args[0], args[1]]);
    let len = args[2] as usize;
    let text = String::from_utf8_lossy(&args[3..3 + len]).into_owned();
    assert_eq!(
        (code, text.as_str()),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
        )
    );
    drop(client);
    within(served).await.unwrap();
    assert!(b.handle().connections().is_empty());
    b.stop().await;
}
