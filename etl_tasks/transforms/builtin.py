"""The built-in transforms, registered when :mod:`etl_tasks.transforms` is imported.

Each one is strict: a value it cannot convert exactly is a bad row (quarantined with a
short, precise reason), never a silent guess. ``None`` passes through every transform
except ``default``, whose job is to replace it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from etl_tasks.errors import BadRowError
from etl_tasks.transforms.registry import CheckFn, register

_INT_RE = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})
_MAX_PLACES = 1000


def _show(value: Any) -> str:
    """``repr`` of a value, cut short so one huge cell cannot bloat a quarantine record."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# --- argument checking ----------------------------------------------------------------


@dataclass(frozen=True)
class _Arg:
    kind: str  # completes "argument 'x' must be ..."
    accepts: Callable[[Any], bool]
    required: bool = False


_ANY = _Arg("anything", lambda v: True)
_REQUIRED_ANY = _Arg("anything", lambda v: True, required=True)
_STRING = _Arg("a string", lambda v: isinstance(v, str))
_BOOLEAN = _Arg("a boolean", lambda v: isinstance(v, bool))


def _checker(
    spec: Mapping[str, _Arg], extra: Callable[[Mapping[str, Any]], list[str]] | None = None
) -> CheckFn:
    """A ``check_args`` refusing unknown names, missing required args and wrong types."""

    def check(args: Mapping[str, Any]) -> list[str]:
        problems = [_unknown_arg(name, spec) for name in args if name not in spec]
        for name, arg in spec.items():
            if name not in args:
                if arg.required:
                    problems.append(f"missing required argument '{name}'")
            elif not arg.accepts(args[name]):
                problems.append(f"argument '{name}' must be {arg.kind}")
        if extra is not None and not problems:
            problems.extend(extra(args))
        return problems

    return check


def _unknown_arg(name: object, spec: Mapping[str, _Arg]) -> str:
    if not spec:
        return f"takes no arguments; got {name!r}"
    return f"unknown argument {name!r}; allowed: {', '.join(spec)}"


def _format_problems(args: Mapping[str, Any]) -> list[str]:
    """Catch a bad strptime directive at submit time rather than on the first row."""
    fmt = args.get("format")
    if fmt is None:
        return []
    try:
        dt.datetime.strptime("", fmt)
    except ValueError as exc:
        if "directive" in str(exc) or "stray %" in str(exc):
            return [f"argument 'format' is not a valid strptime format: {exc}"]
    return []


_NO_ARGS = _checker({})


# --- strings --------------------------------------------------------------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRowError(f"not a string: {_show(value)}")
    return value


@register("lower", check_args=_NO_ARGS)
def lower(value: Any, args: Mapping[str, Any]) -> str | None:
    """Lower-case a string."""
    return None if value is None else _string(value).lower()


@register("upper", check_args=_NO_ARGS)
def upper(value: Any, args: Mapping[str, Any]) -> str | None:
    """Upper-case a string."""
    return None if value is None else _string(value).upper()


@register("strip", check_args=_NO_ARGS)
def strip(value: Any, args: Mapping[str, Any]) -> str | None:
    """Remove surrounding whitespace from a string."""
    return None if value is None else _string(value).strip()


# --- numbers --------------------------------------------------------------------------


@register("int", check_args=_NO_ARGS)
def to_int(value: Any, args: Mapping[str, Any]) -> int | None:
    """An int from an int, bool, integral float/Decimal, or integer string ("12", " 12.0 ")."""
    if value is None:
        return None
    if isinstance(value, int):
        return int(value)  # bool -> 0/1
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        try:
            return int(value.strip().split(".")[0])
        except ValueError:  # more digits than Python's int-from-str limit
            pass
    raise BadRowError(f"not an integer: {_show(value)}")


@register("float", check_args=_NO_ARGS)
def to_float(value: Any, args: Mapping[str, Any]) -> float | None:
    """A float from a number or a numeric string (underscored literals refused)."""
    if value is None:
        return None
    if isinstance(value, (int, float, decimal.Decimal)):
        try:
            return float(value)
        except OverflowError:
            raise BadRowError(f"too large for a float: {_show(value)}") from None
    if isinstance(value, str) and "_" not in value:
        try:
            return float(value)
        except ValueError:
            pass
    raise BadRowError(f"not a number: {_show(value)}")


def _decimal_check(args: Mapping[str, Any]) -> list[str]:
    places = args.get("places")
    if places is not None and not 0 <= places <= _MAX_PLACES:
        return [f"argument 'places' must be between 0 and {_MAX_PLACES}"]
    return []


@register(
    "decimal",
    check_args=_checker(
        {"places": _Arg("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))},
        _decimal_check,
    ),
)
def to_decimal(value: Any, args: Mapping[str, Any]) -> decimal.Decimal | None:
    """An exact, finite Decimal; ``places`` rounds it half-to-even (banker's rounding)."""
    if value is None:
        return None
    result = _parse_decimal(value)
    places = args.get("places")
    if places is None:
        return result
    try:
        context = decimal.Context(prec=2 * _MAX_PLACES, traps=[decimal.InvalidOperation])
        return result.quantize(decimal.Decimal(1).scaleb(-places), decimal.ROUND_HALF_EVEN, context)
    except decimal.InvalidOperation:
        raise BadRowError(f"too many digits to round to {places} places: {_show(value)}") from None


def _parse_decimal(value: Any) -> decimal.Decimal:
    result: decimal.Decimal | None = None
    if isinstance(value, decimal.Decimal):
        result = value
    elif isinstance(value, int):
        result = decimal.Decimal(int(value))
    elif isinstance(value, float):
        result = decimal.Decimal(repr(value))  # 0.1 -> Decimal('0.1'), not its binary expansion
    elif isinstance(value, str) and "_" not in value:
        try:
            result = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            pass
    if result is None or not result.is_finite():
        raise BadRowError(f"not a decimal: {_show(value)}")
    return result


# --- booleans -------------------------------------------------------------------------


@register("bool", check_args=_NO_ARGS)
def to_bool(value: Any, args: Mapping[str, Any]) -> bool | None:
    """A bool from true/false, yes/no, y/n, t/f, on/off, 1/0 (any case), or the ints 0/1."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise BadRowError(f"not a boolean: {_show(value)}")


# --- dates ----------------------------------------------------------------------------

_FORMAT_ONLY = _checker({"format": _STRING}, _format_problems)


@register("date", check_args=_FORMAT_ONLY)
def to_date(value: Any, args: Mapping[str, Any]) -> dt.date | None:
    """A date from a date, a datetime (its date part) or a string (ISO 8601 or ``format``)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if value is None or isinstance(value, dt.date):
        return value
    fmt = args.get("format")
    if isinstance(value, str):
        text = value.strip()
        try:
            if fmt is not None:
                return dt.datetime.strptime(text, fmt).date()
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    raise BadRowError(f"not a date{_in_format(fmt)}: {_show(value)}")


@register("datetime", check_args=_FORMAT_ONLY)
def to_datetime(value: Any, args: Mapping[str, Any]) -> dt.datetime | None:
    """A datetime from a datetime, a date (at midnight) or a string (ISO 8601 or ``format``)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    fmt = args.get("format")
    if isinstance(value, str):
        text = value.strip()
        try:
            if fmt is not None:
                return dt.datetime.strptime(text, fmt)
            return dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    raise BadRowError(f"not a datetime{_in_format(fmt)}: {_show(value)}")


def _in_format(fmt: str | None) -> str:
    return " (ISO 8601)" if fmt is None else f" in format {fmt!r}"


# --- nulls and lookups ----------------------------------------------------------------


@register("default", check_args=_checker({"value": _REQUIRED_ANY, "empty": _BOOLEAN}))
def default(value: Any, args: Mapping[str, Any]) -> Any:
    """Replace None (and ``""`` too when ``empty`` is true) with ``value``."""
    if value is None or (value == "" and args.get("empty", False)):
        return args["value"]
    return value


def _null_if_check(args: Mapping[str, Any]) -> list[str]:
    if ("value" in args) == ("values" in args):
        return ["give exactly one of 'value' or 'values'"]
    return []


@register(
    "null_if",
    check_args=_checker(
        {"value": _ANY, "values": _Arg("a list", lambda v: isinstance(v, list))}, _null_if_check
    ),
)
def null_if(value: Any, args: Mapping[str, Any]) -> Any:
    """None when ``value`` equals the ``value`` arg or one of the ``values`` list."""
    if value is None:
        return None
    if "values" in args:
        return None if value in args["values"] else value
    return None if value == args["value"] else value


@register(
    "map",
    check_args=_checker(
        {"mapping": _Arg("an object", lambda v: isinstance(v, Mapping), True), "default": _ANY}
    ),
)
def map_value(value: Any, args: Mapping[str, Any]) -> Any:
    """Look ``value`` up in ``mapping`` (also as a string: JSON keys are always strings)."""
    if value is None:
        return None
    mapping: Mapping[Any, Any] = args["mapping"]
    for key in _lookup_keys(value):
        if key in mapping:
            return mapping[key]
    if "default" in args:
        return args["default"]
    raise BadRowError(f"no mapping for {_show(value)}")


def _lookup_keys(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    keys: list[Any] = []
    try:
        hash(value)
        keys.append(value)
    except TypeError:  # a list or dict cell: only its string form can be a key
        pass
    if isinstance(value, bool):
        keys.append("true" if value else "false")  # JSON's spelling
    keys.append(str(value))
    return keys
