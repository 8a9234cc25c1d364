"""Pooled modes (no LISTEN: for PgBouncer in transaction mode): outbox.wait() with a local state
file, and named consumers (outbox.next/ack). Skipped only when the server lacks the functions."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pg_outbox
from test_subscribe import Producers, assert_exactly, collect as acollect, until
from test_sync import collect as scollect

FUNCS = {"wait": "outbox.wait(bigint,text[],interval,integer)", "consumer": "outbox.next(text,integer,interval)"}


def need(db, what):
    if not db.sql("SELECT to_regprocedure(%s) IS NOT NULL", (FUNCS[what],))[0][0]:
        reason = "the server has no %s (pg_outbox without the consumers work)" % FUNCS[what]
        print("SKIP: " + reason)
        pytest.skip(reason)


def run(coro, timeout=240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def disturbed_consume(db, sub_iter_factory, total, sync, already=0):
    """Producers publish `total` events while the subscriber's backend is killed again and again;
    returns what the subscriber delivered and how often it reconnected."""
    prod = Producers(db, total - 50).start()
    stop = threading.Event()

    def disturb():
        kills = 0
        while not stop.wait(0.15) and kills < 12:
            kills += db.kill_subscribers()
        prod.join()
        db.publish(50, start=total)

    d = threading.Thread(target=disturb, daemon=True)
    d.start()
    try:
        if sync:
            sub = sub_iter_factory()
            try:
                out = scollect(sub, total + already, timeout=180)
            finally:
                sub.close()
        else:
            async def go():
                async with sub_iter_factory() as sub:
                    return await acollect(sub, total + already, timeout=180), sub

            out, sub = run(go())
    finally:
        stop.set()
        d.join(120)
    return out, sub


@pytest.mark.parametrize("sync", [False, True], ids=["asyncpg", "psycopg"])
def test_wait_mode(edb, tmp_path, sync):
    need(edb, "wait")
    st = str(tmp_path / "w.state")
    api = pg_outbox.subscribe_sync if sync else pg_outbox.subscribe
    dsn = edb.conninfo if sync else edb.url
    out, sub = disturbed_consume(edb, lambda: api(dsn, ["orders"], pooled=True, after=0, state_file=st,
                                                  wait_timeout=2, max_backoff=0.3), 1500, sync)
    assert sub.reconnects >= 3
    assert_exactly(out, edb.history())
    assert pg_outbox.read_state_file(st) == out[-1].pos
    assert not edb.sql("SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND datname = %s", (edb.name,))


@pytest.mark.parametrize("sync", [False, True], ids=["asyncpg", "psycopg"])
def test_named_consumer(edb, sync):
    need(edb, "consumer")
    edb.sql("GRANT outbox_consumer TO reader") if edb.sql("SELECT 1 FROM pg_roles WHERE rolname = 'outbox_consumer'") \
        else None
    api = pg_outbox.subscribe_sync if sync else pg_outbox.subscribe
    dsn = edb.conninfo if sync else edb.url
    edb.publish(10)
    edb.wait_published(10)
    make = lambda: api(dsn, ["orders"], consumer="billing", after=0, wait_timeout=2, max_backoff=0.3)  # noqa: E731
    out, sub = disturbed_consume(edb, make, 1000, sync, already=10)
    assert sub.reconnects >= 3
    assert_exactly(out, edb.history())
    acked = edb.sql("SELECT acked_pos, channels FROM outbox.consumers WHERE name = 'billing'")[0]
    assert acked[0] == out[-1].pos and acked[1] == ["orders"]
    # a new subscription continues after the acknowledged position; `after` no longer matters
    edb.publish(2, start=2000)
    if sync:
        with make() as s2:
            more = scollect(s2, 2)
    else:
        async def go():
            async with api(dsn, ["orders"], consumer="billing", after=0) as s2:
                return await acollect(s2, 2)
        more = run(go())
    assert [e.pos for e in more] == [out[-1].pos + 1, out[-1].pos + 2]


def test_named_consumer_dropped_is_an_error(edb):
    need(edb, "consumer")
    edb.publish(1)
    edb.wait_published(1)

    async def go():
        async with pg_outbox.subscribe(edb.url, ["orders"], consumer="gone", after=0, wait_timeout=1) as sub:
            await acollect(sub, 1)
            edb.sql("SELECT outbox.drop_consumer('gone')")
            edb.publish(1, start=1)
            await acollect(sub, 1)

    with pytest.raises(pg_outbox.ResyncRequired, match="does not exist"):
        run(go(), 60)
    # never silently re-created from "now"
    assert not edb.sql("SELECT 1 FROM outbox.consumers WHERE name = 'gone'")


def test_stop_ends_a_pending_wait(edb):
    need(edb, "wait")

    async def go():
        sub = pg_outbox.subscribe(edb.url, ["orders"], pooled=True, wait_timeout=30)
        asyncio.get_running_loop().call_later(1.0, sub.stop)
        t0 = time.monotonic()
        async for _ in sub:
            pass
        return time.monotonic() - t0

    assert run(go(), 20) < 10


def test_stop_ends_a_pending_wait_sync(edb):
    need(edb, "wait")
    sub = pg_outbox.subscribe_sync(edb.conninfo, ["orders"], pooled=True, wait_timeout=30)
    threading.Timer(1.0, sub.stop).start()  # from another thread: cancels the running wait()
    t0 = time.monotonic()
    assert list(sub) == []
    assert time.monotonic() - t0 < 10
    sub.stop()  # after the end: harmless


def test_stop_before_the_first_event(edb):
    async def go():
        sub = pg_outbox.subscribe(edb.url, ["orders"], after=0)
        sub.stop()
        return [e async for e in sub]

    edb.publish(1)
    assert run(go(), 30) == []


@pytest.mark.parametrize("sync", [False, True], ids=["asyncpg", "psycopg"])
def test_an_error_retrying_cannot_fix_is_raised(edb, sync):
    """wait() refuses REPEATABLE READ (0A000): the client says so instead of reconnecting forever."""
    need(edb, "wait")
    if not edb.sql("SELECT 1 FROM pg_roles WHERE rolname = 'rr_reader'"):
        edb.sql("CREATE ROLE rr_reader LOGIN IN ROLE outbox_reader")
    edb.sql("ALTER ROLE rr_reader IN DATABASE %s SET default_transaction_isolation = 'repeatable read'" % edb.name)
    t0 = time.monotonic()
    with pytest.raises(pg_outbox.OutboxError, match="REPEATABLE READ"):
        if sync:
            scollect(pg_outbox.subscribe_sync(edb.cluster.conninfo(edb.name, "rr_reader"), ["orders"], pooled=True,
                                              after=0), 1, timeout=30)
        else:
            async def go():
                async with pg_outbox.subscribe(edb.cluster.url(edb.name, "rr_reader"), ["orders"], pooled=True,
                                               after=0) as sub:
                    await acollect(sub, 1, timeout=30)
            run(go(), 40)
    assert time.monotonic() - t0 < 20
