//! Policies: the keys a definition may set and RabbitMQ 3.10.8's texts for bad ones (probed
//! with `rabbitmqctl set_policy` / `set_operator_policy`), which matching policy applies,
//! and how a policy, an operator policy and a queue's arguments combine
//! (`docs/design/queue-features.md` §9).

use warren_amqp_codec::{FieldTable, FieldValue, ShortStr};
use warren_queue::Overflow;
use warren_queue::declare::{QueueDecl, settings};
use warren_queue::policy::{ApplyTo, Definition, PolicyKind, QueueType, Target, choose};

fn table(items: &[(&'static str, FieldValue)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (k, v) in items {
        t.insert(*k, v.clone());
    }
    t
}

fn s(v: &str) -> FieldValue {
    FieldValue::from(v.to_string())
}

fn policy(items: &[(&'static str, FieldValue)]) -> Result<Definition, String> {
    Definition::parse(&table(items), PolicyKind::Policy)
}

fn operator(items: &[(&'static str, FieldValue)]) -> Result<Definition, String> {
    Definition::parse(&table(items), PolicyKind::Operator)
}

fn short(v: &'static str) -> ShortStr {
    ShortStr::from(v)
}

#[test]
fn every_key_is_read() {
    let d = policy(&[
        ("message-ttl", FieldValue::I64(200)),
        ("expires", FieldValue::I64(1000)),
        ("max-length", FieldValue::I64(5)),
        ("max-length-bytes", FieldValue::I64(4096)),
        ("overflow", s("reject-publish-dlx")),
        ("dead-letter-exchange", s("dlx")),
        ("dead-letter-routing-key", s("dead")),
        ("alternate-exchange", s("ae")),
        ("delivery-limit", FieldValue::I64(3)),
        // Known to RabbitMQ, kept, not acted on.
        ("ha-mode", s("all")),
        ("queue-mode", s("lazy")),
    ])
    .unwrap();
    assert_eq!(
        d,
        Definition {
            message_ttl: Some(200),
            expires: Some(1000),
            max_length: Some(5),
            max_length_bytes: Some(4096),
            overflow: Some(Overflow::RejectPublishDlx),
            dead_letter_exchange: Some(short("dlx")),
            dead_letter_routing_key: Some(short("dead")),
            alternate_exchange: Some(short("ae")),
            delivery_limit: Some(3),
        }
    );
    // Zero is a valid TTL, length and delivery limit.
    let z = policy(&[
        ("message-ttl", FieldValue::I64(0)),
        ("max-length", FieldValue::I64(0)),
        ("delivery-limit", FieldValue::I64(0)),
    ])
    .unwrap();
    assert_eq!(
        (z.message_ttl, z.max_length, z.delivery_limit),
        (Some(0), Some(0), Some(0))
    );
}

#[test]
fn bad_definitions_get_rabbitmqs_texts() {
    let cases: &[(&[(&'static str, FieldValue)], &str)] = &[
        (&[], "no policy provided"),
        (
            &[
                ("max-length", FieldValue::I64(1)),
                ("bogus", FieldValue::I64(1)),
                ("other", FieldValue::I64(2)),
            ],
            r#"[{<<"bogus">>,1},{<<"other">>,2}] are not recognised policy settings"#,
        ),
        (
            &[("max-priority", FieldValue::I64(5))],
            r#"[{<<"max-priority">>,5}] are not recognised policy settings"#,
        ),
        (
            &[("message-ttl", FieldValue::I64(-1))],
            "-1 is not a valid message TTL",
        ),
        (
            &[("message-ttl", FieldValue::F64(1.5))],
            "1.5 is not a valid message TTL",
        ),
        (
            &[("max-length", s("x"))],
            r#"<<"x">> is not a valid maximum length"#,
        ),
        (
            &[("max-length", FieldValue::I64(-1))],
            "-1 is not a valid maximum length",
        ),
        (
            &[("max-length-bytes", FieldValue::I64(-1))],
            "-1 is not a valid maximum length in bytes",
        ),
        (
            &[("overflow", s("bogus"))],
            r#"<<"bogus">> is not a valid overflow value"#,
        ),
        (
            &[("overflow", FieldValue::I64(5))],
            "5 is not a valid overflow value",
        ),
        (
            &[("expires", FieldValue::I64(0))],
            "0 is not a valid queue expiry",
        ),
        (
            &[("expires", s("1"))],
            r#"<<"1">> is not a valid queue expiry"#,
        ),
        (
            &[("delivery-limit", FieldValue::I64(-1))],
            "-1 is not a valid delivery limit",
        ),
        (
            &[("delivery-limit", s("a"))],
            r#"<<"a">> is not a valid delivery limit"#,
        ),
        (
            &[("alternate-exchange", FieldValue::I64(5))],
            "5 is not a valid alternate exchange name",
        ),
        (
            &[("dead-letter-exchange", FieldValue::I64(5))],
            "5 is not a valid dead letter exchange name",
        ),
        (
            &[("dead-letter-routing-key", FieldValue::I64(5))],
            "5 is not a valid dead letter routing key",
        ),
    ];
    for (items, text) in cases {
        assert_eq!(policy(items).unwrap_err(), *text, "{items:?}");
    }
}

#[test]
fn operator_policies_set_only_limits() {
    let d = operator(&[
        ("expires", FieldValue::I64(1000)),
        ("message-ttl", FieldValue::I64(60000)),
        ("max-length", FieldValue::I64(2)),
        ("max-length-bytes", FieldValue::I64(5)),
        ("delivery-limit", FieldValue::I64(5)),
    ])
    .unwrap();
    assert_eq!(d.max_length, Some(2));
    for (k, v) in [
        ("overflow", s("reject-publish")),
        ("dead-letter-exchange", s("x")),
        ("alternate-exchange", s("x")),
        ("ha-mode", s("all")),
    ] {
        let shown = match &v {
            FieldValue::LongStr(x) => format!("<<\"{}\">>", String::from_utf8_lossy(x.as_bytes())),
            _ => unreachable!(),
        };
        assert_eq!(
            operator(&[(k, v.clone())]).unwrap_err(),
            format!("[{{<<\"{k}\">>,{shown}}}] are not recognised policy settings")
        );
    }
}

#[test]
fn apply_to() {
    assert_eq!(
        ApplyTo::parse("bogus").unwrap_err(),
        "apply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'"
    );
    for (name, a) in ApplyTo::NAMES {
        assert_eq!(ApplyTo::parse(name), Ok(a));
        assert_eq!(a.as_str(), name);
    }
    let classic = Target::Queue(QueueType::Classic);
    let quorum = Target::Queue(QueueType::of(&table(&[("x-queue-type", s("quorum"))])));
    assert!(ApplyTo::All.applies(classic) && ApplyTo::All.applies(Target::Exchange));
    assert!(ApplyTo::Queues.applies(classic) && ApplyTo::Queues.applies(quorum));
    assert!(!ApplyTo::Queues.applies(Target::Exchange));
    assert!(!ApplyTo::Exchanges.applies(classic) && ApplyTo::Exchanges.applies(Target::Exchange));
    assert!(ApplyTo::ClassicQueues.applies(classic) && !ApplyTo::ClassicQueues.applies(quorum));
    assert!(ApplyTo::QuorumQueues.applies(quorum) && !ApplyTo::QuorumQueues.applies(classic));
    assert!(!ApplyTo::Streams.applies(classic));
}

#[test]
fn the_highest_priority_wins_then_the_first_name() {
    let ps = [
        ("qf-b", 0i64),
        ("qf-a", 0),
        ("low", -3),
        ("hi", 5),
        ("hi2", 5),
    ];
    fn key<'a>(p: &'a (&'static str, i64)) -> (i64, &'a str) {
        (p.1, p.0)
    }
    assert_eq!(choose(&ps, key), Some(&("hi", 5)));
    assert_eq!(choose(&ps[..3], key), Some(&("qf-a", 0)));
    assert_eq!(choose(&ps[2..3], key), Some(&("low", -3)));
    assert_eq!(choose(&ps[..0], key), None);
}

fn decl(items: &[(&'static str, FieldValue)]) -> QueueDecl {
    QueueDecl {
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: table(items),
    }
}

#[test]
fn limits_take_the_lowest_of_argument_policy_and_operator_policy() {
    // The probed case: arg max-length 10 + policy 5 / ttl 200 + operator 2 / ttl 60000 →
    // max-length 2, message-ttl 200.
    let p = policy(&[
        ("max-length", FieldValue::I64(5)),
        ("message-ttl", FieldValue::I64(200)),
    ])
    .unwrap();
    let op = operator(&[
        ("max-length", FieldValue::I64(2)),
        ("message-ttl", FieldValue::I64(60000)),
    ])
    .unwrap();
    let effective = p.with_operator(&op);
    let got = settings(
        &decl(&[("x-max-length", FieldValue::I64(10))]),
        Some(&effective),
    );
    assert_eq!(got.config.limits.max_length, Some(2));
    assert_eq!(got.config.limits.message_ttl, Some(200));
    // Each side alone, and the argument lower.
    let lim = |args: &[(&'static str, FieldValue)], pol: &[(&'static str, FieldValue)]| {
        let p = policy(pol).unwrap();
        settings(&decl(args), Some(&p))
    };
    let s1 = lim(
        &[
            ("x-max-length", FieldValue::I64(3)),
            ("x-message-ttl", FieldValue::I32(50)),
            ("x-expires", FieldValue::I64(60000)),
            ("x-delivery-limit", FieldValue::I64(5)),
            ("x-max-length-bytes", FieldValue::I64(100)),
        ],
        &[
            ("max-length", FieldValue::I64(5)),
            ("message-ttl", FieldValue::I64(200)),
            ("expires", FieldValue::I64(1000)),
            ("delivery-limit", FieldValue::I64(2)),
            ("max-length-bytes", FieldValue::I64(1000)),
        ],
    );
    assert_eq!(s1.config.limits.max_length, Some(3));
    assert_eq!(s1.config.limits.message_ttl, Some(50));
    assert_eq!(s1.expires, Some(1000));
    assert_eq!(s1.config.limits.delivery_limit, Some(2));
    assert_eq!(s1.config.limits.max_length_bytes, Some(100));
    let s2 = lim(&[], &[("expires", FieldValue::I64(1000))]);
    assert_eq!(s2.expires, Some(1000));
    assert_eq!(s2.config.limits.max_length, None);
    // No policy: the arguments alone.
    let s3 = settings(&decl(&[("x-expires", FieldValue::I64(7))]), None);
    assert_eq!(s3.expires, Some(7));
}

#[test]
fn overflow_and_dead_lettering_take_the_argument_key_by_key() {
    let p = policy(&[
        ("overflow", s("reject-publish")),
        ("dead-letter-exchange", s("qf.dlx")),
        ("dead-letter-routing-key", s("k1")),
    ])
    .unwrap();
    // Policy alone.
    let got = settings(&decl(&[]), Some(&p));
    assert_eq!(got.config.limits.overflow, Overflow::RejectPublish);
    assert_eq!(got.dead_letter, Some((short("qf.dlx"), Some(short("k1")))));
    // arg drop-head over policy reject-publish; arg DLX with the policy's DLRK.
    let got = settings(
        &decl(&[
            ("x-overflow", s("drop-head")),
            ("x-dead-letter-exchange", s("qf.dlx2")),
        ]),
        Some(&p),
    );
    assert_eq!(got.config.limits.overflow, Overflow::DropHead);
    assert_eq!(got.dead_letter, Some((short("qf.dlx2"), Some(short("k1")))));
    // Both of the argument's.
    let got = settings(
        &decl(&[
            ("x-dead-letter-exchange", s("qf.dlx2")),
            ("x-dead-letter-routing-key", s("dlrk")),
        ]),
        Some(&p),
    );
    assert_eq!(
        got.dead_letter,
        Some((short("qf.dlx2"), Some(short("dlrk"))))
    );
    // A routing key without any exchange does not dead-letter.
    let only_key = policy(&[("dead-letter-routing-key", s("k"))]).unwrap();
    assert_eq!(settings(&decl(&[]), Some(&only_key)).dead_letter, None);
}
