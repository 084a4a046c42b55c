//! Declarations, deletions, bindings and the routing walk, checked against what RabbitMQ 3.10.8
//! does for the same client steps (reply codes and texts verbatim).

use warren_amqp_codec::{
    BasicProperties, FieldArray, FieldTable, FieldValue, ReplyCode, Scope, ShortStr,
};
use warren_routing::{
    BindingSpec, DestinationName, ExchangeSpec, QueueId, Routed, RoutingError, Topology,
};

fn topo() -> Topology {
    Topology::new("/", 7)
}

fn props() -> BasicProperties {
    BasicProperties::default()
}

fn with_headers(h: FieldTable) -> BasicProperties {
    BasicProperties {
        headers: Some(h),
        ..BasicProperties::default()
    }
}

fn queue(t: &mut Topology, name: &'static str) -> QueueId {
    t.declare_queue(&ShortStr::from_static(name)).id
}

fn exchange(t: &mut Topology, name: &'static str, kind: &'static str) {
    let mut spec = ExchangeSpec::new(name, kind);
    spec.durable = false;
    t.declare_exchange(spec).expect("declare");
}

fn route(t: &Topology, x: &str, rk: &str, p: &BasicProperties) -> Vec<QueueId> {
    let mut out = Routed::new();
    t.route(x.as_bytes(), rk.as_bytes(), p, &mut out)
        .expect("route");
    out.queues().to_vec()
}

/// The reply text as it goes on the wire.
fn text(e: &RoutingError) -> String {
    e.exception().reply_text()
}

fn args(entries: &[(&'static str, FieldValue)]) -> FieldTable {
    entries.iter().cloned().collect()
}

fn longstr(s: &'static str) -> FieldValue {
    FieldValue::LongStr(s.into())
}

#[test]
fn predeclared_exchanges_match_rabbitmq() {
    let t = topo();
    let mut got: Vec<(String, String, bool, bool, bool)> = t
        .exchanges()
        .map(|(_, x)| {
            (
                x.name.to_string(),
                x.kind.to_string(),
                x.durable,
                x.auto_delete,
                x.internal,
            )
        })
        .collect();
    got.sort();
    let s = |n: &str, k: &str, i: bool| (n.to_owned(), k.to_owned(), true, false, i);
    assert_eq!(
        got,
        vec![
            s("", "direct", false),
            s("amq.direct", "direct", false),
            s("amq.fanout", "fanout", false),
            s("amq.headers", "headers", false),
            s("amq.match", "headers", false),
            s("amq.rabbitmq.trace", "topic", true),
            s("amq.topic", "topic", false),
        ]
    );
}

#[test]
fn declare_errors_in_rabbitmq_order() {
    let mut t = topo();
    // The type is checked first, and it is a connection error.
    for name in ["amq.foo", "", "amq.direct", "x"] {
        let e = t
            .declare_exchange(ExchangeSpec::new(ShortStr::from(name.to_owned()), "foo"))
            .unwrap_err();
        assert_eq!(e.reply_code(), ReplyCode::CommandInvalid);
        assert_eq!(e.exception().scope, Scope::Connection);
        assert_eq!(text(&e), "COMMAND_INVALID - unknown exchange type 'foo'");
    }
    let e = t
        .declare_exchange(ExchangeSpec::new("", "direct"))
        .unwrap_err();
    assert_eq!(
        text(&e),
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    assert_eq!(e.exception().scope, Scope::Channel);
    let e = t
        .declare_exchange(ExchangeSpec::new("amq.foo", "direct"))
        .unwrap_err();
    assert_eq!(
        text(&e),
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"
    );
    // Existing amq.* redeclared identically is fine; the prefix check is case-sensitive.
    let d = t
        .declare_exchange(ExchangeSpec::new("amq.direct", "direct"))
        .unwrap();
    assert!(!d.created);
    assert!(
        t.declare_exchange(ExchangeSpec::new("AMQ.foo", "direct"))
            .unwrap()
            .created
    );
    let mut non_durable = ExchangeSpec::new("amq.direct", "direct");
    non_durable.durable = false;
    assert_eq!(
        text(&t.declare_exchange(non_durable).unwrap_err()),
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': received 'false' but current is 'true'"
    );
}

#[test]
fn equivalence_checks_in_order_and_only_the_alternate_exchange_argument() {
    let mut t = topo();
    let mut base = ExchangeSpec::new("X", "direct");
    base.durable = false;
    base.arguments = args(&[
        ("alternate-exchange", longstr("ae1")),
        ("x-foo", FieldValue::I32(1)),
    ]);
    assert!(t.declare_exchange(base.clone()).unwrap().created);
    let check = |t: &mut Topology, f: &dyn Fn(&mut ExchangeSpec), want: Option<&str>| {
        let mut s = base.clone();
        f(&mut s);
        match (t.declare_exchange(s), want) {
            (Ok(d), None) => assert!(!d.created),
            (Err(e), Some(w)) => assert_eq!(
                text(&e),
                format!("PRECONDITION_FAILED - inequivalent arg {w}")
            ),
            (r, w) => panic!("got {r:?}, wanted {w:?}"),
        }
    };
    let pre = "for exchange 'X' in vhost '/': received";
    check(&mut t, &|_| {}, None);
    check(
        &mut t,
        &|s| s.kind = "fanout".into(),
        Some(&format!("'type' {pre} 'fanout' but current is 'direct'")),
    );
    check(
        &mut t,
        &|s| s.durable = true,
        Some(&format!("'durable' {pre} 'true' but current is 'false'")),
    );
    check(
        &mut t,
        &|s| s.auto_delete = true,
        Some(&format!(
            "'auto_delete' {pre} 'true' but current is 'false'"
        )),
    );
    check(
        &mut t,
        &|s| s.internal = true,
        Some(&format!("'internal' {pre} 'true' but current is 'false'")),
    );
    // Several differ: type first, then durable, then auto_delete, then internal.
    check(
        &mut t,
        &|s| {
            s.kind = "fanout".into();
            s.durable = true;
            s.arguments = FieldTable::new();
        },
        Some(&format!("'type' {pre} 'fanout' but current is 'direct'")),
    );
    check(
        &mut t,
        &|s| {
            s.auto_delete = true;
            s.internal = true;
        },
        Some(&format!(
            "'auto_delete' {pre} 'true' but current is 'false'"
        )),
    );
    check(
        &mut t,
        &|s| s.arguments.insert("alternate-exchange", longstr("ae2")),
        Some(&format!(
            "'alternate-exchange' {pre} 'ae2' but current is 'ae1'"
        )),
    );
    check(
        &mut t,
        &|s| s.arguments = FieldTable::new(),
        Some(&format!(
            "'alternate-exchange' {pre} none but current is the value 'ae1' of type 'longstr'"
        )),
    );
    check(
        &mut t,
        &|s| s.arguments.insert("alternate-exchange", FieldValue::I32(5)),
        Some(&format!(
            "'alternate-exchange' {pre} '5' but current is 'ae1'"
        )),
    );
    // A byte array with the same octets is the same value; other arguments are not compared.
    check(
        &mut t,
        &|s| {
            s.arguments
                .insert("alternate-exchange", FieldValue::Bytes("ae1".into()));
            s.arguments.insert("x-foo", FieldValue::I32(2));
            s.arguments.insert("x-bar", FieldValue::I32(2));
        },
        None,
    );
    let mut added = ExchangeSpec::new("amq.direct", "direct");
    added.arguments = args(&[("alternate-exchange", FieldValue::I32(5))]);
    assert_eq!(
        text(&t.declare_exchange(added).unwrap_err()),
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'amq.direct' in vhost '/': received the value '5' of type 'signedint' but current is none"
    );
}

#[test]
fn new_exchange_with_non_string_alternate_is_refused() {
    let mut t = topo();
    let mut s = ExchangeSpec::new("X", "direct");
    s.arguments = args(&[("alternate-exchange", FieldValue::I32(5))]);
    assert_eq!(
        text(&t.declare_exchange(s).unwrap_err()),
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'X' in vhost '/'"
    );
    assert!(t.exchange_id(b"X").is_none());
}

#[test]
fn passive_declare() {
    let t = topo();
    assert!(t.check_exchange(&"amq.direct".into()).is_ok());
    assert_eq!(
        text(&t.check_exchange(&"nosuch-x".into()).unwrap_err()),
        "NOT_FOUND - no exchange 'nosuch-x' in vhost '/'"
    );
    assert_eq!(
        text(&t.check_exchange(&"".into()).unwrap_err()),
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    // CR and LF are stripped from names.
    assert!(t.check_exchange(&"amq.dir\r\nect".into()).is_ok());
}

#[test]
fn cr_and_lf_are_stripped_from_declared_names() {
    let mut t = topo();
    t.declare_exchange(ExchangeSpec::new("cr\r\nlf", "direct"))
        .unwrap();
    assert!(t.exchange_id(b"crlf").is_some());
    let e = t
        .declare_exchange(ExchangeSpec::new("amq.\r\nfoo", "direct"))
        .unwrap_err();
    assert_eq!(
        text(&e),
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'"
    );
    let q = t.declare_queue(&"q\n1".into()).id;
    assert_eq!(t.queue_name(q).unwrap(), "q1");
}

#[test]
fn delete_exchange_rules() {
    let mut t = topo();
    assert_eq!(
        t.delete_exchange(&"nosuch".into(), true),
        Ok(Default::default())
    );
    assert_eq!(
        text(&t.delete_exchange(&"".into(), false).unwrap_err()),
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    for name in ["amq.direct", "amq.nosuch"] {
        assert_eq!(
            text(
                &t.delete_exchange(&ShortStr::from(name.to_owned()), false)
                    .unwrap_err()
            ),
            format!(
                "ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' not allowed"
            )
        );
    }
    exchange(&mut t, "X", "fanout");
    exchange(&mut t, "Y", "fanout");
    queue(&mut t, "q");
    t.bind(&BindingSpec::queue("X", "q", "")).unwrap();
    t.bind(&BindingSpec::exchange("Y", "X", "")).unwrap();
    assert_eq!(
        text(&t.delete_exchange(&"X".into(), true).unwrap_err()),
        "PRECONDITION_FAILED - exchange 'X' in vhost '/' in use"
    );
    t.unbind(&BindingSpec::queue("X", "q", "")).unwrap();
    // Only source bindings count as "in use": Y -> X does not.
    let r = t.delete_exchange(&"X".into(), true).unwrap();
    assert_eq!(r.exchanges, vec![ShortStr::from("X")]);
    assert_eq!(r.bindings, 1);
    assert!(t.exchange_id(b"Y").is_some());
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn bind_errors() {
    let mut t = topo();
    exchange(&mut t, "X", "direct");
    queue(&mut t, "q");
    let e = t
        .bind(&BindingSpec::queue("nosuch-x", "q", ""))
        .unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no exchange 'nosuch-x' in vhost '/'");
    let e = t
        .bind(&BindingSpec::queue("X", "nosuch-q", ""))
        .unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no queue 'nosuch-q' in vhost '/'");
    let e = t
        .bind(&BindingSpec::queue("nosuch-x", "nosuch-q", ""))
        .unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no exchange 'nosuch-x' in vhost '/'");
    let e = t.bind(&BindingSpec::queue("", "nosuch-q", "")).unwrap_err();
    assert_eq!(
        text(&e),
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    let e = t
        .bind(&BindingSpec::exchange("nosuch-s", "nosuch-d", ""))
        .unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no exchange 'nosuch-s' in vhost '/'");
    let e = t
        .bind(&BindingSpec::exchange("X", "nosuch-d", ""))
        .unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no exchange 'nosuch-d' in vhost '/'");
    for spec in [
        BindingSpec::exchange("X", "", ""),
        BindingSpec::exchange("", "X", ""),
        BindingSpec::exchange("nosuch", "", ""),
    ] {
        let e = t.bind(&spec).unwrap_err();
        assert_eq!(e.reply_code(), ReplyCode::AccessRefused, "{spec:?}");
        assert_eq!(
            text(&t.unbind(&spec).unwrap_err()),
            "ACCESS_REFUSED - operation not permitted on the default exchange"
        );
    }
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn binding_identity_is_source_destination_key_and_arguments() {
    let mut t = topo();
    exchange(&mut t, "X", "direct");
    let q = queue(&mut t, "q");
    let b = BindingSpec::queue("X", "q", "k");
    assert!(t.bind(&b).unwrap());
    assert!(!t.bind(&b).unwrap());
    assert_eq!(t.binding_count(), 1);
    // Different arguments make a second binding; order of arguments does not.
    let a12 = args(&[("a", FieldValue::I32(1)), ("b", FieldValue::I32(2))]);
    let a21 = args(&[("b", FieldValue::I32(2)), ("a", FieldValue::I32(1))]);
    assert!(t.bind(&b.clone().with_arguments(a12)).unwrap());
    assert!(!t.bind(&b.clone().with_arguments(a21.clone())).unwrap());
    assert_eq!(t.binding_count(), 2);
    assert_eq!(route(&t, "X", "k", &props()), vec![q]);
    // Unbinding one leaves the other routing.
    assert_eq!(t.unbind(&b).unwrap().bindings, 1);
    assert_eq!(route(&t, "X", "k", &props()), vec![q]);
    // Unbind with other arguments, of a missing binding, exchange or queue: fine, no effect.
    let other = args(&[("a", FieldValue::I32(9))]);
    assert_eq!(
        t.unbind(&b.clone().with_arguments(other)).unwrap().bindings,
        0
    );
    assert_eq!(
        t.unbind(&BindingSpec::queue("nosuch", "nosuch", "k"))
            .unwrap()
            .bindings,
        0
    );
    assert_eq!(
        t.unbind(&BindingSpec::queue("X", "q", "zz"))
            .unwrap()
            .bindings,
        0
    );
    assert_eq!(t.binding_count(), 1);
    assert_eq!(t.unbind(&b.with_arguments(a21)).unwrap().bindings, 1);
    assert!(route(&t, "X", "k", &props()).is_empty());
    assert_eq!(t.router(t.exchange_id(b"X").unwrap()).unwrap().len(), 0);
}

#[test]
fn bindings_are_listed_by_name() {
    let mut t = topo();
    exchange(&mut t, "X", "topic");
    exchange(&mut t, "Y", "fanout");
    let q = queue(&mut t, "q");
    t.bind(&BindingSpec::queue("X", "q", "a.*")).unwrap();
    t.bind(&BindingSpec::exchange("X", "Y", "#")).unwrap();
    let mut all: Vec<(ShortStr, DestinationName, ShortStr)> = t
        .bindings()
        .map(|b| (b.source, b.destination, b.key))
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            // Queues sort before exchanges.
            ("X".into(), DestinationName::Queue("q".into()), "a.*".into()),
            (
                "X".into(),
                DestinationName::Exchange("Y".into()),
                "#".into()
            ),
        ]
    );
    let qb = t.queue_bindings(q);
    assert_eq!(qb.len(), 1);
    assert_eq!(qb[0].destination, DestinationName::Queue("q".into()));
    assert_eq!(qb[0].key, "a.*");
}

#[test]
fn publish_errors() {
    let t = topo();
    let mut out = Routed::new();
    let e = t.route(b"nosuch-x", b"", &props(), &mut out).unwrap_err();
    assert_eq!(text(&e), "NOT_FOUND - no exchange 'nosuch-x' in vhost '/'");
    let e = t
        .route(b"amq.rabbitmq.trace", b"", &props(), &mut out)
        .unwrap_err();
    assert_eq!(
        text(&e),
        "ACCESS_REFUSED - cannot publish to internal exchange 'amq.rabbitmq.trace' in vhost '/'"
    );
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let mut t = topo();
    let q1 = queue(&mut t, "q1");
    let q2 = queue(&mut t, "q2");
    assert_eq!(route(&t, "", "q1", &props()), vec![q1]);
    let mut out = Routed::new();
    t.route(b"", b"missing", &props(), &mut out).unwrap();
    assert!(out.is_unroutable());
    // CC and BCC work on the default exchange too.
    let cc = args(&[
        ("CC", FieldValue::Array(FieldArray(vec![longstr("q2")]))),
        ("BCC", FieldValue::Array(FieldArray(vec![longstr("q1")]))),
    ]);
    assert_eq!(route(&t, "", "q1", &with_headers(cc)), vec![q1, q2]);
    // Direct reply-to keys are handed back, not looked up as queues.
    t.route(b"", b"amq.rabbitmq.reply-to.abc", &props(), &mut out)
        .unwrap();
    assert_eq!(out.reply_to(), &[bytes_of("amq.rabbitmq.reply-to.abc")]);
    assert!(!out.is_unroutable());
    // Deleted queues are no longer routed to.
    t.delete_queue(q1);
    assert!(route(&t, "", "q1", &props()).is_empty());
}

fn bytes_of(s: &'static str) -> bytes::Bytes {
    bytes::Bytes::from_static(s.as_bytes())
}

#[test]
fn sender_selected_distribution() {
    let mut t = topo();
    exchange(&mut t, "X", "direct");
    let (k1, k2, k3) = (
        queue(&mut t, "k1"),
        queue(&mut t, "k2"),
        queue(&mut t, "k3"),
    );
    for k in ["k1", "k2", "k3"] {
        t.bind(&BindingSpec::queue(
            "X",
            ShortStr::from(k.to_owned()),
            ShortStr::from(k.to_owned()),
        ))
        .unwrap();
    }
    let h = args(&[
        ("CC", FieldValue::Array(FieldArray(vec![longstr("k2")]))),
        ("BCC", FieldValue::Array(FieldArray(vec![longstr("k3")]))),
        ("other", FieldValue::I32(1)),
    ]);
    let mut p = with_headers(h);
    assert_eq!(route(&t, "X", "k1", &p), vec![k1, k2, k3]);
    assert!(warren_routing::strip_bcc(&mut p));
    let h = p.headers.as_ref().unwrap();
    assert!(h.get("BCC").is_none());
    assert!(h.get("CC").is_some() && h.get("other").is_some());
    // Only BCC: the table stays, empty.
    let mut only = with_headers(args(&[("BCC", FieldValue::Array(FieldArray(vec![])))]));
    assert!(warren_routing::strip_bcc(&mut only));
    assert_eq!(only.headers, Some(FieldTable::new()));
    // Non-string elements are skipped; lowercase cc is not a routing header.
    let h = args(&[
        (
            "CC",
            FieldValue::Array(FieldArray(vec![
                longstr("k2"),
                FieldValue::I32(5),
                FieldValue::Bytes("k3".into()),
            ])),
        ),
        ("cc", FieldValue::Array(FieldArray(vec![longstr("k3")]))),
    ]);
    assert_eq!(route(&t, "X", "nowhere", &with_headers(h)), vec![k2]);
    // The same queue by several keys: one copy.
    let h = args(&[(
        "CC",
        FieldValue::Array(FieldArray(vec![longstr("k1"), longstr("k1")])),
    )]);
    assert_eq!(route(&t, "X", "k1", &with_headers(h)), vec![k1]);
    // Not an array: 406.
    for (name, v, ty) in [
        ("CC", longstr("k2"), "longstr"),
        ("BCC", longstr("k2"), "longstr"),
        ("CC", FieldValue::I32(5), "signedint"),
    ] {
        let mut out = Routed::new();
        let e = t
            .route(b"X", b"k1", &with_headers(args(&[(name, v)])), &mut out)
            .unwrap_err();
        assert_eq!(
            text(&e),
            format!(
                "PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,\"{name}\",{ty}}}"
            )
        );
    }
}

#[test]
fn exchange_to_exchange_cycles_deliver_once() {
    let mut t = topo();
    exchange(&mut t, "A", "fanout");
    exchange(&mut t, "B", "fanout");
    exchange(&mut t, "C", "fanout");
    let q = queue(&mut t, "q");
    t.bind(&BindingSpec::exchange("A", "A", "")).unwrap();
    t.bind(&BindingSpec::exchange("A", "B", "")).unwrap();
    t.bind(&BindingSpec::exchange("B", "A", "")).unwrap();
    t.bind(&BindingSpec::queue("A", "q", "")).unwrap();
    assert_eq!(route(&t, "A", "", &props()), vec![q]);
    assert_eq!(route(&t, "B", "", &props()), vec![q]);
    // Two paths to one queue.
    t.bind(&BindingSpec::exchange("A", "C", "")).unwrap();
    t.bind(&BindingSpec::queue("C", "q", "")).unwrap();
    assert_eq!(route(&t, "A", "", &props()), vec![q]);
    // Internal exchanges can be destinations.
    let mut internal = ExchangeSpec::new("I", "fanout");
    internal.internal = true;
    t.declare_exchange(internal).unwrap();
    let qi = queue(&mut t, "qi");
    t.bind(&BindingSpec::queue("I", "qi", "")).unwrap();
    t.bind(&BindingSpec::exchange("B", "I", "")).unwrap();
    assert_eq!(route(&t, "A", "", &props()), vec![q, qi]);
}

fn with_ae(t: &mut Topology, name: &'static str, kind: &'static str, ae: &'static str) {
    let mut s = ExchangeSpec::new(name, kind);
    s.arguments = args(&[("alternate-exchange", longstr(ae))]);
    t.declare_exchange(s).unwrap();
}

#[test]
fn alternate_exchanges() {
    let mut t = topo();
    exchange(&mut t, "AE", "fanout");
    let qa = queue(&mut t, "qa");
    t.bind(&BindingSpec::queue("AE", "qa", "")).unwrap();
    // X matched a binding (to Y, which routes nowhere): X's AE is not used.
    with_ae(&mut t, "X", "direct", "AE");
    exchange(&mut t, "Y", "direct");
    t.bind(&BindingSpec::exchange("X", "Y", "k")).unwrap();
    assert!(route(&t, "X", "k", &props()).is_empty());
    // X matched nothing: the AE gets it.
    assert_eq!(route(&t, "X", "other", &props()), vec![qa]);
    // A downstream exchange's AE is used.
    exchange(&mut t, "X2", "fanout");
    with_ae(&mut t, "Y2", "direct", "AE");
    t.bind(&BindingSpec::exchange("X2", "Y2", "")).unwrap();
    assert_eq!(route(&t, "X2", "k", &props()), vec![qa]);
    // Chains are followed.
    with_ae(&mut t, "X3", "direct", "C3");
    with_ae(&mut t, "C3", "direct", "AE");
    assert_eq!(route(&t, "X3", "k", &props()), vec![qa]);
    // Cycles end; a self-AE too; a missing AE drops the message.
    with_ae(&mut t, "C1", "direct", "C2");
    with_ae(&mut t, "C2", "direct", "C1");
    with_ae(&mut t, "S", "direct", "S");
    with_ae(&mut t, "M", "direct", "missing");
    for x in ["C1", "C2", "S", "M"] {
        assert!(route(&t, x, "k", &props()).is_empty(), "{x}");
    }
    // An internal exchange works as an AE.
    let mut internal = ExchangeSpec::new("IAE", "fanout");
    internal.internal = true;
    t.declare_exchange(internal).unwrap();
    t.bind(&BindingSpec::queue("IAE", "qa", "")).unwrap();
    with_ae(&mut t, "P", "direct", "IAE");
    assert_eq!(route(&t, "P", "k", &props()), vec![qa]);
    // An AE declared after the exchange that names it is found at routing time.
    with_ae(&mut t, "Late", "direct", "LateAE");
    assert!(route(&t, "Late", "k", &props()).is_empty());
    exchange(&mut t, "LateAE", "fanout");
    t.bind(&BindingSpec::queue("LateAE", "qa", "")).unwrap();
    assert_eq!(route(&t, "Late", "k", &props()), vec![qa]);
}

#[test]
fn auto_delete_exchanges() {
    let mut t = topo();
    let ad = |t: &mut Topology, name: &'static str| {
        let mut s = ExchangeSpec::new(name, "fanout");
        s.auto_delete = true;
        t.declare_exchange(s).unwrap();
    };
    // Never bound: stays; unbinding something that isn't there: stays.
    ad(&mut t, "X");
    queue(&mut t, "q");
    assert_eq!(
        t.unbind(&BindingSpec::queue("X", "q", ""))
            .unwrap()
            .exchanges
            .len(),
        0
    );
    assert!(t.exchange_id(b"X").is_some());
    // Two bindings: the first unbind keeps it, the last deletes it.
    t.bind(&BindingSpec::queue("X", "q", "a")).unwrap();
    t.bind(&BindingSpec::queue("X", "q", "b")).unwrap();
    assert!(
        t.unbind(&BindingSpec::queue("X", "q", "a"))
            .unwrap()
            .exchanges
            .is_empty()
    );
    let r = t.unbind(&BindingSpec::queue("X", "q", "b")).unwrap();
    assert_eq!(r.exchanges, vec![ShortStr::from("X")]);
    assert!(t.exchange_id(b"X").is_none());
    // Deleting the bound queue deletes it.
    ad(&mut t, "X");
    let q = t.check_queue(&"q".into()).unwrap();
    t.bind(&BindingSpec::queue("X", "q", "")).unwrap();
    let r = t.delete_queue(q);
    assert_eq!(
        (r.bindings, r.exchanges.clone()),
        (1, vec![ShortStr::from("X")])
    );
    // As the source of X -> Y: deleting Y deletes X. As a destination only: stays.
    ad(&mut t, "X");
    exchange(&mut t, "Y", "fanout");
    t.bind(&BindingSpec::exchange("X", "Y", "")).unwrap();
    t.bind(&BindingSpec::exchange("Y", "X", "")).unwrap();
    let r = t.delete_exchange(&"Y".into(), false).unwrap();
    assert_eq!(r.exchanges, vec![ShortStr::from("Y"), ShortStr::from("X")]);
    assert_eq!(r.bindings, 2);
    ad(&mut t, "D");
    exchange(&mut t, "Y", "fanout");
    t.bind(&BindingSpec::exchange("Y", "D", "")).unwrap();
    t.delete_exchange(&"Y".into(), false).unwrap();
    assert!(t.exchange_id(b"D").is_some());
    // Cascade: AD X -> AD Y -> q; deleting q deletes Y and then X.
    ad(&mut t, "CX");
    ad(&mut t, "CY");
    let q = queue(&mut t, "cq");
    t.bind(&BindingSpec::exchange("CX", "CY", "")).unwrap();
    t.bind(&BindingSpec::queue("CY", "cq", "")).unwrap();
    let r = t.delete_queue(q);
    assert_eq!(
        r.exchanges,
        vec![ShortStr::from("CY"), ShortStr::from("CX")]
    );
    assert_eq!(r.bindings, 2);
    assert_eq!(t.binding_count(), 0);
    // An auto-delete exchange bound to itself and a queue: unbinding the queue leaves the
    // self-binding, so it stays; deleting it removes the self-binding once.
    ad(&mut t, "Self");
    queue(&mut t, "sq");
    t.bind(&BindingSpec::exchange("Self", "Self", "")).unwrap();
    t.bind(&BindingSpec::queue("Self", "sq", "")).unwrap();
    assert!(
        t.unbind(&BindingSpec::queue("Self", "sq", ""))
            .unwrap()
            .exchanges
            .is_empty()
    );
    let r = t.delete_exchange(&"Self".into(), false).unwrap();
    assert_eq!((r.bindings, r.exchanges.len()), (1, 1));
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn ids_are_reused_and_stay_consistent() {
    let mut t = topo();
    exchange(&mut t, "X", "fanout");
    for round in 0..50 {
        let name = ShortStr::from(format!("q{round}"));
        let q = t.declare_queue(&name).id;
        t.bind(&BindingSpec::queue("X", name.clone(), "")).unwrap();
        assert_eq!(route(&t, "X", "", &props()), vec![q]);
        t.delete_queue(q);
        assert!(route(&t, "X", "", &props()).is_empty());
    }
    assert_eq!(t.queue_count(), 0);
    assert_eq!(t.binding_count(), 0);
}

#[test]
fn direct_exchange_with_the_empty_key() {
    let mut t = topo();
    exchange(&mut t, "D", "direct");
    let q = queue(&mut t, "q");
    let q2 = queue(&mut t, "q2");
    t.bind(&BindingSpec::queue("D", "q", "")).unwrap();
    t.bind(&BindingSpec::queue("D", "q2", "k")).unwrap();
    assert_eq!(route(&t, "D", "", &props()), vec![q]);
    assert_eq!(route(&t, "D", "k", &props()), vec![q2]);
    let cc = args(&[("CC", FieldValue::Array(FieldArray(vec![longstr("")])))]);
    assert_eq!(route(&t, "D", "k", &with_headers(cc)), vec![q, q2]);
    assert_eq!(
        t.unbind(&BindingSpec::queue("D", "q", ""))
            .unwrap()
            .bindings,
        1
    );
    assert!(route(&t, "D", "", &props()).is_empty());
    assert_eq!(t.router(t.exchange_id(b"D").unwrap()).unwrap().len(), 1);
}

#[test]
fn a_cc_word_longer_than_any_binding_key_matches_only_wildcards() {
    let mut t = topo();
    exchange(&mut t, "T", "topic");
    let q = queue(&mut t, "q");
    let star = queue(&mut t, "star");
    let long = "a".repeat(255);
    t.bind(&BindingSpec::queue("T", "q", ShortStr::from(long.clone())))
        .unwrap();
    t.bind(&BindingSpec::queue("T", "star", "*")).unwrap();
    let longer = FieldValue::LongStr("a".repeat(256).into());
    let h = args(&[("CC", FieldValue::Array(FieldArray(vec![longer])))]);
    assert_eq!(route(&t, "T", "x.y", &with_headers(h)), vec![star]);
    assert_eq!(route(&t, "T", &long, &props()), vec![q, star]);
}

#[test]
fn many_live_trie_nodes_still_match_exactly() {
    // Every 10-word pattern of `a` and `*`: 1,024 bindings, all of which match `a.a.….a`,
    // so over a thousand trie nodes are live on the last word.
    let mut t = topo();
    exchange(&mut t, "T", "topic");
    let mut ids = Vec::new();
    for mask in 0u32..1024 {
        let name = ShortStr::from(format!("q{mask}"));
        ids.push(t.declare_queue(&name).id);
        let pattern: Vec<&str> = (0..10)
            .map(|i| if mask & (1 << i) != 0 { "*" } else { "a" })
            .collect();
        t.bind(&BindingSpec::queue(
            "T",
            name,
            ShortStr::from(pattern.join(".")),
        ))
        .unwrap();
    }
    ids.sort();
    assert_eq!(route(&t, "T", &["a"; 10].join("."), &props()), ids);
    // `b` in the first word leaves only the 512 patterns starting with `*`.
    let key = format!("b.{}", ["a"; 9].join("."));
    assert_eq!(route(&t, "T", &key, &props()).len(), 512);
}

/// An alternate exchange from a policy, as RabbitMQ 3.10.8 does it (probed): used when the
/// exchange has no `alternate-exchange` argument; the argument wins when it has one; setting
/// or clearing it acts on an existing exchange at once.
#[test]
fn a_policy_alternate_exchange_serves_where_no_argument_does() {
    let mut t = topo();
    exchange(&mut t, "ae1", "fanout");
    exchange(&mut t, "ae2", "fanout");
    let q1 = queue(&mut t, "q1");
    let q2 = queue(&mut t, "q2");
    t.bind(&BindingSpec::queue("ae1", "q1", "")).unwrap();
    t.bind(&BindingSpec::queue("ae2", "q2", "")).unwrap();
    exchange(&mut t, "plain", "direct");
    let mut with_arg = ExchangeSpec::new("with-arg", "direct");
    with_arg.arguments = args(&[("alternate-exchange", longstr("ae1"))]);
    t.declare_exchange(with_arg).unwrap();
    assert_eq!(route(&t, "plain", "nokey", &props()), []);
    let plain = t.exchange_id(b"plain").unwrap();
    let with_arg = t.exchange_id(b"with-arg").unwrap();
    assert!(t.set_policy_alternate(plain, Some("ae2".into())));
    assert!(t.set_policy_alternate(with_arg, Some("ae2".into())));
    assert_eq!(route(&t, "plain", "nokey", &props()), [q2]);
    assert_eq!(route(&t, "with-arg", "nokey", &props()), [q1]);
    // Only unroutable messages go there.
    let q3 = queue(&mut t, "q3");
    t.bind(&BindingSpec::queue("plain", "q3", "k")).unwrap();
    assert_eq!(route(&t, "plain", "k", &props()), [q3]);
    assert!(t.set_policy_alternate(plain, None));
    assert_eq!(route(&t, "plain", "nokey", &props()), []);
}
