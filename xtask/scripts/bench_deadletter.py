#!/usr/bin/env python3
"""Dead-lettering throughput: Warren against RabbitMQ, side by side on this machine, with the
project's load tool (examples/load, its --queue-arg and --reject options). Brokers are started
and stopped by bench_broker.py's code (imported, as bench_durability.py does), one at a time.

    python3 xtask/scripts/bench_deadletter.py --build     # build, then everything: ~15 min
    python3 xtask/scripts/bench_deadletter.py --quick     # 8 s runs, 1 repetition
    python3 xtask/scripts/bench_deadletter.py --scenarios expiry --reps 1 --json > result.json

Every scenario has a source queue `dl-source` whose dead-letter exchange is the default one
(x-dead-letter-exchange="") with x-dead-letter-routing-key=dl-target, and a target queue
`dl-target` consumed by --consumers consumers (one load-tool process, qos --qos, one ack per
message). The target's process starts first and runs --drain seconds longer than the source's.
Transient 16-octet messages (--size), non-durable queues, no confirms, --producers producers
publishing flat out for --time seconds:

- expiry: the source queue has x-message-ttl=0 and no consumer: every message expires at once
  and is dead-lettered (RabbitMQ drops a TTL-0 message at enqueue when no consumer can take it;
  Warren's sweeper expires the messages of a queue nobody reads every 50 ms).
- rejection: a consumer on the source queue (in the source's process, qos --qos) refuses every
  message with basic.reject requeue=false, so every message is dead-lettered.
- expiry-persistent: expiry with persistent messages and durable queues (both broker write a
  persistent dead letter to their store; Warren does so before it drops the original's
  reference).

Figure: dead letters received per second at the target, the time-weighted mean of the target
process's per-second samples from --warmup seconds after the source's start to the source's end
(so the drain of any backlog after the producers stop is left out). Also recorded: the publish
rate, the smallest per-second target rate in that window and the seconds in it below a tenth of
the figure (a stall), the depths of both queues (a passive queue.declare every second over pika;
how long each took), the broker's peak RSS (0.1 s samples), CPU of broker, load tool and the
rest of the machine, and a count at the end: sent - received - left in both queues =
unaccounted (messages lost; a few may be the producer's last batch, cut at the stop).

Each scenario runs --reps times per broker, each time on fresh brokers (a new Warren data
directory, a new RabbitMQ node base under the run directory, by default
target/bench/deadletter-DATE), Warren first on odd repetitions and RabbitMQ first on even ones;
figures are medians. Before each run it waits until no cargo or rustc runs
(bench_broker.wait_quiet); a run during which other processes used more than --max-other of a
core is flagged (not repeated). Prints a summary table and a per-run table; with --json the
summary and runs go to stdout as JSON and the tables to stderr. Everything (the tool's JSON and
per-second lines per process, the depth and RSS samples, broker logs, results.json) stays in
the run directory.
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree for the imports below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_broker as bb  # noqa: E402
import bench_durability as bd  # noqa: E402  (fresh/finish brokers, RSS sampler, pika)
from bench_broker import log  # noqa: E402

import pika  # noqa: E402  (bench_durability has checked it is there)

SOURCE, TARGET = 'dl-source', 'dl-target'
DLX_ARGS = ['--queue-arg', 'x-dead-letter-exchange=',
            '--queue-arg', f'x-dead-letter-routing-key={TARGET}']

# name, label, flags of the source's process (besides the common ones), persistent
SCENARIOS = {
    'expiry': dict(label='expiry: x-message-ttl=0, no consumer on the source',
                   source=['-y', '0', '--queue-arg', 'x-message-ttl=0'], persistent=False),
    'rejection': dict(label='rejection: a consumer rejects every message (requeue=false)',
                      source=['-y', '1', '--reject'], persistent=False),
    'expiry-persistent': dict(label='expiry, persistent messages, durable queues',
                              source=['-y', '0', '--queue-arg', 'x-message-ttl=0'],
                              persistent=True),
}


class DepthSampler(threading.Thread):
    """Both queues' depths by a passive queue.declare every `interval` s, over one pika
    connection; records how long each poll took (a broker that stalls shows here too)."""

    def __init__(self, port, interval=1.0):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.samples = []  # (s since start, source depth, target depth, s the poll took)
        self.error = None
        self.done = threading.Event()

    def depth(self, conn, queue):
        ch = conn.channel()
        try:
            n = ch.queue_declare(queue, passive=True).method.message_count
            ch.close()
            return n
        except pika.exceptions.ChannelClosedByBroker:  # not declared (yet, or any more)
            return None

    def run(self):
        t0 = time.monotonic()
        try:
            conn = bd.connect(self.port, 60)
            while not self.done.is_set():
                t = time.monotonic()
                s, d = self.depth(conn, SOURCE), self.depth(conn, TARGET)
                self.samples.append((round(t - t0, 2), s, d, round(time.monotonic() - t, 3)))
                self.done.wait(self.interval)
            conn.close()
        except (pika.exceptions.AMQPError, OSError) as e:
            self.error = repr(e)

    def stop(self):
        self.done.set()
        self.join(90)


def final_depths(port, settle):
    """The queues' depths once they stop changing (the broker may still be routing dead letters
    when the processes end): polled every 0.5 s until two readings agree, at most `settle` s."""
    conn = bd.connect(port, 60)
    s = DepthSampler(port)
    last, deadline = None, time.monotonic() + settle
    while True:
        now = (s.depth(conn, SOURCE), s.depth(conn, TARGET))
        if now == last or time.monotonic() > deadline:
            break
        last = now
        time.sleep(0.5)
    conn.close()
    return now


def window_rate(samples, start, end):
    """Time-weighted mean of the per-second `received_rate` samples whose second lies within
    [start, end] (process time), the smallest of them, and the samples themselves."""
    prev, num, den, inside = 0.0, 0.0, 0.0, []
    for s in samples:
        dt, t0, prev = s['time_s'] - prev, prev, s['time_s']
        if t0 >= start - 0.01 and s['time_s'] <= end + 0.01:
            num += s['received_rate'] * dt
            den += dt
            inside.append(s['received_rate'])
    return (num / den if den else None), inside


def tool_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_scenario(args, bins, broker, name, rep, rundir):
    sc = SCENARIOS[name]
    tag = f'{name}-{broker.name.lower()}-{rep}'
    rec = dict(scenario=name, broker=broker.name, rep=rep, errors=[])
    bd.fresh(broker, rundir, f'{name}-{rep}')
    pid = bd.server_pid(broker)
    uri = ['--uri', f'amqp://guest:guest@127.0.0.1:{broker.port}/%2f', '--json', '--keep',
           '-s', str(args.size), '-q', str(args.qos)] + (['--persistent'] if sc['persistent'] else [])
    target_flags = uri + ['-x', '0', '-y', str(args.consumers), '-u', TARGET,
                          '-z', str(args.time + args.drain + 1)]
    source_flags = uri + ['-x', str(args.producers), '-u', SOURCE, '-z', str(args.time),
                          *DLX_ARGS, *sc['source']]
    rec['commands'] = dict(target=target_flags, source=source_flags)
    rss = bd.RssSampler(pid)
    depths = DepthSampler(broker.port)
    try:
        waited, note = bb.wait_quiet()
        rec.update(waited_for_build_s=waited, quiet_note=note)
        rss.start()
        cpu_b0, (busy0, irq0), t0 = bb.proc_cpu_s(pid), bb.system_busy_s(), time.monotonic()
        files = {k: (open(os.path.join(rundir, f'{tag}-{k}.json'), 'w'),
                     open(os.path.join(rundir, f'{tag}-{k}.log'), 'w')) for k in ('target', 'source')}
        target = subprocess.Popen([bins['load'], *target_flags], stdout=files['target'][0],
                                  stderr=files['target'][1])
        time.sleep(1)  # its queue declared and its consumers subscribed
        depths.start()
        offset = time.monotonic() - t0
        source = subprocess.Popen([bins['load'], *source_flags], stdout=files['source'][0],
                                  stderr=files['source'][1])
        load_cpu, codes = 0.0, {}
        for k, p in (('source', source), ('target', target)):
            _, status, ru = os.wait4(p.pid, 0)
            codes[k] = os.waitstatus_to_exitcode(status)
            load_cpu += ru.ru_utime + ru.ru_stime
        wall = time.monotonic() - t0
        cpu_b1, (busy1, irq1) = bb.proc_cpu_s(pid), bb.system_busy_s()
        for out, err in files.values():
            out.close()
            err.close()
        depths.stop()
        left = final_depths(broker.port, args.settle)
        peak = rss.stop()
    finally:
        if rss.is_alive():
            rss.stop()
        if depths.is_alive():
            depths.stop()
        bd.finish(broker, args)
    broker_cpu = cpu_b1 - cpu_b0 if cpu_b0 is not None and cpu_b1 is not None else 0.0
    rec.update(wall_s=wall, load_cores=load_cpu / wall, broker_cores=broker_cpu / wall,
               other_cores=(busy1 - busy0 - load_cpu - broker_cpu) / wall,
               irq_cores=(irq1 - irq0) / wall, peak_rss_kib=peak, exit=codes,
               depth_samples=depths.samples, depth_error=depths.error,
               left=dict(source=left[0], target=left[1]))
    rec['disturbed'] = rec['other_cores'] > args.max_other
    js, jt = (tool_json(os.path.join(rundir, f'{tag}-{k}.json')) for k in ('source', 'target'))
    for k, j in (('source', js), ('target', jt)):
        if j is None:
            rec['errors'].append(f'{k}: no JSON summary (exit {codes[k]}); see {tag}-{k}.log')
        else:
            rec['errors'] += [f'{k}: {e}' for e in j.get('errors', [])]
            if codes[k] and not j.get('errors'):
                rec['errors'].append(f'{k}: exit status {codes[k]}')
    if js is None or jt is None:
        return rec
    # The source's producers run from about `offset` s into the target's clock (its connection
    # set-up aside) for js['duration_s'].
    rate, inside = window_rate(jt['samples'], offset + args.warmup, offset + js['duration_s'])
    sent, received = js['sent'], jt['received']
    unaccounted = sent - received - (left[0] or 0) - (left[1] or 0)
    rec.update(rate=rate, publish_rate=js['sent_rate'], sent=sent, received=received,
               rejected=js['received'] if name == 'rejection' else None,
               min_second=min(inside) if inside else None,
               stall_seconds=sum(1 for r in inside if rate and r < rate / 10),
               unaccounted=unaccounted,
               max_target_depth=max((d for _, _, d, _ in depths.samples if d is not None),
                                    default=None),
               slowest_poll_s=max((p for *_, p in depths.samples), default=None))
    log(f'{tag}: {bd.fmt("rate", rate)} dead letters at the target (slowest second '
        f'{bd.fmt("rate", rec["min_second"])}, {rec["stall_seconds"]} s below a tenth), published '
        f'{bd.fmt("rate", js["sent_rate"])}; sent {sent:,}, received {received:,}, left '
        f'{left[0]}/{left[1]}, unaccounted {unaccounted:,}; target depth up to '
        f'{rec["max_target_depth"]}, slowest poll {rec["slowest_poll_s"]} s; peak RSS '
        f'{bd.fmt("kib", peak)}; load {rec["load_cores"]:.2f}, broker {rec["broker_cores"]:.2f}, '
        f'others {rec["other_cores"]:.2f} cores' + (' (DISTURBED)' if rec['disturbed'] else '')
        + (f'; ERRORS {rec["errors"]}' if rec['errors'] else ''))
    return rec


def summarize(results):
    rows = []
    for name, sc in SCENARIOS.items():
        per = {b: {r['rep']: r for r in results if r['scenario'] == name and r['broker'] == b
                   and r.get('rate') is not None} for b in ('Warren', 'RabbitMQ')}
        if not any(per.values()):
            continue
        w, m = (statistics.median(r['rate'] for r in per[b].values()) if per[b] else None
                for b in ('Warren', 'RabbitMQ'))
        rows.append(dict(scenario=name, label=sc['label'], warren=w, rabbitmq=m,
                         ratio=w / m if w is not None and m else None,
                         per_rep_ratios=[per['Warren'][k]['rate'] / per['RabbitMQ'][k]['rate']
                                         for k in sorted(per['Warren']) if k in per['RabbitMQ']],
                         warren_reps=[per['Warren'][k]['rate'] for k in sorted(per['Warren'])],
                         rabbitmq_reps=[per['RabbitMQ'][k]['rate'] for k in sorted(per['RabbitMQ'])]))
    return rows


def tables(rows, results):
    lines = ['| scenario | Warren | RabbitMQ | Warren / RabbitMQ | per-rep ratios |',
             '|---|---:|---:|---:|---|']
    for r in rows:
        lines.append(f'| {r["label"]} | {bd.fmt("rate", r["warren"])} | '
                     f'{bd.fmt("rate", r["rabbitmq"])} | '
                     f'{"%.2f" % r["ratio"] if r["ratio"] is not None else "n/a"} | '
                     f'{", ".join("%.2f" % x for x in r["per_rep_ratios"])} |')
    runs = ['| scenario | broker | rep | dead letters/s | slowest second | stall s | published/s '
            '| unaccounted | max target depth | slowest poll | peak RSS | load | broker | others '
            '| errors |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for r in results:
        g = lambda k, f=str: f(r[k]) if r.get(k) is not None else 'n/a'  # noqa: E731
        runs.append(
            f'| {r["scenario"]} | {r["broker"]} | {r["rep"]} | {g("rate", lambda v: f"{v:,.0f}")} | '
            f'{g("min_second", lambda v: f"{v:,.0f}")} | {g("stall_seconds")} | '
            f'{g("publish_rate", lambda v: f"{v:,.0f}")} | {g("unaccounted", lambda v: f"{v:,}")} | '
            f'{g("max_target_depth", lambda v: f"{v:,}")} | {g("slowest_poll_s", lambda v: f"{v:.2f} s")} | '
            f'{bd.fmt("kib", r.get("peak_rss_kib"))} | {r.get("load_cores", 0):.2f} | '
            f'{r.get("broker_cores", 0):.2f} | {r.get("other_cores", 0):.2f}'
            f'{" (disturbed)" if r.get("disturbed") else ""} | {"; ".join(r["errors"])} |')
    return '\n'.join(lines), '\n'.join(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--scenarios', default=','.join(SCENARIOS),
                    help=f'comma-separated: {", ".join(SCENARIOS)}')
    ap.add_argument('--quick', action='store_true',
                    help='a try-out: 8 s runs, 2 s warm-up, 1 repetition (explicit flags win)')
    ap.add_argument('--reps', type=int, help='runs per scenario and broker (default 3; quick 1)')
    ap.add_argument('--time', type=float, help='seconds the producers publish (default 20; quick 8)')
    ap.add_argument('--warmup', type=float,
                    help='seconds after the producers start left out of the figure (default 5; '
                         'quick 2)')
    ap.add_argument('--drain', type=float, default=10,
                    help='seconds the target\'s consumers run after the producers stop')
    ap.add_argument('--settle', type=float, default=30,
                    help='seconds at most to wait for the queue depths to settle at the end')
    ap.add_argument('--producers', type=int, default=1)
    ap.add_argument('--consumers', type=int, default=1, help='consumers of the target queue')
    ap.add_argument('--size', type=int, default=16, help='body size in octets')
    ap.add_argument('--qos', type=int, default=1000, help='prefetch of every consumer')
    ap.add_argument('--max-other', type=float, default=0.1,
                    help='flag a run during which other processes used more than this share of '
                         'a core')
    ap.add_argument('--stop-timeout', type=float, default=120,
                    help='seconds a clean stop may take before the broker is killed')
    bb.add_broker_args(ap)
    ap.add_argument('--rundir',
                    help='where data, logs and results go (default target/bench/deadletter-DATE)')
    ap.add_argument('--keep-data', action='store_true',
                    help='leave each run\'s broker data in the run directory')
    ap.add_argument('--json', action='store_true',
                    help='print the summary and runs as JSON on stdout (tables go to stderr)')
    args = ap.parse_args()
    for k, full, quick in (('reps', 3, 1), ('time', 20, 8), ('warmup', 5, 2)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    wanted = [s for s in args.scenarios.split(',') if s]
    if not wanted or not set(wanted) <= set(SCENARIOS):
        ap.error(f'unknown scenario in {args.scenarios!r}')
    if args.warmup >= args.time:
        ap.error('--warmup must be shorter than --time')

    started = time.monotonic()
    rundir = os.path.abspath(args.rundir or os.path.join(
        bb.REPO, 'target', 'bench', f'deadletter-{time.strftime("%Y%m%d-%H%M%S")}'))
    os.makedirs(rundir, exist_ok=True)
    log(f'run directory {rundir}')
    bins = bb.prepare(args, rundir)
    meta = bb.run_meta(args, bins)
    logging.getLogger('pika').setLevel(logging.CRITICAL)

    warren = bb.Warren(bins['server'], args.warren_port, rundir)
    rabbit = bb.RabbitMQ(args.rabbitmq_port, args.rabbitmq_dist_port, args.rabbitmq_node,
                         os.path.join(rundir, 'rabbitmq'))
    results, rows = [], []
    try:
        for name in wanted:
            for rep in range(1, args.reps + 1):
                for b in bb.order(rep, [warren, rabbit]):
                    log(f'{name}, {b.name}, repetition {rep}')
                    results.append(run_scenario(args, bins, b, name, rep, rundir))
    finally:
        warren.stop(keep_data=True)
        if rabbit.pid is None and rabbit.ctl('ping', timeout=30).returncode == 0:
            rabbit.pid = bd.beam_pid(rabbit)  # launched but never seen ready
        rabbit.stop()
        meta['rabbitmq'], meta['otp'] = getattr(rabbit, 'versions', None) or (None, None)
        meta['elapsed_s'] = time.monotonic() - started
        rows = summarize(results)
        with open(os.path.join(rundir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, summary=rows, results=results), f, indent=1)

    summary, runs = tables(rows, results)
    out = sys.stderr if args.json else sys.stdout
    print(f'Warren (commit {meta["commit"]}{", dirty tree" if meta["dirty"] else ""}'
          f'{", binaries may not match it" if meta.get("binaries_may_not_match_commit") else ""}) '
          f'vs RabbitMQ {meta["rabbitmq"] or "?"} (OTP {meta["otp"] or "?"}), {meta["date"]}, '
          f'{meta["cpu"]} x {meta["nproc"]}; {args.reps} rep(s) of {args.time:g} s (figure over '
          f'the last {args.time - args.warmup:g} s), medians; took '
          f'{meta["elapsed_s"] / 60:.1f} min\n', file=out)
    print(summary, file=out)
    print('\nRuns (CPU in cores: 1.00 = one core busy for the whole run; stall s: seconds of the '
          'window below a tenth of the figure):\n', file=out)
    print(runs, file=out)
    print(f'\nData, logs, per-run JSON, depth and RSS samples and results.json in {rundir}',
          file=out)
    if args.json:
        json.dump(dict(meta=meta, summary=rows, results=results), sys.stdout, indent=1)
        print()
    bad = [r for r in results if r['errors'] or r.get('rate') is None]
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
