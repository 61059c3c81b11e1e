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

import socket
from http import HTTPStatus
from typing import Any

import orjson
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http import wsgi

from api.headers import SECURITY_HEADERS


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
    harden()
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
        },
    ).run()
