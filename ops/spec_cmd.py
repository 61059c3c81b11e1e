"""``baton spec``: draft a spec from a source's schema, or check one without submitting it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from etl_tasks.settings import load_settings


@click.group("spec")
def spec_group() -> None:
    """Draft and check specs."""


def _endpoint(url: str, variable: str) -> dict[str, Any]:
    """How the drafted spec names an endpoint: a URL with a password goes by variable."""
    if make_url(url).password:
        return {"url_env": variable}
    return {"url": url}


def _name_of(url: str) -> str:
    database = make_url(url).database or "migration"
    return Path(database).stem if url.startswith("sqlite") else database


@spec_group.command("init")
@click.argument("source")
@click.option("--target", default=None, help="the target's URL: drafts for its dialect and tables")
@click.option("--name", default=None, help="the migration's name")
@click.option("--json", "as_json", is_flag=True, help="JSON, with the comments alongside")
def init(source: str, target: str | None, name: str | None, as_json: bool) -> None:
    """Print a complete spec drafted from SOURCE's schema (YAML, with comments).

    Every base table becomes a stream: its key, create_target where the target lacks
    the table, "as" for columns the target's dialect has no counterpart for, and
    "after" from the foreign keys. A URL with a password is written as url_env.
    """
    from etl_tasks.connectors.sql.engines import create_sql_engine
    from etl_tasks.drafting.draft import draft_spec, to_yaml

    src = create_sql_engine(source)
    tgt = create_sql_engine(target) if target else None
    try:
        drafted = draft_spec(
            src,
            tgt,
            name=name or _name_of(source),
            source_endpoint=_endpoint(source, "SOURCE_DB_URL"),
            target_endpoint=_endpoint(target, "TARGET_DB_URL")
            if target
            else {"url_env": "TARGET_DB_URL"},
        )
    finally:
        src.dispose()
        if tgt is not None:
            tgt.dispose()
    if as_json:
        payload = {"spec": drafted.spec, "comments": drafted.comments, "notes": drafted.notes}
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(to_yaml(drafted), nl=False)


@spec_group.command("check")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def check(spec: Path, as_json: bool) -> None:
    """Run SPEC's whole preflight on the API without submitting it (exit 0 when it passes)."""
    from ops.client import ApiClient, ApiError, load_spec_file

    client = ApiClient.from_settings(load_settings())
    try:
        answer = client.post("/api/v1/specs/check", load_spec_file(spec))
    except ApiError as exc:
        if as_json:
            click.echo(json.dumps(exc.body))
            sys.exit(1)
        raise
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo("the spec passes preflight")
    for note in answer.get("notes", []):
        click.echo(f"note: {note}")
