"""Migrations through real worker processes, real Redis and real PostgreSQL, with faults."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.views import migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, submit
from tests.e2e import scenarios
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import load_in_flight, slow_target, wait_done
from tests.harness import wait_for
from tests.services import EmbeddedRedis

pytestmark = pytest.mark.slow


def test_sqlite_to_postgres(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    cluster = cluster_factory(make_settings())
    scenarios.migrate_with_two_workers(
        cluster, tmp_path, pg_url, customers=4000, orders=1500, chunk_rows=400
    )


def test_postgres_to_postgres_with_a_postgres_state_db(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    pg_url_factory: Callable[[], str],
    pg_state_url_factory: Callable[[], str],
) -> None:
    cluster = cluster_factory(make_settings(database_url=pg_state_url_factory()))
    cluster.start_worker(concurrency=3)
    source, target = pg_url_factory(), pg_url_factory()
    build_source(source, customers=3000, orders=1000, bad_every=29)
    spec = spec_for(source, target, chunk_rows=300)
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, mid)
    assert_migrated(
        cluster.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(1000, 3, 29)}
    )


def test_resubmitting_a_finished_spec_converges(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    cluster = cluster_factory(make_settings())
    cluster.start_worker()
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=1500, orders=400, bad_every=17)
    spec = spec_for(source, pg_url, chunk_rows=300)
    first = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, first)
    # When the same spec is submitted again after it succeeded
    second = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, second)
    # Then the target still equals the source, with no duplicates and the same counts
    expected = {"Customers": 0, "order_lines": bad_lines(400, 3, 17)}
    assert_migrated(cluster.db, first, spec, expected)
    assert_migrated(cluster.db, second, spec, expected)


def test_sigkill_in_the_middle_of_a_load(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
    pg_state_url_factory: Callable[[], str],
) -> None:
    cluster = cluster_factory(make_settings(database_url=pg_state_url_factory()))
    scenarios.sigkill_in_the_middle_of_a_load(cluster, tmp_path, pg_url_factory())


def test_sigterm_finishes_the_step_in_hand_and_exits_0(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
) -> None:
    cluster = cluster_factory(make_settings())
    scenarios.sigterm_finishes_the_step_in_hand(cluster, tmp_path, pg_url_factory())


def test_broker_flushed_mid_migration(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    # Given a Redis of this test's own as broker and staging store
    own = EmbeddedRedis(tmp_path / "redis").start()
    try:
        cluster = cluster_factory(make_settings(broker_url=own.url))
        cluster.start_worker()
        source = f"sqlite:///{tmp_path / 'legacy.db'}"
        build_source(source, customers=6000, orders=2000, bad_every=31)
        spec = spec_for(source, pg_url, chunk_rows=300)
        mid = submit(cluster.db, cluster.publisher, spec)
        wait_for(
            lambda: migration_view(cluster.db, mid)["chunks_done"] >= 3, 60, 0.05, "some progress"
        )
        # When the broker forgets everything: queued messages and staged rows
        import redis

        redis.Redis.from_url(own.url).flushall()
        assert migration_view(cluster.db, mid)["state"] == "running"
        # Then the sweeper notices and the migration finishes with nothing lost
        wait_done(cluster, mid)
        assert any("(broker lost: True)" in w.log_path.read_text() for w in cluster.workers)
        assert_migrated(
            cluster.db,
            mid,
            spec,
            expected_bad={"Customers": 0, "order_lines": bad_lines(2000, 3, 31)},
        )
    finally:
        own.kill()


@pytest.mark.chaos  # a shutdown variant (REMAP_SIGTERM); the default warm shutdown runs above
def test_soft_shutdown_cancels_a_step_that_overruns_and_loses_nothing(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
) -> None:
    # Given a prefork worker in the soft-shutdown variant (REMAP_SIGTERM=SIGQUIT) whose
    # timeout is shorter than the load it holds (a thread cannot be cancelled: with the
    # default threads pool the step simply finishes, as in a warm shutdown)
    cluster = cluster_factory(make_settings(soft_shutdown_timeout_s=0.3))
    first = cluster.start_worker(pool="prefork", REMAP_SIGTERM="SIGQUIT")
    target = pg_url_factory()
    slow_target(target, 1.5)
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=1500, orders=200)
    spec = spec_for(source, target, chunk_rows=250)
    spec["streams"][0]["create_target"] = False
    mid = submit(cluster.db, cluster.publisher, spec)
    chunk_id = wait_for(
        lambda: load_in_flight(cluster, mid, first.name), 60, 0.05, "a load in flight"
    )
    # When it gets SIGTERM: it waits the soft timeout, then cancels the load and exits
    code = first.terminate()
    assert "Initiating Soft Shutdown" in first.log()
    # Then the cancelled load never committed, and a new worker runs it again: nothing lost
    cluster.start_worker()
    wait_done(cluster, mid)
    assert_migrated(cluster.db, mid, spec)
    with cluster.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.worker != first.name
    assert code in (0, 1), first.log()
