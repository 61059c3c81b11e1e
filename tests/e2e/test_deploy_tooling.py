"""`baton drain` and `baton rollout` against real workers in the middle of a migration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.views import migration_view
from etl_tasks.workers import list_workers
from tests.checks import assert_migrated
from tests.data import build_source, spec_for, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import slow_target, wait_done
from tests.harness import run_baton, wait_for

pytestmark = pytest.mark.slow

# The workers' probe token: `baton drain` and `baton rollout` get it from the same
# settings, as a deploy pipeline gets it from the same secret.
PROBE_TOKEN = "deploy-tooling-probe-token-0123456789"


@pytest.fixture(autouse=True)
def _no_token_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATON_PROBE_TOKEN", raising=False)


def _baton(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_baton(*args, env={**os.environ, **settings.as_env()}, timeout=timeout)


SlowMigration = tuple[Cluster, str, dict[str, Any]]


@pytest.fixture
def slow_migration(
    request: pytest.FixtureRequest,
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url_factory: Callable[[], str],
) -> Iterator[SlowMigration]:
    """Two workers on a migration whose loads take a while (the target is slow).

    Parametrised indirectly with (customers, chunk_rows, seconds per write statement):
    more chunks, a longer migration; slower statements, longer loads.
    """
    customers, chunk_rows, statement_s = getattr(request, "param", (3000, 250, 0.4))
    cluster = cluster_factory(make_settings(probe_token=PROBE_TOKEN))
    cluster.start_worker()
    cluster.start_worker()
    target = pg_url_factory()
    slow_target(target, statement_s)
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=customers, orders=300)
    spec = spec_for(source, target, chunk_rows=chunk_rows)
    spec["streams"][0]["create_target"] = False
    mid = submit(cluster.db, cluster.publisher, spec)
    yield cluster, mid, spec
    for w in list_workers(cluster.db):  # workers a rollout started are not the cluster's
        if str(w["name"]).startswith("new"):
            try:
                os.kill(int(w["pid"]), signal.SIGKILL)
            except OSError:
                pass


def _holding_load(cluster: Cluster, mid: str, owner: str) -> bool:
    with cluster.db.session() as s:
        return (
            s.scalar(
                select(Chunk.id)
                .where(Chunk.migration_id == mid, Chunk.step == "load", Chunk.lease_owner == owner)
                .limit(1)
            )
            is not None
        )


# Each load takes over 2.5 s, so it is still in flight when `baton drain` has started
# (a new Python process) and asks the worker.
@pytest.mark.parametrize("slow_migration", [(3000, 250, 2.5)], indirect=True)
def test_drain_waits_for_the_step_in_flight_then_stops_the_worker(
    slow_migration: SlowMigration,
) -> None:
    cluster, mid, spec = slow_migration
    victim = cluster.workers[0]
    wait_for(lambda: _holding_load(cluster, mid, victim.name), 60, 0.05, "a load in flight")
    # When the deploy pipeline drains it
    result = _baton(cluster.settings, "drain", victim.name, "--json", "--timeout", "30")
    # Then it stopped consuming, finished its load, and left with exit 0
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    assert report["via"] == "probe" and report["in_flight_at_start"] >= 1
    assert report["warning"] is None and "warning:" not in result.stderr, result.stderr
    assert list(report["phases"]) == ["stop_consuming_s", "finish_in_flight_s", "shutdown_s"]
    assert victim.proc.wait(10) == 0
    assert "handed back=" in victim.log()
    # And the other worker finishes the migration with nothing lost
    wait_done(cluster, mid)
    assert_migrated(cluster.db, mid, spec)


def test_drain_without_the_probe_token_says_so_and_stops_the_worker_by_remote_control(
    cluster_factory: Callable[[Settings], Cluster], make_settings: Callable[..., Settings]
) -> None:
    # Given a worker with a probe token, and a drain run where no token is configured
    cluster = cluster_factory(make_settings(probe_token=PROBE_TOKEN))
    victim = cluster.start_worker()
    without_token = cluster.settings.model_copy(update={"probe_token": None})
    # When the pipeline drains it
    result = _baton(without_token, "drain", victim.name, "--json", "--timeout", "30")
    # Then the probe refused, the command says why, and the fallback stopped the worker
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    assert report["via"] == "remote control"
    assert "(401)" in report["warning"] and "BATON_PROBE_TOKEN is not set here" in report["warning"]
    assert "warning: the probe refused POST /drain" in result.stderr
    assert victim.proc.wait(10) == 0


def test_drain_of_an_unknown_worker_fails(
    cluster_factory: Callable[[Settings], Cluster], make_settings: Callable[..., Settings]
) -> None:
    cluster = cluster_factory(make_settings())
    result = _baton(cluster.settings, "drain", "nobody@nowhere")
    assert result.returncode == 1 and "no live worker" in result.stdout


@pytest.mark.parametrize("slow_migration", [(12000, 100, 0.4)], indirect=True)
def test_rollout_replaces_two_live_workers_without_loss(
    slow_migration: SlowMigration, tmp_path: Path
) -> None:
    cluster, mid, spec = slow_migration
    wait_for(lambda: migration_view(cluster.db, mid)["chunks_done"] >= 2, 60, 0.1, "progress")
    assert migration_view(cluster.db, mid)["state"] == "running"
    start = (
        f"{sys.executable} -m celery -A worker worker -n new{{n}}@test --without-mingle "
        "--without-gossip -c 2 --loglevel INFO"
    )
    # When the pipeline rolls the fleet: two new workers up, the two old ones drained
    result = _baton(
        cluster.settings,
        "rollout",
        "--start",
        start,
        "--count",
        "2",
        "--json",
        "--log-dir",
        str(tmp_path / "rollout"),
        timeout=180,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    assert report["started"] == ["new1@test", "new2@test"]
    assert sorted(d["worker"] for d in report["drained"]) == ["w1@test", "w2@test"]
    assert [d["via"] for d in report["drained"]] == ["probe", "probe"], report
    assert all(w.proc.wait(10) == 0 for w in cluster.workers)
    # Then the new workers finish the migration; nothing lost, nothing twice
    wait_done(cluster, mid)
    assert_migrated(cluster.db, mid, spec)
    with cluster.db.session() as s:
        by_new = s.scalars(select(Chunk.worker).where(Chunk.migration_id == mid)).all()
    assert {"new1@test", "new2@test"} & set(by_new), by_new
