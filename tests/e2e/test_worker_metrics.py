"""Real workers: their probes serve the engine's counters (threads and prefork pools alike),
and with BATON_TASK_EVENTS=on they send the Celery task events Flower reads."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from etl_tasks.settings import Settings
from etl_tasks.workers import list_workers
from ops.embedded import free_port
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.harness import ROOT, WorkerProcess, wait_for

pytestmark = pytest.mark.slow

CUSTOMERS = 120


def _probe_url(cluster: Cluster, worker: WorkerProcess) -> str:
    def registered() -> str | None:
        url = {w["name"]: w for w in list_workers(cluster.db)}.get(worker.name, {})
        return str(url["probe_url"]) if url and url.get("probe_url") else None

    found: str = wait_for(registered, 30, 0.1, f"{worker.name}'s probe in the state DB")
    return found


def _sample(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _migrate(cluster: Cluster, tmp_path: Path) -> str:
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=CUSTOMERS, orders=1)
    spec = spec_for(legacy, sqlite_url(tmp_path / "target.db"), chunk_rows=50)
    spec["streams"] = spec["streams"][:1]
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, mid, 60)
    return mid


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_workers_probe_serves_the_counts_of_every_process_of_its_pool(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pool: str,
) -> None:
    # Given a real worker of either pool, counting into a folder of the test's own
    metrics_dir = tmp_path / "metrics"
    cluster = cluster_factory(make_settings(metrics_dir=str(metrics_dir)))
    worker = cluster.start_worker(concurrency=2, pool=pool)
    url = _probe_url(cluster, worker)
    # When it runs a migration (in prefork, every step in a child process)
    mid = _migrate(cluster, tmp_path)
    # Then its probe's /metrics counts every row, once, at each stage
    resp = requests.get(f"{url}/metrics", timeout=5)
    assert resp.status_code == 200, resp.text
    text = resp.text
    for stage in ("extracted", "transformed", "loaded"):
        assert _sample(text, f'baton_rows_total{{stage="{stage}"}}') == CUSTOMERS, stage
    assert _sample(text, 'baton_steps_total{outcome="done",step="load"}') >= 1
    assert _sample(text, 'baton_step_seconds_count{step="extract"}') >= 1
    assert mid not in text
    # And its counts live in its own folder, which it removes when it stops
    assert [p.name for p in metrics_dir.iterdir()] == [f"baton-metrics-worker-{worker.pid}"]
    assert worker.terminate() == 0, worker.log()
    assert list(metrics_dir.iterdir()) == []


class _Events:
    """Every Celery event on the test's broker, captured on a thread (what Flower does)."""

    def __init__(self, cluster: Cluster) -> None:
        self.seen: list[dict[str, Any]] = []
        self._conn = cluster.app.connection_for_read()
        self._receiver = cluster.app.events.Receiver(self._conn, handlers={"*": self.seen.append})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception:  # the connection closed under it at the end
            return

    def types(self, hostname: str | None = None) -> set[str]:
        return {
            e["type"] for e in list(self.seen) if hostname is None or e.get("hostname") == hostname
        }

    def task_names(self, kind: str) -> set[str]:
        return {str(e.get("name")) for e in list(self.seen) if e["type"] == kind}

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)
        self._conn.release()


def test_with_task_events_on_a_worker_announces_each_task_it_runs(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    # Given a real worker and its publisher with BATON_TASK_EVENTS=on, and a listener (steps
    # not chained: each step is a task of its own, so each kind is announced)
    cluster = cluster_factory(make_settings(task_events="on", chain_steps=False))
    events = _Events(cluster)
    try:
        worker = cluster.start_worker()
        # When a small migration runs
        _migrate(cluster, tmp_path)
        # Then the worker said it is online, and sent an event for each task it ran
        wait_for(lambda: "task-succeeded" in events.types(worker.name), 10, 0.1, "task events")
        assert "worker-online" in events.types(worker.name)
        assert {"baton.extract", "baton.transform", "baton.load"} <= events.task_names(
            "task-received"
        )
        # And the publisher announced the tasks it sent
        assert "baton.plan" in events.task_names("task-sent")
    finally:
        events.close()


@pytest.mark.skipif(importlib.util.find_spec("flower") is None, reason="Flower is not installed")
def test_flower_shows_batons_workers_and_tasks(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    # Given a real worker with task events on, and Flower on the same broker and prefix
    settings = make_settings(task_events="on")
    cluster = cluster_factory(settings)
    worker = cluster.start_worker()
    port = free_port()
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}
    env["FLOWER_UNAUTHENTICATED_API"] = "true"  # Flower 2 serves /api only with auth or this
    log = open(tmp_path / "flower.log", "ab")
    argv = ["-m", "celery", "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"]
    flower = subprocess.Popen(
        [sys.executable, *argv],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> Any:
        try:
            resp = requests.get(f"{base}{path}", timeout=5)
        except requests.RequestException:
            return None
        return resp.json() if resp.ok else None

    try:
        # When Flower is asked for the workers
        workers = wait_for(
            lambda: (w := get("/api/workers?refresh=1")) and worker.name in w and w,
            20,
            0.5,
            "Baton's worker in Flower",
        )
        # Then Baton's worker is there
        assert worker.name in workers
        # And after a small migration, its tasks are there too: its extracts at least (a
        # chunk's first step is always a message; the steps after it run chained, in the
        # worker that did the step before, and are no task of their own)
        _migrate(cluster, tmp_path)
        tasks = wait_for(
            lambda: (
                (t := get("/api/tasks"))
                and any(v.get("name") == "baton.extract" for v in t.values())
                and t
            ),
            20,
            0.5,
            "Baton's tasks in Flower",
        )
        assert any(v.get("name") == "baton.extract" for v in tasks.values())
    finally:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()
        log.close()
