"""The pure parts of verification: samples as recorded, masking, keys spelled for lookups,
and the verdict ``baton verify`` exits with."""

from __future__ import annotations

from decimal import Decimal

from etl_tasks.values.types import ColumnType, Kind
from etl_tasks.verification.checks import DIFFERENT, MISSING, UNEXPECTED, Mismatch, RangeCheck
from etl_tasks.verification.lookups import KeySpeller
from etl_tasks.verification.report import _masked
from etl_tasks.verification.results import VALUE_CHARS, result_columns, sample
from ops.verify_cmd import EXIT_OF_STATE, _sample

INT = ColumnType("postgresql", Kind.INTEGER, "integer", precision=32)
TEXT = ColumnType("sqlite", Kind.TEXT, "TEXT")


def test_a_sample_holds_the_differing_columns_on_each_side() -> None:
    changed = sample(Mismatch(DIFFERENT, ("5",), {"email": ("a@b", "x@y")}))
    assert changed == {
        "kind": "different",
        "key": ["5"],
        "columns": ["email"],
        "expected": {"email": "a@b"},
        "found": {"email": "x@y"},
    }
    gone = sample(Mismatch(MISSING, ("6",), {"id": ("6", None), "note": (None, None)}))
    assert (gone["expected"], gone["found"]) == ({"id": "6", "note": None}, None)
    added = sample(Mismatch(UNEXPECTED, ("7",), {"id": (None, "7")}))
    assert (added["expected"], added["found"]) == (None, {"id": "7"})


def test_long_values_are_cut_and_only_a_few_samples_kept() -> None:
    long = "x" * 1000
    cut = sample(Mismatch(DIFFERENT, ("1",), {"body": (long, "y")}))["expected"]["body"]
    assert len(cut) == VALUE_CHARS and cut.endswith("…")
    check = RangeCheck(source_rows=9, target_rows=9, compared=9)
    check.mismatches = [Mismatch(DIFFERENT, (str(n),), {"a": ("1", "2")}) for n in range(9)]
    recorded = result_columns(check, verify_ms=12)
    assert (recorded["different"], recorded["missing"], len(recorded["samples"])) == (9, 0, 5)


def test_a_viewer_sees_values_masked_and_nulls_kept() -> None:
    shown = _masked(sample(Mismatch(DIFFERENT, ("5",), {"a": ("1", None), "b": ("x", "y")})))
    assert shown["key"] == ["5"] and shown["columns"] == ["a", "b"]
    assert shown["expected"] == {"a": "***", "b": "***"}
    assert shown["found"] == {"a": None, "b": "***"}
    assert _masked(sample(Mismatch(MISSING, ("6",), {"a": ("1", None)})))["found"] is None


def test_keys_are_spelled_as_the_load_path_binds_them() -> None:
    pg = KeySpeller([INT], "postgresql")
    assert pg.spell([Decimal("5")]) == ("5",)  # cast into the column, then PostgreSQL's text
    assert pg.spell(["abc"]) is None  # the column cannot hold it: no lookup
    assert pg.bound(["abc"]) is None and pg.bound(None) is None  # the range reads wider
    assert KeySpeller([TEXT, INT], "sqlite").spell(["a", "7"]) == ("a", 7)


def test_each_verdict_has_its_exit_code() -> None:
    assert EXIT_OF_STATE == {"equal": 0, "different": 1, "failed": 3}
    text = _sample(
        {"kind": "different", "key": ["5"], "columns": ["email"]}
        | {"expected": {"email": "a"}, "found": {"email": "b"}}
    )
    assert text == "key [\"5\"] different: email: 'a' → 'b'"
