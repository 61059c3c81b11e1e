"""Drafting a whole spec from a source's schema (and a target's, when there is one)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from etl_tasks.connectors.sql.schema import target_of
from etl_tasks.drafting.order import load_order
from etl_tasks.drafting.schema import Schema, TableInfo, read_schema
from etl_tasks.values.catalog import describe
from etl_tasks.values.ddl import Target, Uncarriable, carry
from etl_tasks.values.types import ColumnType, Kind


@dataclass
class Draft:
    """A spec ready to submit, with what the operator should read before submitting it."""

    spec: dict[str, Any]
    comments: dict[str, str] = field(default_factory=dict)  # path in the spec → comment
    notes: list[str] = field(default_factory=list)


def draft_spec(
    source: Engine,
    target: Engine | None,
    *,
    name: str,
    source_endpoint: dict[str, Any],
    target_endpoint: dict[str, Any],
) -> Draft:
    """Every base table of ``source`` as a stream: keys, ``create_target`` for the tables the
    target lacks, ``"as"`` where the target's dialect has no counterpart, and ``after``
    from the foreign keys of both databases."""
    schema = read_schema(source)
    existing: Schema | None = read_schema(target) if target is not None else None
    to = _target(target, source)
    references = schema.references + (existing.references if existing else [])
    after, notes = load_order(schema.tables, references)
    draft = Draft({"name": name, "source": source_endpoint, "target": target_endpoint}, notes=notes)
    streams: list[dict[str, Any]] = []
    for i, info in enumerate(schema.tables.values()):
        streams.append(_stream(draft, i, info, source, to, existing, after[info.name]))
    draft.spec["streams"] = streams
    return draft


def _target(target: Engine | None, source: Engine) -> Target:
    engine = target or source  # no target given: drafted as if it were of the source's kind
    with engine.connect() as conn:
        return target_of(conn, "")


def _stream(
    draft: Draft,
    index: int,
    info: TableInfo,
    source: Engine,
    to: Target,
    existing: Schema | None,
    after: list[str],
) -> dict[str, Any]:
    path = f"streams/{index}"
    stream: dict[str, Any] = {"source_table": info.name, "target_table": info.name}
    if info.key:
        stream["key"] = info.key if len(info.key) > 1 else info.key[0]
    comment = f"{info.name}: {info.rows:,} rows" if info.rows is not None else info.name
    if not info.unique:
        stream["write"] = "insert"
        comment += (
            f"; no primary key or unique index: keyed by {info.key} with write: insert, "
            "so rows with equal keys stay together"
        )
    draft.comments[path] = comment
    stream["create_target"] = existing is None or info.name not in existing.tables
    if after:
        stream["after"] = after
    carried = _carry_as(draft, path, info, source, Target(to.dialect, to.mariadb, info.name))
    if carried:
        stream["as"] = carried
    return stream


def _carry_as(
    draft: Draft, path: str, info: TableInfo, source: Engine, to: Target
) -> dict[str, str]:
    """``"as"`` for every column the target's dialect has no counterpart for."""
    with source.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore", sa_exc.SAWarning)
        types = describe(conn, info.name)
    out: dict[str, str] = {}
    for column, declared in types.items():
        try:
            carry(declared, to, column, key=column in info.key, rep=None)
        except Uncarriable:
            rep = _representation(declared)
            out[column] = rep
            draft.comments[f"{path}/as/{column}"] = (
                f"{declared.sql} has no exact counterpart in {to.dialect}: carried as {rep}"
            )
    return out


def _representation(declared: ColumnType) -> str:
    return "json" if declared.kind in (Kind.ARRAY, Kind.SET) else "text"


def to_yaml(draft: Draft) -> str:
    """The draft as YAML, each comment beside what it is about."""
    spec = draft.spec
    lines = [f"# {note}" for note in draft.notes]
    for field_name in ("name", "source", "target"):
        lines += _block(field_name, spec[field_name], 0)
    lines.append("streams:")
    for i, stream in enumerate(spec["streams"]):
        path = f"streams/{i}"
        if path in draft.comments:
            lines.append(f"  # {draft.comments[path]}")
        first = True
        for key, value in stream.items():
            prefix = "  - " if first else "    "
            first = False
            if key == "as":
                lines.append(f"{prefix}as:")
                for column, rep in value.items():
                    note = draft.comments.get(f"{path}/as/{column}")
                    lines.append(
                        f"      {_scalar(column)}: {rep}" + (f"  # {note}" if note else "")
                    )
                continue
            lines.append(f"{prefix}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _block(name: str, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        out = [f"{pad}{name}:"]
        for key, item in value.items():
            out += _block(key, item, indent + 2)
        return out
    return [f"{pad}{name}: {_scalar(value)}"]


def _scalar(value: Any) -> str:
    """One YAML value on one line (lists in flow style), quoted where YAML needs it."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.strip().removesuffix("...").strip()
