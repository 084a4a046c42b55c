//! `x-consistent-hash`: each message goes to one bound destination, chosen by hashing its
//! routing key (or a header, or a property) onto a ring where each binding owns as many
//! buckets as its weight. The weight is the binding key, a positive integer, as in RabbitMQ's
//! plugin. Adding a binding moves only the keys that land in its new buckets.
//!
//! The hash differs from the plugin's (which uses Erlang's internal `phash2`), so a given key
//! may land on a different queue than in RabbitMQ; the distribution and the weights behave the
//! same. See docs/deviations.md.

use crate::hash::{SeededState, stable_hash};
use crate::{BindingRef, Destination, ExchangeType, RouteMessage, Router, RoutingError};
use bytes::BytesMut;
use warren_amqp_codec::{BasicProperties, ErlangBinary, FieldTable, FieldValue};

/// The `x-consistent-hash` exchange type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsistentHash;

/// What a consistent-hash exchange hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashOn {
    RoutingKey,
    Header(Vec<u8>),
    MessageId,
    CorrelationId,
    Timestamp,
}

enum Why {
    NotString(&'static str),
    Text(String),
}

fn hash_on(arguments: &FieldTable) -> Result<HashOn, Why> {
    let header = arguments.get("hash-header");
    let property = arguments.get("hash-property");
    match (header, property) {
        (Some(_), Some(_)) => Err(Why::Text(
            "hash-header and hash-property are mutually exclusive".to_owned(),
        )),
        (Some(FieldValue::LongStr(h)), None) => Ok(HashOn::Header(h.as_bytes().to_vec())),
        (Some(_), None) => Err(Why::NotString("hash-header")),
        (None, Some(FieldValue::LongStr(p))) => match p.as_bytes() {
            b"message_id" => Ok(HashOn::MessageId),
            b"correlation_id" => Ok(HashOn::CorrelationId),
            b"timestamp" => Ok(HashOn::Timestamp),
            other => Err(Why::Text(format!(
                "Unsupported property: {}",
                String::from_utf8_lossy(other)
            ))),
        },
        (None, Some(_)) => Err(Why::NotString("hash-property")),
        (None, None) => Ok(HashOn::RoutingKey),
    }
}

/// Parses a weight as Erlang's `list_to_integer` would (optional sign, digits, no bound),
/// then requires it to be positive.
fn weight(key: &[u8]) -> Result<u64, RoutingError> {
    let digits = key
        .strip_prefix(b"+")
        .or_else(|| key.strip_prefix(b"-"))
        .unwrap_or(key);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RoutingError::InvalidBinding(format!(
            "The binding key must be an integer: {}",
            ErlangBinary::new(key)
        )));
    }
    if key.starts_with(b"-") || digits.iter().all(|&d| d == b'0') {
        return Err(RoutingError::InvalidBinding(
            "The binding key must be greater than 0".to_owned(),
        ));
    }
    // Weights beyond 2^32 buy nothing; clamp so that sums cannot overflow.
    let w = std::str::from_utf8(digits)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    Ok(w.min(1 << 32))
}

impl ExchangeType for ConsistentHash {
    fn name(&self) -> &str {
        "x-consistent-hash"
    }

    fn validate_exchange(
        &self,
        exchange: &str,
        vhost: &str,
        arguments: &FieldTable,
    ) -> Result<(), RoutingError> {
        hash_on(arguments).map(|_| ()).map_err(|why| match why {
            // RabbitMQ's plugin crashes on a non-string value (541); we say what is wrong.
            Why::NotString(arg) => RoutingError::InvalidArgument(format!(
                "invalid type for arg '{arg}' in exchange '{exchange}' in vhost '{vhost}': expected longstr"
            )),
            Why::Text(text) => RoutingError::InvalidArgument(text),
        })
    }

    fn validate_binding(&self, key: &[u8], _arguments: &FieldTable) -> Result<(), RoutingError> {
        weight(key).map(|_| ())
    }

    fn router(&self, arguments: &FieldTable, _hasher: SeededState) -> Box<dyn Router> {
        Box::new(HashRing {
            hash_on: hash_on(arguments).unwrap_or(HashOn::RoutingKey),
            bindings: Vec::new(),
            cumulative: Vec::new(),
        })
    }
}

#[derive(Debug)]
struct HashRing {
    hash_on: HashOn,
    /// Bindings in the order they were added: destination, key, weight.
    bindings: Vec<(Destination, Box<[u8]>, u64)>,
    /// Running sum of the weights: binding `i` owns buckets `cumulative[i-1]..cumulative[i]`.
    cumulative: Vec<u64>,
}

impl HashRing {
    fn rebuild(&mut self) {
        self.cumulative.clear();
        let mut total = 0u64;
        for (_, _, w) in &self.bindings {
            total = total.saturating_add(*w);
            self.cumulative.push(total);
        }
    }

    /// The octets to hash, or None when the message lacks the header or property.
    fn value(&self, m: &RouteMessage<'_>, scratch: &mut BytesMut) -> Option<u64> {
        let p: &BasicProperties = m.properties;
        let octets: &[u8] = match &self.hash_on {
            HashOn::RoutingKey => m.routing_keys.first().copied().unwrap_or(&[]),
            HashOn::MessageId => p.message_id.as_ref()?.as_bytes(),
            HashOn::CorrelationId => p.correlation_id.as_ref()?.as_bytes(),
            HashOn::Timestamp => {
                scratch.extend_from_slice(&p.timestamp?.to_be_bytes());
                scratch
            }
            HashOn::Header(name) => {
                let headers = p.headers.as_ref()?;
                let v = headers
                    .iter()
                    .find(|(k, _)| k.as_bytes() == name.as_slice())?
                    .1;
                match v {
                    FieldValue::LongStr(s) => s.as_bytes(),
                    FieldValue::Bytes(b) => b,
                    other => {
                        let mut t = FieldTable::new();
                        t.push(warren_amqp_codec::ShortStr::new(), other.clone());
                        t.encode_entries(scratch);
                        scratch
                    }
                }
            }
        };
        Some(stable_hash(octets))
    }
}

/// Lamping and Veach's jump consistent hash: a bucket in `0..buckets`.
fn jump_consistent_hash(mut key: u64, buckets: u64) -> u64 {
    let (mut b, mut j) = (0u64, 0u64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let r = ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / r)) as u64;
    }
    b
}

impl Router for HashRing {
    fn bind(&mut self, b: BindingRef<'_>) {
        // The topology validated the key before binding; an invalid one cannot get here.
        let w = weight(b.key).unwrap_or(1);
        self.bindings.push((b.destination, b.key.into(), w));
        self.rebuild();
    }

    fn unbind(&mut self, b: BindingRef<'_>) {
        if let Some(pos) = self
            .bindings
            .iter()
            .position(|(d, k, _)| *d == b.destination && **k == *b.key)
        {
            self.bindings.remove(pos);
            self.rebuild();
        }
    }

    fn route(&self, m: &RouteMessage<'_>, out: &mut Vec<Destination>) {
        let Some(&total) = self.cumulative.last() else {
            return;
        };
        let mut scratch = BytesMut::new();
        // A message without the header or property hashes as the empty value: every such
        // message goes to the same destination.
        let h = self
            .value(m, &mut scratch)
            .unwrap_or_else(|| stable_hash(b""));
        let bucket = jump_consistent_hash(h, total);
        let i = self.cumulative.partition_point(|&c| c <= bucket);
        if let Some((d, _, _)) = self.bindings.get(i) {
            out.push(*d);
        }
    }

    fn len(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_like_list_to_integer() {
        assert_eq!(weight(b"1"), Ok(1));
        assert_eq!(weight(b"007"), Ok(7));
        assert_eq!(weight(b"+3"), Ok(3));
        assert!(weight(b"0").is_err());
        assert!(weight(b"-1").is_err());
        assert!(weight(b"").is_err());
        assert!(weight(b"1.5").is_err());
        assert!(weight(b" 1").is_err());
        assert_eq!(weight(b"99999999999999999999"), Ok(1 << 32));
    }

    #[test]
    fn jump_hash_stays_in_range_and_moves_little() {
        for key in 0..2000u64 {
            let k = stable_hash(&key.to_le_bytes());
            let a = jump_consistent_hash(k, 10);
            let b = jump_consistent_hash(k, 11);
            assert!(a < 10 && b < 11);
            // Growing the ring only moves keys into the new bucket.
            assert!(a == b || b == 10);
        }
    }
}
