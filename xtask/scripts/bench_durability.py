#!/usr/bin/env python3
"""Durability: Warren against RabbitMQ with persistent messages, side by side on this machine,
with the project's load tool (examples/load). Brokers are started and stopped by
bench_broker.py's code (imported), one broker at a time.

    python3 xtask/scripts/bench_durability.py --build      # build, then everything, full size
    python3 xtask/scripts/bench_durability.py --quick      # 100,000 messages, 5 s runs, 1 rep
    python3 xtask/scripts/bench_durability.py --scenarios 2,4 --reps 1 --json > result.json

Scenarios, each on fresh brokers (a new Warren data directory, a new RabbitMQ node base with
its own mnesia directory, both under the run directory, by default target/bench/durability-DATE;
removed after each scenario unless --keep-data):

1. Confirmed persistent publishing: 1 producer -> 1 durable queue -> 1 consumer, persistent
   16-octet bodies, publisher confirms with a window of 1,000, --time seconds. Figure: the
   confirm rate over the tool's per-second samples after --warmup seconds. Warren syncs
   (fdatasync) before every confirm; RabbitMQ's classic queues may confirm a message before it
   is fsynced (e.g. once a consumer has acked it): the numbers are recorded as they are.
2. Backlog: --messages persistent 1 KiB messages published to a durable queue with no consumer
   (confirms, window 1,000): the confirmed publish rate. Then one consumer (qos 1,000, one ack
   per message) drains them: the drain rate. The broker's RSS (VmRSS of the Warren server; of
   the node's beam.smp for RabbitMQ, the pid the node reports, checked against /proc) is
   sampled every 100 ms from the broker's start to the end of scenario 4's wait: the peak (the
   kernel's own high-water mark, VmHWM, is recorded as a check).
3. Restart: --messages persistent 1 KiB messages published as in 2, a clean stop (SIGTERM to
   Warren; `rabbitmqctl stop` for RabbitMQ), a start on the same data, and the time from
   launching the process until a passive queue.declare reports every message (polled over AMQP
   every 20 ms). Then for Warren (and RabbitMQ with --rabbitmq-kill9) kill -9 and the same again.
4. Disk (part of scenario 2's run): `du -sb` of Warren's data directory and of the RabbitMQ
   node's mnesia directory with the backlog stored, and after the drain plus --settle seconds
   (for compaction).

Each scenario runs --reps times per broker, Warren first on odd repetitions and RabbitMQ first on
even ones; figures are medians. Before every timed step the script waits until no cargo or rustc
runs (bench_broker.wait_quiet); a load run during which other processes used more than
--max-other of a core is flagged (not repeated).

Prints a summary table (Warren, RabbitMQ, ratio) and a per-run table; with --json the summary
and the runs go to stdout as one JSON object and the tables to stderr. Everything (the tool's
JSON per run, the RSS samples, broker logs, results.json) stays in the run directory.
"""
import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree for the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_broker as bb  # noqa: E402
from bench_broker import log  # noqa: E402

try:
    import pika
except ImportError:
    raise SystemExit('pika is needed (restart timing polls queue.declare): pip install pika, or '
                     'run this script with target/interop/venv/bin/python (cargo xtask interop '
                     'makes it)')

QUEUE = 'load-q'  # the load tool's default queue name

# key, scenario, label, unit formatter, which way is better
FIGURES = [
    ('confirm_rate', '1', 'persistent 16 B, confirms (window 1,000), 1 → 1 → 1: confirmed publishes',
     'rate', 'higher'),
    ('publish_rate', '2', 'backlog: publish {n} persistent 1 KiB, no consumer (confirmed)',
     'rate', 'higher'),
    ('drain_rate', '2', 'backlog: drain {n} with 1 consumer (qos 1,000, acks)', 'rate', 'higher'),
    ('peak_rss_kib', '2', 'backlog: peak broker RSS (100 ms samples, publish + drain + wait)',
     'kib', 'lower'),
    ('restart_s', '3', 'restart with {n} × 1 KiB stored, after a clean stop', 's', 'lower'),
    ('restart_kill9_s', '3', 'restart with {n} × 1 KiB stored, after kill -9', 's', 'lower'),
    ('disk_backlog_bytes', '4', 'disk with the {n} × 1 KiB backlog stored', 'bytes', 'lower'),
    ('disk_drained_bytes', '4', 'disk after the drain + {settle:g} s', 'bytes', 'lower'),
]


# ---- measuring -------------------------------------------------------------------------

def du_bytes(path):
    r = subprocess.run(['du', '-sb', path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout else None


def vm_hwm_kib(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def beam_pid(rabbit):
    """The pid of the node's beam.smp: the one the node reports (os:getpid()), checked against
    /proc; else the beam.smp process started for this node. (RabbitMQ 3.10 names the node at
    boot, not on the VM's command line: the check is the environment the script gave it.)"""
    def is_node(pid):
        try:
            with open(f'/proc/{pid}/comm') as f:
                comm = f.read().strip()
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = set(f.read().decode(errors='replace').split('\0'))
        except OSError:
            return False
        return (comm == 'beam.smp' and f'RABBITMQ_NODENAME={rabbit.node}' in env
                and f'RABBITMQ_MNESIA_BASE={os.path.join(rabbit.base, "mnesia")}' in env)

    if rabbit.pid and is_node(rabbit.pid):
        return rabbit.pid
    found = [int(d) for d in os.listdir('/proc') if d.isdigit() and is_node(int(d))]
    if len(found) != 1:
        raise SystemExit(f'cannot tell the beam.smp of {rabbit.node}: candidates {found}, '
                         f'node says {rabbit.pid}')
    log(f'the node reported pid {rabbit.pid}, but its beam.smp is {found[0]}')
    return found[0]


def server_pid(broker):
    return beam_pid(broker) if isinstance(broker, bb.RabbitMQ) else broker.pid


class RssSampler(threading.Thread):
    """VmRSS of one process every `interval` seconds until stopped."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []  # (seconds since start, KiB)
        self.done = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.done.is_set():
            v = bb.rss_kib(self.pid)
            if v is not None:
                self.samples.append((round(time.monotonic() - t0, 3), v))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()
        return max((v for _, v in self.samples), default=None)


def load_run(args, bins, broker, flags, tag, rundir):
    """One run of the load tool with `--json`; returns the tool's summary plus CPU shares."""
    waited, note = bb.wait_quiet()
    flags = ['--uri', f'amqp://guest:guest@127.0.0.1:{broker.port}/%2f', *flags, '--json']
    out_path, err_path = (os.path.join(rundir, f'{tag}.{x}') for x in ('json', 'log'))
    pid = server_pid(broker)
    cpu_b0, (busy0, irq0), t0 = bb.proc_cpu_s(pid), bb.system_busy_s(), time.monotonic()
    with open(out_path, 'w') as out, open(err_path, 'w') as err:
        p = subprocess.Popen([bins['load'], *flags], stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    cpu_b1, (busy1, irq1) = bb.proc_cpu_s(pid), bb.system_busy_s()
    load_cpu = ru.ru_utime + ru.ru_stime
    broker_cpu = cpu_b1 - cpu_b0 if cpu_b0 is not None and cpu_b1 is not None else 0.0
    rec = dict(tag=tag, flags=flags, exit=code, wall_s=wall, waited_for_build_s=waited,
               quiet_note=note, load_cores=load_cpu / wall, broker_cores=broker_cpu / wall,
               other_cores=(busy1 - busy0 - load_cpu - broker_cpu) / wall,
               irq_cores=(irq1 - irq0) / wall)
    try:
        with open(out_path) as f:
            rec['tool'] = json.load(f)
        rec['errors'] = rec['tool'].get('errors', [])
    except (OSError, ValueError) as e:
        rec['tool'] = None
        rec['errors'] = [f'no JSON summary (exit {code}): {e}; see {err_path}']
    if code and not rec['errors']:
        rec['errors'] = [f'load tool exit status {code}']
    rec['disturbed'] = rec['other_cores'] > args.max_other
    j = rec['tool'] or {}
    log(f'{tag}: sent {j.get("sent", 0):,} confirmed {j.get("confirmed", 0):,} received '
        f'{j.get("received", 0):,} in {j.get("duration_s", 0):.2f} s; load '
        f'{rec["load_cores"]:.2f}, broker {rec["broker_cores"]:.2f}, others '
        f'{rec["other_cores"]:.2f}, irq {rec["irq_cores"]:.2f} cores'
        + (' (DISTURBED)' if rec['disturbed'] else '')
        + (f'; ERRORS {rec["errors"]}' if rec['errors'] else ''))
    return rec


def steady(samples, key, warmup):
    """Time-weighted mean of a per-second rate over the samples after `warmup` s."""
    prev = num = den = 0.0
    for s in samples:
        dt, prev = s['time_s'] - prev, s['time_s']
        if s['time_s'] > warmup + 0.5:
            num += s[key] * dt
            den += dt
    return num / den if den else None


def connect(port, timeout):
    params = pika.ConnectionParameters('127.0.0.1', port, heartbeat=0, connection_attempts=1,
                                       socket_timeout=timeout, stack_timeout=timeout,
                                       blocked_connection_timeout=timeout)
    return pika.BlockingConnection(params)


def time_until_stored(port, n, timeout, t0):
    """Polls a passive queue.declare every 20 ms until it reports `n` messages. Returns the
    seconds from `t0` (a time.monotonic()) until the port accepted TCP, until the first AMQP
    connection opened, until the queue was first seen and until it reported `n`, and the last
    count seen."""
    out = dict(listen_s=None, amqp_s=None, queue_s=None, stored_s=None, count=None,
               last_error=None)
    conn = None
    while time.monotonic() - t0 < timeout:
        try:
            if out['listen_s'] is None:
                if not bb.port_open(port):
                    time.sleep(0.02)
                    continue
                out['listen_s'] = time.monotonic() - t0
            if conn is None or not conn.is_open:
                conn = connect(port, 5)
                out['amqp_s'] = out['amqp_s'] or time.monotonic() - t0
            ch = conn.channel()
            while True:
                out['count'] = ch.queue_declare(QUEUE, passive=True).method.message_count
                out['queue_s'] = out['queue_s'] or time.monotonic() - t0
                if out['count'] >= n:
                    out['stored_s'] = time.monotonic() - t0
                    conn.close()
                    return out
                time.sleep(0.02)
        except pika.exceptions.ChannelClosedByBroker as e:  # 404 until the queue is back
            out['last_error'] = f'{e.reply_code} {e.reply_text}'
        except (pika.exceptions.AMQPError, OSError) as e:
            out['last_error'] = repr(e)
            conn = None
        time.sleep(0.02)
    if conn is not None and conn.is_open:
        conn.close()
    return out


# ---- scenarios -------------------------------------------------------------------------

def fresh(broker, rundir, tag):
    """Starts `broker` on new, empty data named after `tag`; returns that data's path."""
    if isinstance(broker, bb.Warren):
        data = os.path.join(rundir, f'warren-{tag}')
        shutil.rmtree(data, ignore_errors=True)
        broker.start(data=data)
        return data
    broker.base = os.path.join(rundir, f'rabbitmq-{tag}')
    broker.start(fresh=True)
    broker.pid = beam_pid(broker)
    if not getattr(broker, 'versions', None):
        broker.versions = broker.version()
    return broker.mnesia_dir


def finish(broker, args):
    """A clean stop; the data is removed unless --keep-data."""
    if isinstance(broker, bb.Warren):
        broker.stop(keep_data=args.keep_data, timeout=args.stop_timeout)
    else:
        broker.stop(timeout=args.stop_timeout)
        if not args.keep_data:
            shutil.rmtree(broker.base, ignore_errors=True)


def backlog_flags(args):
    return ['-x', '1', '-y', '0', '-s', '1024', '--persistent', '-c', str(args.confirm),
            '-C', str(args.messages), '--keep', '-z', str(args.phase_timeout)]


def published(rec, n):
    """The confirmed publish rate of a backlog run, if every message was confirmed."""
    j = rec['tool']
    if j is None or j['confirmed'] != n or j['nacked']:
        rec['errors'] = rec['errors'] + [f'{j and j["confirmed"]} of {n} confirmed'
                                         f'{", %d nacked" % j["nacked"] if j and j["nacked"] else ""}']
        return None
    return j['confirmed_rate']


def scenario1(args, bins, broker, rep, rundir):
    rec = dict(scenario='1', broker=broker.name, rep=rep, figures={})
    fresh(broker, rundir, f's1-{rep}')
    try:
        run = load_run(args, bins, broker,
                       ['-x', '1', '-y', '1', '-s', '16', '--persistent', '-c', str(args.confirm),
                        '-z', str(args.time)],
                       f's1-{broker.name.lower()}-{rep}', rundir)
    finally:
        finish(broker, args)
    rec['runs'] = [run]
    j = run['tool']
    if j and not run['errors']:
        rec['figures']['confirm_rate'] = steady(j['samples'], 'confirmed_rate', args.warmup)
        rec['whole_run'] = dict(confirmed_rate=j['confirmed_rate'],
                                received_rate=j['received_rate'], sent_rate=j['sent_rate'])
    return rec


def scenario2(args, bins, broker, rep, rundir):
    """Backlog publish and drain, RSS throughout, disk before and after the drain."""
    rec = dict(scenario='2', broker=broker.name, rep=rep, figures={}, runs=[])
    tag = f's2-{broker.name.lower()}-{rep}'
    data = fresh(broker, rundir, f's2-{rep}')
    pid = server_pid(broker)
    sampler = RssSampler(pid)
    sampler.start()
    f = rec['figures']
    try:
        pub = load_run(args, bins, broker, backlog_flags(args), f'{tag}-publish', rundir)
        rec['runs'].append(pub)
        f['publish_rate'] = published(pub, args.messages)
        f['disk_backlog_bytes'] = du_bytes(data)
        drain = load_run(args, bins, broker,
                         ['-x', '0', '-y', '1', '--persistent', '-q', str(args.qos),
                          '-D', str(args.messages), '--keep', '-z', str(args.phase_timeout)],
                         f'{tag}-drain', rundir)
        rec['runs'].append(drain)
        j = drain['tool']
        if j and j['received'] == args.messages and not drain['errors']:
            f['drain_rate'] = j['received_rate']
        else:
            drain['errors'].append(f'{j and j["received"]} of {args.messages} received')
        rec['disk_right_after_drain_bytes'] = du_bytes(data)
        time.sleep(args.settle)
        f['disk_drained_bytes'] = du_bytes(data)
        rec['vm_hwm_kib'] = vm_hwm_kib(pid)
    finally:
        peak = sampler.stop()
        finish(broker, args)
    f['peak_rss_kib'] = peak
    rec['rss_samples'] = len(sampler.samples)
    with open(os.path.join(rundir, f'{tag}-rss.json'), 'w') as fh:
        json.dump(dict(pid=pid, interval_s=sampler.interval, samples=sampler.samples), fh)
    log(f'{tag}: publish {fmt("rate", f.get("publish_rate"))}, drain '
        f'{fmt("rate", f.get("drain_rate"))}, peak RSS {fmt("kib", peak)} (VmHWM '
        f'{fmt("kib", rec["vm_hwm_kib"])}), disk {fmt("bytes", f.get("disk_backlog_bytes"))} '
        f'with the backlog, {fmt("bytes", rec["disk_right_after_drain_bytes"])} right after '
        f'the drain, {fmt("bytes", f.get("disk_drained_bytes"))} {args.settle:g} s later')
    return rec


def restart(args, broker, data, kill):
    """Stops the broker (SIGTERM / rabbitmqctl stop, or kill -9), starts it again on the same
    data and times it until the queue reports every message."""
    how = 'kill -9' if kill else 'clean stop'
    bb.wait_quiet()
    t = time.monotonic()
    if isinstance(broker, bb.Warren):
        status = broker.stop(keep_data=True, kill=kill, timeout=args.stop_timeout)
        clean = kill or status == 0
    else:
        clean = broker.stop(kill=kill, timeout=args.stop_timeout) or kill
    stop_s = time.monotonic() - t
    time.sleep(1)
    t0 = time.monotonic()
    if isinstance(broker, bb.Warren):
        broker.launch(data=data)
    else:
        broker.launch(fresh=False)
    out = time_until_stored(broker.port, args.messages, args.restart_timeout, t0)
    if isinstance(broker, bb.RabbitMQ):
        broker.wait_ready()
        broker.pid = beam_pid(broker)
    elif not bb.wait_port(broker.port, 30):
        raise SystemExit('the Warren server did not come back')
    out.update(how=how, stop_s=stop_s, stop_clean=clean)
    log(f'{broker.name} restart after {how} (stop took {stop_s:.2f} s'
        f'{"" if clean else ", NOT clean"}): listening after {fmt("s", out["listen_s"])}, '
        f'{fmt("s", out["stored_s"])} until {args.messages:,} messages reported'
        + ('' if out['stored_s'] is not None else
           f' (NEVER: last count {out["count"]}, last error {out["last_error"]})'))
    return out


def scenario3(args, bins, broker, rep, rundir):
    rec = dict(scenario='3', broker=broker.name, rep=rep, figures={}, runs=[], restarts=[])
    tag = f's3-{broker.name.lower()}-{rep}'
    data = fresh(broker, rundir, f's3-{rep}')
    try:
        pub = load_run(args, bins, broker, backlog_flags(args), f'{tag}-publish', rundir)
        rec['runs'].append(pub)
        rec['publish_rate'] = published(pub, args.messages)
        if rec['publish_rate'] is None:
            return rec
        rec['disk_bytes'] = du_bytes(data)
        r = restart(args, broker, data, kill=False)
        rec['restarts'].append(r)
        rec['figures']['restart_s'] = r['stored_s'] if r['stop_clean'] else None
        if isinstance(broker, bb.Warren) or args.rabbitmq_kill9:
            r = restart(args, broker, data, kill=True)
            rec['restarts'].append(r)
            rec['figures']['restart_kill9_s'] = r['stored_s']
    finally:
        finish(broker, args)
    return rec


SCENARIOS = {'1': scenario1, '2': scenario2, '3': scenario3}


# ---- report ----------------------------------------------------------------------------

def fmt(unit, v):
    if v is None:
        return 'n/a'
    if unit == 'rate':
        return f'{v / 1000:,.1f} k msg/s'
    if unit == 'kib':
        return f'{v / 1024:,.0f} MiB'
    if unit == 's':
        return f'{v:,.2f} s'
    if unit == 'bytes':
        return f'{v / 2**20:,.1f} MiB' if v >= 2**20 else f'{v / 1024:,.1f} KiB'
    return str(v)


def summarize(results, args):
    rows = []
    for key, sc, label, unit, better in FIGURES:
        per = {}
        for b in ('Warren', 'RabbitMQ'):
            per[b] = {r['rep']: r['figures'][key] for r in results
                      if r['broker'] == b and r['figures'].get(key) is not None}
        if not any(r['scenario'] == ('2' if sc == '4' else sc) for r in results):
            continue
        w, m = (statistics.median(per[b].values()) if per[b] else None
                for b in ('Warren', 'RabbitMQ'))
        rows.append(dict(
            key=key, scenario=sc, figure=label.format(n=f'{args.messages:,}', settle=args.settle),
            unit=unit, better=better, warren=w, rabbitmq=m,
            ratio=w / m if w is not None and m else None,
            per_rep_ratios=[per['Warren'][k] / per['RabbitMQ'][k] for k in sorted(per['Warren'])
                            if per['RabbitMQ'].get(k)],
            reps=dict(warren=len(per['Warren']), rabbitmq=len(per['RabbitMQ']))))
    return rows


def tables(rows, results):
    lines = ['| # | figure | Warren | RabbitMQ | Warren / RabbitMQ | per-rep ratios | better |',
             '|---|---|---:|---:|---:|---|---|']
    for r in rows:
        lines.append(f'| {r["scenario"]} | {r["figure"]} | {fmt(r["unit"], r["warren"])} | '
                     f'{fmt(r["unit"], r["rabbitmq"])} | '
                     f'{"%.2f" % r["ratio"] if r["ratio"] is not None else "n/a"} | '
                     f'{", ".join("%.2f" % x for x in r["per_rep_ratios"])} | {r["better"]} |')
    runs = ['| run | wall | sent | confirmed | received | whole-run rate | blocked | load | broker '
            '| others | irq | errors |',
            '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    restarts = ['| broker | rep | after | stop took | listening | AMQP open | queue seen | '
                'all reported | last count |', '|---|---:|---|---:|---:|---:|---:|---:|---:|']
    for res in results:
        for run in res.get('runs', []):
            j = run['tool'] or {}
            rate = (j.get('received_rate') if run['tag'].endswith('drain')
                    else j.get('confirmed_rate'))
            runs.append(
                f'| {run["tag"]} | {run["wall_s"]:.1f} s | {j.get("sent", 0):,} | '
                f'{j.get("confirmed", 0):,} | {j.get("received", 0):,} | {fmt("rate", rate)} | '
                f'{j.get("blocked_s", 0):.1f} s | {run["load_cores"]:.2f} | {run["broker_cores"]:.2f} | '
                f'{run["other_cores"]:.2f}{" (disturbed)" if run["disturbed"] else ""} | '
                f'{run["irq_cores"]:.2f} | {"; ".join(run["errors"])} |')
        for r in res.get('restarts', []):
            restarts.append(
                f'| {res["broker"]} | {res["rep"]} | {r["how"]} | {r["stop_s"]:.2f} s'
                f'{"" if r["stop_clean"] else " (NOT clean)"} | {fmt("s", r["listen_s"])} | '
                f'{fmt("s", r["amqp_s"])} | {fmt("s", r["queue_s"])} | {fmt("s", r["stored_s"])} '
                f'| {r["count"] if r["count"] is not None else "n/a"} |')
    return '\n'.join(lines), '\n'.join(runs), '\n'.join(restarts)


# ---- main ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--scenarios', default='1,2,3,4',
                    help='comma-separated ids (1-4; 4 is measured in 2\'s run, either selects it)')
    ap.add_argument('--quick', action='store_true',
                    help='a try-out: 100,000 messages, 5 s runs, 1 s warm-up, 5 s settle, 1 rep '
                         '(explicit flags still win)')
    ap.add_argument('--reps', type=int, help='runs per scenario and broker (default 3; quick 1)')
    ap.add_argument('--messages', type=int,
                    help='backlog size, scenarios 2-4 (default 1,000,000; quick 100,000)')
    ap.add_argument('--time', type=float, help='seconds of scenario 1 (default 20; quick 5)')
    ap.add_argument('--warmup', type=float,
                    help='seconds at the start of scenario 1 left out of its figure (default 5; '
                         'quick 1)')
    ap.add_argument('--settle', type=float,
                    help='seconds after the drain before the disk is measured (default 10; '
                         'quick 5)')
    ap.add_argument('--confirm', type=int, default=1000, help='publisher confirm window')
    ap.add_argument('--qos', type=int, default=1000, help='prefetch of the draining consumer')
    ap.add_argument('--rabbitmq-kill9', action='store_true',
                    help='scenario 3: also restart RabbitMQ after kill -9 of its beam.smp')
    ap.add_argument('--phase-timeout', type=float, default=1800,
                    help='seconds a publish or drain may take before it is cut short (-z)')
    ap.add_argument('--restart-timeout', type=float, default=900,
                    help='seconds to wait for a restarted broker to report every message')
    ap.add_argument('--stop-timeout', type=float, default=300,
                    help='seconds a clean stop may take before the broker is killed')
    ap.add_argument('--max-other', type=float, default=0.1,
                    help='flag a load run during which other processes used more than this share '
                         'of a core')
    bb.add_broker_args(ap)
    ap.add_argument('--rundir',
                    help='where data, logs and results go (default target/bench/durability-DATE)')
    ap.add_argument('--keep-data', action='store_true',
                    help='leave each scenario\'s broker data in the run directory')
    ap.add_argument('--json', action='store_true',
                    help='print the summary and runs as JSON on stdout (tables go to stderr)')
    args = ap.parse_args()
    for k, full, quick in (('reps', 3, 1), ('messages', 1_000_000, 100_000), ('time', 20, 5),
                           ('warmup', 5, 1), ('settle', 10, 5)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    wanted = {'2' if s == '4' else s for s in args.scenarios.split(',')}
    if not wanted <= set(SCENARIOS):
        ap.error(f'unknown scenario in {args.scenarios!r}')

    started = time.monotonic()
    rundir = os.path.abspath(args.rundir or os.path.join(
        bb.REPO, 'target', 'bench', f'durability-{time.strftime("%Y%m%d-%H%M%S")}'))
    os.makedirs(rundir, exist_ok=True)
    log(f'run directory {rundir}')
    bins = bb.prepare(args, rundir)
    meta = bb.run_meta(args, bins)
    logging.getLogger('pika').setLevel(logging.CRITICAL)  # refused connections while polling

    warren = bb.Warren(bins['server'], args.warren_port, rundir)
    rabbit = bb.RabbitMQ(args.rabbitmq_port, args.rabbitmq_dist_port, args.rabbitmq_node,
                         os.path.join(rundir, 'rabbitmq'))
    brokers = [warren, rabbit]
    results = []
    try:
        for sc in sorted(wanted):
            for rep in range(1, args.reps + 1):
                for b in bb.order(rep, brokers):
                    log(f'scenario {sc}, {b.name}, repetition {rep}')
                    results.append(SCENARIOS[sc](args, bins, b, rep, rundir))
    finally:
        warren.stop(keep_data=True)
        if rabbit.pid is None and rabbit.ctl('ping', timeout=30).returncode == 0:
            rabbit.pid = beam_pid(rabbit)  # launched but never seen ready
        rabbit.stop()
        meta['rabbitmq'], meta['otp'] = getattr(rabbit, 'versions', None) or (None, None)
        meta['elapsed_s'] = time.monotonic() - started
        rows = summarize(results, args)
        with open(os.path.join(rundir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, summary=rows, results=results), f, indent=1)

    summary, runs, restarts = tables(rows, results)
    out = sys.stderr if args.json else sys.stdout
    print(f'Warren (commit {meta["commit"]}{", dirty tree" if meta["dirty"] else ""}'
          f'{", binaries may not match it" if meta.get("binaries_may_not_match_commit") else ""}) vs '
          f'RabbitMQ {meta["rabbitmq"] or "?"} (OTP {meta["otp"] or "?"}), {meta["date"]}, {meta["cpu"]} x {meta["nproc"]}; '
          f'{args.reps} rep(s), medians; {args.messages:,} messages in scenarios 2-4, '
          f'{args.time:g} s in scenario 1; took {meta["elapsed_s"] / 60:.1f} min\n', file=out)
    print(summary, file=out)
    print('\nLoad runs (CPU in cores: 1.00 = one core busy for the whole run):\n', file=out)
    print(runs, file=out)
    if any(r.get('restarts') for r in results):
        print('\nRestarts (times from launching the process):\n', file=out)
        print(restarts, file=out)
    print(f'\nData, logs, per-run JSON, RSS samples and results.json in {rundir}', file=out)
    if args.json:
        json.dump(dict(meta=meta, summary=rows, results=results), sys.stdout, indent=1)
        print()
    failed = [run for r in results for run in r.get('runs', []) if run['errors']]
    missing = [r for r in rows if r['warren'] is None or
               (r['rabbitmq'] is None and r['key'] != 'restart_kill9_s')]
    return 1 if failed or missing else 0


if __name__ == '__main__':
    sys.exit(main())
