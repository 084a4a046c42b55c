#!/usr/bin/env python3
"""Memory per topic binding in a running RabbitMQ, the yardstick for `cargo bench -p
warren-routing` (docs/benchmarks.md, "Memory per binding").

Declares a topic exchange and 100 queues, binds 100,000 random patterns (the same generator as
crates/routing/benches/routing.rs: 3-5 words from 1,000, a non-first word is `*` with p=1/10, a
final `#` with p=1/20), and prints the growth of `rabbitmq-diagnostics memory_breakdown`'s
`mnesia` category per binding. Needs pika and rabbitmqctl; cleans up after itself.

    python3 xtask/scripts/rabbitmq_binding_memory.py [--port 5672] [--bindings 100000]
"""
import argparse, json, random, subprocess, time
import pika


def patterns(n, seed=12345):
    rnd = random.Random(seed)
    for i in range(n):
        words = ['w%d' % rnd.randint(0, 999)]
        for _ in range(rnd.randint(3, 5) - 1):
            words.append('*' if rnd.random() < 0.1 else 'w%d' % rnd.randint(0, 999))
        if rnd.random() < 0.05:
            words.append('#')
        yield 'mq%d' % (i % 100), '.'.join(words)


def mnesia_bytes():
    out = subprocess.run(['rabbitmq-diagnostics', 'memory_breakdown', '--unit', 'bytes',
                          '--formatter', 'json'], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)['mnesia']['bytes']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, default=5672)
    ap.add_argument('--bindings', type=int, default=100_000)
    a = ap.parse_args()
    conn = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', a.port))
    ch = conn.channel()
    ch.exchange_declare('memtest', exchange_type='topic', durable=False)
    for q in range(100):
        ch.queue_declare('mq%d' % q, durable=False)
    before = mnesia_bytes()
    pairs = set(patterns(a.bindings))
    t0 = time.monotonic()
    for q, p in pairs:
        ch.queue_bind(queue=q, exchange='memtest', routing_key=p)
    took = time.monotonic() - t0
    time.sleep(10)
    after = mnesia_bytes()
    print('%d bindings: mnesia grew %.0f bytes per binding; %.0f binds/s (one synchronous channel)'
          % (len(pairs), (after - before) / len(pairs), len(pairs) / took))
    ch.exchange_delete('memtest')
    for q in range(100):
        ch.queue_delete('mq%d' % q)
    conn.close()


if __name__ == '__main__':
    main()
