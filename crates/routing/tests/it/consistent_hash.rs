//! The `x-consistent-hash` exchange against RabbitMQ 3.10.8's observed behaviour (research
//! notes §13): binding-key and exchange-argument validation with RabbitMQ's texts, weights,
//! stable placement, messages without the hashed header or property, consistency when the ring
//! grows, hashing on `message_id`, `correlation_id` and `timestamp`, and a queue bound twice.
//!
//! The hash function differs from the plugin's (docs/deviations.md), so these tests check
//! proportions and invariants, never which queue a given key lands on.

use std::collections::BTreeMap;
use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue, ReplyCode, Scope, ShortStr};
use warren_routing::{BindingSpec, ExchangeSpec, QueueId, Routed, RoutingError, Topology};

const CH: &str = "x-consistent-hash";

/// A topology with consistent-hash exchange `c` (declared with `arguments`) and queues
/// `q0..q{n}`, none bound.
fn ring(arguments: FieldTable, queues: usize) -> (Topology, Vec<QueueId>) {
    ring_seeded(arguments, queues, 17)
}

fn ring_seeded(arguments: FieldTable, queues: usize, seed: u64) -> (Topology, Vec<QueueId>) {
    let mut t = Topology::new("/", seed);
    let mut spec = ExchangeSpec::new("c", CH);
    spec.arguments = arguments;
    t.declare_exchange(spec).expect("declare c");
    let ids = (0..queues)
        .map(|i| t.declare_queue(&format!("q{i}").into()).id)
        .collect();
    (t, ids)
}

fn bind(t: &mut Topology, queue: &str, weight: &'static str) {
    assert!(
        t.bind(&BindingSpec::queue(
            "c",
            ShortStr::from(queue.to_owned()),
            weight
        ))
        .expect("bind"),
        "{queue} {weight} is a new binding"
    );
}

/// Routes one message to `c`; it must reach exactly one queue.
fn route_one(t: &Topology, key: &str, properties: &BasicProperties) -> QueueId {
    let mut out = Routed::new();
    t.route(b"c", key.as_bytes(), properties, &mut out)
        .expect("route");
    match out.queues() {
        [q] => *q,
        other => panic!("key {key:?} went to {other:?}, not to exactly one queue"),
    }
}

fn no_props() -> BasicProperties {
    BasicProperties::default()
}

/// How many of `keys` each queue receives.
fn spread(t: &Topology, keys: impl Iterator<Item = String>) -> BTreeMap<QueueId, usize> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts.entry(route_one(t, &k, &no_props())).or_insert(0) += 1;
    }
    counts
}

fn keys(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("key-{i}"))
}

/// Asserts that `got` is within ±15% of `expected`.
fn near(got: usize, expected: usize, what: &str) {
    near_pct(got, expected, 15, what);
}

/// Asserts that `got` is within ±`pct`% of `expected`.
fn near_pct(got: usize, expected: usize, pct: usize, what: &str) {
    let (lo, hi) = (expected * (100 - pct) / 100, expected * (100 + pct) / 100);
    assert!(
        (lo..=hi).contains(&got),
        "{what}: {got}, expected {expected} ± {pct}%"
    );
}

fn args(entries: Vec<(&'static str, FieldValue)>) -> FieldTable {
    entries.into_iter().collect()
}

// ---- validation -----------------------------------------------------------------------------

fn assert_precondition(e: &RoutingError, text: &str) {
    assert_eq!(e.reply_code(), ReplyCode::PreconditionFailed, "{e:?}");
    let ex = e.exception();
    assert_eq!(ex.text, text);
    assert_eq!(ex.scope, Scope::Channel);
    assert_eq!(ex.reply_text(), format!("PRECONDITION_FAILED - {text}"));
}

#[test]
fn binding_keys_must_be_integers() {
    let (mut t, _) = ring(FieldTable::new(), 1);
    t.declare_exchange(ExchangeSpec::new("f", "fanout"))
        .expect("declare f");
    for (key, shown) in [
        ("abc", "<<\"abc\">>"),
        ("", "<<>>"),
        ("1.5", "<<\"1.5\">>"),
        (" 1", "<<\" 1\">>"),
        ("10a", "<<\"10a\">>"),
    ] {
        let text = format!("The binding key must be an integer: {shown}");
        // queue.bind
        let e = t
            .bind(&BindingSpec::queue("c", "q0", key))
            .expect_err("not an integer");
        assert_precondition(&e, &text);
        // exchange.bind
        let e = t
            .bind(&BindingSpec::exchange("c", "f", key))
            .expect_err("not an integer");
        assert_precondition(&e, &text);
    }
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn binding_keys_must_be_positive() {
    let (mut t, _) = ring(FieldTable::new(), 1);
    t.declare_exchange(ExchangeSpec::new("f", "fanout"))
        .expect("declare f");
    for key in ["0", "-1", "-0", "00", "-100"] {
        let e = t
            .bind(&BindingSpec::queue("c", "q0", key))
            .expect_err("not positive");
        assert_precondition(&e, "The binding key must be greater than 0");
        let e = t
            .bind(&BindingSpec::exchange("c", "f", key))
            .expect_err("not positive");
        assert_precondition(&e, "The binding key must be greater than 0");
    }
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn signed_padded_and_large_weights_are_accepted() {
    for key in ["1", "+1", "01", "1000000", "007"] {
        let (mut t, ids) = ring(FieldTable::new(), 1);
        bind(&mut t, "q0", key);
        assert_eq!(route_one(&t, "anything", &no_props()), ids[0], "{key}");
    }
}

#[test]
fn hash_header_and_hash_property_are_exclusive() {
    let mut t = Topology::new("/", 1);
    let mut spec = ExchangeSpec::new("c", CH);
    spec.arguments = args(vec![
        ("hash-header", "h".into()),
        ("hash-property", "message_id".into()),
    ]);
    let e = t.declare_exchange(spec).expect_err("both set");
    assert_precondition(&e, "hash-header and hash-property are mutually exclusive");
    assert!(t.exchange_id(b"c").is_none());
}

#[test]
fn only_three_properties_can_be_hashed() {
    for property in [
        "bogus",
        "app_id",
        "type",
        "headers",
        "priority",
        "content_type",
        "delivery_mode",
        "reply_to",
        "user_id",
        "expiration",
        "MESSAGE_ID",
        "",
    ] {
        let mut t = Topology::new("/", 1);
        let mut spec = ExchangeSpec::new("c", CH);
        spec.arguments = args(vec![(
            "hash-property",
            FieldValue::from(property.to_owned()),
        )]);
        let e = t.declare_exchange(spec).expect_err(property);
        assert_precondition(&e, &format!("Unsupported property: {property}"));
        assert!(t.exchange_id(b"c").is_none());
    }
    for property in ["message_id", "correlation_id", "timestamp"] {
        let mut t = Topology::new("/", 1);
        let mut spec = ExchangeSpec::new("c", CH);
        spec.arguments = args(vec![("hash-property", FieldValue::from(property))]);
        assert!(t.declare_exchange(spec).expect(property).created);
    }
}

#[test]
fn any_hash_header_string_is_accepted() {
    for header in ["", "h", "x-some header"] {
        let mut t = Topology::new("/", 1);
        let mut spec = ExchangeSpec::new("c", CH);
        spec.arguments = args(vec![("hash-header", FieldValue::from(header))]);
        assert!(t.declare_exchange(spec).expect(header).created);
    }
}

/// RabbitMQ crashes the connection (541 INTERNAL_ERROR) on a non-string `hash-header` or
/// `hash-property`; we refuse the declaration with a 406 that says why (a deliberate
/// deviation, docs/deviations.md), and nothing is created.
#[test]
fn non_string_hash_arguments_are_refused() {
    for arg in ["hash-header", "hash-property"] {
        let mut t = Topology::new("/", 1);
        let mut spec = ExchangeSpec::new("c", CH);
        spec.arguments = args(vec![(arg, FieldValue::I32(5))]);
        let e = t.declare_exchange(spec).expect_err(arg);
        assert_precondition(
            &e,
            &format!("invalid type for arg '{arg}' in exchange 'c' in vhost '/': expected longstr"),
        );
        assert!(t.exchange_id(b"c").is_none());
    }
}

// ---- routing --------------------------------------------------------------------------------

#[test]
fn no_bindings_routes_nowhere() {
    let (t, _) = ring(FieldTable::new(), 2);
    let mut out = Routed::new();
    t.route(b"c", b"k", &no_props(), &mut out).expect("route");
    assert!(out.is_unroutable());
}

#[test]
fn weights_are_proportional() {
    // 1:2 over 3000 keys (RabbitMQ: 1006 / 1994).
    let (mut t, ids) = ring(FieldTable::new(), 2);
    bind(&mut t, "q0", "1");
    bind(&mut t, "q1", "2");
    let counts = spread(&t, keys(3000));
    near(counts.get(&ids[0]).copied().unwrap_or(0), 1000, "weight 1");
    near(counts.get(&ids[1]).copied().unwrap_or(0), 2000, "weight 2");

    // 1:1:1.
    let (mut t, ids) = ring(FieldTable::new(), 3);
    for q in ["q0", "q1", "q2"] {
        bind(&mut t, q, "1");
    }
    let counts = spread(&t, keys(3000));
    for id in &ids {
        near(counts.get(id).copied().unwrap_or(0), 1000, "1:1:1");
    }

    // 1:3 with large weights (10:30).
    let (mut t, ids) = ring(FieldTable::new(), 2);
    bind(&mut t, "q0", "10");
    bind(&mut t, "q1", "30");
    let counts = spread(&t, keys(4000));
    near(counts.get(&ids[0]).copied().unwrap_or(0), 1000, "weight 10");
    near(counts.get(&ids[1]).copied().unwrap_or(0), 3000, "weight 30");
}

/// An identical routing key always goes to the same queue, and the placement does not depend
/// on the topology's hash seed (it must survive a restart).
#[test]
fn the_same_key_goes_to_the_same_queue() {
    let build = |seed| {
        let (mut t, ids) = ring_seeded(FieldTable::new(), 4, seed);
        for (q, w) in [("q0", "1"), ("q1", "2"), ("q2", "1"), ("q3", "3")] {
            bind(&mut t, q, w);
        }
        (t, ids)
    };
    let (t1, ids1) = build(1);
    let (t2, ids2) = build(0xdead_beef);
    assert_eq!(ids1, ids2);
    let mut used = std::collections::BTreeSet::new();
    for k in keys(500) {
        let q = route_one(&t1, &k, &no_props());
        for _ in 0..3 {
            assert_eq!(route_one(&t1, &k, &no_props()), q, "{k}");
        }
        assert_eq!(route_one(&t2, &k, &no_props()), q, "{k}, other seed");
        used.insert(q);
    }
    assert_eq!(used.len(), 4, "every queue gets some keys");
}

/// Growing the ring moves keys only to the new queue, and about as many as its share.
#[test]
fn adding_a_binding_moves_keys_only_to_it() {
    let (mut t, ids) = ring(FieldTable::new(), 4);
    bind(&mut t, "q0", "1");
    bind(&mut t, "q1", "1");
    let before: Vec<QueueId> = keys(3000).map(|k| route_one(&t, &k, &no_props())).collect();

    bind(&mut t, "q2", "1");
    let after: Vec<QueueId> = keys(3000).map(|k| route_one(&t, &k, &no_props())).collect();
    let mut moved = 0;
    for (k, (b, a)) in keys(3000).zip(before.iter().zip(&after)) {
        if a != b {
            assert_eq!(
                *a, ids[2],
                "{k} moved from {b:?} to {a:?}, not to the new queue"
            );
            moved += 1;
        }
    }
    near(moved, 1000, "keys moved to a third queue");

    bind(&mut t, "q3", "3");
    let last: Vec<QueueId> = keys(3000).map(|k| route_one(&t, &k, &no_props())).collect();
    let mut moved = 0;
    for (k, (b, a)) in keys(3000).zip(after.iter().zip(&last)) {
        if a != b {
            assert_eq!(
                *a, ids[3],
                "{k} moved from {b:?} to {a:?}, not to the new queue"
            );
            moved += 1;
        }
    }
    near(moved, 1500, "keys moved to a weight-3 queue out of 6");
}

/// Messages without the hashed header all go to one queue, always the same one; with the
/// header, the routing key is ignored.
#[test]
fn hash_header() {
    let (mut t, ids) = ring(args(vec![("hash-header", "h".into())]), 3);
    for q in ["q0", "q1", "q2"] {
        bind(&mut t, q, "1");
    }
    let with = |entries: Vec<(&'static str, FieldValue)>| BasicProperties {
        headers: Some(entries.into_iter().collect()),
        ..BasicProperties::default()
    };

    // No headers at all, or headers without the key: one queue for all 100 keys.
    let fixed = route_one(&t, "key-0", &no_props());
    for k in keys(100) {
        assert_eq!(route_one(&t, &k, &no_props()), fixed, "{k}, no headers");
        assert_eq!(
            route_one(&t, &k, &with(vec![("other", FieldValue::from(k.clone()))])),
            fixed,
            "{k}, other header"
        );
        assert_eq!(
            route_one(&t, &k, &with(vec![])),
            fixed,
            "{k}, empty headers"
        );
    }

    // With the header the value decides, the routing key does not.
    let mut counts = BTreeMap::new();
    for i in 0..1500 {
        let p = with(vec![("h", FieldValue::from(format!("v{i}")))]);
        let q = route_one(&t, "rk-a", &p);
        assert_eq!(route_one(&t, &format!("rk-{i}"), &p), q, "v{i}");
        *counts.entry(q).or_insert(0usize) += 1;
    }
    for id in &ids {
        near(
            counts.get(id).copied().unwrap_or(0),
            500,
            "hash-header 1:1:1",
        );
    }
}

fn property_spread(property: &'static str, set: impl Fn(usize) -> BasicProperties) {
    let (mut t, ids) = ring(args(vec![("hash-property", property.into())]), 2);
    bind(&mut t, "q0", "1");
    bind(&mut t, "q1", "1");

    // Absent: one fixed queue whatever the routing key.
    let fixed = route_one(&t, "key-0", &no_props());
    for k in keys(100) {
        assert_eq!(
            route_one(&t, &k, &no_props()),
            fixed,
            "{property} absent, {k}"
        );
    }

    // Present: the property decides, the routing key does not, and the spread follows the
    // weights.
    let mut counts = BTreeMap::new();
    for i in 0..2000 {
        let p = set(i);
        let q = route_one(&t, "same", &p);
        assert_eq!(
            route_one(&t, &format!("other-{i}"), &p),
            q,
            "{property} {i}"
        );
        assert_eq!(route_one(&t, "same", &p), q, "{property} {i}");
        *counts.entry(q).or_insert(0usize) += 1;
    }
    for id in &ids {
        near(counts.get(id).copied().unwrap_or(0), 1000, property);
    }
}

#[test]
fn hash_property_message_id() {
    property_spread("message_id", |i| BasicProperties {
        message_id: Some(format!("msg-{i}").into()),
        ..BasicProperties::default()
    });
}

#[test]
fn hash_property_correlation_id() {
    property_spread("correlation_id", |i| BasicProperties {
        correlation_id: Some(format!("corr-{i}").into()),
        ..BasicProperties::default()
    });
}

#[test]
fn hash_property_timestamp() {
    property_spread("timestamp", |i| BasicProperties {
        timestamp: Some(1_660_000_000 + i as u64),
        ..BasicProperties::default()
    });
}

/// A property other than the hashed one does not influence placement.
#[test]
fn other_properties_are_ignored() {
    let (mut t, _) = ring(args(vec![("hash-property", "message_id".into())]), 3);
    for q in ["q0", "q1", "q2"] {
        bind(&mut t, q, "1");
    }
    for i in 0..200 {
        let base = BasicProperties {
            message_id: Some(format!("m{i}").into()),
            ..BasicProperties::default()
        };
        let q = route_one(&t, "k", &base);
        let noisy = BasicProperties {
            correlation_id: Some(format!("c{i}").into()),
            timestamp: Some(i as u64),
            app_id: Some("app".into()),
            ..base.clone()
        };
        assert_eq!(route_one(&t, "k", &noisy), q, "m{i}");
    }
}

/// A queue bound twice owns the buckets of both bindings. RabbitMQ's plugin counts only the
/// first binding's weight (3.10.8: "3" then "1" against "1" gave 1510/490); ours is a
/// documented deviation (docs/deviations.md): every binding contributes its weight.
#[test]
fn a_queue_bound_twice_owns_both_weights() {
    let (mut t, ids) = ring(FieldTable::new(), 2);
    bind(&mut t, "q0", "3");
    bind(&mut t, "q0", "1");
    bind(&mut t, "q1", "1");
    assert_eq!(t.binding_count(), 3);
    // 8000 keys, each count within a few percent: 4:1 (6400/1600) must be told apart from
    // RabbitMQ's 3:1 (6000/2000).
    let counts = spread(&t, keys(8000));
    near_pct(
        counts.get(&ids[0]).copied().unwrap_or(0),
        6400,
        4,
        "q0 bound with 3 and 1",
    );
    near_pct(
        counts.get(&ids[1]).copied().unwrap_or(0),
        1600,
        12,
        "q1 bound with 1",
    );
}

/// Unbinding one of a queue's two bindings removes only that binding's buckets (RabbitMQ's
/// plugin takes the queue off the ring entirely; see docs/deviations.md).
#[test]
fn unbinding_one_binding_of_a_queue_keeps_the_other() {
    for (removed, q0_share) in [("1", 1500), ("3", 1000)] {
        let (mut t, ids) = ring(FieldTable::new(), 2);
        bind(&mut t, "q0", "3");
        bind(&mut t, "q0", "1");
        bind(&mut t, "q1", "1");
        let removal = t
            .unbind(&BindingSpec::queue("c", "q0", removed))
            .expect("unbind");
        assert_eq!(removal.bindings, 1);
        assert_eq!(
            t.binding_count(),
            2,
            "the other binding of q0 is still listed"
        );
        let counts = spread(&t, keys(2000));
        let q0 = counts.get(&ids[0]).copied().unwrap_or(0);
        near_pct(q0, q0_share, 12, &format!("q0 after unbinding {removed:?}"));
        assert_eq!(counts.get(&ids[1]).copied().unwrap_or(0), 2000 - q0);
    }
}

/// Unbinding the only binding of a queue gives its share back to the rest; unbinding
/// everything leaves the exchange routing nowhere.
#[test]
fn unbinding_shrinks_the_ring() {
    let (mut t, ids) = ring(FieldTable::new(), 3);
    bind(&mut t, "q0", "1");
    bind(&mut t, "q1", "1");
    bind(&mut t, "q2", "2");
    t.unbind(&BindingSpec::queue("c", "q2", "2"))
        .expect("unbind");
    let counts = spread(&t, keys(2000));
    assert_eq!(counts.get(&ids[2]), None);
    near(counts.get(&ids[0]).copied().unwrap_or(0), 1000, "q0");
    near(counts.get(&ids[1]).copied().unwrap_or(0), 1000, "q1");
    // Unbinding with a different weight removes nothing.
    let removal = t
        .unbind(&BindingSpec::queue("c", "q0", "2"))
        .expect("unbind");
    assert_eq!(removal.bindings, 0);
    t.unbind(&BindingSpec::queue("c", "q0", "1"))
        .expect("unbind");
    t.unbind(&BindingSpec::queue("c", "q1", "1"))
        .expect("unbind");
    let mut out = Routed::new();
    t.route(b"c", b"k", &no_props(), &mut out).expect("route");
    assert!(out.is_unroutable());
}

/// An exchange-to-exchange binding is a ring member like a queue: what lands on it is routed
/// on by the destination exchange.
#[test]
fn exchanges_can_be_ring_members() {
    let (mut t, ids) = ring(FieldTable::new(), 3);
    t.declare_exchange(ExchangeSpec::new("f", "fanout"))
        .expect("declare f");
    t.bind(&BindingSpec::queue("f", "q1", "")).expect("bind");
    t.bind(&BindingSpec::queue("f", "q2", "")).expect("bind");
    bind(&mut t, "q0", "1");
    assert!(t.bind(&BindingSpec::exchange("c", "f", "1")).expect("e2e"));
    let (mut to_q0, mut to_f) = (0, 0);
    for k in keys(1000) {
        let mut out = Routed::new();
        t.route(b"c", k.as_bytes(), &no_props(), &mut out)
            .expect("route");
        match out.queues() {
            [q] if *q == ids[0] => to_q0 += 1,
            [a, b] if *a == ids[1] && *b == ids[2] => to_f += 1,
            other => panic!("{k} went to {other:?}"),
        }
    }
    near(to_q0, 500, "queue member");
    near(to_f, 500, "exchange member");
}
