//! Consumers: one connection and one task each, consuming one or more queues on one channel.
//!
//! Per read wake-up a consumer decodes every complete frame in its buffer, takes one clock
//! reading for the whole batch, computes each message's latency from the stamp in its body,
//! encodes the acks into the write buffer (`basic.ack` per message, or with `multiple` every
//! `--multi-ack-every` messages; none with `--autoack`; with `--reject`, `basic.reject` with
//! `requeue=false` per message, or `basic.nack` with `multiple` and `requeue=false` every N),
//! and writes them in one go. The shared
//! counters and histogram are touched once per batch. With `--cmessages` a consumer stops
//! after the read that brings it to the count, once it acknowledged everything it received.

use crate::client::{CH, CLOSE_TIMEOUT, ClientError, Conn, Result};
use crate::now_ns;
use crate::producer::stamped_ns;
use crate::stats::Stats;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{oneshot, watch};
use warren_amqp_codec::{
    BasicAck, BasicConsume, BasicNack, BasicQos, BasicReject, Frame, Method, ShortStr, frame,
};

/// What one consumer does.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    /// Consumer number (for consumer tags).
    pub(crate) id: usize,
    /// Queues to consume.
    pub(crate) queues: Vec<String>,
    /// Prefetch count (`basic.qos`); 0: unlimited.
    pub(crate) qos: u16,
    /// Consume without acknowledgements.
    pub(crate) autoack: bool,
    /// Refuse messages (requeue=false) instead of acknowledging them.
    pub(crate) reject: bool,
    /// Acknowledge with `multiple` every this many messages (1: each message on its own).
    pub(crate) ack_every: u64,
    /// Messages after which to stop (0: no limit).
    pub(crate) limit: u64,
}

/// Where a consumer is in the content of the current delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Between messages.
    Idle,
    /// After `basic.deliver`, the header is next.
    Header,
    /// Body octets still to come; whether the stamp was read yet.
    Body { left: u64, stamped: bool },
}

/// The part of a consumer that turns frames into counts, latencies and acks; no I/O, so
/// that it can be tested on its own.
#[derive(Debug)]
pub(crate) struct Receiver {
    autoack: bool,
    reject: bool,
    ack_every: u64,
    content: Content,
    tag: u64,
    /// The delivery tag of the last message received whole.
    completed: u64,
    unacked: u64,
    /// Consumers whose `basic.consume-ok` arrived.
    pub(crate) consuming: usize,
    /// Messages completed in this batch.
    pub(crate) received: u64,
    /// Latencies (ns) of this batch.
    pub(crate) latencies: Vec<u64>,
    /// The run tag stamps must carry to count.
    run: u16,
}

impl Receiver {
    /// A receiver acking as configured, measuring messages stamped with `run`.
    pub(crate) fn new(autoack: bool, ack_every: u64, run: u16) -> Self {
        Self {
            autoack,
            reject: false,
            ack_every: ack_every.max(1),
            content: Content::Idle,
            tag: 0,
            completed: 0,
            unacked: 0,
            consuming: 0,
            received: 0,
            latencies: Vec::new(),
            run,
        }
    }

    /// Refuses messages (`requeue=false`) instead of acknowledging them.
    pub(crate) fn rejecting(mut self, reject: bool) -> Self {
        self.reject = reject;
        self
    }

    /// Acknowledges (or refuses) up to `tag`, with `multiple` or not.
    fn settle(&self, tag: u64, multiple: bool, out: &mut bytes::BytesMut) {
        let method: Method = match (self.reject, multiple) {
            (false, _) => BasicAck {
                delivery_tag: tag,
                multiple,
            }
            .into(),
            (true, false) => BasicReject {
                delivery_tag: tag,
                requeue: false,
            }
            .into(),
            (true, true) => BasicNack {
                delivery_tag: tag,
                multiple: true,
                requeue: false,
            }
            .into(),
        };
        frame::encode_method(out, CH, &method);
    }

    /// Handles one frame (already past [`Conn::common`]), received at `now` (ns); acks go
    /// into `out`.
    pub(crate) fn frame(
        &mut self,
        frame: &Frame,
        now: u64,
        out: &mut bytes::BytesMut,
    ) -> Result<()> {
        match (frame, self.content) {
            (Frame::Method { method, .. }, Content::Idle) => match method {
                Method::BasicDeliver(d) => {
                    self.tag = d.delivery_tag;
                    self.content = Content::Header;
                }
                Method::BasicConsumeOk(_) => self.consuming += 1,
                Method::BasicQosOk(_) | Method::BasicCancelOk(_) => {}
                Method::BasicCancel(c) => {
                    return Err(ClientError::Cancelled(c.consumer_tag.to_string()));
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {} on a consuming channel",
                        other.name()
                    )));
                }
            },
            (Frame::Header { header, .. }, Content::Header) => {
                if header.body_size == 0 {
                    self.complete(out);
                } else {
                    self.content = Content::Body {
                        left: header.body_size,
                        stamped: false,
                    };
                }
            }
            (Frame::Body { payload, .. }, Content::Body { left, stamped }) => {
                let len = payload.len() as u64;
                if len > left {
                    return Err(ClientError::Protocol(format!(
                        "body frame of {len} octets where {left} were left"
                    )));
                }
                if !stamped {
                    if let Some(sent) = stamped_ns(payload, self.run) {
                        if sent <= now {
                            self.latencies.push(now - sent);
                        }
                    }
                }
                if len == left {
                    self.complete(out);
                } else {
                    self.content = Content::Body {
                        left: left - len,
                        stamped: true,
                    };
                }
            }
            (Frame::Heartbeat, _) => {}
            (frame, state) => {
                return Err(ClientError::Protocol(format!(
                    "frame out of order in a delivery: {} while expecting {state:?}",
                    match frame {
                        Frame::Method { method, .. } => method.name(),
                        Frame::Header { .. } => "content header",
                        Frame::Body { .. } => "content body",
                        Frame::Heartbeat => "heartbeat",
                    }
                )));
            }
        }
        Ok(())
    }

    fn complete(&mut self, out: &mut bytes::BytesMut) {
        self.content = Content::Idle;
        self.completed = self.tag;
        self.received += 1;
        if self.autoack {
            return;
        }
        self.unacked += 1;
        if self.unacked >= self.ack_every {
            self.settle(self.tag, self.ack_every > 1, out);
            self.unacked = 0;
        }
    }

    /// Acknowledges (with `multiple`) the messages received whole that acking every N left
    /// unacknowledged.
    pub(crate) fn ack_rest(&mut self, out: &mut bytes::BytesMut) {
        if self.unacked > 0 {
            self.settle(self.completed, true, out);
            self.unacked = 0;
        }
    }
}

/// Sets up QoS and the consumers, then receives until stopped or until the broker closes
/// the connection; then closes it. `ready` fires once every `basic.consume-ok` is in.
pub(crate) async fn run(
    cfg: ConsumerConfig,
    mut conn: Conn,
    stats: Arc<Stats>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let result = drive(&cfg, &mut conn, &stats, ready, &mut stop).await;
    conn.shutdown(result.as_ref().err(), CLOSE_TIMEOUT).await;
    result
}

async fn drive(
    cfg: &ConsumerConfig,
    conn: &mut Conn,
    stats: &Stats,
    ready: oneshot::Sender<()>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    if !cfg.autoack && cfg.qos > 0 {
        let qos = BasicQos {
            prefetch_count: cfg.qos,
            ..Default::default()
        };
        conn.rpc(CH, qos.into(), "basic.qos-ok", |m| {
            matches!(m, Method::BasicQosOk(_))
        })
        .await?;
    }
    // Consumes are pipelined and their `consume-ok`s handled in the receive loop: with
    // several queues, deliveries from the first may arrive before the last `consume-ok`.
    for (i, q) in cfg.queues.iter().enumerate() {
        let consume = BasicConsume {
            queue: ShortStr::from(q.clone()),
            consumer_tag: ShortStr::from(format!("load-c{}-{i}", cfg.id)),
            no_ack: cfg.autoack,
            ..Default::default()
        };
        conn.push(CH, &consume.into());
    }
    conn.flush().await?;
    // Acks every N must not wait for more than the prefetch window holds.
    let ack_every = match cfg.qos {
        0 => cfg.ack_every,
        qos => cfg.ack_every.min(u64::from(qos)),
    };
    let mut rx = Receiver::new(cfg.autoack, ack_every, crate::run_tag()).rejecting(cfg.reject);
    let mut ready = Some(ready);
    let mut received = 0;
    loop {
        if stop.has_changed().unwrap_or(true) {
            return Ok(());
        }
        if conn.try_fill()? {
            receive(conn, &mut rx)?;
            if rx.received > 0 {
                stats.received.fetch_add(rx.received, Relaxed);
                received += rx.received;
                rx.received = 0;
            }
            stats.record_latencies(&rx.latencies);
            rx.latencies.clear();
            if rx.consuming == cfg.queues.len() {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            if ready.is_none() && cfg.limit > 0 && received >= cfg.limit {
                rx.ack_rest(&mut conn.wbuf);
                conn.flush().await?;
                stats.consumers_done.fetch_add(1, Relaxed);
                return Ok(());
            }
        }
        conn.try_flush()?;
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = conn.wait(None, true) => r?,
        }
    }
}

/// Handles every complete frame in the read buffer, with one clock reading for all.
///
/// A plain function, not part of the async loop, so that frames stay on the stack rather
/// than in the task's state.
fn receive(conn: &mut Conn, rx: &mut Receiver) -> Result<()> {
    let now = now_ns();
    loop {
        match conn.next_frame() {
            // By reference into the result: binding by value copied the frame.
            Ok(Some(ref frame)) => {
                if !conn.common(frame)? {
                    rx.frame(frame, now, &mut conn.wbuf)?;
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::stamp;
    use bytes::{Bytes, BytesMut};
    use warren_amqp_codec::{BasicDeliver, BasicProperties, ContentHeader};

    const RUN: u16 = 0x5eed;

    fn deliver(tag: u64) -> Frame {
        Frame::Method {
            channel: CH,
            method: BasicDeliver {
                delivery_tag: tag,
                ..Default::default()
            }
            .into(),
        }
    }

    fn header(size: u64) -> Frame {
        Frame::Header {
            channel: CH,
            header: ContentHeader::basic(size, BasicProperties::default()),
        }
    }

    fn body(sent_ns: u64, len: usize) -> Frame {
        let mut b = vec![0; len];
        stamp(&mut b, sent_ns, RUN, 1, 1);
        Frame::Body {
            channel: CH,
            payload: Bytes::from(b),
        }
    }

    fn acks(out: &mut BytesMut) -> Vec<(u64, bool)> {
        let mut v = Vec::new();
        while let Some(f) = frame::decode_frame(out, 0).unwrap() {
            match f {
                Frame::Method {
                    method: Method::BasicAck(a),
                    ..
                } => v.push((a.delivery_tag, a.multiple)),
                other => panic!("{other:?}"),
            }
        }
        v
    }

    #[test]
    fn latency_from_the_stamp_and_one_ack_each() {
        let mut rx = Receiver::new(false, 1, RUN);
        let mut out = BytesMut::new();
        for tag in 1..=3 {
            rx.frame(&deliver(tag), 10_000, &mut out).unwrap();
            rx.frame(&header(16), 10_000, &mut out).unwrap();
            rx.frame(&body(10_000 - tag * 1000, 16), 10_000, &mut out)
                .unwrap();
        }
        assert_eq!(rx.received, 3);
        assert_eq!(rx.latencies, [1000, 2000, 3000]);
        assert_eq!(acks(&mut out), [(1, false), (2, false), (3, false)]);
    }

    #[test]
    fn rejecting_without_requeue() {
        let refusals = |out: &mut BytesMut| {
            let mut v = Vec::new();
            while let Some(f) = frame::decode_frame(out, 0).unwrap() {
                match f {
                    Frame::Method {
                        method: Method::BasicReject(r),
                        ..
                    } => v.push((r.delivery_tag, false, r.requeue)),
                    Frame::Method {
                        method: Method::BasicNack(n),
                        ..
                    } => v.push((n.delivery_tag, n.multiple, n.requeue)),
                    other => panic!("{other:?}"),
                }
            }
            v
        };
        let mut rx = Receiver::new(false, 1, RUN).rejecting(true);
        let mut out = BytesMut::new();
        for tag in 1..=2 {
            rx.frame(&deliver(tag), 50, &mut out).unwrap();
            rx.frame(&header(16), 50, &mut out).unwrap();
            rx.frame(&body(20, 16), 50, &mut out).unwrap();
        }
        assert_eq!(rx.received, 2);
        assert_eq!(refusals(&mut out), [(1, false, false), (2, false, false)]);
        let mut rx = Receiver::new(false, 2, RUN).rejecting(true);
        for tag in 1..=3 {
            rx.frame(&deliver(tag), 50, &mut out).unwrap();
            rx.frame(&header(16), 50, &mut out).unwrap();
            rx.frame(&body(20, 16), 50, &mut out).unwrap();
        }
        rx.ack_rest(&mut out);
        assert_eq!(refusals(&mut out), [(2, true, false), (3, true, false)]);
    }

    #[test]
    fn multi_ack_and_split_bodies() {
        let mut rx = Receiver::new(false, 2, RUN);
        let mut out = BytesMut::new();
        for tag in 1..=5 {
            rx.frame(&deliver(tag), 50, &mut out).unwrap();
            rx.frame(&header(40), 50, &mut out).unwrap();
            rx.frame(&body(20, 30), 50, &mut out).unwrap();
            // The second body frame's first octets are not a stamp.
            rx.frame(&body(0, 10), 50, &mut out).unwrap();
        }
        assert_eq!(rx.received, 5);
        assert_eq!(rx.latencies, [30; 5]);
        assert_eq!(acks(&mut out), [(2, true), (4, true)]);
        // Stopping: the rest in one ack, up to the last message received whole.
        rx.frame(&deliver(6), 50, &mut out).unwrap();
        rx.frame(&header(40), 50, &mut out).unwrap();
        rx.ack_rest(&mut out);
        assert_eq!(acks(&mut out), [(5, true)]);
        rx.ack_rest(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn autoack_empty_and_foreign_bodies() {
        let mut rx = Receiver::new(true, 1, RUN);
        let mut out = BytesMut::new();
        rx.frame(&deliver(1), 5, &mut out).unwrap();
        rx.frame(&header(0), 5, &mut out).unwrap();
        rx.frame(&deliver(2), 5, &mut out).unwrap();
        rx.frame(&header(3), 5, &mut out).unwrap();
        rx.frame(&body(0, 3), 5, &mut out).unwrap();
        // A stamp from the future (another process's clock) is not a latency.
        rx.frame(&deliver(3), 5, &mut out).unwrap();
        rx.frame(&header(16), 5, &mut out).unwrap();
        rx.frame(&body(99, 16), 5, &mut out).unwrap();
        // Another run's stamp is not a latency either.
        rx.frame(&deliver(4), 5, &mut out).unwrap();
        rx.frame(&header(16), 5, &mut out).unwrap();
        let mut b = vec![0; 16];
        stamp(&mut b, 1, RUN + 1, 1, 1);
        let foreign = Frame::Body {
            channel: CH,
            payload: Bytes::from(b),
        };
        rx.frame(&foreign, 5, &mut out).unwrap();
        assert_eq!(rx.received, 4);
        assert!(rx.latencies.is_empty());
        assert!(out.is_empty());
    }

    #[test]
    fn protocol_errors_are_errors_not_panics() {
        let mut out = BytesMut::new();
        let mut rx = Receiver::new(false, 1, RUN);
        assert!(rx.frame(&header(1), 0, &mut out).is_err());
        let mut rx = Receiver::new(false, 1, RUN);
        assert!(rx.frame(&body(0, 16), 0, &mut out).is_err());
        let mut rx = Receiver::new(false, 1, RUN);
        rx.frame(&deliver(1), 0, &mut out).unwrap();
        assert!(rx.frame(&deliver(2), 0, &mut out).is_err());
        let mut rx = Receiver::new(false, 1, RUN);
        rx.frame(&deliver(1), 0, &mut out).unwrap();
        rx.frame(&header(4), 0, &mut out).unwrap();
        assert!(rx.frame(&body(0, 16), 0, &mut out).is_err());
        let mut rx = Receiver::new(false, 1, RUN);
        let cancel = Frame::Method {
            channel: CH,
            method: warren_amqp_codec::BasicCancel {
                consumer_tag: "t".into(),
                nowait: true,
            }
            .into(),
        };
        assert!(matches!(
            rx.frame(&cancel, 0, &mut out),
            Err(ClientError::Cancelled(_))
        ));
        let mut rx = Receiver::new(false, 1, RUN);
        let ok = Frame::Method {
            channel: CH,
            method: warren_amqp_codec::BasicConsumeOk::default().into(),
        };
        rx.frame(&ok, 0, &mut out).unwrap();
        assert_eq!(rx.consuming, 1);
        assert!(out.is_empty());
    }
}
