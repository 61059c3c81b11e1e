"""The engine's Prometheus counters, counted by real steps (the in-process driver) and served
by a worker's probe; the API's /metrics, which never queries the state DB on a scrape."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from api.live import QueryCounter
from api.metrics import StateGauges
from etl_tasks.chunk_lease import Claim, claim
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.steps.common import run_claimed
from etl_tasks.steps.extract import extract_claimed
from etl_tasks.sweeper import sweep
from tests.data import bad_lines, build_source, spec_for, sqlite_url, submit
from tests.harness import Driver
from tests.integration.api_support import Api, Spec
from worker.probe import ProbeState, start_probe

STAGES = ("extracted", "transformed", "loaded", "quarantined")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _rows() -> dict[str, float]:
    return {stage: _value("baton_rows_total", stage=stage) for stage in STAGES}


def _delta(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in _rows().items()}


def _chunks(driver: Driver, **where: Any) -> int:
    with driver.rt.db.reading() as s:
        query = select(func.count()).select_from(Chunk).filter_by(**where)
        return int(s.scalar(query) or 0)


def _first_message(driver: Driver, task: str) -> int:
    """Deliver messages until one for ``task`` is next; return its chunk id."""
    while driver.publisher.queue[0][0] != task:
        driver.deliver(*driver.publisher.queue.popleft())
    return int(driver.publisher.queue[0][1]["chunk_id"])


def test_a_migration_counts_each_row_once_per_stage_and_the_probe_serves_the_counts(
    driver: Driver, tmp_path: Path
) -> None:
    # Given a source of 300 customers and 300 order lines, some of which no transform takes
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=300, orders=100, bad_every=7)
    bad = bad_lines(100, 3, 7)
    spec = spec_for(legacy, sqlite_url(tmp_path / "target.db"), chunk_rows=100)
    rows_before = _rows()
    loads_before = _value("baton_steps_total", step="load", outcome="done")
    timed_before = _value("baton_step_seconds_count", step="load")
    # When the driver runs the migration to its end
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert driver.state(mid) == "succeeded"
    # Then every row was counted once at each stage it passed
    assert _delta(rows_before) == {
        "extracted": 600,
        "transformed": 600 - bad,
        "loaded": 600 - bad,
        "quarantined": bad,
    }
    # And each chunk's load counted as one step done, with its duration
    done = _chunks(driver, state="done")
    assert _value("baton_steps_total", step="load", outcome="done") - loads_before == done
    assert _value("baton_step_seconds_count", step="load") - timed_before == done
    # And a worker's probe serves those counters as Prometheus text
    server = start_probe(ProbeState(), "127.0.0.1", 0)
    assert server is not None
    try:
        port = server.server_address[1]
        resp = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["Cache-Control"] == "no-store"
    loaded = _value("baton_rows_total", stage="loaded")
    assert f'baton_rows_total{{stage="loaded"}} {loaded}' in resp.text
    assert "baton_step_seconds_bucket{" in resp.text
    assert mid not in resp.text  # no series names a migration


def test_a_step_whose_commit_lost_its_lease_counts_no_row(driver: Driver, tmp_path: Path) -> None:
    # Given an extract that claimed its chunk
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=50, orders=1)
    spec = spec_for(legacy, sqlite_url(tmp_path / "target.db"), chunk_rows=100)
    spec["streams"] = spec["streams"][:1]
    submit(driver.rt.db, driver.publisher, spec)
    chunk_id = _first_message(driver, "baton.extract")
    c = claim(driver.rt, chunk_id, "extract")
    assert c is not None
    before = _rows()

    def taken_over_then_extract(claimed: Claim) -> None:
        # When another worker takes the chunk over before this extract commits
        with driver.rt.db.session() as s:
            s.execute(update(Chunk).where(Chunk.id == chunk_id).values(lease_token=c.token + 1))
        extract_claimed(driver.rt, claimed)

    run_claimed(driver.rt, c, taken_over_then_extract)
    # Then its commit changed nothing, and no row was counted
    assert _delta(before) == dict.fromkeys(STAGES, 0.0)
    assert _chunks(driver, step="extract") == 1


def test_retries_lease_expiries_and_sweeper_repairs_are_counted(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    driver = Driver(make_settings(retry_backoff_s=0.01))
    try:
        legacy = sqlite_url(tmp_path / "legacy.db")
        build_source(legacy, customers=50, orders=1)
        spec = spec_for(legacy, sqlite_url(tmp_path / "target.db"), chunk_rows=100)
        spec["streams"] = spec["streams"][:1]
        submit(driver.rt.db, driver.publisher, spec)
        chunk_id = _first_message(driver, "baton.extract")
        retries = _value("baton_step_retries_total", step="extract")
        outcomes = _value("baton_steps_total", step="extract", outcome="retry")
        expiries = _value("baton_lease_expiries_total", kind="chunk")
        repairs = _value("baton_sweeper_repairs_total", kind="lease_expired")
        # When an extract meets a transient error
        c = claim(driver.rt, chunk_id, "extract")
        assert c is not None

        def down(_: Claim) -> None:
            raise TransientError("the source is down")

        assert run_claimed(driver.rt, c, down) == "retry"
        # Then it counts as a retry
        assert _value("baton_step_retries_total", step="extract") - retries == 1
        assert _value("baton_steps_total", step="extract", outcome="retry") - outcomes == 1
        # When the next claim's worker dies holding the lease, and the lease runs out
        with driver.rt.db.session() as s:
            s.execute(update(Chunk).where(Chunk.id == chunk_id).values(not_before=None))
        assert claim(driver.rt, chunk_id, "extract") is not None
        with driver.rt.db.session() as s:
            s.execute(
                update(Chunk)
                .where(Chunk.id == chunk_id)
                .values(lease_expires_at=driver.rt.db.now(s) - timedelta(seconds=5))
            )
        # Then the sweeper re-publishes it as a lease that expired
        assert chunk_id in sweep(driver.rt).republished
        assert _value("baton_sweeper_repairs_total", kind="lease_expired") - repairs == 1
        # And the step that takes it over counts one expired lease
        driver.run()
        assert _value("baton_lease_expiries_total", kind="chunk") - expiries == 1
        assert _chunks(driver, state="done") == 1
    finally:
        driver.close()


def test_a_scrape_of_the_api_sends_no_query_to_the_state_db(api: Api, spec: Spec) -> None:
    # Given an API with a migration, whose gauges were read once
    api.created(spec)
    gauges: StateGauges = api.app.extensions["baton-metrics"]
    clock = [1000.0]
    gauges.clock = lambda: clock[0]
    first = api.client.get("/metrics").get_data(as_text=True)
    assert 'baton_migrations{state="pending"} 1.0' in first
    counter = QueryCounter(api.app.extensions["baton"].db)
    # When it is scraped again and again within BATON_METRICS_CACHE_S
    for _ in range(5):
        clock[0] += gauges.ttl_s / 10
        resp = api.client.get("/metrics")
        assert resp.status_code == 200
        # Then each answer has the gauges, from memory: not one statement
        assert 'baton_migrations{state="pending"} 1.0' in resp.get_data(as_text=True)
    assert counter.count == 0
    assert f"baton_state_age_seconds {gauges.ttl_s / 2}" in resp.get_data(as_text=True)
    # And once they are older than that, one scrape reads them again, once
    clock[0] += gauges.ttl_s
    api.client.get("/metrics")
    one_read = counter.count
    assert one_read > 0
    for _ in range(3):
        api.client.get("/metrics")
    assert counter.count == one_read
    # And the API counts its requests by route, never by migration id
    text = api.client.get("/metrics").get_data(as_text=True)
    assert 'baton_api_requests_total{method="GET",route="/metrics",status="200"}' in text
    assert 'route="/api/v1/migrations"' in text
