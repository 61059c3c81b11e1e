"""Quarantined rows as a viewer sees them: the shape and the reason's words, never a value.

A row keeps its columns, each value replaced by ``***`` (a null stays null: that a
value is missing tells nothing about it). A reason keeps its words; the values
in it are masked wherever a transform or a database puts them: quoted literals
(``'31/04/2018'``, PostgreSQL's ``"abc"``), PostgreSQL's details
(``Key (id)=(5)``, ``Failing row contains (...)``) and the value a transform
shows at the end of its message (``not an integer: 3.5``).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# Whatever follows "=(" in a key detail, up to the last ")" of the line: key values
# may hold parentheses, and an exclusion conflict names two keys on one line.
_KEY_DETAIL = re.compile(r"(Key \([^)\n]*\)=\().*(\))")
_FAILING_ROW = re.compile(r"(Failing row contains \().*(\))")
# Single- or double-quoted, doubled or backslashed quotes inside; a literal a transform
# cut short ("'abc...") runs to the end of the text.
_QUOTED = re.compile(r"""'(?:[^'\\]|''|\\.)*(?:'|$)|"(?:[^"\\]|""|\\.)*(?:"|$)""")
# A value shown unquoted at the very end of a transform's message: a number, a
# constant, or a constructor's repr such as Decimal(...) or datetime.date(...).
_TRAILING_VALUE = re.compile(
    r"(: )(?:[-+]?(?:\d|\.\d|inf\b|nan\b)\S*|None|True|False|[A-Za-z_][\w.]*\(.*\))\s*$"
)


def mask_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row with every value but null masked."""
    if row is None:
        return None
    return {column: None if value is None else MASK for column, value in row.items()}


def mask_reason(reason: str) -> str:
    """The reason with every value it quotes masked."""
    text = _KEY_DETAIL.sub(rf"\g<1>{MASK}\g<2>", reason)
    text = _FAILING_ROW.sub(rf"\g<1>{MASK}\g<2>", text)
    text = _QUOTED.sub(lambda m: _masked_quote(m.group(0)), text)
    return _TRAILING_VALUE.sub(rf"\g<1>{MASK}", text)


def _masked_quote(literal: str) -> str:
    quote = literal[0]
    return f"{quote}{MASK}{quote}"


def mask_quarantined(item: dict[str, Any]) -> dict[str, Any]:
    """A quarantine listing entry (see :func:`etl_tasks.views.list_quarantine`) for a viewer."""
    return {**item, "reason": mask_reason(str(item["reason"])), "row": mask_row(item["row"])}
