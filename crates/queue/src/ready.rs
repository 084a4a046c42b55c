//! The ready messages of a queue: by priority, in order within a priority, requeued ones first
//! in their original positions, with an index of expiry times so that expired messages are
//! found (and removed) wherever they are, without a timer per message.

use crate::queue::{Entry, Offset};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A position in a lane: the entry, or a hole where one was taken out of the middle
/// (expired); holes at the front are dropped as the lane is read.
#[derive(Debug)]
struct Slot<M> {
    offset: Offset,
    entry: Option<Entry<M>>,
}

/// One priority level.
#[derive(Debug)]
struct Lane<M> {
    /// Requeued messages, in their original order; they come before `fresh`.
    returned: BTreeMap<Offset, Entry<M>>,
    /// Messages never handed out, in order (offsets increase).
    fresh: VecDeque<Slot<M>>,
}

impl<M> Default for Lane<M> {
    fn default() -> Self {
        Self {
            returned: BTreeMap::new(),
            fresh: VecDeque::new(),
        }
    }
}

impl<M> Lane<M> {
    fn trim(&mut self) {
        while self.fresh.front().is_some_and(|s| s.entry.is_none()) {
            self.fresh.pop_front();
        }
    }

    fn pop(&mut self) -> Option<Entry<M>> {
        if let Some((_, e)) = self.returned.pop_first() {
            return Some(e);
        }
        self.trim();
        let e = self.fresh.pop_front()?.entry;
        self.trim();
        e
    }

    fn remove(&mut self, offset: Offset) -> Option<Entry<M>> {
        if let Some(e) = self.returned.remove(&offset) {
            return Some(e);
        }
        let i = self
            .fresh
            .binary_search_by_key(&offset, |s| s.offset)
            .ok()?;
        let e = self.fresh.get_mut(i)?.entry.take();
        self.trim();
        e
    }
}

/// Ready messages by priority (level 0 only, for a queue without priorities).
#[derive(Debug)]
pub(crate) struct Ready<M> {
    lanes: Vec<Lane<M>>,
    count: u64,
    bytes: u64,
    /// (expires at, offset, priority) of every ready message with an expiry.
    expiries: BTreeSet<(u64, Offset, u8)>,
}

impl<M> Ready<M> {
    /// Ready messages with priorities `0..=max_priority`.
    pub(crate) fn new(max_priority: u8) -> Self {
        Self {
            lanes: (0..=max_priority).map(|_| Lane::default()).collect(),
            count: 0,
            bytes: 0,
            expiries: BTreeSet::new(),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn lane(&mut self, priority: u8) -> Option<&mut Lane<M>> {
        let top = self.lanes.len().saturating_sub(1);
        self.lanes.get_mut(usize::from(priority).min(top))
    }

    fn index(&mut self, e: &Entry<M>, priority: u8) {
        if let Some(at) = e.expires_at {
            self.expiries.insert((at, e.offset, priority));
        }
    }

    fn unindex(&mut self, e: &Entry<M>, priority: u8) {
        if let Some(at) = e.expires_at {
            self.expiries.remove(&(at, e.offset, priority));
        }
    }

    /// Appends a message never handed out (its offset is the highest so far).
    pub(crate) fn push(&mut self, e: Entry<M>, priority: u8, len: u64) {
        self.index(&e, priority);
        self.count += 1;
        self.bytes += len;
        if let Some(lane) = self.lane(priority) {
            lane.fresh.push_back(Slot {
                offset: e.offset,
                entry: Some(e),
            });
        }
    }

    /// Puts a message that was handed out back at its original position.
    pub(crate) fn put_back(&mut self, e: Entry<M>, priority: u8, len: u64) {
        self.index(&e, priority);
        self.count += 1;
        self.bytes += len;
        if let Some(lane) = self.lane(priority) {
            lane.returned.insert(e.offset, e);
        }
    }

    /// The next message to hand out: the highest priority first, requeued ones first within
    /// a priority, then in order. `len` gives a message's size.
    pub(crate) fn pop(&mut self, len: impl Fn(&M) -> u64) -> Option<(Entry<M>, u8)> {
        let (priority, e) = self
            .lanes
            .iter_mut()
            .enumerate()
            .rev()
            .find_map(|(p, lane)| lane.pop().map(|e| (p as u8, e)))?;
        self.unindex(&e, priority);
        self.count -= 1;
        self.bytes = self.bytes.saturating_sub(len(&e.message));
        Some((e, priority))
    }

    /// The earliest expiry time among the ready messages.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _, _)| *at)
    }

    /// Takes out every ready message that expired before `now`, earliest first.
    pub(crate) fn expire(&mut self, now: u64, len: impl Fn(&M) -> u64) -> Vec<Entry<M>> {
        let mut out = Vec::new();
        while let Some(&(at, offset, priority)) = self.expiries.first() {
            if at >= now {
                break;
            }
            self.expiries.pop_first();
            if let Some(e) = self.lane(priority).and_then(|l| l.remove(offset)) {
                self.count -= 1;
                self.bytes = self.bytes.saturating_sub(len(&e.message));
                out.push(e);
            }
        }
        out
    }

    /// Takes everything out, in delivery order.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Entry<M>)) {
        for lane in self.lanes.iter_mut().rev() {
            for (_, e) in std::mem::take(&mut lane.returned) {
                f(e);
            }
            for s in lane.fresh.drain(..) {
                if let Some(e) = s.entry {
                    f(e);
                }
            }
        }
        self.expiries.clear();
        self.count = 0;
        self.bytes = 0;
    }
}
