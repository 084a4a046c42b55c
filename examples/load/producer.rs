//! Producers: pipelined `basic.publish`, one connection and one task each.
//!
//! Every message is a `basic.publish` method frame, a content header and the body frames.
//! The first two never change for a given routing key, so they are encoded once, at start,
//! with the codec's encoders ([`Templates`]); per message the producer copies that prefix,
//! writes the 16-octet stamp (see [`stamp`]) into its body buffer, and encodes the body
//! frames. A batch of messages (up to [`BATCH_BYTES`]) goes out in one write.
//!
//! What limits a batch: the confirm window (`-c`: messages published and not yet confirmed),
//! the rate limiter (`-r`), `--pmessages`, `connection.blocked`, and the write buffer, which
//! must drain below [`LOW_WATER`] before more is encoded, so that the timestamp in a message
//! is taken close to when it leaves.

use crate::client::{CH, CLOSE_TIMEOUT, ClientError, Conn, DRAIN_CLOSE_TIMEOUT, Result};
use crate::now_ns;
use crate::rate::RateLimiter;
use crate::stats::Stats;
use crate::topology::MatchMix;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;
use warren_amqp_codec::frame::{self, FRAME_OVERHEAD};
use warren_amqp_codec::{
    BasicProperties, BasicPublish, ConfirmSelect, ContentHeader, Frame, Method, ShortStr,
};

/// Octets of messages encoded per batch (at least one message).
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// More messages are encoded only while the write buffer holds less than this.
pub(crate) const LOW_WATER: usize = 16 * 1024;
/// The stamp at the start of every body: send time, run tag, producer id, sequence number.
pub(crate) const STAMP_LEN: usize = 16;

/// Writes the stamp: nanoseconds since the process's clock origin (big-endian u64), the
/// run's tag (u16, see `run_tag` in `main.rs`), the producer id (u16) and the message's
/// sequence number (low 32 bits). Bodies shorter than the stamp are left alone.
pub(crate) fn stamp(body: &mut [u8], sent_ns: u64, run: u16, producer: u16, seq: u64) {
    if let Some(s) = body.get_mut(..STAMP_LEN) {
        s[..8].copy_from_slice(&sent_ns.to_be_bytes());
        s[8..10].copy_from_slice(&run.to_be_bytes());
        s[10..12].copy_from_slice(&producer.to_be_bytes());
        s[12..16].copy_from_slice(&(seq as u32).to_be_bytes());
    }
}

/// Reads the send time back from a body's first octets, if it is long enough and was
/// stamped by this run: times from another process count from another clock origin, so a
/// message left in a queue by an earlier run has no meaningful latency.
pub(crate) fn stamped_ns(body: &[u8], run: u16) -> Option<u64> {
    let s = body.get(..STAMP_LEN)?;
    let ts: [u8; 8] = s.get(..8)?.try_into().ok()?;
    let tag: [u8; 2] = s.get(8..10)?.try_into().ok()?;
    (u16::from_be_bytes(tag) == run).then_some(u64::from_be_bytes(ts))
}

/// What one producer does.
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    /// Producer number, written into every message (low 16 bits).
    pub(crate) id: u32,
    /// Body size in octets (at least [`STAMP_LEN`]).
    pub(crate) size: usize,
    /// Confirm window; 0: no confirms.
    pub(crate) confirm: u64,
    /// Publish with delivery mode 2.
    pub(crate) persistent: bool,
    /// Publish with the mandatory flag.
    pub(crate) mandatory: bool,
    /// Messages per second; 0: as fast as possible.
    pub(crate) rate: f64,
    /// Messages to send in all; 0: no limit.
    pub(crate) limit: u64,
    /// Exchange to publish to.
    pub(crate) exchange: String,
    /// Routing keys that route, cycled through.
    pub(crate) hits: Vec<String>,
    /// Routing keys that do not route, cycled through (empty: all messages route).
    pub(crate) misses: Vec<String>,
    /// Queue copies a routed message makes.
    pub(crate) copies: u64,
    /// Fraction of messages that should route (with `misses`).
    pub(crate) match_fraction: f64,
}

/// Publisher-confirm bookkeeping: which delivery tags the broker has confirmed.
///
/// Tags `1..=upto` are all settled; `above[i]` says whether tag `upto + 1 + i` was settled on
/// its own (a broker confirms out of order when, say, unroutable messages are confirmed at
/// once and routed ones later). Each tag is pushed and popped once, so settling costs O(1)
/// per message whatever the order; the deque never holds more than the confirm window.
#[derive(Debug, Default)]
pub(crate) struct ConfirmTracker {
    upto: u64,
    above: VecDeque<bool>,
    /// How many `true`s `above` holds.
    singles: u64,
}

impl ConfirmTracker {
    /// Settles `tag` (and with `multiple`, every tag below it); returns how many tags this
    /// settled that were not settled before. Tags above `published` are ignored (0).
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool, published: u64) -> u64 {
        // "Multiple with tag zero" means everything outstanding (AMQP 0-9-1, basic.ack).
        let tag = if multiple && tag == 0 { published } else { tag };
        if tag > published || tag <= self.upto {
            return 0;
        }
        let idx = (tag - self.upto - 1) as usize;
        let newly = if multiple {
            let mut newly = 0;
            for _ in 0..=idx {
                match self.above.pop_front() {
                    Some(true) => self.singles -= 1,
                    Some(false) | None => newly += 1,
                }
            }
            self.upto = tag;
            newly
        } else {
            if self.above.len() <= idx {
                self.above.resize(idx + 1, false);
            }
            match self.above.get_mut(idx) {
                Some(settled @ false) => {
                    *settled = true;
                    self.singles += 1;
                    1
                }
                _ => 0,
            }
        };
        while self.above.front() == Some(&true) {
            self.above.pop_front();
            self.singles -= 1;
            self.upto += 1;
        }
        newly
    }

    /// Tags settled so far.
    pub(crate) fn settled(&self) -> u64 {
        self.upto + self.singles
    }
}

/// The pre-encoded method and header frames, one per routing key.
#[derive(Debug)]
struct Templates {
    hits: Vec<Bytes>,
    misses: Vec<Bytes>,
}

impl Templates {
    fn new(cfg: &ProducerConfig) -> Self {
        let props = BasicProperties {
            delivery_mode: Some(if cfg.persistent { 2 } else { 1 }),
            ..Default::default()
        };
        let header = ContentHeader::basic(cfg.size as u64, props);
        let exchange = ShortStr::from(cfg.exchange.clone());
        let encode = |key: &String| {
            let mut buf = BytesMut::new();
            let publish = BasicPublish {
                exchange: exchange.clone(),
                routing_key: ShortStr::from(key.clone()),
                mandatory: cfg.mandatory,
                ..Default::default()
            };
            frame::encode_method(&mut buf, CH, &publish.into());
            frame::encode_header(&mut buf, CH, &header);
            buf.freeze()
        };
        Self {
            hits: cfg.hits.iter().map(encode).collect(),
            misses: cfg.misses.iter().map(encode).collect(),
        }
    }
}

/// What one read's frames settled, added to the shared counters once per read.
#[derive(Debug, Default)]
struct Tally {
    confirmed: u64,
    nacked: u64,
    returned: u64,
}

/// A running producer.
#[derive(Debug)]
pub(crate) struct Producer {
    cfg: ProducerConfig,
    conn: Conn,
    stats: Arc<Stats>,
    templates: Templates,
    body: Vec<u8>,
    /// Octets per body frame.
    chunk: usize,
    /// Octets one message takes on the wire (for batch sizing).
    message_len: usize,
    mix: MatchMix,
    next_hit: usize,
    next_miss: usize,
    sent: u64,
    confirms: ConfirmTracker,
    rate: Option<RateLimiter>,
    blocked_since: Option<u64>,
    /// Skipping the content of a `basic.return`: header still to come, body octets left.
    returned_content: Option<(bool, u64)>,
    /// All `--pmessages` sent (and settled).
    done: bool,
    /// This run's tag, for the stamps.
    run: u16,
}

impl Producer {
    /// Sets up confirms (if asked) on an open connection.
    pub(crate) async fn new(
        cfg: ProducerConfig,
        mut conn: Conn,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        if cfg.confirm > 0 {
            conn.rpc(
                CH,
                ConfirmSelect::default().into(),
                "confirm.select-ok",
                |m| matches!(m, Method::ConfirmSelectOk(_)),
            )
            .await?;
        }
        if cfg.hits.is_empty() {
            return Err(ClientError::Protocol(format!(
                "producer {} has no routing key to publish with",
                cfg.id
            )));
        }
        let templates = Templates::new(&cfg);
        let chunk = match conn.frame_max as usize {
            0 => cfg.size.max(1),
            max => max.saturating_sub(FRAME_OVERHEAD).max(1),
        };
        let body_frames = cfg.size.div_ceil(chunk);
        let template_len = templates.hits.first().map_or(0, Bytes::len);
        Ok(Self {
            message_len: template_len + cfg.size + body_frames * FRAME_OVERHEAD,
            body: vec![0; cfg.size],
            chunk,
            mix: MatchMix::new(cfg.match_fraction),
            templates,
            conn,
            stats,
            cfg,
            next_hit: 0,
            next_miss: 0,
            sent: 0,
            confirms: ConfirmTracker::default(),
            rate: None,
            blocked_since: None,
            returned_content: None,
            done: false,
            run: crate::run_tag(),
        })
    }

    /// Publishes until stopped (after `--pmessages`, if given, it just waits) or until the
    /// broker closes the connection; then closes the connection.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let result = self.drive(&mut stop).await;
        self.set_blocked(false);
        let patience = if self.done {
            DRAIN_CLOSE_TIMEOUT
        } else {
            CLOSE_TIMEOUT
        };
        self.conn.shutdown(result.as_ref().err(), patience).await;
        result
    }

    async fn drive(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        if self.cfg.rate > 0.0 {
            self.rate = Some(RateLimiter::new(self.cfg.rate, now_ns()));
        }
        self.set_blocked(self.conn.blocked);
        loop {
            if stop.has_changed().unwrap_or(true) {
                return Ok(());
            }
            if self.conn.try_fill()? {
                self.input()?;
            }
            self.check_done();
            let now = now_ns();
            if self.conn.wbuf.len() < LOW_WATER {
                self.publish(now);
            }
            let flushed = self.conn.try_flush()?;
            self.check_done();
            if flushed && self.allowance(now) > 0 {
                // Flat out: the socket took everything and more may go. Let the runtime's
                // other tasks run, then go on without waiting.
                tokio::task::yield_now().await;
                continue;
            }
            let deadline = match &self.rate {
                Some(r) if flushed && !self.conn.blocked && self.room() > 0 => {
                    let at = r.ready_at(self.sent);
                    Some(tokio::time::Instant::from_std(crate::instant_at(at)))
                }
                _ => None,
            };
            // At a fixed rate with room in the confirm window, incoming confirms need not
            // wake the producer: they are read at the next batch, a millisecond or so later,
            // instead of one wake-up per confirm.
            let read = deadline.is_none() || self.room() <= self.rate_batch();
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                r = self.conn.wait(deadline, read) => r?,
            }
        }
    }

    /// Messages per rate-limited batch (0 without a rate).
    fn rate_batch(&self) -> u64 {
        self.rate.as_ref().map_or(0, RateLimiter::batch)
    }

    /// Messages the confirm window and `--pmessages` allow now (ignoring rate and blocking).
    fn room(&self) -> u64 {
        let mut room = u64::MAX;
        if self.cfg.confirm > 0 {
            let outstanding = self.sent.saturating_sub(self.confirms.settled());
            room = self.cfg.confirm.saturating_sub(outstanding);
        }
        if self.cfg.limit > 0 {
            room = room.min(self.cfg.limit - self.sent.min(self.cfg.limit));
        }
        room
    }

    /// Counts this producer as done once all `--pmessages` are written out and, with
    /// confirms, settled. The connection stays open until the run ends: closing it could
    /// drop messages the broker has not read yet (without confirms there is no knowing).
    fn check_done(&mut self) {
        if !self.done
            && self.cfg.limit > 0
            && self.sent >= self.cfg.limit
            && self.conn.wbuf.is_empty()
            && (self.cfg.confirm == 0 || self.confirms.settled() >= self.sent)
        {
            self.done = true;
            self.stats.producers_done.fetch_add(1, Relaxed);
        }
    }

    /// How many messages to publish at `now`: what blocking, the confirm window,
    /// `--pmessages` and the batch size allow and, at a fixed rate, what is due, but only
    /// once a whole rate batch is due (or all that is left): publishing every message the
    /// moment it is due would mean a write per message whenever something else (a confirm)
    /// wakes the producer up.
    fn allowance(&self, now: u64) -> u64 {
        if self.conn.blocked {
            return 0;
        }
        let by_size = (BATCH_BYTES / self.message_len.max(1)).max(1) as u64;
        let room = self.room();
        match &self.rate {
            None => room.min(by_size),
            Some(r) => {
                let due = r.due(self.sent, now);
                if due < r.batch().min(room) {
                    0
                } else {
                    due.min(room).min(by_size)
                }
            }
        }
    }

    /// Encodes a batch of [`Producer::allowance`] messages.
    fn publish(&mut self, now: u64) {
        if let Some(r) = &mut self.rate {
            r.forgive(self.sent, now);
        }
        let n = self.allowance(now);
        if n == 0 {
            return;
        }
        let mut routed = 0;
        let buf = &mut self.conn.wbuf;
        buf.reserve(n as usize * self.message_len);
        for _ in 0..n {
            let template = if self.templates.misses.is_empty() || self.mix.next_matches() {
                routed += self.cfg.copies;
                let t = &self.templates.hits[self.next_hit];
                self.next_hit = (self.next_hit + 1) % self.templates.hits.len();
                t
            } else {
                let t = &self.templates.misses[self.next_miss];
                self.next_miss = (self.next_miss + 1) % self.templates.misses.len();
                t
            };
            buf.extend_from_slice(template);
            self.sent += 1;
            stamp(&mut self.body, now, self.run, self.cfg.id as u16, self.sent);
            for part in self.body.chunks(self.chunk) {
                frame::encode_body(buf, CH, part);
            }
        }
        self.stats.sent.fetch_add(n, Relaxed);
        self.stats.routed.fetch_add(routed, Relaxed);
    }

    /// Handles every complete frame in the read buffer.
    fn input(&mut self) -> Result<()> {
        let mut tally = Tally::default();
        loop {
            // By reference into the result: binding by value copied the frame.
            match self.conn.next_frame() {
                Ok(Some(ref frame)) => {
                    if !self.conn.common(frame)? {
                        self.frame(frame, &mut tally)?;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if tally.confirmed > 0 {
            self.stats.confirmed.fetch_add(tally.confirmed, Relaxed);
        }
        if tally.nacked > 0 {
            self.stats.nacked.fetch_add(tally.nacked, Relaxed);
        }
        if tally.returned > 0 {
            self.stats.returned.fetch_add(tally.returned, Relaxed);
        }
        self.set_blocked(self.conn.blocked);
        Ok(())
    }

    /// Handles one frame that [`Conn::common`] left.
    fn frame(&mut self, frame: &Frame, tally: &mut Tally) -> Result<()> {
        match frame {
            Frame::Method { method, .. } => match method {
                Method::BasicAck(a) => {
                    tally.confirmed += self.confirms.settle(a.delivery_tag, a.multiple, self.sent);
                }
                Method::BasicNack(n) => {
                    tally.nacked += self.confirms.settle(n.delivery_tag, n.multiple, self.sent);
                }
                Method::BasicReturn(_) => {
                    tally.returned += 1;
                    self.returned_content = Some((true, 0));
                }
                Method::ChannelFlow(f) => {
                    // Long gone from RabbitMQ, but cheap to honour.
                    self.conn.push(
                        CH,
                        &warren_amqp_codec::ChannelFlowOk { active: f.active }.into(),
                    );
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {} on a publishing channel",
                        other.name()
                    )));
                }
            },
            Frame::Header { header, .. } => match self.returned_content {
                Some((true, _)) if header.body_size > 0 => {
                    self.returned_content = Some((false, header.body_size));
                }
                Some((true, _)) => self.returned_content = None,
                _ => return Err(ClientError::Protocol("content header out of place".into())),
            },
            Frame::Body { payload, .. } => match self.returned_content {
                Some((false, left)) if payload.len() as u64 <= left => {
                    let left = left - payload.len() as u64;
                    self.returned_content = (left > 0).then_some((false, left));
                }
                _ => return Err(ClientError::Protocol("content body out of place".into())),
            },
            Frame::Heartbeat => {}
        }
        Ok(())
    }

    /// Keeps the shared blocked count and blocked time in step with `blocked`.
    fn set_blocked(&mut self, blocked: bool) {
        match (blocked, self.blocked_since) {
            (true, None) => {
                self.blocked_since = Some(now_ns());
                self.stats.blocked_now.fetch_add(1, Relaxed);
            }
            (false, Some(since)) => {
                self.blocked_since = None;
                self.stats.blocked_now.fetch_sub(1, Relaxed);
                self.stats
                    .blocked_ns
                    .fetch_add(now_ns().saturating_sub(since), Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut body = vec![0u8; 20];
        stamp(&mut body, 0x0102_0304_0506_0708, 0xabcd, 7, (1 << 32) + 9);
        assert_eq!(stamped_ns(&body, 0xabcd), Some(0x0102_0304_0506_0708));
        assert_eq!(&body[8..16], &[0xab, 0xcd, 0, 7, 0, 0, 0, 9]);
        assert_eq!(&body[16..], &[0; 4]);
        // Another run's stamp, or too short a body: no time.
        assert_eq!(stamped_ns(&body, 0xabce), None);
        assert_eq!(stamped_ns(&body[..15], 0xabcd), None);
        // Too short to stamp: left alone, no panic.
        let mut short = vec![0u8; 3];
        stamp(&mut short, 1, 1, 1, 1);
        assert_eq!(short, [0; 3]);
    }

    #[test]
    fn confirms_in_order_and_multiple() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(1, false, 10), 1);
        assert_eq!(t.settle(5, true, 10), 4);
        assert_eq!(t.settled(), 5);
        // Duplicates and stale multiples settle nothing.
        assert_eq!(t.settle(3, false, 10), 0);
        assert_eq!(t.settle(4, true, 10), 0);
        // Beyond what was published: ignored.
        assert_eq!(t.settle(11, true, 10), 0);
        assert_eq!(t.settle(10, true, 10), 5);
        assert_eq!(t.settled(), 10);
        // Multiple with tag 0: all outstanding.
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(2, false, 7), 1);
        assert_eq!(t.settle(0, true, 7), 6);
        assert_eq!(t.settled(), 7);
        assert_eq!(t.settle(0, false, 7), 0);
    }

    #[test]
    fn confirms_out_of_order() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(3, false, 10), 1);
        assert_eq!(t.settle(5, false, 10), 1);
        assert_eq!(t.settle(5, false, 10), 0);
        assert_eq!(t.settled(), 2);
        // 1 and 2 close the gap up to 3.
        assert_eq!(t.settle(2, true, 10), 2);
        assert_eq!(t.settled(), 4);
        assert_eq!(t.upto, 3);
        // A multiple over the single 5 counts 4 and 6 only.
        assert_eq!(t.settle(6, true, 10), 2);
        assert_eq!(t.settled(), 6);
        assert!(t.above.is_empty());
        assert_eq!(t.upto, 6);
        assert_eq!(t.settle(8, false, 10), 1);
        assert_eq!(t.settle(7, false, 10), 1);
        assert_eq!(t.upto, 8);
        assert_eq!(t.settled(), 8);
    }

    /// Against a naive model (a set of settled tags), in a scrambled order with multiples.
    #[test]
    fn confirms_match_a_model() {
        let published = 2_000u64;
        let mut t = ConfirmTracker::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 7u64;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let tag = x % (published + 5);
            let multiple = x % 11 == 0;
            let before = model.len() as u64;
            if multiple {
                let top = if tag == 0 { published } else { tag };
                if top <= published {
                    model.extend(1..=top);
                }
            } else if (1..=published).contains(&tag) {
                model.insert(tag);
            }
            let newly = t.settle(tag, multiple, published);
            assert_eq!(
                newly,
                model.len() as u64 - before,
                "tag {tag} multiple {multiple}"
            );
            assert_eq!(t.settled(), model.len() as u64);
        }
    }
}
