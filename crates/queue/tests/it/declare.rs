//! Queue declaration rules and RabbitMQ's refusal texts (`rabbit_channel`, `rabbit_amqqueue`).

use warren_amqp_codec::{AmqpException, FieldTable, ReplyCode, Scope};
use warren_queue::declare::{
    QueueDecl, check_equivalent, check_name, exclusive_use, in_use, locked, no_previous_queue,
    not_empty, not_found, reused_tag,
};

fn decl(durable: bool, exclusive: bool, auto_delete: bool) -> QueueDecl {
    QueueDecl {
        durable,
        exclusive,
        auto_delete,
        arguments: FieldTable::default(),
    }
}

fn assert_exception(e: &AmqpException, code: ReplyCode, scope: Scope, text: &str) {
    assert_eq!(e.code, code);
    assert_eq!(e.scope, scope);
    assert_eq!(e.text, text);
}

const LOCKED_TEXT: &str = "cannot obtain exclusive access to locked queue 'q' in vhost '/'. \
    It could be originally declared on another connection or the exclusive property value does \
    not match that of the original declaration.";

#[test]
fn reserved_names_are_refused() {
    assert!(check_name("q").is_ok());
    assert!(check_name("").is_ok());
    assert!(check_name("amq").is_ok());
    assert!(check_name("AMQ.x").is_ok(), "the prefix is case-sensitive");
    assert!(check_name("x.amq.y").is_ok());
    for name in ["amq.", "amq.x", "amq.gen-abc"] {
        let e = check_name(name).unwrap_err();
        assert_exception(
            &e,
            ReplyCode::AccessRefused,
            Scope::Channel,
            &format!("queue name '{name}' contains reserved prefix 'amq.*'"),
        );
    }
    // Bytes as well as strings.
    assert!(check_name(b"amq.x".as_slice()).is_err());
}

#[test]
fn an_identical_redeclaration_is_equivalent() {
    for d in [true, false] {
        for x in [true, false] {
            for a in [true, false] {
                assert!(check_equivalent(&decl(d, x, a), &decl(d, x, a), "q", "/").is_ok());
            }
        }
    }
}

#[test]
fn durable_and_auto_delete_differences_are_inequivalent_args() {
    let e = check_equivalent(
        &decl(true, false, false),
        &decl(false, false, false),
        "q",
        "/",
    )
    .unwrap_err();
    assert_exception(
        &e,
        ReplyCode::PreconditionFailed,
        Scope::Channel,
        "inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is 'true'",
    );
    let e = check_equivalent(
        &decl(false, false, false),
        &decl(false, false, true),
        "q",
        "/",
    )
    .unwrap_err();
    assert_exception(
        &e,
        ReplyCode::PreconditionFailed,
        Scope::Channel,
        "inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    );
    // durable is compared before auto_delete.
    let e = check_equivalent(
        &decl(false, false, false),
        &decl(true, false, true),
        "q",
        "/",
    )
    .unwrap_err();
    assert!(e.text.starts_with("inequivalent arg 'durable'"));
}

#[test]
fn an_exclusive_difference_is_resource_locked_and_checked_first() {
    // RabbitMQ's assert_equivalence runs check_exclusive_access(Q, Owner, strict) before the
    // field comparisons: either direction is 405 with the locked text.
    for (current, requested) in [
        (decl(false, false, false), decl(false, true, false)),
        (decl(false, true, false), decl(false, false, false)),
        (decl(true, false, false), decl(false, true, true)),
    ] {
        let e = check_equivalent(&current, &requested, "q", "/").unwrap_err();
        assert_exception(&e, ReplyCode::ResourceLocked, Scope::Channel, LOCKED_TEXT);
    }
}

#[test]
fn refusal_texts_are_rabbitmqs() {
    assert_exception(
        &not_found("q", "/"),
        ReplyCode::NotFound,
        Scope::Channel,
        "no queue 'q' in vhost '/'",
    );
    assert_exception(
        &no_previous_queue(),
        ReplyCode::NotFound,
        Scope::Channel,
        "no previously declared queue",
    );
    assert_exception(
        &locked("q", "/"),
        ReplyCode::ResourceLocked,
        Scope::Channel,
        LOCKED_TEXT,
    );
    assert_exception(
        &in_use("q", "v"),
        ReplyCode::PreconditionFailed,
        Scope::Channel,
        "queue 'q' in vhost 'v' in use",
    );
    assert_exception(
        &not_empty("q", "v"),
        ReplyCode::PreconditionFailed,
        Scope::Channel,
        "queue 'q' in vhost 'v' not empty",
    );
    assert_exception(
        &exclusive_use("q", "/"),
        ReplyCode::AccessRefused,
        Scope::Channel,
        "queue 'q' in vhost '/' in exclusive use",
    );
    let e = reused_tag("ctag");
    assert_exception(
        &e,
        ReplyCode::NotAllowed,
        Scope::Connection,
        "attempt to reuse consumer tag 'ctag'",
    );
    assert_eq!(
        e.reply_text(),
        "NOT_ALLOWED - attempt to reuse consumer tag 'ctag'"
    );
}

#[test]
fn names_that_are_not_utf8_are_shown_lossily() {
    let e = not_found(b"q\xff".as_slice(), "/");
    assert_eq!(e.text, "no queue 'q\u{fffd}' in vhost '/'");
}
