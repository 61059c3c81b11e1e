"""Connection slots: at most ``max_connections`` steps at once on one source or target system.

A *system* is a database server and database (host, port, database name; a SQLite
file), an HTTP API's origin, or a folder of files: every migration that reaches the
same one shares its slots, whatever URL, credentials or worker it uses, so ten
migrations from one legacy server never open a hundred connections to it.

Slots live in Redis (the staging store), one sorted set per system: a holder is
``migration|holder`` scored by its lease's expiry, so a killed worker's slot comes
back when its lease runs out (a step renews it with the chunk's lease). Steps that
find every slot taken put their chunk on the system's waiting list and give the
chunk back (:func:`etl_tasks.chunk_lease.wait_for_slot`); the step that frees a slot
wakes one of them. Migrations share a system fairly: while others wait, a migration
holding its share (the limit divided by the migrations that use the system) gets
no more, and a freed slot wakes the waiter of the migration holding the fewest.

Both scripts run atomically in Redis, so two workers never take the last slot together.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import redis

from etl_tasks.endpoints import FileEndpoint, HttpEndpoint
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime

log = logging.getLogger(__name__)

End = Literal["source", "target"]

#: A woken chunk stays on the waiting list until it comes (so the migrations already
#: holding slots still leave it its share); after this long it may be woken again.
WOKEN_MS = 5_000
#: A waiting list's entries older than this are dropped: their chunk's own fallback
#: (``not_before``, then the sweeper) brings it back anyway (milliseconds).
STALE_WAIT_MS = 60_000

#: The server's clock in milliseconds: every worker's expiries are on the same clock.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ACQUIRE = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local mig = ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[7]))
local held = redis.call('ZRANGE', KEYS[1], 0, -1)
local migs, users, mine, others = {}, 0, 0, false
local function uses(m)
  if not migs[m] then migs[m] = true; users = users + 1 end
end
for _, h in ipairs(held) do
  local m = string.match(h, '^([^|]*)|')
  uses(m)
  if m == mig then mine = mine + 1 end
end
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local m = string.match(w, '^([^|]*)|')
  if m ~= mig then others = true end
  uses(m)
end
uses(mig)
local share = math.ceil(limit / users)
redis.call('ZREM', KEYS[3], ARGV[6])
if #held >= limit or (others and mine >= share) then
  redis.call('ZADD', KEYS[2], 'NX', now, ARGV[6])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[7]))
  return {0, #held}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREM', KEYS[2], ARGV[6])
return {1, #held + 1}
"""
)

_RELEASE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local counts = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local m = string.match(h, '^([^|]*)|')
  counts[m] = (counts[m] or 0) + 1
end
local best, fewest = false, nil
for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not redis.call('ZSCORE', KEYS[3], w) then
    local n = counts[string.match(w, '^([^|]*)|')] or 0
    if fewest == nil or n < fewest then best, fewest = w, n end
  end
end
if best then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), best)
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[2]))
end
return best
"""
)

_RENEW = (
    _NOW
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""
)


@dataclass(frozen=True)
class System:
    """A source or target system: ``label`` is readable (no credentials), ``limit`` its slots."""

    label: str
    limit: int

    @functools.cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.label.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Slot:
    """A slot a step holds on a system until it releases it (or its lease runs out)."""

    system: System
    member: str


@dataclass(frozen=True)
class Waiter:
    """A chunk waiting for a slot, and the step it waits to run."""

    migration_id: str
    step: str
    chunk_id: int

    def member(self) -> str:
        return f"{self.migration_id}|{self.step}|{self.chunk_id}"

    @classmethod
    def parse(cls, member: str) -> Waiter:
        migration_id, step, chunk_id = member.split("|")
        return cls(migration_id, step, int(chunk_id))


@dataclass(frozen=True)
class Busy:
    """Every slot the step may take is in use: it waits."""

    system: System
    in_use: int

    @property
    def reason(self) -> str:
        return (
            f"waiting for a connection slot on {self.system.label} "
            f"({self.in_use} of {self.system.limit} in use; BATON_MAX_CONNECTIONS)"
        )


def holder_of(worker: str, chunk_id: int, token: int) -> str:
    """Who holds a slot: the worker, and the chunk and fencing token of its step."""
    return f"{worker}:{chunk_id}:{token}"


def limit_for(settings: Settings, label: str) -> int:
    """``BATON_MAX_CONNECTIONS``, unless a ``BATON_SYSTEM_MAX_CONNECTIONS`` pattern (a glob
    over the system's label, first match wins) gives the system its own."""
    for item in (settings.system_max_connections or "").split(","):
        pattern, _, value = item.strip().rpartition("=")
        if pattern and fnmatch.fnmatchcase(label, pattern):
            return int(value)
    return settings.max_connections


def system_of(rt: Runtime, migration_id: str, end: End) -> System | None:
    """The system a migration's source or target reaches; ``None`` for a kind without one
    (an in-process memory database)."""
    spec = rt.spec(migration_id)
    endpoint = spec.source if end == "source" else spec.target
    label: str | None
    if isinstance(endpoint, HttpEndpoint):
        parts = urlsplit(endpoint.http.url)
        label = f"{parts.scheme}://{parts.hostname}:{parts.port or _default_port(parts.scheme)}"
    elif isinstance(endpoint, FileEndpoint):
        label = f"file:{Path(endpoint.file.path).resolve()}"
    elif endpoint.kind == "sql":
        checked = rt.endpoint(migration_id, end)
        if checked.sqlite_path is not None:
            label = f"sqlite:{checked.sqlite_path}"
        else:
            url = checked.url
            label = f"{checked.backend}://{url.host}:{url.port or ''}/{url.database or ''}"
    else:
        label = None
    return None if label is None else System(label, limit_for(rt.settings, label))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class SystemSlots:
    """The slots of every system, in one Redis, under Baton's key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, lease_s: float) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_ms = int(lease_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._lock = threading.Lock()
        self._held: dict[str, Slot] = {}  # this process's slots, by holder

    def _keys(self, system: System) -> list[str]:
        base = f"{self._prefix}slots:{system.digest}"
        return [f"{base}:held", f"{base}:wait", f"{base}:woken"]

    def acquire(self, system: System, holder: str, waiter: Waiter) -> Slot | Busy:
        """A slot on ``system`` for ``holder``, or :class:`Busy` (the waiter is then listed)."""
        member = f"{waiter.migration_id}|{holder}"
        args: list[Any] = [
            0,  # unused: the script reads the server's clock
            self._ttl_ms,
            system.limit,
            waiter.migration_id,
            member,
            waiter.member(),
            STALE_WAIT_MS,
        ]
        try:
            taken, in_use = self._acquire(keys=self._keys(system), args=args)
        except redis.RedisError as exc:
            raise TransientError(f"staging store unavailable: {exc}") from exc
        if not taken:
            return Busy(system, int(in_use))
        slot = Slot(system, member)
        with self._lock:
            self._held[holder] = slot
        return slot

    def renew(self, holder: str) -> None:
        """Push the holder's slot a lease ahead, with its chunk's lease (best effort: a slot
        that expires under a live step only lets one more step in for a while)."""
        with self._lock:
            slot = self._held.get(holder)
        if slot is None:
            return
        try:
            self._renew(
                keys=self._keys(slot.system)[:1],
                args=[slot.member, self._ttl_ms],
            )
        except redis.RedisError as exc:
            log.warning("could not renew a connection slot: %s", exc)

    def held(self, holder: str) -> Slot | None:
        """The slot ``holder`` holds in this process, if any."""
        with self._lock:
            return self._held.get(holder)

    def release(self, slot: Slot) -> Waiter | None:
        """Give the slot back; returns the waiting chunk to wake, if any. A slot given back
        already (a step that freed it once its work on the system was done) is left be."""
        with self._lock:
            kept = {h: held for h, held in self._held.items() if held != slot}
            if len(kept) == len(self._held):
                return None
            self._held = kept
        return self._free(slot.system, slot.member)

    def wake_next(self, system: System) -> Waiter | None:
        """Another waiting chunk to wake for a slot freed just now, when the one
        :meth:`release` named no longer waited (it came back by other means): each is
        named once, so asking again ends."""
        return self._free(system, "")

    def _free(self, system: System, member: str) -> Waiter | None:
        """Remove ``member`` from the holders (none: ``""``) and name the waiter to wake."""
        try:
            woken = self._release(keys=self._keys(system), args=[member, WOKEN_MS])
        except redis.RedisError as exc:
            log.warning("could not release a connection slot (its lease frees it): %s", exc)
            return None
        if not woken:
            return None
        return Waiter.parse(woken.decode() if isinstance(woken, bytes) else str(woken))

    def was_woken(self, system: System, waiter: Waiter) -> bool:
        """Whether a freed slot named ``waiter`` since it was listed (:meth:`acquire`):
        it may have done so before the chunk was given back, when there was nothing to
        send yet (best effort: False when Redis does not answer)."""
        try:
            return self._redis.zscore(self._keys(system)[2], waiter.member()) is not None
        except redis.RedisError:
            return False

    def holders(self, system: System) -> list[str]:
        """Who holds the system's slots now (for tests and diagnostics)."""
        seconds, micros = self._redis.time()
        now_ms = seconds * 1000 + micros // 1000
        raw = self._redis.zrangebyscore(self._keys(system)[0], now_ms, "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
