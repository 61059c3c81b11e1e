"""Transform: map staged source rows to target rows; set aside the rows that fail.

Each row goes through the stream's value path: the spec's transforms, then the
strict cast into each target column's type. A value either arrives exactly
or its row is quarantined with the reason, here, before the load.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from etl_tasks import codec
from etl_tasks import native_stage as staged_native
from etl_tasks.budget import StepClock
from etl_tasks.chunk_lease import Claim, timed
from etl_tasks.connectors.base import Native, QuarantineEntry
from etl_tasks.constants import STEPS, native_stage, step_after
from etl_tasks.errors import BadRowError, PermanentError, StagingMissing
from etl_tasks.metrics import ROWS
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import renew
from etl_tasks.steps.common import elapsed_ms, hand_on, may_chain, run_step
from etl_tasks.values.path import ValuePath

STEP = STEPS["transform"]
NEXT = step_after(STEP.name)
RENEW_CHECK_ROWS = 64  # rows between two looks at the lease clock (a slow plugin is slow)


def transform(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, STEP.name, lambda c: transform_claimed(rt, c))


def transform_claimed(rt: Runtime, c: Claim) -> None:
    started = time.monotonic()
    if c.stage_token is None:
        raise StagingMissing()
    binding = rt.binding(c.migration_id, c.stream)
    path = rt.value_path(c.migration_id, c.stream)
    input_kind, output_kind = STEP.input_stage, STEP.output_stage
    blob = None
    out, kept, rows = None, None, c.rows_in or 0
    if rt.native_copy(c.migration_id, c.stream):  # COPY text: only its columns are renamed
        input_kind, output_kind = native_stage(input_kind), native_stage(output_kind)
        blob = rt.staging.get(c.chunk_id, c.stage_token, input_kind)
        out = None if blob is None else staged_native.renamed(blob, path.target_columns)
    if blob is None:  # rows: a stream that is not pass-through, or a chunk read as rows
        input_kind, output_kind = STEP.input_stage, STEP.output_stage
        blob = rt.staging.get(c.chunk_id, c.stage_token, input_kind)
        if blob is None:
            raise StagingMissing()
        if path.passes_through:  # the spec asks nothing of these values: no row is decoded
            out = codec.pass_through(blob, path.target_columns, binding.key_width)
        if out is None:
            staged = rt.staging.held_rows(c.chunk_id, c.stage_token, input_kind)
            staged = staged or codec.decode_rows(blob)
            relabelled = _relabelled(rt, blob, staged, path, binding.key_width)
            if relabelled is not None:
                out, kept, rows = relabelled
            else:
                out, kept, rows = _mapped(rt, c, staged, path, binding.key_width)
    assert out is not None
    rt.staging.put(c.chunk_id, c.token, output_kind, out, kept, held_only=may_chain(rt))
    if hand_on(rt, c, NEXT.name, stage_token=c.token, attempts=0, **timed(c, elapsed_ms(started))):
        ROWS.labels("transformed").inc(rows)
        rt.staging.delete(c.chunk_id, c.stage_token, input_kind)


def relabelling_only(
    rt: Runtime, c: Claim, blob: bytes, staged: codec.Staged | None
) -> tuple[bytes, codec.Staged | None] | None:
    """What this step would stage for the rows the extract has just read, when all it
    would do is put them under the target's column names (an identity mapping whose every
    value its cast keeps, none refused and no key NULL): the blob, and the rows to hold
    for the load. The extract stages that itself and hands the chunk straight on to the
    load, a step and a state-DB commit fewer. ``None``: the chunk needs this step
    (``staged`` None: its rows unknown)."""
    if staged is None:
        return None
    path = rt.value_path(c.migration_id, c.stream)
    key_width = rt.binding(c.migration_id, c.stream).key_width
    relabelled = _relabelled(rt, blob, staged, path, key_width)
    return None if relabelled is None else relabelled[:2]


def relabelled_native(rt: Runtime, c: Claim, native: Native) -> tuple[str, bytes]:
    """A pass-through chunk staged as this step would leave it, for the extract to stage
    instead (:func:`relabelling_only`): its bytes under the target's column names."""
    columns = rt.value_path(c.migration_id, c.stream).target_columns
    return native_stage(STEP.output_stage), staged_native.encode(columns, native)


def _relabelled(
    rt: Runtime, blob: bytes, staged: codec.Staged, path: ValuePath, key_width: int
) -> tuple[bytes, codec.Staged | None, int] | None:
    """An identity mapping whose every value would come out of its cast as it went in
    (plain ints in range, text that fits: the common legacy table): the extract's payload
    under the target's column names (:func:`codec.pass_through_kept`) instead of the rows
    mapped and encoded again. ``None`` when a value would change, a key is NULL or the
    source refused a row: :func:`_mapped` then does what the spec asks."""
    _, rows, _ = staged
    if not path.mapper.identity or (rows and not _unchanged(path, rows)):
        return None
    found = codec.pass_through_kept(blob, path.target_columns, key_width)
    if found is None:
        return None
    out, columns, extra = found
    return out, ((columns, rows, extra) if may_chain(rt) else None), len(rows)


def _unchanged(path: ValuePath, rows: list[tuple[Any, ...]]) -> bool:
    """Whether each column's cast would give back the very values it is given (told from
    their exact types, without casting any)."""
    if not any(path.column_casts):
        return True
    data = list(zip(*rows, strict=True))
    return all(
        cast is None or cast.keeps(values)
        for values, cast in zip(data, path.column_casts, strict=True)
    )


def _mapped(
    rt: Runtime, c: Claim, staged: codec.Staged, path: ValuePath, key_width: int
) -> tuple[bytes, codec.Staged | None, int]:
    """The staged rows through the stream's value path, the refused ones set aside (and
    those the source itself refused, by position, with its reason): the blob to stage,
    what the load would decode from it (kept when it may run on this thread), and how
    many rows mapped."""
    columns, rows, extra = staged
    malformed = {int(pos): str(why) for pos, why in extra.get("malformed", [])}
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)

    def keep_lease() -> None:
        if clock.renewal_due():  # a slow transform must not lose the chunk to another worker
            renew(rt, c)

    mapped = map_rows(path, columns, rows, key_width, keep_lease, malformed)
    if mapped.bad and rt.spec(c.migration_id).on_bad_row == "fail":
        first = mapped.bad[0][1]
        raise PermanentError(f"bad row {first.key}: {first.reason}")
    columns_out, extra = (
        path.target_columns,
        {
            "quarantine": [[q.key, q.reason, q.row, pos] for pos, q in mapped.bad],
            "positions": mapped.positions,
            "source_keys": mapped.source_keys,
        },
    )
    if may_chain(rt):
        return *codec.encode_rows_kept(columns_out, mapped.good, **extra), len(mapped.good)
    return codec.encode_rows(columns_out, mapped.good, **extra), None, len(mapped.good)


@dataclass
class Mapped:
    """Transform's output: target rows with where they came from, and the refused rows."""

    good: list[tuple[Any, ...]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # of each good row in the extract
    source_keys: list[Any] = field(default_factory=list)  # of each good row, encoded
    bad: list[tuple[int, QuarantineEntry]] = field(default_factory=list)


def map_rows(
    path: ValuePath,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    key_width: int,
    between: Callable[[], None] = lambda: None,
    malformed: dict[int, str] | None = None,
) -> Mapped:
    """Target rows for the rows that map, quarantine entries for those that do not.

    Positions and source keys let the load stop between sub-batches and cut the
    chunk at a key the source returned. ``malformed`` holds the rows the source itself
    refused, by position, with its reason: they are quarantined as they are.
    """
    if path.mapper.identity and not malformed:
        by_column = _map_columns(path, rows, key_width, between)
        if by_column is not None:
            return by_column
    refused = malformed or {}
    out = Mapped()
    map_row = path.convert
    null_keys = _NullKeys()
    keys: list[tuple[Any, ...]] = []
    for pos, row in enumerate(rows):
        if not pos % RENEW_CHECK_ROWS:
            between()
        try:
            if pos in refused:
                raise BadRowError(refused[pos])
            if None in row[:key_width]:
                raise BadRowError("its key is NULL (on_null_key: quarantine)")
            out.good.append(map_row(row))
        except BadRowError as exc:
            key = null_keys.key(row) if None in row[:key_width] else list(row[:key_width])
            record = {c: codec.encode_value(v) for c, v in zip(columns, row, strict=True)}
            out.bad.append((pos, QuarantineEntry(codec.quarantine_key(key), str(exc), record)))
            continue
        out.positions.append(pos)
        keys.append(row[:key_width])
    out.source_keys = codec.encode_keys(keys)
    return out


def _map_columns(
    path: ValuePath, rows: list[tuple[Any, ...]], key_width: int, between: Callable[[], None]
) -> Mapped | None:
    """An identity mapping's rows (each target column a copy of the source column at its
    place), cast column by column: no per-row work but building the target rows. None
    when a key is NULL or a cast refuses a value: :func:`map_rows` then goes row by row
    and sets those rows aside. Casts are pure, so casting a value again gives the same."""
    if not rows:
        return Mapped()
    data = list(zip(*rows, strict=True))
    if any(None in col for col in data[:key_width]):
        return None
    cast_columns: list[Sequence[Any]] = []
    for values, cast in zip(data, path.column_casts, strict=True):
        between()
        try:
            cast_columns.append(values if cast is None else cast(values))
        except BadRowError:
            return None
    return Mapped(
        good=list(zip(*cast_columns, strict=True)),
        positions=list(range(len(rows))),
        source_keys=codec.encode_keys(_keys(data, key_width, len(rows))),
    )


def _keys(data: list[tuple[Any, ...]], key_width: int, n: int) -> list[tuple[Any, ...]]:
    """Each row's source key (its first ``key_width`` values), from the columns."""
    return list(zip(*data[:key_width], strict=True)) if key_width else [()] * n


class _NullKeys:
    """A quarantine key for rows whose key is NULL: their content's digest, with a count for
    identical rows, so each is recorded once however often the chunk is re-read."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def key(self, row: tuple[Any, ...]) -> list[Any]:
        digest = hashlib.sha256(codec.dumps(list(row)).encode()).hexdigest()[:16]
        self._seen[digest] = self._seen.get(digest, 0) + 1
        return [None, f"{digest}:{self._seen[digest]}"]
