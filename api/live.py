"""The dashboard's live updates: server-sent events from a process of their own.

An open page holds a connection for minutes; served by the API's request
threads, a few dozen pages would hold them all and the API would stop
answering. So the events come from this small app, run by ``baton sse`` (and
by ``baton api``, beside gunicorn, on the next port): a page's stream costs a
thread here and nothing in the API.

One poller thread reads the state DB (:func:`etl_tasks.dashboard_views.live_snapshot`,
one statement) every ``BATON_LIVE_POLL_S`` while anyone listens, renders what
changed once, and wakes every stream: the state DB sees one query per poll
whatever the number of pages. Each event's id is ``EPOCH-SEQ``; a browser that
reconnects sends it back as ``Last-Event-ID`` and gets only what changed after
it (everything, when it was another process's). A stream ends after
``BATON_LIVE_STREAM_S``; the browser then reconnects, and its session is checked
again.

Events: ``m-<migration id>`` (the HTML of its progress), ``workers`` (the rows of
the workers table), ``migrations`` (the set of migrations or their states changed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request, session
from flask.typing import ResponseReturnValue
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import event

from api.dashboard.session import configure_sessions
from api.headers import add_security_headers
from etl_tasks.dashboard_views import Snapshot, live_snapshot
from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream


@dataclass
class _Event:
    seq: int
    data: str


class Broadcaster:
    """One poller for every stream of this process."""

    def __init__(
        self,
        fetch: Callable[[], Snapshot],
        render: Callable[[str, dict[str, Any]], str],
        poll_s: float = 1.0,
    ) -> None:
        self._fetch = fetch
        self._render = render
        self.poll_s = poll_s
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.polls = 0
        self.snapshot: Snapshot | None = None
        self._events: dict[str, _Event] = {}
        self._cond = threading.Condition()
        self._listeners = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def listeners(self) -> int:
        return self._listeners

    def _ensure_thread(self) -> None:
        """Start the poller unless it runs: one per process, however many streams open at once."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                name = f"live-poller-{self.epoch}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                # Nobody listens: no query at all.
                self._cond.wait_for(lambda: self._listeners > 0 or self._stopping)
                if self._stopping:
                    return
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # the state DB is away: try again next poll
                log.warning("live: reading the state DB failed", exc_info=True)
            time.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))

    def poll_once(self) -> None:
        """Read one snapshot and publish what changed in it."""
        snap = self._fetch()
        self.polls += 1
        fresh: dict[str, str] = {}
        for mid, view in snap.migrations.items():
            fresh[f"m-{mid}"] = self._render("_progress.html", {"p": view})
        fresh["workers"] = self._render("_workers_rows.html", {"workers": snap.workers})
        listing = sorted(f"{mid}:{v['state']}" for mid, v in snap.migrations.items())
        fresh["migrations"] = hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]
        with self._cond:
            seq = self.seq + 1
            changed = False
            for name, data in fresh.items():
                old = self._events.get(name)
                if old is None or old.data != data:
                    self._events[name] = _Event(seq, data)
                    changed = True
            for name in [n for n in self._events if n not in fresh]:
                del self._events[name]  # gone from the snapshot: finished long ago
            if self.snapshot is not None and snap.live_tokens != self.snapshot.live_tokens:
                changed = True  # wake every stream: a revoked token's end now
            self.snapshot = snap
            if changed:
                self.seq = seq
            self._cond.notify_all()

    def _news_after(self, since: int) -> bool:
        return (self.seq > since and self.snapshot is not None) or self._stopping

    def _since(self, last_event_id: str | None) -> int:
        """The sequence number a reconnecting browser has seen; 0: nothing of this process."""
        epoch, _, seq = (last_event_id or "").partition("-")
        if epoch != self.epoch or not seq.isdigit():
            return 0
        return min(int(seq), self.seq)

    def stream(
        self,
        last_event_id: str | None,
        lifetime_s: float,
        still_allowed: Callable[[Snapshot], bool] = lambda _: True,
    ) -> Iterator[str]:
        """A stream's text: what changed since ``last_event_id``, then each change, until
        ``lifetime_s`` has passed or the session is no longer allowed."""
        with self._cond:
            self._listeners += 1
            self._cond.notify_all()
        self._ensure_thread()
        try:
            yield "retry: 2000\n\n"
            since = self._since(last_event_id)
            deadline = time.monotonic() + lifetime_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with self._cond:
                    ready = self._cond.wait_for(
                        partial(self._news_after, since), timeout=min(left, KEEPALIVE_S)
                    )
                    if self._stopping:
                        return
                    snap = self.snapshot
                    pending = (
                        [(n, e.data) for n, e in self._events.items() if e.seq > since]
                        if ready
                        else []
                    )
                    since = self.seq
                if snap is not None and not still_allowed(snap):
                    yield "event: signed-out\ndata: \n\n"
                    return
                if not pending:
                    yield ": keep-alive\n\n"
                    continue
                for name, data in pending:
                    yield _frame(f"{self.epoch}-{since}", name, data)
        finally:
            with self._cond:
                self._listeners -= 1


def _frame(event_id: str, name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {event_id}\nevent: {name}\n{lines}\n"


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("api.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
    )
    env.globals["url_for"] = _no_url_for
    return env


def _no_url_for(*_: Any, **__: Any) -> str:
    raise RuntimeError("live fragments link nowhere")


class QueryCounter:
    """Queries this process sent to the state DB (``GET /stats``); the ``BEGIN`` that
    opens a SQLite transaction is not one."""

    def __init__(self, db: StateDB) -> None:
        self.count = 0
        event.listen(db.engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            self.count += 1


def create_live_app(settings: Settings) -> Flask:
    """The live process's app: ``GET /events`` (the stream) and ``GET /stats``."""
    app = Flask(__name__)
    configure_sessions(app, settings)
    db = StateDB(settings.database_url, pool_size=1)
    counter = QueryCounter(db)
    templates = _templates()
    broadcaster = Broadcaster(
        lambda: live_snapshot(db),
        lambda name, context: templates.get_template(name).render(**context),
        settings.live_poll_s,
    )
    app.extensions["baton-live"] = broadcaster
    app.after_request(add_security_headers)

    @app.get("/events")
    def events() -> ResponseReturnValue:
        cors = _cors_headers()
        token_id = session.get("tid")
        known = broadcaster.snapshot
        if settings.auth != "off" and (
            not isinstance(token_id, int)
            or (known is not None and token_id not in known.live_tokens)
        ):
            return jsonify({"error": "sign in on the dashboard first"}), 401, cors
        if broadcaster.listeners >= settings.live_max_streams:
            headers = {**cors, "Retry-After": "10"}
            return jsonify({"error": "too many open streams; retry"}), 503, headers

        def allowed(snap: Snapshot) -> bool:
            return settings.auth == "off" or token_id in snap.live_tokens

        body = broadcaster.stream(
            request.headers.get("Last-Event-ID"), settings.live_stream_s, allowed
        )
        response = Response(body, mimetype="text/event-stream", headers=cors)
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
        return response

    @app.get("/stats")
    def stats() -> ResponseReturnValue:
        if not _from_loopback():
            return jsonify({"error": "not found"}), 404
        return jsonify(
            {
                "streams": broadcaster.listeners,
                "polls": broadcaster.polls,
                "queries": counter.count,
                "seq": broadcaster.seq,
            }
        )

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    return app


def _from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _cors_headers() -> dict[str, str]:
    """Let the dashboard's pages (this host, the API's port) read the stream with the
    session cookie; a page of any other host gets no CORS headers, so it cannot."""
    origin = request.headers.get("Origin")
    if not origin or urlsplit(origin).hostname != urlsplit(f"//{request.host}").hostname:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }
