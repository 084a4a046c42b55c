//! Staging a routed message for its queues: which of them the store must hold it for (a
//! persistent message of a durable queue; any message of a queue paging out), written once
//! per batch before the batch is enqueued. Publishing connections and the dead-letter worker
//! share it.

use crate::durable::Durable;
use crate::message::Message;
use crate::vhost::QueueCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What a batch enqueues: each (queue, message), and whether the store holds the message for
/// that queue.
pub(crate) type Batch = Vec<(Arc<QueueCell>, Arc<Message>, bool)>;

/// The messages of a batch the store must hold, before it is enqueued.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    /// Each message with its range in `store_queues` (the queues' references).
    to_store: Vec<(Arc<Message>, std::ops::Range<usize>)>,
    store_queues: Vec<u64>,
    /// A staged message waits for a sync (persistent, in a durable queue).
    sync_needed: bool,
}

impl Staging {
    /// Adds a routed message to `batch`; with a store, a persistent message reaching durable
    /// queues (or any message reaching a queue that pages out) is staged for it. Returns
    /// whether the message needs a sync before it may be confirmed.
    pub(crate) fn stage(
        &mut self,
        with_store: bool,
        message: &Arc<Message>,
        queues: Vec<Arc<QueueCell>>,
        batch: &mut Batch,
    ) -> bool {
        let mut durable = false;
        let start = self.store_queues.len();
        if with_store {
            for q in &queues {
                if message.persistent && q.store.is_some() {
                    self.store_queues.push(q.ref_for(true));
                    durable = true;
                } else if q.spilling.load(Ordering::Acquire) {
                    // Paging out: the body goes to disk with the batch.
                    self.store_queues.push(q.ref_for(message.persistent));
                }
            }
        }
        let end = self.store_queues.len();
        if end > start {
            self.to_store.push((message.clone(), start..end));
        }
        self.sync_needed |= durable;
        for q in queues {
            let r = q.ref_for(message.persistent);
            let has_ref = self
                .store_queues
                .get(start..end)
                .is_some_and(|refs| refs.contains(&r));
            batch.push((q, message.clone(), has_ref));
        }
        durable
    }

    /// Writes the staged messages to the store (one lock for the batch); returns whether a
    /// sync is needed before their confirms.
    pub(crate) fn write(&mut self, durable: Option<&Arc<Durable>>) -> bool {
        if self.to_store.is_empty() {
            return false;
        }
        if let Some(d) = durable {
            d.write(&self.to_store, &self.store_queues);
        }
        self.to_store.clear();
        self.store_queues.clear();
        std::mem::take(&mut self.sync_needed)
    }
}
