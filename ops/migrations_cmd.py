"""``baton`` commands over the API's migrations: submit, status, watch, the controls,
events and quarantined rows; and ``workers``.

Every command takes ``--json`` (a list is ``{"items": [...]}``, with ``total`` and
``next`` when the API pages it), takes a migration by any unique prefix of its id,
and ends with a code of :mod:`ops.exit_codes`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from etl_tasks.settings import load_settings
from ops import exit_codes
from ops.client import ApiClient

MIGRATIONS = "/api/v1/migrations"
CONTROLS = {
    "pause": "Pause a migration: steps in hand finish, no new step starts.",
    "resume": "Resume a paused migration.",
    "cancel": "Cancel a migration for good (rows already loaded stay).",
    "retry": "Run a failed migration again from its failed chunks.",
}
DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried"}


def _client() -> ApiClient:
    return ApiClient.from_settings(load_settings())


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _end_code(mig: dict[str, Any], strict: bool) -> int:
    """How waiting for a migration ends: its outcome, or that it has not ended yet."""
    code = exit_codes.OF_MIGRATION_STATE.get(mig["state"], exit_codes.TIMED_OUT)
    if code == exit_codes.OK and strict and mig["rows_quarantined"]:
        return exit_codes.INCOMPLETE
    return code


def _wait(
    client: ApiClient, migration_id: str, timeout_s: float | None, strict: bool, as_json: bool
) -> int:
    from ops.progress import wait_quietly, watch

    if as_json:
        mig = wait_quietly(client, migration_id, timeout_s)
        _print_json(mig)
    else:
        mig = watch(client, migration_id, timeout_s=timeout_s)
    code = _end_code(mig, strict)
    if not as_json and code == exit_codes.TIMED_OUT:
        click.echo(f"timed out: {migration_id} is still {mig['state']}", err=True)
    elif not as_json and code == exit_codes.INCOMPLETE:
        click.echo(f"--strict: {mig['rows_quarantined']} rows were quarantined", err=True)
    return code


WAIT_OPTIONS = [
    click.option(
        "--timeout",
        "timeout_s",
        type=float,
        default=None,
        help="give up waiting after this many seconds (exit 4)  [default: no limit]",
    ),
    click.option("--strict", is_flag=True, help="exit 1 if any row was quarantined"),
    click.option("--json", "as_json", is_flag=True, help="no progress bar: the final view"),
]


def _wait_options(f: Any) -> Any:
    for option in reversed(WAIT_OPTIONS):
        f = option(f)
    return f


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="show progress until it ends; exit 0 only on success")
@click.option("--idempotency-key", default=None)
@_wait_options
def submit(
    spec: Path,
    wait: bool,
    idempotency_key: str | None,
    timeout_s: float | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Submit a migration spec (JSON or YAML).

    --strict and --timeout imply --wait. Exit status (with --wait): 0 succeeded; 1
    succeeded but rows were quarantined (--strict); 3 failed or cancelled; 4 --timeout
    passed. Without --wait: 0 submitted. Refused (fails preflight): 6.
    """
    from ops.client import load_spec_file

    client = _client()
    mig = client.submit(load_spec_file(spec), idempotency_key)
    if not (wait or strict or timeout_s is not None):
        _print_json(mig) if as_json else click.echo(f"submitted {mig['id']} ({mig['name']})")
        return
    if not as_json:
        click.echo(f"submitted {mig['id']} ({mig['name']})")
    sys.exit(_wait(client, mig["id"], timeout_s, strict, as_json))


@click.command()
@click.argument("migration_id")
@_wait_options
def watch(migration_id: str, timeout_s: float | None, strict: bool, as_json: bool) -> None:
    """Show MIGRATION_ID's progress until it ends; exit as `submit --wait` does."""
    client = _client()
    sys.exit(_wait(client, client.resolve_migration(migration_id), timeout_s, strict, as_json))


@click.command()
@click.argument("migration_id", required=False)
@click.option("--state", default=None, help="only migrations in this state")
@click.option("--limit", default=100, show_default=True, help="list at most this many")
@click.option("--json", "as_json", is_flag=True)
def status(migration_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """One migration in detail, or the list of migrations (newest first)."""
    from ops.progress import print_list, print_migration

    client = _client()
    if migration_id:
        mig = client.get(f"{MIGRATIONS}/{client.resolve_migration(migration_id)}")
        _print_json(mig) if as_json else print_migration(mig)
        return
    params = {"state": state} if state else {}
    items, total, nxt = client.pages(MIGRATIONS, params, limit)
    if as_json:
        _print_json({"items": items, "total": total, "next": nxt})
        return
    print_list(items)
    if total > len(items):
        click.echo(f"{len(items)} of {total} shown; --limit shows more", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def workers(as_json: bool) -> None:
    """Workers, their state and what they are doing."""
    from ops.progress import print_workers

    items = _client().get("/api/v1/workers")["items"]
    _print_json({"items": items}) if as_json else print_workers(items)


def _control(action: str) -> click.Command:
    @click.command(
        action,
        help=f"{CONTROLS[action]}\n\nExit status: 0 done; 5 no such "
        "migration; 6 its state does not allow it.",
    )
    @click.argument("migration_id")
    @click.option("--json", "as_json", is_flag=True, help="the migration after the change")
    def command(migration_id: str, as_json: bool) -> None:
        client = _client()
        mig = client.post(f"{MIGRATIONS}/{client.resolve_migration(migration_id)}/{action}")
        if as_json:
            _print_json(mig)
        else:
            click.echo(f"{DONE[action]} {mig['id']} ({mig['name']}): now {mig['state']}")

    return command


@click.command()
@click.argument("migration_id")
@click.option("--after", type=int, default=None, help="only events after this event id")
@click.option("--limit", type=int, default=None, help="at most this many  [default: all]")
@click.option("--json", "as_json", is_flag=True)
def events(migration_id: str, after: int | None, limit: int | None, as_json: bool) -> None:
    """What happened to MIGRATION_ID and who asked for it, oldest first."""
    from ops.progress import console
    from ops.tables import table

    client = _client()
    path = f"{MIGRATIONS}/{client.resolve_migration(migration_id)}/events"
    items, total, nxt = client.pages(path, {"after": after} if after else {}, limit)
    if as_json:
        _print_json({"items": items, "total": total, "next": nxt})
        return
    if not items:
        click.echo("no events" + (f" after event {after}" if after else ""))
        return
    rows = [(e["id"], e["at"], e["kind"], e["actor"], e["message"]) for e in items]
    console.print(table(("event", "at", "kind", "actor", "message"), rows, ids=("actor",)))


@click.command()
@click.argument("migration_id")
@click.option("--csv", "fmt", flag_value="csv", help="every row as CSV on stdout")
@click.option("--jsonl", "fmt", flag_value="jsonl", help="every row as JSON Lines on stdout")
@click.option("--limit", default=100, show_default=True, help="without --csv/--jsonl: rows shown")
@click.option("--json", "as_json", is_flag=True, help="a page as JSON: items, total, next")
@click.option(
    "--purge", is_flag=True, help="remove the rows' values and keys now (a finished migration)"
)
@click.option(
    "--replay",
    "do_replay",
    is_flag=True,
    help="read the quarantined rows again from the source (the migration runs again)",
)
@click.option(
    "--columns",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='with --replay: {"streams": {NAME: {"columns": {...}}}} (JSON or YAML), a revision',
)
@click.option("--wait", is_flag=True, help="with --replay: follow the migration to its end")
def quarantine(
    migration_id: str,
    fmt: str | None,
    limit: int,
    as_json: bool,
    purge: bool,
    do_replay: bool,
    columns: Path | None,
    wait: bool,
) -> None:
    """MIGRATION_ID's quarantined rows: a table, or all of them with --csv or --jsonl.

    Values are plain JSON (decimals as strings, dates ISO 8601, bytes base64),
    masked for a viewer's token. --replay reads them again from the source
    (exit 0; with --wait as `watch`: 0 succeeded, 3 failed; 5 no such
    migration; 6 refused: its state, a replay running, bad --columns).
    --purge removes them (personal data) for good, keeping counts and masked
    reasons: exit 6 while the migration runs.
    """
    if (columns or wait) and not do_replay:
        raise click.UsageError("--columns and --wait go with --replay")
    client = _client()
    if purge and do_replay:
        raise click.UsageError("--purge and --replay cannot go together")
    if purge:
        _purge_quarantine(client, migration_id, as_json)
        return
    if do_replay:
        from ops.replay_cmd import replay

        replay(client, client.resolve_migration(migration_id), columns, wait, as_json)
        return
    path = f"{MIGRATIONS}/{client.resolve_migration(migration_id)}/quarantine"
    if fmt:
        out = sys.stdout.buffer
        for piece in client.download(path, {"format": fmt}):
            out.write(piece)
        out.flush()
        return
    items, total, nxt = client.pages(path, {}, limit)
    if as_json:
        _print_json({"items": items, "total": total, "next": nxt})
        return
    if not items:
        click.echo("no quarantined rows")
        return
    _print_quarantine(items)
    if total > len(items):
        click.echo(f"{len(items)} of {total} shown; --csv or --jsonl gives them all", err=True)


def _purge_quarantine(client: ApiClient, migration_id: str, as_json: bool) -> None:
    """``--purge``: the API removes the quarantined values; say how many rows held some."""
    mid = client.resolve_migration(migration_id)
    done = client.post(f"{MIGRATIONS}/{mid}/quarantine/purge")
    if as_json:
        _print_json(done)
    else:
        click.echo(f"purged the values of {done['purged']} quarantined rows of {mid}")


def _print_quarantine(items: list[dict[str, Any]]) -> None:
    from ops.progress import console
    from ops.tables import table

    rows = [
        (q["id"], q["stream"], json.dumps(q["key_values"]), q["status"], q["reason"]) for q in items
    ]
    console.print(table(("row", "stream", "key", "status", "reason"), rows, ids=("key",)))


COMMANDS: list[click.Command] = [
    submit,
    watch,
    status,
    workers,
    events,
    quarantine,
    *map(_control, CONTROLS),
]
