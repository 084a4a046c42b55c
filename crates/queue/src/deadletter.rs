//! Dead-lettering as RabbitMQ 3.10 writes it: the `x-death` header and `x-first-death-*`,
//! what happens to `expiration` and `CC`, which keys the dead letter is routed with, and the
//! cycle rule. The rules and their evidence are in `docs/design/queue-features.md` (§1, §2).
//!
//! Pure functions over the message's properties: the broker decides when a message dies
//! (the queue reports it as [`crate::Dead`]) and routes the dead letter.

use crate::DeathReason;
use warren_amqp_codec::{BasicProperties, FieldArray, FieldTable, FieldValue, LongStr, ShortStr};

/// One death, as `x-death` records it.
#[derive(Debug, Clone)]
pub struct Death<'a> {
    /// The queue the message died in.
    pub queue: &'a [u8],
    /// Why.
    pub reason: DeathReason,
    /// The exchange the message was published to (for a dead letter: its previous DLX).
    pub exchange: &'a [u8],
    /// The keys it was routed with: the publish routing key, then the `CC` keys (not `BCC`).
    pub routing_keys: Vec<&'a [u8]>,
    /// When, in whole seconds since the epoch.
    pub time: u64,
}

fn text(b: &[u8]) -> FieldValue {
    FieldValue::LongStr(LongStr::from(b.to_vec()))
}

fn octets(v: &FieldValue) -> Option<&[u8]> {
    match v {
        FieldValue::LongStr(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn sorted(t: &FieldTable) -> FieldTable {
    let mut pairs: Vec<(ShortStr, FieldValue)> =
        t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs.into_iter().collect()
}

/// The (queue, reason) of an `x-death` entry; `None` for an element that is not a table.
type Pair = Option<(Option<Vec<u8>>, Option<Vec<u8>>)>;

/// A new `x-death` entry, in RabbitMQ's first-written field order.
fn entry(death: &Death<'_>, original_expiration: Option<&ShortStr>) -> FieldTable {
    let mut e = FieldTable::new();
    e.insert("count", FieldValue::I64(1));
    e.insert("reason", text(death.reason.as_str().as_bytes()));
    e.insert("queue", text(death.queue));
    e.insert("time", FieldValue::Timestamp(death.time));
    e.insert("exchange", text(death.exchange));
    e.insert(
        "routing-keys",
        FieldValue::Array(FieldArray(
            death.routing_keys.iter().map(|k| text(k)).collect(),
        )),
    );
    if let Some(x) = original_expiration {
        e.insert("original-expiration", text(x.as_bytes()));
    }
    e
}

fn same_death(e: &FieldTable, death: &Death<'_>) -> bool {
    e.get("queue").and_then(octets) == Some(death.queue)
        && e.get("reason").and_then(octets) == Some(death.reason.as_str().as_bytes())
}

/// The entries of an `x-death` array as RabbitMQ regroups them before an update: with two or
/// more, one per (queue, reason) (the first of each; a missing `count` becomes the number of
/// entries of that pair), in reverse order; a shorter array stays as it is.
fn regroup(items: Vec<FieldValue>) -> Vec<FieldValue> {
    if items.len() < 2 {
        return items;
    }
    let key = |v: &FieldValue| -> Pair {
        match v {
            FieldValue::Table(t) => Some((
                t.get("queue").and_then(octets).map(<[u8]>::to_vec),
                t.get("reason").and_then(octets).map(<[u8]>::to_vec),
            )),
            _ => None,
        }
    };
    let mut kept: Vec<(Pair, FieldValue, i64)> = Vec::new();
    for v in items {
        let k = key(&v);
        match kept.iter_mut().find(|(kk, _, _)| k.is_some() && *kk == k) {
            Some((_, _, n)) => *n += 1,
            None => kept.push((k, v, 1)),
        }
    }
    kept.into_iter()
        .rev()
        .map(|(_, v, n)| match v {
            FieldValue::Table(mut t) if !t.contains_key("count") => {
                let mut with = FieldTable::new();
                with.insert("count", FieldValue::I64(n));
                for (k, v) in t.iter() {
                    with.push(k.clone(), v.clone());
                }
                t = with;
                FieldValue::Table(t)
            }
            other => other,
        })
        .collect()
}

/// Turns a message's properties into its dead letter's: updates `x-death` (and adds
/// `x-first-death-*` on a first death), removes `expiration` (recording it as
/// `original-expiration`), removes `CC` when the queue has a dead-letter routing key, and
/// sorts the headers by key, all as RabbitMQ 3.10 does.
pub fn dead_letter(props: &mut BasicProperties, death: &Death<'_>, has_dlx_routing_key: bool) {
    let expiration = props.expiration.take();
    let mut headers = props.headers.take().unwrap_or_default();
    let first = !headers.contains_key("x-death");
    let new_x_death = match headers.remove("x-death") {
        Some(FieldValue::Array(FieldArray(items))) => {
            let mut items = regroup(items);
            let found = items
                .iter()
                .position(|v| matches!(v, FieldValue::Table(t) if same_death(t, death)));
            let head = match found.map(|i| items.remove(i)) {
                Some(FieldValue::Table(t)) => {
                    let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
                    let mut t = t;
                    t.insert("count", FieldValue::I64(count.saturating_add(1)));
                    sorted(&t)
                }
                _ => sorted(&entry(death, expiration.as_ref())),
            };
            let mut out = vec![FieldValue::Table(head)];
            out.extend(items);
            out
        }
        // Absent, or not an array (RabbitMQ logs and resets it).
        _ => vec![FieldValue::Table(entry(death, expiration.as_ref()))],
    };
    headers.insert("x-death", FieldValue::Array(FieldArray(new_x_death)));
    if first {
        headers.insert("x-first-death-exchange", text(death.exchange));
        headers.insert("x-first-death-queue", text(death.queue));
        headers.insert(
            "x-first-death-reason",
            text(death.reason.as_str().as_bytes()),
        );
    }
    if has_dlx_routing_key {
        headers.remove("CC");
    }
    props.headers = Some(sorted(&headers));
}

/// RabbitMQ's cycle rule, for a dead letter (its headers already updated) about to reach
/// `queue`: it is dropped there if `queue` appears in its `x-death` and no death up to that
/// entry (from the most recent) was a rejection. A cycle through a rejection goes on.
pub fn is_cycle(props: &BasicProperties, queue: &[u8]) -> bool {
    let Some(FieldValue::Array(FieldArray(items))) =
        props.headers.as_ref().and_then(|h| h.get("x-death"))
    else {
        return false;
    };
    for v in items {
        let FieldValue::Table(t) = v else {
            continue;
        };
        if t.get("reason").and_then(octets) == Some(b"rejected") {
            return false;
        }
        if t.get("queue").and_then(octets) == Some(queue) {
            return true;
        }
    }
    false
}
