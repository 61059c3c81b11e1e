"""``baton verify ID``: compare a migration's target with its source, through the API.

The command asks the API (``POST /api/v1/migrations/{id}/verify``; with ``--last``
it only reads the newest report), optionally waits for the verdict, shows it and
exits with a code a script can act on. Workers do the comparing, range by range.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from etl_tasks.settings import load_settings
from ops import exit_codes

if TYPE_CHECKING:  # imported when the command runs: every other command starts faster
    from ops.client import ApiClient, ApiError

# The meanings of ops.exit_codes, for a verification:
EXIT_EQUAL = exit_codes.OK  # every stream is equal
EXIT_DIFFERENT = exit_codes.INCOMPLETE  # a stream differs: rows missing, unexpected or different
EXIT_FAILED = exit_codes.FAILED  # a range could not be compared (source or target unreadable)
EXIT_NO_VERDICT = exit_codes.TIMED_OUT  # still pending or running: not waited for, or --timeout
EXIT_NOT_FOUND = exit_codes.NOT_FOUND  # no such migration (or, with --last, never verified)
EXIT_NOT_SUCCEEDED = exit_codes.REFUSED  # the migration has not succeeded: nothing to verify yet
EXIT_API = exit_codes.UNAVAILABLE  # the API could not be reached, or refused the token
# (2 is the usage error every command exits with, an ambiguous id prefix included)

EXIT_OF_STATE = {"equal": EXIT_EQUAL, "different": EXIT_DIFFERENT, "failed": EXIT_FAILED}
POLL_S = 0.5


@click.command("verify")
@click.argument("migration_id")
@click.option("--wait", is_flag=True, help="wait for the verdict")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="with --wait: give up after this many seconds (implies --wait)  [default: no limit]",
)
@click.option("--last", is_flag=True, help="start nothing: show the newest verification")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
def verify(
    migration_id: str, wait: bool, timeout_s: float | None, last: bool, as_json: bool
) -> None:
    """Compare migration MIGRATION_ID's target with its source (any unique id prefix).

    Starts a verification (or joins the one under way) and shows its report.

    Exit status: 0 every stream is equal; 1 a stream differs; 2 wrong usage; 3 the
    verification failed (a range could not be compared); 4 no verdict yet (not
    waited for, or --timeout passed); 5 no such migration (with --last: never
    verified); 6 the migration has not succeeded; 7 the API could not be reached or
    refused the request.
    """
    from ops.client import ApiClient, ApiError

    client = ApiClient.from_settings(load_settings())
    try:
        path = f"/api/v1/migrations/{client.resolve_migration(migration_id)}/verify"
        report = client.get(path) if last else client.post(path)
        if wait or timeout_s is not None:
            report = _wait(client, path, report, timeout_s)
    except ApiError as exc:
        _refused(exc)
    except click.ClickException as exc:  # unreachable, or an id prefix that names no one
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        show(report)
    sys.exit(EXIT_OF_STATE.get(report["state"], EXIT_NO_VERDICT))


def _refused(exc: ApiError) -> NoReturn:
    click.echo(f"error: {exc.message}", err=True)
    codes = {404: EXIT_NOT_FOUND, 409: EXIT_NOT_SUCCEEDED}
    sys.exit(codes.get(exc.status, EXIT_API))


def _wait(
    client: ApiClient, path: str, report: dict[str, Any], timeout_s: float | None
) -> dict[str, Any]:
    """Poll the report until it has a verdict, or until ``timeout_s`` has passed."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while report["state"] not in EXIT_OF_STATE:
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(POLL_S if deadline is None else min(POLL_S, max(deadline - time.monotonic(), 0)))
        report = client.get(path)
    return report


def show(report: dict[str, Any]) -> None:
    """The report for a terminal: one line per stream, a few samples, the verdict."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        "stream", "state", "source", "target", "quarantined", "missing", "unexpected", "different"
    )
    for st in report["streams"]:
        table.add_row(
            st["name"],
            st["state"],
            *(str(st[c]) for c in ("source_rows", "target_rows", "expected_absent")),
            *(str(st[c]) for c in ("missing", "unexpected", "different")),
        )
    console.print(table)
    for st in report["streams"]:
        for sample in st["samples"]:
            console.print(f"  {st['name']} {_sample(sample)}", highlight=False)
        if st["error"]:
            console.print(f"  {st['name']}: [red]{st['error']}[/]")
    done = f"{report['ranges_done']}/{report['ranges_total']} ranges"
    console.print(
        f"verification {report['id']} of {report['migration_id']}: "
        f"[bold]{report['state']}[/] ({done})" + (f": {report['error']}" if report["error"] else "")
    )


def _sample(sample: dict[str, Any]) -> str:
    key = json.dumps(sample["key"], ensure_ascii=False)
    if sample["kind"] != "different":
        return f"key {key} {sample['kind']}"
    changes = ", ".join(
        f"{c}: {sample['expected'][c]!r} → {sample['found'][c]!r}" for c in sample["columns"]
    )
    return f"key {key} different: {changes}"
