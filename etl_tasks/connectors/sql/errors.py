"""Telling apart, by error code, the database errors that retrying can fix.

* transient: the connection or server (down, restarting, deadlock, timeout): retry later;
* bad row: the data (a constraint, a value the column refuses): quarantine the row;
* anything else fails the chunk.

Codes, never message text, decide: SQLSTATE on PostgreSQL, error numbers on
MySQL/MariaDB, SQLAlchemy's exception classes elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from sqlalchemy import exc as sa_exc

from etl_tasks.errors import EndpointUnavailable, PermanentError, TransientError

Kind = Literal["transient", "bad_row", "fatal"]

_PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, shutdown, system
_PG_TRANSIENT_CODES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock timeout
_PG_BAD_ROW_CLASSES = ("22", "23")  # data exception, integrity constraint violation
_MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055, 1927}
_MYSQL_BAD_ROW = {1048, 1062, 1264, 1265, 1292, 1366, 1406, 1451, 1452, 1690, 3819, 4025}
#: SQLITE_ERROR, the statement's own failure (no such table or column, a syntax error): the
#: sqlite3 driver raises it as an OperationalError, like a locked or unopenable file.
_SQLITE_STATEMENT = 1


def _pg_kind(code: str) -> Kind:
    """By SQLSTATE alone: a code the server gave that is neither the connection's nor the
    data's (a syntax error, a limit exceeded) will not pass by retrying."""
    if code in _PG_TRANSIENT_CODES or code.startswith(_PG_TRANSIENT_CLASSES):
        return "transient"
    if code.startswith(_PG_BAD_ROW_CLASSES):
        return "bad_row"
    return "fatal"


def _mysql_kind(orig: BaseException) -> Kind | None:
    """By error number: the server's own errors (below 2000, and 3000 up) are fatal unless
    listed; the client's (2000 to 2999: cannot connect, server gone) are transient."""
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    if code is None or code == 0:
        return None
    if code in _MYSQL_TRANSIENT:
        return "transient"
    if code in _MYSQL_BAD_ROW:
        return "bad_row"
    return "transient" if 2000 <= code < 3000 else "fatal"


def sqlstate(orig: BaseException) -> str | None:
    """A PostgreSQL error's SQLSTATE: ``pgcode`` in psycopg2 (the connectors' driver),
    ``sqlstate`` in psycopg 3 (the state DB's: :mod:`etl_tasks.state.db`). Only theirs:
    PyMySQL's errors carry a ``sqlstate`` too, and MySQL's codes are read by number."""
    code = getattr(orig, "pgcode", None)
    if code is None and type(orig).__module__.startswith("psycopg."):
        code = getattr(orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException) -> Kind:
    """What retrying this error would do."""
    orig = getattr(exc, "orig", None) or exc
    pgcode = sqlstate(orig)
    if pgcode:
        return _pg_kind(pgcode)
    if type(orig).__module__.startswith("pymysql"):
        kind = _mysql_kind(orig)
        if kind:
            return kind
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "transient"
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int) and sqlite_code & 0xFF == _SQLITE_STATEMENT:
        return "fatal"  # by its primary result code: retrying the same statement cannot help
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return "transient"
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return "bad_row"
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        return "bad_row"  # a value SQLAlchemy's type processing refused
    if isinstance(exc, ValueError | TypeError):
        return "bad_row"
    return "fatal"


_PG_CREDENTIALS = ("28",)  # invalid authorization (28000, 28P01)
_MYSQL_CREDENTIALS = {1044, 1045, 1698}  # access denied


def unavailable(exc: BaseException, *, timed_out: bool, timeout_s: float) -> EndpointUnavailable:
    """A failed connection as one of a few fixed kinds; the driver's text stays in ``detail``."""
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
    if timed_out:
        return EndpointUnavailable("timeout", detail, timeout_s)
    pgcode = sqlstate(orig)
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    if (pgcode and pgcode.startswith(_PG_CREDENTIALS)) or (
        type(orig).__module__.startswith("pymysql") and code in _MYSQL_CREDENTIALS
    ):
        return EndpointUnavailable("credentials", detail)
    return EndpointUnavailable("connect", detail)


_PG_CONNECTION = ("08", "57P")  # connection exceptions, shutdown of the server
_MYSQL_CONNECTION = {1053, 1927, 2002, 2003, 2006, 2013, 2055}


def on_connection(exc: BaseException) -> bool:
    """Whether a transient error is the connection's (down, gone, refused) rather than an
    answer of a working server (a deadlock, a lock timeout)."""
    orig = getattr(exc, "orig", None) or exc
    pgcode = sqlstate(orig)
    if pgcode:
        return pgcode.startswith(_PG_CONNECTION)
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    if type(orig).__module__.startswith("pymysql") and code:
        return code in _MYSQL_CONNECTION or 2000 <= code < 3000
    return True


def error_reason(exc: BaseException) -> str:
    """The driver's own first line, short."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:500]


def transient(what: str, exc: BaseException) -> TransientError:
    """``exc`` (classified transient) as Baton's error: ``what`` says which side."""
    return TransientError(f"{what}: {error_reason(exc)}", connection=on_connection(exc))


def is_bad_row_error(exc: BaseException) -> bool:
    """A failure caused by the data (a constraint, a value the column refuses)."""
    return classify(exc) == "bad_row"


#: A row that points at a row not there (yet): PostgreSQL's foreign_key_violation, MySQL's
#: ER_NO_REFERENCED_ROW(_2), SQLite's SQLITE_CONSTRAINT_FOREIGNKEY.
_PG_FOREIGN_KEY = "23503"
_MYSQL_FOREIGN_KEY = {1216, 1452}
_SQLITE_FOREIGN_KEY = 787


def is_foreign_key_error(exc: BaseException) -> bool:
    """A row refused because the row it references is missing: it may load once that one has."""
    orig = getattr(exc, "orig", None) or exc
    pgcode = sqlstate(orig)
    if pgcode:
        return pgcode == _PG_FOREIGN_KEY
    if type(orig).__module__.startswith("pymysql"):
        return bool(orig.args) and orig.args[0] in _MYSQL_FOREIGN_KEY
    return getattr(orig, "sqlite_errorcode", None) == _SQLITE_FOREIGN_KEY


def is_transient_error(exc: BaseException) -> bool:
    """A failure of the connection (down, restarting, timed out): try again later."""
    return classify(exc) == "transient"


@contextlib.contextmanager
def as_baton_errors(unreachable: str, refused: str) -> Iterator[None]:
    """The connector's boundary: SQLAlchemy's errors leave as Baton's, by their code.

    ``unreachable`` names the side for an outage ("source unavailable"); ``refused`` says
    what a server's refusal stopped ("target refused the chunk").
    """
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise transient(unreachable, exc) from exc
        raise PermanentError(f"{refused}: {error_reason(exc)}") from exc
