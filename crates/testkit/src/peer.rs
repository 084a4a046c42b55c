//! A scripted AMQP 0-9-1 client: frame builders over any byte stream, for tests that check a
//! server's exact replies, frame by frame.
//!
//! ```no_run
//! # async fn f(io: tokio::io::DuplexStream) {
//! use warren_testkit::peer::Peer;
//! use warren_amqp_codec::{Method, QueueDeclare};
//! let mut peer = Peer::open(io, "guest", "guest", "/").await.unwrap();
//! peer.open_channel(1).await.unwrap();
//! peer.send(1, QueueDeclare { queue: "q".into(), ..Default::default() }.into()).await.unwrap();
//! let reply = peer.recv_method(1).await.unwrap();
//! # }
//! ```

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warren_amqp_codec::frame::{self, ContentHeader, Frame, PROTOCOL_HEADER};
use warren_amqp_codec::{
    BasicProperties, ChannelOpen, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, FieldTable,
    FieldValue, LongStr, Method, ShortStr,
};

/// How long a `recv` waits before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong in a script.
#[derive(Debug)]
pub enum PeerError {
    /// The socket failed or closed.
    Io(std::io::Error),
    /// The server sent something undecodable.
    Decode(String),
    /// Nothing arrived in time.
    Timeout,
    /// Something other than what the script expected arrived.
    Unexpected(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Io(e) => write!(f, "i/o: {e}"),
            PeerError::Decode(e) => write!(f, "decode: {e}"),
            PeerError::Timeout => f.write_str("timed out"),
            PeerError::Unexpected(e) => write!(f, "unexpected: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> Self {
        PeerError::Io(e)
    }
}

/// A message as received: the method that carried it, properties and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// `basic.deliver`, `basic.get-ok` or `basic.return`.
    pub method: Method,
    /// The properties.
    pub properties: BasicProperties,
    /// The body.
    pub body: Bytes,
}

/// A scripted client connection.
#[derive(Debug)]
pub struct Peer<IO> {
    io: IO,
    read: BytesMut,
    /// The `frame_max` agreed (the server's offer).
    pub frame_max: u32,
    /// The server's `connection.start` server-properties.
    pub server_properties: FieldTable,
}

/// The client properties a scripted peer announces: every capability a modern client has.
pub fn client_properties() -> FieldTable {
    let caps: FieldTable = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ]
    .iter()
    .map(|c| (ShortStr::from(c.to_string()), FieldValue::from(true)))
    .collect();
    [
        ("product", FieldValue::from("warren-testkit".to_string())),
        ("capabilities", FieldValue::Table(caps)),
    ]
    .into_iter()
    .collect()
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Peer<IO> {
    /// Wraps a stream without any handshake (for tests of the handshake itself).
    pub fn raw(io: IO) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            frame_max: 131_072,
            server_properties: FieldTable::new(),
        }
    }

    /// Runs the whole handshake with PLAIN credentials and opens `vhost`.
    pub async fn open(io: IO, user: &str, password: &str, vhost: &str) -> Result<Self, PeerError> {
        let mut p = Self::raw(io);
        p.login(user, password).await?;
        p.send(
            0,
            ConnectionOpen {
                virtual_host: ShortStr::from(vhost.to_string()),
                ..Default::default()
            }
            .into(),
        )
        .await?;
        match p.recv_method(0).await? {
            Method::ConnectionOpenOk(_) => Ok(p),
            other => Err(PeerError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends the protocol header and credentials, and answers `connection.tune`; stops before
    /// `connection.open`.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), PeerError> {
        self.send_raw(&PROTOCOL_HEADER).await?;
        match self.recv_method(0).await? {
            Method::ConnectionStart(s) => self.server_properties = s.server_properties,
            other => return Err(PeerError::Unexpected(format!("{other:?}"))),
        }
        let mut response = vec![0];
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        self.send(
            0,
            ConnectionStartOk {
                client_properties: client_properties(),
                mechanism: "PLAIN".into(),
                response: LongStr::from(response),
                locale: "en_US".into(),
            }
            .into(),
        )
        .await?;
        let tune = match self.recv_method(0).await? {
            Method::ConnectionTune(t) => t,
            other => return Err(PeerError::Unexpected(format!("{other:?}"))),
        };
        self.frame_max = tune.frame_max;
        self.send(
            0,
            ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            }
            .into(),
        )
        .await
    }

    /// The stream, for scripts that take over (e.g. split it to read and write at once).
    /// Octets already read but not consumed are lost.
    pub fn into_inner(self) -> IO {
        self.io
    }

    /// Opens a channel and waits for `channel.open-ok`.
    pub async fn open_channel(&mut self, channel: u16) -> Result<(), PeerError> {
        self.send(channel, ChannelOpen::default().into()).await?;
        match self.recv_method(channel).await? {
            Method::ChannelOpenOk(_) => Ok(()),
            other => Err(PeerError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Writes raw octets.
    pub async fn send_raw(&mut self, octets: &[u8]) -> Result<(), PeerError> {
        self.io.write_all(octets).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends a method.
    pub async fn send(&mut self, channel: u16, method: Method) -> Result<(), PeerError> {
        let mut buf = BytesMut::new();
        frame::encode_method(&mut buf, channel, &method);
        self.send_raw(&buf).await
    }

    /// Sends a content-carrying method with its header and body frames.
    pub async fn send_content(
        &mut self,
        channel: u16,
        method: Method,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<(), PeerError> {
        let mut buf = BytesMut::new();
        frame::encode_content(&mut buf, channel, &method, properties, body, self.frame_max);
        self.send_raw(&buf).await
    }

    /// The next frame, whatever it is.
    pub async fn recv(&mut self) -> Result<Frame, PeerError> {
        loop {
            match frame::decode_frame(&mut self.read, u32::MAX) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(PeerError::Decode(e.to_string())),
            }
            let n = tokio::time::timeout(RECV_TIMEOUT, self.io.read_buf(&mut self.read))
                .await
                .map_err(|_| PeerError::Timeout)??;
            if n == 0 {
                return Err(PeerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next method frame, which must be on `channel` (heartbeats are skipped).
    pub async fn recv_method(&mut self, channel: u16) -> Result<Method, PeerError> {
        loop {
            match self.recv().await? {
                Frame::Heartbeat => continue,
                Frame::Method { channel: c, method } if c == channel => return Ok(method),
                other => {
                    return Err(PeerError::Unexpected(format!(
                        "expected a method on channel {channel}, got {other:?}"
                    )));
                }
            }
        }
    }

    /// The next message on `channel`: its method, header and body frames.
    pub async fn recv_message(&mut self, channel: u16) -> Result<Received, PeerError> {
        let method = self.recv_method(channel).await?;
        let header: ContentHeader = match self.recv().await? {
            Frame::Header { channel: c, header } if c == channel => header,
            other => {
                return Err(PeerError::Unexpected(format!(
                    "expected a header, got {other:?}"
                )));
            }
        };
        let mut body = BytesMut::new();
        while (body.len() as u64) < header.body_size {
            match self.recv().await? {
                Frame::Body {
                    channel: c,
                    payload,
                } if c == channel => body.extend_from_slice(&payload),
                other => {
                    return Err(PeerError::Unexpected(format!(
                        "expected a body, got {other:?}"
                    )));
                }
            }
        }
        Ok(Received {
            method,
            properties: header.properties,
            body: body.freeze(),
        })
    }

    /// Waits for the server to close: `channel.close` on `channel`, or `connection.close` when
    /// `channel` is 0 (anything else, a close of the other scope included, is unexpected).
    /// Returns the reply code, text, class and method ids, and answers with the close-ok.
    pub async fn recv_close(&mut self, channel: u16) -> Result<(u16, String, u16, u16), PeerError> {
        loop {
            match self.recv().await? {
                Frame::Method {
                    channel: c,
                    method: Method::ChannelClose(m),
                } if c == channel && channel != 0 => {
                    self.send(channel, warren_amqp_codec::ChannelCloseOk::default().into())
                        .await?;
                    return Ok((
                        m.reply_code,
                        m.reply_text.to_string(),
                        m.class_id,
                        m.method_id,
                    ));
                }
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(m),
                } if channel == 0 => {
                    self.send(0, warren_amqp_codec::ConnectionCloseOk::default().into())
                        .await?;
                    return Ok((
                        m.reply_code,
                        m.reply_text.to_string(),
                        m.class_id,
                        m.method_id,
                    ));
                }
                Frame::Heartbeat => {}
                other => {
                    return Err(PeerError::Unexpected(format!(
                        "expected a close, got {other:?}"
                    )));
                }
            }
        }
    }

    /// Whether the server closed the socket (reads until end of stream, or fails on data).
    pub async fn expect_eof(&mut self) -> Result<(), PeerError> {
        let mut scratch = [0u8; 256];
        let n = tokio::time::timeout(RECV_TIMEOUT, self.io.read(&mut scratch))
            .await
            .map_err(|_| PeerError::Timeout)??;
        if n == 0 {
            Ok(())
        } else {
            Err(PeerError::Unexpected(format!("{n} more octets")))
        }
    }
}
