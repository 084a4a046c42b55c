//! The rules of declaring, using and deleting queues that are not about their messages: names,
//! equivalence of redeclarations, exclusivity, and the texts RabbitMQ refuses them with.

use warren_amqp_codec::{AmqpException, FieldTable, ReplyCode};

/// What a `queue.declare` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDecl {
    /// Survives a restart.
    pub durable: bool,
    /// Belongs to the declaring connection.
    pub exclusive: bool,
    /// Deleted once its last consumer goes.
    pub auto_delete: bool,
    /// `x-` arguments.
    pub arguments: FieldTable,
}

fn text(name: &(impl AsRef<[u8]> + ?Sized)) -> String {
    String::from_utf8_lossy(name.as_ref()).into_owned()
}

/// A client may not declare a queue whose name starts with `amq.` (403).
pub fn check_name(name: &(impl AsRef<[u8]> + ?Sized)) -> Result<(), AmqpException> {
    if name.as_ref().starts_with(b"amq.") {
        return Err(AmqpException::channel(
            ReplyCode::AccessRefused,
            format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                text(name)
            ),
        ));
    }
    Ok(())
}

/// A redeclaration must match the queue's flags, compared in RabbitMQ's order: `exclusive`
/// first (405, as [`locked`]), then `durable` and `auto_delete` (406).
pub fn check_equivalent(
    current: &QueueDecl,
    requested: &QueueDecl,
    name: &(impl AsRef<[u8]> + ?Sized),
    vhost: &str,
) -> Result<(), AmqpException> {
    // RabbitMQ (`rabbit_amqqueue:assert_equivalence`) checks exclusivity first, strictly: a
    // different `exclusive` flag is 405 RESOURCE_LOCKED, never an inequivalent arg.
    if current.exclusive != requested.exclusive {
        return Err(locked(name, vhost));
    }
    let flags = [
        ("durable", current.durable, requested.durable),
        ("auto_delete", current.auto_delete, requested.auto_delete),
    ];
    for (arg, cur, req) in flags {
        if cur != req {
            return Err(AmqpException::channel(
                ReplyCode::PreconditionFailed,
                format!(
                    "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': received '{req}' but current is '{cur}'",
                    text(name)
                ),
            ));
        }
    }
    Ok(())
}

/// The queue does not exist (404).
pub fn not_found(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::NotFound,
        format!("no queue '{}' in vhost '{vhost}'", text(name)),
    )
}

/// `""` as a queue name where the channel has declared no queue yet (404).
pub fn no_previous_queue() -> AmqpException {
    AmqpException::channel(ReplyCode::NotFound, "no previously declared queue")
}

/// The queue is exclusive to another connection (405).
pub fn locked(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::ResourceLocked,
        format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            text(name)
        ),
    )
}

/// `queue.delete` with `if_unused` on a queue with consumers (406).
pub fn in_use(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::PreconditionFailed,
        format!("queue '{}' in vhost '{vhost}' in use", text(name)),
    )
}

/// `queue.delete` with `if_empty` on a queue with messages (406).
pub fn not_empty(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::PreconditionFailed,
        format!("queue '{}' in vhost '{vhost}' not empty", text(name)),
    )
}

/// `basic.consume` refused because of an exclusive consumer (403).
pub fn exclusive_use(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::AccessRefused,
        format!("queue '{}' in vhost '{vhost}' in exclusive use", text(name)),
    )
}

/// `basic.consume` with a tag already used on the channel (a connection error, 530).
pub fn reused_tag(tag: &(impl AsRef<[u8]> + ?Sized)) -> AmqpException {
    AmqpException::connection(
        ReplyCode::NotAllowed,
        format!("attempt to reuse consumer tag '{}'", text(tag)),
    )
}
