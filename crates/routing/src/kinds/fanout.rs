//! `fanout`: a message goes to every binding; keys are ignored.

use crate::hash::{Map, SeededState};
use crate::{BindingRef, Destination, ExchangeType, RouteMessage, Router};
use warren_amqp_codec::FieldTable;

/// The `fanout` exchange type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fanout;

impl ExchangeType for Fanout {
    fn name(&self) -> &str {
        "fanout"
    }

    fn router(&self, _arguments: &FieldTable, hasher: SeededState) -> Box<dyn Router> {
        Box::new(FanoutRouter {
            set: DestinationSet::new(hasher),
            len: 0,
        })
    }
}

#[derive(Debug)]
struct FanoutRouter {
    set: DestinationSet,
    len: usize,
}

impl Router for FanoutRouter {
    fn bind(&mut self, b: BindingRef<'_>) {
        self.set.add(b.destination);
        self.len += 1;
    }

    fn unbind(&mut self, b: BindingRef<'_>) {
        if self.set.remove(b.destination) {
            self.len -= 1;
        }
    }

    fn route(&self, _m: &RouteMessage<'_>, out: &mut Vec<Destination>) {
        out.extend_from_slice(self.set.distinct());
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A multiset of destinations that lists each distinct one once: bind and unbind are O(1)
/// and routing copies a dense array. Used by the fanout router and the topic trie's nodes.
#[derive(Debug, Clone)]
struct DestinationSet {
    dense: Vec<Destination>,
    /// Position in `dense` and number of bindings for each destination.
    index: Map<Destination, (u32, u32)>,
}

impl DestinationSet {
    fn new(hasher: SeededState) -> Self {
        Self {
            dense: Vec::new(),
            index: Map::with_hasher(hasher),
        }
    }

    fn add(&mut self, d: Destination) {
        match self.index.get_mut(&d) {
            Some((_, count)) => *count += 1,
            None => {
                let pos = u32::try_from(self.dense.len()).unwrap_or(u32::MAX);
                self.index.insert(d, (pos, 1));
                self.dense.push(d);
            }
        }
    }

    /// Removes one binding to `d`; returns whether it was present.
    fn remove(&mut self, d: Destination) -> bool {
        let Some((pos, count)) = self.index.get_mut(&d) else {
            return false;
        };
        if *count > 1 {
            *count -= 1;
            return true;
        }
        let pos = *pos as usize;
        self.index.remove(&d);
        self.dense.swap_remove(pos);
        if let Some(moved) = self.dense.get(pos) {
            if let Some(entry) = self.index.get_mut(moved) {
                entry.0 = pos as u32;
            }
        }
        true
    }

    fn distinct(&self) -> &[Destination] {
        &self.dense
    }
}
