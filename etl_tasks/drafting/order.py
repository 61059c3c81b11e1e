"""Which stream waits for which: the load order foreign keys ask for.

A table waits for the tables it refers to. A self-reference orders nothing. A
longer cycle is broken at a reference whose columns may be NULL, else at any of
its references; each break is reported.
"""

from __future__ import annotations

from collections.abc import Iterable

from etl_tasks.drafting.schema import Reference


def load_order(
    tables: Iterable[str], references: Iterable[Reference]
) -> tuple[dict[str, list[str]], list[str]]:
    """Each table's ``after``, and a note for every reference left out to break a cycle."""
    names = list(tables)
    after: dict[str, list[str]] = {t: [] for t in names}
    notes: list[str] = []
    # Required references first, so a cycle is broken at a nullable one when it can be.
    ordered = sorted(
        (
            r
            for r in references
            if r.table != r.referred and r.table in after and r.referred in after
        ),
        key=lambda r: (r.nullable, r.table, r.referred),
    )
    for ref in ordered:
        if ref.referred in after[ref.table]:
            continue
        if _waits_for(after, ref.referred, ref.table):
            kind = "may be NULL" if ref.nullable else "is required"
            notes.append(
                f"{ref.table} → {ref.referred} closes a cycle and does not order the streams "
                f"(the reference {kind})"
            )
            continue
        after[ref.table].append(ref.referred)
    for waits in after.values():
        waits.sort()
    return after, notes


def _waits_for(after: dict[str, list[str]], table: str, other: str) -> bool:
    """Whether ``table`` already waits, directly or not, for ``other``."""
    seen: set[str] = set()
    todo = [table]
    while todo:
        current = todo.pop()
        if current == other:
            return True
        if current not in seen:
            seen.add(current)
            todo.extend(after[current])
    return False
