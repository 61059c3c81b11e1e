"""One set of real workers and one database per dialect and side, for the whole session.

Hypothesis runs many examples; starting workers or creating databases per example would
spend the time budget on set-up. Every example makes its own tables instead (unique
names), so nothing one example leaves behind can be mistaken for another's rows. The
databases, the workers and the Redis keys are removed at the end of the session.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from etl_tasks.settings import Settings
from etl_tasks.state.db import upgrade
from ops.timings import FAST_TIMINGS
from tests import services
from tests.data import sqlite_url
from tests.e2e.conftest import Cluster


@dataclass
class PairStats:
    """What one (source, target) pair saw over the session, for the closing summary."""

    examples: int = 0
    rows: int = 0
    carried: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # by column and kind of reason


STATS: dict[tuple[str, str], PairStats] = defaultdict(PairStats)
REFUSED_BY_SOURCE: Counter[str] = Counter()


@dataclass
class Fidelity:
    cluster: Cluster
    sources: dict[str, str]  # dialect → URL
    targets: dict[str, str]
    tmp: Path | None = None


@pytest.fixture(scope="session")
def fidelity(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fidelity]:
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    if not services.mariadb_answers():
        services.unavailable(f"MariaDB at {services.MARIADB_ADMIN_URL}")
    tmp = tmp_path_factory.mktemp("fidelity")
    prefix = f"baton-fidelity-{uuid.uuid4().hex[:10]}:"
    with ExitStack() as stack:
        sources = {
            "postgresql": stack.enter_context(services.pg_database()),
            "mariadb": stack.enter_context(services.mariadb_database()),
            "sqlite": _sqlite(tmp / "source.db"),
        }
        targets = {
            "postgresql": stack.enter_context(services.pg_database()),
            "mariadb": stack.enter_context(services.mariadb_database()),
            # not there yet: the first migration's workers create it, all at once
            "sqlite": sqlite_url(tmp / "target.db"),
        }
        settings = Settings(
            broker_url=redis_server,
            database_url=f"sqlite:///{tmp / 'state.db'}",
            key_prefix=prefix,
            auth="off",
            **FAST_TIMINGS,
        )
        upgrade(settings.database_url)
        cluster = Cluster(settings, tmp)
        stack.callback(services.delete_prefix, redis_server, prefix)
        stack.callback(cluster.close)
        cluster.start_worker(concurrency=3)
        yield Fidelity(cluster, sources, targets, tmp)


@pytest.fixture(scope="session")
def fidelity_parsed(fidelity: Fidelity, redis_server: str) -> Iterator[Fidelity]:
    """The same databases, migrated by workers that never pass rows through as PostgreSQL
    COPY text (``BATON_NATIVE_COPY=off``): the parsed path, for the streams the default
    workers pass through. Started only when an example asks for it."""
    assert fidelity.tmp is not None
    tmp = fidelity.tmp / "parsed"
    tmp.mkdir()
    prefix = f"baton-fidelity-{uuid.uuid4().hex[:10]}:"
    settings = fidelity.cluster.settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp / 'state.db'}",
            "key_prefix": prefix,
            "native_copy": False,
        }
    )
    upgrade(settings.database_url)
    cluster = Cluster(settings, tmp)
    try:
        cluster.start_worker(concurrency=3)
        yield Fidelity(cluster, fidelity.sources, fidelity.targets, tmp)
    finally:
        cluster.close()
        services.delete_prefix(redis_server, prefix)


def _sqlite(path: Path) -> str:
    """A SQLite database file with its header written (an empty file is not a database)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return sqlite_url(path)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fidelity: examples per dialect pair")
    for (source, target), s in sorted(STATS.items()):
        write(
            f"{source:>10} → {target:<10} examples {s.examples:4d}  rows {s.rows:5d}  "
            f"carried {s.carried:5d}  quarantined {s.quarantined:4d}"
        )
        for reason, n in s.reasons.most_common(12):
            write(f"{'':14}{n:4d} x {reason}")
    if REFUSED_BY_SOURCE:
        write(f"rows the source itself refused (left out): {dict(REFUSED_BY_SOURCE)}")
