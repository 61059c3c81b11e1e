"""Fixtures for tests with real worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from tests.harness import ROOT, WorkerProcess
from worker.celery_app import CeleryPublisher, create_celery


class Cluster:
    """Real workers sharing one test's settings, cleaned up whatever happens."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []
        self.db = StateDB(settings.database_url)
        self.app = create_celery(settings)
        self.publisher = CeleryPublisher(self.app)
        self._n = 0

    def start_worker(
        self,
        concurrency: int = 2,
        wait: bool = True,
        pool: str = "threads",
        root: Path = ROOT,
        **env: str,
    ) -> WorkerProcess:
        self._n += 1
        proc = WorkerProcess(
            self.settings, f"w{self._n}", self.log_dir, concurrency, env, pool, root
        )
        self.workers.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()}" for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.db.dispose()
        self.app.close()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[[Settings], Cluster]]:
    made: list[Cluster] = []

    def make(settings: Settings) -> Cluster:
        c = Cluster(settings, tmp_path)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
