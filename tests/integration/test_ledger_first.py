"""The ledger-first rule for missing staged rows (DESIGN.md, invariant 2).

A load committed in the target and its worker died before the state DB heard of
it; then the chunk's staged rows were lost. The target ledger decides what
happens next: the chunk is finished from its record (counts, quarantine, cut),
never extracted again, where a new extract could cut it at another key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from etl_tasks import control, splitting
from etl_tasks.chunk_lease import Claim, claim, lease_clock
from etl_tasks.connectors.base import LedgerRecord
from etl_tasks.connectors.sql import ledger
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.schema import ensure_ledger
from etl_tasks.constants import TASK_LOAD
from etl_tasks.errors import LeaseLost
from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from etl_tasks.state.db import CLOCK_READ_S
from etl_tasks.state.models import Chunk
from etl_tasks.steps import load as load_module
from etl_tasks.steps.common import run_claimed
from etl_tasks.sweeper import sweep
from etl_tasks.views import list_chunks, migration_view
from tests.checks import assert_migrated
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.faults import (
    SnapshotStaging,
    WorkerKilled,
    expire_leases,
    killed_after_target_commit,
    loads_out_of_time,
    lose_staging,
)
from tests.harness import Driver

ROWS, BAD_EVERY = 3000, 37
#: For the worker whose load commits and dies: a step budget no loaded machine spends on a
#: 3,000-row chunk, so a whole-chunk load is never cut by chance (a cut one is cut by
#: ``loads_out_of_time``, whatever the budget).
ROOMY = {"step_budget_s": 60.0, "lease_s": 120.0, "visibility_timeout_s": 240}


@pytest.fixture(params=["postgresql", "sqlite", "mariadb"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "cloud.db")
    else:
        yield request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")


@pytest.fixture
def source(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "legacy.db")
    build_items(url, ROWS, bad_every=BAD_EVERY)
    return url


def _until_load(driver: Driver) -> dict[str, Any]:
    """Deliver messages until a load is next; return it, not delivered."""
    while driver.publisher.queue:
        task, kwargs = driver.publisher.queue.popleft()
        if task == TASK_LOAD:
            return kwargs
        driver.deliver(task, kwargs)
    raise AssertionError("no load was sent")


def _commit_then_die(driver: Driver, kwargs: dict[str, Any], *, cut: bool) -> LedgerRecord:
    """Deliver a load that commits in the target, then dies; return its ledger record."""
    with killed_after_target_commit(), loads_out_of_time() if cut else nullcontext():
        with pytest.raises(WorkerKilled):
            driver.deliver(TASK_LOAD, kwargs)
    record = _ledger_record(driver.rt, int(kwargs["chunk_id"]))
    assert record is not None and (record.cut is not None) == cut
    return record


def _ledger_record(rt: Runtime, chunk_id: int) -> LedgerRecord | None:
    with rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        migration_id = chunk.migration_id
    engine = create_sql_engine(rt.spec(migration_id).target.unchecked_url())
    try:
        with engine.connect() as conn:
            return ledger.read(conn, migration_id, "items", chunk_id)
    finally:
        engine.dispose()


def _finish(driver: Driver, migration_id: str) -> None:
    for _ in range(50):
        driver.run()
        if driver.state(migration_id) != "running":
            return
        sweep(driver.rt)


def _hurried(make_settings: Callable[..., Settings], first: Driver) -> Driver:
    """A second worker whose step budget is so short that an extract cuts its chunk after
    one sub-batch (1,000 rows), a key no load of a 3,000-row chunk stopped at."""
    hurried = Driver(make_settings(step_budget_s=0.001), name="hurried")
    hurried.publisher.queue.extend(first.publisher.queue)
    first.publisher.queue.clear()
    return hurried


def _assert_finished_from(driver: Driver, chunk_id: int, record: LedgerRecord) -> None:
    with driver.rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        assert chunk.state == "done"
        assert chunk.rows_out == record.rows_loaded
        assert chunk.rows_quarantined == len(record.quarantine)
        if record.cut is not None:
            assert chunk.upper == record.cut  # the ledger's cut is the chunk's bound


@pytest.mark.parametrize("write", ["upsert", "insert"])
@pytest.mark.parametrize("cut", [False, True], ids=["whole-chunk", "cut-at-deadline"])
def test_a_committed_load_whose_staged_rows_are_lost_is_finished_from_the_ledger(
    make_settings: Callable[..., Settings], source: str, target_url: str, write: str, cut: bool
) -> None:
    # Given a 3,000-row chunk (every 37th row quarantined by transform) whose load
    # committed in the target, whole or cut at its deadline, and whose worker died
    # before the state DB heard of it
    spec = items_spec(source, target_url, write=write)
    first = Driver(make_settings(**ROOMY))
    mid = submit(first.rt.db, first.publisher, spec)
    kwargs = _until_load(first)
    chunk_id = int(kwargs["chunk_id"])
    record = _commit_then_die(first, kwargs, cut=cut)
    # When its lease expires, its staged rows are lost (a Redis restart, or the TTL),
    # and its load is delivered again to a worker that would cut a new extract elsewhere
    expire_leases(first.rt.db, chunk_id)
    assert lose_staging(first.rt, chunk_id) > 0
    hurried = _hurried(make_settings, first)
    outcome = hurried.deliver(TASK_LOAD, kwargs)
    _finish(hurried, mid)
    # Then the chunk was finished from its ledger record, not extracted again: every row
    # is in the target once, counted once, and each bad row is quarantined once
    assert_migrated(hurried.rt.db, mid, spec, expected_bad={"items": ROWS // BAD_EVERY})
    _assert_finished_from(hurried, chunk_id, record)
    assert outcome == "from_ledger"
    first.close()
    hurried.close()


def test_a_chunk_whose_transform_input_is_lost_after_its_load_committed(
    make_settings: Callable[..., Settings], source: str, tmp_path: Path
) -> None:
    # Given a chunk whose load committed and whose worker died, then sent back to
    # transform with nothing staged (as an older version that re-extracted it leaves it)
    spec = items_spec(source, sqlite_url(tmp_path / "cloud.db"), write="insert")
    first = Driver(make_settings())
    mid = submit(first.rt.db, first.publisher, spec)
    kwargs = _until_load(first)
    chunk_id = int(kwargs["chunk_id"])
    record = _commit_then_die(first, kwargs, cut=True)
    expire_leases(first.rt.db, chunk_id)
    lose_staging(first.rt, chunk_id)
    with first.rt.db.session() as s:
        s.execute(update(Chunk).where(Chunk.id == chunk_id).values(step="transform"))
    # When its transform runs and finds its input gone
    hurried = _hurried(make_settings, first)
    outcome = hurried.deliver("baton.transform", {"chunk_id": chunk_id})
    _finish(hurried, mid)
    # Then the ledger decided, as it does for a load
    assert outcome == "from_ledger"
    assert_migrated(hurried.rt.db, mid, spec, expected_bad={"items": ROWS // BAD_EVERY})
    _assert_finished_from(hurried, chunk_id, record)
    first.close()
    hurried.close()


def test_a_failed_chunk_whose_load_committed_is_not_extracted_again_on_retry(
    make_settings: Callable[..., Settings], source: str, tmp_path: Path
) -> None:
    # Given a chunk whose load committed in the target but whose worker died every time
    # before the state DB heard of it, until the chunk failed after max_attempts
    spec = items_spec(source, sqlite_url(tmp_path / "cloud.db"))
    first = Driver(make_settings(max_attempts=2))
    mid = submit(first.rt.db, first.publisher, spec)
    kwargs = _until_load(first)
    chunk_id = int(kwargs["chunk_id"])
    record = _commit_then_die(first, kwargs, cut=True)
    expire_leases(first.rt.db, chunk_id)
    with killed_after_target_commit(), pytest.raises(WorkerKilled):
        first.deliver(TASK_LOAD, kwargs)  # a replay: the ledger row, then the same death
    expire_leases(first.rt.db, chunk_id)
    assert claim(first.rt, chunk_id, "load") is None
    assert migration_view(first.rt.db, mid)["state"] == "failed"
    # When the operator retries it: its chunk starts again from extract
    control.retry(first.rt.db, mid, "test")
    hurried = _hurried(make_settings, first)
    sweep(hurried.rt)
    _finish(hurried, mid)
    # Then that extract read the ledger first and finished the chunk from its record
    assert_migrated(hurried.rt.db, mid, spec, expected_bad={"items": ROWS // BAD_EVERY})
    _assert_finished_from(hurried, chunk_id, record)
    first.close()
    hurried.close()


def test_a_stalled_load_cannot_commit_once_its_chunk_was_taken_over(
    make_settings: Callable[..., Settings], source: str, pg_url: str
) -> None:
    # Given a load that claimed its chunk and read its rows, then stalled (a long GC
    # pause, a frozen VM) past its lease
    spec = items_spec(source, pg_url, write="insert")
    settings = make_settings()
    first = Driver(settings)
    mid = submit(first.rt.db, first.publisher, spec)
    chunk_id = int(_until_load(first)["chunk_id"])
    stalled = Runtime(settings, first.publisher, worker_name="stalled")
    held = claim(stalled, chunk_id, "load")
    assert held is not None
    # the stall, as its own clock sees it: the lease was taken a whole lease ago
    held = replace(held, leased_at=lease_clock() - settings.lease_s)
    stalled.staging = SnapshotStaging(stalled.staging)  # type: ignore[assignment]
    stalled.staging.hold(held)
    # When, meanwhile, the staged rows are lost and another worker takes the chunk over:
    # it finds no ledger record, so the chunk goes back to extract, which cuts it
    expire_leases(first.rt.db, chunk_id)
    lose_staging(first.rt, chunk_id)
    hurried = _hurried(make_settings, first)
    assert hurried.deliver(TASK_LOAD, {"chunk_id": chunk_id}) == "restaged"
    for task in ("baton.extract", "baton.transform"):
        assert hurried.deliver(task, {"chunk_id": chunk_id}) == "done"
    # And the stalled worker wakes up and writes its rows
    late = run_claimed(stalled, held, lambda c: load_module.load_claimed(stalled, c))
    _finish(hurried, mid)
    # Then it committed nothing: its lease was gone when it came to commit
    assert late == "lease_lost"
    assert_migrated(hurried.rt.db, mid, spec, expected_bad={"items": ROWS // BAD_EVERY})
    assert len(list_chunks(hurried.rt.db, mid)) > 1
    stalled.close()
    first.close()
    hurried.close()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
@pytest.mark.parametrize("commits", [True, False], ids=["commits", "rolls-back"])
def test_the_ledger_is_read_after_a_load_in_flight_ends(
    request: pytest.FixtureRequest, server: str, commits: bool
) -> None:
    # Given a load of a chunk whose target transaction is open: its ledger row is
    # written, not yet committed
    url = request.getfixturevalue("pg_url" if server == "postgresql" else "mariadb_url")
    engine = create_sql_engine(url)
    ensure_ledger(engine)
    in_flight = engine.connect()
    tx = in_flight.begin()
    ledger.claim(in_flight, "m1", "items", 7, token=3)
    ledger.finish(in_flight, "m1", "items", 7, 42, [], cut=[500])
    # When another worker asks the ledger whether the chunk committed
    found: list[LedgerRecord | None] = []
    asker = threading.Thread(
        target=lambda: found.append(ledger.committed(engine, "m1", "items", 7, token=4))
    )
    asker.start()
    time.sleep(0.5)
    # Then it waits for the load to end, and sees what that load did
    assert asker.is_alive() and not found
    tx.commit() if commits else tx.rollback()
    asker.join(10)
    in_flight.close()
    assert found == ([LedgerRecord(3, 42, [], [500])] if commits else [None])
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.LEDGER.c.chunk_id)).all()
    assert len(rows) == (1 if commits else 0)  # asking wrote nothing
    engine.dispose()


def test_a_load_checks_its_lease_in_the_state_db_only_when_it_is_not_fresh(
    make_settings: Callable[..., Settings], source: str, pg_url: str
) -> None:
    # Given a load that claimed its chunk just now, and one whose lease is older than the
    # stretch its clock can vouch for
    settings = make_settings()
    driver = Driver(settings)
    submit(driver.rt.db, driver.publisher, items_spec(source, pg_url))
    chunk_id = int(_until_load(driver)["chunk_id"])
    fresh = claim(driver.rt, chunk_id, "load")
    assert fresh is not None
    asked: list[int] = []
    real = splitting.renew

    def counting(rt: Runtime, c: Claim) -> None:
        asked.append(c.token)
        real(rt, c)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(splitting, "renew", counting)
            # Then the fresh one commits without asking the state DB
            splitting.confirm_lease(driver.rt, fresh)
            assert asked == []
            # and the old one asks, and learns when the chunk was taken over meanwhile
            old = replace(fresh, leased_at=lease_clock() - CLOCK_READ_S)
            splitting.confirm_lease(driver.rt, old)
            assert asked == [fresh.token]
            expire_leases(driver.rt.db, chunk_id)
            assert claim(driver.rt, chunk_id, "load") is not None
            with pytest.raises(LeaseLost):
                splitting.confirm_lease(driver.rt, old)
            # and a claim that does not know when it was taken always asks
            with pytest.raises(LeaseLost):
                splitting.confirm_lease(driver.rt, replace(fresh, leased_at=0.0))
    finally:
        driver.close()
