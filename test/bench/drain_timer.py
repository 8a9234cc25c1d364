#!/usr/bin/python3
"""Helpers of test/bench/storage_bench.sh (python3-asyncpg).

    drain_timer.py time DSN START_SQL HEAD_SQL TARGET TIMEOUT_S
        runs START_SQL (e.g. SELECT outbox.resume()), then polls HEAD_SQL every 2 ms on the same
        connection until it returns >= TARGET; prints "seconds=S head=H". Exit 1 on timeout.
    drain_timer.py hold DSN plain|replay|logreplay MAX_S
        opens a REPEATABLE READ transaction, takes its snapshot (and with "replay" calls
        outbox.replay() in it, with "logreplay" the log's outbox._log_replay()), prints "ready"
        and keeps it open until killed (MAX_S at most).
"""
import asyncio
import sys
import time

import asyncpg


async def time_drain(dsn, start_sql, head_sql, target, timeout):
    conn = await asyncpg.connect("postgresql://" + dsn)
    t0 = time.monotonic()
    await conn.execute(start_sql)
    head = await conn.fetchval(head_sql)
    while head < target:
        if time.monotonic() - t0 > timeout:
            print(f"timeout head={head} target={target}", flush=True)
            sys.exit(1)
        await asyncio.sleep(0.002)
        head = await conn.fetchval(head_sql)
    print(f"seconds={time.monotonic() - t0:.4f} head={head}", flush=True)
    await conn.close()


async def hold(dsn, mode, max_s):
    conn = await asyncpg.connect("postgresql://" + dsn)
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await conn.fetchval("SELECT count(*) FROM pg_class")
    if mode == "replay":
        await conn.fetchval("SELECT count(*) FROM outbox.replay(0, NULL, 10)")
    elif mode == "logreplay":
        await conn.fetchval("SELECT count(*) FROM outbox._log_replay(0, 10)")
    print("ready", flush=True)
    await asyncio.sleep(max_s)
    await conn.close()


if sys.argv[1] == "time":
    asyncio.run(time_drain(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])))
elif sys.argv[1] == "hold":
    asyncio.run(hold(sys.argv[2], sys.argv[3], float(sys.argv[4])))
else:
    sys.exit("usage: drain_timer.py time|hold ...")
