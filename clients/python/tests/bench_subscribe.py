"""Throughput of the Python consumer, catching up on a backlog (not a test; prints figures).

    python3 clients/python/tests/bench_subscribe.py [DSN] [EVENTS]

DSN: a libpq connection string to a database with pg_outbox (empty: PG* variables, e.g. the demo's).
It publishes EVENTS (default 20000) events on channel "bench_py", waits until they are published,
then reads them back with each variant and prints events per second.
"""
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import psycopg  # noqa: E402

import pg_outbox  # noqa: E402

dsn = sys.argv[1] if len(sys.argv) > 1 else ""
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
with psycopg.connect(dsn, autocommit=True) as c:
    start = c.execute("SELECT outbox.head()").fetchone()[0]
    c.execute("SELECT outbox.publish('bench_py', jsonb_build_object('n', g, 'pad', repeat('x', 100)))"
              " FROM generate_series(1, %s) g", (n,))
    end = time.monotonic() + 120
    while c.execute("SELECT count(*) FROM outbox.history WHERE channel = 'bench_py' AND pos > %s",
                    (start,)).fetchone()[0] < n:
        if time.monotonic() > end:
            sys.exit("the events were not published within 120 s")
        time.sleep(0.1)


async def aread(k, **kw):
    t0 = time.monotonic()
    got = 0
    async with pg_outbox.subscribe(dsn, ["bench_py"], after=start, **kw) as sub:
        async for _ in sub:
            got += 1
            if got == k:
                break
    return k / (time.monotonic() - t0)


def sread(k, **kw):
    t0 = time.monotonic()
    got = 0
    with pg_outbox.subscribe_sync(dsn, ["bench_py"], after=start, **kw) as sub:
        for _ in sub:
            got += 1
            if got == k:
                break
    return k / (time.monotonic() - t0)


tmp = tempfile.mkdtemp()
few = min(n, 1000)
rows = [
    ("asyncpg, no state file", asyncio.run(aread(n)), n),
    ("asyncpg, state file without fsync", asyncio.run(aread(n, state_file=tmp + "/a1", fsync=False)), n),
    ("asyncpg, state file fsynced per event", asyncio.run(aread(few, state_file=tmp + "/a2")), few),
    ("psycopg, no state file", sread(n), n),
    ("psycopg, state file without fsync", sread(n, state_file=tmp + "/s1", fsync=False), n),
    ("psycopg, state file fsynced per event", sread(few, state_file=tmp + "/s2"), few),
]
for name, rate, k in rows:
    print("%-40s %9.0f events/s (%d events)" % (name, rate, k))
