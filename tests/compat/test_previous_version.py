"""Versions side by side: the previous version's workers finish what this version started.

The previous version is built from git history at the commit named in ``PREVIOUS``
(its first word). Its workers run against the state DB as this version's Alembic
scripts leave it, and take the messages this version's submit and workers publish,
in the middle of a migration that this version's worker started; the migration
finishes exact. Move ``PREVIOUS`` forward to the last released commit at each release.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Worker
from etl_tasks.views import migration_view
from etl_tasks.workers import capabilities
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.harness import ROOT, wait_for

pytestmark = pytest.mark.slow

PREVIOUS_FILE = Path(__file__).with_name("PREVIOUS")


def previous_commit() -> str:
    words = [line.split()[0] for line in PREVIOUS_FILE.read_text().splitlines() if line.strip()]
    return next(w for w in words if not w.startswith("#"))


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The previous version's files, as ``git archive`` gives them."""
    commit = previous_commit()
    out = tmp_path_factory.mktemp("previous")
    archive = out / "previous.tar"
    made = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), commit],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        message = f"the previous version ({commit}) is not in this clone's history: {made.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI has the whole history: a missing commit is a defect
        pytest.skip(message)
    tree = out / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    yield tree


def _done(cluster: Cluster, migration_id: str, owner: str | None = None) -> int:
    with cluster.db.reading() as s:
        q = select(func.count()).where(Chunk.migration_id == migration_id, Chunk.state == "done")
        if owner is not None:
            q = q.where(Chunk.worker == owner)
        return s.scalar(q) or 0


def test_previous_workers_finish_a_migration_this_version_started(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    pg_url_factory: Callable[[], str],
    pg_state_url_factory: Callable[[], str],
    tmp_path: Path,
    previous_tree: Path,
) -> None:
    # Given a PostgreSQL state DB at this version's schema, and a migration this version
    # submitted and started (a worker of this version has loaded some chunks)
    cluster = cluster_factory(make_settings(database_url=pg_state_url_factory()))
    source, target = f"sqlite:///{tmp_path / 'legacy.db'}", pg_url_factory()
    build_source(source, customers=6000, orders=2000, bad_every=41)
    spec = spec_for(source, target, chunk_rows=150)
    current = cluster.start_worker(concurrency=1)
    mid = submit(cluster.db, cluster.publisher, spec)
    wait_for(lambda: _done(cluster, mid) >= 3, 60, 0.05, "this version's first chunks")
    # When a worker of the previous version joins, and this version's worker leaves
    previous = cluster.start_worker(concurrency=2, root=previous_tree)
    wait_for(lambda: _done(cluster, mid, previous.name) >= 1, 60, 0.05, "the previous version")
    with cluster.db.reading() as s:  # it is the previous version: not this one's capabilities
        row = s.scalar(select(Worker).where(Worker.name == previous.name))
        assert row is not None and row.capabilities != capabilities()
    assert current.terminate() == 0, current.log()
    assert migration_view(cluster.db, mid)["state"] == "running"
    # Then the previous version finishes it: every row once, the bad rows quarantined
    wait_done(cluster, mid, timeout_s=120)
    assert_migrated(
        cluster.db,
        mid,
        spec,
        expected_bad={"Customers": 0, "order_lines": bad_lines(2000, 3, 41)},
    )
    assert _done(cluster, mid, current.name) >= 3 and _done(cluster, mid, previous.name) >= 1
    assert "Traceback" not in previous.log(), previous.log()
