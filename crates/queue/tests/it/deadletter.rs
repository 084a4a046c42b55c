//! Dead-letter headers exactly as RabbitMQ 3.10.8 writes them, case by case from
//! `docs/design/queue-features.md` (probed on a live RabbitMQ): field order and types of a
//! first `x-death` entry, the sorted layout of later ones, counts, grouping, `x-first-death-*`,
//! `expiration` and `CC`, the header table sorted by key, and the cycle rule.

use warren_amqp_codec::{BasicProperties, FieldArray, FieldTable, FieldValue, LongStr, ShortStr};
use warren_queue::DeathReason;
use warren_queue::deadletter::{Death, dead_letter, is_cycle};

fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(LongStr::from(v.to_string()))
}

fn death<'a>(
    queue: &'a str,
    reason: DeathReason,
    exchange: &'a str,
    keys: &[&'a str],
    time: u64,
) -> Death<'a> {
    Death {
        queue: queue.as_bytes(),
        reason,
        exchange: exchange.as_bytes(),
        routing_keys: keys.iter().map(|k| k.as_bytes()).collect(),
        time,
    }
}

fn keys(t: &FieldTable) -> Vec<String> {
    t.iter()
        .map(|(k, _)| String::from_utf8_lossy(k.as_bytes()).into_owned())
        .collect()
}

fn x_death(p: &BasicProperties) -> Vec<FieldTable> {
    match p.headers.as_ref().and_then(|h| h.get("x-death")) {
        Some(FieldValue::Array(FieldArray(items))) => items
            .iter()
            .map(|v| match v {
                FieldValue::Table(t) => t.clone(),
                other => panic!("not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

fn summary(p: &BasicProperties) -> Vec<(String, String, i64)> {
    x_death(p)
        .iter()
        .map(|e| {
            let text = |k: &str| match e.get(k) {
                Some(FieldValue::LongStr(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                _ => String::new(),
            };
            (
                text("queue"),
                text("reason"),
                e.get("count").and_then(FieldValue::as_i64).unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn a_first_death_writes_the_entry_in_rabbitmqs_order_and_the_first_death_headers() {
    let mut headers = FieldTable::new();
    headers.insert("h", s("v"));
    let mut p = BasicProperties {
        headers: Some(headers),
        delivery_mode: Some(2),
        ..BasicProperties::default()
    };
    dead_letter(
        &mut p,
        &death(
            "qf.src",
            DeathReason::Rejected,
            "qf.in",
            &["k1"],
            1_795_300_000,
        ),
        false,
    );
    let h = p.headers.as_ref().unwrap();
    assert_eq!(
        keys(h),
        [
            "h",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason"
        ]
    );
    let e = &x_death(&p)[0];
    assert_eq!(
        keys(e),
        [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys"
        ]
    );
    assert_eq!(e.get("count"), Some(&FieldValue::I64(1)));
    assert_eq!(e.get("reason"), Some(&s("rejected")));
    assert_eq!(e.get("queue"), Some(&s("qf.src")));
    assert_eq!(e.get("time"), Some(&FieldValue::Timestamp(1_795_300_000)));
    assert_eq!(e.get("exchange"), Some(&s("qf.in")));
    assert_eq!(
        e.get("routing-keys"),
        Some(&FieldValue::Array(FieldArray(vec![s("k1")])))
    );
    assert_eq!(h.get("x-first-death-queue"), Some(&s("qf.src")));
    assert_eq!(h.get("x-first-death-reason"), Some(&s("rejected")));
    assert_eq!(h.get("x-first-death-exchange"), Some(&s("qf.in")));
}

#[test]
fn expiration_is_removed_and_recorded_whatever_the_reason() {
    for reason in [DeathReason::Expired, DeathReason::Rejected] {
        let mut p = BasicProperties {
            expiration: Some(ShortStr::from_static("100")),
            ..BasicProperties::default()
        };
        dead_letter(&mut p, &death("q", reason, "", &["q"], 1), false);
        assert_eq!(p.expiration, None);
        let e = &x_death(&p)[0];
        assert_eq!(
            keys(e).last().map(String::as_str),
            Some("original-expiration")
        );
        assert_eq!(e.get("original-expiration"), Some(&s("100")));
    }
}

#[test]
fn a_second_death_elsewhere_goes_first_in_the_sorted_layout() {
    let mut p = BasicProperties::default();
    dead_letter(
        &mut p,
        &death("qf.A", DeathReason::Expired, "qf.in", &["ka"], 10),
        false,
    );
    dead_letter(
        &mut p,
        &death("qf.B", DeathReason::Rejected, "", &["qf.B"], 20),
        false,
    );
    let xs = x_death(&p);
    assert_eq!(
        keys(&xs[0]),
        [
            "count",
            "exchange",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );
    assert_eq!(
        keys(&xs[1]),
        [
            "count",
            "reason",
            "queue",
            "time",
            "exchange",
            "routing-keys"
        ]
    );
    assert_eq!(
        summary(&p),
        [
            ("qf.B".into(), "rejected".into(), 1),
            ("qf.A".into(), "expired".into(), 1)
        ]
    );
    // The first-death headers are those of the first death, never touched again.
    assert_eq!(
        p.headers.as_ref().unwrap().get("x-first-death-queue"),
        Some(&s("qf.A"))
    );
}

#[test]
fn the_same_death_again_counts_up_and_keeps_its_first_time_and_keys() {
    let mut p = BasicProperties::default();
    dead_letter(
        &mut p,
        &death("qf.L", DeathReason::Rejected, "qf.in", &["kl"], 100),
        false,
    );
    dead_letter(
        &mut p,
        &death("qf.L", DeathReason::Rejected, "", &["qf.L"], 101),
        false,
    );
    let xs = x_death(&p);
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].get("count"), Some(&FieldValue::I64(2)));
    assert_eq!(xs[0].get("time"), Some(&FieldValue::Timestamp(100)));
    assert_eq!(xs[0].get("exchange"), Some(&s("qf.in")));
    assert_eq!(
        keys(&xs[0]),
        [
            "count",
            "exchange",
            "queue",
            "reason",
            "routing-keys",
            "time"
        ]
    );
}

#[test]
fn entries_are_regrouped_as_rabbitmq_does() {
    // Rejected in L, in M, in L: [L ×2, M ×1].
    let mut p = BasicProperties::default();
    for q in ["L", "M", "L"] {
        dead_letter(&mut p, &death(q, DeathReason::Rejected, "", &[q], 1), false);
    }
    assert_eq!(
        summary(&p),
        [
            ("L".into(), "rejected".into(), 2),
            ("M".into(), "rejected".into(), 1)
        ]
    );
    // Expired in T, rejected in T2, rejected in T: [T rejected, T expired, T2 rejected].
    let mut p = BasicProperties::default();
    dead_letter(
        &mut p,
        &death("T", DeathReason::Expired, "", &["T"], 1),
        false,
    );
    dead_letter(
        &mut p,
        &death("T2", DeathReason::Rejected, "", &["T2"], 2),
        false,
    );
    dead_letter(
        &mut p,
        &death("T", DeathReason::Rejected, "", &["T"], 3),
        false,
    );
    assert_eq!(
        summary(&p),
        [
            ("T".into(), "rejected".into(), 1),
            ("T".into(), "expired".into(), 1),
            ("T2".into(), "rejected".into(), 1)
        ]
    );
}

#[test]
fn a_publisher_made_x_death_that_is_not_an_array_is_replaced_without_first_death_headers() {
    let mut headers = FieldTable::new();
    headers.insert("x-death", s("garbage"));
    let mut p = BasicProperties {
        headers: Some(headers),
        ..BasicProperties::default()
    };
    dead_letter(
        &mut p,
        &death("q", DeathReason::Rejected, "", &["q"], 1),
        false,
    );
    assert_eq!(summary(&p), [("q".into(), "rejected".into(), 1)]);
    assert!(
        !p.headers
            .as_ref()
            .unwrap()
            .contains_key("x-first-death-queue")
    );
}

#[test]
fn headers_are_sorted_and_cc_goes_with_a_dead_letter_routing_key() {
    let mut headers = FieldTable::new();
    headers.insert("zz", s("1"));
    headers.insert("AA", s("2"));
    headers.insert("CC", FieldValue::Array(FieldArray(vec![s("k2")])));
    headers.insert("mm", s("3"));
    let base = BasicProperties {
        headers: Some(headers),
        ..BasicProperties::default()
    };
    let mut with_key = base.clone();
    dead_letter(
        &mut with_key,
        &death("q", DeathReason::Rejected, "x", &["k1", "k2"], 1),
        true,
    );
    assert_eq!(
        keys(with_key.headers.as_ref().unwrap()),
        [
            "AA",
            "mm",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
            "zz"
        ]
    );
    let mut without = base;
    dead_letter(
        &mut without,
        &death("q", DeathReason::Rejected, "x", &["k1", "k2"], 1),
        false,
    );
    assert!(without.headers.as_ref().unwrap().contains_key("CC"));
}

#[test]
fn a_cycle_is_dropped_unless_a_rejection_is_part_of_it() {
    // A → A by TTL: dropped at the first expiry.
    let mut p = BasicProperties::default();
    dead_letter(
        &mut p,
        &death("A", DeathReason::Expired, "", &["A"], 1),
        false,
    );
    assert!(is_cycle(&p, b"A"));
    assert!(!is_cycle(&p, b"B"));
    // A → B → A, all by TTL: dropped when it would reach A again.
    dead_letter(
        &mut p,
        &death("B", DeathReason::Expired, "", &["B"], 2),
        false,
    );
    assert!(is_cycle(&p, b"A"));
    // Reject loops never drop.
    let mut r = BasicProperties::default();
    dead_letter(
        &mut r,
        &death("A", DeathReason::Rejected, "", &["A"], 1),
        false,
    );
    assert!(!is_cycle(&r, b"A"));
    // Rejected in A, then expired in B back to A: the rejection stays in between, it goes on.
    dead_letter(
        &mut r,
        &death("B", DeathReason::Expired, "", &["B"], 2),
        false,
    );
    assert!(!is_cycle(&r, b"A"));
}
