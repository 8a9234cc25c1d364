"""pg_outbox: consume pg_outbox events from Python (asyncpg or psycopg 3) and publish them from
SQLAlchemy sessions.

    async for event in pg_outbox.subscribe("postgresql:///app", ["orders"], state_file="orders.state"):
        handle(event)           # its position is saved when the loop asks for the next event

See the "Consumers and replay" chapter of the project's README.md.
"""
from ._core import Event, OutboxError, OutboxUnavailable, ResyncRequired, State, StateFileError, write_state_file
from ._core import read_state_file as read_state

__version__ = "1.2.0"

__all__ = ["Event", "OutboxError", "OutboxUnavailable", "ResyncRequired", "State", "StateFileError", "subscribe",
           "subscribe_sync", "Subscription", "SyncSubscription", "read_state", "read_state_file", "write_state_file"]


def read_state_file(path):
    """The position in a state file (None if there is none); read_state() gives its epoch and
    identity too (a State). StateFileError if it is unreadable or corrupt."""
    st = read_state(path)
    return None if st is None else st.pos


def __getattr__(name):
    # asyncpg and psycopg are each optional: import the one the caller uses
    if name in ("subscribe", "Subscription"):
        from . import _aio
        return getattr(_aio, name)
    if name in ("subscribe_sync", "SyncSubscription"):
        from . import _sync
        return getattr(_sync, name)
    raise AttributeError("module 'pg_outbox' has no attribute %r" % name)
