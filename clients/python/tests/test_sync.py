"""pg_outbox.subscribe_sync() (psycopg 3, blocking) against a real cluster."""
from __future__ import annotations

import json
import random
import threading
import time

import pytest

import pg_outbox
from conftest import deadline_loop
from test_subscribe import Producers, as_tuple, assert_exactly


def collect(sub, n, timeout=60):
    out = []
    end = time.monotonic() + timeout
    timer = threading.Timer(timeout, sub.stop)  # never hangs: stop() ends a blocked iteration
    timer.daemon = True
    timer.start()
    try:
        for ev in sub:
            out.append(ev)
            if len(out) >= n:
                sub.ack()
                break
    finally:
        timer.cancel()
    if len(out) < n:
        pytest.fail("got %d of %d events in %.0f s" % (len(out), n, timeout - max(0, end - time.monotonic())))
    return out


def test_replay_live_truncated_forged(db):
    db.publish(3)
    db.wait_published(3)
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], after=0) as sub:
        got = collect(sub, 3)
        db.sql("SELECT pg_notify('orders', %s)", (json.dumps({"id": 9, "pos": 4, "seq": 4, "payload": 1}),),
               user="mallory")
        db.publish(1, start=3, size=9000)
        db.publish(1, start=4)
        got += collect(sub, 2)
    assert_exactly(got, db.history())
    assert len(got[3].payload["pad"]) == 9000


def test_starts_from_now(db):
    db.publish(2)
    db.wait_published(2)
    sub = pg_outbox.subscribe_sync(db.url, ["orders"])  # a URI works too
    try:
        out = []

        def run():
            out.extend(collect(sub, 1, timeout=40))

        r = threading.Thread(target=run, daemon=True)
        r.start()
        for _ in deadline_loop(30, "the subscriber to be live"):
            if sub.state == "live":
                break
        db.publish(1, start=2)
        r.join(45)
    finally:
        sub.close()
    assert [e.payload["n"] for e in out] == [3]


def test_kills_restart_sigkill(db):
    total = 2000
    out = []
    sub = pg_outbox.subscribe_sync(db.conninfo, ["orders"], after=0, max_backoff=0.5)
    prod = Producers(db, total - 100).start()  # the last 100 come after the disturbances
    stop = threading.Event()

    def disturb():
        rnd = random.Random(3)
        steps = ["kill"] * 8 + ["sigkill", "restart", "sigkill"] + ["kill"] * 4
        for step in steps:
            if stop.wait(rnd.uniform(0.1, 0.3)):
                return
            if step == "kill":
                db.kill_subscribers()
            elif step == "sigkill":
                db.kill_worker()
                db.cluster.worker_pid(db.name)
            else:
                db.cluster.restart()
        prod.join()
        db.publish(100, start=total)

    d = threading.Thread(target=disturb, daemon=True)
    d.start()
    try:
        timer = threading.Timer(180, sub.stop)
        timer.daemon = True
        timer.start()
        for ev in sub:
            out.append(ev)
            if len(out) >= total:
                break
        timer.cancel()
    finally:
        stop.set()
        d.join(120)
        sub.close()
    prod.join()
    assert sub.reconnects >= 5
    assert_exactly(out, db.history())


def test_stop_from_another_thread_saves_position(edb, tmp_path):
    st = str(tmp_path / "sync.state")
    edb.publish(2)
    edb.wait_published(2)
    sub = pg_outbox.subscribe_sync(edb.conninfo, ["orders"], after=0, state_file=st)
    got = []
    for ev in sub:
        got.append(ev.pos)
        if len(got) == 2:
            threading.Timer(0.5, sub.stop).start()  # stops the blocked wait for a third event
    assert got == [1, 2]
    assert pg_outbox.read_state_file(st) == 2  # asking for the next one means 2 was processed


def test_channel_limit_is_the_servers(edb):
    """The client checks channel names before it talks to the server, with its own copy of the
    limit (it cannot read src/limits.hpp): the copy must be the server's, and a name the server
    refuses is refused by the client too, at the same byte count."""
    import psycopg
    from pg_outbox import _core
    (limit,), = edb.sql("SELECT outbox.max_channel_bytes()")
    assert _core.MAX_CHANNEL_BYTES == limit
    ok = "é" * (limit // 2) + "x" * (limit % 2)  # exactly the limit, in bytes, with 2-byte characters
    assert len(ok.encode()) == limit
    assert _core.check_channels([ok]) == [ok]
    edb.sql("SELECT outbox.publish(%s, NULL)", (ok,))
    for bad in (ok + "x", "x" * (limit + 1), ""):
        with pytest.raises(ValueError):
            _core.check_channels([bad])
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            edb.sql("SELECT outbox.publish(%s, NULL)", (bad,))
