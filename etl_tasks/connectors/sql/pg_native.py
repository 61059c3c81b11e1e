"""PostgreSQL → PostgreSQL pass-through: a chunk travels as COPY text, never parsed.

When a stream's mapping is column for column with identical types (decided once,
by :meth:`etl_tasks.runtime.Runtime.native_copy`), the source reads each sub-batch
with ``COPY (SELECT … WHERE key range ORDER BY key LIMIT n) TO STDOUT`` and the
target loads those bytes with ``COPY … FROM STDIN``: the target parses what the
source printed, as :func:`etl_tasks.values.path.same_type` promises. Only the last
key of each sub-batch is read out of the text (the next sub-batch starts after it,
and a deadline cut is made there).

The session settings that shape COPY's text are pinned for the read's transaction
(``SET LOCAL``) on the source, and for the chunk's transaction on the target, so a
server's or a role's defaults never change a value on the way. The text travels as
UTF-8: a source connection in another encoding is read by the parsed path, and a
target connection in another encoding gets the text re-encoded (the driver keeps its
own idea of the client encoding, so it is never changed under it). A batch the
target refuses is parsed here into rows (each column by the very typecaster the
driver uses for a plain read of the same select), and the load bisects those.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import extensions
from sqlalchemy import Connection

from etl_tasks import codec
from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.connectors.base import Batch, Key, Native, NativePart, Pace
from etl_tasks.connectors.sql.queries import RangeQuery

FORMAT = "pg_copy_text"

#: What shapes COPY's text on output (the source's read).
OUTPUT_SETTINGS = (
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("TimeZone", "UTC"),
)
#: What shapes how the target parses that text. Not its TimeZone: every zoned value
#: arrives with its offset, and the zone would change a column default such as ``now()``.
INPUT_SETTINGS = OUTPUT_SETTINGS[:2]
UTF8 = ("UTF8", "UNICODE")  # what the driver calls the encoding the text travels in

_ESCAPED = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_NAMED = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def speaks_utf8(dbapi_conn: Any) -> bool:
    return dbapi_conn.encoding in UTF8


def pin_session(cur: Any, settings: Sequence[tuple[str, str]] = OUTPUT_SETTINGS) -> None:
    """``SET LOCAL`` each setting for the transaction in progress on ``cur``'s connection
    (it ends with the transaction, so a pooled connection keeps its own defaults)."""
    cur.execute("; ".join(f"SET LOCAL {name} TO '{value}'" for name, value in settings))


def _literal_sql(cur: Any, stmt: Any, dialect: Any) -> str:
    """A select as SQL text with its parameters spelled by the driver (COPY takes none):
    the same values the parsed path binds, adapted the same way."""
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    encoding = extensions.encodings[cur.connection.encoding]
    sql: str = cur.mogrify(str(compiled), compiled.params).decode(encoding)
    return sql


def _part_sql(
    cur: Any, query: RangeQuery, dialect: Any, bounds: tuple[Key | None, Key | None], limit: int
) -> str:
    """:func:`_literal_sql` of ``query.select_range(*bounds).limit(limit)``: the select
    compiled once per shape, the bounds and limit spelled into it by the driver (the same
    values, adapted the same way), instead of compiled again for every part."""
    lower, upper = bounds
    compiled = query.compiled_range(dialect, lower is not None, upper is not None, limited=True)
    encoding = extensions.encodings[cur.connection.encoding]
    text: str = cur.mogrify(compiled.sql, compiled.params(lower, upper, limit)).decode(encoding)
    return text


def column_oids(conn: Connection, stmt: Any) -> list[int]:
    """The type of each column the select returns, as the driver sees it (no row read)."""
    with conn.connection.dbapi_connection.cursor() as cur:  # type: ignore[union-attr]
        sql = _literal_sql(cur, stmt, conn.dialect)
        cur.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
        return [int(d.type_code) for d in cur.description]


@dataclass
class PartRows:
    """How many rows a stream's first COPY part asks for, learned from its reads in this
    process, and how long that is expected to take. A part's size doubles only when the
    pace says twice its time still fits the step, so the size a read reached is one this
    source has shown it delivers in time: the next read starts there (when that time fits
    its own pace) instead of at ``SUB_BATCH_ROWS`` and doubling again, three queries,
    COPYs and savepoints for a 5,000-row chunk where one does. A full part that may not
    double sets the size back to its own."""

    first: int = 0  # none learned yet: ``SUB_BATCH_ROWS``
    seconds: float = 0.0


def read_parts(
    conn: Connection,
    query: RangeQuery,
    bounds: tuple[Key | None, Key | None],
    pace: Pace,
    key_width: int,
    casters: list[Any],
    sizes: PartRows | None = None,
) -> tuple[list[NativePart], Key | None]:
    """The range as COPY text, in parts each starting after the last key of the one before.
    The first has ``sizes.first`` rows at most (``SUB_BATCH_ROWS`` without it), and each
    next one twice as many as long as the pace says that would still fit (a round trip per
    1,000 rows costs more than the rows); ``sizes`` learns where that got to. Stops between
    parts when the pace says so; returns the parts and the cut (the last key read), or
    ``None`` at the end. The key is unique (a pass-through condition), so no run of equal
    keys spans two parts."""
    sizes = sizes or PartRows()
    parts: list[NativePart] = []
    after, upper = bounds
    limit = sizes.first if sizes.first and not pace.expired(sizes.seconds) else SUB_BATCH_ROWS
    with conn.connection.dbapi_connection.cursor() as cur:  # type: ignore[union-attr]
        pin_session(cur)
        while True:
            began = time.monotonic()
            sql = _part_sql(cur, query, conn.dialect, (after, upper), limit)
            buf = io.BytesIO()
            cur.copy_expert(f"COPY ({sql}) TO STDOUT", buf)
            data = buf.getvalue()
            took = time.monotonic() - began
            rows = data.count(b"\n")
            if not rows:
                return parts, None
            last = _last_key(data, key_width, casters, cur)
            parts.append(NativePart(data, rows, codec.encode_key(last) or []))
            if rows < limit:
                return parts, None
            if pace.expired():
                return parts, last
            pace.tick()
            after = last
            if not pace.expired(2 * took):
                limit, took = 2 * limit, 2 * took
            sizes.first, sizes.seconds = limit, took


def casters_for(dbapi_conn: Any, oids: Sequence[int]) -> list[Any]:
    """Each column's typecaster, looked up as the driver does for a plain read (the
    connection's own first, then the global ones); ``None`` reads the text as it is."""
    own = getattr(dbapi_conn, "string_types", {})
    return [own.get(oid) or extensions.string_types.get(oid) for oid in oids]


def _field(raw: bytes) -> str | None:
    if raw == b"\\N":
        return None
    if b"\\" in raw:
        raw = _ESCAPED.sub(_unescape, raw)
    return raw.decode("utf-8")


def _unescape(m: re.Match[bytes]) -> bytes:
    octal, hexa, char = m.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _NAMED.get(char, char)


def _value(text: str | None, caster: Any, cur: Any) -> Any:
    if text is None or caster is None:
        return text
    value = caster(text, cur)
    return bytes(value) if isinstance(value, memoryview) else value


def _last_key(data: bytes, key_width: int, casters: list[Any], cur: Any) -> Key:
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    fields = data[start:-1].split(b"\t", key_width)[:key_width]
    return tuple(_value(_field(f), c, cur) for f, c in zip(fields, casters, strict=True))


def parse(
    dbapi_conn: Any, columns: list[str], data: bytes, meta: dict[str, Any], offset: int
) -> Batch:
    """COPY text's rows as values (for bisection and quarantine): each field unescaped and
    read by its column's typecaster, keys encoded as the transform would, positions from
    ``offset`` (a pass-through chunk's rows keep their extract order)."""
    key_width = int(meta["key_width"])
    with dbapi_conn.cursor() as cur:
        casters = casters_for(dbapi_conn, meta["oids"])
        rows = [
            tuple(
                _value(_field(f), c, cur) for f, c in zip(line.split(b"\t"), casters, strict=True)
            )
            for line in data.split(b"\n")[:-1]
        ]
    keys = codec.encode_keys([row[:key_width] for row in rows])
    return Batch(columns, rows, keys, list(range(offset, offset + len(rows))))


def for_target(data: bytes, dbapi_conn: Any) -> bytes:
    """The UTF-8 text in the target connection's encoding (COPY reads the client's)."""
    if speaks_utf8(dbapi_conn):
        return data
    return data.decode("utf-8").encode(extensions.encodings[dbapi_conn.encoding])


def native(parts: list[NativePart], oids: list[int], key_width: int) -> Native:
    """The payload a pass-through batch carries: the parts, and how to parse them back."""
    return Native(FORMAT, parts, {"oids": oids, "key_width": key_width})
