//! A published message, shared by every queue it reaches.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use warren_amqp_codec::{BasicProperties, ShortStr};
use warren_queue::Payload;
use warren_store::MessageRef;

/// Bodies up to this size are copied out of the read buffer they arrived in, so that a
/// message kept in a queue does not pin the whole (larger) block it was read into and the
/// memory gauge counts what is really held. Larger bodies span several frames, which the
/// codec assembles into an allocation of their own.
const COPY_BELOW: usize = 132 * 1024;

/// The memory messages hold, counted as they are created and dropped; the memory alarm
/// compares it with the high watermark.
#[derive(Debug, Default)]
pub(crate) struct MemoryGauge {
    bytes: AtomicI64,
}

impl MemoryGauge {
    pub(crate) fn used(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }
}

/// A message as published: where it was sent, its properties and body.
///
/// The exchange name, routing key, properties (encoded, as they go on the wire) and a small
/// body share one allocation: nothing points back into the connection's read buffer, so a
/// message kept in a queue pins no more than its own octets, and a delivery copies the
/// properties instead of encoding them again.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    /// Property flags and list, encoded.
    pub(crate) properties: Bytes,
    pub(crate) body: Bytes,
    /// Delivery mode 2: kept across restarts when it reaches a durable queue.
    pub(crate) persistent: bool,
    /// The `priority` property (0 without one).
    priority: u8,
    /// The `expiration` property: its own time to live in milliseconds.
    ttl: Option<u64>,
    /// Where it is in the message store, once written there.
    stored: OnceLock<MessageRef>,
    /// For a message read back from a queue's spill: the reference under which that queue
    /// holds it in the store (0: none).
    read_for: AtomicU64,
    /// Persistent, but the store could not take it (too large): its publisher gets a nack.
    refused: std::sync::atomic::AtomicBool,
    /// For a message read back from the store: when it was first written there (wall clock,
    /// milliseconds since the epoch; 0: unknown, or a new message).
    first_stored: u64,
    weight: i64,
    gauge: Arc<MemoryGauge>,
}

impl Message {
    pub(crate) fn new(
        exchange: &ShortStr,
        routing_key: &ShortStr,
        properties: &BasicProperties,
        body: Bytes,
        gauge: &Arc<MemoryGauge>,
    ) -> Arc<Self> {
        let inline = body.len() < COPY_BELOW;
        let mut head = BytesMut::with_capacity(
            exchange.len() + routing_key.len() + 32 + if inline { body.len() } else { 0 },
        );
        head.extend_from_slice(exchange.as_bytes());
        head.extend_from_slice(routing_key.as_bytes());
        properties.encode(&mut head);
        let props_end = head.len();
        if inline {
            head.extend_from_slice(&body);
        }
        let head = head.freeze();
        let (e, r) = (exchange.len(), exchange.len() + routing_key.len());
        let body = if inline {
            head.slice(props_end..)
        } else {
            body
        };
        let weight = (head.len() + if inline { 0 } else { body.len() } + 160) as i64;
        gauge.bytes.fetch_add(weight, Ordering::Relaxed);
        Arc::new(Self {
            // Both came from short strings, so they fit.
            exchange: ShortStr::from_bytes(head.slice(..e)).unwrap_or_default(),
            routing_key: ShortStr::from_bytes(head.slice(e..r)).unwrap_or_default(),
            properties: head.slice(r..props_end),
            body,
            persistent: properties.delivery_mode == Some(2),
            priority: properties.priority.unwrap_or(0),
            // Checked when published (an invalid expiration is refused with 406).
            ttl: properties
                .expiration
                .as_ref()
                .and_then(|e| warren_queue::declare::check_expiration(e.as_bytes()).ok()),
            stored: OnceLock::new(),
            read_for: AtomicU64::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
            first_stored: 0,
            weight,
            gauge: gauge.clone(),
        })
    }

    /// Its id in the message store (0: not stored).
    pub(crate) fn stored_id(&self) -> u64 {
        self.stored.get().map_or(0, |r| r.id)
    }

    /// Where it is in the message store, if written there.
    pub(crate) fn stored(&self) -> Option<MessageRef> {
        self.stored.get().copied()
    }

    pub(crate) fn set_stored(&self, at: MessageRef) {
        let _ = self.stored.set(at);
    }

    /// The store refused it (too large): not kept, its confirm is a nack.
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub(crate) fn set_refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// The queue reference this message was read back for (0: none).
    pub(crate) fn read_for(&self) -> u64 {
        self.read_for.load(Ordering::Acquire)
    }

    pub(crate) fn set_read_for(&self, queue_ref: u64) {
        self.read_for.store(queue_ref, Ordering::Release);
    }

    /// The message as the store keeps it (`docs/design/store.md`): version 2, when it was
    /// first stored (wall clock, milliseconds since the epoch, 64 bits: a message's TTL counts
    /// from then after a restart), the exchange and routing key (one length octet each), the
    /// encoded properties (a 32-bit length), then the body. Version 1 lacks the time.
    pub(crate) fn encode_stored(&self, out: &mut Vec<u8>) {
        out.push(2);
        let first = if self.first_stored != 0 {
            self.first_stored
        } else {
            wall_ms()
        };
        out.extend_from_slice(&first.to_le_bytes());
        out.push(self.exchange.len() as u8);
        out.extend_from_slice(self.exchange.as_bytes());
        out.push(self.routing_key.len() as u8);
        out.extend_from_slice(self.routing_key.as_bytes());
        out.extend_from_slice(&(self.properties.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.properties);
        out.extend_from_slice(&self.body);
    }

    /// A message read back from the store; `None` if the octets are not a stored message.
    pub(crate) fn from_stored(
        data: &[u8],
        at: MessageRef,
        gauge: &Arc<MemoryGauge>,
    ) -> Option<Arc<Self>> {
        let (&version, rest) = data.split_first()?;
        let (first_stored, rest) = match version {
            1 => (0, rest),
            2 => (
                u64::from_le_bytes(rest.get(..8)?.try_into().ok()?),
                rest.get(8..)?,
            ),
            _ => return None,
        };
        let (&xl, rest) = rest.split_first()?;
        let exchange = rest.get(..usize::from(xl))?;
        let rest = rest.get(usize::from(xl)..)?;
        let (&kl, rest) = rest.split_first()?;
        let key = rest.get(..usize::from(kl))?;
        let rest = rest.get(usize::from(kl)..)?;
        let pl = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let props = Bytes::copy_from_slice(rest.get(4..4 + pl)?);
        let body = rest.get(4 + pl..)?;
        let properties = BasicProperties::decode_encoded(&props).ok()?;
        let exchange = ShortStr::from_bytes(Bytes::copy_from_slice(exchange)).ok()?;
        let key = ShortStr::from_bytes(Bytes::copy_from_slice(key)).ok()?;
        let mut m = Self::new(
            &exchange,
            &key,
            &properties,
            Bytes::copy_from_slice(body),
            gauge,
        );
        if let Some(inner) = Arc::get_mut(&mut m) {
            inner.first_stored = first_stored;
        }
        m.set_stored(at);
        Some(m)
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        self.gauge.bytes.fetch_sub(self.weight, Ordering::Relaxed);
    }
}

impl Payload for Message {
    fn body_len(&self) -> usize {
        self.body.len()
    }
    fn priority(&self) -> u8 {
        self.priority
    }
    fn ttl(&self) -> Option<u64> {
        self.ttl
    }
    fn age(&self) -> u64 {
        match self.first_stored {
            0 => 0,
            t => wall_ms().saturating_sub(t),
        }
    }
}

/// The wall clock: milliseconds since the epoch (0 if the clock is before it).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> MessageRef {
        MessageRef {
            id: 7,
            segment: 1,
            offset: 16,
            record: 0,
        }
    }

    #[test]
    fn stored_messages_of_both_versions_read_back() {
        let gauge = Arc::new(MemoryGauge::default());
        let props = BasicProperties {
            delivery_mode: Some(2),
            expiration: Some("60000".into()),
            ..BasicProperties::default()
        };
        let m = Message::new(
            &ShortStr::from("x"),
            &ShortStr::from("k"),
            &props,
            Bytes::from_static(b"body"),
            &gauge,
        );
        let mut v2 = Vec::new();
        m.encode_stored(&mut v2);
        assert_eq!(v2.first(), Some(&2));
        let back = Message::from_stored(&v2, at(), &gauge).unwrap();
        assert_eq!(
            (back.exchange.as_bytes(), back.routing_key.as_bytes()),
            (&b"x"[..], &b"k"[..])
        );
        assert_eq!(
            (&back.body[..], back.persistent, back.ttl),
            (&b"body"[..], true, Some(60000))
        );
        assert!(back.first_stored > 0 && back.age() < 60_000);
        // Written again (e.g. paged out after a restart), it keeps its first time.
        let mut again = Vec::new();
        back.encode_stored(&mut again);
        assert_eq!(again.get(1..9), v2.get(1..9));
        // Version 1, as written before the time was added: same layout without it; its TTL
        // counts from now.
        let mut v1 = vec![1];
        v1.extend_from_slice(v2.get(9..).unwrap());
        let old = Message::from_stored(&v1, at(), &gauge).unwrap();
        assert_eq!(
            (&old.body[..], old.first_stored, old.age()),
            (&b"body"[..], 0, 0)
        );
        // Anything else is not a stored message.
        for bad in [&[3u8][..], &[2, 0, 0], &[], &[1, 5, b'x']] {
            assert!(Message::from_stored(bad, at(), &gauge).is_none(), "{bad:?}");
        }
        // A stored time in the future (a clock set back) gives age 0, not a panic.
        let mut future = v2.clone();
        future.splice(1..9, u64::MAX.to_le_bytes());
        assert_eq!(
            Message::from_stored(&future, at(), &gauge).unwrap().age(),
            0
        );
    }
}
