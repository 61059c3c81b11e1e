"""The API's ``GET /metrics``: its own request counters, and the state DB's gauges, cached.

A scrape never queries the state DB: the gauges (migrations and chunks by state, rows
loaded and quarantined, workers by state) are read at most once per
``BATON_METRICS_CACHE_S`` by each API process, and served from memory in between;
``baton_state_age_seconds`` says how old they are. Any API instance answers with the
same numbers, give or take that age (the API keeps no state of its own but this cache).

The engine's counters (rows, steps, retries, leases, sweeper) are counted where the
steps run and served by each worker's probe. Under gunicorn the API's request counters
are kept in files, summed across its processes (``etl_tasks.metrics``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flask import Flask, Response, g, request
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from etl_tasks.metrics import exposition
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow
from etl_tasks.workers import list_workers

log = logging.getLogger(__name__)

#: Requests by route template (``/api/v1/migrations/<migration_id>``: never an id).
REQUESTS = Counter("baton_api_requests", "API requests answered", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "baton_api_request_seconds",
    "Time to answer an API request",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass
class StateNumbers:
    """What the state DB said at ``read_at`` (this process's monotonic clock)."""

    read_at: float
    migrations: list[tuple[str, int]] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)
    rows_loaded: int = 0
    rows_quarantined: int = 0
    workers: dict[str, int] = field(default_factory=dict)


def read_state(db: StateDB, now: float) -> StateNumbers:
    """The gauges' numbers: three statements, and the workers' list."""
    with db.reading() as s:
        migrations = s.execute(
            select(Migration.state, func.count()).group_by(Migration.state)
        ).all()
        chunks = s.execute(
            select(Chunk.state, func.count(), func.coalesce(func.sum(Chunk.rows_out), 0)).group_by(
                Chunk.state
            )
        ).all()
        bad = s.scalar(select(func.count()).select_from(QuarantinedRow)) or 0
    workers: dict[str, int] = {}
    for worker in list_workers(db):
        workers[str(worker["state"])] = workers.get(str(worker["state"]), 0) + 1
    return StateNumbers(
        now,
        [(str(state), int(n)) for state, n in migrations],
        [(str(state), int(n)) for state, n, _ in chunks],
        sum(int(rows or 0) for state, _, rows in chunks if state == "done"),
        int(bad),
        workers,
    )


class StateGauges:
    """The state DB's gauges for one API process, read at most once per ``ttl_s``.

    A read that fails keeps the last numbers (their age grows) and is tried again only
    after ``ttl_s`` as well: a state DB that is down is not asked once per scrape either.
    """

    def __init__(
        self, db: StateDB, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._tried_at: float | None = None
        self._numbers: StateNumbers | None = None

    def numbers(self) -> StateNumbers | None:
        with self._lock:
            now = self.clock()
            if self._tried_at is None or now - self._tried_at >= self.ttl_s:
                self._tried_at = now
                try:
                    self._numbers = read_state(self.db, now)
                except sa_exc.SQLAlchemyError as exc:
                    log.warning("metrics: could not read the state DB: %s", exc)
            return self._numbers

    def collect(self) -> Iterator[Metric]:
        n = self.numbers()
        if n is None:
            return
        m = GaugeMetricFamily("baton_migrations", "Migrations by state", labels=["state"])
        for state, count in n.migrations:
            m.add_metric([state], count)
        yield m
        c = GaugeMetricFamily("baton_chunks", "Chunks by state", labels=["state"])
        for state, count in n.chunks:
            c.add_metric([state], count)
        yield c
        yield GaugeMetricFamily(
            "baton_rows_loaded", "Rows loaded by done chunks", value=n.rows_loaded
        )
        yield GaugeMetricFamily(
            "baton_rows_quarantined", "Rows quarantined", value=n.rows_quarantined
        )
        w = GaugeMetricFamily("baton_workers", "Live workers by state", labels=["state"])
        for state, count in n.workers.items():
            w.add_metric([state], count)
        yield w
        yield GaugeMetricFamily(
            "baton_state_age_seconds",
            "How old the state-DB gauges above are",
            value=round(self.clock() - n.read_at, 3),
        )


def register_metrics(app: Flask, db: StateDB, ttl_s: float) -> None:
    """Count every request by its route, and keep this app's cached gauges."""
    app.extensions["baton-metrics"] = StateGauges(db, ttl_s)

    @app.before_request
    def _started() -> None:
        g.baton_started = time.perf_counter()

    @app.after_request
    def _counted(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("baton_started")
        if started is not None:
            REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response


def render_metrics(app: Flask) -> tuple[bytes, str]:
    """This API's counters (every gunicorn process's) and its cached state gauges."""
    return exposition(app.extensions["baton-metrics"])
