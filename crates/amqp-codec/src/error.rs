//! Decoding errors and AMQP exceptions.
//!
//! Reply codes and texts follow RabbitMQ (3.10 observed on the wire, and its current sources):
//! see `docs/design/amqp-wire.md` for the table, and `docs/deviations.md` for the few places
//! where we answer where RabbitMQ drops the socket.

use crate::ReplyCode;
use bytes::Bytes;
use std::fmt;

/// Why a byte sequence is not valid AMQP 0-9-1.
///
/// Every variant maps to the reply code RabbitMQ closes the connection with
/// ([`CodecError::reply_code`]); all of them are connection-level (hard) errors. The `Display`
/// text is RabbitMQ's explanation (what follows `CODE_NAME - ` in its `reply-text`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The octet after a frame's payload was not `0xCE`. The stream is out of step: fatal.
    #[error("type {kind}, {} = {}: {{invalid_frame_end_marker,{end}}}", snippet_label(*payload_len as usize), ErlangBinary::new(snippet))]
    BadFrameEnd {
        /// The frame type octet.
        kind: u8,
        /// The first (at most 16) octets of the payload.
        snippet: Bytes,
        /// The payload's length.
        payload_len: u32,
        /// The octet found where `0xCE` should be.
        end: u8,
    },
    /// A frame whose payload is larger than the negotiated `frame_max` (RabbitMQ allows the
    /// 8 octets of framing on top). Checked before the payload is read: fatal.
    #[error("type {kind}, all octets = <<>>: {{frame_too_large,{size},{}}}", frame_max.saturating_sub(8))]
    FrameTooLarge {
        /// The frame type octet.
        kind: u8,
        /// The payload size from the frame header.
        size: u32,
        /// The negotiated `frame_max`.
        frame_max: u32,
    },
    /// A frame that cannot be a frame: unknown type, a heartbeat with a payload, a method frame
    /// shorter than its ids, a content header shorter than its fixed fields.
    #[error("type {kind}, {} = {}: unknown_frame", snippet_label(*payload_len as usize), ErlangBinary::new(snippet))]
    UnknownFrame {
        /// The frame type octet.
        kind: u8,
        /// The first (at most 16) octets of the payload.
        snippet: Bytes,
        /// The payload's length.
        payload_len: u32,
    },
    /// A heartbeat frame on a channel other than 0.
    #[error("type 8, all octets = <<>>")]
    HeartbeatOnChannel {
        /// The channel it arrived on.
        channel: u16,
    },
    /// A known method whose arguments do not decode (truncated, trailing octets, a bad field
    /// table inside).
    #[error("cannot decode {}", ErlangBinary::numbers(args))]
    MethodArgs {
        /// Class of the method.
        class_id: u16,
        /// The method.
        method_id: u16,
        /// The argument octets as received.
        args: Bytes,
    },
    /// A short string argument of a method without content that is not UTF-8 (RabbitMQ checks
    /// these; it does not check `basic.publish` and the other content-carrying methods).
    #[error("Malformed UTF-8 in shortstr")]
    MalformedUtf8,
    /// A method frame naming a class or method that does not exist.
    #[error("unknown method: class {class_id}, method {method_id}")]
    UnknownMethod {
        /// Class id from the frame.
        class_id: u16,
        /// Method id from the frame.
        method_id: u16,
    },
    /// A content header for a class that carries no content (only `basic` does).
    #[error("content header for class {class_id}, which carries no content")]
    ContentClass {
        /// The channel the header arrived on.
        channel: u16,
        /// The class id in the header.
        class_id: u16,
    },
    /// A content header whose property list does not decode.
    #[error("malformed content header properties: {0}")]
    Properties(Box<CodecError>),
    /// A field ended before its declared length.
    #[error("truncated {what}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
    },
    /// Octets left over after the last argument or property.
    #[error("{count} trailing octets after {what}")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many octets were left.
        count: usize,
    },
    /// A field-table or array value with a type code RabbitMQ does not know.
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// Field tables or arrays nested deeper than [`crate::table::MAX_NESTING`].
    #[error("field tables nested deeper than {0} levels")]
    NestingTooDeep(usize),
}

impl CodecError {
    /// The AMQP reply code for this error, as RabbitMQ uses it.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            CodecError::BadFrameEnd { .. }
            | CodecError::FrameTooLarge { .. }
            | CodecError::UnknownFrame { .. }
            | CodecError::MethodArgs { .. }
            | CodecError::MalformedUtf8 => ReplyCode::FrameError,
            CodecError::HeartbeatOnChannel { .. } | CodecError::ContentClass { .. } => {
                ReplyCode::UnexpectedFrame
            }
            CodecError::UnknownMethod { .. } => ReplyCode::CommandInvalid,
            CodecError::Properties(_)
            | CodecError::Truncated { .. }
            | CodecError::TrailingBytes { .. }
            | CodecError::UnknownFieldType(_)
            | CodecError::NestingTooDeep(_) => ReplyCode::SyntaxError,
        }
    }

    /// Whether the byte stream is out of step after this error, so that nothing more can be
    /// read from the connection (RabbitMQ's "fatal frame error").
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            CodecError::BadFrameEnd { .. } | CodecError::FrameTooLarge { .. }
        )
    }

    /// The class and method ids a `connection.close` for this error names (0, 0 for none).
    pub fn method_ids(&self) -> (u16, u16) {
        match self {
            CodecError::MethodArgs {
                class_id,
                method_id,
                ..
            } => (*class_id, *method_id),
            _ => (0, 0),
        }
    }
}

pub(crate) fn snippet_label(payload_len: usize) -> &'static str {
    if payload_len <= 16 {
        "all octets"
    } else {
        "first 16 octets"
    }
}

/// Octets printed the way Erlang's `~p` prints a binary, as RabbitMQ's reply texts show them:
/// `<<"text">>` when every octet is printable, `<<1,2,3>>` otherwise. Other crates use it so
/// that their reply texts print octets exactly as RabbitMQ's do.
pub struct ErlangBinary<'a> {
    octets: &'a [u8],
    numbers_only: bool,
}

impl<'a> ErlangBinary<'a> {
    /// As `~p` prints it.
    pub fn new(octets: &'a [u8]) -> Self {
        Self {
            octets,
            numbers_only: false,
        }
    }

    /// As `~w` prints it: always numbers.
    pub fn numbers(octets: &'a [u8]) -> Self {
        Self {
            octets,
            numbers_only: true,
        }
    }
}

impl fmt::Display for ErlangBinary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let printable = |b: u8| matches!(b, 32..=126 | 160..=255 | b'\n' | b'\t' | b'\r' | 0x0b | 0x08 | 0x0c | 0x1b);
        f.write_str("<<")?;
        if !self.numbers_only
            && !self.octets.is_empty()
            && self.octets.iter().all(|&b| printable(b))
        {
            f.write_str("\"")?;
            for &b in self.octets {
                match b {
                    b'"' => f.write_str("\\\"")?,
                    b'\\' => f.write_str("\\\\")?,
                    b'\n' => f.write_str("\\n")?,
                    b'\t' => f.write_str("\\t")?,
                    b'\r' => f.write_str("\\r")?,
                    0x0b => f.write_str("\\v")?,
                    0x08 => f.write_str("\\b")?,
                    0x0c => f.write_str("\\f")?,
                    0x1b => f.write_str("\\e")?,
                    // Latin-1: 32..=126 and 160..=255 are the same code points in Unicode.
                    b => fmt::Write::write_char(f, char::from(b))?,
                }
            }
            f.write_str("\"")?;
        } else {
            for (i, b) in self.octets.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{b}")?;
            }
        }
        f.write_str(">>")
    }
}

/// Whether an exception closes one channel or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A soft error: `channel.close`, the connection stays up.
    Channel,
    /// A hard error: `connection.close`.
    Connection,
}

/// An AMQP exception: what the server answers with `channel.close` or `connection.close`.
///
/// It carries RabbitMQ's reply code and text, the method that caused it (class and method id,
/// 0 when no method is to blame), and its [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text}", code.name())]
pub struct AmqpException {
    /// The reply code.
    pub code: ReplyCode,
    /// The reply text without the code name prefix, e.g. `no queue 'q' in vhost '/'`.
    pub text: String,
    /// Class of the offending method, or 0.
    pub class_id: u16,
    /// The offending method, or 0.
    pub method_id: u16,
    /// Channel or connection.
    pub scope: Scope,
}

impl AmqpException {
    /// A channel-level exception.
    pub fn channel(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            scope: Scope::Channel,
        }
    }

    /// A connection-level exception.
    pub fn connection(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            scope: Scope::Connection,
        }
    }

    /// Names the method that caused the exception.
    pub fn caused_by(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The text as RabbitMQ puts it in `reply-text`: `NOT_FOUND - no queue 'q' in vhost '/'`.
    /// Like RabbitMQ, a text longer than a short string holds is cut to 252 octets followed by
    /// `...` (on a character boundary).
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", self.code.name(), self.text);
        if s.len() > 255 {
            let mut end = 252;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str("...");
        }
        s
    }
}

impl From<CodecError> for AmqpException {
    fn from(e: CodecError) -> Self {
        let (class_id, method_id) = e.method_ids();
        AmqpException::connection(e.reply_code(), e.to_string()).caused_by(class_id, method_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_binaries_print_like_rabbitmq() {
        assert_eq!(ErlangBinary::new(b"").to_string(), "<<>>");
        assert_eq!(
            ErlangBinary::new(&[0, 20, 0, 10, 0]).to_string(),
            "<<0,20,0,10,0>>"
        );
        assert_eq!(
            ErlangBinary::new(b"ab\"c\\\n").to_string(),
            "<<\"ab\\\"c\\\\\\n\">>"
        );
        assert_eq!(ErlangBinary::numbers(b"ab").to_string(), "<<97,98>>");
    }

    #[test]
    fn frame_errors_read_like_rabbitmqs() {
        let e = CodecError::BadFrameEnd {
            kind: 1,
            snippet: Bytes::from_static(&[0, 20, 0, 10, 0]),
            payload_len: 5,
            end: 0,
        };
        assert_eq!(
            e.to_string(),
            "type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}"
        );
        let e = CodecError::FrameTooLarge {
            kind: 1,
            size: 131_073,
            frame_max: 131_072,
        };
        assert_eq!(
            e.to_string(),
            "type 1, all octets = <<>>: {frame_too_large,131073,131064}"
        );
        let e = CodecError::MethodArgs {
            class_id: 20,
            method_id: 40,
            args: Bytes::from_static(&[0, 0, 1, 113]),
        };
        assert_eq!(
            AmqpException::from(e).reply_text(),
            "FRAME_ERROR - cannot decode <<0,0,1,113>>"
        );
    }

    #[test]
    fn long_reply_texts_are_cut_like_rabbitmqs() {
        let e = AmqpException::channel(ReplyCode::NotFound, "x".repeat(400));
        let t = e.reply_text();
        assert_eq!(t.len(), 255);
        assert!(t.ends_with("..."));
    }
}
