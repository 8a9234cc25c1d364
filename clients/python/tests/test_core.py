"""The pure logic (no database): envelopes, the tracker, the state file, backoff, conninfo."""
from __future__ import annotations

import json
import os

import pytest

from pg_outbox import _core
from pg_outbox._core import Event, Tracker, Verdict


def test_decode_envelope():
    e = _core.decode_envelope("orders", '{"id":7,"pos":42,"seq":3,"key":"k","type":"t","payload":{"a":[1,2]}}')
    assert (e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.truncated) == \
        (42, 3, 7, "orders", "k", "t", {"a": [1, 2]}, False)
    t = _core.decode_envelope("c", '{"id":1,"pos":1,"seq":1,"truncated":true}')
    assert t.truncated and t.payload is None and t.key is None
    assert _core.decode_envelope("c", '{"id":1,"pos":1,"seq":1,"epoch":5}').epoch == 5
    for bad in ("", "x", "[]", "1", '{"id":1,"pos":1}', '{"id":1,"pos":0,"seq":1}', '{"id":1,"pos":1,"seq":0}',
                '{"id":-1,"pos":1,"seq":1}', '{"id":1,"pos":"1","seq":1}', '{"id":1,"pos":true,"seq":1}',
                '{"id":1,"pos":1.5,"seq":1}', '{"id":1,"pos":1,"seq":1,"key":5}', '{"id":1,"pos":1,"seq":1,"type":[]}'):
        with pytest.raises(_core.NotAnEnvelope):
            _core.decode_envelope("c", bad)


def ev(pos, seq, channel="a", truncated=False):
    return Event(pos=pos, seq=seq, id=pos, channel=channel, truncated=truncated)


def test_tracker():
    t = Tracker(10)
    assert t.classify(ev(11, 1)) is Verdict.GAP  # seq not known yet
    t.seqs["a"] = 4
    assert t.classify(ev(11, 5)) is Verdict.DELIVER
    assert t.classify(ev(11, 5, truncated=True)) is Verdict.GAP
    assert t.classify(ev(12, 6)) is Verdict.GAP  # seq jumps
    assert t.classify(ev(10, 4)) is Verdict.DUPLICATE
    assert t.classify(ev(9, 5)) is Verdict.INCONSISTENT  # old pos, newer seq
    assert t.classify(ev(11, 4)) is Verdict.INCONSISTENT  # new pos, old seq
    t.delivered(ev(11, 5))
    assert t.last_pos == 11 and t.seqs["a"] == 5
    assert t.classify(ev(13, 1, "b")) is Verdict.GAP


def test_state_file(tmp_path):
    p = str(tmp_path / "s")
    assert _core.read_state_file(p) is None
    _core.write_state_file(p, 12345)  # a bare position
    assert open(p).read() == "pg_outbox_listen state 2\npos 12345\n"  # pg_outbox_listen's format
    assert _core.read_state_file(p) == _core.State(12345)
    st = _core.State(12345, 3, "6f1c2a9e-4b7d-4e21-9c3a-0d5e8f7a1b2c")
    _core.write_state_file(p, st)
    assert open(p).read() == ("pg_outbox_listen state 2\npos 12345\nepoch 3\n"
                              "identity 6f1c2a9e-4b7d-4e21-9c3a-0d5e8f7a1b2c\n")
    assert _core.read_state_file(p) == st
    assert not os.path.exists(p + ".tmp")
    os.symlink(str(tmp_path / "victim"), p + ".tmp")  # a planted PATH.tmp is not followed
    with pytest.raises(_core.StateFileError):
        _core.write_state_file(p, 8)
    assert not os.path.exists(tmp_path / "victim") and _core.read_state_file(p) == st
    os.unlink(p + ".tmp")
    _core.write_state_file(p, 7, do_fsync=False)
    assert _core.read_state_file(p).pos == 7
    with open(p, "w") as f:  # written by an older pg_outbox_listen or client
        f.write("pg_outbox_listen state 1\npos 99\n")
    assert _core.read_state_file(p) == _core.State(99) and _core.read_state_file(p).version == 1
    for bad in ("", "pg_outbox_listen state 1\n", "pg_outbox_listen state 1\npos -1\n", "pg_outbox_listen state 1\npos 1",
                "pg_outbox_listen state 3\npos 1\n", "pg_outbox_listen state 1\npos 1\nextra\n",
                "pg_outbox_listen state 1\npos 99999999999999999999\n", "\xff", "pg_outbox_listen state 2\npos 1\nepoch 1",
                "pg_outbox_listen state 2\npos 1\nidentity x y\n", "pg_outbox_listen state 1\npos 1\nepoch 2\n"):
        with open(p, "w", encoding="latin-1") as f:
            f.write(bad)
        with pytest.raises(_core.StateFileError, match="corrupt"):
            _core.read_state_file(p)
    with pytest.raises(ValueError):
        _core.format_state(_core.State(1, 1, "not an/identity"))
    with pytest.raises(_core.StateFileError, match="does not exist"):
        _core.read_state_file(str(tmp_path / "no" / "s"))
    ro = tmp_path / "ro"
    ro.mkdir()
    _core.write_state_file(str(ro / "s"), 3)
    os.chmod(ro, 0o500)
    try:
        if os.geteuid() != 0:  # root writes anyway
            with pytest.raises(_core.StateFileError, match="cannot create"):
                _core.write_state_file(str(ro / "s"), 4)
            assert _core.read_state_file(str(ro / "s")).pos == 3  # the old file is intact
    finally:
        os.chmod(ro, 0o700)


def test_tracker_epochs():
    def ev(pos, seq, epoch):
        return _core.Event(pos=pos, seq=seq, id=pos, channel="a", epoch=epoch)
    t = Tracker(10, 2)
    t.seqs["a"] = 5
    assert t.classify(ev(11, 6, 2)) is Verdict.DELIVER
    assert t.classify(ev(11, 6, None)) is Verdict.DELIVER
    assert t.classify(ev(11, 6, 3)) is Verdict.GAP  # a newer epoch: replay (with after_epoch) decides
    assert t.classify(ev(9, 4, 3)) is Verdict.GAP  # at or below the position in a newer epoch
    assert t.classify(ev(9, 4, 1)) is Verdict.DUPLICATE
    t.delivered(ev(11, 6, 3))  # an epoch change with the position preserved: adopted, no error
    assert t.epoch == 3 and t.last_pos == 11
    t.delivered(ev(12, 7, None))
    assert t.epoch == 3
    u = Tracker(10)  # not known (a version 1 state file)
    u.seqs["a"] = 5
    assert u.classify(ev(11, 6, 7)) is Verdict.DELIVER


def test_diverged_message():
    msg, first = _core.diverged_message(120, 1, (101, 3, "timeline changed from 1 to 3"), "server says")
    assert first == 101
    assert "positions from 101 on were handed out again in epoch 3" in msg and "101 to 120" in msg
    msg, first = _core.diverged_message(120, 1, None, "server says")
    assert first is None and "position 120 of epoch 1 was not preserved" in msg and "server says" in msg
    assert _core.classify_sqlstate("OB003") == "diverged"
    assert _core.identity_changed("a", "b") and not _core.identity_changed(None, "b") and not _core.identity_changed("a", "a")
    e = _core.ResyncRequired("m", "OB003", 120, first_reissued=101, epoch=1, diverged=True)
    assert (e.sqlstate, e.position, e.first_reissued, e.epoch, e.diverged) == ("OB003", 120, 101, 1, True)


def test_state_lock(tmp_path):
    p = str(tmp_path / "s")
    a, b = _core.StateLock(p), _core.StateLock(p)
    a.acquire()
    with pytest.raises(_core.StateFileError, match="another consumer"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


def test_backoff():
    assert _core.backoff_delay(0, 10) == 0
    assert _core.backoff_delay(1, 10, 0.5) == pytest.approx(0.1)
    assert _core.backoff_delay(4, 10, 0.5) == pytest.approx(0.8)
    assert _core.backoff_delay(40, 10, 1.0) == 10
    assert 0.08 <= _core.backoff_delay(1, 10) <= 0.12


def test_channels():
    assert _core.check_channels(["a", "b", "a"]) == ["a", "b"]
    assert _core.check_channels("solo") == ["solo"]
    assert _core.check_channels(["é" * 31]) == ["é" * 31]
    for bad in ([""], ["é" * 32], ["a\x00"]):
        with pytest.raises(ValueError):
            _core.check_channels(bad)
    with pytest.raises(TypeError):
        _core.check_channels([1])


def test_conninfo():
    assert _core.parse_conninfo("host=/tmp/x port=5488  dbname='my db' password='a\\'b' user=u\\ v") == {
        "host": "/tmp/x", "port": "5488", "dbname": "my db", "password": "a'b", "user": "u v"}
    assert _core.parse_conninfo("") == {}
    for bad in ("host", "host='x", "=x"):
        with pytest.raises(ValueError):
            _core.parse_conninfo(bad)
    dsn, kw, settings = _core.asyncpg_connect_args("host=/s port=5 dbname=d user=u application_name=app"
                                                   " connect_timeout=3 keepalives=1")
    assert dsn is None and kw == {"host": "/s", "port": 5, "database": "d", "user": "u", "timeout": 3.0}
    assert settings == {"application_name": "app"}
    assert _core.asyncpg_connect_args("postgresql://u@/d?host=/s")[0] == "postgresql://u@/d?host=/s"
    with pytest.raises(ValueError, match="not supported"):
        _core.asyncpg_connect_args("sslcert=/x")
    with pytest.raises(ValueError, match="port"):
        _core.asyncpg_connect_args("port=abc")


def test_event_from_row_and_columns():
    caps = _core.Capabilities(replay=True, envelope_column=True)
    assert "envelope->>'epoch'" in _core.event_columns(caps)
    caps.epoch_column = True
    assert "r.epoch::text" in _core.event_columns(caps)
    assert ", NULL::text" in _core.event_columns(caps)
    caps.identity = True
    assert "(SELECT outbox.identity())" in _core.event_columns(caps)
    e = _core.event_from_row((5, 2, 9, "c", None, "t", json.dumps({"x": 1}), "3"))
    assert (e.pos, e.seq, e.id, e.channel, e.key, e.type, e.payload, e.epoch) == (5, 2, 9, "c", None, "t", {"x": 1}, 3)
    assert _core.event_from_row((5, 2, 9, "c", None, None, None, None)).payload is None


def test_options():
    with pytest.raises(ValueError):
        _core.Options("d", None, None, None, None, False, 1000, 10, 30, 30, 60, True, None)  # LISTEN needs channels
    o = _core.Options("d", None, None, None, None, True, 1000, 10, 30, 30, 60, True, None)
    assert o.mode == "wait" and o.channels is None
    for kw in ({"batch": 0}, {"max_backoff": 0}, {"after": "later"}, {"after": True}, {"consumer": ""}):
        args = dict(dsn="d", channels=["a"], after=None, state_file=None, consumer=None, pooled=False, batch=10,
                    max_backoff=1, keepalive=1, wait_timeout=1, query_timeout=1, fsync=True, connect_kwargs=None)
        args.update(kw)
        with pytest.raises(ValueError):
            _core.Options(**args)


def test_publishers():
    P = _core.Publishers
    p = P(min_refresh=1.0, max_age=30.0)
    assert p.classify(7, 0) == P.REFRESH  # nothing fetched yet
    p.set([7, 8], 100.0)
    assert p.classify(7, 100.5) == P.TRUSTED
    assert p.classify(9, 100.5) == P.DOORBELL  # unknown, but the list is fresh: no query
    assert p.classify(9, 101.0) == P.REFRESH  # unknown, list a second old: fetch again
    assert p.classify(7, 130.0) == P.REFRESH  # listed, but the list is too old to vouch
    assert p.classify(7, 50.0) == P.TRUSTED  # the clock went back: as if fetched now
    assert p.classify(None, 100.5) == P.DOORBELL and p.classify(0, 100.5) == P.DOORBELL
    p.forget()
    assert p.classify(7, 100.5) == P.REFRESH
    p.set(None, 200.0)
    assert p.classify(7, 200.1) == P.DOORBELL
