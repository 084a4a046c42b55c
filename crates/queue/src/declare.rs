//! The rules of declaring, using and deleting queues that are not about their messages: names,
//! equivalence of redeclarations, exclusivity, and the texts RabbitMQ refuses them with.

use warren_amqp_codec::erlang::{loose_eq, plain_value, type_name, value_octets};
use warren_amqp_codec::{AmqpException, FieldTable, FieldValue, ReplyCode, ShortStr};

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
    for key in COMPARED_ARGS {
        let req = arg(&requested.arguments, key);
        let cur = arg(&current.arguments, key);
        let tail = match (&req, &cur) {
            (None, None) => continue,
            (Some(a), Some(b)) if a.type_code() == b.type_code() || both_integers(a, b) => {
                if loose_eq(a, b) {
                    continue;
                }
                format!(
                    "received '{}' but current is '{}'",
                    plain_value(a),
                    plain_value(b)
                )
            }
            (Some(a), Some(b)) => {
                format!(
                    "received '{}' but current is '{}'",
                    plain_value(a),
                    plain_value(b)
                )
            }
            (Some(a), None) => format!(
                "received the value '{}' of type '{}' but current is none",
                plain_value(a),
                type_name(a)
            ),
            (None, Some(b)) => format!(
                "received none but current is the value '{}' of type '{}'",
                plain_value(b),
                type_name(b)
            ),
        };
        return Err(AmqpException::channel(
            ReplyCode::PreconditionFailed,
            format!(
                "inequivalent arg '{key}' for queue '{}' in vhost '{vhost}': {tail}",
                text(name)
            ),
        ));
    }
    Ok(())
}

/// The arguments a redeclaration must repeat exactly (others are neither compared nor
/// validated), in RabbitMQ's order.
const COMPARED_ARGS: [&str; 13] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-version",
];

/// An argument's value; an absent `x-queue-type` is `classic`.
fn arg(args: &FieldTable, key: &str) -> Option<FieldValue> {
    match args.get(key) {
        Some(v) => Some(v.clone()),
        None if key == "x-queue-type" => Some(FieldValue::from("classic".to_string())),
        None => None,
    }
}

pub(crate) fn integer(v: &FieldValue) -> Option<i128> {
    match v {
        FieldValue::I8(x) => Some((*x).into()),
        FieldValue::U8(x) => Some((*x).into()),
        FieldValue::I16(x) => Some((*x).into()),
        FieldValue::U16(x) => Some((*x).into()),
        FieldValue::I32(x) => Some((*x).into()),
        FieldValue::U32(x) => Some((*x).into()),
        FieldValue::I64(x) => Some((*x).into()),
        _ => None,
    }
}

fn both_integers(a: &FieldValue, b: &FieldValue) -> bool {
    integer(a).is_some() && integer(b).is_some()
}

/// The longest TTL RabbitMQ accepts: ten years in milliseconds.
pub const MAX_TTL_MS: u64 = 315_360_000_000;

fn invalid_arg(
    key: &str,
    name: &(impl AsRef<[u8]> + ?Sized),
    vhost: &str,
    why: String,
) -> AmqpException {
    AmqpException::channel(
        ReplyCode::PreconditionFailed,
        format!(
            "invalid arg '{key}' for queue '{}' in vhost '{vhost}': {why}",
            text(name)
        ),
    )
}

fn unacceptable(v: &FieldValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// Checks a new queue's arguments as RabbitMQ does, in its order (406 with its texts). Unknown
/// arguments are accepted. Quorum queues must be durable, not exclusive, not auto-delete.
pub fn validate_arguments(
    decl: &QueueDecl,
    name: &(impl AsRef<[u8]> + ?Sized),
    vhost: &str,
) -> Result<(), AmqpException> {
    let args = &decl.arguments;
    if let Some(v) = args.get("x-dead-letter-exchange") {
        if value_octets(v).is_none() {
            return Err(AmqpException::channel(
                ReplyCode::PreconditionFailed,
                format!(
                    "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{}' in vhost '{vhost}'",
                    type_name(v),
                    text(name)
                ),
            ));
        }
    }
    let mut queue_type = "classic".to_string();
    if let Some(v) = args.get("x-queue-type") {
        let t = value_octets(v)
            .ok_or_else(|| invalid_arg("x-queue-type", name, vhost, unacceptable(v)))?;
        queue_type = String::from_utf8_lossy(t).into_owned();
        if !matches!(queue_type.as_str(), "classic" | "quorum") {
            return Err(invalid_arg(
                "x-queue-type",
                name,
                vhost,
                format!("\"unsupported queue type '{queue_type}'\""),
            ));
        }
    }
    let non_negative = |key: &str, v: &FieldValue| -> Result<i128, AmqpException> {
        let n = integer(v).ok_or_else(|| {
            invalid_arg(
                key,
                name,
                vhost,
                format!("\"expected integer, got {}\"", type_name(v)),
            )
        })?;
        if n < 0 {
            return Err(invalid_arg(
                key,
                name,
                vhost,
                format!("{{value_negative,{n}}}"),
            ));
        }
        Ok(n)
    };
    if let Some(v) = args.get("x-expires") {
        let n = non_negative("x-expires", v)?;
        if n == 0 {
            return Err(invalid_arg(
                "x-expires",
                name,
                vhost,
                "{value_zero,0}".into(),
            ));
        }
        if n > i128::from(MAX_TTL_MS) {
            return Err(invalid_arg(
                "x-expires",
                name,
                vhost,
                format!("{{value_too_large,{n}}}"),
            ));
        }
    }
    if let Some(v) = args.get("x-message-ttl") {
        let n = non_negative("x-message-ttl", v)?;
        if n > i128::from(MAX_TTL_MS) {
            return Err(invalid_arg(
                "x-message-ttl",
                name,
                vhost,
                format!("{{value_too_large,{n}}}"),
            ));
        }
    }
    if let Some(v) = args.get("x-dead-letter-routing-key") {
        if value_octets(v).is_none() {
            return Err(invalid_arg(
                "x-dead-letter-routing-key",
                name,
                vhost,
                unacceptable(v),
            ));
        }
        if args.get("x-dead-letter-exchange").is_none() {
            return Err(invalid_arg(
                "x-dead-letter-routing-key",
                name,
                vhost,
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
    }
    for key in ["x-max-length", "x-max-length-bytes"] {
        if let Some(v) = args.get(key) {
            non_negative(key, v)?;
        }
    }
    if let Some(v) = args.get("x-max-priority") {
        let n = non_negative("x-max-priority", v)?;
        if n > 255 {
            return Err(invalid_arg(
                "x-max-priority",
                name,
                vhost,
                format!("{{max_value_exceeded,{n}}}"),
            ));
        }
    }
    if let Some(v) = args.get("x-overflow") {
        let o = value_octets(v)
            .ok_or_else(|| invalid_arg("x-overflow", name, vhost, unacceptable(v)))?;
        if !matches!(o, b"drop-head" | b"reject-publish" | b"reject-publish-dlx") {
            return Err(invalid_arg(
                "x-overflow",
                name,
                vhost,
                "invalid_overflow".into(),
            ));
        }
    }
    if let Some(v) = args.get("x-queue-mode") {
        let m = value_octets(v)
            .ok_or_else(|| invalid_arg("x-queue-mode", name, vhost, unacceptable(v)))?;
        if !matches!(m, b"default" | b"lazy") {
            return Err(invalid_arg(
                "x-queue-mode",
                name,
                vhost,
                format!(
                    "\"unsupported queue mode '{}'\"",
                    String::from_utf8_lossy(m)
                ),
            ));
        }
    }
    if let Some(v) = args.get("x-single-active-consumer") {
        if !matches!(v, FieldValue::Bool(_)) {
            return Err(invalid_arg(
                "x-single-active-consumer",
                name,
                vhost,
                unacceptable(v),
            ));
        }
    }
    if queue_type == "classic" {
        for key in ["x-max-in-memory-length", "x-dead-letter-strategy"] {
            if args.get(key).is_some() {
                return Err(AmqpException::channel(
                    ReplyCode::PreconditionFailed,
                    format!(
                        "invalid arg '{key}' for queue '{}' in vhost '{vhost}' of queue type rabbit_classic_queue",
                        text(name)
                    ),
                ));
            }
        }
    } else {
        let property = if !decl.durable {
            Some("non-durable")
        } else if decl.exclusive {
            Some("exclusive-owner")
        } else if decl.auto_delete {
            Some("auto-delete")
        } else {
            None
        };
        if let Some(p) = property {
            return Err(AmqpException::channel(
                ReplyCode::PreconditionFailed,
                format!(
                    "invalid property '{p}' for queue '{}' in vhost '{vhost}'",
                    text(name)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a message's `expiration` property as RabbitMQ does (an integer number of
/// milliseconds, 0 to ten years, written as Erlang's `string:to_integer` reads it); returns the
/// TTL, or 406 "invalid expiration 'E': T".
pub fn check_expiration(expiration: &[u8]) -> Result<u64, AmqpException> {
    let shown = String::from_utf8_lossy(expiration);
    let fail = |why: String| {
        AmqpException::channel(
            ReplyCode::PreconditionFailed,
            format!("invalid expiration '{shown}': {why}"),
        )
    };
    let (negative, digits_start) = match expiration.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let rest = expiration.get(digits_start..).unwrap_or_default();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(fail("no_integer".into()));
    }
    let (num, leftover) = rest.split_at(digits);
    if !leftover.is_empty() {
        return Err(fail(format!(
            "{{leftover_string,\"{}\"}}",
            String::from_utf8_lossy(leftover)
        )));
    }
    let text_num = String::from_utf8_lossy(num);
    let value: u128 = text_num.parse().unwrap_or(u128::MAX);
    if negative && value > 0 {
        return Err(fail(format!("{{value_negative,-{text_num}}}")));
    }
    if value > u128::from(MAX_TTL_MS) {
        return Err(fail(format!("{{value_too_large,{text_num}}}")));
    }
    Ok(value as u64)
}

/// The queue does not exist (404).
pub fn not_found(name: &(impl AsRef<[u8]> + ?Sized), vhost: &str) -> AmqpException {
    AmqpException::channel(
        ReplyCode::NotFound,
        format!("no queue '{}' in vhost '{vhost}'", text(name)),
    )
}

/// RabbitMQ's shortcut: `queue.bind`/`unbind` naming neither queue nor routing key binds the
/// channel's last declared queue (`queue`) with its own name as the key.
pub fn routing_key_shortcut(
    queue_arg: &warren_amqp_codec::ShortStr,
    key: &warren_amqp_codec::ShortStr,
    queue: &warren_amqp_codec::ShortStr,
) -> warren_amqp_codec::ShortStr {
    if queue_arg.is_empty() && key.is_empty() {
        queue.clone()
    } else {
        key.clone()
    }
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

/// `basic.consume` arguments: `x-priority` must be an integer (406); others are ignored.
pub fn check_consumer_arguments(
    args: &FieldTable,
    name: &(impl AsRef<[u8]> + ?Sized),
    vhost: &str,
) -> Result<(), AmqpException> {
    if let Some(v) = args.get("x-priority") {
        if integer(v).is_none() {
            return Err(invalid_arg(
                "x-priority",
                name,
                vhost,
                format!("\"expected integer, got {}\"", type_name(v)),
            ));
        }
    }
    Ok(())
}

/// The rules a declared queue's arguments set (after [`validate_arguments`] accepted them):
/// `x-message-ttl`, `x-max-length`, `x-max-length-bytes`, `x-overflow`, `x-max-priority`,
/// `x-delivery-limit`. Values of the wrong kind are ignored here (validation refused them).
fn limits(args: &FieldTable) -> crate::Limits {
    let number = |key: &str| {
        args.get(key)
            .and_then(integer)
            .filter(|n| *n >= 0)
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
    };
    let overflow = match args.get("x-overflow").and_then(value_octets) {
        Some(b"reject-publish") => crate::Overflow::RejectPublish,
        Some(b"reject-publish-dlx") => crate::Overflow::RejectPublishDlx,
        _ => crate::Overflow::DropHead,
    };
    crate::Limits {
        message_ttl: number("x-message-ttl"),
        max_length: number("x-max-length"),
        max_length_bytes: number("x-max-length-bytes"),
        overflow,
        max_priority: number("x-max-priority").map(|n| u8::try_from(n).unwrap_or(u8::MAX)),
        delivery_limit: number("x-delivery-limit").map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

/// Everything a queue's arguments, and the policy that applies to it, set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// The queue's own rules.
    pub config: crate::QueueConfig,
    /// Its dead-letter exchange and routing key, if it dead-letters.
    pub dead_letter: Option<(ShortStr, Option<ShortStr>)>,
    /// `x-expires`: milliseconds it may stay unused before it is deleted.
    pub expires: Option<u64>,
}

/// A queue's settings from its declaration (after [`validate_arguments`] accepted it) and
/// the policy that applies to it, if any (already combined with the operator policy:
/// [`crate::policy::Definition::with_operator`]), as RabbitMQ combines them: the lower of
/// `x-message-ttl`, `x-expires`, `x-max-length`, `x-max-length-bytes`, `x-delivery-limit`
/// and the policy's; the argument's `x-overflow`, `x-dead-letter-exchange` and
/// `x-dead-letter-routing-key` over the policy's, key by key.
pub fn settings(decl: &QueueDecl, policy: Option<&crate::policy::Definition>) -> QueueSettings {
    use crate::policy::lower;
    let args = &decl.arguments;
    let own = limits(args);
    let short = |v: &FieldValue| {
        value_octets(v).and_then(|b| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(b)).ok())
    };
    let arg_dlx = args.get("x-dead-letter-exchange").and_then(short);
    let arg_dlrk = args.get("x-dead-letter-routing-key").and_then(short);
    let arg_expires = args
        .get("x-expires")
        .and_then(integer)
        .and_then(|n| u64::try_from(n).ok());
    let p = policy.cloned().unwrap_or_default();
    let overflow = if args.get("x-overflow").is_some() {
        own.overflow
    } else {
        p.overflow.unwrap_or(own.overflow)
    };
    let limits = crate::Limits {
        message_ttl: lower(own.message_ttl, p.message_ttl),
        max_length: lower(own.max_length, p.max_length),
        max_length_bytes: lower(own.max_length_bytes, p.max_length_bytes),
        overflow,
        max_priority: own.max_priority,
        delivery_limit: lower(own.delivery_limit, p.delivery_limit),
    };
    let dead_letter = arg_dlx
        .or(p.dead_letter_exchange)
        .map(|x| (x, arg_dlrk.or(p.dead_letter_routing_key)));
    QueueSettings {
        config: crate::QueueConfig {
            auto_delete: decl.auto_delete,
            limits,
            single_active_consumer: matches!(
                args.get("x-single-active-consumer"),
                Some(FieldValue::Bool(true))
            ),
        },
        dead_letter,
        expires: lower(arg_expires, p.expires),
    }
}

/// `x-dead-letter-exchange` of a queue's arguments, if set (the exchange a declaration must
/// have `write` permission on).
pub fn dead_letter_exchange(args: &FieldTable) -> Option<ShortStr> {
    args.get("x-dead-letter-exchange")
        .and_then(value_octets)
        .and_then(|b| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(b)).ok())
}

/// A consumer's `x-priority` (0 without one).
pub fn consumer_priority(args: &FieldTable) -> i32 {
    args.get("x-priority").and_then(integer).map_or(0, |p| {
        p.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    })
}
