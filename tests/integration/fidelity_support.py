"""What the fidelity tests share: databases built from raw SQL, a migration run, raw reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
from sqlalchemy.engine import make_url

from etl_tasks.errors import SpecError
from etl_tasks.views import migration_view
from tests.data import sqlite_url, submit
from tests.harness import Driver


def sqlite_db(path: Path, script: str, rows: dict[str, list[tuple[Any, ...]]] | None = None) -> str:
    """A SQLite file made by ``script``, with ``rows`` inserted as given (any storage class)."""
    conn = sqlite3.connect(path)
    conn.executescript(script)
    for table, values in (rows or {}).items():
        marks = ", ".join("?" * len(values[0]))
        conn.executemany(f'INSERT INTO "{table}" VALUES ({marks})', values)
    conn.commit()
    conn.close()
    return sqlite_url(path)


def pg_exec(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql, params)
        out = cur.fetchall() if cur.description else []
    conn.close()
    return out


def maria_exec(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    u = make_url(url)
    conn = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        autocommit=True,
    )
    with conn.cursor() as cur:
        cur.execute(sql, params)
        out = list(cur.fetchall()) if cur.description else []
    conn.close()
    return out


def sqlite_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    out = conn.execute(sql).fetchall()
    conn.commit()
    conn.close()
    return out


def one_stream(source: str, target: str, **stream: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "fidelity",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": stream.pop("chunk_rows", 50),
        "streams": [{"create_target": True, **stream}],
    }
    return spec


def migrate(driver: Driver, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Submit (preflight included) and run to the end; the migration's id and view."""
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    return mid, migration_view(driver.rt.db, mid)


def refusals(driver: Driver, spec: dict[str, Any]) -> dict[str, str]:
    """The preflight's refusal of ``spec``, as ``{path: message}``."""
    try:
        submit(driver.rt.db, driver.publisher, spec)
    except SpecError as exc:
        return {e.path: e.message for e in exc.errors}
    raise AssertionError("the spec was accepted")


def reasons(driver: Driver, migration_id: str) -> dict[str, str]:
    """Quarantined rows: key → reason."""
    from etl_tasks.views import list_quarantine

    return {q["key"]: q["reason"] for q in list_quarantine(driver.rt.db, migration_id)}
