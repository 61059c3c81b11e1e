"""The one-off scripts an operator would write instead of using Baton, to time beside it.

Run as ``python -m ops.bench.baselines KIND SOURCE_URL TARGET_URL TABLE``, each in a
process of its own so its wall time and peak memory are its own:

- ``naive``: SQLAlchemy reads everything, then an ``executemany`` upsert, one commit.
- ``tuned``: a server-side cursor, 10,000-row batches, each COPYed into a temporary
  stage and merged with ``INSERT … SELECT … ON CONFLICT``, a commit per batch.
- ``sqlite-tuned``: the same for a SQLite source (``sqlite3`` reads the batches).

Each makes its target table (the source's columns and primary key) first.
"""

from __future__ import annotations

import io
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
from sqlalchemy import create_engine, text

BATCH = 10_000
COLUMNS = ("aid", "bid", "abalance", "filler")  # pgbench_accounts
DDL = "CREATE TABLE {t} (aid integer PRIMARY KEY, bid integer, abalance integer, filler char(84))"


def _pg(url: str) -> Any:
    return psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))


def _create(conn: Any, table: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(DDL.format(t=table))
    conn.commit()


def _copy_text(rows: Sequence[Sequence[Any]]) -> io.StringIO:
    def field(v: Any) -> str:
        if v is None:
            return "\\N"
        s = str(v)
        return (
            s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        )

    return io.StringIO("".join("\t".join(field(v) for v in row) + "\n" for row in rows))


def _merge(conn: Any, table: str, rows: Sequence[Sequence[Any]]) -> None:
    cols = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage (LIKE {table}) ON COMMIT DELETE ROWS")
        cur.copy_expert(f"COPY stage ({cols}) FROM STDIN", _copy_text(rows))
        cur.execute(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage "
            f"ON CONFLICT (aid) DO UPDATE SET {updates}"
        )
    conn.commit()


def naive(source: str, target: str, table: str) -> int:
    def engine(url: str) -> Any:
        return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))

    src, dst = engine(source), engine(target)
    with src.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    with dst.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}_naive"))
        conn.execute(text(DDL.format(t=f"{table}_naive")))
        conn.execute(
            text(
                f"INSERT INTO {table}_naive (aid, bid, abalance, filler) "
                "VALUES (:aid, :bid, :abalance, :filler) ON CONFLICT (aid) DO UPDATE SET "
                "bid = EXCLUDED.bid, abalance = EXCLUDED.abalance, filler = EXCLUDED.filler"
            ),
            rows,
        )
    return len(rows)


def tuned(source: str, target: str, table: str) -> int:
    src, dst = _pg(source), _pg(target)
    _create(dst, f"{table}_tuned")
    n = 0
    with src.cursor(name="read") as cur:
        cur.itersize = BATCH
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY aid")
        while batch := cur.fetchmany(BATCH):
            _merge(dst, f"{table}_tuned", batch)
            n += len(batch)
    src.close()
    dst.close()
    return n


def _sqlite_batches(path: str, table: str) -> Iterator[list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    cur = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY aid")
    while batch := cur.fetchmany(BATCH):
        yield batch
    conn.close()


def sqlite_tuned(source: str, target: str, table: str) -> int:
    dst = _pg(target)
    _create(dst, f"{table}_sqlite_tuned")
    n = 0
    for batch in _sqlite_batches(source.removeprefix("sqlite:///"), table):
        _merge(dst, f"{table}_sqlite_tuned", batch)
        n += len(batch)
    dst.close()
    return n


KINDS = {"naive": naive, "tuned": tuned, "sqlite-tuned": sqlite_tuned}

if __name__ == "__main__":
    kind, source_url, target_url, name = sys.argv[1:5]
    print(KINDS[kind](source_url, target_url, name))
