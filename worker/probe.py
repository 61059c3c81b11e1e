"""Each worker's own HTTP probe: "may this instance shut down?", asked of that one instance.

A worker in warm shutdown stops answering Celery's remote control
(celery#8417), so deploy tooling asks this probe instead. It is a tiny
stdlib server on a daemon thread; a probe that cannot bind never stops the
worker.
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


def _handler(state: ProbeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            snap = state.snapshot()
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            elif self.path == "/readyz":
                ok = state.ready and not snap["draining"]
                self._reply(200 if ok else 503, {"ready": ok, **snap})
            elif self.path == "/drain":
                self._reply(200, snap)
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/drain":
                self._reply(404, {"error": "not found"})
                return
            state.drain()
            self._reply(202, state.snapshot())

    return Handler


def start_probe(state: ProbeState, host: str, port: int) -> ThreadingHTTPServer | None:
    """Serve the probe on a daemon thread; ``None`` (and a warning) if it cannot bind."""
    try:
        server = ThreadingHTTPServer((host, port), _handler(state))
    except OSError as exc:
        log.warning("worker probe could not bind %s:%s: %s", host, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="baton-probe", daemon=True).start()
    return server
