"""A transaction of one write on a PostgreSQL state DB (``StateDB.one_statement``, the
steps' fenced hand-offs): committed by itself, and its connection back in the pool as
transactional as any."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from etl_tasks.state.db import StateDB


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
