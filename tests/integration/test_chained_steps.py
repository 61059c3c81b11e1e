"""A worker runs a chunk's next step itself (etl_tasks/steps/common.hand_on): no message
and no second claim between a chunk's steps, each step's outcome still committed on its
own, and never while the worker drains or the migration does not run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from etl_tasks import gate
from etl_tasks.chunk_lease import Claim, claim, commit_and_claim
from etl_tasks.constants import TASK_EXTRACT, TASK_LOAD, TASK_TRANSFORM
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings
from etl_tasks.state.enums import MigrationState
from etl_tasks.state.models import Chunk, Migration
from etl_tasks.steps import load as load_module
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.faults import expire_leases
from tests.harness import Driver

ROWS = 600


@pytest.fixture
def chained(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    d = Driver(make_settings(), chain=True)
    yield d
    d.close()


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS, bad_every=50)
    return items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=100)


def _sent(driver: Driver, task: str) -> int:
    return sum(1 for sent, _ in driver.publisher.history if sent == task)


def _chunks(driver: Driver, mid: str) -> list[Chunk]:
    with driver.rt.db.reading() as s:
        return list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))


def _one_extract(driver: Driver, mid: str) -> int:
    """Deliver messages up to the first extract; return its chunk, the extract not run."""
    while driver.publisher.queue:
        task, kwargs = driver.publisher.queue.popleft()
        if task == TASK_EXTRACT:
            return int(kwargs["chunk_id"])
        driver.deliver(task, kwargs)
    raise AssertionError("no extract was sent")


def _claimed_extract(driver: Driver, spec: dict[str, Any]) -> tuple[str, Claim]:
    """A new migration whose first chunk is claimed for its extract (not run)."""
    mid = submit(driver.rt.db, driver.publisher, spec)
    c = claim(driver.rt, _one_extract(driver, mid), "extract")
    assert c is not None
    return mid, c


def _step_of(driver: Driver, chunk_id: int) -> Chunk:
    with driver.rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
    assert chunk is not None
    return chunk


def test_each_chunk_goes_from_extract_to_load_on_one_message(
    chained: Driver, spec: dict[str, Any]
) -> None:
    mid = submit(chained.rt.db, chained.publisher, spec)
    assert chained.run_to_end(mid) == "succeeded"
    chunks = _chunks(chained, mid)
    # Every row arrived or was quarantined, each chunk's three steps recorded their time
    assert sum(c.rows_out + c.rows_quarantined for c in chunks) == ROWS
    assert sum(c.rows_quarantined for c in chunks) == ROWS // 50
    assert all(set(c.step_timings()) == {"extract", "transform", "load"} for c in chunks)
    # and no transform or load needed a message of its own
    assert _sent(chained, TASK_EXTRACT) == len(chunks)
    assert _sent(chained, TASK_TRANSFORM) == _sent(chained, TASK_LOAD) == 0
    # each step claimed the chunk anew: three fencing tokens, one attempt each
    assert {c.lease_token for c in chunks} == {3}


def test_a_draining_worker_stops_after_the_step_in_hand(
    chained: Driver, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = submit(chained.rt.db, chained.publisher, spec)
    chunk_id = _one_extract(chained, mid)
    # Given the worker starts draining while the extract runs
    monkeypatch.setattr(gate, "_gate", lambda: False)
    chained.deliver(TASK_EXTRACT, {"chunk_id": chunk_id})
    # Then the extract committed, gave its chunk back, and sent the transform as a message
    with chained.rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        assert (chunk.step, chunk.lease_owner) == ("transform", None)
        assert chunk.queued_at is not None
    assert ("baton.transform", {"schema": 1, "chunk_id": chunk_id}) in chained.publisher.queue


def test_a_migration_paused_during_a_step_goes_no_further_on_that_worker(
    chained: Driver, spec: dict[str, Any]
) -> None:
    mid, c = _claimed_extract(chained, spec)
    with chained.rt.db.session() as s:
        s.execute(update(Migration).where(Migration.id == mid).values(state="paused"))
    committed, nxt = commit_and_claim(chained.rt, c, "transform", stage_token=c.token)
    # The extract's outcome stands, the lease is released, and the caller sends the
    # transform (claimed by nobody until the migration resumes)
    assert (committed, nxt) == (True, None)
    chunk = _step_of(chained, c.chunk_id)
    assert (chunk.step, chunk.lease_owner, chunk.stage_token) == ("transform", None, c.token)


def test_a_step_whose_lease_was_taken_over_neither_commits_nor_goes_on(
    chained: Driver, spec: dict[str, Any]
) -> None:
    _, c = _claimed_extract(chained, spec)
    with chained.rt.db.session() as s:  # another worker took the chunk over
        s.execute(update(Chunk).where(Chunk.id == c.chunk_id).values(lease_token=c.token + 1))
    assert commit_and_claim(chained.rt, c, "transform", stage_token=c.token) == (False, None)
    assert _step_of(chained, c.chunk_id).step == "extract"


def test_a_chained_load_that_must_retry_finds_its_rows_staged(
    chained: Driver, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the target refuses the first load with a transient error
    real = load_module.write_chunk
    failures: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise TransientError("the target is restarting")
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "write_chunk", flaky)
    mid = submit(chained.rt.db, chained.publisher, spec)
    chunk_id = _one_extract(chained, mid)
    chained.deliver(TASK_EXTRACT, {"chunk_id": chunk_id})
    with chained.rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        assert (chunk.step, chunk.lease_owner, chunk.retries) == ("load", None, 1)
    # When the retry comes, the rows the chained transform staged are there: the chunk
    # is loaded without reading the source again
    expire_leases(chained.rt.db, chunk_id)
    assert chained.run_to_end(mid) == "succeeded"
    with chained.rt.db.reading() as s:
        rows = s.scalar(select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == mid))
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.state == "done"
    assert rows == ROWS - ROWS // 50
    assert _sent(chained, TASK_EXTRACT) == len(_chunks(chained, mid))  # none read twice
    assert _sent(chained, TASK_LOAD) == 1  # the retry's message


def test_with_chaining_off_every_step_is_a_message(
    make_settings: Callable[..., Settings], spec: dict[str, Any]
) -> None:
    driver = Driver(make_settings(chain_steps=False), chain=True)
    try:
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        n = len(_chunks(driver, mid))
        assert _sent(driver, TASK_EXTRACT) == _sent(driver, TASK_TRANSFORM) == n
        assert _sent(driver, TASK_LOAD) == n
    finally:
        driver.close()


def test_a_prefork_worker_never_chains(
    make_settings: Callable[..., Settings], spec: dict[str, Any]
) -> None:
    driver = Driver(make_settings(worker_pool="prefork"), chain=True)
    try:
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        assert _sent(driver, TASK_LOAD) == len(_chunks(driver, mid))
        with driver.rt.db.reading() as s:
            assert s.get(Migration, mid).state == MigrationState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        driver.close()


@pytest.mark.parametrize("chain_steps", [True, False], ids=["chained", "by-message"])
def test_a_chunk_the_transform_would_only_relabel_goes_from_extract_to_load(
    make_settings: Callable[..., Settings], spec: dict[str, Any], chain_steps: bool
) -> None:
    # Given a stream that copies every column as it is (its quantities kept as text)
    spec["streams"][0]["columns"] = {"id": "id", "name": "name", "quantity": "qty"}
    driver = Driver(make_settings(chain_steps=chain_steps), chain=True)
    try:
        # When it migrates, its steps chained on one thread or each sent as a message
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        chunks = _chunks(driver, mid)
        # Then every row arrived, and no chunk went through the transform: the extract
        # staged its rows under the target's names and handed the chunk to the load,
        # recording no time for the step it skipped
        assert sum(c.rows_out for c in chunks) == ROWS
        assert sum(c.rows_quarantined for c in chunks) == 0
        assert _sent(driver, TASK_TRANSFORM) == 0
        assert _sent(driver, TASK_LOAD) == (0 if chain_steps else len(chunks))
        assert all(c.step_timings()["transform"] == 0 for c in chunks)
        assert all(c.transform_ms == 0 for c in chunks)  # what older versions read
        assert {c.lease_token for c in chunks} == {2}  # claimed for two steps, not three
    finally:
        driver.close()
