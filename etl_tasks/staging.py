"""The staging store: rows waiting between two steps, in Redis, with a TTL.

Keys carry the chunk id and the fencing token of the step that wrote them,
so a stale step's late write can never be mistaken for the current input.
When the staging Redis loses its data, the next step finds its input missing
and the target ledger decides: a chunk whose load committed is finished from its
ledger record, any other goes back to extract. Rows are never lost, only re-read.
"""

from __future__ import annotations

from typing import Any

import redis

from etl_tasks.constants import STAGE_KEY
from etl_tasks.errors import TransientError


class StagingStore:
    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self._prefix = prefix
        self._ttl = ttl_s

    @property
    def client(self) -> redis.Redis:
        """The Redis client, for what else lives beside staged rows (connection slots)."""
        return self._redis

    def _key(self, chunk_id: int, token: int, kind: str) -> str:
        return self._prefix + STAGE_KEY.format(chunk_id=chunk_id, token=token, kind=kind)

    def put(self, chunk_id: int, token: int, kind: str, blob: bytes) -> None:
        try:
            self._redis.set(self._key(chunk_id, token, kind), blob, ex=self._ttl)
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc

    def get(self, chunk_id: int, token: int, kind: str) -> bytes | None:
        try:
            value: Any = self._redis.get(self._key(chunk_id, token, kind))
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc
        return value if isinstance(value, bytes) else None

    def delete(self, chunk_id: int, token: int, kind: str) -> None:
        """Best effort: the TTL removes what a failed delete leaves."""
        try:
            self._redis.delete(self._key(chunk_id, token, kind))
        except redis.RedisError:
            pass

    def close(self) -> None:
        self._redis.close()
