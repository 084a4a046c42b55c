//! The plug-in point for exchange types: [`ExchangeType`] validates and builds a [`Router`],
//! the per-exchange index that answers "which destinations does this message go to?".
//!
//! Every built-in type (`direct`, `fanout`, `topic`, `headers`, `x-consistent-hash`) goes
//! through these traits; the default exchange is the one special case, handled by the
//! [`Topology`](crate::Topology) because its bindings are implicit.

use crate::RoutingError;
use crate::hash::SeededState;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use warren_amqp_codec::{BasicProperties, FieldTable};

/// A queue known to a [`Topology`](crate::Topology). Ids are reused after a queue is removed;
/// they are valid while the queue exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u32);

/// An exchange known to a [`Topology`](crate::Topology). Ids are reused after an exchange is
/// deleted; they are valid while the exchange exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExchangeId(pub u32);

/// Where a binding leads: a queue, or another exchange (exchange-to-exchange binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// A queue.
    Queue(QueueId),
    /// An exchange.
    Exchange(ExchangeId),
}

/// What a router sees of a published message.
#[derive(Debug, Clone, Copy)]
pub struct RouteMessage<'a> {
    /// The routing key first, then the keys from the `CC` and `BCC` headers, as RabbitMQ
    /// routes them (sender-selected distribution).
    pub routing_keys: &'a [&'a [u8]],
    /// The message properties (headers for the headers exchange, message id and friends for
    /// the consistent-hash exchange).
    pub properties: &'a BasicProperties,
}

/// One binding as a router stores it. `arguments` are sorted by key (stable), the form in
/// which RabbitMQ compares bindings.
#[derive(Debug, Clone, Copy)]
pub struct BindingRef<'a> {
    /// The binding key.
    pub key: &'a [u8],
    /// The binding arguments, sorted by key.
    pub arguments: &'a FieldTable,
    /// Where it leads.
    pub destination: Destination,
}

/// An exchange type: validates declarations and bindings, and builds routers.
pub trait ExchangeType: Send + Sync + fmt::Debug {
    /// The type name clients declare, e.g. `topic`.
    fn name(&self) -> &str;

    /// Checks the exchange's arguments when it is declared. `exchange` is the exchange name
    /// and `vhost` its virtual host, for error texts.
    fn validate_exchange(
        &self,
        exchange: &str,
        vhost: &str,
        arguments: &FieldTable,
    ) -> Result<(), RoutingError> {
        let _ = (exchange, vhost, arguments);
        Ok(())
    }

    /// Checks a binding's key and arguments before it is added.
    fn validate_binding(&self, key: &[u8], arguments: &FieldTable) -> Result<(), RoutingError> {
        let _ = (key, arguments);
        Ok(())
    }

    /// An empty router for an exchange declared with `arguments`. Tables inside it use
    /// `hasher`, which carries the topology's seed.
    fn router(&self, arguments: &FieldTable, hasher: SeededState) -> Box<dyn Router>;
}

/// The bindings of one exchange, indexed for routing. A router holds a multiset: the same
/// destination may be bound twice with different arguments, and unbinding one leaves the other.
/// The [`Topology`](crate::Topology) guarantees that `unbind` is only called for a binding that
/// `bind` added and that no identical binding is added twice.
pub trait Router: Send + Sync + fmt::Debug {
    /// Adds a binding.
    fn bind(&mut self, binding: BindingRef<'_>);

    /// Removes a binding added earlier with the same key, arguments and destination.
    fn unbind(&mut self, binding: BindingRef<'_>);

    /// Appends the destinations `message` goes to. Duplicates are allowed; the topology
    /// removes them.
    fn route(&self, message: &RouteMessage<'_>, out: &mut Vec<Destination>);

    /// Number of bindings held.
    fn len(&self) -> usize;

    /// Whether no bindings are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The exchange types a topology accepts, by name.
#[derive(Clone)]
pub struct Registry {
    types: BTreeMap<String, Arc<dyn ExchangeType>>,
}

impl Registry {
    /// A registry with no types at all.
    pub fn empty() -> Self {
        Self {
            types: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a type under its [`ExchangeType::name`].
    pub fn register(&mut self, kind: Arc<dyn ExchangeType>) -> &mut Self {
        self.types.insert(kind.name().to_owned(), kind);
        self
    }

    /// The type called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<dyn ExchangeType>> {
        let name = std::str::from_utf8(name).ok()?;
        self.types.get(name)
    }

    /// Type names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

impl Default for Registry {
    /// The built-in types: `direct`, `fanout`, `topic`, `headers` and `x-consistent-hash`.
    fn default() -> Self {
        let mut r = Self::empty();
        r.register(Arc::new(crate::kinds::Direct))
            .register(Arc::new(crate::kinds::Fanout))
            .register(Arc::new(crate::kinds::Topic))
            .register(Arc::new(crate::kinds::Headers))
            .register(Arc::new(crate::kinds::ConsistentHash));
        r
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}
