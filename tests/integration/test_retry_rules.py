"""Which errors wait and which fail: an outage waits; a working server's same answer does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etl_tasks.connectors.sql.target import SqlTarget
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings
from etl_tasks.views import migration_view
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.harness import Driver


def _run_until_settled(driver: Driver, migration_id: str, rounds: int = 40) -> dict[str, Any]:
    """Deliver, and let the sweeper re-send what backs off, until the migration settles."""
    from etl_tasks.sweeper import sweep

    for _ in range(rounds):
        driver.run()
        view = migration_view(driver.rt.db, migration_id)
        if view["state"] != "running":
            return view
        _wait_backoff(driver)
        sweep(driver.rt)
    return migration_view(driver.rt.db, migration_id)


def _wait_backoff(driver: Driver) -> None:
    import time

    time.sleep(driver.rt.settings.retry_backoff_max_s + 0.05)


@pytest.mark.parametrize(
    ("connection", "fails"), [(False, True), (True, False)], ids=["server-answer", "outage"]
)
def test_the_same_answer_from_a_working_server_fails_the_chunk(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    connection: bool,
    fails: bool,
) -> None:
    # Given a target that answers every load with the same transient-looking error
    def begin_chunk(self: SqlTarget, chunk: Any) -> Any:
        raise TransientError("target unavailable: deadlock detected", connection=connection)

    monkeypatch.setattr(SqlTarget, "begin_chunk", begin_chunk)
    settings = make_settings(max_attempts=3, retry_backoff_s=0.05, retry_backoff_max_s=0.1)
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=10, orders=1)
    spec = spec_for(legacy, sqlite_url(tmp_path / "t.db"))
    spec["streams"] = spec["streams"][:1]
    driver = Driver(settings)
    try:
        mid = submit(driver.rt.db, driver.publisher, spec)
        # When the loads are retried
        view = _run_until_settled(driver, mid, rounds=12)
    finally:
        driver.close()
    # Then a working server's identical answer fails the migration after max_attempts, with
    # the answer as its reason; an outage keeps waiting (within its retry window)
    if fails:
        assert view["state"] == "failed" and "deadlock detected" in view["error"], view
    else:
        assert view["state"] == "running", view
        assert "deadlock detected" in (view["waiting_reason"] or "")
