"""What every engine on a spec's endpoint does with each connection it opens and lends.

On connect it asks the server whether it is a Baton state DB (and closes the
connection if so); while a connection is lent out, the watchdog bounds how
long it may be held, so a silent server costs a transient error, never a
stuck step or request thread. A pooled connection that sat idle is pinged on
checkout under the watchdog too (SQLAlchemy's own pre-ping runs before any event,
unguarded, so engines on spec endpoints use this one instead; see
:mod:`~etl_tasks.connectors.sql.idle_ping` for why only an idle one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.identity import refuse_if_marked
from etl_tasks.boundary.watchdog import WATCHDOG
from etl_tasks.connectors.sql.idle_ping import idle_long, mark_returned
from etl_tasks.errors import EndpointUnavailable

Limit = Callable[[], float]  # seconds a connection may be held from now


def guard_engine(engine: Engine, backend: str, limit: Limit) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        WATCHDOG.watch(dbapi_conn, limit())
        try:
            refuse_if_marked(dbapi_conn, backend)
            if backend != "sqlite":
                dbapi_conn.rollback()  # the check's transaction must not outlive it
        except BaseException:
            WATCHDOG.release(dbapi_conn)
            dbapi_conn.close()
            raise
        WATCHDOG.release(dbapi_conn)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        allowed = limit()
        WATCHDOG.watch(dbapi_conn, allowed)
        if backend == "sqlite" or not idle_long(_record) or _alive(dbapi_conn):
            return
        if WATCHDOG.release(dbapi_conn):  # silent, not gone: a new connection would wait too
            raise EndpointUnavailable(
                "timeout", f"the database stopped answering (cut after {allowed:.0f} s)", allowed
            )
        raise sa_exc.DisconnectionError()  # gone: the pool replaces it with a new connection

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        mark_returned(_record)
        if dbapi_conn is not None:
            WATCHDOG.release(dbapi_conn)

    @event.listens_for(engine, "close")
    def _on_close(dbapi_conn: Any, _record: Any) -> None:
        WATCHDOG.release(dbapi_conn)


def _alive(dbapi_conn: Any) -> bool:
    try:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()
        dbapi_conn.rollback()  # hand the connection over outside any transaction
        return True
    except Exception:  # any driver error: the connection is gone or unusable
        return False
