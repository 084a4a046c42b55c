//! The per-method rules of the channel: RabbitMQ's 540s for what it does not implement, direct
//! reply-to, the publish property checks and consumer arguments (docs/design/broker.md).

use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue, ReplyCode, Scope, ShortStr};
use warren_queue::channel::{
    check_flow, check_immediate, check_properties, check_recover, check_reply_consumer,
};
use warren_queue::declare::check_consumer_arguments;

#[test]
fn what_rabbitmq_does_not_implement_closes_the_connection() {
    for (r, text) in [
        (check_flow(false), "NOT_IMPLEMENTED - active=false"),
        (check_immediate(true), "NOT_IMPLEMENTED - immediate=true"),
        (check_recover(false), "NOT_IMPLEMENTED - requeue=false"),
    ] {
        let e = r.unwrap_err();
        assert_eq!(
            (e.code, e.scope),
            (ReplyCode::NotImplemented, Scope::Connection)
        );
        assert_eq!(e.reply_text(), text);
    }
    assert!(
        check_flow(true).is_ok() && check_immediate(false).is_ok() && check_recover(true).is_ok()
    );
}

#[test]
fn reply_consumers() {
    assert_eq!(
        check_reply_consumer(false, false).unwrap_err().reply_text(),
        "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    );
    assert_eq!(
        check_reply_consumer(true, true).unwrap_err().reply_text(),
        "PRECONDITION_FAILED - reply consumer already set"
    );
    assert!(check_reply_consumer(true, false).is_ok());
}

#[test]
fn publish_properties_in_rabbitmqs_order() {
    let reply = |v: &'static str| BasicProperties {
        reply_to: Some(v.into()),
        user_id: Some("mallory".into()),
        ..Default::default()
    };
    // The reply-to check comes before user_id.
    let mut p = reply("amq.rabbitmq.reply-to");
    assert_eq!(
        check_properties(&mut p, None, "guest")
            .unwrap_err()
            .reply_text(),
        "PRECONDITION_FAILED - fast reply consumer does not exist"
    );
    let mut p = reply("amq.rabbitmq.reply-to");
    assert_eq!(
        check_properties(&mut p, Some(b"KEY"), "guest")
            .unwrap_err()
            .reply_text(),
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    );
    let mut p = BasicProperties {
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        user_id: Some("guest".into()),
        expiration: Some("60000".into()),
        ..Default::default()
    };
    check_properties(&mut p, Some(b"KEY"), "guest").unwrap();
    assert_eq!(
        p.reply_to,
        Some(ShortStr::from("amq.rabbitmq.reply-to.KEY"))
    );
    // Any other reply_to passes unchanged.
    let mut p = BasicProperties {
        reply_to: Some("amq.rabbitmq.reply-to.foo".into()),
        expiration: Some("soon".into()),
        ..Default::default()
    };
    assert_eq!(
        check_properties(&mut p, None, "guest")
            .unwrap_err()
            .reply_text(),
        "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"
    );
    assert_eq!(
        p.reply_to,
        Some(ShortStr::from("amq.rabbitmq.reply-to.foo"))
    );
}

#[test]
fn consumer_priority_must_be_an_integer() {
    let mut args = FieldTable::new();
    args.insert("x-priority", FieldValue::from("high".to_string()));
    assert_eq!(
        check_consumer_arguments(&args, "q", "/")
            .unwrap_err()
            .reply_text(),
        "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\""
    );
    let mut args = FieldTable::new();
    args.insert("x-priority", FieldValue::I16(5));
    args.insert("x-other", FieldValue::from("ignored".to_string()));
    assert!(check_consumer_arguments(&args, "q", "/").is_ok());
}

#[test]
fn the_empty_queue_and_key_bind_the_last_queue_by_its_name() {
    use warren_queue::declare::routing_key_shortcut;
    let last = ShortStr::from("amq.gen-x");
    let empty = ShortStr::default();
    assert_eq!(routing_key_shortcut(&empty, &empty, &last), last);
    let key = ShortStr::from("k");
    assert_eq!(routing_key_shortcut(&empty, &key, &last), key);
    assert_eq!(routing_key_shortcut(&last, &empty, &last), empty);
}
