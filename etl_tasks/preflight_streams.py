"""Preflight of one stream: its tables, key, columns and target, on the real databases.

A key is accepted only when the source guarantees it unique and not null: its
primary key or a unique index over NOT NULL columns that is neither partial
nor on expressions (SQLite's non-INTEGER primary keys may hold NULL: they are
counted). Every column's type is either carried to the target or refused here,
by name, with the option that would carry it; a few rows are read through the
whole value path without writing. Names are checked by the rules of the
database they are used on (length, system schemas), since PostgreSQL would
silently cut a long one and reach another table.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, Table, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import FromClause

from etl_tasks import codec
from etl_tasks.bindings import (
    Types,
    bind_stream,
    column_specs,
    produced_type,
    produced_types,
    source_key,
    target_columns,
    target_key,
)
from etl_tasks.boundary.identity import refuse_marked_schema
from etl_tasks.boundary.names import identifier_problem
from etl_tasks.connectors.sql.engines import for_reading
from etl_tasks.connectors.sql.errors import error_reason
from etl_tasks.connectors.sql.queries import read_only, reflect_table
from etl_tasks.connectors.sql.schema import target_of
from etl_tasks.connectors.sql.shape import source_shape
from etl_tasks.errors import BadRowError, FieldError
from etl_tasks.preflight_keys import (
    key_problem,
    longest_run,
    null_keys,
    query_key_repeats,
    unique_not_null,
)
from etl_tasks.spec import MigrationSpec, Stream
from etl_tasks.transforms import mapper_problems
from etl_tasks.values.catalog import describe
from etl_tasks.values.ddl import Target, TargetColumn
from etl_tasks.values.path import build_path
from etl_tasks.values.types import ColumnType, Kind

if TYPE_CHECKING:
    from etl_tasks.preflight import Side

SAMPLE_ROWS = 20  # rows of each stream read through the whole value path


class StreamCheck:
    """The checks of stream ``index``; problems are appended to ``problems``."""

    def __init__(
        self,
        index: int,
        spec: MigrationSpec,
        stream: Stream,
        source: Side | None,
        target: Side | None,
        problems: list[FieldError],
        notes: list[str] | None = None,
    ) -> None:
        self.notes = notes if notes is not None else []
        self.index = index
        self.path = f"streams/{index}"
        self.spec = spec
        self.stream = stream
        self.source = source
        self.target = target  # None: an HTTP target (its endpoint is checked on its own)
        self.problems = problems

    def add(self, path: str, message: str) -> None:
        self.problems.append(FieldError(f"{self.path}/{path}", message))

    @property
    def sql_source(self) -> Side:
        """The SQL source (a file source's check overrides every method that reads one)."""
        assert self.source is not None
        return self.source

    def _has_problems(self, under: str = "") -> bool:
        return any(e.path.startswith(f"{self.path}/{under}") for e in self.problems)

    def run(self) -> list[str]:
        """The stream's key; problems found are appended, never raised."""
        stream = self.stream
        if not self._names_fit():
            return []
        found = self._source_table()
        if found is None:
            return []
        table, types = found
        key = self._check_key(table, types)
        names = [c.key for c in table.columns]
        source = stream.source_name
        for j, f in enumerate(stream.where):
            if f.column not in names:
                self.add(f"where/{j}/column", f"no column {f.column!r} in {source!r}")
        for j, name in enumerate(stream.exclude):
            if name not in names:
                self.add(f"exclude/{j}", f"no column {name!r} in {source!r}")
        for p, message in mapper_problems(column_specs(stream, table), names):
            self.add(p, message)
        if key and not self._has_problems():
            target_types = self._check_target(table, types)
            if target_types is not None and not self._has_problems():
                self._sample(table, types, target_types)
        return key

    def _names_fit(self) -> bool:
        ok = True
        for field, name, side in (
            ("source_table", self.stream.source_table, self.sql_source),
            ("target_table", self.stream.target_table, self.target),
        ):
            if name is None or side is None:
                continue  # a query; an HTTP target, whose table is only a part of its URL
            problem = identifier_problem(name, side.backend)
            if problem:
                self.add(field, problem)
                ok = False
        return ok

    def _source_table(self) -> tuple[FromClause, Types] | None:
        engine = self.sql_source.engine
        try:
            return source_shape(engine, self.stream)
        except sa_exc.NoSuchTableError:
            name = str(self.stream.source_table)
            self.add(
                "source_table", f"no table {name!r} in the source{_did_you_mean(engine, name)}"
            )
        except sa_exc.DBAPIError as exc:
            if self.stream.query is None:
                raise
            self.add("query", f"the source refused the query: {error_reason(exc)}")
        return None

    def _check_key(self, table: FromClause, types: Types) -> list[str]:
        key = source_key(self.stream, table)
        if self.stream.query is not None:
            return self._check_query_key(table, key)
        assert isinstance(table, Table)
        with for_reading(self.sql_source.engine).connect() as conn:
            problem = key_problem(conn, table, key, types, self.stream.write)
            if problem is None and self.stream.on_null_key == "fail":
                count = null_keys(conn, table, key, types)
                if count:
                    problem = (
                        f"{count} rows of {table.name!r} have a NULL key {key}: they cannot "
                        'be keyed; set on_null_key to "quarantine" to set them aside'
                    )
            if problem is None and not unique_not_null(conn, table, key):
                self._note_runs(conn, table, key)
        if problem is not None:
            self.add("key", problem)
            return []
        return key

    def _check_query_key(self, query: FromClause, key: list[str]) -> list[str]:
        """A query's key cannot be proved by an index: its rows are counted instead."""
        missing = [k for k in key if k not in query.c]
        if missing:
            self.add("key", f"the query returns no column {missing[0]!r}")
            return []
        try:
            with for_reading(self.sql_source.engine).connect() as conn:
                read_only(conn)
                repeated = query_key_repeats(conn, query, key)
        except sa_exc.DBAPIError as exc:  # only admins give queries: they see the driver's text
            self.add("query", f"the source refused the query: {error_reason(exc)}")
            return []
        if repeated and self.stream.write != "insert":
            self.add("key", f"{repeated} values of key {key} repeat in the query's rows: "
                     "give a unique key, or write: insert")  # fmt: skip
            return []
        return key

    def _note_runs(self, conn: Connection, table: Table, key: list[str]) -> None:
        """A key that is not unique: rows with equal keys share a chunk, so a run longer than
        a chunk loads as one step (longer than the step budget would like)."""
        run = longest_run(conn, table, key)
        if run > self.spec.chunk_rows:
            self.notes.append(
                f"stream {self.stream.stream_name!r}: key {key} repeats up to {run} times, "
                f"more than chunk_rows ({self.spec.chunk_rows}); such a run loads as one step"
            )

    def _check_target(self, source_table: FromClause, types: Types) -> Types | None:
        """The target columns' types: reflected, or what ``create_target`` would make."""
        stream = self.stream
        if self.target is None:
            return self._http_target(source_table, types)
        if self.target.fresh:  # a SQLite file not created yet: every table is missing
            return self._missing_target(source_table, types)
        refuse_marked_schema(self.target.engine, stream.target_table)
        try:
            table = reflect_table(for_reading(self.target.engine), stream.target_table)
        except sa_exc.NoSuchTableError:
            return self._missing_target(source_table, types)
        with for_reading(self.target.engine).connect() as conn:
            target_types = describe(conn, stream.target_table)
        self._existing_target(source_table, table, types, target_types)
        return target_types

    def _http_target(self, source_table: FromClause, types: Types) -> Types | None:
        """An HTTP target takes what the source and transforms produce; options that only
        mean something to a SQL table are refused, not ignored."""
        stream = self.stream
        if stream.create_target:
            self.add("create_target", "an HTTP target has no table to create")
        if stream.write != "upsert":
            self.add("write", "'write' applies to SQL targets: an HTTP API decides by itself")
        if not stream.advance_sequences:
            self.add("advance_sequences", "an HTTP target has no sequences")
        if not target_key(stream, source_table)[1]:
            self.add(
                "columns",
                "an HTTP target needs every key column copied unchanged into the rows "
                "(its rows are quarantined and told apart by it)",
            )
        if self._has_problems():
            return None
        return produced_types(stream, source_table, types)

    def _missing_target(self, source_table: FromClause, types: Types) -> Types | None:
        stream = self.stream
        assert self.target is not None
        if not stream.create_target:
            self.add(
                "target_table",
                f"no table {stream.target_table!r} in the target (set create_target to create it)"
                + _did_you_mean(self.target.engine, stream.target_table, fresh=self.target.fresh),
            )
            return None
        if not target_key(stream, source_table)[1]:
            self.add(
                "columns", "create_target needs every key column copied unchanged into the target"
            )
            return None
        if self.target.fresh:  # connecting would create the file
            to = Target("sqlite", table=stream.target_table)
        else:
            with self.target.engine.connect() as conn:
                to = target_of(conn, stream.target_table)
        columns, refused = target_columns(stream, source_table, types, to)
        for name, why in refused:
            option = f"; give it {why.option}" if why.option else ""
            self.add(f"columns/{name}", f"cannot carry {name!r}: {why.reason}{option}")
        for column in columns:
            problem = identifier_problem(column.name, self.target.backend)
            if problem:
                self.add(f"columns/{column.name}", problem)
        return {c.name: _would_be(c, source_table, types, to.dialect, self.stream) for c in columns}

    def _existing_target(
        self, source_table: FromClause, table: Table, types: Types, target_types: Types
    ) -> None:
        stream = self.stream
        assert self.target is not None
        for col in column_specs(stream, source_table):
            if col not in table.c:
                self.add(
                    f"columns/{col}", f"no column {col!r} in target table {stream.target_table!r}"
                )
        tkey, _ = target_key(stream, source_table)
        tkey = tkey or [c.name for c in table.primary_key.columns]
        if not tkey:
            self.add("target_table", f"{stream.target_table!r} has no primary key")
            return
        absent = [k for k in tkey if k not in table.c]
        if absent:
            self.add(
                "target_table",
                f"target table {stream.target_table!r} has no key column {absent[0]!r}",
            )
            return
        with for_reading(self.target.engine).connect() as conn:
            problem = None
            if stream.write != "insert":
                problem = key_problem(conn, table, tkey, target_types, "upsert", side="target")
        if problem is not None:
            self.add("target_table", problem)
        self._key_collations(tkey, types, target_types, source_table)

    def _key_collations(
        self, tkey: list[str], types: Types, target_types: Types, source_table: FromClause
    ) -> None:
        """Text keys that differ by case, accent or trailing spaces must stay distinct."""
        skey = source_key(self.stream, source_table)
        for s_name, t_name in zip(skey, tkey, strict=False):
            target = target_types.get(t_name)
            if target is None or target.kind != Kind.TEXT or not target.collation:
                continue
            source = types.get(s_name)
            if source is not None and source.collation == target.collation:
                continue  # as unique in the source as it will be in the target
            if not _exact_collation(target.collation):
                self.add(
                    "target_table",
                    f"key column {t_name!r} has collation {target.collation}: keys differing "
                    "only by case, accent or trailing spaces would collide; use a binary "
                    "no-pad collation (utf8mb4_nopad_bin on MariaDB, utf8mb4_0900_bin on MySQL)",
                )

    def _sample(self, table: FromClause, types: Types, target_types: Types) -> None:
        """A few rows through read, transforms, casts and staging, writing nothing: a value
        Baton cannot carry is refused here, by column, not found at run time."""
        binding = bind_stream(self.spec, self.stream.stream_name, table, types)
        path = build_path(binding.mapper, binding.origins, types, target_types)
        with for_reading(self.sql_source.engine).connect() as conn:
            rows = _first_rows(conn, binding.source.select_range(None, None), SAMPLE_ROWS)
        for row in rows:
            try:
                converted = path.convert(row)
            except BadRowError:
                continue  # quarantined at run time, with its reason
            for name, value in zip(path.target_columns, converted, strict=True):
                try:
                    codec.encode_value(value)
                except TypeError:
                    self.add(
                        f"columns/{name}", f"cannot carry values of type {type(value).__name__}"
                    )
                    return


def _first_rows(conn: Connection, stmt: object, limit: int) -> list[tuple[object, ...]]:
    result = conn.execute(stmt.limit(limit))  # type: ignore[attr-defined]
    return [tuple(r) for r in result]


def _would_be(
    column: TargetColumn, source_table: FromClause, types: Types, dialect: str, stream: Stream
) -> ColumnType:
    """The type a column ``create_target`` makes will have, for the sample's casts."""
    spec = column_specs(stream, source_table)[column.name]
    source = types.get(spec) if isinstance(spec, str) else None
    if source is not None and source.sql.lower() == column.carried.sql.lower():
        return source.with_(dialect=dialect)
    produced = produced_type(spec, types)
    return produced.with_(dialect=dialect, sql=column.carried.sql)


def _exact_collation(name: str) -> bool:
    lowered = name.lower()
    return lowered in ("binary", "utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb3_nopad_bin")


def _did_you_mean(engine: Engine, name: str, *, fresh: bool = False) -> str:
    """A near or case-only match among the database's tables, to say what was meant."""
    if fresh:
        return ""
    schema, _, table = name.rpartition(".")
    try:
        tables = inspect(for_reading(engine)).get_table_names(schema=schema or None)
    except sa_exc.SQLAlchemyError:
        return ""
    same = [t for t in tables if t.lower() == table.lower()]
    close = same or difflib.get_close_matches(table, tables, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
