//! Names, bindings and routing keys: who publishes where and who consumes what.
//!
//! - Queues are `NAME` (one queue) or `NAME-0` .. `NAME-{N-1}`.
//! - Producers and consumers are spread over the queues the same way ([`assigned`]): with at
//!   least as many workers as queues, worker `i` takes queue `i mod N`; with fewer, worker
//!   `i` takes every queue `j` with `j mod workers == i`, so every queue has a worker.
//! - `direct`: without `-e`, producers publish to the default exchange with the queue's name
//!   as the key; with `-e NAME`, each queue is bound to `NAME` by its own name.
//! - `fanout`: every queue is bound to one fanout exchange; a message makes a copy per queue.
//! - `topic`: queue `q` gets `B` bindings, alternately `load.q{q}.k{b}.#` and `*.q{q}.k{b}`,
//!   so the exchange holds both a prefix and a wildcard-first pattern per word. A producer
//!   cycles over keys `load.q{q}.k{b}` (each matches exactly one binding of one queue) and,
//!   for the fraction `1 - match` of its messages, over keys `load.q{q}.x{b}` (which match
//!   nothing), mixed evenly by [`MatchMix`].

use clap::ValueEnum;

/// The exchange type of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExchangeType {
    /// Queue name as routing key.
    Direct,
    /// Every queue gets every message.
    Fanout,
    /// `--bindings` patterns per queue.
    Topic,
}

impl ExchangeType {
    /// The AMQP exchange type name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }

    /// The exchange used when `-e` is not given.
    pub(crate) fn default_exchange(self) -> &'static str {
        match self {
            ExchangeType::Direct => "",
            ExchangeType::Fanout => "load-fanout",
            ExchangeType::Topic => "load-topic",
        }
    }
}

/// The queue names for `base` and `n` queues.
pub(crate) fn queue_names(base: &str, n: usize) -> Vec<String> {
    if n == 1 {
        vec![base.to_owned()]
    } else {
        (0..n).map(|i| format!("{base}-{i}")).collect()
    }
}

/// The queues (indices) worker `i` of `workers` publishes to or consumes from.
pub(crate) fn assigned(i: usize, workers: usize, queues: usize) -> Vec<usize> {
    if queues == 0 || workers == 0 {
        Vec::new()
    } else if workers >= queues {
        vec![i % queues]
    } else {
        (0..queues).filter(|j| j % workers == i).collect()
    }
}

/// The binding pattern number `b` of queue `q`, for topic runs.
pub(crate) fn topic_pattern(q: usize, b: usize) -> String {
    if b % 2 == 0 {
        format!("load.q{q}.k{b}.#")
    } else {
        format!("*.q{q}.k{b}")
    }
}

/// The key that matches [`topic_pattern`]`(q, b)` and no other binding.
pub(crate) fn topic_key(q: usize, b: usize) -> String {
    format!("load.q{q}.k{b}")
}

/// A key next to `topic_key(q, b)` that matches no binding.
pub(crate) fn topic_miss_key(q: usize, b: usize) -> String {
    format!("load.q{q}.x{b}")
}

/// Everything about the broker-side objects of a run.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    /// Exchange producers publish to (`""`: the default exchange).
    pub(crate) exchange: String,
    /// Its type.
    pub(crate) kind: ExchangeType,
    /// Queue names.
    pub(crate) queues: Vec<String>,
    /// Topic bindings per queue.
    pub(crate) bindings_per_queue: usize,
}

impl Topology {
    /// Whether the tool declares (and later deletes) the exchange: not the default exchange
    /// and not one of the broker's predeclared `amq.*` exchanges.
    pub(crate) fn owns_exchange(&self) -> bool {
        !self.exchange.is_empty() && !self.exchange.starts_with("amq.")
    }

    /// Every `(queue index, binding key)` to declare.
    pub(crate) fn bindings(&self) -> Vec<(usize, String)> {
        if self.exchange.is_empty() {
            return Vec::new();
        }
        let n = self.queues.len();
        match self.kind {
            ExchangeType::Direct => (0..n).map(|q| (q, self.queues[q].clone())).collect(),
            ExchangeType::Fanout => (0..n).map(|q| (q, String::new())).collect(),
            ExchangeType::Topic => (0..n)
                .flat_map(|q| (0..self.bindings_per_queue).map(move |b| (q, topic_pattern(q, b))))
                .collect(),
        }
    }

    /// Producer `i` of `producers`: the keys it cycles over when a message should be routed,
    /// the keys for messages that should not be (empty: every message is routed), and how
    /// many queue copies a routed message makes.
    pub(crate) fn producer_keys(
        &self,
        i: usize,
        producers: usize,
    ) -> (Vec<String>, Vec<String>, u64) {
        let mine = assigned(i, producers, self.queues.len());
        match self.kind {
            ExchangeType::Direct => (
                mine.iter().map(|&q| self.queues[q].clone()).collect(),
                Vec::new(),
                1,
            ),
            ExchangeType::Fanout => (vec![String::new()], Vec::new(), self.queues.len() as u64),
            ExchangeType::Topic => {
                let b = self.bindings_per_queue.max(1);
                let keys = |f: fn(usize, usize) -> String| -> Vec<String> {
                    (0..b)
                        .flat_map(|b| mine.iter().map(move |&q| f(q, b)))
                        .collect()
                };
                (keys(topic_key), keys(topic_miss_key), 1)
            }
        }
    }
}

/// Decides, message by message, whether to use a matching key, so that exactly the
/// fraction `match` of messages match, evenly spread (no randomness).
#[derive(Debug, Clone)]
pub(crate) struct MatchMix {
    fraction: f64,
    acc: f64,
}

impl MatchMix {
    /// A mix with `fraction` (clamped to 0..=1) of matching messages.
    pub(crate) fn new(fraction: f64) -> Self {
        Self {
            fraction: fraction.clamp(0.0, 1.0),
            acc: 0.0,
        }
    }

    /// Whether the next message matches.
    pub(crate) fn next_matches(&mut self) -> bool {
        self.acc += self.fraction;
        if self.acc >= 1.0 - 1e-9 {
            self.acc -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(queue_names("load-q", 1), ["load-q"]);
        assert_eq!(
            queue_names("load-q", 3),
            ["load-q-0", "load-q-1", "load-q-2"]
        );
    }

    #[test]
    fn every_queue_gets_a_worker_and_every_worker_a_queue() {
        for workers in 1..8 {
            for queues in 1..8 {
                let mut seen = vec![false; queues];
                for i in 0..workers {
                    let a = assigned(i, workers, queues);
                    assert!(!a.is_empty(), "worker {i}/{workers} of {queues} queues");
                    for q in a {
                        seen[q] = true;
                    }
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "{workers} workers, {queues} queues"
                );
            }
        }
        assert_eq!(assigned(1, 2, 5), [1, 3]);
        assert_eq!(assigned(4, 5, 2), [0]);
        assert!(assigned(0, 0, 3).is_empty());
    }

    /// A tiny topic matcher (AMQP rules) to check the patterns and keys against.
    fn topic_matches(pattern: &str, key: &str) -> bool {
        fn m(p: &[&str], k: &[&str]) -> bool {
            match (p.first(), k.first()) {
                (None, None) => true,
                (Some(&"#"), _) => m(&p[1..], k) || (!k.is_empty() && m(p, &k[1..])),
                (Some(&"*"), Some(_)) => m(&p[1..], &k[1..]),
                (Some(w), Some(x)) if w == x => m(&p[1..], &k[1..]),
                _ => false,
            }
        }
        let p: Vec<&str> = pattern.split('.').collect();
        let k: Vec<&str> = key.split('.').collect();
        m(&p, &k)
    }

    #[test]
    fn each_topic_key_matches_exactly_one_binding() {
        let t = Topology {
            exchange: "load-topic".into(),
            kind: ExchangeType::Topic,
            queues: queue_names("q", 3),
            bindings_per_queue: 12,
        };
        let bindings = t.bindings();
        assert_eq!(bindings.len(), 36);
        let (hits, misses, copies) = t.producer_keys(0, 1);
        assert_eq!((hits.len(), misses.len(), copies), (36, 36, 1));
        for key in &hits {
            let n = bindings
                .iter()
                .filter(|(_, p)| topic_matches(p, key))
                .count();
            assert_eq!(n, 1, "{key}");
        }
        for key in &misses {
            assert!(
                !bindings.iter().any(|(_, p)| topic_matches(p, key)),
                "{key}"
            );
        }
        // Consecutive keys go to different queues.
        assert_eq!(hits[0], "load.q0.k0");
        assert_eq!(hits[1], "load.q1.k0");
    }

    #[test]
    fn direct_and_fanout() {
        let mut t = Topology {
            exchange: String::new(),
            kind: ExchangeType::Direct,
            queues: queue_names("q", 4),
            bindings_per_queue: 1,
        };
        assert!(t.bindings().is_empty());
        assert!(!t.owns_exchange());
        assert_eq!(t.producer_keys(1, 2).0, ["q-1", "q-3"]);
        t.exchange = "amq.direct".into();
        assert!(!t.owns_exchange());
        assert_eq!(t.bindings()[2], (2, "q-2".to_owned()));
        t.exchange = "load-fanout".into();
        t.kind = ExchangeType::Fanout;
        assert!(t.owns_exchange());
        assert_eq!(t.bindings().len(), 4);
        assert_eq!(t.producer_keys(0, 3), (vec![String::new()], vec![], 4));
    }

    #[test]
    fn match_mix_is_exact_and_even() {
        let run = |f: f64, n: usize| -> Vec<bool> {
            let mut m = MatchMix::new(f);
            (0..n).map(|_| m.next_matches()).collect()
        };
        assert!(run(1.0, 100).iter().all(|&b| b));
        assert!(run(0.0, 100).iter().all(|&b| !b));
        assert_eq!(
            run(0.25, 8),
            [false, false, false, true, false, false, false, true]
        );
        assert_eq!(run(0.1, 10_000).iter().filter(|&&b| b).count(), 1_000);
        assert_eq!(run(2.0 / 3.0, 3_000).iter().filter(|&&b| b).count(), 2_000);
    }
}
