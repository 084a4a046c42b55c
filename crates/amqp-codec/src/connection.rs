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
//! 2. drain [`ServerConnection::poll_event`] and act on each event before polling the next:
//!    frames are decoded one at a time as events are polled, so whatever the caller does in
//!    answer to a command (a reply, a channel or connection close) takes effect before the
//!    next frame is read, exactly in the client's order;
//! 3. write out [`ServerConnection::write_buffer`] (advancing it by what was written);
//! 4. sleep until the socket is ready or [`ServerConnection::poll_timeout`], then call
//!    [`ServerConnection::handle_timeout`];
//! 5. read again only while [`ServerConnection::wants_read`]; stop once
//!    [`ServerConnection::is_finished`] and the write buffer is flushed.
//!
//! Time is always an argument: nothing here reads the clock.

use crate::error::{ErlangBinary, snippet_label};
use crate::frame::{self, ProtocolHeader};
use crate::{
    AmqpException, BasicProperties, ChannelClose, ChannelCloseOk, ChannelOpenOk, CodecError,
    ConnectionBlocked, ConnectionClose, ConnectionCloseOk, ConnectionOpenOk, ConnectionStart,
    ConnectionTune, ConnectionUnblocked, ContentHeader, FieldTable, FieldValue, Frame, LongStr,
    Method, ReplyCode, Scope, ShortStr,
};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The smallest `frame_max` a peer may negotiate, and the limit in force before tuning.
///
/// The 0-9-1 specification's value, which RabbitMQ 3.x enforces. RabbitMQ's spec file has said
/// 8192 since 4.1; we keep accepting 4096 so that clients configured for the minimum (pika's
/// `FRAME_MIN_SIZE`) keep working.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Server-side settings of the handshake.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `server-properties` table of `connection.start`.
    pub server_properties: FieldTable,
    /// The mechanisms offered, in order of preference.
    pub mechanisms: Vec<Mechanism>,
    /// How many channels a client may have open at once (`channel_max` in `connection.tune`;
    /// RabbitMQ limits the count, not the channel numbers).
    pub channel_max: u16,
    /// The largest frame payload the server accepts (`frame_max` in `connection.tune`; as in
    /// RabbitMQ, the 8 octets of framing come on top).
    pub frame_max: u32,
    /// The heartbeat interval the server proposes, in seconds (0: none).
    pub heartbeat: u16,
    /// How long a client may take from the protocol header to `connection.open`.
    pub handshake_timeout: Duration,
    /// How long to wait for `connection.close-ok` after sending `connection.close`. As in
    /// RabbitMQ, a negotiated heartbeat interval shorter than this replaces it.
    pub close_timeout: Duration,
    /// How long a connection that failed before `connection.open` is held, silent, before it
    /// is dropped. RabbitMQ makes failed handshakes wait so that they cannot be retried in a
    /// tight loop; it sends no `connection.close` then, because clients do not expect one.
    pub silent_close_delay: Duration,
    /// How many octets of output may wait in the write buffer before [`ServerConnection::wants_read`]
    /// says to stop reading: a client that does not read its socket cannot make the server
    /// buffer without bound by sending requests that have replies.
    pub max_write_backlog: usize,
    /// The largest message body accepted; a larger content header closes the channel with
    /// 406 PRECONDITION_FAILED (RabbitMQ's `max_message_size`).
    pub max_message_size: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            server_properties: server_properties("Warren", env!("CARGO_PKG_VERSION"), "warren"),
            mechanisms: vec![Mechanism::AmqPlain, Mechanism::Plain],
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
            silent_close_delay: Duration::from_secs(3),
            max_write_backlog: 1024 * 1024,
            max_message_size: 128 * 1024 * 1024,
        }
    }
}

/// The capabilities RabbitMQ announces in `server-properties`, same keys, same order. The
/// codec implements the protocol side of each (e.g. `connection.blocked`,
/// `authentication_failure_close`); a broker that announces them must implement the rest
/// (confirms, consumer priorities, direct reply-to, ...).
pub const CAPABILITIES: &[&str] = &[
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "consumer_priorities",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
];

/// A `server-properties` table shaped like RabbitMQ's: `capabilities` (every entry of
/// [`CAPABILITIES`] set to true), `cluster_name`, `copyright`, `information`, `platform`,
/// `product` and `version`. Clients such as pika and the Java client read the capabilities to
/// decide which extensions they may use.
pub fn server_properties(product: &str, version: &str, cluster_name: &str) -> FieldTable {
    let capabilities: FieldTable = CAPABILITIES
        .iter()
        .map(|c| (ShortStr::from(c.to_string()), true))
        .collect();
    [
        ("capabilities", FieldValue::Table(capabilities)),
        ("cluster_name", cluster_name.to_string().into()),
        ("copyright", "Copyright (c) The Warren developers".into()),
        ("information", "Licensed under MIT or Apache-2.0".into()),
        ("platform", "Rust".into()),
        ("product", product.to_string().into()),
        ("version", version.to_string().into()),
    ]
    .into_iter()
    .collect()
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
    /// How many channels may be open at once.
    pub channel_max: u16,
    /// Largest frame payload (RabbitMQ allows the 8 octets of framing on top).
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
///
/// Commands carry their decoded properties inline: boxing them would cost an allocation per
/// message on the publish path, which is worth more than the moves of a larger enum.
#[allow(clippy::large_enum_variant)]
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

/// The connection's phase, named as RabbitMQ names them where they match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 8-octet protocol header.
    AwaitingHeader,
    /// `connection.start` sent ("starting").
    AwaitingStartOk,
    /// `Event::Authenticate` emitted; waiting for the caller's verdict.
    Authenticating,
    /// `connection.tune` sent ("tuning").
    AwaitingTuneOk,
    /// Tuned; waiting for `connection.open` ("opening").
    AwaitingOpen,
    /// `Event::OpenVhost` emitted; waiting for the caller's verdict ("opening").
    OpeningVhost,
    /// Fully open ("running").
    Open,
    /// We sent `connection.close`; waiting for `close-ok` until the deadline ("closing").
    CloseSent,
    /// The client closed and we answered `close-ok`: waiting, input discarded, for the client
    /// to close the socket, until the deadline (RabbitMQ leaves the socket to the client too).
    CloseOkSent,
    /// Failed: holding the socket, reading nothing, until the deadline.
    SilentClose,
    /// Done: flush the write buffer and drop the socket.
    Finished,
}

impl State {
    /// Whether an error in this phase is answered with silence rather than `connection.close`
    /// (RabbitMQ's handshake phases before `connection.open`).
    fn fails_silently(self) -> bool {
        matches!(
            self,
            State::AwaitingHeader
                | State::AwaitingStartOk
                | State::Authenticating
                | State::AwaitingTuneOk
        )
    }

    /// RabbitMQ's name for the phase, as it appears in "unexpected method" texts.
    fn rabbit_name(self) -> &'static str {
        match self {
            State::AwaitingHeader | State::AwaitingStartOk => "starting",
            State::Authenticating => "securing",
            State::AwaitingTuneOk => "tuning",
            State::AwaitingOpen | State::OpeningVhost => "opening",
            State::Open => "running",
            State::CloseSent | State::CloseOkSent | State::SilentClose | State::Finished => {
                "closing"
            }
        }
    }
}

/// Content assembly on one channel.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Assembly {
    /// Expecting a method frame.
    Idle,
    /// A content-carrying method arrived; expecting its header.
    Header { method: Method },
    /// Expecting `remaining` more body octets.
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

/// One open channel.
#[derive(Debug)]
struct Channel {
    assembly: Assembly,
    /// We sent `channel.close`: commands are assembled (framing rules still hold) but dropped,
    /// except `channel.close` and `channel.close-ok`.
    closing: bool,
}

/// The server side of one AMQP 0-9-1 connection, without I/O.
#[derive(Debug)]
pub struct ServerConnection {
    /// Shared by every connection of a server.
    config: Arc<ServerConfig>,
    state: State,
    read: BytesMut,
    write: BytesMut,
    events: VecDeque<Event>,
    /// Open channels by number: compact whatever numbers a client picks, and opening or
    /// closing one moves no other. Boxed: a channel mid-assembly holds a method and a header,
    /// and a map node holds eleven entries, so an idle connection would otherwise carry
    /// kilobytes of empty slots.
    channels: BTreeMap<u16, Box<Channel>>,
    tuning: Tuning,
    client_properties: FieldTable,
    mechanism: Mechanism,
    /// Deadline of the handshake, of the close handshake, or of a silent close.
    deadline: Option<Instant>,
    heartbeat: Option<Heartbeat>,
    sent_since_tick: bool,
    received_since_tick: bool,
    blocked: bool,
    /// The caller stopped reading the socket on purpose (flow control, a resource alarm): no
    /// heartbeat can be missed meanwhile, as in RabbitMQ.
    reading_paused: bool,
    /// The latest time the caller gave: frames decoded in [`Self::poll_event`] are handled as
    /// of then.
    now: Instant,
    /// Octets in the read buffer after the last decoding step: anything beyond is new input.
    seen: usize,
}

/// Heartbeat timers, as RabbitMQ runs them: a sender that checks every half interval whether
/// anything was sent (and sends a heartbeat if not), and a receiver that checks every interval
/// whether anything arrived and gives up after two empty checks in a row.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    interval: Duration,
    next_send: Instant,
    next_recv_check: Instant,
    /// Consecutive receive checks that found nothing.
    missed: u8,
    /// No send check has run yet: the first one sends a heartbeat whatever was sent before
    /// it, as RabbitMQ's sender does (it starts from an octet count of 0).
    first_send: bool,
}

impl ServerConnection {
    /// A new connection whose socket was accepted at `now`.
    pub fn new(config: impl Into<Arc<ServerConfig>>, now: Instant) -> Self {
        let config = config.into();
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
            channels: BTreeMap::new(),
            tuning,
            client_properties: FieldTable::new(),
            mechanism: Mechanism::Plain,
            heartbeat: None,
            sent_since_tick: false,
            received_since_tick: false,
            blocked: false,
            reading_paused: false,
            now,
            seen: 0,
        }
    }

    /// Where the driver puts bytes read from the socket before calling [`Self::handle_read`].
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read
    }

    /// Bytes waiting to be written to the socket. The driver writes from the front and
    /// advances the buffer by what it wrote.
    pub fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Whether the driver should read from the socket now. False while a login or virtual
    /// host awaits the caller's verdict (the client's pipelined input waits in the socket, not
    /// in memory), while more than [`ServerConfig::max_write_backlog`] octets wait to be
    /// written, while a failed connection is held silent, and once finished.
    pub fn wants_read(&self) -> bool {
        self.write.len() < self.config.max_write_backlog
            && !matches!(
                self.state,
                State::Authenticating | State::OpeningVhost | State::SilentClose | State::Finished
            )
    }

    /// The next event for the caller. Frames are decoded here, one at a time, only when no
    /// event is pending: act on each event before polling the next.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if !self.decode_next() {
                return None;
            }
        }
    }

    /// Decodes and handles the next complete frame, if the phase reads frames now. Returns
    /// whether anything was done.
    fn decode_next(&mut self) -> bool {
        // While the caller judges credentials or a vhost, input waits in the buffer.
        if !matches!(
            self.state,
            State::AwaitingStartOk
                | State::AwaitingTuneOk
                | State::AwaitingOpen
                | State::Open
                | State::CloseSent
        ) {
            return false;
        }
        let now = self.now;
        let progress = match frame::decode_frame(&mut self.read, self.tuning.frame_max) {
            Ok(Some(f)) => {
                self.handle_frame(f, now);
                true
            }
            Ok(None) => false,
            // A non-fatal error consumed the bad frame; a fatal one ended reading.
            Err(e) => {
                self.decode_error(e, now);
                true
            }
        };
        if matches!(self.state, State::SilentClose | State::Finished) {
            self.read.clear();
        } else if self.read.is_empty() && self.read.capacity() > 64 * 1024 {
            // Give memory back after a burst of large frames.
            self.read = BytesMut::with_capacity(512);
        }
        self.seen = self.read.len();
        progress
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

    /// Whether `channel` is open for commands (open and not closing).
    pub fn is_channel_open(&self, channel: u16) -> bool {
        self.channel(channel).is_some_and(|c| !c.closing)
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

    /// Tells the connection that the driver appended bytes to [`Self::read_buffer`]; `now` is
    /// when they arrived. The frames in them are decoded as [`Self::poll_event`] is called.
    pub fn handle_read(&mut self, now: Instant) {
        self.now = now;
        if matches!(
            self.state,
            State::SilentClose | State::CloseOkSent | State::Finished
        ) {
            self.read.clear();
            self.seen = 0;
            return;
        }
        if self.read.len() > self.seen {
            self.received_since_tick = true;
        }
        if self.state == State::AwaitingHeader {
            match frame::check_protocol_header(&self.read) {
                ProtocolHeader::Incomplete => {}
                ProtocolHeader::Unsupported => {
                    // RabbitMQ answers with the header it speaks and closes at once.
                    self.write.extend_from_slice(&frame::PROTOCOL_HEADER);
                    self.read.clear();
                    self.finish(CloseReason::BadProtocolHeader);
                }
                ProtocolHeader::Amqp091 => {
                    let _ = self.read.split_to(frame::PROTOCOL_HEADER.len());
                    self.send_start();
                }
            }
        }
        self.seen = self.read.len();
        self.shrink_idle_buffers();
    }

    /// Gives memory back once a burst is over: an idle connection should cost a few KiB.
    fn shrink_idle_buffers(&mut self) {
        if self.write.is_empty() && self.write.capacity() > 64 * 1024 {
            self.write = BytesMut::with_capacity(512);
        }
        if self.events.is_empty() && self.events.capacity() > 64 {
            self.events = VecDeque::new();
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hb = self.heartbeat.map(|h| h.next_send.min(h.next_recv_check));
        match (self.deadline, hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on the deadlines that have passed by `now`: handshake, close and silent-close
    /// timeouts, heartbeat sending and the missed-heartbeat check.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.shrink_idle_buffers();
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            match self.state {
                State::CloseSent | State::CloseOkSent | State::SilentClose => self.end(),
                State::Open | State::Finished => {}
                _ => return self.finish(CloseReason::HandshakeTimeout),
            }
        }
        let Some(mut hb) = self.heartbeat else { return };
        if now >= hb.next_recv_check {
            hb.missed = if self.received_since_tick || self.reading_paused {
                0
            } else {
                hb.missed + 1
            };
            self.received_since_tick = false;
            hb.next_recv_check = now + hb.interval;
            if hb.missed >= 2 {
                // RabbitMQ closes the socket without a word.
                return self.finish(CloseReason::MissedHeartbeats);
            }
        }
        if now >= hb.next_send {
            if !self.sent_since_tick || hb.first_send {
                frame::encode_heartbeat(&mut self.write);
            }
            hb.first_send = false;
            self.sent_since_tick = false;
            hb.next_send = now + hb.interval / 2;
        }
        self.heartbeat = Some(hb);
    }

    /// Accepts the credentials of [`Event::Authenticate`]: sends `connection.tune`. Frames the
    /// client pipelined behind `start-ok` come out of the next [`Self::poll_event`] calls.
    pub fn accept_login(&mut self, now: Instant) {
        self.now = now;
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

    /// Refuses the credentials of [`Event::Authenticate`], as RabbitMQ does: clients that
    /// announced the `authentication_failure_close` capability get `connection.close` with
    /// 403 ACCESS_REFUSED "Login was refused using authentication mechanism PLAIN. For details
    /// see the broker logfile."; all are then held silent and dropped, without waiting for a
    /// `close-ok`.
    pub fn refuse_login(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::Authenticating {
            return;
        }
        let text = format!(
            "Login was refused using authentication mechanism {}. For details see the broker logfile.",
            self.mechanism.name()
        );
        let e = AmqpException::connection(ReplyCode::AccessRefused, text);
        if self.client_has_capability("authentication_failure_close") {
            self.send_close_frame(&e);
        }
        self.silent_close(e, now);
    }

    /// Accepts the virtual host of [`Event::OpenVhost`]: sends `connection.open-ok`.
    pub fn accept_vhost(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::OpeningVhost {
            return;
        }
        self.state = State::Open;
        self.deadline = None;
        self.send_connection_method(ConnectionOpenOk::default());
        self.events.push_back(Event::Opened {
            tuning: self.tuning,
        });
    }

    /// Sends a method on an open channel (or channel 0). Ignored on a channel that is not open
    /// or is closing, and once the connection is closing.
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

    /// [`Self::send_content`] with properties already encoded (see
    /// [`frame::encode_content_raw`]).
    pub fn send_content_raw(
        &mut self,
        channel: u16,
        method: &Method,
        encoded_properties: &[u8],
        body: &[u8],
    ) {
        if self.can_send(channel) {
            frame::encode_content_raw(
                &mut self.write,
                channel,
                method,
                encoded_properties,
                body,
                self.tuning.frame_max,
            );
            self.sent_since_tick = true;
        }
    }

    /// Tells the connection that the caller stops (true) or resumes (false) reading the socket
    /// on purpose, for flow control or a resource alarm: while paused, silence from the client
    /// is not a missed heartbeat (RabbitMQ suspends the check while a connection is blocked).
    pub fn pause_reading(&mut self, paused: bool) {
        self.reading_paused = paused;
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

    /// Closes a channel with a (soft) exception: sends `channel.close` and drops the client's
    /// commands on the channel until its `channel.close-ok`.
    ///
    /// A connection-scope exception closes the whole connection instead.
    pub fn close_channel(&mut self, channel: u16, exception: AmqpException) {
        if exception.scope == Scope::Connection {
            return self.close(exception, self.now);
        }
        if self.state != State::Open || !self.is_channel_open(channel) {
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
        if let Some(c) = self.channel_mut(channel) {
            c.closing = true;
        }
        self.events.push_back(Event::ChannelClosed {
            channel,
            reason: ChannelCloseReason::ByServer(exception),
        });
    }

    /// Closes the connection with an exception (or 320 CONNECTION_FORCED for a shutdown): sends
    /// `connection.close` and waits for `close-ok` until the close timeout. Before
    /// `connection.open`, where RabbitMQ sends nothing, the connection is held silent instead.
    pub fn close(&mut self, exception: AmqpException, now: Instant) {
        self.now = now;
        let exception = AmqpException {
            scope: Scope::Connection,
            ..exception
        };
        match self.state {
            State::CloseSent | State::CloseOkSent | State::SilentClose | State::Finished => {}
            s if s.fails_silently() => self.silent_close(exception, now),
            _ => {
                self.send_close_frame(&exception);
                self.state = State::CloseSent;
                let hb = Duration::from_secs(self.tuning.heartbeat.into());
                let wait = if hb > Duration::ZERO && hb < self.config.close_timeout {
                    hb
                } else {
                    self.config.close_timeout
                };
                self.deadline = Some(now + wait);
                self.stop(CloseReason::ByServer(exception));
            }
        }
    }

    fn send_close_frame(&mut self, exception: &AmqpException) {
        let close = ConnectionClose {
            reply_code: exception.code.code(),
            reply_text: ShortStr::from(exception.reply_text()),
            class_id: exception.class_id,
            method_id: exception.method_id,
        };
        frame::encode_method(&mut self.write, 0, &close.into());
        self.sent_since_tick = true;
    }

    /// Holds the connection silent until the silent-close delay, then finishes.
    fn silent_close(&mut self, exception: AmqpException, now: Instant) {
        self.state = State::SilentClose;
        self.deadline = Some(now + self.config.silent_close_delay);
        self.read.clear();
        self.stop(CloseReason::ByServer(exception));
    }

    /// Stops and finishes at once (from a phase that had not stopped yet).
    fn finish(&mut self, reason: CloseReason) {
        self.stop(reason);
        self.end();
    }

    /// Finishes a connection that already stopped (closing, or held silent).
    fn end(&mut self) {
        self.state = State::Finished;
        self.deadline = None;
        self.read.clear();
    }

    /// The connection stops being usable: no channels, no heartbeats, one `Closed` event.
    fn stop(&mut self, reason: CloseReason) {
        self.channels.clear();
        self.heartbeat = None;
        // Nothing queued before the end is of use to the caller any more.
        self.events.clear();
        self.events.push_back(Event::Closed { reason });
    }

    fn can_send(&self, channel: u16) -> bool {
        self.state == State::Open && (channel == 0 || self.is_channel_open(channel))
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
        self.channels.get(&channel).map(|c| &**c)
    }

    fn channel_mut(&mut self, channel: u16) -> Option<&mut Channel> {
        self.channels.get_mut(&channel).map(|c| &mut **c)
    }

    fn free_channel(&mut self, channel: u16) {
        self.channels.remove(&channel);
    }

    /// A connection-level error found in the client's input: `connection.close` once open (or
    /// opening), silence during the handshake.
    fn protocol_error(&mut self, e: AmqpException, now: Instant) {
        self.close(e, now);
    }

    fn decode_error(&mut self, e: CodecError, now: Instant) {
        match self.state {
            // Closing already: nothing more to say; a stream out of step ends it.
            State::CloseSent => {
                if e.is_fatal() {
                    self.end();
                }
            }
            _ if e.is_fatal() => {
                // RabbitMQ's fatal frame error: say why (once past the handshake), then hold
                // the socket silent and drop it; nothing more can be read.
                let fails_silently = self.state.fails_silently();
                let exception = AmqpException::from(e);
                if !fails_silently {
                    self.send_close_frame(&exception);
                }
                self.silent_close(exception, now);
            }
            _ => {
                let exception = match e {
                    CodecError::ContentClass { channel, class_id } => {
                        self.content_class_error(channel, class_id)
                    }
                    e => AmqpException::from(e),
                };
                self.protocol_error(exception, now);
            }
        }
    }

    /// A content header for another class than `basic` (which the decoder cannot read):
    /// RabbitMQ's assembler's answer, depending on what the channel expects.
    fn content_class_error(&self, channel: u16, class_id: u16) -> AmqpException {
        not_expected(self.channel(channel).map(|c| &c.assembly), Some(class_id))
    }

    fn handle_frame(&mut self, f: Frame, now: Instant) {
        match (self.state, f) {
            (
                State::CloseSent,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_),
                },
            ) => {
                self.end();
            }
            (
                State::CloseSent,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                },
            ) => {
                // Both sides closing: answer, and keep waiting for the close-ok to ours.
                frame::encode_method(&mut self.write, 0, &ConnectionCloseOk::default().into());
            }
            (State::CloseSent, _) | (_, Frame::Heartbeat) => {}
            (_, Frame::Method { channel: 0, method }) => self.handle_connection_method(method, now),
            (State::Open, Frame::Method { channel, method }) => {
                self.handle_channel_method(channel, method, now)
            }
            (State::Open, Frame::Header { channel, header }) if channel != 0 => {
                self.handle_header(channel, header, now)
            }
            (State::Open, Frame::Body { channel, payload }) if channel != 0 => {
                self.handle_body(channel, payload, now)
            }
            // Content on channel 0, or any channel frame before the connection is open.
            (_, f) => {
                let e = AmqpException::connection(ReplyCode::UnexpectedFrame, frame_snippet(&f));
                self.protocol_error(e, now)
            }
        }
    }

    fn handle_connection_method(&mut self, method: Method, now: Instant) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        match (self.state, method) {
            (State::AwaitingStartOk, Method::ConnectionStartOk(m)) => {
                self.client_properties = m.client_properties;
                let Some(mechanism) = self
                    .config
                    .mechanisms
                    .iter()
                    .copied()
                    .find(|x| m.mechanism == x.name())
                else {
                    let text =
                        format!("unknown/invalid authentication mechanism '{}'", m.mechanism);
                    let e = AmqpException::connection(ReplyCode::CommandInvalid, text)
                        .caused_by(class_id, method_id);
                    return self.silent_close(e, now);
                };
                self.mechanism = mechanism;
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
                        let text = format!("{} response invalid", mechanism.name());
                        let e = AmqpException::connection(ReplyCode::SyntaxError, text)
                            .caused_by(class_id, method_id);
                        self.silent_close(e, now);
                    }
                }
            }
            (State::AwaitingTuneOk, Method::ConnectionTuneOk(m)) => {
                let checks = [
                    negotiate(
                        "frame_max",
                        m.frame_max,
                        FRAME_MIN_SIZE,
                        self.config.frame_max,
                    ),
                    negotiate(
                        "channel_max",
                        m.channel_max.into(),
                        1,
                        self.config.channel_max.into(),
                    ),
                ];
                if let Some(text) = checks.into_iter().flatten().next() {
                    // RabbitMQ names `connection.tune`; in the tuning phase nothing is sent.
                    let e =
                        AmqpException::connection(ReplyCode::NotAllowed, text).caused_by(10, 30);
                    return self.silent_close(e, now);
                }
                self.tuning = Tuning {
                    channel_max: m.channel_max,
                    frame_max: m.frame_max,
                    heartbeat: m.heartbeat,
                };
                self.state = State::AwaitingOpen;
                if m.heartbeat > 0 {
                    // Timers start at tune-ok, as RabbitMQ's. Its heartbeaters start from octet
                    // counts of 0: the first send check always sends, and the first receive
                    // check always finds traffic (the tune-ok itself).
                    let interval = Duration::from_secs(m.heartbeat.into());
                    self.sent_since_tick = false;
                    self.received_since_tick = true;
                    self.heartbeat = Some(Heartbeat {
                        interval,
                        next_send: now + interval / 2,
                        next_recv_check: now + interval,
                        missed: 0,
                        first_send: true,
                    });
                }
            }
            (State::AwaitingOpen, Method::ConnectionOpen(m)) => {
                self.state = State::OpeningVhost;
                self.events.push_back(Event::OpenVhost {
                    vhost: m.virtual_host.to_string(),
                });
            }
            (State::Open, Method::ConnectionUpdateSecret(m)) => {
                self.events.push_back(Event::UpdateSecret {
                    new_secret: m.new_secret,
                    reason: m.reason,
                });
            }
            (_, Method::ConnectionClose(m)) => {
                frame::encode_method(&mut self.write, 0, &ConnectionCloseOk::default().into());
                self.stop(CloseReason::ByClient {
                    code: m.reply_code,
                    text: m.reply_text.to_string(),
                });
                self.state = State::CloseOkSent;
                self.deadline = Some(now + self.config.close_timeout);
                self.read.clear();
            }
            (state, _) => {
                let text = format!(
                    "unexpected method in connection state {}",
                    state.rabbit_name()
                );
                let e = AmqpException::connection(ReplyCode::ChannelError, text)
                    .caused_by(class_id, method_id);
                self.protocol_error(e, now)
            }
        }
    }

    fn handle_channel_method(&mut self, channel: u16, method: Method, now: Instant) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let error =
            |code, text: &str| AmqpException::connection(code, text).caused_by(class_id, method_id);
        let Some(ch) = self.channels.get_mut(&channel) else {
            if !matches!(method, Method::ChannelOpen(_)) {
                return self.protocol_error(
                    error(ReplyCode::ChannelError, "expected 'channel.open'"),
                    now,
                );
            }
            let limit = self.tuning.channel_max;
            if limit != 0 && self.channels.len() >= usize::from(limit) {
                let text = format!(
                    "number of channels opened ({}) has reached the negotiated channel_max ({limit})",
                    self.channels.len()
                );
                return self
                    .protocol_error(AmqpException::connection(ReplyCode::NotAllowed, text), now);
            }
            self.channels.insert(
                channel,
                Box::new(Channel {
                    assembly: Assembly::Idle,
                    closing: false,
                }),
            );
            frame::encode_method(&mut self.write, channel, &ChannelOpenOk::default().into());
            self.sent_since_tick = true;
            self.events.push_back(Event::ChannelOpened { channel });
            return;
        };
        let pending = std::mem::replace(&mut ch.assembly, Assembly::Idle);
        if !matches!(pending, Assembly::Idle) {
            return self.protocol_error(not_expected(Some(&pending), None), now);
        }
        if method.has_content() {
            ch.assembly = Assembly::Header { method };
        } else {
            self.dispatch(channel, method, None, now);
        }
    }

    /// A complete command on an open channel: channel lifecycle here, the rest to the caller.
    fn dispatch(&mut self, channel: u16, method: Method, content: Option<Content>, now: Instant) {
        let closing = self.channel(channel).is_some_and(|c| c.closing);
        let (class_id, method_id) = (method.class_id(), method.method_id());
        match method {
            Method::ChannelOpen(_) => {
                let e = AmqpException::connection(
                    ReplyCode::ChannelError,
                    "second 'channel.open' seen",
                )
                .caused_by(class_id, method_id);
                self.protocol_error(e, now)
            }
            Method::ChannelClose(m) => {
                frame::encode_method(&mut self.write, channel, &ChannelCloseOk::default().into());
                self.sent_since_tick = true;
                if !closing {
                    self.free_channel(channel);
                    let reason = ChannelCloseReason::ByClient {
                        code: m.reply_code,
                        text: m.reply_text.to_string(),
                    };
                    self.events
                        .push_back(Event::ChannelClosed { channel, reason });
                }
                // Both sides closing: keep waiting for the close-ok to ours, as RabbitMQ does.
            }
            Method::ChannelCloseOk(_) if closing => self.free_channel(channel),
            Method::ChannelCloseOk(_) => {
                let e =
                    AmqpException::connection(ReplyCode::CommandInvalid, "unimplemented method")
                        .caused_by(class_id, method_id);
                self.protocol_error(e, now)
            }
            _ if closing => {}
            // A connection method on a channel (RabbitMQ's channel drops it while closing), or a
            // method only a server sends: RabbitMQ's channel has no clause for either.
            _ if class_id == 10 || is_server_method(&method) => {
                let e =
                    AmqpException::connection(ReplyCode::CommandInvalid, "unimplemented method")
                        .caused_by(class_id, method_id);
                self.protocol_error(e, now)
            }
            method => self.events.push_back(Event::Command {
                channel,
                method,
                content,
            }),
        }
    }

    fn handle_header(&mut self, channel: u16, header: ContentHeader, now: Instant) {
        let max_message_size = self.config.max_message_size;
        let Some(ch) = self.channel_mut(channel) else {
            return self.protocol_error(not_expected(None, None), now);
        };
        let closing = ch.closing;
        let pending = std::mem::replace(&mut ch.assembly, Assembly::Idle);
        let Assembly::Header { method } = pending else {
            return self.protocol_error(not_expected(Some(&pending), None), now);
        };
        if header.class_id != method.class_id() || header.weight != 0 {
            let pending = Assembly::Header { method };
            return self.protocol_error(not_expected(Some(&pending), Some(header.class_id)), now);
        }
        if header.body_size > max_message_size && !closing {
            // Refused at the header, before any body is buffered; the body frames that follow
            // are counted and dropped on the now closing channel.
            let text = format!(
                "message size {} is larger than configured max size {max_message_size}",
                header.body_size
            );
            let e = AmqpException::channel(ReplyCode::PreconditionFailed, text)
                .caused_by(method.class_id(), method.method_id());
            self.close_channel(channel, e);
        }
        if header.body_size == 0 {
            self.dispatch(
                channel,
                method,
                Some(Content {
                    header,
                    body: Bytes::new(),
                }),
                now,
            );
        } else if let Some(ch) = self.channel_mut(channel) {
            let remaining = header.body_size;
            ch.assembly = Assembly::Body {
                method,
                header,
                body: BodyParts::Empty,
                remaining,
            };
        }
    }

    fn handle_body(&mut self, channel: u16, payload: Bytes, now: Instant) {
        let Some(ch) = self.channel_mut(channel) else {
            return self.protocol_error(not_expected(None, None), now);
        };
        let closing = ch.closing;
        // Updated in place: the assembly (method and header) is large, and a message of many
        // body frames would otherwise be moved out and back for each of them.
        let Assembly::Body {
            method,
            body,
            remaining,
            ..
        } = &mut ch.assembly
        else {
            let pending = std::mem::replace(&mut ch.assembly, Assembly::Idle);
            return self.protocol_error(not_expected(Some(&pending), None), now);
        };
        let len = payload.len() as u64;
        if len > *remaining {
            let e = AmqpException::connection(
                ReplyCode::FrameError,
                "content body frame exceeds remaining content size",
            )
            .caused_by(method.class_id(), method.method_id());
            return self.protocol_error(e, now);
        }
        *remaining -= len;
        if !closing {
            body.push(payload);
        }
        if *remaining > 0 {
            return;
        }
        let Assembly::Body {
            method,
            header,
            body,
            ..
        } = std::mem::replace(&mut ch.assembly, Assembly::Idle)
        else {
            return;
        };
        self.dispatch(
            channel,
            method,
            Some(Content {
                header,
                body: body.finish(),
            }),
            now,
        );
    }
}

/// Methods of the channel classes that only a server sends. (`channel.close-ok`,
/// `channel.flow-ok`, `basic.cancel`, `basic.ack` and `basic.nack` go both ways.)
fn is_server_method(m: &Method) -> bool {
    matches!(
        m,
        Method::ChannelOpenOk(_)
            | Method::AccessRequestOk(_)
            | Method::ExchangeDeclareOk(_)
            | Method::ExchangeDeleteOk(_)
            | Method::ExchangeBindOk(_)
            | Method::ExchangeUnbindOk(_)
            | Method::QueueDeclareOk(_)
            | Method::QueueBindOk(_)
            | Method::QueuePurgeOk(_)
            | Method::QueueDeleteOk(_)
            | Method::QueueUnbindOk(_)
            | Method::BasicQosOk(_)
            | Method::BasicConsumeOk(_)
            | Method::BasicCancelOk(_)
            | Method::BasicReturn(_)
            | Method::BasicDeliver(_)
            | Method::BasicGetOk(_)
            | Method::BasicGetEmpty(_)
            | Method::BasicRecoverOk(_)
            | Method::TxSelectOk(_)
            | Method::TxCommitOk(_)
            | Method::TxRollbackOk(_)
            | Method::ConfirmSelectOk(_)
    )
}

/// RabbitMQ's content assembler's 505 UNEXPECTED_FRAME for a frame a channel did not expect,
/// given what it awaits (`None`: a channel not open, which awaits a method) and, for a content
/// header, the class it names. The exception names the pending method, if any.
fn not_expected(awaiting: Option<&Assembly>, header_class: Option<u16>) -> AmqpException {
    let (text, pending) = match awaiting {
        None | Some(Assembly::Idle) => (
            "expected method frame, got non method frame instead".to_string(),
            None,
        ),
        Some(Assembly::Header { method }) => {
            let expected = method.class_id();
            let text = match header_class {
                Some(got) if got != expected => {
                    format!(
                        "expected content header for class {expected}, got one for class {got} instead"
                    )
                }
                _ => format!(
                    "expected content header for class {expected}, got non content header frame instead"
                ),
            };
            (text, Some(method))
        }
        Some(Assembly::Body { method, .. }) => (
            "expected content body, got non content body frame instead".to_string(),
            Some(method),
        ),
    };
    let e = AmqpException::connection(ReplyCode::UnexpectedFrame, text);
    match pending {
        Some(m) => e.caused_by(m.class_id(), m.method_id()),
        None => e,
    }
}

/// RabbitMQ's description of a frame it did not expect: `type 2, all octets = <<...>>`.
fn frame_snippet(f: &Frame) -> String {
    let mut buf = BytesMut::new();
    f.encode(&mut buf);
    let kind = buf.first().copied().unwrap_or_default();
    let payload = buf
        .get(frame::FRAME_HEADER_SIZE..buf.len().saturating_sub(1))
        .unwrap_or_default();
    let shown = payload.get(..16).unwrap_or(payload);
    format!(
        "type {kind}, {} = {}",
        snippet_label(payload.len()),
        ErlangBinary::new(shown)
    )
}

/// RabbitMQ's rule for a tuned value: a non-zero value below the minimum, or (when the server
/// has a limit) zero or a value above the server's, is refused.
fn negotiate(field: &str, client: u32, min: u32, server: u32) -> Option<String> {
    let detail = if field == "channel_max" && client == 0 {
        " (no limit)"
    } else {
        ""
    };
    if client != 0 && client < min {
        Some(format!(
            "negotiated {field} = {client}{detail} is lower than the minimum allowed value ({min})"
        ))
    } else if server != 0 && (client == 0 || client > server) {
        Some(format!(
            "negotiated {field} = {client}{detail} is higher than the maximum allowed value ({server})"
        ))
    } else {
        None
    }
}

/// Extracts user name and password from a `start-ok` response, as RabbitMQ reads them: PLAIN
/// is exactly `NUL user NUL password` (no authorization identity); AMQPLAIN is a field table
/// without its length prefix holding `LOGIN` and `PASSWORD`.
fn parse_credentials(mechanism: Mechanism, response: &Bytes) -> Option<(String, String)> {
    match mechanism {
        Mechanism::Plain => {
            let mut parts = response.split(|&b| b == 0);
            let authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            if !authzid.is_empty() || parts.next().is_some() {
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
