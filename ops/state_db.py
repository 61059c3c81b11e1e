"""The state DB as CLI commands read it: one that must already exist."""

from __future__ import annotations

import sys

import click

from etl_tasks.errors import StateDBMissing
from etl_tasks.settings import Settings, load_settings
from etl_tasks.state.db import StateDB, open_existing
from ops import exit_codes


def existing_db(settings: Settings | None = None) -> StateDB:
    """The state DB a command reads. None where it looked: say where and exit
    ``UNAVAILABLE``, never create an empty one and answer as if nothing existed."""
    try:
        return open_existing((settings or load_settings()).database_url)
    except StateDBMissing as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exit_codes.UNAVAILABLE)
