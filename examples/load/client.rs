//! A lean AMQP 0-9-1 client connection: just what a load generator needs, on
//! `warren-amqp-codec`'s frame encoders and decoder.
//!
//! One [`Conn`] is one TCP connection with one channel (number [`CH`]). Set-up is sequential
//! and simple ([`Conn::open`], [`Conn::rpc`], [`Conn::rpc_many`]); the hot loops of producers
//! and consumers then drive the socket themselves, without extra tasks or channels:
//!
//! - [`Conn::try_fill`] reads what the socket holds into the read buffer without waiting;
//!   the caller then decodes every complete frame in it;
//! - frames are encoded straight into the write buffer, and [`Conn::try_flush`] writes it with
//!   as few syscalls as the kernel allows (usually one);
//! - [`Conn::wait`] waits until the socket is readable (or writable, while output is
//!   pending), so reading never stalls behind writing and vice versa.
//!
//! What it deliberately does not do: several channels per connection, TLS, SASL mechanisms
//! other than PLAIN, reconnection, or any buffering of messages for a caller.

use crate::uri::AmqpUri;
use bytes::{Buf, BytesMut};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior, timeout};
use warren_amqp_codec::frame::{self, PROTOCOL_HEADER};
use warren_amqp_codec::{
    ChannelCloseOk, ChannelOpen, CodecError, ConnectionClose, ConnectionCloseOk, ConnectionOpen,
    ConnectionStartOk, ConnectionTuneOk, FieldTable, Frame, LongStr, Method, ShortStr, method_name,
};

/// The one channel each connection uses.
pub(crate) const CH: u16 = 1;

/// How much room a read gets, at least.
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer of an idle connection: small, grown on demand.
const IDLE_READ_CHUNK: usize = 512;
/// The largest frame accepted before `connection.tune` says otherwise.
const PRE_TUNE_FRAME_MAX: u32 = 1 << 20;
/// Time allowed for TCP connect and for each set-up reply.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the close handshake at the end, normally.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed for a producer that sent all its `--pmessages`: the broker reads the close
/// only after every publish before it, so a timely close-ok means none was lost.
pub(crate) const DRAIN_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Synchronous requests sent back to back before their replies are read.
const PIPELINE: usize = 256;

/// What can go wrong with a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// A socket error.
    #[error("{context}: {source}")]
    Io {
        /// What the tool was doing.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The broker sent something the codec could not decode.
    #[error("malformed input from the broker: {0}")]
    Codec(#[from] CodecError),
    /// The broker closed the connection (`connection.close`).
    #[error("broker closed the connection: {code} {text}{cause}")]
    ConnectionClosed {
        /// Reply code.
        code: u16,
        /// Reply text.
        text: String,
        /// " (after METHOD)" or empty.
        cause: String,
    },
    /// The broker closed the channel (`channel.close`).
    #[error("broker closed the channel: {code} {text}{cause}")]
    ChannelClosed {
        /// Reply code.
        code: u16,
        /// Reply text.
        text: String,
        /// " (after METHOD)" or empty.
        cause: String,
    },
    /// The broker cancelled a consumer (`basic.cancel`, e.g. its queue was deleted).
    #[error("broker cancelled consumer {0} (queue deleted?)")]
    Cancelled(String),
    /// The TCP connection ended without a close handshake.
    #[error("broker closed the TCP connection{0}")]
    Eof(&'static str),
    /// The broker answered with a method the tool did not expect.
    #[error("unexpected {got} from the broker while waiting for {want}")]
    Unexpected {
        /// What came.
        got: &'static str,
        /// What the tool waited for.
        want: &'static str,
    },
    /// Something else the broker did that the tool cannot go on from.
    #[error("{0}")]
    Protocol(String),
    /// The broker took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Heartbeats were enabled and the broker sent nothing for two intervals.
    #[error("no heartbeat or other traffic from the broker for {0} s")]
    MissedHeartbeats(u64),
}

/// A `Result` with a [`ClientError`].
pub(crate) type Result<T, E = ClientError> = std::result::Result<T, E>;

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { context, source }
}

fn cause(class_id: u16, method_id: u16) -> String {
    match method_name(class_id, method_id) {
        Some(name) if class_id != 0 => format!(" (after {name})"),
        _ => String::new(),
    }
}

fn unexpected(got: &Method, want: &'static str) -> ClientError {
    ClientError::Unexpected {
        got: got.name(),
        want,
    }
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// Broker address and credentials.
    pub(crate) uri: AmqpUri,
    /// Heartbeat interval the tool asks for (0: none). The broker's lower value wins.
    pub(crate) heartbeat: u16,
    /// `connection_name` client property, shown by the broker's management tools.
    pub(crate) name: String,
    /// Whether this connection idles (small buffers).
    pub(crate) idle: bool,
}

/// An open connection with channel [`CH`] open.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Received octets not yet decoded.
    pub(crate) rbuf: BytesMut,
    /// Encoded frames not yet written.
    pub(crate) wbuf: BytesMut,
    /// Negotiated `frame_max` (0: no limit).
    pub(crate) frame_max: u32,
    /// Whether the broker has blocked publishing (`connection.blocked`).
    pub(crate) blocked: bool,
    read_chunk: usize,
    heartbeat: Option<Interval>,
    heartbeat_secs: u64,
    silent_ticks: u32,
}

impl Conn {
    /// Connects, authenticates with PLAIN, tunes, opens the vhost and channel [`CH`].
    pub(crate) async fn open(cfg: &ConnConfig) -> Result<Conn> {
        let stream = timeout(SETUP_TIMEOUT, TcpStream::connect(cfg.uri.address()))
            .await
            .map_err(|_| ClientError::Timeout("the TCP connection"))?
            .map_err(io_err("connecting"))?;
        stream
            .set_nodelay(true)
            .map_err(io_err("setting TCP_NODELAY"))?;
        let read_chunk = if cfg.idle {
            IDLE_READ_CHUNK
        } else {
            READ_CHUNK
        };
        let mut c = Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            frame_max: PRE_TUNE_FRAME_MAX,
            blocked: false,
            read_chunk,
            heartbeat: None,
            heartbeat_secs: 0,
            silent_ticks: 0,
        };
        c.wbuf.extend_from_slice(&PROTOCOL_HEADER);
        c.flush().await?;

        // connection.start: the broker must offer PLAIN.
        let start = match c
            .expect("connection.start", |m| {
                matches!(m, Method::ConnectionStart(_))
            })
            .await?
        {
            Method::ConnectionStart(start) => start,
            other => return Err(unexpected(&other, "connection.start")),
        };
        let offers_plain = start
            .mechanisms
            .as_bytes()
            .split(|&b| b == b' ')
            .any(|m| m == b"PLAIN");
        if !offers_plain {
            return Err(ClientError::Protocol(format!(
                "the broker does not offer PLAIN authentication (offers {})",
                start.mechanisms
            )));
        }
        let mut capabilities = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "basic.nack",
            "connection.blocked",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "exchange_exchange_bindings",
        ] {
            capabilities.insert(cap, true);
        }
        let mut props = FieldTable::default();
        props.insert("product", "warren load tool");
        props.insert("version", env!("CARGO_PKG_VERSION"));
        props.insert("platform", "Rust");
        props.insert("connection_name", cfg.name.clone());
        props.insert("capabilities", capabilities);
        let mut response = Vec::with_capacity(2 + cfg.uri.user.len() + cfg.uri.password.len());
        response.push(0);
        response.extend_from_slice(cfg.uri.user.as_bytes());
        response.push(0);
        response.extend_from_slice(cfg.uri.password.as_bytes());
        c.send(
            0,
            &Method::from(ConnectionStartOk {
                client_properties: props,
                mechanism: ShortStr::from_static("PLAIN"),
                response: LongStr::from(response),
                locale: ShortStr::from_static("en_US"),
            }),
        )
        .await?;

        // connection.tune: take the broker's frame_max and channel_max; heartbeats as asked.
        let tune = match c
            .expect("connection.tune", |m| {
                matches!(m, Method::ConnectionTune(_))
            })
            .await?
        {
            Method::ConnectionTune(tune) => tune,
            other => return Err(unexpected(&other, "connection.tune")),
        };
        let heartbeat = match (cfg.heartbeat, tune.heartbeat) {
            (0, _) => 0,
            (mine, 0) => mine,
            (mine, theirs) => mine.min(theirs),
        };
        c.frame_max = tune.frame_max;
        c.send(
            0,
            &Method::from(ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            }),
        )
        .await?;
        if heartbeat > 0 {
            // Send at half the interval, as RabbitMQ's clients do.
            let period = Duration::from_millis(u64::from(heartbeat) * 500);
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            c.heartbeat = Some(interval);
            c.heartbeat_secs = heartbeat.into();
        }

        let open = ConnectionOpen {
            virtual_host: ShortStr::from(cfg.uri.vhost.clone()),
            ..Default::default()
        };
        c.rpc(0, open.into(), "connection.open-ok", |m| {
            matches!(m, Method::ConnectionOpenOk(_))
        })
        .await?;
        c.rpc(CH, ChannelOpen::default().into(), "channel.open-ok", |m| {
            matches!(m, Method::ChannelOpenOk(_))
        })
        .await?;
        if cfg.idle {
            // Give back what the handshake grew.
            c.rbuf = BytesMut::new();
            c.wbuf = BytesMut::new();
        }
        Ok(c)
    }

    /// Encodes a method frame into the write buffer.
    pub(crate) fn push(&mut self, channel: u16, method: &Method) {
        frame::encode_method(&mut self.wbuf, channel, method);
    }

    /// Encodes and writes one method frame.
    pub(crate) async fn send(&mut self, channel: u16, method: &Method) -> Result<()> {
        self.push(channel, method);
        self.flush().await
    }

    /// Writes the whole write buffer, waiting as needed.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.stream
            .write_all(&self.wbuf)
            .await
            .map_err(io_err("writing"))?;
        self.wbuf.clear();
        Ok(())
    }

    /// Sends `method` on `channel` and waits for the reply `is_reply` accepts.
    pub(crate) async fn rpc(
        &mut self,
        channel: u16,
        method: Method,
        want: &'static str,
        is_reply: fn(&Method) -> bool,
    ) -> Result<Method> {
        self.send(channel, &method).await?;
        self.expect(want, is_reply).await
    }

    /// Sends many synchronous requests on [`CH`], pipelined in groups of [`PIPELINE`], and
    /// waits for one accepted reply each.
    pub(crate) async fn rpc_many(
        &mut self,
        methods: &[Method],
        want: &'static str,
        is_reply: fn(&Method) -> bool,
    ) -> Result<()> {
        for group in methods.chunks(PIPELINE) {
            for m in group {
                self.push(CH, m);
            }
            self.flush().await?;
            for _ in group {
                self.expect(want, is_reply).await?;
            }
        }
        Ok(())
    }

    /// Reads frames until the method `is_reply` accepts arrives, and returns it. Heartbeats
    /// and `connection.blocked`/`unblocked` are taken care of on the way; a close from the
    /// broker, content, or any other method is an error.
    pub(crate) async fn expect(
        &mut self,
        want: &'static str,
        is_reply: impl Fn(&Method) -> bool,
    ) -> Result<Method> {
        loop {
            let frame = timeout(SETUP_TIMEOUT, self.read_frame())
                .await
                .map_err(|_| ClientError::Timeout(want))??;
            if self.common(&frame)? {
                continue;
            }
            match frame {
                Frame::Method { method, .. } if is_reply(&method) => return Ok(method),
                Frame::Method { method, .. } => return Err(unexpected(&method, want)),
                Frame::Header { .. } | Frame::Body { .. } => {
                    return Err(ClientError::Unexpected {
                        got: "message content",
                        want,
                    });
                }
                Frame::Heartbeat => {}
            }
        }
    }

    /// Reads until one whole frame is buffered and returns it.
    async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(frame);
            }
            self.rbuf.reserve(self.read_chunk);
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(io_err("reading"))?;
            if n == 0 {
                return Err(ClientError::Eof(
                    " (during set-up: wrong credentials or vhost, or not an AMQP broker?)",
                ));
            }
        }
    }

    /// The hot loops' decoder: the next complete frame in the read buffer, if there is one,
    /// with the codec's own error. Returning the codec's `Result` unchanged (rather than
    /// converting it with `?`) lets the few-hundred-octet `Frame` be built in place instead of
    /// copied through each layer; profiles showed those copies.
    #[inline(always)]
    pub(crate) fn next_frame(&mut self) -> std::result::Result<Option<Frame>, CodecError> {
        frame::decode_frame(&mut self.rbuf, self.frame_max)
    }

    /// Decodes the next complete frame in the read buffer, if there is one; for set-up,
    /// where a broker that refuses the protocol answers with a protocol header.
    pub(crate) fn decode(&mut self) -> Result<Option<Frame>> {
        if self.rbuf.starts_with(b"AMQP") {
            return Err(ClientError::Protocol(format!(
                "the broker refused AMQP 0-9-1 and answered with protocol header {:?}",
                String::from_utf8_lossy(&self.rbuf[..self.rbuf.len().min(8)])
            )));
        }
        Ok(frame::decode_frame(&mut self.rbuf, self.frame_max)?)
    }

    /// Handles what every connection handles the same way: heartbeats and blocking
    /// (`Ok(true)`: handled, [`Conn::blocked`] updated) and closes from the broker (an error;
    /// the close-ok is sent by [`Conn::shutdown`]). `Ok(false)`: the caller's to handle.
    ///
    /// Takes the frame by reference: a `Frame` is a few hundred octets, and moving it in and
    /// out again per message showed up in profiles.
    pub(crate) fn common(&mut self, frame: &Frame) -> Result<bool> {
        match frame {
            Frame::Heartbeat => Ok(true),
            Frame::Method { method, .. } => match method {
                Method::ConnectionBlocked(_) => {
                    self.blocked = true;
                    Ok(true)
                }
                Method::ConnectionUnblocked(_) => {
                    self.blocked = false;
                    Ok(true)
                }
                Method::ConnectionClose(c) => Err(ClientError::ConnectionClosed {
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    cause: cause(c.class_id, c.method_id),
                }),
                Method::ChannelClose(c) => Err(ClientError::ChannelClosed {
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    cause: cause(c.class_id, c.method_id),
                }),
                _ => Ok(false),
            },
            _ => Ok(false),
        }
    }

    /// Reads what the socket holds, without waiting. `Ok(true)` if anything was read.
    ///
    /// One read per call: if the socket had more, its readiness stays set and the caller's
    /// next [`Conn::wait`] returns at once.
    pub(crate) fn try_fill(&mut self) -> Result<bool> {
        self.rbuf.reserve(self.read_chunk);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(ClientError::Eof("")),
            Ok(_) => {
                self.silent_ticks = 0;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(io_err("reading")(e)),
        }
    }

    /// Writes as much of the write buffer as the socket takes, without waiting. `Ok(true)`
    /// if the buffer is now empty.
    pub(crate) fn try_flush(&mut self) -> Result<bool> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(ClientError::Eof(" (write returned 0)")),
                Ok(n) if n == self.wbuf.len() => self.wbuf.clear(),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(io_err("writing")(e)),
            }
        }
        Ok(true)
    }

    /// Waits until the socket is readable (unless `read` is false and there is a
    /// `deadline`) or, if output is pending, writable, or until `deadline` (a producer's next
    /// rate-limited batch). Heartbeat ticks are handled on the way: a heartbeat frame is
    /// queued and the wait ends so that the caller flushes it.
    pub(crate) async fn wait(&mut self, deadline: Option<Instant>, read: bool) -> Result<()> {
        use tokio::io::Interest;
        let read = read || deadline.is_none();
        let interest = match (read, self.wbuf.is_empty()) {
            (true, true) => Some(Interest::READABLE),
            (true, false) => Some(Interest::READABLE.add(Interest::WRITABLE)),
            (false, false) => Some(Interest::WRITABLE),
            (false, true) => None,
        };
        let Conn {
            stream, heartbeat, ..
        } = self;
        let tick = tokio::select! {
            r = async {
                match interest {
                    Some(interest) => stream.ready(interest).await.map(drop),
                    None => std::future::pending().await,
                }
            } => {
                r.map_err(io_err("polling the socket"))?;
                false
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => false,
            () = async {
                match heartbeat {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            } => true,
        };
        if tick {
            self.on_heartbeat_tick()?;
        }
        Ok(())
    }

    /// At a heartbeat tick: queues a heartbeat frame, and fails if the broker has been
    /// silent for two heartbeat intervals (four ticks).
    fn on_heartbeat_tick(&mut self) -> Result<()> {
        self.silent_ticks += 1;
        if self.silent_ticks > 4 {
            return Err(ClientError::MissedHeartbeats(self.heartbeat_secs * 2));
        }
        frame::encode_heartbeat(&mut self.wbuf);
        Ok(())
    }

    /// For idle connections: gives back the read buffer once it is drained.
    pub(crate) fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > IDLE_READ_CHUNK {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > IDLE_READ_CHUNK {
            self.wbuf = BytesMut::new();
        }
    }

    /// Ends the connection: after a close from the broker, answers it; otherwise closes
    /// cleanly (`connection.close`, waiting briefly for `close-ok`). Never fails: at the end
    /// of a run there is nothing left to do about errors, and the socket is dropped anyway.
    ///
    /// `patience` bounds the wait for `close-ok` (see [`CLOSE_TIMEOUT`] and
    /// [`DRAIN_CLOSE_TIMEOUT`]); a broker that is still working through a flat-out producer's
    /// backlog may take long to get to the close, and the run is over.
    pub(crate) async fn shutdown(mut self, after: Option<&ClientError>, patience: Duration) {
        // Unsent output (a half-written batch) is dropped: a partial frame would only make
        // the broker report a framing error instead of our close.
        self.wbuf.clear();
        match after {
            Some(ClientError::ConnectionClosed { .. }) => {
                self.push(0, &ConnectionCloseOk::default().into());
                let _ = timeout(CLOSE_TIMEOUT, self.flush()).await;
                return;
            }
            Some(ClientError::ChannelClosed { .. }) => {
                self.push(CH, &ChannelCloseOk::default().into());
            }
            Some(ClientError::Codec(e)) => {
                let close = ConnectionClose {
                    reply_code: e.reply_code().code(),
                    reply_text: ShortStr::from(format!("load tool: {e}")),
                    class_id: 0,
                    method_id: 0,
                };
                self.push(0, &close.into());
                let _ = timeout(CLOSE_TIMEOUT, self.flush()).await;
                return;
            }
            Some(
                ClientError::Io { .. } | ClientError::Eof(_) | ClientError::MissedHeartbeats(_),
            ) => return,
            _ => {}
        }
        let close = ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("load tool done"),
            class_id: 0,
            method_id: 0,
        };
        self.push(0, &close.into());
        let _ = timeout(patience, async {
            self.flush().await?;
            loop {
                if let Frame::Method { method, .. } = self.read_frame().await? {
                    match method {
                        Method::ConnectionCloseOk(_) => return Ok(()),
                        Method::ConnectionClose(_) => {
                            self.send(0, &ConnectionCloseOk::default().into()).await?;
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("connection.close-ok"))
        .and_then(|r: Result<()>| r);
    }
}
