//! Dead-lettering: messages that leave a queue with a dead-letter exchange (rejected, expired,
//! over a length limit, past the delivery limit) are republished through it, with the headers
//! `warren_queue::deadletter` writes as RabbitMQ does.
//!
//! A queue hands its dead to the broker's inbox while it holds its own lock; a worker task
//! routes them afterwards (never under a queue's lock: a dead letter may go back to the same
//! queue, or to one whose dead come back here). The dead letter is written to the store (if
//! persistent and going to durable queues) before the original's reference is dropped, so a
//! crash in between leaves both (at least once), never neither.
//!
//! Flow: the worker routes at most [`BATCH`] dead letters at a time and yields between
//! batches, so a flood of them never holds a runtime thread; when a queue it fills is
//! congested (its consumers slower than the dead letters), it waits as a publisher would; and
//! past [`Inbox::HIGH`] dead letters waiting, connections publishing to queues that
//! dead-letter pause reading until the worker is down to [`Inbox::LOW`]. So a queue that
//! dead-letters everything at once (`x-message-ttl` 0) slows its publishers to the pace its
//! dead letters are consumed at, instead of growing memory without bound.

use crate::broker::Shared;
use crate::message::Message;
use crate::outbox::{Outbox, Waiters};
use crate::staging::{Batch, Staging};
use crate::vhost::QueueCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use warren_amqp_codec::{BasicProperties, FieldArray, FieldValue, ShortStr};
use warren_queue::DeathReason;
use warren_queue::deadletter::{Death, dead_letter, is_cycle};
use warren_routing::Routed;
use warren_store::MessageRef;

/// A message that died in a queue with a dead-letter exchange.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    /// The queue it died in.
    pub(crate) queue: Arc<QueueCell>,
    /// The queue's dead-letter exchange and routing key when it died.
    pub(crate) target: (ShortStr, Option<ShortStr>),
    pub(crate) message: Arc<Message>,
    pub(crate) reason: DeathReason,
    /// Its reference in the store for that queue, dropped once the dead letter is enqueued.
    pub(crate) stored: Option<(u64, MessageRef)>,
}

/// Dead letters the worker routes before it yields.
pub(crate) const BATCH: usize = 1024;

/// Where queues leave their dead letters for the worker.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    items: Mutex<VecDeque<DeadLetter>>,
    /// `items.len()`, readable without the lock.
    len: AtomicUsize,
    notify: Notify,
    /// Publishers paused until the inbox is down to [`Inbox::LOW`].
    waiters: Mutex<Waiters>,
}

impl Inbox {
    /// Dead letters waiting past which publishers to queues that dead-letter pause.
    pub(crate) const HIGH: usize = 64 * BATCH;
    /// Dead letters waiting at which paused publishers resume.
    pub(crate) const LOW: usize = 16 * BATCH;

    pub(crate) fn push(&self, items: impl IntoIterator<Item = DeadLetter>) {
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let before = v.len();
        v.extend(items);
        self.len.store(v.len(), Ordering::Release);
        if v.len() > before {
            self.notify.notify_one();
        }
    }

    /// Dead letters waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether publishers to queues that dead-letter should pause; if so, `publisher` is
    /// woken once the worker is down to [`Inbox::LOW`].
    pub(crate) fn throttles(&self, publisher: &Arc<Outbox>) -> bool {
        if self.len() <= Self::HIGH {
            return false;
        }
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(publisher);
        true
    }

    /// Takes the next batch.
    fn take(&self) -> Vec<DeadLetter> {
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let n = v.len().min(BATCH);
        let batch: Vec<DeadLetter> = v.drain(..n).collect();
        self.len.store(v.len(), Ordering::Release);
        if v.len() <= Self::LOW {
            drop(v);
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .wake_all();
        }
        batch
    }
}

/// The worker: routes dead letters as they come, a batch at a time, yielding between batches
/// and waiting while a queue it fills is congested.
pub(crate) async fn run(shared: Arc<Shared>) {
    let outbox = Arc::new(Outbox::default());
    loop {
        if shared.dead_letters.len() == 0 {
            shared.dead_letters.notify.notified().await;
        }
        let items = shared.dead_letters.take();
        if let Some(q) = process(&shared, items, &outbox) {
            wait_for(&q, &outbox).await;
        }
        tokio::task::yield_now().await;
    }
}

/// Waits as a paused publisher does until a congested queue may take more.
async fn wait_for(q: &Arc<QueueCell>, outbox: &Outbox) {
    loop {
        let recheck =
            tokio::time::timeout(crate::connection::FLOW_RECHECK, outbox.notify.notified())
                .await
                .is_err();
        if q.lock().releases(recheck) {
            return;
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `CC` keys of a message's headers.
fn cc_keys(props: &BasicProperties) -> Vec<Vec<u8>> {
    match props.headers.as_ref().and_then(|h| h.get("CC")) {
        Some(FieldValue::Array(FieldArray(items))) => items
            .iter()
            .filter_map(|v| match v {
                FieldValue::LongStr(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Routes a batch; returns a queue it left congested.
fn process(
    shared: &Arc<Shared>,
    items: Vec<DeadLetter>,
    outbox: &Arc<Outbox>,
) -> Option<Arc<QueueCell>> {
    let mut batch: Batch = Vec::new();
    let mut staging = Staging::default();
    let mut routed = Routed::new();
    let mut done = Vec::with_capacity(items.len());
    let time = now_secs();
    for d in items {
        let source = (d.queue.clone(), d.stored);
        done.push(source);
        let (dlx, dlrk) = &d.target;
        let Some(vhost) = shared.vhost(&d.queue.vhost) else {
            continue;
        };
        let Ok(mut props) = BasicProperties::decode_encoded(&d.message.properties) else {
            continue;
        };
        let cc = cc_keys(&props);
        let mut keys: Vec<&[u8]> = vec![d.message.routing_key.as_bytes()];
        keys.extend(cc.iter().map(Vec::as_slice));
        let death = Death {
            queue: d.queue.name.as_bytes(),
            reason: d.reason,
            exchange: d.message.exchange.as_bytes(),
            routing_keys: keys,
            time,
        };
        dead_letter(&mut props, &death, dlrk.is_some());
        let key: ShortStr = dlrk
            .clone()
            .unwrap_or_else(|| d.message.routing_key.clone());
        let queues: Vec<Arc<QueueCell>> = {
            let state = vhost.read();
            match state
                .topology
                .route(dlx.as_bytes(), key.as_bytes(), &props, &mut routed)
            {
                // A dead-letter exchange that does not exist: dropped, as in RabbitMQ.
                Err(_) => continue,
                Ok(()) => routed
                    .queues()
                    .iter()
                    .filter_map(|id| state.queue(*id).cloned())
                    // A cycle without a rejection in it ends here, as in RabbitMQ.
                    .filter(|q| !is_cycle(&props, q.name.as_bytes()))
                    .collect(),
            }
        };
        if queues.is_empty() {
            continue;
        }
        let m = Message::new(dlx, &key, &props, d.message.body.clone(), &shared.gauge);
        staging.stage(shared.durable.is_some(), &m, queues, &mut batch);
    }
    // The dead letters reach the store (and their queues) before the originals go: the
    // journal is one log, so an original's ack is never durable without the copy.
    staging.write(shared.durable.as_ref());
    let mut congested = None;
    if !batch.is_empty() {
        let over_budget = shared.over_paging_budget();
        if let Some(crate::connection::Throttle::Queue(q)) =
            crate::connection::enqueue(&mut batch, outbox, over_budget)
        {
            congested = Some(q);
        }
    }
    for (cell, stored) in done {
        if let Some(r) = stored {
            cell.drop_refs(&[r]);
        }
    }
    tracing::trace!("dead letters routed");
    congested
}
