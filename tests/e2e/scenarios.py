"""Scenarios every broker must pass, with real workers: run by the Redis and RabbitMQ suites.

Each takes a :class:`Cluster` already configured for its broker and a target database,
starts its own workers, and ends with the target equal to the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from etl_tasks.state.models import Chunk
from etl_tasks.views import migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, slow_table, spec_for, submit
from tests.e2e.conftest import Cluster
from tests.harness import wait_for


def finished(cluster: Cluster, migration_id: str) -> dict[str, Any] | None:
    view = migration_view(cluster.db, migration_id)
    if view["state"] in ("failed", "cancelled"):
        raise AssertionError(f"migration {view['state']}: {view['error']}\n{cluster.logs()}")
    return view if view["state"] == "succeeded" else None


def wait_done(cluster: Cluster, migration_id: str, timeout_s: float = 90) -> None:
    try:
        wait_for(lambda: finished(cluster, migration_id), timeout_s, 0.2, "the migration")
    except AssertionError:
        print(cluster.logs())
        raise


def slow_target(url: str, seconds: float) -> None:
    """The target's Customers table, where every write statement sleeps ``seconds``."""
    columns = (
        '"CustomerId" integer PRIMARY KEY, full_name text, email text, "Balance" numeric, '
        "created_at timestamp, active boolean, tenant text"
    )
    slow_table(url, seconds, '"Customers"', columns)


def load_in_flight(cluster: Cluster, migration_id: str, owner: str) -> int | None:
    with cluster.db.session() as s:
        return s.scalar(
            select(Chunk.id)
            .where(
                Chunk.migration_id == migration_id, Chunk.step == "load", Chunk.lease_owner == owner
            )
            .limit(1)
        )


def slow_spec(
    tmp_path: Path, target: str, *, seconds: float, customers: int, orders: int, bad_every: int = 0
) -> dict[str, Any]:
    """A migration into a target whose writes take ``seconds`` each (its Customers exists)."""
    slow_target(target, seconds)
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=customers, orders=orders, bad_every=bad_every)
    spec = spec_for(source, target, chunk_rows=250)
    spec["streams"][0]["create_target"] = False
    return spec


def migrate_with_two_workers(
    cluster: Cluster,
    tmp_path: Path,
    target: str,
    *,
    customers: int = 3000,
    orders: int = 1000,
    chunk_rows: int = 300,
) -> None:
    cluster.start_worker()
    cluster.start_worker()
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=customers, orders=orders, bad_every=41)
    spec = spec_for(source, target, chunk_rows=chunk_rows)
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, mid)
    expected = {"Customers": 0, "order_lines": bad_lines(orders, 3, 41)}
    assert_migrated(cluster.db, mid, spec, expected_bad=expected)


def sigkill_in_the_middle_of_a_load(cluster: Cluster, tmp_path: Path, target: str) -> None:
    # Given a slow target, so a load is in flight for a while, and two workers
    victim = cluster.start_worker()
    survivor = cluster.start_worker(wait=False)
    spec = slow_spec(tmp_path, target, seconds=1.0, customers=2000, orders=300, bad_every=13)
    mid = submit(cluster.db, cluster.publisher, spec)
    survivor.wait_ready()
    # When the victim is SIGKILLed while it holds a load
    chunk_id = wait_for(
        lambda: load_in_flight(cluster, mid, victim.name), 60, 0.05, "a load on the victim"
    )
    victim.kill()
    # Then the survivor finishes the migration, the killed chunk included, nothing twice
    wait_done(cluster, mid)
    assert_migrated(
        cluster.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(300, 3, 13)}
    )
    with cluster.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.worker == survivor.name


def sigterm_finishes_the_step_in_hand(cluster: Cluster, tmp_path: Path, target: str) -> None:
    # Given one worker busy with a slow load
    first = cluster.start_worker()
    spec = slow_spec(tmp_path, target, seconds=0.8, customers=1500, orders=200)
    mid = submit(cluster.db, cluster.publisher, spec)
    chunk_id = wait_for(
        lambda: load_in_flight(cluster, mid, first.name), 60, 0.05, "a load in flight"
    )
    # When it gets SIGTERM (Celery's warm shutdown)
    assert first.terminate() == 0, first.log()
    # Then the load it held has committed, and a new worker finishes the rest
    with cluster.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.state == "done" and chunk.worker == first.name
    assert "stopped: steps done=" in first.log()
    cluster.start_worker()
    wait_done(cluster, mid)
    assert_migrated(cluster.db, mid, spec)
