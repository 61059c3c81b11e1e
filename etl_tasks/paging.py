"""Pages of a list: how many to return, where the next page starts, how many there are.

Every list the API answers is ``{"items": [...], "total": N, "next": cursor}``:
``total`` counts every item the filters match (not only this page) and ``next``
is the cursor to send back for the page after this one, ``null`` on the last
page. A cursor is keyset, not an offset: a page never repeats or skips an item
because others were added meanwhile.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from etl_tasks.errors import BadQuery

DEFAULT_LIMIT = 100  # items per page when the caller says nothing
MAX_LIMIT = 1000  # the most items one page holds


@dataclass(frozen=True)
class Page:
    """One page of a list, as the API answers it."""

    items: list[dict[str, Any]]
    total: int
    next: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "next": self.next}


def page_limit(args: Mapping[str, str], default: int = DEFAULT_LIMIT) -> int:
    """The ``limit`` a request asks for: 1 to :data:`MAX_LIMIT`, ``default`` when absent."""
    text = args.get("limit")
    if text is None:
        return default
    try:
        limit = int(text)
    except ValueError:
        raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def id_cursor(text: str | None) -> int | None:
    """A cursor that is the id of the last item seen (chunks, quarantined rows, events)."""
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise BadQuery("cursor must be the 'next' of a previous page (an item's id)")
    return int(text)


def encode_cursor(*values: str) -> str:
    """An opaque cursor holding several values (a timestamp and an id, say)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(text: str | None, size: int) -> list[str] | None:
    """The values of a cursor :func:`encode_cursor` made; :class:`BadQuery` for any other."""
    if text is None:
        return None
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        values = None
    if not (isinstance(values, list) and len(values) == size) or not all(
        isinstance(v, str) and "\x00" not in v for v in values
    ):
        raise BadQuery("cursor must be the 'next' of a previous page")
    return values
