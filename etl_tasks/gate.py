"""Whether this process may start a step: closed while its worker drains or shuts down.

The worker installs the test (its probe's draining flag, which SIGTERM and a drain
request both set); the task shims ask it before every message, and a step that would
run the chunk's next step itself (:func:`etl_tasks.steps.common.hand_on`) asks it
before going on, so a draining worker always stops after the step in hand.
"""

from __future__ import annotations

from collections.abc import Callable


def _always_open() -> bool:
    return True


_gate: Callable[[], bool] = _always_open


def install_gate(gate: Callable[[], bool]) -> None:
    """Tell this process how to know whether it may start a step."""
    global _gate
    _gate = gate


def may_start_step() -> bool:
    return _gate()
