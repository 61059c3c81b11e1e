"""Faults a test injects into steps run in this process.

A worker killed between its target commit and its state-DB update, staged rows
lost (a staging Redis restart, or the TTL during a long pause), leases that
expire without anyone sleeping, a load cut at its deadline, and a worker that
stalls with its rows in hand and comes back late.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

from sqlalchemy import update

from etl_tasks.budget import StepClock
from etl_tasks.chunk_lease import Claim
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Chunk
from etl_tasks.steps import load as load_module


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the step's own error handling."""


def _die(*_args: Any, **_kwargs: Any) -> None:
    raise WorkerKilled()


@contextlib.contextmanager
def killed_after_target_commit() -> Iterator[None]:
    """Loads run inside commit their chunk in the target, then their worker dies before
    the state DB hears of it."""
    with mock.patch.object(load_module, "finish", _die):
        yield


@contextlib.contextmanager
def loads_out_of_time() -> Iterator[None]:
    """Loads run inside find their step budget spent after their first sub-batch, so
    they cut their chunk there (extracts are not affected)."""

    def spent(budget_s: float, lease_s: float) -> StepClock:
        return StepClock(1e-9, lease_s)

    with mock.patch.object(load_module, "StepClock", spent):
        yield


def lose_staging(rt: Runtime, chunk_id: int | None = None) -> int:
    """Delete the staged rows of one chunk (or of every chunk); return how many keys went."""
    which = "*" if chunk_id is None else str(chunk_id)
    client = rt.staging._redis
    keys = list(client.scan_iter(match=f"{rt.settings.key_prefix}stage:{which}:*"))
    if keys:
        client.delete(*keys)
    return len(keys)


def expire_leases(db: StateDB, chunk_id: int | None = None) -> None:
    """Every held lease (or one chunk's) expires now, and no backoff holds a chunk back."""
    with db.session() as s:
        past = db.now(s) - timedelta(days=1)
        stmt = update(Chunk).where(Chunk.lease_expires_at.is_not(None))
        if chunk_id is not None:
            stmt = stmt.where(Chunk.id == chunk_id)
        s.execute(stmt.values(lease_expires_at=past))
        clear = update(Chunk).where(Chunk.not_before.is_not(None))
        if chunk_id is not None:
            clear = clear.where(Chunk.id == chunk_id)
        s.execute(clear.values(not_before=None))


class SnapshotStaging:
    """What a stalled worker holds: the staged rows it read before it stalled.

    It reads those from memory whatever happened to the staging store since; any
    other read, and every write and delete, goes to the real store, as a worker
    that wakes up does.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._held: dict[tuple[int, int, str], bytes] = {}

    def hold(self, c: Claim) -> None:
        """Read now what the step of ``c`` will need, as it would right after its claim."""
        if c.stage_token is None:
            return
        for kind in ("extracted", "transformed"):
            blob = self._store.get(c.chunk_id, c.stage_token, kind)
            if blob is not None:
                self._held[(c.chunk_id, c.stage_token, kind)] = blob

    def get(self, chunk_id: int, token: int, kind: str) -> bytes | None:
        held = self._held.get((chunk_id, token, kind))
        return held if held is not None else self._store.get(chunk_id, token, kind)

    def put(
        self, chunk_id: int, token: int, kind: str, blob: bytes, rows: Any = None, **kw: Any
    ) -> None:
        self._store.put(chunk_id, token, kind, blob, rows, **kw)

    def write_held(self) -> None:
        self._store.write_held()

    @property
    def client(self) -> Any:
        """The store's Redis client (an advance asked for, a flag read): the real one."""
        return self._store.client

    def held_rows(self, chunk_id: int, token: int, kind: str) -> Any:
        """None for what was read at the claim: the step decodes that snapshot."""
        if (chunk_id, token, kind) in self._held:
            return None
        return self._store.held_rows(chunk_id, token, kind)

    def delete(self, chunk_id: int, token: int, kind: str) -> None:
        self._store.delete(chunk_id, token, kind)

    def drop_held(self) -> None:
        self._store.drop_held()

    def close(self) -> None:
        self._store.close()
