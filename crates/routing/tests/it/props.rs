//! Property tests of routing (STYLE.md, practice 7), each against a naive reference written
//! here from RabbitMQ 3.10.8's rules:
//!
//! a. topic: a topology with many random bindings routes exactly to the queues whose pattern
//!    matches by [`topic_matches`]; a standalone [`TopicTrie`] agrees with multiplicities, and
//!    after removals equals a trie built from scratch;
//! b. headers: [`headers_match`] (and a headers exchange) against a per-entry reference
//!    (`all`/`any`, `x-` keys, void as presence, Erlang's `==` on values);
//! c. random bind/unbind sequences leave a topology equivalent to one built from scratch with
//!    the final bindings (same bindings, same routing, same topic trie);
//! d. exchange-to-exchange routing with alternate exchanges, cycles and self-loops against a
//!    naive walk (each exchange visited once, the alternate used only when an exchange's own
//!    bindings matched nothing, queues once).
//!
//! Every test runs from a fixed seed; set `WARREN_PROPTEST_SEED` to explore others.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeSet;
use warren_amqp_codec::{BasicProperties, FieldArray, FieldTable, FieldValue, ReplyCode, ShortStr};
use warren_routing::hash::SeededState;
use warren_routing::kinds::headers_match;
use warren_routing::kinds::topic::{TopicTrie, topic_matches};
use warren_routing::{
    BindingSpec, Destination, DestinationName, ExchangeId, ExchangeSpec, QueueId, Routed, Topology,
};

fn short(s: &str) -> ShortStr {
    ShortStr::from(s.to_owned())
}

/// Routes and returns the names of the queues reached, or the error's reply code.
fn route_names(
    t: &Topology,
    exchange: &str,
    key: &str,
    properties: &BasicProperties,
) -> Result<BTreeSet<String>, ReplyCode> {
    let mut out = Routed::new();
    t.route(exchange.as_bytes(), key.as_bytes(), properties, &mut out)
        .map_err(|e| e.reply_code())?;
    let names: BTreeSet<String> = out
        .queues()
        .iter()
        .map(|q| {
            String::from_utf8_lossy(t.queue_name(*q).expect("routed to a live queue").as_bytes())
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), out.queues().len(), "each queue once");
    assert_eq!(out.is_unroutable(), names.is_empty());
    Ok(names)
}

// =============================================================================================
// a. topic
// =============================================================================================

fn topic_pattern() -> impl Strategy<Value = String> {
    vec(select(vec!["a", "b", "c", "", "*", "#"]), 0..6).prop_map(|w| w.join("."))
}

fn topic_key() -> impl Strategy<Value = String> {
    vec(select(vec!["a", "b", "c", ""]), 0..7).prop_map(|w| w.join("."))
}

fn qd(i: u32) -> Destination {
    Destination::Queue(QueueId(i))
}

/// The trie's answer for `key`, sorted (with multiplicities).
fn trie_matches(trie: &TopicTrie, key: &str) -> Vec<Destination> {
    let mut out = Vec::new();
    trie.matches(key.as_bytes(), &mut out);
    out.sort_unstable();
    out
}

/// The reference answer: one destination per binding whose pattern matches, sorted.
fn reference_matches(bindings: &[(String, u32)], key: &str) -> Vec<Destination> {
    let mut out: Vec<Destination> = bindings
        .iter()
        .filter(|(p, _)| topic_matches(p.as_bytes(), key.as_bytes()))
        .map(|(_, d)| qd(*d))
        .collect();
    out.sort_unstable();
    out
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// Each random pattern bound to its own queue: a message reaches exactly the queues whose
    /// pattern matches its key.
    #[test]
    fn topic_exchange_routes_like_the_reference(
        patterns in vec(topic_pattern(), 0..40),
        keys in vec(topic_key(), 1..12),
    ) {
        let mut t = Topology::new("/", 21);
        t.declare_exchange(ExchangeSpec::new("t", "topic")).expect("declare t");
        for (i, p) in patterns.iter().enumerate() {
            let name = format!("q{i}");
            t.declare_queue(&short(&name));
            prop_assert!(t.bind(&BindingSpec::queue("t", short(&name), short(p))).expect("bind"));
        }
        for key in &keys {
            let want: BTreeSet<String> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| topic_matches(p.as_bytes(), key.as_bytes()))
                .map(|(i, _)| format!("q{i}"))
                .collect();
            let got = route_names(&t, "t", key, &BasicProperties::default());
            prop_assert_eq!(got, Ok(want), "key {:?}", key);
        }
    }

    /// A standalone trie is a multiset of (pattern, destination): it reports every matching
    /// binding once, keeps agreeing after random removals, then equals a trie built from
    /// scratch with what is left, and prunes back to the root when everything is gone.
    #[test]
    fn topic_trie_is_a_multiset(
        mut bindings in vec((topic_pattern(), 0u32..4), 0..30),
        removals in vec(any::<prop::sample::Index>(), 0..30),
        keys in vec(topic_key(), 1..10),
    ) {
        let mut trie = TopicTrie::new(SeededState::new(1));
        for (p, d) in &bindings {
            trie.insert(p.as_bytes(), qd(*d));
        }
        prop_assert_eq!(trie.len(), bindings.len());
        for key in &keys {
            prop_assert_eq!(trie_matches(&trie, key), reference_matches(&bindings, key), "key {:?}", key);
        }

        for ix in &removals {
            if bindings.is_empty() {
                break;
            }
            let (p, d) = bindings.remove(ix.index(bindings.len()));
            prop_assert!(trie.remove(p.as_bytes(), qd(d)), "remove {:?} -> {}", p, d);
        }
        // Something never bound is not there.
        prop_assert!(!trie.remove(b"a.b.c.a.b.c.a", qd(0)));
        prop_assert!(!trie.remove(b"a", qd(99)));
        prop_assert_eq!(trie.len(), bindings.len());
        for key in &keys {
            prop_assert_eq!(trie_matches(&trie, key), reference_matches(&bindings, key), "key {:?}", key);
        }

        let mut scratch = TopicTrie::new(SeededState::new(2));
        for (p, d) in bindings.iter().rev() {
            scratch.insert(p.as_bytes(), qd(*d));
        }
        prop_assert_eq!(trie.node_count(), scratch.node_count());
        prop_assert!(trie == scratch, "{:?}\n!=\n{:?}", trie.canonical(), scratch.canonical());

        for (p, d) in &bindings {
            prop_assert!(trie.remove(p.as_bytes(), qd(*d)));
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1);
        prop_assert!(trie == TopicTrie::new(SeededState::new(3)));
    }
}

// =============================================================================================
// b. headers
// =============================================================================================

/// A small set of values of different types, chosen so that many pairs are equal under
/// Erlang's `==` across types (1, 1.0, "1", <<"1">>, [1], ...).
fn header_value() -> impl Strategy<Value = FieldValue> {
    select(vec![
        FieldValue::Void,
        FieldValue::I32(0),
        FieldValue::I32(1),
        FieldValue::I32(2),
        FieldValue::I64(1),
        FieldValue::I64(2),
        FieldValue::F64(1.0),
        FieldValue::F64(1.5),
        FieldValue::F32(1.5),
        FieldValue::I8(1),
        FieldValue::I16(2),
        FieldValue::LongStr("1".into()),
        FieldValue::LongStr("a".into()),
        FieldValue::LongStr("".into()),
        FieldValue::Bytes(bytes::Bytes::from_static(b"1")),
        FieldValue::Bytes(bytes::Bytes::from_static(b"a")),
        FieldValue::Bool(true),
        FieldValue::Bool(false),
        FieldValue::Array(FieldArray(vec![FieldValue::I32(1)])),
        FieldValue::Array(FieldArray(vec![FieldValue::I64(1)])),
        FieldValue::Table([("x", FieldValue::I32(1))].into_iter().collect()),
        FieldValue::Table(
            [("x", FieldValue::I32(1)), ("y", FieldValue::I32(2))]
                .into_iter()
                .collect(),
        ),
        FieldValue::Table(
            [("y", FieldValue::I32(2)), ("x", FieldValue::I32(1))]
                .into_iter()
                .collect(),
        ),
    ])
}

const HEADER_KEYS: &[&str] = &["a", "b", "c", "x-foo", "x-match"];

/// Binding arguments: up to four entries with distinct keys among a, b, c, x-foo, plus
/// perhaps an x-match, in random order.
fn binding_args() -> impl Strategy<Value = FieldTable> {
    (
        btree_map(select(vec!["a", "b", "c", "x-foo"]), header_value(), 0..4),
        prop::option::of(select(vec!["all", "any", "all-with-x", "any-with-x"])),
    )
        .prop_flat_map(|(entries, kind)| {
            let mut v: Vec<(&'static str, FieldValue)> = entries.into_iter().collect();
            if let Some(k) = kind {
                v.push(("x-match", FieldValue::from(k)));
            }
            Just(v).prop_shuffle()
        })
        .prop_map(|v| v.into_iter().collect())
}

/// Message headers with distinct keys, in random order, or none at all.
fn message_headers() -> impl Strategy<Value = Option<FieldTable>> {
    prop::option::weighted(
        0.9,
        btree_map(select(HEADER_KEYS.to_vec()), header_value(), 0..5)
            .prop_flat_map(|m| Just(m.into_iter().collect::<Vec<_>>()).prop_shuffle())
            .prop_map(|v| v.into_iter().collect::<FieldTable>()),
    )
}

/// A number as Erlang holds it, for `==`: every integer type and both float types.
fn number(v: &FieldValue) -> Option<f64> {
    Some(match *v {
        FieldValue::I8(x) => x.into(),
        FieldValue::U8(x) => x.into(),
        FieldValue::I16(x) => x.into(),
        FieldValue::U16(x) => x.into(),
        FieldValue::I32(x) => x.into(),
        FieldValue::U32(x) => x.into(),
        FieldValue::I64(x) => x as f64,
        FieldValue::F32(x) => x.into(),
        FieldValue::F64(x) => x,
        _ => return None,
    })
}

/// Erlang's `==` on the terms RabbitMQ decodes top-level header values to (values small enough
/// that `f64` holds every integer exactly): numbers by value across types, long strings and
/// byte arrays by octets, booleans as atoms, void as `undefined`, nested arrays and tables
/// element by element with their type tags, in order.
fn erlang_eq(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    let octets = |v: &FieldValue| match v {
        FieldValue::LongStr(s) => Some(s.as_bytes().to_vec()),
        FieldValue::Bytes(b) => Some(b.to_vec()),
        _ => None,
    };
    if let (Some(x), Some(y)) = (octets(a), octets(b)) {
        return x == y;
    }
    let tagged = |x: &FieldValue, y: &FieldValue| x.type_code() == y.type_code() && erlang_eq(x, y);
    match (a, b) {
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x == y,
        (FieldValue::Void, FieldValue::Void) => true,
        (FieldValue::Array(x), FieldValue::Array(y)) => {
            x.0.len() == y.0.len() && x.0.iter().zip(&y.0).all(|(p, q)| tagged(p, q))
        }
        (FieldValue::Table(x), FieldValue::Table(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && tagged(v1, v2))
        }
        _ => false,
    }
}

/// The reference: per binding entry that takes part, look the header up by key.
fn headers_reference(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let kind = match arguments.get("x-match") {
        Some(FieldValue::LongStr(s)) => s.as_str().unwrap_or("all").to_owned(),
        _ => "all".to_owned(),
    };
    let with_x = kind.ends_with("-with-x");
    let mut considered = arguments.iter().filter(|(k, _)| {
        let k = k.as_bytes();
        k != b"x-match" && (with_x || !k.starts_with(b"x-"))
    });
    let hit = |(k, v): (&ShortStr, &FieldValue)| {
        headers
            .and_then(|h| h.get(k.as_str().expect("ASCII key")))
            .is_some_and(|hv| matches!(v, FieldValue::Void) || erlang_eq(v, hv))
    };
    if kind.starts_with("all") {
        considered.all(hit)
    } else {
        considered.any(hit)
    }
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// `headers_match` and a headers exchange agree with the reference for several random
    /// bindings (each to its own queue) and random messages.
    #[test]
    fn headers_match_like_the_reference(
        bindings in vec(binding_args(), 1..8),
        messages in vec(message_headers(), 1..8),
    ) {
        let mut t = Topology::new("/", 5);
        t.declare_exchange(ExchangeSpec::new("h", "headers")).expect("declare h");
        for (i, a) in bindings.iter().enumerate() {
            let name = format!("q{i}");
            t.declare_queue(&short(&name));
            prop_assert!(t.bind(&BindingSpec::queue("h", short(&name), "").with_arguments(a.clone())).expect("bind"));
        }
        for headers in &messages {
            let mut want = BTreeSet::new();
            for (i, a) in bindings.iter().enumerate() {
                let expected = headers_reference(a, headers.as_ref());
                prop_assert_eq!(
                    headers_match(a, headers.as_ref()),
                    expected,
                    "binding {:?} headers {:?}", a, headers
                );
                if expected {
                    want.insert(format!("q{i}"));
                }
            }
            let p = BasicProperties { headers: headers.clone(), ..BasicProperties::default() };
            prop_assert_eq!(route_names(&t, "h", "ignored", &p), Ok(want), "headers {:?}", headers);
        }
    }

    /// The value rule alone: a one-entry `all` binding matches a one-entry message with the
    /// same key exactly when the reference's `==` (or void presence) says so.
    #[test]
    fn header_values_compare_like_erlang(binding in header_value(), header in header_value()) {
        let a: FieldTable = [("k", binding.clone())].into_iter().collect();
        let h: FieldTable = [("k", header.clone())].into_iter().collect();
        let expected = matches!(binding, FieldValue::Void) || erlang_eq(&binding, &header);
        prop_assert_eq!(headers_match(&a, Some(&h)), expected, "{:?} vs {:?}", binding, header);
        // `==` is symmetric (void aside, which means presence).
        if !matches!(binding, FieldValue::Void) && !matches!(header, FieldValue::Void) {
            let a2: FieldTable = [("k", header.clone())].into_iter().collect();
            let h2: FieldTable = [("k", binding.clone())].into_iter().collect();
            prop_assert_eq!(headers_match(&a2, Some(&h2)), expected);
        }
    }
}

// =============================================================================================
// c. bind / unbind sequences
// =============================================================================================

/// (name, type) of the exchanges the sequences play on. `c1` is never an exchange-to-exchange
/// destination nor probed: RabbitMQ's consistent-hash ring depends on binding history (a
/// queue's first binding decides its weight), so only its binding list is compared.
const EXCHANGES: &[(&str, &str)] = &[
    ("d1", "direct"),
    ("d2", "direct"),
    ("f1", "fanout"),
    ("f2", "fanout"),
    ("t1", "topic"),
    ("t2", "topic"),
    ("h1", "headers"),
    ("h2", "headers"),
    ("c1", "x-consistent-hash"),
];
const CH_INDEX: usize = 8;
const TOPIC_MODEL: &str = "t1";
const QUEUES: &[&str] = &["q0", "q1", "q2"];
const KEYS: &[&str] = &["a", "b", "a.b", "*", "#"];
const WEIGHTS: &[&str] = &["1", "2"];

/// Binding arguments by index; 1 and 2 are the same table in another order.
fn op_args(i: usize) -> FieldTable {
    let t = |v: Vec<(&'static str, FieldValue)>| v.into_iter().collect::<FieldTable>();
    match i {
        0 => FieldTable::new(),
        1 => t(vec![("x-match", "any".into()), ("a", FieldValue::I32(1))]),
        2 => t(vec![("a", FieldValue::I32(1)), ("x-match", "any".into())]),
        3 => t(vec![("a", "x".into())]),
        _ => t(vec![("b", FieldValue::Void)]),
    }
}

#[derive(Debug, Clone)]
struct Op {
    bind: bool,
    source: usize,
    /// Queue index, or exchange index (never `c1`).
    destination: Result<usize, usize>,
    key: usize,
    args: usize,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop::bool::weighted(0.6),
        0..EXCHANGES.len(),
        prop_oneof![
            3 => (0..QUEUES.len()).prop_map(Ok),
            2 => (0..CH_INDEX).prop_map(Err),
        ],
        0..KEYS.len(),
        0..5usize,
    )
        .prop_map(|(bind, source, destination, key, args)| Op {
            bind,
            source,
            destination,
            key,
            args,
        })
}

impl Op {
    fn spec(&self) -> BindingSpec {
        let source = EXCHANGES[self.source].0;
        let key = if self.source == CH_INDEX {
            WEIGHTS[self.key % WEIGHTS.len()]
        } else {
            KEYS[self.key]
        };
        let spec = match self.destination {
            Ok(q) => BindingSpec::queue(source, QUEUES[q], key),
            Err(x) => BindingSpec::exchange(source, EXCHANGES[x].0, key),
        };
        spec.with_arguments(op_args(self.args))
    }

    /// The destination as the standalone trie model names it.
    fn model_destination(&self) -> Destination {
        match self.destination {
            Ok(q) => Destination::Queue(QueueId(q as u32)),
            Err(x) => Destination::Exchange(ExchangeId(100 + x as u32)),
        }
    }
}

/// A binding's identity: its names, key and arguments sorted by key (the order RabbitMQ
/// compares them in).
fn normal(spec: &BindingSpec) -> String {
    let mut args: Vec<(&ShortStr, &FieldValue)> = spec.arguments.iter().collect();
    args.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let dest = match &spec.destination {
        DestinationName::Queue(q) => format!("queue {:?}", q.as_bytes()),
        DestinationName::Exchange(x) => format!("exchange {:?}", x.as_bytes()),
    };
    format!(
        "{:?} -> {dest} key {:?} args {args:?}",
        spec.source.as_bytes(),
        spec.key.as_bytes()
    )
}

fn sorted_bindings(t: &Topology) -> Vec<String> {
    let mut v: Vec<String> = t.bindings().map(|b| normal(&b)).collect();
    v.sort();
    v
}

fn fresh_topology(seed: u64) -> Topology {
    let mut t = Topology::new("/", seed);
    for (name, kind) in EXCHANGES {
        t.declare_exchange(ExchangeSpec::new(*name, *kind))
            .expect("declare");
    }
    for q in QUEUES {
        t.declare_queue(&(*q).into());
    }
    t
}

fn probe_messages() -> Vec<(&'static str, BasicProperties)> {
    let with = |h: Option<Vec<(&'static str, FieldValue)>>| BasicProperties {
        headers: h.map(|v| v.into_iter().collect()),
        ..BasicProperties::default()
    };
    let mut out = Vec::new();
    for key in ["a", "b", "a.b", "c", "", "a.b.c"] {
        out.push((key, with(None)));
        out.push((key, with(Some(vec![("a", FieldValue::I32(1))]))));
        out.push((key, with(Some(vec![("a", "x".into())]))));
        out.push((
            key,
            with(Some(vec![
                ("b", FieldValue::I32(0)),
                ("a", FieldValue::I64(1)),
            ])),
        ));
    }
    out
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// After any sequence of binds and unbinds the topology holds exactly the model's
    /// bindings, routes like a topology built from scratch with them, and its topic trie (as
    /// modelled alongside) equals one built from scratch.
    #[test]
    fn bind_unbind_sequences_match_a_fresh_build(ops in vec(op(), 0..60)) {
        let mut t = fresh_topology(31);
        // The final bindings, in the order they were made, by their identity.
        let mut model: Vec<(String, Op)> = Vec::new();
        let mut trie = TopicTrie::new(SeededState::new(4));

        for o in &ops {
            let spec = o.spec();
            let id = normal(&spec);
            let present = model.iter().position(|(n, _)| *n == id);
            let on_trie = EXCHANGES[o.source].0 == TOPIC_MODEL;
            if o.bind {
                let added = t.bind(&spec).expect("bind");
                prop_assert_eq!(added, present.is_none(), "bind {}", id);
                if added {
                    model.push((id, o.clone()));
                    if on_trie {
                        trie.insert(spec.key.as_bytes(), o.model_destination());
                    }
                }
            } else {
                let removal = t.unbind(&spec).expect("unbind");
                prop_assert_eq!(removal.bindings, usize::from(present.is_some()), "unbind {}", id);
                prop_assert!(removal.exchanges.is_empty());
                if let Some(pos) = present {
                    model.remove(pos);
                    if on_trie {
                        prop_assert!(trie.remove(spec.key.as_bytes(), o.model_destination()));
                    }
                }
            }
            prop_assert_eq!(t.binding_count(), model.len());
        }

        // Same bindings.
        let mut want: Vec<String> = model.iter().map(|(n, _)| n.clone()).collect();
        want.sort();
        prop_assert_eq!(sorted_bindings(&t), want.clone());

        // A topology built from scratch (another seed) with the final bindings.
        let mut scratch = fresh_topology(77);
        for (_, o) in &model {
            prop_assert!(scratch.bind(&o.spec()).expect("bind"));
        }
        prop_assert_eq!(sorted_bindings(&scratch), want);
        for (name, _) in &EXCHANGES[..CH_INDEX] {
            for (key, p) in probe_messages() {
                prop_assert_eq!(
                    route_names(&t, name, key, &p),
                    route_names(&scratch, name, key, &p),
                    "exchange {} key {:?} headers {:?}", name, key, p.headers
                );
            }
        }

        // The topic trie, modelled alongside, equals one built from scratch.
        let mut fresh = TopicTrie::new(SeededState::new(5));
        for (_, o) in model.iter().rev() {
            if EXCHANGES[o.source].0 == TOPIC_MODEL {
                fresh.insert(o.spec().key.as_bytes(), o.model_destination());
            }
        }
        prop_assert_eq!(trie.node_count(), fresh.node_count());
        prop_assert!(trie == fresh, "{:?}\n!=\n{:?}", trie.canonical(), fresh.canonical());
        // The exchange's router holds as many bindings as the model.
        let t1 = t.exchange_id(TOPIC_MODEL.as_bytes()).expect("t1");
        prop_assert_eq!(t.router(t1).expect("router").len(), trie.len());

        // Unbinding everything (newest first) empties both.
        for (_, o) in model.iter().rev() {
            prop_assert_eq!(t.unbind(&o.spec()).expect("unbind").bindings, 1);
            if EXCHANGES[o.source].0 == TOPIC_MODEL {
                prop_assert!(trie.remove(o.spec().key.as_bytes(), o.model_destination()));
            }
        }
        prop_assert_eq!(t.binding_count(), 0);
        prop_assert_eq!(trie.node_count(), 1);
        for (name, _) in &EXCHANGES[..CH_INDEX] {
            prop_assert_eq!(route_names(&t, name, "a", &BasicProperties::default()), Ok(BTreeSet::new()));
        }
    }
}

// =============================================================================================
// d. exchange-to-exchange routing and alternate exchanges
// =============================================================================================

const GRAPH_EXCHANGES: usize = 5;
const GRAPH_QUEUES: usize = 4;
const GRAPH_KEYS: &[&str] = &["k1", "k2"];
const PROBE_KEYS: &[&str] = &["k1", "k2", "k3"];

#[derive(Debug, Clone)]
struct GraphExchange {
    fanout: bool,
    internal: bool,
    /// Index of the alternate exchange; `GRAPH_EXCHANGES` names one that does not exist.
    alternate: Option<usize>,
}

#[derive(Debug, Clone)]
struct GraphBinding {
    source: usize,
    /// Queue index, or exchange index.
    destination: Result<usize, usize>,
    key: usize,
}

fn graph_exchange() -> impl Strategy<Value = GraphExchange> {
    (
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.5, 0..=GRAPH_EXCHANGES),
    )
        .prop_map(|(fanout, internal, alternate)| GraphExchange {
            fanout,
            internal,
            alternate,
        })
}

fn graph_binding() -> impl Strategy<Value = GraphBinding> {
    (
        0..GRAPH_EXCHANGES,
        prop_oneof![
            (0..GRAPH_QUEUES).prop_map(Ok),
            (0..GRAPH_EXCHANGES).prop_map(Err),
        ],
        0..GRAPH_KEYS.len(),
    )
        .prop_map(|(source, destination, key)| GraphBinding {
            source,
            destination,
            key,
        })
}

fn exchange_name(i: usize) -> String {
    if i < GRAPH_EXCHANGES {
        format!("e{i}")
    } else {
        "nosuch".to_owned()
    }
}

/// The naive walk (research §6 and §9): each exchange is visited at most once; an exchange's
/// own bindings decide where the message goes next (a fanout matches every binding, a direct
/// exchange the bindings with the routing key); only when they match nothing at all (queues
/// or exchanges, itself included) does it go to the alternate exchange, if that exists.
fn graph_reference(
    exchanges: &[GraphExchange],
    bindings: &[GraphBinding],
    start: usize,
    key: &str,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([start]);
    let mut work = vec![start];
    let mut queues = BTreeSet::new();
    while let Some(x) = work.pop() {
        let matched: Vec<&GraphBinding> = bindings
            .iter()
            .filter(|b| b.source == x && (exchanges[x].fanout || GRAPH_KEYS[b.key] == key))
            .collect();
        if matched.is_empty() {
            if let Some(ae) = exchanges[x].alternate {
                if ae < GRAPH_EXCHANGES && seen.insert(ae) {
                    work.push(ae);
                }
            }
            continue;
        }
        for b in matched {
            match b.destination {
                Ok(q) => {
                    queues.insert(format!("q{q}"));
                }
                Err(e) => {
                    if seen.insert(e) {
                        work.push(e);
                    }
                }
            }
        }
    }
    queues
}

proptest! {
    #![proptest_config(warren_testkit::proptest_config(256))]

    /// Random graphs of fanout and direct exchanges (cycles, self-loops, alternate exchanges
    /// that loop, point at themselves or at nothing, internal exchanges) route from every
    /// exchange exactly like the naive walk.
    #[test]
    fn exchange_graphs_route_like_the_reference(
        exchanges in vec(graph_exchange(), GRAPH_EXCHANGES),
        bindings in vec(graph_binding(), 0..16),
    ) {
        let mut t = Topology::new("/", 13);
        for (i, x) in exchanges.iter().enumerate() {
            let mut spec = ExchangeSpec::new(short(&exchange_name(i)), if x.fanout { "fanout" } else { "direct" });
            spec.internal = x.internal;
            if let Some(ae) = x.alternate {
                spec.arguments.insert("alternate-exchange", FieldValue::from(exchange_name(ae)));
            }
            t.declare_exchange(spec).expect("declare");
        }
        for q in 0..GRAPH_QUEUES {
            t.declare_queue(&short(&format!("q{q}")));
        }
        for b in &bindings {
            let source = short(&exchange_name(b.source));
            let key = GRAPH_KEYS[b.key];
            let spec = match b.destination {
                Ok(q) => BindingSpec::queue(source, short(&format!("q{q}")), key),
                Err(e) => BindingSpec::exchange(source, short(&exchange_name(e)), key),
            };
            t.bind(&spec).expect("bind");
        }
        for (start, x) in exchanges.iter().enumerate() {
            for key in PROBE_KEYS {
                let got = route_names(&t, &exchange_name(start), key, &BasicProperties::default());
                if x.internal {
                    prop_assert_eq!(got, Err(ReplyCode::AccessRefused));
                } else {
                    let want = graph_reference(&exchanges, &bindings, start, key);
                    prop_assert_eq!(got, Ok(want), "from e{} key {}", start, key);
                }
            }
        }
    }
}

/// The reference itself on the cases the research notes describe (§6, §9), so that the
/// property above compares against something known to be right.
#[test]
fn graph_reference_follows_the_research_notes() {
    let fanout = |alternate| GraphExchange {
        fanout: true,
        internal: false,
        alternate,
    };
    let e2e = |source, destination| GraphBinding {
        source,
        destination: Err(destination),
        key: 0,
    };
    let to_queue = |source, q| GraphBinding {
        source,
        destination: Ok(q),
        key: 0,
    };
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();

    // A->A, A->B, B->A with Q bound to A: one copy from A and from B.
    let xs = vec![fanout(None), fanout(None)];
    let bs = vec![e2e(0, 0), e2e(0, 1), e2e(1, 0), to_queue(0, 0)];
    assert_eq!(graph_reference(&xs, &bs, 0, "k"), names(&["q0"]));
    assert_eq!(graph_reference(&xs, &bs, 1, "k"), names(&["q0"]));

    // X (AE=2) -> Y, Y routes nowhere: the AE gets nothing.
    let xs = vec![fanout(Some(2)), fanout(None), fanout(None)];
    let bs = vec![e2e(0, 1), to_queue(2, 0)];
    assert!(graph_reference(&xs, &bs, 0, "k").is_empty());
    // X2 (no AE) -> Y2 (AE=2, no bindings): the AE gets it.
    let xs = vec![fanout(None), fanout(Some(2)), fanout(None)];
    let bs = vec![e2e(0, 1), to_queue(2, 0)];
    assert_eq!(graph_reference(&xs, &bs, 0, "k"), names(&["q0"]));
    // AE chains are followed; AE cycles and missing AEs drop the message.
    let xs = vec![fanout(Some(1)), fanout(Some(2)), fanout(None)];
    assert_eq!(
        graph_reference(&xs, &[to_queue(2, 3)], 0, "k"),
        names(&["q3"])
    );
    let xs = vec![fanout(Some(1)), fanout(Some(0))];
    assert!(graph_reference(&xs, &[], 0, "k").is_empty());
    let xs = vec![fanout(Some(0))];
    assert!(graph_reference(&xs, &[], 0, "k").is_empty());
    let xs = vec![fanout(Some(GRAPH_EXCHANGES))];
    assert!(graph_reference(&xs, &[], 0, "k").is_empty());
}
