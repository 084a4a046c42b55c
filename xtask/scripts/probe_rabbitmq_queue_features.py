#!/usr/bin/env python3
"""Probe a live RabbitMQ for its queue features: dead-lettering (the x-death header octet by
octet, with AMQP field-table type codes), dead-letter cycles, x-max-length(-bytes) with each
x-overflow, x-expires, message TTL, priorities, single active consumer, consumer priorities,
invalid arguments and policies. The findings are written up in docs/design/queue-features.md
(probed on RabbitMQ 3.10.8).

Needs a RabbitMQ on 127.0.0.1:5672 with guest/guest, `rabbitmqctl` on PATH (section 9 sets and
clears policies and operator policies named `qf-*`), and pika (for its frame codec). The client
is the raw-socket one of probe_rabbitmq_broker.py; header tables are decoded here a second time
from the raw content-header octets so that every value shows its wire type code
(`l` long, `S` longstr, `T` timestamp, `A` array, `F` table, ...), in wire order.

    python3 xtask/scripts/probe_rabbitmq_queue_features.py          # every section
    python3 xtask/scripts/probe_rabbitmq_queue_features.py 1 2      # sections 1 and 2 only

Each line is `label: outcome`. Typed values print as CODE:value, e.g.
`x-death=A[F{count=l:1, reason=S:"rejected", ...}]`. All names used start with `qf.`.
"""
import argparse, json, os, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_rabbitmq_broker as pb  # noqa: E402  (the client, R, fmt, evs, ctl, QD, ...)
from probe_rabbitmq_broker import Conn, Ev, R, fmt, evs, ctl, QD, NOTHING  # noqa: E402
from pika import spec  # noqa: E402

P = spec.BasicProperties


# -- raw header decoding ------------------------------------------------------------------
# pika folds 'I'/'l', 'S'/'x', ... into Python types; keep the raw properties octets of every
# content header so the headers table can be decoded with its type codes.
_orig_props_decode = spec.BasicProperties.decode
def _props_decode(self, encoded, offset=0):
    self._raw = bytes(encoded[offset:])
    return _orig_props_decode(self, encoded, offset)
spec.BasicProperties.decode = _props_decode


def _dec_value(b, i):
    t = chr(b[i]); i += 1
    fixed = {'b': '>b', 'B': '>B', 's': '>h', 'u': '>H', 'I': '>i', 'i': '>I', 'l': '>q',
             'L': '>Q', 'f': '>f', 'd': '>d', 'T': '>Q'}
    if t in fixed:
        v = struct.unpack_from(fixed[t], b, i)[0]
        return (t, v), i + struct.calcsize(fixed[t])
    if t == 't':
        return (t, bool(b[i])), i + 1
    if t == 'D':
        scale, v = struct.unpack_from('>Bi', b, i)
        return (t, (scale, v)), i + 5
    if t in 'Sx':
        n = struct.unpack_from('>I', b, i)[0]
        return (t, bytes(b[i + 4:i + 4 + n])), i + 4 + n
    if t == 'A':
        n = struct.unpack_from('>I', b, i)[0]
        end = i + 4 + n
        i += 4
        out = []
        while i < end:
            v, i = _dec_value(b, i)
            out.append(v)
        return (t, out), end
    if t == 'F':
        n = struct.unpack_from('>I', b, i)[0]
        return (t, _dec_table(b[i + 4:i + 4 + n])), i + 4 + n
    if t == 'V':
        return (t, None), i
    raise ValueError('unknown field type %r' % t)


def _dec_table(b):
    out, i = [], 0
    while i < len(b):
        n = b[i]
        k = bytes(b[i + 1:i + 1 + n]).decode()
        v, i = _dec_value(b, i + 1 + n)
        out.append((k, v))
    return out


def typed_headers(props):
    """The headers table of a received message as [(key, (code, value))] in wire order."""
    raw = getattr(props, '_raw', None)
    if raw is None:
        return None
    flags = struct.unpack_from('>H', raw, 0)[0]
    i = 2
    for bit in (0x8000, 0x4000):            # content-type, content-encoding: shortstr
        if flags & bit:
            i += 1 + raw[i]
    if not flags & 0x2000:
        return None
    n = struct.unpack_from('>I', raw, i)[0]
    return _dec_table(raw[i + 4:i + 4 + n])


def tv(v):
    code, x = v
    if code in 'Sx':
        try:
            return '%s:"%s"' % (code, x.decode())
        except UnicodeDecodeError:
            return '%s:%r' % (code, x)
    if code == 'A':
        return 'A[' + ', '.join(tv(e) for e in x) + ']'
    if code == 'F':
        return 'F{' + ', '.join('%s=%s' % (k, tv(e)) for k, e in x) + '}'
    if code == 'T':
        return 'T:%d(now%+d)' % (x, x - int(time.time()))
    return '%s:%r' % (code, x)


def th(props):
    t = typed_headers(props)
    if t is None:
        return '(no headers)'
    return '{' + ', '.join('%s=%s' % (k, tv(v)) for k, v in t) + '}'


def props_no_headers(props):
    d = {k: v for k, v in vars(props).items()
         if not k.startswith('_') and v is not None and k != 'headers'}
    return d or '{}'


# -- helpers --------------------------------------------------------------------------------
def ts(v): return pb.Typed(b'T', '>Q', v)


def cleanup(*queues, exchanges=()):
    pb.cleanup(*queues, exchanges=exchanges)


def declare(c, name, ch=1, **args):
    """Delete and declare a queue with the given x- arguments (keyword `x_foo` = `x-foo`)."""
    c.call(ch, spec.Queue.Delete(queue=name))
    a = {k.replace('_', '-'): v for k, v in args.items()}
    r = c.call(ch, QD(name, arguments=a))
    assert isinstance(r, Ev) and r.is_(spec.Queue.DeclareOk), fmt(r)
    return r


def count(c, q, ch=1):
    r = c.call(ch, QD(q, passive=True))
    if isinstance(r, Ev) and r.is_(spec.Queue.DeclareOk):
        return r.method.message_count
    return fmt(r)


def get(c, q, ch=1, no_ack=True):
    r = c.call(ch, spec.Basic.Get(queue=q, no_ack=no_ack))
    if isinstance(r, Ev) and r.is_(spec.Basic.GetOk):
        return r
    return None


def bodies(c, q, ch=1):
    out = []
    while True:
        e = get(c, q, ch)
        if e is None:
            return out
        out.append(e.body.decode())


def show(label, e):
    """Print a dead-lettered (or any) message: how it came, its properties, its typed headers."""
    if e is None:
        R(label, 'nothing (basic.get-empty)')
        return
    m = e.method
    R(label, 'body=%r exchange=%r routing_key=%r redelivered=%r' % (
        e.body, m.exchange, m.routing_key, getattr(m, 'redelivered', None)))
    R('  properties (headers aside)', props_no_headers(e.props))
    R('  headers', th(e.props))


def xdeath_summary(e):
    """[(queue, reason, count)] of the x-death of a message, in order."""
    if e is None:
        return 'nothing'
    h = (e.props.headers or {}).get('x-death')
    if not isinstance(h, list):
        return repr(h)
    return [(d.get('queue'), d.get('reason'), d.get('count')) if isinstance(d, dict) else d
            for d in h]


def bind(c, q, x, *keys, ch=1, arguments=None):
    for k in keys:
        r = c.call(ch, spec.Queue.Bind(queue=q, exchange=x, routing_key=k, arguments=arguments))
        assert isinstance(r, Ev) and r.is_(spec.Queue.BindOk), fmt(r)


def xdecl(c, x, typ='direct', ch=1):
    c.call(ch, spec.Exchange.Delete(exchange=x))
    r = c.call(ch, spec.Exchange.Declare(exchange=x, type=typ))
    assert isinstance(r, Ev) and r.is_(spec.Exchange.DeclareOk), fmt(r)


def pub(c, x, rk, body, ch=1, **props):
    c.publish(ch, x, rk, body.encode() if isinstance(body, str) else body, props=P(**props))


def confirms(c, t=0.4):
    """acks / nacks / returns seen until t seconds of silence, compactly."""
    out = []
    for e in c.events(t):
        if not isinstance(e, Ev):
            out.append(fmt(e))
        elif e.is_(spec.Basic.Ack):
            out.append('ack %d%s' % (e.method.delivery_tag, ' multiple' if e.method.multiple else ''))
        elif e.is_(spec.Basic.Nack):
            out.append('nack %d%s%s' % (e.method.delivery_tag,
                                        ' multiple' if e.method.multiple else '',
                                        ' requeue' if e.method.requeue else ''))
        elif e.is_(spec.Basic.Return):
            out.append('return %d %s %r' % (e.method.reply_code, e.method.reply_text, e.body))
        else:
            out.append(fmt(e))
    return out


def deliveries(c, t=0.4):
    """[(consumer_tag, body)] delivered until t seconds of silence (other events dropped)."""
    return [(e.method.consumer_tag, e.body.decode()) for e in c.events(t)
            if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]


def queue_exists(names):
    """{name: exists?} from `rabbitmqctl list_queues` (which does not count as queue use)."""
    r = ctl('list_queues', '--no-table-headers', 'name')
    have = set(r.stdout.split())
    return {n: (n in have) for n in names}


# The dead-letter capture set-up shared by sections 1-3, 5 and 9:
# qf.dlx (direct) → qf.cap (keys k1, dlrk, qf.src, qf.other), qf.cap2 (k2), qf.cap3 (k3);
# qf.in (direct) is where probes publish.
CAPS = ('qf.cap', 'qf.cap2', 'qf.cap3')

def capture_setup(c):
    xdecl(c, 'qf.dlx')
    xdecl(c, 'qf.in')
    for q in CAPS:
        declare(c, q)
    bind(c, 'qf.cap', 'qf.dlx', 'k1', 'dlrk', 'qf.src', 'qf.other')
    bind(c, 'qf.cap2', 'qf.dlx', 'k2')
    bind(c, 'qf.cap3', 'qf.dlx', 'k3')


def caps_content(c):
    return {q: count(c, q) for q in CAPS}


SECTIONS = []
def section(title):
    def deco(f):
        SECTIONS.append((title, f))
        return f
    return deco


# -----------------------------------------------------------------------------------------
@section('1. x-death and the dead-lettered message')
def s1():
    c = Conn()
    capture_setup(c)

    def src(name='qf.src', keys=('k1',), **args):
        args.setdefault('x_dead_letter_exchange', 'qf.dlx')
        declare(c, name, **args)
        bind(c, name, 'qf.in', *keys)

    # a. basic.reject requeue=false
    src()
    pub(c, 'qf.in', 'k1', 'rej', message_id='m1', content_type='text/plain', delivery_mode=2,
        priority=3, headers={'h': 'v'})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    e = get(c, 'qf.cap')
    show('a. reject requeue=false (published to qf.in/k1), read from qf.cap', e)
    R('  the content header\'s property octets (hex)', e.props._raw.hex())
    R('  source queue count after', count(c, 'qf.src'))

    # b. nack requeue=false, and via a consumer
    pub(c, 'qf.in', 'k1', 'nack')
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Nack(delivery_tag=e.method.delivery_tag, multiple=False, requeue=False))
    c.sync()
    show('b. nack requeue=false', get(c, 'qf.cap'))
    pub(c, 'qf.in', 'k1', 'nack-consumer')
    c.sync()
    c.call(2, spec.Basic.Consume(queue='qf.src', consumer_tag='k'))
    d = [e for e in c.events(0.3) if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]
    c.send(2, spec.Basic.Nack(delivery_tag=d[0].method.delivery_tag, requeue=False))
    c.call(2, spec.Basic.Cancel(consumer_tag='k'))
    c.sync(2)
    R('b2. nack from a consumer: x-death reason', xdeath_summary(get(c, 'qf.cap')))
    # basic.nack multiple requeue=false of 2 → two dead-letters, in which order?
    pub(c, 'qf.in', 'k1', 'nm0'); pub(c, 'qf.in', 'k1', 'nm1')
    c.sync()
    get(c, 'qf.src', no_ack=False); e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Nack(delivery_tag=e.method.delivery_tag, multiple=True, requeue=False))
    c.sync()
    R('b3. nack multiple of 2: qf.cap order', bodies(c, 'qf.cap'))

    # c. queue TTL
    src(x_message_ttl=100)
    pub(c, 'qf.in', 'k1', 'qttl')
    c.sync()
    time.sleep(0.4)
    show('c. expired by x-message-ttl 100', get(c, 'qf.cap'))

    # d. per-message expiration
    src()
    pub(c, 'qf.in', 'k1', 'mttl', expiration='100', message_id='m4')
    c.sync()
    time.sleep(0.4)
    show('d. expired by expiration "100"', get(c, 'qf.cap'))
    src(x_message_ttl=100)
    pub(c, 'qf.in', 'k1', 'mttl-bigger', expiration='60000')
    c.sync()
    time.sleep(0.4)
    show('d2. queue TTL 100 < expiration "60000"', get(c, 'qf.cap'))
    src()
    pub(c, 'qf.in', 'k1', 'rej-with-exp', expiration='60000')
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    show('d3. rejected, had expiration "60000"', get(c, 'qf.cap'))

    # e. maxlen drop-head
    src(x_max_length=1)
    pub(c, 'qf.in', 'k1', 'old')
    pub(c, 'qf.in', 'k1', 'new')
    c.sync()
    show('e. x-max-length 1 drop-head: dead-lettered', get(c, 'qf.cap'))
    R('  left in the queue', bodies(c, 'qf.src'))

    # f. with x-dead-letter-routing-key
    src(x_dead_letter_routing_key='dlrk')
    pub(c, 'qf.in', 'k1', 'dlrk')
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    show('f. reject with x-dead-letter-routing-key "dlrk"', get(c, 'qf.cap'))

    # g. CC / BCC
    src(keys=('k1', 'k2', 'k3'))
    pub(c, 'qf.in', 'k1', 'ccbcc', headers={'CC': ['k2'], 'BCC': ['k3']})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    R('g. CC [k2] BCC [k3] published to k1: message in source', th(e.props))
    R('  source count (one copy per queue)', count(c, 'qf.src'))
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    R('  after reject: captures (qf.cap k1, qf.cap2 k2, qf.cap3 k3)', caps_content(c))
    show('  qf.cap', get(c, 'qf.cap'))
    show('  qf.cap2', get(c, 'qf.cap2'))
    show('  qf.cap3', get(c, 'qf.cap3'))
    src(keys=('k1', 'k2', 'k3'), x_dead_letter_routing_key='dlrk')
    pub(c, 'qf.in', 'k1', 'ccbcc-dlrk', headers={'CC': ['k2'], 'BCC': ['k3']})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    R('g2. same with x-dead-letter-routing-key dlrk: captures', caps_content(c))
    show('  qf.cap', get(c, 'qf.cap'))
    bodies(c, 'qf.cap2'); bodies(c, 'qf.cap3')
    # CC via the default exchange
    declare(c, 'qf.src', x_dead_letter_exchange='qf.dlx')
    pub(c, '', 'qf.src', 'cc-default', headers={'CC': ['qf.other']})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    show('g3. published to ""/qf.src with CC [qf.other], rejected', get(c, 'qf.cap'))

    # h. two deaths in different queues: qf.A (TTL) → "" / qf.B; qf.B reject → qf.dlx/k1
    declare(c, 'qf.B', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    declare(c, 'qf.A', x_message_ttl=100, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    bind(c, 'qf.A', 'qf.in', 'ka')
    pub(c, 'qf.in', 'ka', 'twice')
    c.sync()
    time.sleep(0.4)
    e = get(c, 'qf.B', no_ack=False)
    show('h. after expiry in qf.A, in qf.B', e)
    time.sleep(1.1)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    show('h. then rejected in qf.B (1.1 s later), in qf.cap', get(c, 'qf.cap'))

    # i. twice in the same queue for the same reason (reject loop qf.L → "" / qf.L)
    declare(c, 'qf.L', x_dead_letter_exchange='', x_dead_letter_routing_key='qf.L')
    declare(c, 'qf.M', x_dead_letter_exchange='', x_dead_letter_routing_key='qf.L')
    bind(c, 'qf.L', 'qf.in', 'kl')
    pub(c, 'qf.in', 'kl', 'loop')
    c.sync()
    e = get(c, 'qf.L', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    e = get(c, 'qf.L', no_ack=False)
    show('i. rejected once in qf.L (DLX "" → qf.L)', e)
    time.sleep(1.1)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    e = get(c, 'qf.L', no_ack=False)
    show('i. rejected twice in qf.L, 1.1 s apart', e)
    # now via qf.M: L(rejected x2), then M rejected, then L rejected again
    c.send(1, spec.Basic.Ack(delivery_tag=e.method.delivery_tag))
    c.sync()
    c.call(1, spec.Queue.Bind(queue='qf.M', exchange='qf.in', routing_key='km'))
    declare(c, 'qf.L', x_dead_letter_exchange='', x_dead_letter_routing_key='qf.M')
    bind(c, 'qf.L', 'qf.in', 'kl')
    pub(c, 'qf.in', 'kl', 'LML')
    c.sync()
    for q, nxt in (('qf.L', 'qf.M'), ('qf.M', 'qf.L')):
        e = get(c, q, no_ack=False)
        c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
        c.sync()
    # now in qf.L again (qf.M dead-letters to qf.L); qf.L dead-letters to qf.M
    e = get(c, 'qf.L', no_ack=False)
    R('i2. after L rejected, M rejected: x-death', xdeath_summary(e))
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    e = get(c, 'qf.M', no_ack=False)
    show('i2. then L rejected again: in qf.M', e)
    c.send(1, spec.Basic.Ack(delivery_tag=e.method.delivery_tag))
    c.sync()

    # j. same queue, different reasons: reject then expire in qf.src (loop through qf.L)
    declare(c, 'qf.T', x_message_ttl=100, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.T2')
    declare(c, 'qf.T2', x_dead_letter_exchange='', x_dead_letter_routing_key='qf.T')
    bind(c, 'qf.T', 'qf.in', 'kt')
    pub(c, 'qf.in', 'kt', 'reasons')
    c.sync()
    time.sleep(0.3)
    e = get(c, 'qf.T2', no_ack=False)   # expired in T
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()                            # rejected in T2 → T
    e = get(c, 'qf.T', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()                            # rejected in T → T2
    e = get(c, 'qf.T2', no_ack=True)
    show('j. expired in T, rejected in T2, rejected in T', e)

    # k. hand-made x-death headers
    src()
    now = int(time.time()) - 1000
    cases = [
        ('k1. x-death [matching entry count 5] (queue qf.src, reason rejected)',
         {'x-death': [{'count': pb.long_(5), 'reason': 'rejected', 'queue': 'qf.src',
                       'time': ts(now), 'exchange': 'pubx', 'routing-keys': ['zz']}]}),
        ('k2. x-death [entry for another queue, count 7]',
         {'x-death': [{'count': pb.long_(7), 'reason': 'expired', 'queue': 'elsewhere',
                       'time': ts(now), 'exchange': 'pubx', 'routing-keys': ['zz']}]}),
        ('k3. x-death "garbage" (longstr)', {'x-death': 'garbage'}),
        ('k4. x-death [S "foo"] (array of a non-table)', {'x-death': ['foo']}),
        ('k5. x-death [matching entry without count]',
         {'x-death': [{'reason': 'rejected', 'queue': 'qf.src'}]}),
        ('k6. x-death [matching entry count "5" (longstr)]',
         {'x-death': [{'count': '5', 'reason': 'rejected', 'queue': 'qf.src'}]}),
        ('k7. x-death [two matching entries count 2 and 3]',
         {'x-death': [{'count': pb.long_(2), 'reason': 'rejected', 'queue': 'qf.src'},
                      {'count': pb.long_(3), 'reason': 'rejected', 'queue': 'qf.src'}]}),
        ('k10. x-death [q1 expired, q2 expired, q3 expired]',
         {'x-death': [{'count': pb.long_(1), 'reason': 'expired', 'queue': 'q1'},
                      {'count': pb.long_(1), 'reason': 'expired', 'queue': 'q2'},
                      {'count': pb.long_(1), 'reason': 'expired', 'queue': 'q3'}]}),
        ('k11. x-death [q1 expired, qf.src rejected count 5, q3 expired]',
         {'x-death': [{'count': pb.long_(1), 'reason': 'expired', 'queue': 'q1'},
                      {'count': pb.long_(5), 'reason': 'rejected', 'queue': 'qf.src'},
                      {'count': pb.long_(1), 'reason': 'expired', 'queue': 'q3'}]}),
        ('k12. x-death [q1 expired count 2, q2 expired, q1 expired count 7]',
         {'x-death': [{'count': pb.long_(2), 'reason': 'expired', 'queue': 'q1'},
                      {'count': pb.long_(1), 'reason': 'expired', 'queue': 'q2'},
                      {'count': pb.long_(7), 'reason': 'expired', 'queue': 'q1'}]}),
        ('k13. x-death [q1 expired (no count), q1 expired (no count), q1 expired (no count)]',
         {'x-death': [{'reason': 'expired', 'queue': 'q1'}, {'reason': 'expired', 'queue': 'q1'},
                      {'reason': 'expired', 'queue': 'q1'}]}),
        ('k14. x-death [] (empty array)', {'x-death': []}),
        ('k15. x-death [F{} (empty table)]', {'x-death': [{}]}),
        ('k16. x-death [q1 expired count 1, S "foo"] (two entries, one not a table)',
         {'x-death': [{'count': pb.long_(1), 'reason': 'expired', 'queue': 'q1'}, 'foo']}),
        ('k8. x-first-death-reason "bogus", x-first-death-queue "q0" set by the publisher',
         {'x-first-death-reason': 'bogus', 'x-first-death-queue': 'q0'}),
        ('k9. x-last-death-reason "bogus" set by the publisher', {'x-last-death-reason': 'bogus'}),
    ]
    for label, headers in cases:
        pub(c, 'qf.in', 'k1', label.split('.')[0], headers=headers)
        r = c.sync()
        if r is not NOTHING:
            R(label, 'publish: ' + fmt(r))
            continue
        e = get(c, 'qf.src', no_ack=False)
        if e is None:
            R(label, 'not in qf.src')
            continue
        c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
        r = c.sync()
        if r is not NOTHING:
            R(label, 'reject: ' + fmt(r))
        show(label, get(c, 'qf.cap'))
    R('  qf.src count after the k cases', count(c, 'qf.src'))
    R('  (a lost message: the queue process crashed; see the RabbitMQ log)', '')

    # n. header order: publisher order kept on delivery? sorted after dead-lettering?
    src()
    pub(c, 'qf.in', 'k1', 'order', headers={'zz': 1, 'AA': 'x', 'mm': 2})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    R('n. headers zz, AA, mm: as delivered from qf.src', th(e.props))
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    R('  after dead-lettering (first death)', th(get(c, 'qf.cap').props))
    pub(c, 'qf.in', 'k1', 'order2', expiration='60000',
        headers={'zz': 1, 'x-death': [{'count': pb.long_(1), 'reason': 'expired',
                                       'queue': 'elsewhere'}], 'AA': 'x'})
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    R('n2. zz, x-death [other], AA + expiration "60000", rejected', th(get(c, 'qf.cap').props))

    # l. does a plain requeue (reject requeue=true) or channel close add anything? no DL
    pub(c, 'qf.in', 'k1', 'requeued')
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=True))
    c.sync()
    e = get(c, 'qf.src')
    R('l. reject requeue=true: headers of the redelivery', th(e.props))

    # m. DLX missing / queue deleted with messages / purge
    declare(c, 'qf.src', x_dead_letter_exchange='qf.nosuch')
    pub(c, '', 'qf.src', 'to-missing-dlx')
    c.sync()
    e = get(c, 'qf.src', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    R('m. reject with a missing DLX', c.sync())
    declare(c, 'qf.src', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.src', 'purged'); pub(c, '', 'qf.src', 'deleted')
    c.sync()
    c.call(1, spec.Queue.Purge(queue='qf.src'))
    pub(c, '', 'qf.src', 'deleted')
    c.sync()
    c.call(1, spec.Queue.Delete(queue='qf.src'))
    R('m2. purge, then delete with 1 message: anything dead-lettered?', caps_content(c))
    declare(c, 'qf.src', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.src', 'unacked-on-close')
    c.sync()
    c.call(3, spec.Basic.Get(queue='qf.src'))
    c.call(3, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(3)
    R('m3. unacked then channel closed: requeued (no DL)?',
      'qf.src=%s cap=%s' % (count(c, 'qf.src'), caps_content(c)))
    # a DLX that routes nowhere, confirms on the original publish unaffected
    c.close()
    cleanup('qf.src', 'qf.A', 'qf.B', 'qf.L', 'qf.M', 'qf.T', 'qf.T2', *CAPS,
            exchanges=('qf.dlx', 'qf.in'))


# -----------------------------------------------------------------------------------------
@section('2. dead-letter cycles')
def s2():
    c = Conn()
    # A → A by expiry
    declare(c, 'qf.A', x_message_ttl=200, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    pub(c, '', 'qf.A', 'cycle1')
    c.sync()
    t0 = time.monotonic()
    out = []
    for t in (0.1, 0.3, 0.5, 0.9):
        time.sleep(max(0, t0 + t - time.monotonic()))
        out.append('t=%.1f A=%s' % (t, count(c, 'qf.A')))
    R('a. A (ttl 200, DLX "" → A): counts', ', '.join(out))

    # A → B → A by expiry
    declare(c, 'qf.B', x_message_ttl=200, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    declare(c, 'qf.A', x_message_ttl=200, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    pub(c, '', 'qf.A', 'cycle2')
    c.sync()
    t0 = time.monotonic()
    out = []
    for t in (0.1, 0.3, 0.5, 0.7, 1.1):
        time.sleep(max(0, t0 + t - time.monotonic()))
        out.append('t=%.1f A=%s B=%s' % (t, count(c, 'qf.A'), count(c, 'qf.B')))
    R('b. A (ttl 200 → B), B (ttl 200 → A): counts', ', '.join(out))

    # A → A by reject: allowed, any number of times
    declare(c, 'qf.A', x_dead_letter_exchange='', x_dead_letter_routing_key='qf.A')
    pub(c, '', 'qf.A', 'cycle3')
    c.sync()
    for i in range(3):
        e = get(c, 'qf.A', no_ack=False)
        c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
        c.sync()
    e = get(c, 'qf.A')
    R('c. A → A by reject, 3 times: still there; x-death', xdeath_summary(e))

    # A rejected → B (ttl) → A: back (a reject in the cycle) ; then A expires → B: cycle
    declare(c, 'qf.B', x_message_ttl=200, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    declare(c, 'qf.A', x_message_ttl=400, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    pub(c, '', 'qf.A', 'cycle4')
    c.sync()
    e = get(c, 'qf.A', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    t0 = time.monotonic()
    out = []
    for t in (0.1, 0.3, 0.9, 1.3):
        time.sleep(max(0, t0 + t - time.monotonic()))
        out.append('t=%.1f A=%s B=%s' % (t, count(c, 'qf.A'), count(c, 'qf.B')))
    R('d. A rejected → B (ttl 200) → A (ttl 400) → B ...: counts', ', '.join(out))
    declare(c, 'qf.A', x_message_ttl=60000, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    pub(c, '', 'qf.A', 'cycle4b')
    c.sync()
    e = get(c, 'qf.A', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    time.sleep(0.4)
    R('d2. A rejected → B expired → back in A: x-death', xdeath_summary(get(c, 'qf.A')))

    # x-death history as d cycles: print it at each hop
    declare(c, 'qf.B', x_message_ttl=200, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    declare(c, 'qf.A', x_message_ttl=60000, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    pub(c, '', 'qf.A', 'hops')
    c.sync()
    e = get(c, 'qf.A', no_ack=False)
    c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
    c.sync()
    for hop in range(3):
        time.sleep(0.35)
        e = get(c, 'qf.A', no_ack=False)
        R('d3. hop %d: back in A, x-death' % hop, xdeath_summary(e) if e else 'not in A')
        if e is None:
            break
        # make A expire it now: requeue into a TTL-0 queue is not possible; re-publish instead
        c.send(1, spec.Basic.Ack(delivery_tag=e.method.delivery_tag))
        c.sync()
        declare(c, 'qf.A', x_message_ttl=1, x_dead_letter_exchange='',
                x_dead_letter_routing_key='qf.B')
        pub(c, '', 'qf.A', e.body, headers=e.props.headers)
        c.sync()
        time.sleep(0.1)
        R('  after A expires it (re-published with that x-death): A/B counts',
          '%s/%s' % (count(c, 'qf.A'), count(c, 'qf.B')))
        declare(c, 'qf.A', x_message_ttl=60000, x_dead_letter_exchange='',
                x_dead_letter_routing_key='qf.B')
    # three queues, automatic all the way: A → B → C → A (ttl)
    declare(c, 'qf.C', x_message_ttl=100, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    declare(c, 'qf.B', x_message_ttl=100, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.C')
    declare(c, 'qf.A', x_message_ttl=100, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.B')
    pub(c, '', 'qf.A', 'abc')
    c.sync()
    t0 = time.monotonic()
    out = []
    for t in (0.05, 0.15, 0.25, 0.35, 0.6):
        time.sleep(max(0, t0 + t - time.monotonic()))
        out.append('t=%.2f A=%s B=%s C=%s' % (t, count(c, 'qf.A'), count(c, 'qf.B'),
                                              count(c, 'qf.C')))
    R('d4. A → B → C → A, all ttl 100: counts', ', '.join(out))
    cleanup('qf.C')

    # maxlen cycle A → A
    declare(c, 'qf.A', x_max_length=1, x_dead_letter_exchange='',
            x_dead_letter_routing_key='qf.A')
    pub(c, '', 'qf.A', 'ml0'); pub(c, '', 'qf.A', 'ml1')
    c.sync()
    R('e. A max-length 1 (DLX "" → A), 2 published: contents', bodies(c, 'qf.A'))

    # cycle to one destination, the other destination still gets its copy
    xdecl(c, 'qf.fan', 'fanout')
    declare(c, 'qf.C')
    declare(c, 'qf.A', x_message_ttl=100, x_dead_letter_exchange='qf.fan')
    bind(c, 'qf.A', 'qf.fan', '')
    bind(c, 'qf.C', 'qf.fan', '')
    pub(c, '', 'qf.A', 'fan')
    c.sync()
    time.sleep(0.5)
    R('f. A (ttl 100, DLX fanout → A and C): counts', 'A=%s C=%s' % (count(c, 'qf.A'),
                                                                     count(c, 'qf.C')))
    R('  C has x-death', xdeath_summary(get(c, 'qf.C')))

    # hand-made x-death entries and the cycle rule
    for label, hdr in (
            ('g. A→A by expiry, publisher x-death [S "foo"]', {'x-death': ['foo']}),
            ('g2. A→A by expiry, publisher x-death [{qf.A, rejected}]',
             {'x-death': [{'count': pb.long_(1), 'reason': 'rejected', 'queue': 'qf.A'}]}),
            ('g3. A→A by expiry, publisher x-death [{qf.Z, rejected}]',
             {'x-death': [{'count': pb.long_(1), 'reason': 'rejected', 'queue': 'qf.Z'}]})):
        declare(c, 'qf.A', x_message_ttl=200, x_dead_letter_exchange='',
                x_dead_letter_routing_key='qf.A')
        pub(c, '', 'qf.A', 'hand', headers=hdr)
        c.sync()
        time.sleep(0.3)
        e = get(c, 'qf.A')
        R(label, 'after first expiry: %s' % (xdeath_summary(e) if e else 'dropped'))

    # expiry cycle entered with a queue name reached through a different exchange
    c.close()
    cleanup('qf.A', 'qf.B', 'qf.C', exchanges=('qf.fan',))


# -----------------------------------------------------------------------------------------
@section('3. x-max-length, x-max-length-bytes, x-overflow')
def s3():
    c = Conn()
    capture_setup(c)
    c.call(1, spec.Confirm.Select())
    for ov in ('drop-head', 'reject-publish', 'reject-publish-dlx'):
        declare(c, 'qf.ml', x_max_length=2, x_overflow=ov, x_dead_letter_exchange='qf.dlx',
                x_dead_letter_routing_key='k1')
        c.events(0.1)
        for i in range(4):
            pub(c, '', 'qf.ml', 'm%d' % i)
        R('%s, max 2, 4 published with confirms' % ov, confirms(c))
        R('  queue', bodies(c, 'qf.ml'))
        e = get(c, 'qf.cap')
        R('  dead-lettered (qf.cap) first: x-death', xdeath_summary(e))
        R('  dead-lettered bodies', ([e.body.decode()] if e else []) + bodies(c, 'qf.cap'))
        if e is not None:
            R('  headers', th(e.props))
    # mandatory to a full reject-publish queue
    declare(c, 'qf.ml', x_max_length=1, x_overflow='reject-publish')
    pub(c, '', 'qf.ml', 'a')
    c.publish(1, '', 'qf.ml', b'b-mandatory', mandatory=True)
    R('reject-publish max 1, 2nd publish mandatory', confirms(c))
    # one publish routed to a full reject-publish queue and an open queue
    declare(c, 'qf.ml2')
    xdecl(c, 'qf.fan', 'fanout')
    bind(c, 'qf.ml', 'qf.fan', '')
    bind(c, 'qf.ml2', 'qf.fan', '')
    pub(c, 'qf.fan', '', 'both')
    R('fanout to full reject-publish queue + open queue', confirms(c))
    R('  counts', 'qf.ml=%s qf.ml2=%s' % (count(c, 'qf.ml'), count(c, 'qf.ml2')))
    # reject-publish accepts again once there is room
    get(c, 'qf.ml')
    pub(c, '', 'qf.ml', 'after-room')
    R('reject-publish after a get made room', confirms(c))
    # unacked do not count
    declare(c, 'qf.ml', x_max_length=1, x_overflow='reject-publish')
    pub(c, '', 'qf.ml', 'u0')
    c.events(0.2)
    get(c, 'qf.ml', ch=2, no_ack=False)
    pub(c, '', 'qf.ml', 'u1')
    pub(c, '', 'qf.ml', 'u2')
    R('reject-publish max 1, 1 unacked, 2 published', confirms(c))
    # reject-publish without confirms: silent
    c2 = Conn()
    declare(c2, 'qf.ml', x_max_length=1, x_overflow='reject-publish')
    pub(c2, '', 'qf.ml', 'n0'); pub(c2, '', 'qf.ml', 'n1')
    R('reject-publish without confirms, 2 published', 'events %s; queue %s' % (
        evs(c2.events(0.3)), bodies(c2, 'qf.ml')))
    c2.close()
    # max-length 0
    for ov in ('drop-head', 'reject-publish', 'reject-publish-dlx'):
        declare(c, 'qf.ml', x_max_length=0, x_overflow=ov, x_dead_letter_exchange='qf.dlx',
                x_dead_letter_routing_key='k1')
        c.events(0.1)
        pub(c, '', 'qf.ml', 'zero')
        R('max-length 0 %s, no consumer' % ov, '%s; queue %s; dead-lettered %s' % (
            confirms(c), count(c, 'qf.ml'), xdeath_summary(get(c, 'qf.cap'))))
        c.call(3, spec.Basic.Consume(queue='qf.ml', consumer_tag='z', no_ack=True))
        pub(c, '', 'qf.ml', 'zero-c')
        evs_ = c.events(0.4)
        got = [e.body for e in evs_ if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]
        c.stash.extend(e for e in evs_ if isinstance(e, Ev) and not e.is_(spec.Basic.Deliver))
        R('max-length 0 %s, consumer waiting' % ov, 'delivered %s; %s; dead-lettered %s' % (
            got, confirms(c, 0.1), xdeath_summary(get(c, 'qf.cap'))))
        c.call(3, spec.Basic.Cancel(consumer_tag='z'))
    # x-max-length-bytes: bodies only?
    declare(c, 'qf.mb', x_max_length_bytes=10)
    c.events(0.1)
    for i in range(5):
        pub(c, '', 'qf.mb', 'b%03d' % i, headers={'pad': 'x' * 1000}, message_id='y' * 200)
    c.events(0.3)
    R('max-length-bytes 10, five 4-byte bodies with 1 kB headers', bodies(c, 'qf.mb'))
    pub(c, '', 'qf.mb', '0123456789')
    pub(c, '', 'qf.mb', '0')
    c.events(0.3)
    R('max-length-bytes 10: a 10-byte body then a 1-byte body', bodies(c, 'qf.mb'))
    pub(c, '', 'qf.mb', '0123456789A')
    R('max-length-bytes 10 drop-head: an 11-byte body alone', '%s; queue %s' % (
        confirms(c), bodies(c, 'qf.mb')))
    declare(c, 'qf.mb', x_max_length_bytes=10, x_overflow='reject-publish')
    c.events(0.1)
    pub(c, '', 'qf.mb', '0123456789A')
    pub(c, '', 'qf.mb', '01234')
    pub(c, '', 'qf.mb', '56789')
    pub(c, '', 'qf.mb', '')
    pub(c, '', 'qf.mb', 'x')
    R('max-length-bytes 10 reject-publish: 11 B, 5 B, 5 B, 0 B, 1 B', '%s; queue %s' % (
        confirms(c), bodies(c, 'qf.mb')))
    declare(c, 'qf.mb', x_max_length=2, x_max_length_bytes=6)
    c.events(0.1)
    for b in ('aaa', 'bbb', 'c', 'dd', 'e'):
        pub(c, '', 'qf.mb', b)
    c.events(0.3)
    R('max-length 2 + max-length-bytes 6 (drop-head): aaa bbb c dd e', bodies(c, 'qf.mb'))
    # drop-head with requeue: requeued goes to the head
    c.close()
    cleanup('qf.ml', 'qf.ml2', 'qf.mb', *CAPS, exchanges=('qf.dlx', 'qf.in', 'qf.fan'))


# -----------------------------------------------------------------------------------------
@section('4. x-expires')
def s4():
    EXP = 5000
    ACT = 2.5   # the "use" happens here; a reset timer then fires at ACT + EXP = 7.5 s
    names = {
        'qf.e.none': 'nothing',
        'qf.e.get': 'basic.get (empty) at 2.5 s',
        'qf.e.getmsg': 'basic.get (a message, no_ack) at 2.5 s',
        'qf.e.passive': 'passive declare at 2.5 s',
        'qf.e.redecl': 'redeclare at 2.5 s',
        'qf.e.pub': 'publish to it at 2.5 s',
        'qf.e.purge': 'queue.purge at 2.5 s',
        'qf.e.bind': 'queue.bind at 2.5 s',
        'qf.e.conscancel': 'basic.consume + basic.cancel at 2.5 s',
        'qf.e.cons': 'a consumer from 0 s, cancelled at 9.6 s',
        'qf.e.unacked': 'basic.get (ack mode) at 0 s, kept unacked, no consumer',
        'qf.e.dlx': 'nothing, has a DLX and 2 messages',
    }
    cleanup(*names)
    c = Conn()
    xdecl(c, 'qf.dlx')
    declare(c, 'qf.cap')
    bind(c, 'qf.cap', 'qf.dlx', 'k1')
    for n in names:
        extra = {}
        if n == 'qf.e.dlx':
            extra = dict(x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
        declare(c, n, x_expires=EXP, **extra)
    t0 = time.monotonic()
    pub(c, '', 'qf.e.getmsg', 'x')
    pub(c, '', 'qf.e.unacked', 'x')
    pub(c, '', 'qf.e.dlx', 'x'); pub(c, '', 'qf.e.dlx', 'y')
    c.sync()
    c.call(2, spec.Basic.Get(queue='qf.e.unacked'))
    c.call(3, spec.Basic.Consume(queue='qf.e.cons', consumer_tag='cons'))

    def at(t):
        time.sleep(max(0, t0 + t - time.monotonic()))

    checks = []
    def check():
        t1 = time.monotonic() - t0
        ex = queue_exists(names)
        checks.append(('%.1f-%.1f s' % (t1, time.monotonic() - t0), ex))

    at(1.0); check()
    at(ACT)
    c.call(1, spec.Basic.Get(queue='qf.e.get', no_ack=True))
    c.call(1, spec.Basic.Get(queue='qf.e.getmsg', no_ack=True))
    c.call(1, QD('qf.e.passive', passive=True))
    c.call(1, QD('qf.e.redecl', arguments={'x-expires': EXP}))
    pub(c, '', 'qf.e.pub', 'x')
    c.call(1, spec.Queue.Purge(queue='qf.e.purge'))
    c.call(1, spec.Queue.Bind(queue='qf.e.bind', exchange='amq.fanout'))
    c.call(1, spec.Basic.Consume(queue='qf.e.conscancel', consumer_tag='cc'))
    c.call(1, spec.Basic.Cancel(consumer_tag='cc'))
    c.sync()
    R('  the 2.5 s actions done at', '%.2f s' % (time.monotonic() - t0))
    at(5.6); check()
    at(8.3); check()
    at(9.6)
    c.call(3, spec.Basic.Cancel(consumer_tag='cons'))
    at(12.0); check()
    at(15.5); check()
    R('x-expires %d ms; rabbitmqctl list_queues during' % EXP, ', '.join(t for t, _ in checks))
    for n, what in names.items():
        R('  %s (%s)' % (n, what), ' '.join('%s' % ('exists' if ex[n] else 'gone')
                                            for _, ex in checks))
    R('  dead-lettered from qf.e.dlx when it expired', count(c, 'qf.cap'))
    c.close()
    cleanup(*names, 'qf.cap', exchanges=('qf.dlx',))


# -----------------------------------------------------------------------------------------
@section('5. message TTL')
def s5():
    c = Conn()
    capture_setup(c)

    declare(c, 'qf.t', x_message_ttl=0, x_dead_letter_exchange='qf.dlx',
            x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'ttl0')
    c.sync()
    R('a. x-message-ttl 0, no consumer', 'queue %s; dead-lettered %s' % (
        count(c, 'qf.t'), xdeath_summary(get(c, 'qf.cap'))))
    c.call(2, spec.Basic.Consume(queue='qf.t', consumer_tag='t0'))
    pub(c, '', 'qf.t', 'ttl0-consumer')
    R('a2. x-message-ttl 0, consumer ready', '%s; dead-lettered %s' % (
        deliveries(c), count(c, 'qf.cap')))
    c.call(2, spec.Basic.Qos(prefetch_count=1))
    c.call(2, spec.Basic.Cancel(consumer_tag='t0'))
    c.call(2, spec.Basic.Recover(requeue=True))
    bodies(c, 'qf.t')
    c.call(4, spec.Basic.Qos(prefetch_count=1))
    c.call(4, spec.Basic.Consume(queue='qf.t', consumer_tag='t1'))
    pub(c, '', 'qf.t', 'p1'); pub(c, '', 'qf.t', 'p2')
    R('a3. (a2\'s unacked requeued by basic.recover first) x-message-ttl 0, consumer prefetch 1, 2 published', '%s; queue %s; dead-lettered %s' % (
        deliveries(c), count(c, 'qf.t'), bodies(c, 'qf.cap')))
    c.call(4, spec.Basic.Cancel(consumer_tag='t1'))
    c.call(4, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(4)
    time.sleep(0.2)
    R('a4. its unacked p1 requeued on channel close (ttl 0 queue)', 'queue %s; dead-lettered %s' % (
        count(c, 'qf.t'), bodies(c, 'qf.cap')))

    declare(c, 'qf.t', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'exp0', expiration='0')
    c.sync()
    e = get(c, 'qf.cap')
    R('b. expiration "0", no consumer', 'queue %s; dead-lettered %s' % (
        count(c, 'qf.t'), th(e.props) if e else None))

    for qttl, exp in ((1000, '200'), (200, '1000')):
        declare(c, 'qf.t', x_message_ttl=qttl, x_dead_letter_exchange='qf.dlx',
                x_dead_letter_routing_key='k1')
        pub(c, '', 'qf.t', 'lower', expiration=exp)
        c.sync()
        time.sleep(0.1)
        a = count(c, 'qf.t')
        time.sleep(0.4)
        e = get(c, 'qf.cap')
        R('c. queue ttl %d, expiration "%s": count at 0.1 s / 0.5 s' % (qttl, exp),
          '%s / %s; dead-lettered %s %s' % (a, count(c, 'qf.t'), xdeath_summary(e), th(e.props) if e else ''))

    # only at the head
    declare(c, 'qf.t', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'h0')
    pub(c, '', 'qf.t', 'h1', expiration='100')
    pub(c, '', 'qf.t', 'h2')
    pub(c, '', 'qf.t', 'h3', expiration='100')
    c.sync()
    time.sleep(0.5)
    R('d. h0, h1 (exp 100), h2, h3 (exp 100); after 0.5 s: count / dead-lettered',
      '%s / %s' % (count(c, 'qf.t'), count(c, 'qf.cap')))
    R('  basic.get', get(c, 'qf.t').body)
    R('  then count / dead-lettered', '%s / %s' % (count(c, 'qf.t'), bodies(c, 'qf.cap')))
    R('  basic.get', get(c, 'qf.t').body)
    R('  then count / dead-lettered', '%s / %s' % (count(c, 'qf.t'), bodies(c, 'qf.cap')))
    # a consumer attached while an expired message sits behind the head
    pub(c, '', 'qf.t', 'h4')
    pub(c, '', 'qf.t', 'h5', expiration='100')
    c.sync()
    time.sleep(0.4)
    c.call(2, spec.Basic.Consume(queue='qf.t', consumer_tag='hc', no_ack=True))
    R('d2. h4, h5 (exp 100, expired) then a consumer', '%s; dead-lettered %s' % (
        deliveries(c), bodies(c, 'qf.cap')))
    c.call(2, spec.Basic.Cancel(consumer_tag='hc'))
    # longer TTL in front of a shorter one
    pub(c, '', 'qf.t', 'long', expiration='600')
    pub(c, '', 'qf.t', 'short', expiration='100')
    c.sync()
    time.sleep(0.3)
    a = count(c, 'qf.t')
    time.sleep(0.6)
    R('d3. "long" (exp 600) then "short" (exp 100): count at 0.3 s / 0.9 s; dead-letter order',
      '%s / %s; %s' % (a, count(c, 'qf.t'), bodies(c, 'qf.cap')))

    # TTL runs while unacked? requeue after expiry
    declare(c, 'qf.t', x_message_ttl=500, x_dead_letter_exchange='qf.dlx',
            x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'held')
    c.sync()
    e = get(c, 'qf.t', no_ack=False)
    time.sleep(0.8)
    R('e. ttl 500, held unacked 0.8 s: dead-lettered meanwhile', count(c, 'qf.cap'))
    c.send(1, spec.Basic.Nack(delivery_tag=e.method.delivery_tag, requeue=True))
    c.sync()
    time.sleep(0.1)
    R('  after nack requeue=true', 'queue %s; dead-lettered %s' % (
        count(c, 'qf.t'), xdeath_summary(get(c, 'qf.cap'))))
    pub(c, '', 'qf.t', 'held2')
    c.sync()
    e = get(c, 'qf.t', no_ack=False)
    time.sleep(0.2)
    c.send(1, spec.Basic.Nack(delivery_tag=e.method.delivery_tag, requeue=True))
    c.sync()
    time.sleep(0.15)
    a = count(c, 'qf.t')
    time.sleep(0.3)
    R('e2. ttl 500, held 0.2 s then requeued: count 0.15 s / 0.45 s after requeue',
      '%s / %s (expiry kept from the first enqueue if gone at 0.45)' % (a, count(c, 'qf.t')))
    bodies(c, 'qf.cap')

    # TTL on the message and dead-lettering: the expiration property of the dead letter
    declare(c, 'qf.t', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'exp-prop', expiration='100')
    c.sync()
    time.sleep(0.3)
    e = get(c, 'qf.cap')
    R('f. dead-lettered after expiration "100": expiration property / original-expiration',
      '%r / %r' % (e.props.expiration, [d.get('original-expiration')
                                        for d in e.props.headers['x-death']]))
    # the dead letter is not expired again in the DLX target (no TTL there)
    declare(c, 'qf.t', x_message_ttl=100, x_dead_letter_exchange='qf.dlx',
            x_dead_letter_routing_key='k1')
    pub(c, '', 'qf.t', 'exp-qttl')
    c.sync()
    time.sleep(0.3)
    e = get(c, 'qf.cap')
    R('f2. dead-lettered after queue ttl, message had no expiration: expiration prop',
      repr(e.props.expiration))
    # timing of queue-TTL dead-lettering
    declare(c, 'qf.t', x_message_ttl=300, x_dead_letter_exchange='qf.dlx',
            x_dead_letter_routing_key='k1')
    c.call(2, spec.Basic.Consume(queue='qf.cap', consumer_tag='capc', no_ack=True))
    pub(c, '', 'qf.t', 'timing')
    c.sync()
    t0 = time.monotonic()
    while True:
        ev = c._read_event(2)
        if ev is None or (isinstance(ev, Ev) and ev.is_(spec.Basic.Deliver)):
            break
    R('g. x-message-ttl 300: dead letter arrives after', '%.2f s' % (time.monotonic() - t0))
    c.close()
    cleanup('qf.t', *CAPS, exchanges=('qf.dlx', 'qf.in'))


# -----------------------------------------------------------------------------------------
@section('6. priorities')
def s6():
    c = Conn()
    declare(c, 'qf.p', x_max_priority=10)
    seq = [None, 0, 5, 10, 11, 255, 3, 5, 10, None, 1]
    for i, pr in enumerate(seq):
        pub(c, '', 'qf.p', 'i%d-p%s' % (i, pr), priority=pr)
    c.sync()
    got = []
    while True:
        e = get(c, 'qf.p')
        if e is None:
            break
        got.append('%s(prop=%s)' % (e.body.decode(), e.props.priority))
    R('x-max-priority 10, published %s: read' % seq, ' '.join(got))
    declare(c, 'qf.p')
    for i, pr in enumerate([1, 9, None, 5]):
        pub(c, '', 'qf.p', 'i%d-p%s' % (i, pr), priority=pr)
    c.sync()
    R('no x-max-priority, priorities 1,9,None,5', bodies(c, 'qf.p'))
    declare(c, 'qf.p', x_max_priority=0)
    for i, pr in enumerate([1, 9, None, 5]):
        pub(c, '', 'qf.p', 'i%d-p%s' % (i, pr), priority=pr)
    c.sync()
    R('x-max-priority 0, priorities 1,9,None,5', bodies(c, 'qf.p'))
    # requeued message goes back in front of its priority
    declare(c, 'qf.p', x_max_priority=10)
    for b, pr in (('a5', 5), ('b5', 5), ('c1', 1)):
        pub(c, '', 'qf.p', b, priority=pr)
    c.sync()
    e = get(c, 'qf.p', no_ack=False)
    pub(c, '', 'qf.p', 'd9', priority=9)
    c.sync()
    c.send(1, spec.Basic.Nack(delivery_tag=e.method.delivery_tag, requeue=True))
    c.sync()
    R('a5 b5 c1 published, a5 got, d9 published, a5 requeued: read', bodies(c, 'qf.p'))
    # a consumer with prefetch 1 sees the highest-priority waiting message next
    for b, pr in (('x0', 0), ('y0', 0)):
        pub(c, '', 'qf.p', b, priority=pr)
    c.sync()
    c.call(2, spec.Basic.Qos(prefetch_count=1))
    c.call(2, spec.Basic.Consume(queue='qf.p', consumer_tag='pc'))
    d = [e for e in c.events(0.3) if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]
    pub(c, '', 'qf.p', 'z7', priority=7)
    c.sync()
    c.send(2, spec.Basic.Ack(delivery_tag=d[0].method.delivery_tag))
    d2 = [e for e in c.events(0.3) if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]
    R('prefetch 1 consumer: x0 delivered; z7 published; x0 acked: next',
      [e.body for e in d + d2])
    c.close()
    cleanup('qf.p')


# -----------------------------------------------------------------------------------------
def consumers_listing(q):
    r = ctl('list_consumers', '--no-table-headers', 'queue_name', 'consumer_tag', 'active',
            'activity_status', 'prefetch_count', 'arguments')
    return [' '.join(l.split()) for l in r.stdout.splitlines() if l.startswith(q + '\t')]


@section('7. single active consumer and consumer priorities')
def s7():
    c = Conn()
    declare(c, 'qf.sac', x_single_active_consumer=True)
    c.call(1, spec.Basic.Consume(queue='qf.sac', consumer_tag='c1'))
    c.call(2, spec.Basic.Consume(queue='qf.sac', consumer_tag='c2'))
    R('list_consumers', consumers_listing('qf.sac'))
    for i in range(3):
        pub(c, '', 'qf.sac', 'm%d' % i, ch=5)
    d = [e for e in c.events(0.3) if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]
    R('c1 then c2 consume; 3 published', [(e.method.consumer_tag, e.body) for e in d])
    R('basic.get on a SAC queue', fmt(c.call(6, spec.Basic.Get(queue='qf.sac', no_ack=True))))
    c.call(3, spec.Basic.Consume(queue='qf.sac', consumer_tag='c3',
                                 arguments={'x-priority': 10}))
    pub(c, '', 'qf.sac', 'after-c3', ch=5)
    R('c3 joins with x-priority 10; 1 published', deliveries(c))
    R('  list_consumers', consumers_listing('qf.sac'))
    R('c1 cancels (4 unacked on its channel)', fmt(c.call(1, spec.Basic.Cancel(consumer_tag='c1'))))
    pub(c, '', 'qf.sac', 'after-cancel', ch=5)
    R('  1 published', deliveries(c))
    R('  list_consumers', consumers_listing('qf.sac'))
    c.send(1, spec.Basic.Nack(delivery_tag=0, multiple=True, requeue=True))
    c.sync(1)
    R('  c1\'s channel nacks its 4 unacked with requeue', deliveries(c))
    c.call(2, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(2)
    R('c2\'s channel (waiting consumer) closes', deliveries(c))
    R('  list_consumers', consumers_listing('qf.sac'))
    R('exclusive consume on the SAC queue while c3 is active',
      fmt(c.call(4, spec.Basic.Consume(queue='qf.sac', consumer_tag='c4', exclusive=True))))
    c.close()
    c = Conn()
    declare(c, 'qf.sac', x_single_active_consumer=True)
    R('exclusive consume first on a SAC queue',
      fmt(c.call(1, spec.Basic.Consume(queue='qf.sac', consumer_tag='e1', exclusive=True))))
    R('  then a second consumer',
      fmt(c.call(2, spec.Basic.Consume(queue='qf.sac', consumer_tag='e2'))))
    c.close()
    # failover order without priorities; the active consumer's channel closing
    c = Conn()
    declare(c, 'qf.sac', x_single_active_consumer=True)
    for i, tag in enumerate(('s1', 's2', 's3', 's4'), 1):
        c.call(i, spec.Basic.Consume(queue='qf.sac', consumer_tag=tag))
    pub(c, '', 'qf.sac', 'u0', ch=9)
    R('s1..s4 (no priorities) consume; 1 published', deliveries(c))
    c.call(3, spec.Basic.Cancel(consumer_tag='s3'))
    c.call(1, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(1)
    R('s3 (waiting) cancelled, then s1\'s channel (active, u0 unacked) closed', deliveries(c))
    R('  list_consumers', consumers_listing('qf.sac'))
    c.call(5, spec.Basic.Consume(queue='qf.sac', consumer_tag='s5', arguments={'x-priority': 5}))
    c.call(6, spec.Basic.Consume(queue='qf.sac', consumer_tag='s6', arguments={'x-priority': 9}))
    c.call(2, spec.Basic.Cancel(consumer_tag='s2'))
    pub(c, '', 'qf.sac', 'u1', ch=9)
    R('s5 (prio 5), s6 (prio 9) join; active s2 cancels; 1 published', deliveries(c))
    R('  list_consumers', consumers_listing('qf.sac'))
    c.close()
    # prefetch-limited active consumer: others still get nothing
    c = Conn()
    declare(c, 'qf.sac', x_single_active_consumer=True)
    c.call(1, spec.Basic.Qos(prefetch_count=1))
    c.call(1, spec.Basic.Consume(queue='qf.sac', consumer_tag='a1'))
    c.call(2, spec.Basic.Consume(queue='qf.sac', consumer_tag='a2'))
    for i in range(3):
        pub(c, '', 'qf.sac', 'q%d' % i, ch=5)
    R('active consumer prefetch 1, 3 published', '%s; ready %s' % (
        deliveries(c), count(c, 'qf.sac', ch=5)))
    e = get(c, 'qf.sac', ch=5)
    R('  basic.get meanwhile', e.body if e else 'empty')
    c.close()
    # x-single-active-consumer false
    c = Conn()
    declare(c, 'qf.sac', x_single_active_consumer=False)
    c.call(1, spec.Basic.Consume(queue='qf.sac', consumer_tag='f1', no_ack=True))
    c.call(2, spec.Basic.Consume(queue='qf.sac', consumer_tag='f2', no_ack=True))
    for i in range(4):
        pub(c, '', 'qf.sac', 'r%d' % i, ch=5)
    R('x-single-active-consumer false: round robin', deliveries(c))
    c.close()

    # consumer priorities
    c = Conn()
    declare(c, 'qf.cp')
    c.call(1, spec.Basic.Qos(prefetch_count=2))
    c.call(1, spec.Basic.Consume(queue='qf.cp', consumer_tag='hi', arguments={'x-priority': 10}))
    c.call(2, spec.Basic.Consume(queue='qf.cp', consumer_tag='lo'))
    for i in range(5):
        pub(c, '', 'qf.cp', 'm%d' % i, ch=5)
    R('hi (x-priority 10, prefetch 2), lo (none, unlimited); 5 published', deliveries(c))
    c.send(1, spec.Basic.Ack(delivery_tag=2, multiple=True))
    c.sync(1)
    for i in range(5, 8):
        pub(c, '', 'qf.cp', 'm%d' % i, ch=5)
    R('  hi acks both; 3 published', deliveries(c))
    c.close()
    c = Conn()
    declare(c, 'qf.cp')
    c.call(1, spec.Basic.Consume(queue='qf.cp', consumer_tag='a', no_ack=True,
                                 arguments={'x-priority': 5}))
    c.call(2, spec.Basic.Consume(queue='qf.cp', consumer_tag='b', no_ack=True,
                                 arguments={'x-priority': 5}))
    c.call(3, spec.Basic.Consume(queue='qf.cp', consumer_tag='neg', no_ack=True,
                                 arguments={'x-priority': -5}))
    c.call(4, spec.Basic.Consume(queue='qf.cp', consumer_tag='none', no_ack=True))
    for i in range(4):
        pub(c, '', 'qf.cp', 'n%d' % i, ch=5)
    R('a, b (x-priority 5), neg (-5), none; 4 published', deliveries(c))
    c.call(1, spec.Basic.Cancel(consumer_tag='a'))
    c.call(2, spec.Basic.Cancel(consumer_tag='b'))
    for i in range(2):
        pub(c, '', 'qf.cp', 'o%d' % i, ch=5)
    R('  a and b cancelled; 2 published', deliveries(c))
    c.close()
    c = Conn()
    declare(c, 'qf.cp')
    for v, lbl in ((pb.short(3), 'short 3'), (pb.long_(2 ** 40), 'long 2^40'), (pb.Typed(b'd', '>d', 1.5), 'double 1.5'),
                   (True, 'bool')):
        R('consume x-priority %s' % lbl, fmt(c.call(1, spec.Basic.Consume(
            queue='qf.cp', arguments={'x-priority': v}))))
    c.close()
    cleanup('qf.sac', 'qf.cp')


# -----------------------------------------------------------------------------------------
@section('8. invalid arguments')
def s8():
    cases = [
        ('x-message-ttl', -1), ('x-message-ttl', '1000'), ('x-message-ttl', True),
        ('x-message-ttl', pb.Typed(b'd', '>d', 1.5)), ('x-message-ttl', 315360000001), ('x-message-ttl', pb.short(-1)),
        ('x-expires', 0), ('x-expires', -1), ('x-expires', '1000'), ('x-expires', 315360000001),
        ('x-max-length', -1), ('x-max-length', '5'),
        ('x-max-length-bytes', -1),
        ('x-overflow', 'bogus'), ('x-overflow', 1), ('x-overflow', 'Drop-Head'),
        ('x-max-priority', 256), ('x-max-priority', -1), ('x-max-priority', '5'),
        ('x-dead-letter-exchange', 5), ('x-dead-letter-routing-key', 'k'),
        ('x-single-active-consumer', 1), ('x-single-active-consumer', 'true'),
        ('x-queue-mode', 'bogus'),
    ]
    for k, v in cases:
        shown = v.code.decode() + ':' + str(v.value) if isinstance(v, pb.Typed) else repr(v)
        pb.try_declare('%s %s' % (k, shown), 'qf.bad', arguments={k: v})
    pb.try_declare('x-dead-letter-routing-key (int) with a DLX', 'qf.bad',
                   arguments={'x-dead-letter-exchange': 'x', 'x-dead-letter-routing-key': 5})
    pb.try_declare('x-max-length -1 and x-message-ttl -1 together', 'qf.bad',
                   arguments={'x-max-length': -1, 'x-message-ttl': -1})
    pb.try_declare('x-overflow bogus and x-max-priority 256 together', 'qf.bad',
                   arguments={'x-overflow': 'bogus', 'x-max-priority': 256})
    for k, v in (('x-message-ttl', 0), ('x-max-length', 0), ('x-max-length-bytes', 0),
                 ('x-max-priority', 255), ('x-expires', 1), ('x-overflow', 'reject-publish-dlx'),
                 ('x-single-active-consumer', False), ('x-dead-letter-exchange', ''),
                 ('x-max-length', 2 ** 62)):
        pb.try_declare('accepted? %s %r' % (k, v), 'qf.bad', arguments={k: v})
    cleanup('qf.bad')


# -----------------------------------------------------------------------------------------
def policy(*args):
    r = ctl('set_policy', *args)
    return (r.stdout + r.stderr).strip().replace('\n', ' | ') or 'ok'

def op_policy(*args):
    r = ctl('set_operator_policy', *args)
    return (r.stdout + r.stderr).strip().replace('\n', ' | ') or 'ok'

def show_queue(label, name):
    """policy, operator_policy, effective_policy_definition and arguments of a queue. The
    `rabbitmqctl list_queues` of 3.10 has no operator_policy / effective_policy_definition
    columns (those are the management API's), so ask the queue through `rabbitmqctl eval`."""
    expr = ('[rabbit_amqqueue:info(Q, [policy, operator_policy, effective_policy_definition, '
            'arguments]) || Q <- rabbit_amqqueue:list(<<"/">>), '
            'element(4, amqqueue:get_name(Q)) =:= <<"%s">>].' % name)
    r = ctl('eval', expr)
    R(label, ' '.join((r.stdout + r.stderr).split()))


POLICIES = ('qf-p', 'qf-p2', 'qf-hi', 'qf-lo', 'qf-a', 'qf-b', 'qf-live')
OP_POLICIES = ('qf-op', 'qf-op2')

def clear_policies():
    for p in POLICIES:
        ctl('clear_policy', p)
    for p in OP_POLICIES:
        ctl('clear_operator_policy', p)


@section('9. policies')
def s9():
    clear_policies()
    c = Conn()
    capture_setup(c)
    xdecl(c, 'qf.dlx2')
    declare(c, 'qf.cap4')
    bind(c, 'qf.cap4', 'qf.dlx2', 'k1', 'dlrk')
    time.sleep(0.2)

    # max-length: argument vs policy
    R('set_policy qf-p max-length 5', policy('qf-p', r'^qf\.pol$', json.dumps({'max-length': 5}),
                                             '--apply-to', 'queues'))
    for arg in (3, 10, None):
        args = {} if arg is None else {'x_max_length': arg}
        declare(c, 'qf.pol', **args)
        time.sleep(0.2)
        for i in range(12):
            pub(c, '', 'qf.pol', 'm%d' % i)
        c.sync()
        show_queue('max-length arg %s, policy 5' % arg, 'qf.pol')
        R('  12 published: count', count(c, 'qf.pol'))
    # message-ttl
    R('set_policy qf-p message-ttl 200', policy('qf-p', r'^qf\.pol$',
                                                json.dumps({'message-ttl': 200}),
                                                '--apply-to', 'queues'))
    for arg in (60000, 50):
        declare(c, 'qf.pol', x_message_ttl=arg)
        time.sleep(0.2)
        pub(c, '', 'qf.pol', 'x')
        c.sync()
        time.sleep(0.1)
        a = count(c, 'qf.pol')
        time.sleep(0.25)
        R('message-ttl arg %d, policy 200: count at 0.1 s / 0.35 s' % arg,
          '%s / %s' % (a, count(c, 'qf.pol')))
    # dead-letter-exchange / routing key
    R('set_policy qf-p dead-letter-exchange qf.dlx, routing key k1',
      policy('qf-p', r'^qf\.pol$', json.dumps({'dead-letter-exchange': 'qf.dlx',
                                               'dead-letter-routing-key': 'k1'}),
             '--apply-to', 'queues'))
    for args in ({}, {'x_dead_letter_exchange': 'qf.dlx2'},
                 {'x_dead_letter_exchange': 'qf.dlx2', 'x_dead_letter_routing_key': 'dlrk'}):
        declare(c, 'qf.pol', **args)
        time.sleep(0.2)
        pub(c, '', 'qf.pol', 'dl')
        c.sync()
        e = get(c, 'qf.pol', no_ack=False)
        c.send(1, spec.Basic.Reject(delivery_tag=e.method.delivery_tag, requeue=False))
        c.sync()
        time.sleep(0.1)
        where = {q: count(c, q) for q in ('qf.cap', 'qf.cap4')}
        got = get(c, 'qf.cap') or get(c, 'qf.cap4')
        R('args %s, policy DLX qf.dlx/k1: rejected message went to' % args,
          '%s via %s/%s' % (where, got.method.exchange, got.method.routing_key) if got else where)
    # overflow
    R('set_policy qf-p max-length 1 overflow reject-publish',
      policy('qf-p', r'^qf\.pol$', json.dumps({'max-length': 1, 'overflow': 'reject-publish'}),
             '--apply-to', 'queues'))
    c.call(2, spec.Confirm.Select())
    for args in ({}, {'x_overflow': 'drop-head'}):
        declare(c, 'qf.pol', **args)
        time.sleep(0.2)
        c.events(0.1)
        pub(c, '', 'qf.pol', 'o1', ch=2); pub(c, '', 'qf.pol', 'o2', ch=2)
        R('overflow args %s, policy reject-publish' % args, '%s; queue %s' % (
            confirms(c), bodies(c, 'qf.pol')))
    # expires
    R('set_policy qf-p expires 1000', policy('qf-p', r'^qf\.pol$', json.dumps({'expires': 1000}),
                                             '--apply-to', 'queues'))
    for arg in (60000, None):
        args = {} if arg is None else {'x_expires': arg}
        declare(c, 'qf.pol', **args)
        time.sleep(2.0)
        R('expires arg %s, policy 1000: exists after 2 s' % arg, queue_exists(['qf.pol'])['qf.pol'])
    R('set_policy qf-p expires 60000', policy('qf-p', r'^qf\.pol$', json.dumps({'expires': 60000}),
                                              '--apply-to', 'queues'))
    declare(c, 'qf.pol', x_expires=1000)
    time.sleep(2.0)
    R('expires arg 1000, policy 60000: exists after 2 s', queue_exists(['qf.pol'])['qf.pol'])
    ctl('clear_policy', 'qf-p')

    # two matching policies
    R('set_policy qf-hi priority 5 {max-length 2}', policy(
        '--priority', '5', '--apply-to', 'queues', 'qf-hi', r'^qf\.pol', json.dumps({'max-length': 2})))
    R('set_policy qf-lo priority 1 {message-ttl 200}', policy(
        '--priority', '1', '--apply-to', 'queues', 'qf-lo', r'^qf\.pol$',
        json.dumps({'message-ttl': 200})))
    declare(c, 'qf.pol')
    time.sleep(0.2)
    for i in range(4):
        pub(c, '', 'qf.pol', 'm%d' % i)
    c.sync()
    time.sleep(0.4)
    show_queue('two policies (prio 5 max-length 2, prio 1 message-ttl 200)', 'qf.pol')
    R('  4 published, count after 0.4 s', count(c, 'qf.pol'))
    ctl('clear_policy', 'qf-hi'); ctl('clear_policy', 'qf-lo')
    R('set_policy qf-a {max-length 2} and qf-b {max-length 3}, both priority 0',
      policy('qf-a', r'^qf\.pol$', json.dumps({'max-length': 2}), '--apply-to', 'queues') + ' / ' +
      policy('qf-b', r'^qf\.pol$', json.dumps({'max-length': 3}), '--apply-to', 'queues'))
    declare(c, 'qf.pol')
    time.sleep(0.2)
    show_queue('  equal priority: applied', 'qf.pol')
    ctl('clear_policy', 'qf-a'); ctl('clear_policy', 'qf-b')
    R('set_policy qf-b {max-length 2} then qf-a {max-length 3}, both priority 0',
      policy('qf-b', r'^qf\.pol$', json.dumps({'max-length': 2}), '--apply-to', 'queues') + ' / ' +
      policy('qf-a', r'^qf\.pol$', json.dumps({'max-length': 3}), '--apply-to', 'queues'))
    declare(c, 'qf.pol')
    time.sleep(0.2)
    show_queue('  equal priority: applied', 'qf.pol')
    ctl('clear_policy', 'qf-a'); ctl('clear_policy', 'qf-b')
    R('apply-to exchanges policy on a queue', policy(
        'qf-p', r'^qf\.pol$', json.dumps({'max-length': 2}), '--apply-to', 'exchanges'))
    declare(c, 'qf.pol')
    time.sleep(0.2)
    show_queue('  queue', 'qf.pol')
    ctl('clear_policy', 'qf-p')

    # operator policies
    R('set_operator_policy qf-op max-length 2 message-ttl 60000', op_policy(
        'qf-op', r'^qf\.pol$', json.dumps({'max-length': 2, 'message-ttl': 60000}),
        '--apply-to', 'queues'))
    R('set_policy qf-p max-length 5 message-ttl 200', policy(
        'qf-p', r'^qf\.pol$', json.dumps({'max-length': 5, 'message-ttl': 200}),
        '--apply-to', 'queues'))
    declare(c, 'qf.pol', x_max_length=10)
    time.sleep(0.2)
    show_queue('arg max-length 10 + policy 5/200 + operator 2/60000', 'qf.pol')
    for i in range(4):
        pub(c, '', 'qf.pol', 'm%d' % i)
    c.sync()
    R('  4 published: count at once / after 0.4 s', '%s / %s' % (
        count(c, 'qf.pol'), (time.sleep(0.4), count(c, 'qf.pol'))[1]))
    ctl('clear_policy', 'qf-p')
    declare(c, 'qf.pol')
    time.sleep(0.2)
    show_queue('operator policy alone', 'qf.pol')
    for k, v in (('dead-letter-exchange', 'qf.dlx'), ('overflow', 'reject-publish'),
                 ('expires', 1000), ('max-length-bytes', 100), ('max-priority', 5),
                 ('queue-mode', 'lazy'), ('bogus-key', 1)):
        R('set_operator_policy {%s: %r}' % (k, v), op_policy(
            'qf-op2', r'^qf\.nothing$', json.dumps({k: v}), '--apply-to', 'queues'))
        ctl('clear_operator_policy', 'qf-op2')
    for k, v in (('max-priority', 5), ('bogus-key', 1), ('message-ttl', -1), ('max-length', 'x'),
                 ('overflow', 'bogus'), ('expires', 0)):
        R('set_policy {%s: %r}' % (k, v), policy(
            'qf-p2', r'^qf\.nothing$', json.dumps({k: v}), '--apply-to', 'queues'))
        ctl('clear_policy', 'qf-p2')
    ctl('clear_operator_policy', 'qf-op')

    # a policy applied to a live queue
    declare(c, 'qf.pol', x_dead_letter_exchange='qf.dlx', x_dead_letter_routing_key='k1')
    bodies(c, 'qf.cap')
    for i in range(5):
        pub(c, '', 'qf.pol', 'live%d' % i)
    c.sync()
    R('set_policy qf-live max-length 2 on a queue holding 5', policy(
        'qf-live', r'^qf\.pol$', json.dumps({'max-length': 2}), '--apply-to', 'queues'))
    time.sleep(0.3)
    R('  queue / dead-lettered', '%s / %s' % (bodies(c, 'qf.pol'), [
        (b, xdeath_summary(e)) for e in [get(c, 'qf.cap')] if e for b in [e.body]] +
        bodies(c, 'qf.cap')))
    ctl('clear_policy', 'qf-live')
    declare(c, 'qf.pol')
    pub(c, '', 'qf.pol', 'before-ttl-policy')
    c.sync()
    R('set_policy qf-live message-ttl 200 on a queue holding 1', policy(
        'qf-live', r'^qf\.pol$', json.dumps({'message-ttl': 200}), '--apply-to', 'queues'))
    pub(c, '', 'qf.pol', 'after-ttl-policy')
    c.sync()
    time.sleep(0.6)
    R('  after 0.6 s: queue', bodies(c, 'qf.pol'))
    ctl('clear_policy', 'qf-live')
    c.close()
    clear_policies()
    cleanup('qf.pol', 'qf.cap4', *CAPS, exchanges=('qf.dlx', 'qf.dlx2', 'qf.in'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('sections', nargs='*', help='section numbers to run (default: all)')
    a = ap.parse_args()
    try:
        for title, f in SECTIONS:
            if a.sections and title.split('.')[0] not in a.sections:
                continue
            print(title)
            f()
    finally:
        clear_policies()


if __name__ == '__main__':
    main()
