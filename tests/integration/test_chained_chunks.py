"""A load that finished its chunk claims the migration's next one in the same transaction
and runs it on its thread (etl_tasks/steps/common.go_on_with): no message, no queue wait
between chunks; never while the worker drains, and for CHAIN_CHUNKS_S at most, after
which the next chunk is published and the queue's other messages get their turn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl_tasks import gate
from etl_tasks.constants import TASK_EXTRACT
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.steps import common
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

ROWS, CHUNK_ROWS = 600, 100  # six chunks, and the open-ended one after them


@pytest.fixture
def one_at_a_time(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    """A chaining worker, and migrations that run one chunk at a time: each finished chunk
    leaves the next one ready."""
    d = Driver(make_settings(max_queued_chunks=1), chain=True)
    yield d
    d.close()


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS)
    return items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=CHUNK_ROWS)


def _extracts_sent(driver: Driver) -> int:
    return sum(1 for task, _ in driver.publisher.history if task == TASK_EXTRACT)


def _chunks(driver: Driver, mid: str) -> list[Chunk]:
    with driver.rt.db.reading() as s:
        return list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))


def test_a_finished_load_runs_the_next_chunk_on_its_thread(
    one_at_a_time: Driver, spec: dict[str, Any]
) -> None:
    # Given a migration of six chunks, run one at a time
    mid = submit(one_at_a_time.rt.db, one_at_a_time.publisher, spec)
    # When it runs to the end
    assert one_at_a_time.run_to_end(mid) == "succeeded"
    # Then one message started the first chunk, and each next chunk was claimed by the
    # load before it (its extract, transform and load each claimed once: three tokens)
    chunks = _chunks(one_at_a_time, mid)
    assert len(chunks) >= ROWS // CHUNK_ROWS
    assert _extracts_sent(one_at_a_time) == 1
    assert sum(c.rows_out for c in chunks) == ROWS
    assert {(c.state, c.lease_token, c.attempts) for c in chunks} == {("done", 3, 1)}


def test_a_draining_worker_publishes_the_next_chunk(
    one_at_a_time: Driver, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker that drains: it starts no step of its own accord
    monkeypatch.setattr(gate, "_gate", lambda: False)
    mid = submit(one_at_a_time.rt.db, one_at_a_time.publisher, spec)
    # When the migration runs to the end (each message its own step)
    assert one_at_a_time.run_to_end(mid) == "succeeded"
    # Then every chunk was started by a message of its own
    assert _extracts_sent(one_at_a_time) == len(_chunks(one_at_a_time, mid))


def test_a_task_past_its_chaining_time_publishes_the_next_chunk(
    one_at_a_time: Driver, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given tasks that may run chunks one after another for no time at all
    monkeypatch.setattr(common, "CHAIN_CHUNKS_S", 0.0)
    mid = submit(one_at_a_time.rt.db, one_at_a_time.publisher, spec)
    # When the migration runs to the end
    assert one_at_a_time.run_to_end(mid) == "succeeded"
    # Then each chunk's steps still ran on one message, but each chunk had its own
    chunks = _chunks(one_at_a_time, mid)
    assert _extracts_sent(one_at_a_time) == len(chunks)
    assert sum(c.rows_out for c in chunks) == ROWS
