"""Preflight: check a spec against the real source and target before accepting it.

Short connect timeouts; every problem is collected (not just the first) and
located by a path into the spec. Nothing is written anywhere: a refused spec
creates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import JSON, Engine, Table, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import ARRAY

from etl_tasks.bindings import column_specs, source_key, target_key
from etl_tasks.connectors.engines import create_sql_engine, normalize_url
from etl_tasks.connectors.sql_source import reflect_table, split_name
from etl_tasks.connectors.sql_target import error_reason
from etl_tasks.errors import FieldError, SpecError
from etl_tasks.spec import MigrationSpec, Stream
from etl_tasks.transforms import mapper_problems

_UNORDERABLE = ("JSON", "JSONB", "ARRAY", "HSTORE", "XML", "GEOMETRY", "GEOGRAPHY")


class _Problems(list[FieldError]):
    def add(self, path: str, message: str) -> None:
        self.append(FieldError(path, message))


def _reach(
    which: str, url: str, timeout_s: float, problems: _Problems, *, must_exist: bool
) -> Engine | None:
    try:
        u = normalize_url(url)
    except sa_exc.ArgumentError as exc:
        problems.add(f"{which}/url", f"not a database URL: {exc}")
        return None
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        path = Path(u.database)
        if must_exist and not path.is_file():
            problems.add(f"{which}/url", f"SQLite file {u.database} does not exist")
            return None
        if not path.parent.is_dir():
            problems.add(f"{which}/url", f"folder {path.parent} does not exist")
            return None
        if not path.exists():  # connecting would create the file: a refusal creates nothing
            if not os.access(path.parent, os.W_OK):
                problems.add(f"{which}/url", f"folder {path.parent} is not writable")
                return None
            return create_sql_engine(u, pool_size=1, connect_timeout_s=timeout_s)
    engine = create_sql_engine(u, pool_size=1, connect_timeout_s=timeout_s)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        engine.dispose()
        problems.add(f"{which}/url", f"cannot connect: {error_reason(exc)}")
        return None
    return engine


def preflight(spec: MigrationSpec, timeout_s: float = 5.0) -> dict[str, list[str]]:
    """Check the spec against the real databases; return each stream's resolved key."""
    problems = _Problems()
    urls: dict[str, str] = {}
    for which, endpoint in (("source", spec.source), ("target", spec.target)):
        try:
            urls[which] = endpoint.resolve()
        except SpecError as exc:
            problems.extend(FieldError(f"{which}/{e.path}", e.message) for e in exc.errors)
    if problems:
        raise SpecError(problems)
    source = _reach("source", urls["source"], timeout_s, problems, must_exist=True)
    fresh = _is_new_sqlite_file(urls["target"])
    target = _reach("target", urls["target"], timeout_s, problems, must_exist=False)
    keys: dict[str, list[str]] = {}
    try:
        if source is not None and target is not None:
            for i, stream in enumerate(spec.streams):
                keys[stream.stream_name] = _check_stream(i, stream, source, target, problems, fresh)
    finally:
        for engine in (source, target):
            if engine is not None:
                engine.dispose()
    if problems:
        raise SpecError(problems)
    return keys


def _is_new_sqlite_file(url: str) -> bool:
    try:
        u = normalize_url(url)
    except sa_exc.ArgumentError:
        return False
    database = u.database
    return (
        u.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and (not Path(str(database)).exists())
    )


def _check_stream(
    i: int, stream: Stream, source: Engine, target: Engine, problems: _Problems, fresh: bool
) -> list[str]:
    path = f"streams/{i}"
    try:
        table = reflect_table(source, stream.source_table)
    except sa_exc.NoSuchTableError:
        problems.add(f"{path}/source_table", f"no table {stream.source_table!r} in the source")
        return []
    key = _check_key(path, stream, table, source, problems)
    names = [c.name for c in table.columns]
    for j, f in enumerate(stream.where):
        if f.column not in names:
            problems.add(f"{path}/where/{j}/column", f"no column {f.column!r} in {table.name!r}")
    for p, message in mapper_problems(stream.columns, names):
        problems.add(f"{path}/{p}", message)
    if key and not any(e.path.startswith(f"{path}/columns") for e in problems):
        _check_target(path, stream, table, target, problems, fresh)
    return key


def _check_key(
    path: str, stream: Stream, table: Table, engine: Engine, problems: _Problems
) -> list[str]:
    key = source_key(stream, table)
    if not key:
        problems.add(f"{path}/key", f"{table.name!r} has no primary key: give 'key'")
        return []
    missing = [k for k in key if k not in table.c]
    if missing:
        problems.add(f"{path}/key", f"no column {missing[0]!r} in {table.name!r}")
        return []
    for k in key:
        col = table.c[k]
        if isinstance(col.type, JSON | ARRAY) or type(col.type).__name__.upper() in _UNORDERABLE:
            problems.add(f"{path}/key", f"key column {k!r} ({col.type}) cannot be ordered")
            return []
    if not _unique_not_null(engine, table, key):
        problems.add(
            f"{path}/key",
            f"key {key} is not unique and not null in {table.name!r}: "
            "use the primary key or a unique index on NOT NULL columns",
        )
        return []
    return key


def _unique_not_null(engine: Engine, table: Table, key: Sequence[str]) -> bool:
    pk = [c.name for c in table.primary_key.columns]
    if sorted(pk) == sorted(key):
        return True
    if any(table.c[k].nullable for k in key):
        return False
    schema, name = split_name(table.fullname)
    insp = inspect(engine)
    uniques: list[list[str | None]] = [
        list(u["column_names"]) for u in insp.get_unique_constraints(name, schema=schema)
    ]
    uniques += [
        list(ix["column_names"]) for ix in insp.get_indexes(name, schema=schema) if ix["unique"]
    ]
    return any(sorted(c for c in u if c) == sorted(key) for u in uniques)


def _check_target(
    path: str,
    stream: Stream,
    source_table: Table,
    target: Engine,
    problems: _Problems,
    fresh: bool = False,
) -> None:
    try:
        if fresh:  # a SQLite file not created yet: every table is missing, and stays uncreated
            raise sa_exc.NoSuchTableError(stream.target_table)
        table = reflect_table(target, stream.target_table)
    except sa_exc.NoSuchTableError:
        if not stream.create_target:
            problems.add(
                f"{path}/target_table",
                f"no table {stream.target_table!r} in the target (set create_target to create it)",
            )
        elif not target_key(stream, source_table)[1]:
            problems.add(
                f"{path}/columns",
                "create_target needs every key column copied unchanged into the target",
            )
        return
    wanted = column_specs(stream, source_table)
    for col in wanted:
        if col not in table.c:
            problems.add(
                f"{path}/columns/{col}",
                f"no column {col!r} in target table {stream.target_table!r}",
            )
    tkey, _ = target_key(stream, source_table)
    tkey = tkey or [c.name for c in table.primary_key.columns]
    if not tkey:
        problems.add(f"{path}/target_table", f"{stream.target_table!r} has no primary key")
    elif stream.write != "insert" and not _unique_not_null(target, table, tkey):
        problems.add(
            f"{path}/target_table",
            f"target key {tkey} of {stream.target_table!r} "
            "is not its primary key or a unique index",
        )
