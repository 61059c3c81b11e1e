"""A plain chunk (a range loaded whole, no row set aside) is finished by one fenced UPDATE
(etl_tasks/steps/finish._done_plain), or on PostgreSQL by one statement that claims the
next chunk too (etl_tasks/steps/finish_statement.py), instead of the ORM's read and
flush: it must leave exactly what the ORM path leaves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from etl_tasks.constants import TASK_EXTRACT, TASK_LOAD, TASK_TRANSFORM
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration, Stream
from etl_tasks.steps import finish as finish_module
from etl_tasks.steps import finish_statement
from etl_tasks.views import migration_view
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

ROWS, CHUNK_ROWS = 1000, 100

SAME = ("seq", "state", "step", "rows_in", "rows_out", "rows_quarantined", "lease_owner")
CLEARED = ("lease_expires_at", "queued_at")


def _migrate(settings: Settings, tmp_path: Path, name: str) -> tuple[list[Any], list[int]]:
    source = sqlite_url(tmp_path / f"{name}-legacy.db")
    build_items(source, ROWS, bad_every=0)
    driver = Driver(settings, name, chain=True)
    try:
        spec = items_spec(source, sqlite_url(tmp_path / f"{name}-target.db"), chunk_rows=CHUNK_ROWS)
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        with driver.rt.db.reading() as s:
            chunks = list(
                s.scalars(select(Chunk).where(Chunk.migration_id == mid).order_by(Chunk.seq))
            )
            sizes = list(s.scalars(select(Stream.chunk_rows).where(Stream.migration_id == mid)))
        return chunks, sizes
    finally:
        driver.close()


def test_a_plain_chunk_is_finished_as_the_orm_path_finishes_it(
    each_state_db: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same migration finished by one statement per chunk (on PostgreSQL, with
    # the next chunk's claim: etl_tasks/steps/finish_statement.py), and by the ORM
    updates: list[int] = []

    def counting(real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            updates.append(1)
            return real(*args, **kwargs)

        return counted

    monkeypatch.setattr(finish_module, "_done_plain", counting(finish_module._done_plain))
    monkeypatch.setattr(
        finish_statement, "finish_and_claim", counting(finish_statement.finish_and_claim)
    )
    fast, fast_sizes = _migrate(each_state_db(), tmp_path, "fast")
    monkeypatch.setattr(finish_module, "_plain", lambda c, record: False)
    orm, orm_sizes = _migrate(each_state_db(), tmp_path, "orm")
    # Then every chunk went the one-statement way, and both left the same rows
    assert len(updates) == len(fast) == len(orm) >= ROWS // CHUNK_ROWS
    assert fast_sizes == orm_sizes
    for a, b in zip(fast, orm, strict=True):
        assert [getattr(a, k) for k in SAME] == [getattr(b, k) for k in SAME]
        assert all(getattr(a, k) is None for k in CLEARED)
        assert a.finished_at is not None
        assert set(a.timings or {}) == set(b.timings or {}) == {"extract", "transform", "load"}
        assert a.load_ms == (a.timings or {})["load"]
        assert (a.extract_ms, a.transform_ms) == (
            (a.timings or {})["extract"],
            (a.timings or {})["transform"],
        )


def test_a_plain_chunk_that_goes_through_clears_the_migrations_waiting_reason(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given a running migration marked waiting (a step found every slot in use)
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS, bad_every=0)
    driver = Driver(make_settings())
    try:
        spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=CHUNK_ROWS)
        mid = submit(driver.rt.db, driver.publisher, spec)
        driver.run(max_messages=1)  # the first advance: chunks planned and queued
        with driver.rt.db.session() as s:
            s.execute(
                update(Migration).where(Migration.id == mid).values(waiting_reason="all slots busy")
            )
        # When one chunk goes through
        for task in (TASK_EXTRACT, TASK_TRANSFORM, TASK_LOAD):
            found = next(m for m in driver.publisher.queue if m[0] == task)
            driver.publisher.queue.remove(found)
            driver.deliver(*found)
        # Then the migration runs on, no longer waiting
        view = migration_view(driver.rt.db, mid)
        assert view["state"] == "running" and view["chunks_done"] == 1
        with driver.rt.db.reading() as s:
            migration = s.get(Migration, mid)
            assert migration is not None and migration.waiting_reason is None
    finally:
        driver.close()
