"""`baton drain` and `baton rollout` through the API (BATON_API_URL set): from a machine
that has neither the state DB nor the broker, with only an operator token."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from etl_tasks.workers import list_workers
from ops import exit_codes
from tests.api_process import ApiProcess
from tests.e2e.conftest import Cluster
from tests.harness import run_baton

pytestmark = pytest.mark.slow


@pytest.fixture
def api_and_cluster(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[tuple[ApiProcess, Cluster]]:
    cluster = cluster_factory(make_settings(probe_token=None))
    s = cluster.settings
    api = ApiProcess(tmp_path, s.broker_url, s.key_prefix, s.database_url, BATON_AUTH="on")
    try:
        yield api.wait_ready(), cluster
    finally:
        api.close()


def test_drain_and_rollout_through_the_api(
    api_and_cluster: tuple[ApiProcess, Cluster], tmp_path: Path
) -> None:
    api, cluster = api_and_cluster
    first = cluster.start_worker()
    second = cluster.start_worker()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing_db = elsewhere / "state.db"
    # A shell on another machine: the API's address and an operator token, no state DB,
    # no broker, no probe token
    remote = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATON_")},
        "BATON_API_URL": api.url,
        "BATON_API_TOKEN": api.token("operator"),
        "BATON_DATABASE_URL": f"sqlite:///{missing_db}",
        "BATON_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    # A viewer may not drain: the API refuses, the worker keeps running
    viewer = {**remote, "BATON_API_TOKEN": api.token("viewer", "v")}
    refused = run_baton("drain", first.name, env=viewer, cwd=elsewhere, timeout=60)
    assert refused.returncode == exit_codes.UNAVAILABLE and "HTTP 403" in refused.stderr, refused
    assert first.proc.poll() is None
    # When the operator drains the first worker
    result = run_baton("drain", first.name, "--json", env=remote, cwd=elsewhere, timeout=60)
    # Then its heartbeat picked the request up: it drained and left with exit 0
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], result.stdout + result.stderr
    assert report["via"] == "api"
    assert list(report["phases"]) == ["stop_consuming_s", "finish_in_flight_s", "shutdown_s"]
    assert first.proc.wait(10) == 0
    assert "drain requested through the API" in first.log()
    # When the fleet is rolled through the API: one new worker up, the old one drained
    start = (
        f"{sys.executable} -m celery -A worker worker -n new{{n}}@test --without-mingle "
        "--without-gossip -c 1 --loglevel INFO"
    )
    workers_env = {**os.environ, **cluster.settings.as_env()}  # what the new worker needs
    rolled = run_baton(
        "rollout",
        "--start",
        start,
        "--count",
        "1",
        "--json",
        "--log-dir",
        str(tmp_path / "rollout"),
        env={**workers_env, **{k: remote[k] for k in ("BATON_API_URL", "BATON_API_TOKEN")}},
        cwd=elsewhere,
        timeout=120,
    )
    rollout = json.loads(rolled.stdout)
    assert rolled.returncode == 0 and rollout["ok"], rolled.stdout + rolled.stderr
    assert rollout["started"] == ["new1@test"]
    assert [(d["worker"], d["via"]) for d in rollout["drained"]] == [(second.name, "api")]
    assert second.proc.wait(10) == 0
    # And nothing touched a state DB where the shell was
    assert not missing_db.exists()
    for w in list_workers(cluster.db):  # the rollout's worker is not the cluster's
        if str(w["name"]).startswith("new"):
            os.kill(int(w["pid"]), signal.SIGKILL)
