//! Policies and operator policies, as RabbitMQ 3.10 has them: which keys a definition may
//! set and the texts it refuses bad values with ([`Definition::parse`]), what a policy applies
//! to ([`ApplyTo`]), which of several matching policies wins ([`choose`]), how an operator
//! policy combines with a policy ([`Definition::with_operator`]) and how the result combines
//! with a queue's own arguments ([`crate::declare::settings`]).
//!
//! Matching names against a policy's pattern (a regular expression) is the caller's: this
//! crate takes the candidates that matched.
//!
//! The rules, as observed on RabbitMQ 3.10.8 (`docs/design/queue-features.md` §9):
//! - Only the matching policy of the highest priority applies (no merging of policies); of
//!   equal priorities, the one whose name sorts first.
//! - `message-ttl`, `expires`, `max-length`, `max-length-bytes`, `delivery-limit`: the lowest
//!   of argument, policy and operator policy wins.
//! - `overflow`, `dead-letter-exchange`, `dead-letter-routing-key`, `alternate-exchange`: the
//!   argument wins, key by key.
//! - Operator policies may set only the numeric keys above.

use crate::Overflow;
use warren_amqp_codec::erlang::{erlang_value, value_octets};
use warren_amqp_codec::{FieldTable, FieldValue, ShortStr};

/// A policy set by users with the `policymaker` tag, or an operator policy (set by operators,
/// for limits users cannot lift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `set_policy`.
    Policy,
    /// `set_operator_policy`.
    Operator,
}

/// What a policy applies to (`--apply-to`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ApplyTo {
    /// Queues and exchanges.
    #[default]
    All,
    /// Queues only.
    Queues,
    /// Exchanges only.
    Exchanges,
    /// Classic queues only (later RabbitMQ releases).
    ClassicQueues,
    /// Quorum queues only (later RabbitMQ releases).
    QuorumQueues,
    /// Streams only (later RabbitMQ releases).
    Streams,
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An exchange.
    Exchange,
    /// A queue of this `x-queue-type` (`classic`, `quorum`, `stream`).
    Queue(QueueType),
}

/// A queue's type, as far as `apply-to` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// `classic` (the default).
    Classic,
    /// `quorum`.
    Quorum,
    /// `stream`.
    Stream,
}

impl QueueType {
    /// The type a queue's `x-queue-type` argument names (`classic` without one).
    pub fn of(args: &FieldTable) -> QueueType {
        match args.get("x-queue-type").and_then(value_octets) {
            Some(b"quorum") => QueueType::Quorum,
            Some(b"stream") => QueueType::Stream,
            _ => QueueType::Classic,
        }
    }
}

impl ApplyTo {
    /// The names, as `--apply-to` and definitions files spell them.
    pub const NAMES: [(&'static str, ApplyTo); 6] = [
        ("all", ApplyTo::All),
        ("queues", ApplyTo::Queues),
        ("exchanges", ApplyTo::Exchanges),
        ("classic_queues", ApplyTo::ClassicQueues),
        ("quorum_queues", ApplyTo::QuorumQueues),
        ("streams", ApplyTo::Streams),
    ];

    /// Reads an `apply-to` value, with RabbitMQ's text for an unknown one.
    pub fn parse(s: &str) -> Result<ApplyTo, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                format!("apply-to '{s}' unrecognised; should be 'queues', 'exchanges' or 'all'")
            })
    }

    /// The name, as [`Self::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("all", |(n, _)| n)
    }

    /// Whether a policy with this `apply-to` applies to the target.
    pub fn applies(self, target: Target) -> bool {
        matches!(
            (self, target),
            (ApplyTo::All, _)
                | (ApplyTo::Exchanges, Target::Exchange)
                | (ApplyTo::Queues, Target::Queue(_))
                | (ApplyTo::ClassicQueues, Target::Queue(QueueType::Classic))
                | (ApplyTo::QuorumQueues, Target::Queue(QueueType::Quorum))
                | (ApplyTo::Streams, Target::Queue(QueueType::Stream))
        )
    }
}

/// Of the policies that match a name and apply to its kind, the one that applies: the highest
/// priority, then the name that sorts first (RabbitMQ never merges two policies).
pub fn choose<'a, P>(
    matching: impl IntoIterator<Item = &'a P>,
    key: impl Fn(&P) -> (i64, &str),
) -> Option<&'a P> {
    matching.into_iter().reduce(|best, p| {
        let (bp, bn) = key(best);
        let (pp, pn) = key(p);
        if pp > bp || (pp == bp && pn < bn) {
            p
        } else {
            best
        }
    })
}

/// Keys RabbitMQ 3.10 knows that Warren accepts, keeps and exports but does not act on (they
/// concern mirroring, federation, shovels, lazy mode and other queue types' tuning): a
/// definitions file from RabbitMQ that uses them still imports.
pub const KEPT_KEYS: &[&str] = &[
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-mode",
    "queue-version",
    "queue-master-locator",
    "queue-leader-locator",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "dead-letter-strategy",
    "federation-upstream",
    "federation-upstream-set",
    "max-age",
    "stream-max-segment-size-bytes",
    "initial-cluster-size",
];

/// A policy's definition, checked: the keys that act, each `None` when the policy does not
/// set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definition {
    /// `message-ttl` (milliseconds).
    pub message_ttl: Option<u64>,
    /// `expires` (milliseconds).
    pub expires: Option<u64>,
    /// `max-length`.
    pub max_length: Option<u64>,
    /// `max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `overflow`.
    pub overflow: Option<Overflow>,
    /// `dead-letter-exchange`.
    pub dead_letter_exchange: Option<ShortStr>,
    /// `dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<ShortStr>,
    /// `alternate-exchange` (for exchanges).
    pub alternate_exchange: Option<ShortStr>,
    /// `delivery-limit`.
    pub delivery_limit: Option<u32>,
}

/// The keys an operator policy may set that act (it may also set `max-in-memory-length` and
/// `max-in-memory-bytes`, kept and not acted on).
const OPERATOR_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
];

impl Definition {
    /// Checks a definition (a JSON object read as a field table: integers `l`, other numbers
    /// `d`, strings `S`) as RabbitMQ's `set_policy` and `set_operator_policy` do, with their
    /// texts: an empty one is `no policy provided`; keys that may not be set are listed in one
    /// error; then each value is checked.
    pub fn parse(table: &FieldTable, kind: PolicyKind) -> Result<Definition, String> {
        if table.is_empty() {
            return Err("no policy provided".into());
        }
        let allowed = |k: &str| match kind {
            PolicyKind::Operator => {
                OPERATOR_KEYS.contains(&k)
                    || k == "max-in-memory-length"
                    || k == "max-in-memory-bytes"
            }
            PolicyKind::Policy => KNOWN_KEYS.contains(&k) || KEPT_KEYS.contains(&k),
        };
        let unknown: Vec<String> = table
            .iter()
            .filter(|(k, _)| !allowed(&String::from_utf8_lossy(k.as_bytes())))
            .map(|(k, v)| {
                format!(
                    "{{<<\"{}\">>,{}}}",
                    String::from_utf8_lossy(k.as_bytes()),
                    erlang_value(v)
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "[{}] are not recognised policy settings",
                unknown.join(",")
            ));
        }
        let mut d = Definition::default();
        for (k, v) in table.iter() {
            let bad = |what: &str| format!("{} is not a valid {what}", erlang_value(v));
            let count = |what: &str| non_negative(v).ok_or_else(|| bad(what));
            let name = |what: &str| {
                value_octets(v)
                    .and_then(|o| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(o)).ok())
                    .ok_or_else(|| bad(what))
            };
            match k.as_bytes() {
                b"message-ttl" => {
                    d.message_ttl = Some(count("message TTL")?);
                }
                b"expires" => {
                    d.expires = Some(count("queue expiry").and_then(|n| {
                        if n == 0 {
                            Err(bad("queue expiry"))
                        } else {
                            Ok(n)
                        }
                    })?);
                }
                b"max-length" => d.max_length = Some(count("maximum length")?),
                b"max-length-bytes" => {
                    d.max_length_bytes = Some(count("maximum length in bytes")?);
                }
                b"delivery-limit" => {
                    d.delivery_limit =
                        Some(u32::try_from(count("delivery limit")?).unwrap_or(u32::MAX));
                }
                b"overflow" => {
                    d.overflow = Some(match value_octets(v) {
                        Some(b"drop-head") => Overflow::DropHead,
                        Some(b"reject-publish") => Overflow::RejectPublish,
                        Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
                        _ => return Err(bad("overflow value")),
                    });
                }
                b"dead-letter-exchange" => {
                    d.dead_letter_exchange = Some(name("dead letter exchange name")?);
                }
                b"dead-letter-routing-key" => {
                    d.dead_letter_routing_key = Some(name("dead letter routing key")?);
                }
                b"alternate-exchange" => {
                    d.alternate_exchange = Some(name("alternate exchange name")?);
                }
                _ => {} // one of KEPT_KEYS
            }
        }
        Ok(d)
    }

    /// This policy with an operator policy over it: the lower of each limit both set.
    pub fn with_operator(&self, operator: &Definition) -> Definition {
        Definition {
            message_ttl: lower(self.message_ttl, operator.message_ttl),
            expires: lower(self.expires, operator.expires),
            max_length: lower(self.max_length, operator.max_length),
            max_length_bytes: lower(self.max_length_bytes, operator.max_length_bytes),
            delivery_limit: lower(self.delivery_limit, operator.delivery_limit),
            ..self.clone()
        }
    }
}

/// The keys a policy may set that act.
const KNOWN_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "alternate-exchange",
    "delivery-limit",
];

/// The lower of two optional limits (either alone when the other is unset).
pub(crate) fn lower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn non_negative(v: &FieldValue) -> Option<u64> {
    crate::declare::integer(v).and_then(|n| u64::try_from(n).ok())
}
