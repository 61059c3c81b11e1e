"""Baton's Prometheus counters and histograms: defined here once, incremented by the engine.

The engine increments them where each event happens, and only once the state DB
holds it (after the commit: a step whose transaction rolled back counts nothing).
Each worker's probe serves them (``GET /metrics``); the API serves its own request
counters and its cached state-DB gauges beside them (``api/metrics.py``).

No label names a migration, a stream or a chunk: the series stay few however
many migrations run. Every instrument has labels, so a process that never
counts an event (the API, for the steps') shows no sample for it rather than a 0.

Every worker (whatever its pool: prefork children count too) and the API under
gunicorn keep their counts in files, one per process, in a folder of their own
(:func:`use_multiprocess_dir`); a scrape sums them (prometheus_client's
multi-process mode). Elsewhere (steps driven in a test's process, the API's
development server) the counts live in the process's default registry.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # what prometheus_client reads

#: Rows through each stage: ``extracted`` (read from the source and staged),
#: ``transformed`` (mapped, ready to load), ``loaded`` (committed in the target and
#: recorded), ``quarantined`` (set aside with their reason).
ROWS = Counter("baton_rows", "Rows through each stage of the pipeline", ["stage"])
#: How long each claimed step took, whatever its outcome (but ``waiting``: it did nothing).
STEP_SECONDS = Histogram(
    "baton_step_seconds",
    "Duration of each step a worker claimed",
    ["step"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
)
#: Steps by how they ended: ``done``, ``from_ledger``, ``restaged``, ``retry``
#: (transient error), ``failed`` (permanent error), ``error`` (crash), ``lease_lost``,
#: ``skipped`` (the message had nothing to do: a duplicate or a stale one), ``waiting``
#: (every connection slot of the system it reaches was taken: it waits, uncounted).
STEP_OUTCOMES = Counter(
    "baton_steps", "Step messages handled, by step and outcome", ["step", "outcome"]
)
#: Transient failures that put a chunk back to wait for its ``not_before``.
STEP_RETRIES = Counter(
    "baton_step_retries", "Steps scheduled to retry after a transient error", ["step"]
)
#: Leases taken over after they expired (their holder died or stalled): ``chunk``, ``range``.
LEASE_EXPIRIES = Counter(
    "baton_lease_expiries", "Expired leases taken over by a new claim", ["kind"]
)
#: What the sweeper re-published, by why: ``lease_expired``, ``retry_due``,
#: ``lost_message``, ``broker_lost``, ``verification_range``.
SWEEPER_REPAIRS = Counter(
    "baton_sweeper_repairs", "Messages the sweeper re-published, by reason", ["kind"]
)


def multiprocess_dir() -> Path | None:
    """The folder this process keeps its counts in, when it is in multi-process mode."""
    path = os.environ.get(MULTIPROC_ENV)
    return Path(path) if path and values.ValueClass is not values.MutexValue else None


def use_multiprocess_dir(base: str | None, role: str) -> Path | None:
    """Count in files from now on, in ``<base>/baton-metrics-<role>-<pid>`` (``base`` unset:
    the system's temporary folder); return that folder, or ``None`` (and a warning) when
    it cannot be made: metrics never stop a process, which then counts in memory.

    Call it in the process that forks, before it forks and before anything is counted
    (a worker at ``worker_init``, the API before gunicorn starts): children inherit the
    choice. The folder is emptied first: a process restarted under the same pid (PID 1
    in a container) must not add its predecessor's counts to its own.
    """
    root = Path(base) if base else Path(tempfile.gettempdir())
    path = root / f"baton-metrics-{role}-{os.getpid()}"
    try:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        log.warning("metrics kept in memory: cannot make %s: %s", path, exc)
        return None
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client chooses its value class when it is first imported, long before
    # this; every instrument here has labels, so no value exists before the first event,
    # and each one made from now on (in this process or a child) is kept in a file.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def remove_multiprocess_dir() -> None:
    """At exit, from the process that made the folder: nothing keeps its files."""
    path = multiprocess_dir()
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def process_exited(pid: int) -> None:
    """A child that counted has exited: its counters stay summed, its live gauges go."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def exposition(*extra: Collector) -> tuple[bytes, str]:
    """Every count of this process (with its children's, in multi-process mode) and what
    the ``extra`` collectors say, in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
