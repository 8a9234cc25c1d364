#!/usr/bin/python3
"""A PgQ consumer for test/bench/drain_bench.sh (python3-asyncpg): consumes N events of queue
'bench' as consumer 'bench' — pgq.next_batch, pgq.get_batch_events, pgq.finish_batch, commit —
and prints events/s. pgqd (and the producer's pgq.ticker() calls) cut the batches.

    pgq_consumer.py DSN N
"""
import asyncio
import sys
import time

import asyncpg


async def main():
    dsn, want = sys.argv[1], int(sys.argv[2])
    conn = await asyncpg.connect("postgresql://" + dsn)
    done = 0
    batches = 0
    t0 = time.monotonic()
    while done < want:
        async with conn.transaction():
            batch_id = await conn.fetchval("SELECT pgq.next_batch('bench', 'bench')")
            if batch_id is None:
                await asyncio.sleep(0.01)
                continue
            rows = await conn.fetch("SELECT ev_id, ev_type, ev_data FROM pgq.get_batch_events($1)", batch_id)
            done += len(rows)
            batches += 1
            await conn.fetchval("SELECT pgq.finish_batch($1)", batch_id)
    s = time.monotonic() - t0
    print(f"consumed={done} batches={batches} seconds={s:.4f} per_s={done / s:.0f}", flush=True)
    await conn.close()


asyncio.run(main())
