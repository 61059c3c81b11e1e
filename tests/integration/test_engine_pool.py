"""Each of a worker's concurrent steps keeps its connection to a source or target between
steps: the engine's pool holds as many as the worker runs steps at once, so no step pays
for a new server session (a backend's start, its catalog caches, the session settings)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url

from etl_tasks.boundary.sql_urls import SqlEndpoint
from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from tests.harness import QueuePublisher


def test_every_concurrent_step_keeps_its_connection(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    # Given a worker that runs four steps at once, all reaching one PostgreSQL database
    rt = Runtime(make_settings(worker_concurrency=4), QueuePublisher())
    try:
        engine = rt.engines.get(SqlEndpoint(make_url(pg_url)))
        started = threading.Barrier(4)

        def step() -> None:
            with engine.connect() as conn:
                started.wait(timeout=10)  # all four hold a connection at once
                conn.execute(text("SELECT 1"))

        # When the four steps end
        threads = [threading.Thread(target=step) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        # Then all four connections stay pooled for the next steps, none was closed
        assert engine.pool.checkedin() == 4  # type: ignore[attr-defined]
    finally:
        rt.close()
