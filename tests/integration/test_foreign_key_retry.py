"""A row refused for a foreign key is read again once its stream has loaded, before it is
quarantined: a self-reference pointing later in key order loads, a true orphan is set aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from etl_tasks.state.models import Chunk, QuarantinedRow
from etl_tasks.views import list_quarantine
from tests.checks import assert_migrated
from tests.data import submit
from tests.harness import Driver
from tests.integration.fidelity_support import maria_exec, migrate, pg_exec, sqlite_db

LEGACY = """
    CREATE TABLE staff (id INTEGER PRIMARY KEY, boss_id INTEGER, name TEXT NOT NULL);
"""
PEOPLE = 60
ORPHAN = 500  # its boss (999) is in no table


def _staff() -> list[tuple[Any, ...]]:
    """Each person's boss comes later in key order (the last has none), plus one orphan."""
    rows: list[tuple[Any, ...]] = [
        (i, i + 1 if i < PEOPLE else None, f"p{i}") for i in range(1, PEOPLE + 1)
    ]
    rows.append((ORPHAN, 999, "orphan"))
    return rows


TARGET_DDL = {
    "postgresql": "CREATE TABLE staff (id int PRIMARY KEY, boss_id int REFERENCES staff(id), "
    "name text NOT NULL)",
    "mariadb": "CREATE TABLE staff (id int PRIMARY KEY, boss_id int, name varchar(50) NOT NULL, "
    "FOREIGN KEY (boss_id) REFERENCES staff(id)) ENGINE=InnoDB",
}


def _spec(source: str, target: str, **stream: Any) -> dict[str, Any]:
    return {
        "name": "fk",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": 10,
        "streams": [{"source_table": "staff", "target_table": "staff", **stream}],
    }


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_a_self_reference_loads_and_only_the_orphan_is_quarantined(
    driver: Driver, tmp_path: Path, request: pytest.FixtureRequest, dialect: str
) -> None:
    # Given staff whose bosses come later in key order, and one whose boss does not exist,
    # and a target table whose foreign key checks every boss
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"staff": _staff()})
    target = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mariadb_url")
    (pg_exec if dialect == "postgresql" else maria_exec)(target, TARGET_DDL[dialect])
    spec = _spec(source, target)
    # When the stream migrates in chunks of ten
    mid, view = migrate(driver, spec)
    # Then every row whose boss exists loads; only the orphan is set aside, for good, with
    # the target's foreign-key reason; and the target equals the source
    assert view["state"] == "succeeded", view
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"staff": 1})
    (orphan,) = list_quarantine(driver.rt.db, mid)
    assert orphan["status"] == "quarantined" and str(ORPHAN) in orphan["key"], orphan
    assert "foreign key" in orphan["reason"].lower(), orphan
    with driver.rt.db.reading() as s:
        retry_chunks = [c for c in s.query(Chunk).filter_by(migration_id=mid) if c.keys]
    assert retry_chunks and all(c.lower == c.upper for c in retry_chunks)


def test_a_row_gone_from_the_source_before_its_retry_is_marked_gone(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a migration whose first chunks were refused for a foreign key
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"staff": _staff()})
    pg_exec(pg_url, TARGET_DDL["postgresql"])
    spec = _spec(source, pg_url)
    mid = submit(driver.rt.db, driver.publisher, spec)
    while not _deferred(driver, mid):
        assert driver.run(max_messages=1), "the queue ran dry before a row was deferred"
    # When one of the deferred rows is deleted from the source before it is read again
    with driver.rt.db.reading() as s:
        deferred = s.query(QuarantinedRow).filter_by(migration_id=mid, status="deferred").first()
        assert deferred is not None
        gone_key = int(deferred.key.strip("[]"))
    conn = sqlite3.connect(tmp_path / "legacy.db")
    conn.execute("UPDATE staff SET boss_id = NULL WHERE boss_id = ?", (gone_key,))
    conn.execute("DELETE FROM staff WHERE id = ?", (gone_key,))
    conn.commit()
    conn.close()
    driver.run_to_end(mid)
    # Then the migration succeeds, and the row is listed as gone from the source, not
    # quarantined and not counted as a bad row
    rows = {r["key"]: r for r in list_quarantine(driver.rt.db, mid)}
    assert rows[f"[{gone_key}]"]["status"] == "gone", rows
    assert driver.state(mid) == "succeeded"


def _deferred(driver: Driver, migration_id: str) -> int:
    with driver.rt.db.reading() as s:
        return (
            s.query(QuarantinedRow).filter_by(migration_id=migration_id, status="deferred").count()
        )


def test_on_bad_row_fail_waits_for_the_retry_before_failing(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given on_bad_row "fail": a self-reference is not a bad row, only the orphan is
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"staff": _staff()[:-1]})
    pg_exec(pg_url, TARGET_DDL["postgresql"])
    spec = {**_spec(source, pg_url), "on_bad_row": "fail"}
    mid, view = migrate(driver, spec)
    assert view["state"] == "succeeded", view
    assert_migrated(driver.rt.db, mid, spec, expected_bad={})
