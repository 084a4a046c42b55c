//! `fanout`: a message goes to every binding; keys are ignored.

use super::DestinationSet;
use crate::hash::SeededState;
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
