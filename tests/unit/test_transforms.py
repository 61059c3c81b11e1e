"""Unit tests for etl_tasks.transforms: built-ins, the registry, plugins and the row mapper."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

from etl_tasks.errors import BadRowError, SpecError
from etl_tasks.spec import ColumnFrom, ColumnSpec, ColumnValue
from etl_tasks.transforms import (
    RowMapper,
    Transform,
    check_transform,
    compile_mapper,
    get_transform,
    known_transforms,
    mapper_problems,
    register,
    registry,
)

BUILTINS = [
    "bool",
    "date",
    "datetime",
    "decimal",
    "default",
    "float",
    "int",
    "lower",
    "map",
    "null_if",
    "strip",
    "upper",
]


def apply(name: str, value: Any, /, **args: Any) -> Any:
    return get_transform(name).apply(value, args)


def bad_reason(name: str, value: Any, /, **args: Any) -> str:
    with pytest.raises(BadRowError) as info:
        apply(name, value, **args)
    assert info.value.column is None
    return info.value.reason


def col(from_: str, transform: str | None = None, /, **args: Any) -> ColumnFrom:
    return ColumnFrom.model_validate({"from": from_, "transform": transform, "args": args})


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private copy of the registry, with plugins not yet loaded and no entry points."""
    monkeypatch.setattr(registry, "_transforms", dict(registry._transforms))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    yield


# --- built-ins ------------------------------------------------------------------------


def test_all_builtins_registered() -> None:
    assert set(BUILTINS) <= set(known_transforms())
    assert known_transforms() == sorted(known_transforms())


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "default"])
def test_none_passes_through(name: str) -> None:
    args_for: dict[str, dict[str, Any]] = {
        "null_if": {"value": "x"},
        "map": {"mapping": {"None": 1}, "default": 2},
    }
    args = args_for.get(name, {})
    assert get_transform(name).apply(None, args) is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("lower", "AbC", "abc"),
        ("upper", "AbC", "ABC"),
        ("strip", "  a b \t\n", "a b"),
    ],
)
def test_string_transforms(name: str, value: str, expected: str) -> None:
    assert apply(name, value) == expected


@pytest.mark.parametrize("name", ["lower", "upper", "strip"])
def test_string_transforms_refuse_non_strings(name: str) -> None:
    assert bad_reason(name, 5) == "not a string: 5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        (-3, -3),
        (True, 1),
        (False, 0),
        (12.0, 12),
        (Decimal("42"), 42),
        (Decimal("4.00"), 4),
        ("12", 12),
        ("  -12 \n", -12),
        ("+5", 5),
        ("12.0", 12),
        ("1" * 40, int("1" * 40)),
    ],
)
def test_int_good(value: Any, expected: int) -> None:
    result = apply("int", value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    ["12.5", "", "abc", "1e3", "1_000", 12.5, float("nan"), float("inf"), Decimal("1.5"), [1]],
)
def test_int_bad(value: Any) -> None:
    assert bad_reason("int", value).startswith("not an integer: ")


def test_int_bad_reason_text() -> None:
    assert bad_reason("int", "12.5") == "not an integer: '12.5'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (True, 1.0), (2.5, 2.5), (Decimal("0.25"), 0.25), (" 1.5e3 ", 1500.0), ("-2", -2.0)],
)
def test_float_good(value: Any, expected: float) -> None:
    result = apply("float", value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", ["abc", "", "1_0", [1.0]])
def test_float_bad(value: Any) -> None:
    assert bad_reason("float", value) == f"not a number: {value!r}"


def test_float_overflow() -> None:
    assert bad_reason("float", 10**400).startswith("too large for a float: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, Decimal(1)),
        (0.1, Decimal("0.1")),
        (" 12.50 ", Decimal("12.50")),
        (Decimal("3.14"), Decimal("3.14")),
        (False, Decimal(0)),
    ],
)
def test_decimal_good(value: Any, expected: Decimal) -> None:
    result = apply("decimal", value)
    assert result == expected
    assert type(result) is Decimal


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        ("2.345", 2, "2.34"),  # half-even: 4 is even
        ("2.355", 2, "2.36"),  # half-even: 6 is even
        ("2.5", 0, "2"),
        ("3.5", 0, "4"),
        (1, 2, "1.00"),
    ],
)
def test_decimal_places_rounds_half_even(value: Any, places: int, expected: str) -> None:
    result = apply("decimal", value, places=places)
    assert str(result) == expected


@pytest.mark.parametrize("value", ["abc", "", "NaN", "Infinity", float("inf"), "1_0", [1]])
def test_decimal_bad(value: Any) -> None:
    assert bad_reason("decimal", value) == f"not a decimal: {value!r}"


def test_decimal_too_many_digits_for_places() -> None:
    reason = bad_reason("decimal", "1" * 1999, places=2)
    assert reason.startswith("too many digits to round to 2 places: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(v, True) for v in ["true", "TRUE", "Yes", "y", "1", "t", "On", " true "]],
        *[(v, False) for v in ["false", "False", "NO", "n", "0", "f", "off"]],
        (1, True),
        (0, False),
        (True, True),
        (False, False),
    ],
)
def test_bool_good(value: Any, expected: bool) -> None:
    assert apply("bool", value) is expected


@pytest.mark.parametrize("value", ["maybe", "", "2", 2, -1, 1.0, [True]])
def test_bool_bad(value: Any) -> None:
    assert bad_reason("bool", value) == f"not a boolean: {value!r}"


def test_date() -> None:
    assert apply("date", "2020-02-29") == dt.date(2020, 2, 29)
    assert apply("date", " 2020-02-29T10:11:12 ") == dt.date(2020, 2, 29)
    assert apply("date", "29/02/2020", format="%d/%m/%Y") == dt.date(2020, 2, 29)
    assert apply("date", dt.date(2021, 1, 2)) == dt.date(2021, 1, 2)
    result = apply("date", dt.datetime(2021, 1, 2, 3, 4, 5))
    assert result == dt.date(2021, 1, 2)
    assert type(result) is dt.date


def test_date_bad() -> None:
    assert (
        bad_reason("date", "31-02-2020", format="%d/%m/%Y")
        == "not a date in format '%d/%m/%Y': '31-02-2020'"
    )
    assert bad_reason("date", "31/02/2020", format="%d/%m/%Y").startswith("not a date in format")
    assert bad_reason("date", "2020-13-01") == "not a date (ISO 8601): '2020-13-01'"
    assert bad_reason("date", 20200101) == "not a date (ISO 8601): 20200101"


def test_datetime() -> None:
    assert apply("datetime", "2020-01-02T03:04:05") == dt.datetime(2020, 1, 2, 3, 4, 5)
    aware = apply("datetime", "2020-01-02 03:04:05+00:00")
    assert aware == dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert apply("datetime", "02/01/2020 03:04", format="%d/%m/%Y %H:%M") == dt.datetime(
        2020, 1, 2, 3, 4
    )
    value = dt.datetime(2020, 1, 2, 3, 4, 5)
    assert apply("datetime", value) is value
    assert apply("datetime", dt.date(2020, 1, 2)) == dt.datetime(2020, 1, 2)


def test_datetime_bad() -> None:
    assert bad_reason("datetime", "yesterday") == "not a datetime (ISO 8601): 'yesterday'"
    assert (
        bad_reason("datetime", "2020-01-02", format="%d/%m/%Y")
        == "not a datetime in format '%d/%m/%Y': '2020-01-02'"
    )


def test_default() -> None:
    assert apply("default", None, value=0) == 0
    assert apply("default", "", value="n/a") == ""
    assert apply("default", "", value="n/a", empty=True) == "n/a"
    assert apply("default", "x", value="n/a", empty=True) == "x"
    assert apply("default", 0, value=5) == 0


def test_null_if() -> None:
    assert apply("null_if", "N/A", value="N/A") is None
    assert apply("null_if", "ok", value="N/A") == "ok"
    assert apply("null_if", "", values=["", "-", "N/A"]) is None
    assert apply("null_if", "x", values=["", "-"]) == "x"
    assert apply("null_if", 0, value=0) is None


def test_map() -> None:
    mapping = {"A": "active", "1": "one", "true": "yes"}
    assert apply("map", "A", mapping=mapping) == "active"
    assert apply("map", 1, mapping=mapping) == "one"  # JSON keys are strings
    assert apply("map", True, mapping=mapping) == "yes"
    assert apply("map", "Z", mapping=mapping, default=None) is None
    assert apply("map", "Z", mapping=mapping, default="other") == "other"
    assert bad_reason("map", "Z", mapping=mapping) == "no mapping for 'Z'"
    assert bad_reason("map", [1], mapping=mapping) == "no mapping for [1]"


def test_long_values_are_cut_short_in_reasons() -> None:
    reason = bad_reason("int", "x" * 10_000)
    assert len(reason) < 100
    assert reason.endswith("...")


# --- argument checking ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("lower", {}),
        ("int", {}),
        ("decimal", {}),
        ("decimal", {"places": 2}),
        ("date", {}),
        ("date", {"format": "%d/%m/%Y"}),
        ("datetime", {"format": "%Y-%m-%d %H:%M"}),
        ("default", {"value": None}),
        ("default", {"value": "x", "empty": True}),
        ("null_if", {"value": ""}),
        ("null_if", {"values": ["", "-"]}),
        ("map", {"mapping": {"a": 1}}),
        ("map", {"mapping": {}, "default": None}),
    ],
)
def test_check_args_accepts(name: str, args: dict[str, Any]) -> None:
    assert check_transform(name, args) == []


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("lower", {"x": 1}, ["takes no arguments; got 'x'"]),
        ("decimal", {"places": "2"}, ["argument 'places' must be an integer"]),
        ("decimal", {"places": True}, ["argument 'places' must be an integer"]),
        ("decimal", {"places": -1}, ["argument 'places' must be between 0 and 1000"]),
        ("decimal", {"digits": 2}, ["unknown argument 'digits'; allowed: places"]),
        ("date", {"format": 5}, ["argument 'format' must be a string"]),
        ("datetime", {"fmt": "%Y"}, ["unknown argument 'fmt'; allowed: format"]),
        ("default", {}, ["missing required argument 'value'"]),
        ("default", {"value": 1, "empty": "yes"}, ["argument 'empty' must be a boolean"]),
        ("null_if", {}, ["give exactly one of 'value' or 'values'"]),
        ("null_if", {"value": 1, "values": [1]}, ["give exactly one of 'value' or 'values'"]),
        ("null_if", {"values": "x"}, ["argument 'values' must be a list"]),
        ("map", {}, ["missing required argument 'mapping'"]),
        ("map", {"mapping": [1]}, ["argument 'mapping' must be an object"]),
    ],
)
def test_check_args_refuses(name: str, args: dict[str, Any], expected: list[str]) -> None:
    assert check_transform(name, args) == expected


def test_check_args_reports_every_problem() -> None:
    problems = check_transform("map", {"mapping": 1, "x": 2})
    assert problems == [
        "unknown argument 'x'; allowed: mapping, default",
        "argument 'mapping' must be an object",
    ]


def test_check_args_refuses_bad_strptime_directive() -> None:
    [problem] = check_transform("date", {"format": "%Y-%Q"})
    assert problem.startswith("argument 'format' is not a valid strptime format")


def test_check_unknown_transform() -> None:
    [message] = check_transform("nope", {})
    assert message == f"unknown transform 'nope'; known: {', '.join(known_transforms())}"


# --- registry -------------------------------------------------------------------------


def test_get_unknown_transform_raises_key_error() -> None:
    with pytest.raises(KeyError):
        get_transform("does-not-exist")


@pytest.mark.usefixtures("isolated_registry")
def test_register_custom_transform() -> None:
    def reverse(value: Any, args: Mapping[str, Any]) -> Any:
        return value[::-1]

    transform = register("reverse", reverse)
    assert isinstance(transform, Transform)
    assert get_transform("reverse") is transform
    assert transform.apply("abc", {}) == "cba"
    assert check_transform("reverse", {"anything": 1}) == []  # no checker: args unverified
    assert "reverse" in known_transforms()


@pytest.mark.usefixtures("isolated_registry")
def test_register_decorator_with_checker() -> None:
    def check(args: Mapping[str, Any]) -> list[str]:
        return [] if isinstance(args.get("n"), int) else ["argument 'n' must be an integer"]

    @register("times", check_args=check)
    def times(value: Any, args: Mapping[str, Any]) -> Any:
        return value * args["n"]

    assert times(2, {"n": 3}) == 6  # the decorator returns the function unchanged
    assert get_transform("times").apply("ab", {"n": 2}) == "abab"
    assert check_transform("times", {"n": 2}) == []
    assert check_transform("times", {}) == ["argument 'n' must be an integer"]


@pytest.mark.usefixtures("isolated_registry")
def test_buggy_checker_becomes_a_problem() -> None:
    def check(args: Mapping[str, Any]) -> list[str]:
        raise RuntimeError("boom")

    register("fragile", lambda value, args: value, check)
    assert check_transform("fragile", {}) == ["checking the args of 'fragile' failed: boom"]


def test_register_refuses_empty_name() -> None:
    with pytest.raises(ValueError):
        register("", lambda value, args: value)


class FakeEntryPoint:
    def __init__(self, name: str, loaded: object = None, error: Exception | None = None) -> None:
        self.name = name
        self.value = f"fake_plugins:{name}"
        self._loaded = loaded
        self._error = error

    def load(self) -> object:
        if self._error is not None:
            raise self._error
        return self._loaded


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, eps: list[FakeEntryPoint]) -> list[str]:
    groups: list[str] = []

    def entry_points(group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return eps

    monkeypatch.setattr(registry, "entry_points", entry_points)
    return groups


@pytest.mark.usefixtures("isolated_registry")
def test_plugins_loaded_lazily_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def rot13(value: Any, args: Mapping[str, Any]) -> Any:
        return value.translate(str.maketrans("ab", "no"))

    def check(args: Mapping[str, Any]) -> list[str]:
        return ["no args"] if args else []

    as_transform = Transform("some-other-name", lambda value, args: -value, check)
    groups = _fake_entry_points(
        monkeypatch, [FakeEntryPoint("rot13", rot13), FakeEntryPoint("negate", as_transform)]
    )
    assert groups == []  # nothing is loaded before the first lookup
    assert get_transform("rot13").apply("ab", {}) == "no"
    negate = get_transform("negate")
    assert negate.name == "negate"  # registered under the entry point's name
    assert negate.apply(3, {}) == -3
    assert check_transform("negate", {"x": 1}) == ["no args"]
    assert {"rot13", "negate"} <= set(known_transforms())
    assert groups == ["baton.transforms"]  # loaded exactly once


@pytest.mark.usefixtures("isolated_registry")
def test_broken_plugins_are_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def good(value: Any, args: Mapping[str, Any]) -> Any:
        return "good"

    _fake_entry_points(
        monkeypatch,
        [
            FakeEntryPoint("broken", error=ImportError("no module named 'fake_plugins'")),
            FakeEntryPoint("not-callable", loaded=42),
            FakeEntryPoint("int", loaded=good),  # may not shadow a built-in
            FakeEntryPoint("good", loaded=good),
        ],
    )
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        names = known_transforms()
    assert "good" in names
    assert "broken" not in names
    assert "not-callable" not in names
    assert get_transform("int").apply("3", {}) == 3
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "'broken'" in messages and "no module named" in messages
    assert "'not-callable'" in messages
    assert "'int'" in messages


@pytest.mark.usefixtures("isolated_registry")
def test_failing_entry_point_listing_is_survived(monkeypatch: pytest.MonkeyPatch) -> None:
    def entry_points(group: str) -> list[FakeEntryPoint]:
        raise RuntimeError("bad metadata")

    monkeypatch.setattr(registry, "entry_points", entry_points)
    assert "int" in known_transforms()


# --- mapper ---------------------------------------------------------------------------

SOURCE = ("id", "Name", "status", "amount", "born")


def test_identity_mapper() -> None:
    mapper = compile_mapper(None, SOURCE)
    assert isinstance(mapper, RowMapper)
    assert mapper.target_columns == SOURCE
    row = (1, "Ann", "A", "1.5", "2000-01-02")
    assert mapper.map_row(row) == row
    assert mapper.map_row(list(row)) == row
    assert mapper.identity


def test_only_a_copy_of_every_column_in_place_is_an_identity() -> None:
    renamed = {"ID": "id", "name": "Name", "st": "status", "amt": col("amount"), "b": "born"}
    assert compile_mapper(renamed, SOURCE).identity  # names change, values do not
    assert not compile_mapper({"Name": "Name", "id": "id"}, SOURCE).identity  # reordered, fewer
    changed = {**renamed, "st": col("status", "map", mapping={"A": "active"})}
    assert not compile_mapper(changed, SOURCE).identity
    constant = {**renamed, "b": ColumnValue.model_validate({"value": 1})}
    assert not compile_mapper(constant, SOURCE).identity


def test_rename_and_reorder() -> None:
    mapper = compile_mapper({"name": "Name", "key": col("id")}, SOURCE)
    assert mapper.target_columns == ("name", "key")
    assert mapper.map_row((1, "Ann", "A", "1.5", "2000-01-02")) == ("Ann", 1)


def test_single_copied_column() -> None:
    mapper = compile_mapper({"key": "id"}, SOURCE)
    assert mapper.map_row((1, "Ann", "A", "1.5", "2000-01-02")) == (1,)


def test_constants_and_transforms() -> None:
    columns: dict[str, ColumnSpec] = {
        "id": "id",
        "tenant": ColumnValue(value="acme"),
        "name": col("Name", "upper"),
        "status": col("status", "map", mapping={"A": "active"}, default="unknown"),
        "amount": col("amount", "decimal", places=2),
        "born": col("born", "date"),
    }
    mapper = compile_mapper(columns, SOURCE)
    assert mapper.target_columns == ("id", "tenant", "name", "status", "amount", "born")
    assert mapper.map_row((1, "Ann", "A", "1.505", "2000-01-02")) == (
        1,
        "acme",
        "ANN",
        "active",
        Decimal("1.50"),
        dt.date(2000, 1, 2),
    )
    assert mapper.map_row((2, None, "X", None, None)) == (2, "acme", None, "unknown", None, None)


def test_bad_row_carries_target_column() -> None:
    mapper = compile_mapper({"key": "id", "total": col("amount", "int")}, SOURCE)
    with pytest.raises(BadRowError) as info:
        mapper.map_row((1, "Ann", "A", "12.5", None))
    assert info.value.column == "total"
    assert info.value.reason == "not an integer: '12.5'"
    assert str(info.value) == "total: not an integer: '12.5'"


@pytest.mark.usefixtures("isolated_registry")
def test_buggy_transform_becomes_bad_row() -> None:
    def buggy(value: Any, args: Mapping[str, Any]) -> Any:
        return value / 0

    register("buggy", buggy)
    mapper = compile_mapper({"x": col("id", "buggy")}, SOURCE)
    with pytest.raises(BadRowError) as info:
        mapper.map_row((1, "Ann", "A", "1", None))
    assert info.value.column == "x"
    assert info.value.reason == "buggy failed: division by zero"
    assert isinstance(info.value.__cause__, ZeroDivisionError)


@pytest.mark.usefixtures("isolated_registry")
def test_transforms_get_read_only_args() -> None:
    def mutating(value: Any, args: Any) -> Any:
        args["n"] = 1
        return value

    register("mutating", mutating)
    mapper = compile_mapper({"x": col("id", "mutating")}, SOURCE)
    with pytest.raises(BadRowError, match="mutating failed"):
        mapper.map_row((1, "Ann", "A", "1", None))


def test_compile_refuses_an_invalid_spec() -> None:
    with pytest.raises(SpecError) as info:
        compile_mapper({"a": "nope", "b": col("id", "int", x=1)}, SOURCE)
    assert [(e.path, e.message) for e in info.value.errors] == [
        ("columns/a", "unknown source column 'nope'"),
        ("columns/b/args", "takes no arguments; got 'x'"),
    ]


def test_mapper_problems() -> None:
    columns: dict[str, ColumnSpec] = {
        "ok": "id",
        "a": "name",
        "b": col("Statuz"),
        "c": col("id", "nope"),
        "d": col("amount", "decimal", places="2"),
        "e": col("id", None, places=2),
        "f": ColumnValue(value=1),
        "g": col("missing", "int"),
    }
    problems = mapper_problems(columns, SOURCE)
    assert problems[:2] == [
        ("columns/a", "unknown source column 'name'; did you mean 'Name'?"),
        ("columns/b/from", "unknown source column 'Statuz'; did you mean 'status'?"),
    ]
    assert problems[2][0] == "columns/c/transform"
    assert problems[2][1].startswith("unknown transform 'nope'; known: bool, date, ")
    assert problems[3:] == [
        ("columns/d/args", "argument 'places' must be an integer"),
        ("columns/e/args", "args given without a transform"),
        ("columns/g/from", "unknown source column 'missing'"),
    ]


def test_mapper_problems_none_and_valid() -> None:
    assert mapper_problems(None, SOURCE) == []
    assert mapper_problems({"x": col("Name", "lower"), "y": "id"}, SOURCE) == []


def test_copies_renames_and_constants_map_positionally() -> None:
    source = [f"c{i}" for i in range(10)]
    rows = [tuple(range(i, i + 10)) for i in range(1_000)]
    columns: dict[str, ColumnSpec] = {
        "a": "c3",
        "b": col("c1"),
        "k": ColumnValue(value=7),
        "c": "c9",
    }
    identity = compile_mapper(None, source)
    picked = compile_mapper(columns, source)
    for row in rows:
        assert identity.map_row(row) == row
        assert picked.map_row(row) == (row[3], row[1], 7, row[9])
