"""SQLAlchemy engines for the state DB, sources and targets.

One place decides the driver for each URL (a plain ``postgresql://`` means
psycopg2, ``mysql://`` means PyMySQL), how SQLite is made safe for several
processes (WAL, a busy timeout, write transactions that take the lock up
front), and how big connection pools may grow.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from etl_tasks.boundary.guard import Limit, guard_engine
from etl_tasks.boundary.sql_urls import SqlEndpoint, Timeouts
from etl_tasks.connectors.sql.idle_ping import ping_idle_connections

log = logging.getLogger(__name__)

_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "baton_read_only"  # execution option: this connection's transactions only read


def normalize_url(url: str | URL) -> URL:
    """Pick Baton's driver for a URL that names none."""
    u = make_url(url)
    if u.drivername in _DRIVERS:
        u = u.set(drivername=_DRIVERS[u.drivername])
    return u


_SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "token", "sslpassword", "key")


def redact(url: str) -> str:
    """A URL safe to log or show: the password replaced, in the userinfo and the query."""
    try:
        u = normalize_url(url)
    except Exception:  # an unparsable URL is shown by its scheme only
        return url.split(":", 1)[0] + "://…"
    query = {
        k: ("***" if any(p in k.lower() for p in _SECRET_PARAMS) else v) for k, v in u.query.items()
    }
    return u.set(query=query).render_as_string(hide_password=True)


def create_sql_engine(
    url: str | URL,
    *,
    pool_size: int = 2,
    connect_timeout_s: float | None = None,
    connect_args: dict[str, Any] | None = None,
    pre_ping: bool = True,
) -> Engine:
    """An engine with bounded pools; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.
    ``pre_ping``: a connection that sat idle is pinged before it is lent
    (:mod:`~etl_tasks.connectors.sql.idle_ping`)."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict[str, Any] = {}
    connect_args = dict(connect_args or {})
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
        connect_args["check_same_thread"] = False
        kwargs["poolclass"] = NullPool
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
        if connect_timeout_s is not None:
            connect_args.setdefault("connect_timeout", max(1, int(connect_timeout_s)))
    if backend == "postgresql":
        connect_args.setdefault("application_name", "baton")
    engine = create_engine(u, connect_args=connect_args, **kwargs)
    if backend == "sqlite":
        _make_sqlite_safe(engine)
    elif pre_ping:
        ping_idle_connections(engine)
    return engine


def _make_sqlite_safe(engine: Engine) -> None:
    """Several processes share one SQLite file: WAL, wait on locks, take write locks up front."""

    @event.listens_for(engine, "do_connect")
    def _whole_file(*_: Any) -> None:
        if engine.url.database not in (None, "", ":memory:"):
            create_sqlite_file(str(engine.url.database))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_sqlite_file(path: str) -> None:
    """Make a missing SQLite file appear whole, header written, never empty: SQLite itself
    creates it empty and writes the header later, and a worker checking the endpoint in
    between would refuse it as "not a SQLite database". The file is made under another name
    and linked into place, so an existing file is never replaced."""
    if os.path.exists(path):
        return
    spare = f"{path}.{os.getpid()}.{threading.get_ident()}.new"
    try:
        conn = sqlite3.connect(spare)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # writes the header
        finally:
            conn.close()
        os.link(spare, path)
    except FileExistsError:
        pass  # made meanwhile by another connection
    except (OSError, sqlite3.Error):
        log.warning("could not make %s beforehand; SQLite will create it", path)
    finally:
        for leftover in (spare, f"{spare}-wal", f"{spare}-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def create_endpoint_engine(
    endpoint: SqlEndpoint, timeouts: Timeouts, limit: Limit, *, pool_size: int = 2
) -> Engine:
    """An engine on a spec's (checked) endpoint: pinned address, no ambient credentials,
    bounded waits, and a refusal of any connection that turns out to be a Baton state DB."""
    engine = create_sql_engine(
        endpoint.url,
        pool_size=pool_size,
        connect_args=endpoint.connect_args(timeouts),
        pre_ping=False,  # the guard pings idle connections on checkout, under its watchdog
    )
    guard_engine(engine, endpoint.backend, limit)
    return engine


def for_reading(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that only read.

    On SQLite they begin deferred: under WAL a reader then never waits for a
    writer, where ``BEGIN IMMEDIATE`` would queue every extract, reflection and
    status read behind whichever process holds the write lock.
    """
    return engine.execution_options(**{READ_ONLY: True})


class EngineCache:
    """Engines on spec endpoints, per process, bounded and released when done.

    Keyed by the checked endpoint (URL and pinned address); an engine is created
    lazily after a fork (the pid is part of the key), and the least recently used
    is disposed when more than ``max_engines`` are open.
    """

    def __init__(self, timeouts: Timeouts, max_engines: int = 8, pool_size: int = 2) -> None:
        self._engines: OrderedDict[tuple[int, str], Engine] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_engines
        self._pool_size = pool_size
        self._timeouts = timeouts

    def get(self, endpoint: SqlEndpoint) -> Engine:
        key = (os.getpid(), endpoint.cache_key)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            io_s = self._timeouts.io_s
            engine = create_endpoint_engine(
                endpoint, self._timeouts, lambda: io_s, pool_size=self._pool_size
            )
            self._engines[key] = engine
            while len(self._engines) > self._max:
                _, old = self._engines.popitem(last=False)
                old.dispose()
            return engine

    def reader(self, endpoint: SqlEndpoint) -> Engine:
        """The engine for ``endpoint``, for reads only (see :func:`for_reading`)."""
        return for_reading(self.get(endpoint))

    def release(self, endpoint: SqlEndpoint) -> None:
        """Dispose the engine for an endpoint (its migrations finished)."""
        with self._lock:
            engine = self._engines.pop((os.getpid(), endpoint.cache_key), None)
        if engine is not None:
            engine.dispose()

    def dispose_all(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.dispose()
