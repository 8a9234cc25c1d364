"""pg_outbox.subscribe(): an asyncio consumer on asyncpg.

LISTEN mode (the default) follows src/listen/main.cpp: on start and after every reconnect it
LISTENs first, then replays from the last delivered position with outbox.replay() until caught
up, then follows live notifications. A notification is trusted as an envelope only when its
sender is the drain worker (be_pid in outbox.worker_pids()); anything else is a doorbell that
makes it replay. An envelope at or below the last position is a duplicate and dropped; one whose
channel seq jumps (or is not known yet, or whose payload was truncated) makes it replay up to
that position. Positions are saved when the caller asks for the next event, i.e. after it has
processed the previous one: a crash re-delivers at most the last event and loses none.

Pooled modes, for connections through a transaction pooler (PgBouncer), never LISTEN: ``pooled=True``
long-polls with outbox.wait() from a position kept in the state file; ``consumer=NAME`` uses a
named consumer (outbox.next()/outbox.ack()), whose position the server keeps.

Epochs (pg_outbox 1.2 and later): the state file keeps the epoch of the position and the
outbox's identity. At every connect the identity is compared with outbox.identity(), and every
replay passes after_epoch, so that the server decides whether the position was preserved (OB003
-> ResyncRequired naming the first reissued position). An epoch change with the position
preserved is no error: the tracker adopts the new epoch. wait() and next() take no after_epoch:
the pooled modes ask replay() (one row) at connect and whenever a row of a newer epoch arrives.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from typing import Any, AsyncIterator, Iterable, Optional

import asyncpg

from . import _core
from ._core import (Capabilities, Event, OutboxError, OutboxUnavailable, ResyncRequired, StateFileError, Tracker, Verdict,
                    NotAnEnvelope)

log = logging.getLogger("pg_outbox")

_LOST = object()  # queued by the termination listener
MAX_QUEUED = 10000  # notifications buffered while the caller is busy; beyond that: one replay


class _Lost(Exception):
    """The connection went away (or a transient error): reconnect."""

    def __init__(self, message, sqlstate=None):
        super().__init__(message)
        self.sqlstate = sqlstate


class Subscription:
    """An async iterator of :class:`pg_outbox.Event`; also an async context manager.

    Advancing the iterator marks the previous event as processed (its position is saved, or
    acked for a named consumer). Call :meth:`ack` to mark the current one processed before
    leaving the loop, else it is delivered again next time (at-least-once)."""

    def __init__(self, dsn: str, channels: Optional[Iterable[str]], *, after: Any = None,
                 state_file: Optional[str] = None, consumer: Optional[str] = None, pooled: bool = False,
                 batch: int = 1000, max_backoff: float = 10.0, keepalive: float = 30.0, wait_timeout: float = 30.0,
                 query_timeout: float = 60.0, fsync: bool = True, connect_kwargs: Optional[dict] = None):
        self._o = _core.Options(dsn, channels, after, state_file, consumer, pooled, batch, max_backoff, keepalive,
                           wait_timeout, query_timeout, fsync, connect_kwargs)
        self._dsn, self._kw, self._settings = _core.asyncpg_connect_args(dsn)
        self._conn: Optional[asyncpg.Connection] = None
        self._caps = Capabilities()
        self._tracker = Tracker(0)
        self._start_known = False
        self._processed: Optional[int] = None  # last position the caller has processed
        self._processed_epoch: Optional[int] = None  # its epoch
        self._identity: Optional[str] = None  # outbox.identity() the positions belong to
        self._state_dirty = False  # the identity was adopted: save the state file even at the same position
        self._saved: Optional[int] = None  # last position saved (state file) or acked (consumer)
        self._last_yielded: Optional[Event] = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._overflow = False
        self._publishers = _core.Publishers()
        self._lock: Optional[_core.StateLock] = None
        self._gen = None
        self._stop_fut: Optional[asyncio.Future] = None
        self._stopping = False
        self._consumer_ready = False
        self._closed = False
        self._ever_connected = False
        # delivered from envelopes, from replay/wait/next rows; notifications that were doorbells
        self.stats = {"envelopes": 0, "replayed": 0, "doorbells": 0, "duplicates": 0}
        self.reconnects = 0  # how many times the connection was lost and re-made
        self.state = "idle"  # connecting, replaying, live, polling, disconnected, closed

    # ---- public ----

    @property
    def position(self) -> Optional[int]:
        """The last position the caller has processed (None before the first)."""
        return self._processed

    @property
    def backend_pid(self) -> Optional[int]:
        """The server process of the current connection (None while disconnected)."""
        c = self._conn
        return c.get_server_pid() if c is not None and not c.is_closed() else None

    def __aiter__(self):
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._gen is None:
            self._start()
            self._gen = self._events()
            self._stop_fut = asyncio.get_running_loop().create_future()
        if self._stopping or self._stop_fut.done():
            await self._finish()
            raise StopAsyncIteration
        # The generator's step runs as a task, so that stop() can end a wait at once (and so that
        # a cancellation of the caller reaches it even where asyncio.wait_for would swallow it).
        step = asyncio.ensure_future(self._gen.__anext__())
        try:
            await asyncio.wait({step, self._stop_fut}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._cancel_step(step)
            await self._teardown()
            raise
        if not step.done():
            await self._cancel_step(step)
            await self._finish()
            raise StopAsyncIteration
        try:
            ev = step.result()
        except BaseException:
            await self._teardown()
            raise
        self._last_yielded = ev
        return ev

    @staticmethod
    async def _cancel_step(step):
        step.cancel()
        # a step that delivers an event instead of stopping: that event was not processed
        await asyncio.wait({step}, timeout=10)
        if step.done() and not step.cancelled():
            step.exception()  # retrieved: nobody else will

    async def _finish(self):
        """stop(): the last event returned was processed (the caller asked for the next one)."""
        try:
            await self.ack()
        finally:
            await self._teardown()

    def stop(self) -> None:
        """End the iteration: the next (or the pending) request for an event ends it, after marking
        the last returned event processed. Callable from a signal handler of the event loop
        (loop.add_signal_handler(signal.SIGTERM, sub.stop)); from another thread use
        loop.call_soon_threadsafe(sub.stop)."""
        self._stopping = True
        f = self._stop_fut
        if f is not None and not f.done():
            f.set_result(None)

    async def ack(self) -> None:
        """Mark the event the iterator returned last as processed, now (its position is saved)."""
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
            if self._conn is None:
                return  # acked after the next connect
            try:
                await self._save_consumer()
            except _Lost:
                pass  # acked after the reconnect
        else:
            await self._save_file_async()

    async def aclose(self) -> None:
        self.stop()  # a request pending in another task ends (and its step with it)
        if self._gen is not None and not self._closed:
            self._closed = True
            try:
                await self._gen.aclose()
            except RuntimeError:
                pass  # closed while a cancelled step was finishing
        await self._teardown()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    # ---- setup ----

    def _start(self):
        o = self._o
        if o.state_file is not None:
            self._lock = _core.StateLock(o.state_file)
            self._lock.acquire()
            try:
                st = _core.read_state_file(o.state_file)
            except StateFileError:
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

    async def _teardown(self):
        self._closed = True
        self.state = "closed"
        self._drop_connection()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _drop_connection(self):
        c, self._conn = self._conn, None
        if c is not None and not c.is_closed():
            c.terminate()

    def _on_notify(self, conn, pid, channel, payload):
        if conn is not self._conn:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self._overflow = True
            return
        self._queue.put_nowait((pid, channel, payload))

    def _on_terminate(self, conn):
        if conn is self._conn:
            self._queue.put_nowait(_LOST)

    async def _q(self, method: str, sql: str, *args, timeout: Optional[float] = None):
        """Run a query; turn errors into what the consumer does about them."""
        conn = self._conn
        if conn is None or conn.is_closed():
            raise _Lost("connection closed")
        return await self._guard(getattr(conn, method)(sql, *args, timeout=timeout or self._o.query_timeout))

    async def _guard(self, aw):
        try:
            return await aw
        except asyncpg.PostgresError as e:
            st = getattr(e, "sqlstate", None)
            kind = _core.classify_sqlstate(st)
            msg = str(e)
            if kind == "resync":
                await self._identity_first()  # a re-created outbox: say so rather than OB001/OB002
                raise ResyncRequired("cannot continue after position %d: %s" % (self._tracker.last_pos, msg), st,
                                     self._tracker.last_pos, epoch=self._tracker.epoch) from None
            if kind == "diverged":
                raise await self._diverged(msg, st) from None
            if kind == "unavailable":
                hint = getattr(e, "hint", None)
                raise OutboxUnavailable("pg_outbox is not usable here: %s%s" % (msg, " (hint: %s)" % hint if hint else ""),
                                        st) from None
            if kind == "fatal" and not (st in ("42704", "42710") and self._o.mode == "consumer"):
                raise OutboxError("query failed (SQLSTATE %s): %s" % (st, msg)) from None
            raise _Lost("query failed (SQLSTATE %s): %s" % (st, msg), st) from None
        except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError) as e:
            raise _Lost("%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__) from None

    async def _diverged(self, msg, sqlstate) -> ResyncRequired:
        """OB003: the ResyncRequired naming the first reissued position (from outbox.epochs)."""
        t = self._tracker
        first_row = None
        conn = self._conn
        if conn is not None and not conn.is_closed():
            try:
                first_row = await conn.fetchrow(_core.FIRST_REISSUED_SQL.replace("%s", "$1"),
                                                t.epoch if _core._is_int(t.epoch) else 0, timeout=self._o.query_timeout)
            except Exception:
                pass  # the server's message names it too
        text, first = _core.diverged_message(t.last_pos, t.epoch, first_row, msg)
        log.error("%s", text)
        return ResyncRequired(text, sqlstate, t.last_pos, first_reissued=first, epoch=t.epoch, diverged=True)

    async def _identity_first(self):
        conn = self._conn
        if self._caps.identity and self._identity and conn is not None and not conn.is_closed():
            try:
                server = await conn.fetchval("SELECT outbox.identity()", timeout=self._o.query_timeout)
            except Exception:
                return
            self._check_identity(server)

    def _check_identity(self, server: Optional[str]):
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

    async def _check_epoch(self):
        """The pooled modes: OB003 if (last position, epoch) was not preserved."""
        t = self._tracker
        if self._caps.after_epoch and _core._is_int(t.epoch):
            sql = _core.EPOCH_CHECK_SQL.replace("%s", "$1", 1).replace("%s", "$2", 1).replace("%s", "$3", 1)
            await self._q("fetchval", sql, t.last_pos, self._o.channels, t.epoch)

    async def _connect(self):
        self._drop_connection()
        self.state = "connecting"
        self._queue = asyncio.Queue()
        self._overflow = False
        kw = {"timeout": 10.0}
        kw.update(self._kw)
        settings = {"application_name": "pg_outbox.subscribe"}
        settings.update(self._settings)
        kw.update(self._o.connect_kwargs)
        settings.update(kw.pop("server_settings", {}) or {})
        if self._o.mode != "listen":
            kw.setdefault("statement_cache_size", 0)  # PgBouncer in transaction mode
        try:
            conn = await asyncpg.connect(self._dsn, server_settings=settings, **kw)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if not self._ever_connected:
                raise
            raise _Lost("cannot connect: %s" % e) from None
        self._conn = conn
        self._ever_connected = True
        conn.add_termination_listener(self._on_terminate)
        log.info("connected (backend pid %d)", conn.get_server_pid())

    async def _setup(self):
        o = self._o
        row = await self._q("fetchrow", _core.CAPABILITIES_SQL)
        self._caps = Capabilities.from_row(row)
        caps = self._caps
        if not caps.replay:
            raise OutboxUnavailable("the database has no pg_outbox with outbox.replay(): run CREATE EXTENSION pg_outbox"
                                    " (or update it)")
        if caps.identity:  # [epochs] another outbox than the one the positions belong to?
            self._check_identity(await self._q("fetchval", "SELECT outbox.identity()"))
        elif caps.identity_exists:
            log.warning("this role may not execute outbox.identity(): a re-created outbox cannot be told apart")
        if o.mode == "wait" and not caps.wait:
            raise OutboxUnavailable("the server has no outbox.wait() (pg_outbox 1.2 or later): use LISTEN mode")
        if o.mode == "consumer" and not (caps.next and caps.ack and caps.create_consumer):
            raise OutboxUnavailable("the server has no named consumers (outbox.next, outbox.ack: pg_outbox 1.2 or later)")
        if o.mode == "listen":
            if not caps.worker_pids:
                log.debug("outbox.worker_pids() is %s: every notification is a doorbell",
                          "not executable" if caps.worker_pids_exists else "missing")
            await self._refresh_worker_pids()
            # LISTEN before the replay: whatever commits after this is notified, whatever
            # committed before is in the replay's snapshot; the overlap is dropped by position
            conn = self._conn
            for ch in o.channels:
                await self._guard(conn.add_listener(ch, self._on_notify))
        if o.mode == "consumer":
            if not self._consumer_ready:  # once: a consumer dropped later is an error, not re-created
                await self._ensure_consumer()
                self._consumer_ready = True
            if self._processed is not None and (self._saved is None or self._processed > self._saved):
                await self._save_consumer()
            await self._check_epoch()
            return
        if not self._start_known:
            ep = ", outbox.epoch()" if caps.identity else ", NULL::bigint"
            if o.channels is None:
                row = await self._q("fetchrow", "SELECT outbox.head(), NULL" + ep)
                head, seqs, epoch = row[0], [], row[2]
            else:
                row = await self._q("fetchrow", _core.HEAD_SQL_PG.replace("%s", "$1") + ep, o.channels)
                head, seqs, epoch = row[0], list(row[1]), row[2]
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
            await self._check_epoch()

    async def _refresh_worker_pids(self):
        if not self._caps.worker_pids:
            self._publishers.forget()
            return
        if self._caps.identity:  # and the identity: a re-created extension shows a new worker PID first
            row = await self._q("fetchrow", "SELECT outbox.worker_pids(), outbox.identity()")
            pids = row[0]
            self._check_identity(row[1])
        else:
            pids = await self._q("fetchval", "SELECT outbox.worker_pids()")
        self._publishers.set(pids, time.monotonic())

    async def _trusted(self, pid) -> bool:
        """Is pid a drain worker's? (listen_core's Publishers: see _core.Publishers.)"""
        if pid is None or not self._caps.worker_pids:
            return False
        v = self._publishers.classify(pid, time.monotonic())
        if v == _core.Publishers.REFRESH:
            await self._refresh_worker_pids()
            v = self._publishers.classify(pid, time.monotonic())
        return v == _core.Publishers.TRUSTED

    async def _ensure_consumer(self):
        """Create the named consumer unless it exists (start: after, or now)."""
        o = self._o
        if await self._q("fetchval", "SELECT count(*) FROM outbox.consumers WHERE name = $1", o.consumer):
            return
        start = "now" if o.after in (None, "now") else str(o.after)
        try:
            await self._q("execute", "SELECT outbox.create_consumer($1, $2::text[], $3)", o.consumer, o.channels, start)
        except _Lost as e:
            if e.sqlstate != "42710":  # duplicate_object: created meanwhile (or not visible to us)
                raise
            return
        log.info('created consumer "%s" (start %s)', o.consumer, start)

    # ---- positions ----

    def _state(self) -> _core.State:
        return _core.State(self._processed, self._processed_epoch, self._identity)

    def _save_file(self):
        if self._o.state_file is None or self._processed is None:
            return
        if self._saved is not None and self._processed == self._saved and not self._state_dirty:
            return
        _core.write_state_file(self._o.state_file, self._state(), self._o.fsync)
        self._saved = self._processed
        self._state_dirty = False

    async def _save_file_async(self):
        """_save_file(); with fsync in a thread, so that the event loop (notifications, a
        cancellation) runs meanwhile."""
        if self._o.state_file is None or self._processed is None or (self._processed == self._saved
                                                                     and not self._state_dirty):
            return
        if not self._o.fsync:
            return self._save_file()
        st = self._state()
        await asyncio.get_running_loop().run_in_executor(None, _core.write_state_file, self._o.state_file, st, True)
        self._saved = st.pos
        self._state_dirty = False

    async def _save_consumer(self):
        pos = self._processed
        await self._q("execute", "SELECT outbox.ack($1, $2::bigint)", self._o.consumer, pos)
        self._saved = pos

    async def _done(self, ev: Event):
        """The caller asked for the next event: it has processed ev."""
        self._processed = ev.pos
        if ev.epoch is not None:
            self._processed_epoch = ev.epoch
        if self._o.mode == "consumer":
            await self._save_consumer()
        else:
            await self._save_file_async()

    def _deliver(self, ev: Event):
        # [epochs] a newer epoch is no error by itself: the server said (after_epoch) that the
        # position was preserved, or the tracker sent a newer epoch's envelope through replay
        self._tracker.delivered(ev)

    # ---- the loop ----

    async def _events(self) -> AsyncIterator[Event]:
        attempt = 0
        mode = self._o.mode
        while not self._closed:
            try:
                await self._connect()
                await self._setup()
                if mode == "listen":
                    self.state = "replaying"
                    async with contextlib.aclosing(self._catch_up(None)) as it:
                        async for ev in it:
                            yield ev
                            await self._done(ev)
                    attempt = 0
                    async with contextlib.aclosing(self._live()) as it:
                        async for ev in it:
                            yield ev
                            await self._done(ev)
                else:
                    attempt = 0
                    async with contextlib.aclosing(self._poll()) as it:
                        async for ev in it:
                            yield ev
                            await self._done(ev)
            except _Lost as e:
                if self._closed or self._stopping:
                    return
                self.reconnects += 1
                delay = _core.backoff_delay(attempt, self._o.max_backoff)
                attempt += 1
                log.warning("disconnected at position %d: %s; reconnecting in %.1f s", self._tracker.last_pos, e, delay)
                self._drop_connection()
                self.state = "disconnected"
                await asyncio.sleep(delay)

    async def _catch_up(self, target: Optional[int]) -> AsyncIterator[Event]:
        """Replay from the last delivered position until caught up, and at least up to target."""
        o = self._o
        after_epoch = self._caps.after_epoch
        if after_epoch:  # [epochs] the server raises OB003 if the position was not preserved
            sql = ("SELECT %s FROM outbox.replay($1::bigint, $2::text[], $3::integer, $4::bigint) r"
                   % _core.event_columns(self._caps))
        else:
            sql = ("SELECT %s FROM outbox.replay($1::bigint, $2::text[], $3::integer) r"
                   % _core.event_columns(self._caps))
        first = self._tracker.last_pos
        n_replayed = 0
        while True:
            args = [self._tracker.last_pos, o.channels, o.batch]
            if after_epoch:
                args.append(self._tracker.epoch if _core._is_int(self._tracker.epoch) else None)
            rows = await self._q("fetch", sql, *args)
            self._check_identity(_core.rows_identity(rows))
            for row in rows:
                ev = _core.event_from_row(row)
                if ev.pos <= self._tracker.last_pos:
                    raise _Lost("outbox.replay() returned position %d after %d" % (ev.pos, self._tracker.last_pos))
                self.stats["replayed"] += 1
                self._deliver(ev)
                n_replayed += 1
                yield ev
            if len(rows) < o.batch:
                if target is not None and self._tracker.last_pos < target:
                    raise _Lost("position %d was notified but outbox.replay() does not return it" % target)
                break
        if n_replayed:
            log.debug("replayed %d events after position %d, up to %d", n_replayed, first, self._tracker.last_pos)

    async def _next_items(self) -> list:
        while True:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise _Lost("connection closed")
            if self._queue.empty():
                get = asyncio.ensure_future(self._queue.get())
                try:
                    await asyncio.wait({get}, timeout=self._o.keepalive)
                finally:
                    if not get.done():
                        get.cancel()
                if get.done() and not get.cancelled():
                    first = get.result()
                else:
                    # keepalive: a round trip (and a fresh list of the worker's pids)
                    if self._caps.worker_pids:
                        await self._refresh_worker_pids()
                    else:
                        await self._q("fetchval", "SELECT 1")
                    continue
            else:
                first = self._queue.get_nowait()
            items = [first]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            if any(i is _LOST for i in items):
                raise _Lost("connection closed by the server")
            if self._overflow:
                self._overflow = False
                log.debug("more than %d notifications buffered: replaying instead", MAX_QUEUED)
                return [(None, None, None)]
            return items

    async def _live(self) -> AsyncIterator[Event]:
        log.info("live at position %d", self._tracker.last_pos)
        self.state = "live"
        while True:
            items = await self._next_items()
            doorbell = False
            for pid, channel, payload in items:
                ev = None
                if await self._trusted(pid):
                    try:
                        ev = _core.decode_envelope(channel, payload)
                    except NotAnEnvelope as e:
                        log.warning('the drain worker sent a notification on "%s" that is not an envelope: %s', channel, e)
                if ev is None:
                    self.stats["doorbells"] += 1
                    doorbell = True
                    continue
                if doorbell:  # in order: what the doorbell announced comes first
                    doorbell = False
                    async with contextlib.aclosing(self._catch_up(None)) as it:
                        async for e2 in it:
                            yield e2
                v = self._tracker.classify(ev)
                if v is Verdict.DUPLICATE:
                    self.stats["duplicates"] += 1
                    continue
                if v is Verdict.DELIVER:
                    self.stats["envelopes"] += 1
                    self._deliver(ev)
                    yield ev
                elif v is Verdict.GAP:
                    log.debug("%s at position %d (channel %s seq %d, last seq %s): replaying",
                              "truncated envelope" if ev.truncated else "gap", ev.pos, ev.channel, ev.seq,
                              self._tracker.seqs.get(ev.channel))
                    async with contextlib.aclosing(self._catch_up(ev.pos)) as it:
                        async for e2 in it:
                            yield e2
                else:
                    raise ResyncRequired(
                        "notification of position %d, channel %s seq %d contradicts what was delivered (last position %d,"
                        " channel seq %s): the outbox was reset or restored"
                        % (ev.pos, ev.channel, ev.seq, self._tracker.last_pos, self._tracker.seqs.get(ev.channel)),
                        None, self._tracker.last_pos)
            if doorbell:
                async with contextlib.aclosing(self._catch_up(None)) as it:
                    async for e2 in it:
                        yield e2

    async def _poll(self) -> AsyncIterator[Event]:
        o = self._o
        cols = _core.event_columns(self._caps)
        timeout = datetime.timedelta(seconds=o.wait_timeout)
        qt = o.wait_timeout + o.query_timeout
        self.state = "polling"
        log.info("polling (%s) at position %s", o.mode, self._tracker.last_pos if o.mode == "wait" else "acked")
        while True:
            try:
                if o.mode == "wait":
                    rows = await self._q("fetch", "SELECT %s FROM outbox.wait($1::bigint, $2::text[], $3::interval,"
                                         " $4::integer) r" % cols, self._tracker.last_pos, o.channels, timeout, o.batch,
                                         timeout=qt)
                else:
                    rows = await self._q("fetch", "SELECT %s FROM outbox.next($1, $2::integer, $3::interval) r" % cols,
                                         o.consumer, o.batch, timeout, timeout=qt)
            except _Lost as e:
                if e.sqlstate == "42704":
                    raise ResyncRequired('consumer "%s" does not exist any more (dropped?)' % o.consumer,
                                         e.sqlstate) from None
                raise
            self._check_identity(_core.rows_identity(rows))
            t = self._tracker
            if _core._is_int(t.epoch) and any(_core._is_int(e) and e > t.epoch for e in (_core.parse_epoch(r[7]) for r in rows)):
                await self._check_epoch()  # a newer epoch: was the position preserved? (OB003 if not)
            for row in rows:
                ev = _core.event_from_row(row)
                if ev.pos <= self._tracker.last_pos:
                    self.stats["duplicates"] += 1
                    continue
                self.stats["replayed"] += 1  # delivered already (an ack that was lost with the connection)
                self._deliver(ev)
                yield ev


def subscribe(dsn: str, channels: Optional[Iterable[str]], *, after: Any = None, state_file: Optional[str] = None,
              consumer: Optional[str] = None, **options) -> Subscription:
    """Follow the events of ``channels``: ``async for event in pg_outbox.subscribe(dsn, ["orders"]): ...``

    ``after``: start after this position when there is no state file yet (None or 'now': after
    the latest published position). ``state_file``: keep the last processed position there and
    resume from it. ``consumer``: use the named consumer (outbox.next/ack) instead of LISTEN.
    Options: ``pooled=True`` (outbox.wait() instead of LISTEN), ``batch``, ``max_backoff``,
    ``keepalive``, ``wait_timeout``, ``query_timeout``, ``fsync``, ``connect_kwargs``."""
    return Subscription(dsn, channels, after=after, state_file=state_file, consumer=consumer, **options)
