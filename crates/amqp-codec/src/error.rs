//! Decoding errors and AMQP exceptions.

use crate::ReplyCode;

/// Why a byte sequence is not valid AMQP 0-9-1.
///
/// Every variant maps to the reply code RabbitMQ closes the connection with
/// ([`CodecError::reply_code`]); all of them are connection-level (hard) errors.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The octet after a frame's payload was not `0xCE`.
    #[error("frame end octet {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    /// The frame type octet is not 1, 2, 3 or 8.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A frame larger than the negotiated `frame_max` (size includes the 8 octets of framing).
    #[error("frame size {size} exceeds frame_max {max}")]
    FrameTooLarge {
        /// Size of the whole frame in octets, header and frame-end included.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// A heartbeat frame on a channel other than 0, or with a non-empty payload.
    #[error("malformed heartbeat frame on channel {channel}")]
    BadHeartbeat {
        /// The channel the heartbeat arrived on.
        channel: u16,
    },
    /// A field ended before its declared length.
    #[error("truncated {what}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
    },
    /// Octets left over after the last argument of a method or property list.
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
    /// A method frame naming a class or method that does not exist.
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod {
        /// Class id from the frame.
        class_id: u16,
        /// Method id from the frame.
        method_id: u16,
    },
    /// A content header for a class that has no content (only `basic` has).
    #[error("content header for class {0}, which carries no content")]
    UnknownContentClass(u16),
    /// Property flags with a bit set that names no property, or a continuation bit.
    #[error("invalid property flags {0:#06x}")]
    BadPropertyFlags(u16),
}

impl CodecError {
    /// The AMQP reply code RabbitMQ uses when it meets this error.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            CodecError::BadFrameEnd(_)
            | CodecError::UnknownFrameType(_)
            | CodecError::FrameTooLarge { .. }
            | CodecError::BadHeartbeat { .. } => ReplyCode::FrameError,
            CodecError::UnknownMethod { .. } => ReplyCode::CommandInvalid,
            CodecError::Truncated { .. }
            | CodecError::TrailingBytes { .. }
            | CodecError::UnknownFieldType(_)
            | CodecError::NestingTooDeep(_)
            | CodecError::UnknownContentClass(_)
            | CodecError::BadPropertyFlags(_) => ReplyCode::SyntaxError,
        }
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

    /// The text as RabbitMQ puts it in `reply-text`: `NOT_FOUND - no queue 'q' in vhost '/'`,
    /// cut to the 255 octets a short string holds (on a character boundary).
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", self.code.name(), self.text);
        if s.len() > 255 {
            let mut end = 255;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    }
}

impl From<CodecError> for AmqpException {
    fn from(e: CodecError) -> Self {
        AmqpException::connection(e.reply_code(), e.to_string())
    }
}
