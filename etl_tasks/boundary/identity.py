"""Baton's own stores are never a spec's endpoint: asked of the server, not read off the URL.

Comparing host, port and database name is not enough: a Unix socket, another
address of the same machine or a connection-pooler alias all reach the same
server. So ``baton db upgrade`` marks the state DB (a ``baton_state_marker``
table that any role sees in the catalog, and on PostgreSQL a comment on the
database), and every connection to a spec's endpoint, in preflight and in
every worker, asks the server whether it carries that mark. A SQLite state DB
is also recognised by its file's device and inode, whatever path names it.
The broker and staging Redis are recognised by address: a SQL endpoint on
their port of this machine, or of their host, is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from etl_tasks.boundary.network import is_local_address, resolve
from etl_tasks.errors import BoundaryError

MARKER_TABLE = "baton_state_marker"
MARKER_COMMENT = "baton-state"
REFUSAL = "this endpoint is a Baton state DB: a spec may never read or write Baton's own state"

_PG_MARKED = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relname = %s) "
    "OR COALESCE(pg_catalog.shobj_description(d.oid, 'pg_database'), '') LIKE %s "
    "FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"
)
_MYSQL_MARKED = (
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = %s AND table_schema = {}"
)
_SQLITE_MARKED = "SELECT COUNT(*) FROM sqlite_master WHERE name = ?"


def is_marked(dbapi_conn: Any, backend: str, schema: str | None = None) -> bool:
    """Whether the connection's database (or ``schema``, on MySQL) is a Baton state DB."""
    cur = dbapi_conn.cursor()
    try:
        if backend == "postgresql":
            cur.execute(_PG_MARKED, (MARKER_TABLE, MARKER_COMMENT + "%"))
        elif backend in ("mysql", "mariadb"):
            where = "%s" if schema else "DATABASE()"
            args = (MARKER_TABLE, schema) if schema else (MARKER_TABLE,)
            cur.execute(_MYSQL_MARKED.format(where), args)
        else:
            cur.execute(_SQLITE_MARKED, (MARKER_TABLE,))
        row = cur.fetchone()
    finally:
        cur.close()
    return bool(row and row[0])


def refuse_if_marked(dbapi_conn: Any, backend: str, schema: str | None = None) -> None:
    if is_marked(dbapi_conn, backend, schema):
        raise BoundaryError(REFUSAL, "url")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class OwnStores:
    """Where Baton's own state DB, broker and staging store live, as seen from this process."""

    state_file: tuple[int, int] | None = None  # a SQLite state DB's (device, inode)
    redis: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (host, port)

    @classmethod
    def of(cls, database_url: str, redis_urls: list[str]) -> OwnStores:
        state_file = None
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            state_file = _file_id(Path(str(url.database)))
        stores: list[tuple[str, int]] = []
        for text in redis_urls:
            if text.startswith(("redis://", "rediss://")):
                u = make_url(text)
                stores.append(((u.host or "127.0.0.1"), int(u.port or 6379)))
        return cls(state_file, tuple(stores))

    def check_file(self, path: Path) -> None:
        """Refuse the state DB's own file, whichever path (or hard link) names it."""
        if self.state_file is not None and _file_id(path) == self.state_file:
            raise BoundaryError(REFUSAL, "url")

    def check_address(self, address: str, port: int, timeout_s: float) -> None:
        """Refuse an endpoint that is the broker's or the staging store's port."""
        for host, store_port in self.redis:
            if port != store_port:
                continue
            store_addresses = resolve(host, store_port, timeout_s)
            if address in store_addresses or (
                is_local_address(address) and any(is_local_address(a) for a in store_addresses)
            ):
                raise BoundaryError(
                    "this endpoint is Baton's broker or staging store: a spec may never use it",
                    "url",
                )


def refuse_marked_schema(engine: Engine, table_name: str) -> None:
    """On MySQL a qualified name (``db.table``) reaches another database of the server:
    refuse one that is a Baton state DB. Elsewhere the connection's own check covers it."""
    backend = engine.dialect.name
    if backend not in ("mysql", "mariadb") or "." not in table_name:
        return
    schema = table_name.split(".", 1)[0]
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        refuse_if_marked(dbapi_conn, backend, schema)
