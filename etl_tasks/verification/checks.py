"""What comparing a key range finds: counts, and each row that differs.

:class:`RangeCheck` is one range's (or one whole stream's) result, as
:mod:`etl_tasks.verify` computes it; :class:`StreamCheck` is the whole-stream
summary the demo, the tests and the fault suite read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Key = tuple[Any, ...]
Canonical = tuple[str | None, ...]
Diff = dict[str, tuple[str | None, str | None]]  # column: (expected, found)
MISSING, UNEXPECTED, DIFFERENT = "missing", "unexpected", "different"


@dataclass(frozen=True)
class Mismatch:
    """One row that differs: missing from the target, unexpected in it, or other values."""

    kind: str  # MISSING, UNEXPECTED or DIFFERENT
    key: Key  # the target key, in canonical form
    columns: Diff  # the columns that differ (all of them for a missing or unexpected row)


@dataclass
class RangeCheck:
    """One key range of one stream (or the whole stream), compared."""

    source_rows: int = 0
    expected_rows: int = 0
    target_rows: int = 0
    bad_rows: int = 0  # expected absent: refused by a transform or a cast, or quarantined
    compared: int = 0  # rows found on both sides and compared
    mismatches: list[Mismatch] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Mismatch]:
        return [m for m in self.mismatches if m.kind == kind]

    @property
    def ok(self) -> bool:
        return not self.mismatches


@dataclass
class StreamCheck:
    name: str
    source_rows: int = 0
    expected_rows: int = 0
    target_rows: int = 0
    bad_rows: int = 0  # rows a transform refuses, plus rows quarantined by the target
    missing: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    different: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)

    @classmethod
    def of(cls, name: str, check: RangeCheck) -> StreamCheck:
        return cls(
            name,
            check.source_rows,
            check.expected_rows,
            check.target_rows,
            check.bad_rows,
            [m.key for m in check.of_kind(MISSING)],
            [m.key for m in check.of_kind(UNEXPECTED)],
            [(m.key, m.columns) for m in check.of_kind(DIFFERENT)],
        )
