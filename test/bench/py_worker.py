#!/usr/bin/python3
"""The design document's external outbox worker, for comparison (test/bench/drain_bench.sh).

Python, python3-asyncpg + python3-sqlalchemy (Core, asyncio) from Debian, on its own plain
table bench_py.outbox. It LISTENs on 'outbox' (producers NOTIFY it from a trigger), and for
each wake-up drains until empty: in one transaction
    SELECT ... WHERE published_at IS NULL ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED,
    one pg_notify per event (JSON envelope built in Python),
    UPDATE ... SET published_at = now() for the batch, COMMIT.

    py_worker.py DSN backlog N   drain until N events are published; prints events/s
    py_worker.py DSN serve       run until SIGTERM (for the latency measurement)
"""
import asyncio
import json
import signal
import sys
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

TAKE = text("SELECT id, channel, key, type, payload::text AS payload FROM bench_py.outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED")
NOTIFY = text("SELECT pg_notify(:channel, :envelope)")
MARK = text("UPDATE bench_py.outbox SET published_at = now() WHERE id = ANY(:ids)")


async def drain_once(engine):
    async with engine.begin() as conn:
        rows = (await conn.execute(TAKE)).all()
        for r in rows:
            env = {"id": r.id}
            if r.key is not None:
                env["key"] = r.key
            if r.type is not None:
                env["type"] = r.type
            # the payload is JSON text already: splice it in rather than parse and re-dump it
            envelope = json.dumps(env)[:-1] + ', "payload": ' + (r.payload or "null") + "}"
            await conn.execute(NOTIFY, {"channel": r.channel, "envelope": envelope})
        if rows:
            await conn.execute(MARK, {"ids": [r.id for r in rows]})
        return len(rows)


async def main():
    dsn, mode = sys.argv[1], sys.argv[2]
    engine = create_async_engine("postgresql+asyncpg://" + dsn, pool_size=2)
    wake = asyncio.Event()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with engine.connect() as lconn:  # the LISTEN connection, through SQLAlchemy's pool
        raw = await lconn.get_raw_connection()
        await raw.driver_connection.add_listener("outbox", lambda *a: wake.set())
        if mode == "backlog":
            want = int(sys.argv[3])
            print("ready", flush=True)
            t0 = time.monotonic()
            done = 0
            while done < want:
                n = await drain_once(engine)
                done += n
                if n == 0:
                    await asyncio.sleep(0.001)
            s = time.monotonic() - t0
            print(f"published={done} seconds={s:.4f} per_s={done / s:.0f}", flush=True)
        else:
            print("ready", flush=True)
            while not stop.is_set():
                while await drain_once(engine) > 0:
                    pass
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait([waiter, stopper], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
    await engine.dispose()


asyncio.run(main())
