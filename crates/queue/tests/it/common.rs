//! Shared helpers: a message type, a scriptable recipient, and a delivery collector.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use warren_queue::{
    ConsumerId, ConsumerSpec, Entry, Outcome, Payload, Queue, QueueConfig, Recipient, Settlement,
};

/// A message named by a label; its body is the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg(pub(crate) &'static str);

impl Payload for Msg {
    fn body_len(&self) -> usize {
        self.0.len()
    }
}

#[derive(Debug, Default)]
struct RcptState {
    /// Units of credit left (`None`: unlimited).
    credit: Cell<Option<u32>>,
    /// Every `try_reserve` call: (ack_required, granted).
    calls: RefCell<Vec<(bool, bool)>>,
}

/// A recipient whose credit the test sets, and which records every question asked of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rcpt(Rc<RcptState>);

impl Rcpt {
    /// Grants every request.
    pub(crate) fn open() -> Self {
        Self::default()
    }

    /// Grants `n` requests, then refuses.
    pub(crate) fn with_credit(n: u32) -> Self {
        let r = Self::default();
        r.set_credit(Some(n));
        r
    }

    pub(crate) fn set_credit(&self, credit: Option<u32>) {
        self.0.credit.set(credit);
    }

    /// The `ack_required` argument of every call, granted or not.
    pub(crate) fn calls(&self) -> Vec<(bool, bool)> {
        self.0.calls.borrow().clone()
    }

    pub(crate) fn same(&self, other: &Rcpt) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Recipient for Rcpt {
    fn try_reserve(&self, ack_required: bool) -> bool {
        let granted = match self.0.credit.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.0.credit.set(Some(n - 1));
                true
            }
        };
        self.0.calls.borrow_mut().push((ack_required, granted));
        granted
    }
}

pub(crate) type Q = Queue<Msg, Rcpt>;

pub(crate) fn queue() -> Q {
    Queue::new(QueueConfig::default())
}

pub(crate) fn auto_delete_queue() -> Q {
    Queue::new(QueueConfig {
        auto_delete: true,
        ..QueueConfig::default()
    })
}

pub(crate) fn publish_all(q: &mut Q, labels: &[&'static str]) {
    for l in labels {
        q.publish(Msg(l));
    }
}

pub(crate) fn spec(prefetch: u16, no_ack: bool, recipient: Rcpt) -> ConsumerSpec<Rcpt> {
    ConsumerSpec {
        no_ack,
        exclusive: false,
        prefetch,
        recipient,
        priority: 0,
    }
}

pub(crate) fn exclusive(recipient: Rcpt) -> ConsumerSpec<Rcpt> {
    ConsumerSpec {
        no_ack: false,
        exclusive: true,
        prefetch: 0,
        recipient,
        priority: 0,
    }
}

/// A consumer with acks, the given prefetch, and a recipient that grants everything.
pub(crate) fn consumer(q: &mut Q, prefetch: u16) -> ConsumerId {
    q.add_consumer(spec(prefetch, false, Rcpt::open()))
        .expect("no exclusive consumer")
}

/// Runs `deliver` and returns what went where, checking the count it reports.
pub(crate) fn deliver(q: &mut Q) -> Vec<(ConsumerId, Entry<Msg>)> {
    let mut out = Vec::new();
    let n = q.deliver(|c, e| out.push((c.id(), e)));
    assert_eq!(n, out.len(), "deliver's count matches its calls");
    out
}

/// The labels of deliveries, in order.
pub(crate) fn labels(d: &[(ConsumerId, Entry<Msg>)]) -> Vec<&'static str> {
    d.iter().map(|(_, e)| e.message.0).collect()
}

pub(crate) fn settlement(
    consumer: Option<ConsumerId>,
    entry: Entry<Msg>,
    outcome: Outcome,
) -> Settlement<Msg> {
    Settlement {
        consumer,
        entry,
        outcome,
    }
}

/// Settles deliveries with one outcome.
pub(crate) fn settle_all(
    q: &mut Q,
    deliveries: impl IntoIterator<Item = (ConsumerId, Entry<Msg>)>,
    outcome: Outcome,
) {
    q.settle(
        deliveries
            .into_iter()
            .map(|(c, e)| settlement(Some(c), e, outcome)),
    );
}
