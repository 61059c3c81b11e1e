"""The memory connector as the registry sees it: a kind a test registers, never a built-in."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from etl_tasks.connectors import registry
from etl_tasks.connectors.base import Batch, ChunkRef, LedgerRecord, Source, Target, Unpaced
from etl_tasks.connectors.memory import MemoryDatabase, MemoryTable, connector
from etl_tasks.errors import TransientError, Unsupported


def _runtime(write: str = "insert") -> Any:
    stream = SimpleNamespace(source_name="legacy", target_table="cloud", write=write)
    spec = SimpleNamespace(stream=lambda name: stream)
    return SimpleNamespace(spec=lambda migration_id: spec)


def test_memory_is_not_a_built_in_kind() -> None:
    # A worker advertises its kinds: none may be one that no spec can name
    kinds = registry.kinds()

    assert "memory" not in kinds["sources"] and "memory" not in kinds["targets"]
    with pytest.raises(Unsupported):  # a kind this worker lacks waits for one that has it
        registry.connector("memory")


def test_a_registered_memory_connector_reads_and_writes_its_databases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a memory kind registered over a source and a target database
    legacy, cloud = MemoryDatabase(), MemoryDatabase()
    legacy.tables["legacy"] = MemoryTable(["id", "v"], ["id"])
    legacy.tables["legacy"].add([(2, "b"), (1, "a")])
    cloud.tables["cloud"] = MemoryTable(["id", "v"], ["id"])
    registry.kinds()  # built-ins in the real registry first: the copy is thrown away
    monkeypatch.setattr(registry, "_connectors", dict(registry._connectors))
    registry.register(connector(legacy, cloud))

    # When a stream's source and target are built as the runtime builds them
    rt = _runtime()
    source = registry.source_factory("memory")(rt, "m", "s")
    target = registry.target_factory("memory")(rt, "m", "s")

    # Then they satisfy the protocols, and move the stream's rows
    assert isinstance(source, Source) and isinstance(target, Target)
    assert "memory" in registry.kinds()["targets"]
    rows, _ = source.read_range(None, None, Unpaced())
    with target.begin_chunk(ChunkRef("m", "s", 1, 1)) as tx:
        tx.write(rows)
        tx.write(Batch(["id", "v"], [(1, "again")]))  # write: insert, from the stream
        tx.commit(LedgerRecord(1, 2, []))
    assert list(cloud.tables["cloud"].rows.values()) == [(1, "a"), (2, "b")]


def test_an_unreachable_memory_database_is_an_outage() -> None:
    db = MemoryDatabase(reachable=False)
    source, target = connector(db).source, connector(db).target
    assert source is not None and target is not None

    with pytest.raises(TransientError):
        source(_runtime(), "m", "s").describe()
    with pytest.raises(TransientError):
        target(_runtime(), "m", "s").prepare()


def test_a_range_read_sees_rows_added_since_the_last_read() -> None:
    # Given a table read once (its keys sorted then), and rows added after that read
    table = MemoryTable(["id", "v"], ["id"])
    table.add([(i, f"r{i}") for i in range(0, 100, 10)])
    assert table.keys_in((10,), (40,)) == [(20,), (30,), (40,)]
    table.add([(25, "new"), (45, "new"), (-5, "new")])
    # Then a range's keys, bounds open or closed, are read from all of them, in order
    assert table.keys_in((10,), (40,)) == [(20,), (25,), (30,), (40,)]
    assert table.keys_in(None, (0,)) == [(-5,), (0,)]
    assert table.keys_in((80,), None) == [(90,)]
    # And rows replaced wholesale are read as they are now
    table.rows = {(7,): (7, "only")}
    assert table.keys_in(None, None) == [(7,)]
