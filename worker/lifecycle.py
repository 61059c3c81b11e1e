"""Worker lifecycle: runtime, registration, heartbeat, sweeper, probe, drain, metrics' folder,
shutdown summary.

Signal handlers only set flags; the work happens on one background thread
(heartbeat + sweeper) and in Celery's own loop. On SIGTERM Celery does a warm
shutdown: it stops consuming, finishes the steps in hand and returns the
messages it had prefetched to the queue. ``POST /drain`` on the probe does
the first half without exiting: stop consuming, finish what is in hand. A drain
asked for through the API (``workers.drain_requested_at``, read with each
heartbeat) does both: drain, then SIGTERM itself once nothing is in flight. Only
the probe's HTTP path needs ``BATON_PROBE_TOKEN``; the signal path needs none.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from celery import Celery, signals
from celery.worker import state as celery_state

from etl_tasks import __version__
from etl_tasks.gate import install_gate
from etl_tasks.logs import configure_logging
from etl_tasks.metrics import process_exited, remove_multiprocess_dir, use_multiprocess_dir
from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from etl_tasks.state.enums import WorkerState
from etl_tasks.sweeper import sweep
from etl_tasks.tasks import install_runtime, runtime
from etl_tasks.workers import WorkerInfo, heartbeat, mark_stopped
from worker.celery_app import CeleryPublisher
from worker.probe import ProbeState, start_probe
from worker.probe_auth import token_problem

log = logging.getLogger("worker")


def tune_gc(threshold: int) -> None:
    """Collect Python's youngest generation every ``threshold`` allocations (0: Python's
    default), with what the worker built at start frozen out of every collection.

    A step allocates a tuple per row several times over; at Python's 700 the collector ran
    dozens of times per chunk and each older-generation pass walked every live object, so a
    SQLite chunk of 5,000 rows cost 86 ms of worker CPU, half of it the collector's. Freezing
    before the pool forks also keeps prefork children from touching (copying) those pages.
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)


def celery_counts() -> tuple[int, int, int]:
    """(steps in flight, messages held but not started, steps done), from Celery's state."""
    active = len(celery_state.active_requests)
    reserved = max(0, len(celery_state.reserved_requests) - active)
    return active, reserved, sum(celery_state.total_count.values())


class Lifecycle:
    """One worker process's life, wired to Celery's signals by :func:`attach`."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.probe = ProbeState(celery_counts)
        self.probe.on_drain = self._stop_consuming
        self.name = f"baton-{os.getpid()}@{socket.gethostname()}"
        self.info: WorkerInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registered = False
        self._leaving = False  # drained on request through the API: exit once idle

    def on_init(self, sender: Any = None, **_: Any) -> None:
        # Before the pool forks and before any step: every process of this worker counts
        # into one folder of files, which the probe's GET /metrics sums (any pool).
        use_multiprocess_dir(self.settings.metrics_dir, "worker")
        tune_gc(self.settings.worker_gc_threshold)
        self.name = getattr(sender, "hostname", None) or self.name
        install_runtime(lambda: Runtime(self.settings, CeleryPublisher(self.app), self.name))
        install_gate(lambda: not self.probe.draining)

    def on_ready(self, **_: Any) -> None:
        token = self.settings.probe_token
        server = start_probe(
            self.probe, self.settings.worker_http_host, self.settings.worker_http_port, token
        )
        if server is not None and (problem := token_problem(token)) is not None:
            log.warning("%s; SIGTERM still drains the worker", problem)
        probe_url = None
        if server is not None:
            host, port = server.server_address[:2]
            probe_url = f"http://{self._advertised(str(host))}:{port}"
        self.info = WorkerInfo(self.name, __version__, socket.gethostname(), os.getpid(), probe_url)
        self.probe.ready = True
        self._thread = threading.Thread(target=self._background, name="baton-sweeper", daemon=True)
        self._thread.start()
        log.info("worker %s ready (probe %s, version %s)", self.name, probe_url, __version__)

    @staticmethod
    def _advertised(host: str) -> str:
        return socket.gethostname() if host in ("0.0.0.0", "::") else host

    def on_shutting_down(self, **_: Any) -> None:
        """SIGTERM arrived: report draining at once (readiness goes 503)."""
        self.probe.draining = True

    def on_shutdown(self, **_: Any) -> None:
        self._stop.set()
        snap = self.probe.snapshot()
        try:
            mark_stopped(runtime().db, self.name, snap["steps_done"])
        except Exception as exc:  # the state DB may be the thing that is down
            log.warning("could not mark worker stopped: %s", exc)
        log.info(
            "worker %s stopped: steps done=%d, in flight=%d, handed back=%d",
            self.name,
            snap["steps_done"],
            snap["in_flight"],
            snap["reserved"],
        )
        remove_multiprocess_dir()

    @staticmethod
    def on_process_shutdown(**_: Any) -> None:
        """A prefork child is leaving: its counts stay in the sum, its live gauges go."""
        process_exited(os.getpid())

    def _stop_consuming(self) -> None:
        """Drain: stop taking steps; the ones in hand finish, held messages go back."""
        log.info("worker %s draining: no new steps", self.name)
        for queue in self.app.conf.task_queues or []:
            try:
                self.app.control.cancel_consumer(queue.name, destination=[self.name])
            except Exception as exc:
                log.warning("could not cancel consumer %s: %s", queue.name, exc)

    def _background(self) -> None:
        """Heartbeat every few seconds; sweep every ``sweep_interval_s`` (not while draining)."""
        next_sweep = 0.0
        tick = min(self.settings.worker_heartbeat_s, self.settings.sweep_interval_s)
        while not self._stop.is_set():
            self._beat()
            if self._leaving and self.probe.snapshot()["may_shut_down"]:
                log.info("worker %s drained on request: warm shutdown", self.name)
                os.kill(os.getpid(), signal.SIGTERM)  # as a deploy would: Celery's warm shutdown
                return
            if time.monotonic() >= next_sweep and not self.probe.draining:
                try:
                    sweep(runtime())
                except Exception:
                    log.exception("sweeper pass failed")
                next_sweep = time.monotonic() + self.settings.sweep_interval_s
            self._stop.wait(min(tick, 0.2) if self._leaving else tick)

    def _beat(self) -> None:
        if self.info is None:
            return
        snap = self.probe.snapshot()
        state = WorkerState.DRAINING if snap["draining"] else WorkerState.ACTIVE
        try:
            requested = heartbeat(
                runtime().db,
                self.info,
                state=state,
                in_flight=snap["in_flight"],
                steps_done=snap["steps_done"],
                first=not self._registered,
            )
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        self._registered = True
        if requested and not self._leaving:
            # `baton drain` through the API: drain as POST /drain does, then leave
            log.info("worker %s: drain requested through the API", self.name)
            self._leaving = True
            self.probe.drain()


def attach(app: Celery, settings: Settings) -> Lifecycle:
    life = Lifecycle(app, settings)
    # Connecting setup_logging tells Celery to leave logging to us: Baton's formatter
    # (structured extras, JSON on request) on the root logger.
    signals.setup_logging.connect(lambda **_: configure_logging(settings), weak=False)
    signals.worker_init.connect(life.on_init, weak=False)
    signals.worker_ready.connect(life.on_ready, weak=False)
    signals.worker_shutting_down.connect(life.on_shutting_down, weak=False)
    signals.worker_shutdown.connect(life.on_shutdown, weak=False)
    signals.worker_process_shutdown.connect(life.on_process_shutdown, weak=False)
    return life
