"""A worker whose streams read and write its own memory: the no-op source and target
of ``baton bench coordination``.

Run as ``celery -A ops.bench.noop_worker worker``: it is Baton's worker (``worker.app``)
with the ``sql`` kind's connector replaced by the memory connector
(:mod:`etl_tasks.connectors.memory`) over a source table ``ticks`` of
``BATON_BENCH_TICKS`` rows (``id``, ``note``) and an empty target table of the same
shape. Everything between the connectors is the real thing: the state DB, the
messages, the connection slots of the spec's systems, the staging and the steps. Only
what a database would spend on the rows is left out, so a chunk's step time is the
orchestration Baton adds to it. Every worker holds the same source rows; a chunk's rows
land in the memory of the worker that loaded it, so the benchmark counts them from the
state DB.
"""

from __future__ import annotations

import dataclasses
import os

from etl_tasks.connectors import registry
from etl_tasks.connectors.memory import MemoryDatabase, MemoryTable, connector
from etl_tasks.values.types import ColumnType, Kind
from ops.bench.coordination import ROWS_ENV, TABLE
from worker import app


def _table() -> MemoryTable:
    types = {
        "id": ColumnType("memory", Kind.INTEGER, "integer", nullable=False),
        "note": ColumnType("memory", Kind.TEXT, "text", nullable=False),
    }
    return MemoryTable(["id", "note"], ["id"], types, frozenset({"note"}))


def databases(rows: int) -> tuple[MemoryDatabase, MemoryDatabase]:
    """The source with ``rows`` rows, and the empty target."""
    source, target = MemoryDatabase(), MemoryDatabase()
    source.tables[TABLE] = _table()
    source.tables[TABLE].add([(i, f"t{i}") for i in range(rows)])
    target.tables[TABLE] = _table()
    return source, target


registry.kinds()  # the built-ins first, so this replaces theirs
registry.register(
    dataclasses.replace(connector(*databases(int(os.environ.get(ROWS_ENV, "0")))), kind="sql")
)

__all__ = ["app"]
