//! Policies and operator policies through the handle, with lapin clients: they act on queues
//! and exchanges that exist and on those declared later, combine with arguments as RabbitMQ
//! 3.10.8 does (`docs/design/queue-features.md` §9), survive a restart, and bad ones are
//! refused with RabbitMQ's texts. Also: TTL, length limits and dead-lettering of durable
//! queues across a restart.

use crate::common::*;
use crate::features::{args, deaths, declare_with, get_one, send};
use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use std::time::{Duration, Instant};
use warren_broker::{Error, PolicyInfo};

fn policy(name: &str, pattern: &str, definition: &str) -> PolicyInfo {
    PolicyInfo::new(name, pattern, definition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_acts_on_existing_queues_at_once_and_clearing_it_lifts_it() {
    let b = start().await;
    let h = b.handle();
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "pol.q").await;
    declare(&ch, "pol.dead").await;
    for i in 1..=5 {
        publish(&ch, "", "pol.q", &format!("m{i}")).await;
    }
    b.wait_queue("pol.q", |q| q.messages_ready == 5).await;
    h.set_policy(
        "/",
        policy(
            "lim",
            r"^pol\.q$",
            r#"{"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "pol.dead"}"#,
        )
        .apply_to("queues"),
    )
    .unwrap();
    // The three oldest are dead-lettered (maxlen) at once, as in RabbitMQ.
    let q = b.wait_queue("pol.q", |q| q.messages_ready == 2).await;
    assert_eq!(q.policy.as_deref(), Some("lim"));
    b.wait_queue("pol.dead", |q| q.messages_ready == 3).await;
    let d = get_one(&ch, "pol.dead").await.unwrap();
    assert_eq!(text(&d), "m1");
    assert_eq!(deaths(&d), [("pol.q".into(), "maxlen".into(), 1)]);
    // New publishes follow it.
    publish(&ch, "", "pol.q", "m6").await;
    b.wait_queue("pol.dead", |q| q.messages_ready == 3).await;
    assert_eq!(drain(&ch, "pol.q").await, ["m5", "m6"]);
    // Cleared: no limit, no dead-lettering.
    assert!(h.clear_policy("/", "lim").unwrap());
    assert!(!h.clear_policy("/", "lim").unwrap());
    for i in 7..=10 {
        publish(&ch, "", "pol.q", &format!("m{i}")).await;
    }
    let q = b.wait_queue("pol.q", |q| q.messages_ready == 4).await;
    assert_eq!(q.policy, None);
    // A queue declared later gets a policy set before it.
    h.set_policy(
        "/",
        policy("later", r"^pol\.later$", r#"{"max-length": 1}"#),
    )
    .unwrap();
    declare(&ch, "pol.later").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "pol.later", m).await;
    }
    b.wait_queue("pol.later", |q| q.messages_ready == 1).await;
    assert_eq!(drain(&ch, "pol.later").await, ["c"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_policies_and_operator_policies_combine_as_in_rabbitmq() {
    let b = start().await;
    let h = b.handle();
    let (_c, ch) = b.lapin_channel().await;
    // The probed case: arg max-length 10, policy 5 / TTL 200, operator policy 2 / TTL 60000:
    // 2 kept, expired within 0.4 s.
    h.set_policy(
        "/",
        policy("p", r"^mix\.", r#"{"max-length": 5, "message-ttl": 200}"#),
    )
    .unwrap();
    h.set_operator_policy(
        "/",
        policy(
            "op",
            r"^mix\.",
            r#"{"max-length": 2, "message-ttl": 60000}"#,
        )
        .apply_to("queues"),
    )
    .unwrap();
    declare_with(
        &ch,
        "mix.q",
        args(&[("x-max-length", AMQPValue::LongLongInt(10))]),
    )
    .await;
    let q = b.queue("mix.q").unwrap();
    assert_eq!(
        (q.policy.as_deref(), q.operator_policy.as_deref()),
        (Some("p"), Some("op"))
    );
    for i in 0..12 {
        publish(&ch, "", "mix.q", &format!("m{i}")).await;
    }
    b.wait_queue("mix.q", |q| q.messages_ready == 2).await;
    let started = Instant::now();
    b.wait_queue("mix.q", |q| q.messages_ready == 0).await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    // The argument wins when it is the lower.
    declare_with(
        &ch,
        "mix.low",
        args(&[("x-max-length", AMQPValue::LongLongInt(1))]),
    )
    .await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "mix.low", m).await;
    }
    b.wait_queue("mix.low", |q| q.messages_ready == 1).await;
    assert_eq!(drain(&ch, "mix.low").await, ["c"]);
    assert!(h.clear_operator_policy("/", "op").unwrap());
    assert_eq!(b.queue("mix.q").unwrap().operator_policy, None);
    assert_eq!(h.operator_policies("/").unwrap(), Vec::<PolicyInfo>::new());

    // Two matching policies: only the higher priority applies (no TTL from the other).
    h.set_policy(
        "/",
        policy("hi", r"^prio\.", r#"{"max-length": 2}"#).priority(5),
    )
    .unwrap();
    h.set_policy(
        "/",
        policy("lo", r"^prio\.", r#"{"message-ttl": 100}"#).priority(1),
    )
    .unwrap();
    declare(&ch, "prio.q").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "prio.q", m).await;
    }
    b.wait_queue("prio.q", |q| {
        q.messages_ready == 2 && q.policy.as_deref() == Some("hi")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(drain(&ch, "prio.q").await, ["b", "c"], "no TTL applied");
    // The argument's dead-letter exchange wins, with the policy's routing key.
    declare(&ch, "dl.via-policy-key").await;
    declare(&ch, "dl.other").await;
    h.set_policy(
        "/",
        policy(
            "dl",
            r"^dl\.src$",
            r#"{"dead-letter-exchange": "nosuch", "dead-letter-routing-key": "dl.via-policy-key", "message-ttl": 10}"#,
        ),
    )
    .unwrap();
    declare_with(
        &ch,
        "dl.src",
        args(&[("x-dead-letter-exchange", AMQPValue::LongString("".into()))]),
    )
    .await;
    publish(&ch, "", "dl.src", "x").await;
    b.wait_queue("dl.via-policy-key", |q| q.messages_ready == 1)
        .await;
    let names: Vec<String> = h
        .policies("/")
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["dl", "hi", "lo", "p"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_alternate_exchange_takes_unroutable_messages() {
    let b = start().await;
    let h = b.handle();
    let (_c, ch) = b.lapin_channel().await;
    let x = |name: &'static str, kind: lapin::ExchangeKind, arguments: FieldTable| {
        let ch = ch.clone();
        async move {
            within(ch.exchange_declare(name, kind, ExchangeDeclareOptions::default(), arguments))
                .await
                .unwrap();
        }
    };
    x(
        "ae.fallback",
        lapin::ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await;
    x("ae.own", lapin::ExchangeKind::Fanout, FieldTable::default()).await;
    x("ae.x", lapin::ExchangeKind::Direct, FieldTable::default()).await;
    x(
        "ae.with-arg",
        lapin::ExchangeKind::Direct,
        args(&[("alternate-exchange", AMQPValue::LongString("ae.own".into()))]),
    )
    .await;
    declare(&ch, "ae.caught").await;
    declare(&ch, "ae.own-caught").await;
    bind(&ch, "ae.caught", "ae.fallback", "").await;
    bind(&ch, "ae.own-caught", "ae.own", "").await;
    // A policy for queues only does not reach exchanges.
    h.set_policy(
        "/",
        policy(
            "ae",
            r"^ae\.(x|with-arg)$",
            r#"{"alternate-exchange": "ae.fallback"}"#,
        )
        .apply_to("queues"),
    )
    .unwrap();
    publish(&ch, "ae.x", "nowhere", "lost").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.queue("ae.caught").unwrap().messages_ready, 0);
    h.set_policy(
        "/",
        policy(
            "ae",
            r"^ae\.(x|with-arg)$",
            r#"{"alternate-exchange": "ae.fallback"}"#,
        )
        .apply_to("exchanges"),
    )
    .unwrap();
    publish(&ch, "ae.x", "nowhere", "caught").await;
    // The exchange's own argument wins.
    publish(&ch, "ae.with-arg", "nowhere", "own").await;
    b.wait_queue("ae.caught", |q| q.messages_ready == 1).await;
    b.wait_queue("ae.own-caught", |q| q.messages_ready == 1)
        .await;
    assert_eq!(drain(&ch, "ae.caught").await, ["caught"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_expires_unused_queues() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "exp.idle").await;
    b.handle()
        .set_policy("/", policy("exp", r"^exp\.", r#"{"expires": 200}"#))
        .unwrap();
    b.wait_queue_gone("exp.idle").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_with_rabbitmqs_texts() {
    let b = start().await;
    let h = b.handle();
    let refused = |p: PolicyInfo, operator: bool| {
        let r = if operator {
            h.set_operator_policy("/", p)
        } else {
            h.set_policy("/", p)
        };
        match r {
            Err(Error::Policy(text)) => text,
            other => panic!("accepted: {other:?}"),
        }
    };
    assert_eq!(
        refused(policy("p", ".*", r#"{"message-ttl": -1}"#), false),
        "-1 is not a valid message TTL"
    );
    assert_eq!(
        refused(policy("p", ".*", r#"{"overflow": "bogus"}"#), false),
        r#"<<"bogus">> is not a valid overflow value"#
    );
    assert_eq!(
        refused(policy("p", ".*", "{}"), false),
        "no policy provided"
    );
    assert_eq!(
        refused(
            policy("p", ".*", r#"{"max-length": 1}"#).apply_to("bogus"),
            false
        ),
        "apply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'"
    );
    assert!(
        refused(policy("p", "(", r#"{"max-length": 1}"#), false)
            .starts_with("pattern should be regular expression but is invalid")
    );
    assert_eq!(
        refused(policy("p", ".*", r#"{"dead-letter-exchange": "x"}"#), true),
        r#"[{<<"dead-letter-exchange">>,<<"x">>}] are not recognised policy settings"#
    );
    assert!(h.policies("/").unwrap().is_empty());
    assert!(matches!(
        h.set_policy("nosuch", policy("p", ".*", r#"{"max-length": 1}"#)),
        Err(Error::NotFound { kind: "vhost", .. })
    ));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_act_on_recovered_queues() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "keep.q").await;
    for m in ["a", "b", "c"] {
        send(
            &ch,
            "keep.q",
            m,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
    }
    b.wait_queue("keep.q", |q| q.messages_ready == 3).await;
    let h = b.handle();
    h.set_policy(
        "/",
        policy("keep", r"^keep\.", r#"{"max-length": 2}"#)
            .apply_to("queues")
            .priority(3),
    )
    .unwrap();
    h.set_operator_policy("/", policy("cap", ".*", r#"{"max-length-bytes": 1000}"#))
        .unwrap();
    h.set_policy("/", policy("gone", ".*", r#"{"max-length": 100}"#))
        .unwrap();
    assert!(h.clear_policy("/", "gone").unwrap());
    b.wait_queue("keep.q", |q| q.messages_ready == 2).await;
    let policies = h.policies("/").unwrap();
    let operator = h.operator_policies("/").unwrap();
    drop(ch);
    let b = dir.restart(b).await;
    let h = b.handle();
    assert_eq!(h.policies("/").unwrap(), policies);
    assert_eq!(h.operator_policies("/").unwrap(), operator);
    let q = b.queue("keep.q").unwrap();
    assert_eq!(
        (
            q.messages_ready,
            q.policy.as_deref(),
            q.operator_policy.as_deref()
        ),
        (2, Some("keep"), Some("cap"))
    );
    let (_c, ch) = b.lapin_channel().await;
    send(
        &ch,
        "keep.q",
        "d",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    b.wait_queue("keep.q", |q| q.messages_ready == 2).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(drain(&ch, "keep.q").await, ["c", "d"]);
    // The operator policy's byte limit acts too: a body over it does not stay.
    send(&ch, "keep.q", &"x".repeat(1500), BasicProperties::default()).await;
    send(&ch, "keep.q", "small", BasicProperties::default()).await;
    b.wait_queue("keep.q", |q| q.messages_ready == 1).await;
    assert_eq!(drain(&ch, "keep.q").await, ["small"]);
    b.stop().await;
}

/// Publishes with confirms; returns whether each was acked.
async fn confirmed(ch: &lapin::Channel, queue: &str, bodies: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for m in bodies {
        let c = within(ch.basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            m.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .unwrap();
        out.push(matches!(within(c).await.unwrap(), Confirmation::Ack(None)));
    }
    out
}

/// TTL, length limits and dead-lettering of durable queues across a restart: a message's TTL
/// counts from its first publication, not from the restart; limits still hold; dead letters
/// are where they went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_limits_and_dead_lettering_of_durable_queues_across_a_restart() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlx = |extra: &[(&str, AMQPValue)]| {
        let mut pairs = vec![
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("d.dead".into()),
            ),
        ];
        pairs.extend(extra.iter().cloned());
        args(&pairs)
    };
    declare_durable(&ch, "d.dead").await;
    for (name, arguments) in [
        ("d.ttl", dlx(&[("x-message-ttl", AMQPValue::LongInt(2500))])),
        ("d.drop", dlx(&[("x-max-length", AMQPValue::LongInt(2))])),
        (
            "d.full",
            args(&[
                ("x-max-length", AMQPValue::LongInt(2)),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ]),
        ),
    ] {
        within(ch.queue_declare(name, durable, arguments))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    assert_eq!(confirmed(&ch, "d.ttl", &["t"]).await, [true]);
    assert_eq!(
        confirmed(&ch, "d.drop", &["a", "b", "c"]).await,
        [true, true, true]
    );
    assert_eq!(
        confirmed(&ch, "d.full", &["a", "b", "c"]).await,
        [true, true, false]
    );
    b.wait_queue("d.dead", |q| q.messages_ready == 1).await;
    // Restart after 1.5 s: the message has 1 s left, not 2.5 s again (which would make it
    // expire 4 s or more after its publication).
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed())).await;
    drop(ch);
    let b = dir.restart(b).await;
    assert_eq!(b.queue("d.ttl").unwrap().messages_ready, 1);
    b.wait_queue("d.dead", |q| q.messages_ready == 2).await;
    let expired_after = t0.elapsed();
    assert!(
        expired_after >= Duration::from_millis(2400) && expired_after < Duration::from_millis(3600),
        "expired {expired_after:?} after its publication (TTL 2.5 s)"
    );
    let (_c, ch) = b.lapin_channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    // The limits hold as before.
    assert_eq!(confirmed(&ch, "d.full", &["d"]).await, [false]);
    assert_eq!(confirmed(&ch, "d.drop", &["d"]).await, [true]);
    b.wait_queue("d.dead", |q| q.messages_ready == 3).await;
    assert_eq!(drain(&ch, "d.full").await, ["a", "b"]);
    assert_eq!(drain(&ch, "d.drop").await, ["c", "d"]);
    let mut dead = Vec::new();
    while let Some(d) = get_one(&ch, "d.dead").await {
        dead.push((text(&d), deaths(&d)));
    }
    assert_eq!(
        dead,
        [
            ("a".to_string(), vec![("d.drop".into(), "maxlen".into(), 1)]),
            ("t".to_string(), vec![("d.ttl".into(), "expired".into(), 1)]),
            ("b".to_string(), vec![("d.drop".into(), "maxlen".into(), 1)]),
        ]
    );
    b.stop().await;
}

/// A policy giving a length limit or a TTL to a queue whose backlog is paged out (a durable
/// queue past 2,048 persistent messages): the backlog is read back under the old rules, so
/// nothing already queued is refused or expired; only a lower `drop-head` limit drops heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_a_paged_out_backlog_keeps_what_was_queued() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let h = b.handle();
    let (_c, ch) = b.lapin_channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    const N: usize = 3000;
    for q in ["paged.full", "paged.ttl", "paged.drop"] {
        declare_durable(&ch, q).await;
        let mut pending = Vec::new();
        for i in 0..N {
            pending.push(
                within(ch.basic_publish(
                    "",
                    q,
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                ))
                .await
                .unwrap(),
            );
        }
        for c in pending {
            assert!(matches!(within(c).await.unwrap(), Confirmation::Ack(None)));
        }
        b.wait_queue(q, |s| s.messages_ready == N as u64).await;
    }
    h.set_policy(
        "/",
        policy(
            "full",
            r"^paged\.full$",
            r#"{"max-length": 2500, "overflow": "reject-publish"}"#,
        ),
    )
    .unwrap();
    h.set_policy(
        "/",
        policy("ttl", r"^paged\.ttl$", r#"{"message-ttl": 50}"#),
    )
    .unwrap();
    h.set_policy(
        "/",
        policy("drop", r"^paged\.drop$", r#"{"max-length": 1000}"#),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.queue("paged.full").unwrap().messages_ready, N as u64);
    assert_eq!(b.queue("paged.ttl").unwrap().messages_ready, N as u64);
    assert_eq!(b.queue("paged.drop").unwrap().messages_ready, 1000);
    assert_eq!(confirmed(&ch, "paged.full", &["over"]).await, [false]);
    let full = drain(&ch, "paged.full").await;
    assert_eq!(full, (0..N).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let dropped = drain(&ch, "paged.drop").await;
    assert_eq!(
        dropped,
        (2000..N).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    // New messages get the TTL.
    publish(&ch, "", "paged.ttl", "new").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.queue("paged.ttl").unwrap().messages_ready, N as u64);
    b.stop().await;
}

/// As in RabbitMQ: an `expires` policy counts from when it applies, not from when the queue
/// was last used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expires_policy_counts_from_when_it_applies() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    declare(&ch, "idle.q").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    b.handle()
        .set_policy("/", policy("exp", r"^idle\.", r#"{"expires": 400}"#))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        b.queue("idle.q").is_some(),
        "idle 750 ms, but only 150 ms under the policy"
    );
    b.wait_queue_gone("idle.q").await;
    b.stop().await;
}

/// Confirmed messages of a `reject-publish` queue are all recovered, even when more are ready
/// after the restart than its limit (those that were unacknowledged come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reject_publish_queue_recovers_every_message() {
    let dir = DataDir::new();
    let b = dir.start().await;
    let (_c, ch) = b.lapin_channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    within(ch.queue_declare(
        "rp.q",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    ))
    .await
    .unwrap();
    assert_eq!(confirmed(&ch, "rp.q", &["a", "b"]).await, [true, true]);
    let held = within(ch.basic_get("rp.q", lapin::options::BasicGetOptions { no_ack: false }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&held.delivery), "a");
    assert_eq!(confirmed(&ch, "rp.q", &["c", "d"]).await, [true, false]);
    drop(ch);
    let b = dir.restart(b).await;
    assert_eq!(b.queue("rp.q").unwrap().messages_ready, 3);
    let (_c, ch) = b.lapin_channel().await;
    let mut got = drain(&ch, "rp.q").await;
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    b.stop().await;
}

/// A policy's alternate exchange on a built-in exchange (never stored) acts again after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_alternate_exchange_on_a_built_in_exchange_survives_a_restart() {
    let dir = DataDir::new();
    let b = dir.start().await;
    b.handle()
        .set_policy(
            "/",
            policy(
                "ae",
                r"^amq\.direct$",
                r#"{"alternate-exchange": "amq.fanout"}"#,
            )
            .apply_to("exchanges"),
        )
        .unwrap();
    let (_c, ch) = b.lapin_channel().await;
    declare_durable(&ch, "caught").await;
    bind(&ch, "caught", "amq.fanout", "").await;
    drop(ch);
    let b = dir.restart(b).await;
    let (_c, ch) = b.lapin_channel().await;
    publish(&ch, "amq.direct", "nowhere", "m").await;
    b.wait_queue("caught", |q| q.messages_ready == 1).await;
    b.stop().await;
}
