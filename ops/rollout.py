"""Draining one worker, and rolling a fleet of workers, for deploy pipelines.

Drain, in three timed phases:
1. stop consuming: ``POST /drain`` on the worker's own probe, with the probe
   token (Celery's ``cancel_consumer`` to that one node if the probe cannot be
   reached or refuses the token; the report then carries a warning);
2. finish in flight: poll the probe's ``GET /drain`` (open: no token) or,
   without a probe, the worker's heartbeat, until nothing is in flight. A worker in warm
   shutdown no longer answers remote control (celery#8417), so the probe
   and the state DB, not ``celery inspect``, answer "may it shut down?";
3. warm shutdown: SIGTERM when the worker runs on this host, else Celery's
   ``shutdown`` to that node (it still answers: it is draining, not stopping);
   then wait until it has left.

With ``BATON_API_URL`` set, :class:`ApiFleet` does the same through the API
instead, from any machine and with only an operator token: ``POST
/api/v1/workers/{name}/drain`` records the request in the state DB, the
worker's own heartbeat picks it up, drains, and shuts itself down warm once
nothing is in flight. The API does not call the worker's probe: probes listen
on loopback by default (``BATON_WORKER_HTTP_HOST``) and, in a cluster, on pod
addresses the API may not reach, while every worker reaches the state DB.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from etl_tasks.constants import QUEUES_IN_PRIORITY_ORDER
from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from etl_tasks.workers import list_workers
from ops.client import ApiClient
from ops.probe import ProbeClient, ProbeRefused


@dataclass
class DrainReport:
    worker: str
    ok: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    in_flight_at_start: int | None = None
    via: str = "probe"
    error: str | None = None
    warning: str | None = None  # why the probe was not used, when it answered

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Fleet:
    """The workers as the state DB knows them, and a way to reach each one."""

    def __init__(self, settings: Settings, db: StateDB | None = None) -> None:
        self.settings = settings
        self.db = db or StateDB(settings.database_url)

    def probe(self, worker: dict[str, Any]) -> ProbeClient | None:
        """The worker's probe, asked with this fleet's probe token; ``None`` if it has none."""
        url = worker.get("probe_url")
        return ProbeClient(str(url), self.settings.probe_token) if url else None

    def live(self) -> dict[str, dict[str, Any]]:
        return {str(w["name"]): w for w in list_workers(self.db)}

    def drain(self, name: str, timeout_s: float) -> DrainReport:
        return drain_worker(self, name, timeout_s)

    def control(self, action: Callable[[Any], None]) -> None:
        from worker.celery_app import create_celery

        app = create_celery(self.settings)
        try:
            action(app.control)
        finally:
            app.close()


class ApiFleet:
    """The workers as the API knows them; a drain is a request their heartbeats pick up."""

    def __init__(self, client: ApiClient, poll_s: float = 0.2) -> None:
        self.client = client
        self.poll_s = poll_s

    def live(self) -> dict[str, dict[str, Any]]:
        return {str(w["name"]): w for w in self.client.get("/api/v1/workers")["items"]}

    def drain(self, name: str, timeout_s: float) -> DrainReport:
        """Ask the API to drain ``name``, then follow its row: draining, idle, gone."""
        report = DrainReport(name, via="api")
        worker = self.live().get(name)
        if worker is None:
            report.error = f"no live worker named {name!r}"
            return report
        report.in_flight_at_start = int(worker["in_flight"])
        started = time.monotonic()
        # A refusal (403: not an operator) ends the command with the API's exit code
        self.client.post(f"/api/v1/workers/{quote(name, safe='@')}/drain")

        def reached(phase: Callable[[dict[str, Any] | None], bool]) -> bool:
            return phase(self.live().get(name))

        phases: list[tuple[str, Callable[[dict[str, Any] | None], bool]]] = [
            ("stop_consuming_s", lambda w: w is None or w["state"] == "draining"),
            ("finish_in_flight_s", lambda w: w is None or int(w["in_flight"]) == 0),
            ("shutdown_s", lambda w: w is None),
        ]
        for key, phase in phases:
            if not _wait(partial(reached, phase), timeout_s, self.poll_s):
                report.error = (
                    f"{key.removesuffix('_s').replace('_', ' ')}: not within {timeout_s:.0f} s"
                )
                return report
            report.phases[key] = round(time.monotonic() - started, 3)
        report.ok = True
        return report


def _wait(predicate: Callable[[], bool], timeout_s: float, poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


def drain_worker(
    fleet: Fleet, name: str, timeout_s: float = 60, poll_s: float = 0.1
) -> DrainReport:
    """Stop one worker taking steps, wait for its steps in flight, then warm-shut it down."""
    report = DrainReport(name)
    worker = fleet.live().get(name)
    if worker is None:
        report.error = f"no live worker named {name!r}"
        return report
    started = time.monotonic()
    probe = fleet.probe(worker)
    first = _stop_consuming(fleet, name, probe, report)
    report.in_flight_at_start = int(first["in_flight"]) if first else int(worker["in_flight"])
    report.phases["stop_consuming_s"] = round(time.monotonic() - started, 3)
    settle_until = time.monotonic() + 2 * fleet.settings.worker_heartbeat_s
    if not _wait(lambda: _idle(fleet, name, probe, settle_until), timeout_s, poll_s):
        report.error = f"still busy after {timeout_s:.0f} s"
        return report
    report.phases["finish_in_flight_s"] = round(time.monotonic() - started, 3)
    _shut_down(fleet, worker)
    if not _wait(lambda: name not in fleet.live(), timeout_s, poll_s):
        report.error = f"did not leave within {timeout_s:.0f} s"
        return report
    report.phases["shutdown_s"] = round(time.monotonic() - started, 3)
    report.ok = True
    return report


def _stop_consuming(
    fleet: Fleet, name: str, probe: ProbeClient | None, report: DrainReport
) -> dict[str, Any] | None:
    """``POST /drain`` with the token; else cancel the node's consumers by remote control."""
    first = None
    if probe is not None:
        try:
            first = probe.start_drain()
        except ProbeRefused as exc:
            hint = (
                "BATON_PROBE_TOKEN is not set here"
                if probe.token is None
                else "check that BATON_PROBE_TOKEN here is the worker's"
            )
            report.warning = f"{exc}; {hint}. Stopped it through Celery's remote control instead"
    if first is None:
        report.via = "remote control"
        fleet.control(lambda c: _cancel_all(c, name))
    return first


def _cancel_all(control: Any, name: str) -> None:
    for queue in QUEUES_IN_PRIORITY_ORDER:
        control.cancel_consumer(queue, destination=[name])


def _idle(fleet: Fleet, name: str, probe: ProbeClient | None, settle_until: float) -> bool:
    """Nothing in flight: by the probe, else by heartbeats sent after the drain began.

    A worker drained by remote control (its probe refused the token) is not marked
    draining, so it never says ``may_shut_down``: its probe's count of steps in flight
    counts once the cancel has had time to land."""
    settled = time.monotonic() >= settle_until
    answer = probe.status() if probe is not None else None
    if answer is not None:
        return bool(answer.get("may_shut_down")) or (
            settled and int(answer.get("in_flight", 1)) == 0
        )
    worker = fleet.live().get(name)
    if worker is None:
        return True
    return settled and worker["in_flight"] == 0


def _shut_down(fleet: Fleet, worker: dict[str, Any]) -> None:
    pid = int(worker["pid"])
    if worker["host"] == socket.gethostname() and _alive(pid):
        os.kill(pid, signal.SIGTERM)  # Celery's warm shutdown
        return
    fleet.control(lambda c: c.shutdown(destination=[str(worker["name"])]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@dataclass
class RolloutReport:
    ok: bool = False
    started: list[str] = field(default_factory=list)
    drained: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout(
    fleet: Fleet | ApiFleet, start: str, count: int, log_dir: Path, timeout_s: float = 120
) -> RolloutReport:
    """Start ``count`` workers from a command template, wait until ready, drain the old ones."""
    report = RolloutReport()
    began = time.monotonic()
    old = set(fleet.live())
    log_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        command = start.format(n=n)
        with open(log_dir / f"rollout-{n}.log", "ab") as out:
            subprocess.Popen(
                shlex.split(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def new_ready() -> bool:
        fresh = [n for n, w in fleet.live().items() if n not in old and w["state"] == "active"]
        report.started = sorted(fresh)
        return len(fresh) >= count

    if not _wait(new_ready, timeout_s, 0.2):
        report.error = f"only {len(report.started)} of {count} new workers became ready"
        return report
    report.phases["new_ready_s"] = round(time.monotonic() - began, 3)
    for name in sorted(old):
        drained = fleet.drain(name, timeout_s)
        report.drained.append(drained.as_dict())
        if not drained.ok and name in fleet.live():
            report.error = f"{name}: {drained.error}"
            return report
    report.phases["total_s"] = round(time.monotonic() - began, 3)
    report.ok = True
    return report
