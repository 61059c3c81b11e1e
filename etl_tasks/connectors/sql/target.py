"""Writing one chunk into a SQL target, exactly once.

In one target transaction: claim the chunk's ledger row (a second delivery
stops there), write the rows, record the quarantined ones in the ledger row,
commit. PostgreSQL gets COPY, and only COPY: straight into the table when the
chunk's key range is still empty there, otherwise through a temporary stage
and an upsert, so both paths write the very same text for every value.
MySQL/MariaDB and SQLite get multi-row inserts of values spelled by their own
encoder, without SQLAlchemy's type processing in between. A batch that fails
on a bad row is bisected inside savepoints until the bad rows are isolated;
they are quarantined and the rest loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Column, Connection, Engine, MetaData, Table, exists, select, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.types import NullType

from etl_tasks import codec
from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.codec import NULL_KEYS
from etl_tasks.connectors.base import LedgerRecord, QuarantineEntry
from etl_tasks.connectors.sql import ledger
from etl_tasks.connectors.sql.errors import (
    error_reason,
    is_bad_row_error,
    is_transient_error,
    transient,
)
from etl_tasks.connectors.sql.pg_copy import copy_into
from etl_tasks.connectors.sql.queries import range_condition, raw
from etl_tasks.errors import BadRowError, PermanentError
from etl_tasks.values.casts import cast_to
from etl_tasks.values.encoders import ENCODERS
from etl_tasks.values.types import ColumnType

log = logging.getLogger(__name__)

WriteMode = Literal["upsert", "insert", "skip_existing"]


@dataclass
class LoadRequest:
    """One chunk's transformed rows, ready for the target."""

    migration_id: str
    stream: str
    chunk_id: int
    token: int
    columns: list[str]
    rows: list[tuple[Any, ...]]
    quarantine: list[tuple[QuarantineEntry, int]] = field(default_factory=list)  # (entry, pos)
    key_range: tuple[Sequence[Any] | None, Sequence[Any] | None] | None = None
    fail_on_bad: bool = False  # on_bad_row "fail": a refused row fails the whole chunk
    positions: list[int] = field(default_factory=list)  # each row's position in the extract
    source_keys: list[Any] = field(default_factory=list)  # each row's source key, encoded
    expired: Callable[[float], bool] = lambda ahead_s: False  # deadline passed, or would
    between_batches: Callable[[], None] = lambda: None  # e.g. renew the lease
    before_commit: Callable[[], None] = lambda: None  # e.g. check the lease is still held


class SqlTarget:
    """One target table of one stream."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        key: Sequence[str],
        write: WriteMode,
        identity_key: bool,
        types: dict[str, ColumnType],
        unique_key: bool = True,
    ) -> None:
        self.engine = engine
        self.table = table
        self.key = list(key)
        self.write = write
        self.identity_key = identity_key  # target key values equal the source key values
        self.types = types  # each column's declared type, from the catalog
        self.unique_key = unique_key  # False: an orderable key with equal values (insert only)
        self.dialect = engine.dialect.name
        self.encode = ENCODERS[self.dialect]
        # The same table with no SQLAlchemy type processing: values arrive encoded.
        self.raw_table = Table(
            table.name,
            MetaData(),
            *[Column(c.name, NullType(), primary_key=c.name in self.key) for c in table.columns],
            schema=table.schema,
        )
        self._key_casts = [cast_to(types[k]) for k in self.key if k in types]

    def load(self, req: LoadRequest) -> LedgerRecord:
        """Commit the chunk's rows and its ledger row together; a replay changes nothing."""
        try:
            return self._load(req)
        except sa_exc.SQLAlchemyError as exc:
            if is_transient_error(exc):
                raise transient("target unavailable", exc) from exc
            raise PermanentError(f"target refused the chunk: {error_reason(exc)}") from exc

    def _load(self, req: LoadRequest) -> LedgerRecord:
        with self.engine.connect() as conn:
            try:
                with conn.begin():
                    ledger.claim(conn, req.migration_id, req.stream, req.chunk_id, req.token)
                    record = self._write_chunk(conn, req)
                    req.before_commit()
                return record
            except sa_exc.IntegrityError:
                committed = self._committed(conn, req)
                if committed is None:
                    raise
                log.info(
                    "chunk %s was committed already: a redelivery changes nothing",
                    req.chunk_id,
                    extra={"migration_id": req.migration_id},
                )
                return committed

    def _write_chunk(self, conn: Connection, req: LoadRequest) -> LedgerRecord:
        """Write sub-batch by sub-batch until done or the deadline; record it in the ledger."""
        direct = self._range_is_empty(conn, req)
        bad: list[tuple[tuple[Any, ...], str]] = []
        written = 0
        while written < len(req.rows):
            began = time.monotonic()
            part = req.rows[written : written + SUB_BATCH_ROWS]
            fresh = list(range(len(part)))  # positions in ``part`` of the rows to write
            taken: list[tuple[int, str]] = []
            if self.write == "insert" and not direct and self.unique_key:
                fresh, taken = self._split_existing(conn, req.columns, part)
            refused, done = self._write_bisecting(
                conn,
                req.columns,
                [part[i] for i in fresh],
                direct=direct,
                stop=lambda: req.expired(0.0),
            )
            handled = len(part) if done == len(fresh) else fresh[done]  # a prefix of ``part``
            bad += [(part[i], why) for i, why in taken if i < handled] + refused
            written += handled
            if bad and req.fail_on_bad:
                raise PermanentError(f"the target refused a row: {bad[0][1]}")
            last_s = time.monotonic() - began
            if written < len(req.rows) and (handled < len(part) or req.expired(last_s)):
                break
            req.between_batches()
        written, refused = self._complete_run(conn, req, written, direct)
        bad += refused
        cut = None
        kept = req.quarantine
        if written < len(req.rows):  # stopped at the deadline: the rest becomes a new chunk
            cut = req.source_keys[written - 1]
            kept = [(q, pos) for q, pos in req.quarantine if pos <= req.positions[written - 1]]
        quarantine = [q for q, _ in kept] + [self._entry(req, row, why) for row, why in bad]
        loaded = written - len(bad)
        ledger.finish(conn, req.migration_id, req.stream, req.chunk_id, loaded, quarantine, cut)
        return LedgerRecord(req.token, loaded, quarantine, cut)

    def _complete_run(
        self, conn: Connection, req: LoadRequest, written: int, direct: bool
    ) -> tuple[int, list[tuple[tuple[Any, ...], str]]]:
        """A cut never separates rows with equal keys (a key that is not unique, with
        ``write: insert``): the rest of the run is written before the chunk is cut."""
        keys = req.source_keys
        end = written
        while 0 < end < len(keys) and keys[end] == keys[written - 1]:
            end += 1
        if end == written:
            return written, []
        run = req.rows[written:end]
        refused, _ = self._write_bisecting(
            conn, req.columns, run, direct=direct, stop=lambda: False
        )
        return end, refused

    def _committed(self, conn: Connection, req: LoadRequest) -> LedgerRecord | None:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            return ledger.read(conn, req.migration_id, req.stream, req.chunk_id)

    def _entry(self, req: LoadRequest, row: tuple[Any, ...], why: str) -> QuarantineEntry:
        by_name = dict(zip(req.columns, row, strict=True))
        key = codec.dumps([by_name[k] for k in self.key])
        return QuarantineEntry(key, why, {c: codec.encode_value(v) for c, v in by_name.items()})

    def _range_is_empty(self, conn: Connection, req: LoadRequest) -> bool:
        """Whether COPY may go straight into the table (PostgreSQL, fresh key range).

        The chunk's bounds are the source's values: compared in the target's terms (cast
        to its key columns). A bound the target's key type cannot hold (a stray text in an
        integer key) means the range cannot be checked here, so the staged path is taken.
        """
        if self.dialect != "postgresql" or not self.identity_key or req.key_range is None:
            return False
        if any(b is not None and NULL_KEYS in b for b in req.key_range):
            return False  # the rows whose key is NULL: quarantined, none to write
        try:
            bounds = [self._target_key(b) for b in req.key_range]
        except BadRowError:
            return False
        key_cols = [raw(self.table.c[k]) for k in self.key]
        cond = range_condition(key_cols, *bounds)
        probe = select(1).select_from(self.table).where(cond)
        return not conn.execute(select(exists(probe))).scalar()

    def _target_key(self, bound: Sequence[Any] | None) -> list[Any] | None:
        if bound is None:
            return None
        return [cast(v) for cast, v in zip(self._key_casts, bound, strict=True)]

    def _split_existing(
        self, conn: Connection, columns: list[str], rows: list[tuple[Any, ...]]
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """``insert`` mode: rows whose key the target already has are bad rows, found in one
        query instead of by bisecting a batch where every row fails. Returns the positions
        of the rows to write, and of the taken ones with their reason."""
        positions = [columns.index(k) for k in self.key]
        keys = [tuple(self.encode(row[p]) for p in positions) for row in rows]
        key_cols = [raw(self.table.c[k]) for k in self.key]
        expr = key_cols[0] if len(key_cols) == 1 else tuple_(*key_cols)
        wanted = [k[0] for k in keys] if len(key_cols) == 1 else keys
        query = select(*key_cols).where(expr.in_(wanted))
        found = {tuple(self.encode(v) for v in r) for r in conn.execute(query)}
        fresh = [i for i, k in enumerate(keys) if k not in found]
        taken = [
            (i, "key already in the target (write: insert)")
            for i, k in enumerate(keys)
            if k in found
        ]
        return fresh, taken

    def _write_bisecting(
        self,
        conn: Connection,
        columns: list[str],
        rows: list[tuple[Any, ...]],
        *,
        direct: bool,
        stop: Callable[[], bool],
    ) -> tuple[list[tuple[tuple[Any, ...], str]], int]:
        """Write rows; return the ones the target refused (each with its reason) and how
        many leading rows were handled: all, unless ``stop()`` said so during a bisection.

        Halves are handled in order, so what is done is always a prefix; ``stop`` is asked
        only after a half is done, so every call handles at least one row.
        """
        if not rows:
            return [], 0
        try:
            with conn.begin_nested():
                self._write(conn, columns, rows, direct=direct)
            return [], len(rows)
        except (sa_exc.StatementError, ValueError, TypeError) as exc:
            if not is_bad_row_error(exc):
                raise
            if len(rows) == 1:
                return [(rows[0], error_reason(exc))], 1
        mid = len(rows) // 2
        bad, done = self._write_bisecting(conn, columns, rows[:mid], direct=False, stop=stop)
        if done < mid or stop():
            return bad, done
        more, done = self._write_bisecting(conn, columns, rows[mid:], direct=False, stop=stop)
        return bad + more, mid + done

    def _write(
        self, conn: Connection, columns: list[str], rows: list[tuple[Any, ...]], *, direct: bool
    ) -> None:
        if self.dialect == "postgresql":
            self._pg_copy(conn, columns, rows, direct=direct)
            return
        encode = self.encode
        params = [{c: encode(v) for c, v in zip(columns, r, strict=True)} for r in rows]
        # the sqlite3 and PyMySQL drivers run an executemany as one batch themselves
        conn.execute(self._insert_stmt(columns), params)

    def _insert_stmt(self, columns: list[str]) -> Any:
        """INSERT with the write mode's conflict clause, in the target's dialect."""
        others = [c for c in columns if c not in self.key]
        if self.dialect == "mysql" or self.dialect == "mariadb":
            mine = mysql.insert(self.raw_table)
            if self.write == "insert":
                return mine
            cols = others if self.write == "upsert" and others else self.key[:1]
            return mine.on_duplicate_key_update({c: mine.inserted[c] for c in cols})
        stmt = sqlite.insert(self.raw_table)
        if self.write == "insert":
            return stmt
        if self.write == "skip_existing" or not others:
            return stmt.on_conflict_do_nothing(index_elements=self.key)
        return stmt.on_conflict_do_update(
            index_elements=self.key, set_={c: stmt.excluded[c] for c in others}
        )

    def _pg_copy(
        self, conn: Connection, columns: list[str], rows: list[tuple[Any, ...]], *, direct: bool
    ) -> None:
        prep = conn.dialect.identifier_preparer
        cols_sql = ", ".join(prep.quote(c) for c in columns)
        table_sql = prep.format_table(self.table)
        if direct:
            self._copy(conn, table_sql, cols_sql, rows)
            return
        stage = '"_baton_stage"'
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table_sql} INCLUDING DEFAULTS)"
            " ON COMMIT DROP"
        )
        conn.exec_driver_sql(f"TRUNCATE {stage}")
        self._copy(conn, stage, cols_sql, rows)
        conn.exec_driver_sql(
            f"INSERT INTO {table_sql} ({cols_sql}) SELECT {cols_sql} FROM {stage}"
            + self._pg_conflict_sql(columns)
        )

    @staticmethod
    def _copy(conn: Connection, table_sql: str, cols_sql: str, rows: list[tuple[Any, ...]]) -> None:
        """COPY through the raw driver, its errors turned into SQLAlchemy's kinds."""
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            copy_into(conn.connection.dbapi_connection, table_sql, cols_sql, rows)
        except dbapi_error as exc:
            raise sa_exc.DBAPIError.instance("COPY", None, exc, dbapi_error) from exc

    def _pg_conflict_sql(self, columns: list[str]) -> str:
        if self.write == "insert":
            return ""
        prep = self.engine.dialect.identifier_preparer
        keys = ", ".join(prep.quote(k) for k in self.key)
        others = [c for c in columns if c not in self.key]
        if self.write == "skip_existing" or not others:
            return f" ON CONFLICT ({keys}) DO NOTHING"
        sets = ", ".join(f"{prep.quote(c)} = EXCLUDED.{prep.quote(c)}" for c in others)
        return f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
