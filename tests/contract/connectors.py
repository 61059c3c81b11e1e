"""The connectors the contract suite runs against, one factory each.

A case builds a connector's source or target over a table the test describes
(:class:`TableDef`), and gives the test what it needs to judge the connector
without the connector's help: the source's own key order (a plain ``ORDER BY``
on SQL), the target's rows as stored, a way to drop a table and a connector that
cannot reach its system. Where connectors legitimately differ (which text keys a
collation keeps apart, whether a key may repeat) the case says so in its fields,
and the tests branch on them (never skip).

To run the suite against a new connector, write a case like :class:`MemoryCase`
and add its factory to :data:`CASES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select, text

from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.connectors.base import Key, Source, Target
from etl_tasks.connectors.files.source import POSITION, FileSet, FileSource
from etl_tasks.connectors.http.client import Client
from etl_tasks.connectors.http.target import HttpTarget
from etl_tasks.connectors.memory import (
    MemoryDatabase,
    MemorySource,
    MemoryTable,
    MemoryTarget,
)
from etl_tasks.connectors.sql.engines import create_sql_engine, for_reading
from etl_tasks.connectors.sql.factory import _describe
from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.connectors.sql.source import SqlSource
from etl_tasks.connectors.sql.target import SqlTarget
from etl_tasks.endpoints import FileSettings
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Base, Migration
from etl_tasks.values.catalog import describe
from etl_tasks.values.types import ColumnType, Kind
from ops.chaos.http_api import HttpApi, running_api
from ops.embedded import free_port
from tests import services
from tests.exports import write_csv, write_jsonl

WriteMode = Literal["upsert", "insert", "skip_existing"]
MODES: list[WriteMode] = ["upsert", "insert", "skip_existing"]
Row = tuple[Any, ...]

#: Text keys whose order differs by collation: case, accents, trailing and leading spaces.
ALL_TEXT_KEYS = [
    "apple",
    "Apple",
    "äpple",
    "apple ",
    "apple  ",
    " apple",
    "Banana",
    "banana",
    "b",
    "B",
    "éclair",
    "eclair",
    "Éclair",
    "zebra",
    "Zürich",
    "ß",
    "ss",
    "",
    "z",
    "ÿ",
]
#: Those a case-, accent- and pad-insensitive collation (MariaDB's utf8mb4_general_ci)
#: keeps apart: still mixed case, accents and a trailing space, in an order unlike binary.
INSENSITIVE_TEXT_KEYS = [
    "apple",
    "Banana",
    "cherry",
    "Éclair",
    "eclat",
    "zebra",
    "Zürich",
    "pad ",
    " lead",
    "",
    "ÿ",
]


@dataclass(frozen=True)
class Col:
    name: str
    kind: Literal["int", "text"]
    nullable: bool = True


@dataclass(frozen=True)
class TableDef:
    """A table a test needs: its columns in order (key first) and its key.

    ``unique`` False: the key is no constraint and may repeat (a source read with
    ``write: insert``), or, with ``key_nullable``, may even hold NULLs.
    """

    name: str
    columns: list[Col]
    key: list[str]
    unique: bool = True
    key_nullable: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


class SourceCase(Protocol):
    """One connector as a source, on a system of the test's own."""

    name: str
    #: Text keys this source keeps distinct (its collation decides).
    text_keys: list[str]
    #: Whether a source may hold rows that share a key (a table with no unique key).
    equal_keys: bool
    #: Whether the source's key is each row's position (a file and a record number) rather
    #: than the table's key columns: rows then come with the position first, in the order
    #: they were written, and a position never repeats nor is NULL.
    positional: bool

    def source(self, table: TableDef, rows: Sequence[Row]) -> Source:
        """The table, created with these rows, as a source."""
        ...

    def key_order(self, table: TableDef) -> list[Key]:
        """Every key of the table in the system's own order, asked without the connector."""
        ...

    def as_read(self, table: TableDef, rows: Sequence[Row]) -> list[Row]:
        """``rows`` (in the order given) as the source returns them: the same rows, or, for a
        positional source, each with its position first and its values as text."""
        ...

    def drop(self, table: TableDef) -> None: ...

    def unreachable_source(self, table: TableDef) -> Source:
        """A source whose system does not answer."""
        ...


class TargetCase(Protocol):
    """One connector as a target, on a system of the test's own."""

    name: str
    #: Whether a chunk's rows and its ledger record commit together in the target (a
    #: transaction): rows written without commit vanish, and a load or a ledger lookup of a
    #: chunk in flight waits for it. Without (an HTTP API) each confirmed write stays, and a
    #: load of the chunk that runs again sends only what was not confirmed.
    transactional: bool
    #: Whether the target reaches its system to prepare and keep its ledger (an HTTP target's
    #: ledger is in the state DB: only a write reaches the API).
    ledger_in_target: bool
    #: Whether the target can be read back (verify).
    readable: bool
    #: The write modes the target takes.
    write_modes: list[WriteMode]

    def target(self, table: TableDef, write: WriteMode, rows: Sequence[Row] = ()) -> Target:
        """The table, created holding these rows, as a prepared target."""
        ...

    def stored(self, table: TableDef) -> list[Row]:
        """The table's rows as stored, in key order, read without the connector."""
        ...

    def drop(self, table: TableDef) -> None: ...

    def unreachable_target(self, table: TableDef) -> Target: ...


class Case(SourceCase, TargetCase, Protocol):
    """One connector, as source and as target."""


def _types(table: TableDef) -> dict[str, ColumnType]:
    kinds = {"int": (Kind.INTEGER, "integer"), "text": (Kind.TEXT, "text")}
    return {
        c.name: ColumnType("memory", kinds[c.kind][0], kinds[c.kind][1], nullable=c.nullable)
        for c in table.columns
    }


@dataclass
class MemoryCase:
    """The reference connector: Python's tuple order keeps every text key apart."""

    name: str = "memory"
    text_keys: list[str] = field(default_factory=lambda: list(ALL_TEXT_KEYS))
    equal_keys: bool = False  # rows are kept by key: a key holds one row
    positional: bool = False
    transactional: bool = True
    ledger_in_target: bool = True
    readable: bool = True
    write_modes: list[WriteMode] = field(default_factory=lambda: list(MODES))
    db: MemoryDatabase = field(default_factory=MemoryDatabase)

    def _create(self, table: TableDef, rows: Sequence[Row]) -> MemoryTable:
        not_null = frozenset(c.name for c in table.columns if not c.nullable)
        made = MemoryTable(table.names, list(table.key), _types(table), not_null)
        made.add(rows)
        self.db.tables[table.name] = made
        return made

    def source(self, table: TableDef, rows: Sequence[Row]) -> Source:
        self._create(table, rows)
        return MemorySource(self.db, table.name)

    def key_order(self, table: TableDef) -> list[Key]:
        return sorted(self.db.tables[table.name].rows)

    def as_read(self, table: TableDef, rows: Sequence[Row]) -> list[Row]:
        return list(rows)

    def target(self, table: TableDef, write: WriteMode, rows: Sequence[Row] = ()) -> Target:
        self._create(table, rows)
        target = MemoryTarget(self.db, table.name, write)
        target.prepare()
        return target

    def stored(self, table: TableDef) -> list[Row]:
        t = self.db.tables[table.name]
        return [t.rows[k] for k in sorted(t.rows)]

    def drop(self, table: TableDef) -> None:
        del self.db.tables[table.name]

    def unreachable_source(self, table: TableDef) -> Source:
        self._create(table, [])
        self.db.reachable = False
        return MemorySource(self.db, table.name)

    def unreachable_target(self, table: TableDef) -> Target:
        self._create(table, [])
        self.db.reachable = False
        return MemoryTarget(self.db, table.name)


@dataclass
class SqlCase:
    """The SQL connector on one database of the test's own."""

    name: str
    url: str
    dead_url: str  # the same kind of database, where nothing answers
    text_keys: list[str]
    equal_keys: bool = True
    positional: bool = False
    transactional: bool = True
    ledger_in_target: bool = True
    readable: bool = True
    write_modes: list[WriteMode] = field(default_factory=lambda: list(MODES))
    engines: list[Engine] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = self._engine(self.url)

    def _engine(self, url: str) -> Engine:
        engine = create_sql_engine(url, connect_timeout_s=1)
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()

    def _table(self, table: TableDef) -> Table:
        cols = [
            Column(
                c.name,
                Integer if c.kind == "int" else String(64),
                nullable=c.nullable if c.name not in table.key else table.key_nullable,
                primary_key=table.unique and c.name in table.key,
                autoincrement=False,
            )
            for c in table.columns
        ]
        return Table(table.name, MetaData(), *cols)

    def _create(self, table: TableDef, rows: Sequence[Row]) -> Table:
        made = self._table(table)
        with self.engine.begin() as conn:
            made.create(conn)
            if rows:
                conn.execute(made.insert(), [dict(zip(table.names, r, strict=True)) for r in rows])
        return made

    def _source(self, engine: Engine, made: Table, table: TableDef) -> Source:
        query = RangeQuery(made, table.key, table.names, [])
        types: dict[str, ColumnType] = {}
        if engine is self.engine:
            with for_reading(engine).connect() as conn:
                types = describe(conn, table.name)
        return SqlSource(for_reading(engine), query, table.key, types)

    def source(self, table: TableDef, rows: Sequence[Row]) -> Source:
        return self._source(self.engine, self._create(table, rows), table)

    def as_read(self, table: TableDef, rows: Sequence[Row]) -> list[Row]:
        return list(rows)

    def key_order(self, table: TableDef) -> list[Key]:
        t = self._table(table)
        keys = [t.c[k] for k in table.key]
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(*keys).order_by(*keys))]

    def target(self, table: TableDef, write: WriteMode, rows: Sequence[Row] = ()) -> Target:
        self._create(table, rows)
        target = self._target(self.engine, table, write)
        target.prepare()
        return target

    def _target(self, engine: Engine, table: TableDef, write: WriteMode) -> SqlTarget:
        return SqlTarget(
            engine,
            table.name,
            [],
            write,
            identity_key=True,
            unique_key=table.unique,
            describe=_describe,
        )

    def stored(self, table: TableDef) -> list[Row]:
        t = self._table(table)
        with self.engine.connect() as conn:
            stmt = select(*t.c).order_by(*[t.c[k] for k in table.key])
            return [tuple(r) for r in conn.execute(stmt)]

    def drop(self, table: TableDef) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(f"DROP TABLE {self.engine.dialect.identifier_preparer.quote(table.name)}")
            )

    def unreachable_source(self, table: TableDef) -> Source:
        return self._source(self._engine(self.dead_url), self._table(table), table)

    def unreachable_target(self, table: TableDef) -> Target:
        return self._target(self._engine(self.dead_url), table, "upsert")


@dataclass
class FileCase:
    """The file source over a folder of exports (tests/exports.py), one file per table.

    Its key is the position, ``(file, record)``: rows come back in the order written,
    with their position first, and every value as text (a CSV empty field is NULL)."""

    name: str
    folder: Path
    format: Literal["csv", "jsonl"]
    text_keys: list[str] = field(default_factory=lambda: list(ALL_TEXT_KEYS))
    equal_keys: bool = False  # a position is never repeated
    positional: bool = True
    written: dict[str, int] = field(default_factory=dict)

    def _name(self, table: TableDef) -> str:
        return f"{table.name}.{self.format}"

    def _files(self, folder: Path, table: TableDef) -> FileSet:
        settings = FileSettings(path=str(folder), format=self.format)
        return FileSet(folder, self._name(table), settings, Path)

    def _source(self, folder: Path, table: TableDef) -> Source:
        return FileSource(self._files(folder, table), table.names, [*POSITION, *table.names])

    def source(self, table: TableDef, rows: Sequence[Row]) -> Source:
        self.folder.mkdir(parents=True, exist_ok=True)
        records = [dict(zip(table.names, r, strict=True)) for r in rows]
        path = self.folder / self._name(table)
        if self.format == "csv":
            write_csv(path, records, encoding="utf-8", delimiter=",", columns=table.names)
        else:
            write_jsonl(path, records)
        self.written[table.name] = len(rows)
        return self._source(self.folder, table)

    def key_order(self, table: TableDef) -> list[Key]:
        return [(self._name(table), n) for n in range(1, self.written[table.name] + 1)]

    def as_read(self, table: TableDef, rows: Sequence[Row]) -> list[Row]:
        def text(value: Any) -> str | None:
            if value is None or (value == "" and self.format == "csv"):
                return None
            return str(value)

        name = self._name(table)
        return [(name, n, *map(text, row)) for n, row in enumerate(rows, 1)]

    def drop(self, table: TableDef) -> None:
        (self.folder / self._name(table)).unlink()

    def unreachable_source(self, table: TableDef) -> Source:
        """A folder that cannot be listed now (a share that went away): a symlink loop."""
        loop = self.folder.parent / "gone"
        loop.symlink_to(loop)
        return self._source(loop, table)


MIGRATION = "mig00000000000000000000000000001"  # the one the tests' chunks belong to


@dataclass
class HttpCase:
    """The HTTP target over the test HTTP API (ops/chaos/http_api.py), its ledger in a state DB
    of the test's own. The API upserts by key: what it holds is what its requests stored,
    folded by key, a later row's columns over an earlier one's."""

    api: HttpApi
    db: StateDB
    name: str = "http"
    transactional: bool = False  # each confirmed request stays; the ledger skips it
    ledger_in_target: bool = False  # the ledger is in the state DB
    readable: bool = False  # an API is not read back
    write_modes: list[WriteMode] = field(default_factory=lambda: ["upsert"])
    keys: dict[str, list[str]] = field(default_factory=dict)

    def _target(self, url: str, table: TableDef) -> HttpTarget:
        client = Client("POST", {"Authorization": f"Bearer {self.api.token}"})
        return HttpTarget(
            self.db,
            client,
            url.replace("{table}", table.name),
            table.key,
            _types(table),
            batch_rows=SUB_BATCH_ROWS,
            rows_field="rows",
            timeout_s=5,
        )

    def target(self, table: TableDef, write: WriteMode, rows: Sequence[Row] = ()) -> Target:
        assert write in self.write_modes
        tables = self.api.tables if self.api.tables is not None else {}
        tables[table.name] = [c.name for c in table.columns if not c.nullable]
        self.api.tables = tables
        self.api.stored[table.name] = [dict(zip(table.names, r, strict=True)) for r in rows]
        self.keys[table.name] = table.key
        target = self._target(self.api.url, table)
        target.prepare()
        return target

    def stored(self, table: TableDef) -> list[Row]:
        held: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in self.api.rows(table.name):
            key = tuple(row[k] for k in table.key)
            held[key] = {**held.get(key, {}), **row}
        return [tuple(held[k].get(c) for c in table.names) for k in sorted(held)]

    def drop(self, table: TableDef) -> None:
        assert self.api.tables is not None
        del self.api.tables[table.name]

    def unreachable_target(self, table: TableDef) -> Target:
        return self._target(f"http://127.0.0.1:{free_port()}/v1/{{table}}/import", table)


@contextmanager
def http_case(tmp_path: Path) -> Iterator[TargetCase]:
    db = StateDB(f"sqlite:///{tmp_path / 'state.db'}")
    Base.metadata.create_all(db.engine)
    with db.session() as s:
        now = db.now(s)
        s.add(
            Migration(
                id=MIGRATION,
                name="contract",
                spec={},
                state="running",
                created_at=now,
                updated_at=now,
            )
        )
    try:
        with running_api(max_rows=5000, name_rows=False) as api:
            yield HttpCase(api, db)
    finally:
        db.dispose()


@contextmanager
def memory_case(tmp_path: Path) -> Iterator[Case]:
    yield MemoryCase()


@contextmanager
def sqlite_case(tmp_path: Path) -> Iterator[Case]:
    case = SqlCase(
        "sqlite",
        f"sqlite:///{tmp_path / 'contract.db'}",
        f"sqlite:///{tmp_path / 'missing' / 'contract.db'}",
        list(ALL_TEXT_KEYS),  # BINARY collation: every byte counts
    )
    try:
        yield case
    finally:
        case.close()


def _dead(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=free_port()).render_as_string(False)


@contextmanager
def postgresql_case(tmp_path: Path) -> Iterator[Case]:
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    with services.pg_database() as url:
        # deterministic collations: strings that differ in any way are distinct keys
        case = SqlCase("postgresql", url, _dead(url), list(ALL_TEXT_KEYS))
        try:
            yield case
        finally:
            case.close()


@contextmanager
def mariadb_case(tmp_path: Path) -> Iterator[Case]:
    if not services.mariadb_answers():
        services.unavailable(f"MariaDB at {services.MARIADB_ADMIN_URL}")
    with services.mariadb_database() as url:
        case = SqlCase("mariadb", url, _dead(url), list(INSENSITIVE_TEXT_KEYS))
        try:
            yield case
        finally:
            case.close()


@contextmanager
def csv_case(tmp_path: Path) -> Iterator[SourceCase]:
    yield FileCase("csv", tmp_path / "exports", "csv")


@contextmanager
def jsonl_case(tmp_path: Path) -> Iterator[SourceCase]:
    yield FileCase("jsonl", tmp_path / "exports", "jsonl")


#: Every connector the contract suite runs against, by the name its tests show: those that
#: are both source and target, then those that are only one.
CASES: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "sqlite": sqlite_case,
    "postgresql": postgresql_case,
    "mariadb": mariadb_case,
    "memory": memory_case,
}
SOURCES: dict[str, Callable[[Path], AbstractContextManager[SourceCase]]] = {
    **CASES,
    "csv": csv_case,
    "jsonl": jsonl_case,
}
TARGETS: dict[str, Callable[[Path], AbstractContextManager[TargetCase]]] = {
    **CASES,
    "http": http_case,
}


@dataclass
class Expiring:
    """A pace whose deadline passes after ``after`` looks at it; counts the ticks."""

    after: int = 0
    looks: int = 0
    ticks: int = 0

    def expired(self, ahead_s: float = 0.0) -> bool:
        self.looks += 1
        return self.looks > self.after

    def tick(self) -> None:
        self.ticks += 1
