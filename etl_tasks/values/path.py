"""A stream's whole value path, decided once per process: transforms, then strict casts.

A target column that copies a source column of the very same declared type on
the same kind of database passes its values through untouched (the target
parses what the source wrote); every other column goes through the one strict
cast into its target type (:mod:`etl_tasks.values.casts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from etl_tasks.errors import BadRowError
from etl_tasks.transforms import RowMapper
from etl_tasks.values.casts import Cast, ColumnCast, cast_column, cast_to, over_column
from etl_tasks.values.types import ColumnType, Kind


def family(dialect: str) -> str:
    return "mysql" if dialect in ("mysql", "mariadb") else dialect


def same_type(src: ColumnType, target: ColumnType) -> bool:
    """Whether a value of ``src`` needs no conversion at all to be held by ``target``."""
    return family(src.dialect) == family(target.dialect) and src.sql.lower() == target.sql.lower()


def _represent(rep: str, src: ColumnType) -> Cast:
    """A source value in the representation the spec asked for (``"as"``)."""

    def as_json(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and src.kind == Kind.SET:  # MySQL's 'a,b'
            return orjson.dumps([part for part in value.split(",") if part]).decode()
        return orjson.dumps(value, default=str).decode()

    def as_text(value: Any) -> Any:
        return value if value is None or isinstance(value, str) else str(value)

    return as_json if rep == "json" else as_text


@dataclass(frozen=True)
class ValuePath:
    """Source rows (in read order) to target rows (in target-column order)."""

    mapper: RowMapper
    casts: tuple[Cast | None, ...]
    column_casts: tuple[ColumnCast | None, ...]  # the same casts, each over a whole column

    @property
    def target_columns(self) -> tuple[str, ...]:
        return self.mapper.target_columns

    @property
    def passes_through(self) -> bool:
        """Every target value is its source value, in source order: nothing to do per row."""
        return self.mapper.identity and not any(self.casts)

    def convert(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """The target row; raises :class:`BadRowError` naming the column at fault."""
        mapped = self.mapper.map_row(row)
        if not any(self.casts):
            return mapped
        out = list(mapped)
        for i, cast in enumerate(self.casts):
            if cast is not None:
                try:
                    out[i] = cast(out[i])
                except BadRowError as exc:
                    raise BadRowError(exc.reason, column=self.target_columns[i]) from exc
        return tuple(out)


@dataclass(frozen=True)
class ColumnOrigin:
    """Where a target column's value comes from."""

    source: str | None  # the source column, or None for a constant
    transformed: bool
    rep: str | None = None  # "text" or "json", when the spec asked for one


def build_path(
    mapper: RowMapper,
    origins: Mapping[str, ColumnOrigin],
    source_types: Mapping[str, ColumnType],
    target_types: Mapping[str, ColumnType],
) -> ValuePath:
    casts: list[Cast | None] = []
    column_casts: list[ColumnCast | None] = []
    for name in mapper.target_columns:
        origin = origins[name]
        target = target_types[name]
        src = source_types.get(origin.source or "")
        if (
            src is not None
            and not origin.transformed
            and origin.rep is None
            and same_type(src, target)
        ):
            casts.append(None)
            column_casts.append(None)
            continue
        cast = cast_to(target)
        if src is not None and origin.rep is not None:
            chained = _chain(_represent(origin.rep, src), cast)
            casts.append(chained)
            column_casts.append(over_column(chained))
        else:
            casts.append(cast)
            column_casts.append(cast_column(target))
    return ValuePath(mapper, tuple(casts), tuple(column_casts))


def _chain(first: Cast, then: Cast) -> Cast:
    return lambda value: then(first(value))
