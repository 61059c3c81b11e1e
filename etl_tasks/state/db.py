"""The state DB's engine, sessions, clock and schema upgrades."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import URL, Connection, Engine, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from etl_tasks.connectors.sql.engines import create_sql_engine, for_reading, normalize_url
from etl_tasks.errors import StateDBMissing

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: How Baton locks a row it will change: ``FOR NO KEY UPDATE`` on PostgreSQL (plain
#: ``FOR UPDATE`` elsewhere). Primary keys never change, and unlike ``FOR UPDATE`` it
#: does not conflict with the KEY SHARE lock a foreign-key check takes: two
#: transactions that each inserted a row pointing at a stream (a chunk, a
#: quarantined row) and then lock that stream queue up instead of deadlocking.
ROW_LOCK: Final[dict[str, bool]] = {"key_share": True}

#: How often a process reads the state DB's clock; in between it extrapolates the last
#: reading with its own monotonic clock. Leases are seconds long: the drift of a
#: monotonic clock over this many seconds (well under a millisecond) changes nothing,
#: and each transaction is spared the round trip of asking.
CLOCK_READ_S: Final = 10.0

#: The state DB's PostgreSQL driver: psycopg 3, which prepares a statement on the server
#: once a connection has run it :data:`PREPARE_THRESHOLD` times. Every chunk runs the same
#: dozen statements, and planning one anew cost the server three times what running it
#: did (0.3 ms against 0.1 for a step's hand-off). Sources and targets keep psycopg2.
STATE_DB_DRIVER: Final = "postgresql+psycopg"
#: psycopg's own default. ``?prepare_threshold=0`` in the state DB's URL prepares none:
#: for a PgBouncer in transaction mode older than 1.21, which cannot keep them.
PREPARE_THRESHOLD: Final = 5


class StateDB:
    """The state DB of one process: an engine and a session factory."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        u, connect_args = engine_url(url)
        if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_sql_engine(u, pool_size=pool_size, connect_args=connect_args)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(for_reading(self.engine), expire_on_commit=False)
        self._clock: tuple[datetime, float] | None = None  # a reading, and its monotonic time
        self._clock_lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions() as s, s.begin():
            yield s

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[Connection]:
        """A connection for a transaction of one write (a fenced update): on PostgreSQL each
        statement commits by itself, without the ``BEGIN`` and ``COMMIT`` round trips
        around it; elsewhere an ordinary transaction. Use it only where no two writes must
        stand or fall together."""
        if self.dialect != "postgresql":
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            raw.autocommit = True  # the driver's own flag: nothing is sent to the server
            try:
                yield conn
                conn.commit()  # the connection's bookkeeping: nothing is left to commit
            finally:
                if not conn.invalidated:
                    raw.autocommit = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        """A session that only reads; on SQLite it takes no lock. It ends with a commit,
        which for a transaction that wrote nothing is a rollback by another name: psycopg
        forgets every statement it prepared at a rollback (one may have undone the
        tables they name)."""
        with self._reads() as s:
            yield s
            s.commit()

    def now(self, s: Session | Connection) -> datetime:
        """The database's clock (naive UTC): leases are judged by it, never by a worker's.
        Read through ``s`` every :data:`CLOCK_READ_S`, extrapolated in between."""
        reading, at = self._clock or (None, 0.0)
        since = time.monotonic() - at
        if reading is not None and 0 <= since < CLOCK_READ_S:
            return reading + timedelta(seconds=since)
        before = time.monotonic()
        value = db_now(s, self.dialect)
        with self._clock_lock:
            self._clock = (value, (before + time.monotonic()) / 2)  # read mid-way, as likely as not
        return value

    def upgrade(self) -> None:
        """Bring the schema to this version (safe to run again)."""
        upgrade(self.url)

    def dispose(self) -> None:
        self.engine.dispose()


def engine_url(url: str) -> tuple[URL, dict[str, object]]:
    """The URL the state DB's engine connects to, and the driver's arguments: a PostgreSQL
    URL that names no driver gets psycopg 3 (:data:`STATE_DB_DRIVER`) with its
    ``prepare_threshold``, taken from the URL (0: prepare none); one that names
    psycopg2 keeps it, and prepares nothing."""
    u = make_url(url)
    if u.drivername not in ("postgresql", "postgres", STATE_DB_DRIVER):
        return normalize_url(u), {}
    given = str(u.query.get("prepare_threshold", PREPARE_THRESHOLD))
    if not given.isdigit():
        raise ValueError(f"prepare_threshold in the state DB's URL is a count, not {given!r}")
    u = u.difference_update_query(["prepare_threshold"]).set(drivername=STATE_DB_DRIVER)
    return u, {"prepare_threshold": int(given) or None}


def db_now(s: Session | Connection, dialect: str) -> datetime:
    if dialect == "postgresql":
        value = s.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
    elif dialect in ("mysql", "mariadb"):
        value = s.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    else:
        raw = s.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        value = datetime.fromisoformat(raw)
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    assert isinstance(value, datetime)
    return value


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported here: workers and the API never need it

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "sqlalchemy.url",
        engine_url(url)[0].render_as_string(hide_password=False).replace("%", "%%"),
    )
    return cfg


def open_existing(url: str) -> StateDB:
    """The state DB at ``url``, which must exist: a SQLite file that is not there is refused
    with its path rather than created empty."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        path = Path(u.database).resolve()
        if not path.is_file():
            raise StateDBMissing(
                f"no state DB at {path}: set BATON_DATABASE_URL (or BATON_HOME) to the one "
                "`baton up` or your deployment uses"
            )
    return StateDB(url)


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations shipped inside the package."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        mark_state_db(url)


def mark_state_db(url: str) -> None:
    """Mark the database as a Baton state DB, so no spec can name it (docs/security.md).

    The marker table is enough on its own (any role sees it in the catalog); on
    PostgreSQL a comment on the database says the same to any role that can connect,
    when this role may set one (it owns the database).
    """
    u, connect_args = engine_url(url)
    engine = create_sql_engine(u, pool_size=1, connect_args=connect_args)
    try:
        with engine.begin() as conn:
            if conn.execute(text("SELECT COUNT(*) FROM baton_state_marker")).scalar():
                return
            conn.execute(
                text("INSERT INTO baton_state_marker (id, created_at) VALUES (:id, :at)"),
                {"id": uuid.uuid4().hex, "at": datetime.now(UTC).replace(tzinfo=None)},
            )
        if engine.dialect.name == "postgresql":
            comment_database(engine)
    finally:
        engine.dispose()


def comment_database(engine: Engine) -> None:
    """Mark the database itself as a Baton state DB: the security boundary refuses a spec
    whose endpoint is one (:mod:`etl_tasks.boundary.identity`). A database made from a
    template does not inherit the comment, so a copy is marked again."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        quoted = conn.dialect.identifier_preparer.quote(name)
        try:
            conn.execute(text(f"COMMENT ON DATABASE {quoted} IS 'baton-state'"))
        except sa_exc.DBAPIError:  # not the owner: the marker table still tells
            pass
