"""``baton secrets``: the keys that seal specs' endpoints in the state DB."""

from __future__ import annotations

import json

import click

from etl_tasks.settings import load_settings


@click.group("secrets")
def secrets_group() -> None:
    """Sealed endpoints (BATON_SECRET_KEYS)."""


@secrets_group.command("rotate")
@click.option("--json", "as_json", is_flag=True)
def rotate(as_json: bool) -> None:
    """Seal every sealed spec again with the newest key (the first of BATON_SECRET_KEYS).

    Add the new key in front of the old one everywhere, run this once, then drop the
    old key. Safe to run again.
    """
    from etl_tasks.boundary.sealing import Sealer, SealingError, rotate_all
    from ops.state_db import existing_db

    settings = load_settings()
    try:
        sealer = Sealer.from_text(settings.secret_keys)
    except SealingError as exc:
        raise click.ClickException(str(exc)) from None
    if sealer is None:
        raise click.ClickException("BATON_SECRET_KEYS is not set: there is no key to rotate to")
    db = existing_db(settings)
    try:
        count = rotate_all(db, sealer)
    except SealingError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        db.dispose()
    if as_json:
        click.echo(json.dumps({"resealed": count}))
    else:
        click.echo(f"{count} sealed specs now sealed with the newest key")
