"""A real HTTP API that takes rows, for the HTTP target's tests and the chaos harness: a
Werkzeug server in a thread.

It behaves like a careful cloud API: it wants a bearer token (unless ``token`` is
None), refuses more
than ``max_rows`` rows in one request (413), takes each ``Idempotency-Key``
once (a repeated key is answered as the first time, and stores nothing), and
refuses a request holding a row ``refuse`` objects to (422: naming the rows,
or not, as ``name_rows`` says). Faults are injected per request from a queue:
``"429"``, ``"503"`` (both with ``Retry-After``), ``"500"``, ``"slow"``
(an answer after ``slow_s``), ``"drop"`` (the connection closed before
anything is stored) and ``"drop-after"`` (the rows stored, then the connection
closed: the client never learns it); ``"shrink:N"`` makes it take at most N rows a
request from that one on (an API whose limit dropped). :meth:`HttpApi.outage` stops listening
for a while and starts again on the same port (:meth:`HttpApi.go_down` until
:meth:`HttpApi.start`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

TOKEN = "test-token-not-a-secret"
Refuse = Callable[[dict[str, Any]], str | None]


@dataclass
class Received:
    """One request as the API saw it."""

    table: str
    key: str | None
    rows: int
    status: int  # 0: the connection was dropped
    at: float = field(default_factory=time.monotonic)


@dataclass
class HttpApi:
    token: str | None = TOKEN
    max_rows: int = 100
    rows_field: str | None = "rows"
    refuse: Refuse | None = None
    # The tables it has, each with its NOT NULL columns (a row with NULL there is refused);
    # None: any table
    tables: dict[str, list[str]] | None = None
    name_rows: bool = True
    slow_s: float = 1.0
    delay_s: float = 0.0  # every POST answers this late
    retry_after_s: int = 1
    faults: deque[str] = field(default_factory=deque)
    stored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    options: int = 0
    hosts: set[str] = field(default_factory=set)  # the Host headers requests came with
    down: bool = False  # an outage: even a connection kept alive from before is dropped
    _answers: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None
    port: int = 0
    address: str = "127.0.0.1"  # any loopback address: another "host" on this machine

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HttpApi:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.down = False
        self._server = make_server(self.address, self.port, self._app, threaded=True)
        # Stopping must not wait for the connections clients keep alive
        self._server.block_on_close = False  # type: ignore[attr-defined]
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stopping waits for one poll
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def go_down(self) -> None:
        """Stop listening (connections are refused) until :meth:`start`."""
        self.down = True
        self.stop()

    def outage(self, seconds: float) -> threading.Thread:
        """Stop listening now (connections are refused), listen again after ``seconds``."""
        self.go_down()

        def back() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        return thread

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/v1/{{table}}/import"

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.stored.get(table, []))

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.received]

    # -- the API -----------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request, environ)
        return response(environ, start_response)

    def _answer(self, request: Request, environ: dict[str, Any]) -> Response:
        if self.down:
            return self._drop(environ, "", None)
        with self._lock:
            self.hosts.add(request.host)
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "v1" or parts[2] != "import":
            return _json(404, {"error": "no such endpoint"})
        refusal = self._refuse_request(request)
        if refusal is not None:
            return refusal
        if self.tables is not None and parts[1] not in self.tables:
            return _json(404, {"error": f"no table {parts[1]}"})
        return self._post(request, environ, parts[1])

    def _refuse_request(self, request: Request) -> Response | None:
        """The answers before any row is looked at: credentials, OPTIONS, the method."""
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return _json(401, {"error": "missing or wrong bearer token"})
        if request.method == "OPTIONS":
            with self._lock:
                self.options += 1
            return Response(status=204, headers={"Allow": "POST, OPTIONS"})
        if request.method != "POST":
            return _json(405, {"error": "method not allowed"})
        return None

    def _post(self, request: Request, environ: dict[str, Any], table: str) -> Response:
        key = request.headers.get("Idempotency-Key")
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
        if fault == "drop":
            return self._drop(environ, table, key)
        if fault is not None and fault.startswith("shrink:"):
            self.max_rows = int(fault.removeprefix("shrink:"))
        if fault in ("429", "503", "500"):
            return self._record(table, key, 0, _busy(int(fault), self.retry_after_s))
        if fault == "slow":
            time.sleep(self.slow_s)
        if self.delay_s:
            time.sleep(self.delay_s)
        response = self._take(table, key, request.get_data())
        if fault == "drop-after":
            return self._drop(environ, table, key)
        return response

    def _take(self, table: str, key: str | None, data: bytes) -> Response:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._record(table, key, 0, _json(400, {"error": "not JSON"}))
        rows = doc.get(self.rows_field) if self.rows_field and isinstance(doc, dict) else doc
        if not isinstance(rows, list):
            return self._record(table, key, 0, _json(400, {"error": "no rows array"}))
        with self._lock:
            again = self._answers.get(key) if key is not None else None
        if again is not None:  # the same request again: the same answer, nothing stored
            return self._record(table, key, len(rows), _raw(200, again))
        if len(rows) > self.max_rows:
            too_many = {"error": f"at most {self.max_rows} rows per request"}
            return self._record(table, key, len(rows), _json(413, too_many))
        refused = {i: why for i, row in enumerate(rows) if (why := self._refused(table, row))}
        if refused:
            body: dict[str, Any]
            if self.name_rows:
                errors = [{"index": i, "message": why} for i, why in refused.items()]
                body = {"error": "some rows are invalid", "errors": errors}
            else:
                body = {"error": "a row is invalid: " + next(iter(refused.values()))}
            return self._record(table, key, len(rows), _json(422, body))
        answer = orjson.dumps({"accepted": len(rows)})
        with self._lock:
            again = self._answers.get(key) if key is not None else None
            if again is None:
                self.stored.setdefault(table, []).extend(rows)
                if key is not None:
                    self._answers[key] = answer
        return self._record(table, key, len(rows), _raw(200, again or answer))

    def _refused(self, table: str, row: Any) -> str | None:
        if not isinstance(row, dict):
            return "a row must be an object"
        for column in (self.tables or {}).get(table, []):
            if row.get(column) is None:
                return f"{column} may not be null"
        return self.refuse(row) if self.refuse is not None else None

    def _record(self, table: str, key: str | None, rows: int, response: Response) -> Response:
        with self._lock:
            self.received.append(Received(table, key, rows, response.status_code))
        return response

    def _drop(self, environ: dict[str, Any], table: str, key: str | None) -> Response:
        """Close the connection without an answer (the client sees it dropped)."""
        with self._lock:
            self.received.append(Received(table, key, 0, 0))
        sock = environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return Response(b"", status=200)


def _json(status: int, body: Any) -> Response:
    return _raw(status, orjson.dumps(body))


def _raw(status: int, body: bytes) -> Response:
    return Response(body, status=status, content_type="application/json")


def _busy(status: int, retry_after_s: int) -> Response:
    response = _json(status, {"error": "busy, come back later"})
    if status in (429, 503):
        response.headers["Retry-After"] = str(retry_after_s)
    return response


@contextmanager
def running_api(**options: Any) -> Iterator[HttpApi]:
    api = HttpApi(**options).start()
    try:
        yield api
    finally:
        api.stop()
