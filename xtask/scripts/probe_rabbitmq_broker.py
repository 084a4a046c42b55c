#!/usr/bin/env python3
"""Probe a live RabbitMQ for its broker-level behaviour: reply codes and texts, which errors
close the channel and which the connection, the order of checks, and the semantics of acks,
requeues, prefetch, confirms, transactions, permissions and direct reply-to. The findings are
written up in docs/design/broker.md (probed on RabbitMQ 3.10.8).

Needs a RabbitMQ on 127.0.0.1:5672 with guest/guest, `rabbitmqctl` on PATH (the script creates
the users `bob` and `carol` and the vhost `v2`, and removes them at the end), and pika (only its
frame codec is used: the client here is a small synchronous one over a raw socket, so that
nothing is hidden: nowait, capabilities, server-sent basic.cancel, frame order).

    python3 xtask/scripts/probe_rabbitmq_broker.py            # every section
    python3 xtask/scripts/probe_rabbitmq_broker.py 7 13       # sections 7 and 13 only

Each line is `label: outcome`; a close prints as `channel.close CODE "TEXT" (CLASS,METHOD)`.
"""
import argparse, collections, re, socket, struct, subprocess, sys, time

import pika
from pika import spec, frame, data as pdata


class Typed:
    """A field-table value with an explicit AMQP type code (pika picks 'I'/'l' for ints)."""
    def __init__(self, code, fmt, value):
        self.code, self.fmt, self.value = code, fmt, value

def short(v): return Typed(b's', '>h', v)
def long_(v): return Typed(b'l', '>q', v)

_orig_encode_value = pdata.encode_value
def _encode_value(pieces, value):
    if isinstance(value, Typed):
        b = value.code + struct.pack(value.fmt, value.value)
        pieces.append(b)
        return len(b)
    return _orig_encode_value(pieces, value)
pdata.encode_value = _encode_value


class Gone(Exception):
    pass


class _Eof:
    def __repr__(self):
        return 'EOF'
EOF = _Eof()
NOTHING = 'no reply, no error (the next round trip succeeded)'


def fmt(ev):
    if ev is None:
        return 'no reply (timeout)'
    if ev is EOF:
        return 'socket closed by server (no frame)'
    if isinstance(ev, str):
        return ev
    m = ev.method
    if isinstance(m, (spec.Channel.Close, spec.Connection.Close)):
        kind = 'channel.close' if isinstance(m, spec.Channel.Close) else 'connection.close'
        text = m.reply_text.replace('\n', '\\n')
        return '%s %d "%s" (%d,%d)' % (kind, m.reply_code, text, m.class_id, m.method_id)
    fields = {k: v for k, v in vars(m).items() if not k.startswith('_')}
    s = m.NAME + '(' + ', '.join('%s=%r' % kv for kv in sorted(fields.items())) + ')'
    if ev.props is not None:
        s += ' body=%r' % (ev.body,)
    return s


class Ev:
    def __init__(self, ch, method, props=None, body=None):
        self.ch, self.method, self.props, self.body = ch, method, props, body
    def is_(self, cls):
        return isinstance(self.method, cls)
    def __repr__(self):
        return 'ch%d %s' % (self.ch, fmt(self))


CONTENT = (spec.Basic.Deliver, spec.Basic.GetOk, spec.Basic.Return)


class Conn:
    """A minimal synchronous AMQP 0-9-1 client over a raw socket (pika's codec only)."""

    def __init__(self, user='guest', pw='guest', vhost='/', host='127.0.0.1', port=5672,
                 caps=None, mechanism='PLAIN', open_channel=1, expect_ok=True):
        if caps is None:
            caps = {'consumer_cancel_notify': True, 'publisher_confirms': True,
                    'basic.nack': True, 'exchange_exchange_bindings': True,
                    'authentication_failure_close': True, 'connection.blocked': True}
        self.buf = b''
        self.stash = collections.deque()   # events read while waiting for something else
        self.closed = False
        self.chans = set()
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.sendall(b'AMQP\x00\x00\x09\x01')
        self.handshake_result = None
        ev = self._read_event(30)
        if not isinstance(ev, Ev) or not ev.is_(spec.Connection.Start):
            raise Gone('no connection.start from %s:%d: %s' % (host, port, fmt(ev)))
        self.server_props = ev.method.server_properties
        self.send(0, spec.Connection.StartOk(
            client_properties={'product': 'warren-probe', 'capabilities': caps},
            mechanism=mechanism, response='\0%s\0%s' % (user, pw), locale='en_US'))
        ev = self._next_any(15)
        if ev is None or ev is EOF or not ev.is_(spec.Connection.Tune):
            self.handshake_result = ev
            self._after_close(ev)
            if expect_ok:
                raise Gone(fmt(ev))
            return
        self.send(0, spec.Connection.TuneOk(channel_max=ev.method.channel_max,
                                            frame_max=ev.method.frame_max, heartbeat=0))
        self.send(0, spec.Connection.Open(virtual_host=vhost))
        ev = self._next_any(15)
        self.handshake_result = ev
        if ev is None or ev is EOF or not ev.is_(spec.Connection.OpenOk):
            self._after_close(ev)
            if expect_ok:
                raise Gone(fmt(ev))
            return
        if open_channel:
            self.open(open_channel)

    # -- low level ---------------------------------------------------------------------
    def send(self, ch, method):
        self.sock.sendall(frame.Method(ch, method).marshal())

    def send_content(self, ch, props, body):
        out = frame.Header(ch, len(body), props).marshal()
        if body:
            out += frame.Body(ch, body).marshal()
        self.sock.sendall(out)

    def _read_frame(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            n, fr = frame.decode_frame(self.buf) if self.buf else (0, None)
            if fr is not None:
                self.buf = self.buf[n:]
                return fr
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except (ConnectionResetError, OSError):
                chunk = b''
            if not chunk:
                return EOF
            self.buf += chunk

    def _read_event(self, timeout):
        fr = self._read_frame(timeout)
        if fr is None or fr is EOF:
            return fr
        if isinstance(fr, frame.Heartbeat):
            return self._read_event(timeout)
        ev = Ev(fr.channel_number, fr.method)
        if isinstance(fr.method, CONTENT):
            hdr = self._read_frame(timeout)
            body = b''
            while len(body) < hdr.body_size:
                body += self._read_frame(timeout).fragment
            ev.props, ev.body = hdr.properties, body
        # answer closes like a client library would
        if ev.is_(spec.Channel.Close):
            self.send(ev.ch, spec.Channel.CloseOk())
            self.chans.discard(ev.ch)
        elif ev.is_(spec.Connection.Close):
            try:
                self.send(0, spec.Connection.CloseOk())
            except OSError:
                pass
            self.closed = True
        return ev

    def _next_any(self, timeout):
        if self.stash:
            return self.stash.popleft()
        return self._read_event(timeout)

    def _after_close(self, ev):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    # -- high level ---------------------------------------------------------------------
    def call(self, ch, method, timeout=3):
        """Send a method and return the first synchronous reply on that channel
        (or a channel.close on it, or a connection.close). Other events are stashed.
        A channel the server closed is reopened first."""
        if self.closed:
            return EOF
        if ch and ch not in self.chans and not isinstance(method, spec.Channel.Open):
            self.open(ch)
        try:
            self.send(ch, method)
        except OSError:
            self.closed = True
            return EOF
        deadline = time.monotonic() + timeout
        held = []
        try:
            while True:
                ev = self._read_event(max(0, deadline - time.monotonic()))
                if ev is None or ev is EOF:
                    if ev is EOF:
                        self.closed = True
                    return ev
                if ev.is_(spec.Connection.Close):
                    return ev
                if ev.ch == ch and (ev.is_(spec.Channel.Close) or ev.method.NAME.endswith('Ok')
                                    or ev.is_(spec.Basic.GetEmpty)):
                    return ev
                held.append(ev)
        finally:
            self.stash.extend(held)

    def open(self, ch):
        r = self.call(ch, spec.Channel.Open())
        assert r is not EOF and r is not None and r.is_(spec.Channel.OpenOk), fmt(r)
        self.chans.add(ch)
        return r

    def ensure(self, ch):
        if ch not in self.chans:
            self.open(ch)

    def publish(self, ch, exchange, rk, body=b'x', props=None, mandatory=False, immediate=False):
        self.ensure(ch)
        if props is None:
            props = spec.BasicProperties()
        self.send(ch, spec.Basic.Publish(exchange=exchange, routing_key=rk,
                                         mandatory=mandatory, immediate=immediate))
        self.send_content(ch, props, body)

    def events(self, timeout=0.5):
        """Everything that arrives (stashed first) until `timeout` seconds of silence."""
        out = list(self.stash)
        self.stash.clear()
        while not self.closed:
            ev = self._read_event(timeout)
            if ev is None:
                break
            out.append(ev)
            if ev is EOF:
                self.closed = True
                break
        return out

    def sync(self, ch=1):
        """A round trip on `ch` (a passive declare of amq.direct): shows whether the methods
        sent before it caused an error. Returns NOTHING when they did not."""
        r = self.call(ch, spec.Exchange.Declare(exchange='amq.direct', passive=True))
        if isinstance(r, Ev) and r.is_(spec.Exchange.DeclareOk):
            return NOTHING
        return r

    def close(self):
        if self.closed:
            return
        try:
            self.send(0, spec.Connection.Close(reply_code=200, reply_text='bye', class_id=0,
                                               method_id=0))
            self._read_until_closeok()
        except OSError:
            pass
        self._after_close(None)

    def _read_until_closeok(self):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            ev = self._read_event(deadline - time.monotonic())
            if ev is None or ev is EOF or ev.is_(spec.Connection.CloseOk):
                return


SECTIONS = []
def section(title):
    def deco(f):
        SECTIONS.append((title, f))
        return f
    return deco

def R(label, value):
    if not isinstance(value, str):
        value = fmt(value) if (value is None or value is EOF or isinstance(value, Ev)) else repr(value)
    print('  %-58s %s' % (label + ':', value))
    sys.stdout.flush()

def sent(c, ch, method):
    """Send a method that has no reply, then a round trip: what comes back."""
    c.ensure(ch)
    c.send(ch, method)
    return c.sync(ch)

def published(c, ch, exchange, rk, body=b'x', **kw):
    c.publish(ch, exchange, rk, body, **kw)
    return c.sync(ch)

def evs(lst):
    return '[' + '; '.join(fmt(e) if (e is EOF or isinstance(e, Ev)) else repr(e) for e in lst) + ']'

def ctl(*args):
    return subprocess.run(['rabbitmqctl', '-q'] + list(args), capture_output=True, text=True)

def cleanup(*queues, exchanges=()):
    c = Conn()
    for q in queues:
        c.call(1, spec.Queue.Delete(queue=q))
    for x in exchanges:
        c.call(1, spec.Exchange.Delete(exchange=x))
    c.close()

def QD(name, **kw):
    kw.setdefault('queue', name)
    return spec.Queue.Declare(**kw)

def try_declare(label, name, ch=1, conn=None, **kw):
    """Declare on a fresh connection (or the given one); report; delete on success."""
    c = conn or Conn()
    r = c.call(ch, QD(name, **kw))
    R(label, r)
    if conn is None:
        if isinstance(r, Ev) and r.is_(spec.Queue.DeclareOk):
            c.call(ch, spec.Queue.Delete(queue=r.method.queue))
        c.close()
    return r


@section('1. queue.declare')
def s1():
    cleanup('d1')
    c = Conn()
    R('declare d1 (plain)', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-foo': 1})))
    R('redeclare durable=true', c.call(1, QD('d1', durable=True)))
    R('redeclare auto_delete=true', c.call(1, QD('d1', auto_delete=True, arguments={'x-message-ttl': 1000})))
    R('redeclare exclusive=true (same conn)', c.call(1, QD('d1', exclusive=True, arguments={'x-message-ttl': 1000})))
    R('redeclare x-message-ttl 2000', c.call(1, QD('d1', arguments={'x-message-ttl': 2000})))
    R('redeclare without x-message-ttl', c.call(1, QD('d1')))
    R('redeclare x-message-ttl + x-foo differs', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-foo': 2})))
    R('redeclare with x-expires added', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-expires': 100000})))
    R('redeclare with x-max-length added', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-max-length': 10})))
    R('redeclare with x-dead-letter-exchange added', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-dead-letter-exchange': 'dlx'})))
    R('redeclare with x-queue-type classic added', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-queue-type': 'classic'})))
    R('redeclare with x-max-priority added', c.call(1, QD('d1', arguments={'x-message-ttl': 1000, 'x-max-priority': 5})))
    R('redeclare x-message-ttl as string', c.call(1, QD('d1', arguments={'x-message-ttl': '1000'})))
    R('redeclare x-message-ttl as long (l)', c.call(1, QD('d1', arguments={'x-message-ttl': long_(1000)})))
    R('redeclare x-message-ttl as short (s)', c.call(1, QD('d1', arguments={'x-message-ttl': short(1000)})))
    R('redeclare durable+auto_delete+exclusive+args all differ', c.call(1, QD('d1', durable=True, auto_delete=True, exclusive=True, arguments={'x-message-ttl': 5})))
    R('redeclare auto_delete+exclusive+args differ', c.call(1, QD('d1', auto_delete=True, exclusive=True, arguments={'x-message-ttl': 5})))
    R('redeclare exclusive+args differ', c.call(1, QD('d1', exclusive=True, arguments={'x-message-ttl': 5})))
    R('redeclare x-message-ttl invalid (-1) vs existing', c.call(1, QD('d1', arguments={'x-message-ttl': -1})))
    R('passive redeclare with all different flags', c.call(1, QD('d1', passive=True, durable=True, exclusive=True, auto_delete=True, arguments={'x-message-ttl': 5})))
    c.call(1, spec.Queue.Delete(queue='d1'))
    c.close()

    # reverse: existing durable auto_delete queue, redeclare plain
    cleanup('d2')
    c = Conn()
    c.call(1, QD('d2', durable=True, auto_delete=True))
    R('existing durable+auto_delete, redeclare plain', c.call(1, QD('d2')))
    R('existing durable+auto_delete, redeclare durable only', c.call(1, QD('d2', durable=True)))
    c.call(1, spec.Queue.Delete(queue='d2'))
    c.close()

    # exclusive queue of another connection
    cleanup('ex1')
    a, b = Conn(), Conn()
    R('A declares ex1 exclusive', a.call(1, QD('ex1', exclusive=True)))
    R('A redeclares ex1 non-exclusive', a.call(1, QD('ex1')))
    R('B declares ex1 exclusive', b.call(1, QD('ex1', exclusive=True)))
    R('B declares ex1 non-exclusive', b.call(1, QD('ex1')))
    R('B declares ex1 durable (inequivalent too)', b.call(1, QD('ex1', durable=True)))
    R('B passive-declares ex1', b.call(1, QD('ex1', passive=True)))
    R('A passive-declares ex1', a.call(1, QD('ex1', passive=True)))
    # exclusive redeclare by owner, with an existing non-exclusive queue
    cleanup('ne1')
    R('A declares ne1 non-exclusive', a.call(1, QD('ne1')))
    R('B redeclares ne1 exclusive=true', b.call(1, QD('ne1', exclusive=True)))
    a.call(1, spec.Queue.Delete(queue='ne1'))
    a.close(); b.close()

    # amq. prefix
    try_declare('declare amq.foo', 'amq.foo')
    try_declare('declare AMQ.foo', 'AMQ.foo')
    try_declare('declare amq.', 'amq.')
    try_declare('declare amqfoo', 'amqfoo')
    try_declare('passive declare amq.foo (absent)', 'amq.foo', passive=True)
    try_declare('declare amq.foo exclusive', 'amq.foo', exclusive=True)
    try_declare('passive declare amq.rabbitmq.reply-to', 'amq.rabbitmq.reply-to', passive=True)
    try_declare('declare amq.rabbitmq.reply-to', 'amq.rabbitmq.reply-to')
    try_declare('passive declare amq.rabbitmq.reply-to.abc', 'amq.rabbitmq.reply-to.abc', passive=True)
    try_declare('passive declare missing "nosuch"', 'nosuch', passive=True)
    try_declare('declare "a\\r\\nb" (CR LF)', 'a\r\nb')
    try_declare('declare "amq.gen-XYZ" (server-name prefix)', 'amq.gen-XYZ')

    # server-named
    c = Conn()
    names = []
    for i in range(200):
        r = c.call(1, QD(''))
        names.append(r.method.queue)
    R('server-named example', names[0])
    R('server-named lengths', sorted(set(len(n) for n in names)))
    R('server-named alphabet (suffixes)', ''.join(sorted(set(''.join(n[8:] for n in names)))))
    R('server-named prefix set', sorted(set(n[:8] for n in names)))
    r = c.call(1, QD('', durable=True))
    R('server-named: declare "" exclusive=false durable=true ok?', r)
    names.append(r.method.queue)
    R('queue.bind "" to amq.fanout (last queue shortcut)', c.call(1, spec.Queue.Bind(queue='', exchange='amq.fanout')))
    R('basic.get "" (last queue shortcut)', c.call(1, spec.Basic.Get(queue='')))
    R('queue.purge "" (last queue shortcut)', c.call(1, spec.Queue.Purge(queue='')))
    R('passive declare "" after declares (last queue)', c.call(1, QD('', passive=True)))
    c.ensure(1)
    for n in names:
        c.send(1, spec.Queue.Delete(queue=n, nowait=True))
    c.sync()
    c.close()
    c = Conn()
    R('passive declare "" on a fresh channel', c.call(1, QD('', passive=True)))
    R('queue.delete "" on a fresh channel', c.call(1, spec.Queue.Delete(queue='')))
    R('queue.purge "" on a fresh channel', c.call(1, spec.Queue.Purge(queue='')))
    R('basic.get "" on a fresh channel', c.call(1, spec.Basic.Get(queue='')))
    R('basic.consume "" on a fresh channel', c.call(1, spec.Basic.Consume(queue='')))
    R('queue.bind "" on a fresh channel', c.call(1, spec.Queue.Bind(queue='', exchange='amq.fanout')))
    c.close()

    # declare-ok counts
    cleanup('cnt')
    c = Conn()
    c.call(1, QD('cnt'))
    for i in range(5):
        c.publish(1, '', 'cnt', b'm%d' % i)
    c.sync()
    R('declare-ok after 5 published', c.call(1, QD('cnt')))
    c.open(2)
    c.call(2, spec.Basic.Qos(prefetch_count=2))
    c.call(2, spec.Basic.Consume(queue='cnt', consumer_tag='k'))
    time.sleep(0.3)
    R('declare-ok with 1 consumer holding 2 unacked', c.call(1, QD('cnt')))
    R('passive declare-ok, same state', c.call(1, QD('cnt', passive=True)))
    c.open(3)
    c.call(3, spec.Basic.Get(queue='cnt'))
    R('declare-ok after a basic.get (unacked)', c.call(1, QD('cnt')))
    c.call(3, spec.Basic.Consume(queue='cnt', consumer_tag='k3'))
    R('declare-ok with 2 consumers', c.call(1, QD('cnt')))
    c.call(1, spec.Queue.Delete(queue='cnt'))
    c.close()

    # argument validation
    cases = [
        ('x-message-ttl', 'abc'), ('x-message-ttl', -1), ('x-message-ttl', 0),
        ('x-message-ttl', 4294967296 * 2), ('x-message-ttl', True), ('x-message-ttl', short(10)),
        ('x-message-ttl', 315360000000), ('x-message-ttl', 315360000001),
        ('x-expires', 315360000000), ('x-expires', 315360000001),
        ('x-expires', 0), ('x-expires', -1), ('x-expires', 'abc'), ('x-expires', 1),
        ('x-max-length', -1), ('x-max-length', 'abc'), ('x-max-length', 0),
        ('x-max-length-bytes', -1), ('x-max-length-bytes', 'abc'), ('x-max-length-bytes', 0),
        ('x-overflow', 'bogus'), ('x-overflow', 5), ('x-overflow', 'reject-publish-dlx'),
        ('x-max-priority', 300), ('x-max-priority', -1), ('x-max-priority', 'abc'),
        ('x-max-priority', 0), ('x-max-priority', 255), ('x-max-priority', 256),
        ('x-queue-type', 'bogus'), ('x-queue-type', 5), ('x-queue-type', 'classic'),
        ('x-dead-letter-exchange', 5), ('x-dead-letter-routing-key', 5),
        ('x-dead-letter-exchange', 'nosuch-dlx'),
        ('x-single-active-consumer', 1), ('x-single-active-consumer', 'true'),
        ('x-foo', 'anything'), ('x-queue-mode', 'bogus'), ('x-queue-mode', 'lazy'),
        ('x-queue-master-locator', 'bogus'), ('x-max-in-memory-length', 5),
        ('x-delivery-limit', 5), ('x-dead-letter-strategy', 'at-least-once'),
    ]
    for key, val in cases:
        shown = val.value if isinstance(val, Typed) else val
        tag = ' (%s)' % val.code.decode() if isinstance(val, Typed) else ''
        try_declare('arg %s=%r%s' % (key, shown, tag), 'argq', arguments={key: val})
    try_declare('dead-letter-routing-key without exchange', 'argq', arguments={'x-dead-letter-routing-key': 'k'})
    try_declare('two bad args: x-max-length=-1, x-message-ttl=-1', 'argq', arguments={'x-max-length': -1, 'x-message-ttl': -1})
    try_declare('two bad args reversed order', 'argq', arguments={'x-message-ttl': -1, 'x-max-length': -1})
    try_declare('bad arg + amq. name', 'amq.z', arguments={'x-message-ttl': -1})
    try_declare('quorum non-durable', 'qq1', arguments={'x-queue-type': 'quorum'})
    try_declare('quorum durable exclusive', 'qq1', durable=True, exclusive=True, arguments={'x-queue-type': 'quorum'})
    try_declare('quorum durable auto_delete', 'qq1', durable=True, auto_delete=True, arguments={'x-queue-type': 'quorum'})
    try_declare('quorum durable ok', 'qq1', durable=True, arguments={'x-queue-type': 'quorum'})
    try_declare('quorum x-max-priority', 'qq1', durable=True, arguments={'x-queue-type': 'quorum', 'x-max-priority': 5})
    try_declare('stream non-durable', 'sq1', arguments={'x-queue-type': 'stream'})
    try_declare('classic exclusive durable', 'cq1', durable=True, exclusive=True)

    # which arguments take part in equivalence: existing queue without arguments, add one
    for key, val in [('x-expires', 100000), ('x-message-ttl', 5), ('x-dead-letter-exchange', 'd'),
                     ('x-dead-letter-routing-key', 'k'), ('x-max-length', 5),
                     ('x-max-length-bytes', 5), ('x-max-priority', 5), ('x-overflow', 'drop-head'),
                     ('x-overflow', 'reject-publish'), ('x-queue-mode', 'default'), ('x-queue-mode', 'lazy'),
                     ('x-single-active-consumer', False), ('x-single-active-consumer', True),
                     ('x-queue-type', 'classic'), ('x-queue-type', 'quorum'),
                     ('x-queue-master-locator', 'min-masters'), ('x-queue-version', 2),
                     ('x-foo', 1)]:
        cleanup('eqv')
        c = Conn()
        c.call(1, QD('eqv'))
        R('existing no-args queue, redeclare with %s=%r' % (key, val),
          c.call(1, QD('eqv', arguments={key: val})))
        c.call(1, spec.Queue.Delete(queue='eqv'))
        c.close()
    # order of checks on redeclare
    cleanup('ord')
    c = Conn()
    c.call(1, QD('ord', arguments={'x-message-ttl': 1000}))
    R('redeclare auto_delete + args differ', c.call(1, QD('ord', auto_delete=True, arguments={'x-message-ttl': 5})))
    R('redeclare with new invalid x-expires=-1', c.call(1, QD('ord', arguments={'x-message-ttl': 1000, 'x-expires': -1})))
    R('redeclare with invalid x-overflow bogus', c.call(1, QD('ord', arguments={'x-message-ttl': 1000, 'x-overflow': 'bogus'})))
    R('redeclare durable + new invalid x-expires', c.call(1, QD('ord', durable=True, arguments={'x-message-ttl': 1000, 'x-expires': -1})))
    R('redeclare durable + x-queue-type quorum', c.call(1, QD('ord', durable=True, arguments={'x-message-ttl': 1000, 'x-queue-type': 'quorum'})))
    R('redeclare with x-queue-type bogus', c.call(1, QD('ord', arguments={'x-message-ttl': 1000, 'x-queue-type': 'bogus'})))
    R('redeclare with x-dead-letter-exchange of type int', c.call(1, QD('ord', arguments={'x-message-ttl': 1000, 'x-dead-letter-exchange': 5})))
    R('new amq.z with x-dead-letter-exchange of type int', c.call(1, QD('amq.z', arguments={'x-dead-letter-exchange': 5})))
    c.call(1, spec.Queue.Delete(queue='ord'))
    c.close()
    cleanup('ex2')
    a, b = Conn(), Conn()
    a.call(1, QD('ex2', exclusive=True))
    R('B declares ex2 with invalid x-expires=-1', b.call(1, QD('ex2', arguments={'x-expires': -1})))
    R('B declares ex2 with x-queue-type bogus', b.call(1, QD('ex2', arguments={'x-queue-type': 'bogus'})))
    a.close(); b.close()
    # order among the argument validators: all bad at once, drop the reported one, repeat
    bad = {'x-expires': -1, 'x-message-ttl': -1, 'x-dead-letter-exchange': 5,
           'x-dead-letter-routing-key': 5, 'x-max-length': -1, 'x-max-length-bytes': -1,
           'x-max-priority': -1, 'x-overflow': 'bogus', 'x-queue-mode': 'bogus',
           'x-single-active-consumer': 1, 'x-queue-type': 'bogus', 'x-max-in-memory-length': 5,
           'x-delivery-limit': 5}
    order = []
    while bad:
        c = Conn()
        r = c.call(1, QD('argord', arguments=bad))
        c.close()
        m = re.search(r"arg '([^']+)'", fmt(r))
        if not m or m.group(1) not in bad:
            order.append('?' + fmt(r))
            break
        order.append(m.group(1))
        del bad[m.group(1)]
    R('argument validation order', ' > '.join(order))
    R('quorum non-durable + x-max-priority', Conn().call(1, QD('qq2', arguments={'x-queue-type': 'quorum', 'x-max-priority': 5})))
    R('quorum non-durable + x-expires=-1', Conn().call(1, QD('qq2', arguments={'x-queue-type': 'quorum', 'x-expires': -1})))

    # nowait declare
    cleanup('nw1')
    c = Conn()
    c.send(1, QD('nw1', nowait=True))
    R('declare nowait: reply?', c.sync())
    c.send(1, QD('nw1', nowait=True, durable=True))
    R('declare nowait inequivalent: next sync gives', c.sync())
    c.ensure(1)
    c.send(1, QD('', nowait=True, exclusive=True))
    R('declare "" nowait (exclusive)', c.sync())
    R('  events', evs(c.events(0.3)))
    c.call(1, spec.Queue.Delete(queue='nw1'))
    c.close()


def fill(c, q, n, ch=1, prefix=b'm'):
    for i in range(n):
        c.publish(ch, '', q, prefix + b'%d' % i)
    c.sync(ch)


@section('2. queue.delete')
def s2():
    cleanup('del1')
    c = Conn()
    c.call(1, QD('del1'))
    c.call(2, spec.Basic.Consume(queue='del1', consumer_tag='c1'))
    R('if_unused with a consumer', c.call(1, spec.Queue.Delete(queue='del1', if_unused=True)))
    c.call(2, spec.Basic.Cancel(consumer_tag='c1'))
    fill(c, 'del1', 3)
    R('if_empty with 3 messages', c.call(1, spec.Queue.Delete(queue='del1', if_empty=True)))
    c.call(2, spec.Basic.Consume(queue='del1', consumer_tag='c2'))
    R('if_empty+if_unused, consumer and messages', c.call(1, spec.Queue.Delete(queue='del1', if_empty=True, if_unused=True)))
    c.call(2, spec.Basic.Cancel(consumer_tag='c2'))
    c.events(0.3)
    R('delete missing queue', c.call(1, spec.Queue.Delete(queue='nosuch-del')))
    R('delete missing queue if_empty+if_unused', c.call(1, spec.Queue.Delete(queue='nosuch-del', if_empty=True, if_unused=True)))
    c.call(1, spec.Queue.Delete(queue='del1'))
    c.close()

    # if_empty with only unacked messages
    cleanup('del2')
    c = Conn()
    c.call(1, QD('del2'))
    fill(c, 'del2', 2)
    c.call(2, spec.Basic.Get(queue='del2'))
    c.call(2, spec.Basic.Get(queue='del2'))
    R('if_empty, 0 ready + 2 unacked', c.call(1, spec.Queue.Delete(queue='del2', if_empty=True)))
    c.close()
    cleanup('del2')

    # delete-ok count with ready + unacked; what the consumer sees
    cleanup('del3')
    c = Conn()
    c.call(1, QD('del3'))
    fill(c, 'del3', 5)
    c.call(2, spec.Basic.Qos(prefetch_count=2))
    R('consume (cancel-notify capability)', c.call(2, spec.Basic.Consume(queue='del3', consumer_tag='k')))
    time.sleep(0.3)
    got = [e for e in c.events(0.3) if e.is_(spec.Basic.Deliver)]
    R('deliveries before delete', len(got))
    d = Conn()
    R('delete-ok (3 ready, 2 unacked) from other connection', d.call(1, spec.Queue.Delete(queue='del3')))
    R('consumer connection then sees', evs(c.events(0.5)))
    R('ack of an unacked tag after the delete', sent(c, 2, spec.Basic.Ack(delivery_tag=1)))
    R('ack tag 2 after the delete', sent(c, 2, spec.Basic.Ack(delivery_tag=2)))
    d.close(); c.close()

    # exclusive queue owned by another connection
    cleanup('del4')
    a, b = Conn(), Conn()
    a.call(1, QD('del4', exclusive=True))
    R('delete exclusive queue of another connection', b.call(1, spec.Queue.Delete(queue='del4')))
    R('delete it if_empty (it is empty) from B', b.call(1, spec.Queue.Delete(queue='del4', if_empty=True)))
    R('owner deletes it', a.call(1, spec.Queue.Delete(queue='del4')))
    a.close(); b.close()

    # delete-ok count on the same channel that holds the unacked
    cleanup('del5')
    c = Conn()
    c.call(1, QD('del5'))
    fill(c, 'del5', 3)
    c.call(1, spec.Basic.Get(queue='del5'))
    R('delete-ok (2 ready, 1 unacked by a get on this channel)', c.call(1, spec.Queue.Delete(queue='del5')))
    R('ack that get after delete', sent(c, 1, spec.Basic.Ack(delivery_tag=1)))
    c.close()
    # consumer without the consumer_cancel_notify capability
    cleanup('del6')
    c = Conn(caps={})
    c.call(1, QD('del6'))
    c.call(1, spec.Basic.Consume(queue='del6', consumer_tag='k'))
    d = Conn()
    d.call(1, spec.Queue.Delete(queue='del6'))
    R('no cancel-notify capability: consumer sees', evs(c.events(0.5)))
    c.call(1, QD('del6'))
    d.publish(1, '', 'del6')
    R('queue re-created, message published: old consumer sees', evs(c.events(0.5)))
    R('basic.cancel of the dead consumer tag', c.call(1, spec.Basic.Cancel(consumer_tag='k')))
    R('consume again with the same tag', c.call(1, spec.Basic.Consume(queue='del6', consumer_tag='k')))
    c.call(1, spec.Queue.Delete(queue='del6'))
    c.close(); d.close()


@section('3. queue.purge')
def s3():
    cleanup('pu1')
    c = Conn()
    R('purge missing queue', c.call(1, spec.Queue.Purge(queue='nosuch-pu')))
    c.call(1, QD('pu1'))
    fill(c, 'pu1', 5)
    c.call(2, spec.Basic.Get(queue='pu1'))
    c.call(2, spec.Basic.Get(queue='pu1'))
    R('purge-ok with 3 ready + 2 unacked', c.call(1, spec.Queue.Purge(queue='pu1')))
    c.close()   # requeues the 2 unacked
    c = Conn()
    R('after closing the holder: passive declare', c.call(1, QD('pu1', passive=True)))
    c.send(1, spec.Queue.Purge(queue='pu1', nowait=True))
    R('purge nowait then sync', c.sync())
    R('after nowait purge: passive declare', c.call(1, QD('pu1', passive=True)))
    c.call(1, spec.Queue.Delete(queue='pu1'))
    c.close()
    cleanup('pu2')
    a, b = Conn(), Conn()
    a.call(1, QD('pu2', exclusive=True))
    R('purge exclusive queue of another connection', b.call(1, spec.Queue.Purge(queue='pu2')))
    a.close(); b.close()


@section('4. queue.bind / queue.unbind')
def s4():
    cleanup('bi1')
    a, b = Conn(), Conn()
    a.call(1, QD('bi1', exclusive=True))
    R('bind exclusive queue of another connection', b.call(1, spec.Queue.Bind(queue='bi1', exchange='amq.direct', routing_key='k')))
    R('bind it to a missing exchange', b.call(1, spec.Queue.Bind(queue='bi1', exchange='nosuch-x', routing_key='k')))
    R('owner binds', a.call(1, spec.Queue.Bind(queue='bi1', exchange='amq.direct', routing_key='k')))
    R('unbind exclusive queue of another connection', b.call(1, spec.Queue.Unbind(queue='bi1', exchange='amq.direct', routing_key='k')))
    R('unbind it from a missing exchange', b.call(1, spec.Queue.Unbind(queue='bi1', exchange='nosuch-x', routing_key='k')))
    R('bind missing queue to missing exchange', b.call(1, spec.Queue.Bind(queue='nosuch-q', exchange='nosuch-x')))
    R('bind missing queue to amq.direct', b.call(1, spec.Queue.Bind(queue='nosuch-q', exchange='amq.direct')))
    R('unbind missing queue from amq.direct', b.call(1, spec.Queue.Unbind(queue='nosuch-q', exchange='amq.direct')))
    R('unbind binding that does not exist', a.call(1, spec.Queue.Unbind(queue='bi1', exchange='amq.direct', routing_key='zz')))
    R('bind to the default exchange', a.call(1, spec.Queue.Bind(queue='bi1', exchange='', routing_key='bi1')))
    R('bind to amq.rabbitmq.trace (internal)', a.call(1, spec.Queue.Bind(queue='bi1', exchange='amq.rabbitmq.trace', routing_key='#')))
    a.close(); b.close()


@section('5. basic.consume')
def s5():
    cleanup('co1', 'co2')
    c = Conn()
    c.call(1, QD('co1'))
    c.call(1, QD('co2'))
    R('consume tag t1', c.call(1, spec.Basic.Consume(queue='co1', consumer_tag='t1')))
    R('consume tag t1 again, same channel, other queue', c.call(1, spec.Basic.Consume(queue='co2', consumer_tag='t1')))
    R('connection closed?', c.closed)
    c = Conn()
    c.call(1, spec.Basic.Consume(queue='co1', consumer_tag='t1'))
    R('consume tag t1 on another channel of the same connection', c.call(2, spec.Basic.Consume(queue='co1', consumer_tag='t1')))
    d = Conn()
    R('consume tag t1 on another connection', d.call(1, spec.Basic.Consume(queue='co1', consumer_tag='t1')))
    R('exclusive consume when the queue has consumers', d.call(1, spec.Basic.Consume(queue='co1', consumer_tag='x1', exclusive=True)))
    c.close(); d.close()
    c, d = Conn(), Conn()
    R('exclusive consume on an idle queue', c.call(1, spec.Basic.Consume(queue='co2', consumer_tag='x1', exclusive=True)))
    R('normal consume, other connection, when exclusive consumer exists', d.call(1, spec.Basic.Consume(queue='co2', consumer_tag='n1')))
    R('normal consume, same channel, when exclusive consumer exists', c.call(1, spec.Basic.Consume(queue='co2', consumer_tag='n2')))
    c.close(); d.close()
    c = Conn()
    c.call(1, spec.Basic.Consume(queue='co2', consumer_tag='x1', exclusive=True))
    R('exclusive consume twice, same channel', c.call(1, spec.Basic.Consume(queue='co2', consumer_tag='x2', exclusive=True)))
    c.close()
    c = Conn()
    R('consume missing queue', c.call(1, spec.Basic.Consume(queue='nosuch-co')))
    tags = [c.call(1, spec.Basic.Consume(queue='co1')).method.consumer_tag for _ in range(100)]
    R('server-generated tag example', tags[0])
    R('server-generated tag lengths', sorted(set(len(t) for t in tags)))
    R('server tag alphabet (after amq.ctag-)', ''.join(sorted(set(''.join(t[9:] for t in tags)))))
    R('explicit tag starting amq.ctag-', c.call(1, spec.Basic.Consume(queue='co1', consumer_tag='amq.ctag-mine')))
    R('explicit tag "amq.foo"', c.call(1, spec.Basic.Consume(queue='co1', consumer_tag='amq.foo')))
    c.close()
    # no_local
    cleanup('co3')
    c = Conn()
    c.call(1, QD('co3'))
    c.call(1, spec.Basic.Consume(queue='co3', consumer_tag='nl', no_local=True, no_ack=True))
    c.publish(1, '', 'co3', b'own')
    R('no_local consumer, message from own connection', evs(c.events(0.4)))
    c.close()
    cleanup('co3')
    # exclusive queue of another connection
    cleanup('co4')
    a, b = Conn(), Conn()
    a.call(1, QD('co4', exclusive=True))
    R('consume from exclusive queue of another connection', b.call(1, spec.Basic.Consume(queue='co4')))
    R('basic.get from exclusive queue of another connection', b.call(1, spec.Basic.Get(queue='co4')))
    R('publish to exclusive queue of another connection', published(b, 1, '', 'co4', b'z'))
    R('owner: passive declare after that publish', a.call(1, QD('co4', passive=True)))
    a.close(); b.close()
    # consume nowait errors
    c = Conn()
    c.send(1, spec.Basic.Consume(queue='nosuch-co', nowait=True))
    R('consume nowait on missing queue, then sync', c.sync())
    c.ensure(1)
    c.send(1, spec.Basic.Consume(queue='co1', nowait=True))
    R('consume nowait without tag, then sync', c.sync())
    R('  events', evs(c.events(0.3)))
    c.close()
    cleanup('co1', 'co2')


@section('6. basic.cancel')
def s6():
    cleanup('ca1')
    c = Conn()
    c.call(1, QD('ca1'))
    R('cancel unknown tag', c.call(1, spec.Basic.Cancel(consumer_tag='nosuch')))
    c.send(1, spec.Basic.Cancel(consumer_tag='nosuch', nowait=True))
    R('cancel unknown tag nowait then sync', c.sync())
    c.call(1, spec.Basic.Consume(queue='ca1', consumer_tag='k'))
    R('cancel k', c.call(1, spec.Basic.Cancel(consumer_tag='k')))
    R('cancel k twice', c.call(1, spec.Basic.Cancel(consumer_tag='k')))
    c.call(1, spec.Basic.Consume(queue='ca1', consumer_tag='k2'))
    R('cancel k2 from another channel of the same connection', c.call(2, spec.Basic.Cancel(consumer_tag='k2')))
    c.publish(1, '', 'ca1', b'still?')
    R('consumer k2 still consuming afterwards', evs(c.events(0.4)))
    c.close()
    cleanup('ca1')
    # server-sent cancel: with and without capability
    for caps, label in (({'consumer_cancel_notify': True}, 'with'), ({}, 'without'),
                        ({'consumer_cancel_notify': False}, 'capability false')):
        cleanup('ca2')
        c = Conn(caps=caps)
        c.call(1, QD('ca2'))
        c.call(1, spec.Basic.Consume(queue='ca2', consumer_tag='k'))
        Conn().call(1, spec.Queue.Delete(queue='ca2'))
        R('queue deleted, %s cancel-notify: consumer sees' % label, evs(c.events(0.5)))
        c.call(1, QD('ca2'))
        R('  then consume again with the same tag (no cancel)', c.call(1, spec.Basic.Consume(queue='ca2', consumer_tag='k')))
        c.close()
    cleanup('ca2')
    # unacked messages of a cancelled consumer stay unacked and ackable
    cleanup('ca3')
    c = Conn()
    c.call(1, QD('ca3'))
    fill(c, 'ca3', 2)
    c.call(1, spec.Basic.Consume(queue='ca3', consumer_tag='k'))
    time.sleep(0.2)
    c.events(0.2)
    c.call(1, spec.Basic.Cancel(consumer_tag='k'))
    R('declare-ok after cancel with 2 unacked', c.call(1, QD('ca3')))
    c.send(1, spec.Basic.Ack(delivery_tag=2, multiple=True))
    R('ack both after cancel', c.sync())
    R('declare-ok after the ack', c.call(1, QD('ca3')))
    c.call(1, spec.Queue.Delete(queue='ca3'))
    c.close()


def acksetup(q, n=5, no_ack=False):
    cleanup(q)
    c = Conn()
    c.call(1, QD(q))
    fill(c, q, n)
    return c


def gets(c, q, n, ch=1, no_ack=False):
    out = []
    for _ in range(n):
        r = c.call(ch, spec.Basic.Get(queue=q, no_ack=no_ack))
        out.append(r)
    return out


def drain_order(c, q, ch=9):
    """Read the queue with basic.get no_ack: [(body, redelivered)]."""
    out = []
    while True:
        r = c.call(ch, spec.Basic.Get(queue=q, no_ack=True))
        if not isinstance(r, Ev) or not r.is_(spec.Basic.GetOk):
            return out
        out.append('%s%s' % (r.body.decode(), '*' if r.method.redelivered else ''))


@section('7. basic.ack / nack / reject')
def s7():
    c = acksetup('ak1')
    gets(c, 'ak1', 2)
    c.send(1, spec.Basic.Ack(delivery_tag=99))
    R('ack unknown tag 99', c.sync())
    R('ack unknown tag: connection still open', not c.closed)
    c = acksetup('ak1')
    gets(c, 'ak1', 1)
    c.send(1, spec.Basic.Ack(delivery_tag=1))
    c.send(1, spec.Basic.Ack(delivery_tag=1))
    R('ack tag 1 twice', c.sync())
    c = acksetup('ak1')
    gets(c, 'ak1', 1)
    c.send(1, spec.Basic.Ack(delivery_tag=99, multiple=True))
    R('ack multiple with unknown tag 99 (1 outstanding)', c.sync())
    c = acksetup('ak1')
    c.send(1, spec.Basic.Ack(delivery_tag=0, multiple=True))
    R('ack multiple tag 0, nothing outstanding', c.sync())
    c.send(1, spec.Basic.Ack(delivery_tag=0, multiple=False))
    R('ack tag 0 (multiple=false), nothing outstanding', c.sync())
    c = acksetup('ak1')
    gets(c, 'ak1', 3)
    c.send(1, spec.Basic.Ack(delivery_tag=0, multiple=True))
    R('ack multiple tag 0 with 3 outstanding', c.sync())
    c.close()
    c = Conn()
    R('  queue after closing that channel', c.call(1, QD('ak1', passive=True)))
    c.close()
    c = acksetup('ak1')
    gets(c, 'ak1', 3)
    c.send(1, spec.Basic.Nack(delivery_tag=0, multiple=True, requeue=True))
    R('nack multiple tag 0 requeue (3 outstanding)', c.sync())
    R('  queue order after it', drain_order(c, 'ak1'))
    c = acksetup('ak1')
    gets(c, 'ak1', 3)
    c.send(1, spec.Basic.Nack(delivery_tag=0, multiple=False, requeue=True))
    R('nack tag 0 multiple=false', c.sync())
    c = acksetup('ak1')
    gets(c, 'ak1', 1)
    c.send(1, spec.Basic.Reject(delivery_tag=7, requeue=True))
    R('reject unknown tag 7', c.sync())
    c = acksetup('ak1')
    c.send(1, spec.Basic.Reject(delivery_tag=0, requeue=True))
    R('reject tag 0', c.sync())
    c = acksetup('ak1')
    c.send(1, spec.Basic.Nack(delivery_tag=5, requeue=True))
    R('nack unknown tag 5', c.sync())
    c = acksetup('ak1')
    gets(c, 'ak1', 1)
    c.send(2, spec.Basic.Ack(delivery_tag=1)) if 2 in c.chans else (c.ensure(2), c.send(2, spec.Basic.Ack(delivery_tag=1)))
    R('ack tag 1 on another channel than the get', c.sync(2))
    # no_ack delivery
    c = acksetup('ak1')
    c.call(1, spec.Basic.Get(queue='ak1', no_ack=True))
    c.send(1, spec.Basic.Ack(delivery_tag=1))
    R('ack of a no_ack get delivery (tag 1)', c.sync())
    c = acksetup('ak1')
    c.call(1, spec.Basic.Consume(queue='ak1', no_ack=True, consumer_tag='na'))
    time.sleep(0.2)
    R('no_ack consumer deliveries tags', [e.method.delivery_tag for e in c.events(0.3) if e.is_(spec.Basic.Deliver)])
    c.send(1, spec.Basic.Ack(delivery_tag=1))
    R('ack of a no_ack consumer delivery', c.sync())
    # delivery tags across channel close/reopen and shared between get and consume
    c = acksetup('ak1', 6)
    R('tags: get, get', [r.method.delivery_tag for r in gets(c, 'ak1', 2)])
    c.call(1, spec.Basic.Qos(prefetch_count=1))
    c.call(1, spec.Basic.Consume(queue='ak1', consumer_tag='k'))
    R('  then consumer delivery tag', [e.method.delivery_tag for e in c.events(0.3) if e.is_(spec.Basic.Deliver)])
    c.call(1, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(1)
    R('  after channel close/reopen: get tag', [r.method.delivery_tag for r in gets(c, 'ak1', 1)])
    R('  other channel first get tag', [r.method.delivery_tag for r in gets(c, 'ak1', 1, ch=2)])
    c.close()
    # requeue positions
    for how in ('reject', 'nack', 'nack-multiple', 'close', 'recover', 'reject-first', 'reject-last-then-first'):
        c = acksetup('ak2', 5)
        got = gets(c, 'ak2', 3)   # m0 m1 m2 unacked, tags 1 2 3
        if how == 'reject':
            c.send(1, spec.Basic.Reject(delivery_tag=2, requeue=True))
        elif how == 'nack':
            c.send(1, spec.Basic.Nack(delivery_tag=2, requeue=True))
        elif how == 'nack-multiple':
            c.send(1, spec.Basic.Nack(delivery_tag=3, multiple=True, requeue=True))
        elif how == 'close':
            c.call(1, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
            c.chans.discard(1)
        elif how == 'recover':
            R('recover requeue=true reply', c.call(1, spec.Basic.Recover(requeue=True)))
        elif how == 'reject-first':
            c.send(1, spec.Basic.Reject(delivery_tag=1, requeue=True))
        elif how == 'reject-last-then-first':
            c.send(1, spec.Basic.Reject(delivery_tag=3, requeue=True))
            c.send(1, spec.Basic.Reject(delivery_tag=1, requeue=True))
        c.sync(2)
        R('requeue by %s (m0..m2 unacked, m3 m4 ready): queue reads' % how, drain_order(c, 'ak2'))
        c.close()
    # requeue while a consumer is attached: where does it go
    c = acksetup('ak3', 4)
    gets(c, 'ak3', 2)
    c.send(1, spec.Basic.Reject(delivery_tag=2, requeue=True))
    c.sync()
    R('reject(requeue) m1 of 2 gets: then get returns', drain_order(c, 'ak3'))
    # reject requeue=false without DLX: message dropped
    c = acksetup('ak4', 2)
    gets(c, 'ak4', 1)
    c.send(1, spec.Basic.Reject(delivery_tag=1, requeue=False))
    c.sync()
    R('reject requeue=false (no DLX): passive declare', c.call(1, QD('ak4', passive=True)))
    c.close()
    cleanup('ak1', 'ak2', 'ak3', 'ak4')


def delivered(c, t=0.4):
    evs_ = c.events(t)
    return [e for e in evs_ if isinstance(e, Ev) and e.is_(spec.Basic.Deliver)]


@section('8. basic.qos')
def s8():
    c = Conn()
    R('qos prefetch_size=10', c.call(1, spec.Basic.Qos(prefetch_size=10)))
    c = Conn()
    R('qos prefetch_size=10 global', c.call(1, spec.Basic.Qos(prefetch_size=10, global_qos=True)))
    c = Conn()
    R('qos prefetch_count=0', c.call(1, spec.Basic.Qos(prefetch_count=0)))
    R('qos prefetch_count=65535 global', c.call(1, spec.Basic.Qos(prefetch_count=65535, global_qos=True)))
    c.close()
    # global=false 2, global=true 3, two consumers on two queues with 10 messages each
    for order in ('local-then-global', 'global-then-local'):
        cleanup('qa', 'qb')
        c = Conn()
        c.call(1, QD('qa')); c.call(1, QD('qb'))
        fill(c, 'qa', 10); fill(c, 'qb', 10)
        if order == 'local-then-global':
            c.call(2, spec.Basic.Qos(prefetch_count=2))
            c.call(2, spec.Basic.Qos(prefetch_count=3, global_qos=True))
        else:
            c.call(2, spec.Basic.Qos(prefetch_count=3, global_qos=True))
            c.call(2, spec.Basic.Qos(prefetch_count=2))
        c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='ca'))
        c.call(2, spec.Basic.Consume(queue='qb', consumer_tag='cb'))
        d = delivered(c)
        R('per-consumer 2 + global 3 (%s): deliveries' % order,
          {t: sum(1 for e in d if e.method.consumer_tag == t) for t in ('ca', 'cb')})
        c.close()
    # only global
    cleanup('qa', 'qb')
    c = Conn()
    c.call(1, QD('qa')); c.call(1, QD('qb'))
    fill(c, 'qa', 10); fill(c, 'qb', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=3, global_qos=True))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='ca'))
    c.call(2, spec.Basic.Consume(queue='qb', consumer_tag='cb'))
    d = delivered(c)
    R('global 3 only: deliveries', {t: sum(1 for e in d if e.method.consumer_tag == t) for t in ('ca', 'cb')})
    c.close()
    # changing qos for an existing consumer
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=1))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('prefetch 1: deliveries', len(delivered(c)))
    c.call(2, spec.Basic.Qos(prefetch_count=5))
    R('qos raised to 5 (non-global): more deliveries without ack', len(delivered(c)))
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('  after acking tag 1', len(delivered(c)))
    c.call(2, spec.Basic.Qos(prefetch_count=2, global_qos=True))
    c.send(2, spec.Basic.Ack(delivery_tag=2))
    R('  then global qos 2 and ack tag 2: deliveries', len(delivered(c)))
    c.close()
    # lowering global qos below outstanding
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=4, global_qos=True))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('global 4: deliveries', len(delivered(c)))
    c.call(2, spec.Basic.Qos(prefetch_count=6, global_qos=True))
    R('global raised to 6: more deliveries', len(delivered(c)))
    c.close()
    # basic.get and prefetch
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=1))
    R('qos 1 (per consumer), 3 gets no_ack=false', [fmt(r)[:13] for r in gets(c, 'qa', 3, ch=2)])
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('  then a consumer on that channel gets', len(delivered(c)))
    c.close()
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=1, global_qos=True))
    R('qos 1 global, 3 gets no_ack=false', [fmt(r)[:13] for r in gets(c, 'qa', 3, ch=2)])
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('  then a consumer on that channel gets', len(delivered(c)))
    c.send(2, spec.Basic.Ack(delivery_tag=3, multiple=True))
    R('  after acking the 3 gets', len(delivered(c)))
    c.close()
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=2, global_qos=True))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('qos 2 global, consumer holds', len(delivered(c)))
    c.call(2, spec.Basic.Get(queue='qa'))
    R('  a get at the limit', fmt(c.call(2, spec.Basic.Get(queue='qa')))[:13])
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('  ack one consumer delivery (gets outstanding): deliveries', len(delivered(c)))
    c.close()
    # no_ack consumers ignore prefetch
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=1))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k', no_ack=True))
    R('qos 1 with a no_ack consumer: deliveries', len(delivered(c)))
    c.close()
    # does a later global=false qos lift the global limit?
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    c.call(2, spec.Basic.Qos(prefetch_count=3, global_qos=True))
    c.call(2, spec.Basic.Qos(prefetch_count=0))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('global 3, then non-global 0: deliveries', len(delivered(c)))
    c.close()
    # global qos set while get-deliveries are unacked
    cleanup('qa')
    c = Conn()
    c.call(1, QD('qa'))
    fill(c, 'qa', 10)
    gets(c, 'qa', 3, ch=2)
    c.call(2, spec.Basic.Qos(prefetch_count=2, global_qos=True))
    c.call(2, spec.Basic.Consume(queue='qa', consumer_tag='k'))
    R('3 unacked gets, then global qos 2, then consume: deliveries', len(delivered(c)))
    c.send(2, spec.Basic.Ack(delivery_tag=3, multiple=True))
    R('  after acking the 3 gets', len(delivered(c)))
    c.call(2, spec.Basic.Qos(prefetch_count=2, global_qos=True))
    R('  after setting global qos 2 again', len(delivered(c)))
    c.close()
    cleanup('qa', 'qb')


@section('9. basic.get')
def s9():
    cleanup('g1')
    c = Conn()
    c.call(1, QD('g1'))
    R('get empty queue', c.call(1, spec.Basic.Get(queue='g1')))
    R('get missing queue', c.call(1, spec.Basic.Get(queue='nosuch-g')))
    fill(c, 'g1', 3)
    R('get 1 of 3', c.call(1, spec.Basic.Get(queue='g1')))
    R('get 2 of 3', c.call(1, spec.Basic.Get(queue='g1')))
    R('get 3 of 3', c.call(1, spec.Basic.Get(queue='g1')))
    R('get on empty (2 unacked... 3)', c.call(1, spec.Basic.Get(queue='g1')))
    c.send(1, spec.Basic.Ack(delivery_tag=2))
    R('ack tag 2 (middle)', c.sync())
    c.send(1, spec.Basic.Reject(delivery_tag=1, requeue=True))
    c.sync()
    R('get after requeue of tag 1', c.call(1, spec.Basic.Get(queue='g1')))
    c.call(1, spec.Queue.Delete(queue='g1'))
    c.close()


@section('10. basic.recover')
def s10():
    c = acksetup('rc1', 3)
    gets(c, 'rc1', 2)
    R('recover requeue=false', c.call(1, spec.Basic.Recover(requeue=False)))
    R('  connection closed?', c.closed)
    c = acksetup('rc1', 3)
    gets(c, 'rc1', 2)
    c.send(1, spec.Basic.RecoverAsync(requeue=False))
    R('recover-async requeue=false, then sync', c.sync())
    c = acksetup('rc1', 3)
    gets(c, 'rc1', 2)
    c.send(1, spec.Basic.RecoverAsync(requeue=True))
    R('recover-async requeue=true, then sync', c.sync())
    R('  events', evs(c.events(0.3)))
    R('  queue reads', drain_order(c, 'rc1'))
    c.close()
    # recover with a consumer: redelivered to whom, with what tags
    c = acksetup('rc2', 3)
    c.call(1, spec.Basic.Consume(queue='rc2', consumer_tag='k'))
    d = delivered(c)
    R('consumer got tags', [e.method.delivery_tag for e in d])
    R('recover requeue=true with consumer', c.call(1, spec.Basic.Recover(requeue=True)))
    d = delivered(c)
    R('  redeliveries (tag, redelivered, body)', [(e.method.delivery_tag, e.method.redelivered, e.body) for e in d])
    c.close()
    c = acksetup('rc3', 0)
    R('recover with nothing unacked', c.call(1, spec.Basic.Recover(requeue=True)))
    c.close()
    cleanup('rc1', 'rc2', 'rc3')


@section('11. basic.publish, confirms, tx')
def s11():
    c = Conn()
    c.publish(1, 'nosuch-x', 'k')
    R('publish to missing exchange', c.sync())
    R('  connection still open', not c.closed)
    c.publish(1, 'nosuch-x', 'k', mandatory=True)
    R('publish mandatory to missing exchange', c.sync())
    c.publish(1, 'amq.direct', 'k', immediate=True)
    R('publish immediate=true (routable or not)', c.sync())
    c = Conn()
    c.publish(1, 'amq.rabbitmq.trace', 'k')
    R('publish to internal amq.rabbitmq.trace', c.sync())
    c.call(1, spec.Exchange.Declare(exchange='intx', type='fanout', internal=True))
    c.publish(1, 'intx', 'k')
    R('publish to a declared internal exchange', c.sync())
    c.call(1, spec.Exchange.Delete(exchange='intx'))
    c.publish(1, 'amq.default', 'k')
    R('publish to "amq.default"', c.sync())
    c.close()
    # mandatory unroutable with confirms: order
    c = Conn()
    c.call(1, spec.Confirm.Select())
    c.publish(1, 'amq.direct', 'nowhere', b'r1', mandatory=True)
    c.publish(1, 'amq.direct', 'nowhere', b'r2', mandatory=False)
    c.publish(1, '', 'nosuch-queue', b'r3', mandatory=True)
    R('confirm mode: mandatory unroutable, unroutable, mandatory to default', evs(c.events(0.5)))
    cleanup('cf1')
    c.call(1, QD('cf1'))
    for i in range(20):
        c.publish(1, '', 'cf1', b'%d' % i)
    ev = c.events(0.5)
    R('20 publishes: acks (tag, multiple)', [(e.method.delivery_tag, e.method.multiple) for e in ev if e.is_(spec.Basic.Ack)])
    R('confirm.select again', c.call(1, spec.Confirm.Select()))
    c.send(1, spec.Confirm.Select(nowait=True))
    R('confirm.select nowait then sync', c.sync())
    R('tx.select on a confirm channel', c.call(1, spec.Tx.Select()))
    c.close()
    cleanup('cf1')
    c = Conn()
    R('tx.select', c.call(1, spec.Tx.Select()))
    R('tx.select twice', c.call(1, spec.Tx.Select()))
    R('confirm.select on a tx channel', c.call(1, spec.Confirm.Select()))
    R('tx.commit without tx.select', c.call(2, spec.Tx.Commit()))
    R('tx.rollback without tx.select', c.call(3, spec.Tx.Rollback()))
    c.close()
    # confirm: nack when a queue refuses (x-overflow reject-publish)
    cleanup('cf2')
    c = Conn()
    c.call(1, QD('cf2', arguments={'x-max-length': 1, 'x-overflow': 'reject-publish'}))
    c.call(1, spec.Confirm.Select())
    c.publish(1, '', 'cf2', b'a')
    c.publish(1, '', 'cf2', b'b')
    c.publish(1, '', 'cf2', b'c', mandatory=True)
    R('confirm with reject-publish queue (max 1): 3 publishes', evs(c.events(0.5)))
    c.call(1, spec.Queue.Delete(queue='cf2'))
    c.close()
    # tx: rollback of acks
    cleanup('tx1')
    c = Conn()
    c.call(1, QD('tx1'))
    fill(c, 'tx1', 3)
    c.call(2, spec.Tx.Select())
    gets(c, 'tx1', 2, ch=2)
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('tx: ack tag 1 then rollback', c.call(2, spec.Tx.Rollback()))
    R('  declare-ok after rollback (ready count)', c.call(1, QD('tx1', passive=True)))
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('  ack tag 1 again, then commit', c.call(2, spec.Tx.Commit()))
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('  ack tag 1 a third time then commit', c.call(2, spec.Tx.Commit()))
    c.close()
    cleanup('tx1')
    c = Conn()
    c.call(1, QD('tx1'))
    fill(c, 'tx1', 3)
    c.call(2, spec.Tx.Select())
    gets(c, 'tx1', 2, ch=2)
    c.send(2, spec.Basic.Ack(delivery_tag=9))
    R('tx: ack unknown tag 9 (error at ack or at commit?)', c.sync(2))
    c.ensure(2)
    c.call(2, spec.Tx.Select())
    gets(c, 'tx1', 1, ch=2)
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    c.send(2, spec.Basic.Ack(delivery_tag=1))
    R('tx: ack tag 1 twice in one tx', c.sync(2))
    c.ensure(2)
    c.call(2, spec.Tx.Select())
    gets(c, 'tx1', 1, ch=2)
    c.send(2, spec.Basic.Reject(delivery_tag=1, requeue=True))
    R('tx: reject requeue, rollback', c.call(2, spec.Tx.Rollback()))
    R('  passive declare', c.call(1, QD('tx1', passive=True)))
    c.close()
    cleanup('tx1')
    # tx: publishes and returns
    cleanup('tx2')
    c = Conn()
    c.call(1, QD('tx2'))
    c.call(2, spec.Tx.Select())
    c.publish(2, '', 'tx2', b'p1')
    c.publish(2, 'amq.direct', 'nowhere', b'ret', mandatory=True)
    R('tx: publish + mandatory unroutable, before commit: events', evs(c.events(0.5)))
    R('  passive declare before commit', c.call(1, QD('tx2', passive=True)))
    R('  tx.commit', c.call(2, spec.Tx.Commit()))
    R('  events after commit', evs(c.events(0.3)))
    R('  passive declare after commit', c.call(1, QD('tx2', passive=True)))
    c.publish(2, '', 'tx2', b'p2')
    c.publish(2, 'amq.direct', 'nowhere', b'ret2', mandatory=True)
    R('  publish + unroutable then rollback', c.call(2, spec.Tx.Rollback()))
    R('  events after rollback', evs(c.events(0.3)))
    R('  passive declare after rollback', c.call(1, QD('tx2', passive=True)))
    c.publish(2, 'nosuch-x', 'k')
    R('tx: publish to missing exchange', c.sync(2))
    c.close()
    # tx + publish ordering: return before commit-ok?
    c = Conn()
    c.call(1, spec.Tx.Select())
    c.publish(1, 'amq.direct', 'nowhere', b'ret', mandatory=True)
    c.send(1, spec.Tx.Commit())
    R('tx: unroutable mandatory then commit: order of frames', evs(c.events(0.5)))
    c.close()
    cleanup('tx2')
    # publish with too large priority / properties
    cleanup('pp1')
    c = Conn()
    c.call(1, QD('pp1'))
    c.publish(1, '', 'pp1', b'x', props=spec.BasicProperties(priority=200))
    R('publish priority=200 to non-priority queue', c.sync())
    c.call(1, spec.Queue.Delete(queue='pp1'))
    c.close()


@section('12. message property checks')
def s12():
    P = spec.BasicProperties
    cleanup('mp1')
    c = Conn()
    c.call(1, QD('mp1'))
    cases = [
        ('user_id "bob" as guest', P(user_id='bob')),
        ('user_id "guest"', P(user_id='guest')),
        ('user_id ""', P(user_id='')),
        ('expiration "abc"', P(expiration='abc')),
        ('expiration "-1"', P(expiration='-1')),
        ('expiration "1.5"', P(expiration='1.5')),
        ('expiration ""', P(expiration='')),
        ('expiration " 5"', P(expiration=' 5')),
        ('expiration "+5"', P(expiration='+5')),
        ('expiration "0"', P(expiration='0')),
        ('expiration "99999999999999999999"', P(expiration='99999999999999999999')),
        ('expiration "4294967296"', P(expiration='4294967296')),
        ('expiration "315360000000" (ten years)', P(expiration='315360000000')),
        ('expiration "315360000001"', P(expiration='315360000001')),
        ('expiration "1e3"', P(expiration='1e3')),
        ('user_id "bob" + expiration "abc"', P(user_id='bob', expiration='abc')),
        ('expiration "abc" + user_id "bob"', P(expiration='abc', user_id='bob')),
    ]
    for label, props in cases:
        c.publish(1, '', 'mp1', b'x', props=props)
        R('publish ' + label, c.sync())
    c.publish(1, 'nosuch-x', 'k', b'x', props=P(user_id='bob'))
    R('bad user_id to missing exchange', c.sync())
    c.publish(1, 'nosuch-x', 'k', b'x', props=P(expiration='abc'))
    R('bad expiration to missing exchange', c.sync())
    c.publish(1, 'amq.rabbitmq.trace', 'k', b'x', props=P(user_id='bob'))
    R('bad user_id to internal exchange', c.sync())
    c.publish(1, 'amq.direct', 'nowhere', b'x', props=P(expiration='abc'))
    R('bad expiration, unroutable', c.sync())
    R('passive declare (what got in)', c.call(1, QD('mp1', passive=True)))
    c.call(1, spec.Queue.Delete(queue='mp1'))
    c.publish(1, 'nosuch-x', 'k', b'x', immediate=True, props=P(user_id='bob'))
    R('immediate + bad user_id + missing exchange', c.sync())
    c.close()


def setup_bob():
    ctl('delete_user', 'bob')
    ctl('add_user', 'bob', 'bobpw')
    # configure: c-*, write: w-*, read: r-*  (names may combine letters: cw-, wr-, ...)
    ctl('set_permissions', '-p', '/', 'bob', '^(c|cw|cr|cwr)-.*', '^(w|cw|wr|cwr)-.*', '^(r|cr|wr|cwr)-.*')
    ctl('delete_vhost', 'v2'); ctl('add_vhost', 'v2')


@section('13. permissions')
def s13():
    setup_bob()
    g = Conn()
    # objects made by guest
    for q in ('c-q', 'w-q', 'r-q', 'n-q', 'cwr-q', 'wr-q'):
        g.call(1, QD(q))
    for x in ('c-x', 'w-x', 'r-x', 'n-x', 'cwr-x', 'wr-x'):
        g.call(1, spec.Exchange.Declare(exchange=x, type='fanout'))
    for q in ('c-q', 'w-q', 'r-q', 'n-q', 'cwr-q', 'wr-q'):
        g.publish(1, '', q, b'x')
    g.sync()
    b = Conn(user='bob', pw='bobpw')
    def t(label, method, ch=1):
        R(label, b.call(ch, method))
    t('exchange.declare c-new (configure ok)', spec.Exchange.Declare(exchange='c-new', type='fanout'))
    t('exchange.declare w-new (no configure)', spec.Exchange.Declare(exchange='w-new', type='fanout'))
    t('exchange.declare passive n-x (no perms)', spec.Exchange.Declare(exchange='n-x', passive=True))
    t('exchange.declare passive n-missing (no perms, missing)', spec.Exchange.Declare(exchange='n-missing', passive=True))
    t('exchange.declare w-missing2 non-passive (no configure, missing)', spec.Exchange.Declare(exchange='w-missing2', type='fanout'))
    t('exchange.declare amq.direct redeclare (no configure)', spec.Exchange.Declare(exchange='amq.direct', type='direct', durable=True))
    t('exchange.declare "" (default)', spec.Exchange.Declare(exchange='', type='direct'))
    t('exchange.declare amq.newx (no configure)', spec.Exchange.Declare(exchange='amq.newx', type='direct'))
    t('exchange.declare c-x redeclare with another type', spec.Exchange.Declare(exchange='c-x', type='direct'))
    t('exchange.declare w-x redeclare with another type (no configure)', spec.Exchange.Declare(exchange='w-x', type='direct'))
    t('exchange.declare cr-ae, alternate-exchange w-x (write ok)', spec.Exchange.Declare(exchange='cr-ae', type='fanout', arguments={'alternate-exchange': 'w-x'}))
    t('exchange.declare cr-ae2, alternate-exchange r-x (no write on AE)', spec.Exchange.Declare(exchange='cr-ae2', type='fanout', arguments={'alternate-exchange': 'r-x'}))
    t('exchange.declare c-ae, alternate-exchange w-x (no read on c-ae)', spec.Exchange.Declare(exchange='c-ae', type='fanout', arguments={'alternate-exchange': 'w-x'}))
    t('exchange.declare cr-ae3, alternate-exchange w-missing (missing AE)', spec.Exchange.Declare(exchange='cr-ae3', type='fanout', arguments={'alternate-exchange': 'w-missing'}))
    t('exchange.delete c-new', spec.Exchange.Delete(exchange='c-new'))
    t('exchange.delete w-x (no configure)', spec.Exchange.Delete(exchange='w-x'))
    t('exchange.delete w-missing (no configure, missing)', spec.Exchange.Delete(exchange='w-missing'))
    t('exchange.delete c-missing (missing)', spec.Exchange.Delete(exchange='c-missing'))
    t('queue.declare c-new', QD('c-newq'))
    t('queue.declare w-new (no configure)', QD('w-newq'))
    t('queue.declare passive n-q (no perms)', QD('n-q', passive=True))
    t('queue.declare passive n-missing (no perms, missing)', QD('n-missing', passive=True))
    t('queue.declare "" (server-named, amq.gen-...)', QD(''))
    t('queue.declare cr-dlq, x-dead-letter-exchange w-x (write ok)', QD('cr-dlq', arguments={'x-dead-letter-exchange': 'w-x'}))
    t('queue.declare cr-dlq2, x-dead-letter-exchange r-x (no write on DLX)', QD('cr-dlq2', arguments={'x-dead-letter-exchange': 'r-x'}))
    t('queue.declare c-dlq, x-dead-letter-exchange w-x (no read on c-dlq)', QD('c-dlq', arguments={'x-dead-letter-exchange': 'w-x'}))
    t('queue.declare cr-dlq3, x-dead-letter-exchange "" (default)', QD('cr-dlq3', arguments={'x-dead-letter-exchange': ''}))
    t('queue.declare amq.zz (no configure)', QD('amq.zz'))
    t('queue.declare w-q redeclare durable (no configure, inequivalent)', QD('w-q', durable=True))
    t('queue.delete c-newq', spec.Queue.Delete(queue='c-newq'))
    t('queue.delete w-q (no configure)', spec.Queue.Delete(queue='w-q'))
    t('queue.delete w-missing (no configure, missing)', spec.Queue.Delete(queue='w-missing'))
    t('queue.purge c-q (configure only)', spec.Queue.Purge(queue='c-q'))
    t('queue.purge r-q (read only)', spec.Queue.Purge(queue='r-q'))
    t('queue.purge w-q (write only)', spec.Queue.Purge(queue='w-q'))
    t('queue.purge n-missing (missing)', spec.Queue.Purge(queue='n-missing'))
    t('queue.bind w-q to r-x (write q, read x)', spec.Queue.Bind(queue='w-q', exchange='r-x'))
    t('queue.bind r-q to r-x (no write on q)', spec.Queue.Bind(queue='r-q', exchange='r-x'))
    t('queue.bind w-q to w-x (no read on x)', spec.Queue.Bind(queue='w-q', exchange='w-x'))
    t('queue.bind n-q to n-x (neither)', spec.Queue.Bind(queue='n-q', exchange='n-x'))
    t('queue.bind c-q to c-x (configure only)', spec.Queue.Bind(queue='c-q', exchange='c-x'))
    t('queue.bind w-missing to r-x (missing q)', spec.Queue.Bind(queue='w-missing', exchange='r-x'))
    t('queue.bind n-missing to r-x (no write, missing q)', spec.Queue.Bind(queue='n-missing', exchange='r-x'))
    t('queue.bind w-q to n-missing (no read, missing x)', spec.Queue.Bind(queue='w-q', exchange='n-missing'))
    t('queue.unbind w-q from r-x', spec.Queue.Unbind(queue='w-q', exchange='r-x'))
    t('queue.unbind r-q from r-x (no write on q)', spec.Queue.Unbind(queue='r-q', exchange='r-x'))
    t('queue.unbind w-q from w-x (no read on x)', spec.Queue.Unbind(queue='w-q', exchange='w-x'))
    t('queue.bind wr-q to "" (default, q ok)', spec.Queue.Bind(queue='wr-q', exchange=''))
    t('queue.bind w-q to amq.direct (read amq.direct?)', spec.Queue.Bind(queue='w-q', exchange='amq.direct'))
    t('exchange.bind w-x <- r-x (dest w-x, source r-x)', spec.Exchange.Bind(destination='w-x', source='r-x'))
    t('exchange.bind r-x <- w-x (no write on dest, no read on source)', spec.Exchange.Bind(destination='r-x', source='w-x'))
    t('exchange.bind w-x <- w-x (no read on source)', spec.Exchange.Bind(destination='w-x', source='w-x'))
    t('exchange.unbind w-x <- r-x', spec.Exchange.Unbind(destination='w-x', source='r-x'))
    t('exchange.unbind r-x <- w-x (neither)', spec.Exchange.Unbind(destination='r-x', source='w-x'))
    def pub(label, x, rk='k', **kw):
        b.publish(1, x, rk, b'x', **kw)
        R(label, b.sync())
    pub('publish w-x (write)', 'w-x')
    pub('publish r-x (no write)', 'r-x')
    pub('publish n-missing (no write, missing)', 'n-missing')
    pub('publish w-missing (write, missing)', 'w-missing')
    pub('publish "" to w-q (default exchange)', '', 'w-q')
    pub('publish "" to n-q (default exchange, no perms on queue)', '', 'n-q')
    pub('publish amq.direct (no write)', 'amq.direct')
    pub('publish r-x with mandatory (no write)', 'r-x', mandatory=True)
    pub('publish r-x immediate (no write)', 'r-x', immediate=True)
    b = Conn(user='bob', pw='bobpw')
    t('basic.consume r-q', spec.Basic.Consume(queue='r-q', consumer_tag='rc'))
    t('basic.consume w-q (no read)', spec.Basic.Consume(queue='w-q'))
    t('basic.consume n-missing (no read, missing)', spec.Basic.Consume(queue='n-missing'))
    t('basic.get r-q', spec.Basic.Get(queue='r-q', no_ack=True))
    t('basic.get w-q (no read)', spec.Basic.Get(queue='w-q'))
    t('basic.get n-missing (no read, missing)', spec.Basic.Get(queue='n-missing'))
    t('basic.consume amq.rabbitmq.reply-to (no read on it)', spec.Basic.Consume(queue='amq.rabbitmq.reply-to', no_ack=True))
    b.publish(1, 'w-x', 'k', b'x', props=spec.BasicProperties(reply_to='amq.rabbitmq.reply-to'))
    R('publish with reply_to after that consume', b.sync())
    # exclusive queue of another connection vs permissions
    g.call(1, QD('n-exq', exclusive=True))
    t('queue.declare n-exq (no configure, exclusive to guest)', QD('n-exq'))
    t('queue.declare passive n-exq', QD('n-exq', passive=True))
    t('queue.delete n-exq (no configure, exclusive to guest)', spec.Queue.Delete(queue='n-exq'))
    t('basic.consume n-exq (no read, exclusive to guest)', spec.Basic.Consume(queue='n-exq'))
    # the user_id check for bob
    b.publish(1, 'w-x', 'k', b'x', props=spec.BasicProperties(user_id='guest'))
    R('bob publishes with user_id guest', b.sync())
    b.publish(1, 'r-x', 'k', b'x', props=spec.BasicProperties(user_id='guest'))
    R('bob publishes with user_id guest to r-x (no write)', b.sync())
    b.close()
    # vhost access
    r = Conn(user='bob', pw='bobpw', vhost='v2', expect_ok=False, open_channel=0)
    R('bob opens vhost v2 (no permissions there)', r.handshake_result)
    r = Conn(user='bob', pw='bobpw', vhost='nosuch-vhost', expect_ok=False, open_channel=0)
    R('bob opens a missing vhost', r.handshake_result)
    r = Conn(vhost='nosuch-vhost', expect_ok=False, open_channel=0)
    R('guest opens a missing vhost', r.handshake_result)
    # cleanup
    for q in ('c-q', 'w-q', 'r-q', 'n-q', 'cwr-q', 'wr-q', 'cr-dlq', 'cr-dlq2', 'c-dlq', 'cr-dlq3'):
        g.call(1, spec.Queue.Delete(queue=q))
    for x in ('c-x', 'w-x', 'r-x', 'n-x', 'cwr-x', 'wr-x', 'cr-ae', 'cr-ae2', 'c-ae', 'cr-ae3', 'c-new'):
        g.call(1, spec.Exchange.Delete(exchange=x))
    g.close()


@section('14. channel.flow, vhost access, login')
def s14():
    c = Conn()
    R('channel.flow active=true', c.call(1, spec.Channel.Flow(active=True)))
    R('channel.flow active=false', c.call(1, spec.Channel.Flow(active=False)))
    setup_bob()
    for caps, label in (({'authentication_failure_close': True}, 'with authentication_failure_close'),
                        ({}, 'without the capability')):
        r = Conn(user='guest', pw='wrong', caps=caps, expect_ok=False, open_channel=0)
        R('wrong password, %s' % label, r.handshake_result)
        r = Conn(user='nosuchuser', pw='x', caps=caps, expect_ok=False, open_channel=0)
        R('unknown user, %s' % label, r.handshake_result)
    r = Conn(mechanism='FOO', expect_ok=False, open_channel=0)
    R('unknown mechanism FOO', r.handshake_result)
    r = Conn(mechanism='AMQPLAIN', expect_ok=False, open_channel=0)
    R('mechanism AMQPLAIN with a PLAIN-style response', r.handshake_result)
    # what connection.start offers
    s = socket.create_connection(('127.0.0.1', 5672))
    s.sendall(b'AMQP\x00\x00\x09\x01')
    time.sleep(0.3)
    n, fr = frame.decode_frame(s.recv(65536))
    R('connection.start mechanisms / locales', '%r / %r' % (fr.method.mechanisms, fr.method.locales))
    R('connection.start server capabilities', sorted(fr.method.server_properties.get('capabilities', {}).items()))
    s.close()
    # user with no tags / no permissions at all on '/'
    ctl('delete_user', 'carol'); ctl('add_user', 'carol', 'carolpw')
    r = Conn(user='carol', pw='carolpw', expect_ok=False, open_channel=0)
    R('user without any permission opens "/"', r.handshake_result)
    ctl('delete_user', 'carol')


@section('15. direct reply-to')
def s15():
    RT = 'amq.rabbitmq.reply-to'
    c = Conn()
    R('consume reply-to no_ack=false', c.call(1, spec.Basic.Consume(queue=RT, no_ack=False)))
    c = Conn()
    c.publish(1, '', 'anything', b'req', props=spec.BasicProperties(reply_to=RT))
    R('publish reply_to=amq.rabbitmq.reply-to without consumer', c.sync())
    for x, extra, label in (('nosuch-x', {}, 'to a missing exchange'),
                            ('amq.rabbitmq.trace', {}, 'to an internal exchange'),
                            ('', {'user_id': 'bob'}, 'with a wrong user_id'),
                            ('', {'expiration': 'abc'}, 'with a bad expiration')):
        c.publish(1, x, 'k', b'req', props=spec.BasicProperties(reply_to=RT, **extra))
        R('  the same %s' % label, c.sync())
    c = Conn()
    R('consume reply-to no_ack=true', c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt')))
    R('consume reply-to again on same channel', c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt2')))
    c = Conn()
    c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt'))
    c.publish(2, '', 'x', b'req', props=spec.BasicProperties(reply_to=RT))
    R('publish with reply_to on a channel without the reply consumer (ch 1 has one)', c.sync(2))
    R('consume reply-to on a second channel', c.call(2, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt2')))
    cleanup('srv')
    srv = Conn()
    srv.call(1, QD('srv'))
    srv.call(1, spec.Basic.Consume(queue='srv', no_ack=True, consumer_tag='s'))
    c = Conn()
    c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt'))
    c.call(1, spec.Confirm.Select())
    c.publish(1, '', 'srv', b'req', props=spec.BasicProperties(reply_to=RT, correlation_id='c1'))
    R('requester sees', evs(c.events(0.3)))
    ev = [e for e in srv.events(0.5) if e.is_(spec.Basic.Deliver)]
    rt = ev[0].props.reply_to
    R('reply_to seen by the server', rt)
    R('  length / prefix', '%d / %s' % (len(rt), rt[:len(RT) + 1]))
    suffix = rt[len(RT) + 1:]
    R('  suffix alphabet', ''.join(sorted(set(suffix))))
    c.publish(1, '', 'srv', b'req2', props=spec.BasicProperties(reply_to=RT))
    ev2 = [e for e in srv.events(0.5) if e.is_(spec.Basic.Deliver)]
    R('second request on the same channel: same reply_to?', ev2[0].props.reply_to == rt)
    c.publish(1, '', 'srv', b'req3', props=spec.BasicProperties(reply_to='plain-queue'))
    ev3 = [e for e in srv.events(0.5) if e.is_(spec.Basic.Deliver)]
    R('ordinary reply_to passes unchanged', ev3[0].props.reply_to)
    c.publish(1, '', 'srv', b'req4', props=spec.BasicProperties(reply_to=RT + '.foo'))
    ev4 = [e for e in srv.events(0.5) if e.is_(spec.Basic.Deliver)]
    R('reply_to "amq.rabbitmq.reply-to.foo" passes unchanged', ev4[0].props.reply_to if ev4 else evs(c.events(0.3)))
    c.events(0.2)
    srv.ensure(2)
    srv.call(2, spec.Confirm.Select())
    srv.publish(2, '', rt, b'reply', props=spec.BasicProperties(correlation_id='c1'), mandatory=True)
    R('server replies (mandatory, confirm): server sees', evs(srv.events(0.4)))
    R('  requester sees', evs(c.events(0.3)))
    srv.publish(2, 'amq.direct', rt, b'reply-via-direct', mandatory=True)
    R('reply through amq.direct with that key: server sees', evs(srv.events(0.4)))
    R('  requester sees', evs(c.events(0.3)))
    R('passive declare of the reply_to name', srv.call(3, QD(rt, passive=True)))
    R('passive declare of the reply_to name, other conn', srv.call(3, QD(rt, passive=True)))
    R('basic.cancel the reply consumer', c.call(1, spec.Basic.Cancel(consumer_tag='rt')))
    srv.publish(2, '', rt, b'after-cancel', mandatory=True)
    R('reply after the requester cancelled (mandatory): server sees', evs(srv.events(0.4)))
    c.close()
    srv.publish(2, '', rt, b'late', mandatory=True)
    R('reply after requester closed (mandatory, confirm): server sees', evs(srv.events(0.4)))
    srv.publish(2, '', rt, b'late2', mandatory=False)
    R('reply after requester closed (not mandatory): server sees', evs(srv.events(0.4)))
    R('passive declare of the reply_to name after requester closed', srv.call(3, QD(rt, passive=True)))
    srv.publish(2, '', RT + '.bogus', b'x', mandatory=True)
    R('publish to amq.rabbitmq.reply-to.bogus (mandatory)', evs(srv.events(0.4)))
    srv.publish(2, '', RT, b'x', mandatory=True)
    R('publish to routing key amq.rabbitmq.reply-to itself (mandatory)', evs(srv.events(0.4)))
    srv.call(1, spec.Queue.Delete(queue='srv'))
    srv.close()
    # requester consumes reply-to on channel 1 and sends on channel 1 with confirm: ok
    c = Conn()
    c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt'))
    R('basic.get from amq.rabbitmq.reply-to', c.call(1, spec.Basic.Get(queue=RT, no_ack=True)))
    c = Conn()
    c.call(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt', exclusive=True))
    R('exclusive consume of reply-to accepted?', 'yes (consume-ok above)' if not c.closed and 1 in c.chans else 'no')
    c.send(1, spec.Basic.Consume(queue=RT, no_ack=True, consumer_tag='rt-nw', nowait=True))
    R('second reply consume nowait', c.sync())
    c.close()


@section('16. deletion side effects')
def s16():
    # auto-delete
    cleanup('ad1', 'ad2', 'ad3')
    c = Conn()
    c.call(1, QD('ad1', auto_delete=True))
    R('auto_delete queue never consumed, after 0.5 s', c.call(1, QD('ad1', passive=True)))
    c.call(2, spec.Basic.Consume(queue='ad1', consumer_tag='k1'))
    c.call(2, spec.Basic.Consume(queue='ad1', consumer_tag='k2'))
    c.call(2, spec.Basic.Cancel(consumer_tag='k1'))
    R('  one of two consumers cancelled', c.call(1, QD('ad1', passive=True)))
    c.call(2, spec.Basic.Cancel(consumer_tag='k2'))
    time.sleep(0.2)
    R('  last consumer cancelled', c.call(1, QD('ad1', passive=True)))
    c.call(1, QD('ad2', auto_delete=True))
    fill(c, 'ad2', 2)
    c.call(3, spec.Basic.Consume(queue='ad2', consumer_tag='k'))
    time.sleep(0.2)
    c.call(3, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    c.chans.discard(3)
    time.sleep(0.2)
    R('auto_delete queue, consumer channel closed (2 unacked)', c.call(1, QD('ad2', passive=True)))
    c.call(1, QD('ad3', auto_delete=True))
    c.call(3, spec.Basic.Get(queue='ad3'))
    R('auto_delete queue after a basic.get only', c.call(1, QD('ad3', passive=True)))
    c.call(1, spec.Queue.Delete(queue='ad3'))
    # auto-delete + consumer cancelled by basic.cancel while the queue has messages
    c.call(1, QD('ad4', auto_delete=True))
    fill(c, 'ad4', 2)
    c.call(2, spec.Basic.Consume(queue='ad4', consumer_tag='k4', no_ack=True))
    c.call(2, spec.Basic.Cancel(consumer_tag='k4'))
    time.sleep(0.2)
    R('auto_delete queue with messages, last consumer cancelled', c.call(1, QD('ad4', passive=True)))
    c.close()
    # exclusive queue on connection close; exclusive + auto_delete
    cleanup('exq1')
    a = Conn()
    a.call(1, QD('exq1', exclusive=True))
    a.call(1, QD('exq2', exclusive=True, auto_delete=True))
    a.call(2, spec.Basic.Consume(queue='exq2', consumer_tag='k'))
    a.call(2, spec.Basic.Cancel(consumer_tag='k'))
    time.sleep(0.2)
    R('exclusive+auto_delete queue after its consumer cancels', a.call(1, QD('exq2', passive=True)))
    a.call(3, QD('exq3', exclusive=True))
    a.call(3, spec.Channel.Close(reply_code=200, reply_text='', class_id=0, method_id=0))
    a.chans.discard(3)
    R('exclusive queue after its declaring channel closes', a.call(1, QD('exq3', passive=True)))
    a.close()
    time.sleep(0.2)
    b = Conn()
    R('exclusive queue after its connection closed', b.call(1, QD('exq1', passive=True)))
    b.close()
    # auto-delete exchange
    c = Conn()
    c.call(1, spec.Exchange.Declare(exchange='adx', type='fanout', auto_delete=True))
    R('auto_delete exchange never bound', c.call(1, spec.Exchange.Declare(exchange='adx', passive=True)))
    c.call(1, QD('adxq'))
    c.call(1, spec.Queue.Bind(queue='adxq', exchange='adx'))
    c.call(1, spec.Queue.Unbind(queue='adxq', exchange='adx'))
    R('  after its only binding is removed', c.call(1, spec.Exchange.Declare(exchange='adx', passive=True)))
    c.call(1, spec.Queue.Delete(queue='adxq'))
    c.close()
    # consumer on a queue deleted by another connection, with unacked, then acks
    cleanup('dq1')
    c = Conn()
    c.call(1, QD('dq1'))
    fill(c, 'dq1', 2)
    c.call(1, spec.Basic.Consume(queue='dq1', consumer_tag='k'))
    time.sleep(0.2)
    Conn().call(1, spec.Queue.Delete(queue='dq1'))
    R('consumer when its queue is deleted elsewhere', evs(c.events(0.4)))
    c.send(1, spec.Basic.Nack(delivery_tag=2, multiple=True, requeue=True))
    R('  nack-requeue of its unacked afterwards', c.sync())
    c.close()
    # exclusive queue: its consumers from the owner; closing the connection with a consumer
    # queue deleted while a basic.get message is unacked and then rejected
    cleanup('ad1', 'ad2', 'ad4')


@section('17. guest from a non-loopback address')
def s17():
    ips = subprocess.run(['hostname', '-I'], capture_output=True, text=True).stdout.split()
    ip = next((i for i in ips if ':' not in i and not i.startswith('127.')), None)
    if ip is None:
        R('no non-loopback IPv4 address', 'skipped')
        return
    R('address used', ip)
    for caps, label in (({'authentication_failure_close': True}, 'with authentication_failure_close'),
                        ({}, 'without the capability')):
        try:
            r = Conn(host=ip, caps=caps, expect_ok=False, open_channel=0)
            R('guest over %s, %s' % (ip, label), r.handshake_result)
        except OSError as e:
            R('guest over %s, %s' % (ip, label), 'socket error %r' % e)
    setup_bob()
    r = Conn(host=ip, user='bob', pw='bobpw', expect_ok=False, open_channel=0)
    R('bob over %s' % ip, r.handshake_result)
    r = Conn(host=ip, user='guest', pw='wrong', expect_ok=False, open_channel=0)
    R('guest with a wrong password over %s' % ip, r.handshake_result)


@section('18. nowait')
def s18():
    c = Conn()
    c.send(1, spec.Exchange.Declare(exchange='nwx', type='bogus-type', nowait=True))
    R('exchange.declare nowait, unknown type', c.sync())
    c = Conn()
    c.send(1, spec.Exchange.Declare(exchange='amq.nwx', type='direct', nowait=True))
    R('exchange.declare nowait, amq. name', c.sync())
    c.ensure(1)
    c.send(1, spec.Exchange.Declare(exchange='amq.direct', type='fanout', nowait=True))
    R('exchange.declare nowait, inequivalent', c.sync())
    c.ensure(1)
    c.send(1, spec.Exchange.Declare(exchange='nwmissing', passive=True, nowait=True))
    R('exchange.declare passive nowait, missing', c.sync())
    c.ensure(1)
    c.send(1, spec.Exchange.Delete(exchange='amq.direct', nowait=True))
    R('exchange.delete nowait amq.direct', c.sync())
    c.ensure(1)
    c.send(1, spec.Queue.Delete(queue='nwmissing', nowait=True))
    R('queue.delete nowait missing', c.sync())
    c.send(1, spec.Queue.Bind(queue='nwmissing', exchange='amq.direct', nowait=True))
    R('queue.bind nowait missing queue', c.sync())
    c.ensure(1)
    c.send(1, QD('nwmissing', passive=True, nowait=True))
    R('queue.declare passive nowait missing', c.sync())
    c.ensure(1)
    c.send(1, spec.Basic.Cancel(consumer_tag='nope', nowait=True))
    R('basic.cancel nowait unknown', c.sync())
    c.send(1, spec.Basic.Consume(queue='nwmissing', nowait=True))
    R('basic.consume nowait missing queue', c.sync())
    c.close()


@section('19. other')
def s19():
    # channel numbers
    c = Conn(open_channel=0)
    R('channel.open on channel 0', c.call(0, spec.Channel.Open()))
    c = Conn()
    c.send(5, QD('zz'))
    R('method on an unopened channel 5', evs(c.events(0.5)))
    c = Conn()
    c.send(1, spec.Channel.Open())
    R('channel.open twice', evs(c.events(0.5)))
    # message_count after requeue vs redeclare; unacked counted?
    cleanup('o1')
    c = Conn()
    c.call(1, QD('o1', arguments={'x-max-length': 2}))
    fill(c, 'o1', 5)
    R('x-max-length 2 (drop-head), 5 published: reads', drain_order(c, 'o1'))
    c.call(1, spec.Queue.Delete(queue='o1'))
    c.call(1, QD('o1', arguments={'x-max-length': 2}))
    fill(c, 'o1', 2)
    gets(c, 'o1', 2)
    fill(c, 'o1', 3, prefix=b'n')
    R('x-max-length 2 with 2 unacked, 3 more published: declare-ok', c.call(2, QD('o1', passive=True)))
    c.send(1, spec.Basic.Nack(delivery_tag=0, multiple=True, requeue=True))
    c.sync()
    R('  after requeueing the 2 unacked: reads', drain_order(c, 'o1'))
    c.call(1, spec.Queue.Delete(queue='o1'))
    # priorities
    c.call(1, QD('o2', arguments={'x-max-priority': 5}))
    for pr in (None, 1, 9, 5, 0, 3):
        c.publish(1, '', 'o2', b'p%s' % str(pr).encode(), props=spec.BasicProperties(priority=pr))
    c.sync()
    R('x-max-priority 5, priorities None,1,9,5,0,3: reads', drain_order(c, 'o2'))
    c.call(1, spec.Queue.Delete(queue='o2'))
    # per-message TTL 0 with a consumer attached vs not
    c.call(1, QD('o3'))
    c.publish(1, '', 'o3', b'ttl0', props=spec.BasicProperties(expiration='0'))
    c.sync()
    R('expiration "0", no consumer: reads', drain_order(c, 'o3'))
    c.call(2, spec.Basic.Consume(queue='o3', no_ack=True, consumer_tag='k'))
    c.publish(1, '', 'o3', b'ttl0', props=spec.BasicProperties(expiration='0'))
    R('expiration "0", consumer attached: delivered?', [e.body for e in delivered(c)])
    c.call(1, spec.Queue.Delete(queue='o3'))
    # redelivered flag on a message returned from a consumer by cancel: still unacked
    c.close()
    # queue.declare on a closed channel after error
    c = Conn()
    c.send(1, QD('nosuch-o', passive=True))
    c.send(1, QD('o4'))
    c.send(1, QD('o4b'))
    R('two methods sent right after one that fails (before close-ok)', evs(c.events(0.5)))
    c.close()
    c = Conn()
    R('  were they executed? passive declare o4', c.call(1, QD('o4', passive=True)))
    # confirm numbering: publishes before confirm.select do not count
    cleanup('o8')
    c.call(1, QD('o8'))
    fill(c, 'o8', 2)
    c.call(1, spec.Confirm.Select())
    fill(c, 'o8', 1)
    R('2 publishes, then confirm.select, then 1 publish: acks', evs(c.events(0.4)))
    c.publish(1, 'nosuch-x', 'k')
    R('confirm mode, publish to missing exchange', c.sync())
    c.call(1, spec.Confirm.Select())
    fill(c, 'o8', 1)
    R('  reopened channel, confirm again: first tag', evs(c.events(0.4)))
    c.call(1, spec.Queue.Delete(queue='o8'))
    # frame ordering: delivery vs consume-ok
    cleanup('o5')
    c = Conn()
    c.call(1, QD('o5'))
    fill(c, 'o5', 1)
    c.send(1, spec.Basic.Consume(queue='o5', consumer_tag='k'))
    R('consume on a non-empty queue: frame order', evs(c.events(0.4)))
    c.call(1, spec.Queue.Delete(queue='o5'))
    c.close()
    # publish to a queue name via default exchange with nonexistent queue, no mandatory: silently dropped
    c = Conn()
    c.call(1, spec.Confirm.Select())
    c.publish(1, '', 'nosuch-o6', b'x')
    R('default exchange to a missing queue (confirm, not mandatory)', evs(c.events(0.4)))
    c.close()
    # consumer priority argument / x-cancel-on-ha-failover accepted?
    cleanup('o7')
    c = Conn()
    c.call(1, QD('o7'))
    R('consume with x-priority 5', c.call(1, spec.Basic.Consume(queue='o7', arguments={'x-priority': 5})))
    R('consume with x-priority "abc"', c.call(1, spec.Basic.Consume(queue='o7', arguments={'x-priority': 'abc'})))
    R('consume with unknown x-foo', c.call(1, spec.Basic.Consume(queue='o7', arguments={'x-foo': 1})))
    c.call(1, spec.Queue.Delete(queue='o7'))
    c.close()


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
        ctl('delete_user', 'bob')
        ctl('delete_user', 'carol')
        ctl('delete_vhost', 'v2')


if __name__ == '__main__':
    main()
