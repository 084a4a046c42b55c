#!/usr/bin/env python3
"""Client side of `cargo xtask crash`: load a broker that is about to be killed, then drain it.

Usage:
  crash_pika.py load PORT OUT --cycle C --producers N --window W --pad B --consumer 0|1 --seed S
  crash_pika.py drain PORT OUT

`load` declares the durable queue `crash-test`, which dead-letters (through the default
exchange) to the durable queue `crash-dead`, starts N producer connections publishing
persistent messages with publisher confirms (at most W unconfirmed each) and, with
`--consumer 1`, one consumer that acks part of what it gets and rejects (requeue=false, so
dead-letters) another part. It prints `ready` once every producer is publishing, then runs
until the broker dies (xtask sends it SIGKILL). It writes to OUT, as JSON, what the checks
need:
  attempted  ids whose basic.publish was about to be written (recorded before writing),
  confirmed  ids whose basic.ack (publisher confirm) arrived,
  nacked     ids whose basic.nack arrived,
  acked      ids whose consumer basic.ack may have been written (recorded before writing),
  rejected   ids whose consumer basic.reject may have been written (recorded before writing),
  delivered  how many deliveries the consumer got,
  unexpected errors that a broker kill does not explain (channel or connection closed by the
             broker, exceptions in this script).

`drain` consumes and acks `crash-test`, then `crash-dead`, until they are empty and writes
  queue_existed  whether both durable queues were there before they were declared again,
  messages       [id, redelivered, queue] in delivery order,
  corrupt        bodies that are not exactly what a producer sent,
  left           the queue's message count when draining gave up (0 when drained).

A body is `ID|PAD|FILLER`, FILLER being PAD bytes derived from ID, so a drain can tell a body
that was torn or mixed up from one that was sent.
"""
import argparse
import json
import random
import sys
import threading
import time

import pika
from pika import exceptions as px

QUEUE = "crash-test"
DEAD = "crash-dead"
# What crash-test is declared with: rejected messages go to crash-dead.
DL_ARGS = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD}
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def params(port):
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        heartbeat=30,
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=30,
    )


def body_of(msg_id, pad):
    seed = (msg_id + ".").encode()
    filler = (seed * (pad // len(seed) + 1))[:pad]
    return f"{msg_id}|{pad}|".encode() + filler


def parse_body(body):
    """The id in a body, or None if the body is not one a producer sent."""
    try:
        msg_id, pad, _ = body.split(b"|", 2)
        msg_id = msg_id.decode()
        return msg_id if body == body_of(msg_id, int(pad)) else None
    except (ValueError, UnicodeDecodeError):
        return None


def unexpected_close(reason):
    """Whether a connection or channel close is something a broker kill does not explain."""
    return isinstance(reason, (px.ConnectionClosedByBroker, px.ChannelClosedByBroker))


class Producer(threading.Thread):
    """One connection and channel in confirm mode, publishing with a window of unconfirmed."""

    def __init__(self, port, cycle, index, window, pad, stop):
        super().__init__(daemon=True)
        self.params = params(port)
        self.prefix = f"p{cycle}-{index}-"
        self.window = window
        self.pad = pad
        self.stop = stop
        self.ready = threading.Event()
        self.attempted, self.confirmed, self.nacked, self.unexpected = [], [], [], []
        self.pending = {}  # delivery tag -> id, in tag order
        self.next_tag = 0
        self.conn = None
        self.ch = None
        self.closing = False

    def run(self):
        try:
            self.conn = pika.SelectConnection(
                self.params,
                on_open_callback=self.on_open,
                on_open_error_callback=self.on_open_error,
                on_close_callback=self.on_close,
            )
            self.conn.ioloop.start()
        except Exception as e:  # noqa: BLE001 - anything here is a harness bug, reported
            self.unexpected.append(f"{self.prefix}: {e!r}")
        finally:
            self.ready.set()

    def on_open(self, conn):
        conn.channel(on_open_callback=self.on_channel)

    def on_open_error(self, conn, err):
        # The broker may already be dead when the connection is attempted; that is no error,
        # the producer just attempted nothing.
        conn.ioloop.stop()

    def on_close(self, conn, reason):
        if unexpected_close(reason) and not self.closing:
            self.unexpected.append(f"{self.prefix}: connection closed: {reason!r}")
        conn.ioloop.stop()

    def on_channel(self, ch):
        self.ch = ch
        ch.add_on_close_callback(self.on_channel_closed)
        ch.confirm_delivery(ack_nack_callback=self.on_confirm, callback=self.on_select_ok)

    def on_channel_closed(self, ch, reason):
        if unexpected_close(reason):
            self.unexpected.append(f"{self.prefix}: channel closed: {reason!r}")
            if self.conn.is_open:
                self.conn.close()

    def on_select_ok(self, _frame):
        self.ready.set()
        self.publish()

    def publish(self):
        try:
            while (not self.stop.is_set() and len(self.pending) < self.window
                   and self.conn.is_open and self.ch.is_open):
                self.next_tag += 1
                msg_id = f"{self.prefix}{self.next_tag}"
                self.attempted.append(msg_id)
                self.pending[self.next_tag] = msg_id
                self.ch.basic_publish("", QUEUE, body_of(msg_id, self.pad), PERSISTENT)
        except (px.AMQPConnectionError, px.ChannelWrongStateError,
                px.ConnectionWrongStateError, px.StreamLostError):
            return  # the broker died under us
        if self.stop.is_set() and not self.closing and self.conn.is_open:
            self.closing = True
            self.conn.close()

    def on_confirm(self, frame):
        m = frame.method
        into = self.confirmed if isinstance(m, pika.spec.Basic.Ack) else self.nacked
        if m.multiple:
            tags = [t for t in self.pending if t <= m.delivery_tag]
        else:
            tags = [m.delivery_tag]
        for t in tags:
            msg_id = self.pending.pop(t, None)
            if msg_id is None:
                self.unexpected.append(f"{self.prefix}: confirm for unknown tag {t}")
            else:
                into.append(msg_id)
        self.publish()

    def request_stop(self):
        if self.conn is not None and self.conn.ioloop is not None:
            try:
                self.conn.ioloop.add_callback_threadsafe(self.publish)
            except Exception:  # noqa: BLE001 - the loop may be gone already
                pass


class Consumer(threading.Thread):
    """Consumes with a prefetch, rejects (dead-letters) a random part of what it gets and acks
    a random part of the rest, the rest left unacked."""

    def __init__(self, port, rng, stop):
        super().__init__(daemon=True)
        self.params = params(port)
        self.stop = stop
        self.ack_probability = rng.choice([0.5, 0.9, 1.0])
        self.prefetch = rng.choice([1, 10, 100])
        self.max_acks = rng.choice([10, 100, 1_000_000])
        self.reject_probability = rng.choice([0.0, 0.2, 0.5])
        self.rng = random.Random(rng.random())
        self.delivered = 0
        self.acked, self.rejected, self.unexpected = [], [], []

    def run(self):
        try:
            conn = pika.BlockingConnection(self.params)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)
            for m, _props, body in ch.consume(QUEUE, inactivity_timeout=0.05):
                if self.stop.is_set():
                    break
                if m is None:
                    continue
                self.delivered += 1
                msg_id = parse_body(body)
                if msg_id is None:
                    self.unexpected.append(f"consumer: corrupt body {body[:80]!r}")
                    continue
                if self.rng.random() < self.reject_probability:
                    self.rejected.append(msg_id)  # before writing, as for acks
                    ch.basic_reject(m.delivery_tag, requeue=False)
                elif len(self.acked) < self.max_acks and self.rng.random() < self.ack_probability:
                    self.acked.append(msg_id)  # before writing: an ack may be half-sent
                    ch.basic_ack(m.delivery_tag)
            conn.close()
        except (px.ConnectionClosedByBroker, px.ChannelClosedByBroker) as e:
            self.unexpected.append(f"consumer: {e!r}")
        except (px.AMQPError, OSError):
            pass  # the broker was killed
        except Exception as e:  # noqa: BLE001 - a harness bug, reported
            self.unexpected.append(f"consumer: {e!r}")


def load(a):
    conn = pika.BlockingConnection(params(a.port))
    ch = conn.channel()
    ch.queue_declare(DEAD, durable=True)
    ch.queue_declare(QUEUE, durable=True, arguments=DL_ARGS)
    conn.close()

    rng = random.Random(a.seed)
    stop = threading.Event()
    producers = [Producer(a.port, a.cycle, i + 1, a.window, a.pad, stop)
                 for i in range(a.producers)]
    consumer = Consumer(a.port, rng, stop) if a.consumer else None
    threads = producers + ([consumer] if consumer else [])
    for t in threads:
        t.start()
    for p in producers:
        if not p.ready.wait(10):
            print("crash_pika: a producer did not start within 10 s", file=sys.stderr)
            sys.exit(2)
    print("ready", flush=True)

    # Until xtask kills the broker; the deadline only stops a run whose broker was never killed.
    deadline = time.monotonic() + a.deadline
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    timed_out = any(t.is_alive() for t in threads)
    if timed_out:
        stop.set()
        for p in producers:
            p.request_stop()
        for t in threads:
            t.join(10)

    out = {
        "attempted": [i for p in producers for i in p.attempted],
        "confirmed": [i for p in producers for i in p.confirmed],
        "nacked": [i for p in producers for i in p.nacked],
        "acked": consumer.acked if consumer else [],
        "rejected": consumer.rejected if consumer else [],
        "delivered": consumer.delivered if consumer else 0,
        "unexpected": [e for t in threads for e in t.unexpected]
        + (["the broker was still up at the deadline"] if timed_out else []),
    }
    with open(a.out, "w") as f:
        json.dump(out, f)


def drain(a):
    conn = pika.BlockingConnection(params(a.port))
    ch = conn.channel()
    existed = True
    for queue, args in ((DEAD, None), (QUEUE, DL_ARGS)):
        try:
            ch.queue_declare(queue, durable=True, passive=True)
        except px.ChannelClosedByBroker as e:
            if e.reply_code != 404:
                raise
            existed = False
            ch = conn.channel()
            ch.queue_declare(queue, durable=True, arguments=args)
    ch.basic_qos(prefetch_count=500)

    messages, corrupt = [], []
    left = 0
    for queue in (QUEUE, DEAD):
        stalled_since = None
        while True:
            last_tag, unacked = None, 0
            for m, _props, body in ch.consume(queue, inactivity_timeout=0.3):
                if m is None:
                    break
                msg_id = parse_body(body)
                if msg_id is None:
                    corrupt.append(repr(body[:80]))
                else:
                    messages.append([msg_id, bool(m.redelivered), queue])
                last_tag, unacked = m.delivery_tag, unacked + 1
                if unacked >= 200:
                    ch.basic_ack(last_tag, multiple=True)
                    last_tag, unacked = None, 0
            if last_tag is not None:
                ch.basic_ack(last_tag, multiple=True)
            ch.cancel()
            left = ch.queue_declare(queue, durable=True, passive=True).method.message_count
            if left == 0:
                break
            # Messages counted but not delivered: give the broker a while, then report them.
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 10:
                break
        if left:
            break
    conn.close()
    with open(a.out, "w") as f:
        json.dump({"queue_existed": existed, "messages": messages, "corrupt": corrupt,
                   "left": left}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "drain"])
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--cycle", type=int, default=0)
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--consumer", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=60.0)
    a = ap.parse_args()
    load(a) if a.mode == "load" else drain(a)


if __name__ == "__main__":
    main()
