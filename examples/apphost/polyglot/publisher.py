"""The demo's Python publisher of Redis events: publishes plain strings on
the "events" channel with redis-py, as a Python service of an Aspire
application does.

Environment: CACHE_URI (redis://:password@host:port, what Aspire 13 injects
for .WithReference(cache)). ConnectionStrings__cache is in
StackExchange.Redis's form (host:port,password=...), which redis.from_url
does not read.

    python3 publisher.py SUBSCRIBERS COUNT PREFIX

waits (up to a minute) until SUBSCRIBERS clients subscribe to "events",
publishes COUNT events "user.created:PREFIX-i", and fails if one reached
fewer subscribers. Redis Pub/Sub has no queue: an event published before a
subscriber is subscribed is not seen by it, hence the wait.
"""

import os
import sys
import time

import redis


def main():
    subscribers, count, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    r = redis.from_url(os.environ["CACHE_URI"])
    deadline = time.monotonic() + 60
    while r.pubsub_numsub("events")[0][1] < subscribers:
        if time.monotonic() > deadline:
            sys.exit(f"fewer than {subscribers} subscribers to events after a minute")
        time.sleep(0.1)
    for i in range(count):
        n = r.publish("events", f"user.created:{prefix}-{i}")
        if n < subscribers:
            sys.exit(f"event {i} reached {n} subscribers, want {subscribers}")
    print(f"published {count} events, each to {subscribers} subscribers")


if __name__ == "__main__":
    main()
