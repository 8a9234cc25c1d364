"""Red team of issue 13 (client side): what the server hands the client as its identity is
checked before it is adopted, as pg_outbox_listen does (valid_identity: 1 to 128 characters of
A-Z a-z 0-9 . _ : -). An identity that is not one (a crafted dump, a hand-edited outbox.state)
must stop the consumer with an OutboxError before any event is delivered, and never end in a
ValueError when the state file is written (after events were handed out: a crash loop that
delivers them again at every start)."""
from __future__ import annotations

import os

import pytest

import pg_outbox
from test_subscribe import collect as acollect
from test_sync import collect

BAD = ["two words", "x" * 129, "new\nline", "sl/ash"]


@pytest.mark.parametrize("bad", BAD)
def test_sync_invalid_server_identity(edb, tmp_path, bad):
    st = str(tmp_path / "s.state")
    edb.publish(2)
    edb.wait_published(2)
    edb.sql("UPDATE outbox.state SET identity = %s", (bad,))
    with pytest.raises(pg_outbox.OutboxError, match="not an identity") as ei:
        with pg_outbox.subscribe_sync(edb.conninfo, ["orders"], after=0, state_file=st) as sub:
            collect(sub, 2, timeout=20)
    assert not isinstance(ei.value, pg_outbox.ResyncRequired)
    assert not os.path.exists(st) or bad not in open(st).read()


@pytest.mark.asyncio
async def test_async_invalid_server_identity(edb, tmp_path):
    st = str(tmp_path / "s.state")
    edb.publish(2)
    edb.wait_published(2)
    edb.sql("UPDATE outbox.state SET identity = 'two words'")
    with pytest.raises(pg_outbox.OutboxError, match="not an identity"):
        async with pg_outbox.subscribe(edb.conninfo, ["orders"], after=0, state_file=st) as sub:
            await acollect(sub, 2, timeout=20)
    assert not os.path.exists(st) or "two words" not in open(st).read()
