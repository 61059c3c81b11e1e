"""Turn a stream's ``columns`` spec into a fast row-to-row function.

Everything that depends only on the spec (column positions, transform lookups, args) is
resolved once in :func:`compile_mapper`; mapping a row is then a handful of C-level
item lookups plus the transforms themselves, with no per-row dicts or registry access.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from etl_tasks.errors import BadRowError, FieldError, SpecError
from etl_tasks.spec import ColumnFrom, ColumnSpec, ColumnValue
from etl_tasks.transforms.registry import check_transform, get_transform, known_transforms

Row = Sequence[Any]
RowFn = Callable[[Row], tuple[Any, ...]]
CellFn = Callable[[Row], Any]


@dataclass(frozen=True)
class RowMapper:
    """Maps a source row (a sequence in source-column order) to a target-column tuple.

    Build it with :func:`compile_mapper`, which validates the spec first.
    """

    target_columns: tuple[str, ...]
    _row_fn: RowFn = field(repr=False, compare=False)
    #: Each target column copies the source column at its own position, untransformed.
    identity: bool = False

    def map_row(self, row: Row) -> tuple[Any, ...]:
        """The target row; raises :class:`BadRowError` naming the target column at fault."""
        return self._row_fn(row)


def compile_mapper(
    columns: Mapping[str, ColumnSpec] | None, source_columns: Sequence[str]
) -> RowMapper:
    """Validate ``columns`` against ``source_columns`` and precompute the row function.

    Raises :class:`SpecError` listing every problem :func:`mapper_problems` finds.
    """
    problems = mapper_problems(columns, source_columns)
    if problems:
        raise SpecError([FieldError(path, message) for path, message in problems])
    if columns is None:
        return RowMapper(tuple(source_columns), tuple, identity=True)
    index = _index(source_columns)
    cells = [_cell_fn(target, spec, index) for target, spec in columns.items()]
    copies = [_copy_index(spec, index) for spec in columns.values()]
    identity = copies == list(range(len(source_columns)))
    return RowMapper(tuple(columns), _row_fn(cells, copies), identity)


def _index(source_columns: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(source_columns):
        index.setdefault(name, i)
    return index


def _copy_index(spec: ColumnSpec, index: Mapping[str, int]) -> int | None:
    """The source position when a column is a plain copy, else None."""
    if isinstance(spec, str):
        return index[spec]
    if isinstance(spec, ColumnFrom) and spec.transform is None:
        return index[spec.from_]
    return None


def _row_fn(cells: list[CellFn], copies: list[int | None]) -> RowFn:
    """The fastest row function that fits: one ``itemgetter`` when every column is a copy."""
    if all(i is not None for i in copies):
        positions = [i for i in copies if i is not None]
        if len(positions) == 1:
            only = positions[0]
            return lambda row: (row[only],)
        return itemgetter(*positions)  # with 2+ positions it returns a tuple
    fns = tuple(cells)
    return lambda row: tuple([fn(row) for fn in fns])


def _cell_fn(target: str, spec: ColumnSpec, index: Mapping[str, int]) -> CellFn:
    if isinstance(spec, str):
        return itemgetter(index[spec])
    if isinstance(spec, ColumnValue):
        constant = spec.value
        return lambda row: constant
    if spec.transform is None:
        return itemgetter(index[spec.from_])
    return _transform_cell(target, spec.transform, spec.args, index[spec.from_])


def _transform_cell(target: str, name: str, args: Mapping[str, Any], position: int) -> CellFn:
    """A cell function applying one transform, with failures pinned to ``target``."""
    apply = get_transform(name).apply
    frozen_args = MappingProxyType(dict(args))  # transforms are pure: they get a read-only view

    def cell(row: Row) -> Any:
        try:
            return apply(row[position], frozen_args)
        except BadRowError as exc:
            raise BadRowError(exc.reason, column=target) from exc
        except Exception as exc:  # a buggy plugin: quarantine the row, do not kill the step
            raise BadRowError(f"{name} failed: {exc}", column=target) from exc

    return cell


def mapper_problems(
    columns: Mapping[str, ColumnSpec] | None, source_columns: Sequence[str]
) -> list[tuple[str, str]]:
    """``(path, message)`` for every way ``columns`` does not fit the real source columns.

    Names are exact and case-sensitive, as the source reports them.
    """
    if columns is None:
        return []
    known = set(source_columns)
    problems: list[tuple[str, str]] = []
    for target, spec in columns.items():
        path = f"columns/{target}"
        if isinstance(spec, str):
            if spec not in known:
                problems.append((path, _unknown_column(spec, source_columns)))
        elif isinstance(spec, ColumnFrom):
            problems.extend(_column_from_problems(path, spec, source_columns))
    return problems


def _column_from_problems(
    path: str, spec: ColumnFrom, source_columns: Sequence[str]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if spec.from_ not in source_columns:
        problems.append((f"{path}/from", _unknown_column(spec.from_, source_columns)))
    if spec.transform is None:
        if spec.args:
            problems.append((f"{path}/args", "args given without a transform"))
    elif spec.transform not in known_transforms():
        problems.extend((f"{path}/transform", m) for m in check_transform(spec.transform, {}))
    else:
        problems.extend((f"{path}/args", m) for m in check_transform(spec.transform, spec.args))
    return problems


def _unknown_column(name: str, source_columns: Sequence[str]) -> str:
    """Say which column is missing and, when one is close (often just its case), which."""
    message = f"unknown source column {name!r}"
    same_case = [c for c in source_columns if c.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, list(source_columns), n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message
