"""Retention prunes only old finished migrations, keeping their summaries; ``--purge``'s
endpoint removes quarantined values at once, for operators, once the migration ended."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from etl_tasks.constants import STAGE_KEY
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Event, Migration, QuarantinedRow, Stream
from etl_tasks.sweeper import sweep
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer, error_body, make_api

ROW = {"CustomerId": 5, "Email": "bob@example.com"}
REASON = "Email: not an address: 'bob@example'"


@pytest.fixture
def both(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Api, Driver]]:
    """The API (tokens on) and a driver on one state DB: SQLite, or PostgreSQL when a test
    asks for it (``indirect`` parametrization)."""
    state: dict[str, Any] = {}
    if getattr(request, "param", "sqlite") == "postgresql":
        state["database_url"] = request.getfixturevalue("pg_url")
    settings = make_settings(auth="on", retention_days=30, **state)
    driver = Driver(settings)
    yield make_api(settings), driver
    driver.close()


def _run(api: Api, driver: Driver, spec: Spec, operator: dict[str, str]) -> str:
    mid = api.created(spec, operator)
    for task, _, kwargs in api.publisher.sent:
        driver.publisher.queue.append((task, dict(kwargs)))
    api.publisher.sent.clear()
    driver.run_to_end(mid)
    assert driver.state(mid) == "succeeded"
    return mid


def _quarantine(driver: Driver, mid: str, n: int = 2) -> None:
    """Set ``n`` rows aside in the migration's first chunk, as a load would have."""
    with driver.rt.db.session() as s:
        chunk = s.scalars(select(Chunk).where(Chunk.migration_id == mid)).first()
        assert chunk is not None
        for i in range(n):
            s.add(
                QuarantinedRow(
                    migration_id=mid,
                    stream_id=chunk.stream_id,
                    chunk_id=chunk.id,
                    key=f"[{i}]",
                    source_key=f"[{i}]",
                    reason=REASON,
                    row=ROW,
                    fencing_token=1,
                    created_at=s.scalar(select(func.now())) or chunk.created_at,
                )
            )


def _count(driver: Driver, model: Any, mid: str) -> int:
    with driver.rt.db.reading() as s:
        return int(
            s.scalar(select(func.count()).select_from(model).where(model.migration_id == mid)) or 0
        )


def _age(driver: Driver, mid: str, days: float) -> None:
    with driver.rt.db.session() as s:
        now = driver.rt.db.now(s)
        s.execute(
            update(Migration)
            .where(Migration.id == mid)
            .values(finished_at=now - timedelta(days=days))
        )


def _stage(driver: Driver, mid: str) -> list[str]:
    """Put a staged blob for each of the migration's chunks; return the Redis keys."""
    with driver.rt.db.reading() as s:
        ids = list(s.scalars(select(Chunk.id).where(Chunk.migration_id == mid)))
    for chunk_id in ids:
        driver.rt.staging.put(chunk_id, 7, "rows", b"x")
    prefix = driver.rt.settings.key_prefix
    return [prefix + STAGE_KEY.format(chunk_id=i, token=7, kind="rows") for i in ids]


@pytest.mark.parametrize("both", ["sqlite", "postgresql"], indirect=True)
def test_retention_prunes_only_old_finished_migrations_and_keeps_their_summary(
    both: tuple[Api, Driver], spec: Spec
) -> None:
    api, driver = both
    operator = bearer(api.token("operator"))
    old, recent = _run(api, driver, spec, operator), _run(api, driver, spec, operator)
    running = api.created(spec, operator)  # never driven: not finished, never pruned
    for mid in (old, recent):
        _quarantine(driver, mid)
    _age(driver, old, 31)
    _age(driver, recent, 29)
    before = api.client.get(f"{MIGRATIONS}/{old}", headers=operator).get_json()
    old_keys, recent_keys = _stage(driver, old), _stage(driver, recent)
    redis = driver.rt.broker_redis()
    assert redis is not None and redis.exists(*old_keys) == len(old_keys) > 0

    report = sweep(driver.rt)

    assert report.pruned == [old]
    # The old one's details are gone: chunks, events (but the one saying so), quarantine
    assert _count(driver, Chunk, old) == _count(driver, QuarantinedRow, old) == 0
    with driver.rt.db.reading() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.migration_id == old)))
    assert kinds == ["pruned"]
    assert redis.exists(*old_keys) == 0
    # ... its summary answers as before, and says the details were pruned
    after = api.client.get(f"{MIGRATIONS}/{old}", headers=operator).get_json()
    for field in ("state", "rows_loaded", "rows_quarantined", "chunks_total", "chunks_done"):
        assert after[field] == before[field], field
    assert [(s["name"], s["rows_loaded"]) for s in after["streams"]] == [
        (s["name"], s["rows_loaded"]) for s in before["streams"]
    ]
    assert after["rows_quarantined"] == 2
    assert after["pruned"]["after_days"] == 30
    assert "pruned after 30 days" in after["pruned"]["message"]
    assert _count(driver, Stream, old) == 2  # the streams stay, with their states
    # The recent and the unfinished ones are untouched, their staged keys too
    assert _count(driver, Chunk, recent) > 0 and _count(driver, QuarantinedRow, recent) == 2
    assert redis.exists(*recent_keys) == len(recent_keys)
    assert api.client.get(f"{MIGRATIONS}/{recent}", headers=operator).get_json()["pruned"] is None
    assert _count(driver, Event, running) > 0  # the sweeper started it; nothing was pruned
    # A second pass has nothing to do
    assert sweep(driver.rt).pruned == []


def test_retention_zero_keeps_everything(
    make_settings: Callable[..., Settings], spec: Spec
) -> None:
    settings = make_settings(retention_days=0)
    driver = Driver(settings)
    try:
        api = make_api(settings)
        mid = _run(api, driver, spec, {})
        _age(driver, mid, 3650)
        assert sweep(driver.rt).pruned == []
        assert _count(driver, Chunk, mid) > 0
    finally:
        driver.close()


def test_a_pruned_failed_migration_cannot_be_retried(both: tuple[Api, Driver], spec: Spec) -> None:
    api, driver = both
    operator = bearer(api.token("operator"))
    mid = _run(api, driver, spec, operator)
    with driver.rt.db.session() as s:
        s.execute(update(Migration).where(Migration.id == mid).values(state="failed"))
    _age(driver, mid, 31)
    assert sweep(driver.rt).pruned == [mid]
    body = error_body(api.control(mid, "retry", operator), 409)
    assert "retention" in body["error"]


def test_purge_removes_values_and_keys_for_operators_only_once_the_migration_ended(
    both: tuple[Api, Driver], spec: Spec
) -> None:
    api, driver = both
    operator = bearer(api.token("operator", "alice"))
    viewer = bearer(api.token("viewer"))
    mid = _run(api, driver, spec, operator)
    _quarantine(driver, mid)
    path = f"{MIGRATIONS}/{mid}/quarantine/purge"
    # A viewer may not
    error_body(api.client.post(path, headers=viewer), 403)
    # A running migration may still quarantine rows: 409, nothing changed
    running = api.created(spec, operator)
    with driver.rt.db.session() as s:
        s.execute(update(Migration).where(Migration.id == running).values(state="running"))
    body = error_body(
        api.client.post(f"{MIGRATIONS}/{running}/quarantine/purge", headers=operator), 409
    )
    assert "running" in body["error"]
    error_body(api.client.post(f"{MIGRATIONS}/{'0' * 32}/quarantine/purge", headers=operator), 404)
    # An operator purges a finished one
    resp = api.client.post(path, headers=operator)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"migration_id": mid, "purged": 2}
    items = api.client.get(f"{MIGRATIONS}/{mid}/quarantine", headers=operator).get_json()["items"]
    assert [(i["row"], i["key"]) for i in items] == [(None, "null"), (None, "null")]
    assert {i["reason"] for i in items} == {"Email: not an address: '***'"}
    view = api.client.get(f"{MIGRATIONS}/{mid}", headers=operator).get_json()
    assert view["rows_quarantined"] == 2  # the counts stay
    with driver.rt.db.reading() as s:
        [event] = s.scalars(
            select(Event).where(Event.migration_id == mid, Event.kind == "quarantine_purged")
        )
        assert event.actor is not None and "alice" in event.actor
        assert not list(
            s.scalars(
                select(QuarantinedRow.source_key).where(
                    QuarantinedRow.migration_id == mid, QuarantinedRow.source_key.is_not(None)
                )
            )
        )
    # Again: nothing left to purge
    assert api.client.post(path, headers=operator).get_json()["purged"] == 0


def test_a_verification_under_way_holds_pruning_back_and_a_pruned_one_cannot_be_verified(
    both: tuple[Api, Driver], spec: Spec
) -> None:
    api, driver = both
    operator = bearer(api.token("operator"))
    mid = _run(api, driver, spec, operator)
    path = f"{MIGRATIONS}/{mid}/verify"
    assert api.client.post(path, headers=operator).status_code == 202
    _age(driver, mid, 31)
    # While the verification waits or runs, its migration keeps its chunks
    assert sweep(driver.rt).pruned == []
    assert _count(driver, Chunk, mid) > 0
    driver.run()  # the verification's ranges
    assert api.client.get(path, headers=operator).get_json()["state"] == "equal"
    assert sweep(driver.rt).pruned == [mid]
    body = error_body(api.client.post(path, headers=operator), 409)
    assert "retention" in body["error"]
