# A Python subscriber with redis-py: subscribes to CHANNEL, prints READY
# once Redis confirmed it, then prints the hex of each of COUNT messages'
# bytes, as received.
#
# usage: redis_subscriber.py CHANNEL COUNT
import os
import sys

import redis

r = redis.from_url(os.environ["CACHE_URI"])
p = r.pubsub()
p.subscribe(sys.argv[1])
while True:
    m = p.get_message(timeout=60)
    if m and m["type"] == "subscribe":
        break
print("READY", flush=True)
count = int(sys.argv[2])
while count > 0:
    m = p.get_message(timeout=60)
    if m is None:
        continue
    if m["type"] == "message":
        print("MSG " + m["data"].hex(), flush=True)
        count -= 1
p.close()
print("DONE", flush=True)
