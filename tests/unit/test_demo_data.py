"""The demo legacy database: shape, integrity, determinism, and exact dirty-row counts.

The dirty-row rules are re-implemented here from the spec (strptime with the spec's
format, ``int()``, membership in the spec's mapping) rather than imported, so a drift
between what the generator counts and what the spec rejects shows up as a failure.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ops.demo_data import DemoStats, build_legacy_db, demo_spec

SMALL = 0.02
TABLES = {"Customer", "Product", "Invoice", "InvoiceLine"}
EXPECTED_PK = {
    "Customer": ["CustomerId"],
    "Product": ["Sku"],
    "Invoice": ["InvoiceId"],
    "InvoiceLine": ["InvoiceId", "LineNo"],
}
BOOL_WORDS = {"true", "false", "yes", "no", "y", "n", "1", "0", "t", "f", "on", "off"}
TRANSFORMS = {
    "lower",
    "upper",
    "strip",
    "int",
    "float",
    "decimal",
    "bool",
    "date",
    "datetime",
    "default",
    "null_if",
    "map",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoStats:
    return build_legacy_db(tmp_path_factory.mktemp("demo") / "legacy.db", scale=SMALL)


@pytest.fixture
def db(small: DemoStats) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(small.path)) as conn:
        yield conn


def _spec() -> dict[str, Any]:
    return demo_spec("sqlite:///legacy.db", "sqlite:///cloud.db")


def _stream(source_table: str) -> dict[str, Any]:
    return next(s for s in _spec()["streams"] if s["source_table"] == source_table)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with closing(sqlite3.connect(path)) as conn:
        for (sql,) in conn.execute("SELECT sql FROM sqlite_master ORDER BY name"):
            digest.update(repr(sql).encode())
        for table in sorted(TABLES):
            order = ", ".join(EXPECTED_PK[table])
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):
                digest.update(repr(row).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- shape


def test_tables_and_row_counts_match_stats(small: DemoStats, db: sqlite3.Connection) -> None:
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == TABLES == set(small.rows) == set(small.dirty)
    for table, expected in small.rows.items():
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == expected
    assert small.total_rows == sum(small.rows.values())
    assert small.rows == {"Customer": 100, "Product": 10, "Invoice": 500, "InvoiceLine": 1500}


def test_primary_keys_declared_and_unique(db: sqlite3.Connection) -> None:
    for table, pk in EXPECTED_PK.items():
        info = db.execute(f"PRAGMA table_info({table})").fetchall()
        declared = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        assert declared == pk, table
        cols = ", ".join(pk)
        distinct = db.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT {cols} FROM {table})")
        total = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        assert distinct.fetchone()[0] == total, table
        nulls = " OR ".join(f"{c} IS NULL" for c in pk)
        assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE {nulls}").fetchone()[0] == 0


def test_foreign_keys_declared_and_hold(db: sqlite3.Connection) -> None:
    declared = {
        (table, r[3], r[2])
        for table in TABLES
        for r in db.execute(f"PRAGMA foreign_key_list({table})")
    }
    assert declared == {
        ("Invoice", "CustomerId", "Customer"),
        ("InvoiceLine", "InvoiceId", "Invoice"),
        ("InvoiceLine", "Sku", "Product"),
    }
    orphans = db.execute(
        "SELECT COUNT(*) FROM Invoice i LEFT JOIN Customer c ON c.CustomerId = i.CustomerId"
        " WHERE c.CustomerId IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    orphans = db.execute(
        "SELECT COUNT(*) FROM InvoiceLine l LEFT JOIN Invoice i ON i.InvoiceId = l.InvoiceId"
        " WHERE i.InvoiceId IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_database_is_left_normal_and_readable(db: sqlite3.Connection) -> None:
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_legacy_flavour(db: sqlite3.Connection) -> None:
    names = {r[0] for r in db.execute("SELECT FirstName || ' ' || LastName FROM Customer")}
    assert any(not n.isascii() for n in names)
    assert db.execute("SELECT COUNT(*) FROM Customer WHERE Email IS NULL").fetchone()[0] > 0
    emails = [r[0] for r in db.execute("SELECT Email FROM Customer WHERE Email IS NOT NULL")]
    assert any(e != e.strip() and e != e.lower() for e in emails)
    assert {r[0] for r in db.execute("SELECT DISTINCT Discontinued FROM Product")} <= {"Y", "N"}
    for (total,) in db.execute("SELECT Total FROM Invoice"):
        assert isinstance(total, str) and total.count(".") == 1


def test_line_totals_add_up(db: sqlite3.Connection) -> None:
    """Invoice.Total is the sum of its lines (where every quantity is readable)."""
    sums: dict[int, int] = {}
    dirty: set[int] = set()
    for invoice_id, quantity, price in db.execute(
        "SELECT InvoiceId, Quantity, UnitPrice FROM InvoiceLine"
    ):
        if not quantity.isdigit():
            dirty.add(invoice_id)
            continue
        sums[invoice_id] = sums.get(invoice_id, 0) + int(quantity) * int(price.replace(".", ""))
    for invoice_id, total in db.execute("SELECT InvoiceId, Total FROM Invoice"):
        if invoice_id not in dirty:
            assert int(total.replace(".", "")) == sums[invoice_id], invoice_id


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_content(tmp_path: Path, small: DemoStats) -> None:
    again = build_legacy_db(tmp_path / "again.db", scale=SMALL)
    assert _content_hash(again.path) == _content_hash(small.path)
    assert (again.rows, again.dirty) == (small.rows, small.dirty)
    other = build_legacy_db(tmp_path / "other.db", scale=SMALL, seed=8)
    assert _content_hash(other.path) != _content_hash(small.path)


def test_rebuild_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    path.write_bytes(b"not a database")
    first = build_legacy_db(path, scale=SMALL)
    second = build_legacy_db(str(path), scale=SMALL)
    assert second.path == str(path)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM Invoice").fetchone()[0] == first.rows["Invoice"]
    assert _content_hash(str(path)) == _content_hash(first.path)


def test_rows_scale_linearly(tmp_path: Path, small: DemoStats) -> None:
    double = build_legacy_db(tmp_path / "double.db", scale=SMALL * 2)
    assert {t: n * 2 for t, n in small.rows.items()} == double.rows


@pytest.mark.parametrize("scale", [0, -1.0])
def test_bad_scale_rejected(tmp_path: Path, scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        build_legacy_db(tmp_path / "x.db", scale=scale)


# --------------------------------------------------------------------------- dirty rows


def _rejects_date(value: str | None, fmt: str) -> bool:
    if value is None:
        return False
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return True
    return False


def _rejects_int(value: str | None) -> bool:
    if value is None:
        return False
    try:
        int(value)
    except ValueError:
        return True
    return False


def _rule(transform: str | None, args: dict[str, Any]) -> Callable[[Any], bool] | None:
    """Whether a value makes ``transform`` reject the row; None for transforms that cannot."""
    if transform == "date":
        fmt = args["format"]
        return lambda v: _rejects_date(v, fmt)
    if transform == "int":
        return _rejects_int
    if transform == "map":
        mapping = args["mapping"]
        return lambda v: v is not None and "default" not in args and v not in mapping
    if transform == "bool":
        return lambda v: v is not None and str(v).strip().lower() not in BOOL_WORDS
    return None


def _failures_per_row(conn: sqlite3.Connection, table: str) -> list[int]:
    """How many of the spec's transforms each row of ``table`` fails, judged independently."""
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for spec in _stream(table)["columns"].values():
        if isinstance(spec, dict) and "from" in spec:
            rule = _rule(spec.get("transform"), spec.get("args", {}))
            if rule is not None:
                checks.append((spec["from"], rule))
    cols = ", ".join(c for c, _ in checks) or "NULL"
    return [
        sum(check(value) for (_, check), value in zip(checks, row, strict=False))
        for row in conn.execute(f"SELECT {cols} FROM {table}")
    ]


def test_dirty_counts_are_exact(small: DemoStats, db: sqlite3.Connection) -> None:
    for table in TABLES:
        failures = _failures_per_row(db, table)
        assert sum(1 for f in failures if f) == small.dirty[table], table
        assert max(failures) <= 1, f"{table}: a dirty row fails more than one transform"
    assert small.dirty["Product"] == 0
    assert all(small.dirty[t] > 0 for t in ("Customer", "Invoice", "InvoiceLine"))


def test_invoices_have_both_kinds_of_dirt(tmp_path: Path) -> None:
    stats = build_legacy_db(tmp_path / "mid.db", scale=0.2)
    with closing(sqlite3.connect(stats.path)) as conn:
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT Status FROM Invoice")}
        dates = [r[0] for r in conn.execute("SELECT InvoiceDate FROM Invoice")]
        failures = _failures_per_row(conn, "Invoice")
    assert "X" in statuses
    assert any(_rejects_date(d, "%d/%m/%Y") for d in dates)
    assert stats.dirty["Invoice"] == sum(1 for f in failures if f) > 1


# --------------------------------------------------------------------------- spec


def test_spec_is_json_and_has_the_contract_shape() -> None:
    spec = _spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec["name"] == "demo-legacy-to-cloud"
    assert spec["source"] == {"url": "sqlite:///legacy.db"}
    assert spec["target"] == {"url": "sqlite:///cloud.db"}
    assert (spec["chunk_rows"], spec["on_bad_row"], spec["max_bad_rows"]) == (
        2000,
        "quarantine",
        10000,
    )
    assert demo_spec("a", "b", chunk_rows=17)["chunk_rows"] == 17
    # a legacy DB large enough to have more dirty rows than that still migrates
    assert demo_spec("a", "b", dirty_rows=16_000)["max_bad_rows"] == 16_000
    assert demo_spec("a", "b", dirty_rows=12)["max_bad_rows"] == 10000
    streams = {s["target_table"]: s for s in spec["streams"]}
    assert list(streams) == ["customers", "products", "invoices", "invoice_lines"]
    assert streams["invoices"]["after"] == ["customers"]
    assert streams["invoice_lines"]["after"] == ["invoices"]
    assert streams["invoice_lines"]["key"] == ["InvoiceId", "LineNo"]
    assert streams["invoices"]["columns"]["status"]["args"]["mapping"] == {
        "P": "paid",
        "S": "sent",
        "C": "cancelled",
    }


def test_spec_names_only_existing_tables_and_columns(db: sqlite3.Connection) -> None:
    for stream in _spec()["streams"]:
        source = stream["source_table"]
        existing = set(_columns(db, source))
        assert existing, f"no table {source}"
        key = stream["key"]
        assert set([key] if isinstance(key, str) else key) <= existing
        for target, spec in stream["columns"].items():
            assert target == target.lower() and " " not in target
            if isinstance(spec, str):
                assert spec in existing, (source, spec)
            elif "from" in spec:
                assert spec["from"] in existing, (source, spec)
                assert spec.get("transform") in TRANSFORMS
            else:
                assert set(spec) == {"value"}


def test_spec_validates_against_the_spec_model() -> None:
    pytest.importorskip("pydantic")
    from etl_tasks.spec import parse_spec

    parsed = parse_spec(_spec())
    assert [s.stream_name for s in parsed.streams] == [
        "customers",
        "products",
        "invoices",
        "invoice_lines",
    ]


# --------------------------------------------------------------------------- full size


def test_full_scale_is_large(tmp_path: Path) -> None:
    stats = build_legacy_db(tmp_path / "full.db")
    assert stats.total_rows >= 100_000
    for table in ("Customer", "Invoice", "InvoiceLine"):
        assert 0.001 <= stats.dirty[table] / stats.rows[table] <= 0.003, table
    with closing(sqlite3.connect(stats.path)) as conn:
        counted = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES)
        assert counted == stats.total_rows
        assert stats.dirty["InvoiceLine"] == sum(
            1 for f in _failures_per_row(conn, "InvoiceLine") if f
        )
