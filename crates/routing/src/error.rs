//! Errors, each carrying the reply code and text RabbitMQ uses for the same mistake.

use warren_amqp_codec::{AmqpException, ReplyCode};

/// Why a routing operation was refused. Every variant maps to the exception RabbitMQ raises
/// for it; [`RoutingError::exception`] builds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The exchange does not exist (404).
    #[error("no exchange '{name}' in vhost '{vhost}'")]
    ExchangeNotFound {
        /// Exchange name.
        name: String,
        /// Virtual host.
        vhost: String,
    },
    /// The queue does not exist (404).
    #[error("no queue '{name}' in vhost '{vhost}'")]
    QueueNotFound {
        /// Queue name.
        name: String,
        /// Virtual host.
        vhost: String,
    },
    /// Declaring, deleting or binding the default exchange (403).
    #[error("operation not permitted on the default exchange")]
    DefaultExchange,
    /// Declaring an exchange whose name starts with `amq.` (403).
    #[error("exchange name '{name}' contains reserved prefix 'amq.*'")]
    ReservedName {
        /// Exchange name.
        name: String,
    },
    /// Deleting one of the predeclared `amq.*` exchanges (403).
    #[error("deletion of system exchange '{name}' in vhost '{vhost}' not allowed")]
    SystemExchange {
        /// Exchange name.
        name: String,
        /// Virtual host.
        vhost: String,
    },
    /// Redeclaring an exchange with different properties (406). `received` and `current` are
    /// already formatted the way RabbitMQ prints them.
    #[error(
        "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received {received} but current is {current}"
    )]
    Inequivalent {
        /// Which property or argument differs.
        arg: String,
        /// Exchange name.
        name: String,
        /// Virtual host.
        vhost: String,
        /// What the client sent.
        received: String,
        /// What the exchange has.
        current: String,
    },
    /// The exchange type is not known (503, a connection error).
    #[error("unknown exchange type '{kind}'")]
    UnknownType {
        /// The type name sent.
        kind: String,
    },
    /// `exchange.delete` with if-unused on an exchange that has bindings (406).
    #[error("exchange '{name}' in vhost '{vhost}' in use")]
    InUse {
        /// Exchange name.
        name: String,
        /// Virtual host.
        vhost: String,
    },
    /// Publishing to an internal exchange (403).
    #[error("cannot publish to internal exchange '{name}' in vhost '{vhost}'")]
    Internal {
        /// Exchange name.
        name: String,
        /// Virtual host.
        vhost: String,
    },
    /// The exchange type refused the binding's key or arguments (406); the text says why.
    #[error("{0}")]
    InvalidBinding(String),
    /// The exchange type or the topology refused an exchange argument (406).
    #[error("{0}")]
    InvalidArgument(String),
    /// The message's routing headers (`CC`, `BCC`) are malformed (406).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
}

impl RoutingError {
    /// The reply code RabbitMQ closes the channel with.
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::ExchangeNotFound { .. } | Self::QueueNotFound { .. } => ReplyCode::NotFound,
            Self::DefaultExchange
            | Self::ReservedName { .. }
            | Self::SystemExchange { .. }
            | Self::Internal { .. } => ReplyCode::AccessRefused,
            Self::Inequivalent { .. }
            | Self::InUse { .. }
            | Self::InvalidBinding(_)
            | Self::InvalidArgument(_)
            | Self::InvalidMessage(_) => ReplyCode::PreconditionFailed,
            Self::UnknownType { .. } => ReplyCode::CommandInvalid,
        }
    }

    /// The exception to raise: a channel exception, except for the hard error 503 which closes
    /// the connection. The caller adds the class and method ids of the method that failed
    /// with [`AmqpException::caused_by`].
    pub fn exception(&self) -> AmqpException {
        let code = self.reply_code();
        if code.is_hard_error() {
            AmqpException::connection(code, self.to_string())
        } else {
            AmqpException::channel(code, self.to_string())
        }
    }
}
