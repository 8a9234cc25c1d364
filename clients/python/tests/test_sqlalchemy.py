"""pg_outbox.sqlalchemy.publish(): the event commits and rolls back with the session."""
from __future__ import annotations

import asyncio

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import Column, Integer, String, text  # noqa: E402
from sqlalchemy.orm import Session, declarative_base  # noqa: E402

from pg_outbox.sqlalchemy import apublish, publish  # noqa: E402

Base = declarative_base()


class Order(Base):
    __tablename__ = "orders"
    id = Column(Integer, primary_key=True)
    customer = Column(String)


def sync_url(db):
    for driver in ("psycopg", "psycopg2"):  # SQLAlchemy 2.0 has psycopg 3; 1.4 (Debian 12) psycopg2
        try:
            return sqlalchemy.create_engine("postgresql+%s://postgres@/%s?host=%s&port=%d"
                                            % (driver, db.name, db.cluster.sock, db.cluster.port))
        except Exception:
            continue
    pytest.skip("no synchronous PostgreSQL driver for SQLAlchemy (python3-psycopg2)")


def events(db):
    """Every stored event, pending or published, in id order."""
    return [tuple(r) for r in db.sql(
        "SELECT channel, key, type, payload FROM (SELECT id, channel, key, type, payload FROM outbox.pending"
        " UNION ALL SELECT id, channel, key, type, payload FROM outbox.history) e ORDER BY id")]


def test_publish_commits_and_rolls_back_with_the_session(edb):
    engine = sync_url(edb)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(Order(id=1, customer="ada"))
        eid = publish(s, "orders", {"order_id": 1, "note": "é"}, key="1", type="created")
        assert isinstance(eid, int)
    with Session(engine) as s:
        with s.begin():
            s.add(Order(id=2, customer="bob"))
            publish(s, "orders", {"order_id": 2}, key="2", type="created")
            s.rollback()
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        with Session(engine) as s, s.begin():
            publish(s, "orders", {"order_id": 3}, key="3")
            s.add(Order(id=1, customer="dup"))  # fails at flush/commit: the event goes with it
    with Session(engine) as s, s.begin():
        publish(s, "plain")  # no payload, key or type
        publish(s, "text", "just a string")
    with engine.begin() as conn:  # a Connection works too
        publish(conn, "orders", [1, 2], type="list")
    rows = events(edb)
    assert rows == [("orders", "1", "created", {"order_id": 1, "note": "é"}), ("plain", None, None, None),
                    ("text", None, None, "just a string"), ("orders", None, "list", [1, 2])]
    assert edb.sql("SELECT count(*) FROM orders")[0][0] == 1
    for bad in ("", "x" * 64):
        with pytest.raises(ValueError), Session(engine) as s:
            publish(s, bad, {})
    engine.dispose()


def test_apublish_asyncpg(edb):
    pytest.importorskip("asyncpg")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def go():
        engine = create_async_engine("postgresql+asyncpg://postgres@/%s?host=%s&port=%d"
                                     % (edb.name, edb.cluster.sock, edb.cluster.port))
        async with AsyncSession(engine) as s:
            async with s.begin():
                await apublish(s, "orders", {"a": 1}, key="k", type="t")
            async with s.begin():
                await apublish(s, "orders", {"a": 2})
                await s.rollback()
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await apublish(conn, "orders", {"a": 3})
        await engine.dispose()

    asyncio.run(asyncio.wait_for(go(), 60))
    assert [r[3] for r in events(edb)] == [{"a": 1}, {"a": 3}]
