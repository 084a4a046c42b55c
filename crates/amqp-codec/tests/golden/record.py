#!/usr/bin/env python3
"""Record golden AMQP 0-9-1 byte captures of real clients talking to a real RabbitMQ.

This script is the documentation of how the files next to it were made
(see README.md).  It is not run by the test suite.

    python3 record.py record [NAME ...]   run scenarios (all by default) through the
                                          recording proxy while tshark captures the
                                          proxy->RabbitMQ leg into NAME.pcap
    python3 record.py frames [NAME ...]   write NAME.frames.tsv from NAME.pcap, using
                                          tshark's own AMQP dissector (PDML output)
    python3 record.py check  [NAME ...]   split NAME.c2s.bin / NAME.s2c.bin into frames with
                                          a tiny independent splitter and compare them with
                                          NAME.frames.tsv (types, channels, ids, sizes),
                                          and the .bin files with the pcap's TCP streams

Expects RabbitMQ on 127.0.0.1:5672 with the default guest/guest user, and
`pip install pika amqp`.  The proxy listens on 127.0.0.1:5673; its upstream
connection leaves from 127.0.0.3, which is what the capture filter selects.

Each scenario makes exactly one client connection through the proxy.  The proxy
writes every byte exactly as it forwards it: client->server bytes to
NAME.c2s.bin, server->client bytes to NAME.s2c.bin.
"""

import datetime
import decimal
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
LISTEN = ("127.0.0.1", 5673)
UPSTREAM = ("127.0.0.1", 5672)
# The proxy's upstream connection leaves from this loopback address, so the
# capture filter sees only it and not other clients of the same RabbitMQ.
PROXY_SOURCE = "127.0.0.3"
AMQP_0_9_1 = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE


# --------------------------------------------------------------------------
# The recording proxy
# --------------------------------------------------------------------------

class RecordingProxy:
    """Accept one client connection on LISTEN, forward it to UPSTREAM, and
    record each direction's bytes, exactly as forwarded, into a file."""

    def __init__(self, name):
        self.name = name
        self.listener = socket.create_server(LISTEN, reuse_port=False)
        self.threads = []
        self.socks = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        client, _ = self.listener.accept()
        self.listener.close()  # exactly one connection per capture
        server = socket.create_connection(UPSTREAM, source_address=(PROXY_SOURCE, 0))
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks = [client, server]
        for src, dst, suffix in ((client, server, "c2s"), (server, client, "s2c")):
            path = os.path.join(HERE, f"{self.name}.{suffix}.bin")
            t = threading.Thread(target=self._pump, args=(src, dst, path), daemon=True)
            t.start()
            self.threads.append(t)
        self.accepted.set()

    @staticmethod
    def _pump(src, dst, path):
        with open(path, "wb") as out:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                try:
                    dst.sendall(data)
                except OSError:
                    break
                out.write(data)
                out.flush()
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the end of stream on
        except OSError:
            pass

    def wait(self, timeout=10.0):
        """Wait until both directions have reached end of stream."""
        deadline = time.time() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.time()))
        for s in self.socks:
            s.close()
        if not self.accepted.is_set():
            self.listener.close()
            raise RuntimeError(f"{self.name}: no client connected to the proxy")


class Capture:
    """tshark on the loopback interface: the proxy->RabbitMQ leg only."""

    def __init__(self, name):
        self.path = os.path.join(HERE, f"{name}.pcap")
        if os.path.exists(self.path):
            os.remove(self.path)
        self.proc = subprocess.Popen(
            ["tshark", "-q", "-i", "lo", "-f", f"tcp port 5672 and host {PROXY_SOURCE}", "-F", "pcap", "-w", self.path],
            stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:  # wait until packets are really captured
            if "Capturing on" in line:
                break
        time.sleep(0.5)

    def stop(self):
        time.sleep(0.5)
        self.proc.terminate()
        self.proc.wait(10)


def record(name):
    print(f"== {name}", flush=True)
    cap = Capture(name)
    proxy = RecordingProxy(name)
    try:
        SCENARIOS[name]()
        proxy.wait()
    finally:
        cap.stop()


def rabbitmqctl(*args):
    print("   rabbitmqctl", *args, flush=True)
    subprocess.run(["rabbitmqctl", *args], check=True, stdout=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# Scenarios with real clients
# --------------------------------------------------------------------------

def pika_params(**kw):
    import pika
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    return pika.ConnectionParameters(host=LISTEN[0], port=LISTEN[1], **kw)


class RawField:
    """A field-table value pika cannot produce by itself (b, B, s, u, i, f, ...):
    the type tag plus the already packed value bytes, written verbatim."""

    def __init__(self, tag, fmt, value):
        self.encoded = tag + struct.pack(">" + fmt, value)


def _teach_pika_raw_fields():
    import pika.data
    original = pika.data.encode_value
    if getattr(original, "knows_raw_fields", False):
        return

    def encode_value(pieces, value):
        if isinstance(value, RawField):
            pieces.append(value.encoded)
            return len(value.encoded)
        return original(pieces, value)

    encode_value.knows_raw_fields = True
    pika.data.encode_value = encode_value


def field_table():
    """A field table using every field type RabbitMQ understands."""
    _teach_pika_raw_fields()
    return {
        "longstr": "hello",                       # S
        "utf8": "h\u00e9llo \u2603",              # S, non-ASCII
        "empty": "",                              # S, empty
        "int": -123456,                           # I
        "long": 1 << 40,                          # l
        "bool_t": True,                           # t
        "bool_f": False,                          # t
        "decimal": decimal.Decimal("-3.14159"),   # D
        "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5),  # T
        "table": {"inner": "value", "n": 7, "deeper": {"x": None}},  # F
        "array": ["a", 1, True, None, {"k": "v"}, [1, 2]],  # A
        "empty_array": [],                        # A
        "empty_table": {},                        # F
        "bytes": b"\x00\x01\xfe\xff",             # x
        "void": None,                             # V
        "byte": RawField(b"b", "b", -5),          # b  signed 8
        "ubyte": RawField(b"B", "B", 250),        # B  unsigned 8
        "short": RawField(b"s", "h", -30000),     # s  signed 16
        "ushort": RawField(b"u", "H", 60000),     # u  unsigned 16
        "uint": RawField(b"i", "I", 4000000000),  # i  unsigned 32
        "float": RawField(b"f", "f", 1.5),        # f  32-bit float
        "double": RawField(b"d", "d", -2.25),     # d  64-bit float
    }


def scenario_handshake_plain():
    import pika
    conn = pika.BlockingConnection(pika_params())
    ch = conn.channel()
    ch.close()
    conn.close()


def scenario_handshake_amqplain():
    import amqp
    conn = amqp.Connection(host="%s:%d" % LISTEN, userid="guest", password="guest",
                           login_method="AMQPLAIN")
    conn.connect()
    ch = conn.channel()
    ch.close()
    conn.close()


def scenario_publish_consume():
    import pika
    from pika.exceptions import UnroutableError

    conn = pika.BlockingConnection(pika_params(frame_max=4096, heartbeat=1))
    ch = conn.channel()
    for kind in ("direct", "fanout", "topic", "headers"):
        ch.exchange_declare(f"golden.{kind}", exchange_type=kind)
    ch.exchange_bind(destination="golden.fanout", source="golden.direct", routing_key="rk")
    args = field_table()
    args["x-max-length"] = 100
    ch.queue_declare("golden.q", arguments=args)
    ch.queue_bind("golden.q", "golden.direct", routing_key="rk")
    ch.queue_bind("golden.q", "golden.topic", routing_key="a.*.#")
    headers_binding = {"x-match": "all", "h": "v"}
    ch.queue_bind("golden.q", "golden.headers", arguments=headers_binding)
    ch.basic_qos(prefetch_count=10)
    ch.confirm_delivery()

    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=field_table(),
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="amq.rabbitmq.reply-to.golden",
        expiration="600000",
        message_id="msg-1",
        timestamp=1700000000,
        type="golden.type",
        user_id="guest",
        app_id="warren-golden",
        cluster_id="cluster-1",
    )
    ch.basic_publish("golden.direct", "rk", b'{"hello":"world"}', props, mandatory=True)
    big = bytes(range(256)) * 40  # 10240 bytes, more than two 4096-byte frames
    ch.basic_publish("", "golden.q", big, pika.BasicProperties(content_type="application/octet-stream"))
    try:
        ch.basic_publish("golden.direct", "nowhere", b"unroutable", mandatory=True)
    except UnroutableError:
        pass  # basic.return then basic.ack

    method, _, _ = ch.basic_get("golden.q")          # the message with all properties
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, _, _ = ch.basic_get("golden.q")          # the same one again, redelivered:
    ch.basic_ack(method.delivery_tag)                # nack put it back at the head

    for i in range(3):
        ch.basic_publish("", "golden.q", b"small %d" % i)
    got = []
    tag = ch.basic_consume("golden.q", lambda c, m, p, b: got.append(m), consumer_tag="golden-ctag")

    def pump(n):
        deadline = time.time() + 5
        while len(got) < n and time.time() < deadline:
            conn.process_data_events(time_limit=0.1)

    pump(4)                                          # the big one, small 0, 1, 2
    ch.basic_ack(got[0].delivery_tag)
    ch.basic_nack(got[1].delivery_tag, requeue=True)
    ch.basic_reject(got[2].delivery_tag, requeue=False)
    pump(5)                                          # small 0 again
    ch.basic_recover(requeue=True)                   # small 0 and small 2 come back
    pump(7)
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    ch.basic_cancel(tag)
    method, _, _ = ch.basic_get("golden.q")          # get-empty
    assert method is None

    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", "golden.q", b"committed")
    tx.tx_commit()
    tx.basic_publish("", "golden.q", b"rolled back")
    tx.tx_rollback()
    tx.close()

    ch.queue_purge("golden.q")
    ch.queue_unbind("golden.q", "golden.headers", arguments=headers_binding)
    ch.queue_unbind("golden.q", "golden.topic", routing_key="a.*.#")
    ch.exchange_unbind(destination="golden.fanout", source="golden.direct", routing_key="rk")
    ch.queue_delete("golden.q")
    for kind in ("direct", "fanout", "topic", "headers"):
        ch.exchange_delete(f"golden.{kind}")
    conn.sleep(2.5)                                  # heartbeats both ways
    ch.close()
    conn.close()


def scenario_channel_error():
    import pika
    from pika.exceptions import ChannelClosedByBroker
    conn = pika.BlockingConnection(pika_params())
    ch = conn.channel()
    try:
        ch.queue_declare("golden.missing", passive=True)
    except ChannelClosedByBroker:
        pass
    ch = conn.channel()
    ch.close()
    conn.close()


def scenario_connection_error():
    import pika
    from pika.exceptions import AMQPConnectionError
    try:
        pika.BlockingConnection(pika_params(
            credentials=pika.PlainCredentials("guest", "wrong-password"),
            connection_attempts=1))
    except AMQPConnectionError:
        pass


def scenario_connection_blocked():
    """connection.blocked / connection.unblocked, forced by a memory alarm."""
    import pika
    conn = pika.BlockingConnection(pika_params())
    events = []
    conn.add_on_connection_blocked_callback(lambda c, m: events.append("blocked"))
    conn.add_on_connection_unblocked_callback(lambda c, m: events.append("unblocked"))
    ch = conn.channel()
    ch.queue_declare("golden.blocked")
    ch.basic_publish("", "golden.blocked", b"before the alarm")
    rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
    try:
        time.sleep(1)
        ch.basic_publish("", "golden.blocked", b"during the alarm")
        deadline = time.time() + 20
        while "blocked" not in events and time.time() < deadline:
            conn.process_data_events(time_limit=0.2)
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")
    deadline = time.time() + 20
    while "unblocked" not in events and time.time() < deadline:
        conn.process_data_events(time_limit=0.2)
    print("   events:", events, flush=True)
    ch.queue_delete("golden.blocked")
    ch.close()
    conn.close()


def scenario_update_secret():
    import pika
    conn = pika.BlockingConnection(pika_params())
    conn.update_secret("guest", "golden capture")
    conn.close()


# --------------------------------------------------------------------------
# Scenarios with a raw socket (things no client library sends)
# --------------------------------------------------------------------------

def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def table_of_strings(d):
    body = b"".join(shortstr(k) + b"S" + longstr(v) for k, v in d.items())
    return longstr(body)


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class RawClient:
    def __init__(self):
        self.sock = socket.create_connection(LISTEN)
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        ftype, channel, size = struct.unpack(">BHI", self._read(7))
        payload = self._read(size + 1)[:-1]
        return ftype, channel, payload

    def expect(self, class_id, method_id):
        """Read frames up to the given method (skipping heartbeats); return its arguments."""
        while True:
            ftype, channel, payload = self.frame()
            if ftype == 1:
                got = struct.unpack(">HH", payload[:4])
                if got == (class_id, method_id):
                    return payload[4:]
                raise RuntimeError(f"expected {(class_id, method_id)}, got {got}: {payload!r}")

    def read_to_eof(self):
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()

    def handshake(self):
        self.send(AMQP_0_9_1)
        self.expect(10, 10)                                    # connection.start
        props = table_of_strings({"product": "warren-golden-raw"})
        self.send(method(0, 10, 11, props + shortstr("PLAIN")
                         + longstr(b"\x00guest\x00guest") + shortstr("en_US")))
        self.expect(10, 30)                                    # connection.tune
        self.send(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        self.send(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        self.expect(10, 41)                                    # connection.open-ok
        self.send(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)                                    # channel.open-ok


def scenario_bad_header():
    c = RawClient()
    c.send(b"AMQP\x01\x01\x00\x0a")  # the AMQP 0-10 protocol header
    c.read_to_eof()


def scenario_raw_misc():
    """Methods pika never sends, then a hard error (channel.flow active=false)."""
    c = RawClient()
    c.handshake()
    c.send(method(1, 30, 10, shortstr("/data") + bytes([0b11100])))   # access.request
    c.expect(30, 11)
    c.send(method(1, 20, 20, b"\x01"))                                 # channel.flow active
    c.expect(20, 21)
    c.send(method(1, 60, 10, struct.pack(">IH", 0, 10) + b"\x01"))     # basic.qos global
    c.expect(60, 11)
    # nowait variants: no reply expected
    c.send(method(1, 40, 10, struct.pack(">H", 0) + shortstr("golden.raw") + shortstr("direct")
                  + bytes([0b10100]) + longstr(b"")))                  # exchange.declare auto-delete nowait
    c.send(method(1, 50, 10, struct.pack(">H", 0) + shortstr("golden.raw.q")
                  + bytes([0b11000]) + longstr(b"")))                  # queue.declare auto-delete nowait
    c.send(method(1, 50, 20, struct.pack(">H", 0) + shortstr("golden.raw.q") + shortstr("golden.raw")
                  + shortstr("k") + b"\x01" + longstr(b"")))           # queue.bind nowait
    # an empty-body message: content header with body size 0 and no body frame
    c.send(method(1, 60, 40, struct.pack(">H", 0) + shortstr("golden.raw") + shortstr("k") + b"\x00")
           + frame(2, 1, struct.pack(">HHQH", 60, 0, 0, 0)))
    c.send(method(1, 60, 70, struct.pack(">H", 0) + shortstr("golden.raw.q") + b"\x00"))  # basic.get
    c.expect(60, 71)                                                   # basic.get-ok (left unacked)
    assert c.frame()[0] == 2                                           # header, body size 0
    c.send(method(1, 60, 100, b"\x01"))                                # basic.recover-async requeue
    c.send(method(1, 60, 70, struct.pack(">H", 0) + shortstr("golden.raw.q") + b"\x01"))  # get, no-ack
    c.expect(60, 71)
    assert c.frame()[0] == 2
    c.send(method(1, 60, 80, struct.pack(">Q", 0) + b"\x01"))          # basic.ack tag 0 + multiple ("all")
    c.send(method(1, 50, 40, struct.pack(">H", 0) + shortstr("golden.raw.q") + b"\x00"))  # queue.delete
    c.expect(50, 41)
    c.send(method(1, 20, 40, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0)))
    c.expect(20, 41)                                                   # channel.close-ok
    c.send(method(2, 20, 10, shortstr("")))
    c.expect(20, 11)
    c.send(method(2, 20, 20, b"\x00"))                                 # channel.flow active=false
    c.expect(10, 50)                                                   # connection.close 540
    c.send(method(0, 10, 51))                                          # connection.close-ok
    c.read_to_eof()


def scenario_frame_error():
    """A method frame whose frame-end octet is 0x00 instead of 0xCE."""
    c = RawClient()
    c.handshake()
    c.send(frame(1, 1, struct.pack(">HH", 60, 10) + struct.pack(">IH", 0, 1) + b"\x00", end=0x00))
    c.expect(10, 50)                                                   # connection.close 501
    c.send(method(0, 10, 51))
    c.read_to_eof()


SCENARIOS = {
    "handshake_plain": scenario_handshake_plain,
    "handshake_amqplain": scenario_handshake_amqplain,
    "publish_consume": scenario_publish_consume,
    "channel_error": scenario_channel_error,
    "connection_error": scenario_connection_error,
    "connection_blocked": scenario_connection_blocked,
    "update_secret": scenario_update_secret,
    "bad_header": scenario_bad_header,
    "raw_misc": scenario_raw_misc,
    "frame_error": scenario_frame_error,
}


# --------------------------------------------------------------------------
# Expected decodings from tshark's AMQP dissector
# --------------------------------------------------------------------------

def _field(proto, name):
    for f in proto.iter("field"):
        if f.get("name") == name:
            return f
    return None


def _label(f):
    """'Class: Connection (10)' -> 'Connection'"""
    text = f.get("showname").split(": ", 1)[1]
    return text.rsplit(" (", 1)[0]


def frames_from_pcap(name):
    """One row per AMQP frame, in capture order, from tshark's AMQP dissector.

    tshark's dissector does not put the 0-9-1 protocol header in its tree (it
    only writes "AMQP (unknown version)" in the Info column), so the
    protocol-header row is taken from the first TCP payload of that direction
    when it begins with "AMQP"."""
    pdml = subprocess.run(
        ["tshark", "-r", os.path.join(HERE, f"{name}.pcap"), "-T", "pdml",
         "-d", "tcp.port==5672,amqp"],
        check=True, capture_output=True, text=True).stdout
    rows = []
    seen_payload = set()
    for packet in ET.fromstring(pdml).iter("packet"):
        tcp = next(p for p in packet.iter("proto") if p.get("name") == "tcp")
        direction = "s2c" if _field(tcp, "tcp.srcport").get("show") == "5672" else "c2s"
        payload = _field(tcp, "tcp.payload")
        if payload is not None and direction not in seen_payload:
            seen_payload.add(direction)
            data = bytes.fromhex(payload.get("value"))
            if data.startswith(b"AMQP"):
                rows.append([direction, "-", "protocol-header", "AMQP"] + [str(b) for b in data[4:8]])
        for amqp in (p for p in packet.iter("proto") if p.get("name") == "amqp"):
            if _field(amqp, "amqp.type") is None:
                continue  # a protocol header dissected as AMQP 0-10: already listed
            rows.append(_frame_row(direction, amqp))
    return rows


def _frame_row(direction, amqp):
    ftype = _field(amqp, "amqp.type")
    channel = _field(amqp, "amqp.channel").get("show")
    kind = _label(ftype).lower().replace("content ", "").replace(" ", "-")
    row = [direction, channel, kind]
    if kind == "method":
        cls, meth = _field(amqp, "amqp.method.class"), _field(amqp, "amqp.method.method")
        row += [_label(cls), _label(meth), cls.get("show"), meth.get("show")]
    elif kind == "header":
        row += [_field(amqp, "amqp.header.body-size").get("show"),
                _field(amqp, "amqp.header.class").get("show"),
                "0x%04x" % int(_field(amqp, "amqp.header.property-flags").get("show"), 0)]
    elif kind == "body":
        row += [_field(amqp, "amqp.length").get("show")]
    return row


TSV_HEADER = ("# direction\tchannel\ttype\t"
              "method: class-name method-name class-id method-id | "
              "header: body-size class-id property-flags | body: payload-length | "
              "protocol-header: 'AMQP' and its four octets")


def write_frames(name):
    rows = frames_from_pcap(name)
    with open(os.path.join(HERE, f"{name}.frames.tsv"), "w") as out:
        out.write(TSV_HEADER + "\n")
        for row in rows:
            out.write("\t".join(row) + "\n")
    print(f"{name}.frames.tsv: {len(rows)} frames")


# --------------------------------------------------------------------------
# Independent check: split the .bin files and compare with the .tsv
# --------------------------------------------------------------------------

def split_frames(data):
    """Yield (type, channel, payload) for each frame; type 'P' for a protocol header."""
    pos = 0
    if data.startswith(b"AMQP"):
        yield "P", None, data[:8]
        pos = 8
    while pos < len(data):
        if len(data) - pos < 8:
            raise ValueError(f"truncated frame header at {pos}")
        ftype, channel, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size
        if end >= len(data):
            raise ValueError(f"truncated frame at {pos}")
        if data[end] != FRAME_END:
            print(f"   note: frame at offset {pos} ends with 0x{data[end]:02x}, not 0xce")
        yield ftype, channel, data[pos + 7:end]
        pos = end + 1


def bin_rows(name, direction):
    with open(os.path.join(HERE, f"{name}.{direction}.bin"), "rb") as f:
        data = f.read()
    rows = []
    for ftype, channel, payload in split_frames(data):
        if ftype == "P":
            rows.append(["protocol-header", payload[:4].decode("latin-1")] + [str(b) for b in payload[4:]])
        elif ftype == 1:
            c, m = struct.unpack_from(">HH", payload)
            rows.append(["method", str(channel), str(c), str(m)])
        elif ftype == 2:
            c, _, size, flags = struct.unpack_from(">HHQH", payload)
            rows.append(["header", str(channel), str(size), str(c), "0x%04x" % flags])
        elif ftype == 3:
            rows.append(["body", str(channel), str(len(payload))])
        elif ftype == 8:
            rows.append(["heartbeat", str(channel)])
        else:
            rows.append([str(ftype), str(channel)])
    return rows


def tsv_rows(name, direction):
    rows = []
    with open(os.path.join(HERE, f"{name}.frames.tsv")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if cols[0] != direction:
                continue
            kind = cols[2]
            if kind == "protocol-header":
                rows.append([kind] + cols[3:])
            elif kind == "method":
                rows.append([kind, cols[1], cols[5], cols[6]])
            else:
                rows.append([kind, cols[1]] + cols[3:])
    return rows


def pcap_streams(name):
    """Both directions' bytes, reassembled by tshark from NAME.pcap."""
    out = subprocess.run(
        ["tshark", "-r", os.path.join(HERE, f"{name}.pcap"), "-q", "-z", "follow,tcp,raw,0"],
        check=True, capture_output=True, text=True).stdout
    streams = {"c2s": b"", "s2c": b""}
    body = out.split("Node 1:", 1)[1].split("\n", 1)[1]
    for line in body.splitlines():
        if not line.strip() or line.startswith("==="):
            continue
        direction = "s2c" if line.startswith("\t") else "c2s"  # node 0 is the proxy
        streams[direction] += bytes.fromhex(line.strip())
    return streams


def check(name):
    ok = True
    streams = pcap_streams(name)
    for direction in ("c2s", "s2c"):
        with open(os.path.join(HERE, f"{name}.{direction}.bin"), "rb") as f:
            same = f.read() == streams[direction]
        ok &= same
        print(f"{name} {direction}: bin and pcap bytes " + ("identical" if same else "DIFFER"))
    for direction in ("c2s", "s2c"):
        b, t = bin_rows(name, direction), tsv_rows(name, direction)
        same = b == t
        ok &= same
        print(f"{name} {direction}: bin {len(b)} frames, tsv {len(t)} frames: "
              + ("same" if same else "DIFFERENT"))
        if not same:
            for i in range(max(len(b), len(t))):
                x = b[i] if i < len(b) else None
                y = t[i] if i < len(t) else None
                if x != y:
                    print(f"   #{i}: bin {x} tsv {y}")
    return ok


def main(argv):
    if len(argv) < 2 or argv[1] not in ("record", "frames", "check"):
        print(__doc__)
        return 2
    names = argv[2:] or list(SCENARIOS)
    if argv[1] == "record":
        for name in names:
            record(name)
    elif argv[1] == "frames":
        for name in names:
            write_frames(name)
    else:
        return 0 if all([check(name) for name in names]) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
