"""The state DB's statements on PostgreSQL: a transaction of one write
(``StateDB.one_statement``, the steps' fenced hand-offs) commits by itself, its connection
back in the pool as transactional as any; a statement run often is prepared on the
server, and stays prepared across the sessions that only read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import make_url, text

from etl_tasks.state.db import PREPARE_THRESHOLD, StateDB, engine_url


@pytest.fixture
def db(pg_url: str) -> Iterator[StateDB]:
    state = StateDB(pg_url, pool_size=1)
    with state.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id integer PRIMARY KEY, n integer)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    yield state
    state.dispose()


def _n(db: StateDB) -> int:
    with db.engine.connect() as other:
        return int(other.scalar(text("SELECT n FROM counter WHERE id = 1")) or 0)


def test_a_statement_of_its_own_commits_as_it_runs(db: StateDB) -> None:
    with db.one_statement() as conn:
        # When its one statement has run
        conn.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        # Then it is committed already: another connection sees it, and no transaction
        # of this one holds a write (no BEGIN before it, no COMMIT to wait for)
        assert _n(db) == 1
        assert conn.scalar(text("SELECT txid_current_if_assigned()")) is None


def test_the_connection_it_used_is_transactional_again(db: StateDB) -> None:
    # Given the pool's one connection used for a statement of its own
    with db.one_statement() as conn:
        conn.execute(text("UPDATE counter SET n = 5 WHERE id = 1"))
    # When an ordinary transaction on that connection fails after a write
    with pytest.raises(RuntimeError), db.session() as s:
        s.execute(text("UPDATE counter SET n = 99 WHERE id = 1"))
        raise RuntimeError("the step failed")
    # Then its write is rolled back, as every transaction's is
    assert _n(db) == 5


def test_a_failed_statement_leaves_the_connection_usable(db: StateDB) -> None:
    with pytest.raises(Exception, match="division by zero"), db.one_statement() as conn:
        conn.execute(text("UPDATE counter SET n = 1 / 0 WHERE id = 1"))
    with db.session() as s:
        s.execute(text("UPDATE counter SET n = 7 WHERE id = 1"))
    assert _n(db) == 7


_BUMP = text("UPDATE counter SET n = n + 1 WHERE id = :id")


def _prepared(db: StateDB) -> list[str]:
    """The statements the pool's connection has prepared on the server."""
    with db.engine.connect() as conn:
        found = conn.scalars(text("SELECT statement FROM pg_prepared_statements"))
        return [s for s in found if "counter" in s]


def test_a_statement_run_often_is_prepared_on_the_server(db: StateDB) -> None:
    # Given a hand-off's statement run as often as every chunk runs it
    for _ in range(PREPARE_THRESHOLD + 1):
        with db.one_statement() as conn:
            conn.execute(_BUMP, {"id": 1})
    # Then the server planned it once: it is prepared on the connection
    assert any("UPDATE counter" in s for s in _prepared(db))
    assert _n(db) == PREPARE_THRESHOLD + 1


def test_sessions_that_only_read_keep_them_prepared(db: StateDB) -> None:
    # Given a statement prepared on the pool's connection
    for _ in range(PREPARE_THRESHOLD + 1):
        with db.session() as s:
            s.execute(_BUMP, {"id": 1})
    # When sessions that only read use that connection (planning, advances, the API)
    for _ in range(3):
        with db.reading() as s:
            assert s.scalar(text("SELECT n FROM counter WHERE id = 1")) == PREPARE_THRESHOLD + 1
    # Then it is still prepared: a rollback would have made the driver forget it
    assert any("UPDATE counter" in s for s in _prepared(db))


def test_prepare_threshold_zero_in_the_url_prepares_none(pg_url: str) -> None:
    # Given a state DB behind a pooler that cannot keep prepared statements
    db = StateDB(f"{pg_url}?prepare_threshold=0", pool_size=1)
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE counter (id integer PRIMARY KEY, n integer)")
            conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
        for _ in range(PREPARE_THRESHOLD * 2):
            with db.one_statement() as conn:
                conn.execute(_BUMP, {"id": 1})
        # Then nothing is prepared, and the option never reaches the server as a setting
        assert _prepared(db) == []
        assert _n(db) == PREPARE_THRESHOLD * 2
    finally:
        db.dispose()
    u, args = engine_url(f"{pg_url}?prepare_threshold=0")
    assert "prepare_threshold" not in u.query and args == {"prepare_threshold": None}


def test_the_state_db_url_picks_the_driver_and_its_threshold() -> None:
    plain = "postgresql://baton@db:5432/baton"
    assert engine_url(plain) == (make_url("postgresql+psycopg://baton@db:5432/baton"),
                                 {"prepare_threshold": PREPARE_THRESHOLD})  # fmt: skip
    assert engine_url(f"{plain}?prepare_threshold=20")[1] == {"prepare_threshold": 20}
    # a URL that names psycopg2 keeps it (it prepares nothing); SQLite is SQLite
    assert engine_url("postgresql+psycopg2://db/baton")[0].drivername == "postgresql+psycopg2"
    assert engine_url("sqlite:///state.db") == (make_url("sqlite:///state.db"), {})
    with pytest.raises(ValueError, match="prepare_threshold"):
        engine_url(f"{plain}?prepare_threshold=many")
