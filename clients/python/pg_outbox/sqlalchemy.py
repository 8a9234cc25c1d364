"""Publishing pg_outbox events from SQLAlchemy, in the caller's transaction.

    from pg_outbox.sqlalchemy import publish
    with Session(engine) as session, session.begin():
        session.add(order)
        publish(session, "orders", {"order_id": order.id}, key=str(order.id), type="created")
    # committed together: the event exists exactly when the order does

Works with a Session, a Connection (SQLAlchemy 1.4 and 2.0, any PostgreSQL driver) and, with
``apublish``, an AsyncSession or AsyncConnection (asyncpg).
"""
from __future__ import annotations

import json
from typing import Any, Optional

from sqlalchemy import text

from ._core import check_channels

_SQL = text("SELECT outbox.publish(channel => CAST(:channel AS text), payload => CAST(:payload AS jsonb),"
            " key => CAST(:key AS text), type => CAST(:type AS text))")


def _params(channel: str, payload: Any, key: Optional[str], type: Optional[str]) -> dict:
    check_channels([channel])
    for name, v in (("key", key), ("type", type)):
        if v is not None and not isinstance(v, str):
            raise TypeError("%s must be str or None, not %s" % (name, type_name(v)))
    # payload: any JSON-serialisable value (a str becomes a JSON string); None: no payload
    return {"channel": channel, "payload": None if payload is None else json.dumps(payload), "key": key, "type": type}


def type_name(v) -> str:
    return v.__class__.__name__


def publish(session, channel: str, payload: Any = None, key: Optional[str] = None, type: Optional[str] = None) -> int:
    """Store an event with outbox.publish() in the session's current transaction (begun if
    needed); it is published after that transaction commits, and never if it rolls back.
    Returns the event id."""
    return session.execute(_SQL, _params(channel, payload, key, type)).scalar_one()


async def apublish(session, channel: str, payload: Any = None, key: Optional[str] = None,
                   type: Optional[str] = None) -> int:
    """publish() for an AsyncSession or AsyncConnection."""
    result = await session.execute(_SQL, _params(channel, payload, key, type))
    return result.scalar_one()
