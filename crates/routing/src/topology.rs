//! The exchanges, queues and bindings of one virtual host, and the routing walk over them.

use crate::exchange::{BindingRef, Destination, ExchangeId, QueueId, Registry, RouteMessage};
use crate::hash::{Map, SeededState};
use crate::{ExchangeType, Router, RoutingError};
use bytes::Bytes;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use warren_amqp_codec::erlang::{args_identical, loose_eq, plain_value, type_name, value_octets};
use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};

const NONE: u32 = u32::MAX;
/// The exchange argument naming an alternate exchange.
pub const ALTERNATE_EXCHANGE: &str = "alternate-exchange";
/// Routing keys of the default exchange with this prefix address a direct reply-to consumer.
pub const REPLY_TO_PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";

/// An exchange as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: ShortStr,
    /// Type name, e.g. `topic`.
    pub kind: ShortStr,
    /// Survives a restart (recorded here; persistence is the store's job).
    pub durable: bool,
    /// Deleted when its last binding as a source goes away.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Arguments, e.g. `alternate-exchange`.
    pub arguments: FieldTable,
}

impl ExchangeSpec {
    /// A durable, not auto-delete, not internal exchange with no arguments.
    pub fn new(name: impl Into<ShortStr>, kind: impl Into<ShortStr>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }
}

/// The name of a binding's destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DestinationName {
    /// A queue.
    Queue(ShortStr),
    /// An exchange.
    Exchange(ShortStr),
}

/// A binding by names, as `queue.bind` and `exchange.bind` give it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingSpec {
    /// Source exchange.
    pub source: ShortStr,
    /// Destination queue or exchange.
    pub destination: DestinationName,
    /// Binding (routing) key.
    pub key: ShortStr,
    /// Arguments (e.g. for the headers exchange).
    pub arguments: FieldTable,
}

impl BindingSpec {
    /// A binding from `source` to queue `queue` with `key` and no arguments.
    pub fn queue(
        source: impl Into<ShortStr>,
        queue: impl Into<ShortStr>,
        key: impl Into<ShortStr>,
    ) -> Self {
        Self {
            source: source.into(),
            destination: DestinationName::Queue(queue.into()),
            key: key.into(),
            arguments: FieldTable::new(),
        }
    }

    /// A binding from exchange `source` to exchange `destination`.
    pub fn exchange(
        source: impl Into<ShortStr>,
        destination: impl Into<ShortStr>,
        key: impl Into<ShortStr>,
    ) -> Self {
        Self {
            source: source.into(),
            destination: DestinationName::Exchange(destination.into()),
            key: key.into(),
            arguments: FieldTable::new(),
        }
    }

    /// The same binding with `arguments`.
    pub fn with_arguments(mut self, arguments: FieldTable) -> Self {
        self.arguments = arguments;
        self
    }
}

/// What a deletion took with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Removal {
    /// Bindings removed.
    pub bindings: usize,
    /// Exchanges deleted, the one asked for first (if any), then auto-deleted ones in the
    /// order they went.
    pub exchanges: Vec<ShortStr>,
}

/// Result of a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared<Id> {
    /// The id of the (new or existing) object.
    pub id: Id,
    /// Whether it was created by this call.
    pub created: bool,
}

/// The outcome of routing one message; reuse it across calls to avoid allocation.
#[derive(Debug, Default)]
pub struct Routed {
    queues: Vec<QueueId>,
    reply_to: Vec<Bytes>,
    dests: Vec<Destination>,
    work: Vec<ExchangeId>,
    seen: Vec<ExchangeId>,
}

impl Routed {
    /// An empty result.
    pub fn new() -> Self {
        Self::default()
    }

    /// The queues the message goes to, each once, in id order.
    pub fn queues(&self) -> &[QueueId] {
        &self.queues
    }

    /// Direct reply-to routing keys (`amq.rabbitmq.reply-to.…`) given to the default
    /// exchange, each once; the broker hands these to the waiting consumer.
    pub fn reply_to(&self) -> &[Bytes] {
        &self.reply_to
    }

    /// Whether the message reached nothing: a mandatory message is returned (312 NO_ROUTE).
    pub fn is_unroutable(&self) -> bool {
        self.queues.is_empty() && self.reply_to.is_empty()
    }

    fn clear(&mut self) {
        self.queues.clear();
        self.reply_to.clear();
        self.dests.clear();
        self.work.clear();
        self.seen.clear();
    }
}

#[derive(Debug)]
struct Exchange {
    spec: ExchangeSpec,
    kind: Arc<dyn ExchangeType>,
    router: Box<dyn Router>,
    /// The alternate exchange a policy names (the `alternate-exchange` argument wins).
    policy_alternate: Option<ShortStr>,
    /// Bindings with this exchange as source / as destination (intrusive lists).
    outbound: List,
    inbound: List,
}

#[derive(Debug)]
struct Queue {
    name: ShortStr,
    inbound: List,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    len: u32,
}

impl List {
    const EMPTY: Self = Self { head: NONE, len: 0 };
}

#[derive(Debug)]
struct Binding {
    source: ExchangeId,
    destination: Destination,
    key: ShortStr,
    /// Sorted by key (stable), as RabbitMQ compares bindings.
    arguments: FieldTable,
    src_prev: u32,
    src_next: u32,
    dst_prev: u32,
    dst_next: u32,
}

/// Bindings sharing one hash of (source, destination, key).
#[derive(Debug)]
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

/// A slab: slots reused through a free list.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, value: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i as usize) {
                    *slot = Some(value);
                }
                i
            }
            None => {
                self.slots.push(Some(value));
                u32::try_from(self.slots.len() - 1).unwrap_or(NONE)
            }
        }
    }

    fn remove(&mut self, i: u32) -> Option<T> {
        let v = self.slots.get_mut(i as usize)?.take();
        if v.is_some() {
            self.free.push(i);
        }
        v
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.as_ref()
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.as_mut()
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (i as u32, v)))
    }
}

/// The exchanges, queues and bindings of one virtual host.
///
/// A topology knows queues only by name (which ones exist, for the default exchange and for
/// binding checks); their contents and consumers belong to the `queue` crate. Methods take
/// names as clients send them and strip CR and LF from them first, as RabbitMQ does.
#[derive(Debug)]
pub struct Topology {
    vhost: String,
    hasher: SeededState,
    registry: Arc<Registry>,
    exchanges: Slab<Exchange>,
    exchange_names: Map<ShortStr, ExchangeId>,
    queues: Slab<Queue>,
    queue_names: Map<ShortStr, QueueId>,
    bindings: Slab<Binding>,
    binding_index: Map<u64, Ids>,
    default_exchange: ExchangeId,
}

/// The exchanges every virtual host starts with, as RabbitMQ declares them.
const PREDECLARED: &[(&str, &str, bool)] = &[
    ("", "direct", false),
    ("amq.direct", "direct", false),
    ("amq.fanout", "fanout", false),
    ("amq.headers", "headers", false),
    ("amq.match", "headers", false),
    ("amq.topic", "topic", false),
    ("amq.rabbitmq.trace", "topic", true),
];

impl Topology {
    /// A topology for virtual host `vhost` with the built-in exchange types and the
    /// predeclared exchanges. `seed` keys every hash table; pass a random one in production.
    pub fn new(vhost: impl Into<String>, seed: u64) -> Self {
        Self::with_registry(vhost, seed, Arc::new(Registry::default()))
    }

    /// A topology whose exchange types come from `registry`, which must hold `direct`,
    /// `fanout`, `topic` and `headers` for the predeclared exchanges to exist.
    pub fn with_registry(vhost: impl Into<String>, seed: u64, registry: Arc<Registry>) -> Self {
        let hasher = SeededState::new(seed);
        let mut t = Self {
            vhost: vhost.into(),
            hasher,
            registry,
            exchanges: Slab::new(),
            exchange_names: Map::with_hasher(hasher),
            queues: Slab::new(),
            queue_names: Map::with_hasher(hasher),
            bindings: Slab::new(),
            binding_index: Map::with_hasher(hasher),
            default_exchange: ExchangeId(0),
        };
        for &(name, kind, internal) in PREDECLARED {
            let Some(k) = t.registry.get(kind.as_bytes()).cloned() else {
                continue;
            };
            let mut spec = ExchangeSpec::new(ShortStr::from_static(name), kind);
            spec.internal = internal;
            t.insert_exchange(spec, k);
        }
        t.default_exchange = t
            .exchange_names
            .get(b"".as_slice())
            .copied()
            .unwrap_or(ExchangeId(NONE));
        t
    }

    /// The virtual host's name.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The exchange types this topology accepts.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    // ---- exchanges -------------------------------------------------------------------------

    /// `exchange.declare` (not passive), with RabbitMQ's checks in its order: the type, the
    /// default exchange, then equivalence with an existing exchange, or the `amq.` prefix and
    /// the `alternate-exchange` argument's type for a new one. Permission checks are the
    /// caller's; they go between the default-exchange check and the rest.
    pub fn declare_exchange(
        &mut self,
        mut spec: ExchangeSpec,
    ) -> Result<Declared<ExchangeId>, RoutingError> {
        let kind = self
            .registry
            .get(spec.kind.as_bytes())
            .cloned()
            .ok_or_else(|| RoutingError::UnknownType {
                kind: lossy(&spec.kind),
            })?;
        spec.name = strip_cr_lf(&spec.name);
        if spec.name.is_empty() {
            return Err(RoutingError::DefaultExchange);
        }
        if let Some(&id) = self.exchange_names.get(&spec.name) {
            self.assert_equivalent(id, &spec)?;
            return Ok(Declared { id, created: false });
        }
        if spec.name.as_bytes().starts_with(b"amq.") {
            return Err(RoutingError::ReservedName {
                name: lossy(&spec.name),
            });
        }
        if let Some(v) = spec.arguments.get(ALTERNATE_EXCHANGE) {
            if !matches!(v, FieldValue::LongStr(_) | FieldValue::Bytes(_)) {
                return Err(RoutingError::InvalidArgument(format!(
                    "invalid type '{}' for arg '{ALTERNATE_EXCHANGE}' in {}",
                    type_name(v),
                    self.rs("exchange", &spec.name)
                )));
            }
        }
        kind.validate_exchange(&lossy(&spec.name), &self.vhost, &spec.arguments)?;
        spec.name = own(&spec.name);
        spec.kind = own(&spec.kind);
        spec.arguments = own_table(&spec.arguments);
        let id = self.insert_exchange(spec, kind);
        Ok(Declared { id, created: true })
    }

    fn insert_exchange(&mut self, spec: ExchangeSpec, kind: Arc<dyn ExchangeType>) -> ExchangeId {
        let router = kind.router(&spec.arguments, self.hasher);
        let name = spec.name.clone();
        let id = ExchangeId(self.exchanges.insert(Exchange {
            spec,
            kind,
            router,
            policy_alternate: None,
            outbound: List::EMPTY,
            inbound: List::EMPTY,
        }));
        self.exchange_names.insert(name, id);
        id
    }

    fn assert_equivalent(&self, id: ExchangeId, spec: &ExchangeSpec) -> Result<(), RoutingError> {
        let Some(x) = self.exchanges.get(id.0) else {
            return Ok(());
        };
        let cur = &x.spec;
        let fail = |arg: &str, received: String, current: String| RoutingError::Inequivalent {
            arg: arg.to_owned(),
            name: lossy(&cur.name),
            vhost: self.vhost.clone(),
            received,
            current,
        };
        let quoted = |s: &dyn std::fmt::Display| format!("'{s}'");
        if cur.kind != spec.kind {
            return Err(fail("type", quoted(&spec.kind), quoted(&cur.kind)));
        }
        for (arg, current, received) in [
            ("durable", cur.durable, spec.durable),
            ("auto_delete", cur.auto_delete, spec.auto_delete),
            ("internal", cur.internal, spec.internal),
        ] {
            if current != received {
                return Err(fail(arg, quoted(&received), quoted(&current)));
            }
        }
        let describe = |v: Option<&FieldValue>| match v {
            None => "none".to_owned(),
            Some(v) => format!("the value '{}' of type '{}'", plain_value(v), type_name(v)),
        };
        let (c, r) = (
            cur.arguments.get(ALTERNATE_EXCHANGE),
            spec.arguments.get(ALTERNATE_EXCHANGE),
        );
        match (c, r) {
            (None, None) => Ok(()),
            (Some(c), Some(r)) if loose_eq(c, r) => Ok(()),
            (Some(c), Some(r)) => Err(fail(
                ALTERNATE_EXCHANGE,
                format!("'{}'", plain_value(r)),
                format!("'{}'", plain_value(c)),
            )),
            (c, r) => Err(fail(ALTERNATE_EXCHANGE, describe(r), describe(c))),
        }
    }

    /// `exchange.declare` with passive set: the exchange must exist (404); the default
    /// exchange is refused (403). Type and flags are not compared.
    pub fn check_exchange(&self, name: &ShortStr) -> Result<ExchangeId, RoutingError> {
        let name = strip_cr_lf(name);
        if name.is_empty() {
            return Err(RoutingError::DefaultExchange);
        }
        self.exchange_id(name.as_bytes())
            .ok_or_else(|| self.no_exchange(&name))
    }

    /// The exchange called `name`, if it exists (no CR/LF stripping; publish uses names as
    /// given).
    pub fn exchange_id(&self, name: &[u8]) -> Option<ExchangeId> {
        // The default exchange without a table lookup: the most common publish target, and
        // comparing empty slices through memcmp costs ~100 ns on some CPUs (docs/benchmarks.md).
        if name.is_empty() {
            return self
                .exchanges
                .get(self.default_exchange.0)
                .map(|_| self.default_exchange);
        }
        self.exchange_names.get(name).copied()
    }

    /// The declaration of exchange `id`.
    pub fn exchange(&self, id: ExchangeId) -> Option<&ExchangeSpec> {
        self.exchanges.get(id.0).map(|x| &x.spec)
    }

    /// Sets (or clears) the alternate exchange a policy gives exchange `id`. Routing uses it
    /// when the exchange has no `alternate-exchange` argument of its own, as RabbitMQ does.
    /// Returns false if there is no such exchange.
    pub fn set_policy_alternate(&mut self, id: ExchangeId, alternate: Option<ShortStr>) -> bool {
        match self.exchanges.get_mut(id.0) {
            Some(x) => {
                x.policy_alternate = alternate;
                true
            }
            None => false,
        }
    }

    /// Every exchange, in no particular order.
    pub fn exchanges(&self) -> impl Iterator<Item = (ExchangeId, &ExchangeSpec)> {
        self.exchanges.iter().map(|(i, x)| (ExchangeId(i), &x.spec))
    }

    /// Number of exchanges, the predeclared ones included.
    pub fn exchange_count(&self) -> usize {
        self.exchanges.len()
    }

    /// `exchange.delete`. A missing exchange is not an error (nothing is removed). The
    /// default exchange and any `amq.*` name are refused (403); with `if_unused`, an exchange
    /// that is the source of a binding is refused (406). Bindings to and from it go, and
    /// auto-delete exchanges left without bindings go with them.
    pub fn delete_exchange(
        &mut self,
        name: &ShortStr,
        if_unused: bool,
    ) -> Result<Removal, RoutingError> {
        let name = strip_cr_lf(name);
        if name.is_empty() {
            return Err(RoutingError::DefaultExchange);
        }
        if name.as_bytes().starts_with(b"amq.") {
            return Err(RoutingError::SystemExchange {
                name: lossy(&name),
                vhost: self.vhost.clone(),
            });
        }
        let mut removal = Removal::default();
        let Some(id) = self.exchange_id(name.as_bytes()) else {
            return Ok(removal);
        };
        if if_unused && self.exchanges.get(id.0).is_some_and(|x| x.outbound.len > 0) {
            return Err(RoutingError::InUse {
                name: lossy(&name),
                vhost: self.vhost.clone(),
            });
        }
        self.remove_exchange(id, &mut removal);
        Ok(removal)
    }

    /// Removes exchange `id` and its bindings, then any auto-delete exchanges that lost their
    /// last outbound binding, transitively.
    fn remove_exchange(&mut self, id: ExchangeId, removal: &mut Removal) {
        let mut pending = vec![id];
        while let Some(id) = pending.pop() {
            let Some(x) = self.exchanges.get(id.0) else {
                continue;
            };
            // Its own router goes with it: unlink outbound bindings without touching it.
            for b in self.list_ids(x.outbound, true) {
                self.remove_binding(b, false, removal);
            }
            // Read the inbound list only now: a binding to itself was in both.
            let inbound = self.exchanges.get(id.0).map_or(List::EMPTY, |x| x.inbound);
            for b in self.list_ids(inbound, false) {
                if let Some(source) = self.remove_binding(b, true, removal) {
                    self.auto_delete_check(source, &mut pending);
                }
            }
            if let Some(x) = self.exchanges.remove(id.0) {
                self.exchange_names.remove(&x.spec.name);
                removal.exchanges.push(x.spec.name);
            }
        }
    }

    fn auto_delete_check(&self, source: ExchangeId, pending: &mut Vec<ExchangeId>) {
        if let Some(x) = self.exchanges.get(source.0) {
            if x.spec.auto_delete && x.outbound.len == 0 && !pending.contains(&source) {
                pending.push(source);
            }
        }
    }

    // ---- queues ----------------------------------------------------------------------------

    /// Registers queue `name` (after CR/LF stripping), or finds it if it exists. Checks on
    /// queue declarations (names, arguments, exclusivity) belong to the queue's owner.
    pub fn declare_queue(&mut self, name: &ShortStr) -> Declared<QueueId> {
        let name = strip_cr_lf(name);
        if let Some(&id) = self.queue_names.get(&name) {
            return Declared { id, created: false };
        }
        let name = own(&name);
        let id = QueueId(self.queues.insert(Queue {
            name: name.clone(),
            inbound: List::EMPTY,
        }));
        self.queue_names.insert(name, id);
        Declared { id, created: true }
    }

    /// The queue called `name` (after CR/LF stripping), or 404.
    pub fn check_queue(&self, name: &ShortStr) -> Result<QueueId, RoutingError> {
        let name = strip_cr_lf(name);
        self.queue_id(name.as_bytes())
            .ok_or_else(|| self.no_queue(&name))
    }

    /// The queue called `name`, if it exists.
    pub fn queue_id(&self, name: &[u8]) -> Option<QueueId> {
        self.queue_names.get(name).copied()
    }

    /// The name of queue `id`.
    pub fn queue_name(&self, id: QueueId) -> Option<&ShortStr> {
        self.queues.get(id.0).map(|q| &q.name)
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Forgets queue `id` and its bindings; auto-delete exchanges that lose their last
    /// binding are deleted too.
    pub fn delete_queue(&mut self, id: QueueId) -> Removal {
        let mut removal = Removal::default();
        let Some(q) = self.queues.get(id.0) else {
            return removal;
        };
        let mut pending = Vec::new();
        for b in self.list_ids(q.inbound, false) {
            if let Some(source) = self.remove_binding(b, true, &mut removal) {
                self.auto_delete_check(source, &mut pending);
            }
        }
        if let Some(q) = self.queues.remove(id.0) {
            self.queue_names.remove(&q.name);
        }
        while let Some(x) = pending.pop() {
            self.remove_exchange(x, &mut removal);
        }
        removal
    }

    // ---- bindings --------------------------------------------------------------------------

    /// `queue.bind` / `exchange.bind`. Checks in RabbitMQ's order: the default exchange on
    /// either side (403), the source then the destination exist (404), then the exchange
    /// type's validation (406). Returns whether the binding is new; an identical binding is
    /// not added twice.
    pub fn bind(&mut self, spec: &BindingSpec) -> Result<bool, RoutingError> {
        let (source, destination) = self.resolve(spec)?;
        let (source, destination) = match (source, destination) {
            (Some(s), Some(d)) => (s, d),
            (None, _) => return Err(self.no_exchange(strip_cr_lf(&spec.source))),
            (Some(_), None) => {
                return Err(match &spec.destination {
                    DestinationName::Queue(q) => self.no_queue(strip_cr_lf(q)),
                    DestinationName::Exchange(x) => self.no_exchange(strip_cr_lf(x)),
                });
            }
        };
        let Some(x) = self.exchanges.get(source.0) else {
            return Err(self.no_exchange(&spec.source));
        };
        x.kind
            .validate_binding(spec.key.as_bytes(), &spec.arguments)?;
        let arguments = sorted(&spec.arguments);
        let hash = self.binding_hash(source, destination, spec.key.as_bytes());
        if self
            .find_binding(hash, source, destination, spec.key.as_bytes(), &arguments)
            .is_some()
        {
            return Ok(false);
        }
        let key = own(&spec.key);
        if let Some(x) = self.exchanges.get_mut(source.0) {
            x.router.bind(BindingRef {
                key: key.as_bytes(),
                arguments: &arguments,
                destination,
            });
        }
        let id = self.bindings.insert(Binding {
            source,
            destination,
            key,
            arguments,
            src_prev: NONE,
            src_next: NONE,
            dst_prev: NONE,
            dst_next: NONE,
        });
        self.link(id);
        match self.binding_index.get_mut(&hash) {
            None => {
                self.binding_index.insert(hash, Ids::One(id));
            }
            Some(Ids::One(other)) => {
                let other = *other;
                self.binding_index.insert(hash, Ids::Many(vec![other, id]));
            }
            Some(Ids::Many(v)) => v.push(id),
        }
        Ok(true)
    }

    /// `queue.unbind` / `exchange.unbind`. Refuses the default exchange (403); a binding, source
    /// or destination that does not exist is not an error. Removing an auto-delete exchange's
    /// last binding deletes the exchange (and transitively others).
    pub fn unbind(&mut self, spec: &BindingSpec) -> Result<Removal, RoutingError> {
        let mut removal = Removal::default();
        let (Some(source), Some(destination)) = self.resolve(spec)? else {
            return Ok(removal);
        };
        let arguments = sorted(&spec.arguments);
        let hash = self.binding_hash(source, destination, spec.key.as_bytes());
        let Some(id) =
            self.find_binding(hash, source, destination, spec.key.as_bytes(), &arguments)
        else {
            return Ok(removal);
        };
        self.remove_binding(id, true, &mut removal);
        let mut pending = Vec::new();
        self.auto_delete_check(source, &mut pending);
        while let Some(x) = pending.pop() {
            self.remove_exchange(x, &mut removal);
        }
        Ok(removal)
    }

    /// Every binding, by names, in no particular order (the default exchange's implicit
    /// bindings are not listed).
    pub fn bindings(&self) -> impl Iterator<Item = BindingSpec> + '_ {
        self.bindings
            .iter()
            .filter_map(|(id, _)| self.binding_spec(id))
    }

    /// Bindings whose destination is queue `id`.
    pub fn queue_bindings(&self, id: QueueId) -> Vec<BindingSpec> {
        let Some(q) = self.queues.get(id.0) else {
            return Vec::new();
        };
        self.list_ids(q.inbound, false)
            .into_iter()
            .filter_map(|b| self.binding_spec(b))
            .collect()
    }

    /// Number of explicit bindings.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    /// The router of exchange `id`, for inspection.
    pub fn router(&self, id: ExchangeId) -> Option<&dyn Router> {
        self.exchanges.get(id.0).map(|x| x.router.as_ref())
    }

    fn binding_spec(&self, id: u32) -> Option<BindingSpec> {
        let b = self.bindings.get(id)?;
        let source = self.exchanges.get(b.source.0)?.spec.name.clone();
        let destination = match b.destination {
            Destination::Queue(q) => DestinationName::Queue(self.queues.get(q.0)?.name.clone()),
            Destination::Exchange(x) => {
                DestinationName::Exchange(self.exchanges.get(x.0)?.spec.name.clone())
            }
        };
        Some(BindingSpec {
            source,
            destination,
            key: b.key.clone(),
            arguments: b.arguments.clone(),
        })
    }

    /// Resolves a binding's names after the default-exchange checks.
    fn resolve(
        &self,
        spec: &BindingSpec,
    ) -> Result<(Option<ExchangeId>, Option<Destination>), RoutingError> {
        let source = strip_cr_lf(&spec.source);
        let destination = match &spec.destination {
            DestinationName::Exchange(x) => {
                let x = strip_cr_lf(x);
                if x.is_empty() {
                    return Err(RoutingError::DefaultExchange);
                }
                self.exchange_id(x.as_bytes()).map(Destination::Exchange)
            }
            DestinationName::Queue(q) => self
                .queue_id(strip_cr_lf(q).as_bytes())
                .map(Destination::Queue),
        };
        if source.is_empty() {
            return Err(RoutingError::DefaultExchange);
        }
        Ok((self.exchange_id(source.as_bytes()), destination))
    }

    fn binding_hash(&self, source: ExchangeId, destination: Destination, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        source.hash(&mut h);
        destination.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    fn find_binding(
        &self,
        hash: u64,
        source: ExchangeId,
        destination: Destination,
        key: &[u8],
        arguments: &FieldTable,
    ) -> Option<u32> {
        let is = |id: &u32| {
            self.bindings.get(*id).is_some_and(|b| {
                b.source == source
                    && b.destination == destination
                    && b.key.as_bytes() == key
                    && args_identical(&b.arguments, arguments)
            })
        };
        match self.binding_index.get(&hash)? {
            Ids::One(id) => Some(*id).filter(is),
            Ids::Many(v) => v.iter().copied().find(is),
        }
    }

    /// Unlinks and drops binding `id`; `unroute` also takes it out of the source's router
    /// (not needed when the source itself is going). Returns the source.
    fn remove_binding(
        &mut self,
        id: u32,
        unroute: bool,
        removal: &mut Removal,
    ) -> Option<ExchangeId> {
        self.unlink(id);
        let b = self.bindings.remove(id)?;
        let hash = self.binding_hash(b.source, b.destination, b.key.as_bytes());
        match self.binding_index.get_mut(&hash) {
            Some(Ids::One(_)) => {
                self.binding_index.remove(&hash);
            }
            Some(Ids::Many(v)) => {
                v.retain(|x| *x != id);
                if let [only] = v.as_slice() {
                    let only = *only;
                    self.binding_index.insert(hash, Ids::One(only));
                }
            }
            None => {}
        }
        if unroute {
            if let Some(x) = self.exchanges.get_mut(b.source.0) {
                x.router.unbind(BindingRef {
                    key: b.key.as_bytes(),
                    arguments: &b.arguments,
                    destination: b.destination,
                });
            }
        }
        removal.bindings += 1;
        Some(b.source)
    }

    // ---- intrusive lists -------------------------------------------------------------------

    fn list_ids(&self, list: List, by_source: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(list.len as usize);
        let mut at = list.head;
        while let Some(b) = self.bindings.get(at) {
            out.push(at);
            at = if by_source { b.src_next } else { b.dst_next };
        }
        out
    }

    fn src_list(&mut self, x: ExchangeId) -> Option<&mut List> {
        self.exchanges.get_mut(x.0).map(|x| &mut x.outbound)
    }

    fn dst_list(&mut self, d: Destination) -> Option<&mut List> {
        match d {
            Destination::Queue(q) => self.queues.get_mut(q.0).map(|q| &mut q.inbound),
            Destination::Exchange(x) => self.exchanges.get_mut(x.0).map(|x| &mut x.inbound),
        }
    }

    fn link(&mut self, id: u32) {
        let Some(b) = self.bindings.get(id) else {
            return;
        };
        let (source, destination) = (b.source, b.destination);
        let src_head = self.src_list(source).map(|l| l.head).unwrap_or(NONE);
        let dst_head = self.dst_list(destination).map(|l| l.head).unwrap_or(NONE);
        if let Some(b) = self.bindings.get_mut(id) {
            b.src_next = src_head;
            b.dst_next = dst_head;
        }
        if let Some(h) = self.bindings.get_mut(src_head) {
            h.src_prev = id;
        }
        if let Some(h) = self.bindings.get_mut(dst_head) {
            h.dst_prev = id;
        }
        if let Some(l) = self.src_list(source) {
            l.head = id;
            l.len += 1;
        }
        if let Some(l) = self.dst_list(destination) {
            l.head = id;
            l.len += 1;
        }
    }

    fn unlink(&mut self, id: u32) {
        let Some(b) = self.bindings.get(id) else {
            return;
        };
        let (source, destination) = (b.source, b.destination);
        let (sp, sn, dp, dn) = (b.src_prev, b.src_next, b.dst_prev, b.dst_next);
        match self.bindings.get_mut(sp) {
            Some(p) => p.src_next = sn,
            None => {
                if let Some(l) = self.src_list(source) {
                    l.head = sn;
                }
            }
        }
        if let Some(n) = self.bindings.get_mut(sn) {
            n.src_prev = sp;
        }
        match self.bindings.get_mut(dp) {
            Some(p) => p.dst_next = dn,
            None => {
                if let Some(l) = self.dst_list(destination) {
                    l.head = dn;
                }
            }
        }
        if let Some(n) = self.bindings.get_mut(dn) {
            n.dst_prev = dp;
        }
        if let Some(l) = self.src_list(source) {
            l.len -= 1;
        }
        if let Some(l) = self.dst_list(destination) {
            l.len -= 1;
        }
    }

    // ---- routing ---------------------------------------------------------------------------

    /// Routes a message published to `exchange` with `routing_key` and `properties`:
    /// the exchange must exist (404) and not be internal (403); `CC`/`BCC` headers add routing
    /// keys (406 if they are not arrays); exchange-to-exchange bindings are followed once per
    /// exchange; an exchange that matches no binding passes the message to its alternate
    /// exchange. The default exchange delivers to the queue named by each key (and never uses
    /// an alternate). `out` receives each queue once.
    pub fn route(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &BasicProperties,
        out: &mut Routed,
    ) -> Result<(), RoutingError> {
        out.clear();
        let Some(start) = self.exchange_id(exchange) else {
            return Err(self.no_exchange(exchange));
        };
        let Some(x) = self.exchanges.get(start.0) else {
            return Err(self.no_exchange(exchange));
        };
        if x.spec.internal {
            return Err(RoutingError::Internal {
                name: lossy(exchange),
                vhost: self.vhost.clone(),
            });
        }
        let single = [routing_key];
        // Allocates only when CC or BCC add keys.
        let mut many = Vec::new();
        if let Some(h) = properties.headers.as_ref() {
            crate::sender_selected_keys(h, &mut many)?;
        }
        let keys: &[&[u8]] = if many.is_empty() {
            &single
        } else {
            many.insert(0, routing_key);
            &many
        };
        let message = RouteMessage {
            routing_keys: keys,
            properties,
        };
        out.work.push(start);
        out.seen.push(start);
        while let Some(id) = out.work.pop() {
            let Some(x) = self.exchanges.get(id.0) else {
                continue;
            };
            if id == self.default_exchange {
                self.route_default(keys, out);
                continue;
            }
            out.dests.clear();
            x.router.route(&message, &mut out.dests);
            if out.dests.is_empty() {
                if let Some(ae) = x
                    .spec
                    .arguments
                    .get(ALTERNATE_EXCHANGE)
                    .and_then(value_octets)
                    .or(x.policy_alternate.as_ref().map(ShortStr::as_bytes))
                    .and_then(|name| self.exchange_id(name))
                {
                    visit(out, ae);
                }
                continue;
            }
            for i in 0..out.dests.len() {
                match out.dests.get(i).copied() {
                    Some(Destination::Queue(q)) => out.queues.push(q),
                    Some(Destination::Exchange(e)) => visit(out, e),
                    None => {}
                }
            }
        }
        if out.queues.len() > 1 {
            out.queues.sort_unstable();
            out.queues.dedup();
        }
        Ok(())
    }

    fn route_default(&self, keys: &[&[u8]], out: &mut Routed) {
        for key in keys {
            if key.starts_with(REPLY_TO_PREFIX) {
                out.reply_to.push(Bytes::copy_from_slice(key));
            } else if let Some(q) = self.queue_id(key) {
                out.queues.push(q);
            }
        }
        if out.reply_to.len() > 1 {
            out.reply_to.sort_unstable();
            out.reply_to.dedup();
        }
    }

    // ---- errors ----------------------------------------------------------------------------

    fn rs(&self, kind: &str, name: impl AsRef<[u8]>) -> String {
        format!("{kind} '{}' in vhost '{}'", lossy(name), self.vhost)
    }

    fn no_exchange(&self, name: impl AsRef<[u8]>) -> RoutingError {
        RoutingError::ExchangeNotFound {
            name: lossy(name),
            vhost: self.vhost.clone(),
        }
    }

    fn no_queue(&self, name: impl AsRef<[u8]>) -> RoutingError {
        RoutingError::QueueNotFound {
            name: lossy(name),
            vhost: self.vhost.clone(),
        }
    }
}

/// Marks exchange `e` for a visit unless it was seen in this walk.
fn visit(out: &mut Routed, e: ExchangeId) {
    if let Err(pos) = out.seen.binary_search(&e) {
        out.seen.insert(pos, e);
        out.work.push(e);
    }
}

fn lossy(octets: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(octets.as_ref()).into_owned()
}

/// Removes CR and LF from a name, as RabbitMQ does for declared, deleted and bound names.
pub fn strip_cr_lf(name: &ShortStr) -> ShortStr {
    if !name.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n') {
        return name.clone();
    }
    let v: Vec<u8> = name
        .as_bytes()
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    ShortStr::from_bytes(v).unwrap_or_default()
}

fn own(s: &ShortStr) -> ShortStr {
    s.detached()
}

/// Arguments stably sorted by key, the form in which bindings are compared.
fn sorted(arguments: &FieldTable) -> FieldTable {
    let mut v: Vec<(&ShortStr, &FieldValue)> = arguments.iter().collect();
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut t = FieldTable::new();
    for (k, val) in v {
        t.push(k.clone(), val.clone());
    }
    own_table(&t)
}

fn own_table(t: &FieldTable) -> FieldTable {
    t.detached()
}
