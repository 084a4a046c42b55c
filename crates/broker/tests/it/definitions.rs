//! Definitions export and import in RabbitMQ's JSON format: files exported by RabbitMQ 3.10.8
//! (`rabbitmqctl export_definitions` and the management API, in `fixtures/`, declared with
//! pika and rabbitmqctl) import unchanged; an export imports into a fresh broker and exports
//! the same again; imported users log in with their original passwords; imported
//! definitions are durable; a malformed file is refused with a message naming the entry, and
//! changes nothing.

use crate::common::{DataDir, lapin_connect, start, start_with, within};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable as LapinTable};
use serde_json::{Value, json};
use warren_amqp_codec::{FieldTable, FieldValue};
use warren_broker::{BrokerHandle, Error, ImportReport};

/// `rabbitmqctl export_definitions` of RabbitMQ 3.10.8 (an exclusive queue with a binding was
/// open at the time: RabbitMQ exports the binding, not the queue).
const RABBITMQCTL: &str = include_str!("fixtures/rabbitmq-3.10-definitions.json");
/// `GET /api/definitions` of the same broker (the management plugin's form).
const MANAGEMENT: &str = include_str!("fixtures/rabbitmq-3.10-management-definitions.json");

fn import(h: &BrokerHandle, json: &str) -> ImportReport {
    h.import_definitions(json).expect("definitions import")
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).expect("valid JSON")
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A field value as RabbitMQ writes it in definitions (the types imports produce).
fn to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::F64(f) => json!(f),
        FieldValue::LongStr(s) => json!(s.as_str().expect("UTF-8")),
        FieldValue::Array(a) => Value::Array(a.0.iter().map(to_json).collect()),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Void => Value::Null,
        other => json!(other.as_i64().expect("an integer")),
    }
}

fn table_json(t: &FieldTable) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
}

fn s(v: &Value) -> &str {
    v.as_str().expect("a string")
}

/// Checks that every user, vhost, permission, queue, exchange, binding and policy of `doc`
/// (but those RabbitMQ would skip too) is in the broker's listings, as the file says.
fn assert_listed(h: &BrokerHandle, doc: &Value) {
    let users = h.users_list();
    for u in list(doc, "users") {
        let tags: Vec<String> = match &u["tags"] {
            Value::String(t) => t.split(',').map(str::to_string).collect(),
            Value::Array(a) => a.iter().map(|t| s(t).to_string()).collect(),
            other => panic!("tags {other}"),
        };
        assert!(
            users.contains(&(s(&u["name"]).to_string(), tags)),
            "user {u} not in {users:?}"
        );
    }
    let vhosts = h.vhosts();
    for v in list(doc, "vhosts") {
        assert!(vhosts.iter().any(|n| n == s(&v["name"])), "vhost {v}");
    }
    let permissions = h.permissions_list();
    for p in list(doc, "permissions") {
        let want = (
            s(&p["user"]).to_string(),
            s(&p["vhost"]).to_string(),
            s(&p["configure"]).to_string(),
            s(&p["write"]).to_string(),
            s(&p["read"]).to_string(),
        );
        assert!(permissions.contains(&want), "permission {p}");
    }
    for q in list(doc, "queues") {
        let listed = h.queues(s(&q["vhost"])).expect("vhost");
        let found = listed
            .iter()
            .find(|l| l.name == s(&q["name"]))
            .unwrap_or_else(|| panic!("queue {q} not listed"));
        assert_eq!(found.durable, q["durable"], "{q}");
        assert_eq!(found.auto_delete, q["auto_delete"], "{q}");
        assert!(!found.exclusive);
        assert_eq!(table_json(&found.arguments), q["arguments"], "{q}");
    }
    for x in list(doc, "exchanges") {
        let listed = h.exchanges(s(&x["vhost"])).expect("vhost");
        let found = listed
            .iter()
            .find(|l| l.name == s(&x["name"]))
            .unwrap_or_else(|| panic!("exchange {x} not listed"));
        assert_eq!(found.kind, s(&x["type"]), "{x}");
        assert_eq!(found.durable, x["durable"], "{x}");
        assert_eq!(found.auto_delete, x["auto_delete"], "{x}");
        // `rabbitmqctl` writes no `internal` (it leaves internal exchanges out).
        assert_eq!(
            found.internal,
            x["internal"].as_bool().unwrap_or(false),
            "{x}"
        );
        assert_eq!(table_json(&found.arguments), x["arguments"], "{x}");
    }
    let declared = |name: &Value, kind: &str| {
        s(name).starts_with("amq.")
            || list(
                doc,
                if kind == "queue" {
                    "queues"
                } else {
                    "exchanges"
                },
            )
            .iter()
            .any(|x| x["name"] == *name)
    };
    for b in list(doc, "bindings") {
        // RabbitMQ skips those too.
        if !declared(&b["source"], "exchange")
            || !declared(&b["destination"], s(&b["destination_type"]))
        {
            continue;
        }
        let listed = h.bindings(s(&b["vhost"])).expect("vhost");
        assert!(
            listed.iter().any(|l| l.source == s(&b["source"])
                && l.destination == s(&b["destination"])
                && l.destination_kind == s(&b["destination_type"])
                && l.routing_key == s(&b["routing_key"])
                && table_json(&l.arguments) == b["arguments"]),
            "binding {b} not in {listed:?}"
        );
    }
    let exported = parse(&h.export_definitions());
    for p in list(doc, "policies") {
        assert!(list(&exported, "policies").contains(p), "policy {p}");
    }
}

#[tokio::test]
async fn rabbitmq_exports_import_unchanged() {
    // RabbitMQ 3.10's two exports differ: `rabbitmqctl` leaves out internal exchanges (but
    // not their bindings) and includes the bindings of exclusive queues; the management API
    // does neither. Bindings to or from what is not there are skipped, as RabbitMQ does.
    let ctl_skips = [
        "bindings[3]: no exchange 'internal-x' in vhost '/'; skipped",
        "bindings[4]: no queue 'excl-q' in vhost '/'; skipped",
        "bindings[5]: no exchange 'internal-x' in vhost '/'; skipped",
    ];
    for (what, file, exchanges, bindings, skips) in [
        ("rabbitmqctl", RABBITMQCTL, 7, 7, &ctl_skips[..]),
        ("management", MANAGEMENT, 8, 9, &[][..]),
    ] {
        let b = start().await;
        let h = b.handle();
        let report = import(&h, file);
        assert_eq!(report.users, 3, "{what}");
        assert_eq!(report.vhosts, 1, "{what}: staging");
        assert_eq!(report.permissions, 4, "{what}");
        // Two policies and an operator policy (a runtime parameter of RabbitMQ's).
        assert_eq!(report.policies, 3, "{what}");
        assert_eq!(report.queues, 9, "{what}");
        assert_eq!(report.exchanges, exchanges, "{what}");
        assert_eq!(report.bindings, bindings, "{what}");
        let notes = report.notes.join("\n");
        for expected in [
            "topic_permissions[0]: topic permissions are not supported (user 'bob', exchange 'amq.topic' in vhost '/'); ignored",
            "runtime parameters are not supported ('limits' of component 'vhost-limits' in vhost 'staging'); ignored",
            "global parameters are not supported ('my_param'); ignored",
        ]
        .iter()
        .chain(skips)
        {
            assert!(notes.contains(expected), "{what}: {expected:?} not in\n{notes}");
        }
        assert_eq!(
            report.notes.len(),
            3 + skips.len() + usize::from(what == "management"),
            "{what}: {notes}"
        );
        assert_listed(&h, &parse(file));
        // The operator policy acts, and is exported as the management API writes it.
        let op = h.operator_policies("/").unwrap();
        assert_eq!(op.len(), 1, "{what}");
        assert_eq!(
            (
                op[0].name.as_str(),
                op[0].pattern.as_str(),
                op[0].apply_to.as_str()
            ),
            ("op-limit", "^op\\.", "queues")
        );
        assert_eq!(op[0].definition, r#"{"max-length":500}"#);
        let exported = parse(&h.export_definitions());
        assert!(
            list(&exported, "parameters").contains(&json!({
                "vhost": "/", "component": "operator_policy", "name": "op-limit",
                "value": {"pattern": "^op\\.", "definition": {"max-length": 500}, "priority": 0, "apply-to": "queues"}
            })),
            "{what}: {exported}"
        );
        // The values keep RabbitMQ's types: integers are longs, objects tables, lists arrays.
        let ttl = h
            .queues("/")
            .unwrap()
            .into_iter()
            .find(|q| q.name == "ttl.q")
            .unwrap();
        assert_eq!(
            ttl.arguments.get("x-max-length"),
            Some(&FieldValue::I64(10))
        );
        let with_ae = h
            .exchanges("/")
            .unwrap()
            .into_iter()
            .find(|x| x.name == "with-ae")
            .unwrap();
        let note = with_ae
            .arguments
            .get("x-note")
            .and_then(FieldValue::as_table);
        assert!(matches!(
            note.and_then(|t| t.get("list")),
            Some(FieldValue::Array(a)) if a.0 == [FieldValue::I64(1), FieldValue::from("two"), FieldValue::Bool(false)]
        ));
        b.stop().await;
    }
}

#[tokio::test]
async fn imported_users_log_in_with_their_original_passwords() {
    let b = start().await;
    import(&b.handle(), RABBITMQCTL);
    let alice = lapin_connect(&b.uri_as("alice", "s3cret", "staging"))
        .await
        .expect("alice logs in with the password she had in RabbitMQ");
    let bob = lapin_connect(&b.uri_as("bob", "hunter2", "/"))
        .await
        .expect("bob too");
    let guest = lapin_connect(&b.uri())
        .await
        .expect("guest's RabbitMQ hash is of 'guest'");
    assert!(
        lapin_connect(&b.uri_as("alice", "hunter2", "staging"))
            .await
            .is_err()
    );
    for c in [alice, bob, guest] {
        let _ = c.close(200, "bye").await;
    }
    b.stop().await;
}

#[tokio::test]
async fn an_export_imports_into_a_fresh_broker_and_exports_the_same() {
    let a = start().await;
    import(&a.handle(), MANAGEMENT);
    // Also what clients declare, including types RabbitMQ's JSON has no name for, and what
    // an export leaves out (exclusive queues).
    let conn = a.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut args = LapinTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert("short".into(), AMQPValue::ShortInt(-7));
    args.insert("float".into(), AMQPValue::Double(0.25));
    within(ch.queue_declare(
        "mine",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        LapinTable::default(),
    ))
    .await
    .unwrap();
    within(ch.queue_declare(
        "private",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        LapinTable::default(),
    ))
    .await
    .unwrap();
    within(ch.queue_bind("mine", "hdrs", "", QueueBindOptions::default(), args))
        .await
        .unwrap();
    within(ch.queue_bind(
        "private",
        "orders",
        "#",
        QueueBindOptions::default(),
        LapinTable::default(),
    ))
    .await
    .unwrap();
    within(ch.exchange_declare(
        "client-x",
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        LapinTable::default(),
    ))
    .await
    .unwrap();
    let first = a.handle().export_definitions();
    let doc = parse(&first);
    assert!(
        !first.contains("private"),
        "exclusive queues are not exported"
    );
    let bound = list(&doc, "bindings")
        .iter()
        .find(|b| b["destination"] == "mine")
        .expect("the client's binding");
    assert_eq!(
        bound["arguments"],
        json!({"float": 0.25, "short": -7, "x-match": "all"})
    );
    assert_eq!(doc["rabbitmq_version"], "3.10.8");
    assert_eq!(doc["product_name"], "Warren");
    let alice = list(&doc, "users")
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["tags"], json!(["monitoring", "management"]));
    let original = parse(MANAGEMENT);
    let original = list(&original, "users")
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["password_hash"], original["password_hash"]);
    assert_eq!(alice["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let _ = conn.close(200, "bye").await;

    let b = start().await;
    let report = import(&b.handle(), &first);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let second = b.handle().export_definitions();
    assert_eq!(first, second);
    // Importing it again changes nothing and creates nothing.
    let again = import(&b.handle(), &first);
    assert_eq!(
        (again.vhosts, again.queues, again.exchanges, again.bindings),
        (0, 0, 0, 0)
    );
    assert!(again.notes.is_empty(), "{:?}", again.notes);
    assert_eq!(b.handle().export_definitions(), first);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn imported_definitions_survive_a_restart() {
    let dir = DataDir::new();
    let b = dir.start().await;
    import(&b.handle(), RABBITMQCTL);
    let before = parse(&b.handle().export_definitions());
    b.stop().await;
    let b = dir.start().await;
    let after = parse(&b.handle().export_definitions());
    // Everything but the transient queue and exchange, as in RabbitMQ.
    let mut expected = before.clone();
    for key in ["queues", "exchanges"] {
        expected[key]
            .as_array_mut()
            .unwrap()
            .retain(|x| x["durable"] == true);
    }
    assert_eq!(list(&before, "queues").len(), 9);
    assert_eq!(list(&expected, "queues").len(), 8);
    assert_eq!(after, expected);
    assert!(!list(&after, "policies").is_empty());
    let alice = lapin_connect(&b.uri_as("alice", "s3cret", "staging")).await;
    assert!(alice.is_ok(), "the imported password hash was kept");
    b.stop().await;
}

#[tokio::test]
async fn malformed_definitions_are_refused_with_the_entry_named_and_change_nothing() {
    let b = start().await;
    let h = b.handle();
    import(&h, RABBITMQCTL);
    let before = h.export_definitions();
    let queue = |args: Value| json!({"name": "ok", "vhost": "/", "durable": true, "auto_delete": false, "arguments": args});
    let cases: Vec<(String, &str)> = vec![
        ("{\"users\": [".into(), "definitions: not valid JSON"),
        ("[]".into(), "expected a JSON object at the top level, got an array"),
        (json!({"queues": {}}).to_string(), "queues: expected an array, got an object"),
        (json!({"queues": [1]}).to_string(), "queues[0]: expected an object, got a number"),
        // Valid entries first: none of them may be applied.
        (
            json!({
                "users": [{"name": "new-user", "password": "pw", "tags": ""}],
                "vhosts": [{"name": "new-vhost"}],
                "queues": [
                    queue(json!({})),
                    {"name": "q2", "vhost": "/", "durable": true, "auto_delete": false,
                     "arguments": {"x-max-length": "abc"}},
                ],
            })
            .to_string(),
            "queues[1]: PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q2' in vhost '/'",
        ),
        (
            json!({"queues": [{"name": "q", "vhost": "/", "auto_delete": false}]}).to_string(),
            "queues[0].durable: missing",
        ),
        (
            json!({"queues": [{"name": "q", "vhost": "nowhere", "durable": true, "auto_delete": false}]})
                .to_string(),
            "queues[0].vhost: no vhost 'nowhere'",
        ),
        (
            json!({"queues": [queue(json!({"x-big": 18446744073709551615u64}))]}).to_string(),
            "queues[0].arguments: 'x-big': 18446744073709551615 is out of the range of a long",
        ),
        (
            json!({"queues": [{"name": "q".repeat(256), "vhost": "/", "durable": true, "auto_delete": false}]})
                .to_string(),
            "queues[0].name: longer than 255 octets",
        ),
        (
            json!({"exchanges": [{"name": "x", "vhost": "/", "type": "direct", "durable": "yes", "auto_delete": false}]})
                .to_string(),
            "exchanges[0].durable: expected a boolean, got a string",
        ),
        (
            json!({"exchanges": [{"name": "x", "vhost": "/", "type": "nope", "durable": true, "auto_delete": false}]})
                .to_string(),
            "exchanges[0]: COMMAND_INVALID - unknown exchange type 'nope'",
        ),
        (
            json!({"bindings": [{"source": "amq.headers", "vhost": "/", "destination": "ttl.q",
                   "destination_type": "queue", "routing_key": "", "arguments": {"x-match": "sometimes"}}]})
                .to_string(),
            "bindings[0]: PRECONDITION_FAILED - ",
        ),
        (
            json!({"bindings": [{"source": "orders", "vhost": "/", "destination": "ttl.q",
                   "destination_type": "topic", "routing_key": ""}]})
                .to_string(),
            "bindings[0].destination_type: expected \"queue\" or \"exchange\", got \"topic\"",
        ),
        (
            json!({"users": [{"name": "u", "password_hash": "not base64!", "tags": []}]}).to_string(),
            "users[0].password_hash: not a base64 salted SHA-256 hash",
        ),
        (
            json!({"users": [{"name": "u", "password_hash": "AAAA", "tags": [],
                   "hashing_algorithm": "rabbit_password_hashing_sha512"}]})
                .to_string(),
            "users[0].hashing_algorithm: 'rabbit_password_hashing_sha512' is not supported",
        ),
        (
            json!({"users": [{"name": "u", "tags": "x"}]}).to_string(),
            "users[0]: user 'u' has neither password_hash nor password",
        ),
        (
            json!({"permissions": [{"user": "nobody", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]})
                .to_string(),
            "permissions[0].user: no user 'nobody'",
        ),
        (
            json!({"permissions": [{"user": "bob", "vhost": "/", "configure": "(", "write": ".*", "read": ".*"}]})
                .to_string(),
            "permissions[0].configure: invalid regular expression",
        ),
        (
            json!({"policies": [{"vhost": "/", "name": "p", "pattern": ".*", "apply-to": "everything", "definition": {}}]})
                .to_string(),
            "policies[0].apply-to: apply-to 'everything' unrecognised; should be 'queues', 'exchanges' or 'all'",
        ),
        (
            json!({"policies": [{"vhost": "/", "name": "p", "pattern": ".*", "definition": "ha-mode=all"}]})
                .to_string(),
            "policies[0].definition: expected an object, got a string",
        ),
    ];
    for (json, expected) in cases {
        match h.import_definitions(&json) {
            Err(e @ Error::Definitions(_)) => {
                let text = e.to_string();
                assert!(
                    text.contains(expected),
                    "{json}\n  gave: {text}\n  want: {expected}"
                );
            }
            other => panic!("{json} gave {other:?}"),
        }
        assert_eq!(h.export_definitions(), before, "{json} changed something");
    }
    b.stop().await;
}

#[tokio::test]
async fn existing_definitions_are_kept_or_replaced_as_in_rabbitmq() {
    let b = start().await;
    let h = b.handle();
    let conn = b.lapin().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut args = LapinTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    within(ch.queue_declare(
        "q",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    ))
    .await
    .unwrap();
    h.add_user("carol", "old", &["management"]);
    let report = import(
        &h,
        &json!({
            "users": [{"name": "carol", "password": "new", "tags": "administrator, monitoring"}],
            "permissions": [{"user": "carol", "vhost": "/", "configure": "", "write": "", "read": ".*"}],
            "queues": [
                {"name": "q", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-max-length": 10}},
                {"name": "amq.q", "vhost": "/", "durable": true, "auto_delete": false},
            ],
            "exchanges": [
                {"name": "amq.direct", "vhost": "/", "type": "direct", "durable": true, "auto_delete": false},
                {"name": "", "vhost": "/", "type": "direct", "durable": true, "auto_delete": false},
            ],
            "policies": [{"vhost": "/", "name": "p", "pattern": "^q$", "definition": {"max-length": 1}}],
        })
        .to_string(),
    );
    let notes = report.notes.join("\n");
    assert!(
        notes.contains(
            "queues[0]: PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/'"
        ) && notes.contains("the queue is left as it is"),
        "{notes}"
    );
    assert!(
        notes.contains(
            "queues[1]: queue 'amq.q' in vhost '/' has the reserved prefix 'amq.'; skipped"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("exchanges[0]: exchange 'amq.direct'"),
        "{notes}"
    );
    assert!(notes.contains("exchanges[1]: exchange ''"), "{notes}");
    assert_eq!((report.queues, report.exchanges, report.users), (0, 0, 1));
    assert_eq!(
        b.queue("q").unwrap().arguments.get("x-max-length"),
        Some(&FieldValue::I32(5))
    );
    assert!(b.queue("amq.q").is_none());
    // The user is replaced: new password, new tags; its other permissions stay.
    assert!(h.users_list().contains(&(
        "carol".into(),
        vec!["administrator".into(), "monitoring".into()]
    )));
    assert!(lapin_connect(&b.uri_as("carol", "old", "/")).await.is_err());
    let carol = lapin_connect(&b.uri_as("carol", "new", "/"))
        .await
        .expect("new password");
    let _ = carol.close(200, "bye").await;
    // A policy of the same name is replaced.
    import(
        &h,
        &json!({"policies": [{"vhost": "/", "name": "p", "pattern": "^r$", "apply-to": "queues",
                              "priority": 3, "definition": {"max-length": 2}}]})
        .to_string(),
    );
    let policies = parse(&h.export_definitions())["policies"].clone();
    assert_eq!(
        policies,
        json!([{"vhost": "/", "name": "p", "pattern": "^r$", "apply-to": "queues",
                "definition": {"max-length": 2}, "priority": 3}])
    );
    let _ = conn.close(200, "bye").await;
    b.stop().await;
}

#[tokio::test]
async fn arguments_map_between_json_and_field_values_as_in_rabbitmq() {
    let b = start().await;
    let h = b.handle();
    let args = json!({"a": [1, "x", [2.5]], "b": true, "f": 1.5, "i": -5, "n": null,
                      "s": "text", "t": {"k": 2}});
    import(
        &h,
        &json!({"exchanges": [{"name": "x", "vhost": "/", "type": "topic", "durable": false,
                               "auto_delete": false, "internal": false, "arguments": args}]})
        .to_string(),
    );
    let x = h
        .exchanges("/")
        .unwrap()
        .into_iter()
        .find(|x| x.name == "x")
        .unwrap();
    let get = |k: &str| x.arguments.get(k).cloned();
    assert_eq!(get("i"), Some(FieldValue::I64(-5)));
    assert_eq!(get("f"), Some(FieldValue::F64(1.5)));
    assert_eq!(get("b"), Some(FieldValue::Bool(true)));
    assert_eq!(get("s"), Some(FieldValue::from("text")));
    assert_eq!(get("n"), Some(FieldValue::Void));
    assert!(
        matches!(get("a"), Some(FieldValue::Array(a)) if a.0.len() == 3
        && matches!(&a.0[2], FieldValue::Array(inner) if inner.0 == [FieldValue::F64(2.5)]))
    );
    assert!(
        matches!(get("t"), Some(FieldValue::Table(t)) if t.get("k") == Some(&FieldValue::I64(2)))
    );
    let exported = parse(&h.export_definitions());
    let x = list(&exported, "exchanges")
        .iter()
        .find(|x| x["name"] == "x")
        .unwrap();
    assert_eq!(x["arguments"], args);
    b.stop().await;
}

#[tokio::test]
async fn definitions_load_at_start_before_clients_are_accepted() {
    let b = start_with(|b| b.load_definitions(RABBITMQCTL)).await;
    assert_listed(&b.handle(), &parse(RABBITMQCTL));
    b.stop().await;
    let refused = warren_broker::Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .load_definitions("{\"queues\": 3}")
        .start()
        .await;
    match refused {
        Err(e @ Error::Definitions(_)) => {
            assert_eq!(
                e.to_string(),
                "definitions: queues: expected an array, got a number"
            )
        }
        other => panic!("started: {:?}", other.map(|b| b.local_addrs().to_vec())),
    }
}
