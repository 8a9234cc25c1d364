"""Epochs, the client side (issue 13), against a real cluster. A failover is simulated in the
database itself, as the drain would record it: a new epoch in outbox.epochs (and outbox.state)
that begins after the consumer's position (preserved: no error, the new epoch is adopted) or at
or before it (reissued: the server raises OB003 -> ResyncRequired naming the first reissued
position). A changed outbox.identity() stands for a re-created extension. The real failovers are
in test/t/131_epochs_clients.pl."""
from __future__ import annotations

import pytest

import pg_outbox
from test_subscribe import collect as acollect
from test_sync import collect


def new_epoch(db, first_pos):
    """Begin a new epoch at first_pos (the drain's outbox._epoch_begin() records no more than this)."""
    e = db.sql("SELECT outbox.epoch() + 1")[0][0]
    db.sql("INSERT INTO outbox.epochs (epoch, first_pos, reason) VALUES (%s, %s, 'test: a simulated failover')",
           (e, first_pos))
    db.sql("UPDATE outbox.state SET epoch = %s", (e,))
    return e


def test_sync_epoch_change_preserved_is_adopted(db, tmp_path):
    st = str(tmp_path / "s.state")
    db.publish(3)
    db.wait_published(3)
    identity = db.sql("SELECT outbox.identity()")[0][0]
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], after=0, state_file=st) as sub:
        got = collect(sub, 3)
        assert [e.epoch for e in got] == [1, 1, 1]
        e2 = new_epoch(db, 4)  # while it is live: the envelopes of epoch 2 are no error
        db.publish(2, start=3)
        got += collect(sub, 2)
    assert [(e.pos, e.epoch) for e in got] == [(1, 1), (2, 1), (3, 1), (4, e2), (5, e2)]
    assert pg_outbox.read_state(st) == pg_outbox.State(5, e2, identity)
    e3 = new_epoch(db, 6)  # and from the state file
    db.publish(1, start=5)
    db.wait_published(6)
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], state_file=st) as sub:
        got = collect(sub, 1)
    assert [(e.pos, e.epoch) for e in got] == [(6, e3)]
    assert pg_outbox.read_state(st) == pg_outbox.State(6, e3, identity)


def test_sync_diverged_from_state_file(db, tmp_path):
    st = str(tmp_path / "s.state")
    db.publish(5)
    db.wait_published(5)
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], after=0, state_file=st) as sub:
        collect(sub, 5)
    before = open(st).read()
    e2 = new_epoch(db, 4)  # positions 4 and 5 "were handed out again"
    for kw in ({}, {"pooled": True}):
        with pytest.raises(pg_outbox.ResyncRequired) as ei:
            with pg_outbox.subscribe_sync(db.conninfo, ["orders"], state_file=st, **kw) as sub:
                collect(sub, 1, timeout=20)
        e = ei.value
        assert (e.sqlstate, e.position, e.epoch, e.first_reissued, e.diverged) == ("OB003", 5, 1, 4, True), kw
        assert "positions from 4 on were handed out again in epoch %d" % e2 in str(e)
        assert open(st).read() == before  # untouched: the next start says the same


def test_sync_identity_changed(db, tmp_path):
    st = str(tmp_path / "s.state")
    db.publish(2)
    db.wait_published(2)
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], after=0, state_file=st) as sub:
        collect(sub, 2)
    old = pg_outbox.read_state(st).identity
    db.sql("UPDATE outbox.state SET identity = 'another-outbox'")
    with pytest.raises(pg_outbox.ResyncRequired, match="identity changed from %s to another-outbox" % old) as ei:
        with pg_outbox.subscribe_sync(db.conninfo, ["orders"], state_file=st) as sub:
            collect(sub, 1, timeout=20)
    assert ei.value.diverged and ei.value.sqlstate is None


def test_sync_named_consumer_across_epochs(db):
    db.publish(3)
    db.wait_published(3)
    with pg_outbox.subscribe_sync(db.conninfo, ["orders"], consumer="c1", after=0) as sub:
        got = collect(sub, 3)
        new_epoch(db, 4)  # preserved: it keeps working
        db.publish(2, start=3)
        got += collect(sub, 2)
        assert [e.pos for e in got] == [1, 2, 3, 4, 5]
        new_epoch(db, 5)  # position 5 (processed) reissued: the next row of a newer epoch tells
        db.publish(1, start=5)
        with pytest.raises(pg_outbox.ResyncRequired) as ei:
            collect(sub, 1, timeout=20)
    assert (ei.value.sqlstate, ei.value.first_reissued, ei.value.position) == ("OB003", 5, 5)


@pytest.mark.asyncio
async def test_async_epochs(db, tmp_path):
    st = str(tmp_path / "a.state")
    db.publish(3)
    db.wait_published(3)
    identity = db.sql("SELECT outbox.identity()")[0][0]
    async with pg_outbox.subscribe(db.conninfo, ["orders"], after=0, state_file=st) as sub:
        got = await acollect(sub, 3)
        e2 = new_epoch(db, 4)
        db.publish(2, start=3)
        got += await acollect(sub, 2)
    assert [(e.pos, e.epoch) for e in got] == [(1, 1), (2, 1), (3, 1), (4, e2), (5, e2)]
    assert pg_outbox.read_state(st) == pg_outbox.State(5, e2, identity)
    e3 = new_epoch(db, 5)  # position 5 reissued
    for kw in ({}, {"pooled": True}):
        with pytest.raises(pg_outbox.ResyncRequired) as ei:
            async with pg_outbox.subscribe(db.conninfo, ["orders"], state_file=st, **kw) as sub:
                await acollect(sub, 1, timeout=20)
        e = ei.value
        assert (e.sqlstate, e.position, e.epoch, e.first_reissued, e.diverged) == ("OB003", 5, e2, 5, True), kw
        assert "handed out again in epoch %d" % e3 in str(e)
    db.sql("UPDATE outbox.state SET identity = 'another-outbox'")
    with pytest.raises(pg_outbox.ResyncRequired, match="identity changed"):
        async with pg_outbox.subscribe(db.conninfo, ["orders"], state_file=st) as sub:
            await acollect(sub, 1, timeout=20)
