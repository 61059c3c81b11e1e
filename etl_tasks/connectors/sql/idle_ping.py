"""Ping a pooled connection before lending it only when it sat idle in the pool.

A ping on every checkout costs a round trip per transaction, and under a busy
worker's threads each round trip also waits for the GIL: the state DB's pings alone
took as long as its statements. A connection returned to the pool moments ago was
alive then; one that sat idle may have been cut (a server restarted, a proxy's
idle timeout). So only a connection idle for :data:`PING_IDLE_S` or longer is
pinged. A connection that died within that second fails its first statement
instead, which every caller already treats as a transient error (the step retries,
the task goes back to the queue), and SQLAlchemy then replaces the pool's
connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc

PING_IDLE_S = 1.0  # a connection back in the pool for less than this is lent unpinged
_RETURNED = "baton_returned_at"


def mark_returned(record: Any) -> None:
    """Note when a connection went back to the pool (a ``checkin`` listener's work)."""
    if record is not None:
        record.info[_RETURNED] = time.monotonic()


def idle_long(record: Any) -> bool:
    """Whether the connection sat in the pool long enough to need a ping (a fresh one,
    never returned yet, was just opened: it does not)."""
    returned = None if record is None else record.info.get(_RETURNED)
    return returned is not None and time.monotonic() - returned >= PING_IDLE_S


def ping_idle_connections(engine: Engine, alive: Callable[[Any], bool] | None = None) -> None:
    """Ping connections that sat idle, on checkout; a dead one is replaced by the pool.
    ``alive`` defaults to the dialect's own ping."""

    def dialect_ping(dbapi_conn: Any) -> bool:
        try:
            return bool(engine.dialect.do_ping(dbapi_conn))
        except Exception:  # any driver error: the connection is gone or unusable
            return False

    check = alive or dialect_ping

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        mark_returned(record)

    @event.listens_for(engine, "checkout")
    def _lend(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if idle_long(record) and not check(dbapi_conn):
            raise sa_exc.DisconnectionError()  # the pool opens a new connection instead
