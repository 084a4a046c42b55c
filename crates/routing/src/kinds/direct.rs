//! `direct`: a message goes to the bindings whose key equals one of its routing keys.

use crate::hash::{Map, SeededState};
use crate::{BindingRef, Destination, ExchangeType, RouteMessage, Router};
use warren_amqp_codec::FieldTable;

/// The `direct` exchange type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl ExchangeType for Direct {
    fn name(&self) -> &str {
        "direct"
    }

    fn router(&self, _arguments: &FieldTable, hasher: SeededState) -> Box<dyn Router> {
        Box::new(DirectRouter {
            by_key: Map::with_hasher(hasher),
            empty_key: Vec::new(),
            len: 0,
        })
    }
}

#[derive(Debug)]
struct DirectRouter {
    /// Destinations per non-empty key; a destination appears once per binding.
    by_key: Map<Box<[u8]>, Vec<Destination>>,
    /// Destinations bound with the empty key, kept out of the map: looking up an empty key
    /// compares empty slices, which costs ~100 ns through memcmp on some CPUs.
    empty_key: Vec<Destination>,
    len: usize,
}

impl Router for DirectRouter {
    fn bind(&mut self, b: BindingRef<'_>) {
        if b.key.is_empty() {
            self.empty_key.push(b.destination);
            self.len += 1;
            return;
        }
        match self.by_key.get_mut(b.key) {
            Some(v) => v.push(b.destination),
            None => {
                self.by_key.insert(b.key.into(), vec![b.destination]);
            }
        }
        self.len += 1;
    }

    fn unbind(&mut self, b: BindingRef<'_>) {
        let v = if b.key.is_empty() {
            &mut self.empty_key
        } else {
            match self.by_key.get_mut(b.key) {
                Some(v) => v,
                None => return,
            }
        };
        if let Some(pos) = v.iter().position(|d| *d == b.destination) {
            v.swap_remove(pos);
            self.len -= 1;
        }
        if v.is_empty() && !b.key.is_empty() {
            self.by_key.remove(b.key);
        }
    }

    fn route(&self, m: &RouteMessage<'_>, out: &mut Vec<Destination>) {
        for key in m.routing_keys {
            if key.is_empty() {
                out.extend_from_slice(&self.empty_key);
            } else if let Some(v) = self.by_key.get(*key) {
                out.extend_from_slice(v);
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}
