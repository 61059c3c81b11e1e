"""A compared range as the state DB keeps it: counts, and a few rows that differ.

Samples hold canonical text (the form compared), cut to a readable length, so a
report can show what differs without the state DB holding the tables twice.
"""

from __future__ import annotations

from typing import Any

from etl_tasks.verification.checks import DIFFERENT, MISSING, UNEXPECTED, Mismatch, RangeCheck

SAMPLES_PER_RANGE = 5  # rows kept per range; a report shows a few per stream
VALUE_CHARS = 200  # a longer canonical value is cut, with "…" at the end


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= VALUE_CHARS:
        return value
    return value[: VALUE_CHARS - 1] + "…"


def sample(m: Mismatch) -> dict[str, Any]:
    """``{"kind", "key", "columns", "expected", "found"}``: the differing columns, and their
    values on each side (``expected`` is null for an unexpected row, ``found`` for a
    missing one)."""
    expected = {c: _cut(w) for c, (w, _) in m.columns.items()}
    found = {c: _cut(g) for c, (_, g) in m.columns.items()}
    return {
        "kind": m.kind,
        "key": list(m.key),
        "columns": list(m.columns),
        "expected": None if m.kind == UNEXPECTED else expected,
        "found": None if m.kind == MISSING else found,
    }


def result_columns(check: RangeCheck, verify_ms: int) -> dict[str, Any]:
    """The range's result columns (:class:`~etl_tasks.state.models.VerificationRange`)."""
    return {
        "source_rows": check.source_rows,
        "target_rows": check.target_rows,
        "expected_absent": check.bad_rows,
        "compared": check.compared,
        "missing": len(check.of_kind(MISSING)),
        "unexpected": len(check.of_kind(UNEXPECTED)),
        "different": len(check.of_kind(DIFFERENT)),
        "samples": [sample(m) for m in check.mismatches[:SAMPLES_PER_RANGE]],
        "verify_ms": verify_ms,
    }
