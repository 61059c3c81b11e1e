"""At most ``BATON_PREFLIGHT_CONCURRENCY`` preflights per API process.

A preflight talks to databases a spec names, which may hang until the
preflight deadline. Bounding how many run at once keeps request threads free
for everything else (health checks, status reads): beyond the bound a submit
is answered 429 with ``Retry-After`` instead of waiting.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

from werkzeug.exceptions import TooManyRequests


class PreflightGate:
    def __init__(self, slots: int, deadline_s: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._retry_after = max(1, math.ceil(deadline_s))

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests(
                "too many specs are being checked at once; try again shortly",
                retry_after=self._retry_after,
            )
        try:
            yield
        finally:
            self._slots.release()
