"""Preflight of one stream: its tables, key, columns and target, on the real databases.

A key is accepted only when the source guarantees it unique and not null (its
primary key, or a unique index on NOT NULL columns). Names are checked by the
rules of the database they are used on (length, system schemas), since
PostgreSQL would silently cut a long one and reach another table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import JSON, Engine, Table, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import ARRAY

from etl_tasks.bindings import column_specs, source_key, target_columns, target_key
from etl_tasks.boundary.identity import refuse_marked_schema
from etl_tasks.boundary.names import identifier_problem
from etl_tasks.connectors.engines import for_reading
from etl_tasks.connectors.sql_source import reflect_table, split_name
from etl_tasks.errors import FieldError
from etl_tasks.spec import Stream
from etl_tasks.transforms import mapper_problems

if TYPE_CHECKING:
    from etl_tasks.preflight import Side

_UNORDERABLE = ("JSON", "JSONB", "ARRAY", "HSTORE", "XML", "GEOMETRY", "GEOGRAPHY")


class StreamCheck:
    """The checks of stream ``index``; problems are appended to ``problems``."""

    def __init__(
        self, index: int, stream: Stream, source: Side, target: Side, problems: list[FieldError]
    ) -> None:
        self.index = index
        self.path = f"streams/{index}"
        self.stream = stream
        self.source = source
        self.target = target
        self.problems = problems

    def add(self, path: str, message: str) -> None:
        self.problems.append(FieldError(f"{self.path}/{path}", message))

    def _has_problems(self, under: str) -> bool:
        return any(e.path.startswith(f"{self.path}/{under}") for e in self.problems)

    def run(self) -> list[str]:
        """The stream's key; problems found are appended, never raised."""
        stream = self.stream
        if not self._names_fit():
            return []
        try:
            refuse_marked_schema(self.source.engine, stream.source_table)
            table = reflect_table(for_reading(self.source.engine), stream.source_table)
        except sa_exc.NoSuchTableError:
            self.add("source_table", f"no table {stream.source_table!r} in the source")
            return []
        key = self._check_key(table)
        names = [c.name for c in table.columns]
        for j, f in enumerate(stream.where):
            if f.column not in names:
                self.add(f"where/{j}/column", f"no column {f.column!r} in {table.name!r}")
        for p, message in mapper_problems(stream.columns, names):
            self.add(p, message)
        if key and not self._has_problems("columns"):
            self._check_target(table)
        return key

    def _names_fit(self) -> bool:
        ok = True
        for field, name, side in (
            ("source_table", self.stream.source_table, self.source),
            ("target_table", self.stream.target_table, self.target),
        ):
            problem = identifier_problem(name, side.backend)
            if problem:
                self.add(field, problem)
                ok = False
        return ok

    def _check_key(self, table: Table) -> list[str]:
        key = source_key(self.stream, table)
        if not key:
            self.add("key", f"{table.name!r} has no primary key: give 'key'")
            return []
        missing = [k for k in key if k not in table.c]
        if missing:
            self.add("key", f"no column {missing[0]!r} in {table.name!r}")
            return []
        for k in key:
            col = table.c[k]
            if (
                isinstance(col.type, JSON | ARRAY)
                or type(col.type).__name__.upper() in _UNORDERABLE
            ):
                self.add("key", f"key column {k!r} ({col.type}) cannot be ordered")
                return []
        if not unique_not_null(self.source.engine, table, key):
            self.add(
                "key",
                f"key {key} is not unique and not null in {table.name!r}: "
                "use the primary key or a unique index on NOT NULL columns",
            )
            return []
        return key

    def _check_target(self, source_table: Table) -> None:
        stream = self.stream
        for name, _, _ in target_columns(stream, source_table):
            problem = identifier_problem(name, self.target.backend)
            if problem:
                self.add(f"columns/{name}", problem)
        if self.target.fresh:  # a SQLite file not created yet: every table is missing
            self._missing_target(source_table)
            return
        try:
            refuse_marked_schema(self.target.engine, stream.target_table)
            table = reflect_table(for_reading(self.target.engine), stream.target_table)
        except sa_exc.NoSuchTableError:
            self._missing_target(source_table)
            return
        self._existing_target(source_table, table)

    def _missing_target(self, source_table: Table) -> None:
        stream = self.stream
        if not stream.create_target:
            self.add(
                "target_table",
                f"no table {stream.target_table!r} in the target (set create_target to create it)",
            )
        elif not target_key(stream, source_table)[1]:
            self.add(
                "columns", "create_target needs every key column copied unchanged into the target"
            )

    def _existing_target(self, source_table: Table, table: Table) -> None:
        stream = self.stream
        missing = [c for c in column_specs(stream, source_table) if c not in table.c]
        for col in missing:
            self.add(f"columns/{col}", f"no column {col!r} in target table {stream.target_table!r}")
        tkey, _ = target_key(stream, source_table)
        tkey = tkey or [c.name for c in table.primary_key.columns]
        if not tkey:
            self.add("target_table", f"{stream.target_table!r} has no primary key")
        elif any(k not in table.c for k in tkey):
            absent = next(k for k in tkey if k not in table.c)
            self.add(
                "target_table", f"target table {stream.target_table!r} has no key column {absent!r}"
            )
        elif stream.write != "insert" and not unique_not_null(self.target.engine, table, tkey):
            self.add(
                "target_table",
                f"target key {tkey} of {stream.target_table!r} "
                "is not its primary key or a unique index",
            )


def unique_not_null(engine: Engine, table: Table, key: Sequence[str]) -> bool:
    pk = [c.name for c in table.primary_key.columns]
    if sorted(pk) == sorted(key):
        return True
    if any(table.c[k].nullable for k in key):
        return False
    schema, name = split_name(table.fullname)
    insp = inspect(for_reading(engine))
    uniques: list[list[str | None]] = [
        list(u["column_names"]) for u in insp.get_unique_constraints(name, schema=schema)
    ]
    uniques += [
        list(ix["column_names"]) for ix in insp.get_indexes(name, schema=schema) if ix["unique"]
    ]
    return any(sorted(c for c in u if c) == sorted(key) for u in uniques)
