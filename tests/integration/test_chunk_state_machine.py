"""The chunk state machine, tested as one: every interleaving Hypothesis can find.

Messages are delivered in any order, twice, or never; leases expire; workers die
between their target commit and their state-DB update; staged rows vanish;
steps stop at their deadline; a worker stalls with its rows in hand and comes
back late. Against a real SQLite state DB and a real SQLite target (whose CHECK
constraint refuses some rows), after every step:

- each chunk's effect happens once: the target's rows are exactly the rows its
  ledger records, no key is quarantined twice or both loaded and quarantined;
- a done chunk's counts and quarantined rows in the state DB equal its ledger
  record, and the target holds exactly its good rows;
- chunks never overlap.

At the end everything left runs to completion and the target must equal the
source, each bad row quarantined once. ``BATON_TEST_STATEFUL_EXAMPLES`` raises
the number of examples (default 12) for deep runs.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, column, func, select, table

from etl_tasks import codec
from etl_tasks.advance import advance
from etl_tasks.chunk_lease import Claim, claim
from etl_tasks.connectors.sql import source as sql_source
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.ledger import LEDGER
from etl_tasks.connectors.sql.schema import ensure_ledger
from etl_tasks.constants import TASK_LOAD, TASK_PLAN
from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from etl_tasks.state.db import upgrade
from etl_tasks.state.models import Chunk, QuarantinedRow
from etl_tasks.steps import extract as extract_module
from etl_tasks.steps import load as load_module
from etl_tasks.steps import transform as transform_module
from etl_tasks.steps.common import run_claimed
from etl_tasks.sweeper import sweep
from etl_tasks.views import migration_view
from ops.timings import FAST_TIMINGS
from tests.checks import assert_migrated
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.faults import (
    SnapshotStaging,
    WorkerKilled,
    expire_leases,
    killed_after_target_commit,
    lose_staging,
)
from tests.harness import QueuePublisher

ROWS, BAD_EVERY = 40, 7  # every 7th row fails its transform
REFUSED = "qty % 10 <> 3"  # and the target refuses every good row ending in 3
SUB_BATCH = 3  # rows per sub-batch, so deadlines cut chunks of a few dozen rows
EXAMPLES = int(os.environ.get("BATON_TEST_STATEFUL_EXAMPLES", "8"))
STEPS = {"extract": "extract_claimed", "transform": "transform_claimed", "load": "load_claimed"}
MODULES = {"extract": extract_module, "transform": transform_module, "load": load_module}
TASKS = {"baton.extract": "extract", "baton.transform": "transform", "baton.load": "load"}

ITEMS = table("items", column("id"))
GOOD = {i for i in range(1, ROWS + 1) if i % BAD_EVERY and i % 10 != 3}
BAD = set(range(1, ROWS + 1)) - GOOD


class World:
    """What every example shares: the source, a migrated state DB to copy, the services."""

    def __init__(self, tmp: Path, redis_url: str, prefix: str) -> None:
        self.tmp = tmp
        self.source = sqlite_url(tmp / "legacy.db")
        build_items(self.source, ROWS, bad_every=BAD_EVERY)
        self.template = tmp / "state-template.db"
        upgrade(sqlite_url(self.template))
        self.redis_url = redis_url
        self.prefix = prefix
        self.numbers = itertools.count()

    def settings(self, n: int, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker_url": self.redis_url,
            "database_url": sqlite_url(self.tmp / f"state-{n}.db"),
            "key_prefix": f"{self.prefix}{n}:",
            "auth": "off",
            **FAST_TIMINGS,
            "max_attempts": 10_000,  # crashes are injected at will: never fail a chunk for them
            "requeue_after_s": 0.001,  # a sweep re-sends every queued chunk: duplicates
            # every step is a message the machine may hold, drop or repeat (chained
            # steps have tests of their own: test_chained_steps.py)
            "chain_steps": False,
        }
        values.update(overrides)
        return Settings(**values)

    def new_target(self, n: int) -> str:
        path = self.tmp / f"target-{n}.db"
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty BIGINT, "
                f"CHECK ({REFUSED}))"
            )
        conn.close()
        engine = create_sql_engine(sqlite_url(path))
        ensure_ledger(engine)  # as prepare would: the invariants read it from the start
        engine.dispose()
        return sqlite_url(path)


class ChunkMachine(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        n = next(self.world.numbers)
        shutil.copy(self.world.template, self.world.tmp / f"state-{n}.db")
        self.publisher = QueuePublisher()
        self.normal = Runtime(self.world.settings(n), self.publisher, "normal")
        hurried = self.world.settings(n, step_budget_s=1e-6)
        self.hurried = Runtime(hurried, self.publisher, "hurried")
        self.stale = Runtime(self.world.settings(n), self.publisher, "stale")
        self.held = SnapshotStaging(self.stale.staging)
        self.stale.staging = self.held  # type: ignore[assignment]
        self.stalled: list[Claim] = []
        self.target_url = self.world.new_target(n)
        self.target: Engine = create_sql_engine(self.target_url)
        self.spec: dict[str, Any] = {}
        self.migration_id = ""

    # --- setting up ---------------------------------------------------------------------------

    @initialize(write=st.sampled_from(["upsert", "insert"]), chunk_rows=st.integers(4, 16))
    def submit(self, write: str, chunk_rows: int) -> None:
        self.spec = items_spec(
            self.world.source, self.target_url, chunk_rows=chunk_rows, write=write
        )
        self.spec["streams"][0]["create_target"] = False
        self.migration_id = submit(self.normal.db, self.publisher, self.spec)

    # --- what the world does ------------------------------------------------------------------

    def _deliver(self, rt: Runtime, task: str, kwargs: dict[str, Any]) -> None:
        if task == TASK_PLAN:
            advance(rt, str(kwargs["migration_id"]))
            return
        step = TASKS[task]
        getattr(MODULES[step], step)(rt, int(kwargs["chunk_id"]))

    def _take(self, index: int) -> tuple[str, dict[str, Any]]:
        queue = self.publisher.queue
        message = queue[index % len(queue)]
        del queue[index % len(queue)]
        return message

    @precondition(lambda self: self.publisher.queue)
    @rule(index=st.integers(0, 50), hurried=st.booleans())
    def deliver(self, index: int, hurried: bool) -> None:
        """A worker takes a message, in any order; a hurried one stops at its deadline."""
        task, kwargs = self._take(index)
        self._deliver(self.hurried if hurried else self.normal, task, kwargs)

    @precondition(lambda self: self.publisher.queue)
    @rule(hurried=st.booleans())
    def run_up_to_the_loads(self, hurried: bool) -> None:
        """Workers take every message but loads, until only loads are left to run."""
        self._deliver_all_but_loads(self.hurried if hurried else self.normal)

    def _deliver_all_but_loads(self, rt: Runtime | None = None) -> None:
        """Deliver every message but loads (extracts hurried unless ``rt`` says)."""
        for _ in range(200):
            others = [m for m in self.publisher.queue if m[0] != TASK_LOAD]
            if not others:
                return
            self.publisher.queue.remove(others[0])
            extract = others[0][0] == "baton.extract"
            self._deliver(rt or (self.hurried if extract else self.normal), *others[0])

    @precondition(lambda self: any(t == TASK_LOAD for t, _ in self.publisher.queue))
    @rule(hurried=st.booleans())
    def run_the_loads(self, hurried: bool) -> None:
        """Workers take every load queued now, oldest first."""
        loads = [m for m in self.publisher.queue if m[0] == TASK_LOAD]
        for message in loads:
            self.publisher.queue.remove(message)
            self._deliver(self.hurried if hurried else self.normal, *message)

    @rule(staging=st.booleans(), leases=st.booleans(), sweeper=st.booleans())
    def faults(self, staging: bool, leases: bool, sweeper: bool) -> None:
        """Redis loses the staged rows, leases expire (their workers died), the sweeper runs
        and re-sends whatever the state DB says is unfinished: any of these, in this order."""
        if staging:
            lose_staging(self.normal)
        if leases:
            expire_leases(self.normal.db)
        if sweeper:
            sweep(self.normal)

    @precondition(lambda self: self.publisher.history)
    @rule(index=st.integers(0, 200))
    def deliver_again(self, index: int) -> None:
        """The broker delivers a message a second time (at least once)."""
        task, kwargs = self.publisher.history[index % len(self.publisher.history)]
        self._deliver(self.normal, task, kwargs)

    @precondition(lambda self: self.publisher.queue)
    @rule(index=st.integers(0, 50))
    def drop(self, index: int) -> None:
        """The broker loses a message."""
        self._take(index)

    @precondition(lambda self: any(t == TASK_LOAD for t, _ in self.publisher.queue))
    @rule(index=st.integers(0, 50), hurried=st.booleans())
    def load_then_die(self, index: int, hurried: bool) -> None:
        """A load commits in the target and its worker is killed before the state DB hears."""
        loads = [m for m in self.publisher.queue if m[0] == TASK_LOAD]
        task, kwargs = loads[index % len(loads)]
        self.publisher.queue.remove((task, kwargs))
        with killed_after_target_commit():
            try:
                self._deliver(self.hurried if hurried else self.normal, task, kwargs)
            except WorkerKilled:
                pass  # its lease stays held until it expires

    @rule(step=st.sampled_from(["load", "transform", "extract"]), index=st.integers(0, 50))
    def stall(self, step: str, index: int) -> None:
        """A worker claims a chunk at this step, reads its input, and stalls."""
        with self.normal.db.reading() as s:
            chunks = list(s.scalars(select(Chunk.id).where(Chunk.step == step).order_by(Chunk.id)))
        if not chunks:
            return
        chunk_id = chunks[index % len(chunks)]
        held = claim(self.stale, chunk_id, step)
        if held is not None:
            self.held.hold(held)
            self.stalled.append(held)

    @precondition(lambda self: self.stalled)
    @rule(index=st.integers(0, 10))
    def stalled_worker_resumes(self, index: int) -> None:
        """The stalled worker wakes up, however late, and finishes its step."""
        # The machine expires leases rather than waiting them out: a worker that stalled
        # past its lease's end finds its claim old by its own clock too, as it would have
        # (a young claim is trusted before a target commit: splitting.confirm_lease)
        held = replace(self.stalled.pop(index % len(self.stalled)), leased_at=0.0)
        body = getattr(MODULES[held.step], STEPS[held.step])
        run_claimed(self.stale, held, lambda c: body(self.stale, c))

    # --- what must hold after every step ------------------------------------------------------

    def _target_keys(self) -> set[int]:
        with self.target.connect() as conn:
            return set(conn.execute(select(ITEMS.c.id)).scalars())

    def _ledger(self) -> dict[int, tuple[int, list[int]]]:
        with self.target.connect() as conn:
            rows = conn.execute(
                select(LEDGER.c.chunk_id, LEDGER.c.rows_loaded, LEDGER.c.quarantine).where(
                    LEDGER.c.migration_id == self.migration_id
                )
            ).all()
        return {int(c): (int(n), [_key(k) for k, _, _ in orjson.loads(q)]) for c, n, q in rows}

    @invariant()
    def each_chunk_took_effect_once(self) -> None:
        if not self.migration_id:
            return
        target = self._target_keys()
        ledger = self._ledger()
        quarantined = [k for _, keys in ledger.values() for k in keys]
        assert len(target) == sum(n for n, _ in ledger.values()), (target, ledger)
        assert len(quarantined) == len(set(quarantined)), quarantined
        assert not target & set(quarantined), target & set(quarantined)
        assert target <= GOOD and set(quarantined) <= BAD

    @invariant()
    def the_state_db_agrees_with_the_ledger(self) -> None:
        if not self.migration_id:
            return
        ledger = self._ledger()
        target = self._target_keys()
        with self.normal.db.reading() as s:
            chunks = list(s.scalars(select(Chunk).order_by(Chunk.id)))
            bad = s.execute(select(QuarantinedRow.chunk_id, QuarantinedRow.key)).all()
        by_chunk: dict[int, set[int]] = {}
        for chunk_id, key in bad:
            by_chunk.setdefault(chunk_id, set()).add(_key(key))
        assert len(bad) == sum(len(v) for v in by_chunk.values())  # none twice
        ranges = [(_bound(c.lower, 0), _bound(c.upper, ROWS)) for c in chunks]
        for i, (lo, hi) in enumerate(ranges):
            assert all(hi <= lo2 or hi2 <= lo for lo2, hi2 in ranges[i + 1 :]), ranges
        for c, (lo, hi) in zip(chunks, ranges, strict=True):
            if c.state != "done":
                assert c.id not in by_chunk, (c.id, c.state)
                continue
            rows_loaded, keys = ledger[c.id]
            assert (c.rows_out, c.rows_quarantined) == (rows_loaded, len(keys)), c.id
            assert by_chunk.get(c.id, set()) == set(keys), c.id
            span = set(range(lo + 1, hi + 1))
            assert target & span == GOOD & span and set(keys) == BAD & span, (c.id, lo, hi)
            assert c.rows_out == len(GOOD & span), (c.id, lo, hi, c.rows_out)  # counted once

    # --- the end ------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.migration_id:
                self._run_to_the_end()
        finally:
            for rt in (self.normal, self.hurried, self.stale):
                rt.close()
            self.target.dispose()

    def _run_to_the_end(self) -> None:
        """Workers finish the migration, extracts hurried: a chunk sent back to extract now
        is cut after three rows, wherever its earlier load (if any) stopped. Workers still
        stalled come back at the worst moment: after those extracts, before the loads."""
        self._deliver_all_but_loads()
        while self.stalled:
            self.stalled_worker_resumes(0)
        for _ in range(200):
            expire_leases(self.normal.db)
            sweep(self.normal)
            while self.publisher.queue:
                task, kwargs = self.publisher.queue.popleft()
                rt = self.hurried if task == "baton.extract" else self.normal
                self._deliver(rt, task, kwargs)
            with self.normal.db.reading() as s:
                left = s.scalar(
                    select(func.count()).select_from(Chunk).where(Chunk.state != "done")
                )
            if not left and self._state() != "running":
                break
        assert_migrated(self.normal.db, self.migration_id, self.spec, {"items": len(BAD)})
        self.each_chunk_took_effect_once()
        self.the_state_db_agrees_with_the_ledger()
        assert self._target_keys() == GOOD

    def _state(self) -> str:
        return str(migration_view(self.normal.db, self.migration_id)["state"])


def _key(text: str) -> int:
    return int(codec.decode_value(orjson.loads(text)[0]))


def _bound(encoded: list[Any] | None, default: int) -> int:
    key = codec.decode_key(encoded)
    return default if key is None else int(key[0])


@pytest.fixture
def small_sub_batches() -> Iterator[None]:
    """Sub-batches of three rows, so a deadline cuts even the small chunks of this test."""
    with (
        mock.patch.object(sql_source, "SUB_BATCH_ROWS", SUB_BATCH),
        mock.patch.object(load_module, "SUB_BATCH_ROWS", SUB_BATCH),
    ):
        yield


@pytest.mark.timeout(120 + 10 * EXAMPLES)  # a deep run's shrinking takes its time too
def test_no_sequence_loses_or_doubles_a_chunk(
    tmp_path: Path, redis_server: str, key_prefix: str, small_sub_batches: None
) -> None:
    ChunkMachine.world = World(tmp_path, redis_server, key_prefix)
    run_state_machine_as_test(
        ChunkMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_a_worker_that_stalled_past_its_lease_commits_nothing_stale(
    tmp_path: Path, redis_server: str, key_prefix: str, small_sub_batches: None
) -> None:
    """A sequence the machine found: a load stalls holding its chunk's rows, its lease
    runs out and the chunk is extracted again and cut shorter, and the stalled load comes
    back after that (teardown). It must find its lease gone before its target commit,
    not load its stale rows past the chunk's new end (keys the next chunks then found
    already there)."""
    ChunkMachine.world = World(tmp_path, redis_server, key_prefix)
    machine = ChunkMachine()
    machine.submit(write="insert", chunk_rows=8)
    machine.faults(leases=True, staging=False, sweeper=True)
    machine.deliver_again(index=79)
    machine.deliver(hurried=True, index=12)
    machine.deliver_again(index=142)
    machine.stall(index=49, step="load")
    machine.faults(leases=True, staging=True, sweeper=True)
    machine.load_then_die(hurried=True, index=31)
    machine.each_chunk_took_effect_once()
    machine.the_state_db_agrees_with_the_ledger()
    machine.teardown()  # the stalled load resumes here, then every chunk runs to its end
