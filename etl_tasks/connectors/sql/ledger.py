"""The target ledger: one row per committed chunk, written in the chunk's own transaction.

Because the ledger row and the chunk's rows commit together, a second
delivery of the same load finds the ledger row and changes nothing: the
chunk's effect happens exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql

from etl_tasks.connectors.base import LedgerRecord, QuarantineEntry
from etl_tasks.connectors.sql.errors import classify
from etl_tasks.constants import LEDGER_TABLE
from etl_tasks.errors import PermanentError, TransientError

#: Text of any size: a chunk's quarantined rows are one JSON document, and MySQL's TEXT
#: holds only 64 KiB (a few hundred bad rows). PostgreSQL's and SQLite's TEXT are unbounded.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
#: Columns holding :data:`LongText`; a ledger an older version made may have them narrower.
LONG_TEXT_COLUMNS = ("quarantine", "cut_key", "deferred")


def ledger_table(metadata: MetaData | None = None) -> Table:
    return Table(
        LEDGER_TABLE,
        metadata or MetaData(),
        Column("migration_id", String(32), primary_key=True),
        Column("stream", String(200), primary_key=True),
        Column("chunk_id", BigInteger, primary_key=True, autoincrement=False),
        Column("fencing_token", Integer, nullable=False),
        Column("rows_loaded", Integer, nullable=False),
        Column("rows_quarantined", Integer, nullable=False),
        Column("quarantine", LongText, nullable=False),
        Column("committed_at", DateTime, nullable=False),
        Column("cut_key", LongText, nullable=True),
        # Rows refused for a foreign key, read again after the stream: JSON like quarantine.
        Column("deferred", LongText, nullable=True),
    )


LEDGER = ledger_table()


# Built once: every chunk's load runs them (one statement each, its values bound).
_CLAIM = insert(LEDGER)
_FINISH = update(LEDGER).where(
    LEDGER.c.migration_id == bindparam("b_migration_id"),
    LEDGER.c.stream == bindparam("b_stream"),
    LEDGER.c.chunk_id == bindparam("b_chunk_id"),
)


def claim(conn: Connection, migration_id: str, stream: str, chunk_id: int, token: int) -> None:
    """Insert the chunk's ledger row first: a concurrent load of the same chunk waits on it."""
    conn.execute(
        _CLAIM,
        {
            "migration_id": migration_id,
            "stream": stream,
            "chunk_id": chunk_id,
            "fencing_token": token,
            "rows_loaded": 0,
            "rows_quarantined": 0,
            "quarantine": "[]",
            "committed_at": datetime.now(UTC).replace(tzinfo=None),
        },
    )


def finish(
    conn: Connection,
    migration_id: str,
    stream: str,
    chunk_id: int,
    rows_loaded: int,
    quarantine: list[QuarantineEntry],
    cut: list[Any] | None = None,
    deferred: list[QuarantineEntry] | None = None,
) -> None:
    body = _entries(quarantine)
    cut_text = None if cut is None else orjson.dumps(cut).decode()
    conn.execute(
        _FINISH,
        {
            "b_migration_id": migration_id,
            "b_stream": stream,
            "b_chunk_id": chunk_id,
            "rows_loaded": rows_loaded,
            "rows_quarantined": len(quarantine),
            "quarantine": body,
            "cut_key": cut_text,
            "deferred": _entries(deferred) if deferred else None,
        },
    )


def _entries(entries: list[QuarantineEntry]) -> str:
    return orjson.dumps([[q.key, q.reason, q.row] for q in entries]).decode()


def _parse(text: str | None) -> list[QuarantineEntry]:
    return [QuarantineEntry(k, r, d) for k, r, d in orjson.loads(text or "[]")]


def committed_chunks(conn: Connection, migration_id: str) -> dict[str, int]:
    """Committed chunks per stream, by the target's own ledger (each chunk exactly once)."""
    rows = conn.execute(
        select(LEDGER.c.stream, func.count())
        .where(LEDGER.c.migration_id == migration_id)
        .group_by(LEDGER.c.stream)
    ).all()
    return {str(name): int(n) for name, n in rows}


def read(conn: Connection, migration_id: str, stream: str, chunk_id: int) -> LedgerRecord | None:
    row = conn.execute(
        select(
            LEDGER.c.fencing_token,
            LEDGER.c.rows_loaded,
            LEDGER.c.quarantine,
            LEDGER.c.cut_key,
            LEDGER.c.deferred,
        ).where(
            LEDGER.c.migration_id == migration_id,
            LEDGER.c.stream == stream,
            LEDGER.c.chunk_id == chunk_id,
        )
    ).first()
    if row is None:
        return None
    cut = None if row.cut_key is None else orjson.loads(row.cut_key)
    return LedgerRecord(
        row.fencing_token, row.rows_loaded, _parse(row.quarantine), cut, _parse(row.deferred)
    )


def committed(
    engine: Engine, migration_id: str, stream: str, chunk_id: int, token: int
) -> LedgerRecord | None:
    """The chunk's ledger record if a load of it committed, once no load of it is in flight.

    A plain read would miss a load whose transaction is still open (a worker that
    stalled past its lease, about to commit). Inserting the chunk's ledger row instead
    waits for that transaction on every target: PostgreSQL and InnoDB wait on the
    primary key, SQLite on its write lock. The insert is always rolled back.
    """
    try:
        with engine.connect() as conn:
            if _nobody_committed(conn, migration_id, stream, chunk_id, token):
                return None
            with conn.begin():
                return read(conn, migration_id, stream, chunk_id)
    except sa_exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
        if classify(exc) == "transient":
            raise TransientError(f"target unavailable: {reason}") from exc
        raise PermanentError(f"cannot read the target ledger: {reason}") from exc


def _nobody_committed(
    conn: Connection, migration_id: str, stream: str, chunk_id: int, token: int
) -> bool:
    tx = conn.begin()
    try:
        claim(conn, migration_id, stream, chunk_id, token)
    except sa_exc.IntegrityError:
        return False
    finally:
        tx.rollback()
    return True
