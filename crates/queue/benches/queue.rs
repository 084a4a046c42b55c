//! Queue benchmarks: expiring a backlog of one million messages with a TTL (one index walk,
//! no timer per message), the same backlog published and delivered without TTL for
//! comparison, and priority delivery. Run with `cargo bench -p warren-queue --bench queue`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use std::hint::black_box;
use warren_queue::{Limits, Payload, Queue, QueueConfig, Recipient};

struct Msg(u8);

impl Payload for Msg {
    fn body_len(&self) -> usize {
        1024
    }
    fn priority(&self) -> u8 {
        self.0
    }
}

struct Anyone;

impl Recipient for Anyone {
    fn try_reserve(&self, _ack_required: bool) -> bool {
        true
    }
}

const BACKLOG: u64 = 1_000_000;

fn filled(limits: Limits) -> Queue<Msg, Anyone> {
    let mut q = Queue::new(QueueConfig {
        auto_delete: false,
        limits,
        single_active_consumer: false,
    });
    for i in 0..BACKLOG {
        q.advance(i / 1000);
        q.publish(Msg((i % 10) as u8));
    }
    q
}

fn ttl(c: &mut Criterion) {
    let mut g = c.benchmark_group("ttl");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BACKLOG));
    let limits = Limits {
        message_ttl: Some(60_000),
        ..Limits::default()
    };
    g.bench_function("expire 1M backlog", |b| {
        b.iter_batched(
            || filled(limits.clone()),
            |mut q| {
                q.advance(10_000_000);
                let dead = q.take_dead();
                assert_eq!(dead.len() as u64, BACKLOG);
                black_box(dead)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("publish 1M with TTL", |b| {
        b.iter(|| black_box(filled(limits.clone())))
    });
    g.bench_function("publish 1M without TTL", |b| {
        b.iter(|| black_box(filled(Limits::default())))
    });
    g.bench_function("advance with nothing due (1M backlog)", |b| {
        let mut q = filled(limits.clone());
        let mut now = BACKLOG / 1000;
        b.iter(|| {
            now += 1;
            q.advance(now.min(59_000));
            black_box(q.next_expiry())
        })
    });
    g.finish();
}

fn priorities(c: &mut Criterion) {
    let mut g = c.benchmark_group("priorities");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BACKLOG));
    for max in [None, Some(9u8)] {
        let name = match max {
            None => "drain 1M, no priorities",
            Some(_) => "drain 1M, 10 priorities",
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    filled(Limits {
                        max_priority: max,
                        ..Limits::default()
                    })
                },
                |mut q| {
                    let mut n = 0u64;
                    while q.get(true).is_some() {
                        n += 1;
                    }
                    assert_eq!(n, BACKLOG);
                    q
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ttl, priorities);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
