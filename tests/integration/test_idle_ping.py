"""The state DB's connections, and those of spec endpoints, are pinged before they are
lent only when they sat idle (etl_tasks/connectors/sql/idle_ping.py): a busy pool
spends no round trip on pings, and a connection cut while idle is still replaced."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy import exc as sa_exc

from etl_tasks.connectors.sql import idle_ping
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.state.db import StateDB


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    made = create_sql_engine(pg_url, pool_size=1)
    yield made
    made.dispose()


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    with psycopg2.connect(url.replace("+psycopg2", "")) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_back_moments_ago_is_lent_without_a_ping(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(engine, monkeypatch)
    first = _backend_pid(engine)  # a new connection: not pinged either
    assert [_backend_pid(engine) for _ in range(5)] == [first] * 5
    assert pings == []


def test_a_connection_that_sat_idle_is_pinged_and_replaced_when_dead(
    engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(engine, monkeypatch)
    first = _backend_pid(engine)
    # Given the pooled connection cut by the server while it sat idle
    _terminate(pg_url, first)
    monkeypatch.setattr(idle_ping, "PING_IDLE_S", 0.0)
    # When it is lent again, the ping finds it dead and the pool opens another
    second = _backend_pid(engine)
    assert second != first
    assert pings == [1]


def test_a_connection_cut_moments_ago_fails_one_statement_then_is_replaced(
    engine: Engine, pg_url: str
) -> None:
    first = _backend_pid(engine)
    _terminate(pg_url, first)
    # Not pinged (it was back in the pool moments ago): its statement fails as a
    # disconnect, which every caller treats as transient, and the pool is renewed
    with pytest.raises(sa_exc.OperationalError) as caught:
        _backend_pid(engine)
    assert caught.value.connection_invalidated
    assert _backend_pid(engine) != first


def test_the_state_db_spends_no_round_trip_on_pings_or_the_clock_when_busy(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = StateDB(pg_url, pool_size=1)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    pings = _count_pings(db.engine, monkeypatch)
    try:
        with db.session() as s:
            first = db.now(s)  # the clock is read once ...
        for _ in range(5):
            with db.session() as s:
                later = db.now(s)  # ... and extrapolated for the next ten seconds
                s.execute(text("SELECT 1"))
        assert first <= later
        with db.session() as s:
            fresh = s.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
        assert abs((fresh - db.now(s)).total_seconds()) < 0.5
        assert sum("clock_timestamp" in q for q in statements) == 2  # the test's own included
        assert pings == []
    finally:
        db.dispose()
