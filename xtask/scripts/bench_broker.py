#!/usr/bin/env python3
"""Warren against RabbitMQ, side by side on this machine, with the project's own load tool
(examples/load). Results go into docs/benchmarks.md, "Broker: Warren vs RabbitMQ".

    python3 xtask/scripts/bench_broker.py --build          # build, then everything: ~16 min
    python3 xtask/scripts/bench_broker.py                  # the binaries as they are
    python3 xtask/scripts/bench_broker.py --scenarios 1,5 --reps 1 --time 10

What it does:
- Starts its own brokers and stops them at the end: the reference server
  (target/release/examples/server, a temporary data directory, port 5691) and a RabbitMQ node
  `bench@localhost` (port 5690, distribution port 25690, mnesia and logs under /tmp/bench-rmq,
  no plugins, default configuration otherwise), run as the `rabbitmq` user so that rabbitmqctl
  and the node share /var/lib/rabbitmq/.erlang.cookie. A RabbitMQ already running on 5672 is
  left alone. The open-files limit is raised to 20,000 for both.
- Copies both binaries into the run directory first, so a rebuild during the run cannot
  change what is measured.
- Runs every scenario against both brokers with identical load-tool flags and `--json`,
  alternating (rep 1: Warren then RabbitMQ, rep 2: RabbitMQ then Warren, ...), `--reps` times,
  and takes the median per broker. Before each run it waits until no `cargo` or `rustc` process
  is running (other people build on this machine; a cargo whose process tree stays idle for
  60 s is taken as hung and ignored), and a run during which other processes used more than
  `--max-other` of a core is discarded and repeated (up to `--retries` times).
- Throughput is the delivery rate over the run's per-second samples after `--warmup` seconds
  (the tool has no warm-up of its own); latency is the tool's whole-run p50 and p99; idle
  memory is the tool's broker-RSS difference per connection, each repetition on a freshly
  started broker (a broker that already served a run keeps freed memory, which would hide the
  cost of new connections), plus the same difference read again near the end of the hold.
- Records, per run, the CPU time of the load tool (wait4), of the broker (/proc/PID/stat)
  and of everything else on the machine (/proc/stat), as shares of one core.

Prints a Markdown summary table and a per-run table; writes everything (including the tool's
JSON and its per-second lines) to the run directory (default /tmp/bench-broker-DATE).
"""
import argparse
import datetime
import json
import os
import platform
import pwd
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf('SC_CLK_TCK')
NOFILE = 20000

# id, short name, kind, load-tool flags (besides --uri, -z, --json), target
SCENARIOS = [
    dict(id='1', name='1 producer → 1 queue → 1 consumer, 16 B, flat out', kind='rate',
         flags=['-x', '1', '-y', '1', '-s', '16'], target=('ge', 5.0), target_text='≥ 5x (aim 10x)'),
    dict(id='2', name='1 → 1 → 1, 1 KiB bodies, flat out', kind='rate',
         flags=['-x', '1', '-y', '1', '-s', '1024'], target=('ge', 3.0), target_text='≥ 3x'),
    dict(id='3', name='fanout to 10 queues, 10 consumers, 16 B', kind='rate',
         flags=['-x', '1', '-y', '10', '-t', 'fanout', '--queues', '10', '-s', '16'],
         target=('ge', 3.0), target_text='≥ 3x'),
    dict(id='4', name='topic, 1,000 bindings on 1 queue, every key matches one, 16 B', kind='rate',
         flags=['-x', '1', '-y', '1', '-t', 'topic', '--bindings', '1000', '--topic-match', '1',
                '-s', '16'],
         target=('ge', 3.0), target_text='≥ 3x'),
    dict(id='5', name='latency at 10,000 msg/s, 1 → 1 → 1, 16 B', kind='latency',
         flags=['-x', '1', '-y', '1', '-s', '16', '-r', '10000'],
         target=('lt', 1.0), target_text='Warren lower'),
    dict(id='6', name='1,000 idle connections, 1 channel each', kind='idle',
         flags=['--idle-connections', '1000'], target=('le', 0.2), target_text='≤ 1/5'),
]


def log(msg):
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


# ---- /proc readings ---------------------------------------------------------------------

def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return None


def rss_kib(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def system_busy_s():
    """CPU time of the whole machine (all cores), seconds: (process time outside idle and
    iowait, interrupt time). Interrupt time (irq, softirq) is mostly the benchmark's own
    loopback traffic, charged to no process."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
    return (v[0] + v[1] + v[2] + v[7]) / CLK_TCK, (v[5] + v[6]) / CLK_TCK


def pgrep(name):
    r = subprocess.run(['pgrep', '-x', name], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def tree_cpu_s(pids):
    """CPU seconds used so far by these processes and all their descendants."""
    children = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open(f'/proc/{d}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += proc_cpu_s(p) or 0.0
        todo.extend(children.get(p, []))
    return total


HUNG_AFTER = 60  # seconds of an idle cargo tree after which it is taken as hung
HUNG = set()  # cargo processes already taken as hung (then 5 idle seconds are enough)


def wait_quiet():
    """Waits until no rustc runs and no cargo runs, or only a cargo whose process tree (its
    test binaries included) used under 2% of a core for HUNG_AFTER seconds in a row (a hung
    test: it would keep every measurement waiting). Returns (seconds waited, note)."""
    t0 = time.monotonic()
    waited_any = False
    idle_since = None
    note = ''
    while True:
        rustc, cargo = pgrep('rustc'), pgrep('cargo')
        if not rustc and not cargo:
            break
        if not waited_any and not (not rustc and set(cargo) <= HUNG):
            log('waiting: ' + ' and '.join(n for n, p in (('rustc', rustc), ('cargo', cargo)) if p)
                + ' running')
            waited_any = True
        if rustc:
            idle_since = None
            time.sleep(5)
            continue
        c0 = tree_cpu_s(cargo)
        time.sleep(5)
        if tree_cpu_s(cargo) - c0 >= 0.02 * 5:
            if not waited_any:
                log('waiting: cargo busy')
                waited_any = True
            idle_since = None
            continue
        idle_since = idle_since or time.monotonic() - 5
        if set(cargo) <= HUNG or time.monotonic() - idle_since >= HUNG_AFTER:
            note = f'cargo (pid {", ".join(map(str, cargo))}) present but idle (taken as hung)'
            if not set(cargo) <= HUNG:
                log(f'going ahead: {note}')
            HUNG.update(cargo)
            break
    waited = time.monotonic() - t0
    if waited_any and not note:
        log(f'quiet after {waited:.0f} s; settling 5 s')
        time.sleep(5)
        waited += 5
    return waited, note


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(('127.0.0.1', port)) == 0


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        time.sleep(0.1)
    return False


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
            if state == 'Z':
                return True
        except OSError:
            return True
        time.sleep(0.2)
    return False


# ---- brokers ---------------------------------------------------------------------------

class Warren:
    name = 'Warren'

    def __init__(self, binary, port, rundir, data_root=None):
        """`data_root`: where fresh data directories are made (default: the system's temp)."""
        self.binary, self.port, self.rundir, self.data_root = binary, port, rundir, data_root
        self.proc = None
        self.data = None
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid

    def launch(self, data=None):
        """Starts the process without waiting for it to listen: on `data` if given (to
        restart on what a previous start left), else on a fresh data directory."""
        if port_open(self.port):
            raise SystemExit(f'port {self.port} is already in use')
        self.starts += 1
        self.data = data or tempfile.mkdtemp(prefix='bench-warren-', dir=self.data_root)
        logf = open(os.path.join(self.rundir, f'warren-{self.starts}.log'), 'w')
        self.proc = subprocess.Popen(
            [self.binary, '--listen', f'127.0.0.1:{self.port}', '--data-dir', self.data,
             '--log-level', 'warn'],
            stdout=logf, stderr=subprocess.STDOUT)

    def start(self, data=None):
        self.launch(data)
        if not wait_port(self.port, 30):
            raise SystemExit('the Warren server did not start listening within 30 s')
        log(f'Warren started, pid {self.pid}')

    def stop(self, keep_data=False, kill=False, timeout=30):
        """SIGTERM (SIGKILL with `kill`) and wait, at most `timeout` s before a SIGKILL; the
        data directory is removed unless `keep_data`. Returns the exit status."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f'Warren did not stop within {timeout} s of SIGTERM; killing it')
            self.proc.kill()
            self.proc.wait()
        status = self.proc.returncode
        log(f'Warren stopped (exit status {status})')
        self.proc = None
        if not keep_data:
            shutil.rmtree(self.data, ignore_errors=True)
        return status


class RabbitMQ:
    name = 'RabbitMQ'

    def __init__(self, port, dist_port, node, base):
        self.port, self.dist_port, self.node, self.base = port, dist_port, node, base
        self.pid = None

    def ctl(self, *args, timeout=120):
        return subprocess.run(['rabbitmqctl', '-n', self.node, *args], capture_output=True,
                              text=True, timeout=timeout)

    def eval(self, expr):
        r = self.ctl('eval', expr)
        if r.returncode != 0:
            raise RuntimeError(f'rabbitmqctl eval {expr!r}: {r.stderr.strip()}')
        return r.stdout.strip()

    def start(self, fresh=True):
        """Starts the node and waits until it is up: a fresh node (new mnesia, new logs, no
        plugins) unless `fresh` is false (a restart on what the last start left)."""
        self.launch(fresh)
        self.wait_ready()

    @property
    def mnesia_dir(self):
        """The node's own data directory (message stores, queue indices, metadata)."""
        return os.path.join(self.base, 'mnesia', self.node)

    def launch(self, fresh=True):
        """Starts the node (detached) without waiting for it."""
        if port_open(self.port) or port_open(self.dist_port):
            raise SystemExit(f'port {self.port} or {self.dist_port} is already in use '
                             f'(a {self.node} node left running? rabbitmqctl -n {self.node} stop)')
        if fresh:
            self.reset()
        user = pwd.getpwnam('rabbitmq')
        env = dict(os.environ,
                   HOME=user.pw_dir,  # /var/lib/rabbitmq: the cookie rabbitmqctl uses too
                   RABBITMQ_NODENAME=self.node,
                   RABBITMQ_NODE_PORT=str(self.port),
                   RABBITMQ_DIST_PORT=str(self.dist_port),
                   RABBITMQ_MNESIA_BASE=os.path.join(self.base, 'mnesia'),
                   RABBITMQ_LOG_BASE=os.path.join(self.base, 'log'),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, 'enabled_plugins'))
        # Straight to the real script as the rabbitmq user (the /usr/sbin wrapper goes through
        # `su`, whose PAM session resets the open-files limit to 1024).
        r = subprocess.run(['/usr/lib/rabbitmq/bin/rabbitmq-server', '-detached'], env=env,
                           user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                           cwd=user.pw_dir, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f'rabbitmq-server -detached failed: {r.stdout}{r.stderr}')

    def reset(self):
        """A new, empty base directory, owned by the rabbitmq user."""
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.base)
        with open(os.path.join(self.base, 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        user = pwd.getpwnam('rabbitmq')
        for dirpath, _, files in os.walk(self.base):
            os.chown(dirpath, user.pw_uid, user.pw_gid)
            for fn in files:
                os.chown(os.path.join(dirpath, fn), user.pw_uid, user.pw_gid)

    def wait_ready(self):
        """Waits until the launched node answers, has booted and listens; sets `pid`."""
        deadline = time.monotonic() + 120
        while True:
            if self.ctl('ping', timeout=30).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f'{self.node} did not answer ping within 120 s')
            time.sleep(1)
        r = self.ctl('await_startup', '--timeout', '120', timeout=150)
        if r.returncode != 0:
            raise SystemExit(f'await_startup: {r.stderr}')
        self.pid = int(self.eval('list_to_integer(os:getpid()).'))
        if not wait_port(self.port, 30):
            raise SystemExit(f'{self.node} is not listening on {self.port}')
        log(f'RabbitMQ {self.node} started, pid {self.pid}')

    def version(self):
        return (self.eval('{ok, V} = application:get_key(rabbit, vsn), V.').strip('"'),
                self.eval('erlang:system_info(otp_release).').strip('"'))

    def stop(self, kill=False, timeout=60):
        """`rabbitmqctl stop` (a clean stop), or SIGKILL to the VM with `kill`; waits until
        the VM is gone (after a clean stop at most `timeout` s, then SIGKILL). The base
        directory stays. Returns whether the stop was clean."""
        if self.pid is None:
            return None
        if kill:
            os.kill(self.pid, signal.SIGKILL)
            wait_gone(self.pid, 30)
            log(f'RabbitMQ {self.node} killed')
            self.pid = None
            return False
        clean = True
        r = self.ctl('stop', timeout=max(120, timeout))
        if r.returncode != 0:
            log(f'rabbitmqctl stop: {r.stderr.strip()}')
            clean = False
        if not wait_gone(self.pid, timeout):
            log(f'{self.node} still running {timeout} s after stop; killing pid {self.pid}')
            os.kill(self.pid, signal.SIGKILL)
            wait_gone(self.pid, 10)
            clean = False
        log(f'RabbitMQ {self.node} stopped')
        self.pid = None
        return clean


# ---- runs ------------------------------------------------------------------------------

def run_load(load, broker, sc, args, rep, rundir):
    """One run of the load tool; returns a record of it."""
    waited, note = wait_quiet()
    flags = ['--uri', f'amqp://guest:guest@127.0.0.1:{broker.port}/%2f',
             *sc['flags'], '-z', str(args.idle_time if sc['kind'] == 'idle' else args.time),
             '--json']
    if sc['kind'] == 'idle':
        flags += ['--broker-pid', str(broker.pid)]
    tag = f's{sc["id"]}-{broker.name.lower()}-{rep}'
    n = 1
    while os.path.exists(os.path.join(rundir, tag + '.json')):
        n += 1
        tag = f's{sc["id"]}-{broker.name.lower()}-{rep}.{n}'
    out_path = os.path.join(rundir, tag + '.json')
    err_path = os.path.join(rundir, tag + '.log')
    rss0 = rss_kib(broker.pid)
    cpu_b0, (busy0, irq0), t0 = proc_cpu_s(broker.pid), system_busy_s(), time.monotonic()
    late_rss = None
    with open(out_path, 'w') as out, open(err_path, 'w') as err:
        p = subprocess.Popen([load, *flags], stdout=out, stderr=err)
        if sc['kind'] == 'idle':
            # A second reading near the end of the hold, long after the tool's own (2 s after
            # the last connection opened): idle Erlang processes hibernate after a while.
            time.sleep(max(0.0, args.idle_time - 2))
            if p.poll() is None:
                late_rss = rss_kib(broker.pid)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    cpu_b1, (busy1, irq1) = proc_cpu_s(broker.pid), system_busy_s()
    load_cpu = ru.ru_utime + ru.ru_stime
    broker_cpu = (cpu_b1 - cpu_b0) if cpu_b0 is not None and cpu_b1 is not None else None
    rec = dict(scenario=sc['id'], broker=broker.name, rep=rep, flags=flags, exit=p.returncode,
               wall_s=wall, waited_for_build_s=waited, quiet_note=note,
               load_cores=load_cpu / wall,
               broker_cores=broker_cpu / wall if broker_cpu is not None else None,
               other_cores=(busy1 - busy0 - load_cpu - (broker_cpu or 0)) / wall,
               irq_cores=(irq1 - irq0) / wall,
               broker_rss_before_kib=rss0, broker_rss_after_kib=rss_kib(broker.pid))
    try:
        with open(out_path) as f:
            j = json.load(f)
    except (OSError, ValueError) as e:
        rec['errors'] = [f'no JSON summary: {e}']
        log(f'{tag}: exit {p.returncode}, no JSON summary (see {err_path})')
        return rec
    rec['errors'] = j.get('errors', [])
    if sc['kind'] == 'idle':
        rec.update(opened=j['opened'], open_s=j['open_s'],
                   rss_before=j['broker_rss_before_kib'], rss_after=j['broker_rss_after_kib'],
                   value=j['broker_kib_per_connection'])
        if late_rss is not None and j['broker_rss_before_kib'] is not None and j['opened']:
            rec['rss_late'] = late_rss
            rec['value_late'] = (late_rss - j['broker_rss_before_kib']) / j['opened']
        log(f'{tag}: {rec["value"]:.1f} KiB per connection (late reading '
            f'{rec.get("value_late", float("nan")):.1f}), opened {j["opened"]} in '
            f'{j["open_s"]:.2f} s; load {rec["load_cores"]:.2f}, broker '
            f'{rec["broker_cores"]:.2f}, others {rec["other_cores"]:.2f}, irq {rec["irq_cores"]:.2f} cores'
            + (f'; ERRORS {rec["errors"]}' if rec['errors'] else ''))
        return rec
    samples = j['samples']
    prev_t = 0.0
    num = den = 0.0
    for s in samples:
        dt = s['time_s'] - prev_t
        prev_t = s['time_s']
        if s['time_s'] > args.warmup + 0.5:
            num += s['received_rate'] * dt
            den += dt
    steady = num / den if den else None
    copies = 10 if sc['id'] == '3' else 1
    rec.update(sent=j['sent'], received=j['received'], duration_s=j['duration_s'],
               sent_rate=j['sent_rate'], received_rate=j['received_rate'],
               steady_received_rate=steady, blocked_s=j['blocked_s'],
               backlog_at_end=j['sent'] * copies - j['received'],
               latency_us=j['latency_us'],
               steady_p99_max_us=max((s['latency_us']['p99'] for s in samples
                                      if s['time_s'] > args.warmup + 0.5), default=None))
    if sc['kind'] == 'latency':
        rec['value'] = j['latency_us']['p50']
        rec['value_p99'] = j['latency_us']['p99']
        what = (f'p50 {j["latency_us"]["p50"]:.0f} µs, p99 {j["latency_us"]["p99"]:.0f} µs at '
                f'{j["received_rate"]:.0f} msg/s received')
    else:
        rec['value'] = steady
        what = (f'{steady:,.0f} msg/s received after warm-up ({j["received_rate"]:,.0f} whole '
                f'run), sent {j["sent_rate"]:,.0f}/s, backlog at end {rec["backlog_at_end"]:,}')
    log(f'{tag}: {what}; load {rec["load_cores"]:.2f}, broker {rec["broker_cores"]:.2f}, '
        f'others {rec["other_cores"]:.2f}, irq {rec["irq_cores"]:.2f} cores'
        + (f', blocked {j["blocked_s"]:.1f} s' if j['blocked_s'] else '')
        + (f'; ERRORS {rec["errors"]}' if rec['errors'] else ''))
    return rec


def order(rep, brokers):
    """ABBA: Warren first on odd repetitions, RabbitMQ first on even ones."""
    return brokers if rep % 2 == 1 else list(reversed(brokers))


# ---- report ----------------------------------------------------------------------------

def fmt_rate(v):
    return f'{v / 1000:,.1f} k msg/s' if v is not None else 'n/a'


def med(recs, key='value'):
    vals = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def verdict(target, ratio):
    if ratio is None:
        return 'n/a'
    op, x = target
    ok = {'ge': ratio >= x, 'le': ratio <= x, 'lt': ratio < x}[op]
    return 'met' if ok else 'MISSED'


def report(results, args):
    by = {}
    for r in results:
        by.setdefault((r['scenario'], r['broker']), []).append(r)
    lines = ['| # | scenario | Warren | RabbitMQ | Warren / RabbitMQ | per-rep ratios | target | |',
             '|---|---|---:|---:|---:|---|---|---|']

    def row(sc, label, w, r, fmt, key='value'):
        wm, rm = med(w, key), med(r, key)
        ratio = wm / rm if wm is not None and rm else None
        pairs = sorted(zip(sorted(w, key=lambda x: x['rep']), sorted(r, key=lambda x: x['rep'])),
                       key=lambda p: p[0]['rep'])
        per = ', '.join(f'{a[key] / b[key]:.2f}' for a, b in pairs
                        if a.get(key) is not None and b.get(key))
        lines.append(f'| {sc["id"]} | {label} | {fmt(wm)} | {fmt(rm)} | '
                     f'{"%.2f" % ratio if ratio is not None else "n/a"} | {per} | '
                     f'{sc["target_text"]} | {verdict(sc["target"], ratio)} |')

    for sc in SCENARIOS:
        w, r = by.get((sc['id'], 'Warren'), []), by.get((sc['id'], 'RabbitMQ'), [])
        if not w and not r:
            continue
        if sc['kind'] == 'rate':
            row(sc, sc['name'], w, r, fmt_rate)
        elif sc['kind'] == 'latency':
            us = lambda v: f'{v:,.0f} µs' if v is not None else 'n/a'
            row(sc, sc['name'] + ': p50', w, r, us)
            row(sc, sc['name'] + ': p99', w, r, us, 'value_p99')
        else:
            kib = lambda v: f'{v:,.1f} KiB' if v is not None else 'n/a'
            row(sc, sc['name'] + ': broker RSS per connection', w, r, kib)
            row(sc, '… the same, read again near the end of the hold', w, r, kib, 'value_late')

    runs = ['| # | broker | rep | figure | whole-run received/s | sent/s | backlog at end | '
            'load tool | broker | others | irq | broker RSS after | errors |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for r in results:
        if 'value' not in r:
            fig = 'failed'
        elif r['scenario'] == '6':
            fig = f'{r["value"]:.1f} / {r.get("value_late", float("nan")):.1f} KiB'
        elif r['scenario'] == '5':
            fig = f'p50 {r["value"]:,.0f} / p99 {r["value_p99"]:,.0f} µs'
        else:
            fig = f'{r["value"]:,.0f}'
        rate = lambda k: f'{r[k]:,.0f}' if k in r else ''
        runs.append(
            f'| {r["scenario"]} | {r["broker"]} | {r["rep"]} | {fig} | {rate("received_rate")} | '
            f'{rate("sent_rate")} | {rate("backlog_at_end")} | {r["load_cores"]:.2f} | '
            f'{r["broker_cores"]:.2f} | {r["other_cores"]:.2f} | {r["irq_cores"]:.2f} | '
            f'{(r["broker_rss_after_kib"] or 0) / 1024:,.0f} MiB | '
            f'{"; ".join(r["errors"]) if r["errors"] else ""}{" exit %d" % r["exit"] if r["exit"] else ""} |')
    return '\n'.join(lines), '\n'.join(runs)


# ---- set-up shared with bench_durability.py -------------------------------------------

def prepare(args, rundir):
    """Builds (with `args.build`), copies the server and load binaries into `rundir` and
    raises the open-files limit; returns the binaries' paths."""
    if args.build:
        log('cargo build --release --example server --example load')
        subprocess.run(['cargo', 'build', '--release', '--example', 'server', '--example', 'load'],
                       cwd=REPO, check=True)
    bins = {}
    for b in ('server', 'load'):
        src = os.path.join(args.target_dir, b)
        if not os.path.exists(src):
            raise SystemExit(f'{src} is missing: cargo build --release --example server '
                             '--example load')
        bins[b] = os.path.join(rundir, b)
        shutil.copy2(src, bins[b])

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return bins


def run_meta(args, bins):
    """Date, commit, machine and arguments of a run; warns if the binaries may not match
    the commit."""
    def sh(*cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        return r.stdout.strip()

    model = next((l.split(':', 1)[1].strip() for l in sh('lscpu').splitlines()
                  if l.startswith('Model name')), '?')
    meta = dict(date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                commit=sh('git', 'rev-parse', '--short', 'HEAD'),
                dirty=bool(sh('git', 'status', '--porcelain', '--untracked-files=no')),
                cpu=model, nproc=os.cpu_count(), kernel=platform.release(),
                nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                args=vars(args), argv=sys.argv,
                binaries={b: time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(os.path.getmtime(p)))
                          for b, p in bins.items()})
    head_time = int(sh('git', 'log', '-1', '--format=%ct') or 0)
    stale = [b for b, p in bins.items() if os.path.getmtime(p) < head_time]
    if stale or meta['dirty']:
        log(f'warning: {", ".join(stale) + " built before the last commit" if stale else ""}'
            f'{"; " if stale and meta["dirty"] else ""}{"uncommitted changes" if meta["dirty"] else ""}'
            ': the binaries may not match the commit recorded (use --build on a clean tree)')
        meta['binaries_may_not_match_commit'] = True
    return meta


# ---- main ------------------------------------------------------------------------------

def add_broker_args(ap):
    """The options every side-by-side script shares: the ports, the RabbitMQ node, the build."""
    ap.add_argument('--warren-port', type=int, default=5691)
    ap.add_argument('--rabbitmq-port', type=int, default=5690)
    ap.add_argument('--rabbitmq-dist-port', type=int, default=25690)
    ap.add_argument('--rabbitmq-node', default='bench@localhost')
    ap.add_argument('--build', action='store_true',
                    help='cargo build --release --example server --example load first')
    ap.add_argument('--target-dir', default=os.path.join(REPO, 'target', 'release', 'examples'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--scenarios', default='1,2,3,4,5,6', help='comma-separated ids (1-6)')
    ap.add_argument('--reps', type=int, default=3, help='runs per scenario and broker')
    ap.add_argument('--time', type=float, default=20, help='seconds per run (-z)')
    ap.add_argument('--warmup', type=float, default=5,
                    help='seconds at the start of a run left out of the throughput figure')
    ap.add_argument('--idle-time', type=float, default=20,
                    help='seconds to hold the idle connections (-z)')
    ap.add_argument('--pause', type=float, default=3, help='seconds between runs')
    ap.add_argument('--max-other', type=float, default=0.1,
                    help='a throughput or latency run during which other processes used more '
                         'than this share of a core is discarded and repeated')
    ap.add_argument('--retries', type=int, default=4,
                    help='repeats of a disturbed run before its last attempt is kept (flagged)')
    add_broker_args(ap)
    ap.add_argument('--rabbitmq-base', default='/tmp/bench-rmq')
    ap.add_argument('--rundir', help='where logs and results go (default /tmp/bench-broker-DATE)')
    args = ap.parse_args()
    wanted = set(args.scenarios.split(','))
    scenarios = [s for s in SCENARIOS if s['id'] in wanted]
    if not scenarios:
        ap.error('no known scenario selected')

    started = time.monotonic()
    rundir = args.rundir or f'/tmp/bench-broker-{time.strftime("%Y%m%d-%H%M%S")}'
    os.makedirs(rundir, exist_ok=True)
    bins = prepare(args, rundir)
    meta = run_meta(args, bins)

    warren = Warren(bins['server'], args.warren_port, rundir)
    rabbit = RabbitMQ(args.rabbitmq_port, args.rabbitmq_dist_port, args.rabbitmq_node,
                      args.rabbitmq_base)
    brokers = [warren, rabbit]
    results, discarded = [], []
    try:
        # Idle connections first, each repetition on freshly started brokers.
        for sc in [s for s in scenarios if s['kind'] == 'idle']:
            for rep in range(1, args.reps + 1):
                for b in order(rep, brokers):
                    b.start()
                    if b is rabbit and 'rabbitmq' not in meta:
                        meta['rabbitmq'], meta['otp'] = rabbit.version()
                    time.sleep(10)  # let a fresh broker finish its start-up allocations
                    results.append(run_load(bins['load'], b, sc, args, rep, rundir))
                    b.stop()
        busy = [s for s in scenarios if s['kind'] != 'idle']
        if busy:
            for b in brokers:
                b.start()
            if 'rabbitmq' not in meta:
                meta['rabbitmq'], meta['otp'] = rabbit.version()
            time.sleep(5)
            for sc in busy:
                for rep in range(1, args.reps + 1):
                    for b in order(rep, brokers):
                        for attempt in range(args.retries + 1):
                            rec = run_load(bins['load'], b, sc, args, rep, rundir)
                            time.sleep(args.pause)
                            rec['attempt'] = attempt + 1
                            if rec['other_cores'] <= args.max_other:
                                break
                            if attempt < args.retries:
                                log(f'discarded: other processes used {rec["other_cores"]:.2f} '
                                    f'cores during the run; repeating it')
                                discarded.append(rec)
                            else:
                                log(f'keeping a disturbed run after {attempt + 1} attempts')
                                rec['disturbed'] = True
                        results.append(rec)
    finally:
        for b in brokers:
            try:
                b.stop()
            except Exception as e:  # keep stopping the others
                log(f'stopping {b.name}: {e}')
        meta['elapsed_s'] = time.monotonic() - started
        with open(os.path.join(rundir, 'results.json'), 'w') as f:
            json.dump(dict(meta=meta, results=results, discarded=discarded), f, indent=1)

    summary, runs = report(results, args)
    print(f'Warren (commit {meta["commit"]}{", dirty tree" if meta["dirty"] else ""}'
          f'{", binaries may not match it" if meta.get("binaries_may_not_match_commit") else ""}) vs '
          f'RabbitMQ {meta.get("rabbitmq", "?")} (OTP {meta.get("otp", "?")}), '
          f'{meta["date"]}, {meta["cpu"]} x {meta["nproc"]}; {args.reps} runs each of '
          f'{args.time:g} s (throughput over the last {args.time - args.warmup:g} s), '
          f'medians; took {meta["elapsed_s"] / 60:.1f} min\n')
    print(summary)
    print('\nPer run (CPU in cores: 1.00 = one core busy for the whole run):\n')
    print(runs)
    if discarded:
        print(f'\n{len(discarded)} run(s) discarded and repeated because other processes used '
              f'more than {args.max_other:g} of a core: '
              + ', '.join(f's{d["scenario"]} {d["broker"]} rep {d["rep"]} ({d["other_cores"]:.2f})'
                          for d in discarded))
    disturbed = [r for r in results if r.get('disturbed')]
    if disturbed:
        print(f'{len(disturbed)} kept run(s) were disturbed (see "others").')
    print(f'\nLogs, per-run JSON and results.json in {rundir}')
    failed = [r for r in results if r['errors'] or r['exit']]
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
