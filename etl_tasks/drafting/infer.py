"""The order a spec leaves unsaid, from the target's foreign keys.

When the target's tables refer to each other and a stream says nothing of
``after``, loading them in any order would see rows refused for foreign keys.
So the order is inferred from those references, the same way a draft's is
(:mod:`etl_tasks.drafting.order`), and recorded in the stored spec.
"""

from __future__ import annotations

from sqlalchemy import Engine

from etl_tasks.drafting.order import load_order
from etl_tasks.drafting.schema import Reference, read_schema
from etl_tasks.spec import MigrationSpec


def infer_after(spec: MigrationSpec, target: Engine) -> tuple[dict[str, list[str]], list[str]]:
    """``after`` for each stream that gives none, from the target's foreign keys; notes."""
    silent = {s.stream_name for s in spec.streams if "after" not in s.model_fields_set}
    if not silent:
        return {}, []
    by_table = {s.target_table: s.stream_name for s in spec.streams}
    refs = [
        Reference(by_table[r.table], by_table[r.referred], r.columns, r.nullable)
        for r in read_schema(target, estimates=False).references
        if r.table in by_table and r.referred in by_table
    ]
    after, notes = load_order(by_table.values(), refs)
    inferred = {name: waits for name, waits in after.items() if name in silent and waits}
    notes += [
        f"stream {name!r} waits for {', '.join(waits)}: the target's foreign keys say so"
        for name, waits in inferred.items()
    ]
    return inferred, notes


def with_after(spec: MigrationSpec, inferred: dict[str, list[str]]) -> MigrationSpec:
    """The spec with the inferred ``after`` written into its streams."""
    if not inferred:
        return spec
    streams = [
        s.model_copy(update={"after": inferred[s.stream_name]}) if s.stream_name in inferred else s
        for s in spec.streams
    ]
    return spec.model_copy(update={"streams": streams})
