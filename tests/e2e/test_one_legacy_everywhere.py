"""One legacy dataset, in every form a desktop product leaves it, into every kind of target.

The same customers are a SQLite file, a folder of Windows-1252 CSV exports (";", CRLF,
quoted newlines) and a JSON Lines file. Real workers migrate each into PostgreSQL, and
the SQLite file and the CSV folder through an HTTP API that goes away for 5 s while
they load. Every target then holds every customer exactly once, value for value.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.settings import Settings
from etl_tasks.state.models import Migration
from ops.chaos.http_api import TOKEN, running_api
from tests.data import submit
from tests.e2e.conftest import Cluster
from tests.e2e.scenarios import wait_done
from tests.exports import customer, write_csv, write_jsonl
from tests.harness import wait_for

pytestmark = pytest.mark.slow

CUSTOMERS = 900
Customer = tuple[str, str | None, str | None, str | None]


def _legacy(tmp_path: Path) -> tuple[list[dict[str, Any]], str, Path, Path]:
    """The customers, and where each form of them lies: SQLite, a CSV folder, a JSONL folder."""
    rows = [customer(i) for i in range(1, CUSTOMERS + 1)]
    db = tmp_path / "legacy.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, note TEXT)"
        )
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            [(int(r["id"]), r["name"], r["city"], r["note"]) for r in rows],
        )
    csv_dir, jsonl_dir = tmp_path / "csv", tmp_path / "jsonl"
    csv_dir.mkdir()
    jsonl_dir.mkdir()
    half = CUSTOMERS // 2  # two export files, as a product that splits its exports
    write_csv(csv_dir / "customers-1.csv", rows[:half], encoding="cp1252")
    write_csv(csv_dir / "customers-2.csv", rows[half:], encoding="cp1252")
    write_jsonl(jsonl_dir / "customers.jsonl", rows)
    return rows, f"sqlite:///{db}", csv_dir, jsonl_dir


def _spec(name: str, source: dict[str, Any], target: dict[str, Any], table: str) -> dict[str, Any]:
    files = "file" in source
    stream: dict[str, Any] = {
        "source_table": ("customers-*.csv" if source["file"]["format"] == "csv" else "*.jsonl")
        if files
        else "customers",
        "target_table": table,
        "columns": {
            "id": "id",
            "name": "name",
            "city": "city",
            "note": "note",
        },
    }
    if files:
        stream["key"] = "id"
    if "url" in target:
        stream["create_target"] = True
    return {"name": name, "source": source, "target": target, "chunk_rows": 120,
            "streams": [stream]}  # fmt: skip


def _expected(rows: list[dict[str, Any]]) -> list[Customer]:
    return sorted(((r["id"], r["name"], r["city"], r["note"]) for r in rows), key=_by_id)


def _by_id(row: Customer) -> int:
    return int(row[0])


def _in_postgres(url: str, table: str) -> list[Customer]:
    engine = create_sql_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(f'SELECT id, name, city, note FROM "{table}"'))
            return sorted(((str(r[0]), r[1], r[2], r[3]) for r in found), key=_by_id)
    finally:
        engine.dispose()


def _waiting(cluster: Cluster, migration_id: str) -> str:
    with cluster.db.reading() as s:
        mig = s.get(Migration, migration_id)
        return (mig.waiting_reason or "") if mig is not None else ""


def test_one_legacy_dataset_arrives_equal_in_postgresql_and_through_an_http_api(
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
) -> None:
    rows, sqlite_source, csv_dir, jsonl_dir = _legacy(tmp_path)
    expected = _expected(rows)
    csv = {"file": {"path": str(csv_dir), "format": "csv", "encoding": "cp1252",
                    "delimiter": ";"}}  # fmt: skip
    jsonl = {"file": {"path": str(jsonl_dir), "format": "jsonl"}}
    cluster = cluster_factory(make_settings())
    with running_api(max_rows=50) as cloud, pytest.MonkeyPatch.context() as env:
        env.setenv("CLOUD_TOKEN", TOKEN)  # for this process's preflight; workers get it below
        cluster.start_worker(concurrency=2, CLOUD_TOKEN=TOKEN)
        cluster.start_worker(concurrency=2, CLOUD_TOKEN=TOKEN)
        http = {"http": {"url": cloud.url, "auth": {"bearer_env": "CLOUD_TOKEN"},
                         "rows_field": "rows", "batch_rows": 40, "timeout_s": 5}}  # fmt: skip

        # Given every form of the data on its way: into PostgreSQL, and into the HTTP API
        def go(name: str, source: dict[str, Any], target: dict[str, Any], table: str) -> str:
            return submit(cluster.db, cluster.publisher, _spec(name, source, target, table))

        pg = {"url": pg_url}
        to_api = [
            go("sqlite to api", {"url": sqlite_source}, http, "from_sqlite"),
            go("csv to api", csv, http, "from_csv"),
        ]
        to_pg = [
            go("sqlite to pg", {"url": sqlite_source}, pg, "from_sqlite"),
            go("csv to pg", csv, pg, "from_csv"),
            go("jsonl to pg", jsonl, pg, "from_jsonl"),
        ]
        # When the API goes away for 5 s in the middle of its loads
        wait_for(lambda: len(cloud.rows("from_sqlite")) >= 100, 60, 0.05, "the first rows")
        back = cloud.outage(5.0)
        wait_for(
            lambda: any("target unavailable" in _waiting(cluster, m) for m in to_api),
            5,
            0.05,
            "a migration to say it waits for the API",
        )
        back.join()
        # Then every migration finishes by itself
        for migration_id in to_api + to_pg:
            wait_done(cluster, migration_id, timeout_s=120)
    # And every target holds every customer once, value for value
    for table in ("from_sqlite", "from_csv", "from_jsonl"):
        assert _in_postgres(pg_url, table) == expected, table
    for table in ("from_sqlite", "from_csv"):
        received = cloud.rows(table)
        twice = [k for k, n in Counter(r["id"] for r in received).items() if n > 1]
        assert twice == [], table
        got = sorted(
            ((str(r["id"]), r["name"], r["city"], r["note"]) for r in received), key=_by_id
        )
        assert got == expected, table
