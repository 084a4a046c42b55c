//! The headers exchange against RabbitMQ 3.10.8's observed behaviour (research notes §11, §4
//! and §14): `all`/`any`/`all-with-x`/`any-with-x`, void as presence, value comparison by
//! Erlang's `==` (numbers across types, long strings against byte arrays, nested values with
//! their types and order), `x-` keys, empty arguments, and the `x-match` validation errors.

use bytes::Bytes;
use warren_amqp_codec::{
    BasicProperties, Decimal, FieldArray, FieldTable, FieldValue, ReplyCode, Scope,
};
use warren_routing::kinds::{MatchKind, headers_match};
use warren_routing::{BindingSpec, ExchangeSpec, QueueId, Routed, RoutingError, Topology};

use warren_amqp_codec::FieldValue::{Bool, F32, F64, I8, I16, I32, I64, Void};

fn table(entries: Vec<(&'static str, FieldValue)>) -> FieldTable {
    entries.into_iter().collect()
}

fn s(v: &'static str) -> FieldValue {
    FieldValue::from(v)
}

fn x(v: &'static [u8]) -> FieldValue {
    FieldValue::Bytes(Bytes::from_static(v))
}

fn arr(items: Vec<FieldValue>) -> FieldValue {
    FieldValue::Array(FieldArray(items))
}

fn tab(entries: Vec<(&'static str, FieldValue)>) -> FieldValue {
    FieldValue::Table(table(entries))
}

/// Binding arguments: `x-match` = `kind` (omitted when `None`) followed by `rest`.
fn args(kind: Option<&'static str>, rest: Vec<(&'static str, FieldValue)>) -> FieldTable {
    let mut t = FieldTable::new();
    if let Some(k) = kind {
        t.insert("x-match", k);
    }
    for (k, v) in rest {
        t.push(k.into(), v);
    }
    t
}

/// Whether `args` match message headers `headers`.
fn matches(args: &FieldTable, headers: Vec<(&'static str, FieldValue)>) -> bool {
    headers_match(args, Some(&table(headers)))
}

// ---- all / any and empty arguments -------------------------------------------------------------

#[test]
fn all_without_arguments_matches_everything() {
    for a in [
        args(Some("all"), vec![]),
        FieldTable::new(),
        args(Some("all-with-x"), vec![]),
        args(Some("all"), vec![("x-foo", I32(1))]),
    ] {
        assert!(headers_match(&a, None), "{a:?}, no headers");
        assert!(headers_match(&a, Some(&FieldTable::new())), "{a:?}, empty");
        assert!(matches(&a, vec![("a", I32(1))]), "{a:?}");
        assert!(matches(&a, vec![("x-match", s("any"))]), "{a:?}");
    }
}

#[test]
fn any_without_arguments_matches_nothing() {
    for a in [
        args(Some("any"), vec![]),
        args(Some("any-with-x"), vec![]),
        args(Some("any"), vec![("x-foo", I32(1))]),
    ] {
        assert!(!headers_match(&a, None), "{a:?}, no headers");
        assert!(!headers_match(&a, Some(&FieldTable::new())), "{a:?}, empty");
        assert!(!matches(&a, vec![("a", I32(1))]), "{a:?}");
        assert!(!matches(&a, vec![("x-foo", I32(1))]), "{a:?}");
    }
    // Even a header `x-match` naming the binding's own kind does not count.
    assert!(!matches(
        &args(Some("any-with-x"), vec![]),
        vec![("x-match", s("any-with-x"))]
    ));
}

#[test]
fn all_needs_every_argument_and_any_one() {
    let all = args(Some("all"), vec![("a", I32(1)), ("b", I32(2))]);
    let any = args(Some("any"), vec![("a", I32(1)), ("b", I32(2))]);
    let implicit_all = args(None, vec![("a", I32(1)), ("b", I32(2))]);
    for a in [&all, &implicit_all] {
        assert!(!matches(a, vec![("a", I32(1))]));
        assert!(matches(a, vec![("a", I32(1)), ("b", I32(2))]));
        assert!(
            matches(a, vec![("b", I32(2)), ("a", I32(1))]),
            "header order"
        );
        assert!(matches(
            a,
            vec![("c", I32(0)), ("b", I32(2)), ("a", I32(1))]
        ));
        assert!(!matches(a, vec![("a", I32(1)), ("b", I32(3))]));
        assert!(!headers_match(a, None));
    }
    assert!(matches(&any, vec![("b", I32(2))]));
    assert!(matches(&any, vec![("a", I32(1)), ("b", I32(3))]));
    assert!(!matches(&any, vec![("a", I32(2)), ("b", I32(3))]));
    assert!(!matches(&any, vec![("c", I32(1))]));
    assert!(!headers_match(&any, None));
    // The order of the binding's arguments does not matter either.
    let reordered = args(Some("all"), vec![("b", I32(2)), ("a", I32(1))]);
    assert!(matches(&reordered, vec![("a", I32(1)), ("b", I32(2))]));
    assert!(!matches(&reordered, vec![("a", I32(1))]));
    let reordered = table(vec![("b", I32(2)), ("x-match", s("any")), ("a", I32(1))]);
    assert!(matches(&reordered, vec![("a", I32(1))]));
}

#[test]
fn keys_are_case_sensitive() {
    let a = args(Some("all"), vec![("a", I32(1))]);
    assert!(!matches(&a, vec![("A", I32(1))]));
    let a = args(Some("any"), vec![("Key", s("v"))]);
    assert!(!matches(&a, vec![("key", s("v"))]));
    assert!(matches(&a, vec![("Key", s("v"))]));
}

// ---- void -----------------------------------------------------------------------------------

#[test]
fn void_means_present() {
    let a = args(Some("all"), vec![("a", Void)]);
    assert!(matches(&a, vec![("a", I32(5))]));
    assert!(matches(&a, vec![("a", Void)]));
    assert!(matches(&a, vec![("a", s(""))]));
    assert!(matches(&a, vec![("a", tab(vec![]))]));
    assert!(!matches(&a, vec![("b", I32(5))]));
    assert!(!headers_match(&a, Some(&FieldTable::new())));
    assert!(!headers_match(&a, None));

    let any = args(Some("any"), vec![("a", Void), ("b", I32(1))]);
    assert!(matches(&any, vec![("a", s("z"))]));
    assert!(matches(&any, vec![("b", I32(1))]));
    assert!(!matches(&any, vec![("b", I32(2))]));
}

#[test]
fn a_void_header_equals_nothing_but_void_presence() {
    // S"" vs void -> no match, both ways.
    assert!(!matches(&args(None, vec![("a", s(""))]), vec![("a", Void)]));
    assert!(!matches(
        &args(None, vec![("a", I32(0))]),
        vec![("a", Void)]
    ));
    assert!(!matches(
        &args(None, vec![("a", Bool(false))]),
        vec![("a", Void)]
    ));
}

// ---- scalar values --------------------------------------------------------------------------

/// I1 == l1 == d1.0 == f1.0 == b1 == s1, in every pairing and both directions.
#[test]
fn numbers_compare_across_types() {
    let ones = [I32(1), I64(1), F64(1.0), F32(1.0), I8(1), I16(1)];
    for binding in &ones {
        for header in &ones {
            let a = args(Some("all"), vec![("n", binding.clone())]);
            assert!(
                matches(&a, vec![("n", header.clone())]),
                "{binding:?} vs {header:?}"
            );
        }
    }
    let twos = [I32(2), I64(2), F64(2.0), F32(2.0), I8(2), I16(2), F64(1.5)];
    for binding in &ones {
        for header in &twos {
            let a = args(Some("all"), vec![("n", binding.clone())]);
            assert!(
                !matches(&a, vec![("n", header.clone())]),
                "{binding:?} vs {header:?}"
            );
        }
    }
    // d1.5 matches f1.5.
    assert!(matches(
        &args(None, vec![("n", F64(1.5))]),
        vec![("n", F32(1.5))]
    ));
    assert!(matches(
        &args(None, vec![("n", F32(1.5))]),
        vec![("n", F64(1.5))]
    ));
    assert!(!matches(
        &args(None, vec![("n", F64(1.5))]),
        vec![("n", I32(1))]
    ));
    // Wider integers than the test covered, by the same rule.
    assert!(matches(
        &args(None, vec![("n", I64(-7))]),
        vec![("n", I8(-7))]
    ));
    assert!(matches(
        &args(None, vec![("n", FieldValue::U8(200))]),
        vec![("n", I16(200))]
    ));
    assert!(matches(
        &args(None, vec![("n", FieldValue::U32(70_000))]),
        vec![("n", I64(70_000))]
    ));
}

#[test]
fn long_strings_equal_byte_arrays() {
    assert!(matches(
        &args(None, vec![("k", s("abc"))]),
        vec![("k", x(b"abc"))]
    ));
    assert!(matches(
        &args(None, vec![("k", x(b"abc"))]),
        vec![("k", s("abc"))]
    ));
    assert!(matches(
        &args(None, vec![("k", x(b"abc"))]),
        vec![("k", x(b"abc"))]
    ));
    assert!(!matches(
        &args(None, vec![("k", s("abc"))]),
        vec![("k", x(b"abd"))]
    ));
    assert!(!matches(
        &args(None, vec![("k", s("abc"))]),
        vec![("k", s("ABC"))]
    ));
}

#[test]
fn strings_bools_and_numbers_differ() {
    // Bool true vs I1 -> no match; true vs true -> match; S"1" vs I1 -> no match.
    assert!(!matches(
        &args(None, vec![("k", Bool(true))]),
        vec![("k", I32(1))]
    ));
    assert!(!matches(
        &args(None, vec![("k", I32(1))]),
        vec![("k", Bool(true))]
    ));
    assert!(!matches(
        &args(None, vec![("k", Bool(false))]),
        vec![("k", I32(0))]
    ));
    assert!(matches(
        &args(None, vec![("k", Bool(true))]),
        vec![("k", Bool(true))]
    ));
    assert!(!matches(
        &args(None, vec![("k", Bool(true))]),
        vec![("k", Bool(false))]
    ));
    assert!(!matches(
        &args(None, vec![("k", s("1"))]),
        vec![("k", I32(1))]
    ));
    assert!(!matches(
        &args(None, vec![("k", I32(1))]),
        vec![("k", s("1"))]
    ));
    assert!(!matches(
        &args(None, vec![("k", s("true"))]),
        vec![("k", Bool(true))]
    ));
}

#[test]
fn decimals_compare_by_scale_and_value() {
    let d = |scale, value| FieldValue::Decimal(Decimal { scale, value });
    assert!(matches(
        &args(None, vec![("k", d(2, 150))]),
        vec![("k", d(2, 150))]
    ));
    assert!(!matches(
        &args(None, vec![("k", d(2, 150))]),
        vec![("k", d(1, 15))]
    ));
    assert!(!matches(
        &args(None, vec![("k", d(0, 1))]),
        vec![("k", I32(1))]
    ));
}

// ---- nested values --------------------------------------------------------------------------

#[test]
fn nested_values_compare_with_types_and_order() {
    // [I1] vs [L1] -> no match.
    assert!(!matches(
        &args(None, vec![("k", arr(vec![I32(1)]))]),
        vec![("k", arr(vec![I64(1)]))]
    ));
    // [I1] vs [d1.0] -> no match either (the type is part of the element).
    assert!(!matches(
        &args(None, vec![("k", arr(vec![I32(1)]))]),
        vec![("k", arr(vec![F64(1.0)]))]
    ));
    // [S"a"] vs [x"a"] -> no match.
    assert!(!matches(
        &args(None, vec![("k", arr(vec![s("a")]))]),
        vec![("k", arr(vec![x(b"a")]))]
    ));
    // Identical arrays match.
    let a = arr(vec![
        I32(1),
        s("two"),
        arr(vec![Bool(true)]),
        tab(vec![("z", Void)]),
    ]);
    assert!(matches(
        &args(None, vec![("k", a.clone())]),
        vec![("k", a.clone())]
    ));
    // Order matters inside an array.
    assert!(!matches(
        &args(None, vec![("k", arr(vec![I32(1), I32(2)]))]),
        vec![("k", arr(vec![I32(2), I32(1)]))]
    ));
    // Length matters.
    assert!(!matches(
        &args(None, vec![("k", arr(vec![I32(1)]))]),
        vec![("k", arr(vec![I32(1), I32(1)]))]
    ));
    // {x:1,y:2} vs {y:2,x:1} -> no match; identical tables match.
    let xy = tab(vec![("x", I32(1)), ("y", I32(2))]);
    let yx = tab(vec![("y", I32(2)), ("x", I32(1))]);
    assert!(!matches(
        &args(None, vec![("k", xy.clone())]),
        vec![("k", yx)]
    ));
    assert!(matches(
        &args(None, vec![("k", xy.clone())]),
        vec![("k", xy)]
    ));
    // Types inside tables count.
    assert!(!matches(
        &args(None, vec![("k", tab(vec![("x", I32(1))]))]),
        vec![("k", tab(vec![("x", I64(1))]))]
    ));
    // A scalar is not a one-element array.
    assert!(!matches(
        &args(None, vec![("k", I32(1))]),
        vec![("k", arr(vec![I32(1)]))]
    ));
    assert!(!matches(
        &args(None, vec![("k", arr(vec![I32(1)]))]),
        vec![("k", I32(1))]
    ));
}

// ---- x- keys --------------------------------------------------------------------------------

#[test]
fn x_arguments_are_ignored_by_all_and_any() {
    // x-foo=1 + a=1 matches headers a=1.
    let a = args(Some("all"), vec![("x-foo", I32(1)), ("a", I32(1))]);
    assert!(matches(&a, vec![("a", I32(1))]));
    assert!(matches(&a, vec![("a", I32(1)), ("x-foo", I32(2))]));
    // x-foo=1 alone matches everything under all.
    let a = args(Some("all"), vec![("x-foo", I32(1))]);
    assert!(headers_match(&a, None));
    assert!(matches(&a, vec![("x-foo", I32(99))]));
    // any x-foo=1 with headers x-foo=1 -> no match.
    let a = args(Some("any"), vec![("x-foo", I32(1))]);
    assert!(!matches(&a, vec![("x-foo", I32(1))]));
    let a = args(Some("any"), vec![("x-foo", I32(1)), ("b", I32(2))]);
    assert!(!matches(&a, vec![("x-foo", I32(1)), ("b", I32(3))]));
    assert!(matches(&a, vec![("x-foo", I32(0)), ("b", I32(2))]));
}

#[test]
fn with_x_forms_match_x_arguments_but_never_x_match() {
    // all-with-x: x-foo=1, a=1 does NOT match headers a=1, and DOES match a=1, x-foo=1.
    let a = args(Some("all-with-x"), vec![("x-foo", I32(1)), ("a", I32(1))]);
    assert!(!matches(&a, vec![("a", I32(1))]));
    assert!(matches(&a, vec![("a", I32(1)), ("x-foo", I32(1))]));
    assert!(matches(&a, vec![("x-foo", I32(1)), ("a", I32(1))]));
    assert!(!matches(&a, vec![("a", I32(1)), ("x-foo", I32(2))]));
    // The binding's own x-match is never required of the message.
    let a = args(Some("all-with-x"), vec![("a", I32(1))]);
    assert!(matches(&a, vec![("a", I32(1))]));
    // any-with-x: x-foo=1 matches headers x-foo=1.
    let a = args(Some("any-with-x"), vec![("x-foo", I32(1))]);
    assert!(matches(&a, vec![("x-foo", I32(1))]));
    assert!(!matches(&a, vec![("x-foo", I32(2))]));
    assert!(!matches(&a, vec![("x-bar", I32(1))]));
    // Void works for x- keys too.
    let a = args(Some("any-with-x"), vec![("x-foo", Void)]);
    assert!(matches(&a, vec![("x-foo", s("anything"))]));
}

#[test]
fn x_match_is_never_required() {
    // With x-match placed anywhere among the arguments, the message needs no such header.
    for kind in ["all", "all-with-x"] {
        let a = table(vec![
            ("a", I32(1)),
            ("x-match", FieldValue::from(kind)),
            ("z", I32(2)),
        ]);
        assert!(matches(&a, vec![("a", I32(1)), ("z", I32(2))]), "{kind}");
        assert!(!matches(&a, vec![("a", I32(1))]), "{kind}");
    }
    // A header called x-match with another value does not spoil a match.
    let a = args(Some("all"), vec![("a", I32(1))]);
    assert!(matches(&a, vec![("a", I32(1)), ("x-match", s("nonsense"))]));
}

#[test]
fn match_kinds_parse() {
    assert_eq!(MatchKind::parse(b"all"), Some(MatchKind::All));
    assert_eq!(MatchKind::parse(b"any"), Some(MatchKind::Any));
    assert_eq!(MatchKind::parse(b"all-with-x"), Some(MatchKind::AllWithX));
    assert_eq!(MatchKind::parse(b"any-with-x"), Some(MatchKind::AnyWithX));
    assert_eq!(MatchKind::parse(b"ALL"), None);
    assert_eq!(MatchKind::parse(b""), None);
    assert_eq!(MatchKind::of(&FieldTable::new()), MatchKind::All);
    assert_eq!(MatchKind::of(&args(Some("any"), vec![])), MatchKind::Any);
}

// ---- through a topology ---------------------------------------------------------------------

/// A topology with headers exchange `h` and queues `q0..q{n}`.
fn headers_topology(queues: usize) -> (Topology, Vec<QueueId>) {
    let mut t = Topology::new("/", 11);
    t.declare_exchange(ExchangeSpec::new("h", "headers"))
        .expect("declare h");
    let ids = (0..queues)
        .map(|i| t.declare_queue(&format!("q{i}").into()).id)
        .collect();
    (t, ids)
}

fn publish(t: &Topology, exchange: &str, key: &str, headers: Option<FieldTable>) -> Vec<QueueId> {
    let p = BasicProperties {
        headers,
        ..BasicProperties::default()
    };
    let mut out = Routed::new();
    t.route(exchange.as_bytes(), key.as_bytes(), &p, &mut out)
        .expect("route");
    out.queues().to_vec()
}

#[test]
fn a_headers_exchange_routes_by_headers() {
    let (mut t, ids) = headers_topology(4);
    let bind = |t: &mut Topology, q: &'static str, a: FieldTable| {
        t.bind(&BindingSpec::queue("h", q, "bindkey").with_arguments(a))
            .expect("bind")
    };
    assert!(bind(
        &mut t,
        "q0",
        args(Some("all"), vec![("a", I32(1)), ("b", I32(2))])
    ));
    assert!(bind(
        &mut t,
        "q1",
        args(Some("any"), vec![("a", I32(1)), ("b", I32(2))])
    ));
    assert!(bind(&mut t, "q2", args(Some("all"), vec![("a", Void)])));
    assert!(bind(&mut t, "q3", FieldTable::new()));

    // The routing key is ignored.
    assert_eq!(
        publish(
            &t,
            "h",
            "zzz",
            Some(table(vec![("a", F64(1.0)), ("b", I64(2))]))
        ),
        [ids[0], ids[1], ids[2], ids[3]]
    );
    assert_eq!(
        publish(&t, "h", "bindkey", Some(table(vec![("b", I8(2))]))),
        [ids[1], ids[3]]
    );
    assert_eq!(
        publish(&t, "h", "", Some(table(vec![("a", s("x"))]))),
        [ids[2], ids[3]]
    );
    assert_eq!(publish(&t, "h", "", None), [ids[3]]);

    // The same key with different arguments is a second binding; unbinding needs the exact
    // arguments (in any order).
    assert!(bind(&mut t, "q0", args(Some("any"), vec![("c", Void)])));
    assert_eq!(
        publish(&t, "h", "", Some(table(vec![("c", I32(0))]))),
        [ids[0], ids[3]]
    );
    let removal = t
        .unbind(
            &BindingSpec::queue("h", "q0", "bindkey")
                .with_arguments(args(Some("all"), vec![("b", I32(2)), ("a", I32(1))])),
        )
        .expect("unbind");
    assert_eq!(removal.bindings, 1);
    assert_eq!(
        publish(&t, "h", "", Some(table(vec![("a", I32(1)), ("b", I32(2))]))),
        [ids[1], ids[2], ids[3]]
    );
    // Arguments that differ in value (or type) remove nothing.
    let removal = t
        .unbind(
            &BindingSpec::queue("h", "q1", "bindkey")
                .with_arguments(args(Some("any"), vec![("a", I64(1)), ("b", I32(2))])),
        )
        .expect("unbind");
    assert_eq!(removal.bindings, 0);
    assert_eq!(t.binding_count(), 4);
}

/// `CC` adds no headers-exchange routes (research §14): only the headers decide.
#[test]
fn cc_adds_no_headers_routes() {
    let (mut t, ids) = headers_topology(2);
    t.bind(&BindingSpec::queue("h", "q0", "k").with_arguments(args(None, vec![("a", I32(1))])))
        .expect("bind");
    t.bind(&BindingSpec::queue("h", "q1", "k2").with_arguments(args(None, vec![("b", I32(1))])))
        .expect("bind");
    let headers = table(vec![("a", I32(1)), ("CC", arr(vec![s("k2"), s("k")]))]);
    assert_eq!(publish(&t, "h", "k2", Some(headers)), [ids[0]]);
}

// ---- x-match validation ---------------------------------------------------------------------

fn bind_error(value: FieldValue) -> RoutingError {
    let (mut t, _) = headers_topology(1);
    let mut a = FieldTable::new();
    a.insert("x-match", value);
    a.insert("a", I32(1));
    let e = t
        .bind(&BindingSpec::queue("h", "q0", "").with_arguments(a))
        .expect_err("invalid x-match");
    assert_eq!(t.binding_count(), 0, "nothing bound");
    e
}

#[test]
fn invalid_x_match_values_are_refused() {
    for (value, shown) in [
        (s("foo"), "<<\"foo\">>"),
        (s("ALL"), "<<\"ALL\">>"),
        (s(""), "<<>>"),
        (s("any "), "<<\"any \">>"),
    ] {
        let e = bind_error(value);
        let text = format!(
            "Invalid x-match field value {shown}; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(e.reply_code(), ReplyCode::PreconditionFailed);
        let ex = e.exception();
        assert_eq!(ex.text, text);
        assert_eq!(ex.scope, Scope::Channel);
        assert_eq!(ex.code, ReplyCode::PreconditionFailed);
        assert_eq!(ex.reply_text(), format!("PRECONDITION_FAILED - {text}"));
    }
}

#[test]
fn invalid_x_match_types_are_refused() {
    for (value, text) in [
        (
            I32(5),
            "Invalid x-match field type signedint (value 5); expected longstr",
        ),
        (
            x(b"any"),
            "Invalid x-match field type binary (value <<\"any\">>); expected longstr",
        ),
    ] {
        let e = bind_error(value);
        assert_eq!(e.reply_code(), ReplyCode::PreconditionFailed);
        assert_eq!(e.exception().text, text);
        assert_eq!(e.exception().scope, Scope::Channel);
        assert_eq!(
            e.exception().reply_text(),
            format!("PRECONDITION_FAILED - {text}")
        );
    }
}

#[test]
fn every_valid_x_match_is_accepted() {
    let (mut t, _) = headers_topology(1);
    for kind in ["all", "any", "all-with-x", "any-with-x"] {
        assert!(
            t.bind(&BindingSpec::queue("h", "q0", kind).with_arguments(args(Some(kind), vec![])))
                .expect(kind)
        );
    }
    assert_eq!(t.binding_count(), 4);
    // x-match is validated on exchange-to-exchange bindings from a headers exchange too.
    t.declare_exchange(ExchangeSpec::new("f", "fanout"))
        .expect("declare f");
    let e = t
        .bind(&BindingSpec::exchange("h", "f", "").with_arguments(args(Some("foo"), vec![])))
        .expect_err("invalid x-match");
    assert_eq!(
        e.exception().text,
        "Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x"
    );
    // Other exchange types do not look at x-match.
    t.declare_exchange(ExchangeSpec::new("d", "direct"))
        .expect("declare d");
    assert!(
        t.bind(&BindingSpec::queue("d", "q0", "k").with_arguments(args(Some("foo"), vec![])))
            .expect("direct ignores x-match")
    );
}
