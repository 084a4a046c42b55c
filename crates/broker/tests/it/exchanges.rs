//! Exchanges: declaration of each type, passive, equivalence, deletion, exchange-to-exchange
//! bindings, alternate exchanges.

use crate::common::{
    amqp_error, bind, channel_errors, connection_errors, declare, drain, get, next_error, publish,
    start, within,
};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    within(ch.exchange_declare(
        name,
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare succeeds");
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_type_is_declared_and_listed() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    exchange(&ch, "x.direct", ExchangeKind::Direct).await;
    exchange(&ch, "x.fanout", ExchangeKind::Fanout).await;
    exchange(&ch, "x.topic", ExchangeKind::Topic).await;
    exchange(&ch, "x.headers", ExchangeKind::Headers).await;
    within(ch.exchange_declare(
        "x.durable",
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            auto_delete: false,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let listed = b.handle().exchanges("/").unwrap();
    let kind = |name: &str| {
        listed
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.kind.clone())
            .unwrap_or_else(|| panic!("exchange '{name}' not listed"))
    };
    assert_eq!(kind("x.direct"), "direct");
    assert_eq!(kind("x.fanout"), "fanout");
    assert_eq!(kind("x.topic"), "topic");
    assert_eq!(kind("x.headers"), "headers");
    // The predeclared exchanges of every vhost.
    assert_eq!(kind(""), "direct");
    assert_eq!(kind("amq.direct"), "direct");
    assert_eq!(kind("amq.fanout"), "fanout");
    assert_eq!(kind("amq.topic"), "topic");
    assert_eq!(kind("amq.headers"), "headers");
    assert_eq!(kind("amq.match"), "headers");
    let d = listed.iter().find(|x| x.name == "x.durable").unwrap();
    assert!(d.durable);
    assert!(!d.auto_delete);
    assert!(
        !listed
            .iter()
            .find(|x| x.name == "x.direct")
            .unwrap()
            .durable
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_fanout_and_topic_route_as_rabbitmq() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    for q in ["d1", "d2", "f1", "f2", "t1", "t2", "t3"] {
        declare(&ch, q).await;
    }
    exchange(&ch, "dx", ExchangeKind::Direct).await;
    bind(&ch, "d1", "dx", "red").await;
    bind(&ch, "d2", "dx", "green").await;
    bind(&ch, "d2", "dx", "red").await;
    exchange(&ch, "fx", ExchangeKind::Fanout).await;
    bind(&ch, "f1", "fx", "").await;
    bind(&ch, "f2", "fx", "ignored").await;
    exchange(&ch, "tx", ExchangeKind::Topic).await;
    bind(&ch, "t1", "tx", "stock.*.nyse").await;
    bind(&ch, "t2", "tx", "stock.#").await;
    bind(&ch, "t3", "tx", "#.eur").await;

    publish(&ch, "dx", "red", "r").await;
    publish(&ch, "dx", "green", "g").await;
    publish(&ch, "dx", "blue", "b").await;
    publish(&ch, "fx", "anything", "f").await;
    publish(&ch, "tx", "stock.ibm.nyse", "t-ibm").await;
    publish(&ch, "tx", "stock.eur", "t-eur").await;
    publish(&ch, "tx", "stock", "t-stock").await;
    publish(&ch, "tx", "bond.x.eur", "t-bond").await;
    publish(&ch, "tx", "stock.ibm.nyse.extra", "t-extra").await;

    assert_eq!(drain(&ch, "d1").await, ["r"]);
    assert_eq!(drain(&ch, "d2").await, ["r", "g"]);
    assert_eq!(drain(&ch, "f1").await, ["f"]);
    assert_eq!(drain(&ch, "f2").await, ["f"]);
    assert_eq!(drain(&ch, "t1").await, ["t-ibm"]);
    assert_eq!(
        drain(&ch, "t2").await,
        ["t-ibm", "t-eur", "t-stock", "t-extra"]
    );
    assert_eq!(drain(&ch, "t3").await, ["t-eur", "t-bond"]);
    // The default exchange routes by queue name; amq.direct exists and routes by binding.
    publish(&ch, "", "d1", "by-name").await;
    bind(&ch, "d1", "amq.direct", "k").await;
    publish(&ch, "amq.direct", "k", "via-amq").await;
    assert_eq!(drain(&ch, "d1").await, ["by-name", "via-amq"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_matches_all_and_any() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    exchange(&ch, "hx", ExchangeKind::Headers).await;
    declare(&ch, "all").await;
    declare(&ch, "any").await;
    within(ch.queue_bind(
        "all",
        "hx",
        "",
        QueueBindOptions::default(),
        table(&[("x-match", "all"), ("format", "pdf"), ("type", "report")]),
    ))
    .await
    .unwrap();
    within(ch.queue_bind(
        "any",
        "hx",
        "",
        QueueBindOptions::default(),
        table(&[("x-match", "any"), ("format", "pdf"), ("type", "report")]),
    ))
    .await
    .unwrap();
    let send = |body: &'static str, headers: FieldTable| {
        let ch = ch.clone();
        async move {
            within(ch.basic_publish(
                "hx",
                "",
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_headers(headers),
            ))
            .await
            .unwrap();
        }
    };
    send("both", table(&[("format", "pdf"), ("type", "report")])).await;
    send("one", table(&[("format", "pdf"), ("type", "log")])).await;
    send("none", table(&[("format", "zip")])).await;
    send(
        "extra",
        table(&[("format", "pdf"), ("type", "report"), ("x", "y")]),
    )
    .await;
    assert_eq!(drain(&ch, "all").await, ["both", "extra"]);
    assert_eq!(drain(&ch, "any").await, ["both", "one", "extra"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_finds_or_fails_with_not_found() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    exchange(&ch, "here", ExchangeKind::Fanout).await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // Passive ignores the type sent.
    within(ch.exchange_declare("here", ExchangeKind::Direct, passive, FieldTable::default()))
        .await
        .expect("passive declare of an existing exchange");
    let err =
        within(ch.exchange_declare("nope", ExchangeKind::Direct, passive, FieldTable::default()))
            .await
            .expect_err("no such exchange");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into())
    );
    // Only the channel closed.
    assert!(conn.status().connected());
    let ch2 = within(conn.create_channel()).await.unwrap();
    exchange(&ch2, "other", ExchangeKind::Topic).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_properties_is_precondition_failed() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    exchange(&ch, "x", ExchangeKind::Direct).await;
    // The same declaration again is fine.
    exchange(&ch, "x", ExchangeKind::Direct).await;
    let err = within(ch.exchange_declare(
        "x",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("type differs");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
                .into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_declare(
        "x",
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .expect_err("durable differs");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'"
                .into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_and_unknown_types_are_refused() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_declare(
        "amq.custom",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("amq. prefix is reserved");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - exchange name 'amq.custom' contains reserved prefix 'amq.*'".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_delete("amq.direct", ExchangeDeleteOptions::default()))
        .await
        .expect_err("system exchanges cannot be deleted");
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
                .into()
        )
    );
    // An unknown type is a connection error.
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.exchange_declare(
        "weird",
        ExchangeKind::Custom("x-no-such-type".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("unknown type");
    assert_eq!(
        amqp_error(&err),
        (
            503,
            "COMMAND_INVALID - unknown exchange type 'x-no-such-type'".into()
        )
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_refuses_an_exchange_with_bindings() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    exchange(&ch, "src", ExchangeKind::Direct).await;
    declare(&ch, "q").await;
    bind(&ch, "q", "src", "k").await;
    let err = within(ch.exchange_delete(
        "src",
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect_err("exchange has a binding");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - exchange 'src' in vhost '/' in use".into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.queue_unbind("q", "src", "k", FieldTable::default()))
        .await
        .unwrap();
    within(ch.exchange_delete(
        "src",
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    ))
    .await
    .expect("unused now");
    assert!(
        !b.handle()
            .exchanges("/")
            .unwrap()
            .iter()
            .any(|x| x.name == "src")
    );
    // Deleting what does not exist is fine (idempotent, as in RabbitMQ 3.x+).
    within(ch.exchange_delete("src", ExchangeDeleteOptions::default()))
        .await
        .expect("delete of a missing exchange");
    // Deleting an exchange without if-unused removes its bindings too.
    exchange(&ch, "src2", ExchangeKind::Fanout).await;
    bind(&ch, "q", "src2", "").await;
    within(ch.exchange_delete("src2", ExchangeDeleteOptions::default()))
        .await
        .unwrap();
    assert!(
        !b.handle()
            .bindings("/")
            .unwrap()
            .iter()
            .any(|x| x.source == "src2")
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding_routes_through() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    exchange(&ch, "front", ExchangeKind::Topic).await;
    exchange(&ch, "back", ExchangeKind::Direct).await;
    declare(&ch, "sink").await;
    bind(&ch, "sink", "back", "orders.eu").await;
    within(ch.exchange_bind(
        "back",
        "front",
        "orders.*",
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let listed = b.handle().bindings("/").unwrap();
    assert!(listed.iter().any(|x| x.source == "front"
        && x.destination == "back"
        && x.destination_kind == "exchange"
        && x.routing_key == "orders.*"));
    publish(&ch, "front", "orders.eu", "eu").await;
    publish(&ch, "front", "orders.us", "us").await;
    publish(&ch, "front", "payments.eu", "pay").await;
    assert_eq!(drain(&ch, "sink").await, ["eu"]);
    within(ch.exchange_unbind(
        "back",
        "front",
        "orders.*",
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    publish(&ch, "front", "orders.eu", "after").await;
    assert_eq!(get(&ch, "sink").await, None);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_takes_unroutable_messages() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    exchange(&ch, "ae", ExchangeKind::Fanout).await;
    declare(&ch, "unrouted").await;
    bind(&ch, "unrouted", "ae", "").await;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    within(ch.exchange_declare(
        "main",
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        args,
    ))
    .await
    .unwrap();
    declare(&ch, "routed").await;
    bind(&ch, "routed", "main", "known").await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let routed = within(ch.basic_publish(
        "main",
        "known",
        BasicPublishOptions::default(),
        b"a",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    // Mandatory, but the alternate exchange routes it: no basic.return.
    let diverted = within(ch.basic_publish(
        "main",
        "unknown",
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        b"b",
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let c1 = within(routed).await.unwrap();
    let c2 = within(diverted).await.unwrap();
    assert!(c1.is_ack());
    assert!(c2.is_ack());
    assert!(c2.take_message().is_none(), "must not be returned");
    assert_eq!(drain(&ch, "routed").await, ["a"]);
    assert_eq!(drain(&ch, "unrouted").await, ["b"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_missing_or_internal_exchange_closes_the_channel() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut errors = channel_errors(&ch);
    publish(&ch, "nope", "k", "m").await;
    assert_eq!(
        next_error(&mut errors).await,
        (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into())
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.exchange_declare(
        "inside",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    let mut errors = channel_errors(&ch);
    publish(&ch, "inside", "", "m").await;
    assert_eq!(
        next_error(&mut errors).await,
        (
            403,
            "ACCESS_REFUSED - cannot publish to internal exchange 'inside' in vhost '/'".into()
        )
    );
    let mut conn_errors = connection_errors(&conn);
    assert!(conn.status().connected());
    assert!(conn_errors.try_recv().is_err());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_to_missing_things_are_not_found() {
    let b = start().await;
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    declare(&ch, "q").await;
    let err = within(ch.queue_bind(
        "q",
        "nope",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("no source exchange");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into())
    );
    let ch = within(conn.create_channel()).await.unwrap();
    let err = within(ch.queue_bind(
        "missing",
        "amq.direct",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect_err("no queue");
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no queue 'missing' in vhost '/'".into())
    );
    // Unbinding what was never bound succeeds.
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.queue_unbind("q", "amq.direct", "never", FieldTable::default()))
        .await
        .expect("unbind of a missing binding");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let b = start().await;
    let (_c, ch) = b.lapin_channel().await;
    let ad = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(ch.exchange_declare("tmp-x", ExchangeKind::Fanout, ad, FieldTable::default()))
        .await
        .unwrap();
    within(ch.exchange_declare("idle-x", ExchangeKind::Fanout, ad, FieldTable::default()))
        .await
        .unwrap();
    declare(&ch, "q1").await;
    declare(&ch, "q2").await;
    bind(&ch, "q1", "tmp-x", "").await;
    bind(&ch, "q2", "tmp-x", "").await;
    let listed = |name: &str| {
        b.handle()
            .exchanges("/")
            .unwrap()
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.auto_delete)
    };
    assert_eq!(listed("tmp-x"), Some(true));
    within(ch.queue_unbind("q1", "tmp-x", "", FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(listed("tmp-x"), Some(true), "one binding left");
    within(ch.queue_unbind("q2", "tmp-x", "", FieldTable::default()))
        .await
        .unwrap();
    assert_eq!(listed("tmp-x"), None, "deleted with its last binding");
    // One that never had a binding stays.
    assert_eq!(listed("idle-x"), Some(true));
    b.stop().await;
}
