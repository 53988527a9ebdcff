# The Python producer of Aspire's production patterns: pika, a queue
# declared with queue_declare(queue) (non-durable, pika's default), and
# basic_publish to the default exchange. It reads the broker's URL from
# ConnectionStrings__messaging, as a service run by an AppHost does.
#
# usage: pika_producer.py QUEUE COUNT [TRACEPARENT]
# Message i has body {"id": i} and message id "py-i"; with TRACEPARENT,
# every message carries it in the traceparent header (pika does not
# propagate trace context by itself).
import json
import os
import sys

import pika

queue, count = sys.argv[1], int(sys.argv[2])
traceparent = sys.argv[3] if len(sys.argv) > 3 else None

conn = pika.BlockingConnection(pika.URLParameters(os.environ["ConnectionStrings__messaging"]))
channel = conn.channel()
channel.queue_declare(queue)
channel.confirm_delivery()
for i in range(count):
    headers = {"traceparent": traceparent} if traceparent else None
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps({"id": i}),
        properties=pika.BasicProperties(message_id="py-%d" % i, content_type="application/json", headers=headers),
    )
conn.close()
print("PUBLISHED %d" % count, flush=True)
