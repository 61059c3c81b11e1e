"""``baton quarantine ID --replay``: read a migration's quarantined rows again.

Kept apart from the listing in :mod:`ops.migrations_cmd` (its ``quarantine``
command only hands over to :func:`replay`). ``--columns FILE`` sends the request
body of ``POST /api/v1/migrations/{id}/quarantine/replay`` from a JSON or YAML
file, ``{"streams": {NAME: {"columns": {...}}}}``: corrected column mappings,
checked by preflight and kept as a spec revision.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ops.client import ApiClient, load_spec_file


def replay(
    client: ApiClient, migration_id: str, columns: Path | None, wait: bool, as_json: bool
) -> None:
    """Ask for the replay; with ``wait``, follow the migration to its end and exit as
    ``baton watch`` does (0 succeeded, 3 failed or cancelled); refused: 5 or 6."""
    from ops.migrations_cmd import MIGRATIONS, _print_json, _wait

    body: Any = load_spec_file(columns) if columns is not None else None
    started = client.post(f"{MIGRATIONS}/{migration_id}/quarantine/replay", body)
    if not wait:
        _print_json(started) if as_json else click.echo(describe(started))
        return
    if not as_json:
        click.echo(describe(started))
    sys.exit(_wait(client, migration_id, None, False, as_json))


def describe(started: dict[str, Any]) -> str:
    """One line for an operator: what is read again, and what was revised."""
    per_stream = ", ".join(f"{name}: {n}" for name, n in sorted(started["streams"].items()))
    line = (
        f"replaying {started['rows']} quarantined rows of {started['migration_id']} "
        f"in {started['chunks']} chunks ({per_stream})"
    )
    if started.get("not_replayable"):
        line += f"; {started['not_replayable']} rows with a NULL key stay as they are"
    if started.get("revised_streams"):
        line += f"; columns revised for {', '.join(started['revised_streams'])}"
    return line
