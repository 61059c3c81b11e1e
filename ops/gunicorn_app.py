"""Serving the Flask app with gunicorn, configured in code.

Two things gunicorn does on its own are changed, because the API promises them
on every answer: gunicorn names itself in a ``Server`` header, and it answers a
request it cannot parse (a header too large, a bad request line) with an HTML
page before the app sees it. Gunicorn has no setting for either (the header:
benoitc/gunicorn#825), so :func:`harden` swaps the two module-level pieces that
write them, once, before the workers are forked: the response class whose
default headers drop ``Server``, and the error writer, which answers JSON with
the API's security headers.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from typing import Any

import orjson
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http import wsgi

from api.headers import SECURITY_HEADERS
from etl_tasks.metrics import process_exited, remove_multiprocess_dir, use_multiprocess_dir

log = logging.getLogger(__name__)


class _App(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


class _Response(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, without the ``Server`` header it adds to every answer."""

    def default_headers(self) -> list[str]:
        headers: list[str] = super().default_headers()
        return [h for h in headers if not h.lower().startswith("server:")]


def _json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn answers a request it refuses itself: JSON, like every API error."""
    body = orjson.dumps({"error": mesg or reason or HTTPStatus(status_int).phrase})
    head = [
        f"HTTP/1.1 {status_int} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def harden() -> None:
    """No ``Server`` header, and JSON for gunicorn's own refusals (see the module's doc)."""
    wsgi.Response = _Response
    util.write_error = _json_error


def serve(app: Any, bind: str, workers: int) -> None:
    """The API under gunicorn; with ``BATON_LIVE=on`` the live process beside it."""
    harden()
    settings = app.extensions["baton"].settings
    sidecar = LiveSidecar(app, bind) if settings.live == "on" else None
    if sidecar is not None:
        sidecar.start()
    # Before gunicorn forks: its workers count requests into one folder, summed by /metrics.
    use_multiprocess_dir(settings.metrics_dir, "api")
    owner = os.getpid()
    try:
        _serve_api(app, bind, workers)
    finally:
        if sidecar is not None:
            sidecar.stop()
        if os.getpid() == owner:  # a forked worker leaving through here keeps the folder
            remove_multiprocess_dir()


def _child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's hook: a worker exited; its counts stay summed, its live gauges go."""
    process_exited(worker.pid)


def _serve_api(app: Any, bind: str, workers: int) -> None:
    _App(
        app,
        {
            "bind": bind,
            "workers": workers,
            "worker_class": "gthread",
            "threads": 4,
            "graceful_timeout": 20,
            "timeout": 60,
            "accesslog": "-",
            "child_exit": _child_exit,
        },
    ).run()


def serve_live(app: Any, bind: str, max_streams: int) -> None:
    """The live process (``baton sse``): one gunicorn process, so one poller, and a thread
    per open stream."""
    harden()
    _App(
        app,
        {
            "bind": bind,
            "workers": 1,
            "worker_class": "gthread",
            "threads": max_streams + 8,
            "worker_connections": max_streams + 64,
            "graceful_timeout": 1,  # open streams are cut; the browsers reconnect
            "timeout": 60,
        },
    ).run()


class LiveSidecar:
    """``baton sse`` beside ``baton api``: started before gunicorn, stopped after it.

    It signs nothing and holds no state: it only needs the API's session key (so the
    pages' session cookie opens its streams) and the API's settings. If it dies the
    API goes on, the pages stop moving, and a thread of the API's master process starts
    it again (after 1 s, doubling up to :data:`RESTART_MAX_S` while it keeps dying within a
    minute); the browsers reconnect by themselves.
    """

    RESTART_MAX_S = 30.0

    def __init__(self, app: Any, bind: str) -> None:
        settings = app.extensions["baton"].settings
        host, _, port = bind.rpartition(":")
        self.port = settings.live_port or int(port) + 1
        app.config["BATON_LIVE_PORT"] = self.port
        env = {**os.environ, "BATON_SESSION_KEY": app.secret_key}
        self.argv = [
            sys.executable,
            "-m",
            "ops.cli",
            "sse",
            "--host",
            host,
            "--port",
            str(self.port),
        ]
        self.env = env
        self.proc: Any = None
        self.owner = 0
        self.restarts = 0
        self._stopping = threading.Event()

    def start(self) -> None:
        self.owner = os.getpid()
        self.proc = subprocess.Popen(self.argv, env=self.env)
        threading.Thread(target=self._supervise, name="live-sidecar", daemon=True).start()

    def _supervise(self) -> None:
        """Start the live process again whenever it exits while the API runs."""
        delay = 0.5
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, self.RESTART_MAX_S)
            log.warning("the live process exited (%s); starting it again in %.0f s", code, delay)
            if self._stopping.wait(delay):
                return
            self.proc = subprocess.Popen(self.argv, env=self.env)
            self.restarts += 1

    def stop(self) -> None:
        """Stop it, from the process that started it: gunicorn's forked workers leave
        through the same ``finally`` when they exit, and must leave it running."""
        if self.proc is None or os.getpid() != self.owner:
            return
        self._stopping.set()
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
