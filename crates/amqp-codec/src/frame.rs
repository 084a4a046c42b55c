//! Frames: the protocol header, the four frame kinds, and their decoding and encoding.
//!
//! A frame is `type: u8, channel: u16, size: u32, payload: [u8; size], 0xCE`. Decoding reads
//! from a [`BytesMut`] read buffer: a complete frame is split off and frozen, and a body frame's
//! payload is a slice of it, never a copy. Incomplete input gives `Ok(None)`; the size field is
//! checked against `frame_max` *before* waiting for the payload, so a hostile length can never
//! make the caller buffer more than `frame_max` octets.

use crate::CodecError;
use crate::generated::{BasicProperties, Method};
use crate::wire::Reader;
use bytes::{BufMut, Bytes, BytesMut};

/// The protocol header a 0-9-1 client sends first, and what a server answers to any other.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// Octets before a frame's payload: type, channel, size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Framing overhead around a payload: header and frame-end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;

const TYPE_METHOD: u8 = 1;
const TYPE_HEADER: u8 = 2;
const TYPE_BODY: u8 = 3;
const TYPE_HEARTBEAT: u8 = 8;

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

    fn decode(payload: &Bytes) -> Result<Self, CodecError> {
        let mut r = Reader::new(payload);
        let class_id = r.short()?;
        let weight = r.short()?;
        let body_size = r.longlong()?;
        if class_id != 60 {
            return Err(CodecError::UnknownContentClass(class_id));
        }
        let flags = r.short()?;
        let properties = BasicProperties::decode(flags, &mut r)?;
        r.finish("content header")?;
        Ok(Self {
            class_id,
            weight,
            body_size,
            properties,
        })
    }

    /// Encodes the header's payload (class, weight, size, flags, properties).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class_id);
        buf.put_u16(self.weight);
        buf.put_u64(self.body_size);
        self.properties.encode(buf);
    }
}

/// One AMQP frame.
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
        match kind {
            TYPE_METHOD => {
                let mut r = Reader::new(&payload);
                let class_id = r.short()?;
                let method_id = r.short()?;
                let method = Method::decode_args(class_id, method_id, &mut r)?;
                r.finish("method arguments")?;
                Ok(Frame::Method { channel, method })
            }
            TYPE_HEADER => Ok(Frame::Header {
                channel,
                header: ContentHeader::decode(&payload)?,
            }),
            TYPE_BODY => Ok(Frame::Body { channel, payload }),
            TYPE_HEARTBEAT if channel == 0 && payload.is_empty() => Ok(Frame::Heartbeat),
            TYPE_HEARTBEAT => Err(CodecError::BadHeartbeat { channel }),
            other => Err(CodecError::UnknownFrameType(other)),
        }
    }

    /// Encodes the whole frame, framing included.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(buf, *channel, method),
            Frame::Header { channel, header } => {
                let at = begin_frame(buf, TYPE_HEADER, *channel);
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
/// maximum frame size including framing (0 means no limit beyond the 32-bit size field).
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, CodecError> {
    let Some(&[kind, c0, c1, s0, s1, s2, s3]) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]);
    let total = u64::from(size) + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > u64::from(frame_max) {
        return Err(CodecError::FrameTooLarge {
            size: total,
            max: frame_max,
        });
    }
    // `total` fits in usize: it is at most u32::MAX + 8 and we only run on 64-bit and 32-bit
    // targets where the check below fails first for anything unbufferable.
    let total = usize::try_from(total).map_err(|_| CodecError::FrameTooLarge {
        size: total,
        max: frame_max,
    })?;
    if buf.len() < total {
        return Ok(None);
    }
    let end = buf.get(total - 1).copied().unwrap_or_default();
    if end != FRAME_END {
        return Err(CodecError::BadFrameEnd(end));
    }
    let mut frame = buf.split_to(total).freeze();
    frame.truncate(total - 1);
    let payload = frame.split_off(FRAME_HEADER_SIZE);
    Frame::parse(kind, channel, payload).map(Some)
}

/// Writes a frame header with a placeholder size; returns where the payload starts.
fn begin_frame(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    buf.put_u8(kind);
    buf.put_u16(channel);
    buf.put_u32(0);
    buf.len()
}

/// Patches the size of the frame whose payload starts at `at` and writes the frame end.
fn end_frame(buf: &mut BytesMut, at: usize) {
    let size = (buf.len() - at) as u32;
    if let Some(slot) = buf.get_mut(at - 4..at) {
        slot.copy_from_slice(&size.to_be_bytes());
    }
    buf.put_u8(FRAME_END);
}

/// Encodes a method frame.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &Method) {
    let at = begin_frame(buf, TYPE_METHOD, channel);
    method.encode(buf);
    end_frame(buf, at);
}

/// Encodes a content header frame.
pub fn encode_header(buf: &mut BytesMut, channel: u16, header: &ContentHeader) {
    let at = begin_frame(buf, TYPE_HEADER, channel);
    header.encode(buf);
    end_frame(buf, at);
}

/// Encodes one body frame.
pub fn encode_body(buf: &mut BytesMut, channel: u16, payload: &[u8]) {
    buf.reserve(FRAME_OVERHEAD + payload.len());
    buf.put_u8(TYPE_BODY);
    buf.put_u16(channel);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(FRAME_END);
}

/// Encodes a heartbeat frame.
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[TYPE_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
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
    encode_method(buf, channel, method);
    let at = begin_frame(buf, TYPE_HEADER, channel);
    buf.put_u16(method.class_id());
    buf.put_u16(0);
    buf.put_u64(body.len() as u64);
    properties.encode(buf);
    end_frame(buf, at);
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
    /// Fewer than 8 octets so far, all consistent with the 0-9-1 header.
    Incomplete,
    /// The AMQP 0-9-1 header.
    Amqp091,
    /// Anything else: answer with [`PROTOCOL_HEADER`] and close.
    Unsupported,
}

/// Checks the start of a connection against the 0-9-1 protocol header.
pub fn check_protocol_header(input: &[u8]) -> ProtocolHeader {
    let n = input.len().min(PROTOCOL_HEADER.len());
    if input.get(..n) != PROTOCOL_HEADER.get(..n) {
        ProtocolHeader::Unsupported
    } else if n < PROTOCOL_HEADER.len() {
        ProtocolHeader::Incomplete
    } else {
        ProtocolHeader::Amqp091
    }
}
