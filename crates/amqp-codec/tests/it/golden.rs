//! Golden tests: byte streams recorded from real clients (pika, py-amqp, raw sockets) talking to
//! a real RabbitMQ 3.10 (see `tests/golden/README.md` and `record.py`).
//!
//! For every capture and each direction: our decoder must find exactly the frames that
//! Wireshark's independent AMQP dissector found (`NAME.frames.tsv`: channel, kind, class and
//! method ids, body sizes, property flags), and re-encoding what we decoded must give back the
//! very same octets.

use bytes::{Bytes, BytesMut};
use std::path::PathBuf;
use std::time::Instant;
use warren_amqp_codec::connection::{
    ChannelCloseReason, CloseReason, Event, Mechanism, ServerConfig, ServerConnection,
};
use warren_amqp_codec::frame::{self, ProtocolHeader};
use warren_amqp_codec::{CodecError, Frame, Method};

const SCENARIOS: &[&str] = &[
    "handshake_plain",
    "handshake_amqplain",
    "publish_consume",
    "channel_error",
    "connection_error",
    "connection_blocked",
    "update_secret",
    "raw_misc",
    "frame_error",
    "bad_header",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(name: &str, ext: &str) -> Vec<u8> {
    let path = dir().join(format!("{name}.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One row of tshark's decoding.
#[derive(Debug, Clone, PartialEq)]
enum Row {
    ProtocolHeader([u8; 4]),
    Method {
        channel: u16,
        class_id: u16,
        method_id: u16,
        name: String,
    },
    Header {
        channel: u16,
        body_size: u64,
        class_id: u16,
        flags: u16,
    },
    Body {
        channel: u16,
        len: usize,
    },
    Heartbeat,
}

fn rows(name: &str, direction: &str) -> Vec<Row> {
    let text = String::from_utf8(read(name, "frames.tsv")).expect("tsv is UTF-8");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|cols| cols[0] == direction)
        .map(|cols| {
            let channel = || cols[1].parse::<u16>().expect("channel");
            match cols[2] {
                "protocol-header" => {
                    let octets: Vec<u8> = cols[4..8]
                        .iter()
                        .map(|c| c.parse().expect("octet"))
                        .collect();
                    Row::ProtocolHeader(octets.try_into().expect("4 octets"))
                }
                "method" => Row::Method {
                    channel: channel(),
                    class_id: cols[5].parse().expect("class id"),
                    method_id: cols[6].parse().expect("method id"),
                    name: format!("{}.{}", cols[3], cols[4]).to_lowercase(),
                },
                "header" => Row::Header {
                    channel: channel(),
                    body_size: cols[3].parse().expect("body size"),
                    class_id: cols[4].parse().expect("class id"),
                    flags: u16::from_str_radix(cols[5].trim_start_matches("0x"), 16)
                        .expect("flags"),
                },
                "body" => Row::Body {
                    channel: channel(),
                    len: cols[3].parse().expect("body length"),
                },
                "heartbeat" => Row::Heartbeat,
                other => panic!("unknown row type {other}"),
            }
        })
        .collect()
}

/// What we decoded, in the same terms as tshark's rows.
fn as_row(f: &Frame) -> Row {
    match f {
        Frame::Method { channel, method } => Row::Method {
            channel: *channel,
            class_id: method.class_id(),
            method_id: method.method_id(),
            name: method.name().to_string(),
        },
        Frame::Header { channel, header } => Row::Header {
            channel: *channel,
            body_size: header.body_size,
            class_id: header.class_id,
            flags: header.properties.flags(),
        },
        Frame::Body { channel, payload } => Row::Body {
            channel: *channel,
            len: payload.len(),
        },
        Frame::Heartbeat => Row::Heartbeat,
    }
}

fn same_frame(ours: &Row, theirs: &Row) -> bool {
    match (ours, theirs) {
        (
            Row::Method {
                channel: a,
                class_id: b,
                method_id: c,
                name: ours,
            },
            Row::Method {
                channel: x,
                class_id: y,
                method_id: z,
                name: theirs,
            },
        ) => {
            // tshark has no name for a few RabbitMQ extensions ("unknown").
            (a, b, c) == (x, y, z) && (theirs.ends_with(".unknown") || ours == theirs)
        }
        _ => ours == theirs,
    }
}

/// Decodes one direction of a capture, compares it with tshark's rows, and checks that
/// re-encoding reproduces the octets. Returns the decoded frames and the errors met (with the
/// offset of the frame that caused each).
fn check_direction(name: &str, direction: &str) -> (Vec<Frame>, Vec<(usize, CodecError)>) {
    let bytes = read(name, &format!("{direction}.bin"));
    let expected = rows(name, direction);
    let mut expected = expected.as_slice();
    let mut input = bytes.as_slice();
    if let Some(Row::ProtocolHeader(version)) = expected.first() {
        assert_eq!(&input[..4], b"AMQP", "{name} {direction}: protocol header");
        assert_eq!(
            &input[4..8],
            version,
            "{name} {direction}: protocol version"
        );
        input = &input[8..];
        expected = &expected[1..];
    }
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    let mut errors = Vec::new();
    let mut reencoded = BytesMut::new();
    let mut offset = 0;
    while !buf.is_empty() {
        let before = buf.len();
        match frame::decode_frame(&mut buf, 0) {
            Ok(Some(f)) => {
                f.encode(&mut reencoded);
                frames.push(f);
            }
            Ok(None) => {
                panic!("{name} {direction}: capture ends inside a frame at offset {offset}")
            }
            Err(e) => {
                // Skip the bad frame by its size field, and keep its octets for the comparison.
                let size = u32::from_be_bytes(buf[3..7].try_into().expect("size")) as usize;
                let bad = buf.split_to(size + 8);
                reencoded.extend_from_slice(&bad);
                errors.push((frames.len(), e));
            }
        }
        offset += before - buf.len();
    }
    assert_eq!(
        frames.len() + errors.len(),
        expected.len(),
        "{name} {direction}: frame count differs from tshark's"
    );
    let mut ours = frames.iter();
    let mut error_at = errors.iter().map(|(i, _)| *i).peekable();
    let mut decoded = 0;
    for (i, theirs) in expected.iter().enumerate() {
        if error_at.peek() == Some(&decoded) {
            error_at.next();
            continue;
        }
        let f = ours.next().expect("frame");
        decoded += 1;
        let row = as_row(f);
        assert!(
            same_frame(&row, theirs),
            "{name} {direction} frame {i}: ours {row:?}, tshark {theirs:?}"
        );
    }
    assert_eq!(
        &reencoded[..],
        input,
        "{name} {direction}: re-encoding changed the octets"
    );
    (frames, errors)
}

#[test]
fn every_capture_decodes_like_tshark_and_reencodes_identically() {
    for name in SCENARIOS.iter().filter(|n| **n != "bad_header") {
        for direction in ["c2s", "s2c"] {
            let (frames, errors) = check_direction(name, direction);
            assert!(!frames.is_empty(), "{name} {direction}: no frames");
            if *name != "frame_error" {
                assert!(errors.is_empty(), "{name} {direction}: {errors:?}");
            }
        }
    }
}

/// The `connection.close` RabbitMQ sent in a capture.
fn rabbit_close(name: &str) -> warren_amqp_codec::ConnectionClose {
    let (frames, _) = check_direction(name, "s2c");
    frames
        .iter()
        .find_map(|f| match f {
            Frame::Method {
                method: Method::ConnectionClose(c),
                ..
            } => Some(c.clone()),
            _ => None,
        })
        .expect("RabbitMQ sent connection.close")
}

/// The `connection.close` our state machine wrote.
fn our_close(conn: &mut ServerConnection) -> warren_amqp_codec::ConnectionClose {
    let mut out = conn.write_buffer().split();
    let mut found = None;
    while let Some(f) = frame::decode_frame(&mut out, 0).expect("our output decodes") {
        if let Frame::Method {
            method: Method::ConnectionClose(c),
            ..
        } = f
        {
            found = Some(c);
        }
    }
    found.expect("we sent connection.close")
}

#[test]
fn bad_frame_end_is_the_same_frame_error_as_rabbitmqs() {
    let (_, errors) = check_direction("frame_error", "c2s");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(
            errors[0].1,
            CodecError::BadFrameEnd {
                kind: 1,
                end: 0,
                ..
            }
        ),
        "{errors:?}"
    );
    assert!(errors[0].1.is_fatal());
    // Our connection.close is RabbitMQ's, code, text and ids.
    let (_, mut conn) = drive("frame_error");
    assert_eq!(our_close(&mut conn), rabbit_close("frame_error"));
}

#[test]
fn refused_login_is_the_same_close_as_rabbitmqs() {
    let (_, mut conn) = drive_with("connection_error", false);
    assert_eq!(our_close(&mut conn), rabbit_close("connection_error"));
}

#[test]
fn bad_protocol_header_gets_our_header_back() {
    let client = read("bad_header", "c2s.bin");
    let server = read("bad_header", "s2c.bin");
    assert_eq!(
        frame::check_protocol_header(&client),
        ProtocolHeader::Unsupported
    );
    assert_eq!(server, frame::PROTOCOL_HEADER);
    let now = Instant::now();
    let mut conn = ServerConnection::new(ServerConfig::default(), now);
    conn.read_buffer().extend_from_slice(&client);
    conn.handle_read(now);
    assert_eq!(
        &conn.write_buffer()[..],
        &server[..],
        "same answer as RabbitMQ"
    );
    assert!(conn.is_finished());
}

#[test]
fn publish_consume_keeps_every_property_and_field_type() {
    let (frames, _) = check_direction("publish_consume", "c2s");
    // The publish with all 14 properties set.
    let full = frames
        .iter()
        .find_map(|f| match f {
            Frame::Header { header, .. } if header.properties.flags() == 0xfffc => Some(header),
            _ => None,
        })
        .expect("a header with all 14 properties");
    let p = &full.properties;
    assert_eq!(p.delivery_mode, Some(2));
    assert_eq!(
        p.user_id.as_ref().map(|u| u.to_string()),
        Some("guest".to_string())
    );
    let headers = p.headers.as_ref().expect("headers");
    let codes: std::collections::BTreeSet<u8> =
        headers.iter().map(|(_, v)| v.type_code()).collect();
    for code in b"tbBsuIilfdDSxATFV" {
        assert!(
            codes.contains(code),
            "headers lack a value of type {:?}: {codes:?}",
            *code as char
        );
    }
    // The 10 KiB body went over three body frames at frame_max 4096.
    let bodies: Vec<usize> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Body { payload, .. } if payload.len() > 2000 => Some(payload.len()),
            _ => None,
        })
        .collect();
    assert_eq!(&bodies[..3], &[4088, 4088, 2064]);
}

/// Feeds a recorded client stream into the state machine, answering every decision with "yes",
/// and returns the events.
fn drive(name: &str) -> (Vec<Event>, ServerConnection) {
    drive_with(name, true)
}

/// Like [`drive`], but refusing every login unless `accept`.
fn drive_with(name: &str, accept: bool) -> (Vec<Event>, ServerConnection) {
    let client = Bytes::from(read(name, "c2s.bin"));
    let now = Instant::now();
    let mut conn = ServerConnection::new(ServerConfig::default(), now);
    let mut events = Vec::new();
    // Feed in uneven pieces, as a socket would deliver them.
    for piece in client.chunks(37) {
        conn.read_buffer().extend_from_slice(piece);
        conn.handle_read(now);
        while let Some(e) = conn.poll_event() {
            match &e {
                Event::Authenticate { .. } if accept => conn.accept_login(now),
                Event::Authenticate { .. } => conn.refuse_login(now),
                Event::OpenVhost { .. } => conn.accept_vhost(now),
                _ => {}
            }
            events.push(e);
        }
    }
    (events, conn)
}

#[test]
fn state_machine_accepts_real_pika_handshake() {
    let (events, mut conn) = drive("handshake_plain");
    match &events[0] {
        Event::Authenticate {
            mechanism,
            username,
            password,
            client_properties,
        } => {
            assert_eq!(*mechanism, Mechanism::Plain);
            assert_eq!((username.as_str(), password.as_str()), ("guest", "guest"));
            assert_eq!(
                client_properties.get("product").and_then(|v| v.as_str()),
                Some("Pika Python Client Library")
            );
        }
        other => panic!("expected Authenticate, got {other:?}"),
    }
    assert_eq!(events[1], Event::OpenVhost { vhost: "/".into() });
    assert!(matches!(events[2], Event::Opened { .. }));
    assert_eq!(events[3], Event::ChannelOpened { channel: 1 });
    assert!(matches!(
        &events[4],
        Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByClient { .. }
        }
    ));
    assert!(matches!(
        &events[5],
        Event::Closed {
            reason: CloseReason::ByClient { code: 200, .. }
        }
    ));
    crate::assert_closed_by_client(&mut conn);
}

#[test]
fn state_machine_accepts_real_py_amqp_amqplain_login() {
    let (events, mut conn) = drive("handshake_amqplain");
    match &events[0] {
        Event::Authenticate {
            mechanism,
            username,
            password,
            ..
        } => {
            assert_eq!(*mechanism, Mechanism::AmqPlain);
            assert_eq!((username.as_str(), password.as_str()), ("guest", "guest"));
        }
        other => panic!("expected Authenticate, got {other:?}"),
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpened { channel: 1 }))
    );
    assert!(matches!(
        events.last(),
        Some(Event::Closed {
            reason: CloseReason::ByClient { .. }
        })
    ));
    crate::assert_closed_by_client(&mut conn);
}

#[test]
fn state_machine_assembles_real_publishes() {
    let (events, _) = drive("publish_consume");
    let publishes: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Command {
                method: Method::BasicPublish(_),
                content: Some(c),
                ..
            } => {
                assert_eq!(c.body.len() as u64, c.header.body_size);
                Some(c.body.len())
            }
            _ => None,
        })
        .collect();
    assert!(
        publishes.contains(&10240),
        "the three-frame body is assembled: {publishes:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Command {
            method: Method::ConfirmSelect(_),
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Command {
            method: Method::BasicNack(_),
            ..
        }
    )));
}

/// Every command a real client sent on a channel reaches the caller, in order, with its
/// content complete: the state machine's commands are exactly tshark's channel methods (less
/// the channel lifecycle, which the state machine answers itself).
#[test]
fn state_machine_hands_up_exactly_the_commands_real_clients_sent() {
    for name in [
        "handshake_plain",
        "handshake_amqplain",
        "publish_consume",
        "connection_blocked",
        "update_secret",
    ] {
        let expected: Vec<(u16, u16, u16)> = rows(name, "c2s")
            .into_iter()
            .filter_map(|r| match r {
                Row::Method {
                    channel,
                    class_id,
                    method_id,
                    ..
                } if channel != 0
                    && !matches!((class_id, method_id), (20, 10) | (20, 40) | (20, 41)) =>
                {
                    Some((channel, class_id, method_id))
                }
                _ => None,
            })
            .collect();
        let (events, mut conn) = drive(name);
        let ours: Vec<(u16, u16, u16)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Command {
                    channel,
                    method,
                    content,
                } => {
                    assert_eq!(
                        method.has_content(),
                        content.is_some(),
                        "{name}: {method:?}"
                    );
                    if let Some(c) = content {
                        assert_eq!(
                            c.body.len() as u64,
                            c.header.body_size,
                            "{name}: body assembled"
                        );
                    }
                    Some((*channel, method.class_id(), method.method_id()))
                }
                _ => None,
            })
            .collect();
        if matches!(name, "publish_consume" | "connection_blocked") {
            assert!(!expected.is_empty(), "{name}: no commands in the capture");
        }
        assert_eq!(ours, expected, "{name}");
        crate::assert_closed_by_client(&mut conn);
    }
}

/// Our `connection.start` and `connection.tune` carry what RabbitMQ's carried in the capture:
/// the same mechanisms, the same `server-properties` keys in the same order, the same
/// capabilities (all true, same order) and the same tuning defaults.
#[test]
fn start_and_tune_are_rabbitmqs() {
    let (theirs, _) = check_direction("handshake_plain", "s2c");
    let (mut start, mut tune) = (None, None);
    for f in theirs {
        match f {
            Frame::Method {
                method: Method::ConnectionStart(m),
                ..
            } => start = Some(m),
            Frame::Method {
                method: Method::ConnectionTune(m),
                ..
            } => tune = Some(m),
            _ => {}
        }
    }
    let (start, tune) = (
        start.expect("RabbitMQ's start"),
        tune.expect("RabbitMQ's tune"),
    );
    let config = ServerConfig::default();
    let mechanisms: Vec<&str> = config.mechanisms.iter().map(|m| m.name()).collect();
    assert_eq!(
        start.mechanisms.as_str(),
        Some(mechanisms.join(" ").as_str())
    );
    let keys = |t: &warren_amqp_codec::FieldTable| {
        t.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&config.server_properties),
        keys(&start.server_properties)
    );
    let capabilities = |t: &warren_amqp_codec::FieldTable| {
        t.get("capabilities").and_then(|v| v.as_table()).map(|c| {
            c.iter()
                .map(|(k, v)| (k.to_string(), v.as_bool()))
                .collect::<Vec<_>>()
        })
    };
    let rabbit = capabilities(&start.server_properties).expect("RabbitMQ's capabilities");
    assert!(rabbit.iter().all(|(_, v)| *v == Some(true)));
    assert_eq!(capabilities(&config.server_properties), Some(rabbit));
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (config.channel_max, config.frame_max, config.heartbeat)
    );
}
