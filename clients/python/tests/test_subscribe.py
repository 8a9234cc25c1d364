"""pg_outbox.subscribe() (asyncpg) against a real cluster: every event once, in order, through
backend kills, a server restart, drain worker SIGKILLs; forged notifications ignored; truncated
envelopes fetched whole; errors that say what to do."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("asyncpg")
import pg_outbox  # noqa: E402
from conftest import CLIENT, deadline_loop  # noqa: E402



def as_tuple(ev):
    return (ev.pos, ev.seq, ev.id, ev.channel, ev.key, ev.type, ev.payload)


async def collect(sub, n, timeout=60):
    """The next n events of sub (fails after timeout seconds)."""
    out = []

    async def run():
        async for ev in sub:
            out.append(ev)
            if len(out) >= n:
                await sub.ack()
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        pytest.fail("got %d of %d events in %d s" % (len(out), n, timeout))
    return out


async def until(pred, seconds, what):
    """Polls pred() (run in a thread: it may block) until true; fails after `seconds`."""
    end = time.monotonic() + seconds
    loop = asyncio.get_running_loop()
    while not await loop.run_in_executor(None, pred):
        if time.monotonic() > end:
            pytest.fail("timed out after %.0f s waiting for %s" % (seconds, what))
        await asyncio.sleep(0.05)


def assert_exactly(events, history):
    pos = [e.pos for e in events]
    assert len(pos) == len(set(pos)), "duplicates: %s" % sorted(p for p in set(pos) if pos.count(p) > 1)[:10]
    assert pos == sorted(pos), "out of order"
    got = [as_tuple(e) for e in events]
    missing = sorted(set(h[0] for h in history) - set(pos))
    assert not missing, "lost %d events, first %s" % (len(missing), missing[:10])
    assert got == history


@pytest.mark.asyncio
async def test_replay_then_live(db):
    db.publish(5)
    db.wait_published(5)
    async with pg_outbox.subscribe(db.url, ["orders"], after=0) as sub:
        first = await collect(sub, 5)
        db.publish(5, start=5)
        rest = await collect(sub, 5)
        stats = dict(sub.stats)
    events = first + rest
    assert_exactly(events, db.history())
    assert stats["replayed"] >= 5  # the backlog
    if db.trust == "envelopes":
        assert stats["envelopes"] >= 1 and stats["doorbells"] == 0, stats  # live ones straight from NOTIFY
    else:
        assert stats["envelopes"] == 0 and stats["doorbells"] >= 1, stats
    assert events[0].key == "k1" and events[0].type == "t" and events[0].payload == {"n": 1}
    assert [e.seq for e in events] == list(range(1, 11))


@pytest.mark.asyncio
async def test_starts_from_now_and_filters_channels(db):
    db.publish(3)
    db.publish(2, channel="other")
    db.wait_published(5)
    sub = pg_outbox.subscribe(db.url, ["orders", "orders"])  # duplicates are folded
    try:
        task = asyncio.ensure_future(collect(sub, 2))
        await until(lambda: sub.state == "live", 30, "the subscriber to be live")
        db.publish(1, channel="other", start=2)
        db.publish(2, start=3)
        events = await task
    finally:
        await sub.aclose()
    assert [(e.channel, e.payload["n"]) for e in events] == [("orders", 4), ("orders", 5)]
    assert [e.seq for e in events] == [4, 5]


@pytest.mark.asyncio
async def test_truncated_envelope_fetched_whole(db):
    async with pg_outbox.subscribe(db.url, ["orders"], after=0) as sub:
        db.publish(1, size=9000)
        db.publish(1, start=1)
        db.publish(1, start=2, size=20000)
        events = await collect(sub, 3)
        stats = dict(sub.stats)
    assert_exactly(events, db.history())
    assert stats["replayed"] >= 2  # the truncated ones came from replay
    assert len(events[0].payload["pad"]) == 9000 and len(events[2].payload["pad"]) == 20000


@pytest.mark.asyncio
async def test_forged_notifications_ignored(db):
    """mallory (no pg_outbox role at all) NOTIFYs envelopes that would be next in line."""
    db.publish(2)
    db.wait_published(2)
    async with pg_outbox.subscribe(db.url, ["orders"], after=0) as sub:
        got = await collect(sub, 2)
        forged = [{"id": 999, "pos": 3, "seq": 3, "key": "k3", "type": "t", "payload": {"forged": True}},
                  {"id": 998, "pos": 4, "seq": 1, "payload": "x"}, "not json", {"pos": "3"}]
        for f in forged:
            text = f if isinstance(f, str) else json.dumps(f)
            db.sql("SELECT pg_notify('orders', %s)", (text,), user="mallory")
        await asyncio.sleep(0.5)  # let them arrive (and be ignored)
        db.publish(2, start=2)
        got += await collect(sub, 2)
        assert sub.stats["doorbells"] >= len(forged)  # each forged one only rang the bell
    assert_exactly(got, db.history())
    assert all(e.payload != {"forged": True} and e.id not in (998, 999) for e in got)


class Producers:
    """Threads that publish `total` events in transactions of 1..5 events."""

    def __init__(self, db, total, threads=2, channels=("orders",), pace=0.004):
        self.db, self.total, self.done, self.pace = db, total, 0, pace
        self.lock = threading.Lock()
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(i, channels), daemon=True) for i in range(threads)]

    def _take(self, k):
        with self.lock:
            k = min(k, self.total - self.done)
            self.done += k
            return k

    def _run(self, i, channels):
        import psycopg
        rnd = random.Random(i)
        conn = None
        end = time.monotonic() + 120
        n_tx = 0
        while time.monotonic() < end:
            n_tx += 1
            k = self._take(rnd.randint(1, 5))
            if k == 0:
                break
            # Exactly once: a COMMIT can succeed while the connection dies (a SIGKILLed worker
            # makes the postmaster restart every backend), so before a retry look for the
            # transaction's token among the events.
            token = "%d-%d" % (i, n_tx)
            for _ in range(400):
                try:
                    if conn is None or conn.closed:
                        conn = self.db.cluster.connect(self.db.name)
                        if conn.execute("SELECT EXISTS (SELECT FROM outbox.history WHERE payload->>'tx' = %s)"
                                        " OR EXISTS (SELECT FROM outbox.pending WHERE payload->>'tx' = %s)",
                                        (token, token)).fetchone()[0]:
                            break
                    with conn.transaction():
                        for _ in range(k):
                            conn.execute("SELECT outbox.publish(%s, jsonb_build_object('t', %s::int, 'tx', %s::text),"
                                         " key => 'p')", (rnd.choice(channels), i, token))
                    break
                except psycopg.Error:
                    conn = None
                    time.sleep(0.05)
            else:
                self.errors.append("could not publish")
            time.sleep(rnd.random() * self.pace)
        if conn is not None:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(150)
        assert not self.errors


async def consume_until(sub, db, total, out, disturb=None, timeout=180):
    """Collects events into out until `total` have been published and delivered."""

    async def run():
        async for ev in sub:
            out.append(ev)
            if len(out) >= total:
                return

    task = asyncio.ensure_future(run())
    try:
        if disturb:
            await disturb(task)
        await asyncio.wait_for(task, timeout)
    except asyncio.TimeoutError:
        pytest.fail("got %d of %d events in %d s" % (len(out), total, timeout))
    finally:
        task.cancel()


@pytest.mark.asyncio
async def test_backend_kills(db):
    total = 3000
    out = []
    sub = pg_outbox.subscribe(db.url, ["orders"], after=0, max_backoff=0.5)
    prod = Producers(db, total).start()
    kills = 0

    async def disturb(task):
        nonlocal kills
        end = time.monotonic() + 90
        while not task.done() and time.monotonic() < end and (len(out) < total * 0.9 or kills < 5):
            await asyncio.sleep(random.uniform(0.05, 0.2))
            kills += await asyncio.get_running_loop().run_in_executor(None, db.kill_subscribers)

    try:
        await consume_until(sub, db, total, out, disturb)
    finally:
        await sub.aclose()
    prod.join()
    assert kills >= 5 and sub.reconnects >= 5
    assert_exactly(out, db.history())


@pytest.mark.asyncio
async def test_server_restart_and_worker_sigkill(db):
    total = 2000
    out = []
    sub = pg_outbox.subscribe(db.url, ["orders"], after=0, max_backoff=0.5)
    prod = Producers(db, total).start()

    async def disturb(task):
        loop = asyncio.get_running_loop()
        for step in ("sigkill", "restart", "sigkill"):
            for _ in range(200):
                if len(out) > 0 and not task.done():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            if step == "sigkill":
                await loop.run_in_executor(None, db.kill_worker)
            else:
                await loop.run_in_executor(None, db.cluster.restart)
            await loop.run_in_executor(None, db.cluster.worker_pid, db.name)

    try:
        await consume_until(sub, db, total, out, disturb)
    finally:
        await sub.aclose()
    prod.join()
    assert sub.reconnects >= 3
    assert_exactly(out, db.history())


@pytest.mark.asyncio
async def test_two_channels_interleaved_with_kills(db):
    total = 1500
    out = []
    sub = pg_outbox.subscribe(db.url, ["a", "b"], after=0, max_backoff=0.3)
    prod = Producers(db, total, channels=("a", "b", "c")).start()

    async def disturb(task):
        while not task.done() and prod.done < total:
            await asyncio.sleep(0.15)
            await asyncio.get_running_loop().run_in_executor(None, db.kill_subscribers)

    prod.join()
    want = db.history(["a", "b"])
    db.wait_published(total)
    want = db.history(["a", "b"])
    try:
        await consume_until(sub, db, len(want), out, disturb)
    finally:
        await sub.aclose()
    assert_exactly(out, want)


@pytest.mark.asyncio
async def test_resync_and_errors(cluster, edb):
    edb.publish(5)
    edb.wait_published(5)
    edb.sql("UPDATE outbox.state SET purged_pos = 3; DELETE FROM outbox.history_frozen WHERE pos <= 3")
    with pytest.raises(pg_outbox.ResyncRequired, match="events up to position 3 have been removed") as ei:
        await collect(pg_outbox.subscribe(edb.url, ["orders"], after=1), 1)
    assert ei.value.sqlstate == "OB001"
    with pytest.raises(pg_outbox.ResyncRequired) as ei:
        await collect(pg_outbox.subscribe(edb.url, ["orders"], after=99), 1)
    assert ei.value.sqlstate == "OB002"
    cluster.sql("CREATE DATABASE no_ext") if not cluster.sql("SELECT 1 FROM pg_database WHERE datname = 'no_ext'") else None
    with pytest.raises(pg_outbox.OutboxUnavailable, match="CREATE EXTENSION"):
        await collect(pg_outbox.subscribe(cluster.url("no_ext", "reader"), ["orders"]), 1)
    with pytest.raises(pg_outbox.OutboxUnavailable, match="permission denied"):
        await collect(pg_outbox.subscribe(cluster.url(edb.name, "mallory"), ["orders"], after=0), 1)
    with pytest.raises(OSError):  # the first connection fails: an error, not an endless retry
        await collect(pg_outbox.subscribe("postgresql://reader@/x?host=/nonexistent&port=1", ["orders"]), 1)
    for bad in ([""], ["x" * 64], []):
        with pytest.raises(ValueError):
            pg_outbox.subscribe(edb.url, bad)
    with pytest.raises(ValueError):
        pg_outbox.subscribe(edb.url, ["a"], after=-1)
    with pytest.raises(ValueError):
        pg_outbox.subscribe(edb.url, ["a"], consumer="c", state_file="/tmp/x")


@pytest.mark.asyncio
async def test_state_file_errors(edb, tmp_path):
    with pytest.raises(pg_outbox.StateFileError, match="does not exist"):
        await collect(pg_outbox.subscribe(edb.url, ["orders"], state_file=str(tmp_path / "nodir" / "s")), 1)
    bad = tmp_path / "corrupt.state"
    bad.write_text("garbage\n")
    with pytest.raises(pg_outbox.StateFileError, match="corrupt"):
        await collect(pg_outbox.subscribe(edb.url, ["orders"], state_file=str(bad)), 1)
    st = str(tmp_path / "s.state")
    edb.publish(2)
    async with pg_outbox.subscribe(edb.url, ["orders"], after=0, state_file=st) as one:
        await collect(one, 1, timeout=30)
        with pytest.raises(pg_outbox.StateFileError, match="another consumer"):
            await collect(pg_outbox.subscribe(edb.url, ["orders"], state_file=st), 1)
    # the lock is released on close; the first event was acked by collect()
    assert pg_outbox.read_state_file(st) == 1
    async with pg_outbox.subscribe(edb.url, ["orders"], after=0, state_file=st) as two:
        ev = await collect(two, 1, timeout=30)
    assert ev[0].pos == 2


@pytest.mark.asyncio
async def test_state_saved_only_after_processing(edb, tmp_path):
    st = str(tmp_path / "p.state")
    edb.publish(3)
    edb.wait_published(3)
    sub = pg_outbox.subscribe(edb.url, ["orders"], after=0, state_file=st, fsync=False)
    try:
        e1 = await asyncio.wait_for(sub.__anext__(), 30)
        assert e1.pos == 1 and pg_outbox.read_state_file(st) is None  # handed over, not processed yet
        e2 = await asyncio.wait_for(sub.__anext__(), 30)
        assert e2.pos == 2 and pg_outbox.read_state_file(st) == 1  # asking for e2 means e1 is done
    finally:
        await sub.aclose()
    assert pg_outbox.read_state_file(st) == 1  # e2 was never acknowledged: it comes again
    async with pg_outbox.subscribe(edb.url, ["orders"], state_file=st) as sub2:
        again = await collect(sub2, 2)
    assert [e.pos for e in again] == [2, 3]


CHILD = r"""
import asyncio, faulthandler, sys, signal
faulthandler.register(signal.SIGUSR1)
sys.path.insert(0, sys.argv[1])
import pg_outbox
async def main():
    sub = pg_outbox.subscribe(sys.argv[2], ["orders"], after=0, state_file=sys.argv[3], max_backoff=0.5,
                              fsync=sys.argv[4] == "fsync")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, sub.stop)
    async with sub:
        async for ev in sub:
            sys.stdout.write("%d\n" % ev.pos)  # "processing"
            sys.stdout.flush()
asyncio.run(main())
"""


@pytest.mark.parametrize("total,fsync", [(2000, "nofsync"), (300, "fsync")])
def test_subscriber_process_killed_and_restarted(edb, tmp_path, total, fsync):
    """The subscriber process is SIGKILLed (and once stopped with SIGTERM) and restarted with its
    state file, while producers publish: nothing is lost; a SIGKILL re-delivers at most the event
    being processed, a SIGTERM nothing."""
    st = str(tmp_path / "child.state")
    prod = Producers(edb, total, pace=0.03 if fsync == "nofsync" else 0.2).start()
    runs = []
    rnd = random.Random(7)
    stops = ["kill", "kill", "term", "kill", "term", "kill"]
    for how in stops + ["end"]:
        p = subprocess.Popen([sys.executable, "-c", CHILD, CLIENT, edb.url, st, fsync], stdout=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(int(x) for x in p.stdout), daemon=True)
        reader.start()
        if how == "end":
            prod.join()
            edb.wait_published(total)
            for _ in deadline_loop(120, "the last subscriber to print every event"):
                if lines and lines[-1] >= total:
                    break
            p.terminate()
        else:
            for _ in deadline_loop(60, "the subscriber to print"):
                if len(lines) > 0:
                    break
            time.sleep(rnd.uniform(0.05, 0.4))
            p.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGUSR1)
            time.sleep(1)
            p.kill()
            p.wait(10)
            pytest.fail("the subscriber did not stop on SIG%s" % ("KILL" if how == "kill" else "TERM"))
        reader.join(30)
        runs.append((how, lines))
    seen = []
    redelivered = 0
    for i, (how, lines) in enumerate(runs):
        if i > 0 and lines:
            prev_how, prev = runs[i - 1]
            if prev and lines[0] == prev[-1]:
                assert prev_how == "kill", "a SIGTERM stop acknowledged its last event; it came again"
                redelivered += 1
                lines = lines[1:]
            assert not lines or not seen or lines[0] == seen[-1] + 1, "run %d started at %s after %s" % (
                i, lines[0], seen[-1])
        assert lines == sorted(set(lines)) and len(lines) == len(set(lines)), "a run delivered twice"
        seen.extend(lines)
    assert seen == list(range(1, total + 1))
    assert redelivered <= stops.count("kill")


@pytest.mark.asyncio
async def test_aclose_from_another_task_ends_a_pending_request(edb):
    sub = pg_outbox.subscribe(edb.url, ["orders"], after=0)
    got = []

    async def consume():
        async for ev in sub:
            got.append(ev)

    task = asyncio.ensure_future(consume())
    edb.publish(1)
    await until(lambda: len(got) == 1, 30, "the first event")
    await sub.aclose()  # while consume() waits for a second event
    await asyncio.wait_for(task, 10)  # ends; no reconnect loop left behind
    assert sub.state == "closed"
    await until(lambda: not edb.subscriber_pids(), 30, "the subscriber's backend to go")
