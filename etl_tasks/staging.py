"""The staging store: rows waiting between two steps, in Redis, with a TTL.

Keys carry the chunk id and the fencing token of the step that wrote them,
so a stale step's late write can never be mistaken for the current input.
When the staging Redis loses its data, the next step finds its input missing
and the target ledger decides: a chunk whose load committed is finished from its
ledger record, any other goes back to extract. Rows are never lost, only re-read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis

from etl_tasks.codec import Staged
from etl_tasks.constants import STAGE_KEY
from etl_tasks.errors import TransientError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    """A blob this thread staged, and whether it is in Redis too."""

    blob: bytes
    rows: Staged | None
    written: bool


class StagingStore:
    """Staged rows in Redis. Each thread also holds what it staged for its task's next
    steps until the task ends (:meth:`drop_held`): a worker that runs the chunk's next
    step itself reads it back from memory, not from Redis. Beside the blob it may hold
    the rows themselves, as decoding the blob would give them
    (:func:`etl_tasks.codec.encode_rows_kept`): that step then decodes nothing.

    A blob staged for a step this thread means to run next (``held_only``) stays in
    memory alone: it reaches Redis (:meth:`write_held`) only when that step will run
    elsewhere or later (the worker drains, the step waits or fails, the task ends
    first). A worker killed in between loses it, as a staging Redis that restarts
    would: the next step finds its input missing and the target ledger decides."""

    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self._prefix = prefix
        self._ttl = ttl_s
        self._held = threading.local()  # .entries: this thread's, by key (see _entries)

    @property
    def client(self) -> redis.Redis:
        """The Redis client, for what else lives beside staged rows (connection slots)."""
        return self._redis

    def _key(self, chunk_id: int, token: int, kind: str) -> str:
        return self._prefix + STAGE_KEY.format(chunk_id=chunk_id, token=token, kind=kind)

    def _entries(self) -> dict[str, _Held]:
        """What this thread holds: the last blob it staged, and any held only in memory
        (at most a step's input and its output)."""
        entries: dict[str, _Held] | None = getattr(self._held, "entries", None)
        if entries is None:
            entries = self._held.entries = {}
        return entries

    def put(
        self,
        chunk_id: int,
        token: int,
        kind: str,
        blob: bytes,
        rows: Staged | None = None,
        *,
        held_only: bool = False,
    ) -> None:
        """Stage ``blob``; ``rows``: what decoding it gives, held with it on this thread;
        ``held_only``: in memory until :meth:`write_held` (the next step is meant to run
        on this thread)."""
        key = self._key(chunk_id, token, kind)
        entries = self._entries()
        for written in [k for k, h in entries.items() if h.written]:
            del entries[written]  # in Redis: read from there if it is wanted again
        if not held_only:
            self._write(key, blob)
        entries[key] = _Held(blob, rows, written=not held_only)

    def write_held(self) -> None:
        """Put in Redis what this thread holds in memory alone: the step it feeds will run
        on another worker, or later."""
        for key, held in self._entries().items():
            if not held.written:
                self._write(key, held.blob)
                held.written = True

    def _write(self, key: str, blob: bytes) -> None:
        try:
            self._redis.set(key, blob, ex=self._ttl)
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc

    def get(self, chunk_id: int, token: int, kind: str) -> bytes | None:
        key = self._key(chunk_id, token, kind)
        held = self._entries().get(key)
        if held is not None:
            return held.blob
        try:
            value: Any = self._redis.get(key)
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc
        return value if isinstance(value, bytes) else None

    def held_rows(self, chunk_id: int, token: int, kind: str) -> Staged | None:
        """The rows of the blob this thread staged under this key, if it kept them: its
        own task's (:meth:`drop_held`), never another chunk's, token's or kind's."""
        held = self._entries().get(self._key(chunk_id, token, kind))
        return None if held is None else held.rows

    def delete(self, chunk_id: int, token: int, kind: str) -> None:
        """Best effort: the TTL removes what a failed delete leaves."""
        key = self._key(chunk_id, token, kind)
        held = self._entries().pop(key, None)
        if held is not None and not held.written:
            return  # it never left this thread
        try:
            self._redis.delete(key)
        except redis.RedisError:
            pass

    def drop_held(self) -> None:
        """This thread's task has ended: what it staged is read from Redis from now on (a
        blob still held alone is written there first, best effort)."""
        try:
            self.write_held()
        except TransientError as exc:
            log.warning("a staged blob stayed in memory: %s", exc)
        self._entries().clear()

    def forget(self, chunk_ids: Collection[int]) -> int:
        """Delete whatever is staged for these chunks, under any token (retention); return
        how many keys went. One scan of this prefix's staged keys, deleted in batches."""
        wanted = {str(i) for i in chunk_ids}
        start = len(self._prefix) + STAGE_KEY.index("{chunk_id}")
        pattern = self._prefix + STAGE_KEY.format(chunk_id="*", token="*", kind="*")
        doomed: list[bytes] = []
        try:
            for key in self._redis.scan_iter(match=pattern, count=1000):
                if key[start:].split(b":", 1)[0].decode() in wanted:
                    doomed.append(key)
            for i in range(0, len(doomed), 500):
                self._redis.delete(*doomed[i : i + 500])
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc
        return len(doomed)

    def close(self) -> None:
        self._redis.close()
