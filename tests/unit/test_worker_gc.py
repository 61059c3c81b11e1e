"""A worker collects garbage rarely and never walks what it built at start.

Checked in a process of its own (the settings and the collector are process-wide): the
worker's own ``worker_init`` handler, as Celery sends it before the pool forks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import ROOT

SCRIPT = textwrap.dedent(
    """
    import gc
    from celery import signals
    import worker
    before = gc.get_threshold()[0]
    signals.worker_init.send(sender=None)
    print(before, gc.get_threshold()[0], gc.get_freeze_count() > 0)
    """
)


def _worker_init(tmp_path: Path, threshold: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env |= {"PYTHONPATH": str(ROOT), "BATON_METRICS_DIR": str(tmp_path)}
    if threshold is not None:
        env["BATON_WORKER_GC_THRESHOLD"] = threshold
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.mark.parametrize(("setting", "expected"), [(None, "50000"), ("12345", "12345")])
def test_a_worker_raises_the_young_generations_threshold_and_freezes_its_start(
    tmp_path: Path, setting: str | None, expected: str
) -> None:
    before, after, frozen = _worker_init(tmp_path, setting)
    assert before == "700"
    assert (after, frozen) == (expected, "True")


def test_zero_keeps_pythons_collector_as_it_is(tmp_path: Path) -> None:
    assert _worker_init(tmp_path, "0") == ["700", "700", "False"]
