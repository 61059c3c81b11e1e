"""Each worker's own HTTP probe: "may this instance shut down?", asked of that one instance.

A worker in warm shutdown stops answering Celery's remote control
(celery#8417), so deploy tooling asks this probe instead. It is a tiny
stdlib server on a daemon thread; a probe that cannot bind never stops the
worker. ``GET`` answers are open (counts only; ``/metrics``: the worker's Prometheus
counters); ``POST /drain`` needs the probe token (``worker/probe_auth.py``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from etl_tasks.metrics import exposition
from worker.probe_auth import drain_refusal

log = logging.getLogger(__name__)


Counts = Callable[[], tuple[int, int, int]]  # (in flight, reserved, steps done)


def _no_counts() -> tuple[int, int, int]:
    return 0, 0, 0


class ProbeState:
    """What the probe reports. Counts come from Celery's own bookkeeping in the main
    process (right for every pool); the drain flag is set by handlers that only set flags."""

    def __init__(self, counts: Counts = _no_counts) -> None:
        self._lock = threading.Lock()
        self._counts = counts
        # Shared memory, made before the pool forks: prefork children see the flag too.
        self._draining = multiprocessing.RawValue(ctypes.c_bool, False)
        self.ready = False
        self.on_drain: Callable[[], None] | None = None
        # GET /metrics: this worker's counters (its pool children's too, in prefork).
        self.metrics: Callable[[], tuple[bytes, str]] = exposition

    @property
    def draining(self) -> bool:
        return bool(self._draining.value)

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining.value = value

    def snapshot(self) -> dict[str, Any]:
        in_flight, reserved, done = self._counts()
        return {
            "draining": self.draining,
            "in_flight": in_flight,
            "reserved": reserved,
            "may_shut_down": self.draining and in_flight == 0,
            "steps_done": done,
        }

    def drain(self) -> None:
        with self._lock:
            first = not self.draining
            self.draining = True
        if first and self.on_drain is not None:
            self.on_drain()


# Sent with every answer: nothing here may be cached (a stale "may_shut_down" would
# let a deploy stop a busy worker) or sniffed as anything but JSON.
ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
SERVER_NAME = "baton-probe"  # no Python or Baton version in the Server header
CHALLENGE = 'Bearer realm="baton-worker"'  # with a 401, as RFC 6750 asks


class ProbeHandler(BaseHTTPRequestHandler):
    """The probe's answers; :func:`start_probe` binds ``state`` and ``token`` in a subclass."""

    state: ProbeState
    token: str | None = None
    server_version = SERVER_NAME
    sys_version = ""

    def version_string(self) -> str:
        return SERVER_NAME

    def log_message(self, format: str, *args: Any) -> None:
        return

    def end_headers(self) -> None:
        # Also reaches the stdlib's own error answers (a malformed request, 501).
        for name, value in ANSWER_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def _reply(
        self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reply_text(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._reply_text(*self.state.metrics())
            return
        snap = self.state.snapshot()
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif self.path == "/readyz":
            ok = self.state.ready and not snap["draining"]
            self._reply(200 if ok else 503, {"ready": ok, **snap})
        elif self.path == "/drain":
            self._reply(200, snap)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/drain":
            self._reply(404, {"error": "not found"})
            return
        refusal = drain_refusal(self.token, self.headers.get("Authorization"))
        if refusal is not None:
            log.warning(
                "probe refused POST /drain from %s (%d)", self.client_address[0], refusal.status
            )
            challenge = {"WWW-Authenticate": CHALLENGE} if refusal.status == 401 else None
            self._reply(refusal.status, {"error": refusal.error}, challenge)
            return
        self.state.drain()
        self._reply(202, self.state.snapshot())


def start_probe(
    state: ProbeState, host: str, port: int, token: str | None = None
) -> ThreadingHTTPServer | None:
    """Serve the probe on a daemon thread; ``None`` (and a warning) if it cannot bind.

    ``token`` is what ``POST /drain`` must send as a bearer token; without one, every
    drain request is refused (403).
    """
    try:
        handler = type("BoundProbeHandler", (ProbeHandler,), {"state": state, "token": token})
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        log.warning("worker probe could not bind %s:%s: %s", host, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="baton-probe", daemon=True).start()
    return server
