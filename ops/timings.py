"""Shrunk timings for harnesses (the test suite, the fault suite).

Leases, sweeps and backoffs in seconds rather than minutes, so a lost step is
taken over quickly and nobody waits on real-time defaults.
"""

from __future__ import annotations

from typing import Any

FAST_TIMINGS: dict[str, Any] = {
    "lease_s": 4.0,
    "visibility_timeout_s": 30,
    "sweep_interval_s": 0.5,
    "requeue_after_s": 6.0,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1.0,
    "worker_heartbeat_s": 0.5,
    "staging_ttl_s": 600,
}
