"""SQLite shared by several processes: writers take the lock up front, readers never wait.

A held write lock is simulated by a second connection in ``BEGIN IMMEDIATE``;
each read is given far less time than the busy timeout, so one that queued
behind the writer would fail here rather than pass slowly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select, text

from etl_tasks.connectors.sql.engines import create_sql_engine, for_reading
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Migration

T = TypeVar("T")


@pytest.fixture
def writer_holds_lock(tmp_path: Path) -> Iterator[Path]:
    """A SQLite file (WAL) with a table, and another connection holding its write lock."""
    path = tmp_path / "db.sqlite"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    setup.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    setup.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (3, 'uncommitted')")
    try:
        yield path
    finally:
        holder.rollback()
        holder.close()


def _within(seconds: float, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread; fail if it has not returned after ``seconds``."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"still waiting after {seconds} s: the read queued behind the writer"
    return result[0]


def test_a_reading_engine_reads_committed_rows_while_a_writer_holds_the_lock(
    writer_holds_lock: Path,
) -> None:
    engine = for_reading(create_sql_engine(f"sqlite:///{writer_holds_lock}"))

    def read() -> list[int]:
        with engine.connect() as conn:
            return list(conn.scalars(text("SELECT id FROM t ORDER BY id")))

    assert _within(2.0, read) == [1, 2]
    engine.dispose()


def test_a_writing_engine_waits_for_the_lock(writer_holds_lock: Path) -> None:
    engine = create_sql_engine(f"sqlite:///{writer_holds_lock}")
    finished = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (4, 'later')"))
        finished.set()

    threading.Thread(target=write, daemon=True).start()
    time.sleep(0.5)
    assert not finished.is_set(), "a write transaction began without the lock"


def test_state_db_reads_do_not_queue_behind_a_writer(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    db.upgrade()
    holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:

        def read() -> int:
            with db.reading() as s:
                db.now(s)
                return len(list(s.scalars(select(Migration.id))))

        assert _within(2.0, read) == 0
    finally:
        holder.rollback()
        holder.close()
        db.dispose()


def test_a_new_file_appears_whole_never_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite creates a file empty and writes its header later; a worker checking the endpoint
    # in between refused it ("exists and is not a SQLite database") and failed the migration
    path = tmp_path / "new.db"
    seen: list[bytes] = []
    real_connect = sqlite3.connect

    def spying(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        if Path(database).exists():  # what any other process would see at this instant
            seen.append(Path(database).read_bytes()[:16])
        return real_connect(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3.dbapi2, "connect", spying)  # the driver SQLAlchemy calls
    engine = create_sql_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (x)"))
    engine.dispose()
    assert seen and all(header == b"SQLite format 3\x00" for header in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    from etl_tasks.connectors.sql.engines import create_sqlite_file

    path = tmp_path / "other.txt"
    path.write_bytes(b"not a database")
    create_sqlite_file(str(path))
    assert path.read_bytes() == b"not a database"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]
