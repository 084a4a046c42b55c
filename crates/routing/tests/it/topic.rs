//! The topic exchange against RabbitMQ 3.10.8's observed behaviour (research notes §12, §10 and
//! §14): every edge case of the word rules, run through the naive reference
//! [`topic_matches`], a standalone [`TopicTrie`] and a [`Topology`]; patterns that share
//! prefixes; patterns full of `#` (the trie runs as an NFA, so they stay cheap); pruning back
//! to a single node; `CC`/`BCC` keys as extra routing keys.

use std::collections::BTreeSet;
use warren_amqp_codec::{BasicProperties, FieldArray, FieldTable, FieldValue, ReplyCode};
use warren_routing::hash::SeededState;
use warren_routing::kinds::topic::{TopicTrie, split_words, topic_matches};
use warren_routing::{BindingSpec, Destination, ExchangeSpec, QueueId, Routed, Topology};

/// (routing key, binding key, matches) exactly as RabbitMQ 3.10.8 answered (research §12).
const EDGE_CASES: &[(&str, &str, bool)] = &[
    // The empty key has zero words.
    ("", "#", true),
    ("", "", true),
    ("", "*", false),
    ("", "#.#", true),
    ("", "*.#", false),
    ("", "#.*", false),
    ("", ".", false),
    // Empty words are words.
    ("a.", "a.*", true),
    ("a..b", "a.*.b", true),
    (".a", "*.a", true),
    (".a", "#.a", true),
    // `#` matches zero words, wherever it stands.
    ("a", "a.#", true),
    ("a", "#.a.#", true),
    ("a", "#.#", true),
    ("a", "*.#", true),
    ("a", "a.*", false),
    ("a", "a.", false),
    ("a.", "a", false),
    (".", "*.*", true),
    (".", ".", true),
    (".", "*", false),
    ("..", "#", true),
    ("a.b", "a.#.#.b", true),
    ("a.b", "#.*", true),
    ("a.b", "a.b.#", true),
    ("a.b", "#.b", true),
    ("a.b", "*", false),
    ("a.b", "a#", false),
    // Wildcards only as whole words.
    ("ab", "a*", false),
    ("a*", "a*", true),
    ("a#", "a#", true),
    // Case-sensitive.
    ("a", "A", false),
];

fn props() -> BasicProperties {
    BasicProperties::default()
}

/// A topology with topic exchange `t` and queues `q0..q{n}`.
fn topic_topology(queues: usize) -> (Topology, Vec<QueueId>) {
    let mut t = Topology::new("/", 7);
    t.declare_exchange(ExchangeSpec::new("t", "topic"))
        .expect("declare t");
    let ids = (0..queues)
        .map(|i| t.declare_queue(&format!("q{i}").into()).id)
        .collect();
    (t, ids)
}

fn route(t: &Topology, exchange: &str, key: &str, properties: &BasicProperties) -> Vec<QueueId> {
    let mut out = Routed::new();
    t.route(exchange.as_bytes(), key.as_bytes(), properties, &mut out)
        .expect("route");
    out.queues().to_vec()
}

fn q(i: u32) -> Destination {
    Destination::Queue(QueueId(i))
}

#[test]
fn edge_cases_by_the_reference_rule() {
    for &(key, pattern, expected) in EDGE_CASES {
        assert_eq!(
            topic_matches(pattern.as_bytes(), key.as_bytes()),
            expected,
            "key {key:?} pattern {pattern:?}"
        );
    }
}

#[test]
fn edge_cases_by_a_standalone_trie() {
    for &(key, pattern, expected) in EDGE_CASES {
        let mut trie = TopicTrie::new(SeededState::new(1));
        trie.insert(pattern.as_bytes(), q(0));
        let mut out = Vec::new();
        trie.matches(key.as_bytes(), &mut out);
        let want = if expected { vec![q(0)] } else { Vec::new() };
        assert_eq!(out, want, "key {key:?} pattern {pattern:?}");
    }
}

#[test]
fn edge_cases_through_a_topic_exchange() {
    for &(key, pattern, expected) in EDGE_CASES {
        let mut t = Topology::new("/", 3);
        t.declare_exchange(ExchangeSpec::new("t", "topic"))
            .expect("declare t");
        let qid = t.declare_queue(&"q".into()).id;
        assert!(
            t.bind(&BindingSpec::queue("t", "q", pattern))
                .expect("bind")
        );
        let mut out = Routed::new();
        t.route(b"t", key.as_bytes(), &props(), &mut out)
            .expect("route");
        if expected {
            assert_eq!(out.queues(), &[qid], "key {key:?} pattern {pattern:?}");
            assert!(!out.is_unroutable());
        } else {
            assert!(
                out.is_unroutable(),
                "key {key:?} pattern {pattern:?} routed to {:?}",
                out.queues()
            );
        }
    }
}

/// All edge-case patterns bound at once, each to its own queue, in one exchange: for every key
/// of the table exactly the queues whose pattern matches get the message (bindings that share
/// trie nodes do not disturb each other).
#[test]
fn edge_cases_all_bound_together() {
    let patterns: BTreeSet<&str> = EDGE_CASES.iter().map(|c| c.1).collect();
    let patterns: Vec<&str> = patterns.into_iter().collect();
    let (mut t, ids) = topic_topology(patterns.len());
    for (i, p) in patterns.iter().enumerate() {
        assert!(
            t.bind(&BindingSpec::queue("t", format!("q{i}"), *p))
                .expect("bind")
        );
    }
    let keys: BTreeSet<&str> = EDGE_CASES.iter().map(|c| c.0).collect();
    for key in keys {
        let want: Vec<QueueId> = patterns
            .iter()
            .zip(&ids)
            .filter(|(p, _)| topic_matches(p.as_bytes(), key.as_bytes()))
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(route(&t, "t", key, &props()), want, "key {key:?}");
    }
    // The table's positive answers are among them.
    for &(key, pattern, expected) in EDGE_CASES {
        let i = patterns.iter().position(|p| *p == pattern).expect("bound");
        let got = route(&t, "t", key, &props());
        assert_eq!(
            got.contains(&ids[i]),
            expected,
            "key {key:?} pattern {pattern:?}"
        );
    }
}

#[test]
fn words_split_like_rabbitmq() {
    let words = |k: &str| -> Vec<String> {
        split_words(k.as_bytes())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    };
    assert!(words("").is_empty());
    assert_eq!(words("a"), ["a"]);
    assert_eq!(words("a."), ["a", ""]);
    assert_eq!(words("."), ["", ""]);
    assert_eq!(words("a..b"), ["a", "", "b"]);
}

/// Patterns that share prefixes in every way the trie can share them (literal, `*` and `#`
/// edges, bindings ending at inner nodes), each bound to its own queue, agree with the reference
/// on many keys; then again after half of them are unbound; then none is left.
#[test]
fn shared_prefixes() {
    let patterns = [
        "a", "a.b", "a.b.c", "a.b.c.d", "a.*", "a.*.c", "a.#", "a.#.c", "a.b.#", "a.b.*", "#",
        "#.c", "*", "*.b", "*.b.c", "*.*", "*.#", "#.b.#", "a.#.b.#", "a..b", "a.", "", "#.#", "b",
        "b.a", "a.c", "a.c.*", "*.*.*", "a.b.c.#", "#.a",
    ];
    let keys = [
        "",
        "a",
        "b",
        "c",
        "a.b",
        "a.c",
        "b.a",
        "a.b.c",
        "a.b.c.d",
        "a.b.c.d.e",
        "a.x.c",
        "a.",
        "a..b",
        ".",
        "..",
        "x.b",
        "x.b.c",
        "a.b.b.b",
        "b.b",
        "c.c.c",
        "a.a.a.a",
        "z",
    ];
    let (mut t, ids) = topic_topology(patterns.len());
    let mut trie = TopicTrie::new(SeededState::new(9));
    for (i, p) in patterns.iter().enumerate() {
        t.bind(&BindingSpec::queue("t", format!("q{i}"), *p))
            .expect("bind");
        trie.insert(p.as_bytes(), q(i as u32));
    }
    let check = |t: &Topology, trie: &TopicTrie, bound: &[bool]| {
        for key in keys {
            let want: Vec<QueueId> = (0..patterns.len())
                .filter(|&i| bound[i] && topic_matches(patterns[i].as_bytes(), key.as_bytes()))
                .map(|i| ids[i])
                .collect();
            assert_eq!(route(t, "t", key, &props()), want, "key {key:?}");
            let mut got = Vec::new();
            trie.matches(key.as_bytes(), &mut got);
            got.sort_unstable();
            let want: Vec<Destination> = want.into_iter().map(Destination::Queue).collect();
            assert_eq!(got, want, "trie, key {key:?}");
        }
    };
    let mut bound = vec![true; patterns.len()];
    check(&t, &trie, &bound);

    for i in (0..patterns.len()).step_by(2) {
        let removal = t
            .unbind(&BindingSpec::queue("t", format!("q{i}"), patterns[i]))
            .expect("unbind");
        assert_eq!(removal.bindings, 1);
        assert!(trie.remove(patterns[i].as_bytes(), q(i as u32)));
        bound[i] = false;
    }
    check(&t, &trie, &bound);

    for i in (1..patterns.len()).step_by(2) {
        t.unbind(&BindingSpec::queue("t", format!("q{i}"), patterns[i]))
            .expect("unbind");
        assert!(trie.remove(patterns[i].as_bytes(), q(i as u32)));
        bound[i] = false;
    }
    check(&t, &trie, &bound);
    assert_eq!(t.binding_count(), 0);
    assert!(trie.is_empty());
    assert_eq!(trie.node_count(), 1);
}

/// 100 `#` words against a 200-word key: a backtracking matcher would explore an astronomic
/// number of splits; the trie's NFA keeps each node live at most once per word.
#[test]
fn patterns_full_of_hashes() {
    let hashes = vec!["#"; 100].join(".");
    let key_a = vec!["a"; 200].join(".");
    let key_ab = format!("{}.b", vec!["a"; 199].join("."));
    let short = vec!["a"; 99].join(".");
    let a49 = vec!["a"; 49].join(".");
    let (key_a, key_ab, short, a49) = (
        key_a.as_str(),
        key_ab.as_str(),
        short.as_str(),
        a49.as_str(),
    );

    let cases: Vec<(String, &str, bool)> = vec![
        (hashes.clone(), key_a, true),
        (hashes.clone(), "", true),
        // 100 `#` then a literal that is not there.
        (format!("{hashes}.b"), key_a, false),
        (format!("{hashes}.b"), key_ab, true),
        // `#` and `*` alternating: at least 100 words.
        (vec!["#.*"; 100].join("."), key_a, true),
        (vec!["#.*"; 100].join("."), short, false),
        // 50 `a` among `#`s.
        (format!("{}.#", vec!["#.a"; 50].join(".")), key_a, true),
        (format!("{}.#", vec!["#.a"; 50].join(".")), a49, false),
        // A literal `b` must sit between the `#`s and is missing.
        (format!("{hashes}.b.{hashes}"), key_a, false),
        (format!("{hashes}.b.{hashes}"), key_ab, true),
    ];
    let mut trie = TopicTrie::new(SeededState::new(3));
    for (i, (pattern, _, _)) in cases.iter().enumerate() {
        trie.insert(pattern.as_bytes(), q(i as u32));
    }
    for (i, (pattern, key, expected)) in cases.iter().enumerate() {
        let mut out = Vec::new();
        trie.matches(key.as_bytes(), &mut out);
        assert_eq!(
            out.contains(&q(i as u32)),
            *expected,
            "pattern #{i} ({} words) key of {} words",
            split_words(pattern.as_bytes()).count(),
            split_words(key.as_bytes()).count()
        );
    }

    // The same through a topology (keys and patterns fit in 255 octets only when short, so use
    // the 100-`#` pattern, 199 octets, and a 127-word key).
    let (mut t, ids) = topic_topology(2);
    t.bind(&BindingSpec::queue("t", "q0", hashes.clone()))
        .expect("bind q0");
    let hashes_b = format!("{}.b", vec!["#"; 60].join("."));
    t.bind(&BindingSpec::queue("t", "q1", hashes_b))
        .expect("bind q1");
    let key = vec!["a"; 127].join(".");
    assert_eq!(route(&t, "t", &key, &props()), [ids[0]]);
    let key = format!("{}.b", vec!["a"; 126].join("."));
    assert_eq!(route(&t, "t", &key, &props()), [ids[0], ids[1]]);
}

/// Removing every binding prunes the trie back to its root, whatever the order, and leaves it
/// structurally equal to a new one.
#[test]
fn removing_everything_leaves_one_node() {
    let patterns = [
        "a.b.c", "a.b", "a", "#", "#.#", "*.*.#", "a.#.c", "*", "", "a..", "x.y.z.w", "#.a.*",
    ];
    for reverse in [false, true] {
        let mut trie = TopicTrie::new(SeededState::new(5));
        assert_eq!(trie.node_count(), 1);
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p.as_bytes(), q(i as u32));
            // A second binding of the same pattern to another destination shares the node.
            trie.insert(p.as_bytes(), q(100));
        }
        assert_eq!(trie.len(), 2 * patterns.len());
        assert!(trie.node_count() > 10);
        // Removing what is not there changes nothing.
        assert!(!trie.remove(b"a.b.c", q(55)));
        assert!(!trie.remove(b"no.such", q(0)));
        assert!(!trie.remove(b"a.b.c.d", q(0)));
        assert_eq!(trie.len(), 2 * patterns.len());
        let order: Vec<usize> = if reverse {
            (0..patterns.len()).rev().collect()
        } else {
            (0..patterns.len()).collect()
        };
        for i in order {
            assert!(trie.remove(patterns[i].as_bytes(), q(i as u32)));
            assert!(trie.remove(patterns[i].as_bytes(), q(100)));
            assert!(!trie.remove(patterns[i].as_bytes(), q(100)));
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
        assert!(trie == TopicTrie::new(SeededState::new(6)));
        let mut out = Vec::new();
        trie.matches(b"a.b.c", &mut out);
        trie.matches(b"", &mut out);
        assert!(out.is_empty());
    }
}

/// A trie is a multiset: the same pattern bound twice to one destination matches twice until
/// both are removed.
#[test]
fn trie_counts_multiplicity() {
    let mut trie = TopicTrie::new(SeededState::new(2));
    trie.insert(b"a.*", q(1));
    trie.insert(b"a.*", q(1));
    trie.insert(b"a.#", q(1));
    let mut out = Vec::new();
    trie.matches(b"a.b", &mut out);
    assert_eq!(out, [q(1), q(1), q(1)]);
    assert!(trie.remove(b"a.*", q(1)));
    out.clear();
    trie.matches(b"a.b", &mut out);
    assert_eq!(out, [q(1), q(1)]);
    assert!(trie.remove(b"a.*", q(1)));
    assert!(!trie.remove(b"a.*", q(1)));
    out.clear();
    trie.matches(b"a.b", &mut out);
    assert_eq!(out, [q(1)]);
    assert_eq!(trie.len(), 1);
}

/// Built in different orders, two tries with the same bindings are equal; a different binding
/// set is not.
#[test]
fn trie_equality_is_structural() {
    let patterns = ["a.b", "a.*", "#", "a.#.b", "", "b"];
    let mut one = TopicTrie::new(SeededState::new(1));
    let mut two = TopicTrie::new(SeededState::new(2));
    for (i, p) in patterns.iter().enumerate() {
        one.insert(p.as_bytes(), q(i as u32));
    }
    for (i, p) in patterns.iter().enumerate().rev() {
        two.insert(p.as_bytes(), q(i as u32));
    }
    assert!(one == two);
    assert_eq!(one.canonical(), two.canonical());
    two.insert(b"c", q(0));
    assert!(one != two);
    assert!(two.remove(b"c", q(0)));
    assert!(one == two);
    two.insert(b"a.b", q(9));
    assert!(one != two);
}

/// A topology routes each queue once even when several of its bindings match.
#[test]
fn one_copy_per_queue() {
    let (mut t, ids) = topic_topology(1);
    for p in ["#", "a.*", "a.b", "*.b", "#.b"] {
        t.bind(&BindingSpec::queue("t", "q0", p)).expect("bind");
    }
    assert_eq!(route(&t, "t", "a.b", &props()), [ids[0]]);
    // The same key bound twice is one binding.
    assert!(!t.bind(&BindingSpec::queue("t", "q0", "a.b")).expect("bind"));
    assert_eq!(t.binding_count(), 5);
}

fn headers(entries: Vec<(&'static str, FieldValue)>) -> BasicProperties {
    BasicProperties {
        headers: Some(entries.into_iter().collect::<FieldTable>()),
        ..BasicProperties::default()
    }
}

fn strings(items: &[&'static str]) -> FieldValue {
    FieldValue::Array(FieldArray(
        items.iter().map(|s| FieldValue::from(*s)).collect(),
    ))
}

/// `CC` and `BCC` entries are extra routing keys for a topic exchange (research §14, §10).
#[test]
fn cc_and_bcc_are_extra_routing_keys() {
    let (mut t, ids) = topic_topology(3);
    t.bind(&BindingSpec::queue("t", "q0", "a.*")).expect("bind");
    t.bind(&BindingSpec::queue("t", "q1", "b.#")).expect("bind");
    t.bind(&BindingSpec::queue("t", "q2", "none"))
        .expect("bind");

    // rk "none" plus CC ["a.b"] matches binding "a.*".
    let p = headers(vec![("CC", strings(&["a.b"]))]);
    assert_eq!(route(&t, "t", "none", &p), [ids[0], ids[2]]);
    let p = headers(vec![("CC", strings(&["a.b"]))]);
    assert_eq!(route(&t, "t", "zzz", &p), [ids[0]]);
    let p = headers(vec![("BCC", strings(&["b"]))]);
    assert_eq!(route(&t, "t", "zzz", &p), [ids[1]]);
    let p = headers(vec![
        ("CC", strings(&["a.x", "a.y"])),
        ("BCC", strings(&["b.c.d"])),
        ("other", FieldValue::I32(1)),
    ]);
    assert_eq!(route(&t, "t", "none", &p), [ids[0], ids[1], ids[2]]);
    // Lower-case `cc` is an ordinary header.
    let p = headers(vec![("cc", strings(&["a.b"]))]);
    assert!(route(&t, "t", "zzz", &p).is_empty());
    // Elements that are not long strings are skipped, binary included.
    let p = headers(vec![(
        "CC",
        FieldValue::Array(FieldArray(vec![
            FieldValue::I32(5),
            FieldValue::Bytes(bytes::Bytes::from_static(b"a.b")),
            FieldValue::from("b"),
        ])),
    )]);
    assert_eq!(route(&t, "t", "zzz", &p), [ids[1]]);
    // An empty array is fine.
    let p = headers(vec![("CC", strings(&[]))]);
    assert_eq!(route(&t, "t", "a.q", &p), [ids[0]]);
}

/// `CC` or `BCC` that is not an array refuses the publish with 406 and RabbitMQ's text.
#[test]
fn cc_of_the_wrong_type_is_refused() {
    let (mut t, _) = topic_topology(1);
    t.bind(&BindingSpec::queue("t", "q0", "#")).expect("bind");
    for (name, value, text) in [
        (
            "CC",
            FieldValue::from("k2"),
            "invalid message: {unacceptable_type_in_header,\"CC\",longstr}",
        ),
        (
            "BCC",
            FieldValue::from("k3"),
            "invalid message: {unacceptable_type_in_header,\"BCC\",longstr}",
        ),
        (
            "CC",
            FieldValue::I32(5),
            "invalid message: {unacceptable_type_in_header,\"CC\",signedint}",
        ),
    ] {
        let p = headers(vec![(name, value)]);
        let mut out = Routed::new();
        let e = t
            .route(b"t", b"a", &p, &mut out)
            .expect_err("CC must be an array");
        assert_eq!(e.reply_code(), ReplyCode::PreconditionFailed);
        assert_eq!(e.exception().text, text);
        assert_eq!(
            e.exception().reply_text(),
            format!("PRECONDITION_FAILED - {text}")
        );
    }
}

/// What a consumer sees (research §10): `BCC` is removed, `CC` and the rest are kept; when
/// only `BCC` was set the headers table stays, empty.
#[test]
fn bcc_is_stripped_before_delivery() {
    let mut p = headers(vec![
        ("CC", strings(&["k2"])),
        ("BCC", strings(&["k3"])),
        ("other", FieldValue::I32(1)),
    ]);
    assert!(warren_routing::strip_bcc(&mut p));
    let kept: FieldTable = vec![("CC", strings(&["k2"])), ("other", FieldValue::I32(1))]
        .into_iter()
        .collect();
    assert_eq!(p.headers, Some(kept));
    assert!(!warren_routing::strip_bcc(&mut p));

    let mut p = headers(vec![("BCC", strings(&["k3"]))]);
    assert!(warren_routing::strip_bcc(&mut p));
    assert_eq!(p.headers, Some(FieldTable::new()));

    let mut p = headers(vec![("bcc", strings(&["k3"]))]);
    assert!(!warren_routing::strip_bcc(&mut p));
    let mut p = props();
    assert!(!warren_routing::strip_bcc(&mut p));
    assert_eq!(p.headers, None);
}

/// `CC` keys come before `BCC` keys, and only long-string elements count.
#[test]
fn sender_selected_keys_in_order() {
    let h: FieldTable = vec![
        ("BCC", strings(&["b1"])),
        (
            "CC",
            FieldValue::Array(FieldArray(vec![
                FieldValue::from("c1"),
                FieldValue::I32(5),
                FieldValue::from("c2"),
            ])),
        ),
    ]
    .into_iter()
    .collect();
    let mut keys: Vec<&[u8]> = Vec::new();
    warren_routing::sender_selected_keys(&h, &mut keys).expect("arrays");
    assert_eq!(keys, [b"c1".as_slice(), b"c2", b"b1"]);
}
