//! The built-in exchange types.

mod consistent_hash;
mod direct;
mod fanout;
pub mod headers;
pub mod topic;

pub use consistent_hash::ConsistentHash;
pub use direct::Direct;
pub use fanout::Fanout;
pub use headers::{Headers, MatchKind, headers_match};
pub use topic::Topic;

use crate::Destination;
use crate::hash::{Map, SeededState};

/// A multiset of destinations that lists each distinct one once: bind and unbind are O(1)
/// and routing copies a dense array. Used by the fanout router and the topic trie's nodes.
#[derive(Debug, Clone)]
pub(crate) struct DestinationSet {
    dense: Vec<Destination>,
    /// Position in `dense` and number of bindings for each destination.
    index: Map<Destination, (u32, u32)>,
}

impl DestinationSet {
    pub(crate) fn new(hasher: SeededState) -> Self {
        Self {
            dense: Vec::new(),
            index: Map::with_hasher(hasher),
        }
    }

    pub(crate) fn add(&mut self, d: Destination) {
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
    pub(crate) fn remove(&mut self, d: Destination) -> bool {
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

    pub(crate) fn distinct(&self) -> &[Destination] {
        &self.dense
    }
}
