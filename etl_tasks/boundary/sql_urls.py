"""SQL endpoint URLs: which drivers and URL parameters a spec may use, and how to connect.

Only Baton's own drivers (psycopg2, PyMySQL, sqlite3) and, for each, only the
URL parameters it needs: a spec cannot move the connection elsewhere
(``host``, ``hostaddr``, ``port``, ``dbname``, ``service``), point a driver at
a file on the worker (``passfile``, ``sslkey``, ``read_default_file``) or let
a rogue server read the worker's files (PyMySQL's ``local_infile``).

Ambient credentials never apply to a spec's connection: the user, password,
port and database come from the URL alone, the password file and client
certificate are pointed at nothing, so ``PGPASSWORD``, ``~/.pgpass``,
``~/.postgresql/postgresql.key`` or the worker's login name cannot log a spec
into a server its author has no credentials for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from etl_tasks.errors import BoundaryError

DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}
ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "postgresql": frozenset({"sslmode", "application_name", "target_session_attrs"}),
    "mysql": frozenset({"charset"}),
    "mariadb": frozenset({"charset"}),
    "sqlite": frozenset(),
}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
NO_FILE = "/nonexistent/baton-no-ambient-credentials"  # libpq skips a file that is not there
PG_SESSION = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres"
# Instants read and written in UTC; a value a column cannot hold is an error, never a
# silent truncation or a zero date.
MYSQL_SESSION = (
    "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
)
_PORT = re.compile(r"^[a-z0-9+]+://[^/?#]*@?[^/?#:]*:([^/?#]*)", re.I)


@dataclass(frozen=True)
class Timeouts:
    """How long a connection may wait to connect, and for any one answer (seconds)."""

    connect_s: float
    io_s: float


def parse_sql_url(text: str) -> URL:
    """A spec's URL with Baton's driver named; raises :class:`BoundaryError` (never echoing
    the URL, which may hold a password)."""
    if "\x00" in text:
        raise BoundaryError("the URL contains a NUL character", "url")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in DRIVERS:
        shown = scheme[:30] or "none"
        raise BoundaryError(
            f"unsupported database kind ({shown}): use a postgresql://, mysql://, "
            "mariadb:// or sqlite:/// URL",
            "url",
        )
    port = _PORT.match(text)
    if port and port.group(1) and not port.group(1).isdigit():
        raise BoundaryError("the port in the URL must be a number", "url")
    try:
        url = make_url(text)
    except (sa_exc.ArgumentError, ValueError):
        raise BoundaryError("not a database URL (e.g. postgresql://user@host/db)", "url") from None
    url = url.set(drivername=DRIVERS[scheme])
    _check_params(url)
    return url


def backend_of(url: URL) -> str:
    return url.get_backend_name()


def _check_params(url: URL) -> None:
    backend = backend_of(url)
    allowed = ALLOWED_PARAMS[backend]
    for name in url.query:
        if name not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            raise BoundaryError(
                f"URL parameter {name[:40]!r} is not allowed for {backend} (allowed: {listed})",
                "url",
            )


def check_server_url(url: URL) -> None:
    """A server database's URL names its host, user and database itself."""
    if not url.host:
        raise BoundaryError(
            "give the host in the URL (Unix sockets and default hosts are not allowed)", "url"
        )
    if not url.username:
        raise BoundaryError("give the user name in the URL", "url")
    if not url.database:
        raise BoundaryError("give the database name in the URL", "url")


def sqlite_file(url: URL) -> str:
    """The file of a SQLite URL; in-memory databases exist in one process only: refused."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise BoundaryError(
            "an in-memory SQLite database exists in one process only: give a file path", "url"
        )
    return database


@dataclass(frozen=True)
class SqlEndpoint:
    """A checked SQL endpoint: the URL to build an engine from and where it may connect."""

    url: URL
    address: str | None = None  # the checked address a server database is reached at
    port: int | None = None
    sqlite_path: Path | None = None

    @property
    def backend(self) -> str:
        return backend_of(self.url)

    @property
    def cache_key(self) -> str:
        return f"{self.url.render_as_string(hide_password=False)}|{self.address or ''}"

    def connect_args(self, timeouts: Timeouts) -> dict[str, Any]:
        """Driver arguments that pin the address and keep ambient credentials away."""
        if self.backend == "postgresql":
            return _pg_args(self, timeouts)
        if self.backend in ("mysql", "mariadb"):
            return _mysql_args(self, timeouts)
        return {}


def _pg_args(ep: SqlEndpoint, t: Timeouts) -> dict[str, Any]:
    io_ms = max(1000, int(t.io_s * 1000))
    return {
        "hostaddr": ep.address,
        "port": ep.port,
        "password": ep.url.password or "",
        "passfile": NO_FILE,
        "sslcert": NO_FILE,
        "sslkey": NO_FILE,
        "connect_timeout": max(1, math.ceil(t.connect_s)),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": io_ms,
        # Pinned session settings: how every value is spelled on the way in and out
        # must not depend on the server's or the role's defaults.
        "options": f"-c statement_timeout={io_ms} {PG_SESSION}",
        "application_name": ep.url.query.get("application_name", "baton"),
    }


def _mysql_args(ep: SqlEndpoint, t: Timeouts) -> dict[str, Any]:
    return {
        "host": ep.address,
        "port": ep.port,
        "password": ep.url.password or "",
        "connect_timeout": max(0.5, t.connect_s),
        "read_timeout": max(0.5, t.io_s),
        "write_timeout": max(0.5, t.io_s),
        "local_infile": False,
        "init_command": MYSQL_SESSION,
    }
