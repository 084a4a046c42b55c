//! A sans-IO AMQP 0-9-1 server connection.
//!
//! [`ServerConnection`] owns everything about one client connection that is pure protocol: the
//! protocol header check, `connection.start`/`start-ok` with PLAIN and AMQPLAIN credentials,
//! `tune`/`tune-ok` negotiation of `channel_max`, `frame_max` and heartbeat, `connection.open`,
//! the channel open/close lifecycle, content assembly (method + header + body frames, bodies
//! split over many frames), heartbeat deadlines, and both close handshakes.
//!
//! It decides nothing about users, virtual hosts, exchanges or queues: credentials and the
//! virtual host are handed up as [`Event`]s for the caller to judge, and every other method on an
//! open channel is handed up as a complete [`Event::Command`]. The caller answers with the
//! `send_*`, `close*` and `accept_*`/`refuse_*` calls.
//!
//! The driver's loop:
//! 1. read socket bytes into [`ServerConnection::read_buffer`], then call
//!    [`ServerConnection::handle_read`] with the current time;
//! 2. drain [`ServerConnection::poll_event`] and act on each event;
//! 3. write out [`ServerConnection::write_buffer`] (advancing it by what was written);
//! 4. sleep until the socket is ready or [`ServerConnection::poll_timeout`], then call
//!    [`ServerConnection::handle_timeout`];
//! 5. stop once [`ServerConnection::is_finished`] and the write buffer is flushed.
//!
//! Time is always an argument: nothing here reads the clock.

use crate::frame::{self, ProtocolHeader};
use crate::{
    AmqpException, BasicProperties, ChannelClose, ChannelCloseOk, ChannelOpenOk, ConnectionBlocked,
    ConnectionClose, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart, ConnectionTune,
    ConnectionUnblocked, ContentHeader, FieldTable, FieldValue, Frame, LongStr, Method, ReplyCode,
    Scope, ShortStr,
};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The smallest `frame_max` a peer may negotiate, and the limit in force before tuning.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Server-side settings of the handshake.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `server-properties` table of `connection.start`.
    pub server_properties: FieldTable,
    /// The mechanisms offered, in order of preference.
    pub mechanisms: Vec<Mechanism>,
    /// The highest channel number the server allows (`channel_max` in `connection.tune`).
    pub channel_max: u16,
    /// The largest frame the server accepts, framing included.
    pub frame_max: u32,
    /// The heartbeat interval the server proposes, in seconds (0: none).
    pub heartbeat: u16,
    /// How long a client may take from the protocol header to `connection.open`.
    pub handshake_timeout: Duration,
    /// How long to wait for `connection.close-ok` after sending `connection.close`.
    pub close_timeout: Duration,
    /// The largest message body accepted; a larger content header closes the channel with
    /// 406 PRECONDITION_FAILED (RabbitMQ's `max_message_size`).
    pub max_message_size: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            server_properties: FieldTable::new(),
            mechanisms: vec![Mechanism::Plain, Mechanism::AmqPlain],
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(3),
            max_message_size: 128 * 1024 * 1024,
        }
    }
}

/// A SASL mechanism the server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    Plain,
    /// RabbitMQ's AMQPLAIN: a field table (without its length prefix) holding `LOGIN` and
    /// `PASSWORD`.
    AmqPlain,
}

impl Mechanism {
    /// The name as it appears on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
        }
    }
}

/// The values agreed by `connection.tune` / `tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Highest usable channel number.
    pub channel_max: u16,
    /// Largest frame, framing included.
    pub frame_max: u32,
    /// Heartbeat interval in seconds (0: disabled).
    pub heartbeat: u16,
}

/// A complete message body with its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The content header (properties and body size).
    pub header: ContentHeader,
    /// The body; a single-frame body shares the read buffer's memory.
    pub body: Bytes,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseReason {
    /// The client sent `connection.close`.
    ByClient {
        /// The client's reply code.
        code: u16,
        /// The client's reply text.
        text: String,
    },
    /// The server closed it (a protocol error, a refused login, or the caller's `close`).
    ByServer(AmqpException),
    /// The client did not send a 0-9-1 protocol header; the server answered with its own.
    BadProtocolHeader,
    /// The handshake did not finish within [`ServerConfig::handshake_timeout`].
    HandshakeTimeout,
    /// Nothing was received for two heartbeat intervals.
    MissedHeartbeats,
}

/// What the connection tells its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client sent credentials: check them, then call
    /// [`ServerConnection::accept_login`] or [`ServerConnection::refuse_login`].
    Authenticate {
        /// The mechanism the client chose.
        mechanism: Mechanism,
        /// The user name.
        username: String,
        /// The password.
        password: String,
        /// The client's `client-properties` table.
        client_properties: FieldTable,
    },
    /// The client asked for a virtual host: call [`ServerConnection::accept_vhost`] or
    /// [`ServerConnection::close`] with the refusal.
    OpenVhost {
        /// The virtual host name.
        vhost: String,
    },
    /// The handshake is complete and the connection is open.
    Opened {
        /// The negotiated limits.
        tuning: Tuning,
    },
    /// A channel was opened (`channel.open-ok` already sent).
    ChannelOpened {
        /// The channel number.
        channel: u16,
    },
    /// A complete command on an open channel. Content-carrying methods come with their content.
    Command {
        /// The channel number.
        channel: u16,
        /// The method.
        method: Method,
        /// The header and body, for content-carrying methods.
        content: Option<Content>,
    },
    /// The client sent `connection.update-secret`; answer with `connection.update-secret-ok`
    /// through [`ServerConnection::send_method`] on channel 0, or close the connection.
    UpdateSecret {
        /// The new secret.
        new_secret: LongStr,
        /// The client's reason.
        reason: ShortStr,
    },
    /// A channel stopped being usable; nothing more arrives on it. Sent once, when the closing
    /// starts (the client's `channel.close`, or the server's).
    ChannelClosed {
        /// The channel number.
        channel: u16,
        /// Who closed it and why.
        reason: ChannelCloseReason,
    },
    /// The connection stopped being usable; sent once. Keep flushing the write buffer until
    /// [`ServerConnection::is_finished`].
    Closed {
        /// Why it ended.
        reason: CloseReason,
    },
}

/// Why a channel closed.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelCloseReason {
    /// The client sent `channel.close`.
    ByClient {
        /// The client's reply code.
        code: u16,
        /// The client's reply text.
        text: String,
    },
    /// The server sent `channel.close` with this exception.
    ByServer(AmqpException),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 8-octet protocol header.
    AwaitingHeader,
    /// `connection.start` sent.
    AwaitingStartOk,
    /// `Event::Authenticate` emitted; waiting for the caller's verdict.
    Authenticating,
    /// `connection.tune` sent.
    AwaitingTuneOk,
    /// Tuned; waiting for `connection.open`.
    AwaitingOpen,
    /// `Event::OpenVhost` emitted; waiting for the caller's verdict.
    OpeningVhost,
    /// Fully open.
    Open,
    /// We sent `connection.close`; waiting for `close-ok` until the deadline.
    CloseSent,
    /// Done: nothing more is read; flush the write buffer and drop the socket.
    Finished,
}

/// Content assembly on one channel.
#[derive(Debug)]
enum Assembly {
    Idle,
    Header {
        method: Method,
    },
    Body {
        method: Method,
        header: ContentHeader,
        body: BodyParts,
        remaining: u64,
    },
}

/// Body octets gathered so far: one shared frame payload, or a copy when split over frames.
#[derive(Debug)]
enum BodyParts {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl BodyParts {
    fn push(&mut self, part: Bytes) {
        *self = match std::mem::replace(self, BodyParts::Empty) {
            BodyParts::Empty => BodyParts::One(part),
            BodyParts::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + part.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&part);
                BodyParts::Many(all)
            }
            BodyParts::Many(mut all) => {
                all.extend_from_slice(&part);
                BodyParts::Many(all)
            }
        }
    }

    fn finish(self) -> Bytes {
        match self {
            BodyParts::Empty => Bytes::new(),
            BodyParts::One(b) => b,
            BodyParts::Many(b) => b.freeze(),
        }
    }
}

#[derive(Debug)]
enum Channel {
    Open(Assembly),
    /// We sent `channel.close`; everything but `close`/`close-ok` is dropped.
    Closing,
}

/// The server side of one AMQP 0-9-1 connection, without I/O.
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    state: State,
    read: BytesMut,
    write: BytesMut,
    events: VecDeque<Event>,
    /// `channels[n]` is channel `n` (index 0 unused).
    channels: Vec<Option<Channel>>,
    tuning: Tuning,
    client_properties: FieldTable,
    /// Deadline of the handshake or of the close handshake.
    deadline: Option<Instant>,
    heartbeat: Option<Heartbeat>,
    sent_since_tick: bool,
    received_since_tick: bool,
    blocked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    interval: Duration,
    /// When to check whether anything was sent (and send a heartbeat if not).
    next_send: Instant,
    /// When to check whether anything was received.
    next_recv_check: Instant,
    /// Consecutive receive checks that found nothing.
    missed: u8,
}

impl ServerConnection {
    /// A new connection whose socket was accepted at `now`.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let tuning = Tuning {
            channel_max: config.channel_max,
            frame_max: FRAME_MIN_SIZE,
            heartbeat: 0,
        };
        Self {
            deadline: Some(now + config.handshake_timeout),
            config,
            state: State::AwaitingHeader,
            read: BytesMut::with_capacity(512),
            write: BytesMut::with_capacity(512),
            events: VecDeque::new(),
            channels: Vec::new(),
            tuning,
            client_properties: FieldTable::new(),
            heartbeat: None,
            sent_since_tick: false,
            received_since_tick: false,
            blocked: false,
        }
    }

    /// Where the driver puts bytes read from the socket before calling
    /// [`Self::handle_read`].
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    /// Bytes waiting to be written to the socket. The driver writes from the front and
    /// advances the buffer by what it wrote.
    pub fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// The next event for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The negotiated limits (before tuning, the pre-tune limits).
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// The client's `client-properties` table (empty before `start-ok`).
    pub fn client_properties(&self) -> &FieldTable {
        &self.client_properties
    }

    /// Whether the connection is fully open (handshake done, not closing).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over: flush the write buffer, then drop the socket.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Whether `channel` is open for commands.
    pub fn is_channel_open(&self, channel: u16) -> bool {
        matches!(self.channel(channel), Some(Channel::Open(_)))
    }

    /// Whether the client announced the named capability (e.g. `connection.blocked`) in its
    /// `client-properties`.
    pub fn client_has_capability(&self, name: &str) -> bool {
        self.client_properties
            .get("capabilities")
            .and_then(FieldValue::as_table)
            .and_then(|c| c.get(name))
            .and_then(FieldValue::as_bool)
            .unwrap_or(false)
    }

    /// Feeds bytes the driver appended to [`Self::read_buffer`]; `now` is when they arrived.
    pub fn handle_read(&mut self, now: Instant) {
        if !self.read.is_empty() {
            self.received_since_tick = true;
        }
        if self.state == State::AwaitingHeader {
            match frame::check_protocol_header(&self.read) {
                ProtocolHeader::Incomplete => return,
                ProtocolHeader::Unsupported => {
                    self.write.extend_from_slice(&frame::PROTOCOL_HEADER);
                    self.read.clear();
                    self.finish(CloseReason::BadProtocolHeader);
                    return;
                }
                ProtocolHeader::Amqp091 => {
                    let _ = self.read.split_to(frame::PROTOCOL_HEADER.len());
                    self.send_start();
                }
            }
        }
        while matches!(
            self.state,
            State::AwaitingStartOk
                | State::AwaitingTuneOk
                | State::AwaitingOpen
                | State::Open
                | State::CloseSent
        ) {
            // While the caller judges credentials or a vhost, input waits in the buffer.
            match frame::decode_frame(&mut self.read, self.tuning.frame_max) {
                Ok(Some(f)) => self.handle_frame(f, now),
                Ok(None) => break,
                Err(e) => {
                    self.protocol_error(e.into(), now);
                    break;
                }
            }
        }
        if self.state == State::Finished {
            self.read.clear();
        } else if self.read.is_empty() && self.read.capacity() > 64 * 1024 {
            // Give memory back after a burst of large frames.
            self.read = BytesMut::with_capacity(512);
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hb = self
            .heartbeat
            .filter(|_| self.state == State::Open)
            .map(|h| h.next_send.min(h.next_recv_check));
        match (self.deadline, hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on the deadlines that have passed by `now`: handshake and close timeouts, heartbeat
    /// sending and the missed-heartbeat check.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Finished {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            match self.state {
                State::CloseSent => self.state = State::Finished,
                State::Open => {}
                _ => {
                    self.finish(CloseReason::HandshakeTimeout);
                    return;
                }
            }
        }
        if self.state != State::Open {
            return;
        }
        let Some(mut hb) = self.heartbeat else { return };
        if now >= hb.next_send {
            if !self.sent_since_tick {
                frame::encode_heartbeat(&mut self.write);
            }
            self.sent_since_tick = false;
            hb.next_send = now + hb.interval;
        }
        if now >= hb.next_recv_check {
            if self.received_since_tick {
                hb.missed = 0;
            } else {
                hb.missed += 1;
            }
            self.received_since_tick = false;
            hb.next_recv_check = now + hb.interval;
            if hb.missed >= 2 {
                self.heartbeat = None;
                self.finish(CloseReason::MissedHeartbeats);
                return;
            }
        }
        self.heartbeat = Some(hb);
    }

    /// Accepts the credentials of [`Event::Authenticate`]: sends `connection.tune`.
    pub fn accept_login(&mut self) {
        if self.state != State::Authenticating {
            return;
        }
        self.state = State::AwaitingTuneOk;
        self.send_connection_method(ConnectionTune {
            channel_max: self.config.channel_max,
            frame_max: self.config.frame_max,
            heartbeat: self.config.heartbeat,
        });
    }

    /// Refuses the credentials of [`Event::Authenticate`] with 403 ACCESS_REFUSED. As RabbitMQ
    /// does, the refusal is sent as `connection.close` only to clients that announced the
    /// `authentication_failure_close` capability; others see the socket close.
    pub fn refuse_login(&mut self, text: impl Into<String>, now: Instant) {
        if self.state != State::Authenticating {
            return;
        }
        let e = AmqpException::connection(ReplyCode::AccessRefused, text);
        if self.client_has_capability("authentication_failure_close") {
            self.close(e, now);
        } else {
            self.finish(CloseReason::ByServer(e));
        }
    }

    /// Accepts the virtual host of [`Event::OpenVhost`]: sends `connection.open-ok`.
    pub fn accept_vhost(&mut self, now: Instant) {
        if self.state != State::OpeningVhost {
            return;
        }
        self.state = State::Open;
        self.deadline = None;
        self.send_connection_method(ConnectionOpenOk::default());
        if self.tuning.heartbeat > 0 {
            let interval = Duration::from_secs(self.tuning.heartbeat.into());
            self.heartbeat = Some(Heartbeat {
                interval,
                next_send: now + interval,
                next_recv_check: now + interval,
                missed: 0,
            });
        }
        self.events.push_back(Event::Opened {
            tuning: self.tuning,
        });
        // Frames the client pipelined behind `connection.open` waited in the buffer.
        self.handle_read(now);
    }

    /// Sends a method on an open channel (or channel 0). Ignored on a channel that is not open,
    /// or once the connection is closing.
    pub fn send_method(&mut self, channel: u16, method: &Method) {
        if self.can_send(channel) {
            frame::encode_method(&mut self.write, channel, method);
            self.sent_since_tick = true;
        }
    }

    /// Sends a content-carrying method with its properties and body, the body split into frames
    /// that respect the negotiated `frame_max`. Ignored like [`Self::send_method`].
    pub fn send_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        if self.can_send(channel) {
            frame::encode_content(
                &mut self.write,
                channel,
                method,
                properties,
                body,
                self.tuning.frame_max,
            );
            self.sent_since_tick = true;
        }
    }

    /// Sends `connection.blocked` (once) if the client announced it understands it.
    pub fn block(&mut self, reason: &str) {
        if !self.blocked
            && self.state == State::Open
            && self.client_has_capability("connection.blocked")
        {
            self.blocked = true;
            self.send_connection_method(ConnectionBlocked {
                reason: ShortStr::from(reason.to_string()),
            });
        }
    }

    /// Sends `connection.unblocked` if `connection.blocked` was sent.
    pub fn unblock(&mut self) {
        if self.blocked && self.state == State::Open {
            self.blocked = false;
            self.send_connection_method(ConnectionUnblocked::default());
        }
    }

    /// Closes a channel with a (soft) exception: sends `channel.close` and drops everything the
    /// client sends on the channel until its `channel.close-ok`.
    pub fn close_channel(&mut self, channel: u16, exception: AmqpException) {
        if !self.is_channel_open(channel) || self.state != State::Open {
            return;
        }
        let close = ChannelClose {
            reply_code: exception.code.code(),
            reply_text: ShortStr::from(exception.reply_text()),
            class_id: exception.class_id,
            method_id: exception.method_id,
        };
        frame::encode_method(&mut self.write, channel, &close.into());
        self.sent_since_tick = true;
        if let Some(slot) = self.channel_slot(channel) {
            *slot = Some(Channel::Closing);
        }
        self.events.push_back(Event::ChannelClosed {
            channel,
            reason: ChannelCloseReason::ByServer(exception),
        });
    }

    /// Closes the connection with an exception (or 320 CONNECTION_FORCED for a shutdown): sends
    /// `connection.close` and waits for `close-ok` until the close timeout.
    pub fn close(&mut self, exception: AmqpException, now: Instant) {
        if matches!(self.state, State::CloseSent | State::Finished) {
            return;
        }
        if self.state == State::AwaitingHeader {
            self.finish(CloseReason::ByServer(exception));
            return;
        }
        let close = ConnectionClose {
            reply_code: exception.code.code(),
            reply_text: ShortStr::from(exception.reply_text()),
            class_id: exception.class_id,
            method_id: exception.method_id,
        };
        frame::encode_method(&mut self.write, 0, &close.into());
        self.sent_since_tick = true;
        self.state = State::CloseSent;
        self.deadline = Some(now + self.config.close_timeout);
        self.channels.clear();
        self.events.push_back(Event::Closed {
            reason: CloseReason::ByServer(exception),
        });
    }

    fn finish(&mut self, reason: CloseReason) {
        let already_closing = self.state == State::CloseSent;
        self.state = State::Finished;
        self.deadline = None;
        self.channels.clear();
        if !already_closing {
            self.events.push_back(Event::Closed { reason });
        }
    }

    fn can_send(&self, channel: u16) -> bool {
        match self.state {
            State::Open => channel == 0 || self.is_channel_open(channel),
            _ => false,
        }
    }

    fn send_connection_method(&mut self, m: impl Into<Method>) {
        frame::encode_method(&mut self.write, 0, &m.into());
        self.sent_since_tick = true;
    }

    fn send_start(&mut self) {
        let mechanisms: Vec<&str> = self.config.mechanisms.iter().map(|m| m.name()).collect();
        self.send_connection_method(ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: self.config.server_properties.clone(),
            mechanisms: LongStr::from(mechanisms.join(" ")),
            locales: LongStr::from_static("en_US"),
        });
        self.state = State::AwaitingStartOk;
    }

    fn channel(&self, channel: u16) -> Option<&Channel> {
        self.channels
            .get(usize::from(channel))
            .and_then(Option::as_ref)
    }

    fn channel_slot(&mut self, channel: u16) -> Option<&mut Option<Channel>> {
        self.channels.get_mut(usize::from(channel))
    }

    /// A connection-level error found in the client's input.
    fn protocol_error(&mut self, e: AmqpException, now: Instant) {
        let e = AmqpException {
            scope: Scope::Connection,
            ..e
        };
        self.close(e, now);
    }

    fn handle_frame(&mut self, f: Frame, now: Instant) {
        if self.state == State::CloseSent {
            // Only the close handshake matters now.
            match f {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_),
                } => self.state = State::Finished,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                } => {
                    frame::encode_method(&mut self.write, 0, &ConnectionCloseOk::default().into());
                    self.state = State::Finished;
                }
                _ => {}
            }
            return;
        }
        match f {
            Frame::Heartbeat => {}
            Frame::Method { channel: 0, method } => self.handle_connection_method(method, now),
            Frame::Method { channel, method } => self.handle_channel_method(channel, method, now),
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => self
                .protocol_error(
                    AmqpException::connection(
                        ReplyCode::UnexpectedFrame,
                        "content frame on channel 0",
                    ),
                    now,
                ),
            Frame::Header { channel, header } => self.handle_header(channel, header, now),
            Frame::Body { channel, payload } => self.handle_body(channel, payload, now),
        }
    }

    fn handle_connection_method(&mut self, method: Method, now: Instant) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let got = method.name();
        let unexpected = |name: &str| {
            AmqpException::connection(
                ReplyCode::CommandInvalid,
                format!("expected '{name}', got '{got}'"),
            )
            .caused_by(class_id, method_id)
        };
        match (self.state, method) {
            (State::AwaitingStartOk, Method::ConnectionStartOk(m)) => {
                let Some(mechanism) = self
                    .config
                    .mechanisms
                    .iter()
                    .copied()
                    .find(|x| m.mechanism == x.name())
                else {
                    let text = format!("unknown authentication mechanism '{}'", m.mechanism);
                    let e = AmqpException::connection(ReplyCode::CommandInvalid, text)
                        .caused_by(class_id, method_id);
                    return self.close(e, now);
                };
                self.client_properties = m.client_properties;
                match parse_credentials(mechanism, m.response.as_shared()) {
                    Some((username, password)) => {
                        self.state = State::Authenticating;
                        self.events.push_back(Event::Authenticate {
                            mechanism,
                            username,
                            password,
                            client_properties: self.client_properties.clone(),
                        });
                    }
                    None => {
                        let text =
                            format!("{} login refused: malformed response", mechanism.name());
                        self.state = State::Authenticating;
                        self.refuse_login(text, now);
                    }
                }
            }
            (State::AwaitingTuneOk, Method::ConnectionTuneOk(m)) => {
                let server = &self.config;
                let frame_max = if m.frame_max == 0 {
                    server.frame_max
                } else {
                    m.frame_max
                };
                let channel_max = if m.channel_max == 0 {
                    server.channel_max
                } else {
                    m.channel_max
                };
                let error = if frame_max < FRAME_MIN_SIZE {
                    Some(format!("frame_max={frame_max} < {FRAME_MIN_SIZE} min size"))
                } else if server.frame_max != 0 && frame_max > server.frame_max {
                    Some(format!(
                        "frame_max={frame_max} > {} max size",
                        server.frame_max
                    ))
                } else if server.channel_max != 0 && channel_max > server.channel_max {
                    Some(format!(
                        "channel_max={channel_max} > {} max",
                        server.channel_max
                    ))
                } else {
                    None
                };
                if let Some(text) = error {
                    let e = AmqpException::connection(ReplyCode::NotAllowed, text)
                        .caused_by(class_id, method_id);
                    return self.close(e, now);
                }
                self.tuning = Tuning {
                    channel_max,
                    frame_max,
                    heartbeat: m.heartbeat,
                };
                self.state = State::AwaitingOpen;
            }
            (State::AwaitingOpen, Method::ConnectionOpen(m)) => {
                self.state = State::OpeningVhost;
                self.events.push_back(Event::OpenVhost {
                    vhost: m.virtual_host.to_string(),
                });
            }
            (State::Open, Method::ConnectionClose(m)) => {
                frame::encode_method(&mut self.write, 0, &ConnectionCloseOk::default().into());
                self.finish(CloseReason::ByClient {
                    code: m.reply_code,
                    text: m.reply_text.to_string(),
                });
            }
            (State::Open, Method::ConnectionUpdateSecret(m)) => {
                self.events.push_back(Event::UpdateSecret {
                    new_secret: m.new_secret,
                    reason: m.reason,
                });
            }
            (
                State::AwaitingStartOk | State::AwaitingTuneOk | State::AwaitingOpen,
                Method::ConnectionClose(m),
            ) => {
                frame::encode_method(&mut self.write, 0, &ConnectionCloseOk::default().into());
                self.finish(CloseReason::ByClient {
                    code: m.reply_code,
                    text: m.reply_text.to_string(),
                });
            }
            (State::AwaitingStartOk, _) => {
                self.protocol_error(unexpected("connection.start-ok"), now)
            }
            (State::AwaitingTuneOk, _) => {
                self.protocol_error(unexpected("connection.tune-ok"), now)
            }
            (State::AwaitingOpen, _) => self.protocol_error(unexpected("connection.open"), now),
            (_, method) => {
                let text = format!("unexpected method on channel 0: '{}'", method.name());
                self.protocol_error(
                    AmqpException::connection(ReplyCode::CommandInvalid, text)
                        .caused_by(class_id, method_id),
                    now,
                )
            }
        }
    }

    fn handle_channel_method(&mut self, channel: u16, method: Method, now: Instant) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        if self.state != State::Open {
            let text = format!("channel {channel} used before the connection was opened");
            return self.protocol_error(
                AmqpException::connection(ReplyCode::ChannelError, text)
                    .caused_by(class_id, method_id),
                now,
            );
        }
        if channel > self.tuning.channel_max {
            let text = format!(
                "channel {channel} is above channel_max {}",
                self.tuning.channel_max
            );
            return self.protocol_error(
                AmqpException::connection(ReplyCode::ChannelError, text)
                    .caused_by(class_id, method_id),
                now,
            );
        }
        if class_id == 10 {
            let text = format!("connection method '{}' on channel {channel}", method.name());
            return self.protocol_error(
                AmqpException::connection(ReplyCode::CommandInvalid, text)
                    .caused_by(class_id, method_id),
                now,
            );
        }
        match (self.channel(channel), method) {
            (None, Method::ChannelOpen(_)) => {
                let idx = usize::from(channel);
                if self.channels.len() <= idx {
                    self.channels.resize_with(idx + 1, || None);
                }
                if let Some(slot) = self.channel_slot(channel) {
                    *slot = Some(Channel::Open(Assembly::Idle));
                }
                frame::encode_method(&mut self.write, channel, &ChannelOpenOk::default().into());
                self.sent_since_tick = true;
                self.events.push_back(Event::ChannelOpened { channel });
            }
            (None, method) => {
                let text = format!(
                    "expected 'channel.open' on channel {channel}, got '{}'",
                    method.name()
                );
                self.protocol_error(
                    AmqpException::connection(ReplyCode::ChannelError, text)
                        .caused_by(class_id, method_id),
                    now,
                )
            }
            (Some(Channel::Closing), Method::ChannelCloseOk(_)) => self.free_channel(channel),
            (Some(Channel::Closing), Method::ChannelClose(_)) => {
                // Both sides closed at once: answer, and the channel is done.
                frame::encode_method(&mut self.write, channel, &ChannelCloseOk::default().into());
                self.free_channel(channel);
            }
            (Some(Channel::Closing), _) => {}
            (Some(Channel::Open(_)), Method::ChannelOpen(_)) => {
                let text = format!("second 'channel.open' seen on channel {channel}");
                self.protocol_error(
                    AmqpException::connection(ReplyCode::ChannelError, text)
                        .caused_by(class_id, method_id),
                    now,
                )
            }
            (Some(Channel::Open(Assembly::Idle)), Method::ChannelClose(m)) => {
                frame::encode_method(&mut self.write, channel, &ChannelCloseOk::default().into());
                self.sent_since_tick = true;
                self.free_channel(channel);
                self.events.push_back(Event::ChannelClosed {
                    channel,
                    reason: ChannelCloseReason::ByClient {
                        code: m.reply_code,
                        text: m.reply_text.to_string(),
                    },
                });
            }
            (Some(Channel::Open(Assembly::Idle)), Method::ChannelCloseOk(_)) => {
                let text = "unexpected 'channel.close-ok' on an open channel".to_string();
                self.protocol_error(
                    AmqpException::connection(ReplyCode::ChannelError, text)
                        .caused_by(class_id, method_id),
                    now,
                )
            }
            (Some(Channel::Open(Assembly::Idle)), method) => {
                if method.has_content() {
                    self.set_assembly(channel, Assembly::Header { method });
                } else {
                    self.events.push_back(Event::Command {
                        channel,
                        method,
                        content: None,
                    });
                }
            }
            (Some(Channel::Open(Assembly::Header { method: pending })), _) => {
                let text = format!(
                    "expected content header for class {}, got non content header frame instead",
                    pending.class_id()
                );
                self.protocol_error(
                    AmqpException::connection(ReplyCode::UnexpectedFrame, text),
                    now,
                )
            }
            (Some(Channel::Open(Assembly::Body { .. })), _) => self.protocol_error(
                AmqpException::connection(
                    ReplyCode::UnexpectedFrame,
                    "expected content body, got non content body frame instead",
                ),
                now,
            ),
        }
    }

    fn handle_header(&mut self, channel: u16, header: ContentHeader, now: Instant) {
        let max_message_size = self.config.max_message_size;
        let Some(Some(Channel::Open(assembly))) = self.channels.get_mut(usize::from(channel))
        else {
            if matches!(self.channel(channel), Some(Channel::Closing)) {
                return;
            }
            let text = format!("content header on channel {channel}, which is not open");
            return self.protocol_error(
                AmqpException::connection(ReplyCode::ChannelError, text),
                now,
            );
        };
        let method = match std::mem::replace(assembly, Assembly::Idle) {
            Assembly::Header { method } => method,
            Assembly::Idle => {
                return self.protocol_error(
                    AmqpException::connection(
                        ReplyCode::UnexpectedFrame,
                        "expected method frame, got non method frame instead",
                    ),
                    now,
                );
            }
            Assembly::Body { .. } => {
                return self.protocol_error(
                    AmqpException::connection(
                        ReplyCode::UnexpectedFrame,
                        "expected content body, got non content body frame instead",
                    ),
                    now,
                );
            }
        };
        if header.class_id != method.class_id() {
            let text = format!(
                "content header class {} does not match method class {}",
                header.class_id,
                method.class_id()
            );
            return self
                .protocol_error(AmqpException::connection(ReplyCode::FrameError, text), now);
        }
        if header.body_size > max_message_size {
            let text = format!(
                "message size {} is larger than configured max size {max_message_size}",
                header.body_size
            );
            let e = AmqpException::channel(ReplyCode::PreconditionFailed, text)
                .caused_by(method.class_id(), method.method_id());
            return self.close_channel(channel, e);
        }
        if header.body_size == 0 {
            self.events.push_back(Event::Command {
                channel,
                method,
                content: Some(Content {
                    header,
                    body: Bytes::new(),
                }),
            });
        } else {
            let remaining = header.body_size;
            *assembly = Assembly::Body {
                method,
                header,
                body: BodyParts::Empty,
                remaining,
            };
        }
    }

    fn handle_body(&mut self, channel: u16, payload: Bytes, now: Instant) {
        let Some(Some(Channel::Open(assembly))) = self.channels.get_mut(usize::from(channel))
        else {
            if matches!(self.channel(channel), Some(Channel::Closing)) {
                return;
            }
            let text = format!("content body on channel {channel}, which is not open");
            return self.protocol_error(
                AmqpException::connection(ReplyCode::ChannelError, text),
                now,
            );
        };
        let Assembly::Body {
            remaining, body, ..
        } = assembly
        else {
            let text = match assembly {
                Assembly::Header { method } => format!(
                    "expected content header for class {}, got non content header frame instead",
                    method.class_id()
                ),
                _ => "expected method frame, got non method frame instead".into(),
            };
            return self.protocol_error(
                AmqpException::connection(ReplyCode::UnexpectedFrame, text),
                now,
            );
        };
        let len = payload.len() as u64;
        if len > *remaining {
            let text = format!(
                "content body of {len} octets exceeds the {} remaining of body_size",
                *remaining
            );
            return self
                .protocol_error(AmqpException::connection(ReplyCode::FrameError, text), now);
        }
        *remaining -= len;
        body.push(payload);
        if *remaining == 0
            && let Assembly::Body {
                method,
                header,
                body,
                ..
            } = std::mem::replace(assembly, Assembly::Idle)
        {
            self.events.push_back(Event::Command {
                channel,
                method,
                content: Some(Content {
                    header,
                    body: body.finish(),
                }),
            });
        }
    }

    fn set_assembly(&mut self, channel: u16, a: Assembly) {
        if let Some(Some(Channel::Open(slot))) = self.channels.get_mut(usize::from(channel)) {
            *slot = a;
        }
    }

    fn free_channel(&mut self, channel: u16) {
        if let Some(slot) = self.channel_slot(channel) {
            *slot = None;
        }
        while matches!(self.channels.last(), Some(None)) {
            self.channels.pop();
        }
    }
}

/// Extracts user name and password from a `start-ok` response.
fn parse_credentials(mechanism: Mechanism, response: &Bytes) -> Option<(String, String)> {
    match mechanism {
        Mechanism::Plain => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|&b| b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            if parts.next().is_some() {
                return None;
            }
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        Mechanism::AmqPlain => {
            let table = FieldTable::decode_entries(response).ok()?;
            let user = table.get("LOGIN")?.as_str()?.to_string();
            let pass = table.get("PASSWORD")?.as_str()?.to_string();
            Some((user, pass))
        }
    }
}
