"""Showing migrations in a terminal: a live progress bar, tables, summaries."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ops.client import ApiClient
from ops.tables import console as make_console
from ops.tables import table

FINISHED = {"succeeded", "failed", "cancelled"}
console: Console = make_console()


def _eta(mig: dict[str, Any]) -> str:
    eta = mig.get("eta_s")
    return "—" if eta is None else f"{eta:.0f}s"


def wait_quietly(
    client: ApiClient, migration_id: str, timeout_s: float | None, poll_s: float = 0.5
) -> dict[str, Any]:
    """Poll until the migration ends or ``timeout_s`` passes; return its last view."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        mig: dict[str, Any] = client.get(f"/api/v1/migrations/{migration_id}")
        if mig["state"] in FINISHED or (deadline is not None and time.monotonic() >= deadline):
            return mig
        time.sleep(poll_s)


def watch(
    client: ApiClient, migration_id: str, poll_s: float = 0.5, timeout_s: float | None = None
) -> dict[str, Any]:
    """A progress bar (percent of the rows expected, chunks, rows/s over the last 30 s,
    ETA) until the migration ends, or until ``timeout_s`` has passed; return its last view."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} % · {task.fields[chunks]} chunks"),
        TextColumn(
            "{task.fields[rows]} rows · {task.fields[rate]} rows/s · "
            "ETA {task.fields[eta]} · {task.fields[state]}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(
            "migrating", total=100, chunks="0", rows=0, rate=0, eta="—", state=""
        )
        while True:
            mig = client.get(f"/api/v1/migrations/{migration_id}")
            state = mig["state"] + (
                f" ({mig['waiting_reason']})" if mig.get("waiting_reason") else ""
            )
            more = "" if mig.get("fully_planned") else "+"
            progress.update(
                task,
                completed=mig.get("percent", 0.0),
                chunks=f"{mig['chunks_done']}/{mig['chunks_total']}{more}",
                rows=mig["rows_loaded"],
                rate=int(mig.get("rows_per_s", mig["throughput_rows_per_s"])),
                eta=_eta(mig),
                state=state,
            )
            if mig["state"] in FINISHED:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    print_migration(mig)
    return mig  # type: ignore[no-any-return]


def print_migration(mig: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red"}.get(mig["state"], "yellow")
    console.print(
        f"[bold]{escape(mig['name'])}[/] {mig['id']}: [{colour}]{mig['state']}[/] · "
        f"{mig['rows_loaded']} rows loaded · {mig['rows_quarantined']} quarantined · "
        f"{mig['elapsed_s']:.1f}s · {mig['throughput_rows_per_s']:.0f} rows/s"
    )
    if mig["state"] not in FINISHED and "percent" in mig:
        console.print(
            f"{mig['percent']:.1f} % of ~{mig.get('rows_expected', 0):,} rows · "
            f"{mig.get('rows_per_s', 0):,.0f} rows/s (last 30 s) · ETA {_eta(mig)}"
        )
    if mig.get("error"):
        console.print(f"[red]error:[/] {escape(mig['error'])}")
    if mig.get("waiting_reason"):
        console.print(f"[yellow]waiting:[/] {escape(mig['waiting_reason'])}")
    if mig.get("pruned"):  # retention removed its chunks, events and quarantine
        console.print(f"[dim]{escape(mig['pruned']['message'])}[/]")
    if mig.get("verification"):  # `baton verify ID --last` shows its report
        console.print(f"verification {mig['verification']['id']}: {mig['verification']['state']}")
    rows = [
        (
            st["name"],
            st["state"],
            st["rows_loaded"],
            st["rows_quarantined"],
            f"{st['chunks_done']}/{st['chunks_total']}",
            st["chunks_failed"],
        )
        for st in mig["streams"]
    ]
    columns = ("stream", "state", "rows loaded", "quarantined", "chunks", "failed")
    console.print(table(columns, rows, ids=("stream",)))


def print_list(items: list[dict[str, Any]]) -> None:
    rows = [(m["id"], m["name"], m["state"], m["created_at"]) for m in items]
    console.print(table(("id", "name", "state", "created"), rows))


def print_workers(items: list[dict[str, Any]]) -> None:
    columns = ("name", "version", "state", "in flight", "steps done", "probe", "heartbeat")
    keys = ("name", "version", "state", "in_flight", "steps_done", "probe_url", "last_heartbeat")
    rows = [[w[k] for k in keys] for w in items]
    console.print(table(columns, rows, ids=("name", "probe")))
