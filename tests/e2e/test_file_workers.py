"""A folder of exports migrated by real worker processes, which advertise the file kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, text

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.settings import Settings
from etl_tasks.state.models import Worker
from etl_tasks.views import migration_view
from tests.data import submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.exports import customers_folder, file_spec

pytestmark = pytest.mark.slow


def test_two_workers_load_a_folder_of_exports_exactly(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    # Given workers allowed to read only the exports' folder
    folder = tmp_path / "exports"
    written = customers_folder(folder, files=3, per_file=900)
    cluster = cluster_factory(make_settings(allowed_paths=str(folder)))
    cluster.start_worker()
    cluster.start_worker()
    stream = {
        "source_table": "customers-*.csv",
        "target_table": "customers",
        "create_target": True,
    }
    spec = file_spec(folder, pg_url, [stream], chunk_rows=200, encoding="auto", delimiter=";")
    # When they migrate it
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_done(cluster, mid)
    # Then it succeeded, every record once, keyed by its position
    assert migration_view(cluster.db, mid)["state"] == "succeeded", cluster.logs()
    engine = create_sql_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text('SELECT "_file", "_record", id, name, city, note FROM customers')
        ).all()
    engine.dispose()
    got = sorted(rows, key=lambda r: int(r[2]))
    assert [tuple(r[2:]) for r in got] == [
        (w["id"], w["name"], w["city"], w["note"]) for w in written
    ]
    assert {(r[0], r[1]) for r in got} == {
        (f"customers-{f}.csv", n) for f in (1, 2, 3) for n in range(1, 901)
    }
    # And each worker advertised files as a source
    with cluster.db.reading() as s:
        capabilities = [w.capabilities for w in s.scalars(select(Worker))]
    assert capabilities and all("file" in (c or {}).get("source_kinds", []) for c in capabilities)
