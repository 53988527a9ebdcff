# The Python publisher of Aspire's production patterns:
# redis.from_url(...).publish(channel, payload). It reads the URL from
# CACHE_URI (Aspire 13's redis://:password@host:port): the connection
# string ConnectionStrings__cache is StackExchange.Redis's
# "host:port,password=..." form, which redis.from_url does not parse.
#
# usage: redis_publisher.py CHANNEL PAYLOAD...
import os
import sys

import redis

r = redis.from_url(os.environ["CACHE_URI"])
for payload in sys.argv[2:]:
    n = r.publish(sys.argv[1], payload.encode("utf-8", "surrogateescape"))
    print("PUBLISHED %d" % n, flush=True)
