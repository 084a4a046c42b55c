//! # warren-routing
//!
//! Decides, for a published message, which queues receive it — exactly by RabbitMQ's rules,
//! and fast with very many bindings. Usable on its own: build a [`Topology`], declare
//! exchanges and queues, bind, and [`Topology::route`] messages.
//!
//! ```
//! use warren_amqp_codec::BasicProperties;
//! use warren_routing::{BindingSpec, ExchangeSpec, Routed, Topology};
//!
//! let mut t = Topology::new("/", 42);
//! t.declare_exchange(ExchangeSpec::new("logs", "topic")).unwrap();
//! let q = t.declare_queue(&"errors".into()).id;
//! t.bind(&BindingSpec::queue("logs", "errors", "*.error")).unwrap();
//!
//! let mut out = Routed::new();
//! t.route(b"logs", b"db.error", &BasicProperties::default(), &mut out).unwrap();
//! assert_eq!(out.queues(), &[q]);
//! t.route(b"logs", b"db.info", &BasicProperties::default(), &mut out).unwrap();
//! assert!(out.is_unroutable());
//! ```
//!
//! What it owns:
//! - a [`Topology`] of exchanges, queue names and bindings per virtual host, with incremental
//!   bind and unbind, auto-delete exchanges, and the errors RabbitMQ gives for invalid
//!   operations ([`RoutingError`], with reply codes);
//! - the default exchange, `direct`, `fanout`, `topic` (a trie run as an NFA, never a scan of
//!   every binding), `headers` (with RabbitMQ's value-comparison rules) and
//!   `x-consistent-hash`, all behind the [`ExchangeType`] / [`Router`] traits through which
//!   further types plug in ([`Registry`]);
//! - exchange-to-exchange bindings (cycle-safe, each queue at most once), alternate
//!   exchanges, internal exchanges, and `CC`/`BCC` sender-selected distribution
//!   ([`sender_selected_keys`], [`strip_bcc`]).
//!
//! What it deliberately does not own: queue contents, consumers, messages, permissions,
//! persistence, I/O and time. It is sans-IO: no runtime, no clock, no files, no randomness —
//! the hash seed is an argument ([`Topology::new`]).

#![forbid(unsafe_code)]

mod error;
mod exchange;
pub mod hash;
pub mod kinds;
mod topology;

pub use error::RoutingError;
pub use exchange::{
    BindingRef, Destination, ExchangeId, ExchangeType, QueueId, Registry, RouteMessage, Router,
};
pub use topology::{
    ALTERNATE_EXCHANGE, BindingSpec, Declared, DestinationName, ExchangeSpec, REPLY_TO_PREFIX,
    Removal, Routed, Topology, strip_cr_lf,
};
/// The codec crate, whose types (properties, field tables, strings) this crate's API uses:
/// re-exported so that a program using only routing needs no second dependency.
pub use warren_amqp_codec as codec;

use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue};

/// Appends the routing keys a message's `CC` and `BCC` headers add (in that order), as
/// RabbitMQ reads them: each must be an array if present (406 otherwise); elements that are
/// not long strings are skipped.
pub fn sender_selected_keys<'a>(
    headers: &'a FieldTable,
    out: &mut Vec<&'a [u8]>,
) -> Result<(), RoutingError> {
    for name in ["CC", "BCC"] {
        match headers.get(name) {
            None => {}
            Some(FieldValue::Array(a)) => {
                out.extend(a.0.iter().filter_map(|v| match v {
                    FieldValue::LongStr(s) => Some(s.as_bytes()),
                    _ => None,
                }));
            }
            Some(other) => {
                return Err(RoutingError::InvalidMessage(format!(
                    "{{unacceptable_type_in_header,\"{name}\",{}}}",
                    warren_amqp_codec::erlang::type_name(other)
                )));
            }
        }
    }
    Ok(())
}

/// Removes the `BCC` header from a message about to be delivered (or returned), as RabbitMQ
/// does. An emptied headers table stays present. Returns whether anything was removed.
pub fn strip_bcc(properties: &mut BasicProperties) -> bool {
    properties
        .headers
        .as_mut()
        .is_some_and(|h| h.remove("BCC").is_some())
}
