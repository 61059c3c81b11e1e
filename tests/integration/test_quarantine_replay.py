"""Replaying quarantined rows: fixed rows load and leave the quarantine, still-bad rows stay
with their new reason, rows deleted from the source are marked gone, and nothing loads twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from etl_tasks import replay
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.constants import TASK_LOAD, TASK_PLAN
from etl_tasks.errors import Conflict, NotFound
from etl_tasks.publisher import publish_plan
from etl_tasks.state.models import Chunk, Event, QuarantinedRow
from etl_tasks.sweeper import sweep
from etl_tasks.views import list_quarantine, migration_view
from tests.checks import assert_migrated
from tests.data import sqlite_url, submit
from tests.exports import file_spec
from tests.harness import Driver
from tests.integration.fidelity_support import pg_exec, sqlite_db

LEGACY = "CREATE TABLE items (id INTEGER PRIMARY KEY, qty TEXT NOT NULL, note TEXT NOT NULL);"
TARGET = (
    "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, "
    "note text NOT NULL CHECK (note <> 'refused'))"
)
ROWS = 40
BAD = {5: ("five", "n5"), 6: ("six", "n6"), 7: ("7", "refused"), 8: ("eight", "n8"), 9: ("x", "n9")}


def _items() -> list[tuple[Any, ...]]:
    return [(i, *BAD.get(i, (str(i), f"n{i}"))) for i in range(1, ROWS + 1)]


def _spec(source: str, target: str) -> dict[str, Any]:
    return {
        "name": "replay",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": 10,
        "streams": [
            {
                "source_table": "items",
                "target_table": "items",
                "columns": {"id": "id", "qty": {"from": "qty", "transform": "int"}, "note": "note"},
            }
        ],
    }


def _source_sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def _replay(driver: Driver, mid: str) -> replay.Replay:
    started = replay.replay(driver.rt.db, mid, "test")
    publish_plan(driver.publisher, mid)
    driver.run_to_end(mid)
    return started


def _quarantine(driver: Driver, mid: str) -> dict[int, dict[str, Any]]:
    return {int(r["key"].strip("[]")): r for r in list_quarantine(driver.rt.db, mid)}


@pytest.fixture
def migrated(driver: Driver, tmp_path: Path, pg_url: str) -> tuple[str, dict[str, Any], Path]:
    """A succeeded migration with five rows quarantined: four by the transform's cast (5, 6,
    8, 9), one refused by the target's CHECK (7)."""
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"items": _items()})
    pg_exec(pg_url, TARGET)
    spec = _spec(source, pg_url)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "succeeded", view
    assert (view["rows_loaded"], view["rows_quarantined"]) == (ROWS - 5, 5), view
    return mid, spec, tmp_path / "legacy.db"


def test_replay_loads_fixed_rows_keeps_bad_ones_and_marks_deleted_ones_gone(
    driver: Driver, migrated: tuple[str, dict[str, Any], Path], pg_url: str
) -> None:
    mid, spec, path = migrated
    before = _quarantine(driver, mid)
    # The transform's and the target's refusals alike are known by their source key
    with driver.rt.db.reading() as s:
        rows = s.scalars(select(QuarantinedRow).where(QuarantinedRow.migration_id == mid))
        assert {r.source_key for r in rows} == {f"[{i}]" for i in BAD}
    # Given the source fixed: 5's quantity, 7's note; 6 fixed but now refused by the target;
    # 8 deleted; 9 left as it was
    _source_sql(
        path,
        "UPDATE items SET qty = '5' WHERE id = 5",
        "UPDATE items SET qty = '6', note = 'refused' WHERE id = 6",
        "UPDATE items SET note = 'n7' WHERE id = 7",
        "DELETE FROM items WHERE id = 8",
    )
    # When the quarantine is replayed
    started = _replay(driver, mid)
    # Then only the five rows were read again, in one key-set chunk
    assert (started.rows, started.chunks, started.streams) == (5, 1, {"items": 5})
    # and the migration succeeded again: 5 and 7 loaded and left the quarantine, 6 and 9
    # stay quarantined (6 with the target's new reason), 8 is listed as gone and counted
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "succeeded", view
    assert (view["rows_loaded"], view["rows_quarantined"], view["rows_gone"]) == (37, 2, 1)
    assert view["streams"][0]["rows_gone"] == 1
    after = _quarantine(driver, mid)
    assert sorted(after) == [6, 8, 9], after
    assert after[8]["status"] == "gone"
    assert after[6]["status"] == after[9]["status"] == "quarantined"
    assert after[6]["reason"] != before[6]["reason"] and "check" in after[6]["reason"].lower()
    assert after[9]["reason"] == before[9]["reason"]
    assert pg_exec(pg_url, "SELECT id, qty, note FROM items WHERE id IN (5, 7) ORDER BY id") == [
        (5, 5, "n5"),
        (7, 7, "n7"),
    ]
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 2})
    with driver.rt.db.reading() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.migration_id == mid)))
    assert kinds.count("quarantine_replay") == 1 and kinds.count("migration_succeeded") == 2


def test_replaying_twice_loads_nothing_twice(
    driver: Driver, migrated: tuple[str, dict[str, Any], Path], pg_url: str
) -> None:
    mid, spec, path = migrated
    _source_sql(path, "UPDATE items SET qty = '5' WHERE id = 5")
    replay.replay(driver.rt.db, mid, "test")
    # A second replay is refused while the first runs; an unknown migration is not found
    with pytest.raises(Conflict, match="already running"):
        replay.replay(driver.rt.db, mid, "test")
    with pytest.raises(NotFound):
        replay.replay(driver.rt.db, "0" * 32, "test")
    publish_plan(driver.publisher, mid)
    driver.run_to_end(mid)
    first = migration_view(driver.rt.db, mid)
    assert (first["rows_loaded"], first["rows_quarantined"]) == (36, 4), first
    # When the quarantine is replayed again with nothing changed at the source
    again = _replay(driver, mid)
    # Then the four still-bad rows were read again, and nothing else changed
    assert again.rows == 4
    second = migration_view(driver.rt.db, mid)
    assert (second["state"], second["rows_loaded"], second["rows_quarantined"]) == (
        "succeeded",
        36,
        4,
    )
    assert pg_exec(pg_url, "SELECT count(*) FROM items") == [(36,)]
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 4})
    # And once every row is fixed and loaded, there is nothing left to replay
    _source_sql(path, "UPDATE items SET qty = id, note = 'n' || id WHERE id IN (6, 7, 8, 9)")
    _replay(driver, mid)
    assert migration_view(driver.rt.db, mid)["rows_quarantined"] == 0
    with pytest.raises(Conflict, match="no quarantined row"):
        replay.replay(driver.rt.db, mid, "test")


def test_a_replay_whose_worker_died_after_the_target_commit_loads_once(
    driver: Driver, migrated: tuple[str, dict[str, Any], Path], pg_url: str, monkeypatch: Any
) -> None:
    mid, spec, path = migrated
    _source_sql(path, "UPDATE items SET qty = '5' WHERE id = 5", "DELETE FROM items WHERE id = 8")
    replay.replay(driver.rt.db, mid, "test")
    publish_plan(driver.publisher, mid)

    class Killed(BaseException):
        """The worker dies between the target's commit and the state DB's record."""

    import etl_tasks.steps.load as load_step

    real_finish = load_step.finish

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed()

    loads: list[dict[str, Any]] = []

    def stop_at_load(task: str, kwargs: dict[str, Any]) -> bool:
        if task == TASK_LOAD:
            loads.append(kwargs)
            return False
        return True

    # Given the replay's load, killed after the target committed
    driver.run(on_message=stop_at_load)
    assert len(loads) == 1
    monkeypatch.setattr(load_step, "finish", die)
    with pytest.raises(Killed):
        driver.deliver(TASK_LOAD, loads[0])
    monkeypatch.setattr(load_step, "finish", real_finish)
    # When its lease runs out and the message comes again (twice)
    with driver.rt.db.session() as s:
        s.execute(
            update(Chunk)
            .where(Chunk.id == loads[0]["chunk_id"])
            .values(lease_expires_at=None, lease_owner=None)
        )
    driver.deliver(TASK_LOAD, loads[0])
    driver.deliver(TASK_LOAD, loads[0])
    driver.deliver(TASK_PLAN, {"migration_id": mid})
    driver.run_to_end(mid)
    # Then the fixed row loaded once, and the counts are right
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_loaded"], view["rows_quarantined"], view["rows_gone"]) == (
        "succeeded",
        36,
        3,
        1,
    ), view
    assert pg_exec(pg_url, "SELECT count(*) FROM items") == [(36,)]
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 3})


def test_a_failed_migration_replays_and_succeeds(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a migration that failed for having more bad rows than max_bad_rows
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"items": _items()})
    pg_exec(pg_url, TARGET)
    spec = {**_spec(source, pg_url), "max_bad_rows": 3}
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert driver.state(mid) == "failed"
    # When the source is fixed and the quarantine replayed
    _source_sql(tmp_path / "legacy.db", "UPDATE items SET qty = id, note = 'n' || id")
    replay.replay(driver.rt.db, mid, "test")
    publish_plan(driver.publisher, mid)
    for _ in range(20):  # steps refused while it was failed are sent again by the sweeper
        driver.run()
        if driver.state(mid) != "running":
            break
        sweep(driver.rt)
    # Then the migration runs to its end and succeeds, with every row loaded
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_quarantined"], view["error"]) == ("succeeded", 0, None)
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 0})


def test_a_file_sources_malformed_records_replay_as_they_are_and_a_changed_file_fails(
    driver: Driver, tmp_path: Path
) -> None:
    # Given an export whose 3rd record has a field too many and whose 6th fails the cast,
    # migrated in chunks of 2 (so the plan records the file's fingerprint)
    folder = tmp_path / "exports"
    folder.mkdir()
    lines = [b"id;qty", b"1;10", b"2;20", b"3;30;extra", b"4;40", b"5;50", b"6;six", b"7;70"]
    path = folder / "items.csv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    target = sqlite_url(tmp_path / "target.db")
    with create_sql_engine(target).begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)"))
    stream = {"source_table": "items.csv", "target_table": "items", "key": "id",
              "exclude": ["_file", "_record"]}  # fmt: skip
    spec = file_spec(folder, target, [stream], chunk_rows=2, delimiter=";")
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    first = {r["key"]: r["reason"] for r in list_quarantine(driver.rt.db, mid)}
    assert set(first) == {'["items.csv",3]', '["items.csv",6]'}, first
    # When they are replayed with the file unchanged
    started = _replay(driver, mid)
    # Then both are read again and quarantined again, with the same reasons
    assert started.rows == 2
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_loaded"], view["rows_quarantined"]) == ("succeeded", 5, 2)
    assert {r["key"]: r["reason"] for r in list_quarantine(driver.rt.db, mid)} == first
    # When the file is corrected (a new version of it) and they are replayed again
    path.write_bytes(path.read_bytes().replace(b"3;30;extra", b"3;30").replace(b"six", b"60"))
    _replay(driver, mid)
    # Then the replay refuses to mix two versions of the file: the migration fails, saying so
    failed = migration_view(driver.rt.db, mid)
    assert failed["state"] == "failed", failed
    assert "'items.csv' changed after the migration planned it" in (failed["error"] or "")
    assert failed["rows_loaded"] == 5


def test_a_running_migration_replays_what_it_quarantined_so_far(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a migration still running, some of its bad rows already quarantined
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"items": _items()})
    pg_exec(pg_url, TARGET)
    spec = _spec(source, pg_url)
    mid = submit(driver.rt.db, driver.publisher, spec)
    while not list_quarantine(driver.rt.db, mid):
        assert driver.run(max_messages=1), "the queue ran dry before a row was quarantined"
    assert driver.state(mid) == "running"
    # When the source is fixed and the quarantine replayed while it runs
    _source_sql(tmp_path / "legacy.db", "UPDATE items SET qty = id, note = 'n' || id")
    started = replay.replay(driver.rt.db, mid, "test")
    assert started.rows >= 1
    driver.run_to_end(mid)
    # Then it finishes with every row loaded once and nothing left in the quarantine
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_loaded"], view["rows_quarantined"]) == ("succeeded", 40, 0)
    assert pg_exec(pg_url, "SELECT count(*) FROM items") == [(ROWS,)]
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 0})
