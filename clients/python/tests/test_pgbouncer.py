"""The pooled modes through a real PgBouncer in transaction mode (Debian's pgbouncer), while
producers publish and the drain worker is SIGKILLed: every event once, in order."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

import pg_outbox
from conftest import deadline_loop
from test_pooled import need, run
from test_subscribe import Producers, assert_exactly, collect as acollect
from test_sync import collect as scollect

PGBOUNCER = next((p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
PORT = 6432


@pytest.fixture(scope="module")
def bouncer(cluster):
    if not PGBOUNCER:
        print("SKIP: pgbouncer is not installed (test/setup.sh installs Debian's package)")
        pytest.skip("pgbouncer is not installed (test/setup.sh installs Debian's package)")
    d = tempfile.mkdtemp(prefix="pg_outbox_bouncer.")  # reachable by the postgres user (not under pytest's 0700)
    os.chmod(d, 0o755)
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write('"reader" ""\n"postgres" ""\n')
    with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
        f.write("""[databases]
* = host=%s port=%d
[pgbouncer]
listen_addr =
listen_port = %d
unix_socket_dir = %s
auth_type = trust
auth_file = %s/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
server_login_retry = 1
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
""" % (cluster.sock, cluster.port, PORT, d, d, d, d))
    run_as = []
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        shutil.chown(d, "postgres")
        for n in os.listdir(d):
            shutil.chown(os.path.join(d, n), "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    out = open(os.path.join(d, "pgbouncer.out"), "w")
    p = subprocess.Popen(run_as + [PGBOUNCER, os.path.join(d, "pgbouncer.ini")], stdout=out, stderr=subprocess.STDOUT)
    import psycopg
    for _ in deadline_loop(30, "pgbouncer to accept connections", interval=0.1):
        try:
            psycopg.connect("host=%s port=%d dbname=postgres user=postgres" % (d, PORT), connect_timeout=2).close()
            break
        except psycopg.Error:
            if p.poll() is not None:
                pytest.fail("pgbouncer exited: %s" % open(os.path.join(d, "pgbouncer.out")).read()[-2000:])
    yield d
    p.terminate()
    p.wait(30)
    out.close()
    shutil.rmtree(d, ignore_errors=True)


def via(bouncer, db):
    return "host=%s port=%d dbname=%s user=reader" % (bouncer, PORT, db.name)


@pytest.mark.parametrize("mode", ["wait-asyncpg", "consumer-psycopg", "consumer-asyncpg", "wait-psycopg"])
def test_through_pgbouncer(bouncer, edb, tmp_path, mode):
    need(edb, "consumer" if mode.startswith("consumer") else "wait")
    total = 1500
    dsn = via(bouncer, edb)
    if mode.startswith("wait"):
        opts = dict(pooled=True, after=0, state_file=str(tmp_path / "b.state"))
    else:
        opts = dict(consumer="via_bouncer", after=0)
    sync = mode.endswith("psycopg")
    api = pg_outbox.subscribe_sync if sync else pg_outbox.subscribe
    make = lambda: api(dsn, ["orders"], wait_timeout=2, max_backoff=0.3, **opts)  # noqa: E731
    prod = Producers(edb, total - 50).start()
    stop = threading.Event()

    def disturb():
        for _ in range(2):
            if stop.wait(0.7):
                return
            edb.kill_worker()
            edb.cluster.worker_pid(edb.name)
        prod.join()
        edb.publish(50, start=total)

    d = threading.Thread(target=disturb, daemon=True)
    d.start()
    try:
        if sync:
            with make() as sub:
                out = scollect(sub, total, timeout=180)
        else:
            async def go():
                async with make() as sub:
                    return await acollect(sub, total, timeout=180)
            out = run(go())
    finally:
        stop.set()
        d.join(120)
    assert_exactly(out, edb.history())
