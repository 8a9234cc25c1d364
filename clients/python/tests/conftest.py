"""A real, throwaway PostgreSQL 15 cluster with pg_outbox preloaded, for the client's tests.

PG_OUTBOX_BINDIR (set by test/run_tests.sh) names the bin directory of a private copy of the
PostgreSQL installation that has this tree's build installed; without it the fixture makes one
itself, as test/run_tests.sh does (copy /usr/lib/postgresql/15 and /usr/share/postgresql/15 into a
temporary folder, `make install DESTDIR=` into it). The server listens on a unix socket in a
temporary folder only. As root, the server runs as user postgres (runuser).
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(CLIENT))
sys.path.insert(0, CLIENT)  # test the tree, not an installed copy

PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"

psycopg = pytest.importorskip("psycopg")


def deadline_loop(seconds, what, interval=0.05):
    """Yields until the caller breaks; fails the test after `seconds`."""
    end = time.monotonic() + seconds
    while True:
        yield
        if time.monotonic() > end:
            pytest.fail("timed out after %.0f s waiting for %s" % (seconds, what))
        time.sleep(interval)


class Cluster:
    def __init__(self, base, bindir):
        self.base = base
        self.bindir = bindir
        self.data = os.path.join(base, "data")
        self.sock = base
        self.port = 5432
        self.log = os.path.join(base, "server.log")
        self.run = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._dbs = itertools.count(1)

    def _cmd(self, *args, check=True, **kw):
        return subprocess.run(self.run + list(args), check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=kw.pop("timeout", 120), **kw)

    def init(self):
        self._cmd(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                  "--encoding=UTF8", "--no-locale")
        conf = """
shared_preload_libraries = 'pg_outbox'
listen_addresses = ''
unix_socket_directories = '%s'
port = %d
max_connections = 120
max_worker_processes = 40
fsync = off
log_line_prefix = '%%m [%%p] %%a '
""" % (self.sock, self.port)
        self._cmd("sh", "-c", "cat >> '%s/postgresql.conf'" % self.data, input=conf)

    def start(self):
        self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def restart(self, mode="fast"):
        self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-m", mode, "-w", "-t", "60",
                  "restart")

    def conninfo(self, db="postgres", user="postgres"):
        return "host=%s port=%d dbname=%s user=%s" % (self.sock, self.port, db, user)

    def url(self, db="postgres", user="postgres"):
        return "postgresql://%s@/%s?host=%s&port=%d" % (user, db, self.sock, self.port)

    def connect(self, db="postgres", user="postgres"):
        return psycopg.connect(self.conninfo(db, user), autocommit=True, connect_timeout=10)

    def sql(self, query, params=None, db="postgres", user="postgres"):
        """Run one statement in a fresh connection; the rows (empty list for none)."""
        for attempt in range(200):  # the server may be restarting
            try:
                with self.connect(db, user) as c:
                    cur = c.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == 199:
                    raise
                time.sleep(0.1)

    def wait_for(self, query, params=None, db="postgres", seconds=60, what=None):
        for _ in deadline_loop(seconds, what or query):
            try:
                rows = self.sql(query, params, db)
            except psycopg.Error:
                rows = None
            if rows and rows[0][0]:
                return rows[0][0]

    def worker_pid(self, db):
        return self.wait_for("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_outbox drain' AND datname = %s",
                             (db,), what="the drain worker of %s" % db)

    def new_db(self):
        name = "t%d" % next(self._dbs)
        self.sql('CREATE DATABASE "%s"' % name)
        self.sql("CREATE EXTENSION pg_outbox", db=name)
        self.worker_pid(name)
        return name


def _private_install(tmp):
    """The bin directory of a private PostgreSQL installation with pg_outbox installed."""
    pkglib = subprocess.check_output([PG_CONFIG, "--pkglibdir"], text=True).strip()
    share = subprocess.check_output([PG_CONFIG, "--sharedir"], text=True).strip()
    prefix = os.path.join(tmp, "install")
    os.makedirs(os.path.join(prefix, "usr/lib/postgresql"))
    os.makedirs(os.path.join(prefix, "usr/share/postgresql"))
    shutil.copytree(os.path.dirname(pkglib), os.path.join(prefix, "usr/lib/postgresql/15"), symlinks=True)
    shutil.copytree(share, os.path.join(prefix, "usr/share/postgresql/15"), symlinks=True)
    subprocess.run(["make", "-s", "-C", REPO, "install", "PG_CONFIG=" + PG_CONFIG, "DESTDIR=" + prefix], check=True,
                   stdout=subprocess.DEVNULL, timeout=900)
    return os.path.join(prefix, "usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def cluster():
    tmp = tempfile.mkdtemp(prefix="pg_outbox_py.")
    os.chmod(tmp, 0o755)
    bindir = os.environ.get("PG_OUTBOX_BINDIR") or _private_install(tmp)
    base = os.path.join(tmp, "pg")
    os.mkdir(base)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    c = Cluster(base, bindir)
    c.init()
    c.start()
    yield c
    c.stop("immediate")
    if os.path.exists(c.log) and os.environ.get("PG_OUTBOX_KEEP_LOG"):
        shutil.copy(c.log, os.environ["PG_OUTBOX_KEEP_LOG"])
    shutil.rmtree(tmp, ignore_errors=True)


def _ensure_roles(cluster):
    if not cluster.sql("SELECT 1 FROM pg_roles WHERE rolname = 'reader'"):
        cluster.sql("CREATE ROLE reader LOGIN IN ROLE outbox_reader")
    if not cluster.sql("SELECT 1 FROM pg_roles WHERE rolname = 'mallory'"):
        cluster.sql("CREATE ROLE mallory LOGIN")  # no pg_outbox role at all


class DB:
    """One database with pg_outbox, for one test."""

    def __init__(self, cluster, name, trust):
        self.cluster = cluster
        self.name = name
        self.trust = trust  # "envelopes": outbox.worker_pids() usable; "doorbells": not

    def sql(self, query, params=None, user="postgres"):
        return self.cluster.sql(query, params, db=self.name, user=user)

    @property
    def url(self):
        return self.cluster.url(self.name, "reader")

    @property
    def conninfo(self):
        return self.cluster.conninfo(self.name, "reader")

    def publish(self, n, channel="orders", start=0, size=None):
        pad = ", 'pad', repeat('x', %d)" % size if size else ""
        self.sql("SELECT outbox.publish(%%s, jsonb_build_object('n', g%s), key => 'k' || g, type => 't')"
                 " FROM generate_series(%%s::int, %%s::int) g" % pad, (channel, start + 1, start + n))

    def head(self):
        return self.sql("SELECT outbox.head()")[0][0]

    def wait_published(self, pos, seconds=60):
        self.cluster.wait_for("SELECT outbox.head() >= %s", (pos,), db=self.name, seconds=seconds,
                              what="position %d to be published" % pos)

    def history(self, channels=None):
        rows = self.sql("SELECT pos, seq, id, channel, key, type, payload FROM outbox.history"
                        " WHERE %s::text[] IS NULL OR channel = ANY(%s::text[]) ORDER BY pos", (channels, channels))
        return [tuple(r) for r in rows]

    def subscriber_pids(self):
        return [r[0] for r in self.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name"
                                       " LIKE 'pg_outbox.subscribe%%' AND pid <> pg_backend_pid()", (self.name,))]

    def kill_subscribers(self):
        return self.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND"
                        " application_name LIKE 'pg_outbox.subscribe%%' AND pid <> pg_backend_pid()",
                        (self.name,))[0][0]

    def kill_worker(self):
        pid = self.cluster.worker_pid(self.name)
        os.kill(pid, signal.SIGKILL)
        return pid


WORKER_PIDS_STANDIN = """
CREATE FUNCTION outbox.worker_pids() RETURNS integer[] LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT coalesce(array_agg(pid ORDER BY pid), '{}') FROM pg_stat_activity
           WHERE backend_type = 'pg_outbox drain' AND datname = current_database() $$;
REVOKE ALL ON FUNCTION outbox.worker_pids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outbox.worker_pids() TO outbox_reader;
"""


def make_db(cluster, trust):
    name = cluster.new_db()
    _ensure_roles(cluster)
    db = DB(cluster, name, trust)
    have = db.sql("SELECT to_regprocedure('outbox.worker_pids()') IS NOT NULL")[0][0]
    if trust == "envelopes" and not have:
        # the server predates outbox.worker_pids() (contracts.md): a stand-in with its meaning,
        # so that the envelope path is tested too
        with cluster.connect(name) as c:
            c.execute(WORKER_PIDS_STANDIN)
    elif trust == "doorbells" and have:
        db.sql("REVOKE EXECUTE ON FUNCTION outbox.worker_pids() FROM PUBLIC, outbox_reader, outbox_consumer")
    return db


def drop_db(cluster, db):
    try:
        cluster.sql('DROP DATABASE "%s" WITH (FORCE)' % db.name)
    except psycopg.Error:
        pass


@pytest.fixture(params=["envelopes", "doorbells"])
def db(request, cluster):
    """A fresh database with pg_outbox; parametrized over how notifications are trusted."""
    d = make_db(cluster, request.param)
    yield d
    drop_db(cluster, d)


@pytest.fixture
def edb(cluster):
    """A fresh database with pg_outbox whose worker's envelopes are trusted."""
    d = make_db(cluster, "envelopes")
    yield d
    drop_db(cluster, d)
