//! A published message, shared by every queue it reaches.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use warren_amqp_codec::{BasicProperties, ShortStr};
use warren_queue::Payload;

/// Bodies up to this size are copied out of the read buffer they arrived in, so that a small
/// message kept in a queue does not pin the whole (larger) block it was read into.
const COPY_BELOW: usize = 4096;

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
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) exchange: ShortStr,
    pub(crate) routing_key: ShortStr,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Bytes,
    weight: i64,
    gauge: Arc<MemoryGauge>,
}

impl Message {
    pub(crate) fn new(
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: BasicProperties,
        body: Bytes,
        gauge: &Arc<MemoryGauge>,
    ) -> Arc<Self> {
        let body = if body.len() < COPY_BELOW {
            Bytes::copy_from_slice(&body)
        } else {
            body
        };
        let weight = (body.len() + exchange.len() + routing_key.len() + 256) as i64;
        gauge.bytes.fetch_add(weight, Ordering::Relaxed);
        Arc::new(Self {
            exchange,
            routing_key,
            properties,
            body,
            weight,
            gauge: gauge.clone(),
        })
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
}
