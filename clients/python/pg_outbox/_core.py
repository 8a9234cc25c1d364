"""The logic of a pg_outbox consumer that needs no database connection: the event, envelope
decoding, the gap tracker, the state file, backoff, the SQL it sends and how it reads errors.

A faithful port of src/listen/listen_core.cpp (the reference listener, pg_outbox_listen); the
state file has the same format, so either program can resume from the other's file.
"""
from __future__ import annotations

import dataclasses
import enum
import errno
import fcntl
import json
import os
import random
import re
from typing import Any, Iterable, Optional, Sequence

MAX_CHANNEL_BYTES = 63  # outbox.max_channel_bytes() (src/limits.hpp); test_sync.test_channel_limit_is_the_servers keeps them equal


class OutboxError(Exception):
    """Base class of the errors this package raises itself."""


class ResyncRequired(OutboxError):
    """The consumer's position is outside the history (OB001: older than retention; OB002: ahead
    of the outbox, which was reset or restored), the history it saw diverged (OB003: after a
    failover to an asynchronous standby, a recovery or a restore, the positions from
    ``first_reissued`` on were handed out again to other events), the outbox is another one (its
    identity changed: re-created, or another database), or a notification contradicts what was
    already delivered. The consumer must resynchronise from the source of truth and start again
    from now (and remove its state file).

    ``position``: the consumer's last position; ``epoch``: its epoch; ``first_reissued``: the first
    position that now holds other events (OB003), else None; ``diverged``: True for OB003 and an
    identity change (the events it processed from ``first_reissued`` on were lost)."""

    def __init__(self, message: str, sqlstate: Optional[str] = None, position: Optional[int] = None,
                 first_reissued: Optional[int] = None, epoch: Optional[int] = None, diverged: bool = False):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.position = position
        self.first_reissued = first_reissued
        self.epoch = epoch
        self.diverged = diverged


class OutboxUnavailable(OutboxError):
    """The database has no usable pg_outbox: the extension is missing, too old, or the role may
    not use it (SQLSTATE 42883, 3F000, 42P01, 42501)."""

    def __init__(self, message: str, sqlstate: Optional[str] = None):
        super().__init__(message)
        self.sqlstate = sqlstate


class StateFileError(OutboxError):
    """The state file is unreadable, corrupt, unwritable, its directory is missing, or another
    consumer holds its lock."""


@dataclasses.dataclass(frozen=True)
class Event:
    """One published event, from a notification or from outbox.replay()/wait()/next().

    ``pos`` is gap-free across the database (1, 2, 3, ...), ``seq`` per channel; ``id`` is the
    event's id (not gap-free). ``payload`` is the decoded JSON (None for a NULL payload);
    ``key`` and ``type`` are None when the event has none; ``epoch`` is set when the server
    reports one."""

    pos: int
    seq: int
    id: int
    channel: str
    key: Optional[str] = None
    type: Optional[str] = None
    payload: Any = None
    epoch: Any = None
    truncated: bool = dataclasses.field(default=False, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"pos": self.pos, "channel": self.channel, "seq": self.seq, "id": self.id, "key": self.key,
                "type": self.type, "payload": self.payload, "epoch": self.epoch}


def check_channels(channels: Iterable[str]) -> list:
    """The channels, unique, in order; ValueError for a bad name (empty, over 63 bytes, not str)."""
    if isinstance(channels, (str, bytes)):
        channels = [channels]
    out = []
    for c in channels:
        if not isinstance(c, str):
            raise TypeError("channel names must be str, not %s" % type(c).__name__)
        if c == "":
            raise ValueError("channel name cannot be empty")
        n = len(c.encode("utf-8"))
        if n > MAX_CHANNEL_BYTES:
            raise ValueError('channel name "%s" is too long: %d bytes, the limit is %d' % (c, n, MAX_CHANNEL_BYTES))
        if "\x00" in c:
            raise ValueError("channel name cannot contain a NUL character")
        if c not in out:
            out.append(c)
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class NotAnEnvelope(ValueError):
    pass


def decode_envelope(channel: str, text: str) -> Event:
    """Decode the envelope of a notification on ``channel``. NotAnEnvelope if it is not one."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise NotAnEnvelope("not JSON: %s" % e) from None
    if not isinstance(obj, dict):
        raise NotAnEnvelope("not a JSON object")
    vals = {}
    for name in ("id", "pos", "seq"):
        v = obj.get(name)
        if not _is_int(v) or v < 0:
            raise NotAnEnvelope('no "id", "pos" and "seq" (not an outbox envelope)')
        vals[name] = v
    if vals["pos"] < 1 or vals["seq"] < 1:
        raise NotAnEnvelope('no "id", "pos" and "seq" (not an outbox envelope)')
    for name in ("key", "type"):
        if name in obj and not isinstance(obj[name], str):
            raise NotAnEnvelope('"%s" is not a string' % name)
    truncated = obj.get("truncated") is True
    return Event(pos=vals["pos"], seq=vals["seq"], id=vals["id"], channel=channel, key=obj.get("key"),
                 type=obj.get("type"), payload=obj.get("payload"), epoch=obj.get("epoch"), truncated=truncated)


def parse_epoch(v):
    """An epoch as the server printed it (text): an int when it is one."""
    if v is None:
        return None
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    return v


class Verdict(enum.Enum):
    DUPLICATE = "duplicate"  # pos already delivered: drop
    DELIVER = "deliver"  # the next event of its channel
    GAP = "gap"  # seq jumped, seq unknown, or truncated: replay up to it
    INCONSISTENT = "inconsistent"  # positions or seqs went backwards: the outbox was reset


class Tracker:
    """The last delivered position and the last seq seen per channel (listen_core.cpp's Tracker)."""

    def __init__(self, last_pos: int = 0, epoch: Optional[int] = None):
        self.last_pos = last_pos
        self.seqs: dict = {}
        self.epoch = epoch  # of the event at last_pos (or the epoch started in); None: not known

    def classify(self, e: Event) -> Verdict:
        known = self.seqs.get(e.channel)
        # an event of a newer epoch: the history may have forked at or before last_pos (an event at
        # or below it in a newer epoch proves it); replay with after_epoch lets the server decide
        if _is_int(e.epoch) and _is_int(self.epoch) and e.epoch > self.epoch:
            return Verdict.GAP
        if e.pos <= self.last_pos:
            # at or below the last position: one we delivered (or skipped on purpose, from
            # another channel); its seq cannot be newer than what we saw
            if known is not None and e.seq > known:
                return Verdict.INCONSISTENT
            return Verdict.DUPLICATE
        if known is not None and e.seq <= known:
            return Verdict.INCONSISTENT  # a new position with an old seq: seqs restarted
        if e.truncated or known is None or e.seq != known + 1:
            return Verdict.GAP
        return Verdict.DELIVER

    def delivered(self, e: Event) -> None:
        self.last_pos = e.pos
        self.seqs[e.channel] = e.seq
        if _is_int(e.epoch):
            self.epoch = e.epoch  # an epoch change with the position preserved is no error: adopt it


class Options:
    """The arguments of subscribe()/subscribe_sync(), checked."""

    def __init__(self, dsn, channels, after, state_file, consumer, pooled, batch, max_backoff, keepalive,
                 wait_timeout, query_timeout, fsync, connect_kwargs):
        if consumer is not None:
            if not isinstance(consumer, str) or consumer == "":
                raise ValueError("consumer must be a non-empty name")
            if state_file is not None:
                raise ValueError("a named consumer keeps its position in the database: state_file cannot be used with consumer")
        self.mode = "consumer" if consumer is not None else ("wait" if pooled else "listen")
        if channels is None:
            if self.mode == "listen":
                raise ValueError("channels cannot be None: LISTEN needs channel names (pooled modes accept None for all)")
            self.channels = None
        else:
            self.channels = check_channels(channels)
            if not self.channels:
                raise ValueError("no channel given")
        if after is not None and after != "now":
            if not _is_int(after) or after < 0:
                raise ValueError("after must be a position (0 or more), 'now' or None, not %r" % (after,))
        for name, v, lo, hi in (("batch", batch, 1, 1000000),):
            if not _is_int(v) or not lo <= v <= hi:
                raise ValueError("%s must be %d to %d, not %r" % (name, lo, hi, v))
        for name, v in (("max_backoff", max_backoff), ("keepalive", keepalive), ("wait_timeout", wait_timeout),
                        ("query_timeout", query_timeout)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 86400:
                raise ValueError("%s must be a number of seconds above 0, not %r" % (name, v))
        self.dsn = dsn
        self.after = after
        self.state_file = state_file
        self.consumer = consumer
        self.batch = batch
        self.max_backoff = float(max_backoff)
        self.keepalive = float(keepalive)
        self.wait_timeout = float(wait_timeout)
        self.query_timeout = float(query_timeout)
        self.fsync = fsync
        self.connect_kwargs = dict(connect_kwargs or {})


class Publishers:
    """Who may send envelopes: the PIDs of outbox.worker_pids() (listen_core's Publishers). NOTIFY
    needs no privilege, so an envelope is trusted only from a listed PID; anything else is a
    doorbell. An unknown PID makes the consumer fetch the list again, at most once per
    min_refresh seconds (a flood of forged notifications costs one query per interval); a list
    older than max_age is fetched again before it vouches for a PID (PIDs get reused)."""

    TRUSTED, DOORBELL, REFRESH = "trusted", "doorbell", "refresh"

    def __init__(self, min_refresh: float = 1.0, max_age: float = 30.0):
        self.min_refresh, self.max_age = min_refresh, max_age
        self.known = False
        self.fetched_at = 0.0
        self.pids: frozenset = frozenset()

    def classify(self, pid, now: float) -> str:
        if not self.known:
            return self.REFRESH
        age = max(now - self.fetched_at, 0.0)  # a clock going backwards: as if fetched now
        if pid is not None and pid > 0 and pid in self.pids:
            return self.TRUSTED if age < self.max_age else self.REFRESH
        return self.REFRESH if age >= self.min_refresh else self.DOORBELL

    def set(self, pids, now: float) -> None:
        self.pids = frozenset(pids or ())
        self.fetched_at = now
        self.known = True

    def forget(self) -> None:
        self.known = False
        self.pids = frozenset()


# ---- the state file (the same format as pg_outbox_listen's; README, "The state file") ----
#
#   pg_outbox_listen state 2\n
#   pos N\n          the last position processed (required)
#   epoch E\n        its epoch (optional)
#   identity ID\n    outbox.identity() of the outbox (optional)
#
# in this order, nothing else; version 1 ("pg_outbox_listen state 1\npos N\n") is read as a
# position without epoch and identity. test/unit/data/state/ holds the samples both
# implementations are tested against.

STATE_HEADER_1 = "pg_outbox_listen state 1\n"
STATE_HEADER = "pg_outbox_listen state 2\n"
MAX_STATE_BYTES = 4096
MAX_IDENTITY_BYTES = 128
_IDENTITY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NUMBER_RE = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class State:
    """What a state file holds: ``pos``, its ``epoch`` (None: not known) and the outbox's
    ``identity`` (None: not known); ``version`` of the file read (always 2 when written)."""

    pos: int
    epoch: Optional[int] = None
    identity: Optional[str] = None
    version: int = dataclasses.field(default=2, compare=False)


def valid_identity(identity) -> bool:
    return isinstance(identity, str) and _IDENTITY_RE.fullmatch(identity) is not None


def format_state(state) -> str:
    """The content of a state file (version 2). ``state``: a State, or a position."""
    if _is_int(state):
        state = State(state)
    out = "%spos %d\n" % (STATE_HEADER, state.pos)
    if state.epoch is not None:
        out += "epoch %d\n" % state.epoch
    if state.identity:
        if not valid_identity(state.identity):
            raise ValueError("not an identity: %r" % (state.identity,))
        out += "identity %s\n" % state.identity
    return out


def parse_state(content: str) -> Optional[State]:
    """The State of a whole version 1 or 2 state file; None if it is not one (torn, garbage)."""
    if not isinstance(content, str) or len(content) > MAX_STATE_BYTES:
        return None
    if content.startswith(STATE_HEADER):
        version = 2
    elif content.startswith(STATE_HEADER_1):
        version = 1
    else:
        return None
    rest = content[len(STATE_HEADER):]
    if not rest.endswith("\n"):
        return None  # the last line is incomplete (torn write)
    names = ("pos", "epoch", "identity")
    nxt = 0
    vals: dict = {}
    for line in rest[:-1].split("\n"):
        name, sep, value = line.partition(" ")
        if not sep or name not in names[nxt:]:
            return None  # not "NAME VALUE", or an unknown, repeated or misplaced line
        i = names.index(name)
        if (i > 0 and "pos" not in vals) or (version == 1 and i > 0):
            return None
        nxt = i + 1
        if name == "identity":
            if not valid_identity(value):
                return None
            vals[name] = value
            continue
        if not _NUMBER_RE.fullmatch(value):
            return None
        v = int(value)
        if v >= 2**63:
            return None
        vals[name] = v
    if "pos" not in vals:
        return None
    return State(vals["pos"], vals.get("epoch"), vals.get("identity"), version)


def state_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def read_state_file(path: str) -> Optional[State]:
    """The State in the state file, None if it does not exist; StateFileError if the file is
    unreadable or corrupt, or its directory is missing."""
    d = state_dir(path)
    if not os.path.isdir(d):
        raise StateFileError('the directory "%s" of state file "%s" does not exist (create it first)' % (d, path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError('cannot read state file "%s": %s' % (path, e.strerror)) from None
    try:
        st = parse_state(raw.decode("ascii"))
    except UnicodeDecodeError:
        st = None
    if st is None:
        raise StateFileError('state file "%s" is not a pg_outbox state file (or is corrupt)' % path)
    return st


def write_state_file(path: str, state, do_fsync: bool = True) -> None:
    """Replace the state file atomically: write PATH.tmp, fsync it, rename it over PATH, fsync the
    directory. ``state``: a State (or a position). StateFileError on failure (the old file is
    then still intact)."""
    tmp = path + ".tmp"
    data = format_state(state).encode("ascii")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise StateFileError('cannot create "%s": %s' % (tmp, e.strerror)) from None
    try:
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
            if do_fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StateFileError('cannot write state file "%s": %s' % (path, e.strerror)) from None
    if do_fsync:
        try:
            dfd = os.open(state_dir(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)  # best effort: the rename is what makes the file consistent
            finally:
                os.close(dfd)
        except OSError:
            pass


class StateLock:
    """PATH.lock, held with flock for as long as the consumer runs (pg_outbox_listen takes the same
    lock, so two consumers never share a state file)."""

    def __init__(self, state_file: str):
        self.path = state_file + ".lock"
        self.fd = None

    def acquire(self) -> None:
        d = state_dir(self.path)
        if not os.path.isdir(d):
            raise StateFileError('the directory "%s" of state file "%s" does not exist (create it first)'
                                 % (d, self.path[:-5]))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StateFileError('cannot lock "%s": %s' % (self.path, e.strerror)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            why = "another consumer uses this state file" if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else e.strerror
            raise StateFileError('cannot lock "%s": %s' % (self.path, why)) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def backoff_delay(attempt: int, max_backoff: float, jitter: Optional[float] = None) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 = the first after a loss): 0, then 0.1 s
    doubling up to max_backoff, spread by +-20 %."""
    if attempt <= 0:
        return 0.0
    if jitter is None:
        jitter = random.random()
    d = min(0.1 * 2.0 ** min(attempt - 1, 30), max_backoff)
    d *= 0.8 + 0.4 * min(max(jitter, 0.0), 1.0)
    return min(d, max_backoff)


# ---- SQL ----

# What the server has. One query, run after every connect (an ALTER EXTENSION UPDATE may have
# happened while the consumer was away).
CAPABILITIES_SQL = """
SELECT coalesce(to_regprocedure('outbox.replay(bigint,text[],integer,bigint)'), to_regprocedure('outbox.replay(bigint,text[],integer)')) IS NOT NULL AS replay,
       coalesce(has_function_privilege(to_regprocedure('outbox.worker_pids()'), 'EXECUTE'), false) AS worker_pids,
       to_regprocedure('outbox.worker_pids()') IS NOT NULL AS worker_pids_exists,
       coalesce((SELECT 'epoch' = ANY (p.proargnames) FROM pg_catalog.pg_proc p
                  WHERE p.oid = coalesce(to_regprocedure('outbox.replay(bigint,text[],integer,bigint)'), to_regprocedure('outbox.replay(bigint,text[],integer)'))), false) AS epoch_column,
       coalesce((SELECT 'envelope' = ANY (p.proargnames) FROM pg_catalog.pg_proc p
                  WHERE p.oid = coalesce(to_regprocedure('outbox.replay(bigint,text[],integer,bigint)'), to_regprocedure('outbox.replay(bigint,text[],integer)'))), false) AS envelope_column,
       to_regprocedure('outbox.wait(bigint,text[],interval,integer)') IS NOT NULL AS wait,
       to_regprocedure('outbox.next(text,integer,interval)') IS NOT NULL AS next,
       to_regprocedure('outbox.ack(text,bigint)') IS NOT NULL AS ack,
       to_regprocedure('outbox.create_consumer(text,text[],text)') IS NOT NULL AS create_consumer,
       to_regprocedure('outbox.replay(bigint,text[],integer,bigint)') IS NOT NULL AS after_epoch,
       to_regprocedure('outbox.identity()') IS NOT NULL AS identity_exists,
       coalesce(has_function_privilege(to_regprocedure('outbox.identity()'), 'EXECUTE'), false) AS identity
"""


@dataclasses.dataclass
class Capabilities:
    replay: bool = False
    worker_pids: bool = False
    worker_pids_exists: bool = False
    epoch_column: bool = False
    envelope_column: bool = False
    wait: bool = False
    next: bool = False
    ack: bool = False
    create_consumer: bool = False
    after_epoch: bool = False  # replay(..., after_epoch) (1.2 and later)
    identity_exists: bool = False
    identity: bool = False  # outbox.identity() may be called

    @classmethod
    def from_row(cls, row) -> "Capabilities":
        return cls(**{f.name: bool(row[f.name]) for f in dataclasses.fields(cls)})


def event_columns(caps: Capabilities) -> str:
    """The select list for rows of replay()/wait()/next() (all return replay's columns); the
    9th column is outbox.identity() (an InitPlan: once per query), or NULL."""
    cols = "r.pos, r.seq, r.id, r.channel, r.key, r.type, r.payload::text"
    if caps.epoch_column:
        cols += ", r.epoch::text"
    elif caps.envelope_column:
        cols += ", r.envelope->>'epoch'"
    else:
        cols += ", NULL::text"
    cols += ", (SELECT outbox.identity())" if caps.identity else ", NULL::text"
    return cols


def rows_identity(rows) -> Optional[str]:
    """The identity column of a batch of event_columns() rows (None: no rows, or not known)."""
    return rows[0][8] if rows else None


def identity_changed(saved: Optional[str], server: Optional[str]) -> bool:
    return bool(saved) and bool(server) and saved != server


def identity_message(saved: str, server: str, pos: int) -> str:
    return ("the outbox identity changed from %s to %s (after position %d): the extension was re-created, or this is"
            " another database; every position from 1 on may belong to other events" % (saved, server, pos))


# OB003: the first reissued position (outbox.epochs is readable by outbox_reader)
FIRST_REISSUED_SQL = ("SELECT e.first_pos, e.epoch, e.reason FROM outbox.epochs e WHERE e.epoch > %s::bigint"
                      " ORDER BY e.epoch LIMIT 1")
# In the pooled modes (wait() and next() take no after_epoch): was (pos, epoch) preserved? OB003 if not.
EPOCH_CHECK_SQL = "SELECT count(*) FROM outbox.replay(%s::bigint, %s::text[], 1, %s::bigint)"


def diverged_message(pos: int, epoch, first_row, server_msg: str) -> tuple:
    """(message, first reissued position or None) for OB003; first_row: a row of FIRST_REISSUED_SQL."""
    msg = "position %d%s was not preserved" % (pos, " of epoch %s" % epoch if epoch is not None else "")
    first = None
    if first_row is not None and first_row[0] is not None and int(first_row[0]) <= pos:
        first = int(first_row[0])
        msg += (": positions from %d on were handed out again in epoch %s (%s); the events processed at positions %d"
                " to %d were lost and these positions now hold other events" % (first, first_row[1], first_row[2],
                                                                               first, pos))
    return msg + " (server: %s)" % server_msg, first


def event_from_row(row) -> Event:
    """A row of event_columns(): pos, seq, id, channel, key, type, payload text, epoch text."""
    payload = row[6]
    return Event(pos=int(row[0]), seq=int(row[1]), id=int(row[2]), channel=row[3], key=row[4], type=row[5],
                 payload=json.loads(payload) if payload is not None else None, epoch=parse_epoch(row[7]))


HEAD_SQL_PG = ("SELECT outbox.head(), array(SELECT outbox.head(u.c) FROM unnest(%s::text[]) WITH ORDINALITY"
               " AS u(c, n) ORDER BY u.n)")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def classify_sqlstate(sqlstate: Optional[str]) -> str:
    """What a consumer does with an error of this SQLSTATE: 'resync', 'unavailable', 'fatal'
    (retrying cannot help: raised as OutboxError) or 'retry' (reconnect, as pg_outbox_listen)."""
    if sqlstate in ("OB001", "OB002"):
        return "resync"
    if sqlstate == "OB003":
        return "diverged"
    if sqlstate in ("42883", "3F000", "42P01", "42501"):
        return "unavailable"
    if sqlstate and sqlstate[:2] in ("0A", "22", "42"):
        # e.g. 0A000: wait()/next() in a REPEATABLE READ default_transaction_isolation; 22023: an
        # argument the server refuses; 42xxx: a changed function signature
        return "fatal"
    return "retry"


# ---- libpq connection strings for asyncpg (which takes URIs and keywords only) ----

_KW_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


def parse_conninfo(s: str) -> dict:
    """Parse a libpq key=value connection string (single quotes, backslash escapes)."""
    out = {}
    i = 0
    n = len(s)
    while True:
        while i < n and s[i].isspace():
            i += 1
        if i >= n:
            return out
        m = _KW_RE.match(s, i)
        if not m:
            raise ValueError('invalid connection string "%s": missing "=" after "%s"' % (s, s[i:].split()[0]))
        key = m.group(1)
        i = m.end()
        val = []
        if i < n and s[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise ValueError('invalid connection string "%s": unterminated quoted string' % s)
                c = s[i]
                if c == "\\" and i + 1 < n:
                    val.append(s[i + 1])
                    i += 2
                elif c == "'":
                    i += 1
                    break
                else:
                    val.append(c)
                    i += 1
        else:
            while i < n and not s[i].isspace():
                if s[i] == "\\" and i + 1 < n:
                    val.append(s[i + 1])
                    i += 2
                else:
                    val.append(s[i])
                    i += 1
        out[key] = "".join(val)


_ASYNCPG_KEYS = {"host": "host", "hostaddr": "host", "port": "port", "dbname": "database", "user": "user",
                 "password": "password", "passfile": "passfile", "sslmode": "ssl",
                 "target_session_attrs": "target_session_attrs"}
_IGNORED_KEYS = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "client_encoding"}


def asyncpg_connect_args(dsn: str) -> tuple:
    """(dsn or None, keyword arguments, server settings) for asyncpg.connect from a libpq URI or
    key=value string."""
    if re.match(r"^postgres(ql)?://", dsn):
        return dsn, {}, {}
    kw: dict = {}
    settings: dict = {}
    for k, v in parse_conninfo(dsn).items():
        if k in _ASYNCPG_KEYS:
            if k == "port":
                if not re.fullmatch(r"[0-9]+", v):
                    raise ValueError('invalid port "%s" in connection string' % v)
                kw["port"] = int(v)
            else:
                kw[_ASYNCPG_KEYS[k]] = v
        elif k == "connect_timeout":
            kw["timeout"] = float(v)
        elif k == "application_name":
            settings["application_name"] = v
        elif k == "options":
            for opt in re.findall(r"-c\s*([A-Za-z_.]+)=(\S+)", v):
                settings[opt[0]] = opt[1]
        elif k in _IGNORED_KEYS:
            pass
        else:
            raise ValueError('connection string keyword "%s" is not supported with asyncpg: use a postgresql:// URI' % k)
    return None, kw, settings


def pg_text_array(items: Sequence[str]) -> str:
    """A PostgreSQL text[] literal: {"a","b\\"c"} (for drivers that send text)."""
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"
