"""What every engine on a spec's endpoint does with each connection it opens and lends.

On connect it asks the server whether it is a Baton state DB (and closes the
connection if so); while a connection is lent out, the watchdog bounds how
long it may be held, so a silent server costs a transient error, never a
stuck step or request thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from etl_tasks.boundary.identity import refuse_if_marked
from etl_tasks.boundary.watchdog import WATCHDOG

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
        WATCHDOG.watch(dbapi_conn, limit())

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            WATCHDOG.release(dbapi_conn)

    @event.listens_for(engine, "close")
    def _on_close(dbapi_conn: Any, _record: Any) -> None:
        WATCHDOG.release(dbapi_conn)
