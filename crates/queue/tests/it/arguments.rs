//! Queue arguments (validation of new queues, equivalence of redeclarations) and the
//! `expiration` property, with RabbitMQ 3.10's texts (docs/design/broker.md, queue.declare and
//! basic.publish).

use warren_amqp_codec::{FieldTable, FieldValue, ReplyCode, ShortStr};
use warren_queue::declare::{QueueDecl, check_equivalent, check_expiration, validate_arguments};

fn decl(args: &[(&str, FieldValue)]) -> QueueDecl {
    QueueDecl {
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: args
            .iter()
            .map(|(k, v)| (ShortStr::from(k.to_string()), v.clone()))
            .collect::<FieldTable>(),
    }
}

fn s(v: &str) -> FieldValue {
    FieldValue::from(v.to_string())
}

fn refused(d: &QueueDecl) -> String {
    let e = validate_arguments(d, "q", "/").unwrap_err();
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    e.reply_text()
}

#[test]
fn argument_validation_texts() {
    let p = "PRECONDITION_FAILED - invalid arg";
    assert_eq!(
        refused(&decl(&[("x-message-ttl", s("1000"))])),
        format!(
            "{p} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        )
    );
    assert_eq!(
        refused(&decl(&[("x-message-ttl", FieldValue::Bool(true))])),
        format!("{p} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got bool\"")
    );
    assert_eq!(
        refused(&decl(&[("x-max-length", FieldValue::I32(-1))])),
        format!("{p} 'x-max-length' for queue 'q' in vhost '/': {{value_negative,-1}}")
    );
    assert_eq!(
        refused(&decl(&[("x-expires", FieldValue::I32(0))])),
        format!("{p} 'x-expires' for queue 'q' in vhost '/': {{value_zero,0}}")
    );
    assert_eq!(
        refused(&decl(&[(
            "x-message-ttl",
            FieldValue::I64(315_360_000_001)
        )])),
        format!("{p} 'x-message-ttl' for queue 'q' in vhost '/': {{value_too_large,315360000001}}")
    );
    assert_eq!(
        refused(&decl(&[("x-max-priority", FieldValue::I32(256))])),
        format!("{p} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}")
    );
    assert_eq!(
        refused(&decl(&[("x-overflow", s("bogus"))])),
        format!("{p} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
    );
    assert_eq!(
        refused(&decl(&[("x-overflow", FieldValue::I32(1))])),
        format!("{p} 'x-overflow' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
    );
    assert_eq!(
        refused(&decl(&[("x-queue-type", s("bogus"))])),
        format!(
            "{p} 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\""
        )
    );
    assert_eq!(
        refused(&decl(&[("x-single-active-consumer", FieldValue::I32(1))])),
        format!(
            "{p} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}"
        )
    );
    assert_eq!(
        refused(&decl(&[("x-dead-letter-routing-key", s("k"))])),
        format!(
            "{p} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"
        )
    );
    assert_eq!(
        refused(&decl(&[("x-dead-letter-exchange", FieldValue::I32(1))])),
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
    );
    assert_eq!(
        refused(&decl(&[("x-queue-type", s("quorum"))])),
        "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'"
    );
}

#[test]
fn validators_run_in_rabbitmqs_order_and_accept_the_edges() {
    // x-expires is checked before x-max-length, whatever the table order.
    let d = decl(&[
        ("x-max-length", FieldValue::I32(-1)),
        ("x-expires", FieldValue::I32(0)),
    ]);
    assert!(refused(&d).contains("'x-expires'"));
    for ok in [
        decl(&[("x-message-ttl", FieldValue::I32(0))]),
        decl(&[("x-max-priority", FieldValue::U8(255))]),
        decl(&[("x-expires", FieldValue::I16(1))]),
        decl(&[("x-overflow", s("reject-publish-dlx"))]),
        decl(&[("x-queue-mode", s("lazy"))]),
        decl(&[("x-foo", s("anything"))]),
        decl(&[
            ("x-dead-letter-exchange", s("dlx")),
            ("x-dead-letter-routing-key", s("k")),
        ]),
    ] {
        assert!(validate_arguments(&ok, "q", "/").is_ok(), "{ok:?}");
    }
}

#[test]
fn equivalence_of_arguments() {
    let text = |cur: &QueueDecl, req: &QueueDecl| {
        check_equivalent(cur, req, "q", "/")
            .unwrap_err()
            .reply_text()
    };
    let p = "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/':";
    assert_eq!(
        text(
            &decl(&[("x-message-ttl", FieldValue::I32(1000))]),
            &decl(&[("x-message-ttl", FieldValue::I32(2000))])
        ),
        format!("{p} received '2000' but current is '1000'")
    );
    assert_eq!(
        text(
            &decl(&[]),
            &decl(&[("x-message-ttl", FieldValue::I32(100000))])
        ),
        format!("{p} received the value '100000' of type 'signedint' but current is none")
    );
    assert_eq!(
        text(
            &decl(&[("x-message-ttl", FieldValue::I32(1000))]),
            &decl(&[])
        ),
        format!("{p} received none but current is the value '1000' of type 'signedint'")
    );
    assert_eq!(
        text(
            &decl(&[("x-message-ttl", FieldValue::I32(1000))]),
            &decl(&[("x-message-ttl", s("1000"))])
        ),
        format!("{p} received '1000' but current is '1000'")
    );
    // Integers compare by value across widths; unknown arguments are not compared; an absent
    // x-queue-type is classic.
    let cur = decl(&[("x-message-ttl", FieldValue::I64(1000)), ("x-foo", s("a"))]);
    let req = decl(&[
        ("x-message-ttl", FieldValue::I16(1000)),
        ("x-queue-type", s("classic")),
    ]);
    assert!(check_equivalent(&cur, &req, "q", "/").is_ok());
}

#[test]
fn expiration_values() {
    let t = |e: &str| check_expiration(e.as_bytes()).unwrap_err().reply_text();
    assert_eq!(
        t("abc"),
        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
    );
    assert_eq!(
        t(""),
        "PRECONDITION_FAILED - invalid expiration '': no_integer"
    );
    assert_eq!(
        t(" 5"),
        "PRECONDITION_FAILED - invalid expiration ' 5': no_integer"
    );
    assert_eq!(
        t("-1"),
        "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"
    );
    assert_eq!(
        t("1.5"),
        "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}"
    );
    assert_eq!(
        t("1e3"),
        "PRECONDITION_FAILED - invalid expiration '1e3': {leftover_string,\"e3\"}"
    );
    assert_eq!(
        t("315360000001"),
        "PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}"
    );
    assert_eq!(check_expiration(b"0").unwrap(), 0);
    assert_eq!(check_expiration(b"+5").unwrap(), 5);
    assert_eq!(check_expiration(b"4294967296").unwrap(), 4_294_967_296);
    assert_eq!(check_expiration(b"315360000000").unwrap(), 315_360_000_000);
}
