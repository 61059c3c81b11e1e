"""Source data for tests: the awkward cases a real legacy database has.

Mixed-case names, a composite key, NULLs, unicode, NUMERIC and timestamps,
written through SQLAlchemy so the same builder fills SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    insert,
)

from etl_tasks.boundary.envrefs import EnvPolicy
from etl_tasks.boundary.identity import OwnStores
from etl_tasks.boundary.network import HostPolicy
from etl_tasks.boundary.paths import PathPolicy
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.control import create_migration
from etl_tasks.drafting.infer import with_after
from etl_tasks.preflight import preflight
from etl_tasks.publisher import Publisher, publish_plan
from etl_tasks.spec import parse_spec
from etl_tasks.state.db import StateDB

NAMES = [
    "Zoë",
    "Łukasz",
    "李雷",
    "José",
    "Ørjan",
    "Ана",
    "O'Brien",
    "tab\there",
    "line\nbreak",
    "back\\slash",
    "emoji 🚀",
    "Smith",
]
BASE_TIME = datetime(2019, 3, 14, 15, 9, 26, 535000)


def legacy_tables(metadata: MetaData) -> tuple[Table, Table]:
    customer = Table(
        "Customer",
        metadata,
        Column("CustomerId", Integer, primary_key=True, autoincrement=False),
        Column("FullName", Text, nullable=False),
        Column("Email", String(200)),
        Column("Balance", Numeric(14, 4)),
        Column("CreatedAt", DateTime),
        Column("Active", Boolean),
    )
    line = Table(
        "OrderLine",
        metadata,
        Column("OrderId", Integer, primary_key=True, autoincrement=False),
        Column("LineNo", Integer, primary_key=True, autoincrement=False),
        Column("Sku", String(40)),
        Column("Qty", Text),  # legacy: numbers kept as text, some of them bad
        Column("Price", Numeric(12, 2)),
    )
    return customer, line


def customer_row(i: int) -> dict[str, Any]:
    return {
        "CustomerId": i,
        "FullName": f"{NAMES[i % len(NAMES)]} #{i}",
        "Email": None if i % 7 == 0 else f"User{i}@Example.COM",
        "Balance": None if i % 11 == 0 else Decimal(i * 37 % 100000) / Decimal(100),
        "CreatedAt": None if i % 13 == 0 else BASE_TIME + timedelta(minutes=i, microseconds=i),
        "Active": i % 3 != 0,
    }


def line_row(order: int, line: int, bad_every: int) -> dict[str, Any]:
    n = order * 10 + line
    qty = "many" if bad_every and n % bad_every == 0 else str(line + order % 5)
    return {
        "OrderId": order,
        "LineNo": line,
        "Sku": f"SKU-{n % 97:03d}",
        "Qty": qty,
        "Price": Decimal(n % 5000) / Decimal(100),
    }


def build_source(
    url: str,
    customers: int = 3000,
    orders: int = 1000,
    lines_per_order: int = 3,
    bad_every: int = 0,
) -> dict[str, int]:
    """Create and fill the two legacy tables; return the row count of each."""
    engine = create_sql_engine(url)
    metadata = MetaData()
    customer, line = legacy_tables(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        rows = [customer_row(i) for i in range(1, customers + 1)]
        for i in range(0, len(rows), 5000):
            conn.execute(insert(customer), rows[i : i + 5000])
        lines = [
            line_row(o, n, bad_every)
            for o in range(1, orders + 1)
            for n in range(1, lines_per_order + 1)
        ]
        for i in range(0, len(lines), 5000):
            conn.execute(insert(line), lines[i : i + 5000])
    engine.dispose()
    return {"Customer": customers, "OrderLine": orders * lines_per_order}


def bad_lines(orders: int, lines_per_order: int, bad_every: int) -> int:
    if not bad_every:
        return 0
    return sum(
        1
        for o in range(1, orders + 1)
        for n in range(1, lines_per_order + 1)
        if (o * 10 + n) % bad_every == 0
    )


def spec_for(
    source_url: str, target_url: str, *, chunk_rows: int = 500, **extra: Any
) -> dict[str, Any]:
    """Two streams: customers (renames, transforms, a constant) and order lines (composite key)."""
    spec: dict[str, Any] = {
        "name": "test-migration",
        "source": {"url": source_url},
        "target": {"url": target_url},
        "chunk_rows": chunk_rows,
        "streams": [
            {
                "source_table": "Customer",
                "target_table": "Customers",
                "create_target": True,
                "columns": {
                    "CustomerId": "CustomerId",
                    "full_name": "FullName",
                    "email": {"from": "Email", "transform": "lower"},
                    "Balance": "Balance",
                    "created_at": "CreatedAt",
                    "active": "Active",
                    "tenant": {"value": "acme"},
                },
            },
            {
                "source_table": "OrderLine",
                "target_table": "order_lines",
                "create_target": True,
                "key": ["OrderId", "LineNo"],
                "columns": {
                    "OrderId": "OrderId",
                    "LineNo": "LineNo",
                    "sku": "Sku",
                    "qty": {"from": "Qty", "transform": "int"},
                    "price": "Price",
                },
            },
        ],
    }
    spec.update(extra)
    return spec


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def submit(
    db: StateDB, publisher: Publisher, spec: dict[str, Any], preflight_timeout_s: float = 5.0
) -> str:
    """What the API does on POST: validate, preflight, record, publish the plan task."""
    parsed = parse_spec(spec)
    notes: list[str] = []
    order: dict[str, list[str]] = {}
    boundary = open_boundary(db)
    keys = preflight(parsed, boundary, timeout_s=preflight_timeout_s, notes=notes, order=order)
    migration_id, _ = create_migration(db, with_after(parsed, order), keys, notes=notes)
    publish_plan(publisher, migration_id)
    return migration_id


def open_boundary(db: StateDB) -> Boundary:
    """The boundary of an API with auth off and no allow-lists: any host, any path, any
    variable but BATON_*; never the state DB itself."""
    env = EnvPolicy.parse(None, auth_on=False)
    return Boundary(env, HostPolicy(None), PathPolicy(None), OwnStores.of(db.url, []))


def slow_table(url: str, seconds: float, name: str, columns: str) -> None:
    """Create target table ``name`` (``columns``: its SQL column list) on PostgreSQL, where
    every write statement sleeps ``seconds``: steps stay in flight, or overrun, on purpose."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"""
            CREATE FUNCTION baton_test_slow() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
            CREATE TABLE {name} ({columns});
            CREATE TRIGGER slow AFTER INSERT ON {name}
                FOR EACH STATEMENT EXECUTE FUNCTION baton_test_slow();
        """)
    conn.close()


def build_items(url: str, rows: int, bad_every: int = 0) -> None:
    """One table ``items`` (integer key, a name, a quantity kept as text): every
    ``bad_every``-th quantity is not a number, so its row is quarantined by transform."""
    engine = create_sql_engine(url)
    metadata = MetaData()
    items = Table(
        "items",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", Text, nullable=False),
        Column("qty", Text),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(items),
            [
                {
                    "id": i,
                    "name": f"item {i}",
                    "qty": "many" if bad_every and i % bad_every == 0 else str(i),
                }
                for i in range(1, rows + 1)
            ],
        )
    engine.dispose()


def items_spec(
    source_url: str, target_url: str, *, chunk_rows: int = 5000, write: str = "upsert", **extra: Any
) -> dict[str, Any]:
    """The ``items`` table to a created target table of the same name."""
    spec: dict[str, Any] = {
        "name": "items-migration",
        "source": {"url": source_url},
        "target": {"url": target_url},
        "chunk_rows": chunk_rows,
        "max_bad_rows": 100_000,
        "streams": [
            {
                "source_table": "items",
                "target_table": "items",
                "create_target": True,
                "write": write,
                "columns": {
                    "id": "id",
                    "name": "name",
                    "qty": {"from": "qty", "transform": "int"},
                },
            }
        ],
    }
    spec.update(extra)
    return spec
