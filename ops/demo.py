"""``make demo``: a migration that survives a rolling restart of its workers.

Builds a legacy database (100k+ rows, some dirty), starts the embedded
system, submits the migration over HTTP, replaces every worker in the middle
of it (new ones up, old ones SIGTERMed: Celery's warm shutdown), waits, then
verifies the target against the source (as tasks on the workers, through the API, then
row by row in this process) and prints a summary.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.spec import parse_spec
from etl_tasks.state.db import StateDB
from etl_tasks.verify import StreamCheck, quarantine_keys, verify
from ops.client import ApiClient
from ops.demo_data import build_legacy_db, demo_spec
from ops.embedded import Embedded, free_port

console = Console(width=110)


def run_demo(home: Path, scale: float = 1.0) -> int:
    """Run the whole demo; return the process exit status (0: verified)."""
    started = time.monotonic()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    stats = build_legacy_db(home / "legacy.db", scale=scale)
    console.print(
        f"[bold]1.[/] built the legacy DB: {stats.total_rows:,} rows in "
        f"{len(stats.rows)} tables, {sum(stats.dirty.values())} of them dirty"
    )
    system = Embedded(home=home, api_port=free_port())
    try:
        system.start(workers=2)
        console.print("[bold]2.[/] embedded Redis, SQLite state DB, API and 2 workers are up")
        spec = demo_spec(
            f"sqlite:///{(home / 'legacy.db').resolve()}",
            f"sqlite:///{(home / 'cloud.db').resolve()}",
            dirty_rows=sum(stats.dirty.values()),
        )
        client = ApiClient(system.env["BATON_API_URL"])
        mig = client.submit(spec, idempotency_key="demo")
        console.print(f"[bold]3.[/] submitted migration {mig['id']}")
        deploy = _rolling_restart(system, client, mig["id"], stats.total_rows // 3)
        final = _wait(client, mig["id"])
        verdict = _verify_with_tasks(client, mig["id"]) if final["state"] == "succeeded" else None
    finally:
        system.stop()
    db = StateDB(system.env["BATON_DATABASE_URL"])
    checks = _verify(spec, home, quarantine_keys(db, mig["id"]))
    _show_quarantine(db, mig["id"])
    code = _summary(final, checks, deploy, stats.dirty, time.monotonic() - started)
    return code if verdict is not None and verdict["state"] == "equal" else 1


def _progress(client: ApiClient, migration_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/migrations/{migration_id}")  # type: ignore[no-any-return]


def _rolling_restart(
    system: Embedded, client: ApiClient, migration_id: str, at_rows: int
) -> dict[str, Any]:
    """Once ``at_rows`` rows are in, replace each old worker by a new one."""
    while True:
        mig = _progress(client, migration_id)
        if mig["rows_loaded"] >= at_rows or mig["state"] not in ("running", "pending"):
            break
        time.sleep(0.2)
    at_rows = mig["rows_loaded"]
    if mig["state"] != "running":
        raise RuntimeError(f"the migration ended ({mig['state']}) before the rolling restart")
    old = list(system.workers)
    shutdowns = []
    for proc in old:
        system.add_worker()
        shutdowns.append(system.stop_worker(proc))
    console.print(
        f"[bold]4.[/] rolling restart at {at_rows:,} rows: {len(old)} workers "
        f"replaced, warm shutdowns took {', '.join(f'{s:.1f}s' for s in shutdowns)}"
    )
    return {"at_rows": at_rows, "replaced": len(old), "shutdown_s": shutdowns}


def _wait(client: ApiClient, migration_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mig = _progress(client, migration_id)
        if mig["state"] in ("succeeded", "failed", "cancelled"):
            return mig
        time.sleep(0.3)
    raise RuntimeError("the demo migration did not finish in time")


def _verify_with_tasks(
    client: ApiClient, migration_id: str, timeout_s: float = 300
) -> dict[str, Any]:
    """What ``baton verify ID --wait`` does: the workers compare the target with the
    source, one key range per task, and the API reports it."""
    path = f"/api/v1/migrations/{migration_id}/verify"
    report: dict[str, Any] = client.post(path)
    deadline = time.monotonic() + timeout_s
    while report["state"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.3)
        report = client.get(path)
    colour = "green" if report["state"] == "equal" else "red"
    console.print(
        f"[bold]5.[/] verified by the workers, {report['ranges_total']} key ranges as tasks: "
        f"[{colour}]{report['state']}[/]"
    )
    return report


def _show_quarantine(db: StateDB, migration_id: str) -> None:
    from etl_tasks.views import list_quarantine

    rows = list_quarantine(db, migration_id, limit=4)
    console.print("[bold]6.[/] quarantined rows keep their reason, e.g.:")
    for r in rows:
        console.print(f"   {r['stream']} key {r['key']}: {r['reason']}")


def _verify(spec: dict[str, Any], home: Path, quarantined: Any) -> list[StreamCheck]:
    source = create_sql_engine(f"sqlite:///{(home / 'legacy.db').resolve()}")
    target = create_sql_engine(f"sqlite:///{(home / 'cloud.db').resolve()}")
    try:
        return verify(parse_spec(spec), source, target, quarantined)
    finally:
        source.dispose()
        target.dispose()


def _summary(
    mig: dict[str, Any],
    checks: list[StreamCheck],
    deploy: dict[str, Any],
    dirty: dict[str, int],
    elapsed: float,
) -> int:
    table = Table(
        "stream",
        "source rows",
        "loaded",
        "quarantined",
        "missing",
        "unexpected",
        "different",
        "verified",
    )
    by_name = {st["name"]: st for st in mig["streams"]}
    ok = mig["state"] == "succeeded"
    for c in checks:
        st = by_name[c.name]
        good = c.ok and st["rows_quarantined"] == c.bad_rows and st["rows_loaded"] == c.target_rows
        ok = ok and good
        table.add_row(
            c.name,
            f"{c.source_rows:,}",
            f"{st['rows_loaded']:,}",
            str(st["rows_quarantined"]),
            str(len(c.missing)),
            str(len(c.unexpected)),
            str(len(c.different)),
            "[green]yes[/]" if good else "[red]NO[/]",
        )
    console.print(table)
    verdict = "[green]VERIFIED[/]" if ok else "[red]FAILED[/]"
    console.print(
        f"{verdict}: migration {mig['state']} in {mig['elapsed_s']:.1f}s "
        f"({mig['throughput_rows_per_s']:,.0f} rows/s) through a rolling restart of "
        f"{deploy['replaced']} workers at {deploy['at_rows']:,} rows; "
        f"{sum(dirty.values())} dirty rows quarantined with their reasons; "
        f"demo took {elapsed:.0f}s"
    )
    return 0 if ok else 1
