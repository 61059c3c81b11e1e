"""Prometheus metrics, computed from the state DB at scrape time.

Any API instance answers with the same numbers (the API keeps no local state).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow
from etl_tasks.workers import list_workers


class StateCollector:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.reading() as s:
            migrations = s.execute(
                select(Migration.state, func.count()).group_by(Migration.state)
            ).all()
            chunks = s.execute(
                select(
                    Chunk.state, func.count(), func.coalesce(func.sum(Chunk.rows_out), 0)
                ).group_by(Chunk.state)
            ).all()
            bad = s.scalar(select(func.count()).select_from(QuarantinedRow)) or 0
        m = GaugeMetricFamily("baton_migrations", "Migrations by state", labels=["state"])
        for state, n in migrations:
            m.add_metric([state], n)
        yield m
        c = GaugeMetricFamily("baton_chunks", "Chunks by state", labels=["state"])
        for state, n, _ in chunks:
            c.add_metric([state], n)
        yield c
        yield GaugeMetricFamily(
            "baton_rows_loaded",
            "Rows loaded by done chunks",
            value=sum(int(rows or 0) for state, _, rows in chunks if state == "done"),
        )
        yield GaugeMetricFamily("baton_rows_quarantined", "Rows quarantined", value=bad)
        w = GaugeMetricFamily("baton_workers", "Live workers by state", labels=["state"])
        counts: dict[str, int] = {}
        for worker in list_workers(self.db):
            counts[str(worker["state"])] = counts.get(str(worker["state"]), 0) + 1
        for state, n in counts.items():
            w.add_metric([state], n)
        yield w


def render_metrics(db: StateDB) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(db))
    return generate_latest(registry), CONTENT_TYPE_LATEST
