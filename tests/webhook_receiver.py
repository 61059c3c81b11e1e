"""A real webhook receiver for the notification tests: a Werkzeug server in a thread.

It records every request (headers and body), answers from a queue of statuses
(``503`` comes with ``Retry-After``), then 200, and checks each signature the
way the operators' guide tells receivers to (docs/operations.md#notifications).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Delivery:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    status: int
    signed_ok: bool

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    secret: str | None = None
    retry_after_s: int = 1
    answers: deque[int] = field(default_factory=deque)
    received: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Receiver:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/hooks/baton"

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.received if 200 <= d.status < 300]

    def _verified(self, request: Request, body: bytes) -> bool:
        if self.secret is None:
            return "X-Baton-Signature" not in request.headers
        stamp = request.headers.get("X-Baton-Timestamp", "")
        mac = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
        expected = "sha256=" + mac.hexdigest()
        return hmac.compare_digest(expected, request.headers.get("X-Baton-Signature", ""))

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            status = self.answers.popleft() if self.answers else 200
            signed_ok = self._verified(request, body)
            if not signed_ok:
                status = 401
            self.received.append(Delivery(dict(request.headers), body, status, signed_ok))
        headers = {"Retry-After": str(self.retry_after_s)} if status == 503 else {}
        return Response(b"{}", status, headers, mimetype="application/json")(
            environ, start_response
        )
