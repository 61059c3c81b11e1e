"""Showing migrations in a terminal: a live progress bar, tables, summaries."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops.client import ApiClient

FINISHED = {"succeeded", "failed", "cancelled"}
console = Console()


def _eta(mig: dict[str, Any]) -> str:
    eta = mig.get("eta_s")
    return "—" if eta is None else f"{eta:.0f}s"


def watch(client: ApiClient, migration_id: str, poll_s: float = 0.5) -> dict[str, Any]:
    """A progress bar (chunks done, rows/s, ETA) until the migration ends; return its view."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} chunks"),
        TextColumn(
            "{task.fields[rows]} rows · {task.fields[rate]} rows/s · "
            "ETA {task.fields[eta]} · {task.fields[state]}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("migrating", total=None, rows=0, rate=0, eta="—", state="")
        while True:
            mig = client.get(f"/api/v1/migrations/{migration_id}")
            state = mig["state"] + (
                f" ({mig['waiting_reason']})" if mig.get("waiting_reason") else ""
            )
            total = mig["chunks_total"] if mig.get("fully_planned") else None
            progress.update(
                task,
                completed=mig["chunks_done"],
                total=total,
                rows=mig["rows_loaded"],
                rate=int(mig["throughput_rows_per_s"]),
                eta=_eta(mig),
                state=state,
            )
            if mig["state"] in FINISHED:
                break
            time.sleep(poll_s)
    print_migration(mig)
    return mig  # type: ignore[no-any-return]


def print_migration(mig: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red"}.get(mig["state"], "yellow")
    console.print(
        f"[bold]{mig['name']}[/] {mig['id']}: [{colour}]{mig['state']}[/] · "
        f"{mig['rows_loaded']} rows loaded · {mig['rows_quarantined']} quarantined · "
        f"{mig['elapsed_s']:.1f}s · {mig['throughput_rows_per_s']:.0f} rows/s"
    )
    if mig.get("error"):
        console.print(f"[red]error:[/] {mig['error']}")
    if mig.get("waiting_reason"):
        console.print(f"[yellow]waiting:[/] {mig['waiting_reason']}")
    if mig.get("verification"):  # `baton verify ID --last` shows its report
        console.print(f"verification {mig['verification']['id']}: {mig['verification']['state']}")
    table = Table("stream", "state", "rows loaded", "quarantined", "chunks", "failed")
    for st in mig["streams"]:
        table.add_row(
            st["name"],
            st["state"],
            str(st["rows_loaded"]),
            str(st["rows_quarantined"]),
            f"{st['chunks_done']}/{st['chunks_total']}",
            str(st["chunks_failed"]),
        )
    console.print(table)


def print_list(items: list[dict[str, Any]]) -> None:
    table = Table("id", "name", "state", "created")
    for m in items:
        table.add_row(m["id"], m["name"], m["state"], m["created_at"] or "")
    console.print(table)


def print_workers(items: list[dict[str, Any]]) -> None:
    table = Table("name", "version", "state", "in flight", "steps done", "probe", "heartbeat")
    for w in items:
        table.add_row(
            w["name"],
            w["version"],
            w["state"],
            str(w["in_flight"]),
            str(w["steps_done"]),
            w["probe_url"] or "—",
            w["last_heartbeat"],
        )
    console.print(table)
