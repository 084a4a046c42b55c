//! `ServerConnection` after a valid handshake prefix (protocol header, start-ok, tune-ok,
//! open), fed arbitrary octets by a driver that answers `Authenticate` and `OpenVhost` the way
//! a broker would and echoes published content back. The first octet of the input picks the
//! chunk size the octets arrive in and how far the clock moves between chunks; the rest is the
//! stream. Checks: no panic, bounded buffers and events, well-formed server output.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use warren_amqp_codec::connection::{Event, ServerConfig, ServerConnection};
use warren_amqp_codec::frame::{self, FRAME_OVERHEAD};
use warren_amqp_codec::{
    BasicDeliver, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, LongStr, Method,
};

fn handshake() -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&frame::PROTOCOL_HEADER);
    let start_ok = ConnectionStartOk {
        response: LongStr::from_static("\0guest\0guest"),
        ..Default::default()
    };
    frame::encode_method(&mut buf, 0, &start_ok.into());
    let tune_ok = ConnectionTuneOk {
        channel_max: 16,
        frame_max: 8192,
        heartbeat: 5,
    };
    frame::encode_method(&mut buf, 0, &tune_ok.into());
    let open = ConnectionOpen {
        virtual_host: "/".into(),
        ..Default::default()
    };
    frame::encode_method(&mut buf, 0, &open.into());
    buf.to_vec()
}

/// Answers events; returns how many there were.
fn pump(conn: &mut ServerConnection, now: Instant) -> usize {
    let mut events = 0;
    loop {
        conn.handle_read(now);
        let mut again = false;
        while let Some(event) = conn.poll_event() {
            events += 1;
            match event {
                Event::Authenticate { .. } => {
                    conn.accept_login(now);
                    again = true;
                }
                Event::OpenVhost { .. } => conn.accept_vhost(now),
                Event::Command {
                    channel,
                    content: Some(content),
                    ..
                } => {
                    assert_eq!(content.body.len() as u64, content.header.body_size);
                    let deliver: Method = BasicDeliver {
                        consumer_tag: "c".into(),
                        delivery_tag: 1,
                        redelivered: false,
                        exchange: "".into(),
                        routing_key: "k".into(),
                    }
                    .into();
                    conn.send_content(channel, &deliver, &content.header.properties, &content.body);
                }
                _ => {}
            }
        }
        if !again {
            return events;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, tail)) = data.split_first() else {
        return;
    };
    let chunk = match control & 0x0F {
        0 => usize::MAX,
        n => usize::from(n) * usize::from(n),
    };
    let tick = Duration::from_millis(u64::from(control >> 4) * 700);
    let mut stream = handshake();
    stream.extend_from_slice(tail);

    let mut now = Instant::now();
    let mut conn = ServerConnection::new(ServerConfig::default(), now);
    for part in stream.chunks(chunk.min(stream.len()).max(1)) {
        now += tick;
        conn.handle_timeout(now);
        let available = conn.read_buffer().len() + part.len();
        conn.read_buffer().extend_from_slice(part);
        let events = pump(&mut conn, now);
        assert!(events <= available / FRAME_OVERHEAD + 4, "{events} events");
        let frame_max = conn.tuning().frame_max as usize;
        assert!(frame_max == 0 || conn.read_buffer().len() < frame_max + FRAME_OVERHEAD);
        assert!(conn.read_buffer().capacity() <= 2 * stream.len().max(frame_max) + 65_536);
        // What the server writes is well-formed.
        let mut out = conn.write_buffer().split();
        if !out.starts_with(&frame::PROTOCOL_HEADER) {
            while !out.is_empty() {
                assert!(matches!(frame::decode_frame(&mut out, 0), Ok(Some(_))));
            }
        }
        if conn.is_finished() {
            assert!(conn.read_buffer().is_empty());
            break;
        }
    }
});
