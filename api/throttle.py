"""Failed authentications, counted per client address in Redis, shared by every API process.

A fixed window: the first failure from an address starts it, and once more than
``BATON_AUTH_FAILURES_MAX`` failures fall in it, the address is answered 429 until
it ends. Keys live in the staging Redis under ``{BATON_KEY_PREFIX}auth-fail:``
and expire with their window. When Redis cannot be reached the throttle steps
aside (a warning is logged): callers get the 401 they would have had anyway.
"""

from __future__ import annotations

import logging
import math

import redis

from etl_tasks.settings import Settings

log = logging.getLogger(__name__)

KEY_SEGMENT = "auth-fail:"  # after BATON_KEY_PREFIX, before the client address

# Count one failure and return (failures in the window, milliseconds left in it). The
# expiry is set with the first failure only, so more failures never stretch the window;
# a key that somehow lost its expiry gets one again.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {n, redis.call('PTTL', KEYS[1])}
"""


class AuthThrottle:
    """Counts failed authentications per client address; says when to answer 429."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.key_prefix + KEY_SEGMENT
        self.limit = settings.auth_failures_max
        self.window_ms = settings.auth_failures_window_s * 1000
        client = redis.Redis.from_url(
            settings.effective_staging_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._count = client.register_script(_COUNT)

    def failed(self, address: str) -> int | None:
        """Count a failure from ``address``: the seconds it must wait, once over the limit."""
        try:
            count, left_ms = self._count(keys=[self.prefix + address], args=[self.window_ms])
        except redis.RedisError as exc:
            log.warning("cannot count a failed authentication from %s: %s", address, exc)
            return None
        if int(count) <= self.limit:
            return None
        return max(1, math.ceil(int(left_ms) / 1000))
