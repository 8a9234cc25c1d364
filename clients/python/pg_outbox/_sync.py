"""pg_outbox.subscribe_sync(): the blocking consumer, on psycopg 3. The same protocol as
pg_outbox.subscribe() (see _aio.py), for code without asyncio:

    for event in pg_outbox.subscribe_sync("dbname=app", ["orders"], state_file="orders.state"):
        handle(event)        # its position is saved when the loop asks for the next event
"""
from __future__ import annotations

import datetime
import logging
import os
import select
import threading
import time
from typing import Any, Iterable, Iterator, Optional

import psycopg
from psycopg import conninfo as _conninfo

from . import _core
from ._core import Capabilities, Event, NotAnEnvelope, OutboxError, OutboxUnavailable, ResyncRequired, Tracker, Verdict

log = logging.getLogger("pg_outbox")

MAX_QUEUED = 10000


class _Lost(Exception):
    def __init__(self, message, sqlstate=None):
        super().__init__(message)
        self.sqlstate = sqlstate


class _Stop(Exception):
    pass


class SyncSubscription:
    """An iterator of :class:`pg_outbox.Event` (blocking); also a context manager. Advancing it
    marks the previous event processed; :meth:`ack` marks the current one; :meth:`stop` (from a
    signal handler or another thread) ends the iteration."""

    def __init__(self, dsn: str, channels: Optional[Iterable[str]], *, after: Any = None,
                 state_file: Optional[str] = None, consumer: Optional[str] = None, pooled: bool = False,
                 batch: int = 1000, max_backoff: float = 10.0, keepalive: float = 30.0, wait_timeout: float = 30.0,
                 query_timeout: float = 60.0, fsync: bool = True, connect_kwargs: Optional[dict] = None):
        self._o = _core.Options(dsn, channels, after, state_file, consumer, pooled, batch, max_backoff, keepalive,
                           wait_timeout, query_timeout, fsync, connect_kwargs)
        _conninfo.conninfo_to_dict(dsn)  # a bad connection string is an error now
        self._conn: Optional[psycopg.Connection] = None
        self._caps = Capabilities()
        self._tracker = Tracker(0)
        self._start_known = False
        self._processed: Optional[int] = None
        self._processed_epoch: Optional[int] = None  # [epochs] its epoch
        self._identity: Optional[str] = None  # outbox.identity() the positions belong to
        self._state_dirty = False  # the identity was adopted: save even at the same position
        self._saved: Optional[int] = None
        self._last_yielded: Optional[Event] = None
        self._buf: list = []
        self._overflow = False
        self._publishers = _core.Publishers()
        self._lock: Optional[_core.StateLock] = None
        self._gen = None
        self._closed = False
        self._stopping = False
        self._consumer_ready = False
        self._ever_connected = False
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        # delivered from envelopes, from replay/wait/next rows; notifications that were doorbells
        self.stats = {"envelopes": 0, "replayed": 0, "doorbells": 0, "duplicates": 0}
        self.reconnects = 0
        self.state = "idle"

    @property
    def position(self) -> Optional[int]:
        return self._processed

    @property
    def backend_pid(self) -> Optional[int]:
        c = self._conn
        return c.info.backend_pid if c is not None and not c.closed else None

    def __iter__(self):
        return self

    def __next__(self) -> Event:
        if self._closed:
            raise StopIteration
        if self._gen is None:
            self._start()
            self._gen = self._events()
        if self._stopping:
            self._finish()
            raise StopIteration
        try:
            ev = next(self._gen)
        except _Stop:
            self._finish()
            raise StopIteration from None
        except BaseException:
            self.close()
            raise
        self._last_yielded = ev
        return ev

    def stop(self) -> None:
        """End the iteration at the next (or the pending) request for an event, after marking the
        last returned event processed. Safe from a signal handler and from another thread."""
        self._stopping = True
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"x")
                except OSError:
                    pass  # the pipe is full: a wake-up is pending anyway
        c = self._conn
        if c is not None and self._o.mode != "listen":
            try:
                c.cancel()  # end a wait()/next() at once
            except Exception:
                pass

    def ack(self) -> None:
        ev = self._last_yielded
        if ev is None:
            return
        if self._processed is None or ev.pos > self._processed:
            self._processed = ev.pos
            if ev.epoch is not None:
                self._processed_epoch = ev.epoch
        if self._saved is not None and self._processed <= self._saved:
            return
        if self._o.mode == "consumer":
            if self._conn is None or self._conn.closed:
                return
            try:
                self._save_consumer()
            except _Lost:
                pass
        else:
            self._save_file()

    def _finish(self):
        try:
            self.ack()
        finally:
            self.close()

    def close(self) -> None:
        self.stop()  # an iteration running in another thread ends
        if self._gen is not None and not self._closed:
            self._closed = True
            try:
                self._gen.close()
            except ValueError:
                pass  # running in another thread: it sees the stop
        self._closed = True
        self.state = "closed"
        self._drop_connection()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._wake_r = self._wake_w = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- setup (as in _aio.Subscription) ----

    def _start(self):
        o = self._o
        if o.state_file is not None:
            self._lock = _core.StateLock(o.state_file)
            self._lock.acquire()
            try:
                st = _core.read_state_file(o.state_file)
            except _core.StateFileError:
                self._lock.release()
                raise
            if st is not None:
                self._tracker = Tracker(st.pos, st.epoch)
                self._processed = self._saved = st.pos
                self._processed_epoch = st.epoch
                self._identity = st.identity
                self._start_known = True
                log.info("resuming after position %d%s from state file %s", st.pos,
                         " of epoch %d" % st.epoch if st.epoch is not None else "", o.state_file)
        if not self._start_known and _core._is_int(o.after):
            self._tracker = Tracker(o.after)
            self._processed = self._saved = o.after
            self._start_known = True

    def _drop_connection(self):
        c, self._conn = self._conn, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def _on_notify(self, n):
        if len(self._buf) >= MAX_QUEUED:
            self._overflow = True
            return
        self._buf.append((n.pid, n.channel, n.payload))

    def _q(self, sql, params=None, *, fetch="all"):
        conn = self._conn
        if conn is None or conn.closed:
            raise _Lost("connection closed")
        try:
            cur = conn.execute(sql, params)
            if fetch == "all":
                return cur.fetchall()
            if fetch == "one":
                return cur.fetchone()
            return None
        except psycopg.Error as e:
            st = getattr(e, "sqlstate", None)
            if conn.broken or conn.closed:
                raise _Lost("connection lost: %s" % str(e).strip(), st) from None
            kind = _core.classify_sqlstate(st)
            msg = str(e).strip()
            if kind == "resync":
                self._identity_first()  # a re-created outbox: say so rather than OB001/OB002
                raise ResyncRequired("cannot continue after position %d: %s" % (self._tracker.last_pos, msg), st,
                                     self._tracker.last_pos, epoch=self._tracker.epoch) from None
            if kind == "diverged":
                raise self._diverged(msg, st) from None
            if kind == "unavailable":
                raise OutboxUnavailable("pg_outbox is not usable here: %s" % msg, st) from None
            if st == "57014" and self._stopping:
                raise _Stop() from None
            if kind == "fatal" and not (st in ("42704", "42710") and self._o.mode == "consumer"):
                raise OutboxError("query failed (SQLSTATE %s): %s" % (st, msg)) from None
            raise _Lost("query failed (SQLSTATE %s): %s" % (st, msg), st) from None
        except OSError as e:
            raise _Lost(str(e)) from None

    def _diverged(self, msg, sqlstate) -> ResyncRequired:
        """OB003: the ResyncRequired naming the first reissued position (from outbox.epochs)."""
        t = self._tracker
        first_row = None
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            try:
                first_row = conn.execute(_core.FIRST_REISSUED_SQL, (t.epoch if _core._is_int(t.epoch) else 0,)).fetchone()
            except Exception:
                pass  # the server's message names it too
        text, first = _core.diverged_message(t.last_pos, t.epoch, first_row, msg)
        log.error("%s", text)
        return ResyncRequired(text, sqlstate, t.last_pos, first_reissued=first, epoch=t.epoch, diverged=True)

    def _identity_first(self):
        conn = self._conn
        if self._caps.identity and self._identity and conn is not None and not conn.closed and not conn.broken:
            try:
                server = conn.execute("SELECT outbox.identity()").fetchone()[0]
            except Exception:
                return
            self._check_identity(server)

    def _check_identity(self, server):
        """The outbox the positions belong to: adopted when not known, else it must not change."""
        if not server:
            return
        if not _core.valid_identity(server):  # as pg_outbox_listen: never adopted, never written to the state file
            raise OutboxError("outbox.identity() returned something that is not an identity: %r" % (server[:140],))
        if _core.identity_changed(self._identity, server):
            raise ResyncRequired(_core.identity_message(self._identity, server, self._tracker.last_pos), None,
                                 self._tracker.last_pos, epoch=self._tracker.epoch, diverged=True)
        if self._identity != server:
            self._identity = server
            self._state_dirty = True

    def _check_epoch(self):
        """The pooled modes: OB003 if (last position, epoch) was not preserved."""
        t = self._tracker
        if self._caps.after_epoch and _core._is_int(t.epoch):
            self._q(_core.EPOCH_CHECK_SQL, (t.last_pos, self._o.channels, t.epoch), fetch="one")

    def _connect(self):
        self._drop_connection()
        self.state = "connecting"
        self._buf = []
        self._overflow = False
        o = self._o
        given = _conninfo.conninfo_to_dict(o.dsn)
        kw = {}
        for k, v in (("application_name", "pg_outbox.subscribe_sync"), ("keepalives", "1"), ("keepalives_idle", "30"),
                     ("keepalives_interval", "10"), ("keepalives_count", "3"), ("connect_timeout", "10")):
            if k not in given and k not in o.connect_kwargs:
                kw[k] = v
        kw.update(o.connect_kwargs)
        if o.mode != "listen":
            kw.setdefault("prepare_threshold", None)  # PgBouncer in transaction mode
        try:
            conn = psycopg.connect(o.dsn, autocommit=True, **kw)
        except psycopg.Error as e:
            if not self._ever_connected:
                raise
            raise _Lost("cannot connect: %s" % str(e).strip()) from None
        self._conn = conn
        self._ever_connected = True
        conn.add_notify_handler(self._on_notify)
        log.info("connected (backend pid %d)", conn.info.backend_pid)

    def _setup(self):
        o = self._o
        cur = self._conn.cursor(row_factory=psycopg.rows.dict_row)
        try:
            row = cur.execute(_core.CAPABILITIES_SQL).fetchone()
        except psycopg.Error as e:
            raise _Lost(str(e)) from None
        caps = self._caps = Capabilities.from_row(row)
        if not caps.replay:
            raise OutboxUnavailable("the database has no pg_outbox with outbox.replay(): run CREATE EXTENSION pg_outbox"
                                    " (or update it)")
        if caps.identity:  # [epochs] another outbox than the one the positions belong to?
            self._check_identity(self._q("SELECT outbox.identity()", fetch="one")[0])
        elif caps.identity_exists:
            log.warning("this role may not execute outbox.identity(): a re-created outbox cannot be told apart")
        if o.mode == "wait" and not caps.wait:
            raise OutboxUnavailable("the server has no outbox.wait() (pg_outbox 1.2 or later): use LISTEN mode")
        if o.mode == "consumer" and not (caps.next and caps.ack and caps.create_consumer):
            raise OutboxUnavailable("the server has no named consumers (outbox.next, outbox.ack: pg_outbox 1.2 or later)")
        if o.mode == "listen":
            self._refresh_worker_pids()
            for ch in o.channels:  # LISTEN first (see _aio.py)
                self._q("LISTEN " + _core.quote_ident(ch), fetch=None)
        if o.mode == "consumer":
            if not self._consumer_ready:
                self._ensure_consumer()
                self._consumer_ready = True
            if self._processed is not None and (self._saved is None or self._processed > self._saved):
                self._save_consumer()
            self._check_epoch()
            return
        if not self._start_known:
            ep = ", outbox.epoch()" if caps.identity else ", NULL::bigint"
            if o.channels is None:
                head, _, epoch = self._q("SELECT outbox.head(), NULL" + ep, fetch="one")
                seqs = []
            else:
                head, seqs, epoch = self._q(_core.HEAD_SQL_PG + ep, (o.channels,), fetch="one")
                for ch, s in zip(o.channels, seqs):
                    if s == 0:
                        log.warning('channel "%s" has had no event yet (listening anyway)', ch)
            self._tracker = Tracker(head, epoch)
            self._processed_epoch = epoch
            if o.mode == "listen":
                for ch, s in zip(o.channels, seqs):
                    self._tracker.seqs[ch] = s
            self._start_known = True
            self._processed = head
            log.info("starting from now: after position %d", head)
            self._save_file()
        elif o.mode == "wait":
            self._check_epoch()

    def _ensure_consumer(self):
        o = self._o
        if self._q("SELECT count(*) FROM outbox.consumers WHERE name = %s", (o.consumer,), fetch="one")[0]:
            return
        start = "now" if o.after in (None, "now") else str(o.after)
        try:
            self._q("SELECT outbox.create_consumer(%s, %s::text[], %s)", (o.consumer, o.channels, start), fetch=None)
        except _Lost as e:
            if e.sqlstate != "42710":
                raise
            return
        log.info('created consumer "%s" (start %s)', o.consumer, start)

    def _refresh_worker_pids(self):
        if not self._caps.worker_pids:
            self._publishers.forget()
            return
        if self._caps.identity:  # and the identity: a re-created extension shows a new worker PID first
            pids, identity = self._q("SELECT outbox.worker_pids(), outbox.identity()", fetch="one")
            self._check_identity(identity)
        else:
            pids = self._q("SELECT outbox.worker_pids()", fetch="one")[0]
        self._publishers.set(pids, time.monotonic())

    def _trusted(self, pid) -> bool:
        """Is pid a drain worker's? (listen_core's Publishers: see _core.Publishers.)"""
        if pid is None or not self._caps.worker_pids:
            return False
        v = self._publishers.classify(pid, time.monotonic())
        if v == _core.Publishers.REFRESH:
            self._refresh_worker_pids()
            v = self._publishers.classify(pid, time.monotonic())
        return v == _core.Publishers.TRUSTED

    # ---- positions ----

    def _save_file(self):
        if self._o.state_file is None or self._processed is None or (self._processed == self._saved
                                                                     and not self._state_dirty):
            return
        _core.write_state_file(self._o.state_file, _core.State(self._processed, self._processed_epoch, self._identity),
                               self._o.fsync)
        self._saved = self._processed
        self._state_dirty = False

    def _save_consumer(self):
        pos = self._processed
        self._q("SELECT outbox.ack(%s, %s::bigint)", (self._o.consumer, pos), fetch=None)
        self._saved = pos

    def _done(self, ev):
        self._processed = ev.pos
        if ev.epoch is not None:
            self._processed_epoch = ev.epoch
        if self._o.mode == "consumer":
            self._save_consumer()
        else:
            self._save_file()
        if self._stopping:
            raise _Stop()

    def _deliver(self, ev):
        # [epochs] a newer epoch is no error by itself (see _aio.Subscription._deliver)
        self._tracker.delivered(ev)

    # ---- the loop ----

    def _events(self) -> Iterator[Event]:
        attempt = 0
        mode = self._o.mode
        while not self._stopping:
            try:
                self._connect()
                self._setup()
                if mode == "listen":
                    self.state = "replaying"
                    for ev in self._catch_up(None):
                        yield ev
                        self._done(ev)
                    attempt = 0
                    for ev in self._live():
                        yield ev
                        self._done(ev)
                else:
                    attempt = 0
                    for ev in self._poll():
                        yield ev
                        self._done(ev)
            except _Lost as e:
                if self._stopping:
                    break
                self.reconnects += 1
                delay = _core.backoff_delay(attempt, self._o.max_backoff)
                attempt += 1
                log.warning("disconnected at position %d: %s; reconnecting in %.1f s", self._tracker.last_pos, e, delay)
                self._drop_connection()
                self.state = "disconnected"
                self._sleep(delay)
        raise _Stop()

    def _sleep(self, seconds):
        if seconds > 0 and self._wake_r is not None:
            select.select([self._wake_r], [], [], seconds)

    def _catch_up(self, target):
        o = self._o
        after_epoch = self._caps.after_epoch
        if after_epoch:  # [epochs] the server raises OB003 if the position was not preserved
            sql = ("SELECT %s FROM outbox.replay(%%s::bigint, %%s::text[], %%s::integer, %%s::bigint) r"
                   % _core.event_columns(self._caps))
        else:
            sql = "SELECT %s FROM outbox.replay(%%s::bigint, %%s::text[], %%s::integer) r" % _core.event_columns(self._caps)
        while True:
            args = [self._tracker.last_pos, o.channels, o.batch]
            if after_epoch:
                args.append(self._tracker.epoch if _core._is_int(self._tracker.epoch) else None)
            rows = self._q(sql, tuple(args))
            self._check_identity(_core.rows_identity(rows))
            for row in rows:
                ev = _core.event_from_row(row)
                if ev.pos <= self._tracker.last_pos:
                    raise _Lost("outbox.replay() returned position %d after %d" % (ev.pos, self._tracker.last_pos))
                self.stats["replayed"] += 1
                self._deliver(ev)
                yield ev
            if len(rows) < o.batch:
                if target is not None and self._tracker.last_pos < target:
                    raise _Lost("position %d was notified but outbox.replay() does not return it" % target)
                return

    def _read_notifications(self, timeout):
        """Wait up to timeout for input; collect notifications into self._buf."""
        conn = self._conn
        if conn is None or conn.closed:
            raise _Lost("connection closed")
        fd = conn.fileno()
        enc = conn.info.encoding
        pg = conn.pgconn
        while True:  # already read by libpq
            n = pg.notifies()
            if n is None:
                break
            self._on_notify(psycopg.Notify(n.relname.decode(enc), n.extra.decode(enc), n.be_pid))
        if self._buf:
            return True
        if self._wake_r is None:
            raise _Stop()
        r, _, _ = select.select([fd, self._wake_r], [], [], timeout)
        if self._wake_r in r or self._stopping:
            raise _Stop()
        if not r:
            return False
        try:
            pg.consume_input()
        except psycopg.OperationalError as e:
            raise _Lost("connection lost: %s" % str(e).strip()) from None
        if pg.status != psycopg.pq.ConnStatus.OK:
            raise _Lost("connection lost")
        while True:
            n = pg.notifies()
            if n is None:
                break
            self._on_notify(psycopg.Notify(n.relname.decode(enc), n.extra.decode(enc), n.be_pid))
        return True

    def _next_items(self):
        deadline = time.monotonic() + self._o.keepalive
        while not self._buf and not self._overflow:
            left = deadline - time.monotonic()
            if left <= 0:
                if self._caps.worker_pids:
                    self._refresh_worker_pids()  # keepalive, and a fresh list
                else:
                    self._q("SELECT 1", fetch=None)
                deadline = time.monotonic() + self._o.keepalive
                continue
            self._read_notifications(min(left, 5.0))
        items, self._buf = self._buf, []
        if self._overflow:
            self._overflow = False
            return [(None, None, None)]
        return items

    def _live(self):
        log.info("live at position %d", self._tracker.last_pos)
        self.state = "live"
        while True:
            items = self._next_items()
            doorbell = False
            for pid, channel, payload in items:
                ev = None
                if self._trusted(pid):
                    try:
                        ev = _core.decode_envelope(channel, payload)
                    except NotAnEnvelope as e:
                        log.warning('the drain worker sent a notification on "%s" that is not an envelope: %s', channel, e)
                if ev is None:
                    self.stats["doorbells"] += 1
                    doorbell = True
                    continue
                if doorbell:
                    doorbell = False
                    yield from self._catch_up(None)
                v = self._tracker.classify(ev)
                if v is Verdict.DUPLICATE:
                    self.stats["duplicates"] += 1
                    continue
                if v is Verdict.DELIVER:
                    self.stats["envelopes"] += 1
                    self._deliver(ev)
                    yield ev
                elif v is Verdict.GAP:
                    yield from self._catch_up(ev.pos)
                else:
                    raise ResyncRequired(
                        "notification of position %d, channel %s seq %d contradicts what was delivered (last position %d,"
                        " channel seq %s): the outbox was reset or restored"
                        % (ev.pos, ev.channel, ev.seq, self._tracker.last_pos, self._tracker.seqs.get(ev.channel)),
                        None, self._tracker.last_pos)
            if doorbell:
                yield from self._catch_up(None)

    def _poll(self):
        o = self._o
        cols = _core.event_columns(self._caps)
        timeout = datetime.timedelta(seconds=o.wait_timeout)
        self.state = "polling"
        while True:
            try:
                if o.mode == "wait":
                    rows = self._q("SELECT %s FROM outbox.wait(%%s::bigint, %%s::text[], %%s::interval, %%s::integer) r"
                                   % cols, (self._tracker.last_pos, o.channels, timeout, o.batch))
                else:
                    rows = self._q("SELECT %s FROM outbox.next(%%s, %%s::integer, %%s::interval) r" % cols,
                                   (o.consumer, o.batch, timeout))
            except _Lost as e:
                if e.sqlstate == "42704":
                    raise ResyncRequired('consumer "%s" does not exist any more (dropped?)' % o.consumer,
                                         e.sqlstate) from None
                raise
            self._check_identity(_core.rows_identity(rows))
            t = self._tracker
            if _core._is_int(t.epoch) and any(_core._is_int(e) and e > t.epoch for e in (_core.parse_epoch(r[7]) for r in rows)):
                self._check_epoch()  # a newer epoch: was the position preserved? (OB003 if not)
            for row in rows:
                ev = _core.event_from_row(row)
                if ev.pos <= self._tracker.last_pos:
                    self.stats["duplicates"] += 1
                    continue
                self.stats["replayed"] += 1
                self._deliver(ev)
                yield ev


def subscribe_sync(dsn: str, channels: Optional[Iterable[str]], *, after: Any = None, state_file: Optional[str] = None,
                   consumer: Optional[str] = None, **options) -> SyncSubscription:
    """The blocking variant of :func:`pg_outbox.subscribe` (psycopg 3; libpq connection strings
    or URIs). Same arguments and guarantees."""
    return SyncSubscription(dsn, channels, after=after, state_file=state_file, consumer=consumer, **options)
