//! Frames: the protocol header, the four frame kinds, and their decoding and encoding.
//!
//! A frame is `type: u8, channel: u16, size: u32, payload: [u8; size], 0xCE`. Decoding reads
//! from a [`BytesMut`] read buffer: a complete frame is split off and frozen, and a body frame's
//! payload is a slice of it, never a copy. Incomplete input gives `Ok(None)`; the size field is
//! checked against `frame_max` *before* waiting for the payload, so a hostile length can never
//! make the caller buffer more than one frame of `frame_max` payload octets plus framing.

use crate::CodecError;
use crate::generated::{BasicProperties, Method};
pub use crate::generated::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use crate::wire::{Reader, put_longlong, put_octet, put_short};
use bytes::{Buf, Bytes, BytesMut};

/// The protocol header a 0-9-1 client sends first, and what a server answers to any other.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// Octets before a frame's payload: type, channel, size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Framing overhead around a payload: header and frame-end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;

/// The content header that follows a content-carrying method.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    /// Class of the method the content belongs to (always 60, `basic`, in 0-9-1).
    pub class_id: u16,
    /// Unused by 0-9-1, must be 0; kept so that input re-encodes to the same octets.
    pub weight: u16,
    /// Total size of the body frames that follow.
    pub body_size: u64,
    /// The message properties.
    pub properties: BasicProperties,
}

impl BasicProperties {
    /// Decodes properties from their encoded form (property flags and list, as
    /// [`BasicProperties::encode`] writes them); strings share `encoded`'s memory.
    pub fn decode_encoded(encoded: &Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(encoded);
        let props_err = |e| CodecError::Properties(Box::new(e));
        let flags = r.short().map_err(props_err)?;
        let properties = BasicProperties::decode(flags, &mut r).map_err(props_err)?;
        r.finish("content header").map_err(props_err)?;
        Ok(properties)
    }
}

impl ContentHeader {
    /// A `basic` content header.
    pub fn basic(body_size: u64, properties: BasicProperties) -> Self {
        Self {
            class_id: 60,
            weight: 0,
            body_size,
            properties,
        }
    }

    // Inlined into `Frame::parse_into`, so that the header is built in its final place.
    #[inline(always)]
    fn decode(channel: u16, payload: &Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(payload);
        // `.ok()` at once: a tuple of `Result`s would need `CodecError`'s drop glue run on the
        // success path too, and this is the hot path.
        let (Some(class_id), Some(weight), Some(body_size)) =
            (r.short().ok(), r.short().ok(), r.longlong().ok())
        else {
            return Err(unknown_frame(FRAME_HEADER, payload));
        };
        if class_id != 60 {
            return Err(CodecError::ContentClass { channel, class_id });
        }
        // Step by step rather than through `and_then` closures, which move the (large)
        // properties value once per step.
        let props_err = |e| CodecError::Properties(Box::new(e));
        let flags = r.short().map_err(props_err)?;
        let properties = BasicProperties::decode(flags, &mut r).map_err(props_err)?;
        r.finish("content header").map_err(props_err)?;
        Ok(Self {
            class_id,
            weight,
            body_size,
            properties,
        })
    }

    /// Encodes the header's payload (class, weight, size, flags, properties).
    pub fn encode(&self, buf: &mut BytesMut) {
        put_short(buf, self.class_id);
        put_short(buf, self.weight);
        put_longlong(buf, self.body_size);
        self.properties.encode(buf);
    }
}

/// One AMQP frame.
///
/// Headers carry their properties inline (see [`crate::connection::Event`] for why).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number (0 for the connection class).
        channel: u16,
        /// The method and its arguments.
        method: Method,
    },
    /// A content header frame.
    Header {
        /// Channel number.
        channel: u16,
        /// The header.
        header: ContentHeader,
    },
    /// A content body frame; the payload shares the read buffer's memory.
    Body {
        /// Channel number.
        channel: u16,
        /// The body octets of this frame.
        payload: Bytes,
    },
    /// A heartbeat frame (always channel 0, empty payload).
    Heartbeat,
}

impl Frame {
    /// The frame's channel (0 for heartbeats).
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. } => *channel,
            Frame::Heartbeat => 0,
        }
    }

    /// Parses a frame from its type, channel and payload (framing already removed).
    pub fn parse(kind: u8, channel: u16, payload: Bytes) -> Result<Frame, CodecError> {
        Self::parse_into(kind, channel, payload, |frame| frame)
    }

    /// [`Frame::parse`], handing the frame to `wrap` inside the `Ok`: with `Some`,
    /// [`decode_frame`] gets its `Result<Option<Frame>, _>` built in place instead of
    /// converting (copying) a `Result<Frame, _>`; a `Frame` is a few hundred octets.
    #[inline(always)]
    fn parse_into<T>(
        kind: u8,
        channel: u16,
        payload: Bytes,
        wrap: impl FnOnce(Frame) -> T,
    ) -> Result<T, CodecError> {
        match kind {
            FRAME_METHOD => {
                let mut r = Reader::new(&payload);
                // See `ContentHeader::decode` for the `.ok()` and the steps.
                let (Some(class_id), Some(method_id)) = (r.short().ok(), r.short().ok()) else {
                    return Err(unknown_frame(kind, &payload));
                };
                let args_err = |e| match e {
                    e @ (CodecError::UnknownMethod { .. } | CodecError::MalformedUtf8) => e,
                    _ => CodecError::MethodArgs {
                        class_id,
                        method_id,
                        args: payload.slice(4..),
                    },
                };
                let method = Method::decode_args(class_id, method_id, &mut r).map_err(args_err)?;
                r.finish("method arguments").map_err(args_err)?;
                Ok(wrap(Frame::Method { channel, method }))
            }
            FRAME_HEADER => Ok(wrap(Frame::Header {
                channel,
                header: ContentHeader::decode(channel, &payload)?,
            })),
            FRAME_BODY => Ok(wrap(Frame::Body { channel, payload })),
            FRAME_HEARTBEAT if payload.is_empty() && channel == 0 => Ok(wrap(Frame::Heartbeat)),
            FRAME_HEARTBEAT if payload.is_empty() => {
                Err(CodecError::HeartbeatOnChannel { channel })
            }
            _ => Err(unknown_frame(kind, &payload)),
        }
    }

    /// Encodes the whole frame, framing included.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(buf, *channel, method),
            Frame::Header { channel, header } => {
                let at = begin_frame(buf, FRAME_HEADER, *channel);
                header.encode(buf);
                end_frame(buf, at);
            }
            Frame::Body { channel, payload } => encode_body(buf, *channel, payload),
            Frame::Heartbeat => encode_heartbeat(buf),
        }
    }
}

/// Decodes one frame from the front of `buf`, removing it.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame. `frame_max` is the negotiated
/// limit on the payload, as RabbitMQ applies it (the 8 octets of framing come on top; 0 means
/// no limit beyond the 32-bit size field).
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, CodecError> {
    let Some(&[kind, c0, c1, s0, s1, s2, s3]) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]);
    // Like RabbitMQ, the payload may use all of `frame_max`: the 8 octets of framing are
    // allowed on top.
    if frame_max != 0 && size > frame_max {
        return Err(CodecError::FrameTooLarge {
            kind,
            size,
            frame_max,
        });
    }
    let too_large = || CodecError::FrameTooLarge {
        kind,
        size,
        frame_max,
    };
    let total = usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_add(FRAME_OVERHEAD))
        .ok_or_else(too_large)?;
    if buf.len() < total {
        return Ok(None);
    }
    let end = buf.get(total - 1).copied().unwrap_or_default();
    if end != FRAME_END {
        let snippet = buf
            .get(FRAME_HEADER_SIZE..total - 1)
            .map(|p| p.get(..16).unwrap_or(p))
            .unwrap_or_default();
        return Err(CodecError::BadFrameEnd {
            kind,
            snippet: Bytes::copy_from_slice(snippet),
            payload_len: size,
            end,
        });
    }
    // One split (a reference-count increment: the only one per frame besides string slices),
    // then header and frame end are cut off the frozen view, which costs no atomics.
    let mut payload = buf.split_to(total).freeze();
    payload.advance(FRAME_HEADER_SIZE);
    payload.truncate(total - FRAME_OVERHEAD);
    Frame::parse_into(kind, channel, payload, Some)
}

/// Writes a frame header with a placeholder size; returns where the payload starts.
fn begin_frame(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    let [c0, c1] = channel.to_be_bytes();
    buf.extend_from_slice(&[kind, c0, c1, 0, 0, 0, 0]);
    buf.len()
}

/// Patches the size of the frame whose payload starts at `at` and writes the frame end.
fn end_frame(buf: &mut BytesMut, at: usize) {
    let size = (buf.len() - at) as u32;
    if let Some(slot) = buf.get_mut(at - 4..at) {
        slot.copy_from_slice(&size.to_be_bytes());
    }
    put_octet(buf, FRAME_END);
}

/// Encodes a method frame.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &Method) {
    let at = begin_frame(buf, FRAME_METHOD, channel);
    method.encode(buf);
    end_frame(buf, at);
}

/// Encodes a content header frame.
pub fn encode_header(buf: &mut BytesMut, channel: u16, header: &ContentHeader) {
    let at = begin_frame(buf, FRAME_HEADER, channel);
    header.encode(buf);
    end_frame(buf, at);
}

/// Encodes one body frame.
pub fn encode_body(buf: &mut BytesMut, channel: u16, payload: &[u8]) {
    buf.reserve(FRAME_OVERHEAD + payload.len());
    let [c0, c1] = channel.to_be_bytes();
    let [s0, s1, s2, s3] = (payload.len() as u32).to_be_bytes();
    buf.extend_from_slice(&[FRAME_BODY, c0, c1, s0, s1, s2, s3]);
    buf.extend_from_slice(payload);
    put_octet(buf, FRAME_END);
}

/// Encodes a heartbeat frame.
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Encodes a content-carrying method, its header, and its body split into body frames that
/// respect `frame_max` (0: one body frame). An empty body gets no body frame, as RabbitMQ does.
pub fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) {
    encode_content_with(buf, channel, method, body, frame_max, |buf| {
        properties.encode(buf)
    });
}

/// [`encode_content`] with the properties already encoded (property flags and list, as
/// [`BasicProperties::encode`] writes them): a broker that keeps messages in their encoded
/// form copies the octets instead of encoding the properties again for every delivery.
pub fn encode_content_raw(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    encoded_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    encode_content_with(buf, channel, method, body, frame_max, |buf| {
        buf.extend_from_slice(encoded_properties)
    });
}

/// The method, a header whose properties `properties` writes, and the body frames.
fn encode_content_with(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    body: &[u8],
    frame_max: u32,
    properties: impl FnOnce(&mut BytesMut),
) {
    encode_method(buf, channel, method);
    let at = begin_frame(buf, FRAME_HEADER, channel);
    put_short(buf, method.class_id());
    put_short(buf, 0);
    put_longlong(buf, body.len() as u64);
    properties(buf);
    end_frame(buf, at);
    encode_bodies(buf, channel, body, frame_max);
}

fn encode_bodies(buf: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let chunk = match frame_max as usize {
        0 => body.len().max(1),
        max => max.saturating_sub(FRAME_OVERHEAD).max(1),
    };
    for part in body.chunks(chunk) {
        encode_body(buf, channel, part);
    }
}

/// What the first octets of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Fewer than 8 octets so far: like RabbitMQ, nothing is decided before all 8 arrive.
    Incomplete,
    /// AMQP 0-9-1 (`AMQP 0 0 9 1`), or the 0-9 header `AMQP 1 1 0 9`, which RabbitMQ also
    /// serves as 0-9-1.
    Amqp091,
    /// Anything else: answer with [`PROTOCOL_HEADER`] and close.
    Unsupported,
}

/// Checks the start of a connection against the headers RabbitMQ serves as 0-9-1.
pub fn check_protocol_header(input: &[u8]) -> ProtocolHeader {
    match input.get(..PROTOCOL_HEADER.len()) {
        None => ProtocolHeader::Incomplete,
        Some(h) if h == PROTOCOL_HEADER || h == b"AMQP\x01\x01\x00\x09" => ProtocolHeader::Amqp091,
        Some(_) => ProtocolHeader::Unsupported,
    }
}

/// RabbitMQ's `unknown_frame` error for a payload that cannot be a frame of its type.
fn unknown_frame(kind: u8, payload: &Bytes) -> CodecError {
    CodecError::UnknownFrame {
        kind,
        snippet: payload.slice(..payload.len().min(16)),
        payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    }
}
