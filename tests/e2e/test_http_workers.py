"""An HTTP API target with real worker processes: faults, a 5 s outage, every row once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from etl_tasks.settings import Settings
from etl_tasks.state.models import Migration, QuarantinedRow
from ops.chaos.http_api import TOKEN, running_api
from tests.data import build_items, sqlite_url, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.harness import wait_for
from tests.integration.test_http_target import http_spec

pytestmark = pytest.mark.slow

ROWS = 3000
BAD_EVERY = 97  # quarantined by the transform
REFUSED_EVERY = 53  # refused by the API (422, by name)


def _waiting_reason(cluster: Cluster, migration_id: str) -> str:
    with cluster.db.reading() as s:
        mig = s.get(Migration, migration_id)
        return (mig.waiting_reason or "") if mig is not None else ""


def test_workers_load_an_http_api_through_an_outage(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS, bad_every=BAD_EVERY)
    cluster = cluster_factory(make_settings())
    with running_api(max_rows=40) as cloud:
        # Given an API that refuses some rows, takes at most 40 a request, and misbehaves
        cloud.refuse = lambda row: (
            "not a multiple we take" if row["id"] % REFUSED_EVERY == 0 else None
        )
        cloud.slow_s = 0.5
        cloud.faults.extend(["429", "drop-after", "503", "slow", "drop", "500"])
        cluster.start_worker(concurrency=2, CLOUD_TOKEN=TOKEN)
        cluster.start_worker(concurrency=2, CLOUD_TOKEN=TOKEN)
        spec = http_spec(source, cloud, chunk_rows=300, batch_rows=50, max_rps=100)
        with pytest.MonkeyPatch.context() as env:  # the API process's preflight reads it too
            env.setenv("CLOUD_TOKEN", TOKEN)
            mid = submit(cluster.db, cluster.publisher, spec)
        # When the API goes away for 5 s while the workers load
        wait_for(lambda: len(cloud.rows("items")) >= 300, 60, 0.05, "the first rows")
        back = cloud.outage(5.0)
        wait_for(
            lambda: "target unavailable" in _waiting_reason(cluster, mid),
            5,
            0.05,
            "the migration to say it waits for the target",
        )
        back.join()
        # Then the migration resumes by itself and succeeds
        wait_done(cluster, mid, timeout_s=90)
    # And the API holds every row that maps, each once
    expected = {i for i in range(1, ROWS + 1) if i % BAD_EVERY and i % REFUSED_EVERY}
    stored = Counter(row["id"] for row in cloud.rows("items"))
    assert [i for i, n in stored.items() if n > 1] == []
    assert set(stored) == expected
    refused = {i for i in range(1, ROWS + 1) if i % REFUSED_EVERY == 0 and i % BAD_EVERY}
    with cluster.db.reading() as s:
        bad = s.scalar(
            select(func.count())
            .select_from(QuarantinedRow)
            .where(QuarantinedRow.migration_id == mid)
        )
    assert bad == len(refused) + ROWS // BAD_EVERY
