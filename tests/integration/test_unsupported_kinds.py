"""A worker that lacks what a migration needs leaves it to one that has it: it never fails it.

During a rolling deploy, a newer API may accept a spec (an endpoint kind, a spec form)
that an older worker cannot read. That worker must put the chunk back, counting no
attempt, and the migration must say why it waits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from etl_tasks.connectors import registry
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration
from etl_tasks.views import migration_view
from etl_tasks.workers import WorkerInfo, heartbeat
from tests.checks import assert_migrated
from tests.data import build_source, spec_for, submit
from tests.harness import Driver

#: (the target a newer API stored, what the older worker says of it, the kind it lacks)
NEWER = {
    # a kind whose form this worker parses, but which it has no connector for
    "http": ({"http": {"url": "https://api.example.com/v1/{table}/import"}}, "no connector for"),
    # a form no version of Baton reads yet: the spec itself is a newer version's
    "s3": ({"s3": {"bucket": "exports"}}, "newer worker"),
}


def _store_spec(driver: Driver, migration_id: str, spec: dict[str, Any]) -> None:
    with driver.rt.db.session() as s:
        s.execute(update(Migration).where(Migration.id == migration_id).values(spec=spec))


def _chunks(driver: Driver, migration_id: str) -> list[Chunk]:
    with driver.rt.db.reading() as s:
        return list(s.scalars(select(Chunk).where(Chunk.migration_id == migration_id)))


@pytest.mark.parametrize("kind", list(NEWER))
def test_a_kind_this_worker_lacks_waits_for_a_worker_that_has_it(
    kind: str,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    newer_target, says = NEWER[kind]
    # A worker of a version without that kind's connector (this process, without it)
    registry.kinds()  # built-ins and plugins registered
    monkeypatch.setattr(
        registry, "_connectors", {k: c for k, c in registry._connectors.items() if k != kind}
    )
    settings = make_settings()
    source, target = f"sqlite:///{tmp_path / 'legacy.db'}", f"sqlite:///{tmp_path / 'cloud.db'}"
    build_source(source, customers=500, orders=100)
    spec = spec_for(source, target, chunk_rows=100)
    old = Driver(settings, name="old")
    mid = submit(old.rt.db, old.publisher, spec)
    old.run(max_messages=4)  # planned, and a chunk or two on its way
    with old.rt.db.reading() as s:
        stored = dict(s.get(Migration, mid).spec)  # type: ignore[union-attr]
    assert not stored.get("sealed"), "the test swaps the target of a plain stored spec"
    info = WorkerInfo("old", "1.0", "localhost", 1, None)
    heartbeat(old.rt.db, info, state="active", in_flight=0, steps_done=0)  # it advertises sql
    # Given a newer API stored a target of that kind
    _store_spec(old, mid, {**stored, "target": newer_target})
    before = {c.id: c.attempts for c in _chunks(old, mid)}
    old.rt.close()
    old = Driver(settings, name="old")  # a worker that reads the spec afresh
    old.publisher.queue.extend(_carried(mid, _chunks(old, mid)))
    # When the older worker gets every message
    old.run(max_messages=200)
    # Then nothing failed and no attempt was spent; the chunks wait, and the migration says why
    view = migration_view(old.rt.db, mid)
    assert view["state"] == "running", view
    assert f"no worker supports {kind} targets" in (view["waiting_reason"] or ""), view
    chunks = _chunks(old, mid)
    assert all(c.state != "failed" for c in chunks)
    assert all(c.attempts <= before.get(c.id, 0) for c in chunks), "an attempt was spent"
    assert any(says in (c.last_error or "") for c in chunks), [c.last_error for c in chunks]
    # And once a worker that can read it takes over (here: the spec it understands again,
    # the wait over), the migration finishes exact
    _store_spec(old, mid, stored)
    with old.rt.db.session() as s:
        s.execute(
            update(Chunk)
            .where(Chunk.migration_id == mid)
            .values(not_before=old.rt.db.now(s) - timedelta(seconds=1))
        )
    new = Driver(settings, name="new")
    new.publisher.queue.extend(_carried(mid, _chunks(new, mid)))
    new.run_to_end(mid)
    assert_migrated(new.rt.db, mid, spec)
    old.close()
    new.close()


def _carried(migration_id: str, chunks: list[Chunk]) -> list[tuple[str, dict[str, Any]]]:
    """What the broker holds for the migration: a plan message and each chunk's step."""
    from etl_tasks.constants import STEP_TASK, TASK_PLAN

    steps = [(STEP_TASK[c.step], {"chunk_id": c.id}) for c in chunks if c.state != "done"]
    return [(TASK_PLAN, {"migration_id": migration_id}), *steps]
