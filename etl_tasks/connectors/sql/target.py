"""A SQL table as a :class:`~etl_tasks.connectors.base.Target`: each chunk exactly once.

A chunk is one target transaction: claim the chunk's ledger row first (a second
delivery stops there, or waits for the first and then finds it), write the rows
batch by batch inside savepoints, record the outcome in the ledger row, commit.
PostgreSQL gets COPY, and only COPY: straight into the table while the chunk's
key range is empty there, otherwise through a temporary stage and an upsert, so
both paths write the very same text for every value. MySQL/MariaDB and SQLite
get multi-row inserts of values spelled by their own encoder, without
SQLAlchemy's type processing in between.

The sub-batch loop, the deadline cut and bisection are the load step's
(:mod:`etl_tasks.steps.load`); a batch here is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from sqlalchemy import Column, Connection, Engine, MetaData, Select, Table, exists, select, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.types import NullType

from etl_tasks.codec import NULL_KEYS
from etl_tasks.connectors.base import Batch, ChunkRef, Key, LedgerRecord, Native, Refused
from etl_tasks.connectors.sql import ledger, pg_native
from etl_tasks.connectors.sql.engines import for_reading
from etl_tasks.connectors.sql.errors import (
    as_baton_errors,
    error_reason,
    is_bad_row_error,
    is_foreign_key_error,
)
from etl_tasks.connectors.sql.pg_copy import copy_into
from etl_tasks.connectors.sql.queries import (
    RangeQuery,
    bound_values,
    key_expr,
    key_value,
    named_range,
    range_condition,
    raw,
    reflect_table,
)
from etl_tasks.connectors.sql.schema import (
    build_deferred_key,
    ensure_ledger,
    ensure_table,
    owed_key,
    target_of,
)
from etl_tasks.connectors.sql.sequences import advance_sequences
from etl_tasks.errors import BadRowError, PermanentError, TransientError
from etl_tasks.values.casts import cast_to
from etl_tasks.values.ddl import Target as Dialect
from etl_tasks.values.ddl import TargetColumn
from etl_tasks.values.encoders import ENCODERS
from etl_tasks.values.types import ColumnType

log = logging.getLogger(__name__)

WriteMode = Literal["upsert", "insert", "skip_existing"]
#: What a created table's columns are, given the target's dialect (None: not created).
TableDesign = Callable[[Dialect], list[TargetColumn]]
READ_BACK_ROWS = 5000
UNREACHABLE = "target unavailable"


class SqlTarget:
    """One stream's target table."""

    kind = "sql"

    def __init__(
        self,
        engine: Engine,
        table_name: str,
        key: Sequence[str],
        write: WriteMode,
        *,
        identity_key: bool,
        unique_key: bool = True,
        design: TableDesign | None = None,
        advance_sequences: bool = True,
        describe: Callable[[Engine, str], dict[str, ColumnType]] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.table_name = table_name
        self._key = list(key)  # empty: the table's primary key
        self.write_mode = write
        self.identity_key = identity_key  # target key values equal the source key values
        self.unique_key = unique_key  # False: an orderable key with equal values (insert only)
        self.design = design
        self.advance = advance_sequences
        self._describe = describe
        # (migration, stream) that may load a table it creates before its primary key is
        # built (None: a table it creates has its key from the start)
        self.owner = owner
        self.dialect = engine.dialect.name
        self.encode = ENCODERS[self.dialect]
        # range_is_empty's statements, by which bounds a range has
        self._empty_probes: dict[tuple[bool, bool], Select[Any]] = {}

    # -- what the table is: read once, after prepare() made sure it exists -----------------

    @functools.cached_property
    def table(self) -> Table:
        try:
            with as_baton_errors(UNREACHABLE, f"cannot read table {self.table_name!r}"):
                return reflect_table(for_reading(self.engine), self.table_name)
        except PermanentError as exc:
            if isinstance(exc.__cause__, sa_exc.NoSuchTableError):
                raise PermanentError(f"table {self.table_name!r} does not exist") from exc
            raise

    @functools.cached_property
    def key(self) -> list[str]:
        return self._key or [c.name for c in self.table.primary_key.columns]

    @functools.cached_property
    def types(self) -> dict[str, ColumnType]:
        if self._describe is None:
            return {}
        self.table  # noqa: B018 - a missing table is an error, not a table without columns
        with as_baton_errors(UNREACHABLE, f"cannot describe table {self.table_name!r}"):
            return self._describe(self.engine, self.table_name)

    @functools.cached_property
    def raw_table(self) -> Table:
        """The same table with no SQLAlchemy type processing: values arrive encoded."""
        cols = [Column(c.name, NullType(), primary_key=c.name in self.key) for c in self.table.c]
        return Table(self.table.name, MetaData(), *cols, schema=self.table.schema)

    @functools.cached_property
    def key_casts(self) -> list[Callable[[Any], Any]]:
        return [cast_to(self.types[k]) for k in self.key if k in self.types]

    def columns(self) -> dict[str, ColumnType]:
        return self.types

    # -- the protocol --------------------------------------------------------------------

    def prepare(self) -> None:
        """The ledger, and with ``create_target`` the table: once, under a lock. A table
        another stream created and still owes its primary key gets it now: only that
        stream may load it without."""
        with as_baton_errors(UNREACHABLE, f"cannot prepare {self.table_name!r}"):
            ensure_ledger(self.engine)
            if self.design is not None:
                with self.engine.connect() as conn:
                    dialect = target_of(conn, self.table_name)
                columns = self.design(dialect)
                if ensure_table(
                    self.engine, self.table_name, columns, self._key, self.unique_key, self.owner
                ):
                    log.info("created target table %s", self.table_name)
                    return
        self.build_key(unless=self.owner)

    def begin_chunk(self, chunk: ChunkRef) -> SqlChunkWrite:
        self.ledger_ready  # noqa: B018 - once per process: a ledger an older version made
        return SqlChunkWrite(self, chunk)

    @functools.cached_property
    def ledger_ready(self) -> bool:
        """The ledger with every column this version writes (an older version's prepare
        may have made it narrower or without them); checked once per process."""
        with as_baton_errors(UNREACHABLE, "cannot prepare the ledger"):
            ensure_ledger(self.engine)
        return True

    def ledger_lookup(self, chunk: ChunkRef) -> LedgerRecord | None:
        return ledger.committed(
            self.engine, chunk.migration_id, chunk.stream, chunk.chunk_id, chunk.token
        )

    def finish(self) -> list[str]:
        """Build the primary key a table created for the load was left without, then move
        the table's key generators past the loaded keys (unless the spec says not)."""
        done = ["built its primary key"] if self.build_key() else []
        if not self.advance:
            return done
        with as_baton_errors(UNREACHABLE, f"cannot advance the sequences of {self.table_name!r}"):
            return done + advance_sequences(self.engine, self.table_name)

    @functools.cached_property
    def key_settled(self) -> bool:
        """Whether the table owes no primary key: it has one (as reflected, or built since),
        or it was found not owing one, which it never will (only a stream that creates it
        leaves its key for later). Until then each chunk asks (:meth:`range_is_empty`)."""
        return bool(self.table.primary_key.columns)

    def build_key(self, unless: tuple[str, str] | None = None) -> bool:
        """Build the table's deferred primary key now, if it is still owed; whether it was
        built here. Rows with the same key (written by something other than this
        migration's chunks, which the ledger lets commit once) make it fail the stream."""
        if self.dialect != "postgresql":
            return False
        refused = f"cannot build the primary key of {self.table_name!r}"
        try:
            with as_baton_errors(UNREACHABLE, refused):
                built = build_deferred_key(self.engine, self.table_name, unless)
        except PermanentError as exc:
            diag = getattr(getattr(exc.__cause__, "orig", None), "diag", None)
            detail = getattr(diag, "message_detail", None)
            if not detail:
                raise
            raise PermanentError(
                f"{refused}: {detail} (rows written into it besides this migration's)"
            ) from exc.__cause__
        if built:
            self.__dict__["key_settled"] = True
            log.info("built the primary key of %s", self.table_name)
        return built

    def read_back(self, lower: Key | None, upper: Key | None) -> Iterator[Batch]:
        names = [c.name for c in self.table.c]
        query = RangeQuery(self.table, self.key, names, [])
        with as_baton_errors(UNREACHABLE, "cannot read the target"):
            # a reader's transaction: on SQLite it must not queue behind a chunk in flight
            with for_reading(self.engine).connect() as conn:
                result = conn.execute(query.select_range(lower, upper))
                for part in result.partitions(READ_BACK_ROWS):
                    yield Batch(names, [tuple(r) for r in part])

    # -- what a chunk's write uses ---------------------------------------------------------

    def range_is_empty(self, conn: Connection, key_range: tuple[Any, Any] | None) -> bool:
        """Whether COPY may go straight into the table (PostgreSQL, fresh key range).

        The chunk's bounds are the source's values: compared in the target's terms (cast
        to its key columns). A bound the target's key type cannot hold (a stray text in an
        integer key) means the range cannot be checked here, so the staged path is taken.
        """
        if self.dialect != "postgresql" or not self.identity_key or key_range is None:
            return False
        if any(b is not None and NULL_KEYS in b for b in key_range):
            return False  # the rows whose key is NULL: quarantined, none to write
        try:
            lower, upper = (self._target_key(b) for b in key_range)
        except BadRowError:
            return False
        if not self.key_settled:
            owed = owed_key(conn, self.table_name)  # and the table locked against its build
            if owed is None:
                self.__dict__["key_settled"] = True
            elif owed.owner != self.owner:  # this stream's prepare built
                # it, unless the table was dropped and made again since
                raise TransientError(f"{self.table_name!r} waits for its primary key")
            else:
                # This stream created the table and alone loads it before its key is
                # built, each range once (the ledger): a range not yet committed is
                # empty, and without the key asking would scan the table.
                return True
        shape = (lower is not None, upper is not None)
        stmt = self._empty_probes.get(shape)
        if stmt is None:  # built once per shape: every chunk's load asks
            stmt = self._empty_probes[shape] = self._first_key_in(*shape)
        return not conn.execute(stmt, bound_values(lower, upper)).scalar()

    def _first_key_in(self, lower: bool, upper: bool) -> Any:
        """Whether the first key after the lower bound, in key order, is within the upper
        one. Asked as "any key in the range", PostgreSQL planned a table whose statistics
        predate its rows (one this migration created and is filling) with its default
        guess for a row comparison and scanned all of it for a range that was empty: 0.3 s
        per chunk at 3M rows, growing with the table. The first key in key order is always
        one step down the key's index."""
        key_cols = [raw(self.table.c[k]) for k in self.key]
        low, high = named_range(len(key_cols), lower, upper)
        first = (
            select(*key_cols)
            .where(range_condition(key_cols, low, None))
            .order_by(*key_cols)
            .limit(1)
            .subquery()
        )
        found = select(1).select_from(first)
        if high is not None:
            found = found.where(key_expr(list(first.c)) <= key_value(high))
        return select(exists(found))

    def _target_key(self, bound: Sequence[Any] | None) -> list[Any] | None:
        if bound is None:
            return None
        return [cast(v) for cast, v in zip(self.key_casts, bound, strict=True)]

    def existing(self, conn: Connection, batch: Batch) -> tuple[list[int], list[Refused]]:
        """``insert`` mode: rows whose key the target already has are refused, found in one
        query instead of by bisecting a batch where every row fails. Returns the positions
        of the rows to write, and the refused ones."""
        positions = [batch.columns.index(k) for k in self.key]
        keys = [tuple(self.encode(row[p]) for p in positions) for row in batch.rows]
        key_cols = [raw(self.table.c[k]) for k in self.key]
        expr = key_cols[0] if len(key_cols) == 1 else tuple_(*key_cols)
        wanted = [k[0] for k in keys] if len(key_cols) == 1 else keys
        found = {
            tuple(self.encode(v) for v in r)
            for r in conn.execute(select(*key_cols).where(expr.in_(wanted)))
        }
        fresh = [i for i, k in enumerate(keys) if k not in found]
        taken = [
            Refused(
                batch.rows[i],
                "key already in the target (write: insert)",
                batch.keys[i] if batch.keys else None,
            )
            for i, k in enumerate(keys)
            if k in found
        ]
        return fresh, taken

    def write_rows(
        self, conn: Connection, columns: list[str], rows: list[tuple[Any, ...]], *, direct: bool
    ) -> None:
        if self.dialect == "postgresql":
            if self.write_mode == "upsert":
                rows = self._last_per_key(columns, rows)
            self._pg_copy(conn, columns, rows, direct=direct)
            return
        encode = self.encode
        params = [{c: encode(v) for c, v in zip(columns, r, strict=True)} for r in rows]
        # the sqlite3 and PyMySQL drivers run an executemany as one batch themselves
        conn.execute(self._insert_stmt(columns), params)

    def _last_per_key(
        self, columns: list[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """A batch's last row of each key. PostgreSQL refuses an upsert that meets a key
        twice ("cannot affect row a second time") where MariaDB and SQLite let the later
        row win: the later row wins here too."""
        positions = [columns.index(k) for k in self.key]
        with contextlib.suppress(TypeError):  # a key value Python cannot hash: encode it
            if len(set(map(operator.itemgetter(*positions), rows))) == len(rows):
                return rows  # no key twice (the usual case): nothing to encode per row
        last = {tuple(self.encode(row[p]) for p in positions): row for row in rows}
        return rows if len(last) == len(rows) else list(last.values())

    def _insert_stmt(self, columns: list[str]) -> Any:
        """INSERT with the write mode's conflict clause, in the target's dialect."""
        others = [c for c in columns if c not in self.key]
        if self.dialect == "mysql" or self.dialect == "mariadb":
            mine = mysql.insert(self.raw_table)
            if self.write_mode == "insert":
                return mine
            cols = others if self.write_mode == "upsert" and others else self.key[:1]
            return mine.on_duplicate_key_update({c: mine.inserted[c] for c in cols})
        stmt = sqlite.insert(self.raw_table)
        if self.write_mode == "insert":
            return stmt
        if self.write_mode == "skip_existing" or not others:
            return stmt.on_conflict_do_nothing(index_elements=self.key)
        return stmt.on_conflict_do_update(
            index_elements=self.key, set_={c: stmt.excluded[c] for c in others}
        )

    def write_native(
        self, conn: Connection, columns: list[str], data: bytes, *, direct: bool
    ) -> None:
        """COPY text a PostgreSQL source wrote (a pass-through part), into the table or the
        stage as rows are; its key is unique and the target's, so upsert needs no dedup."""
        self._pg_copy(conn, columns, pg_native.for_target(data, _dbapi(conn)), direct=direct)

    def parse_native(self, batch: Batch, offset: int) -> Batch:
        """A pass-through batch's rows as values, to bisect (see :func:`pg_native.parse`)."""
        native = batch.native
        if not isinstance(native, Native) or native.format != pg_native.FORMAT:
            raise PermanentError("a pass-through chunk in a form this target does not read")
        with as_baton_errors(UNREACHABLE, "cannot parse the chunk"):
            with self.engine.connect() as conn:
                data = b"".join(p.data for p in native.parts)
                return pg_native.parse(_dbapi(conn), batch.columns, data, native.meta, offset)

    def _pg_copy(
        self,
        conn: Connection,
        columns: list[str],
        rows: list[tuple[Any, ...]] | bytes,
        *,
        direct: bool,
    ) -> None:
        prep = conn.dialect.identifier_preparer
        cols_sql = ", ".join(prep.quote(c) for c in columns)
        table_sql = prep.format_table(self.table)
        if direct:
            _copy(conn, table_sql, cols_sql, rows)
            return
        stage = '"_baton_stage"'
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table_sql} INCLUDING DEFAULTS)"
            " ON COMMIT DROP"
        )
        conn.exec_driver_sql(f"TRUNCATE {stage}")
        _copy(conn, stage, cols_sql, rows)
        conn.exec_driver_sql(
            f"INSERT INTO {table_sql} ({cols_sql}) SELECT {cols_sql} FROM {stage}"
            + self._pg_conflict_sql(columns)
        )

    def _pg_conflict_sql(self, columns: list[str]) -> str:
        if self.write_mode == "insert":
            return ""
        prep = self.engine.dialect.identifier_preparer
        keys = ", ".join(prep.quote(k) for k in self.key)
        others = [c for c in columns if c not in self.key]
        if self.write_mode == "skip_existing" or not others:
            return f" ON CONFLICT ({keys}) DO NOTHING"
        sets = ", ".join(f"{prep.quote(c)} = EXCLUDED.{prep.quote(c)}" for c in others)
        return f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def _dbapi(conn: Connection) -> Any:
    return conn.connection.dbapi_connection


def _copy(
    conn: Connection, table_sql: str, cols_sql: str, rows: list[tuple[Any, ...]] | bytes
) -> None:
    """COPY through the raw driver, its errors turned into SQLAlchemy's kinds."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        copy_into(_dbapi(conn), table_sql, cols_sql, rows)
    except dbapi_error as exc:
        raise sa_exc.DBAPIError.instance("COPY", None, exc, dbapi_error) from exc


class SqlChunkWrite:
    """One chunk's target transaction, opened by claiming its ledger row."""

    def __init__(self, target: SqlTarget, chunk: ChunkRef) -> None:
        self.target = target
        self.chunk = chunk
        self.committed: LedgerRecord | None = None
        self.direct = False  # COPY straight into the table (PostgreSQL, an empty key range)
        self.pinned = False  # the settings COPY text is parsed by (a pass-through chunk)
        self._stack = contextlib.ExitStack()
        self._conn: Connection | None = None

    def __enter__(self) -> SqlChunkWrite:
        c = self.chunk
        with as_baton_errors(UNREACHABLE, "target refused the chunk"):
            conn = self._stack.enter_context(self.target.engine.connect())
            self._conn = conn
            try:
                conn.begin()
                ledger.claim(conn, c.migration_id, c.stream, c.chunk_id, c.token)
            except sa_exc.IntegrityError:
                self.committed = self._read_committed(conn)
                if self.committed is None:
                    raise
                log.info(
                    "chunk %s was committed already: a redelivery changes nothing",
                    c.chunk_id,
                    extra={"migration_id": c.migration_id},
                )
                return self
            self.direct = self.target.range_is_empty(conn, c.key_range)
        if not self.direct and not self.target.key_settled:
            self.target.build_key()  # the staged path merges on the key: it is needed now
        return self

    def __exit__(self, *exc: object) -> None:
        conn = self._conn
        try:
            if conn is not None and conn.in_transaction():
                conn.rollback()  # committed already, or left by an error: nothing stays
        except sa_exc.SQLAlchemyError:
            pass  # a broken connection: the server drops the transaction with it
        finally:
            self._stack.close()

    def _read_committed(self, conn: Connection) -> LedgerRecord | None:
        if conn.in_transaction():
            conn.rollback()
        c = self.chunk
        with conn.begin():
            return ledger.read(conn, c.migration_id, c.stream, c.chunk_id)

    def write(self, batch: Batch) -> list[Refused]:
        if isinstance(batch.native, Native) and not batch.rows:
            self._write_native(batch)
            return []
        conn = self._connection()
        target = self.target
        unknown = [c for c in batch.columns if c not in target.table.c]
        if unknown:  # the stream's mapping, not a row, is wrong (the insert would not compile)
            raise PermanentError(f"no column {unknown[0]!r} in {target.table_name!r}")
        with as_baton_errors(UNREACHABLE, "target refused the chunk"):
            fresh: list[int] = list(range(len(batch)))
            taken: list[Refused] = []
            if target.write_mode == "insert" and not self.direct and target.unique_key:
                fresh, taken = target.existing(conn, batch)
            rows = [batch.rows[i] for i in fresh]
            if not rows:
                return taken
            try:
                with conn.begin_nested():
                    target.write_rows(conn, batch.columns, rows, direct=self.direct)
            except (sa_exc.StatementError, ValueError, TypeError) as exc:
                if not is_bad_row_error(exc):
                    raise
                if self.direct:  # the range held keys after all: the write mode decides
                    self.direct = False
                    return self.write(batch)
                raise BadRowError(error_reason(exc), retry_later=is_foreign_key_error(exc)) from exc
        return taken

    def _write_native(self, batch: Batch) -> None:
        """Pass-through parts, whole or not at all; a row they refuse is found by the load
        step, bisecting the part parsed (:meth:`SqlTarget.parse_native`)."""
        conn = self._connection()
        native = batch.native
        assert isinstance(native, Native)
        if native.format != pg_native.FORMAT or self.target.dialect != "postgresql":
            raise PermanentError("a pass-through chunk in a form this target does not write")
        data = b"".join(p.data for p in native.parts)
        with as_baton_errors(UNREACHABLE, "target refused the chunk"):
            if not self.pinned:  # outside any savepoint: a rolled-back one would undo it
                with _dbapi(conn).cursor() as cur:
                    pg_native.pin_session(cur, pg_native.INPUT_SETTINGS)
                self.pinned = True
            try:
                with conn.begin_nested():
                    self.target.write_native(conn, batch.columns, data, direct=self.direct)
            except (sa_exc.StatementError, ValueError, TypeError) as exc:
                if not is_bad_row_error(exc):
                    raise
                if self.direct:  # the range held keys after all: the write mode decides
                    self.direct = False
                    self._write_native(batch)
                    return
                raise BadRowError(error_reason(exc), retry_later=is_foreign_key_error(exc)) from exc

    def commit(self, record: LedgerRecord) -> None:
        conn = self._connection()
        c = self.chunk
        with as_baton_errors(UNREACHABLE, "target refused the chunk"):
            ledger.finish(
                conn,
                c.migration_id,
                c.stream,
                c.chunk_id,
                record.rows_loaded,
                record.quarantine,
                record.cut,
                record.deferred,
            )
            conn.commit()

    def _connection(self) -> Connection:
        if self._conn is None or self.committed is not None:
            raise RuntimeError("no chunk write in progress")
        return self._conn
