"""An endpoint that accepts and never answers cannot hang the API or a worker.

Every connection is bounded (connect, each answer, name resolution), preflight
as a whole has a deadline, and at most BATON_PREFLIGHT_CONCURRENCY preflights
run per API process: the rest are answered 429 at once, so request threads stay
free for everything else.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Chunk, Migration
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.harness import WorkerProcess, wait_for
from tests.security.listeners import Listener
from tests.tcp_proxy import TcpProxy
from worker.celery_app import CeleryPublisher, create_celery

KINDS = ("postgresql", "mysql", "mariadb")
DEADLINE_S = 2.0


@pytest.fixture
def silent() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


def test_ten_submits_to_silent_endpoints_never_take_the_api_down(
    live_factory: Any, silent: Listener, tmp_path: Path
) -> None:
    # Given endpoints of every kind that accept connections and never speak, given by
    # allowed variables with credentials in them
    env = {
        f"SILENT_{kind.upper()}": f"{kind}://app:pw@127.0.0.1:{silent.port}/legacy"
        for kind in KINDS
    }
    live = live_factory(env=env, preflight_timeout_s=DEADLINE_S)
    target = sqlite_url(tmp_path / "target.db")
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=5, orders=1)
    specs = [
        {
            "name": f"silent-{i}",
            "source": {"url_env": f"SILENT_{KINDS[i % 3].upper()}"},
            "target": {"url": target},
            "streams": [{"source_table": "Customer", "target_table": "c", "create_target": True}],
        }
        for i in range(10)
    ]
    # When ten are submitted at once, while /healthz is asked every 0.2 s
    health: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            started = time.monotonic()
            assert requests.get(f"{live.api.url}/healthz", timeout=5).ok
            health.append(time.monotonic() - started)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def submit(spec: dict[str, Any]) -> tuple[int, float]:
        started = time.monotonic()
        resp = live.submit(spec)
        return resp.status_code, time.monotonic() - started

    try:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(submit, specs))
    finally:
        stop.set()
        watcher.join()
    # Then every submit is a 4xx within the deadline, /healthz always answered within a
    # second, and nothing was created
    assert all(400 <= code < 500 for code, _ in answers), answers
    assert {code for code, _ in answers} <= {422, 429}
    assert max(took for _, took in answers) < DEADLINE_S + 1.5, answers
    assert health and max(health) < 1.0, health
    assert live.migrations() == 0
    assert not (tmp_path / "target.db").exists()


def test_a_refused_preflight_over_the_limit_says_when_to_retry(
    live_factory: Any, silent: Listener, tmp_path: Path
) -> None:
    live = live_factory(
        env={"SILENT_PG": f"postgresql://app@127.0.0.1:{silent.port}/x"},
        preflight_timeout_s=DEADLINE_S,
        preflight_concurrency=1,
    )
    spec = {
        "name": "silent",
        "source": {"url_env": "SILENT_PG"},
        "target": {"url": sqlite_url(tmp_path / "t.db")},
        "streams": [{"source_table": "a", "target_table": "b"}],
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(live.submit, spec)
        time.sleep(0.3)
        second = live.submit(spec)
        held = first.result()
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert held.status_code == 422
    message = held.json()["errors"][0]["message"]
    assert message == f"the source did not answer in {DEADLINE_S:g} s"


def test_a_worker_whose_target_goes_silent_retries_and_finishes(
    make_settings: Any, pg_url: str, tmp_path: Path
) -> None:
    # Given a migration into PostgreSQL through a proxy, and one real worker
    settings = make_settings()
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=3000, orders=10)
    proxy = TcpProxy("127.0.0.1", 5432).start()
    target = make_url(pg_url).set(port=proxy.port).render_as_string(hide_password=False)
    spec = spec_for(legacy, target, chunk_rows=100)
    spec["streams"] = spec["streams"][:1]
    db = StateDB(settings.database_url)
    app = create_celery(settings)
    worker = WorkerProcess(settings, "silent", tmp_path)
    try:
        worker.wait_ready()
        migration_id = submit(db, CeleryPublisher(app), spec)
        wait_for(lambda: _chunks(db, migration_id, "done") >= 3, 60, what="some chunks done")
        # When the target goes silent mid-migration (connections open, no answers)
        proxy.freeze()
        frozen_at = time.monotonic()

        def cut_and_retrying() -> bool:
            errors = _errors(db, migration_id)
            return any(
                "unavailable" in (e or "") or "stopped answering" in (e or "") for e in errors
            )

        wait_for(cut_and_retrying, settings.lease_s * 3, what="the silent step to give up")
        gave_up_after = time.monotonic() - frozen_at
        proxy.thaw()
        # Then the stuck step gave up within its lease, and the migration finishes by itself
        wait_for(lambda: _state(db, migration_id) == "succeeded", 90, what="success")
    finally:
        proxy.stop()
        worker.close()
        app.close()
    assert gave_up_after < settings.lease_s  # cut by the watchdog, or by a connect timeout
    with db.reading() as s:
        loaded = s.scalar(
            select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == migration_id)
        )
    assert loaded == 3000
    db.dispose()


def _chunks(db: StateDB, migration_id: str, state: str) -> int:
    with db.reading() as s:
        query = select(func.count()).where(Chunk.migration_id == migration_id, Chunk.state == state)
        return int(s.scalar(query) or 0)


def _errors(db: StateDB, migration_id: str) -> list[str | None]:
    with db.reading() as s:
        return list(s.scalars(select(Chunk.last_error).where(Chunk.migration_id == migration_id)))


def _state(db: StateDB, migration_id: str) -> str:
    with db.reading() as s:
        mig = s.get(Migration, migration_id)
        return mig.state if mig is not None else ""
