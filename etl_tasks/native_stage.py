"""Staged pass-through chunks: a connector's native payload kept as its bytes.

A pass-through chunk (:class:`~etl_tasks.connectors.base.Native`) is staged as a
small JSON header (columns, format, how to parse it back, each part's size, row
count and last key) followed by the parts' bytes as they are: no value is encoded,
and the transform renames the columns without touching the rows. Such a chunk is
staged under its own kind (:func:`etl_tasks.constants.native_stage`), so a worker
that does not know this form finds no input, never one it misreads: the target
ledger then decides, and the chunk is read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from etl_tasks.bindings import StreamBinding
from etl_tasks.connectors.base import Native, NativePart
from etl_tasks.values.path import ValuePath

MAGIC = b"BATON-NATIVE/1\n"
_LENGTH = 8  # bytes of the header's length, big-endian


def encode(columns: Sequence[str], native: Native) -> bytes:
    """The staged form of a pass-through chunk."""
    header = orjson.dumps(
        {
            "columns": list(columns),
            "format": native.format,
            "meta": native.meta,
            "parts": [[len(p.data), p.rows, p.last_key] for p in native.parts],
        }
    )
    return b"".join(
        [MAGIC, len(header).to_bytes(_LENGTH, "big"), header, *(p.data for p in native.parts)]
    )


def _split(blob: bytes) -> tuple[dict[str, Any], int]:
    if not blob.startswith(MAGIC):
        raise ValueError("not a staged pass-through chunk")
    at = len(MAGIC)
    size = int.from_bytes(blob[at : at + _LENGTH], "big")
    start = at + _LENGTH
    return orjson.loads(blob[start : start + size]), start + size


def decode(blob: bytes) -> tuple[list[str], Native]:
    """The inverse of :func:`encode`: ``(columns, native)``."""
    header, at = _split(blob)
    view = memoryview(blob)
    parts = []
    for size, rows, last_key in header["parts"]:
        parts.append(NativePart(bytes(view[at : at + size]), rows, last_key))
        at += size
    return header["columns"], Native(header["format"], parts, header["meta"])


def renamed(blob: bytes, columns: Sequence[str]) -> bytes:
    """The same staged chunk under other column names (the transform's whole work on it)."""
    header, at = _split(blob)
    if len(columns) != len(header["columns"]):
        raise ValueError("a pass-through chunk keeps its number of columns")
    header["columns"] = list(columns)
    head = orjson.dumps(header)
    return b"".join([MAGIC, len(head).to_bytes(_LENGTH, "big"), head, memoryview(blob)[at:]])


def pass_through_refusal(
    enabled: bool,
    backends: tuple[str | None, str | None],
    binding: StreamBinding,
    path: ValuePath,
) -> str | None:
    """Why a stream's rows may not travel as PostgreSQL COPY text, or ``None`` when they
    may: both ends PostgreSQL, every target column its source column with the very same
    type (no transform, constant, representation or cast: :attr:`ValuePath.passes_through`),
    a unique source key that is the target key (so a sub-batch never splits a run of equal
    keys and a batch never meets a key twice). The one place this is decided."""
    if not enabled:
        return "turned off (BATON_NATIVE_COPY)"
    if backends != ("postgresql", "postgresql"):
        return "source and target are not both PostgreSQL"
    if not path.passes_through:
        return "a column is transformed, a constant, or cast to another type"
    if not binding.unique_key or not binding.identity_key:
        return "the key is not unique, or not the target's key"
    return None
