"""A deadline shared by everything one request does (preflight as a whole, say)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        """Seconds left, never below a small floor (a driver needs a positive timeout)."""
        return max(0.05, self.seconds - (time.monotonic() - self.started))

    def expired(self) -> bool:
        return time.monotonic() - self.started >= self.seconds
