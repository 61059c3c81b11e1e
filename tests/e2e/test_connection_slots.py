"""Migrations sharing one legacy server through real workers: its connection slots hold."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from etl_tasks.settings import Settings
from etl_tasks.system_slots import System, SystemSlots
from tests.checks import assert_migrated
from tests.data import build_source, spec_for, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done

pytestmark = pytest.mark.slow


def test_three_migrations_from_one_server_never_pass_its_limit(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    pg_url_factory: Callable[[], str],
) -> None:
    # Given one legacy PostgreSQL database, a limit of 2 steps at once on it, and two
    # workers that could run 6 steps at once
    settings = make_settings(max_connections=2)
    cluster = cluster_factory(settings)
    for _ in range(2):
        cluster.start_worker(concurrency=3)
    source = pg_url_factory()
    build_source(source, customers=900, orders=150, bad_every=0)
    host_db = source.split("@", 1)[1]
    system = System(f"postgresql://{host_db}", 2)
    slots = SystemSlots(
        redis.Redis.from_url(settings.effective_staging_url), settings.key_prefix, 30
    )
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, len(slots.holders(system)))
            stop.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # When three migrations read it at once, each into a database of its own
    try:
        specs = [spec_for(source, pg_url_factory(), chunk_rows=150) for _ in range(3)]
        ids = [submit(cluster.db, cluster.publisher, spec) for spec in specs]
        for mid in ids:
            wait_done(cluster, mid)
    finally:
        stop.set()
        watcher.join()
    # Then each is exact, the server never had more than two of their steps at once,
    # and the steps that found it full waited instead of failing
    for mid, spec in zip(ids, specs, strict=True):
        assert_migrated(cluster.db, mid, spec, expected_bad={"Customers": 0, "order_lines": 0})
    assert most == 2, most
    logs = "".join(w.log_path.read_text(errors="replace") for w in cluster.workers)
    assert "waiting for a connection slot on postgresql://" in logs
    assert slots.holders(system) == []
