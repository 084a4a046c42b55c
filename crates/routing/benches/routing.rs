//! Routing benchmarks: topic against 10 / 1,000 / 100,000 bindings, direct, headers, fanout
//! to 1,000 queues, and bind/unbind rate. Before the timings it prints the memory each
//! binding costs (resident-set growth while building 100,000 topic bindings), measured from
//! /proc/self/statm. Run with `cargo bench -p warren-routing --bench routing`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use std::hint::black_box;
use warren_amqp_codec::{BasicProperties, FieldTable, FieldValue, ShortStr};
use warren_routing::{BindingSpec, ExchangeSpec, Routed, Topology};

/// A small deterministic generator (xorshift), so every run builds the same topology.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const VOCABULARY: u64 = 1000;

/// A binding pattern of 3 to 5 words from a 1,000-word vocabulary, with about one word in
/// ten a `*` and one pattern in twenty ending in `#`. With `literal_first`, the first word is
/// never a wildcard (as in `orders.*.created`): few patterns match a given key. Without it,
/// patterns such as `*.*.*` match most keys of their length.
fn pattern(rng: &mut Rng, literal_first: bool) -> String {
    let words = 3 + rng.below(3);
    let mut p: Vec<String> = (0..words)
        .map(|i| match rng.below(10) {
            0 if !(literal_first && i == 0) => "*".to_owned(),
            _ => format!("w{}", rng.below(VOCABULARY)),
        })
        .collect();
    if rng.below(20) == 0 {
        p.push("#".to_owned());
    }
    p.join(".")
}

fn key(rng: &mut Rng) -> String {
    let words = 3 + rng.below(3);
    (0..words)
        .map(|_| format!("w{}", rng.below(VOCABULARY)))
        .collect::<Vec<_>>()
        .join(".")
}

/// A topic exchange `t` with `n` queues and, if `bind`, one binding to each.
fn topic_topology(n: usize, literal_first: bool, bind: bool) -> Topology {
    let mut t = Topology::new("/", 1);
    t.declare_exchange(ExchangeSpec::new("t", "topic")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        let q = ShortStr::from(format!("q{i}"));
        t.declare_queue(&q);
        if bind {
            let p = ShortStr::from(pattern(&mut rng, literal_first));
            t.bind(&BindingSpec::queue("t", q, p)).unwrap();
        }
    }
    t
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn report_memory() {
    const N: usize = 100_000;
    let Some(before) = resident_bytes() else {
        return;
    };
    let queues_only = topic_topology(N, true, false);
    let mid = resident_bytes().unwrap_or(before);
    drop(black_box(queues_only));
    let base = resident_bytes().unwrap_or(before);
    let t = topic_topology(N, true, true);
    let after = resident_bytes().unwrap_or(before);
    let queues = mid.saturating_sub(before) as f64 / N as f64;
    let total = after.saturating_sub(base) as f64 / N as f64;
    eprintln!(
        "memory: {N} queues alone {queues:.0} bytes each; with one topic binding each {total:.0} bytes per queue+binding, so about {:.0} bytes per binding",
        total - queues
    );
    black_box(t);
}

fn topic(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic_route");
    for (n, literal_first) in [
        (10usize, true),
        (1_000, true),
        (100_000, true),
        (100_000, false),
    ] {
        let t = topic_topology(n, literal_first, true);
        let mut rng = Rng(42);
        let keys: Vec<String> = (0..1024).map(|_| key(&mut rng)).collect();
        let props = BasicProperties::default();
        let mut out = Routed::new();
        let mut matched = 0usize;
        for k in &keys {
            t.route(b"t", k.as_bytes(), &props, &mut out).unwrap();
            matched += out.queues().len();
        }
        let name = if literal_first {
            format!("{n}_bindings")
        } else {
            format!("{n}_bindings_leading_wildcards")
        };
        eprintln!(
            "topic {name}: {:.3} queues matched per key on average",
            matched as f64 / keys.len() as f64
        );
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                t.route(b"t", keys[i].as_bytes(), &props, &mut out).unwrap();
                black_box(out.queues().len())
            })
        });
    }
    g.finish();
}

fn direct(c: &mut Criterion) {
    let mut t = Topology::new("/", 1);
    t.declare_exchange(ExchangeSpec::new("d", "direct"))
        .unwrap();
    for i in 0..100_000 {
        let q = ShortStr::from(format!("q{i}"));
        t.declare_queue(&q);
        t.bind(&BindingSpec::queue(
            "d",
            q,
            ShortStr::from(format!("key.{i}")),
        ))
        .unwrap();
    }
    let props = BasicProperties::default();
    let mut out = Routed::new();
    let keys: Vec<String> = (0..1024).map(|i| format!("key.{}", i * 97)).collect();
    let mut g = c.benchmark_group("direct_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("100000_bindings", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            t.route(b"d", keys[i].as_bytes(), &props, &mut out).unwrap();
            black_box(out.queues().len())
        })
    });
    g.bench_function("default_exchange", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % 1000;
            t.route(b"", b"q500", &props, &mut out).unwrap();
            black_box(out.queues().len())
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut t = Topology::new("/", 1);
    t.declare_exchange(ExchangeSpec::new("h", "headers"))
        .unwrap();
    let mut rng = Rng(7);
    for i in 0..100 {
        let q = ShortStr::from(format!("q{i}"));
        t.declare_queue(&q);
        let mut args = FieldTable::new();
        args.insert(
            "x-match",
            FieldValue::LongStr(if i % 2 == 0 { "all" } else { "any" }.into()),
        );
        args.insert(
            "format",
            FieldValue::LongStr(format!("f{}", rng.below(5)).into()),
        );
        args.insert(
            "type",
            FieldValue::LongStr(format!("t{}", rng.below(10)).into()),
        );
        args.insert("level", FieldValue::I32(rng.below(3) as i32));
        t.bind(&BindingSpec::queue("h", q, "").with_arguments(args))
            .unwrap();
    }
    let mut h = FieldTable::new();
    h.insert("format", FieldValue::LongStr("f1".into()));
    h.insert("type", FieldValue::LongStr("t3".into()));
    h.insert("level", FieldValue::I64(2));
    h.insert("trace-id", FieldValue::LongStr("abcdef".into()));
    h.insert("retries", FieldValue::I32(0));
    let props = BasicProperties {
        headers: Some(h),
        ..BasicProperties::default()
    };
    let mut out = Routed::new();
    let mut g = c.benchmark_group("headers_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("100_bindings_5_headers", |b| {
        b.iter(|| {
            t.route(b"h", b"", &props, &mut out).unwrap();
            black_box(out.queues().len())
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut t = Topology::new("/", 1);
    t.declare_exchange(ExchangeSpec::new("f", "fanout"))
        .unwrap();
    for i in 0..1000 {
        let q = ShortStr::from(format!("q{i}"));
        t.declare_queue(&q);
        t.bind(&BindingSpec::queue("f", q, "")).unwrap();
    }
    let props = BasicProperties::default();
    let mut out = Routed::new();
    let mut g = c.benchmark_group("fanout_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1000_queues", |b| {
        b.iter(|| {
            t.route(b"f", b"", &props, &mut out).unwrap();
            black_box(out.queues().len())
        })
    });
    g.finish();
}

fn bind_unbind(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut rng = Rng(99);
    let specs: Vec<BindingSpec> = (0..N)
        .map(|i| {
            BindingSpec::queue(
                "t",
                ShortStr::from(format!("q{}", i % 100)),
                ShortStr::from(pattern(&mut rng, true)),
            )
        })
        .collect();
    let fresh = || {
        let mut t = Topology::new("/", 1);
        t.declare_exchange(ExchangeSpec::new("t", "topic")).unwrap();
        for i in 0..100 {
            t.declare_queue(&ShortStr::from(format!("q{i}")));
        }
        t
    };
    let mut g = c.benchmark_group("bind_unbind");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("topic_bind_10000", |b| {
        b.iter_batched(
            fresh,
            |mut t| {
                for s in &specs {
                    t.bind(s).unwrap();
                }
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("topic_unbind_10000", |b| {
        b.iter_batched(
            || {
                let mut t = fresh();
                for s in &specs {
                    t.bind(s).unwrap();
                }
                t
            },
            |mut t| {
                for s in &specs {
                    t.unbind(s).unwrap();
                }
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, topic, direct, headers, fanout, bind_unbind);

fn main() {
    report_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
