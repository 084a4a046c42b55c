//! Scripted-peer tests of the sans-IO server connection (`warren_amqp_codec::connection`).
//!
//! A [`Peer`] plays the client: it encodes frames with the crate's own encoders, appends them to
//! the connection's read buffer, and decodes everything the server wrote into a list of frames
//! that each test compares exactly (method, channel, reply code and text, class and method ids,
//! order). Time is a fixed base `Instant` plus `Duration`s; nothing sleeps.
//!
//! The expected behaviour is RabbitMQ's (3.10.8 on the wire, and its current sources): errors
//! before `connection.open` are answered with silence, fatal frame errors with a
//! `connection.close` and then silence, everything else with the close handshake.

use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};
use warren_amqp_codec::connection::{
    CAPABILITIES, ChannelCloseReason, CloseReason, Content, Event, FRAME_MIN_SIZE, Mechanism,
    ServerConfig, ServerConnection, Tuning, server_properties,
};
use warren_amqp_codec::frame::{self, PROTOCOL_HEADER};
use warren_amqp_codec::{
    AmqpException, BasicDeliver, BasicProperties, BasicPublish, BasicQos, BasicQosOk, ChannelClose,
    ChannelCloseOk, ChannelFlow, ChannelOpen, ChannelOpenOk, ConnectionBlocked, ConnectionClose,
    ConnectionCloseOk, ConnectionOpen, ConnectionOpenOk, ConnectionStart, ConnectionStartOk,
    ConnectionTune, ConnectionTuneOk, ConnectionUnblocked, ConnectionUpdateSecret, ContentHeader,
    FieldTable, FieldValue, Frame, LongStr, Method, ReplyCode, ShortStr,
};

// ---------------------------------------------------------------------------------------------
// The scripted client
// ---------------------------------------------------------------------------------------------

/// Client bytes, built frame by frame with the crate's encoders.
#[derive(Default)]
struct Wire(BytesMut);

impl Wire {
    fn new() -> Self {
        Self::default()
    }

    fn protocol_header(self) -> Self {
        self.raw(&PROTOCOL_HEADER)
    }

    fn method(mut self, channel: u16, method: impl Into<Method>) -> Self {
        frame::encode_method(&mut self.0, channel, &method.into());
        self
    }

    fn header(self, channel: u16, body_size: u64) -> Self {
        self.header_with(channel, body_size, BasicProperties::default())
    }

    fn header_with(self, channel: u16, body_size: u64, properties: BasicProperties) -> Self {
        self.content_header(channel, &ContentHeader::basic(body_size, properties))
    }

    /// Any content header, class and weight included.
    fn content_header(mut self, channel: u16, header: &ContentHeader) -> Self {
        frame::encode_header(&mut self.0, channel, header);
        self
    }

    fn body(mut self, channel: u16, payload: &[u8]) -> Self {
        frame::encode_body(&mut self.0, channel, payload);
        self
    }

    fn heartbeat(mut self) -> Self {
        frame::encode_heartbeat(&mut self.0);
        self
    }

    /// A frame with any type and payload, framing done here.
    fn frame(self, kind: u8, channel: u16, payload: &[u8]) -> Self {
        let size = u32::try_from(payload.len()).expect("payload fits a frame");
        self.raw(&[kind])
            .raw(&channel.to_be_bytes())
            .raw(&size.to_be_bytes())
            .raw(payload)
            .raw(&[frame::FRAME_END])
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// The octets, with the last one (a frame end) replaced by `end`.
    fn with_bad_end(self, end: u8) -> Vec<u8> {
        let mut bytes = self.0.to_vec();
        *bytes.last_mut().expect("a frame") = end;
        bytes
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl AsRef<[u8]> for Wire {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The client side of one connection, and the clock.
struct Peer {
    conn: ServerConnection,
    /// Events polled (so that the frames behind them were decoded) but not yet looked at.
    pending: std::collections::VecDeque<Event>,
    /// When the connection was accepted.
    start: Instant,
    now: Instant,
}

impl Peer {
    fn new(config: ServerConfig) -> Self {
        let start = Instant::now();
        Self {
            conn: ServerConnection::new(config, start),
            pending: Default::default(),
            start,
            now: start,
        }
    }

    /// Appends client bytes and lets the server read them, decoding all it can (the events
    /// wait in `pending` for [`Self::events`]).
    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.conn.read_buffer().extend_from_slice(bytes.as_ref());
        self.conn.handle_read(self.now);
        self.drain();
    }

    /// Moves the clock to `start + at` (never backwards) and fires the timers.
    fn tick_at(&mut self, at: Duration) {
        let now = self.start + at;
        assert!(now >= self.now, "time goes forward only");
        self.now = now;
        self.conn.handle_timeout(now);
    }

    /// Moves the clock to `start + at` without firing timers.
    fn set_time(&mut self, at: Duration) {
        let now = self.start + at;
        assert!(now >= self.now, "time goes forward only");
        self.now = now;
    }

    /// How far the clock is from `start`.
    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Lets the server decode everything it can, keeping the events for [`Self::events`]: a
    /// caller that acts on nothing in between.
    fn drain(&mut self) {
        while let Some(e) = self.conn.poll_event() {
            self.pending.push_back(e);
        }
    }

    /// Everything the server wrote since the last call, as raw octets.
    fn output(&mut self) -> Vec<u8> {
        self.drain();
        self.conn.write_buffer().split().to_vec()
    }

    /// Everything the server wrote since the last call, decoded into whole frames.
    fn frames(&mut self) -> Vec<Frame> {
        self.drain();
        let mut buf = self.conn.write_buffer().split();
        let mut frames = Vec::new();
        while let Some(f) = frame::decode_frame(&mut buf, 0).expect("server output decodes") {
            frames.push(f);
        }
        assert!(
            buf.is_empty(),
            "server output ends in a partial frame: {buf:?}"
        );
        frames
    }

    fn events(&mut self) -> Vec<Event> {
        self.drain();
        self.pending.drain(..).collect()
    }

    /// Asserts that the server wrote nothing and has nothing to say.
    fn assert_quiet(&mut self) {
        assert_eq!(self.frames(), []);
        assert_eq!(self.events(), []);
    }

    fn open_channel(&mut self, channel: u16) {
        self.send(Wire::new().method(channel, ChannelOpen::default()));
        assert_eq!(self.frames(), [m(channel, ChannelOpenOk::default())]);
        assert_eq!(self.events(), [Event::ChannelOpened { channel }]);
        assert!(self.conn.is_channel_open(channel));
    }

    /// After the server's `connection.close`: the client answers, and the connection is over.
    fn answer_close(&mut self) {
        assert!(!self.conn.is_finished(), "waits for close-ok");
        assert!(!self.conn.is_open());
        assert!(self.conn.wants_read(), "reads on, to see the close-ok");
        self.send(Wire::new().method(0, ConnectionCloseOk::default()));
        assert!(self.conn.is_finished());
        assert!(!self.conn.wants_read());
        assert_eq!(self.conn.poll_timeout(), None);
        self.assert_quiet();
    }

    /// Sends `bytes` on an open (or opening) connection and checks that the server answers with
    /// exactly one `connection.close` and the matching [`Event::Closed`], and then waits for
    /// the client's `close-ok`.
    fn expect_connection_error(
        &mut self,
        bytes: impl AsRef<[u8]>,
        code: ReplyCode,
        text: &str,
        class_id: u16,
        method_id: u16,
    ) {
        self.send(bytes);
        let reply_text = format!("{} - {text}", code.name());
        assert_eq!(
            self.frames(),
            [connection_close(
                code.code(),
                &reply_text,
                class_id,
                method_id
            )]
        );
        let exception = AmqpException::connection(code, text).caused_by(class_id, method_id);
        assert_eq!(
            self.events(),
            [Event::Closed {
                reason: CloseReason::ByServer(exception)
            }]
        );
        assert!(!self.conn.is_open());
        assert!(!self.conn.is_finished());
        assert!(self.conn.wants_read());
    }

    /// Sends `bytes` during the handshake and checks that the server answers with silence: no
    /// frame, an [`Event::Closed`] naming the exception (for the logs), then
    /// [`Peer::assert_held_silent`].
    fn expect_silent_close(
        &mut self,
        bytes: impl AsRef<[u8]>,
        code: ReplyCode,
        text: &str,
        class_id: u16,
        method_id: u16,
    ) {
        self.send(bytes);
        assert_eq!(self.frames(), []);
        let exception = AmqpException::connection(code, text).caused_by(class_id, method_id);
        assert_eq!(
            self.events(),
            [Event::Closed {
                reason: CloseReason::ByServer(exception)
            }]
        );
        self.assert_held_silent();
    }

    /// Sends `bytes` that break the framing once past the handshake: `connection.close` 501
    /// with `text` (no method to blame), then silence.
    fn expect_fatal_frame_error(&mut self, bytes: impl AsRef<[u8]>, text: &str) {
        self.send(bytes);
        assert_eq!(
            self.frames(),
            [connection_close(
                501,
                &format!("FRAME_ERROR - {text}"),
                0,
                0
            )]
        );
        assert_eq!(
            self.events(),
            [Event::Closed {
                reason: CloseReason::ByServer(AmqpException::connection(
                    ReplyCode::FrameError,
                    text
                ))
            }]
        );
        self.assert_held_silent();
    }

    /// The connection is held silent for the default 3 s from now, then finishes.
    fn assert_held_silent(&mut self) {
        self.assert_held_silent_for(Duration::from_secs(3));
    }

    /// The connection reads nothing and waits for nothing (not even a close-ok) for `delay`
    /// from now, then finishes without another word.
    fn assert_held_silent_for(&mut self, delay: Duration) {
        assert!(!self.conn.wants_read());
        assert!(!self.conn.is_open());
        assert!(!self.conn.is_finished());
        assert_eq!(self.conn.poll_timeout(), Some(self.now + delay));
        let at = self.elapsed();
        // Nothing the client sends is read, neither close nor close-ok.
        self.send(
            Wire::new()
                .method(0, ConnectionCloseOk::default())
                .method(0, client_close(200, "bye"))
                .heartbeat(),
        );
        self.assert_quiet();
        assert!(!self.conn.is_finished());
        self.tick_at(at + delay - ms(1));
        assert!(!self.conn.is_finished());
        self.assert_quiet();
        self.tick_at(at + delay);
        assert!(self.conn.is_finished());
        assert!(!self.conn.wants_read());
        assert_eq!(self.conn.poll_timeout(), None);
        self.assert_quiet();
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Methods and frames
// ---------------------------------------------------------------------------------------------

fn m(channel: u16, method: impl Into<Method>) -> Frame {
    Frame::Method {
        channel,
        method: method.into(),
    }
}

fn connection_close(code: u16, text: &str, class_id: u16, method_id: u16) -> Frame {
    m(
        0,
        ConnectionClose {
            reply_code: code,
            reply_text: ShortStr::from(text.to_string()),
            class_id,
            method_id,
        },
    )
}

fn channel_close(channel: u16, code: u16, text: &str, class_id: u16, method_id: u16) -> Frame {
    m(
        channel,
        ChannelClose {
            reply_code: code,
            reply_text: ShortStr::from(text.to_string()),
            class_id,
            method_id,
        },
    )
}

/// `client-properties` announcing the given capabilities as `true`.
fn client_properties(capabilities: &[&'static str]) -> FieldTable {
    let caps: FieldTable = capabilities.iter().map(|c| (*c, true)).collect();
    [
        ("product", FieldValue::from("scripted-peer")),
        ("capabilities", FieldValue::from(caps)),
    ]
    .into_iter()
    .collect()
}

fn start_ok(properties: FieldTable, mechanism: &'static str, response: Vec<u8>) -> Method {
    ConnectionStartOk {
        client_properties: properties,
        mechanism: ShortStr::from(mechanism),
        response: LongStr::from(response),
        locale: ShortStr::from("en_US"),
    }
    .into()
}

fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

fn amqplain(entries: &[(&'static str, &'static str)]) -> Vec<u8> {
    let table: FieldTable = entries.iter().copied().collect();
    let mut buf = BytesMut::new();
    table.encode_entries(&mut buf);
    buf.to_vec()
}

fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> ConnectionTuneOk {
    ConnectionTuneOk {
        channel_max,
        frame_max,
        heartbeat,
    }
}

fn open(vhost: &'static str) -> ConnectionOpen {
    ConnectionOpen {
        virtual_host: ShortStr::from(vhost),
        ..Default::default()
    }
}

fn publish(routing_key: &'static str) -> BasicPublish {
    BasicPublish {
        routing_key: ShortStr::from(routing_key),
        ..Default::default()
    }
}

fn qos(prefetch_count: u16) -> BasicQos {
    BasicQos {
        prefetch_size: 0,
        prefetch_count,
        global: false,
    }
}

fn client_close(code: u16, text: &'static str) -> ConnectionClose {
    ConnectionClose {
        reply_code: code,
        reply_text: ShortStr::from(text),
        class_id: 0,
        method_id: 0,
    }
}

fn client_channel_close(code: u16, text: &'static str) -> ChannelClose {
    ChannelClose {
        reply_code: code,
        reply_text: ShortStr::from(text),
        class_id: 0,
        method_id: 0,
    }
}

fn default_tune() -> Frame {
    m(
        0,
        ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
    )
}

/// A body whose octets say where they are.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The payload of `basic.qos` prefetch-count 1 as RabbitMQ prints it.
const QOS_1_OCTETS: &str = "<<0,60,0,10,0,0,0,0,0,1,0>>";
/// The payload of `tune_ok(2047, 131_072, 0)` as RabbitMQ prints it.
const TUNE_OK_OCTETS: &str = "<<0,10,0,31,7,255,0,2,0,0,0,0>>";
/// The payload of a `basic` content header with body size 1 and no properties.
const HEADER_1_OCTETS: &str = "<<0,60,0,0,0,0,0,0,0,0,0,1,0,0>>";

// ---------------------------------------------------------------------------------------------
// Getting to a state
// ---------------------------------------------------------------------------------------------

/// The protocol header sent, `connection.start` drained.
fn started(config: ServerConfig) -> Peer {
    let mut p = Peer::new(config);
    p.send(PROTOCOL_HEADER);
    assert!(matches!(
        p.frames().as_slice(),
        [Frame::Method {
            channel: 0,
            method: Method::ConnectionStart(_)
        }]
    ));
    assert!(p.conn.wants_read());
    p
}

/// Protocol header and a PLAIN start-ok with `capabilities`; login accepted; tune drained.
fn logged_in(config: ServerConfig, capabilities: &[&'static str]) -> Peer {
    let mut p = started(config);
    p.send(Wire::new().method(
        0,
        start_ok(
            client_properties(capabilities),
            "PLAIN",
            plain("guest", "guest"),
        ),
    ));
    assert_eq!(p.frames(), []);
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { .. }]
    ));
    assert!(!p.conn.wants_read());
    p.conn.accept_login(p.now);
    assert!(matches!(
        p.frames().as_slice(),
        [Frame::Method {
            channel: 0,
            method: Method::ConnectionTune(_)
        }]
    ));
    assert!(p.conn.wants_read());
    p
}

/// Logged in and tuned with the server's defaults, heartbeats off: "opening".
fn tuned() -> Peer {
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.send(Wire::new().method(0, tune_ok(2047, 131_072, 0)));
    p.assert_quiet();
    p
}

/// A fully open connection.
fn open_peer(config: ServerConfig, capabilities: &[&'static str], tune: ConnectionTuneOk) -> Peer {
    let mut p = logged_in(config, capabilities);
    p.send(Wire::new().method(0, tune).method(0, open("/")));
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    assert!(!p.conn.wants_read());
    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    assert!(matches!(p.events().as_slice(), [Event::Opened { .. }]));
    assert!(p.conn.is_open());
    assert!(p.conn.wants_read());
    p
}

/// Open with the server's defaults and heartbeats off.
fn opened() -> Peer {
    open_peer(ServerConfig::default(), &[], tune_ok(2047, 131_072, 0))
}

/// Open, with channel 1 open.
fn opened_with_channel() -> Peer {
    let mut p = opened();
    p.open_channel(1);
    p
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_handshake_sends_start_tune_and_open_ok() {
    let server_properties: FieldTable = [("product", "warren")].into_iter().collect();
    let config = ServerConfig {
        server_properties: server_properties.clone(),
        mechanisms: vec![Mechanism::Plain, Mechanism::AmqPlain],
        ..ServerConfig::default()
    };
    let mut p = Peer::new(config);
    assert_eq!(
        p.conn.poll_timeout(),
        Some(p.start + Duration::from_secs(10))
    );
    assert!(p.conn.wants_read());
    assert!(!p.conn.is_open());
    // Before tuning, the pre-tune limits are in force.
    assert_eq!(
        p.conn.tuning(),
        Tuning {
            channel_max: 2047,
            frame_max: FRAME_MIN_SIZE,
            heartbeat: 0
        }
    );

    p.send(PROTOCOL_HEADER);
    assert_eq!(
        p.frames(),
        [m(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties,
                mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                locales: LongStr::from("en_US"),
            }
        )]
    );
    assert_eq!(p.events(), []);
    assert!(p.conn.client_properties().is_empty());
    assert!(p.conn.wants_read());

    let props = client_properties(&["publisher_confirms"]);
    p.send(Wire::new().method(0, start_ok(props.clone(), "PLAIN", plain("guest", "guest"))));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Authenticate {
            mechanism: Mechanism::Plain,
            username: "guest".into(),
            password: "guest".into(),
            client_properties: props.clone(),
        }]
    );
    assert_eq!(p.conn.client_properties(), &props);
    assert!(p.conn.client_has_capability("publisher_confirms"));
    assert!(!p.conn.client_has_capability("connection.blocked"));
    // The caller judges the credentials: nothing to read meanwhile.
    assert!(!p.conn.wants_read());

    p.conn.accept_login(p.now);
    assert_eq!(p.frames(), [default_tune()]);
    assert_eq!(p.events(), []);
    assert!(p.conn.wants_read());

    p.send(Wire::new().method(0, tune_ok(10, 8192, 30)));
    p.assert_quiet();
    let tuning = Tuning {
        channel_max: 10,
        frame_max: 8192,
        heartbeat: 30,
    };
    assert_eq!(p.conn.tuning(), tuning);
    // The heartbeat timers run from tune-ok (first send check at 15 s); the handshake deadline
    // comes first.
    assert_eq!(
        p.conn.poll_timeout(),
        Some(p.start + Duration::from_secs(10))
    );
    p.send(Wire::new().method(0, open("/")));
    assert_eq!(p.frames(), []);
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    assert!(!p.conn.is_open());
    assert!(!p.conn.wants_read());

    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    assert_eq!(p.events(), [Event::Opened { tuning }]);
    assert_eq!(p.conn.tuning(), tuning);
    assert!(p.conn.is_open());
    assert!(p.conn.wants_read());
    // The handshake deadline is gone; the heartbeat sender's first check is next.
    assert_eq!(
        p.conn.poll_timeout(),
        Some(p.start + Duration::from_secs(15))
    );
}

#[test]
fn amqplain_handshake_reads_login_and_password() {
    let mut p = Peer::new(ServerConfig::default());
    let response = amqplain(&[("LOGIN", "guest"), ("PASSWORD", "s3cret")]);
    p.send(
        Wire::new()
            .protocol_header()
            .method(0, start_ok(client_properties(&[]), "AMQPLAIN", response)),
    );
    assert_eq!(p.frames().len(), 1);
    assert_eq!(
        p.events(),
        [Event::Authenticate {
            mechanism: Mechanism::AmqPlain,
            username: "guest".into(),
            password: "s3cret".into(),
            client_properties: client_properties(&[]),
        }]
    );
    p.conn.accept_login(p.now);
    assert_eq!(p.frames(), [default_tune()]);
    p.send(
        Wire::new()
            .method(0, tune_ok(2047, 131_072, 60))
            .method(0, open("vh")),
    );
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "vh".into() }]);
    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    assert_eq!(
        p.events(),
        [Event::Opened {
            tuning: Tuning {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60
            }
        }]
    );
}

#[test]
fn start_offers_the_configured_mechanisms_in_order() {
    for (mechanisms, offered) in [
        (vec![Mechanism::Plain], "PLAIN"),
        (vec![Mechanism::AmqPlain], "AMQPLAIN"),
        (
            vec![Mechanism::AmqPlain, Mechanism::Plain],
            "AMQPLAIN PLAIN",
        ),
        (
            vec![Mechanism::Plain, Mechanism::AmqPlain],
            "PLAIN AMQPLAIN",
        ),
    ] {
        let mut p = Peer::new(ServerConfig {
            mechanisms,
            ..ServerConfig::default()
        });
        p.send(PROTOCOL_HEADER);
        assert!(matches!(
            p.frames().as_slice(),
            [Frame::Method { channel: 0, method: Method::ConnectionStart(s) }] if s.mechanisms == offered
        ));
    }
    // The defaults offer RabbitMQ's two in RabbitMQ's order, and announce RabbitMQ-shaped
    // server-properties.
    let mut p = Peer::new(ServerConfig::default());
    p.send(PROTOCOL_HEADER);
    assert_eq!(
        p.frames(),
        [m(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties("Warren", env!("CARGO_PKG_VERSION"), "warren"),
                mechanisms: LongStr::from("AMQPLAIN PLAIN"),
                locales: LongStr::from("en_US"),
            }
        )]
    );
}

#[test]
fn default_config_and_server_properties_are_rabbitmqs() {
    let config = ServerConfig::default();
    assert_eq!(config.mechanisms, [Mechanism::AmqPlain, Mechanism::Plain]);
    assert_eq!(config.channel_max, 2047);
    assert_eq!(config.frame_max, 131_072);
    assert_eq!(config.heartbeat, 60);
    assert_eq!(config.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.close_timeout, Duration::from_secs(30));
    assert_eq!(config.silent_close_delay, Duration::from_secs(3));
    assert_eq!(config.max_message_size, 128 * 1024 * 1024);
    assert_eq!(
        config.server_properties,
        server_properties("Warren", env!("CARGO_PKG_VERSION"), "warren")
    );

    // The list itself is checked against RabbitMQ's own `connection.start` in the golden
    // tests (`golden::start_and_tune_are_rabbitmqs`).
    let capabilities: FieldTable = CAPABILITIES.iter().map(|c| (*c, true)).collect();
    let expected: FieldTable = [
        ("capabilities", FieldValue::from(capabilities)),
        ("cluster_name", FieldValue::from("rabbit@h")),
        (
            "copyright",
            FieldValue::from("Copyright (c) The Warren developers"),
        ),
        (
            "information",
            FieldValue::from("Licensed under MIT or Apache-2.0"),
        ),
        ("platform", FieldValue::from("Rust")),
        ("product", FieldValue::from("P")),
        ("version", FieldValue::from("1.2.3")),
    ]
    .into_iter()
    .collect();
    assert_eq!(server_properties("P", "1.2.3", "rabbit@h"), expected);
}

#[test]
fn amqplain_entry_order_does_not_matter() {
    let mut p = Peer::new(ServerConfig::default());
    let response = amqplain(&[("PASSWORD", "pw"), ("LOGIN", "user")]);
    p.send(
        Wire::new()
            .protocol_header()
            .method(0, start_ok(FieldTable::new(), "AMQPLAIN", response)),
    );
    let _start = p.frames();
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { username, password, .. }] if username == "user" && password == "pw"
    ));
}

#[test]
fn pipelined_handshake_in_one_write() {
    // Everything up to a channel.open in a single read: the server must not stall on input
    // that waited in the buffer while the caller judged credentials and the vhost.
    let mut p = Peer::new(ServerConfig::default());
    p.send(
        Wire::new()
            .protocol_header()
            .method(
                0,
                start_ok(client_properties(&[]), "PLAIN", plain("guest", "guest")),
            )
            .method(0, tune_ok(2047, 131_072, 0))
            .method(0, open("/"))
            .method(1, ChannelOpen::default())
            .method(1, qos(10)),
    );
    assert!(matches!(
        p.frames().as_slice(),
        [Frame::Method {
            method: Method::ConnectionStart(_),
            ..
        }]
    ));
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { .. }]
    ));
    assert!(!p.conn.wants_read());

    p.conn.accept_login(p.now);
    assert_eq!(p.frames(), [default_tune()]);
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    assert!(!p.conn.wants_read());

    p.conn.accept_vhost(p.now);
    assert_eq!(
        p.frames(),
        [
            m(0, ConnectionOpenOk::default()),
            m(1, ChannelOpenOk::default())
        ]
    );
    assert_eq!(
        p.events(),
        [
            Event::Opened {
                tuning: Tuning {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 0
                }
            },
            Event::ChannelOpened { channel: 1 },
            Event::Command {
                channel: 1,
                method: qos(10).into(),
                content: None
            },
        ]
    );
    assert!(p.conn.wants_read());
}

#[test]
fn pipelined_input_waits_for_the_verdict_even_if_more_arrives() {
    // More input arriving while the caller judges the login is kept, in order, behind what
    // was already buffered.
    let mut p = started(ServerConfig::default());
    p.send(
        Wire::new()
            .method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b")))
            .method(0, tune_ok(2047, 131_072, 0)),
    );
    assert_eq!(p.events().len(), 1);
    p.send(Wire::new().method(0, open("/")));
    p.assert_quiet();
    p.conn.accept_login(p.now);
    assert_eq!(p.frames(), [default_tune()]);
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    p.send(Wire::new().method(3, ChannelOpen::default()));
    p.assert_quiet();
    p.conn.accept_vhost(p.now);
    assert_eq!(
        p.frames(),
        [
            m(0, ConnectionOpenOk::default()),
            m(3, ChannelOpenOk::default())
        ]
    );
    assert_eq!(p.events().len(), 2);
    assert!(p.conn.is_channel_open(3));
}

#[test]
fn heartbeats_are_accepted_in_every_state() {
    let mut p = Peer::new(ServerConfig::default());
    p.send(Wire::new().protocol_header().heartbeat());
    assert_eq!(p.frames().len(), 1);
    p.send(
        Wire::new()
            .heartbeat()
            .method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b")))
            .heartbeat(),
    );
    assert_eq!(p.events().len(), 1);
    p.conn.accept_login(p.now);
    assert_eq!(p.frames(), [default_tune()]);
    p.send(
        Wire::new()
            .heartbeat()
            .method(0, tune_ok(2047, 131_072, 0))
            .heartbeat()
            .method(0, open("/"))
            .heartbeat(),
    );
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    assert_eq!(p.events().len(), 1);
    p.send(Wire::new().heartbeat().heartbeat());
    p.assert_quiet();
    assert!(p.conn.is_open());
}

#[test]
fn handshake_fed_one_octet_at_a_time() {
    let client = Wire::new()
        .protocol_header()
        .method(
            0,
            start_ok(client_properties(&[]), "PLAIN", plain("guest", "guest")),
        )
        .method(0, tune_ok(100, 4096, 0))
        .method(0, open("/"))
        .method(7, ChannelOpen::default())
        .method(7, publish("rk"))
        .header(7, 3)
        .body(7, b"abc")
        .method(0, client_close(200, "bye"));
    let mut p = Peer::new(ServerConfig::default());
    let mut frames = Vec::new();
    let mut events = Vec::new();
    for octet in client.as_ref() {
        // Fed directly: this caller acts on each event as it comes.
        p.conn.read_buffer().extend_from_slice(&[*octet]);
        p.conn.handle_read(p.now);
        while let Some(e) = p.conn.poll_event() {
            match e {
                Event::Authenticate { .. } => p.conn.accept_login(p.now),
                Event::OpenVhost { .. } => p.conn.accept_vhost(p.now),
                _ => {}
            }
            events.push(e);
        }
        frames.extend(p.frames());
    }
    let names: Vec<&str> = frames
        .iter()
        .map(|f| match f {
            Frame::Method { method, .. } => method.name(),
            other => panic!("unexpected frame {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "connection.start",
            "connection.tune",
            "connection.open-ok",
            "channel.open-ok",
            "connection.close-ok"
        ]
    );
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(
        events[4],
        Event::Command {
            channel: 7,
            method: publish("rk").into(),
            content: Some(Content {
                header: ContentHeader::basic(3, BasicProperties::default()),
                body: Bytes::from_static(b"abc"),
            }),
        }
    );
    assert_eq!(
        events[5],
        Event::Closed {
            reason: CloseReason::ByClient {
                code: 200,
                text: "bye".into()
            }
        }
    );
    crate::assert_closed_by_client(&mut p.conn);
}

#[test]
fn client_may_close_during_the_handshake() {
    let bye = |p: &mut Peer| {
        p.send(Wire::new().method(0, client_close(200, "changed my mind")));
        assert_eq!(p.frames(), [m(0, ConnectionCloseOk::default())]);
        assert_eq!(
            p.events(),
            [Event::Closed {
                reason: CloseReason::ByClient {
                    code: 200,
                    text: "changed my mind".into()
                }
            }]
        );
        crate::assert_closed_by_client(&mut p.conn);
        assert_eq!(p.conn.poll_timeout(), None);
        // Nothing more is read.
        p.send(Wire::new().method(0, tune_ok(2047, 131_072, 0)));
        p.assert_quiet();
    };
    // Waiting for start-ok.
    bye(&mut started(ServerConfig::default()));
    // Waiting for tune-ok.
    bye(&mut logged_in(ServerConfig::default(), &[]));
    // Waiting for connection.open.
    bye(&mut tuned());
    // Open.
    bye(&mut opened_with_channel());
}

#[test]
fn client_close_pipelined_behind_start_ok_is_answered_after_the_verdict() {
    let mut p = started(ServerConfig::default());
    p.send(
        Wire::new()
            .method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b")))
            .method(0, client_close(200, "bye")),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(p.events().len(), 1);
    p.conn.accept_login(p.now);
    assert_eq!(
        p.frames(),
        [default_tune(), m(0, ConnectionCloseOk::default())]
    );
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByClient {
                code: 200,
                text: "bye".into()
            }
        }]
    );
    crate::assert_closed_by_client(&mut p.conn);
}

#[test]
fn wrong_method_during_the_handshake_is_answered_with_silence() {
    // RabbitMQ's "unexpected method" is a channel error, but before connection.open it sends
    // nothing: the reason is only for the logs.
    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().method(0, tune_ok(2047, 131_072, 0)),
        ReplyCode::ChannelError,
        "unexpected method in connection state starting",
        10,
        31,
    );

    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().method(0, ChannelOpen::default()),
        ReplyCode::ChannelError,
        "unexpected method in connection state starting",
        20,
        10,
    );

    let mut p = logged_in(ServerConfig::default(), &[]);
    p.expect_silent_close(
        Wire::new().method(0, open("/")),
        ReplyCode::ChannelError,
        "unexpected method in connection state tuning",
        10,
        40,
    );

    let mut p = logged_in(ServerConfig::default(), &[]);
    p.expect_silent_close(
        Wire::new().method(
            0,
            start_ok(FieldTable::new(), "PLAIN", plain("guest", "guest")),
        ),
        ReplyCode::ChannelError,
        "unexpected method in connection state tuning",
        10,
        11,
    );
}

#[test]
fn wrong_connection_method_once_opening_is_channel_error() {
    // After tune-ok, errors are answered with connection.close.
    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().method(0, tune_ok(2047, 131_072, 0)),
        ReplyCode::ChannelError,
        "unexpected method in connection state opening",
        10,
        31,
    );
    p.answer_close();

    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().method(
            0,
            ConnectionUpdateSecret {
                new_secret: LongStr::from("s"),
                reason: ShortStr::from("r"),
            },
        ),
        ReplyCode::ChannelError,
        "unexpected method in connection state opening",
        10,
        70,
    );
    p.answer_close();

    let mut p = opened();
    p.expect_connection_error(
        Wire::new().method(
            0,
            start_ok(FieldTable::new(), "PLAIN", plain("guest", "guest")),
        ),
        ReplyCode::ChannelError,
        "unexpected method in connection state running",
        10,
        11,
    );
    p.answer_close();

    let mut p = opened();
    p.expect_connection_error(
        Wire::new().method(0, open("/")),
        ReplyCode::ChannelError,
        "unexpected method in connection state running",
        10,
        40,
    );
    p.answer_close();

    // A close-ok nobody asked for.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().method(0, ConnectionCloseOk::default()),
        ReplyCode::ChannelError,
        "unexpected method in connection state running",
        10,
        51,
    );
    p.answer_close();
}

#[test]
fn channel_frames_while_opening_are_unexpected_frames() {
    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().method(1, ChannelOpen::default()),
        ReplyCode::UnexpectedFrame,
        "type 1, all octets = <<0,20,0,10,0>>",
        0,
        0,
    );
    p.answer_close();

    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().header(1, 1),
        ReplyCode::UnexpectedFrame,
        &format!("type 2, all octets = {HEADER_1_OCTETS}"),
        0,
        0,
    );
    p.answer_close();

    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().body(2, b"x"),
        ReplyCode::UnexpectedFrame,
        "type 3, all octets = <<\"x\">>",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn channel_frames_before_tune_ok_are_answered_with_silence() {
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.expect_silent_close(
        Wire::new().method(1, ChannelOpen::default()),
        ReplyCode::UnexpectedFrame,
        "type 1, all octets = <<0,20,0,10,0>>",
        0,
        0,
    );

    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().body(1, b"x"),
        ReplyCode::UnexpectedFrame,
        "type 3, all octets = <<\"x\">>",
        0,
        0,
    );
}

#[test]
fn caller_close_during_the_handshake() {
    // Before connection.open (here: while the login is judged), nothing is sent.
    let mut p = started(ServerConfig::default());
    p.send(Wire::new().method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b"))));
    assert_eq!(p.events().len(), 1);
    let e = AmqpException::connection(
        ReplyCode::ConnectionForced,
        "broker forced connection closure with reason 'shutdown'",
    );
    p.conn.close(e.clone(), p.now);
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByServer(e)
        }]
    );
    p.assert_held_silent();
}

#[test]
fn refused_vhost_gets_connection_close() {
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.send(
        Wire::new()
            .method(0, tune_ok(2047, 131_072, 0))
            .method(0, open("nope"))
            .method(1, ChannelOpen::default()),
    );
    assert_eq!(
        p.events(),
        [Event::OpenVhost {
            vhost: "nope".into()
        }]
    );
    let e =
        AmqpException::connection(ReplyCode::NotAllowed, "vhost nope not found").caused_by(10, 40);
    p.conn.close(e.clone(), p.now);
    assert_eq!(
        p.frames(),
        [connection_close(
            530,
            "NOT_ALLOWED - vhost nope not found",
            10,
            40
        )]
    );
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByServer(e)
        }]
    );
    // A late verdict changes nothing.
    p.conn.accept_vhost(p.now);
    p.assert_quiet();
    assert!(!p.conn.is_open());
    assert_eq!(
        p.conn.poll_timeout(),
        Some(p.start + Duration::from_secs(30))
    );
    // The pipelined channel.open is read, and ignored.
    p.answer_close();
}

#[test]
fn verdicts_outside_their_phase_are_ignored() {
    let mut p = started(ServerConfig::default());
    p.conn.accept_login(p.now);
    p.conn.refuse_login(p.now);
    p.conn.accept_vhost(p.now);
    p.assert_quiet();
    assert!(p.conn.wants_read());

    let mut p = opened();
    p.conn.accept_login(p.now);
    p.conn.refuse_login(p.now);
    p.conn.accept_vhost(p.now);
    p.assert_quiet();
    assert!(p.conn.is_open());
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn refused_login_sends_403_to_clients_with_the_capability() {
    for (mechanism, response) in [
        ("PLAIN", plain("guest", "wrong")),
        (
            "AMQPLAIN",
            amqplain(&[("LOGIN", "guest"), ("PASSWORD", "wrong")]),
        ),
    ] {
        let mut p = started(ServerConfig::default());
        p.send(Wire::new().method(
            0,
            start_ok(
                client_properties(&["authentication_failure_close"]),
                mechanism,
                response,
            ),
        ));
        assert_eq!(p.events().len(), 1);
        p.conn.refuse_login(p.now);
        let text = format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        );
        assert_eq!(
            p.frames(),
            [connection_close(
                403,
                &format!("ACCESS_REFUSED - {text}"),
                0,
                0
            )]
        );
        assert_eq!(
            p.events(),
            [Event::Closed {
                reason: CloseReason::ByServer(AmqpException::connection(
                    ReplyCode::AccessRefused,
                    text
                ))
            }]
        );
        // A second verdict is ignored.
        p.conn.accept_login(p.now);
        p.conn.refuse_login(p.now);
        p.assert_quiet();
        // No close-ok is awaited (pika, for one, just closes the socket): held, then dropped.
        p.assert_held_silent();
    }
}

#[test]
fn refused_login_without_the_capability_sends_nothing() {
    for properties in [
        client_properties(&[]),
        FieldTable::new(),
        [(
            "capabilities",
            FieldValue::from(
                [("authentication_failure_close", false)]
                    .into_iter()
                    .collect::<FieldTable>(),
            ),
        )]
        .into_iter()
        .collect(),
    ] {
        let mut p = started(ServerConfig::default());
        p.send(Wire::new().method(0, start_ok(properties, "PLAIN", plain("guest", "wrong"))));
        assert_eq!(p.events().len(), 1);
        p.conn.refuse_login(p.now);
        assert_eq!(p.frames(), []);
        assert_eq!(
            p.events(),
            [Event::Closed {
                reason: CloseReason::ByServer(AmqpException::connection(
                    ReplyCode::AccessRefused,
                    "Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
                ))
            }]
        );
        p.assert_held_silent();
    }
}

#[test]
fn silent_close_delay_is_configurable() {
    let config = ServerConfig {
        silent_close_delay: ms(250),
        ..ServerConfig::default()
    };
    let mut p = started(config);
    p.set_time(ms(1000));
    p.send(Wire::new().method(
        0,
        start_ok(FieldTable::new(), "PLAIN", plain("guest", "wrong")),
    ));
    assert_eq!(p.events().len(), 1);
    p.conn.refuse_login(p.now);
    assert_eq!(p.frames(), []);
    assert_eq!(p.events().len(), 1);
    p.assert_held_silent_for(ms(250));
    assert_eq!(p.now, p.start + ms(1250));

    // Zero: finished at the next timeout call.
    let config = ServerConfig {
        silent_close_delay: Duration::ZERO,
        ..ServerConfig::default()
    };
    let mut p = started(config);
    p.send(Wire::new().method(0, tune_ok(2047, 131_072, 0)));
    assert_eq!(p.events().len(), 1);
    assert_eq!(p.conn.poll_timeout(), Some(p.now));
    assert!(!p.conn.is_finished());
    p.tick_at(p.elapsed());
    assert!(p.conn.is_finished());
}

#[test]
fn malformed_plain_responses_are_answered_with_silence() {
    let malformed: [&[u8]; 8] = [
        b"",
        b"\0guest",
        b"guest\0guest",
        b"a\0b\0c\0d",
        b"\0a\0b\0",
        b"\0gu\xffest\0pw",
        // An authorization identity, even the user's own: RabbitMQ supports none.
        b"guest\0guest\0guest",
        b"x\0guest\0guest",
    ];
    for response in malformed {
        for capabilities in [&["authentication_failure_close"][..], &[]] {
            let mut p = started(ServerConfig::default());
            p.send(Wire::new().method(
                0,
                start_ok(client_properties(capabilities), "PLAIN", response.to_vec()),
            ));
            assert_eq!(p.frames(), [], "response {response:?}");
            assert_eq!(
                p.events(),
                [Event::Closed {
                    reason: CloseReason::ByServer(
                        AmqpException::connection(ReplyCode::SyntaxError, "PLAIN response invalid")
                            .caused_by(10, 11)
                    )
                }],
                "response {response:?}"
            );
            p.assert_held_silent();
        }
    }
}

#[test]
fn plain_accepts_empty_user_and_password() {
    for (response, user, password) in [
        (&b"\0guest\0"[..], "guest", ""),
        (b"\0\0pw", "", "pw"),
        (b"\0\0", "", ""),
    ] {
        let mut p = started(ServerConfig::default());
        p.send(Wire::new().method(0, start_ok(FieldTable::new(), "PLAIN", response.to_vec())));
        assert_eq!(
            p.events(),
            [Event::Authenticate {
                mechanism: Mechanism::Plain,
                username: user.into(),
                password: password.into(),
                client_properties: FieldTable::new(),
            }]
        );
    }
}

#[test]
fn malformed_amqplain_responses_are_answered_with_silence() {
    let mut bad_table = BytesMut::new();
    bad_table.extend_from_slice(b"\x05LOGINZ");
    let login_not_a_string: FieldTable =
        [("LOGIN", FieldValue::from(7)), ("PASSWORD", "pw".into())]
            .into_iter()
            .collect();
    let mut login_not_a_string_octets = BytesMut::new();
    login_not_a_string.encode_entries(&mut login_not_a_string_octets);
    for response in [
        amqplain(&[("LOGIN", "guest")]),
        amqplain(&[("PASSWORD", "guest")]),
        Vec::new(),
        bad_table.to_vec(),
        login_not_a_string_octets.to_vec(),
    ] {
        let mut p = started(ServerConfig::default());
        p.expect_silent_close(
            Wire::new().method(
                0,
                start_ok(
                    client_properties(&["authentication_failure_close"]),
                    "AMQPLAIN",
                    response,
                ),
            ),
            ReplyCode::SyntaxError,
            "AMQPLAIN response invalid",
            10,
            11,
        );
    }
}

#[test]
fn unknown_mechanism_is_answered_with_silence() {
    for mechanism in ["EXTERNAL", "plain", ""] {
        let mut p = started(ServerConfig::default());
        p.expect_silent_close(
            Wire::new().method(
                0,
                start_ok(
                    client_properties(&["authentication_failure_close"]),
                    mechanism,
                    plain("guest", "guest"),
                ),
            ),
            ReplyCode::CommandInvalid,
            &format!("unknown/invalid authentication mechanism '{mechanism}'"),
            10,
            11,
        );
    }
}

#[test]
fn only_configured_mechanisms_are_offered_and_accepted() {
    let config = ServerConfig {
        mechanisms: vec![Mechanism::AmqPlain],
        ..ServerConfig::default()
    };
    let mut p = Peer::new(config);
    p.send(PROTOCOL_HEADER);
    assert!(matches!(
        p.frames().as_slice(),
        [Frame::Method { channel: 0, method: Method::ConnectionStart(s) }] if s.mechanisms == "AMQPLAIN"
    ));
    p.expect_silent_close(
        Wire::new().method(
            0,
            start_ok(client_properties(&[]), "PLAIN", plain("guest", "guest")),
        ),
        ReplyCode::CommandInvalid,
        "unknown/invalid authentication mechanism 'PLAIN'",
        10,
        11,
    );
}

// ---------------------------------------------------------------------------------------------
// Protocol header
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_protocol_headers_get_the_0_9_1_header_back() {
    let headers: [&[u8]; 7] = [
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x00\x09\x00",
        b"AMQP\x00\x01\x00\x00",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01",
    ];
    for header in headers {
        let mut p = Peer::new(ServerConfig::default());
        p.send(header);
        assert_eq!(p.output(), PROTOCOL_HEADER, "header {header:?}");
        assert_eq!(
            p.events(),
            [Event::Closed {
                reason: CloseReason::BadProtocolHeader
            }]
        );
        assert!(p.conn.is_finished());
        assert!(!p.conn.wants_read());
        assert_eq!(p.conn.poll_timeout(), None);
        // Whatever follows is ignored.
        p.send(PROTOCOL_HEADER);
        p.tick_at(Duration::from_secs(60));
        assert_eq!(p.output(), b"");
        assert_eq!(p.events(), []);
    }
}

#[test]
fn protocol_header_split_over_reads() {
    let mut p = Peer::new(ServerConfig::default());
    for part in [&b"AM"[..], b"QP\x00", b"\x00", b"\x09"] {
        p.send(part);
        assert_eq!(p.output(), b"");
        assert_eq!(p.events(), []);
        assert!(!p.conn.is_finished());
        assert!(p.conn.wants_read());
    }
    p.send(b"\x01");
    assert!(matches!(
        p.frames().as_slice(),
        [Frame::Method {
            channel: 0,
            method: Method::ConnectionStart(_)
        }]
    ));
}

#[test]
fn nothing_is_decided_before_eight_octets() {
    // Like RabbitMQ: a short, wrong start just waits for more.
    let mut p = Peer::new(ServerConfig::default());
    p.send(b"GET");
    assert_eq!(p.output(), b"");
    assert_eq!(p.events(), []);
    assert!(!p.conn.is_finished());
    assert!(p.conn.wants_read());
    p.send(b" / ");
    assert_eq!(p.output(), b"");
    assert!(!p.conn.is_finished());
    p.send(b"HTTP/1.1\r\n");
    assert_eq!(p.output(), PROTOCOL_HEADER);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::BadProtocolHeader
        }]
    );
    assert!(p.conn.is_finished());

    // The handshake timeout still ends a client that never sends eight octets.
    let mut p = Peer::new(ServerConfig::default());
    p.send(b"AMQP\x00\x00\x09");
    p.tick_at(Duration::from_secs(10));
    assert_eq!(p.output(), b"");
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert!(p.conn.is_finished());
}

#[test]
fn bad_protocol_header_split_over_reads() {
    let mut p = Peer::new(ServerConfig::default());
    p.send(b"AMQP");
    assert_eq!(p.output(), b"");
    assert!(!p.conn.is_finished());
    p.send(b"\x00\x00\x09\x02");
    assert_eq!(p.output(), PROTOCOL_HEADER);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::BadProtocolHeader
        }]
    );
    assert!(p.conn.is_finished());
}

#[test]
fn amqp_0_9_header_is_served_as_0_9_1() {
    let mut p = Peer::new(ServerConfig::default());
    p.send(b"AMQP\x01\x01\x00\x09");
    assert_eq!(
        p.frames(),
        [m(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: ServerConfig::default().server_properties,
                mechanisms: LongStr::from("AMQPLAIN PLAIN"),
                locales: LongStr::from("en_US"),
            }
        )]
    );
    assert_eq!(p.events(), []);
    p.send(Wire::new().method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b"))));
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { username, .. }] if username == "a"
    ));
}

#[test]
fn protocol_header_and_first_frame_in_one_read() {
    // The octets after the header are frames, not part of the header check.
    let mut p = Peer::new(ServerConfig::default());
    p.send(Wire::new().protocol_header().method(
        0,
        start_ok(client_properties(&[]), "PLAIN", plain("a", "b")),
    ));
    assert_eq!(p.frames().len(), 1);
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { username, password, .. }] if username == "a" && password == "b"
    ));
}

// ---------------------------------------------------------------------------------------------
// Tuning
// ---------------------------------------------------------------------------------------------

/// Sends `tune` and `connection.open` and returns the tuning the connection opened with.
fn negotiate(tune: ConnectionTuneOk) -> Tuning {
    let p = open_peer(ServerConfig::default(), &[], tune);
    p.conn.tuning()
}

#[test]
fn tune_ok_limits_within_the_servers_are_taken() {
    assert_eq!(
        negotiate(tune_ok(1, 4096, 0)),
        Tuning {
            channel_max: 1,
            frame_max: 4096,
            heartbeat: 0
        }
    );
    assert_eq!(
        negotiate(tune_ok(2047, 131_072, 0)),
        Tuning {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0
        }
    );
    assert_eq!(
        negotiate(tune_ok(100, 65_536, 0)),
        Tuning {
            channel_max: 100,
            frame_max: 65_536,
            heartbeat: 0
        }
    );
}

#[test]
fn tune_ok_heartbeat_is_the_clients() {
    // The server proposed 60 s; the client's answer wins, lower or higher.
    for heartbeat in [0, 1, 5, 600] {
        assert_eq!(
            negotiate(tune_ok(2047, 131_072, heartbeat)).heartbeat,
            heartbeat
        );
    }
    let p = open_peer(ServerConfig::default(), &[], tune_ok(2047, 131_072, 0));
    assert_eq!(p.conn.poll_timeout(), None, "no heartbeat, no timer");
}

#[test]
fn tune_ok_out_of_bounds_is_refused_silently() {
    // RabbitMQ's validate_negotiated_integer_value: frame_max first, then channel_max; both
    // naming connection.tune.
    let cases = [
        (
            tune_ok(2047, 4095, 0),
            "negotiated frame_max = 4095 is lower than the minimum allowed value (4096)",
        ),
        (
            tune_ok(2047, 1, 0),
            "negotiated frame_max = 1 is lower than the minimum allowed value (4096)",
        ),
        (
            tune_ok(0, 2048, 0),
            "negotiated frame_max = 2048 is lower than the minimum allowed value (4096)",
        ),
        (
            tune_ok(2047, 131_073, 0),
            "negotiated frame_max = 131073 is higher than the maximum allowed value (131072)",
        ),
        (
            tune_ok(2047, u32::MAX, 0),
            "negotiated frame_max = 4294967295 is higher than the maximum allowed value (131072)",
        ),
        // No limit is more than the server's limit.
        (
            tune_ok(2047, 0, 0),
            "negotiated frame_max = 0 is higher than the maximum allowed value (131072)",
        ),
        (
            tune_ok(0, 0, 0),
            "negotiated frame_max = 0 is higher than the maximum allowed value (131072)",
        ),
        (
            tune_ok(2048, 131_072, 0),
            "negotiated channel_max = 2048 is higher than the maximum allowed value (2047)",
        ),
        (
            tune_ok(u16::MAX, 4096, 0),
            "negotiated channel_max = 65535 is higher than the maximum allowed value (2047)",
        ),
        (
            tune_ok(0, 4096, 0),
            "negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)",
        ),
    ];
    for (tune, text) in cases {
        let mut p = logged_in(ServerConfig::default(), &[]);
        // The pipelined open is not looked at.
        p.expect_silent_close(
            Wire::new().method(0, tune).method(0, open("/")),
            ReplyCode::NotAllowed,
            text,
            10,
            30,
        );
    }
}

#[test]
fn tune_ok_zeroes_are_taken_when_the_server_has_no_limits() {
    let config = ServerConfig {
        channel_max: 0,
        frame_max: 0,
        ..ServerConfig::default()
    };
    let mut p = Peer::new(config.clone());
    p.send(
        Wire::new()
            .protocol_header()
            .method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b"))),
    );
    let _ = (p.frames(), p.events());
    p.conn.accept_login(p.now);
    assert_eq!(
        p.frames(),
        [m(
            0,
            ConnectionTune {
                channel_max: 0,
                frame_max: 0,
                heartbeat: 60
            }
        )]
    );
    p.send(Wire::new().method(0, tune_ok(0, 0, 0)).method(0, open("/")));
    assert_eq!(p.events().len(), 1);
    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    let tuning = Tuning {
        channel_max: 0,
        frame_max: 0,
        heartbeat: 0,
    };
    assert_eq!(p.events(), [Event::Opened { tuning }]);
    // No channel limit, no frame limit.
    for channel in [1, 2, 3, 1000, 65_535] {
        p.open_channel(channel);
    }
    let body = pattern(300_000);
    p.send(
        Wire::new()
            .method(65_535, publish("big"))
            .header(65_535, body.len() as u64)
            .body(65_535, &body),
    );
    assert_eq!(
        p.events(),
        [command(65_535, publish("big"), 300_000, &body)]
    );

    // Without server limits, any value at or above the minimum is taken as it is...
    assert_eq!(
        open_peer(config.clone(), &[], tune_ok(5, 4096, 0))
            .conn
            .tuning(),
        Tuning {
            channel_max: 5,
            frame_max: 4096,
            heartbeat: 0
        }
    );
    // ...and the minimum still holds.
    let mut p = logged_in(config, &[]);
    p.expect_silent_close(
        Wire::new().method(0, tune_ok(0, 2048, 0)),
        ReplyCode::NotAllowed,
        "negotiated frame_max = 2048 is lower than the minimum allowed value (4096)",
        10,
        30,
    );
}

// ---------------------------------------------------------------------------------------------
// Framing errors and the close handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_over_negotiated_frame_max_is_fatal() {
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(2047, 4096, 0));
    p.open_channel(1);
    // A payload of exactly frame_max octets is fine: RabbitMQ allows the 8 octets of framing
    // on top.
    let fits = pattern(4096);
    p.send(
        Wire::new()
            .method(1, publish("a"))
            .header(1, fits.len() as u64)
            .body(1, &fits),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(p.events(), [command(1, publish("a"), 4096, &fits)]);
    // One octet more is not; the size field alone decides, before the payload arrives.
    p.send(Wire::new().method(1, publish("a")).header(1, 4097));
    assert_eq!(p.events(), []);
    let too_big = Wire::new().body(1, &pattern(4097));
    p.expect_fatal_frame_error(
        &too_big.as_ref()[..7],
        "type 3, all octets = <<>>: {frame_too_large,4097,4088}",
    );
}

#[test]
fn frame_over_frame_max_while_opening_is_fatal() {
    // After tune-ok the client's frame_max is in force, and errors are said out loud.
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.send(Wire::new().method(0, tune_ok(2047, 8192, 0)));
    p.assert_quiet();
    assert_eq!(p.conn.tuning().frame_max, 8192);
    p.expect_fatal_frame_error(
        Wire::new().frame(1, 0, &[0; 8193]),
        "type 1, all octets = <<>>: {frame_too_large,8193,8184}",
    );
}

/// A start-ok whose frame payload is exactly `payload_len` octets.
fn start_ok_of_size(payload_len: usize) -> Wire {
    let frame = |product_len: usize| {
        let properties: FieldTable = [("product", FieldValue::from("x".repeat(product_len)))]
            .into_iter()
            .collect();
        Wire::new().method(0, start_ok(properties, "PLAIN", plain("guest", "guest")))
    };
    let overhead = frame(0).len() - frame::FRAME_OVERHEAD;
    let wire = frame(payload_len - overhead);
    assert_eq!(wire.len(), payload_len + frame::FRAME_OVERHEAD);
    wire
}

#[test]
fn frame_over_4096_before_tuning_is_answered_with_silence() {
    // 4096 octets of payload are fine before tuning...
    let mut p = started(ServerConfig::default());
    p.send(start_ok_of_size(4096));
    assert!(matches!(
        p.events().as_slice(),
        [Event::Authenticate { username, .. }] if username == "guest"
    ));

    // ...4097 are not, and before tune-ok nothing is said.
    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        start_ok_of_size(4097),
        ReplyCode::FrameError,
        "type 1, all octets = <<>>: {frame_too_large,4097,4088}",
        0,
        0,
    );

    // Still 4096 while waiting for tune-ok, whatever the server proposed.
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.expect_silent_close(
        Wire::new().frame(1, 0, &[0; 5000]),
        ReplyCode::FrameError,
        "type 1, all octets = <<>>: {frame_too_large,5000,4088}",
        0,
        0,
    );
}

#[test]
fn bad_frame_end_is_fatal() {
    // Exactly what RabbitMQ 3.10 sent in the `frame_error` golden capture.
    let mut p = opened_with_channel();
    p.expect_fatal_frame_error(
        Wire::new().method(1, qos(1)).with_bad_end(0x00),
        &format!("type 1, all octets = {QOS_1_OCTETS}: {{invalid_frame_end_marker,0}}"),
    );

    // A printable payload is printed as a string.
    let mut p = opened_with_channel();
    p.send(Wire::new().method(1, publish("k")).header(1, 5));
    p.expect_fatal_frame_error(
        Wire::new().body(1, b"hello").with_bad_end(0xcd),
        "type 3, all octets = <<\"hello\">>: {invalid_frame_end_marker,205}",
    );

    // Only the first 16 octets of a longer payload are shown.
    let mut p = opened_with_channel();
    p.send(Wire::new().method(1, publish("k")).header(1, 26));
    p.expect_fatal_frame_error(
        Wire::new()
            .body(1, b"abcdefghijklmnopqrstuvwxyz")
            .with_bad_end(0),
        "type 3, first 16 octets = <<\"abcdefghijklmnop\">>: {invalid_frame_end_marker,0}",
    );

    // The end octet is checked before the payload is looked at.
    let mut p = opened();
    p.expect_fatal_frame_error(
        Wire::new().frame(9, 0, &[1, 2, 3]).with_bad_end(1),
        "type 9, all octets = <<1,2,3>>: {invalid_frame_end_marker,1}",
    );
}

#[test]
fn bad_frame_end_before_tune_ok_is_answered_with_silence() {
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.expect_silent_close(
        Wire::new()
            .method(0, tune_ok(2047, 131_072, 0))
            .with_bad_end(0),
        ReplyCode::FrameError,
        &format!("type 1, all octets = {TUNE_OK_OCTETS}: {{invalid_frame_end_marker,0}}"),
        0,
        0,
    );

    // While opening, it is said.
    let mut p = tuned();
    p.expect_fatal_frame_error(
        Wire::new().method(0, open("/")).with_bad_end(0),
        "type 1, all octets = <<0,10,0,40,1,47,0,0>>: {invalid_frame_end_marker,0}",
    );
}

#[test]
fn unknown_frame_type_is_frame_error() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(7, 1, b""),
        ReplyCode::FrameError,
        "type 7, all octets = <<>>: unknown_frame",
        0,
        0,
    );
    // The frame was whole, so the stream is still in step and close-ok is seen.
    p.answer_close();

    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(4, 0, b"abc"),
        ReplyCode::FrameError,
        "type 4, all octets = <<\"abc\">>: unknown_frame",
        0,
        0,
    );
    p.answer_close();

    // During the handshake: silence.
    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().frame(7, 0, &[1, 2]),
        ReplyCode::FrameError,
        "type 7, all octets = <<1,2>>: unknown_frame",
        0,
        0,
    );
}

#[test]
fn malformed_heartbeats_are_errors() {
    // An empty heartbeat on a channel: unexpected.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(8, 1, b""),
        ReplyCode::UnexpectedFrame,
        "type 8, all octets = <<>>",
        0,
        0,
    );
    p.answer_close();

    // A heartbeat with a payload cannot be a frame.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(8, 0, b"x"),
        ReplyCode::FrameError,
        "type 8, all octets = <<\"x\">>: unknown_frame",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(8, 1, &[0; 20]),
        ReplyCode::FrameError,
        "type 8, first 16 octets = <<0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0>>: unknown_frame",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn short_method_and_header_payloads_are_unknown_frames() {
    // A method frame too short to name a method.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(1, 0, &[0, 10]),
        ReplyCode::FrameError,
        "type 1, all octets = <<0,10>>: unknown_frame",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(1, 1, b""),
        ReplyCode::FrameError,
        "type 1, all octets = <<>>: unknown_frame",
        0,
        0,
    );
    p.answer_close();

    // A content header shorter than class, weight and body size.
    let mut p = opened_with_channel();
    p.send(Wire::new().method(1, publish("k")));
    p.expect_connection_error(
        Wire::new().frame(2, 1, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ReplyCode::FrameError,
        "type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,1>>: unknown_frame",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn malformed_method_arguments_are_frame_errors() {
    // channel.open without its out-of-band short string.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(1, 1, &[0, 20, 0, 10]),
        ReplyCode::FrameError,
        "cannot decode <<>>",
        20,
        10,
    );
    p.answer_close();

    // channel.open with one octet too many.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(1, 1, &[0, 20, 0, 10, 0, 0]),
        ReplyCode::FrameError,
        "cannot decode <<0,0>>",
        20,
        10,
    );
    p.answer_close();

    // queue.declare whose arguments table holds an unknown field type.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(
            1,
            1,
            &[0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 3, 1, b'k', b'Z'],
        ),
        ReplyCode::FrameError,
        "cannot decode <<0,0,1,113,0,0,0,0,3,1,107,90>>",
        50,
        10,
    );
    p.answer_close();

    // A connection method on channel 0 while opening.
    let mut p = tuned();
    p.expect_connection_error(
        Wire::new().frame(1, 0, &[0, 10, 0, 40, 5, b'/']),
        ReplyCode::FrameError,
        "cannot decode <<5,47>>",
        10,
        40,
    );
    p.answer_close();

    // During the handshake: silence.
    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().frame(1, 0, &[0, 10, 0, 11, 0, 0, 0]),
        ReplyCode::FrameError,
        "cannot decode <<0,0,0>>",
        10,
        11,
    );
}

#[test]
fn malformed_utf8_in_a_short_string_is_frame_error() {
    // queue.declare with a queue name that is not UTF-8.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(1, 1, &[0, 50, 0, 10, 0, 0, 1, 0xff, 0, 0, 0, 0, 0]),
        ReplyCode::FrameError,
        "Malformed UTF-8 in shortstr",
        0,
        0,
    );
    p.answer_close();

    // basic.publish carries content: its short strings are not checked (nor are RabbitMQ's).
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .frame(1, 1, &[0, 60, 0, 40, 0, 0, 0, 1, 0xff, 0])
            .header(1, 0),
    );
    assert_eq!(p.frames(), []);
    assert!(matches!(
        p.events().as_slice(),
        [Event::Command { channel: 1, method: Method::BasicPublish(m), .. }]
            if m.routing_key.as_bytes() == [0xff]
    ));
}

#[test]
fn malformed_content_header_properties_are_syntax_errors() {
    let header = |properties: &[u8]| {
        let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        payload.extend_from_slice(properties);
        Wire::new().method(1, publish("k")).frame(2, 1, &payload)
    };
    let cases: [(&[u8], &str); 3] = [
        // No property flags at all.
        (&[], "truncated short"),
        // content-type announced, missing.
        (&[0x80, 0], "truncated octet"),
        // One octet after the (empty) property list.
        (&[0, 0, 9], "1 trailing octets after content header"),
    ];
    for (properties, cause) in cases {
        let mut p = opened_with_channel();
        p.expect_connection_error(
            header(properties),
            ReplyCode::SyntaxError,
            &format!("malformed content header properties: {cause}"),
            0,
            0,
        );
        p.answer_close();
    }
}

#[test]
fn unknown_methods_are_command_invalid() {
    // RabbitMQ drops the socket; we say why first.
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().frame(1, 0, &[0, 10, 0, 99]),
        ReplyCode::CommandInvalid,
        "unknown method: class 10, method 99",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(1, 1, &[0, 99, 0, 1]),
        ReplyCode::CommandInvalid,
        "unknown method: class 99, method 1",
        0,
        0,
    );
    p.answer_close();

    let mut p = started(ServerConfig::default());
    p.expect_silent_close(
        Wire::new().frame(1, 0, &[1, 0, 0, 1]),
        ReplyCode::CommandInvalid,
        "unknown method: class 256, method 1",
        0,
        0,
    );
}

#[test]
fn after_connection_close_only_the_close_handshake_counts() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(3, qos(1)),
        ReplyCode::ChannelError,
        "expected 'channel.open'",
        60,
        10,
    );
    assert!(!p.conn.is_channel_open(1), "channels are gone");
    // Everything but close / close-ok is ignored, even what would be an error, and non-fatal
    // decode errors do not stop the reading.
    p.send(
        Wire::new()
            .method(1, qos(1))
            .method(2, ChannelOpen::default())
            .method(1, publish("x"))
            .header(1, 2)
            .body(1, b"hi")
            .body(9, b"orphan")
            .header(0, 1)
            .heartbeat()
            .method(0, open("/"))
            .method(0, tune_ok(2047, 131_072, 0))
            .frame(7, 0, b"")
            .frame(8, 1, b"")
            .frame(1, 0, &[0, 10, 0, 99])
            .method(1, qos(2)),
    );
    p.assert_quiet();
    assert!(p.conn.wants_read());
    // The caller cannot send either.
    p.conn.send_method(0, &ConnectionOpenOk::default().into());
    p.conn.send_method(1, &BasicQosOk::default().into());
    p.conn
        .send_content(1, &deliver(1).into(), &BasicProperties::default(), b"x");
    p.conn
        .close_channel(1, AmqpException::channel(ReplyCode::NotFound, "x"));
    p.conn.close(
        AmqpException::connection(ReplyCode::InternalError, "again"),
        p.now,
    );
    p.conn.block("low on memory");
    p.assert_quiet();
    p.answer_close();
}

#[test]
fn close_ok_after_a_frame_error_in_the_same_read_is_seen() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(5, qos(1)),
        ReplyCode::ChannelError,
        "expected 'channel.open'",
        60,
        10,
    );
    p.send(
        Wire::new()
            .frame(7, 0, b"")
            .method(0, ConnectionCloseOk::default()),
    );
    assert!(p.conn.is_finished());
    p.assert_quiet();
}

#[test]
fn client_close_after_a_frame_error_in_the_same_read_is_answered() {
    // The client sent a bad frame and its connection.close in one write: the error is
    // answered, then the close, and the server still waits for the close-ok to its own.
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .frame(7, 1, b"")
            .method(0, client_close(200, "bye")),
    );
    assert_eq!(
        p.frames(),
        [
            connection_close(
                501,
                "FRAME_ERROR - type 7, all octets = <<>>: unknown_frame",
                0,
                0
            ),
            m(0, ConnectionCloseOk::default())
        ]
    );
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByServer(AmqpException::connection(
                ReplyCode::FrameError,
                "type 7, all octets = <<>>: unknown_frame"
            ))
        }]
    );
    p.answer_close();
}

#[test]
fn fatal_frame_error_while_closing_ends_the_connection() {
    let mut p = opened_with_channel();
    p.conn.close(
        AmqpException::connection(ReplyCode::ConnectionForced, "shutdown"),
        p.now,
    );
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    p.send(
        Wire::new()
            .method(1, qos(1))
            .method(0, ConnectionCloseOk::default())
            .with_bad_end(0),
    );
    // Nothing more to say, and nothing more can be read.
    p.assert_quiet();
    assert!(p.conn.is_finished());
    assert_eq!(p.conn.poll_timeout(), None);

    let mut p = opened();
    p.conn.close(
        AmqpException::connection(ReplyCode::ConnectionForced, "shutdown"),
        p.now,
    );
    let _ = (p.frames(), p.events());
    p.send(&Wire::new().body(1, &pattern(200_000)).as_ref()[..7]);
    p.assert_quiet();
    assert!(p.conn.is_finished());
}

#[test]
fn crossing_connection_close_is_answered() {
    let mut p = opened_with_channel();
    p.conn.close(
        AmqpException::connection(
            ReplyCode::ConnectionForced,
            "broker forced connection closure with reason 'shutdown'",
        ),
        p.now,
    );
    assert_eq!(
        p.frames(),
        [connection_close(
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            0,
            0
        )]
    );
    assert_eq!(p.events().len(), 1);
    // The client was closing too: it gets close-ok, and the server still waits for the
    // close-ok to its own close.
    p.send(Wire::new().method(0, client_close(200, "bye")));
    assert_eq!(p.frames(), [m(0, ConnectionCloseOk::default())]);
    assert_eq!(p.events(), [], "Closed was already reported");
    assert!(!p.conn.is_finished());
    p.answer_close();
}

#[test]
fn close_timeout_ends_a_connection_whose_client_never_answers() {
    let mut p = opened();
    p.set_time(Duration::from_secs(5));
    p.conn.close(
        AmqpException::connection(ReplyCode::ConnectionForced, "shutdown"),
        p.now,
    );
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    assert_eq!(
        p.conn.poll_timeout(),
        Some(p.start + Duration::from_secs(35))
    );
    p.tick_at(ms(34_999));
    assert!(!p.conn.is_finished());
    p.assert_quiet();
    p.tick_at(Duration::from_secs(35));
    assert!(p.conn.is_finished());
    p.assert_quiet();
    assert_eq!(p.conn.poll_timeout(), None);
}

#[test]
fn close_timeout_is_the_heartbeat_when_that_is_shorter() {
    // (close_timeout, heartbeat, expected wait)
    let cases = [
        (30, 10, 10),
        (30, 1, 1),
        (30, 29, 29),
        (30, 30, 30),
        (30, 60, 30),
        (5, 10, 5),
        (5, 0, 5),
    ];
    for (close_timeout, heartbeat, wait) in cases {
        let config = ServerConfig {
            close_timeout: Duration::from_secs(close_timeout),
            ..ServerConfig::default()
        };
        let mut p = open_peer(config, &[], tune_ok(2047, 131_072, heartbeat));
        p.conn.close(
            AmqpException::connection(ReplyCode::ConnectionForced, "shutdown"),
            p.now,
        );
        assert_eq!(p.frames().len(), 1);
        assert_eq!(p.events().len(), 1);
        // The heartbeat timers stop with the close; only the close deadline is left.
        let deadline = Duration::from_secs(wait);
        assert_eq!(
            p.conn.poll_timeout(),
            Some(p.start + deadline),
            "close_timeout {close_timeout}, heartbeat {heartbeat}"
        );
        p.tick_at(deadline - ms(1));
        assert!(!p.conn.is_finished());
        p.tick_at(deadline);
        assert!(p.conn.is_finished());
        p.assert_quiet();
    }
}

#[test]
fn client_connection_close_is_answered_with_close_ok() {
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .method(0, client_close(200, "Goodbye"))
            .method(1, qos(1)),
    );
    assert_eq!(p.frames(), [m(0, ConnectionCloseOk::default())]);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByClient {
                code: 200,
                text: "Goodbye".into()
            }
        }]
    );
    crate::assert_closed_by_client(&mut p.conn);
    assert!(!p.conn.is_channel_open(1));
    // Frames after the close are not read.
    p.send(Wire::new().method(1, qos(1)));
    p.assert_quiet();
}

#[test]
fn connection_methods_on_a_channel_are_command_invalid() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, client_close(200, "wrong channel")),
        ReplyCode::CommandInvalid,
        "unimplemented method",
        10,
        50,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, tune_ok(2047, 131_072, 0)),
        ReplyCode::CommandInvalid,
        "unimplemented method",
        10,
        31,
    );
    p.answer_close();

    // On a channel that is not open, the channel's complaint comes first.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(2, client_close(200, "wrong channel")),
        ReplyCode::ChannelError,
        "expected 'channel.open'",
        10,
        50,
    );
    p.answer_close();
}

#[test]
fn other_methods_on_channel_zero_are_channel_errors() {
    for (method, class_id, method_id) in [
        (Method::from(ChannelOpen::default()), 20, 10),
        (qos(1).into(), 60, 10),
        (client_channel_close(200, "").into(), 20, 40),
        // A content-carrying method is refused before its content.
        (publish("k").into(), 60, 40),
    ] {
        let mut p = opened();
        p.expect_connection_error(
            Wire::new().method(0, method),
            ReplyCode::ChannelError,
            "unexpected method in connection state running",
            class_id,
            method_id,
        );
        p.answer_close();
    }
}

#[test]
fn content_frames_on_channel_zero_are_unexpected() {
    let mut p = opened();
    p.expect_connection_error(
        Wire::new().header(0, 1),
        ReplyCode::UnexpectedFrame,
        &format!("type 2, all octets = {HEADER_1_OCTETS}"),
        0,
        0,
    );
    p.answer_close();

    let mut p = opened();
    p.expect_connection_error(
        Wire::new().body(0, b"x"),
        ReplyCode::UnexpectedFrame,
        "type 3, all octets = <<\"x\">>",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened();
    p.expect_connection_error(
        Wire::new().body(0, &[7; 17]),
        ReplyCode::UnexpectedFrame,
        "type 3, first 16 octets = <<7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7>>",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn update_secret_is_handed_up() {
    let mut p = opened();
    p.send(Wire::new().method(
        0,
        ConnectionUpdateSecret {
            new_secret: LongStr::from("token-2"),
            reason: ShortStr::from("refresh"),
        },
    ));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::UpdateSecret {
            new_secret: LongStr::from("token-2"),
            reason: ShortStr::from("refresh"),
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and the handshake timeout
// ---------------------------------------------------------------------------------------------

/// Open with a 1-second heartbeat, tune-ok and the handshake done at `start`: the sender checks
/// every 500 ms, the receiver every second.
fn heartbeating() -> Peer {
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(2047, 131_072, 1));
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(500)));
    p.assert_quiet();
    p
}

#[test]
fn heartbeat_sent_after_a_silent_half_interval() {
    let mut p = heartbeating();
    // The first send check always sends, although open-ok went out since tune-ok.
    p.tick_at(ms(500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert_eq!(p.events(), []);
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(1000)));
    p.set_time(ms(700));
    p.send(Wire::new().heartbeat());
    p.assert_quiet();
    // Nothing sent since the last check: a heartbeat.
    p.tick_at(ms(1000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(1500)));
    // Something sent: no heartbeat.
    p.set_time(ms(1200));
    p.open_channel(1);
    p.tick_at(ms(1500));
    p.assert_quiet();
    p.tick_at(ms(2000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert_eq!(p.events(), []);
    assert!(p.conn.is_open());
}

#[test]
fn no_heartbeat_when_something_else_was_sent() {
    let mut p = heartbeating();
    p.tick_at(ms(500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.set_time(ms(700));
    p.open_channel(1);
    p.tick_at(ms(1000));
    p.assert_quiet();
    p.set_time(ms(1200));
    p.send(Wire::new().method(1, qos(5)));
    assert_eq!(p.events().len(), 1);
    p.conn.send_method(1, &BasicQosOk::default().into());
    assert_eq!(p.frames(), [m(1, BasicQosOk::default())]);
    p.tick_at(ms(1500));
    p.assert_quiet();
    p.set_time(ms(1700));
    p.conn
        .send_content(1, &deliver(1).into(), &BasicProperties::default(), b"x");
    assert_eq!(p.frames().len(), 3);
    p.tick_at(ms(2000));
    p.assert_quiet();
    p.set_time(ms(2200));
    p.conn
        .close_channel(1, AmqpException::channel(ReplyCode::NotFound, "gone"));
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    p.send(Wire::new().method(1, ChannelCloseOk::default()));
    p.tick_at(ms(2500));
    p.assert_quiet();
    // Silence on our side for a half interval: now a heartbeat.
    p.set_time(ms(2700));
    p.send(Wire::new().heartbeat());
    p.tick_at(ms(3000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert!(p.conn.is_open());
}

#[test]
fn two_silent_intervals_end_the_connection_without_a_frame() {
    let mut p = heartbeating();
    p.tick_at(ms(500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    // The first receive check counts what came before it, tune-ok included.
    p.tick_at(ms(1000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(1500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(2000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert!(p.conn.is_open(), "one silent interval is tolerated");
    assert_eq!(p.events(), []);
    p.tick_at(ms(2500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(3000));
    // The second silent interval in a row: dropped without a word, and no heartbeat either.
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::MissedHeartbeats
        }]
    );
    assert!(p.conn.is_finished());
    assert!(!p.conn.wants_read());
    assert_eq!(p.conn.poll_timeout(), None);
    p.tick_at(ms(10_000));
    p.assert_quiet();
}

#[test]
fn any_received_data_resets_the_missed_heartbeat_count() {
    let mut p = heartbeating();
    p.open_channel(1);
    for at in [500, 1000, 1500, 2000] {
        p.tick_at(ms(at));
        assert_eq!(p.frames(), [Frame::Heartbeat], "at {at} ms");
    }
    // 2000: first silent interval. Any frame counts, not only heartbeats.
    p.tick_at(ms(2500));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.set_time(ms(2700));
    p.send(Wire::new().method(1, qos(1)));
    assert_eq!(p.events().len(), 1);
    p.tick_at(ms(3000));
    p.tick_at(ms(3500));
    p.tick_at(ms(4000)); // silent again, but only once in a row
    assert!(p.conn.is_open());
    assert_eq!(p.frames(), vec![Frame::Heartbeat; 3]);
    // Even an incomplete frame counts as traffic.
    p.set_time(ms(4200));
    p.send(&Wire::new().method(1, qos(2)).as_ref()[..5]);
    p.assert_quiet();
    for at in [4500, 5000, 5500, 6000, 6500] {
        p.tick_at(ms(at));
        assert_eq!(p.frames(), [Frame::Heartbeat], "at {at} ms");
    }
    assert!(p.conn.is_open());
    assert_eq!(p.events(), []);
    p.tick_at(ms(7000));
    assert!(p.conn.is_finished());
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::MissedHeartbeats
        }]
    );
}

#[test]
fn heartbeat_timers_start_at_tune_ok() {
    // Heartbeats flow while the client takes its time with connection.open; the handshake
    // deadline still applies.
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.send(Wire::new().method(0, tune_ok(2047, 131_072, 4)));
    p.assert_quiet();
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(2000)));
    p.tick_at(ms(2000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(4000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(6000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.set_time(ms(7000));
    p.send(Wire::new().method(0, open("/")));
    assert_eq!(p.events(), [Event::OpenVhost { vhost: "/".into() }]);
    p.conn.accept_vhost(p.now);
    assert_eq!(p.frames(), [m(0, ConnectionOpenOk::default())]);
    assert_eq!(p.events().len(), 1);
    // open-ok was sent since the last check; the open was received.
    p.tick_at(ms(8000));
    p.assert_quiet();
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(10_000)));
    p.tick_at(ms(10_000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    assert!(p.conn.is_open(), "the handshake deadline is gone");
    p.tick_at(ms(12_000)); // first silent interval
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(14_000));
    assert_eq!(p.frames(), [Frame::Heartbeat]);
    p.tick_at(ms(16_000));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::MissedHeartbeats
        }]
    );
    assert!(p.conn.is_finished());
}

#[test]
fn handshake_timeout_applies_while_heartbeating() {
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.send(Wire::new().method(0, tune_ok(2047, 131_072, 4)));
    for at in [2000, 4000, 6000, 8000] {
        if at > 2000 {
            p.set_time(ms(at - 500));
            p.send(Wire::new().heartbeat());
        }
        p.tick_at(ms(at));
        assert_eq!(p.frames(), [Frame::Heartbeat], "at {at} ms");
        assert_eq!(p.events(), []);
    }
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(10_000)));
    p.tick_at(ms(10_000));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert!(p.conn.is_finished());
    assert_eq!(p.conn.poll_timeout(), None);
}

#[test]
fn handshake_timeout_ends_a_slow_client() {
    // Stuck before the protocol header.
    let mut p = Peer::new(ServerConfig::default());
    p.tick_at(ms(9999));
    assert!(!p.conn.is_finished());
    p.tick_at(ms(10_000));
    assert_eq!(p.output(), b"");
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert!(p.conn.is_finished());
    assert!(!p.conn.wants_read());

    // Stuck after tune-ok, before connection.open.
    let mut p = tuned();
    assert_eq!(p.conn.poll_timeout(), Some(p.start + ms(10_000)));
    p.tick_at(ms(10_000));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    assert!(p.conn.is_finished());

    // The caller never judged the credentials.
    let mut p = Peer::new(ServerConfig {
        handshake_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    });
    p.send(
        Wire::new()
            .protocol_header()
            .method(0, start_ok(FieldTable::new(), "PLAIN", plain("a", "b"))),
    );
    let _ = (p.frames(), p.events());
    p.tick_at(ms(2000));
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    // A late verdict changes nothing.
    p.conn.accept_login(p.now);
    p.conn.refuse_login(p.now);
    p.assert_quiet();

    // The caller never judged the virtual host.
    let mut p = tuned();
    p.send(Wire::new().method(0, open("/")));
    assert_eq!(p.events().len(), 1);
    p.tick_at(ms(10_000));
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
    p.conn.accept_vhost(p.now);
    p.assert_quiet();
    assert!(!p.conn.is_open());
}

#[test]
fn handshake_deadline_is_gone_once_open() {
    let mut p = opened();
    assert_eq!(p.conn.poll_timeout(), None);
    p.tick_at(Duration::from_secs(3600));
    p.assert_quiet();
    assert!(p.conn.is_open());
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

#[test]
fn channel_max_limits_the_number_of_open_channels() {
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(10, 131_072, 0));
    // Any numbers: channel_max counts channels, it does not bound their numbers.
    for channel in [1, 65_535, 5, 300, 2, 3, 4, 6, 7, 8] {
        p.open_channel(channel);
    }
    assert!(!p.conn.is_channel_open(9));
    p.expect_connection_error(
        Wire::new().method(9, ChannelOpen::default()),
        ReplyCode::NotAllowed,
        "number of channels opened (10) has reached the negotiated channel_max (10)",
        0,
        0,
    );
    p.answer_close();

    // channel_max 1 and the highest channel number.
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(1, 131_072, 0));
    p.open_channel(65_535);
    p.expect_connection_error(
        Wire::new().method(1, ChannelOpen::default()),
        ReplyCode::NotAllowed,
        "number of channels opened (1) has reached the negotiated channel_max (1)",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn closed_channels_free_their_slot_once_close_ok_is_through() {
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(2, 131_072, 0));
    p.open_channel(1);
    p.open_channel(2);
    // The client closes 1: its slot is free at once.
    p.send(Wire::new().method(1, client_channel_close(200, "bye")));
    assert_eq!(p.frames(), [m(1, ChannelCloseOk::default())]);
    assert_eq!(p.events().len(), 1);
    p.open_channel(3);
    // The server closes 2: the slot is taken until the client's close-ok.
    p.conn
        .close_channel(2, AmqpException::channel(ReplyCode::NotFound, "x"));
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    p.send(Wire::new().method(2, ChannelCloseOk::default()));
    p.assert_quiet();
    p.open_channel(4);
    p.conn
        .close_channel(3, AmqpException::channel(ReplyCode::NotFound, "x"));
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    p.expect_connection_error(
        Wire::new().method(5, ChannelOpen::default()),
        ReplyCode::NotAllowed,
        "number of channels opened (2) has reached the negotiated channel_max (2)",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn commands_reach_the_right_channel_whatever_the_numbers() {
    let mut p = opened();
    for channel in [300, 2, 65_535, 1, 40_000] {
        p.open_channel(channel);
    }
    let mut wire = Wire::new();
    for (i, channel) in [65_535u16, 1, 40_000, 2, 300].into_iter().enumerate() {
        wire = wire.method(channel, qos(i as u16));
    }
    p.send(wire);
    let channels: Vec<(u16, u16)> = p
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Command {
                channel,
                method: Method::BasicQos(q),
                content: None,
            } => (channel, q.prefetch_count),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        channels,
        [(65_535, 0), (1, 1), (40_000, 2), (2, 3), (300, 4)]
    );
    // Closing one in the middle leaves the others in place.
    p.send(Wire::new().method(2, client_channel_close(200, "")));
    let _ = (p.frames(), p.events());
    for channel in [1, 300, 40_000, 65_535] {
        assert!(p.conn.is_channel_open(channel), "channel {channel}");
    }
    assert!(!p.conn.is_channel_open(2));
    p.open_channel(2);
}

#[test]
fn method_on_a_channel_never_opened_is_channel_error() {
    for (method, class_id, method_id) in [
        (Method::from(qos(1)), 60, 10),
        (publish("k").into(), 60, 40),
        (client_channel_close(200, "").into(), 20, 40),
        (ChannelCloseOk::default().into(), 20, 41),
    ] {
        let mut p = opened_with_channel();
        p.expect_connection_error(
            Wire::new().method(2, method),
            ReplyCode::ChannelError,
            "expected 'channel.open'",
            class_id,
            method_id,
        );
        p.answer_close();
    }
}

#[test]
fn content_on_a_channel_never_opened_is_unexpected() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().header(5, 1),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().body(5, b"x"),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn second_channel_open_is_channel_error() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, ChannelOpen::default()),
        ReplyCode::ChannelError,
        "second 'channel.open' seen",
        20,
        10,
    );
    p.answer_close();
}

#[test]
fn close_ok_on_an_open_channel_is_command_invalid() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, ChannelCloseOk::default()),
        ReplyCode::CommandInvalid,
        "unimplemented method",
        20,
        41,
    );
    p.answer_close();
}

#[test]
fn client_channel_close_is_answered_and_the_number_reusable() {
    let mut p = opened_with_channel();
    p.open_channel(2);
    p.send(Wire::new().method(1, client_channel_close(200, "bye")));
    assert_eq!(p.frames(), [m(1, ChannelCloseOk::default())]);
    assert_eq!(
        p.events(),
        [Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByClient {
                code: 200,
                text: "bye".into()
            }
        }]
    );
    assert!(!p.conn.is_channel_open(1));
    assert!(p.conn.is_channel_open(2));
    // Sends to the closed channel are dropped.
    p.conn.send_method(1, &BasicQosOk::default().into());
    assert_eq!(p.frames(), []);
    p.open_channel(1);
}

#[test]
fn server_channel_close_drops_commands_until_close_ok() {
    let mut p = opened_with_channel();
    p.open_channel(2);
    let e =
        AmqpException::channel(ReplyCode::NotFound, "no queue 'q' in vhost '/'").caused_by(50, 10);
    p.conn.close_channel(1, e.clone());
    assert_eq!(
        p.frames(),
        [channel_close(
            1,
            404,
            "NOT_FOUND - no queue 'q' in vhost '/'",
            50,
            10
        )]
    );
    assert_eq!(
        p.events(),
        [Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByServer(e)
        }]
    );
    assert!(!p.conn.is_channel_open(1));
    assert!(p.conn.is_open());
    // A second close is ignored.
    p.conn
        .close_channel(1, AmqpException::channel(ReplyCode::AccessRefused, "x"));
    assert_eq!(p.frames(), []);

    // What the client had in flight on channel 1 is assembled and dropped, even a connection
    // method (RabbitMQ's closing channel drops it too); channel 2 carries on.
    p.send(
        Wire::new()
            .method(1, qos(1))
            .method(1, publish("k"))
            .header(1, 4)
            .body(1, b"ab")
            .method(2, qos(2))
            .body(1, b"cd")
            .method(1, publish("e"))
            .header(1, 0)
            .method(1, ChannelFlow { active: false })
            .method(1, client_close(200, "wrong channel"))
            .method(2, qos(3)),
    );
    assert_eq!(p.frames(), []);
    let cmd = |n| Event::Command {
        channel: 2,
        method: qos(n).into(),
        content: None,
    };
    assert_eq!(p.events(), [cmd(2), cmd(3)]);
    p.conn.send_method(1, &BasicQosOk::default().into());
    p.conn
        .send_content(1, &deliver(1).into(), &BasicProperties::default(), b"x");
    assert_eq!(p.frames(), []);

    p.send(Wire::new().method(1, ChannelCloseOk::default()));
    p.assert_quiet();
    assert!(!p.conn.is_channel_open(1));
    p.open_channel(1);
    assert!(p.conn.is_open());
}

#[test]
fn framing_rules_still_hold_on_a_closing_channel() {
    let closing = || {
        let mut p = opened_with_channel();
        p.conn
            .close_channel(1, AmqpException::channel(ReplyCode::NotFound, "x"));
        assert_eq!(p.frames().len(), 1);
        assert_eq!(p.events().len(), 1);
        p
    };
    let mut p = closing();
    p.expect_connection_error(
        Wire::new().body(1, b"stray"),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();

    let mut p = closing();
    p.expect_connection_error(
        Wire::new().method(1, publish("k")).method(1, qos(1)),
        ReplyCode::UnexpectedFrame,
        "expected content header for class 60, got non content header frame instead",
        60,
        40,
    );
    p.answer_close();

    let mut p = closing();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 1)
            .body(1, b"ab"),
        ReplyCode::FrameError,
        "content body frame exceeds remaining content size",
        60,
        40,
    );
    p.answer_close();

    // channel.open on a closing channel is a second one.
    let mut p = closing();
    p.expect_connection_error(
        Wire::new().method(1, ChannelOpen::default()),
        ReplyCode::ChannelError,
        "second 'channel.open' seen",
        20,
        10,
    );
    p.answer_close();
}

#[test]
fn both_sides_closing_a_channel_at_once() {
    let mut p = opened_with_channel();
    let e = AmqpException::channel(ReplyCode::PreconditionFailed, "inequivalent arg 'durable'")
        .caused_by(50, 10);
    p.conn.close_channel(1, e.clone());
    assert_eq!(
        p.frames(),
        [channel_close(
            1,
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable'",
            50,
            10
        )]
    );
    assert_eq!(p.events().len(), 1);
    // The client's own channel.close crossed ours: it gets close-ok...
    p.send(Wire::new().method(1, client_channel_close(200, "bye")));
    assert_eq!(p.frames(), [m(1, ChannelCloseOk::default())]);
    assert_eq!(p.events(), [], "ChannelClosed was already reported");
    assert!(!p.conn.is_channel_open(1));
    // ...the channel still waits for its close-ok, dropping commands...
    p.send(Wire::new().method(1, qos(1)));
    p.assert_quiet();
    // ...which the client then sends, as the spec says.
    p.send(Wire::new().method(1, ChannelCloseOk::default()));
    p.assert_quiet();
    assert!(p.conn.is_open());
    p.open_channel(1);
}

// ---------------------------------------------------------------------------------------------
// Content assembly
// ---------------------------------------------------------------------------------------------

fn command(channel: u16, method: impl Into<Method>, body_size: u64, body: &[u8]) -> Event {
    Event::Command {
        channel,
        method: method.into(),
        content: Some(Content {
            header: ContentHeader::basic(body_size, BasicProperties::default()),
            body: Bytes::copy_from_slice(body),
        }),
    }
}

#[test]
fn publish_with_header_and_body_in_one_read() {
    let mut p = opened_with_channel();
    let properties = BasicProperties {
        content_type: Some(ShortStr::from("text/plain")),
        delivery_mode: Some(2),
        headers: Some([("x-k", 1i32)].into_iter().collect()),
        ..BasicProperties::default()
    };
    p.send(
        Wire::new()
            .method(1, publish("greetings"))
            .header_with(1, 5, properties.clone())
            .body(1, b"hello"),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [Event::Command {
            channel: 1,
            method: publish("greetings").into(),
            content: Some(Content {
                header: ContentHeader::basic(5, properties),
                body: Bytes::from_static(b"hello"),
            }),
        }]
    );
}

#[test]
fn body_split_over_many_frames_and_reads_is_assembled_exactly() {
    let mut p = opened_with_channel();
    let body = pattern(10_000);
    let mut wire = Wire::new()
        .method(1, publish("big"))
        .header(1, body.len() as u64);
    let mut at = 0;
    for len in [1, 999, 3000, 1, 4000, 1999] {
        wire = wire.body(1, &body[at..at + len]);
        at += len;
    }
    assert_eq!(at, body.len());
    // Delivered in uneven reads that cut frames anywhere.
    let bytes = wire.as_ref().to_vec();
    let mut events = Vec::new();
    for piece in bytes.chunks(333) {
        assert_eq!(events, [], "no command before the last octet");
        p.send(piece);
        events.extend(p.events());
    }
    assert_eq!(p.frames(), []);
    assert_eq!(events, [command(1, publish("big"), 10_000, &body)]);
}

#[test]
fn empty_body_frames_are_allowed_in_between() {
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 2)
            .body(1, b"")
            .body(1, b"a")
            .body(1, b"")
            .body(1, b"b"),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(p.events(), [command(1, publish("k"), 2, b"ab")]);
}

#[test]
fn empty_body_completes_at_the_header() {
    let mut p = opened_with_channel();
    p.send(Wire::new().method(1, publish("empty")).header(1, 0));
    assert_eq!(p.events(), [command(1, publish("empty"), 0, b"")]);
    // The channel expects a method next, not a body.
    p.send(Wire::new().method(1, qos(3)));
    assert_eq!(
        p.events(),
        [Event::Command {
            channel: 1,
            method: qos(3).into(),
            content: None
        }]
    );
    p.send(Wire::new().method(1, publish("e")).header(1, 0));
    assert_eq!(p.events(), [command(1, publish("e"), 0, b"")]);
    p.expect_connection_error(
        Wire::new().body(1, b""),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn body_frames_beyond_body_size_are_frame_errors() {
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 7)
            .body(1, b"abcd"),
    );
    assert_eq!(p.events(), []);
    p.expect_connection_error(
        Wire::new().body(1, b"efgh"),
        ReplyCode::FrameError,
        "content body frame exceeds remaining content size",
        60,
        40,
    );
    p.answer_close();
}

#[test]
fn content_without_a_pending_method_is_unexpected() {
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().header(1, 3),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().body(1, b"abc"),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();

    // A method without content is not followed by any.
    let mut p = opened_with_channel();
    p.send(Wire::new().method(1, qos(1)));
    assert_eq!(p.events().len(), 1);
    p.expect_connection_error(
        Wire::new().header(1, 0),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn wrong_frame_while_a_header_is_expected_is_unexpected() {
    let text = "expected content header for class 60, got non content header frame instead";
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, publish("k")).method(1, qos(1)),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().method(1, publish("k")).body(1, b"x"),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();

    // Even channel.close must wait for the content to finish.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .method(1, client_channel_close(200, "")),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();

    // A header with a non-zero weight is not a content header.
    let mut p = opened_with_channel();
    let weighty = ContentHeader {
        weight: 1,
        ..ContentHeader::basic(1, BasicProperties::default())
    };
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .content_header(1, &weighty),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();
}

#[test]
fn wrong_frame_while_a_body_is_expected_is_unexpected() {
    let text = "expected content body, got non content body frame instead";
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 2)
            .body(1, b"a")
            .method(1, publish("k")),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 2)
            .header(1, 2),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();

    // A header of another class there too.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 2)
            .frame(2, 1, &class_50_header()),
        ReplyCode::UnexpectedFrame,
        text,
        60,
        40,
    );
    p.answer_close();
}

/// A content header of class 50 (`queue`, which carries no content), body size 0.
fn class_50_header() -> Vec<u8> {
    let mut payload = vec![0, 50, 0, 0];
    payload.extend_from_slice(&0u64.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    payload
}

#[test]
fn content_header_of_another_class_is_unexpected() {
    // Only class 60 carries content.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, publish("k"))
            .frame(2, 1, &class_50_header()),
        ReplyCode::UnexpectedFrame,
        "expected content header for class 60, got one for class 50 instead",
        60,
        40,
    );
    p.answer_close();

    // Where a method is expected, it is a header where a method should be.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(2, 1, &class_50_header()),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();

    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new().frame(2, 4, &class_50_header()),
        ReplyCode::UnexpectedFrame,
        "expected method frame, got non method frame instead",
        0,
        0,
    );
    p.answer_close();
}

#[test]
fn message_over_max_message_size_closes_the_channel() {
    let config = ServerConfig {
        max_message_size: 10,
        ..ServerConfig::default()
    };
    let mut p = open_peer(config, &[], tune_ok(2047, 131_072, 0));
    p.open_channel(1);
    p.open_channel(2);
    p.send(
        Wire::new()
            .method(1, publish("k"))
            .header(1, 10)
            .body(1, &pattern(10)),
    );
    assert_eq!(p.events(), [command(1, publish("k"), 10, &pattern(10))]);

    p.send(Wire::new().method(1, publish("k")).header(1, 11));
    assert_eq!(
        p.frames(),
        [channel_close(
            1,
            406,
            "PRECONDITION_FAILED - message size 11 is larger than configured max size 10",
            60,
            40
        )]
    );
    assert_eq!(
        p.events(),
        [Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByServer(
                AmqpException::channel(
                    ReplyCode::PreconditionFailed,
                    "message size 11 is larger than configured max size 10"
                )
                .caused_by(60, 40)
            )
        }]
    );
    assert!(!p.conn.is_channel_open(1));
    // The body that follows is counted and dropped, over several frames; the connection and
    // channel 2 are fine. Another oversized message on the closing channel is dropped too,
    // without a second channel.close.
    p.send(
        Wire::new()
            .body(1, &pattern(5))
            .method(2, publish("k"))
            .header(2, 1)
            .body(2, b"z")
            .body(1, &pattern(6))
            .method(1, publish("k"))
            .header(1, 100)
            .body(1, &pattern(100)),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(p.events(), [command(2, publish("k"), 1, b"z")]);
    assert!(p.conn.is_open());
    p.send(Wire::new().method(1, ChannelCloseOk::default()));
    p.assert_quiet();
    p.open_channel(1);
}

#[test]
fn body_beyond_an_oversized_messages_size_is_still_a_frame_error() {
    let config = ServerConfig {
        max_message_size: 10,
        ..ServerConfig::default()
    };
    let mut p = open_peer(config, &[], tune_ok(2047, 131_072, 0));
    p.open_channel(1);
    p.send(Wire::new().method(1, publish("k")).header(1, 11));
    assert_eq!(p.frames().len(), 1);
    assert_eq!(p.events().len(), 1);
    p.expect_connection_error(
        Wire::new().body(1, &pattern(12)),
        ReplyCode::FrameError,
        "content body frame exceeds remaining content size",
        60,
        40,
    );
    p.answer_close();
}

#[test]
fn content_interleaved_on_two_channels() {
    let mut p = opened_with_channel();
    p.open_channel(2);
    p.send(
        Wire::new()
            .method(1, publish("one"))
            .method(2, publish("two"))
            .header(2, 4)
            .header(1, 6)
            .body(1, b"on")
            .body(2, b"tw")
            .body(1, b"e-")
            .body(2, b"o!")
            .body(1, b"1!"),
    );
    assert_eq!(p.frames(), []);
    assert_eq!(
        p.events(),
        [
            command(2, publish("two"), 4, b"two!"),
            command(1, publish("one"), 6, b"one-1!"),
        ]
    );
}

#[test]
fn commands_come_in_order_with_content_in_between() {
    let mut p = opened_with_channel();
    p.send(
        Wire::new()
            .method(1, qos(1))
            .method(1, publish("a"))
            .header(1, 1)
            .body(1, b"A")
            .method(1, qos(2))
            .method(1, publish("b"))
            .header(1, 0)
            .method(1, qos(3)),
    );
    let cmd = |n| Event::Command {
        channel: 1,
        method: qos(n).into(),
        content: None,
    };
    assert_eq!(
        p.events(),
        [
            cmd(1),
            command(1, publish("a"), 1, b"A"),
            cmd(2),
            command(1, publish("b"), 0, b""),
            cmd(3),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// What the server sends
// ---------------------------------------------------------------------------------------------

fn deliver(tag: u64) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortStr::from("ctag"),
        delivery_tag: tag,
        redelivered: false,
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
    }
}

#[test]
fn send_content_splits_bodies_by_the_negotiated_frame_max() {
    let mut p = open_peer(ServerConfig::default(), &[], tune_ok(2047, 4096, 0));
    p.open_channel(1);
    let body = pattern(10_000);
    let properties = BasicProperties {
        message_id: Some(ShortStr::from("m-1")),
        ..BasicProperties::default()
    };
    p.conn
        .send_content(1, &deliver(1).into(), &properties, &body);
    let frames = p.frames();
    // Like RabbitMQ, frames of at most frame_max octets, framing included.
    assert_eq!(
        frames,
        [
            m(1, deliver(1)),
            Frame::Header {
                channel: 1,
                header: ContentHeader::basic(10_000, properties.clone()),
            },
            Frame::Body {
                channel: 1,
                payload: Bytes::copy_from_slice(&body[..4088]),
            },
            Frame::Body {
                channel: 1,
                payload: Bytes::copy_from_slice(&body[4088..8176]),
            },
            Frame::Body {
                channel: 1,
                payload: Bytes::copy_from_slice(&body[8176..]),
            },
        ]
    );
    // Every frame fits the negotiated frame_max when re-decoded with that limit.
    p.conn
        .send_content(1, &deliver(2).into(), &properties, &body);
    let mut raw = BytesMut::from(&p.output()[..]);
    let mut count = 0;
    while frame::decode_frame(&mut raw, 4096)
        .expect("within frame_max")
        .is_some()
    {
        count += 1;
    }
    assert_eq!(count, 5);

    // An empty body is a method and a header, no body frame.
    p.conn
        .send_content(1, &deliver(3).into(), &BasicProperties::default(), b"");
    assert_eq!(
        p.frames(),
        [
            m(1, deliver(3)),
            Frame::Header {
                channel: 1,
                header: ContentHeader::basic(0, BasicProperties::default()),
            },
        ]
    );

    // A body that fills whole frames exactly.
    p.conn.send_content(
        1,
        &deliver(4).into(),
        &BasicProperties::default(),
        &body[..8176],
    );
    let lens: Vec<usize> = p
        .frames()
        .iter()
        .filter_map(|f| match f {
            Frame::Body { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .collect();
    assert_eq!(lens, [4088, 4088]);
}

#[test]
fn sends_to_channels_that_are_not_open_are_dropped() {
    let mut p = opened_with_channel();
    p.conn.send_method(2, &BasicQosOk::default().into());
    p.conn
        .send_content(3, &deliver(1).into(), &BasicProperties::default(), b"x");
    assert_eq!(p.frames(), []);
    p.conn.send_method(1, &BasicQosOk::default().into());
    assert_eq!(p.frames(), [m(1, BasicQosOk::default())]);
    p.conn
        .close_channel(2, AmqpException::channel(ReplyCode::NotFound, "x"));
    p.assert_quiet();

    // Before the handshake is done, nothing can be sent either.
    let mut p = logged_in(ServerConfig::default(), &[]);
    p.conn.send_method(0, &ConnectionOpenOk::default().into());
    assert_eq!(p.frames(), []);
    let mut p = tuned();
    p.conn.send_method(0, &ConnectionOpenOk::default().into());
    p.conn
        .close_channel(0, AmqpException::channel(ReplyCode::NotFound, "x"));
    p.assert_quiet();
}

#[test]
fn block_and_unblock_need_the_capability() {
    let mut p = opened();
    p.conn.block("low on memory");
    p.conn.unblock();
    assert_eq!(p.frames(), []);

    let mut p = open_peer(
        ServerConfig::default(),
        &["connection.blocked"],
        tune_ok(2047, 131_072, 0),
    );
    p.conn.block("low on memory");
    assert_eq!(
        p.frames(),
        [m(
            0,
            ConnectionBlocked {
                reason: ShortStr::from("low on memory")
            }
        )]
    );
    // Once only.
    p.conn.block("low on disk");
    assert_eq!(p.frames(), []);
    p.conn.unblock();
    assert_eq!(p.frames(), [m(0, ConnectionUnblocked::default())]);
    p.conn.unblock();
    assert_eq!(p.frames(), []);
    // And again.
    p.conn.block("low on disk");
    p.conn.unblock();
    assert_eq!(
        p.frames(),
        [
            m(
                0,
                ConnectionBlocked {
                    reason: ShortStr::from("low on disk")
                }
            ),
            m(0, ConnectionUnblocked::default())
        ]
    );
    assert_eq!(p.events(), []);
}

#[test]
fn block_is_not_sent_before_the_connection_is_open() {
    let mut p = logged_in(ServerConfig::default(), &["connection.blocked"]);
    p.conn.block("low on memory");
    assert_eq!(p.frames(), []);
}

#[test]
fn server_close_ends_all_channels() {
    let mut p = opened_with_channel();
    p.open_channel(2);
    p.conn.close(
        AmqpException::connection(ReplyCode::ConnectionForced, "shutdown").caused_by(0, 0),
        p.now,
    );
    assert_eq!(
        p.frames(),
        [connection_close(320, "CONNECTION_FORCED - shutdown", 0, 0)]
    );
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByServer(AmqpException::connection(
                ReplyCode::ConnectionForced,
                "shutdown"
            ))
        }]
    );
    assert!(!p.conn.is_channel_open(1));
    assert!(!p.conn.is_channel_open(2));
    p.answer_close();
}

// ---------------------------------------------------------------------------------------------
// A caller that acts on each command before the next frame is read: replies, channel and
// connection closes take effect in the client's order, as in RabbitMQ's channel process.

/// Feeds `wire` in one read and answers every command through `answer`, acting on each event
/// before polling the next. Returns the events seen.
fn feed_answering(
    p: &mut Peer,
    wire: Wire,
    mut answer: impl FnMut(&mut ServerConnection, &Event, Instant),
) -> Vec<Event> {
    p.conn.read_buffer().extend_from_slice(wire.as_ref());
    p.conn.handle_read(p.now);
    let mut seen = Vec::new();
    while let Some(e) = p.conn.poll_event() {
        answer(&mut p.conn, &e, p.now);
        seen.push(e);
    }
    seen
}

fn confirm_select() -> warren_amqp_codec::ConfirmSelect {
    warren_amqp_codec::ConfirmSelect::default()
}

/// Answers `confirm.select` and confirms each publish, as a broker would.
fn confirming_broker(conn: &mut ServerConnection, e: &Event, _now: Instant) {
    if let Event::Command {
        channel, method, ..
    } = e
    {
        match method {
            Method::ConfirmSelect(_) => {
                conn.send_method(
                    *channel,
                    &warren_amqp_codec::ConfirmSelectOk::default().into(),
                );
            }
            Method::BasicPublish(_) => {
                let ack = warren_amqp_codec::BasicAck {
                    delivery_tag: 1,
                    multiple: false,
                };
                conn.send_method(*channel, &ack.into());
            }
            _ => {}
        }
    }
}

#[test]
fn replies_to_commands_precede_a_pipelined_channel_close_ok() {
    let mut p = opened_with_channel();
    let wire = Wire::new()
        .method(1, confirm_select())
        .method(1, publish("rk"))
        .header(1, 3)
        .body(1, b"abc")
        .method(1, client_channel_close(200, "bye"));
    let events = feed_answering(&mut p, wire, confirming_broker);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        events[2],
        Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByClient { .. }
        }
    ));
    assert_eq!(
        p.frames(),
        [
            m(1, warren_amqp_codec::ConfirmSelectOk::default()),
            m(
                1,
                warren_amqp_codec::BasicAck {
                    delivery_tag: 1,
                    multiple: false
                }
            ),
            m(1, ChannelCloseOk::default()),
        ]
    );
}

#[test]
fn replies_to_commands_precede_a_pipelined_connection_close_ok() {
    let mut p = opened_with_channel();
    let wire = Wire::new()
        .method(1, confirm_select())
        .method(1, publish("rk"))
        .header(1, 3)
        .body(1, b"abc")
        .method(0, client_close(200, "bye"));
    let events = feed_answering(&mut p, wire, confirming_broker);
    assert!(matches!(
        events.last(),
        Some(Event::Closed {
            reason: CloseReason::ByClient { code: 200, .. }
        })
    ));
    assert_eq!(
        p.frames(),
        [
            m(1, warren_amqp_codec::ConfirmSelectOk::default()),
            m(
                1,
                warren_amqp_codec::BasicAck {
                    delivery_tag: 1,
                    multiple: false
                }
            ),
            m(0, ConnectionCloseOk::default()),
        ]
    );
    crate::assert_closed_by_client(&mut p.conn);
}

#[test]
fn commands_after_a_channel_close_in_the_same_read_are_dropped() {
    let mut p = opened_with_channel();
    let wire = Wire::new()
        .method(1, qos(1))
        .method(1, qos(2))
        .method(1, qos(3))
        .method(2, ChannelOpen::default());
    let refusal = AmqpException::channel(ReplyCode::PreconditionFailed, "no").caused_by(60, 10);
    let mut closed = false;
    let events = feed_answering(&mut p, wire, |conn, e, _| {
        if let (Event::Command { channel: 1, .. }, false) = (e, closed) {
            closed = true;
            conn.close_channel(1, refusal.clone());
        }
    });
    // One command reached the caller; the two behind it were dropped on the closing channel,
    // and the channel after them was opened normally.
    let commands = events
        .iter()
        .filter(|e| matches!(e, Event::Command { .. }))
        .count();
    assert_eq!(commands, 1, "{events:?}");
    assert_eq!(
        events[1],
        Event::ChannelClosed {
            channel: 1,
            reason: ChannelCloseReason::ByServer(refusal)
        }
    );
    assert_eq!(events[2], Event::ChannelOpened { channel: 2 });
    assert_eq!(
        p.frames(),
        [
            channel_close(1, 406, "PRECONDITION_FAILED - no", 60, 10),
            m(2, ChannelOpenOk::default()),
        ]
    );
    p.send(Wire::new().method(1, ChannelCloseOk::default()));
    p.assert_quiet();
    assert!(!p.conn.is_channel_open(1));
}

#[test]
fn nothing_is_read_after_the_caller_closes_the_connection_mid_read() {
    let mut p = opened_with_channel();
    let wire = Wire::new()
        .method(1, qos(1))
        .method(1, qos(2))
        .method(1, client_channel_close(200, "bye"));
    let forced = AmqpException::connection(ReplyCode::ConnectionForced, "shutdown");
    let events = feed_answering(&mut p, wire, |conn, e, now| {
        if matches!(e, Event::Command { .. }) {
            conn.close(forced.clone(), now);
        }
    });
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1],
        Event::Closed {
            reason: CloseReason::ByServer(forced)
        }
    );
    assert_eq!(
        p.frames(),
        [connection_close(320, "CONNECTION_FORCED - shutdown", 0, 0)]
    );
    p.answer_close();
}

#[test]
fn a_channel_exception_of_connection_scope_closes_the_connection() {
    let mut p = opened_with_channel();
    let e = AmqpException::connection(ReplyCode::NotAllowed, "nope");
    p.conn.close_channel(1, e.clone());
    assert_eq!(
        p.frames(),
        [connection_close(530, "NOT_ALLOWED - nope", 0, 0)]
    );
    assert_eq!(
        p.events(),
        [Event::Closed {
            reason: CloseReason::ByServer(e)
        }]
    );
    p.answer_close();
}

#[test]
fn methods_only_a_server_sends_are_unimplemented() {
    let server_only: Vec<Method> = vec![
        ChannelOpenOk::default().into(),
        warren_amqp_codec::QueueDeclareOk::default().into(),
        warren_amqp_codec::BasicConsumeOk::default().into(),
        warren_amqp_codec::BasicGetEmpty::default().into(),
        warren_amqp_codec::ConfirmSelectOk::default().into(),
        warren_amqp_codec::TxCommitOk::default().into(),
    ];
    for method in server_only {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let mut p = opened_with_channel();
        p.expect_connection_error(
            Wire::new().method(1, method),
            ReplyCode::CommandInvalid,
            "unimplemented method",
            class_id,
            method_id,
        );
    }
    // Deliveries carry content: refused once complete, like any other command.
    let mut p = opened_with_channel();
    p.expect_connection_error(
        Wire::new()
            .method(1, BasicDeliver::default())
            .header(1, 1)
            .body(1, b"x"),
        ReplyCode::CommandInvalid,
        "unimplemented method",
        60,
        60,
    );
}

#[test]
fn a_client_that_does_not_read_cannot_grow_the_write_buffer_without_bound() {
    let config = ServerConfig {
        max_write_backlog: 4096,
        ..ServerConfig::default()
    };
    let mut p = open_peer(config, &[], tune_ok(2047, 131_072, 0));
    let mut wire = Wire::new();
    for _ in 0..400 {
        wire = wire
            .method(1, ChannelOpen::default())
            .method(1, client_channel_close(200, ""));
    }
    p.conn.read_buffer().extend_from_slice(wire.as_ref());
    p.conn.handle_read(p.now);
    while p.conn.poll_event().is_some() {}
    // 800 replies are queued: far past the backlog limit, so the driver must stop reading.
    assert!(p.conn.write_buffer().len() > 4096);
    assert!(!p.conn.wants_read());
    p.conn.write_buffer().clear();
    assert!(
        p.conn.wants_read(),
        "reading resumes once the output drains"
    );
}

#[test]
fn silence_while_the_caller_pauses_reading_is_not_a_missed_heartbeat() {
    let mut p = heartbeating();
    p.conn.pause_reading(true);
    for at in (1..=10).map(|i| i * 500) {
        p.tick_at(ms(at));
        assert_eq!(p.frames(), [Frame::Heartbeat], "at {at} ms");
    }
    assert!(p.conn.is_open(), "five silent intervals while paused");
    p.conn.pause_reading(false);
    for at in [5500, 6000, 6500] {
        p.tick_at(ms(at));
        assert_eq!(p.frames(), [Frame::Heartbeat]);
    }
    assert!(p.conn.is_open());
    p.tick_at(ms(7000));
    assert!(p.conn.is_finished(), "two silent intervals after resuming");
}
