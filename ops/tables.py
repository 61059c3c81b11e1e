"""Tables for a terminal, or for a pipe: ids whole, values shown as they are.

An id is never cut: its column is as wide as the id, on any terminal. Off a
terminal (a pipe, a file, CI's log) nothing is cut at all: the console is as wide
as the widest line. Cells are plain text, never rich markup: a reason or a
message holding ``[red]`` is shown as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

UNBOUNDED = 100_000  # columns of a console that is not a terminal


def console() -> Console:
    """The console to print on: the terminal's width, or no limit off a terminal."""
    here = Console()
    return here if here.is_terminal else Console(width=UNBOUNDED)


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], ids: Iterable[str] = ("id",)
) -> Table:
    """A table of plain text (``None`` shown as an em dash) whose ``ids`` columns are as
    wide as their widest value: never narrowed, wrapped or cut."""
    cells = [[Text("—" if c is None else str(c)) for c in row] for row in rows]
    out = Table(*columns)
    whole = set(ids)
    for n, column in enumerate(out.columns):
        if column.header in whole:
            column.no_wrap = True
            column.min_width = max((r[n].cell_len for r in cells), default=0)
    for row in cells:
        out.add_row(*row)
    return out
