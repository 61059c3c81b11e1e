"""Verification through real worker processes: a SIGKILL in the middle of a range costs time,
never the report, and never counts a range twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import func, select

from etl_tasks.publisher import publish_plan
from etl_tasks.settings import Settings
from etl_tasks.state.enums import RangeState
from etl_tasks.state.models import Event, VerificationRange
from etl_tasks.verification.report import latest_report
from etl_tasks.verification.requests import request_verification
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.harness import wait_for

pytestmark = pytest.mark.slow


def _held_by(cluster: Cluster, owner: str) -> list[int]:
    with cluster.db.reading() as s:
        return list(
            s.scalars(
                select(VerificationRange.id).where(
                    VerificationRange.lease_owner == owner,
                    VerificationRange.state == RangeState.RUNNING,
                )
            )
        )


def _finished(cluster: Cluster, migration_id: str) -> dict[str, Any] | None:
    report = latest_report(cluster.db, migration_id)
    return report if report["state"] in ("equal", "different", "failed") else None


def test_sigkill_during_verification_the_report_still_completes_once(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    # Given a migration that succeeded, and one worker
    cluster = cluster_factory(make_settings())
    victim = cluster.start_worker()
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=2000, orders=300, bad_every=13)
    spec = spec_for(source, pg_url, chunk_rows=250)
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, mid)
    # And a target table that nobody can read for now, so verify tasks stay in flight
    lock = psycopg2.connect(pg_url)
    with lock.cursor() as cur:
        cur.execute('LOCK TABLE "Customers" IN ACCESS EXCLUSIVE MODE')
    try:
        # When a verification starts and the worker is SIGKILLed while it holds ranges
        request_verification(cluster.db, mid, "test")
        publish_plan(cluster.publisher, mid)
        held = wait_for(lambda: _held_by(cluster, victim.name), 60, 0.02, "a range in flight")
        victim.kill()
    finally:
        lock.rollback()
        lock.close()
    # Then another worker takes the ranges over once their lease expires
    survivor = cluster.start_worker()
    report = wait_for(lambda: _finished(cluster, mid), 90, 0.2, "the verification")
    # And the report is complete and exact: every row counted once, every range recorded once
    assert report["state"] == "equal", (report, cluster.logs())
    by_name = {st["name"]: st for st in report["streams"]}
    assert (by_name["Customers"]["source_rows"], by_name["Customers"]["compared"]) == (2000, 2000)
    assert by_name["order_lines"]["source_rows"] == 900
    with cluster.db.reading() as s:
        ranges = list(s.scalars(select(VerificationRange)))
        finished = s.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "verification_finished")
        )
    assert finished == 1
    assert all(r.state == RangeState.DONE and r.recorded_token == r.lease_token for r in ranges)
    taken = [r for r in ranges if r.id in held]
    assert taken and all(r.worker == survivor.name and r.attempts >= 2 for r in taken)
