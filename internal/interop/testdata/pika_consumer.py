# A Python consumer with pika: declares QUEUE as pika does by default
# (non-durable), prints READY, then consumes COUNT messages, acknowledging
# each, and prints one JSON line per message: its body, message id and
# traceparent header (what our publisher puts there).
#
# usage: pika_consumer.py QUEUE COUNT
import json
import os
import sys

import pika

queue, count = sys.argv[1], int(sys.argv[2])

conn = pika.BlockingConnection(pika.URLParameters(os.environ["ConnectionStrings__messaging"]))
channel = conn.channel()
channel.queue_declare(queue)
channel.basic_qos(prefetch_count=1)
print("READY", flush=True)
received = 0
for method, properties, body in channel.consume(queue, inactivity_timeout=None):
    headers = properties.headers or {}
    tp = headers.get("traceparent")
    if isinstance(tp, bytes):
        tp = tp.decode()
    print("MSG " + json.dumps({"body": body.decode(), "message_id": properties.message_id, "traceparent": tp}), flush=True)
    channel.basic_ack(method.delivery_tag)
    received += 1
    if received == count:
        break
channel.cancel()
conn.close()
print("DONE", flush=True)
