#!/usr/bin/env python3
"""Interoperability check: Python's pika client against a running broker.

Usage: interop_pika.py PORT

Exercises what pika applications do: declarations, bindings, publishing with confirms and
mandatory returns, consuming with prefetch and acks, nack/reject, basic.get, transactions,
direct reply-to, and the errors a client must see (reply code and text). Exits non-zero with a
message on the first mismatch.
"""
import sys
import pika

PORT = int(sys.argv[1])
PARAMS = pika.ConnectionParameters(host="127.0.0.1", port=PORT, heartbeat=30)


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def expect_channel_error(fn, code, text):
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as e:
        check(e.reply_code == code and e.reply_text == text,
              f"channel error {code} {text!r} (got {e.reply_code} {e.reply_text!r})")
        return
    check(False, f"expected channel error {code}")


conn = pika.BlockingConnection(PARAMS)
props = conn._impl.server_properties
check(props.get("capabilities", {}).get("publisher_confirms") is True, "capabilities announced")

ch = conn.channel()
ch.confirm_delivery()
q = ch.queue_declare("", exclusive=True).method.queue
check(q.startswith("amq.gen-") and len(q) == 30, f"server-named queue {q}")
ch.exchange_declare("interop.topic", "topic", auto_delete=True)
ch.queue_bind(q, "interop.topic", "orders.*")
for i in range(100):
    ch.basic_publish("interop.topic", "orders.new", f"m{i}".encode(),
                     pika.BasicProperties(delivery_mode=2, headers={"i": i}), mandatory=True)
try:
    ch.basic_publish("interop.topic", "nobody.home", b"x", mandatory=True)
    check(False, "unroutable mandatory publish is returned")
except pika.exceptions.UnroutableError:
    check(True, "unroutable mandatory publish is returned")
check(ch.queue_declare(q, passive=True).method.message_count == 100, "100 messages queued")

# Consume with prefetch, ack every message, check order and headers.
ch.basic_qos(prefetch_count=10)
seen = []
for method, properties, body in ch.consume(q, inactivity_timeout=5):
    if method is None:
        break
    seen.append((body, properties.headers["i"]))
    ch.basic_ack(method.delivery_tag)
    if len(seen) == 100:
        break
ch.cancel()
check([b for b, _ in seen] == [f"m{i}".encode() for i in range(100)], "FIFO order")
check(all(h == i for i, (_, h) in enumerate(seen)), "headers intact")

# nack with requeue: the message comes back, redelivered, at the head.
ch.basic_publish("", q, b"first")
ch.basic_publish("", q, b"second")
m, _, body = ch.basic_get(q)
check(body == b"first" and not m.redelivered, "basic.get first")
ch.basic_nack(m.delivery_tag, requeue=True)
m, _, body = ch.basic_get(q)
check(body == b"first" and m.redelivered, "requeued message redelivered at its position")
ch.basic_reject(m.delivery_tag, requeue=False)
m, _, body = ch.basic_get(q, auto_ack=True)
check(body == b"second" and m.message_count == 0, "get-ok message_count")
check(ch.basic_get(q) == (None, None, None), "get-empty")

# Transactions.
tx = conn.channel()
tx.tx_select()
tx.basic_publish("", q, b"tx")
check(ch.queue_declare(q, passive=True).method.message_count == 0, "tx publish invisible")
tx.tx_commit()
check(ch.queue_declare(q, passive=True).method.message_count == 1, "tx publish committed")
tx.basic_publish("", q, b"rolled back")
tx.tx_rollback()
check(ch.queue_declare(q, passive=True).method.message_count == 1, "rollback drops publish")
ch.queue_purge(q)

# Direct reply-to round trip between two connections.
server_conn = pika.BlockingConnection(PARAMS)
srv = server_conn.channel()
srv.queue_declare("interop.rpc", auto_delete=True)
client = conn.channel()
replies = []
client.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append(b), auto_ack=True)
client.basic_publish("", "interop.rpc", b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
req = None
for _ in range(50):
    req = srv.basic_get("interop.rpc", auto_ack=True)
    if req[0] is not None:
        break
    server_conn.sleep(0.05)
check(req[0] is not None and req[1].reply_to.startswith("amq.rabbitmq.reply-to."), "reply_to rewritten")
srv.basic_publish("", req[1].reply_to, b"pong")
for _ in range(50):
    conn.process_data_events(time_limit=0.05)
    if replies:
        break
check(replies == [b"pong"], "direct reply-to reply arrives")
server_conn.close()

# Errors a client must see.
e1 = conn.channel()
expect_channel_error(lambda: e1.queue_declare("interop.missing", passive=True),
                     404, "NOT_FOUND - no queue 'interop.missing' in vhost '/'")
e2 = conn.channel()
expect_channel_error(lambda: e2.basic_ack(42) or e2.queue_declare("", exclusive=True),
                     406, "PRECONDITION_FAILED - unknown delivery tag 42")
e3 = conn.channel()
expect_channel_error(lambda: e3.exchange_declare("interop.topic", "direct"),
                     406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange "
                          "'interop.topic' in vhost '/': received 'direct' but current is 'topic'")
conn.close()

try:
    pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=PORT, credentials=pika.PlainCredentials("guest", "wrong")))
    check(False, "wrong password refused")
except pika.exceptions.ProbableAuthenticationError as e:
    check("ACCESS_REFUSED" in str(e), "wrong password refused with ACCESS_REFUSED")

print("pika interop: all checks passed")
