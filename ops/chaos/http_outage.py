"""The HTTP outage scenario: a migration into an HTTP API that is down for a minute mid-way.

The demo legacy DB is migrated by the lab's workers into a real HTTP API
(:mod:`ops.chaos.http_api`, upserting nothing: it stores each request it takes,
de-duplicated only by ``Idempotency-Key``). Once a fifth of the rows has
arrived, the API stops listening for ``outage_s`` seconds. The migration must
wait meanwhile, saying why (``waiting_reason``: "target unavailable: …"), resume
by itself once the API listens again, and finish with every source row that
maps stored exactly once (the dirty ones quarantined).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.policy import Boundary
from etl_tasks.control import create_migration
from etl_tasks.preflight import preflight
from etl_tasks.publisher import Publisher, publish_plan
from etl_tasks.spec import parse_spec
from etl_tasks.views import migration_view
from ops.chaos.faults import Lab
from ops.chaos.http_api import HttpApi
from ops.demo_data import DemoStats, demo_spec

Out = Callable[[str], None]
OUTAGE_S = 60.0
STRIKE_AT = 0.2  # of the rows that map: the outage begins once this share has arrived
FINISH_TIMEOUT_S = 300.0  # after the API is back
WAITING = "target unavailable"
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class OutageResult:
    """What the scenario saw, and what the API holds at the end."""

    state: str = "not run"
    outage_s: float = 0.0
    rows_before: int = 0  # rows the API held when it went down
    waited: str | None = None  # the waiting_reason seen while it was down
    resumed_s: float | None = None  # from the API's return to the next row stored
    finished_s: float | None = None  # from the API's return to the migration's end
    rows_stored: int = 0
    rows_expected: int = 0
    rows_duplicated: int = 0
    requests_resent: int = 0  # requests sent again under a key the API had taken
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        resumed = f"{self.resumed_s:.1f} s" if self.resumed_s is not None else "never"
        finished = f"{self.finished_s:.1f} s" if self.finished_s is not None else "never"
        return (
            f"http outage {self.outage_s:.0f} s at {self.rows_before:,} rows: {self.state}; "
            f"waited ({self.waited or 'no waiting_reason seen'}); resumed {resumed} and "
            f"finished {finished} after the API came back; {self.rows_stored:,}/"
            f"{self.rows_expected:,} rows stored, {self.rows_duplicated} duplicated, "
            f"{self.requests_resent} requests re-sent under a known key"
        )


def http_spec(stats: DemoStats, url: str) -> dict[str, Any]:
    """The demo migration, into the HTTP API instead of a database."""
    spec = demo_spec(f"sqlite:///{Path(stats.path).resolve()}", "unused")
    spec["name"] = "chaos-http-outage"
    spec["target"] = {"http": {"url": url, "batch_rows": 500, "timeout_s": 2}}
    for stream in spec["streams"]:
        stream.pop("create_target", None)
    return spec


def target_keys(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Each stream's target key: the target columns its source key columns are copied to."""
    out: dict[str, list[str]] = {}
    for stream in spec["streams"]:
        key = stream["key"] if isinstance(stream["key"], list) else [stream["key"]]
        copied = {v: k for k, v in stream["columns"].items() if isinstance(v, str)}
        out[stream["target_table"]] = [copied[k] for k in key]
    return out


def run_outage(
    lab: Lab, stats: DemoStats, publisher: Publisher, out: Out, outage_s: float = OUTAGE_S
) -> OutageResult:
    """Run the scenario on the lab's workers; the API is this process's own."""
    result = OutageResult(outage_s=outage_s)
    api = HttpApi(token=None, max_rows=1000).start()
    try:
        spec = http_spec(stats, api.url)
        parsed = parse_spec(spec)
        keys = preflight(parsed, Boundary.from_settings(lab.settings))
        migration_id, _ = create_migration(lab.db, parsed, keys)
        publish_plan(publisher, migration_id)
        tables = target_keys(spec)
        result.rows_expected = sum(
            stats.rows[s["source_table"]] - stats.dirty.get(s["source_table"], 0)
            for s in spec["streams"]
        )
        _outage(lab, api, migration_id, tables, result)
        _check(lab, api, migration_id, tables, result)
    finally:
        api.stop()
    out(result.line())
    return result


def _stored(api: HttpApi, tables: dict[str, list[str]]) -> int:
    return sum(len(api.rows(t)) for t in tables)


def _view(lab: Lab, migration_id: str) -> dict[str, Any] | None:
    try:
        return migration_view(lab.db, migration_id)
    except sa_exc.SQLAlchemyError:
        return None


def _outage(
    lab: Lab, api: HttpApi, migration_id: str, tables: dict[str, list[str]], result: OutageResult
) -> None:
    """Down once a share of the rows arrived; up again after ``outage_s``; time the rest."""
    strike = int(result.rows_expected * STRIKE_AT)
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while _stored(api, tables) < strike:
        view = _view(lab, migration_id)
        if (view is not None and view["state"] in FINISHED) or time.monotonic() > deadline:
            state = view["state"] if view is not None else "unknown"
            result.problems.append(f"the migration ended ({state}) or stalled before the outage")
            return
        time.sleep(0.1)
    result.rows_before = _stored(api, tables)
    api.go_down()
    back = time.monotonic() + result.outage_s
    while time.monotonic() < back:
        view = _view(lab, migration_id)
        reason = (view or {}).get("waiting_reason") or ""
        if WAITING in reason:
            result.waited = reason[:80]
        if view is not None and view["state"] in FINISHED:
            result.problems.append(f"the migration ended {view['state']} during the outage")
            break
        time.sleep(0.5)
    api.start()
    up = time.monotonic()
    before = _stored(api, tables)
    while time.monotonic() < up + FINISH_TIMEOUT_S:
        if result.resumed_s is None and _stored(api, tables) > before:
            result.resumed_s = time.monotonic() - up
        view = _view(lab, migration_id)
        if view is not None and view["state"] in FINISHED:
            result.finished_s = time.monotonic() - up
            return
        time.sleep(0.2)


def _check(
    lab: Lab, api: HttpApi, migration_id: str, tables: dict[str, list[str]], result: OutageResult
) -> None:
    """Every row once, as many as the source has that map; the status agrees."""
    view = migration_view(lab.db, migration_id)
    result.state = view["state"]
    loaded = {st["name"]: st["rows_loaded"] for st in view["streams"]}
    for table, key in tables.items():
        rows = api.rows(table)
        counts = Counter(tuple(r[k] for k in key) for r in rows)
        result.rows_stored += len(rows)
        result.rows_duplicated += sum(n - 1 for n in counts.values())
        if loaded.get(table) != len(counts):
            result.problems.append(f"{table}: {loaded.get(table)} loaded, {len(counts)} stored")
    taken = Counter(r.key for r in api.received if r.status == 200)
    result.requests_resent = sum(n - 1 for n in taken.values())
    if result.state != "succeeded":
        result.problems.append(f"the migration ended {result.state}: {view['error']}")
    if result.waited is None:
        result.problems.append("no waiting_reason said the target was unavailable")
    if result.resumed_s is None:
        result.problems.append("the migration never resumed after the outage")
    if result.rows_duplicated or result.rows_stored != result.rows_expected:
        result.problems.append(
            f"{result.rows_stored} rows stored ({result.rows_duplicated} duplicated), "
            f"{result.rows_expected} expected"
        )
