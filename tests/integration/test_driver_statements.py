"""The state DB's hottest statements on psycopg's own cursor (etl_tasks/state/driver_statements.py):
the same rows as through SQLAlchemy, and the same failures: a lost connection is
SQLAlchemy's transient error and is never lent again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from etl_tasks.connectors.sql.errors import classify
from etl_tasks.state import driver_statements
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState, MigrationState

_META = MetaData()
_THINGS = Table(
    "things",
    _META,
    Column("id", BigInteger, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("token", Integer, nullable=False),
    Column("timings", JSON),
    Column("at", DateTime),
)
_OWNERS = Table("owners", _META, Column("id", BigInteger, primary_key=True))
#: A fenced update as the step hand-off writes one: values set from the parameters, a
#: constant compared with, a JSON value, a column read back under a label of its own.
_FENCED = (
    update(_THINGS)
    .where(
        _THINGS.c.id == bindparam("thing"),
        _THINGS.c.token == bindparam("seen"),
        _THINGS.c.state != MigrationState.CANCELLED,
    )
    .returning(
        _THINGS.c.id,
        _THINGS.c.state,
        _THINGS.c.timings,
        _THINGS.c.at,
        (_THINGS.c.token * 10).label("tenfold"),
    )
)


@pytest.fixture
def db(pg_url: str) -> Iterator[StateDB]:
    state = StateDB(pg_url)
    _META.create_all(state.engine)
    with state.engine.begin() as conn:
        rows = [{"id": i, "state": "pending", "token": 0, "timings": {}} for i in range(4)]
        conn.execute(insert(_THINGS), rows)
    yield state
    state.dispose()


def _params(thing: int, **values: Any) -> dict[str, Any]:
    return {
        "thing": thing,
        "seen": 0,
        "state": ChunkState.RUNNING,
        "token": 1,
        "timings": {"extract": 12, "transform": 0},
        "at": datetime(2026, 12, 6, 4, 30, 1, 250_000),
        **values,
    }


def test_a_statement_on_the_driver_returns_what_sqlalchemy_returns(db: StateDB) -> None:
    # Given the same fenced update of two equal rows, one through SQLAlchemy, one not
    with db.one_statement() as conn:
        expected = conn.execute(_FENCED, _params(0))
        expected_rows = [tuple(row) for row in expected]
        fast = driver_statements.execute(conn, _FENCED, _params(1))
        # Then both changed one row and read back the same values, by the same names
        assert expected.rowcount == fast.rowcount == 1
        row = fast.one_or_none()
        assert [(0, *tuple(row)[1:])] == expected_rows
        assert (row.state, row.timings, row.tenfold) == (
            "running",
            {"extract": 12, "transform": 0},
            10,
        )
        # and a token no longer held changes nothing, either way
        assert driver_statements.execute(conn, _FENCED, _params(1)).one_or_none() is None
        assert driver_statements.execute(conn, _FENCED, _params(1)).rowcount == 0
    with db.reading() as s:
        stored = s.execute(select(_THINGS).order_by(_THINGS.c.id)).all()
    assert tuple(stored[0])[1:] == tuple(stored[1])[1:]


def test_other_parameter_names_are_another_statement(db: StateDB) -> None:
    with db.one_statement() as conn:
        driver_statements.execute(conn, _FENCED, _params(2))
        changed = driver_statements.execute(
            conn, _FENCED, {"thing": 2, "seen": 1, "state": "done", "token": 2}
        )
        assert changed.rowcount == 1
    with db.reading() as s:
        row = s.execute(select(_THINGS).where(_THINGS.c.id == 2)).one()
    # only the columns named were set: the JSON and the time the first call wrote stay
    assert (row.state, row.token, row.timings) == ("done", 2, {"extract": 12, "transform": 0})


def test_a_lost_connection_is_a_transient_error_and_never_lent_again(db: StateDB) -> None:
    # Given the server ends the connection a statement is about to use
    with db.one_statement() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        lost_pid = raw.info.backend_pid
        with psycopg.connect(db.url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lost_pid,))
        # When the statement runs on it
        with pytest.raises(sa_exc.DBAPIError) as raised:
            driver_statements.execute(conn, _FENCED, _params(3))
        # Then it is SQLAlchemy's error, transient as any lost connection is, and the
        # connection is invalidated
        assert isinstance(raised.value, sa_exc.OperationalError)
        assert raised.value.connection_invalidated
        assert classify(raised.value) == "transient"
        assert conn.invalidated
    # and the next statement runs on another connection
    with db.one_statement() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None and raw.info.backend_pid != lost_pid
        assert driver_statements.execute(conn, _FENCED, _params(3)).rowcount == 1


def test_a_refused_value_is_sqlalchemys_error_and_the_connection_is_kept(db: StateDB) -> None:
    with db.one_statement() as conn:
        with pytest.raises(sa_exc.IntegrityError):  # state is NOT NULL
            driver_statements.execute(conn, _FENCED, _params(0, state=None))
        assert not conn.invalidated
        assert driver_statements.execute(conn, _FENCED, _params(0)).rowcount == 1


def test_a_statement_sqlalchemy_rewrites_at_each_call_is_refused(db: StateDB) -> None:
    listed = select(_OWNERS.c.id).where(_OWNERS.c.id.in_(bindparam("ids", expanding=True)))
    with db.one_statement() as conn, pytest.raises(ValueError, match="expanding"):
        driver_statements.execute(conn, listed, {"ids": [1, 2]})


def test_another_state_db_runs_it_through_sqlalchemy(tmp_path: Any) -> None:
    db = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        _META.create_all(db.engine)
        with db.one_statement() as conn:
            conn.execute(insert(_THINGS), [{"id": 1, "state": "pending", "token": 0}])
            row = driver_statements.execute(conn, _FENCED, _params(1)).one_or_none()
        assert (row.id, row.state, row.tenfold) == (1, "running", 10)
    finally:
        db.dispose()
